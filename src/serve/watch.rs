//! The file watcher: the policies folder and dcb.yaml's folder, watched so that an edit
//! asks for a reload. A folder that does not exist yet is watched through its nearest
//! existing parent and picked up when it appears; one made again is watched again.

use std::collections::{BTreeMap, BTreeSet};
use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use tokio::sync::mpsc;

use super::Wake;
use crate::config::{Overrides, Settings};

/// Which file events ask for a reload: anything under the policies folder or on the
/// way to it (it may not exist yet), and the config file.
#[derive(Debug, Clone, Default)]
struct Filter {
    /// The policies folder as configured and as the OS names it.
    policies: Vec<PathBuf>,
    config: Option<OsString>,
}

impl Filter {
    fn relevant(&self, p: &Path) -> bool {
        self.policies
            .iter()
            .any(|d| p.starts_with(d) || d.starts_with(p))
            || self
                .config
                .as_deref()
                .is_some_and(|n| p.file_name() == Some(n))
    }
}

/// The file watcher. A folder that does not exist yet is watched through its nearest
/// existing parent and picked up when it appears; one made again is watched again.
pub struct Watch {
    watcher: Option<notify::RecommendedWatcher>,
    /// Each watched folder, with its identity when it was watched.
    watched: BTreeMap<PathBuf, Option<(u64, u64)>>,
    /// Folders that could not be watched (said once; retried).
    failed: BTreeSet<PathBuf>,
    filter: Arc<RwLock<Filter>>,
    primed: bool,
}

/// A folder's identity, where the OS gives one: a folder deleted and made again is a
/// different folder to watch.
fn identity(dir: &Path) -> Option<(u64, u64)> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::MetadataExt as _;
        std::fs::metadata(dir).ok().map(|m| (m.dev(), m.ino()))
    }
    #[cfg(not(unix))]
    {
        let _ = dir;
        None
    }
}

fn existing_ancestor(p: &Path) -> PathBuf {
    p.ancestors()
        .find(|a| a.is_dir())
        .unwrap_or(p)
        .to_path_buf()
}

impl Watch {
    pub fn new(tx: mpsc::UnboundedSender<Wake>) -> Watch {
        let filter = Arc::new(RwLock::new(Filter::default()));
        let seen = filter.clone();
        let handler = move |res: notify::Result<notify::Event>| {
            let Ok(ev) = res else { return };
            if matches!(ev.kind, notify::EventKind::Access(_)) {
                return;
            }
            let f = seen.read().unwrap_or_else(|e| e.into_inner());
            if ev.paths.is_empty() || ev.paths.iter().any(|p| f.relevant(p)) {
                let _ = tx.send(Wake::Reload("file change"));
            }
        };
        let watcher = match notify::recommended_watcher(handler) {
            Ok(w) => Some(w),
            Err(e) => {
                tracing::error!(error = %e, "cannot watch the policy files; reload with SIGHUP or a restart");
                None
            }
        };
        Watch {
            watcher,
            watched: BTreeMap::new(),
            failed: BTreeSet::new(),
            filter,
            primed: false,
        }
    }

    /// Watch the policies folder and the config file's folder of `settings` (the
    /// config file may not exist yet: `--config`, else ./dcb.yaml). True when a folder
    /// is watched now that was not at the previous call.
    pub fn ensure(&mut self, settings: &Settings, overrides: &Overrides) -> bool {
        use notify::{RecursiveMode, Watcher as _};
        let Some(watcher) = self.watcher.as_mut() else {
            return false;
        };
        let absolute = |p: &Path| std::path::absolute(p).unwrap_or_else(|_| p.to_path_buf());
        let policies = absolute(&settings.policies_dir);
        let config = absolute(
            overrides
                .config
                .as_deref()
                .unwrap_or(Path::new(crate::config::DEFAULT_CONFIG_FILE)),
        );
        *self.filter.write().unwrap_or_else(|e| e.into_inner()) = Filter {
            policies: [Some(policies.clone()), policies.canonicalize().ok()]
                .into_iter()
                .flatten()
                .collect(),
            config: config.file_name().map(|n| n.to_os_string()),
        };
        let mut want = BTreeSet::from([existing_ancestor(&policies)]);
        if let Some(dir) = config.parent() {
            want.insert(existing_ancestor(dir));
        }
        let gone: Vec<PathBuf> = self
            .watched
            .keys()
            .filter(|d| !want.contains(*d))
            .cloned()
            .collect();
        for dir in gone {
            let _ = watcher.unwatch(&dir);
            self.watched.remove(&dir);
        }
        let mut added = false;
        for dir in want {
            let id = identity(&dir);
            match self.watched.get(&dir) {
                Some(known) if *known == id => continue,
                Some(_) => {
                    let _ = watcher.unwatch(&dir);
                }
                None => {}
            }
            match watcher.watch(&dir, RecursiveMode::NonRecursive) {
                Ok(()) => {
                    tracing::debug!(dir = %dir.display(), "watching");
                    self.watched.insert(dir.clone(), id);
                    self.failed.remove(&dir);
                    added = true;
                }
                Err(e) => {
                    self.watched.remove(&dir);
                    if self.failed.insert(dir.clone()) {
                        tracing::error!(dir = %dir.display(), error = %e, "cannot watch folder; retrying (SIGHUP reloads meanwhile)");
                    }
                }
            }
        }
        let primed = std::mem::replace(&mut self.primed, true);
        added && primed
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // Events under the policies folder, on the way to it, and on the config file ask
    // for a reload; others in a watched folder do not.
    #[test]
    fn watch_filter() {
        let f = Filter {
            policies: vec![PathBuf::from("/srv/dcb/policies")],
            config: Some("dcb.yaml".into()),
        };
        assert!(f.relevant(Path::new("/srv/dcb/policies/hot.yaml")));
        assert!(f.relevant(Path::new("/srv/dcb/policies")));
        assert!(f.relevant(Path::new("/srv/dcb")));
        assert!(f.relevant(Path::new("/srv/dcb/dcb.yaml")));
        assert!(!f.relevant(Path::new("/srv/dcb/backups")));
        assert!(!f.relevant(Path::new("/srv/dcb/notes.txt")));
    }
}
