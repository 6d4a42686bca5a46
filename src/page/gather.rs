//! What the page shows, read from where dcb keeps it: the status (state, catalog,
//! chain coverage, next runs), the audit log's failed runs, the disk, the alerts, and
//! the drill and verification logs. Every free text is redacted here.

use chrono::{DateTime, TimeDelta, Utc};

use super::{AlertView, ArchiveBar, CollectionView, DiskView, Page, PolicyView, Span, recent};
use crate::config::Settings;
use crate::policy::Policy;
use crate::state::State;
use crate::{catalog, redact, status, storage};

/// How many drills and verifications the page lists.
pub const RECENT: usize = 10;

/// What only the running service knows.
#[derive(Debug, Clone, Default)]
pub struct Live {
    pub running: bool,
    /// The keys of the alerts raised and not resolved.
    pub active_alerts: Vec<String>,
}

/// Read everything the page shows for `policies` (blocking: files and the catalog).
pub fn gather(settings: &Settings, policies: &[Policy], live: Live, now: DateTime<Utc>) -> Page {
    let root = &settings.backup_root;
    let logs = storage::logs_dir(root);
    let shown = |s: &str| redact::text(s, &settings.mongodb_uri);
    let target = settings.target();
    let state = State::load(root, &target);
    let found = catalog::scan(&target);
    let jobs = status::jobs(settings, policies, &state, &found);
    let st = status::compute(&jobs, &state, &found, status::read_service(root), now);
    let failures = recent::failed_runs(&logs);
    let policies = jobs
        .iter()
        .zip(&st.policies)
        .map(|((policy, specs), ps)| {
            let since = TimeDelta::from_std(policy.retention.0)
                .ok()
                .and_then(|r| now.checked_sub_signed(r))
                .unwrap_or(DateTime::<Utc>::MIN_UTC);
            PolicyView {
                name: ps.name.clone(),
                enabled: ps.enabled,
                schedule: ps.schedule.clone(),
                timezone: ps.timezone.clone(),
                next_run: ps.next_run,
                collections: specs
                    .iter()
                    .zip(&ps.collections)
                    .map(|(spec, cs)| {
                        let mut archives: Vec<ArchiveBar> = found
                            .iter()
                            .map(|f| &f.manifest)
                            .filter(|m| {
                                m.policy == spec.policy
                                    && m.database == spec.database
                                    && m.collection == spec.collection.name
                            })
                            .map(|m| ArchiveBar {
                                name: m.archive.clone(),
                                from: m.from,
                                to: m.to,
                                finished_at: m.finished_at,
                                documents: m.documents,
                                bytes: m.bytes,
                            })
                            .collect();
                        archives.sort_by_key(|a| (a.to, a.from));
                        let source = format!("{}.{}", spec.database, spec.collection.name);
                        let mine: Vec<&recent::FailedRun> = failures
                            .iter()
                            .filter(|f| f.policy == spec.policy && f.source == source)
                            .collect();
                        let mut failed = failed_spans(&archives, &mine, since);
                        for f in &mut failed {
                            f.reason = shown(&f.reason);
                        }
                        CollectionView {
                            database: cs.database.clone(),
                            collection: cs.collection.clone(),
                            exact: cs.exact,
                            restorable_from: cs.restorable.from,
                            restorable_to: cs.restorable.to,
                            last_success: cs.last_success,
                            last_failure: cs.last_failure,
                            last_error: cs.last_error.as_deref().map(shown),
                            consecutive_failures: cs.consecutive_failures,
                            gaps: cs
                                .restorable
                                .gaps
                                .iter()
                                .map(|g| Span {
                                    from: Some(g.from),
                                    to: g.to,
                                    reason: shown(&g.reason),
                                })
                                .collect(),
                            archives,
                            failed,
                        }
                    })
                    .collect(),
            }
        })
        .collect();
    let disk = match (fs4::available_space(root), fs4::total_space(root)) {
        (Ok(available), Ok(total)) => Some(DiskView {
            available,
            total,
            used_by_backups: found.iter().map(|f| f.size).sum(),
            growth_per_day: growth_per_day(
                &found
                    .iter()
                    .map(|f| (f.manifest.finished_at, f.size))
                    .collect::<Vec<_>>(),
                now,
            ),
        }),
        _ => None,
    };
    let lines = recent::alert_lines(&logs);
    let alerts = live
        .active_alerts
        .iter()
        .map(|key| {
            let raised = lines
                .iter()
                .rev()
                .find(|l| l.key == *key && l.kind != "resolved");
            AlertView {
                key: key.clone(),
                title: raised.map(|l| shown(&l.title)),
                since: raised.map(|l| l.time),
            }
        })
        .collect();
    let mut drills = recent::drills(&logs, RECENT);
    for d in &mut drills {
        d.problems = d.problems.iter().map(|p| shown(p)).collect();
        for c in &mut d.collections {
            c.problem = c.problem.as_deref().map(shown);
        }
    }
    let mut verifications = recent::verifications(&logs, RECENT);
    for v in &mut verifications {
        v.problem = v.problem.as_deref().map(shown);
        v.problems = v.problems.iter().map(|p| shown(p)).collect();
    }
    Page {
        now,
        timezone: settings.timezone,
        running: live.running,
        policies,
        disk,
        alerts,
        drills,
        verifications,
    }
}

