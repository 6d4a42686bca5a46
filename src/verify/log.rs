//! `<backupRoot>/logs/verify.log`: one JSON line per verification, appended (so the
//! service and a `dcb verify` at the same time never lose each other's lines). The
//! catalog reads the latest line per archive.

use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::Checked;
use crate::storage;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Record {
    pub at: DateTime<Utc>,
    /// The archive, relative to the backup root with `/` separators when under it.
    pub archive: String,
    pub ok: bool,
    /// How deep the check read; lines written before this field was added were full.
    #[serde(default)]
    pub checked: Checked,
    pub documents: u64,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub problems: Vec<String>,
    /// The first problem, or null: with `bytes`, the short form other tools read.
    #[serde(default)]
    pub problem: Option<String>,
    /// The archive's size.
    #[serde(default)]
    pub bytes: u64,
}

pub fn path(root: &Path) -> PathBuf {
    storage::logs_dir(root).join("verify.log")
}

pub use crate::storage::names::archive_key;

pub fn append(root: &Path, record: &Record) -> std::io::Result<()> {
    let path = path(root);
    storage::create_dir(&storage::logs_dir(root))?;
    let mut line = serde_json::to_vec(record).map_err(std::io::Error::other)?;
    line.push(b'\n');
    storage::open_append(&path)?.write_all(&line)
}

/// The latest record of each archive. Unreadable lines are skipped.
pub fn latest(root: &Path) -> HashMap<String, Record> {
    let mut out = HashMap::new();
    let Ok(bytes) = std::fs::read(path(root)) else {
        return out;
    };
    // Line by line from bytes: one torn line must not hide the others.
    for line in bytes.split(|&b| b == b'\n') {
        if let Ok(r) = serde_json::from_slice::<Record>(line) {
            out.insert(r.archive.clone(), r);
        }
    }
    out
}

/// Append the outcome of a check; a log that cannot be written is only a warning (the
/// check itself happened). An archive the keys could not open was not checked: it
/// goes to the audit log as `no-key`, not to verify.log, so the catalog keeps its last
/// real verification.
pub fn record(root: &Path, report: &crate::verify::Report) -> Record {
    let locked = report.locked();
    let mut record = Record {
        at: Utc::now(),
        archive: report.archive.name(root),
        ok: report.ok(),
        checked: report.checked,
        documents: report.documents,
        problems: report.problems.iter().map(ToString::to_string).collect(),
        problem: report.problems.first().map(ToString::to_string),
        bytes: report
            .manifest
            .as_ref()
            .and_then(|m| m.archive_size)
            .or_else(|| {
                let path = report.archive.local_path()?;
                std::fs::metadata(path).ok().map(|m| m.len())
            })
            .unwrap_or(0),
    };
    let mut audit = match locked {
        Some(key) => {
            record.problems = vec![format!("archive: {key}")];
            record.problem = record.problems.first().cloned();
            crate::audit::Entry::new(crate::audit::Operation::Verify, false)
                .result(crate::audit::NO_KEY)
                .detail(key.to_string())
        }
        None => {
            if let Err(e) = append(root, &record) {
                tracing::warn!(error = %e, "cannot record the verification in verify.log");
            }
            crate::audit::Entry::new(crate::audit::Operation::Verify, record.ok).detail(
                match (record.ok, record.checked) {
                    (true, Checked::Full) => format!("{} documents", record.documents),
                    (true, Checked::Hash) => "file hash only (no identity)".to_string(),
                    (false, _) => record.problems.join("; "),
                },
            )
        }
    }
    .archive(record.archive.clone());
    if let Some(m) = &report.manifest {
        audit = audit
            .policy(m.policy.clone())
            .source(format!("{}.{}", m.database, m.collection));
    }
    crate::audit::append(root, &audit);
    record
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::verify::{KeyError, Report};

    fn report(archive: &Path, checked: Checked, key_error: Option<KeyError>) -> Report {
        Report {
            archive: archive.into(),
            manifest: None,
            problems: Vec::new(),
            documents: 7,
            metadata: None,
            sample: Vec::new(),
            checked,
            key_error,
        }
    }

    // Lines written before `checked` existed still read, as full checks.
    #[test]
    fn old_lines_read_as_full_checks() {
        let dir = tempfile::tempdir().unwrap();
        storage::create_dir(&storage::logs_dir(dir.path())).unwrap();
        std::fs::write(
            path(dir.path()),
            "{\"at\":\"2026-11-25T09:30:00Z\",\"archive\":\"p/a.tar.gz\",\"ok\":true,\"documents\":3}\n",
        )
        .unwrap();
        let r = &latest(dir.path())["p/a.tar.gz"];
        assert!(r.ok);
        assert_eq!(r.checked, Checked::Full);
    }

    // A hash-only check is recorded as such; an archive the keys cannot open is not
    // recorded at all (its last real verification stands), only audited as `no-key`.
    #[test]
    fn hash_checks_are_marked_and_key_problems_are_not_verifications() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        let archive = root.join("p/a.tar.gz.age");
        record(root, &report(&archive, Checked::Hash, None));
        let r = &latest(root)["p/a.tar.gz.age"];
        assert!(r.ok);
        assert_eq!(r.checked, Checked::Hash);
        let text = std::fs::read_to_string(path(root)).unwrap();
        assert!(text.contains("\"checked\":\"hash\""), "{text}");

        let before = std::fs::read(path(root)).unwrap();
        let rec = record(
            root,
            &report(
                &archive,
                Checked::Hash,
                Some(KeyError::NoMatch("k.txt".into())),
            ),
        );
        assert!(!rec.ok && rec.problems[0].contains("no identity in k.txt"));
        assert_eq!(std::fs::read(path(root)).unwrap(), before);
        let audit = std::fs::read_to_string(crate::audit::path(root)).unwrap();
        let last: serde_json::Value = serde_json::from_str(audit.lines().last().unwrap()).unwrap();
        assert_eq!(last["operation"], "verify");
        assert_eq!(last["result"], "no-key");
        assert_eq!(last["archive"], "p/a.tar.gz.age");
    }
}
