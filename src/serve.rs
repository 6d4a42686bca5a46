//! `dcb serve`: the long-lived service. Schedules every enabled policy in its time zone
//! and runs it through the same engine as `dcb run`; hot-reloads policy files and
//! dcb.yaml (an invalid edit keeps the last valid version running); prunes after each
//! run; checks health; raises and resolves alerts; keeps a heartbeat for `dcb status`;
//! shuts down gracefully. File work runs on the blocking pool, never on async workers.

use std::collections::{BTreeMap, BTreeSet};
use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use chrono::{DateTime, Utc};
use tokio::sync::mpsc;
use tokio::task::{JoinHandle, JoinSet};

use crate::alert::{Alert, Alerter, AlertsConfig, EventKind};
use crate::config::{Overrides, Settings};
use crate::diag::{self, Diagnostic, Format};
use crate::export::Progress;
use crate::health::{self, Disk, Thresholds};
use crate::metrics::{Metrics, RunResult};
use crate::plan::{self, JobSpec, PolicyPlan};
use crate::policy::Policy;
use crate::policy::load::{PolicySet, load_dir};
use crate::runner::JobResult;
use crate::state::State;
use crate::status::{self, ServiceRecord};
use crate::{retention, runner, storage};

/// How long file events must be quiet before a reload (editors write in steps).
const DEBOUNCE: Duration = Duration::from_millis(300);
/// Once the grace period is over and exports are told to stop, how long they get to
/// stop before their tasks are aborted.
pub const ABORT_WAIT: Duration = Duration::from_secs(10);
/// How long a stop waits for alert deliveries in flight.
pub const FLUSH_WAIT: Duration = Duration::from_secs(10);
/// How long the runtime may take to wind down blocking work after the service loop.
pub const RUNTIME_SHUTDOWN: Duration = Duration::from_secs(5);
/// The most a stop takes beyond `--grace`. A service manager must wait longer than
/// grace plus this before it kills (the examples wait 90 s; the default grace is 30 s).
pub const STOP_OVERHEAD: Duration =
    Duration::from_secs(ABORT_WAIT.as_secs() + FLUSH_WAIT.as_secs() + RUNTIME_SHUTDOWN.as_secs());
/// How the engine words a run refused because another process holds the policy.
const LOCKED_BY_OTHER: &str = "another dcb is running policy";
/// The run lock in a policy's folder, as `dcb run` and `dcb prune` take it.
const RUN_LOCK: &str = ".dcb.lock";

/// Why the service could not start.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("a dcb service is already running for {} (pid {pid})", root.display())]
    AlreadyRunning { root: PathBuf, pid: u32 },
    #[error("cannot create {path}: {1}", path = .0.display())]
    Logs(PathBuf, std::io::Error),
    #[error("invalid alerts configuration: {0}")]
    Alerts(String),
    #[error("cannot listen on {0}: {1}")]
    Listen(String, std::io::Error),
}

impl ServeError {
    /// A problem of the configuration or the setup (exit 2), rather than of the run.
    pub fn is_config(&self) -> bool {
        !matches!(self, ServeError::Logs(..))
    }
}

pub struct Options {
    pub overrides: Overrides,
    pub http: Option<String>,
    pub grace: Duration,
}

/// Why the service loop wakes up.
#[derive(Debug)]
enum Event {
    Reload(&'static str),
    Shutdown(&'static str),
}

type Lock<T> = Mutex<T>;

fn lock<T>(m: &Lock<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Policies with a run going, and the jobs those runs export now.
#[derive(Debug, Default)]
struct Running {
    policies: BTreeSet<String>,
    jobs: BTreeSet<String>,
}

/// A policy's claim to be running. Dropping it, also while a panic unwinds, frees the
/// policy for its next tick and forgets its jobs.
struct Claim {
    running: Arc<Lock<Running>>,
    policy: String,
}

impl Claim {
    /// None while the policy's previous run holds its claim.
    fn take(running: &Arc<Lock<Running>>, policy: &str) -> Option<Claim> {
        lock(running)
            .policies
            .insert(policy.to_string())
            .then(|| Claim {
                running: running.clone(),
                policy: policy.to_string(),
            })
    }

    fn set_jobs(&self, ids: &[String]) {
        lock(&self.running).jobs.extend(ids.iter().cloned());
    }

    /// Job ids are `<policy>/<database>/<collection>`; names hold no `/`.
    fn clear_jobs(&self) {
        let prefix = format!("{}/", self.policy);
        lock(&self.running).jobs.retain(|j| !j.starts_with(&prefix));
    }
}

impl Drop for Claim {
    fn drop(&mut self) {
        self.clear_jobs();
        lock(&self.running).policies.remove(&self.policy);
    }
}

/// What one collection's result means for the service.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Verdict {
    Success,
    /// Stopped by the shutdown: no failure, nothing to alert.
    Interrupted,
    /// Another process held the policy's lock: no failure either.
    Locked,
    Failed,
}

/// `cancelled`: whether a shutdown told exports to stop. Without one, a result the
/// engine marks interrupted is a failure (a crashed writer, a panicked task).
fn verdict(r: &JobResult, cancelled: bool) -> Verdict {
    match &r.outcome {
        Ok(_) => Verdict::Success,
        Err(_) if r.interrupted && cancelled => Verdict::Interrupted,
        Err(e) if !r.interrupted && r.attempts == 0 && e.contains(LOCKED_BY_OTHER) => {
            Verdict::Locked
        }
        Err(_) => Verdict::Failed,
    }
}

/// What the service knows about a policy named in an alert key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Known {
    Runs,
    Disabled,
    /// Enabled, but it does not compile (its own `config:` alert says why).
    CannotRun,
}

/// Active alerts about jobs or policies the service no longer runs, with the message
/// that resolves each: a removed or disabled policy, or a collection it dropped.
fn orphans(
    active: &[String],
    policies: &BTreeMap<String, Known>,
    jobs: &BTreeSet<String>,
) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for key in active {
        let Some((kind, rest)) = key.split_once(':') else {
            continue;
        };
        let (policy, job) = match kind {
            "failures" | "stale" | "verify" => (rest.split('/').next().unwrap_or(rest), Some(rest)),
            "config" => (rest, None),
            _ => continue,
        };
        let message = match policies.get(policy) {
            None => format!("policy `{policy}` was removed"),
            Some(Known::Disabled) => format!("policy `{policy}` is disabled"),
            Some(Known::CannotRun) => continue,
            Some(Known::Runs) => match job {
                Some(id) if !jobs.contains(id) => {
                    format!("{id} is no longer backed up by policy `{policy}`")
                }
                _ => continue,
            },
        };
        out.push((key.clone(), message));
    }
    out
}

/// Collect finished runs. A run that panicked already freed its policy (its claim
/// dropped while unwinding); say so. Returns how many panicked.
fn reap(runs: &mut JoinSet<()>) -> usize {
    let mut panicked = 0;
    while let Some(done) = runs.try_join_next() {
        if let Err(e) = done
            && e.is_panic()
        {
            panicked += 1;
            tracing::error!("a policy run panicked; the policy runs again at its next time");
        }
    }
    panicked
}

