//! `dcb verify`: check archives against their manifests; exit 1 on any corruption.

use std::fmt::Write as _;
use std::time::Duration;

use serde::Serialize;

use super::{Exit, runtime, settings};
use crate::catalog;
use crate::cli::{Cli, VerifyArgs};
use crate::human::{count, plural};
use crate::unpack::Problem;
use crate::verify::sample::SampleCheck;
use crate::verify::{self, Check, Checked, log};

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct Line {
    archive: String,
    ok: bool,
    checked: Checked,
    documents: u64,
    problems: Vec<Problem>,
    /// The keys could not open the archive (a configuration problem, not damage).
    #[serde(skip_serializing_if = "Option::is_none")]
    key_error: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    sample: Option<SampleCheck>,
    #[serde(skip_serializing_if = "Option::is_none")]
    sample_error: Option<String>,
}

pub fn run(cli: &Cli, args: &VerifyArgs) -> Exit {
    let settings = match settings(cli) {
        Ok(s) => s,
        Err(e) => return e,
    };
    let root = &settings.backup_root;
    // A prune waits for this verify (and it for a prune in progress), so no archive
    // goes between the scan and the read.
    let _readers = if args.archives.is_empty() {
        crate::storage::lock_readers(root, &args.policies)
    } else {
        crate::storage::lock_readers_of(root, &args.archives)
    };
    let mut checks = Vec::new();
    let mut orphans = Vec::new();
    // Chains broken by a missing or foreign link: (policy, db.collection, reason).
    let mut broken_chains: Vec<(String, String, String)> = Vec::new();
    if args.archives.is_empty() {
        let target = match super::read_target(&settings, args.target.as_deref()) {
            Ok(t) => t,
            Err(e) => return e,
        };
        let (found, broken) = catalog::scan_all(&target);
        let selected = |p: &str| args.policies.is_empty() || args.policies.iter().any(|n| n == p);
        for ((policy, db, coll), c) in crate::listing::coverage(&found) {
            for g in c.gaps.iter().filter(|g| g.damaged && selected(&policy)) {
                broken_chains.push((policy.clone(), format!("{db}.{coll}"), g.reason.clone()));
            }
        }
        checks.extend(
            found
                .iter()
                .filter(|f| selected(&f.manifest.policy))
                .map(Check::found),
        );
        orphans.extend(broken.into_iter().filter(|b| selected(b.policy())));
        if checks.is_empty() && orphans.is_empty() {
            for name in &args.policies {
                if !settings.policies_dir.join(format!("{name}.yaml")).is_file() {
                    eprintln!("error: no archives and no policy named `{name}`");
                    return Exit::Config;
                }
            }
            outln!("no archives to verify under {}", root.display());
            return Exit::Ok;
        }
    } else {
        checks.extend(args.archives.iter().map(|a| Check::file(a)));
    }

    let keys = match settings.keys(args.identity.as_deref()) {
        Ok(k) => k,
        Err(e) => {
            eprintln!("error: {e}");
            return Exit::Config;
        }
    };
    let mut reports = verify::check_all(&checks, args.sample, &keys);
    let mut lines = Vec::new();
    let mut client = None;
    let mut connect_error = None;
    if args.sample > 0 && reports.iter().any(|r| r.ok() && !r.sample.is_empty()) {
        let rt = runtime();
        match rt.block_on(crate::mongo::connect(&settings, Duration::from_secs(10))) {
            Ok(c) => client = Some((rt, c)),
            Err(e) => connect_error = Some(e.to_string()),
        }
    }
    for r in &mut reports {
        let key = r.archive.name(root);
        let (mut sample, mut sample_error) = (None, None);
        if let (Some((rt, c)), Some(m)) = (&client, &r.manifest)
            && r.ok()
            && !r.sample.is_empty()
        {
            match rt.block_on(verify::sample::compare(
                c,
                &m.database,
                &m.collection,
                &r.sample,
            )) {
                Ok(s) => sample = Some(s),
                Err(e) => {
                    sample_error = Some(crate::redact::text(&e.to_string(), &settings.mongodb_uri))
                }
            }
        } else if r.ok() && args.sample > 0 {
            sample_error = connect_error.clone();
        }
        log::record(root, r);
        lines.push(Line {
            archive: key,
            ok: r.ok(),
            checked: r.checked,
            documents: r.documents,
            key_error: r.locked().map(ToString::to_string),
            problems: std::mem::take(&mut r.problems),
            sample,
            sample_error,
        });
    }

    // A broken manifest is a failed verification of what it describes.
    for b in &orphans {
        let mut entry = crate::audit::Entry::new(crate::audit::Operation::Verify, false)
            .archive(b.manifest_key.clone())
            .detail(b.problem.clone());
        if !b.policy().is_empty() {
            entry = entry.policy(b.policy());
        }
        crate::audit::append(root, &entry);
    }
    for (policy, coll, reason) in &broken_chains {
        let entry = crate::audit::Entry::new(crate::audit::Operation::Verify, false)
            .policy(policy.clone())
            .source(coll.clone())
            .detail(format!("broken chain: {reason}"));
        crate::audit::append(root, &entry);
    }
    let locked = lines.iter().filter(|l| l.key_error.is_some()).count();
    let corrupt = lines
        .iter()
        .filter(|l| !l.ok && l.key_error.is_none())
        .count()
        + orphans.len();
    let sample_failed = lines.iter().any(|l| l.sample_error.is_some());
    if args.json {
        let broken: Vec<_> = orphans
            .iter()
            .map(|b| {
                serde_json::json!({
                    "manifest": b.manifest_key,
                    "problem": b.problem,
                })
            })
            .collect();
        let chains: Vec<_> = broken_chains
            .iter()
            .map(|(p, c, r)| serde_json::json!({"policy": p, "collection": c, "problem": r}))
            .collect();
        let v = serde_json::json!({
            "archives": lines,
            "brokenManifests": broken,
            "brokenChains": chains,
            "ok": corrupt == 0 && locked == 0 && !sample_failed && broken_chains.is_empty(),
        });
        outln!("{}", serde_json::to_string_pretty(&v).unwrap_or_default());
    } else {
        let mut out = String::new();
        let mut sampled = (0, 0, 0, 0);
        for l in &lines {
            if l.ok && !args.quiet {
                let _ = writeln!(
                    out,
                    "ok       {}  ({} documents)",
                    l.archive,
                    count(l.documents)
                );
            } else if let Some(why) = &l.key_error {
                let _ = writeln!(out, "NO KEY   {}", l.archive);
                let _ = writeln!(out, "         {why}");
            } else if !l.ok {
                let _ = writeln!(out, "CORRUPT  {}", l.archive);
                for p in &l.problems {
                    let _ = writeln!(out, "         {p}");
                }
            }
            // Under --quiet an ok archive has no line of its own: its sample is shown,
            // named, only when it found something.
            let shown = !(l.ok && args.quiet);
            let lead = if shown {
                "         ".to_string()
            } else {
                format!("sample   {}: ", l.archive)
            };
            if let Some(s) = &l.sample {
                sampled.0 += s.checked;
                sampled.1 += s.unchanged;
                sampled.2 += s.changed;
                sampled.3 += s.deleted;
                if shown || s.changed + s.deleted > 0 {
                    let _ = writeln!(
                        out,
                        "{lead}sample of {}: {} unchanged, {} changed since the backup, {} deleted since{}",
                        s.checked,
                        s.unchanged,
                        s.changed,
                        s.deleted,
                        if s.without_id > 0 {
                            format!(", {} without _id", s.without_id)
                        } else {
                            String::new()
                        }
                    );
                }
            }
            if let Some(e) = &l.sample_error {
                let _ = writeln!(out, "{lead}sample not checked: {e}");
            }
        }
        for b in &orphans {
            let _ = writeln!(out, "CORRUPT  {}: {}", b.manifest_key, b.problem);
        }
        for (policy, coll, reason) in &broken_chains {
            let _ = writeln!(out, "BROKEN   chain of {coll} ({policy}): {reason}");
        }
        let _ = write!(
            out,
            "{} checked: {} ok, {} corrupt",
            plural(lines.len() + orphans.len(), "archive"),
            lines.len() + orphans.len() - corrupt - locked,
            corrupt
        );
        if locked > 0 {
            let _ = write!(out, ", {locked} not opened (identity)");
        }
        out.push('\n');
        if args.sample > 0 {
            let _ = writeln!(
                out,
                "{} sampled against the database: {} unchanged, {} changed since the backup, {} deleted since",
                plural(sampled.0, "document"),
                count(sampled.1 as u64),
                count(sampled.2 as u64),
                count(sampled.3 as u64)
            );
        }
        out!("{out}");
    }
    // Damage outranks a key problem: it needs attention whatever the keys.
    if corrupt > 0 || sample_failed || !broken_chains.is_empty() {
        Exit::Failed
    } else if locked > 0 {
        Exit::Config
    } else {
        Exit::Ok
    }
}
