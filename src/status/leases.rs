//! `dcb status`'s view of the leases (`lock: mongodb`): who holds which policy's
//! lease, by the server's clock.

use std::fmt::Write as _;

use chrono::{DateTime, SecondsFormat, Utc};
use serde::Serialize;

use super::ago;
use crate::config::Settings;
use crate::policy::Policy;

/// The leases in `<lock.database>.dcb_locks`, as the server sees them.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Leases {
    pub database: String,
    pub held: Vec<LeaseView>,
    /// Why they could not be read.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct LeaseView {
    pub scope: String,
    pub host: String,
    pub pid: u32,
    pub epoch: i64,
    pub taken_at: DateTime<Utc>,
    pub expires_at: DateTime<Utc>,
    pub expired: bool,
}

/// The leases, when any of `policies` runs under one; `None` otherwise.
pub async fn leases(settings: &Settings, policies: &[Policy]) -> Option<Leases> {
    if !policies.iter().any(|p| settings.uses_lease(p)) {
        return None;
    }
    let database = settings.lock.database.clone();
    let read = async {
        let client = crate::mongo::connect(settings, std::time::Duration::from_secs(5))
            .await
            .map_err(|e| e.to_string())?;
        let held = crate::lease::holders(&client, &database)
            .await
            .map_err(|e| e.to_string());
        crate::mongo::close(client).await;
        held
    };
    Some(match read.await {
        Ok(all) => Leases {
            database,
            held: all
                .into_iter()
                .map(|l| LeaseView {
                    scope: l.scope,
                    host: l.holder.host,
                    pid: l.holder.pid,
                    epoch: l.epoch,
                    taken_at: l.taken_at,
                    expires_at: l.expires_at,
                    expired: l.expired,
                })
                .collect(),
            error: None,
        },
        Err(e) => Leases {
            database,
            held: Vec::new(),
            error: Some(crate::redact::text(&e, &settings.mongodb_uri)),
        },
    })
}

/// Who holds which policy's lease.
pub(super) fn render(l: &Leases, now: DateTime<Utc>) -> String {
    let mut out = format!("\nleases ({}.{}):\n", l.database, crate::lease::COLLECTION);
    if let Some(e) = &l.error {
        let _ = writeln!(out, "  cannot read them: {e}");
        return out;
    }
    if l.held.is_empty() {
        out.push_str("  none taken yet\n");
    }
    for h in &l.held {
        let state = if h.expired {
            format!("free (expired {})", ago(Some(h.expires_at), now))
        } else {
            format!(
                "held until {}",
                h.expires_at.to_rfc3339_opts(SecondsFormat::Secs, true)
            )
        };
        let _ = writeln!(
            out,
            "  {}: {state}; last taken by {} (pid {}), epoch {}",
            h.scope, h.host, h.pid, h.epoch
        );
    }
    out
}
