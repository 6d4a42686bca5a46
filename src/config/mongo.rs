//! dcb.yaml's `mongodb` section: the connection.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// The MongoDB connection.
#[derive(Clone, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct MongoConfig {
    /// Connection string, e.g. `mongodb://backup:${DCB_DB_PASSWORD}@db.local:27017/dcMes`.
    /// `DCB_MONGODB_URI` overrides it. Default: `mongodb://127.0.0.1:27017`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uri: Option<String>,

    /// User name, when the URI names none (e.g. with `passwordFile`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub username: Option<String>,

    /// File whose first line is the password (relative paths are read from this file's
    /// folder). Keeps the password out of the URI, the environment and this file.
    /// `DCB_MONGODB_PASSWORD_FILE` overrides it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password_file: Option<String>,

    /// TLS to MongoDB. URI options (`tls=true&tlsCAFile=...`) work too.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<MongoTls>,

    /// Which members exports read from, unless the URI says (`readPreference=`).
    /// `secondaryPreferred` keeps the backup's reads off a busy primary of a replica
    /// set. Default: `primary`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub read_preference: Option<ReadPreferenceMode>,
}

/// A read preference mode, as in a connection string.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub enum ReadPreferenceMode {
    Primary,
    PrimaryPreferred,
    Secondary,
    SecondaryPreferred,
    Nearest,
}

// The URI holds the interpolated password: show it redacted.
impl std::fmt::Debug for MongoConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MongoConfig")
            .field("uri", &self.uri.as_deref().map(crate::redact::uri))
            .field("username", &self.username)
            .field("password_file", &self.password_file)
            .field("tls", &self.tls)
            .field("read_preference", &self.read_preference)
            .finish()
    }
}

/// TLS to MongoDB (paths relative to this file's folder).
#[derive(Debug, Clone, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct MongoTls {
    /// PEM file of the certificate authorities to trust. Default: the system's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_file: Option<String>,

    /// PEM file holding the client certificate and its private key, for servers that
    /// require one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub certificate_key_file: Option<String>,
}
