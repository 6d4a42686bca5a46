//! A lease lock in MongoDB: one holder per scope at a time, timed by the server's clock.
//!
//! # The document
//!
//! Leases live in a small `dcb_locks` collection ([`COLLECTION`]) of a database the
//! caller names, one document per scope:
//!
//! ```text
//! { _id: <scope>, holder: {id, host, pid, started}, epoch: <Int64>,
//!   takenAt: <Date>, renewedAt: <Date>, expiresAt: <Date>, ttlMs: <Int64> }
//! ```
//!
//! Every time in it is the server's `$$NOW`; dcb never compares its own clock with
//! one (`holder.started` is the holder's clock, shown and never compared). A holder's
//! clock that is off by an hour changes nothing.
//!
//! # The commands (MongoDB 4.2 or later: pipeline updates and `$$NOW`)
//!
//! - **take**: one `findAndModify` with `upsert: true, new: true`, query
//!   `{_id: scope, $or: [<expired>, {"holder.id": me}]}`, update pipeline
//!   `[{$set: {holder: {$literal: …}, epoch: {$add: [{$ifNull: ["$epoch", 0]}, 1]},
//!   takenAt: "$$NOW", renewedAt: "$$NOW", expiresAt: {$add: ["$$NOW", ttlMs]},
//!   ttlMs}}]`. A live lease of someone else matches nothing, so the upsert inserts a
//!   second `_id: scope` and fails with E11000: the scope is held, [`Lease::take`]
//!   answers `None`. The reply is the document written, with the epoch it got.
//! - **renew** (every third of the time-to-live, and [`Lease::confirm`]): `update`
//!   with query `{_id, "holder.id": me, epoch, <live>}` and pipeline
//!   `[{$set: {renewedAt: "$$NOW", expiresAt: {$add: ["$$NOW", ttlMs]}}}]`. Matching
//!   nothing means the lease is lost: taken over, or it expired first (an expired
//!   lease is never revived: it must be taken again, with a new epoch).
//! - **release**: `update` with query `{_id, "holder.id": me, epoch}` and pipeline
//!   `[{$set: {expiresAt: "$$NOW", releasedAt: "$$NOW"}}]`. The document stays: were
//!   it deleted, the next take would start the epoch at 1 again.
//! - **holders** ([`holders`]): `aggregate` with `$addFields: {serverNow: "$$NOW",
//!   expired: <expired>}`.
//!
//! `<expired>` is `{$expr: {$lte: [{$toLong: "$expiresAt"}, {$toLong: "$$NOW"}]}}`.
//! MongoDB compares the two dates directly as well, but the test server (SecantusDB
//! 0.7) does not: there a stored date compares *equal* to `$$NOW` whatever their
//! values (and `$subtract` of the two fails), so every lease would look expired.
//! Milliseconds since the epoch compare right on both. A document without
//! `expiresAt` counts as expired (null sorts below numbers).
//!
//! Never put a TTL index on the collection: deleting an expired lease resets its
//! epoch. Writes use majority write concern and go to the primary, whatever the
//! client's read preference, so a failover cannot roll a lease back.
//!
//! # What a holder must do
//!
//! A run that loses its lease stops and commits nothing. Before each commit (a
//! manifest written, a watermark moved, a prune applied) the holder calls
//! [`Lease::confirm`], a renewal that reaches the server, and commits only if it
//! answers `Ok`; between commits it may watch [`Lease::is_held`] or `select!` on
//! [`Lease::lost`] to stop early. The commit records [`Lease::epoch`] (in the
//! manifest), so a writer that was paused longer than the time-to-live between its
//! check and its write is detectable afterwards: its manifest carries an epoch lower
//! than one already committed for the same scope.
//!
//! # Guarantees and limits
//!
//! - At most one live lease per scope, by the server's clock: a take is one atomic
//!   write of one document, and `_id` is unique.
//! - Epochs grow by one per take, never reset (the document is never deleted).
//! - This process counts a lease held until the last confirmed renewal's *sending*
//!   time plus the time-to-live, on its monotonic clock. The server's expiry is later
//!   by the command's transit time, so the local view errs early, as long as both
//!   clocks tick at the same rate. Wall clocks are never compared.
//! - A monotonic clock stops while the machine sleeps (suspend, a paused VM): after
//!   a resume [`Lease::is_held`] may still say yes for a lease the server already let
//!   go. [`Lease::confirm`] asks the server, which is why commits use it.
//! - A lease cannot stop a write that is already under way: a writer paused longer
//!   than what [`Lease::confirm`] left it ([`Lease::valid_for`]) between confirming
//!   and writing commits late, perhaps after another holder took over. The epoch in
//!   what it wrote is then lower than the new holder's, which is how it is found.
//! - A dead holder (killed, dropped, cut off) blocks its scope for at most one
//!   time-to-live after its last renewal.
//!
//! # Privilege
//!
//! `readWrite` on the lock database only (`find`, `insert`, `update` for
//! `findAndModify` with upsert, `aggregate` for [`holders`]); nothing on the
//! backed-up database.

