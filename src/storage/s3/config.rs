//! How an S3 target is configured (`dcb.yaml`), and where its credentials come from:
//! the environment or files, read once, never shown.

use std::io;
use std::path::{Path, PathBuf};

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// The variable read for the access key id when neither `accessKeyIdEnv` nor
/// `accessKeyIdFile` is set.
pub const DEFAULT_KEY_ENV: &str = "AWS_ACCESS_KEY_ID";
/// The variable read for the secret access key by default.
pub const DEFAULT_SECRET_ENV: &str = "AWS_SECRET_ACCESS_KEY";
/// The region when none is given.
pub const DEFAULT_REGION: &str = "us-east-1";

/// S3-compatible object storage (AWS S3, MinIO, Ceph, Garage, ...) as a storage
/// target. Objects are `<prefix>/<policy>/<file name>` in the bucket. Credentials come
/// from the environment (`AWS_ACCESS_KEY_ID` / `AWS_SECRET_ACCESS_KEY`, or the
/// variables named here) or from files; they never appear in logs or messages.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct S3Config {
    /// The bucket. It must exist; dcb does not create it.
    pub bucket: String,

    /// Folder inside the bucket for dcb's objects, e.g. `factory-a/dcb`. Default: the
    /// bucket's top.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub prefix: String,

    /// Endpoint URL, e.g. `https://s3.eu-central-1.amazonaws.com` or
    /// `http://minio.local:9000`. Default: AWS S3 in `region`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub endpoint: Option<String>,

    /// Region, e.g. `eu-central-1`. Default: `us-east-1` (what most S3-compatible
    /// servers expect).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub region: Option<String>,

    /// Address the bucket in the path (`<endpoint>/<bucket>/<key>`) rather than in the
    /// host name (`<bucket>.<endpoint host>`). Default: true when `endpoint` is set (as
    /// MinIO and most servers on site need), false for AWS.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path_style: Option<bool>,

    /// Environment variable holding the access key id. Default: `AWS_ACCESS_KEY_ID`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub access_key_id_env: Option<String>,

    /// Environment variable holding the secret access key. Default:
    /// `AWS_SECRET_ACCESS_KEY`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_access_key_env: Option<String>,

    /// File whose first line is the access key id (relative paths are read from this
    /// file's folder), e.g. a mounted Kubernetes Secret. Instead of `accessKeyIdEnv`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub access_key_id_file: Option<String>,

    /// File whose first line is the secret access key (relative paths are read from
    /// this file's folder). Instead of `secretAccessKeyEnv`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_access_key_file: Option<String>,
}

/// An access key pair. Shown as `***` by `Debug`; both halves are remembered by
/// [`crate::redact`] when read, so they are scrubbed from any text and log.
#[derive(Clone, PartialEq, Eq)]
pub struct Credentials {
    pub(crate) access_key_id: String,
    pub(crate) secret_access_key: String,
}

impl Credentials {
    pub fn new(access_key_id: impl Into<String>, secret_access_key: impl Into<String>) -> Self {
        let c = Credentials {
            access_key_id: access_key_id.into(),
            secret_access_key: secret_access_key.into(),
        };
        crate::redact::remember(&c.access_key_id);
        crate::redact::remember(&c.secret_access_key);
        c
    }
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Credentials(***)")
    }
}

impl S3Config {
    /// `s3://bucket/prefix`, as messages name the target.
    pub fn describe(&self) -> String {
        match normalize_prefix(&self.prefix) {
            Ok(p) if !p.is_empty() => format!("s3://{}/{}", self.bucket, p.trim_end_matches('/')),
            _ => format!("s3://{}", self.bucket),
        }
    }

    pub fn region(&self) -> &str {
        self.region
            .as_deref()
            .filter(|r| !r.is_empty())
            .unwrap_or(DEFAULT_REGION)
    }

    /// The endpoint URL, without a trailing `/`.
    pub fn endpoint(&self) -> String {
        match self.endpoint.as_deref().filter(|e| !e.is_empty()) {
            Some(e) => e.trim_end_matches('/').to_string(),
            None => format!("https://s3.{}.amazonaws.com", self.region()),
        }
    }

