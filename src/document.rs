//! A YAML file read for validation: its text, its value as JSON, where each node is,
//! and the mapping of JSON-schema errors to located diagnostics.

use std::io::Read as _;
use std::path::{Path, PathBuf};

use jsonschema::error::{TypeKind, ValidationErrorKind};
use jsonschema::{ValidationError, Validator};
use serde_json::Value;

use crate::diag::{Code, Diagnostic, Pos, Severity};
use crate::yaml::{SourceMap, escape_token};

/// Policy and config files are small; anything larger is a mistake, not a policy.
const MAX_FILE_BYTES: u64 = 1 << 20;

pub struct Document {
    pub path: PathBuf,
    pub source: String,
    pub value: Value,
    pub map: SourceMap,
}

impl Document {
    /// Read and parse a file. Problems come back as located diagnostics.
    pub fn read(path: &Path) -> Result<Document, Diagnostic> {
        let io_err = |msg: String| Diagnostic::error(Code::IoError, path, Pos::START, msg);
        let cannot = |e: std::io::Error| io_err(format!("cannot read file: {e}"));
        let file = std::fs::File::open(path).map_err(cannot)?;
        let len = file.metadata().map_err(cannot)?.len();
        let limit = format!("policy and config files are limited to {MAX_FILE_BYTES} bytes");
        if len > MAX_FILE_BYTES {
            return Err(io_err(format!("file is {len} bytes; {limit}")));
        }
        // Devices and pipes report no length (`/dev/zero`, a FIFO): read one byte past
        // the limit, never more.
        let mut bytes = Vec::new();
        file.take(MAX_FILE_BYTES + 1)
            .read_to_end(&mut bytes)
            .map_err(cannot)?;
        if bytes.len() as u64 > MAX_FILE_BYTES {
            return Err(io_err(format!("file is larger than allowed; {limit}")));
        }
        let source = String::from_utf8(bytes).map_err(|e| not_utf8(path, &e))?;
        Document::parse(path, source)
    }

    pub fn parse(path: &Path, source: String) -> Result<Document, Diagnostic> {
        let value: Value = match serde_yaml::from_str(&source) {
            Ok(v) => v,
            Err(e) => return Err(yaml_error(path, &source, &e)),
        };
        let map = SourceMap::build(&source);
        Ok(Document {
            path: path.to_path_buf(),
            source,
            value,
            map,
        })
    }

    /// The document as its raw type. A value the schema accepts but the type cannot
    /// hold (`keepLast: 1.0`) is reported at its node, not at the top of the file.
    pub fn deserialize<T: serde::de::DeserializeOwned>(&self) -> Result<T, Diagnostic> {
        serde_path_to_error::deserialize(&self.value).map_err(|e| {
            let pointer = self.existing_pointer(e.path());
            let place = describe_place(&pointer);
            match self.value.pointer(&pointer) {
                Some(Value::Number(n)) if n.is_f64() => self
                    .at(
                        Severity::Error,
                        Code::InvalidType,
                        &pointer,
                        format!("expected a whole number{place}, found {n}"),
                    )
                    .with_hint("write the digits alone, without a decimal point or exponent"),
                _ => self.at(
                    Severity::Error,
                    Code::InvalidValue,
                    &pointer,
                    format!("{}{place}", plain_types(&e.inner().to_string())),
                ),
            }
        })
    }

    /// The JSON pointer of a serde path, cut back to the deepest node that exists.
    fn existing_pointer(&self, path: &serde_path_to_error::Path) -> String {
        use serde_path_to_error::Segment;
        let mut pointer = String::new();
        for segment in path.iter() {
            let token = match segment {
                Segment::Seq { index } => index.to_string(),
                Segment::Map { key } => escape_token(key),
                Segment::Enum { .. } => continue,
                Segment::Unknown => break,
            };
            let next = format!("{pointer}/{token}");
            if self.value.pointer(&next).is_none() {
                break;
            }
            pointer = next;
        }
        pointer
    }

