//! Connecting to MongoDB with dcb's defaults. Options in the URI always win; errors
//! never show the password.

use std::time::Duration;

use mongodb::Client;
use mongodb::options::ClientOptions;

use crate::config::Settings;
use crate::redact;

/// A client for `settings`' URI; `selection_timeout` applies unless the URI sets one.
pub async fn connect(settings: &Settings, selection_timeout: Duration) -> Result<Client, String> {
    let mut opts = ClientOptions::parse(&settings.mongodb_uri)
        .await
        .map_err(|e| redact::text(&e.to_string(), &settings.mongodb_uri))?;
    opts.server_selection_timeout
        .get_or_insert(selection_timeout);
    opts.connect_timeout.get_or_insert(selection_timeout);
    opts.app_name.get_or_insert_with(|| "dcb".to_string());
    Client::with_options(opts).map_err(|e| redact::text(&e.to_string(), &settings.mongodb_uri))
}
