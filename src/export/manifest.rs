//! dcb's record of one archive: what it holds, the window it covers, and a SHA-256 of
//! every member. Written inside the archive and beside it (`<stem>.manifest.json`);
//! the ones beside archives are the source of truth for watermarks.

use std::path::{Path, PathBuf};

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::archive::MemberInfo;
use crate::policy::Mode;
use crate::storage;

/// 2: adds `kind`, `chain`, `changes` and `epoch` (format-1 manifests still read).
pub const FORMAT: u32 = 2;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Manifest {
    pub format: u32,
    pub dcb_version: String,
    pub policy: String,
    pub database: String,
    pub collection: String,
    pub time_field: String,
    pub mode: Mode,
    /// Start of the window (inclusive); absent when unbounded or a snapshot.
    pub from: Option<DateTime<Utc>>,
    /// End of the window (exclusive); for snapshots, when the snapshot was taken.
    pub to: DateTime<Utc>,
    pub documents: u64,
    /// Bytes of BSON in the `.bson` member.
    pub bytes: u64,
    /// Documents whose time field is missing or not a date, which no window can
    /// select; absent when not counted in this run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub untimed: Option<u64>,
    pub members: Vec<MemberInfo>,
    pub server_version: String,
    pub started_at: DateTime<Utc>,
    pub finished_at: DateTime<Utc>,
    /// The archive's file name, in the same folder as this manifest.
    pub archive: String,
    /// SHA-256 of the whole archive file (`sha256sum` checks it). Only in the manifest
    /// beside the archive: the copy inside cannot hash the file that holds it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub archive_sha256: Option<String>,
    /// Size of the archive file in bytes; beside the archive only, like the hash.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub archive_size: Option<u64>,
    /// The archive is an age file (`.tar.gz.age`).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub encrypted: bool,
    /// `full` (the whole collection) or `incremental`; absent before format 2.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<Kind>,
    /// For the archives of a chain (a policy with `full`): the chain, and the archive
    /// before this one with its hash, so a missing or foreign link is detectable.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub chain: Option<Link>,
    /// For the archives of a chain: what changed besides the window, read from the
    /// server's change stream.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub changes: Option<Changes>,
    /// The epoch of the lease the writer held (`lock: mongodb`): a writer that lost its
    /// lease is told apart from the one that took it over.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub epoch: Option<u64>,
}

/// What an archive holds of its collection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    /// The whole collection, as it was when the run read it.
    Full,
    /// What changed since the archive before.
    Incremental,
}

/// An archive's place in its chain.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Link {
    /// The file name of the chain's full archive (a full names itself).
    pub base: String,
    /// The archive this one builds on; absent for a full.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub previous: Option<Previous>,
}

/// The archive before, by name and whole-file SHA-256.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Previous {
    pub archive: String,
    pub sha256: String,
}

/// A point of the server's oplog (a BSON timestamp: seconds, increment).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct ClusterTime {
    pub t: u32,
    pub i: u32,
}

/// What a chain archive knows of the changes since the archive before.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Changes {
    /// The run's cut: everything up to this point of the oplog is in the chain.
    pub until: ClusterTime,
    /// When the cut was taken (the server's clock): the moment the archive restores
    /// the collection to.
    pub at: DateTime<Utc>,
    /// Where the changes were read from (the archive before's cut); absent for a full.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub since: Option<ClusterTime>,
    /// Documents deleted since the archive before (the deletions member).
    #[serde(default)]
    pub deleted: u64,
    /// Documents changed since the archive before whose time field fell outside the
    /// window, read by `_id` and added to the archive.
    #[serde(default)]
    pub captured: u64,
    /// Whether every change since the archive before was seen.
    pub history: History,
    /// Where the change stream stopped (a resume token): the next run resumes here.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token: Option<String>,
}

/// Whether a run saw every change since the run before.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", tag = "state", content = "reason")]
pub enum History {
    /// Every change was read (or the archive is a full, which needs none).
    Complete,
    /// The server offers no change stream (a standalone server): deletions are not
    /// recorded; the next run is a full.
    Unavailable(String),
    /// The server's history no longer reaches back to the run before (the oplog
    /// rolled over): the next run is a full.
    Lost(String),
}

impl Manifest {
    /// What the archive holds: its `kind`, or for format-1 manifests its mode's.
    pub fn kind(&self) -> Kind {
        self.kind.unwrap_or(match self.mode {
            Mode::Snapshot => Kind::Full,
            Mode::Incremental => Kind::Incremental,
        })
    }

    /// Whether the archive belongs to a chain (its policy has `full`).
    pub fn in_chain(&self) -> bool {
        self.chain.is_some()
    }

    /// The moment the archive brings its collection back to: the run's cut for the
    /// archives of a chain, else the end of the window (a snapshot's time).
    pub fn restore_point(&self) -> DateTime<Utc> {
        self.changes.as_ref().map_or(self.to, |c| c.at)
    }

    /// Path of the member inside the archive ([`storage::names::manifest_member`]).
    pub fn member_path(policy: &str, db: &str, collection: &str) -> String {
        storage::names::manifest_member(policy, db, collection)
    }

    /// The path of the manifest beside an archive.
    pub fn beside(archive: &Path) -> PathBuf {
        storage::names::manifest_beside(archive)
    }

    pub fn to_json(&self) -> Vec<u8> {
        let mut v = serde_json::to_vec_pretty(self).expect("a manifest serializes");
        v.push(b'\n');
        v
    }
}
