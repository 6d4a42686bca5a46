//! Proving an archive is what its manifest says: gzip and tar integrity, every
//! member's SHA-256 and size, the `.bson` member a sequence of well-formed documents
//! with the manifest's count, the metadata JSON readable, and the whole file's hash.

pub mod log;
pub mod sample;

use std::collections::BTreeMap;
use std::io::{self, Read};
use std::path::Path;

use bson::RawDocumentBuf;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::bson_stream::{BsonError, BsonReader};
pub use crate::crypto::KeyError;
use crate::crypto::Keys;
use crate::export::manifest::Manifest;
use crate::storage::Source;
use crate::unpack::{self, FileDigest, Hashing, Problem};

/// The most a JSON member may hold; dcb writes a few KB.
const MAX_JSON_MEMBER: u64 = 16 * 1024 * 1024;

/// What one archive turned out to hold.
#[derive(Debug, Clone)]
pub struct Report {
    pub archive: Source,
    /// The manifest checked against: the one beside the archive, else the copy inside.
    pub manifest: Option<Manifest>,
    pub problems: Vec<Problem>,
    /// Documents read from the `.bson` member.
    pub documents: u64,
    /// The `.metadata.json` member, parsed.
    pub metadata: Option<Value>,
    /// Documents drawn at random from the `.bson` member (`--sample`).
    pub sample: Vec<RawDocumentBuf>,
    /// How deep the check read.
    pub checked: Checked,
    /// The keys at hand cannot open the (encrypted) archive.
    pub key_error: Option<KeyError>,
}

/// How deep a check read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Checked {
    /// Every member read and compared with the manifest.
    #[default]
    Full,
    /// Only the whole file's SHA-256: an encrypted archive and no identity (the
    /// service on a host with only the public keys). The contents were never read.
    Hash,
}

impl Report {
    /// Checked and found intact.
    pub fn ok(&self) -> bool {
        self.problems.is_empty() && self.key_error.is_none()
    }

    /// Found damaged. A key problem alone is not damage.
    pub fn corrupt(&self) -> bool {
        !self.problems.is_empty()
    }

    /// The keys at hand cannot open the archive and nothing says it is damaged: a
    /// configuration problem (exit 2), never recorded as a failed verification.
    pub fn locked(&self) -> Option<&KeyError> {
        self.key_error.as_ref().filter(|_| !self.corrupt())
    }
}

/// One archive to check, and what is known of it before reading.
pub struct Check {
    pub archive: Source,
    /// The manifest beside it, if there is one.
    pub beside: Option<Manifest>,
    /// Problems found before reading (an unreadable manifest beside it).
    pub early: Vec<Problem>,
}

impl Check {
    /// A committed archive, checked against its manifest.
    pub fn found(f: &crate::catalog::Found) -> Check {
        Check {
            archive: f.archive.clone(),
            beside: Some(f.manifest.clone()),
            early: Vec::new(),
        }
    }

    /// A file named on the command line, checked against the manifest beside it when
    /// there is one, else the copy inside.
    pub fn file(path: &Path) -> Check {
        let (beside, early) = match manifest_beside(path) {
            Ok(m) => (m, Vec::new()),
            Err(e) => (
                None,
                vec![Problem::new("manifest beside the archive", e.to_string())],
            ),
        };
        Check {
            archive: Source::File(path.to_path_buf()),
            beside,
            early,
        }
    }
}

/// Check every archive, one per core up to four (reading is decompression-bound);
/// the reports in the order of `checks`.
pub fn check_all(checks: &[Check], sample: usize, keys: &Keys) -> Vec<Report> {
    let next = std::sync::atomic::AtomicUsize::new(0);
    let results = std::sync::Mutex::new(Vec::new());
    let workers = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(2)
        .clamp(1, 4);
    std::thread::scope(|s| {
        for _ in 0..workers {
            s.spawn(|| {
                loop {
                    let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    let Some(c) = checks.get(i) else { break };
                    let mut report = check(&c.archive, c.beside.as_ref(), sample, keys);
                    let mut problems = c.early.clone();
                    problems.append(&mut report.problems);
                    report.problems = problems;
                    results
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .push((i, report));
                }
            });
        }
    });
    let mut results = results.into_inner().unwrap_or_else(|e| e.into_inner());
    results.sort_by_key(|(i, _)| *i);
    results.into_iter().map(|(_, r)| r).collect()
}

