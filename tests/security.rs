//! Security against the real test server: least privilege with SCRAM-SHA-256 (`read`
//! to back up, `readWrite` on the target to restore), passwords never in any output
//! or file, TLS with certificates made here, owner-only files, and the audit log.

mod support;

use std::path::{Path, PathBuf};
use std::time::Duration;

use mongodb::bson::{DateTime, Document, doc};
use support::{Run, Scratch, TestServer};

const BACKUP_PW: &str = "Backup-pw-7f3Q9zK";
const RESTORE_PW: &str = "Restore-pw-2mX8vL";
const LOCAL_PW: &str = "Local-pw-5Hq1wN";
/// The wrong password of the authentication-failure case: the one error path that
/// could echo what it was given.
const WRONG_PW: &str = "Wrong-pw-5tH1xQ";

fn uri(port: u16, user: &str, extra: &str) -> String {
    format!("mongodb://{user}127.0.0.1:{port}/?authSource=admin&directConnection=true{extra}")
}

/// A server with users made while it ran without auth, restarted with `--auth`.
async fn auth_server(storage: &Path) -> (TestServer, u16) {
    let port = support::free_port();
    let open = support::start_server_at(port, storage, &[]);
    let client = mongodb::Client::with_uri_str(uri(port, "", ""))
        .await
        .unwrap();
    let admin = client.database("admin");
    for (user, pwd, roles) in [
        (
            "root",
            "root-pw",
            vec![doc! {"role": "root", "db": "admin"}],
        ),
        (
            "backup",
            BACKUP_PW,
            vec![doc! {"role": "read", "db": "mes"}],
        ),
        (
            "restorer",
            RESTORE_PW,
            vec![doc! {"role": "readWrite", "db": "mes_restored"}],
        ),
    ] {
        admin
            .run_command(doc! {"createUser": user, "pwd": pwd, "roles": roles, "mechanisms": ["SCRAM-SHA-256"]})
            .await
            .unwrap();
    }
    // A user of the backed-up database itself (`authSource=mes`), as factories often
    // make them.
    client
        .database("mes")
        .run_command(doc! {"createUser": "local", "pwd": LOCAL_PW, "roles": [{"role": "read", "db": "mes"}], "mechanisms": ["SCRAM-SHA-256"]})
        .await
        .unwrap();
    let now = DateTime::from_millis(DateTime::now().timestamp_millis() - 1000);
    client
        .database("mes")
        .collection::<Document>("scans")
        .insert_many((0..300).map(|i| doc! {"createdAt": now, "i": i}))
        .await
        .unwrap();
    client.shutdown().await;
    open.stop();
    (support::start_server_at(port, storage, &["--auth"]), port)
}

fn dcb(s: &Scratch, args: &[&str], env: &[(&str, &str)]) -> Run {
    let mut cmd = s.dcb();
    cmd.args(args);
    for (k, v) in env {
        cmd.env(k, v);
    }
    Run::from(cmd.output().unwrap())
}

/// Every file under `dir`, recursively.
fn files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap().flatten() {
        let p = e.path();
        if p.is_dir() {
            out.extend(files(&p));
        } else {
            out.push(p);
        }
    }
    out
}

fn contains(haystack: &[u8], needle: &str) -> bool {
    haystack
        .windows(needle.len())
        .any(|w| w == needle.as_bytes())
}

// Every way of giving the credentials logs in, for a user of `admin` and for a user of
// the backed-up database (`authSource=mes`): the user and password in the URI (file or
// environment), the user in the URI and the password in a file, and the user in
// `mongodb.username` with the password in a file named in dcb.yaml or the environment.
// The URI's `authSource` holds in every form; without it, the database's user is
// refused (so the table does test it).
#[tokio::test]
async fn every_form_of_credential_logs_in() {
    let storage = tempfile::tempdir().unwrap();
    let (_server, port) = auth_server(storage.path()).await;
    let at = |user: &str, source: &str| {
        format!("mongodb://{user}127.0.0.1:{port}/?authSource={source}&directConnection=true")
    };
    let uri_only = |uri: String| format!("mongodb:\n  uri: \"{uri}\"\n");
    let with_file = |uri: String| format!("{}  passwordFile: secrets/pw\n", uri_only(uri));
    let with_user = |user: &str, uri: String| format!("{}  username: {user}\n", uri_only(uri));
    // (case, user, dcb.yaml, environment, logs in)
    type Case<'a> = (&'a str, &'a str, String, Vec<(&'a str, String)>, bool);
    let mut cases: Vec<Case> = Vec::new();
    for (user, pw, source) in [("backup", BACKUP_PW, "admin"), ("local", LOCAL_PW, "mes")] {
        let full = at(&format!("{user}:{pw}@"), source);
        cases.extend([
            (
                "user and password in the URI",
                user,
                uri_only(full.clone()),
                vec![],
                true,
            ),
            (
                "user and password in DCB_MONGODB_URI",
                user,
                "{}\n".to_string(),
                vec![("DCB_MONGODB_URI", full)],
                true,
            ),
            (
                "user in the URI, passwordFile",
                user,
                with_file(at(&format!("{user}@"), source)),
                vec![],
                true,
            ),
            (
                "mongodb.username, passwordFile",
                user,
                format!(
                    "{}  passwordFile: secrets/pw\n",
                    with_user(user, at("", source))
                ),
                vec![],
                true,
            ),
            (
                "mongodb.username, DCB_MONGODB_PASSWORD_FILE",
                user,
                with_user(user, at("", source)),
                vec![("DCB_MONGODB_PASSWORD_FILE", "secrets/pw".to_string())],
                true,
            ),
        ]);
    }
    cases.push((
        "a user of `mes`, and no authSource (logs in against admin)",
        "local",
        format!(
            "{}  passwordFile: secrets/pw\n",
            with_user(
                "local",
                format!("mongodb://127.0.0.1:{port}/?directConnection=true")
            )
        ),
        vec![],
        false,
    ));
    for (case, user, yaml, env, ok) in cases {
        let s = Scratch::new();
        s.write(
            "policies/hot.yaml",
            "name: hot\nschedule: \"0 0 * * *\"\ndatabase: mes\nwindow: {initial: all, settle: 0s}\ncollections: [scans]\nretention: 7d\n",
        );
        let pw = if user == "local" { LOCAL_PW } else { BACKUP_PW };
        s.write("secrets/pw", &format!("{pw}\n"));
        s.write("dcb.yaml", &yaml);
        let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
        let run = dcb(&s, &["run", "--all"], &env);
        let what = format!("{user}, {case}: {}{}", run.stdout, run.stderr);
        if ok {
            assert_eq!(run.code, 0, "{what}");
            assert!(run.stdout.contains("300 docs"), "{what}");
        } else {
            assert_eq!(run.code, 1, "{what}");
            assert!(run.stdout.contains("authentication failed"), "{what}");
        }
        for secret in [BACKUP_PW, LOCAL_PW] {
            assert!(
                !run.stdout.contains(secret) && !run.stderr.contains(secret),
                "{what}"
            );
        }
    }
}

