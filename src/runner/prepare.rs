//! Before a policy's run: its targets cleaned, checked and repaired.

use std::sync::Arc;

use crate::storage;

/// Before a policy's run, in each of its targets: remove what interrupted writes
/// left, check a shared one can be read (`strict`), and copy to each what another has
/// and it lacks. `Err` refuses the policy's run.
pub(super) fn targets(
    policy: &str,
    members: &[(String, Arc<dyn storage::Target>)],
    strict: bool,
) -> Result<(), String> {
    let prefix = format!("{policy}/");
    for (name, target) in members {
        for leftover in target.remove_leftovers(&prefix) {
            tracing::info!(target_name = %name, file = %leftover, "removed an unfinished file from an earlier run");
        }
        if strict
            && target.local_path(&prefix).is_none()
            && let Err(e) = target.list(&prefix)
        {
            return Err(format!(
                "cannot read target `{name}`, which other instances may write to: {e}; \
                 not running, so that no window is written twice"
            ));
        }
    }
    if members.len() > 1 {
        let set = storage::set::Set::new(members.to_vec());
        let (copied, failed) = set.repair(&prefix);
        for (key, to) in copied {
            tracing::info!(archive = %key, target_name = %to, "copied an archive a target was missing");
        }
        for m in failed {
            tracing::warn!(target_name = %m.target, error = %m.error, "a target still misses archives of policy `{policy}`");
        }
    }
    Ok(())
}
