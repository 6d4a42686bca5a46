//! Pure rules of the S3 target: which keys are valid, which listed objects are
//! committed (an archive only with its manifest), how large the parts of an upload
//! are, and the name of a target's spool folder.

use std::collections::BTreeSet;

use sha2::{Digest, Sha256};

use crate::storage::Object;
use crate::storage::names::{TEMP_MARK, hex, is_archive_name, manifest_name};

/// The part size of uploads: 5 MiB, S3's smallest, since an upload holds each part in
/// flight in memory (about twice over, measured) and peak memory is what runs beside
/// a factory's database must keep small.
pub const PART_SIZE: usize = 5 << 20;
/// S3 allows at most this many parts; larger files get larger parts.
pub const MAX_PARTS: u64 = 10_000;

/// Whether `key` is a plain relative `/`-separated key (`<policy>/<file>`): no empty,
/// `.` or `..` segment, no leading `/`, no backslash or control character.
pub fn valid_key(key: &str) -> bool {
    !key.is_empty()
        && !key.contains('\\')
        && !key.chars().any(char::is_control)
        && key
            .split('/')
            .all(|s| !s.is_empty() && s != "." && s != "..")
}

/// Whether `prefix` may be listed: empty, or a key or the start of one (`hot/`).
pub fn valid_prefix(prefix: &str) -> bool {
    prefix.is_empty() || valid_key(prefix.trim_end_matches('/'))
}

/// The folder part of a prefix, which is listed whole: `hot/2026` → `hot/`.
pub fn folder_of(prefix: &str) -> &str {
    match prefix.rfind('/') {
        Some(i) => &prefix[..=i],
        None => "",
    }
}

/// The part size for a file of `len` bytes: [`PART_SIZE`], or more (whole MiB) when
/// the file would need more than `MAX_PARTS` parts.
pub fn part_size(len: u64) -> usize {
    let needed = len.div_ceil(MAX_PARTS).div_ceil(1 << 20) << 20;
    PART_SIZE.max(usize::try_from(needed).unwrap_or(usize::MAX))
}

/// Whether a listed key is dcb's: not hidden (no segment starts with `.`) and not
/// temporary.
fn visible(key: &str) -> bool {
    !key.split('/').any(|s| s.starts_with('.')) && !key.ends_with(TEMP_MARK)
}

/// The manifest key of an archive key (same folder).
pub fn manifest_key(archive_key: &str) -> String {
    let (folder, name) = split(archive_key);
    format!("{folder}{}", manifest_name(name))
}

fn split(key: &str) -> (&str, &str) {
    match key.rfind('/') {
        Some(i) => (&key[..=i], &key[i + 1..]),
        None => ("", key),
    }
}

fn is_archive_key(key: &str) -> bool {
    is_archive_name(split(key).1)
}

/// Of a listing, the committed objects whose keys start with `prefix`, sorted: hidden
/// and temporary ones left out, and archives whose manifest is not there (an upload
/// whose commit did not finish).
pub fn committed(listing: Vec<Object>, prefix: &str) -> Vec<Object> {
    let keys: BTreeSet<&str> = listing.iter().map(|o| o.key.as_str()).collect();
    let keep: Vec<bool> = listing
        .iter()
        .map(|o| {
            visible(&o.key)
                && o.key.starts_with(prefix)
                && (!is_archive_key(&o.key) || keys.contains(manifest_key(&o.key).as_str()))
        })
        .collect();
    let mut out: Vec<Object> = listing
        .into_iter()
        .zip(keep)
        .filter_map(|(o, k)| k.then_some(o))
        .collect();
    out.sort_by(|a, b| a.key.cmp(&b.key));
    out
}

/// Of a listing, the archives under `prefix` that have no manifest beside them.
pub fn uncommitted_archives(listing: &[Object], prefix: &str) -> Vec<String> {
    let keys: BTreeSet<&str> = listing.iter().map(|o| o.key.as_str()).collect();
    let mut out: Vec<String> = listing
        .iter()
        .map(|o| o.key.as_str())
        .filter(|k| k.starts_with(prefix) && visible(k) && is_archive_key(k))
        .filter(|k| !keys.contains(manifest_key(k).as_str()))
        .map(String::from)
        .collect();
    out.sort();
    out
}

