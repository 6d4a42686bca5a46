//! The resolved configuration: dcb.yaml, the environment and the flags merged into
//! [`Settings`] (flags > environment > file > defaults), with paths in dcb.yaml read
//! from its folder.

use std::path::{Path, PathBuf};

use chrono_tz::Tz;

use super::{
    AlertsConfig, ConfigFile, DEFAULT_CONCURRENCY, DEFAULT_CONFIG_FILE, DEFAULT_URI, HealthConfig,
    normalize, system_timezone, uri_database,
};
use crate::diag::{Code, Diagnostic, Pos};
use crate::policy::validate::{Defaults, parse_timezone};
use crate::policy::{DatabaseDefaults, NoDatabase, Policy};

/// What the command line says before the config file is read (clap has already merged
/// each flag with its environment variable).
#[derive(Debug, Clone, Default)]
pub struct Overrides {
    pub config: Option<PathBuf>,
    pub policies_dir: Option<PathBuf>,
    pub backup_root: Option<PathBuf>,
}

/// Everything a command runs with: dcb.yaml, the environment and the flags merged,
/// every value parsed and every path resolved.
#[derive(Clone)]
pub struct Settings {
    pub config_file: Option<PathBuf>,
    /// Contains credentials: print only through `redact::uri`.
    pub mongodb_uri: String,
    /// How to log in and encrypt beyond what the URI says.
    pub mongodb_extra: MongoExtra,
    /// The age identity file from the config (`--identity` may override it).
    pub identity_file: Option<PathBuf>,
    pub database: Option<String>,
    pub backup_root: PathBuf,
    pub policies_dir: PathBuf,
    pub timezone: Tz,
    pub concurrency: usize,
    /// Health checks of the service.
    pub health: HealthConfig,
    /// Alerting, with file paths resolved against dcb.yaml's folder.
    pub alerts: AlertsConfig,
    /// Where the service's admin endpoint listens (`--http` wins).
    pub http_listen: Option<String>,
    /// Whether the service reads each new archive back.
    pub verify_after_run: bool,
    /// age recipients of policies that set none.
    pub recipients: Vec<String>,
    /// Collections left out on purpose (dcb.yaml's `exclude`).
    pub exclude: crate::discover::Exclude,
}

// The URI holds the password: show it redacted.
impl std::fmt::Debug for Settings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Settings")
            .field("config_file", &self.config_file)
            .field("mongodb_uri", &crate::redact::uri(&self.mongodb_uri))
            .field("mongodb_extra", &self.mongodb_extra)
            .field("identity_file", &self.identity_file)
            .field("database", &self.database)
            .field("backup_root", &self.backup_root)
            .field("policies_dir", &self.policies_dir)
            .field("timezone", &self.timezone)
            .field("concurrency", &self.concurrency)
            .field("health", &self.health)
            .field("alerts", &self.alerts)
            .field("http_listen", &self.http_listen)
            .field("verify_after_run", &self.verify_after_run)
            .field("recipients", &self.recipients)
            .field("exclude", &self.exclude)
            .finish()
    }
}

/// Connection settings beyond the URI, with paths resolved.
#[derive(Debug, Clone, Default)]
pub struct MongoExtra {
    pub username: Option<String>,
    pub password_file: Option<PathBuf>,
    pub tls_ca_file: Option<PathBuf>,
    pub tls_certificate_key_file: Option<PathBuf>,
    pub tls: bool,
}

