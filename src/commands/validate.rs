//! `dcb validate`: check policy files (and the config), report every problem at once.

use std::path::PathBuf;

use super::{Exit, overrides, report_config_errors, runtime};
use crate::cli::{Cli, ValidateArgs};
use crate::config::{DEFAULT_CONCURRENCY, Settings, process_env, system_timezone};
use crate::diag::{self, Format};
use crate::policy::load::load_paths;
use crate::policy::validate::Defaults;

pub fn run(cli: &Cli, args: &ValidateArgs) -> Exit {
    // A named config file that is not there is a usage error, as for every command.
    if let Some(d) = Settings::missing_config(&overrides(cli)) {
        report_config_errors(&[d]);
        return Exit::Config;
    }
    // A broken dcb.yaml is reported with the policies' problems, not instead of them.
    let (settings, mut diags) = match Settings::resolve(&overrides(cli), &process_env) {
        Ok(s) => (Some(s), Vec::new()),
        Err(d) => (None, d),
    };
    let defaults = settings.as_ref().map_or_else(
        || Defaults {
            timezone: system_timezone(),
            concurrency: DEFAULT_CONCURRENCY,
            targets: Vec::new(),
        },
        Settings::policy_defaults,
    );
    let paths: Vec<PathBuf> = if args.paths.is_empty() {
        vec![settings.as_ref().map_or_else(
            || {
                cli.policies
                    .clone()
                    .unwrap_or_else(|| PathBuf::from("policies"))
            },
            |s| s.policies_dir.clone(),
        )]
    } else {
        args.paths.clone()
    };
    let databases = settings.as_ref().map(Settings::database_defaults);
    let set = load_paths(&paths, &defaults, databases.as_ref());
    diags.extend(set.diagnostics);
    if args.online {
        match &settings {
            Some(s) if !set.policies.is_empty() => {
                diags.extend(runtime().block_on(crate::online::check(s, &set.policies)));
            }
            _ => {}
        }
    }
    diag::sort(&mut diags);

    let (errors, warnings) = diag::counts(&diags);
    out!("{}", diag::render(&diags, args.format));
    if args.format == Format::Human {
        let n = set.policies.len();
        let plural =
            |k: usize, one: &str, many: &str| format!("{k} {}", if k == 1 { one } else { many });
        if errors == 0 {
            outln!(
                "{} valid, {}",
                plural(n, "policy", "policies"),
                plural(warnings, "warning", "warnings")
            );
        } else {
            outln!(
                "{}, {}",
                plural(errors, "error", "errors"),
                plural(warnings, "warning", "warnings")
            );
        }
    }
    if errors > 0 || (args.deny_warnings && warnings > 0) {
        Exit::Failed
    } else {
        Exit::Ok
    }
}