/// The name of a target's own folder in the spool: the bucket, and a short hash of
/// where it is (two targets never share one).
pub fn spool_name(endpoint: &str, bucket: &str, prefix: &str) -> String {
    let digest = Sha256::digest(format!("{endpoint}\n{bucket}\n{prefix}").as_bytes());
    format!("s3-{bucket}-{}", &hex(&digest)[..12])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn obj(key: &str) -> Object {
        Object {
            key: key.to_string(),
            size: 1,
        }
    }

    fn keys(objects: &[Object]) -> Vec<&str> {
        objects.iter().map(|o| o.key.as_str()).collect()
    }

    // Keys are plain relative paths; anything that could climb, hide or confuse is not.
    #[test]
    fn keys_are_plain() {
        assert!(valid_key("hot/a.tar.gz"));
        for bad in [
            "", "/hot/a", "hot//a", "hot/../a", "./a", "hot\\a", "hot/a\n", "hot/",
        ] {
            assert!(!valid_key(bad), "{bad:?}");
        }
        assert!(valid_prefix("") && valid_prefix("hot/") && valid_prefix("hot/2026"));
        assert!(!valid_prefix("../") && !valid_prefix("/hot/"));
        assert_eq!(folder_of("hot/2026"), "hot/");
        assert_eq!(folder_of("hot/"), "hot/");
        assert_eq!(folder_of("ho"), "");
    }

    // An archive is listed only with its manifest; hidden and temporary objects never.
    #[test]
    fn only_committed_objects_are_listed() {
        let listing = vec![
            obj("hot/b.tar.gz"),
            obj("hot/a.manifest.json"),
            obj("hot/a.tar.gz"),
            obj("hot/c.tar.gz.age"),
            obj("hot/c.manifest.json"),
            obj("hot/.hidden"),
            obj("hot/.x.tar.gz.1.dcb-tmp"),
            obj(".spool/x"),
            obj("cold/a.tar.gz"),
        ];
        assert_eq!(
            keys(&committed(listing.clone(), "hot/")),
            [
                "hot/a.manifest.json",
                "hot/a.tar.gz",
                "hot/c.manifest.json",
                "hot/c.tar.gz.age"
            ]
        );
        assert_eq!(
            keys(&committed(listing.clone(), "hot/a.tar.gz")),
            ["hot/a.tar.gz"]
        );
        assert!(committed(listing.clone(), "hot/b").is_empty());
        assert_eq!(
            uncommitted_archives(&listing, ""),
            ["cold/a.tar.gz", "hot/b.tar.gz"]
        );
        assert_eq!(uncommitted_archives(&listing, "hot/"), ["hot/b.tar.gz"]);
    }

    // Parts are 5 MiB, growing only when a file would need more than 10,000 of them.
    #[test]
    fn part_sizes() {
        assert_eq!(part_size(0), PART_SIZE);
        assert_eq!(part_size(200 << 20), PART_SIZE);
        assert_eq!(part_size(MAX_PARTS * PART_SIZE as u64), PART_SIZE);
        let big = MAX_PARTS * PART_SIZE as u64 + 1;
        assert_eq!(part_size(big), PART_SIZE + (1 << 20), "the next whole MiB");
        assert!(big.div_ceil(part_size(big) as u64) <= MAX_PARTS);
        let huge = 5u64 << 40;
        assert!(huge.div_ceil(part_size(huge) as u64) <= MAX_PARTS);
    }

    // Spool folders differ for targets that differ in endpoint, bucket or prefix.
    #[test]
    fn spool_names_are_per_target() {
        let a = spool_name("http://h:1", "bkt", "");
        assert!(a.starts_with("s3-bkt-") && a.len() == "s3-bkt-".len() + 12);
        assert_ne!(a, spool_name("http://h:2", "bkt", ""));
        assert_ne!(a, spool_name("http://h:1", "bkt", "p/"));
        assert_eq!(a, spool_name("http://h:1", "bkt", ""));
    }
}
