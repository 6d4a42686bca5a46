use super::fixture::{archive, t};
use super::*;

fn ok() -> History {
    History::Complete
}

fn names(v: &[&Found]) -> Vec<String> {
    v.iter().map(|f| f.manifest.archive.clone()).collect()
}

// A full and its links form one intact chain, whatever order they come in; archives
// without chain information are set apart.
#[test]
fn intact_chains_group_in_order() {
    let all = [
        archive("i2", "f1", 2, Some(("i1", "sha-i1")), ok()),
        archive("f1", "f1", 0, None, ok()),
        archive("i1", "f1", 1, Some(("f1", "sha-f1")), ok()),
        archive("f2", "f2", 3, None, ok()),
        archive("j1", "f2", 4, Some(("f2", "sha-f2")), ok()),
    ];
    let mut legacy = archive("w", "w", 0, None, ok());
    legacy.manifest.chain = None;
    let refs: Vec<&Found> = all.iter().chain(std::iter::once(&legacy)).collect();
    let g = group(&refs);
    assert_eq!(g.chains.len(), 2);
    assert_eq!(
        names(&g.chains[0].archives().collect::<Vec<_>>()),
        ["f1", "i1", "i2"]
    );
    assert_eq!(
        names(&g.chains[1].archives().collect::<Vec<_>>()),
        ["f2", "j1"]
    );
    assert!(g.chains.iter().all(|c| c.broken.is_none()));
    assert!(g.stray.is_empty());
    assert_eq!(names(&g.windows), ["w"]);
    let cov = coverage(&g);
    assert_eq!((cov.from, cov.to), (Some(t(0)), Some(t(4))));
    assert!(cov.gaps.is_empty());
}

// A missing link, a link to another archive of the same name (its hash differs), and
// lost history each break the chain after the last archive that is still exact.
#[test]
fn broken_chains_say_where_and_why() {
    let missing = [
        archive("f1", "f1", 0, None, ok()),
        archive("i1", "f1", 1, Some(("f1", "sha-f1")), ok()),
        // i2 is gone
        archive("i3", "f1", 3, Some(("i2", "sha-i2")), ok()),
        archive("f2", "f2", 5, None, ok()),
    ];
    let refs: Vec<&Found> = missing.iter().collect();
    let g = group(&refs);
    let b = g.chains[0].broken.clone().unwrap();
    assert_eq!((b.after.as_str(), b.at), ("i1", t(1)));
    assert!(b.reason.contains("i2, which is missing"), "{}", b.reason);
    assert_eq!(names(&g.stray), ["i3"]);
    let cov = coverage(&g);
    assert_eq!(cov.gaps.len(), 1);
    assert_eq!((cov.gaps[0].from, cov.gaps[0].to), (t(1), Some(t(5))));

    let foreign = [
        archive("f1", "f1", 0, None, ok()),
        archive("i1", "f1", 1, Some(("f1", "sha-other")), ok()),
    ];
    let refs: Vec<&Found> = foreign.iter().collect();
    let b = group(&refs).chains[0].broken.clone().unwrap();
    assert!(b.reason.contains("foreign link"), "{}", b.reason);

    let lost = [
        archive("f1", "f1", 0, None, ok()),
        archive("i1", "f1", 1, Some(("f1", "sha-f1")), ok()),
        archive(
            "i2",
            "f1",
            2,
            Some(("i1", "sha-i1")),
            History::Lost("oplog rolled".into()),
        ),
    ];
    let refs: Vec<&Found> = lost.iter().collect();
    let g = group(&refs);
    let b = g.chains[0].broken.clone().unwrap();
    // Exact until the run that lost its history.
    assert_eq!(
        (b.after.as_str(), b.at),
        ("i1", t(2) - TimeDelta::milliseconds(1))
    );
    assert!(b.reason.contains("history lost"), "{}", b.reason);
    assert_eq!(names(&g.chains[0].links), ["i1"]);
}

