//! Restore drills: prove that a policy's backups restore. Restore the newest chain
//! of each chosen collection into a scratch database that dcb created (a marker
//! collection says so), compare it with the archives (every document's bytes, the
//! counts, the indexes) and a sample with the live source, then drop it, whatever
//! happened. The outcome is a [`log::Report`]; recording it is an event's job.

pub mod compare;
pub mod log;

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;
use std::time::Instant;

use bson::{Document, RawDocumentBuf, doc};
use chrono::{DateTime, Datelike, Utc};
use chrono_tz::Tz;
use futures_util::{FutureExt, TryStreamExt};
use mongodb::Client;

use crate::config::Settings;
use crate::crypto::Keys;
use crate::policy::Policy;
use crate::policy::drill::{DEFAULT_PATTERN, DEFAULT_SAMPLE, SCRATCH_PREFIX, scratch_name};
use crate::restore::preflight::{self, Refusal};
use crate::restore::{self, Chain, Request, write};
use crate::schedule::Schedule;
pub use log::{CollectionResult, Report};

/// The collection that marks a database as a drill's scratch database.
pub const MARKER: &str = "dcb_drill_marker";

/// A policy's drill settings, dcb.yaml's and its own merged, defaults applied.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Effective {
    pub enabled: bool,
    pub schedule: Option<Schedule>,
    pub timezone: Tz,
    /// The scratch database's name.
    pub database: String,
    pub collections_per_drill: Option<u32>,
    pub sample: usize,
}

/// The drill settings of `policy`.
pub fn effective(settings: &Settings, policy: &Policy) -> Effective {
    let d = policy.drill.over(&settings.drill);
    Effective {
        enabled: d.enabled.unwrap_or(true),
        schedule: d.schedule,
        timezone: d.timezone.unwrap_or(policy.timezone),
        database: scratch_name(
            d.database.as_deref().unwrap_or(DEFAULT_PATTERN),
            &policy.name,
        ),
        collections_per_drill: d.collections_per_drill,
        sample: d.sample.unwrap_or(DEFAULT_SAMPLE) as usize,
    }
}

/// The collections drilled on `now`'s day: all of them, or `per_drill` of them,
/// starting where the previous day's stopped, so that each one comes round every
/// `ceil(len / per_drill)` days.
pub fn choose<T: Clone>(all: &[T], per_drill: Option<u32>, now: DateTime<Utc>) -> Vec<T> {
    let n = per_drill.map_or(all.len(), |n| n as usize);
    if n == 0 || n >= all.len() {
        return all.to_vec();
    }
    let day = i64::from(now.date_naive().num_days_from_ce()).unsigned_abs() as usize;
    let start = day.wrapping_mul(n) % all.len();
    (0..n)
        .map(|i| all[(start + i) % all.len()].clone())
        .collect()
}

/// Why a scratch database may not be used.
pub fn check_scratch(scratch: &str, source: &str) -> Result<(), crate::error::Invalid> {
    scratch_problem(scratch, source).map_err(crate::error::Invalid)
}

fn scratch_problem(scratch: &str, source: &str) -> Result<(), String> {
    if scratch == source {
        return Err(format!(
            "the scratch database `{scratch}` is the source database; a drill never writes there"
        ));
    }
    if !scratch.starts_with(SCRATCH_PREFIX) {
        return Err(format!(
            "the scratch database `{scratch}` does not start with `{SCRATCH_PREFIX}`"
        ));
    }
    crate::names::check_database(scratch).map_err(|e| format!("the scratch database: {e}"))
}

/// What the files say, before anything is written.
struct Prepared {
    chains: Vec<Chain>,
    metadata: preflight::Metadata,
    expected: Vec<compare::Expected>,
}

