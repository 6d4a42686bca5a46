//! The effective configuration with the origin of every value, for `dcb config`:
//! dcb.yaml, the environment, the flags and the defaults merged exactly as
//! [`Settings::resolve`] merges them, and every policy as `dcb plan` resolves it.
//! Every secret is replaced by `***` here, before anything is rendered.

use std::path::{Path, PathBuf};

use serde_json::{Map, Value, json};

use super::{ConfigFile, Overrides, Settings};

mod policies;
mod storage;

use crate::diag::Diagnostic;
use crate::document::Document;
use crate::policy::Policy;
pub use policies::policies;

/// How clap got the value of a flag that also reads an environment variable.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Given {
    Flag,
    Env,
}

/// Where the global flags' values came from (clap merges each flag with its variable).
#[derive(Debug, Clone, Copy, Default)]
pub struct FlagSources {
    pub config: Option<Given>,
    pub policies_dir: Option<Given>,
    pub backup_root: Option<Given>,
}

/// One setting: its dotted key, its value (secrets already `***`), and where it came
/// from: `flag --NAME`, `env NAME`, `FILE:LINE` (optionally `with env NAME` when the
/// value reads the environment through `${NAME}`), or `default`.
#[derive(Debug, Clone, PartialEq)]
pub struct Entry {
    pub key: String,
    pub value: Value,
    pub origin: String,
}

/// One policy as a run sees it.
#[derive(Debug, Clone)]
pub struct PolicyView {
    pub name: String,
    pub file: PathBuf,
    pub settings: Vec<Entry>,
    pub collections: Vec<CollectionView>,
}

/// One collection of a policy, with its effective settings.
#[derive(Debug, Clone)]
pub struct CollectionView {
    pub name: String,
    /// A pattern (`*_logs`), matched against the database when each run starts.
    pub pattern: bool,
    pub settings: Vec<Entry>,
}

/// The resolved settings and, key by key, what they are and where they came from.
pub struct Effective {
    pub settings: Settings,
    pub config: Vec<Entry>,
}

/// An entry, its value hidden as [`hide`] says.
fn entry(key: &str, value: Value, origin: String) -> Entry {
    Entry {
        key: key.to_string(),
        value: hide(key, value),
        origin,
    }
}

/// The text written for a secret.
pub const HIDDEN: &str = "***";

const DEFAULT: &str = "default";

