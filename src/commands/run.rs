//! `dcb run`: run policies once, now, and print what happened.

use std::fmt::Write as _;
use std::io::IsTerminal as _;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};

use super::{Exit, runtime, settings};
use crate::cli::{Cli, RunArgs};
use crate::export::Progress;
use crate::human::mb;
use crate::plan::JobSpec;
use crate::runner::{self, RunReport};
use crate::window::Extent;

pub fn run(cli: &Cli, args: &RunArgs) -> Exit {
    let settings = match settings(cli) {
        Ok(s) => s,
        Err(e) => {
            crate::logging::init_stderr(cli.verbose, args.quiet);
            return e;
        }
    };
    let _guard = crate::logging::init_with_file(
        cli.verbose,
        args.quiet,
        &crate::storage::logs_dir(&settings.backup_root),
    );
    let plans = match super::load_plans(&settings, &args.policies, args.all) {
        Ok(p) => p,
        Err(e) => return e,
    };
    for p in plans.iter().filter(|p| !p.policy.enabled) {
        tracing::warn!(policy = %p.policy.name, "policy is disabled; running it because it was named");
    }
    let bars = (!args.quiet && std::io::stderr().is_terminal()).then(MultiProgress::new);
    let factory = move |spec: &JobSpec| -> Arc<dyn Progress> {
        match &bars {
            Some(multi) => Arc::new(Bar::new(multi, spec)),
            None => Arc::new(()),
        }
    };
    let report = runtime().block_on(runner::run(&settings, &plans, &factory));
    if !args.quiet || report.failed() > 0 {
        out!("{}", summary(&report, &settings.backup_root));
    }
    if report.failed() > 0 {
        Exit::Failed
    } else {
        Exit::Ok
    }
}

/// A spinner per collection: documents, megabytes, rate.
struct Bar {
    bar: ProgressBar,
    bytes: AtomicU64,
}

impl Bar {
    fn new(multi: &MultiProgress, spec: &JobSpec) -> Bar {
        let bar = multi.add(ProgressBar::with_draw_target(
            None,
            ProgressDrawTarget::stderr(),
        ));
        bar.set_style(
            ProgressStyle::with_template(
                "{spinner} {prefix:40} {human_pos:>10} docs {msg:>10} {per_sec:>14}",
            )
            .unwrap_or_else(|_| ProgressStyle::default_spinner()),
        );
        bar.set_prefix(format!("{}/{}", spec.policy, spec.collection.name));
        bar.enable_steady_tick(std::time::Duration::from_millis(200));
        Bar {
            bar,
            bytes: AtomicU64::new(0),
        }
    }
}

impl Progress for Bar {
    fn advance(&self, documents: u64, bytes: u64) {
        let total = self.bytes.fetch_add(bytes, Ordering::Relaxed) + bytes;
        self.bar.inc(documents);
        self.bar.set_message(mb(total));
    }
}

impl Drop for Bar {
    fn drop(&mut self) {
        self.bar.finish_and_clear();
    }
}

/// One line per collection: what it exported, or why it failed.
fn summary(report: &RunReport, root: &std::path::Path) -> String {
    let mut out = String::new();
    let width = report
        .results
        .iter()
        .map(|r| r.spec.policy.len() + r.spec.collection.name.len() + 1)
        .max()
        .unwrap_or(10);
    for r in &report.results {
        let name = format!("{}/{}", r.spec.policy, r.spec.collection.name);
        match &r.outcome {
            Ok(o) => {
                let what = match (&o.archive, &r.extent) {
                    (Some(a), _) => a.strip_prefix(root).unwrap_or(a).display().to_string(),
                    (None, Some(Extent::Window(_))) => "empty window, nothing to write".into(),
                    (None, _) => String::new(),
                };
                let _ = write!(
                    out,
                    "ok      {name:width$}  {:>9} docs  {:>9}  {:>6.1}s  {what}",
                    o.documents,
                    mb(o.bytes),
                    r.elapsed.as_secs_f64()
                );
                if let Some(n) = o.untimed.filter(|n| *n > 0) {
                    let _ = write!(
                        out,
                        "  ({n} documents have no date in `{}`; no window selects them)",
                        r.spec.collection.time_field
                    );
                }
                out.push('\n');
            }
            Err(e) => {
                let _ = writeln!(out, "FAILED  {name:width$}  {e}");
            }
        }
    }
    let failed = report.failed();
    let _ = writeln!(
        out,
        "{} collection{} exported, {failed} failed",
        report.results.len() - failed,
        if report.results.len() - failed == 1 {
            ""
        } else {
            "s"
        }
    );
    out
}
