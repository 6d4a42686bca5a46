//! `dcb verify` on hostile and damaged archives, built here byte by byte: every
//! problem is reported as corruption with a clear message naming the member, never a
//! panic and never a huge allocation. No server needed.

mod support;

use std::io::Write;
use std::path::{Path, PathBuf};

use dcb::crypto::Keys;
use dcb::export::archive::{ArchiveWriter, MemberInfo, hex};
use dcb::export::manifest::Manifest;
use dcb::policy::Mode;
use dcb::storage::Target;
use dcb::storage::local::Local;
use dcb::verify;
use flate2::Compression;
use flate2::write::GzEncoder;
use mongodb::bson::{DateTime, doc};
use sha2::{Digest, Sha256};
use std::sync::Arc;
use support::Scratch;

fn manifest(archive: &str, members: Vec<MemberInfo>, documents: u64, bytes: u64) -> Manifest {
    let to = chrono::DateTime::from_timestamp(1_790_000_000, 0).unwrap();
    Manifest {
        format: 1,
        dcb_version: "test".into(),
        policy: "p".into(),
        database: "mes".into(),
        collection: "scans".into(),
        time_field: "createdAt".into(),
        mode: Mode::Incremental,
        from: None,
        to,
        documents,
        bytes,
        untimed: None,
        members,
        server_version: "test".into(),
        started_at: to,
        finished_at: to,
        archive: archive.into(),
        archive_sha256: None,
        archive_size: None,
        encrypted: false,
        kind: None,
        chain: None,
        changes: None,
        epoch: None,
    }
}

fn info(path: &str, data: &[u8]) -> MemberInfo {
    MemberInfo {
        path: path.into(),
        size: data.len() as u64,
        sha256: hex(&Sha256::digest(data)),
    }
}

fn bson_docs(n: usize) -> Vec<u8> {
    let mut out = Vec::new();
    for i in 0..n {
        doc! {"_id": i as i64, "createdAt": DateTime::from_millis(1_700_000_000_000 + i as i64), "s": "x".repeat(i % 50)}
            .to_writer(&mut out)
            .unwrap();
    }
    out
}

/// A good archive as dcb writes it, with its manifest beside it.
fn good_archive(dir: &Path, n: usize) -> (PathBuf, Manifest) {
    good_archive_to(dir, n, &[])
}

/// The same, encrypted to `recipients` when there are any.
fn good_archive_to(
    dir: &Path,
    n: usize,
    recipients: &[age::x25519::Recipient],
) -> (PathBuf, Manifest) {
    let ext = if recipients.is_empty() {
        "tar.gz"
    } else {
        "tar.gz.age"
    };
    let path = dir.join(format!("20261101T000000.000Z_mes.scans.{ext}"));
    let bson = bson_docs(n);
    let meta = br#"{"indexes":[{"v":2,"key":{"_id":1},"name":"_id_"}],"collectionName":"scans","type":"collection"}"#.to_vec();
    let mut w =
        ArchiveWriter::create(&path, "mes/scans.bson", 6, 1_790_000_000, recipients).unwrap();
    w.write_bson(&bson).unwrap();
    let mut m = manifest(
        path.file_name().unwrap().to_str().unwrap(),
        vec![
            info("mes/scans.bson", &bson),
            info("mes/scans.metadata.json", &meta),
        ],
        n as u64,
        bson.len() as u64,
    );
    m.encrypted = !recipients.is_empty();
    let inner = m.clone();
    w.finish(|_| {
        vec![
            ("mes/scans.metadata.json".into(), meta.clone()),
            (Manifest::member_path("p", "mes", "scans"), inner.to_json()),
        ]
    })
    .unwrap();
    let digest = dcb::unpack::file_digest(&path).unwrap();
    m.archive_sha256 = Some(digest.sha256);
    m.archive_size = Some(digest.size);
    std::fs::write(Manifest::beside(&path), m.to_json()).unwrap();
    (path, m)
}

