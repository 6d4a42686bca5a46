//! The MongoDB lease lock against the real test server: one holder per scope, epochs
//! that only grow, renewals, expiry of a dead holder (dropped or killed), theft
//! detected, release, the server's clock as the only clock, and the privilege it
//! needs.

mod support;

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use dcb::lease::{self, Holder, Lease, LeaseError, LostReason, Released};
use futures_util::future::join_all;
use mongodb::bson::{Document, doc};
use mongodb::{Client, Collection};

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

async fn take(client: &Client, db: &str, scope: &str, ttl: Duration) -> Option<Lease> {
    Lease::take(client, db, scope, ttl, Holder::this_process())
        .await
        .expect("the take reaches the server")
}

fn locks(client: &Client, db: &str) -> Collection<Document> {
    client.database(db).collection(lease::COLLECTION)
}

/// Try to take `scope` every 50 ms until it succeeds; panics after `limit`.
async fn take_when_free(
    client: &Client,
    db: &str,
    scope: &str,
    ttl: Duration,
    limit: Duration,
) -> Lease {
    let start = Instant::now();
    loop {
        if let Some(l) = take(client, db, scope, ttl).await {
            return l;
        }
        assert!(
            start.elapsed() < limit,
            "`{scope}` still held after {limit:?}"
        );
        tokio::time::sleep(ms(50)).await;
    }
}

/// Assert nobody else can take `scope` for `span`, trying every 200 ms.
async fn stays_held(client: &Client, db: &str, scope: &str, span: Duration) {
    let start = Instant::now();
    while start.elapsed() < span {
        assert!(
            take(client, db, scope, ms(1000)).await.is_none(),
            "another holder took `{scope}` {:?} in",
            start.elapsed()
        );
        tokio::time::sleep(ms(200)).await;
    }
}

// Of eight takers racing for one scope, exactly one gets it, and the collection says
// it is that one.
#[tokio::test]
async fn one_of_many_takers_gets_the_scope() {
    let client = support::client().await;
    let db = support::unique_db("lease");
    let takers = (0..8).map(|_| take(&client, &db, "policy/race", ms(3000)));
    let won: Vec<Lease> = join_all(takers).await.into_iter().flatten().collect();
    assert_eq!(won.len(), 1, "exactly one taker wins");
    let held = lease::holders(&client, &db).await.unwrap();
    assert_eq!(held.len(), 1);
    assert_eq!(held[0].holder.id, won[0].holder().id);
    assert_eq!(held[0].epoch, won[0].epoch());
    assert!(!held[0].expired);
}

// Every take gets a higher epoch than the one before: a holder's own retake, a take
// after a release (the document is kept) and a take after an expiry.
#[tokio::test]
async fn epochs_only_grow_across_takeovers() {
    let client = support::client().await;
    let db = support::unique_db("lease");
    let scope = "policy/epochs";
    let a = Holder::this_process();
    let first = Lease::take(&client, &db, scope, ms(1000), a.clone())
        .await
        .unwrap()
        .unwrap();
    let again = Lease::take(&client, &db, scope, ms(1000), a)
        .await
        .unwrap()
        .unwrap();
    assert!(again.epoch() > first.epoch());
    // The older take of the same holder is superseded: its renewal finds a newer epoch.
    let reason = tokio::time::timeout(ms(2000), first.lost())
        .await
        .expect("lost");
    assert!(
        matches!(reason, LostReason::TakenOver { epoch, .. } if epoch == again.epoch()),
        "{reason:?}"
    );
    let e2 = again.epoch();
    assert_eq!(again.release().await.unwrap(), Released::Released);
    let b = take(&client, &db, scope, ms(1000))
        .await
        .expect("free after release");
    assert!(b.epoch() > e2, "a release does not reset the epoch");
    let e3 = b.epoch();
    drop(b);
    let c = take_when_free(&client, &db, scope, ms(1000), ms(3000)).await;
    assert!(c.epoch() > e3, "an expired lease's epoch still counts");
}

// Renewals every third of the time-to-live keep a 1.5 s lease for 4.5 s: nobody else
// can take it, the holder never sees it lost, and its epoch stays the same.
#[tokio::test]
async fn renewal_keeps_the_lease_past_several_ttls() {
    let client = support::client().await;
    let db = support::unique_db("lease");
    let held = take(&client, &db, "policy/renew", ms(1500)).await.unwrap();
    tokio::select! {
        _ = stays_held(&client, &db, "policy/renew", ms(4500)) => {}
        reason = held.lost() => panic!("lost while renewing: {reason}"),
    }
    assert!(held.is_held());
    held.confirm().await.expect("still held");
    let info = &lease::holders(&client, &db).await.unwrap()[0];
    assert_eq!(info.epoch, held.epoch());
    assert!(info.expires_at - info.taken_at >= chrono::Duration::milliseconds(4500));
}

