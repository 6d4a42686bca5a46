//! The policy file contract: raw types that mirror the YAML exactly (and generate its
//! JSON schema), plus the validated [`Policy`] the engine works with.

pub mod drill;
pub mod load;
pub mod validate;

use std::path::PathBuf;

use chrono_tz::Tz;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::duration::{self, HumanDuration};
use crate::schedule::Schedule;

pub use crate::duration::{FULL_PATTERN, INITIAL_PATTERN};
pub use crate::names::NAME_PATTERN;

/// The JSON schema of policy files.
pub fn schema() -> &'static serde_json::Value {
    static S: std::sync::OnceLock<serde_json::Value> = std::sync::OnceLock::new();
    S.get_or_init(crate::schema::generate::<PolicyFile>)
}

/// The validator of [`schema`].
pub fn validator() -> &'static jsonschema::Validator {
    static V: std::sync::OnceLock<jsonschema::Validator> = std::sync::OnceLock::new();
    V.get_or_init(|| crate::schema::compile(schema()))
}

/// A dcb backup policy: what to export, when, and how long to keep it.
/// One policy per file, `policies/<name>.yaml`.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[schemars(title = "dcb policy")]
pub struct PolicyFile {
    /// The policy's name. Must equal the file name without `.yaml`; archives are written
    /// under `<backupRoot>/<name>/`.
    #[schemars(regex(pattern = NAME_PATTERN), length(min = 1, max = 64))]
    pub name: String,

    /// What this policy is for, in a sentence.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,

    /// When to run: a cron expression of 5 fields (minute hour day-of-month month
    /// day-of-week) or 6 (with seconds first), e.g. `0 */6 * * *`.
    #[schemars(length(min = 1))]
    pub schedule: String,

    /// IANA time zone the schedule and `window.initial: today` are read in, e.g.
    /// `Asia/Shanghai`. Default: dcb.yaml's `timezone`, else the system's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timezone: Option<String>,

    /// Database to back up. Default: dcb.yaml's `database`, else the connection URI's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub database: Option<String>,

    /// Name of the BSON date field that incremental windows filter on, for every
    /// collection that does not set its own.
    #[serde(default = "default_time_field")]
    #[schemars(length(min = 1))]
    pub time_field: String,

    /// `incremental` exports only documents whose time field falls in the new window;
    /// `snapshot` exports the whole collection every run (captures deletions; for
    /// small collections).
    #[serde(default)]
    pub mode: Mode,

    /// The time window each incremental run exports.
    #[serde(default)]
    pub window: WindowFile,

    /// How often each collection gets a full export, which starts a chain that the
    /// incremental runs after it build on (with the documents deleted between runs
    /// recorded), so that `dcb restore --until` brings a collection back as it was: a
    /// duration (`1d`, `7d`), or `never` (the default: each run exports its window only,
    /// and a restore brings back the documents of the archives kept). A full due within
    /// 1% of this (at most an hour) is taken now, so `full: 1d` on a daily schedule
    /// takes one every day.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = FULL_PATTERN))]
    pub full: Option<String>,

    /// With `full`: also capture the documents changed since the previous run whose
    /// time field their change left outside the new window (an update to an old
    /// document under `timeField: createdAt`, a document that arrived late), reading
    /// their current version by `_id`. Default: true.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub capture_updates: Option<bool>,

    /// Collections to back up: names, or objects overriding `timeField` or `mode`. A
    /// name with `*` or `?` is a pattern (`"*_logs"`), matched against the database's
    /// collections when each run starts; a collection named outright wins over a
    /// pattern, and the first matching pattern over later ones.
    #[schemars(length(min = 1))]
    pub collections: Vec<CollectionEntry>,

    /// How long to keep archives, counted from the end of their window, e.g. `72h`,
    /// `7d`, `30d`.
    #[schemars(regex(pattern = duration::PATTERN))]
    pub retention: String,

    /// Never prune below this many archives per collection, however old.
    #[serde(default = "default_keep_last")]
    #[schemars(range(max = u32::MAX))]
    pub keep_last: u32,

    /// Compression of the archives.
    #[serde(default)]
    pub compression: Compression,

    /// How many collections of this policy export at the same time. Default: dcb.yaml's
    /// `concurrency`, else 3.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 64))]
    pub concurrency: Option<u32>,

    /// The targets its archives go to, by name: `local` (the backup root) and those of
    /// dcb.yaml's `targets`. Default: dcb.yaml's `defaultTargets`, else `[local]`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1))]
    pub targets: Option<Vec<String>>,

    /// Set to `false` to keep the policy on file without scheduling it.
    #[serde(default = "default_true")]
    pub enabled: bool,

    /// Encrypt this policy's archives with age, instead of dcb.yaml's `encryption`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub encryption: Option<PolicyEncryption>,

    /// Restore drills of this policy, overriding dcb.yaml's `drill` field by field.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub drill: Option<drill::DrillFile>,
}

/// Encryption of one policy's archives.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PolicyEncryption {
    /// Public keys (`age1…`) the archives are encrypted to. An empty list turns
    /// encryption off for this policy.
    pub recipients: Vec<String>,
}

/// How a collection is exported.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// Only the documents whose time field lies in the new window.
    #[default]
    Incremental,
    /// The whole collection, every run.
    Snapshot,
}

