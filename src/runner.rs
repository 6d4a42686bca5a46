//! Run compiled policies once, now: lock each policy, compute each collection's
//! window from its watermark, export collections concurrently (bounded per policy),
//! retry transient failures, and record every outcome in the state.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use chrono::{DateTime, DurationRound, TimeDelta, Utc};
use mongodb::Client;
use tokio::sync::Semaphore;

use crate::audit;
use crate::config::Settings;
use crate::export::recover;
use crate::export::{self, ExportError, ExportJob, ExportOutcome, Progress};
use crate::plan::{JobSpec, PolicyPlan};
use crate::state::{CollectionState, State};
use crate::window::{self, Extent};
use crate::{redact, storage};

/// Attempts per collection when the network fails in the middle.
const ATTEMPTS: u32 = 4;
/// How often a ranged window also counts documents no window can select.
const UNTIMED_CHECK_EVERY: TimeDelta = TimeDelta::hours(24);

#[derive(Debug)]
pub struct JobResult {
    pub spec: JobSpec,
    pub extent: Option<Extent>,
    pub outcome: Result<ExportOutcome, String>,
    pub elapsed: Duration,
    pub attempts: u32,
    /// Stopped by a shutdown: not a failure, nothing recorded.
    pub interrupted: bool,
    /// When this run did not count the documents no window can select: the last count
    /// and when it was made.
    pub untimed_known: Option<(u64, DateTime<Utc>)>,
}

#[derive(Debug, Default)]
pub struct RunReport {
    pub results: Vec<JobResult>,
}

impl RunReport {
    pub fn failed(&self) -> usize {
        self.results.iter().filter(|r| r.outcome.is_err()).count()
    }
}

/// Makes a progress reporter for each job as it starts.
pub type ProgressFactory = dyn Fn(&JobSpec) -> Arc<dyn Progress> + Send + Sync;

/// Now, at BSON's millisecond precision, so watermarks compare exactly with dates.
pub fn now_ms() -> DateTime<Utc> {
    let now = Utc::now();
    now.duration_trunc(TimeDelta::milliseconds(1))
        .unwrap_or(now)
}

/// Run every job of `plans` once.
pub async fn run(
    settings: &Settings,
    plans: &[PolicyPlan],
    progress: &ProgressFactory,
) -> RunReport {
    run_cancellable(settings, plans, progress, Arc::new(AtomicBool::new(false))).await
}

