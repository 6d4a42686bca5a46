//! Hot reload: read dcb.yaml and the policies folder again, apply what is valid and
//! keep the last valid version of the rest, alert on invalid files (once per edit),
//! and resolve the alerts of what the service no longer backs up.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::{Service, alerts_log};
use crate::alert::{AlertKey, Alerter};
use crate::config::{Overrides, Settings};
use crate::diag::{self, Diagnostic, Format};
use crate::events::{Event, PolicyFileProblem};
use crate::plan::{self, JobSpec, PolicyPlan};
use crate::policy::Policy;
use crate::policy::load::{PolicySet, load_dir};
use crate::scheduler::lock;

/// What a reload read from disk.
struct Loaded {
    settings: Result<Settings, Vec<Diagnostic>>,
    /// A new alerter when `alerts:` (or where alerts are logged) changed.
    alerter: Option<Result<Alerter, crate::alert::AlertsError>>,
    set: PolicySet,
    /// Each policy file with errors, with a fingerprint of its content and diagnostics.
    bad: BTreeMap<PathBuf, String>,
    /// Policy files whose invalid-policy alert is active but which are fine now, and
    /// whether each still exists.
    mended: Vec<(String, bool)>,
}

/// dcb.yaml, the alerter it implies, and the policies folder, read afresh.
fn read_everything(overrides: &Overrides, current: Settings, alerter: &Alerter) -> Loaded {
    let resolved = Settings::resolve(overrides, &crate::config::process_env);
    let replacement = resolved.as_ref().ok().and_then(|new| {
        let changed = new.alerts != current.alerts || alerts_log(new) != alerts_log(&current);
        changed.then(|| alerter.reconfigured(&new.alerts, alerts_log(new)))
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
    let bad_names: BTreeSet<String> = bad.keys().map(|f| f.display().to_string()).collect();
    let mended = alerter
        .active()
        .into_iter()
        .filter_map(|k| match k {
            AlertKey::InvalidPolicy(file) if !bad_names.contains(&file) => {
                let exists = Path::new(&file).exists();
                Some((file, exists))
            }
            _ => None,
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

/// What the service knows about a policy named in an alert key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Known {
    Runs,
    Disabled,
    /// Enabled, but it does not compile (its own `config:` alert says why).
    CannotRun,
}

/// Active alerts about jobs or policies the service no longer runs, with the message
/// that resolves each: a removed or disabled policy, or a collection it dropped.
pub(super) fn orphans(
    active: &[AlertKey],
    policies: &BTreeMap<String, Known>,
    jobs: &BTreeSet<String>,
) -> Vec<(AlertKey, String)> {
    let mut out = Vec::new();
    for key in active {
        let job = match key {
            AlertKey::Failures(id) | AlertKey::Stale(id) | AlertKey::Verify(id) => Some(id),
            AlertKey::Config(_) => None,
            _ => continue,
        };
        let Some(policy) = key.policy() else { continue };
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

impl Service {
    /// Load policy files and dcb.yaml again; apply what is valid, keep the rest.
    pub(super) async fn reload(self: &Arc<Self>, why: &str) {
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
        let events = self.emitter();
        match loaded.settings {
            Ok(new) => {
                match loaded.alerter {
                    Some(Ok(a)) => self.replace_alerter(a),
                    Some(Err(e)) => {
                        tracing::error!(error = %e, "invalid alerts configuration; keeping the previous one")
                    }
                    None => {}
                }
                self.replace_settings(new);
                *lock(&self.bad_config) = None;
                self.emitter().emit(Event::ConfigFile(None)).await;
            }
            Err(diags) => {
                let text = diag::render(&diags, Format::Human);
                let before = lock(&self.bad_config).replace(text.clone());
                if before.as_deref() == Some(text.as_str()) {
                    tracing::debug!("dcb.yaml is still invalid; the previous configuration stays");
                } else {
                    events.emit(Event::ConfigFile(Some(text))).await;
                }
            }
        }
        let (set, bad) = (loaded.set, loaded.bad);
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
        let events = self.emitter();
        for file in &newly {
            let diags: Vec<_> = set
                .diagnostics
                .iter()
                .filter(|d| &d.file == file)
                .cloned()
                .collect();
            let text = diag::render(&diags, Format::Human);
            let file = file.display().to_string();
            events
                .emit(Event::PolicyFile {
                    file: &file,
                    problem: PolicyFileProblem::Invalid(text),
                })
                .await;
        }
        for (file, exists) in loaded.mended {
            let problem = if exists {
                PolicyFileProblem::Valid
            } else {
                PolicyFileProblem::Removed
            };
            events
                .emit(Event::PolicyFile {
                    file: &file,
                    problem,
                })
                .await;
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
    pub(super) async fn compile_policies(&self, settings: &Settings) -> Vec<PolicyPlan> {
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
        let events = self.emitter();
        for (policy, why) in newly {
            events
                .emit(Event::PolicyRunnable {
                    policy: &policy,
                    problem: Some(why),
                })
                .await;
        }
        for p in plans.iter().filter(|p| p.policy.enabled) {
            events
                .emit(Event::PolicyRunnable {
                    policy: &p.policy.name,
                    problem: None,
                })
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
        let events = self.emitter();
        for (key, message) in orphans(&self.alerter().active(), &known, &jobs) {
            events.emit(Event::Orphaned { key, message }).await;
        }
    }

    /// Start, restart or stop schedules so they match `next`.
    fn apply(self: &Arc<Self>, next: BTreeMap<String, Policy>) {
        let diff = plan::diff::diff(&lock(&self.policies), &next);
        let me = self.clone();
        let fire: crate::scheduler::Fire = Arc::new(move |name, why| me.fire(name, why));
        self.scheduler.apply(&diff, &next, &fire);
        *lock(&self.policies) = next;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
        let active: Vec<AlertKey> = [
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
        .map(|s| s.parse().unwrap())
        .collect();
        let got: Vec<(String, String)> = orphans(&active, &known, &jobs)
            .into_iter()
            .map(|(k, m)| (k.to_string(), m))
            .collect();
        assert_eq!(
            got,
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
}
