//! Alerts: findings and events, throttled by a cool-down, written to
//! `<backupRoot>/logs/alerts.log` and delivered to the configured notifiers in the
//! background (retried; a failing notifier never blocks or fails a backup).

pub mod config;
pub mod deliver;

use std::collections::{HashMap, HashSet};
use std::io::Write as _;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use serde::Serialize;
use tokio::task::JoinSet;

pub use config::{AlertsConfig, EventKind, NotifierConfig};

/// Delivery attempts per notifier and alert.
const ATTEMPTS: u32 = 3;

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

#[derive(Default)]
struct Memory {
    last_raised: HashMap<String, Instant>,
    active: HashSet<String>,
    throttled: u64,
}

pub struct Alerter {
    notifiers: Vec<Arc<NotifierConfig>>,
    cooldown: Duration,
    log_path: PathBuf,
    memory: Mutex<Memory>,
    deliveries: Mutex<JoinSet<()>>,
    client: reqwest::Client,
}

impl Alerter {
    pub fn new(config: &AlertsConfig, log_path: PathBuf) -> Result<Alerter, String> {
        let cooldown = config
            .cooldown
            .parse::<crate::duration::HumanDuration>()
            .map_err(|e| format!("alerts.cooldown: {e}"))?
            .0;
        let _ = rustls::crypto::ring::default_provider().install_default();
        let client = reqwest::Client::builder()
            .timeout(deliver::TIMEOUT)
            .user_agent(concat!("dcb/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| format!("cannot build the HTTP client: {e}"))?;
        Ok(Alerter {
            notifiers: config.notifiers.iter().cloned().map(Arc::new).collect(),
            cooldown,
            log_path,
            memory: Mutex::new(Memory::default()),
            deliveries: Mutex::new(JoinSet::new()),
            client,
        })
    }

    fn memory(&self) -> std::sync::MutexGuard<'_, Memory> {
        self.memory.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A problem. Repeats of the same key within the cool-down are held back.
    pub async fn raise(&self, alert: Alert) {
        {
            let mut m = self.memory();
            let now = Instant::now();
            if m.last_raised
                .get(&alert.key)
                .is_some_and(|t| now.duration_since(*t) < self.cooldown)
            {
                m.throttled += 1;
                return;
            }
            m.last_raised.insert(alert.key.clone(), now);
            m.active.insert(alert.key.clone());
        }
        tracing::warn!(key = %alert.key, title = %alert.title, "alert");
        self.log(&alert);
        self.dispatch(alert);
    }

    /// The condition `key` cleared: say so, if it had been raised.
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

    /// An event that is not a problem (success, run start): sent to the notifiers
    /// that asked for it, never throttled.
    pub async fn notify(&self, alert: Alert) {
        self.dispatch(alert);
    }

    /// Alerts held back by the cool-down so far.
    pub fn throttled(&self) -> u64 {
        self.memory().throttled
    }

    /// Wait for deliveries in flight (tests, shutdown).
    pub async fn flush(&self) {
        let mut set =
            std::mem::take(&mut *self.deliveries.lock().unwrap_or_else(|e| e.into_inner()));
        while set.join_next().await.is_some() {}
    }

    fn log(&self, alert: &Alert) {
        let line = match serde_json::to_string(alert) {
            Ok(l) => l,
            Err(_) => return,
        };
        let result = (|| -> std::io::Result<()> {
            if let Some(dir) = self.log_path.parent() {
                crate::storage::create_dir(dir)?;
            }
            let mut opts = std::fs::OpenOptions::new();
            opts.create(true).append(true);
            #[cfg(unix)]
            {
                use std::os::unix::fs::OpenOptionsExt;
                opts.mode(0o600);
            }
            let mut f = opts.open(&self.log_path)?;
            writeln!(f, "{line}")
        })();
        if let Err(e) = result {
            tracing::warn!(error = %e, file = %self.log_path.display(), "cannot append to the alerts log");
        }
    }

    fn dispatch(&self, alert: Alert) {
        let alert = Arc::new(alert);
        let mut set = self.deliveries.lock().unwrap_or_else(|e| e.into_inner());
        // Reap finished deliveries so the set does not grow.
        while set.try_join_next().is_some() {}
        for n in self
            .notifiers
            .iter()
            .filter(|n| n.events().contains(&alert.kind))
        {
            let (n, alert, client) = (n.clone(), alert.clone(), self.client.clone());
            set.spawn(async move {
                for attempt in 1..=ATTEMPTS {
                    match deliver::send(&client, &n, &alert).await {
                        Ok(()) => return,
                        Err(e) if attempt < ATTEMPTS => {
                            tracing::debug!(notifier = %n.label(), attempt, error = %e, "alert delivery failed; retrying");
                            tokio::time::sleep(Duration::from_secs(1 << (attempt - 1))).await;
                        }
                        Err(e) => {
                            tracing::warn!(notifier = %n.label(), key = %alert.key, error = %e, "alert could not be delivered");
                        }
                    }
                }
            });
        }
    }
}
