//! Health checks of the service: pure evaluation of the state, the disk and the
//! database into findings, each of which an alert raises or resolves.

use std::time::Duration;

use chrono::{DateTime, TimeDelta, Utc};

use crate::alert::AlertKey;
use std::collections::BTreeMap;

use crate::catalog::Found;
use crate::discover::Uncovered;
use crate::plan::JobSpec;
use crate::policy::Policy;
use crate::state::State;

/// A condition that is either present (alert) or not (resolve).
#[derive(Debug, Clone, PartialEq)]
pub struct Finding {
    /// The condition, e.g. `failures:hot/dcMes/api_logs`.
    pub key: AlertKey,
    pub active: bool,
    pub title: String,
    pub message: String,
    pub policy: Option<String>,
    pub collection: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Disk {
    pub available: u64,
    pub total: u64,
}

#[derive(Debug, Clone)]
pub struct Thresholds {
    pub failure_threshold: u32,
    pub min_free_percent: f64,
    pub min_free_bytes: u64,
}

pub struct Inputs<'a> {
    pub jobs: &'a [(Policy, Vec<JobSpec>)],
    pub state: &'a State,
    pub archives: &'a [Found],
    pub disk: Option<Disk>,
    /// `Err` with the reason when the database did not answer.
    pub database: Result<(), String>,
    /// When the service started: a collection that never succeeded is stale only
    /// after two intervals of service.
    pub started_at: DateTime<Utc>,
    pub now: DateTime<Utc>,
    /// Per backed-up database that could be listed, its collections no policy covers.
    pub uncovered: &'a BTreeMap<String, Vec<Uncovered>>,
}

fn finding(
    key: AlertKey,
    active: bool,
    title: String,
    message: String,
    job: Option<&JobSpec>,
) -> Finding {
    Finding {
        key,
        active,
        title,
        message,
        policy: job.map(|j| j.policy.clone()),
        collection: job.map(|j| j.collection.name.clone()),
    }
}

pub fn evaluate(i: &Inputs<'_>, t: &Thresholds) -> Vec<Finding> {
    let mut out = Vec::new();
    for (policy, jobs) in i.jobs.iter().filter(|(p, _)| p.enabled) {
        let interval = policy
            .schedule
            .longest_interval(&i.now.with_timezone(&policy.timezone))
            .unwrap_or(Duration::from_secs(86_400));
        let stale_after = TimeDelta::from_std(interval * 2).unwrap_or(TimeDelta::MAX);
        for job in jobs {
            let id = job.id();
            let st = i.state.collections.get(&id).cloned().unwrap_or_default();
            let failing = st.consecutive_failures >= t.failure_threshold;
            out.push(finding(
                AlertKey::Failures(id.clone()),
                failing,
                format!("{id}: {} consecutive failures", st.consecutive_failures),
                format!(
                    "last error: {}",
                    st.last_error.as_deref().unwrap_or("none recorded")
                ),
                Some(job),
            ));
            let since = st.last_success.unwrap_or(i.started_at);
            let stale = i.now - since > stale_after;
            out.push(finding(
                AlertKey::Stale(id.clone()),
                stale,
                format!("{id}: no successful backup for {}", human(i.now - since)),
                format!(
                    "last success: {}; the schedule runs at least every {}",
                    st.last_success.map_or("never".into(), |t| t.to_rfc3339()),
                    crate::duration::HumanDuration(interval)
                ),
                Some(job),
            ));
        }
    }
    if let Some(d) = i.disk {
        let percent = if d.total == 0 {
            100.0
        } else {
            d.available as f64 * 100.0 / d.total as f64
        };
        let low = percent < t.min_free_percent || d.available < t.min_free_bytes;
        out.push(finding(
            AlertKey::DiskFree,
            low,
            format!(
                "backup disk low: {:.1}% ({}) free",
                percent,
                gb(d.available)
            ),
            format!(
                "thresholds: {}% and {}",
                t.min_free_percent,
                gb(t.min_free_bytes)
            ),
            None,
        ));
        let (need, have) = forecast(i);
        out.push(finding(
            AlertKey::DiskForecast,
            need > have + d.available,
            format!("backups will need {} at the current rate; {} available", gb(need), gb(have + d.available)),
            "the forecast is each collection's recent archive size times the archives its retention keeps".into(),
            None,
        ));
    }
    for (database, list) in i.uncovered {
        out.push(finding(
            AlertKey::Uncovered(database.clone()),
            !list.is_empty(),
            format!(
                "{database}: {} no policy backs up",
                crate::human::plural(list.len(), "collection")
            ),
            format!(
                "{}; add each to a policy, match it with a pattern, or list it under \
                 `exclude:` in dcb.yaml",
                crate::discover::describe(list)
            ),
            None,
        ));
    }
    out.push(finding(
        AlertKey::Database,
        i.database.is_err(),
        "database unreachable".into(),
        i.database.clone().err().unwrap_or_default(),
        None,
    ));
    out
}

