//! `dcb run` against a real MongoDB wire-protocol server: incremental windows cover
//! every document exactly once, across runs, crashes and lost state.

mod support;

use std::collections::HashSet;
use std::path::Path;
use std::time::Duration;

use mongodb::IndexModel;
use mongodb::bson::{Bson, DateTime, Document, doc, oid::ObjectId};
use support::{Run, Scratch, archives, ids_in, oid_json, read_archives};

fn policy(db: &str) -> String {
    format!(
        "name: p\nschedule: \"0 * * * *\"\ndatabase: {db}\nwindow:\n  initial: all\n  settle: 0s\n\
         collections:\n  - api_logs\n  - name: roles\n    mode: snapshot\nretention: 7d\n"
    )
}

/// Insert `n` API-log documents with `createdAt` spread over the last `days` days.
async fn seed(uri: &str, db: &str, n: usize, days: i64) -> Vec<ObjectId> {
    let client = mongodb::Client::with_uri_str(uri).await.unwrap();
    let coll = client.database(db).collection::<Document>("api_logs");
    let now = DateTime::now().timestamp_millis();
    let span = days * 86_400_000;
    let docs: Vec<Document> = (0..n)
        .map(|i| {
            doc! {
                "_id": ObjectId::new(),
                "createdAt": DateTime::from_millis(now - span * (i as i64) / (n.max(1) as i64)),
                "path": format!("/api/scan/{}", i % 17),
                "line": "L1",
                "payload": "x".repeat(200),
            }
        })
        .collect();
    let ids = docs
        .iter()
        .map(|d| d.get_object_id("_id").unwrap())
        .collect();
    if !docs.is_empty() {
        coll.insert_many(docs).await.unwrap();
    }
    coll.create_index(IndexModel::builder().keys(doc! {"createdAt": 1}).build())
        .await
        .unwrap();
    ids
}

async fn seed_roles(uri: &str, db: &str) {
    let client = mongodb::Client::with_uri_str(uri).await.unwrap();
    let roles = client.database(db).collection::<Document>("roles");
    roles
        .insert_many(
            (0..5).map(|i| doc! {"name": format!("role{i}"), "updatedAt": DateTime::now()}),
        )
        .await
        .unwrap();
}

fn run_policy(s: &Scratch, uri: &str) -> Run {
    Run::from(
        s.dcb()
            .args(["run", "--policy", "p"])
            .env("DCB_MONGODB_URI", uri)
            .output()
            .unwrap(),
    )
}

fn as_set(ids: &[ObjectId]) -> HashSet<String> {
    ids.iter().map(oid_json).collect()
}

/// Every `_id` in the archives, asserting none appears twice.
fn exactly_once(paths: &[std::path::PathBuf]) -> HashSet<String> {
    let mut all = HashSet::new();
    for archive in read_archives(paths) {
        for id in ids_in(&archive) {
            assert!(all.insert(id.clone()), "{id} is in two archives");
        }
    }
    all
}

fn state(root: &Path) -> serde_json::Value {
    serde_json::from_slice(&std::fs::read(root.join("logs/state.json")).unwrap()).unwrap()
}

