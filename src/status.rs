//! How things stand, in the seed's status shape: the state, the archives on disk and
//! the service's heartbeat record (`<backupRoot>/logs/service.json`). Works whether
//! the service runs or not.

mod leases;

pub use leases::{LeaseView, Leases, leases};

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::time::Duration;

use chrono::{DateTime, SecondsFormat, Utc};
use serde::{Deserialize, Serialize};

use crate::catalog::Found;
use crate::config::Settings;
use crate::plan::JobSpec;
use crate::policy::Policy;
use crate::state::State;
use crate::storage;

/// How often the service refreshes its record.
pub const HEARTBEAT: Duration = Duration::from_secs(5);

/// What the running service says about itself.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ServiceRecord {
    pub pid: u32,
    pub host: String,
    pub started_at: DateTime<Utc>,
    pub heartbeat_at: DateTime<Utc>,
    #[serde(default)]
    pub stopped_at: Option<DateTime<Utc>>,
    /// Job ids being exported now.
    #[serde(default)]
    pub active_jobs: Vec<String>,
    #[serde(default)]
    pub http: Option<String>,
}

pub fn service_path(root: &Path) -> PathBuf {
    storage::logs_dir(root).join("service.json")
}

/// `dcb stop` asks the service to stop by creating this file (works on every OS).
pub fn stop_request_path(root: &Path) -> PathBuf {
    storage::logs_dir(root).join("stop.request")
}

pub fn read_service(root: &Path) -> Option<ServiceRecord> {
    let bytes = std::fs::read(service_path(root)).ok()?;
    serde_json::from_slice(&bytes).ok()
}

pub fn write_service(root: &Path, record: &ServiceRecord) -> std::io::Result<()> {
    let bytes = serde_json::to_vec_pretty(record).expect("serializable");
    storage::write_atomic(&service_path(root), &bytes)
}

impl ServiceRecord {
    /// Alive: not stopped, a recent heartbeat, and its process still there (checked
    /// on this host only; a record from another host trusts the heartbeat).
    pub fn is_alive(&self, now: DateTime<Utc>) -> bool {
        let fresh = (now - self.heartbeat_at)
            .to_std()
            .is_ok_and(|age| age <= HEARTBEAT * 3)
            || self.heartbeat_at > now;
        self.stopped_at.is_none()
            && fresh
            && (self.host != crate::host::hostname() || process_exists(self.pid))
    }
}

/// Whether a process with this id runs: signal 0 checks without sending anything.
#[cfg(unix)]
pub fn process_exists(pid: u32) -> bool {
    let Ok(pid) = libc::pid_t::try_from(pid) else {
        return false;
    };
    if pid <= 0 {
        return false;
    }
    // SAFETY: kill(2) with signal 0 only checks that the pid exists and may be signalled.
    let rc = unsafe { libc::kill(pid, 0) };
    // EPERM: it exists, under another user.
    rc == 0 || std::io::Error::last_os_error().raw_os_error() == Some(libc::EPERM)
}

/// Whether a process with this id runs: it opens, and has no exit code yet.
#[cfg(windows)]
pub fn process_exists(pid: u32) -> bool {
    use windows_sys::Win32::Foundation::{
        CloseHandle, ERROR_ACCESS_DENIED, GetLastError, STILL_ACTIVE,
    };
    use windows_sys::Win32::System::Threading::{
        GetExitCodeProcess, OpenProcess, PROCESS_QUERY_LIMITED_INFORMATION,
    };
    if pid == 0 {
        return false;
    }
    // SAFETY: plain Win32 calls on a handle this function opens and closes; `code`
    // outlives the call that writes it.
    unsafe {
        let handle = OpenProcess(PROCESS_QUERY_LIMITED_INFORMATION, 0, pid);
        if handle.is_null() {
            // Denied: it exists, under another account.
            return GetLastError() == ERROR_ACCESS_DENIED;
        }
        let mut code = 0u32;
        let ok = GetExitCodeProcess(handle, &mut code) != 0;
        CloseHandle(handle);
        ok && code == STILL_ACTIVE as u32
    }
}

