//! Where archives and their manifests are kept, behind one interface ([`Target`]):
//! create (stage a local file), commit (the archive, then its manifest as the commit
//! marker), list by prefix, read, delete. Local folders ([`local::Local`]) and
//! S3-compatible buckets ([`s3::S3`]) implement it. Beside it: how things are named
//! ([`names`]), crash-safe local files ([`fs`]) and advisory locks ([`lock`]).

pub mod fs;
pub mod local;
pub mod lock;
pub mod names;
pub mod s3;
pub mod set;
pub mod unavailable;

use std::io::{self, Read};
use std::path::{Path, PathBuf};

pub use fs::{
    Prepared, TempGuard, commit, create_dir, create_new, open_append, remove_leftovers, sync_dir,
    write_atomic,
};
pub use lock::{Lock, lock, lock_readers, lock_readers_of, lock_shared, readers_lock, try_lock};
pub use names::{
    ARCHIVE_EXT, ENCRYPTED_EXT, MANIFEST_EXT, MAX_FILE_NAME, TEMP_MARK, archive_key, archive_stem,
    logs_dir, longest_file_name, policy_dir, stamp, temp_path,
};

/// Why a storage operation failed: the operation, the object and the cause.
#[derive(Debug, thiserror::Error)]
#[error("{op} {what}: {source}")]
pub struct StorageError {
    /// What was being done (`cannot write`, `cannot list`, ...).
    pub op: &'static str,
    /// The object or place concerned, as the operator knows it.
    pub what: String,
    #[source]
    pub source: io::Error,
}

impl StorageError {
    pub fn new(op: &'static str, what: impl Into<String>, source: io::Error) -> StorageError {
        StorageError {
            op,
            what: what.into(),
            source,
        }
    }

    pub fn kind(&self) -> io::ErrorKind {
        self.source.kind()
    }
}

/// A copy a target of several could not write: which target, and why.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct MissingCopy {
    pub target: String,
    pub error: String,
}

/// An object in a target: its key (`<policy>/<file name>`) and size in bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Object {
    pub key: String,
    pub size: u64,
}

/// One place archives and manifests are kept. Keys are `/`-separated relative paths,
/// `<policy>/<file name>` ([`names::key`]).
pub trait Target: Send + Sync + std::fmt::Debug {
    /// How messages name it: the folder, or the bucket and prefix.
    fn describe(&self) -> String;

    /// A new local file to write the object `key` to before it is committed; it does
    /// not exist yet. Remove it (a [`TempGuard`]) if it is never committed.
    fn stage(&self, key: &str) -> Result<PathBuf, StorageError>;

    /// Place the finished file `file` (staged here, or a committed copy elsewhere) as
    /// `key`, then `manifest` as `manifest_key`: the manifest is the commit marker, so
    /// when this fails, neither is left in place. Never overwrites. A file staged here
    /// is moved; any other is copied.
    fn commit(
        &self,
        file: &Path,
        key: &str,
        manifest_key: &str,
        manifest: &[u8],
    ) -> Result<(), StorageError>;

    /// As [`Target::commit`], for a target of several copies ([`set::Set`]): succeeds
    /// when one copy is placed, and says which could not be.
    fn commit_copies(
        &self,
        file: &Path,
        key: &str,
        manifest_key: &str,
        manifest: &[u8],
    ) -> Result<Vec<MissingCopy>, StorageError> {
        self.commit(file, key, manifest_key, manifest)
            .map(|()| Vec::new())
    }

    /// Write a small object whole, replacing what is there (a recovered manifest).
    fn put(&self, key: &str, bytes: &[u8]) -> Result<(), StorageError>;

    /// The committed objects whose keys start with `prefix`, sorted by key;
    /// temporary and hidden ones left out.
    fn list(&self, prefix: &str) -> Result<Vec<Object>, StorageError>;

    /// A reader of the object's bytes.
    fn open(&self, key: &str) -> Result<Box<dyn Read + Send>, StorageError>;

    /// The object's bytes, whole: for manifests and other small objects.
    fn read(&self, key: &str) -> Result<Vec<u8>, StorageError> {
        let mut out = Vec::new();
        self.open(key)?
            .read_to_end(&mut out)
            .map_err(|e| StorageError::new("cannot read", key, e))?;
        Ok(out)
    }

    /// Delete the object; one already gone is no error.
    fn delete(&self, key: &str) -> Result<(), StorageError>;

    /// Remove what interrupted writes left under `prefix`; returns what was removed.
    /// Call only while no write under `prefix` can be in progress (the policy's lock).
    fn remove_leftovers(&self, prefix: &str) -> Vec<String>;

    /// Where the object is on this machine's disk, for a target that keeps it there.
    fn local_path(&self, key: &str) -> Option<PathBuf>;
}

/// Where one archive's bytes are read from: an object of a target, or a file anywhere
/// (an archive named on the command line).
#[derive(Debug, Clone)]
pub enum Source {
    Object {
        target: std::sync::Arc<dyn Target>,
        key: String,
    },
    File(PathBuf),
}

impl Source {
    pub fn object(target: &std::sync::Arc<dyn Target>, key: impl Into<String>) -> Source {
        Source::Object {
            target: target.clone(),
            key: key.into(),
        }
    }

    /// A reader of the archive's bytes.
    pub fn open(&self) -> io::Result<Box<dyn Read + Send>> {
        match self {
            Source::Object { target, key } => {
                target.open(key).map_err(|e| io::Error::new(e.kind(), e))
            }
            Source::File(path) => Ok(Box::new(std::fs::File::open(path)?)),
        }
    }

    /// How logs and catalogs name it: its key, or a file's path under `root`
    /// (`/`-separated, so it matches the key), or its whole path.
    pub fn name(&self, root: &Path) -> String {
        match self {
            Source::Object { key, .. } => key.clone(),
            Source::File(path) => archive_key(root, path),
        }
    }

    /// The archive on this machine's disk, when it is there.
    pub fn local_path(&self) -> Option<PathBuf> {
        match self {
            Source::Object { target, key } => target.local_path(key),
            Source::File(path) => Some(path.clone()),
        }
    }

    /// The object's key in its target.
    pub fn key(&self) -> Option<&str> {
        match self {
            Source::Object { key, .. } => Some(key),
            Source::File(_) => None,
        }
    }
}

impl From<&Path> for Source {
    fn from(p: &Path) -> Source {
        Source::File(p.to_path_buf())
    }
}

impl From<&PathBuf> for Source {
    fn from(p: &PathBuf) -> Source {
        Source::File(p.clone())
    }
}

impl From<PathBuf> for Source {
    fn from(p: PathBuf) -> Source {
        Source::File(p)
    }
}

impl From<&Source> for Source {
    fn from(s: &Source) -> Source {
        s.clone()
    }
}

impl std::fmt::Display for Source {
    /// For messages: the object in its target, or the file.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Source::Object { target, key } => match target.local_path(key) {
                Some(p) => write!(f, "{}", p.display()),
                None => write!(f, "{} in {}", key, target.describe()),
            },
            Source::File(path) => write!(f, "{}", path.display()),
        }
    }
}
