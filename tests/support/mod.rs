//! Shared test helpers: a real MongoDB wire-protocol server per test binary, and the
//! dcb binary run in a scratch folder.
#![allow(dead_code)]

pub mod s3;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

pub const HOW_TO_GET_A_SERVER: &str = "no MongoDB test server: run `scripts/setup-test-env.sh` \
(installs the SecantusDB test server into .venv), or set DCB_TEST_MONGODB_URI to a running \
server (e.g. mongodb://127.0.0.1:27017/?directConnection=true)";

pub fn project_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The test virtual environment's Python, if the setup script has run.
pub fn venv_python() -> Option<PathBuf> {
    let venv = project_root().join(".venv");
    [venv.join("bin/python"), venv.join("Scripts/python.exe")]
        .into_iter()
        .find(|p| p.exists())
}

pub struct TestServer {
    pub uri: String,
    /// Keeps the launcher's stdin open; it stops the server when this process exits.
    _child: Option<Child>,
}

/// Start a server: the launcher prints `READY <uri>` once it answers `hello`.
pub fn start_server(extra: &[&str]) -> TestServer {
    launch(&[], extra)
}

/// Run scripts/testserver.py with launcher arguments and server arguments.
fn launch(launcher: &[&std::ffi::OsStr], extra: &[&str]) -> TestServer {
    let python = venv_python().unwrap_or_else(|| panic!("{HOW_TO_GET_A_SERVER}"));
    let mut cmd = Command::new(python);
    cmd.arg(project_root().join("scripts/testserver.py"))
        .args(launcher);
    if !extra.is_empty() {
        cmd.arg("--").args(extra);
    }
    // The server's own log goes to a file: a server still shutting down after its test
    // must not hold the test's stderr open (the test runner would call it a leak).
    static LOGS: AtomicUsize = AtomicUsize::new(0);
    let log_dir = project_root().join("target/test-servers");
    std::fs::create_dir_all(&log_dir).expect("create target/test-servers");
    let log_path = log_dir.join(format!(
        "{}-{}.log",
        std::process::id(),
        LOGS.fetch_add(1, Ordering::Relaxed)
    ));
    let log = std::fs::File::create(&log_path).expect("create the test server's log");
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(log)
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start the test server ({e}); {HOW_TO_GET_A_SERVER}"));
    let stdout = child.stdout.take().expect("piped stdout");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if let Some(uri) = line.strip_prefix("READY ") {
                let _ = tx.send(uri.to_string());
                return;
            }
        }
    });
    let uri = rx
        .recv_timeout(Duration::from_secs(90))
        .unwrap_or_else(|_| {
            let log = std::fs::read_to_string(&log_path).unwrap_or_default();
            panic!(
                "the test server did not become ready in 90 s; its log ({}):\n{log}",
                log_path.display()
            )
        });
    TestServer {
        uri,
        _child: Some(child),
    }
}

impl TestServer {
    /// A server someone else runs.
    pub fn external(uri: String) -> TestServer {
        TestServer { uri, _child: None }
    }
}

/// The server this test binary shares: `DCB_TEST_MONGODB_URI`, else one started here.
pub fn server() -> &'static TestServer {
    static SERVER: OnceLock<TestServer> = OnceLock::new();
    SERVER.get_or_init(|| match std::env::var("DCB_TEST_MONGODB_URI") {
        Ok(uri) if !uri.is_empty() => TestServer::external(uri),
        _ => start_server(&[]),
    })
}

