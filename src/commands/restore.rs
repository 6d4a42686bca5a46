//! `dcb restore`: plan, verify every archive, then write.

use std::fmt::Write as _;
use std::io::IsTerminal as _;
use std::time::Duration;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

use super::{Exit, runtime, settings};
use crate::cli::{Cli, RestoreArgs};
use crate::human::{count, plural};
use crate::restore::preflight::{self, Refusal};
use crate::restore::{self, Chain, Request, write};

pub fn run(cli: &Cli, args: &RestoreArgs) -> Exit {
    let settings = match settings(cli) {
        Ok(s) => s,
        Err(e) => {
            crate::logging::init_stderr(cli.verbose, args.quiet);
            return e;
        }
    };
    if let Err(e) = super::read_target(&settings, args.target.as_deref()) {
        return e;
    }
    let root = &settings.backup_root;
    // A dry run writes nothing, not even a log file.
    let _guard = if args.dry_run {
        crate::logging::init_stderr(cli.verbose, args.quiet);
        None
    } else {
        crate::logging::init_with_file(cli.verbose, args.quiet, &crate::storage::logs_dir(root))
    };
    match restore(&settings, args) {
        Ok(exit) => exit,
        // The one place a restore that stopped before its writes is reported and
        // audited (each chain's own writes are audited as they end).
        Err(refusal) => {
            explain(&refusal);
            let reason = crate::redact::text(&refusal.to_string(), &settings.mongodb_uri);
            eprintln!("error: {reason}");
            if !args.dry_run {
                audit_refusal(root, args, &reason);
            }
            if refusal.is_config() {
                Exit::Config
            } else {
                Exit::Failed
            }
        }
    }
}

fn audit_refusal(root: &std::path::Path, args: &RestoreArgs, reason: &str) {
    use crate::audit::{Entry, Operation};
    let mut entry = Entry::new(Operation::Restore, false).detail(reason);
    if !args.policies.is_empty() {
        entry = entry.policy(args.policies.join(","));
    }
    if !args.collections.is_empty() {
        entry = entry.source(args.collections.join(","));
    }
    if !args.archives.is_empty() {
        let names: Vec<String> = args
            .archives
            .iter()
            .map(|a| crate::storage::archive_key(root, a))
            .collect();
        entry = entry.archive(names.join(","));
    }
    let target = match &args.to_collection {
        Some(c) => format!("{}.{c}", args.to_database),
        None => args.to_database.clone(),
    };
    crate::audit::append(root, &entry.target(target));
}

/// Details of a refusal, before its summary line.
fn explain(refusal: &Refusal) {
    match refusal {
        Refusal::Holes(holes) => {
            for b in holes {
                eprintln!("error: {}: {}", b.manifest_key, b.problem);
            }
        }
        Refusal::Unreadable { corrupt, locked } => {
            for d in corrupt.iter().filter(|d| !d.problems.is_empty()) {
                eprintln!("error: {} is corrupt:", d.shown);
                for p in &d.problems {
                    eprintln!("  {p}");
                }
            }
            for d in locked {
                if let Some(key) = &d.key_error {
                    eprintln!("error: cannot open {}: {key}", d.shown);
                }
            }
        }
        _ => {}
    }
}

/// Plan, verify, write. `Err` for every way of stopping before the first write.
fn restore(settings: &crate::config::Settings, args: &RestoreArgs) -> Result<Exit, Refusal> {
    let root = &settings.backup_root;
    let until = args
        .until
        .as_deref()
        .map(|s| restore::parse_time(s, settings.timezone))
        .transpose()
        .map_err(Refusal::Until)?;
    let keys = std::sync::Arc::new(settings.keys(args.identity.as_deref())?);
    // A prune waits for this restore (and it for a prune in progress), so no archive
    // goes between the scan, the verification and the last write. A dry run only
    // reads manifests and leaves no lock file behind.
    let _readers = if args.dry_run {
        Vec::new()
    } else if args.archives.is_empty() {
        crate::storage::lock_readers(root, &args.policies)
    } else {
        crate::storage::lock_readers_of(root, &args.archives)
    };
    let found = if args.archives.is_empty() {
        // The name was checked before (`run`).
        let target = match args.target.as_deref() {
            Some(name) => settings.target_named(name),
            None => settings.target(),
        };
        let (found, elsewhere) = preflight::scan(&target, &args.policies, &args.collections)?;
        for b in &elsewhere {
            eprintln!(
                "warning: {}: {} (not a selected collection; ignored)",
                b.manifest_key, b.problem
            );
        }
        found
    } else {
        preflight::explicit(&args.archives, &keys)?
    };
    let req = Request {
        policies: args.policies.clone(),
        collections: args.collections.clone(),
        until,
        to_database: args.to_database.clone(),
        to_collection: args.to_collection.clone(),
        in_place: args.in_place,
        partial: args.partial,
        now: chrono::Utc::now(),
    };
    let (chains, skipped) = restore::plan_with_skipped(&found, &req)?;
    if args.dry_run || !args.quiet {
        out!("{}", render_plan(root, &chains, args, until));
        for s in &skipped {
            outln!("  {s}: nothing from before --until; not restored");
        }
    }
    if args.dry_run {
        outln!("dry run: nothing was written");
        return Ok(Exit::Ok);
    }
    // Every archive is proven before the first write.
    let metadata = preflight::verify_all(root, &chains, &keys)?;
    let rt = runtime();
    let client = rt
        .block_on(crate::mongo::connect(settings, Duration::from_secs(10)))
        .map_err(|e| Refusal::Connect(e.to_string()))?;
    rt.block_on(preflight::check_targets(
        &client,
        root,
        &chains,
        &metadata,
        args.drop,
        until.is_some(),
    ))?;
    let mut failed = false;
    for chain in &chains {
        let meta = preflight::newest_metadata(root, chain, &metadata);
        let bar = progress_bar(chain, args.quiet);
        let progress = |n: u64| {
            if let Some(b) = &bar {
                b.set_position(n);
            }
        };
        let result = rt.block_on(write::chain(
            &client,
            chain,
            meta,
            keys.clone(),
            write::Options {
                drop_first: args.drop,
                until,
                bypass_validation: args.bypass_validation,
            },
            &progress,
        ));
        if let Some(b) = bar {
            b.finish_and_clear();
        }
        match result {
            Ok(o) => {
                crate::audit::append(
                    root,
                    &crate::audit::Entry::new(crate::audit::Operation::Restore, true)
                        .policy(chain.policy.clone())
                        .source(o.source.clone())
                        .target(o.target.clone())
                        .detail(format!(
                            "{} archives, {} inserted, {} replaced, {} left out by --until",
                            o.archives, o.inserted, o.replaced, o.skipped
                        )),
                );
                tracing::info!(source = %o.source, target = %o.target, read = o.read, inserted = o.inserted, replaced = o.replaced, skipped = o.skipped, "restored");
                if !args.quiet {
                    outln!("{}", render_outcome(&o));
                }
            }
            Err(e) => {
                let e = crate::redact::text(&e.to_string(), &settings.mongodb_uri);
                crate::audit::append(
                    root,
                    &crate::audit::Entry::new(crate::audit::Operation::Restore, false)
                        .policy(chain.policy.clone())
                        .source(chain.source())
                        .target(chain.target())
                        .detail(e.clone()),
                );
                tracing::error!(error = %e, "restore failed");
                eprintln!("error: {e}");
                failed = true;
            }
        }
    }
    Ok(if failed { Exit::Failed } else { Exit::Ok })
}

