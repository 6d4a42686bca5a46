//! The latest lines of the JSON-lines logs the page shows: restore drills
//! (`drills.log`), verifications (`verify.log`), failed runs (`audit.log`) and alert
//! titles (`alerts.log`). Missing files are empty; lines that do not parse are
//! skipped. Only the end of each file is read, so a large log costs little.

use std::io::{Read, Seek, SeekFrom};
use std::path::Path;

use chrono::{DateTime, Utc};
use serde::Deserialize;

/// The most of a log's end that is read.
const TAIL_BYTES: u64 = 1 << 20;

/// One restore drill, as `drills.log` records it.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct Drill {
    pub at: DateTime<Utc>,
    #[serde(default)]
    pub policy: String,
    pub ok: bool,
    #[serde(default)]
    pub database: String,
    #[serde(default)]
    pub collections: Vec<DrillCollection>,
    #[serde(default)]
    pub elapsed_ms: Option<u64>,
    #[serde(default)]
    pub problems: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct DrillCollection {
    #[serde(default)]
    pub database: String,
    #[serde(default)]
    pub collection: String,
    #[serde(default)]
    pub documents: Option<u64>,
    #[serde(default = "yes")]
    pub ok: bool,
    #[serde(default)]
    pub problem: Option<String>,
}

fn yes() -> bool {
    true
}

/// One verification of an archive, as `verify.log` records it (both the periodic
/// re-verification's `problem`/`bytes` and `dcb verify`'s `problems`/`documents`).
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct Verification {
    pub at: DateTime<Utc>,
    pub archive: String,
    pub ok: bool,
    #[serde(default)]
    pub problem: Option<String>,
    #[serde(default)]
    pub problems: Vec<String>,
    #[serde(default)]
    pub bytes: Option<u64>,
    #[serde(default)]
    pub documents: Option<u64>,
}

impl Verification {
    /// Every problem it names.
    pub fn all_problems(&self) -> Vec<String> {
        self.problem
            .iter()
            .cloned()
            .chain(self.problems.iter().cloned())
            .collect()
    }
}

/// A run that failed, from `audit.log`.
#[derive(Debug, Clone, PartialEq)]
pub struct FailedRun {
    pub at: DateTime<Utc>,
    pub policy: String,
    /// `db.collection`.
    pub source: String,
    pub detail: String,
}

/// An alert line of `alerts.log`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct AlertLine {
    pub kind: String,
    pub key: String,
    #[serde(default)]
    pub title: String,
    pub time: DateTime<Utc>,
}

#[derive(Deserialize)]
struct AuditLine {
    time: DateTime<Utc>,
    operation: String,
    #[serde(default)]
    policy: Option<String>,
    #[serde(default)]
    source: Option<String>,
    result: String,
    #[serde(default)]
    detail: Option<String>,
}

/// The last `n` drills, newest first.
pub fn drills(logs: &Path, n: usize) -> Vec<Drill> {
    newest(
        parse_lines(&tail(&logs.join("drills.log"))),
        n,
        |d: &Drill| d.at,
    )
}

/// The last `n` verifications, newest first.
pub fn verifications(logs: &Path, n: usize) -> Vec<Verification> {
    newest(
        parse_lines(&tail(&logs.join("verify.log"))),
        n,
        |v: &Verification| v.at,
    )
}

/// The failed runs among the last lines of the audit log, oldest first.
pub fn failed_runs(logs: &Path) -> Vec<FailedRun> {
    let mut out: Vec<FailedRun> = parse_lines::<AuditLine>(&tail(&logs.join("audit.log")))
        .into_iter()
        .filter(|l| l.operation == "run" && l.result == "failed")
        .filter_map(|l| {
            Some(FailedRun {
                at: l.time,
                policy: l.policy?,
                source: l.source?,
                detail: l.detail.unwrap_or_default(),
            })
        })
        .collect();
    out.sort_by_key(|f| f.at);
    out
}

/// The last lines of `alerts.log`, oldest first.
pub fn alert_lines(logs: &Path) -> Vec<AlertLine> {
    parse_lines(&tail(&logs.join("alerts.log")))
}

