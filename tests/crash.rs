//! Crashes and faults during `dcb run`: a kill -9 mid-export, a second concurrent run,
//! a dropped connection. Uses a test server with fail points enabled.

mod support;

use std::path::Path;
use std::process::Stdio;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use mongodb::bson::{Document, doc, oid::ObjectId};
use support::{Run, Scratch, TestServer, archives, ids_in, oid_json, read_archives};

/// A server that accepts `configureFailPoint` (`DCB_TEST_FAILPOINT_MONGODB_URI` to use
/// another, e.g. a mongod started with enableTestCommands).
fn server() -> &'static TestServer {
    static S: OnceLock<TestServer> = OnceLock::new();
    S.get_or_init(|| match std::env::var("DCB_TEST_FAILPOINT_MONGODB_URI") {
        Ok(uri) if !uri.is_empty() => TestServer::external(uri),
        _ => support::start_server(&["--enable-test-commands"]),
    })
}

/// Fail points are server-wide: tests that arm one take turns.
async fn exclusive() -> tokio::sync::MutexGuard<'static, ()> {
    static M: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());
    M.lock().await
}

async fn client() -> mongodb::Client {
    mongodb::Client::with_uri_str(&server().uri).await.unwrap()
}

async fn seed(db: &str, n: usize) -> Vec<ObjectId> {
    let docs: Vec<Document> = (0..n)
        .map(|i| {
            doc! {"_id": ObjectId::new(), "createdAt": mongodb::bson::DateTime::now(), "n": i as i64, "pad": "x".repeat(300)}
        })
        .collect();
    let ids = docs
        .iter()
        .map(|d| d.get_object_id("_id").unwrap())
        .collect();
    client()
        .await
        .database(db)
        .collection::<Document>("api_logs")
        .insert_many(docs)
        .await
        .unwrap();
    ids
}

async fn fail_point(data: Document) {
    client()
        .await
        .database("admin")
        .run_command(doc! {"configureFailPoint": "failCommand", "mode": {"times": 1}, "data": data})
        .await
        .unwrap();
}

async fn fail_point_off() {
    client()
        .await
        .database("admin")
        .run_command(doc! {"configureFailPoint": "failCommand", "mode": "off"})
        .await
        .unwrap();
}

fn scratch(db: &str) -> Scratch {
    let s = Scratch::new();
    s.write(
        "policies/p.yaml",
        &format!(
            "name: p\nschedule: \"0 * * * *\"\ndatabase: {db}\nwindow: {{initial: all, settle: 0s}}\ncollections: [api_logs]\nretention: 7d\n"
        ),
    );
    s
}

fn temp_files(dir: &Path) -> Vec<String> {
    std::fs::read_dir(dir)
        .map(|d| {
            d.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| n.ends_with(".dcb-tmp"))
                .collect()
        })
        .unwrap_or_default()
}

