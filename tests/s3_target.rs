//! The S3 storage target against a real S3-protocol server on loopback (moto, with
//! signatures and IAM policies enforced): round trips, put-if-absent on both upload
//! paths, the manifest as commit marker, interrupted and killed uploads, refused
//! writes, credentials, and the memory an upload takes.

mod support;

use std::io::{self, Read};
use std::path::Path;

use dcb::storage::Target;
use dcb::storage::s3::{Credentials, S3};
use serde_json::json;
use support::s3::{
    MIB, admin, child, child_target, commit, config, config_at, env, random_file, s3_server, target,
};

// A 20 MiB three-part archive commits, lists, reads back byte for byte and deletes.
#[test]
fn round_trip_of_a_multipart_archive() {
    let server = s3_server();
    let spool = tempfile::tempdir().unwrap();
    let (t, bucket) = target(spool.path());
    let staged = t.stage("hot/a.tar.gz").unwrap();
    assert!(staged.starts_with(t.spool()) && !staged.exists());
    assert!(
        staged
            .file_name()
            .unwrap()
            .to_string_lossy()
            .ends_with(".dcb-tmp")
    );
    let bytes = random_file(&staged, 20 * MIB, 1);

    let t = std::sync::Arc::new(t);
    let rt = tokio::runtime::Runtime::new().unwrap();
    let (t2, staged2) = (t.clone(), staged.clone());
    rt.block_on(rt.spawn_blocking(move || {
        t2.commit(
            &staged2,
            "hot/a.tar.gz",
            "hot/a.manifest.json",
            b"{\"n\":1}",
        )
    }))
    .unwrap()
    .unwrap();
    assert!(
        staged.exists(),
        "commit uploads; the caller's guard removes the staged file"
    );

    assert_eq!(
        server.keys(&bucket),
        ["site/dcb/hot/a.manifest.json", "site/dcb/hot/a.tar.gz"]
    );
    let listed: Vec<(String, u64)> = t
        .list("hot/")
        .unwrap()
        .into_iter()
        .map(|o| (o.key, o.size))
        .collect();
    assert_eq!(
        listed,
        [
            ("hot/a.manifest.json".to_string(), 7),
            ("hot/a.tar.gz".to_string(), bytes.len() as u64)
        ]
    );
    assert!(t.list("cold/").unwrap().is_empty());
    assert_eq!(t.list("").unwrap().len(), 2);

    let mut streamed = Vec::new();
    t.open("hot/a.tar.gz")
        .unwrap()
        .read_to_end(&mut streamed)
        .unwrap();
    assert!(streamed == bytes, "streamed read differs");
    assert!(
        t.read("hot/a.tar.gz").unwrap() == bytes,
        "whole read differs"
    );
    assert_eq!(
        server.get(&bucket, "site/dcb/hot/a.tar.gz").unwrap().len(),
        bytes.len()
    );
    assert!(server.uploads(&bucket).is_empty());
    assert_eq!(t.local_path("hot/a.tar.gz"), None);

    t.delete("hot/a.tar.gz").unwrap();
    t.delete("hot/a.tar.gz").unwrap();
    assert_eq!(server.keys(&bucket), ["site/dcb/hot/a.manifest.json"]);
    assert_eq!(
        t.open("hot/a.tar.gz").err().unwrap().kind(),
        io::ErrorKind::NotFound
    );
    assert_eq!(
        t.read("hot/a.tar.gz").unwrap_err().kind(),
        io::ErrorKind::NotFound
    );
    assert_eq!(
        t.read("../x").unwrap_err().kind(),
        io::ErrorKind::InvalidInput
    );
}

// A second commit of a key fails AlreadyExists, first kept, on single and multipart.
#[test]
fn commit_is_put_if_absent_on_both_paths() {
    let server = s3_server();
    let spool = tempfile::tempdir().unwrap();
    let (t, bucket) = target(spool.path());
    let dir = tempfile::tempdir().unwrap();
    for (name, len) in [("small", 1000), ("large", 17 * MIB)] {
        let key = format!("hot/{name}.tar.gz");
        let first = random_file(&dir.path().join("first"), len, 2);
        commit(&t, &key, &first, b"first").unwrap();
        let second = random_file(&dir.path().join("second"), len, 3);
        let e = commit(&t, &key, &second, b"second").unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::AlreadyExists, "{name}: {e}");
        assert!(e.to_string().contains(&key), "{e}");
        assert!(
            t.read(&key).unwrap() == first,
            "{name}: the first archive changed"
        );
        let manifest = key.replace(".tar.gz", ".manifest.json");
        assert_eq!(t.read(&manifest).unwrap(), b"first");
        assert!(
            server.uploads(&bucket).is_empty(),
            "{name}: an upload was left"
        );
    }
}