fn newest<T>(mut items: Vec<T>, n: usize, at: impl Fn(&T) -> DateTime<Utc>) -> Vec<T> {
    items.sort_by_key(|i| std::cmp::Reverse(at(i)));
    items.truncate(n);
    items
}

/// The lines of `bytes` that parse as `T`.
fn parse_lines<T: serde::de::DeserializeOwned>(bytes: &[u8]) -> Vec<T> {
    bytes
        .split(|&b| b == b'\n')
        .filter_map(|line| serde_json::from_slice(line).ok())
        .collect()
}

/// The end of the file at `path` (at most [`TAIL_BYTES`], from a line start); empty
/// when it cannot be read.
fn tail(path: &Path) -> Vec<u8> {
    let read = || -> std::io::Result<Vec<u8>> {
        let mut f = std::fs::File::open(path)?;
        let len = f.metadata()?.len();
        let start = len.saturating_sub(TAIL_BYTES);
        f.seek(SeekFrom::Start(start))?;
        let mut buf = Vec::new();
        f.take(TAIL_BYTES).read_to_end(&mut buf)?;
        if start > 0 {
            // The first line is likely cut: drop it.
            let cut = buf
                .iter()
                .position(|&b| b == b'\n')
                .map_or(buf.len(), |i| i + 1);
            buf.drain(..cut);
        }
        Ok(buf)
    };
    read().unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    // Missing logs are empty; malformed and torn lines are skipped; the newest come
    // first; both verify.log shapes read.
    #[test]
    fn reads_what_parses() {
        let dir = tempfile::tempdir().unwrap();
        assert!(drills(dir.path(), 5).is_empty());
        assert!(verifications(dir.path(), 5).is_empty());
        std::fs::write(
            dir.path().join("drills.log"),
            "{\"at\":\"2026-12-01T01:00:00Z\",\"policy\":\"hot\",\"ok\":true,\"database\":\"s\",\
             \"collections\":[{\"database\":\"s\",\"collection\":\"a\",\"documents\":3,\"ok\":true,\"problem\":null}],\
             \"elapsed_ms\":12,\"problems\":[]}\n\
             not json\n\
             {\"at\":\"2026-12-02T01:00:00Z\",\"policy\":\"hot\",\"ok\":false,\"problems\":[\"x\"]}\n\
             {\"at\":\"2026-12-03T01:00:00Z\",\"pol",
        )
        .unwrap();
        let d = drills(dir.path(), 5);
        assert_eq!(d.len(), 2);
        assert!(!d[0].ok && d[0].problems == ["x"], "newest first: {d:?}");
        assert_eq!(d[1].collections[0].documents, Some(3));
        assert_eq!(drills(dir.path(), 1).len(), 1);
        std::fs::write(
            dir.path().join("verify.log"),
            "{\"at\":\"2026-12-01T01:00:00Z\",\"archive\":\"hot/a.tar.gz\",\"ok\":false,\"problem\":\"bad crc\",\"bytes\":9}\n\
             {\"at\":\"2026-12-01T02:00:00Z\",\"archive\":\"hot/b.tar.gz\",\"ok\":true,\"checked\":\"full\",\"documents\":4}\n",
        )
        .unwrap();
        let v = verifications(dir.path(), 5);
        assert_eq!(v[0].archive, "hot/b.tar.gz");
        assert_eq!(v[1].all_problems(), ["bad crc"]);
    }

    // Only failed runs count, with their policy and collection.
    #[test]
    fn failed_runs_from_the_audit_log() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("audit.log"),
            "{\"time\":\"2026-12-01T01:00:00Z\",\"operation\":\"run\",\"policy\":\"p\",\"source\":\"db.a\",\"result\":\"ok\"}\n\
             {\"time\":\"2026-12-01T02:00:00Z\",\"operation\":\"run\",\"policy\":\"p\",\"source\":\"db.a\",\"result\":\"failed\",\"detail\":\"down\"}\n\
             {\"time\":\"2026-12-01T03:00:00Z\",\"operation\":\"verify\",\"result\":\"failed\"}\n",
        )
        .unwrap();
        let f = failed_runs(dir.path());
        assert_eq!(f.len(), 1);
        assert_eq!(
            (f[0].source.as_str(), f[0].detail.as_str()),
            ("db.a", "down")
        );
    }
}