mod renew;
mod status;

use std::time::Duration;

use chrono::{DateTime, Utc};
use mongodb::bson::{Bson, Document, doc, oid::ObjectId};
use mongodb::error::{ErrorKind, WriteFailure};
use mongodb::options::{
    CollectionOptions, ReadConcern, ReadPreference, ReturnDocument, SelectionCriteria, WriteConcern,
};
use mongodb::{Client, Collection};

use crate::error::Invalid;

pub use renew::{LeaseWatch, LostReason};
pub use status::{LeaseInfo, holders};

/// The collection holding one lease document per scope.
pub const COLLECTION: &str = "dcb_locks";

/// Shortest time-to-live: renewals every third of it must still fit between round
/// trips.
pub const MIN_TTL: Duration = Duration::from_millis(500);
/// Longest time-to-live: a dead holder blocks its scope that long.
pub const MAX_TTL: Duration = Duration::from_secs(24 * 3600);

/// MongoDB's duplicate-key error: a live lease of someone else.
const DUPLICATE_KEY: i32 = 11000;

/// Who holds a lease: one process's one run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Holder {
    /// Unique per run: `host:pid:<ObjectId>`. Renewals and the release match on it.
    pub id: String,
    pub host: String,
    pub pid: u32,
    /// When the holder started, by its own clock: shown, never compared.
    pub started: DateTime<Utc>,
}

impl Holder {
    /// A new holder for this process: each call has its own `id`.
    pub fn this_process() -> Holder {
        let host = crate::host::hostname();
        let pid = std::process::id();
        Holder {
            id: format!("{host}:{pid}:{}", ObjectId::new().to_hex()),
            host,
            pid,
            // Whole milliseconds, as BSON stores it: the holder read back is equal.
            started: mongodb::bson::DateTime::now().to_chrono(),
        }
    }

    fn to_document(&self) -> Document {
        doc! {
            "id": &self.id,
            "host": &self.host,
            "pid": i64::from(self.pid),
            "started": mongodb::bson::DateTime::from_chrono(self.started),
        }
    }

    fn from_document(d: &Document) -> Option<Holder> {
        Some(Holder {
            id: d.get_str("id").ok()?.to_string(),
            host: d.get_str("host").unwrap_or_default().to_string(),
            pid: integer(d, "pid").and_then(|p| u32::try_from(p).ok())?,
            started: d.get_datetime("started").ok()?.to_chrono(),
        })
    }
}