/// As [`run`]; setting `cancel` aborts exports cleanly (nothing written, no watermark
/// moved, nothing recorded as a failure).
pub async fn run_cancellable(
    settings: &Settings,
    plans: &[PolicyPlan],
    progress: &ProgressFactory,
    cancel: Arc<AtomicBool>,
) -> RunReport {
    let mut report = RunReport::default();
    // `record`: false when the backup itself is fine (another process is running it).
    let fail_all = |report: &mut RunReport, plans: &[PolicyPlan], msg: &str, record: bool| {
        for plan in plans {
            for spec in &plan.jobs {
                tracing::error!(job = %spec.id(), error = %msg, "run failed before its export started");
                if record {
                    record_failure(settings, spec, msg);
                    audit::append(
                        &settings.backup_root,
                        &audit_entry(spec, false).detail(msg.to_string()),
                    );
                }
                report.results.push(JobResult {
                    spec: spec.clone(),
                    extent: None,
                    outcome: Err(msg.to_string()),
                    elapsed: Duration::ZERO,
                    attempts: 0,
                    interrupted: false,
                    untimed_known: None,
                });
            }
        }
    };
    let client = match crate::mongo::connect(settings, Duration::from_secs(15)).await {
        Ok(c) => c,
        Err(e) => {
            let msg = on_server(format!("cannot connect: {e}"), settings);
            fail_all(&mut report, plans, &msg, true);
            return report;
        }
    };
    let server_version = match export::server_version(&client).await {
        Ok(v) => v,
        Err(e) => {
            let msg = on_server(
                redact::text(&e.to_string(), &settings.mongodb_uri),
                settings,
            );
            fail_all(&mut report, plans, &msg, true);
            return report;
        }
    };

    let mut locks = Vec::new();
    let mut locked = Vec::new();
    for plan in plans {
        let dir = storage::policy_dir(&settings.backup_root, &plan.policy.name);
        let lock_path = dir.join(".dcb.lock");
        match storage::try_lock(&lock_path) {
            Ok(Some(lock)) => {
                locks.push(lock);
                locked.push(plan);
            }
            Ok(None) => {
                let msg = format!(
                    "another dcb is running policy `{}` (lock {}); not started twice",
                    plan.policy.name,
                    lock_path.display()
                );
                fail_all(&mut report, std::slice::from_ref(plan), &msg, false);
                continue;
            }
            Err(e) => {
                let msg = ExportError::from_io(&lock_path, e).to_string();
                fail_all(&mut report, std::slice::from_ref(plan), &msg, true);
                continue;
            }
        }
    }
    // Only with the locks held: a run of the same policy that ended a moment ago has
    // then written its state, so no window starts from a stale watermark.
    let names: Vec<String> = locked.iter().map(|p| p.policy.name.clone()).collect();
    let prepare = {
        let settings = settings.clone();
        move || {
            let mut recovered = Vec::new();
            for name in names {
                let dir = storage::policy_dir(&settings.backup_root, &name);
                for leftover in storage::remove_leftovers(&dir) {
                    tracing::info!(file = %leftover.display(), "removed an unfinished file from an earlier run");
                }
                recovered.extend(recover::orphans(&dir, &settings));
            }
            (recovered, State::load_for_run(&settings.backup_root))
        }
    };
    let (recovered, state) = match tokio::task::spawn_blocking(prepare).await {
        Ok(r) => r,
        Err(e) => {
            let msg = format!("internal error: preparing the run {}", describe_join(e));
            let locked: Vec<PolicyPlan> = locked.into_iter().cloned().collect();
            fail_all(&mut report, &locked, &msg, true);
            return report;
        }
    };
    let now = now_ms();
    let mut tasks = Tasks(Vec::new());
    for plan in locked {
        let limit = Arc::new(Semaphore::new(plan.policy.concurrency.max(1)));
        for spec in &plan.jobs {
            let entry = state.collections.get(&spec.id());
            let extent = window::compute(
                spec.collection.mode,
                &plan.policy.window,
                plan.policy.timezone,
                entry.and_then(|e| e.watermark),
                now,
            );
            let job = ExportJob {
                spec: spec.clone(),
                extent,
                compression_level: plan.policy.compression_level,
                recipients: plan
                    .policy
                    .recipients
                    .clone()
                    .unwrap_or_else(|| settings.config.encryption.recipients.clone()),
                backup_root: settings.backup_root.clone(),
                count_untimed: entry
                    .and_then(|e| e.untimed_checked_at)
                    .is_none_or(|t| now - t >= UNTIMED_CHECK_EVERY),
                server_version: server_version.clone(),
                cancel: cancel.clone(),
            };
            let untimed_known = entry.and_then(|e| Some((e.untimed?, e.untimed_checked_at?)));
            let client = client.clone();
            let limit = limit.clone();
            let settings = settings.clone();
            let progress = progress(spec);
            let handle = tokio::spawn(async move {
                let _permit = limit.acquire_owned().await.expect("semaphore open");
                run_job(&client, &settings, job, progress, untimed_known).await
            });
            tasks.0.push((spec.clone(), extent, handle));
        }
    }
    for (spec, extent, task) in std::mem::take(&mut tasks.0) {
        match task.await {
            Ok(r) => report.results.push(r),
            Err(e) => {
                // A bug, not the backup's fault, but the window was not exported: a
                // failure like any other, so it is counted, alerted and retried.
                let msg = format!("internal error: the export task {}", describe_join(e));
                tracing::error!(job = %spec.id(), error = %msg, "export failed");
                record_failure(settings, &spec, &msg);
                audit::append(
                    &settings.backup_root,
                    &audit_entry(&spec, false).detail(msg.clone()),
                );
                report.results.push(JobResult {
                    spec,
                    extent: Some(extent),
                    outcome: Err(msg),
                    elapsed: Duration::ZERO,
                    attempts: 1,
                    interrupted: false,
                    untimed_known: None,
                });
            }
        }
    }
    drop(locks);
    for path in recovered {
        tracing::info!(archive = %path.display(), "recovered the manifest of an archive an interrupted run left without one");
    }
    report
}

