//! `dcb prune`: delete archives past their policy's retention (never below keepLast),
//! or with `--dry-run` only say which.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use super::{Exit, settings};
use crate::cli::{Cli, PruneArgs};
use crate::diag::{self, Format};
use crate::export::manifest::{self, Found};
use crate::human::mb;
use crate::policy::Policy;
use crate::policy::load::load_dir;
use crate::retention::{self, RetentionPlan};
use crate::storage;

pub fn run(cli: &Cli, args: &PruneArgs) -> Exit {
    let settings = match settings(cli) {
        Ok(s) => s,
        Err(e) => {
            crate::logging::init_stderr(cli.verbose, false);
            return e;
        }
    };
    let root = &settings.backup_root;
    // A dry run writes nothing, not even a log file.
    let _guard = if args.dry_run {
        crate::logging::init_stderr(cli.verbose, false);
        None
    } else {
        crate::logging::init_with_file(cli.verbose, false, &storage::logs_dir(root))
    };
    let set = load_dir(&settings.policies_dir, &settings.policy_defaults());
    if set.has_errors() {
        eprint!("{}", diag::render(&set.diagnostics, Format::Human));
        eprintln!("error: the policies are invalid; nothing was pruned");
        return Exit::Config;
    }
    for name in &args.policies {
        if !set.policies.iter().any(|p| &p.name == name) {
            eprintln!(
                "error: no policy named `{name}` in {}",
                settings.policies_dir.display()
            );
            return Exit::Config;
        }
    }
    let selected =
        |f: &Found| args.policies.is_empty() || args.policies.contains(&f.manifest.policy);
    let plan_now = || {
        let found: Vec<Found> = manifest::scan(root).into_iter().filter(selected).collect();
        retention::compute(&found, &set.policies, chrono::Utc::now())
    };
    let plan = plan_now();
    let mut out = String::new();

    if args.dry_run {
        let bytes = size(&plan);
        for d in &plan.delete {
            let _ = writeln!(
                out,
                "would delete  {}  ({})",
                rel(root, &d.archive),
                d.reason
            );
        }
        unknown_policies(&mut out, &plan, &set.policies);
        let _ = writeln!(
            out,
            "{} ({}) would be deleted, {} kept",
            archives(plan.delete.len()),
            mb(bytes),
            plan.keep.len()
        );
        out!("{out}");
        return Exit::Ok;
    }

    // Never delete beside a running export: lock each policy with something to delete
    // (a policy with nothing to delete may be busy without failing the prune), then
    // plan again under the locks, so nothing goes on the strength of a stale scan.
    let affected: BTreeSet<&str> = plan.delete.iter().map(|d| d.policy.as_str()).collect();
    let mut locks = Vec::new();
    let mut skipped: Vec<(String, String)> = Vec::new();
    for policy in affected {
        let dir = storage::policy_dir(root, policy);
        match lock_for_prune(&dir) {
            Ok(lock) => locks.push((policy.to_string(), lock)),
            Err((_, why)) => skipped.push((policy.to_string(), why)),
        }
    }
    let mut plan = if locks.is_empty() { plan } else { plan_now() };
    // Only the locked policies' deletions go; a policy that expired something between
    // the two scans waits for the next prune.
    let (delete, held): (Vec<_>, Vec<_>) = plan
        .delete
        .into_iter()
        .partition(|d| locks.iter().any(|(p, _)| *p == d.policy));
    plan.delete = delete;
    let held = held
        .iter()
        .filter(|d| skipped.iter().any(|(p, _)| *p == d.policy))
        .count();
    let sizes: BTreeMap<PathBuf, u64> = plan
        .delete
        .iter()
        .map(|d| (d.archive.clone(), file_size(&d.archive)))
        .collect();
    let report = retention::apply(&plan);
    drop(locks);
    crate::audit::prune(root, &plan, &report);
    let bytes: u64 = report.deleted.iter().filter_map(|p| sizes.get(p)).sum();

    for path in &report.deleted {
        let _ = writeln!(out, "deleted  {}", rel(root, path));
    }
    for (path, e) in &report.errors {
        let _ = writeln!(out, "FAILED to delete {}: {e}", rel(root, path));
    }
    for (policy, why) in &skipped {
        let _ = writeln!(out, "SKIPPED policy `{policy}`: {why}");
    }
    unknown_policies(&mut out, &plan, &set.policies);
    let _ = write!(
        out,
        "{} ({}) deleted, {} kept",
        archives(report.deleted.len()),
        mb(bytes),
        plan.keep.len()
    );
    if held > 0 {
        let _ = write!(out, ", {held} skipped");
    }
    if !report.errors.is_empty() {
        let _ = write!(out, ", {} failed", report.errors.len());
    }
    out.push('\n');
    out!("{out}");
    if report.errors.is_empty() && skipped.is_empty() {
        Exit::Ok
    } else {
        Exit::Failed
    }
}

/// One note per policy whose archives are kept because its file is gone.
fn unknown_policies(out: &mut String, plan: &RetentionPlan, policies: &[Policy]) {
    let orphans: BTreeSet<&str> = plan
        .keep
        .iter()
        .map(|k| k.policy.as_str())
        .filter(|p| !policies.iter().any(|q| q.name == *p))
        .collect();
    for p in orphans {
        let _ = writeln!(
            out,
            "note: archives of `{p}` are kept: no policy of that name exists (deleted or renamed?)"
        );
    }
}

/// Bytes of the archives the plan deletes.
fn size(plan: &RetentionPlan) -> u64 {
    plan.delete.iter().map(|d| file_size(&d.archive)).sum()
}

fn file_size(p: &Path) -> u64 {
    std::fs::metadata(p).map(|m| m.len()).unwrap_or(0)
}

fn rel(root: &Path, p: &Path) -> String {
    p.strip_prefix(root).unwrap_or(p).display().to_string()
}

fn archives(n: usize) -> String {
    format!("{n} archive{}", if n == 1 { "" } else { "s" })
}

/// The run lock, then the readers lock, both exclusive and without waiting: a prune
/// never deletes beside a running export or under a verify or restore reading the
/// policy's archives. The error says which, for the user, and whether the policy is
/// merely busy (`true`) or its lock cannot be taken at all.
pub fn lock_for_prune(dir: &std::path::Path) -> Result<[storage::Lock; 2], (bool, String)> {
    let take = |path: std::path::PathBuf, busy: &str| match storage::try_lock(&path) {
        Ok(Some(lock)) => Ok(lock),
        Ok(None) => Err((true, busy.to_string())),
        Err(e) => Err((
            false,
            format!("cannot take its lock {}: {e}", path.display()),
        )),
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