    pub fn path_style(&self) -> bool {
        self.path_style
            .unwrap_or_else(|| self.endpoint.as_deref().is_some_and(|e| !e.is_empty()))
    }

    /// What is wrong with the settings themselves (not the credentials), if anything.
    pub fn check(&self) -> Result<(), crate::error::Invalid> {
        self.problem().map_err(crate::error::Invalid)
    }

    fn problem(&self) -> Result<(), String> {
        let b = &self.bucket;
        let bucket_ok = (3..=63).contains(&b.len())
            && b.bytes()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == b'.' || c == b'-');
        if !bucket_ok {
            return Err(format!(
                "bucket `{b}`: 3 to 63 lowercase letters, digits, `.` or `-`"
            ));
        }
        prefix_of(&self.prefix)?;
        let endpoint = self.endpoint();
        if !(endpoint.starts_with("http://") || endpoint.starts_with("https://")) {
            return Err(format!("endpoint `{endpoint}`: an http:// or https:// URL"));
        }
        if endpoint.contains('@') {
            return Err(
                "endpoint: put credentials in the environment or a file, not in the URL".into(),
            );
        }
        Ok(())
    }

    /// The access key pair, from the files or variables configured (relative files
    /// from `base`, the config file's folder). Errors name the variable or file, never
    /// what it holds.
    pub fn credentials(&self, base: &Path) -> io::Result<Credentials> {
        self.credentials_with(base, |name| std::env::var(name).ok())
    }

    /// [`S3Config::credentials`] with the environment read through `env`.
    pub fn credentials_with(
        &self,
        base: &Path,
        env: impl Fn(&str) -> Option<String>,
    ) -> io::Result<Credentials> {
        let key = secret(
            base,
            "access key id",
            self.access_key_id_file.as_deref(),
            self.access_key_id_env.as_deref(),
            DEFAULT_KEY_ENV,
            &env,
        )?;
        let secret = secret(
            base,
            "secret access key",
            self.secret_access_key_file.as_deref(),
            self.secret_access_key_env.as_deref(),
            DEFAULT_SECRET_ENV,
            &env,
        )?;
        Ok(Credentials::new(key, secret))
    }
}

/// One half of the key pair: the file's first line, or the variable's value.
fn secret(
    base: &Path,
    what: &str,
    file: Option<&str>,
    var: Option<&str>,
    default_var: &str,
    env: &impl Fn(&str) -> Option<String>,
) -> io::Result<String> {
    let invalid = |msg: String| io::Error::new(io::ErrorKind::InvalidInput, msg);
    let value = match (file, var) {
        (Some(_), Some(_)) => {
            return Err(invalid(format!(
                "the {what} is configured both from a file and from a variable: keep one"
            )));
        }
        (Some(file), None) => {
            let path: PathBuf = base.join(file);
            let text = std::fs::read_to_string(&path).map_err(|e| {
                io::Error::new(
                    e.kind(),
                    format!("cannot read the {what} file {}: {e}", path.display()),
                )
            })?;
            let first = text.lines().next().unwrap_or("").trim();
            if first.is_empty() {
                return Err(invalid(format!(
                    "the {what} file {} is empty",
                    path.display()
                )));
            }
            first.to_string()
        }
        (None, var) => {
            let name = var.unwrap_or(default_var);
            match env(name).map(|v| v.trim().to_string()) {
                Some(v) if !v.is_empty() => v,
                _ => {
                    return Err(io::Error::new(
                        io::ErrorKind::NotFound,
                        format!("the {what} is not set: set the environment variable {name}"),
                    ));
                }
            }
        }
    };
    Ok(value)
}

/// The prefix as keys use it: `""`, or `a/b/` (no leading `/`, one trailing `/`).
pub fn normalize_prefix(prefix: &str) -> Result<String, crate::error::Invalid> {
    prefix_of(prefix).map_err(crate::error::Invalid)
}