// A whole cycle (run, serve, status, list, verify with samples, restore) with users that
// hold only the roles they need; then no output stream and no file dcb wrote holds
// either password, whether it came from a password file or from the URI.
#[tokio::test]
async fn least_privilege_and_no_password_anywhere() {
    let storage = tempfile::tempdir().unwrap();
    let (server, port) = auth_server(storage.path()).await;
    let s = Scratch::new();
    s.write(
        "policies/hot.yaml",
        "name: hot\nschedule: \"*/1 * * * * *\"\ndatabase: mes\nwindow: {initial: all, settle: 0s}\ncollections: [scans]\nretention: 7d\n",
    );
    s.write("secrets/backup.pw", &format!("{BACKUP_PW}\n"));
    s.write("secrets/restore.pw", RESTORE_PW);
    s.write(
        "dcb.yaml",
        &format!(
            "mongodb:\n  uri: \"{}\"\n  passwordFile: secrets/backup.pw\n",
            uri(port, "backup@", "")
        ),
    );
    let mut outputs: Vec<(String, Run)> = Vec::new();
    let mut check = |what: &str, run: Run, code: i32| {
        assert_eq!(run.code, code, "{what}: {}{}", run.stdout, run.stderr);
        outputs.push((what.to_string(), run));
    };

    // Back up with `read` only, from the password file.
    check("run", dcb(&s, &["run", "--all"], &[]), 0);
    check("verify", dcb(&s, &["verify", "--sample", "10"], &[]), 0);
    check("list", dcb(&s, &["list"], &[]), 0);
    // The same user with the password in the URI.
    let with_pw = uri(port, &format!("backup:{BACKUP_PW}@"), "");
    check(
        "run (password in URI)",
        dcb(&s, &["run", "--all"], &[("DCB_MONGODB_URI", &with_pw)]),
        0,
    );
    // `read` cannot restore: a clear error, nothing written.
    let run = dcb(&s, &["restore", "--to-database", "mes_restored"], &[]);
    assert!(run.stderr.contains("not authorized"), "{}", run.stderr);
    check("restore as backup", run, 1);
    // A wrong password: a clear error that names no password.
    s.write("secrets/wrong.pw", WRONG_PW);
    let run = dcb(
        &s,
        &["run", "--all"],
        &[("DCB_MONGODB_PASSWORD_FILE", "secrets/wrong.pw")],
    );
    assert!(
        run.stdout.contains("authentication failed"),
        "{}{}",
        run.stdout,
        run.stderr
    );
    check("run with a wrong password", run, 1);

    // Restore with `readWrite` on the target only.
    let restorer = [
        ("DCB_MONGODB_URI", uri(port, "restorer@", "")),
        (
            "DCB_MONGODB_PASSWORD_FILE",
            "secrets/restore.pw".to_string(),
        ),
    ];
    let restorer: Vec<(&str, &str)> = restorer.iter().map(|(k, v)| (*k, v.as_str())).collect();
    check(
        "restore",
        dcb(&s, &["restore", "--to-database", "mes_restored"], &restorer),
        0,
    );
    let run = dcb(&s, &["restore", "--to-database", "elsewhere"], &restorer);
    assert!(run.stderr.contains("not authorized"), "{}", run.stderr);
    check("restore elsewhere", run, 1);
    let root_client = mongodb::Client::with_uri_str(uri(port, "root:root-pw@", ""))
        .await
        .unwrap();
    let restored = root_client
        .database("mes_restored")
        .collection::<Document>("scans")
        .count_documents(doc! {})
        .await
        .unwrap();
    assert_eq!(restored, 300);

    // The service, with status while it runs.
    let serve = s
        .dcb()
        .args(["serve", "--http", "127.0.0.1:0"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let root = s.path().join("backups");
    support::eventually(20, "the service's first run", || {
        std::fs::read_to_string(root.join("logs/service.json"))
            .ok()
            .filter(|t| t.contains("\"pid\""))
    });
    tokio::time::sleep(Duration::from_secs(2)).await;
    check("status", dcb(&s, &["status", "--json"], &[]), 0);
    check("stop", dcb(&s, &["stop"], &[]), 0);
    let out = serve.wait_with_output().unwrap();
    check("serve", Run::from(out), 0);
    server.stop();

    for (what, run) in &outputs {
        for pw in [BACKUP_PW, RESTORE_PW, WRONG_PW] {
            assert!(
                !run.stdout.contains(pw) && !run.stderr.contains(pw),
                "{what} printed a password:\n{}{}",
                run.stdout,
                run.stderr
            );
        }
    }
    let written = files(&root);
    assert!(written.iter().any(|p| p.ends_with("logs/audit.log")));
    for f in &written {
        let bytes = std::fs::read(f).unwrap();
        for pw in [BACKUP_PW, RESTORE_PW, WRONG_PW] {
            assert!(!contains(&bytes, pw), "{} holds a password", f.display());
        }
    }
    // `--help` shows no default that could hold one either.
    let help = s.run(&["--help"]);
    assert!(!help.stdout.contains("mongodb://"), "{}", help.stdout);
}

// Redaction, positively: a run and a service that fail against a server whose URI
// holds a password name that server with the password masked (`backup:***@`) on
// stdout, in the daily log and in alerts.log, and the password itself is nowhere.
#[tokio::test]
async fn failures_show_the_uri_with_the_password_masked() {
    let s = Scratch::new();
    let closed = support::free_port();
    let secret = "Masked-pw-4kR7vW";
    let with_pw = format!(
        "mongodb://backup:{secret}@127.0.0.1:{closed}/?serverSelectionTimeoutMS=300&connectTimeoutMS=300"
    );
    let masked = format!("mongodb://backup:***@127.0.0.1:{closed}/");
    s.write(
        "policies/p.yaml",
        "name: p\nschedule: \"* * * * * *\"\ndatabase: mes\ncollections: [scans]\nretention: 7d\n",
    );
    let env = [("DCB_MONGODB_URI", with_pw.as_str())];
    let run = dcb(&s, &["run", "--all"], &env);
    assert_eq!(run.code, 1, "{}{}", run.stdout, run.stderr);
    assert!(
        run.stdout.contains("server unreachable") && run.stdout.contains(&masked),
        "the failure names the server, masked: {}",
        run.stdout
    );
    let root = s.path().join("backups");
    let daily = || -> String {
        files(&root.join("logs"))
            .into_iter()
            .filter(|p| p.file_name().unwrap().to_string_lossy().starts_with("dcb."))
            .map(|p| std::fs::read_to_string(p).unwrap())
            .collect()
    };
    assert!(daily().contains(&masked), "daily log: {}", daily());

    // The service: its failing runs alert (threshold 1), naming the server masked.
    s.write(
        "dcb.yaml",
        "health:\n  interval: 1h\n  failureThreshold: 1\nalerts:\n  notifiers: []\n",
    );
    let service = Service::start(&s, &env);
    let alerts_log = root.join("logs/alerts.log");
    let alert = support::eventually(30, "a failure alert in alerts.log", || {
        lines_of(&alerts_log)
            .into_iter()
            .find(|a| a["key"] == "failures:p/mes/scans" && a["kind"] == "failure")
    });
    service.stop(&s, &env);
    assert!(
        alert["message"]
            .as_str()
            .unwrap_or_default()
            .contains(&masked),
        "{alert}"
    );
    assert!(
        std::fs::read_to_string(&alerts_log)
            .unwrap()
            .contains(&masked),
        "alerts.log"
    );
    for f in files(&root) {
        assert!(
            !contains(&std::fs::read(&f).unwrap(), secret),
            "{} holds the password",
            f.display()
        );
    }
    assert!(!run.stdout.contains(secret) && !run.stderr.contains(secret));
}

// Every file and folder dcb writes under the backup root is owner-only.
#[cfg(unix)]
#[tokio::test]
async fn files_are_owner_only_and_operations_are_audited() {
    use std::os::unix::fs::PermissionsExt;
    let client = support::client().await;
    let db = support::unique_db("perm");
    client
        .database(&db)
        .collection::<Document>("scans")
        .insert_many((0..50).map(|i| doc! {"createdAt": DateTime::from_millis(DateTime::now().timestamp_millis() - 1000), "i": i}))
        .await
        .unwrap();
    let s = Scratch::new();
    s.write(
        "policies/p.yaml",
        &format!("name: p\nschedule: \"0 * * * *\"\ndatabase: {db}\nwindow: {{initial: all, settle: 0s}}\ncollections: [scans]\nretention: 1h\nkeepLast: 0\n"),
    );
    let env = [("DCB_MONGODB_URI", support::server().uri.as_str())];
    assert_eq!(dcb(&s, &["run", "--all"], &env).code, 0);
    assert_eq!(dcb(&s, &["verify"], &env).code, 0);
    let target = format!("{db}_restored");
    assert_eq!(
        dcb(&s, &["restore", "--to-database", &target], &env).code,
        0
    );
    let root = s.path().join("backups");
    let mut paths = files(&root);
    paths.push(root.join("p"));
    paths.push(root.join("logs"));
    for p in &paths {
        let mode = std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode & 0o077, 0, "{} is {mode:o}", p.display());
    }
    // Retention deletes the archive once its window is over an hour old: age it.
    let manifest = files(&root.join("p"))
        .into_iter()
        .find(|p| p.to_string_lossy().ends_with(".manifest.json"))
        .unwrap();
    let mut m: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&manifest).unwrap()).unwrap();
    m["to"] = "2020-01-01T00:00:00Z".into();
    std::fs::write(&manifest, serde_json::to_vec(&m).unwrap()).unwrap();
    assert_eq!(dcb(&s, &["prune"], &env).code, 0);

    let audit = std::fs::read_to_string(root.join("logs/audit.log")).unwrap();
    let lines: Vec<serde_json::Value> = audit
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let ops: Vec<&str> = lines
        .iter()
        .map(|l| l["operation"].as_str().unwrap())
        .collect();
    for op in ["run", "verify", "restore", "prune"] {
        assert!(ops.contains(&op), "{op} not audited: {audit}");
    }
    for l in &lines {
        assert!(
            l["time"].is_string() && l["host"].is_string() && l["user"].is_string(),
            "{l}"
        );
        assert_eq!(l["result"], "ok", "{l}");
    }
    let run = lines.iter().find(|l| l["operation"] == "run").unwrap();
    assert_eq!(run["policy"], "p");
    assert_eq!(run["source"], format!("{db}.scans"));
    let restore = lines.iter().find(|l| l["operation"] == "restore").unwrap();
    assert_eq!(restore["target"], format!("{target}.scans"));
}

