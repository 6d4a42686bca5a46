//! Alerts: findings and events, throttled by a cool-down, written to
//! `<backupRoot>/logs/alerts.log` and delivered to the configured notifiers in the
//! background (timed out, retried; a failing notifier never blocks or fails a backup).

pub mod config;
pub mod deliver;

use std::collections::{HashMap, HashSet};
use std::io::Write as _;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use serde::Serialize;
use tokio::task::JoinHandle;

pub use config::{AlertsConfig, EventKind, NotifierConfig, SmtpTls};

/// Delivery attempts per notifier and alert.
pub const ATTEMPTS: u32 = 3;
/// The pause after each failed attempt but the last.
const BACKOFF: [Duration; 2] = [Duration::from_secs(1), Duration::from_secs(2)];

/// One finding or event, as alerts.log records it and webhooks receive it.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Alert {
    pub kind: EventKind,
    /// The condition, e.g. `failures:hot/dcMes/api_logs`: repeats and resolutions
    /// are matched on it.
    pub key: String,
    pub title: String,
    pub message: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub policy: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub collection: Option<String>,
    pub time: DateTime<Utc>,
    pub host: String,
}

impl Alert {
    /// An alert stamped with the current time and this machine's host name.
    pub fn new(
        kind: EventKind,
        key: impl Into<String>,
        title: impl Into<String>,
        message: impl Into<String>,
    ) -> Alert {
        Alert {
            kind,
            key: key.into(),
            title: title.into(),
            message: message.into(),
            policy: None,
            collection: None,
            time: Utc::now(),
            host: crate::status::hostname(),
        }
    }
}

/// What the alerter remembers across alerts (and across reconfiguration).
#[derive(Default)]
struct Memory {
    /// When each key was last raised (and not throttled).
    last_raised: HashMap<String, Instant>,
    /// Keys raised and not resolved since.
    active: HashSet<String>,
    throttled: u64,
}

/// State shared by an alerter and its reconfigured successors.
#[derive(Default)]
struct Shared {
    memory: Mutex<Memory>,
    deliveries: Mutex<Vec<JoinHandle<()>>>,
    failed: AtomicU64,
}

/// Raises, resolves and announces alerts. Cheap to clone; clones share the
/// cool-down memory and the deliveries in flight.
#[derive(Clone)]
pub struct Alerter {
    notifiers: Arc<[Arc<NotifierConfig>]>,
    cooldown: Duration,
    log_path: Arc<PathBuf>,
    shared: Arc<Shared>,
    client: reqwest::Client,
}

