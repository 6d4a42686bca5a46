//! `dcb config`'s view of dcb.yaml's storage keys: each target (an S3 target's
//! credentials by where they come from, never what they are), the default targets,
//! the lock and the exclusions, with their origins.

use std::path::Path;

use serde_json::{Value, json};

use super::{DEFAULT, Entry, HIDDEN, entry};
use crate::config::storage::{LOCAL, LockConfig, TargetConfig};
use crate::config::{ConfigFile, Settings, normalize};
use crate::storage::s3::S3Config;

/// The variables an S3 target reads when it names none (`storage::s3`'s defaults;
/// a unit test below checks they agree).
const DEFAULT_KEY_ENV: &str = "AWS_ACCESS_KEY_ID";
const DEFAULT_SECRET_ENV: &str = "AWS_SECRET_ACCESS_KEY";

/// How an origin is found: `FILE:LINE` of a JSON pointer of dcb.yaml, if set there.
type At<'a> = &'a dyn Fn(&str) -> Option<String>;
type Env<'a> = &'a dyn Fn(&str) -> Option<String>;

/// The storage entries, after the backup root (whose origin the `local` target has).
pub(super) fn entries(
    settings: &Settings,
    config: &ConfigFile,
    backup_root_origin: &str,
    at: At<'_>,
    env: Env<'_>,
) -> Vec<Entry> {
    let or_default = |pointer: &str| at(pointer).unwrap_or_else(|| DEFAULT.to_string());
    let mut out = vec![entry(
        &format!("targets.{LOCAL}.path"),
        json!(settings.backup_root.display().to_string()),
        backup_root_origin.to_string(),
    )];
    for (name, target) in &settings.targets {
        let base = format!("/targets/{}", crate::yaml::escape_token(name));
        let mut push = |field: &str, value: Value, origin: String| {
            out.push(entry(&format!("targets.{name}.{field}"), value, origin));
        };
        let ptr = |field: &str| format!("{base}/{field}");
        match target {
            TargetConfig::Local(f) => {
                push("type", json!("local"), or_default(&ptr("type")));
                let path = normalize(&settings.config_dir.join(&f.path));
                push(
                    "path",
                    json!(path.display().to_string()),
                    or_default(&ptr("path")),
                );
            }
            TargetConfig::S3(s3) => {
                push("type", json!("s3"), or_default(&ptr("type")));
                push("bucket", json!(s3.bucket), or_default(&ptr("bucket")));
                let prefix = Some(&s3.prefix).filter(|p| !p.is_empty());
                push("prefix", json!(prefix), or_default(&ptr("prefix")));
                push(
                    "endpoint",
                    json!(s3.endpoint()),
                    or_default(&ptr("endpoint")),
                );
                push("region", json!(s3.region()), or_default(&ptr("region")));
                push(
                    "pathStyle",
                    json!(s3.path_style()),
                    or_default(&ptr("pathStyle")),
                );
                for half in [Half::KeyId, Half::Secret] {
                    let (value, origin) = credential(s3, half, &settings.config_dir, &ptr, at, env);
                    push(half.key(), value, origin);
                }
            }
        }
    }
    out.push(entry(
        "defaultTargets",
        json!(settings.default_targets),
        or_default("/defaultTargets"),
    ));
    let lock = &settings.lock;
    let (kind, database, ttl) = match &config.lock {
        LockConfig::Kind(_) => (or_default("/lock"), DEFAULT.into(), DEFAULT.into()),
        LockConfig::Detailed(_) => (
            or_default("/lock/kind"),
            or_default("/lock/database"),
            or_default("/lock/ttl"),
        ),
    };
    out.push(entry(
        "lock.kind",
        serde_json::to_value(lock.kind).unwrap_or(Value::Null),
        kind,
    ));
    out.push(entry("lock.database", json!(lock.database), database));
    out.push(entry("lock.ttl", json!(lock.ttl.to_string()), ttl));
    out.push(entry(
        "exclude",
        json!(config.exclude),
        or_default("/exclude"),
    ));
    out
}

/// One half of an S3 key pair.
#[derive(Clone, Copy)]
enum Half {
    KeyId,
    Secret,
}

impl Half {
    fn key(self) -> &'static str {
        match self {
            Half::KeyId => "accessKeyId",
            Half::Secret => "secretAccessKey",
        }
    }
}

/// A credential as `dcb config` shows it: `***` when it is there to be read (the
/// variable is set, the file exists; a file is never read), `null` when it is not;
/// the origin names the variable or file, and the line of dcb.yaml that named it.
fn credential(
    s3: &S3Config,
    half: Half,
    config_dir: &Path,
    ptr: &dyn Fn(&str) -> String,
    at: At<'_>,
    env: Env<'_>,
) -> (Value, String) {
    let (file, var, default_var) = match half {
        Half::KeyId => (
            s3.access_key_id_file.as_deref(),
            s3.access_key_id_env.as_deref(),
            DEFAULT_KEY_ENV,
        ),
        Half::Secret => (
            s3.secret_access_key_file.as_deref(),
            s3.secret_access_key_env.as_deref(),
            DEFAULT_SECRET_ENV,
        ),
    };
    let named_at = |field: &str| {
        at(&ptr(&format!("{}{field}", half.key())))
            .map_or_else(String::new, |o| format!(" (named at {o})"))
    };
    let file_path = file.map(|f| normalize(&config_dir.join(f)));
    match (&file_path, var) {
        (Some(path), None) => {
            let value = if path.is_file() {
                json!(HIDDEN)
            } else {
                Value::Null
            };
            let origin = format!("file {}{}", path.display(), named_at("File"));
            (value, origin)
        }
        (Some(path), Some(var)) => (
            Value::Null,
            format!(
                "file {}{} and env {var}{}: keep one",
                path.display(),
                named_at("File"),
                named_at("Env")
            ),
        ),
        (None, var) => {
            let name = var.unwrap_or(default_var);
            // The value goes through `entry`, which hides it and remembers it, so it
            // is scrubbed from anything else printed.
            let value = env(name)
                .filter(|v| !v.trim().is_empty())
                .map_or(Value::Null, Value::String);
            let origin = match var {
                Some(_) => format!("env {name}{}", named_at("Env")),
                None => format!("env {name}"),
            };
            (value, origin)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // The default variables are those the S3 target reads.
    #[test]
    fn default_variables_agree_with_the_target() {
        let env = |name: &str| match name {
            DEFAULT_KEY_ENV => Some("AKIDPROBE".to_string()),
            DEFAULT_SECRET_ENV => Some("secret-probe".to_string()),
            _ => None,
        };
        let s3 = S3Config {
            bucket: "backups".into(),
            ..S3Config::default()
        };
        assert!(s3.credentials_with(Path::new("."), env).is_ok());
    }
}