/// The export tasks of a run, aborted if the run itself is dropped (a service that
/// stops waiting), so none outlives it; each removes its temp file as it ends.
struct Tasks(Vec<(JobSpec, Extent, tokio::task::JoinHandle<JobResult>)>);

impl Drop for Tasks {
    fn drop(&mut self) {
        for (_, _, handle) in &self.0 {
            handle.abort();
        }
    }
}

/// State and audit writes fsync: keep them off the async workers, which other
/// collections' cursors need meanwhile.
async fn off_workers(f: impl FnOnce() + Send + 'static) {
    if let Err(e) = tokio::task::spawn_blocking(f).await {
        tracing::error!(error = %describe_join(e), "recording a result failed");
    }
}

fn describe_join(e: tokio::task::JoinError) -> String {
    if e.is_cancelled() {
        return "was cancelled".into();
    }
    let panic = e.into_panic();
    let why = panic
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "no message".into());
    format!("panicked: {why}")
}

async fn run_job(
    client: &Client,
    settings: &Settings,
    job: ExportJob,
    progress: Arc<dyn Progress>,
    untimed_known: Option<(u64, DateTime<Utc>)>,
) -> JobResult {
    let started = Instant::now();
    let id = job.spec.id();
    match job.extent {
        Extent::Window(w) => {
            tracing::info!(job = %id, from = ?w.from, to = %w.to, "export started")
        }
        Extent::Snapshot => tracing::info!(job = %id, "snapshot export started"),
    }
    let mut attempts = 0;
    let outcome = loop {
        if job.cancel.load(Ordering::Relaxed) {
            break Err(ExportError::Interrupted);
        }
        attempts += 1;
        // Dropping the export at any await point removes its temp file and moves
        // nothing (it commits only after its last await).
        let attempt = tokio::select! {
            r = export::export(client, &job, progress.as_ref()) => r,
            () = export::cancelled(&job.cancel) => Err(ExportError::Interrupted),
        };
        match attempt {
            Err(e) if e.is_transient() && attempts < ATTEMPTS => {
                let pause = Duration::from_secs(1 << (attempts - 1));
                let error = redact::text(&e.to_string(), &settings.mongodb_uri);
                tracing::warn!(job = %id, %error, attempt = attempts, "transient failure; retrying in {pause:?}");
                tokio::select! {
                    () = tokio::time::sleep(pause) => {}
                    () = export::cancelled(&job.cancel) => {}
                }
            }
            other => break other,
        }
    };
    let interrupted = matches!(outcome, Err(ExportError::Interrupted));
    let outcome = outcome.map_err(|e| {
        let text = redact::text(&e.to_string(), &settings.mongodb_uri);
        match e {
            ExportError::Unreachable(_) | ExportError::AuthFailed(_) => on_server(text, settings),
            _ => text,
        }
    });
    match &outcome {
        // A shutdown is nobody's failure: the window is simply exported next time.
        Err(_) if interrupted => {
            tracing::warn!(job = %id, "export interrupted by shutdown; nothing recorded")
        }
        Ok(o) => {
            {
                let (settings, job, o) = (settings.clone(), job.clone(), o.clone());
                off_workers(move || {
                    record_success(&settings, &job, &o);
                    let mut entry = audit_entry(&job.spec, true)
                        .detail(format!("{} documents, {} bytes", o.documents, o.bytes));
                    if let Some(a) = &o.archive {
                        entry = entry
                            .archive(crate::verify::log::archive_key(&settings.backup_root, a));
                    }
                    audit::append(&settings.backup_root, &entry);
                })
                .await;
            }
            tracing::info!(
                job = %id,
                documents = o.documents,
                bytes = o.bytes,
                archive = %o.archive.as_deref().map_or("none (no documents)".into(), |a| a.display().to_string()),
                "export succeeded"
            );
            if let Some(n) = o.untimed.filter(|n| *n > 0) {
                tracing::warn!(job = %id, documents = n, time_field = %job.spec.collection.time_field,
                    "documents without a valid date in the time field are not in any window");
            } else if let Some((n, at)) =
                untimed_known.filter(|(n, _)| o.untimed.is_none() && *n > 0)
            {
                tracing::warn!(job = %id, documents = n, counted_at = %at, time_field = %job.spec.collection.time_field,
                    "documents without a valid date in the time field were not in any window at the last count");
            }
        }
        Err(e) => {
            let (settings, spec, e) = (settings.clone(), job.spec.clone(), e.clone());
            off_workers(move || {
                record_failure(&settings, &spec, &e);
                audit::append(
                    &settings.backup_root,
                    &audit_entry(&spec, false).detail(e.clone()),
                );
                tracing::error!(job = %spec.id(), error = %e, "export failed");
            })
            .await;
        }
    }
    let counted = matches!(&outcome, Ok(o) if o.untimed.is_some());
    JobResult {
        spec: job.spec,
        extent: Some(job.extent),
        outcome,
        elapsed: started.elapsed(),
        attempts,
        interrupted,
        untimed_known: if counted { None } else { untimed_known },
    }
}

