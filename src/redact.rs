//! Credentials never reach output: connection strings are shown with the password
//! replaced by `***`.

/// `mongodb://user:secret@host/db` → `mongodb://user:***@host/db`.
pub fn uri(uri: &str) -> String {
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

/// Remove every occurrence of the URI's password from free text (driver errors may
/// quote the connection string).
pub fn text(text: &str, uri: &str) -> String {
    match password(uri) {
        Some(p) if !p.is_empty() => text.replace(&p, "***"),
        _ => text.to_string(),
    }
}

fn password(uri: &str) -> Option<String> {
    let rest = uri.split_once("://")?.1;
    let host_start = rest.find(['/', '?']).unwrap_or(rest.len());
    let authority = &rest[..host_start];
    let userinfo = &authority[..authority.rfind('@')?];
    userinfo.split_once(':').map(|(_, p)| p.to_string())
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
            super::text("failed: mongodb://u:hunter2@h", "mongodb://u:hunter2@h/x"),
            "failed: mongodb://u:***@h"
        );
    }
}
