//! Everything a restore checks before its first write: which archives it reads (and
//! that none the selection needs is unreadable), that every one of them verifies, and
//! that each target that must be empty is. Any failure is a [`Refusal`]: nothing was
//! written.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use mongodb::bson::{Bson, doc};

use super::{Chain, EmptyTarget, PlanError, is_timeseries, may_belong_to, needs_empty_target};
use crate::catalog::{self, Broken, Found};
use crate::crypto::{KeyError, Keys};
use crate::export::manifest::Manifest;
use crate::storage::{Source, Target, names};
use crate::unpack::Problem;
use crate::verify::{self, Check};

/// Why a restore stopped before writing anything.
#[derive(Debug, thiserror::Error)]
pub enum Refusal {
    #[error("--until: {0}")]
    Until(crate::error::Invalid),
    #[error("{0}")]
    Keys(#[from] KeyError),
    #[error(
        "the selection has archives that cannot be read, so the restore would miss data; nothing was written (restore the others with --archive, or remove those manifests if the loss is accepted)"
    )]
    Holes(Vec<Broken>),
    #[error("{0}: no such archive")]
    NoArchive(PathBuf),
    #[error(transparent)]
    ManifestBeside(#[from] verify::ManifestError),
    #[error("{}: no manifest beside it and none readable inside it", .0.display())]
    NoManifest(PathBuf),
    #[error("cannot open {path}: {1}", path = .0.display())]
    CannotOpen(PathBuf, KeyError),
    #[error("{0}")]
    Plan(#[from] PlanError),
    #[error("{}", unreadable(.corrupt, .locked))]
    Unreadable {
        corrupt: Vec<Damaged>,
        locked: Vec<Damaged>,
    },
    #[error("{0}")]
    Connect(String),
    #[error("{target}: {error}")]
    Inspect {
        target: String,
        error: mongodb::error::Error,
    },
    #[error("{}", .why.refusal(.target))]
    NotEmpty { target: String, why: EmptyTarget },
}

impl Refusal {
    /// A problem of the configuration or the command line (exit 2), not of the data.
    pub fn is_config(&self) -> bool {
        matches!(
            self,
            Refusal::Until(_) | Refusal::Keys(_) | Refusal::CannotOpen(..) | Refusal::Plan(_)
        ) || matches!(self, Refusal::Unreadable { corrupt, .. } if corrupt.is_empty())
    }
}

/// An archive that did not verify, or that the keys could not open.
#[derive(Debug, Clone)]
pub struct Damaged {
    /// As logs name it.
    pub archive: String,
    /// As messages show it.
    pub shown: String,
    pub problems: Vec<Problem>,
    pub key_error: Option<KeyError>,
}

/// Damage outranks a key problem; a key problem alone is configuration.
fn unreadable(corrupt: &[Damaged], locked: &[Damaged]) -> String {
    let names = |d: &[Damaged]| {
        d.iter()
            .map(|d| d.archive.as_str())
            .collect::<Vec<_>>()
            .join(", ")
    };
    if corrupt.is_empty() {
        format!(
            "cannot open {}; nothing was written, the targets are untouched",
            names(locked)
        )
    } else {
        format!(
            "corrupt: {}; nothing was written, the targets are untouched",
            names(corrupt)
        )
    }
}

/// The archives in `target` of the selected `policies` and `collections`, and the
/// broken manifests that may not matter (another collection's, by their file name).
/// A broken manifest that may be the selection's is a hole in a chain: refused, since
/// restoring around it would exit 0 with data missing.
pub fn scan(
    target: &Arc<dyn Target>,
    policies: &[String],
    collections: &[String],
) -> Result<(Vec<Found>, Vec<Broken>), Refusal> {
    let (found, broken) = catalog::scan_all(target);
    let selected = |b: &Broken| policies.is_empty() || policies.iter().any(|p| p == b.policy());
    let (holes, elsewhere): (Vec<Broken>, Vec<Broken>) = broken
        .into_iter()
        .filter(selected)
        .partition(|b| may_belong_to(b.file_name(), collections));
    if !holes.is_empty() {
        return Err(Refusal::Holes(holes));
    }
    Ok((found, elsewhere))
}

/// Archives named on the command line, each with the manifest beside it (or inside
/// it).
pub fn explicit(paths: &[PathBuf], keys: &Keys) -> Result<Vec<Found>, Refusal> {
    let mut out = Vec::new();
    for path in paths {
        if !path.is_file() {
            return Err(Refusal::NoArchive(path.clone()));
        }
        let source = Source::File(path.clone());
        let manifest: Manifest = match verify::manifest_beside(path)? {
            Some(m) => m,
            None => {
                let report = verify::check(&source, None, 0, keys);
                if let Some(key) = report.locked() {
                    return Err(Refusal::CannotOpen(path.clone(), key.clone()));
                }
                report
                    .manifest
                    .ok_or_else(|| Refusal::NoManifest(path.clone()))?
            }
        };
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        out.push(Found {
            manifest,
            manifest_key: names::manifest_name(&name),
            size: std::fs::metadata(path).map(|m| m.len()).unwrap_or(0),
            archive: source,
        });
    }
    Ok(out)
}

/// The metadata of each verified archive, by the name logs give it.
pub type Metadata = HashMap<String, serde_json::Value>;

/// Verify every archive of every chain before the first write, recording each result
/// in the verify log under `root`.
pub fn verify_all(root: &Path, chains: &[Chain], keys: &Keys) -> Result<Metadata, Refusal> {
    let checks: Vec<Check> = chains
        .iter()
        .flat_map(|c| &c.archives)
        .map(Check::found)
        .collect();
    let reports = verify::check_all(&checks, 0, keys);
    let damaged = |r: &verify::Report| Damaged {
        archive: r.archive.name(root),
        shown: r.archive.to_string(),
        problems: r.problems.clone(),
        key_error: r.key_error.clone(),
    };
    let mut corrupt = Vec::new();
    let mut locked = Vec::new();
    for r in &reports {
        verify::log::record(root, r);
        if r.corrupt() {
            corrupt.push(damaged(r));
        } else if r.locked().is_some() {
            locked.push(damaged(r));
        }
    }
    if !corrupt.is_empty() || !locked.is_empty() {
        return Err(Refusal::Unreadable { corrupt, locked });
    }
    Ok(reports
        .into_iter()
        .filter_map(|r| Some((r.archive.name(root), r.metadata?)))
        .collect())
}

/// The metadata of a chain's newest archive.
pub fn newest_metadata<'a>(
    root: &Path,
    chain: &Chain,
    metadata: &'a Metadata,
) -> Option<&'a serde_json::Value> {
    chain
        .archives
        .last()
        .and_then(|f| metadata.get(&f.archive.name(root)))
}

