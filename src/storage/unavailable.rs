//! A target that could not be set up (an S3 target without its credentials): every
//! operation fails with the reason, so only what uses it fails, and says why.

use std::io::Read;
use std::path::{Path, PathBuf};

use super::{Object, StorageError, Target};

#[derive(Debug, Clone)]
pub struct Unavailable {
    pub name: String,
    pub reason: String,
}

impl Unavailable {
    fn error(&self, op: &'static str, what: &str) -> StorageError {
        StorageError::new(
            op,
            format!("{what} (target `{}`)", self.name),
            std::io::Error::other(self.reason.clone()),
        )
    }
}

impl Target for Unavailable {
    fn describe(&self) -> String {
        format!("{} (unavailable: {})", self.name, self.reason)
    }

    fn stage(&self, key: &str) -> Result<PathBuf, StorageError> {
        Err(self.error("cannot write", key))
    }

    fn commit(&self, _: &Path, key: &str, _: &str, _: &[u8]) -> Result<(), StorageError> {
        Err(self.error("cannot write", key))
    }

    fn put(&self, key: &str, _: &[u8]) -> Result<(), StorageError> {
        Err(self.error("cannot write", key))
    }

    fn list(&self, prefix: &str) -> Result<Vec<Object>, StorageError> {
        Err(self.error("cannot list", prefix))
    }

    fn open(&self, key: &str) -> Result<Box<dyn Read + Send>, StorageError> {
        Err(self.error("cannot read", key))
    }

    fn delete(&self, key: &str) -> Result<(), StorageError> {
        Err(self.error("cannot delete", key))
    }

    fn remove_leftovers(&self, _: &str) -> Vec<String> {
        Vec::new()
    }

    fn local_path(&self, _: &str) -> Option<PathBuf> {
        None
    }
}