/// A failure to reach or log in to the server names it, by its URI with the password
/// masked (`mongodb://user:***@host/…`), so the operator sees which server failed.
fn on_server(message: String, settings: &Settings) -> String {
    format!("{message} (server {})", redact::uri(&settings.mongodb_uri))
}

fn base(entry: &mut CollectionState, spec: &JobSpec) {
    entry.policy = spec.policy.clone();
    entry.database = spec.database.clone();
    entry.collection = spec.collection.name.clone();
    entry.runs += 1;
}

fn record_success(settings: &Settings, job: &ExportJob, o: &ExportOutcome) {
    let now = Utc::now();
    let result = State::update(&settings.backup_root, &job.spec.id(), |e| {
        base(e, &job.spec);
        if let Extent::Window(w) = job.extent {
            // Never move a watermark backwards (an overlap re-read ends where it ended).
            e.watermark = Some(e.watermark.map_or(w.to, |old| old.max(w.to)));
        }
        e.last_success = Some(now);
        e.consecutive_failures = 0;
        e.successes += 1;
        e.last_documents = o.documents;
        e.last_bytes = o.bytes;
        if let Some(a) = &o.archive {
            e.last_archive = a.file_name().map(|n| n.to_string_lossy().into_owned());
        }
        if o.untimed.is_some() {
            e.untimed = o.untimed;
            e.untimed_checked_at = Some(now);
        }
    });
    if let Err(e) = result {
        tracing::error!(error = %e, "cannot write state.json (the archive is safe; its manifest rebuilds the state)");
    }
}

fn record_failure(settings: &Settings, spec: &JobSpec, error: &str) {
    let result = State::update(&settings.backup_root, &spec.id(), |e| {
        base(e, spec);
        e.last_failure = Some(Utc::now());
        e.last_error = Some(error.to_string());
        e.consecutive_failures += 1;
        e.failures += 1;
    });
    if let Err(e) = result {
        tracing::error!(error = %e, "cannot write state.json");
    }
}

fn audit_entry(spec: &JobSpec, ok: bool) -> audit::Entry {
    audit::Entry::new(audit::Operation::Run, ok)
        .policy(spec.policy.clone())
        .source(format!("{}.{}", spec.database, spec.collection.name))
}
