//! A folder as a [`Target`]: `<root>/<policy>/<file>`. Objects are committed by a
//! rename in their final folder, durably, and never overwritten.

use std::fs::{self, File};
use std::io::{self, Read};
use std::path::{Component, Path, PathBuf};

use super::fs::{Prepared, TempGuard, commit, create_dir, create_new, sync_dir, write_atomic};
use super::names::{TEMP_MARK, temp_path};
use super::{Object, StorageError, Target};

/// Archives kept in a folder on this machine.
#[derive(Debug, Clone)]
pub struct Local {
    root: PathBuf,
}

impl Local {
    pub fn new(root: impl Into<PathBuf>) -> Local {
        Local { root: root.into() }
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The path of `key`, which must stay inside the folder.
    fn path(&self, key: &str) -> Result<PathBuf, StorageError> {
        let rel = Path::new(key);
        let plain = !key.is_empty() && rel.components().all(|c| matches!(c, Component::Normal(_)));
        if !plain {
            return Err(StorageError::new(
                "refusing",
                key,
                io::Error::new(io::ErrorKind::InvalidInput, "a key outside the folder"),
            ));
        }
        Ok(self.root.join(rel))
    }
}

impl Target for Local {
    fn describe(&self) -> String {
        self.root.display().to_string()
    }

    fn stage(&self, key: &str) -> Result<PathBuf, StorageError> {
        let path = self.path(key)?;
        let dir = parent(&path);
        create_dir(dir)
            .map_err(|e| StorageError::new("cannot write to", dir.display().to_string(), e))?;
        Ok(temp_path(&path))
    }

    fn commit(
        &self,
        file: &Path,
        key: &str,
        manifest_key: &str,
        manifest: &[u8],
    ) -> Result<(), StorageError> {
        let archive = self.path(key)?;
        let manifest_path = self.path(manifest_key)?;
        let shown = |p: &Path| p.display().to_string();
        // The manifest is written (and fsynced) before the archive takes its final
        // name, so a full disk fails here with nothing placed. Then the archive is
        // renamed, then the manifest: a crash between the two renames leaves an
        // archive whose manifest the next run recovers from the copy inside it.
        let prepared = Prepared::write(&manifest_path, manifest)
            .map_err(|e| StorageError::new("cannot write", shown(&manifest_path), e))?;
        if parent(file) == parent(&archive) {
            commit(file, &archive)
                .map_err(|e| StorageError::new("cannot write", shown(&archive), e))?;
        } else {
            copy_in(file, &archive)
                .map_err(|e| StorageError::new("cannot write", shown(&archive), e))?;
        }
        if let Err(e) = prepared.commit() {
            // Without its manifest the archive is invisible to list, restore and
            // retention; the window has not moved, so the next run writes it again.
            let _ = fs::remove_file(&archive);
            let _ = sync_dir(parent(&archive));
            return Err(StorageError::new("cannot write", shown(&manifest_path), e));
        }
        Ok(())
    }

    fn put(&self, key: &str, bytes: &[u8]) -> Result<(), StorageError> {
        let path = self.path(key)?;
        write_atomic(&path, bytes)
            .map_err(|e| StorageError::new("cannot write", path.display().to_string(), e))
    }

    fn list(&self, prefix: &str) -> Result<Vec<Object>, StorageError> {
        let mut out = Vec::new();
        let dirs = match fs::read_dir(&self.root) {
            Ok(d) => d,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(out),
            Err(e) => return Err(StorageError::new("cannot list", self.describe(), e)),
        };
        for dir in dirs.flatten().map(|e| e.path()).filter(|p| p.is_dir()) {
            let Some(policy) = dir.file_name().and_then(|n| n.to_str()).map(String::from) else {
                continue;
            };
            if policy.starts_with('.')
                || !(prefix.starts_with(&format!("{policy}/"))
                    || format!("{policy}/").starts_with(prefix))
            {
                continue;
            }
            let Ok(files) = fs::read_dir(&dir) else {
                continue;
            };
            for entry in files.flatten() {
                let Some(name) = entry.file_name().to_str().map(String::from) else {
                    continue;
                };
                let key = format!("{policy}/{name}");
                let is_file = entry.file_type().is_ok_and(|t| t.is_file());
                if name.starts_with('.')
                    || name.ends_with(TEMP_MARK)
                    || !is_file
                    || !key.starts_with(prefix)
                {
                    continue;
                }
                let size = entry.metadata().map(|m| m.len()).unwrap_or(0);
                out.push(Object { key, size });
            }
        }
        out.sort_by(|a, b| a.key.cmp(&b.key));
        Ok(out)
    }

