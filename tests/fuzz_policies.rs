//! Mutated policy and config files never panic the loaders: every input gets
//! diagnostics or a result, and every diagnostic points inside its file.

use std::path::{Path, PathBuf};

use dcb::config::{Overrides, Settings};
use dcb::diag::Diagnostic;
use dcb::document::Document;
use dcb::policy::load::load_paths;
use dcb::policy::validate::{Defaults, validate};
use proptest::prelude::*;

const NAMES: [&str; 4] = ["hot", "core", "config", "analytics"];

fn project_file(rel: &str) -> String {
    std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join(rel)).unwrap()
}

fn shipped() -> Vec<String> {
    NAMES
        .iter()
        .map(|n| project_file(&format!("policies/{n}.yaml")))
        .collect()
}

fn defaults() -> Defaults {
    Defaults {
        timezone: chrono_tz::Tz::UTC,
        concurrency: 3,
        targets: vec!["local".into()],
    }
}

fn mutate(text: &str, mutations: &[Mutation]) -> String {
    mutations.iter().fold(text.to_string(), |t, m| apply(&t, m))
}

/// Every diagnostic is at a real place: line and column from 1, the line inside the
/// file it names (or one past its end), and it renders.
fn assert_located(diags: &[Diagnostic], texts: &[(PathBuf, &str)]) -> Result<(), TestCaseError> {
    for d in diags {
        prop_assert!(
            d.pos.line >= 1 && d.pos.column >= 1,
            "diagnostic {d:?} before the start of its file"
        );
        if let Some((_, text)) = texts.iter().find(|(p, _)| *p == d.file) {
            let lines = dcb::diag::source_lines(text).count().max(1);
            prop_assert!(
                d.pos.line <= lines + 1,
                "diagnostic {d:?} outside a {lines}-line file:\n{text}"
            );
        }
        let _ = dcb::diag::render(std::slice::from_ref(d), dcb::diag::Format::Human);
    }
    Ok(())
}

#[derive(Debug, Clone)]
enum Mutation {
    Insert(usize, char),
    Delete(usize, usize),
    Truncate(usize),
    DuplicateLine(usize),
    SwapLines(usize, usize),
    ReplaceValue(usize, String),
}

fn yamlish_char() -> impl Strategy<Value = char> {
    prop_oneof![
        prop::sample::select(vec![
            ':', '-', '[', ']', '{', '}', '"', '\'', '\n', '\t', ' ', '#', '&', '*', '!', '|', '>',
            '%', '@', '`', '\\', '\0', '/', '.', '?', ',', '~', '$',
        ]),
        any::<char>(),
    ]
}

fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        (any::<usize>(), yamlish_char()).prop_map(|(i, c)| Mutation::Insert(i, c)),
        (any::<usize>(), 1usize..20).prop_map(|(i, n)| Mutation::Delete(i, n)),
        any::<usize>().prop_map(Mutation::Truncate),
        any::<usize>().prop_map(Mutation::DuplicateLine),
        (any::<usize>(), any::<usize>()).prop_map(|(a, b)| Mutation::SwapLines(a, b)),
        (
            any::<usize>(),
            prop_oneof![
                Just("~".to_string()),
                Just("[]".to_string()),
                Just("{}".to_string()),
                Just("-1".to_string()),
                Just("1e999".to_string()),
                Just("*alias".to_string()),
                Just("&a [*a]".to_string()),
                Just("!!binary aGVsbG8=".to_string()),
                Just("\"../../x\"".to_string()),
                "[a-z0-9 */:-]{0,12}",
            ]
        )
            .prop_map(|(i, v)| Mutation::ReplaceValue(i, v)),
    ]
}

