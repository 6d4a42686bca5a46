//! `dcb serve`: the foreground service (for systemd, PM2 or a Windows service manager).

use super::{Exit, overrides, runtime, settings};
use crate::cli::{Cli, ServeArgs};

pub fn run(cli: &Cli, args: &ServeArgs) -> Exit {
    let settings = match settings(cli) {
        Ok(s) => s,
        Err(e) => {
            crate::logging::init_stderr(cli.verbose, false);
            return e;
        }
    };
    let _guard = crate::logging::init_service(
        cli.verbose,
        &crate::storage::logs_dir(&settings.backup_root),
    );
    let opts = crate::serve::Options {
        overrides: overrides(cli),
        http: args.http.clone(),
        grace: args.grace.0,
    };
    let rt = runtime();
    let result = rt.block_on(crate::serve::serve(settings, opts));
    // Aborted exports may leave blocking work behind; it must not hold up the exit.
    rt.shutdown_timeout(crate::serve::RUNTIME_SHUTDOWN);
    match result {
        Ok(()) => Exit::Ok,
        Err(e) => {
            eprintln!("error: {e}");
            if e.is_config() {
                Exit::Config
            } else {
                Exit::Failed
            }
        }
    }
}
