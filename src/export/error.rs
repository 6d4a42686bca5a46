//! Why an export failed, in one line a human can act on.

use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use mongodb::error::ErrorKind;

use crate::storage::StorageError;

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
    /// The run's lease was lost (another instance took over): nothing is committed.
    #[error("the run's lease is lost, nothing was committed: {0}")]
    LeaseLost(String),
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
    pub(super) fn from_join(e: tokio::task::JoinError, what: &str) -> ExportError {
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