fn write(path: &Path, text: &str) {
    std::fs::write(path, text).unwrap();
}

// TLS with a CA and a client certificate made by the test; without the CA the
// connection is refused clearly.
#[tokio::test]
async fn tls_with_a_private_ca_and_client_certificate() {
    use rcgen::{BasicConstraints, CertificateParams, IsCa, KeyPair};
    let dir = tempfile::tempdir().unwrap();
    let ca_key = KeyPair::generate().unwrap();
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    // Distinct names: a leaf whose issuer name equals its own looks self-signed.
    ca_params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "dcb test CA");
    let ca = ca_params.self_signed(&ca_key).unwrap();
    let issue = |names: Vec<String>| {
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::new(names.clone()).unwrap();
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, names[0].as_str());
        let cert = params.signed_by(&key, &ca, &ca_key).unwrap();
        (cert.pem(), key.serialize_pem())
    };
    let (server_cert, server_key) = issue(vec!["localhost".into(), "127.0.0.1".into()]);
    let (client_cert, client_key) = issue(vec!["dcb-client".into()]);
    let p = |n: &str| dir.path().join(n);
    write(&p("ca.pem"), &ca.pem());
    write(&p("server.pem"), &server_cert);
    write(&p("server.key"), &server_key);
    write(&p("client.pem"), &format!("{client_cert}{client_key}"));

    let port = support::free_port();
    let storage = dir.path().join("data");
    let server = support::start_server_at(
        port,
        &storage,
        &[
            "--tls-cert-file",
            p("server.pem").to_str().unwrap(),
            "--tls-key-file",
            p("server.key").to_str().unwrap(),
            "--tls-ca-file",
            p("ca.pem").to_str().unwrap(),
            "--tls-require-client-cert",
        ],
    );
    let s = Scratch::new();
    s.write(
        "policies/p.yaml",
        "name: p\nschedule: \"0 * * * *\"\ndatabase: mes\nwindow: {initial: all, settle: 0s}\ncollections: [scans]\nretention: 7d\n",
    );
    s.write(
        "dcb.yaml",
        &format!(
            "mongodb:\n  uri: mongodb://localhost:{port}/?directConnection=true\n  tls:\n    caFile: {}\n    certificateKeyFile: {}\n",
            p("ca.pem").display(),
            p("client.pem").display()
        ),
    );
    // Seed through dcb's own path: a restore of nothing would not prove much, so
    // write with the driver using the same TLS settings.
    let mut opts = mongodb::options::ClientOptions::parse(format!(
        "mongodb://localhost:{port}/?directConnection=true&tls=true"
    ))
    .await
    .unwrap();
    opts.tls = Some(mongodb::options::Tls::Enabled(
        mongodb::options::TlsOptions::builder()
            .ca_file_path(p("ca.pem"))
            .cert_key_file_path(p("client.pem"))
            .build(),
    ));
    let client = mongodb::Client::with_options(opts).unwrap();
    // A user of the backed-up database itself (`authSource=mes`), as factories often
    // make them.
    client
        .database("mes")
        .run_command(doc! {"createUser": "local", "pwd": LOCAL_PW, "roles": [{"role": "read", "db": "mes"}], "mechanisms": ["SCRAM-SHA-256"]})
        .await
        .unwrap();
    let now = DateTime::from_millis(DateTime::now().timestamp_millis() - 1000);
    client
        .database("mes")
        .collection::<Document>("scans")
        .insert_many((0..40).map(|i| doc! {"createdAt": now, "i": i}))
        .await
        .unwrap();

    let run = s.run(&["run", "--all"]);
    assert_eq!(run.code, 0, "{}{}", run.stdout, run.stderr);
    assert!(run.stdout.contains("40 docs"), "{}", run.stdout);
    let run = s.run(&["restore", "--to-database", "mes_tls_restored"]);
    assert_eq!(run.code, 0, "{}{}", run.stdout, run.stderr);

    // Without the CA, the server's certificate is not trusted: a clear failure.
    s.write(
        "untrusting.yaml",
        &format!("mongodb:\n  uri: mongodb://localhost:{port}/?directConnection=true&tls=true&serverSelectionTimeoutMS=3000\n"),
    );
    let run = s.run(&["--config", "untrusting.yaml", "run", "--all"]);
    assert_eq!(run.code, 1, "{}{}", run.stdout, run.stderr);
    let line = run
        .stdout
        .lines()
        .find(|l| l.starts_with("FAILED  p/scans  "))
        .unwrap_or_else(|| panic!("no failure line: {}{}", run.stdout, run.stderr));
    // The cause is the certificate (no CA vouches for it), not any failure.
    assert!(
        line.contains("server unreachable")
            && line.contains("invalid peer certificate: UnknownIssuer"),
        "{line}"
    );
    server.stop();
}

