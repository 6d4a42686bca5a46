//! Alerts reach real endpoints on loopback: webhook, Slack, DingTalk (signed), WeCom
//! and Feishu (signed) over HTTP to a recording axum server, and email over SMTP to
//! aiosmtpd; with cool-down, resolve, event filtering, retries, and a dead notifier
//! that never holds up the others.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::State;
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use dcb::alert::{Alert, AlertKey, Alerter, AlertsConfig, EventKind};
use hmac::{Hmac, Mac};
use serde_json::Value;
use sha2::Sha256;

/// One request the recorder received.
#[derive(Debug, Clone)]
struct Recorded {
    method: String,
    path: String,
    query: String,
    headers: BTreeMap<String, String>,
    body: String,
}

impl Recorded {
    fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("{e}: {self:#?}"))
    }

    fn param(&self, key: &str) -> Option<String> {
        self.query
            .split('&')
            .find_map(|p| p.strip_prefix(&format!("{key}=")))
            .map(str::to_string)
    }
}

type Log = Arc<Mutex<Vec<Recorded>>>;

/// An HTTP server on 127.0.0.1 that records every request. It answers like the chat
/// robots do: `/robot-error` gets HTTP 200 with errcode 310000 (bad signature),
/// `/robot-busy` HTTP 200 with errcode 130101 (rate limit), `/bad-request` HTTP 400,
/// everything else HTTP 200 `{"errcode":0,"errmsg":"ok"}`.
struct Recorder {
    base: String,
    log: Log,
}

impl Recorder {
    async fn start() -> Recorder {
        async fn record(
            State(log): State<Log>,
            method: Method,
            uri: Uri,
            headers: HeaderMap,
            body: String,
        ) -> Response {
            let path = uri.path().to_string();
            log.lock().unwrap().push(Recorded {
                method: method.to_string(),
                path: path.clone(),
                query: uri.query().unwrap_or_default().to_string(),
                headers: headers
                    .iter()
                    .map(|(k, v)| (k.to_string(), v.to_str().unwrap_or("?").to_string()))
                    .collect(),
                body,
            });
            match path.as_str() {
                "/robot-error" => r#"{"errcode":310000,"errmsg":"sign not match"}"#.into_response(),
                "/robot-busy" => r#"{"errcode":130101,"errmsg":"send too fast"}"#.into_response(),
                "/bad-request" => (StatusCode::BAD_REQUEST, "no").into_response(),
                _ => r#"{"errcode":0,"errmsg":"ok"}"#.into_response(),
            }
        }
        let log = Log::default();
        let app = axum::Router::new().fallback(record).with_state(log.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        Recorder { base, log }
    }

    fn url(&self, path_and_query: &str) -> String {
        format!("{}{path_and_query}", self.base)
    }

    fn requests(&self) -> Vec<Recorded> {
        self.log.lock().unwrap().clone()
    }

    fn at(&self, path: &str) -> Vec<Recorded> {
        self.requests()
            .into_iter()
            .filter(|r| r.path == path)
            .collect()
    }

    fn one(&self, path: &str) -> Recorded {
        let mut at = self.at(path);
        assert_eq!(at.len(), 1, "{path}: {:#?}", self.requests());
        at.remove(0)
    }
}

/// A loopback port nothing listens on.
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn config(yaml: &str) -> AlertsConfig {
    serde_yaml::from_str(yaml).unwrap()
}

fn key(name: &str) -> AlertKey {
    name.parse().unwrap()
}

fn failure(name: &str) -> Alert {
    let mut a = Alert::new(
        EventKind::Failure,
        key(name),
        format!("{name} is failing"),
        "server unreachable",
    );
    a.policy = Some("hot".into());
    a.collection = Some("api_logs".into());
    a
}

fn log_lines(path: &Path) -> Vec<Value> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

/// Written here, not by calling the library, so the test checks the scheme itself.
fn hmac_sha256_b64(key: &[u8], msg: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(key).unwrap();
    mac.update(msg);
    base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes())
}

