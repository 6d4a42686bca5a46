//! Credentials never reach output: connection strings are shown with the password
//! replaced by `***`, and every password dcb has read is scrubbed from free text and
//! from the logs.

use std::borrow::Cow;
use std::sync::RwLock;

/// Secrets seen so far (passwords from URIs and password files).
#[cfg(not(test))]
static SECRETS: RwLock<Vec<String>> = RwLock::new(Vec::new());

// Unit tests run on threads of one process: each test remembers its own secrets, so
// one test's secret never scrubs another's expected output.
#[cfg(test)]
thread_local! {
    static SECRETS: RwLock<Vec<String>> = const { RwLock::new(Vec::new()) };
}

/// Run `f` on the remembered secrets.
fn with_secrets<T>(f: impl FnOnce(&RwLock<Vec<String>>) -> T) -> T {
    #[cfg(not(test))]
    {
        f(&SECRETS)
    }
    #[cfg(test)]
    {
        SECRETS.with(f)
    }
}

/// Shorter secrets are not scrubbed from free text: replacing every `ab` would garble
/// the output while hiding little. URIs are still masked whatever the length.
const MIN_SCRUBBED: usize = 3;

/// `mongodb://user:secret@host/db` → `mongodb://user:***@host/db`; options that hold
/// a password (`tlsCertificateKeyFilePassword=…`) are masked too.
pub fn uri(uri: &str) -> String {
    let masked = userinfo(uri);
    match masked.split_once('?') {
        Some((base, query)) => {
            let options: Vec<String> = query
                .split('&')
                .map(|kv| match kv.split_once('=') {
                    Some((k, _)) if k.to_ascii_lowercase().contains("password") => {
                        format!("{k}=***")
                    }
                    _ => kv.to_string(),
                })
                .collect();
            format!("{base}?{}", options.join("&"))
        }
        None => masked,
    }
}

fn userinfo(uri: &str) -> String {
    let Some((scheme, rest)) = uri.split_once("://") else {
        return uri.to_string();
    };
    let host_start = rest.find(['/', '?']).unwrap_or(rest.len());
    let authority = &rest[..host_start];
    match authority.rfind('@') {
        Some(at) => {
            let userinfo = &authority[..at];
            let user = userinfo.split(':').next().unwrap_or("");
            let masked = if userinfo.contains(':') {
                format!("{user}:***")
            } else {
                user.to_string()
            };
            format!("{scheme}://{masked}{}", &rest[at..])
        }
        None => uri.to_string(),
    }
}

/// Scrub `secret` from everything [`text`] and [`scrub`] see from now on.
pub fn remember(secret: &str) {
    if secret.len() < MIN_SCRUBBED {
        return;
    }
    with_secrets(|all| {
        let Ok(mut secrets) = all.write() else {
            return;
        };
        if !secrets.iter().any(|s| s == secret) {
            secrets.push(secret.to_string());
            // Longest first, so a secret that contains another is replaced whole.
            secrets.sort_by_key(|s| std::cmp::Reverse(s.len()));
        }
    })
}

/// Remember the passwords of a connection string, as written and percent-decoded.
pub fn remember_uri(uri: &str) {
    for p in password(uri).into_iter().chain(option_passwords(uri)) {
        remember(&percent_decode(&p));
        remember(&p);
    }
}

fn option_passwords(uri: &str) -> Vec<String> {
    let Some((_, query)) = uri.split_once('?') else {
        return Vec::new();
    };
    query
        .split('&')
        .filter_map(|kv| kv.split_once('='))
        .filter(|(k, _)| k.to_ascii_lowercase().contains("password"))
        .map(|(_, v)| v.to_string())
        .collect()
}

/// Remove every occurrence of the URI's password, and of every remembered secret,
/// from free text (driver errors may quote the connection string).
pub fn text(text: &str, uri: &str) -> String {
    let mut out = scrub(text).into_owned();
    if let Some(p) = password(uri).filter(|p| !p.is_empty()) {
        out = out.replace(&p, "***");
        let decoded = percent_decode(&p);
        if decoded.len() >= MIN_SCRUBBED {
            out = out.replace(&decoded, "***");
        }
    }
    out
}

