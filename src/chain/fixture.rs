//! Chain archives for tests: a manifest of a chain, cut at an hour of 2026-11-01.

use chrono::{DateTime, TimeDelta, TimeZone, Utc};
use std::path::PathBuf;

use crate::catalog::Found;
use crate::export::manifest::{Changes, ClusterTime, History, Kind, Link, Manifest, Previous};
use crate::policy::Mode;
use crate::storage::Source;

pub fn t(h: i64) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 11, 1, 0, 0, 0).unwrap() + TimeDelta::hours(h)
}

/// An archive of the chain based on `base`, cut at hour `h`, after `prev` (None: a full).
pub fn archive(
    name: &str,
    base: &str,
    h: i64,
    prev: Option<(&str, &str)>,
    history: History,
) -> Found {
    let kind = if prev.is_none() {
        Kind::Full
    } else {
        Kind::Incremental
    };
    Found {
        manifest: Manifest {
            format: 2,
            dcb_version: "t".into(),
            policy: "p".into(),
            database: "db".into(),
            collection: "c".into(),
            time_field: "updatedAt".into(),
            mode: Mode::Incremental,
            from: None,
            to: t(h),
            documents: 1,
            bytes: 1,
            untimed: None,
            members: vec![],
            server_version: "t".into(),
            started_at: t(h),
            finished_at: t(h),
            archive: name.into(),
            archive_sha256: Some(format!("sha-{name}")),
            archive_size: None,
            encrypted: false,
            kind: Some(kind),
            chain: Some(Link {
                base: base.into(),
                previous: prev.map(|(a, sha)| Previous {
                    archive: a.into(),
                    sha256: sha.into(),
                }),
            }),
            changes: Some(Changes {
                until: ClusterTime { t: h as u32, i: 1 },
                at: t(h),
                since: prev.map(|_| ClusterTime {
                    t: (h - 1) as u32,
                    i: 1,
                }),
                deleted: 0,
                captured: 0,
                history,
                token: None,
            }),
            epoch: None,
        },
        archive: Source::File(PathBuf::from(name)),
        manifest_key: format!("p/{name}.manifest.json"),
        size: 10,
    }
}
