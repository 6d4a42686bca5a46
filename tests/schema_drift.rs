//! The committed JSON schemas are exactly what the Rust types generate.
//! Set DCB_UPDATE_SCHEMA=1 to rewrite them.

use std::path::Path;

fn check(file: &str, generated: &serde_json::Value) {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("schema")
        .join(file);
    let fresh = dcb::schema::render(generated);
    if std::env::var_os("DCB_UPDATE_SCHEMA").is_some() {
        std::fs::write(&path, &fresh).unwrap();
        return;
    }
    let committed = std::fs::read_to_string(&path).unwrap_or_default();
    if stale(&committed, &fresh) {
        let diff = similar::TextDiff::from_lines(&committed, &fresh)
            .unified_diff()
            .header(&format!("committed {file}"), &format!("generated {file}"))
            .to_string();
        panic!(
            "schema/{file} is stale; regenerate with `DCB_UPDATE_SCHEMA=1 cargo test --test schema_drift`\n{diff}"
        );
    }
}

/// Whether the committed file differs from the generated one, line endings aside (a
/// Windows checkout with `core.autocrlf` has CRLF).
fn stale(committed: &str, fresh: &str) -> bool {
    committed.replace("\r\n", "\n") != fresh.replace("\r\n", "\n")
}

// A checkout with CRLF line endings is current; a changed line is stale.
#[test]
fn line_endings_do_not_make_a_schema_stale() {
    let fresh = dcb::schema::render(dcb::policy::schema());
    assert!(!stale(&fresh.replace('\n', "\r\n"), &fresh));
    assert!(stale(&fresh.replacen("dcb policy", "dcb polic", 1), &fresh));
}

// schema/policy.schema.json matches the PolicyFile type.
#[test]
fn policy_schema_is_current() {
    check("policy.schema.json", dcb::policy::schema());
}

// schema/config.schema.json matches the ConfigFile type.
#[test]
fn config_schema_is_current() {
    check("config.schema.json", dcb::config::schema());
}

// `dcb schema policy` prints the same document the tests compare.
#[test]
fn cli_prints_the_generated_schema() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_dcb"))
        .args(["schema", "policy"])
        .output()
        .unwrap();
    assert!(out.status.success());
    assert_eq!(
        String::from_utf8(out.stdout).unwrap(),
        dcb::schema::render(dcb::policy::schema())
    );
}

// A reader that goes away (`dcb schema policy | head -1`) ends the output quietly:
// exit 0, no panic message.
#[test]
fn closed_stdout_is_a_clean_exit() {
    let (reader, writer) = std::io::pipe().unwrap();
    drop(reader);
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_dcb"))
        .args(["schema", "config"])
        .stdout(writer)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    assert!(stderr.is_empty(), "{stderr}");
}