/// `text` with every remembered secret replaced by `***`.
pub fn scrub(text: &str) -> Cow<'_, str> {
    with_secrets(|all| {
        let Ok(secrets) = all.read() else {
            return Cow::Borrowed(text);
        };
        let mut out = Cow::Borrowed(text);
        for s in secrets.iter() {
            if out.contains(s.as_str()) {
                out = Cow::Owned(out.replace(s.as_str(), "***"));
            }
        }
        out
    })
}

/// Names whose values are credentials wherever they appear (compared in lower case,
/// against the last part of a key).
const SECRET_NAMES: &[&str] = &[
    "password",
    "passphrase",
    "secret",
    "token",
    "credential",
    "apikey",
    "accesskey",
    "privatekey",
    "authorization",
    "cookie",
];

/// Whether a key (the last part of one: `secretAccessKey`, `password`, a header's
/// name) holds a credential. Keys that say where one is kept (`passwordFile`,
/// `secretAccessKeyEnv`, `…Dir`) hold a path or a variable's name, which may be shown.
pub fn is_secret_key(key: &str) -> bool {
    let k = key.to_ascii_lowercase();
    let names_a_place = ["file", "files", "dir", "env"]
        .iter()
        .any(|s| k.ends_with(s));
    !names_a_place && SECRET_NAMES.iter().any(|s| k.contains(s))
}

/// Whether a key holds a URL or connection string (`url`, `uri`, `webhookUrl`).
pub fn is_url_key(key: &str) -> bool {
    let k = key.to_ascii_lowercase();
    k.ends_with("uri") || k.ends_with("url")
}

/// A connection string with its password hidden; another URL cut to its origin plus
/// `/***` when it has a path or query (the tokens of chat robots and webhooks live
/// there). The cut URL is remembered, so it is scrubbed from other text too.
pub fn url(s: &str) -> String {
    if s.starts_with("mongodb://") || s.starts_with("mongodb+srv://") {
        return uri(s);
    }
    match reqwest::Url::parse(s) {
        Ok(u) if u.host().is_some() => {
            let origin = u.origin().ascii_serialization();
            let tail = u.path() != "/" || u.query().is_some() || u.fragment().is_some();
            if tail {
                remember(s);
                format!("{origin}/***")
            } else {
                origin
            }
        }
        // Unparseable: nothing of it can be shown safely.
        _ => {
            remember(s);
            "***".to_string()
        }
    }
}

/// Every `scheme://user:password@…` in free text with its password masked as [`uri`]
/// masks it (a URI ends at white space or a quote).
pub fn uris(text: &str) -> Cow<'_, str> {
    uris_in(text, false)
}

/// A value that is only a `${NAME}` reference: it names a variable and holds nothing
/// (unlike `${NAME:-default}`, whose default may be the secret).
fn is_reference(value: &str) -> bool {
    value
        .strip_prefix("${")
        .and_then(|v| v.strip_suffix('}'))
        .is_some_and(|name| {
            !name.is_empty() && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
        })
}

/// [`uris`], keeping a password written as a `${NAME}` reference when `keep_references`
/// (source as written, where the variable's name is what helps).
fn uris_in(text: &str, keep_references: bool) -> Cow<'_, str> {
    if !text.contains("://") {
        return Cow::Borrowed(text);
    }
    let is_end = |c: char| c.is_whitespace() || c == '"' || c == '\'' || c == '`';
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(i) = rest.find("://") {
        // Past the last character that cannot be in a scheme (it may be multi-byte).
        let start = rest[..i]
            .char_indices()
            .rev()
            .find(|&(_, c)| !(c.is_ascii_alphanumeric() || "+.-".contains(c)))
            .map_or(0, |(j, c)| j + c.len_utf8());
        let end = rest[i..].find(is_end).map_or(rest.len(), |j| i + j);
        out.push_str(&rest[..start]);
        let token = &rest[start..end];
        if keep_references && password(token).is_some_and(|p| is_reference(&p)) {
            out.push_str(token);
        } else {
            out.push_str(&uri(token));
        }
        rest = &rest[end..];
    }
    out.push_str(rest);
    Cow::Owned(out)
}

