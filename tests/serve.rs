//! `dcb serve` against a real test server, with second-granularity schedules: runs on
//! time, hot reload (new files, invalid edits), alerts to a local webhook when the
//! database goes away and comes back, status, metrics, and graceful shutdown.

mod support;

use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};

use mongodb::bson::{Document, doc};
#[cfg(unix)]
use support::Run;
use support::{Recorder, Scratch, eventually, http_get};

/// A running `dcb serve`, killed if the test fails before stopping it.
struct Serve {
    child: Option<Child>,
    root: PathBuf,
}

impl Serve {
    fn start(s: &Scratch, uri: &str, args: &[&str]) -> Serve {
        Serve::start_with(s, Some(uri), args)
    }

    /// Without `uri`, the connection URI comes from dcb.yaml (or the default).
    fn start_with(s: &Scratch, uri: Option<&str>, args: &[&str]) -> Serve {
        let mut cmd = s.dcb();
        cmd.arg("serve").args(args);
        if let Some(uri) = uri {
            cmd.env("DCB_MONGODB_URI", uri);
        }
        let child = cmd
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
    let scrape = support::scrape(&text);
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

/// Webhook bodies as JSON.
fn alerts(hook: &Recorder) -> Vec<serde_json::Value> {
    hook.bodies()
        .iter()
        .filter_map(|b| serde_json::from_str(b).ok())
        .collect()
}

fn count(hook: &Recorder, kind: &str, key: &str) -> usize {
    alerts(hook)
        .iter()
        .filter(|a| a["kind"] == kind && a["key"] == key)
        .count()
}

/// A state.json with one collection's last success.
fn write_state(s: &Scratch, id: &str, last_success: chrono::DateTime<chrono::Utc>) {
    let (policy, rest) = id.split_once('/').unwrap();
    let (database, collection) = rest.split_once('/').unwrap();
    let state = serde_json::json!({"version": 1, "collections": {id: {
        "policy": policy, "database": database, "collection": collection,
        "lastSuccess": last_success, "runs": 5, "successes": 5
    }}});
    s.write("backups/logs/state.json", &state.to_string());
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
        // 2026-11-25T05:30:04.001234Z: the second is even and the fraction small. A
        // line that does not start with such a time fails, rather than passing unread.
        use chrono::Timelike as _;
        let ts = line.split_whitespace().next().unwrap();
        let at = chrono::DateTime::parse_from_rfc3339(ts)
            .unwrap_or_else(|e| panic!("the log line does not start with a time ({e}): {line}"));
        assert_eq!(at.second() % 2, 0, "{line}");
        assert!(at.nanosecond() < 500_000_000, "late start: {line}");
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
    assert!(metrics.ends_with("# EOF\n"), "OpenMetrics text: {metrics}");
    let scrape = support::scrape(&metrics);
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
    let log = std::fs::read_to_string(serve.root.join("logs/alerts.log")).unwrap();
    assert!(log.contains("invalid-policy"), "{log}");
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

/// A number of one collection's entry in state.json (0 when absent).
fn state_count(root: &Path, id: &str, field: &str) -> u64 {
    state(root)["collections"][id][field].as_u64().unwrap_or(0)
}

// Hot reload of valid changes: a served policy whose schedule is changed to one that
// never fires stops running; a policy file deleted stops running and its alerts
// resolve saying the policy was removed. Another policy keeps running throughout, so
// time did pass.
#[tokio::test]
async fn hot_reload_applies_a_changed_schedule_and_a_removal() {
    let uri = support::server().uri.clone();
    let db = support::unique_db("reload2");
    seed(&uri, &db, 10).await;
    let hook = Recorder::start();
    let s = Scratch::new();
    s.write(
        "dcb.yaml",
        &config_with_webhook(&hook.url, "  interval: 1h\n  failureThreshold: 1"),
    );
    s.write("policies/keep.yaml", &policy("keep", &db, "* * * * * *"));
    s.write(
        "policies/change.yaml",
        &policy("change", &db, "* * * * * *"),
    );
    // A collection that does not exist: every run of `gone` fails and alerts.
    s.write(
        "policies/gone.yaml",
        &policy("gone", &db, "* * * * * *").replace("[api_logs]", "[nope]"),
    );
    let serve = Serve::start(&s, &uri, &[]);
    let (keep, change, gone) = (
        format!("keep/{db}/api_logs"),
        format!("change/{db}/api_logs"),
        format!("gone/{db}/nope"),
    );
    let gone_key = format!("failures:{gone}");
    eventually(20, "change to run twice and gone to fail", || {
        (state_count(&serve.root, &change, "runs") >= 2 && count(&hook, "failure", &gone_key) == 1)
            .then_some(())
    });
    let failure = alerts(&hook)
        .into_iter()
        .find(|a| a["key"] == gone_key.as_str())
        .unwrap();
    assert!(
        failure["message"]
            .as_str()
            .unwrap()
            .contains("`nope` does not exist"),
        "{failure}"
    );

    // Runs of `name` the log says started.
    let started = |name: &str| {
        serve
            .log()
            .lines()
            .filter(|l| l.contains("run started") && l.contains(&format!("policy={name} ")))
            .count() as u64
    };
    // Waits until the log says the policy's schedule stopped and every run it started
    // is recorded, then checks that none follows for 3 s while `keep` runs on.
    let stops = |name: &str, what: &str, id: &str| {
        eventually(10, what, || {
            serve
                .log()
                .lines()
                .any(|l| l.contains("schedule stopped") && l.contains(&format!("policy={name}")))
                .then_some(())
        });
        let runs = eventually(20, "the runs in flight to finish", || {
            let runs = state_count(&serve.root, id, "runs");
            (runs == started(name)).then_some(runs)
        });
        let kept = state_count(&serve.root, &keep, "runs");
        std::thread::sleep(std::time::Duration::from_secs(3));
        assert_eq!(started(name), runs, "{name} still starts runs: {what}");
        assert_eq!(
            state_count(&serve.root, id, "runs"),
            runs,
            "{name} still runs: {what}"
        );
        assert!(
            state_count(&serve.root, &keep, "runs") > kept,
            "keep stopped too"
        );
    };

    s.write("policies/change.yaml", &policy("change", &db, "0 0 1 1 *"));
    stops("change", "a schedule that never fires", &change);
    assert!(
        serve.log().lines().any(|l| l.contains("scheduled")
            && l.contains("policy=change")
            && l.contains(r#"schedule="0 0 1 1 *""#)),
        "{}",
        serve.log()
    );

    std::fs::remove_file(s.path().join("policies/gone.yaml")).unwrap();
    stops("gone", "a deleted policy file", &gone);
    let resolved = hook.wait_for(10, "gone's alert resolved", |b| {
        b.contains(&format!(r#""key":"{gone_key}""#)) && b.contains(r#""kind":"resolved""#)
    });
    assert!(resolved.contains("policy `gone` was removed"), "{resolved}");
    assert_eq!(count(&hook, "resolved", &gone_key), 1);
    drop(serve);
}

// Health and run alerts raise and resolve: with the server unreachable, a collection's
// failures alert only when they reach `failureThreshold` (3: the one alert says 3
// consecutive failures), and a collection whose last success is an hour old with a
// one-second schedule is stale; once the server is reachable again, both resolve.
#[tokio::test]
async fn failures_at_the_threshold_and_staleness_raise_then_resolve() {
    let uri = support::server().uri.clone();
    let db = support::unique_db("thresh");
    seed(&uri, &db, 10).await;
    let hook = Recorder::start();
    let s = Scratch::new();
    let closed = support::free_port();
    let config = |uri: &str| {
        format!(
            "mongodb:\n  uri: \"{uri}\"\n{}",
            config_with_webhook(&hook.url, "  interval: 1s\n  failureThreshold: 3")
        )
    };
    s.write(
        "dcb.yaml",
        &config(&format!(
            "mongodb://127.0.0.1:{closed}/?serverSelectionTimeoutMS=200&connectTimeoutMS=200"
        )),
    );
    s.write("policies/p.yaml", &policy("p", &db, "* * * * * *"));
    let id = format!("p/{db}/api_logs");
    write_state(&s, &id, chrono::Utc::now() - chrono::TimeDelta::hours(1));
    let serve = Serve::start_with(&s, None, &[]);
    let (failures, stale) = (format!("failures:{id}"), format!("stale:{id}"));
    eventually(30, "the failures and stale alerts", || {
        (count(&hook, "failure", &failures) == 1 && count(&hook, "failure", &stale) == 1)
            .then_some(())
    });
    let first = alerts(&hook)
        .into_iter()
        .find(|a| a["key"] == failures.as_str())
        .unwrap();
    assert_eq!(
        first["title"],
        format!("{id}: 3 consecutive failures"),
        "the first failures alert comes at the threshold: {first}"
    );
    assert!(
        first["message"]
            .as_str()
            .unwrap()
            .contains("server unreachable"),
        "{first}"
    );
    let stale_alert = alerts(&hook)
        .into_iter()
        .find(|a| a["key"] == stale.as_str())
        .unwrap();
    assert!(
        stale_alert["title"]
            .as_str()
            .unwrap()
            .contains("no successful backup for"),
        "{stale_alert}"
    );

    // The server is back (dcb.yaml names the live one): both resolve.
    s.write("dcb.yaml", &config(&uri));
    eventually(30, "both alerts resolved", || {
        (count(&hook, "resolved", &failures) == 1 && count(&hook, "resolved", &stale) == 1)
            .then_some(())
    });
    let resolved: Vec<serde_json::Value> = alerts(&hook)
        .into_iter()
        .filter(|a| a["kind"] == "resolved")
        .collect();
    let message = |key: &str| {
        resolved
            .iter()
            .find(|a| a["key"] == key)
            .map(|a| a["message"].as_str().unwrap().to_string())
            .unwrap()
    };
    assert_eq!(message(&failures), format!("{id} backed up again"));
    assert_eq!(message(&stale), format!("{stale}: resolved"));
    assert!(runs_of(&serve.root, &id) > 5, "a run succeeded");
    assert_eq!(count(&hook, "failure", &failures), 1, "no repeat");
    drop(serve);
}

/// Free and total bytes of the file system holding `path`, from statvfs(2).
#[cfg(unix)]
fn disk_space(path: &Path) -> (u64, u64) {
    use std::os::unix::ffi::OsStrExt;
    let c = std::ffi::CString::new(path.as_os_str().as_bytes()).unwrap();
    // SAFETY: statvfs writes into the zeroed struct it is given; the path is a valid
    // NUL-terminated string.
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    let rc = unsafe { libc::statvfs(c.as_ptr(), &mut st) };
    assert_eq!(rc, 0, "statvfs {}", path.display());
    let frsize = st.f_frsize as u64;
    (st.f_bavail as u64 * frsize, st.f_blocks as u64 * frsize)
}

// The disk checks of the service: with `minFreeMB` above what is free, `disk:free`
// alerts with the backup disk's real free share; with a retention that would keep
// ten times the free space of archives at the current size, `disk:forecast` alerts.
// Thresholds and retention set back to sensible values resolve both.
#[cfg(unix)]
#[tokio::test]
async fn disk_space_and_forecast_alert_then_resolve() {
    let uri = support::server().uri.clone();
    let db = support::unique_db("disk");
    seed(&uri, &db, 10).await;
    let hook = Recorder::start();
    let s = Scratch::new();
    s.write("policies/p.yaml", &policy("p", &db, "* * * * * *"));
    // One archive first, to know what an archive of this collection weighs.
    let run = Run::from(
        s.dcb()
            .args(["run", "--all"])
            .env("DCB_MONGODB_URI", &uri)
            .output()
            .unwrap(),
    );
    assert_eq!(run.code, 0, "{}{}", run.stdout, run.stderr);
    let archive = support::archives(&s.path().join("backups"), "p", "api_logs").remove(0);
    let size = std::fs::metadata(&archive).unwrap().len();
    let (free, total) = disk_space(s.path());
    // Every second, kept this long: ten times the free space of such archives.
    let retention = (10 * free / size + 1).div_ceil(86_400);
    s.write(
        "policies/p.yaml",
        &policy("p", &db, "* * * * * *")
            .replace("retention: 1h", &format!("retention: {retention}d")),
    );
    let health = |mb: u64, percent: u64| {
        config_with_webhook(
            &hook.url,
            &format!("  interval: 1s\n  minFreeMB: {mb}\n  minFreePercent: {percent}"),
        )
    };
    s.write("dcb.yaml", &health(free / 1_048_576 * 2 + 1024, 0));
    let serve = Serve::start(&s, &uri, &[]);
    eventually(30, "disk:free and disk:forecast alerts", || {
        (count(&hook, "failure", "disk:free") == 1 && count(&hook, "failure", "disk:forecast") == 1)
            .then_some(())
    });
    let low = alerts(&hook)
        .into_iter()
        .find(|a| a["key"] == "disk:free")
        .unwrap();
    // "backup disk low: 42.3% (12.34 GB) free": the share of this disk.
    let title = low["title"].as_str().unwrap();
    let shown: f64 = title
        .strip_prefix("backup disk low: ")
        .and_then(|t| t.split('%').next())
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("{title}"));
    // Other processes write to this disk too: between the readings before and now.
    let (free_now, _) = disk_space(s.path());
    let share = |b: u64| b as f64 * 100.0 / total as f64;
    let (lo, hi) = (share(free.min(free_now)), share(free.max(free_now)));
    assert!(
        shown > lo - 0.5 && shown < hi + 0.5,
        "{title}: this disk had {lo:.1}% to {hi:.1}% free"
    );
    let forecast = alerts(&hook)
        .into_iter()
        .find(|a| a["key"] == "disk:forecast")
        .unwrap();
    assert!(
        forecast["title"]
            .as_str()
            .unwrap()
            .starts_with("backups will need "),
        "{forecast}"
    );

    s.write("dcb.yaml", &health(1, 0));
    s.write("policies/p.yaml", &policy("p", &db, "* * * * * *"));
    eventually(30, "both disk alerts resolved", || {
        (count(&hook, "resolved", "disk:free") == 1
            && count(&hook, "resolved", "disk:forecast") == 1)
            .then_some(())
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

/// Garbage where a policy should be.
const GARBAGE: &str = "name: first\nschedule: [not, a, cron\n";

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

// After downtime the service catches up once at start-up, not once per missed tick:
// with the last success 13 h ago and a 6-hourly schedule, exactly one run starts, and
// its runStart event names the policy.
#[tokio::test]
async fn catches_up_once_after_downtime() {
    let uri = support::server().uri.clone();
    let db = support::unique_db("catchup");
    seed(&uri, &db, 10).await;
    let hook = Recorder::start();
    let s = Scratch::new();
    s.write(
        "dcb.yaml",
        &format!(
            "alerts:\n  notifiers:\n    - type: webhook\n      url: {}\n      events: [runStart]\n",
            hook.url
        ),
    );
    s.write("policies/p.yaml", &policy("p", &db, "0 0 */6 * * *"));
    let id = format!("p/{db}/api_logs");
    write_state(&s, &id, chrono::Utc::now() - chrono::TimeDelta::hours(13));
    let serve = Serve::start(&s, &uri, &[]);
    eventually(20, "the catch-up run", || {
        (runs_of(&serve.root, &id) == 6).then_some(())
    });
    // Every catch-up starts before the service says it has started.
    eventually(10, "the service to start", || {
        serve.log().contains("dcb service started").then_some(())
    });
    let start = hook.wait_for(10, "a runStart event", |b| b.contains("runStart"));
    let start: serde_json::Value = serde_json::from_str(&start).unwrap();
    assert_eq!(start["policy"], "p", "{start}");
    assert!(
        start["message"].as_str().unwrap().contains("catch-up"),
        "{start}"
    );
    let log = serve.log();
    let started: Vec<&str> = log.lines().filter(|l| l.contains("run started")).collect();
    assert_eq!(started.len(), 1, "{log}");
    assert!(started[0].contains("reason=catch-up"), "{log}");
    assert_eq!(hook.bodies().len(), 1, "{:#?}", hook.bodies());
    assert_eq!(runs_of(&serve.root, &id), 6);
}

// SIGHUP reloads: a change the file watcher cannot see (dcb.yaml is a link to a file
// elsewhere, edited there) takes effect on SIGHUP.
#[cfg(unix)]
#[tokio::test]
async fn sighup_reloads() {
    let uri = support::server().uri.clone();
    let db = support::unique_db("hup");
    seed(&uri, &db, 10).await;
    let s = Scratch::new();
    s.write("conf/real.yaml", "policiesDir: policies-a\n");
    std::os::unix::fs::symlink(s.path().join("conf/real.yaml"), s.path().join("dcb.yaml")).unwrap();
    s.write("policies-a/a.yaml", &policy("a", &db, "*/2 * * * * *"));
    s.write("policies-b/b.yaml", &policy("b", &db, "*/2 * * * * *"));
    let serve = Serve::start(&s, &uri, &[]);
    let (a, b) = (format!("a/{db}/api_logs"), format!("b/{db}/api_logs"));
    eventually(15, "a to run", || {
        (runs_of(&serve.root, &a) >= 1).then_some(())
    });
    s.write("conf/real.yaml", "policiesDir: policies-b\n");
    serve.signal("HUP");
    eventually(15, "b to run after SIGHUP", || {
        (runs_of(&serve.root, &b) >= 1).then_some(())
    });
    let log = serve.log();
    let reloads: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("loading policies"))
        .collect();
    assert!(reloads.iter().any(|l| l.contains("reason=SIGHUP")), "{log}");
    assert!(
        !reloads.iter().any(|l| l.contains("file change")),
        "the watcher saw the edit, so this proves nothing: {log}"
    );
}

// dcb.yaml edits while serving: a policy with no database anywhere raises
// `config:p`; an invalid dcb.yaml is rejected with an alert (through the alerts
// settings it would have replaced) while the old settings keep the other policy
// running; mending it, now with a database, resolves both alerts and p runs.
#[tokio::test]
async fn invalid_config_edits_keep_the_old_settings() {
    let uri = support::server().uri.clone();
    let db = support::unique_db("cfg");
    seed(&uri, &db, 10).await;
    let hook = Recorder::start();
    let s = Scratch::new();
    let good = config_with_webhook(&hook.url, "  interval: 1h");
    s.write("dcb.yaml", &good);
    s.write(
        "policies/p.yaml",
        "name: p\nschedule: \"*/2 * * * * *\"\nwindow: {initial: all, settle: 0s}\n\
         collections: [api_logs]\nretention: 1h\n",
    );
    s.write("policies/q.yaml", &policy("q", &db, "*/2 * * * * *"));
    let serve = Serve::start(&s, &uri, &[]);
    let down = hook.wait_for(15, "a config:p alert", |b| {
        b.contains(r#""key":"config:p""#) && b.contains(r#""kind":"failure""#)
    });
    assert!(down.contains("names no database"), "{down}");
    assert!(down.contains(r#""policy":"p""#), "{down}");

    s.write("dcb.yaml", "health: [not, a, mapping\n");
    hook.wait_for(15, "a dcb.yaml alert", |b| {
        b.contains(r#""key":"config""#) && b.contains(r#""kind":"failure""#)
    });
    let q = format!("q/{db}/api_logs");
    let before = runs_of(&serve.root, &q);
    eventually(15, "q to keep running", || {
        (runs_of(&serve.root, &q) >= before + 2).then_some(())
    });

    s.write("dcb.yaml", &format!("database: {db}\n{good}"));
    for key in ["config", "config:p"] {
        hook.wait_for(15, "a resolved alert", |b| {
            b.contains(&format!(r#""key":"{key}""#)) && b.contains(r#""kind":"resolved""#)
        });
    }
    eventually(15, "p to run", || {
        (runs_of(&serve.root, &format!("p/{db}/api_logs")) >= 1).then_some(())
    });
    assert_eq!(count(&hook, "failure", "config"), 1);
    assert_eq!(count(&hook, "failure", "config:p"), 1);
}

// With neither the policies folder nor dcb.yaml there at start, the service waits for
// them: a folder made later with a policy in it runs, and a dcb.yaml created later is
// read (its webhook gets the next success).
#[tokio::test]
async fn folders_and_config_that_appear_later_are_watched() {
    let uri = support::server().uri.clone();
    let db = support::unique_db("appear");
    seed(&uri, &db, 10).await;
    let s = Scratch::new();
    std::fs::remove_dir(s.path().join("policies")).unwrap();
    let serve = Serve::start(&s, &uri, &[]);
    s.write("policies/p.yaml", &policy("p", &db, "*/2 * * * * *"));
    let id = format!("p/{db}/api_logs");
    eventually(20, "the new folder's policy to run", || {
        (runs_of(&serve.root, &id) >= 1).then_some(())
    });
    let hook = Recorder::start();
    s.write(
        "dcb.yaml",
        &format!(
            "alerts:\n  notifiers:\n    - type: webhook\n      url: {}\n      events: [success]\n",
            hook.url
        ),
    );
    hook.wait_for(20, "a success event from the new dcb.yaml", |b| {
        b.contains(r#""kind":"success""#)
    });
}

// An invalid policy file alerts when it breaks and when its content changes while
// broken, not again at every reload (here with no cool-down to hide repeats).
#[tokio::test]
async fn invalid_files_alert_only_when_they_change() {
    let uri = support::server().uri.clone();
    let db = support::unique_db("realert");
    seed(&uri, &db, 10).await;
    let hook = Recorder::start();
    let s = Scratch::new();
    s.write(
        "dcb.yaml",
        &format!(
            "alerts:\n  cooldown: 0s\n  notifiers:\n    - type: webhook\n      url: {}\n",
            hook.url
        ),
    );
    s.write("policies/a.yaml", &policy("a", &db, "0 0 1 1 *"));
    let serve = Serve::start(&s, &uri, &[]);
    let key = "invalid-policy:policies/a.yaml";
    s.write("policies/a.yaml", GARBAGE);
    eventually(15, "an alert for a.yaml", || {
        (count(&hook, "failure", key) == 1).then_some(())
    });
    // Another file's change reloads everything; a.yaml is unchanged.
    s.write("policies/b.yaml", &policy("b", &db, "*/2 * * * * *"));
    eventually(15, "b to run", || {
        (runs_of(&serve.root, &format!("b/{db}/api_logs")) >= 1).then_some(())
    });
    assert_eq!(count(&hook, "failure", key), 1, "{:#?}", hook.bodies());
    s.write("policies/a.yaml", "name: a\nschedule: 12\n");
    eventually(15, "a second alert for the changed a.yaml", || {
        (count(&hook, "failure", key) == 2).then_some(())
    });
}

// A policy that another process (a `dcb run`) is running is not run twice and not a
// failure: counted as `locked`, no failure alert. Health checks still see it go stale,
// though another policy (disabled, with no database anywhere) does not compile.
#[tokio::test]
async fn a_locked_policy_is_no_failure_and_health_sees_past_a_bad_policy() {
    let uri = support::server().uri.clone();
    let db = support::unique_db("locked");
    seed(&uri, &db, 10).await;
    let hook = Recorder::start();
    let s = Scratch::new();
    s.write(
        "dcb.yaml",
        &config_with_webhook(&hook.url, "  interval: 1s\n  failureThreshold: 1"),
    );
    s.write("policies/p.yaml", &policy("p", &db, "* * * * * *"));
    s.write(
        "policies/off.yaml",
        "name: off\nenabled: false\nschedule: \"0 * * * *\"\ncollections: [x]\nretention: 1h\n",
    );
    let held = dcb::storage::try_lock(&s.path().join("backups/p/.dcb.lock"))
        .unwrap()
        .expect("the lock is free");
    let serve = Serve::start(&s, &uri, &["--http", "127.0.0.1:0"]);
    let addr = serve.http();
    let id = format!("p/{db}/api_logs");
    let labels = [("policy", "p"), ("result", "locked")];
    eventually(20, "two locked runs", || {
        (metric(&addr, "dcb_runs_total", &labels)? >= 2.0).then_some(())
    });
    hook.wait_for(20, "a stale alert", |b| {
        b.contains(&format!(r#""key":"stale:{id}""#))
    });
    assert!(metric(&addr, "dcb_runs_total", &[("result", "failure")]).is_none());
    assert_eq!(count(&hook, "failure", &format!("failures:{id}")), 0);
    assert_eq!(runs_of(&serve.root, &id), 0);

    drop(held);
    eventually(20, "a run once the lock is free", || {
        (runs_of(&serve.root, &id) >= 1).then_some(())
    });
}

// With the database down at start-up, the first health check runs at once (not after
// `health.interval`, an hour here): /healthz answers 503 and an alert goes out. The
// admin endpoint given as a bare port listens on loopback.
#[tokio::test]
async fn database_down_at_start_is_seen_at_once() {
    let hook = Recorder::start();
    let s = Scratch::new();
    let closed = support::free_port();
    s.write(
        "dcb.yaml",
        &format!(
            "mongodb:\n  uri: mongodb://127.0.0.1:{closed}/?serverSelectionTimeoutMS=1000\n{}",
            config_with_webhook(&hook.url, "  interval: 1h")
        ),
    );
    s.write("policies/p.yaml", &policy("p", "db", "0 0 1 1 *"));
    let port = support::free_port();
    let serve = Serve::start_with(&s, None, &["--http", &format!(":{port}")]);
    assert_eq!(serve.http(), format!("127.0.0.1:{port}"));
    let down = hook.wait_for(30, "a database alert", |b| {
        b.contains(r#""key":"database""#) && b.contains(r#""kind":"failure""#)
    });
    assert!(down.contains("unreachable"), "{down}");
    eventually(10, "/healthz to say unhealthy", || {
        (http_get(&serve.http(), "/healthz").0 == 503).then_some(())
    });
}

// The health check's connection follows dcb.yaml: fixing the URI there resolves the
// database alert (the client built for the old URI is dropped).
#[tokio::test]
async fn health_checks_follow_a_changed_uri() {
    let uri = support::server().uri.clone();
    let hook = Recorder::start();
    let s = Scratch::new();
    let health = "  interval: 1s";
    let closed = support::free_port();
    s.write(
        "dcb.yaml",
        &format!(
            "mongodb:\n  uri: mongodb://127.0.0.1:{closed}/?serverSelectionTimeoutMS=500\n{}",
            config_with_webhook(&hook.url, health)
        ),
    );
    s.write("policies/p.yaml", &policy("p", "db", "0 0 1 1 *"));
    let _serve = Serve::start_with(&s, None, &[]);
    hook.wait_for(30, "a database alert", |b| {
        b.contains(r#""key":"database""#) && b.contains(r#""kind":"failure""#)
    });
    s.write(
        "dcb.yaml",
        &format!(
            "mongodb:\n  uri: \"{uri}\"\n{}",
            config_with_webhook(&hook.url, health)
        ),
    );
    hook.wait_for(30, "the database alert resolved", |b| {
        b.contains(r#""key":"database""#) && b.contains(r#""kind":"resolved""#)
    });
}

// What the service knew before a restart is picked up: the last success shows in
// /metrics before any run, and an alert still active for a policy that has since been
// removed resolves, saying so.
#[tokio::test]
async fn state_from_before_a_restart_is_picked_up() {
    let uri = support::server().uri.clone();
    let db = support::unique_db("restart");
    let hook = Recorder::start();
    let s = Scratch::new();
    s.write(
        "dcb.yaml",
        &config_with_webhook(&hook.url, "  interval: 1h"),
    );
    s.write("policies/p.yaml", &policy("p", &db, "0 0 1 1 *"));
    let last = chrono::Utc::now() - chrono::TimeDelta::minutes(1);
    write_state(&s, &format!("p/{db}/api_logs"), last);
    let gone = "failures:gone/db/api_logs";
    s.write(
        "backups/logs/alerts-state.json",
        &serde_json::json!({"active": [gone], "lastRaised": {gone: last}}).to_string(),
    );
    let serve = Serve::start(&s, &uri, &["--http", "127.0.0.1:0"]);
    let resolved = hook.wait_for(20, "the removed policy's alert resolved", |b| {
        b.contains(&format!(r#""key":"{gone}""#))
    });
    assert!(resolved.contains(r#""kind":"resolved""#), "{resolved}");
    assert!(resolved.contains("policy `gone` was removed"), "{resolved}");
    let seen = metric(
        &serve.http(),
        "dcb_last_success_timestamp_seconds",
        &[("policy", "p"), ("collection", "api_logs")],
    );
    assert_eq!(seen, Some(last.timestamp() as f64));
}

// A collection created while the service runs is reported as uncovered within one
// health interval (one alert naming it); a pattern added to a policy covers it and
// resolves the alert, and the next runs back it up.
#[tokio::test]
async fn a_new_collection_is_reported_until_a_pattern_covers_it() {
    let uri = support::server().uri.clone();
    let db = support::unique_db("uncovered");
    seed(&uri, &db, 5).await;
    let hook = Recorder::start();
    let s = Scratch::new();
    s.write(
        "dcb.yaml",
        &config_with_webhook(&hook.url, "  interval: 1s")
            .replace("alerts:\n", "exclude: [\"scratch_*\"]\nalerts:\n"),
    );
    s.write("policies/p.yaml", &policy("p", &db, "* * * * * *"));
    let serve = Serve::start(&s, &uri, &[]);
    let key = format!("uncovered:{db}");
    // Everything is covered at first: the health checks find nothing to report.
    eventually(30, "the first backup", || {
        (!support::archives(&serve.root, "p", "api_logs").is_empty()).then_some(())
    });
    std::thread::sleep(std::time::Duration::from_secs(2));
    assert_eq!(count(&hook, "failure", &key), 0, "{:?}", alerts(&hook));

    let client = mongodb::Client::with_uri_str(&uri).await.unwrap();
    let database = client.database(&db);
    database.create_collection("line_logs").await.unwrap();
    database.create_collection("scratch_tmp").await.unwrap();
    database
        .collection::<Document>("line_logs")
        .insert_one(doc! {"createdAt": mongodb::bson::DateTime::now(), "line": 3})
        .await
        .unwrap();
    let alert = eventually(10, "an uncovered alert", || {
        alerts(&hook)
            .into_iter()
            .find(|a| a["kind"] == "failure" && a["key"] == key.as_str())
    });
    let text = alert.to_string();
    assert!(text.contains(&format!("{db}.line_logs")), "{text}");
    assert!(!text.contains("scratch_tmp"), "excluded: {text}");

    // A pattern now covers it: resolved, and backed up.
    s.write(
        "policies/p.yaml",
        &policy("p", &db, "* * * * * *").replace("[api_logs]", "[api_logs, \"*_logs\"]"),
    );
    eventually(30, "the uncovered alert resolved", || {
        (count(&hook, "resolved", &key) == 1).then_some(())
    });
    eventually(30, "line_logs backed up by the pattern", || {
        (!support::archives(&serve.root, "p", "line_logs").is_empty()).then_some(())
    });
    assert_eq!(count(&hook, "failure", &key), 1, "{:?}", alerts(&hook));
    drop(serve);
}