// Archives encrypted to an age recipient hold no plaintext; list works without a key;
// verify and restore need the identity and say so clearly when it is missing or wrong.
#[tokio::test]
async fn encrypted_archives_round_trip_with_the_identity() {
    use age::secrecy::ExposeSecret;
    let client = support::client().await;
    let db = support::unique_db("enc");
    let marker = "PLAINTEXT-MARKER-91c2";
    let now = DateTime::from_millis(DateTime::now().timestamp_millis() - 1000);
    client
        .database(&db)
        .collection::<Document>("scans")
        .insert_many((0..200).map(|i| doc! {"createdAt": now, "i": i, "note": marker}))
        .await
        .unwrap();
    let s = Scratch::new();
    let key = age::x25519::Identity::generate();
    let other = age::x25519::Identity::generate();
    s.write(
        "keys/backup.key",
        &format!("{}\n", key.to_string().expose_secret()),
    );
    s.write("keys/other.key", other.to_string().expose_secret());
    s.write(
        "policies/p.yaml",
        &format!(
            "name: p\nschedule: \"0 * * * *\"\ndatabase: {db}\nwindow: {{initial: all, settle: 0s}}\ncollections: [scans]\nretention: 7d\nencryption:\n  recipients: [{}]\n",
            key.to_public()
        ),
    );
    let env = [("DCB_MONGODB_URI", support::server().uri.as_str())];
    let run = dcb(&s, &["run", "--all"], &env);
    assert_eq!(run.code, 0, "{}{}", run.stdout, run.stderr);
    let root = s.path().join("backups");
    let archives: Vec<PathBuf> = files(&root.join("p"))
        .into_iter()
        .filter(|p| p.to_string_lossy().ends_with(".tar.gz.age"))
        .collect();
    assert_eq!(archives.len(), 1, "{:?}", files(&root.join("p")));
    let bytes = std::fs::read(&archives[0]).unwrap();
    assert!(bytes.starts_with(b"age-encryption.org/v1"));
    assert!(!contains(&bytes, marker));
    for f in files(&root) {
        assert!(
            !contains(&std::fs::read(&f).unwrap(), marker),
            "{} holds plaintext",
            f.display()
        );
    }

    let list = dcb(&s, &["list"], &env);
    assert!(list.stdout.contains(".tar.gz.age"), "{}", list.stdout);
    // No identity, one that opens nothing, an unreadable file: a configuration error
    // (exit 2) that says so, never corruption.
    let run = dcb(&s, &["verify"], &env);
    assert_eq!(run.code, 2, "{}{}", run.stdout, run.stderr);
    assert!(
        run.stdout.contains("NO KEY") && run.stdout.contains("--identity"),
        "{}",
        run.stdout
    );
    assert!(
        !run.stdout.contains("CORRUPT") && run.stdout.contains("0 corrupt, 1 not opened"),
        "{}",
        run.stdout
    );
    let run = dcb(&s, &["verify", "--identity", "keys/other.key"], &env);
    assert_eq!(run.code, 2, "{}{}", run.stdout, run.stderr);
    assert!(
        run.stdout.contains("no identity in keys/other.key opens"),
        "{}",
        run.stdout
    );
    let run = dcb(&s, &["verify", "--identity", "keys/none.key"], &env);
    assert_eq!(run.code, 2, "{}{}", run.stdout, run.stderr);
    assert!(
        run.stderr.contains("cannot read the identity file"),
        "{}",
        run.stderr
    );
    let target = format!("{db}_restored");
    for identity in [None, Some("keys/other.key")] {
        let mut args = vec!["restore", "--to-database", &target];
        args.extend(identity.iter().flat_map(|i| ["--identity", *i]));
        let run = dcb(&s, &args, &env);
        assert_eq!(run.code, 2, "{identity:?}: {}{}", run.stdout, run.stderr);
        assert!(
            !run.stderr.contains("is corrupt") && run.stderr.contains("nothing was written"),
            "{}",
            run.stderr
        );
        assert!(
            run.stderr.contains("--identity") || run.stderr.contains("no identity in"),
            "{}",
            run.stderr
        );
    }
    // None of that is a failed verification: the catalog shows the archive as never
    // verified, and the audit log says `no-key`.
    let listed: serde_json::Value =
        serde_json::from_str(&dcb(&s, &["list", "--json"], &env).stdout).unwrap();
    assert!(listed[0]["verified"].is_null(), "{listed:#}");
    let audit = std::fs::read_to_string(root.join("logs/audit.log")).unwrap();
    let verifies: Vec<serde_json::Value> = audit
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .filter(|l| l["operation"] == "verify")
        .collect();
    assert!(
        !verifies.is_empty() && verifies.iter().all(|l| l["result"] == "no-key"),
        "{audit}"
    );
    let run = dcb(&s, &["verify", "--identity", "keys/backup.key"], &env);
    assert_eq!(run.code, 0, "{}{}", run.stdout, run.stderr);
    let list = dcb(&s, &["list"], &env);
    assert!(
        list.stdout.contains(" ok ") && !list.stdout.contains("hash ok"),
        "{}",
        list.stdout
    );
    let run = dcb(
        &s,
        &[
            "restore",
            "--to-database",
            &target,
            "--identity",
            "keys/backup.key",
        ],
        &env,
    );
    assert_eq!(run.code, 0, "{}{}", run.stdout, run.stderr);
    let n = client
        .database(&target)
        .collection::<Document>("scans")
        .count_documents(doc! {"note": marker})
        .await
        .unwrap();
    assert_eq!(n, 200);

    // A recipient that is not one is a validation error at its line.
    s.write(
        "policies/p.yaml",
        &format!("name: p\nschedule: \"0 * * * *\"\ndatabase: {db}\ncollections: [scans]\nretention: 7d\nencryption:\n  recipients: [age1notakey]\n"),
    );
    let run = s.run(&["validate"]);
    assert_eq!(run.code, 1, "{}", run.stdout);
    assert!(
        run.stdout.contains("p.yaml:7:") && run.stdout.contains("age1notakey"),
        "{}",
        run.stdout
    );
}

