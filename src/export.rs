//! One export job: a collection's window streamed as raw BSON into a tar.gz archive,
//! committed atomically, with its manifest beside it.
//!
//! window ▶ query ▶ raw cursor ▶ (channel) ▶ compressing writer thread ▶ temp file ▶
//! fsync ▶ rename ▶ manifest

pub mod archive;
pub mod changes;
mod error;
pub mod manifest;
pub mod metadata;
pub mod source;
mod stream;

pub use error::ExportError;
pub use stream::cancelled;

use std::sync::Arc;
use std::sync::atomic::AtomicBool;

use chrono::Utc;
use mongodb::Client;
use mongodb::bson::RawDocumentBuf;

use crate::plan::JobSpec;
use crate::storage::{self, Source, Target, names};
use crate::window::Extent;
use archive::ArchiveWriter;
use manifest::{Changes, ClusterTime, History, Kind, Link, Manifest, Previous};
use source::Query;
use stream::{count_untimed, stream};

/// Everything one export needs besides the client.
#[derive(Debug, Clone)]
pub struct ExportJob {
    pub spec: JobSpec,
    pub extent: Extent,
    pub compression_level: u32,
    /// age recipients (`age1…`, already validated); empty: not encrypted.
    pub recipients: Vec<String>,
    /// Where the archive is committed.
    pub target: Arc<dyn Target>,
    /// Count the documents no window can select (a server-side count for ranged
    /// windows; free for scans).
    pub count_untimed: bool,
    pub server_version: String,
    /// Set to abort the export (graceful shutdown): it stops at the next document,
    /// removes its temp file and reports `Interrupted`.
    pub cancel: Arc<AtomicBool>,
    /// For a collection whose policy sets `full`: the chain's part of the run.
    pub chain: Option<ChainJob>,
    /// The lease the run holds (`lock: mongodb`): confirmed right before the commit,
    /// its epoch recorded in the manifest.
    pub guard: Option<Arc<dyn CommitGuard>>,
}

/// What must still hold when an archive is committed: the run's lease.
pub trait CommitGuard: Send + Sync + std::fmt::Debug {
    /// Recorded in the manifest, so a late writer is detectable.
    fn epoch(&self) -> u64;
    /// Why nothing may be committed any more, known without a round trip.
    fn lost(&self) -> Option<String>;
    /// Confirm with the server, right before a commit.
    fn confirm(
        &self,
    ) -> std::pin::Pin<Box<dyn Future<Output = Result<(), crate::lease::LeaseError>> + Send + '_>>;
}

/// A chain run: a full that starts a chain, or an incremental on its newest archive.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ChainJob {
    /// The whole collection (the job's extent is `Snapshot`).
    Full,
    /// The window, plus what the change stream saw since the archive before.
    Incremental {
        /// The chain's full archive.
        base: String,
        /// The archive this one builds on.
        previous: Previous,
        /// Its cut: changes are read from here.
        since: ClusterTime,
        /// Its resume token (preferred to the cut: lost history is then detected).
        token: Option<String>,
        /// Also capture updates the window misses.
        capture_updates: bool,
    },
}

#[derive(Debug, Clone)]
pub struct ExportOutcome {
    /// `None` for an empty window: nothing was written.
    pub manifest: Option<Manifest>,
    /// A chain run's cut, also when it wrote nothing (the next run reads from here).
    pub cut: Option<ClusterTime>,
    /// Where the next window starts: the end of this one, or a chain full's time.
    pub watermark: Option<chrono::DateTime<Utc>>,
    /// A chain incremental's archive before (whether or not this run wrote one).
    pub builds_on: Option<String>,
    /// Where a chain run's change stream stopped (also when it wrote nothing).
    pub token: Option<String>,
    pub archive: Option<Source>,
    pub documents: u64,
    pub bytes: u64,
    pub untimed: Option<u64>,
    /// The targets the archive could not be written to (it is in at least one): the
    /// next run copies it there.
    pub missing_copies: Vec<crate::storage::MissingCopy>,
}

/// Progress reports from an export.
pub trait Progress: Send + Sync {
    /// An attempt starts reading (again, after a retry), expecting about `total`
    /// documents when that is known cheaply.
    fn start(&self, _total: Option<u64>) {}
    fn advance(&self, documents: u64, bytes: u64);
}