/// Why a lease operation failed. Driver errors are kept as given (they hold no
/// password); whoever displays them scrubs the text as for every error.
#[derive(Debug, Clone, thiserror::Error)]
pub enum LeaseError {
    /// A scope or time-to-live that breaks a rule.
    #[error(transparent)]
    Invalid(#[from] Invalid),
    #[error("cannot take the lease `{scope}` in {database}.{COLLECTION}: {error}")]
    Take {
        database: String,
        scope: String,
        error: Box<mongodb::error::Error>,
    },
    #[error("cannot renew the lease `{scope}` in {database}.{COLLECTION}: {error}")]
    Renew {
        database: String,
        scope: String,
        error: Box<mongodb::error::Error>,
    },
    #[error("cannot release the lease `{scope}` in {database}.{COLLECTION}: {error}")]
    Release {
        database: String,
        scope: String,
        error: Box<mongodb::error::Error>,
    },
    #[error("cannot read the leases in {database}.{COLLECTION}: {error}")]
    Read {
        database: String,
        error: Box<mongodb::error::Error>,
    },
    /// A document in the collection that is not a lease as dcb writes them.
    #[error(
        "the lease `{scope}` in {database}.{COLLECTION} has no valid `{field}`; remove the document if nothing holds it"
    )]
    Malformed {
        database: String,
        scope: String,
        field: &'static str,
    },
    /// The lease is no longer this holder's: nothing may be committed under it.
    #[error("the lease `{scope}` (epoch {epoch}) is lost: {reason}")]
    Lost {
        scope: String,
        epoch: i64,
        reason: LostReason,
    },
}

/// What [`Lease::release`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Released {
    /// The lease was this holder's and now lets the next taker in.
    Released,
    /// The lease was no longer this holder's (taken over, or expired and taken): the
    /// document was left as it was.
    NotHeld,
}

/// A lease this process holds; renewed in the background until released or dropped.
/// Dropping it without [`Lease::release`] stops the renewals: the lease then expires
/// on the server after its time-to-live.
#[derive(Debug)]
pub struct Lease {
    coll: Collection<Document>,
    database: String,
    holder: Holder,
    ttl: Duration,
    expires_at: DateTime<Utc>,
    watch: LeaseWatch,
    renewal: tokio::task::JoinHandle<()>,
}

impl Lease {
    /// Take the lease on `scope` for `ttl` (measured by the server's clock): `None`
    /// when another holder's lease is live. One round trip; each take, even a
    /// holder's own again, gets a higher epoch than any before it. Starts the
    /// renewals, so it must run inside a tokio runtime.
    pub async fn take(
        client: &Client,
        database: &str,
        scope: &str,
        ttl: Duration,
        holder: Holder,
    ) -> Result<Option<Lease>, LeaseError> {
        check_scope(scope)?;
        let ttl_ms = ttl_millis(ttl)?;
        let coll = collection(client, database);
        let filter = doc! {
            "_id": scope,
            "$or": [expired(), {"holder.id": &holder.id}],
        };
        let update = vec![doc! {"$set": {
            "holder": {"$literal": holder.to_document()},
            "epoch": {"$add": [{"$ifNull": ["$epoch", Bson::Int64(0)]}, Bson::Int64(1)]},
            "takenAt": "$$NOW",
            "renewedAt": "$$NOW",
            "expiresAt": {"$add": ["$$NOW", ttl_ms]},
            "ttlMs": ttl_ms,
        }}];
        // The server's expiry is later than `sent + ttl` by however long the command
        // took to arrive: the local deadline errs on the safe side.
        let sent = tokio::time::Instant::now();
        let written = coll
            .find_one_and_update(filter, update)
            .upsert(true)
            .return_document(ReturnDocument::After)
            .await;
        let written = match written {
            Ok(Some(d)) => d,
            Err(e) if is_duplicate_key(&e) => return Ok(None),
            // `upsert` with `new` always returns a document; none means it was removed
            // between the write and the reply: not ours.
            Ok(None) => return Ok(None),
            Err(source) => {
                return Err(LeaseError::Take {
                    database: database.to_string(),
                    scope: scope.to_string(),
                    error: Box::new(source),
                });
            }
        };
        let malformed = |field| LeaseError::Malformed {
            database: database.to_string(),
            scope: scope.to_string(),
            field,
        };
        let epoch = integer(&written, "epoch").ok_or_else(|| malformed("epoch"))?;
        let expires_at = written
            .get_datetime("expiresAt")
            .map_err(|_| malformed("expiresAt"))?
            .to_chrono();
        let watch = LeaseWatch::new(scope, epoch, sent + ttl);
        let renewal = tokio::spawn(renew::run(
            renew::Target {
                coll: coll.clone(),
                scope: scope.to_string(),
                holder_id: holder.id.clone(),
                epoch,
                ttl,
            },
            watch.clone(),
        ));
        Ok(Some(Lease {
            coll,
            database: database.to_string(),
            holder,
            ttl,
            expires_at,
            watch,
            renewal,
        }))
    }