fn apply(text: &str, m: &Mutation) -> String {
    let chars: Vec<char> = text.chars().collect();
    let mut lines: Vec<String> = text.lines().map(str::to_owned).collect();
    if lines.is_empty() {
        lines.push(String::new());
    }
    match m {
        Mutation::Insert(i, c) => {
            let at = i % (chars.len() + 1);
            let mut out: String = chars[..at].iter().collect();
            out.push(*c);
            out.extend(&chars[at..]);
            out
        }
        Mutation::Delete(i, n) => {
            let at = i % (chars.len() + 1);
            let end = (at + n).min(chars.len());
            chars[..at].iter().chain(&chars[end..]).collect()
        }
        Mutation::Truncate(i) => chars[..i % (chars.len() + 1)].iter().collect(),
        Mutation::DuplicateLine(i) => {
            let at = i % lines.len();
            lines.insert(at, lines[at].clone());
            lines.join("\n")
        }
        Mutation::SwapLines(a, b) => {
            let (a, b) = (a % lines.len(), b % lines.len());
            lines.swap(a, b);
            lines.join("\n")
        }
        Mutation::ReplaceValue(i, v) => {
            let at = i % lines.len();
            if let Some((k, _)) = lines[at].split_once(": ") {
                lines[at] = format!("{k}: {v}");
            }
            lines.join("\n")
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 1500, ..ProptestConfig::default() })]

    // Any sequence of mutations of a shipped policy yields a policy or an error, never
    // a panic, and diagnostics stay inside the file.
    #[test]
    fn mutated_policies_never_panic(
        which in 0usize..4,
        mutations in prop::collection::vec(mutation(), 1..6),
    ) {
        let text = mutate(&shipped()[which], &mutations);
        let path = Path::new("policies").join(format!("{}.yaml", NAMES[which]));
        let diags = match Document::parse(&path, text.clone()) {
            Ok(doc) => {
                let (policy, diags) = validate(&doc, &defaults());
                prop_assert!(policy.is_some() || diags.iter().any(|d| d.is_error()),
                    "neither a policy nor an error for:\n{text}");
                diags
            }
            Err(d) => vec![d],
        };
        assert_located(&diags, &[(path, text.as_str())])?;
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 300, ..ProptestConfig::default() })]

    // A mutated dcb.yaml resolves to settings or to errors, located in the file.
    #[test]
    fn mutated_configs_never_panic(mutations in prop::collection::vec(mutation(), 1..6)) {
        let text = mutate(&project_file("examples/dcb.yaml"), &mutations);
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("dcb.yaml");
        std::fs::write(&path, &text).unwrap();
        let overrides = Overrides { config: Some(path.clone()), ..Overrides::default() };
        let env = |name: &str| (name == "DCB_TEST_SET").then(|| "x".to_string());
        if let Err(diags) = Settings::resolve(&overrides, &env) {
            prop_assert!(diags.iter().any(|d| d.is_error()), "no error in {diags:?}:\n{text}");
            assert_located(&diags, &[(path, text.as_str())])?;
        }
    }

    // Two mutated policies in one folder, loaded together (with and without settings
    // that resolve databases): each file yields a policy or an error of its own.
    #[test]
    fn mutated_policy_folders_never_panic(
        first in 0usize..4,
        second in 0usize..4,
        a in prop::collection::vec(mutation(), 1..6),
        b in prop::collection::vec(mutation(), 0..6),
        uri_database in any::<Option<bool>>(),
    ) {
        let dir = tempfile::tempdir().unwrap();
        let mut texts = Vec::new();
        for (i, (which, mutations)) in [(first, &a), (second, &b)].into_iter().enumerate() {
            let text = mutate(&shipped()[which], mutations);
            // Distinct files, often the same policy name: duplicates are checked too.
            let path = dir.path().join(format!("{}{}.yaml", NAMES[which], if i == 1 && first == second { "2" } else { "" }));
            std::fs::write(&path, &text).unwrap();
            texts.push((path, text));
        }
        let uri = match uri_database {
            Some(true) => Some("mongodb://127.0.0.1:27017/dcMes".to_string()),
            Some(false) => Some("mongodb://127.0.0.1:27017".to_string()),
            None => None,
        };
        let env = |name: &str| if name == "DCB_MONGODB_URI" { uri.clone() } else { None };
        let no_config = Overrides { config: None, ..Overrides::default() };
        let settings = uri.is_some().then(|| Settings::resolve(&no_config, &env).unwrap());
        let databases = settings.as_ref().map(Settings::database_defaults);
        let set = load_paths(&[dir.path().to_path_buf()], &defaults(), databases.as_ref());
        for (path, text) in &texts {
            let loaded = set.policies.iter().any(|p| &p.file == path);
            let failed = set.diagnostics.iter().any(|d| d.is_error() && &d.file == path);
            prop_assert!(loaded || failed, "{} gave neither a policy nor an error:\n{text}", path.display());
            prop_assert!(!(loaded && failed), "{} gave a policy and an error:\n{text}", path.display());
        }
        let texts: Vec<(PathBuf, &str)> = texts.iter().map(|(p, t)| (p.clone(), t.as_str())).collect();
        assert_located(&set.diagnostics, &texts)?;
    }
}