impl Settings {
    pub fn resolve(
        overrides: &Overrides,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Settings, Vec<Diagnostic>> {
        if let Some(d) = Settings::missing_config(overrides) {
            return Err(vec![d]);
        }
        let config_file = overrides
            .config
            .clone()
            .or_else(|| Some(PathBuf::from(DEFAULT_CONFIG_FILE)).filter(|p| p.is_file()));
        let config = match &config_file {
            Some(path) => ConfigFile::load(path, env)?,
            None => ConfigFile::default(),
        };
        // Relative paths in the file are relative to the file, not the caller's folder.
        let base = config_file
            .as_deref()
            .and_then(Path::parent)
            .map(Path::to_path_buf)
            .unwrap_or_default();
        let from_file = |p: &Option<String>| p.as_ref().map(|p| normalize(&base.join(p)));
        let backup_root = overrides
            .backup_root
            .clone()
            .or_else(|| from_file(&config.backup_root))
            .unwrap_or_else(|| PathBuf::from("backups"));
        let policies_dir = overrides
            .policies_dir
            .clone()
            .or_else(|| from_file(&config.policies_dir))
            .unwrap_or_else(|| PathBuf::from("policies"));
        let mongodb_uri = env("DCB_MONGODB_URI")
            .filter(|v| !v.is_empty())
            .or_else(|| config.mongodb.uri.clone())
            .unwrap_or_else(|| DEFAULT_URI.to_string());
        let identity_file = from_file(&config.encryption.identity_file);
        let tls = config.mongodb.tls.clone();
        let mongodb_extra = MongoExtra {
            username: config.mongodb.username.clone(),
            password_file: env("DCB_MONGODB_PASSWORD_FILE")
                .filter(|v| !v.is_empty())
                .map(PathBuf::from)
                .or_else(|| from_file(&config.mongodb.password_file)),
            tls_ca_file: tls.as_ref().and_then(|t| from_file(&t.ca_file)),
            tls_certificate_key_file: tls
                .as_ref()
                .and_then(|t| from_file(&t.certificate_key_file)),
            tls: tls.is_some(),
        };
        let timezone = match &config.timezone {
            Some(tz) => parse_timezone(tz).unwrap_or(Tz::UTC),
            None => system_timezone(),
        };
        let alerts = match config_file.as_deref().and_then(Path::parent) {
            Some(base) => config.alerts.relative_to(base),
            None => config.alerts.clone(),
        };
        Ok(Settings {
            config_file,
            database: config.database.clone(),
            concurrency: config
                .concurrency
                .map_or(DEFAULT_CONCURRENCY, |c| c as usize),
            health: config.health.clone(),
            alerts,
            http_listen: config.http.listen.clone(),
            verify_after_run: config.verify.after_run,
            recipients: config.encryption.recipients.clone(),
            exclude: crate::discover::Exclude::new(&config.exclude),
            mongodb_uri,
            mongodb_extra,
            identity_file,
            backup_root,
            policies_dir,
            timezone,
        })
    }

    /// A config file named (`--config`, `DCB_CONFIG`) that does not exist: a usage
    /// error, unlike a config file that exists but is invalid.
    pub fn missing_config(overrides: &Overrides) -> Option<Diagnostic> {
        let path = overrides.config.as_ref().filter(|p| !p.is_file())?;
        Some(
            Diagnostic::error(Code::IoError, path, Pos::START, "config file not found")
                .with_hint("check --config / DCB_CONFIG, or run without a config file"),
        )
    }

    /// Where archives are kept.
    pub fn target(&self) -> std::sync::Arc<dyn crate::storage::Target> {
        std::sync::Arc::new(crate::storage::local::Local::new(&self.backup_root))
    }

    /// Keys from `--identity`, else the config's identity file, else none.
    pub fn keys(
        &self,
        cli_identity: Option<&Path>,
    ) -> Result<crate::crypto::Keys, crate::crypto::KeyError> {
        match cli_identity.or(self.identity_file.as_deref()) {
            Some(path) => crate::crypto::Keys::load(path),
            None => Ok(crate::crypto::Keys::default()),
        }
    }

    pub fn policy_defaults(&self) -> Defaults {
        Defaults {
            timezone: self.timezone,
            concurrency: self.concurrency,
        }
    }

    /// The database a policy backs up: the policy's, else the config's, else the URI's.
    pub fn database_for(&self, policy: &Policy) -> Result<String, NoDatabase> {
        policy.database_in(&self.database_defaults())
    }

    /// Where policies that name no database find theirs.
    pub fn database_defaults(&self) -> DatabaseDefaults {
        DatabaseDefaults {
            config: self.database.clone(),
            uri: uri_database(&self.mongodb_uri),
        }
    }
}