/// Start `dcb run --policy p` and wait until its archive is being written.
fn start_run(s: &Scratch) -> std::process::Child {
    let child = s
        .dcb()
        .args(["run", "--policy", "p"])
        .env("DCB_MONGODB_URI", &server().uri)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let dir = s.path().join("backups/p");
    let deadline = Instant::now() + Duration::from_secs(30);
    while temp_files(&dir).is_empty() {
        assert!(
            Instant::now() < deadline,
            "the export never started writing"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    // Let it read the first batch; it then blocks on getMore.
    std::thread::sleep(Duration::from_millis(300));
    child
}

fn run(s: &Scratch) -> Run {
    Run::from(
        s.dcb()
            .args(["run", "--policy", "p"])
            .env("DCB_MONGODB_URI", &server().uri)
            .output()
            .unwrap(),
    )
}

/// The watermark state.json records for `<db>.api_logs` of policy p; the file must
/// exist and parse.
fn watermark(root: &Path, db: &str) -> serde_json::Value {
    let path = root.join("logs/state.json");
    let bytes =
        std::fs::read(&path).unwrap_or_else(|e| panic!("{} cannot be read: {e}", path.display()));
    let state: serde_json::Value = serde_json::from_slice(&bytes)
        .unwrap_or_else(|e| panic!("{} is not JSON: {e}", path.display()));
    state["collections"][format!("p/{db}/api_logs")]["watermark"].clone()
}

// kill -9 in the middle of an export leaves no new archive under a final name and the
// watermark where the last good run left it; the next run removes the leftover and
// exports the whole window.
#[tokio::test]
async fn kill_9_mid_export_loses_nothing() {
    let _turn = exclusive().await;
    let db = support::unique_db("kill");
    let s = scratch(&db);
    let root = s.path().join("backups");
    // A first good run, so that there is a watermark for the crash to leave alone.
    let first = seed(&db, 10).await;
    let done = run(&s);
    assert_eq!(done.code, 0, "{}{}", done.stdout, done.stderr);
    let before = watermark(&root, &db);
    assert!(
        before.is_string(),
        "the first run set a watermark: {before}"
    );
    assert_eq!(archives(&root, "p", "api_logs").len(), 1);
    tokio::time::sleep(Duration::from_millis(20)).await;

    let ids = seed(&db, 6000).await;
    fail_point(doc! {"failCommands": ["getMore"], "blockConnection": true, "blockTimeMS": 20_000})
        .await;
    let mut child = start_run(&s);
    child.kill().unwrap(); // SIGKILL on Unix, TerminateProcess on Windows
    child.wait().unwrap();
    fail_point_off().await;

    assert_eq!(
        archives(&root, "p", "api_logs").len(),
        1,
        "no new final archive after a crash"
    );
    assert_eq!(
        temp_files(&root.join("p")).len(),
        1,
        "the unfinished file is a temp file"
    );
    assert_eq!(watermark(&root, &db), before, "no watermark moved");

    let again = run(&s);
    assert_eq!(again.code, 0, "{}{}", again.stdout, again.stderr);
    assert!(
        temp_files(&root.join("p")).is_empty(),
        "leftovers are cleaned up"
    );
    let all = archives(&root, "p", "api_logs");
    assert_eq!(all.len(), 2);
    let read = read_archives(&all);
    let got = ids_in(&read[1]);
    assert_eq!(got.len(), ids.len(), "every new document exactly once");
    let want: std::collections::HashSet<String> = ids.iter().map(oid_json).collect();
    assert_eq!(
        got.into_iter().collect::<std::collections::HashSet<_>>(),
        want
    );
    assert_eq!(ids_in(&read[0]).len(), first.len());
}

// A second run of a policy that is already running refuses at once and clearly; the
// first one finishes normally.
#[tokio::test]
async fn concurrent_run_of_one_policy_refuses() {
    let _turn = exclusive().await;
    let db = support::unique_db("lock");
    seed(&db, 6000).await;
    let s = scratch(&db);
    fail_point(doc! {"failCommands": ["getMore"], "blockConnection": true, "blockTimeMS": 3_000})
        .await;
    let mut first = start_run(&s);
    let second = run(&s);
    assert_eq!(second.code, 1, "{}{}", second.stdout, second.stderr);
    assert!(
        second.stdout.contains("another dcb is running policy `p`"),
        "{}",
        second.stdout
    );
    assert!(first.wait().unwrap().success());
    fail_point_off().await;
    assert_eq!(
        archives(&s.path().join("backups"), "p", "api_logs").len(),
        1
    );
}

// A connection dropped in the middle of the cursor is retried; the archive is whole.
#[tokio::test]
async fn dropped_connection_is_retried() {
    let _turn = exclusive().await;
    let db = support::unique_db("retry");
    let ids = seed(&db, 6000).await;
    let s = scratch(&db);
    fail_point(doc! {"failCommands": ["getMore"], "closeConnection": true}).await;
    let out = run(&s);
    fail_point_off().await;
    assert_eq!(out.code, 0, "{}{}", out.stdout, out.stderr);
    assert!(
        out.stderr.contains("transient failure; retrying"),
        "{}",
        out.stderr
    );
    let all = archives(&s.path().join("backups"), "p", "api_logs");
    assert_eq!(all.len(), 1);
    assert_eq!(ids_in(&read_archives(&all)[0]).len(), ids.len());
}

// A server error that means "gone for a moment" (here ShutdownInProgress on getMore,
// as during a failover or restart) is retried like a dropped connection.
#[tokio::test]
async fn transient_server_errors_are_retried() {
    let _turn = exclusive().await;
    let db = support::unique_db("retrycode");
    let ids = seed(&db, 6000).await;
    let s = scratch(&db);
    fail_point(doc! {"failCommands": ["getMore"], "errorCode": 91}).await;
    let out = run(&s);
    fail_point_off().await;
    assert_eq!(out.code, 0, "{}{}", out.stdout, out.stderr);
    assert!(
        out.stderr.contains("transient failure; retrying"),
        "{}",
        out.stderr
    );
    let all = archives(&s.path().join("backups"), "p", "api_logs");
    assert_eq!(all.len(), 1);
    assert_eq!(ids_in(&read_archives(&all)[0]).len(), ids.len());
}
