//! The layers of `src/` point one way: no module reaches, through `use` or a `crate::`
//! path, a module that reaches it back. Unit-test modules are left out (a test may
//! use anything), and so are references between a module and its own parent or child
//! (`export` and `export::archive` are one unit).

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Module path of a source file: `src/export/archive.rs` is `export::archive`.
fn module_of(src: &Path, file: &Path) -> Option<String> {
    let rel = file.strip_prefix(src).ok()?.with_extension("");
    let parts: Vec<String> = rel
        .components()
        .map(|c| c.as_os_str().to_string_lossy().into_owned())
        .collect();
    match parts.as_slice() {
        [one] if one == "main" => None,
        [one] if one == "lib" => Some(String::new()),
        _ => Some(parts.join("::")),
    }
}

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

/// The code with comments, string and char literals blanked (so braces and paths in
/// them do not count) and every `#[cfg(test)]` item removed.
fn code_only(text: &str) -> String {
    let b = text.as_bytes();
    let mut out = String::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let rest = &text[i..];
        if rest.starts_with("//") {
            let end = rest.find('\n').unwrap_or(rest.len());
            i += end;
        } else if rest.starts_with("/*") {
            let end = rest.find("*/").map_or(rest.len(), |e| e + 2);
            i += end;
        } else if rest.starts_with("r#\"") || rest.starts_with("r\"") {
            let hashes = rest[1..].chars().take_while(|c| *c == '#').count();
            let close = format!("\"{}", "#".repeat(hashes));
            let start = 2 + hashes;
            let end = rest[start..]
                .find(&close)
                .map_or(rest.len(), |e| start + e + close.len());
            out.push_str("\"\"");
            i += end;
        } else if b[i] == b'"' {
            let mut j = i + 1;
            while j < b.len() && b[j] != b'"' {
                j += if b[j] == b'\\' { 2 } else { 1 };
            }
            out.push_str("\"\"");
            i = j + 1;
        } else if b[i] == b'\'' && is_char_literal(rest) {
            let end = rest[1..].find('\'').map_or(rest.len(), |e| e + 2);
            out.push_str("' '");
            i += end;
        } else {
            let c = rest.chars().next().unwrap();
            out.push(c);
            i += c.len_utf8();
        }
    }
    strip_test_items(&out)
}

/// `'x'`, `'\n'`, `'\u{1F600}'`: a char literal, not a lifetime.
fn is_char_literal(rest: &str) -> bool {
    let mut chars = rest.chars().skip(1);
    match chars.next() {
        Some('\\') => true,
        Some(_) => chars.next() == Some('\''),
        None => false,
    }
}

/// Remove each item marked `#[cfg(test)]`: up to its matching `}` or its `;`.
fn strip_test_items(code: &str) -> String {
    let mut out = String::new();
    let mut rest = code;
    while let Some(at) = rest.find("#[cfg(test)]") {
        out.push_str(&rest[..at]);
        let after = &rest[at..];
        let brace = after.find('{');
        let semi = after.find(';');
        let end = match (brace, semi) {
            (Some(b), Some(s)) if s < b => s + 1,
            (Some(b), _) => {
                let mut depth = 0;
                let mut end = after.len();
                for (k, c) in after[b..].char_indices() {
                    match c {
                        '{' => depth += 1,
                        '}' => {
                            depth -= 1;
                            if depth == 0 {
                                end = b + k + 1;
                                break;
                            }
                        }
                        _ => {}
                    }
                }
                end
            }
            (None, Some(s)) => s + 1,
            (None, None) => after.len(),
        };
        rest = &after[end..];
    }
    out.push_str(rest);
    out
}

/// Every path the code names from the crate root: `crate::a::b`, `use crate::{a, b::c}`,
/// `super::x` (resolved against `module`), and `use` of a child module (`use self::x`
/// or a plain `use x::` where `x` is a child).
fn referenced_paths(code: &str, module: &str) -> Vec<Vec<String>> {
    let mut out = Vec::new();
    let tokens = tokenize(code);
    let base: Vec<String> = if module.is_empty() {
        Vec::new()
    } else {
        module.split("::").map(String::from).collect()
    };
    let mut i = 0;
    while i < tokens.len() {
        let start = match tokens[i].as_str() {
            "crate" => Some(Vec::new()),
            "super" if i == 0 || tokens[i - 1] != "::" => {
                let mut up = base.clone();
                let mut j = i;
                while j < tokens.len() && tokens[j] == "super" {
                    up.pop();
                    j += 2; // `super` `::`
                }
                // Point `i` at the last `super`, so the walk below continues after it.
                i = j - 2;
                Some(up)
            }
            "self"
                if i + 1 < tokens.len()
                    && tokens[i + 1] == "::"
                    && (i == 0 || tokens[i - 1] != "::") =>
            {
                Some(base.clone())
            }
            _ => None,
        };
        if let Some(prefix) = start {
            collect_tree(&tokens, i + 1, prefix, &mut out);
        }
        i += 1;
    }
    out
}

