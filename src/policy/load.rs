//! Reading a folder (or a list) of policy files into validated policies, with the
//! checks that span files.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use super::validate::{Defaults, database_checks, validate};
use super::{DatabaseDefaults, Policy};
use crate::diag::{self, Code, Diagnostic, Pos, Severity};
use crate::document::Document;

/// The outcome of loading policies: the valid ones, and every problem found.
#[derive(Debug, Default)]
pub struct PolicySet {
    pub policies: Vec<Policy>,
    pub diagnostics: Vec<Diagnostic>,
}

impl PolicySet {
    pub fn has_errors(&self) -> bool {
        self.diagnostics.iter().any(Diagnostic::is_error)
    }
}

/// `*.yaml` / `*.yml`, but not hidden files (editors keep their temporary copies there).
fn is_policy_file(p: &Path) -> bool {
    let hidden = p
        .file_name()
        .and_then(|n| n.to_str())
        .is_some_and(|n| n.starts_with('.'));
    !hidden
        && matches!(
            p.extension().and_then(|e| e.to_str()),
            Some("yaml") | Some("yml")
        )
}

/// Expand folders into their `*.yaml` / `*.yml` files (sorted); keep files as given.
fn expand(paths: &[PathBuf], diags: &mut Vec<Diagnostic>) -> Vec<PathBuf> {
    let mut files = Vec::new();
    for path in paths {
        if path.is_dir() {
            match std::fs::read_dir(path) {
                Ok(entries) => {
                    let mut found: Vec<PathBuf> = entries
                        .filter_map(Result::ok)
                        .map(|e| e.path())
                        .filter(|p| p.is_file() && is_policy_file(p))
                        .collect();
                    found.sort();
                    if found.is_empty() {
                        diags.push(
                            Diagnostic::error(
                                Code::NoPolicies,
                                path,
                                Pos::START,
                                "no policy files (*.yaml) in this folder",
                            )
                            .with_hint(
                                "add a policy, e.g. copy one from the project's policies/ folder",
                            ),
                        );
                    }
                    files.extend(found);
                }
                Err(e) => diags.push(Diagnostic::error(
                    Code::IoError,
                    path,
                    Pos::START,
                    format!("cannot read folder: {e}"),
                )),
            }
        } else {
            files.push(path.clone());
        }
    }
    files
}

/// A validated policy, its document, and the database it backs up (when known).
struct Loaded {
    policy: Policy,
    doc: Document,
    database: Option<String>,
}

/// Load and validate policy files and folders. With `databases`, each policy's
/// database is resolved as a run resolves it, and a policy without one is a warning.
pub fn load_paths(
    paths: &[PathBuf],
    defaults: &Defaults,
    databases: Option<&DatabaseDefaults>,
) -> PolicySet {
    let mut set = PolicySet::default();
    let files = expand(paths, &mut set.diagnostics);
    let mut loaded: Vec<Loaded> = Vec::new();
    for file in files {
        let doc = match Document::read(&file) {
            Ok(doc) => doc,
            Err(d) => {
                set.diagnostics.push(d);
                continue;
            }
        };
        let (policy, diags) = validate(&doc, defaults);
        set.diagnostics.extend(diags);
        let Some(policy) = policy else { continue };
        let database = match databases {
            None => policy.database.clone(),
            Some(d) => match policy.database_in(d) {
                Ok(db) => {
                    let diags = database_checks(&doc, &policy, &db);
                    let failed = diags.iter().any(Diagnostic::is_error);
                    set.diagnostics.extend(diags);
                    if failed {
                        continue;
                    }
                    Some(db)
                }
                // A warning, not an error: validating policies alone (in CI, without
                // the deployment's dcb.yaml) is normal; `run` refuses such a policy.
                Err(_) => {
                    set.diagnostics.push(missing_database(&doc, &policy));
                    None
                }
            },
        };
        loaded.push(Loaded {
            policy,
            doc,
            database,
        });
    }
    cross_file_checks(&loaded, &mut set.diagnostics);
    diag::sort(&mut set.diagnostics);
    let mut names = std::collections::HashSet::new();
    set.policies = loaded
        .into_iter()
        .map(|l| l.policy)
        .filter(|p| names.insert(p.name.clone()))
        .collect();
    set
}

fn missing_database(doc: &Document, policy: &Policy) -> Diagnostic {
    doc.at(
        Severity::Warning,
        Code::MissingDatabase,
        "/name",
        format!(
            "policy `{}` names no database, and neither does the configuration; `dcb run` will refuse it",
            policy.name
        ),
    )
    .with_hint(
        "set `database:` in this policy, or `database:` in dcb.yaml, or put it in the \
         connection URI (mongodb://host/DB in mongodb.uri or DCB_MONGODB_URI); to check \
         the deployment, validate with its --config",
    )
}

/// Load the policies folder.
pub fn load_dir(dir: &Path, defaults: &Defaults) -> PolicySet {
    if !dir.exists() {
        return PolicySet {
            policies: Vec::new(),
            diagnostics: vec![
                Diagnostic::error(
                    Code::IoError,
                    dir,
                    Pos::START,
                    "policies folder does not exist",
                )
                .with_hint(
                    "create it, or point --policies / DCB_POLICIES_DIR / policiesDir at yours",
                ),
            ],
        };
    }
    load_paths(&[dir.to_path_buf()], defaults, None)
}

fn cross_file_checks(loaded: &[Loaded], diags: &mut Vec<Diagnostic>) {
    let mut by_name: HashMap<&str, &Document> = HashMap::new();
    let mut by_collection: HashMap<(Option<&str>, &str), &str> = HashMap::new();
    for Loaded {
        policy,
        doc,
        database,
    } in loaded
    {
        if let Some(first) = by_name.insert(&policy.name, doc) {
            diags.push(
                doc.at(
                    Severity::Error,
                    Code::DuplicatePolicy,
                    "/name",
                    format!(
                        "policy `{}` is also defined in {}",
                        policy.name,
                        first.path.display()
                    ),
                )
                .with_hint("policy names must be unique"),
            );
            continue;
        }
        for (i, c) in policy.collections.iter().enumerate() {
            // The database the run will read, wherever it was set.
            let key = (database.as_deref(), c.name.as_str());
            if let Some(other) = by_collection.insert(key, &policy.name)
                && other != policy.name
            {
                diags.push(
                    doc.at(
                        Severity::Warning,
                        Code::CollectionInSeveralPolicies,
                        &format!("/collections/{i}"),
                        format!(
                            "collection `{}` is also backed up by policy `{other}`",
                            c.name
                        ),
                    )
                    .with_hint(
                        "back each collection up in one policy, or accept duplicate archives",
                    ),
                );
            }
        }
    }
}
