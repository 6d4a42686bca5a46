//! `dcb prune`: delete archives past their policy's retention.

use std::fmt::Write as _;

use super::{Exit, settings};
use crate::cli::{Cli, PruneArgs};
use crate::diag::{self, Format};
use crate::export::manifest;
use crate::policy::load::load_dir;
use crate::{retention, storage};

pub fn run(cli: &Cli, args: &PruneArgs) -> Exit {
    let settings = match settings(cli) {
        Ok(s) => s,
        Err(e) => {
            crate::logging::init_stderr(cli.verbose, false);
            return e;
        }
    };
    let _guard = crate::logging::init_with_file(
        cli.verbose,
        false,
        &storage::logs_dir(&settings.backup_root),
    );
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
    let selected = |name: &str| args.policies.is_empty() || args.policies.iter().any(|p| p == name);
    let found: Vec<_> = manifest::scan(&settings.backup_root)
        .into_iter()
        .filter(|f| selected(&f.manifest.policy))
        .collect();
    let plan = retention::compute(&found, &set.policies, chrono::Utc::now());
    let size = |p: &std::path::Path| std::fs::metadata(p).map(|m| m.len()).unwrap_or(0);
    let bytes: u64 = plan.delete.iter().map(|d| size(&d.archive)).sum();
    let mut out = String::new();
    if args.dry_run {
        for d in &plan.delete {
            let _ = writeln!(out, "would delete {}  ({})", d.archive.display(), d.reason);
        }
        let _ = writeln!(
            out,
            "{} archive{} ({:.1} MB) would be deleted, {} kept",
            plan.delete.len(),
            if plan.delete.len() == 1 { "" } else { "s" },
            bytes as f64 / 1e6,
            plan.keep.len()
        );
        print!("{out}");
        return Exit::Ok;
    }
    // Never delete under a running export: take each affected policy's lock.
    let mut locks = Vec::new();
    let mut locked_out = Vec::new();
    let mut policies: Vec<&str> = plan.delete.iter().map(|d| d.policy.as_str()).collect();
    policies.dedup();
    for p in policies {
        match storage::try_lock(&storage::policy_dir(&settings.backup_root, p).join(".dcb.lock")) {
            Ok(Some(l)) => locks.push(l),
            _ => locked_out.push(p.to_string()),
        }
    }
    let plan = retention::RetentionPlan {
        delete: plan
            .delete
            .into_iter()
            .filter(|d| !locked_out.contains(&d.policy))
            .collect(),
        keep: plan.keep,
    };
    let report = retention::apply(&plan);
    for path in &report.deleted {
        let _ = writeln!(out, "deleted {}", path.display());
    }
    for (path, e) in &report.errors {
        let _ = writeln!(out, "FAILED to delete {}: {e}", path.display());
    }
    for p in &locked_out {
        let _ = writeln!(
            out,
            "skipped policy `{p}`: a run is in progress; try again later"
        );
    }
    let _ = writeln!(
        out,
        "{} archive{} deleted, {} kept",
        report.deleted.len(),
        if report.deleted.len() == 1 { "" } else { "s" },
        plan.keep.len()
    );
    print!("{out}");
    if report.errors.is_empty() && locked_out.is_empty() {
        Exit::Ok
    } else {
        Exit::Failed
    }
}