// A first run with `initial: all` exports every document; a second run exports
// exactly the documents inserted since; an independent reader agrees with the
// manifests on counts and checksums.
#[tokio::test]
async fn incremental_runs_cover_every_document_exactly_once() {
    let db = support::unique_db("incr");
    let uri = support::server().uri.clone();
    let first = seed(&uri, &db, 3000, 5).await;
    seed_roles(&uri, &db).await;
    let s = Scratch::new();
    s.write("policies/p.yaml", &policy(&db));

    let run = run_policy(&s, &uri);
    assert_eq!(run.code, 0, "{}{}", run.stdout, run.stderr);
    let root = s.path().join("backups");
    let one = archives(&root, "p", "api_logs");
    assert_eq!(one.len(), 1);
    let read = &read_archives(&one)[0];
    assert_eq!(exactly_once(&one), as_set(&first));
    // The manifest's counts and SHA-256s match what the independent reader saw.
    let manifest = &read["manifest"];
    assert_eq!(manifest["documents"], 3000);
    for m in manifest["members"].as_array().unwrap() {
        let seen = &read["members"][m["path"].as_str().unwrap()];
        assert_eq!(seen["sha256"], m["sha256"], "{m}");
        assert_eq!(seen["size"], m["size"], "{m}");
    }
    // The manifest beside the archive is the one inside it, plus the SHA-256 and size
    // of the whole file (which the copy inside cannot hold).
    let beside = one[0]
        .to_string_lossy()
        .replace(".tar.gz", ".manifest.json");
    let mut beside: serde_json::Value =
        serde_json::from_slice(&std::fs::read(beside).unwrap()).unwrap();
    let file = std::fs::read(&one[0]).unwrap();
    let sha = <sha2::Sha256 as sha2::Digest>::digest(&file);
    let sha: String = sha.iter().map(|b| format!("{b:02x}")).collect();
    let fields = beside.as_object_mut().unwrap();
    assert_eq!(fields.remove("archiveSha256").unwrap(), sha.as_str());
    assert_eq!(fields.remove("archiveSize").unwrap(), file.len());
    assert_eq!(&beside, manifest);

    let second = seed(&uri, &db, 500, 0).await;
    // Documents written "now" must be older than the next window's end.
    tokio::time::sleep(Duration::from_millis(50)).await;
    let run = run_policy(&s, &uri);
    assert_eq!(run.code, 0, "{}{}", run.stdout, run.stderr);
    let both = archives(&root, "p", "api_logs");
    assert_eq!(both.len(), 2);
    assert_eq!(exactly_once(&both[1..]), as_set(&second));
    let all: HashSet<String> = as_set(&first).union(&as_set(&second)).cloned().collect();
    assert_eq!(exactly_once(&both), all);

    // The watermark is the end of the last window.
    let st = state(&root);
    let entry = &st["collections"][format!("p/{db}/api_logs")];
    let m2 = &read_archives(&both[1..])[0]["manifest"];
    assert_eq!(entry["watermark"], m2["to"]);
    assert_eq!(entry["consecutiveFailures"], 0);
    // `dcb plan` shows the next window starting at the watermark.
    let plan = Run::from(
        s.dcb()
            .args(["plan", "--json"])
            .env("DCB_MONGODB_URI", &uri)
            .output()
            .unwrap(),
    );
    let view: serde_json::Value = serde_json::from_str(&plan.stdout).unwrap();
    assert_eq!(view[0]["collections"][0]["fromSource"], "watermark");
    // Snapshot collections are exported whole each run.
    assert_eq!(archives(&root, "p", "roles").len(), 2);
}

// Deleting state.json loses nothing and duplicates nothing: the watermarks are rebuilt
// from the manifests.
#[tokio::test]
async fn lost_state_is_rebuilt_from_manifests() {
    let db = support::unique_db("state");
    let uri = support::server().uri.clone();
    let first = seed(&uri, &db, 800, 3).await;
    seed_roles(&uri, &db).await;
    let s = Scratch::new();
    s.write("policies/p.yaml", &policy(&db));
    assert_eq!(run_policy(&s, &uri).code, 0);
    let root = s.path().join("backups");

    std::fs::remove_file(root.join("logs/state.json")).unwrap();
    let later = seed(&uri, &db, 120, 0).await;
    tokio::time::sleep(Duration::from_millis(50)).await;
    let run = run_policy(&s, &uri);
    assert_eq!(run.code, 0, "{}{}", run.stdout, run.stderr);
    assert!(
        run.stderr.contains("rebuilt watermarks from the manifests"),
        "{}",
        run.stderr
    );
    let all = archives(&root, "p", "api_logs");
    assert_eq!(all.len(), 2);
    assert_eq!(exactly_once(&all[1..]), as_set(&later));
    assert_eq!(exactly_once(&all).len(), first.len() + later.len());

    // A corrupt state.json is set aside and rebuilt the same way.
    std::fs::write(root.join("logs/state.json"), b"{not json").unwrap();
    let run = run_policy(&s, &uri);
    assert_eq!(run.code, 0, "{}{}", run.stdout, run.stderr);
    assert!(
        run.stderr.contains("state.json is corrupt"),
        "{}",
        run.stderr
    );
    assert_eq!(
        archives(&root, "p", "api_logs").len(),
        2,
        "an empty window writes no archive"
    );
    let aside = std::fs::read_dir(root.join("logs"))
        .unwrap()
        .flatten()
        .any(|e| {
            e.file_name()
                .to_string_lossy()
                .starts_with("state.json.corrupt-")
        });
    assert!(aside, "the corrupt file is kept for inspection");
}