fn prefix_of(prefix: &str) -> Result<String, String> {
    let parts: Vec<&str> = prefix.split('/').filter(|p| !p.is_empty()).collect();
    if parts.iter().any(|p| *p == "." || *p == "..") {
        return Err(format!("prefix `{prefix}`: no `.` or `..` folders"));
    }
    if parts.is_empty() {
        return Ok(String::new());
    }
    Ok(format!("{}/", parts.join("/")))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(yaml: &str) -> S3Config {
        serde_yaml::from_str(yaml).unwrap()
    }

    // camelCase YAML, unknown fields refused; defaults: AWS us-east-1, path style if endpoint.
    #[test]
    fn parses_with_defaults() {
        let c = config("bucket: backups\nprefix: /factory-a/dcb/\n");
        assert_eq!(c.endpoint(), "https://s3.us-east-1.amazonaws.com");
        assert!(!c.path_style());
        assert_eq!(c.describe(), "s3://backups/factory-a/dcb");
        assert_eq!(normalize_prefix(&c.prefix).unwrap(), "factory-a/dcb/");
        let c = config("bucket: b1b\nendpoint: http://minio:9000/\nregion: eu-west-1\n");
        assert_eq!(c.endpoint(), "http://minio:9000");
        assert!(c.path_style());
        assert_eq!(c.region(), "eu-west-1");
        assert_eq!(c.describe(), "s3://b1b");
        let c = config("bucket: b1b\nendpoint: http://minio:9000\npathStyle: false\n");
        assert!(!c.path_style());
        assert!(serde_yaml::from_str::<S3Config>("bucket: b\nsecret: x\n").is_err());
    }

    // Bad buckets, climbing prefixes and non-URL or credentialed endpoints are refused.
    #[test]
    fn checks_settings() {
        assert!(config("bucket: backups\n").check().is_ok());
        for bad in [
            "bucket: B\n",
            "bucket: a/b\n",
            "bucket: ok-bucket\nprefix: a/../b\n",
            "bucket: ok-bucket\nendpoint: minio:9000\n",
            "bucket: ok-bucket\nendpoint: http://k:s@minio:9000\n",
        ] {
            assert!(config(bad).check().is_err(), "{bad}");
        }
    }

    // Credentials come from default or named variables or files; errors never show values.
    #[test]
    fn credentials_from_env_and_files() {
        let env = |name: &str| match name {
            "AWS_ACCESS_KEY_ID" => Some("AKIDDEFAULT".to_string()),
            "AWS_SECRET_ACCESS_KEY" => Some("default-secret-value".to_string()),
            "MY_KEY" => Some("AKIDNAMED".to_string()),
            _ => None,
        };
        let base = Path::new("/nonexistent");
        let c = config("bucket: backups\n")
            .credentials_with(base, env)
            .unwrap();
        assert_eq!(c, Credentials::new("AKIDDEFAULT", "default-secret-value"));

        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("secret"), "file-secret-value\nignored\n").unwrap();
        let c = config("bucket: backups\naccessKeyIdEnv: MY_KEY\nsecretAccessKeyFile: secret\n")
            .credentials_with(dir.path(), env)
            .unwrap();
        assert_eq!(c, Credentials::new("AKIDNAMED", "file-secret-value"));
        assert_eq!(format!("{c:?}"), "Credentials(***)");

        let e = config("bucket: backups\nsecretAccessKeyEnv: NOPE\n")
            .credentials_with(base, env)
            .unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::NotFound);
        assert!(e.to_string().contains("NOPE"), "{e}");
        let e = config("bucket: backups\naccessKeyIdFile: missing\n")
            .credentials_with(dir.path(), env)
            .unwrap_err();
        assert!(e.to_string().contains("missing"), "{e}");
        let e = config("bucket: backups\naccessKeyIdFile: k\naccessKeyIdEnv: MY_KEY\n")
            .credentials_with(base, env)
            .unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::InvalidInput);
        std::fs::write(dir.path().join("empty"), "\n").unwrap();
        let e = config("bucket: backups\naccessKeyIdFile: empty\n")
            .credentials_with(dir.path(), env)
            .unwrap_err();
        assert!(!e.to_string().contains("AKID"), "{e}");
    }
}
