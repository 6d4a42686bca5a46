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
    /// The admin endpoint's token (a secret: never print it), or the file holding it.
    pub http_token: Option<HttpToken>,
    /// Whether the service reads each new archive back.
    pub verify_after_run: bool,
    /// age recipients of policies that set none.
    pub recipients: Vec<String>,
    /// Collections left out on purpose (dcb.yaml's `exclude`).
    pub exclude: crate::discover::Exclude,
    /// Named targets besides the backup root (dcb.yaml's `targets`).
    pub targets: std::collections::BTreeMap<String, super::storage::TargetConfig>,
    /// The targets of policies that name none.
    pub default_targets: Vec<String>,
    /// How a policy's run keeps other instances out.
    pub lock: super::storage::LockSettings,
    /// dcb.yaml's folder (relative folders and credential files are read from it).
    pub config_dir: PathBuf,
    /// dcb.yaml's `drill`: the defaults of every policy's drills.
    pub drill: crate::policy::drill::DrillSpec,
    /// dcb.yaml's `reverify`.
    pub reverify: super::ReverifyConfig,
    /// The targets, built on first use and shared by the clones.
    built: std::sync::Arc<std::sync::Mutex<Built>>,
}

/// Targets built so far, by name.
type Built = std::collections::BTreeMap<String, std::sync::Arc<dyn crate::storage::Target>>;

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
            .field("http_token", &self.http_token.as_ref().map(|_| "***"))
            .field("verify_after_run", &self.verify_after_run)
            .field("recipients", &self.recipients)
            .field("exclude", &self.exclude)
            .field("targets", &self.targets)
            .field("default_targets", &self.default_targets)
            .field("lock", &self.lock)
            .field("drill", &self.drill)
            .field("reverify", &self.reverify)
            .finish()
    }
}

/// Where the admin endpoint's token comes from.
#[derive(Clone, PartialEq, Eq)]
pub enum HttpToken {
    Value(String),
    /// Its first line, read when the service starts.
    File(PathBuf),
}

impl HttpToken {
    /// The token; an empty one is none.
    pub fn read(&self) -> std::io::Result<Option<String>> {
        let token = match self {
            HttpToken::Value(v) => v.trim().to_string(),
            HttpToken::File(p) => std::fs::read_to_string(p)?
                .lines()
                .next()
                .unwrap_or_default()
                .trim()
                .to_string(),
        };
        Ok(Some(token).filter(|t| !t.is_empty()))
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
    pub read_preference: Option<super::ReadPreferenceMode>,
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
            read_preference: config.mongodb.read_preference,
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
            http_token: env("DCB_HTTP_TOKEN")
                .filter(|v| !v.is_empty())
                .or_else(|| config.http.token.clone().filter(|v| !v.is_empty()))
                .map(HttpToken::Value)
                .or_else(|| from_file(&config.http.token_file).map(HttpToken::File)),
            verify_after_run: config.verify.after_run,
            recipients: config.encryption.recipients.clone(),
            exclude: crate::discover::Exclude::new(&config.exclude),
            targets: config.targets.clone(),
            default_targets: config
                .default_targets
                .clone()
                .unwrap_or_else(|| vec![super::storage::LOCAL.to_string()]),
            lock: config.lock.resolve(),
            config_dir: base.clone(),
            drill: config
                .drill
                .as_ref()
                .and_then(|d| d.parse().ok())
                .unwrap_or_default(),
            reverify: config.reverify.clone(),
            built: Default::default(),
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

    /// Where archives are read from: every target (the backup root and each named
    /// one) as one, their union.
    pub fn target(&self) -> std::sync::Arc<dyn crate::storage::Target> {
        let mut names = vec![super::storage::LOCAL.to_string()];
        names.extend(self.targets.keys().cloned());
        self.target_set(&names)
    }

    /// The targets a policy's archives go to: its own `targets`, else dcb.yaml's
    /// `defaultTargets`, else the backup root.
    pub fn targets_for(&self, policy: &Policy) -> std::sync::Arc<dyn crate::storage::Target> {
        self.target_set(self.target_names_for(policy))
    }

    /// A policy's targets, by name.
    pub fn target_members_for(
        &self,
        policy: &Policy,
    ) -> Vec<(String, std::sync::Arc<dyn crate::storage::Target>)> {
        self.target_names_for(policy)
            .iter()
            .map(|n| (n.clone(), self.target_named(n)))
            .collect()
    }

    /// The names of a policy's targets.
    pub fn target_names_for<'a>(&'a self, policy: &'a Policy) -> &'a [String] {
        policy.targets.as_deref().unwrap_or(&self.default_targets)
    }

    /// Whether a policy writes to object storage, which other instances may share.
    pub fn writes_to_shared(&self, policy: &Policy) -> bool {
        self.target_names_for(policy).iter().any(|n| {
            matches!(
                self.targets.get(n),
                Some(super::storage::TargetConfig::S3(_))
            )
        })
    }

    /// Whether a run of these policies takes a lease in MongoDB.
    pub fn uses_lease(&self, policy: &Policy) -> bool {
        use super::storage::LockKind;
        match self.lock.kind {
            LockKind::Mongodb => true,
            LockKind::Local => false,
            LockKind::Auto => self.writes_to_shared(policy),
        }
    }

    /// The named targets as one (one target alone is itself).
    pub fn target_set(&self, names: &[String]) -> std::sync::Arc<dyn crate::storage::Target> {
        let members: Vec<(String, std::sync::Arc<dyn crate::storage::Target>)> = names
            .iter()
            .map(|n| (n.clone(), self.target_named(n)))
            .collect();
        if members.len() == 1 {
            return members.into_iter().next().expect("one").1;
        }
        std::sync::Arc::new(crate::storage::set::Set::new(members))
    }

    /// One target by name; one that cannot be set up (or is unknown) fails each use
    /// with the reason.
    pub fn target_named(&self, name: &str) -> std::sync::Arc<dyn crate::storage::Target> {
        use super::storage::TargetConfig;
        use crate::storage::unavailable::Unavailable;
        let mut built = self.built.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(t) = built.get(name) {
            return t.clone();
        }
        let target: std::sync::Arc<dyn crate::storage::Target> =
            match (name, self.targets.get(name)) {
                (super::storage::LOCAL, _) => {
                    std::sync::Arc::new(crate::storage::local::Local::new(&self.backup_root))
                }
                (_, Some(TargetConfig::Local(f))) => std::sync::Arc::new(
                    crate::storage::local::Local::new(normalize(&self.config_dir.join(&f.path))),
                ),
                (_, Some(TargetConfig::S3(c))) => {
                    let spool = self.backup_root.join(".spool");
                    match c
                        .credentials(&self.config_dir)
                        .map_err(|e| e.to_string())
                        .and_then(|creds| {
                            crate::storage::s3::S3::new(c, creds, &spool).map_err(|e| e.to_string())
                        }) {
                        Ok(s3) => std::sync::Arc::new(s3),
                        Err(reason) => std::sync::Arc::new(Unavailable {
                            name: name.to_string(),
                            reason,
                        }),
                    }
                }
                (_, None) => std::sync::Arc::new(Unavailable {
                    name: name.to_string(),
                    reason: super::storage::unknown_target(name, self.targets.keys()),
                }),
            };
        built.insert(name.to_string(), target.clone());
        target
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
        let mut targets = vec![super::storage::LOCAL.to_string()];
        targets.extend(self.targets.keys().cloned());
        Defaults {
            timezone: self.timezone,
            concurrency: self.concurrency,
            targets,
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