// A state.json that is behind the archives on disk (dcb stopped, or could not write
// it, after an archive was committed) catches up with the manifests: the window is not
// exported twice.
#[tokio::test]
async fn stale_state_catches_up_with_the_manifests() {
    let db = support::unique_db("stale");
    let uri = support::server().uri.clone();
    let first = seed(&uri, &db, 300, 2).await;
    seed_roles(&uri, &db).await;
    let s = Scratch::new();
    s.write("policies/p.yaml", &policy(&db));
    assert_eq!(run_policy(&s, &uri).code, 0);
    let root = s.path().join("backups");
    let old_state = std::fs::read(root.join("logs/state.json")).unwrap();

    let later = seed(&uri, &db, 50, 0).await;
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert_eq!(run_policy(&s, &uri).code, 0);
    assert_eq!(archives(&root, "p", "api_logs").len(), 2);
    // As if the second run had died before writing its state.
    std::fs::write(root.join("logs/state.json"), &old_state).unwrap();

    let run = run_policy(&s, &uri);
    assert_eq!(run.code, 0, "{}{}", run.stdout, run.stderr);
    assert!(
        run.stderr
            .contains("state.json was behind the archives on disk"),
        "{}",
        run.stderr
    );
    let all = archives(&root, "p", "api_logs");
    assert_eq!(all.len(), 2, "the second window is not exported again");
    assert_eq!(exactly_once(&all).len(), first.len() + later.len());
    let st = state(&root);
    let to = std::fs::read(support::manifest_of(&all[1])).unwrap();
    let to: serde_json::Value = serde_json::from_slice(&to).unwrap();
    // The third run's (empty) window started where the second archive ended.
    let watermark = st["collections"][format!("p/{db}/api_logs")]["watermark"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(
        watermark.as_str() >= to["to"].as_str().unwrap(),
        "{watermark} {}",
        to["to"]
    );
}

// An archive left without its manifest (dcb stopped between the two renames) gets it
// back from the copy inside, so list, restore and retention see it again.
#[tokio::test]
async fn an_archive_without_its_manifest_is_recovered() {
    let db = support::unique_db("orphan");
    let uri = support::server().uri.clone();
    seed(&uri, &db, 200, 1).await;
    seed_roles(&uri, &db).await;
    let s = Scratch::new();
    s.write("policies/p.yaml", &policy(&db));
    assert_eq!(run_policy(&s, &uri).code, 0);
    let root = s.path().join("backups");
    let archive = archives(&root, "p", "api_logs").pop().unwrap();
    let beside = support::manifest_of(&archive);
    let original: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&beside).unwrap()).unwrap();
    std::fs::remove_file(&beside).unwrap();

    let run = run_policy(&s, &uri);
    assert_eq!(run.code, 0, "{}{}", run.stdout, run.stderr);
    assert!(
        run.stderr.contains("recovered the manifest"),
        "{}",
        run.stderr
    );
    let recovered: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&beside).unwrap()).unwrap();
    assert_eq!(recovered, original, "the same manifest, file hash included");
    assert_eq!(
        archives(&root, "p", "api_logs").len(),
        1,
        "nothing re-exported"
    );
    let verify = s.run(&["verify", "--policy", "p"]);
    assert_eq!(verify.code, 0, "{}{}", verify.stdout, verify.stderr);
}

// Documents whose time field is missing or not a date are counted and reported, in
// the output and in the manifest.
#[tokio::test]
async fn untimed_documents_are_reported() {
    let db = support::unique_db("untimed");
    let uri = support::server().uri.clone();
    seed(&uri, &db, 10, 1).await;
    seed_roles(&uri, &db).await;
    let client = support::client().await;
    client
        .database(&db)
        .collection::<Document>("api_logs")
        .insert_many([
            doc! {"path": "no time"},
            doc! {"createdAt": "2026-11-25"},
            doc! {"createdAt": Bson::Null},
        ])
        .await
        .unwrap();
    let s = Scratch::new();
    s.write("policies/p.yaml", &policy(&db));
    let run = run_policy(&s, &uri);
    assert_eq!(run.code, 0, "{}{}", run.stdout, run.stderr);
    assert!(
        run.stdout
            .contains("(3 documents have no date in `createdAt`"),
        "{}",
        run.stdout
    );
    let archive = &read_archives(&archives(&s.path().join("backups"), "p", "api_logs"))[0];
    assert_eq!(archive["manifest"]["untimed"], 3);
    assert_eq!(archive["manifest"]["documents"], 10);
}

