//! Keeping a lease: the background renewals, and the state every watcher of the lease
//! reads (held until a local deadline, or lost and why).

use std::sync::Arc;
use std::time::Duration;

use mongodb::Collection;
use mongodb::bson::{Document, doc};
use tokio::sync::watch;
use tokio::time::Instant;

use super::LeaseError;

/// Why a lease stopped being this holder's.
#[derive(Debug, Clone, thiserror::Error)]
pub enum LostReason {
    /// Another holder has it now (`epoch` is theirs).
    #[error("taken over by {holder} (epoch {epoch})")]
    TakenOver { holder: String, epoch: i64 },
    /// It expired on the server before a renewal reached it (nobody has taken it
    /// since).
    #[error("it expired before a renewal reached the server")]
    Expired,
    /// Its document was deleted from the collection.
    #[error("its document was removed")]
    Removed,
    /// No renewal was confirmed for a whole time-to-live: the server may have let it
    /// expire and given it to another holder.
    #[error("no renewal was confirmed within its time-to-live{}", last_error.as_ref().map(|e| format!(" (last error: {e})")).unwrap_or_default())]
    Unconfirmed {
        last_error: Option<Box<mongodb::error::Error>>,
    },
    #[error("released")]
    Released,
    /// The [`super::Lease`] was dropped without a release; it expires on its own.
    #[error("dropped without release")]
    Dropped,
}

#[derive(Debug, Clone)]
struct State {
    /// Monotonic time until which the lease is certainly held: when the last
    /// confirmed renewal was sent, plus the time-to-live. The server's own expiry is
    /// later by however long the command took to arrive.
    deadline: Instant,
    lost: Option<LostReason>,
}

/// A lease's state as any task can watch it: cheap to clone, no round trips.
#[derive(Debug, Clone)]
pub struct LeaseWatch {
    scope: Arc<str>,
    epoch: i64,
    state: Arc<watch::Sender<State>>,
}

impl LeaseWatch {
    pub(super) fn new(scope: &str, epoch: i64, deadline: Instant) -> LeaseWatch {
        let (tx, _) = watch::channel(State {
            deadline,
            lost: None,
        });
        LeaseWatch {
            scope: scope.into(),
            epoch,
            state: Arc::new(tx),
        }
    }

    pub fn scope(&self) -> &str {
        &self.scope
    }

    pub fn epoch(&self) -> i64 {
        self.epoch
    }

    /// Not lost, and the last confirmed renewal is younger than the time-to-live.
    /// The deadline is checked here too, so a starved renewal task cannot leave a
    /// stale `true`.
    pub fn is_held(&self) -> bool {
        let s = self.state.borrow();
        s.lost.is_none() && Instant::now() < s.deadline
    }

    /// How long the lease is certainly held without another renewal; zero if not.
    pub fn valid_for(&self) -> Duration {
        let s = self.state.borrow();
        match s.lost {
            Some(_) => Duration::ZERO,
            None => s.deadline.saturating_duration_since(Instant::now()),
        }
    }

    /// `Ok` while held; else [`LeaseError::Lost`] with the reason.
    pub fn check(&self) -> Result<(), LeaseError> {
        let s = self.state.borrow();
        let reason = match &s.lost {
            Some(reason) => reason.clone(),
            None if Instant::now() >= s.deadline => LostReason::Unconfirmed { last_error: None },
            None => return Ok(()),
        };
        Err(LeaseError::Lost {
            scope: self.scope.to_string(),
            epoch: self.epoch,
            reason,
        })
    }

    /// Resolves once the lease is lost (or its deadline passes unrenewed).
    pub async fn lost(&self) -> LostReason {
        let mut rx = self.state.subscribe();
        loop {
            let deadline = {
                let s = rx.borrow_and_update();
                if let Some(reason) = &s.lost {
                    return reason.clone();
                }
                s.deadline
            };
            tokio::select! {
                // The sender lives as long as this watch, so `changed` cannot fail.
                _ = rx.changed() => {}
                _ = tokio::time::sleep_until(deadline) => {
                    // A renewal may have moved the deadline just now.
                    let s = rx.borrow_and_update();
                    if s.lost.is_none() && Instant::now() >= s.deadline {
                        return LostReason::Unconfirmed { last_error: None };
                    }
                }
            }
        }
    }

