//! Retention: which archives to delete. [`compute`] is pure (the clock is an argument)
//! and returns a plan that `dcb prune --dry-run` prints; [`prune`] carries it out under
//! the policies' locks, for `dcb prune` and the service alike.

mod prune;

pub use prune::{ApplyReport, Pruned, Skipped, apply, audit, lock_for_prune, plan, prune};

use std::collections::BTreeMap;

use chrono::{DateTime, TimeDelta, Utc};

use crate::catalog::Found;
use crate::chain;
use crate::duration::HumanDuration;
use crate::policy::{Mode, Policy};

/// An archive the plan deletes, with its manifest (both keys in their target).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Deletion {
    pub archive: String,
    pub manifest: String,
    /// The archive's size in bytes.
    pub size: u64,
    pub policy: String,
    pub database: String,
    pub collection: String,
    /// The end of the archive's window (`manifest.to`).
    pub window_end: DateTime<Utc>,
    /// Why it goes, for people: its age against the retention.
    pub reason: String,
    /// The chain it belongs to (its full's file name), for a policy with `full`.
    pub chain: Option<String>,
}

/// An archive the plan keeps, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Kept {
    pub archive: String,
    pub policy: String,
    pub reason: String,
    /// The chain it belongs to (its full's file name), for a policy with `full`.
    pub chain: Option<String>,
}

/// What retention would do: both lists oldest first (by window end, then path).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RetentionPlan {
    pub delete: Vec<Deletion>,
    pub keep: Vec<Kept>,
}

/// Decide, for every archive, whether it goes. Per (policy, database, collection):
/// - an archive goes only when its window ended strictly longer ago than its policy's
///   retention, so no data newer than the retention is ever deleted;
/// - the newest `keepLast` archives (by window end) stay, however old;
/// - the newest snapshot stays even with `keepLast: 0`: it is the only copy of the
///   collection as it is now;
/// - archives of a policy not in `policies` (its file deleted or renamed) never go.
///
/// The archives of chains (a policy with `full`) go by whole chains instead, so that
/// every moment of the last `retention` can be restored: the newest chain whose full is
/// at least `retention` old stays with every chain after it, and `keepLast` counts
/// chains ([`chain::first_kept`]); a chain older than those goes whole.
///
/// The result does not depend on the order of `found`.
pub fn compute(found: &[Found], policies: &[Policy], now: DateTime<Utc>) -> RetentionPlan {
    let mut groups: BTreeMap<(&str, &str, &str), Vec<&Found>> = BTreeMap::new();
    for f in found {
        let m = &f.manifest;
        groups
            .entry((&m.policy, &m.database, &m.collection))
            .or_default()
            .push(f);
    }
    let mut delete = Vec::new();
    let mut keep: Vec<(DateTime<Utc>, Kept)> = Vec::new();
    for ((policy_name, database, collection), mut archives) in groups {
        // Newest first, so index i is "the (i+1)-th newest".
        archives.sort_by(|a, b| (b.manifest.to, b.key()).cmp(&(a.manifest.to, a.key())));
        let Some(policy) = policies.iter().find(|p| p.name == policy_name) else {
            keep.extend(archives.iter().map(|f| {
                let reason =
                    format!("unknown policy `{policy_name}` (no policy file; never pruned)");
                (f.manifest.to, kept(f, reason))
            }));
            continue;
        };
        let retention = policy.retention.as_chrono();
        let keep_last = usize::try_from(policy.keep_last).unwrap_or(usize::MAX);
        let (chained, windows): (Vec<&Found>, Vec<&Found>) =
            archives.iter().partition(|f| f.manifest.in_chain());
        if !chained.is_empty() {
            let mut d = |f: &Found, reason: String, chain: &str| {
                delete.push(Deletion {
                    archive: f.key().to_string(),
                    manifest: f.manifest_key.clone(),
                    size: f.size,
                    policy: policy_name.to_string(),
                    database: database.to_string(),
                    collection: collection.to_string(),
                    window_end: f.manifest.to,
                    reason,
                    chain: Some(chain.to_string()),
                })
            };
            chains(&chained, policy, keep_last, now, &mut d, &mut keep);
        }
        let archives = windows;
        let newest_snapshot = archives
            .iter()
            .position(|f| f.manifest.mode == Mode::Snapshot);
        for (i, f) in archives.iter().enumerate() {
            let age = now - f.manifest.to;
            // The first reason that holds is the one reported: keepLast is named only
            // when it is what saves an expired archive.
            let why_kept = if age <= retention {
                Some(format!("within retention {}", policy.retention))
            } else if i < keep_last {
                Some(format!("keepLast: one of the newest {}", policy.keep_last))
            } else if Some(i) == newest_snapshot {
                Some("the newest snapshot".to_string())
            } else {
                None
            };
            match why_kept {
                Some(reason) => keep.push((f.manifest.to, kept(f, reason))),
                None => delete.push(Deletion {
                    archive: f.key().to_string(),
                    manifest: f.manifest_key.clone(),
                    size: f.size,
                    policy: policy_name.to_string(),
                    database: database.to_string(),
                    collection: collection.to_string(),
                    window_end: f.manifest.to,
                    reason: format!(
                        "window ended {} ago, retention {}",
                        whole_seconds(age),
                        policy.retention
                    ),
                    chain: None,
                }),
            }
        }
    }
    delete.sort_by(|a, b| (a.window_end, &a.archive).cmp(&(b.window_end, &b.archive)));
    keep.sort_by(|a, b| (a.0, &a.1.archive).cmp(&(b.0, &b.1.archive)));
    RetentionPlan {
        delete,
        keep: keep.into_iter().map(|(_, k)| k).collect(),
    }
}