/// From `tokens[i]` (just after `crate`/`super`/`self`), read `::a::b::{c, d::e}` into
/// full paths.
fn collect_tree(
    tokens: &[String],
    mut i: usize,
    mut prefix: Vec<String>,
    out: &mut Vec<Vec<String>>,
) {
    while i + 1 < tokens.len() && tokens[i] == "::" {
        let next = &tokens[i + 1];
        if next == "{" {
            // A group: split at top-level commas.
            let mut depth = 0;
            let mut j = i + 2;
            let mut item_start = j;
            while j < tokens.len() {
                match tokens[j].as_str() {
                    "{" => depth += 1,
                    "}" if depth == 0 => {
                        group_item(tokens, item_start, j, &prefix, out);
                        return;
                    }
                    "}" => depth -= 1,
                    "," if depth == 0 => {
                        group_item(tokens, item_start, j, &prefix, out);
                        item_start = j + 1;
                    }
                    _ => {}
                }
                j += 1;
            }
            return;
        }
        if !is_ident(next) {
            break;
        }
        prefix.push(next.clone());
        i += 2;
    }
    out.push(prefix);
}

fn group_item(
    tokens: &[String],
    from: usize,
    to: usize,
    prefix: &[String],
    out: &mut Vec<Vec<String>>,
) {
    if from >= to {
        return;
    }
    let first = &tokens[from];
    if first == "self" {
        out.push(prefix.to_vec());
        return;
    }
    if !is_ident(first) {
        return;
    }
    let mut p = prefix.to_vec();
    p.push(first.clone());
    // Re-enter the tree walk for `a::b::{..}` inside the group.
    let sub: Vec<String> = tokens[from + 1..to].to_vec();
    collect_tree(&sub, 0, p, out);
}

fn is_ident(s: &str) -> bool {
    s.chars()
        .next()
        .is_some_and(|c| c.is_alphabetic() || c == '_')
        && s.chars().all(|c| c.is_alphanumeric() || c == '_')
}

fn tokenize(code: &str) -> Vec<String> {
    let mut out = Vec::new();
    let chars: Vec<char> = code.chars().collect();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        if c.is_alphanumeric() || c == '_' {
            let start = i;
            while i < chars.len() && (chars[i].is_alphanumeric() || chars[i] == '_') {
                i += 1;
            }
            out.push(chars[start..i].iter().collect());
        } else if c == ':' && chars.get(i + 1) == Some(&':') {
            out.push("::".into());
            i += 2;
        } else if c.is_whitespace() {
            i += 1;
        } else {
            out.push(c.to_string());
            i += 1;
        }
    }
    out
}

/// The longest known module that `path` starts with.
fn resolve(path: &[String], modules: &BTreeSet<String>) -> Option<String> {
    (1..=path.len())
        .rev()
        .map(|n| path[..n].join("::"))
        .find(|m| modules.contains(m))
}

fn related(a: &str, b: &str) -> bool {
    let within =
        |outer: &str, inner: &str| outer.is_empty() || inner.starts_with(&format!("{outer}::"));
    a == b || within(a, b) || within(b, a)
}

fn graph() -> BTreeMap<String, BTreeSet<String>> {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    let sources: BTreeMap<String, String> = files
        .iter()
        .filter_map(|f| Some((module_of(&src, f)?, std::fs::read_to_string(f).unwrap())))
        .collect();
    let modules: BTreeSet<String> = sources.keys().cloned().collect();
    let mut edges: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for (module, text) in &sources {
        let code = code_only(text);
        let to = edges.entry(module.clone()).or_default();
        for path in referenced_paths(&code, module) {
            if let Some(target) = resolve(&path, &modules)
                && !target.is_empty()
                && !related(module, &target)
            {
                to.insert(target);
            }
        }
    }
    edges
}