    pub fn scope(&self) -> &str {
        self.watch.scope()
    }

    /// The epoch of this take: record it with whatever is committed under the lease.
    pub fn epoch(&self) -> i64 {
        self.watch.epoch()
    }

    pub fn holder(&self) -> &Holder {
        &self.holder
    }

    pub fn ttl(&self) -> Duration {
        self.ttl
    }

    /// The expiry the server wrote when the lease was taken (server time).
    pub fn taken_until(&self) -> DateTime<Utc> {
        self.expires_at
    }

    /// Still held as far as this process knows: not lost, and the last confirmed
    /// renewal is younger than the time-to-live. Cheap; no round trip.
    pub fn is_held(&self) -> bool {
        self.watch.is_held()
    }

    /// How long the lease is certainly still held without another renewal (zero if
    /// not held).
    pub fn valid_for(&self) -> Duration {
        self.watch.valid_for()
    }

    /// Resolves when the lease is lost, with why: `select!` on it to stop a run.
    pub async fn lost(&self) -> LostReason {
        self.watch.lost().await
    }

    /// A handle to the lease's state for other tasks (clone it freely).
    pub fn watch(&self) -> LeaseWatch {
        self.watch.clone()
    }

    /// Renew now, with a round trip: `Ok` means the server still had this lease and
    /// has extended it by the time-to-live. Call it right before each commit.
    pub async fn confirm(&self) -> Result<(), LeaseError> {
        self.watch.check()?;
        let sent = tokio::time::Instant::now();
        let target = self.target();
        match renew::renew_once(&target).await {
            Ok(true) => {
                self.watch.extend(sent + self.ttl);
                // A renewal in flight may have seen the lease lost meanwhile.
                self.watch.check()
            }
            Ok(false) => {
                let reason = renew::why_lost(&target).await;
                self.watch.mark_lost(reason);
                self.watch.check()
            }
            Err(source) => Err(LeaseError::Renew {
                database: self.database.clone(),
                scope: self.scope().to_string(),
                error: Box::new(source),
            }),
        }
    }

    /// Let the next taker in at once: expires this holder's own lease (its holder and
    /// epoch must still be in the document) and stops the renewals.
    pub async fn release(self) -> Result<Released, LeaseError> {
        self.renewal.abort();
        self.watch.mark_lost(LostReason::Released);
        let filter = doc! {
            "_id": self.scope(),
            "holder.id": &self.holder.id,
            "epoch": self.epoch(),
        };
        let update = vec![doc! {"$set": {"expiresAt": "$$NOW", "releasedAt": "$$NOW"}}];
        match self.coll.update_one(filter, update).await {
            Ok(r) if r.matched_count == 1 => Ok(Released::Released),
            Ok(_) => Ok(Released::NotHeld),
            Err(source) => Err(LeaseError::Release {
                database: self.database.clone(),
                scope: self.scope().to_string(),
                error: Box::new(source),
            }),
        }
    }