    fn open(&self, key: &str) -> Result<Box<dyn Read + Send>, StorageError> {
        let path = self.path(key)?;
        File::open(&path)
            .map(|f| Box::new(f) as Box<dyn Read + Send>)
            .map_err(|e| StorageError::new("cannot read", path.display().to_string(), e))
    }

    fn delete(&self, key: &str) -> Result<(), StorageError> {
        let path = self.path(key)?;
        match fs::remove_file(&path) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => Err(StorageError::new(
                "cannot delete",
                path.display().to_string(),
                e,
            )),
            _ => Ok(()),
        }
    }

    fn remove_leftovers(&self, prefix: &str) -> Vec<String> {
        let policy = prefix.trim_end_matches('/');
        let Ok(dir) = self.path(policy) else {
            return Vec::new();
        };
        super::fs::remove_leftovers(&dir)
            .into_iter()
            .map(|p| p.display().to_string())
            .collect()
    }

    fn local_path(&self, key: &str) -> Option<PathBuf> {
        self.path(key).ok()
    }
}

fn parent(p: &Path) -> &Path {
    p.parent().unwrap_or(Path::new("."))
}

/// Copy `from` to `to` durably, never overwriting: a temp file beside `to`, fsync,
/// rename.
fn copy_in(from: &Path, to: &Path) -> io::Result<()> {
    let temp = TempGuard::new(temp_path(to));
    let mut out = create_new(temp.path())?;
    io::copy(&mut File::open(from)?, &mut out)?;
    out.sync_all()?;
    drop(out);
    commit(temp.path(), to)?;
    temp.disarm();
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    // An archive and its manifest are committed together, listed, read back and deleted;
    // a second commit of the same key is refused and leaves the first intact.
    #[test]
    fn commit_list_read_delete() {
        let dir = tempfile::tempdir().unwrap();
        let t = Local::new(dir.path());
        let staged = t.stage("hot/a.tar.gz").unwrap();
        assert!(!staged.exists());
        fs::write(&staged, b"archive").unwrap();
        t.commit(&staged, "hot/a.tar.gz", "hot/a.manifest.json", b"{}")
            .unwrap();
        assert!(!staged.exists(), "moved, not copied");
        let keys: Vec<String> = t.list("hot/").unwrap().into_iter().map(|o| o.key).collect();
        assert_eq!(keys, ["hot/a.manifest.json", "hot/a.tar.gz"]);
        assert!(t.list("cold/").unwrap().is_empty());
        assert_eq!(t.read("hot/a.tar.gz").unwrap(), b"archive");

        let again = t.stage("hot/a.tar.gz").unwrap();
        fs::write(&again, b"other").unwrap();
        let e = t
            .commit(&again, "hot/a.tar.gz", "hot/a.manifest.json", b"[]")
            .unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::AlreadyExists);
        assert_eq!(t.read("hot/a.tar.gz").unwrap(), b"archive");
        assert_eq!(t.read("hot/a.manifest.json").unwrap(), b"{}");

        t.delete("hot/a.tar.gz").unwrap();
        t.delete("hot/a.tar.gz").unwrap();
        assert_eq!(t.list("").unwrap().len(), 1);
    }

    // A file from elsewhere (another target's copy) is copied in, and stays.
    #[test]
    fn commit_copies_a_file_from_elsewhere() {
        let src = tempfile::tempdir().unwrap();
        let dir = tempfile::tempdir().unwrap();
        let file = src.path().join("a.tar.gz");
        fs::write(&file, b"archive").unwrap();
        let t = Local::new(dir.path());
        t.commit(&file, "hot/a.tar.gz", "hot/a.manifest.json", b"{}")
            .unwrap();
        assert!(file.exists());
        assert_eq!(t.read("hot/a.tar.gz").unwrap(), b"archive");
    }

    // Keys cannot leave the folder.
    #[test]
    fn keys_stay_inside() {
        let dir = tempfile::tempdir().unwrap();
        let t = Local::new(dir.path());
        for bad in ["../x", "/etc/passwd", "", "hot/../../x"] {
            assert_eq!(
                t.read(bad).unwrap_err().kind(),
                io::ErrorKind::InvalidInput,
                "{bad}"
            );
        }
    }
}
