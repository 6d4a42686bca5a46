//! The archive file: a gzip-compressed tar laid out like a mongodump folder, written
//! in one pass while documents stream in.
//!
//! A tar header must state its member's size, which is known only at the end. So the
//! file is three concatenated gzip members (RFC 1952 allows this; `tar xzf` reads it
//! as one stream):
//! 1. the `.bson` member's tar header, as a *stored* (uncompressed) gzip member whose
//!    length is fixed, so its space is reserved first and filled in at the end;
//! 2. the BSON documents and their tar padding, compressed as they arrive;
//! 3. the metadata and manifest members and the end-of-archive blocks.

use std::fs::File;
use std::io::{self, BufWriter, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use flate2::Compression;
use flate2::write::GzEncoder;
use sha2::{Digest, Sha256};

pub use crate::storage::names::hex;

const BLOCK: usize = 512;

/// One member of the archive, as the manifest records it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct MemberInfo {
    pub path: String,
    pub size: u64,
    pub sha256: String,
}

/// Tar header block(s) for a regular file. Paths over 100 bytes get a GNU long-name
/// record first, which GNU tar, bsdtar and the `tar` crate all read.
pub fn tar_header(path: &str, size: u64, mtime: u64) -> Vec<u8> {
    let mut out = Vec::with_capacity(BLOCK * 3);
    let name = path.as_bytes();
    if name.len() > 100 {
        let mut long = tar::Header::new_gnu();
        long.set_entry_type(tar::EntryType::GNULongName);
        long.set_size(name.len() as u64 + 1);
        long.set_mode(0o644);
        long.as_gnu_mut().expect("gnu header").name[..13].copy_from_slice(b"././@LongLink");
        long.set_cksum();
        out.extend_from_slice(long.as_bytes());
        out.extend_from_slice(name);
        out.push(0);
        out.resize(out.len().next_multiple_of(BLOCK), 0);
    }
    let mut h = tar::Header::new_gnu();
    let short = &name[..name.len().min(100)];
    h.as_gnu_mut().expect("gnu header").name[..short.len()].copy_from_slice(short);
    h.set_entry_type(tar::EntryType::Regular);
    h.set_size(size);
    h.set_mode(0o600);
    h.set_mtime(mtime);
    h.set_cksum();
    out.extend_from_slice(h.as_bytes());
    out
}

fn padding(size: u64) -> usize {
    (BLOCK - (size % BLOCK as u64) as usize) % BLOCK
}

/// `data` as a gzip member of stored deflate blocks: its length depends only on
/// `data.len()`, which is what lets the header's space be reserved up front.
fn stored_gzip_member(data: &[u8]) -> Vec<u8> {
    let mut out = vec![0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 0xff];
    let mut chunks = data.chunks(65_535).peekable();
    if chunks.peek().is_none() {
        out.extend_from_slice(&[1, 0, 0, 0xff, 0xff]);
    }
    while let Some(chunk) = chunks.next() {
        let last = u8::from(chunks.peek().is_none());
        let len = chunk.len() as u16;
        out.push(last);
        out.extend_from_slice(&len.to_le_bytes());
        out.extend_from_slice(&(!len).to_le_bytes());
        out.extend_from_slice(chunk);
    }
    let mut crc = flate2::Crc::new();
    crc.update(data);
    out.extend_from_slice(&crc.sum().to_le_bytes());
    out.extend_from_slice(&(data.len() as u32).to_le_bytes());
    out
}

/// Where the compressed stream goes.
enum Sink {
    /// Straight into the archive file, after the reserved header space.
    Plain(BufWriter<File>),
    /// Encrypted archives cannot have their header patched in place, and plaintext
    /// must never reach the disk: the body goes to a spool encrypted to a key that
    /// exists only in memory, and `finish` writes the real file (header first) from it.
    Spool(age::stream::StreamWriter<BufWriter<File>>),
}

impl Write for Sink {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Sink::Plain(w) => w.write(buf),
            Sink::Spool(w) => w.write(buf),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        match self {
            Sink::Plain(w) => w.flush(),
            Sink::Spool(w) => w.flush(),
        }
    }
}