#[derive(Debug)]
struct Seen {
    size: u64,
    sha256: String,
}

/// Read the archive at `path` once and check it against `beside` (the manifest next to
/// it), or against the manifest inside when there is none beside it.
pub fn check(
    archive: impl Into<Source>,
    beside: Option<&Manifest>,
    sample: usize,
    keys: &Keys,
) -> Report {
    let source = &archive.into();
    if keys.is_empty() && keys.hash_only_when_locked && is_age(source) {
        return check_locked(source, beside);
    }
    let mut problems = Vec::new();
    let mut seen: BTreeMap<String, Seen> = BTreeMap::new();
    let mut bson_members: Vec<(String, u64)> = Vec::new();
    let mut deletions: Option<(String, u64)> = None;
    let mut metadata = None;
    let mut inner: Option<Manifest> = None;
    let mut reservoir = sample::Reservoir::new(sample);

    let read = unpack::for_each_member(source, keys, &mut problems, |name, size, r, problems| {
        if seen.contains_key(name) {
            problems.push(Problem::new(name, "appears twice in the archive"));
        }
        let mut h = Hashing::new(r);
        if crate::storage::names::is_deletions_member(name) {
            let (count, bad) = read_bson(&mut h, &mut sample::Reservoir::new(0))?;
            if let Some(e) = bad {
                problems.push(Problem::new(name, e));
            }
            deletions = Some((name.to_string(), count));
        } else if name.ends_with(".bson") {
            let (count, bad) = read_bson(&mut h, &mut reservoir)?;
            if let Some(e) = bad {
                problems.push(Problem::new(name, e));
            }
            bson_members.push((name.to_string(), count));
        } else if name.ends_with(".metadata.json") || is_manifest_member(name) {
            if size > MAX_JSON_MEMBER {
                problems.push(Problem::new(
                    name,
                    format!(
                        "is {size} bytes; a JSON member over {MAX_JSON_MEMBER} bytes is not dcb's"
                    ),
                ));
                io::copy(&mut h, &mut io::sink())?;
            } else {
                let mut data = Vec::with_capacity(size as usize);
                h.read_to_end(&mut data)?;
                if is_manifest_member(name) {
                    match serde_json::from_slice::<Manifest>(&data) {
                        Ok(m) => inner = Some(m),
                        Err(e) => {
                            problems.push(Problem::new(name, format!("is not a dcb manifest: {e}")))
                        }
                    }
                } else {
                    match serde_json::from_slice::<Value>(&data) {
                        Ok(v) => metadata = Some(v),
                        Err(e) => {
                            problems.push(Problem::new(name, format!("is not valid JSON: {e}")))
                        }
                    }
                }
            }
        } else {
            io::copy(&mut h, &mut io::sink())?;
        }
        let (sha256, size) = h.finish();
        seen.insert(name.to_string(), Seen { size, sha256 });
        Ok(())
    });
    let digest = match read {
        Ok(d) => d,
        Err(key) => return locked_out(source, beside, key),
    };
    let complete = digest.is_some();

    let manifest = beside.cloned().or_else(|| inner.clone());
    let documents = bson_members.iter().map(|(_, n)| n).sum();
    match &manifest {
        None => problems.push(Problem::new(
            "manifest",
            "there is no manifest beside the archive, and none inside it",
        )),
        Some(m) => compare(
            m,
            beside.is_some(),
            inner.as_ref(),
            &seen,
            &bson_members,
            deletions.as_ref(),
            complete,
            digest.as_ref(),
            &mut problems,
        ),
    }
    Report {
        archive: source.clone(),
        manifest,
        problems,
        documents,
        metadata,
        sample: reservoir.into_items(),
        checked: Checked::Full,
        key_error: None,
    }
}

