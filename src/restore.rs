//! `dcb restore`: which archives bring back which collection, in what order, into what
//! target. The plan is pure (manifests in, chains out); [`write`] applies it.

pub mod preflight;
pub mod write;

use crate::error::Invalid;
use std::collections::BTreeMap;

use chrono::{DateTime, Utc};

use crate::catalog::Found;
use crate::policy::Mode;

/// What to restore and where.
#[derive(Debug, Clone)]
pub struct Request {
    /// Only these policies (empty: all).
    pub policies: Vec<String>,
    /// Only these collections (empty: all).
    pub collections: Vec<String>,
    /// Restore the state as it was before this time.
    pub until: Option<DateTime<Utc>>,
    pub to_database: String,
    pub to_collection: Option<String>,
    /// Restoring into the source database is allowed.
    pub in_place: bool,
    /// Restore a chain past a break (not exact).
    pub partial: bool,
    /// What "now" is, for a restore of chains without `until`.
    pub now: DateTime<Utc>,
}

/// One collection's archives, oldest first, and where they go.
#[derive(Debug, Clone)]
pub struct Chain {
    pub policy: String,
    pub database: String,
    pub collection: String,
    pub mode: Mode,
    pub time_field: String,
    pub archives: Vec<Found>,
    /// A chain of a policy with `full`: a full and the incrementals after it, applied
    /// exactly (each archive's deletions, then its documents; no time-field cut).
    pub exact: bool,
    pub target_database: String,
    pub target_collection: String,
}

impl Chain {
    /// Documents in the chain's archives (before `--until` filters any out).
    pub fn documents(&self) -> u64 {
        self.archives.iter().map(|f| f.manifest.documents).sum()
    }

    pub fn source(&self) -> String {
        format!("{}.{}", self.database, self.collection)
    }

    pub fn target(&self) -> String {
        format!("{}.{}", self.target_database, self.target_collection)
    }
}

/// Why the selection cannot be restored as asked.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct PlanError(pub String);

/// Group `found` into chains and pick each chain's archives:
/// - incremental: every archive whose window starts before `until` (all without it),
///   oldest first, so a newer copy of a document overwrites an older one;
/// - snapshot: only the newest snapshot taken at or before `until` (the newest without
///   it): an older snapshot would bring back documents deleted since.
pub fn plan(found: &[Found], req: &Request) -> Result<Vec<Chain>, PlanError> {
    plan_with_skipped(found, req).map(|(chains, _)| chains)
}

