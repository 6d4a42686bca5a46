//! A policy's run under a lease in MongoDB (`lock: mongodb`, or a policy writing to
//! object storage other instances may share): taken before anything is read, so the
//! watermarks come from what every instance committed; confirmed before each commit;
//! released at the end.

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use mongodb::Client;

use super::RunError;
use crate::config::Settings;
use crate::export::CommitGuard;
use crate::lease::{Holder, Lease, LeaseError, LeaseWatch};
use crate::{redact, storage};

/// The file in a policy's folder that remembers the epoch of this machine's last take.
const EPOCH_FILE: &str = ".dcb.epoch";

/// A lease held for one policy's run.
#[derive(Debug)]
pub struct Held {
    pub lease: Arc<Lease>,
    /// Nobody took the lease since this backup root's last take: its own state is
    /// current, so a shared target that cannot be listed now hides nothing from it.
    pub current: bool,
}

/// The lease's scope for a policy's runs.
pub fn scope(policy: &str) -> String {
    format!("policy/{policy}")
}

/// Take the policy's lease. `Err` is a refusal: `Leased` (another instance runs the
/// policy: not a failure) or `Lease` (the lease could not be taken or read).
pub async fn take(client: &Client, settings: &Settings, policy: &str) -> Result<Held, RunError> {
    let lock = &settings.lock;
    let scope = scope(policy);
    let taken = Lease::take(
        client,
        &lock.database,
        &scope,
        lock.ttl.0,
        Holder::this_process(),
    )
    .await;
    match taken {
        Ok(Some(lease)) => {
            let file = storage::policy_dir(&settings.backup_root, policy).join(EPOCH_FILE);
            let previous = std::fs::read_to_string(&file)
                .ok()
                .and_then(|s| s.trim().parse::<i64>().ok());
            let current = previous == Some(lease.epoch() - 1);
            let written = file
                .parent()
                .map_or(Ok(()), std::fs::create_dir_all)
                .and_then(|()| {
                    storage::fs::write_atomic(&file, lease.epoch().to_string().as_bytes())
                });
            if let Err(e) = written {
                // Only costs the shortcut above next time.
                tracing::warn!(file = %file.display(), error = %e, "cannot record the lease's epoch");
            }
            Ok(Held {
                lease: Arc::new(lease),
                current,
            })
        }
        Ok(None) => {
            let holder = crate::lease::holders(client, &lock.database)
                .await
                .ok()
                .and_then(|all| all.into_iter().find(|l| l.scope == scope))
                .map_or_else(
                    || "another instance".to_string(),
                    |l| {
                        format!(
                            "{} (pid {}, lease epoch {}, expires in {}s unless renewed)",
                            l.holder.host,
                            l.holder.pid,
                            l.epoch,
                            l.remaining().as_secs()
                        )
                    },
                );
            Err(RunError::Leased {
                policy: policy.to_string(),
                holder,
            })
        }
        Err(e) => Err(RunError::Lease(format!(
            "{}; the backup user needs readWrite on the database `{}` (`lock.database`) \
             for `lock: mongodb`",
            redact::text(&e.to_string(), &settings.mongodb_uri),
            lock.database
        ))),
    }
}

/// Let the next taker in; a lease still shared (a task that outlived the run) is
/// left to expire.
pub async fn release(lease: Arc<Lease>) {
    match Arc::try_unwrap(lease) {
        Ok(lease) => {
            let scope = lease.scope().to_string();
            if let Err(e) = lease.release().await {
                tracing::warn!(%scope, error = %e, "cannot release the lease; it expires on its own");
            }
        }
        Err(_) => tracing::warn!("the lease is still in use; it expires on its own"),
    }
}

/// The lease as the export sees it.
#[derive(Debug)]
pub struct Guard(pub Arc<Lease>);

impl CommitGuard for Guard {
    fn epoch(&self) -> u64 {
        u64::try_from(self.0.epoch()).unwrap_or(0)
    }

    fn lost(&self) -> Option<String> {
        self.0.watch().check().err().map(|e| e.to_string())
    }

    fn confirm(&self) -> Pin<Box<dyn Future<Output = Result<(), LeaseError>> + Send + '_>> {
        Box::pin(self.0.confirm())
    }
}

/// Sets `policy` (what the policy's exports watch) once `global` is set or the lease
/// is no longer held; abort it when the run ends.
pub fn relay(
    global: Arc<AtomicBool>,
    policy: Arc<AtomicBool>,
    lease: Option<LeaseWatch>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        loop {
            let lost = lease.as_ref().is_some_and(|w| !w.is_held());
            if lost {
                tracing::error!(
                    scope = lease.as_ref().map(|w| w.scope().to_string()),
                    "the run's lease is lost; its exports stop and commit nothing"
                );
            }
            if lost || global.load(Ordering::Relaxed) {
                policy.store(true, Ordering::SeqCst);
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
}
