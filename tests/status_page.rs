//! The status page of `dcb serve --http`, loaded in headless Chromium from a running
//! service over a backup root seeded by real runs against the test server: one
//! archive deleted (a gap), and a run that failed (a failed window). The page names
//! the collections, shows the gap as a gap with its times, the restorable range and
//! the failed window, speaks Chinese to a browser that asks for it, shows no secret,
//! and wants its token when it listens beyond loopback.

mod support;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use mongodb::bson::{Document, doc};
use support::{Scratch, eventually};

const PASSWORD: &str = "PagePassw0rd77";
const TOKEN: &str = "page-token-4821";
const HOOK_SECRET: &str = "HookSecret9931";

/// A running `dcb serve`, killed when dropped.
struct Serve {
    child: Child,
    root: PathBuf,
}

impl Serve {
    fn start(s: &Scratch, args: &[&str]) -> Serve {
        let child = s
            .dcb()
            .arg("serve")
            .args(args)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let root = s.path().join("backups");
        let serve = Serve { child, root };
        eventually(30, "the admin endpoint in the service record", || {
            serve.record()?["http"].as_str().map(str::to_owned)
        });
        serve
    }

    fn record(&self) -> Option<serde_json::Value> {
        serde_json::from_slice(&std::fs::read(self.root.join("logs/service.json")).ok()?).ok()
    }

    /// The port the endpoint listens on.
    fn port(&self) -> u16 {
        let http = self.record().unwrap()["http"].as_str().unwrap().to_string();
        http.rsplit(':').next().unwrap().parse().unwrap()
    }

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
}

impl Drop for Serve {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// GET `path` on loopback `port` with extra header lines: (status, body).
fn get(port: u16, path: &str, headers: &[&str]) -> (u16, String) {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).expect("connect");
    let mut req = format!("GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n");
    for h in headers {
        req.push_str(h);
        req.push_str("\r\n");
    }
    req.push_str("\r\n");
    s.write_all(req.as_bytes()).unwrap();
    let mut out = Vec::new();
    s.read_to_end(&mut out).unwrap();
    let out = String::from_utf8_lossy(&out).into_owned();
    let code = out
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let body = out
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    (code, body)
}

/// Debian's headless Chromium, or a failure saying how to get it.
fn chromium() -> PathBuf {
    for p in [
        "/usr/bin/chromium-headless-shell",
        "/usr/lib/chromium/chromium-headless-shell",
    ] {
        if Path::new(p).is_file() {
            return PathBuf::from(p);
        }
    }
    panic!(
        "chromium-headless-shell is missing: run `scripts/setup-test-env.sh` (it installs \
         Debian's chromium-headless-shell package as root or with sudo)"
    );
}

/// The DOM of `url` after Chromium ran the page, asking for `accept_lang` if given.
fn dump_dom(url: &str, accept_lang: Option<&str>) -> String {
    let profile = tempfile::tempdir().unwrap();
    let mut cmd = Command::new(chromium());
    cmd.args([
        "--no-sandbox",
        "--headless",
        "--disable-gpu",
        "--no-first-run",
        "--dump-dom",
        "--virtual-time-budget=5000",
    ])
    .arg(format!("--user-data-dir={}", profile.path().display()));
    if let Some(l) = accept_lang {
        cmd.arg(format!("--lang={l}"))
            .arg(format!("--accept-lang={l}"));
    }
    let out = cmd.arg(url).output().expect("run chromium-headless-shell");
    let dom = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        dom.contains("</html>"),
        "chromium printed no page (exit {:?}): {}",
        out.status.code(),
        String::from_utf8_lossy(&out.stderr)
    );
    dom
}