/// As [`plan`], also naming the selected collections that have nothing to restore
/// (no archive from before `until`).
pub fn plan_with_skipped(
    found: &[Found],
    req: &Request,
) -> Result<(Vec<Chain>, Vec<String>), PlanError> {
    let err = |s: String| Err(PlanError(s));
    let mut skipped = Vec::new();
    if let Err(e) = crate::names::check_database(&req.to_database) {
        return err(format!("--to-database: {e}"));
    }
    let mut groups: BTreeMap<(String, String, String), Vec<&Found>> = BTreeMap::new();
    for f in found {
        let m = &f.manifest;
        if (req.policies.is_empty() || req.policies.contains(&m.policy))
            && (req.collections.is_empty() || req.collections.contains(&m.collection))
        {
            groups
                .entry((m.policy.clone(), m.database.clone(), m.collection.clone()))
                .or_default()
                .push(f);
        }
    }
    if groups.is_empty() {
        return err("no archive matches the selection (see `dcb list`)".into());
    }
    let mut chains = Vec::new();
    for ((policy, database, collection), mut archives) in groups {
        archives.sort_by(|a, b| {
            (a.manifest.to, a.manifest.from, a.key()).cmp(&(
                b.manifest.to,
                b.manifest.from,
                b.key(),
            ))
        });
        let Some(newest) = archives.last() else {
            continue;
        };
        let mode = newest.manifest.mode;
        let time_field = newest.manifest.time_field.clone();
        if let Some(chosen) = exact(&archives, req)? {
            if chosen.is_empty() {
                skipped.push(format!("{policy}:{database}.{collection}"));
                continue;
            }
            chains.push(Chain {
                target_database: req.to_database.clone(),
                target_collection: collection.clone(),
                policy,
                database,
                collection,
                mode,
                time_field,
                archives: chosen,
                exact: true,
            });
            continue;
        }
        if archives.iter().any(|f| f.manifest.mode != mode) {
            return err(format!(
                "the archives of {policy}:{database}.{collection} mix snapshot and incremental modes (the policy changed); restore the ones you want with --archive"
            ));
        }
        if let Err(e) = crate::names::check_database(&database)
            .and_then(|()| crate::names::check_collection(&collection))
        {
            return err(format!(
                "a manifest of policy `{policy}` names `{database}.{collection}`: {e}"
            ));
        }
        let chosen: Vec<Found> = match mode {
            // A snapshot counts from when its read finished.
            Mode::Snapshot => archives
                .iter()
                .rev()
                .find(|f| req.until.is_none_or(|t| f.manifest.finished_at <= t))
                .map(|f| vec![(*f).clone()])
                .unwrap_or_default(),
            Mode::Incremental => archives
                .iter()
                .filter(|f| match (req.until, f.manifest.from) {
                    (Some(t), Some(from)) => from < t,
                    _ => true,
                })
                .map(|f| (*f).clone())
                .collect(),
        };
        if chosen.is_empty() {
            skipped.push(format!("{policy}:{database}.{collection}"));
            continue;
        }
        chains.push(Chain {
            target_database: req.to_database.clone(),
            target_collection: collection.clone(),
            policy,
            database,
            collection,
            mode,
            time_field,
            archives: chosen,
            exact: false,
        });
    }
    if chains.is_empty() {
        return err(match req.until {
            Some(t) => format!("no archive holds data from before {}", t.to_rfc3339()),
            None => "no archive matches the selection".into(),
        });
    }
    if let Some(name) = &req.to_collection {
        if chains.len() != 1 {
            return err(format!(
                "--to-collection needs exactly one source collection; the selection has {}: {} (narrow it with --policy or --collection)",
                chains.len(),
                chains
                    .iter()
                    .map(|c| format!("{}:{}", c.policy, c.source()))
                    .collect::<Vec<_>>()
                    .join(", ")
            ));
        }
        if let Err(e) = crate::names::check_collection(name) {
            return err(format!("--to-collection: {e}"));
        }
        chains[0].target_collection = name.clone();
    }
    let mut targets: BTreeMap<String, &Chain> = BTreeMap::new();
    for c in &chains {
        if let Some(other) = targets.insert(c.target(), c) {
            return err(format!(
                "policies `{}` and `{}` both hold {}; restore one of them (--policy)",
                other.policy,
                c.policy,
                c.source()
            ));
        }
    }
    if !req.in_place
        && let Some(c) = chains.iter().find(|c| c.database == c.target_database)
    {
        return err(format!(
            "the target database `{}` is the source of {}: restoring there overwrites live data; pass --in-place to mean it, or choose another --to-database",
            c.target_database,
            c.source()
        ));
    }
    Ok((chains, skipped))
}

/// For a collection with chains: the archives a restore applies (`None` when the
/// collection has none and the window rule applies). Before the first full, archives
/// written without chains (the policy had no `full` then) restore by the window rule.
fn exact(archives: &[&Found], req: &Request) -> Result<Option<Vec<Found>>, PlanError> {
    let grouped = crate::chain::group(archives);
    if grouped.chains.is_empty() && grouped.stray.is_empty() {
        return Ok(None);
    }
    let until = req.until.unwrap_or(req.now);
    match crate::chain::as_of(&grouped, until) {
        Ok(chosen) => Ok(Some(chosen.into_iter().cloned().collect())),
        Err(e) if e.from.is_none() && !grouped.windows.is_empty() => Ok(None),
        Err(_) if req.partial => {
            // Best effort: the newest full at or before `until`, and every archive of
            // its chain up to then, broken links and all.
            let Some(full) = grouped.chains.iter().rev().find(|c| c.begins() <= until) else {
                return Ok(Some(Vec::new()));
            };
            let base = &full.full.manifest.archive;
            let mut chosen: Vec<Found> = archives
                .iter()
                .filter(|f| f.manifest.chain.as_ref().is_some_and(|l| l.base == *base))
                .filter(|f| f.manifest.restore_point() <= until)
                .map(|f| (*f).clone())
                .collect();
            chosen.sort_by_key(|f| f.manifest.changes.as_ref().map(|c| c.until));
            Ok(Some(chosen))
        }
        Err(e) => {
            let m = &archives[0].manifest;
            Err(PlanError(format!(
                "{}:{}.{}: {e}; nothing was written (--partial restores what the archives hold)",
                m.policy, m.database, m.collection
            )))
        }
    }
}