    /// A diagnostic located at the value `pointer` names.
    pub fn at(&self, severity: Severity, code: Code, pointer: &str, msg: String) -> Diagnostic {
        let msg = self.without_secret(pointer, msg);
        self.make(severity, code, self.map.value_pos(pointer), msg)
    }

    /// `msg` without the value at `pointer` when its key holds a credential (messages
    /// quote the offending value, and the value may have come from `${VAR}`).
    fn without_secret(&self, pointer: &str, msg: String) -> String {
        let key = pointer
            .rsplit('/')
            .find(|s| s.parse::<usize>().is_err())
            .map(unescape);
        if !key.is_some_and(|k| crate::redact::is_secret_key(&k)) {
            return msg;
        }
        let text = match self.value.pointer(pointer) {
            Some(Value::String(s)) => s.clone(),
            Some(v @ (Value::Number(_) | Value::Bool(_))) => v.to_string(),
            _ => return msg,
        };
        if text.chars().count() < 3 {
            return msg;
        }
        // The whole value, and the start of it that a shortened quote keeps.
        let start: String = text.chars().take(40).collect();
        msg.replace(&text, "***").replace(&start, "***")
    }

    /// A diagnostic located at the key of the value `pointer` names.
    pub fn at_key(&self, severity: Severity, code: Code, pointer: &str, msg: String) -> Diagnostic {
        self.make(severity, code, self.map.key_pos(pointer), msg)
    }

    fn make(&self, severity: Severity, code: Code, pos: Pos, msg: String) -> Diagnostic {
        let d = match severity {
            Severity::Error => Diagnostic::error(code, &self.path, pos, msg),
            Severity::Warning => Diagnostic::warning(code, &self.path, pos, msg),
        };
        d.with_source(&self.source)
    }

    /// Repeated keys, which YAML forbids and serde would silently merge.
    pub fn duplicate_key_diags(&self) -> Vec<Diagnostic> {
        self.map
            .duplicate_keys
            .iter()
            .map(|(pointer, pos)| {
                let key = pointer.rsplit('/').next().unwrap_or_default();
                self.make(
                    Severity::Error,
                    Code::DuplicateKey,
                    *pos,
                    format!("key `{}` appears twice in the same mapping", unescape(key)),
                )
                .with_hint("remove one of them; YAML keys must be unique")
            })
            .collect()
    }

    /// Validate against a JSON schema; every error becomes a located diagnostic.
    pub fn schema_diags(&self, schema: &Value, validator: &Validator) -> Vec<Diagnostic> {
        let mut out = Vec::new();
        for err in validator.iter_errors(&self.value) {
            self.map_error(schema, &err, &mut out);
        }
        out
    }

