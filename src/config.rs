//! dcb.yaml: the optional service configuration as the file writes it ([`ConfigFile`],
//! the schema's source), read with `${VAR}` interpolation and every problem located.
//! [`resolve`] turns it, the environment and the flags into the [`Settings`] every
//! command runs with (flags > environment > file > defaults).

pub mod alerts;
mod mongo;
pub mod origins;
mod resolve;
pub mod storage;

pub use mongo::{MongoConfig, MongoTls, ReadPreferenceMode};
pub use resolve::{HttpToken, MongoExtra, Overrides, Settings};

use std::path::{Path, PathBuf};

use chrono_tz::Tz;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::diag::{Code, Diagnostic, Severity};
use crate::document::Document;
use crate::duration::HumanDuration;
use crate::names;
use crate::policy::validate::parse_timezone;

pub const DEFAULT_URI: &str = "mongodb://127.0.0.1:27017";
pub const DEFAULT_CONCURRENCY: usize = 3;
/// The file looked for in the working directory when no config is named.
pub const DEFAULT_CONFIG_FILE: &str = "dcb.yaml";

/// The JSON schema of dcb.yaml.
pub fn schema() -> &'static Value {
    static S: std::sync::OnceLock<Value> = std::sync::OnceLock::new();
    S.get_or_init(crate::schema::generate::<ConfigFile>)
}

/// The validator of [`schema`].
pub fn validator() -> &'static jsonschema::Validator {
    static V: std::sync::OnceLock<jsonschema::Validator> = std::sync::OnceLock::new();
    V.get_or_init(|| crate::schema::compile(schema()))
}

/// dcb's configuration file. Every key is optional; string values may use `${VAR}` or
/// `${VAR:-default}` to read the environment (`$$` writes a literal `$`).
#[derive(Debug, Clone, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[schemars(title = "dcb configuration")]
pub struct ConfigFile {
    /// How to reach MongoDB.
    #[serde(default)]
    pub mongodb: MongoConfig,

    /// Database the policies back up unless they name their own. Default: the
    /// connection URI's database.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub database: Option<String>,

    /// Folder the archives, state and logs are written to (relative paths are read from
    /// this file's folder). Default: `./backups`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backup_root: Option<String>,

    /// Folder of the policy files (relative paths are read from this file's folder).
    /// Default: `./policies`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub policies_dir: Option<String>,

    /// IANA time zone for policies that do not set one. Default: the system's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timezone: Option<String>,

    /// Collections exported at the same time, for policies that do not set
    /// `concurrency`. Default: 3.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 64))]
    pub concurrency: Option<u32>,

    /// Collections left out on purpose: no policy pattern takes them and no check
    /// reports them as uncovered. Glob patterns matched against a collection's name
    /// and against `<database>.<collection>` (`tmp_*`, `dcMes.migrations`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub exclude: Vec<String>,

    /// Where archives are kept besides `backupRoot` (the target named `local`): S3
    /// buckets or other folders, by name.
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub targets: std::collections::BTreeMap<String, storage::TargetConfig>,

    /// The targets of policies that name none. Default: `[local]`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default_targets: Option<Vec<String>>,

    /// How a policy's run keeps other dcb instances out: `auto` (the default),
    /// `local` or `mongodb`, or `{kind, database, ttl}`.
    #[serde(default)]
    pub lock: storage::LockConfig,

    /// Health checks of the running service.
    #[serde(default)]
    pub health: HealthConfig,

    /// Where and how alerts are sent.
    #[serde(default)]
    pub alerts: AlertsConfig,

    /// The service's HTTP admin endpoint.
    #[serde(default)]
    pub http: HttpConfig,

    /// Checks of new archives by the running service.
    #[serde(default)]
    pub verify: VerifyConfig,

    /// Encryption of archives at rest with age.
    #[serde(default)]
    pub encryption: EncryptionConfig,

    /// Restore drills of every policy (a policy's own `drill` overrides these).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub drill: Option<crate::policy::drill::DrillFile>,

    /// Periodic re-reading of old archives by the running service.
    #[serde(default)]
    pub reverify: ReverifyConfig,
}

