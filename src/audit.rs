//! `<backupRoot>/logs/audit.log`: one JSON line for every run of a collection, every
//! archive deleted by retention, every verification and every restore: when, on which
//! machine, by which OS user, what, and how it ended. Appended, never rewritten.

use std::io::Write;
use std::path::{Path, PathBuf};

use chrono::{DateTime, Utc};
use serde::Serialize;

use crate::storage;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Operation {
    Run,
    Prune,
    Verify,
    Restore,
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Entry {
    pub time: DateTime<Utc>,
    pub host: String,
    pub user: String,
    pub operation: Operation,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub policy: Option<String>,
    /// `db.collection` the operation read or deleted from.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,
    /// `db.collection` a restore wrote to.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub target: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub archive: Option<String>,
    /// `ok`, `failed`, or [`NO_KEY`].
    pub result: &'static str,
    /// Counts, or the error (already redacted by the caller).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
}

/// The result of a verification that could not open an encrypted archive (no identity,
/// or none that matches): nothing was checked, so it is neither `ok` nor `failed`.
pub const NO_KEY: &str = "no-key";

impl Entry {
    pub fn new(operation: Operation, ok: bool) -> Entry {
        Entry {
            time: Utc::now(),
            host: crate::host::hostname(),
            user: crate::host::os_user(),
            operation,
            policy: None,
            source: None,
            target: None,
            archive: None,
            result: if ok { "ok" } else { "failed" },
            detail: None,
        }
    }

    pub fn policy(mut self, p: impl Into<String>) -> Entry {
        self.policy = Some(p.into());
        self
    }

    pub fn source(mut self, s: impl Into<String>) -> Entry {
        self.source = Some(s.into());
        self
    }

    pub fn target(mut self, t: impl Into<String>) -> Entry {
        self.target = Some(t.into());
        self
    }

    pub fn archive(mut self, a: impl Into<String>) -> Entry {
        self.archive = Some(a.into());
        self
    }

    pub fn result(mut self, r: &'static str) -> Entry {
        self.result = r;
        self
    }

    pub fn detail(mut self, d: impl Into<String>) -> Entry {
        self.detail = Some(d.into());
        self
    }
}

pub fn path(root: &Path) -> PathBuf {
    storage::logs_dir(root).join("audit.log")
}

/// Append `entry`. An audit line that cannot be written is logged as an error but does
/// not undo or fail the operation it describes (which has already happened).
pub fn append(root: &Path, entry: &Entry) {
    let write = || -> std::io::Result<()> {
        storage::create_dir(&storage::logs_dir(root))?;
        let mut line = serde_json::to_vec(entry).map_err(std::io::Error::other)?;
        line.push(b'\n');
        storage::open_append(&path(root))?.write_all(&line)
    };
    if let Err(e) = write() {
        tracing::error!(error = %e, path = %path(root).display(), "cannot write the audit log");
    }
}
