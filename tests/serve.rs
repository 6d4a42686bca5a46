//! `dcb serve` against a real test server, with second-granularity schedules: runs on
//! time, hot reload (new files, invalid edits), alerts to a local webhook when the
//! database goes away and comes back, status, metrics, and graceful shutdown.

mod support;

use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};

use mongodb::bson::{Document, doc};
use support::{Recorder, Scratch, eventually, http_get};

/// A running `dcb serve`, killed if the test fails before stopping it.
struct Serve {
    child: Option<Child>,
    root: PathBuf,
}

impl Serve {
    fn start(s: &Scratch, uri: &str, args: &[&str]) -> Serve {
        let child = s
            .dcb()
            .arg("serve")
            .args(args)
            .env("DCB_MONGODB_URI", uri)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let root = s.path().join("backups");
        let serve = Serve {
            child: Some(child),
            root,
        };
        eventually(20, "the service record", || status_record(&serve.root));
        serve
    }

    #[cfg(unix)]
    fn pid(&self) -> u32 {
        self.child.as_ref().unwrap().id()
    }

    #[cfg(unix)]
    fn signal(&self, name: &str) {
        let status = std::process::Command::new("kill")
            .arg(format!("-{name}"))
            .arg(self.pid().to_string())
            .status()
            .unwrap();
        assert!(status.success());
    }

    /// The admin endpoint's address, from the service record.
    fn http(&self) -> String {
        status_record(&self.root).unwrap()["http"]
            .as_str()
            .expect("the service listens")
            .to_string()
    }