/// A PNG of `url` at `size` ("width,height").
fn screenshot(url: &str, accept_lang: Option<&str>, size: &str, to: &Path) {
    let profile = tempfile::tempdir().unwrap();
    let mut cmd = Command::new(chromium());
    cmd.args([
        "--no-sandbox",
        "--headless",
        "--disable-gpu",
        "--hide-scrollbars",
    ])
    .arg(format!("--user-data-dir={}", profile.path().display()))
    .arg(format!("--window-size={size}"))
    .arg(format!("--screenshot={}", to.display()));
    if let Some(l) = accept_lang {
        cmd.arg(format!("--lang={l}"))
            .arg(format!("--accept-lang={l}"));
    }
    let out = cmd.arg(url).output().unwrap();
    assert!(
        to.is_file(),
        "no screenshot: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The opening tag of each element in `html` whose tag starts with `start`.
fn tags<'a>(html: &'a str, start: &str) -> Vec<&'a str> {
    html.match_indices(start)
        .map(|(i, _)| {
            let rest = &html[i..];
            &rest[..rest.find('>').unwrap_or(rest.len())]
        })
        .collect()
}

/// The value of `name="..."` in a tag.
fn attr<'a>(tag: &'a str, name: &str) -> Option<&'a str> {
    let at = tag.find(&format!(" {name}=\""))? + name.len() + 3;
    Some(&tag[at..at + tag[at..].find('"')?])
}

fn rfc3339(t: &str) -> chrono::DateTime<chrono::Utc> {
    chrono::DateTime::parse_from_rfc3339(t).unwrap().to_utc()
}

fn manifests(root: &Path, collection: &str) -> Vec<(PathBuf, serde_json::Value)> {
    let mut out: Vec<(PathBuf, serde_json::Value)> = std::fs::read_dir(root.join("p"))
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.to_string_lossy().ends_with(".manifest.json"))
        .map(|p| {
            let m: serde_json::Value = serde_json::from_slice(&std::fs::read(&p).unwrap()).unwrap();
            (p, m)
        })
        .filter(|(_, m)| m["collection"] == collection)
        .collect();
    out.sort_by_key(|(_, m)| rfc3339(m["to"].as_str().unwrap()));
    out
}

async fn insert(db: &str, collection: &str, n: i64) {
    let client = support::client().await;
    let docs: Vec<Document> = (0..n)
        .map(|i| doc! {"createdAt": mongodb::bson::DateTime::now(), "n": i})
        .collect();
    client
        .database(db)
        .collection::<Document>(collection)
        .insert_many(docs)
        .await
        .unwrap();
}