enum Entry<'a> {
    File(&'a [u8], &'a [u8]),
    Symlink(&'a [u8], &'a str),
    /// A GNU long-name record claiming `size` bytes, holding `name`.
    LongName(&'a [u8], u64),
    Dir(&'a [u8]),
}

/// A tar.gz with exactly these entries; names are written raw, so they may be hostile.
fn raw_archive(path: &Path, entries: &[Entry]) {
    let mut gz = GzEncoder::new(std::fs::File::create(path).unwrap(), Compression::fast());
    for e in entries {
        let mut h = tar::Header::new_old();
        let (name, data): (&[u8], &[u8]) = match e {
            Entry::File(name, data) => {
                h.set_entry_type(tar::EntryType::Regular);
                h.set_size(data.len() as u64);
                (name, data)
            }
            Entry::Symlink(name, target) => {
                h.set_entry_type(tar::EntryType::Symlink);
                h.set_size(0);
                h.set_link_name(target).unwrap();
                (name, &[])
            }
            Entry::LongName(name, size) => {
                h.set_entry_type(tar::EntryType::GNULongName);
                h.set_size(*size);
                (b"././@LongLink", name)
            }
            Entry::Dir(name) => {
                h.set_entry_type(tar::EntryType::Directory);
                h.set_size(0);
                (name, &[])
            }
        };
        h.as_old_mut().name[..name.len()].copy_from_slice(name);
        h.set_mode(0o600);
        h.set_cksum();
        gz.write_all(h.as_bytes()).unwrap();
        gz.write_all(data).unwrap();
        gz.write_all(&vec![0; (512 - data.len() % 512) % 512])
            .unwrap();
    }
    gz.write_all(&[0; 1024]).unwrap();
    gz.finish().unwrap();
}

fn messages(r: &verify::Report) -> String {
    r.problems
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("\n")
}

#[test]
fn a_good_archive_verifies() {
    let dir = tempfile::tempdir().unwrap();
    let (path, m) = good_archive(dir.path(), 40);
    let r = verify::check(&path, Some(&m), 5, &Keys::default());
    assert!(r.ok(), "{}", messages(&r));
    assert_eq!(r.documents, 40);
    assert_eq!(r.sample.len(), 5);
    assert_eq!(r.metadata.unwrap()["collectionName"], "scans");
    // Without the manifest beside it, the copy inside is used.
    let r = verify::check(&path, None, 0, &Keys::default());
    assert!(r.ok(), "{}", messages(&r));
    assert_eq!(r.manifest.unwrap().documents, 40);
}

// Every single byte of the file, flipped in turn, is caught; each report names where.
#[test]
fn a_flipped_byte_anywhere_is_caught() {
    let dir = tempfile::tempdir().unwrap();
    let (path, m) = good_archive(dir.path(), 30);
    let good = std::fs::read(&path).unwrap();
    let bad_path = dir.path().join("bad.tar.gz");
    let mut named = std::collections::BTreeSet::new();
    for at in 0..good.len() {
        let mut bytes = good.clone();
        bytes[at] ^= 0x01;
        std::fs::write(&bad_path, &bytes).unwrap();
        let r = verify::check(&bad_path, Some(&m), 0, &Keys::default());
        assert!(
            !r.ok(),
            "a flip at byte {at} of {} went unnoticed",
            good.len()
        );
        for p in &r.problems {
            assert!(!p.member.is_empty() && !p.message.is_empty());
            named.insert(p.member.clone());
        }
    }
    for member in ["mes/scans.bson", "mes/scans.metadata.json", "archive file"] {
        assert!(named.contains(member), "{member} never named: {named:?}");
    }
}

/// What each gzip member of `bytes` holds, decoded with flate2 member after member
/// (each member's CRC-32 and length checked), and where each starts; `None` when
/// the bytes are not a sequence of whole gzip members. A dcb archive is three.
fn gzip_members(bytes: &[u8]) -> Option<Vec<(usize, Vec<u8>)>> {
    use std::io::Read;
    let mut members = Vec::new();
    let mut rest = bytes;
    while !rest.is_empty() {
        let start = bytes.len() - rest.len();
        let mut d = flate2::bufread::GzDecoder::new(rest);
        let mut out = Vec::new();
        d.read_to_end(&mut out).ok()?;
        rest = d.into_inner();
        members.push((start, out));
    }
    Some(members)
}

/// The header bytes of a gzip member that carry no data (RFC 1952 2.3.1), as offsets
/// from the member's start: FLG (whose FTEXT bit is a hint decoders ignore), MTIME,
/// XFL and OS.
const DATALESS_GZIP_HEADER: std::ops::RangeInclusive<usize> = 3..=9;

// Without any hash of the whole file (only the manifest inside the archive, as for a
// copy found elsewhere), a flip of any single bit, at every byte, is still caught by
// the gzip, tar, member and BSON checks, unless the file still decodes to exactly the
// same members: a gzip header field that carries no data (timestamp, extra flags, OS,
// the text hint), or one of the rare deflate bits whose flip decodes the same.
#[test]
fn a_flipped_byte_is_caught_without_the_file_hash() {
    let dir = tempfile::tempdir().unwrap();
    let (path, m) = good_archive(dir.path(), 30);
    assert!(
        m.archive_sha256.is_some(),
        "the beside manifest has the hash"
    );
    let good = std::fs::read(&path).unwrap();
    let members = gzip_members(&good).unwrap();
    let starts: Vec<usize> = members.iter().map(|(s, _)| *s).collect();
    let content: Vec<&Vec<u8>> = members.iter().map(|(_, c)| c).collect();
    assert_eq!(starts.len(), 3, "dcb writes three gzip members: {starts:?}");
    let in_header = |at: usize| {
        starts
            .iter()
            .any(|s| DATALESS_GZIP_HEADER.contains(&(at.wrapping_sub(*s))))
    };
    let bad_path = dir.path().join("bad.tar.gz");
    let (mut caught, mut header, mut same_deflate) = (0, Vec::new(), Vec::new());
    for mask in [0x01u8, 0x80] {
        for at in 0..good.len() {
            let mut bytes = good.clone();
            bytes[at] ^= mask;
            std::fs::write(&bad_path, &bytes).unwrap();
            let r = verify::check(&bad_path, None, 0, &Keys::default());
            if !r.ok() {
                assert!(r.corrupt(), "flip at {at}: {}", messages(&r));
                caught += 1;
                continue;
            }
            // Unnoticed: allowed only when the file holds exactly what it held.
            let decoded = gzip_members(&bytes);
            let same = decoded.as_ref().is_some_and(|d| {
                d.len() == content.len() && d.iter().zip(&content).all(|((_, a), b)| a == *b)
            });
            assert!(
                same,
                "a flip ({mask:#04x}) at byte {at} of {} went unnoticed without the file \
                 hash, and the file no longer holds the same members; gzip members start \
                 at {starts:?}",
                good.len()
            );
            assert_eq!(r.documents, 30);
            if in_header(at) {
                header.push((at, mask));
            } else {
                same_deflate.push((at, mask));
            }
        }
    }
    // The test knows where the headers are: their timestamps are among the flips
    // that pass (else it would allow the wrong bytes).
    for s in &starts {
        assert!(header.contains(&(s + 4, 0x01)), "{header:?}");
    }
    // Flips that decode the same are the exception, not a hole.
    assert!(
        same_deflate.len() * 100 < caught,
        "{} flips outside the gzip headers decoded the same, {caught} were caught: {same_deflate:?}",
        same_deflate.len()
    );
    eprintln!(
        "{caught} flips caught; unnoticed: {} in gzip header fields without data, {} in \
         deflate data that decodes the same",
        header.len(),
        same_deflate.len()
    );
}

/// The uncompressed tar stream of a dcb archive.
fn untar_stream(gz: &[u8]) -> Vec<u8> {
    gzip_members(gz)
        .unwrap()
        .into_iter()
        .flat_map(|(_, c)| c)
        .collect()
}

/// One tar entry, found by walking the headers here, without dcb: its header's
/// offset, name, and data range.
struct TarEntry {
    header: usize,
    name: String,
    data: std::ops::Range<usize>,
}

fn tar_entries(tar: &[u8]) -> Vec<TarEntry> {
    let mut out = Vec::new();
    let mut at = 0;
    while at + 512 <= tar.len() && tar[at..at + 512].iter().any(|&b| b != 0) {
        let h = &tar[at..at + 512];
        let name_end = h[..100].iter().position(|&b| b == 0).unwrap_or(100);
        let name = String::from_utf8_lossy(&h[..name_end]).into_owned();
        let size_field = std::str::from_utf8(&h[124..136]).unwrap();
        let size = u64::from_str_radix(size_field.trim_matches(|c| c == '\0' || c == ' '), 8)
            .unwrap() as usize;
        let data = at + 512..at + 512 + size;
        at = at + 512 + size.next_multiple_of(512);
        out.push(TarEntry {
            header: data.start - 512,
            name,
            data,
        });
    }
    out
}

// The checks inside the gzip stream, proven on their own: every byte of the
// uncompressed tar flipped in turn (and compressed again, so gzip sees nothing wrong),
// with the manifest beside it but no hash of the whole file. Each flip is caught by
// the tar header checksum, a member's size or SHA-256, the BSON count or the
// comparison of the manifests; the only flips that pass change nothing: the tar's
// padding, the checksum field after its terminator, or a manifest inside that still
// reads as the same manifest (a renamed field that holds its default).
#[test]
fn a_flipped_byte_inside_the_gzip_stream_is_caught_by_the_inner_checks() {
    let dir = tempfile::tempdir().unwrap();
    let (path, mut m) = good_archive(dir.path(), 8);
    m.archive_sha256 = None;
    m.archive_size = None;
    let tar = untar_stream(&std::fs::read(&path).unwrap());
    let entries = tar_entries(&tar);
    let names: Vec<&str> = entries.iter().map(|e| e.name.as_str()).collect();
    assert_eq!(
        names,
        [
            "mes/scans.bson",
            "mes/scans.metadata.json",
            "dcb-manifest.p.mes.scans.json"
        ]
    );
    let manifest_member = &entries[2];
    let inner: Manifest = serde_json::from_slice(&tar[manifest_member.data.clone()]).unwrap();
    // Where a flip carries nothing: padding after each member, the checksum's tail.
    let carries_nothing = |at: usize| {
        entries.iter().any(|e| {
            let chksum_tail = (e.header + 148..e.header + 156)
                .skip_while(|&i| tar[i] != 0)
                .skip(1);
            (e.data.end..e.data.end.next_multiple_of(512)).contains(&at)
                || chksum_tail.clone().any(|i| i == at)
        })
    };
    let bad_path = dir.path().join("bad.tar.gz");
    let gz = |data: &[u8]| {
        let mut e = GzEncoder::new(Vec::new(), Compression::none());
        e.write_all(data).unwrap();
        e.finish().unwrap()
    };
    std::fs::write(&bad_path, gz(&tar)).unwrap();
    let r = verify::check(&bad_path, Some(&m), 0, &Keys::default());
    assert!(r.ok(), "recompressed unchanged: {}", messages(&r));
    let mut named = std::collections::BTreeSet::new();
    for at in 0..tar.len() {
        let mut bytes = tar.clone();
        bytes[at] ^= 0x01;
        std::fs::write(&bad_path, gz(&bytes)).unwrap();
        let r = verify::check(&bad_path, Some(&m), 0, &Keys::default());
        if r.ok() {
            let same_manifest = manifest_member.data.contains(&at)
                && serde_json::from_slice::<Manifest>(&bytes[manifest_member.data.clone()])
                    .is_ok_and(|x| x == inner);
            assert!(
                carries_nothing(at) || same_manifest,
                "a flip at byte {at} of the {}-byte tar went unnoticed",
                tar.len()
            );
            continue;
        }
        for p in &r.problems {
            named.insert(format!(
                "{}: {}",
                p.member,
                p.message.split(';').next().unwrap()
            ));
        }
    }
    let named: Vec<String> = named.into_iter().collect();
    let seen = |what: &str| named.iter().any(|n| n.contains(what));
    // Each kind of check caught something.
    for what in [
        "checksum",
        "mes/scans.bson: SHA-256 is",
        "mes/scans.metadata.json: SHA-256 is",
        "differs from the manifest beside the archive",
    ] {
        assert!(seen(what), "no flip was caught by {what:?}: {named:#?}");
    }
}

// A file cut anywhere (every 7th length) is reported as truncated, whether the
// manifest beside it has the file's hash, has none, or only the copy inside is there:
// the cut itself is found, not only a hash mismatch. Cut exactly where a gzip member
// ends, the tar stream ends cleanly too; then the members after the cut are missing,
// and are named so.
#[test]
fn truncated_archives_are_corrupt() {
    let dir = tempfile::tempdir().unwrap();
    let (path, m) = good_archive(dir.path(), 200);
    let mut no_hash = m.clone();
    no_hash.archive_sha256 = None;
    no_hash.archive_size = None;
    let good = std::fs::read(&path).unwrap();
    let ends: Vec<usize> = gzip_members(&good)
        .unwrap()
        .iter()
        .map(|(s, _)| *s)
        .skip(1)
        .collect();
    assert_eq!(ends.len(), 2);
    let modes = [
        ("with the file hash", Some(&m)),
        ("without the file hash", Some(&no_hash)),
        ("with only the manifest inside", None),
    ];
    let mut cuts: Vec<usize> = (0..good.len()).step_by(7).collect();
    cuts.push(good.len() - 1);
    for keep in cuts.into_iter().filter(|k| !ends.contains(k)) {
        std::fs::write(&path, &good[..keep]).unwrap();
        for (what, beside) in modes {
            let text = messages(&verify::check(&path, beside, 0, &Keys::default()));
            // The decoder says "truncated"; the tar reader, cut at a gzip member's
            // end while skipping a member's padding, "unexpected EOF".
            assert!(
                text.contains("the archive ends early (truncated)")
                    || text.contains("unreadable: unexpected EOF"),
                "cut at {keep} of {}, {what}: {text}",
                good.len()
            );
            assert!(!text.contains("SHA-256"), "cut at {keep}, {what}: {text}");
        }
    }
    // At the end of the header member the next tar header is cut; at the end of the
    // documents' member the metadata and the manifest are gone.
    std::fs::write(&path, &good[..ends[0]]).unwrap();
    for (what, beside) in modes {
        let text = messages(&verify::check(&path, beside, 0, &Keys::default()));
        assert!(
            text.contains("the tar header after mes/scans.bson: unreadable: unexpected EOF"),
            "{what}: {text}"
        );
    }
    std::fs::write(&path, &good[..ends[1]]).unwrap();
    for (what, beside) in &modes[..2] {
        let text = messages(&verify::check(&path, *beside, 0, &Keys::default()));
        assert!(
            text.contains("mes/scans.metadata.json: is missing from the archive")
                && text.contains("dcb-manifest.p.mes.scans.json: is missing from the archive"),
            "{what}: {text}"
        );
    }
    let text = messages(&verify::check(&path, None, 0, &Keys::default()));
    assert!(text.contains("none inside it"), "{text}");
}

#[test]
fn hostile_members_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("a.tar.gz");
    let bson = bson_docs(3);
    let m = manifest(
        "a.tar.gz",
        vec![info("mes/scans.bson", &bson)],
        3,
        bson.len() as u64,
    );
    let cases: Vec<(Vec<Entry>, &str)> = vec![
        (vec![Entry::File(b"../../evil.bson", &bson)], "escapes"),
        (vec![Entry::File(b"/etc/cron.d/x", b"x")], "absolute"),
        (vec![Entry::File(b"C:\\x.bson", b"x")], "absolute"),
        (
            vec![Entry::Symlink(b"mes/scans.bson", "/etc/passwd")],
            "Symlink",
        ),
        (
            vec![
                Entry::File(b"mes/scans.bson", &bson),
                Entry::File(b"mes/scans.bson", &bson),
            ],
            "twice",
        ),
        (
            vec![
                Entry::File(b"mes/scans.bson", &bson),
                Entry::File(b"mes/extra.txt", b"hi"),
            ],
            "unexpected member",
        ),
        // A long name that escapes, given the way GNU tar gives long names.
        (
            vec![
                Entry::LongName(b"mes/../../../../etc/evil.bson\0", 30),
                Entry::File(b"short", &bson),
            ],
            "escapes",
        ),
        // A long-name record claiming a gigabyte is refused before it is read.
        (
            vec![Entry::LongName(b"x", 1 << 30)],
            "long-name record of 1073741824 bytes",
        ),
        (vec![Entry::Dir(b"mes/")], "Directory entry"),
    ];
    for (entries, want) in cases {
        raw_archive(&path, &entries);
        let r = verify::check(&path, Some(&m), 0, &Keys::default());
        let text = messages(&r);
        assert!(!r.ok());
        assert!(text.contains(want), "want {want:?} in:\n{text}");
    }
}

