//! Alerts: findings and events, throttled by a cool-down, written to
//! `<backupRoot>/logs/alerts.log` and delivered to the configured notifiers in the
//! background (timed out, retried; a failing notifier never blocks or fails a backup).
//! Which conditions are active, and when each was last raised, survive a restart in
//! `alerts-state.json` beside the log.

pub mod deliver;
pub mod key;

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use chrono::{DateTime, TimeDelta, Utc};
use serde::{Deserialize, Serialize};
use tokio::task::JoinHandle;

pub use crate::config::alerts::{AlertsConfig, EventKind, NotifierConfig, SmtpTls};
pub use key::AlertKey;

/// Delivery attempts per notifier and alert.
pub const ATTEMPTS: u32 = 3;
/// The pause after each failed attempt but the last.
const BACKOFF: [Duration; 2] = [Duration::from_secs(1), Duration::from_secs(2)];
/// The alerter's memory on disk, beside alerts.log.
pub const STATE_FILE: &str = "alerts-state.json";

/// Where the alerter whose log is `alerts_log` keeps its memory.
pub fn state_path(alerts_log: &Path) -> PathBuf {
    alerts_log.with_file_name(STATE_FILE)
}

/// One finding or event, as alerts.log records it and webhooks receive it.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Alert {
    pub kind: EventKind,
    /// The condition, e.g. `failures:hot/dcMes/api_logs`: repeats and resolutions
    /// are matched on it.
    pub key: AlertKey,
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
        key: AlertKey,
        title: impl Into<String>,
        message: impl Into<String>,
    ) -> Alert {
        Alert {
            kind,
            key,
            title: title.into(),
            message: message.into(),
            policy: None,
            collection: None,
            time: Utc::now(),
            host: crate::host::hostname(),
        }
    }
}

/// An alerts configuration that cannot be used: each problem names its field (never a
/// secret or a URL).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}", .0.join("; "))]
pub struct AlertsError(pub Vec<String>);

/// What the alerter remembers across alerts, reconfiguration and restarts.
#[derive(Default)]
struct Memory {
    /// When each key was last raised (and not throttled). Wall-clock time, so that it
    /// means the same after a restart.
    last_raised: HashMap<String, DateTime<Utc>>,
    /// Keys raised and not resolved since.
    active: HashSet<String>,
    throttled: u64,
}

/// The saved form of [`Memory`].
#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Saved {
    #[serde(default)]
    active: BTreeSet<String>,
    #[serde(default)]
    last_raised: BTreeMap<String, DateTime<Utc>>,
}

impl Memory {
    /// The saved memory at `path`; empty when missing, and (with a warning) when
    /// unreadable: alerts then start afresh rather than not at all.
    fn load(path: &Path) -> Memory {
        let saved = match std::fs::read(path) {
            Ok(bytes) => serde_json::from_slice::<Saved>(&bytes).unwrap_or_else(|e| {
                tracing::warn!(file = %path.display(), error = %e, "the alerts state is corrupt; starting without it");
                Saved::default()
            }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Saved::default(),
            Err(e) => {
                tracing::warn!(file = %path.display(), error = %e, "cannot read the alerts state; starting without it");
                Saved::default()
            }
        };
        Memory {
            last_raised: saved.last_raised.into_iter().collect(),
            active: saved.active.into_iter().collect(),
            throttled: 0,
        }
    }

    fn to_bytes(&self) -> Vec<u8> {
        let saved = Saved {
            active: self.active.iter().cloned().collect(),
            last_raised: self
                .last_raised
                .iter()
                .map(|(k, t)| (k.clone(), *t))
                .collect(),
        };
        serde_json::to_vec_pretty(&saved).unwrap_or_default()
    }
}

/// A file write the alerter needs done.
enum Write {
    Append { path: Arc<PathBuf>, line: String },
    Save { path: PathBuf, bytes: Vec<u8> },
    Done(tokio::sync::oneshot::Sender<()>),
}

impl Write {
    fn perform(self) {
        match self {
            Write::Append { path, line } => {
                let result = (|| -> std::io::Result<()> {
                    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
                        crate::storage::create_dir(dir)?;
                    }
                    crate::storage::open_append(&path)?.write_all(format!("{line}\n").as_bytes())
                })();
                if let Err(e) = result {
                    tracing::warn!(error = %e, file = %path.display(), "cannot append to the alerts log");
                }
            }
            Write::Save { path, bytes } => {
                if let Err(e) = crate::storage::write_atomic(&path, &bytes) {
                    tracing::warn!(error = %e, file = %path.display(), "cannot save the alerts state");
                }
            }
            Write::Done(tx) => {
                let _ = tx.send(());
            }
        }
    }
}

/// Does the alerter's file writes on a thread of its own, in the order the alerts
/// happened, so no async worker waits for the disk.
struct Writer {
    tx: Mutex<Option<std::sync::mpsc::Sender<Write>>>,
}

