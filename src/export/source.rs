//! What to ask the server for, and reading the time field straight from raw BSON.

use chrono::{DateTime, Utc};
use mongodb::bson::raw::{RawBsonRef, RawDocument};
use mongodb::bson::{Bson, Document, doc};

use crate::window::Extent;

/// How a run reads its collection.
#[derive(Debug, Clone, PartialEq)]
pub enum Query {
    /// `find(filter)`: an index range on the time field.
    Range(Document),
    /// Scan everything in natural order and keep, on the client, documents whose time
    /// lies in `[from, before)` (`before: None`: keep all, a snapshot). Cheaper than a
    /// server-side filter when the server would scan everything anyway (no lower
    /// bound, or no index on the time field), and it counts the documents no window
    /// can select for free.
    Scan {
        from: Option<DateTime<Utc>>,
        before: Option<DateTime<Utc>>,
    },
    /// These documents, by `_id`, those whose time field lies outside `window` (the
    /// window's own query reads the others): a chain's changes the window misses.
    Ids {
        ids: Vec<Bson>,
        window: crate::window::TimeWindow,
    },
}

/// `indexed`: the time field leads an index, so a range is an index scan.
pub fn query(extent: &Extent, time_field: &str, indexed: bool) -> Query {
    match extent {
        Extent::Snapshot => Query::Scan {
            from: None,
            before: None,
        },
        Extent::Window(w) => match w.from {
            None => Query::Scan {
                from: None,
                before: Some(w.to),
            },
            Some(from) if !indexed => Query::Scan {
                from: Some(from),
                before: Some(w.to),
            },
            Some(from) => Query::Range(doc! {
                time_field: {
                    "$gte": Bson::DateTime(from.into()),
                    "$lt": Bson::DateTime(w.to.into()),
                }
            }),
        },
    }
}

/// The documents no window can ever select (time field missing, null, or a string,
/// number, ObjectId, timestamp or boolean), as disjoint filters that each use an index
/// on the time field, so counting them costs what they match, not the collection.
/// (Objects and arrays in the time field are counted only by scans.)
pub fn untimed_filters(time_field: &str) -> Vec<Document> {
    use mongodb::bson::{Timestamp, oid::ObjectId};
    // Closed ranges: some servers scan an open-ended index range to the end of the
    // index (past every date) before they find it empty.
    let top_string = "\u{10FFFF}".repeat(16);
    vec![
        doc! { time_field: Bson::Null },
        doc! { time_field: { "$gte": "", "$lte": top_string } },
        doc! { time_field: { "$gte": f64::NEG_INFINITY, "$lte": f64::INFINITY } },
        doc! { time_field: f64::NAN },
        doc! { time_field: { "$gte": ObjectId::from_bytes([0; 12]), "$lte": ObjectId::from_bytes([0xff; 12]) } },
        doc! { time_field: {
            "$gte": Timestamp { time: 0, increment: 0 },
            "$lte": Timestamp { time: u32::MAX, increment: u32::MAX },
        } },
        doc! { time_field: { "$in": [true, false] } },
    ]
}

/// Does an index (from listIndexes) lead with `field`?
pub fn leads_index(indexes: &[Bson], field: &str) -> bool {
    indexes.iter().any(|ix| {
        ix.as_document()
            .and_then(|d| d.get_document("key").ok())
            .and_then(|k| k.keys().next())
            .is_some_and(|k| k == field)
    })
}

/// Where a document's time field puts it, read without deserializing it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Timed {
    At(i64),
    /// Missing, null, or not a date.
    Untimed,
}

/// Read a (possibly dotted) time field from a raw document.
pub fn time_of(doc: &RawDocument, path: &[&str]) -> Timed {
    let mut current = doc;
    for (i, key) in path.iter().enumerate() {
        match current.get(key) {
            Ok(Some(RawBsonRef::DateTime(d))) if i + 1 == path.len() => {
                return Timed::At(d.timestamp_millis());
            }
            Ok(Some(RawBsonRef::Document(inner))) if i + 1 < path.len() => current = inner,
            _ => return Timed::Untimed,
        }
    }
    Timed::Untimed
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::window::TimeWindow;
    use mongodb::bson::{DateTime as BsonDateTime, RawDocumentBuf};

    fn raw(d: Document) -> RawDocumentBuf {
        RawDocumentBuf::try_from(&d).unwrap()
    }

    // Time fields are read from raw bytes, nested paths included; anything but a date
    // is untimed.
    #[test]
    fn reads_time_fields() {
        let t = BsonDateTime::from_millis(1_700_000_000_123);
        assert_eq!(
            time_of(&raw(doc! {"createdAt": t}), &["createdAt"]),
            Timed::At(1_700_000_000_123)
        );
        assert_eq!(
            time_of(&raw(doc! {"m": {"at": t}}), &["m", "at"]),
            Timed::At(1_700_000_000_123)
        );
        assert_eq!(
            time_of(&raw(doc! {"createdAt": "2026-01-01"}), &["createdAt"]),
            Timed::Untimed
        );
        assert_eq!(
            time_of(&raw(doc! {"createdAt": Bson::Null}), &["createdAt"]),
            Timed::Untimed
        );
        assert_eq!(
            time_of(&raw(doc! {"other": 1}), &["createdAt"]),
            Timed::Untimed
        );
        assert_eq!(time_of(&raw(doc! {"m": 5}), &["m", "at"]), Timed::Untimed);
    }

    // A bounded window on an indexed field is an index range; an unbounded one, an
    // unindexed field or a snapshot is a scan.
    #[test]
    fn chooses_query() {
        let to = DateTime::parse_from_rfc3339("2026-11-25T00:00:00Z")
            .unwrap()
            .to_utc();
        let from = to - chrono::TimeDelta::hours(1);
        let w = Extent::Window(TimeWindow {
            from: Some(from),
            to,
        });
        assert!(matches!(query(&w, "createdAt", true), Query::Range(_)));
        assert_eq!(
            query(&w, "createdAt", false),
            Query::Scan {
                from: Some(from),
                before: Some(to)
            }
        );
        let unbounded = Extent::Window(TimeWindow { from: None, to });
        assert_eq!(
            query(&unbounded, "createdAt", true),
            Query::Scan {
                from: None,
                before: Some(to)
            }
        );
        assert_eq!(
            query(&Extent::Snapshot, "createdAt", true),
            Query::Scan {
                from: None,
                before: None
            }
        );
    }
}
