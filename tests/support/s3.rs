//! A real S3-protocol server on loopback (moto, through scripts/s3server.py), one per
//! test binary, with signatures checked and IAM policies enforced, and a control
//! channel (boto3 as admin) that creates buckets and users and looks at the bucket
//! independently of dcb.

use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, OnceLock};
use std::time::Duration;

use base64::Engine as _;
use dcb::storage::Target;
use dcb::storage::s3::{Credentials, S3, S3Config};
use serde_json::{Value, json};

use super::project_root;

pub const MIB: usize = 1 << 20;

pub const HOW_TO_GET_S3: &str = "no S3 test server: run `scripts/setup-test-env.sh` \
(installs moto[server] into .venv, from scripts/requirements-test.txt)";

pub struct S3Server {
    pub endpoint: String,
    /// The admin's key pair (allowed everything).
    pub access_key_id: String,
    pub secret_access_key: String,
    control: Mutex<(ChildStdin, BufReader<ChildStdout>)>,
    _child: Child,
}

/// The server this test binary shares, started on first use.
pub fn s3_server() -> &'static S3Server {
    static SERVER: OnceLock<S3Server> = OnceLock::new();
    SERVER.get_or_init(start)
}

fn start() -> S3Server {
    let venv = project_root().join(".venv");
    let python = super::venv_python().unwrap_or_else(|| panic!("{HOW_TO_GET_S3}"));
    assert!(
        ["bin/moto_server", "Scripts/moto_server.exe"]
            .iter()
            .any(|p| venv.join(p).exists()),
        "{HOW_TO_GET_S3}"
    );
    // The server's log goes to a file, as the MongoDB test server's does.
    static LOGS: AtomicUsize = AtomicUsize::new(0);
    let log_dir = project_root().join("target/test-servers");
    std::fs::create_dir_all(&log_dir).expect("create target/test-servers");
    let log_path = log_dir.join(format!(
        "s3-{}-{}.log",
        std::process::id(),
        LOGS.fetch_add(1, Ordering::Relaxed)
    ));
    let log = std::fs::File::create(&log_path).expect("create the S3 server's log");
    let mut child = Command::new(python)
        .arg(project_root().join("scripts/s3server.py"))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(log)
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start the S3 test server ({e}); {HOW_TO_GET_S3}"));
    let stdin = child.stdin.take().expect("piped stdin");
    let mut stdout = BufReader::new(child.stdout.take().expect("piped stdout"));
    let (tx, rx) = std::sync::mpsc::channel();
    let reader = std::thread::spawn(move || {
        let mut line = String::new();
        let ready = loop {
            line.clear();
            match stdout.read_line(&mut line) {
                Ok(0) | Err(_) => break None,
                Ok(_) => {
                    if let Some(json) = line.trim_end().strip_prefix("READY ") {
                        break Some(json.to_string());
                    }
                }
            }
        };
        let _ = tx.send(ready);
        stdout
    });
    let ready = rx.recv_timeout(Duration::from_secs(90)).ok().flatten();
    let Some(ready) = ready else {
        let log = std::fs::read_to_string(&log_path).unwrap_or_default();
        panic!(
            "the S3 test server did not become ready in 90 s; its log ({}):\n{log}\n{HOW_TO_GET_S3}",
            log_path.display()
        );
    };
    let stdout = reader.join().expect("the READY reader");
    let ready: Value = serde_json::from_str(&ready).expect("READY carries JSON");
    S3Server {
        endpoint: ready["endpoint"].as_str().unwrap().to_string(),
        access_key_id: ready["accessKeyId"].as_str().unwrap().to_string(),
        secret_access_key: ready["secretAccessKey"].as_str().unwrap().to_string(),
        control: Mutex::new((stdin, stdout)),
        _child: child,
    }
}

impl S3Server {
    /// Run one control command; panics with the server's message on an error.
    pub fn call(&self, command: Value) -> Value {
        let mut control = self.control.lock().unwrap_or_else(|e| e.into_inner());
        let (stdin, stdout) = &mut *control;
        writeln!(stdin, "{command}").expect("send a command to the S3 server");
        stdin.flush().unwrap();
        let mut line = String::new();
        stdout
            .read_line(&mut line)
            .expect("read the S3 server's answer");
        let answer: Value = serde_json::from_str(&line)
            .unwrap_or_else(|_| panic!("the S3 server answered {line:?} to {command}"));
        match answer.get("error") {
            Some(e) => panic!("S3 server: {command}: {e}"),
            None => answer["ok"].clone(),
        }
    }

