//! Point-in-time chains (issue 12) against the test server: a collection with `full`
//! restores, for every run, exactly as it was at that run (deletions, late arrivals and
//! updates the window misses included), read back with pymongo's `bson`, a reader
//! independent of dcb; what happens without change history; stock `mongorestore` and
//! `bsondump` on chain archives; broken chains in `verify`; chains in `prune`.
//!
//! Every restore here is of a policy with `full`, so it follows the chain rule (the
//! newest full at or before `--until` and its links up to it), not the window rule.

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use chrono::{SecondsFormat, Utc};
use mongodb::bson::{DateTime, Document, doc};
use mongodb::{Client, Collection};
use sha2::{Digest, Sha256};
use support::{Run, Scratch};

const YEAR_MS: i64 = 365 * 86_400_000;

/// Reads collections with pymongo, as raw BSON (`RawBSONDocument`: the bytes the server
/// sent), and checks that pymongo's `bson` decodes and re-encodes each byte for byte.
/// Prints, per `db.collection`, its documents sorted by their bytes: [hex of the BSON,
/// the `_id` as extended JSON, the document as extended JSON].
const READ_COLLECTIONS: &str = r#"
import json, sys
import bson
from bson import json_util
from bson.raw_bson import RawBSONDocument
from pymongo import MongoClient

client = MongoClient(sys.argv[1], document_class=RawBSONDocument)
out = {}
for ns in sys.argv[2:]:
    db, coll = ns.split(".", 1)
    docs = []
    for d in client[db][coll].find():
        raw = bson.encode(d)
        assert raw == d.raw, "a RawBSONDocument encodes as its own bytes"
        plain = bson.decode(raw)
        assert bson.encode(plain) == raw, f"pymongo's bson does not round-trip {plain!r}"
        docs.append([raw.hex(), json_util.dumps(plain["_id"]), json_util.dumps(plain)])
    out[ns] = sorted(docs)
client.close()
json.dump(out, sys.stdout)
"#;

/// Reads the BSON documents of files (a `.bson` member extracted with tar), as the
/// collection reader does: the same triples, sorted.
const READ_BSON_FILES: &str = r#"
import json, sys
import bson
from bson import json_util

out = {}
for path in sys.argv[1:]:
    with open(path, "rb") as f:
        data = f.read()
    docs = []
    for plain in bson.decode_all(data):
        raw = bson.encode(plain)
        docs.append([raw.hex(), json_util.dumps(plain["_id"]), json_util.dumps(plain)])
    assert b"".join(bytes.fromhex(d[0]) for d in docs) == data, f"{path} does not round-trip"
    out[path] = sorted(docs)
json.dump(out, sys.stdout)
"#;

/// One document: hex of its BSON, its `_id` and itself as extended JSON.
type Doc = (String, String, String);
/// A collection's documents, sorted by their bytes.
type State = Vec<Doc>;

fn python() -> PathBuf {
    support::venv_python().unwrap_or_else(|| panic!("{}", support::HOW_TO_GET_A_SERVER))
}

