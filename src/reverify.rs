//! Periodic re-verification: each pass of the service re-reads a share of the
//! archives, those read longest ago first, so that every archive is read again within
//! the period (restic's `check --read-data-subset`, but by age rather than by hash, so
//! a pass that did not happen is made up). When each archive was last read, and
//! whether it was corrupt, lives in `<backupRoot>/reverify-state.json`, written
//! atomically. The clock is an argument: [`select`] is pure, [`pass`] takes `now`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use chrono::{DateTime, TimeDelta, Utc};
use serde::{Deserialize, Serialize};

use crate::catalog::Found;
use crate::config::Settings;
use crate::crypto::Keys;
use crate::verify::{self, Check, log::Record};

pub const STATE_FILE: &str = "reverify-state.json";

pub fn state_path(root: &Path) -> PathBuf {
    root.join(STATE_FILE)
}

/// What a pass knows of one archive.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Entry {
    /// When a pass first saw it (it was verified when it was written).
    pub first_seen: DateTime<Utc>,
    /// When a pass last read it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_read: Option<DateTime<Utc>>,
    /// Why it was corrupt at its last reading; `None`: intact.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub corrupt: Option<String>,
}

impl Entry {
    /// Since when it has gone unread.
    pub fn since(&self) -> DateTime<Utc> {
        self.last_read.unwrap_or(self.first_seen)
    }
}

/// Each archive by its key (`<policy>/<file>`).
pub type State = BTreeMap<String, Entry>;

/// The saved state; empty when missing or unreadable (every archive then counts as
/// seen now: nothing is read twice at once after a lost state).
pub fn load(root: &Path) -> State {
    match std::fs::read(state_path(root)) {
        Ok(bytes) => serde_json::from_slice(&bytes).unwrap_or_else(|e| {
            tracing::warn!(error = %e, "the re-verification state is unreadable; starting afresh");
            State::new()
        }),
        Err(_) => State::new(),
    }
}

pub fn save(root: &Path, state: &State) -> std::io::Result<()> {
    let bytes = serde_json::to_vec_pretty(state).map_err(std::io::Error::other)?;
    crate::storage::write_atomic(&state_path(root), &bytes)
}

/// The archives a pass at `now` reads, the ones unread longest first. Guarantees,
/// with a pass every `interval`:
/// - every archive is read again before it has gone unread for `period` (those that
///   would pass that mark before the next pass are read now);
/// - at least `ceil(n × interval / period)` archives a pass, so the work spreads
///   evenly instead of all coming due at once;
/// - an archive found corrupt is read at every pass, so a repair is noticed.
pub fn select(
    state: &State,
    now: DateTime<Utc>,
    period: Duration,
    interval: Duration,
) -> Vec<String> {
    let period_td = TimeDelta::from_std(period).unwrap_or(TimeDelta::MAX);
    let interval_td = TimeDelta::from_std(interval).unwrap_or(TimeDelta::zero());
    let mut by_age: Vec<(&String, &Entry)> = state.iter().collect();
    by_age.sort_by_key(|(k, e)| (e.since(), *k));
    let n = by_age.len() as u128;
    let budget = if period.is_zero() {
        n
    } else {
        (n * interval.as_millis()).div_ceil(period.as_millis().max(1))
    } as usize;
    let mut out = Vec::new();
    for (i, (key, e)) in by_age.iter().enumerate() {
        let due = e.since() + period_td - interval_td <= now;
        if i < budget || due || e.corrupt.is_some() {
            out.push((*key).clone());
        }
    }
    out
}

/// What became of an archive's alert.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flip {
    /// Intact (or unknown) before, corrupt now: raise.
    Corrupted,
    /// Corrupt before, intact now: resolve.
    Repaired,
    /// Corrupt before, gone now: resolve.
    Removed,
}

/// One archive a pass read (or found gone).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome {
    /// `<policy>/<file>`.
    pub archive: String,
    pub ok: bool,
    pub problem: Option<String>,
    pub bytes: u64,
    pub flip: Option<Flip>,
}

/// What one pass did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Pass {
    pub at: Option<DateTime<Utc>>,
    pub outcomes: Vec<Outcome>,
    /// Archives known, and corrupt ones among them, after the pass.
    pub archives: usize,
    pub corrupt: usize,
}

