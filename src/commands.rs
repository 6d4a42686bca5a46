//! One thin module per subcommand: each calls the library and renders the result.

/// `print!` through [`write_stdout`]: output that survives a closed pipe.
macro_rules! out {
    ($($arg:tt)*) => {
        $crate::commands::write_stdout(&format!($($arg)*))
    };
}

/// `println!` through [`write_stdout`].
macro_rules! outln {
    ($($arg:tt)*) => {
        $crate::commands::write_stdout(&format!("{}\n", format_args!($($arg)*)))
    };
}

pub mod config;
pub mod drill;
pub mod list;
pub mod plan;
pub mod prune;
pub mod restore;
pub mod run;
pub mod schema;
pub mod serve;
pub mod status;
pub mod stop;
pub mod validate;
pub mod verify;

use std::io::Write as _;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};

use crate::cli::{Cli, Command};
use crate::config::{Overrides, Settings, process_env};
use crate::diag::{self, Diagnostic, Format};

/// What a command's exit status means.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exit {
    /// Everything is fine.
    Ok = 0,
    /// The job or the check failed.
    Failed = 1,
    /// Usage or configuration error.
    Config = 2,
}

impl From<Exit> for ExitCode {
    fn from(e: Exit) -> ExitCode {
        ExitCode::from(e as u8)
    }
}

/// Set when stdout failed for a reason other than a closed pipe (a full disk).
static STDOUT_FAILED: AtomicBool = AtomicBool::new(false);

/// Write command output to stdout. A reader that went away (`dcb schema policy | head -1`)
/// is not an error: the rest of the output is dropped and the exit status stands. Any
/// other failure is reported once and makes a successful command exit 1.
pub fn write_stdout(text: &str) {
    let mut out = std::io::stdout().lock();
    match out.write_all(text.as_bytes()).and_then(|()| out.flush()) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => {}
        Err(e) => {
            if !STDOUT_FAILED.swap(true, Ordering::Relaxed) {
                eprintln!("error: cannot write the output: {e}");
            }
        }
    }
}

pub fn overrides(cli: &Cli) -> Overrides {
    Overrides {
        config: cli.config.clone(),
        policies_dir: cli.policies.clone(),
        backup_root: cli.backup_root.clone(),
    }
}

/// Resolve settings or print why not.
pub fn settings(cli: &Cli) -> Result<Settings, Exit> {
    let settings = Settings::resolve(&overrides(cli), &process_env).map_err(|diags| {
        report_config_errors(&diags);
        Exit::Config
    })?;
    crate::redact::remember_uri(&settings.mongodb_uri);
    Ok(settings)
}

/// The target `--target` names, or every target as one.
pub fn read_target(
    settings: &Settings,
    name: Option<&str>,
) -> Result<std::sync::Arc<dyn crate::storage::Target>, Exit> {
    use crate::config::storage::{LOCAL, unknown_target};
    match name {
        None => Ok(settings.target()),
        Some(n) if n == LOCAL || settings.targets.contains_key(n) => Ok(settings.target_named(n)),
        Some(n) => {
            eprintln!(
                "error: --target: {}",
                unknown_target(n, settings.targets.keys())
            );
            Err(Exit::Config)
        }
    }
}

pub fn report_config_errors(diags: &[Diagnostic]) {
    eprint!("{}", diag::render(diags, Format::Human));
    eprintln!("error: the configuration is invalid");
}

/// `Err` with the first of `names` that is not one of `policies`.
pub fn check_names<'a>(
    names: &'a [String],
    policies: &[crate::policy::Policy],
) -> Result<(), &'a str> {
    match names
        .iter()
        .find(|n| !policies.iter().any(|p| &p.name == *n))
    {
        Some(n) => Err(n),
        None => Ok(()),
    }
}

/// Load the policies folder, every policy, once each of `names` is known to be one.
/// Problems are printed (`invalid` says what an invalid folder means for the command);
/// the error is the exit status to return.
pub fn load_policies(
    settings: &Settings,
    names: &[String],
    invalid: &str,
) -> Result<Vec<crate::policy::Policy>, Exit> {
    let set = crate::policy::load::load_dir(&settings.policies_dir, &settings.policy_defaults());
    if set.has_errors() {
        eprint!("{}", diag::render(&set.diagnostics, Format::Human));
        eprintln!("error: the policies are invalid; {invalid}");
        return Err(Exit::Config);
    }
    if let Err(name) = check_names(names, &set.policies) {
        eprintln!(
            "error: no policy named `{name}` in {}",
            settings.policies_dir.display()
        );
        return Err(Exit::Config);
    }
    Ok(set.policies)
}

/// Load the policies folder, keep the named policies (every one when `names` is
/// empty; only enabled ones when `enabled_only`), and compile them. Problems are
/// printed; the error is the exit status to return.
pub fn load_plans(
    settings: &Settings,
    names: &[String],
    enabled_only: bool,
) -> Result<Vec<crate::plan::PolicyPlan>, Exit> {
    let mut policies = load_policies(settings, names, "run `dcb validate` for details")?;
    policies
        .retain(|p| (names.is_empty() || names.contains(&p.name)) && (p.enabled || !enabled_only));
    crate::plan::compile(&policies, settings).map_err(|errors| {
        for e in errors {
            eprintln!("error: {e}");
        }
        Exit::Config
    })
}

/// A progress style from `template`, with `{rate}`: items per second for people
/// (`899/s`, not `899.26847786449798/s`).
pub fn progress_style(template: &str) -> Option<indicatif::ProgressStyle> {
    let style = indicatif::ProgressStyle::with_template(template).ok()?;
    Some(style.with_key(
        "rate",
        |s: &indicatif::ProgressState, w: &mut dyn std::fmt::Write| {
            let _ = w.write_str(&crate::human::rate(s.per_sec()));
        },
    ))
}

pub fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("the tokio runtime starts")
}

pub fn dispatch(cli: &Cli) -> Exit {
    // Commands that write set up their own logging (to a file under the backup root).
    if !matches!(
        cli.command,
        Command::Run(_) | Command::Prune(_) | Command::Serve(_) | Command::Restore(_)
    ) {
        crate::logging::init_stderr(cli.verbose, false);
    }
    let exit = match &cli.command {
        Command::Validate(args) => validate::run(cli, args),
        Command::Schema(args) => schema::run(args),
        Command::Plan(args) => plan::run(cli, args),
        Command::Run(args) => run::run(cli, args),
        Command::Prune(args) => prune::run(cli, args),
        Command::Serve(args) => serve::run(cli, args),
        Command::Status(args) => status::run(cli, args),
        Command::Stop(args) => stop::run(cli, args),
        Command::List(args) => list::run(cli, args),
        Command::Verify(args) => verify::run(cli, args),
        Command::Restore(args) => restore::run(cli, args),
        Command::Config(args) => config::run(cli, args),
        Command::Drill(args) => drill::run(cli, args),
    };
    if exit == Exit::Ok && STDOUT_FAILED.load(Ordering::Relaxed) {
        Exit::Failed
    } else {
        exit
    }
}
