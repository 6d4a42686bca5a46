//! `dcb restore`: plan, verify every archive, then write.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::io::IsTerminal as _;
use std::path::PathBuf;
use std::time::Duration;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

use super::verify::{Target, check_all};
use super::{Exit, runtime, settings};
use crate::cli::{Cli, RestoreArgs};
use crate::export::manifest::{self, Found, Manifest};
use crate::human::{count, plural};
use crate::restore::{self, Chain, Request, write};
use crate::verify;

pub fn run(cli: &Cli, args: &RestoreArgs) -> Exit {
    let settings = match settings(cli) {
        Ok(s) => s,
        Err(e) => {
            crate::logging::init_stderr(cli.verbose, args.quiet);
            return e;
        }
    };
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
        Err(Refused { exit, reason }) => {
            let reason = crate::redact::text(&reason, &settings.mongodb_uri);
            eprintln!("error: {reason}");
            if !args.dry_run {
                audit_refusal(root, args, &reason);
            }
            exit
        }
    }
}

/// Why a restore stopped before writing, and the exit status. Details (each corrupt
/// archive, each broken manifest) are printed before; `reason` is the summary line.
struct Refused {
    exit: Exit,
    reason: String,
}

impl Refused {
    fn new(exit: Exit, reason: impl Into<String>) -> Refused {
        Refused {
            exit,
            reason: reason.into(),
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
            .map(|a| verify::log::archive_key(root, a))
            .collect();
        entry = entry.archive(names.join(","));
    }
    let target = match &args.to_collection {
        Some(c) => format!("{}.{c}", args.to_database),
        None => args.to_database.clone(),
    };
    crate::audit::append(root, &entry.target(target));
}

/// Plan, verify, write. `Err` for every way of stopping before the first write.
fn restore(settings: &crate::config::Settings, args: &RestoreArgs) -> Result<Exit, Refused> {
    let root = &settings.backup_root;
    let until = match args
        .until
        .as_deref()
        .map(|s| restore::parse_time(s, settings.timezone))
    {
        None => None,
        Some(Ok(t)) => Some(t),
        Some(Err(e)) => return Err(Refused::new(Exit::Config, format!("--until: {e}"))),
    };
    let keys = crate::crypto::keys_for(args.identity.as_deref(), settings)
        .map(std::sync::Arc::new)
        .map_err(|e| Refused::new(Exit::Config, e.to_string()))?;
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
        let (found, broken) = manifest::scan_all(root);
        // A manifest whose archive is gone is a hole in a chain: restoring around it
        // would exit 0 with data missing.
        let selected = |p: &std::path::Path| {
            let policy = super::verify::policy_of(p).unwrap_or_default();
            args.policies.is_empty() || args.policies.contains(&policy)
        };
        let (holes, elsewhere): (Vec<_>, Vec<_>) = broken
            .iter()
            .filter(|b| selected(&b.manifest_path))
            .partition(|b| restore::may_belong_to(&b.manifest_path, &args.collections));
        for b in &elsewhere {
            eprintln!(
                "warning: {}: {} (not a selected collection; ignored)",
                b.manifest_path.display(),
                b.problem
            );
        }
        if !holes.is_empty() {
            for b in &holes {
                eprintln!("error: {}: {}", b.manifest_path.display(), b.problem);
            }
            return Err(Refused::new(
                Exit::Failed,
                "the selection has archives that cannot be read, so the restore would miss data; nothing was written (restore the others with --archive, or remove those manifests if the loss is accepted)",
            ));
        }
        found
    } else {
        explicit(&args.archives, &keys)?
    };
    let req = Request {
        policies: args.policies.clone(),
        collections: args.collections.clone(),
        until,
        to_database: args.to_database.clone(),
        to_collection: args.to_collection.clone(),
        in_place: args.in_place,
    };
    let (chains, skipped) = restore::plan_with_skipped(&found, &req)
        .map_err(|e| Refused::new(Exit::Config, e.to_string()))?;
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
    let targets: Vec<Target> = chains
        .iter()
        .flat_map(|c| &c.archives)
        .map(|f| Target {
            archive: f.archive_path.clone(),
            beside: Some(f.manifest.clone()),
            early: Vec::new(),
        })
        .collect();
    let reports = check_all(&targets, 0, &keys);
    for r in &reports {
        verify::log::record(root, r);
    }
    let bad: Vec<_> = reports.iter().filter(|r| r.corrupt()).collect();
    let locked: Vec<_> = reports
        .iter()
        .filter_map(|r| Some((r, r.locked()?)))
        .collect();
    for r in &bad {
        eprintln!("error: {} is corrupt:", r.archive.display());
        for p in &r.problems {
            eprintln!("  {p}");
        }
    }
    for (r, key) in &locked {
        eprintln!("error: cannot open {}: {key}", r.archive.display());
    }
    if !bad.is_empty() || !locked.is_empty() {
        let names = |rs: &[&verify::Report]| {
            rs.iter()
                .map(|r| verify::log::archive_key(root, &r.archive))
                .collect::<Vec<_>>()
                .join(", ")
        };
        let unopened: Vec<&verify::Report> = locked.iter().map(|(r, _)| *r).collect();
        // Damage outranks a key problem; a key problem alone is configuration.
        return Err(if bad.is_empty() {
            Refused::new(
                Exit::Config,
                format!(
                    "cannot open {}; nothing was written, the targets are untouched",
                    names(&unopened)
                ),
            )
        } else {
            Refused::new(
                Exit::Failed,
                format!(
                    "corrupt: {}; nothing was written, the targets are untouched",
                    names(&bad)
                ),
            )
        });
    }
    let metadata: HashMap<PathBuf, serde_json::Value> = reports
        .into_iter()
        .filter_map(|r| Some((r.archive, r.metadata?)))
        .collect();

