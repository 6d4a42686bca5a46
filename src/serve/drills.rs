//! The service's proofs: restore drills on each policy's drill schedule, and passes
//! of periodic re-verification. Each outcome is an event.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};

use super::Service;
use crate::events::Event;
use crate::policy::Policy;
use crate::scheduler::lock;

/// How often the drill schedules are looked at.
const TICK: Duration = Duration::from_secs(1);

/// The keys the service opens archives with: its identity if it loads, else none
/// (encrypted archives are then checked by their file hash).
fn service_keys(settings: &crate::config::Settings) -> crate::crypto::Keys {
    let mut keys = settings.keys(None).unwrap_or_else(|e| {
        tracing::warn!(error = %e, "cannot load the identity file; encrypted archives are checked by file hash only");
        crate::crypto::Keys::default()
    });
    keys.hash_only_when_locked = true;
    keys
}

/// Run each policy's drill when its drill schedule says so, one drill at a time.
pub(super) fn spawn_drills(me: Arc<Service>) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        // Per policy: the schedule's pattern and time zone, and the next fire time.
        let mut next: BTreeMap<String, (String, DateTime<Utc>)> = BTreeMap::new();
        loop {
            tokio::time::sleep(TICK).await;
            let settings = me.settings();
            let policies: Vec<Policy> = lock(&me.policies)
                .values()
                .filter(|p| p.enabled)
                .cloned()
                .collect();
            next.retain(|name, _| policies.iter().any(|p| &p.name == name));
            for policy in policies {
                let eff = crate::drill::effective(&settings, &policy);
                let Some(schedule) = eff.schedule.clone().filter(|_| eff.enabled) else {
                    next.remove(&policy.name);
                    continue;
                };
                let id = format!("{} {}", schedule.pattern(), eff.timezone);
                let now = Utc::now();
                let fire = |after: DateTime<Utc>| {
                    schedule
                        .next_after(&after.with_timezone(&eff.timezone))
                        .map(|t| t.with_timezone(&Utc))
                };
                let entry = next.get(&policy.name).filter(|(i, _)| *i == id).cloned();
                let due = match entry {
                    Some((_, at)) => at,
                    None => {
                        if let Some(at) = fire(now) {
                            next.insert(policy.name.clone(), (id.clone(), at));
                        }
                        continue;
                    }
                };
                if now < due {
                    continue;
                }
                me.drill(&policy).await;
                if let Some(at) = fire(Utc::now()) {
                    next.insert(policy.name.clone(), (id, at));
                }
            }
        }
    })
}

/// A re-verification pass every `reverify.interval`, the first one interval after
/// the start (the start has enough to do).
pub(super) fn spawn_reverify(me: Arc<Service>) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        loop {
            let interval = me
                .settings()
                .reverify
                .interval
                .as_std()
                .max(Duration::from_secs(1));
            tokio::time::sleep(interval).await;
            let settings = me.settings();
            if !settings.reverify.enabled {
                continue;
            }
            let pass = tokio::task::spawn_blocking(move || {
                let keys = service_keys(&settings);
                crate::reverify::pass(&settings, &keys, Utc::now())
            })
            .await;
            if let Ok(pass) = pass {
                me.emitter().emit(Event::Reverified(&pass)).await;
            }
        }
    })
}

impl Service {
    /// Drill one policy now and record it.
    async fn drill(&self, policy: &Policy) {
        let settings = self.settings();
        tracing::info!(policy = %policy.name, "restore drill starting");
        let report = match crate::mongo::connect(&settings, Duration::from_secs(10)).await {
            Ok(client) => {
                let keys = {
                    let s = settings.clone();
                    tokio::task::spawn_blocking(move || service_keys(&s))
                        .await
                        .unwrap_or_default()
                };
                let r =
                    crate::drill::run(&settings, policy, &client, Arc::new(keys), Utc::now()).await;
                crate::mongo::close(client).await;
                r
            }
            Err(e) => crate::drill::Report {
                at: Utc::now(),
                policy: policy.name.clone(),
                ok: false,
                database: crate::drill::effective(&settings, policy).database,
                collections: Vec::new(),
                elapsed_ms: 0,
                problems: vec![crate::redact::text(&e.to_string(), &settings.mongodb_uri)],
                samples: Vec::new(),
            },
        };
        self.emitter().emit(Event::Drilled(&report)).await;
    }
}
