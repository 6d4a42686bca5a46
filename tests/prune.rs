//! `dcb prune` deletes exactly what the retention plan says, on real files (no
//! database needed: fabricated archives beside valid manifests).

mod support;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use chrono::{TimeDelta, Utc};
use dcb::export::manifest::Manifest;
use dcb::policy::Mode;
use support::Scratch;

/// A policy on `db.a` and `db.b`: 72h retention, keepLast as given.
fn policy(name: &str, keep_last: u32) -> String {
    format!(
        "name: {name}\nschedule: \"0 * * * *\"\ndatabase: db\ncollections: [a, b]\nretention: 72h\nkeepLast: {keep_last}\n"
    )
}

/// Write an archive and its manifest whose window ended `hours_ago`; returns the
/// archive's path relative to the backup root.
fn fake(root: &Path, policy: &str, coll: &str, hours_ago: i64, mode: Mode) -> String {
    let to = Utc::now() - TimeDelta::hours(hours_ago);
    let stem = dcb::storage::archive_stem(to, "db", coll);
    let dir = root.join(policy);
    std::fs::create_dir_all(&dir).unwrap();
    let m = Manifest {
        format: 1,
        dcb_version: "test".into(),
        policy: policy.into(),
        database: "db".into(),
        collection: coll.into(),
        time_field: "createdAt".into(),
        mode,
        from: None,
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
        archive_size: None,
        encrypted: false,
        kind: None,
        chain: None,
        changes: None,
        epoch: None,
    };
    std::fs::write(dir.join(format!("{stem}.tar.gz")), vec![0u8; 200_000]).unwrap();
    std::fs::write(dir.join(format!("{stem}.manifest.json")), m.to_json()).unwrap();
    format!("{policy}/{stem}.tar.gz")
}

/// The archive and its manifest, relative to the backup root.
fn pair(archive: &str) -> [String; 2] {
    let stem = archive.strip_suffix(".tar.gz").unwrap();
    [archive.to_string(), format!("{stem}.manifest.json")]
}

fn pairs<'a>(archives: impl IntoIterator<Item = &'a String>) -> BTreeSet<String> {
    archives.into_iter().flat_map(|a| pair(a)).collect()
}

/// Every archive and manifest under the backup root (not logs or locks).
fn files(root: &Path) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let mut dirs = vec![PathBuf::from(root)];
    while let Some(dir) = dirs.pop() {
        for e in std::fs::read_dir(&dir).unwrap().flatten() {
            let p = e.path();
            let name = p
                .strip_prefix(root)
                .unwrap()
                .to_string_lossy()
                .replace('\\', "/");
            if p.is_dir() {
                if name != "logs" {
                    dirs.push(p);
                }
            } else if !name.ends_with(".lock") {
                out.insert(name);
            }
        }
    }
    out
}

/// The archives a dry run lists.
fn listed(stdout: &str) -> BTreeSet<String> {
    stdout
        .lines()
        .filter_map(|l| l.strip_prefix("would delete  "))
        .map(|l| l.split("  (").next().unwrap().replace('\\', "/"))
        .collect()
}

struct World {
    s: Scratch,
    root: PathBuf,
    /// Expired and not held back, by policy.
    hot_expired: Vec<String>,
    core_expired: Vec<String>,
}

/// `hot` (keepLast 2) and `core` (keepLast 0, one snapshot collection) with archives of
/// every fate, plus archives of `gone`, a policy whose file no longer exists.
fn world() -> World {
    let s = Scratch::new();
    s.write("policies/hot.yaml", &policy("hot", 2));
    s.write("policies/core.yaml", &policy("core", 0));
    let root = s.path().join("backups");
    let inc = Mode::Incremental;
    let hot_expired = vec![
        fake(&root, "hot", "a", 200, inc),
        fake(&root, "hot", "a", 150, inc),
        fake(&root, "hot", "a", 100, inc),
    ];
    // Kept: keepLast 2 holds one expired archive; the other is within retention;
    // collection b is counted on its own.
    fake(&root, "hot", "a", 90, inc);
    fake(&root, "hot", "a", 10, inc);
    fake(&root, "hot", "b", 300, inc);
    let core_expired = vec![
        fake(&root, "core", "a", 500, inc),
        fake(&root, "core", "a", 400, inc),
        fake(&root, "core", "b", 300, Mode::Snapshot),
        fake(&root, "core", "b", 200, Mode::Snapshot),
    ];
    // Kept: within retention; the newest snapshot despite keepLast 0.
    fake(&root, "core", "a", 1, inc);
    fake(&root, "core", "b", 100, Mode::Snapshot);
    // Kept: a vanished policy's archives, however old.
    fake(&root, "gone", "a", 5000, inc);
    World {
        s,
        root,
        hot_expired,
        core_expired,
    }
}

