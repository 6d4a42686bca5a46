use super::*;
use crate::export::manifest::Manifest;
use crate::storage::Source;
use chrono::TimeZone;
use std::path::PathBuf;

fn t(h: u32) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 11, 1, h, 0, 0).unwrap()
}

fn found(policy: &str, coll: &str, mode: Mode, from: Option<u32>, to: u32) -> Found {
    let stem = format!("{to:02}_{coll}");
    Found {
        manifest: Manifest {
            format: 1,
            dcb_version: "t".into(),
            policy: policy.into(),
            database: "mes".into(),
            collection: coll.into(),
            time_field: "createdAt".into(),
            mode,
            from: from.map(t),
            to: t(to),
            documents: 10,
            bytes: 100,
            untimed: None,
            members: vec![],
            server_version: "t".into(),
            started_at: t(to),
            finished_at: t(to),
            archive: format!("{stem}.tar.gz"),
            archive_sha256: None,
            archive_size: None,
            encrypted: false,
            kind: None,
            chain: None,
            changes: None,
            epoch: None,
        },
        archive: Source::File(PathBuf::from(format!("{policy}/{stem}.tar.gz"))),
        manifest_key: format!("{policy}/{stem}.manifest.json"),
        size: 100,
    }
}

fn req(until: Option<u32>) -> Request {
    Request {
        policies: Vec::new(),
        collections: Vec::new(),
        to_database: "restored".into(),
        to_collection: None,
        until: until.map(t),
        in_place: false,
        partial: false,
        now: t(23),
    }
}

fn tos(c: &Chain) -> Vec<u32> {
    use chrono::Timelike;
    c.archives.iter().map(|f| f.manifest.to.hour()).collect()
}

// Time-series targets and --until need an empty target; --drop makes one.
#[test]
fn empty_targets_for_time_series_and_until() {
    use serde_json::json;
    assert!(is_timeseries(&json!({"type": "timeseries"})));
    assert!(is_timeseries(
        &json!({"type": "collection", "options": {"timeseries": {"timeField": "t"}}})
    ));
    assert!(!is_timeseries(
        &json!({"type": "collection", "options": {}})
    ));
    assert!(!is_timeseries(&json!({"options": {"timeseries": null}})));
    assert!(!is_timeseries(&json!(null)));
    assert_eq!(
        needs_empty_target(false, false, true),
        Some(EmptyTarget::TimeSeries)
    );
    assert_eq!(
        needs_empty_target(false, true, true),
        Some(EmptyTarget::TimeSeries)
    );
    assert_eq!(
        needs_empty_target(false, true, false),
        Some(EmptyTarget::Until)
    );
    assert_eq!(needs_empty_target(false, false, false), None);
    assert_eq!(needs_empty_target(true, true, true), None);
    let m = EmptyTarget::TimeSeries.refusal("r.m");
    assert!(m.contains("time-series") && m.contains("--drop"), "{m}");
}

// A broken manifest blocks a restore only when it may belong to the selection.
#[test]
fn broken_manifests_are_matched_by_their_file_name() {
    let p = |n: &str| PathBuf::from(format!("backups/hot/{n}"));
    let sel = |c: &[&str]| c.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    let scans = p("20261125T093000.000Z_mes.scans.manifest.json");
    assert!(may_belong_to(&scans, &[]));
    assert!(may_belong_to(&scans, &sel(&["scans"])));
    assert!(!may_belong_to(&scans, &sel(&["roles"])));
    // Collection names may hold dots; database names may not.
    let dotted = p("20261125T093000.000Z_mes.orders.2026.manifest.json");
    assert!(may_belong_to(&dotted, &sel(&["orders.2026"])));
    assert!(!may_belong_to(&dotted, &sel(&["orders"])));
    // Names dcb did not write could be anything's.
    for odd in [
        "x.manifest.json",
        "garbage_mes.scans.manifest.json",
        "20261125T093000.000Z_mes.manifest.json",
        "20261125T093000.000Z_.scans.manifest.json",
        "20261125T093000.000Z_mes.scans.json",
    ] {
        assert!(may_belong_to(p(odd), &sel(&["roles"])), "{odd}");
    }
}

#[test]
fn times_parse_in_the_given_zone() {
    let sh = chrono_tz::Asia::Shanghai;
    let want = Utc.with_ymd_and_hms(2026, 11, 25, 0, 0, 0).unwrap();
    assert_eq!(parse_time("2026-11-25T08:00:00+08:00", sh).unwrap(), want);
    assert_eq!(parse_time("2026-11-25T00:00:00Z", sh).unwrap(), want);
    assert_eq!(parse_time("2026-11-25 08:00", sh).unwrap(), want);
    assert_eq!(parse_time("2026-11-25T08:00:00", sh).unwrap(), want);
    assert_eq!(
        parse_time("2026-11-25", sh).unwrap(),
        Utc.with_ymd_and_hms(2026, 11, 24, 16, 0, 0).unwrap()
    );
    assert!(
        parse_time("yesterday", sh)
            .unwrap_err()
            .0
            .contains("RFC 3339")
    );
}

