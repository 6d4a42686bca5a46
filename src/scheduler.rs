//! Firing policies at their times: one schedule task per enabled policy (in its time
//! zone), a claim per running policy so that none runs twice at once, the runs' tasks
//! (reaped as they end, drained at a stop), and which policies missed a run while the
//! service was down.

use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use chrono::{DateTime, Utc};
use tokio::task::{JoinHandle, JoinSet};

use crate::plan::diff::PlanDiff;
use crate::policy::{DatabaseDefaults, Policy};
use crate::state::State;

/// A poisoned lock still holds good data here: every writer leaves it consistent.
pub fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
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
pub struct Claim {
    running: Arc<Mutex<Running>>,
    policy: String,
}

impl Claim {
    /// None while the policy's previous run holds its claim.
    fn take(running: &Arc<Mutex<Running>>, policy: &str) -> Option<Claim> {
        lock(running)
            .policies
            .insert(policy.to_string())
            .then(|| Claim {
                running: running.clone(),
                policy: policy.to_string(),
            })
    }

    /// The jobs the run exports now (for the service record and `dcb status`).
    pub fn set_jobs(&self, ids: &[String]) {
        lock(&self.running).jobs.extend(ids.iter().cloned());
    }

    /// Job ids are `<policy>/<database>/<collection>`; names hold no `/`.
    pub fn clear_jobs(&self) {
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

/// Starts a run of the named policy, for the given reason.
pub type Fire = Arc<dyn Fn(&str, &'static str) + Send + Sync>;

/// The schedules and the runs of the service.
#[derive(Default)]
pub struct Scheduler {
    running: Arc<Mutex<Running>>,
    runs: Mutex<JoinSet<()>>,
    schedules: Mutex<BTreeMap<String, JoinHandle<()>>>,
    stopping: AtomicBool,
}

impl Scheduler {
    /// Stop the schedules of removed and changed policies, and start those of added
    /// and changed ones (from `policies`, the set the diff leads to).
    pub fn apply(&self, diff: &PlanDiff, policies: &BTreeMap<String, Policy>, fire: &Fire) {
        let mut schedules = lock(&self.schedules);
        for name in diff.removed.iter().chain(&diff.changed) {
            if let Some(task) = schedules.remove(name) {
                task.abort();
                tracing::info!(policy = %name, "schedule stopped");
            }
        }
        for name in diff.added.iter().chain(&diff.changed) {
            let Some(p) = policies.get(name) else {
                continue;
            };
            let next = p
                .schedule
                .next_after(&Utc::now().with_timezone(&p.timezone));
            tracing::info!(policy = %name, schedule = p.schedule.pattern(), timezone = p.timezone.name(), next = ?next, "scheduled");
            let task = tokio::spawn(schedule(p.clone(), fire.clone()));
            schedules.insert(name.clone(), task);
        }
    }

    /// The policy's claim, unless its previous run still holds it or the service is
    /// stopping.
    pub fn claim(&self, policy: &str) -> Option<Claim> {
        if self.is_stopping() {
            return None;
        }
        Claim::take(&self.running, policy)
    }

    /// Run `run` as one of the service's runs (reaping those that ended).
    pub fn spawn(&self, run: impl Future<Output = ()> + Send + 'static) {
        let mut runs = lock(&self.runs);
        reap(&mut runs);
        runs.spawn(run);
    }

    /// Collect finished runs; returns how many panicked.
    pub fn reap(&self) -> usize {
        reap(&mut lock(&self.runs))
    }

    pub fn is_stopping(&self) -> bool {
        self.stopping.load(Ordering::SeqCst)
    }

    /// No new runs from now on: the schedules stop; the runs going are handed over, to
    /// be drained.
    pub fn stop(&self) -> JoinSet<()> {
        self.stopping.store(true, Ordering::SeqCst);
        for (_, task) in std::mem::take(&mut *lock(&self.schedules)) {
            task.abort();
        }
        std::mem::take(&mut *lock(&self.runs))
    }

    /// The jobs being exported now.
    pub fn active_jobs(&self) -> Vec<String> {
        lock(&self.running).jobs.iter().cloned().collect()
    }

    /// The policies with a run going.
    pub fn running_policies(&self) -> Vec<String> {
        lock(&self.running).policies.iter().cloned().collect()
    }
}

/// Fire `policy` at each of its times until aborted.
async fn schedule(policy: Policy, fire: Fire) {
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
        fire(&policy.name, "schedule");
        // A slow run never causes a burst of catch-up ticks.
        after = next.max(Utc::now() - chrono::TimeDelta::milliseconds(1));
    }
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

/// Wait for every run of `runs` to end.
pub async fn drain(runs: &mut JoinSet<()>) {
    while let Some(done) = runs.join_next().await {
        if let Err(e) = done
            && e.is_panic()
        {
            tracing::error!("a policy run panicked");
        }
    }
}

/// The enabled policies whose last success (of any of their collections) predates
/// their previous scheduled time: each, with that time, runs once to catch up.
pub fn missed(
    policies: &[Policy],
    state: &State,
    databases: &DatabaseDefaults,
    now: DateTime<Utc>,
) -> Vec<(String, DateTime<Utc>)> {
    let mut out = Vec::new();
    for p in policies.iter().filter(|p| p.enabled) {
        let Some(prev) = p.schedule.previous_before(&now.with_timezone(&p.timezone)) else {
            continue;
        };
        let prev = prev.with_timezone(&Utc);
        let Ok(db) = p.database_in(databases) else {
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
        // What patterns match is known only when a run starts: a policy with patterns
        // missed its run when none of its collections succeeded since.
        let prefix = crate::plan::job_id(&p.name, &db, "");
        let missed = missed
            || (!p.patterns.is_empty()
                && !state.collections.iter().any(|(id, s)| {
                    id.starts_with(&prefix) && s.last_success.is_some_and(|t| t >= prev)
                }));
        if missed {
            out.push((p.name.clone(), prev));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    // A run that panics still frees its policy (and its jobs) for the next tick, and
    // reaping reports the panic.
    #[tokio::test]
    async fn a_panicking_run_frees_its_policy() {
        let s = Scheduler::default();
        let claim = s.claim("hot").unwrap();
        claim.set_jobs(&["hot/db/a".into(), "hotter/db/b".into()]);
        assert!(s.claim("hot").is_none(), "one run at a time");
        s.spawn(async move {
            let _claim = claim;
            panic!("boom");
        });
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        let mut panicked = 0;
        while panicked == 0 {
            assert!(std::time::Instant::now() < deadline, "the run never ended");
            panicked += s.reap();
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert_eq!(panicked, 1);
        assert!(s.claim("hot").is_some());
        assert_eq!(s.active_jobs(), ["hotter/db/b"]);
    }

    // Once stopping, no policy can be claimed, and the runs going are handed over.
    #[tokio::test]
    async fn a_stop_refuses_new_runs() {
        let s = Scheduler::default();
        let claim = s.claim("hot").unwrap();
        s.spawn(async move {
            tokio::time::sleep(Duration::from_millis(50)).await;
            drop(claim);
        });
        let mut runs = s.stop();
        assert!(s.claim("cold").is_none());
        assert_eq!(runs.len(), 1);
        drain(&mut runs).await;
        assert!(s.running_policies().is_empty());
    }
}
