//! One export job: a collection's window streamed as raw BSON into a tar.gz archive,
//! committed atomically, with its manifest beside it.
//!
//! window ▶ query ▶ raw cursor ▶ (channel) ▶ compressing writer thread ▶ temp file ▶
//! fsync ▶ rename ▶ manifest

pub mod archive;
pub mod manifest;
pub mod metadata;
pub mod source;

use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use chrono::Utc;
use mongodb::Client;
use mongodb::bson::RawDocumentBuf;
use mongodb::error::ErrorKind;

use crate::plan::JobSpec;
use crate::storage::{self, Source, StorageError, Target, names};
use crate::window::Extent;
use archive::ArchiveWriter;
use manifest::Manifest;
use source::{Query, Timed};

/// Documents are handed to the compressing thread in chunks of about this size.
const CHUNK: usize = 1 << 20;
/// Chunks in flight between the cursor and the compressor: bounds memory.
const CHUNKS_IN_FLIGHT: usize = 4;
/// Documents per server batch. The default (16 MiB replies) costs memory in proportion
/// to the batch, twice over; a few thousand documents a round trip keeps the server busy
/// at a fraction of the memory.
const BATCH_DOCS: u32 = 4096;

/// Why an export failed, in one line a human can act on.
#[derive(Debug, Clone, thiserror::Error)]
pub enum ExportError {
    #[error("server unreachable: {0}")]
    Unreachable(String),
    #[error("authentication failed: {0}")]
    AuthFailed(String),
    #[error("not authorized: {0} (the backup user needs the `read` role on the database)")]
    NotAuthorized(String),
    #[error("database `{0}` does not exist or has no collections")]
    DatabaseMissing(String),
    #[error("collection `{collection}` does not exist in database `{database}`")]
    CollectionMissing {
        database: String,
        collection: String,
    },
    #[error("{1} writing {path}", path = .0.display())]
    DiskFull(PathBuf, &'static str),
    #[error("cannot write to {path}: {1}", path = .0.display())]
    NotWritable(PathBuf, Arc<io::Error>),
    #[error("I/O error on {path}: {1}", path = .0.display())]
    Io(PathBuf, Arc<io::Error>),
    #[error("network error (transient): {0}")]
    Transient(String),
    #[error("MongoDB error: {0}")]
    Mongo(String),
    #[error("encryption: {0}")]
    Encryption(String),
    /// A bug in dcb (a thread of the export panicked); reported as a failure.
    #[error("internal error: {0}")]
    Internal(String),
    #[error("interrupted")]
    Interrupted,
}

/// Server error codes that mean "the server or the network went away for a moment":
/// the driver's retryable read codes, plus a cursor the server lost or killed.
const TRANSIENT_CODES: &[i32] = &[
    6,     // HostUnreachable
    7,     // HostNotFound
    43,    // CursorNotFound (e.g. the server restarted)
    89,    // NetworkTimeout
    91,    // ShutdownInProgress
    134,   // ReadConcernMajorityNotAvailableYet
    189,   // PrimarySteppedDown
    237,   // CursorKilled
    262,   // ExceededTimeLimit
    9001,  // SocketException
    10107, // NotWritablePrimary
    11600, // InterruptedAtShutdown
    11602, // InterruptedDueToReplStateChange
    13435, // NotPrimaryNoSecondaryOk
    13436, // NotPrimaryOrSecondary
];

impl ExportError {
    pub fn from_mongo(e: mongodb::error::Error) -> ExportError {
        let msg = e.to_string();
        match e.kind.as_ref() {
            ErrorKind::Authentication { message, .. } => ExportError::AuthFailed(message.clone()),
            ErrorKind::ServerSelection { message, .. } => {
                ExportError::Unreachable(first_line(message))
            }
            ErrorKind::DnsResolve { message, .. } => ExportError::Unreachable(message.clone()),
            ErrorKind::Command(c) if c.code == 13 || c.code_name == "Unauthorized" => {
                ExportError::NotAuthorized(c.message.clone())
            }
            ErrorKind::Command(c) if c.code == 18 => ExportError::AuthFailed(c.message.clone()),
            ErrorKind::Command(c) if TRANSIENT_CODES.contains(&c.code) => {
                ExportError::Transient(msg)
            }
            ErrorKind::Io(_) | ErrorKind::ConnectionPoolCleared { .. } => {
                ExportError::Transient(msg)
            }
            _ if e.contains_label("RetryableReadError")
                || e.contains_label("TransientTransactionError") =>
            {
                ExportError::Transient(msg)
            }
            _ => ExportError::Mongo(msg),
        }
    }

    /// A storage failure, classified by its cause like a file error.
    pub fn from_storage(e: StorageError) -> ExportError {
        let what = PathBuf::from(&e.what);
        ExportError::from_io(&what, e.source)
    }