    /// A renewal sent at `deadline - ttl` was confirmed. Never revives a lost lease
    /// nor moves the deadline back (a slow renewal may answer after a newer one).
    pub(super) fn extend(&self, deadline: Instant) {
        self.state.send_if_modified(|s| {
            if s.lost.is_some() || deadline <= s.deadline {
                return false;
            }
            s.deadline = deadline;
            true
        });
    }

    /// The first reason sticks.
    pub(super) fn mark_lost(&self, reason: LostReason) {
        self.state.send_if_modified(|s| {
            if s.lost.is_some() {
                return false;
            }
            s.lost = Some(reason);
            true
        });
    }
}

/// What a renewal matches on.
pub(super) struct Target {
    pub coll: Collection<Document>,
    pub scope: String,
    pub holder_id: String,
    pub epoch: i64,
    pub ttl: Duration,
}

/// Renew every third of the time-to-live until lost. A failed renewal is retried
/// every tenth of it; once a whole time-to-live has passed since the last confirmed
/// one, the lease counts as lost, whether or not the server still has it.
pub(super) async fn run(target: Target, watch: LeaseWatch) {
    let period = target.ttl / 3;
    let retry = target.ttl / 10;
    let mut next = watch.state.borrow().deadline - target.ttl + period;
    let mut last_error = None;
    loop {
        tokio::time::sleep_until(next).await;
        let deadline = {
            let s = watch.state.borrow();
            if s.lost.is_some() {
                return;
            }
            s.deadline
        };
        let sent = Instant::now();
        match tokio::time::timeout_at(deadline, renew_once(&target)).await {
            Ok(Ok(true)) => {
                watch.extend(sent + target.ttl);
                last_error = None;
                next = sent + period;
            }
            Ok(Ok(false)) => {
                watch.mark_lost(why_lost(&target).await);
                return;
            }
            Ok(Err(e)) => {
                tracing::warn!(scope = %target.scope, error = %e, "lease renewal failed; retrying");
                last_error = Some(Box::new(e));
                next = Instant::now() + retry;
                if next >= deadline {
                    // Wake at the deadline to declare it lost, not past it.
                    next = deadline;
                }
            }
            // The deadline passed with the renewal (or the server) still silent.
            Err(_) => {
                watch.mark_lost(LostReason::Unconfirmed { last_error });
                return;
            }
        }
    }
}

/// One renewal: `true` if the server still had this holder's live lease and extended
/// it; `false` if it matched nothing (taken over, expired or removed).
pub(super) async fn renew_once(t: &Target) -> Result<bool, mongodb::error::Error> {
    let mut filter = doc! {
        "_id": &t.scope,
        "holder.id": &t.holder_id,
        "epoch": t.epoch,
    };
    filter.extend(super::live());
    let ttl_ms = t.ttl.as_millis() as i64;
    let update = vec![doc! {"$set": {
        "renewedAt": "$$NOW",
        "expiresAt": {"$add": ["$$NOW", ttl_ms]},
    }}];
    let r = t.coll.update_one(filter, update).await?;
    Ok(r.matched_count == 1)
}

/// After a renewal matched nothing: who has the scope now, for the log and the
/// run's error. A failed look-up still means lost.
pub(super) async fn why_lost(t: &Target) -> LostReason {
    let found = tokio::time::timeout(t.ttl, t.coll.find_one(doc! {"_id": &t.scope})).await;
    match found {
        Ok(Ok(None)) => LostReason::Removed,
        Ok(Ok(Some(d))) => {
            let epoch = super::integer(&d, "epoch").unwrap_or_default();
            let holder = d
                .get_document("holder")
                .ok()
                .and_then(|h| h.get_str("id").ok())
                .unwrap_or("an unknown holder")
                .to_string();
            if epoch == t.epoch && holder == t.holder_id {
                LostReason::Expired
            } else {
                LostReason::TakenOver { holder, epoch }
            }
        }
        Ok(Err(e)) => LostReason::Unconfirmed {
            last_error: Some(Box::new(e)),
        },
        Err(_) => LostReason::Unconfirmed { last_error: None },
    }
}