// A holder that stops renewing (dropped without release) keeps the scope until its
// time-to-live runs out on the server, then the next taker gets it with a higher epoch.
#[tokio::test]
async fn dropped_holder_loses_it_after_the_ttl() {
    let client = support::client().await;
    let db = support::unique_db("lease");
    let ttl = ms(1500);
    let sent = Instant::now();
    let dead = take(&client, &db, "policy/drop", ttl).await.unwrap();
    let epoch = dead.epoch();
    drop(dead);
    assert!(
        take(&client, &db, "policy/drop", ttl).await.is_none(),
        "not before its time-to-live"
    );
    let next = take_when_free(&client, &db, "policy/drop", ttl, ms(4000)).await;
    let after = sent.elapsed();
    // The server's expiry is at least `ttl` after the take was sent; allow its
    // millisecond rounding.
    assert!(after + ms(5) >= ttl, "taken over after only {after:?}");
    assert!(after < ttl + ms(1000), "taken over only after {after:?}");
    assert!(next.epoch() > epoch);
}

// A holder process killed with SIGKILL (no release, no drop) keeps the scope while it
// lived and renewed, and loses it one time-to-live after its death: the next taker
// then gets it with a higher epoch.
#[tokio::test]
async fn killed_holder_process_loses_it_after_the_ttl() {
    let client = support::client().await;
    let db = support::unique_db("lease");
    let ttl = ms(1500);
    let (child, epoch) = spawn_holder(&db, "policy/kill", ttl);
    let mut child = KillOnDrop(child);
    // Twice its time-to-live: only renewals keep it this long.
    stays_held(&client, &db, "policy/kill", ttl * 2).await;
    // SIGKILL on Unix: no release, no destructor, no last renewal.
    child.0.kill().expect("kill -9 the holder");
    let killed = Instant::now();
    child.0.wait().unwrap();
    let next = take_when_free(&client, &db, "policy/kill", ttl, ttl + ms(2000)).await;
    let after = killed.elapsed();
    assert!(next.epoch() > epoch, "{} after {epoch}", next.epoch());
    assert!(
        after <= ttl + ms(1000),
        "taken over only {after:?} after the kill"
    );
}

// The child process of `killed_holder_process_loses_it_after_the_ttl`: takes the lease
// it is told to, prints `HELD <epoch>` and renews until killed. It does nothing
// unless that test started it.
#[tokio::test]
#[ignore = "the child process of killed_holder_process_loses_it_after_the_ttl, started by it"]
async fn child_process_holding_a_lease() {
    let Ok(uri) = std::env::var("DCB_LEASE_CHILD_URI") else {
        return;
    };
    let db = std::env::var("DCB_LEASE_CHILD_DB").unwrap();
    let scope = std::env::var("DCB_LEASE_CHILD_SCOPE").unwrap();
    let ttl = ms(std::env::var("DCB_LEASE_CHILD_TTL_MS")
        .unwrap()
        .parse()
        .unwrap());
    let client = Client::with_uri_str(&uri).await.unwrap();
    let held = take(&client, &db, &scope, ttl)
        .await
        .expect("the scope is free");
    println!("HELD {}", held.epoch());
    let reason = held.lost().await;
    panic!("the child lost its lease: {reason}");
}

/// A child process that does not outlive a failed test.
struct KillOnDrop(Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Run `child_process_holding_a_lease` in a new process of this test binary; returns
/// once it holds the lease, with its epoch.
fn spawn_holder(db: &str, scope: &str, ttl: Duration) -> (Child, i64) {
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "child_process_holding_a_lease",
            "--ignored",
            "--nocapture",
        ])
        .env("DCB_LEASE_CHILD_URI", &support::server().uri)
        .env("DCB_LEASE_CHILD_DB", db)
        .env("DCB_LEASE_CHILD_SCOPE", scope)
        .env("DCB_LEASE_CHILD_TTL_MS", ttl.as_millis().to_string())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("start the holder process");
    let lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let epoch = lines
        .map_while(Result::ok)
        .find_map(|l| l.strip_prefix("HELD ").map(|e| e.parse::<i64>().unwrap()))
        .expect("the holder process reports its lease");
    (child, epoch)
}