    fn map_error(&self, schema: &Value, err: &ValidationError<'_>, out: &mut Vec<Diagnostic>) {
        let pointer = err.instance_path().as_str();
        let instance = err.instance();
        let e = |code, msg| self.at(Severity::Error, code, pointer, msg);
        match err.kind() {
            ValidationErrorKind::AdditionalProperties { unexpected } => {
                let known = known_properties(schema, &self.value, pointer);
                for key in unexpected {
                    let child = format!("{pointer}/{}", escape_token(key));
                    let d = self.at_key(
                        Severity::Error,
                        Code::UnknownField,
                        &child,
                        format!("unknown field `{key}`{}", describe_place(pointer)),
                    );
                    out.push(match did_you_mean(key, &known) {
                        Some(s) => d.with_hint(format!("did you mean `{s}`?")),
                        None if !known.is_empty() => {
                            d.with_hint(format!("expected one of: {}", known.join(", ")))
                        }
                        None => d,
                    });
                }
            }
            ValidationErrorKind::Required { property } => {
                let name = property.as_str().unwrap_or_default();
                out.push(
                    e(
                        Code::MissingField,
                        format!("missing required field `{name}`{}", describe_place(pointer)),
                    )
                    .with_hint(format!("add `{name}:`")),
                );
            }
            ValidationErrorKind::Type { kind } => {
                let expected = match kind {
                    TypeKind::Single(t) => t.to_string(),
                    TypeKind::Multiple(set) => set
                        .iter()
                        .map(|t| t.to_string())
                        .collect::<Vec<_>>()
                        .join(" or "),
                };
                let found = match instance.as_ref() {
                    Value::Null if pointer.is_empty() => "an empty document".to_string(),
                    Value::Null => "nothing (null)".to_string(),
                    other => format!("{} {}", json_type(other), short(other)),
                };
                out.push(e(
                    Code::InvalidType,
                    format!("expected {expected}, found {found}"),
                ));
            }
            ValidationErrorKind::Enum { options } => {
                let choices = options
                    .as_array()
                    .map(|a| a.iter().map(short).collect::<Vec<_>>().join(", "))
                    .unwrap_or_default();
                out.push(
                    e(
                        Code::InvalidValue,
                        format!("{} is not allowed here", short(instance)),
                    )
                    .with_hint(format!("use one of: {choices}")),
                );
            }
            ValidationErrorKind::MinItems { limit } => {
                let place = describe_place(pointer);
                out.push(e(
                    Code::InvalidValue,
                    format!(
                        "needs at least {limit} item{}{place}",
                        if *limit == 1 { "" } else { "s" }
                    ),
                ));
            }
            ValidationErrorKind::Pattern { pattern } => {
                out.push(pattern_diag(e, pattern, instance));
            }
            ValidationErrorKind::AnyOf { context }
            | ValidationErrorKind::OneOfNotValid { context } => {
                match best_branch(context, pointer) {
                    Some(branch) => {
                        for sub in branch {
                            self.map_error(schema, sub, out);
                        }
                    }
                    None => out.push(e(Code::InvalidValue, err.to_string())),
                }
            }
            _ => out.push(e(Code::InvalidValue, err.to_string())),
        }
    }
}

/// The diagnostic for a string that fails a schema pattern: the pattern says what the
/// string was meant to be.
fn pattern_diag(
    e: impl Fn(Code, String) -> Diagnostic,
    pattern: &str,
    instance: &Value,
) -> Diagnostic {
    let shown = short(instance);
    if pattern == crate::duration::PATTERN {
        e(Code::InvalidDuration, format!("{shown} is not a duration")).with_hint(
            "write a number and a unit (ms, s, m, h, d, w), e.g. 90s, 15m, 6h, 7d, 1h30m",
        )
    } else if pattern == crate::duration::INITIAL_PATTERN {
        e(
            Code::InvalidDuration,
            format!("{shown} is not a valid start"),
        )
        .with_hint("use `today`, `all`, or a duration back from now such as `7d`")
    } else if pattern == crate::duration::FULL_PATTERN {
        e(
            Code::InvalidDuration,
            format!("{shown} is not a duration or `never`"),
        )
        .with_hint("use a duration such as `1d` or `7d`, or `never`")
    } else if pattern == crate::names::NAME_PATTERN {
        e(
            Code::InvalidName,
            format!("{shown} is not a valid policy name"),
        )
        .with_hint("use lowercase letters, digits, `-` and `_` only")
    } else {
        e(
            Code::InvalidValue,
            format!("{shown} does not match `{pattern}`"),
        )
    }
}

/// Of the alternatives of an anyOf/oneOf, the one the author most likely meant: the
/// branch whose type matched (no type error at this very node), with the fewest errors.
fn best_branch<'a, 'e>(
    context: &'a [Vec<ValidationError<'e>>],
    pointer: &str,
) -> Option<&'a Vec<ValidationError<'e>>> {
    context
        .iter()
        .filter(|branch| {
            !branch.iter().any(|err| {
                err.instance_path().as_str() == pointer
                    && matches!(err.kind(), ValidationErrorKind::Type { .. })
            })
        })
        .min_by_key(|branch| branch.len())
}

