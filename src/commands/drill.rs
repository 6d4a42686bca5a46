//! `dcb drill`: run restore drills now, record them, show how they went.

use std::fmt::Write as _;
use std::time::Duration;

use super::{Exit, runtime, settings};
use crate::cli::{Cli, DrillArgs};
use crate::drill::{self, Report};
use crate::events::{Emitter, Event};
use crate::human::count;

pub fn run(cli: &Cli, args: &DrillArgs) -> Exit {
    let settings = match settings(cli) {
        Ok(s) => s,
        Err(e) => return e,
    };
    let all =
        match super::load_policies(&settings, &args.policies, "run `dcb validate` for details") {
            Ok(p) => p,
            Err(e) => return e,
        };
    let named = |p: &crate::policy::Policy| args.policies.contains(&p.name);
    let policies: Vec<_> = all
        .into_iter()
        .filter(|p| {
            if args.policies.is_empty() {
                p.enabled && drill::effective(&settings, p).enabled
            } else {
                named(p)
            }
        })
        .collect();
    if policies.is_empty() {
        eprintln!("error: no policy to drill");
        return Exit::Config;
    }
    let keys = match settings.keys(args.identity.as_deref()) {
        Ok(k) => std::sync::Arc::new(k),
        Err(e) => {
            eprintln!("error: {e}");
            return Exit::Config;
        }
    };
    let rt = runtime();
    let client = match rt.block_on(crate::mongo::connect(&settings, Duration::from_secs(10))) {
        Ok(c) => c,
        Err(e) => {
            eprintln!(
                "error: {}",
                crate::redact::text(&e.to_string(), &settings.mongodb_uri)
            );
            return Exit::Failed;
        }
    };
    let events = Emitter::new(&settings);
    let mut reports = Vec::new();
    for policy in &policies {
        let report = rt.block_on(async {
            let r = drill::run(&settings, policy, &client, keys.clone(), chrono::Utc::now()).await;
            events.emit(Event::Drilled(&r)).await;
            r
        });
        if !args.json {
            out!("{}", render(&report));
        }
        reports.push(report);
    }
    rt.block_on(crate::mongo::close(client));
    if args.json {
        outln!(
            "{}",
            serde_json::to_string_pretty(&reports).unwrap_or_default()
        );
    }
    if reports.iter().all(|r| r.ok) {
        Exit::Ok
    } else {
        Exit::Failed
    }
}

fn render(r: &Report) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "drill {}: {} ({} collections restored into {}, {:.1} s)",
        r.policy,
        if r.ok { "passed" } else { "FAILED" },
        r.collections.len(),
        r.database,
        r.elapsed_ms as f64 / 1000.0
    );
    for c in &r.collections {
        let _ = writeln!(
            out,
            "  {} {}.{}: {} documents{}",
            if c.ok { "ok  " } else { "FAIL" },
            c.database,
            c.collection,
            count(c.documents),
            c.problem
                .as_ref()
                .map(|p| format!(": {p}"))
                .unwrap_or_default()
        );
    }
    for (source, s) in &r.samples {
        let _ = writeln!(
            out,
            "  sample of {source} against the live database: {} checked, {} unchanged, {} changed since, {} deleted since",
            s.checked, s.unchanged, s.changed, s.deleted
        );
    }
    // The report lists the drill's own problems first, then one per failed collection
    // (shown above).
    let failed = r.collections.iter().filter(|c| !c.ok).count();
    let own = r.problems.len().saturating_sub(failed);
    for p in &r.problems[..own] {
        let _ = writeln!(out, "  problem: {p}");
    }
    out
}
