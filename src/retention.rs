//! Retention: which archives to delete. [`compute`] is pure (the clock is an argument)
//! and returns a plan that `dcb prune --dry-run` prints; [`apply`] carries it out.

use std::collections::BTreeMap;
use std::io;
use std::path::{Path, PathBuf};

use chrono::{DateTime, TimeDelta, Utc};

use crate::duration::HumanDuration;
use crate::export::manifest::Found;
use crate::policy::{Mode, Policy};

/// An archive the plan deletes, with its sidecar manifest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Deletion {
    pub archive: PathBuf,
    pub manifest: PathBuf,
    pub policy: String,
    pub database: String,
    pub collection: String,
    /// The end of the archive's window (`manifest.to`).
    pub window_end: DateTime<Utc>,
    /// Why it goes, for people: its age against the retention.
    pub reason: String,
}

/// An archive the plan keeps, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Kept {
    pub archive: PathBuf,
    pub policy: String,
    pub reason: String,
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
        archives.sort_by(|a, b| {
            (b.manifest.to, &b.archive_path).cmp(&(a.manifest.to, &a.archive_path))
        });
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
                    archive: f.archive_path.clone(),
                    manifest: f.manifest_path.clone(),
                    policy: policy_name.to_string(),
                    database: database.to_string(),
                    collection: collection.to_string(),
                    window_end: f.manifest.to,
                    reason: format!(
                        "window ended {} ago, retention {}",
                        whole_seconds(age),
                        policy.retention
                    ),
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
        archive: f.archive_path.clone(),
        policy: f.manifest.policy.clone(),
        reason,
    }
}

fn whole_seconds(d: TimeDelta) -> HumanDuration {
    HumanDuration(std::time::Duration::from_secs(
        u64::try_from(d.num_seconds()).unwrap_or(0),
    ))
}

/// What [`apply`] did.
#[derive(Debug, Default)]
pub struct ApplyReport {
    /// Archives deleted (with their manifests).
    pub deleted: Vec<PathBuf>,
    /// Files that could not be deleted, and why.
    pub errors: Vec<(PathBuf, String)>,
}

/// Delete what the plan says, logging each deletion; errors are collected, not fatal,
/// and a file already gone is not an error.
///
/// The archive goes first, its manifest last. If the archive cannot be deleted (open
/// in another program on Windows, permissions), the manifest stays and the next prune
/// retries the pair. A crash between the two leaves only a small manifest whose archive
/// is gone, which nothing trusts (`manifest::scan` skips it with a warning naming it),
/// rather than a large archive that no manifest points to, which no prune would ever
/// find again.
pub fn apply(plan: &RetentionPlan) -> ApplyReport {
    let mut report = ApplyReport::default();
    for d in &plan.delete {
        let failed = [&d.archive, &d.manifest]
            .into_iter()
            .find_map(|path| remove(path).err().map(|e| (path.clone(), e.to_string())));
        match failed {
            Some(error) => report.errors.push(error),
            None => {
                tracing::info!(
                    archive = %d.archive.display(),
                    policy = %d.policy,
                    database = %d.database,
                    collection = %d.collection,
                    window_end = %d.window_end.to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
                    reason = %d.reason,
                    "retention deleted an archive"
                );
                report.deleted.push(d.archive.clone());
            }
        }
    }
    report
}

fn remove(path: &Path) -> io::Result<()> {
    match std::fs::remove_file(path) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::document::Document;
    use crate::export::manifest::Manifest;
    use crate::policy::validate::{Defaults, validate};
    use Mode::{Incremental as I, Snapshot as S};
    use rstest::rstest;

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

    fn found(&(policy, target, ago, mode): &Spec) -> Found {
        let (database, collection) = target.split_once('.').unwrap();
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
            },
            manifest_path: PathBuf::from(format!("{policy}/{stem}.manifest.json")),
            archive_path: PathBuf::from(format!("{policy}/{stem}.tar.gz")),
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
            assert_eq!(
                d.archive.with_extension("").with_extension("manifest.json"),
                d.manifest
            );
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
        let order: Vec<&Path> = plan.keep.iter().map(|k| k.archive.as_path()).collect();
        let want = [&found[1], &found[2], &found[0]].map(|f| f.archive_path.as_path());
        assert_eq!(order, want);
    }

    /// Write the archive and manifest of `spec` under `root`; the plan's paths point there.
    fn on_disk(root: &Path, spec: &Spec) -> Found {
        let mut f = found(spec);
        f.archive_path = root.join(&f.archive_path);
        f.manifest_path = root.join(&f.manifest_path);
        std::fs::create_dir_all(f.archive_path.parent().unwrap()).unwrap();
        std::fs::write(&f.archive_path, b"archive").unwrap();
        std::fs::write(&f.manifest_path, f.manifest.to_json()).unwrap();
        f
    }

    // Apply deletes each planned archive with its manifest and nothing else; a file
    // already gone is no error.
    #[test]
    fn apply_deletes_the_plan() {
        let dir = tempfile::tempdir().unwrap();
        let found: Vec<Found> = [100 * H, 90 * H, H]
            .map(|ago| on_disk(dir.path(), &("hot", "db.a", ago, I)))
            .into();
        std::fs::remove_file(&found[1].manifest_path).unwrap();
        let plan = compute(&found, &policies(), now());
        assert_eq!(plan.delete.len(), 2);
        let report = apply(&plan);
        assert!(report.errors.is_empty(), "{:?}", report.errors);
        assert_eq!(
            report.deleted,
            [&found[0], &found[1]].map(|f| f.archive_path.clone())
        );
        for f in &found[..2] {
            assert!(!f.archive_path.exists() && !f.manifest_path.exists());
        }
        assert!(found[2].archive_path.exists() && found[2].manifest_path.exists());
        assert!(apply(&plan).errors.is_empty(), "applying twice is harmless");
    }

    // An archive that cannot be deleted keeps its manifest (so the next prune retries)
    // and does not stop the other deletions.
    #[test]
    fn apply_collects_errors_and_goes_on() {
        let dir = tempfile::tempdir().unwrap();
        let stuck = on_disk(dir.path(), &("nokeep", "db.a", 200 * H, I));
        let other = on_disk(dir.path(), &("nokeep", "db.a", 100 * H, I));
        // A directory in the archive's place: remove_file fails on it.
        std::fs::remove_file(&stuck.archive_path).unwrap();
        std::fs::create_dir(&stuck.archive_path).unwrap();
        let plan = compute(&[stuck.clone(), other.clone()], &policies(), now());
        assert_eq!(plan.delete.len(), 2);
        let report = apply(&plan);
        assert_eq!(report.errors.len(), 1);
        assert_eq!(report.errors[0].0, stuck.archive_path);
        assert!(stuck.manifest_path.exists());
        assert_eq!(report.deleted, std::slice::from_ref(&other.archive_path));
        assert!(!other.archive_path.exists() && !other.manifest_path.exists());
    }
}
