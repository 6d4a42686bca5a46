//! Limits the code keeps (issue 15): no file in `src/` over 600 lines, and no public
//! function that returns a bare `String` as its error (errors are types a caller can
//! match; `crate::error::Invalid` for validation messages).

use std::path::{Path, PathBuf};

const MAX_LINES: usize = 600;

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap().flatten() {
        let path = entry.path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

fn sources() -> Vec<(PathBuf, String)> {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    files.sort();
    files
        .into_iter()
        .map(|p| {
            let text = std::fs::read_to_string(&p).unwrap();
            (p, text)
        })
        .collect()
}

#[test]
fn no_file_is_over_600_lines() {
    let long: Vec<String> = sources()
        .into_iter()
        .filter(|(_, text)| text.lines().count() > MAX_LINES)
        .map(|(p, text)| format!("{} ({} lines)", p.display(), text.lines().count()))
        .collect();
    assert!(long.is_empty(), "split these: {long:#?}");
}

/// The signature of each `pub fn` / `pub async fn` (to its body or `;`).
fn public_signatures(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut rest = text;
    while let Some(i) = rest.find("pub ") {
        let tail = &rest[i..];
        let is_fn = ["pub fn ", "pub async fn ", "pub const fn "]
            .iter()
            .any(|p| tail.starts_with(p));
        if is_fn {
            let end = tail.find(['{', ';']).unwrap_or(tail.len());
            out.push(tail[..end].split_whitespace().collect::<Vec<_>>().join(" "));
        }
        rest = &rest[i + 4..];
    }
    out
}

#[test]
fn no_public_function_returns_a_string_error() {
    let mut found = Vec::new();
    for (path, text) in sources() {
        for sig in public_signatures(&text) {
            let Some((_, ret)) = sig.split_once("->") else {
                continue;
            };
            let ret = ret.replace(' ', "");
            if ret.starts_with("Result<") && ret.ends_with(",String>") {
                found.push(format!("{}: {sig}", path.display()));
            }
        }
    }
    assert!(found.is_empty(), "give these an error type: {found:#?}");
}

// The check above sees what it is meant to see.
#[test]
fn the_signature_check_finds_a_string_error() {
    let sigs = public_signatures(
        "pub fn a(x: u8) -> Result<Vec<String>, String> { }\npub async fn b()\n  -> Result<(), Invalid>;",
    );
    assert_eq!(
        sigs,
        [
            "pub fn a(x: u8) -> Result<Vec<String>, String>",
            "pub async fn b() -> Result<(), Invalid>"
        ]
    );
}