/// Periodic re-verification: the service re-reads a share of the archives at each
/// pass, the ones checked longest ago first, so that every archive is read again
/// within `period` and a bit flipped months later is found while a good copy can
/// still be made.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ReverifyConfig {
    /// Default: true.
    #[serde(default = "default_true")]
    pub enabled: bool,

    /// Every archive is read again at least this often. Default: `30d`.
    #[serde(default = "default_reverify_period")]
    pub period: HumanDuration,

    /// How often a pass runs. Default: `1h`.
    #[serde(default = "default_reverify_interval")]
    pub interval: HumanDuration,
}

impl Default for ReverifyConfig {
    fn default() -> Self {
        ReverifyConfig {
            enabled: true,
            period: default_reverify_period(),
            interval: default_reverify_interval(),
        }
    }
}

fn default_reverify_period() -> HumanDuration {
    HumanDuration(std::time::Duration::from_secs(30 * 86_400))
}
fn default_reverify_interval() -> HumanDuration {
    HumanDuration(std::time::Duration::from_secs(3_600))
}

/// Encryption of archives at rest with age (X25519).
#[derive(Debug, Clone, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct EncryptionConfig {
    /// Public keys (`age1…`, from `age-keygen -y`) every archive is encrypted to,
    /// unless a policy sets its own. Empty: archives are not encrypted.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub recipients: Vec<String>,

    /// Identity file (`age-keygen -o`) that opens the archives for verify and restore
    /// (relative paths are read from this file's folder). Keep it off the backup host
    /// if you can: the service then checks encrypted archives by their file hash.
    /// `--identity` and `DCB_AGE_IDENTITY` override it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub identity_file: Option<String>,
}

/// Checks of new archives by the running service.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct VerifyConfig {
    /// Read each new archive back after it is written (gzip, tar, checksums, BSON,
    /// counts, as `dcb verify` does) and alert when it is corrupt. Default: true.
    #[serde(default = "default_true")]
    pub after_run: bool,
}

impl Default for VerifyConfig {
    fn default() -> Self {
        VerifyConfig { after_run: true }
    }
}

fn default_true() -> bool {
    true
}

/// Health checks of the running service.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HealthConfig {
    /// How often the checks run.
    #[serde(default = "default_health_interval")]
    pub interval: HumanDuration,

    /// Consecutive failures of one collection that raise an alert.
    #[serde(default = "default_failure_threshold")]
    #[schemars(range(min = 1, max = u32::MAX))]
    pub failure_threshold: u32,

    /// Alert when less than this percentage of the backup disk is free.
    #[serde(default = "default_min_free_percent")]
    #[schemars(range(min = 0, max = 100))]
    pub min_free_percent: f64,

    /// Alert when less than this many megabytes of the backup disk are free.
    #[serde(default = "default_min_free_mb", rename = "minFreeMB")]
    #[schemars(range(max = u64::MAX))]
    pub min_free_mb: u64,
}

impl Default for HealthConfig {
    fn default() -> Self {
        HealthConfig {
            interval: default_health_interval(),
            failure_threshold: default_failure_threshold(),
            min_free_percent: default_min_free_percent(),
            min_free_mb: default_min_free_mb(),
        }
    }
}

pub use alerts::AlertsConfig;

/// The HTTP admin endpoint (status page, health, status, metrics). Off unless `listen` is set.
#[derive(Clone, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HttpConfig {
    /// Address to listen on, e.g. `127.0.0.1:9187`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub listen: Option<String>,
    /// A token every request but `/healthz` must carry (`Authorization: Bearer TOKEN`
    /// or `?token=TOKEN`); use `${VAR}`. Without one, an address beyond loopback is
    /// open to anyone who reaches it (the service warns at start-up).
    /// `DCB_HTTP_TOKEN` overrides it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token: Option<String>,
    /// A file whose first line is the token (relative to dcb.yaml), instead of `token`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token_file: Option<String>,
}

// The token is a secret: never shown.
impl std::fmt::Debug for HttpConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HttpConfig")
            .field("listen", &self.listen)
            .field("token", &self.token.as_ref().map(|_| "***"))
            .field("token_file", &self.token_file)
            .finish()
    }
}

fn default_health_interval() -> HumanDuration {
    HumanDuration(std::time::Duration::from_secs(300))
}
fn default_failure_threshold() -> u32 {
    3
}
fn default_min_free_percent() -> f64 {
    10.0
}
fn default_min_free_mb() -> u64 {
    1024
}

