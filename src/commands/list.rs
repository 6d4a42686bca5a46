//! `dcb list`: the archives on disk.

use std::fmt::Write as _;

use super::{Exit, settings};
use crate::catalog;
use crate::cli::{Cli, ListArgs};
use crate::human::{count, plural, size};
use crate::listing::{self, Entry};
use crate::verify::Checked;

pub fn run(cli: &Cli, args: &ListArgs) -> Exit {
    let settings = match settings(cli) {
        Ok(s) => s,
        Err(e) => return e,
    };
    let target = match super::read_target(&settings, args.target.as_deref()) {
        Ok(t) => t,
        Err(e) => return e,
    };
    let (found, broken) = catalog::scan_all(&target);
    let reach = listing::coverage(&found);
    let entries = listing::entries(
        &settings.backup_root,
        found,
        &args.policies,
        &args.collections,
    );
    for b in &broken {
        eprintln!(
            "warning: {}: {} (not listed; `dcb verify` reports it)",
            settings.backup_root.join(&b.manifest_key).display(),
            b.problem
        );
    }
    if args.json {
        outln!(
            "{}",
            serde_json::to_string_pretty(&entries).unwrap_or_default()
        );
    } else {
        out!("{}", render(&entries));
        out!(
            "{}",
            render_coverage(&reach, &args.policies, &args.collections)
        );
    }
    Exit::Ok
}

/// For the collections whose policy sets `full`: how far back each restores exactly,
/// and every gap.
fn render_coverage(
    coverage: &[((String, String, String), crate::chain::Coverage)],
    policies: &[String],
    collections: &[String],
) -> String {
    let t = |d: chrono::DateTime<chrono::Utc>| d.format("%Y-%m-%d %H:%M").to_string();
    let mut out = String::new();
    for ((policy, db, coll), c) in coverage {
        if (!policies.is_empty() && !policies.contains(policy))
            || (!collections.is_empty() && !collections.contains(coll))
        {
            continue;
        }
        if out.is_empty() {
            out.push_str("\nrestorable as it was (UTC):\n");
        }
        if let (Some(a), Some(b)) = (c.from, c.to) {
            let _ = writeln!(out, "  {db}.{coll} ({policy}): {} .. {}", t(a), t(b));
        }
        for g in &c.gaps {
            let until = g.to.map_or_else(|| "now".to_string(), t);
            let _ = writeln!(out, "    gap {} .. {until}: {}", t(g.from), g.reason);
        }
    }
    out
}

/// A table, one archive per line; times in UTC.
pub fn render(entries: &[Entry]) -> String {
    let mut out = String::new();
    if entries.is_empty() {
        out.push_str("no archives\n");
        return out;
    }
    let rows: Vec<[String; 6]> = entries
        .iter()
        .map(|e| {
            [
                e.archive.clone(),
                format!("{}.{}", e.database, e.collection),
                listing::window_text(e.kind, e.mode, e.from, e.to),
                count(e.documents),
                size(e.size),
                match &e.verified {
                    None => "-".into(),
                    Some(v) if v.ok && v.checked == Checked::Hash => {
                        format!("hash ok {}", v.at.format("%Y-%m-%d %H:%M"))
                    }
                    Some(v) if v.ok => format!("ok {}", v.at.format("%Y-%m-%d %H:%M")),
                    Some(v) => format!("FAILED {}", v.at.format("%Y-%m-%d %H:%M")),
                },
            ]
        })
        .collect();
    let header = [
        "ARCHIVE",
        "COLLECTION",
        "WINDOW (UTC)",
        "DOCUMENTS",
        "SIZE",
        "VERIFIED",
    ];
    let mut width = header.map(str::len);
    for r in &rows {
        for (w, c) in width.iter_mut().zip(r) {
            *w = (*w).max(c.chars().count());
        }
    }
    let line = |out: &mut String, cells: [&str; 6]| {
        let _ = writeln!(
            out,
            "{:<w0$}  {:<w1$}  {:<w2$}  {:>w3$}  {:>w4$}  {}",
            cells[0],
            cells[1],
            cells[2],
            cells[3],
            cells[4],
            cells[5],
            w0 = width[0],
            w1 = width[1],
            w2 = width[2],
            w3 = width[3],
            w4 = width[4],
        );
    };
    line(&mut out, header);
    for r in &rows {
        line(&mut out, r.each_ref().map(String::as_str));
    }
    let docs: u64 = entries.iter().map(|e| e.documents).sum();
    let total: u64 = entries.iter().map(|e| e.size).sum();
    let _ = writeln!(
        out,
        "{}, {} documents, {}",
        plural(entries.len(), "archive"),
        count(docs),
        size(total)
    );
    let hash_only = entries
        .iter()
        .filter(|e| {
            e.verified
                .as_ref()
                .is_some_and(|v| v.ok && v.checked == Checked::Hash)
        })
        .count();
    if hash_only > 0 {
        let _ = writeln!(
            out,
            "hash ok: only the file's SHA-256 was checked ({}); `dcb verify --identity FILE` reads the contents",
            plural(hash_only, "archive")
        );
    }
    out
}