/// One pass at `now`: bring the state up to the catalog, read the selected archives
/// (recording each in verify.log), save the state. Blocking.
pub fn pass(settings: &Settings, keys: &Keys, now: DateTime<Utc>) -> Pass {
    let root = &settings.backup_root;
    // A prune waits while archives are read, so none vanishes mid-read.
    let _readers = crate::storage::lock_readers(root, &[]);
    let found = crate::catalog::scan(&settings.target());
    let mut state = load(root);
    let mut out = Pass {
        at: Some(now),
        ..Pass::default()
    };
    let by_key: BTreeMap<String, &Found> = found.iter().map(|f| (f.key().to_string(), f)).collect();
    // Gone from the catalog (pruned, or removed by hand): forget, and clear its alert.
    state.retain(|key, e| {
        if by_key.contains_key(key) {
            return true;
        }
        if e.corrupt.is_some() {
            out.outcomes.push(Outcome {
                archive: key.clone(),
                ok: true,
                problem: None,
                bytes: 0,
                flip: Some(Flip::Removed),
            });
        }
        false
    });
    for key in by_key.keys() {
        state.entry(key.clone()).or_insert(Entry {
            first_seen: now,
            last_read: None,
            corrupt: None,
        });
    }
    let chosen = select(
        &state,
        now,
        settings.reverify.period.0,
        settings.reverify.interval.0,
    );
    let checks: Vec<Check> = chosen
        .iter()
        .filter_map(|k| by_key.get(k))
        .map(|f| Check::found(f))
        .collect();
    let reports = verify::check_all(&checks, 0, keys);
    for (report, key) in reports.iter().zip(&chosen) {
        // An archive the keys cannot open was not read: it stays due.
        if report.locked().is_some() {
            continue;
        }
        let problem = (!report.problems.is_empty()).then(|| {
            report
                .problems
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join("; ")
        });
        let bytes = by_key.get(key).map_or(0, |f| f.size);
        let record = Record {
            at: now,
            archive: key.clone(),
            ok: report.ok(),
            checked: report.checked,
            documents: report.documents,
            problems: report.problems.iter().map(ToString::to_string).collect(),
            problem: problem.clone(),
            bytes,
        };
        if let Err(e) = verify::log::append(root, &record) {
            tracing::warn!(error = %e, "cannot record the re-verification in verify.log");
        }
        let Some(entry) = state.get_mut(key) else {
            continue;
        };
        let flip = match (&entry.corrupt, &problem) {
            (None, Some(_)) => Some(Flip::Corrupted),
            (Some(_), None) => Some(Flip::Repaired),
            _ => None,
        };
        entry.last_read = Some(now);
        entry.corrupt = problem.clone();
        out.outcomes.push(Outcome {
            archive: key.clone(),
            ok: problem.is_none(),
            problem,
            bytes,
            flip,
        });
    }
    out.archives = state.len();
    out.corrupt = state.values().filter(|e| e.corrupt.is_some()).count();
    if let Err(e) = save(root, &state) {
        tracing::warn!(error = %e, "cannot save the re-verification state");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const DAY: Duration = Duration::from_secs(86_400);

    fn t0() -> DateTime<Utc> {
        "2026-01-01T00:00:00Z".parse().unwrap()
    }

    fn state(n: usize, seen: DateTime<Utc>) -> State {
        (0..n)
            .map(|i| {
                (
                    format!("p/a{i:03}.tar.gz"),
                    Entry {
                        first_seen: seen,
                        last_read: None,
                        corrupt: None,
                    },
                )
            })
            .collect()
    }

    // Passes a day apart over three periods: no archive ever goes unread for longer
    // than the period, and each pass reads about n / 30 of them.
    #[test]
    fn every_archive_within_the_period() {
        let period = 30 * DAY;
        let mut st = state(95, t0());
        // Archives seen at different times, as in life.
        for (i, e) in st.values_mut().enumerate() {
            e.first_seen = t0() - TimeDelta::days((i % 40) as i64);
        }
        for day in 0..90 {
            let now = t0() + TimeDelta::days(day);
            let chosen = select(&st, now, period, DAY);
            assert!(chosen.len() >= 4, "day {day}: {}", chosen.len());
            assert!(chosen.len() <= 95, "day {day}");
            for k in &chosen {
                st.get_mut(k).unwrap().last_read = Some(now);
            }
            for (k, e) in &st {
                assert!(
                    now - e.since() < TimeDelta::days(30),
                    "day {day}: {k} unread since {}",
                    e.since()
                );
            }
        }
    }

    // The share is ceil(n × interval / period); a corrupt archive is read every pass.
    #[test]
    fn budget_and_corrupt() {
        let mut st = state(10, t0());
        let now = t0() + TimeDelta::hours(1);
        assert_eq!(select(&st, now, 30 * DAY, DAY).len(), 1);
        assert_eq!(select(&st, now, 5 * DAY, DAY).len(), 2);
        assert_eq!(select(&st, now, DAY, DAY).len(), 10);
        st.get_mut("p/a007.tar.gz").unwrap().corrupt = Some("bad".into());
        let chosen = select(&st, now, 30 * DAY, DAY);
        assert_eq!(chosen, ["p/a000.tar.gz", "p/a007.tar.gz"]);
        assert!(select(&State::new(), now, 30 * DAY, DAY).is_empty());
    }
}