/// The environment as the config layer reads it.
pub fn process_env(name: &str) -> Option<String> {
    std::env::var(name).ok()
}

/// Replace `${VAR}` and `${VAR:-default}` in every string of `value`.
/// Errors come back as (JSON pointer, message).
pub fn interpolate(
    value: &mut Value,
    env: &dyn Fn(&str) -> Option<String>,
    pointer: &str,
    errors: &mut Vec<(String, String)>,
) {
    match value {
        Value::String(s) => match expand(s, env) {
            Ok(new) => *s = new,
            Err(e) => errors.push((pointer.to_string(), e)),
        },
        Value::Array(items) => {
            for (i, item) in items.iter_mut().enumerate() {
                interpolate(item, env, &format!("{pointer}/{i}"), errors);
            }
        }
        Value::Object(map) => {
            for (k, v) in map.iter_mut() {
                let p = format!("{pointer}/{}", crate::yaml::escape_token(k));
                interpolate(v, env, &p, errors);
            }
        }
        _ => {}
    }
}

fn expand(s: &str, env: &dyn Fn(&str) -> Option<String>) -> Result<String, String> {
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(i) = rest.find('$') {
        out.push_str(&rest[..i]);
        let after = &rest[i + 1..];
        if let Some(tail) = after.strip_prefix('$') {
            out.push('$');
            rest = tail;
        } else if let Some(body) = after.strip_prefix('{') {
            let end = body
                .find('}')
                .ok_or_else(|| format!("unterminated `${{` in `{s}`"))?;
            let inner = &body[..end];
            let (name, default) = match inner.split_once(":-") {
                Some((n, d)) => (n, Some(d)),
                None => (inner, None),
            };
            let valid = name
                .chars()
                .next()
                .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
                && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
            if !valid {
                return Err(format!("`${{{inner}}}` is not a variable reference"));
            }
            match (env(name).filter(|v| !v.is_empty()), default) {
                (Some(v), _) => out.push_str(&v),
                (None, Some(d)) => out.push_str(d),
                (None, None) => return Err(format!("environment variable `{name}` is not set")),
            }
            rest = &body[end + 1..];
        } else {
            out.push('$');
            rest = after;
        }
    }
    out.push_str(rest);
    Ok(out)
}