    fn target(&self) -> renew::Target {
        renew::Target {
            coll: self.coll.clone(),
            scope: self.scope().to_string(),
            holder_id: self.holder.id.clone(),
            epoch: self.epoch(),
            ttl: self.ttl,
        }
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        // No round trip here (drop cannot wait): the renewals stop and the lease
        // expires on the server after its time-to-live.
        self.renewal.abort();
        self.watch.mark_lost(LostReason::Dropped);
    }
}

/// `dcb_locks` with the concerns a lock needs, whatever the client's defaults: writes
/// acknowledged by a majority (a failover must not roll a take back), reads of the
/// primary's majority-committed state.
fn collection(client: &Client, database: &str) -> Collection<Document> {
    let options = CollectionOptions::builder()
        .write_concern(WriteConcern::majority())
        .read_concern(ReadConcern::majority())
        .selection_criteria(SelectionCriteria::ReadPreference(ReadPreference::Primary))
        .build();
    client
        .database(database)
        .collection_with_options(COLLECTION, options)
}

/// The query of a lease the server's clock says is over.
fn expired() -> Document {
    doc! {"$expr": {"$lte": [{"$toLong": "$expiresAt"}, {"$toLong": "$$NOW"}]}}
}

/// The query of a lease the server's clock says is still running.
fn live() -> Document {
    doc! {"$expr": {"$gt": [{"$toLong": "$expiresAt"}, {"$toLong": "$$NOW"}]}}
}

fn is_duplicate_key(e: &mongodb::error::Error) -> bool {
    match e.kind.as_ref() {
        ErrorKind::Command(c) => c.code == DUPLICATE_KEY,
        ErrorKind::Write(WriteFailure::WriteError(w)) => w.code == DUPLICATE_KEY,
        _ => false,
    }
}

/// An integer field however it was stored (a hand-edited document may hold an Int32
/// or a whole double).
fn integer(d: &Document, field: &str) -> Option<i64> {
    match d.get(field)? {
        Bson::Int64(n) => Some(*n),
        Bson::Int32(n) => Some(i64::from(*n)),
        Bson::Double(f) if f.fract() == 0.0 && f.abs() < 9.0e15 => Some(*f as i64),
        _ => None,
    }
}

fn check_scope(scope: &str) -> Result<(), Invalid> {
    if scope.is_empty() || scope.len() > 512 || scope.chars().any(char::is_control) {
        return Err(Invalid::new(format!(
            "lease scope {scope:?}: 1 to 512 bytes without control characters"
        )));
    }
    Ok(())
}

fn ttl_millis(ttl: Duration) -> Result<i64, Invalid> {
    if !(MIN_TTL..=MAX_TTL).contains(&ttl) {
        return Err(Invalid::new(format!(
            "lease time-to-live {} ms: from {} ms to {} h",
            ttl.as_millis(),
            MIN_TTL.as_millis(),
            MAX_TTL.as_secs() / 3600
        )));
    }
    // In range, so it fits.
    Ok(ttl.as_millis() as i64)
}

#[cfg(test)]
mod tests {
    use super::*;

    // A time-to-live outside its range and an empty scope are refused before any
    // round trip, as `Invalid`.
    #[test]
    fn bounds() {
        assert!(ttl_millis(Duration::from_millis(499)).is_err());
        assert_eq!(ttl_millis(MIN_TTL), Ok(500));
        assert!(ttl_millis(MAX_TTL + Duration::from_millis(1)).is_err());
        assert!(check_scope("").is_err());
        assert!(check_scope("a\nb").is_err());
        assert!(check_scope("policy/demo").is_ok());
    }

    // Holder ids are unique per call, and a holder survives the trip through BSON.
    #[test]
    fn holder_round_trip() {
        let a = Holder::this_process();
        let b = Holder::this_process();
        assert_ne!(a.id, b.id);
        let back = Holder::from_document(&a.to_document()).unwrap();
        assert_eq!(back, a);
    }
}