#[test]
fn hostile_bson_is_refused_without_allocating() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("a.tar.gz");
    let good = bson_docs(2);
    let mut huge = good.clone();
    huge.extend_from_slice(&i32::MAX.to_le_bytes());
    huge.extend_from_slice(&[0; 64]);
    let mut past_end = good.clone();
    past_end.extend_from_slice(&1000i32.to_le_bytes());
    past_end.extend_from_slice(&[1; 20]);
    let mut negative = good.clone();
    negative.extend_from_slice(&(-7i32).to_le_bytes());
    for (data, want) in [
        (&huge, "impossible length prefix (2147483647"),
        (&past_end, "cut short"),
        (&negative, "impossible length prefix (-7"),
    ] {
        let m = manifest(
            "a.tar.gz",
            vec![info("mes/scans.bson", data)],
            3,
            data.len() as u64,
        );
        raw_archive(&path, &[Entry::File(b"mes/scans.bson", data)]);
        let r = verify::check(&path, Some(&m), 0, &Keys::default());
        let text = messages(&r);
        assert!(
            text.contains("mes/scans.bson") && text.contains(want),
            "want {want:?} in:\n{text}"
        );
        assert!(text.contains("after 2 good documents"), "{text}");
    }
}

#[test]
fn a_manifest_that_lies_is_caught() {
    let dir = tempfile::tempdir().unwrap();
    let (path, m) = good_archive(dir.path(), 10);
    // Counts.
    let lie = Manifest {
        documents: 11,
        ..m.clone()
    };
    let text = messages(&verify::check(&path, Some(&lie), 0, &Keys::default()));
    assert!(
        text.contains("holds 10 documents; the manifest says 11"),
        "{text}"
    );
    // A member's hash.
    let mut lie = m.clone();
    lie.members[1].sha256 = "0".repeat(64);
    let text = messages(&verify::check(&path, Some(&lie), 0, &Keys::default()));
    assert!(text.contains("mes/scans.metadata.json: SHA-256"), "{text}");
    // A member that is not there.
    let mut lie = m.clone();
    lie.members.push(info("mes/other.bson", b""));
    let text = messages(&verify::check(&path, Some(&lie), 0, &Keys::default()));
    assert!(text.contains("mes/other.bson: is missing"), "{text}");
}

