//! Where archives live and how files are written so that a crash never leaves a
//! partial file under a final name: temp file in the final folder, fsync, rename,
//! fsync the folder.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use chrono::{DateTime, Utc};

/// Marks temporary files; anything carrying it is unfinished and safe to delete while
/// the policy's lock is held.
pub const TEMP_MARK: &str = ".dcb-tmp";
pub const ARCHIVE_EXT: &str = ".tar.gz";
/// An archive encrypted with age.
pub const ENCRYPTED_EXT: &str = ".tar.gz.age";
pub const MANIFEST_EXT: &str = ".manifest.json";

/// The folder of one policy's archives.
pub fn policy_dir(root: &Path, policy: &str) -> PathBuf {
    root.join(policy)
}

/// The folder of state, logs and alerts.
pub fn logs_dir(root: &Path) -> PathBuf {
    root.join("logs")
}

/// A time as it appears in file names: sortable, and without `:` (Windows forbids it).
pub fn stamp(t: DateTime<Utc>) -> String {
    t.format("%Y%m%dT%H%M%S%.3fZ").to_string()
}

/// `<stamp>_<db>.<collection>`: names sort by the end of their window.
pub fn archive_stem(to: DateTime<Utc>, db: &str, collection: &str) -> String {
    format!("{}_{db}.{collection}", stamp(to))
}

/// The temporary name of a file being written to `final_path`.
pub fn temp_path(final_path: &Path) -> PathBuf {
    let name = final_path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    final_path.with_file_name(temp_name(&name, std::process::id()))
}

fn temp_name(name: &str, pid: u32) -> String {
    format!(".{name}.{pid}{TEMP_MARK}")
}

/// The longest file name most file systems allow (ext4, XFS, NTFS, APFS), in bytes.
pub const MAX_FILE_NAME: usize = 255;

/// The longest file name dcb writes for a collection's archives, in bytes: the spool
/// of an encrypted archive (`export::archive` names it `<temp>.spool<TEMP_MARK>`),
/// with the widest process id. Names longer than [`MAX_FILE_NAME`] cannot be created.
pub fn longest_file_name(db: &str, collection: &str) -> usize {
    let stem = archive_stem(DateTime::UNIX_EPOCH, db, collection);
    let temp = |ext: &str| temp_name(&format!("{stem}{ext}"), u32::MAX);
    [
        format!("{}.spool{TEMP_MARK}", temp(ENCRYPTED_EXT)),
        temp(ENCRYPTED_EXT),
        temp(ARCHIVE_EXT),
        temp(MANIFEST_EXT),
    ]
    .iter()
    .map(String::len)
    .max()
    .unwrap_or_default()
}

/// Create a new file, owner-only on Unix; fails if it exists.
pub fn create_new(path: &Path) -> io::Result<File> {
    let mut opts = OpenOptions::new();
    opts.write(true).read(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(0o600);
    }
    opts.open(path)
}

/// Open a log file for appending (created owner-only on Unix). Write each record with
/// one `write_all`: with O_APPEND, concurrent writers never interleave lines.
pub fn open_append(path: &Path) -> io::Result<File> {
    let mut opts = OpenOptions::new();
    opts.create(true).append(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(0o600);
    }
    opts.open(path)
}

/// Create a folder (and parents), owner-only on Unix. A new folder is made durable in
/// its parent, so a crash cannot lose the folder of a committed archive.
pub fn create_dir(path: &Path) -> io::Result<()> {
    if path.is_dir() {
        return Ok(());
    }
    let mut b = fs::DirBuilder::new();
    b.recursive(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::DirBuilderExt;
        b.mode(0o700);
    }
    b.create(path)?;
    match path.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => sync_dir(parent),
        _ => Ok(()),
    }
}

/// Make a rename inside `dir` durable.
pub fn sync_dir(dir: &Path) -> io::Result<()> {
    #[cfg(unix)]
    {
        File::open(dir)?.sync_all()?;
    }
    #[cfg(not(unix))]
    {
        let _ = dir;
    }
    Ok(())
}

/// Move a finished temp file to its final name, durably. Refuses to overwrite.
pub fn commit(temp: &Path, final_path: &Path) -> io::Result<()> {
    if final_path.exists() {
        return Err(io::Error::new(
            io::ErrorKind::AlreadyExists,
            format!("{} already exists", final_path.display()),
        ));
    }
    fs::rename(temp, final_path)?;
    sync_dir(final_path.parent().unwrap_or(Path::new(".")))
}

/// Write a whole file atomically: temp, fsync, rename (replacing), fsync folder.
pub fn write_atomic(path: &Path, data: &[u8]) -> io::Result<()> {
    Prepared::write(path, data)?.replace()
}

/// A file whose content is written and fsynced under a temporary name, waiting to
/// take its final name. Dropped without being placed, it is removed.
#[derive(Debug)]
pub struct Prepared {
    temp: TempGuard,
    path: PathBuf,
}

impl Prepared {
    /// Write `data` durably beside `path`, under a temporary name.
    pub fn write(path: &Path, data: &[u8]) -> io::Result<Prepared> {
        let dir = path.parent().unwrap_or(Path::new("."));
        create_dir(dir)?;
        let temp = TempGuard::new(temp_path(path));
        let _ = fs::remove_file(temp.path());
        let mut f = create_new(temp.path())?;
        f.write_all(data)?;
        f.sync_all()?;
        Ok(Prepared {
            temp,
            path: path.to_path_buf(),
        })
    }