// Each notifier type gets its own payload: the webhook the alert as JSON with its
// headers, Slack `text`, DingTalk a text message at a signed URL whose signature
// verifies, WeCom a text message, Feishu a text message with timestamp and sign in the
// body; alerts.log gets the one alert.
#[tokio::test]
async fn every_http_notifier_gets_its_payload() {
    let r = Recorder::start().await;
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("logs/alerts.log");
    let cfg = config(&format!(
        "notifiers:\n\
         - {{type: webhook, url: '{}', headers: {{X-Token: abc}}}}\n\
         - {{type: slack, url: '{}'}}\n\
         - {{type: dingtalk, url: '{}', secret: SECtest}}\n\
         - {{type: wecom, url: '{}'}}\n\
         - {{type: feishu, url: '{}', secret: SECfeishu}}\n",
        r.url("/webhook?x=1"),
        r.url("/slack"),
        r.url("/dingtalk?access_token=tok"),
        r.url("/wecom?key=k"),
        r.url("/feishu"),
    ));
    let alerter = Alerter::new(&cfg, log.clone()).unwrap();
    alerter.raise(failure("failures:hot/db/api_logs")).await;
    alerter.flush().await;
    assert_eq!(r.requests().len(), 5, "{:#?}", r.requests());
    assert!(
        r.requests()
            .iter()
            .all(|q| q.method == "POST" && q.headers["content-type"] == "application/json")
    );

    let hook = r.one("/webhook");
    assert_eq!(hook.query, "x=1");
    assert_eq!(hook.headers["x-token"], "abc");
    let v = hook.json();
    assert_eq!(v["kind"], "failure");
    assert_eq!(v["key"], "failures:hot/db/api_logs");
    assert_eq!(v["title"], "failures:hot/db/api_logs is failing");
    assert_eq!(v["message"], "server unreachable");
    assert_eq!(v["policy"], "hot");
    assert_eq!(v["collection"], "api_logs");
    assert!(v["host"].as_str().is_some_and(|h| !h.is_empty()));
    chrono::DateTime::parse_from_rfc3339(v["time"].as_str().unwrap()).unwrap();

    let text = r.one("/slack").json()["text"].as_str().unwrap().to_string();
    assert!(
        text.starts_with("[dcb] failures:hot/db/api_logs is failing\nserver unreachable\n"),
        "{text}"
    );
    assert!(text.contains("policy: hot") && text.contains("collection: api_logs"));
    assert!(text.contains("host: ") && text.contains("time: "));

    let ding = r.one("/dingtalk");
    let v = ding.json();
    assert_eq!(v["msgtype"], "text");
    assert_eq!(v["text"]["content"], text);
    assert_eq!(ding.param("access_token").as_deref(), Some("tok"));
    let ts = ding.param("timestamp").unwrap();
    let ts_ms: i64 = ts.parse().unwrap();
    assert!((chrono::Utc::now().timestamp_millis() - ts_ms).abs() < 60_000);
    let expected = hmac_sha256_b64(b"SECtest", format!("{ts}\nSECtest").as_bytes())
        .replace('+', "%2B")
        .replace('/', "%2F")
        .replace('=', "%3D");
    assert_eq!(ding.param("sign").unwrap(), expected);

    let v = r.one("/wecom").json();
    assert_eq!(v["msgtype"], "text");
    assert_eq!(v["text"]["content"], text);

    let v = r.one("/feishu").json();
    assert_eq!(v["msg_type"], "text");
    assert_eq!(v["content"]["text"], text);
    let ts = v["timestamp"].as_str().unwrap();
    let ts_s: i64 = ts.parse().unwrap();
    assert!((chrono::Utc::now().timestamp() - ts_s).abs() < 60);
    assert_eq!(
        v["sign"],
        hmac_sha256_b64(format!("{ts}\nSECfeishu").as_bytes(), b"")
    );

    let lines = log_lines(&log);
    assert_eq!(lines.len(), 1);
    assert_eq!(lines[0]["key"], "failures:hot/db/api_logs");
}

