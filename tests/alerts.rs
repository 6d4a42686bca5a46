//! Alerts reach real endpoints on loopback: webhook, Slack, DingTalk (signed), WeCom,
//! Feishu (signed) over HTTP, and email over SMTP; with cool-down, resolve and event
//! filtering; a dead notifier never holds up the others.

mod support;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use dcb::alert::{Alert, Alerter, AlertsConfig, EventKind};
use support::Recorder;

fn config(yaml: &str) -> AlertsConfig {
    serde_yaml::from_str(yaml).unwrap()
}

fn failure(key: &str) -> Alert {
    let mut a = Alert::new(
        EventKind::Failure,
        key,
        format!("{key} is failing"),
        "server unreachable",
    );
    a.policy = Some("hot".into());
    a.collection = Some("api_logs".into());
    a
}

// Each chat notifier gets its own payload shape; the DingTalk signature verifies;
// Feishu's body carries timestamp and sign; the webhook gets the alert itself.
#[tokio::test]
async fn every_http_notifier_gets_its_payload() {
    let r = Recorder::start();
    let url = &r.url;
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(&format!(
        "notifiers:\n\
         - {{type: webhook, url: '{url}?to=webhook', headers: {{X-Token: abc}}}}\n\
         - {{type: slack, url: '{url}?to=slack'}}\n\
         - {{type: dingtalk, url: '{url}?access_token=t', secret: SECtest}}\n\
         - {{type: wecom, url: '{url}?key=k'}}\n\
         - {{type: feishu, url: '{url}?to=feishu', secret: SECtest}}\n"
    ));
    let alerter = Alerter::new(&cfg, dir.path().join("alerts.log")).unwrap();
    alerter.raise(failure("failures:hot/db/api_logs")).await;
    alerter.flush().await;
    let reqs = r.requests();
    assert_eq!(reqs.len(), 5, "{reqs:#?}");
    let find = |marker: &str| {
        reqs.iter()
            .find(|(line, _)| line.contains(marker))
            .unwrap_or_else(|| panic!("{marker}: {reqs:#?}"))
            .clone()
    };

    let (_, body) = find("to=webhook");
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["kind"], "failure");
    assert_eq!(v["key"], "failures:hot/db/api_logs");
    assert_eq!(v["policy"], "hot");

    let (_, body) = find("to=slack");
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert!(
        v["text"]
            .as_str()
            .unwrap()
            .starts_with("[dcb] failures:hot/db/api_logs is failing")
    );

    let (line, body) = find("access_token=t");
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["msgtype"], "text");
    assert!(
        v["text"]["content"]
            .as_str()
            .unwrap()
            .contains("server unreachable")
    );
    let query = line
        .split_whitespace()
        .nth(1)
        .unwrap()
        .split_once('?')
        .unwrap()
        .1;
    let param = |k: &str| {
        query
            .split('&')
            .find_map(|p| p.strip_prefix(&format!("{k}=")))
            .unwrap()
            .to_string()
    };
    let ts: i64 = param("timestamp").parse().unwrap();
    assert!((chrono::Utc::now().timestamp_millis() - ts).abs() < 60_000);
    assert_eq!(
        param("sign"),
        dcb::alert::deliver::dingtalk_sign("SECtest", ts)
    );

    let (_, body) = find("key=k");
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["msgtype"], "text");

    let (_, body) = find("to=feishu");
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["msg_type"], "text");
    let ts: i64 = v["timestamp"].as_str().unwrap().parse().unwrap();
    assert_eq!(v["sign"], dcb::alert::deliver::feishu_sign("SECtest", ts));

    let log = std::fs::read_to_string(dir.path().join("alerts.log")).unwrap();
    assert_eq!(log.lines().count(), 1);
}

