use std::process::ExitCode;

use clap::Parser as _;
use tracing_subscriber::EnvFilter;

fn main() -> ExitCode {
    let cli = dcb::cli::Cli::parse();
    let default = match cli.verbose {
        0 => "dcb=info,warn",
        1 => "dcb=debug,info",
        _ => "trace",
    };
    let filter = EnvFilter::try_from_env("DCB_LOG").unwrap_or_else(|_| EnvFilter::new(default));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
    dcb::commands::dispatch(&cli).into()
}
