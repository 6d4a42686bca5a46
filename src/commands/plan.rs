//! `dcb plan`: next fire times and what a run now would export.

use std::fmt::Write as _;

use super::{Exit, settings};
use crate::cli::{Cli, PlanArgs};
use crate::plan::{self, PlanView};

pub fn run(cli: &Cli, args: &PlanArgs) -> Exit {
    let settings = match settings(cli) {
        Ok(s) => s,
        Err(e) => return e,
    };
    let plans = match super::load_plans(&settings, &args.only, false) {
        Ok(p) => p,
        Err(e) => return e,
    };
    let state = crate::state::State::load(&settings.backup_root, &settings.target());
    let views = plan::view(
        &plans,
        &state.watermarks(),
        chrono::Utc::now(),
        usize::from(args.runs),
    );
    if args.json {
        outln!(
            "{}",
            serde_json::to_string_pretty(&views).unwrap_or_default()
        );
    } else {
        out!("{}", render(&views));
    }
    Exit::Ok
}

fn render(views: &[PlanView]) -> String {
    let mut out = String::new();
    for v in views {
        let _ = writeln!(
            out,
            "{}{}  ({})",
            v.policy,
            if v.enabled { "" } else { "  [disabled]" },
            v.file
        );
        let _ = writeln!(out, "  schedule     {}  in {}", v.schedule, v.timezone);
        let _ = writeln!(out, "  next runs    {}", v.next_runs.join(", "));
        let _ = writeln!(out, "  database     {}", v.database);
        let _ = writeln!(
            out,
            "  retention    {} (keep at least {} per collection)",
            v.retention, v.keep_last
        );
        let _ = writeln!(
            out,
            "  export       {} at a time, gzip level {}",
            v.concurrency, v.compression_level
        );
        let width = v
            .collections
            .iter()
            .map(|c| c.name.len())
            .max()
            .unwrap_or(10)
            .max(10);
        let fw = v
            .collections
            .iter()
            .map(|c| c.time_field.len())
            .max()
            .unwrap_or(10)
            .max(10);
        let _ = writeln!(
            out,
            "    {:width$}  {:fw$}  {:11}  window of a run now",
            "collection", "time field", "mode"
        );
        for c in &v.collections {
            let window = match (&c.from, &c.to) {
                (_, None) => c.from_source.clone(),
                (from, Some(to)) => format!(
                    "[{}, {})  from {}",
                    from.as_deref().unwrap_or("the beginning"),
                    to,
                    c.from_source
                ),
            };
            let mode = serde_json::to_value(c.mode)
                .ok()
                .and_then(|m| m.as_str().map(str::to_owned))
                .unwrap_or_default();
            let _ = writeln!(
                out,
                "    {:width$}  {:fw$}  {:11}  {}",
                c.name, c.time_field, mode, window
            );
        }
        for p in &v.patterns {
            let _ = writeln!(
                out,
                "    {p:width$}  (pattern: the collections it matches when each run starts)"
            );
        }
        out.push('\n');
    }
    out
}
