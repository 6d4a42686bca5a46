//! Applying a restore chain: documents upserted by `_id` in batches (inserted first,
//! and the ones already there replaced, so overlapping windows and repeated restores
//! change nothing), then the collection's options and indexes from its metadata.
//! Decompression runs on its own thread, a batch ahead of the writes.

use bson::{Bson, Document, RawArrayBuf, RawDocumentBuf, doc, rawdoc};
use chrono::{DateTime, Utc};
use mongodb::error::ErrorKind;
use mongodb::{Client, Collection, Database};
use serde_json::Value;

use std::sync::Arc;

use super::Chain;
use crate::bson_stream::BsonReader;
use crate::crypto::Keys;
use crate::export::source::{Timed, time_of};
use crate::storage::Source;
use crate::unpack::{self, Problem};

/// A batch closes at this many documents or bytes, whichever comes first.
pub const BATCH_DOCS: usize = 10_000;
pub const BATCH_BYTES: usize = 16 * 1024 * 1024;
/// Replacement commands carry documents in their body, which the server caps at
/// 16 MiB: stay well under.
const REPLACE_BYTES: usize = 8 * 1024 * 1024;
const DUPLICATE_KEY: i32 = 11000;
const DOCUMENT_VALIDATION_FAILURE: i32 = 121;
const NAMESPACE_EXISTS: i32 = 48;

#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Outcome {
    pub source: String,
    pub target: String,
    pub archives: usize,
    /// Documents read from the archives.
    pub read: u64,
    /// Left out by `--until`.
    pub skipped: u64,
    pub inserted: u64,
    /// Already in the target (by `_id`) and replaced by the archive's version.
    pub replaced: u64,
    /// Deleted, as a chain archive recorded.
    pub deleted: u64,
    pub indexes: usize,
    /// Things the operator should know (indexes changed, metadata unreadable).
    pub notes: Vec<String>,
}

/// How to write a chain.
#[derive(Debug, Clone, Copy, Default)]
pub struct Options {
    /// Drop the target collection first.
    pub drop_first: bool,
    /// Keep only documents whose time field is before this.
    pub until: Option<DateTime<Utc>>,
    /// Write with `bypassDocumentValidation` (needs that privilege, e.g. the `restore`
    /// role): documents stored before a validator was added fail it.
    pub bypass_validation: bool,
}

/// Why writing a chain stopped.
#[derive(Debug, thiserror::Error)]
pub enum WriteError {
    #[error("{target}: {what}: {source}")]
    Mongo {
        target: String,
        what: &'static str,
        source: mongodb::error::Error,
    },
    /// The server refused a batch (a validator, a duplicate key, a write concern).
    #[error("{target}: {message}")]
    Batch { target: String, message: String },
    #[error("{target}: the archive reader stopped: {message}")]
    Reader { target: String, message: String },
    #[error("{archive}: {problem}")]
    Archive { archive: String, problem: Problem },
    #[error(
        "{archive}: the archive changed after it was verified (read {read} documents; the manifest says {expected}); the restore stopped"
    )]
    Changed {
        archive: String,
        read: u64,
        expected: u64,
    },
}