/// Refuse when a chain that needs an empty target ([`needs_empty_target`]) would write
/// into one that holds documents.
pub async fn check_targets(
    client: &mongodb::Client,
    root: &Path,
    chains: &[Chain],
    metadata: &Metadata,
    drop: bool,
    until: bool,
) -> Result<(), Refusal> {
    for chain in chains {
        let meta = newest_metadata(root, chain, metadata);
        let db = client.database(&chain.target_database);
        let inspect = |error| Refusal::Inspect {
            target: chain.target(),
            error,
        };
        let entry = db
            .run_command(doc! {"listCollections": 1, "filter": {"name": &chain.target_collection}})
            .await
            .map_err(inspect)?;
        let existing = entry
            .get_document("cursor")
            .ok()
            .and_then(|c| c.get_array("firstBatch").ok())
            .and_then(|b| b.first())
            .and_then(Bson::as_document)
            .cloned();
        let Some(existing) = existing else { continue };
        let target_is_ts = is_timeseries(&Bson::Document(existing).into_relaxed_extjson());
        let timeseries = target_is_ts || meta.is_some_and(is_timeseries);
        let Some(why) = needs_empty_target(drop, until, timeseries) else {
            continue;
        };
        // A count limited to one works on time-series collections too (views to some
        // servers, where estimatedDocumentCount does not).
        let coll = db.collection::<mongodb::bson::Document>(&chain.target_collection);
        let n = coll
            .count_documents(doc! {})
            .limit(1)
            .await
            .map_err(inspect)?;
        if n > 0 {
            return Err(Refusal::NotEmpty {
                target: chain.target(),
                why,
            });
        }
    }
    Ok(())
}