/// (bytes the policies will keep in steady state, bytes their archives use now).
fn forecast(i: &Inputs<'_>) -> (u64, u64) {
    let mut need = 0f64;
    let mut have = 0u64;
    for f in i.archives {
        have += f.size;
    }
    for (policy, jobs) in i.jobs.iter().filter(|(p, _)| p.enabled) {
        let interval = policy
            .schedule
            .longest_interval(&i.now.with_timezone(&policy.timezone))
            .unwrap_or(Duration::from_secs(86_400));
        // Archives kept per collection: retention / interval, at least keepLast.
        let kept = (policy.retention.0.as_secs_f64() / interval.as_secs_f64().max(1.0))
            .ceil()
            .max(policy.keep_last as f64);
        for job in jobs {
            let mut sizes: Vec<(DateTime<Utc>, u64)> = i
                .archives
                .iter()
                .filter(|f| {
                    f.manifest.policy == job.policy && f.manifest.collection == job.collection.name
                })
                .map(|f| (f.manifest.to, f.size))
                .collect();
            sizes.sort();
            let recent: Vec<u64> = sizes.iter().rev().take(5).map(|s| s.1).collect();
            if !recent.is_empty() {
                need += kept * recent.iter().sum::<u64>() as f64 / recent.len() as f64;
            }
        }
    }
    (need as u64, have)
}

fn gb(bytes: u64) -> String {
    format!("{:.2} GB", bytes as f64 / 1e9)
}

fn human(d: TimeDelta) -> String {
    crate::duration::HumanDuration(d.to_std().unwrap_or_default()).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::document::Document;
    use crate::policy::validate::{Defaults, validate};
    use crate::state::CollectionState;
    use rstest::rstest;

    fn policy() -> (Policy, Vec<JobSpec>) {
        let doc = Document::parse(
            std::path::Path::new("hot.yaml"),
            "name: hot\nschedule: \"0 * * * *\"\ntimezone: UTC\ncollections: [api_logs]\nretention: 3d\n".into(),
        )
        .unwrap();
        let (p, _) = validate(
            &doc,
            &Defaults {
                timezone: chrono_tz::Tz::UTC,
                concurrency: 3,
                targets: vec!["local".into()],
            },
        );
        let p = p.unwrap();
        let jobs = vec![JobSpec {
            policy: "hot".into(),
            database: "db".into(),
            collection: p.collections[0].clone(),
        }];
        (p, jobs)
    }

    fn t(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().to_utc()
    }

    fn active(findings: &[Finding]) -> Vec<String> {
        findings
            .iter()
            .filter(|f| f.active)
            .map(|f| f.key.to_string())
            .collect()
    }

    const TH: Thresholds = Thresholds {
        failure_threshold: 3,
        min_free_percent: 10.0,
        min_free_bytes: 1_000,
    };

    // Failures at the threshold, staleness past two intervals, low disk and an
    // unreachable database each raise their own finding; below them, nothing does.
    #[rstest]
    #[case(2, Some("2026-11-25T09:00:00Z"), Some((500_000, 1_000_000)), true, &[])]
    #[case(3, Some("2026-11-25T09:00:00Z"), None, true, &["failures:hot/db/api_logs"])]
    #[case(0, Some("2026-11-25T07:59:00Z"), None, true, &["stale:hot/db/api_logs"])]
    #[case(0, Some("2026-11-25T08:01:00Z"), None, true, &[])]
    #[case(0, None, None, true, &[])]
    #[case(0, Some("2026-11-25T09:00:00Z"), Some((50_000, 1_000_000)), true, &["disk:free"])]
    #[case(0, Some("2026-11-25T09:00:00Z"), Some((900, 1_000)), true, &["disk:free"])]
    #[case(0, Some("2026-11-25T09:00:00Z"), None, false, &["database"])]
    fn findings(
        #[case] failures: u32,
        #[case] last_success: Option<&str>,
        #[case] disk: Option<(u64, u64)>,
        #[case] db_ok: bool,
        #[case] expected: &[&str],
    ) {
        let jobs = vec![policy()];
        let mut state = State::default();
        state.collections.insert(
            "hot/db/api_logs".into(),
            CollectionState {
                consecutive_failures: failures,
                last_success: last_success.map(t),
                ..Default::default()
            },
        );
        let inputs = Inputs {
            jobs: &jobs,
            state: &state,
            archives: &[],
            disk: disk.map(|(available, total)| Disk { available, total }),
            database: if db_ok {
                Ok(())
            } else {
                Err("no answer".into())
            },
            started_at: t("2026-11-25T09:00:00Z"),
            now: t("2026-11-25T10:00:00Z"),
            uncovered: &BTreeMap::new(),
        };
        assert_eq!(active(&evaluate(&inputs, &TH)), expected);
    }

    // A database with uncovered collections raises its alert, naming them; once
    // nothing is uncovered, the same key is resolved.
    #[test]
    fn uncovered_collections_alert_and_resolve() {
        let jobs = vec![policy()];
        let state = State::default();
        let mut uncovered = BTreeMap::new();
        uncovered.insert(
            "db".to_string(),
            vec![crate::discover::Uncovered {
                database: "db".into(),
                collection: "new_logs".into(),
                note: None,
            }],
        );
        let mut inputs = Inputs {
            jobs: &jobs,
            state: &state,
            archives: &[],
            disk: None,
            database: Ok(()),
            started_at: t("2026-11-25T09:00:00Z"),
            now: t("2026-11-25T09:30:00Z"),
            uncovered: &uncovered,
        };
        let found = evaluate(&inputs, &TH);
        let f = found
            .iter()
            .find(|f| f.key == AlertKey::Uncovered("db".into()))
            .unwrap();
        assert!(f.active);
        assert!(f.message.contains("db.new_logs"), "{}", f.message);
        let none = BTreeMap::from([("db".to_string(), Vec::new())]);
        inputs.uncovered = &none;
        let found = evaluate(&inputs, &TH);
        let f = found
            .iter()
            .find(|f| f.key == AlertKey::Uncovered("db".into()))
            .unwrap();
        assert!(!f.active);
    }
}