/// Restore one chain into its target. `metadata` is the newest archive's
/// `.metadata.json`; `progress` gets the documents written so far.
pub async fn chain(
    client: &Client,
    chain: &Chain,
    metadata: Option<&Value>,
    keys: Arc<Keys>,
    options: Options,
    progress: &(dyn Fn(u64) + Send + Sync),
) -> Result<Outcome, WriteError> {
    let Options {
        drop_first,
        until,
        bypass_validation,
    } = options;
    let db = client.database(&chain.target_database);
    let coll = db.collection::<RawDocumentBuf>(&chain.target_collection);
    let target = chain.target();
    let mongo = |what: &'static str, source: mongodb::error::Error| WriteError::Mongo {
        target: target.clone(),
        what,
        source,
    };
    let mut notes = Vec::new();
    let meta = match metadata.map(|m| Bson::try_from(m.clone())) {
        Some(Ok(Bson::Document(d))) => Some(d),
        Some(_) => {
            notes.push(
                "the metadata is unreadable: no collection options or indexes restored".to_string(),
            );
            None
        }
        None => {
            notes.push(
                "the archive has no metadata: no collection options or indexes restored"
                    .to_string(),
            );
            None
        }
    };
    let meta = meta.as_ref();

    if drop_first {
        coll.drop()
            .await
            .map_err(|e| mongo("cannot drop the collection", e))?;
    }
    ensure_collection(&db, &chain.target_collection, meta)
        .await
        .map_err(|e| mongo("cannot create the collection", e))?;

    let mut out = Outcome {
        source: chain.source(),
        target: target.clone(),
        archives: chain.archives.len(),
        notes,
        ..Outcome::default()
    };
    // An exact chain is the collection as it was: no time-field cut.
    let until = if chain.exact { None } else { until };
    for found in &chain.archives {
        let (tx, mut rx) = tokio::sync::mpsc::channel::<Batch>(2);
        let archive = found.archive.clone();
        let member = format!(
            "{}/{}.bson",
            found.manifest.database, found.manifest.collection
        );
        // Each archive by its own time field: a policy may have changed it.
        let time_field = found.manifest.time_field.clone();
        let keys = keys.clone();
        let reader = tokio::task::spawn_blocking(move || {
            read_batches(archive, &keys, &member, &time_field, until, tx)
        });
        let mut failed = None;
        while let Some(batch) = rx.recv().await {
            let written = match &batch {
                Batch::Upsert(docs) => write_batch(&db, &coll, docs, bypass_validation).await,
                Batch::Delete(ids) => delete_batch(&coll, ids).await.map(|n| {
                    out.deleted += n;
                    (0, 0)
                }),
            };
            match written {
                Ok((inserted, replaced)) => {
                    out.inserted += inserted;
                    out.replaced += replaced;
                    progress(out.inserted + out.replaced);
                }
                Err(message) => {
                    failed = Some(WriteError::Batch {
                        target: target.clone(),
                        message,
                    });
                    break;
                }
            }
        }
        drop(rx);
        let read = reader.await.map_err(|e| WriteError::Reader {
            target: target.clone(),
            message: e.to_string(),
        })?;
        if let Some(e) = failed {
            return Err(e);
        }
        let (read, skipped, digest) = read.map_err(|problem| WriteError::Archive {
            archive: found.archive.to_string(),
            problem,
        })?;
        // The file was verified before the first write; it must not have changed since.
        let changed = read != found.manifest.documents
            || found
                .manifest
                .archive_sha256
                .as_ref()
                .is_some_and(|sha| *sha != digest.sha256);
        if changed {
            return Err(WriteError::Changed {
                archive: found.archive.to_string(),
                read,
                expected: found.manifest.documents,
            });
        }
        out.read += read;
        out.skipped += skipped;
    }
    if let Some(meta) = meta {
        let (n, ttl) = create_indexes(&db, &chain.target_collection, meta)
            .await
            .map_err(|e| mongo("cannot create the indexes", e))?;
        out.indexes = n;
        for name in ttl {
            out.notes.push(format!(
                "TTL index `{name}` restored without expireAfterSeconds, or the server would delete the restored documents; add it back with collMod when you mean it"
            ));
        }
    }
    Ok(out)
}

/// What the archive reader hands the writer, in the archive's order: a chain archive's
/// deletions (`{_id}` documents) come before its documents.
enum Batch {
    Delete(Vec<RawDocumentBuf>),
    Upsert(Vec<RawDocumentBuf>),
}

/// Delete the documents whose `_id`s `ids` hold; returns how many were there.
async fn delete_batch(
    coll: &Collection<RawDocumentBuf>,
    ids: &[RawDocumentBuf],
) -> Result<u64, String> {
    let ids: Vec<Bson> = ids
        .iter()
        .filter_map(|d| d.get("_id").ok().flatten())
        .filter_map(|id| Bson::try_from(id).ok())
        .collect();
    coll.delete_many(doc! {"_id": {"$in": ids}})
        .await
        .map(|r| r.deleted_count)
        .map_err(|e| format!("cannot apply the recorded deletions: {e}"))
}

