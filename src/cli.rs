//! The command-line surface (clap derive only; no logic).

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::diag::Format;

/// dcb: policy-driven incremental MongoDB backups.
#[derive(Debug, Parser)]
#[command(name = "dcb", version, about, long_about = None)]
pub struct Cli {
    /// Configuration file (optional; default: ./dcb.yaml when present).
    #[arg(long, global = true, env = "DCB_CONFIG", value_name = "FILE")]
    pub config: Option<PathBuf>,

    /// Folder of policy files (default: the config's policiesDir, else ./policies).
    #[arg(
        id = "policies_dir",
        long = "policies",
        global = true,
        env = "DCB_POLICIES_DIR",
        value_name = "DIR"
    )]
    pub policies: Option<PathBuf>,

    /// Folder archives, state and logs are written to (default: the config's
    /// backupRoot, else ./backups).
    #[arg(long, global = true, env = "DCB_BACKUP_ROOT", value_name = "DIR")]
    pub backup_root: Option<PathBuf>,

    /// Log more (-v: debug, -vv: trace). DCB_LOG takes a tracing filter.
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    pub verbose: u8,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Check policy files: schema, cron, time zones, durations, names; exit 1 on errors.
    Validate(ValidateArgs),
    /// Print the JSON schema of policy or config files.
    Schema(SchemaArgs),
    /// Show each policy's next runs and what a run now would export.
    Plan(PlanArgs),
    /// Run policies once, now: export each collection's new window.
    Run(RunArgs),
    /// Delete archives past their policy's retention (never below keepLast).
    Prune(PruneArgs),
    /// Run the service: schedules, hot reload, retention, health checks, alerts.
    Serve(ServeArgs),
    /// Show how the backups stand (works whether the service runs or not).
    Status(StatusArgs),
    /// Stop the running service gracefully.
    Stop(StopArgs),
    /// List the archives on disk (the catalog, from their manifests).
    List(ListArgs),
    /// Check archives: gzip, tar, checksums, BSON, counts; exit 1 on corruption.
    Verify(VerifyArgs),
    /// Bring data back from archives into a database.
    Restore(RestoreArgs),
    /// Show the effective configuration and every policy resolved, each value with its
    /// origin (flag, environment, dcb.yaml line, policy file line, default); secrets
    /// are shown as `***`.
    Config(ConfigArgs),
    /// Prove the backups restore: restore the newest archives into a scratch
    /// database, compare, drop it; exit 1 when a drill fails.
    Drill(DrillArgs),
}

#[derive(Debug, Args)]
pub struct ConfigArgs {
    /// Print JSON: `{"config": {KEY: {"value", "origin"}}, "policies": [...]}`.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct DrillArgs {
    /// Only this policy (repeatable; default: every enabled policy whose drill is not
    /// disabled).
    #[arg(id = "policy", long = "policy", value_name = "NAME")]
    pub policies: Vec<String>,

    /// Print JSON (an array of drills.log lines) instead of text.
    #[arg(long)]
    pub json: bool,

    /// age identity file that opens encrypted archives (default: the config's
    /// encryption.identityFile).
    #[arg(long, env = "DCB_AGE_IDENTITY", value_name = "FILE")]
    pub identity: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct ListArgs {
    /// Read only this target (`local` is the backup root; default: every target).
    #[arg(long, value_name = "NAME")]
    pub target: Option<String>,

    /// Only this policy (repeatable).
    #[arg(id = "policy", long = "policy", value_name = "NAME")]
    pub policies: Vec<String>,

    /// Only this collection (repeatable).
    #[arg(long = "collection", value_name = "NAME")]
    pub collections: Vec<String>,

    /// Print JSON instead of a table.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct VerifyArgs {
    /// Read only this target (`local` is the backup root; default: every target).
    #[arg(long, value_name = "NAME")]
    pub target: Option<String>,

    /// Only the archives of this policy (repeatable; default: every archive).
    #[arg(
        id = "policy",
        long = "policy",
        value_name = "NAME",
        conflicts_with = "archives"
    )]
    pub policies: Vec<String>,

    /// Archive files to check (their manifest beside them, else the copy inside).
    #[arg(id = "archives", value_name = "ARCHIVE")]
    pub archives: Vec<PathBuf>,

    /// Also fetch N random documents of each archive from the live database by `_id`
    /// and report those changed or deleted since the backup (information only).
    #[arg(long, value_name = "N", default_value_t = 0)]
    pub sample: usize,

    /// Print JSON instead of text.
    #[arg(long)]
    pub json: bool,

    /// age identity file that opens encrypted archives (default: the config's
    /// encryption.identityFile).
    #[arg(long, env = "DCB_AGE_IDENTITY", value_name = "FILE")]
    pub identity: Option<PathBuf>,

    /// Print only problems.
    #[arg(short, long)]
    pub quiet: bool,
}

#[derive(Debug, Args)]
pub struct RestoreArgs {
    /// Read only this target (`local` is the backup root; default: every target).
    #[arg(long, value_name = "NAME")]
    pub target: Option<String>,