impl ConfigFile {
    /// Read, interpolate and validate a config file.
    pub fn load(
        path: &Path,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<ConfigFile, Vec<Diagnostic>> {
        let mut doc = Document::read(path).map_err(|d| vec![d])?;
        let mut diags = doc.duplicate_key_diags();
        let mut errors = Vec::new();
        interpolate(&mut doc.value, env, "", &mut errors);
        for (pointer, msg) in errors {
            diags.push(
                doc.at(Severity::Error, Code::UnsetVariable, &pointer, msg)
                    .with_hint("export the variable, or write `${NAME:-default}`"),
            );
        }
        diags.extend(doc.schema_diags(schema(), validator()));
        let v = &doc.value;
        if let Some(tz) = v.pointer("/timezone").and_then(Value::as_str)
            && let Err(crate::policy::validate::UnknownTimezone { message: msg, hint }) =
                parse_timezone(tz)
        {
            diags.push(
                doc.at(Severity::Error, Code::InvalidTimezone, "/timezone", msg)
                    .with_hint(hint),
            );
        }
        if let Some(db) = v.pointer("/database").and_then(Value::as_str)
            && let Err(e) = names::check_database(db)
        {
            diags.push(doc.at(
                Severity::Error,
                Code::InvalidDatabaseName,
                "/database",
                e.into(),
            ));
        }
        if let Some(list) = v
            .pointer("/encryption/recipients")
            .and_then(Value::as_array)
        {
            for (i, r) in list.iter().enumerate() {
                if let Some(r) = r.as_str()
                    && let Err(e) = crate::crypto::parse_recipients(&[r.to_string()])
                {
                    diags.push(doc.at(
                        Severity::Error,
                        Code::InvalidValue,
                        &format!("/encryption/recipients/{i}"),
                        e.into(),
                    ));
                }
            }
        }
        if let Some(list) = v.pointer("/exclude").and_then(Value::as_array) {
            for (i, p) in list.iter().enumerate() {
                if let Some(p) = p.as_str()
                    && let Err(e) = glob::Pattern::new(p)
                {
                    diags.push(doc.at(
                        Severity::Error,
                        Code::InvalidValue,
                        &format!("/exclude/{i}"),
                        format!("pattern `{p}`: {}", e.msg),
                    ));
                }
            }
        }
        for p in [
            "/health/interval",
            "/alerts/cooldown",
            "/reverify/period",
            "/reverify/interval",
        ] {
            if let Some(s) = v.pointer(p).and_then(Value::as_str)
                && let Err(e) = s.parse::<HumanDuration>()
            {
                diags.push(doc.at(Severity::Error, Code::InvalidDuration, p, e.to_string()));
            }
        }
        if diags.iter().any(Diagnostic::is_error) {
            let mut seen = std::collections::HashSet::new();
            diags.retain(|d| seen.insert((d.code, d.pos.line, d.pos.column)));
            return Err(diags);
        }
        let config: ConfigFile = doc.deserialize().map_err(|d| vec![d])?;
        let mut problems: Vec<Diagnostic> = config
            .alerts
            .problems()
            .into_iter()
            .map(|(p, msg)| {
                doc.at(
                    Severity::Error,
                    Code::InvalidValue,
                    &format!("/alerts{p}"),
                    msg,
                )
            })
            .collect();
        problems.extend(
            storage::problems(
                &config.targets,
                config.default_targets.as_deref(),
                &config.lock,
            )
            .into_iter()
            .map(|(p, msg)| doc.at(Severity::Error, Code::InvalidValue, &p, msg)),
        );
        if let Some(Err(list)) = config.drill.as_ref().map(|d| d.parse()) {
            problems.extend(list.into_iter().map(|(p, msg)| {
                doc.at(
                    Severity::Error,
                    Code::InvalidValue,
                    &format!("/drill{p}"),
                    msg,
                )
            }));
        }
        let r = &config.reverify;
        if r.interval.0.is_zero() || r.period.0 < r.interval.0 {
            problems.push(doc.at(
                Severity::Error,
                Code::InvalidValue,
                "/reverify",
                format!(
                    "reverify: the interval ({}) must be more than 0 and at most the period ({})",
                    r.interval, r.period
                ),
            ));
        }
        if problems.is_empty() {
            Ok(config)
        } else {
            Err(problems)
        }
    }
}

/// Remove `.` and `name/..` pairs without touching the file system, so paths read
/// from the config show as the user thinks of them.
pub(crate) fn normalize(path: &Path) -> PathBuf {
    use std::path::Component;
    let mut out = PathBuf::new();
    for c in path.components() {
        match c {
            Component::CurDir => {}
            Component::ParentDir
                if matches!(out.components().next_back(), Some(Component::Normal(_))) =>
            {
                out.pop();
            }
            other => out.push(other),
        }
    }
    if out.as_os_str().is_empty() {
        out.push(".");
    }
    out
}

/// The system's IANA time zone, or UTC when it cannot be told.
pub fn system_timezone() -> Tz {
    iana_time_zone::get_timezone()
        .ok()
        .and_then(|name| name.parse().ok())
        .unwrap_or(Tz::UTC)
}

/// The default database named in a connection string's path, if any.
pub fn uri_database(uri: &str) -> Option<String> {
    let rest = uri.split_once("://")?.1;
    let rest = rest.split(['?', '#']).next().unwrap_or(rest);
    let hosts_and_path = match rest.rfind('@') {
        Some(i) => &rest[i + 1..],
        None => rest,
    };
    let (_, path) = hosts_and_path.split_once('/')?;
    let db = percent_decode(path);
    (!db.is_empty()).then_some(db)
}

pub(crate) fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let decoded = (bytes[i] == b'%')
            .then(|| bytes.get(i + 1..i + 3))
            .flatten()
            .and_then(|h| std::str::from_utf8(h).ok())
            .and_then(|h| u8::from_str_radix(h, 16).ok());
        match decoded {
            Some(b) => {
                out.push(b);
                i += 3;
            }
            None => {
                out.push(bytes[i]);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests;