/// Scan, plan, verify and read the expected contents. Blocking.
fn prepare(
    settings: &Settings,
    policy: &str,
    scratch: &str,
    per_drill: Option<u32>,
    keys: &Keys,
    now: DateTime<Utc>,
) -> Result<Prepared, String> {
    let refusal = |r: Refusal| match r {
        Refusal::Holes(holes) => holes
            .iter()
            .map(|b| format!("{}: {}", b.manifest_key, b.problem))
            .collect::<Vec<_>>()
            .join("; "),
        Refusal::Unreadable { corrupt, locked } => corrupt
            .iter()
            .chain(&locked)
            .map(|d| {
                let why: Vec<String> = d.problems.iter().map(ToString::to_string).collect();
                match &d.key_error {
                    Some(k) if why.is_empty() => format!("{}: {k}", d.archive),
                    _ => format!("{}: {}", d.archive, why.join("; ")),
                }
            })
            .collect::<Vec<_>>()
            .join("; "),
        other => other.to_string(),
    };
    let root = &settings.backup_root;
    let policies = vec![policy.to_string()];
    let (found, _) = preflight::scan(&settings.target(), &policies, &[]).map_err(refusal)?;
    let all: Vec<String> = found
        .iter()
        .filter(|f| f.manifest.policy == policy)
        .map(|f| f.manifest.collection.clone())
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
    if all.is_empty() {
        return Err(format!("policy `{policy}` has no archives to drill"));
    }
    let req = Request {
        policies,
        collections: choose(&all, per_drill, now),
        until: None,
        to_database: scratch.to_string(),
        to_collection: None,
        in_place: false,
        partial: false,
        now,
    };
    let chains = restore::plan(&found, &req).map_err(|e| e.to_string())?;
    let metadata = preflight::verify_all(root, &chains, keys).map_err(refusal)?;
    let expected = chains.iter().map(|c| compare::expected(c, keys)).collect();
    Ok(Prepared {
        chains,
        metadata,
        expected,
    })
}

/// Drill `policy` now. Never panics out and never leaves the scratch database behind
/// (one left by a crashed drill, marked as such, is dropped first).
pub async fn run(
    settings: &Settings,
    policy: &Policy,
    client: &Client,
    keys: Arc<Keys>,
    now: DateTime<Utc>,
) -> Report {
    let started = Instant::now();
    let eff = effective(settings, policy);
    let mut report = Report {
        at: now,
        policy: policy.name.clone(),
        ok: false,
        database: eff.database.clone(),
        collections: Vec::new(),
        elapsed_ms: 0,
        problems: Vec::new(),
        samples: Vec::new(),
    };
    let result = std::panic::AssertUnwindSafe(drill(
        settings,
        policy,
        &eff,
        client,
        keys,
        now,
        &mut report,
    ))
    .catch_unwind()
    .await;
    match result {
        Ok(Ok(())) => {}
        Ok(Err(e)) => report.problems.push(e),
        Err(_) => report.problems.push("the drill panicked".to_string()),
    }
    for c in report.collections.iter().filter(|c| !c.ok) {
        let line = format!(
            "{}.{}: {}",
            c.database,
            c.collection,
            c.problem.as_deref().unwrap_or("failed")
        );
        report.problems.push(line);
    }
    report.ok = report.problems.is_empty();
    report.elapsed_ms = started.elapsed().as_millis() as u64;
    let shown = |s: &String| crate::redact::text(s, &settings.mongodb_uri);
    report.problems = report.problems.iter().map(shown).collect();
    for c in &mut report.collections {
        c.problem = c.problem.as_ref().map(shown);
    }
    report
}

async fn drill(
    settings: &Settings,
    policy: &Policy,
    eff: &Effective,
    client: &Client,
    keys: Arc<Keys>,
    now: DateTime<Utc>,
    report: &mut Report,
) -> Result<(), String> {
    let source = settings.database_for(policy).map_err(|e| e.to_string())?;
    let scratch = eff.database.clone();
    check_scratch(&scratch, &source)?;
    // A prune waits while the drill reads the policy's archives.
    let _readers = {
        let (root, name) = (settings.backup_root.clone(), policy.name.clone());
        tokio::task::spawn_blocking(move || crate::storage::lock_readers(&root, &[name]))
            .await
            .unwrap_or_default()
    };
    // Leftovers first: a drill that crashed may have left its database.
    claim(client, &scratch).await?;
    let prepared = {
        let (settings, name, keys2) = (settings.clone(), policy.name.clone(), keys.clone());
        let (scratch, per) = (scratch.clone(), eff.collections_per_drill);
        tokio::task::spawn_blocking(move || prepare(&settings, &name, &scratch, per, &keys2, now))
            .await
            .map_err(|e| format!("the drill's preparation failed: {e}"))??
    };
    let guard = Guard::create(client, &scratch).await?;
    let outcome = std::panic::AssertUnwindSafe(restore_and_compare(
        settings, client, &prepared, keys, eff.sample, report,
    ))
    .catch_unwind()
    .await;
    let dropped = guard.drop_now().await;
    match outcome {
        Ok(()) => {}
        Err(_) => report.problems.push("the drill panicked".to_string()),
    }
    dropped
}

