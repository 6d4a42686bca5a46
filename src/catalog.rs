//! The catalog: every archive a target holds, from the manifests beside them (the
//! source of truth for what was backed up).

use std::collections::BTreeMap;
use std::sync::Arc;

use crate::export::manifest::Manifest;
use crate::storage::{Source, Target, names};

/// A committed archive: its manifest, where it is, and the manifest's key.
#[derive(Debug, Clone)]
pub struct Found {
    pub manifest: Manifest,
    pub archive: Source,
    pub manifest_key: String,
    /// The archive's size in its target, in bytes.
    pub size: u64,
}

impl Found {
    /// The archive's key in its target (`<policy>/<file name>`).
    pub fn key(&self) -> &str {
        self.archive.key().unwrap_or(&self.manifest.archive)
    }
}

/// A manifest that describes nothing usable.
#[derive(Debug, Clone)]
pub struct Broken {
    pub manifest_key: String,
    pub problem: String,
}

impl Broken {
    /// The policy folder the manifest is in.
    pub fn policy(&self) -> &str {
        self.manifest_key.split('/').next().unwrap_or_default()
    }

    /// The manifest's file name.
    pub fn file_name(&self) -> &str {
        self.manifest_key.rsplit('/').next().unwrap_or_default()
    }
}

/// Every readable manifest in `target`, with its archive present. Unreadable ones
/// are logged and skipped (they describe nothing dcb can restore).
pub fn scan(target: &Arc<dyn Target>) -> Vec<Found> {
    let (found, broken) = scan_all(target);
    for b in broken {
        tracing::warn!(manifest = %b.manifest_key, problem = %b.problem, "manifest ignored");
    }
    found
}

/// Every manifest in `target`: the usable ones, and the ones that are unreadable or
/// whose archive is gone. Both sorted by key.
pub fn scan_all(target: &Arc<dyn Target>) -> (Vec<Found>, Vec<Broken>) {
    let mut found = Vec::new();
    let mut broken = Vec::new();
    let objects: BTreeMap<String, u64> = match target.list("") {
        Ok(list) => list.into_iter().map(|o| (o.key, o.size)).collect(),
        Err(e) => {
            tracing::warn!(target = %target.describe(), error = %e, "cannot list the archives");
            return (found, broken);
        }
    };
    for key in objects.keys() {
        let Some((policy, name)) = key.split_once('/') else {
            continue;
        };
        if !names::is_manifest_name(name) || name.contains('/') {
            continue;
        }
        let parsed = target
            .read(key)
            .map_err(|e| e.to_string())
            .and_then(|b| serde_json::from_slice::<Manifest>(&b).map_err(|e| e.to_string()));
        let problem = match parsed {
            Ok(manifest) => {
                let archive_key = names::key(policy, &manifest.archive);
                if crate::unpack::check_member_path(manifest.archive.as_bytes()).is_err()
                    || manifest.archive.contains(['/', '\\'])
                {
                    format!(
                        "names an archive outside its folder: {:?}",
                        manifest.archive
                    )
                } else if let Some(size) = objects.get(&archive_key) {
                    found.push(Found {
                        archive: Source::object(target, archive_key),
                        manifest,
                        manifest_key: key.clone(),
                        size: *size,
                    });
                    continue;
                } else {
                    format!("its archive {} is missing", manifest.archive)
                }
            }
            Err(e) => format!("unreadable: {e}"),
        };
        broken.push(Broken {
            manifest_key: key.clone(),
            problem,
        });
    }
    found.sort_by(|a, b| a.key().cmp(b.key()));
    (found, broken)
}