async fn drain(runs: &mut JoinSet<()>) {
    while let Some(done) = runs.join_next().await {
        if let Err(e) = done
            && e.is_panic()
        {
            tracing::error!("a policy run panicked");
        }
    }
}

/// What a client was built from: when it changes, so must the client.
#[derive(Clone, PartialEq, Eq)]
struct ConnKey {
    uri: String,
    username: Option<String>,
    password_file: Option<PathBuf>,
    ca_file: Option<PathBuf>,
    cert_file: Option<PathBuf>,
    tls: bool,
}

impl ConnKey {
    fn of(s: &Settings) -> ConnKey {
        let x = &s.mongodb_extra;
        ConnKey {
            uri: s.mongodb_uri.clone(),
            username: x.username.clone(),
            password_file: x.password_file.clone(),
            ca_file: x.tls_ca_file.clone(),
            cert_file: x.tls_certificate_key_file.clone(),
            tls: x.tls,
        }
    }
}

/// What a reload read from disk.
struct Loaded {
    settings: Result<Settings, Vec<Diagnostic>>,
    /// A new alerter when `alerts:` (or where alerts are logged) changed.
    alerter: Option<Result<Alerter, String>>,
    set: PolicySet,
    /// Each policy file with errors, with a fingerprint of its content and diagnostics.
    bad: BTreeMap<PathBuf, String>,
    /// Active `invalid-policy:` keys whose file is fine now: (key, the file exists).
    mended: Vec<(String, bool)>,
}

const INVALID_POLICY: &str = "invalid-policy:";

/// dcb.yaml, the alerter it implies, and the policies folder, read afresh.
fn read_everything(overrides: &Overrides, current: Settings, alerter: &Alerter) -> Loaded {
    let resolved = Settings::resolve(overrides, &crate::config::process_env);
    let replacement = resolved.as_ref().ok().and_then(|new| {
        let (cfg, log) = (alerts_config(new), alerts_log(new));
        (cfg != alerts_config(&current) || log != alerts_log(&current))
            .then(|| alerter.reconfigured(&cfg, log))
    });
    let settings = match &resolved {
        Ok(new) => new.clone(),
        Err(_) => current,
    };
    let set = load_dir(&settings.policies_dir, &settings.policy_defaults());
    let files: BTreeSet<&PathBuf> = set
        .diagnostics
        .iter()
        .filter(|d| d.is_error())
        .map(|d| &d.file)
        .collect();
    let bad: BTreeMap<PathBuf, String> = files
        .into_iter()
        .map(|f| (f.clone(), file_fingerprint(f, &set.diagnostics)))
        .collect();
    let bad_keys: BTreeSet<String> = bad
        .keys()
        .map(|f| format!("{INVALID_POLICY}{}", f.display()))
        .collect();
    let mended = alerter
        .active()
        .into_iter()
        .filter(|k| k.starts_with(INVALID_POLICY) && !bad_keys.contains(k))
        .map(|k| {
            let exists = Path::new(&k[INVALID_POLICY.len()..]).exists();
            (k, exists)
        })
        .collect();
    Loaded {
        settings: resolved,
        alerter: replacement,
        set,
        bad,
        mended,
    }
}

/// The file's content hash and its diagnostics: a file alerts again only when either
/// changes.
fn file_fingerprint(file: &Path, diags: &[Diagnostic]) -> String {
    use sha2::Digest as _;
    let content = std::fs::read(file)
        .map(|b| format!("{:x}", sha2::Sha256::digest(&b)))
        .unwrap_or_default();
    let mine: Vec<Diagnostic> = diags.iter().filter(|d| d.file == file).cloned().collect();
    format!("{content}\n{}", diag::render(&mine, Format::Human))
}

fn alerts_log(settings: &Settings) -> PathBuf {
    storage::logs_dir(&settings.backup_root).join("alerts.log")
}

/// The alerts config, with its file paths relative to dcb.yaml's folder.
fn alerts_config(settings: &Settings) -> AlertsConfig {
    settings.alerts.clone()
}

pub struct Service {
    overrides: Overrides,
    settings: RwLock<Settings>,
    /// The last valid version of each policy, by name.
    policies: Lock<BTreeMap<String, Policy>>,
    /// Policy files whose last edit was invalid, with their fingerprint.
    bad_files: Lock<BTreeMap<PathBuf, String>>,
    /// The diagnostics of dcb.yaml while it is invalid.
    bad_config: Lock<Option<String>>,
    /// Enabled policies that do not compile, with the reason.
    uncompiled: Lock<BTreeMap<String, String>>,
    /// One scheduling task per enabled policy, with the policy it was started for.
    schedulers: Lock<BTreeMap<String, (String, JoinHandle<()>)>>,
    running: Arc<Lock<Running>>,
    runs: Lock<JoinSet<()>>,
    metrics: Metrics,
    alerter: RwLock<Arc<Alerter>>,
    cancel: Arc<AtomicBool>,
    stopping: AtomicBool,
    started_at: DateTime<Utc>,
    http: Lock<Option<String>>,
    database_ok: AtomicBool,
    events: mpsc::UnboundedSender<Event>,
    watch: Lock<Watch>,
}

fn fingerprint(p: &Policy) -> String {
    format!("{p:?}")
}