async fn restore_and_compare(
    settings: &Settings,
    client: &Client,
    prepared: &Prepared,
    keys: Arc<Keys>,
    sample: usize,
    report: &mut Report,
) {
    let root = &settings.backup_root;
    for (chain, expected) in prepared.chains.iter().zip(&prepared.expected) {
        let meta = preflight::newest_metadata(root, chain, &prepared.metadata);
        let mut result = CollectionResult {
            database: chain.database.clone(),
            collection: chain.collection.clone(),
            documents: 0,
            ok: false,
            problem: None,
        };
        let mut problems = expected.problems.clone();
        let written = write::chain(
            client,
            chain,
            meta,
            keys.clone(),
            write::Options::default(),
            &|_| {},
        )
        .await;
        match written {
            Err(e) => problems.push(format!("the restore failed: {e}")),
            Ok(_) => match check(client, chain, expected, meta, sample).await {
                Ok((documents, found, sampled)) => {
                    result.documents = documents;
                    problems.extend(found);
                    if let Some(s) = sampled {
                        report.samples.push((chain.source(), s));
                    }
                }
                Err(e) => problems.push(format!("cannot read the scratch collection: {e}")),
            },
        }
        result.ok = problems.is_empty();
        result.problem = (!problems.is_empty()).then(|| problems.join("; "));
        report.collections.push(result);
    }
}

/// Compare a restored scratch collection: its documents with the archives', its
/// indexes with the metadata's, and a sample with the live source. Returns the
/// document count, the problems, and the sample's comparison.
async fn check(
    client: &Client,
    chain: &Chain,
    expected: &compare::Expected,
    meta: Option<&serde_json::Value>,
    sample: usize,
) -> Result<(u64, Vec<String>, Option<crate::verify::sample::SampleCheck>), mongodb::error::Error> {
    let db = client.database(&chain.target_database);
    let coll = db.collection::<RawDocumentBuf>(&chain.target_collection);
    let mut cursor = coll.find(doc! {}).await?;
    let mut reservoir = crate::verify::sample::Reservoir::new(sample);
    // Streamed: only the `_id`s and hashes are kept.
    let mut tally = compare::Tally::new(expected);
    while let Some(d) = cursor.try_next().await? {
        reservoir.offer(&d);
        tally.add(&d);
    }
    let diff = tally.finish();
    let mut problems = Vec::new();
    if !diff.is_empty() {
        problems.push(diff.describe(expected.docs.len()));
    }
    let mut indexes = HashMap::new();
    let mut list = db
        .collection::<Document>(&chain.target_collection)
        .list_indexes()
        .await?;
    while let Some(ix) = list.try_next().await? {
        if let Some(name) = ix.options.as_ref().and_then(|o| o.name.clone()) {
            indexes.insert(name, ix.keys);
        }
    }
    problems.extend(compare::index_problems(meta, &indexes));
    let sampled = match reservoir.into_items() {
        items if items.is_empty() => None,
        items => {
            match crate::verify::sample::compare(client, &chain.database, &chain.collection, &items)
                .await
            {
                Ok(s) => Some(s),
                Err(e) => {
                    tracing::warn!(source = %chain.source(), error = %e, "drill: cannot compare the sample with the live source");
                    None
                }
            }
        }
    };
    Ok((diff.documents, problems, sampled))
}

/// Whether `name` is a scratch database dcb created.
async fn is_marked(client: &Client, name: &str) -> Result<bool, mongodb::error::Error> {
    let names = client
        .database(name)
        .list_collection_names()
        .filter(doc! {"name": MARKER})
        .await?;
    Ok(!names.is_empty())
}