// A dry run lists exactly the expired archives with their reasons and a summary, and
// deletes (or writes) nothing.
#[test]
fn dry_run_lists_the_plan_and_deletes_nothing() {
    let w = world();
    let before = files(&w.root);
    let dry = w.s.run(&["prune", "--dry-run"]);
    assert_eq!(dry.code, 0, "{}{}", dry.stdout, dry.stderr);
    let expected: BTreeSet<String> = w
        .hot_expired
        .iter()
        .chain(&w.core_expired)
        .cloned()
        .collect();
    assert_eq!(listed(&dry.stdout), expected, "{}", dry.stdout);
    assert!(dry.stdout.contains("ago, retention 3d)"), "{}", dry.stdout);
    assert!(
        dry.stdout
            .contains("7 archives (1.4 MB) would be deleted, 6 kept"),
        "{}",
        dry.stdout
    );
    assert!(
        dry.stdout.contains("note: archives of `gone` are kept"),
        "{}",
        dry.stdout
    );
    assert_eq!(files(&w.root), before);
    assert!(!w.root.join("logs").exists(), "a dry run writes no log");

    let dry = w.s.run(&["prune", "--dry-run", "--policy", "core"]);
    assert_eq!(dry.code, 0, "{}{}", dry.stdout, dry.stderr);
    assert_eq!(
        listed(&dry.stdout),
        w.core_expired.iter().cloned().collect()
    );
    assert!(!dry.stdout.contains("gone"), "{}", dry.stdout);
}

// Prune deletes exactly the planned archives and their manifests; --policy restricts
// it; a vanished policy's archives are untouched; a second prune finds nothing.
#[test]
fn prune_deletes_exactly_the_plan() {
    let w = world();
    let all = files(&w.root);

    let run = w.s.run(&["prune", "--policy", "hot"]);
    assert_eq!(run.code, 0, "{}{}", run.stdout, run.stderr);
    let after_hot: BTreeSet<String> = all.difference(&pairs(&w.hot_expired)).cloned().collect();
    assert_eq!(files(&w.root), after_hot);
    assert!(
        run.stdout.contains("3 archives (0.6 MB) deleted"),
        "{}",
        run.stdout
    );

    let run = w.s.run(&["prune"]);
    assert_eq!(run.code, 0, "{}{}", run.stdout, run.stderr);
    let after_all: BTreeSet<String> = after_hot
        .difference(&pairs(&w.core_expired))
        .cloned()
        .collect();
    assert_eq!(files(&w.root), after_all);
    assert!(after_all.iter().any(|f| f.starts_with("gone/")));
    for a in &w.core_expired {
        assert!(
            run.stdout.contains(a.as_str()),
            "{a} not reported in\n{}",
            run.stdout
        );
    }
    let logs = w.root.join("logs");
    let log: String = std::fs::read_dir(&logs)
        .unwrap()
        .flatten()
        .map(|e| std::fs::read_to_string(e.path()).unwrap())
        .collect();
    assert_eq!(
        log.matches("retention deleted an archive").count(),
        7,
        "every deletion is logged:\n{log}"
    );

    let again = w.s.run(&["prune"]);
    assert_eq!(again.code, 0, "{}{}", again.stdout, again.stderr);
    assert!(
        again.stdout.contains("0 archives (0.0 MB) deleted"),
        "{}",
        again.stdout
    );
    assert_eq!(files(&w.root), after_all);
}

