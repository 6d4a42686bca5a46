//! `<backupRoot>/logs/verify.log`: one JSON line per verification, appended (so the
//! service and a `dcb verify` at the same time never lose each other's lines). The
//! catalog reads the latest line per archive.

use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::storage;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Record {
    pub at: DateTime<Utc>,
    /// The archive, relative to the backup root with `/` separators when under it.
    pub archive: String,
    pub ok: bool,
    pub documents: u64,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub problems: Vec<String>,
}

pub fn path(root: &Path) -> PathBuf {
    storage::logs_dir(root).join("verify.log")
}

/// How an archive is named in the log and the catalog.
pub fn archive_key(root: &Path, archive: &Path) -> String {
    let rel = archive
        .strip_prefix(root)
        .ok()
        .map(Path::to_path_buf)
        .or_else(|| {
            let root = root.canonicalize().ok()?;
            let abs = archive.canonicalize().ok()?;
            abs.strip_prefix(&root).ok().map(Path::to_path_buf)
        });
    match rel {
        Some(rel) => rel
            .components()
            .map(|c| c.as_os_str().to_string_lossy().into_owned())
            .collect::<Vec<_>>()
            .join("/"),
        None => archive.display().to_string(),
    }
}

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
/// check itself happened).
pub fn record(root: &Path, report: &crate::verify::Report) -> Record {
    let record = Record {
        at: Utc::now(),
        archive: archive_key(root, &report.archive),
        ok: report.ok(),
        documents: report.documents,
        problems: report.problems.iter().map(ToString::to_string).collect(),
    };
    if let Err(e) = append(root, &record) {
        tracing::warn!(error = %e, "cannot record the verification in verify.log");
    }
    let mut audit = crate::audit::Entry::new(crate::audit::Operation::Verify, record.ok)
        .archive(record.archive.clone())
        .detail(if record.ok {
            format!("{} documents", record.documents)
        } else {
            record.problems.join("; ")
        });
    if let Some(m) = &report.manifest {
        audit = audit
            .policy(m.policy.clone())
            .source(format!("{}.{}", m.database, m.collection));
    }
    crate::audit::append(root, &audit);
    record
}