// The next run is a full at first, when the full is due, and after a break;
// otherwise an incremental on the newest archive, from its cut.
#[test]
fn next_runs() {
    let week: HumanDuration = "7d".parse().unwrap();
    assert!(matches!(next_run(&[], week, t(0)), NextRun::Full(_)));
    let chain = [
        archive("f1", "f1", 0, None, ok()),
        archive("i1", "f1", 1, Some(("f1", "sha-f1")), ok()),
    ];
    let refs: Vec<&Found> = chain.iter().collect();
    assert_eq!(
        next_run(&refs, week, t(2)),
        NextRun::Incremental(Position {
            base: "f1".into(),
            previous: Previous {
                archive: "i1".into(),
                sha256: "sha-i1".into()
            },
            since: ClusterTime { t: 1, i: 1 },
            token: None,
        })
    );
    let NextRun::Full(why) = next_run(&refs, week, t(24 * 7)) else {
        panic!("a full is due after a week")
    };
    assert!(why.contains("`full` is 7d"), "{why}");
    // Within an hour of due counts as due (start times jitter); two hours early does not.
    assert!(matches!(
        next_run(&refs, week, t(24 * 7 - 1)),
        NextRun::Full(_)
    ));
    assert!(matches!(
        next_run(&refs, week, t(24 * 7 - 2)),
        NextRun::Incremental(_)
    ));
    let lost = [
        archive("f1", "f1", 0, None, ok()),
        archive(
            "i1",
            "f1",
            1,
            Some(("f1", "sha-f1")),
            History::Unavailable("standalone".into()),
        ),
    ];
    let refs: Vec<&Found> = lost.iter().collect();
    let NextRun::Full(why) = next_run(&refs, week, t(2)) else {
        panic!("history unavailable makes the next run a full")
    };
    assert!(why.contains("unavailable"), "{why}");
}

// A restore as of a time applies the newest full at or before it and its links up to
// it; before any full, or inside a break, it says which period cannot be restored.
#[test]
fn restores_as_of_a_time() {
    let all = [
        archive("f1", "f1", 0, None, ok()),
        archive("i1", "f1", 1, Some(("f1", "sha-f1")), ok()),
        archive("i2", "f1", 2, Some(("i1", "sha-i1")), ok()),
        archive("f2", "f2", 3, None, ok()),
        archive(
            "j1",
            "f2",
            4,
            Some(("f2", "sha-f2")),
            History::Lost("rolled".into()),
        ),
        archive("f3", "f3", 6, None, ok()),
    ];
    let refs: Vec<&Found> = all.iter().collect();
    let g = group(&refs);
    let at = |h| names(&as_of(&g, t(h)).unwrap());
    assert_eq!(at(0), ["f1"]);
    assert_eq!(at(1), ["f1", "i1"]);
    assert_eq!(at(2), ["f1", "i1", "i2"]);
    assert_eq!(at(3), ["f2"]);
    assert_eq!(at(7), ["f3"]);
    // j1 (hour 4) lost its history: exact at hour 3 (f2 alone), not from hour 4.
    assert_eq!(
        names(&as_of(&g, t(4) - TimeDelta::seconds(1)).unwrap()),
        ["f2"]
    );
    let e = as_of(&g, t(5)).unwrap_err();
    assert_eq!(
        (e.from, e.to),
        (Some(t(4) - TimeDelta::milliseconds(1)), Some(t(6)))
    );
    assert!(
        e.to_string().contains("cannot be restored exactly between"),
        "{e}"
    );
    let before = as_of(&g, t(-1)).unwrap_err();
    assert_eq!((before.from, before.to), (None, Some(t(0))));
}

// Retention keeps the newest chain whose full is older than the retention, every
// chain after it, and keepLast chains whatever their age.
#[test]
fn retention_keeps_whole_chains() {
    let all = [
        archive("f1", "f1", 0, None, ok()),
        archive("i1", "f1", 10, Some(("f1", "sha-f1")), ok()),
        archive("f2", "f2", 24, None, ok()),
        archive("f3", "f3", 48, None, ok()),
        archive("f4", "f4", 72, None, ok()),
    ];
    let refs: Vec<&Found> = all.iter().collect();
    let g = group(&refs);
    let day = TimeDelta::hours(24);
    // At hour 80 with 1 day of retention: f3 (48) is the newest full older than 56.
    assert_eq!(first_kept(&g, day, 0, t(80)), 2);
    // keepLast 3 keeps f2 too.
    assert_eq!(first_kept(&g, day, 3, t(80)), 1);
    // Nothing old enough: everything stays.
    assert_eq!(first_kept(&g, TimeDelta::hours(1000), 0, t(80)), 0);
}