// A policy locked by a running export is skipped with a message and exit 1; the
// others are still pruned.
#[test]
fn busy_policy_is_skipped() {
    let w = world();
    let all = files(&w.root);
    let lock = dcb::storage::try_lock(&w.root.join("hot").join(".dcb.lock"))
        .unwrap()
        .expect("the lock is free");
    let run = w.s.run(&["prune"]);
    assert_eq!(run.code, 1, "{}{}", run.stdout, run.stderr);
    assert!(
        run.stdout
            .contains("SKIPPED policy `hot`: a run is in progress"),
        "{}",
        run.stdout
    );
    assert!(run.stdout.contains(", 3 skipped"), "{}", run.stdout);
    let after: BTreeSet<String> = all.difference(&pairs(&w.core_expired)).cloned().collect();
    assert_eq!(files(&w.root), after);

    drop(lock);
    let run = w.s.run(&["prune"]);
    assert_eq!(run.code, 0, "{}{}", run.stdout, run.stderr);
    let after: BTreeSet<String> = after.difference(&pairs(&w.hot_expired)).cloned().collect();
    assert_eq!(files(&w.root), after);
}

// A verify or restore reading a policy's archives holds its readers lock shared: a
// prune skips that policy (and prunes the others) until the reader is done.
#[test]
fn policy_being_read_is_not_pruned() {
    let w = world();
    let all = files(&w.root);
    let reader = dcb::storage::lock_shared(&dcb::storage::readers_lock(&w.root.join("hot")))
        .expect("a shared lock");
    let run = w.s.run(&["prune"]);
    assert_eq!(run.code, 1, "{}{}", run.stdout, run.stderr);
    assert!(
        run.stdout
            .contains("SKIPPED policy `hot`: its archives are being read by dcb verify or restore"),
        "{}",
        run.stdout
    );
    let after: BTreeSet<String> = all.difference(&pairs(&w.core_expired)).cloned().collect();
    assert_eq!(files(&w.root), after);

    drop(reader);
    let run = w.s.run(&["prune"]);
    assert_eq!(run.code, 0, "{}{}", run.stdout, run.stderr);
    let after: BTreeSet<String> = after.difference(&pairs(&w.hot_expired)).cloned().collect();
    assert_eq!(files(&w.root), after);
}

// The other way round: a verify started while a prune holds the readers lock waits for
// it, then reads what is left (here the fabricated archives, which are not gzip, so
// it reports them corrupt: what matters is that it ran only after the lock went).
#[test]
fn verify_waits_for_a_prune_in_progress() {
    let w = world();
    let pruning = dcb::storage::try_lock(&dcb::storage::readers_lock(&w.root.join("hot")))
        .unwrap()
        .expect("the lock is free");
    let mut child =
        w.s.dcb()
            .args(["verify", "--policy", "hot", "--json"])
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("start dcb verify");
    std::thread::sleep(std::time::Duration::from_millis(1500));
    assert!(
        child.try_wait().unwrap().is_none(),
        "verify ran while a prune held the readers lock"
    );
    // The prune deletes the expired archives, then lets go.
    for a in &w.hot_expired {
        for f in pair(a) {
            std::fs::remove_file(w.root.join(f)).unwrap();
        }
    }
    drop(pruning);
    let out = child.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let v: serde_json::Value = serde_json::from_str(&stdout)
        .unwrap_or_else(|e| panic!("{e}: {stdout}{}", String::from_utf8_lossy(&out.stderr)));
    // Only what the prune left was read: no archive reported missing.
    let checked: Vec<&str> = v["archives"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["archive"].as_str().unwrap())
        .collect();
    assert_eq!(checked.len(), 3, "{v:#}");
    assert!(v["brokenManifests"].as_array().unwrap().is_empty(), "{v:#}");
}

// Naming a policy that does not exist is a usage error that touches nothing.
#[test]
fn unknown_policy_name_is_a_usage_error() {
    let w = world();
    let all = files(&w.root);
    for args in [
        &["prune", "--policy", "gone"][..],
        &["prune", "--dry-run", "--policy", "nope"],
    ] {
        let run = w.s.run(args);
        assert_eq!(run.code, 2, "{}{}", run.stdout, run.stderr);
        assert!(run.stderr.contains("no policy named"), "{}", run.stderr);
    }
    assert_eq!(files(&w.root), all);
}