/// Stream the archive's deletions and its `.bson` member into batches; documents at
/// or after `until` (by the archive's time field) are skipped. Returns (read, skipped,
/// file digest).
fn read_batches(
    archive: Source,
    keys: &Keys,
    member: &str,
    time_field: &str,
    until: Option<DateTime<Utc>>,
    tx: tokio::sync::mpsc::Sender<Batch>,
) -> Result<(u64, u64, unpack::FileDigest), Problem> {
    let path: Vec<&str> = time_field.split('.').collect();
    let until_ms = until.map(|t| t.timestamp_millis());
    let mut problems = Vec::new();
    let mut read = 0u64;
    let mut skipped = 0u64;
    let mut found = false;
    let mut stopped = false;
    let digest = unpack::for_each_member(&archive, keys, &mut problems, |name, _, r, problems| {
        let deletions = crate::storage::names::is_deletions_member(name);
        if (name != member && !deletions) || stopped {
            return Ok(());
        }
        let wrap = if deletions {
            Batch::Delete
        } else {
            found = true;
            Batch::Upsert
        };
        let mut docs = BsonReader::new(r);
        let mut batch = Vec::new();
        let mut bytes = 0usize;
        loop {
            let doc = match docs.next_document() {
                Ok(Some(d)) => d,
                Ok(None) => break,
                Err(crate::bson_stream::BsonError::Io(e)) => return Err(e),
                Err(e) => {
                    problems.push(Problem::new(name, e.to_string()));
                    return Ok(());
                }
            };
            if !deletions {
                read += 1;
                if let (Some(limit), Timed::At(ms)) = (until_ms, time_of(doc, &path))
                    && ms >= limit
                {
                    skipped += 1;
                    continue;
                }
            }
            bytes += doc.as_bytes().len();
            batch.push(doc.to_owned());
            if batch.len() >= BATCH_DOCS || bytes >= BATCH_BYTES {
                if tx.blocking_send(wrap(std::mem::take(&mut batch))).is_err() {
                    stopped = true;
                    return Ok(());
                }
                bytes = 0;
            }
        }
        if !batch.is_empty() && tx.blocking_send(wrap(batch)).is_err() {
            stopped = true;
        }
        Ok(())
    });
    // Verified with these keys before the first write; a key problem now is a change.
    let digest = digest.map_err(|k| Problem::new("archive", k.to_string()))?;
    if let Some(p) = problems.into_iter().next() {
        return Err(p);
    }
    if stopped {
        return Err(Problem::new(member, "the writer stopped reading"));
    }
    let Some(digest) = digest else {
        return Err(Problem::new("archive", "unreadable"));
    };
    if !found {
        return Err(Problem::new(member, "is missing from the archive"));
    }
    Ok((read, skipped, digest))
}

/// Insert a batch; documents whose `_id` is already there are replaced instead.
/// Returns (inserted, replaced).
async fn write_batch(
    db: &Database,
    coll: &Collection<RawDocumentBuf>,
    batch: &[RawDocumentBuf],
    bypass: bool,
) -> Result<(u64, u64), String> {
    let mut insert = coll.insert_many(batch).ordered(false);
    if bypass {
        insert = insert.bypass_document_validation(true);
    }
    let error = match insert.await {
        Ok(_) => return Ok((batch.len() as u64, 0)),
        Err(e) => e,
    };
    let ErrorKind::InsertMany(failure) = &*error.kind else {
        return Err(error.to_string());
    };
    if let Some(wce) = &failure.write_concern_error {
        return Err(format!("write concern: {}", wce.message));
    }
    let errors = failure.write_errors.as_deref().unwrap_or_default();
    if let Some(other) = errors.iter().find(|w| w.code != DUPLICATE_KEY) {
        if other.code == DOCUMENT_VALIDATION_FAILURE {
            return Err(validation_failed(
                batch.get(other.index).and_then(id_of),
                &other.message,
            ));
        }
        return Err(format!(
            "a document was refused ({}): {}",
            other.code_name.as_deref().unwrap_or("error"),
            other.message
        ));
    }
    let mut indexes: Vec<usize> = errors.iter().map(|w| w.index).collect();
    indexes.sort_unstable();
    indexes.dedup();
    if indexes.len() != errors.len() || indexes.last().is_some_and(|&i| i >= batch.len()) {
        return Err("the server reported write errors that do not match the batch".into());
    }
    let dups: Vec<&RawDocumentBuf> = indexes.iter().map(|&i| &batch[i]).collect();
    replace(db, coll.name(), &dups, bypass).await?;
    Ok(((batch.len() - dups.len()) as u64, dups.len() as u64))
}

/// Replace documents by `_id` (upsert), in as few commands as fit.
async fn replace(
    db: &Database,
    coll: &str,
    docs: &[&RawDocumentBuf],
    bypass: bool,
) -> Result<(), String> {
    let mut updates = RawArrayBuf::new();
    let mut first = 0usize;
    let mut pending = 0usize;
    let mut size = 0usize;
    for (i, doc) in docs.iter().enumerate() {
        let len = doc.as_bytes().len();
        // Send what is pending before this document would push the command past the cap.
        if pending > 0 && size + len > REPLACE_BYTES {
            let sent = &docs[first..i];
            send_replacements(db, coll, std::mem::take(&mut updates), sent, bypass).await?;
            first = i;
            pending = 0;
            size = 0;
        }
        let id = doc
            .get("_id")
            .map_err(|e| e.to_string())?
            .ok_or("a document without `_id` collided with another")?;
        updates.push(rawdoc! {"q": {"_id": id}, "u": (*doc).clone(), "upsert": true});
        pending += 1;
        // The statement's keys and the `_id` in `q` on top of the document.
        size += len + 64;
    }
    if pending > 0 {
        send_replacements(db, coll, updates, &docs[first..], bypass).await?;
    }
    Ok(())
}

