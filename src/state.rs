//! Per-collection progress: watermark, last success and failure, counts. Kept in
//! `<backupRoot>/logs/state.json`, written atomically. The manifests on disk are the
//! truth: a missing or corrupt state file is rebuilt from them.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::catalog::{self, Found};
use crate::plan::{Watermarks, job_id};
use crate::policy::Mode;
use crate::storage::{self, Target};

pub const FILE: &str = "state.json";

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct State {
    pub version: u32,
    /// By job id `<policy>/<database>/<collection>`.
    pub collections: BTreeMap<String, CollectionState>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct CollectionState {
    pub policy: String,
    pub database: String,
    pub collection: String,
    /// End of the last successfully exported window: the next run starts here.
    pub watermark: Option<DateTime<Utc>>,
    pub last_success: Option<DateTime<Utc>>,
    pub last_failure: Option<DateTime<Utc>>,
    pub last_error: Option<String>,
    pub consecutive_failures: u32,
    pub last_documents: u64,
    pub last_bytes: u64,
    pub last_archive: Option<String>,
    pub runs: u64,
    pub successes: u64,
    pub failures: u64,
    pub untimed: Option<u64>,
    pub untimed_checked_at: Option<DateTime<Utc>>,
    /// For a chain: a cut reached by a run that wrote no archive (nothing changed).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cut: Option<Cut>,
}

/// A chain's cut that no manifest records, and the archive it follows.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Cut {
    pub cut: crate::export::manifest::ClusterTime,
    /// The change stream's resume token there.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token: Option<String>,
    /// The chain's newest archive when the cut was taken: the cut counts only while
    /// that archive is still the newest.
    pub after: String,
}

pub fn path(root: &Path) -> PathBuf {
    storage::logs_dir(root).join(FILE)
}

fn lock_path(root: &Path) -> PathBuf {
    storage::logs_dir(root).join(".state.lock")
}

impl State {
    /// The watermarks recorded, by job id.
    pub fn watermarks(&self) -> Watermarks {
        self.collections
            .iter()
            .filter_map(|(id, c)| c.watermark.map(|w| (id.clone(), w)))
            .collect()
    }

    /// Load the state; rebuild it from the manifests when missing or unreadable, and
    /// say so when the rebuild recovered anything.
    pub fn load(root: &Path, target: &Arc<dyn Target>) -> State {
        Self::load_inner(root, target, true)
    }

    /// As [`State::load`], for a run that is about to write: a rebuilt state is saved
    /// at once, so the updates at the end of the run start from it instead of
    /// rebuilding again from manifests that then include the run's own archives.
    ///
    /// A state file that is behind the manifests (dcb stopped, or could not write the
    /// state, after an archive was committed) catches up with them, so that window is
    /// not exported twice. `found` is the catalog of `target`, read with the locks
    /// held. Call with the locks of the policies to run held.
    pub fn load_for_run(root: &Path, target: &Arc<dyn Target>, found: &[Found]) -> State {
        let Ok(_lock) = storage::lock(&lock_path(root)) else {
            return State::load(root, target);
        };
        remove_temp_leftovers(root);
        let mut state = Self::load_inner(root, target, true);
        let mut save = !path(root).is_file();
        if !save {
            for id in state.catch_up(found) {
                tracing::warn!(job = %id, "state.json was behind the archives on disk; took the watermark from the newest manifest");
                save = true;
            }
        }
        if save {
            let bytes = serde_json::to_vec_pretty(&state).expect("state serializes");
            if let Err(e) = storage::write_atomic(&path(root), &bytes) {
                tracing::warn!(error = %e, "cannot save state.json");
            }
        }
        state
    }

    /// Bring watermarks and last successes up to the manifests in `found`; returns the
    /// job ids that moved.
    pub fn catch_up(&mut self, found: &[Found]) -> Vec<String> {
        let mut moved = Vec::new();
        for f in found {
            let m = &f.manifest;
            let id = job_id(&m.policy, &m.database, &m.collection);
            let entry = self
                .collections
                .entry(id.clone())
                .or_insert_with(|| CollectionState {
                    policy: m.policy.clone(),
                    database: m.database.clone(),
                    collection: m.collection.clone(),
                    ..CollectionState::default()
                });
            let ahead = m.mode == Mode::Incremental && entry.watermark.is_none_or(|w| m.to > w);
            let newer = entry.last_success.is_none_or(|t| m.finished_at > t);
            if ahead {
                entry.watermark = Some(m.to);
            }
            if newer {
                entry.last_success = Some(m.finished_at);
                entry.last_documents = m.documents;
                entry.last_bytes = m.bytes;
                entry.last_archive = Some(m.archive.clone());
                entry.consecutive_failures = 0;
                entry.successes += 1;
                entry.runs += 1;
            }
            if (ahead || newer) && !moved.contains(&id) {
                moved.push(id);
            }
        }
        moved
    }

    fn load_inner(root: &Path, target: &Arc<dyn Target>, announce: bool) -> State {
        let p = path(root);
        let why = match std::fs::read(&p) {
            Ok(bytes) => match serde_json::from_slice::<State>(&bytes) {
                Ok(s) => return s,
                Err(e) => {
                    let aside = p.with_file_name(format!(
                        "state.json.corrupt-{}",
                        storage::stamp(Utc::now())
                    ));
                    let _ = std::fs::rename(&p, &aside);
                    format!("state.json is corrupt ({e}; kept as {})", aside.display())
                }
            },
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => "state.json is missing".into(),
            Err(e) => format!("cannot read state.json ({e})"),
        };
        let state = State::rebuild(target);
        if announce && !state.collections.is_empty() {
            tracing::warn!(
                collections = state.collections.len(),
                "{why}; rebuilt watermarks from the manifests"
            );
        }
        state
    }