    /// Only the archives of this policy (repeatable).
    #[arg(id = "policy", long = "policy", value_name = "NAME")]
    pub policies: Vec<String>,

    /// Only this collection (repeatable).
    #[arg(long = "collection", value_name = "NAME")]
    pub collections: Vec<String>,

    /// Restore exactly these archive files (repeatable).
    #[arg(long = "archive", value_name = "FILE")]
    pub archives: Vec<PathBuf>,

    /// Point in time (RFC 3339, or `YYYY-MM-DD[ HH:MM[:SS]]` in the config's time
    /// zone): a collection whose policy sets `full` comes back as it was at the last
    /// run at or before TIME; others get the documents whose time field is before it.
    #[arg(long, value_name = "TIME")]
    pub until: Option<String>,

    /// Restore what the archives hold even where a chain is broken or its history
    /// incomplete (the result is then not the collection as it was).
    #[arg(long)]
    pub partial: bool,

    /// Database to restore into.
    #[arg(long, value_name = "DB")]
    pub to_database: String,

    /// Collection to restore into (when the selection holds one collection).
    #[arg(long, value_name = "NAME")]
    pub to_collection: Option<String>,

    /// Allow restoring into the database the archives came from.
    #[arg(long)]
    pub in_place: bool,

    /// Drop each target collection first (after every archive has been verified).
    #[arg(long)]
    pub drop: bool,

    /// Write past the collections' validators (documents stored before a validator
    /// was added fail it). Needs the bypassDocumentValidation privilege, e.g. the
    /// `restore` role; `readWrite` lacks it.
    #[arg(long)]
    pub bypass_validation: bool,

    /// Print the plan (archives, documents, targets); write nothing.
    #[arg(long)]
    pub dry_run: bool,

    /// age identity file that opens encrypted archives (default: the config's
    /// encryption.identityFile).
    #[arg(long, env = "DCB_AGE_IDENTITY", value_name = "FILE")]
    pub identity: Option<PathBuf>,

    /// Print nothing but failures.
    #[arg(short, long)]
    pub quiet: bool,
}

#[derive(Debug, Args)]
pub struct ServeArgs {
    /// Serve /healthz, /status and /metrics on this address (e.g. 127.0.0.1:9187).
    #[arg(long, value_name = "ADDR")]
    pub http: Option<String>,

    /// On shutdown, how long running exports may finish before they are aborted.
    #[arg(long, default_value = "30s", value_name = "DURATION")]
    pub grace: crate::duration::HumanDuration,
}

#[derive(Debug, Args)]
pub struct StatusArgs {
    /// Print JSON (the seed's status shape plus per-collection detail).
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct StopArgs {
    /// Seconds to wait for the service to stop (it takes at most its --grace + 25 s).
    #[arg(long, default_value_t = 90)]
    pub wait: u64,
}

#[derive(Debug, Args)]
pub struct ValidateArgs {
    /// Policy files or folders (default: the policies folder).
    #[arg(value_name = "PATH")]
    pub paths: Vec<PathBuf>,

    /// Also connect to MongoDB: warn about missing collections and time fields
    /// without an index.
    #[arg(long)]
    pub online: bool,

    /// Output format: human, json, or github (workflow annotations).
    #[arg(long, value_enum, default_value = "human")]
    pub format: Format,

    /// Fail (exit 1) on warnings too.
    #[arg(long)]
    pub deny_warnings: bool,
}

#[derive(Debug, Args)]
pub struct SchemaArgs {
    /// Which schema.
    #[arg(value_enum)]
    pub kind: SchemaKind,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum SchemaKind {
    Policy,
    Config,
}

#[derive(Debug, Args)]
#[command(group = clap::ArgGroup::new("which").required(true).args(["policy", "all"]))]
pub struct RunArgs {
    /// Run this policy (repeatable).
    #[arg(id = "policy", long = "policy", value_name = "NAME")]
    pub policies: Vec<String>,

    /// Run every enabled policy.
    #[arg(long)]
    pub all: bool,

    /// Print nothing but failures.
    #[arg(short, long)]
    pub quiet: bool,
}

#[derive(Debug, Args)]
pub struct PruneArgs {
    /// Only this policy (repeatable; default: all).
    #[arg(id = "policy", long = "policy", value_name = "NAME")]
    pub policies: Vec<String>,

    /// Print what would be deleted; delete nothing.
    #[arg(long)]
    pub dry_run: bool,
}

#[derive(Debug, Args)]
pub struct PlanArgs {
    /// Only this policy (repeatable).
    #[arg(long = "policy", value_name = "NAME")]
    pub only: Vec<String>,

    /// How many upcoming run times to show (1 to 1000).
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u16).range(1..=1000))]
    pub runs: u16,

    /// Print JSON instead of text.
    #[arg(long)]
    pub json: bool,
}

#[cfg(test)]
mod tests {
    // clap's own consistency checks (conflicting ids, bad defaults) pass.
    #[test]
    fn cli_is_consistent() {
        use clap::CommandFactory as _;
        super::Cli::command().debug_assert();
    }
}
