//! `dcb serve`: the long-lived service. Schedules every enabled policy in its time zone
//! and runs it through the same engine as `dcb run`; hot-reloads policy files and
//! dcb.yaml (an invalid edit keeps the last valid version running); prunes after each
//! run; checks health; raises and resolves alerts; keeps a heartbeat for `dcb status`;
//! shuts down gracefully.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use chrono::{DateTime, Utc};
use tokio::sync::mpsc;
use tokio::task::{JoinHandle, JoinSet};

use crate::alert::{Alert, Alerter, EventKind};
use crate::config::{Overrides, Settings};
use crate::diag::{self, Format};
use crate::duration::HumanDuration;
use crate::export::Progress;
use crate::health::{self, Disk, Thresholds};
use crate::metrics::Metrics;
use crate::plan::{self, JobSpec};
use crate::policy::Policy;
use crate::policy::load::load_dir;
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
/// The run lock in a policy's folder, as `dcb run` and `dcb prune` take it.
const RUN_LOCK: &str = ".dcb.lock";

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

pub struct Service {
    overrides: Overrides,
    settings: RwLock<Settings>,
    /// The last valid version of each policy, by name.
    policies: Lock<BTreeMap<String, Policy>>,
    /// Policy files whose last edit was invalid.
    bad_files: Lock<BTreeSet<PathBuf>>,
    /// One scheduling task per enabled policy, with the policy it was started for.
    schedulers: Lock<BTreeMap<String, (String, JoinHandle<()>)>>,
    running: Lock<BTreeSet<String>>,
    active_jobs: Lock<BTreeSet<String>>,
    runs: Lock<JoinSet<()>>,
    metrics: Metrics,
    alerter: RwLock<Arc<Alerter>>,
    cancel: Arc<AtomicBool>,
    stopping: AtomicBool,
    started_at: DateTime<Utc>,
    http: Lock<Option<String>>,
    database_ok: AtomicBool,
    events: mpsc::UnboundedSender<Event>,
}

fn fingerprint(p: &Policy) -> String {
    format!("{p:?}")
}

fn alerts_log(settings: &Settings) -> PathBuf {
    storage::logs_dir(&settings.backup_root).join("alerts.log")
}

