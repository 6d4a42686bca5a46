//! Run compiled policies once, now: lock each policy, compute each collection's
//! window from its watermark, export collections concurrently (bounded per policy),
//! retry transient failures, and emit every outcome (`events`), which records it in
//! the state, the audit log and wherever else the emitter reaches.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use chrono::{DateTime, DurationRound, TimeDelta, Utc};
use mongodb::Client;
use tokio::sync::Semaphore;

mod error;
mod hold;
mod prepare;
pub mod recover;

pub use error::RunError;

use crate::chain::{self, NextRun};
use crate::config::Settings;
use crate::events::{Emitter, Event};
use crate::export::{self, ChainJob, ExportError, ExportJob, ExportOutcome, Progress};
use crate::plan::{JobSpec, PolicyPlan};
use crate::state::State;
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
    pub outcome: Result<ExportOutcome, RunError>,
    pub elapsed: Duration,
    pub attempts: u32,
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

impl JobResult {
    fn before_export(spec: &JobSpec, error: RunError) -> JobResult {
        JobResult {
            spec: spec.clone(),
            extent: None,
            outcome: Err(error),
            elapsed: Duration::ZERO,
            attempts: 0,
            untimed_known: None,
        }
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

/// Run every job of `plans` once, emitting each outcome to `events`.
pub async fn run(
    settings: &Settings,
    plans: &[PolicyPlan],
    progress: &ProgressFactory,
    events: &Emitter,
) -> RunReport {
    run_cancellable(
        settings,
        plans,
        progress,
        events,
        Arc::new(AtomicBool::new(false)),
    )
    .await
}

/// As [`run`]; setting `cancel` aborts exports cleanly (nothing written, no watermark
/// moved, nothing recorded as a failure).
pub async fn run_cancellable(
    settings: &Settings,
    plans: &[PolicyPlan],
    progress: &ProgressFactory,
    events: &Emitter,
    cancel: Arc<AtomicBool>,
) -> RunReport {
    let mut report = RunReport::default();
    let client = match crate::mongo::connect(settings, Duration::from_secs(15)).await {
        Ok(c) => c,
        Err(error) => {
            let server = redact::uri(&settings.mongodb_uri);
            return fail_all(plans, RunError::Connect { error, server }, events).await;
        }
    };
    let server_version = match export::server_version(&client).await {
        Ok(v) => v,
        Err(e) => {
            let error = RunError::Server {
                error: e,
                server: redact::uri(&settings.mongodb_uri),
            };
            crate::mongo::close(client).await;
            return fail_all(plans, error, events).await;
        }
    };
    let matched = match_patterns(&client, settings, plans, events, &mut report).await;
    let mut locks = Vec::new();
    let mut locked: Vec<(&PolicyPlan, Option<hold::Held>)> = Vec::new();
    for plan in &matched {
        let dir = storage::policy_dir(&settings.backup_root, &plan.policy.name);
        let lock_path = dir.join(".dcb.lock");
        let refused = match storage::try_lock(&lock_path) {
            // The lease after the file lock: a second process here waits on neither.
            Ok(Some(lock)) if settings.uses_lease(&plan.policy) => {
                match hold::take(&client, settings, &plan.policy.name).await {
                    Ok(held) => {
                        locks.push(lock);
                        locked.push((plan, Some(held)));
                        continue;
                    }
                    Err(refused) => refused,
                }
            }
            Ok(Some(lock)) => {
                locks.push(lock);
                locked.push((plan, None));
                continue;
            }
            Ok(None) => RunError::Locked {
                policy: plan.policy.name.clone(),
                lock: lock_path,
            },
            Err(e) => RunError::Export(ExportError::from_io(&lock_path, e)),
        };
        for spec in &plan.jobs {
            report
                .results
                .push(refuse(spec, refused.clone(), events).await);
        }
    }
    // Only with the locks held: a run of the same policy that ended a moment ago has
    // then written its state and committed its archives, so no window starts from a
    // stale watermark.
    let policies: Vec<(String, bool)> = locked
        .iter()
        .map(|(p, held)| {
            // A shared target must be readable unless nobody else wrote since.
            let strict = held.as_ref().is_some_and(|h| !h.current);
            (p.policy.name.clone(), strict)
        })
        .collect();
    let members: Vec<Vec<(String, Arc<dyn storage::Target>)>> = locked
        .iter()
        .map(|(p, _)| settings.target_members_for(&p.policy))
        .collect();
    let prepare = {
        let settings = settings.clone();
        move || {
            let target = settings.target();
            let mut recovered = Vec::new();
            let mut refused = std::collections::BTreeMap::new();
            for ((name, strict), members) in policies.into_iter().zip(members) {
                if let Err(why) = prepare::targets(&name, &members, strict) {
                    refused.insert(name, why);
                    continue;
                }
                let identity = settings.identity_file.as_deref();
                recovered.extend(
                    recover::orphans(&target, &name, identity)
                        .into_iter()
                        .map(|key| recover::shown(&target, &key)),
                );
            }
            let found = crate::catalog::scan(&target);
            let state = State::load_for_run(&settings.backup_root, &target, &found);
            (recovered, state, found, refused)
        }
    };
    let (recovered, state, found, refused) = match tokio::task::spawn_blocking(prepare).await {
        Ok(r) => r,
        Err(e) => {
            let error = RunError::Internal(format!("preparing the run {}", describe_join(e)));
            let plans: Vec<PolicyPlan> = locked.iter().map(|(p, _)| (*p).clone()).collect();
            report
                .results
                .extend(fail_all(&plans, error, events).await.results);
            release_all(locked).await;
            crate::mongo::close(client).await;
            return report;
        }
    };
    let now = now_ms();
    let mut tasks = Tasks(Vec::new());
    let mut relays = Vec::new();
    let mut leases = Vec::new();
    for (plan, held) in locked {
        if let Some(why) = refused.get(&plan.policy.name) {
            for spec in &plan.jobs {
                let error = RunError::Targets(why.clone());
                report.results.push(refuse(spec, error, events).await);
            }
            if let Some(h) = held {
                leases.push(h.lease);
            }
            continue;
        }
        let target = settings.targets_for(&plan.policy);
        let guard: Option<Arc<dyn export::CommitGuard>> = held
            .as_ref()
            .map(|h| Arc::new(hold::Guard(h.lease.clone())) as Arc<dyn export::CommitGuard>);
        // The policy's exports stop on a shutdown, and when its lease is lost.
        let cancel_policy = Arc::new(AtomicBool::new(false));
        relays.push(hold::relay(
            cancel.clone(),
            cancel_policy.clone(),
            held.as_ref().map(|h| h.lease.watch()),
        ));
        if let Some(h) = held {
            leases.push(h.lease);
        }
        let limit = Arc::new(Semaphore::new(plan.policy.concurrency.max(1)));
        for spec in &plan.jobs {
            let entry = state.collections.get(&spec.id());
            let mut extent = window::compute(
                spec.collection.mode,
                &plan.policy.window,
                plan.policy.timezone,
                entry.and_then(|e| e.watermark),
                now,
            );
            let chain = spec
                .collection
                .full
                .filter(|_| spec.collection.has_bases())
                .map(|every| chain_job(spec, every, &found, entry, now));
            if chain == Some(ChainJob::Full) {
                extent = Extent::Snapshot;
            }
            let job = ExportJob {
                spec: spec.clone(),
                extent,
                compression_level: plan.policy.compression_level,
                recipients: plan
                    .policy
                    .recipients
                    .clone()
                    .unwrap_or_else(|| settings.recipients.clone()),
                target: target.clone(),
                count_untimed: entry
                    .and_then(|e| e.untimed_checked_at)
                    .is_none_or(|t| now - t >= UNTIMED_CHECK_EVERY),
                server_version: server_version.clone(),
                cancel: cancel_policy.clone(),
                chain,
                guard: guard.clone(),
            };
            let untimed_known = entry.and_then(|e| Some((e.untimed?, e.untimed_checked_at?)));
            let client = client.clone();
            let limit = limit.clone();
            let uri = settings.mongodb_uri.clone();
            let progress = progress(spec);
            let events = events.clone();
            let handle = tokio::spawn(async move {
                let _permit = limit.acquire_owned().await.expect("semaphore open");
                run_job(&client, &uri, job, progress, untimed_known, &events).await
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
                let error = RunError::Internal(format!("the export task {}", describe_join(e)));
                events
                    .emit(Event::JobFailed {
                        spec: &spec,
                        error: &error,
                        elapsed: Duration::ZERO,
                    })
                    .await;
                report.results.push(JobResult {
                    extent: Some(extent),
                    attempts: 1,
                    ..JobResult::before_export(&spec, error)
                });
            }
        }
    }
    for relay in relays {
        relay.abort();
    }
    for lease in leases {
        hold::release(lease).await;
    }
    drop(locks);
    // The export tasks are done with their clones: end the client here, not in a drop
    // the caller's runtime may cut short (see `mongo::close`).
    crate::mongo::close(client).await;
    for archive in recovered {
        tracing::info!(%archive, "recovered the manifest of an archive an interrupted run left without one");
    }
    report
}

/// Release the leases of runs that end before their exports start.
async fn release_all(locked: Vec<(&PolicyPlan, Option<hold::Held>)>) {
    for (_, held) in locked {
        if let Some(h) = held {
            hold::release(h.lease).await;
        }
    }
}

/// What a chain collection's run does: a full, or an incremental on the chain's
/// newest archive (from the newest cut known for it).
fn chain_job(
    spec: &JobSpec,
    every: crate::duration::HumanDuration,
    found: &[crate::catalog::Found],
    entry: Option<&crate::state::CollectionState>,
    now: DateTime<Utc>,
) -> ChainJob {
    let mine: Vec<&crate::catalog::Found> = found
        .iter()
        .filter(|f| {
            let m = &f.manifest;
            m.policy == spec.policy
                && m.database == spec.database
                && m.collection == spec.collection.name
        })
        .collect();
    match chain::next_run(&mine, every, now) {
        NextRun::Full(why) => {
            tracing::info!(job = %spec.id(), "full export: {why}");
            ChainJob::Full
        }
        NextRun::Incremental(p) => {
            // A run that found nothing to write still read the changes up to its cut.
            let later = entry
                .and_then(|e| e.cut.as_ref())
                .filter(|c| c.after == p.previous.archive && c.cut > p.since);
            let (since, token) = match later {
                Some(c) => (c.cut, c.token.clone()),
                None => (p.since, p.token),
            };
            ChainJob::Incremental {
                base: p.base,
                previous: p.previous,
                since,
                token,
                capture_updates: spec.collection.capture_updates,
            }
        }
    }
}

/// Each plan with its patterns matched against its database's collections as they
/// are now. A plan whose database cannot be listed is refused whole (its patterns
/// stand in as jobs, so the failure is seen), the others run.
async fn match_patterns(
    client: &Client,
    settings: &Settings,
    plans: &[PolicyPlan],
    events: &Emitter,
    report: &mut RunReport,
) -> Vec<PolicyPlan> {
    let mut listed: std::collections::HashMap<String, Result<Vec<String>, ExportError>> =
        std::collections::HashMap::new();
    let mut out = Vec::new();
    for plan in plans {
        if !plan.has_patterns() {
            out.push(plan.clone());
            continue;
        }
        let database = plan.database.clone();
        if !listed.contains_key(&database) {
            let names = crate::discover::collections(client, &database)
                .await
                .map_err(ExportError::from_mongo);
            listed.insert(database.clone(), names);
        }
        match &listed[&database] {
            Ok(existing) => {
                let (matched, unusable) = plan.matched(existing, &settings.exclude);
                for u in unusable {
                    tracing::warn!(
                        policy = %plan.policy.name,
                        "collection `{database}.{}` matches `{}` but cannot be backed up: {}",
                        u.collection, u.pattern, u.why
                    );
                }
                out.push(matched);
            }
            Err(e) => {
                let error = RunError::export(e.clone(), &settings.mongodb_uri);
                let jobs = plan.jobs.iter().cloned().chain(plan.pattern_jobs());
                for spec in jobs.collect::<Vec<_>>() {
                    report
                        .results
                        .push(refuse(&spec, error.clone(), events).await);
                }
            }
        }
    }
    out
}

/// Every job of `plans` refused before its export started, for the same reason.
async fn fail_all(plans: &[PolicyPlan], error: RunError, events: &Emitter) -> RunReport {
    let mut report = RunReport::default();
    for spec in plans.iter().flat_map(|p| &p.jobs) {
        report
            .results
            .push(refuse(spec, error.clone(), events).await);
    }
    report
}

/// One job refused before its export: locked out (no failure), or failed.
async fn refuse(spec: &JobSpec, error: RunError, events: &Emitter) -> JobResult {
    if error.is_locked() {
        events.emit(Event::JobLocked { spec }).await;
    } else {
        tracing::error!(job = %spec.id(), "run failed before its export started");
        events
            .emit(Event::JobFailed {
                spec,
                error: &error,
                elapsed: Duration::ZERO,
            })
            .await;
    }
    JobResult::before_export(spec, error)
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
    uri: &str,
    job: ExportJob,
    progress: Arc<dyn Progress>,
    untimed_known: Option<(u64, DateTime<Utc>)>,
    events: &Emitter,
) -> JobResult {
    let started = Instant::now();
    let id = job.spec.id();
    events
        .emit(Event::JobStarted {
            spec: &job.spec,
            extent: job.extent,
        })
        .await;
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
                let error = redact::text(&e.to_string(), uri);
                tracing::warn!(job = %id, %error, attempt = attempts, "transient failure; retrying in {pause:?}");
                tokio::select! {
                    () = tokio::time::sleep(pause) => {}
                    () = export::cancelled(&job.cancel) => {}
                }
            }
            other => break other,
        }
    };
    // Stopped because the lease was lost: a failure, and said so.
    let lost = job.guard.as_ref().and_then(|g| g.lost());
    let outcome = match (outcome, &lost) {
        (Err(ExportError::Interrupted), Some(why)) => Err(ExportError::LeaseLost(why.clone())),
        (other, _) => other,
    };
    let outcome = outcome.map_err(|e| RunError::export(e, uri));
    let elapsed = started.elapsed();
    let spec = &job.spec;
    match &outcome {
        // A shutdown is nobody's failure: the window is simply exported next time. An
        // export stopped with no shutdown asked for (a crashed writer) is a failure.
        Err(e) if e.is_interrupted() && job.cancel.load(Ordering::SeqCst) => {
            events.emit(Event::JobInterrupted { spec }).await
        }
        Ok(o) => {
            events
                .emit(Event::JobSucceeded {
                    spec,
                    outcome: o,
                    elapsed,
                    untimed_known,
                })
                .await
        }
        Err(error) => {
            events
                .emit(Event::JobFailed {
                    spec,
                    error,
                    elapsed,
                })
                .await
        }
    }
    let counted = matches!(&outcome, Ok(o) if o.untimed.is_some());
    JobResult {
        spec: job.spec,
        extent: Some(job.extent),
        outcome,
        elapsed,
        attempts,
        untimed_known: if counted { None } else { untimed_known },
    }
}
