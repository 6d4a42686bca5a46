//! tracing to stderr and, for commands that change things, to a daily-rotated
//! `<backupRoot>/logs/dcb.log`.

use std::io::IsTerminal as _;
use std::path::Path;

use tracing_appender::non_blocking::WorkerGuard;
use tracing_subscriber::EnvFilter;
use tracing_subscriber::fmt::writer::MakeWriterExt as _;
use tracing_subscriber::layer::SubscriberExt as _;
use tracing_subscriber::util::SubscriberInitExt as _;

fn filter(verbose: u8, quiet: bool) -> EnvFilter {
    let default = match (quiet, verbose) {
        (true, _) => "warn",
        (_, 0) => "dcb=info,warn",
        (_, 1) => "dcb=debug,info",
        _ => "trace",
    };
    EnvFilter::try_from_env("DCB_LOG").unwrap_or_else(|_| EnvFilter::new(default))
}

/// Log to stderr only.
pub fn init_stderr(verbose: u8, quiet: bool) {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter(verbose, quiet))
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr)
        .try_init();
}

/// Log to stderr and to `<logs_dir>/dcb.log.<date>`. Keep the guard alive: it flushes
/// the file on drop. Falls back to stderr alone if the folder cannot be created.
pub fn init_with_file(verbose: u8, quiet: bool, logs_dir: &Path) -> Option<WorkerGuard> {
    if let Err(e) = crate::storage::create_dir(logs_dir) {
        init_stderr(verbose, quiet);
        tracing::warn!(dir = %logs_dir.display(), error = %e, "cannot create the logs folder; logging to stderr only");
        return None;
    }
    let appender = tracing_appender::rolling::Builder::new()
        .rotation(tracing_appender::rolling::Rotation::DAILY)
        .filename_prefix("dcb")
        .filename_suffix("log")
        .build(logs_dir);
    let appender = match appender {
        Ok(a) => a,
        Err(e) => {
            init_stderr(verbose, quiet);
            tracing::warn!(error = %e, "cannot open the log file; logging to stderr only");
            return None;
        }
    };
    let (file, guard) = tracing_appender::non_blocking(appender);
    let stderr_layer = tracing_subscriber::fmt::layer()
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr.with_max_level(if quiet {
            tracing::Level::WARN
        } else {
            tracing::Level::TRACE
        }));
    let file_layer = tracing_subscriber::fmt::layer()
        .with_ansi(false)
        .with_writer(file);
    let _ = tracing_subscriber::registry()
        .with(filter(verbose, false))
        .with(stderr_layer)
        .with(file_layer)
        .try_init();
    Some(guard)
}