struct Encryption {
    recipients: Vec<age::x25519::Recipient>,
    ephemeral: age::x25519::Identity,
    spool: PathBuf,
}

/// Streams one collection's documents into a temporary archive file.
pub struct ArchiveWriter {
    path: PathBuf,
    bson_path: String,
    mtime: u64,
    /// The leading members' gzip member, written before the `.bson` header.
    lead: Vec<u8>,
    leading: Vec<MemberInfo>,
    header_len: usize,
    body: Option<GzEncoder<Sink>>,
    level: Compression,
    hasher: Sha256,
    bson_bytes: u64,
    encryption: Option<Encryption>,
}

fn age_writer<W: Write>(
    recipients: &[age::x25519::Recipient],
    out: W,
) -> io::Result<age::stream::StreamWriter<W>> {
    age::Encryptor::with_recipients(recipients.iter().map(|r| r as &dyn age::Recipient))
        .map_err(io::Error::other)?
        .wrap_output(out)
}

/// Small members written before the `.bson` member, as one gzip member of their own.
fn leading_member(
    members: &[(String, Vec<u8>)],
    level: Compression,
    mtime: u64,
) -> io::Result<(Vec<u8>, Vec<MemberInfo>)> {
    if members.is_empty() {
        return Ok((Vec::new(), Vec::new()));
    }
    let mut gz = GzEncoder::new(Vec::new(), level);
    let mut info = Vec::new();
    for (path, data) in members {
        gz.write_all(&tar_header(path, data.len() as u64, mtime))?;
        gz.write_all(data)?;
        gz.write_all(&vec![0; padding(data.len() as u64)])?;
        info.push(MemberInfo {
            path: path.clone(),
            size: data.len() as u64,
            sha256: hex(&Sha256::digest(data)),
        });
    }
    Ok((gz.finish()?, info))
}

impl ArchiveWriter {
    /// Create `path` (which must not exist) for the member `bson_path`; with
    /// `recipients`, the file is an age file encrypted to them.
    pub fn create(
        path: &Path,
        bson_path: &str,
        level: u32,
        mtime: u64,
        recipients: &[age::x25519::Recipient],
    ) -> io::Result<Self> {
        Self::create_with(path, bson_path, level, mtime, recipients, &[])
    }

    /// As [`create`](Self::create), with `leading` members before the `.bson` member
    /// (a reader meets them first: a chain archive's deletions are applied before its
    /// documents).
    pub fn create_with(
        path: &Path,
        bson_path: &str,
        level: u32,
        mtime: u64,
        recipients: &[age::x25519::Recipient],
        leading: &[(String, Vec<u8>)],
    ) -> io::Result<Self> {
        let level = Compression::new(level.min(9));
        let (lead, leading) = leading_member(leading, level, mtime)?;
        let placeholder = stored_gzip_member(&tar_header(bson_path, 0, mtime));
        let (sink, encryption) = if recipients.is_empty() {
            let file = crate::storage::create_new(path)?;
            let mut out = BufWriter::with_capacity(1 << 20, file);
            out.write_all(&lead)?;
            out.write_all(&placeholder)?;
            (Sink::Plain(out), None)
        } else {
            let name = path.file_name().unwrap_or_default().to_string_lossy();
            let spool = path.with_file_name(format!("{name}.spool{}", crate::storage::TEMP_MARK));
            let ephemeral = age::x25519::Identity::generate();
            let file = crate::storage::create_new(&spool)?;
            let out = age_writer(
                &[ephemeral.to_public()],
                BufWriter::with_capacity(1 << 20, file),
            )?;
            let encryption = Encryption {
                recipients: recipients.to_vec(),
                ephemeral,
                spool,
            };
            (Sink::Spool(out), Some(encryption))
        };
        Ok(ArchiveWriter {
            path: path.to_path_buf(),
            bson_path: bson_path.to_string(),
            mtime,
            lead,
            leading,
            header_len: placeholder.len(),
            body: Some(GzEncoder::new(sink, level)),
            level,
            hasher: Sha256::new(),
            bson_bytes: 0,
            encryption,
        })
    }