/// The stock `age` command, if it is on PATH. Under CI its absence fails the test
/// (scripts/setup-test-env.sh installs it); elsewhere it is said loudly.
fn stock_age() -> Option<PathBuf> {
    let found = std::env::var_os("PATH").and_then(|path| {
        std::env::split_paths(&path)
            .map(|d| d.join("age"))
            .find(|p| p.is_file())
    });
    if found.is_none() {
        assert!(
            std::env::var_os("CI").is_none_or(|v| v.is_empty()),
            "the stock `age` command is not on PATH, and CI is set: install it \
             (scripts/setup-test-env.sh does, with apt-get install age)"
        );
        eprintln!(
            "NOTICE: the stock `age` command is not on PATH; the finished archive is NOT \
             opened with it (run scripts/setup-test-env.sh)"
        );
    }
    found
}

// No plaintext reaches the disk while an encrypted archive is written: with the
// export held in the middle of its cursor (a `getMore` fail point) after more than a
// megabyte of uncompressed (level 0) documents went to the spool, no file under the
// backup root holds a document's text. The finished archive opens with the stock
// `age -d` and `tar xz`, and holds every document.
#[tokio::test]
async fn no_plaintext_on_disk_while_an_encrypted_archive_is_written() {
    use age::secrecy::ExposeSecret;
    use std::io::Read;
    let server = support::start_server(&["--enable-test-commands"]);
    let client = mongodb::Client::with_uri_str(&server.uri).await.unwrap();
    let db = support::unique_db("spool");
    let marker = "PLAINTEXT-MARKER-5c1d";
    let at = DateTime::from_millis(DateTime::now().timestamp_millis() - 1000);
    // More than one batch (4096), each document over 500 bytes: the first batch alone
    // is over 2 MB, more than the writer buffers before the spool file.
    let note = format!("{marker} {}", "x".repeat(500));
    client
        .database(&db)
        .collection::<Document>("scans")
        .insert_many((0..6000).map(|i| doc! {"createdAt": at, "i": i, "note": &note}))
        .await
        .unwrap();
    let s = Scratch::new();
    let key = age::x25519::Identity::generate();
    let key_file = s.write(
        "keys/backup.key",
        &format!("{}\n", key.to_string().expose_secret()),
    );
    s.write(
        "policies/p.yaml",
        &format!(
            "name: p\nschedule: \"0 * * * *\"\ndatabase: {db}\nwindow: {{initial: all, settle: 0s}}\ncollections: [scans]\nretention: 7d\ncompression: {{level: 0}}\nencryption:\n  recipients: [{}]\n",
            key.to_public()
        ),
    );
    client
        .database("admin")
        .run_command(
            doc! {"configureFailPoint": "failCommand", "mode": {"times": 1},
            "data": {"failCommands": ["getMore"], "blockConnection": true, "blockTimeMS": 8_000}},
        )
        .await
        .unwrap();
    let mut child = s
        .dcb()
        .args(["run", "--all"])
        .env("DCB_MONGODB_URI", &server.uri)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let root = s.path().join("backups");
    // Held: temporary files under the backup root hold over a megabyte.
    let temp = support::eventually(20, "a megabyte spooled", || {
        let dir = root.join("p");
        if !dir.is_dir() {
            return None;
        }
        files(&dir).into_iter().find(|p| {
            p.to_string_lossy().ends_with(".dcb-tmp")
                && std::fs::metadata(p).is_ok_and(|m| m.len() > 1 << 20)
        })
    });
    for f in files(&root) {
        let bytes = std::fs::read(&f).unwrap_or_default();
        assert!(
            !contains(&bytes, marker),
            "{} holds plaintext while the export is held",
            f.display()
        );
    }
    assert!(
        child.try_wait().unwrap().is_none(),
        "the run ended before the files were read: the scan proves nothing"
    );
    let run = Run::from(child.wait_with_output().unwrap());
    assert_eq!(run.code, 0, "{}{}", run.stdout, run.stderr);
    assert!(run.stdout.contains("6000 docs"), "{}", run.stdout);
    assert!(!temp.exists(), "the spool is removed");
    let archive = files(&root.join("p"))
        .into_iter()
        .find(|p| p.to_string_lossy().ends_with(".tar.gz.age"))
        .expect("the archive");
    for f in files(&root) {
        assert!(
            !contains(&std::fs::read(&f).unwrap(), marker),
            "{}",
            f.display()
        );
    }

    // The stock tools open it.
    let Some(age) = stock_age() else { return };
    let out = tempfile::tempdir().unwrap();
    let gz = out.path().join("a.tar.gz");
    let st = std::process::Command::new(age)
        .arg("-d")
        .arg("-i")
        .arg(&key_file)
        .arg("-o")
        .arg(&gz)
        .arg(&archive)
        .status()
        .unwrap();
    assert!(st.success(), "age -d failed");
    let st = std::process::Command::new("tar")
        .arg("xzf")
        .arg(&gz)
        .arg("-C")
        .arg(out.path())
        .status()
        .unwrap();
    assert!(st.success(), "tar xzf failed");
    let mut bson = Vec::new();
    std::fs::File::open(out.path().join(&db).join("scans.bson"))
        .unwrap()
        .read_to_end(&mut bson)
        .unwrap();
    let mut docs = 0;
    let mut rest = &bson[..];
    while !rest.is_empty() {
        let d = mongodb::bson::Document::from_reader(&mut rest).unwrap();
        assert_eq!(d.get_str("note").unwrap(), note);
        docs += 1;
    }
    assert_eq!(docs, 6000);
    server.stop();
}

