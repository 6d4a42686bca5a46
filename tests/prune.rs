//! `dcb prune` deletes exactly what the retention plan says, on real files.

mod support;

use std::path::Path;

use chrono::{TimeDelta, Utc};
use dcb::export::manifest::Manifest;
use dcb::policy::Mode;
use support::Scratch;

/// An archive and its manifest whose window ended `hours_ago`.
fn fake(root: &Path, policy: &str, coll: &str, hours_ago: i64) -> String {
    let to = Utc::now() - TimeDelta::hours(hours_ago);
    let stem = format!("{}_db.{coll}", dcb::storage::stamp(to));
    let dir = root.join(policy);
    std::fs::create_dir_all(&dir).unwrap();
    let m = Manifest {
        format: 1,
        dcb_version: "test".into(),
        policy: policy.into(),
        database: "db".into(),
        collection: coll.into(),
        time_field: "createdAt".into(),
        mode: Mode::Incremental,
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
    };
    std::fs::write(dir.join(format!("{stem}.tar.gz")), b"archive").unwrap();
    std::fs::write(dir.join(format!("{stem}.manifest.json")), m.to_json()).unwrap();
    stem
}

fn exists(root: &Path, policy: &str, stem: &str) -> (bool, bool) {
    (
        root.join(policy).join(format!("{stem}.tar.gz")).exists(),
        root.join(policy)
            .join(format!("{stem}.manifest.json"))
            .exists(),
    )
}

// The dry run lists the expired archives and deletes nothing; the real run deletes
// exactly those (archive and manifest), keeps keepLast and the unexpired, and never
// touches a vanished policy's archives; --policy restricts.
#[test]
fn prune_deletes_exactly_the_plan() {
    let s = Scratch::new();
    let policy = |name: &str| {
        format!(
            "name: {name}\nschedule: \"0 * * * *\"\ndatabase: db\ncollections: [a]\nretention: 72h\nkeepLast: 2\n"
        )
    };
    s.write("policies/hot.yaml", &policy("hot"));
    s.write("policies/core.yaml", &policy("core"));
    let root = s.path().join("backups");
    let old = [
        fake(&root, "hot", "a", 200),
        fake(&root, "hot", "a", 150),
        fake(&root, "hot", "a", 100),
    ];
    // keepLast 2: the two newest stay, one of them past the retention.
    let kept_last = [fake(&root, "hot", "a", 90), fake(&root, "hot", "a", 10)];
    let core_old = fake(&root, "core", "a", 500);
    let core_keep = [fake(&root, "core", "a", 1), fake(&root, "core", "a", 2)];
    let orphan = fake(&root, "gone", "a", 5000);

    let dry = s.run(&["prune", "--dry-run"]);
    assert_eq!(dry.code, 0, "{}{}", dry.stdout, dry.stderr);
    for stem in old.iter().chain([&core_old]) {
        assert!(
            dry.stdout.contains(stem.as_str()),
            "{stem} missing from\n{}",
            dry.stdout
        );
    }
    assert!(dry.stdout.contains("4 archives"), "{}", dry.stdout);
    assert_eq!(
        exists(&root, "hot", &old[0]),
        (true, true),
        "a dry run deletes nothing"
    );

    let run = s.run(&["prune", "--policy", "hot"]);
    assert_eq!(run.code, 0, "{}{}", run.stdout, run.stderr);
    for stem in &old {
        assert_eq!(exists(&root, "hot", stem), (false, false), "{stem}");
    }
    assert_eq!(
        exists(&root, "core", &core_old),
        (true, true),
        "--policy hot leaves core alone"
    );
    let run = s.run(&["prune"]);
    assert_eq!(run.code, 0, "{}{}", run.stdout, run.stderr);
    assert_eq!(exists(&root, "core", &core_old), (false, false));
    for stem in &kept_last {
        assert_eq!(exists(&root, "hot", stem), (true, true), "{stem}");
    }
    for stem in &core_keep {
        assert_eq!(exists(&root, "core", stem), (true, true), "{stem}");
    }
    assert_eq!(
        exists(&root, "gone", &orphan),
        (true, true),
        "a vanished policy's archives stay"
    );
    assert_eq!(s.run(&["prune", "--policy", "nope"]).code, 2);
}