impl Progress for () {
    fn advance(&self, _: u64, _: u64) {}
}

/// Run one export. On any error nothing is left under a final name.
pub async fn export(
    client: &Client,
    job: &ExportJob,
    progress: &dyn Progress,
) -> Result<ExportOutcome, ExportError> {
    let started_at = Utc::now();
    let spec = &job.spec;
    let coll_name = &spec.collection.name;
    let db = client.database(&spec.database);
    let info = metadata::collection_info(&db, coll_name).await?;
    // A chain run cuts the server's history before it reads anything: what changes
    // later is the next run's.
    let cut = match &job.chain {
        Some(_) => Some(changes::cut(client).await?),
        None => None,
    };
    let to = match job.extent {
        Extent::Window(w) if w.is_empty() && job.chain.is_none() => {
            return Ok(ExportOutcome::nothing(None, None, Some(w.to)));
        }
        Extent::Window(w) => w.to,
        Extent::Snapshot => started_at,
    };
    let changed = match (&job.chain, &cut, &job.extent) {
        (
            Some(ChainJob::Incremental {
                since,
                token,
                capture_updates,
                ..
            }),
            Some((until, _)),
            Extent::Window(w),
        ) => {
            let coll = db.collection::<mongodb::bson::Document>(coll_name);
            let tf = &spec.collection.time_field;
            let token = token.as_deref();
            let set = changes::read(&coll, token, *since, *until, tf, w, *capture_updates).await?;
            if let Some(History::Unavailable(why) | History::Lost(why)) = &set.history {
                tracing::warn!(job = %spec.id(), "the deletions since the last run are unknown ({why}); the next run is a full");
            }
            Some(set)
        }
        // A full starts the chain's change history where it stands before the scan.
        (Some(ChainJob::Full), Some(_), _) => {
            let coll = db.collection::<mongodb::bson::Document>(coll_name);
            let (token, history) = match changes::position(&coll).await? {
                Ok(t) => (Some(t), None),
                Err(h) => (None, Some(h)),
            };
            Some(changes::ChangeSet {
                token,
                history,
                ..changes::ChangeSet::default()
            })
        }
        _ => None,
    };
    let indexes = metadata::indexes(&db, coll_name).await?;
    let indexed = source::leads_index(&indexes, &spec.collection.time_field);
    if !indexed && matches!(job.extent, Extent::Window(w) if w.from.is_some()) {
        tracing::warn!(
            job = %spec.id(),
            time_field = %spec.collection.time_field,
            "no index leads with the time field: every run reads the whole collection; create one"
        );
    }
    let meta_bytes = metadata::render(coll_name, &info, indexes);
    let window_empty = matches!(job.extent, Extent::Window(w) if w.is_empty());
    let query = source::query(&job.extent, &spec.collection.time_field, indexed);
    let untimed_server = match (&query, job.count_untimed) {
        (Query::Range(_), true) => count_untimed(&db, spec).await,
        _ => None,
    };

    let stem = storage::archive_stem(to, &spec.database, coll_name);
    let recipients = crate::crypto::parse_recipients(&job.recipients)
        .map_err(|e| ExportError::Encryption(e.0))?;
    let ext = if recipients.is_empty() {
        storage::ARCHIVE_EXT
    } else {
        storage::ENCRYPTED_EXT
    };
    let archive_name = format!("{stem}{ext}");
    let key = names::key(&spec.policy, &archive_name);
    let temp = job.target.stage(&key).map_err(ExportError::from_storage)?;
    let bson_member = names::bson_member(&spec.database, coll_name);
    // The deletions come first in the archive: a restore applies them before the
    // documents, so a document deleted and inserted again comes back.
    let deleted = changed.as_ref().map_or(0, |c| c.deleted.len() as u64);
    let token = changed.as_ref().and_then(|c| c.token.clone());
    let leading = match &changed {
        Some(c) if !c.deleted.is_empty() => vec![(
            names::deletions_member(&spec.policy, &spec.database, coll_name),
            deletions(&c.deleted)?,
        )],
        _ => Vec::new(),
    };
    // From here on, any early return, panic or cancellation removes the temp file.
    let temp_guard = storage::TempGuard::new(temp.clone());
    let writer = ArchiveWriter::create_with(
        &temp,
        &bson_member,
        job.compression_level,
        to.timestamp().max(0) as u64,
        &recipients,
        &leading,
    )
    .map_err(|e| ExportError::from_io(&temp, e))?;

    // A count is cheap only for a whole collection (the server keeps it).
    let total = match &query {
        Query::Scan { from: None, .. } => db
            .collection::<RawDocumentBuf>(coll_name)
            .estimated_document_count()
            .await
            .ok(),
        _ => None,
    };
    progress.start(total);
    let (mut writer, mut documents, mut untimed_scan) = if window_empty {
        (writer, 0, None)
    } else {
        stream(client, job, &query, writer, progress).await?
    };
    let mut captured = 0;
    if let (Some(c), Extent::Window(w)) = (&changed, job.extent)
        && !c.changed.is_empty()
    {
        let by_id = Query::Ids {
            ids: c.changed.clone(),
            window: w,
        };
        let (w2, n, _) = stream(client, job, &by_id, writer, progress).await?;
        (writer, captured) = (w2, n);
        documents += n;
    }
    let untimed = untimed_scan.take().or(untimed_server);
    let history = changed.as_ref().and_then(|c| c.history.clone());
    let complete = history.as_ref().is_none_or(|h| *h == History::Complete);
    // An incremental window with no documents (and, in a chain, no deletions and every
    // change seen) needs no archive: the run still succeeds and moves the watermark. A
    // snapshot or a full is kept even when empty: it records that the collection was.
    if documents == 0 && deleted == 0 && complete && matches!(job.extent, Extent::Window(_)) {
        drop(writer);
        drop(temp_guard);
        let mut nothing = ExportOutcome::nothing(untimed, cut.map(|c| c.0), Some(to));
        nothing.builds_on = builds_on(job);
        nothing.token = token;
        return Ok(nothing);
    }
    let bytes = writer.bson_bytes();
    let from = match job.extent {
        Extent::Window(w) => w.from,
        Extent::Snapshot => None,
    };
    let counts = (deleted, captured);
    let (kind, chain, changes) = chain_fields(job, &archive_name, cut, history, counts, token);
    let mut manifest = Manifest {
        format: manifest::FORMAT,
        dcb_version: env!("CARGO_PKG_VERSION").to_string(),
        policy: spec.policy.clone(),
        database: spec.database.clone(),
        collection: coll_name.clone(),
        time_field: spec.collection.time_field.clone(),
        mode: spec.collection.mode,
        from,
        to,
        documents,
        bytes,
        untimed,
        members: Vec::new(),
        server_version: job.server_version.clone(),
        started_at,
        finished_at: started_at,
        archive: archive_name.clone(),
        archive_sha256: None,
        archive_size: None,
        encrypted: !recipients.is_empty(),
        kind: Some(kind),
        chain,
        changes,
        epoch: job.guard.as_ref().map(|g| g.epoch()),
    };
    let meta_path = names::metadata_member(&spec.database, coll_name);
    let manifest_member = names::manifest_member(&spec.policy, &spec.database, coll_name);
    let finished = {
        let mut m = manifest.clone();
        let temp = temp.clone();
        tokio::task::spawn_blocking(move || {
            let mut inner = None;
            let members = writer.finish_with(|so_far| {
                m.members = so_far.to_vec();
                m.members.push(archive::MemberInfo {
                    path: meta_path.clone(),
                    size: meta_bytes.len() as u64,
                    sha256: archive::hex(&<sha2::Sha256 as sha2::Digest>::digest(&meta_bytes)),
                });
                m.finished_at = Utc::now();
                let json = m.to_json();
                inner = Some(m.clone());
                vec![(meta_path, meta_bytes), (manifest_member, json)]
            });
            // The file was just written, so this reads the page cache: a few
            // hundred ms per GB with SHA extensions.
            members
                .and_then(|_| crate::unpack::file_digest(&temp))
                .map(|digest| {
                    let mut m = inner.expect("trailer ran");
                    m.archive_sha256 = Some(digest.sha256);
                    m.archive_size = Some(digest.size);
                    m
                })
                .map_err(|e| ExportError::from_io(&temp, e))
        })
        .await
        .map_err(|e| ExportError::from_join(e, "the archive's finishing thread"))?
    };
    manifest = finished?;
    let manifest_key = names::key(&spec.policy, &names::manifest_name(&archive_name));
    let (target, json) = (job.target.clone(), manifest.to_json());
    let (k, t) = (key.clone(), temp.clone());
    if let Some(guard) = &job.guard {
        guard
            .confirm()
            .await
            .map_err(|e| ExportError::LeaseLost(e.to_string()))?;
    }
    let missing_copies =
        tokio::task::spawn_blocking(move || target.commit_copies(&t, &k, &manifest_key, &json))
            .await
            .map_err(|e| ExportError::from_join(e, "the archive's commit"))?
            .map_err(ExportError::from_storage)?;
    // A local commit moved the file away; a target that uploads (or copies) leaves it
    // behind: the guard removes whatever is still there.
    drop(temp_guard);
    let watermark = match (job.extent, &job.chain) {
        (Extent::Window(w), _) => Some(w.to),
        (Extent::Snapshot, Some(_)) => Some(to),
        (Extent::Snapshot, None) => None,
    };
    Ok(ExportOutcome {
        archive: Some(Source::object(&job.target, key)),
        cut: cut.map(|c| c.0),
        watermark,
        builds_on: builds_on(job),
        token: None,
        documents,
        bytes,
        untimed,
        missing_copies,
        manifest: Some(manifest),
    })
}

