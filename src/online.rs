//! `validate --online`: checks against the live database that files alone cannot
//! answer: do the collections exist, and can the time-field filter use an index?

use std::collections::BTreeMap;
use std::time::Duration;

use mongodb::Client;
use mongodb::bson::{Document as BsonDoc, doc};

use crate::config::Settings;
use crate::diag::{Code, Diagnostic, Pos, Severity};
use crate::document::Document;
use crate::policy::{Mode, Policy};
use crate::redact;

/// Connect with short timeouts (validation should answer quickly) and prove it with a
/// ping; the error is scrubbed of the password.
async fn connect(settings: &Settings) -> Result<Client, String> {
    let client = crate::mongo::connect(settings, Duration::from_secs(5))
        .await
        .map_err(|e| e.to_string())?;
    client
        .database("admin")
        .run_command(doc! {"ping": 1})
        .await
        .map_err(|e| redact::text(&e.to_string(), &settings.mongodb_uri))?;
    Ok(client)
}

/// Diagnostics for each policy's collections against the live server.
pub async fn check(settings: &Settings, policies: &[Policy]) -> Vec<Diagnostic> {
    let client = match connect(settings).await {
        Ok(c) => c,
        Err(e) => {
            let at = settings
                .config_file
                .clone()
                .unwrap_or_else(|| settings.policies_dir.clone());
            return vec![
                Diagnostic::error(
                    Code::DatabaseUnreachable,
                    &at,
                    Pos::START,
                    format!("cannot reach {}: {e}", redact::uri(&settings.mongodb_uri)),
                )
                .with_hint("check mongodb.uri / DCB_MONGODB_URI and that the server is up"),
            ];
        }
    };
    let mut out = Vec::new();
    // What each database holds that could be backed up, for patterns and coverage.
    let mut usable: BTreeMap<String, Vec<String>> = BTreeMap::new();
    let mut with_db: Vec<(&Policy, String)> = Vec::new();
    for policy in policies {
        let Ok(doc) = Document::read(&policy.file) else {
            continue;
        };
        let database = match settings.database_for(policy) {
            Ok(d) => d,
            Err(e) => {
                out.push(doc.at(
                    Severity::Error,
                    Code::MissingDatabase,
                    "/name",
                    e.to_string(),
                ));
                continue;
            }
        };
        let db = client.database(&database);
        let existing = match db.list_collection_names().await {
            Ok(names) => names,
            Err(e) => {
                out.push(doc.at(
                    Severity::Error,
                    Code::DatabaseUnreachable,
                    "/name",
                    format!("cannot list collections of `{database}`: {e}"),
                ));
                continue;
            }
        };
        if existing.is_empty() {
            out.push(
                doc.at(
                    Severity::Warning,
                    Code::MissingDatabase,
                    "/database",
                    format!("database `{database}` has no collections (or does not exist)"),
                )
                .with_hint("check the database name and the user's privileges"),
            );
            continue;
        }
        if !usable.contains_key(&database) {
            match crate::discover::collections(&client, &database).await {
                Ok(names) => {
                    usable.insert(database.clone(), names);
                }
                Err(e) => out.push(doc.at(
                    Severity::Error,
                    Code::DatabaseUnreachable,
                    "/name",
                    format!("cannot list collections of `{database}`: {e}"),
                )),
            }
        }
        with_db.push((policy, database.clone()));
        if let Some(names) = usable.get(&database) {
            out.extend(pattern_checks(&doc, policy, &database, names, settings, &db).await);
        }
        for (i, c) in policy.collections.iter().enumerate() {
            let pointer = crate::policy::validate::collection_pointer(&doc, i);
            if !existing.iter().any(|n| n == &c.name) {
                let hint = match crate::document::did_you_mean(&c.name, &existing) {
                    Some(s) => format!("did you mean `{s}`?"),
                    None => {
                        "it may not have been created yet; runs will fail until it exists".into()
                    }
                };
                out.push(
                    doc.at(
                        Severity::Warning,
                        Code::MissingCollection,
                        &pointer,
                        format!("collection `{}` does not exist in `{database}`", c.name),
                    )
                    .with_hint(hint),
                );
                continue;
            }
            if c.mode == Mode::Incremental && !uses_index(&db, &c.name, &c.time_field).await {
                out.push(
                    doc.at(
                        Severity::Warning,
                        Code::UnindexedTimeField,
                        &pointer,
                        format!(
                            "a window on `{}.{}` scans the whole collection (no index on the time field)",
                            c.name, c.time_field
                        ),
                    )
                    .with_hint(format!(
                        "create one: db.{}.createIndex({{ {}: 1 }})",
                        c.name, c.time_field
                    )),
                );
            }
        }
    }
    // A pattern may take what another policy already backs up: say so, as the
    // offline check does for names given outright.
    for (database, names) in &usable {
        // Per collection: the policies that back it up, and whether by a pattern.
        let mut by: BTreeMap<&str, Vec<(&str, bool)>> = BTreeMap::new();
        for (p, _) in with_db.iter().filter(|(p, d)| p.enabled && d == database) {
            let (specs, _) = crate::discover::expand(p, database, names, &settings.exclude);
            for c in specs {
                if let Some(n) = names.iter().find(|n| **n == c.name) {
                    let by_pattern = !p.collections.iter().any(|x| x.name == c.name);
                    by.entry(n.as_str())
                        .or_default()
                        .push((p.name.as_str(), by_pattern));
                }
            }
        }
        for (name, policies) in by
            .into_iter()
            .filter(|(_, v)| v.len() > 1 && v.iter().any(|(_, pattern)| *pattern))
        {
            let policies: Vec<&str> = policies.into_iter().map(|(p, _)| p).collect();
            let Some((first, _)) = with_db.iter().find(|(p, _)| p.name == policies[0]) else {
                continue;
            };
            out.push(
                Diagnostic::warning(
                    Code::CollectionInSeveralPolicies,
                    &first.file,
                    Pos::START,
                    format!(
                        "collection `{database}.{name}` is backed up by policies {} (a pattern matches it)",
                        policies
                            .iter()
                            .map(|p| format!("`{p}`"))
                            .collect::<Vec<_>>()
                            .join(" and ")
                    ),
                )
                .with_hint("narrow the pattern, or name the collection in one policy only"),
            );
        }
    }
    usable.retain(|db, _| with_db.iter().any(|(p, d)| p.enabled && d == db));
    let at = settings
        .config_file
        .clone()
        .unwrap_or_else(|| settings.policies_dir.clone());
    for u in crate::discover::uncovered(&with_db, &usable, &settings.exclude) {
        let message = match &u.note {
            Some(n) => format!(
                "collection `{}.{}` is backed up by no policy: {n}",
                u.database, u.collection
            ),
            None => format!(
                "collection `{}.{}` is backed up by no policy",
                u.database, u.collection
            ),
        };
        out.push(
            Diagnostic::warning(Code::UncoveredCollection, &at, Pos::START, message).with_hint(
                "add it to a policy, match it with a pattern (`\"*_logs\"`), or list it under \
                 `exclude:` in dcb.yaml",
            ),
        );
    }
    out
}

