//! Several targets as one: a policy's archives go to each of its targets (a local copy
//! for fast restores, an off-site one), and reading sees the union of them. A target
//! that fails does not stop the others; what it misses is copied to it later
//! ([`Set::repair`]) from a target that has it, byte for byte.

use std::collections::BTreeMap;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::{MissingCopy, Object, StorageError, Target, TempGuard};

/// Named targets, in order: the first that stages locally stages new archives.
#[derive(Debug, Clone)]
pub struct Set {
    members: Vec<(String, Arc<dyn Target>)>,
}

impl Set {
    pub fn new(members: Vec<(String, Arc<dyn Target>)>) -> Set {
        Set { members }
    }

    pub fn members(&self) -> &[(String, Arc<dyn Target>)] {
        &self.members
    }

    /// The member that stages new archives: one that keeps them on this machine (its
    /// commit is a rename), else the first.
    fn stager(&self) -> Option<usize> {
        if self.members.is_empty() {
            return None;
        }
        Some(
            self.members
                .iter()
                .position(|(_, t)| t.local_path("probe/probe").is_some())
                .unwrap_or(0),
        )
    }

    /// Copy to every member what another member has committed under `prefix` and it
    /// lacks (an archive and its manifest, byte for byte). Returns what was copied,
    /// as `(key, target)`, and what could not be.
    pub fn repair(&self, prefix: &str) -> (Vec<(String, String)>, Vec<MissingCopy>) {
        let mut copied = Vec::new();
        let mut failed = Vec::new();
        if self.members.len() < 2 {
            return (copied, failed);
        }
        let mut listed: Vec<Option<BTreeMap<String, u64>>> = Vec::new();
        for (name, t) in &self.members {
            match t.list(prefix) {
                Ok(objs) => listed.push(Some(objs.into_iter().map(|o| (o.key, o.size)).collect())),
                Err(e) => {
                    failed.push(MissingCopy {
                        target: name.clone(),
                        error: e.to_string(),
                    });
                    listed.push(None);
                }
            }
        }
        // Manifests are the commit markers: an archive counts where its manifest is.
        let manifests: std::collections::BTreeSet<&String> = listed
            .iter()
            .flatten()
            .flat_map(|m| m.keys())
            .filter(|k| k.ends_with(super::MANIFEST_EXT))
            .collect();
        for manifest_key in manifests {
            let Some(archive_key) = archive_of(manifest_key, &listed) else {
                continue;
            };
            let Some(from) = listed.iter().position(|l| {
                l.as_ref()
                    .is_some_and(|m| m.contains_key(manifest_key) && m.contains_key(&archive_key))
            }) else {
                continue;
            };
            for (i, (name, to)) in self.members.iter().enumerate() {
                let Some(have) = &listed[i] else { continue };
                if have.contains_key(manifest_key) {
                    continue;
                }
                let source = &self.members[from].1;
                match copy(source.as_ref(), to.as_ref(), &archive_key, manifest_key) {
                    Ok(()) => copied.push((archive_key.clone(), name.clone())),
                    Err(e) => failed.push(MissingCopy {
                        target: name.clone(),
                        error: e.to_string(),
                    }),
                }
            }
        }
        (copied, failed)
    }
}

/// The archive a manifest key belongs to, as some member lists it.
fn archive_of(manifest_key: &str, listed: &[Option<BTreeMap<String, u64>>]) -> Option<String> {
    let stem = manifest_key.strip_suffix(super::MANIFEST_EXT)?;
    listed
        .iter()
        .flatten()
        .flat_map(|m| m.keys())
        .find(|k| {
            k.strip_prefix(stem)
                .is_some_and(|rest| rest == super::ARCHIVE_EXT || rest == super::ENCRYPTED_EXT)
        })
        .cloned()
}

