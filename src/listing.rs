//! What `dcb list` shows: each archive of the catalog with the latest verification of
//! it from the verify log.

use std::path::Path;

use chrono::{DateTime, Utc};
use serde::Serialize;

use crate::catalog::Found;
use crate::policy::Mode;
use crate::verify::{Checked, log};

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Entry {
    /// Relative to the backup root, `/`-separated.
    pub archive: String,
    pub policy: String,
    pub database: String,
    pub collection: String,
    pub mode: Mode,
    pub from: Option<DateTime<Utc>>,
    pub to: DateTime<Utc>,
    pub documents: u64,
    /// Bytes of BSON.
    pub bytes: u64,
    /// Bytes on disk.
    pub size: u64,
    pub verified: Option<Verified>,
    /// `full` (the whole collection) or `incremental`.
    pub kind: crate::export::manifest::Kind,
    /// For a policy with `full`: the chain (its full's file name).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub chain: Option<String>,
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Verified {
    pub at: DateTime<Utc>,
    pub ok: bool,
    /// `full`, or `hash` when only the file's hash was checked (contents never read).
    pub checked: Checked,
}

/// The archives in `found`, oldest window end first within each collection, with the
/// latest verification of each from the verify log under `root`.
pub fn entries(
    root: &Path,
    found: Vec<Found>,
    policies: &[String],
    collections: &[String],
) -> Vec<Entry> {
    let verified = log::latest(root);
    let mut out: Vec<Entry> = found
        .into_iter()
        .filter(|f| policies.is_empty() || policies.contains(&f.manifest.policy))
        .filter(|f| collections.is_empty() || collections.contains(&f.manifest.collection))
        .map(|f: Found| {
            let key = f.key().to_string();
            let size = f.size;
            let (kind, chain) = (
                f.manifest.kind(),
                f.manifest.chain.as_ref().map(|l| l.base.clone()),
            );
            let m = f.manifest;
            Entry {
                size,
                verified: verified.get(&key).map(|r| Verified {
                    at: r.at,
                    ok: r.ok,
                    checked: r.checked,
                }),
                archive: key,
                policy: m.policy,
                database: m.database,
                collection: m.collection,
                mode: m.mode,
                from: m.from,
                to: m.to,
                documents: m.documents,
                bytes: m.bytes,
                kind,
                chain,
            }
        })
        .collect();
    out.sort_by(|a, b| {
        (&a.policy, &a.database, &a.collection, a.to).cmp(&(
            &b.policy,
            &b.database,
            &b.collection,
            b.to,
        ))
    });
    out
}

/// How far each collection of `found` restores (its chains or its windows), by
/// (policy, database, collection).
pub fn coverage(found: &[Found]) -> Vec<((String, String, String), crate::chain::Coverage)> {
    let mut groups: std::collections::BTreeMap<(String, String, String), Vec<&Found>> =
        std::collections::BTreeMap::new();
    for f in found {
        let m = &f.manifest;
        groups
            .entry((m.policy.clone(), m.database.clone(), m.collection.clone()))
            .or_default()
            .push(f);
    }
    groups
        .into_iter()
        .filter(|(_, v)| v.iter().any(|f| f.manifest.in_chain()))
        .map(|(k, v)| (k, crate::chain::coverage_of(&v)))
        .collect()
}

/// An archive's window for people: `snapshot at …`, `full at …`, `start .. …`, or
/// `from .. to` (UTC, to the minute).
pub fn window_text(
    kind: crate::export::manifest::Kind,
    mode: Mode,
    from: Option<DateTime<Utc>>,
    to: DateTime<Utc>,
) -> String {
    let t = |d: DateTime<Utc>| d.format("%Y-%m-%d %H:%M").to_string();
    match (mode, from) {
        (Mode::Snapshot, _) => format!("snapshot at {}", t(to)),
        _ if kind == crate::export::manifest::Kind::Full => format!("full at {}", t(to)),
        (_, Some(from)) => format!("{} .. {}", t(from), t(to)),
        (_, None) => format!("start .. {}", t(to)),
    }
}
