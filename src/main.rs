use std::process::ExitCode;

use clap::Parser as _;

fn main() -> ExitCode {
    let cli = dcb::cli::Cli::parse();
    dcb::commands::dispatch(&cli).into()
}
