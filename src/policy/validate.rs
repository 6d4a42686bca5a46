//! Raw policy file → [`Policy`] plus diagnostics: the checks a schema cannot express.

use std::path::Path;

use chrono_tz::Tz;
use serde_json::Value;

use super::{CollectionEntry, CollectionSpec, Initial, Policy, PolicyFile, WindowSpec};
use crate::diag::{Code, Diagnostic, Severity};
use crate::document::{Document, did_you_mean};
use crate::duration::HumanDuration;
use crate::names;
use crate::schedule::Schedule;
use crate::storage;

/// Values a policy inherits when it does not set them.
#[derive(Debug, Clone)]
pub struct Defaults {
    pub timezone: Tz,
    pub concurrency: usize,
    /// The target names dcb.yaml defines (`local` among them).
    pub targets: Vec<String>,
}

/// Validate one policy document. Returns the policy only when it has no errors.
pub fn validate(doc: &Document, defaults: &Defaults) -> (Option<Policy>, Vec<Diagnostic>) {
    let mut diags = doc.duplicate_key_diags();
    diags.extend(doc.schema_diags(super::schema(), super::validator()));
    diags.extend(semantic_checks(doc));
    diags.extend(target_checks(doc, &defaults.targets));
    dedupe(&mut diags);

    if diags.iter().any(Diagnostic::is_error) {
        return (None, diags);
    }
    let raw: PolicyFile = match doc.deserialize() {
        Ok(raw) => raw,
        Err(d) => {
            diags.push(d);
            return (None, diags);
        }
    };
    if let Some(Err(problems)) = raw.drill.as_ref().map(super::drill::DrillFile::parse) {
        for (p, msg) in problems {
            diags.push(doc.at(
                Severity::Error,
                Code::InvalidValue,
                &format!("/drill{p}"),
                msg,
            ));
        }
        return (None, diags);
    }
    match build(doc.path.as_path(), raw, defaults) {
        Ok(policy) => {
            diags.extend(warnings(doc, &policy));
            (Some(policy), diags)
        }
        Err(msg) => {
            diags.push(doc.at(Severity::Error, Code::InvalidValue, "", msg));
            (None, diags)
        }
    }
}