    pub fn from_io(path: &Path, e: io::Error) -> ExportError {
        let full = match e.kind() {
            io::ErrorKind::StorageFull => Some("disk full"),
            io::ErrorKind::QuotaExceeded => Some("disk quota exceeded"),
            io::ErrorKind::FileTooLarge => Some("file size limit reached"),
            _ if e.raw_os_error() == Some(28) => Some("disk full"),
            _ => None,
        };
        if let Some(why) = full {
            ExportError::DiskFull(path.to_path_buf(), why)
        } else if matches!(
            e.kind(),
            io::ErrorKind::PermissionDenied | io::ErrorKind::ReadOnlyFilesystem
        ) {
            ExportError::NotWritable(path.to_path_buf(), Arc::new(e))
        } else {
            ExportError::Io(path.to_path_buf(), Arc::new(e))
        }
    }

    /// Worth another attempt after a pause.
    pub fn is_transient(&self) -> bool {
        matches!(self, ExportError::Transient(_))
    }

    /// A task of the export ended without a result: cancelled by a shutdown, or a bug.
    fn from_join(e: tokio::task::JoinError, what: &str) -> ExportError {
        if e.is_cancelled() {
            return ExportError::Interrupted;
        }
        let panic = e.into_panic();
        let why = panic
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| panic.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "no message".into());
        ExportError::Internal(format!("{what} panicked: {why}"))
    }
}

fn first_line(s: &str) -> String {
    s.lines().next().unwrap_or(s).to_string()
}

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
}