/// `dcb serve` in the background, killed if the test fails before stopping it.
struct Service(Option<std::process::Child>);

impl Service {
    fn start(s: &Scratch, env: &[(&str, &str)]) -> Service {
        let mut cmd = s.dcb();
        cmd.arg("serve")
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null());
        for (k, v) in env {
            cmd.env(k, v);
        }
        let child = cmd.spawn().unwrap();
        let pid = child.id();
        let record = s.path().join("backups/logs/service.json");
        support::eventually(20, "the service record", || {
            let r: serde_json::Value =
                serde_json::from_slice(&std::fs::read(&record).ok()?).ok()?;
            (r["pid"] == pid).then_some(())
        });
        Service(Some(child))
    }

    fn stop(mut self, s: &Scratch, env: &[(&str, &str)]) {
        assert_eq!(dcb(s, &["stop"], env).code, 0);
        let mut child = self.0.take().unwrap();
        let code = support::eventually(30, "the service to exit", || {
            child.try_wait().unwrap().map(|st| st.code().unwrap_or(-1))
        });
        assert_eq!(code, 0);
    }
}

impl Drop for Service {
    fn drop(&mut self) {
        if let Some(mut c) = self.0.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

fn lines_of(path: &Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

// The service without an identity checks new encrypted archives by file hash and
// records that, so `dcb list` says "hash ok", not "ok"; with an identity that opens
// nothing, it records no verification at all (a key problem is not corruption).
#[tokio::test]
async fn service_records_hash_checks_and_no_failure_for_a_wrong_identity() {
    use age::secrecy::ExposeSecret;
    let client = support::client().await;
    let db = support::unique_db("encsvc");
    let coll = client.database(&db).collection::<Document>("scans");
    // Stamped now, and seen by the service 2 s later (settle): never behind a
    // watermark, never in a window already being read.
    let seed = |n: i32| {
        let coll = coll.clone();
        async move {
            let at = DateTime::now();
            coll.insert_many((0..n).map(|i| doc! {"createdAt": at, "i": i}))
                .await
                .unwrap();
        }
    };
    seed(50).await;
    let s = Scratch::new();
    let key = age::x25519::Identity::generate();
    let other = age::x25519::Identity::generate();
    let other_key = s.write("keys/other.key", other.to_string().expose_secret());
    s.write(
        "policies/p.yaml",
        &format!(
            "name: p\nschedule: \"* * * * * *\"\ndatabase: {db}\nwindow: {{initial: all, settle: 2s}}\ncollections: [scans]\nretention: 7d\nencryption:\n  recipients: [{}]\n",
            key.to_public()
        ),
    );
    let env = [("DCB_MONGODB_URI", support::server().uri.as_str())];
    let root = s.path().join("backups");
    let verify_log = root.join("logs/verify.log");

    let service = Service::start(&s, &env);
    let first = support::eventually(30, "a hash check of the first archive", || {
        lines_of(&verify_log).into_iter().next()
    });
    service.stop(&s, &env);
    assert_eq!(first["ok"], true, "{first}");
    assert_eq!(first["checked"], "hash", "{first}");
    let listed: serde_json::Value =
        serde_json::from_str(&dcb(&s, &["list", "--json"], &env).stdout).unwrap();
    assert_eq!(listed[0]["verified"]["checked"], "hash", "{listed:#}");
    let table = dcb(&s, &["list"], &env).stdout;
    assert!(
        table.contains("hash ok ") && table.contains("only the file's SHA-256 was checked"),
        "{table}"
    );

    // Now with an identity file that opens nothing.
    s.write(
        "dcb.yaml",
        &format!("encryption:\n  identityFile: {}\n", other_key.display()),
    );
    let recorded = lines_of(&verify_log).len();
    let no_key = || {
        lines_of(&root.join("logs/audit.log"))
            .iter()
            .filter(|l| l["operation"] == "verify" && l["result"] == "no-key")
            .count()
    };
    let service = Service::start(&s, &env);
    seed(20).await;
    support::eventually(30, "the service to try the new archive", || {
        (no_key() > 0).then_some(())
    });
    service.stop(&s, &env);
    let lines = lines_of(&verify_log);
    assert_eq!(
        lines.len(),
        recorded,
        "no verification recorded: {lines:#?}"
    );
    let table = dcb(&s, &["list"], &env).stdout;
    assert!(!table.contains("FAILED"), "{table}");
    // The alert is about the key, not about a corrupt archive.
    let alerts = lines_of(&root.join("logs/alerts.log"));
    assert!(
        alerts
            .iter()
            .any(|a| a["key"] == "identity:p" && a["kind"] == "failure"),
        "{alerts:#?}"
    );
    assert!(
        !alerts
            .iter()
            .any(|a| a["title"].as_str().unwrap_or("").contains("corrupt")),
        "{alerts:#?}"
    );
}

// An invalid dcb.yaml never prints a secret: the diagnostics quote the offending line
// and value, and a line holding a URI's password, an S3 secret key, a notifier's
// password or a `${VAR}` read into a URI shows `***` instead, in every format of
// `dcb validate` and in `dcb run`'s errors; the problems themselves are still reported.
#[test]
fn invalid_config_diagnostics_hide_secrets() {
    let secrets = [
        "Sn1ppetUriPw",
        "wJalrSn1ppetKey",
        "99887766",
        "Int3rpSn1ppetPw",
        "T0kSn1ppet",
    ];
    let s = Scratch::new();
    s.write(
        "policies/demo.yaml",
        "name: demo\nschedule: \"0 2 * * *\"\ndatabase: mes\ncollections: [scans]\nretention: 30d\n",
    );
    let cases = [
        (
            "mongodbUri: mongodb://backup:Sn1ppetUriPw@db.local/mes\n",
            "unknown-field",
        ),
        (
            "targets:\n  offsite:\n    type: s3\n    bucket: factory-backups\n    secretAccessKey: wJalrSn1ppetKey\n",
            "unknown-field",
        ),
        (
            "alerts:\n  notifiers:\n    - {type: email, host: smtp.local, username: u, password: 99887766, from: a@b.cn, to: [c@d.cn]}\n",
            "invalid-type",
        ),
        (
            "mongodb: mongodb://backup:${SNIPPET_PW}@db.local/mes\n",
            "invalid-type",
        ),
        (
            "alerts:\n  notifiers:\n    - {type: dingtalk, url: 'https://oapi.dingtalk.com/robot/send?access_token=T0kSn1ppet', secert: x}\n",
            "unknown-field",
        ),
    ];
    let env = [("SNIPPET_PW", "Int3rpSn1ppetPw")];
    for (yaml, code) in cases {
        s.write("dcb.yaml", yaml);
        let mut runs = Vec::new();
        for format in ["human", "json", "github"] {
            runs.push(dcb(&s, &["validate", "--format", format], &env));
        }
        runs.push(dcb(&s, &["run", "--all"], &env));
        for run in &runs {
            assert_ne!(run.code, 0, "{yaml}\n{}", run.stderr);
            let out = format!("{}{}", run.stdout, run.stderr);
            assert!(out.contains(code), "{yaml}: no {code} in\n{out}");
            for secret in secrets {
                assert!(!out.contains(secret), "`{secret}` shown for\n{yaml}\n{out}");
            }
        }
        // The human form still quotes the line, with the secret hidden.
        assert!(runs[0].stdout.contains("***"), "{}", runs[0].stdout);
    }
}
