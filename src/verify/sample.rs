//! `--sample N`: documents drawn at random while an archive is read, then compared
//! with the live database by `_id`.

use std::collections::HashMap;

use bson::{Bson, Document, RawDocument, RawDocumentBuf, doc};
use futures_util::TryStreamExt;
use mongodb::Client;

/// Reservoir sampling (algorithm R): a uniform sample of at most `n` documents from
/// a stream of unknown length, holding only the sample.
pub struct Reservoir {
    n: usize,
    seen: u64,
    items: Vec<RawDocumentBuf>,
    rng: u64,
}

impl Reservoir {
    pub fn new(n: usize) -> Reservoir {
        let seed = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(0)
            ^ u64::from(std::process::id()).rotate_left(32);
        Reservoir::with_seed(n, seed)
    }

    pub fn with_seed(n: usize, seed: u64) -> Reservoir {
        Reservoir {
            n,
            seen: 0,
            items: Vec::new(),
            rng: seed,
        }
    }

    /// SplitMix64: small and good enough to pick documents.
    fn next(&mut self) -> u64 {
        self.rng = self.rng.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.rng;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    pub fn offer(&mut self, doc: &RawDocument) {
        if self.n == 0 {
            return;
        }
        self.seen += 1;
        if self.items.len() < self.n {
            self.items.push(doc.to_owned());
        } else {
            let j = self.next() % self.seen;
            if (j as usize) < self.n {
                self.items[j as usize] = doc.to_owned();
            }
        }
    }

    pub fn into_items(self) -> Vec<RawDocumentBuf> {
        self.items
    }
}

/// How the sampled documents compare with the live collection.
#[derive(Debug, Default, Clone, PartialEq, Eq, serde::Serialize)]
pub struct SampleCheck {
    pub checked: usize,
    pub unchanged: usize,
    /// Present with different bytes: changed since the backup.
    pub changed: usize,
    /// Not found by `_id`: deleted since the backup.
    pub deleted: usize,
    /// Sampled documents without an `_id` (cannot be looked up).
    pub without_id: usize,
}

fn key(id: &Bson) -> String {
    id.clone().into_canonical_extjson().to_string()
}

/// Fetch the sampled documents from `database.collection` by `_id` and compare bytes.
pub async fn compare(
    client: &Client,
    database: &str,
    collection: &str,
    sample: &[RawDocumentBuf],
) -> Result<SampleCheck, mongodb::error::Error> {
    let mut check = SampleCheck::default();
    let mut wanted: HashMap<String, &RawDocumentBuf> = HashMap::new();
    let mut ids = Vec::new();
    for d in sample {
        check.checked += 1;
        let id = d
            .get("_id")
            .ok()
            .flatten()
            .and_then(|v| Bson::try_from(v).ok());
        match id {
            Some(id) => {
                wanted.insert(key(&id), d);
                ids.push(id);
            }
            None => check.without_id += 1,
        }
    }
    let coll = client
        .database(database)
        .collection::<RawDocumentBuf>(collection);
    let mut found = 0;
    for chunk in ids.chunks(1000) {
        let filter: Document = doc! {"_id": {"$in": chunk.to_vec()}};
        let mut cursor = coll.find(filter).await?;
        while let Some(live) = cursor.try_next().await? {
            let id = live
                .get("_id")
                .ok()
                .flatten()
                .and_then(|v| Bson::try_from(v).ok());
            let Some(backup) = id.and_then(|id| wanted.get(&key(&id))) else {
                continue;
            };
            found += 1;
            if live.as_bytes() == backup.as_bytes() {
                check.unchanged += 1;
            } else {
                check.changed += 1;
            }
        }
    }
    check.deleted = ids.len().saturating_sub(found);
    Ok(check)
}

#[cfg(test)]
mod tests {
    use super::*;
    use bson::rawdoc;

    // Every position is equally likely to end up in the sample.
    #[test]
    fn reservoir_is_uniform_and_bounded() {
        let docs: Vec<RawDocumentBuf> = (0..20).map(|i| rawdoc! {"_id": i}).collect();
        let mut hits = [0u32; 20];
        for seed in 0..4000u64 {
            let mut r = Reservoir::with_seed(5, seed.wrapping_mul(0x1234_5678_9abc_def1));
            for d in &docs {
                r.offer(d);
            }
            let items = r.into_items();
            assert_eq!(items.len(), 5);
            for d in items {
                hits[d.get_i32("_id").unwrap() as usize] += 1;
            }
        }
        // Expected 1000 each (4000 * 5 / 20).
        for (i, h) in hits.iter().enumerate() {
            assert!((850..1150).contains(h), "position {i}: {h}");
        }
        let mut small = Reservoir::with_seed(5, 1);
        small.offer(&docs[0]);
        assert_eq!(small.into_items().len(), 1);
        let mut none = Reservoir::with_seed(0, 1);
        none.offer(&docs[0]);
        assert!(none.into_items().is_empty());
    }
}