/// The property names the schema allows for the object at `pointer`.
fn known_properties(schema: &Value, instance: &Value, pointer: &str) -> Vec<String> {
    let mut node = resolve(schema, schema);
    let mut inst = instance;
    for token in pointer.split('/').skip(1) {
        let token = unescape(token);
        node = pick_object_branch(schema, node, inst);
        let next = if let Some(p) = node.get("properties").and_then(|p| p.get(&token)) {
            p
        } else if let Some(items) = node.get("items") {
            items
        } else if let Some(extra) = node.get("additionalProperties").filter(|v| v.is_object()) {
            extra
        } else {
            return Vec::new();
        };
        node = resolve(schema, next);
        inst = match inst {
            Value::Object(m) => m.get(&token).unwrap_or(&Value::Null),
            Value::Array(a) => token
                .parse::<usize>()
                .ok()
                .and_then(|i| a.get(i))
                .unwrap_or(&Value::Null),
            _ => &Value::Null,
        };
    }
    let node = pick_object_branch(schema, node, inst);
    node.get("properties")
        .and_then(Value::as_object)
        .map(|m| m.keys().cloned().collect())
        .unwrap_or_default()
}

fn resolve<'a>(root: &'a Value, node: &'a Value) -> &'a Value {
    let mut node = node;
    for _ in 0..16 {
        match node.get("$ref").and_then(Value::as_str) {
            Some(r) => match root.pointer(r.trim_start_matches('#')) {
                Some(target) => node = target,
                None => break,
            },
            None => break,
        }
    }
    node
}

/// Inside an anyOf/oneOf, the alternative that describes an object (or array) when the
/// instance is one.
fn pick_object_branch<'a>(root: &'a Value, node: &'a Value, inst: &Value) -> &'a Value {
    let want = match inst {
        Value::Array(_) => "array",
        _ => "object",
    };
    for key in ["anyOf", "oneOf"] {
        if let Some(alts) = node.get(key).and_then(Value::as_array) {
            for alt in alts {
                let alt = resolve(root, alt);
                if alt.get("type").and_then(Value::as_str) == Some(want)
                    || (want == "object" && alt.get("properties").is_some())
                {
                    return alt;
                }
            }
        }
    }
    node
}

pub fn unescape(token: &str) -> String {
    token.replace("~1", "/").replace("~0", "~")
}

fn describe_place(pointer: &str) -> String {
    if pointer.is_empty() {
        String::new()
    } else {
        format!(
            " in `{}`",
            pointer.trim_start_matches('/').replace('/', ".")
        )
    }
}

/// serde names Rust types (`expected u32`); say what they hold.
fn plain_types(msg: &str) -> String {
    let mut out = msg.to_string();
    for (rust, plain) in [
        ("u8", "a whole number from 0 to 255"),
        ("u16", "a whole number from 0 to 65535"),
        ("u32", "a whole number from 0 to 4294967295"),
        ("u64", "a whole number from 0 to 18446744073709551615"),
        ("usize", "a whole number"),
        ("f64", "a number"),
    ] {
        if let Some(head) = out.strip_suffix(&format!("expected {rust}")) {
            out = format!("{head}expected {plain}");
        }
    }
    out
}

