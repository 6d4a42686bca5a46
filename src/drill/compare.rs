//! What a drill's scratch collection must hold, worked out from the archives alone
//! (each archive's deletions, then its documents by `_id`, in the chain's order), and
//! how what it does hold differs. The comparison is pure; only [`expected`] reads.

use std::collections::HashMap;

use bson::{Bson, RawDocument};
use sha2::{Digest, Sha256};

use crate::bson_stream::BsonReader;
use crate::crypto::Keys;
use crate::restore::Chain;
use crate::unpack;

/// A document's `_id` as a comparable key (canonical extended JSON).
pub fn id_key(doc: &RawDocument) -> Option<String> {
    let id = doc.get("_id").ok()??;
    let id = Bson::try_from(id).ok()?;
    Some(id.into_canonical_extjson().to_string())
}

fn digest(doc: &RawDocument) -> [u8; 32] {
    Sha256::digest(doc.as_bytes()).into()
}

/// The documents a chain restores: `_id` to the SHA-256 of the document's bytes.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Expected {
    pub docs: HashMap<String, [u8; 32]>,
    /// Archives whose document count differs from their manifest's.
    pub problems: Vec<String>,
}

impl Expected {
    /// A chain archive's recorded deletion.
    pub fn delete(&mut self, doc: &RawDocument) {
        if let Some(id) = id_key(doc) {
            self.docs.remove(&id);
        }
    }

    /// A document written (inserted, or replacing the one with its `_id`).
    pub fn upsert(&mut self, doc: &RawDocument) {
        if let Some(id) = id_key(doc) {
            self.docs.insert(id, digest(doc));
        }
    }
}

/// Read the chain's archives as the restore applies them. Blocking.
pub fn expected(chain: &Chain, keys: &Keys) -> Expected {
    let mut out = Expected::default();
    for found in &chain.archives {
        let m = &found.manifest;
        let member = format!("{}/{}.bson", m.database, m.collection);
        let mut read = 0u64;
        let mut problems = Vec::new();
        let result = unpack::for_each_member(
            &found.archive,
            keys,
            &mut problems,
            |name, _, r, problems| {
                let deletions = crate::storage::names::is_deletions_member(name);
                if name != member && !deletions {
                    return Ok(());
                }
                let mut docs = BsonReader::new(r);
                loop {
                    match docs.next_document() {
                        Ok(Some(d)) if deletions => out.delete(d),
                        Ok(Some(d)) => {
                            read += 1;
                            out.upsert(d);
                        }
                        Ok(None) => break,
                        Err(crate::bson_stream::BsonError::Io(e)) => return Err(e),
                        Err(e) => {
                            problems.push(unpack::Problem::new(name, e.to_string()));
                            break;
                        }
                    }
                }
                Ok(())
            },
        );
        let key = found.key().to_string();
        match result {
            Err(e) => out.problems.push(format!("{key}: {e}")),
            Ok(None) => out.problems.push(format!("{key}: unreadable")),
            Ok(Some(_)) => {}
        }
        for p in problems {
            out.problems.push(format!("{key}: {p}"));
        }
        if read != m.documents {
            out.problems.push(format!(
                "{key}: {read} documents read; the manifest says {}",
                m.documents
            ));
        }
    }
    out
}

/// How the scratch collection differs from what the archives hold.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Difference {
    /// Documents in the scratch collection.
    pub documents: u64,
    /// In the archives, not in the scratch collection.
    pub missing: u64,
    /// In the scratch collection, not in the archives.
    pub extra: u64,
    /// Both hold the `_id`, with different bytes.
    pub changed: u64,
}

impl Difference {
    pub fn is_empty(&self) -> bool {
        self.missing == 0 && self.extra == 0 && self.changed == 0
    }

    /// Says what differs, for the drill's report.
    pub fn describe(&self, expected: usize) -> String {
        format!(
            "the scratch collection holds {} documents, the archives {expected}: {} missing, {} not in the archives, {} with other bytes",
            self.documents, self.missing, self.extra, self.changed
        )
    }
}

/// The comparison while the scratch collection streams by.
#[derive(Debug)]
pub struct Tally<'a> {
    expected: &'a Expected,
    diff: Difference,
    seen: std::collections::HashSet<String>,
}

impl<'a> Tally<'a> {
    pub fn new(expected: &'a Expected) -> Tally<'a> {
        Tally {
            expected,
            diff: Difference::default(),
            seen: std::collections::HashSet::new(),
        }
    }

    /// One document of the scratch collection.
    pub fn add(&mut self, doc: &RawDocument) {
        let d = &mut self.diff;
        d.documents += 1;
        let Some(id) = id_key(doc) else {
            d.extra += 1;
            return;
        };
        match self.expected.docs.get(&id) {
            Some(sha) if *sha == digest(doc) => {}
            Some(_) => d.changed += 1,
            None => d.extra += 1,
        }
        self.seen.insert(id);
    }

    pub fn finish(mut self) -> Difference {
        let seen = &self.seen;
        self.diff.missing = self
            .expected
            .docs
            .keys()
            .filter(|k| !seen.contains(*k))
            .count() as u64;
        self.diff
    }
}

/// Compare the documents found in the scratch collection with `expected`.
pub fn diff<'a>(
    expected: &Expected,
    found: impl IntoIterator<Item = &'a RawDocument>,
) -> Difference {
    let mut t = Tally::new(expected);
    for doc in found {
        t.add(doc);
    }
    t.finish()
}

