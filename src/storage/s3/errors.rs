//! opendal's errors as the I/O errors [`crate::storage::StorageError`] carries: the
//! kind callers test (not found, already there, refused), and a short message (the S3
//! error code and text, or the connection's failure), scrubbed of every secret.

use std::error::Error as _;
use std::io;

use opendal::ErrorKind as Kind;

/// `e` as an I/O error whose kind says what happened.
pub fn io_error(e: &opendal::Error) -> io::Error {
    let kind = match e.kind() {
        Kind::NotFound => io::ErrorKind::NotFound,
        Kind::PermissionDenied => io::ErrorKind::PermissionDenied,
        Kind::AlreadyExists | Kind::ConditionNotMatch => io::ErrorKind::AlreadyExists,
        // NoSuchBucket: opendal calls the configuration invalid; for the operator the
        // bucket is not there.
        Kind::ConfigInvalid if s3_field(e.message(), "code").as_deref() == Some("NoSuchBucket") => {
            io::ErrorKind::NotFound
        }
        Kind::ConfigInvalid => io::ErrorKind::InvalidInput,
        Kind::Conflict => io::ErrorKind::ResourceBusy,
        Kind::Unsupported => io::ErrorKind::Unsupported,
        _ => io::ErrorKind::Other,
    };
    io::Error::new(kind, message(e))
}

/// A short account of `e`: the S3 error's code and message when the server answered,
/// else opendal's message and the cause under it.
fn message(e: &opendal::Error) -> String {
    let text = match s3_error(e.message()) {
        Some(s3) => s3,
        None => {
            let mut text = e.message().to_string();
            let mut source = e.source();
            while let Some(s) = source {
                text = format!("{text}: {s}");
                source = s.source();
            }
            text
        }
    };
    let kind = match e.kind() {
        Kind::ConditionNotMatch => "already exists".to_string(),
        k => k.to_string(),
    };
    let text = format!("{kind}: {text}");
    crate::redact::scrub(&text).into_owned()
}

/// `S3Error { code: "AccessDenied", message: "Access Denied", .. }` (how opendal
/// quotes a server's error) → `AccessDenied (Access Denied)`.
pub fn s3_error(message: &str) -> Option<String> {
    let code = s3_field(message, "code").filter(|c| !c.is_empty())?;
    match s3_field(message, "message").filter(|m| !m.is_empty()) {
        Some(m) => Some(format!("{code} ({m})")),
        None => Some(code),
    }
}

/// One field of the S3 error opendal quotes (`S3Error { code: "…", … }`).
fn s3_field(message: &str, name: &str) -> Option<String> {
    if !message.starts_with("S3Error {") {
        return None;
    }
    let start = message.find(&format!("{name}: \""))? + name.len() + 3;
    let end = message[start..].find('"')? + start;
    Some(message[start..end].to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    // Kinds map to what callers test; messages keep only the S3 code and text.
    #[test]
    fn maps_kinds_and_shortens() {
        let denied = opendal::Error::new(
            Kind::PermissionDenied,
            r#"S3Error { code: "AccessDenied", message: "Access Denied", resource: "", request_id: "R1" }"#,
        )
        .with_context("response", "Parts { headers: {\"x-amz-id\": \"secret-ish\"} }");
        let io = io_error(&denied);
        assert_eq!(io.kind(), io::ErrorKind::PermissionDenied);
        assert_eq!(
            io.to_string(),
            "PermissionDenied: AccessDenied (Access Denied)"
        );
        let exists = opendal::Error::new(
            Kind::ConditionNotMatch,
            r#"S3Error { code: "PreconditionFailed", message: "", resource: "", request_id: "" }"#,
        );
        assert_eq!(io_error(&exists).kind(), io::ErrorKind::AlreadyExists);
        assert_eq!(
            io_error(&exists).to_string(),
            "already exists: PreconditionFailed"
        );
        let bucket = opendal::Error::new(
            Kind::ConfigInvalid,
            r#"S3Error { code: "NoSuchBucket", message: "The specified bucket does not exist", resource: "", request_id: "" }"#,
        );
        assert_eq!(io_error(&bucket).kind(), io::ErrorKind::NotFound);
        let net = opendal::Error::new(Kind::Unexpected, "send http request")
            .set_source(io::Error::other("connection refused"));
        assert_eq!(
            io_error(&net).to_string(),
            "Unexpected: send http request: connection refused"
        );
    }

    // A remembered secret never survives into a message.
    #[test]
    fn scrubs_secrets() {
        crate::redact::remember("s3-secret-in-a-message");
        let e = opendal::Error::new(Kind::Unexpected, "bad key s3-secret-in-a-message");
        assert!(!io_error(&e).to_string().contains("s3-secret"));
    }
}
