//! `dcb restore`, `dcb verify` and `dcb list` against the real test server: several
//! incremental runs of a changing data set come back byte for byte, `--until` cuts at
//! exactly the right document, restoring twice changes nothing, and a corrupt archive
//! stops a restore before it writes anything.

mod support;

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use futures_util::TryStreamExt;
use mongodb::bson::{DateTime, Document, RawDocumentBuf, doc, oid::ObjectId};
use mongodb::options::IndexOptions;
use mongodb::{Database, IndexModel};
use support::{Run, Scratch};

fn dcb(s: &Scratch, args: &[&str]) -> Run {
    Run::from(
        s.dcb()
            .args(args)
            .env("DCB_MONGODB_URI", &support::server().uri)
            .output()
            .unwrap(),
    )
}

/// Every document of a collection, raw, by `_id` (as extended JSON).
async fn raw_docs(db: &Database, coll: &str) -> BTreeMap<String, Vec<u8>> {
    let mut cursor = db
        .collection::<RawDocumentBuf>(coll)
        .find(doc! {})
        .await
        .unwrap();
    let mut out = BTreeMap::new();
    while let Some(d) = cursor.try_next().await.unwrap() {
        let id = d.get_object_id("_id").unwrap().to_hex();
        out.insert(id, d.as_bytes().to_vec());
    }
    out
}

async fn index_names(db: &Database, coll: &str) -> Vec<String> {
    let mut names = db
        .collection::<Document>(coll)
        .list_index_names()
        .await
        .unwrap();
    names.sort();
    names
}

fn policy(db: &str, settle: &str) -> String {
    format!(
        "name: p\nschedule: \"0 * * * *\"\ndatabase: {db}\nwindow: {{initial: all, settle: {settle}}}\n\
         collections: [scans, {{name: roles, mode: snapshot, timeField: updatedAt}}]\nretention: 7d\n"
    )
}

async fn add_scans(db: &Database, n: usize, at: DateTime) -> Vec<ObjectId> {
    let docs: Vec<Document> = (0..n)
        .map(|i| {
            doc! {
                "_id": ObjectId::new(),
                "createdAt": at,
                "barcode": format!("BC-{}-{i:05}", at.timestamp_millis()),
                "station": format!("S{}", i % 7),
                "measure": {"v": i as f64 * 0.5, "ok": i % 3 != 0, "tags": ["a", "b"]},
            }
        })
        .collect();
    let ids = docs
        .iter()
        .map(|d| d.get_object_id("_id").unwrap())
        .collect();
    db.collection::<Document>("scans")
        .insert_many(docs)
        .await
        .unwrap();
    ids
}