#[cfg(not(any(unix, windows)))]
pub fn process_exists(_pid: u32) -> bool {
    true
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Status {
    pub is_running: bool,
    /// Seconds since the service started (0 when it is not running).
    pub uptime: u64,
    pub active_jobs: usize,
    pub pid: Option<u32>,
    pub last_heartbeat: Option<DateTime<Utc>>,
    pub statistics: Statistics,
    pub policies: Vec<PolicyStatus>,
    /// Who holds which lease, when a policy runs under one (`lock: mongodb`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub leases: Option<Leases>,
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Statistics {
    pub total_backups: u64,
    pub success_count: u64,
    pub failure_count: u64,
    /// As the seed wrote it: `"98.72%"`.
    pub success_rate: String,
    /// As the seed wrote it: `"1234.56"`.
    #[serde(rename = "totalSizeMB")]
    pub total_size_mb: String,
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PolicyStatus {
    pub name: String,
    pub enabled: bool,
    pub schedule: String,
    pub timezone: String,
    pub next_run: Option<DateTime<Utc>>,
    /// Where its archives go (`local` is the backup root).
    pub targets: Vec<String>,
    pub collections: Vec<CollectionStatus>,
    /// The policy's last restore drill (drills.log), if it had one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_drill: Option<crate::drill::Report>,
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct CollectionStatus {
    pub collection: String,
    pub database: String,
    pub last_success: Option<DateTime<Utc>>,
    pub last_failure: Option<DateTime<Utc>>,
    pub last_error: Option<String>,
    pub consecutive_failures: u32,
    pub watermark: Option<DateTime<Utc>>,
    pub archive_count: usize,
    pub archive_bytes: u64,
    /// How far back the collection can be restored, and the gaps (see `chain`).
    pub restorable: crate::chain::Coverage,
    /// Whether the collection's archives form chains (its policy sets `full`): a
    /// restore brings it back as it was; otherwise the documents of its windows.
    pub exact: bool,
}

/// Put together the status from what is on disk.
pub fn compute(
    jobs: &[(Policy, Vec<JobSpec>)],
    state: &State,
    found: &[Found],
    service: Option<ServiceRecord>,
    now: DateTime<Utc>,
) -> Status {
    let mut archives: BTreeMap<String, (usize, u64)> = BTreeMap::new();
    let mut total_bytes = 0u64;
    for f in found {
        let size = f.size;
        total_bytes += size;
        let m = &f.manifest;
        let e = archives
            .entry(crate::plan::job_id(&m.policy, &m.database, &m.collection))
            .or_default();
        e.0 += 1;
        e.1 += size;
    }
    let (mut successes, mut failures) = (0u64, 0u64);
    for c in state.collections.values() {
        successes += c.successes;
        failures += c.failures;
    }
    let total = successes + failures;
    let alive = service.as_ref().filter(|s| s.is_alive(now));
    let policies = jobs
        .iter()
        .map(|(p, specs)| PolicyStatus {
            name: p.name.clone(),
            enabled: p.enabled,
            schedule: p.schedule.pattern().to_string(),
            timezone: p.timezone.name().to_string(),
            next_run: p
                .enabled
                .then(|| p.schedule.next_after(&now.with_timezone(&p.timezone)))
                .flatten()
                .map(|t| t.with_timezone(&Utc)),
            targets: p
                .targets
                .clone()
                .unwrap_or_else(|| vec![crate::config::storage::LOCAL.to_string()]),
            last_drill: None,
            collections: specs
                .iter()
                .map(|j| {
                    let st = state.collections.get(&j.id()).cloned().unwrap_or_default();
                    let (count, bytes) = archives.get(&j.id()).copied().unwrap_or_default();
                    let mine: Vec<&Found> = found
                        .iter()
                        .filter(|f| {
                            let m = &f.manifest;
                            m.policy == j.policy
                                && m.database == j.database
                                && m.collection == j.collection.name
                        })
                        .collect();
                    CollectionStatus {
                        collection: j.collection.name.clone(),
                        database: j.database.clone(),
                        last_success: st.last_success,
                        last_failure: st.last_failure,
                        last_error: st.last_error,
                        consecutive_failures: st.consecutive_failures,
                        watermark: st.watermark,
                        archive_count: count,
                        archive_bytes: bytes,
                        restorable: crate::chain::coverage_of(&mine),
                        exact: mine.iter().any(|f| f.manifest.in_chain()),
                    }
                })
                .collect(),
        })
        .collect();
    Status {
        is_running: alive.is_some(),
        uptime: alive
            .map(|s| (now - s.started_at).num_seconds().max(0) as u64)
            .unwrap_or(0),
        active_jobs: alive.map_or(0, |s| s.active_jobs.len()),
        pid: alive.map(|s| s.pid),
        last_heartbeat: service.as_ref().map(|s| s.heartbeat_at),
        statistics: Statistics {
            total_backups: total,
            success_count: successes,
            failure_count: failures,
            success_rate: if total == 0 {
                "n/a".into()
            } else {
                format!("{:.2}%", successes as f64 * 100.0 / total as f64)
            },
            total_size_mb: format!("{:.2}", total_bytes as f64 / 1_048_576.0),
        },
        policies,
        leases: None,
    }
}

/// Load everything `compute` needs for `settings`.
pub fn gather(settings: &Settings, policies: &[Policy]) -> Status {
    let state = State::load(&settings.backup_root, &settings.target());
    let found = crate::catalog::scan(&settings.target());
    let jobs = jobs(settings, policies, &state, &found);
    let mut status = compute(
        &jobs,
        &state,
        &found,
        read_service(&settings.backup_root),
        Utc::now(),
    );
    for (p, (policy, _)) in status.policies.iter_mut().zip(&jobs) {
        p.targets = settings.target_names_for(policy).to_vec();
    }
    let mut drills = crate::drill::log::latest(&settings.backup_root);
    for p in &mut status.policies {
        p.last_drill = drills.remove(&p.name);
    }
    status
}

/// Each policy with its collections: the ones it names, and those its patterns
/// matched as far as the state and the archives know.
pub fn jobs(
    settings: &Settings,
    policies: &[Policy],
    state: &State,
    found: &[Found],
) -> Vec<(Policy, Vec<JobSpec>)> {
    policies
        .iter()
        .map(|p| {
            let db = settings.database_for(p).unwrap_or_else(|_| "?".into());
            // Collections a pattern matched are known by what runs left behind.
            let known = known_collections(&p.name, &db, state, found);
            let specs = crate::discover::expand(p, &db, &known, &settings.exclude)
                .0
                .into_iter()
                .map(|c| JobSpec {
                    policy: p.name.clone(),
                    database: db.clone(),
                    collection: c,
                })
                .collect();
            (p.clone(), specs)
        })
        .collect()
}

/// The collections of `policy` in `database` that the state or an archive names,
/// sorted.
pub fn known_collections(
    policy: &str,
    database: &str,
    state: &State,
    found: &[Found],
) -> Vec<String> {
    let prefix = format!("{policy}/{database}/");
    let mut out: std::collections::BTreeSet<String> = state
        .collections
        .keys()
        .filter_map(|id| id.strip_prefix(&prefix).map(str::to_owned))
        .collect();
    out.extend(
        found
            .iter()
            .map(|f| &f.manifest)
            .filter(|m| m.policy == policy && m.database == database)
            .map(|m| m.collection.clone()),
    );
    out.into_iter().collect()
}

fn ago(t: Option<DateTime<Utc>>, now: DateTime<Utc>) -> String {
    match t {
        None => "never".into(),
        Some(t) => {
            let s = (now - t).num_seconds();
            match s {
                s if s < 0 => format!("in {}", human_secs(-s)),
                s => format!("{} ago", human_secs(s)),
            }
        }
    }
}

fn human_secs(s: i64) -> String {
    match s {
        s if s < 120 => format!("{s}s"),
        s if s < 7200 => format!("{}m", s / 60),
        s if s < 172_800 => format!("{}h", s / 3600),
        s => format!("{}d", s / 86_400),
    }
}

/// A compact table for people.
pub fn render_human(status: &Status, now: DateTime<Utc>) -> String {
    let mut out = String::new();
    let s = &status.statistics;
    if status.is_running {
        let _ = writeln!(
            out,
            "service: running (pid {}, up {}, {} active job{})",
            status.pid.unwrap_or(0),
            human_secs(status.uptime as i64),
            status.active_jobs,
            if status.active_jobs == 1 { "" } else { "s" }
        );
    } else {
        let _ = writeln!(
            out,
            "service: not running{}",
            status
                .last_heartbeat
                .map(|t| format!(" (last heartbeat {})", ago(Some(t), now)))
                .unwrap_or_default()
        );
    }
    let _ = writeln!(
        out,
        "backups: {} total, {} ok, {} failed, success rate {}, {} MB on disk\n",
        s.total_backups, s.success_count, s.failure_count, s.success_rate, s.total_size_mb
    );
    let width = status
        .policies
        .iter()
        .flat_map(|p| {
            p.collections
                .iter()
                .map(move |c| p.name.len() + c.collection.len() + 1)
        })
        .max()
        .unwrap_or(10)
        .max(10);
    let _ = writeln!(
        out,
        "{:width$}  {:>12}  {:>8}  {:>8}  {:>10}  {:<24}  last error",
        "collection", "last success", "failures", "archives", "size", "watermark"
    );
    for p in &status.policies {
        for c in &p.collections {
            let _ = writeln!(
                out,
                "{:width$}  {:>12}  {:>8}  {:>8}  {:>10}  {:<24}  {}",
                format!("{}/{}", p.name, c.collection),
                ago(c.last_success, now),
                c.consecutive_failures,
                c.archive_count,
                format!("{:.1} MB", c.archive_bytes as f64 / 1e6),
                c.watermark
                    .map(|w| w.to_rfc3339_opts(SecondsFormat::Secs, true))
                    .unwrap_or_else(|| "-".into()),
                c.last_error
                    .as_deref()
                    .filter(|_| c.consecutive_failures > 0)
                    .unwrap_or("")
            );
        }
        let next = p
            .next_run
            .map(|t| {
                format!(
                    "next run {} ({})",
                    t.with_timezone(
                        &p.timezone
                            .parse::<chrono_tz::Tz>()
                            .unwrap_or(chrono_tz::Tz::UTC)
                    )
                    .format("%Y-%m-%d %H:%M %Z"),
                    ago(Some(t), now)
                )
            })
            .unwrap_or_else(|| "disabled".into());
        let targets = if p.targets.len() == 1 && p.targets[0] == crate::config::storage::LOCAL {
            String::new()
        } else {
            format!("  to {}", p.targets.join(" + "))
        };
        let _ = writeln!(out, "  {}: {}  [{}]{targets}", p.name, next, p.schedule);
        if let Some(d) = &p.last_drill {
            let _ = writeln!(
                out,
                "  {}: last drill {} {}{}",
                p.name,
                if d.ok { "passed" } else { "FAILED" },
                ago(Some(d.at), now),
                d.problems
                    .first()
                    .map(|x| format!(": {x}"))
                    .unwrap_or_default()
            );
        }
    }
    out.push_str(&render_coverage(status));
    if let Some(l) = &status.leases {
        out.push_str(&leases::render(l, now));
    }
    out
}

/// Per collection, how far back it can be restored and every gap in between.
fn render_coverage(status: &Status) -> String {
    let t = |d: DateTime<Utc>| d.format("%Y-%m-%d %H:%M").to_string();
    let mut out = String::from("\nrestorable (UTC):\n");
    for p in &status.policies {
        for c in &p.collections {
            let r = &c.restorable;
            let what = if c.exact {
                "as it was"
            } else {
                "the documents of the windows"
            };
            let _ = match (r.from, r.to) {
                (Some(a), Some(b)) => writeln!(
                    out,
                    "  {}/{}: {what}, {} .. {}",
                    p.name,
                    c.collection,
                    t(a),
                    t(b)
                ),
                _ => writeln!(out, "  {}/{}: nothing yet", p.name, c.collection),
            };
            for g in &r.gaps {
                let _ = writeln!(
                    out,
                    "    gap {} .. {}: {}",
                    t(g.from),
                    g.to.map_or_else(|| "now".to_string(), t),
                    g.reason
                );
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    // This process exists; one that has exited and been reaped does not.
    #[test]
    fn process_liveness() {
        assert!(process_exists(std::process::id()));
        let mut child = std::process::Command::new(std::env::current_exe().unwrap())
            .arg("--list")
            .stdout(std::process::Stdio::null())
            .spawn()
            .unwrap();
        let pid = child.id();
        child.wait().unwrap();
        assert!(!process_exists(pid));
    }

    // A fresh record of a process that is gone (a crash) is not alive, so a new
    // service may start at once.
    #[test]
    fn crashed_service_is_not_alive() {
        let mut child = std::process::Command::new(std::env::current_exe().unwrap())
            .arg("--list")
            .stdout(std::process::Stdio::null())
            .spawn()
            .unwrap();
        let pid = child.id();
        child.wait().unwrap();
        let now = Utc::now();
        let record = |pid| ServiceRecord {
            pid,
            host: crate::host::hostname(),
            started_at: now,
            heartbeat_at: now,
            stopped_at: None,
            active_jobs: vec![],
            http: None,
        };
        assert!(!record(pid).is_alive(now));
        assert!(record(std::process::id()).is_alive(now));
    }
}
