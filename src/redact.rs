//! Credentials never reach output: connection strings are shown with the password
//! replaced by `***`, and every password dcb has read is scrubbed from free text and
//! from the logs.

use std::borrow::Cow;
use std::sync::RwLock;

/// Secrets seen so far (passwords from URIs and password files).
static SECRETS: RwLock<Vec<String>> = RwLock::new(Vec::new());

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
    let Ok(mut secrets) = SECRETS.write() else {
        return;
    };
    if !secrets.iter().any(|s| s == secret) {
        secrets.push(secret.to_string());
        // Longest first, so a secret that contains another is replaced whole.
        secrets.sort_by_key(|s| std::cmp::Reverse(s.len()));
    }
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
    let Ok(secrets) = SECRETS.read() else {
        return Cow::Borrowed(text);
    };
    let mut out = Cow::Borrowed(text);
    for s in secrets.iter() {
        if out.contains(s.as_str()) {
            out = Cow::Owned(out.replace(s.as_str(), "***"));
        }
    }
    out
}

fn password(uri: &str) -> Option<String> {
    let rest = uri.split_once("://")?.1;
    let host_start = rest.find(['/', '?']).unwrap_or(rest.len());
    let authority = &rest[..host_start];
    let userinfo = &authority[..authority.rfind('@')?];
    userinfo.split_once(':').map(|(_, p)| p.to_string())
}

/// `%XX` escapes to bytes; anything malformed is kept as written.
fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = |b: u8| (b as char).to_digit(16);
        if bytes[i] == b'%'
            && let (Some(h), Some(l)) = (
                bytes.get(i + 1).copied().and_then(hex),
                bytes.get(i + 2).copied().and_then(hex),
            )
        {
            out.push((h * 16 + l) as u8);
            i += 3;
            continue;
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    // The password is masked wherever the URI or text shows it; the rest stays legible.
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
