//! The service's health checks: the database answers, the backup disk has room (and
//! will have), and each collection is neither failing nor stale. Each finding is an
//! event that raises or resolves its alert.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use chrono::Utc;

use super::Service;
use crate::alert::AlertKey;
use crate::config::Settings;
use crate::discover::{self, Uncovered};
use crate::events::Event;
use crate::health::{self, Disk, Thresholds};
use crate::plan::{JobSpec, PolicyPlan};
use crate::policy::Policy;
use crate::state::State;
use crate::storage;

/// What a client was built from: when it changes, so must the client.
#[derive(Clone, PartialEq, Eq)]
pub(super) struct ConnKey {
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

/// The health checks' client, kept between checks.
pub(super) type Client = Option<(ConnKey, mongodb::Client)>;

impl Service {
    /// `full`: also the per-collection findings (failures, staleness, forecast). The
    /// check at start-up looks at the database and the disk only: collections get
    /// their catch-up run first.
    pub(super) async fn health_check(self: &Arc<Self>, db: &mut Client, full: bool) {
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
                Err(e) => Err(e.to_string()),
            },
        };
        self.database_ok.store(database.is_ok(), Ordering::SeqCst);
        let h = &settings.health;
        let thresholds = Thresholds {
            failure_threshold: h.failure_threshold,
            min_free_percent: h.min_free_percent,
            min_free_bytes: h.min_free_mb.saturating_mul(1_048_576),
        };
        // Patterns are matched, and uncovered collections found, against the
        // databases as they are now (when the server answers).
        let (plans, uncovered) = match (full, &database, &*db) {
            (true, Ok(()), Some((_, client))) => survey(client, &settings, plans).await,
            _ => (plans, BTreeMap::new()),
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
                uncovered: &uncovered,
            };
            health::evaluate(&inputs, &thresholds)
        })
        .await
        .unwrap_or_default();
        let events = self.emitter();
        for f in findings
            .into_iter()
            .filter(|f| full || matches!(f.key, AlertKey::Database | AlertKey::DiskFree))
        {
            events.emit(Event::Finding(f)).await;
        }
    }
}

/// The plans with their patterns matched, and per backed-up database that could be
/// listed, the collections no enabled policy covers.
async fn survey(
    client: &mongodb::Client,
    settings: &Settings,
    plans: Vec<PolicyPlan>,
) -> (Vec<PolicyPlan>, BTreeMap<String, Vec<Uncovered>>) {
    let mut existing: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for plan in plans
        .iter()
        .filter(|p| p.policy.enabled || p.has_patterns())
    {
        let database = plan.database.clone();
        if existing.contains_key(&database) {
            continue;
        }
        match discover::collections(client, &database).await {
            Ok(names) => {
                existing.insert(database, names);
            }
            Err(e) => {
                tracing::warn!("health check: cannot list the collections of `{database}`: {e}")
            }
        }
    }
    let plans: Vec<PolicyPlan> = plans
        .into_iter()
        .map(|p| match existing.get(&p.database) {
            Some(names) if p.has_patterns() => p.matched(names, &settings.exclude).0,
            _ => p,
        })
        .collect();
    let with_db: Vec<(&Policy, String)> = plans
        .iter()
        .map(|p| (&p.policy, p.database.clone()))
        .collect();
    // Only databases an enabled policy backs up are surveyed.
    existing.retain(|db, _| with_db.iter().any(|(p, d)| p.enabled && d == db));
    let list = discover::uncovered(&with_db, &existing, &settings.exclude);
    let mut by_db: BTreeMap<String, Vec<Uncovered>> =
        existing.keys().map(|d| (d.clone(), Vec::new())).collect();
    for u in list {
        by_db.entry(u.database.clone()).or_default().push(u);
    }
    (plans, by_db)
}

/// Whether the server answers; why not, scrubbed, when it does not.
async fn ping(client: &mongodb::Client) -> Result<(), String> {
    client
        .database("admin")
        .run_command(mongodb::bson::doc! {"ping": 1})
        .await
        .map(|_| ())
        .map_err(|e| e.to_string())
}
