//! Policies writing to several targets, end to end: the `dcb` binary against the real
//! MongoDB test server and a real S3-protocol server (moto) on loopback. Run, list,
//! verify, restore and prune work on the bucket as on the backup root; a failing
//! target does not stop the others and is repaired by the next run; a fresh machine
//! with only the bucket knows every watermark; two instances share a bucket under the
//! lease.

mod support;

use std::collections::HashSet;
use std::path::Path;

use mongodb::bson::{DateTime, Document, doc, oid::ObjectId};
use serde_json::json;
use support::s3::{S3Server, s3_server};
use support::{Run, Scratch};

const POLICY: &str = "p";

fn policy(db: &str) -> String {
    format!(
        "name: {POLICY}\nschedule: \"0 * * * *\"\ndatabase: {db}\nwindow:\n  initial: all\n  settle: 0s\n\
         collections:\n  - api_logs\nretention: 30d\n"
    )
}

/// dcb.yaml with an S3 target `offsite` and the given default targets.
/// Leases go to `locks`, a database of the test's own: tests sharing a server never
/// contend.
fn config(server: &S3Server, bucket: &str, targets: &[&str], lock: &str, locks: &str) -> String {
    format!(
        "backupRoot: backups\npoliciesDir: policies\nlock: {{kind: {lock}, database: {locks}}}\n\
         targets:\n  offsite:\n    type: s3\n    bucket: {bucket}\n    prefix: mes/\n    \
         endpoint: {}\n    region: us-east-1\n    pathStyle: true\n\
         defaultTargets: [{}]\n",
        server.endpoint,
        targets.join(", ")
    )
}

struct Site {
    scratch: Scratch,
    uri: String,
    db: String,
    locks: String,
}

impl Site {
    fn new(bucket: &str, targets: &[&str], lock: &str) -> Site {
        let scratch = Scratch::new();
        let db = support::unique_db("targets");
        let locks = support::unique_db("locks");
        scratch.write(
            "dcb.yaml",
            &config(s3_server(), bucket, targets, lock, &locks),
        );
        scratch.write(&format!("policies/{POLICY}.yaml"), &policy(&db));
        Site {
            scratch,
            uri: support::server().uri.clone(),
            db,
            locks,
        }
    }

    /// Another machine: its own backup root, the same database and bucket.
    fn twin(&self, bucket: &str, targets: &[&str], lock: &str) -> Site {
        let scratch = Scratch::new();
        scratch.write(
            "dcb.yaml",
            &config(s3_server(), bucket, targets, lock, &self.locks),
        );
        scratch.write(&format!("policies/{POLICY}.yaml"), &policy(&self.db));
        Site {
            scratch,
            uri: self.uri.clone(),
            db: self.db.clone(),
            locks: self.locks.clone(),
        }
    }

    fn dcb(&self, args: &[&str]) -> Run {
        let s3 = s3_server();
        Run::from(
            self.scratch
                .dcb()
                .args(args)
                .env("DCB_MONGODB_URI", &self.uri)
                .env("AWS_ACCESS_KEY_ID", &s3.access_key_id)
                .env("AWS_SECRET_ACCESS_KEY", &s3.secret_access_key)
                .output()
                .expect("run dcb"),
        )
    }

    fn ok(&self, args: &[&str]) -> Run {
        let r = self.dcb(args);
        assert_eq!(
            r.code, 0,
            "dcb {args:?} failed\nstdout:\n{}\nstderr:\n{}",
            r.stdout, r.stderr
        );
        r
    }

    fn root(&self) -> std::path::PathBuf {
        self.scratch.path().join("backups")
    }
}

/// Insert `n` documents dated over the last `span_ms` milliseconds; their ids.
async fn seed(uri: &str, db: &str, n: usize, span_ms: i64) -> Vec<ObjectId> {
    let client = mongodb::Client::with_uri_str(uri).await.unwrap();
    let coll = client.database(db).collection::<Document>("api_logs");
    let now = DateTime::now().timestamp_millis();
    let docs: Vec<Document> = (0..n)
        .map(|i| {
            doc! {
                "_id": ObjectId::new(),
                "createdAt": DateTime::from_millis(now - span_ms + (i as i64) * span_ms / (n as i64)),
                "path": format!("/api/scan/{i}"),
                "payload": "x".repeat(100),
            }
        })
        .collect();
    let ids = docs
        .iter()
        .map(|d| d.get_object_id("_id").unwrap())
        .collect();
    coll.insert_many(docs).await.unwrap();
    ids
}

