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
    /// Path of the member inside the archive: at the top, outside `<db>/`, named so
    /// that the archives of one run never collide when extracted together.
    pub fn member_path(policy: &str, db: &str, collection: &str) -> String {
        format!("dcb-manifest.{policy}.{db}.{collection}.json")
    }

    /// The path of the manifest beside an archive.
    pub fn beside(archive: &Path) -> PathBuf {
        let name = archive
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let stem = name
            .strip_suffix(storage::ENCRYPTED_EXT)
            .or_else(|| name.strip_suffix(storage::ARCHIVE_EXT))
            .unwrap_or(&name);
        archive.with_file_name(format!("{stem}{}", storage::MANIFEST_EXT))
    }

    pub fn to_json(&self) -> Vec<u8> {
        let mut v = serde_json::to_vec_pretty(self).expect("a manifest serializes");
        v.push(b'\n');
        v
    }
}

/// A manifest found on disk, with the archive it describes.
#[derive(Debug, Clone)]
pub struct Found {
    pub manifest: Manifest,
    pub manifest_path: PathBuf,
    pub archive_path: PathBuf,
}

/// Every readable manifest under `<root>/<policy>/`, with its archive present.
/// Unreadable ones are logged and skipped (they describe nothing dcb can restore).
pub fn scan(root: &Path) -> Vec<Found> {
    let (found, broken) = scan_all(root);
    for b in broken {
        tracing::warn!(manifest = %b.manifest_path.display(), problem = %b.problem, "manifest ignored");
    }
    found
}

/// A manifest that describes nothing usable.
#[derive(Debug, Clone)]
pub struct Broken {
    pub manifest_path: PathBuf,
    pub problem: String,
}

/// Every manifest under `<root>/<policy>/`: the usable ones, and the ones that are
/// unreadable or whose archive is gone.
pub fn scan_all(root: &Path) -> (Vec<Found>, Vec<Broken>) {
    let mut found = Vec::new();
    let mut broken = Vec::new();
    let Ok(policies) = std::fs::read_dir(root) else {
        return (found, broken);
    };
    for dir in policies.flatten().map(|e| e.path()).filter(|p| p.is_dir()) {
        let Ok(files) = std::fs::read_dir(&dir) else {
            continue;
        };
        for path in files.flatten().map(|e| e.path()) {
            let is_manifest = path
                .file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.ends_with(storage::MANIFEST_EXT) && !n.starts_with('.'));
            if !is_manifest {
                continue;
            }
            let parsed = std::fs::read(&path)
                .map_err(|e| e.to_string())
                .and_then(|b| serde_json::from_slice::<Manifest>(&b).map_err(|e| e.to_string()));
            match parsed {
                Ok(manifest) => {
                    let archive_path = dir.join(&manifest.archive);
                    if crate::unpack::check_member_path(manifest.archive.as_bytes()).is_err()
                        || manifest.archive.contains(['/', '\\'])
                    {
                        broken.push(Broken {
                            manifest_path: path,
                            problem: format!(
                                "names an archive outside its folder: {:?}",
                                manifest.archive
                            ),
                        });
                    } else if archive_path.is_file() {
                        found.push(Found {
                            manifest,
                            manifest_path: path,
                            archive_path,
                        });
                    } else {
                        broken.push(Broken {
                            manifest_path: path,
                            problem: format!("its archive {} is missing", manifest.archive),
                        });
                    }
                }
                Err(e) => broken.push(Broken {
                    manifest_path: path,
                    problem: format!("unreadable: {e}"),
                }),
            }
        }
    }
    found.sort_by(|a, b| a.archive_path.cmp(&b.archive_path));
    broken.sort_by(|a, b| a.manifest_path.cmp(&b.manifest_path));
    (found, broken)
}