// Repeats within the cool-down are held back; resolve sends once, and only after a
// raise; notifiers get only the events they asked for; alerts.log has a line for
// each failure and resolution sent.
#[tokio::test]
async fn cooldown_resolve_and_event_filter() {
    let r = Recorder::start();
    let ping = Recorder::start();
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(&format!(
        "cooldown: 1h\nnotifiers:\n- {{type: webhook, url: '{}'}}\n- {{type: webhook, url: '{}', events: [success]}}\n",
        r.url, ping.url
    ));
    let alerter = Alerter::new(&cfg, dir.path().join("alerts.log")).unwrap();
    alerter.resolve("database", "never raised".into()).await;
    alerter.raise(failure("database")).await;
    alerter.raise(failure("database")).await;
    alerter.raise(failure("stale:x")).await;
    alerter.resolve("database", "back".into()).await;
    alerter.resolve("database", "again".into()).await;
    alerter
        .notify(Alert::new(
            EventKind::Success,
            "success:x",
            "x backed up",
            "10 documents",
        ))
        .await;
    alerter.flush().await;
    let kinds: Vec<(String, String)> = r
        .bodies()
        .iter()
        .map(|b| {
            let v: serde_json::Value = serde_json::from_str(b).unwrap();
            (
                v["kind"].as_str().unwrap().to_string(),
                v["key"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    let mut sorted = kinds.clone();
    sorted.sort();
    assert_eq!(
        sorted,
        [
            ("failure".into(), "database".into()),
            ("failure".into(), "stale:x".into()),
            ("resolved".into(), "database".into())
        ]
    );
    assert_eq!(alerter.throttled(), 1);
    let pings = ping.bodies();
    assert_eq!(pings.len(), 1, "{pings:?}");
    assert!(pings[0].contains("\"success\""));
    let log = std::fs::read_to_string(dir.path().join("alerts.log")).unwrap();
    assert_eq!(log.lines().count(), 3, "{log}");
}

// A notifier at a closed port is retried and given up on; the others still deliver,
// and raising never waits for delivery.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_notifier_does_not_block_others() {
    let r = Recorder::start();
    let dead = format!("http://127.0.0.1:{}/", support::free_port());
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(&format!(
        "notifiers:\n- {{type: slack, url: '{dead}'}}\n- {{type: webhook, url: '{}'}}\n",
        r.url
    ));
    let alerter = Alerter::new(&cfg, dir.path().join("alerts.log")).unwrap();
    let t = Instant::now();
    alerter.raise(failure("database")).await;
    assert!(
        t.elapsed() < Duration::from_millis(200),
        "raise waited for delivery"
    );
    r.wait_for(5, "the live notifier's delivery", |b| {
        b.contains("database")
    });
    let t = Instant::now();
    alerter.flush().await;
    assert!(t.elapsed() < Duration::from_secs(10), "retries are bounded");
}

// Email goes through a real SMTP server on loopback, authenticated.
#[tokio::test]
async fn email_reaches_a_real_smtp_server() {
    let python =
        support::venv_python().unwrap_or_else(|| panic!("{}", support::HOW_TO_GET_A_SERVER));
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("mail.jsonl");
    let mut sink = Command::new(python)
        .arg(support::project_root().join("tests/support/smtp_sink.py"))
        .arg(&out)
        .args(["dcb", "s3cret"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(sink.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let port: u16 = line
        .trim()
        .strip_prefix("READY ")
        .unwrap_or_else(|| {
            panic!("smtp sink said {line:?} (is aiosmtpd installed? run scripts/setup-test-env.sh)")
        })
        .parse()
        .unwrap();
    let cfg = config(&format!(
        "notifiers:\n- {{type: email, host: 127.0.0.1, port: {port}, tls: none, username: dcb, password: s3cret, \
         from: dcb@factory.local, to: [ops@factory.local, it@factory.local]}}\n"
    ));
    let alerter = Alerter::new(&cfg, dir.path().join("alerts.log")).unwrap();
    alerter.raise(failure("failures:hot/db/api_logs")).await;
    alerter.flush().await;
    drop(sink.stdin.take());
    let _ = sink.wait();
    let mail = std::fs::read_to_string(&out).unwrap_or_default();
    let v: serde_json::Value = serde_json::from_str(mail.lines().next().unwrap_or("{}")).unwrap();
    assert_eq!(v["from"], "dcb@factory.local", "{mail}");
    assert_eq!(
        v["to"],
        serde_json::json!(["ops@factory.local", "it@factory.local"])
    );
    assert_eq!(v["authenticated"], true);
    let data = v["data"].as_str().unwrap();
    assert!(
        data.contains("Subject: [dcb] failures:hot/db/api_logs is failing"),
        "{data}"
    );
    assert!(data.contains("server unreachable"), "{data}");
}
