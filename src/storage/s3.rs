//! An S3-compatible bucket as a [`Target`]: `<prefix>/<policy>/<file>` objects, written
//! through opendal (its S3 service only) and committed by their manifest.
//!
//! - **Stage**: S3 has no local folder, so an archive is written to this target's own
//!   folder in a local spool (`<spool>/s3-<bucket>-<hash>/<policy>/`, temp names of
//!   [`crate::storage::names::temp_path`]), then uploaded by `commit`.
//! - **Commit**: the heap the export freed is given back ([`crate::heap`]), then the
//!   file is streamed in 5 MiB parts, two in flight ([`Upload`]; about 20 MiB for any
//!   size, never the whole archive), put-if-absent (`If-None-Match: *`
//!   on `PutObject` and on `CompleteMultipartUpload`); then the manifest is put
//!   put-if-absent: the manifest is the commit marker. An archive without its manifest
//!   is uncommitted: [`Target::list`] leaves it out and [`Target::remove_leftovers`]
//!   deletes it. A failed or dropped upload is aborted; when the manifest cannot be
//!   put, the archive is deleted again. Unlike [`crate::storage::local::Local`], which
//!   moves a file staged in its folder, `commit` never moves nor removes the file it
//!   uploads, staged here or not: the caller's [`crate::storage::TempGuard`] removes a
//!   staged one.
//! - **Threads**: the trait is synchronous; requests run on a small runtime of the S3
//!   client's own (`bridge` says why not opendal's blocking operator), so a target
//!   works from plain threads and from tokio's blocking pool alike.
//! - **Credentials** ([`Credentials`]) are read from the environment or files
//!   ([`S3Config`]), remembered by [`crate::redact`], and appear in no `Debug`, message
//!   or log. Only the given credentials are used: no `~/.aws` files, no instance
//!   metadata, no session token.
//! - **Failures** are not retried here: a failed commit leaves nothing committed, and
//!   the next run writes the archive again.

mod bridge;
mod config;
mod errors;
mod keys;
mod transport;
mod upload;
mod uploads;

use std::fs::File;
use std::io::{self, Read};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use opendal::Operator;

pub use config::{Credentials, S3Config};
pub use keys::{PART_SIZE, part_size};
pub use upload::{CONCURRENT_PARTS, Upload};

use self::bridge::{StreamReader, block};
use self::errors::io_error;
use self::uploads::Uploads;
use super::fs::create_dir;
use super::names::temp_path;
use super::{Object, StorageError, Target};

/// Bytes read from the staged file per write: the writer gathers them into parts.
const READ_SIZE: usize = 1 << 20;

/// Archives kept in an S3-compatible bucket.
pub struct S3 {
    op: Operator,
    /// `s3://bucket/prefix`.
    shown: String,
    /// The target's prefix in the bucket: `""` or `a/b/`.
    prefix: String,
    /// This target's own spool folder.
    spool: PathBuf,
    uploads: Arc<Uploads>,
}

impl std::fmt::Debug for S3 {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("S3")
            .field("target", &self.shown)
            .field("spool", &self.spool)
            .finish_non_exhaustive()
    }
}