/// Every target a policy names must be one dcb.yaml defines (unless dcb.yaml could not
/// be read: `known` is empty).
fn target_checks(doc: &Document, known: &[String]) -> Vec<Diagnostic> {
    let Some(items) = doc.value.pointer("/targets").and_then(Value::as_array) else {
        return Vec::new();
    };
    if known.is_empty() {
        return Vec::new();
    }
    let mut out = Vec::new();
    for (i, name) in items.iter().enumerate() {
        let Some(name) = name.as_str() else { continue };
        if !known.iter().any(|k| k == name) {
            let mut d = doc.at(
                Severity::Error,
                Code::InvalidValue,
                &format!("/targets/{i}"),
                format!(
                    "no target `{name}`; the targets are {}",
                    known
                        .iter()
                        .map(|k| format!("`{k}`"))
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            );
            if let Some(s) = crate::document::did_you_mean(name, known) {
                d = d.with_hint(format!(
                    "did you mean `{s}`? Targets are defined in dcb.yaml"
                ));
            } else {
                d = d.with_hint("define it under `targets:` in dcb.yaml");
            }
            out.push(d);
        }
    }
    out
}

/// Checks on individual values, run even when the schema found problems elsewhere, so
/// that every problem of a file is reported at once.
fn semantic_checks(doc: &Document) -> Vec<Diagnostic> {
    let v = &doc.value;
    let mut out = Vec::new();
    let err = |code, pointer: &str, msg: String| doc.at(Severity::Error, code, pointer, msg);

    // An invalid name is reported by the schema; comparing it to the file adds nothing.
    if let Some(name) = v.pointer("/name").and_then(Value::as_str).filter(|n| {
        !n.is_empty()
            && n.bytes()
                .all(|b| matches!(b, b'a'..=b'z' | b'0'..=b'9' | b'_' | b'-'))
    }) {
        if names::is_reserved(name) {
            out.push(
                err(
                    Code::InvalidName,
                    "/name",
                    format!("policy name `{name}` is a reserved device name on Windows"),
                )
                .with_hint("choose another name: its archives go to a folder of that name"),
            );
        }
        let stem = file_stem(&doc.path);
        if stem.as_deref() != Some(name) {
            out.push(
                err(
                    Code::NameMismatch,
                    "/name",
                    format!(
                        "policy name `{name}` does not match its file name `{}`",
                        doc.path.file_name().unwrap_or_default().to_string_lossy()
                    ),
                )
                .with_hint(format!(
                    "rename the file to `{name}.yaml` or set `name: {}`",
                    stem.unwrap_or_default()
                )),
            );
        }
    }
    if let Some(pattern) = v.pointer("/schedule").and_then(Value::as_str)
        && let Err(e) = Schedule::parse(pattern)
    {
        out.push(
            err(
                Code::InvalidCron,
                "/schedule",
                format!("invalid cron expression `{pattern}`: {e}"),
            )
            .with_hint("e.g. `0 */6 * * *` (every 6 hours) or `*/30 * * * * *` (every 30 seconds)"),
        );
    }
    if let Some(tz) = v.pointer("/timezone").and_then(Value::as_str)
        && let Err(d) = parse_timezone(tz)
    {
        out.push(err(Code::InvalidTimezone, "/timezone", d.message).with_hint(d.hint));
    }
    if let Some(db) = v.pointer("/database").and_then(Value::as_str)
        && let Err(e) = names::check_database(db)
    {
        out.push(err(Code::InvalidDatabaseName, "/database", e.into()));
    }
    if let Some(f) = v.pointer("/timeField").and_then(Value::as_str)
        && let Err(e) = names::check_field(f)
    {
        out.push(err(Code::InvalidValue, "/timeField", e.into()));
    }
    if let Some(list) = v
        .pointer("/encryption/recipients")
        .and_then(Value::as_array)
    {
        for (i, r) in list.iter().enumerate() {
            if let Some(r) = r.as_str()
                && let Err(e) = crate::crypto::parse_recipients(&[r.to_string()])
            {
                out.push(
                    err(
                        Code::InvalidValue,
                        &format!("/encryption/recipients/{i}"),
                        e.into(),
                    )
                    .with_hint("the public key printed by `age-keygen -y KEYFILE`"),
                );
            }
        }
    }
    for pointer in [
        "/retention",
        "/window/settle",
        "/window/overlap",
        "/window/initial",
    ] {
        if let Some(s) = v.pointer(pointer).and_then(Value::as_str) {
            let parsed = if pointer == "/window/initial" {
                s.parse::<Initial>().map(|_| ())
            } else {
                s.parse::<HumanDuration>().map(|_| ())
            };
            if let Err(e) = parsed {
                out.push(err(Code::InvalidDuration, pointer, e.to_string()));
            }
        }
    }
    if let Some(ret) = v.pointer("/retention").and_then(Value::as_str)
        && ret.parse::<HumanDuration>().is_ok_and(|d| d.0.is_zero())
    {
        out.push(
            err(
                Code::InvalidDuration,
                "/retention",
                "retention must be longer than zero".into(),
            )
            .with_hint("keep archives at least as long as two schedule intervals"),
        );
    }

    if let Some(items) = v.pointer("/collections").and_then(Value::as_array) {
        // Keyed by the case-folded name: the first item of each, and its spelling.
        let mut seen = std::collections::HashMap::new();
        for (i, item) in items.iter().enumerate() {
            let (name, pointer) = match item {
                Value::String(s) => (s.as_str(), format!("/collections/{i}")),
                Value::Object(m) => match m.get("name").and_then(Value::as_str) {
                    Some(s) => (s, format!("/collections/{i}/name")),
                    None => continue,
                },
                _ => continue,
            };
            let checked = if names::is_pattern(name) {
                names::check_pattern(name).map(|_| ())
            } else {
                names::check_collection(name)
            };
            if let Err(e) = checked {
                out.push(err(Code::InvalidCollectionName, &pointer, e.into()));
                continue;
            }
            let (first, other) = seen
                .entry(name.to_lowercase())
                .or_insert((i, name.to_string()))
                .clone();
            if first != i {
                let (code, message, hint) = if other == name {
                    (
                        Code::DuplicateCollection,
                        format!(
                            "collection `{name}` is listed twice (also item {})",
                            first + 1
                        ),
                        "list each collection once",
                    )
                } else {
                    // Their archives share a folder and their members one extraction
                    // folder: on Windows and macOS one would overwrite the other.
                    (
                        Code::CaseCollision,
                        format!(
                            "collection `{name}` differs from `{other}` (item {}) only in case",
                            first + 1
                        ),
                        "back them up in separate policies: in one, their archives and \
                         extracted files collide on case-insensitive file systems",
                    )
                };
                out.push(err(code, &pointer, message).with_hint(hint));
            }
            if let Some(f) = item.get("timeField").and_then(Value::as_str)
                && let Err(e) = names::check_field(f)
            {
                out.push(err(
                    Code::InvalidValue,
                    &format!("/collections/{i}/timeField"),
                    e.into(),
                ));
            }
        }
    }
    out
}

/// Checks that need the database a policy backs up (its own, dcb.yaml's or the
/// connection URI's): the names that become files must fit a file system.
pub fn database_checks(doc: &Document, policy: &Policy, database: &str) -> Vec<Diagnostic> {
    // The policy's own name and dcb.yaml's are checked where they are written; one
    // from the URI is checked only here.
    if policy.database.is_none()
        && let Err(e) = names::check_database(database)
    {
        return vec![
            doc.at(
                Severity::Error,
                Code::InvalidDatabaseName,
                "/name",
                format!("policy `{}` inherits an invalid database: {e}", policy.name),
            )
            .with_hint(
                "fix the database in dcb.yaml or the connection URI, or set `database:` here",
            ),
        ];
    }
    let mut out = Vec::new();
    for (i, c) in policy.collections.iter().enumerate() {
        let member = storage::names::manifest_member(&policy.name, database, &c.name);
        let longest = storage::longest_file_name(database, &c.name).max(member.len());
        if longest > storage::MAX_FILE_NAME {
            out.push(
                doc.at(
                    Severity::Error,
                    Code::InvalidCollectionName,
                    &collection_pointer(doc, i),
                    format!(
                        "`{database}.{}` makes file names of {longest} bytes; file systems allow {}",
                        c.name,
                        storage::MAX_FILE_NAME
                    ),
                )
                .with_hint(format!(
                    "shorten the collection name (or the database or policy name) by {}",
                    crate::human::plural(longest - storage::MAX_FILE_NAME, "byte")
                )),
            );
        }
    }
    out
}

/// The pointer of collection entry `i`: its `name` when written as an object.
pub fn collection_pointer(doc: &Document, i: usize) -> String {
    let item = format!("/collections/{i}");
    if doc.value.pointer(&format!("{item}/name")).is_some() {
        format!("{item}/name")
    } else {
        item
    }
}

/// Warnings about a policy that is valid but probably not what its author wants.
fn warnings(doc: &Document, policy: &Policy) -> Vec<Diagnostic> {
    let mut out = Vec::new();
    let now = chrono::Utc::now().with_timezone(&policy.timezone);
    if let Some(interval) = policy.schedule.longest_interval(&now)
        && policy.retention.0 < interval * 2
    {
        out.push(
            doc.at(
                Severity::Warning,
                Code::ShortRetention,
                "/retention",
                format!(
                    "retention {} is shorter than two schedule intervals ({} each)",
                    policy.retention,
                    HumanDuration(interval)
                ),
            )
            .with_hint(format!(
                "keep archives at least {} so one failed run never leaves a gap",
                HumanDuration(interval * 2)
            )),
        );
    }
    out
}

/// Convert a schema-valid raw file into the engine's policy.
fn build(path: &Path, raw: PolicyFile, defaults: &Defaults) -> Result<Policy, String> {
    let timezone = match &raw.timezone {
        Some(tz) => parse_timezone(tz).map_err(|d| d.message)?,
        None => defaults.timezone,
    };
    let dur = |s: &str| s.parse::<HumanDuration>().map_err(|e| e.to_string());
    let full = |s: Option<&String>| -> Result<Option<HumanDuration>, String> {
        match s.map(String::as_str) {
            None | Some("never") => Ok(None),
            Some(d) => dur(d).map(Some),
        }
    };
    let policy_full = full(raw.full.as_ref())?;
    let policy_capture = raw.capture_updates.unwrap_or(true);
    let (patterns, collections): (Vec<_>, Vec<_>) = raw
        .collections
        .iter()
        .partition(|c| names::is_pattern(c.name()));
    let spec = |c: &CollectionEntry| -> Result<CollectionSpec, String> {
        match c {
            CollectionEntry::Name(n) => Ok(CollectionSpec {
                name: n.clone(),
                time_field: raw.time_field.clone(),
                mode: raw.mode,
                full: policy_full,
                capture_updates: policy_capture,
            }),
            CollectionEntry::Detailed(d) => Ok(CollectionSpec {
                name: d.name.clone(),
                time_field: d
                    .time_field
                    .clone()
                    .unwrap_or_else(|| raw.time_field.clone()),
                mode: d.mode.unwrap_or(raw.mode),
                full: match &d.full {
                    Some(f) => full(Some(f))?,
                    None => policy_full,
                },
                capture_updates: d.capture_updates.unwrap_or(policy_capture),
            }),
        }
    };
    let collections = collections
        .into_iter()
        .map(spec)
        .collect::<Result<Vec<_>, String>>()?;
    let patterns = patterns
        .into_iter()
        .map(spec)
        .collect::<Result<Vec<_>, String>>()?;
    Ok(Policy {
        name: raw.name,
        description: raw.description,
        file: path.to_path_buf(),
        schedule: Schedule::parse(&raw.schedule)?,
        timezone,
        database: raw.database,
        collections,
        patterns,
        window: WindowSpec {
            initial: raw
                .window
                .initial
                .parse()
                .map_err(|e: crate::duration::DurationError| e.to_string())?,
            settle: dur(&raw.window.settle)?,
            overlap: dur(&raw.window.overlap)?,
        },
        retention: dur(&raw.retention)?,
        keep_last: raw.keep_last,
        compression_level: raw.compression.level,
        concurrency: raw.concurrency.map_or(defaults.concurrency, |c| c as usize),
        enabled: raw.enabled,
        recipients: raw.encryption.as_ref().map(|e| e.recipients.clone()),
        targets: raw.targets.clone(),
        drill: match &raw.drill {
            Some(d) => d
                .parse()
                .map_err(|p| p.into_iter().map(|(_, m)| m).collect::<Vec<_>>().join("; "))?,
            None => Default::default(),
        },
    })
}

/// A name that is no IANA time zone, with a hint (the nearest name, if any).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct UnknownTimezone {
    pub message: String,
    pub hint: String,
}

/// Parse an IANA zone name.
pub fn parse_timezone(name: &str) -> Result<Tz, UnknownTimezone> {
    name.parse::<Tz>().map_err(|_| {
        let candidates: Vec<String> = chrono_tz::TZ_VARIANTS
            .iter()
            .map(|t| t.name().to_string())
            .collect();
        let hint = match did_you_mean(name, &candidates) {
            Some(s) => format!("did you mean `{s}`?"),
            None => "use an IANA time zone name such as `Asia/Shanghai` or `UTC`".into(),
        };
        UnknownTimezone {
            message: format!("unknown time zone `{name}`"),
            hint,
        }
    })
}

fn file_stem(path: &Path) -> Option<String> {
    path.file_stem().map(|s| s.to_string_lossy().into_owned())
}

/// One diagnostic per code and place: the schema and the semantic checks may both see
/// the same bad value.
fn dedupe(diags: &mut Vec<Diagnostic>) {
    let mut seen = std::collections::HashSet::new();
    diags.retain(|d| seen.insert((d.code, d.pos.line, d.pos.column)));
}