/// A database name no other test uses.
pub fn unique_db(prefix: &str) -> String {
    static N: AtomicUsize = AtomicUsize::new(0);
    format!(
        "{prefix}_{}_{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    )
}

/// The server's URI with a default database in its path.
pub fn uri_with_db(db: &str) -> String {
    let uri = &server().uri;
    match uri.split_once("/?") {
        Some((hosts, opts)) => format!("{hosts}/{db}?{opts}"),
        None => format!("{}/{db}", uri.trim_end_matches('/')),
    }
}

pub async fn client() -> mongodb::Client {
    mongodb::Client::with_uri_str(&server().uri)
        .await
        .expect("connect to the test server")
}

/// A scratch folder with a `policies/` folder in it.
pub struct Scratch {
    pub dir: tempfile::TempDir,
}

impl Scratch {
    pub fn new() -> Scratch {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("policies")).unwrap();
        Scratch { dir }
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    pub fn write(&self, rel: &str, text: &str) -> PathBuf {
        let p = self.dir.path().join(rel);
        if let Some(parent) = p.parent() {
            std::fs::create_dir_all(parent).unwrap();
        }
        std::fs::write(&p, text).unwrap();
        p
    }

    /// `dcb ARGS` run in this folder with a clean DCB_* environment.
    pub fn dcb(&self) -> Command {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_dcb"));
        cmd.current_dir(self.dir.path());
        for (k, _) in std::env::vars() {
            if k.starts_with("DCB_") {
                cmd.env_remove(k);
            }
        }
        cmd.env("NO_COLOR", "1");
        cmd
    }

    pub fn run(&self, args: &[&str]) -> Run {
        Run::from(self.dcb().args(args).output().expect("run dcb"))
    }
}

/// A finished dcb process.
pub struct Run {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl From<Output> for Run {
    fn from(o: Output) -> Run {
        Run {
            code: o.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&o.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&o.stderr).into_owned(),
        }
    }
}

/// A valid policy to start mutating from.
pub const VALID_POLICY: &str = "\
name: demo
schedule: \"0 */1 * * *\"
timezone: Asia/Shanghai
collections:
  - api_logs
  - name: roles
    timeField: updatedAt
retention: 72h
";

/// Read archives with an implementation independent of dcb (pymongo's bson).
pub fn read_archives(paths: &[PathBuf]) -> Vec<serde_json::Value> {
    let python = venv_python().unwrap_or_else(|| panic!("{HOW_TO_GET_A_SERVER}"));
    let out = Command::new(python)
        .arg(project_root().join("tests/support/read_archives.py"))
        .args(paths)
        .output()
        .expect("run the archive reader");
    assert!(
        out.status.success(),
        "reader failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("reader prints JSON")
}

/// Final archives (not temp files) of one collection under `<root>/<policy>/`, oldest
/// first.
pub fn archives(root: &Path, policy: &str, collection: &str) -> Vec<PathBuf> {
    let mut found: Vec<PathBuf> = std::fs::read_dir(root.join(policy))
        .map(|d| d.flatten().map(|e| e.path()).collect())
        .unwrap_or_default();
    found.retain(|p| {
        let n = p.file_name().unwrap().to_string_lossy().into_owned();
        n.ends_with(&format!(".{collection}.tar.gz")) && !n.starts_with('.')
    });
    found.sort();
    found
}

/// The manifest beside an archive (`<stem>.manifest.json`).
pub fn manifest_of(archive: &Path) -> PathBuf {
    let name = archive.file_name().unwrap().to_string_lossy().into_owned();
    let stem = name
        .strip_suffix(".tar.gz.age")
        .or_else(|| name.strip_suffix(".tar.gz"))
        .unwrap_or(&name);
    archive.with_file_name(format!("{stem}.manifest.json"))
}

/// The `_id`s in one archive's `.bson` member, as extended JSON strings.
pub fn ids_in(archive: &serde_json::Value) -> Vec<String> {
    archive["ids"]
        .as_object()
        .expect("ids")
        .values()
        .flat_map(|v| {
            v.as_array()
                .unwrap()
                .iter()
                .map(|s| s.as_str().unwrap().to_string())
        })
        .collect()
}

/// Extended JSON of an ObjectId as pymongo's json_util writes it.
pub fn oid_json(id: &mongodb::bson::oid::ObjectId) -> String {
    format!("{{\"$oid\": \"{}\"}}", id.to_hex())
}

/// The folder holding mongodump, mongorestore and bsondump: `DCB_MONGO_TOOLS`, else
/// `PATH`, else the tarball in `../shared/peers/` unpacked under `target/`.
pub fn mongo_tools() -> PathBuf {
    if let Ok(dir) = std::env::var("DCB_MONGO_TOOLS") {
        return PathBuf::from(dir);
    }
    if let Ok(path) = std::env::var("PATH") {
        for dir in std::env::split_paths(&path) {
            if dir.join("mongorestore").is_file() && dir.join("bsondump").is_file() {
                return dir;
            }
        }
    }
    let tarball = project_root().join("../shared/peers/mongo-tools-linux-x86_64.tar.gz");
    let dest = project_root().join("target/mongo-tools");
    if dest.join("mongorestore").is_file() {
        return dest;
    }
    assert!(
        tarball.is_file(),
        "the real MongoDB tools are needed to prove interoperability: set DCB_MONGO_TOOLS to a \
         folder with mongorestore and bsondump, put them on PATH, or provide {}",
        tarball.display()
    );
    std::fs::create_dir_all(&dest).unwrap();
    let status = Command::new("tar")
        .arg("xzf")
        .arg(&tarball)
        .arg("-C")
        .arg(&dest)
        .status()
        .expect("run tar");
    assert!(status.success(), "cannot unpack {}", tarball.display());
    dest
}

/// Start a server on a fixed port with storage on disk, so a test can stop it and
/// start it again with the same data.
pub fn start_server_at(port: u16, storage: &Path, extra: &[&str]) -> TestServer {
    let port = port.to_string();
    launch(
        &[
            "--port".as_ref(),
            port.as_ref(),
            "--storage-path".as_ref(),
            storage.as_os_str(),
        ],
        extra,
    )
}

impl TestServer {
    /// Stop the server (closing the launcher's stdin makes it stop the server).
    pub fn stop(mut self) {
        if let Some(mut child) = self._child.take() {
            drop(child.stdin.take());
            let _ = child.wait();
        }
    }
}

/// A free loopback port.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// An HTTP endpoint on loopback that records the body of every request.
pub struct Recorder {
    pub url: String,
    /// (request line, body) of each request.
    requests: std::sync::Arc<std::sync::Mutex<Vec<(String, String)>>>,
}

impl Recorder {
    pub fn start() -> Recorder {
        use std::io::{Read, Write};
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}/hook", listener.local_addr().unwrap());
        let requests = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let sink = requests.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(mut stream) = stream else { continue };
                let mut buf = Vec::new();
                let mut chunk = [0u8; 8192];
                // Read headers, then as much body as Content-Length says.
                let body = loop {
                    let Ok(n) = stream.read(&mut chunk) else {
                        break None;
                    };
                    if n == 0 {
                        break None;
                    }
                    buf.extend_from_slice(&chunk[..n]);
                    let text = String::from_utf8_lossy(&buf).into_owned();
                    if let Some(end) = text.find("\r\n\r\n") {
                        let len = text[..end]
                            .lines()
                            .find_map(|l| {
                                let (k, v) = l.split_once(':')?;
                                k.eq_ignore_ascii_case("content-length")
                                    .then(|| v.trim().parse::<usize>().ok())?
                            })
                            .unwrap_or(0);
                        if buf.len() >= end + 4 + len {
                            let line = text.lines().next().unwrap_or_default().to_string();
                            break Some((
                                line,
                                String::from_utf8_lossy(&buf[end + 4..end + 4 + len]).into_owned(),
                            ));
                        }
                    }
                };
                if let Some(body) = body {
                    sink.lock().unwrap().push(body);
                }
                let _ = stream.write_all(
                    b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\nconnection: close\r\n\r\nok",
                );
            }
        });
        Recorder { url, requests }
    }

    pub fn bodies(&self) -> Vec<String> {
        self.requests().into_iter().map(|r| r.1).collect()
    }

    pub fn requests(&self) -> Vec<(String, String)> {
        self.requests.lock().unwrap().clone()
    }

    /// Wait until a body satisfies `pred`; panics with what arrived after `secs`.
    pub fn wait_for(&self, secs: u64, what: &str, pred: impl Fn(&str) -> bool) -> String {
        let deadline = std::time::Instant::now() + Duration::from_secs(secs);
        loop {
            if let Some(b) = self.bodies().into_iter().find(|b| pred(b)) {
                return b;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "no {what} within {secs} s; received: {:#?}",
                self.bodies()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

/// GET `path` from `addr` over plain HTTP/1.1: (status code, body).
pub fn http_get(addr: &str, path: &str) -> (u16, String) {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(addr).expect("connect");
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
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

/// Poll `f` every 100 ms until it returns Some, for at most `secs`.
pub fn eventually<T>(secs: u64, what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = std::time::Instant::now() + Duration::from_secs(secs);
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "timed out after {secs} s waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[cfg(unix)]
impl TestServer {
    /// Kill the server process itself (not its launcher) with SIGKILL, as a crash or
    /// the OOM killer would, then let the launcher exit. The data stays in its storage
    /// folder for [`start_server_at`] to open again.
    pub fn kill_9(mut self) {
        let mut launcher = self
            ._child
            .take()
            .expect("only a server this test started can be killed");
        let servers = children_of(launcher.id());
        assert!(
            !servers.is_empty(),
            "cannot find the server process started by launcher {}",
            launcher.id()
        );
        for pid in servers {
            // SAFETY: kill(2) with a pid read from the process table; no memory involved.
            let rc = unsafe { libc::kill(pid as libc::pid_t, libc::SIGKILL) };
            assert_eq!(rc, 0, "kill -9 {pid}: {}", std::io::Error::last_os_error());
        }
        drop(launcher.stdin.take());
        let _ = launcher.wait();
    }
}

/// The processes whose parent is `parent`: from /proc on Linux, else from `ps`.
#[cfg(unix)]
pub fn children_of(parent: u32) -> Vec<u32> {
    let mut found = Vec::new();
    if let Ok(entries) = std::fs::read_dir("/proc") {
        for e in entries.flatten() {
            let Some(pid) = e.file_name().to_str().and_then(|n| n.parse::<u32>().ok()) else {
                continue;
            };
            // /proc/PID/stat: "pid (comm) state ppid ...", and comm may hold spaces.
            let Ok(stat) = std::fs::read_to_string(e.path().join("stat")) else {
                continue;
            };
            let ppid = stat
                .rsplit_once(')')
                .and_then(|(_, rest)| rest.split_whitespace().nth(1))
                .and_then(|p| p.parse::<u32>().ok());
            if ppid == Some(parent) {
                found.push(pid);
            }
        }
        if !found.is_empty() {
            return found;
        }
    }
    let out = Command::new("ps")
        .args(["-A", "-o", "pid=,ppid="])
        .output()
        .expect("run ps");
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let mut it = line.split_whitespace().map(|f| f.parse::<u32>().ok());
        if let (Some(Some(pid)), Some(Some(ppid))) = (it.next(), it.next())
            && ppid == parent
        {
            found.push(pid);
        }
    }
    found
}

/// `/metrics` as Prometheus reads it. The endpoint speaks OpenMetrics, where a counter
/// family `x` (`# TYPE x counter`) has samples `x_total`; prometheus-parse reads the
/// older text format, so the family's type is given to its `_total` samples first.
pub fn scrape(text: &str) -> prometheus_parse::Scrape {
    let lines = text.lines().map(|l| {
        let line = match l
            .strip_prefix("# TYPE ")
            .and_then(|t| t.strip_suffix(" counter"))
        {
            Some(family) if !family.ends_with("_total") => format!("# TYPE {family}_total counter"),
            _ => l.to_string(),
        };
        Ok(line)
    });
    prometheus_parse::Scrape::parse(lines).expect("the exposition parses")
}