    /// A new, empty bucket no other test uses.
    pub fn bucket(&self, prefix: &str) -> String {
        static N: AtomicUsize = AtomicUsize::new(0);
        let name = format!(
            "{prefix}-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        );
        self.call(json!({"op": "bucket", "name": name}));
        name
    }

    /// A user allowed what `policy` allows: its (access key id, secret access key).
    pub fn user(&self, name: &str, policy: Value) -> (String, String) {
        let k = self.call(json!({"op": "user", "name": name, "policy": policy}));
        (
            k["accessKeyId"].as_str().unwrap().to_string(),
            k["secretAccessKey"].as_str().unwrap().to_string(),
        )
    }

    /// Every object key in the bucket, sorted.
    pub fn keys(&self, bucket: &str) -> Vec<String> {
        serde_json::from_value(self.call(json!({"op": "keys", "bucket": bucket}))).unwrap()
    }

    /// The object's bytes, if it exists.
    pub fn get(&self, bucket: &str, key: &str) -> Option<Vec<u8>> {
        let v = self.call(json!({"op": "get", "bucket": bucket, "key": key}));
        v.as_str()
            .map(|b| base64::engine::general_purpose::STANDARD.decode(b).unwrap())
    }

    /// Put an object directly (no condition).
    pub fn put(&self, bucket: &str, key: &str, body: &[u8]) {
        let body = base64::engine::general_purpose::STANDARD.encode(body);
        self.call(json!({"op": "put", "bucket": bucket, "key": key, "body": body}));
    }

    /// Incomplete multipart uploads: (key, upload id, parts uploaded).
    pub fn uploads(&self, bucket: &str) -> Vec<(String, String, u64)> {
        serde_json::from_value(self.call(json!({"op": "uploads", "bucket": bucket}))).unwrap()
    }

    /// Start a multipart upload of `parts` parts and never complete it.
    pub fn start_upload(&self, bucket: &str, key: &str, parts: u32) -> String {
        let v =
            self.call(json!({"op": "start_upload", "bucket": bucket, "key": key, "parts": parts}));
        v.as_str().unwrap().to_string()
    }
}

/// A file of `len` pseudo-random bytes (incompressible, reproducible from `seed`).
pub fn random_file(path: &Path, len: usize, seed: u64) -> Vec<u8> {
    let mut state = seed | 1;
    let mut bytes = Vec::with_capacity(len);
    while bytes.len() < len {
        // xorshift64*
        state ^= state >> 12;
        state ^= state << 25;
        state ^= state >> 27;
        bytes.extend_from_slice(&state.wrapping_mul(0x2545_F491_4F6C_DD1D).to_le_bytes());
    }
    bytes.truncate(len);
    std::fs::write(path, &bytes).unwrap();
    bytes
}

pub fn config(server: &S3Server, bucket: &str, prefix: &str) -> S3Config {
    config_at(&server.endpoint, bucket, prefix)
}

pub fn config_at(endpoint: &str, bucket: &str, prefix: &str) -> S3Config {
    S3Config {
        bucket: bucket.to_string(),
        prefix: prefix.to_string(),
        endpoint: Some(endpoint.to_string()),
        ..S3Config::default()
    }
}

pub fn admin(server: &S3Server) -> Credentials {
    Credentials::new(&server.access_key_id, &server.secret_access_key)
}

/// A target on a new bucket under the prefix `site/dcb`, as the admin.
pub fn target(spool: &Path) -> (S3, String) {
    let server = s3_server();
    let bucket = server.bucket("dcb");
    let t = S3::new(&config(server, &bucket, "site/dcb"), admin(server), spool).unwrap();
    (t, bucket)
}

/// Stage `bytes` as `key` and commit it with `manifest`.
pub fn commit(
    t: &S3,
    key: &str,
    bytes: &[u8],
    manifest: &[u8],
) -> Result<(), dcb::storage::StorageError> {
    let staged = t.stage(key).unwrap();
    std::fs::write(&staged, bytes).unwrap();
    let manifest_key = key.replace(".tar.gz", ".manifest.json");
    let result = t.commit(&staged, key, &manifest_key, manifest);
    std::fs::remove_file(&staged).unwrap();
    result
}

/// Run one `#[ignore]`d test of this binary as a child process, with `env` set and
/// the server's endpoint and admin key pair in `DCB_S3_TEST_*`.
pub fn child(test: &str, env: &[(&str, &str)]) -> Command {
    let server = s3_server();
    let mut cmd = Command::new(std::env::current_exe().unwrap());
    cmd.args([
        test,
        "--exact",
        "--ignored",
        "--nocapture",
        "--test-threads=1",
    ]);
    cmd.env("DCB_S3_TEST_ENDPOINT", &server.endpoint)
        .env("DCB_S3_TEST_KEY", &server.access_key_id)
        .env("DCB_S3_TEST_SECRET", &server.secret_access_key)
        .envs(env.iter().copied());
    cmd
}

/// In a child: a variable the parent set.
pub fn env(name: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| panic!("{name} is set by the parent test"))
}

/// In a child: the parent's target on `DCB_S3_TEST_BUCKET` as the admin, spooling in
/// `DCB_S3_TEST_SPOOL`.
pub fn child_target() -> S3 {
    let config = config_at(
        &env("DCB_S3_TEST_ENDPOINT"),
        &env("DCB_S3_TEST_BUCKET"),
        "site/dcb",
    );
    let admin = Credentials::new(env("DCB_S3_TEST_KEY"), env("DCB_S3_TEST_SECRET"));
    S3::new(&config, admin, Path::new(&env("DCB_S3_TEST_SPOOL"))).unwrap()
}