impl Writer {
    fn start() -> Writer {
        let (tx, rx) = std::sync::mpsc::channel::<Write>();
        let thread = std::thread::Builder::new()
            .name("dcb-alerts".into())
            .spawn(move || rx.into_iter().for_each(Write::perform));
        if let Err(e) = &thread {
            tracing::warn!(error = %e, "cannot start the alerts writer; writing inline");
        }
        Writer {
            tx: Mutex::new(thread.ok().map(|_| tx)),
        }
    }

    fn send(&self, w: Write) {
        let tx = self.tx.lock().unwrap_or_else(|e| e.into_inner());
        match tx.as_ref() {
            Some(tx) => {
                if let Err(std::sync::mpsc::SendError(w)) = tx.send(w) {
                    w.perform();
                }
            }
            None => w.perform(),
        }
    }
}

/// State shared by an alerter and its reconfigured successors.
struct Shared {
    memory: Mutex<Memory>,
    deliveries: Mutex<Vec<JoinHandle<()>>>,
    failed: AtomicU64,
    writer: Writer,
}

impl Shared {
    fn new(memory: Memory) -> Shared {
        Shared {
            memory: Mutex::new(memory),
            deliveries: Mutex::default(),
            failed: AtomicU64::new(0),
            writer: Writer::start(),
        }
    }
}

/// A notifier with what its configuration names on disk, read once.
#[derive(Debug)]
struct Notifier {
    config: NotifierConfig,
    /// The PEM of an email notifier's `caFile`.
    ca_pem: Option<Vec<u8>>,
}

/// Raises, resolves and announces alerts. Cheap to clone; clones share the
/// cool-down memory and the deliveries in flight.
#[derive(Clone)]
pub struct Alerter {
    notifiers: Arc<[Arc<Notifier>]>,
    cooldown: Duration,
    log_path: Arc<PathBuf>,
    shared: Arc<Shared>,
    client: reqwest::Client,
}