impl Service {
    fn settings(&self) -> Settings {
        self.settings
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    fn alerter(&self) -> Arc<Alerter> {
        self.alerter
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    fn alert(
        &self,
        kind: EventKind,
        key: String,
        title: String,
        message: String,
        job: Option<&JobSpec>,
    ) -> Alert {
        let mut a = Alert::new(kind, key, title, message);
        a.policy = job.map(|j| j.policy.clone());
        a.collection = job.map(|j| j.collection.name.clone());
        a
    }

    fn policy_alert(
        &self,
        kind: EventKind,
        key: String,
        title: String,
        message: String,
        policy: &str,
    ) -> Alert {
        let mut a = Alert::new(kind, key, title, message);
        a.policy = Some(policy.to_string());
        a
    }

    /// Load policy files and dcb.yaml again; apply what is valid, keep the rest.
    async fn reload(self: &Arc<Self>, why: &str) {
        tracing::info!(reason = %why, "loading policies");
        let (overrides, current, alerter) =
            (self.overrides.clone(), self.settings(), self.alerter());
        let Ok(loaded) =
            tokio::task::spawn_blocking(move || read_everything(&overrides, current, &alerter))
                .await
        else {
            tracing::error!("reading the policies failed; the running ones keep running");
            return;
        };
        match loaded.settings {
            Ok(new) => {
                match loaded.alerter {
                    Some(Ok(a)) => {
                        *self.alerter.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(a)
                    }
                    Some(Err(e)) => {
                        tracing::error!(error = %e, "invalid alerts configuration; keeping the previous one")
                    }
                    None => {}
                }
                *self.settings.write().unwrap_or_else(|e| e.into_inner()) = new;
                *lock(&self.bad_config) = None;
                self.alerter()
                    .resolve("config", "dcb.yaml is valid again".into())
                    .await;
            }
            Err(diags) => {
                let text = diag::render(&diags, Format::Human);
                let before = lock(&self.bad_config).replace(text.clone());
                if before.as_deref() == Some(text.as_str()) {
                    tracing::debug!("dcb.yaml is still invalid; the previous configuration stays");
                } else {
                    tracing::error!(
                        "dcb.yaml is invalid; keeping the previous configuration:\n{text}"
                    );
                    let a = self.alert(
                        EventKind::Failure,
                        "config".into(),
                        "dcb.yaml is invalid".into(),
                        text,
                        None,
                    );
                    self.alerter().raise(a).await;
                }
            }
        }
        let set = loaded.set;
        let bad = loaded.bad;
        let mut next: BTreeMap<String, Policy> = set
            .policies
            .into_iter()
            .map(|p| (p.name.clone(), p))
            .collect();
        for (name, old) in lock(&self.policies).iter() {
            if bad.contains_key(&old.file) && !next.contains_key(name) {
                tracing::warn!(policy = %name, file = %old.file.display(), "invalid edit rejected; the last valid version keeps running");
                next.insert(name.clone(), old.clone());
            }
        }
        // Alert on files newly broken or changed while broken, not on every reload.
        let newly: Vec<PathBuf> = {
            let mut known = lock(&self.bad_files);
            let newly = bad
                .iter()
                .filter(|(f, fp)| known.get(*f) != Some(*fp))
                .map(|(f, _)| f.clone())
                .collect();
            *known = bad.clone();
            newly
        };
        for file in &newly {
            let diags: Vec<_> = set
                .diagnostics
                .iter()
                .filter(|d| &d.file == file)
                .cloned()
                .collect();
            let text = diag::render(&diags, Format::Human);
            tracing::error!("invalid policy file {}:\n{text}", file.display());
            let a = self.alert(
                EventKind::Failure,
                format!("{INVALID_POLICY}{}", file.display()),
                format!("invalid policy file {}", file.display()),
                text,
                None,
            );
            self.alerter().raise(a).await;
        }
        for (key, exists) in loaded.mended {
            let file = &key[INVALID_POLICY.len()..];
            let message = if exists {
                format!("{file} is valid again")
            } else {
                format!("{file} was removed")
            };
            self.alerter().resolve(&key, message).await;
        }
        self.apply(next);
        let settings = self.settings();
        let plans = self.compile_policies(&settings).await;
        // While a file is invalid, its policy may be one that looks removed.
        if bad.is_empty() {
            self.resolve_orphans(&plans).await;
        }
    }

    /// Raise `config:<policy>` for each enabled policy that does not compile (when new
    /// or its reason changed) and resolve it for those that do. Returns their plans.
    async fn compile_policies(&self, settings: &Settings) -> Vec<PolicyPlan> {
        let policies: Vec<Policy> = lock(&self.policies).values().cloned().collect();
        let (plans, errors) = plan::compile_each(&policies, settings);
        let enabled: BTreeSet<&str> = policies
            .iter()
            .filter(|p| p.enabled)
            .map(|p| p.name.as_str())
            .collect();
        let errors: BTreeMap<String, String> = errors
            .into_iter()
            .filter(|e| enabled.contains(e.0.as_str()))
            .map(|e| (e.0.clone(), e.to_string()))
            .collect();
        let newly: Vec<(String, String)> = {
            let mut known = lock(&self.uncompiled);
            let newly = errors
                .iter()
                .filter(|(n, e)| known.get(*n) != Some(*e))
                .map(|(n, e)| (n.clone(), e.clone()))
                .collect();
            *known = errors;
            newly
        };
        for (name, error) in newly {
            tracing::error!(policy = %name, "policy cannot run: {error}");
            let a = self.policy_alert(
                EventKind::Failure,
                format!("config:{name}"),
                format!("policy {name} cannot run"),
                error,
                &name,
            );
            self.alerter().raise(a).await;
        }
        for p in plans.iter().filter(|p| p.policy.enabled) {
            let name = &p.policy.name;
            self.alerter()
                .resolve(
                    &format!("config:{name}"),
                    format!("policy {name} can run again"),
                )
                .await;
        }
        plans
    }

    /// Resolve alerts of policies and collections the service no longer backs up.
    async fn resolve_orphans(&self, plans: &[PolicyPlan]) {
        let mut known: BTreeMap<String, Known> = lock(&self.policies)
            .values()
            .map(|p| {
                let k = if p.enabled {
                    Known::CannotRun
                } else {
                    Known::Disabled
                };
                (p.name.clone(), k)
            })
            .collect();
        let mut jobs = BTreeSet::new();
        for p in plans.iter().filter(|p| p.policy.enabled) {
            known.insert(p.policy.name.clone(), Known::Runs);
            jobs.extend(p.jobs.iter().map(JobSpec::id));
        }
        for (key, message) in orphans(&self.alerter().active(), &known, &jobs) {
            self.alerter().resolve(&key, message).await;
        }
    }

    /// Start, restart or stop scheduling tasks so they match `next`.
    fn apply(self: &Arc<Self>, next: BTreeMap<String, Policy>) {
        let mut schedulers = lock(&self.schedulers);
        schedulers.retain(|name, (fp, task)| {
            let keep = next
                .get(name)
                .is_some_and(|p| p.enabled && &fingerprint(p) == fp);
            if !keep {
                task.abort();
                tracing::info!(policy = %name, "schedule stopped");
            }
            keep
        });
        for (name, p) in next.iter().filter(|(_, p)| p.enabled) {
            if schedulers.contains_key(name) {
                continue;
            }
            let me = self.clone();
            let policy = p.clone();
            let task = tokio::spawn(async move { me.schedule(policy).await });
            let next_run = p
                .schedule
                .next_after(&Utc::now().with_timezone(&p.timezone));
            tracing::info!(policy = %name, schedule = p.schedule.pattern(), timezone = p.timezone.name(), next = ?next_run, "scheduled");
            schedulers.insert(name.clone(), (fingerprint(p), task));
        }
        *lock(&self.policies) = next;
    }

    /// Fire `policy` at each of its times until aborted.
    async fn schedule(self: Arc<Self>, policy: Policy) {
        let mut after = Utc::now();
        loop {
            let Some(next) = policy
                .schedule
                .next_after(&after.with_timezone(&policy.timezone))
            else {
                tracing::warn!(policy = %policy.name, "the schedule fires no more");
                return;
            };
            let next = next.with_timezone(&Utc);
            let wait = (next - Utc::now()).to_std().unwrap_or_default();
            tokio::time::sleep(wait).await;
            self.fire(&policy.name, "schedule");
            // A slow run never causes a burst of catch-up ticks.
            after = next.max(Utc::now() - chrono::TimeDelta::milliseconds(1));
        }
    }

    /// Start a run of `name` unless one is going.
    fn fire(self: &Arc<Self>, name: &str, why: &'static str) {
        if self.stopping.load(Ordering::SeqCst) {
            return;
        }
        let Some(policy) = lock(&self.policies).get(name).cloned() else {
            return;
        };
        let Some(claim) = Claim::take(&self.running, name) else {
            self.metrics.record_skip(name);
            tracing::warn!(policy = %name, skipped = self.metrics.skipped(name), "the previous run is still going; this tick is skipped");
            return;
        };
        let me = self.clone();
        let mut runs = lock(&self.runs);
        reap(&mut runs);
        runs.spawn(async move {
            me.run_policy(&policy, why, &claim).await;
            drop(claim);
        });
    }

    async fn run_policy(self: &Arc<Self>, policy: &Policy, why: &str, claim: &Claim) {
        let settings = self.settings();
        // A policy that does not compile was alerted (`config:<policy>`) when loaded.
        let Ok(plans) = plan::compile(std::slice::from_ref(policy), &settings) else {
            tracing::debug!(policy = %policy.name, "the policy cannot run; see its config alert");
            return;
        };
        let jobs: Vec<&JobSpec> = plans.iter().flat_map(|p| p.jobs.iter()).collect();
        let ids: Vec<String> = jobs.iter().map(|j| j.id()).collect();
        // Another process (`dcb run`) holding the policy is no failure: the policy is
        // simply not run twice at once.
        let lock_path = storage::policy_dir(&settings.backup_root, &policy.name).join(RUN_LOCK);
        let held =
            tokio::task::spawn_blocking(move || matches!(storage::try_lock(&lock_path), Ok(None)))
                .await
                .unwrap_or(false);
        if held {
            tracing::info!(policy = %policy.name, reason = %why, "another process is running this policy; not started twice");
            let now = Utc::now().timestamp() as f64;
            for j in &jobs {
                self.metrics
                    .record_run(&j.policy, &j.collection.name, RunResult::Locked, 0.0, now);
            }
            return;
        }
        claim.set_jobs(&ids);
        tracing::info!(policy = %policy.name, reason = %why, "run started");
        let start = self.policy_alert(
            EventKind::RunStart,
            format!("run:{}", policy.name),
            format!("{} started", policy.name),
            format!("{} collections ({why})", ids.len()),
            &policy.name,
        );
        self.alerter().notify(start).await;
        let none = |_: &JobSpec| -> Arc<dyn Progress> { Arc::new(()) };
        let report = runner::run_cancellable(&settings, &plans, &none, self.cancel.clone()).await;
        claim.clear_jobs();
        let cancelled = self.cancel.load(Ordering::SeqCst);
        let root = settings.backup_root.clone();
        let target = settings.target();
        let state = tokio::task::spawn_blocking(move || State::load(&root, &target))
            .await
            .unwrap_or_default();
        let threshold = settings.health.failure_threshold;
        for r in &report.results {
            let id = r.spec.id();
            let (p, c) = (&r.spec.policy, &r.spec.collection.name);
            let now = Utc::now().timestamp() as f64;
            match (verdict(r, cancelled), &r.outcome) {
                (Verdict::Success, Ok(o)) => {
                    let result = RunResult::Success {
                        documents: o.documents,
                        bytes: o.bytes,
                    };
                    self.metrics
                        .record_run(p, c, result, r.elapsed.as_secs_f64(), now);
                    self.alerter()
                        .resolve(&format!("failures:{id}"), format!("{id} backed up again"))
                        .await;
                    let msg = format!("{} documents, {} bytes", o.documents, o.bytes);
                    let a = self.alert(
                        EventKind::Success,
                        format!("success:{id}"),
                        format!("{id} backed up"),
                        msg,
                        Some(&r.spec),
                    );
                    self.alerter().notify(a).await;
                    if settings.verify_after_run
                        && let (Some(archive), Some(manifest)) = (&o.archive, &o.manifest)
                    {
                        self.verify_new(&settings, &r.spec, archive, manifest).await;
                    }
                }
                (Verdict::Interrupted, _) => {}
                (Verdict::Locked, _) => {
                    tracing::info!(job = %id, "another process is running this policy; not started twice");
                    self.metrics.record_run(p, c, RunResult::Locked, 0.0, now);
                }
                (_, outcome) => {
                    let e = outcome.as_ref().err().cloned().unwrap_or_default();
                    self.metrics
                        .record_run(p, c, RunResult::Failure, r.elapsed.as_secs_f64(), now);
                    let failures = if r.interrupted {
                        self.record_failure(&settings, &r.spec, &e).await
                    } else {
                        state
                            .collections
                            .get(&id)
                            .map_or(1, |c| c.consecutive_failures)
                    };
                    if failures >= threshold {
                        let a = self.alert(
                            EventKind::Failure,
                            format!("failures:{id}"),
                            format!("{id}: {failures} consecutive failures"),
                            e,
                            Some(&r.spec),
                        );
                        self.alerter().raise(a).await;
                    }
                }
            }
        }
        if !cancelled {
            self.prune(policy, &settings).await;
        }
        self.heartbeat().await;
    }

    /// Record a failure the engine took for a shutdown though none was asked for
    /// (the engine records nothing for those). Returns the consecutive failures.
    async fn record_failure(&self, settings: &Settings, spec: &JobSpec, error: &str) -> u32 {
        tracing::error!(job = %spec.id(), error = %error, "export stopped without a shutdown; counted as a failure");
        let (root, target, spec, error) = (
            settings.backup_root.clone(),
            settings.target(),
            spec.clone(),
            error.to_string(),
        );
        tokio::task::spawn_blocking(move || {
            State::update(&root, &target, &spec.id(), |e| {
                e.policy = spec.policy.clone();
                e.database = spec.database.clone();
                e.collection = spec.collection.name.clone();
                e.runs += 1;
                e.failures += 1;
                e.consecutive_failures += 1;
                e.last_failure = Some(Utc::now());
                e.last_error = Some(error);
            })
            .map(|e| e.consecutive_failures)
        })
        .await
        .ok()
        .and_then(Result::ok)
        .unwrap_or(1)
    }

    /// Read a new archive back; alert when it is not what its manifest says.
    async fn verify_new(
        &self,
        settings: &Settings,
        spec: &JobSpec,
        archive: &crate::storage::Source,
        manifest: &crate::export::manifest::Manifest,
    ) {
        let id = spec.id();
        let (path, m) = (archive.clone(), manifest.clone());
        let identity = settings.identity_file.clone();
        let root = settings.backup_root.clone();
        let Ok((report, record, key_file_error)) = tokio::task::spawn_blocking(move || {
            // A backup host may hold only the public recipients: then the file hash.
            let mut key_file_error = None;
            let mut keys = match identity {
                Some(file) => crate::crypto::Keys::load(&file).unwrap_or_else(|e| {
                    key_file_error = Some(e.to_string());
                    crate::crypto::Keys::default()
                }),
                None => crate::crypto::Keys::default(),
            };
            keys.hash_only_when_locked = true;
            let report = crate::verify::check(&path, Some(&m), 0, &keys);
            let record = crate::verify::log::record(&root, &report);
            (report, record, key_file_error)
        })
        .await
        else {
            return;
        };
        // A key that cannot open the archive is a configuration problem of the policy,
        // not damage: its own alert, and the archive's verification is left alone.
        let identity_key = format!("identity:{}", spec.policy);
        let key_problem = key_file_error
            .map(|e| format!("cannot load the identity file ({e}); new archives are checked by file hash only"))
            .or_else(|| report.locked().map(|k| format!("cannot open the new archive {}: {k}", record.archive)));
        match &key_problem {
            Some(why) => {
                tracing::error!(policy = %spec.policy, "{why}");
                let a = self.alert(
                    EventKind::Failure,
                    identity_key,
                    format!("{}: the identity cannot open new archives", spec.policy),
                    why.clone(),
                    Some(spec),
                );
                self.alerter().raise(a).await;
            }
            None => {
                self.alerter()
                    .resolve(
                        &identity_key,
                        format!("{}: the identity opens new archives", spec.policy),
                    )
                    .await;
            }
        }
        let key = format!("verify:{id}");
        if report.corrupt() {
            tracing::error!(archive = %record.archive, problems = ?record.problems, "new archive is corrupt");
            let a = self.alert(
                EventKind::Failure,
                key,
                format!("{id}: the new archive is corrupt"),
                format!("{}: {}", record.archive, record.problems.join("; ")),
                Some(spec),
            );
            self.alerter().raise(a).await;
        } else if report.ok() {
            tracing::debug!(archive = %record.archive, "new archive verified");
            self.alerter()
                .resolve(&key, format!("{id}: the new archive verified"))
                .await;
        }
    }

    /// Retention for one policy, after its run.
    async fn prune(&self, policy: &Policy, settings: &Settings) {
        let (policy, settings) = (policy.clone(), settings.clone());
        let _ = tokio::task::spawn_blocking(move || prune_policy(&policy, &settings)).await;
    }

    /// The state, read off the async workers.
    async fn load_state(&self) -> State {
        let root = self.settings().backup_root;
        let target = self.settings().target();
        tokio::task::spawn_blocking(move || State::load(&root, &target))
            .await
            .unwrap_or_default()
    }

    /// Last successes recorded before this process started, for `/metrics`.
    fn seed_metrics(&self, state: &State) {
        let policies: Vec<Policy> = lock(&self.policies).values().cloned().collect();
        let (plans, _) = plan::compile_each(&policies, &self.settings());
        for job in plans.iter().flat_map(|p| &p.jobs) {
            if let Some(t) = state
                .collections
                .get(&job.id())
                .and_then(|c| c.last_success)
            {
                self.metrics.seed_last_success(
                    &job.policy,
                    &job.collection.name,
                    t.timestamp() as f64,
                );
            }
        }
    }

    /// Run the policies whose last success predates their previous scheduled time.
    fn catch_up(self: &Arc<Self>, state: &State) {
        let settings = self.settings();
        let policies: Vec<Policy> = lock(&self.policies)
            .values()
            .filter(|p| p.enabled)
            .cloned()
            .collect();
        for p in policies {
            let Some(prev) = p
                .schedule
                .previous_before(&Utc::now().with_timezone(&p.timezone))
            else {
                continue;
            };
            let prev = prev.with_timezone(&Utc);
            let Ok(db) = settings.database_for(&p) else {
                continue;
            };
            let missed = p.collections.iter().any(|c| {
                let id = crate::plan::job_id(&p.name, &db, &c.name);
                state
                    .collections
                    .get(&id)
                    .and_then(|s| s.last_success)
                    .is_none_or(|t| t < prev)
            });
            if missed {
                tracing::info!(policy = %p.name, missed = %prev, "catching up once after downtime");
                self.fire(&p.name, "catch-up");
            }
        }
    }

    fn record(&self) -> ServiceRecord {
        ServiceRecord {
            pid: std::process::id(),
            host: crate::host::hostname(),
            started_at: self.started_at,
            heartbeat_at: Utc::now(),
            stopped_at: None,
            active_jobs: lock(&self.running).jobs.iter().cloned().collect(),
            http: lock(&self.http).clone(),
        }
    }

    async fn heartbeat(&self) {
        let (root, record) = (self.settings().backup_root, self.record());
        let _ = tokio::task::spawn_blocking(move || write_record(&root, &record)).await;
    }

    /// Watch the folders the current settings name; true when one is watched now that
    /// was not before (it appeared, or was made again), so a reload must look at it.
    fn ensure_watches(&self) -> bool {
        let settings = self.settings();
        lock(&self.watch).ensure(&settings, &self.overrides)
    }

    /// `full`: also the per-collection findings (failures, staleness, forecast). The
    /// check at start-up looks at the database and the disk only: collections get
    /// their catch-up run first.
    async fn health_check(
        self: &Arc<Self>,
        db: &mut Option<(ConnKey, mongodb::Client)>,
        full: bool,
    ) {
        let settings = self.settings();
        let plans = self.compile_policies(&settings).await;
        let key = ConnKey::of(&settings);
        if db.as_ref().is_some_and(|(k, _)| *k != key) {
            tracing::info!("the connection settings changed; health checks reconnect");
            *db = None;
        }
        let database = match db {
            Some((_, c)) => ping(c).await,
            None => match crate::mongo::connect(&settings, Duration::from_secs(5)).await {
                Ok(c) => {
                    let r = ping(&c).await;
                    *db = Some((key, c));
                    r
                }
                Err(e) => Err(e),
            },
        };
        self.database_ok.store(database.is_ok(), Ordering::SeqCst);
        let h = &settings.health;
        let thresholds = Thresholds {
            failure_threshold: h.failure_threshold,
            min_free_percent: h.min_free_percent,
            min_free_bytes: h.min_free_mb.saturating_mul(1_048_576),
        };
        let jobs: Vec<(Policy, Vec<JobSpec>)> = if full {
            plans.into_iter().map(|p| (p.policy, p.jobs)).collect()
        } else {
            Vec::new()
        };
        let root = settings.backup_root.clone();
        let target = settings.target();
        let started_at = self.started_at;
        let findings = tokio::task::spawn_blocking(move || {
            let _ = storage::create_dir(&root);
            let disk = match (fs4::available_space(&root), fs4::total_space(&root)) {
                (Ok(available), Ok(total)) => Some(Disk { available, total }),
                _ => None,
            };
            let (state, archives) = if full {
                (State::load(&root, &target), crate::catalog::scan(&target))
            } else {
                Default::default()
            };
            let inputs = health::Inputs {
                jobs: &jobs,
                state: &state,
                archives: &archives,
                disk,
                database,
                started_at,
                now: Utc::now(),
            };
            health::evaluate(&inputs, &thresholds)
        })
        .await
        .unwrap_or_default();
        for f in findings
            .into_iter()
            .filter(|f| full || matches!(f.key.as_str(), "database" | "disk:free"))
        {
            if f.active {
                let mut a = Alert::new(EventKind::Failure, f.key, f.title, f.message);
                a.policy = f.policy;
                a.collection = f.collection;
                self.alerter().raise(a).await;
            } else {
                self.alerter()
                    .resolve(&f.key, format!("{}: resolved", f.key))
                    .await;
            }
        }
    }

    /// After an abort: remove what the aborted exports left (their temporary files),
    /// where no other process holds the policy.
    async fn remove_leftovers(&self, policies: Vec<String>) {
        let root = self.settings().backup_root;
        let _ = tokio::task::spawn_blocking(move || {
            for name in policies {
                let dir = storage::policy_dir(&root, &name);
                if let Ok(Some(_lock)) = storage::try_lock(&dir.join(RUN_LOCK)) {
                    for f in storage::remove_leftovers(&dir) {
                        tracing::info!(file = %f.display(), "removed the temporary file of an aborted export");
                    }
                }
            }
        })
        .await;
    }
}

fn write_record(root: &Path, record: &ServiceRecord) {
    if let Err(e) = status::write_service(root, record) {
        tracing::warn!(error = %e, "cannot write the service record");
    }
}

/// Retention for one policy: plan, then apply under its locks.
fn prune_policy(policy: &Policy, settings: &Settings) {
    let name = std::slice::from_ref(&policy.name);
    let pruned = retention::prune(
        &settings.backup_root,
        &settings.target(),
        std::slice::from_ref(policy),
        name,
        Utc::now(),
    );
    for s in &pruned.skipped {
        if s.busy {
            tracing::info!(policy = %s.policy, "retention skipped until the next run: {}", s.why);
        } else {
            tracing::warn!(policy = %s.policy, "retention skipped: {}", s.why);
        }
    }
    for (key, e) in &pruned.report.errors {
        tracing::error!(archive = %key, error = %e, "retention could not delete an archive");
    }
}

async fn ping(client: &mongodb::Client) -> Result<(), String> {
    client
        .database("admin")
        .run_command(mongodb::bson::doc! {"ping": 1})
        .await
        .map(|_| ())
        .map_err(|e| e.to_string())
}

impl crate::http::Source for Service {
    fn healthy(&self) -> bool {
        self.database_ok.load(Ordering::SeqCst) && !self.stopping.load(Ordering::SeqCst)
    }

    /// Reads the state and the archives: called on the blocking pool.
    fn status_json(&self) -> String {
        let settings = self.settings();
        let policies: Vec<Policy> = lock(&self.policies).values().cloned().collect();
        let mut st = status::gather(&settings, &policies);
        // Live, not from the last heartbeat.
        st.is_running = true;
        st.active_jobs = lock(&self.running).jobs.len();
        st.uptime = (Utc::now() - self.started_at).num_seconds().max(0) as u64;
        st.pid = Some(std::process::id());
        serde_json::to_string_pretty(&st).unwrap_or_default()
    }

    fn metrics_text(&self) -> String {
        let next: Vec<(String, f64)> = lock(&self.policies)
            .values()
            .filter(|p| p.enabled)
            .filter_map(|p| {
                p.schedule
                    .next_after(&Utc::now().with_timezone(&p.timezone))
                    .map(|t| (p.name.clone(), t.timestamp() as f64))
            })
            .collect();
        self.metrics.render(&next, true)
    }
}

/// Which file events ask for a reload: anything under the policies folder or on the
/// way to it (it may not exist yet), and the config file.
#[derive(Debug, Clone, Default)]
struct Filter {
    /// The policies folder as configured and as the OS names it.
    policies: Vec<PathBuf>,
    config: Option<OsString>,
}

impl Filter {
    fn relevant(&self, p: &Path) -> bool {
        self.policies
            .iter()
            .any(|d| p.starts_with(d) || d.starts_with(p))
            || self
                .config
                .as_deref()
                .is_some_and(|n| p.file_name() == Some(n))
    }
}

/// The file watcher. A folder that does not exist yet is watched through its nearest
/// existing parent and picked up when it appears; one made again is watched again.
struct Watch {
    watcher: Option<notify::RecommendedWatcher>,
    /// Each watched folder, with its identity when it was watched.
    watched: BTreeMap<PathBuf, Option<(u64, u64)>>,
    /// Folders that could not be watched (said once; retried).
    failed: BTreeSet<PathBuf>,
    filter: Arc<RwLock<Filter>>,
    primed: bool,
}

/// A folder's identity, where the OS gives one: a folder deleted and made again is a
/// different folder to watch.
fn identity(dir: &Path) -> Option<(u64, u64)> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::MetadataExt as _;
        std::fs::metadata(dir).ok().map(|m| (m.dev(), m.ino()))
    }
    #[cfg(not(unix))]
    {
        let _ = dir;
        None
    }
}

