//! The error rule.
//!
//! - Library functions return typed errors: a `thiserror` enum (or struct) per layer,
//!   beside the code that fails (`storage::StorageError`, `export::ExportError`,
//!   `mongo::ConnectError`, `restore::preflight::Refusal`, `retention::Skipped`,
//!   `runner::RunError`). Each variant says what failed; its `Display` says it in one
//!   line a person can act on. A value that breaks a rule of a name, a time or a
//!   schedule is an [`Invalid`], whose message says which rule.
//! - No control flow depends on a message's text: callers match variants (a run
//!   refused because another process holds the policy is `RunError::Locked`, not a
//!   message containing "another dcb is running").
//! - Errors keep what they were given; redaction happens where they are displayed or
//!   written down (the log writers scrub every line; `events` and the commands pass
//!   messages through `redact::text` before the state, the audit log, alerts or the
//!   terminal see them).
//! - Only the commands turn errors into exit codes (`commands::Exit`).

/// A value that breaks a rule (a name, a time, a schedule, a key): the message says
/// which rule, and how to write it. Callers only show it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct Invalid(pub String);

impl Invalid {
    pub fn new(message: impl Into<String>) -> Invalid {
        Invalid(message.into())
    }
}

impl From<Invalid> for String {
    fn from(e: Invalid) -> String {
        e.0
    }
}
