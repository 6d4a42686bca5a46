//! Reading a collection's cursor into the archive: raw BSON in chunks, handed to the
//! compressing writer on its own thread so compression overlaps the reads; memory is
//! bounded by the chunks in flight.

use std::io;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use mongodb::Client;
use mongodb::bson::RawDocumentBuf;

use super::archive::ArchiveWriter;
use super::source::{self, Query, Timed};
use super::{ExportError, ExportJob, Progress};
use crate::plan::JobSpec;

/// Documents are handed to the compressing thread in chunks of about this size.
const CHUNK: usize = 1 << 20;
/// Chunks in flight between the cursor and the compressor: bounds memory.
const CHUNKS_IN_FLIGHT: usize = 4;
/// Documents per server batch. The default (16 MiB replies) costs memory in proportion
/// to the batch, twice over; a few thousand documents a round trip keeps the server busy
/// at a fraction of the memory.
const BATCH_DOCS: u32 = 4096;
/// `_id`s per query when documents are read by `_id`.
const ID_BATCH: usize = 1000;

/// Read the cursor into the writer (on its own thread, so compression overlaps the
/// reads). Returns the writer, the documents written and, for scans of a window, the
/// documents no window can select.
pub(super) async fn stream(
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

/// Which documents of a cursor are kept, by their time field (`[start, before)` in
/// milliseconds).
#[derive(Clone, Copy)]
enum Keep {
    All,
    /// Inside the window; the ones with no date are counted.
    Inside(i64, i64),
    /// Outside the window (or with no date): the window's own query has the others.
    Outside(i64, i64),
}

/// The cursors a query reads, each with its filter, and what each keeps.
fn cursors(query: &Query) -> (Vec<mongodb::bson::Document>, Keep) {
    let ms = |t: chrono::DateTime<chrono::Utc>| t.timestamp_millis();
    match query {
        Query::Range(f) => (vec![f.clone()], Keep::All),
        Query::Scan { from, before } => {
            let keep = match before {
                Some(b) => Keep::Inside(from.map_or(i64::MIN, ms), ms(*b)),
                None => Keep::All,
            };
            (vec![mongodb::bson::Document::new()], keep)
        }
        Query::Ids { ids, window } => {
            let filters = ids
                .chunks(ID_BATCH)
                .map(|chunk| mongodb::bson::doc! {"_id": {"$in": chunk.to_vec()}})
                .collect();
            let keep = Keep::Outside(window.from.map_or(i64::MIN, ms), ms(window.to));
            (filters, keep)
        }
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
    let (filters, keep) = cursors(query);
    let path: Vec<&str> = time_field.split('.').collect();
    let mut untimed = 0u64;
    let mut docs = 0u64;
    let mut buf = Vec::with_capacity(CHUNK + 64 * 1024);
    let mut batch_docs = 0u64;
    // A getMore can wait on the server for long; a shutdown must not wait with it.
    let cancelled = cancelled(cancel);
    tokio::pin!(cancelled);
    for filter in filters {
        let mut cursor = coll
            .find(filter)
            .batch_size(BATCH_DOCS)
            .await
            .map_err(ExportError::from_mongo)?;
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
            let kept = match keep {
                Keep::All => true,
                Keep::Inside(start, before) => match source::time_of(doc, &path) {
                    Timed::At(t) => t >= start && t < before,
                    Timed::Untimed => {
                        untimed += 1;
                        false
                    }
                },
                Keep::Outside(start, before) => match source::time_of(doc, &path) {
                    Timed::At(t) => t < start || t >= before,
                    Timed::Untimed => true,
                },
            };
            if !kept {
                continue;
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
    }
    if !buf.is_empty() {
        let len = buf.len() as u64;
        send(tx, buf).await?;
        progress.advance(batch_docs, len);
    }
    let counted = matches!(keep, Keep::Inside(..));
    Ok((docs, counted.then_some(untimed)))
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

pub(super) async fn count_untimed(db: &mongodb::Database, spec: &JobSpec) -> Option<u64> {
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