fn existing_ancestor(p: &Path) -> PathBuf {
    p.ancestors()
        .find(|a| a.is_dir())
        .unwrap_or(p)
        .to_path_buf()
}

impl Watch {
    fn new(tx: mpsc::UnboundedSender<Event>) -> Watch {
        let filter = Arc::new(RwLock::new(Filter::default()));
        let seen = filter.clone();
        let handler = move |res: notify::Result<notify::Event>| {
            let Ok(ev) = res else { return };
            if matches!(ev.kind, notify::EventKind::Access(_)) {
                return;
            }
            let f = seen.read().unwrap_or_else(|e| e.into_inner());
            if ev.paths.is_empty() || ev.paths.iter().any(|p| f.relevant(p)) {
                let _ = tx.send(Event::Reload("file change"));
            }
        };
        let watcher = match notify::recommended_watcher(handler) {
            Ok(w) => Some(w),
            Err(e) => {
                tracing::error!(error = %e, "cannot watch the policy files; reload with SIGHUP or a restart");
                None
            }
        };
        Watch {
            watcher,
            watched: BTreeMap::new(),
            failed: BTreeSet::new(),
            filter,
            primed: false,
        }
    }

    /// Watch the policies folder and the config file's folder of `settings` (the
    /// config file may not exist yet: `--config`, else ./dcb.yaml). True when a folder
    /// is watched now that was not at the previous call.
    fn ensure(&mut self, settings: &Settings, overrides: &Overrides) -> bool {
        use notify::{RecursiveMode, Watcher as _};
        let Some(watcher) = self.watcher.as_mut() else {
            return false;
        };
        let absolute = |p: &Path| std::path::absolute(p).unwrap_or_else(|_| p.to_path_buf());
        let policies = absolute(&settings.policies_dir);
        let config = absolute(
            overrides
                .config
                .as_deref()
                .unwrap_or(Path::new(crate::config::DEFAULT_CONFIG_FILE)),
        );
        *self.filter.write().unwrap_or_else(|e| e.into_inner()) = Filter {
            policies: [Some(policies.clone()), policies.canonicalize().ok()]
                .into_iter()
                .flatten()
                .collect(),
            config: config.file_name().map(|n| n.to_os_string()),
        };
        let mut want = BTreeSet::from([existing_ancestor(&policies)]);
        if let Some(dir) = config.parent() {
            want.insert(existing_ancestor(dir));
        }
        let gone: Vec<PathBuf> = self
            .watched
            .keys()
            .filter(|d| !want.contains(*d))
            .cloned()
            .collect();
        for dir in gone {
            let _ = watcher.unwatch(&dir);
            self.watched.remove(&dir);
        }
        let mut added = false;
        for dir in want {
            let id = identity(&dir);
            match self.watched.get(&dir) {
                Some(known) if *known == id => continue,
                Some(_) => {
                    let _ = watcher.unwatch(&dir);
                }
                None => {}
            }
            match watcher.watch(&dir, RecursiveMode::NonRecursive) {
                Ok(()) => {
                    tracing::debug!(dir = %dir.display(), "watching");
                    self.watched.insert(dir.clone(), id);
                    self.failed.remove(&dir);
                    added = true;
                }
                Err(e) => {
                    self.watched.remove(&dir);
                    if self.failed.insert(dir.clone()) {
                        tracing::error!(dir = %dir.display(), error = %e, "cannot watch folder; retrying (SIGHUP reloads meanwhile)");
                    }
                }
            }
        }
        let primed = std::mem::replace(&mut self.primed, true);
        added && primed
    }
}