fn render_outcome(o: &write::Outcome) -> String {
    let mut line = format!(
        "restored {} -> {}: {} documents ({} inserted, {} replaced)",
        o.source,
        o.target,
        count(o.inserted + o.replaced),
        count(o.inserted),
        count(o.replaced)
    );
    if o.deleted > 0 {
        let _ = write!(line, ", {} deleted as recorded", count(o.deleted));
    }
    if o.skipped > 0 {
        let _ = write!(line, ", {} at or after --until left out", count(o.skipped));
    }
    match o.indexes {
        1 => line.push_str(", 1 index"),
        n => {
            let _ = write!(line, ", {n} indexes");
        }
    }
    for note in &o.notes {
        let _ = write!(line, "\n  note: {note}");
    }
    line
}

fn render_plan(
    root: &std::path::Path,
    chains: &[Chain],
    args: &RestoreArgs,
    until: Option<chrono::DateTime<chrono::Utc>>,
) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "restore plan{}{}:",
        until
            .map(|t| format!(
                "{} {}",
                if chains.iter().all(|c| c.exact) {
                    ", as of"
                } else {
                    ", documents before"
                },
                t.to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true)
            ))
            .unwrap_or_default(),
        if args.drop {
            ", dropping each target first"
        } else {
            ", upserting by _id"
        }
    );
    for c in chains {
        let as_of = match (c.exact, c.archives.last()) {
            (true, Some(last)) => format!(
                ", as it was at {}",
                last.manifest
                    .restore_point()
                    .to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
            ),
            _ => String::new(),
        };
        let _ = writeln!(
            out,
            "  {} ({}) -> {}: {}, {} documents{}{as_of}",
            c.source(),
            c.policy,
            c.target(),
            plural(c.archives.len(), "archive"),
            count(c.documents()),
            if until.is_some() && !c.exact {
                " at most"
            } else {
                ""
            }
        );
        if args.dry_run {
            for f in &c.archives {
                let m = &f.manifest;
                let what = match (&m.chain, m.kind()) {
                    (Some(_), crate::export::manifest::Kind::Full) => "full  ".to_string(),
                    (Some(_), _) => format!(
                        "+ {} deleted  ",
                        count(m.changes.as_ref().map_or(0, |c| c.deleted))
                    ),
                    (None, _) => String::new(),
                };
                let _ = writeln!(
                    out,
                    "    {}  {}  {what}{} documents",
                    f.archive.name(root),
                    crate::listing::window_text(m.kind(), m.mode, m.from, m.to),
                    count(m.documents)
                );
            }
        }
    }
    out
}

fn progress_bar(chain: &Chain, quiet: bool) -> Option<ProgressBar> {
    if quiet || !std::io::stderr().is_terminal() {
        return None;
    }
    let bar = ProgressBar::with_draw_target(
        Some(chain.documents()),
        ProgressDrawTarget::stderr_with_hz(4),
    );
    bar.set_style(
        super::progress_style(
            "{prefix} [{bar:30}] {human_pos}/{human_len} documents ({rate}, {eta})",
        )
        .unwrap_or_else(ProgressStyle::default_bar)
        .progress_chars("=> "),
    );
    bar.set_prefix(chain.target());
    Some(bar)
}
