//! Reading an archive back: gzip, then tar, each member's path and type checked before
//! anything uses it, and a SHA-256 of the whole file computed on the way.

use crate::error::Invalid;
use std::fmt;
use std::io::{self, BufReader, Read};
use std::path::{Component, Path};

use flate2::read::MultiGzDecoder;
use sha2::{Digest, Sha256};

use std::cell::RefCell;
use std::rc::Rc;

use crate::crypto::{self, KeyError, Keys, OpenError};
use crate::storage::Source;
use crate::storage::names::hex;

/// dcb writes 3 members (plus a long-name record for long paths); anything far
/// beyond that is not a dcb archive, and reading on only piles up problems.
const MAX_ENTRIES: usize = 64;
const MAX_PROBLEMS: usize = 20;
/// The longest member path accepted in a long-name record.
const MAX_NAME: u64 = 4096;

/// Something wrong with an archive, and where.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Problem {
    /// The member (path inside the archive), or the part of the file, concerned.
    pub member: String,
    pub message: String,
}

impl Problem {
    pub fn new(member: impl Into<String>, message: impl Into<String>) -> Problem {
        Problem {
            member: member.into(),
            message: message.into(),
        }
    }
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.member, self.message)
    }
}

/// The whole file, as read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileDigest {
    pub sha256: String,
    pub size: u64,
}

/// A reader that hashes what passes through it.
pub struct Hashing<R> {
    inner: R,
    hasher: Sha256,
    bytes: u64,
}

impl<R: Read> Hashing<R> {
    pub fn new(inner: R) -> Self {
        Hashing {
            inner,
            hasher: Sha256::new(),
            bytes: 0,
        }
    }

    pub fn bytes(&self) -> u64 {
        self.bytes
    }

    pub fn finish(self) -> (String, u64) {
        (hex(&self.hasher.finalize()), self.bytes)
    }
}

impl<R: Read> Read for Hashing<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hasher.update(&buf[..n]);
        self.bytes += n as u64;
        Ok(n)
    }
}

/// A member path that stays inside the folder it is extracted to: relative, no `..`,
/// no drive or root, no backslash tricks, UTF-8.
pub fn check_member_path(raw: &[u8]) -> Result<String, Invalid> {
    let path = std::str::from_utf8(raw).map_err(|_| Invalid::new("the path is not UTF-8"))?;
    if path.is_empty() {
        return Err(Invalid::new("the path is empty"));
    }
    if path.contains('\0') {
        return Err(Invalid::new("the path contains a NUL byte"));
    }
    if path.starts_with('/') || path.starts_with('\\') || path.contains(':') {
        return Err(Invalid::new("the path is absolute"));
    }
    for part in path.split(['/', '\\']) {
        if part == ".." {
            return Err(Invalid::new("the path escapes the target folder (`..`)"));
        }
    }
    if !Path::new(path)
        .components()
        .all(|c| matches!(c, Component::Normal(_) | Component::CurDir))
    {
        return Err(Invalid::new("the path is not a plain relative path"));
    }
    Ok(path.to_string())
}

/// What went wrong while reading the file, in words for the operator.
pub fn describe_io(e: &io::Error) -> String {
    match e.kind() {
        io::ErrorKind::UnexpectedEof => "the archive ends early (truncated)".to_string(),
        io::ErrorKind::NotFound => "the archive file is missing".to_string(),
        _ => format!("unreadable: {e}"),
    }
}

/// Stream every member of the archive in `source` to `visit` (path, size, content, and
/// `problems` to add to), after checking that its path is safe and that it is a regular file. Unsafe or
/// unexpected entries are reported in `problems` and never given to `visit`. Returns
/// the digest of the whole file, or `None` when reading stopped at a fatal problem
/// (also in `problems`); `Err` when the archive is encrypted and `keys` cannot open
/// it (nothing was read: a configuration problem, not damage).
pub fn for_each_member(
    source: &Source,
    keys: &Keys,
    problems: &mut Vec<Problem>,
    visit: impl FnMut(&str, u64, &mut dyn Read, &mut Vec<Problem>) -> io::Result<()>,
) -> Result<Option<FileDigest>, KeyError> {
    let mut locked = None;
    let digest = read_members(source, keys, problems, &mut locked, visit);
    match locked {
        Some(k) => Err(k),
        None => Ok(digest),
    }
}