/// An encrypted archive without the key to open it: only the file's hash and size.
fn check_locked(source: &Source, beside: Option<&Manifest>) -> Report {
    let (mut problems, hashed) = hash_problems(source, beside);
    if !hashed {
        problems.push(Problem::new(
            "manifest",
            "records no file hash, and the archive is encrypted: nothing can be checked without an identity",
        ));
    }
    Report {
        archive: source.clone(),
        manifest: beside.cloned(),
        problems,
        documents: beside.map_or(0, |m| m.documents),
        metadata: None,
        sample: Vec::new(),
        checked: Checked::Hash,
        key_error: None,
    }
}

/// The keys cannot open the archive. A damaged recipient stanza looks just like a
/// wrong key, so the file's hash decides: intact, it is a key problem; not, damage.
fn locked_out(source: &Source, beside: Option<&Manifest>, key: KeyError) -> Report {
    let (problems, _) = hash_problems(source, beside);
    Report {
        archive: source.clone(),
        manifest: beside.cloned(),
        problems,
        documents: 0,
        metadata: None,
        sample: Vec::new(),
        checked: Checked::Hash,
        key_error: Some(key),
    }
}

/// The whole file against the hash beside it; whether there was one to compare with.
fn hash_problems(source: &Source, beside: Option<&Manifest>) -> (Vec<Problem>, bool) {
    let expected = beside.and_then(|m| m.archive_sha256.as_ref());
    let mut problems = Vec::new();
    match (unpack::digest(source), expected) {
        (Err(e), _) => problems.push(Problem::new("archive", unpack::describe_io(&e))),
        (Ok(d), Some(expected)) if d.sha256 != *expected => problems.push(Problem::new(
            "archive file",
            format!(
                "SHA-256 is {}; the manifest says {}",
                short(&d.sha256),
                short(expected)
            ),
        )),
        _ => {}
    }
    (problems, expected.is_some())
}

use crate::storage::names::is_manifest_member;

/// Count the documents of a `.bson` member; a content error ends the count (the rest
/// of the member is still read, so its hash is complete). I/O errors are fatal.
fn read_bson(
    r: &mut impl Read,
    reservoir: &mut sample::Reservoir,
) -> io::Result<(u64, Option<String>)> {
    let mut reader = BsonReader::new(&mut *r);
    let mut count = 0u64;
    let bad = loop {
        match reader.next_document() {
            Ok(Some(doc)) => {
                count += 1;
                reservoir.offer(doc);
            }
            Ok(None) => break None,
            Err(BsonError::Io(e)) => return Err(e),
            Err(e) => break Some(format!("{e} (after {count} good documents)")),
        }
    };
    drop(reader);
    if bad.is_some() {
        io::copy(r, &mut io::sink())?;
    }
    Ok((count, bad))
}