/// A policy's patterns against its database: one that matches nothing is a warning,
/// a match that cannot be backed up an error, and each match's time field is checked
/// for an index like a collection named outright.
async fn pattern_checks(
    doc: &Document,
    policy: &Policy,
    database: &str,
    names: &[String],
    settings: &Settings,
    db: &mongodb::Database,
) -> Vec<Diagnostic> {
    let mut out = Vec::new();
    let (matched, unusable) = crate::discover::expand(policy, database, names, &settings.exclude);
    let matched: Vec<_> = matched
        .into_iter()
        .filter(|c| !policy.collections.iter().any(|n| n.name == c.name))
        .collect();
    let items = doc.value.pointer("/collections").and_then(|v| v.as_array());
    let pointer_of = |pattern: &str| {
        let i = items
            .and_then(|a| {
                a.iter().position(|v| {
                    v.as_str()
                        .or_else(|| v.get("name").and_then(|n| n.as_str()))
                        == Some(pattern)
                })
            })
            .unwrap_or(0);
        crate::policy::validate::collection_pointer(doc, i)
    };
    for p in &policy.patterns {
        let mine: Vec<&str> = matched
            .iter()
            .filter(|c| glob::Pattern::new(&p.name).is_ok_and(|g| g.matches(&c.name)))
            .map(|c| c.name.as_str())
            .collect();
        if mine.is_empty() {
            out.push(
                doc.at(
                    Severity::Warning,
                    Code::MissingCollection,
                    &pointer_of(&p.name),
                    format!("pattern `{}` matches no collection of `{database}`", p.name),
                )
                .with_hint("it is matched again when each run starts"),
            );
        }
    }
    for u in unusable {
        out.push(doc.at(
            Severity::Error,
            Code::InvalidCollectionName,
            &pointer_of(&u.pattern),
            format!(
                "pattern `{}` matches `{database}.{}`, which cannot be backed up: {}",
                u.pattern, u.collection, u.why
            ),
        ));
    }
    for c in matched.iter().filter(|c| c.mode == Mode::Incremental) {
        if !uses_index(db, &c.name, &c.time_field).await {
            out.push(doc.at(
                Severity::Warning,
                Code::UnindexedTimeField,
                &pointer_of(
                    &policy
                        .patterns
                        .iter()
                        .find(|p| glob::Pattern::new(&p.name).is_ok_and(|g| g.matches(&c.name)))
                        .map(|p| p.name.clone())
                        .unwrap_or_default(),
                ),
                format!(
                    "a window on `{}.{}` (matched by a pattern) scans the whole collection (no index on the time field)",
                    c.name, c.time_field
                ),
            ));
        }
    }
    out
}

