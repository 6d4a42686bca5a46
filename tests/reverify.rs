//! Periodic re-verification through the real code path with an injected clock: every
//! archive is read again within the period; a byte flipped in an old archive raises
//! exactly one alert however many passes see it, resolved once the archive is whole.

mod support;

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, TimeDelta, Utc};
use mongodb::bson::{DateTime as BsonDateTime, Document, doc};
use support::{Run, Scratch};

fn dcb(s: &Scratch, args: &[&str]) -> Run {
    Run::from(
        s.dcb()
            .args(args)
            .env("DCB_MONGODB_URI", &support::server().uri)
            .output()
            .unwrap(),
    )
}

/// A backup root with `runs` runs of two collections (2 × runs archives).
async fn backed_up(s: &Scratch, runs: usize) {
    let client = support::client().await;
    let src = support::unique_db("reverify");
    let db = client.database(&src);
    s.write(
        "policies/p.yaml",
        &format!(
            "name: p\nschedule: \"0 * * * *\"\ndatabase: {src}\nwindow: {{initial: all, settle: 0s}}\n\
             collections: [scans, {{name: roles, mode: snapshot}}]\nretention: 7d\n"
        ),
    );
    for i in 0..runs {
        db.collection::<Document>("scans")
            .insert_many(
                (0..20).map(|j| doc! {"createdAt": BsonDateTime::now(), "n": (i * 100 + j) as i64}),
            )
            .await
            .unwrap();
        db.collection::<Document>("roles")
            .insert_one(doc! {"createdAt": BsonDateTime::now(), "r": i as i64})
            .await
            .unwrap();
        tokio::time::sleep(Duration::from_millis(20)).await;
        let run = dcb(s, &["run", "--policy", "p"]);
        assert_eq!(run.code, 0, "{}{}", run.stdout, run.stderr);
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn settings(s: &Scratch) -> dcb::config::Settings {
    let overrides = dcb::config::Overrides {
        config: Some(s.path().join("dcb.yaml")),
        policies_dir: Some(s.path().join("policies")),
        backup_root: Some(s.path().join("backups")),
    };
    let uri = support::server().uri.clone();
    let env = move |name: &str| (name == "DCB_MONGODB_URI").then(|| uri.clone());
    dcb::config::Settings::resolve(&overrides, &env).unwrap()
}

fn lines(path: &Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

fn flip_byte(path: &Path) -> Vec<u8> {
    let original = std::fs::read(path).unwrap();
    let mut bytes = original.clone();
    let i = bytes.len() / 2;
    bytes[i] ^= 0x01;
    std::fs::write(path, bytes).unwrap();
    original
}

// Day by day over two periods of 30 days: each pass reads a share, every archive is
// read again before 30 days pass; a byte flipped on day 35 in the oldest archive raises
// one alert in all the passes that find it, and its repair resolves it.
#[tokio::test]
async fn every_archive_within_the_period_and_one_alert_per_corruption() {
    let s = Scratch::new();
    // No cool-down: a raise at every pass would show as a line per pass.
    s.write(
        "dcb.yaml",
        "reverify:\n  period: 30d\n  interval: 1d\nalerts:\n  cooldown: 0s\n",
    );
    backed_up(&s, 4).await;
    let settings = settings(&s);
    let root = settings.backup_root.clone();
    let alerts_log = root.join("logs/alerts.log");
    let alerter = Arc::new(dcb::alert::Alerter::new(&settings.alerts, alerts_log.clone()).unwrap());
    let current = alerter.clone();
    let events =
        dcb::events::Emitter::new(&settings).with_alerts(Arc::new(move || current.clone()));
    let keys = dcb::crypto::Keys::default();
    let archives = support::archives(&root, "p", "scans");
    let oldest = archives[0].clone();
    let oldest_key = format!("p/{}", oldest.file_name().unwrap().to_string_lossy());
    let t0: DateTime<Utc> = "2027-01-01T03:00:00Z".parse().unwrap();
    let mut reads: BTreeMap<String, Vec<i64>> = BTreeMap::new();
    let mut original = None;
    let mut per_pass = Vec::new();
    for day in 0..=75i64 {
        if day == 35 {
            original = Some(flip_byte(&oldest));
        }
        if day == 70 {
            std::fs::write(&oldest, original.take().unwrap()).unwrap();
        }
        let now = t0 + TimeDelta::days(day);
        let pass = dcb::reverify::pass(&settings, &keys, now);
        events.emit(dcb::events::Event::Reverified(&pass)).await;
        assert_eq!(pass.archives, 8);
        per_pass.push(pass.outcomes.len());
        for o in &pass.outcomes {
            reads.entry(o.archive.clone()).or_default().push(day);
            let corrupt_now = (35..70).contains(&day) && o.archive == oldest_key;
            assert_eq!(o.ok, !corrupt_now, "day {day}: {o:?}");
        }
    }
    alerter.flush().await;
    assert_eq!(reads.len(), 8, "{reads:?}");
    for (archive, days) in &reads {
        // Seen on day 0; never unread for 30 days or more after that.
        let mut last = 0;
        for d in days.iter().copied().chain([75]) {
            assert!(
                d - last < 30,
                "{archive} unread from day {last} to {d}: {days:?}"
            );
            last = d;
        }
    }
    // A share per pass, not everything at once (8 archives / 30 days: 1 a day, plus
    // the corrupt one while it is corrupt).
    assert!(per_pass.iter().all(|n| *n <= 2), "{per_pass:?}");
    // Found within the period of the flip, then read at every pass while corrupt,
    // yet alerted once.
    let found = *reads[&oldest_key].iter().find(|d| **d >= 35).unwrap();
    assert!(found < 35 + 30, "{found}");
    let corrupt_reads = reads[&oldest_key]
        .iter()
        .filter(|d| (35..70).contains(*d))
        .count() as i64;
    assert_eq!(corrupt_reads, 70 - found);
    let alerts = lines(&alerts_log);
    let key = format!("corrupt:{oldest_key}");
    let kinds: Vec<&str> = alerts
        .iter()
        .filter(|a| a["key"] == key.as_str())
        .map(|a| a["kind"].as_str().unwrap())
        .collect();
    assert_eq!(kinds, ["failure", "resolved"], "{alerts:?}");
    assert_eq!(alerts.len(), 2, "{alerts:?}");
    // verify.log: a line per read archive, in the agreed shape, at the pass's time.
    let log = lines(&root.join("logs/verify.log"));
    let bad: Vec<&serde_json::Value> = log.iter().filter(|l| l["ok"] == false).collect();
    assert_eq!(bad.len() as i64, corrupt_reads);
    for l in &log {
        assert!(l["at"].as_str().unwrap().starts_with("2027-"), "{l}");
        assert!(l["bytes"].as_u64().unwrap() > 0, "{l}");
        assert_eq!(l["problem"].is_null(), l["ok"] == true, "{l}");
    }
    assert_eq!(bad[0]["archive"], oldest_key.as_str());
    // The state file is whole JSON, written atomically beside the archives.
    let state: serde_json::Value =
        serde_json::from_slice(&std::fs::read(root.join("reverify-state.json")).unwrap()).unwrap();
    assert_eq!(state.as_object().unwrap().len(), 8);
}

// An archive that is removed while corrupt resolves its alert and leaves the state.
#[tokio::test]
async fn a_removed_corrupt_archive_resolves() {
    let s = Scratch::new();
    // Every archive in every pass: which of two never-read archives a pass of one
    // would take first is not this test's business.
    s.write("dcb.yaml", "reverify:\n  period: 1d\n  interval: 1d\n");
    backed_up(&s, 1).await;
    let settings = settings(&s);
    let root = settings.backup_root.clone();
    let keys = dcb::crypto::Keys::default();
    let archive = support::archives(&root, "p", "scans")[0].clone();
    let key = format!("p/{}", archive.file_name().unwrap().to_string_lossy());
    flip_byte(&archive);
    let t0: DateTime<Utc> = "2027-01-01T03:00:00Z".parse().unwrap();
    let pass = dcb::reverify::pass(&settings, &keys, t0);
    let flips: Vec<_> = pass.outcomes.iter().filter(|o| o.flip.is_some()).collect();
    assert_eq!(flips.len(), 1, "{pass:?}");
    assert_eq!(flips[0].flip, Some(dcb::reverify::Flip::Corrupted));
    assert_eq!(pass.corrupt, 1);
    std::fs::remove_file(&archive).unwrap();
    std::fs::remove_file(support::manifest_of(&archive)).unwrap();
    let pass = dcb::reverify::pass(&settings, &keys, t0 + TimeDelta::days(1));
    let gone: Vec<_> = pass.outcomes.iter().filter(|o| o.archive == key).collect();
    assert_eq!(gone.len(), 1);
    assert_eq!(gone[0].flip, Some(dcb::reverify::Flip::Removed));
    assert_eq!(pass.corrupt, 0);
}

// The service runs the passes on its own: with a short period, a flipped byte shows
// up as one `corrupt:` alert and in the metrics, however many passes run.
#[tokio::test]
async fn the_service_reverifies() {
    let s = Scratch::new();
    s.write(
        "dcb.yaml",
        "reverify:\n  period: 2s\n  interval: 1s\nhttp:\n  listen: 127.0.0.1:0\nalerts:\n  cooldown: 0s\n",
    );
    backed_up(&s, 1).await;
    let root = s.path().join("backups");
    let archive = support::archives(&root, "p", "scans")[0].clone();
    let key = format!(
        "corrupt:p/{}",
        archive.file_name().unwrap().to_string_lossy()
    );
    flip_byte(&archive);
    let mut child = s
        .dcb()
        .args(["--config", "dcb.yaml", "serve"])
        .env("DCB_MONGODB_URI", &support::server().uri)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    support::eventually(60, "the corruption alert", || {
        lines(&root.join("logs/alerts.log"))
            .iter()
            .any(|a| a["key"] == key.as_str())
            .then_some(())
    });
    // Several more passes read it again.
    let bad_reads = || {
        lines(&root.join("logs/verify.log"))
            .iter()
            .filter(|l| l["ok"] == false)
            .count()
    };
    let seen = bad_reads();
    support::eventually(60, "three more passes", || {
        (bad_reads() >= seen + 3).then_some(())
    });
    let service: serde_json::Value =
        serde_json::from_slice(&std::fs::read(root.join("logs/service.json")).unwrap()).unwrap();
    let addr = service["http"].as_str().unwrap().to_string();
    let (_, metrics) = support::http_get(&addr, "/metrics");
    let _ = child.kill();
    let _ = child.wait();
    let raised = lines(&root.join("logs/alerts.log"))
        .iter()
        .filter(|a| a["key"] == key.as_str())
        .count();
    assert_eq!(raised, 1);
    assert!(
        metrics.contains("dcb_reverify_corrupt_archives 1"),
        "{metrics}"
    );
}