fn read_members(
    source: &Source,
    keys: &Keys,
    problems: &mut Vec<Problem>,
    locked: &mut Option<KeyError>,
    mut visit: impl FnMut(&str, u64, &mut dyn Read, &mut Vec<Problem>) -> io::Result<()>,
) -> Option<FileDigest> {
    let file = match source.open() {
        Ok(f) => f,
        Err(e) => {
            problems.push(Problem::new("archive", describe_io(&e)));
            return None;
        }
    };
    let hashed = Rc::new(RefCell::new((Sha256::new(), 0u64)));
    let inner = Rc::new(RefCell::new(file));
    let mut raw = BufReader::with_capacity(
        1 << 20,
        SharedHashing {
            inner: inner.clone(),
            state: hashed.clone(),
        },
    );
    let encrypted = match crypto::is_age(&mut raw) {
        Ok(e) => e,
        Err(e) => {
            problems.push(Problem::new("archive", describe_io(&e)));
            return None;
        }
    };
    let plain: Box<dyn Read> = if encrypted {
        match keys.decrypt(raw) {
            Ok(r) => Box::new(r),
            Err(OpenError::Key(k)) => {
                *locked = Some(k);
                return None;
            }
            Err(OpenError::Damaged(e)) => {
                problems.push(Problem::new("archive", e));
                return None;
            }
        }
    } else {
        Box::new(raw)
    };
    let mut archive = tar::Archive::new(MultiGzDecoder::new(plain));
    let entries = match archive.entries() {
        Ok(e) => e,
        Err(e) => {
            problems.push(Problem::new("archive", describe_io(&e)));
            return None;
        }
    };
    let mut last: Option<String> = None;
    let where_header = |last: &Option<String>| match last {
        Some(m) => format!("the tar header after {m}"),
        None => "the first tar header".to_string(),
    };
    let mut long_name: Option<Vec<u8>> = None;
    let mut count = 0usize;
    for entry in entries.raw(true) {
        let mut entry = match entry {
            Ok(e) => e,
            Err(e) => {
                problems.push(Problem::new(where_header(&last), describe_io(&e)));
                return None;
            }
        };
        count += 1;
        if count > MAX_ENTRIES {
            problems.push(Problem::new(
                "archive",
                format!("holds more than {MAX_ENTRIES} entries (dcb writes 3); stopped reading"),
            ));
            return None;
        }
        if problems.len() >= MAX_PROBLEMS {
            problems.push(Problem::new(
                "archive",
                "too many problems; stopped reading",
            ));
            return None;
        }
        let kind = entry.header().entry_type();
        // Read in raw mode so that a long-name record is bounded before it is read
        // (the tar crate would read any size into memory).
        if kind.is_gnu_longname() {
            let size = entry.header().size().unwrap_or(u64::MAX);
            if size > MAX_NAME {
                problems.push(Problem::new(
                    where_header(&last),
                    format!("a long-name record of {size} bytes (refused)"),
                ));
                return None;
            }
            let mut name = Vec::with_capacity(size as usize);
            if let Err(e) = entry.read_to_end(&mut name) {
                problems.push(Problem::new(where_header(&last), describe_io(&e)));
                return None;
            }
            while name.last() == Some(&0) {
                name.pop();
            }
            long_name = Some(name);
            continue;
        }
        let raw = long_name
            .take()
            .unwrap_or_else(|| entry.path_bytes().into_owned());
        let shown = String::from_utf8_lossy(&raw[..raw.len().min(200)]).into_owned();
        if !kind.is_file() {
            problems.push(Problem::new(
                shown.clone(),
                format!("is a {kind:?} entry; dcb archives hold only regular files (refused)"),
            ));
            last = Some(shown);
            continue;
        }
        let name = match check_member_path(&raw) {
            Ok(n) => n,
            Err(why) => {
                problems.push(Problem::new(shown.clone(), format!("{why} (refused)")));
                last = Some(shown);
                continue;
            }
        };
        let size = entry.header().size().unwrap_or(0);
        if let Err(e) = visit(&name, size, &mut entry, problems) {
            problems.push(Problem::new(name, describe_io(&e)));
            return None;
        }
        last = Some(name);
    }
    // Read to the real end: the gzip trailers after the tar's end blocks, and
    // anything appended after them, must pass through the decoder and the hash too;
    // after the end-of-archive block there may be only zeros.
    let mut rest = archive.into_inner();
    let mut buf = vec![0u8; 64 * 1024];
    let mut nonzero = false;
    loop {
        match rest.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => nonzero |= buf[..n].iter().any(|&b| b != 0),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => {
                problems.push(Problem::new(
                    "the end of the archive (after the last member)",
                    describe_io(&e),
                ));
                return None;
            }
        }
    }
    if nonzero {
        problems.push(Problem::new(
            "the end of the archive (after the last member)",
            "holds data after the end-of-archive block",
        ));
    }
    drop(rest);
    // An age stream ends at its last chunk; anything after it is never read by the
    // decoders: read it here (into the file's hash too).
    let before = hashed.borrow().1;
    let mut tail = SharedHashing {
        inner,
        state: hashed.clone(),
    };
    if let Err(e) = io::copy(&mut tail, &mut io::sink()) {
        problems.push(Problem::new("archive", describe_io(&e)));
        return None;
    }
    let (hasher, size) = hashed.replace((Sha256::new(), 0));
    if size > before {
        problems.push(Problem::new(
            "archive file",
            format!("{} bytes follow the end of the archive", size - before),
        ));
    }
    Some(FileDigest {
        sha256: hex(&hasher.finalize()),
        size,
    })
}