/// One cycle of the graph, if it has any, as the modules along it.
fn find_cycle(edges: &BTreeMap<String, BTreeSet<String>>) -> Option<Vec<String>> {
    #[derive(Clone, Copy, PartialEq)]
    enum Mark {
        New,
        Open,
        Done,
    }
    fn visit(
        n: &str,
        edges: &BTreeMap<String, BTreeSet<String>>,
        marks: &mut BTreeMap<String, Mark>,
        stack: &mut Vec<String>,
    ) -> Option<Vec<String>> {
        marks.insert(n.to_string(), Mark::Open);
        stack.push(n.to_string());
        for m in edges.get(n).into_iter().flatten() {
            match marks.get(m).copied().unwrap_or(Mark::New) {
                Mark::Open => {
                    let at = stack.iter().position(|s| s == m).unwrap();
                    let mut cycle = stack[at..].to_vec();
                    cycle.push(m.clone());
                    return Some(cycle);
                }
                Mark::New => {
                    if let Some(c) = visit(m, edges, marks, stack) {
                        return Some(c);
                    }
                }
                Mark::Done => {}
            }
        }
        stack.pop();
        marks.insert(n.to_string(), Mark::Done);
        None
    }
    let mut marks = BTreeMap::new();
    for n in edges.keys() {
        if marks.get(n).copied().unwrap_or(Mark::New) == Mark::New {
            let mut stack = Vec::new();
            if let Some(c) = visit(n, edges, &mut marks, &mut stack) {
                return Some(c);
            }
        }
    }
    None
}

/// Every cycle of the graph, each found one broken before looking again.
fn all_cycles(edges: &BTreeMap<String, BTreeSet<String>>) -> Vec<String> {
    let mut remaining = edges.clone();
    let mut cycles = Vec::new();
    while let Some(c) = find_cycle(&remaining) {
        cycles.push(c.join(" -> "));
        let (a, b) = (&c[c.len() - 2], &c[c.len() - 1]);
        remaining.get_mut(a).unwrap().remove(b);
    }
    cycles
}

/// The top-level module a module belongs to: `export::archive` is in `export`.
fn family(module: &str) -> String {
    module.split("::").next().unwrap_or(module).to_string()
}

// The layers of src/ form no cycle: neither the top-level modules (each with its
// children, so `serve` may not import from `commands` while `commands::serve` imports
// `serve`), nor the files within one of them.
#[test]
fn no_import_cycles() {
    let edges = graph();
    assert!(
        edges.len() > 20,
        "the graph is suspiciously small: {} modules",
        edges.len()
    );
    let mut families: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for (from, tos) in &edges {
        let f = family(from);
        let set = families.entry(f.clone()).or_default();
        set.extend(tos.iter().map(|t| family(t)).filter(|t| *t != f));
    }
    let mut cycles = all_cycles(&families);
    for name in families.keys() {
        let inside: BTreeMap<String, BTreeSet<String>> = edges
            .iter()
            .filter(|(m, _)| family(m) == *name)
            .map(|(m, tos)| {
                let tos = tos.iter().filter(|t| family(t) == *name).cloned().collect();
                (m.clone(), tos)
            })
            .collect();
        cycles.extend(all_cycles(&inside));
    }
    assert!(
        cycles.is_empty(),
        "import cycles in src/ (a module may not reach, directly or through others, a module that reaches it):\n{}",
        cycles.join("\n")
    );
}

// The checker itself: it sees `use`, grouped `use`, `crate::` paths in code and `super::`,
// and ignores comments, strings, test modules and a module's own family.
#[test]
fn the_checker_sees_what_it_should() {
    let code = code_only(
        "use crate::{a::b, c::{d, e::f}};\nuse super::g;\nfn x() { crate::h::i(); }\n\
         // crate::comment::j\nconst S: &str = \"crate::string::k\";\n\
         #[cfg(test)]\nmod tests { use crate::testonly::l; }\nuse self::child::m;\n",
    );
    let paths: Vec<String> = referenced_paths(&code, "p::q")
        .into_iter()
        .map(|p| p.join("::"))
        .collect();
    assert_eq!(
        paths,
        ["a::b", "c::d", "c::e::f", "p::g", "h::i", "p::q::child::m"]
    );
    let edges: BTreeMap<String, BTreeSet<String>> = [
        ("a", vec!["b"]),
        ("b", vec!["c"]),
        ("c", vec!["a"]),
        ("d", vec!["a"]),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.into_iter().map(String::from).collect()))
    .collect();
    assert_eq!(find_cycle(&edges).unwrap(), ["a", "b", "c", "a"]);
    assert!(related("export", "export::archive"));
    assert!(!related("export", "exporter"));
}
