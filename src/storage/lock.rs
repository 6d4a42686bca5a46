//! Advisory file locks: a policy's run lock, the readers lock that keeps pruning away
//! from archives being read, and the state lock.

use std::fs::{self, File, OpenOptions};
use std::io;
use std::path::{Path, PathBuf};

use super::fs::create_dir;

/// An advisory lock (exclusive unless taken by `lock_shared`), held for as long as the
/// value lives.
#[derive(Debug)]
pub struct Lock {
    _file: File,
}

/// Take the lock at `path` without waiting; `Ok(None)` when another process holds it.
pub fn try_lock(path: &Path) -> io::Result<Option<Lock>> {
    if let Some(dir) = path.parent() {
        create_dir(dir)?;
    }
    let file = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(path)?;
    match file.try_lock() {
        Ok(()) => Ok(Some(Lock { _file: file })),
        Err(fs::TryLockError::WouldBlock) => Ok(None),
        Err(fs::TryLockError::Error(e)) => Err(e),
    }
}

/// The lock file that keeps pruning away from archives being read: `verify` and
/// `restore` hold it shared for as long as they read a policy's archives, pruning holds
/// it exclusively (beside the run lock) and skips a policy that is being read.
pub fn readers_lock(policy_dir: &Path) -> PathBuf {
    policy_dir.join(".dcb.readers.lock")
}

/// Hold the readers lock of every policy folder under `root` (or only `policies`),
/// waiting for a prune in progress to finish. Best effort: a folder this user cannot
/// lock (read-only media, another owner) is read unlocked, as before there were locks.
pub fn lock_readers(root: &Path, policies: &[String]) -> Vec<Lock> {
    let Ok(entries) = fs::read_dir(root) else {
        return Vec::new();
    };
    let dirs = entries
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.is_dir())
        .filter(|p| {
            let name = p.file_name().unwrap_or_default().to_string_lossy();
            !name.starts_with('.')
                && name != "logs"
                && (policies.is_empty() || policies.iter().any(|n| *n == name))
        })
        .collect();
    lock_reading(dirs)
}

/// Hold the readers lock of the policy folders that hold `archives`, those under
/// `root` only: dcb leaves no lock files beside archives elsewhere.
pub fn lock_readers_of(root: &Path, archives: &[PathBuf]) -> Vec<Lock> {
    let Ok(root) = root.canonicalize() else {
        return Vec::new();
    };
    let dirs = archives
        .iter()
        .filter_map(|a| a.parent()?.canonicalize().ok())
        .filter(|dir| dir.parent() == Some(root.as_path()))
        .collect();
    lock_reading(dirs)
}

fn lock_reading(mut dirs: Vec<PathBuf>) -> Vec<Lock> {
    // One order for every reader, so two readers and a prune never deadlock.
    dirs.sort();
    dirs.dedup();
    dirs.iter()
        .filter_map(|dir| {
            let path = readers_lock(dir);
            lock_shared(&path)
                .inspect_err(|e| {
                    tracing::debug!(lock = %path.display(), error = %e, "reading without the readers lock");
                })
                .ok()
        })
        .collect()
}

/// A shared lock on `path`, waiting while someone holds it exclusively.
pub fn lock_shared(path: &Path) -> io::Result<Lock> {
    let file = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(path)
        .or_else(|_| File::open(path))?;
    file.lock_shared()?;
    Ok(Lock { _file: file })
}

/// Take the lock at `path`, waiting for it.
pub fn lock(path: &Path) -> io::Result<Lock> {
    if let Some(dir) = path.parent() {
        create_dir(dir)?;
    }
    let file = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(path)?;
    file.lock()?;
    Ok(Lock { _file: file })
}

#[cfg(test)]
mod tests {
    use super::*;

    // A second taker of a held lock is told so at once.
    #[test]
    fn lock_is_exclusive() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join(".lock");
        let held = try_lock(&p).unwrap();
        assert!(held.is_some());
        assert!(try_lock(&p).unwrap().is_none());
        drop(held);
        assert!(try_lock(&p).unwrap().is_some());
    }
}
