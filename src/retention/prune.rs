//! Carrying a retention plan out: under each policy's locks, planned again there, the
//! archives deleted from their target, each deletion audited. `dcb prune` and the
//! service's prune after a run both come through [`prune`].

use std::collections::BTreeSet;
use std::path::Path;
use std::sync::Arc;

use chrono::{DateTime, Utc};

use super::{RetentionPlan, compute};
use crate::audit;
use crate::catalog::{self, Found};
use crate::policy::Policy;
use crate::storage::{self, Lock, Target};

/// What [`apply`] did.
#[derive(Debug, Default)]
pub struct ApplyReport {
    /// Archives deleted (with their manifests), by key.
    pub deleted: Vec<String>,
    /// Objects that could not be deleted (by key), and why.
    pub errors: Vec<(String, String)>,
}

/// Delete what the plan says from `target`, logging each deletion; errors are
/// collected, not fatal, and an object already gone is not an error.
///
/// The archive goes first, its manifest last. If the archive cannot be deleted (open
/// in another program on Windows, permissions), the manifest stays and the next prune
/// retries the pair. A crash between the two leaves only a small manifest whose archive
/// is gone, which nothing trusts (`catalog::scan` skips it with a warning naming it),
/// rather than a large archive that no manifest points to, which no prune would ever
/// find again.
pub fn apply(plan: &RetentionPlan, target: &dyn Target) -> ApplyReport {
    let mut report = ApplyReport::default();
    for d in &plan.delete {
        let failed = [&d.archive, &d.manifest].into_iter().find_map(|key| {
            target
                .delete(key)
                .err()
                .map(|e| (key.clone(), e.source.to_string()))
        });
        match failed {
            Some(error) => report.errors.push(error),
            None => {
                tracing::info!(
                    archive = %d.archive,
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

/// One audit line per archive `plan` deleted, or failed to delete.
pub fn audit(root: &Path, plan: &RetentionPlan, report: &ApplyReport) {
    for d in &plan.delete {
        let error = report
            .errors
            .iter()
            .find(|(k, _)| *k == d.archive || *k == d.manifest);
        let deleted = report.deleted.contains(&d.archive);
        if !deleted && error.is_none() {
            continue;
        }
        let entry = audit::Entry::new(audit::Operation::Prune, deleted)
            .policy(d.policy.clone())
            .source(format!("{}.{}", d.database, d.collection))
            .archive(d.archive.clone())
            .detail(match error {
                Some((_, e)) => e.clone(),
                None => d.reason.clone(),
            });
        audit::append(root, &entry);
    }
}

/// A policy retention left alone this time, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Skipped {
    pub policy: String,
    /// Merely busy (a run, a verify or a restore): the next prune will do it.
    pub busy: bool,
    pub why: String,
}

/// The run lock, then the readers lock, both exclusive and without waiting: a prune
/// never deletes beside a running export or under a verify or restore reading the
/// policy's archives. The error says which, for the user.
pub fn lock_for_prune(dir: &Path) -> Result<[Lock; 2], Skipped> {
    let policy = dir
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let take = |path: std::path::PathBuf, busy: &str| match storage::try_lock(&path) {
        Ok(Some(lock)) => Ok(lock),
        Ok(None) => Err(Skipped {
            policy: policy.clone(),
            busy: true,
            why: busy.to_string(),
        }),
        Err(e) => Err(Skipped {
            policy: policy.clone(),
            busy: false,
            why: format!("cannot take its lock {}: {e}", path.display()),
        }),
    };
    let run = take(
        dir.join(".dcb.lock"),
        "a run is in progress; try again when it has finished",
    )?;
    let readers = take(
        storage::readers_lock(dir),
        "its archives are being read by dcb verify or restore; try again when they have finished",
    )?;
    Ok([run, readers])
}

/// The plan for the archives of the `selected` policies (every one when empty).
pub fn plan(
    target: &Arc<dyn Target>,
    policies: &[Policy],
    selected: &[String],
    now: DateTime<Utc>,
) -> RetentionPlan {
    let found: Vec<Found> = catalog::scan(target)
        .into_iter()
        .filter(|f| selected.is_empty() || selected.contains(&f.manifest.policy))
        .collect();
    compute(&found, policies, now)
}

/// What [`prune`] did.
#[derive(Debug, Default)]
pub struct Pruned {
    /// What was planned under the locks, for the policies that could be locked.
    pub plan: RetentionPlan,
    pub report: ApplyReport,
    /// Policies with something to delete that were left alone.
    pub skipped: Vec<Skipped>,
    /// Deletions held back because their policy was skipped.
    pub held: usize,
}

impl Pruned {
    /// Bytes of the archives deleted.
    pub fn bytes(&self) -> u64 {
        self.plan
            .delete
            .iter()
            .filter(|d| self.report.deleted.contains(&d.archive))
            .map(|d| d.size)
            .sum()
    }
}

/// Apply retention to the `selected` policies' archives (every policy's when empty).
/// Each policy with something to delete is locked ([`lock_for_prune`]) and planned
/// again under its lock, so nothing goes on the strength of a stale scan; a policy that
/// cannot be locked is skipped and keeps everything.
pub fn prune(
    root: &Path,
    target: &Arc<dyn Target>,
    policies: &[Policy],
    selected: &[String],
    now: DateTime<Utc>,
) -> Pruned {
    let first = plan(target, policies, selected, now);
    let affected: BTreeSet<&str> = first.delete.iter().map(|d| d.policy.as_str()).collect();
    let mut locks = Vec::new();
    let mut skipped = Vec::new();
    for policy in affected {
        match lock_for_prune(&storage::policy_dir(root, policy)) {
            Ok(lock) => locks.push((policy.to_string(), lock)),
            Err(s) => skipped.push(s),
        }
    }
    let mut planned = if locks.is_empty() {
        first
    } else {
        plan(target, policies, selected, now)
    };
    // Only the locked policies' deletions go; a policy that expired something between
    // the two scans waits for the next prune.
    let locked = |p: &str| locks.iter().any(|(l, _)| l == p);
    let (delete, others): (Vec<_>, Vec<_>) =
        planned.delete.into_iter().partition(|d| locked(&d.policy));
    planned.delete = delete;
    let held = others
        .iter()
        .filter(|d| skipped.iter().any(|s| s.policy == d.policy))
        .count();
    let report = apply(&planned, target.as_ref());
    drop(locks);
    audit(root, &planned, &report);
    Pruned {
        plan: planned,
        report,
        skipped,
        held,
    }
}