impl S3 {
    /// A target for the bucket `config` names, with `credentials` (from
    /// [`S3Config::credentials`]), staging archives under `spool` (e.g.
    /// `<backupRoot>/.spool`; the target keeps to a folder of its own in it). Sends
    /// nothing yet: a wrong bucket or key shows on first use.
    pub fn new(
        config: &S3Config,
        credentials: Credentials,
        spool: &Path,
    ) -> Result<S3, StorageError> {
        let shown = config.describe();
        let invalid = |msg: String| {
            StorageError::new(
                "invalid storage target",
                shown.clone(),
                io::Error::new(io::ErrorKind::InvalidInput, msg),
            )
        };
        config.check().map_err(|e| invalid(e.0))?;
        let prefix = config::normalize_prefix(&config.prefix).map_err(|e| invalid(e.0))?;
        let endpoint = config.endpoint();
        let region = config.region();

        let _ = rustls::crypto::ring::default_provider().install_default();
        let client = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(30))
            .read_timeout(Duration::from_secs(300))
            .user_agent(concat!("dcb/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| invalid(format!("cannot build the HTTP client: {e}")))?;

        let mut builder = opendal::services::S3::default()
            .bucket(&config.bucket)
            .root(&format!("/{prefix}"))
            .endpoint(&endpoint)
            .region(region)
            .access_key_id(&credentials.access_key_id)
            .secret_access_key(&credentials.secret_access_key)
            .disable_config_load()
            .disable_ec2_metadata();
        if !config.path_style() {
            builder = builder.enable_virtual_host_style();
        }
        let op = Operator::new(builder).map_err(|e| invalid(io_error(&e).to_string()))?;
        let transport = opendal::HttpTransporter::new(transport::AsSigned(
            opendal_http_transport_reqwest::ReqwestTransport::new(client.clone()),
        ));
        let op = op
            .clone()
            .with_context(op.context().with_http_transport(transport));

        let bucket_url = bucket_url(&endpoint, &config.bucket, config.path_style());
        let spool = spool.join(keys::spool_name(&endpoint, &config.bucket, &prefix));
        Ok(S3 {
            op,
            prefix,
            spool,
            uploads: Arc::new(Uploads::new(client, bucket_url, region, &credentials)),
            shown,
        })
    }

    /// This target's own spool folder.
    pub fn spool(&self) -> &Path {
        &self.spool
    }

    /// Start a streamed, put-if-absent upload of `key`, `size` bytes long (it sets
    /// the part size; the upload may be shorter or longer). [`S3::commit`] uses it.
    pub fn upload(&self, key: &str, size: u64) -> Result<Upload, StorageError> {
        self.check(key)?;
        let fallback = upload::Fallback {
            uploads: self.uploads.clone(),
            key: format!("{}{key}", self.prefix),
        };
        Upload::start(&self.op, key, self.what(key), part_size(size), fallback)
    }

    /// How messages name an object: `<key> in s3://bucket/prefix`.
    fn what(&self, key: &str) -> String {
        format!("{key} in {}", self.shown)
    }

    fn check(&self, key: &str) -> Result<(), StorageError> {
        if keys::valid_key(key) {
            return Ok(());
        }
        Err(StorageError::new(
            "refusing",
            key,
            io::Error::new(io::ErrorKind::InvalidInput, "not a plain relative key"),
        ))
    }

    /// Every object under the folder of `prefix`, temporary and uncommitted included.
    fn list_raw(&self, prefix: &str) -> Result<Vec<Object>, StorageError> {
        if !keys::valid_prefix(prefix) {
            return Err(StorageError::new(
                "refusing",
                prefix,
                io::Error::new(io::ErrorKind::InvalidInput, "not a plain relative prefix"),
            ));
        }
        let (op, folder) = (self.op.clone(), keys::folder_of(prefix).to_string());
        let entries = block(async move { op.list_with(&folder).recursive(true).await })
            .map_err(|e| StorageError::new("cannot list", self.what(prefix), io_error(&e)))?;
        Ok(entries
            .into_iter()
            .filter(|e| e.metadata().is_file() && !e.path().ends_with('/'))
            .map(|e| Object {
                size: e.metadata().content_length(),
                key: e.path().trim_start_matches('/').to_string(),
            })
            .collect())
    }

    /// Upload `file` as `key`, streamed, put-if-absent.
    fn upload_file(&self, file: &Path, key: &str) -> Result<(), StorageError> {
        let read_error = |e| StorageError::new("cannot read", file.display().to_string(), e);
        let mut input = File::open(file).map_err(read_error)?;
        let size = input.metadata().map_err(read_error)?.len();
        // The export that wrote the file is done with its buffers.
        crate::heap::give_back();
        let mut upload = self.upload(key, size)?;
        loop {
            let mut chunk = Vec::with_capacity(READ_SIZE);
            (&mut input)
                .take(READ_SIZE as u64)
                .read_to_end(&mut chunk)
                .map_err(read_error)?;
            if chunk.is_empty() {
                break;
            }
            upload.write(chunk)?;
        }
        upload.finish()
    }

    /// Whether `key` holds exactly `bytes` (after a put whose answer was lost).
    fn holds(&self, key: &str, bytes: &[u8]) -> bool {
        self.read(key).is_ok_and(|b| b == bytes)
    }
}

/// The URL of the bucket: `<endpoint>/<bucket>` in path style, else the bucket in the
/// host name.
fn bucket_url(endpoint: &str, bucket: &str, path_style: bool) -> String {
    match endpoint.split_once("://") {
        Some((scheme, host)) if !path_style => format!("{scheme}://{bucket}.{host}"),
        _ => format!("{endpoint}/{bucket}"),
    }
}

impl Target for S3 {
    fn describe(&self) -> String {
        self.shown.clone()
    }