impl Alerter {
    /// An alerter for `config`, appending to `alerts_log` and remembering active
    /// conditions in [`STATE_FILE`] beside it (read now, if there). An invalid config
    /// comes back as one message naming each bad field (never a secret or URL).
    pub fn new(config: &AlertsConfig, alerts_log: PathBuf) -> Result<Alerter, AlertsError> {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let client = reqwest::Client::builder()
            .timeout(deliver::TIMEOUT)
            .connect_timeout(deliver::TIMEOUT)
            .user_agent(concat!("dcb/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| AlertsError(vec![format!("cannot build the HTTP client: {e}")]))?;
        let memory = Memory::load(&state_path(&alerts_log));
        Alerter::build(config, alerts_log, Arc::new(Shared::new(memory)), client)
    }

    /// An alerter with a new configuration that keeps this one's memory: active
    /// conditions still resolve, cool-downs still run, and `flush` still waits for
    /// deliveries the old configuration started.
    pub fn reconfigured(
        &self,
        config: &AlertsConfig,
        alerts_log: PathBuf,
    ) -> Result<Alerter, AlertsError> {
        Alerter::build(config, alerts_log, self.shared.clone(), self.client.clone())
    }

    fn build(
        config: &AlertsConfig,
        alerts_log: PathBuf,
        shared: Arc<Shared>,
        client: reqwest::Client,
    ) -> Result<Alerter, AlertsError> {
        let mut problems: Vec<String> = config
            .problems()
            .into_iter()
            .map(|(pointer, msg)| format!("alerts{pointer}: {msg}"))
            .collect();
        let mut notifiers = Vec::new();
        for (i, n) in config.notifiers.iter().enumerate() {
            let ca_pem = match n {
                NotifierConfig::Email {
                    ca_file: Some(file),
                    ..
                } => match read_ca(Path::new(file)) {
                    Ok(pem) => Some(pem),
                    Err(e) => {
                        problems.push(format!("alerts/notifiers/{i}/caFile: {e}"));
                        None
                    }
                },
                _ => None,
            };
            notifiers.push(Arc::new(Notifier {
                config: n.clone(),
                ca_pem,
            }));
        }
        if !problems.is_empty() {
            return Err(AlertsError(problems));
        }
        let cooldown = config.cooldown.as_std();
        Ok(Alerter {
            notifiers: notifiers.into(),
            cooldown,
            log_path: Arc::new(alerts_log),
            shared,
            client,
        })
    }

    fn memory(&self) -> MutexGuard<'_, Memory> {
        self.shared.memory.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Queue the log line and the memory's new state (called with the memory locked,
    /// so the files change in the order the memory did).
    fn record(&self, m: &Memory, alert: &Alert) {
        if let Ok(line) = serde_json::to_string(alert) {
            self.shared.writer.send(Write::Append {
                path: self.log_path.clone(),
                line,
            });
        }
        self.shared.writer.send(Write::Save {
            path: state_path(&self.log_path),
            bytes: m.to_bytes(),
        });
    }

    /// A problem. A repeat of the same key within the cool-down is held back (counted,
    /// neither logged nor sent); otherwise the alert is appended to alerts.log, sent
    /// to the notifiers that take its kind, and its key stays active until resolved.
    pub async fn raise(&self, alert: Alert) {
        {
            let mut m = self.memory();
            let now = Utc::now();
            let cooldown = TimeDelta::from_std(self.cooldown).unwrap_or(TimeDelta::MAX);
            // A time ahead of now (the clock was set back) holds nothing back.
            m.last_raised.retain(|_, t| {
                let age = now - *t;
                age >= TimeDelta::zero() && age < cooldown
            });
            let key = alert.key.to_string();
            if m.last_raised.contains_key(&key) {
                m.throttled += 1;
                tracing::debug!(key = %alert.key, "alert held back by the cool-down");
                return;
            }
            m.last_raised.insert(key.clone(), now);
            m.active.insert(key);
            self.record(&m, &alert);
        }
        tracing::warn!(key = %alert.key, title = %alert.title, "alert");
        self.dispatch(alert);
    }

    /// The condition `key` cleared: if it had been raised, log and send a `resolved`
    /// alert (and let the next failure through at once); otherwise do nothing.
    pub async fn resolve(&self, key: &AlertKey, message: String) {
        let alert = {
            let mut m = self.memory();
            let name = key.to_string();
            if !m.active.remove(&name) {
                return;
            }
            m.last_raised.remove(&name);
            let alert = Alert::new(
                EventKind::Resolved,
                key.clone(),
                format!("resolved: {key}"),
                message,
            );
            self.record(&m, &alert);
            alert
        };
        tracing::info!(key = %alert.key, "alert resolved");
        self.dispatch(alert);
    }

    /// An event that is not a problem (`success`, `runStart`): sent to the notifiers
    /// that asked for it (e.g. a dead-man's-switch URL), never throttled, and not
    /// written to alerts.log (which records problems and their resolution only).
    pub async fn notify(&self, alert: Alert) {
        self.dispatch(alert);
    }

    /// Keys raised and not yet resolved, sorted by name. Names in the saved memory that
    /// are no key (written by another version) are left out.
    pub fn active(&self) -> Vec<AlertKey> {
        let mut names: Vec<String> = self.memory().active.iter().cloned().collect();
        names.sort();
        names.iter().filter_map(|n| n.parse().ok()).collect()
    }

    /// Alerts held back by the cool-down so far.
    pub fn throttled(&self) -> u64 {
        self.memory().throttled
    }

    /// Deliveries given up on after every attempt failed.
    pub fn failed_deliveries(&self) -> u64 {
        self.shared.failed.load(Ordering::Relaxed)
    }

    /// Wait for the deliveries in flight when called (tests, graceful shutdown), and
    /// for the log and state writes queued so far. Deliveries take at most
    /// [`ATTEMPTS`] × [`deliver::TIMEOUT`] plus the back-off (33 s).
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
        let (tx, rx) = tokio::sync::oneshot::channel();
        self.shared.writer.send(Write::Done(tx));
        let _ = rx.await;
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
            .filter(|n| n.config.events().contains(&alert.kind))
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

/// A CA certificate file for an email notifier: PEM with at least one certificate.
fn read_ca(path: &Path) -> Result<Vec<u8>, String> {
    let pem = std::fs::read(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    if !String::from_utf8_lossy(&pem).contains("-----BEGIN CERTIFICATE-----") {
        return Err(format!("{} holds no PEM certificate", path.display()));
    }
    lettre::transport::smtp::client::Certificate::from_pem(&pem)
        .map_err(|e| format!("{}: {e}", path.display()))?;
    Ok(pem)
}

async fn deliver_with_retries(
    client: reqwest::Client,
    n: Arc<Notifier>,
    alert: Arc<Alert>,
    shared: Arc<Shared>,
) {
    for attempt in 1..=ATTEMPTS {
        let result = tokio::time::timeout(
            deliver::TIMEOUT,
            deliver::send(&client, &n.config, n.ca_pem.as_deref(), &alert),
        )
        .await
        .unwrap_or_else(|_| {
            Err(deliver::Failure {
                message: format!("no answer within {} s", deliver::TIMEOUT.as_secs()),
                retry: true,
            })
        });
        match result {
            Ok(()) => {
                tracing::debug!(notifier = %n.config.label(), key = %alert.key, attempt, "alert delivered");
                return;
            }
            Err(f) if f.retry && attempt < ATTEMPTS => {
                tracing::debug!(
                    notifier = %n.config.label(), kind = %n.config.kind(), target = %n.config.target(),
                    attempt, error = %f.message, "alert delivery failed; retrying"
                );
                tokio::time::sleep(BACKOFF[attempt as usize - 1]).await;
            }
            Err(f) => {
                shared.failed.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(
                    notifier = %n.config.label(), kind = %n.config.kind(), target = %n.config.target(),
                    key = %alert.key, attempts = attempt, error = %f.message,
                    "alert could not be delivered"
                );
                return;
            }
        }
    }
}
