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
    if committed != fresh {
        let diff = similar::TextDiff::from_lines(&committed, &fresh)
            .unified_diff()
            .header(&format!("committed {file}"), &format!("generated {file}"))
            .to_string();
        panic!(
            "schema/{file} is stale; regenerate with `DCB_UPDATE_SCHEMA=1 cargo test --test schema_drift`\n{diff}"
        );
    }
}

// schema/policy.schema.json matches the PolicyFile type.
#[test]
fn policy_schema_is_current() {
    check("policy.schema.json", dcb::schema::policy());
}

// schema/config.schema.json matches the ConfigFile type.
#[test]
fn config_schema_is_current() {
    check("config.schema.json", dcb::schema::config());
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
        dcb::schema::render(dcb::schema::policy())
    );
}
