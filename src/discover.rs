//! Collections named by pattern (`"*_logs"`), matched against the database when each
//! run starts, and the collections of the backed-up databases that no policy covers
//! (so one added later is noticed before it is needed).

use std::collections::{BTreeMap, BTreeSet};

use futures_util::TryStreamExt as _;
use mongodb::bson::doc;

use crate::names;
use crate::policy::{CollectionSpec, Policy};

/// The collections of a database that can be backed up: no views (they hold no data
/// of their own) and no `system.*` collections. Sorted.
pub async fn collections(
    client: &mongodb::Client,
    database: &str,
) -> mongodb::error::Result<Vec<String>> {
    let specs: Vec<mongodb::results::CollectionSpecification> = client
        .database(database)
        .list_collections()
        .filter(doc! {"type": {"$ne": "view"}})
        .await?
        .try_collect()
        .await?;
    let mut out: Vec<String> = specs
        .into_iter()
        .map(|s| s.name)
        .filter(|n| !n.starts_with("system."))
        .collect();
    out.sort();
    Ok(out)
}

/// Deliberate exclusions (dcb.yaml's `exclude`): glob patterns matched against a
/// collection's name and against `<database>.<collection>`.
#[derive(Debug, Clone, Default)]
pub struct Exclude(Vec<glob::Pattern>);

impl Exclude {
    /// Patterns already checked by the config's validation; a bad one is dropped.
    pub fn new(patterns: &[String]) -> Exclude {
        Exclude(
            patterns
                .iter()
                .filter_map(|p| glob::Pattern::new(p).ok())
                .collect(),
        )
    }

    /// The exclusion that names `database.collection`, if any.
    pub fn names(&self, database: &str, collection: &str) -> Option<&str> {
        let qualified = format!("{database}.{collection}");
        self.0
            .iter()
            .find(|p| p.matches(collection) || p.matches(&qualified))
            .map(glob::Pattern::as_str)
    }
}

/// A collection a pattern matched that cannot be backed up (its name cannot become a
/// file name).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unusable {
    pub collection: String,
    pub pattern: String,
    pub why: String,
}

/// The collections `policy` backs up in a database that holds `existing`: those named
/// outright, then each other existing collection that a pattern matches (the first
/// pattern's settings), unless an exclusion names it.
pub fn expand(
    policy: &Policy,
    database: &str,
    existing: &[String],
    exclude: &Exclude,
) -> (Vec<CollectionSpec>, Vec<Unusable>) {
    let mut out = policy.collections.clone();
    let mut unusable = Vec::new();
    if policy.patterns.is_empty() {
        return (out, unusable);
    }
    let named: BTreeSet<&str> = policy.collections.iter().map(|c| c.name.as_str()).collect();
    let patterns: Vec<(glob::Pattern, &CollectionSpec)> = policy
        .patterns
        .iter()
        .filter_map(|p| Some((glob::Pattern::new(&p.name).ok()?, p)))
        .collect();
    for name in existing {
        if named.contains(name.as_str()) || exclude.names(database, name).is_some() {
            continue;
        }
        let Some((_, spec)) = patterns.iter().find(|(p, _)| p.matches(name)) else {
            continue;
        };
        if let Err(e) = names::check_collection(name) {
            unusable.push(Unusable {
                collection: name.clone(),
                pattern: spec.name.clone(),
                why: e.0,
            });
            continue;
        }
        out.push(CollectionSpec {
            name: name.clone(),
            ..(*spec).clone()
        });
    }
    (out, unusable)
}

/// Whether a policy would back up `collection` of a database (enabled or not).
pub fn covers(policy: &Policy, database: &str, collection: &str, exclude: &Exclude) -> bool {
    let (specs, _) = expand(policy, database, &[collection.to_string()], exclude);
    specs.iter().any(|c| c.name == collection)
}

/// A collection of a backed-up database that no enabled policy backs up and no
/// exclusion names.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Uncovered {
    pub database: String,
    pub collection: String,
    /// Why, beyond "no policy names it": a disabled policy would, or a pattern matched
    /// it but its name cannot become a file.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
}