// A lease rewritten under its holder (another holder, a higher epoch) is seen lost by
// the next renewal, within a third of the time-to-live: `lost()` resolves with the
// thief's name, `is_held()` is false, `confirm()` refuses, and the release leaves the
// thief's lease alone.
#[tokio::test]
async fn stolen_lease_is_detected_as_lost() {
    let client = support::client().await;
    let db = support::unique_db("lease");
    let ttl = ms(3000);
    let held = take(&client, &db, "policy/steal", ttl).await.unwrap();
    let thief_epoch = held.epoch() + 1;
    locks(&client, &db)
        .update_one(
            doc! {"_id": "policy/steal"},
            vec![doc! {"$set": {
                "holder.id": "thief",
                "epoch": thief_epoch,
                "expiresAt": {"$add": ["$$NOW", 3_600_000_i64]},
            }}],
        )
        .await
        .unwrap();
    let stolen = Instant::now();
    let reason = tokio::time::timeout(ttl / 3 + ms(700), held.lost())
        .await
        .expect("the next renewal notices");
    eprintln!("theft noticed after {:?}", stolen.elapsed());
    match &reason {
        LostReason::TakenOver { holder, epoch } => {
            assert_eq!(holder, "thief");
            assert_eq!(*epoch, thief_epoch);
        }
        other => panic!("{other:?}"),
    }
    assert!(!held.is_held());
    assert_eq!(held.valid_for(), Duration::ZERO);
    assert!(matches!(held.confirm().await, Err(LeaseError::Lost { .. })));
    assert_eq!(held.release().await.unwrap(), Released::NotHeld);
    let info = &lease::holders(&client, &db).await.unwrap()[0];
    assert_eq!(
        (info.holder.id.as_str(), info.epoch, info.expired),
        ("thief", thief_epoch, false)
    );
}

// A release lets the next taker in at once, long before the time-to-live would have;
// `holders` then shows the released lease as expired and the new one as live.
#[tokio::test]
async fn release_lets_the_next_taker_in_at_once() {
    let client = support::client().await;
    let db = support::unique_db("lease");
    let ttl = ms(60_000);
    let a = take(&client, &db, "policy/rel", ttl).await.unwrap();
    let other = take(&client, &db, "policy/other", ttl).await.unwrap();
    assert!(take(&client, &db, "policy/rel", ttl).await.is_none());
    let epoch = a.epoch();
    assert_eq!(a.release().await.unwrap(), Released::Released);
    let before = lease::holders(&client, &db).await.unwrap();
    assert_eq!(before.len(), 2);
    let rel = before.iter().find(|i| i.scope == "policy/rel").unwrap();
    assert!(rel.expired);
    assert_eq!(rel.remaining(), Duration::ZERO);
    let oth = before.iter().find(|i| i.scope == "policy/other").unwrap();
    assert!(!oth.expired && oth.remaining() > ms(50_000));
    assert_eq!(oth.holder, *other.holder());
    let b = take(&client, &db, "policy/rel", ttl)
        .await
        .expect("free at once");
    assert_eq!(b.epoch(), epoch + 1);
}

// The time-to-live runs on the server's clock only: with the server's clock an hour
// ahead of this machine's, then an hour behind, a lease is still refused to others
// while renewed, and free one time-to-live after its holder stops (not at once, not
// an hour later).
#[tokio::test]
async fn ttl_is_measured_on_the_server_clock() {
    for skew in [3600_i64, -3600] {
        let server = SkewedServer::start(skew);
        let client = Client::with_uri_str(&server.uri).await.unwrap();
        let hello = client
            .database("admin")
            .run_command(doc! {"hello": 1})
            .await
            .unwrap();
        let offset = hello.get_datetime("localTime").unwrap().timestamp_millis()
            - chrono::Utc::now().timestamp_millis();
        assert!(
            (offset - skew * 1000).abs() < 60_000,
            "the server's clock is not {skew} s off: {offset} ms"
        );
        let db = "dcb";
        let ttl = ms(1500);
        let sent = Instant::now();
        let a = take(&client, db, "policy/clock", ttl).await.unwrap();
        let info = &lease::holders(&client, db).await.unwrap()[0];
        assert!(
            !info.expired && info.remaining() <= ttl && info.remaining() > ms(500),
            "skew {skew}: {info:?}"
        );
        stays_held(&client, db, "policy/clock", ttl * 2).await;
        assert!(a.is_held(), "skew {skew}");
        drop(a);
        let stopped = Instant::now();
        let b = take_when_free(&client, db, "policy/clock", ttl, ttl + ms(2000)).await;
        assert!(
            stopped.elapsed() <= ttl + ms(1000),
            "skew {skew}: {:?}",
            stopped.elapsed()
        );
        assert!(sent.elapsed() >= ttl * 3);
        drop(b);
        server.stop();
    }
}

/// The test server with its wall clock moved by `skew` seconds
/// (tests/support/skewed_clock/sitecustomize.py).
struct SkewedServer {
    uri: String,
    launcher: Child,
}

