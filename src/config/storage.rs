//! dcb.yaml's storage keys: the targets archives go to besides the backup root, and
//! how a policy's run keeps other dcb instances out.

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::duration::HumanDuration;
use crate::storage::s3::S3Config;

/// The name of the backup root as a target.
pub const LOCAL: &str = "local";

/// A place archives are kept, besides the backup root (the target named `local`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(tag = "type", rename_all = "lowercase")]
pub enum TargetConfig {
    /// S3-compatible object storage (AWS S3, MinIO, Ceph, OSS, COS, ...).
    S3(S3Config),
    /// Another folder: a second disk, or a network share mounted here.
    Local(FolderTarget),
}

/// A folder target.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct FolderTarget {
    /// The folder (relative paths are read from dcb.yaml's folder).
    pub path: String,
}

/// Which lock a policy's run holds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum LockKind {
    /// `mongodb` when a policy writes to an S3 target (which other instances may
    /// share), else `local`.
    #[default]
    Auto,
    /// A file lock in the backup root: keeps out other dcb processes on this machine.
    Local,
    /// A lease in MongoDB as well: keeps out dcb instances anywhere that back up the
    /// same policies (several machines, Kubernetes).
    Mongodb,
}

/// `lock: mongodb`, or the lock with its settings.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(untagged)]
pub enum LockConfig {
    Kind(LockKind),
    Detailed(LockDetail),
}

impl Default for LockConfig {
    fn default() -> Self {
        LockConfig::Kind(LockKind::Auto)
    }
}

/// The lock with its settings.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct LockDetail {
    #[serde(default)]
    pub kind: LockKind,
    /// The database of the `dcb_locks` collection; the backup user needs `readWrite`
    /// on it (and only there). Default: `dcb`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub database: Option<String>,
    /// How long a lease outlives its last renewal (renewed every third of it): how
    /// long a dead holder keeps others out. Default: `1m`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = crate::duration::PATTERN))]
    pub ttl: Option<String>,
}

/// The lock, resolved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LockSettings {
    pub kind: LockKind,
    pub database: String,
    pub ttl: HumanDuration,
}

impl LockConfig {
    pub fn resolve(&self) -> LockSettings {
        let (kind, database, ttl) = match self {
            LockConfig::Kind(k) => (*k, None, None),
            LockConfig::Detailed(d) => (d.kind, d.database.clone(), d.ttl.clone()),
        };
        LockSettings {
            kind,
            database: database.unwrap_or_else(|| "dcb".into()),
            ttl: ttl
                .and_then(|t| t.parse().ok())
                .unwrap_or(HumanDuration(std::time::Duration::from_secs(60))),
        }
    }
}

/// Problems a schema cannot see: target names, unknown default targets, a bad bucket
/// or endpoint, a lock TTL out of range. (pointer, message) pairs.
pub fn problems(
    targets: &BTreeMap<String, TargetConfig>,
    default_targets: Option<&[String]>,
    lock: &LockConfig,
) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for (name, t) in targets {
        let at = format!("/targets/{}", name.replace('~', "~0").replace('/', "~1"));
        if name == LOCAL {
            out.push((
                at.clone(),
                "`local` is the backup root's name as a target; choose another name".into(),
            ));
        } else if let Err(e) = crate::names::check_target(name) {
            out.push((at.clone(), e.0));
        }
        if let TargetConfig::S3(s3) = t
            && let Err(e) = s3.check()
        {
            out.push((at, e.0));
        }
    }
    for (i, name) in default_targets.unwrap_or_default().iter().enumerate() {
        if name != LOCAL && !targets.contains_key(name) {
            out.push((
                format!("/defaultTargets/{i}"),
                unknown_target(name, targets.keys()),
            ));
        }
    }
    if let LockConfig::Detailed(d) = lock {
        if let Some(t) = &d.ttl {
            match t.parse::<HumanDuration>() {
                Ok(d) if d.0 < crate::lease::MIN_TTL || d.0 > crate::lease::MAX_TTL => out.push((
                    "/lock/ttl".into(),
                    format!(
                        "ttl {d} is out of range: {} to {}",
                        HumanDuration(crate::lease::MIN_TTL),
                        HumanDuration(crate::lease::MAX_TTL)
                    ),
                )),
                Ok(_) => {}
                Err(e) => out.push(("/lock/ttl".into(), e.to_string())),
            }
        }
        if let Some(db) = &d.database
            && let Err(e) = crate::names::check_database(db)
        {
            out.push(("/lock/database".into(), e.0));
        }
    }
    out
}

/// "no target `x`", with the names there are.
pub fn unknown_target<'a>(name: &str, known: impl Iterator<Item = &'a String>) -> String {
    let mut names: Vec<&str> = vec![LOCAL];
    names.extend(known.map(String::as_str));
    format!(
        "no target `{name}`; the targets are {}",
        names
            .iter()
            .map(|n| format!("`{n}`"))
            .collect::<Vec<_>>()
            .join(", ")
    )
}