#[derive(Debug, Clone)]
pub struct ExportOutcome {
    /// `None` for an empty window: nothing was written.
    pub manifest: Option<Manifest>,
    pub archive: Option<Source>,
    pub documents: u64,
    pub bytes: u64,
    pub untimed: Option<u64>,
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
    let to = match job.extent {
        Extent::Window(w) if w.is_empty() => {
            return Ok(ExportOutcome {
                manifest: None,
                archive: None,
                documents: 0,
                bytes: 0,
                untimed: None,
            });
        }
        Extent::Window(w) => w.to,
        Extent::Snapshot => started_at,
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
    // From here on, any early return, panic or cancellation removes the temp file.
    let temp_guard = storage::TempGuard::new(temp.clone());
    let writer = ArchiveWriter::create(
        &temp,
        &bson_member,
        job.compression_level,
        to.timestamp().max(0) as u64,
        &recipients,
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
    let (writer, documents, untimed_scan) = stream(client, job, &query, writer, progress).await?;
    let untimed = untimed_scan.or(untimed_server);
    // An incremental window with no documents needs no archive: the run still succeeds
    // and moves the watermark. A snapshot is kept even when empty: it records that the
    // collection was empty.
    if documents == 0 && matches!(job.extent, Extent::Window(_)) {
        drop(writer);
        drop(temp_guard);
        return Ok(ExportOutcome {
            manifest: None,
            archive: None,
            documents: 0,
            bytes: 0,
            untimed,
        });
    }
    let bytes = writer.bson_bytes();
    let (from, mode) = match job.extent {
        Extent::Window(w) => (w.from, spec.collection.mode),
        Extent::Snapshot => (None, spec.collection.mode),
    };
    let mut manifest = Manifest {
        format: manifest::FORMAT,
        dcb_version: env!("CARGO_PKG_VERSION").to_string(),
        policy: spec.policy.clone(),
        database: spec.database.clone(),
        collection: coll_name.clone(),
        time_field: spec.collection.time_field.clone(),
        mode,
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
    };
    let meta_path = names::metadata_member(&spec.database, coll_name);
    let manifest_member = names::manifest_member(&spec.policy, &spec.database, coll_name);
    let finished = {
        let mut m = manifest.clone();
        let temp = temp.clone();
        tokio::task::spawn_blocking(move || {
            let mut inner = None;
            let members = writer.finish(|bson| {
                m.members = vec![
                    bson.clone(),
                    archive::MemberInfo {
                        path: meta_path.clone(),
                        size: meta_bytes.len() as u64,
                        sha256: archive::hex(&<sha2::Sha256 as sha2::Digest>::digest(&meta_bytes)),
                    },
                ];
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
    tokio::task::spawn_blocking(move || target.commit(&t, &k, &manifest_key, &json))
        .await
        .map_err(|e| ExportError::from_join(e, "the archive's commit"))?
        .map_err(ExportError::from_storage)?;
    temp_guard.disarm();
    Ok(ExportOutcome {
        archive: Some(Source::object(&job.target, key)),
        documents,
        bytes,
        untimed,
        manifest: Some(manifest),
    })
}

/// Read the cursor into the writer (on its own thread, so compression overlaps the
/// reads). Returns the writer, the documents written and, for scans of a window, the
/// documents no window can select.
async fn stream(
    client: &Client,
    job: &ExportJob,
    query: &Query,
    writer: ArchiveWriter,
    progress: &dyn Progress,
) -> Result<(ArchiveWriter, u64, Option<u64>), ExportError> {
    let spec = &job.spec;
    let coll = client
        .database(&spec.database)
        .collection::<RawDocumentBuf>(&spec.collection.name);
    let temp_path = writer.path().to_path_buf();
    let (tx, mut rx) = tokio::sync::mpsc::channel::<Vec<u8>>(CHUNKS_IN_FLIGHT);
    let writer_thread = tokio::task::spawn_blocking(move || -> io::Result<ArchiveWriter> {
        let mut writer = writer;
        while let Some(chunk) = rx.blocking_recv() {
            writer.write_bson(&chunk)?;
        }
        Ok(writer)
    });

    let read = read_cursor(
        &coll,
        query,
        &spec.collection.time_field,
        &tx,
        progress,
        &job.cancel,
    )
    .await;
    drop(tx);
    let written = writer_thread
        .await
        .map_err(|e| ExportError::from_join(e, "the archive writer"))?;
    match (read, written) {
        (Ok((docs, untimed)), Ok(writer)) => Ok((writer, docs, untimed)),
        // A failed write closes the channel, which the reader sees as a send error:
        // the write error is the cause.
        (_, Err(e)) => Err(ExportError::from_io(&temp_path, e)),
        (Err(e), Ok(_)) => Err(e),
    }
}

async fn read_cursor(
    coll: &mongodb::Collection<RawDocumentBuf>,
    query: &Query,
    time_field: &str,
    tx: &tokio::sync::mpsc::Sender<Vec<u8>>,
    progress: &dyn Progress,
    cancel: &AtomicBool,
) -> Result<(u64, Option<u64>), ExportError> {
    let (filter, after, before) = match query {
        Query::Range(f) => (f.clone(), None, None),
        Query::Scan { from, before } => (mongodb::bson::Document::new(), *from, *before),
    };
    let mut cursor = coll
        .find(filter)
        .batch_size(BATCH_DOCS)
        .await
        .map_err(ExportError::from_mongo)?;
    let path: Vec<&str> = time_field.split('.').collect();
    let cutoff = before.map(|b| b.timestamp_millis());
    let start = after.map_or(i64::MIN, |a| a.timestamp_millis());
    let mut untimed = 0u64;
    let mut docs = 0u64;
    let mut buf = Vec::with_capacity(CHUNK + 64 * 1024);
    let mut batch_docs = 0u64;
    // A getMore can wait on the server for long; a shutdown must not wait with it.
    let cancelled = cancelled(cancel);
    tokio::pin!(cancelled);
    loop {
        let more = tokio::select! {
            biased;
            more = cursor.advance() => more.map_err(ExportError::from_mongo)?,
            () = &mut cancelled => return Err(ExportError::Interrupted),
        };
        if !more {
            break;
        }
        if cancel.load(Ordering::Relaxed) {
            return Err(ExportError::Interrupted);
        }
        let doc = cursor.current();
        if let Some(cutoff) = cutoff {
            match source::time_of(doc, &path) {
                Timed::At(t) if t >= start && t < cutoff => {}
                Timed::At(_) => continue,
                Timed::Untimed => {
                    untimed += 1;
                    continue;
                }
            }
        }
        buf.extend_from_slice(doc.as_bytes());
        docs += 1;
        batch_docs += 1;
        if buf.len() >= CHUNK {
            let len = buf.len() as u64;
            let full = std::mem::replace(&mut buf, Vec::with_capacity(CHUNK + 64 * 1024));
            send(tx, full).await?;
            progress.advance(batch_docs, len);
            batch_docs = 0;
        }
    }
    if !buf.is_empty() {
        let len = buf.len() as u64;
        send(tx, buf).await?;
        progress.advance(batch_docs, len);
    }
    Ok((docs, cutoff.map(|_| untimed)))
}

/// Resolves once `cancel` is set (polled: the flag is shared with sync code).
pub async fn cancelled(cancel: &AtomicBool) {
    while !cancel.load(Ordering::Relaxed) {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Hand a chunk to the writer thread; waits while it is busy (bounded memory).
async fn send(tx: &tokio::sync::mpsc::Sender<Vec<u8>>, chunk: Vec<u8>) -> Result<(), ExportError> {
    // A closed channel means the writer stopped: its error is reported by the caller.
    tx.send(chunk).await.map_err(|_| ExportError::Interrupted)
}

async fn count_untimed(db: &mongodb::Database, spec: &JobSpec) -> Option<u64> {
    let coll = db.collection::<mongodb::bson::Document>(&spec.collection.name);
    let mut total = 0;
    for filter in source::untimed_filters(&spec.collection.time_field) {
        match coll
            .count_documents(filter)
            .max_time(Duration::from_secs(60))
            .await
        {
            Ok(n) => total += n,
            Err(e) => {
                tracing::warn!(job = %spec.id(), error = %e, "could not count documents without a valid time field");
                return None;
            }
        }
    }
    Some(total)
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