impl Alerter {
    /// An alerter for `config`, appending to `alerts_log`. An invalid config comes
    /// back as one message naming each bad field (never a secret or URL).
    pub fn new(config: &AlertsConfig, alerts_log: PathBuf) -> Result<Alerter, String> {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let client = reqwest::Client::builder()
            .timeout(deliver::TIMEOUT)
            .connect_timeout(deliver::TIMEOUT)
            .user_agent(concat!("dcb/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| format!("cannot build the HTTP client: {e}"))?;
        Alerter::build(config, alerts_log, Arc::default(), client)
    }

    /// An alerter with a new configuration that keeps this one's memory: active
    /// conditions still resolve, cool-downs still run, and `flush` still waits for
    /// deliveries the old configuration started.
    pub fn reconfigured(
        &self,
        config: &AlertsConfig,
        alerts_log: PathBuf,
    ) -> Result<Alerter, String> {
        Alerter::build(config, alerts_log, self.shared.clone(), self.client.clone())
    }

    fn build(
        config: &AlertsConfig,
        alerts_log: PathBuf,
        shared: Arc<Shared>,
        client: reqwest::Client,
    ) -> Result<Alerter, String> {
        let problems = config.problems();
        if !problems.is_empty() {
            return Err(problems
                .into_iter()
                .map(|(pointer, msg)| format!("alerts{pointer}: {msg}"))
                .collect::<Vec<_>>()
                .join("; "));
        }
        let cooldown = config
            .cooldown
            .parse::<crate::duration::HumanDuration>()
            .map_err(|e| format!("alerts/cooldown: {e}"))?
            .as_std();
        Ok(Alerter {
            notifiers: config.notifiers.iter().cloned().map(Arc::new).collect(),
            cooldown,
            log_path: Arc::new(alerts_log),
            shared,
            client,
        })
    }

    fn memory(&self) -> MutexGuard<'_, Memory> {
        self.shared.memory.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A problem. A repeat of the same key within the cool-down is held back (counted,
    /// neither logged nor sent); otherwise the alert is appended to alerts.log, sent
    /// to the notifiers that take its kind, and its key stays active until resolved.
    pub async fn raise(&self, alert: Alert) {
        {
            let mut m = self.memory();
            let now = Instant::now();
            let cooldown = self.cooldown;
            m.last_raised
                .retain(|_, t| now.duration_since(*t) < cooldown);
            if m.last_raised.contains_key(&alert.key) {
                m.throttled += 1;
                tracing::debug!(key = %alert.key, "alert held back by the cool-down");
                return;
            }
            m.last_raised.insert(alert.key.clone(), now);
            m.active.insert(alert.key.clone());
        }
        tracing::warn!(key = %alert.key, title = %alert.title, "alert");
        self.log(&alert);
        self.dispatch(alert);
    }

    /// The condition `key` cleared: if it had been raised, log and send a `resolved`
    /// alert (and let the next failure through at once); otherwise do nothing.
    pub async fn resolve(&self, key: &str, message: String) {
        {
            let mut m = self.memory();
            if !m.active.remove(key) {
                return;
            }
            m.last_raised.remove(key);
        }
        let alert = Alert::new(
            EventKind::Resolved,
            key,
            format!("resolved: {key}"),
            message,
        );
        tracing::info!(key = %alert.key, "alert resolved");
        self.log(&alert);
        self.dispatch(alert);
    }

    /// An event that is not a problem (`success`, `runStart`): sent to the notifiers
    /// that asked for it (e.g. a dead-man's-switch URL), never throttled, and not
    /// written to alerts.log (which records problems and their resolution only).
    pub async fn notify(&self, alert: Alert) {
        self.dispatch(alert);
    }

    /// Keys raised and not yet resolved, sorted.
    pub fn active(&self) -> Vec<String> {
        let mut keys: Vec<String> = self.memory().active.iter().cloned().collect();
        keys.sort();
        keys
    }

    /// Alerts held back by the cool-down so far.
    pub fn throttled(&self) -> u64 {
        self.memory().throttled
    }

    /// Deliveries given up on after every attempt failed.
    pub fn failed_deliveries(&self) -> u64 {
        self.shared.failed.load(Ordering::Relaxed)
    }

    /// Wait for the deliveries in flight when called (tests, graceful shutdown). At
    /// most [`ATTEMPTS`] × [`deliver::TIMEOUT`] plus the back-off (33 s).
    pub async fn flush(&self) {
        let handles = std::mem::take(
            &mut *self
                .shared
                .deliveries
                .lock()
                .unwrap_or_else(|e| e.into_inner()),
        );
        for h in handles {
            let _ = h.await;
        }
    }

    fn log(&self, alert: &Alert) {
        let Ok(line) = serde_json::to_string(alert) else {
            return;
        };
        let path = self.log_path.as_path();
        let result = (|| -> std::io::Result<()> {
            if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
                crate::storage::create_dir(dir)?;
            }
            crate::storage::open_append(path)?.write_all(format!("{line}\n").as_bytes())
        })();
        if let Err(e) = result {
            tracing::warn!(error = %e, file = %path.display(), "cannot append to the alerts log");
        }
    }

    /// One background task per notifier that takes this kind of alert.
    fn dispatch(&self, alert: Alert) {
        let alert = Arc::new(alert);
        let mut deliveries = self
            .shared
            .deliveries
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        deliveries.retain(|h| !h.is_finished());
        for n in self
            .notifiers
            .iter()
            .filter(|n| n.events().contains(&alert.kind))
        {
            let task = deliver_with_retries(
                self.client.clone(),
                n.clone(),
                alert.clone(),
                self.shared.clone(),
            );
            // Detached on drop (not aborted): a replaced alerter's deliveries finish.
            deliveries.push(tokio::spawn(task));
        }
    }
}

async fn deliver_with_retries(
    client: reqwest::Client,
    n: Arc<NotifierConfig>,
    alert: Arc<Alert>,
    shared: Arc<Shared>,
) {
    for attempt in 1..=ATTEMPTS {
        let result = tokio::time::timeout(deliver::TIMEOUT, deliver::send(&client, &n, &alert))
            .await
            .unwrap_or_else(|_| {
                Err(deliver::Failure {
                    message: format!("no answer within {} s", deliver::TIMEOUT.as_secs()),
                    retry: true,
                })
            });
        match result {
            Ok(()) => {
                tracing::debug!(notifier = %n.label(), key = %alert.key, attempt, "alert delivered");
                return;
            }
            Err(f) if f.retry && attempt < ATTEMPTS => {
                tracing::debug!(
                    notifier = %n.label(), kind = %n.kind(), target = %n.target(),
                    attempt, error = %f.message, "alert delivery failed; retrying"
                );
                tokio::time::sleep(BACKOFF[attempt as usize - 1]).await;
            }
            Err(f) => {
                shared.failed.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(
                    notifier = %n.label(), kind = %n.kind(), target = %n.target(),
                    key = %alert.key, attempts = attempt, error = %f.message,
                    "alert could not be delivered"
                );
                return;
            }
        }
    }
}