/// Copy one committed archive and its manifest from `from` to `to`.
fn copy(
    from: &dyn Target,
    to: &dyn Target,
    archive_key: &str,
    manifest_key: &str,
) -> Result<(), StorageError> {
    let manifest = from.read(manifest_key)?;
    let staged = to.stage(archive_key)?;
    let guard = TempGuard::new(staged.clone());
    let mut reader = from.open(archive_key)?;
    let mut file = std::fs::File::create(&staged)
        .map_err(|e| StorageError::new("cannot write", staged.display().to_string(), e))?;
    std::io::copy(&mut reader, &mut file)
        .map_err(|e| StorageError::new("cannot copy", archive_key, e))?;
    file.sync_all()
        .map_err(|e| StorageError::new("cannot write", staged.display().to_string(), e))?;
    drop(file);
    to.commit(&staged, archive_key, manifest_key, &manifest)?;
    drop(guard);
    Ok(())
}

impl Target for Set {
    fn describe(&self) -> String {
        self.members
            .iter()
            .map(|(n, t)| format!("{n} ({})", t.describe()))
            .collect::<Vec<_>>()
            .join(" + ")
    }

    fn stage(&self, key: &str) -> Result<PathBuf, StorageError> {
        match self.stager() {
            Some(i) => self.members[i].1.stage(key),
            None => Err(no_targets(key)),
        }
    }

    fn commit(
        &self,
        file: &Path,
        key: &str,
        manifest_key: &str,
        manifest: &[u8],
    ) -> Result<(), StorageError> {
        let missing = self.commit_copies(file, key, manifest_key, manifest)?;
        match missing.first() {
            None => Ok(()),
            Some(m) => Err(StorageError::new(
                "cannot write",
                format!("{key} to {}", m.target),
                std::io::Error::other(m.error.clone()),
            )),
        }
    }

    /// Commit to every member: the ones that copy first, the stager (whose commit may
    /// move the file) last. Succeeds when one member has it.
    fn commit_copies(
        &self,
        file: &Path,
        key: &str,
        manifest_key: &str,
        manifest: &[u8],
    ) -> Result<Vec<MissingCopy>, StorageError> {
        let Some(stager) = self.stager() else {
            return Err(no_targets(key));
        };
        let mut order: Vec<usize> = (0..self.members.len()).filter(|i| *i != stager).collect();
        order.push(stager);
        let mut missing = Vec::new();
        let mut first_error = None;
        for i in order {
            let (name, t) = &self.members[i];
            if let Err(e) = t.commit(file, key, manifest_key, manifest) {
                tracing::warn!(target_name = %name, archive = %key, error = %e, "a copy of the archive could not be written");
                missing.push(MissingCopy {
                    target: name.clone(),
                    error: e.to_string(),
                });
                first_error.get_or_insert(e);
            }
        }
        // The stager moves a file it staged; one that uploads leaves it behind.
        if file.exists() {
            let _ = std::fs::remove_file(file);
        }
        match first_error {
            Some(e) if missing.len() == self.members.len() => Err(e),
            _ => Ok(missing),
        }
    }

    fn put(&self, key: &str, bytes: &[u8]) -> Result<(), StorageError> {
        let mut first = None;
        for (_, t) in &self.members {
            if let Err(e) = t.put(key, bytes) {
                first.get_or_insert(e);
            }
        }
        first.map_or(Ok(()), Err)
    }

    fn list(&self, prefix: &str) -> Result<Vec<Object>, StorageError> {
        let mut all: BTreeMap<String, u64> = BTreeMap::new();
        let mut first_error = None;
        let mut listed = 0;
        for (name, t) in &self.members {
            match t.list(prefix) {
                Ok(objs) => {
                    listed += 1;
                    for o in objs {
                        all.entry(o.key).or_insert(o.size);
                    }
                }
                Err(e) => {
                    tracing::warn!(target_name = %name, error = %e, "cannot list a target; reading the others");
                    first_error.get_or_insert(e);
                }
            }
        }
        match first_error {
            Some(e) if listed == 0 => Err(e),
            _ => Ok(all
                .into_iter()
                .map(|(key, size)| Object { key, size })
                .collect()),
        }
    }

    fn open(&self, key: &str) -> Result<Box<dyn Read + Send>, StorageError> {
        let mut first_error = None;
        for (_, t) in &self.members {
            match t.open(key) {
                Ok(r) => return Ok(r),
                Err(e) => {
                    first_error.get_or_insert(e);
                }
            }
        }
        Err(first_error.unwrap_or_else(|| no_targets(key)))
    }

