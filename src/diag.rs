//! Diagnostics: one problem in one file at one place, and the three ways to show them.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use serde::Serialize;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    Error,
    Warning,
}

/// Stable, kebab-case identifiers of every kind of problem; CI scripts may match on them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Code {
    IoError,
    YamlSyntax,
    DuplicateKey,
    UnknownField,
    MissingField,
    InvalidType,
    InvalidValue,
    InvalidName,
    NameMismatch,
    InvalidCron,
    InvalidTimezone,
    InvalidDuration,
    InvalidCollectionName,
    InvalidDatabaseName,
    UnsetVariable,
    DuplicatePolicy,
    DuplicateCollection,
    CaseCollision,
    CollectionInSeveralPolicies,
    ShortRetention,
    NoPolicies,
    DatabaseUnreachable,
    MissingCollection,
    MissingDatabase,
    UnindexedTimeField,
    UncoveredCollection,
}

impl Code {
    pub fn as_str(self) -> &'static str {
        match self {
            Code::IoError => "io-error",
            Code::YamlSyntax => "yaml-syntax",
            Code::DuplicateKey => "duplicate-key",
            Code::UnknownField => "unknown-field",
            Code::MissingField => "missing-field",
            Code::InvalidType => "invalid-type",
            Code::InvalidValue => "invalid-value",
            Code::InvalidName => "invalid-name",
            Code::NameMismatch => "name-mismatch",
            Code::InvalidCron => "invalid-cron",
            Code::InvalidTimezone => "invalid-timezone",
            Code::InvalidDuration => "invalid-duration",
            Code::InvalidCollectionName => "invalid-collection-name",
            Code::InvalidDatabaseName => "invalid-database-name",
            Code::UnsetVariable => "unset-variable",
            Code::DuplicatePolicy => "duplicate-policy",
            Code::DuplicateCollection => "duplicate-collection",
            Code::CaseCollision => "case-collision",
            Code::CollectionInSeveralPolicies => "collection-in-several-policies",
            Code::ShortRetention => "short-retention",
            Code::NoPolicies => "no-policies",
            Code::DatabaseUnreachable => "database-unreachable",
            Code::MissingCollection => "missing-collection",
            Code::MissingDatabase => "missing-database",
            Code::UnindexedTimeField => "unindexed-time-field",
            Code::UncoveredCollection => "uncovered-collection",
        }
    }
}

/// A place in a source file: 1-based line and column (columns count characters).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Pos {
    pub line: usize,
    pub column: usize,
}

impl Pos {
    pub const START: Pos = Pos { line: 1, column: 1 };
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Diagnostic {
    pub severity: Severity,
    pub code: Code,
    pub file: PathBuf,
    #[serde(flatten)]
    pub pos: Pos,
    pub message: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hint: Option<String>,
    /// The offending source line, for the human renderer.
    #[serde(skip)]
    pub snippet: Option<String>,
}

impl Diagnostic {
    pub fn error(code: Code, file: &Path, pos: Pos, message: impl Into<String>) -> Self {
        Diagnostic {
            severity: Severity::Error,
            code,
            file: file.to_path_buf(),
            pos,
            message: shown(message.into()),
            hint: None,
            snippet: None,
        }
    }

    pub fn warning(code: Code, file: &Path, pos: Pos, message: impl Into<String>) -> Self {
        Diagnostic {
            severity: Severity::Warning,
            ..Diagnostic::error(code, file, pos, message)
        }
    }

    pub fn with_hint(mut self, hint: impl Into<String>) -> Self {
        self.hint = Some(shown(hint.into()));
        self
    }

    pub fn is_error(&self) -> bool {
        self.severity == Severity::Error
    }