// A seeded backup root shows on the page as it is: both collections, the deleted
// archive as a gap spanning its window, the restorable range, the failed run; in
// Chinese for a Chinese browser; with no password, token or webhook secret; and
// only with the token, the endpoint listening beyond loopback.
#[tokio::test(flavor = "multi_thread")]
async fn the_page_shows_coverage_gaps_and_failures() {
    chromium();
    let good = support::server().uri.clone();
    let db = support::unique_db("page");
    let s = Scratch::new();
    let closed = support::free_port();
    let bad = format!(
        "mongodb://dcb:{PASSWORD}@127.0.0.1:{closed}/?serverSelectionTimeoutMS=300&connectTimeoutMS=300"
    );
    let port = support::free_port();
    s.write(
        "dcb.yaml",
        &format!(
            "mongodb:\n  uri: \"{bad}\"\ntimezone: UTC\nhttp:\n  listen: \"0.0.0.0:{port}\"\n  \
             token: \"{TOKEN}\"\nalerts:\n  notifiers:\n    - {{type: webhook, url: \"http://127.0.0.1:9/hook/{HOOK_SECRET}\"}}\n"
        ),
    );
    s.write(
        "policies/p.yaml",
        &format!(
            "name: p\nschedule: \"0 0 * * *\"\ntimezone: UTC\ndatabase: {db}\n\
             window: {{initial: all, settle: 0s}}\ncollections: [api_logs, orders]\nretention: 7d\n"
        ),
    );
    // Three runs, each with new documents in both collections.
    for round in 0..3 {
        insert(&db, "api_logs", 5 + round).await;
        insert(&db, "orders", 2).await;
        tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
        let run = s
            .dcb()
            .args(["run", "--policy", "p"])
            .env("DCB_MONGODB_URI", &good)
            .output()
            .unwrap();
        assert!(
            run.status.success(),
            "{}",
            String::from_utf8_lossy(&run.stderr)
        );
        tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    }
    let root = s.path().join("backups");
    let api = manifests(&root, "api_logs");
    assert_eq!(api.len(), 3, "three api_logs archives");
    // The middle archive is lost: a gap from the first window's end to the third's start.
    let (gap_from, gap_to) = (
        api[0].1["to"].as_str().unwrap().to_string(),
        api[2].1["from"].as_str().unwrap().to_string(),
    );
    let middle = &api[1];
    std::fs::remove_file(root.join("p").join(middle.1["archive"].as_str().unwrap())).unwrap();
    std::fs::remove_file(&middle.0).unwrap();
    // Then a run fails (the database is unreachable).
    let failed = s.dcb().args(["run", "--policy", "p"]).output().unwrap();
    assert!(
        !failed.status.success(),
        "the run against a closed port fails"
    );

    // What the drills and the periodic re-verification record, and a torn line.
    let logs = root.join("logs");
    let append = |name: &str, text: &str| {
        use std::io::Write;
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(logs.join(name))
            .unwrap();
        f.write_all(text.as_bytes()).unwrap();
    };
    let now = chrono::Utc::now().to_rfc3339();
    append(
        "drills.log",
        &format!(
            "{{\"at\":\"{now}\",\"policy\":\"p\",\"ok\":false,\"database\":\"dcb_drill_p_1\",\
             \"collections\":[{{\"database\":\"dcb_drill_p_1\",\"collection\":\"api_logs\",\"documents\":11,\
             \"ok\":false,\"problem\":\"drill-problem-x\"}}],\"elapsed_ms\":1530,\"problems\":[]}}\n{{\"at\":\"2026-"
        ),
    );
    append(
        "verify.log",
        &format!(
            "\n{{\"at\":\"{now}\",\"archive\":\"p/verified-archive-y.tar.gz\",\"ok\":true,\"problem\":null,\"bytes\":2048}}\n"
        ),
    );

    let serve = Serve::start(&s, &[]);
    let port = serve.port();
    let bearer = format!("Authorization: Bearer {TOKEN}");
    // The health check at start-up finds the database unreachable: an active alert.
    eventually(30, "the database alert on the page", || {
        get(port, "/", &[&bearer])
            .1
            .contains("data-key=\"database\"")
            .then_some(())
    });

    // Beyond loopback the token is required; /healthz stays open (503: no database).
    assert_eq!(get(port, "/", &[]).0, 401);
    assert_eq!(get(port, "/status", &[]).0, 401);
    assert_eq!(get(port, "/?token=wrong", &[]).0, 401);
    assert_eq!(get(port, "/", &["Authorization: Bearer wrong"]).0, 401);
    assert_ne!(get(port, "/healthz", &[]).0, 401);
    let (code, plain) = get(port, "/", &[&bearer]);
    assert_eq!(code, 200, "{plain}");
    let (code, zh_plain) = get(
        port,
        &format!("/?token={TOKEN}"),
        &["Accept-Language: zh-CN,zh;q=0.9,en;q=0.5"],
    );
    assert_eq!(code, 200);
    assert!(zh_plain.contains("可恢复范围"), "{zh_plain}");

    let url = format!("http://127.0.0.1:{port}/?token={TOKEN}");
    let en = dump_dom(&url, None);
    assert!(en.contains("<html lang=\"en\">"), "{en}");
    for (what, page) in [("English", &en), ("Chinese", &zh_plain), ("plain", &plain)] {
        for secret in [PASSWORD, TOKEN, HOOK_SECRET] {
            assert!(
                !page.contains(secret),
                "the {what} page shows a secret: {secret}"
            );
        }
    }
    // The right collections, and no others.
    let sections = tags(&en, "<section class=\"collection\"");
    let names: Vec<(&str, &str)> = sections
        .iter()
        .map(|t| {
            (
                attr(t, "data-database").unwrap(),
                attr(t, "data-collection").unwrap(),
            )
        })
        .collect();
    assert_eq!(names, [(db.as_str(), "api_logs"), (db.as_str(), "orders")]);
    let api_html = {
        let start = en.find("data-collection=\"api_logs\"").unwrap();
        let end = en.find("data-collection=\"orders\"").unwrap();
        &en[start..end]
    };
    let orders_html = &en[en.find("data-collection=\"orders\"").unwrap()..];
    // The gap, exactly where the lost archive was; orders has none.
    let gaps = tags(api_html, "<rect class=\"gap\"");
    assert_eq!(gaps.len(), 1, "{api_html}");
    assert_eq!(
        rfc3339(attr(gaps[0], "data-from").unwrap()),
        rfc3339(&gap_from)
    );
    assert_eq!(rfc3339(attr(gaps[0], "data-to").unwrap()), rfc3339(&gap_to));
    assert!(tags(orders_html, "<rect class=\"gap\"").is_empty());
    assert_eq!(tags(api_html, "<rect class=\"archive\"").len(), 2);
    assert_eq!(tags(orders_html, "<rect class=\"archive\"").len(), 3);
    // The restorable range, in data and in words (UTC, as dcb.yaml says).
    let restorable = tags(api_html, "<p class=\"restorable\"")[0];
    let first_to = rfc3339(api[0].1["to"].as_str().unwrap());
    let last_to = rfc3339(api[2].1["to"].as_str().unwrap());
    assert_eq!(rfc3339(attr(restorable, "data-from").unwrap()), first_to);
    assert_eq!(rfc3339(attr(restorable, "data-to").unwrap()), last_to);
    let words = format!(
        "{} .. {}",
        first_to.format("%Y-%m-%d %H:%M:%S"),
        last_to.format("%Y-%m-%d %H:%M:%S")
    );
    assert!(api_html.contains(&words), "{words} in {api_html}");
    // The failed run: a red window from the end of the newest archive to the failure.
    let orders_to = rfc3339(manifests(&root, "orders")[2].1["to"].as_str().unwrap());
    for (html, from) in [(api_html, last_to), (orders_html, orders_to)] {
        let failed = tags(html, "<rect class=\"failed\"");
        assert_eq!(failed.len(), 1, "{html}");
        assert_eq!(rfc3339(attr(failed[0], "data-from").unwrap()), from);
        assert!(rfc3339(attr(failed[0], "data-to").unwrap()) > from);
    }
    assert!(
        api_html.contains(">failed<"),
        "the last run failed: {api_html}"
    );
    // The latest drill and verification.
    assert!(en.contains("<tr class=\"drill\">") && en.contains("drill-problem-x"));
    assert!(en.contains("p/verified-archive-y.tar.gz"));
    // Chinese for a Chinese browser.
    let zh = dump_dom(&url, Some("zh-CN"));
    assert!(zh.contains("<html lang=\"zh-CN\">"), "{zh}");
    for s in [
        "可恢复范围",
        "缺口",
        "失败的运行",
        "下次运行",
        "最近的恢复演练",
        "最近的校验",
    ] {
        assert!(zh.contains(s), "{s} missing from the Chinese page");
    }
    assert!(!zh.contains("Restorable"));
    // DCB_SCREENSHOTS=DIR: pictures of this page for the README.
    if let Some(dir) = std::env::var_os("DCB_SCREENSHOTS") {
        let dir = PathBuf::from(dir);
        screenshot(&url, None, "1200,1400", &dir.join("status-page.en.png"));
        screenshot(
            &url,
            Some("zh-CN"),
            "1200,1400",
            &dir.join("status-page.zh.png"),
        );
        screenshot(&url, None, "390,1600", &dir.join("status-page.phone.png"));
    }
    drop(serve);
}

// Beyond loopback without a token, the service says loudly that the page is open.
#[test]
fn an_open_endpoint_is_announced() {
    let s = Scratch::new();
    s.write(
        "dcb.yaml",
        &format!(
            "mongodb:\n  uri: \"mongodb://127.0.0.1:{}/?serverSelectionTimeoutMS=300\"\n",
            support::free_port()
        ),
    );
    let serve = Serve::start(&s, &["--http", "0.0.0.0:0"]);
    let port = serve.port();
    assert_eq!(get(port, "/", &[]).0, 200, "open: no token configured");
    eventually(20, "the warning in the log", || {
        serve
            .log()
            .contains("THE ADMIN ENDPOINT IS OPEN")
            .then_some(())
    });
}
