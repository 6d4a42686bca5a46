//! The Windows build of dcb (`x86_64-pc-windows-gnu`), run under Wine against the test
//! server on loopback, so that the Windows-only code runs and not only compiles:
//! Windows paths (drive letters, backslashes, spaces, non-ASCII names, canonical
//! `\\?\` forms), the directory-fsync no-op behind every committed archive, replacing
//! state.json, file locks, `process_exists` (OpenProcess) behind `dcb status` and
//! `dcb stop`, and the console Ctrl-C handler of `dcb serve`.
//!
//! Needs Debian's wine64 and a Wine prefix (`scripts/setup-wine.sh`), and the binary
//! `scripts/test.sh` builds: `cargo build --profile wine --target
//! x86_64-pc-windows-gnu --bin dcb`. `scripts/windows/wine-run.sh` runs it, with the
//! stub `bcryptprimitives.dll` beside it that Wine 8.0 lacks. Linux x86-64 only: on
//! Windows the whole suite runs the native build.
#![cfg(all(target_os = "linux", target_arch = "x86_64"))]

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant, SystemTime};

use futures_util::TryStreamExt;
use mongodb::bson::{DateTime, Document, RawDocumentBuf, doc, oid::ObjectId};
use mongodb::{Database, IndexModel};
use support::{Run, archives, eventually, ids_in, oid_json, project_root, read_archives};

const HOW_TO_GET_WINE: &str = "run `scripts/setup-wine.sh` (installs Debian's wine64 and \
the x86_64-pc-windows-gnu target with mingw, and makes the Wine prefix under target/), then \
`cargo build --profile wine --target x86_64-pc-windows-gnu --bin dcb`; `scripts/test.sh` \
does both";

/// The Windows binary: `DCB_WINDOWS_EXE`, else the `wine` profile's build under target/.
/// It must be newer than every source file, or this would test old code.
fn built_exe() -> PathBuf {
    let exe = std::env::var_os("DCB_WINDOWS_EXE")
        .map(PathBuf::from)
        .unwrap_or_else(|| project_root().join("target/x86_64-pc-windows-gnu/wine/dcb.exe"));
    let built = std::fs::metadata(&exe)
        .and_then(|m| m.modified())
        .unwrap_or_else(|e| {
            panic!(
                "no Windows binary at {} ({e}): {HOW_TO_GET_WINE}",
                exe.display()
            )
        });
    let root = project_root();
    let mut sources = vec![root.join("Cargo.toml"), root.join("Cargo.lock")];
    let mut dirs = vec![root.join("src")];
    while let Some(dir) = dirs.pop() {
        for e in std::fs::read_dir(&dir).unwrap().flatten() {
            let p = e.path();
            if p.is_dir() {
                dirs.push(p)
            } else {
                sources.push(p)
            }
        }
    }
    for src in sources {
        let changed = std::fs::metadata(&src).and_then(|m| m.modified()).unwrap();
        assert!(
            changed <= built,
            "{} is older than {}: rebuild it with `cargo build --profile wine --target \
             x86_64-pc-windows-gnu --bin dcb` (scripts/test.sh does)",
            exe.display(),
            src.display()
        );
    }
    exe
}

/// `Z:\…` for a path on this machine: Wine maps drive Z: to `/`.
fn win(p: &Path) -> String {
    let p = p.to_str().expect("UTF-8 path");
    assert!(p.starts_with('/'), "{p} is not absolute");
    format!("Z:{}", p.replace('/', "\\"))
}

/// One Windows session: dcb.exe copied into a folder whose name has a space (as under
/// `C:\Program Files`), and a Wine process kept waiting so that the Wine server (and
/// with it the process ids it gave out) lives as long as the test.
struct Wine {
    dir: tempfile::TempDir,
    exe: PathBuf,
    keeper: Child,
}

