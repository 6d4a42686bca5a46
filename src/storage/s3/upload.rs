//! One object streamed to the bucket, put-if-absent: small objects in one `PutObject`,
//! larger ones as a multipart upload of [`super::keys::part_size`] parts, two in
//! flight; `If-None-Match: *` on the put and on the multipart completion. An upload
//! that fails, or is dropped before [`Upload::finish`], is aborted, so no partial
//! object is ever committed and no parts are left behind (a killed process leaves its
//! parts for [`crate::storage::Target::remove_leftovers`]).

use std::sync::Arc;
use std::time::Duration;

use opendal::{Operator, Writer};

use super::bridge::block;
use super::errors::io_error;
use super::uploads::Uploads;
use crate::storage::StorageError;

/// Parts uploaded at once. Each part in flight costs about twice its size in memory
/// (measured: BENCHMARKS.md), and the writer fills one more.
pub const CONCURRENT_PARTS: usize = 2;

/// A streamed upload in progress.
pub struct Upload {
    writer: Option<Writer>,
    /// How messages name the object (`<key> in s3://bucket/prefix`).
    what: String,
    /// Aborts by listing when the writer's own abort fails.
    fallback: Fallback,
}

/// The bucket's incomplete uploads, and this object's full key in it.
#[derive(Clone)]
pub(super) struct Fallback {
    pub uploads: Arc<Uploads>,
    pub key: String,
}

impl std::fmt::Debug for Upload {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Upload")
            .field("what", &self.what)
            .field("open", &self.writer.is_some())
            .field("key", &self.fallback.key)
            .finish()
    }
}

impl Upload {
    /// Start uploading `key` in parts of `part_size` bytes.
    pub(super) fn start(
        op: &Operator,
        key: &str,
        what: String,
        part_size: usize,
        fallback: Fallback,
    ) -> Result<Upload, StorageError> {
        let (op, path) = (op.clone(), key.to_string());
        let writer = block(async move {
            op.writer_with(&path)
                .if_not_exists(true)
                .chunk(part_size)
                .concurrent(CONCURRENT_PARTS)
                .await
        })
        .map_err(|e| StorageError::new("cannot write", what.clone(), io_error(&e)))?;
        Ok(Upload {
            writer: Some(writer),
            what,
            fallback,
        })
    }

    /// Send the next bytes of the object. On an error the upload is aborted.
    pub fn write(&mut self, data: Vec<u8>) -> Result<(), StorageError> {
        let mut writer = self.writer.take().ok_or_else(|| self.closed())?;
        let (writer, result) = block(async move {
            let r = writer.write(data).await;
            (writer, r)
        });
        match result {
            Ok(()) => {
                self.writer = Some(writer);
                Ok(())
            }
            Err(e) => {
                abort(writer, &self.what, &self.fallback);
                Err(StorageError::new(
                    "cannot write",
                    self.what.clone(),
                    io_error(&e),
                ))
            }
        }
    }

    /// Complete the object: it exists, whole, from here on. Fails with
    /// `AlreadyExists` when the key was taken (the upload is then aborted).
    pub fn finish(mut self) -> Result<(), StorageError> {
        let mut writer = self.writer.take().ok_or_else(|| self.closed())?;
        let (writer, result) = block(async move {
            let r = writer.close().await;
            (writer, r)
        });
        match result {
            Ok(_) => Ok(()),
            Err(e) => {
                abort(writer, &self.what, &self.fallback);
                Err(StorageError::new(
                    "cannot write",
                    self.what.clone(),
                    io_error(&e),
                ))
            }
        }
    }

    /// Give up: nothing is committed, the parts sent are deleted.
    pub fn abort(mut self) -> Result<(), StorageError> {
        let Some(writer) = self.writer.take() else {
            return Ok(());
        };
        try_abort(writer, &self.fallback)
            .map_err(|e| StorageError::new("cannot abort the upload of", self.what.clone(), e))
    }

    fn closed(&self) -> StorageError {
        StorageError::new(
            "cannot write",
            self.what.clone(),
            std::io::Error::other("the upload was already finished or aborted"),
        )
    }
}

impl Drop for Upload {
    fn drop(&mut self) {
        if let Some(writer) = self.writer.take() {
            abort(writer, &self.what, &self.fallback);
        }
    }
}

/// Abort, as cleanup after a failure: a failure to abort is logged (the parts are then
/// removed by the next `remove_leftovers`).
fn abort(writer: Writer, what: &str, fallback: &Fallback) {
    if let Err(e) = try_abort(writer, fallback) {
        tracing::warn!("cannot abort the upload of {what}: {e} (the next run removes its parts)");
    }
}

/// Attempts at aborting by listing, after the writer's own abort failed.
const ABORT_ATTEMPTS: u32 = 3;

/// The writer's abort, then, if that fails (a server that errs while parts are still
/// arriving: moto answers 500), the object's incomplete uploads listed and aborted, a
/// few times, until none is left.
fn try_abort(mut writer: Writer, fallback: &Fallback) -> std::io::Result<()> {
    let first = match block(async move { writer.abort().await }) {
        Ok(()) => return Ok(()),
        Err(e) => io_error(&e),
    };
    let mut last = first;
    for attempt in 0..ABORT_ATTEMPTS {
        std::thread::sleep(Duration::from_millis(200 << attempt));
        let f = fallback.clone();
        let result = block(async move {
            let pending = f.uploads.list(&f.key).await?;
            for p in pending.iter().filter(|p| p.key == f.key) {
                f.uploads.abort(p).await?;
            }
            Ok::<_, std::io::Error>(())
        });
        match result {
            Ok(()) => return Ok(()),
            Err(e) => last = e,
        }
    }
    Err(last)
}