/// The settings every command would run with, each value with its origin.
pub fn effective(
    overrides: &Overrides,
    given: &FlagSources,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Effective, Vec<Diagnostic>> {
    let settings = Settings::resolve(overrides, env)?;
    let file = match &settings.config_file {
        Some(path) => Some(ConfigSource {
            config: ConfigFile::load(path, env)?,
            doc: Document::read(path).map_err(|d| vec![d])?,
        }),
        None => None,
    };
    let env_set = |name: &str| env(name).filter(|v| !v.is_empty());
    let mut out = Vec::new();
    let mut push = |key: &str, value: Value, origin: String| out.push(entry(key, value, origin));
    let at = |pointer: &str| file.as_ref().and_then(|f| f.origin(pointer, env));
    let flag = |given: Option<Given>, flag: &str, var: &str| match given {
        Some(Given::Flag) => format!("flag --{flag}"),
        Some(Given::Env) => format!("env {var}"),
        None => DEFAULT.to_string(),
    };
    let path = |p: &Path| Value::String(p.display().to_string());
    let opt_path = |p: Option<&Path>| p.map_or(Value::Null, path);

    // The config file itself.
    push(
        "config",
        opt_path(settings.config_file.as_deref()),
        match overrides.config {
            Some(_) => flag(given.config, "config", "DCB_CONFIG"),
            None => DEFAULT.to_string(),
        },
    );

    // MongoDB: the URI's password is hidden whatever its origin.
    let uri_origin = if env_set("DCB_MONGODB_URI").is_some() {
        "env DCB_MONGODB_URI".to_string()
    } else {
        at("/mongodb/uri").unwrap_or_else(|| DEFAULT.to_string())
    };
    push(
        "mongodb.uri",
        Value::String(crate::redact::uri(&settings.mongodb_uri)),
        uri_origin.clone(),
    );
    let extra = &settings.mongodb_extra;
    push(
        "mongodb.username",
        extra.username.clone().map_or(Value::Null, Value::String),
        at("/mongodb/username").unwrap_or_else(|| DEFAULT.to_string()),
    );
    // The path only: the file's contents are never read here.
    push(
        "mongodb.passwordFile",
        opt_path(extra.password_file.as_deref()),
        if env_set("DCB_MONGODB_PASSWORD_FILE").is_some() {
            "env DCB_MONGODB_PASSWORD_FILE".to_string()
        } else {
            at("/mongodb/passwordFile").unwrap_or_else(|| DEFAULT.to_string())
        },
    );
    push(
        "mongodb.tls.caFile",
        opt_path(extra.tls_ca_file.as_deref()),
        at("/mongodb/tls/caFile").unwrap_or_else(|| DEFAULT.to_string()),
    );
    push(
        "mongodb.tls.certificateKeyFile",
        opt_path(extra.tls_certificate_key_file.as_deref()),
        at("/mongodb/tls/certificateKeyFile").unwrap_or_else(|| DEFAULT.to_string()),
    );
    push(
        "database",
        settings.database.clone().map_or(Value::Null, Value::String),
        at("/database").unwrap_or_else(|| DEFAULT.to_string()),
    );
    push(
        "backupRoot",
        path(&settings.backup_root),
        match overrides.backup_root {
            Some(_) => flag(given.backup_root, "backup-root", "DCB_BACKUP_ROOT"),
            None => at("/backupRoot").unwrap_or_else(|| DEFAULT.to_string()),
        },
    );
    push(
        "policiesDir",
        path(&settings.policies_dir),
        match overrides.policies_dir {
            Some(_) => flag(given.policies_dir, "policies", "DCB_POLICIES_DIR"),
            None => at("/policiesDir").unwrap_or_else(|| DEFAULT.to_string()),
        },
    );
    push(
        "timezone",
        Value::String(settings.timezone.name().to_string()),
        at("/timezone").unwrap_or_else(|| format!("{DEFAULT} (the system's)")),
    );
    push(
        "concurrency",
        json!(settings.concurrency),
        at("/concurrency").unwrap_or_else(|| DEFAULT.to_string()),
    );
    push(
        "http.listen",
        settings
            .http_listen
            .clone()
            .map_or(Value::Null, Value::String),
        at("/http/listen").unwrap_or_else(|| DEFAULT.to_string()),
    );
    // verify and restore take `--identity`, else DCB_AGE_IDENTITY, else this.
    push(
        "encryption.identityFile",
        match env_set("DCB_AGE_IDENTITY") {
            Some(p) => Value::String(p),
            None => opt_path(settings.identity_file.as_deref()),
        },
        if env_set("DCB_AGE_IDENTITY").is_some() {
            "env DCB_AGE_IDENTITY".to_string()
        } else {
            at("/encryption/identityFile").unwrap_or_else(|| DEFAULT.to_string())
        },
    );
    push(
        "encryption.recipients",
        json!(settings.recipients),
        at("/encryption/recipients").unwrap_or_else(|| DEFAULT.to_string()),
    );

    let loaded = file
        .as_ref()
        .map_or_else(ConfigFile::default, |f| f.config.clone());
    let backup_root_origin = out
        .iter()
        .find(|e| e.key == "backupRoot")
        .map_or_else(|| DEFAULT.to_string(), |e| e.origin.clone());
    out.extend(storage::entries(
        &settings,
        &loaded,
        &backup_root_origin,
        &at,
        env,
    ));

    // Everything else dcb.yaml may hold, as loaded (defaults applied), key by key:
    // sections added later show up here without being listed.
    let mut rest = serde_json::to_value(&loaded).unwrap_or(Value::Null);
    if let Some(obj) = rest.as_object_mut() {
        // Shown above, resolved (and credentials by their source).
        for shown in ["targets", "defaultTargets", "lock", "exclude"] {
            obj.remove(shown);
        }
        // Alerts with their file paths resolved, as the service uses them.
        if let Ok(alerts) = serde_json::to_value(&settings.alerts) {
            obj.insert("alerts".into(), alerts);
        }
    }
    let mut leaves = Vec::new();
    flatten(&rest, "", &mut leaves);
    for (pointer, value) in leaves {
        let key = dotted(&pointer);
        if out.iter().any(|e| e.key == key) {
            continue;
        }
        let origin = at(&pointer).unwrap_or_else(|| DEFAULT.to_string());
        out.push(entry(&key, value, origin));
    }
    Ok(Effective {
        settings,
        config: out,
    })
}

/// The parsed config file and its source, for line numbers and `${VAR}` references.
struct ConfigSource {
    config: ConfigFile,
    /// As written: before interpolation.
    doc: Document,
}

impl ConfigSource {
    /// `dcb.yaml:LINE` when the file sets the value at `pointer` (with the variables
    /// it reads), else `None`.
    fn origin(&self, pointer: &str, env: &dyn Fn(&str) -> Option<String>) -> Option<String> {
        file_origin(&self.doc, pointer, env)
    }
}

/// `FILE:LINE` of the value at `pointer`, if the document sets it.
fn file_origin(
    doc: &Document,
    pointer: &str,
    env: &dyn Fn(&str) -> Option<String>,
) -> Option<String> {
    let raw = doc.value.pointer(pointer)?;
    let line = doc.map.key_pos(pointer).line;
    let mut origin = format!("{}:{line}", doc.path.display());
    let mut refs = Vec::new();
    references(raw, &mut refs);
    if !refs.is_empty() {
        // Only the variable's name: a `${VAR:-default}` default may be the secret.
        let described: Vec<String> = refs
            .iter()
            .map(|name| match env(name).filter(|v| !v.is_empty()) {
                Some(_) => format!("env {name}"),
                None => format!("the default of ${{{name}}}"),
            })
            .collect();
        origin.push_str(" with ");
        origin.push_str(&described.join(", "));
    }
    Some(origin)
}

/// The names of the variables `${NAME}` / `${NAME:-default}` in every string of
/// `value`, in order, each once (`$$` is a literal dollar).
fn references(value: &Value, out: &mut Vec<String>) {
    match value {
        Value::String(s) => {
            let mut rest = s.as_str();
            while let Some(i) = rest.find('$') {
                let after = &rest[i + 1..];
                if let Some(tail) = after.strip_prefix('$') {
                    rest = tail;
                } else if let Some(body) = after.strip_prefix('{') {
                    let Some(end) = body.find('}') else { break };
                    let inner = &body[..end];
                    let name = inner.split_once(":-").map_or(inner, |(n, _)| n);
                    if !out.iter().any(|n| n == name) {
                        out.push(name.to_string());
                    }
                    rest = &body[end + 1..];
                } else {
                    rest = after;
                }
            }
        }
        Value::Array(items) => items.iter().for_each(|v| references(v, out)),
        Value::Object(map) => map.values().for_each(|v| references(v, out)),
        _ => {}
    }
}

/// Leaves of `value` by JSON pointer: objects are walked, lists of objects too (by
/// index); a list of plain values is one leaf.
fn flatten(value: &Value, pointer: &str, out: &mut Vec<(String, Value)>) {
    match value {
        // An empty section has no leaves: its keys are unset and have no defaults.
        Value::Object(map) => {
            for (k, v) in map {
                flatten(
                    v,
                    &format!("{pointer}/{}", crate::yaml::escape_token(k)),
                    out,
                );
            }
        }
        Value::Array(items) if items.iter().any(|v| v.is_object() || v.is_array()) => {
            for (i, v) in items.iter().enumerate() {
                flatten(v, &format!("{pointer}/{i}"), out);
            }
        }
        other => out.push((pointer.to_string(), other.clone())),
    }
}

/// `/alerts/notifiers/0/url` → `alerts.notifiers.0.url`.
fn dotted(pointer: &str) -> String {
    pointer
        .trim_start_matches('/')
        .split('/')
        .map(crate::document::unescape)
        .collect::<Vec<_>>()
        .join(".")
}

/// The value as it may be shown under `key`: credentials (by the key's name, as
/// [`crate::redact::is_secret_key`] says, and every header value) become `***`,
/// connection strings lose their password, and URLs (whose paths and queries carry
/// the tokens of chat robots and webhooks) keep only their origin. Values hidden are
/// remembered, so that they are scrubbed from any other text too.
fn hide(key: &str, value: Value) -> Value {
    let parts: Vec<&str> = key.split('.').collect();
    let last = parts
        .iter()
        .rev()
        .find(|p| p.parse::<usize>().is_err())
        .copied()
        .unwrap_or_default();
    let in_headers = parts.iter().any(|p| p.eq_ignore_ascii_case("headers"));
    if (crate::redact::is_secret_key(last) || in_headers) && !value.is_null() {
        remember(&value);
        return Value::String(HIDDEN.into());
    }
    match value {
        Value::String(s) if crate::redact::is_url_key(last) => {
            Value::String(crate::redact::url(&s))
        }
        // Any other string that carries credentials the way a URI does.
        Value::String(s) if s.contains("://") && s.contains('@') => {
            Value::String(crate::redact::uri(&s))
        }
        Value::Array(items) => Value::Array(items.into_iter().map(|v| hide(key, v)).collect()),
        other => other,
    }
}

fn remember(value: &Value) {
    match value {
        Value::String(s) => crate::redact::remember(s),
        Value::Array(items) => items.iter().for_each(remember),
        Value::Object(map) => map.values().for_each(remember),
        _ => {}
    }
}

/// Entries as a JSON object: `{key: {"value": …, "origin": …}}`.
pub fn entries_json(entries: &[Entry]) -> Value {
    let mut map = Map::new();
    for e in entries {
        map.insert(e.key.clone(), json!({"value": e.value, "origin": e.origin}));
    }
    Value::Object(map)
}

/// The whole view as `dcb config --json` prints it.
pub fn to_json(config: &[Entry], policies: &[PolicyView]) -> Value {
    json!({
        "config": entries_json(config),
        "policies": policies.iter().map(|p| json!({
            "name": p.name,
            "file": p.file.display().to_string(),
            "settings": entries_json(&p.settings),
            "collections": p.collections.iter().map(|c| json!({
                "name": c.name,
                "pattern": c.pattern,
                "settings": entries_json(&c.settings),
            })).collect::<Vec<_>>(),
        })).collect::<Vec<_>>(),
    })
}

#[cfg(test)]
mod tests;
