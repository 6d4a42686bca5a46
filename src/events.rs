//! One place per event. Something happened (a job succeeded, failed, was locked out;
//! a new archive was checked; a health finding changed); [`Emitter::emit`] records it
//! everywhere it belongs at once: the state, the audit log, the metrics, the alerts
//! and the log, so they never disagree. `dcb run` and the service emit the same
//! events; what an emitter reaches differs (`dcb run` keeps no metrics, and raises
//! alerts only when notifiers are configured).

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};

use crate::alert::{Alert, AlertKey, Alerter, EventKind};
use crate::audit;
use crate::config::Settings;
use crate::export::ExportOutcome;
use crate::health::Finding;
use crate::metrics::{Metrics, RunResult};
use crate::plan::JobSpec;
use crate::redact;
use crate::state::{CollectionState, State};
use crate::storage::Target;
use crate::window::Extent;

/// Something that happened, with what its recording needs.
#[derive(Debug)]
pub enum Event<'a> {
    /// A policy's run began (the service's runs; `why`: schedule, catch-up).
    RunStarted {
        policy: &'a str,
        collections: usize,
        why: &'a str,
    },
    /// A collection's export began.
    JobStarted { spec: &'a JobSpec, extent: Extent },
    /// A collection's window was exported (and committed, if it held documents).
    JobSucceeded {
        spec: &'a JobSpec,
        outcome: &'a ExportOutcome,
        elapsed: Duration,
        /// When this run did not count the documents no window selects: the last
        /// count and when it was made.
        untimed_known: Option<(u64, DateTime<Utc>)>,
    },
    /// A collection's window was not exported.
    JobFailed {
        spec: &'a JobSpec,
        error: &'a (dyn std::error::Error + Sync),
        elapsed: Duration,
    },
    /// Another process holds the policy: not started twice, and no failure.
    JobLocked { spec: &'a JobSpec },
    /// A shutdown stopped the export: nobody's failure, nothing recorded.
    JobInterrupted { spec: &'a JobSpec },
    /// The service read a new archive back.
    ArchiveChecked {
        spec: &'a JobSpec,
        report: &'a crate::verify::Report,
        /// Why the identity at hand cannot open new archives, if it cannot.
        key_problem: Option<String>,
    },
    /// A health check's finding: raised while active, resolved when it clears.
    Finding(Finding),
    /// dcb.yaml became invalid (`text`: its diagnostics), or valid again (`None`).
    ConfigFile(Option<String>),
    /// A policy file's last edit is invalid (`text`), or valid again or removed.
    PolicyFile {
        file: &'a str,
        problem: PolicyFileProblem,
    },
    /// An enabled policy cannot run (`Some(why)`), or can again (`None`).
    PolicyRunnable {
        policy: &'a str,
        problem: Option<String>,
    },
    /// An alert whose subject the service no longer backs up, with why.
    Orphaned { key: AlertKey, message: String },
    /// A restore drill ended: drills.log, the metrics, the drill's alert.
    Drilled(&'a crate::drill::Report),
    /// A re-verification pass read old archives: the metrics, and an alert per
    /// archive that turned corrupt (resolved once repaired or gone).
    Reverified(&'a crate::reverify::Pass),
}

/// What became of a policy file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PolicyFileProblem {
    Invalid(String),
    Valid,
    Removed,
}

/// Where events are recorded. Cheap to clone.
#[derive(Clone)]
pub struct Emitter {
    root: PathBuf,
    target: Arc<dyn Target>,
    uri: String,
    failure_threshold: u32,
    metrics: Option<Arc<Metrics>>,
    alerter: Option<Arc<dyn Fn() -> Arc<Alerter> + Send + Sync>>,
}

impl Emitter {
    /// Records in the state, the audit log and the log of `settings`' backup root.
    pub fn new(settings: &Settings) -> Emitter {
        Emitter {
            root: settings.backup_root.clone(),
            target: settings.target(),
            uri: settings.mongodb_uri.clone(),
            failure_threshold: settings.health.failure_threshold,
            metrics: None,
            alerter: None,
        }
    }

    /// Also counts in `metrics`.
    pub fn with_metrics(mut self, metrics: Arc<Metrics>) -> Emitter {
        self.metrics = Some(metrics);
        self
    }

    /// Also raises and resolves alerts, through whichever alerter `current` gives
    /// (the service replaces its alerter when dcb.yaml changes).
    pub fn with_alerts(mut self, current: Arc<dyn Fn() -> Arc<Alerter> + Send + Sync>) -> Emitter {
        self.alerter = Some(current);
        self
    }

    fn alerter(&self) -> Option<Arc<Alerter>> {
        self.alerter.as_ref().map(|f| f())
    }

    /// The error as it may be shown and kept: without the connection's password.
    fn shown(&self, e: &dyn std::fmt::Display) -> String {
        redact::text(&e.to_string(), &self.uri)
    }

    /// Record `event` everywhere it belongs. File writes run off the async workers.
    pub async fn emit(&self, event: Event<'_>) {
        match event {
            Event::RunStarted {
                policy,
                collections,
                why,
            } => {
                tracing::info!(%policy, reason = %why, "run started");
                if let Some(a) = self.alerter() {
                    let mut alert = Alert::new(
                        EventKind::RunStart,
                        AlertKey::Run(policy.to_string()),
                        format!("{policy} started"),
                        format!("{collections} collections ({why})"),
                    );
                    alert.policy = Some(policy.to_string());
                    a.notify(alert).await;
                }
            }
            Event::JobStarted { spec, extent } => match extent {
                Extent::Window(w) => {
                    tracing::info!(job = %spec.id(), from = ?w.from, to = %w.to, "export started")
                }
                Extent::Snapshot => {
                    tracing::info!(job = %spec.id(), "whole-collection export started")
                }
            },
            Event::JobSucceeded {
                spec,
                outcome,
                elapsed,
                untimed_known,
            } => self.succeeded(spec, outcome, elapsed, untimed_known).await,
            Event::JobFailed {
                spec,
                error,
                elapsed,
            } => self.failed(spec, error, elapsed).await,
            Event::JobLocked { spec } => {
                tracing::info!(job = %spec.id(), "another process is running this policy; not started twice");
                self.count(spec, RunResult::Locked, Duration::ZERO);
            }
            Event::JobInterrupted { spec } => {
                tracing::warn!(job = %spec.id(), "export interrupted by shutdown; nothing recorded")
            }
            Event::ArchiveChecked {
                spec,
                report,
                key_problem,
            } => self.checked(spec, report, key_problem).await,
            Event::Finding(f) => {
                let Some(a) = self.alerter() else { return };
                if f.active {
                    let mut alert = Alert::new(EventKind::Failure, f.key, f.title, f.message);
                    alert.policy = f.policy;
                    alert.collection = f.collection;
                    a.raise(alert).await;
                } else {
                    let message = format!("{}: resolved", f.key);
                    a.resolve(&f.key, message).await;
                }
            }
            Event::ConfigFile(problem) => {
                let Some(a) = self.alerter() else { return };
                match problem {
                    Some(text) => {
                        tracing::error!(
                            "dcb.yaml is invalid; keeping the previous configuration:\n{text}"
                        );
                        let alert = Alert::new(
                            EventKind::Failure,
                            AlertKey::ConfigFile,
                            "dcb.yaml is invalid",
                            text,
                        );
                        a.raise(alert).await;
                    }
                    None => {
                        a.resolve(&AlertKey::ConfigFile, "dcb.yaml is valid again".into())
                            .await
                    }
                }
            }
            Event::PolicyFile { file, problem } => {
                let key = AlertKey::InvalidPolicy(file.to_string());
                let Some(a) = self.alerter() else { return };
                match problem {
                    PolicyFileProblem::Invalid(text) => {
                        tracing::error!("invalid policy file {file}:\n{text}");
                        let alert = Alert::new(
                            EventKind::Failure,
                            key,
                            format!("invalid policy file {file}"),
                            text,
                        );
                        a.raise(alert).await;
                    }
                    PolicyFileProblem::Valid => {
                        a.resolve(&key, format!("{file} is valid again")).await
                    }
                    PolicyFileProblem::Removed => {
                        a.resolve(&key, format!("{file} was removed")).await
                    }
                }
            }
            Event::PolicyRunnable { policy, problem } => {
                let key = AlertKey::Config(policy.to_string());
                let Some(a) = self.alerter() else { return };
                match problem {
                    Some(why) => {
                        tracing::error!(%policy, "policy cannot run: {why}");
                        let mut alert = Alert::new(
                            EventKind::Failure,
                            key,
                            format!("policy {policy} cannot run"),
                            why,
                        );
                        alert.policy = Some(policy.to_string());
                        a.raise(alert).await;
                    }
                    None => {
                        a.resolve(&key, format!("policy {policy} can run again"))
                            .await
                    }
                }
            }
            Event::Orphaned { key, message } => {
                if let Some(a) = self.alerter() {
                    a.resolve(&key, message).await;
                }
            }
            Event::Drilled(report) => self.drilled(report).await,
            Event::Reverified(pass) => self.reverified(pass).await,
        }
    }

    async fn drilled(&self, report: &crate::drill::Report) {
        let (root, copy) = (self.root.clone(), report.clone());
        off_workers(move || {
            if let Err(e) = crate::drill::log::append(&root, &copy) {
                tracing::warn!(error = %e, "cannot record the drill in drills.log");
            }
        })
        .await;
        if let Some(m) = &self.metrics {
            m.record_drill(&report.policy, report.ok, report.at.timestamp() as f64);
        }
        let policy = &report.policy;
        if report.ok {
            tracing::info!(%policy, collections = report.collections.len(), elapsed_ms = report.elapsed_ms, "restore drill passed");
        } else {
            tracing::error!(%policy, problems = ?report.problems, "restore drill failed");
        }
        let Some(a) = self.alerter() else { return };
        let key = AlertKey::Drill(policy.clone());
        if report.ok {
            a.resolve(&key, format!("{policy}: the restore drill passed"))
                .await;
        } else {
            let mut alert = Alert::new(
                EventKind::Failure,
                key,
                format!("{policy}: the restore drill failed"),
                report.problems.join("\n"),
            );
            alert.policy = Some(policy.clone());
            a.raise(alert).await;
        }
    }

    async fn reverified(&self, pass: &crate::reverify::Pass) {
        use crate::reverify::Flip;
        let read = pass
            .outcomes
            .iter()
            .filter(|o| o.flip != Some(Flip::Removed));
        let (ok, bad): (Vec<_>, Vec<_>) = read.partition(|o| o.ok);
        if let Some(m) = &self.metrics {
            let bytes = ok.iter().chain(&bad).map(|o| o.bytes).sum();
            let at = pass.at.map_or(0.0, |t| t.timestamp() as f64);
            m.record_reverify(
                ok.len() as u64,
                bad.len() as u64,
                bytes,
                pass.corrupt as u64,
                at,
            );
        }
        tracing::info!(
            read = ok.len() + bad.len(),
            corrupt = pass.corrupt,
            "re-verification pass"
        );
        let Some(a) = self.alerter() else { return };
        for o in &pass.outcomes {
            let key = AlertKey::Corrupt(o.archive.clone());
            match o.flip {
                Some(Flip::Corrupted) => {
                    tracing::error!(archive = %o.archive, problem = ?o.problem, "an old archive is corrupt");
                    let mut alert = Alert::new(
                        EventKind::Failure,
                        key,
                        format!("{}: the archive is corrupt", o.archive),
                        format!(
                            "{}: {} (found by periodic re-verification; make a good copy while the data is still at the source)",
                            o.archive,
                            o.problem.as_deref().unwrap_or("corrupt")
                        ),
                    );
                    alert.policy = o.archive.split('/').next().map(str::to_string);
                    a.raise(alert).await;
                }
                Some(Flip::Repaired) => {
                    a.resolve(&key, format!("{}: the archive verifies again", o.archive))
                        .await
                }
                Some(Flip::Removed) => {
                    a.resolve(&key, format!("{}: the archive is gone", o.archive))
                        .await
                }
                None => {}
            }
        }
    }

    async fn succeeded(
        &self,
        spec: &JobSpec,
        o: &ExportOutcome,
        elapsed: Duration,
        untimed_known: Option<(u64, DateTime<Utc>)>,
    ) {
        let id = spec.id();
        {
            let (me, spec, o) = (self.clone(), spec.clone(), o.clone());
            off_workers(move || {
                let now = Utc::now();
                let written = me.update(&spec, |e| {
                    if let Some(to) = o.watermark {
                        // Never move a watermark backwards (an overlap re-read ends
                        // where it ended).
                        e.watermark = Some(e.watermark.map_or(to, |old| old.max(to)));
                    }
                    // A chain run that wrote nothing still read the changes up to its
                    // cut: the next one reads on from there.
                    e.cut = match (&o.manifest, o.cut, &o.builds_on) {
                        (None, Some(cut), Some(after)) => Some(crate::state::Cut {
                            cut,
                            token: o.token.clone(),
                            after: after.clone(),
                        }),
                        _ => None,
                    };
                    e.last_success = Some(now);
                    e.consecutive_failures = 0;
                    e.successes += 1;
                    e.last_documents = o.documents;
                    e.last_bytes = o.bytes;
                    if let Some(k) = o.archive.as_ref().and_then(|a| a.key()) {
                        e.last_archive = Some(k.rsplit('/').next().unwrap_or(k).to_string());
                    }
                    if o.untimed.is_some() {
                        e.untimed = o.untimed;
                        e.untimed_checked_at = Some(now);
                    }
                });
                if let Err(e) = written {
                    tracing::error!(error = %e, "cannot write state.json (the archive is safe; its manifest rebuilds the state)");
                }
                let mut entry = audit_entry(&spec, true)
                    .detail(format!("{} documents, {} bytes", o.documents, o.bytes));
                if let Some(a) = &o.archive {
                    entry = entry.archive(a.name(&me.root));
                }
                audit::append(&me.root, &entry);
            })
            .await;
        }
        tracing::info!(
            job = %id,
            documents = o.documents,
            bytes = o.bytes,
            archive = %o.archive.as_ref().map_or("none (no documents)".into(), |a| a.to_string()),
            "export succeeded"
        );
        if let Some(n) = o.untimed.filter(|n| *n > 0) {
            tracing::warn!(job = %id, documents = n, time_field = %spec.collection.time_field,
                "documents without a valid date in the time field are not in any window");
        } else if let Some((n, at)) = untimed_known.filter(|(n, _)| o.untimed.is_none() && *n > 0) {
            tracing::warn!(job = %id, documents = n, counted_at = %at, time_field = %spec.collection.time_field,
                "documents without a valid date in the time field were not in any window at the last count");
        }
        let result = RunResult::Success {
            documents: o.documents,
            bytes: o.bytes,
        };
        self.count(spec, result, elapsed);
        if let Some(a) = self.alerter() {
            a.resolve(
                &AlertKey::Failures(id.clone()),
                format!("{id} backed up again"),
            )
            .await;
            let mut alert = Alert::new(
                EventKind::Success,
                AlertKey::Success(id.clone()),
                format!("{id} backed up"),
                format!("{} documents, {} bytes", o.documents, o.bytes),
            );
            alert.policy = Some(spec.policy.clone());
            alert.collection = Some(spec.collection.name.clone());
            a.notify(alert).await;
        }
    }

    async fn failed(
        &self,
        spec: &JobSpec,
        error: &(dyn std::error::Error + Sync),
        elapsed: Duration,
    ) {
        let id = spec.id();
        let message = self.shown(error);
        tracing::error!(job = %id, error = %message, "export failed");
        let failures = {
            let (me, spec, message) = (self.clone(), spec.clone(), message.clone());
            tokio::task::spawn_blocking(move || {
                let failures = me.update(&spec, |e| {
                    e.last_failure = Some(Utc::now());
                    e.last_error = Some(message.clone());
                    e.consecutive_failures += 1;
                    e.failures += 1;
                });
                audit::append(&me.root, &audit_entry(&spec, false).detail(message));
                match failures {
                    Ok(e) => e.consecutive_failures,
                    Err(e) => {
                        tracing::error!(error = %e, "cannot write state.json");
                        1
                    }
                }
            })
            .await
            .unwrap_or(1)
        };
        self.count(spec, RunResult::Failure, elapsed);
        if let Some(a) = self.alerter()
            && failures >= self.failure_threshold
        {
            let mut alert = Alert::new(
                EventKind::Failure,
                AlertKey::Failures(id.clone()),
                format!("{id}: {failures} consecutive failures"),
                message,
            );
            alert.policy = Some(spec.policy.clone());
            alert.collection = Some(spec.collection.name.clone());
            a.raise(alert).await;
        }
    }

    async fn checked(
        &self,
        spec: &JobSpec,
        report: &crate::verify::Report,
        key_problem: Option<String>,
    ) {
        let (root, copy) = (self.root.clone(), report.clone());
        let Ok(record) =
            tokio::task::spawn_blocking(move || crate::verify::log::record(&root, &copy)).await
        else {
            return;
        };
        let Some(a) = self.alerter() else { return };
        // A key that cannot open the archive is a configuration problem of the policy,
        // not damage: its own alert, and the archive's verification is left alone.
        let identity = AlertKey::Identity(spec.policy.clone());
        match &key_problem {
            Some(why) => {
                tracing::error!(policy = %spec.policy, "{why}");
                let mut alert = Alert::new(
                    EventKind::Failure,
                    identity,
                    format!("{}: the identity cannot open new archives", spec.policy),
                    why.clone(),
                );
                alert.policy = Some(spec.policy.clone());
                alert.collection = Some(spec.collection.name.clone());
                a.raise(alert).await;
            }
            None => {
                a.resolve(
                    &identity,
                    format!("{}: the identity opens new archives", spec.policy),
                )
                .await
            }
        }
        let id = spec.id();
        let key = AlertKey::Verify(id.clone());
        if report.corrupt() {
            tracing::error!(archive = %record.archive, problems = ?record.problems, "new archive is corrupt");
            let mut alert = Alert::new(
                EventKind::Failure,
                key,
                format!("{id}: the new archive is corrupt"),
                format!("{}: {}", record.archive, record.problems.join("; ")),
            );
            alert.policy = Some(spec.policy.clone());
            alert.collection = Some(spec.collection.name.clone());
            a.raise(alert).await;
        } else if report.ok() {
            tracing::debug!(archive = %record.archive, "new archive verified");
            a.resolve(&key, format!("{id}: the new archive verified"))
                .await;
        }
    }

    fn count(&self, spec: &JobSpec, result: RunResult, elapsed: Duration) {
        if let Some(m) = &self.metrics {
            let now = Utc::now().timestamp() as f64;
            m.record_run(
                &spec.policy,
                &spec.collection.name,
                result,
                elapsed.as_secs_f64(),
                now,
            );
        }
    }

    /// Read-modify-write the job's entry of the state (blocking); the entry written.
    fn update(
        &self,
        spec: &JobSpec,
        f: impl FnOnce(&mut CollectionState),
    ) -> std::io::Result<CollectionState> {
        State::update(&self.root, &self.target, &spec.id(), |e| {
            e.policy = spec.policy.clone();
            e.database = spec.database.clone();
            e.collection = spec.collection.name.clone();
            e.runs += 1;
            f(e);
        })
    }
}

fn audit_entry(spec: &JobSpec, ok: bool) -> audit::Entry {
    audit::Entry::new(audit::Operation::Run, ok)
        .policy(spec.policy.clone())
        .source(format!("{}.{}", spec.database, spec.collection.name))
}

/// State and audit writes fsync: keep them off the async workers, which other
/// collections' cursors need meanwhile.
async fn off_workers(f: impl FnOnce() + Send + 'static) {
    if let Err(e) = tokio::task::spawn_blocking(f).await {
        tracing::error!(error = %e, "recording a result failed");
    }
}
