//! Chains: for a collection whose policy sets `full`, a full archive (the whole
//! collection) and the incremental archives built on it, each naming the archive
//! before it with that archive's hash. Pure: from the catalog's manifests, which run
//! comes next, what a restore may apply, how far back the collection can be restored
//! and where that breaks. Restore, retention, the runner and the status all read
//! chains through here.

use chrono::{DateTime, TimeDelta, Utc};

use crate::catalog::Found;
use crate::duration::HumanDuration;
use crate::export::manifest::{ClusterTime, History, Kind, Previous};

/// A full archive and the incrementals that build on it, in order.
#[derive(Debug, Clone)]
pub struct Chain<'a> {
    pub full: &'a Found,
    /// The incrementals whose links are intact, oldest first.
    pub links: Vec<&'a Found>,
    /// Where the chain stops being exact, if it does.
    pub broken: Option<Break>,
}

/// Why a chain stops being exact after some archive.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Break {
    /// The last archive the chain is exact up to.
    pub after: String,
    /// The last moment the chain restores exactly: that archive's, or for a run that
    /// saw no history, just before that run.
    pub at: DateTime<Utc>,
    pub reason: String,
    /// A link missing or foreign (damage), rather than a run that saw no history
    /// (recorded as such, and followed by a full).
    pub damaged: bool,
}

impl<'a> Chain<'a> {
    /// Every archive of the chain, the full first.
    pub fn archives(&self) -> impl Iterator<Item = &'a Found> + '_ {
        std::iter::once(self.full).chain(self.links.iter().copied())
    }

    /// The moment the chain's full restores to: where the chain begins.
    pub fn begins(&self) -> DateTime<Utc> {
        self.full.manifest.restore_point()
    }

    /// The last moment the chain restores exactly.
    pub fn ends(&self) -> DateTime<Utc> {
        self.links
            .last()
            .copied()
            .unwrap_or(self.full)
            .manifest
            .restore_point()
    }
}

/// One collection's archives, sorted into chains.
#[derive(Debug, Clone, Default)]
pub struct Chains<'a> {
    /// Oldest first.
    pub chains: Vec<Chain<'a>>,
    /// Incrementals of a chain whose full is gone, or that no chain's links reach.
    pub stray: Vec<&'a Found>,
    /// Archives without chain information (written without `full`, or before format
    /// 2): restored and pruned by their windows.
    pub windows: Vec<&'a Found>,
}

/// The archives of one collection (any order), sorted into chains.
pub fn group<'a>(archives: &[&'a Found]) -> Chains<'a> {
    let mut out = Chains::default();
    let mut incrementals: Vec<&Found> = Vec::new();
    let mut fulls: Vec<&Found> = Vec::new();
    for f in archives {
        match (&f.manifest.chain, f.manifest.kind()) {
            (None, _) => out.windows.push(f),
            (Some(link), Kind::Full) if link.base == f.manifest.archive => fulls.push(f),
            (Some(_), _) => incrementals.push(f),
        }
    }
    fulls.sort_by_key(|f| (cut(f), f.manifest.restore_point()));
    incrementals.sort_by_key(|f| (cut(f), f.manifest.restore_point()));
    let mut used = vec![false; incrementals.len()];
    for full in fulls {
        let mut chain = Chain {
            full,
            links: Vec::new(),
            broken: None,
        };
        let mut last = full;
        for (i, f) in incrementals.iter().enumerate() {
            let link = f.manifest.chain.as_ref().expect("sorted as a link");
            if link.base != full.manifest.archive || used[i] {
                continue;
            }
            used[i] = true;
            if chain.broken.is_some() {
                out.stray.push(f);
                continue;
            }
            match follows(f, last) {
                Ok(()) => {
                    chain.links.push(f);
                    last = f;
                    if let Some(why) = incomplete(f) {
                        chain.broken = Some(Break {
                            after: chain
                                .links
                                .iter()
                                .rev()
                                .nth(1)
                                .copied()
                                .unwrap_or(full)
                                .manifest
                                .archive
                                .clone(),
                            // Exact until the run that lost the history.
                            at: f.manifest.restore_point() - TimeDelta::milliseconds(1),
                            reason: format!("{}: {why}", f.manifest.archive),
                            damaged: false,
                        });
                        // The incomplete archive holds documents but not the
                        // deletions before it: kept out of exact restores.
                        let stray = chain.links.pop().expect("just pushed");
                        out.stray.push(stray);
                    }
                }
                Err(why) => {
                    chain.broken = Some(Break {
                        after: last.manifest.archive.clone(),
                        at: last.manifest.restore_point(),
                        reason: why,
                        damaged: true,
                    });
                    out.stray.push(f);
                }
            }
        }
        out.chains.push(chain);
    }
    for (i, f) in incrementals.into_iter().enumerate() {
        if !used[i] {
            out.stray.push(f);
        }
    }
    out
}

