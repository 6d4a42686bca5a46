use std::process::ExitCode;

use clap::Parser as _;

fn main() -> ExitCode {
    // Backups hold the factory's data: everything dcb creates is owner-only, including
    // files other crates create (the daily log, lock files).
    #[cfg(unix)]
    // SAFETY: umask only sets this process's file-creation mask; it cannot fail.
    unsafe {
        libc::umask(0o077);
    }
    let cli = dcb::cli::Cli::parse();
    dcb::commands::dispatch(&cli).into()
}