/// Why a chain may only be written into an empty target (unless `--drop` empties it).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EmptyTarget {
    /// Documents already there may be from after `--until`, and would stay.
    Until,
    /// A time-series collection does not enforce a unique `_id`, so upserting by
    /// `_id` cannot work: every document would be inserted again, beside the old.
    TimeSeries,
}

/// Whether the chain needs an empty target; `timeseries` when the metadata or the
/// existing target says the collection is one.
pub fn needs_empty_target(drop: bool, until: bool, timeseries: bool) -> Option<EmptyTarget> {
    match (drop, timeseries, until) {
        (true, _, _) => None,
        (false, true, _) => Some(EmptyTarget::TimeSeries),
        (false, false, true) => Some(EmptyTarget::Until),
        (false, false, false) => None,
    }
}

impl EmptyTarget {
    /// The refusal when `target` already holds documents.
    pub fn refusal(self, target: &str) -> String {
        match self {
            EmptyTarget::Until => format!(
                "{target} already holds documents: a restore --until into it would keep any written after that time; add --drop or choose an empty target. Nothing was written"
            ),
            EmptyTarget::TimeSeries => format!(
                "{target} is a time-series collection and already holds documents: time-series collections do not enforce a unique _id, so restoring into it again would duplicate them; add --drop or choose an empty target. Nothing was written"
            ),
        }
    }
}

/// Whether a collection's metadata (`.metadata.json`, or a `listCollections` entry as
/// extended JSON) describes a time-series collection.
pub fn is_timeseries(meta: &serde_json::Value) -> bool {
    meta.get("type").and_then(serde_json::Value::as_str) == Some("timeseries")
        || meta
            .get("options")
            .and_then(|o| o.get("timeseries"))
            .is_some_and(|t| !t.is_null())
}

/// Whether a manifest that cannot be used may describe one of `collections` (all when
/// empty): its file name is `<stamp>_<db>.<collection>.manifest.json`
/// ([`crate::storage::archive_stem`]). A name not of that shape may hold anything.
pub fn may_belong_to(manifest: impl AsRef<std::path::Path>, collections: &[String]) -> bool {
    if collections.is_empty() {
        return true;
    }
    let named = manifest
        .as_ref()
        .file_name()
        .and_then(|n| n.to_str())
        .and_then(|n| n.strip_suffix(crate::storage::MANIFEST_EXT))
        .and_then(|stem| stem.split_once('_'))
        .filter(|(stamp, _)| {
            chrono::NaiveDateTime::parse_from_str(stamp, "%Y%m%dT%H%M%S%.3fZ").is_ok()
        })
        // Database names hold no dot; collection names may.
        .and_then(|(_, rest)| rest.split_once('.'))
        .filter(|(db, coll)| crate::names::check_database(db).is_ok() && !coll.is_empty());
    match named {
        Some((_, coll)) => collections.iter().any(|c| c == coll),
        None => true,
    }
}

/// A point in time from the command line: RFC 3339, or a local date and time in `tz`
/// (`2026-11-25 08:00`, `2026-11-25T08:00:30`, `2026-11-25` for midnight).
pub fn parse_time(s: &str, tz: chrono_tz::Tz) -> Result<DateTime<Utc>, Invalid> {
    use chrono::{NaiveDate, NaiveDateTime, TimeZone};
    let s = s.trim();
    if let Ok(t) = DateTime::parse_from_rfc3339(s) {
        return Ok(t.with_timezone(&Utc));
    }
    let naive = ["%Y-%m-%d %H:%M:%S", "%Y-%m-%dT%H:%M:%S", "%Y-%m-%d %H:%M", "%Y-%m-%dT%H:%M"]
        .iter()
        .find_map(|f| NaiveDateTime::parse_from_str(s, f).ok())
        .or_else(|| {
            NaiveDate::parse_from_str(s, "%Y-%m-%d")
                .ok()
                .and_then(|d| d.and_hms_opt(0, 0, 0))
        })
        .ok_or_else(|| {
            Invalid(format!("`{s}` is not a time: write RFC 3339 (2026-11-25T08:00:00+08:00) or `2026-11-25 08:00` (in {tz})"))
        })?;
    tz.from_local_datetime(&naive)
        .earliest()
        .map(|t| t.with_timezone(&Utc))
        .ok_or_else(|| {
            Invalid(format!(
                "`{s}` does not exist in {tz} (a clock change skips it)"
            ))
        })
}

#[cfg(test)]
mod tests;