fn cut(f: &Found) -> Option<ClusterTime> {
    f.manifest.changes.as_ref().map(|c| c.until)
}

/// Whether `f` builds on `prev`: it names it, with its hash.
fn follows(f: &Found, prev: &Found) -> Result<(), String> {
    let named = f.manifest.chain.as_ref().and_then(|l| l.previous.as_ref());
    let Some(named) = named else {
        return Err(format!("{} names no archive before it", f.manifest.archive));
    };
    if named.archive != prev.manifest.archive {
        return Err(format!(
            "{} builds on {}, which is missing (the archive before it is {})",
            f.manifest.archive, named.archive, prev.manifest.archive
        ));
    }
    match &prev.manifest.archive_sha256 {
        Some(sha) if *sha != named.sha256 => Err(format!(
            "{} builds on another {} (its SHA-256 differs): a foreign link",
            f.manifest.archive, named.archive
        )),
        _ => Ok(()),
    }
}

/// Why an archive's changes are not all known, if they are not.
fn incomplete(f: &Found) -> Option<String> {
    match f.manifest.changes.as_ref().map(|c| &c.history) {
        Some(History::Complete) | None => None,
        Some(History::Unavailable(why)) => Some(format!("change history unavailable ({why})")),
        Some(History::Lost(why)) => Some(format!("change history lost ({why})")),
    }
}

/// What the next run of a chain collection does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NextRun {
    /// A full export, and why.
    Full(String),
    /// An incremental that builds on the chain's newest archive.
    Incremental(Position),
}

/// Where a chain stands: what the next incremental builds on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Position {
    /// The file name of the chain's full.
    pub base: String,
    /// The chain's newest archive.
    pub previous: Previous,
    /// Its cut: the next run reads changes from here.
    pub since: ClusterTime,
    /// Its change stream's resume token, when it recorded one.
    pub token: Option<String>,
}

/// The next run of a collection with `full: every`, given its archives.
pub fn next_run(archives: &[&Found], every: HumanDuration, now: DateTime<Utc>) -> NextRun {
    let grouped = group(archives);
    let Some(chain) = grouped.chains.last() else {
        return NextRun::Full("the first run of the chain".into());
    };
    if let Some(b) = &chain.broken {
        return NextRun::Full(format!("the chain is broken: {}", b.reason));
    }
    if grouped
        .stray
        .iter()
        .any(|s| s.manifest.restore_point() > chain.ends())
    {
        return NextRun::Full("an archive newer than the chain does not link to it".into());
    }
    let age = now - chain.begins();
    // A full due within 1% (at most an hour) is taken now: runs start a little early or
    // late, and a daily schedule with `full: 1d` should take one every day, not every
    // other day.
    let slack = (every.as_chrono() / 100).min(chrono::TimeDelta::hours(1));
    if age >= every.as_chrono() - slack {
        return NextRun::Full(format!(
            "the newest full is {} old; `full` is {every}",
            HumanDuration(age.to_std().unwrap_or_default())
        ));
    }
    let newest = chain.links.last().copied().unwrap_or(chain.full);
    if let Some(why) = incomplete(newest) {
        return NextRun::Full(format!("{}: {why}", newest.manifest.archive));
    }
    let (Some(sha256), Some(changes)) = (
        newest.manifest.archive_sha256.clone(),
        newest.manifest.changes.as_ref(),
    ) else {
        return NextRun::Full(format!(
            "{} records no hash or cut to build on",
            newest.manifest.archive
        ));
    };
    NextRun::Incremental(Position {
        base: chain.full.manifest.archive.clone(),
        previous: Previous {
            archive: newest.manifest.archive.clone(),
            sha256,
        },
        since: changes.until,
        token: changes.token.clone(),
    })
}

/// What a restore as of `until` applies: the newest full at or before it, and the
/// links after it up to it.
pub fn as_of<'a>(
    grouped: &Chains<'a>,
    until: DateTime<Utc>,
) -> Result<Vec<&'a Found>, Unrestorable> {
    let Some(chain) = grouped.chains.iter().rev().find(|c| c.begins() <= until) else {
        return Err(Unrestorable {
            from: None,
            to: grouped.chains.first().map(Chain::begins),
            reason: "no full archive was taken at or before that time".into(),
        });
    };
    if let Some(b) = &chain.broken
        && until > b.at
    {
        let next = grouped
            .chains
            .iter()
            .map(Chain::begins)
            .find(|t| *t > chain.begins());
        return Err(Unrestorable {
            from: Some(b.at),
            to: next,
            reason: b.reason.clone(),
        });
    }
    Ok(chain
        .archives()
        .filter(|f| f.manifest.restore_point() <= until)
        .collect())
}