    fn stage(&self, key: &str) -> Result<PathBuf, StorageError> {
        self.check(key)?;
        let path = key.split('/').fold(self.spool.clone(), |p, s| p.join(s));
        let dir = path.parent().unwrap_or(&self.spool);
        create_dir(dir)
            .map_err(|e| StorageError::new("cannot write to", dir.display().to_string(), e))?;
        Ok(temp_path(&path))
    }

    /// Upload `file` (staged here or anywhere; it stays where it is), then the
    /// manifest, both put-if-absent. When the manifest cannot be put, the archive is
    /// deleted again; an archive already there fails with `AlreadyExists` and is left
    /// as it was.
    fn commit(
        &self,
        file: &Path,
        key: &str,
        manifest_key: &str,
        manifest: &[u8],
    ) -> Result<(), StorageError> {
        self.check(key)?;
        self.check(manifest_key)?;
        self.upload_file(file, key)?;
        let (op, path, bytes) = (self.op.clone(), manifest_key.to_string(), manifest.to_vec());
        let put = block(async move { op.write_with(&path, bytes).if_not_exists(true).await });
        let Err(e) = put else {
            return Ok(());
        };
        let error = StorageError::new("cannot write", self.what(manifest_key), io_error(&e));
        // The answer may have been lost after the manifest was written.
        if error.kind() != io::ErrorKind::AlreadyExists && self.holds(manifest_key, manifest) {
            return Ok(());
        }
        // Without its manifest the archive is not committed: remove it now rather than
        // leave it to the next run.
        if let Err(d) = self.delete(key) {
            tracing::warn!("{d} (the next run removes it)");
        }
        Err(error)
    }

    fn put(&self, key: &str, bytes: &[u8]) -> Result<(), StorageError> {
        self.check(key)?;
        let (op, path, bytes) = (self.op.clone(), key.to_string(), bytes.to_vec());
        block(async move { op.write(&path, bytes).await })
            .map(drop)
            .map_err(|e| StorageError::new("cannot write", self.what(key), io_error(&e)))
    }

    /// Committed objects only: an archive is listed once its manifest is there.
    fn list(&self, prefix: &str) -> Result<Vec<Object>, StorageError> {
        Ok(keys::committed(self.list_raw(prefix)?, prefix))
    }

    /// A streamed reader: the object is fetched in one request and read chunk by
    /// chunk as the HTTP body arrives.
    fn open(&self, key: &str) -> Result<Box<dyn Read + Send>, StorageError> {
        self.check(key)?;
        let (op, path) = (self.op.clone(), key.to_string());
        let stream = block(async move {
            // A missing object fails here, not at the first read.
            op.stat(&path).await?;
            op.reader_with(&path).await?.into_bytes_stream(..).await
        })
        .map_err(|e| StorageError::new("cannot read", self.what(key), io_error(&e)))?;
        Ok(Box::new(StreamReader::new(stream)))
    }

    fn read(&self, key: &str) -> Result<Vec<u8>, StorageError> {
        self.check(key)?;
        let (op, path) = (self.op.clone(), key.to_string());
        block(async move { op.read(&path).await })
            .map(|b| b.to_vec())
            .map_err(|e| StorageError::new("cannot read", self.what(key), io_error(&e)))
    }