/// Run the service until asked to stop. Returns the process exit status.
pub async fn serve(settings: Settings, opts: Options) -> Result<(), ServeError> {
    let root = settings.backup_root.clone();
    if let Some(other) = status::read_service(&root)
        .filter(|s| s.is_alive(Utc::now()) && s.pid != std::process::id())
    {
        return Err(ServeError::AlreadyRunning {
            root,
            pid: other.pid,
        });
    }
    let logs = storage::logs_dir(&root);
    storage::create_dir(&logs).map_err(|e| ServeError::Logs(logs, e))?;
    let _ = std::fs::remove_file(status::stop_request_path(&root));
    let alerter = Alerter::new(&alerts_config(&settings), alerts_log(&settings))
        .map_err(ServeError::Alerts)?;
    let (tx, mut rx) = mpsc::unbounded_channel();
    let service = Arc::new(Service {
        overrides: opts.overrides.clone(),
        settings: RwLock::new(settings.clone()),
        policies: Lock::default(),
        bad_files: Lock::default(),
        bad_config: Lock::default(),
        uncompiled: Lock::default(),
        schedulers: Lock::default(),
        running: Arc::default(),
        runs: Lock::new(JoinSet::new()),
        metrics: Metrics::default(),
        alerter: RwLock::new(Arc::new(alerter)),
        cancel: Arc::new(AtomicBool::new(false)),
        stopping: AtomicBool::new(false),
        started_at: Utc::now(),
        http: Lock::default(),
        // Unknown until the first health check, which runs at once.
        database_ok: AtomicBool::new(false),
        events: tx.clone(),
        watch: Lock::new(Watch::new(tx.clone())),
    });
    // Watch before reading, so no edit in between is missed.
    let me = service.clone();
    let _ = tokio::task::spawn_blocking(move || me.ensure_watches()).await;
    service.reload("start").await;
    if lock(&service.policies).is_empty() {
        tracing::warn!(dir = %settings.policies_dir.display(), "no valid policies yet; waiting for policy files");
    }
    let listen = opts.http.clone().or_else(|| settings.http_listen.clone());
    let mut http_task = None;
    if let Some(addr) = listen {
        match crate::http::spawn(&addr, service.clone() as Arc<dyn crate::http::Source>).await {
            Ok((bound, task)) => {
                tracing::info!(%bound, "admin endpoint listening");
                *lock(&service.http) = Some(bound.to_string());
                http_task = Some(task);
            }
            Err(e) => return Err(ServeError::Listen(addr, e)),
        }
    }
    service.heartbeat().await;
    let state = service.load_state().await;
    service.seed_metrics(&state);
    service.catch_up(&state);

    // Heartbeat, `dcb stop` requests, finished runs, folders to watch.
    let hb = {
        let me = service.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(1));
            let mut n = 0u64;
            loop {
                tick.tick().await;
                n += 1;
                reap(&mut lock(&me.runs));
                let beat = n.is_multiple_of(status::HEARTBEAT.as_secs().max(1));
                let record = beat.then(|| me.record());
                let root = me.settings().backup_root;
                let it = me.clone();
                let (stop, appeared) = tokio::task::spawn_blocking(move || {
                    if let Some(r) = record {
                        write_record(&root, &r);
                    }
                    let stop = status::stop_request_path(&root);
                    let requested = stop.exists();
                    if requested {
                        let _ = std::fs::remove_file(&stop);
                    }
                    (requested, beat && it.ensure_watches())
                })
                .await
                .unwrap_or_default();
                if stop {
                    let _ = me.events.send(Event::Shutdown("dcb stop"));
                }
                if appeared {
                    let _ = me.events.send(Event::Reload("newly watched folder"));
                }
            }
        })
    };
    let health_task = {
        let me = service.clone();
        tokio::spawn(async move {
            let mut client = None;
            let mut full = false;
            loop {
                me.health_check(&mut client, full).await;
                full = true;
                let interval = me
                    .settings()
                    .health
                    .interval
                    .as_std()
                    .max(Duration::from_secs(1));
                tokio::time::sleep(interval).await;
            }
        })
    };
    spawn_signals(tx.clone());
    tracing::info!(
        pid = std::process::id(),
        policies = lock(&service.policies).len(),
        "dcb service started"
    );

    let reason = loop {
        match rx.recv().await {
            Some(Event::Reload(why)) => {
                // Debounce: editors save in several steps.
                let mut shutdown = None;
                loop {
                    match tokio::time::timeout(DEBOUNCE, rx.recv()).await {
                        Ok(Some(Event::Reload(_))) => continue,
                        Ok(Some(Event::Shutdown(r))) => {
                            shutdown = Some(r);
                            break;
                        }
                        Ok(None) | Err(_) => break,
                    }
                }
                if let Some(r) = shutdown {
                    break r;
                }
                service.reload(why).await;
                // The settings may name other folders now.
                let me = service.clone();
                if tokio::task::spawn_blocking(move || me.ensure_watches())
                    .await
                    .unwrap_or(false)
                {
                    let _ = tx.send(Event::Reload("newly watched folder"));
                }
            }
            Some(Event::Shutdown(r)) => break r,
            None => break "channel closed",
        }
    };

    tracing::info!(reason, grace = ?opts.grace, "stopping: no new runs; waiting for running exports");
    service.stopping.store(true, Ordering::SeqCst);
    for (_, (_, task)) in std::mem::take(&mut *lock(&service.schedulers)) {
        task.abort();
    }
    health_task.abort();
    let mut runs = std::mem::take(&mut *lock(&service.runs));
    if tokio::time::timeout(opts.grace, drain(&mut runs))
        .await
        .is_err()
    {
        tracing::warn!("grace period over; telling running exports to stop");
        service.cancel.store(true, Ordering::SeqCst);
        if tokio::time::timeout(ABORT_WAIT, drain(&mut runs))
            .await
            .is_err()
        {
            let running: Vec<String> = lock(&service.running).policies.iter().cloned().collect();
            tracing::warn!(policies = ?running, "exports did not stop within {} s; aborting them", ABORT_WAIT.as_secs());
            runs.abort_all();
            drain(&mut runs).await;
            service.remove_leftovers(running).await;
        }
    }
    hb.abort();
    if let Some(t) = http_task {
        t.abort();
    }
    // A notifier that hangs must not keep the service from exiting.
    let _ = tokio::time::timeout(FLUSH_WAIT, service.alerter().flush()).await;
    let mut record = service.record();
    record.stopped_at = Some(Utc::now());
    record.active_jobs.clear();
    let root = service.settings().backup_root;
    let _ = tokio::task::spawn_blocking(move || write_record(&root, &record)).await;
    tracing::info!("dcb service stopped");
    Ok(())
}

