//! Every policy as a run resolves it, each value with its origin.

use serde_json::{Value, json};

use super::*;

/// Every policy as a run resolves it, each value with its origin: set in the policy
/// file (`FILE:LINE`), inherited from the configuration (the origin of the setting it
/// inherits), or a default. `config` is [`Effective::config`].
pub fn policies(settings: &Settings, config: &[Entry], policies: &[Policy]) -> Vec<PolicyView> {
    policies
        .iter()
        .map(|p| policy_view(settings, config, p))
        .collect()
}

fn policy_view(settings: &Settings, config: &[Entry], policy: &Policy) -> PolicyView {
    let none = |_: &str| -> Option<String> { None };
    // Read again for positions; a file that vanished since shows every value's origin
    // as the file itself.
    let doc = Document::read(&policy.file).ok();
    let file_name = policy.file.display().to_string();
    let at = |pointer: &str| -> Option<String> {
        match &doc {
            Some(doc) => file_origin(doc, pointer, &none),
            None => Some(file_name.clone()),
        }
    };
    let raw = |pointer: &str| doc.as_ref().and_then(|d| d.value.pointer(pointer)).cloned();
    let inherited = |key: &str| {
        config
            .iter()
            .find(|e| e.key == key)
            .map_or_else(|| DEFAULT.to_string(), |e| e.origin.clone())
    };
    let own_or = |pointer: &str, fallback: String| at(pointer).unwrap_or(fallback);
    let mut s = Vec::new();
    let mut push = |key: &str, value: Value, origin: String| s.push(entry(key, value, origin));
    push(
        "enabled",
        json!(policy.enabled),
        own_or("/enabled", DEFAULT.into()),
    );
    push(
        "description",
        policy
            .description
            .clone()
            .map_or(Value::Null, Value::String),
        own_or("/description", DEFAULT.into()),
    );
    push(
        "schedule",
        json!(policy.schedule.pattern()),
        own_or("/schedule", DEFAULT.into()),
    );
    push(
        "timezone",
        json!(policy.timezone.name()),
        own_or("/timezone", inherited("timezone")),
    );
    let (database, database_origin) = match &policy.database {
        Some(db) => (json!(db), own_or("/database", DEFAULT.into())),
        None => match settings.database_for(policy) {
            Ok(db) if settings.database.is_some() => (json!(db), inherited("database")),
            Ok(db) => (
                json!(db),
                format!("{} (the URI's database)", inherited("mongodb.uri")),
            ),
            Err(_) => (Value::Null, DEFAULT.into()),
        },
    };
    push("database", database, database_origin);
    let policy_level = |pointer: &str, default: Value| raw(pointer).unwrap_or(default);
    push(
        "timeField",
        policy_level("/timeField", json!("createdAt")),
        own_or("/timeField", DEFAULT.into()),
    );
    push(
        "mode",
        policy_level("/mode", json!("incremental")),
        own_or("/mode", DEFAULT.into()),
    );
    push(
        "full",
        policy_level("/full", json!("never")),
        own_or("/full", DEFAULT.into()),
    );
    push(
        "captureUpdates",
        policy_level("/captureUpdates", json!(true)),
        own_or("/captureUpdates", DEFAULT.into()),
    );
    push(
        "window.initial",
        json!(policy.window.initial.to_string()),
        own_or("/window/initial", DEFAULT.into()),
    );
    push(
        "window.settle",
        json!(policy.window.settle.to_string()),
        own_or("/window/settle", DEFAULT.into()),
    );
    push(
        "window.overlap",
        json!(policy.window.overlap.to_string()),
        own_or("/window/overlap", DEFAULT.into()),
    );
    push(
        "retention",
        json!(policy.retention.to_string()),
        own_or("/retention", DEFAULT.into()),
    );
    push(
        "keepLast",
        json!(policy.keep_last),
        own_or("/keepLast", DEFAULT.into()),
    );
    push(
        "compression.level",
        json!(policy.compression_level),
        own_or("/compression/level", DEFAULT.into()),
    );
    push(
        "concurrency",
        json!(policy.concurrency),
        own_or("/concurrency", inherited("concurrency")),
    );
    push(
        "encryption.recipients",
        json!(
            policy
                .recipients
                .clone()
                .unwrap_or_else(|| settings.recipients.clone())
        ),
        own_or("/encryption/recipients", inherited("encryption.recipients")),
    );
    push(
        "targets",
        json!(settings.target_names_for(policy)),
        own_or("/targets", inherited("defaultTargets")),
    );
    // The lock its runs take: `auto` decides per policy, by its targets.
    let lease = settings.uses_lease(policy);
    let lock_origin = match settings.lock.kind {
        crate::config::storage::LockKind::Auto if lease => {
            format!("{} (auto: it writes to S3)", inherited("lock.kind"))
        }
        crate::config::storage::LockKind::Auto => {
            format!("{} (auto: no S3 target)", inherited("lock.kind"))
        }
        _ => inherited("lock.kind"),
    };
    push(
        "lock",
        json!(if lease { "mongodb" } else { "local" }),
        lock_origin,
    );
    let level = |key: &str| {
        s.iter()
            .find(|e| e.key == key)
            .map_or_else(|| DEFAULT.to_string(), |e| e.origin.clone())
    };
    // Named collections, then patterns; each found in the file by its name.
    let raw_list = raw("/collections");
    let index_of = |name: &str| {
        raw_list
            .as_ref()
            .and_then(Value::as_array)
            .and_then(|items| {
                items.iter().position(|v| {
                    v.as_str() == Some(name) || v.get("name").and_then(Value::as_str) == Some(name)
                })
            })
    };
    let collections = policy
        .collections
        .iter()
        .map(|c| (c, false))
        .chain(policy.patterns.iter().map(|c| (c, true)))
        .map(|(c, pattern)| {
            let i = index_of(&c.name).unwrap_or(usize::MAX);
            let item = raw(&format!("/collections/{i}"));
            // A bare name inherits everything from the policy.
            let detailed = item.as_ref().is_some_and(Value::is_object);
            let own = |field: &str, policy_key: &str| {
                let pointer = format!("/collections/{i}/{field}");
                match detailed.then(|| at(&pointer)).flatten() {
                    Some(o) => o,
                    None => level(policy_key),
                }
            };
            let full = c
                .full
                .map_or_else(|| "never".to_string(), |d| d.to_string());
            let mode = serde_json::to_value(c.mode).unwrap_or(Value::Null);
            let settings = vec![
                entry(
                    "timeField",
                    json!(c.time_field),
                    own("timeField", "timeField"),
                ),
                entry("mode", mode, own("mode", "mode")),
                entry("full", json!(full), own("full", "full")),
                entry(
                    "captureUpdates",
                    json!(c.capture_updates),
                    own("captureUpdates", "captureUpdates"),
                ),
            ];
            CollectionView {
                name: c.name.clone(),
                pattern,
                settings,
            }
        })
        .collect();
    PolicyView {
        name: policy.name.clone(),
        file: policy.file.clone(),
        settings: s,
        collections,
    }
}