fn kept(f: &Found, reason: String) -> Kept {
    Kept {
        archive: f.key().to_string(),
        policy: f.manifest.policy.clone(),
        reason,
        chain: f.manifest.chain.as_ref().map(|l| l.base.clone()),
    }
}

/// Retention of one collection's chains: whole chains go, the newest ones stay.
fn chains(
    archives: &[&Found],
    policy: &Policy,
    keep_last: usize,
    now: DateTime<Utc>,
    delete: &mut dyn FnMut(&Found, String, &str),
    keep: &mut Vec<(DateTime<Utc>, Kept)>,
) {
    let grouped = chain::group(archives);
    let first = chain::first_kept(&grouped, policy.retention.as_chrono(), keep_last, now);
    let by_age = chain::first_kept(&grouped, policy.retention.as_chrono(), 0, now);
    let oldest_kept = grouped.chains.get(first).map(|c| c.begins());
    for (i, c) in grouped.chains.iter().enumerate() {
        let base = c.full.manifest.archive.clone();
        let age = whole_seconds(now - c.begins());
        if i < first {
            let newer = &grouped.chains[first].full.manifest.archive;
            // A prune interrupted half-way leaves archives of the chain that link to
            // nothing kept: the next prune takes them as strays.
            for f in c.archives() {
                delete(
                    f,
                    format!(
                        "chain of {base} (full {age} ago): the chain of {newer} restores every moment of the last {}",
                        policy.retention
                    ),
                    &base,
                );
            }
        } else {
            let why = if i < by_age {
                format!(
                    "chain of {base}: keepLast keeps the newest {} chains",
                    policy.keep_last
                )
            } else {
                format!(
                    "chain of {base}: restores moments within retention {}",
                    policy.retention
                )
            };
            for f in c.archives() {
                keep.push((f.manifest.to, kept(f, why.clone())));
            }
        }
    }
    for f in &grouped.stray {
        let base = f.manifest.chain.as_ref().map_or("?", |l| l.base.as_str());
        let before_kept = oldest_kept.is_none_or(|t| f.manifest.restore_point() < t);
        if before_kept && oldest_kept.is_some() {
            delete(
                f,
                format!(
                    "an archive of {base} past a break in its chain, older than every chain kept"
                ),
                base,
            );
        } else {
            let reason =
                format!("an archive of {base} past a break in its chain (kept for --partial)");
            keep.push((f.manifest.to, kept(f, reason)));
        }
    }
}