/// The time window of an incremental run: from the collection's watermark (the end of
/// its last successful window) to now minus `settle`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct WindowFile {
    /// Where the first run starts, before any watermark exists: `today` (midnight today
    /// in the policy's time zone), `all` (everything), or a duration back from now
    /// (`7d`).
    #[serde(default = "default_initial")]
    #[schemars(regex(pattern = INITIAL_PATTERN))]
    pub initial: String,

    /// How far behind now each window ends, so documents still being written (clock
    /// skew, long transactions) fall into the next run rather than being missed.
    #[serde(default = "default_settle")]
    #[schemars(regex(pattern = duration::PATTERN))]
    pub settle: String,

    /// How much before the watermark each run re-reads, for documents that arrive late
    /// with an older time. Duplicates across archives are then expected; restore is
    /// idempotent by `_id`.
    #[serde(default = "default_overlap")]
    #[schemars(regex(pattern = duration::PATTERN))]
    pub overlap: String,
}

impl Default for WindowFile {
    fn default() -> Self {
        WindowFile {
            initial: default_initial(),
            settle: default_settle(),
            overlap: default_overlap(),
        }
    }
}

/// A collection to back up: its name, or an object that overrides the policy's
/// settings for it.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(untagged)]
pub enum CollectionEntry {
    /// A collection name; the policy's `timeField` and `mode` apply.
    Name(String),
    /// A collection with its own settings.
    Detailed(CollectionFile),
}

/// A collection with settings of its own.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CollectionFile {
    /// The collection's name, or a pattern (`*_logs`) whose settings apply to every
    /// collection it matches.
    pub name: String,
    /// The time field of this collection, overriding the policy's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub time_field: Option<String>,
    /// The mode of this collection, overriding the policy's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mode: Option<Mode>,
    /// How often this collection gets a full export, overriding the policy's `full`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = FULL_PATTERN))]
    pub full: Option<String>,
    /// Whether this collection's changes outside the window are captured, overriding
    /// the policy's `captureUpdates`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub capture_updates: Option<bool>,
}

impl CollectionEntry {
    pub fn name(&self) -> &str {
        match self {
            CollectionEntry::Name(n) => n,
            CollectionEntry::Detailed(c) => &c.name,
        }
    }
}

/// Archive compression.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Compression {
    /// gzip level: 0 (store) to 9 (smallest, slowest). 6 is gzip's default.
    #[serde(default = "default_level")]
    #[schemars(range(min = 0, max = 9))]
    pub level: u32,
}

impl Default for Compression {
    fn default() -> Self {
        Compression {
            level: default_level(),
        }
    }
}

fn default_time_field() -> String {
    "createdAt".into()
}
fn default_keep_last() -> u32 {
    1
}
fn default_true() -> bool {
    true
}
fn default_initial() -> String {
    "today".into()
}
fn default_settle() -> String {
    "1m".into()
}
fn default_overlap() -> String {
    "0s".into()
}
fn default_level() -> u32 {
    6
}

/// A validated policy: every string parsed, every default applied.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Policy {
    pub name: String,
    pub description: Option<String>,
    /// The file it came from.
    pub file: PathBuf,
    pub schedule: Schedule,
    pub timezone: Tz,
    pub database: Option<String>,
    /// The collections named outright.
    pub collections: Vec<CollectionSpec>,
    /// Collections named by pattern: `name` is the pattern, the settings those of each
    /// collection it matches ([`crate::discover`]).
    pub patterns: Vec<CollectionSpec>,
    pub window: WindowSpec,
    pub retention: HumanDuration,
    pub keep_last: u32,
    pub compression_level: u32,
    pub concurrency: usize,
    pub enabled: bool,
    /// age recipients of the archives; `None`: dcb.yaml's.
    pub recipients: Option<Vec<String>>,
    /// Target names; `None`: dcb.yaml's default targets.
    pub targets: Option<Vec<String>>,
    /// Its `drill` overrides (all unset: dcb.yaml's apply).
    pub drill: drill::DrillSpec,
}

impl Policy {
    /// The database this policy backs up: its own, else the defaults'.
    pub fn database_in(&self, defaults: &DatabaseDefaults) -> Result<String, NoDatabase> {
        self.database
            .clone()
            .or_else(|| defaults.config.clone())
            .or_else(|| defaults.uri.clone())
            .ok_or_else(|| NoDatabase(self.name.clone()))
    }
}

/// Where a policy's database comes from when it names none.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DatabaseDefaults {
    /// dcb.yaml's `database`.
    pub config: Option<String>,
    /// The database in the connection URI's path.
    pub uri: Option<String>,
}

/// A policy that names no database, and neither does the configuration.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "policy `{0}` names no database: set `database` in the policy or in dcb.yaml, or put it in the connection URI (mongodb://host/DB)"
)]
pub struct NoDatabase(pub String);

/// One collection of a policy, with its effective settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CollectionSpec {
    pub name: String,
    pub time_field: String,
    pub mode: Mode,
    /// How often a full export starts a new chain; `None`: never (no chains).
    pub full: Option<HumanDuration>,
    /// With `full`: changes outside the window are captured by `_id`.
    pub capture_updates: bool,
}

impl CollectionSpec {
    /// Whether this collection's runs form chains (a full, then incrementals that
    /// record deletions): an incremental collection with `full` set.
    pub fn has_bases(&self) -> bool {
        self.mode == Mode::Incremental && self.full.is_some()
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WindowSpec {
    pub initial: Initial,
    pub settle: HumanDuration,
    pub overlap: HumanDuration,
}

/// Where the first incremental window starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Initial {
    /// Midnight today in the policy's time zone (the seed's behaviour).
    Today,
    /// The beginning of time: everything in the collection.
    All,
    /// This long before now.
    Ago(HumanDuration),
}

impl std::fmt::Display for Initial {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Initial::Today => f.write_str("today"),
            Initial::All => f.write_str("all"),
            Initial::Ago(d) => write!(f, "{d}"),
        }
    }
}

impl std::str::FromStr for Initial {
    type Err = duration::DurationError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "today" => Ok(Initial::Today),
            "all" => Ok(Initial::All),
            other => other.parse().map(Initial::Ago),
        }
    }
}