    fn delete(&self, key: &str) -> Result<(), StorageError> {
        let mut first = None;
        for (_, t) in &self.members {
            if let Err(e) = t.delete(key) {
                first.get_or_insert(e);
            }
        }
        first.map_or(Ok(()), Err)
    }

    fn remove_leftovers(&self, prefix: &str) -> Vec<String> {
        self.members
            .iter()
            .flat_map(|(_, t)| t.remove_leftovers(prefix))
            .collect()
    }

    fn local_path(&self, key: &str) -> Option<PathBuf> {
        self.members.iter().find_map(|(_, t)| {
            let p = t.local_path(key)?;
            p.exists().then_some(p)
        })
    }
}

fn no_targets(key: &str) -> StorageError {
    StorageError::new(
        "cannot write",
        key,
        std::io::Error::other("the policy has no targets"),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::local::Local;

    fn set(dirs: &[&Path]) -> Set {
        Set::new(
            dirs.iter()
                .enumerate()
                .map(|(i, d)| (format!("t{i}"), Arc::new(Local::new(*d)) as Arc<dyn Target>))
                .collect(),
        )
    }

    // A commit reaches every member; reading sees the union; what one member lacks is
    // copied to it byte for byte.
    #[test]
    fn commits_everywhere_and_repairs_what_one_lacks() {
        let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let s = set(&[a.path(), b.path()]);
        let staged = s.stage("p/x.tar.gz").unwrap();
        std::fs::write(&staged, b"archive bytes").unwrap();
        let missing = s
            .commit_copies(&staged, "p/x.tar.gz", "p/x.manifest.json", b"{}")
            .unwrap();
        assert!(missing.is_empty());
        for d in [a.path(), b.path()] {
            assert_eq!(
                std::fs::read(d.join("p/x.tar.gz")).unwrap(),
                b"archive bytes"
            );
            assert_eq!(std::fs::read(d.join("p/x.manifest.json")).unwrap(), b"{}");
        }
        assert!(!staged.exists());
        // b loses it; repair copies it back from a.
        std::fs::remove_file(b.path().join("p/x.tar.gz")).unwrap();
        std::fs::remove_file(b.path().join("p/x.manifest.json")).unwrap();
        assert_eq!(s.list("p/").unwrap().len(), 2, "the union still has it");
        let (copied, failed) = s.repair("p/");
        assert!(failed.is_empty(), "{failed:?}");
        assert_eq!(copied, [("p/x.tar.gz".to_string(), "t1".to_string())]);
        assert_eq!(
            std::fs::read(b.path().join("p/x.tar.gz")).unwrap(),
            b"archive bytes"
        );
        // An archive without its manifest is not committed: not copied.
        std::fs::write(a.path().join("p/y.tar.gz"), b"half").unwrap();
        let (copied, _) = s.repair("p/");
        assert!(copied.is_empty());
    }

    // A member that cannot be written is reported as a missing copy; the others have
    // the archive. With every member failing, the commit fails.
    #[cfg(unix)]
    #[test]
    fn a_failing_member_is_a_missing_copy() {
        let a = tempfile::tempdir().unwrap();
        let blocked = tempfile::tempdir().unwrap();
        // A file where the member's policy folder should be: nothing can be written.
        std::fs::write(blocked.path().join("p"), b"not a folder").unwrap();
        let s = set(&[a.path(), blocked.path()]);
        let staged = s.stage("p/x.tar.gz").unwrap();
        std::fs::write(&staged, b"bytes").unwrap();
        let missing = s
            .commit_copies(&staged, "p/x.tar.gz", "p/x.manifest.json", b"{}")
            .unwrap();
        assert_eq!(missing.len(), 1);
        assert_eq!(missing[0].target, "t1");
        assert!(a.path().join("p/x.manifest.json").is_file());
        let only_blocked = set(&[blocked.path()]);
        let staged = a.path().join("elsewhere.tmp");
        std::fs::write(&staged, b"bytes").unwrap();
        assert!(
            only_blocked
                .commit_copies(&staged, "p/z.tar.gz", "p/z.manifest.json", b"{}")
                .is_err()
        );
    }
}