/// The indexes the metadata names (but `_id_`) that the scratch collection lacks or
/// holds with other keys. `found`: name to key document.
pub fn index_problems(
    metadata: Option<&serde_json::Value>,
    found: &HashMap<String, bson::Document>,
) -> Vec<String> {
    let Some(list) = metadata
        .and_then(|m| m.get("indexes"))
        .and_then(|v| v.as_array())
    else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for ix in list {
        let Some(name) = ix.get("name").and_then(|n| n.as_str()) else {
            continue;
        };
        if name == "_id_" {
            continue;
        }
        let key = ix
            .get("key")
            .and_then(|k| Bson::try_from(k.clone()).ok())
            .and_then(|b| b.as_document().cloned());
        match (found.get(name), key) {
            (None, _) => out.push(format!("index `{name}` is missing")),
            (Some(have), Some(want)) if !same_keys(have, &want) => {
                out.push(format!("index `{name}` has other keys ({have} vs {want})"))
            }
            _ => {}
        }
    }
    out
}

/// Key documents agree field by field (numbers by value: `1` and `1.0` are one
/// direction).
fn same_keys(a: &bson::Document, b: &bson::Document) -> bool {
    let norm = |v: &Bson| match v {
        Bson::Int32(n) => Bson::Double(f64::from(*n)),
        Bson::Int64(n) => Bson::Double(*n as f64),
        other => other.clone(),
    };
    a.len() == b.len()
        && a.iter()
            .zip(b.iter())
            .all(|((ka, va), (kb, vb))| ka == kb && norm(va) == norm(vb))
}

#[cfg(test)]
mod tests {
    use super::*;
    use bson::{RawDocumentBuf, doc, rawdoc};

    fn expected(docs: &[RawDocumentBuf]) -> Expected {
        let mut e = Expected::default();
        for d in docs {
            e.upsert(d);
        }
        e
    }

    // A scratch collection equal to the archives differs in nothing.
    #[test]
    fn equal_is_empty() {
        let docs = [rawdoc! {"_id": 1, "v": "a"}, rawdoc! {"_id": 2, "v": "b"}];
        let d = diff(&expected(&docs), docs.iter().map(|d| d.as_ref()));
        assert!(d.is_empty(), "{d:?}");
        assert_eq!(d.documents, 2);
    }

    // A missing document, one the archives never held and one with other bytes are
    // each counted; a later archive's version and a recorded deletion win.
    #[test]
    fn differences_are_counted() {
        let mut e = expected(&[
            rawdoc! {"_id": 1, "v": "a"},
            rawdoc! {"_id": 2, "v": "b"},
            rawdoc! {"_id": 3, "v": "c"},
        ]);
        e.upsert(&rawdoc! {"_id": 2, "v": "b2"});
        e.delete(&rawdoc! {"_id": 3});
        let found = [rawdoc! {"_id": 2, "v": "b"}, rawdoc! {"_id": 9, "v": "x"}];
        let d = diff(&e, found.iter().map(|d| d.as_ref()));
        assert_eq!(
            d,
            Difference {
                documents: 2,
                missing: 1,
                extra: 1,
                changed: 1
            }
        );
        assert!(d.describe(e.docs.len()).contains("1 missing"));
        // The same `_id` of another type is another document.
        let e = expected(&[rawdoc! {"_id": 1}]);
        let d = diff(&e, [rawdoc! {"_id": 1i64}].iter().map(|d| d.as_ref()));
        assert_eq!((d.missing, d.extra), (1, 1));
    }

    // Every index of the metadata must be there with its keys; `_id_` is the server's.
    #[test]
    fn indexes_are_compared() {
        let meta = serde_json::json!({"indexes": [
            {"v": 2, "key": {"_id": 1}, "name": "_id_"},
            {"v": 2, "key": {"station": 1, "createdAt": -1}, "name": "st"},
            {"v": 2, "key": {"barcode": 1}, "name": "bc", "unique": true},
        ]});
        let mut found = HashMap::new();
        found.insert("st".to_string(), doc! {"station": 1.0, "createdAt": -1});
        let p = index_problems(Some(&meta), &found);
        assert_eq!(p, ["index `bc` is missing"]);
        found.insert("bc".to_string(), doc! {"barcode": -1});
        let p = index_problems(Some(&meta), &found);
        assert!(p[0].contains("other keys"), "{p:?}");
        assert!(index_problems(None, &found).is_empty());
    }
}
