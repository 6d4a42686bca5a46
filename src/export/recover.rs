//! Archives an interrupted run left without their manifest beside them (dcb stopped
//! between the two renames of a commit). The copy inside the archive rebuilds it, so
//! the archive is listed, restored and pruned like any other and its window is not
//! exported again.

use std::path::{Path, PathBuf};

use crate::config::Settings;
use crate::export::manifest::Manifest;
use crate::storage;

/// Recover the manifests of the archives in `dir` that have none beside them; returns
/// the archives recovered. Call with the policy's lock held.
pub fn orphans(dir: &Path, settings: &Settings) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut recovered = Vec::new();
    for path in entries.flatten().map(|e| e.path()) {
        let Some(name) = path.file_name().and_then(|n| n.to_str()) else {
            continue;
        };
        let is_archive = !name.starts_with('.')
            && (name.ends_with(storage::ARCHIVE_EXT) || name.ends_with(storage::ENCRYPTED_EXT));
        if !is_archive || Manifest::beside(&path).exists() {
            continue;
        }
        match recover(&path, name, settings) {
            Ok(()) => recovered.push(path),
            Err(why) => tracing::warn!(
                archive = %path.display(),
                "an archive without a manifest: {why}; list, restore and retention ignore it"
            ),
        }
    }
    recovered
}

fn recover(path: &Path, name: &str, settings: &Settings) -> Result<(), String> {
    let keys = match (&settings.identity_file, crate::crypto::file_is_age(path)) {
        (Some(file), true) => crate::crypto::Keys::load(file).map_err(|e| e.to_string())?,
        (None, true) => return Err("it is encrypted and no identity is configured".into()),
        (_, false) => crate::crypto::Keys::default(),
    };
    let report = crate::verify::check(path, None, 0, &keys);
    if let Some(key) = report.locked() {
        return Err(format!("it cannot be opened: {key}"));
    }
    if let Some(p) = report.problems.first() {
        return Err(format!("it does not verify ({}: {})", p.member, p.message));
    }
    let mut manifest = report
        .manifest
        .ok_or_else(|| "it holds no manifest".to_string())?;
    if manifest.archive != name {
        return Err(format!(
            "its manifest names another archive ({})",
            manifest.archive
        ));
    }
    let digest = crate::unpack::file_digest(path).map_err(|e| e.to_string())?;
    manifest.archive_sha256 = Some(digest.sha256);
    manifest.archive_size = Some(digest.size);
    storage::write_atomic(&Manifest::beside(path), &manifest.to_json()).map_err(|e| e.to_string())
}