// A manifest that cannot be put fails the commit and deletes the uploaded archive.
#[test]
fn manifest_failure_removes_the_archive() {
    let server = s3_server();
    let spool = tempfile::tempdir().unwrap();
    let (t, bucket) = target(spool.path());
    server.put(&bucket, "site/dcb/hot/b.manifest.json", b"someone else's");
    let e = commit(&t, "hot/b.tar.gz", &[7; 4096], b"mine").unwrap_err();
    assert_eq!(e.kind(), io::ErrorKind::AlreadyExists);
    assert!(e.to_string().contains("hot/b.manifest.json"), "{e}");
    assert_eq!(server.keys(&bucket), ["site/dcb/hot/b.manifest.json"]);
    assert_eq!(t.read("hot/b.manifest.json").unwrap(), b"someone else's");
}

// Dropped or aborted uploads leave nothing; remove_leftovers clears a crash's debris.
#[test]
fn interrupted_uploads_leave_nothing_and_leftovers_are_removed() {
    let server = s3_server();
    let spool = tempfile::tempdir().unwrap();
    let (t, bucket) = target(spool.path());
    for explicit in [false, true] {
        // 40 MiB: with two parts in flight, the third waits for the first to be stored.
        let mut upload = t.upload("hot/c.tar.gz", 40 * MIB as u64).unwrap();
        for _ in 0..40 {
            upload.write(vec![1; MIB]).unwrap();
        }
        let parts = server.uploads(&bucket);
        assert_eq!(parts.len(), 1, "{parts:?}");
        assert!(
            parts[0].2 >= 1,
            "parts were sent before the interruption: {parts:?}"
        );
        if explicit {
            upload.abort().unwrap();
        } else {
            drop(upload);
        }
        assert!(server.uploads(&bucket).is_empty(), "parts left behind");
        assert!(
            server.keys(&bucket).is_empty(),
            "a partial object was committed"
        );
    }

    commit(&t, "hot/kept.tar.gz", b"kept", b"{}").unwrap();
    server.start_upload(&bucket, "site/dcb/hot/crashed.tar.gz", 1);
    server.start_upload(&bucket, "site/dcb/cold/other.tar.gz", 1);
    server.start_upload(&bucket, "elsewhere/hot/x.tar.gz", 1);
    server.put(&bucket, "site/dcb/hot/orphan.tar.gz", b"no manifest");
    server.put(&bucket, "site/dcb/cold/orphan.tar.gz", b"no manifest");
    let stale = t.stage("hot/d.tar.gz").unwrap();
    std::fs::write(&stale, b"partial").unwrap();
    assert!(
        t.list("hot/")
            .unwrap()
            .iter()
            .all(|o| !o.key.contains("orphan"))
    );

    let removed = t.remove_leftovers("hot/");
    assert_eq!(removed.len(), 3, "{removed:#?}");
    assert!(!stale.exists());
    let uploads: Vec<String> = server.uploads(&bucket).into_iter().map(|u| u.0).collect();
    assert_eq!(uploads.len(), 2);
    assert!(
        !uploads.iter().any(|k| k.contains("crashed")),
        "{uploads:?}"
    );
    assert_eq!(
        server.keys(&bucket),
        [
            "site/dcb/cold/orphan.tar.gz",
            "site/dcb/hot/kept.manifest.json",
            "site/dcb/hot/kept.tar.gz"
        ]
    );
    assert_eq!(t.remove_leftovers("").len(), 2, "cold/'s upload and orphan");
    assert_eq!(
        server.uploads(&bucket).len(),
        1,
        "outside the target's prefix: kept"
    );
}

// A process killed mid-upload commits nothing; remove_leftovers aborts its parts.
#[cfg(unix)]
#[test]
fn a_killed_upload_commits_nothing() {
    use std::io::{BufRead, BufReader};
    use std::process::Stdio;
    let server = s3_server();
    let bucket = server.bucket("killed");
    let spool = tempfile::tempdir().unwrap();
    let mut proc = child(
        "child_upload_then_hang",
        &[
            ("DCB_S3_TEST_BUCKET", &bucket),
            ("DCB_S3_TEST_SPOOL", spool.path().to_str().unwrap()),
        ],
    )
    .stdout(Stdio::piped())
    .spawn()
    .unwrap();
    let stdout = BufReader::new(proc.stdout.take().unwrap());
    let sent = stdout
        .lines()
        .map_while(Result::ok)
        .any(|l| l.contains("PARTS SENT"));
    assert!(sent, "the child did not start its upload");
    let uploads = server.uploads(&bucket);
    assert!(uploads.len() == 1 && uploads[0].2 >= 1, "{uploads:?}");
    proc.kill().unwrap();
    proc.wait().unwrap();

    let t = S3::new(
        &config(server, &bucket, "site/dcb"),
        admin(server),
        spool.path(),
    )
    .unwrap();
    assert!(
        server.keys(&bucket).is_empty(),
        "a partial object was committed"
    );
    assert!(t.list("").unwrap().is_empty());
    let removed = t.remove_leftovers("hot/");
    assert_eq!(removed.len(), 1, "{removed:?}");
    assert!(server.uploads(&bucket).is_empty());
}