impl Wine {
    fn start() -> Wine {
        let built = built_exe();
        let dir = tempfile::tempdir().unwrap();
        let install = dir.path().join("Program Files/dcb");
        std::fs::create_dir_all(&install).unwrap();
        let exe = install.join("dcb.exe");
        std::fs::copy(&built, &exe).unwrap();
        // `cmd` reads commands from its stdin until the test drops it.
        let keeper = Command::new(runner())
            .arg("cmd")
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start Wine ({e}): {HOW_TO_GET_WINE}"));
        Wine { dir, exe, keeper }
    }

    /// `dcb.exe ARGS` in `cwd` with a clean DCB_* environment (and no HOSTNAME, so dcb
    /// names the host by Windows' COMPUTERNAME), as a spawned command.
    fn command(&self, cwd: &Path, args: &[&str], env: &[(&str, &str)]) -> (Command, PathBuf) {
        static N: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let out = self.dir.path().join(format!("out-{n}"));
        std::fs::create_dir(&out).unwrap();
        let mut cmd = Command::new(runner());
        cmd.arg(&self.exe).args(args).current_dir(cwd);
        for (k, _) in std::env::vars() {
            if k.starts_with("DCB_") {
                cmd.env_remove(k);
            }
        }
        cmd.env_remove("HOSTNAME")
            .env("NO_COLOR", "1")
            .envs(env.iter().copied());
        // Files, not pipes: a pipe would stay open as long as any Wine process that
        // inherited it.
        cmd.stdin(Stdio::null())
            .stdout(std::fs::File::create(out.join("stdout")).unwrap())
            .stderr(std::fs::File::create(out.join("stderr")).unwrap());
        (cmd, out)
    }

    /// Run `dcb.exe ARGS` to the end (at most two minutes).
    fn dcb(&self, cwd: &Path, args: &[&str], env: &[(&str, &str)]) -> Run {
        let (mut cmd, out) = self.command(cwd, args, env);
        let mut child = cmd.spawn().expect("start wine-run.sh");
        finish(
            &mut child,
            &out,
            Duration::from_secs(120),
            &format!("dcb.exe {args:?}"),
        )
    }
}

impl Drop for Wine {
    fn drop(&mut self) {
        drop(self.keeper.stdin.take());
        let _ = self.keeper.wait();
    }
}

fn runner() -> PathBuf {
    project_root().join("scripts/windows/wine-run.sh")
}

/// Wait for a process started by [`Wine::command`] and collect its output.
fn finish(child: &mut Child, out: &Path, limit: Duration, what: &str) -> Run {
    let deadline = Instant::now() + limit;
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "{what} did not finish within {limit:?}; stderr:\n{}",
                std::fs::read_to_string(out.join("stderr")).unwrap_or_default()
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let run = Run {
        code: status.code().unwrap_or(-1),
        stdout: std::fs::read_to_string(out.join("stdout")).unwrap(),
        stderr: std::fs::read_to_string(out.join("stderr")).unwrap(),
    };
    // Wine's own exit code when the loader fails (a DLL an import names is missing),
    // before dcb prints anything.
    let silent = run.stdout.is_empty() && run.stderr.is_empty();
    assert!(
        !(run.code == 53 && silent),
        "{what}: Wine could not start dcb.exe (exit 53: a DLL it imports is missing; \
         `WINEDEBUG=err+module scripts/windows/wine-run.sh dcb.exe` names it)"
    );
    run
}

/// Every document of a collection, raw, by `_id`.
async fn raw_docs(db: &Database, coll: &str) -> BTreeMap<String, Vec<u8>> {
    let mut cursor = db
        .collection::<RawDocumentBuf>(coll)
        .find(doc! {})
        .await
        .unwrap();
    let mut out = BTreeMap::new();
    while let Some(d) = cursor.try_next().await.unwrap() {
        out.insert(
            d.get_object_id("_id").unwrap().to_hex(),
            d.as_bytes().to_vec(),
        );
    }
    out
}

