//! Rules for names that become paths (collections, databases) or query keys (time
//! fields). They are checked before any name touches the file system.

use crate::error::Invalid;

/// Allowed policy names: they become folder names under the backup root.
pub const NAME_PATTERN: &str = "^[a-z0-9_-]+$";

/// Characters Windows forbids in file names, plus the path separators.
const FORBIDDEN: &[char] = &['/', '\\', ':', '*', '?', '"', '<', '>', '|'];

/// Names Windows reserves for devices, whatever the extension.
const RESERVED: &[&str] = &[
    "con", "prn", "aux", "nul", "com1", "com2", "com3", "com4", "com5", "com6", "com7", "com8",
    "com9", "lpt1", "lpt2", "lpt3", "lpt4", "lpt5", "lpt6", "lpt7", "lpt8", "lpt9",
];

fn common(kind: &str, name: &str) -> Result<(), Invalid> {
    if name.is_empty() {
        return Err(Invalid(format!("{kind} name is empty")));
    }
    if name.contains('\0') {
        return Err(Invalid(format!("{kind} name contains a NUL character")));
    }
    if let Some(c) = name.chars().find(|c| c.is_control()) {
        return Err(Invalid(format!(
            "{kind} name contains the control character {c:?}"
        )));
    }
    if let Some(c) = name.chars().find(|c| FORBIDDEN.contains(c)) {
        return Err(Invalid(format!(
            "{kind} name `{name}` contains `{c}`, which cannot appear in a file name"
        )));
    }
    if name.contains("..") {
        return Err(Invalid(format!("{kind} name `{name}` contains `..`")));
    }
    if name.ends_with('.') || name.ends_with(' ') || name.starts_with(' ') {
        return Err(Invalid(format!(
            "{kind} name `{name}` starts or ends with a space or ends with a dot"
        )));
    }
    if is_reserved(name.split('.').next().unwrap_or(name)) {
        return Err(Invalid(format!(
            "{kind} name `{name}` is a reserved device name on Windows"
        )));
    }
    Ok(())
}

/// A name Windows reserves for a device (`con`, `nul`, `com1`, ...): no file or folder
/// can have it, whatever the case.
pub fn is_reserved(stem: &str) -> bool {
    RESERVED.contains(&stem.to_ascii_lowercase().as_str())
}

/// A collection name that MongoDB accepts and that is safe as `<collection>.bson`.
pub fn check_collection(name: &str) -> Result<(), Invalid> {
    common("collection", name)?;
    if name.contains('$') {
        return Err(Invalid(format!("collection name `{name}` contains `$`")));
    }
    if name.starts_with("system.") {
        return Err(Invalid(format!(
            "`{name}` is a system collection; dcb backs up user collections only"
        )));
    }
    if name.len() > 200 {
        return Err(Invalid(format!(
            "collection name is {} bytes; at most 200",
            name.len()
        )));
    }
    Ok(())
}

/// A storage target's name (dcb.yaml's `targets`): like a policy's name.
pub fn check_target(name: &str) -> Result<(), Invalid> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && name
            .bytes()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == b'_' || c == b'-');
    if ok {
        Ok(())
    } else {
        Err(Invalid(format!(
            "target name `{name}`: 1 to 64 lowercase letters, digits, `_` or `-`"
        )))
    }
}

/// Whether a collection entry is a pattern: `*` and `?` cannot appear in a collection
/// name dcb backs up (they cannot appear in a file name), so the two never mix.
pub fn is_pattern(name: &str) -> bool {
    name.contains(['*', '?'])
}

/// A glob pattern of collection names (`*_logs`, `line?_scans`, `[ab]*`): the rules of
/// a collection name for everything but its wildcards.
pub fn check_pattern(pattern: &str) -> Result<glob::Pattern, Invalid> {
    let parsed = glob::Pattern::new(pattern)
        .map_err(|e| Invalid(format!("pattern `{pattern}`: {}", e.msg)))?;
    // Stand-ins for the wildcards, so the remaining characters face the name rules.
    let literal: String = pattern
        .chars()
        .map(|c| if matches!(c, '*' | '?') { 'x' } else { c })
        .collect();
    check_collection(&literal).map_err(|e| Invalid(e.0.replace(&literal, pattern)))?;
    Ok(parsed)
}

/// A database name as MongoDB allows it (which also makes it a safe folder name).
pub fn check_database(name: &str) -> Result<(), Invalid> {
    common("database", name)?;
    if let Some(c) = name.chars().find(|c| matches!(c, '.' | '$' | ' ')) {
        return Err(Invalid(format!("database name `{name}` contains `{c}`")));
    }
    if name.len() > 63 {
        return Err(Invalid(format!(
            "database name is {} bytes; at most 63",
            name.len()
        )));
    }
    Ok(())
}

/// A field path usable in a query filter (`createdAt`, `meta.updatedAt`).
pub fn check_field(name: &str) -> Result<(), Invalid> {
    if name.is_empty() {
        return Err(Invalid::new("time field name is empty"));
    }
    if name.contains('\0') {
        return Err(Invalid::new("time field name contains a NUL character"));
    }
    if name.starts_with('$') {
        return Err(Invalid(format!("time field `{name}` starts with `$`")));
    }
    if name.split('.').any(str::is_empty) {
        return Err(Invalid(format!(
            "time field `{name}` has an empty path segment"
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use rstest::rstest;

    // The seed's collection names are all accepted.
    #[rstest]
    #[case("api_logs")]
    #[case("scan_code_bind_record")]
    #[case("k3_sal_saleorderexts")]
    #[case("orders.2026")]
    fn accepts(#[case] name: &str) {
        assert_eq!(check_collection(name), Ok(()));
    }

    // Anything that could escape a folder or break a file name is refused.
    #[rstest]
    #[case("")]
    #[case("a/b")]
    #[case("a\\b")]
    #[case("..")]
    #[case("a..b")]
    #[case("nul\0x")]
    #[case("a:b")]
    #[case("con")]
    #[case("CON.logs")]
    #[case("trailing.")]
    #[case("system.users")]
    #[case("pay$ments")]
    fn refuses(#[case] name: &str) {
        assert!(check_collection(name).is_err(), "{name:?} accepted");
    }

    // Database names follow MongoDB's stricter rules.
    #[rstest]
    #[case("dcMes", true)]
    #[case("dc.mes", false)]
    #[case("dc mes", false)]
    #[case("../etc", false)]
    fn databases(#[case] name: &str, #[case] ok: bool) {
        assert_eq!(check_database(name).is_ok(), ok, "{name}");
    }
}