    fn delete(&self, key: &str) -> Result<(), StorageError> {
        self.check(key)?;
        let (op, path) = (self.op.clone(), key.to_string());
        match block(async move { op.delete(&path).await }) {
            Err(e) if e.kind() != opendal::ErrorKind::NotFound => Err(StorageError::new(
                "cannot delete",
                self.what(key),
                io_error(&e),
            )),
            _ => Ok(()),
        }
    }

    /// Remove what interrupted writes left under `prefix`: incomplete multipart
    /// uploads of archives (aborted), this target's stale spool files, and archives
    /// whose manifest is missing, which are uncommitted (the commit that wrote them
    /// failed or was killed before its manifest). Returns what was removed. Call only
    /// while no write under `prefix` can be in progress (the policy's lock or lease):
    /// an archive between its upload and its manifest would be deleted.
    fn remove_leftovers(&self, prefix: &str) -> Vec<String> {
        let mut removed = Vec::new();
        if !keys::valid_prefix(prefix) {
            return removed;
        }
        removed.extend(self.abort_uploads(prefix));
        removed.extend(self.remove_spooled(prefix));
        match self.list_raw(prefix) {
            Ok(listing) => {
                for key in keys::uncommitted_archives(&listing, prefix) {
                    match self.delete(&key) {
                        Ok(()) => removed.push(self.what(&key)),
                        Err(e) => tracing::warn!("{e}"),
                    }
                }
            }
            Err(e) => tracing::warn!("{e}"),
        }
        removed
    }

    fn local_path(&self, _key: &str) -> Option<PathBuf> {
        None
    }
}

impl S3 {
    /// Abort the incomplete uploads of archives under `prefix`.
    fn abort_uploads(&self, prefix: &str) -> Vec<String> {
        let mut removed = Vec::new();
        let full = format!("{}{prefix}", self.prefix);
        let uploads = self.uploads.clone();
        let pending = match block(async move { uploads.list(&full).await }) {
            Ok(p) => p,
            Err(e) => {
                tracing::warn!(
                    "cannot list the incomplete uploads under {}: {e}",
                    self.what(prefix)
                );
                return removed;
            }
        };
        for upload in pending {
            let Some(key) = upload.key.strip_prefix(&self.prefix).map(String::from) else {
                continue;
            };
            let is_archive = key
                .rsplit('/')
                .next()
                .is_some_and(super::names::is_archive_name);
            if !is_archive || !keys::valid_key(&key) {
                continue;
            }
            let uploads = self.uploads.clone();
            match block(async move { uploads.abort(&upload).await }) {
                Ok(()) => removed.push(format!("incomplete upload of {}", self.what(&key))),
                Err(e) => tracing::warn!("cannot abort the upload of {}: {e}", self.what(&key)),
            }
        }
        removed
    }

    /// Stale staged files of this target under `prefix`'s folder (all of them for an
    /// empty prefix).
    fn remove_spooled(&self, prefix: &str) -> Vec<String> {
        let folder = keys::folder_of(prefix);
        let mut dirs = Vec::new();
        if folder.is_empty() {
            if let Ok(entries) = std::fs::read_dir(&self.spool) {
                dirs.extend(entries.flatten().map(|e| e.path()).filter(|p| p.is_dir()));
            }
            dirs.push(self.spool.clone());
        } else {
            dirs.push(
                folder
                    .split('/')
                    .filter(|s| !s.is_empty())
                    .fold(self.spool.clone(), |p, s| p.join(s)),
            );
        }
        dirs.iter()
            .flat_map(|d| super::fs::remove_leftovers(d))
            .map(|p| p.display().to_string())
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::bucket_url;

    // Path style puts the bucket in the path; virtual-host style in the host name.
    #[test]
    fn bucket_urls() {
        assert_eq!(
            bucket_url("http://127.0.0.1:9000", "bkt", true),
            "http://127.0.0.1:9000/bkt"
        );
        assert_eq!(
            bucket_url("https://s3.eu-west-1.amazonaws.com", "bkt", false),
            "https://bkt.s3.eu-west-1.amazonaws.com"
        );
    }
}