#[test]
fn incremental_chains_are_oldest_first_and_cut_at_until() {
    let inc = Mode::Incremental;
    let all = [
        found("hot", "scans", inc, Some(3), 4),
        found("hot", "scans", inc, None, 2),
        found("hot", "scans", inc, Some(2), 3),
        found("hot", "logs", inc, Some(1), 5),
    ];
    let chains = plan(&all, &req(None)).unwrap();
    assert_eq!(chains.len(), 2);
    let scans = chains.iter().find(|c| c.collection == "scans").unwrap();
    assert_eq!(tos(scans), [2, 3, 4]);
    assert_eq!(scans.documents(), 30);
    assert_eq!(scans.target(), "restored.scans");
    // Windows starting before 3:00 only: [-, 2) and [2, 3).
    let chains = plan(&all, &req(Some(3))).unwrap();
    let scans = chains.iter().find(|c| c.collection == "scans").unwrap();
    assert_eq!(tos(scans), [2, 3]);
    // Nothing before 1:00 in logs; nothing at all before 0:00 except unbounded.
    let chains = plan(&all, &req(Some(1))).unwrap();
    assert_eq!(chains.len(), 1);
    assert_eq!(tos(&chains[0]), [2]);
}

#[test]
fn snapshots_restore_only_the_newest_before_until() {
    let snap = Mode::Snapshot;
    let all = [
        found("config", "roles", snap, None, 1),
        found("config", "roles", snap, None, 5),
        found("config", "roles", snap, None, 3),
    ];
    assert_eq!(tos(&plan(&all, &req(None)).unwrap()[0]), [5]);
    assert_eq!(tos(&plan(&all, &req(Some(4))).unwrap()[0]), [3]);
    assert_eq!(tos(&plan(&all, &req(Some(3))).unwrap()[0]), [3]);
    assert!(plan(&all, &req(Some(0))).is_err());
}

#[test]
fn mixed_modes_are_refused_and_empty_collections_named() {
    let all = [
        found("hot", "roles", Mode::Incremental, None, 2),
        found("hot", "roles", Mode::Snapshot, None, 4),
    ];
    let e = plan(&all, &req(None)).unwrap_err();
    assert!(e.0.contains("mix snapshot and incremental"), "{e}");
    let all = [
        found("hot", "scans", Mode::Incremental, None, 2),
        found("hot", "logs", Mode::Incremental, Some(5), 6),
    ];
    let (chains, skipped) = plan_with_skipped(&all, &req(Some(3))).unwrap();
    assert_eq!(chains.len(), 1);
    assert_eq!(skipped, ["hot:mes.logs"]);
}

#[test]
fn selection_targets_and_safety() {
    let inc = Mode::Incremental;
    let all = [
        found("hot", "scans", inc, None, 2),
        found("core", "scans", inc, None, 2),
        found("core", "orders", inc, None, 2),
    ];
    // The same collection from two policies is ambiguous.
    let e = plan(&all, &req(None)).unwrap_err();
    assert!(e.0.contains("--policy"), "{e}");
    let r = Request {
        policies: vec!["core".into()],
        collections: vec!["orders".into()],
        to_collection: Some("orders_copy".into()),
        ..req(None)
    };
    let chains = plan(&all, &r).unwrap();
    assert_eq!(chains.len(), 1);
    assert_eq!(chains[0].target(), "restored.orders_copy");
    // --to-collection with two sources.
    let r = Request {
        policies: vec!["core".into()],
        to_collection: Some("x".into()),
        ..req(None)
    };
    assert!(plan(&all, &r).unwrap_err().0.contains("exactly one"));
    // Into the source database only with --in-place.
    let r = Request {
        policies: vec!["hot".into()],
        to_database: "mes".into(),
        ..req(None)
    };
    assert!(plan(&all, &r).unwrap_err().0.contains("--in-place"));
    let r = Request {
        in_place: true,
        ..r
    };
    assert_eq!(plan(&all, &r).unwrap()[0].target(), "mes.scans");
    // Nothing selected; bad names.
    let r = Request {
        policies: vec!["nope".into()],
        ..req(None)
    };
    assert!(plan(&all, &r).is_err());
    let r = Request {
        to_database: "a/b".into(),
        ..req(None)
    };
    assert!(plan(&all, &r).unwrap_err().0.contains("--to-database"));
}
