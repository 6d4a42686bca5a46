//! `<backupRoot>/logs/drills.log`: one JSON line per drill, appended. Its shape is a
//! contract (the status page and other tools read it): change it only by adding.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::storage;

/// One drill's outcome.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Report {
    pub at: DateTime<Utc>,
    pub policy: String,
    pub ok: bool,
    /// The scratch database.
    pub database: String,
    pub collections: Vec<CollectionResult>,
    pub elapsed_ms: u64,
    /// Problems of the drill as a whole (and a line per failed collection).
    pub problems: Vec<String>,
    /// How samples of the scratch collections compare with the live source (not in
    /// the log: live data moves on, so this informs and never fails a drill).
    #[serde(skip)]
    pub samples: Vec<(String, crate::verify::sample::SampleCheck)>,
}

/// One collection of a drill.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CollectionResult {
    /// The source database.
    pub database: String,
    pub collection: String,
    /// Documents in the scratch collection after the restore.
    pub documents: u64,
    pub ok: bool,
    pub problem: Option<String>,
}

pub fn path(root: &Path) -> PathBuf {
    storage::logs_dir(root).join("drills.log")
}

pub fn append(root: &Path, report: &Report) -> std::io::Result<()> {
    storage::create_dir(&storage::logs_dir(root))?;
    let mut line = serde_json::to_vec(report).map_err(std::io::Error::other)?;
    line.push(b'\n');
    storage::open_append(&path(root))?.write_all(&line)
}

/// The latest drill of each policy. Unreadable lines are skipped.
pub fn latest(root: &Path) -> BTreeMap<String, Report> {
    let mut out = BTreeMap::new();
    let Ok(bytes) = std::fs::read(path(root)) else {
        return out;
    };
    for line in bytes.split(|&b| b == b'\n') {
        if let Ok(r) = serde_json::from_slice::<Report>(line) {
            out.insert(r.policy.clone(), r);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    // The line has exactly the agreed keys, `problem` null when a collection passed.
    #[test]
    fn line_shape() {
        let dir = tempfile::tempdir().unwrap();
        let r = Report {
            at: "2026-12-06T03:00:00Z".parse().unwrap(),
            policy: "hot".into(),
            ok: true,
            database: "dcb_drill_hot".into(),
            collections: vec![CollectionResult {
                database: "dcMes".into(),
                collection: "scans".into(),
                documents: 3,
                ok: true,
                problem: None,
            }],
            elapsed_ms: 12,
            problems: vec![],
            samples: vec![],
        };
        append(dir.path(), &r).unwrap();
        let text = std::fs::read_to_string(path(dir.path())).unwrap();
        let v: serde_json::Value = serde_json::from_str(text.trim()).unwrap();
        let mut keys: Vec<&str> = v.as_object().unwrap().keys().map(|k| k.as_str()).collect();
        keys.sort_unstable();
        assert_eq!(
            keys,
            [
                "at",
                "collections",
                "database",
                "elapsed_ms",
                "ok",
                "policy",
                "problems"
            ]
        );
        let c = v["collections"][0].as_object().unwrap();
        let mut ckeys: Vec<&str> = c.keys().map(|k| k.as_str()).collect();
        ckeys.sort_unstable();
        assert_eq!(
            ckeys,
            ["collection", "database", "documents", "ok", "problem"]
        );
        assert!(c["problem"].is_null());
        assert_eq!(v["at"], "2026-12-06T03:00:00Z");
        assert_eq!(latest(dir.path())["hot"].collections[0].documents, 3);
    }
}