/// A period no chain restores exactly.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}: {reason}", period(*.from, *.to))]
pub struct Unrestorable {
    /// Exact up to here (absent: nothing before).
    pub from: Option<DateTime<Utc>>,
    /// Exact again from here (the next full; absent: not yet).
    pub to: Option<DateTime<Utc>>,
    pub reason: String,
}

fn period(from: Option<DateTime<Utc>>, to: Option<DateTime<Utc>>) -> String {
    let t = |d: DateTime<Utc>| d.to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    match (from, to) {
        (Some(a), Some(b)) => format!(
            "the collection cannot be restored exactly between {} and {}",
            t(a),
            t(b)
        ),
        (Some(a), None) => format!("the collection cannot be restored exactly after {}", t(a)),
        (None, Some(b)) => format!("the collection cannot be restored before {}", t(b)),
        (None, None) => "the collection has no full archive".into(),
    }
}

/// How far back a chain collection can be restored, and the gaps in between.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Coverage {
    /// The oldest moment that restores exactly (the oldest full's).
    pub from: Option<DateTime<Utc>>,
    /// The newest moment that restores exactly.
    pub to: Option<DateTime<Utc>>,
    /// Periods inside that do not restore exactly, and why.
    pub gaps: Vec<Gap>,
}

/// A period that does not restore exactly.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Gap {
    pub from: DateTime<Utc>,
    /// Until the next full, if there is one.
    pub to: Option<DateTime<Utc>>,
    pub reason: String,
    /// A chain broken by a missing or foreign link (`dcb verify` fails on it).
    pub damaged: bool,
}

/// The coverage of one collection's chains.
pub fn coverage(grouped: &Chains) -> Coverage {
    let mut gaps = Vec::new();
    let mut to = None;
    for (i, c) in grouped.chains.iter().enumerate() {
        let next = grouped.chains.get(i + 1).map(Chain::begins);
        match &c.broken {
            Some(b) => {
                gaps.push(Gap {
                    from: b.at,
                    to: next,
                    reason: b.reason.clone(),
                    damaged: b.damaged,
                });
                to = Some(b.at);
            }
            None => to = Some(c.ends()),
        }
    }
    Coverage {
        from: grouped.chains.first().map(Chain::begins),
        to,
        gaps,
    }
}

/// How far one collection's archives reach (any order): its chains' coverage when it
/// has chains; otherwise its windows, from the oldest to the newest, with a gap where
/// one window does not start where the one before ended (an archive lost or deleted).
pub fn coverage_of(archives: &[&Found]) -> Coverage {
    let grouped = group(archives);
    if !grouped.chains.is_empty() {
        return coverage(&grouped);
    }
    let mut windows: Vec<&Found> = grouped
        .windows
        .iter()
        .copied()
        .filter(|f| f.manifest.kind() == Kind::Incremental)
        .collect();
    windows.sort_by_key(|f| (f.manifest.to, f.manifest.from));
    let mut gaps = Vec::new();
    for pair in windows.windows(2) {
        let (a, b) = (&pair[0].manifest, &pair[1].manifest);
        if let Some(from) = b.from
            && from > a.to
        {
            gaps.push(Gap {
                from: a.to,
                to: Some(from),
                reason: format!("no archive holds this window (before {})", b.archive),
                damaged: false,
            });
        }
    }
    Coverage {
        from: windows
            .first()
            .map(|f| f.manifest.from.unwrap_or(f.manifest.to)),
        to: windows.last().map(|f| f.manifest.to),
        gaps,
    }
}

/// The chains retention keeps so that every moment of the last `retention` restores:
/// the newest chain whose full is at least `retention` old, every chain after it, and
/// the newest `keep_last` chains whatever their age. Returns the index of the oldest
/// chain kept (0 keeps them all).
pub fn first_kept(
    grouped: &Chains,
    retention: TimeDelta,
    keep_last: usize,
    now: DateTime<Utc>,
) -> usize {
    let n = grouped.chains.len();
    let cutoff = now - retention;
    let by_age = grouped
        .chains
        .iter()
        .rposition(|c| c.begins() <= cutoff)
        .unwrap_or(0);
    by_age.min(n.saturating_sub(keep_last))
}

#[cfg(test)]
pub(crate) mod fixture;
#[cfg(test)]
mod tests;