    /// Attach the source line the diagnostic points at, its credentials hidden (the
    /// line is quoted as written: a password or key in it would be printed).
    pub fn with_source(mut self, source: &str) -> Self {
        self.snippet = source_lines(source)
            .nth(self.pos.line.saturating_sub(1))
            .map(crate::redact::source_line);
        self
    }
}

/// Text as a diagnostic may show it: remembered secrets and URI passwords hidden.
fn shown(text: String) -> String {
    crate::redact::uris(&crate::redact::scrub(&text)).into_owned()
}

/// Lines as YAML counts them: `\r\n`, `\n` and a lone `\r` all end a line.
pub fn source_lines(source: &str) -> impl Iterator<Item = &str> {
    let mut rest = Some(source);
    std::iter::from_fn(move || {
        let s = rest?;
        match s.find(['\r', '\n']) {
            Some(i) => {
                let skip = if s[i..].starts_with("\r\n") { 2 } else { 1 };
                rest = Some(&s[i + skip..]).filter(|r| !r.is_empty());
                Some(&s[..i])
            }
            None => {
                rest = None;
                (!s.is_empty()).then_some(s)
            }
        }
    })
}

/// By file, then position (an error before a warning at one place), so output reads
/// top to bottom and is stable.
pub fn sort(diags: &mut [Diagnostic]) {
    diags.sort_by(|a, b| {
        (
            &a.file,
            a.pos.line,
            a.pos.column,
            a.severity,
            a.code.as_str(),
        )
            .cmp(&(
                &b.file,
                b.pos.line,
                b.pos.column,
                b.severity,
                b.code.as_str(),
            ))
    });
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    Human,
    Json,
    Github,
}

pub fn render(diags: &[Diagnostic], format: Format) -> String {
    match format {
        Format::Human => render_human(diags),
        Format::Json => render_json(diags),
        Format::Github => render_github(diags),
    }
}

fn render_human(diags: &[Diagnostic]) -> String {
    let mut out = String::new();
    for d in diags {
        let label = match d.severity {
            Severity::Error => "error",
            Severity::Warning => "warning",
        };
        let _ = writeln!(out, "{label}[{}]: {}", d.code.as_str(), d.message);
        let _ = writeln!(
            out,
            "  --> {}:{}:{}",
            d.file.display(),
            d.pos.line,
            d.pos.column
        );
        if let Some(line) = &d.snippet {
            let gutter = d.pos.line.to_string();
            let pad = " ".repeat(gutter.len());
            let caret_pad: String = line
                .chars()
                .take(d.pos.column.saturating_sub(1))
                .map(|c| if c == '\t' { '\t' } else { ' ' })
                .collect();
            let _ = writeln!(out, " {pad} |");
            let _ = writeln!(out, " {gutter} | {line}");
            let _ = writeln!(out, " {pad} | {caret_pad}^");
        }
        if let Some(hint) = &d.hint {
            let _ = writeln!(out, "  = hint: {hint}");
        }
        out.push('\n');
    }
    out
}

fn render_json(diags: &[Diagnostic]) -> String {
    let (errors, warnings) = counts(diags);
    let doc = serde_json::json!({
        "errors": errors,
        "warnings": warnings,
        "diagnostics": diags,
    });
    let mut s = serde_json::to_string_pretty(&doc).unwrap_or_default();
    s.push('\n');
    s
}

/// GitHub Actions workflow commands: `::error file=…,line=…,col=…,title=…::message`.
fn render_github(diags: &[Diagnostic]) -> String {
    let mut out = String::new();
    for d in diags {
        let level = match d.severity {
            Severity::Error => "error",
            Severity::Warning => "warning",
        };
        let mut message = d.message.clone();
        if let Some(hint) = &d.hint {
            message.push_str("\nhint: ");
            message.push_str(hint);
        }
        let _ = writeln!(
            out,
            "::{level} file={},line={},col={},title={}::{}",
            escape_property(&d.file.to_string_lossy().replace('\\', "/")),
            d.pos.line,
            d.pos.column,
            escape_property(&format!("dcb {}", d.code.as_str())),
            escape_data(&message)
        );
    }
    out
}

fn escape_data(s: &str) -> String {
    s.replace('%', "%25")
        .replace('\r', "%0D")
        .replace('\n', "%0A")
}

fn escape_property(s: &str) -> String {
    escape_data(s).replace(':', "%3A").replace(',', "%2C")
}

pub fn counts(diags: &[Diagnostic]) -> (usize, usize) {
    let errors = diags.iter().filter(|d| d.is_error()).count();
    (errors, diags.len() - errors)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Diagnostic {
        Diagnostic::error(
            Code::InvalidCron,
            Path::new("policies/hot.yaml"),
            Pos {
                line: 3,
                column: 11,
            },
            "bad, really: 100%",
        )
        .with_hint("five fields\nor six")
        .with_source("name: hot\ndescription: x\nschedule: \"0 */1 * *\"\n")
    }

    // Lone CR, CRLF and LF all end lines, as in YAML.
    #[test]
    fn lines_split_like_yaml() {
        let lines: Vec<&str> = source_lines("a\rb\r\nc\nd").collect();
        assert_eq!(lines, ["a", "b", "c", "d"]);
        assert_eq!(source_lines("").count(), 0);
        assert_eq!(source_lines("x\n").collect::<Vec<_>>(), ["x"]);
    }

    // GitHub annotations escape the characters that would break the command syntax.
    #[test]
    fn github_escapes_properties_and_data() {
        let out = render(&[sample()], Format::Github);
        assert_eq!(
            out,
            "::error file=policies/hot.yaml,line=3,col=11,title=dcb invalid-cron::bad, really: 100%25%0Ahint: five fields%0Aor six\n"
        );
    }

    // The human form shows the code, the place, the line and a caret under the column.
    #[test]
    fn human_points_at_the_column() {
        let out = render(&[sample()], Format::Human);
        assert!(out.contains("error[invalid-cron]: bad, really: 100%"));
        assert!(out.contains("--> policies/hot.yaml:3:11"));
        assert!(out.contains(" 3 | schedule: \"0 */1 * *\"\n   |           ^\n"));
        assert!(out.contains("= hint: five fields"));
    }

    // Diagnostics read in file order, top to bottom; at one place errors come first.
    #[test]
    fn sorts_by_file_then_position() {
        let at = |file: &str, line, warning: bool| {
            let pos = Pos { line, column: 1 };
            if warning {
                Diagnostic::warning(Code::ShortRetention, Path::new(file), pos, "w")
            } else {
                Diagnostic::error(Code::InvalidCron, Path::new(file), pos, "e")
            }
        };
        let mut diags = vec![
            at("b.yaml", 1, false),
            at("a.yaml", 9, false),
            at("a.yaml", 2, true),
            at("a.yaml", 2, false),
        ];
        sort(&mut diags);
        let order: Vec<(String, usize, Severity)> = diags
            .iter()
            .map(|d| (d.file.display().to_string(), d.pos.line, d.severity))
            .collect();
        assert_eq!(
            order,
            [
                ("a.yaml".into(), 2, Severity::Error),
                ("a.yaml".into(), 2, Severity::Warning),
                ("a.yaml".into(), 9, Severity::Error),
                ("b.yaml".into(), 1, Severity::Error),
            ]
        );
    }

    // JSON output carries counts and every field a tool needs.
    #[test]
    fn json_has_counts_and_fields() {
        let w = Diagnostic::warning(Code::ShortRetention, Path::new("a.yaml"), Pos::START, "w");
        let out: serde_json::Value =
            serde_json::from_str(&render(&[sample(), w], Format::Json)).unwrap();
        assert_eq!(out["errors"], 1);
        assert_eq!(out["warnings"], 1);
        assert_eq!(out["diagnostics"][0]["code"], "invalid-cron");
        assert_eq!(out["diagnostics"][0]["line"], 3);
        assert_eq!(out["diagnostics"][0]["column"], 11);
        assert_eq!(out["diagnostics"][1]["severity"], "warning");
    }
}