/// A line of a source file as a diagnostic may quote it: remembered secrets scrubbed,
/// the value of every key that holds a credential (block `key: v` or flow
/// `{key: v, …}`) shown as `***`, values under URL keys cut as [`url`] cuts them, and
/// the password of any other URI masked.
pub fn source_line(line: &str) -> String {
    let line = scrub(line);
    let chars: Vec<(usize, char)> = line.char_indices().collect();
    let mut out = String::with_capacity(line.len());
    let mut copied = 0; // bytes of `line` already in `out`
    let mut key_start = 0;
    let mut depth = 0usize;
    let mut quote: Option<char> = None;
    let mut k = 0;
    while k < chars.len() {
        let (i, c) = chars[k];
        k += 1;
        match (quote, c) {
            (Some(q), c) if c == q => quote = None,
            (Some(_), _) => {}
            (None, '"' | '\'') => quote = Some(c),
            (None, '{' | '[') => {
                depth += 1;
                key_start = i + 1;
            }
            (None, '}' | ']') => {
                depth = depth.saturating_sub(1);
                key_start = i + 1;
            }
            (None, ',' | '#') => key_start = i + 1,
            (None, ':') if line[i + 1..].is_empty() || line[i + 1..].starts_with(' ') => {
                let key = line[key_start..i]
                    .trim()
                    .trim_start_matches(['-', '?', ' '])
                    .trim_matches(['"', '\'']);
                let secret = is_secret_key(key);
                if !secret && !is_url_key(key) {
                    key_start = i + 1;
                    continue;
                }
                let value_start = i + 1;
                let value_end = if depth == 0 {
                    line.len()
                } else {
                    flow_value_end(&line, value_start)
                };
                let value = &line[value_start..value_end];
                let trimmed = value.trim();
                let bare = trimmed.trim_matches(['"', '\'']);
                // A connection string keeps its form: the last step masks its password.
                let connection = !secret && bare.starts_with("mongodb");
                if trimmed.is_empty() || is_reference(bare) || connection {
                    key_start = i + 1;
                    continue;
                }
                let shown = if secret {
                    "***".to_string()
                } else {
                    let q = trimmed.chars().next().filter(|c| *c == '"' || *c == '\'');
                    let bare = match q {
                        Some(q) => trimmed.trim_matches(q),
                        None => trimmed,
                    };
                    let cut = url(bare);
                    q.map_or(cut.clone(), |q| format!("{q}{cut}{q}"))
                };
                let lead = &value[..value.len() - value.trim_start().len()];
                let trail = &value[value.trim_end().len()..];
                out.push_str(&line[copied..value_start]);
                out.push_str(lead);
                out.push_str(&shown);
                out.push_str(trail);
                copied = value_end;
                key_start = value_end;
                while k < chars.len() && chars[k].0 < value_end {
                    k += 1;
                }
            }
            _ => {}
        }
    }
    out.push_str(&line[copied..]);
    uris_in(&out, true).into_owned()
}

/// Where a value inside `{…}` or `[…]` that starts at `from` ends: at the `,`, `}` or
/// `]` that closes it, quotes and nested brackets skipped.
fn flow_value_end(line: &str, from: usize) -> usize {
    let mut depth = 0usize;
    let mut quote: Option<char> = None;
    for (j, c) in line[from..].char_indices() {
        match (quote, c) {
            (Some(q), c) if c == q => quote = None,
            (Some(_), _) => {}
            (None, '"' | '\'') => quote = Some(c),
            (None, '{' | '[') => depth += 1,
            (None, '}' | ']') if depth == 0 => return from + j,
            (None, '}' | ']') => depth -= 1,
            (None, ',') if depth == 0 => return from + j,
            _ => {}
        }
    }
    line.len()
}

fn password(uri: &str) -> Option<String> {
    let rest = uri.split_once("://")?.1;
    let host_start = rest.find(['/', '?']).unwrap_or(rest.len());
    let authority = &rest[..host_start];
    let userinfo = &authority[..authority.rfind('@')?];
    userinfo.split_once(':').map(|(_, p)| p.to_string())
}

fn percent_decode(s: &str) -> String {
    String::from_utf8_lossy(&crate::percent::decode(s)).into_owned()
}

#[cfg(test)]
mod tests {
    // The password is masked wherever the URI or text shows it; the rest stays legible.
    // A URI right after a multi-byte character (found by tests/fuzz_policies.rs).
    #[test]
    fn uri_after_a_multibyte_character() {
        let masked = super::uris_in("`***\u{e91ac}-mongodb://u:pw@h:1/x`", false);
        assert!(
            masked.contains("\u{e91ac}-mongodb://u:***@h:1/x"),
            "{masked}"
        );
    }