/// Make sure `name` is free: drop it if a crashed drill left it (it carries the
/// marker), refuse if it exists without the marker.
async fn claim(client: &Client, name: &str) -> Result<(), String> {
    let err = |e: mongodb::error::Error| format!("cannot inspect `{name}`: {e}");
    let exists = client
        .list_database_names()
        .await
        .map_err(err)?
        .iter()
        .any(|d| d == name);
    if !exists {
        return Ok(());
    }
    if !is_marked(client, name).await.map_err(err)? {
        return Err(format!(
            "the database `{name}` exists and is not a drill's scratch database (no `{MARKER}` collection); dcb will not touch it: choose another `drill.database` or remove it"
        ));
    }
    tracing::warn!(database = %name, "dropping the scratch database an earlier drill left");
    empty(client, name)
        .await
        .map_err(|e| format!("cannot drop the leftover scratch database `{name}`: {e}"))
}

/// Drop every collection of `name`, the marker last (so a drill stopped half-way still
/// leaves it marked). A database without collections is gone; unlike `dropDatabase`,
/// this needs no more than `readWrite`.
async fn empty(client: &Client, name: &str) -> Result<(), mongodb::error::Error> {
    let db = client.database(name);
    for coll in db.list_collection_names().await? {
        if coll != MARKER && !coll.starts_with("system.") {
            db.collection::<Document>(&coll).drop().await?;
        }
    }
    db.collection::<Document>(MARKER).drop().await
}

/// The scratch database while a drill uses it: dropped by [`Guard::drop_now`], or, if
/// the drill is cancelled first, in the background on drop (and otherwise at the next
/// drill's start).
struct Guard {
    client: Client,
    name: String,
    armed: bool,
}

impl Guard {
    async fn create(client: &Client, name: &str) -> Result<Guard, String> {
        let guard = Guard {
            client: client.clone(),
            name: name.to_string(),
            armed: true,
        };
        client
            .database(name)
            .collection::<Document>(MARKER)
            .insert_one(doc! {"_id": "dcb-drill", "createdAt": bson::DateTime::now()})
            .await
            .map_err(|e| format!("cannot create the scratch database `{name}`: {e}"))?;
        Ok(guard)
    }

    /// Drop the scratch database (only ever one that carries the marker).
    async fn drop_now(mut self) -> Result<(), String> {
        self.armed = false;
        drop_marked(&self.client, &self.name).await
    }
}

async fn drop_marked(client: &Client, name: &str) -> Result<(), String> {
    match is_marked(client, name).await {
        Ok(true) => empty(client, name)
            .await
            .map_err(|e| format!("cannot drop the scratch database `{name}`: {e}")),
        Ok(false) => Err(format!(
            "the scratch database `{name}` lost its marker; it was not dropped"
        )),
        Err(e) => Err(format!("cannot inspect the scratch database `{name}`: {e}")),
    }
}

impl Drop for Guard {
    fn drop(&mut self) {
        if !self.armed {
            return;
        }
        if let Ok(rt) = tokio::runtime::Handle::try_current() {
            let (client, name) = (self.client.clone(), self.name.clone());
            rt.spawn(async move {
                if let Err(e) = drop_marked(&client, &name).await {
                    tracing::warn!(database = %name, "{e}");
                }
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn day(d: u32) -> DateTime<Utc> {
        format!("2026-12-{d:02}T10:00:00Z").parse().unwrap()
    }

    // All collections when no subset is asked for; with one, every collection comes
    // round within ceil(len / n) consecutive days, n a day.
    #[test]
    fn rotation_covers_every_collection() {
        let all: Vec<u32> = (0..7).collect();
        assert_eq!(choose(&all, None, day(1)), all);
        assert_eq!(choose(&all, Some(9), day(1)), all);
        for n in 1..7u32 {
            let days = 7usize.div_ceil(n as usize) as u32;
            for first in 1..10 {
                let mut seen = BTreeSet::new();
                for d in first..first + days {
                    let today = choose(&all, Some(n), day(d));
                    assert_eq!(today.len(), n as usize);
                    seen.extend(today);
                }
                assert_eq!(seen.len(), 7, "n={n} from day {first}");
            }
        }
    }

    // Never the source, never a database outside dcb's prefix.
    #[test]
    fn scratch_names() {
        assert!(check_scratch("dcb_drill_hot", "dcMes").is_ok());
        assert!(check_scratch("dcb_drill_hot", "dcb_drill_hot").is_err());
        assert!(check_scratch("dcMes", "other").is_err());
        assert!(check_scratch("dcb_drill_a.b", "x").is_err());
    }
}
