//! Why one collection's run did not export its window.

use std::path::PathBuf;

use crate::export::ExportError;
use crate::mongo::ConnectError;

/// Why one collection's run did not export its window.
#[derive(Debug, Clone, thiserror::Error)]
pub enum RunError {
    /// Another process holds the policy's run lock: the backup is in hand, this run
    /// just does not start twice. Not a failure.
    #[error("another dcb is running policy `{policy}` (lock {}); not started twice", lock.display())]
    Locked { policy: String, lock: PathBuf },
    /// Another instance holds the policy's lease (`lock: mongodb`): not started
    /// twice, not a failure.
    #[error(
        "another dcb instance is running policy `{policy}`: {holder} holds its lease; not started twice"
    )]
    Leased { policy: String, holder: String },
    /// The lease could not be taken or read.
    #[error("cannot take the policy's lease: {0}")]
    Lease(String),
    /// A target the policy shares with other instances could not be read, so what
    /// they committed is unknown: running would risk writing a window twice.
    #[error("{0}")]
    Targets(String),
    /// No client could be made; `server` is the URI with its password masked.
    #[error("cannot connect: {error} (server {server})")]
    Connect { error: ConnectError, server: String },
    /// The server could not be reached, or refused the login: says which server, by
    /// its URI with the password masked.
    #[error("{error} (server {server})")]
    Server { error: ExportError, server: String },
    #[error(transparent)]
    Export(#[from] ExportError),
    /// A bug in dcb (a task panicked), reported as a failure so it is alerted and
    /// retried.
    #[error("internal error: {0}")]
    Internal(String),
}

impl RunError {
    /// An export's error; one about reaching or logging in to the server names it by
    /// `uri`, masked.
    pub fn export(error: ExportError, uri: &str) -> RunError {
        match error {
            ExportError::Unreachable(_) | ExportError::AuthFailed(_) => RunError::Server {
                error,
                server: crate::redact::uri(uri),
            },
            other => RunError::Export(other),
        }
    }

    /// Stopped by a shutdown (or by a task that ended without a result).
    pub fn is_interrupted(&self) -> bool {
        matches!(self, RunError::Export(ExportError::Interrupted))
    }

    pub fn is_locked(&self) -> bool {
        matches!(self, RunError::Locked { .. } | RunError::Leased { .. })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // A lock held by another process and an interrupted export are told apart from
    // failures by their variant, whatever their messages say.
    #[test]
    fn classified_by_variant() {
        let locked = RunError::Locked {
            policy: "hot".into(),
            lock: PathBuf::from("x/.dcb.lock"),
        };
        assert!(locked.is_locked() && !locked.is_interrupted());
        let interrupted = RunError::Export(ExportError::Interrupted);
        assert!(interrupted.is_interrupted() && !interrupted.is_locked());
        // A message that reads like either is neither.
        let odd = RunError::Internal("another dcb is running policy `hot`; interrupted".into());
        assert!(!odd.is_locked() && !odd.is_interrupted());
        let down = RunError::Export(ExportError::Unreachable("no server".into()));
        assert!(!down.is_locked() && !down.is_interrupted());
    }
}
