//! The fault suite (issue #6): each test injects one fault into `dcb run` or `dcb serve`
//! and checks that the error is one clear line (or log entry) naming the policy, the
//! collection and the cause; that the watermark does not move past what was saved;
//! that the service keeps running; and that the next good run covers the window: every
//! archive verifies, the windows never overlap, and `dcb restore` into a new database
//! gives back exactly the source collection, byte for byte.
//!
//! Faults: the database killed (kill -9) in the middle of an export and restarted; a
//! network error on `getMore` (the server's `failCommand` fail point); the backup folder
//! not writable; the disk full; state.json corrupted; a policy file replaced by garbage
//! while serving; two runs of one policy at once.

mod support;

use std::collections::BTreeMap;
#[cfg(unix)]
use std::path::Path;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use futures_util::TryStreamExt;
use mongodb::IndexModel;
use mongodb::bson::{
    Binary, Bson, DateTime, Document, RawDocumentBuf, doc, oid::ObjectId, spec::BinarySubtype,
};
use support::{Run, Scratch, TestServer, eventually};

/// A schedule that never fires during a test (`dcb run` tests).
const NEVER: &str = "0 0 1 1 *";
/// Every second (`dcb serve` tests).
const EVERY_SECOND: &str = "* * * * * *";
/// How long after their time documents are seen by a service test's windows: longer
/// than a loaded CI machine takes to insert a batch, so no window takes half of one.
const SERVICE_SETTLE: &str = "8s";
/// More than one server batch (dcb asks for 4096 documents at a time), so that an
/// export of this many reaches a `getMore`.
const BIG: usize = 4500;

/// A condition a test needs and cannot make on this machine (mount rights). Under CI
/// that fails the test, saying what is missing: CI must not pass a weaker case in its
/// place. Elsewhere the caller runs its weaker case after this loud notice.
#[cfg(unix)]
fn cannot_make(what: &str, weaker: &str) {
    if std::env::var_os("CI").is_some_and(|v| !v.is_empty()) {
        panic!(
            "{what}, and CI is set: this test would run only its weaker case ({weaker}); \
             run the tests as root with the right to mount (CAP_SYS_ADMIN)"
        );
    }
    eprintln!(
        "NOTICE: {what}; running the weaker case instead: {weaker}. The real case did NOT run."
    );
}

/// A server that accepts `configureFailPoint` (`DCB_TEST_FAILPOINT_MONGODB_URI` to use
/// another, e.g. a mongod started with enableTestCommands).
fn server() -> &'static TestServer {
    static S: OnceLock<TestServer> = OnceLock::new();
    S.get_or_init(|| match std::env::var("DCB_TEST_FAILPOINT_MONGODB_URI") {
        Ok(uri) if !uri.is_empty() => TestServer::external(uri),
        _ => support::start_server(&["--enable-test-commands"]),
    })
}

/// The server allows one `failCommand` at a time: tests that arm it take turns (when
/// the tests of this file share one server, as under `cargo test`).
async fn exclusive() -> tokio::sync::MutexGuard<'static, ()> {
    static M: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());
    M.lock().await
}

/// One test's world: a scratch folder with policy `p` backing up `<db>.api_logs`, the
/// server, and the application name dcb connects with (fail points aim at it alone).
struct Fx {
    s: Scratch,
    db: String,
    uri: String,
    app: String,
    /// The policy's `settle`: documents stamped now must be inserted within it.
    settle: Duration,
    seeded: AtomicUsize,
}

impl Fx {
    fn new(uri: &str, prefix: &str, schedule: &str, settle: &str) -> Fx {
        let db = support::unique_db(prefix);
        let s = Scratch::new();
        s.write(
            "policies/p.yaml",
            &format!(
                "name: p\nschedule: \"{schedule}\"\ndatabase: {db}\n\
                 window: {{initial: all, settle: {settle}}}\ncollections: [api_logs]\n\
                 retention: 7d\n"
            ),
        );
        Fx {
            s,
            app: format!("dcb-{db}"),
            db,
            uri: uri.to_string(),
            settle: Duration::from_secs(settle.trim_end_matches('s').parse().unwrap()),
            seeded: AtomicUsize::new(0),
        }
    }

    /// The URI dcb uses: its own application name, and a short server selection so
    /// that a dead server fails a run in a second.
    fn dcb_uri(&self) -> String {
        let sep = if self.uri.contains('?') {
            "&"
        } else if self.uri.ends_with('/') {
            "?"
        } else {
            "/?"
        };
        format!(
            "{}{sep}appName={}&serverSelectionTimeoutMS=1000",
            self.uri, self.app
        )
    }

    fn cmd(&self) -> Command {
        let mut c = self.s.dcb();
        c.env("DCB_MONGODB_URI", self.dcb_uri());
        c
    }

    fn dcb(&self, args: &[&str]) -> Run {
        Run::from(self.cmd().args(args).output().unwrap())
    }

    fn run(&self) -> Run {
        self.dcb(&["run", "--policy", "p"])
    }

    /// A run that must succeed.
    fn ok_run(&self) -> Run {
        let run = self.run();
        assert_eq!(run.code, 0, "{}{}", run.stdout, run.stderr);
        run
    }

    /// Change the policy's schedule (e.g. before serving it).
    fn set_schedule(&self, from: &str, to: &str) {
        let file = self.s.path().join("policies/p.yaml");
        let text = std::fs::read_to_string(&file).unwrap();
        assert!(text.contains(from), "{text}");
        std::fs::write(&file, text.replace(from, to)).unwrap();
    }

    /// `dcb run --policy p` in the background.
    fn spawn_run(&self) -> Child {
        self.cmd()
            .args(["run", "--policy", "p"])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap()
    }

    fn root(&self) -> PathBuf {
        self.s.path().join("backups")
    }

    fn policy_dir(&self) -> PathBuf {
        self.root().join("p")
    }

    fn job_id(&self) -> String {
        format!("p/{}/api_logs", self.db)
    }

    async fn client(&self) -> mongodb::Client {
        mongodb::Client::with_uri_str(&self.uri).await.unwrap()
    }