    #[test]
    fn masks_password() {
        assert_eq!(
            super::uri("mongodb://dcMes:hunter2@db.local:27017/dcMes?authSource=dcMes"),
            "mongodb://dcMes:***@db.local:27017/dcMes?authSource=dcMes"
        );
        assert_eq!(super::uri("mongodb://h:1/db"), "mongodb://h:1/db");
        assert_eq!(
            super::uri("mongodb://h/db?tls=true&tlsCertificateKeyFilePassword=k3y&w=1"),
            "mongodb://h/db?tls=true&tlsCertificateKeyFilePassword=***&w=1"
        );
        assert_eq!(
            super::text("failed: mongodb://u:hunter2@h", "mongodb://u:hunter2@h/x"),
            "failed: mongodb://u:***@h"
        );
    }

    // A percent-encoded password is also hidden in its decoded form, which is how the
    // server and the driver's messages spell it.
    #[test]
    fn masks_decoded_password() {
        let uri = "mongodb://u:p%40ss%2Fw0rd@h/x";
        assert_eq!(
            super::text("auth failed for p@ss/w0rd", uri),
            "auth failed for ***"
        );
        assert_eq!(super::percent_decode("a%2"), "a%2");
        assert_eq!(super::percent_decode("%zz%41"), "%zzA");
    }

    // Source lines quoted by diagnostics hide credentials: by key (block and flow
    // style, quoted or not), URLs under URL keys, and any URI's password.
    #[test]
    fn source_lines_hide_credentials() {
        let l = super::source_line;
        assert_eq!(
            l("  uri: mongodb://backup:Hunt3r2@db:27017/dcMes  # prod"),
            "  uri: mongodb://backup:***@db:27017/dcMes  # prod"
        );
        assert_eq!(
            l("mongodbUri: \"mongodb://u:pw9@h/x\""),
            "mongodbUri: \"mongodb://u:***@h/x\""
        );
        assert_eq!(
            l("    secretAccessKey: wJalrXUtnFEMI"),
            "    secretAccessKey: ***"
        );
        assert_eq!(l("  - password: 'p w'"), "  - password: ***");
        assert_eq!(l("token:"), "token:");
        // A bare `${NAME}` names a variable; a `:-default` may be the secret.
        assert_eq!(
            l("  uri: mongodb://backup:${DB_PW}@db/dcMes"),
            "  uri: mongodb://backup:${DB_PW}@db/dcMes"
        );
        assert_eq!(
            l("  password: \"${SMTP_PW}\""),
            "  password: \"${SMTP_PW}\""
        );
        assert_eq!(l("  password: ${SMTP_PW:-s3cr3t}"), "  password: ***");
        assert_eq!(
            l("  uri: mongodb://backup:${DB_PW:-s3cr3t}@db/dcMes"),
            "  uri: mongodb://backup:***@db/dcMes"
        );
        assert_eq!(
            l("secretAccessKeyFile: /run/secrets/s3"),
            "secretAccessKeyFile: /run/secrets/s3"
        );
        assert_eq!(
            l(
                "  - {type: dingtalk, url: 'https://oapi.dingtalk.com/robot/send?access_token=T0k', secret: S3c, x: 1}"
            ),
            "  - {type: dingtalk, url: 'https://oapi.dingtalk.com/***', secret: ***, x: 1}"
        );
        assert_eq!(
            l("headers: {Authorization: \"Bearer a,b\"}"),
            "headers: {Authorization: ***}"
        );
        assert_eq!(
            l("note: see https://u:Pw0rd@h.example/x, ok"),
            "note: see https://u:***@h.example/x, ok"
        );
        assert_eq!(l("schedule: \"0 */1 * * *\""), "schedule: \"0 */1 * * *\"");
        assert_eq!(l("时间: 值"), "时间: 值");
    }

    // Remembered secrets (a password file's) are scrubbed from any text, longest first.
    #[test]
    fn scrubs_remembered_secrets() {
        super::remember("from-a-file-XYZ");
        super::remember("from-a-file-XYZ-longer");
        super::remember("ab");
        assert_eq!(
            super::scrub("x from-a-file-XYZ-longer y from-a-file-XYZ z ab"),
            "x *** y *** z ab"
        );
        assert_eq!(super::text("pw from-a-file-XYZ", "mongodb://h/"), "pw ***");
    }
}
