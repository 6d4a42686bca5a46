//! `dcb config`: the effective configuration and every policy resolved, each value
//! with its origin, secrets shown as `***`.

use std::fmt::Write as _;

use serde_json::Value;

use super::{Exit, overrides, report_config_errors};
use crate::cli::{Cli, ConfigArgs};
use crate::config::origins::{self, Entry, FlagSources, Given, PolicyView};
use crate::config::process_env;
use crate::diag::{self, Format};

pub fn run(cli: &Cli, args: &ConfigArgs) -> Exit {
    let effective = match origins::effective(&overrides(cli), &flag_sources(cli), &process_env) {
        Ok(e) => e,
        Err(diags) => {
            report_config_errors(&diags);
            return Exit::Config;
        }
    };
    let settings = &effective.settings;
    crate::redact::remember_uri(&settings.mongodb_uri);
    let mut exit = Exit::Ok;
    // The policies as `dcb plan` loads them; their problems are reported as it
    // reports them, and the valid ones are still shown.
    let set = crate::policy::load::load_dir(&settings.policies_dir, &settings.policy_defaults());
    if set.has_errors() {
        eprint!("{}", diag::render(&set.diagnostics, Format::Human));
        eprintln!("error: the policies are invalid; run `dcb validate` for details");
        exit = Exit::Config;
    }
    for policy in &set.policies {
        if let Err(e) = settings.database_for(policy) {
            eprintln!("error: {e}");
            exit = Exit::Config;
        }
    }
    let policies = origins::policies(settings, &effective.config, &set.policies);
    let text = if args.json {
        let json = origins::to_json(&effective.config, &policies);
        format!(
            "{}\n",
            serde_json::to_string_pretty(&json).unwrap_or_default()
        )
    } else {
        render(&effective.config, &policies)
    };
    // Whatever was hidden above is also scrubbed from anywhere else it might appear.
    out!("{}", crate::redact::scrub(&text));
    exit
}

/// Whether each global flag came from the command line or its environment variable:
/// clap knows, but the parsed [`Cli`] does not keep it, so the arguments are read
/// again.
fn flag_sources(cli: &Cli) -> FlagSources {
    use clap::CommandFactory as _;
    use clap::parser::ValueSource;
    let matches = Cli::command()
        .try_get_matches_from(std::env::args_os())
        .ok();
    let of = |id: &str, value: Option<&std::path::Path>, var: &str| {
        value?;
        let source = matches.as_ref().and_then(|m| m.value_source(id));
        match source {
            Some(ValueSource::CommandLine) => Some(Given::Flag),
            Some(ValueSource::EnvVariable) => Some(Given::Env),
            // Not told: the variable's value is the flag's only if no flag was given.
            _ => match process_env(var) {
                Some(v) if value == Some(std::path::Path::new(&v)) => Some(Given::Env),
                _ => Some(Given::Flag),
            },
        }
    };
    FlagSources {
        config: of("config", cli.config.as_deref(), "DCB_CONFIG"),
        policies_dir: of("policies_dir", cli.policies.as_deref(), "DCB_POLICIES_DIR"),
        backup_root: of("backup_root", cli.backup_root.as_deref(), "DCB_BACKUP_ROOT"),
    }
}

/// A value as people read it.
fn show(value: &Value) -> String {
    match value {
        Value::Null => "(not set)".to_string(),
        Value::String(s) => s.clone(),
        Value::Array(items) if items.is_empty() => "(none)".to_string(),
        Value::Array(items) => items.iter().map(show).collect::<Vec<_>>().join(", "),
        other => other.to_string(),
    }
}

/// Values longer than this push their origin out of the column rather than widen it.
const MAX_VALUE_WIDTH: usize = 48;

enum Row<'a> {
    Heading(String),
    Entry(usize, &'a Entry),
    Blank,
}

fn render(config: &[Entry], policies: &[PolicyView]) -> String {
    let mut rows = vec![Row::Heading("configuration".to_string())];
    rows.extend(config.iter().map(|e| Row::Entry(2, e)));
    for p in policies {
        rows.push(Row::Blank);
        rows.push(Row::Heading(format!(
            "policy {}  ({})",
            p.name,
            p.file.display()
        )));
        rows.extend(p.settings.iter().map(|e| Row::Entry(2, e)));
        for c in &p.collections {
            let kind = if c.pattern { "pattern" } else { "collection" };
            rows.push(Row::Heading(format!("  {kind} {}", c.name)));
            rows.extend(c.settings.iter().map(|e| Row::Entry(4, e)));
        }
    }
    let width = |s: &str| s.chars().count();
    let (mut kw, mut vw) = (0, 0);
    for row in &rows {
        if let Row::Entry(indent, e) = row {
            kw = kw.max(indent + width(&e.key));
            vw = vw.max(width(&show(&e.value)).min(MAX_VALUE_WIDTH));
        }
    }
    let mut out = String::new();
    for row in &rows {
        match row {
            Row::Heading(h) => {
                let _ = writeln!(out, "{h}");
            }
            Row::Blank => out.push('\n'),
            Row::Entry(indent, e) => {
                let key = format!("{:indent$}{}", "", e.key);
                let value = show(&e.value);
                let kpad = kw.saturating_sub(width(&key));
                let vpad = vw.saturating_sub(width(&value));
                let _ = writeln!(out, "{key}{:kpad$}  {value}{:vpad$}  {}", "", "", e.origin);
            }
        }
    }
    out
}
