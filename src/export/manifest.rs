//! dcb's record of one archive: what it holds, the window it covers, and a SHA-256 of
//! every member. Written inside the archive and beside it (`<stem>.manifest.json`);
//! the ones beside archives are the source of truth for watermarks.

use std::path::{Path, PathBuf};

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::archive::MemberInfo;
use crate::policy::Mode;
use crate::storage;

pub const FORMAT: u32 = 1;

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
}

impl Manifest {
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
