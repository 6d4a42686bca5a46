//! `dcb status`'s view of the leases: every scope's holder, epoch and expiry, judged
//! by the server's clock.

use std::time::Duration;

use chrono::{DateTime, Utc};
use futures_util::TryStreamExt;
use mongodb::Client;
use mongodb::bson::{Bson, Document, doc};

use super::{Holder, LeaseError, collection, integer};

/// One scope's lease as `dcb status` shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeaseInfo {
    pub scope: String,
    pub holder: Holder,
    pub epoch: i64,
    /// Server times, all of them.
    pub taken_at: DateTime<Utc>,
    pub expires_at: DateTime<Utc>,
    pub server_now: DateTime<Utc>,
    /// By the server's clock: the scope is free for the next taker.
    pub expired: bool,
}

impl LeaseInfo {
    /// Time left by the server's clock; zero once expired.
    pub fn remaining(&self) -> Duration {
        (self.expires_at - self.server_now)
            .to_std()
            .unwrap_or_default()
    }
}

/// Every lease document in `database`, live or expired, by scope, with the server's
/// time and its verdict (for `dcb status`).
pub async fn holders(client: &Client, database: &str) -> Result<Vec<LeaseInfo>, LeaseError> {
    let read_error = |source| LeaseError::Read {
        database: database.to_string(),
        error: Box::new(source),
    };
    let pipeline = vec![
        doc! {"$sort": {"_id": 1}},
        doc! {"$addFields": {
            "serverNow": "$$NOW",
            "expired": {"$lte": [{"$toLong": "$expiresAt"}, {"$toLong": "$$NOW"}]},
        }},
    ];
    let docs: Vec<Document> = collection(client, database)
        .aggregate(pipeline)
        .await
        .map_err(read_error)?
        .try_collect()
        .await
        .map_err(read_error)?;
    docs.iter()
        .map(|d| info(d, database))
        .collect::<Result<Vec<_>, _>>()
}

fn info(d: &Document, database: &str) -> Result<LeaseInfo, LeaseError> {
    let scope = match d.get("_id") {
        Some(Bson::String(s)) => s.clone(),
        Some(other) => other.to_string(),
        None => String::new(),
    };
    let malformed = |field| LeaseError::Malformed {
        database: database.to_string(),
        scope: scope.clone(),
        field,
    };
    let date = |field: &'static str| {
        d.get_datetime(field)
            .map(|t| t.to_chrono())
            .map_err(|_| malformed(field))
    };
    Ok(LeaseInfo {
        holder: d
            .get_document("holder")
            .ok()
            .and_then(Holder::from_document)
            .ok_or_else(|| malformed("holder"))?,
        epoch: integer(d, "epoch").ok_or_else(|| malformed("epoch"))?,
        taken_at: date("takenAt")?,
        expires_at: date("expiresAt")?,
        server_now: date("serverNow")?,
        expired: d.get_bool("expired").map_err(|_| malformed("expired"))?,
        scope: scope.clone(),
    })
}