impl SkewedServer {
    fn start(skew: i64) -> SkewedServer {
        let python =
            support::venv_python().unwrap_or_else(|| panic!("{}", support::HOW_TO_GET_A_SERVER));
        let root = support::project_root();
        let mut launcher = Command::new(python)
            .arg(root.join("scripts/testserver.py"))
            .env("PYTHONPATH", root.join("tests/support/skewed_clock"))
            .env("DCB_TEST_SERVER_CLOCK_SKEW", skew.to_string())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("start the test server");
        let lines = BufReader::new(launcher.stdout.take().unwrap()).lines();
        let uri = lines
            .map_while(Result::ok)
            .find_map(|l| l.strip_prefix("READY ").map(str::to_string))
            .expect("the test server starts");
        SkewedServer { uri, launcher }
    }

    /// Closing the launcher's stdin stops the server.
    fn stop(mut self) {
        drop(self.launcher.stdin.take());
        let _ = self.launcher.wait();
    }
}

// A holder that cannot reach the server loses its lease one time-to-live after its
// last confirmed renewal, whatever the driver's own timeouts.
#[tokio::test]
async fn unreachable_server_loses_the_lease_after_the_ttl() {
    let server = support::start_server(&[]);
    let client = Client::with_uri_str(&server.uri).await.unwrap();
    let ttl = ms(1500);
    let held = take(&client, "dcb", "policy/gone", ttl).await.unwrap();
    // Held past its first time-to-live: the renewals reach the server until it stops.
    tokio::time::sleep(ttl * 2).await;
    assert!(held.is_held());
    server.stop();
    let stopped = Instant::now();
    let reason = tokio::time::timeout(ttl + ms(1000), held.lost())
        .await
        .expect("lost in time");
    assert!(
        matches!(reason, LostReason::Unconfirmed { .. }),
        "{reason:?}"
    );
    assert!(
        stopped.elapsed() <= ttl + ms(500),
        "{:?}",
        stopped.elapsed()
    );
    assert!(!held.is_held());
}

const LOCKER_PW: &str = "Locker-pw-8sK2dW";
const READER_PW: &str = "Reader-pw-3vN7qP";

// `readWrite` on the lock database alone, nothing on the backed-up one, is enough to
// take, renew, confirm, list and release a lease; a user that can only read the
// backed-up database cannot take one, and the error does not show its password.
#[tokio::test]
async fn read_write_on_the_lock_database_is_enough() {
    let storage = tempfile::tempdir().unwrap();
    let port = support::free_port();
    let uri = |user: &str| {
        format!("mongodb://{user}127.0.0.1:{port}/?authSource=admin&directConnection=true")
    };
    let open = support::start_server_at(port, storage.path(), &[]);
    let setup = Client::with_uri_str(uri("")).await.unwrap();
    for (user, pwd, role, db) in [
        ("locker", LOCKER_PW, "readWrite", "dcb"),
        ("reader", READER_PW, "read", "mes"),
    ] {
        setup
            .database("admin")
            .run_command(doc! {"createUser": user, "pwd": pwd, "roles": [{"role": role, "db": db}], "mechanisms": ["SCRAM-SHA-256"]})
            .await
            .unwrap();
    }
    setup
        .database("mes")
        .collection::<Document>("scans")
        .insert_one(doc! {"i": 1})
        .await
        .unwrap();
    setup.shutdown().await;
    open.stop();
    let server = support::start_server_at(port, storage.path(), &["--auth"]);

    let locker = Client::with_uri_str(uri(&format!("locker:{LOCKER_PW}@")))
        .await
        .unwrap();
    let held = take(&locker, "dcb", "policy/auth", ms(3000))
        .await
        .expect("free");
    // Past its time-to-live: renewals, under the same user, keep it.
    stays_held(&locker, "dcb", "policy/auth", ms(4000)).await;
    held.confirm().await.expect("renewed");
    let info = lease::holders(&locker, "dcb").await.unwrap();
    assert_eq!(info[0].epoch, held.epoch());
    assert_eq!(held.release().await.unwrap(), Released::Released);
    // The user really has nothing on the backed-up database.
    let scans = locker.database("mes").collection::<Document>("scans");
    assert!(
        scans.find_one(doc! {}).await.is_err(),
        "the lock user reads mes"
    );
    assert!(
        scans.insert_one(doc! {"i": 2}).await.is_err(),
        "the lock user writes mes"
    );

    let reader = Client::with_uri_str(uri(&format!("reader:{READER_PW}@")))
        .await
        .unwrap();
    let refused = Lease::take(
        &reader,
        "dcb",
        "policy/auth",
        ms(1000),
        Holder::this_process(),
    )
    .await;
    match refused {
        Err(e @ LeaseError::Take { .. }) => {
            let text = format!("{e} {e:?}");
            assert!(!text.contains(READER_PW), "{text}");
        }
        other => panic!("a user without readWrite on dcb took a lease: {other:?}"),
    }
    server.stop();
}