/// The windows failed runs did not export: from the end of the newest archive
/// before each failure (open when there is none) to the failure. Only failures since
/// `since` (the retention).
pub fn failed_spans(
    archives: &[ArchiveBar],
    failures: &[&recent::FailedRun],
    since: DateTime<Utc>,
) -> Vec<Span> {
    failures
        .iter()
        .filter(|f| f.at >= since)
        .map(|f| Span {
            from: archives.iter().map(|a| a.to).filter(|to| *to <= f.at).max(),
            to: Some(f.at),
            reason: f.detail.clone(),
        })
        .collect()
}

/// Bytes per day of the archives finished in the last 7 days (`(finished, size)`),
/// over the time they span (at least a day); `None` without any.
pub fn growth_per_day(archives: &[(DateTime<Utc>, u64)], now: DateTime<Utc>) -> Option<f64> {
    let since = now - TimeDelta::days(7);
    let recent: Vec<&(DateTime<Utc>, u64)> =
        archives.iter().filter(|(at, _)| *at >= since).collect();
    let oldest = recent.iter().map(|(at, _)| *at).min()?;
    let days = ((now - oldest).num_seconds() as f64 / 86_400.0).max(1.0);
    Some(recent.iter().map(|(_, s)| *s).sum::<u64>() as f64 / days)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().to_utc()
    }

    fn bar(to: &str) -> ArchiveBar {
        ArchiveBar {
            name: format!("{to}.tar.gz"),
            from: None,
            to: t(to),
            finished_at: t(to),
            documents: 1,
            bytes: 1,
        }
    }

    fn failure(at: &str) -> recent::FailedRun {
        recent::FailedRun {
            at: t(at),
            policy: "p".into(),
            source: "db.a".into(),
            detail: "down".into(),
        }
    }

    // A failed window starts where the newest archive before it ends; one with no
    // archive before is open; failures older than the retention are left out.
    #[test]
    fn failed_windows_follow_the_archives() {
        let archives = [bar("2026-12-01T08:00:00Z"), bar("2026-12-01T10:00:00Z")];
        let (a, b, c) = (
            failure("2026-12-01T07:00:00Z"),
            failure("2026-12-01T09:30:00Z"),
            failure("2026-11-01T00:00:00Z"),
        );
        let spans = failed_spans(&archives, &[&a, &b, &c], t("2026-11-30T00:00:00Z"));
        assert_eq!(
            spans,
            vec![
                Span {
                    from: None,
                    to: Some(t("2026-12-01T07:00:00Z")),
                    reason: "down".into()
                },
                Span {
                    from: Some(t("2026-12-01T08:00:00Z")),
                    to: Some(t("2026-12-01T09:30:00Z")),
                    reason: "down".into()
                },
            ]
        );
    }

    // Growth is the last week's bytes over the days they span, at least one day.
    #[test]
    fn growth_over_the_last_week() {
        let now = t("2026-12-08T00:00:00Z");
        assert_eq!(growth_per_day(&[], now), None);
        let archives = [
            (t("2026-11-01T00:00:00Z"), 1_000_000),
            (t("2026-12-04T00:00:00Z"), 400),
            (t("2026-12-06T00:00:00Z"), 400),
        ];
        assert_eq!(growth_per_day(&archives, now), Some(200.0));
        assert_eq!(
            growth_per_day(&[(t("2026-12-07T23:00:00Z"), 50)], now),
            Some(50.0)
        );
    }
}