/// Ask the planner: does a range filter on the time field avoid a collection scan?
async fn uses_index(db: &mongodb::Database, coll: &str, field: &str) -> bool {
    let probe = mongodb::bson::DateTime::from_millis(0);
    let cmd = doc! {
        "explain": { "find": coll, "filter": { field: { "$gte": probe } } },
        "verbosity": "queryPlanner",
    };
    let reply = db.run_command(cmd).await;
    match reply.as_ref().ok().and_then(plan_uses_index) {
        Some(indexed) => indexed,
        // Without explain, or a reply that does not show the plan, the index list decides.
        None => has_leading_index(db, coll, field).await,
    }
}

/// Whether an explain reply's winning plan avoids a collection scan; `None` when the
/// reply has no `queryPlanner.winningPlan` to tell.
fn plan_uses_index(reply: &BsonDoc) -> Option<bool> {
    let plan = reply
        .get_document("queryPlanner")
        .and_then(|q| q.get_document("winningPlan"))
        .ok()?;
    Some(!contains_stage(plan, "COLLSCAN"))
}

fn contains_stage(plan: &BsonDoc, stage: &str) -> bool {
    if plan.get_str("stage").is_ok_and(|s| s == stage) {
        return true;
    }
    plan.iter().any(|(_, v)| match v {
        mongodb::bson::Bson::Document(d) => contains_stage(d, stage),
        mongodb::bson::Bson::Array(a) => a
            .iter()
            .any(|x| x.as_document().is_some_and(|d| contains_stage(d, stage))),
        _ => false,
    })
}

async fn has_leading_index(db: &mongodb::Database, coll: &str, field: &str) -> bool {
    use futures_util::TryStreamExt;
    let Ok(cursor) = db.collection::<BsonDoc>(coll).list_indexes().await else {
        return false;
    };
    let Ok(indexes) = cursor.try_collect::<Vec<_>>().await else {
        return false;
    };
    indexes
        .iter()
        .any(|ix| ix.keys.keys().next().map(String::as_str) == Some(field))
}

#[cfg(test)]
mod tests {
    use super::*;

    // A plan decides when the reply has one; a reply without `winningPlan` decides
    // nothing (the index list is asked instead), rather than passing as indexed.
    #[test]
    fn explain_without_a_plan_decides_nothing() {
        let scan = doc! {"queryPlanner": {"winningPlan": {"stage": "COLLSCAN"}}};
        let ixscan = doc! {"queryPlanner": {"winningPlan": {"stage": "FETCH",
        "inputStage": {"stage": "IXSCAN", "keyPattern": {"createdAt": 1}}}}};
        let nested = doc! {"queryPlanner": {"winningPlan": {"stage": "SHARD_MERGE",
        "shards": [{"stage": "COLLSCAN"}]}}};
        assert_eq!(plan_uses_index(&scan), Some(false));
        assert_eq!(plan_uses_index(&ixscan), Some(true));
        assert_eq!(plan_uses_index(&nested), Some(false));
        assert_eq!(plan_uses_index(&doc! {"ok": 1}), None);
        assert_eq!(
            plan_uses_index(&doc! {"queryPlanner": {"plannerVersion": 1}}),
            None
        );
        assert_eq!(
            plan_uses_index(&doc! {"queryPlanner": {"winningPlan": "?"}}),
            None
        );
    }
}
