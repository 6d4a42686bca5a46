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
    /// Scan everything in natural order; keep documents whose time is before `to`
    /// (`None`: keep all). Cheaper than a server-side filter when there is no lower
    /// bound, and it counts the documents no window can select for free.
    Scan { before: Option<DateTime<Utc>> },
}

pub fn query(extent: &Extent, time_field: &str) -> Query {
    match extent {
        Extent::Snapshot => Query::Scan { before: None },
        Extent::Window(w) => match w.from {
            None => Query::Scan { before: Some(w.to) },
            Some(from) => Query::Range(doc! {
                time_field: {
                    "$gte": Bson::DateTime(from.into()),
                    "$lt": Bson::DateTime(w.to.into()),
                }
            }),
        },
    }
}

/// The documents no window can ever select.
pub fn untimed_filter(time_field: &str) -> Document {
    doc! { time_field: { "$not": { "$type": "date" } } }
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

    // A bounded window is an index range; an unbounded one or a snapshot is a scan.
    #[test]
    fn chooses_query() {
        let to = DateTime::parse_from_rfc3339("2026-11-25T00:00:00Z")
            .unwrap()
            .to_utc();
        let from = to - chrono::TimeDelta::hours(1);
        assert!(matches!(
            query(
                &Extent::Window(TimeWindow {
                    from: Some(from),
                    to
                }),
                "createdAt"
            ),
            Query::Range(_)
        ));
        assert_eq!(
            query(&Extent::Window(TimeWindow { from: None, to }), "createdAt"),
            Query::Scan { before: Some(to) }
        );
        assert_eq!(
            query(&Extent::Snapshot, "createdAt"),
            Query::Scan { before: None }
        );
    }
}