    /// Give the file its final name, replacing what was there, durably.
    pub fn replace(self) -> io::Result<()> {
        fs::rename(self.temp.path(), &self.path)?;
        self.temp.disarm();
        sync_dir(self.path.parent().unwrap_or(Path::new(".")))
    }

    /// Give the file its final name; refuses to overwrite.
    pub fn commit(self) -> io::Result<()> {
        commit(self.temp.path(), &self.path)?;
        self.temp.disarm();
        Ok(())
    }
}

/// A temporary file that is removed when this is dropped, unless disarmed once the file
/// has its final name: an error, a panic or a cancelled task never leaves it behind.
#[derive(Debug)]
pub struct TempGuard {
    path: PathBuf,
    armed: bool,
}

impl TempGuard {
    pub fn new(path: PathBuf) -> TempGuard {
        TempGuard { path, armed: true }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The file was renamed: nothing to remove.
    pub fn disarm(mut self) {
        self.armed = false;
    }
}

impl Drop for TempGuard {
    fn drop(&mut self) {
        if self.armed {
            let _ = fs::remove_file(&self.path);
        }
    }
}

/// Delete unfinished temp files left in `dir` by a crash. Call with the lock held.
pub fn remove_leftovers(dir: &Path) -> Vec<PathBuf> {
    let mut removed = Vec::new();
    let Ok(entries) = fs::read_dir(dir) else {
        return removed;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        let is_temp = path
            .file_name()
            .and_then(|n| n.to_str())
            .is_some_and(|n| n.ends_with(TEMP_MARK));
        if is_temp && fs::remove_file(&path).is_ok() {
            removed.push(path);
        }
    }
    removed
}

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

    // Stamps sort as times do and carry no character Windows forbids.
    #[test]
    fn stamps_sort_and_are_portable() {
        let a = DateTime::parse_from_rfc3339("2026-11-25T09:30:00.123Z")
            .unwrap()
            .to_utc();
        let b = DateTime::parse_from_rfc3339("2026-11-25T10:00:00Z")
            .unwrap()
            .to_utc();
        assert_eq!(stamp(a), "20261125T093000.123Z");
        assert!(stamp(a) < stamp(b));
        let stem = archive_stem(a, "dcMes", "api_logs");
        assert!(!stem.contains([':', '<', '>', '"', '/', '\\', '|', '?', '*']));
    }

    // An atomic write replaces the old content and leaves no temp file behind.
    #[test]
    fn atomic_write_replaces() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("state.json");
        write_atomic(&p, b"one").unwrap();
        write_atomic(&p, b"two").unwrap();
        assert_eq!(fs::read(&p).unwrap(), b"two");
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 1);
    }

    // A temp guard removes its file unless disarmed; a prepared file not placed is gone.
    #[test]
    fn temp_files_are_removed_unless_placed() {
        let dir = tempfile::tempdir().unwrap();
        let t = dir.path().join("t");
        fs::write(&t, b"x").unwrap();
        drop(TempGuard::new(t.clone()));
        assert!(!t.exists());
        let kept = dir.path().join("kept");
        fs::write(&kept, b"x").unwrap();
        TempGuard::new(kept.clone()).disarm();
        assert!(kept.exists());

        let m = dir.path().join("m.json");
        drop(Prepared::write(&m, b"{}").unwrap());
        assert!(!m.exists());
        assert_eq!(
            fs::read_dir(dir.path()).unwrap().count(),
            1,
            "only `kept` is left"
        );
        Prepared::write(&m, b"{}").unwrap().commit().unwrap();
        assert_eq!(fs::read(&m).unwrap(), b"{}");
        let again = Prepared::write(&m, b"[]").unwrap().commit();
        assert_eq!(again.unwrap_err().kind(), io::ErrorKind::AlreadyExists);
        assert_eq!(fs::read(&m).unwrap(), b"{}");
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 2);
    }

    // Leftover temp files are removed; finished files are kept.
    #[test]
    fn leftovers_are_removed() {
        let dir = tempfile::tempdir().unwrap();
        let done = dir.path().join("a.tar.gz");
        fs::write(&done, b"x").unwrap();
        fs::write(temp_path(&dir.path().join("b.tar.gz")), b"partial").unwrap();
        assert_eq!(remove_leftovers(dir.path()).len(), 1);
        assert!(done.exists());
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 1);
    }

    // The bound matches the names an export really creates: an encrypted archive's
    // spool is the longest, and at exactly MAX_FILE_NAME bytes it can still be created
    // (with this process's id in place of the widest one).
    #[test]
    fn longest_file_name_matches_the_files_written() {
        let dir = tempfile::tempdir().unwrap();
        let widest = u32::MAX.to_string().len() - std::process::id().to_string().len();
        let room = MAX_FILE_NAME - longest_file_name("dcMes", "") + widest;
        let create = |collection: &str| {
            let stem = archive_stem(DateTime::UNIX_EPOCH, "dcMes", collection);
            let temp = temp_path(&dir.path().join(format!("{stem}{ENCRYPTED_EXT}")));
            let key = age::x25519::Identity::generate().to_public();
            crate::export::archive::ArchiveWriter::create(&temp, "dcMes/c.bson", 6, 0, &[key])
        };
        // Held open: dropping the writer removes its spool.
        let _writer = create(&"c".repeat(room)).unwrap();
        let longest = fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().len())
            .max();
        assert_eq!(longest, Some(MAX_FILE_NAME));
        #[cfg(target_os = "linux")]
        assert!(create(&"c".repeat(room + 1)).is_err());
    }

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