/// `n` scans made at `at`; their `_id`s as extended JSON.
async fn add_scans(db: &Database, n: usize, at: DateTime) -> BTreeSet<String> {
    let docs: Vec<Document> = (0..n)
        .map(|i| {
            doc! {
                "_id": ObjectId::new(),
                "createdAt": at,
                "barcode": format!("BC-{i:05}"),
                "station": format!("工位{}", i % 7),
            }
        })
        .collect();
    let ids = docs
        .iter()
        .map(|d| oid_json(&d.get_object_id("_id").unwrap()))
        .collect();
    db.collection::<Document>("scans")
        .insert_many(docs)
        .await
        .unwrap();
    ids
}

fn ids_of(archive: &Path) -> BTreeSet<String> {
    ids_in(&read_archives(&[archive.to_path_buf()])[0])
        .into_iter()
        .collect()
}

/// A policy as Notepad saves it: CRLF line ends.
fn policy(db: &str, schedule: &str) -> String {
    format!(
        "name: p\nschedule: \"{schedule}\"\ndatabase: {db}\nwindow: {{initial: all, settle: 0s}}\n\
         collections: [scans, {{name: roles, mode: snapshot}}]\nretention: 7d\n"
    )
    .replace('\n', "\r\n")
}

// The Windows build runs validate, run (twice), list, verify, restore and status against
// the test server, given Windows paths (drive letter, backslashes or slashes, a space
// and non-ASCII characters): each document is archived once (read back by an
// independent reader), every archive verifies, and the restore equals the source.
#[tokio::test]
async fn under_wine_backs_up_verifies_and_restores() {
    let wine = Wine::start();
    let uri = support::server().uri.clone();
    let client = support::client().await;
    let src_name = support::unique_db("win_src");
    let dst_name = format!("{src_name}_restored");
    let src = client.database(&src_name);
    src.collection::<Document>("scans")
        .create_index(IndexModel::builder().keys(doc! {"createdAt": 1}).build())
        .await
        .unwrap();
    let past = DateTime::from_millis(DateTime::now().timestamp_millis() - 86_400_000);
    let first = add_scans(&src, 400, past).await;
    src.collection::<Document>("roles")
        .insert_many((0..5).map(|i| doc! {"name": format!("role{i}")}))
        .await
        .unwrap();

    let work = tempfile::tempdir().unwrap();
    let w = work.path();
    std::fs::create_dir(w.join("policies")).unwrap();
    std::fs::write(w.join("policies/p.yaml"), policy(&src_name, "0 * * * *")).unwrap();
    std::fs::create_dir(w.join("bad")).unwrap();
    std::fs::write(
        w.join("bad/bad.yaml"),
        format!("{}retension: 3d\r\n", policy(&src_name, "0 * * * *")),
    )
    .unwrap();
    let root = w.join("备份 data");
    let root_win = win(&root);
    let env = [("DCB_MONGODB_URI", uri.as_str())];

    // validate: the policies folder relative to the working folder, and a bad file by
    // its Windows path, reported at its line.
    let run = wine.dcb(w, &["validate"], &env);
    assert_eq!(run.code, 0, "{}{}", run.stdout, run.stderr);
    assert!(
        run.stdout.contains("1 policy valid, 0 warnings"),
        "{}",
        run.stdout
    );
    let bad = win(&w.join("bad/bad.yaml"));
    let run = wine.dcb(w, &["validate", &bad], &env);
    assert_eq!(run.code, 1, "{}{}", run.stdout, run.stderr);
    let all = format!("{}{}", run.stdout, run.stderr);
    assert!(all.contains("error[unknown-field]"), "{all}");
    assert!(all.contains("bad.yaml:7:1"), "{all}");

    // run: every document once, in archives where the Linux side sees them.
    let run = wine.dcb(
        w,
        &["--backup-root", &root_win, "run", "--policy", "p"],
        &env,
    );
    assert_eq!(run.code, 0, "{}{}", run.stdout, run.stderr);
    assert!(
        run.stdout.contains("2 collections exported, 0 failed"),
        "{}",
        run.stdout
    );
    let scans = archives(&root, "p", "scans");
    assert_eq!(scans.len(), 1, "{scans:?}");
    assert_eq!(ids_of(&scans[0]), first);
    assert_eq!(archives(&root, "p", "roles").len(), 1);

    // A second run, the backup root spelt with slashes: only the new documents (the
    // watermark in the replaced state.json was found through the other spelling).
    let later = add_scans(&src, 150, DateTime::now()).await;
    tokio::time::sleep(Duration::from_millis(50)).await;
    let slashed = root_win.replace('\\', "/");
    let run = wine.dcb(
        w,
        &["run", "--policy", "p"],
        &[
            ("DCB_MONGODB_URI", uri.as_str()),
            ("DCB_BACKUP_ROOT", &slashed),
        ],
    );
    assert_eq!(run.code, 0, "{}{}", run.stdout, run.stderr);
    let scans = archives(&root, "p", "scans");
    assert_eq!(scans.len(), 2, "{scans:?}");
    assert_eq!(ids_of(&scans[1]), later);
    let roles = archives(&root, "p", "roles");
    assert_eq!(roles.len(), 2, "{roles:?}");

    // list: four archives, named relative to the root with `/`, with their counts.
    let list = |wine: &Wine| -> Vec<serde_json::Value> {
        let run = wine.dcb(w, &["--backup-root", &root_win, "list", "--json"], &env);
        assert_eq!(run.code, 0, "{}{}", run.stdout, run.stderr);
        serde_json::from_str(&run.stdout).unwrap()
    };
    let listed = list(&wine);
    let names: Vec<&str> = listed
        .iter()
        .map(|e| e["archive"].as_str().unwrap())
        .collect();
    let want: Vec<String> = scans
        .iter()
        .chain(&roles)
        .map(|a| format!("p/{}", a.file_name().unwrap().to_str().unwrap()))
        .collect();
    assert_eq!(
        names.iter().copied().collect::<BTreeSet<_>>(),
        want.iter().map(String::as_str).collect::<BTreeSet<_>>()
    );
    let docs = |coll: &str| -> Vec<u64> {
        listed
            .iter()
            .filter(|e| e["collection"] == coll)
            .map(|e| e["documents"].as_u64().unwrap())
            .collect()
    };
    assert_eq!(docs("scans"), [400, 150]);
    assert_eq!(docs("roles"), [5, 5]);

    // verify one archive by a relative path with slashes: dcb matches it to the root
    // through the canonical (`\\?\Z:\…`) forms, so the catalog shows it verified.
    let one = format!(
        "备份 data/p/{}",
        scans[0].file_name().unwrap().to_str().unwrap()
    );
    let run = wine.dcb(w, &["--backup-root", &root_win, "verify", &one], &env);
    assert_eq!(run.code, 0, "{}{}", run.stdout, run.stderr);
    assert!(
        run.stdout.contains("1 archive checked: 1 ok, 0 corrupt"),
        "{}",
        run.stdout
    );
    let verified: Vec<String> = list(&wine)
        .iter()
        .filter(|e| e["verified"]["ok"] == true)
        .map(|e| e["archive"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(verified, [want[0].clone()]);
    let run = wine.dcb(w, &["--backup-root", &root_win, "verify"], &env);
    assert_eq!(run.code, 0, "{}{}", run.stdout, run.stderr);
    assert!(
        run.stdout.contains("4 archives checked: 4 ok, 0 corrupt"),
        "{}",
        run.stdout
    );

    // restore: the source, document for document and byte for byte.
    let run = wine.dcb(
        w,
        &[
            "--backup-root",
            &root_win,
            "restore",
            "--to-database",
            &dst_name,
        ],
        &env,
    );
    assert_eq!(run.code, 0, "{}{}", run.stdout, run.stderr);
    assert!(
        run.stdout
            .contains("550 documents (550 inserted, 0 replaced)"),
        "{}",
        run.stdout
    );
    let dst = client.database(&dst_name);
    let want_scans = raw_docs(&src, "scans").await;
    assert_eq!(want_scans.len(), 550);
    assert_eq!(raw_docs(&dst, "scans").await, want_scans);
    assert_eq!(raw_docs(&dst, "roles").await, raw_docs(&src, "roles").await);

    // status: the two runs of two collections, no service, each collection's archives
    // and the watermark at the end of the last window.
    let run = wine.dcb(w, &["--backup-root", &root_win, "status", "--json"], &env);
    assert_eq!(run.code, 0, "{}{}", run.stdout, run.stderr);
    let status: serde_json::Value = serde_json::from_str(&run.stdout).unwrap();
    assert_eq!(status["isRunning"], false, "{status:#}");
    assert_eq!(status["statistics"]["totalBackups"], 4, "{status:#}");
    assert_eq!(status["statistics"]["successCount"], 4, "{status:#}");
    let colls = &status["policies"][0]["collections"];
    assert_eq!(colls[0]["collection"], "scans", "{status:#}");
    assert_eq!(colls[0]["archiveCount"], 2, "{status:#}");
    assert_eq!(colls[1]["archiveCount"], 2, "{status:#}");
    let last = listed
        .iter()
        .filter(|e| e["collection"] == "scans")
        .map(|e| e["to"].as_str().unwrap())
        .max()
        .unwrap();
    assert_eq!(colls[0]["watermark"], last, "{status:#}");
}

/// The service's record (`logs/service.json`), read from the Linux side.
fn record(root: &Path) -> Option<serde_json::Value> {
    let bytes = std::fs::read(root.join("logs/service.json")).ok()?;
    serde_json::from_slice(&bytes).ok()
}

/// A `dcb serve` under Wine, killed if the test fails before it stops.
struct Service {
    child: Child,
    out: PathBuf,
    pid: u64,
}

impl Service {
    /// Wait for it to exit (at most a minute).
    fn finish(&mut self) -> Run {
        finish(
            &mut self.child,
            &self.out,
            Duration::from_secs(60),
            "dcb serve",
        )
    }
}

impl Drop for Service {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// Start `dcb serve` and wait until its record says it runs.
fn serve(wine: &Wine, w: &Path, root_win: &str, root: &Path, uri: &str) -> Service {
    let before = SystemTime::now();
    let (mut cmd, out) = wine.command(
        w,
        &["--backup-root", root_win, "serve"],
        &[("DCB_MONGODB_URI", uri)],
    );
    let child = cmd.spawn().expect("start wine-run.sh");
    let mut service = Service { child, out, pid: 0 };
    service.pid = eventually(60, "dcb serve's record", || {
        if let Some(code) = service.child.try_wait().unwrap() {
            panic!(
                "dcb serve exited ({code}) before it ran; stderr:\n{}",
                std::fs::read_to_string(service.out.join("stderr")).unwrap_or_default()
            );
        }
        let fresh = std::fs::metadata(root.join("logs/service.json"))
            .and_then(|m| m.modified())
            .is_ok_and(|t| t >= before);
        let r = record(root).filter(|r| fresh && r["stoppedAt"].is_null())?;
        r["pid"].as_u64()
    });
    service
}

fn status(wine: &Wine, w: &Path, root_win: &str) -> serde_json::Value {
    let run = wine.dcb(w, &["--backup-root", root_win, "status", "--json"], &[]);
    assert_eq!(run.code, 0, "{}{}", run.stdout, run.stderr);
    serde_json::from_str(&run.stdout).unwrap()
}

// On Windows, `dcb status` and `dcb stop` tell a live service from a record whose
// process is gone (OpenProcess and its exit code), and `dcb serve` stops gracefully
// with exit 0 on `dcb stop` and on Ctrl-C (Wine delivers SIGINT as CTRL_C_EVENT).
#[tokio::test]
async fn under_wine_service_is_seen_alive_and_stops_on_dcb_stop_and_ctrl_c() {
    let wine = Wine::start();
    let uri = support::server().uri.clone();
    let db = support::unique_db("win_serve");
    let work = tempfile::tempdir().unwrap();
    let w = work.path();
    std::fs::create_dir(w.join("policies")).unwrap();
    // 1 January, 03:00: no scheduled run while the test lasts, only a catch-up run at
    // each start (this year's tick was missed).
    std::fs::write(w.join("policies/p.yaml"), policy(&db, "0 3 1 1 *")).unwrap();
    let source = support::client().await.database(&db);
    add_scans(&source, 3, DateTime::now()).await;
    source
        .collection::<Document>("roles")
        .insert_one(doc! {"name": "role0"})
        .await
        .unwrap();
    let root = w.join("service root");
    let root_win = win(&root);

    let mut service = serve(&wine, w, &root_win, &root, &uri);
    let pid = service.pid;
    let st = status(&wine, w, &root_win);
    assert_eq!(st["isRunning"], true, "{st:#}");
    assert_eq!(st["pid"], pid, "{st:#}");

    let run = wine.dcb(w, &["--backup-root", &root_win, "stop"], &[]);
    assert_eq!(run.code, 0, "{}{}", run.stdout, run.stderr);
    assert!(
        run.stderr
            .contains(&format!("asked the service (pid {pid}) to stop")),
        "{}",
        run.stderr
    );
    let served = service.finish();
    assert_eq!(served.code, 0, "{}", served.stderr);
    assert!(
        served.stderr.contains("reason=\"dcb stop\""),
        "{}",
        served.stderr
    );
    assert!(
        served.stderr.contains("dcb service stopped"),
        "{}",
        served.stderr
    );
    let r = record(&root).unwrap();
    assert!(!r["stoppedAt"].is_null(), "{r:#}\n{}", served.stderr);
    assert_eq!(status(&wine, w, &root_win)["isRunning"], false);

    // The record of a service that died without a word: not stopped, a fresh
    // heartbeat, this host. Only the gone process tells that it is not running.
    let mut dead = record(&root).unwrap();
    dead["stoppedAt"] = serde_json::Value::Null;
    let now = chrono::Utc::now();
    dead["heartbeatAt"] = now.to_rfc3339().into();
    std::fs::write(root.join("logs/service.json"), dead.to_string()).unwrap();
    let st = status(&wine, w, &root_win);
    assert_eq!(st["isRunning"], false, "{st:#}");
    let seen: chrono::DateTime<chrono::Utc> =
        serde_json::from_value(st["lastHeartbeat"].clone()).unwrap();
    assert_eq!(
        seen, now,
        "the status did not read the rewritten record: {st:#}"
    );
    let run = wine.dcb(w, &["--backup-root", &root_win, "stop"], &[]);
    assert_eq!(run.code, 0, "{}{}", run.stdout, run.stderr);
    assert!(
        run.stderr.contains("the service is not running"),
        "{}",
        run.stderr
    );

    // Ctrl-C: SIGINT to the Wine process running dcb.exe.
    let mut service = serve(&wine, w, &root_win, &root, &uri);
    let pid = service.pid;
    assert_eq!(status(&wine, w, &root_win)["pid"], pid);
    // SAFETY: kill(2) on the process this test started and has not yet waited for.
    let rc = unsafe { libc::kill(service.child.id() as libc::pid_t, libc::SIGINT) };
    assert_eq!(rc, 0, "{}", std::io::Error::last_os_error());
    let served = service.finish();
    assert_eq!(
        served.code, 0,
        "exit code {}: {}",
        served.code, served.stderr
    );
    assert!(
        served.stderr.contains("reason=\"interrupt\""),
        "{}",
        served.stderr
    );
    let r = record(&root).unwrap();
    assert!(!r["stoppedAt"].is_null(), "{r:#}\n{}", served.stderr);
    assert_eq!(status(&wine, w, &root_win)["isRunning"], false);
}
