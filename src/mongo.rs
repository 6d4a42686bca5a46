//! Connecting to MongoDB with dcb's defaults. Options in the URI always win; errors
//! never show the password.

use std::time::Duration;

use mongodb::Client;
use mongodb::options::{AuthMechanism, ClientOptions, Tls, TlsOptions};

use crate::config::Settings;
use crate::redact;

/// Why no client could be made. Messages are already scrubbed of the password.
#[derive(Debug, Clone, thiserror::Error)]
pub enum ConnectError {
    #[error("{0}")]
    Uri(String),
    #[error("cannot read the password file {path}: {error}")]
    PasswordFile { path: String, error: String },
    #[error("the password file {0} is empty")]
    EmptyPasswordFile(String),
    #[error(
        "a password file is set but no user name: put it in the URI (mongodb://USER@host/) or set mongodb.username"
    )]
    NoUser,
    #[error("{0}")]
    Client(String),
}

/// A client for `settings`' URI; `selection_timeout` applies unless the URI sets one.
pub async fn connect(
    settings: &Settings,
    selection_timeout: Duration,
) -> Result<Client, ConnectError> {
    let uri = &settings.mongodb_uri;
    redact::remember_uri(uri);
    let scrub = |e: mongodb::error::Error| redact::text(&e.to_string(), uri);
    let mut opts = ClientOptions::parse(uri)
        .await
        .map_err(|e| ConnectError::Uri(scrub(e)))?;
    opts.server_selection_timeout
        .get_or_insert(selection_timeout);
    opts.connect_timeout.get_or_insert(selection_timeout);
    opts.app_name.get_or_insert_with(|| "dcb".to_string());
    let extra = &settings.mongodb_extra;
    let password = match &extra.password_file {
        Some(file) => {
            let p = read_password(file)?;
            redact::remember(&p);
            Some(p)
        }
        None => None,
    };
    if password.is_some() || extra.username.is_some() {
        // The driver drops `authSource` and `authMechanism` from a URI without a user
        // name, so a user given beside the URI would log in against `admin`: take
        // them back from the URI.
        let from_uri = uri_auth_options(uri);
        let credential = opts.credential.get_or_insert_with(Default::default);
        if let Some(user) = &extra.username {
            credential.username = Some(user.clone());
        }
        if credential.username.is_none() {
            return Err(ConnectError::NoUser);
        }
        if credential.source.is_none() {
            credential.source = from_uri.source;
        }
        if credential.mechanism.is_none() {
            credential.mechanism = from_uri.mechanism;
        }
        if password.is_some() {
            credential.password = password;
        }
    }
    if extra.tls {
        let mut tls = match opts.tls.take() {
            Some(Tls::Enabled(t)) => t,
            _ => TlsOptions::default(),
        };
        if let Some(ca) = &extra.tls_ca_file {
            tls.ca_file_path = Some(ca.clone());
        }
        if let Some(cert) = &extra.tls_certificate_key_file {
            tls.cert_key_file_path = Some(cert.clone());
        }
        opts.tls = Some(Tls::Enabled(tls));
    }
    Client::with_options(opts).map_err(|e| ConnectError::Client(scrub(e)))
}

/// The authentication options written in a connection string.
#[derive(Debug, Default, PartialEq)]
struct AuthOptions {
    source: Option<String>,
    mechanism: Option<AuthMechanism>,
}

fn uri_auth_options(uri: &str) -> AuthOptions {
    let mut out = AuthOptions::default();
    let Some((_, query)) = uri.split_once('?') else {
        return out;
    };
    for pair in query.split('&') {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        let v = crate::config::percent_decode(v);
        if k.eq_ignore_ascii_case("authSource") && !v.is_empty() {
            out.source = Some(v);
        } else if k.eq_ignore_ascii_case("authMechanism") {
            out.mechanism = v.parse().ok();
        }
    }
    out
}

/// How long [`close`] waits for the driver to end its sessions and background tasks.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(5);

/// End a client's sessions and background tasks now, while the runtime still runs.
///
/// Dropping the last handle of a client only starts the driver's clean-up, on a task of
/// its own; if the runtime shuts down under that task the driver can panic (`SendError`
/// in `connection_requester.rs`). Tokio catches it, but with `RUST_BACKTRACE` set the
/// panic hook symbolises a backtrace from dcb's debug information: about 150 MB of
/// peak RSS (BENCHMARKS.md, *Peak memory, run by run*). Bounded: a server that does not
/// answer holds the command up for at most `CLOSE_TIMEOUT`.
pub async fn close(client: Client) {
    let _ = tokio::time::timeout(CLOSE_TIMEOUT, client.shutdown()).await;
}

/// The first line of a password file. Errors name the file, never its content.
fn read_password(path: &std::path::Path) -> Result<String, ConnectError> {
    let shown = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|e| ConnectError::PasswordFile {
        path: shown.clone(),
        error: e.to_string(),
    })?;
    let password = text.lines().next().unwrap_or("").trim_end_matches('\r');
    if password.is_empty() {
        return Err(ConnectError::EmptyPasswordFile(shown));
    }
    Ok(password.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    // authSource and authMechanism are read from the URI's options, whatever their case.
    #[test]
    fn auth_options_from_the_uri() {
        let o = uri_auth_options("mongodb://h:1/dcMes?directConnection=true&authSource=dcMes");
        assert_eq!(o.source.as_deref(), Some("dcMes"));
        let o = uri_auth_options("mongodb://h/?authsource=a%2Db&authMechanism=SCRAM-SHA-256");
        assert_eq!(o.source.as_deref(), Some("a-b"));
        assert_eq!(o.mechanism, Some(AuthMechanism::ScramSha256));
        assert_eq!(uri_auth_options("mongodb://h/db"), AuthOptions::default());
    }
}
