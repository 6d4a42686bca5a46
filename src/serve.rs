//! `dcb serve`, the long-lived service: the wiring. It schedules every enabled policy
//! ([`crate::scheduler`]) and runs it with the same engine as `dcb run`
//! ([`runs`]); hot-reloads policy files and dcb.yaml ([`reload`], [`watch`],
//! [`signals`]); checks health ([`health`]); keeps a heartbeat for `dcb status`;
//! serves the admin endpoint; and shuts down gracefully. Every outcome is an event
//! (`events`). File work runs on the blocking pool, never on async workers.

mod drills;
mod health;
mod reload;
mod runs;
mod signals;
mod watch;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use chrono::{DateTime, Utc};
use tokio::sync::mpsc;

use crate::alert::Alerter;
use crate::config::{Overrides, Settings};
use crate::events::Emitter;
use crate::metrics::Metrics;
use crate::policy::Policy;
use crate::scheduler::{self, Scheduler, lock};
use crate::status::{self, ServiceRecord};
use crate::storage;

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

/// Why the service could not start.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("a dcb service is already running for {} (pid {pid})", root.display())]
    AlreadyRunning { root: PathBuf, pid: u32 },
    #[error("cannot create {path}: {1}", path = .0.display())]
    Logs(PathBuf, std::io::Error),
    #[error("invalid alerts configuration: {0}")]
    Alerts(#[from] crate::alert::AlertsError),
    #[error("cannot listen on {0}: {1}")]
    Listen(String, std::io::Error),
    #[error("cannot read the admin endpoint's token file {path}: {1}", path = .0.display())]
    HttpToken(PathBuf, std::io::Error),
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
enum Wake {
    Reload(&'static str),
    Shutdown(&'static str),
}

/// Where alerts go, and the cool-down memory they share across reloads.
fn alerts_log(settings: &Settings) -> PathBuf {
    storage::logs_dir(&settings.backup_root).join("alerts.log")
}

struct Service {
    overrides: Overrides,
    settings: RwLock<Settings>,
    /// The last valid version of each policy, by name.
    policies: Mutex<BTreeMap<String, Policy>>,
    /// Policy files whose last edit was invalid, with their fingerprint.
    bad_files: Mutex<BTreeMap<PathBuf, String>>,
    /// The diagnostics of dcb.yaml while it is invalid.
    bad_config: Mutex<Option<String>>,
    /// Enabled policies that do not compile, with the reason.
    uncompiled: Mutex<BTreeMap<String, String>>,
    scheduler: Scheduler,
    metrics: Arc<Metrics>,
    alerter: Arc<RwLock<Arc<Alerter>>>,
    /// Set when exports must stop (the grace period of a stop is over).
    cancel: Arc<AtomicBool>,
    started_at: DateTime<Utc>,
    http: Mutex<Option<String>>,
    database_ok: AtomicBool,
    wake: mpsc::UnboundedSender<Wake>,
    watch: Mutex<watch::Watch>,
}

impl Service {
    fn settings(&self) -> Settings {
        self.settings
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    fn replace_settings(&self, new: Settings) {
        *self.settings.write().unwrap_or_else(|e| e.into_inner()) = new;
    }

    fn alerter(&self) -> Arc<Alerter> {
        self.alerter
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    fn replace_alerter(&self, new: Alerter) {
        *self.alerter.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(new);
    }

    /// Where the service's events go: the state, the audit log, the metrics, the
    /// alerts (through the current alerter) and the log.
    fn emitter(&self) -> Emitter {
        let alerter = self.alerter.clone();
        let current: Arc<dyn Fn() -> Arc<Alerter> + Send + Sync> =
            Arc::new(move || alerter.read().unwrap_or_else(|e| e.into_inner()).clone());
        Emitter::new(&self.settings())
            .with_metrics(self.metrics.clone())
            .with_alerts(current)
    }

    fn record(&self) -> ServiceRecord {
        ServiceRecord {
            pid: std::process::id(),
            host: crate::host::hostname(),
            started_at: self.started_at,
            heartbeat_at: Utc::now(),
            stopped_at: None,
            active_jobs: self.scheduler.active_jobs(),
            http: lock(&self.http).clone(),
        }
    }

    async fn heartbeat(&self) {
        let (root, record) = (self.settings().backup_root, self.record());
        let _ = tokio::task::spawn_blocking(move || write_record(&root, &record)).await;
    }

    /// The state, read off the async workers.
    async fn load_state(&self) -> crate::state::State {
        let settings = self.settings();
        tokio::task::spawn_blocking(move || {
            crate::state::State::load(&settings.backup_root, &settings.target())
        })
        .await
        .unwrap_or_default()
    }

    /// Watch the folders the current settings name; true when one is watched now that
    /// was not before (it appeared, or was made again), so a reload must look at it.
    fn ensure_watches(&self) -> bool {
        let settings = self.settings();
        lock(&self.watch).ensure(&settings, &self.overrides)
    }
}

fn write_record(root: &Path, record: &ServiceRecord) {
    if let Err(e) = status::write_service(root, record) {
        tracing::warn!(error = %e, "cannot write the service record");
    }
}

impl crate::http::Source for Service {
    fn healthy(&self) -> bool {
        self.database_ok.load(Ordering::SeqCst) && !self.scheduler.is_stopping()
    }

    /// Reads the state and the archives: called on the blocking pool.
    fn status_json(&self) -> String {
        let settings = self.settings();
        let policies: Vec<Policy> = lock(&self.policies).values().cloned().collect();
        let mut st = status::gather(&settings, &policies);
        // Live, not from the last heartbeat.
        st.is_running = true;
        st.active_jobs = self.scheduler.active_jobs().len();
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

    /// Reads the state, the archives and the logs: called on the blocking pool.
    fn page_html(&self, accept_language: Option<&str>) -> String {
        let settings = self.settings();
        let policies: Vec<Policy> = lock(&self.policies).values().cloned().collect();
        let live = crate::page::gather::Live {
            running: true,
            active_alerts: self
                .alerter()
                .active()
                .iter()
                .map(|k| k.to_string())
                .collect(),
        };
        let page = crate::page::gather::gather(&settings, &policies, live, Utc::now());
        crate::page::render(
            &page,
            crate::page::Lang::from_accept_language(accept_language),
        )
    }
}

/// Run the service until asked to stop.
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
    let alerter =
        Alerter::new(&settings.alerts, alerts_log(&settings)).map_err(ServeError::Alerts)?;
    let (tx, mut rx) = mpsc::unbounded_channel();
    let service = Arc::new(Service {
        overrides: opts.overrides.clone(),
        settings: RwLock::new(settings.clone()),
        policies: Mutex::default(),
        bad_files: Mutex::default(),
        bad_config: Mutex::default(),
        uncompiled: Mutex::default(),
        scheduler: Scheduler::default(),
        metrics: Arc::default(),
        alerter: Arc::new(RwLock::new(Arc::new(alerter))),
        cancel: Arc::new(AtomicBool::new(false)),
        started_at: Utc::now(),
        http: Mutex::default(),
        // Unknown until the first health check, which runs at once.
        database_ok: AtomicBool::new(false),
        wake: tx.clone(),
        watch: Mutex::new(watch::Watch::new(tx.clone())),
    });
    // Watch before reading, so no edit in between is missed.
    let me = service.clone();
    let _ = tokio::task::spawn_blocking(move || me.ensure_watches()).await;
    service.reload("start").await;
    if lock(&service.policies).is_empty() {
        tracing::warn!(dir = %settings.policies_dir.display(), "no valid policies yet; waiting for policy files");
    }
    let mut http_task = None;
    if let Some(addr) = opts.http.clone().or_else(|| settings.http_listen.clone()) {
        let source = service.clone() as Arc<dyn crate::http::Source>;
        let token = match &settings.http_token {
            Some(t) => t.read().map_err(|e| match t {
                crate::config::HttpToken::File(p) => ServeError::HttpToken(p.clone(), e),
                crate::config::HttpToken::Value(_) => ServeError::Listen(addr.clone(), e),
            })?,
            None => None,
        };
        if let Some(t) = &token {
            crate::redact::remember(t);
        }
        let (bound, task) = crate::http::spawn(&addr, source, token)
            .await
            .map_err(|e| ServeError::Listen(addr, e))?;
        tracing::info!(%bound, "admin endpoint listening");
        *lock(&service.http) = Some(bound.to_string());
        http_task = Some(task);
    }
    service.heartbeat().await;
    let state = service.load_state().await;
    service.seed_metrics(&state);
    service.catch_up(&state);
    let housekeeping = spawn_housekeeping(service.clone());
    let health_task = spawn_health(service.clone());
    let drills_task = drills::spawn_drills(service.clone());
    let reverify_task = drills::spawn_reverify(service.clone());
    signals::spawn(tx.clone());
    tracing::info!(
        pid = std::process::id(),
        policies = lock(&service.policies).len(),
        "dcb service started"
    );

    let reason = loop {
        match rx.recv().await {
            Some(Wake::Reload(why)) => {
                // Debounce: editors save in several steps.
                let mut shutdown = None;
                loop {
                    match tokio::time::timeout(DEBOUNCE, rx.recv()).await {
                        Ok(Some(Wake::Reload(_))) => continue,
                        Ok(Some(Wake::Shutdown(r))) => {
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
                    let _ = tx.send(Wake::Reload("newly watched folder"));
                }
            }
            Some(Wake::Shutdown(r)) => break r,
            None => break "channel closed",
        }
    };

    tracing::info!(reason, grace = ?opts.grace, "stopping: no new runs; waiting for running exports");
    let mut runs = service.scheduler.stop();
    health_task.abort();
    drills_task.abort();
    reverify_task.abort();
    if tokio::time::timeout(opts.grace, scheduler::drain(&mut runs))
        .await
        .is_err()
    {
        tracing::warn!("grace period over; telling running exports to stop");
        service.cancel.store(true, Ordering::SeqCst);
        if tokio::time::timeout(ABORT_WAIT, scheduler::drain(&mut runs))
            .await
            .is_err()
        {
            let running = service.scheduler.running_policies();
            tracing::warn!(policies = ?running, "exports did not stop within {} s; aborting them", ABORT_WAIT.as_secs());
            runs.abort_all();
            scheduler::drain(&mut runs).await;
            service.remove_leftovers(running).await;
        }
    }
    housekeeping.abort();
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

/// Every second: reap finished runs; every heartbeat interval, the service record and
/// a look for folders to watch; and `dcb stop` requests.
fn spawn_housekeeping(me: Arc<Service>) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        let mut n = 0u64;
        loop {
            tick.tick().await;
            n += 1;
            me.scheduler.reap();
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
                let _ = me.wake.send(Wake::Shutdown("dcb stop"));
            }
            if appeared {
                let _ = me.wake.send(Wake::Reload("newly watched folder"));
            }
        }
    })
}

/// The health checks: at once (database and disk only), then every interval in full.
fn spawn_health(me: Arc<Service>) -> tokio::task::JoinHandle<()> {
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
}