// Repeats within the cool-down are held back (counted, not sent, not logged); resolve
// sends once, and only after a raise; notifiers get only the events they asked for;
// success events are sent but not logged; alerts.log has one line per failure and
// resolution sent.
#[tokio::test]
async fn cooldown_resolve_and_event_filter() {
    let r = Recorder::start().await;
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("alerts.log");
    let cfg = config(&format!(
        "cooldown: 1h\nnotifiers:\n\
         - {{type: webhook, url: '{}'}}\n\
         - {{type: webhook, name: deadman, url: '{}', events: [success]}}\n",
        r.url("/problems"),
        r.url("/ping"),
    ));
    let alerter = Alerter::new(&cfg, log.clone()).unwrap();
    alerter
        .resolve(&key("database"), "never raised".into())
        .await;
    alerter.raise(failure("database")).await;
    alerter.raise(failure("database")).await;
    alerter.raise(failure("stale:x")).await;
    assert_eq!(alerter.active(), ["database", "stale:x"]);
    alerter.resolve(&key("database"), "back".into()).await;
    alerter.resolve(&key("database"), "again".into()).await;
    alerter
        .notify(Alert::new(
            EventKind::Success,
            key("success:x"),
            "x backed up",
            "10 documents",
        ))
        .await;
    alerter.flush().await;

    let mut sent: Vec<(String, String)> = r
        .at("/problems")
        .iter()
        .map(|q| {
            let v = q.json();
            (
                v["kind"].as_str().unwrap().to_string(),
                v["key"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    sent.sort();
    let expected = [
        ("failure".to_string(), "database".to_string()),
        ("failure".to_string(), "stale:x".to_string()),
        ("resolved".to_string(), "database".to_string()),
    ];
    assert_eq!(sent, expected);
    assert_eq!(alerter.throttled(), 1);
    assert_eq!(alerter.active(), ["stale:x"]);

    let pings = r.at("/ping");
    assert_eq!(pings.len(), 1, "{pings:#?}");
    assert_eq!(pings[0].json()["kind"], "success");

    let mut logged: Vec<(String, String)> = log_lines(&log)
        .iter()
        .map(|v| {
            (
                v["kind"].as_str().unwrap().to_string(),
                v["key"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    logged.sort();
    assert_eq!(logged, expected);

    // After a resolution the same condition alerts again at once.
    alerter.raise(failure("database")).await;
    alerter.flush().await;
    assert_eq!(r.at("/problems").len(), 4);
    assert_eq!(alerter.throttled(), 1);
}

// A notifier at a closed port is retried (1 s, then 2 s) and given up on; the others
// still deliver, raising never waits for delivery, and flush returns within the retry
// budget.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_notifier_does_not_block_others() {
    let r = Recorder::start().await;
    let closed = free_port();
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(&format!(
        "notifiers:\n\
         - {{type: slack, name: dead, url: 'http://127.0.0.1:{closed}/'}}\n\
         - {{type: webhook, url: '{}'}}\n",
        r.url("/live")
    ));
    let alerter = Alerter::new(&cfg, dir.path().join("alerts.log")).unwrap();
    let t = Instant::now();
    alerter.raise(failure("database")).await;
    assert!(
        t.elapsed() < Duration::from_millis(200),
        "raise waited for delivery"
    );
    let deadline = Instant::now() + Duration::from_secs(5);
    while r.at("/live").is_empty() {
        assert!(Instant::now() < deadline, "the live notifier got nothing");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(
        t.elapsed() < Duration::from_secs(1),
        "the live notifier waited for the dead one"
    );
    alerter.flush().await;
    let took = t.elapsed();
    assert!(took >= Duration::from_secs(3), "no back-off: {took:?}");
    assert!(
        took < Duration::from_secs(10),
        "retries unbounded: {took:?}"
    );
    assert_eq!(alerter.failed_deliveries(), 1);
    assert_eq!(r.at("/live").len(), 1);
}

/// Collects what tracing writes, for the current thread.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

// A robot that answers HTTP 200 with an error code is a failed delivery: a bad
// signature, token or keyword is reported at once (asking again cannot help), a rate
// limit is retried then reported; an HTTP 400 is reported without retrying; the
// warning names the notifier and its host, never its token, secret or path.
#[tokio::test] // current-thread: the deliveries run where the capturing subscriber is set
async fn robot_errors_are_reported_without_secrets() {
    let captured = Captured::default();
    let writer = captured.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_ansi(false)
        .with_writer(move || writer.clone())
        .finish();
    let _guard = tracing::subscriber::set_default(subscriber);

    let r = Recorder::start().await;
    let closed = free_port();
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(&format!(
        "notifiers:\n\
         - {{type: dingtalk, name: plant-ops, url: '{}', secret: SECverysecret}}\n\
         - {{type: webhook, name: rejected, url: '{}', headers: {{Authorization: Bearer hunter2}}}}\n\
         - {{type: slack, name: gone, url: 'http://127.0.0.1:{closed}/services/SLACKTOKEN'}}\n\
         - {{type: wecom, name: busy, url: '{}'}}\n",
        r.url("/robot-error?access_token=TOKEN123"),
        r.url("/bad-request"),
        r.url("/robot-busy?key=WECOMKEY"),
    ));
    let alerter = Alerter::new(&cfg, dir.path().join("alerts.log")).unwrap();
    alerter.raise(failure("database")).await;
    alerter.flush().await;

    assert_eq!(
        r.at("/robot-error").len(),
        1,
        "a bad signature is not retried"
    );
    assert_eq!(r.at("/robot-busy").len(), 3, "a rate limit is retried");
    assert_eq!(r.at("/bad-request").len(), 1, "HTTP 400 is not retried");
    assert_eq!(alerter.failed_deliveries(), 4);
    let logs = String::from_utf8(captured.0.lock().unwrap().clone()).unwrap();
    let warnings: Vec<&str> = logs
        .lines()
        .filter(|l| l.contains("could not be delivered"))
        .collect();
    assert_eq!(warnings.len(), 4, "{logs}");
    assert!(warnings.iter().any(|w| w.contains("plant-ops")
        && w.contains("310000")
        && w.contains("not retried")
        && w.contains("attempts=1")
        && w.contains(&r.base)));
    assert!(
        warnings
            .iter()
            .any(|w| w.contains("busy") && w.contains("130101") && w.contains("attempts=3"))
    );
    assert!(
        warnings
            .iter()
            .any(|w| w.contains("rejected") && w.contains("400"))
    );
    assert!(
        warnings
            .iter()
            .any(|w| w.contains("gone") && w.contains(&format!("127.0.0.1:{closed}"))),
        "{logs}"
    );
    for secret in [
        "SLACKTOKEN",
        "/services",
        "TOKEN123",
        "SECverysecret",
        "hunter2",
        "WECOMKEY",
        "robot-error",
        "sign=",
    ] {
        assert!(!logs.contains(secret), "{secret} leaked: {logs}");
    }
}

// A reconfigured alerter keeps the old one's memory: a condition raised before the
// change resolves after it, to the new notifiers; an invalid config is refused
// without quoting its URL.
#[tokio::test]
async fn reconfiguring_keeps_active_conditions() {
    let old = Recorder::start().await;
    let new = Recorder::start().await;
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("alerts.log");
    let alerter = Alerter::new(
        &config(&format!(
            "notifiers: [{{type: webhook, url: '{}'}}]",
            old.url("/")
        )),
        log.clone(),
    )
    .unwrap();
    alerter.raise(failure("database")).await;
    let alerter = alerter
        .reconfigured(
            &config(&format!(
                "cooldown: 5m\nnotifiers: [{{type: webhook, url: '{}'}}]",
                new.url("/")
            )),
            log.clone(),
        )
        .unwrap();
    alerter.raise(failure("database")).await;
    alerter.resolve(&key("database"), "back".into()).await;
    alerter.flush().await;
    assert_eq!(old.requests().len(), 1);
    let sent = new.requests();
    assert_eq!(sent.len(), 1, "{sent:#?}");
    assert_eq!(sent[0].json()["kind"], "resolved");
    assert_eq!(alerter.throttled(), 1);

    let err = alerter
        .reconfigured(
            &config("notifiers: [{type: wecom, url: 'qyapi/send?key=SECRETKEY'}]"),
            log,
        )
        .err()
        .expect("an invalid URL is refused")
        .to_string();
    assert!(err.contains("alerts/notifiers/0/url"), "{err}");
    assert!(!err.contains("SECRETKEY"), "{err}");
}

/// The aiosmtpd sink of tests/support/smtp_sink.py, stopped on drop.
struct SmtpSink {
    child: Child,
    port: u16,
    out: PathBuf,
}

impl SmtpSink {
    fn start(out: PathBuf, user: &str, password: &str) -> SmtpSink {
        SmtpSink::start_with(out, &[user, password])
    }

    /// With TLS: `mode` is `starttls` or `tls`, with the server's certificate and key.
    fn start_tls(out: PathBuf, mode: &str, cert: &Path, key: &Path) -> SmtpSink {
        let (cert, key) = (cert.to_str().unwrap(), key.to_str().unwrap());
        SmtpSink::start_with(out, &["dcb", "s3cret", mode, cert, key])
    }

    fn start_with(out: PathBuf, args: &[&str]) -> SmtpSink {
        let root = Path::new(env!("CARGO_MANIFEST_DIR"));
        let python = [".venv/bin/python", ".venv/Scripts/python.exe"]
            .iter()
            .map(|p| root.join(p))
            .find(|p| p.is_file())
            .unwrap_or_else(|| {
                panic!(
                    "no test environment at {}: run ./scripts/setup-test-env.sh (installs aiosmtpd)",
                    root.join(".venv").display()
                )
            });
        let mut child = Command::new(python)
            .arg(root.join("tests/support/smtp_sink.py"))
            .arg(&out)
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let port = line
            .trim()
            .strip_prefix("READY ")
            .and_then(|p| p.parse().ok())
            .unwrap_or_else(|| {
                panic!("the SMTP sink said {line:?}: run ./scripts/setup-test-env.sh (installs aiosmtpd)")
            });
        SmtpSink { child, port, out }
    }

    /// Stop the server and return the messages it received.
    fn stop(mut self) -> Vec<Value> {
        drop(self.child.stdin.take());
        let _ = self.child.wait();
        log_lines(&self.out)
    }
}

impl Drop for SmtpSink {
    fn drop(&mut self) {
        if self.child.try_wait().ok().flatten().is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

// Email goes through a real SMTP server on loopback (plain, AUTH required): the
// envelope names the sender and every recipient; the subject is the title; the body
// has the message, policy, collection, host and time.
#[tokio::test]
async fn email_reaches_a_real_smtp_server() {
    let dir = tempfile::tempdir().unwrap();
    let sink = SmtpSink::start(dir.path().join("mail.jsonl"), "dcb", "s3cret");
    let cfg = config(&format!(
        "notifiers:\n\
         - {{type: email, host: 127.0.0.1, port: {}, tls: none, username: dcb, password: s3cret, \
         from: 'dcb <dcb@factory.local>', to: [ops@factory.local, it@factory.local]}}\n",
        sink.port
    ));
    let alerter = Alerter::new(&cfg, dir.path().join("alerts.log")).unwrap();
    alerter.raise(failure("failures:hot/db/api_logs")).await;
    alerter.flush().await;
    assert_eq!(alerter.failed_deliveries(), 0);
    let mail = sink.stop();
    assert_eq!(mail.len(), 1, "{mail:#?}");
    let m = &mail[0];
    assert_eq!(m["from"], "dcb@factory.local");
    assert_eq!(
        m["to"],
        serde_json::json!(["ops@factory.local", "it@factory.local"])
    );
    assert_eq!(m["authenticated"], true);
    assert_eq!(m["login"], "dcb");
    let data = m["data"].as_str().unwrap().replace("\r\n", "\n");
    assert!(
        data.contains("Subject: [dcb] failures:hot/db/api_logs is failing\n"),
        "{data}"
    );
    assert!(
        data.contains("To: ops@factory.local, it@factory.local\n"),
        "{data}"
    );
    let body = data.split_once("\n\n").map(|(_, b)| b).unwrap_or_default();
    for part in [
        "server unreachable",
        "policy: hot",
        "collection: api_logs",
        "host: ",
        "time: ",
        "event: failure",
        "key: failures:hot/db/api_logs",
    ] {
        assert!(body.contains(part), "{part} missing from {body}");
    }
}

// A wrong SMTP password is a permanent failure: reported once, not retried, and the
// password is not in the report.
#[tokio::test]
async fn email_with_a_wrong_password_is_reported_once() {
    let dir = tempfile::tempdir().unwrap();
    let sink = SmtpSink::start(dir.path().join("mail.jsonl"), "dcb", "s3cret");
    let cfg = config(&format!(
        "notifiers:\n\
         - {{type: email, host: 127.0.0.1, port: {}, tls: none, username: dcb, password: wrong, \
         from: dcb@factory.local, to: [ops@factory.local]}}\n",
        sink.port
    ));
    let alerter = Alerter::new(&cfg, dir.path().join("alerts.log")).unwrap();
    let t = Instant::now();
    alerter.raise(failure("database")).await;
    alerter.flush().await;
    assert!(
        t.elapsed() < Duration::from_secs(1),
        "retried a permanent failure"
    );
    assert_eq!(alerter.failed_deliveries(), 1);
    assert!(sink.stop().is_empty());
}

/// A private CA and a certificate it issued for 127.0.0.1, as PEM files in `dir`:
/// (CA, certificate, key).
fn private_ca(dir: &Path) -> (PathBuf, PathBuf, PathBuf) {
    use rcgen::{BasicConstraints, CertificateParams, IsCa, KeyPair};
    let ca_key = KeyPair::generate().unwrap();
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "dcb test mail CA");
    let ca = ca_params.self_signed(&ca_key).unwrap();
    let key = KeyPair::generate().unwrap();
    let mut params =
        CertificateParams::new(vec!["127.0.0.1".to_string(), "localhost".to_string()]).unwrap();
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "127.0.0.1");
    let cert = params.signed_by(&key, &ca, &ca_key).unwrap();
    let paths = (
        dir.join("ca.pem"),
        dir.join("server.pem"),
        dir.join("server.key"),
    );
    std::fs::write(&paths.0, ca.pem()).unwrap();
    std::fs::write(&paths.1, cert.pem()).unwrap();
    std::fs::write(&paths.2, key.serialize_pem()).unwrap();
    paths
}

/// Email over `mode` (starttls or tls) to a server whose certificate a private CA
/// issued: delivered over TLS when `caFile` names the CA, refused without it.
async fn email_over_tls(mode: &str) {
    let dir = tempfile::tempdir().unwrap();
    let (ca, cert, key) = private_ca(dir.path());
    let sink = SmtpSink::start_tls(dir.path().join("mail.jsonl"), mode, &cert, &key);
    let notifier = |ca_file: &str| {
        config(&format!(
            "notifiers:\n\
             - {{type: email, host: 127.0.0.1, port: {}, tls: {mode}, username: dcb, \
             password: s3cret, {ca_file}from: dcb@factory.local, to: [ops@factory.local]}}\n",
            sink.port
        ))
    };
    let trusted = notifier(&format!("caFile: '{}', ", ca.display()));
    let alerter = Alerter::new(&trusted, dir.path().join("a/alerts.log")).unwrap();
    alerter.raise(failure("failures:hot/db/api_logs")).await;
    alerter.flush().await;
    assert_eq!(alerter.failed_deliveries(), 0);

    // The public roots do not know the private CA: refused for that reason (the
    // warning names the certificate's cause), not for any failure.
    let captured = Captured::default();
    let writer = captured.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_ansi(false)
        .with_writer(move || writer.clone())
        .finish();
    let guard = tracing::subscriber::set_default(subscriber);
    let untrusted = Alerter::new(&notifier(""), dir.path().join("b/alerts.log")).unwrap();
    untrusted.raise(failure("failures:hot/db/api_logs")).await;
    untrusted.flush().await;
    drop(guard);
    assert_eq!(untrusted.failed_deliveries(), 1);
    let logs = String::from_utf8(captured.0.lock().unwrap().clone()).unwrap();
    let warning = logs
        .lines()
        .find(|l| l.contains("could not be delivered"))
        .unwrap_or_else(|| panic!("no delivery warning: {logs}"));
    assert!(warning.contains("UnknownIssuer"), "{warning}");

    let mail = sink.stop();
    assert_eq!(mail.len(), 1, "{mail:#?}");
    assert_eq!(mail[0]["tls"], true, "{mail:#?}");
    assert_eq!(mail[0]["authenticated"], true);
    assert!(
        mail[0]["data"]
            .as_str()
            .unwrap()
            .contains("Subject: [dcb] failures:hot/db/api_logs is failing"),
        "{mail:#?}"
    );
}

// STARTTLS (the default) upgrades the connection before AUTH, trusting `caFile`.
#[tokio::test]
async fn email_over_starttls_with_a_private_ca() {
    email_over_tls("starttls").await;
}

// Implicit TLS (SMTPS) speaks TLS from the first byte, trusting `caFile`.
#[tokio::test]
async fn email_over_implicit_tls_with_a_private_ca() {
    email_over_tls("tls").await;
}

// An unreadable `caFile` is refused when the alerter is built, naming the field.
#[test]
fn a_missing_ca_file_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(
        "notifiers: [{type: email, host: h, caFile: /nonexistent/ca.pem, from: a@b.c, to: [d@e.f]}]",
    );
    let err = Alerter::new(&cfg, dir.path().join("alerts.log"))
        .err()
        .expect("refused")
        .to_string();
    assert!(err.contains("alerts/notifiers/0/caFile"), "{err}");
}

// The alerter remembers across a restart: a condition raised before it still resolves
// after it, and a repeat within the cool-down stays held back (a crash loop does not
// repeat alerts). A corrupt memory file means a fresh start, not a failure.
#[tokio::test]
async fn memory_survives_a_restart() {
    let r = Recorder::start().await;
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("logs/alerts.log");
    let state = dir.path().join("logs/alerts-state.json");
    let cfg = config(&format!(
        "cooldown: 1h\nnotifiers: [{{type: webhook, url: '{}'}}]",
        r.url("/hook")
    ));
    {
        let before = Alerter::new(&cfg, log.clone()).unwrap();
        before.raise(failure("database")).await;
        before.raise(failure("stale:x")).await;
        before.flush().await;
    }
    let saved: Value = serde_json::from_slice(&std::fs::read(&state).unwrap()).unwrap();
    assert_eq!(saved["active"], serde_json::json!(["database", "stale:x"]));

    let after = Alerter::new(&cfg, log.clone()).unwrap();
    assert_eq!(after.active(), ["database", "stale:x"]);
    after.raise(failure("database")).await;
    after.resolve(&key("stale:x"), "fresh again".into()).await;
    after.flush().await;
    assert_eq!(after.throttled(), 1);
    let mut sent: Vec<(String, String)> = r
        .at("/hook")
        .iter()
        .map(|q| {
            let v = q.json();
            (v["kind"].to_string(), v["key"].to_string())
        })
        .collect();
    sent.sort();
    assert_eq!(
        sent,
        [
            ("\"failure\"".into(), "\"database\"".into()),
            ("\"failure\"".into(), "\"stale:x\"".into()),
            ("\"resolved\"".into(), "\"stale:x\"".into()),
        ]
    );
    drop(after);

    std::fs::write(&state, "{not json").unwrap();
    let fresh = Alerter::new(&cfg, log).unwrap();
    assert!(fresh.active().is_empty());
    fresh.raise(failure("database")).await;
    fresh.flush().await;
    assert_eq!(r.at("/hook").len(), 4);
    let saved: Value = serde_json::from_slice(&std::fs::read(&state).unwrap()).unwrap();
    assert_eq!(saved["active"], serde_json::json!(["database"]));
}