/// The manifest's kind, chain link and changes for `job`'s archive.
fn chain_fields(
    job: &ExportJob,
    archive: &str,
    cut: Option<(ClusterTime, chrono::DateTime<Utc>)>,
    history: Option<History>,
    (deleted, captured): (u64, u64),
    token: Option<String>,
) -> (Kind, Option<Link>, Option<Changes>) {
    let plain = match job.extent {
        Extent::Snapshot => Kind::Full,
        Extent::Window(_) => Kind::Incremental,
    };
    let (Some(chain), Some((until, at))) = (&job.chain, cut) else {
        return (plain, None, None);
    };
    let (kind, link, since) = match chain {
        ChainJob::Full => (
            Kind::Full,
            Link {
                base: archive.to_string(),
                previous: None,
            },
            None,
        ),
        ChainJob::Incremental {
            base,
            previous,
            since,
            ..
        } => (
            Kind::Incremental,
            Link {
                base: base.clone(),
                previous: Some(previous.clone()),
            },
            Some(*since),
        ),
    };
    // A server without an oplog (standalone) has no cut: no run after this one can
    // know what was deleted, so its next run is a full too.
    let history = match history {
        Some(h) => h,
        None if until == (ClusterTime { t: 0, i: 0 }) => {
            History::Unavailable("the server keeps no oplog (a standalone server)".into())
        }
        None => History::Complete,
    };
    let changes = Changes {
        until,
        at,
        since,
        deleted,
        captured,
        history,
        token,
    };
    (kind, Some(link), Some(changes))
}

