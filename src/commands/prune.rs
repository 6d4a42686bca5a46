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
        print!("{out}");
        return Exit::Ok;
    }

    // Never delete beside a running export: lock each policy with something to delete
    // (a policy with nothing to delete may be busy without failing the prune), then
    // plan again under the locks, so nothing goes on the strength of a stale scan.
    let affected: BTreeSet<&str> = plan.delete.iter().map(|d| d.policy.as_str()).collect();
    let mut locks = Vec::new();
    let mut skipped: Vec<(String, String)> = Vec::new();
    for policy in affected {
        let path = storage::policy_dir(root, policy).join(".dcb.lock");
        match storage::try_lock(&path) {
            Ok(Some(lock)) => locks.push((policy.to_string(), lock)),
            Ok(None) => skipped.push((
                policy.to_string(),
                "a run is in progress; try again when it has finished".into(),
            )),
            Err(e) => skipped.push((
                policy.to_string(),
                format!("cannot take its lock {}: {e}", path.display()),
            )),
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
    print!("{out}");
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
