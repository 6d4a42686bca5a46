//! Archives an interrupted run left without their manifest beside them (dcb stopped
//! between the two renames of a commit). The copy inside the archive rebuilds it, so
//! the archive is listed, restored and pruned like any other and its window is not
//! exported again.

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::sync::Arc;

use crate::storage::{Source, Target, names};
use crate::verify;

/// Why an archive without a manifest could not get one back.
#[derive(Debug, thiserror::Error)]
pub enum RecoverError {
    #[error("it is encrypted and no identity is configured")]
    NoIdentity,
    #[error("{0}")]
    Key(#[from] crate::crypto::KeyError),
    #[error("it does not verify ({0})")]
    Corrupt(crate::unpack::Problem),
    #[error("it holds no manifest")]
    NoManifest,
    #[error("its manifest names another archive ({0})")]
    OtherArchive(String),
    #[error("{0}")]
    Read(std::io::Error),
    #[error(transparent)]
    Storage(#[from] crate::storage::StorageError),
}

/// Recover the manifests of `policy`'s archives in `target` that have none beside
/// them; returns the keys of the archives recovered. Call with the policy's lock held.
pub fn orphans(
    target: &Arc<dyn Target>,
    policy: &str,
    identity: Option<&std::path::Path>,
) -> Vec<String> {
    let Ok(objects) = target.list(&format!("{policy}/")) else {
        return Vec::new();
    };
    let keys: BTreeSet<&str> = objects.iter().map(|o| o.key.as_str()).collect();
    let mut recovered = Vec::new();
    for key in &keys {
        let name = key.rsplit('/').next().unwrap_or(key);
        let manifest_key = names::key(policy, &names::manifest_name(name));
        if !names::is_archive_name(name) || keys.contains(manifest_key.as_str()) {
            continue;
        }
        let source = Source::object(target, *key);
        match recover(target, &source, name, &manifest_key, identity) {
            Ok(()) => recovered.push(key.to_string()),
            Err(why) => tracing::warn!(
                archive = %source,
                "an archive without a manifest: {why}; list, restore and retention ignore it"
            ),
        }
    }
    recovered
}

fn recover(
    target: &Arc<dyn Target>,
    source: &Source,
    name: &str,
    manifest_key: &str,
    identity: Option<&std::path::Path>,
) -> Result<(), RecoverError> {
    let keys = match (identity, verify::is_age(source)) {
        (Some(file), true) => crate::crypto::Keys::load(file)?,
        (None, true) => return Err(RecoverError::NoIdentity),
        (_, false) => crate::crypto::Keys::default(),
    };
    let report = verify::check(source, None, 0, &keys);
    if let Some(key) = report.locked() {
        return Err(RecoverError::Key(key.clone()));
    }
    if let Some(p) = report.problems.first() {
        return Err(RecoverError::Corrupt(p.clone()));
    }
    let mut manifest = report.manifest.ok_or(RecoverError::NoManifest)?;
    if manifest.archive != name {
        return Err(RecoverError::OtherArchive(manifest.archive));
    }
    let digest = crate::unpack::digest(source).map_err(RecoverError::Read)?;
    manifest.archive_sha256 = Some(digest.sha256);
    manifest.archive_size = Some(digest.size);
    target.put(manifest_key, &manifest.to_json())?;
    Ok(())
}

/// Where a recovered archive is, for the log.
pub fn shown(target: &Arc<dyn Target>, key: &str) -> String {
    target
        .local_path(key)
        .map_or_else(|| key.to_string(), |p: PathBuf| p.display().to_string())
}