/// Hashes what passes through, into state the caller keeps (the reader itself ends up
/// boxed inside the decoders).
struct SharedHashing<R> {
    inner: Rc<RefCell<R>>,
    state: Rc<RefCell<(Sha256, u64)>>,
}

impl<R: Read> Read for SharedHashing<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.borrow_mut().read(buf)?;
        let mut st = self.state.borrow_mut();
        st.0.update(&buf[..n]);
        st.1 += n as u64;
        Ok(n)
    }
}

/// The SHA-256 and size of a file, read from disk.
pub fn file_digest(path: &Path) -> io::Result<FileDigest> {
    digest(&Source::File(path.to_path_buf()))
}

/// The SHA-256 and size of an archive, read whole.
pub fn digest(source: &Source) -> io::Result<FileDigest> {
    let mut h = Hashing::new(source.open()?);
    io::copy(&mut h, &mut io::sink())?;
    let (sha256, size) = h.finish();
    Ok(FileDigest { sha256, size })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn member_paths_must_stay_inside() {
        for ok in [
            "db/c.bson",
            "dcb-manifest.hot.db.c.json",
            "db/a.b.c.metadata.json",
        ] {
            assert_eq!(check_member_path(ok.as_bytes()).unwrap(), ok);
        }
        for bad in [
            "../x",
            "db/../../etc/passwd",
            "/etc/passwd",
            "\\windows\\x",
            "C:\\x",
            "c:x",
            "db\\..\\..\\x",
            "",
            "a\0b",
        ] {
            assert!(check_member_path(bad.as_bytes()).is_err(), "{bad:?}");
        }
        assert!(check_member_path(&[0xff, b'a']).is_err());
    }
}