    /// Insert `n` documents stamped now (one time for all, so a window takes all of
    /// them or none), each with `pad` bytes of incompressible data. While a service
    /// runs, the insert must finish within `settle`, or a window could take part of it.
    async fn seed(&self, n: usize, pad: usize) {
        static SEED: AtomicUsize = AtomicUsize::new(1);
        let mut x = ((SEED.fetch_add(1, Ordering::Relaxed) as u64) << 32) | 0x9e37_79b9;
        let mut noise = |len: usize| -> Vec<u8> {
            (0..len)
                .map(|_| {
                    // xorshift64: cheap bytes gzip cannot shrink.
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    x as u8
                })
                .collect()
        };
        let started = Instant::now();
        let at = DateTime::now();
        let first = self.seeded.fetch_add(n, Ordering::SeqCst);
        let docs: Vec<Document> = (0..n)
            .map(|i| {
                doc! {
                    "_id": ObjectId::new(),
                    "createdAt": at,
                    "n": (first + i) as i64,
                    "path": format!("/api/scan/{}", i % 17),
                    "pad": Binary { subtype: BinarySubtype::Generic, bytes: noise(pad) },
                }
            })
            .collect();
        let coll = self
            .client()
            .await
            .database(&self.db)
            .collection::<Document>("api_logs");
        coll.insert_many(docs).await.unwrap();
        assert!(
            self.settle.is_zero() || started.elapsed() < self.settle,
            "inserting {n} documents took {:?}, longer than the policy's settle ({:?}): \
             too slow a machine for this test",
            started.elapsed(),
            self.settle
        );
        if first == 0 {
            coll.create_index(IndexModel::builder().keys(doc! {"createdAt": 1}).build())
                .await
                .unwrap();
        }
        // Documents stamped "now" must lie before the end of the next window.
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    /// Arm `failCommand` for dcb's connections only.
    async fn fail_point(&self, mode: Bson, mut data: Document) {
        data.insert("appName", self.app.clone());
        self.client()
            .await
            .database("admin")
            .run_command(doc! {"configureFailPoint": "failCommand", "mode": mode, "data": data})
            .await
            .unwrap();
    }

    async fn fail_point_off(&self) {
        self.client()
            .await
            .database("admin")
            .run_command(doc! {"configureFailPoint": "failCommand", "mode": "off"})
            .await
            .unwrap();
    }

    fn state(&self) -> serde_json::Value {
        std::fs::read(self.root().join("logs/state.json"))
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .unwrap_or(serde_json::Value::Null)
    }

    fn entry(&self) -> serde_json::Value {
        self.state()["collections"][self.job_id()].clone()
    }

    fn watermark(&self) -> serde_json::Value {
        self.entry()["watermark"].clone()
    }

    fn successes(&self) -> u64 {
        self.entry()["successes"].as_u64().unwrap_or(0)
    }

    fn failures(&self) -> u64 {
        self.entry()["failures"].as_u64().unwrap_or(0)
    }

    fn archives(&self) -> Vec<PathBuf> {
        support::archives(&self.root(), "p", "api_logs")
    }

    /// The manifests beside the api_logs archives, oldest window first.
    fn manifests(&self) -> Vec<serde_json::Value> {
        let mut found: Vec<serde_json::Value> = std::fs::read_dir(self.policy_dir())
            .map(|d| d.flatten().map(|e| e.path()).collect::<Vec<_>>())
            .unwrap_or_default()
            .into_iter()
            .filter(|p| {
                let n = p.file_name().unwrap().to_string_lossy().into_owned();
                n.ends_with(".api_logs.manifest.json") && !n.starts_with('.')
            })
            .map(|p| serde_json::from_slice(&std::fs::read(&p).unwrap()).unwrap())
            .collect();
        found.sort_by(|a, b| a["to"].as_str().cmp(&b["to"].as_str()));
        found
    }

    /// Documents in all archives, as their manifests count them.
    fn archived(&self) -> usize {
        self.manifests()
            .iter()
            .map(|m| m["documents"].as_u64().unwrap() as usize)
            .sum()
    }

    fn temp_files(&self) -> Vec<String> {
        std::fs::read_dir(self.policy_dir())
            .map(|d| {
                d.flatten()
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .filter(|n| n.ends_with(".dcb-tmp"))
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Wait until an export sits in its blocked `getMore`: the same temp file for half a
    /// second (an empty window's export also makes one, for a few milliseconds).
    fn wait_until_writing(&self) {
        let mut seen: BTreeMap<String, Instant> = BTreeMap::new();
        eventually(30, "an export to hold its temp file", || {
            let now = self.temp_files();
            seen.retain(|name, _| now.contains(name));
            for name in now {
                seen.entry(name).or_insert_with(Instant::now);
            }
            seen.values()
                .any(|t| t.elapsed() >= Duration::from_millis(500))
                .then_some(())
        });
    }

    /// The daily log files, concatenated.
    fn log(&self) -> String {
        let mut text = String::new();
        if let Ok(d) = std::fs::read_dir(self.root().join("logs")) {
            let mut files: Vec<PathBuf> = d
                .flatten()
                .map(|e| e.path())
                .filter(|p| p.file_name().unwrap().to_string_lossy().starts_with("dcb."))
                .collect();
            files.sort();
            for f in files {
                text.push_str(&std::fs::read_to_string(f).unwrap_or_default());
            }
        }
        text
    }

    /// After the fault and a good run, nothing is lost: no temp file is left; every
    /// archive verifies; each has its manifest; the windows never overlap (and, when
    /// `contiguous`, each starts where the previous one ended, so the failed window
    /// was covered by the next); the archives hold every source document exactly
    /// once; and a restore into a new database gives back the source collection byte
    /// for byte.
    async fn assert_nothing_lost(&self, contiguous: bool) {
        assert!(self.temp_files().is_empty(), "{:?}", self.temp_files());
        let verify = self.dcb(&["verify"]);
        assert_eq!(verify.code, 0, "{}{}", verify.stdout, verify.stderr);
        assert!(verify.stdout.contains(" 0 corrupt"), "{}", verify.stdout);

        let manifests = self.manifests();
        assert_eq!(
            manifests.len(),
            self.archives().len(),
            "every archive has its manifest"
        );
        assert!(!manifests.is_empty());
        assert!(
            !contiguous || manifests[0]["from"].is_null(),
            "the first window starts at the beginning: {}",
            manifests[0]
        );
        for pair in manifests.windows(2) {
            let (prev_to, from) = (pair[0]["to"].as_str().unwrap(), pair[1]["from"].as_str());
            let from = from.unwrap_or_else(|| panic!("a later window has a start: {}", pair[1]));
            // RFC 3339 in UTC with fixed precision: text order is time order.
            assert!(
                from >= prev_to,
                "two archives cover the same time: {} then {}",
                pair[0],
                pair[1]
            );
            if contiguous {
                assert_eq!(from, prev_to, "a gap between windows");
            }
        }

        let client = self.client().await;
        let want = raw_docs(&client.database(&self.db), "api_logs").await;
        assert_eq!(
            want.len(),
            self.seeded.load(Ordering::SeqCst),
            "the source holds every document the test inserted"
        );
        assert_eq!(
            self.archived(),
            want.len(),
            "the archives hold each document exactly once"
        );
        let target = format!("{}_r", self.db);
        let restore = self.dcb(&[
            "restore",
            "--policy",
            "p",
            "--collection",
            "api_logs",
            "--to-database",
            &target,
        ]);
        assert_eq!(restore.code, 0, "{}{}", restore.stdout, restore.stderr);
        let got = raw_docs(&client.database(&target), "api_logs").await;
        let missing = want.keys().filter(|k| !got.contains_key(*k)).count();
        let extra = got.keys().filter(|k| !want.contains_key(*k)).count();
        let differ = want
            .iter()
            .filter(|(k, v)| got.get(*k).is_some_and(|g| g != *v))
            .count();
        assert!(
            missing == 0 && extra == 0 && differ == 0,
            "restored {} documents of {}: {missing} missing, {extra} extra, {differ} differ",
            got.len(),
            want.len()
        );
    }
}

/// Every document of a collection, raw, by `_id`.
async fn raw_docs(db: &mongodb::Database, coll: &str) -> BTreeMap<String, Vec<u8>> {
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

/// The one failure line of a failed `dcb run` of one collection: the output is that
/// line and the summary, nothing else.
fn failed_line(run: &Run) -> String {
    assert_eq!(run.code, 1, "{}{}", run.stdout, run.stderr);
    let lines: Vec<&str> = run.stdout.lines().collect();
    assert_eq!(
        lines.len(),
        2,
        "one failure line and the summary:\n{}",
        run.stdout
    );
    assert!(
        lines[0].starts_with("FAILED  p/api_logs  "),
        "names policy and collection: {}",
        run.stdout
    );
    assert_eq!(lines[1], "0 collections exported, 1 failed");
    lines[0].to_string()
}

/// A running `dcb serve`, killed if the test fails before stopping it.
struct Serve {
    child: Option<Child>,
}

impl Serve {
    fn start(fx: &Fx) -> Serve {
        Serve::spawn(fx, fx.cmd())
    }

    /// `cmd serve`; returns once the service has written its record.
    fn spawn(fx: &Fx, mut cmd: Command) -> Serve {
        let child = cmd
            .arg("serve")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let pid = child.id();
        let serve = Serve { child: Some(child) };
        let record = fx.root().join("logs/service.json");
        eventually(20, "the service record", || {
            let r: serde_json::Value =
                serde_json::from_slice(&std::fs::read(&record).ok()?).ok()?;
            (r["pid"] == pid).then_some(())
        });
        serve
    }

    /// The service has not exited, and says it is running.
    fn assert_running(&mut self, fx: &Fx) {
        let status = self.child.as_mut().unwrap().try_wait().unwrap();
        assert!(status.is_none(), "the service exited: {status:?}");
        let st = fx.dcb(&["status", "--json"]);
        assert_eq!(st.code, 0, "{}", st.stderr);
        let st: serde_json::Value = serde_json::from_str(&st.stdout).unwrap();
        assert_eq!(st["isRunning"], true, "{st}");
    }

    /// `dcb stop`; the service exits 0.
    fn stop(mut self, fx: &Fx) {
        let stop = fx.dcb(&["stop"]);
        assert_eq!(stop.code, 0, "{}", stop.stderr);
        let mut child = self.child.take().unwrap();
        let code = eventually(30, "the service to exit", || {
            child.try_wait().unwrap().map(|s| s.code().unwrap_or(-1))
        });
        assert_eq!(code, 0);
    }
}

impl Drop for Serve {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

// ---------------------------------------------------------------------------------
// The database killed in the middle of an export, and restarted.

// kill -9 of the database while dcb is in the middle of a window: the run fails with
// one line (server unreachable), no archive under a final name, no temp file, the
// watermark where it was; after a restart the next run exports the whole window.
#[cfg(unix)]
#[tokio::test]
async fn database_killed_mid_export_and_restarted_loses_nothing() {
    let port = support::free_port();
    let storage = tempfile::tempdir().unwrap();
    let extra = ["--enable-test-commands"];
    let db_server = support::start_server_at(port, storage.path(), &extra);
    let fx = Fx::new(&db_server.uri, "dbkill", NEVER, "0s");
    fx.seed(200, 64).await;
    fx.ok_run();
    let before = fx.watermark();
    assert!(before.is_string(), "{}", fx.state());

    // More than one batch, so the export reaches the getMore, which is held.
    fx.seed(BIG, 64).await;
    fx.fail_point(
        doc! {"times": 1}.into(),
        doc! {"failCommands": ["getMore"], "blockConnection": true, "blockTimeMS": 30_000},
    )
    .await;
    let child = fx.spawn_run();
    fx.wait_until_writing();
    db_server.kill_9();
    let started = Instant::now();
    let run = Run::from(child.wait_with_output().unwrap());
    let line = failed_line(&run);
    assert!(line.contains("server unreachable"), "{line}");
    assert!(
        started.elapsed() < Duration::from_secs(20),
        "a dead server fails the run promptly"
    );
    assert_eq!(fx.watermark(), before, "the watermark did not move");
    assert_eq!(fx.entry()["consecutiveFailures"], 1, "{}", fx.entry());
    assert_eq!(fx.archives().len(), 1, "no new archive");
    assert!(fx.temp_files().is_empty(), "{:?}", fx.temp_files());

    let db_server = support::start_server_at(port, storage.path(), &extra);
    fx.seed(50, 64).await;
    let run = fx.ok_run();
    assert!(
        run.stdout.contains(&format!("{} docs", BIG + 50)),
        "{}",
        run.stdout
    );
    fx.assert_nothing_lost(true).await;
    db_server.stop();
}

// The same under `dcb serve`: the service survives the database's death, logs the
// failure, keeps firing (and failing) while the database is down, and the first run
// after the restart exports the unfinished window.
#[cfg(unix)]
#[tokio::test]
async fn service_survives_database_killed_mid_export() {
    let port = support::free_port();
    let storage = tempfile::tempdir().unwrap();
    let extra = ["--enable-test-commands"];
    let db_server = support::start_server_at(port, storage.path(), &extra);
    // Runs every second; documents are seen SERVICE_SETTLE after their time, so an insert is
    // always visible before a window takes it.
    let fx = Fx::new(&db_server.uri, "svckill", EVERY_SECOND, SERVICE_SETTLE);
    fx.seed(200, 64).await;
    let mut serve = Serve::start(&fx);
    eventually(30, "the first export", || {
        (fx.archived() == 200).then_some(())
    });

    fx.fail_point(
        doc! {"times": 1}.into(),
        doc! {"failCommands": ["getMore"], "blockConnection": true, "blockTimeMS": 30_000},
    )
    .await;
    fx.seed(BIG, 64).await;
    fx.wait_until_writing();
    // The run in progress holds the policy: nothing else moves the watermark now.
    let before = fx.watermark();
    let failures = fx.failures();
    db_server.kill_9();

    // Two failures: the interrupted run, then a scheduled run with the server down.
    eventually(30, "the failures to be recorded", || {
        (fx.failures() >= failures + 2).then_some(())
    });
    serve.assert_running(&fx);
    assert_eq!(fx.watermark(), before, "the watermark did not move");
    assert_eq!(fx.archived(), 200, "no archive of the unfinished window");
    assert!(fx.temp_files().is_empty(), "{:?}", fx.temp_files());
    let error = fx.entry()["lastError"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    assert!(error.contains("server unreachable"), "{error}");
    let log = fx.log();
    assert!(
        log.lines().any(|l| l.contains("export failed")
            && l.contains(&fx.job_id())
            && l.contains("server unreachable")),
        "{log}"
    );

    let db_server = support::start_server_at(port, storage.path(), &extra);
    eventually(30, "the window to be exported after the restart", || {
        (fx.archived() == BIG + 200).then_some(())
    });
    fx.seed(30, 64).await;
    eventually(30, "the next documents", || {
        (fx.archived() == BIG + 230).then_some(())
    });
    serve.assert_running(&fx);
    serve.stop(&fx);
    fx.assert_nothing_lost(false).await;
    db_server.stop();
}

// ---------------------------------------------------------------------------------
// A network error on getMore.

// A connection dropped once on `getMore` is retried and the run succeeds; dropped on
// every attempt, the run fails after four with one line (network error), nothing
// written and the watermark unchanged; the next good run exports the whole window.
#[tokio::test]
async fn network_error_on_getmore_is_retried_then_fails_clearly() {
    let _turn = exclusive().await;
    let fx = Fx::new(&server().uri, "getmore", NEVER, "0s");
    fx.seed(200, 64).await;
    fx.ok_run();

    fx.seed(BIG, 64).await;
    fx.fail_point(
        doc! {"times": 1}.into(),
        doc! {"failCommands": ["getMore"], "closeConnection": true},
    )
    .await;
    let run = fx.ok_run();
    assert!(
        run.stderr.contains("transient failure; retrying"),
        "{}",
        run.stderr
    );
    assert!(
        run.stdout.contains(&format!("{BIG} docs")),
        "{}",
        run.stdout
    );
    let before = fx.watermark();

    fx.seed(BIG, 64).await;
    fx.fail_point(
        "alwaysOn".into(),
        doc! {"failCommands": ["getMore"], "closeConnection": true},
    )
    .await;
    let run = fx.run();
    fx.fail_point_off().await;
    let line = failed_line(&run);
    assert!(line.contains("network error"), "{line}");
    assert_eq!(
        run.stderr.matches("transient failure; retrying").count(),
        3,
        "four attempts: {}",
        run.stderr
    );
    assert_eq!(fx.watermark(), before, "the watermark did not move");
    assert_eq!(fx.archives().len(), 2, "no new archive");
    assert!(fx.temp_files().is_empty(), "{:?}", fx.temp_files());

    let run = fx.ok_run();
    assert!(
        run.stdout.contains(&format!("{BIG} docs")),
        "{}",
        run.stdout
    );
    fx.assert_nothing_lost(true).await;
}

// The same under `dcb serve`: while every `getMore` fails, each scheduled run fails
// after its retries (recorded, with the cause), the service keeps running and the
// watermark stays; once the network is back, the next scheduled run exports the
// whole window.
#[tokio::test]
async fn service_survives_network_errors_on_getmore() {
    let _turn = exclusive().await;
    let fx = Fx::new(&server().uri, "svcgetmore", EVERY_SECOND, SERVICE_SETTLE);
    fx.seed(200, 64).await;
    let mut serve = Serve::start(&fx);
    eventually(30, "the first export", || {
        (fx.archived() == 200).then_some(())
    });
    fx.fail_point(
        "alwaysOn".into(),
        doc! {"failCommands": ["getMore"], "closeConnection": true},
    )
    .await;
    let failures = fx.failures();
    fx.seed(BIG, 64).await;
    // Empty windows before the documents settle still succeed; from the first run
    // that meets them, every run fails and the watermark stays.
    eventually(60, "a scheduled run to fail on getMore", || {
        (fx.failures() > failures).then_some(())
    });
    let before = fx.watermark();
    let failures = fx.failures();
    eventually(60, "the next scheduled runs to fail too", || {
        (fx.failures() >= failures + 2).then_some(())
    });
    serve.assert_running(&fx);
    let error = fx.entry()["lastError"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    let (watermark, archived) = (fx.watermark(), fx.archived());
    fx.fail_point_off().await;
    assert!(error.contains("network error"), "{error}");
    assert_eq!(watermark, before, "the watermark did not move");
    assert_eq!(archived, 200, "no archive of the failing window");

    eventually(
        60,
        "the window to be exported once the network is back",
        || (fx.archived() == BIG + 200).then_some(()),
    );
    fx.seed(30, 64).await;
    eventually(30, "the next documents", || {
        (fx.archived() == BIG + 230).then_some(())
    });
    serve.assert_running(&fx);
    serve.stop(&fx);
    fx.assert_nothing_lost(false).await;
}

// ---------------------------------------------------------------------------------
// The backup folder not writable.

/// How a folder is made unwritable. Permissions do not stop root, so as root a
/// read-only bind mount is used; where root may not mount (a container without
/// CAP_SYS_ADMIN), the folder is replaced by a file of the same name.
#[cfg(unix)]
enum Unwritable {
    /// Not root: mode 0500 on each folder (restored on drop).
    Chmod(Vec<PathBuf>),
    /// Root: the folder bind-mounted read-only over itself (unmounted on drop).
    ReadOnlyMount(PathBuf),
    /// Root without mounts: the folder moved aside and a file put in its place, and
    /// the OS's words for it: creating the policy's folder where a file is, "File
    /// exists"; anything beneath a file, "Not a directory".
    FileInPlace(PathBuf, &'static str),
}

#[cfg(unix)]
impl Unwritable {
    /// Make `top` and the folders in `inner` unwritable.
    fn make(top: &Path, inner: &[PathBuf]) -> Unwritable {
        use std::os::unix::fs::PermissionsExt;
        // SAFETY: geteuid has no preconditions.
        if unsafe { libc::geteuid() } != 0 {
            let mut dirs = vec![top.to_path_buf()];
            dirs.extend(inner.iter().cloned());
            for d in &dirs {
                std::fs::set_permissions(d, std::fs::Permissions::from_mode(0o500)).unwrap();
            }
            return Unwritable::Chmod(dirs);
        }
        let mount = |args: &[&str]| {
            Command::new("mount")
                .args(args)
                .arg(top)
                .arg(top)
                .stderr(Stdio::null())
                .status()
                .is_ok_and(|s| s.success())
        };
        if mount(&["--bind"]) {
            if mount(&["-o", "remount,bind,ro"]) {
                return Unwritable::ReadOnlyMount(top.to_path_buf());
            }
            let _ = Command::new("umount").arg(top).status();
        }
        cannot_make(
            "root cannot mount here, so no folder can be made read-only",
            &format!("{} replaced by a file", top.display()),
        );
        std::fs::rename(top, aside(top)).unwrap();
        std::fs::write(top, "not a folder\n").unwrap();
        // `top` alone: the policy's folder, which dcb creates; with `inner`, a folder
        // above the ones dcb creates.
        let cause = if inner.is_empty() {
            "File exists (os error 17)"
        } else {
            "Not a directory (os error 20)"
        };
        Unwritable::FileInPlace(top.to_path_buf(), cause)
    }

    /// Words of the error dcb should give.
    fn cause(&self) -> &'static str {
        match self {
            Unwritable::Chmod(_) => "Permission denied (os error 13)",
            Unwritable::ReadOnlyMount(_) => "Read-only file system (os error 30)",
            Unwritable::FileInPlace(_, cause) => cause,
        }
    }
}

/// Unmount `dir`, waiting out a moment's "target is busy" (a service's run may be
/// looking at the folder); lazily as a last resort.
#[cfg(unix)]
fn unmount(dir: &Path) {
    for _ in 0..20 {
        let ok = Command::new("umount")
            .arg(dir)
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        if ok {
            return;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let ok = Command::new("umount")
        .arg("-l")
        .arg(dir)
        .status()
        .is_ok_and(|s| s.success());
    // Called from Drop: a second panic while a failed test unwinds would abort.
    if !ok && !std::thread::panicking() {
        panic!("cannot unmount {}", dir.display());
    }
}

#[cfg(unix)]
fn aside(p: &Path) -> PathBuf {
    p.with_extension("aside")
}

#[cfg(unix)]
impl Drop for Unwritable {
    fn drop(&mut self) {
        use std::os::unix::fs::PermissionsExt;
        match self {
            Unwritable::Chmod(dirs) => {
                for d in dirs {
                    let _ = std::fs::set_permissions(d, std::fs::Permissions::from_mode(0o700));
                }
            }
            Unwritable::ReadOnlyMount(p) => unmount(p),
            Unwritable::FileInPlace(p, _) => {
                let _ = std::fs::remove_file(&*p);
                let _ = std::fs::rename(aside(p), &*p);
            }
        }
    }
}

// The policy's folder, then the whole backup root, not writable: each run fails with
// one line naming the folder and the cause, writes nothing and moves no watermark;
// under the service every scheduled run fails so and the service keeps running; once
// writable again, the next run exports the whole window.
#[cfg(unix)]
#[tokio::test]
async fn unwritable_backup_folder_fails_clearly() {
    let fx = Fx::new(&server().uri, "readonly", NEVER, "0s");
    fx.seed(200, 64).await;
    fx.ok_run();
    let before = fx.watermark();

    fx.seed(300, 64).await;
    {
        let blocked = Unwritable::make(&fx.policy_dir(), &[]);
        let run = fx.run();
        let line = failed_line(&run);
        assert!(line.contains("backups/p"), "names the folder: {line}");
        assert!(line.contains(blocked.cause()), "{line}");
        if !matches!(blocked, Unwritable::FileInPlace(..)) {
            assert!(line.contains("cannot write to"), "{line}");
        }
    }
    assert_eq!(fx.watermark(), before, "the watermark did not move");
    assert_eq!(fx.entry()["consecutiveFailures"], 1, "{}", fx.entry());
    assert_eq!(fx.archives().len(), 1);

    fx.seed(100, 64).await;
    {
        let root = fx.root();
        let blocked = Unwritable::make(&root, &[root.join("p"), root.join("logs")]);
        let run = fx.run();
        let line = failed_line(&run);
        assert!(line.contains("backups"), "names the folder: {line}");
        assert!(line.contains(blocked.cause()), "{line}");
    }
    assert_eq!(fx.watermark(), before, "the watermark did not move");
    assert_eq!(fx.archives().len(), 1);
    assert!(fx.temp_files().is_empty(), "{:?}", fx.temp_files());

    // Under the service: every scheduled run fails and says why, the service keeps
    // running, and the first run after the folder is mended exports the whole window.
    fx.set_schedule(NEVER, EVERY_SECOND);
    let blocked = Unwritable::make(&fx.policy_dir(), &[]);
    let failures = fx.failures();
    let mut serve = Serve::start(&fx);
    // Inserted while every run fails, so no window can move past them.
    fx.seed(100, 64).await;
    eventually(15, "scheduled runs to fail", || {
        (fx.failures() >= failures + 2).then_some(())
    });
    serve.assert_running(&fx);
    let error = fx.entry()["lastError"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    assert!(error.contains(blocked.cause()), "{error}");
    assert_eq!(fx.watermark(), before, "the watermark did not move");
    drop(blocked);
    eventually(15, "the window to be exported once writable", || {
        (fx.archived() == 700).then_some(())
    });
    serve.assert_running(&fx);
    serve.stop(&fx);
    fx.assert_nothing_lost(true).await;
}

// ---------------------------------------------------------------------------------
// The disk full.

/// A small tmpfs mounted over a folder (unmounted on drop).
#[cfg(unix)]
struct Tmpfs(PathBuf);

#[cfg(unix)]
impl Tmpfs {
    /// Mount one of `size` at `dir`, if this process may mount.
    fn mount(dir: &Path, size: &str) -> Option<Tmpfs> {
        std::fs::create_dir_all(dir).unwrap();
        let ok = Command::new("mount")
            .args([
                "-t",
                "tmpfs",
                "-o",
                &format!("size={size},mode=0700"),
                "tmpfs",
            ])
            .arg(dir)
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        ok.then(|| Tmpfs(dir.to_path_buf()))
    }

    fn resize(&self, size: &str) {
        let ok = Command::new("mount")
            .args(["-o", &format!("remount,size={size}")])
            .arg(&self.0)
            .status()
            .is_ok_and(|s| s.success());
        assert!(ok, "cannot resize the tmpfs at {}", self.0.display());
    }
}

#[cfg(unix)]
impl Drop for Tmpfs {
    fn drop(&mut self) {
        unmount(&self.0);
    }
}

/// dcb with a file-size limit: writes past `bytes` fail with EFBIG (SIGXFSZ ignored,
/// so the process is not killed), as when a disk fills up.
#[cfg(unix)]
fn with_file_size_limit(mut cmd: Command, bytes: u64) -> Command {
    use std::os::unix::process::CommandExt;
    // SAFETY: between fork and exec the closure only calls setrlimit and signal, both
    // async-signal-safe, and allocates nothing.
    unsafe {
        cmd.pre_exec(move || {
            let limit = libc::rlimit {
                rlim_cur: bytes as libc::rlim_t,
                rlim_max: bytes as libc::rlim_t,
            };
            if libc::setrlimit(libc::RLIMIT_FSIZE, &limit) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            libc::signal(libc::SIGXFSZ, libc::SIG_IGN);
            Ok(())
        });
    }
    cmd
}

/// A window too big for the space left fails with one line and leaves nothing.
#[cfg(unix)]
async fn too_big_for_the_disk(fx: &Fx, full_run: impl Fn() -> Run, cause: &str) {
    // 50 KB fits; 800 KB does not.
    fx.seed(50, 1000).await;
    fx.ok_run();
    let before = fx.watermark();
    fx.seed(800, 1000).await;
    let line = failed_line(&full_run());
    assert!(
        line.contains(&format!("  {cause} writing backups/p/.")),
        "the cause and the file: {line}"
    );
    assert_eq!(fx.watermark(), before, "the watermark did not move");
    assert_eq!(fx.archives().len(), 1, "no new archive");
    assert!(fx.temp_files().is_empty(), "{:?}", fx.temp_files());
}

/// The same with a file-size limit of 256 KiB, then a service under that limit: its
/// scheduled runs fail the same way and it keeps running; restarted without the limit
/// it exports the whole window.
#[cfg(unix)]
async fn too_big_for_the_file_size_limit(fx: &Fx) {
    const LIMIT: u64 = 256 * 1024;
    let limited_run = || {
        Run::from(
            with_file_size_limit(fx.cmd(), LIMIT)
                .args(["run", "--policy", "p"])
                .output()
                .unwrap(),
        )
    };
    too_big_for_the_disk(fx, limited_run, "file size limit reached").await;
    let before = fx.watermark();

    fx.set_schedule(NEVER, EVERY_SECOND);
    let failures = fx.failures();
    let mut serve = Serve::spawn(fx, with_file_size_limit(fx.cmd(), LIMIT));
    eventually(15, "scheduled runs to fail", || {
        (fx.failures() >= failures + 2).then_some(())
    });
    serve.assert_running(fx);
    let error = fx.entry()["lastError"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    assert!(error.contains("file size limit reached"), "{error}");
    assert_eq!(fx.watermark(), before, "the watermark did not move");
    serve.stop(fx);

    let serve = Serve::start(fx);
    eventually(15, "the window to be exported without the limit", || {
        (fx.archived() == 850).then_some(())
    });
    serve.stop(fx);
    fx.assert_nothing_lost(true).await;
}

// The backup root on a 512 KB tmpfs (where the test may mount one; else a file-size
// limit): a window bigger than the free space fails clearly ("disk full") and leaves
// no partial file; a disk already full (state.json cannot be written either) fails
// the same way; under the service every scheduled run fails so and the service keeps
// running; with space again, the next run exports everything.
#[cfg(unix)]
#[tokio::test]
async fn disk_full_fails_clearly_and_loses_nothing() {
    let fx = Fx::new(&server().uri, "diskfull", NEVER, "0s");
    let Some(disk) = Tmpfs::mount(&fx.root(), "512k") else {
        cannot_make(
            "cannot mount a tmpfs here, so the disk cannot be filled",
            "a file-size limit; the real ENOSPC, a state.json that cannot be written and \
             a full disk placing nothing are not checked",
        );
        too_big_for_the_file_size_limit(&fx).await;
        return;
    };
    too_big_for_the_disk(&fx, || fx.run(), "disk full").await;
    let before = fx.watermark();

    // Now fill the disk to the last byte, and add a little more data.
    {
        use std::io::Write;
        let mut filler = std::fs::File::create(fx.root().join("filler")).unwrap();
        let block = vec![0u8; 64 * 1024];
        while filler.write_all(&block).is_ok() {}
        while filler.write_all(&block[..512]).is_ok() {}
    }
    fx.seed(10, 100).await;
    let run = fx.run();
    let line = failed_line(&run);
    assert!(line.contains("  disk full writing backups/p/."), "{line}");
    // The failure cannot be recorded either, and says so with the OS's cause.
    assert!(
        run.stderr
            .contains("cannot write state.json error=No space left on device (os error 28)"),
        "{}",
        run.stderr
    );
    assert_eq!(fx.watermark(), before, "the watermark did not move");
    assert!(fx.temp_files().is_empty(), "{:?}", fx.temp_files());

    // Under the service, with a little space (enough for its records, not for the
    // window): every scheduled run fails with "disk full", the service keeps running,
    // and once there is space the next run exports the whole window.
    std::fs::remove_file(fx.root().join("filler")).unwrap();
    fx.set_schedule(NEVER, EVERY_SECOND);
    let failures = fx.failures();
    let mut serve = Serve::start(&fx);
    eventually(15, "scheduled runs to fail", || {
        (fx.failures() >= failures + 2).then_some(())
    });
    serve.assert_running(&fx);
    let error = fx.entry()["lastError"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    assert!(error.contains("disk full"), "{error}");
    assert_eq!(fx.watermark(), before, "the watermark did not move");
    assert!(fx.temp_files().is_empty(), "{:?}", fx.temp_files());
    disk.resize("64m");
    eventually(15, "the window to be exported once there is space", || {
        (fx.archived() == 860).then_some(())
    });
    serve.assert_running(&fx);
    serve.stop(&fx);
    fx.assert_nothing_lost(true).await;
    drop(disk);
}

// A full disk never places an archive without its manifest: with the free space
// stepped up a page at a time from none until the window fits, each run either fails
// with "disk full" leaving nothing new (no archive, manifest or temporary file under
// any name, the watermark unchanged), or places the archive and its manifest both.
// Some step runs out of space after the archive's data was written.
#[cfg(unix)]
#[tokio::test]
async fn a_full_disk_places_nothing() {
    let fx = Fx::new(&server().uri, "placed", NEVER, "0s");
    let Some(disk) = Tmpfs::mount(&fx.root(), "1m") else {
        cannot_make(
            "cannot mount a tmpfs here, so the disk cannot be filled",
            "none: this test checks nothing without it",
        );
        return;
    };
    fx.seed(5, 100).await;
    fx.ok_run();
    let before = fx.watermark();
    let names = || -> Vec<String> {
        let mut n: Vec<String> = std::fs::read_dir(fx.policy_dir())
            .unwrap()
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| !n.starts_with(".dcb.") || n.ends_with(".dcb-tmp"))
            .collect();
        n.sort();
        n
    };
    let placed = names();
    assert_eq!(placed.len(), 2, "one archive and its manifest: {placed:?}");
    // About 40 KB of incompressible documents: ten pages or so.
    fx.seed(40, 1000).await;
    let filler = fx.root().join("filler");
    {
        use std::io::Write;
        let mut f = std::fs::File::create(&filler).unwrap();
        let block = vec![0u8; 4096];
        while f.write_all(&block).is_ok() {}
        f.sync_all().unwrap();
    }
    let full = std::fs::metadata(&filler).unwrap().len();
    let (mut failed, mut after_data) = (0, false);
    for pages in 0.. {
        assert!(pages < 40, "the window never fitted");
        // Free `pages` pages (the logs take their share of each step too).
        let f = std::fs::OpenOptions::new()
            .write(true)
            .open(&filler)
            .unwrap();
        f.set_len(full.saturating_sub(pages * 4096)).unwrap();
        drop(f);
        let run = fx.run();
        if run.code == 0 {
            let now = names();
            assert_eq!(now.len(), 4, "a new archive and its manifest: {now:?}");
            assert!(run.stdout.contains(" 40 docs"), "{}", run.stdout);
            break;
        }
        failed += 1;
        let line = failed_line(&run);
        assert!(line.contains("  disk full writing backups/p/"), "{line}");
        assert_eq!(names(), placed, "with {pages} pages free: {line}");
        assert_eq!(fx.watermark(), before, "with {pages} pages free");
        after_data |= line.contains(".manifest.json");
    }
    assert!(
        failed > 2,
        "the disk was not full enough to test: {failed} failed runs"
    );
    assert!(
        after_data,
        "no step ran out of space at the manifest, after the archive was written"
    );
    drop(disk);
}

// The file-size limit alone (what the test above falls back to where it cannot
// mount), so that this way of filling the disk is exercised everywhere.
#[cfg(unix)]
#[tokio::test]
async fn file_size_limit_fails_clearly_and_loses_nothing() {
    let fx = Fx::new(&server().uri, "fsize", NEVER, "0s");
    too_big_for_the_file_size_limit(&fx).await;
}

// ---------------------------------------------------------------------------------
// state.json corrupted.

// Whatever state.json turns into — random bytes, a file cut in half, an empty file,
// `null`, a watermark that is not a time — the next run says so, keeps the bad file
// aside, rebuilds the watermarks from the manifests and exports exactly the new
// documents: no window twice, none missed.
#[tokio::test]
async fn corrupt_state_is_rebuilt_and_loses_nothing() {
    let fx = Fx::new(&server().uri, "corrupt", NEVER, "0s");
    fx.seed(200, 64).await;
    fx.ok_run();
    let state = fx.root().join("logs/state.json");
    let good = std::fs::read(&state).unwrap();
    let bad_watermark = String::from_utf8(good.clone()).unwrap().replacen(
        "\"watermark\": \"",
        "\"watermark\": \"not a time ",
        1,
    );
    let garbage: Vec<u8> = (0..4096u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 24) as u8)
        .collect();
    let corruptions: Vec<(&str, Vec<u8>)> = vec![
        ("random bytes", garbage),
        ("cut in half", good[..good.len() / 2].to_vec()),
        ("empty", Vec::new()),
        ("null", b"null".to_vec()),
        ("a watermark that is not a time", bad_watermark.into_bytes()),
    ];
    for (i, (what, bytes)) in corruptions.iter().enumerate() {
        fx.seed(40 + i, 64).await;
        std::fs::write(&state, bytes).unwrap();
        let run = fx.run();
        assert_eq!(run.code, 0, "{what}: {}{}", run.stdout, run.stderr);
        assert!(
            run.stderr.contains("state.json is corrupt")
                && run.stderr.contains("rebuilt watermarks from the manifests"),
            "{what}: {}",
            run.stderr
        );
        assert!(
            run.stdout.contains(&format!(" {} docs", 40 + i)),
            "{what}: exactly the new documents: {}",
            run.stdout
        );
        let kept = std::fs::read_dir(fx.root().join("logs"))
            .unwrap()
            .flatten()
            .filter(|e| {
                e.file_name()
                    .to_string_lossy()
                    .starts_with("state.json.corrupt-")
            })
            .count();
        assert_eq!(kept, i + 1, "{what}: the bad file is kept for inspection");
    }
    assert_eq!(fx.archives().len(), 6);
    fx.assert_nothing_lost(true).await;
}

/// How many corrupt state files have been set aside.
fn corrupt_kept(fx: &Fx) -> usize {
    std::fs::read_dir(fx.root().join("logs"))
        .map(|d| {
            d.flatten()
                .filter(|e| {
                    e.file_name()
                        .to_string_lossy()
                        .starts_with("state.json.corrupt-")
                })
                .count()
        })
        .unwrap_or(0)
}

// The same under `dcb serve`: state.json turned to garbage between scheduled runs is
// noticed, set aside and rebuilt from the manifests; the service keeps running and
// the next runs export exactly the new documents, no window twice, none missed.
#[tokio::test]
async fn service_survives_corrupt_state_and_loses_nothing() {
    let fx = Fx::new(&server().uri, "svccorrupt", EVERY_SECOND, SERVICE_SETTLE);
    fx.seed(100, 64).await;
    let mut serve = Serve::start(&fx);
    eventually(30, "the first export", || {
        (fx.archived() == 100).then_some(())
    });
    let state = fx.root().join("logs/state.json");
    let garbage: Vec<u8> = (0..4096u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 24) as u8)
        .collect();
    let kinds: [(&str, &[u8]); 4] = [
        ("random bytes", &garbage),
        ("cut short", b"{\"version\": 1, \"collections\": {"),
        ("empty", b""),
        ("null", b"null"),
    ];
    for (i, (what, bytes)) in kinds.iter().enumerate() {
        // The service rewrites state.json after each run: a write of ours that one of
        // its writes replaced unread is made again.
        let kept = corrupt_kept(&fx);
        eventually(30, what, || {
            if corrupt_kept(&fx) > kept {
                return Some(());
            }
            let readable = std::fs::read(&state)
                .ok()
                .and_then(|b| serde_json::from_slice::<serde_json::Value>(&b).ok())
                .is_some_and(|v| v.is_object());
            if readable {
                std::fs::write(&state, bytes).unwrap();
            }
            None
        });
        let want = fx.seeded.load(Ordering::SeqCst) + 20 + i;
        fx.seed(20 + i, 64).await;
        eventually(30, "the documents inserted since", || {
            (fx.archived() == want).then_some(())
        });
        serve.assert_running(&fx);
    }
    assert!(
        fx.log().contains("state.json is corrupt"),
        "the rebuild is logged: {}",
        fx.log()
    );
    serve.stop(&fx);
    // The service's first window may be empty (documents not yet settled), so the
    // first archive need not start at the beginning.
    fx.assert_nothing_lost(false).await;
}

// After state.json is lost or rebuilt, the run that rebuilt it is counted once: the
// counts are what the manifests say (one success per archive), not one more.
#[tokio::test]
async fn rebuilt_state_counts_the_current_run_once() {
    let fx = Fx::new(&server().uri, "counts", NEVER, "0s");
    fx.seed(20, 64).await;
    fx.ok_run();
    let entry = fx.entry();
    assert_eq!(
        (entry["runs"].as_u64(), entry["successes"].as_u64()),
        (Some(1), Some(1)),
        "one run, one success: {entry:#}"
    );
    fx.seed(20, 64).await;
    std::fs::write(fx.root().join("logs/state.json"), b"{").unwrap();
    fx.ok_run();
    let entry = fx.entry();
    assert_eq!(
        entry["successes"].as_u64(),
        Some(fx.archives().len() as u64),
        "one success per archive after a rebuild: {entry:#}"
    );
}

// A scheduled run that fails before its exports start (here: the server is down when
// the run begins) says why in the service's log, naming the collection, as a failed
// export does: the log is where an operator looks first.
#[tokio::test]
async fn service_logs_why_a_scheduled_run_failed() {
    let dead = format!("mongodb://127.0.0.1:{}/", support::free_port());
    let fx = Fx::new(&dead, "whylog", EVERY_SECOND, "0s");
    let serve = Serve::start(&fx);
    eventually(15, "a scheduled run to fail", || {
        (fx.failures() >= 2).then_some(())
    });
    let error = fx.entry()["lastError"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    assert!(error.contains("server unreachable"), "{error}");
    drop(serve);
    let log = fx.log();
    assert!(
        log.lines()
            .any(|l| l.contains(&fx.job_id()) && l.contains("server unreachable")),
        "no log line names the collection and the cause:\n{log}"
    );
}

// ---------------------------------------------------------------------------------
// A policy file replaced by garbage while serving.

// While the service is exporting, the policy file is overwritten with random bytes,
// then with half of itself, then emptied: each is rejected (logged and alerted, naming
// the file), the export in progress finishes, the last valid version keeps running
// on schedule, and every document inserted meanwhile is backed up.
#[tokio::test]
async fn policy_replaced_by_garbage_while_serving() {
    let _turn = exclusive().await;
    let fx = Fx::new(&server().uri, "garbage", EVERY_SECOND, SERVICE_SETTLE);
    let file = fx.s.path().join("policies/p.yaml");
    let valid = std::fs::read(&file).unwrap();
    fx.seed(200, 64).await;
    let mut serve = Serve::start(&fx);
    eventually(30, "the first export", || {
        (fx.archived() == 200).then_some(())
    });

    // Hold the next export in its getMore while the file is replaced.
    fx.fail_point(
        doc! {"times": 1}.into(),
        doc! {"failCommands": ["getMore"], "blockConnection": true, "blockTimeMS": 2_000},
    )
    .await;
    fx.seed(BIG, 64).await;
    fx.wait_until_writing();
    let rejections = || fx.log().matches("invalid policy file").count();
    let garbage: Vec<u8> = (0..2048u32)
        .map(|i| (i.wrapping_mul(40_503) >> 3) as u8)
        .collect();
    let kinds: [(&str, Vec<u8>); 3] = [
        ("random bytes", garbage),
        ("cut in half", valid[..valid.len() / 2].to_vec()),
        ("empty", Vec::new()),
    ];
    for (i, (what, bytes)) in kinds.iter().enumerate() {
        let before = rejections();
        std::fs::write(&file, bytes).unwrap();
        eventually(10, what, || (rejections() > before).then_some(()));
        let log = fx.log();
        assert!(log.contains("p.yaml"), "{what}: names the file: {log}");
        if i == 0 {
            // The export that was running when the file changed completes.
            eventually(20, "the held export", || {
                (fx.archived() == BIG + 200).then_some(())
            });
        }
        serve.assert_running(&fx);
    }
    // The last valid version still runs on schedule.
    fx.seed(25, 64).await;
    eventually(30, "documents inserted since to be backed up", || {
        (fx.archived() == BIG + 225).then_some(())
    });
    let alerts = std::fs::read_to_string(fx.root().join("logs/alerts.log")).unwrap();
    assert!(
        alerts.contains("invalid-policy") && alerts.contains("p.yaml"),
        "{alerts}"
    );
    assert_eq!(
        std::fs::read(&file).unwrap(),
        b"",
        "dcb never rewrites the file"
    );

    // Mended with a version that differs from the last valid one (a second
    // collection): that new version runs, and api_logs carries on from its watermark.
    let client = fx.client().await;
    let at = DateTime::now();
    client
        .database(&fx.db)
        .collection::<Document>("scans")
        .insert_many((0..7).map(|i| doc! {"createdAt": at, "i": i}))
        .await
        .unwrap();
    let mended = String::from_utf8(valid.clone())
        .unwrap()
        .replace("collections: [api_logs]", "collections: [api_logs, scans]");
    assert_ne!(mended.as_bytes(), &valid[..], "the mend changes the policy");
    std::fs::write(&file, &mended).unwrap();
    let successes = fx.successes();
    eventually(15, "the mended version's new collection backed up", || {
        let scans = support::archives(&fx.root(), "p", "scans");
        let docs: u64 = scans
            .iter()
            .map(|a| {
                let m: serde_json::Value =
                    serde_json::from_slice(&std::fs::read(support::manifest_of(a)).ok()?).ok()?;
                m["documents"].as_u64()
            })
            .map(|d| d.unwrap_or(0))
            .sum();
        (docs == 7).then_some(())
    });
    eventually(10, "api_logs to keep running", || {
        (fx.successes() >= successes + 2).then_some(())
    });
    serve.stop(&fx);
    fx.assert_nothing_lost(false).await;
}

// ---------------------------------------------------------------------------------
// Retention under the service.

// The service prunes after its runs, never while a real `dcb run` holds the policy:
// two archives past their retention survive every tick refused while the other
// process exports; once it is done, the service's next run prunes them, keeping the
// newest (keepLast 1), and the prune is audited.
#[tokio::test]
async fn service_prunes_after_its_runs_but_not_under_a_running_export() {
    let _turn = exclusive().await;
    let fx = Fx::new(&server().uri, "svcprune", NEVER, "0s");
    let file = fx.s.path().join("policies/p.yaml");
    let text = std::fs::read_to_string(&file).unwrap();
    std::fs::write(
        &file,
        text.replace("retention: 7d", "retention: 2s\nkeepLast: 1"),
    )
    .unwrap();
    fx.seed(20, 64).await;
    fx.ok_run();
    fx.seed(20, 64).await;
    fx.ok_run();
    let old = fx.archives();
    assert_eq!(old.len(), 2);
    // Both windows end more than the retention ago.
    tokio::time::sleep(Duration::from_millis(2500)).await;

    fx.seed(BIG, 64).await;
    fx.fail_point(
        doc! {"times": 1}.into(),
        doc! {"failCommands": ["getMore"], "blockConnection": true, "blockTimeMS": 5_000},
    )
    .await;
    let held = fx.spawn_run();
    fx.wait_until_writing();
    fx.set_schedule(NEVER, EVERY_SECOND);
    let mut serve = Serve::start(&fx);
    let refused = || {
        fx.log()
            .lines()
            .filter(|l| l.contains("another process is running this policy"))
            .count()
    };
    eventually(
        15,
        "two ticks refused while the run holds the policy",
        || (refused() >= 2).then_some(()),
    );
    assert!(
        old.iter().all(|a| a.exists()),
        "an archive was pruned under a running export: {:?}",
        fx.archives()
    );
    let run = Run::from(held.wait_with_output().unwrap());
    assert_eq!(run.code, 0, "{}{}", run.stdout, run.stderr);
    assert!(
        run.stdout.contains(&format!("{BIG} docs")),
        "{}",
        run.stdout
    );
    let newest = eventually(15, "the service's run to prune", || {
        let now = fx.archives();
        (now.len() == 1 && !old.contains(&now[0])).then(|| now[0].clone())
    });
    assert!(newest.exists());
    serve.assert_running(&fx);
    serve.stop(&fx);
    let audit = std::fs::read_to_string(fx.root().join("logs/audit.log")).unwrap();
    for a in &old {
        let name = a.file_name().unwrap().to_string_lossy().into_owned();
        assert!(
            audit.lines().any(|l| {
                let v: serde_json::Value = serde_json::from_str(l).unwrap();
                v["operation"] == "prune"
                    && v["result"] == "ok"
                    && v["archive"].as_str().unwrap_or_default().ends_with(&name)
            }),
            "{name} not audited as pruned: {audit}"
        );
    }
}

// ---------------------------------------------------------------------------------
// Two runs of one policy at once.

// While one `dcb run` exports a window, three more runs of the policy refuse at once
// with one line naming the lock; a service whose schedule fires meanwhile refuses too
// (logged, but not recorded as a failure: the other process is backing it up), keeps
// running and succeeds once the lock is free. No window is ever written twice and
// nothing is lost.
#[tokio::test]
async fn two_runs_of_one_policy_never_write_one_window_twice() {
    let _turn = exclusive().await;
    let fx = Fx::new(&server().uri, "twice", NEVER, "0s");
    fx.seed(BIG, 64).await;
    fx.fail_point(
        doc! {"times": 1}.into(),
        doc! {"failCommands": ["getMore"], "blockConnection": true, "blockTimeMS": 3_000},
    )
    .await;
    let first = fx.spawn_run();
    fx.wait_until_writing();
    let others: Vec<Child> = (0..3).map(|_| fx.spawn_run()).collect();
    for other in others {
        let run = Run::from(other.wait_with_output().unwrap());
        let line = failed_line(&run);
        assert!(
            line.contains("another dcb is running policy `p`") && line.contains(".dcb.lock"),
            "{line}"
        );
    }
    let run = Run::from(first.wait_with_output().unwrap());
    assert_eq!(run.code, 0, "{}{}", run.stdout, run.stderr);
    assert!(
        run.stdout.contains(&format!("{BIG} docs")),
        "{}",
        run.stdout
    );
    assert_eq!(fx.archives().len(), 1);

    // A run holds the policy when the service starts: its catch-up run is refused.
    fx.seed(BIG, 64).await;
    fx.fail_point(
        doc! {"times": 1}.into(),
        doc! {"failCommands": ["getMore"], "blockConnection": true, "blockTimeMS": 4_000},
    )
    .await;
    let held = fx.spawn_run();
    fx.wait_until_writing();
    let failures = fx.failures();
    fx.set_schedule(NEVER, EVERY_SECOND);
    let mut serve = Serve::start(&fx);
    // Refused and logged with its cause, but not recorded as a failure of the
    // backup, which the other process is doing fine.
    // (The service's line names the reason it fired; the refused `dcb run`s above
    // logged theirs by job.)
    eventually(15, "the service's run to be refused", || {
        fx.log()
            .lines()
            .any(|l| {
                l.contains("another process is running this policy; not started twice")
                    && l.contains("policy=p")
                    && l.contains("reason=")
            })
            .then_some(())
    });
    assert_eq!(fx.failures(), failures, "a refusal is not a failure");
    let run = Run::from(held.wait_with_output().unwrap());
    assert_eq!(run.code, 0, "{}{}", run.stdout, run.stderr);
    let successes = fx.successes();
    eventually(15, "a scheduled run after the lock is free", || {
        (fx.successes() > successes).then_some(())
    });
    serve.assert_running(&fx);
    serve.stop(&fx);

    fx.seed(100, 64).await;
    fx.ok_run();
    assert_eq!(
        fx.archives().len(),
        3,
        "one archive per window with documents"
    );
    fx.assert_nothing_lost(false).await;
}
