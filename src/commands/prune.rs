//! `dcb prune`: delete archives past their policy's retention (never below keepLast),
//! or with `--dry-run` only say which.

use std::collections::BTreeSet;
use std::fmt::Write as _;

use super::{Exit, settings};
use crate::cli::{Cli, PruneArgs};
use crate::human::mb;
use crate::policy::Policy;
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
    let policies = match super::load_policies(&settings, &args.policies, "nothing was pruned") {
        Ok(p) => p,
        Err(e) => return e,
    };
    let target = settings.target();
    let now = chrono::Utc::now();
    let mut out = String::new();

    if args.dry_run {
        let plan = retention::plan(&target, &policies, &args.policies, now);
        let bytes: u64 = plan.delete.iter().map(|d| d.size).sum();
        for d in plan.delete.iter().filter(|d| d.chain.is_none()) {
            let _ = writeln!(out, "would delete  {}  ({})", d.archive, d.reason);
        }
        // The archives of a chain go together: one heading, then each.
        let mut chains: Vec<&str> = Vec::new();
        for c in plan.delete.iter().filter_map(|d| d.chain.as_deref()) {
            if !chains.contains(&c) {
                chains.push(c);
            }
        }
        for chain in chains {
            let mine: Vec<_> = plan
                .delete
                .iter()
                .filter(|d| d.chain.as_deref() == Some(chain))
                .collect();
            let _ = writeln!(
                out,
                "would delete the chain of {chain} ({}): {}",
                archives(mine.len()),
                mine[0].reason
            );
            for d in mine {
                let _ = writeln!(out, "  would delete  {}", d.archive);
            }
        }
        let mut kept_chains: Vec<&str> = Vec::new();
        for c in plan.keep.iter().filter_map(|k| k.chain.as_deref()) {
            if !kept_chains.contains(&c) {
                kept_chains.push(c);
            }
        }
        for chain in kept_chains {
            let k: Vec<_> = plan
                .keep
                .iter()
                .filter(|k| k.chain.as_deref() == Some(chain))
                .collect();
            let _ = writeln!(
                out,
                "keeps the chain of {chain} ({}): {}",
                archives(k.len()),
                k[0].reason
            );
        }
        unknown_policies(&mut out, &plan, &policies);
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

    let pruned = retention::prune(root, &target, &policies, &args.policies, now);
    for key in &pruned.report.deleted {
        let _ = writeln!(out, "deleted  {key}");
    }
    for (key, e) in &pruned.report.errors {
        let _ = writeln!(out, "FAILED to delete {key}: {e}");
    }
    for s in &pruned.skipped {
        let _ = writeln!(out, "SKIPPED policy `{}`: {}", s.policy, s.why);
    }
    unknown_policies(&mut out, &pruned.plan, &policies);
    let _ = write!(
        out,
        "{} ({}) deleted, {} kept",
        archives(pruned.report.deleted.len()),
        mb(pruned.bytes()),
        pruned.plan.keep.len()
    );
    if pruned.held > 0 {
        let _ = write!(out, ", {} skipped", pruned.held);
    }
    if !pruned.report.errors.is_empty() {
        let _ = write!(out, ", {} failed", pruned.report.errors.len());
    }
    out.push('\n');
    out!("{out}");
    if pruned.report.errors.is_empty() && pruned.skipped.is_empty() {
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

fn archives(n: usize) -> String {
    format!("{n} archive{}", if n == 1 { "" } else { "s" })
}