/// The alerts config with its file paths relative to dcb.yaml's folder.
fn alerts_config(settings: &Settings) -> crate::alert::AlertsConfig {
    match settings
        .config_file
        .as_deref()
        .and_then(std::path::Path::parent)
    {
        Some(base) => settings.config.alerts.relative_to(base),
        None => settings.config.alerts.clone(),
    }
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

    /// Load policy files and dcb.yaml again; apply what is valid, keep the rest.
    async fn reload(self: &Arc<Self>, why: &str) {
        tracing::info!(reason = why, "loading policies");
        match Settings::resolve(&self.overrides, &crate::commands::process_env) {
            Ok(new) => {
                let changed_alerts = {
                    let old = self.settings();
                    alerts_config(&old) != alerts_config(&new)
                };
                if changed_alerts {
                    match self
                        .alerter()
                        .reconfigured(&alerts_config(&new), alerts_log(&new))
                    {
                        Ok(a) => {
                            *self.alerter.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(a)
                        }
                        Err(e) => {
                            tracing::error!(error = %e, "invalid alerts configuration; keeping the previous one")
                        }
                    }
                }
                *self.settings.write().unwrap_or_else(|e| e.into_inner()) = new;
                self.alerter()
                    .resolve("config", "dcb.yaml is valid again".into())
                    .await;
            }
            Err(diags) => {
                let text = diag::render(&diags, Format::Human);
                tracing::error!("dcb.yaml is invalid; keeping the previous configuration:\n{text}");
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
        let settings = self.settings();
        let set = load_dir(&settings.policies_dir, &settings.policy_defaults());
        let bad: BTreeSet<PathBuf> = set
            .diagnostics
            .iter()
            .filter(|d| d.is_error())
            .map(|d| d.file.clone())
            .collect();
        let mut next: BTreeMap<String, Policy> = set
            .policies
            .into_iter()
            .map(|p| (p.name.clone(), p))
            .collect();
        {
            let current = lock(&self.policies);
            for (name, old) in current.iter() {
                if bad.contains(&old.file) && old.file.exists() && !next.contains_key(name) {
                    tracing::warn!(policy = %name, file = %old.file.display(), "invalid edit rejected; the last valid version keeps running");
                    next.insert(name.clone(), old.clone());
                }
            }
        }
        // Alert on newly broken files, resolve the mended ones.
        let previously_bad = std::mem::replace(&mut *lock(&self.bad_files), bad.clone());
        for file in &bad {
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
                format!("invalid-policy:{}", file.display()),
                format!("invalid policy file {}", file.display()),
                text,
                None,
            );
            self.alerter().raise(a).await;
        }
        for file in previously_bad.difference(&bad) {
            self.alerter()
                .resolve(
                    &format!("invalid-policy:{}", file.display()),
                    format!("{} is valid again", file.display()),
                )
                .await;
        }
        self.apply(next);
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
        if !lock(&self.running).insert(name.to_string()) {
            self.metrics.record_skip(name);
            tracing::warn!(policy = %name, skipped = self.metrics.skipped(name), "the previous run is still going; this tick is skipped");
            return;
        }
        let me = self.clone();
        lock(&self.runs).spawn(async move {
            me.run_policy(&policy, why).await;
            lock(&me.running).remove(&policy.name);
        });
    }

    async fn run_policy(self: &Arc<Self>, policy: &Policy, why: &str) {
        let settings = self.settings();
        let plans = match plan::compile(std::slice::from_ref(policy), &settings) {
            Ok(p) => p,
            Err(errors) => {
                let a = self.alert(
                    EventKind::Failure,
                    format!("config:{}", policy.name),
                    format!("policy {} cannot run", policy.name),
                    errors.join("; "),
                    None,
                );
                self.alerter().raise(a).await;
                return;
            }
        };
        let ids: Vec<String> = plans
            .iter()
            .flat_map(|p| p.jobs.iter().map(JobSpec::id))
            .collect();
        lock(&self.active_jobs).extend(ids.iter().cloned());
        tracing::info!(policy = %policy.name, reason = %why, "run started");
        let start = self.alert(
            EventKind::RunStart,
            format!("run:{}", policy.name),
            format!("{} started", policy.name),
            format!("{} collections ({why})", ids.len()),
            None,
        );
        self.alerter().notify(start).await;
        let none = |_: &JobSpec| -> Arc<dyn Progress> { Arc::new(()) };
        let report = runner::run_cancellable(&settings, &plans, &none, self.cancel.clone()).await;
        for id in &ids {
            lock(&self.active_jobs).remove(id);
        }
        let state = State::load(&settings.backup_root);
        let threshold = settings.config.health.failure_threshold;
        for r in &report.results {
            let id = r.spec.id();
            let now = Utc::now().timestamp() as f64;
            match &r.outcome {
                Ok(o) => {
                    self.metrics.record_run(
                        &r.spec.policy,
                        &r.spec.collection.name,
                        Some((o.documents, o.bytes)),
                        r.elapsed.as_secs_f64(),
                        now,
                    );
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
                    if settings.config.verify.after_run
                        && let (Some(archive), Some(manifest)) = (&o.archive, &o.manifest)
                    {
                        self.verify_new(&settings, &r.spec, archive, manifest).await;
                    }
                }
                Err(_) if r.interrupted => {}
                Err(e) => {
                    self.metrics.record_run(
                        &r.spec.policy,
                        &r.spec.collection.name,
                        None,
                        r.elapsed.as_secs_f64(),
                        now,
                    );
                    let failures = state
                        .collections
                        .get(&id)
                        .map_or(1, |c| c.consecutive_failures);
                    if failures >= threshold {
                        let a = self.alert(
                            EventKind::Failure,
                            format!("failures:{id}"),
                            format!("{id}: {failures} consecutive failures"),
                            e.clone(),
                            Some(&r.spec),
                        );
                        self.alerter().raise(a).await;
                    }
                }
            }
        }
        if !self.cancel.load(Ordering::SeqCst) {
            self.prune(policy, &settings);
        }
        self.heartbeat();
    }

    /// Read a new archive back; alert when it is not what its manifest says.
    async fn verify_new(
        &self,
        settings: &Settings,
        spec: &JobSpec,
        archive: &std::path::Path,
        manifest: &crate::export::manifest::Manifest,
    ) {
        let id = spec.id();
        let (path, m) = (archive.to_path_buf(), manifest.clone());
        let identity = settings.identity_file.clone();
        let Ok(report) = tokio::task::spawn_blocking(move || {
            // A backup host may hold only the public recipients: then the file hash.
            let mut keys = match identity {
                Some(file) => crate::crypto::Keys::load(&file).unwrap_or_else(|e| {
                    tracing::warn!(error = %e, "cannot load the identity file; checking file hashes only");
                    crate::crypto::Keys::default()
                }),
                None => crate::crypto::Keys::default(),
            };
            keys.hash_only_when_locked = true;
            crate::verify::check(&path, Some(&m), 0, &keys)
        })
        .await
        else {
            return;
        };
        let record = crate::verify::log::record(&settings.backup_root, &report);
        let key = format!("verify:{id}");
        if report.ok() {
            tracing::debug!(archive = %record.archive, "new archive verified");
            self.alerter()
                .resolve(&key, format!("{id}: the new archive verified"))
                .await;
        } else {
            tracing::error!(archive = %record.archive, problems = ?record.problems, "new archive is corrupt");
            let a = self.alert(
                EventKind::Failure,
                key,
                format!("{id}: the new archive is corrupt"),
                format!("{}: {}", record.archive, record.problems.join("; ")),
                Some(spec),
            );
            self.alerter().raise(a).await;
        }
    }

    /// Retention for one policy, after its run.
    fn prune(&self, policy: &Policy, settings: &Settings) {
        let dir = storage::policy_dir(&settings.backup_root, &policy.name);
        let _locks = match crate::commands::prune::lock_for_prune(&dir) {
            Ok(locks) => locks,
            Err((true, why)) => {
                tracing::info!(policy = %policy.name, "retention skipped until the next run: {why}");
                return;
            }
            Err((false, why)) => {
                tracing::warn!(policy = %policy.name, "retention skipped: {why}");
                return;
            }
        };
        let found: Vec<_> = crate::export::manifest::scan(&settings.backup_root)
            .into_iter()
            .filter(|f| f.manifest.policy == policy.name)
            .collect();
        let plan = retention::compute(&found, std::slice::from_ref(policy), Utc::now());
        let report = retention::apply(&plan);
        crate::audit::prune(&settings.backup_root, &plan, &report);
        for (path, e) in &report.errors {
            tracing::error!(archive = %path.display(), error = %e, "retention could not delete an archive");
        }
    }

    /// Run the policies whose last success predates their previous scheduled time.
    fn catch_up(self: &Arc<Self>) {
        let settings = self.settings();
        let state = State::load(&settings.backup_root);
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
                let id = crate::state::job_id(&p.name, &db, &c.name);
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
            host: status::hostname(),
            started_at: self.started_at,
            heartbeat_at: Utc::now(),
            stopped_at: None,
            active_jobs: lock(&self.active_jobs).iter().cloned().collect(),
            http: lock(&self.http).clone(),
        }
    }

    fn heartbeat(&self) {
        let root = self.settings().backup_root;
        if let Err(e) = status::write_service(&root, &self.record()) {
            tracing::warn!(error = %e, "cannot write the service record");
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

    async fn health_check(self: &Arc<Self>, db: &mut Option<mongodb::Client>) {
        let settings = self.settings();
        let policies: Vec<Policy> = lock(&self.policies).values().cloned().collect();
        // One policy that cannot compile must not hide the others from the checks.
        let (plans, errors) = plan::compile_each(&policies, &settings);
        for (policy, error) in errors {
            tracing::debug!(policy = %policy, "not health-checked: {error}");
        }
        let jobs: Vec<(Policy, Vec<JobSpec>)> =
            plans.into_iter().map(|p| (p.policy, p.jobs)).collect();
        let database = match db {
            Some(c) => ping(c).await,
            None => match crate::mongo::connect(&settings, Duration::from_secs(5)).await {
                Ok(c) => {
                    let r = ping(&c).await;
                    *db = Some(c);
                    r
                }
                Err(e) => Err(e),
            },
        };
        self.database_ok.store(database.is_ok(), Ordering::SeqCst);
        let root = &settings.backup_root;
        let _ = storage::create_dir(root);
        let disk = match (fs4::available_space(root), fs4::total_space(root)) {
            (Ok(available), Ok(total)) => Some(Disk { available, total }),
            _ => None,
        };
        let h = &settings.config.health;
        let thresholds = Thresholds {
            failure_threshold: h.failure_threshold,
            min_free_percent: h.min_free_percent,
            min_free_bytes: h.min_free_mb.saturating_mul(1_048_576),
        };
        let state = State::load(root);
        let archives = crate::export::manifest::scan(root);
        let inputs = health::Inputs {
            jobs: &jobs,
            state: &state,
            archives: &archives,
            disk,
            database,
            started_at: self.started_at,
            now: Utc::now(),
        };
        for f in health::evaluate(&inputs, &thresholds) {
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

    fn status_json(&self) -> String {
        let settings = self.settings();
        let policies: Vec<Policy> = lock(&self.policies).values().cloned().collect();
        let mut st = status::gather(&settings, &policies);
        // Live, not from the last heartbeat.
        st.is_running = true;
        st.active_jobs = lock(&self.active_jobs).len();
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

/// Watch the policies folder and the config file's folder; any change asks for a
/// reload (debounced by the service loop).
fn watch(
    settings: &Settings,
    tx: mpsc::UnboundedSender<Event>,
) -> Option<notify::RecommendedWatcher> {
    use notify::{EventKind as K, RecursiveMode, Watcher};
    let config_name = settings
        .config_file
        .as_ref()
        .and_then(|p| p.file_name())
        .map(|n| n.to_os_string());
    let policies_dir = settings.policies_dir.clone();
    let handler = move |res: notify::Result<notify::Event>| {
        let Ok(ev) = res else { return };
        if matches!(ev.kind, K::Access(_)) {
            return;
        }
        let relevant = ev.paths.iter().any(|p| {
            p.starts_with(&policies_dir)
                || p.canonicalize()
                    .ok()
                    .is_some_and(|c| policies_dir.canonicalize().is_ok_and(|d| c.starts_with(d)))
                || config_name
                    .as_deref()
                    .is_some_and(|n| p.file_name() == Some(n))
        });
        if relevant || ev.paths.is_empty() {
            let _ = tx.send(Event::Reload("file change"));
        }
    };
    let mut watcher = match notify::recommended_watcher(handler) {
        Ok(w) => w,
        Err(e) => {
            tracing::error!(error = %e, "cannot watch the policy files; reload with SIGHUP or a restart");
            return None;
        }
    };
    let mut dirs = vec![settings.policies_dir.clone()];
    if let Some(dir) = settings.config_file.as_ref().and_then(|p| p.parent()) {
        dirs.push(if dir.as_os_str().is_empty() {
            PathBuf::from(".")
        } else {
            dir.to_path_buf()
        });
    }
    for dir in dirs {
        if let Err(e) = watcher.watch(&dir, RecursiveMode::NonRecursive) {
            tracing::error!(dir = %dir.display(), error = %e, "cannot watch folder");
        }
    }
    Some(watcher)
}

/// Run the service until asked to stop. Returns the process exit status.
pub async fn serve(settings: Settings, opts: Options) -> crate::commands::Exit {
    use crate::commands::Exit;
    let root = settings.backup_root.clone();
    if let Some(other) = status::read_service(&root)
        .filter(|s| s.is_alive(Utc::now()) && s.pid != std::process::id())
    {
        eprintln!(
            "error: a dcb service is already running for {} (pid {})",
            root.display(),
            other.pid
        );
        return Exit::Config;
    }
    if let Err(e) = storage::create_dir(&storage::logs_dir(&root)) {
        eprintln!(
            "error: cannot create {}: {e}",
            storage::logs_dir(&root).display()
        );
        return Exit::Failed;
    }
    let _ = std::fs::remove_file(status::stop_request_path(&root));
    let alerter = match Alerter::new(&alerts_config(&settings), alerts_log(&settings)) {
        Ok(a) => a,
        Err(e) => {
            eprintln!("error: invalid alerts configuration: {e}");
            return Exit::Config;
        }
    };
    let (tx, mut rx) = mpsc::unbounded_channel();
    let service = Arc::new(Service {
        overrides: opts.overrides.clone(),
        settings: RwLock::new(settings.clone()),
        policies: Lock::default(),
        bad_files: Lock::default(),
        schedulers: Lock::default(),
        running: Lock::default(),
        active_jobs: Lock::default(),
        runs: Lock::new(JoinSet::new()),
        metrics: Metrics::default(),
        alerter: RwLock::new(Arc::new(alerter)),
        cancel: Arc::new(AtomicBool::new(false)),
        stopping: AtomicBool::new(false),
        started_at: Utc::now(),
        http: Lock::default(),
        database_ok: AtomicBool::new(true),
        events: tx.clone(),
    });
    service.reload("start").await;
    if lock(&service.policies).is_empty() {
        tracing::warn!(dir = %settings.policies_dir.display(), "no valid policies yet; waiting for policy files");
    }
    let listen = opts
        .http
        .clone()
        .or_else(|| settings.config.http.listen.clone());
    let mut http_task = None;
    if let Some(addr) = listen {
        match crate::http::spawn(&addr, service.clone() as Arc<dyn crate::http::Source>).await {
            Ok((bound, task)) => {
                tracing::info!(%bound, "admin endpoint listening");
                *lock(&service.http) = Some(bound.to_string());
                http_task = Some(task);
            }
            Err(e) => {
                eprintln!("error: cannot listen on {addr}: {e}");
                return Exit::Config;
            }
        }
    }
    service.heartbeat();
    service.catch_up();
    let _watcher = watch(&settings, tx.clone());

    // Heartbeat, and `dcb stop` requests.
    let hb = {
        let me = service.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(1));
            let mut n = 0u64;
            loop {
                tick.tick().await;
                n += 1;
                if n.is_multiple_of(status::HEARTBEAT.as_secs().max(1)) {
                    me.heartbeat();
                }
                let stop = status::stop_request_path(&me.settings().backup_root);
                if stop.exists() {
                    let _ = std::fs::remove_file(&stop);
                    let _ = me.events.send(Event::Shutdown("dcb stop"));
                }
            }
        })
    };
    let health_task = {
        let me = service.clone();
        tokio::spawn(async move {
            let mut client = None;
            loop {
                let interval = me
                    .settings()
                    .config
                    .health
                    .interval
                    .parse::<HumanDuration>()
                    .map(|d| d.0)
                    .unwrap_or(Duration::from_secs(300))
                    .max(Duration::from_secs(1));
                tokio::time::sleep(interval).await;
                me.health_check(&mut client).await;
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
            let running: Vec<String> = lock(&service.running).iter().cloned().collect();
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
    let _ = status::write_service(&service.settings().backup_root, &record);
    tracing::info!("dcb service stopped");
    Exit::Ok
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