    /// The service's log so far.
    fn log(&self) -> String {
        std::fs::read_dir(self.root.join("logs"))
            .map(|d| {
                d.flatten()
                    .filter(|e| e.file_name().to_string_lossy().starts_with("dcb."))
                    .map(|e| std::fs::read_to_string(e.path()).unwrap_or_default())
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Wait for the process to exit; its exit code.
    fn wait(mut self, secs: u64) -> i32 {
        let mut child = self.child.take().unwrap();
        eventually(secs, "the service to exit", || {
            child.try_wait().unwrap().map(|s| s.code().unwrap_or(-1))
        })
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

fn status_record(root: &Path) -> Option<serde_json::Value> {
    serde_json::from_slice(&std::fs::read(root.join("logs/service.json")).ok()?).ok()
}

fn state(root: &Path) -> serde_json::Value {
    std::fs::read(root.join("logs/state.json"))
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .unwrap_or(serde_json::Value::Null)
}

fn runs_of(root: &Path, id: &str) -> u64 {
    state(root)["collections"][id]["successes"]
        .as_u64()
        .unwrap_or(0)
}

fn policy(name: &str, db: &str, schedule: &str) -> String {
    format!(
        "name: {name}\nschedule: \"{schedule}\"\ndatabase: {db}\nwindow: {{initial: all, settle: 0s}}\n\
         collections: [api_logs]\nretention: 1h\n"
    )
}

async fn seed(uri: &str, db: &str, n: usize) {
    let client = mongodb::Client::with_uri_str(uri).await.unwrap();
    let docs: Vec<Document> = (0..n)
        .map(|i| doc! {"createdAt": mongodb::bson::DateTime::now(), "n": i as i64})
        .collect();
    client
        .database(db)
        .collection::<Document>("api_logs")
        .insert_many(docs)
        .await
        .unwrap();
}

/// One sample of `/metrics` whose labels include `labels`.
fn metric(addr: &str, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    let (code, text) = http_get(addr, "/metrics");
    assert_eq!(code, 200);
    let scrape = prometheus_parse::Scrape::parse(text.lines().map(|l| Ok(l.to_string()))).unwrap();
    scrape
        .samples
        .iter()
        .find(|x| x.metric == name && labels.iter().all(|(k, v)| x.labels.get(k) == Some(*v)))
        .map(|x| match x.value {
            prometheus_parse::Value::Counter(v)
            | prometheus_parse::Value::Gauge(v)
            | prometheus_parse::Value::Untyped(v) => v,
            _ => f64::NAN,
        })
}

fn config_with_webhook(url: &str, health: &str) -> String {
    format!(
        "health:\n{health}\nalerts:\n  cooldown: 1h\n  notifiers:\n    - type: webhook\n      url: {url}\n      events: [failure, resolved]\n"
    )
}

// A 2-second schedule runs on time, again and again; `dcb status` and the admin
// endpoint describe the running service; `dcb stop` stops it with exit 0.
#[tokio::test]
async fn runs_on_schedule_and_reports_status() {
    let uri = support::server().uri.clone();
    let db = support::unique_db("sched");
    seed(&uri, &db, 50).await;
    let s = Scratch::new();
    s.write("policies/tick.yaml", &policy("tick", &db, "*/2 * * * * *"));
    let serve = Serve::start(&s, &uri, &["--http", "127.0.0.1:0"]);
    let id = format!("tick/{db}/api_logs");
    eventually(15, "three runs", || {
        (runs_of(&serve.root, &id) >= 3).then_some(())
    });

    // Each new archive is read back and the result recorded for `dcb list`.
    let verified = eventually(10, "a verification in verify.log", || {
        std::fs::read_to_string(serve.root.join("logs/verify.log")).ok()
    });
    let first: serde_json::Value = serde_json::from_str(verified.lines().next().unwrap()).unwrap();
    assert_eq!(first["ok"], true, "{verified}");
    assert_eq!(first["documents"], 50, "{verified}");
    assert!(
        first["archive"].as_str().unwrap().starts_with("tick/"),
        "{verified}"
    );

    // Runs start on the even seconds the schedule names (allowing for start-up).
    let read_log = || -> String {
        std::fs::read_dir(serve.root.join("logs"))
            .unwrap()
            .flatten()
            .find(|e| e.file_name().to_string_lossy().starts_with("dcb."))
            .map(|e| std::fs::read_to_string(e.path()).unwrap())
            .unwrap_or_default()
    };
    let log = eventually(10, "two scheduled starts in the log", || {
        let log = read_log();
        (log.lines()
            .filter(|l| l.contains("run started") && l.contains("reason=schedule"))
            .count()
            >= 2)
            .then_some(log)
    });
    let starts: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("run started") && l.contains("reason=schedule"))
        .collect();
    for line in &starts {
        // 2026-11-25T05:30:04.001234Z: the second is even and the fraction small.
        let ts = line.split_whitespace().next().unwrap();
        let sec: u32 = ts[17..19].parse().unwrap();
        let frac: f64 = format!("0{}", &ts[19..ts.len() - 1]).parse().unwrap_or(0.0);
        assert_eq!(sec % 2, 0, "{line}");
        assert!(frac < 0.5, "late start: {line}");
    }

    let run = s.run(&["status", "--json"]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    let st: serde_json::Value = serde_json::from_str(&run.stdout).unwrap();
    assert_eq!(st["isRunning"], true);
    assert!(st["statistics"]["successCount"].as_u64().unwrap() >= 3);
    assert!(
        st["statistics"]["successRate"]
            .as_str()
            .unwrap()
            .ends_with('%')
    );
    assert_eq!(
        st["policies"][0]["collections"][0]["consecutiveFailures"],
        0
    );
    let human = s.run(&["status"]);
    assert!(
        human.stdout.contains("service: running"),
        "{}",
        human.stdout
    );
    assert!(human.stdout.contains("tick/api_logs"), "{}", human.stdout);

    let addr = status_record(&serve.root).unwrap()["http"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(http_get(&addr, "/healthz").0, 200);
    let (code, body) = http_get(&addr, "/status");
    assert_eq!(code, 200);
    assert_eq!(
        serde_json::from_str::<serde_json::Value>(&body).unwrap()["isRunning"],
        true
    );
    let (code, metrics) = http_get(&addr, "/metrics");
    assert_eq!(code, 200);
    let scrape =
        prometheus_parse::Scrape::parse(metrics.lines().map(|l| Ok(l.to_string()))).unwrap();
    let ok_runs = scrape
        .samples
        .iter()
        .find(|x| x.metric == "dcb_runs_total" && x.labels.get("result") == Some("success"))
        .expect("a success counter");
    assert!(
        matches!(ok_runs.value, prometheus_parse::Value::Counter(n) if n >= 3.0),
        "{metrics}"
    );
    assert!(
        scrape
            .samples
            .iter()
            .any(|x| x.metric == "dcb_next_run_timestamp_seconds")
    );

    let stop = s.run(&["stop"]);
    assert_eq!(stop.code, 0, "{}", stop.stderr);
    assert_eq!(serve.wait(20), 0);
    let st: serde_json::Value = serde_json::from_str(&s.run(&["status", "--json"]).stdout).unwrap();
    assert_eq!(st["isRunning"], false);
}

// A policy file added while serving runs within one interval; an invalid edit is
// rejected with an alert while the last valid version keeps running; mending it
// resolves the alert.
#[tokio::test]
async fn hot_reload_adds_policies_and_rejects_invalid_edits() {
    let uri = support::server().uri.clone();
    let db = support::unique_db("reload");
    seed(&uri, &db, 20).await;
    let hook = Recorder::start();
    let s = Scratch::new();
    s.write(
        "dcb.yaml",
        &config_with_webhook(&hook.url, "  interval: 1h"),
    );
    s.write(
        "policies/first.yaml",
        &policy("first", &db, "*/2 * * * * *"),
    );
    let serve = Serve::start(&s, &uri, &[]);
    let first = format!("first/{db}/api_logs");
    eventually(15, "first runs", || {
        (runs_of(&serve.root, &first) >= 1).then_some(())
    });

    s.write(
        "policies/second.yaml",
        &policy("second", &db, "*/3 * * * * *"),
    );
    let second = format!("second/{db}/api_logs");
    eventually(8, "the added policy to run", || {
        (runs_of(&serve.root, &second) >= 1).then_some(())
    });

    // Garbage in place of a policy: alerted, and the old version keeps running.
    s.write(
        "policies/first.yaml",
        "name: first\nschedule: [not, a, cron\n",
    );
    let alert = hook.wait_for(10, "an invalid-policy alert", |b| {
        b.contains("invalid-policy")
    });
    assert!(alert.contains("first.yaml"), "{alert}");
    eventually(10, "the alert in alerts.log", || {
        std::fs::read_to_string(serve.root.join("logs/alerts.log"))
            .ok()
            .filter(|log| log.contains("invalid-policy"))
    });
    let before = runs_of(&serve.root, &first);
    eventually(10, "the old version to keep running", || {
        (runs_of(&serve.root, &first) >= before + 2).then_some(())
    });

    s.write(
        "policies/first.yaml",
        &policy("first", &db, "*/2 * * * * *"),
    );
    hook.wait_for(10, "a resolved alert", |b| {
        b.contains("invalid-policy") && b.contains("resolved")
    });
    drop(serve);
}

// Stopping the database raises a failure alert at the webhook; starting it again
// sends a resolved alert.
#[tokio::test]
async fn database_outage_alerts_and_resolves() {
    let port = support::free_port();
    let dir = tempfile::tempdir().unwrap();
    let db_server = support::start_server_at(port, dir.path(), &[]);
    let uri = db_server.uri.clone();
    let db = support::unique_db("outage");
    seed(&uri, &db, 10).await;
    let hook = Recorder::start();
    let s = Scratch::new();
    s.write(
        "dcb.yaml",
        &config_with_webhook(&hook.url, "  interval: 1s\n  failureThreshold: 1"),
    );
    s.write("policies/p.yaml", &policy("p", &db, "0 0 1 1 *"));
    let serve = Serve::start(&s, &uri, &[]);

    db_server.stop();
    let down = hook.wait_for(30, "a database failure alert", |b| {
        b.contains("\"database\"") && !b.contains("resolved")
    });
    assert!(down.contains("unreachable"), "{down}");

    let again = support::start_server_at(port, dir.path(), &[]);
    hook.wait_for(30, "a resolved alert", |b| {
        b.contains("\"database\"") && b.contains("resolved")
    });
    drop(serve);
    again.stop();
}

// SIGTERM in the middle of an export: the service exits 0 after the grace period,
// with no partial archive, no temp file and no watermark.
#[cfg(unix)]
#[tokio::test]
async fn sigterm_during_export_exits_cleanly() {
    let server = support::start_server(&["--enable-test-commands"]);
    let db = support::unique_db("term");
    // More than one server batch, so the export reaches the blocked getMore.
    seed(&server.uri, &db, 6000).await;
    let client = mongodb::Client::with_uri_str(&server.uri).await.unwrap();
    client
        .database("admin")
        .run_command(
            doc! {"configureFailPoint": "failCommand", "mode": {"times": 1},
            "data": {"failCommands": ["getMore"], "blockConnection": true, "blockTimeMS": 15_000}},
        )
        .await
        .unwrap();
    let s = Scratch::new();
    s.write("policies/p.yaml", &policy("p", &db, "0 0 1 1 *"));
    // Never run before, so the service catches up at once.
    let serve = Serve::start(&s, &server.uri, &["--grace", "1s"]);
    let dir = serve.root.join("p");
    eventually(20, "the export to start writing", || {
        std::fs::read_dir(&dir)
            .ok()?
            .flatten()
            .any(|e| e.file_name().to_string_lossy().ends_with(".dcb-tmp"))
            .then_some(())
    });
    let status = std::process::Command::new("kill")
        .arg("-TERM")
        .arg(serve.pid().to_string())
        .status()
        .unwrap();
    assert!(status.success());
    assert_eq!(serve.wait(30), 0);
    let names: Vec<String> = std::fs::read_dir(&dir)
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    assert!(
        !names
            .iter()
            .any(|n| n.ends_with(".tar.gz") || n.ends_with(".dcb-tmp")),
        "{names:?}"
    );
    let st = state(&s.path().join("backups"));
    assert!(
        st["collections"][format!("p/{db}/api_logs")]["watermark"].is_null(),
        "{st}"
    );
}

// The service managers in examples/ and `dcb stop --wait` wait longer than the
// slowest stop (default grace plus the abort wait, the alert flush and the runtime's
// wind-down, plus time to spare), so none of them kills dcb first.
#[test]
fn stop_timeouts_outlast_the_slowest_stop() {
    use clap::Parser as _;
    use dcb::cli::{Cli, Command};
    let grace = match Cli::try_parse_from(["dcb", "serve"]).unwrap().command {
        Command::Serve(a) => a.grace.0,
        _ => unreachable!(),
    };
    let wait = match Cli::try_parse_from(["dcb", "stop"]).unwrap().command {
        Command::Stop(a) => std::time::Duration::from_secs(a.wait),
        _ => unreachable!(),
    };
    let needed = grace + dcb::serve::STOP_OVERHEAD + std::time::Duration::from_secs(10);
    let examples = support::project_root().join("examples");
    let read = |f: &str| std::fs::read_to_string(examples.join(f)).unwrap();
    // The first number after `key`, in seconds (`ms` when the file counts milliseconds).
    let seconds = |text: &str, key: &str, ms: bool| -> std::time::Duration {
        let rest = &text[text.find(key).unwrap_or_else(|| panic!("no {key}")) + key.len()..];
        let n: u64 = rest
            .trim_start_matches(|c: char| !c.is_ascii_digit())
            .chars()
            .take_while(char::is_ascii_digit)
            .collect::<String>()
            .parse()
            .unwrap();
        if ms {
            std::time::Duration::from_millis(n)
        } else {
            std::time::Duration::from_secs(n)
        }
    };
    let windows = read("windows-service.md");
    for (what, t) in [
        (
            "TimeoutStopSec",
            seconds(&read("dcb.service"), "TimeoutStopSec=", false),
        ),
        (
            "kill_timeout",
            seconds(&read("ecosystem.config.js"), "kill_timeout:", true),
        ),
        (
            "AppStopMethodConsole",
            seconds(&windows, "AppStopMethodConsole", true),
        ),
        ("stoptimeout", seconds(&windows, "<stoptimeout>", false)),
        ("dcb stop --wait", wait),
    ] {
        assert!(t >= needed, "{what} is {t:?}; a stop can take {needed:?}");
    }
}

// A run still going at its next tick makes the tick skip (logged and counted in
// /metrics). A stop then gives the export the grace period, tells it to stop, and
// aborts it after a bounded wait even when it cannot react (blocked in the server for
// a minute and a half): exit 0 well before the block ends, with no archive, no
// temporary file and no watermark.
#[cfg(unix)]
#[tokio::test]
async fn a_slow_run_skips_ticks_and_a_stop_does_not_wait_for_it() {
    let server = support::start_server(&["--enable-test-commands"]);
    let db = support::unique_db("slow");
    // More than one server batch, so the export reaches the blocked getMore.
    seed(&server.uri, &db, 6000).await;
    let client = mongodb::Client::with_uri_str(&server.uri).await.unwrap();
    client
        .database("admin")
        .run_command(
            doc! {"configureFailPoint": "failCommand", "mode": {"times": 1},
            "data": {"failCommands": ["getMore"], "blockConnection": true, "blockTimeMS": 90_000}},
        )
        .await
        .unwrap();
    let s = Scratch::new();
    s.write("policies/p.yaml", &policy("p", &db, "* * * * * *"));
    let serve = Serve::start(&s, &server.uri, &["--grace", "1s", "--http", "127.0.0.1:0"]);
    let addr = serve.http();
    eventually(30, "two skipped ticks", || {
        (metric(&addr, "dcb_skipped_runs_total", &[("policy", "p")])? >= 2.0).then_some(())
    });
    assert!(
        serve.log().contains("this tick is skipped"),
        "{}",
        serve.log()
    );

    let t = std::time::Instant::now();
    serve.signal("TERM");
    let root = serve.root.clone();
    assert_eq!(serve.wait(120), 0);
    let took = t.elapsed();
    // Grace 1 s + the 10 s abort wait, with room for a loaded machine; far below the
    // block (90 s) the export waits in.
    assert!(
        took < std::time::Duration::from_secs(45),
        "the stop took {took:?}"
    );
    let names: Vec<String> = std::fs::read_dir(root.join("p"))
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    assert!(
        !names
            .iter()
            .any(|n| n.ends_with(".tar.gz") || n.ends_with(".dcb-tmp")),
        "{names:?}"
    );
    let st = state(&root);
    assert!(
        st["collections"][format!("p/{db}/api_logs")]["watermark"].is_null(),
        "{st}"
    );
}