// Child of a_killed_upload_commits_nothing: sends parts, then waits to be killed.
#[test]
#[ignore = "run as a child process by a_killed_upload_commits_nothing"]
fn child_upload_then_hang() {
    let t = child_target();
    let mut upload = t.upload("hot/e.tar.gz", 64 * MIB as u64).unwrap();
    for _ in 0..40 {
        upload.write(vec![2; MIB]).unwrap();
    }
    println!("PARTS SENT");
    std::thread::sleep(std::time::Duration::from_secs(120));
    std::mem::forget(upload);
}

// Refused writes and a missing bucket fail with a clear error naming op and object.
#[test]
fn refused_writes_are_clear_errors() {
    let server = s3_server();
    let bucket = server.bucket("refusing");
    let policy = json!({"Version": "2012-10-17", "Statement": [{"Effect": "Allow",
        "Action": ["s3:Get*", "s3:List*"], "Resource": "*"}]});
    let (key, secret) = server.user("reader-only", policy);
    let spool = tempfile::tempdir().unwrap();
    let t = S3::new(
        &config(server, &bucket, "site/dcb"),
        Credentials::new(key, secret),
        spool.path(),
    )
    .unwrap();
    for len in [100, 17 * MIB] {
        let e = commit(&t, "hot/f.tar.gz", &vec![3; len], b"{}").unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::PermissionDenied, "{e}");
        let text = e.to_string();
        assert!(
            text.starts_with("cannot write hot/f.tar.gz in s3://"),
            "{text}"
        );
        assert!(
            text.contains(&bucket) && text.contains("AccessDenied"),
            "{text}"
        );
    }
    assert!(server.keys(&bucket).is_empty());
    assert!(t.list("").unwrap().is_empty(), "reading is allowed");

    let t = S3::new(
        &config(server, "no-such-bucket", ""),
        admin(server),
        spool.path(),
    )
    .unwrap();
    let e = commit(&t, "hot/f.tar.gz", b"x", b"{}").unwrap_err();
    assert_eq!(e.kind(), io::ErrorKind::NotFound, "{e}");
    let text = e.to_string();
    assert!(
        text.starts_with("cannot write hot/f.tar.gz in s3://no-such-bucket"),
        "{text}"
    );
    assert!(text.contains("NoSuchBucket"), "{text}");
}

// Credentials are read from files and really used (a wrong secret is refused).
#[test]
fn credentials_from_files() {
    let server = s3_server();
    let bucket = server.bucket("files");
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("key"),
        format!("{}\n", server.access_key_id),
    )
    .unwrap();
    std::fs::write(
        dir.path().join("secret"),
        format!("{}\n", server.secret_access_key),
    )
    .unwrap();
    std::fs::write(dir.path().join("wrong"), "not-the-secret-at-all\n").unwrap();
    let mut c = config(server, &bucket, "");
    c.access_key_id_file = Some("key".into());
    c.secret_access_key_file = Some("secret".into());
    let t = S3::new(&c, c.credentials(dir.path()).unwrap(), dir.path()).unwrap();
    commit(&t, "hot/g.tar.gz", b"g", b"{}").unwrap();
    assert_eq!(server.get(&bucket, "hot/g.tar.gz").unwrap(), b"g");

    c.secret_access_key_file = Some("wrong".into());
    let t = S3::new(&c, c.credentials(dir.path()).unwrap(), dir.path()).unwrap();
    let e = t.read("hot/g.tar.gz").unwrap_err();
    assert_eq!(e.kind(), io::ErrorKind::PermissionDenied, "{e}");
    assert!(e.to_string().contains("SignatureDoesNotMatch"), "{e}");
}

// Credentials are read from the standard or the named environment variables.
#[test]
fn credentials_from_the_environment() {
    let server = s3_server();
    let bucket = server.bucket("env");
    let spool = tempfile::tempdir().unwrap();
    for named in ["", "named"] {
        let (key_var, secret_var) = match named {
            "" => ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"),
            _ => ("DCB_TEST_S3_KEY", "DCB_TEST_S3_SECRET"),
        };
        let out = child(
            "child_commit_with_env_credentials",
            &[
                ("DCB_S3_TEST_BUCKET", &bucket),
                ("DCB_S3_TEST_SPOOL", spool.path().to_str().unwrap()),
                ("DCB_S3_TEST_NAMED", named),
                (key_var, &server.access_key_id),
                (secret_var, &server.secret_access_key),
            ],
        )
        .env_remove(if named.is_empty() {
            "DCB_TEST_S3_KEY"
        } else {
            "AWS_ACCESS_KEY_ID"
        })
        .output()
        .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stdout)
        );
        assert!(String::from_utf8_lossy(&out.stdout).contains("1 passed"));
        let key = format!(
            "hot/{}.tar.gz",
            if named.is_empty() { "std" } else { "named" }
        );
        assert_eq!(server.get(&bucket, &key).unwrap(), b"env");
    }
}

