//! Connecting to MongoDB with dcb's defaults. Options in the URI always win; errors
//! never show the password.

use std::time::Duration;

use mongodb::Client;
use mongodb::options::{ClientOptions, Tls, TlsOptions};

use crate::config::Settings;
use crate::redact;

/// A client for `settings`' URI; `selection_timeout` applies unless the URI sets one.
pub async fn connect(settings: &Settings, selection_timeout: Duration) -> Result<Client, String> {
    redact::remember_uri(&settings.mongodb_uri);
    let mut opts = ClientOptions::parse(&settings.mongodb_uri)
        .await
        .map_err(|e| redact::text(&e.to_string(), &settings.mongodb_uri))?;
    opts.server_selection_timeout
        .get_or_insert(selection_timeout);
    opts.connect_timeout.get_or_insert(selection_timeout);
    opts.app_name.get_or_insert_with(|| "dcb".to_string());
    let extra = &settings.mongodb_extra;
    if let Some(file) = &extra.password_file {
        let password = read_password(file)?;
        redact::remember(&password);
        let credential = opts.credential.get_or_insert_with(Default::default);
        if let Some(user) = &extra.username {
            credential.username = Some(user.clone());
        }
        if credential.username.is_none() {
            return Err(
                "a password file is set but no user name: put it in the URI (mongodb://USER@host/) or set mongodb.username"
                    .into(),
            );
        }
        credential.password = Some(password);
    } else if let Some(user) = &extra.username {
        opts.credential
            .get_or_insert_with(Default::default)
            .username = Some(user.clone());
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
    Client::with_options(opts).map_err(|e| redact::text(&e.to_string(), &settings.mongodb_uri))
}

/// The first line of a password file. Errors name the file, never its content.
fn read_password(path: &std::path::Path) -> Result<String, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("cannot read the password file {}: {e}", path.display()))?;
    let password = text.lines().next().unwrap_or("").trim_end_matches('\r');
    if password.is_empty() {
        return Err(format!("the password file {} is empty", path.display()));
    }
    Ok(password.to_string())
}