fn py_json(script: &str, args: &[String]) -> BTreeMap<String, State> {
    let out = Command::new(python())
        .arg("-c")
        .arg(script)
        .args(args)
        .output()
        .expect("run the project's Python");
    assert!(
        out.status.success(),
        "the pymongo reader failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: BTreeMap<String, Vec<Vec<String>>> =
        serde_json::from_slice(&out.stdout).expect("the reader prints JSON");
    v.into_iter()
        .map(|(k, docs)| {
            let docs = docs
                .into_iter()
                .map(|d| (d[0].clone(), d[1].clone(), d[2].clone()))
                .collect();
            (k, docs)
        })
        .collect()
}

/// The documents of `namespaces` (`db.collection`) on the server at `uri`, read by
/// pymongo.
fn read(uri: &str, namespaces: &[String]) -> BTreeMap<String, State> {
    let mut args = vec![uri.to_string()];
    args.extend(namespaces.iter().cloned());
    py_json(READ_COLLECTIONS, &args)
}

fn read_one(uri: &str, ns: &str) -> State {
    read(uri, &[ns.to_string()]).remove(ns).unwrap()
}

/// Panics naming the documents missing from `got` and the ones it has in excess.
fn assert_same(got: &State, want: &State, what: &str) {
    if got == want {
        return;
    }
    let g: BTreeSet<&Doc> = got.iter().collect();
    let w: BTreeSet<&Doc> = want.iter().collect();
    let missing: Vec<&str> = w.difference(&g).map(|d| d.2.as_str()).collect();
    let extra: Vec<&str> = g.difference(&w).map(|d| d.2.as_str()).collect();
    panic!(
        "{what}: {} documents restored, {} expected\n  missing (or differing): {missing:#?}\n  not expected (or differing): {extra:#?}",
        got.len(),
        want.len()
    );
}

fn dcb(s: &Scratch, uri: &str, args: &[&str]) -> Run {
    Run::from(
        s.dcb()
            .args(args)
            .env("DCB_MONGODB_URI", uri)
            .output()
            .expect("run dcb"),
    )
}

/// `dcb run --policy P`, which must succeed.
fn run_ok(s: &Scratch, uri: &str, policy: &str) -> Run {
    let run = dcb(s, uri, &["run", "--policy", policy]);
    assert_eq!(run.code, 0, "dcb run: {}{}", run.stdout, run.stderr);
    run
}

/// `dcb restore --policy P --until T --to-database DB`, which must succeed.
fn restore_ok(s: &Scratch, uri: &str, policy: &str, until: &str, to: &str) -> Run {
    let run = dcb(
        s,
        uri,
        &[
            "restore",
            "--policy",
            policy,
            "--until",
            until,
            "--to-database",
            to,
        ],
    );
    assert_eq!(
        run.code, 0,
        "restore --until {until}: {}{}",
        run.stdout, run.stderr
    );
    run
}

/// Now, as `--until` takes it.
fn now() -> String {
    Utc::now().to_rfc3339_opts(SecondsFormat::Millis, true)
}

fn manifest(archive: &Path) -> serde_json::Value {
    let path = support::manifest_of(archive);
    let text =
        std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
    serde_json::from_str(&text).unwrap()
}

fn name(p: &Path) -> String {
    p.file_name().unwrap().to_string_lossy().into_owned()
}

fn sha256_of(p: &Path) -> String {
    format!("{:x}", Sha256::digest(std::fs::read(p).unwrap()))
}

fn year_ago() -> DateTime {
    DateTime::from_millis(DateTime::now().timestamp_millis() - YEAR_MS)
}

fn policy(name: &str, db: &str, extra: &str, collections: &str) -> String {
    format!(
        "name: {name}\nschedule: \"0 2 * * *\"\ndatabase: {db}\n{extra}\
         window: {{initial: all, settle: 0s}}\ncollections: {collections}\nretention: 30d\n"
    )
}

async fn connect(uri: &str) -> Client {
    Client::with_uri_str(uri)
        .await
        .expect("connect to the test server")
}

/// The `_id`s (extended JSON) in an archive's deletions member, read with pymongo, and
/// the member's name; `None` when the archive has no deletions member.
fn deletions_in(archive: &Path) -> Option<(String, Vec<String>)> {
    let read = support::read_archives(&[archive.to_path_buf()]);
    let ids = read[0]["ids"].as_object().unwrap();
    ids.iter()
        .find(|(member, _)| member.starts_with("dcb-deletions."))
        .map(|(member, v)| {
            let mut ids: Vec<String> = v
                .as_array()
                .unwrap()
                .iter()
                .map(|s| s.as_str().unwrap().to_string())
                .collect();
            ids.sort();
            (member.clone(), ids)
        })
}

fn role(id: i32, at: DateTime) -> Document {
    doc! {
        "_id": id,
        "name": format!("role{id}"),
        "rights": [id, "read"],
        "limits": {"daily": i64::from(id) * 1000, "ratio": f64::from(id) / 3.0},
        "n": id,
        "updatedAt": at,
    }
}

// Issue 12, done-when 1: `timeField: updatedAt`, documents created a year ago, a full
// then four incrementals; between runs documents are inserted, updated (old ones, one
// of them without touching updatedAt, which only the change stream sees), replaced,
// deleted (old ones too), deleted and inserted again under the same `_id` with an old
// updatedAt, and inserted late. After each run the collection is recorded; a restore
// as of each run's time gives that record byte for byte. The manifests name their kind
// and link, with the real SHA-256 of the archive before; `--dry-run` prints the chain.
#[tokio::test]
async fn updated_at_chain_restores_every_run_byte_for_byte() {
    let uri = support::server().uri.clone();
    let client = support::client().await;
    let db = support::unique_db("pitr_upd");
    let ns = format!("{db}.roles");
    let roles: Collection<Document> = client.database(&db).collection("roles");
    let old = year_ago();
    roles
        .insert_many((0..12).map(|i| role(i, old)))
        .await
        .unwrap();
    // `_id`s of other types, deleted later: the deletions keep their type.
    let oid = mongodb::bson::oid::ObjectId::new();
    roles
        .insert_many([
            doc! {"_id": "s1", "name": "by string", "updatedAt": old},
            doc! {"_id": oid, "name": "by ObjectId", "updatedAt": old},
            doc! {"_id": {"k": 1, "v": "x"}, "name": "by document", "updatedAt": old},
        ])
        .await
        .unwrap();
    roles
        .create_index(
            mongodb::IndexModel::builder()
                .keys(doc! {"updatedAt": 1})
                .build(),
        )
        .await
        .unwrap();
    let s = Scratch::new();
    s.write(
        "policies/cfg.yaml",
        &policy("cfg", &db, "timeField: updatedAt\nfull: 30d\n", "[roles]"),
    );

    // (until, the collection then) after each run.
    let mut runs: Vec<(String, State)> = Vec::new();
    // The `_id`s each run's deletions member must hold.
    let mut deleted: Vec<Vec<String>> = vec![vec![]];
    let ids = |ids: &[&str]| -> Vec<String> {
        let mut v: Vec<String> = ids.iter().map(|s| s.to_string()).collect();
        v.sort();
        v
    };
    for round in 0..5 {
        if round > 0 {
            let now = DateTime::now;
            match round {
                1 => {
                    roles
                        .insert_one(doc! {"_id": 100, "name": "new", "updatedAt": now()})
                        .await
                        .unwrap();
                    // An old document, its time field bumped: the window sees it.
                    roles
                        .update_one(
                            doc! {"_id": 1},
                            doc! {"$set": {"name": "renamed", "updatedAt": now()}},
                        )
                        .await
                        .unwrap();
                    // Without bumping updatedAt: only the change stream sees it.
                    roles
                        .update_one(doc! {"_id": 2}, doc! {"$set": {"rights": [2, "write"]}})
                        .await
                        .unwrap();
                    roles.delete_one(doc! {"_id": 3}).await.unwrap();
                    roles.delete_one(doc! {"_id": "s1"}).await.unwrap();
                    deleted.push(ids(&["3", "\"s1\""]));
                }
                2 => {
                    // Deleted, then inserted again with the same _id and an old time.
                    roles.delete_one(doc! {"_id": 4}).await.unwrap();
                    roles
                        .insert_one(doc! {"_id": 4, "name": "reborn", "updatedAt": old})
                        .await
                        .unwrap();
                    // A document the previous run brought in.
                    roles.delete_one(doc! {"_id": 100}).await.unwrap();
                    roles
                        .insert_one(doc! {"_id": 101, "name": "newer", "updatedAt": now()})
                        .await
                        .unwrap();
                    deleted.push(ids(&["100", "4"]));
                }
                3 => {
                    roles
                        .update_one(
                            doc! {"_id": 101},
                            doc! {"$set": {"name": "newer2", "updatedAt": now()}},
                        )
                        .await
                        .unwrap();
                    roles
                        .update_one(doc! {"_id": 5}, doc! {"$inc": {"n": 1}})
                        .await
                        .unwrap();
                    roles
                        .delete_many(doc! {"_id": {"$in": [6, 7, {"k": 1, "v": "x"}]}})
                        .await
                        .unwrap();
                    // Replaced whole, keeping the old time.
                    roles
                        .replace_one(
                            doc! {"_id": 8},
                            doc! {"name": "replaced", "updatedAt": old, "extra": true},
                        )
                        .await
                        .unwrap();
                    deleted.push(ids(&["6", "7", r#"{"k": 1, "v": "x"}"#]));
                }
                _ => {
                    // A late arrival: its time field is long past.
                    roles
                        .insert_one(doc! {"_id": 102, "name": "late", "updatedAt": old})
                        .await
                        .unwrap();
                    roles.delete_one(doc! {"_id": 1}).await.unwrap();
                    roles.delete_one(doc! {"_id": 4}).await.unwrap();
                    roles.delete_one(doc! {"_id": oid}).await.unwrap();
                    roles
                        .update_one(doc! {"_id": 2}, doc! {"$push": {"rights": "admin"}})
                        .await
                        .unwrap();
                    deleted.push(ids(&["1", "4", &support::oid_json(&oid)]));
                }
            }
        }
        let run = run_ok(&s, &uri, "cfg");
        let until = now();
        assert!(
            !run.stdout.contains("deletions not recorded"),
            "{}",
            run.stdout
        );
        runs.push((until, read_one(&uri, &ns)));
    }
    let n = |i: usize| runs[i].1.len();
    assert_eq!((n(0), n(1), n(2), n(3), n(4)), (15, 14, 14, 11, 9));

    // The manifests: a full, then incrementals, each linked to the archive before by
    // its name and the SHA-256 of the file.
    let root = s.path().join("backups");
    let archives = support::archives(&root, "cfg", "roles");
    assert_eq!(archives.len(), 5, "{archives:?}");
    let base = name(&archives[0]);
    for (i, a) in archives.iter().enumerate() {
        let m = manifest(a);
        assert_eq!(m["format"], 2, "{m:#}");
        assert_eq!(m["archiveSha256"], sha256_of(a), "{m:#}");
        assert_eq!(m["chain"]["base"], base.as_str(), "{m:#}");
        assert_eq!(m["changes"]["history"]["state"], "complete", "{m:#}");
        if i == 0 {
            assert_eq!(m["kind"], "full", "{m:#}");
            assert!(m["chain"]["previous"].is_null(), "{m:#}");
            assert_eq!(m["documents"], 15, "{m:#}");
            assert!(deletions_in(a).is_none(), "a full records no deletions");
            continue;
        }
        assert_eq!(m["kind"], "incremental", "{m:#}");
        let prev = &archives[i - 1];
        assert_eq!(
            m["chain"]["previous"]["archive"],
            name(prev).as_str(),
            "{m:#}"
        );
        assert_eq!(m["chain"]["previous"]["sha256"], sha256_of(prev), "{m:#}");
        assert_eq!(m["changes"]["deleted"], deleted[i].len(), "{m:#}");
        let (member, ids) = deletions_in(a).expect("an incremental has a deletions member");
        assert_eq!(member, format!("dcb-deletions.cfg.{db}.roles.bson"));
        assert_eq!(ids, deleted[i], "the deletions of run {}", i + 1);
    }

    // The dry run prints the chain it would apply, and writes nothing.
    let dry_db = format!("{db}_dry");
    let run = dcb(
        &s,
        &uri,
        &[
            "restore",
            "--policy",
            "cfg",
            "--until",
            &runs[2].0,
            "--to-database",
            &dry_db,
            "--dry-run",
        ],
    );
    assert_eq!(run.code, 0, "{}{}", run.stdout, run.stderr);
    let lines: Vec<&str> = run.stdout.lines().collect();
    let at = |a: &Path| {
        lines
            .iter()
            .position(|l| l.contains(&name(a)))
            .unwrap_or_else(|| panic!("{} is not in the plan:\n{}", name(a), run.stdout))
    };
    assert!(at(&archives[0]) < at(&archives[1]) && at(&archives[1]) < at(&archives[2]));
    assert!(
        lines[at(&archives[0])].contains("  full  15 documents"),
        "{}",
        run.stdout
    );
    assert!(
        lines[at(&archives[1])].contains("+ 2 deleted"),
        "{}",
        run.stdout
    );
    assert!(
        lines[at(&archives[2])].contains("+ 2 deleted"),
        "{}",
        run.stdout
    );
    for later in &archives[3..] {
        assert!(!run.stdout.contains(&name(later)), "{}", run.stdout);
    }
    assert!(
        run.stdout
            .contains(&format!("{db}.roles (cfg) -> {dry_db}.roles: 3 archives")),
        "{}",
        run.stdout
    );
    assert!(
        run.stdout.contains("dry run: nothing was written"),
        "{}",
        run.stdout
    );
    assert!(
        !client
            .list_database_names()
            .await
            .unwrap()
            .contains(&dry_db),
        "a dry run created {dry_db}"
    );

    // As of each run, and as of now (no --until): the collection as it was.
    let mut targets = Vec::new();
    for (i, (until, _)) in runs.iter().enumerate() {
        let to = format!("{db}_r{i}");
        restore_ok(&s, &uri, "cfg", until, &to);
        targets.push(format!("{to}.roles"));
    }
    let to_now = format!("{db}_now");
    let run = dcb(
        &s,
        &uri,
        &["restore", "--policy", "cfg", "--to-database", &to_now],
    );
    assert_eq!(run.code, 0, "{}{}", run.stdout, run.stderr);
    targets.push(format!("{to_now}.roles"));
    let got = read(&uri, &targets);
    for (i, (until, want)) in runs.iter().enumerate() {
        assert_same(
            &got[&targets[i]],
            want,
            &format!("restore --until {until} (run {})", i + 1),
        );
    }
    assert_same(&got[&targets[5]], &runs[4].1, "restore without --until");
}

// Issue 12, item 3: "no deletion is ever lost silently". The server answers a change
// stream's getMore within its await time, with an empty batch when the part of the
// history it scanned held nothing for the collection; a run must read on to its cut.
// Here 3,000 inserts in the window come first, then the deletions and an update the
// window misses: the incremental records them all, and restores exactly.
#[tokio::test]
async fn changes_behind_a_long_history_are_all_recorded() {
    let uri = support::server().uri.clone();
    let client = support::client().await;
    let db = support::unique_db("pitr_long");
    let ns = format!("{db}.roles");
    let roles: Collection<Document> = client.database(&db).collection("roles");
    roles
        .insert_many((0..6).map(|i| role(i, year_ago())))
        .await
        .unwrap();
    let s = Scratch::new();
    s.write(
        "policies/cfg.yaml",
        &policy("cfg", &db, "timeField: updatedAt\nfull: 30d\n", "[roles]"),
    );
    run_ok(&s, &uri, "cfg");
    // In the collection itself: the server skips other collections' entries cheaply.
    for chunk in 0..3 {
        roles
            .insert_many(
                (0..1000)
                    .map(|i| doc! {"_id": 1000 + chunk * 1000 + i, "updatedAt": DateTime::now()}),
            )
            .await
            .unwrap();
    }
    roles
        .delete_many(doc! {"_id": {"$in": [1, 2]}})
        .await
        .unwrap();
    roles
        .update_one(doc! {"_id": 3}, doc! {"$set": {"rights": [3, "write"]}})
        .await
        .unwrap();
    let run = run_ok(&s, &uri, "cfg");
    let until = now();
    let want = read_one(&uri, &ns);
    let archives = support::archives(&s.path().join("backups"), "cfg", "roles");
    assert_eq!(archives.len(), 2, "{}", run.stdout);
    let m = manifest(&archives[1]);
    assert_eq!(m["kind"], "incremental", "{m:#}");
    assert_eq!(m["changes"]["history"]["state"], "complete", "{m:#}");
    assert_eq!(m["changes"]["deleted"], 2, "{m:#}");
    assert_eq!(m["changes"]["captured"], 1, "{m:#}");
    let to = format!("{db}_r");
    restore_ok(&s, &uri, "cfg", &until, &to);
    assert_same(
        &read_one(&uri, &format!("{to}.roles")),
        &want,
        "restore after a long history",
    );
}

fn event(id: i32, at: DateTime) -> Document {
    doc! {"_id": id, "kind": "scan", "status": "open", "qty": id, "createdAt": at}
}

/// `state` with the documents whose `_id` (extended JSON) is in `ids` taken from `from`
/// instead.
fn with_versions_of(state: &State, from: &State, ids: &[&str]) -> State {
    let mut out: State = state
        .iter()
        .filter(|d| !ids.contains(&d.1.as_str()))
        .cloned()
        .collect();
    out.extend(from.iter().filter(|d| ids.contains(&d.1.as_str())).cloned());
    out.sort();
    out
}

// Issue 12, done-when 1, for `createdAt`: the policy key `captureUpdates` (default
// true) promises that documents changed since the previous run whose time field their
// change left outside the window are exported by `_id` with the run. So an update to a
// document created a year ago restores as updated. With `captureUpdates: false` that
// update is not captured: the restore keeps the version of the archive before (here
// the full's), while deletions, documents in the window and late inserts (the
// CHANGELOG: "documents inserted late ... and, with captureUpdates: true, documents
// updated outside the window are exported") still come back.
#[tokio::test]
async fn created_at_chain_captures_updates_to_old_documents_unless_told_not_to() {
    let uri = support::server().uri.clone();
    let client = support::client().await;
    let db = support::unique_db("pitr_created");
    let old = year_ago();
    let colls = ["events", "events_nc"];
    for c in colls {
        client
            .database(&db)
            .collection::<Document>(c)
            .insert_many((0..8).map(|i| event(i, old)))
            .await
            .unwrap();
    }
    let s = Scratch::new();
    s.write(
        "policies/ev.yaml",
        &policy(
            "ev",
            &db,
            "timeField: createdAt\nfull: 30d\n",
            "[events, {name: events_nc, captureUpdates: false}]",
        ),
    );
    let namespaces: Vec<String> = colls.iter().map(|c| format!("{db}.{c}")).collect();
    let mut runs: Vec<(String, BTreeMap<String, State>)> = Vec::new();
    for round in 0..3 {
        if round > 0 {
            for c in colls {
                let coll = client.database(&db).collection::<Document>(c);
                let now = DateTime::now();
                if round == 1 {
                    // An old document updated: its createdAt stays a year back.
                    coll.update_one(doc! {"_id": 1}, doc! {"$set": {"status": "closed"}})
                        .await
                        .unwrap();
                    coll.insert_one(event(100, now)).await.unwrap();
                    coll.delete_one(doc! {"_id": 2}).await.unwrap();
                    // Late: created (by its own clock) long before the window.
                    coll.insert_one(event(101, old)).await.unwrap();
                } else {
                    coll.update_one(doc! {"_id": 1}, doc! {"$inc": {"qty": 10}})
                        .await
                        .unwrap();
                    coll.update_one(doc! {"_id": 3}, doc! {"$set": {"status": "void"}})
                        .await
                        .unwrap();
                    coll.delete_one(doc! {"_id": 4}).await.unwrap();
                }
            }
        }
        run_ok(&s, &uri, "ev");
        let until = now();
        runs.push((until, read(&uri, &namespaces)));
    }

    // What each incremental captured by _id: the update and the late insert; without
    // captureUpdates the late insert only.
    let root = s.path().join("backups");
    let captured = |c: &str| -> Vec<u64> {
        support::archives(&root, "ev", c)
            .iter()
            .skip(1)
            .map(|a| manifest(a)["changes"]["captured"].as_u64().unwrap())
            .collect()
    };
    assert_eq!(captured("events"), [2, 2]);
    assert_eq!(captured("events_nc"), [1, 0]);

    let mut targets = Vec::new();
    for (i, (until, _)) in runs.iter().enumerate() {
        let to = format!("{db}_r{i}");
        restore_ok(&s, &uri, "ev", until, &to);
        targets.push(to);
    }
    let got = read(
        &uri,
        &targets
            .iter()
            .flat_map(|t| colls.map(|c| format!("{t}.{c}")))
            .collect::<Vec<_>>(),
    );
    let full = &runs[0].1[&namespaces[1]];
    for (i, (until, state)) in runs.iter().enumerate() {
        let what = |c: &str| format!("{c}, restore --until {until} (run {})", i + 1);
        assert_same(
            &got[&format!("{}.events", targets[i])],
            &state[&namespaces[0]],
            &what("events"),
        );
        // Without captureUpdates, the old documents updated since the full are as the
        // full has them; everything else is as it was.
        let updated: &[&str] = match i {
            0 => &[],
            1 => &["1"],
            _ => &["1", "3"],
        };
        let want = with_versions_of(&state[&namespaces[1]], full, updated);
        if i > 0 {
            assert_ne!(
                want, state[&namespaces[1]],
                "the update changed the document"
            );
        }
        assert_same(
            &got[&format!("{}.events_nc", targets[i])],
            &want,
            &what("events_nc"),
        );
    }
}

async fn collection_names(client: &Client, db: &str) -> Vec<String> {
    client.database(db).list_collection_names().await.unwrap()
}

// Issue 12, item 4: a restore as of a time before the first full says which period
// cannot be restored, exits non-zero and writes nothing. With --partial it goes on,
// but before the first full no archive holds anything: it says so, exits non-zero and
// writes nothing either.
#[tokio::test]
async fn until_before_the_first_full_names_the_period_and_writes_nothing() {
    let uri = support::server().uri.clone();
    let client = support::client().await;
    let db = support::unique_db("pitr_before");
    let roles: Collection<Document> = client.database(&db).collection("roles");
    roles
        .insert_many((0..4).map(|i| role(i, year_ago())))
        .await
        .unwrap();
    let s = Scratch::new();
    s.write(
        "policies/cfg.yaml",
        &policy("cfg", &db, "timeField: updatedAt\nfull: 30d\n", "[roles]"),
    );
    run_ok(&s, &uri, "cfg");
    let archives = support::archives(&s.path().join("backups"), "cfg", "roles");
    assert_eq!(archives.len(), 1);
    let full = manifest(&archives[0]);
    let begins = chrono::DateTime::parse_from_rfc3339(full["changes"]["at"].as_str().unwrap())
        .unwrap()
        .with_timezone(&Utc);
    // The documents existed a day ago; the first full is from now.
    let day_ago =
        (Utc::now() - chrono::TimeDelta::days(1)).to_rfc3339_opts(SecondsFormat::Secs, true);

    let to = format!("{db}_r");
    let restore = |extra: &[&str]| {
        let mut args = vec![
            "restore",
            "--policy",
            "cfg",
            "--until",
            &day_ago,
            "--to-database",
            &to,
        ];
        args.extend_from_slice(extra);
        dcb(&s, &uri, &args)
    };
    let run = restore(&[]);
    assert_ne!(run.code, 0, "{}{}", run.stdout, run.stderr);
    let period = format!(
        "{db}.roles: the collection cannot be restored before {}: no full archive was taken at or before that time; nothing was written",
        begins.to_rfc3339_opts(SecondsFormat::Secs, true)
    );
    assert!(
        run.stderr.contains(&period),
        "wanted {period:?} in:\n{}",
        run.stderr
    );
    assert!(collection_names(&client, &to).await.is_empty());
    assert!(!client.list_database_names().await.unwrap().contains(&to));

    let run = restore(&["--partial"]);
    assert_ne!(run.code, 0, "{}{}", run.stdout, run.stderr);
    assert!(
        run.stderr.contains("no archive holds data from before"),
        "{}",
        run.stderr
    );
    assert!(collection_names(&client, &to).await.is_empty());

    // The same restore as of now restores: the refusal was about the time.
    let now = now();
    let run = restore_ok(&s, &uri, "cfg", &now, &to);
    assert!(run.stdout.contains("4 documents"), "{}", run.stdout);
}

// Issue 12, item 3: a standalone server has no change stream. Each run says the
// deletions are not recorded and its manifest says why; the next run is a full again,
// so every run is one, and a restore as of each is still exact.
#[tokio::test]
async fn standalone_server_records_no_deletions_and_every_run_is_a_full() {
    let server = support::start_server(&["--standalone"]);
    let uri = server.uri.clone();
    let client = connect(&uri).await;
    let db = support::unique_db("pitr_alone");
    let ns = format!("{db}.roles");
    let roles: Collection<Document> = client.database(&db).collection("roles");
    roles
        .insert_many((0..6).map(|i| role(i, year_ago())))
        .await
        .unwrap();
    let s = Scratch::new();
    s.write(
        "policies/cfg.yaml",
        &policy("cfg", &db, "timeField: updatedAt\nfull: 30d\n", "[roles]"),
    );
    let mut runs = Vec::new();
    for round in 0..3 {
        if round > 0 {
            roles.delete_one(doc! {"_id": round}).await.unwrap();
            roles
                .update_one(doc! {"_id": 5}, doc! {"$inc": {"n": 1}})
                .await
                .unwrap();
            roles
                .insert_one(doc! {"_id": 100 + round, "updatedAt": DateTime::now()})
                .await
                .unwrap();
        }
        let run = run_ok(&s, &uri, "cfg");
        assert!(
            run.stdout.contains("deletions not recorded")
                && run.stdout.contains("the next run is a full"),
            "run {}: {}",
            round + 1,
            run.stdout
        );
        let until = now();
        runs.push((until, read_one(&uri, &ns)));
    }
    let archives = support::archives(&s.path().join("backups"), "cfg", "roles");
    assert_eq!(archives.len(), 3, "{archives:?}");
    for a in &archives {
        let m = manifest(a);
        assert_eq!(m["kind"], "full", "{m:#}");
        assert_eq!(m["chain"]["base"], name(a).as_str(), "{m:#}");
        assert_eq!(m["changes"]["history"]["state"], "unavailable", "{m:#}");
        assert!(
            !m["changes"]["history"]["reason"]
                .as_str()
                .unwrap_or_default()
                .is_empty(),
            "{m:#}"
        );
    }
    let mut targets = Vec::new();
    for (i, (until, _)) in runs.iter().enumerate() {
        let to = format!("{db}_r{i}");
        restore_ok(&s, &uri, "cfg", until, &to);
        targets.push(format!("{to}.roles"));
    }
    let got = read(&uri, &targets);
    for (i, (until, want)) in runs.iter().enumerate() {
        assert_same(&got[&targets[i]], want, &format!("restore --until {until}"));
    }
    drop(client);
    server.stop();
}

// Issue 12, item 3: the server's history rolls past the previous run (an oplog of 10
// entries, then 1,500 writes, deletions among them). The run says so and its manifest
// too; the next run is a full, and from that full on every run restores exactly. The
// period in between is named as not restorable; --partial restores it from what the
// archives hold, which brings back the documents whose deletion was lost.
#[tokio::test]
async fn lost_history_is_said_and_the_next_run_is_a_full() {
    let server = support::start_server(&["--oplog-max-entries", "10"]);
    let uri = server.uri.clone();
    let client = connect(&uri).await;
    let db = support::unique_db("pitr_lost");
    let ns = format!("{db}.roles");
    let roles: Collection<Document> = client.database(&db).collection("roles");
    let noise: Collection<Document> = client.database(&db).collection("noise");
    roles
        .insert_many((0..10).map(|i| role(i, year_ago())))
        .await
        .unwrap();
    let s = Scratch::new();
    s.write(
        "policies/cfg.yaml",
        &policy("cfg", &db, "timeField: updatedAt\nfull: 30d\n", "[roles]"),
    );
    let mut runs = Vec::new();
    let mut outputs = Vec::new();
    for round in 0..4 {
        match round {
            0 => {}
            1 => {
                // More writes than the oplog keeps, deletions among them.
                noise
                    .insert_many((0..1200).map(|i| doc! {"i": i}))
                    .await
                    .unwrap();
                noise.delete_many(doc! {"i": {"$lt": 300}}).await.unwrap();
                roles
                    .delete_many(doc! {"_id": {"$in": [1, 2]}})
                    .await
                    .unwrap();
                roles
                    .update_one(
                        doc! {"_id": 3},
                        doc! {"$set": {"name": "bumped", "updatedAt": DateTime::now()}},
                    )
                    .await
                    .unwrap();
                roles
                    .insert_one(doc! {"_id": 100, "updatedAt": DateTime::now()})
                    .await
                    .unwrap();
            }
            // A few changes: the oplog keeps them.
            2 => {
                roles.delete_one(doc! {"_id": 4}).await.unwrap();
                roles
                    .update_one(doc! {"_id": 5}, doc! {"$inc": {"n": 1}})
                    .await
                    .unwrap();
            }
            _ => {
                roles.delete_one(doc! {"_id": 6}).await.unwrap();
                roles
                    .update_one(doc! {"_id": 7}, doc! {"$inc": {"n": 1}})
                    .await
                    .unwrap();
                roles
                    .insert_one(doc! {"_id": 101, "updatedAt": year_ago()})
                    .await
                    .unwrap();
            }
        }
        let run = run_ok(&s, &uri, "cfg");
        let until = now();
        outputs.push(run.stdout);
        runs.push((until, read_one(&uri, &ns)));
    }
    assert!(
        outputs[1].contains("deletions not recorded")
            && outputs[1].contains("the next run is a full"),
        "{}",
        outputs[1]
    );
    for i in [0, 2, 3] {
        assert!(
            !outputs[i].contains("deletions not recorded"),
            "run {}: {}",
            i + 1,
            outputs[i]
        );
    }
    let archives = support::archives(&s.path().join("backups"), "cfg", "roles");
    assert_eq!(archives.len(), 4, "{archives:?}");
    let m: Vec<serde_json::Value> = archives.iter().map(|a| manifest(a)).collect();
    let kinds: Vec<&str> = m.iter().map(|m| m["kind"].as_str().unwrap()).collect();
    assert_eq!(kinds, ["full", "incremental", "full", "incremental"]);
    let states: Vec<&str> = m
        .iter()
        .map(|m| m["changes"]["history"]["state"].as_str().unwrap())
        .collect();
    assert_eq!(
        states,
        ["complete", "lost", "complete", "complete"],
        "{m:#?}"
    );
    assert_eq!(m[3]["chain"]["base"], name(&archives[2]).as_str());
    assert_eq!(m[3]["changes"]["deleted"], 1);

    // From the new full on, exact.
    let targets: Vec<String> = (0..4).map(|i| format!("{db}_r{i}")).collect();
    for i in [0, 2, 3] {
        restore_ok(&s, &uri, "cfg", &runs[i].0, &targets[i]);
    }
    // As of the run that lost the history: named, refused, nothing written.
    let lost_at = &runs[1].0;
    let run = dcb(
        &s,
        &uri,
        &[
            "restore",
            "--policy",
            "cfg",
            "--until",
            lost_at,
            "--to-database",
            &targets[1],
        ],
    );
    assert_ne!(run.code, 0, "{}{}", run.stdout, run.stderr);
    assert!(
        run.stderr.contains("cannot be restored exactly between")
            && run.stderr.contains("change history lost")
            && run.stderr.contains("nothing was written"),
        "{}",
        run.stderr
    );
    assert!(collection_names(&client, &targets[1]).await.is_empty());
    // --partial: the full and the incremental's documents, without the deletions it
    // could not see: documents 1 and 2 come back as the full has them.
    let run = dcb(
        &s,
        &uri,
        &[
            "restore",
            "--policy",
            "cfg",
            "--until",
            lost_at,
            "--to-database",
            &targets[1],
            "--partial",
        ],
    );
    assert_eq!(run.code, 0, "{}{}", run.stdout, run.stderr);
    let namespaces: Vec<String> = targets.iter().map(|t| format!("{t}.roles")).collect();
    let got = read(&uri, &namespaces);
    for i in [0, 2, 3] {
        assert_same(
            &got[&namespaces[i]],
            &runs[i].1,
            &format!("restore --until {} (run {})", runs[i].0, i + 1),
        );
    }
    let mut partial = runs[1].1.clone();
    partial.extend(
        runs[0]
            .1
            .iter()
            .filter(|d| d.1 == "1" || d.1 == "2")
            .cloned(),
    );
    partial.sort();
    assert_same(
        &got[&namespaces[1]],
        &partial,
        "restore --partial past lost history",
    );
    drop(client);
    server.stop();
}

/// Extract an archive with the system's tar into a new folder.
fn extract(archive: &Path, into: &Path) {
    std::fs::create_dir_all(into).unwrap();
    let status = Command::new("tar")
        .arg("-xzf")
        .arg(archive)
        .arg("-C")
        .arg(into)
        .status()
        .expect("run tar");
    assert!(status.success(), "tar refused {}", archive.display());
}

/// Stock mongorestore of an extracted folder, `db.*` renamed to `to.*`.
fn mongorestore(tools: &Path, uri: &str, dir: &Path, db: &str, to: &str) -> String {
    let out = Command::new(tools.join("mongorestore"))
        .arg("--uri")
        .arg(uri)
        .arg("--dir")
        .arg(dir)
        .arg("--nsFrom")
        .arg(format!("{db}.*"))
        .arg("--nsTo")
        .arg(format!("{to}.*"))
        .output()
        .expect("run mongorestore");
    let log = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "mongorestore failed:\n{log}");
    log
}

// Issue 12, done-when: stock mongorestore restores an extracted full archive, and an
// extracted incremental archive on its own (the documents it holds; its deletions
// member, outside the `<db>/` folder, ignored), creating no database but the target;
// bsondump reads the deletions member, a BSON stream of `{_id}` documents. It cannot
// apply a chain: the incremental alone is not the collection.
#[tokio::test]
async fn stock_mongorestore_reads_a_full_and_an_incremental_alone() {
    let tools = support::mongo_tools();
    // A server of its own: the list of databases before and after is this test's.
    let server = support::start_server(&[]);
    let uri = server.uri.clone();
    let client = connect(&uri).await;
    let db = support::unique_db("pitr_tools");
    let roles: Collection<Document> = client.database(&db).collection("roles");
    roles
        .insert_many((0..8).map(|i| role(i, year_ago())))
        .await
        .unwrap();
    let s = Scratch::new();
    s.write(
        "policies/cfg.yaml",
        &policy("cfg", &db, "timeField: updatedAt\nfull: 30d\n", "[roles]"),
    );
    run_ok(&s, &uri, "cfg");
    let full_state = read_one(&uri, &format!("{db}.roles"));
    roles
        .delete_many(doc! {"_id": {"$in": [1, 2]}})
        .await
        .unwrap();
    roles
        .update_one(
            doc! {"_id": 3},
            doc! {"$set": {"name": "bumped", "updatedAt": DateTime::now()}},
        )
        .await
        .unwrap();
    roles
        .update_one(doc! {"_id": 4}, doc! {"$inc": {"n": 1}})
        .await
        .unwrap();
    roles
        .insert_one(doc! {"_id": 100, "name": "new", "updatedAt": DateTime::now()})
        .await
        .unwrap();
    run_ok(&s, &uri, "cfg");
    let archives = support::archives(&s.path().join("backups"), "cfg", "roles");
    assert_eq!(archives.len(), 2);
    assert_eq!(manifest(&archives[0])["kind"], "full");
    let inc = manifest(&archives[1]);
    assert_eq!(inc["kind"], "incremental");
    assert_eq!(inc["changes"]["deleted"], 2);
    assert_eq!(inc["documents"], 3, "{inc:#}");

    let deletions = format!("dcb-deletions.cfg.{db}.roles.bson");
    for (i, archive) in archives.iter().enumerate() {
        let dir = s.path().join(format!("extracted{i}"));
        extract(archive, &dir);
        assert_eq!(
            dir.join(&deletions).is_file(),
            i == 1,
            "the deletions member of {}",
            name(archive)
        );
        let to = format!("{db}_mr{i}");
        let before = client.list_database_names().await.unwrap();
        let log = mongorestore(&tools, &uri, &dir, &db, &to);
        let after = client.list_database_names().await.unwrap();
        let created: Vec<&String> = after.iter().filter(|d| !before.contains(d)).collect();
        assert_eq!(created, [&to], "databases created by mongorestore:\n{log}");
        assert_eq!(collection_names(&client, &to).await, ["roles"], "{log}");
        let got = read_one(&uri, &format!("{to}.roles"));
        if i == 0 {
            assert_same(&got, &full_state, "mongorestore of the full");
        } else {
            // Exactly the incremental's documents (its .bson member, read by pymongo
            // from the extracted file), deletions ignored: 3, 4 and 100 only.
            let member = dir.join(&db).join("roles.bson");
            let key = member.to_string_lossy().into_owned();
            let want = py_json(READ_BSON_FILES, std::slice::from_ref(&key))
                .remove(&key)
                .unwrap();
            let ids: Vec<&str> = want.iter().map(|d| d.1.as_str()).collect();
            assert_eq!(
                ids.iter().copied().collect::<BTreeSet<_>>(),
                BTreeSet::from(["3", "4", "100"])
            );
            assert_same(&got, &want, "mongorestore of the incremental alone");
        }
    }

    // bsondump reads the deletions member: one {_id} per deleted document.
    let dump = Command::new(tools.join("bsondump"))
        .arg(s.path().join("extracted1").join(&deletions))
        .output()
        .expect("run bsondump");
    assert!(
        dump.status.success(),
        "{}",
        String::from_utf8_lossy(&dump.stderr)
    );
    let mut ids: Vec<serde_json::Value> = String::from_utf8_lossy(&dump.stdout)
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .collect();
    ids.sort_by_key(|v| v.to_string());
    assert_eq!(
        ids,
        [
            serde_json::json!({"_id": {"$numberInt": "1"}}),
            serde_json::json!({"_id": {"$numberInt": "2"}})
        ]
    );
    drop(client);
    server.stop();
}

/// Move an archive and its manifest into `aside`; returns where they went.
fn set_aside(archive: &Path, aside: &Path) -> (PathBuf, PathBuf) {
    std::fs::create_dir_all(aside).unwrap();
    let m = support::manifest_of(archive);
    let (a2, m2) = (aside.join(name(archive)), aside.join(name(&m)));
    std::fs::rename(archive, &a2).unwrap();
    std::fs::rename(&m, &m2).unwrap();
    (a2, m2)
}

fn put_back(archive: &Path, (a, m): (PathBuf, PathBuf)) {
    std::fs::rename(a, archive).unwrap();
    std::fs::rename(m, support::manifest_of(archive)).unwrap();
}

/// `dcb verify` and `dcb verify --json`: (exit code, text, JSON).
fn verify(s: &Scratch, uri: &str) -> (i32, String, serde_json::Value) {
    let text = dcb(s, uri, &["verify"]);
    let json = dcb(s, uri, &["verify", "--json"]);
    assert_eq!(text.code, json.code, "{}{}", text.stdout, json.stdout);
    let v = serde_json::from_str(&json.stdout)
        .unwrap_or_else(|e| panic!("verify --json: {e}: {}{}", json.stdout, json.stderr));
    (text.code, text.stdout + &text.stderr, v)
}

/// A chain of `runs` archives of `{db}.roles` under policy `cfg`, a change between
/// runs; returns the archives, oldest first.
async fn chain_of(s: &Scratch, uri: &str, db: &str, runs: i32, first_id: i32) -> Vec<PathBuf> {
    let client = connect(uri).await;
    let roles: Collection<Document> = client.database(db).collection("roles");
    for round in 0..runs {
        if round > 0 {
            roles
                .insert_one(doc! {"_id": first_id + round, "updatedAt": DateTime::now()})
                .await
                .unwrap();
            roles.delete_one(doc! {"_id": round}).await.unwrap();
            // The archive's name is its window's end, to the millisecond.
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        run_ok(s, uri, "cfg");
    }
    support::archives(&s.path().join("backups"), "cfg", "roles")
}

// Issue 12, item 5: `dcb verify` checks the chains as well as the archives. A middle
// incremental removed, replaced by an incremental of another chain, or replaced by a
// file of the same name and contents but other bytes (its own manifest updated, so the
// archive alone verifies): exit 1, the chain named broken in the text and in
// `brokenChains` of --json. Put back, the chain verifies again.
#[tokio::test]
async fn verify_names_a_broken_chain() {
    let uri = support::server().uri.clone();
    let client = support::client().await;
    let db = support::unique_db("pitr_verify");
    client
        .database(&db)
        .collection::<Document>("roles")
        .insert_many((0..10).map(|i| role(i, year_ago())))
        .await
        .unwrap();
    let cfg = policy("cfg", &db, "timeField: updatedAt\nfull: 30d\n", "[roles]");
    let s = Scratch::new();
    s.write("policies/cfg.yaml", &cfg);
    let a = chain_of(&s, &uri, &db, 4, 100).await;
    assert_eq!(a.len(), 4);
    // Another chain of the same collection, in another backup root.
    let other = Scratch::new();
    other.write("policies/cfg.yaml", &cfg);
    let b = chain_of(&other, &uri, &db, 2, 200).await;
    assert_eq!(b.len(), 2);

    let (code, text, v) = verify(&s, &uri);
    assert_eq!(code, 0, "{text}");
    assert_eq!(v["brokenChains"], serde_json::json!([]), "{v:#}");
    assert!(
        text.contains("4 archives checked: 4 ok, 0 corrupt"),
        "{text}"
    );

    let middle = &a[2];
    let coll = format!("{db}.roles");
    let broken = |v: &serde_json::Value, text: &str, why: &str| {
        let chains = v["brokenChains"].as_array().unwrap();
        assert_eq!(chains.len(), 1, "{v:#}");
        assert_eq!(chains[0]["policy"], "cfg");
        assert_eq!(chains[0]["collection"], coll.as_str());
        let problem = chains[0]["problem"].as_str().unwrap();
        assert!(problem.contains(why), "{problem}");
        assert!(
            text.contains(&format!("BROKEN   chain of {coll} (cfg): {problem}")),
            "{text}"
        );
        assert_eq!(v["ok"], false);
    };

    // Removed.
    let aside = set_aside(middle, &s.path().join("aside"));
    let (code, text, v) = verify(&s, &uri);
    assert_eq!(code, 1, "{text}");
    broken(
        &v,
        &text,
        &format!(
            "{} builds on {}, which is missing",
            name(&a[3]),
            name(middle)
        ),
    );

    // Replaced by an incremental of the other chain (with its manifest).
    let dir = a[0].parent().unwrap();
    std::fs::copy(&b[1], dir.join(name(&b[1]))).unwrap();
    std::fs::copy(
        support::manifest_of(&b[1]),
        dir.join(name(&support::manifest_of(&b[1]))),
    )
    .unwrap();
    let (code, text, v) = verify(&s, &uri);
    assert_eq!(code, 1, "{text}");
    broken(&v, &text, "which is missing");
    // The stranger verifies as an archive; what is broken is the chain.
    assert!(
        text.contains(&format!("ok       cfg/{}", name(&b[1]))),
        "{text}"
    );
    std::fs::remove_file(dir.join(name(&b[1]))).unwrap();
    std::fs::remove_file(dir.join(name(&support::manifest_of(&b[1])))).unwrap();
    put_back(middle, aside);
    let (code, text, _) = verify(&s, &uri);
    assert_eq!(code, 0, "{text}");

    // Same name, same members, other bytes: repacked with gzip -9, its manifest's
    // whole-file hash and size updated. The archive verifies; the link does not.
    let original = std::fs::read(middle).unwrap();
    let manifest_path = support::manifest_of(middle);
    let original_manifest = std::fs::read(&manifest_path).unwrap();
    let tar = Command::new("gzip")
        .args(["-dc"])
        .arg(middle)
        .output()
        .expect("run gzip");
    assert!(tar.status.success());
    let mut gz = Command::new("gzip")
        .args(["-9n", "-c"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("run gzip");
    {
        use std::io::Write;
        gz.stdin.take().unwrap().write_all(&tar.stdout).unwrap();
    }
    let repacked = gz.wait_with_output().unwrap().stdout;
    assert_ne!(repacked, original, "gzip -9 gave the same bytes");
    std::fs::write(middle, &repacked).unwrap();
    let mut m = manifest(middle);
    m["archiveSha256"] = sha256_of(middle).into();
    m["archiveSize"] = repacked.len().into();
    std::fs::write(&manifest_path, serde_json::to_vec_pretty(&m).unwrap()).unwrap();
    let (code, text, v) = verify(&s, &uri);
    assert_eq!(code, 1, "{text}");
    assert!(
        text.contains(&format!("ok       cfg/{}", name(middle))),
        "{text}"
    );
    broken(&v, &text, "a foreign link");

    std::fs::write(middle, original).unwrap();
    std::fs::write(&manifest_path, original_manifest).unwrap();
    let (code, text, _) = verify(&s, &uri);
    assert_eq!(code, 0, "{text}");
}

// Issue 12, item 2: `dcb prune --dry-run` shows chains: an old chain goes whole (its
// full and its incremental under one heading, with the reason), the newer chain is
// kept whole; nothing is deleted by the dry run. `full: 3s` makes a second chain;
// `retention: 2s` puts the first behind it.
#[tokio::test]
async fn prune_dry_run_shows_chains() {
    let uri = support::server().uri.clone();
    let client = support::client().await;
    let db = support::unique_db("pitr_prune");
    let roles: Collection<Document> = client.database(&db).collection("roles");
    roles
        .insert_many((0..4).map(|i| role(i, year_ago())))
        .await
        .unwrap();
    let s = Scratch::new();
    s.write(
        "policies/cfg.yaml",
        &format!(
            "name: cfg\nschedule: \"0 2 * * *\"\ndatabase: {db}\ntimeField: updatedAt\nfull: 3s\n\
             window: {{initial: all, settle: 0s}}\ncollections: [roles]\nretention: 2s\nkeepLast: 1\n"
        ),
    );
    let started = Instant::now();
    for round in 0..4 {
        if round == 2 {
            // The first full is now older than `full`.
            std::thread::sleep(Duration::from_millis(3500).saturating_sub(started.elapsed()));
        }
        if round > 0 {
            roles
                .insert_one(doc! {"_id": 10 + round, "updatedAt": DateTime::now()})
                .await
                .unwrap();
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        run_ok(&s, &uri, "cfg");
    }
    let second = Instant::now();
    let archives = support::archives(&s.path().join("backups"), "cfg", "roles");
    let kinds: Vec<String> = archives
        .iter()
        .map(|a| manifest(a)["kind"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(kinds, ["full", "incremental", "full", "incremental"]);
    // The second chain's full is older than the retention.
    std::thread::sleep(Duration::from_millis(3100).saturating_sub(second.elapsed()));

    let run = dcb(&s, &uri, &["prune", "--dry-run"]);
    assert_eq!(run.code, 0, "{}{}", run.stdout, run.stderr);
    let out = &run.stdout;
    let (first, next) = (name(&archives[0]), name(&archives[2]));
    let heading = out
        .lines()
        .position(|l| l.starts_with(&format!("would delete the chain of {first} (2 archives): ")))
        .unwrap_or_else(|| panic!("no heading for the chain of {first}:\n{out}"));
    let lines: Vec<&str> = out.lines().collect();
    assert!(
        lines[heading].contains(&format!(
            "the chain of {next} restores every moment of the last 2s"
        )),
        "{out}"
    );
    assert_eq!(
        lines[heading + 1],
        format!("  would delete  cfg/{}", name(&archives[0]))
    );
    assert_eq!(
        lines[heading + 2],
        format!("  would delete  cfg/{}", name(&archives[1]))
    );
    assert!(
        out.contains(&format!("keeps the chain of {next} (2 archives): ")),
        "{out}"
    );
    assert!(out.contains("2 archives ("), "{out}");
    assert!(out.contains("would be deleted, 2 kept"), "{out}");
    for a in &archives {
        assert!(a.is_file(), "a dry run deleted {}", a.display());
    }
}

// Issue 12, item 4: "the result equals the collection as it was at the last run at or
// before T ... a later run's deletions must not leak in". A restore as of a moment
// after the first run and before the change the second run records, in the same second
// of the server's clock as the second run's cut, must not apply the second run. (The
// cluster time counts whole seconds; the manifest keeps the cut to the millisecond.)
// Each attempt starts just after a second begins, and is repeated when the second run's
// cut fell into the next second anyway (a loaded machine).
#[tokio::test]
async fn until_between_two_runs_in_one_second_leaves_the_later_run_out() {
    let uri = support::server().uri.clone();
    let client = support::client().await;
    for attempt in 1..=5 {
        let db = support::unique_db("pitr_second");
        let ns = format!("{db}.roles");
        let roles: Collection<Document> = client.database(&db).collection("roles");
        roles
            .insert_many((0..3).map(|i| role(i, year_ago())))
            .await
            .unwrap();
        let s = Scratch::new();
        s.write(
            "policies/cfg.yaml",
            &policy("cfg", &db, "timeField: updatedAt\nfull: 30d\n", "[roles]"),
        );
        run_ok(&s, &uri, "cfg");
        let before = read_one(&uri, &ns);
        // Just after the start of a second.
        let ms = Utc::now().timestamp_subsec_millis();
        std::thread::sleep(Duration::from_millis(u64::from(1020 - ms.min(1000))));
        let until = Utc::now();
        roles.delete_one(doc! {"_id": 1}).await.unwrap();
        run_ok(&s, &uri, "cfg");
        let archives = support::archives(&s.path().join("backups"), "cfg", "roles");
        assert_eq!(archives.len(), 2);
        let changes = &manifest(&archives[1])["changes"];
        let cut_second = changes["until"]["t"].as_i64().unwrap();
        if cut_second != until.timestamp() {
            eprintln!("attempt {attempt}: the second run cut in a later second; again");
            continue;
        }
        let second_at = changes["at"].as_str().unwrap().to_string();
        let at = chrono::DateTime::parse_from_rfc3339(&second_at).unwrap();
        assert!(
            at > until,
            "the second run's cut ({second_at}) is after the deletion, itself after {until}"
        );
        let until = until.to_rfc3339_opts(SecondsFormat::Millis, true);
        let to = format!("{db}_r");
        let run = restore_ok(&s, &uri, "cfg", &until, &to);
        let got = read_one(&uri, &format!("{to}.roles"));
        assert_same(
            &got,
            &before,
            &format!(
                "restore --until {until}, after the first run and before the deletion the second run (cut {second_at}) recorded; its plan:\n{}",
                run.stdout
            ),
        );
        // As of the second run's cut, the deletion is in.
        let to = format!("{db}_r2");
        restore_ok(&s, &uri, "cfg", &second_at, &to);
        let got = read_one(&uri, &format!("{to}.roles"));
        assert_same(
            &got,
            &read_one(&uri, &ns),
            "restore as of the second run's cut",
        );
        return;
    }
    panic!("five attempts could not get two runs into one second of the server's clock");
}