#[allow(clippy::too_many_arguments)]
fn compare(
    m: &Manifest,
    is_beside: bool,
    inner: Option<&Manifest>,
    seen: &BTreeMap<String, Seen>,
    bson_members: &[(String, u64)],
    deletions: Option<&(String, u64)>,
    complete: bool,
    digest: Option<&FileDigest>,
    problems: &mut Vec<Problem>,
) {
    let members_ok_before = problems.is_empty();
    let manifest_member = Manifest::member_path(&m.policy, &m.database, &m.collection);
    for expected in &m.members {
        match seen.get(&expected.path) {
            None if complete => problems.push(Problem::new(
                &expected.path,
                "is missing from the archive (the manifest lists it)",
            )),
            None => problems.push(Problem::new(
                &expected.path,
                "was not reached: the archive is unreadable before it",
            )),
            Some(s) if s.size != expected.size => problems.push(Problem::new(
                &expected.path,
                format!(
                    "holds {} bytes; the manifest says {}",
                    s.size, expected.size
                ),
            )),
            Some(s) if s.sha256 != expected.sha256 => problems.push(Problem::new(
                &expected.path,
                format!(
                    "SHA-256 is {}; the manifest says {}",
                    short(&s.sha256),
                    short(&expected.sha256)
                ),
            )),
            Some(_) => {}
        }
    }
    for name in seen.keys() {
        if *name != manifest_member && !m.members.iter().any(|e| &e.path == name) {
            problems.push(Problem::new(
                name,
                "is not listed in the manifest (unexpected member)",
            ));
        }
    }
    let bson_path = format!("{}/{}.bson", m.database, m.collection);
    match bson_members.iter().find(|(p, _)| *p == bson_path) {
        Some((_, count)) if *count != m.documents => problems.push(Problem::new(
            &bson_path,
            format!("holds {count} documents; the manifest says {}", m.documents),
        )),
        Some(_) => {}
        None if complete && !m.members.iter().any(|e| e.path == bson_path) => {
            problems.push(Problem::new(
                &bson_path,
                "is neither in the archive nor in the manifest's member list",
            ))
        }
        None => {}
    }
    let recorded = m.changes.as_ref().map_or(0, |c| c.deleted);
    match deletions {
        Some((path, count)) if *count != recorded => problems.push(Problem::new(
            path,
            format!("holds {count} deletions; the manifest says {recorded}"),
        )),
        None if complete && recorded > 0 => problems.push(Problem::new(
            crate::storage::names::deletions_member(&m.policy, &m.database, &m.collection),
            format!("is missing; the manifest records {recorded} deletions"),
        )),
        _ => {}
    }
    if let Some(seen_bson) = seen.get(&bson_path)
        && seen_bson.size != m.bytes
    {
        problems.push(Problem::new(
            &bson_path,
            format!(
                "holds {} bytes; the manifest says {}",
                seen_bson.size, m.bytes
            ),
        ));
    }
    if is_beside && complete {
        match inner {
            None => problems.push(Problem::new(
                &manifest_member,
                "is missing from the archive",
            )),
            Some(inner) => {
                let mut outer = m.clone();
                outer.archive_sha256 = None;
                outer.archive_size = None;
                if *inner != outer {
                    problems.push(Problem::new(
                        &manifest_member,
                        "differs from the manifest beside the archive",
                    ));
                }
            }
        }
    }
    if let (Some(d), Some(expected)) = (digest, m.archive_size)
        && d.size != expected
    {
        problems.push(Problem::new(
            "archive file",
            format!("holds {} bytes; the manifest says {expected}", d.size),
        ));
    }
    if let (Some(d), Some(expected)) = (digest, &m.archive_sha256)
        && d.sha256 != *expected
    {
        let why = if members_ok_before && problems.is_empty() {
            "; every member is intact, so the damage is in the gzip framing"
        } else {
            ""
        };
        problems.push(Problem::new(
            "archive file",
            format!(
                "SHA-256 is {}; the manifest says {}{why}",
                short(&d.sha256),
                short(expected)
            ),
        ));
    }
}

/// The start of a hash, for messages (a lying manifest may hold anything there).
fn short(sha: &str) -> &str {
    sha.get(..16).unwrap_or(sha)
}

/// Whether the archive is an age file (a source that cannot be read is not).
pub fn is_age(source: &Source) -> bool {
    source
        .open()
        .map(io::BufReader::new)
        .and_then(|mut r| crate::crypto::is_age(&mut r))
        .unwrap_or(false)
}

/// A manifest beside an archive that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum ManifestError {
    #[error("{path}: {1}", path = .0.display())]
    Unreadable(std::path::PathBuf, io::Error),
    #[error("{path}: not a dcb manifest: {1}", path = .0.display())]
    NotAManifest(std::path::PathBuf, serde_json::Error),
}

/// The manifest beside `archive`, if there is one.
pub fn manifest_beside(archive: &Path) -> Result<Option<Manifest>, ManifestError> {
    let path = Manifest::beside(archive);
    match std::fs::read(&path) {
        Ok(bytes) => serde_json::from_slice(&bytes)
            .map(Some)
            .map_err(|e| ManifestError::NotAManifest(path, e)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(ManifestError::Unreadable(path, e)),
    }
}