/// The archive a chain incremental builds on.
fn builds_on(job: &ExportJob) -> Option<String> {
    match &job.chain {
        Some(ChainJob::Incremental { previous, .. }) => Some(previous.archive.clone()),
        _ => None,
    }
}

/// The deletions member: one `{_id: …}` document per deleted document, in order.
fn deletions(ids: &[mongodb::bson::Bson]) -> Result<Vec<u8>, ExportError> {
    let mut out = Vec::new();
    for id in ids {
        let doc = mongodb::bson::doc! {"_id": id.clone()};
        let bytes = mongodb::bson::serialize_to_vec(&doc)
            .map_err(|e| ExportError::Internal(format!("a deleted _id: {e}")))?;
        out.extend_from_slice(&bytes);
    }
    Ok(out)
}

impl ExportOutcome {
    /// A run that wrote nothing.
    fn nothing(
        untimed: Option<u64>,
        cut: Option<ClusterTime>,
        watermark: Option<chrono::DateTime<Utc>>,
    ) -> ExportOutcome {
        ExportOutcome {
            manifest: None,
            archive: None,
            cut,
            watermark,
            builds_on: None,
            token: None,
            documents: 0,
            bytes: 0,
            untimed,
            missing_copies: Vec::new(),
        }
    }
}

/// The server's version, for manifests.
pub async fn server_version(client: &Client) -> Result<String, ExportError> {
    let info = client
        .database("admin")
        .run_command(mongodb::bson::doc! {"buildInfo": 1})
        .await
        .map_err(ExportError::from_mongo)?;
    Ok(info.get_str("version").unwrap_or("unknown").to_string())
}