fn list_json(s: &Scratch) -> Vec<serde_json::Value> {
    let run = dcb(s, &["list", "--json"]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    serde_json::from_str(&run.stdout).unwrap()
}

// Three incremental runs of a changing data set (new scans; roles edited and deleted
// between snapshots), restored into a new database: the same `_id`s and the same
// bytes, the indexes back; restoring again changes nothing.
#[tokio::test]
async fn incremental_runs_restore_byte_for_byte_and_idempotently() {
    let client = support::client().await;
    let src_name = support::unique_db("rt_src");
    let dst_name = format!("{src_name}_restored");
    let src = client.database(&src_name);
    let dst = client.database(&dst_name);
    let unique = IndexOptions::builder().unique(true).build();
    let scans = src.collection::<Document>("scans");
    scans
        .create_index(IndexModel::builder().keys(doc! {"createdAt": 1}).build())
        .await
        .unwrap();
    scans
        .create_index(
            IndexModel::builder()
                .keys(doc! {"barcode": 1})
                .options(unique.clone())
                .build(),
        )
        .await
        .unwrap();
    let roles = src.collection::<Document>("roles");
    let past = DateTime::from_millis(DateTime::now().timestamp_millis() - 3 * 86_400_000);
    add_scans(&src, 300, past).await;
    roles
        .insert_many(
            (0..6).map(|i| doc! {"name": format!("role{i}"), "updatedAt": past, "rights": [i]}),
        )
        .await
        .unwrap();

    let s = Scratch::new();
    s.write("policies/p.yaml", &policy(&src_name, "0s"));
    for round in 0..3 {
        if round > 0 {
            add_scans(&src, 150, DateTime::now()).await;
            roles
                .update_one(
                    doc! {"name": format!("role{round}")},
                    doc! {"$set": {"rights": [round, 99], "updatedAt": DateTime::now()}},
                )
                .await
                .unwrap();
            roles
                .delete_one(doc! {"name": format!("role{}", round + 3)})
                .await
                .unwrap();
        }
        tokio::time::sleep(Duration::from_millis(30)).await;
        let run = dcb(&s, &["run", "--policy", "p"]);
        assert_eq!(run.code, 0, "round {round}: {}{}", run.stdout, run.stderr);
    }
    let listed = list_json(&s);
    let scans_archives = listed.iter().filter(|e| e["collection"] == "scans").count();
    assert_eq!(scans_archives, 3, "{listed:#?}");
    assert!(listed.iter().all(|e| e["verified"].is_null()));

    // Dry run: the plan, and nothing written.
    let run = dcb(
        &s,
        &[
            "restore",
            "--policy",
            "p",
            "--to-database",
            &dst_name,
            "--dry-run",
        ],
    );
    assert_eq!(run.code, 0, "{}{}", run.stdout, run.stderr);
    assert!(
        run.stdout.contains(&format!(
            "{src_name}.scans (p) -> {dst_name}.scans: 3 archives, 600 documents"
        )),
        "{}",
        run.stdout
    );
    assert!(
        !client
            .list_database_names()
            .await
            .unwrap()
            .contains(&dst_name)
    );

    let run = dcb(
        &s,
        &["restore", "--policy", "p", "--to-database", &dst_name],
    );
    assert_eq!(run.code, 0, "{}{}", run.stdout, run.stderr);
    assert!(
        run.stdout
            .contains("600 documents (600 inserted, 0 replaced)"),
        "{}",
        run.stdout
    );
    let want_scans = raw_docs(&src, "scans").await;
    let want_roles = raw_docs(&src, "roles").await;
    assert_eq!(want_scans.len(), 600);
    assert_eq!(want_roles.len(), 4);
    assert_eq!(raw_docs(&dst, "scans").await, want_scans);
    // Roles come from the newest snapshot only: deleted roles stay deleted.
    assert_eq!(raw_docs(&dst, "roles").await, want_roles);
    assert_eq!(
        index_names(&dst, "scans").await,
        ["_id_", "barcode_1", "createdAt_1"]
    );

    // Again, after the target drifted: 40 documents edited and 25 deleted there. The
    // archive's version wins, the deleted come back, and batches that mix new and
    // existing documents map each to the right write.
    let dst_scans = dst.collection::<Document>("scans");
    let ids: Vec<ObjectId> = want_scans
        .keys()
        .map(|h| ObjectId::parse_str(h).unwrap())
        .collect();
    for id in &ids[..40] {
        dst_scans
            .update_one(doc! {"_id": id}, doc! {"$set": {"station": "EDITED"}})
            .await
            .unwrap();
    }
    for id in &ids[100..125] {
        dst_scans.delete_one(doc! {"_id": id}).await.unwrap();
    }
    let run = dcb(
        &s,
        &["restore", "--policy", "p", "--to-database", &dst_name],
    );
    assert_eq!(run.code, 0, "{}{}", run.stdout, run.stderr);
    assert!(
        run.stdout
            .contains("600 documents (25 inserted, 575 replaced)"),
        "{}",
        run.stdout
    );
    assert_eq!(raw_docs(&dst, "scans").await, want_scans);
    assert_eq!(raw_docs(&dst, "roles").await, want_roles);

    // --drop and --to-collection: one collection under a new name.
    let run = dcb(
        &s,
        &[
            "restore",
            "--policy",
            "p",
            "--collection",
            "scans",
            "--to-database",
            &dst_name,
            "--to-collection",
            "scans_copy",
            "--drop",
        ],
    );
    assert_eq!(run.code, 0, "{}{}", run.stdout, run.stderr);
    assert_eq!(raw_docs(&dst, "scans_copy").await, want_scans);

    // Into the source database only with --in-place.
    let run = dcb(
        &s,
        &["restore", "--policy", "p", "--to-database", &src_name],
    );
    assert_eq!(run.code, 2, "{}{}", run.stdout, run.stderr);
    assert!(run.stderr.contains("--in-place"), "{}", run.stderr);

    // verify: every archive is good, and the catalog says so.
    let run = dcb(&s, &["verify"]);
    assert_eq!(run.code, 0, "{}{}", run.stdout, run.stderr);
    assert!(
        run.stdout.contains("6 archives checked: 6 ok, 0 corrupt"),
        "{}",
        run.stdout
    );
    // Samples: scans never change; roles were edited and deleted after the first
    // snapshots, which is information, not corruption.
    let run = dcb(&s, &["verify", "--sample", "20", "--json"]);
    assert_eq!(run.code, 0, "{}{}", run.stdout, run.stderr);
    let v: serde_json::Value = serde_json::from_str(&run.stdout).unwrap();
    let (mut scans_same, mut roles_moved) = (0, 0);
    for a in v["archives"].as_array().unwrap() {
        let sample = &a["sample"];
        assert_eq!(
            sample["checked"],
            sample["unchanged"].as_u64().unwrap()
                + sample["changed"].as_u64().unwrap()
                + sample["deleted"].as_u64().unwrap()
        );
        if a["archive"].as_str().unwrap().ends_with(".scans.tar.gz") {
            assert_eq!(sample["unchanged"], sample["checked"], "{a}");
            scans_same += sample["unchanged"].as_u64().unwrap();
        } else {
            roles_moved +=
                sample["changed"].as_u64().unwrap() + sample["deleted"].as_u64().unwrap();
        }
    }
    assert_eq!(scans_same, 60);
    // Round 0's snapshot: role1, role2 changed, role4, role5 deleted; round 1's: role2
    // changed, role5 deleted.
    assert_eq!(roles_moved, 6, "{v:#}");
    // Quietly, only the samples that found something are shown, each naming its
    // archive, and the totals agree with the JSON.
    let run = dcb(&s, &["verify", "--sample", "20", "--quiet"]);
    assert_eq!(run.code, 0, "{}{}", run.stdout, run.stderr);
    let named: Vec<&str> = run
        .stdout
        .lines()
        .filter(|l| l.starts_with("sample   "))
        .collect();
    assert!(!named.is_empty(), "{}", run.stdout);
    assert!(
        named.iter().all(|l| l.contains(".roles.tar.gz: sample of")),
        "{}",
        run.stdout
    );
    let total = run
        .stdout
        .lines()
        .find(|l| l.contains("sampled against the database"))
        .unwrap_or_else(|| panic!("no sample totals: {}", run.stdout));
    assert!(total.contains("changed since the backup"), "{total}");
    let moved: u64 = total
        .split(", ")
        .skip(1)
        .map(|part| part.split(' ').next().unwrap().parse::<u64>().unwrap())
        .sum();
    assert_eq!(moved, 6, "{total}");
    let listed = list_json(&s);
    assert!(
        listed.iter().all(|e| e["verified"]["ok"] == true),
        "{listed:#?}"
    );
    let table = dcb(&s, &["list", "--collection", "scans"]);
    assert!(table.stdout.contains("ARCHIVE"), "{}", table.stdout);
    assert!(
        table.stdout.contains("3 archives, 600 documents"),
        "{}",
        table.stdout
    );
}

// `--until` restores exactly the documents before TIME, from the archives whose window
// starts before it.
#[tokio::test]
async fn until_restores_exactly_the_documents_before_time() {
    let client = support::client().await;
    let src_name = support::unique_db("until_src");
    let dst_name = format!("{src_name}_restored");
    let src = client.database(&src_name);
    let now = DateTime::now().timestamp_millis();
    let minute = 60_000;
    // One document a minute over the last three hours.
    let docs: Vec<Document> = (0..180)
        .map(|i| doc! {"createdAt": DateTime::from_millis(now - (180 - i) * minute), "i": i})
        .collect();
    src.collection::<Document>("scans")
        .insert_many(docs)
        .await
        .unwrap();
    src.collection::<Document>("roles")
        .insert_one(doc! {"name": "admin", "updatedAt": DateTime::from_millis(now)})
        .await
        .unwrap();

    // Two archives: everything until 90 minutes ago, then the rest.
    let s = Scratch::new();
    s.write("policies/p.yaml", &policy(&src_name, "90m"));
    let run = dcb(&s, &["run", "--policy", "p"]);
    assert_eq!(run.code, 0, "{}{}", run.stdout, run.stderr);
    s.write("policies/p.yaml", &policy(&src_name, "0s"));
    let run = dcb(&s, &["run", "--policy", "p"]);
    assert_eq!(run.code, 0, "{}{}", run.stdout, run.stderr);
    assert_eq!(
        support::archives(&s.path().join("backups"), "p", "scans").len(),
        2
    );

    // TIME exactly on a document: that document is after the cut.
    for (minutes_ago, archives) in [(120, 1), (60, 2), (45, 2)] {
        let until_ms = now - minutes_ago * minute;
        let until = chrono::DateTime::from_timestamp_millis(until_ms)
            .unwrap()
            .to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
        let target = format!("{dst_name}_{minutes_ago}");
        let run = dcb(
            &s,
            &[
                "restore",
                "--policy",
                "p",
                "--collection",
                "scans",
                "--until",
                &until,
                "--to-database",
                &target,
            ],
        );
        assert_eq!(run.code, 0, "{}{}", run.stdout, run.stderr);
        assert!(
            run.stdout.contains(&format!("{archives} archive")),
            "{until}: {}",
            run.stdout
        );
        let want: Vec<i64> = (0..180)
            .filter(|i| now - (180 - i) * minute < until_ms)
            .collect();
        let mut got: Vec<i64> = client
            .database(&target)
            .collection::<Document>("scans")
            .find(doc! {})
            .await
            .unwrap()
            .try_collect::<Vec<_>>()
            .await
            .unwrap()
            .iter()
            .map(|d| d.get_i64("i").unwrap())
            .collect();
        got.sort();
        assert_eq!(got, want, "until {until}");
    }
    // TIME exactly at the second archive's window start: that archive is not needed.
    let second = support::archives(&s.path().join("backups"), "p", "scans").remove(1);
    let manifest: serde_json::Value = serde_json::from_slice(
        &std::fs::read(
            second
                .to_string_lossy()
                .replace(".tar.gz", ".manifest.json"),
        )
        .unwrap(),
    )
    .unwrap();
    let from = manifest["from"].as_str().unwrap();
    let target = format!("{dst_name}_edge");
    let args = [
        "restore",
        "--policy",
        "p",
        "--collection",
        "scans",
        "--until",
        from,
        "--to-database",
        &target,
    ];
    let run = dcb(&s, &args);
    assert_eq!(run.code, 0, "{}{}", run.stdout, run.stderr);
    assert!(run.stdout.contains("1 archive,"), "{}", run.stdout);
    // Again into the now non-empty target: refused without --drop, which would keep
    // documents written after TIME.
    let run = dcb(&s, &args);
    assert_eq!(run.code, 1, "{}{}", run.stdout, run.stderr);
    assert!(run.stderr.contains("already holds"), "{}", run.stderr);
    // With --drop: the target holds exactly the documents before TIME again, and a
    // document written there after TIME (as a live system would) is gone.
    let from_ms = chrono::DateTime::parse_from_rfc3339(from)
        .unwrap()
        .timestamp_millis();
    let edge = client.database(&target).collection::<Document>("scans");
    edge.insert_one(doc! {"createdAt": DateTime::from_millis(from_ms + minute), "i": 1000_i64})
        .await
        .unwrap();
    let mut with_drop = args.to_vec();
    with_drop.push("--drop");
    let run = dcb(&s, &with_drop);
    assert_eq!(run.code, 0, "{}{}", run.stdout, run.stderr);
    let want: Vec<i64> = (0..180)
        .filter(|i| now - (180 - i) * minute < from_ms)
        .collect();
    assert!(!want.is_empty() && want.len() < 180, "{}", want.len());
    let mut got: Vec<i64> = edge
        .find(doc! {})
        .await
        .unwrap()
        .try_collect::<Vec<_>>()
        .await
        .unwrap()
        .iter()
        .map(|d| d.get_i64("i").unwrap())
        .collect();
    got.sort();
    assert_eq!(got, want, "--drop then --until {from}");

    // Before the first document's archive window ends there is still the first
    // archive (it starts at the beginning), but nothing before any document.
    let run = dcb(
        &s,
        &[
            "restore",
            "--until",
            "2000-01-01T00:00:00Z",
            "--to-database",
            &format!("{dst_name}_none"),
        ],
    );
    assert_eq!(run.code, 0, "{}{}", run.stdout, run.stderr);
    let n = client
        .database(&format!("{dst_name}_none"))
        .collection::<Document>("scans")
        .count_documents(doc! {})
        .await
        .unwrap();
    assert_eq!(n, 0);
    // A time that is not one.
    let run = dcb(&s, &["restore", "--until", "soon", "--to-database", "x"]);
    assert_eq!(run.code, 2);
    assert!(run.stderr.contains("RFC 3339"), "{}", run.stderr);
}

fn flip(path: &Path, at: u64) {
    let mut bytes = std::fs::read(path).unwrap();
    bytes[at as usize] ^= 0x20;
    std::fs::write(path, bytes).unwrap();
}

// A corrupt archive stops the restore before the first write, naming archive and
// member; `dcb verify` exits 1 and says the same.
#[tokio::test]
async fn corrupt_archive_stops_restore_with_target_untouched() {
    let client = support::client().await;
    let src_name = support::unique_db("corrupt_src");
    let dst_name = format!("{src_name}_restored");
    let src = client.database(&src_name);
    add_scans(
        &src,
        2000,
        DateTime::from_millis(DateTime::now().timestamp_millis() - 1000),
    )
    .await;
    let s = Scratch::new();
    s.write(
        "policies/p.yaml",
        &format!("name: p\nschedule: \"0 * * * *\"\ndatabase: {src_name}\nwindow: {{initial: all, settle: 0s}}\ncollections: [scans]\nretention: 7d\n"),
    );
    let run = dcb(&s, &["run", "--policy", "p"]);
    assert_eq!(run.code, 0, "{}{}", run.stdout, run.stderr);
    let archive = support::archives(&s.path().join("backups"), "p", "scans").remove(0);
    let len = std::fs::metadata(&archive).unwrap().len();
    flip(&archive, len / 2);

    let run = dcb(&s, &["verify"]);
    assert_eq!(run.code, 1, "{}{}", run.stdout, run.stderr);
    assert!(run.stdout.contains("CORRUPT"), "{}", run.stdout);
    assert!(
        run.stdout.contains(&format!("{src_name}/scans.bson")),
        "{}",
        run.stdout
    );

    let run = dcb(&s, &["restore", "--to-database", &dst_name]);
    assert_eq!(run.code, 1, "{}{}", run.stdout, run.stderr);
    assert!(run.stderr.contains("is corrupt"), "{}", run.stderr);
    assert!(run.stderr.contains("nothing was written"), "{}", run.stderr);
    assert!(
        !client
            .list_database_names()
            .await
            .unwrap()
            .contains(&dst_name)
    );
    let listed = list_json(&s);
    assert_eq!(listed[0]["verified"]["ok"], false, "{listed:#?}");

    // A missing archive is reported by verify too, and a restore refuses to leave a
    // hole in the data.
    std::fs::remove_file(&archive).unwrap();
    let run = dcb(&s, &["verify"]);
    assert_eq!(run.code, 1, "{}{}", run.stdout, run.stderr);
    assert!(run.stdout.contains("is missing"), "{}", run.stdout);
    let run = dcb(&s, &["restore", "--to-database", &dst_name]);
    assert_eq!(run.code, 1, "{}{}", run.stdout, run.stderr);
    assert!(run.stderr.contains("cannot be read"), "{}", run.stderr);
    assert!(
        !client
            .list_database_names()
            .await
            .unwrap()
            .contains(&dst_name)
    );
}

// Every archive of a chain is verified before the first write: with three good
// archives of one collection and a fourth, the newest, corrupt, the restore stops
// naming it, and the target database is never created (a restore that checked each
// archive just before writing it would have written the first three).
#[tokio::test]
async fn a_corrupt_last_archive_of_a_chain_stops_the_restore_before_any_write() {
    let client = support::client().await;
    let src_name = support::unique_db("chain_src");
    let dst_name = format!("{src_name}_restored");
    let src = client.database(&src_name);
    let s = Scratch::new();
    s.write(
        "policies/p.yaml",
        &format!("name: p\nschedule: \"0 * * * *\"\ndatabase: {src_name}\nwindow: {{initial: all, settle: 0s}}\ncollections: [scans]\nretention: 7d\n"),
    );
    for round in 0..4 {
        add_scans(&src, 300, DateTime::now()).await;
        tokio::time::sleep(Duration::from_millis(20)).await;
        let run = dcb(&s, &["run", "--policy", "p"]);
        assert_eq!(run.code, 0, "round {round}: {}{}", run.stdout, run.stderr);
        assert!(run.stdout.contains("300 docs"), "{}", run.stdout);
    }
    let chain = support::archives(&s.path().join("backups"), "p", "scans");
    assert_eq!(chain.len(), 4, "{chain:?}");
    let last = chain.last().unwrap();
    let len = std::fs::metadata(last).unwrap().len();
    flip(last, len / 2);
    // The plan is the whole chain, oldest first: the corrupt archive comes last.
    let run = dcb(&s, &["restore", "--to-database", &dst_name, "--dry-run"]);
    assert_eq!(run.code, 0, "{}{}", run.stdout, run.stderr);
    assert!(
        run.stdout.contains("4 archives, 1,200 documents"),
        "{}",
        run.stdout
    );

    let run = dcb(&s, &["restore", "--to-database", &dst_name]);
    assert_eq!(run.code, 1, "{}{}", run.stdout, run.stderr);
    assert!(
        !client
            .list_database_names()
            .await
            .unwrap()
            .contains(&dst_name),
        "the target database exists: something was written before the corrupt archive \
         was found"
    );
    let name = last.file_name().unwrap().to_string_lossy().into_owned();
    assert!(
        run.stderr.contains(&format!("{name} is corrupt")),
        "names the last archive: {}",
        run.stderr
    );
    assert!(run.stderr.contains("nothing was written"), "{}", run.stderr);
    for earlier in &chain[..3] {
        let n = earlier.file_name().unwrap().to_string_lossy().into_owned();
        assert!(
            !run.stderr.contains(&format!("{n} is corrupt")),
            "{}",
            run.stderr
        );
    }
}

/// The `restore` lines of the audit log.
fn restore_audits(s: &Scratch) -> Vec<serde_json::Value> {
    std::fs::read_to_string(s.path().join("backups/logs/audit.log"))
        .unwrap_or_default()
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .filter(|l| l["operation"] == "restore")
        .collect()
}

// Every restore that stops, however early, leaves one failed `restore` line in the
// audit log with the reason; so does verify of a broken manifest.
#[tokio::test]
async fn every_refused_restore_is_audited() {
    let client = support::client().await;
    let src_name = support::unique_db("audit_src");
    let dst_name = format!("{src_name}_restored");
    let src = client.database(&src_name);
    add_scans(
        &src,
        50,
        DateTime::from_millis(DateTime::now().timestamp_millis() - 1000),
    )
    .await;
    let s = Scratch::new();
    s.write(
        "policies/p.yaml",
        &format!("name: p\nschedule: \"0 * * * *\"\ndatabase: {src_name}\nwindow: {{initial: all, settle: 0s}}\ncollections: [scans]\nretention: 7d\n"),
    );
    let run = dcb(&s, &["run", "--policy", "p"]);
    assert_eq!(run.code, 0, "{}{}", run.stdout, run.stderr);
    let dead = format!(
        "mongodb://127.0.0.1:{}/?serverSelectionTimeoutMS=500",
        support::free_port()
    );
    let until = "2999-01-01T00:00:00Z";
    let expect_audited = |args: &[&str], uri: &str, code: i32, reason: &str| {
        let before = restore_audits(&s).len();
        let run = Run::from(
            s.dcb()
                .args(args)
                .env("DCB_MONGODB_URI", uri)
                .output()
                .unwrap(),
        );
        assert_eq!(run.code, code, "{args:?}: {}{}", run.stdout, run.stderr);
        assert!(run.stderr.contains(reason), "{args:?}: {}", run.stderr);
        let audits = restore_audits(&s);
        assert_eq!(audits.len(), before + 1, "{args:?}: one line: {audits:#?}");
        let last = &audits[before];
        assert_eq!(last["result"], "failed", "{last}");
        assert!(
            last["detail"].as_str().unwrap_or_default().contains(reason),
            "{args:?}: {last}"
        );
        assert!(
            last["target"]
                .as_str()
                .unwrap_or_default()
                .starts_with(args[2]),
            "{last}"
        );
    };
    let live = support::server().uri.clone();
    // Refused by the plan, by a bad time, by the connection, by a non-empty target.
    expect_audited(
        &["restore", "--to-database", &src_name],
        &live,
        2,
        "--in-place",
    );
    expect_audited(
        &["restore", "--to-database", &dst_name, "--until", "soon"],
        &live,
        2,
        "RFC 3339",
    );
    expect_audited(
        &[
            "restore",
            "--to-database",
            &dst_name,
            "--identity",
            "nope.key",
        ],
        &live,
        2,
        "cannot read the identity file",
    );
    expect_audited(
        &["restore", "--to-database", &dst_name, "--until", until],
        &dead,
        1,
        &format!("{dst_name}.scans"),
    );
    expect_audited(
        &[
            "restore",
            "--to-database",
            &dst_name,
            "--archive",
            "nope.tar.gz",
        ],
        &live,
        1,
        "no such archive",
    );
    let run = dcb(&s, &["restore", "--to-database", &dst_name]);
    assert_eq!(run.code, 0, "{}{}", run.stdout, run.stderr);
    expect_audited(
        &["restore", "--to-database", &dst_name, "--until", until],
        &live,
        1,
        "already holds",
    );
    // A corrupt archive, then an unreadable manifest.
    let archive = support::archives(&s.path().join("backups"), "p", "scans").remove(0);
    let good = std::fs::read(&archive).unwrap();
    flip(&archive, good.len() as u64 / 2);
    expect_audited(
        &["restore", "--to-database", &dst_name],
        &live,
        1,
        "corrupt",
    );
    std::fs::write(&archive, &good).unwrap();
    let broken = s.write("backups/p/20260101T000000.000Z_x.y.manifest.json", "{");
    expect_audited(
        &["restore", "--to-database", &dst_name],
        &live,
        1,
        "cannot be read",
    );
    // A dry run writes nothing, not even an audit line of its refusal.
    let before = restore_audits(&s).len();
    let run = dcb(&s, &["restore", "--to-database", &dst_name, "--dry-run"]);
    assert_eq!(run.code, 1, "{}{}", run.stdout, run.stderr);
    assert_eq!(restore_audits(&s).len(), before);

    // verify of the broken manifest is a failed verification in the audit log.
    let run = dcb(&s, &["verify"]);
    assert_eq!(run.code, 1, "{}{}", run.stdout, run.stderr);
    let audit = std::fs::read_to_string(s.path().join("backups/logs/audit.log")).unwrap();
    let name = broken.file_name().unwrap().to_string_lossy().into_owned();
    assert!(
        audit.lines().any(|l| {
            let v: serde_json::Value = serde_json::from_str(l).unwrap();
            v["operation"] == "verify"
                && v["result"] == "failed"
                && v["policy"] == "p"
                && v["archive"].as_str().unwrap_or_default().ends_with(&name)
        }),
        "{audit}"
    );
}

// One broken manifest blocks only the collection it may belong to: `--collection`
// of another restores, the broken one's own collection (or a manifest whose name
// does not say) is still refused.
#[tokio::test]
async fn a_broken_manifest_blocks_only_its_collection() {
    let client = support::client().await;
    let src_name = support::unique_db("broken_src");
    let dst_name = format!("{src_name}_restored");
    let src = client.database(&src_name);
    let past = DateTime::from_millis(DateTime::now().timestamp_millis() - 1000);
    add_scans(&src, 30, past).await;
    src.collection::<Document>("roles")
        .insert_one(doc! {"name": "admin", "updatedAt": past})
        .await
        .unwrap();
    let s = Scratch::new();
    s.write("policies/p.yaml", &policy(&src_name, "0s"));
    let run = dcb(&s, &["run", "--policy", "p"]);
    assert_eq!(run.code, 0, "{}{}", run.stdout, run.stderr);
    let roles = support::archives(&s.path().join("backups"), "p", "roles").remove(0);
    std::fs::remove_file(&roles).unwrap();

    let restore = |coll: &str| {
        dcb(
            &s,
            &["restore", "--collection", coll, "--to-database", &dst_name],
        )
    };
    let run = restore("scans");
    assert_eq!(run.code, 0, "{}{}", run.stdout, run.stderr);
    assert!(
        run.stderr.contains("not a selected collection"),
        "{}",
        run.stderr
    );
    let n = client
        .database(&dst_name)
        .collection::<Document>("scans")
        .count_documents(doc! {})
        .await
        .unwrap();
    assert_eq!(n, 30);
    let run = restore("roles");
    assert_eq!(run.code, 1, "{}{}", run.stdout, run.stderr);
    assert!(run.stderr.contains("cannot be read"), "{}", run.stderr);
    // Without --collection, the hole is in the selection.
    let run = dcb(&s, &["restore", "--to-database", &dst_name]);
    assert_eq!(run.code, 1, "{}{}", run.stdout, run.stderr);
    // A manifest whose name does not say whose it is may be anyone's.
    s.write("backups/p/copy.manifest.json", "{");
    let run = restore("scans");
    assert_eq!(run.code, 1, "{}{}", run.stdout, run.stderr);
    assert!(run.stderr.contains("copy.manifest.json"), "{}", run.stderr);
}

// Documents stored before a validator was added fail it when restored into a target
// created with that validator: the restore stops naming the collection, the `_id` and
// the flag; `--bypass-validation` restores them all (inserted, then replaced).
#[tokio::test]
async fn validators_fail_clearly_and_bypass_validation_restores() {
    let client = support::client().await;
    let src_name = support::unique_db("valid_src");
    let dst_name = format!("{src_name}_restored");
    let src = client.database(&src_name);
    let past = DateTime::from_millis(DateTime::now().timestamp_millis() - 1000);
    let ids = add_scans(&src, 40, past).await;
    // The validator comes after the documents, which lack its field.
    src.run_command(doc! {
        "collMod": "scans",
        "validator": {"$jsonSchema": {"required": ["line"]}},
        "validationLevel": "moderate",
    })
    .await
    .unwrap();
    let s = Scratch::new();
    s.write(
        "policies/p.yaml",
        &format!("name: p\nschedule: \"0 * * * *\"\ndatabase: {src_name}\nwindow: {{initial: all, settle: 0s}}\ncollections: [scans]\nretention: 7d\n"),
    );
    let run = dcb(&s, &["run", "--policy", "p"]);
    assert_eq!(run.code, 0, "{}{}", run.stdout, run.stderr);

    let restore = |extra: &[&str]| {
        let mut args = vec!["restore", "--to-database", &dst_name];
        args.extend_from_slice(extra);
        dcb(&s, &args)
    };
    let named = |run: &Run| {
        assert_eq!(run.code, 1, "{}{}", run.stdout, run.stderr);
        assert!(
            run.stderr.contains(&format!("{dst_name}.scans"))
                && run.stderr.contains("fails the collection's validator")
                && run.stderr.contains("--bypass-validation")
                && ids.iter().any(|id| run.stderr.contains(&id.to_hex())),
            "{}",
            run.stderr
        );
    };
    named(&restore(&[]));
    let dst = client.database(&dst_name);
    let run = restore(&["--bypass-validation"]);
    assert_eq!(run.code, 0, "{}{}", run.stdout, run.stderr);
    assert!(run.stdout.contains("40 documents"), "{}", run.stdout);
    assert_eq!(raw_docs(&dst, "scans").await, raw_docs(&src, "scans").await);
    // Replacing what is there goes past the validator too, and fails as clearly
    // without the flag.
    let run = restore(&["--bypass-validation"]);
    assert_eq!(run.code, 0, "{}{}", run.stdout, run.stderr);
    assert!(run.stdout.contains("40 replaced"), "{}", run.stdout);
    named(&restore(&[]));
}

// A time-series collection enforces no unique `_id`, so a second restore into it would
// duplicate every document: refused without --drop, and --drop restores it again.
#[tokio::test]
async fn time_series_targets_are_not_restored_into_twice() {
    let client = support::client().await;
    let src_name = support::unique_db("ts_src");
    let dst_name = format!("{src_name}_restored");
    let src = client.database(&src_name);
    src.run_command(doc! {"create": "readings", "timeseries": {"timeField": "createdAt", "metaField": "sensor"}})
        .await
        .unwrap();
    let past = DateTime::from_millis(DateTime::now().timestamp_millis() - 1000);
    src.collection::<Document>("readings")
        .insert_many((0..25).map(|i| doc! {"_id": i, "createdAt": past, "sensor": i % 3, "v": i}))
        .await
        .unwrap();
    let s = Scratch::new();
    s.write(
        "policies/p.yaml",
        &format!("name: p\nschedule: \"0 * * * *\"\ndatabase: {src_name}\nwindow: {{initial: all, settle: 0s}}\ncollections: [readings]\nretention: 7d\n"),
    );
    let run = dcb(&s, &["run", "--policy", "p"]);
    assert_eq!(run.code, 0, "{}{}", run.stdout, run.stderr);
    let count = || async {
        client
            .database(&dst_name)
            .collection::<Document>("readings")
            .count_documents(doc! {})
            .await
            .unwrap()
    };
    let args = ["restore", "--to-database", &dst_name];
    let run = dcb(&s, &args);
    assert_eq!(run.code, 0, "{}{}", run.stdout, run.stderr);
    assert_eq!(count().await, 25);
    let run = dcb(&s, &args);
    assert_eq!(run.code, 1, "{}{}", run.stdout, run.stderr);
    assert!(
        run.stderr
            .contains(&format!("{dst_name}.readings is a time-series collection"))
            && run.stderr.contains("--drop"),
        "{}",
        run.stderr
    );
    assert_eq!(count().await, 25, "nothing was written");
    let run = dcb(&s, &["restore", "--to-database", &dst_name, "--drop"]);
    assert_eq!(run.code, 0, "{}{}", run.stdout, run.stderr);
    assert_eq!(count().await, 25);
}
