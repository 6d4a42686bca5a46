//! `dcb stop`: ask the running service to stop gracefully and wait for it.

use std::time::{Duration, Instant};

use super::{Exit, settings};
use crate::cli::{Cli, StopArgs};
use crate::status::{read_service, stop_request_path};

pub fn run(cli: &Cli, args: &StopArgs) -> Exit {
    let settings = match settings(cli) {
        Ok(s) => s,
        Err(e) => return e,
    };
    let root = &settings.backup_root;
    match read_service(root) {
        Some(s) if s.is_alive(chrono::Utc::now()) => {
            if let Err(e) = crate::storage::write_atomic(&stop_request_path(root), b"stop\n") {
                eprintln!("error: cannot ask the service to stop: {e}");
                return Exit::Failed;
            }
            eprintln!("asked the service (pid {}) to stop; waiting…", s.pid);
            let deadline = Instant::now() + Duration::from_secs(args.wait);
            while Instant::now() < deadline {
                if !read_service(root).is_some_and(|s| s.is_alive(chrono::Utc::now())) {
                    eprintln!("stopped");
                    return Exit::Ok;
                }
                std::thread::sleep(Duration::from_millis(200));
            }
            eprintln!("error: the service did not stop within {} s", args.wait);
            Exit::Failed
        }
        _ => {
            eprintln!("the service is not running");
            Exit::Ok
        }
    }
}