fn block<T>(f: impl Future<Output = T>) -> T {
    tokio::runtime::Runtime::new().unwrap().block_on(f)
}

fn bucket_archives(bucket: &str) -> Vec<String> {
    s3_server()
        .keys(bucket)
        .into_iter()
        .filter(|k| k.ends_with(".tar.gz"))
        .collect()
}

fn local_archives(root: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(root.join(POLICY))
        .map(|d| {
            d.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| n.ends_with(".tar.gz") && !n.starts_with('.'))
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    names
}

/// The `_id`s of a restored collection.
async fn ids_of(uri: &str, db: &str, coll: &str) -> HashSet<ObjectId> {
    let client = mongodb::Client::with_uri_str(uri).await.unwrap();
    let mut cursor = client
        .database(db)
        .collection::<Document>(coll)
        .find(doc! {})
        .await
        .unwrap();
    let mut out = HashSet::new();
    while cursor.advance().await.unwrap() {
        let d = cursor.deserialize_current().unwrap();
        out.insert(d.get_object_id("_id").unwrap());
    }
    out
}

// A policy sent to the backup root and a bucket: both get every archive, byte for
// byte; list, verify and restore work from the bucket alone on a fresh machine, whose
// next run starts where the bucket's manifests end.
#[test]
fn archives_go_to_every_target_and_a_fresh_machine_knows_them() {
    let s3 = s3_server();
    let bucket = s3.bucket("both");
    let site = Site::new(&bucket, &["local", "offsite"], "auto");
    let first = block(seed(&site.uri, &site.db, 50, 3_600_000));
    site.ok(&["run", "--policy", POLICY]);
    let local = local_archives(&site.root());
    assert_eq!(local.len(), 1, "{local:?}");
    let remote = bucket_archives(&bucket);
    assert_eq!(remote, vec![format!("mes/{POLICY}/{}", local[0])]);
    let here = std::fs::read(site.root().join(POLICY).join(&local[0])).unwrap();
    assert_eq!(
        s3.get(&bucket, &remote[0]).unwrap(),
        here,
        "the copies differ"
    );
    // The manifest records the lease's epoch (`lock: auto` with an S3 target).
    let manifest_key = remote[0].replace(".tar.gz", ".manifest.json");
    let manifest: serde_json::Value = serde_json::from_slice(
        &s3.get(&bucket, &manifest_key)
            .expect("manifest in the bucket"),
    )
    .unwrap();
    assert!(
        manifest["epoch"].as_u64().is_some_and(|e| e >= 1),
        "{manifest}"
    );

    // A fresh machine with only the bucket.
    let fresh = site.twin(&bucket, &["offsite"], "auto");
    let listed = fresh.ok(&["list", "--policy", POLICY]);
    assert!(listed.stdout.contains(&local[0]), "{}", listed.stdout);
    fresh.ok(&["verify", "--policy", POLICY]);
    let restored_db = support::unique_db("restored");
    fresh.ok(&[
        "restore",
        "--policy",
        POLICY,
        "--collection",
        "api_logs",
        "--to-database",
        &restored_db,
    ]);
    let got = block(ids_of(&site.uri, &restored_db, "api_logs"));
    assert_eq!(got, first.iter().copied().collect::<HashSet<_>>());
    // Its next run starts at the bucket's watermark: only the new documents.
    let second = block(seed(&site.uri, &site.db, 7, 100));
    let run = fresh.ok(&["run", "--policy", POLICY]);
    assert!(run.stdout.contains("        7 docs"), "{}", run.stdout);
    assert_eq!(bucket_archives(&bucket).len(), 2);
    let _ = second;
}

// A target that refuses writes does not stop the others: the run succeeds, says
// which copy is missing, and the next run after it recovers copies the archive there.
#[test]
fn a_failing_target_is_reported_and_repaired_later() {
    let s3 = s3_server();
    let bucket = s3.bucket("repair");
    let site = Site::new(&bucket, &["local", "offsite"], "local");
    block(seed(&site.uri, &site.db, 20, 3_600_000));
    // Credentials the server does not know: every request to the bucket fails.
    let run = Run::from(
        site.scratch
            .dcb()
            .args(["run", "--policy", POLICY])
            .env("DCB_MONGODB_URI", &site.uri)
            .env("AWS_ACCESS_KEY_ID", "AKIDNOBODY")
            .env("AWS_SECRET_ACCESS_KEY", "wrong-secret")
            .output()
            .unwrap(),
    );
    assert_eq!(run.code, 0, "{}\n{}", run.stdout, run.stderr);
    assert!(
        run.stdout.contains("no copy in target `offsite`"),
        "{}",
        run.stdout
    );
    assert!(!run.stdout.contains("wrong-secret") && !run.stderr.contains("wrong-secret"));
    assert_eq!(local_archives(&site.root()).len(), 1);
    assert!(bucket_archives(&bucket).is_empty());
    // Next run, with good credentials and nothing new: the copy is made.
    site.ok(&["run", "--policy", POLICY]);
    let local = local_archives(&site.root());
    assert_eq!(local.len(), 1, "an empty window writes nothing: {local:?}");
    let remote = bucket_archives(&bucket);
    assert_eq!(remote, vec![format!("mes/{POLICY}/{}", local[0])]);
    let here = std::fs::read(site.root().join(POLICY).join(&local[0])).unwrap();
    assert_eq!(s3.get(&bucket, &remote[0]).unwrap(), here);
    assert!(
        s3.get(&bucket, &remote[0].replace(".tar.gz", ".manifest.json"))
            .is_some()
    );
}

// A policy whose only target refuses writes fails with a clear error and moves no
// watermark: the next good run exports the same documents.
#[test]
fn a_bucket_that_refuses_writes_moves_no_watermark() {
    let s3 = s3_server();
    let bucket = s3.bucket("refuse");
    let site = Site::new(&bucket, &["offsite"], "local");
    let ids = block(seed(&site.uri, &site.db, 15, 3_600_000));
    let (key, secret) = s3.user(
        "readonly-refuse",
        json!({"Version": "2012-10-17", "Statement": [
            {"Effect": "Allow", "Action": ["s3:GetObject", "s3:ListBucket", "s3:ListBucketMultipartUploads"],
             "Resource": [format!("arn:aws:s3:::{bucket}"), format!("arn:aws:s3:::{bucket}/*")]}]}),
    );
    let run = Run::from(
        site.scratch
            .dcb()
            .args(["run", "--policy", POLICY])
            .env("DCB_MONGODB_URI", &site.uri)
            .env("AWS_ACCESS_KEY_ID", &key)
            .env("AWS_SECRET_ACCESS_KEY", &secret)
            .output()
            .unwrap(),
    );
    assert_eq!(run.code, 1, "{}\n{}", run.stdout, run.stderr);
    assert!(run.stdout.contains("FAILED"), "{}", run.stdout);
    assert!(
        run.stdout.to_lowercase().contains("denied")
            || run.stdout.to_lowercase().contains("forbidden"),
        "the error says why: {}",
        run.stdout
    );
    assert!(!run.stdout.contains(&secret) && !run.stderr.contains(&secret));
    assert!(bucket_archives(&bucket).is_empty());
    let good = site.ok(&["run", "--policy", POLICY]);
    assert!(
        good.stdout.contains(&format!("{:>9} docs", ids.len())),
        "the next run exports the same documents: {}",
        good.stdout
    );
}

// Retention applies in the bucket: prune plans, then deletes there, archive and
// manifest together, keeping what the policy keeps.
#[test]
fn prune_applies_retention_in_the_bucket() {
    let s3 = s3_server();
    let bucket = s3.bucket("prune");
    let site = Site::new(&bucket, &["offsite"], "local");
    site.scratch.write(
        &format!("policies/{POLICY}.yaml"),
        &policy(&site.db).replace("retention: 30d", "retention: 72h\nkeepLast: 1"),
    );
    // Archives whose windows ended 100, 80 and 2 hours ago, put in the bucket as a
    // run elsewhere would have left them.
    let keys: Vec<String> = [100, 80, 2]
        .into_iter()
        .map(|hours| fake_in_bucket(s3, &bucket, &site.db, hours))
        .collect();
    let dry = site.ok(&["prune", "--policy", POLICY, "--dry-run"]);
    assert_eq!(
        bucket_archives(&bucket).len(),
        3,
        "a dry run deletes nothing"
    );
    assert!(dry.stdout.contains("2 archives"), "{}", dry.stdout);
    site.ok(&["prune", "--policy", POLICY]);
    assert_eq!(bucket_archives(&bucket), vec![keys[2].clone()]);
    let manifests: Vec<String> = s3
        .keys(&bucket)
        .into_iter()
        .filter(|k| k.ends_with(".manifest.json"))
        .collect();
    assert_eq!(
        manifests,
        vec![keys[2].replace(".tar.gz", ".manifest.json")]
    );
}

/// An archive of `api_logs` whose window ended `hours_ago`, with its manifest, in the
/// bucket; its key.
fn fake_in_bucket(s3: &S3Server, bucket: &str, db: &str, hours_ago: i64) -> String {
    use chrono::{TimeDelta, Utc};
    let to = Utc::now() - TimeDelta::hours(hours_ago);
    let stem = dcb::storage::archive_stem(to, db, "api_logs");
    let body = vec![0u8; 1000];
    let m = dcb::export::manifest::Manifest {
        format: 1,
        dcb_version: "test".into(),
        policy: POLICY.into(),
        database: db.into(),
        collection: "api_logs".into(),
        time_field: "createdAt".into(),
        mode: dcb::policy::Mode::Incremental,
        from: Some(to - TimeDelta::hours(1)),
        to,
        documents: 1,
        bytes: 1,
        untimed: None,
        members: vec![],
        server_version: "test".into(),
        started_at: to,
        finished_at: to,
        archive: format!("{stem}.tar.gz"),
        archive_sha256: None,
        archive_size: Some(body.len() as u64),
        encrypted: false,
        kind: None,
        chain: None,
        changes: None,
        epoch: None,
    };
    let key = format!("mes/{POLICY}/{stem}.tar.gz");
    s3.put(bucket, &key, &body);
    s3.put(
        bucket,
        &format!("mes/{POLICY}/{stem}.manifest.json"),
        &m.to_json(),
    );
    key
}

// `dcb status` names each policy's targets and, with the lease, who last held it.
#[test]
fn status_shows_targets_and_leases() {
    let s3 = s3_server();
    let bucket = s3.bucket("status");
    let site = Site::new(&bucket, &["local", "offsite"], "mongodb");
    block(seed(&site.uri, &site.db, 3, 3_600_000));
    site.ok(&["run", "--policy", POLICY]);
    let status = site.ok(&["status"]);
    assert!(
        status.stdout.contains("to local + offsite"),
        "{}",
        status.stdout
    );
    assert!(
        status.stdout.contains(&format!("policy/{POLICY}: free")),
        "a released lease is free: {}",
        status.stdout
    );
    let json = site.ok(&["status", "--json"]);
    let v: serde_json::Value = serde_json::from_str(&json.stdout).unwrap();
    assert_eq!(v["policies"][0]["targets"], json!(["local", "offsite"]));
    assert_eq!(
        v["leases"]["held"][0]["scope"],
        json!(format!("policy/{POLICY}"))
    );
    assert!(v["leases"]["held"][0]["epoch"].as_i64().unwrap() >= 1);
}

/// How long the two services race: `DCB_RACE_SECS`, 12 s by default (CI).
fn race_secs() -> u64 {
    std::env::var("DCB_RACE_SECS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(12)
}

/// Whether `dcb list` shows no archive of the policy.
fn dcb_lists_nothing(site: &Site) -> bool {
    let listed = site.ok(&["list", "--policy", POLICY, "--json"]);
    let v: serde_json::Value = serde_json::from_str(&listed.stdout).unwrap();
    v.as_array().is_some_and(|a| a.is_empty())
        || v["archives"].as_array().is_some_and(|a| a.is_empty())
}

/// A `dcb serve` of a site, killed when dropped.
struct Serve(std::process::Child);

impl Serve {
    fn start(site: &Site) -> Serve {
        let s3 = s3_server();
        let child = site
            .scratch
            .dcb()
            .arg("serve")
            .env("DCB_MONGODB_URI", &site.uri)
            .env("AWS_ACCESS_KEY_ID", &s3.access_key_id)
            .env("AWS_SECRET_ACCESS_KEY", &s3.secret_access_key)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        Serve(child)
    }
}

impl Drop for Serve {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Every committed archive in the bucket: (manifest, the `_id`s it holds).
fn committed(bucket: &str) -> Vec<(serde_json::Value, Vec<String>)> {
    let s3 = s3_server();
    let dir = tempfile::tempdir().unwrap();
    let mut manifests = Vec::new();
    let mut paths = Vec::new();
    for key in s3.keys(bucket) {
        let Some(stem) = key.strip_suffix(".manifest.json") else {
            continue;
        };
        let m: serde_json::Value = serde_json::from_slice(&s3.get(bucket, &key).unwrap()).unwrap();
        let body = s3
            .get(bucket, &format!("{stem}.tar.gz"))
            .expect("a manifest's archive is in the bucket");
        let path = dir.path().join(format!("{}.tar.gz", manifests.len()));
        std::fs::write(&path, body).unwrap();
        manifests.push(m);
        paths.push(path);
    }
    if paths.is_empty() {
        return Vec::new();
    }
    let read = support::read_archives(&paths);
    manifests
        .into_iter()
        .zip(read.iter().map(support::ids_in))
        .collect()
}

fn at(v: &serde_json::Value) -> chrono::DateTime<chrono::Utc> {
    v.as_str().unwrap().parse().unwrap()
}

/// The live holder of the policy's lease: its pid.
async fn lease_holder(uri: &str, locks: &str) -> Option<u32> {
    let client = mongodb::Client::with_uri_str(uri).await.unwrap();
    let d = client
        .database(locks)
        .collection::<Document>("dcb_locks")
        .find_one(doc! {"_id": format!("policy/{POLICY}")})
        .await
        .unwrap()?;
    let live = d.get_datetime("expiresAt").ok()?.timestamp_millis()
        > DateTime::now().timestamp_millis() + 500;
    let pid = d.get_document("holder").ok()?.get_i64("pid").ok()?;
    live.then_some(pid as u32)
}

// Two services with the same policy and the same bucket, on a two-second schedule,
// race while documents keep arriving: every document is in exactly one committed
// window, windows never overlap, and their lease epochs grow with them. Killing the
// lease holder lets the other take over within the lease's time.
#[test]
fn two_services_share_a_bucket_under_the_lease() {
    let s3 = s3_server();
    let bucket = s3.bucket("race");
    let a = Site::new(&bucket, &["offsite"], "auto");
    let b = a.twin(&bucket, &["offsite"], "auto");
    let ttl = 3;
    for site in [&a, &b] {
        let text = std::fs::read_to_string(site.scratch.path().join("dcb.yaml")).unwrap();
        site.scratch.write(
            "dcb.yaml",
            &text.replace(
                &format!("database: {}}}", site.locks),
                &format!("database: {}, ttl: {ttl}s}}", site.locks),
            ),
        );
        site.scratch.write(
            &format!("policies/{POLICY}.yaml"),
            &policy(&site.db)
                .replace("\"0 * * * *\"", "\"*/2 * * * * *\"")
                .replace("settle: 0s", "settle: 2s"),
        );
    }
    let mut serve_a = Some(Serve::start(&a));
    let serve_b = Serve::start(&b);
    let mut seeded: HashSet<String> = HashSet::new();
    let until = std::time::Instant::now() + std::time::Duration::from_secs(race_secs());
    while std::time::Instant::now() < until {
        for id in block(seed(&a.uri, &a.db, 5, 1)) {
            seeded.insert(support::oid_json(&id));
        }
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
    let all = support::eventually(
        60,
        "every document inserted during the race in a committed archive",
        holding(&bucket, &seeded),
    );
    assert_exactly_once(&all, &seeded);

    // Kill whichever holds the lease, mid-run or between runs; the other goes on.
    let holder = support::eventually(30, "a live lease holder", || {
        block(lease_holder(&a.uri, &a.locks))
    });
    let (pid_a, pid_b) = (serve_a.as_ref().unwrap().0.id(), serve_b.0.id());
    assert!(
        holder == pid_a || holder == pid_b,
        "holder {holder} is neither service"
    );
    let survivor = if holder == pid_a {
        drop(serve_a.take());
        "b"
    } else {
        std::mem::drop(serve_b);
        "a"
    };
    let killed_at = std::time::Instant::now();
    for id in block(seed(&a.uri, &a.db, 5, 1)) {
        seeded.insert(support::oid_json(&id));
    }
    // The lease's time, the schedule, the settle, and room for a loaded machine.
    let all = support::eventually(
        ttl + 2 + 2 + 25,
        "the survivor to take over (the documents inserted after the kill committed)",
        holding(&bucket, &seeded),
    );
    eprintln!(
        "service {survivor} took over {:.1}s after the holder was killed",
        killed_at.elapsed().as_secs_f64()
    );
    assert_exactly_once(&all, &seeded);
}

/// A poll for the committed archives once they hold every `_id` of `ids`. (Not "once a
/// window ends after the last insert": when a window boundary falls between the last
/// document's time and that moment, every later window is empty and commits nothing.)
fn holding<'a>(
    bucket: &'a str,
    ids: &'a HashSet<String>,
) -> impl FnMut() -> Option<Vec<(serde_json::Value, Vec<String>)>> + 'a {
    move || {
        let all = committed(bucket);
        let seen: HashSet<&String> = all.iter().flat_map(|(_, found)| found).collect();
        ids.iter().all(|id| seen.contains(id)).then_some(all)
    }
}

/// Each seeded document in exactly one archive; windows disjoint; epochs increasing
/// with the windows.
fn assert_exactly_once(all: &[(serde_json::Value, Vec<String>)], seeded: &HashSet<String>) {
    let mut seen: HashSet<String> = HashSet::new();
    for (m, ids) in all {
        for id in ids {
            assert!(
                seen.insert(id.clone()),
                "{id} is in two archives ({})",
                m["archive"]
            );
        }
    }
    let missing: Vec<&String> = seeded.difference(&seen).collect();
    assert!(
        missing.is_empty(),
        "{} documents in no archive: {missing:?}",
        missing.len()
    );
    let mut windows: Vec<(
        chrono::DateTime<chrono::Utc>,
        chrono::DateTime<chrono::Utc>,
        u64,
    )> = all
        .iter()
        .map(|(m, _)| {
            (
                // The first window may reach back to the start (`from: null`).
                if m["from"].is_null() {
                    chrono::DateTime::<chrono::Utc>::MIN_UTC
                } else {
                    at(&m["from"])
                },
                at(&m["to"]),
                m["epoch"].as_u64().expect("an epoch"),
            )
        })
        .collect();
    windows.sort();
    for pair in windows.windows(2) {
        let ((_, to, e1), (from, _, e2)) = (pair[0], pair[1]);
        assert!(from >= to, "overlapping windows: {windows:?}");
        assert!(e2 > e1, "a later window under an older lease: {windows:?}");
    }
}

// A run killed (SIGKILL) in the middle of its upload leaves no committed object; the
// next run aborts the upload, exports the same window and commits it once.
#[test]
fn a_run_killed_during_its_upload_is_recovered_by_the_next() {
    let s3 = s3_server();
    let bucket = s3.bucket("killed");
    let site = Site::new(&bucket, &["offsite"], "local");
    // Stored, not compressed: a debug build's deflate would make the test slow.
    site.scratch.write(
        &format!("policies/{POLICY}.yaml"),
        &policy(&site.db).replace("retention: 30d", "retention: 30d\ncompression: {level: 0}"),
    );
    // About 30 MB of incompressible documents: an upload of six 5 MiB parts, long
    // enough to be seen in progress and killed.
    let ids: Vec<ObjectId> = block(async {
        let client = mongodb::Client::with_uri_str(&site.uri).await.unwrap();
        let coll = client.database(&site.db).collection::<Document>("api_logs");
        let now = DateTime::now().timestamp_millis();
        let mut ids = Vec::new();
        let mut state = 0x9E37_79B9_7F4A_7C15u64;
        for batch in 0..15 {
            let docs: Vec<Document> = (0..1000)
                .map(|i| {
                    let bytes: Vec<u8> = (0..2000)
                        .map(|_| {
                            state ^= state << 13;
                            state ^= state >> 7;
                            state ^= state << 17;
                            state as u8
                        })
                        .collect();
                    let id = ObjectId::new();
                    ids.push(id);
                    doc! {
                        "_id": id,
                        "createdAt": DateTime::from_millis(now - 3_600_000 + batch * 1000 + i),
                        "blob": mongodb::bson::Binary { subtype: mongodb::bson::spec::BinarySubtype::Generic, bytes },
                    }
                })
                .collect();
            coll.insert_many(docs).await.unwrap();
        }
        ids
    });
    let s3c = s3_server();
    let mut child = site
        .scratch
        .dcb()
        .args(["run", "--policy", POLICY, "--quiet"])
        .env("DCB_MONGODB_URI", &site.uri)
        .env("AWS_ACCESS_KEY_ID", &s3c.access_key_id)
        .env("AWS_SECRET_ACCESS_KEY", &s3c.secret_access_key)
        .spawn()
        .unwrap();
    support::eventually(120, "the upload to start", || {
        if let Some(status) = child.try_wait().unwrap() {
            panic!("the run ended ({status}) before its upload was seen");
        }
        (!s3.uploads(&bucket).is_empty()).then_some(())
    });
    child.kill().unwrap();
    child.wait().unwrap();
    // Nothing committed: no manifest (the commit marker). The kill may land after the
    // archive's upload completed and before its manifest: that object does not count
    // and the next run removes it.
    let keys = s3.keys(&bucket);
    assert!(
        !keys.iter().any(|k| k.ends_with(".manifest.json")),
        "a killed run committed something: {keys:?}"
    );
    assert!(
        dcb_lists_nothing(&site),
        "dcb lists an archive the killed run left: {keys:?}"
    );
    let run = site.ok(&["run", "--policy", POLICY]);
    assert!(
        run.stdout.contains(&format!("{:>9} docs", ids.len())),
        "{}",
        run.stdout
    );
    let keys = s3.keys(&bucket);
    assert_eq!(bucket_archives(&bucket).len(), 1, "{keys:?}");
    assert_eq!(
        keys.iter()
            .filter(|k| k.ends_with(".manifest.json"))
            .count(),
        1,
        "{keys:?}"
    );
    assert!(
        s3.uploads(&bucket).is_empty(),
        "the killed run's upload was not aborted: {:?}",
        s3.uploads(&bucket)
    );
}

// `--target` reads one target: a copy damaged on one is found there, and the other's
// copy restores.
#[test]
fn one_target_can_be_verified_and_restored_from() {
    let s3 = s3_server();
    let bucket = s3.bucket("pick");
    let site = Site::new(&bucket, &["local", "offsite"], "local");
    let ids = block(seed(&site.uri, &site.db, 30, 3_600_000));
    site.ok(&["run", "--policy", POLICY]);
    let name = local_archives(&site.root()).pop().unwrap();
    let path = site.root().join(POLICY).join(&name);
    let mut bytes = std::fs::read(&path).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x55;
    std::fs::write(&path, bytes).unwrap();
    let bad = site.dcb(&["verify", "--policy", POLICY, "--target", "local"]);
    assert_eq!(bad.code, 1, "{}\n{}", bad.stdout, bad.stderr);
    site.ok(&["verify", "--policy", POLICY, "--target", "offsite"]);
    let list = site.ok(&["list", "--policy", POLICY, "--target", "offsite"]);
    assert!(list.stdout.contains(&name), "{}", list.stdout);
    let into = support::unique_db("picked");
    site.ok(&[
        "restore",
        "--policy",
        POLICY,
        "--target",
        "offsite",
        "--to-database",
        &into,
    ]);
    let got = block(ids_of(&site.uri, &into, "api_logs"));
    assert_eq!(got, ids.into_iter().collect::<HashSet<_>>());
    let unknown = site.dcb(&["verify", "--target", "ofsite"]);
    assert_eq!(unknown.code, 2);
    assert!(
        unknown.stderr.contains("offsite"),
        "did you mean: {}",
        unknown.stderr
    );
}

// A bucket-only policy keeps nothing of its archives on the machine once a run is
// done: the spooled file goes with the upload.
#[test]
fn a_bucket_only_run_leaves_no_spooled_file() {
    let s3 = s3_server();
    let bucket = s3.bucket("spool");
    let site = Site::new(&bucket, &["offsite"], "local");
    block(seed(&site.uri, &site.db, 20, 3_600_000));
    site.ok(&["run", "--policy", POLICY]);
    assert_eq!(bucket_archives(&bucket).len(), 1);
    let mut left = Vec::new();
    let mut stack = vec![site.root()];
    while let Some(dir) = stack.pop() {
        for e in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else if p.to_string_lossy().contains(".tar.gz") {
                left.push(p);
            }
        }
    }
    assert!(
        left.is_empty(),
        "archive bytes left on the machine: {left:?}"
    );
}