/// One `update` command replacing `docs` (whose statements `updates` holds).
async fn send_replacements(
    db: &Database,
    coll: &str,
    updates: RawArrayBuf,
    docs: &[&RawDocumentBuf],
    bypass: bool,
) -> Result<(), String> {
    let expected = docs.len();
    let cmd = if bypass {
        rawdoc! {"update": coll, "updates": updates, "ordered": false, "bypassDocumentValidation": true}
    } else {
        rawdoc! {"update": coll, "updates": updates, "ordered": false}
    };
    let reply = db.run_raw_command(cmd).await.map_err(|e| e.to_string())?;
    if let Ok(errors) = reply.get_array("writeErrors")
        && let Some(Bson::Document(first)) = errors.first()
    {
        let message = first.get_str("errmsg").unwrap_or("unknown error");
        if first.get_i32("code").ok() == Some(DOCUMENT_VALIDATION_FAILURE) {
            let doc = first
                .get_i32("index")
                .ok()
                .and_then(|i| docs.get(usize::try_from(i).ok()?));
            return Err(validation_failed(doc.and_then(|d| id_of(d)), message));
        }
        return Err(format!("a document could not be replaced: {message}"));
    }
    if let Ok(wce) = reply.get_document("writeConcernError") {
        return Err(format!(
            "write concern: {}",
            wce.get_str("errmsg").unwrap_or("unknown error")
        ));
    }
    let n = reply
        .get_i32("n")
        .map(i64::from)
        .or_else(|_| reply.get_i64("n"))
        .unwrap_or(-1);
    if n != expected as i64 {
        return Err(format!("the server replaced {n} of {expected} documents"));
    }
    Ok(())
}

/// A document's `_id` for a message (extended JSON, cut short when long).
fn id_of(doc: &RawDocumentBuf) -> Option<String> {
    let id: Bson = doc.get("_id").ok()??.try_into().ok()?;
    let text = id.into_relaxed_extjson().to_string();
    Some(match text.char_indices().nth(200) {
        Some((cut, _)) => format!("{}…", &text[..cut]),
        None => text,
    })
}

/// The collection's validator refused a document: say which, why, and what to do.
fn validation_failed(id: Option<String>, message: &str) -> String {
    let which = match id {
        Some(id) => format!("the document with _id {id}"),
        None => "a document".to_string(),
    };
    format!(
        "{which} fails the collection's validator ({message}); documents stored before the validator was added, or under a looser one, do not pass it. Restore with --bypass-validation (needs the bypassDocumentValidation privilege, e.g. the `restore` role; `readWrite` lacks it)"
    )
}

/// Create the collection with the options it had, unless it exists.
async fn ensure_collection(
    db: &Database,
    name: &str,
    meta: Option<&Document>,
) -> Result<(), mongodb::error::Error> {
    let existing = db
        .list_collection_names()
        .filter(doc! {"name": name})
        .await?;
    if !existing.is_empty() {
        return Ok(());
    }
    let mut cmd = doc! {"create": name};
    if let Some(options) = meta.and_then(|m| m.get_document("options").ok()) {
        for (k, v) in options {
            cmd.insert(k.clone(), v.clone());
        }
    }
    match db.run_command(cmd).await {
        Ok(_) => Ok(()),
        Err(e) if matches!(&*e.kind, ErrorKind::Command(c) if c.code == NAMESPACE_EXISTS) => Ok(()),
        Err(e) => Err(e),
    }
}

/// Recreate the indexes of the metadata (all but `_id`'s), TTL indexes without their
/// expiry. Returns how many, and the names of the TTL ones.
async fn create_indexes(
    db: &Database,
    coll: &str,
    meta: &Document,
) -> Result<(usize, Vec<String>), mongodb::error::Error> {
    let mut specs = Vec::new();
    let mut ttl = Vec::new();
    for ix in meta
        .get_array("indexes")
        .map(|a| a.as_slice())
        .unwrap_or(&[])
    {
        let Some(ix) = ix.as_document() else { continue };
        if ix.get_str("name").ok() == Some("_id_") {
            continue;
        }
        let mut spec = ix.clone();
        for server_owned in ["v", "ns", "background"] {
            spec.remove(server_owned);
        }
        if spec.remove("expireAfterSeconds").is_some() {
            ttl.push(spec.get_str("name").unwrap_or("?").to_string());
        }
        specs.push(Bson::Document(spec));
    }
    if specs.is_empty() {
        return Ok((0, ttl));
    }
    let n = specs.len();
    db.run_command(doc! {"createIndexes": coll, "indexes": specs})
        .await?;
    Ok((n, ttl))
}