fn spawn_signals(tx: mpsc::UnboundedSender<Event>) {
    let t = tx.clone();
    tokio::spawn(async move {
        if tokio::signal::ctrl_c().await.is_ok() {
            let _ = t.send(Event::Shutdown("interrupt"));
        }
    });
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let t = tx.clone();
        tokio::spawn(async move {
            if let Ok(mut term) = signal(SignalKind::terminate()) {
                term.recv().await;
                let _ = t.send(Event::Shutdown("SIGTERM"));
            }
        });
        tokio::spawn(async move {
            if let Ok(mut hup) = signal(SignalKind::hangup()) {
                while hup.recv().await.is_some() {
                    let _ = tx.send(Event::Reload("SIGHUP"));
                }
            }
        });
    }
    // A closed console window, a log-off of a console session, a system shutdown and
    // Ctrl-Break stop gracefully like Ctrl-C (Windows then allows only a few seconds).
    #[cfg(windows)]
    {
        use tokio::signal::windows::{ctrl_break, ctrl_close, ctrl_shutdown};
        let t = tx.clone();
        tokio::spawn(async move {
            if let Ok(mut s) = ctrl_close()
                && s.recv().await.is_some()
            {
                let _ = t.send(Event::Shutdown("console closed"));
            }
        });
        let t = tx.clone();
        tokio::spawn(async move {
            if let Ok(mut s) = ctrl_shutdown()
                && s.recv().await.is_some()
            {
                let _ = t.send(Event::Shutdown("system shutdown"));
            }
        });
        tokio::spawn(async move {
            if let Ok(mut s) = ctrl_break()
                && s.recv().await.is_some()
            {
                let _ = tx.send(Event::Shutdown("Ctrl-Break"));
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::export::ExportOutcome;
    use crate::policy::CollectionSpec;

    fn result(
        outcome: Result<ExportOutcome, String>,
        interrupted: bool,
        attempts: u32,
    ) -> JobResult {
        JobResult {
            spec: JobSpec {
                policy: "hot".into(),
                database: "db".into(),
                collection: CollectionSpec {
                    name: "api_logs".into(),
                    time_field: "createdAt".into(),
                    mode: crate::policy::Mode::Incremental,
                },
            },
            extent: None,
            outcome,
            elapsed: Duration::ZERO,
            attempts,
            interrupted,
            untimed_known: None,
        }
    }

    // An interrupted result is a shutdown only when one was asked for; a lock held by
    // another process is no failure; any other error is.
    #[test]
    fn verdicts() {
        let interrupted = || result(Err("export interrupted".into()), true, 1);
        assert_eq!(verdict(&interrupted(), true), Verdict::Interrupted);
        assert_eq!(verdict(&interrupted(), false), Verdict::Failed);
        let locked = result(
            Err("another dcb is running policy `hot` (lock x/.dcb.lock); not started twice".into()),
            false,
            0,
        );
        assert_eq!(verdict(&locked, false), Verdict::Locked);
        let down = result(Err("cannot connect: no server".into()), false, 0);
        assert_eq!(verdict(&down, false), Verdict::Failed);
    }

    // A run that panics still frees its policy (and its jobs) for the next tick, and
    // reaping reports the panic.
    #[tokio::test]
    async fn a_panicking_run_frees_its_policy() {
        let running: Arc<Lock<Running>> = Arc::default();
        let claim = Claim::take(&running, "hot").unwrap();
        claim.set_jobs(&["hot/db/a".into(), "hotter/db/b".into()]);
        assert!(Claim::take(&running, "hot").is_none(), "one run at a time");
        let mut runs = JoinSet::new();
        runs.spawn(async move {
            let _claim = claim;
            panic!("boom");
        });
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        let mut panicked = 0;
        while !runs.is_empty() {
            assert!(std::time::Instant::now() < deadline, "the run never ended");
            panicked += reap(&mut runs);
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert_eq!(panicked, 1);
        assert!(Claim::take(&running, "hot").is_some());
        assert_eq!(
            lock(&running).jobs.iter().collect::<Vec<_>>(),
            ["hotter/db/b"]
        );
    }

    // Alerts of removed or disabled policies, and of collections a policy dropped,
    // resolve with a message saying so; others stay.
    #[test]
    fn orphaned_alerts() {
        let known = BTreeMap::from([
            ("hot".to_string(), Known::Runs),
            ("cold".to_string(), Known::Disabled),
            ("odd".to_string(), Known::CannotRun),
        ]);
        let jobs = BTreeSet::from(["hot/db/api_logs".to_string()]);
        let active: Vec<String> = [
            "database",
            "disk:free",
            "failures:hot/db/api_logs",
            "stale:hot/db/roles",
            "failures:gone/db/x",
            "verify:cold/db/y",
            "config:gone",
            "config:odd",
            "failures:odd/db/z",
            "invalid-policy:policies/a.yaml",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        assert_eq!(
            orphans(&active, &known, &jobs),
            [
                (
                    "stale:hot/db/roles".to_string(),
                    "hot/db/roles is no longer backed up by policy `hot`".to_string()
                ),
                (
                    "failures:gone/db/x".to_string(),
                    "policy `gone` was removed".to_string()
                ),
                (
                    "verify:cold/db/y".to_string(),
                    "policy `cold` is disabled".to_string()
                ),
                (
                    "config:gone".to_string(),
                    "policy `gone` was removed".to_string()
                ),
            ]
        );
    }

    // Events under the policies folder, on the way to it, and on the config file ask
    // for a reload; others in a watched folder do not.
    #[test]
    fn watch_filter() {
        let f = Filter {
            policies: vec![PathBuf::from("/srv/dcb/policies")],
            config: Some("dcb.yaml".into()),
        };
        assert!(f.relevant(Path::new("/srv/dcb/policies/hot.yaml")));
        assert!(f.relevant(Path::new("/srv/dcb/policies")));
        assert!(f.relevant(Path::new("/srv/dcb")));
        assert!(f.relevant(Path::new("/srv/dcb/dcb.yaml")));
        assert!(!f.relevant(Path::new("/srv/dcb/backups")));
        assert!(!f.relevant(Path::new("/srv/dcb/notes.txt")));
    }
}