// Failures are one line naming policy, collection and cause; the others still run;
// the exit code is 1; nothing half-written is left and no watermark moves.
#[tokio::test]
async fn failures_are_clear_and_isolated() {
    let db = support::unique_db("fail");
    let uri = support::server().uri.clone();
    seed(&uri, &db, 50, 1).await;
    seed_roles(&uri, &db).await;
    let s = Scratch::new();
    s.write(
        "policies/p.yaml",
        &policy(&db).replace("  - api_logs\n", "  - api_logs\n  - nosuch\n"),
    );
    let run = run_policy(&s, &uri);
    assert_eq!(run.code, 1);
    assert!(run.stdout.contains("FAILED  p/nosuch"), "{}", run.stdout);
    assert!(
        run.stdout.contains(&format!(
            "collection `nosuch` does not exist in database `{db}`"
        )),
        "{}",
        run.stdout
    );
    assert!(
        run.stdout.contains("2 collections exported, 1 failed"),
        "{}",
        run.stdout
    );
    let st = state(&s.path().join("backups"));
    let entry = &st["collections"][format!("p/{db}/nosuch")];
    assert_eq!(entry["consecutiveFailures"], 1);
    assert_eq!(entry["watermark"], serde_json::Value::Null);

    // An unreachable server: every collection fails with the same clear line.
    let s2 = Scratch::new();
    s2.write("policies/p.yaml", &policy(&db));
    let run = run_policy(&s2, "mongodb://127.0.0.1:9/?serverSelectionTimeoutMS=300");
    assert_eq!(run.code, 1);
    assert!(
        run.stdout
            .contains("FAILED  p/api_logs  server unreachable"),
        "{}",
        run.stdout
    );

    // A backup root that cannot be written (a file where the folder should be).
    let s3 = Scratch::new();
    s3.write("policies/p.yaml", &policy(&db));
    s3.write("blocked", "not a folder");
    let run = Run::from(
        s3.dcb()
            .args(["--backup-root", "blocked/backups", "run", "--policy", "p"])
            .env("DCB_MONGODB_URI", &uri)
            .output()
            .unwrap(),
    );
    assert_eq!(run.code, 1, "{}{}", run.stdout, run.stderr);
    assert!(run.stdout.contains("FAILED  p/api_logs"), "{}", run.stdout);
    assert!(run.stdout.contains("blocked/backups"), "{}", run.stdout);
}

// An unknown policy or an invalid policy folder is a usage error: exit 2.
#[test]
fn usage_errors() {
    let s = Scratch::new();
    s.write("policies/p.yaml", &policy("x"));
    let run = s.run(&["run", "--policy", "nope"]);
    assert_eq!(run.code, 2);
    assert!(
        run.stderr.contains("no policy named `nope`"),
        "{}",
        run.stderr
    );
    assert_eq!(
        s.run(&["run"]).code,
        2,
        "one of --policy or --all is required"
    );
    s.write("policies/bad.yaml", "name: bad\n");
    assert_eq!(s.run(&["run", "--all"]).code, 2);
}

