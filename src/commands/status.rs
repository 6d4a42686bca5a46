//! `dcb status`: the service, the statistics and each collection's progress.

use super::{Exit, settings};
use crate::cli::{Cli, StatusArgs};
use crate::policy::load::load_dir;

pub fn run(cli: &Cli, args: &StatusArgs) -> Exit {
    let settings = match settings(cli) {
        Ok(s) => s,
        Err(e) => return e,
    };
    // Status must work even while a policy file is broken: show the valid ones.
    let set = load_dir(&settings.policies_dir, &settings.policy_defaults());
    if set.has_errors() {
        eprintln!("warning: some policy files are invalid; run `dcb validate`");
    }
    let mut status = crate::status::gather(&settings, &set.policies);
    status.leases = super::runtime().block_on(crate::status::leases(&settings, &set.policies));
    if args.json {
        outln!(
            "{}",
            serde_json::to_string_pretty(&status).unwrap_or_default()
        );
    } else {
        out!(
            "{}",
            crate::status::render_human(&status, chrono::Utc::now())
        );
    }
    Exit::Ok
}
