//! tracing to stderr and, for commands that change things, to a daily-rotated
//! `<backupRoot>/logs/dcb.<date>.log`. Every line is scrubbed of known secrets, and
//! on a terminal lines are printed above the progress bars instead of through them.
//!
//! On a terminal, a command shows warnings and errors only (its progress bars and
//! summary say the rest; `-v` brings the INFO lines back), as cargo and uv do. Without
//! a terminal (a service manager's log, a script, a test), and in the log file, INFO
//! lines stay. The service, which has no bars or summary, keeps them on a terminal too.

use std::io::{IsTerminal as _, Write};
use std::path::Path;
use std::sync::OnceLock;

use indicatif::MultiProgress;
use tracing_subscriber::fmt::MakeWriter;

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

/// The progress bars being drawn on stderr, if any: log lines go above them.
static BARS: OnceLock<MultiProgress> = OnceLock::new();

/// Print log lines above these bars from now on.
pub fn draw_above(bars: &MultiProgress) {
    let _ = BARS.set(bars.clone());
}

/// stderr, scrubbed, and printed above the progress bars when there are any.
#[derive(Clone, Copy)]
struct Stderr;

impl Write for Stderr {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let text = String::from_utf8_lossy(buf);
        let clean = crate::redact::scrub(&text);
        let out = |bytes: &[u8]| std::io::stderr().lock().write_all(bytes);
        match BARS.get() {
            Some(bars) => bars.suspend(|| out(clean.as_bytes()))?,
            None => out(clean.as_bytes())?,
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        std::io::stderr().flush()
    }
}

impl<'a> MakeWriter<'a> for Stderr {
    type Writer = Stderr;
    fn make_writer(&'a self) -> Stderr {
        Stderr
    }
}

/// A writer whose output is scrubbed of known secrets (one event per write).
#[derive(Clone)]
struct Scrubbed<W>(W);

impl<W: Write> Write for Scrubbed<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let text = String::from_utf8_lossy(buf);
        self.0.write_all(crate::redact::scrub(&text).as_bytes())?;
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.0.flush()
    }
}

impl<'a, W: Write + Clone + 'a> MakeWriter<'a> for Scrubbed<W> {
    type Writer = Scrubbed<W>;
    fn make_writer(&'a self) -> Scrubbed<W> {
        self.clone()
    }
}

/// Whether stderr shows warnings and errors only: asked for, or a terminal where the
/// command's own output says the rest.
fn stderr_quiet(verbose: u8, quiet: bool) -> bool {
    quiet || (verbose == 0 && std::io::stderr().is_terminal())
}

/// Log to stderr only.
pub fn init_stderr(verbose: u8, quiet: bool) {
    stderr_only(verbose, stderr_quiet(verbose, quiet));
}

fn stderr_only(verbose: u8, quiet: bool) {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter(verbose, quiet))
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(Stderr)
        .try_init();
}

/// Log to stderr and to `<logs_dir>/dcb.<date>.log`. Keep the guard alive: it flushes
/// the file on drop. Falls back to stderr alone if the folder cannot be created.
pub fn init_with_file(verbose: u8, quiet: bool, logs_dir: &Path) -> Option<WorkerGuard> {
    init_file(verbose, stderr_quiet(verbose, quiet), logs_dir)
}

/// As [`init_with_file`], for the service: INFO on a terminal too.
pub fn init_service(verbose: u8, logs_dir: &Path) -> Option<WorkerGuard> {
    init_file(verbose, false, logs_dir)
}

fn init_file(verbose: u8, quiet: bool, logs_dir: &Path) -> Option<WorkerGuard> {
    if let Err(e) = crate::storage::create_dir(logs_dir) {
        stderr_only(verbose, quiet);
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
            stderr_only(verbose, quiet);
            tracing::warn!(error = %e, "cannot open the log file; logging to stderr only");
            return None;
        }
    };
    let (file, guard) = tracing_appender::non_blocking(appender);
    let stderr_layer = tracing_subscriber::fmt::layer()
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(Stderr.with_max_level(if quiet {
            tracing::Level::WARN
        } else {
            tracing::Level::TRACE
        }));
    let file_layer = tracing_subscriber::fmt::layer()
        .with_ansi(false)
        .with_writer(Scrubbed(file));
    let _ = tracing_subscriber::registry()
        .with(filter(verbose, false))
        .with(stderr_layer)
        .with(file_layer)
        .try_init();
    Some(guard)
}