// The command line: exit 1 and the member named; the manifest beside the archive is
// found from the archive's path; a manifest naming a path outside its folder is refused.
#[test]
fn verify_command_reports_and_exits() {
    let s = Scratch::new();
    let dir = s.path().join("backups/p");
    std::fs::create_dir_all(&dir).unwrap();
    let (path, _) = good_archive(&dir, 25);
    let run = s.run(&["verify", path.to_str().unwrap()]);
    assert_eq!(run.code, 0, "{}{}", run.stdout, run.stderr);
    assert!(run.stdout.contains("(25 documents)"), "{}", run.stdout);
    let run = s.run(&["verify"]);
    assert_eq!(run.code, 0, "{}{}", run.stdout, run.stderr);
    assert!(
        run.stdout.contains("1 archive checked: 1 ok"),
        "{}",
        run.stdout
    );

    let mut bytes = std::fs::read(&path).unwrap();
    let n = bytes.len();
    bytes[n / 2] ^= 0xff;
    std::fs::write(&path, bytes).unwrap();
    let run = s.run(&["verify", "--policy", "p"]);
    assert_eq!(run.code, 1, "{}{}", run.stdout, run.stderr);
    assert!(
        run.stdout
            .contains("CORRUPT  p/20261101T000000.000Z_mes.scans.tar.gz"),
        "{}",
        run.stdout
    );

    let evil = manifest("../../outside.tar.gz", vec![], 0, 0);
    std::fs::write(dir.join("evil.manifest.json"), evil.to_json()).unwrap();
    let run = s.run(&["verify", "--json"]);
    assert_eq!(run.code, 1);
    let v: serde_json::Value = serde_json::from_str(&run.stdout).unwrap();
    assert!(
        v["brokenManifests"][0]["problem"]
            .as_str()
            .unwrap()
            .contains("outside its folder"),
        "{v:#}"
    );
}

