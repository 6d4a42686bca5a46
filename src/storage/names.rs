//! How dcb names what it stores: archive and manifest files, the members inside an
//! archive, temporary files, and the keys that name archives in logs and catalogs.
//! Pure: nothing here touches the disk.

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

/// The key of a stored object: `<policy>/<file name>`, `/`-separated on every OS.
pub fn key(policy: &str, file_name: &str) -> String {
    format!("{policy}/{file_name}")
}

/// The file name of the manifest that describes the archive named `archive`.
pub fn manifest_name(archive: &str) -> String {
    let stem = archive
        .strip_suffix(ENCRYPTED_EXT)
        .or_else(|| archive.strip_suffix(ARCHIVE_EXT))
        .unwrap_or(archive);
    format!("{stem}{MANIFEST_EXT}")
}

/// The path of the manifest beside an archive file.
pub fn manifest_beside(archive: &Path) -> PathBuf {
    let name = archive
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    archive.with_file_name(manifest_name(&name))
}

/// Whether a file name is one of dcb's archives (not a temporary file).
pub fn is_archive_name(name: &str) -> bool {
    !name.starts_with('.') && (name.ends_with(ARCHIVE_EXT) || name.ends_with(ENCRYPTED_EXT))
}

/// Whether a file name is one of dcb's manifests (not a temporary file).
pub fn is_manifest_name(name: &str) -> bool {
    !name.starts_with('.') && name.ends_with(MANIFEST_EXT)
}

/// The documents of a collection inside an archive, where mongodump puts them.
pub fn bson_member(db: &str, collection: &str) -> String {
    format!("{db}/{collection}.bson")
}

/// The collection's options and indexes inside an archive (mongodump's format).
pub fn metadata_member(db: &str, collection: &str) -> String {
    format!("{db}/{collection}.metadata.json")
}

/// The manifest inside an archive: at the top, outside `<db>/`, named so that the
/// archives of one run never collide when extracted together.
pub fn manifest_member(policy: &str, db: &str, collection: &str) -> String {
    format!("dcb-manifest.{policy}.{db}.{collection}.json")
}

/// The `_id`s deleted since the archive before (a chain archive): at the top, outside
/// `<db>/`, so stock `mongorestore` skips it; BSON documents `{_id: …}`.
pub fn deletions_member(policy: &str, db: &str, collection: &str) -> String {
    format!("dcb-deletions.{policy}.{db}.{collection}.bson")
}

/// Whether an archive member is a chain archive's deletions.
pub fn is_deletions_member(name: &str) -> bool {
    name.starts_with("dcb-deletions.") && name.ends_with(".bson") && !name.contains('/')
}

/// Whether an archive member is a dcb manifest.
pub fn is_manifest_member(name: &str) -> bool {
    name.starts_with("dcb-manifest.") && name.ends_with(".json") && !name.contains('/')
}

/// How an archive is named in logs and catalogs: its path under `root`, `/`-separated
/// (`hot/20261125T093000.000Z_dcMes.api_logs.tar.gz`), or its whole path when it is
/// elsewhere.
pub fn archive_key(root: &Path, archive: &Path) -> String {
    let rel = archive
        .strip_prefix(root)
        .ok()
        .map(Path::to_path_buf)
        .or_else(|| {
            let root = root.canonicalize().ok()?;
            let abs = archive.canonicalize().ok()?;
            abs.strip_prefix(&root).ok().map(Path::to_path_buf)
        });
    match rel {
        Some(rel) => rel
            .components()
            .map(|c| c.as_os_str().to_string_lossy().into_owned())
            .collect::<Vec<_>>()
            .join("/"),
        None => archive.display().to_string(),
    }
}

/// Lowercase hexadecimal, as manifests record hashes.
pub fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write as _;
    bytes
        .iter()
        .fold(String::with_capacity(bytes.len() * 2), |mut s, b| {
            let _ = write!(s, "{b:02x}");
            s
        })
}

/// The temporary name of a file being written to `final_path`, in the same folder:
/// unique to this process. Writers of one file within a process take turns
/// (`fs::Prepared`), so they never share it.
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

    // Manifest names follow their archive's, encrypted or not.
    #[test]
    fn manifests_are_named_after_their_archive() {
        assert_eq!(manifest_name("a_db.c.tar.gz"), "a_db.c.manifest.json");
        assert_eq!(manifest_name("a_db.c.tar.gz.age"), "a_db.c.manifest.json");
        assert_eq!(
            manifest_beside(Path::new("hot/a_db.c.tar.gz")),
            PathBuf::from("hot/a_db.c.manifest.json")
        );
        assert!(is_archive_name("a_db.c.tar.gz") && !is_archive_name(".a.tar.gz.1-0.dcb-tmp"));
        assert!(is_manifest_member(&manifest_member("hot", "db", "c")));
        assert!(!is_manifest_member("db/dcb-manifest.x.json"));
    }
}