    /// Watermarks and last successes from the manifests in `target`.
    pub fn rebuild(target: &Arc<dyn Target>) -> State {
        let mut state = State {
            version: 1,
            ..State::default()
        };
        for found in catalog::scan(target) {
            let m = &found.manifest;
            let entry = state
                .collections
                .entry(job_id(&m.policy, &m.database, &m.collection))
                .or_insert_with(|| CollectionState {
                    policy: m.policy.clone(),
                    database: m.database.clone(),
                    collection: m.collection.clone(),
                    ..CollectionState::default()
                });
            if m.mode == Mode::Incremental && entry.watermark.is_none_or(|w| m.to > w) {
                entry.watermark = Some(m.to);
            }
            if entry.last_success.is_none_or(|t| m.finished_at > t) {
                entry.last_success = Some(m.finished_at);
                entry.last_documents = m.documents;
                entry.last_bytes = m.bytes;
                entry.last_archive = Some(m.archive.clone());
            }
            entry.successes += 1;
            entry.runs += 1;
        }
        state
    }

    /// Read-modify-write one entry under the state lock, so concurrent runs of
    /// different policies never lose each other's updates.
    pub fn update(
        root: &Path,
        target: &Arc<dyn Target>,
        id: &str,
        f: impl FnOnce(&mut CollectionState),
    ) -> std::io::Result<CollectionState> {
        let _lock = storage::lock(&lock_path(root))?;
        // Quiet: a run that needed a rebuild announced it when it started.
        let mut state = State::load_inner(root, target, false);
        state.version = 1;
        let entry = state.collections.entry(id.to_string()).or_default();
        f(entry);
        let out = entry.clone();
        let bytes = serde_json::to_vec_pretty(&state).expect("state serializes");
        storage::write_atomic(&path(root), &bytes)?;
        Ok(out)
    }
}

/// Temp files of state.json writes cut short by a crash. Only writers holding the
/// state lock create them, so with the lock held every one is a leftover.
fn remove_temp_leftovers(root: &Path) {
    let Ok(entries) = std::fs::read_dir(storage::logs_dir(root)) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let name = name.to_string_lossy();
        if name.starts_with(&format!(".{FILE}.")) && name.ends_with(storage::TEMP_MARK) {
            let _ = std::fs::remove_file(entry.path());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::export::manifest::{FORMAT, Manifest};
    use crate::storage::Source;

    fn manifest(collection: &str, to: &str, mode: Mode) -> Found {
        let to = DateTime::parse_from_rfc3339(to).unwrap().to_utc();
        Found {
            manifest: Manifest {
                format: FORMAT,
                dcb_version: "0".into(),
                policy: "hot".into(),
                database: "db".into(),
                collection: collection.into(),
                time_field: "createdAt".into(),
                mode,
                from: None,
                to,
                documents: 3,
                bytes: 30,
                untimed: None,
                members: Vec::new(),
                server_version: "x".into(),
                started_at: to,
                finished_at: to,
                archive: format!("{collection}.tar.gz"),
                archive_sha256: None,
                archive_size: None,
                encrypted: false,
                kind: None,
                chain: None,
                changes: None,
                epoch: None,
            },
            archive: Source::File(PathBuf::new()),
            manifest_key: String::new(),
            size: 0,
        }
    }

    // A state behind the manifests takes their watermark; one ahead of them keeps its own.
    #[test]
    fn catch_up_moves_only_forward() {
        let mut state = State::default();
        let behind = state
            .collections
            .entry(job_id("hot", "db", "a"))
            .or_default();
        behind.watermark = Some(
            DateTime::parse_from_rfc3339("2026-11-25T08:00:00Z")
                .unwrap()
                .to_utc(),
        );
        let ahead = state
            .collections
            .entry(job_id("hot", "db", "b"))
            .or_default();
        let b_mark = DateTime::parse_from_rfc3339("2026-11-25T12:00:00Z")
            .unwrap()
            .to_utc();
        ahead.watermark = Some(b_mark);
        ahead.last_success = Some(b_mark);

        let found = [
            manifest("a", "2026-11-25T09:00:00Z", Mode::Incremental),
            manifest("b", "2026-11-25T10:00:00Z", Mode::Incremental),
            manifest("c", "2026-11-25T10:00:00Z", Mode::Snapshot),
        ];
        let moved = state.catch_up(&found);
        assert_eq!(
            moved,
            vec![job_id("hot", "db", "a"), job_id("hot", "db", "c")]
        );
        let a = &state.collections[&job_id("hot", "db", "a")];
        assert_eq!(a.watermark, Some(found[0].manifest.to));
        assert_eq!(a.last_archive.as_deref(), Some("a.tar.gz"));
        assert_eq!(
            state.collections[&job_id("hot", "db", "b")].watermark,
            Some(b_mark)
        );
        let c = &state.collections[&job_id("hot", "db", "c")];
        assert_eq!(c.watermark, None, "a snapshot has no watermark");
        assert_eq!(c.last_success, Some(found[2].manifest.to));
        assert!(
            state.catch_up(&found).is_empty(),
            "a second catch-up changes nothing"
        );
    }
}