/// An identity file for a new key, and the key's recipient.
fn new_identity(dir: &Path, name: &str) -> (PathBuf, age::x25519::Recipient) {
    use age::secrecy::ExposeSecret;
    let id = age::x25519::Identity::generate();
    let path = dir.join(name);
    std::fs::write(
        &path,
        format!("# test key\n{}\n", id.to_string().expose_secret()),
    )
    .unwrap();
    (path, id.to_public())
}

// Encrypted archives verify with the right identity, fail clearly with none or the
// wrong one, and every flipped byte is still caught.
#[test]
fn encrypted_archives_verify_with_the_identity() {
    let dir = tempfile::tempdir().unwrap();
    let (key, recipient) = new_identity(dir.path(), "key.txt");
    let (other_key, _) = new_identity(dir.path(), "other.txt");
    let (path, m) = good_archive_to(dir.path(), 20, &[recipient]);
    let bytes = std::fs::read(&path).unwrap();
    assert!(bytes.starts_with(b"age-encryption.org/v1"));
    assert!(
        !contains(&bytes, b"mes/scans.bson"),
        "plaintext in an encrypted archive"
    );
    let keys = Keys::load(&key).unwrap();
    let r = verify::check(&path, Some(&m), 3, &keys);
    assert!(r.ok(), "{}", messages(&r));
    assert_eq!(r.documents, 20);
    assert_eq!(r.sample.len(), 3);

    // No identity, or one that opens nothing: a key problem, not corruption.
    let r = verify::check(&path, Some(&m), 0, &Keys::default());
    assert!(!r.ok() && !r.corrupt(), "{}", messages(&r));
    assert_eq!(r.locked(), Some(&verify::KeyError::Missing));
    assert!(r.locked().unwrap().to_string().contains("--identity"));
    let r = verify::check(&path, Some(&m), 0, &Keys::load(&other_key).unwrap());
    assert!(!r.corrupt(), "{}", messages(&r));
    assert!(
        matches!(r.locked(), Some(verify::KeyError::NoMatch(f)) if f.ends_with("other.txt")),
        "{:?}",
        r.key_error
    );
    // Without the manifest beside it, still a key problem (nothing says it is damaged).
    let r = verify::check(&path, None, 0, &Keys::load(&other_key).unwrap());
    assert!(r.locked().is_some() && !r.corrupt(), "{}", messages(&r));
    // The service without an identity checks the file hash, and says that is all.
    let mut locked = Keys::default();
    locked.hash_only_when_locked = true;
    let r = verify::check(&path, Some(&m), 0, &locked);
    assert!(r.ok(), "{}", messages(&r));
    assert_eq!(r.checked, verify::Checked::Hash);
    assert_eq!(
        verify::check(&path, Some(&m), 0, &keys).checked,
        verify::Checked::Full
    );

    let bad = dir.path().join("bad.tar.gz.age");
    for at in (0..bytes.len()).step_by(7) {
        let mut b = bytes.clone();
        b[at] ^= 0x04;
        std::fs::write(&bad, &b).unwrap();
        // A flip in a recipient stanza looks like a wrong key to age; the file hash
        // beside the archive still calls it damage, with any keys or none.
        for (what, k) in [
            ("identity", &keys),
            ("hash only", &locked),
            ("no identity", &Keys::default()),
        ] {
            let r = verify::check(&bad, Some(&m), 0, k);
            assert!(r.corrupt() && r.locked().is_none(), "flip at {at} ({what})");
        }
    }
    // Bytes appended after the end are noticed (age then reads its last chunk as a
    // middle one, which fails to decrypt; or the hash differs).
    let mut b = bytes.clone();
    b.extend_from_slice(b"tail");
    std::fs::write(&bad, &b).unwrap();
    let text = messages(&verify::check(&bad, Some(&m), 0, &keys));
    assert!(
        text.contains("follow the end") || text.contains("SHA-256") || text.contains("decryption"),
        "{text}"
    );
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

mod fuzz {
    use super::*;
    use proptest::prelude::*;
    use std::collections::BTreeMap;

    /// Every file under `dir` with the SHA-256 of its content, but for what a reader
    /// may write: the logs and the readers' lock.
    fn tree(dir: &Path) -> BTreeMap<PathBuf, String> {
        let mut out = BTreeMap::new();
        for e in std::fs::read_dir(dir).unwrap().flatten() {
            let p = e.path();
            if p.ends_with("backups/logs") || p.ends_with(".dcb.readers.lock") {
                continue;
            }
            if p.is_dir() {
                out.extend(tree(&p));
            } else {
                out.insert(p.clone(), hex(&Sha256::digest(std::fs::read(&p).unwrap())));
            }
        }
        out
    }

    /// Strings a hostile manifest may hold where a name or path goes.
    fn hostile() -> impl Strategy<Value = String> {
        prop_oneof![
            Just("../outside/x".to_string()),
            Just("../../etc/passwd".to_string()),
            Just("/etc/passwd".to_string()),
            Just("C:\\x".to_string()),
            Just("a\0b".to_string()),
            Just(String::new()),
            Just(".".to_string()),
            (1usize..6000).prop_map(|n| "a".repeat(n)),
            ".{0,40}",
        ]
    }

    /// A member's path, size and hash; `None` keeps the real member's.
    type MemberLie = (Option<String>, Option<u64>, Option<String>);

    /// What a lying manifest changes; `None` keeps the truth.
    #[derive(Debug, Clone)]
    struct Lie {
        archive: Option<u8>,
        archive_text: String,
        members: Option<Vec<MemberLie>>,
        documents: Option<u64>,
        bytes: Option<u64>,
        policy: Option<String>,
        database: Option<String>,
        collection: Option<String>,
        time_field: Option<String>,
        archive_sha256: Option<Option<String>>,
        archive_size: Option<Option<u64>>,
        to: Option<i64>,
        encrypted: Option<bool>,
    }

    impl Lie {
        fn apply(&self, truth: &Manifest, bait: &Path) -> Manifest {
            let mut m = truth.clone();
            match self.archive {
                None => {}
                Some(0) => m.archive = format!("../outside/{}", truth.archive),
                Some(1) => m.archive = bait.display().to_string(),
                Some(2) => m.archive = format!("./{}", truth.archive),
                Some(3) => m.archive = format!("{}\0", truth.archive),
                Some(_) => m.archive = self.archive_text.clone(),
            }
            if let Some(members) = &self.members {
                m.members = members
                    .iter()
                    .enumerate()
                    .map(|(i, (path, size, sha))| {
                        let real = &truth.members[i % truth.members.len()];
                        MemberInfo {
                            path: path.clone().unwrap_or_else(|| real.path.clone()),
                            size: size.unwrap_or(real.size),
                            sha256: sha.clone().unwrap_or_else(|| real.sha256.clone()),
                        }
                    })
                    .collect();
            }
            let set = |field: &mut String, v: &Option<String>| {
                if let Some(v) = v {
                    *field = v.clone();
                }
            };
            set(&mut m.policy, &self.policy);
            set(&mut m.database, &self.database);
            set(&mut m.collection, &self.collection);
            set(&mut m.time_field, &self.time_field);
            m.documents = self.documents.unwrap_or(m.documents);
            m.bytes = self.bytes.unwrap_or(m.bytes);
            if let Some(v) = &self.archive_sha256 {
                m.archive_sha256 = v.clone();
            }
            if let Some(v) = self.archive_size {
                m.archive_size = v;
            }
            if let Some(secs) = self.to {
                m.to = chrono::DateTime::from_timestamp(secs, 0).unwrap();
            }
            m.encrypted = self.encrypted.unwrap_or(m.encrypted);
            m
        }
    }

    /// A field lied about now and then, so that lies of one field alone are common.
    fn rare<T: std::fmt::Debug>(s: impl Strategy<Value = T>) -> impl Strategy<Value = Option<T>> {
        prop::option::weighted(0.15, s)
    }

    fn lying_manifest() -> impl Strategy<Value = Lie> {
        let member = (
            prop::option::of(prop_oneof![
                hostile(),
                Just("mes/scans.bson".to_string()),
                Just("mes/scans.metadata.json".to_string()),
            ]),
            prop::option::of(prop_oneof![Just(0u64), Just(u64::MAX), any::<u64>()]),
            prop::option::of(prop_oneof![hostile(), "[0-9a-f]{64}"]),
        );
        (
            (
                rare(0u8..6),
                hostile(),
                rare(prop::collection::vec(member, 0..5)),
                rare(prop_oneof![
                    Just(0u64),
                    Just(11),
                    Just(13),
                    Just(u64::MAX),
                    any::<u64>()
                ]),
                rare(any::<u64>()),
            ),
            (
                rare(hostile()),
                rare(hostile()),
                rare(hostile()),
                rare(hostile()),
            ),
            (
                rare(prop::option::of(prop_oneof![hostile(), "[0-9a-f]{64}"])),
                rare(prop::option::of(any::<u64>())),
                rare(0i64..4_000_000_000),
                rare(any::<bool>()),
            ),
        )
            .prop_map(
                |(
                    (archive, archive_text, members, documents, bytes),
                    (policy, database, collection, time_field),
                    (archive_sha256, archive_size, to, encrypted),
                )| Lie {
                    archive,
                    archive_text,
                    members,
                    documents,
                    bytes,
                    policy,
                    database,
                    collection,
                    time_field,
                    archive_sha256,
                    archive_size,
                    to,
                    encrypted,
                },
            )
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 200, ..ProptestConfig::default() })]

        // Any damage (flips, cuts, inserted bytes) is reported, never a panic.
        #[test]
        fn damaged_archives_never_panic(
            edits in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>(), 0u8..3), 1..6),
            cut in prop::option::of(any::<prop::sample::Index>()),
        ) {
            let dir = tempfile::tempdir().unwrap();
            let (path, m) = good_archive(dir.path(), 15);
            let mut bytes = std::fs::read(&path).unwrap();
            let original = bytes.clone();
            for (at, value, kind) in edits {
                let i = at.index(bytes.len());
                match kind {
                    0 => bytes[i] ^= value | 1,
                    1 => bytes.insert(i, value),
                    _ => { bytes.remove(i); }
                }
            }
            if let Some(c) = cut {
                bytes.truncate(c.index(bytes.len()));
            }
            std::fs::write(&path, &bytes).unwrap();
            let r = verify::check(&path, Some(&m), 2, &Keys::default());
            prop_assert_eq!(r.ok(), bytes == original, "{}", messages(&r));
            // Without the manifest beside it, the copy inside is all there is: only a
            // file that differs in gzip header fields without data may pass.
            let r = verify::check(&path, None, 2, &Keys::default());
            let same = |a: &[u8], b: &[u8]| {
                let members = |x: &[u8]| {
                    gzip_members(x).map(|m| m.into_iter().map(|(_, c)| c).collect::<Vec<_>>())
                };
                members(a).is_some() && members(a) == members(b)
            };
            if r.ok() {
                prop_assert!(
                    same(&bytes, &original),
                    "damage that changes what the archive holds passed without the file hash"
                );
            } else {
                prop_assert!(bytes != original, "{}", messages(&r));
                prop_assert!(r.corrupt(), "{}", messages(&r));
            }
        }

        // Arbitrary bytes as a `.bson` stream: documents or an error, never a panic.
        #[test]
        fn arbitrary_bson_streams_never_panic(data in prop::collection::vec(any::<u8>(), 0..2048)) {
            let mut r = dcb::bson_stream::BsonReader::new(&data[..]);
            for _ in 0..1000 {
                match r.next_document() {
                    Ok(Some(_)) => {}
                    Ok(None) | Err(_) => break,
                }
            }
        }

        // Parseable manifests that lie in any field (hostile archive names and member
        // paths, absurd counts, odd names and hashes) beside a good archive: each is
        // reported by scan, verify and `dcb verify`, never a panic, and nothing
        // outside the backup root is read as an archive or written.
        #[test]
        fn lying_manifests_are_reported_and_stay_inside(lie in lying_manifest()) {
            let s = Scratch::new();
            let dir = s.path().join("backups/p");
            std::fs::create_dir_all(&dir).unwrap();
            let (good, truth) = good_archive(&dir, 12);
            // A good archive outside the root, for a lying manifest to point at.
            let outside = s.path().join("outside");
            std::fs::create_dir(&outside).unwrap();
            let bait = outside.join(&truth.archive);
            std::fs::copy(&good, &bait).unwrap();
            let m = lie.apply(&truth, &bait);
            // Leaving out the whole file's hash or size is no lie (older manifests did).
            let mut filled = m.clone();
            filled.archive_sha256 = filled.archive_sha256.or(truth.archive_sha256.clone());
            filled.archive_size = filled.archive_size.or(truth.archive_size);
            let honest = filled == truth;
            std::fs::write(Manifest::beside(&good), m.to_json()).unwrap();
            let before = tree(s.path());

            let target: Arc<dyn Target> = Arc::new(Local::new(s.path().join("backups")));
            let (found, broken) = dcb::catalog::scan_all(&target);
            prop_assert_eq!(found.len() + broken.len(), 1);
            for f in &found {
                let path = f.archive.local_path().unwrap();
                prop_assert_eq!(&path, &dir.join(&m.archive));
                prop_assert!(path.starts_with(&dir));
                let r = verify::check(&f.archive, Some(&f.manifest), 2, &Keys::default());
                prop_assert_eq!(r.ok(), honest, "{}", messages(&r));
            }
            // The comparison itself, whatever the manifest names as its archive.
            let r = verify::check(&good, Some(&m), 2, &Keys::default());
            prop_assert_eq!(r.ok(), honest, "{}", messages(&r));

            let run = s.run(&["verify", "--json"]);
            prop_assert_eq!(run.code, if honest { 0 } else { 1 }, "{}{}", run.stdout, run.stderr);
            let v: serde_json::Value = serde_json::from_str(&run.stdout).unwrap();
            let reported = v["archives"].as_array().unwrap().len()
                + v["brokenManifests"].as_array().unwrap().len();
            prop_assert_eq!(reported, 1, "{:#}", v);
            prop_assert!(!run.stderr.contains("panicked"), "{}", run.stderr);
            // Nothing else was written, inside the root or out.
            prop_assert_eq!(before, tree(s.path()));
        }

        // Arbitrary manifests beside archives: skipped or reported, never a panic.
        #[test]
        fn arbitrary_manifests_never_panic(text in ".{0,300}", json in prop::bool::ANY) {
            let dir = tempfile::tempdir().unwrap();
            let p = dir.path().join("p");
            std::fs::create_dir(&p).unwrap();
            let body = if json {
                format!("{{\"format\":1,\"archive\":{text:?},\"documents\":-1}}")
            } else {
                text.clone()
            };
            std::fs::write(p.join("x.manifest.json"), body).unwrap();
            let target: Arc<dyn Target> = Arc::new(Local::new(dir.path()));
            let (found, broken) = dcb::catalog::scan_all(&target);
            prop_assert!(found.is_empty());
            prop_assert_eq!(broken.len(), 1);
        }
    }
}

// An archive of thousands of entries stops early with a bounded report.
#[test]
fn many_entries_are_bounded() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("a.tar.gz");
    let names: Vec<String> = (0..5000).map(|i| format!("d{i}/")).collect();
    let entries: Vec<Entry> = names.iter().map(|n| Entry::Dir(n.as_bytes())).collect();
    raw_archive(&path, &entries);
    let m = manifest("a.tar.gz", vec![], 0, 0);
    let r = verify::check(&path, Some(&m), 0, &Keys::default());
    assert!(!r.ok());
    assert!(r.problems.len() < 40, "{} problems", r.problems.len());
    assert!(messages(&r).contains("stopped reading"), "{}", messages(&r));
}
