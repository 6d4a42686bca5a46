//! Alert keys: the condition an alert is about. A repeat of the same key is throttled,
//! and a `resolved` alert names the key it clears. Written as `<kind>:<subject>`
//! (`failures:hot/dcMes/api_logs`) in alerts.log and the alerter's memory.

use std::fmt;
use std::str::FromStr;

/// What an alert is about.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum AlertKey {
    /// A collection's consecutive failures reached the threshold (job id).
    Failures(String),
    /// A collection has had no successful backup for two schedule intervals (job id).
    Stale(String),
    /// A collection's new archive does not verify (job id).
    Verify(String),
    /// A collection was backed up (an event, never active; job id).
    Success(String),
    /// A policy's run began (an event, never active; policy).
    Run(String),
    /// dcb.yaml is invalid.
    ConfigFile,
    /// An enabled policy cannot run (policy).
    Config(String),
    /// A policy file's last edit is invalid (its path).
    InvalidPolicy(String),
    /// The identity cannot open a policy's new archives (policy).
    Identity(String),
    /// The database does not answer.
    Database,
    /// The backup disk is low.
    DiskFree,
    /// The backups will outgrow the disk at the current rate.
    DiskForecast,
    /// A backed-up database has collections no policy covers (the database).
    Uncovered(String),
    /// A storage target cannot be written (the target's name).
    Target(String),
    /// A policy's last restore drill failed (policy).
    Drill(String),
    /// A re-read of an old archive found it corrupt (`<policy>/<file>`).
    Corrupt(String),
}

impl AlertKey {
    /// The policy the key is about, if any: for job ids, their first part.
    pub fn policy(&self) -> Option<&str> {
        match self {
            AlertKey::Failures(id)
            | AlertKey::Stale(id)
            | AlertKey::Verify(id)
            | AlertKey::Success(id) => id.split('/').next(),
            AlertKey::Run(p) | AlertKey::Config(p) | AlertKey::Identity(p) | AlertKey::Drill(p) => {
                Some(p)
            }
            AlertKey::Corrupt(archive) => archive.split('/').next(),
            _ => None,
        }
    }

    /// The job id the key is about, if any.
    pub fn job(&self) -> Option<&str> {
        match self {
            AlertKey::Failures(id)
            | AlertKey::Stale(id)
            | AlertKey::Verify(id)
            | AlertKey::Success(id) => Some(id),
            _ => None,
        }
    }
}

impl fmt::Display for AlertKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AlertKey::Failures(id) => write!(f, "failures:{id}"),
            AlertKey::Stale(id) => write!(f, "stale:{id}"),
            AlertKey::Verify(id) => write!(f, "verify:{id}"),
            AlertKey::Success(id) => write!(f, "success:{id}"),
            AlertKey::Run(p) => write!(f, "run:{p}"),
            AlertKey::ConfigFile => f.write_str("config"),
            AlertKey::Config(p) => write!(f, "config:{p}"),
            AlertKey::InvalidPolicy(file) => write!(f, "invalid-policy:{file}"),
            AlertKey::Identity(p) => write!(f, "identity:{p}"),
            AlertKey::Database => f.write_str("database"),
            AlertKey::DiskFree => f.write_str("disk:free"),
            AlertKey::DiskForecast => f.write_str("disk:forecast"),
            AlertKey::Uncovered(db) => write!(f, "uncovered:{db}"),
            AlertKey::Target(name) => write!(f, "target:{name}"),
            AlertKey::Drill(p) => write!(f, "drill:{p}"),
            AlertKey::Corrupt(archive) => write!(f, "corrupt:{archive}"),
        }
    }
}

/// A string that names no alert key dcb raises.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("`{0}` is not an alert key")]
pub struct UnknownKey(pub String);

impl FromStr for AlertKey {
    type Err = UnknownKey;

    fn from_str(s: &str) -> Result<AlertKey, UnknownKey> {
        let fixed = match s {
            "config" => Some(AlertKey::ConfigFile),
            "database" => Some(AlertKey::Database),
            "disk:free" => Some(AlertKey::DiskFree),
            "disk:forecast" => Some(AlertKey::DiskForecast),
            _ => None,
        };
        if let Some(k) = fixed {
            return Ok(k);
        }
        let unknown = || UnknownKey(s.to_string());
        let (kind, rest) = s.split_once(':').ok_or_else(unknown)?;
        if rest.is_empty() {
            return Err(unknown());
        }
        let rest = rest.to_string();
        Ok(match kind {
            "failures" => AlertKey::Failures(rest),
            "stale" => AlertKey::Stale(rest),
            "verify" => AlertKey::Verify(rest),
            "success" => AlertKey::Success(rest),
            "run" => AlertKey::Run(rest),
            "config" => AlertKey::Config(rest),
            "invalid-policy" => AlertKey::InvalidPolicy(rest),
            "identity" => AlertKey::Identity(rest),
            "uncovered" => AlertKey::Uncovered(rest),
            "target" => AlertKey::Target(rest),
            "drill" => AlertKey::Drill(rest),
            "corrupt" => AlertKey::Corrupt(rest),
            _ => return Err(unknown()),
        })
    }
}

impl PartialEq<&str> for AlertKey {
    fn eq(&self, other: &&str) -> bool {
        other.parse::<AlertKey>().is_ok_and(|k| k == *self)
    }
}

impl serde::Serialize for AlertKey {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // Every key reads back as itself; what is not a key is refused.
    #[test]
    fn keys_round_trip() {
        let keys = [
            AlertKey::Failures("hot/dcMes/api_logs".into()),
            AlertKey::Stale("hot/dcMes/a.b".into()),
            AlertKey::Verify("hot/db/c".into()),
            AlertKey::Success("hot/db/c".into()),
            AlertKey::Run("hot".into()),
            AlertKey::ConfigFile,
            AlertKey::Config("hot".into()),
            AlertKey::InvalidPolicy("policies/a:b.yaml".into()),
            AlertKey::Identity("hot".into()),
            AlertKey::Database,
            AlertKey::DiskFree,
            AlertKey::DiskForecast,
            AlertKey::Uncovered("dcMes".into()),
            AlertKey::Target("offsite".into()),
            AlertKey::Drill("hot".into()),
            AlertKey::Corrupt("hot/a.tar.gz".into()),
        ];
        for k in keys {
            assert_eq!(k.to_string().parse::<AlertKey>().unwrap(), k);
        }
        for bad in ["", "nope", "failures:", "disk:full", "x:y"] {
            assert!(bad.parse::<AlertKey>().is_err(), "{bad}");
        }
        let k: AlertKey = "stale:hot/db/roles".parse().unwrap();
        assert_eq!(k.policy(), Some("hot"));
        assert_eq!(k.job(), Some("hot/db/roles"));
        assert_eq!(AlertKey::Database.policy(), None);
    }
}
