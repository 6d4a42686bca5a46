//! Restore drills against the real test server: a good backup root passes; a missing
//! archive of a chain, a restore the scratch collection refuses, and a scratch
//! database that disagrees with the archives each fail the drill, are recorded in
//! drills.log and raise the drill's alert; the scratch database is gone afterwards in
//! every case, and nothing outside it is ever written.

mod support;

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use futures_util::TryStreamExt;
use mongodb::bson::{DateTime, Document, RawDocumentBuf, doc, oid::ObjectId};
use mongodb::{Database, IndexModel};
use sha2::Digest;
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

fn policy(name: &str, db: &str, extra: &str) -> String {
    format!(
        "name: {name}\nschedule: \"0 * * * *\"\ndatabase: {db}\nwindow: {{initial: all, settle: 0s}}\n\
         collections: [scans, {{name: roles, mode: snapshot, timeField: updatedAt}}]\nretention: 7d\n{extra}"
    )
}

async fn add_scans(db: &Database, n: usize) -> Vec<ObjectId> {
    let at = DateTime::now();
    let docs: Vec<Document> = (0..n)
        .map(|i| {
            doc! {
                "_id": ObjectId::new(),
                "createdAt": at,
                "barcode": format!("BC-{}-{i:05}", at.timestamp_millis()),
                "measure": {"v": i as f64 * 0.5, "ok": i % 3 != 0},
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

/// A source with two runs of `scans` (an index on it) and a snapshot of `roles`.
async fn seed_and_back_up(s: &Scratch, name: &str, db: &Database) {
    add_scans(db, 30).await;
    db.collection::<Document>("scans")
        .create_index(IndexModel::builder().keys(doc! {"barcode": 1}).build())
        .await
        .unwrap();
    db.collection::<Document>("roles")
        .insert_many((0..4).map(|i| doc! {"name": format!("r{i}"), "updatedAt": DateTime::now()}))
        .await
        .unwrap();
    let run = dcb(s, &["run", "--policy", name]);
    assert_eq!(run.code, 0, "{}{}", run.stdout, run.stderr);
    tokio::time::sleep(Duration::from_millis(50)).await;
    add_scans(db, 20).await;
    tokio::time::sleep(Duration::from_millis(50)).await;
    let run = dcb(s, &["run", "--policy", name]);
    assert_eq!(run.code, 0, "{}{}", run.stdout, run.stderr);
}

/// Every database but the scratch ones: its collections, each with a digest of its
/// documents and its index names. `own` is this test's source; other tests' sources
/// (`drill_…`) are left out, they change meanwhile.
async fn snapshot(own: &str) -> BTreeMap<String, BTreeMap<String, (u64, String, Vec<String>)>> {
    let client = support::client().await;
    let mut out = BTreeMap::new();
    for name in client.list_database_names().await.unwrap() {
        // `local` holds the oplog, which records every write, the scratch ones too.
        if name == "local"
            || name.starts_with("dcb_drill")
            || (name.starts_with("drill_") && name != own)
        {
            continue;
        }
        let db = client.database(&name);
        let mut colls = BTreeMap::new();
        for c in db.list_collection_names().await.unwrap() {
            let mut cursor = db
                .collection::<RawDocumentBuf>(&c)
                .find(doc! {})
                .sort(doc! {"_id": 1})
                .await
                .unwrap();
            let mut h = sha2::Sha256::new();
            let mut n = 0;
            while let Some(d) = cursor.try_next().await.unwrap() {
                h.update(d.as_bytes());
                n += 1;
            }
            let mut ix = db
                .collection::<Document>(&c)
                .list_index_names()
                .await
                .unwrap_or_default();
            ix.sort();
            colls.insert(c, (n, format!("{:x}", h.finalize()), ix));
        }
        out.insert(name, colls);
    }
    out
}

async fn exists(db: &str) -> bool {
    let client = support::client().await;
    client
        .list_database_names()
        .await
        .unwrap()
        .iter()
        .any(|d| d == db)
}

fn drills_log(root: &Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(root.join("logs/drills.log"))
        .unwrap_or_default()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

fn settings(s: &Scratch) -> dcb::config::Settings {
    let overrides = dcb::config::Overrides {
        config: s
            .path()
            .join("dcb.yaml")
            .is_file()
            .then(|| s.path().join("dcb.yaml")),
        policies_dir: Some(s.path().join("policies")),
        backup_root: Some(s.path().join("backups")),
    };
    let uri = support::server().uri.clone();
    let env = move |name: &str| (name == "DCB_MONGODB_URI").then(|| uri.clone());
    dcb::config::Settings::resolve(&overrides, &env).unwrap()
}

/// A drill as the service runs it (its alerter writing alerts.log): the report and
/// the alerts recorded so far.
async fn drill_as_the_service(
    s: &Scratch,
    name: &str,
) -> (dcb::drill::Report, Vec<serde_json::Value>) {
    let settings = settings(s);
    let set = dcb::policy::load::load_dir(&settings.policies_dir, &settings.policy_defaults());
    let policy = set
        .policies
        .iter()
        .find(|p| p.name == name)
        .unwrap()
        .clone();
    let log = settings.backup_root.join("logs/alerts.log");
    let alerter = Arc::new(dcb::alert::Alerter::new(&settings.alerts, log.clone()).unwrap());
    let current = alerter.clone();
    let events =
        dcb::events::Emitter::new(&settings).with_alerts(Arc::new(move || current.clone()));
    let client = dcb::mongo::connect(&settings, Duration::from_secs(10))
        .await
        .unwrap();
    let report = dcb::drill::run(
        &settings,
        &policy,
        &client,
        Arc::new(dcb::crypto::Keys::default()),
        chrono::Utc::now(),
    )
    .await;
    events.emit(dcb::events::Event::Drilled(&report)).await;
    alerter.flush().await;
    let alerts = std::fs::read_to_string(&log)
        .unwrap_or_default()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    (report, alerts)
}

/// The drill of `name` fails through `dcb drill` (exit 1, drills.log) and through the
/// service's path (an alert), names `why`, and leaves no scratch database and nothing
/// changed outside it.
async fn fails(s: &Scratch, name: &str, source: &str, why: &str) {
    let scratch = format!("dcb_drill_{name}");
    let before = snapshot(source).await;
    let run = dcb(s, &["drill", "--policy", name]);
    assert_eq!(run.code, 1, "{}{}", run.stdout, run.stderr);
    assert!(run.stdout.contains("FAILED"), "{}", run.stdout);
    let lines = drills_log(&s.path().join("backups"));
    let last = lines.last().expect("a drills.log line");
    assert_eq!(last["ok"], false, "{last}");
    assert_eq!(last["policy"], name);
    assert!(last["problems"].to_string().contains(why), "{last}");
    assert!(!exists(&scratch).await, "{scratch} left behind");

    let (report, alerts) = drill_as_the_service(s, name).await;
    assert!(!report.ok);
    let raised: Vec<_> = alerts
        .iter()
        .filter(|a| a["key"] == format!("drill:{name}") && a["kind"] == "failure")
        .collect();
    assert_eq!(raised.len(), 1, "{alerts:?}");
    assert!(
        raised[0]["message"].as_str().unwrap().contains(why),
        "{alerts:?}"
    );
    assert!(!exists(&scratch).await, "{scratch} left behind");
    assert_eq!(
        snapshot(source).await,
        before,
        "a drill wrote outside its scratch database"
    );
}

// A good backup root passes: every collection restored and compared, the line in
// drills.log in the agreed shape, the status shows it, and the scratch database is
// gone with nothing else touched.
#[tokio::test]
async fn a_good_backup_root_passes() {
    let client = support::client().await;
    let src = support::unique_db("drill_good");
    let db = client.database(&src);
    let s = Scratch::new();
    s.write(
        "policies/good.yaml",
        &policy("good", &src, "drill: {sample: 5}\n"),
    );
    seed_and_back_up(&s, "good", &db).await;
    let before = snapshot(&src).await;

    let run = dcb(&s, &["drill", "--policy", "good"]);
    assert_eq!(run.code, 0, "{}{}", run.stdout, run.stderr);
    assert!(run.stdout.contains("drill good: passed"), "{}", run.stdout);
    assert!(
        run.stdout.contains("5 checked, 5 unchanged"),
        "{}",
        run.stdout
    );
    let lines = drills_log(&s.path().join("backups"));
    assert_eq!(lines.len(), 1);
    let line = &lines[0];
    let mut keys: Vec<&String> = line.as_object().unwrap().keys().collect();
    keys.sort();
    assert_eq!(
        keys,
        [
            "at",
            "collections",
            "database",
            "elapsed_ms",
            "ok",
            "policy",
            "problems"
        ]
    );
    assert_eq!(line["ok"], true, "{line}");
    assert_eq!(line["database"], "dcb_drill_good");
    assert!(chrono::DateTime::parse_from_rfc3339(line["at"].as_str().unwrap()).is_ok());
    let docs: BTreeMap<String, u64> = line["collections"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            assert_eq!(c["ok"], true, "{c}");
            assert!(c["problem"].is_null());
            assert_eq!(c["database"], src.as_str());
            (
                c["collection"].as_str().unwrap().to_string(),
                c["documents"].as_u64().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        docs,
        BTreeMap::from([("roles".into(), 4), ("scans".into(), 50)])
    );
    assert!(!exists("dcb_drill_good").await);
    assert_eq!(snapshot(&src).await, before);

    let run = dcb(&s, &["status", "--json"]);
    let status: serde_json::Value = serde_json::from_str(&run.stdout).unwrap();
    assert_eq!(
        status["policies"][0]["lastDrill"]["ok"], true,
        "{}",
        run.stdout
    );
    let run = dcb(&s, &["drill", "--json"]);
    assert_eq!(run.code, 0, "{}{}", run.stdout, run.stderr);
    let reports: serde_json::Value = serde_json::from_str(&run.stdout).unwrap();
    assert_eq!(reports[0]["policy"], "good");
}

// An archive missing from the middle of a chain fails the drill before anything is
// written; putting it back makes the next drill pass and resolves the alert.
#[tokio::test]
async fn a_missing_chain_archive_fails() {
    let client = support::client().await;
    let src = support::unique_db("drill_chain");
    let db = client.database(&src);
    let s = Scratch::new();
    s.write("policies/chain.yaml", &policy("chain", &src, "full: 7d\n"));
    seed_and_back_up(&s, "chain", &db).await;
    add_scans(&db, 5).await;
    tokio::time::sleep(Duration::from_millis(50)).await;
    let run = dcb(&s, &["run", "--policy", "chain"]);
    assert_eq!(run.code, 0, "{}{}", run.stdout, run.stderr);
    // The second of three scans archives, and its manifest: a hole in the chain.
    let archives = support::archives(&s.path().join("backups"), "chain", "scans");
    assert_eq!(archives.len(), 3, "{archives:?}");
    let hidden = s.path().join("hidden");
    std::fs::create_dir(&hidden).unwrap();
    let (a, m) = (&archives[1], support::manifest_of(&archives[1]));
    std::fs::rename(a, hidden.join("a")).unwrap();
    std::fs::rename(&m, hidden.join("m")).unwrap();
    fails(&s, "chain", &src, "which is missing").await;

    std::fs::rename(hidden.join("a"), a).unwrap();
    std::fs::rename(hidden.join("m"), &m).unwrap();
    let (report, alerts) = drill_as_the_service(&s, "chain").await;
    assert!(report.ok, "{report:?}");
    assert!(
        alerts
            .iter()
            .any(|a| a["key"] == "drill:chain" && a["kind"] == "resolved"),
        "{alerts:?}"
    );
    assert!(!exists("dcb_drill_chain").await);
}

// Documents the collection's validator refuses (stored before it was added) make the
// restore into the scratch database fail: the drill fails and says so.
#[tokio::test]
async fn a_restore_the_scratch_collection_refuses_fails() {
    let client = support::client().await;
    let src = support::unique_db("drill_valid");
    let db = client.database(&src);
    let s = Scratch::new();
    s.write("policies/valid.yaml", &policy("valid", &src, ""));
    add_scans(&db, 10).await;
    db.run_command(doc! {
        "collMod": "scans",
        "validator": {"$jsonSchema": {"required": ["line"]}},
        "validationLevel": "moderate",
    })
    .await
    .unwrap();
    db.collection::<Document>("roles")
        .insert_one(doc! {"name": "r", "updatedAt": DateTime::now()})
        .await
        .unwrap();
    let run = dcb(&s, &["run", "--policy", "valid"]);
    assert_eq!(run.code, 0, "{}{}", run.stdout, run.stderr);
    fails(&s, "valid", &src, "fails the collection's validator").await;
}

// A scratch collection that ends up other than the archives say (a capped collection
// keeps only its newest documents) fails the comparison step.
#[tokio::test]
async fn a_scratch_database_that_disagrees_fails() {
    let client = support::client().await;
    let src = support::unique_db("drill_capped");
    let db = client.database(&src);
    let s = Scratch::new();
    s.write(
        "policies/capped.yaml",
        &format!(
            "name: capped\nschedule: \"0 * * * *\"\ndatabase: {src}\nwindow: {{initial: all, settle: 0s}}\n\
             collections: [scans]\nretention: 7d\n"
        ),
    );
    db.run_command(doc! {"create": "scans", "capped": true, "size": 1_048_576, "max": 5})
        .await
        .unwrap();
    add_scans(&db, 5).await;
    let run = dcb(&s, &["run", "--policy", "capped"]);
    assert_eq!(run.code, 0, "{}{}", run.stdout, run.stderr);
    tokio::time::sleep(Duration::from_millis(50)).await;
    // Five more push the first five out of the source; both archives hold five.
    add_scans(&db, 5).await;
    tokio::time::sleep(Duration::from_millis(50)).await;
    let run = dcb(&s, &["run", "--policy", "capped"]);
    assert_eq!(run.code, 0, "{}{}", run.stdout, run.stderr);
    fails(&s, "capped", &src, "5 missing").await;
}

// A database of the scratch name that dcb did not create is never touched; one an
// earlier, crashed drill left (it carries the marker) is dropped and the drill runs.
#[tokio::test]
async fn foreign_databases_are_refused_and_leftovers_dropped() {
    let client = support::client().await;
    let src = support::unique_db("drill_foreign");
    let db = client.database(&src);
    let s = Scratch::new();
    s.write("policies/foreign.yaml", &policy("foreign", &src, ""));
    seed_and_back_up(&s, "foreign", &db).await;
    let scratch = client.database("dcb_drill_foreign");
    scratch
        .collection::<Document>("precious")
        .insert_one(doc! {"keep": true})
        .await
        .unwrap();
    let run = dcb(&s, &["drill", "--policy", "foreign"]);
    assert_eq!(run.code, 1, "{}{}", run.stdout, run.stderr);
    assert!(
        run.stdout.contains("not a drill's scratch database"),
        "{}",
        run.stdout
    );
    assert_eq!(
        scratch
            .collection::<Document>("precious")
            .count_documents(doc! {})
            .await
            .unwrap(),
        1
    );
    scratch.drop().await.unwrap();
    // What a crashed drill leaves: the marker and a half-restored collection.
    scratch
        .collection::<Document>(dcb::drill::MARKER)
        .insert_one(doc! {"_id": "dcb-drill"})
        .await
        .unwrap();
    scratch
        .collection::<Document>("scans")
        .insert_one(doc! {"half": true})
        .await
        .unwrap();
    let run = dcb(&s, &["drill", "--policy", "foreign"]);
    assert_eq!(run.code, 0, "{}{}", run.stdout, run.stderr);
    assert!(!exists("dcb_drill_foreign").await);
    // dcb.yaml may not point drills at a database outside its prefix.
    s.write("dcb.yaml", "drill:\n  database: \"{policy}_copy\"\n");
    let run = dcb(&s, &["--config", "dcb.yaml", "drill"]);
    assert_eq!(run.code, 2, "{}{}", run.stdout, run.stderr);
    assert!(
        run.stderr.contains("must start with `dcb_drill`"),
        "{}",
        run.stderr
    );
}

// The service drills on the drill schedule: a failing drill lands in drills.log and
// raises `drill:<policy>` in alerts.log, without leaving its scratch database.
#[tokio::test]
async fn the_service_drills_on_schedule() {
    let client = support::client().await;
    let src = support::unique_db("drill_serve");
    let db = client.database(&src);
    let s = Scratch::new();
    s.write("policies/served.yaml", &policy("served", &src, ""));
    seed_and_back_up(&s, "served", &db).await;
    // One archive's file gone: a hole.
    let archives = support::archives(&s.path().join("backups"), "served", "scans");
    std::fs::remove_file(&archives[0]).unwrap();
    s.write("dcb.yaml", "drill:\n  schedule: \"*/2 * * * * *\"\n");
    let mut child = s
        .dcb()
        .args(["--config", "dcb.yaml", "serve"])
        .env("DCB_MONGODB_URI", &support::server().uri)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let root = s.path().join("backups");
    let alert = support::eventually(90, "the drill's alert", || {
        std::fs::read_to_string(root.join("logs/alerts.log"))
            .ok()?
            .lines()
            .find(|l| l.contains("\"drill:served\""))
            .map(str::to_string)
    });
    let _ = child.kill();
    let _ = child.wait();
    assert!(alert.contains("failure"), "{alert}");
    let lines = drills_log(&root);
    assert!(
        !lines.is_empty() && lines.iter().all(|l| l["ok"] == false),
        "{lines:?}"
    );
    // A kill mid-drill may leave the scratch database: the next drill drops it.
    let run = dcb(&s, &["drill", "--policy", "served"]);
    assert_eq!(run.code, 1);
    assert!(!exists("dcb_drill_served").await);
}
