//! Retention: which archives to delete. [`compute`] is pure (the clock is an argument)
//! and returns a plan that `dcb prune --dry-run` prints; [`apply`] carries it out.

use std::collections::BTreeMap;
use std::path::PathBuf;

use chrono::{DateTime, Utc};

use crate::export::manifest::Found;
use crate::policy::{Mode, Policy};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Deletion {
    pub archive: PathBuf,
    pub manifest: PathBuf,
    pub policy: String,
    pub database: String,
    pub collection: String,
    pub window_end: DateTime<Utc>,
    pub reason: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Kept {
    pub archive: PathBuf,
    pub reason: String,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RetentionPlan {
    pub delete: Vec<Deletion>,
    pub keep: Vec<Kept>,
}

/// Decide, for every archive, whether it goes. Rules:
/// - an archive goes only when its window ended longer ago than its policy's
///   retention, so no data newer than the retention is ever deleted;
/// - the newest `keepLast` archives of each collection stay, however old, and the
///   newest snapshot of a collection always stays;
/// - archives of a policy that no longer exists are never deleted.
pub fn compute(found: &[Found], policies: &[Policy], now: DateTime<Utc>) -> RetentionPlan {
    let mut plan = RetentionPlan::default();
    let mut groups: BTreeMap<(String, String, String), Vec<&Found>> = BTreeMap::new();
    for f in found {
        let m = &f.manifest;
        groups
            .entry((m.policy.clone(), m.database.clone(), m.collection.clone()))
            .or_default()
            .push(f);
    }
    for ((policy_name, database, collection), mut archives) in groups {
        // Newest first.
        archives.sort_by(|a, b| {
            b.manifest
                .to
                .cmp(&a.manifest.to)
                .then(b.archive_path.cmp(&a.archive_path))
        });
        let Some(policy) = policies.iter().find(|p| p.name == policy_name) else {
            plan.keep.extend(archives.iter().map(|f| Kept {
                archive: f.archive_path.clone(),
                reason: format!("policy `{policy_name}` no longer exists"),
            }));
            continue;
        };
        let newest_snapshot = archives
            .iter()
            .position(|f| f.manifest.mode == Mode::Snapshot);
        let retention = policy.retention.as_chrono();
        for (i, f) in archives.iter().enumerate() {
            let age = now - f.manifest.to;
            let reason = if (i as u32) < policy.keep_last {
                Some(format!("one of the newest {} (keepLast)", policy.keep_last))
            } else if Some(i) == newest_snapshot {
                Some("the newest snapshot".to_string())
            } else if age <= retention {
                Some(format!("within retention {}", policy.retention))
            } else {
                None
            };
            match reason {
                Some(reason) => plan.keep.push(Kept {
                    archive: f.archive_path.clone(),
                    reason,
                }),
                None => plan.delete.push(Deletion {
                    archive: f.archive_path.clone(),
                    manifest: f.manifest_path.clone(),
                    policy: policy_name.clone(),
                    database: database.clone(),
                    collection: collection.clone(),
                    window_end: f.manifest.to,
                    reason: format!(
                        "window ended {} ago, retention {}",
                        crate::duration::HumanDuration(std::time::Duration::from_secs(
                            age.num_seconds().max(0) as u64
                        )),
                        policy.retention
                    ),
                }),
            }
        }
    }
    plan.delete.sort_by(|a, b| {
        a.window_end
            .cmp(&b.window_end)
            .then(a.archive.cmp(&b.archive))
    });
    plan.keep.sort_by(|a, b| a.archive.cmp(&b.archive));
    plan
}

#[derive(Debug, Default)]
pub struct ApplyReport {
    pub deleted: Vec<PathBuf>,
    pub errors: Vec<(PathBuf, String)>,
}

/// Delete what the plan says. The manifest goes first: an archive without its
/// manifest is inert (no watermark is rebuilt from it), whereas a manifest without
/// its archive would claim data that is gone. Errors are collected, not fatal.
pub fn apply(plan: &RetentionPlan) -> ApplyReport {
    let mut report = ApplyReport::default();
    for d in &plan.delete {
        let mut failed = false;
        for path in [&d.manifest, &d.archive] {
            match std::fs::remove_file(path) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => {
                    report.errors.push((path.clone(), e.to_string()));
                    failed = true;
                    break;
                }
            }
        }
        if !failed {
            tracing::info!(
                archive = %d.archive.display(),
                policy = %d.policy,
                collection = %d.collection,
                window_end = %d.window_end,
                reason = %d.reason,
                "retention deleted an archive"
            );
            report.deleted.push(d.archive.clone());
        }
    }
    report
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::document::Document;
    use crate::export::manifest::Manifest;
    use crate::policy::validate::{Defaults, validate};
    use rstest::rstest;

    const NOW: &str = "2026-11-25T12:00:00Z";

    fn t(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().to_utc()
    }

    fn policy(name: &str, retention: &str, keep_last: u32) -> Policy {
        let text = format!(
            "name: {name}\nschedule: \"0 * * * *\"\ntimezone: UTC\ncollections: [a, b]\nretention: {retention}\nkeepLast: {keep_last}\n"
        );
        let doc = Document::parse(std::path::Path::new(&format!("{name}.yaml")), text).unwrap();
        validate(
            &doc,
            &Defaults {
                timezone: chrono_tz::Tz::UTC,
                concurrency: 3,
            },
        )
        .0
        .unwrap()
    }

    /// An archive of `coll` whose window ended `hours_ago` before NOW.
    fn archive(policy: &str, coll: &str, hours_ago: i64, mode: Mode) -> Found {
        let to = t(NOW) - chrono::TimeDelta::hours(hours_ago);
        let stem = format!("{}_{coll}", crate::storage::stamp(to));
        Found {
            manifest: Manifest {
                format: 1,
                dcb_version: "test".into(),
                policy: policy.into(),
                database: "db".into(),
                collection: coll.into(),
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
            },
            manifest_path: PathBuf::from(format!("{policy}/{stem}.manifest.json")),
            archive_path: PathBuf::from(format!("{policy}/{stem}.tar.gz")),
        }
    }

    fn deleted_hours(plan: &RetentionPlan) -> Vec<i64> {
        plan.delete
            .iter()
            .map(|d| (t(NOW) - d.window_end).num_hours())
            .collect()
    }

    // Only archives older than the retention go, oldest first; keepLast holds the
    // newest ones back however old they are; exactly at the retention stays.
    #[rstest]
    #[case("72h", 1, &[1, 24, 48], &[])]
    #[case("72h", 1, &[1, 71, 72, 73, 100], &[100, 73])]
    #[case("72h", 3, &[80, 90, 100, 110], &[110])]
    #[case("72h", 1, &[80, 90], &[90])]
    #[case("72h", 0, &[80, 90], &[90, 80])]
    #[case("1h", 2, &[], &[])]
    fn incremental(
        #[case] retention: &str,
        #[case] keep_last: u32,
        #[case] ages: &[i64],
        #[case] expected: &[i64],
    ) {
        let found: Vec<Found> = ages
            .iter()
            .map(|h| archive("hot", "a", *h, Mode::Incremental))
            .collect();
        let plan = compute(&found, &[policy("hot", retention, keep_last)], t(NOW));
        assert_eq!(deleted_hours(&plan), expected);
        assert_eq!(plan.delete.len() + plan.keep.len(), ages.len());
    }

    // The newest snapshot of a collection stays even with keepLast 0.
    #[test]
    fn newest_snapshot_is_kept() {
        let found: Vec<Found> = [100, 200, 300]
            .iter()
            .map(|h| archive("cfg", "a", *h, Mode::Snapshot))
            .collect();
        let plan = compute(&found, &[policy("cfg", "24h", 0)], t(NOW));
        assert_eq!(deleted_hours(&plan), [300, 200]);
        assert!(plan.keep[0].reason.contains("snapshot"));
    }

    // Collections are counted separately; archives of a vanished policy are kept.
    #[test]
    fn collections_and_unknown_policies() {
        let found = vec![
            archive("hot", "a", 100, Mode::Incremental),
            archive("hot", "a", 90, Mode::Incremental),
            archive("hot", "b", 100, Mode::Incremental),
            archive("gone", "a", 1000, Mode::Incremental),
        ];
        let plan = compute(&found, &[policy("hot", "72h", 1)], t(NOW));
        assert_eq!(plan.delete.len(), 1);
        assert_eq!(plan.delete[0].collection, "a");
        assert_eq!(deleted_hours(&plan), [100]);
        assert!(
            plan.keep
                .iter()
                .any(|k| k.reason.contains("no longer exists"))
        );
    }
}
