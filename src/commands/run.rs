//! `dcb run`: run policies once, now, and print what happened.

use std::fmt::Write as _;
use std::io::IsTerminal as _;
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};

use super::{Exit, runtime, settings};
use crate::cli::{Cli, RunArgs};
use crate::export::Progress;
use crate::export::manifest::History;
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
    if let Some(multi) = &bars {
        crate::logging::draw_above(multi);
    }
    let quiet = args.quiet;
    let factory = move |spec: &JobSpec| -> Arc<dyn Progress> {
        match &bars {
            Some(multi) => Arc::new(Bar::new(multi, spec)),
            None if quiet => Arc::new(()),
            None => Arc::new(LogLines::new(spec)),
        }
    };
    let mut events = crate::events::Emitter::new(&settings);
    // With no service beside it (a CronJob), a run raises its own alerts: the same
    // messages, the same cool-down state as the service's.
    let alerter = run_alerter(&settings);
    if let Some(a) = &alerter {
        let a = a.clone();
        events = events.with_alerts(Arc::new(move || a.clone()));
    }
    let report = runtime().block_on(async {
        let report = runner::run(&settings, &plans, &factory, &events).await;
        if let Some(a) = &alerter {
            let _ = tokio::time::timeout(ALERT_FLUSH, a.flush()).await;
        }
        report
    });
    if !args.quiet || report.failed() > 0 {
        out!(
            "{}",
            summary(&report, &settings.backup_root, &settings.mongodb_uri)
        );
    }
    if report.failed() > 0 {
        Exit::Failed
    } else {
        Exit::Ok
    }
}

/// How long a run waits for its alerts to be delivered before it exits.
const ALERT_FLUSH: std::time::Duration = std::time::Duration::from_secs(30);

/// An alerter when notifiers are configured.
fn run_alerter(settings: &crate::config::Settings) -> Option<Arc<crate::alert::Alerter>> {
    if settings.alerts.notifiers.is_empty() {
        return None;
    }
    let log = crate::storage::logs_dir(&settings.backup_root).join("alerts.log");
    match crate::alert::Alerter::new(&settings.alerts, log) {
        Ok(a) => Some(Arc::new(a)),
        Err(e) => {
            tracing::error!(error = %e, "alerts are not sent: the notifiers are invalid");
            None
        }
    }
}

/// A bar per collection (a spinner when the total is unknown): documents,
/// megabytes, rate.
struct Bar {
    bar: ProgressBar,
    bytes: AtomicU64,
}

const SPINNER: &str = "{spinner} {prefix:40} {human_pos:>10} docs {msg:>10} {rate:>12}";
const BAR: &str =
    "{spinner} {prefix:40} {bar:20} {human_pos:>10}/{human_len} docs {msg:>10} {rate:>12} {eta}";

impl Bar {
    fn new(multi: &MultiProgress, spec: &JobSpec) -> Bar {
        let bar = multi.add(ProgressBar::with_draw_target(
            None,
            ProgressDrawTarget::stderr(),
        ));
        bar.set_style(
            super::progress_style(SPINNER).unwrap_or_else(ProgressStyle::default_spinner),
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
    fn start(&self, total: Option<u64>) {
        self.bytes.store(0, Ordering::Relaxed);
        self.bar.reset();
        self.bar.set_message(mb(0));
        if let Some(total) = total {
            self.bar.set_length(total);
            if let Some(style) = super::progress_style(BAR) {
                self.bar.set_style(style);
            }
        }
    }

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

/// Without a terminal: a log line per collection every [`LogLines::EVERY`].
struct LogLines {
    job: String,
    started: Mutex<Instant>,
    last: Mutex<Instant>,
    documents: AtomicU64,
    bytes: AtomicU64,
    total: Mutex<Option<u64>>,
}

impl LogLines {
    const EVERY: Duration = Duration::from_secs(30);

    fn new(spec: &JobSpec) -> LogLines {
        LogLines {
            job: spec.id(),
            started: Mutex::new(Instant::now()),
            last: Mutex::new(Instant::now()),
            documents: AtomicU64::new(0),
            bytes: AtomicU64::new(0),
            total: Mutex::new(None),
        }
    }
}

impl Progress for LogLines {
    fn start(&self, total: Option<u64>) {
        self.documents.store(0, Ordering::Relaxed);
        self.bytes.store(0, Ordering::Relaxed);
        if let Ok(mut t) = self.total.lock() {
            *t = total;
        }
        if let Ok(mut s) = self.started.lock() {
            *s = Instant::now();
        }
    }

    fn advance(&self, documents: u64, bytes: u64) {
        let docs = self.documents.fetch_add(documents, Ordering::Relaxed) + documents;
        let bytes = self.bytes.fetch_add(bytes, Ordering::Relaxed) + bytes;
        let Ok(mut last) = self.last.lock() else {
            return;
        };
        if last.elapsed() < Self::EVERY {
            return;
        }
        *last = Instant::now();
        let secs = self
            .started
            .lock()
            .map(|s| s.elapsed().as_secs_f64())
            .unwrap_or(0.0)
            .max(0.001);
        let total = self.total.lock().ok().and_then(|t| *t);
        tracing::info!(
            job = %self.job,
            documents = docs,
            of = total.map_or_else(|| "?".into(), |t| t.to_string()),
            mb = format!("{:.1}", bytes as f64 / 1e6),
            docs_per_s = format!("{:.0}", docs as f64 / secs),
            "export in progress"
        );
    }
}

/// One line per collection: what it exported, or why it failed.
fn summary(report: &RunReport, root: &std::path::Path, uri: &str) -> String {
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
                    (Some(a), _) => a.name(root),
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
                } else if let Some((n, at)) = r.untimed_known.filter(|(n, _)| *n > 0) {
                    let _ = write!(
                        out,
                        "  ({n} documents had no date in `{}` at the last count, {}; no window selects them)",
                        r.spec.collection.time_field,
                        at.format("%Y-%m-%d %H:%M UTC")
                    );
                }
                let history = o.manifest.as_ref().and_then(|m| m.changes.as_ref());
                if let Some(History::Unavailable(why) | History::Lost(why)) =
                    history.map(|c| &c.history)
                {
                    let _ = write!(
                        out,
                        "  (deletions not recorded: {why}; the next run is a full)"
                    );
                }
                for m in &o.missing_copies {
                    let _ = write!(
                        out,
                        "  (no copy in target `{}`: {}; the next run copies it there)",
                        m.target, m.error
                    );
                }
                out.push('\n');
            }
            Err(e) => {
                let e = crate::redact::text(&e.to_string(), uri);
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