// A bounded window counts untimed documents through the index (missing, null,
// string, number...), and without an index it scans with the window applied on the
// client: both export exactly the window and report the same count.
#[tokio::test]
async fn bounded_windows_with_and_without_index() {
    let uri = support::server().uri.clone();
    let client = support::client().await;
    for indexed in [true, false] {
        let db = support::unique_db(if indexed { "ranged_ix" } else { "ranged_noix" });
        let coll = client.database(&db).collection::<Document>("api_logs");
        let now = DateTime::now().timestamp_millis();
        let inside: Vec<Document> = (0..30)
            .map(|i| doc! {"_id": ObjectId::new(), "createdAt": DateTime::from_millis(now - 3_600_000 * (i + 1))})
            .collect();
        let want: HashSet<String> = inside
            .iter()
            .map(|d| oid_json(&d.get_object_id("_id").unwrap()))
            .collect();
        coll.insert_many(inside).await.unwrap();
        // Older than the 2-day window: not exported.
        coll.insert_one(doc! {"createdAt": DateTime::from_millis(now - 5 * 86_400_000)})
            .await
            .unwrap();
        coll.insert_many([
            doc! {"path": "no time"},
            doc! {"createdAt": "2026-11-25"},
            doc! {"createdAt": 1_700_000_000_000i64},
            doc! {"createdAt": Bson::Null},
        ])
        .await
        .unwrap();
        if indexed {
            coll.create_index(IndexModel::builder().keys(doc! {"createdAt": 1}).build())
                .await
                .unwrap();
        }
        let s = Scratch::new();
        s.write(
            "policies/p.yaml",
            &format!("name: p\nschedule: \"0 * * * *\"\ndatabase: {db}\nwindow: {{initial: 2d, settle: 0s}}\ncollections: [api_logs]\nretention: 7d\n"),
        );
        let run = run_policy(&s, &uri);
        assert_eq!(run.code, 0, "{}{}", run.stdout, run.stderr);
        assert!(
            run.stdout
                .contains("(4 documents have no date in `createdAt`"),
            "indexed={indexed}: {}",
            run.stdout
        );
        assert_eq!(
            run.stderr.contains("no index leads with the time field"),
            !indexed,
            "{}",
            run.stderr
        );
        let all = archives(&s.path().join("backups"), "p", "api_logs");
        assert_eq!(exactly_once(&all), want, "indexed={indexed}");
    }
}

// A run ends its MongoDB client before it returns: nothing of the driver is left
// running on the runtime. The client used to be dropped instead, and its clean-up
// (`endSessions`, the monitors, the pool) ran on after the run returned, while `dcb
// run` dropped its runtime under it. About one run in a few hundred, the driver then
// panicked (`SendError` in `connection_requester.rs`; caught, the run still
// succeeded), and with `RUST_BACKTRACE` set that panic's backtrace cost about 150 MB of
// peak RSS: the benchmark's unexplained 193 MB runs. With the client only dropped,
// this test finds a driver task still running 2 s after the run.
#[test]
fn a_run_leaves_no_driver_task_running() {
    use std::sync::Arc;
    use std::time::Instant;

    let db = support::unique_db("close");
    let uri = support::server().uri.clone();
    let s = Scratch::new();
    s.write("policies/p.yaml", &policy(&db));
    // Seeded on a runtime of its own: its clients' tasks must not be counted below.
    tokio::runtime::Runtime::new().unwrap().block_on(async {
        seed(&uri, &db, 20, 1).await;
        seed_roles(&uri, &db).await;
    });
    let overrides = dcb::config::Overrides {
        config: None,
        policies_dir: Some(s.path().join("policies")),
        backup_root: Some(s.path().join("backups")),
    };
    let env = |name: &str| (name == "DCB_MONGODB_URI").then(|| uri.clone());
    let settings = dcb::config::Settings::resolve(&overrides, &env).unwrap();
    let plans = dcb::commands::load_plans(&settings, &["p".to_string()], false).unwrap();
    let quiet = |_: &dcb::plan::JobSpec| -> Arc<dyn dcb::export::Progress> { Arc::new(()) };
    // The runtime `dcb run` uses.
    dcb::commands::runtime().block_on(async {
        let tasks = || {
            tokio::runtime::Handle::current()
                .metrics()
                .num_alive_tasks()
        };
        let events = dcb::events::Emitter::new(&settings);
        let report = dcb::runner::run(&settings, &plans, &quiet, &events).await;
        assert_eq!(report.failed(), 0, "{:?}", report.results);
        // The last task (the client's own clean-up, woken as the client goes) ends
        // within milliseconds; a dropped client's tasks would run for seconds.
        let returned = Instant::now();
        while tasks() > 0 && returned.elapsed() < Duration::from_secs(2) {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert_eq!(
            tasks(),
            0,
            "driver tasks still running after the run returned"
        );
    });
}