    /// Append raw BSON bytes (whole documents) to the `.bson` member.
    pub fn write_bson(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.hasher.update(bytes);
        self.bson_bytes += bytes.len() as u64;
        self.body.as_mut().expect("open archive").write_all(bytes)
    }

    pub fn bson_bytes(&self) -> u64 {
        self.bson_bytes
    }

    /// Close the `.bson` member, append the other members, fix the header, fsync.
    /// `trailer` gets the `.bson` member's info and returns the members to append.
    pub fn finish(
        self,
        trailer: impl FnOnce(&MemberInfo) -> Vec<(String, Vec<u8>)>,
    ) -> io::Result<Vec<MemberInfo>> {
        self.finish_with(|members| trailer(members.last().expect("the .bson member")))
    }

    /// As [`finish`](Self::finish); `trailer` gets every member so far (the leading
    /// ones, then the `.bson` member).
    pub fn finish_with(
        mut self,
        trailer: impl FnOnce(&[MemberInfo]) -> Vec<(String, Vec<u8>)>,
    ) -> io::Result<Vec<MemberInfo>> {
        let mut body = self.body.take().expect("open archive");
        body.write_all(&vec![0; padding(self.bson_bytes)])?;
        let out = body.finish()?;
        let bson = MemberInfo {
            path: self.bson_path.clone(),
            size: self.bson_bytes,
            sha256: hex(&self.hasher.clone().finalize()),
        };
        let mut members = std::mem::take(&mut self.leading);
        members.push(bson);
        let mut tail = GzEncoder::new(out, self.level);
        for (path, data) in trailer(&members) {
            tail.write_all(&tar_header(&path, data.len() as u64, self.mtime))?;
            tail.write_all(&data)?;
            tail.write_all(&vec![0; padding(data.len() as u64)])?;
            members.push(MemberInfo {
                size: data.len() as u64,
                sha256: hex(&Sha256::digest(&data)),
                path,
            });
        }
        tail.write_all(&[0; BLOCK * 2])?;
        let header = stored_gzip_member(&tar_header(&self.bson_path, self.bson_bytes, self.mtime));
        debug_assert_eq!(header.len(), self.header_len);
        let file = match tail.finish()? {
            Sink::Plain(mut out) => {
                out.seek(SeekFrom::Start(self.lead.len() as u64))?;
                out.write_all(&header)?;
                out.into_inner().map_err(|e| e.into_error())?
            }
            Sink::Spool(spool) => {
                let enc = self
                    .encryption
                    .as_ref()
                    .ok_or_else(|| io::Error::other("no recipients"))?;
                spool.finish()?.flush()?;
                let file = crate::storage::create_new(&self.path)?;
                let mut out = age_writer(&enc.recipients, BufWriter::with_capacity(1 << 20, file))?;
                out.write_all(&self.lead)?;
                out.write_all(&header)?;
                let spooled = io::BufReader::with_capacity(1 << 20, File::open(&enc.spool)?);
                let mut body = age::Decryptor::new_buffered(spooled)
                    .and_then(|d| d.decrypt(std::iter::once(&enc.ephemeral as &dyn age::Identity)))
                    .map_err(io::Error::other)?;
                io::copy(&mut body, &mut out)?;
                out.finish()?.into_inner().map_err(|e| e.into_error())?
            }
        };
        file.sync_all()?;
        Ok(members)
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for ArchiveWriter {
    fn drop(&mut self) {
        if let Some(enc) = &self.encryption {
            let _ = std::fs::remove_file(&enc.spool);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    fn read_members(path: &Path) -> Vec<(String, Vec<u8>)> {
        let file = File::open(path).unwrap();
        let mut ar = tar::Archive::new(flate2::read::MultiGzDecoder::new(file));
        ar.entries()
            .unwrap()
            .map(|e| {
                let mut e = e.unwrap();
                let mut data = Vec::new();
                e.read_to_end(&mut data).unwrap();
                (e.path().unwrap().to_string_lossy().into_owned(), data)
            })
            .collect()
    }

    // What goes in comes out: members, sizes, contents and hashes, for long names and
    // bodies of every padding remainder.
    #[test]
    fn round_trips_through_tar_and_gzip() {
        let dir = tempfile::tempdir().unwrap();
        let long = format!("db/{}.bson", "x".repeat(150));
        for (n, bson_path) in [
            (0usize, "db/c.bson"),
            (1, "db/c.bson"),
            (511, "db/c.bson"),
            (70_000, long.as_str()),
        ] {
            let path = dir.path().join(format!("a{n}.tar.gz"));
            let bson_path = bson_path.to_string();
            let mut w = ArchiveWriter::create(&path, &bson_path, 6, 1_700_000_000, &[]).unwrap();
            let body: Vec<u8> = (0..n).map(|i| (i % 251) as u8).collect();
            for chunk in body.chunks(1000) {
                w.write_bson(chunk).unwrap();
            }
            let members = w
                .finish(|bson| vec![("meta.json".into(), format!("{}", bson.size).into_bytes())])
                .unwrap();
            let got = read_members(&path);
            assert_eq!(got.len(), 2);
            assert_eq!(got[0], (bson_path.clone(), body.clone()));
            assert_eq!(
                got[1],
                ("meta.json".to_string(), n.to_string().into_bytes())
            );
            assert_eq!(members[0].sha256, hex(&Sha256::digest(&body)));
            assert_eq!(members[0].size, n as u64);
        }
    }

    // Leading members come first, then the `.bson` member, then the trailer; the
    // reported members follow the same order; also when encrypted.
    #[test]
    fn leading_members_come_first() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.tar.gz");
        let lead = vec![("dcb-deletions.x.bson".to_string(), b"gone".to_vec())];
        let mut w = ArchiveWriter::create_with(&path, "db/c.bson", 6, 0, &[], &lead).unwrap();
        w.write_bson(&[7; 600]).unwrap();
        let members = w
            .finish(|_| vec![("m.json".into(), b"{}".to_vec())])
            .unwrap();
        let names: Vec<&str> = members.iter().map(|m| m.path.as_str()).collect();
        assert_eq!(names, ["dcb-deletions.x.bson", "db/c.bson", "m.json"]);
        let got = read_members(&path);
        assert_eq!(
            got[0],
            ("dcb-deletions.x.bson".to_string(), b"gone".to_vec())
        );
        assert_eq!(got[1], ("db/c.bson".to_string(), vec![7; 600]));

        let key = age::x25519::Identity::generate();
        let enc = dir.path().join("b.tar.gz.age");
        let mut w =
            ArchiveWriter::create_with(&enc, "db/c.bson", 6, 0, &[key.to_public()], &lead).unwrap();
        w.write_bson(&[7; 600]).unwrap();
        w.finish(|_| Vec::new()).unwrap();
        let file = File::open(&enc).unwrap();
        let plain = age::Decryptor::new(file)
            .unwrap()
            .decrypt(std::iter::once(&key as &dyn age::Identity))
            .unwrap();
        let mut ar = tar::Archive::new(flate2::read::MultiGzDecoder::new(plain));
        let paths: Vec<String> = ar
            .entries()
            .unwrap()
            .map(|e| e.unwrap().path().unwrap().to_string_lossy().into_owned())
            .collect();
        assert_eq!(paths, ["dcb-deletions.x.bson", "db/c.bson"]);
    }

    // The stored member is a valid gzip stream on its own.
    #[test]
    fn stored_member_decodes() {
        for len in [0, 1, 65_535, 65_536, 200_000] {
            let data: Vec<u8> = (0..len).map(|i| (i * 7) as u8).collect();
            let mut out = Vec::new();
            flate2::read::GzDecoder::new(&stored_gzip_member(&data)[..])
                .read_to_end(&mut out)
                .unwrap();
            assert_eq!(out, data);
        }
    }
}
