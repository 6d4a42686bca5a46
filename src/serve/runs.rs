//! A policy's run in the service: claimed so it never runs twice at once, exported by
//! the same engine as `dcb run` (every outcome an event), each new archive read back,
//! then retention applied to the policy.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use chrono::Utc;

use super::{RUN_LOCK, Service};
use crate::config::Settings;
use crate::events::Event;
use crate::export::Progress;
use crate::plan::{self, JobSpec};
use crate::policy::Policy;
use crate::scheduler::{Claim, lock};
use crate::state::State;
use crate::storage::{self, Source};
use crate::{retention, runner};

impl Service {
    /// Start a run of `name` unless one is going (or the service is stopping).
    pub(super) fn fire(self: &Arc<Self>, name: &str, why: &'static str) {
        let Some(policy) = lock(&self.policies).get(name).cloned() else {
            return;
        };
        if self.scheduler.is_stopping() {
            return;
        }
        let Some(claim) = self.scheduler.claim(name) else {
            self.metrics.record_skip(name);
            tracing::warn!(policy = %name, skipped = self.metrics.skipped(name), "the previous run is still going; this tick is skipped");
            return;
        };
        let me = self.clone();
        self.scheduler.spawn(async move {
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
        let events = self.emitter();
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
            for spec in jobs {
                events.emit(Event::JobLocked { spec }).await;
            }
            return;
        }
        claim.set_jobs(&ids);
        events
            .emit(Event::RunStarted {
                policy: &policy.name,
                collections: ids.len(),
                why,
            })
            .await;
        let none = |_: &JobSpec| -> Arc<dyn Progress> { Arc::new(()) };
        let report =
            runner::run_cancellable(&settings, &plans, &none, &events, self.cancel.clone()).await;
        claim.clear_jobs();
        if settings.verify_after_run {
            for r in &report.results {
                if let Ok(o) = &r.outcome
                    && let (Some(archive), Some(manifest)) = (&o.archive, &o.manifest)
                {
                    self.verify_new(&settings, &r.spec, archive, manifest).await;
                }
            }
        }
        if !self.cancel.load(Ordering::SeqCst) {
            let (policy, settings) = (policy.clone(), settings.clone());
            let _ = tokio::task::spawn_blocking(move || prune(&policy, &settings)).await;
        }
        self.heartbeat().await;
    }

    /// Read a new archive back and emit what it turned out to be.
    async fn verify_new(
        &self,
        settings: &Settings,
        spec: &JobSpec,
        archive: &Source,
        manifest: &crate::export::manifest::Manifest,
    ) {
        let (source, m) = (archive.clone(), manifest.clone());
        let identity = settings.identity_file.clone();
        let Ok((report, key_file_error)) = tokio::task::spawn_blocking(move || {
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
            (
                crate::verify::check(&source, Some(&m), 0, &keys),
                key_file_error,
            )
        })
        .await
        else {
            return;
        };
        let key_problem = key_file_error
            .map(|e| format!("cannot load the identity file ({e}); new archives are checked by file hash only"))
            .or_else(|| {
                report.locked().map(|k| {
                    format!(
                        "cannot open the new archive {}: {k}",
                        report.archive.name(&settings.backup_root)
                    )
                })
            });
        self.emitter()
            .emit(Event::ArchiveChecked {
                spec,
                report: &report,
                key_problem,
            })
            .await;
    }

    /// Last successes recorded before this process started, for `/metrics`.
    pub(super) fn seed_metrics(&self, state: &State) {
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
    pub(super) fn catch_up(self: &Arc<Self>, state: &State) {
        let policies: Vec<Policy> = lock(&self.policies).values().cloned().collect();
        let databases = self.settings().database_defaults();
        for (name, missed) in crate::scheduler::missed(&policies, state, &databases, Utc::now()) {
            tracing::info!(policy = %name, %missed, "catching up once after downtime");
            self.fire(&name, "catch-up");
        }
    }

    /// After an abort: remove what the aborted exports left (their temporary files),
    /// where no other process holds the policy.
    pub(super) async fn remove_leftovers(&self, policies: Vec<String>) {
        let settings = self.settings();
        let _ = tokio::task::spawn_blocking(move || {
            let target = settings.target();
            for name in policies {
                let dir = storage::policy_dir(&settings.backup_root, &name);
                if let Ok(Some(_lock)) = storage::try_lock(&dir.join(RUN_LOCK)) {
                    for f in target.remove_leftovers(&format!("{name}/")) {
                        tracing::info!(file = %f, "removed the temporary file of an aborted export");
                    }
                }
            }
        })
        .await;
    }
}

/// Retention for one policy, after its run.
fn prune(policy: &Policy, settings: &Settings) {
    let pruned = retention::prune(
        &settings.backup_root,
        &settings.target(),
        std::slice::from_ref(policy),
        std::slice::from_ref(&policy.name),
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