/// Every collection of the databases in `existing` (by database) that no enabled
/// policy of `policies` (each with its database) backs up and no exclusion names.
pub fn uncovered(
    policies: &[(&Policy, String)],
    existing: &BTreeMap<String, Vec<String>>,
    exclude: &Exclude,
) -> Vec<Uncovered> {
    let mut out = Vec::new();
    for (database, names) in existing {
        let mine: Vec<&Policy> = policies
            .iter()
            .filter(|(_, d)| d == database)
            .map(|(p, _)| *p)
            .collect();
        let mut unusable: BTreeMap<String, String> = BTreeMap::new();
        let mut covered: BTreeSet<String> = BTreeSet::new();
        for p in mine.iter().filter(|p| p.enabled) {
            let (specs, bad) = expand(p, database, names, exclude);
            covered.extend(specs.into_iter().map(|c| c.name));
            for u in bad {
                unusable.entry(u.collection).or_insert(format!(
                    "matched by `{}` in policy `{}`, but {}",
                    u.pattern, p.name, u.why
                ));
            }
        }
        for name in names {
            if covered.contains(name) || exclude.names(database, name).is_some() {
                continue;
            }
            let disabled = mine
                .iter()
                .find(|p| !p.enabled && covers(p, database, name, exclude))
                .map(|p| format!("policy `{}` names it but is disabled", p.name));
            out.push(Uncovered {
                database: database.clone(),
                collection: name.clone(),
                note: unusable.remove(name).or(disabled),
            });
        }
    }
    out
}

/// `db.a, db.b (why)` for messages.
pub fn describe(list: &[Uncovered]) -> String {
    list.iter()
        .map(|u| match &u.note {
            Some(n) => format!("{}.{} ({n})", u.database, u.collection),
            None => format!("{}.{}", u.database, u.collection),
        })
        .collect::<Vec<_>>()
        .join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::document::Document;
    use crate::policy::validate::Defaults;
    use crate::policy::validate::validate;
    use std::path::Path;

    fn policy(rest: &str) -> Policy {
        let text =
            format!("name: p\nschedule: \"0 * * * *\"\ntimezone: UTC\nretention: 7d\n{rest}");
        let doc = Document::parse(Path::new("p.yaml"), text).unwrap();
        let defaults = Defaults {
            timezone: chrono_tz::Tz::UTC,
            concurrency: 3,
            targets: vec!["local".into()],
        };
        let (policy, diags) = validate(&doc, &defaults);
        policy.unwrap_or_else(|| panic!("{diags:?}"))
    }

    fn names(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    // Named collections come first and keep their own settings; a pattern adds the
    // other existing collections it matches, with its settings; the first pattern
    // wins; an exclusion removes a match but not a name given outright.
    #[test]
    fn patterns_expand_against_the_database() {
        let p = policy(
            "collections:\n  - api_logs\n  - {name: \"*_logs\", timeField: at}\n  - {name: \"*\", mode: snapshot}\n",
        );
        assert_eq!(p.collections.len(), 1);
        assert_eq!(p.patterns.len(), 2);
        let existing = names(&["api_logs", "error_logs", "old_logs", "roles", "a:b"]);
        let exclude = Exclude::new(&names(&["old_*", "db.api_logs"]));
        let (got, bad) = expand(&p, "db", &existing, &exclude);
        let view: Vec<(&str, &str, crate::policy::Mode)> = got
            .iter()
            .map(|c| (c.name.as_str(), c.time_field.as_str(), c.mode))
            .collect();
        use crate::policy::Mode::*;
        assert_eq!(
            view,
            [
                ("api_logs", "createdAt", Incremental),
                ("error_logs", "at", Incremental),
                ("roles", "createdAt", Snapshot),
            ]
        );
        assert_eq!(bad.len(), 1);
        assert_eq!(bad[0].collection, "a:b");
        assert_eq!(bad[0].pattern, "*");
    }

    // Uncovered: what no enabled policy takes and no exclusion names, with a note
    // for a disabled policy's collection and for a match that cannot be a file.
    #[test]
    fn uncovered_lists_what_nothing_takes() {
        let hot = policy("collections: [api_logs, \"line?_scans\"]\n");
        let off = policy("enabled: false\ncollections: [roles]\n");
        let all = policy("collections: [\"*\"]\n");
        let existing: BTreeMap<String, Vec<String>> = [
            (
                "db".to_string(),
                names(&["api_logs", "line1_scans", "line10_scans", "roles", "tmp_x"]),
            ),
            ("other".to_string(), names(&["a:b", "c"])),
        ]
        .into();
        let exclude = Exclude::new(&names(&["tmp_*"]));
        let got = uncovered(
            &[
                (&hot, "db".into()),
                (&off, "db".into()),
                (&all, "other".into()),
            ],
            &existing,
            &exclude,
        );
        let view: Vec<(&str, &str, Option<&str>)> = got
            .iter()
            .map(|u| {
                (
                    u.database.as_str(),
                    u.collection.as_str(),
                    u.note.as_deref(),
                )
            })
            .collect();
        assert_eq!(view.len(), 3, "{view:?}");
        assert_eq!(view[0], ("db", "line10_scans", None));
        assert_eq!(
            view[1],
            ("db", "roles", Some("policy `p` names it but is disabled"))
        );
        assert_eq!(view[2].1, "a:b");
        assert!(view[2].2.unwrap().contains("matched by `*`"), "{view:?}");
    }
}