fn json_type(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(n) if n.is_i64() || n.is_u64() => "integer",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

/// A value as a short, one-line excerpt for messages.
fn short(v: &Value) -> String {
    let s = match v {
        Value::Object(_) => "{…}".to_string(),
        Value::Array(_) => "[…]".to_string(),
        // Masked before it is cut: a cut URI would no longer show where its password is.
        other => crate::redact::uris(&other.to_string()).into_owned(),
    };
    if s.chars().count() > 60 {
        format!("{}…", s.chars().take(57).collect::<String>())
    } else {
        s
    }
}

/// A YAML syntax error, placed where it helps: libyaml reports where it gave up and,
/// for unclosed quotes and brackets, where the construct began. When it gave up at the
/// end of the file, the beginning is the place to look.
fn yaml_error(path: &Path, source: &str, e: &serde_yaml::Error) -> Diagnostic {
    let full = e.to_string();
    let (problem, context) = match full.split_once(", while ") {
        Some((p, c)) => (p.to_string(), Some(c.to_string())),
        None => (full.clone(), None),
    };
    let mut pos = e
        .location()
        .map(|l| Pos {
            line: l.line().max(1),
            column: l.column() + 1,
        })
        .unwrap_or(Pos::START);
    let context_pos = context.as_deref().and_then(parse_line_column);
    if pos.line > crate::diag::source_lines(source).count()
        && let Some(c) = context_pos
    {
        pos = c;
    }
    let strip = |s: &str| match s.find(" at line ") {
        Some(i) => s[..i].to_string(),
        None => s.to_string(),
    };
    let mut message = strip(&problem);
    if let Some(c) = &context {
        message.push_str(&format!(" (while {c})"));
    }
    let line = crate::diag::source_lines(source)
        .nth(pos.line - 1)
        .unwrap_or_default();
    let hint = if too_large_a_number(line, pos.column) {
        "no field takes a number this large"
    } else if line.contains('\t') {
        "indent with spaces; YAML does not allow tabs for indentation"
    } else {
        "check the quotes, brackets and indentation here"
    };
    Diagnostic::error(Code::YamlSyntax, path, pos, message)
        .with_hint(hint)
        .with_source(source)
}

/// Whether the text at `column` (1-based, in characters) of `line` is an integer too
/// large for any number type: read from the source, not from the parser's message.
fn too_large_a_number(line: &str, column: usize) -> bool {
    let chars: Vec<char> = line.chars().collect();
    let numeric = |c: char| c.is_ascii_digit() || c == '-' || c == '+';
    // The whole token around the column (the parser may point inside it).
    let mut start = column.saturating_sub(1).min(chars.len());
    while start > 0 && numeric(chars[start - 1]) {
        start -= 1;
    }
    let token: String = chars[start..].iter().take_while(|c| numeric(**c)).collect();
    let digits = token.trim_start_matches(['-', '+']);
    !digits.is_empty()
        && digits.chars().all(|c| c.is_ascii_digit())
        && token.parse::<i64>().is_err()
        && token.parse::<u64>().is_err()
}

/// A file that is not UTF-8, located at its first byte that is not.
fn not_utf8(path: &Path, e: &std::string::FromUtf8Error) -> Diagnostic {
    let bytes = e.as_bytes();
    let valid = e.utf8_error().valid_up_to();
    let mut pos = Pos::START;
    let mut after_cr = false;
    // Line ends as YAML counts them (`\r\n`, `\n`, a lone `\r`); columns in characters.
    for c in String::from_utf8_lossy(&bytes[..valid]).chars() {
        match c {
            '\n' if after_cr => {}
            '\n' | '\r' => {
                pos = Pos {
                    line: pos.line + 1,
                    column: 1,
                }
            }
            _ => pos.column += 1,
        }
        after_cr = c == '\r';
    }
    Diagnostic::error(
        Code::IoError,
        path,
        pos,
        format!("file is not valid UTF-8 (byte 0x{:02X})", bytes[valid]),
    )
    .with_hint("save the file as UTF-8")
    .with_source(&String::from_utf8_lossy(bytes))
}

/// `... at line L column C` → the 1-based position libyaml means.
fn parse_line_column(s: &str) -> Option<Pos> {
    let rest = &s[s.rfind(" at line ")? + " at line ".len()..];
    let (line, rest) = rest.split_once(" column ")?;
    let column: usize = rest.trim().parse().ok()?;
    Some(Pos {
        line: line.trim().parse().ok()?,
        column,
    })
}

/// The closest known name within a small edit distance, for "did you mean" hints.
pub fn did_you_mean(input: &str, candidates: &[String]) -> Option<String> {
    let lower = input.to_lowercase();
    candidates
        .iter()
        .map(|c| (levenshtein(&lower, &c.to_lowercase()), c))
        .filter(|(d, c)| *d <= (c.len() / 3).max(2))
        .min_by_key(|(d, _)| *d)
        .map(|(_, c)| c.clone())
}

fn levenshtein(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut cur = vec![i + 1; b.len() + 1];
        for (j, cb) in b.iter().enumerate() {
            let cost = usize::from(ca != *cb);
            cur[j + 1] = (prev[j] + cost).min(prev[j + 1] + 1).min(cur[j] + 1);
        }
        prev = cur;
    }
    prev[b.len()]
}

#[cfg(test)]
mod tests;