// Child of credentials_from_the_environment: commits with its own environment.
#[test]
#[ignore = "run as a child process by credentials_from_the_environment"]
fn child_commit_with_env_credentials() {
    let named = !env("DCB_S3_TEST_NAMED").is_empty();
    let mut c = config_at(&env("DCB_S3_TEST_ENDPOINT"), &env("DCB_S3_TEST_BUCKET"), "");
    if named {
        c.access_key_id_env = Some("DCB_TEST_S3_KEY".into());
        c.secret_access_key_env = Some("DCB_TEST_S3_SECRET".into());
    }
    let credentials = c.credentials(Path::new(".")).unwrap();
    let t = S3::new(&c, credentials, Path::new(&env("DCB_S3_TEST_SPOOL"))).unwrap();
    let key = format!("hot/{}.tar.gz", if named { "named" } else { "std" });
    commit(&t, &key, b"env", b"{}").unwrap();
}

// Neither half of the key pair shows in Debug, describe or any error.
#[test]
fn credentials_are_never_shown() {
    let server = s3_server();
    let bucket = server.bucket("secret");
    let spool = tempfile::tempdir().unwrap();
    let (id, secret) = ("AKIANEVERSHOWN1234", "never-shown-secret-value-5678");
    let t = S3::new(
        &config(server, &bucket, "p"),
        Credentials::new(id, secret),
        spool.path(),
    )
    .unwrap();
    let e = commit(&t, "hot/h.tar.gz", b"h", b"{}").unwrap_err();
    let shown = [
        format!("{t:?}"),
        t.describe(),
        e.to_string(),
        format!("{e:?}"),
        format!("{:?}", Credentials::new(id, secret)),
        format!("{:?}", t.read("hot/h.tar.gz").unwrap_err()),
    ];
    assert_eq!(t.describe(), format!("s3://{bucket}/p"));
    for text in shown {
        assert!(!text.contains(id) && !text.contains(secret), "{text}");
        assert!(
            !text.contains("AKIANEVER") && !text.contains("never-shown"),
            "{text}"
        );
    }
}

// Committing a 200 MiB archive peaks under 64 MiB of memory (a child's VmHWM).
#[cfg(target_os = "linux")]
#[test]
fn a_large_commit_takes_bounded_memory() {
    let server = s3_server();
    let bucket = server.bucket("memory");
    let spool = tempfile::tempdir().unwrap();
    let file = spool.path().join("big.tar.gz");
    {
        use std::io::Write;
        let mut out = std::io::BufWriter::new(std::fs::File::create(&file).unwrap());
        for i in 0..200u32 {
            out.write_all(&vec![(i % 251) as u8; MIB]).unwrap();
        }
    }
    let out = child(
        "child_commit_a_large_file",
        &[
            ("DCB_S3_TEST_BUCKET", &bucket),
            ("DCB_S3_TEST_SPOOL", spool.path().to_str().unwrap()),
            ("DCB_S3_TEST_FILE", file.to_str().unwrap()),
        ],
    )
    .output()
    .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let peak_kib: u64 = stdout
        .lines()
        .find_map(|l| l.split_once("PEAK_KIB ").map(|(_, n)| n.trim()))
        .unwrap_or_else(|| panic!("the child reports no peak: {stdout}"))
        .parse()
        .unwrap();
    eprintln!("peak memory of a 200 MiB commit: {} MiB", peak_kib / 1024);
    assert!(peak_kib < 64 * 1024, "peak {peak_kib} KiB");
    let t = S3::new(
        &config(server, &bucket, "site/dcb"),
        admin(server),
        spool.path(),
    )
    .unwrap();
    let listed = t.list("hot/").unwrap();
    assert_eq!(listed[1].size, 200 * MIB as u64);
}

// Child of a_large_commit_takes_bounded_memory: commits, then reports VmHWM.
#[cfg(target_os = "linux")]
#[test]
#[ignore = "run as a child process by a_large_commit_takes_bounded_memory"]
fn child_commit_a_large_file() {
    let t = child_target();
    let file = env("DCB_S3_TEST_FILE");
    t.commit(
        Path::new(&file),
        "hot/big.tar.gz",
        "hot/big.manifest.json",
        b"{}",
    )
    .unwrap();
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let hwm = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .unwrap()
        .trim()
        .trim_end_matches(" kB")
        .trim();
    println!("\nPEAK_KIB {hwm}");
}
