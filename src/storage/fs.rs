//! Local files written so that a crash never leaves a partial file under a final name:
//! temp file in the final folder, fsync, rename, fsync the folder. Owner-only on Unix.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use super::names::{TEMP_MARK, temp_path};

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
    _turn: Turn,
}

impl Prepared {
    /// Write `data` durably beside `path`, under a temporary name. Another writer of
    /// `path` in this process waits until this one is placed or dropped: they would
    /// share the temporary name.
    pub fn write(path: &Path, data: &[u8]) -> io::Result<Prepared> {
        let turn = Turn::take(path);
        let dir = path.parent().unwrap_or(Path::new("."));
        create_dir(dir)?;
        let temp = TempGuard::new(temp_path(path));
        let mut f = create_new(temp.path())?;
        f.write_all(data)?;
        f.sync_all()?;
        Ok(Prepared {
            temp,
            path: path.to_path_buf(),
            _turn: turn,
        })
    }

    /// Give the file its final name, replacing what was there, durably.
    pub fn replace(self) -> io::Result<()> {
        rename_over(self.temp.path(), &self.path)?;
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

/// `fs::rename` onto an existing file. On Windows that fails with "Access denied" while
/// any other handle has the file open (a `dcb status` reading state.json, a virus
/// scanner) wherever POSIX rename semantics are not to be had (Wine, FAT, some network
/// shares), so it is retried for up to 2 s: readers hold these small files briefly.
fn rename_over(from: &Path, to: &Path) -> io::Result<()> {
    #[cfg(windows)]
    {
        use std::time::{Duration, Instant};
        let deadline = Instant::now() + Duration::from_secs(2);
        let mut pause = Duration::from_millis(5);
        loop {
            match fs::rename(from, to) {
                // ERROR_ACCESS_DENIED, or ERROR_SHARING_VIOLATION (32).
                Err(e)
                    if (e.kind() == io::ErrorKind::PermissionDenied
                        || e.raw_os_error() == Some(32))
                        && Instant::now() < deadline =>
                {
                    std::thread::sleep(pause);
                    pause = (pause * 2).min(Duration::from_millis(100));
                }
                done => return done,
            }
        }
    }
    #[cfg(not(windows))]
    fs::rename(from, to)
}

/// One writer's turn at a file, within this process; the next waits for it.
#[derive(Debug)]
struct Turn(PathBuf);

static WRITING: std::sync::Mutex<Vec<PathBuf>> = std::sync::Mutex::new(Vec::new());
static DONE: std::sync::Condvar = std::sync::Condvar::new();

impl Turn {
    fn take(path: &Path) -> Turn {
        let mut writing = WRITING.lock().unwrap_or_else(|e| e.into_inner());
        while writing.iter().any(|p| p == path) {
            writing = DONE.wait(writing).unwrap_or_else(|e| e.into_inner());
        }
        writing.push(path.to_path_buf());
        Turn(path.to_path_buf())
    }
}

impl Drop for Turn {
    fn drop(&mut self) {
        let mut writing = WRITING.lock().unwrap_or_else(|e| e.into_inner());
        writing.retain(|p| *p != self.0);
        DONE.notify_all();
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::names::{ENCRYPTED_EXT, MAX_FILE_NAME, archive_stem, longest_file_name};
    use chrono::DateTime;

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

    // On Windows, replacing a file that another handle holds open (`dcb status` or
    // `dcb stop` reading service.json or state.json) waits for the reader to close it
    // instead of failing with "Access denied".
    #[cfg(windows)]
    #[test]
    fn replace_waits_for_a_reader() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("service.json");
        write_atomic(&p, b"one").unwrap();
        let reader = File::open(&p).unwrap();
        let closes = std::thread::spawn(move || {
            std::thread::sleep(std::time::Duration::from_millis(300));
            drop(reader);
        });
        write_atomic(&p, b"two").unwrap();
        closes.join().unwrap();
        assert_eq!(fs::read(&p).unwrap(), b"two");
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 1);
    }

    // Two writers of one file at once each write whole content, and neither fails: their
    // temporary files never collide.
    #[test]
    fn concurrent_atomic_writes_of_one_file() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("service.json");
        let writers: Vec<_> = (0..8u8)
            .map(|i| {
                let p = p.clone();
                std::thread::spawn(move || {
                    for _ in 0..200 {
                        write_atomic(&p, &[b'a' + i; 4096]).unwrap();
                    }
                })
            })
            .collect();
        for w in writers {
            w.join().unwrap();
        }
        let last = fs::read(&p).unwrap();
        assert_eq!(last.len(), 4096);
        assert!(
            last.iter().all(|b| *b == last[0]),
            "one writer's content, whole"
        );
        assert_eq!(
            fs::read_dir(dir.path()).unwrap().count(),
            1,
            "no temp file left"
        );
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
        // The counter may have grown a digit since the probe: allow for it.
        let writer = create(&"c".repeat(room)).or_else(|_| create(&"c".repeat(room - 1)));
        // Held open: dropping the writer removes its spool.
        let _writer = writer.unwrap();
        let longest = fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().len())
            .max()
            .unwrap();
        assert!(
            (MAX_FILE_NAME - 1..=MAX_FILE_NAME).contains(&longest),
            "{longest}"
        );
        #[cfg(target_os = "linux")]
        assert!(create(&"c".repeat(room + 1)).is_err());
    }
}