    let rt = runtime();
    let client = rt
        .block_on(crate::mongo::connect(settings, Duration::from_secs(10)))
        .map_err(|e| Refused::new(Exit::Failed, e))?;
    // Some chains need an empty target; look only where one does.
    for chain in &chains {
        let newest = chain.archives.last().map(|f| &f.archive_path);
        let meta = newest.and_then(|p| metadata.get(p));
        let db = client.database(&chain.target_database);
        let existing = rt
            .block_on(async {
                let entry = db
                    .run_command(mongodb::bson::doc! {"listCollections": 1, "filter": {"name": &chain.target_collection}})
                    .await?;
                let first = entry
                    .get_document("cursor")
                    .ok()
                    .and_then(|c| c.get_array("firstBatch").ok())
                    .and_then(|b| b.first())
                    .and_then(mongodb::bson::Bson::as_document)
                    .cloned();
                Ok::<_, mongodb::error::Error>(first)
            })
            .map_err(|e| Refused::new(Exit::Failed, format!("{}: {e}", chain.target())))?;
        let Some(existing) = existing else { continue };
        let target_is_ts =
            restore::is_timeseries(&mongodb::bson::Bson::Document(existing).into_relaxed_extjson());
        let timeseries = target_is_ts || meta.is_some_and(restore::is_timeseries);
        let Some(why) = restore::needs_empty_target(args.drop, until.is_some(), timeseries) else {
            continue;
        };
        // A count limited to one works on time-series collections too (views to some
        // servers, where estimatedDocumentCount does not).
        let coll = db.collection::<mongodb::bson::Document>(&chain.target_collection);
        let n = rt
            .block_on(async { coll.count_documents(mongodb::bson::doc! {}).limit(1).await })
            .map_err(|e| Refused::new(Exit::Failed, format!("{}: {e}", chain.target())))?;
        if n > 0 {
            return Err(Refused::new(Exit::Failed, why.refusal(&chain.target())));
        }
    }
    let mut failed = false;
    for chain in &chains {
        let newest = chain.archives.last().map(|f| &f.archive_path);
        let meta = newest.and_then(|p| metadata.get(p));
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
                    let mut line = format!(
                        "restored {} -> {}: {} documents ({} inserted, {} replaced)",
                        o.source,
                        o.target,
                        count(o.inserted + o.replaced),
                        count(o.inserted),
                        count(o.replaced)
                    );
                    if o.skipped > 0 {
                        let _ = write!(line, ", {} at or after --until left out", count(o.skipped));
                    }
                    match o.indexes {
                        1 => line.push_str(", 1 index"),
                        n => {
                            let _ = write!(line, ", {n} indexes");
                        }
                    }
                    outln!("{line}");
                    for note in &o.notes {
                        outln!("  note: {note}");
                    }
                }
            }
            Err(e) => {
                let e = crate::redact::text(&e, &settings.mongodb_uri);
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

/// Archives named on the command line, with the manifest beside each (or inside it).
fn explicit(paths: &[PathBuf], keys: &crate::crypto::Keys) -> Result<Vec<Found>, Refused> {
    let mut out = Vec::new();
    for path in paths {
        if !path.is_file() {
            return Err(Refused::new(
                Exit::Failed,
                format!("{}: no such archive", path.display()),
            ));
        }
        let beside = verify::manifest_beside(path).map_err(|e| Refused::new(Exit::Failed, e))?;
        let manifest: Manifest = match beside {
            Some(m) => m,
            None => {
                let report = verify::check(path, None, 0, keys);
                if let Some(key) = report.locked() {
                    return Err(Refused::new(
                        Exit::Config,
                        format!("cannot open {}: {key}", path.display()),
                    ));
                }
                match report.manifest {
                    Some(m) => m,
                    None => {
                        return Err(Refused::new(
                            Exit::Failed,
                            format!(
                                "{}: no manifest beside it and none readable inside it",
                                path.display()
                            ),
                        ));
                    }
                }
            }
        };
        out.push(Found {
            manifest,
            manifest_path: Manifest::beside(path),
            archive_path: path.clone(),
        });
    }
    Ok(out)
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
                ", documents before {}",
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
        let _ = writeln!(
            out,
            "  {} ({}) -> {}: {}, {} documents{}",
            c.source(),
            c.policy,
            c.target(),
            plural(c.archives.len(), "archive"),
            count(c.documents()),
            if until.is_some() { " at most" } else { "" }
        );
        if args.dry_run {
            for f in &c.archives {
                let m = &f.manifest;
                let _ = writeln!(
                    out,
                    "    {}  {}  {} documents",
                    verify::log::archive_key(root, &f.archive_path),
                    crate::catalog::window_text(m.mode, m.from, m.to),
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
        ProgressStyle::with_template(
            "{prefix} [{bar:30}] {human_pos}/{human_len} documents ({per_sec}, {eta})",
        )
        .unwrap_or_else(|_| ProgressStyle::default_bar())
        .progress_chars("=> "),
    );
    bar.set_prefix(chain.target());
    Some(bar)
}