fn whole_seconds(d: TimeDelta) -> HumanDuration {
    HumanDuration(std::time::Duration::from_secs(
        u64::try_from(d.num_seconds()).unwrap_or(0),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::document::Document;
    use crate::export::manifest::Manifest;
    use crate::policy::validate::{Defaults, validate};
    use crate::storage::local::Local;
    use crate::storage::{Source, Target, names};
    use Mode::{Incremental as I, Snapshot as S};
    use rstest::rstest;
    use std::path::Path;
    use std::sync::Arc;

    const NOW: &str = "2026-11-25T12:00:00Z";
    const H: i64 = 3600;

    /// An archive: (policy, "db.collection", seconds since its window ended, mode).
    type Spec = (&'static str, &'static str, i64, Mode);
    /// A deletion: (policy, "db.collection", seconds since its window ended).
    type Gone = (&'static str, &'static str, i64);

    fn now() -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(NOW).unwrap().to_utc()
    }

    fn policy(name: &str, retention: &str, keep_last: u32) -> Policy {
        let text = format!(
            "name: {name}\nschedule: \"0 * * * *\"\ntimezone: UTC\ncollections: [a, b]\nretention: {retention}\nkeepLast: {keep_last}\n"
        );
        let doc = Document::parse(Path::new(&format!("{name}.yaml")), text).unwrap();
        let defaults = Defaults {
            timezone: chrono_tz::Tz::UTC,
            concurrency: 3,
            targets: vec!["local".into()],
        };
        validate(&doc, &defaults).0.unwrap()
    }

    /// Every case sees the same policies: 72h retention, keepLast 1, 0 and 3.
    fn policies() -> Vec<Policy> {
        vec![
            policy("hot", "72h", 1),
            policy("nokeep", "72h", 0),
            policy("keep3", "72h", 3),
        ]
    }

    fn found(spec: &Spec) -> Found {
        let nowhere: Arc<dyn Target> = Arc::new(Local::new("/nonexistent"));
        found_in(&nowhere, spec)
    }

    fn found_in(target: &Arc<dyn Target>, &(policy, coll, ago, mode): &Spec) -> Found {
        let (database, collection) = coll.split_once('.').unwrap();
        let to = now() - TimeDelta::seconds(ago);
        let stem = crate::storage::archive_stem(to, database, collection);
        Found {
            manifest: Manifest {
                format: 1,
                dcb_version: "test".into(),
                policy: policy.into(),
                database: database.into(),
                collection: collection.into(),
                time_field: "createdAt".into(),
                mode,
                from: None,
                to,
                documents: 1,
                bytes: 1,
                untimed: None,
                members: vec![],
                server_version: "test".into(),
                started_at: to,
                finished_at: to,
                archive: format!("{stem}.tar.gz"),
                archive_sha256: None,
                archive_size: None,
                encrypted: false,
                kind: None,
                chain: None,
                changes: None,
                epoch: None,
            },
            archive: Source::object(target, format!("{policy}/{stem}.tar.gz")),
            manifest_key: format!("{policy}/{stem}.manifest.json"),
            size: 7,
        }
    }

    // Expired archives go, oldest first; keepLast, the newest snapshot, unknown
    // policies and anything not strictly older than the retention stay; collections
    // (and databases) are counted apart; input order does not matter.
    #[rstest]
    #[case::empty(&[], &[])]
    #[case::nothing_expired(
        &[("hot", "db.a", H, I), ("hot", "db.a", 24 * H, I), ("hot", "db.a", 48 * H, I)],
        &[],
    )]
    #[case::some_expired(
        &[("hot", "db.a", H, I), ("hot", "db.a", 100 * H, I), ("hot", "db.a", 73 * H, I), ("hot", "db.a", 200 * H, I)],
        &[("hot", "db.a", 200 * H), ("hot", "db.a", 100 * H), ("hot", "db.a", 73 * H)],
    )]
    #[case::keep_last_holds_expired(
        &[("keep3", "db.a", 80 * H, I), ("keep3", "db.a", 90 * H, I), ("keep3", "db.a", 100 * H, I), ("keep3", "db.a", 110 * H, I)],
        &[("keep3", "db.a", 110 * H)],
    )]
    #[case::keep_last_one_all_expired(
        &[("hot", "db.a", 80 * H, I), ("hot", "db.a", 90 * H, I)],
        &[("hot", "db.a", 90 * H)],
    )]
    #[case::keep_last_zero(
        &[("nokeep", "db.a", 80 * H, I), ("nokeep", "db.a", 90 * H, I), ("nokeep", "db.a", H, I)],
        &[("nokeep", "db.a", 90 * H), ("nokeep", "db.a", 80 * H)],
    )]
    #[case::keep_last_zero_everything_expired(
        &[("nokeep", "db.a", 80 * H, I), ("nokeep", "db.a", 90 * H, I)],
        &[("nokeep", "db.a", 90 * H), ("nokeep", "db.a", 80 * H)],
    )]
    #[case::newest_snapshot_kept(
        &[("nokeep", "db.a", 100 * H, S), ("nokeep", "db.a", 300 * H, S), ("nokeep", "db.a", 200 * H, S)],
        &[("nokeep", "db.a", 300 * H), ("nokeep", "db.a", 200 * H)],
    )]
    #[case::unknown_policy_kept(
        &[("gone", "db.a", 5000 * H, I), ("gone", "db.a", 4000 * H, S), ("gone", "db.b", 9000 * H, I)],
        &[],
    )]
    #[case::collections_independent(
        &[
            ("hot", "db.a", 100 * H, I),
            ("hot", "db.a", 90 * H, I),
            ("hot", "db.b", 100 * H, I),
            ("hot", "db2.a", 100 * H, I),
            ("nokeep", "db.a", 100 * H, I),
            ("gone", "db.a", 100 * H, I),
        ],
        &[("hot", "db.a", 100 * H), ("nokeep", "db.a", 100 * H)],
    )]
    #[case::boundary_exactly_at_retention_kept(
        &[("nokeep", "db.a", 72 * H, I), ("nokeep", "db.a", 72 * H + 1, I), ("nokeep", "db.a", 72 * H - 1, I)],
        &[("nokeep", "db.a", 72 * H + 1)],
    )]
    fn deletes(#[case] archives: &[Spec], #[case] expected: &[Gone]) {
        let found: Vec<Found> = archives.iter().map(found).collect();
        let plan = compute(&found, &policies(), now());
        let got: Vec<(String, String, i64)> = plan
            .delete
            .iter()
            .map(|d| {
                let target = format!("{}.{}", d.database, d.collection);
                (
                    d.policy.clone(),
                    target,
                    (now() - d.window_end).num_seconds(),
                )
            })
            .collect();
        let want: Vec<(String, String, i64)> = expected
            .iter()
            .map(|&(p, t, ago)| (p.to_string(), t.to_string(), ago))
            .collect();
        assert_eq!(got, want);
        assert_eq!(plan.delete.len() + plan.keep.len(), archives.len());
        for d in &plan.delete {
            assert_eq!(names::manifest_name(&d.archive), d.manifest);
            assert_eq!(d.size, 7);
            assert!(d.reason.contains("retention 3d"), "{}", d.reason);
        }
        let mut reversed = found.clone();
        reversed.reverse();
        assert_eq!(compute(&reversed, &policies(), now()), plan);
    }

    // Each kept archive says why it stays.
    #[rstest]
    #[case::within_retention(("hot", "db.a", H, I), "within retention 3d")]
    #[case::at_retention(("nokeep", "db.a", 72 * H, I), "within retention")]
    #[case::keep_last(("keep3", "db.a", 100 * H, I), "keepLast: one of the newest 3")]
    #[case::keep_last_snapshot(("hot", "db.a", 100 * H, S), "keepLast")]
    #[case::newest_snapshot(("nokeep", "db.a", 100 * H, S), "the newest snapshot")]
    #[case::unknown_policy(("gone", "db.a", 100 * H, I), "unknown policy `gone`")]
    fn kept_reason(#[case] archive: Spec, #[case] reason: &str) {
        let plan = compute(&[found(&archive)], &policies(), now());
        assert!(plan.delete.is_empty(), "{plan:?}");
        assert!(plan.keep[0].reason.contains(reason), "{:?}", plan.keep[0]);
    }

    // Kept archives are listed oldest first, across policies.
    #[test]
    fn kept_oldest_first() {
        let specs = [
            ("hot", "db.a", H, I),
            ("gone", "db.a", 500 * H, I),
            ("keep3", "db.a", 10 * H, I),
        ];
        let found: Vec<Found> = specs.iter().map(found).collect();
        let plan = compute(&found, &policies(), now());
        let order: Vec<&str> = plan.keep.iter().map(|k| k.archive.as_str()).collect();
        let want = [&found[1], &found[2], &found[0]].map(|f| f.key());
        assert_eq!(order, want);
    }

    /// Write the archive and manifest of `spec` into `target` (a folder).
    fn on_disk(target: &Arc<dyn Target>, spec: &Spec) -> Found {
        let f = found_in(target, spec);
        let path = |key: &str| target.local_path(key).unwrap();
        std::fs::create_dir_all(path(f.key()).parent().unwrap()).unwrap();
        std::fs::write(path(f.key()), b"archive").unwrap();
        std::fs::write(path(&f.manifest_key), f.manifest.to_json()).unwrap();
        f
    }

    fn exists(target: &Arc<dyn Target>, key: &str) -> bool {
        target.local_path(key).unwrap().exists()
    }

    // Apply deletes each planned archive with its manifest and nothing else; a file
    // already gone is no error.
    #[test]
    fn apply_deletes_the_plan() {
        let dir = tempfile::tempdir().unwrap();
        let t: Arc<dyn Target> = Arc::new(Local::new(dir.path()));
        let found: Vec<Found> = [100 * H, 90 * H, H]
            .map(|ago| on_disk(&t, &("hot", "db.a", ago, I)))
            .into();
        t.delete(&found[1].manifest_key).unwrap();
        let plan = compute(&found, &policies(), now());
        assert_eq!(plan.delete.len(), 2);
        let report = apply(&plan, t.as_ref());
        assert!(report.errors.is_empty(), "{:?}", report.errors);
        assert_eq!(
            report.deleted,
            [&found[0], &found[1]].map(|f| f.key().to_string())
        );
        for f in &found[..2] {
            assert!(!exists(&t, f.key()) && !exists(&t, &f.manifest_key));
        }
        assert!(exists(&t, found[2].key()) && exists(&t, &found[2].manifest_key));
        assert!(
            apply(&plan, t.as_ref()).errors.is_empty(),
            "applying twice is harmless"
        );
    }

    // An archive that cannot be deleted keeps its manifest (so the next prune retries)
    // and does not stop the other deletions.
    #[test]
    fn apply_collects_errors_and_goes_on() {
        let dir = tempfile::tempdir().unwrap();
        let t: Arc<dyn Target> = Arc::new(Local::new(dir.path()));
        let stuck = on_disk(&t, &("nokeep", "db.a", 200 * H, I));
        let other = on_disk(&t, &("nokeep", "db.a", 100 * H, I));
        // A directory in the archive's place: remove_file fails on it.
        let stuck_path = t.local_path(stuck.key()).unwrap();
        std::fs::remove_file(&stuck_path).unwrap();
        std::fs::create_dir(&stuck_path).unwrap();
        let plan = compute(&[stuck.clone(), other.clone()], &policies(), now());
        assert_eq!(plan.delete.len(), 2);
        let report = apply(&plan, t.as_ref());
        assert_eq!(report.errors.len(), 1);
        assert_eq!(report.errors[0].0, stuck.key());
        assert!(exists(&t, &stuck.manifest_key));
        assert_eq!(report.deleted, [other.key().to_string()]);
        assert!(!exists(&t, other.key()) && !exists(&t, &other.manifest_key));
    }

    // For a policy with `full`, after retention deletes what it may (an injected
    // clock), every moment of the last `retention` still restores exactly from what is
    // left, and no moment before the oldest full left does; the plan says why, chain by
    // chain.
    #[test]
    fn chains_keep_every_moment_of_the_retention() {
        use crate::chain::fixture::{archive, t};
        use crate::export::manifest::History;
        let p = |keep_last: u32| {
            let text = format!(
                "name: p\nschedule: \"0 * * * *\"\ntimezone: UTC\ncollections: [c]\nfull: 1d\nretention: 2d\nkeepLast: {keep_last}\n"
            );
            let doc = Document::parse(Path::new("p.yaml"), text).unwrap();
            let defaults = Defaults {
                timezone: chrono_tz::Tz::UTC,
                concurrency: 3,
                targets: vec!["local".into()],
            };
            validate(&doc, &defaults).0.unwrap()
        };
        // A full every 24 hours and an incremental every hour for five days.
        let mut all = Vec::new();
        for day in 0..5i64 {
            let base = format!("f{day}");
            all.push(archive(&base, &base, day * 24, None, History::Complete));
            let mut prev = base.clone();
            for h in 1..24 {
                let name = format!("i{day}-{h}");
                let sha = format!("sha-{prev}");
                all.push(archive(
                    &name,
                    &base,
                    day * 24 + h,
                    Some((&prev, &sha)),
                    History::Complete,
                ));
                prev = name;
            }
        }
        let now = t(5 * 24 - 1);
        let plan = compute(&all, &[p(0)], now);
        let gone: std::collections::BTreeSet<&str> =
            plan.delete.iter().map(|d| d.archive.as_str()).collect();
        let left: Vec<Found> = all
            .iter()
            .filter(|f| !gone.contains(f.key()))
            .cloned()
            .collect();
        let refs: Vec<&Found> = left.iter().collect();
        let grouped = chain::group(&refs);
        // Every hour of the last two days restores exactly, from a full at or before it.
        for h in (5 * 24 - 1 - 48)..(5 * 24) {
            let chosen = chain::as_of(&grouped, t(h)).unwrap_or_else(|e| panic!("hour {h}: {e}"));
            assert!(chosen.last().unwrap().manifest.restore_point() <= t(h));
            assert!(chosen[0].manifest.kind() == crate::export::manifest::Kind::Full);
        }
        // The oldest full left is the newest one at least two days old (day 2, hour 48);
        // nothing before it restores.
        assert_eq!(grouped.chains[0].full.manifest.archive, "f2");
        assert!(chain::as_of(&grouped, t(47)).is_err());
        // Whole chains went, and the plan says which chain and why.
        assert_eq!(plan.delete.len(), 48);
        for d in &plan.delete {
            let chain = d.chain.as_deref().unwrap();
            assert!(chain == "f0" || chain == "f1", "{d:?}");
            assert!(
                d.reason.contains(&format!("chain of {chain}")),
                "{}",
                d.reason
            );
            assert!(
                d.reason
                    .contains("the chain of f2 restores every moment of the last 2d"),
                "{}",
                d.reason
            );
        }
        assert!(
            plan.keep
                .iter()
                .all(|k| k.reason.contains("within retention 2d"))
        );
        // keepLast counts chains: 4 keeps day 1 too, saying why.
        let plan = compute(&all, &[p(4)], now);
        assert_eq!(plan.delete.len(), 24);
        assert!(
            plan.keep
                .iter()
                .any(|k| k.chain.as_deref() == Some("f1") && k.reason.contains("keepLast"))
        );
    }
}
