//! Mutated policy files never panic the loader: every input gets diagnostics or a
//! policy, and every diagnostic points inside the file.

use std::path::Path;

use dcb::document::Document;
use dcb::policy::validate::{Defaults, validate};
use proptest::prelude::*;

fn shipped() -> Vec<String> {
    ["hot", "core", "config", "analytics"]
        .iter()
        .map(|n| {
            std::fs::read_to_string(
                Path::new(env!("CARGO_MANIFEST_DIR")).join(format!("policies/{n}.yaml")),
            )
            .unwrap()
        })
        .collect()
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

    // Any sequence of mutations of a shipped policy yields diagnostics or a policy,
    // never a panic, and diagnostics stay inside the file.
    #[test]
    fn mutated_policies_never_panic(
        which in 0usize..4,
        mutations in prop::collection::vec(mutation(), 1..6),
    ) {
        let mut text = shipped()[which].clone();
        for m in &mutations {
            text = apply(&text, m);
        }
        let name = ["hot", "core", "config", "analytics"][which];
        let path = Path::new("policies").join(format!("{name}.yaml"));
        let defaults = Defaults { timezone: chrono_tz::Tz::UTC, concurrency: 3 };
        let lines = dcb::diag::source_lines(&text).count().max(1);
        let diags = match Document::parse(&path, text.clone()) {
            Ok(doc) => {
                let (policy, diags) = validate(&doc, &defaults);
                prop_assert!(policy.is_some() || diags.iter().any(|d| d.is_error()),
                    "neither a policy nor an error for:\n{text}");
                diags
            }
            Err(d) => vec![d],
        };
        for d in &diags {
            prop_assert!(d.pos.line >= 1 && d.pos.line <= lines + 1,
                "diagnostic {d:?} outside a {lines}-line file:\n{text}");
            let _ = dcb::diag::render(std::slice::from_ref(d), dcb::diag::Format::Human);
        }
    }
}
