//! What changed in a collection between two runs of its chain, read from the server's
//! change stream: the `_id`s deleted, and the documents changed whose time field their
//! change left outside the new window (late arrivals; updates that keep `createdAt`).
//! The server filters the stream, so a run reads only those events, not every insert.
//!
//! Each run resumes where the run before stopped, by its resume token (kept in the
//! manifest): unlike a start time, a token the oplog has rolled past is refused by the
//! server (ChangeStreamHistoryLost), so lost history is never mistaken for none.

use std::collections::HashSet;
use std::time::Duration;

use chrono::{DateTime, TimeZone, Utc};
use mongodb::bson::{Bson, Document, Timestamp, doc};
use mongodb::change_stream::event::ResumeToken;
use mongodb::error::ErrorKind;
use mongodb::{Client, Collection};

use super::ExportError;
use super::manifest::{ClusterTime, History};
use crate::window::TimeWindow;

/// Server error codes that mean "no change stream here".
const UNAVAILABLE: &[i32] = &[
    40573, // the $changeStream stage is only supported on replica sets
    136,   // CappedPositionLost
];
/// Server error codes that mean "the history no longer reaches back that far".
const LOST: &[i32] = &[
    286, // ChangeStreamHistoryLost
    280, // ChangeStreamFatalError
];

/// The point of the server's oplog a run cuts at, and the server's time then.
pub async fn cut(client: &Client) -> Result<(ClusterTime, DateTime<Utc>), ExportError> {
    let mut session = client
        .start_session()
        .await
        .map_err(ExportError::from_mongo)?;
    client
        .database("admin")
        .run_command(doc! {"ping": 1})
        .session(&mut session)
        .await
        .map_err(ExportError::from_mongo)?;
    let Some(ts) = session.operation_time() else {
        // A standalone server keeps no oplog: there is no point to cut at.
        return Ok((ClusterTime { t: 0, i: 0 }, Utc::now()));
    };
    // The cluster time counts whole seconds: a cut at 12:00:30.600 reads as 12:00:30,
    // and a restore as of 12:00:30.200 would apply this run and changes made after
    // that moment. The server's clock just after the cut, to the millisecond, is
    // never before the cut.
    let second = Utc
        .timestamp_opt(i64::from(ts.time), 0)
        .single()
        .unwrap_or_else(Utc::now);
    let local = client
        .database("admin")
        .run_command(doc! {"hello": 1})
        .await
        .ok()
        .and_then(|reply| reply.get_datetime("localTime").ok().copied())
        .and_then(|t| Utc.timestamp_millis_opt(t.timestamp_millis()).single());
    let at = local.map_or(second, |t| t.max(second));
    Ok((
        ClusterTime {
            t: ts.time,
            i: ts.increment,
        },
        at,
    ))
}

/// What a run learnt from the change stream.
#[derive(Debug, Default)]
pub struct ChangeSet {
    /// `_id`s deleted, in the order they were (each once).
    pub deleted: Vec<Bson>,
    /// `_id`s changed whose time field may lie outside the window (each once).
    pub changed: Vec<Bson>,
    pub history: Option<History>,
    /// Where the stream stopped: the next run resumes here.
    pub token: Option<String>,
}

/// A resume token as the manifest keeps it: the BSON of `{t: <token>}`, base64.
fn encode(token: &ResumeToken) -> Option<String> {
    use base64::Engine as _;
    let value = mongodb::bson::serialize_to_bson(token).ok()?;
    let bytes = mongodb::bson::serialize_to_vec(&doc! {"t": value}).ok()?;
    Some(base64::engine::general_purpose::STANDARD.encode(bytes))
}

fn decode(text: &str) -> Option<ResumeToken> {
    use base64::Engine as _;
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(text)
        .ok()?;
    let doc: Document = mongodb::bson::deserialize_from_slice(&bytes).ok()?;
    mongodb::bson::deserialize_from_bson(doc.get("t")?.clone()).ok()
}

/// Where a chain's full starts the change history: the stream's position now (its
/// first resume token), or why there is none (a standalone server).
pub async fn position(coll: &Collection<Document>) -> Result<Result<String, History>, ExportError> {
    match coll.watch().await {
        Ok(stream) => Ok(stream
            .resume_token()
            .as_ref()
            .and_then(encode)
            .ok_or_else(|| History::Unavailable("the change stream gave no resume token".into()))),
        Err(e) => match history_or_error(e)?.history {
            Some(h) => Ok(Err(h)),
            None => Ok(Err(History::Unavailable("no change stream".into()))),
        },
    }
}

/// The events of `coll` since the run before (its resume `token`, else its cut
/// `since`): deletions, and when `capture_updates`, updates the window misses; inserts
/// and replacements the window misses (late arrivals) always.
pub async fn read(
    coll: &Collection<Document>,
    token: Option<&str>,
    since: ClusterTime,
    until: ClusterTime,
    time_field: &str,
    window: &TimeWindow,
    capture_updates: bool,
) -> Result<ChangeSet, ExportError> {
    if until == (ClusterTime { t: 0, i: 0 }) {
        return Ok(ChangeSet {
            history: Some(History::Unavailable(
                "the server keeps no oplog (a standalone server)".into(),
            )),
            ..ChangeSet::default()
        });
    }
    let outside = outside_window(window);
    let mut wanted = vec![
        doc! {"operationType": "delete"},
        doc! {"operationType": {"$in": ["insert", "replace"]}, format!("fullDocument.{time_field}"): outside.clone()},
    ];
    if capture_updates {
        wanted.push(doc! {"operationType": "update", format!("updateDescription.updatedFields.{time_field}"): outside});
    }
    let pipeline = [doc! {"$match": {"$or": wanted}}];
    let watch = coll
        .watch()
        .pipeline(pipeline)
        .max_await_time(Duration::from_millis(100))
        .batch_size(10_000);
    let opened = match token.and_then(decode) {
        Some(t) => watch.resume_after(t).await,
        None => {
            watch
                .start_at_operation_time(Timestamp {
                    time: since.t,
                    increment: since.i,
                })
                .await
        }
    };
    let mut stream = match opened {
        Ok(s) => s,
        Err(e) => return history_or_error(e),
    };
    let mut out = ChangeSet {
        history: Some(History::Complete),
        ..ChangeSet::default()
    };
    let (mut deleted, mut changed) = (HashSet::new(), HashSet::new());
    let mut position = stream.resume_token();
    let mut empty = 0;
    loop {
        let event = match stream.next_if_any().await {
            Ok(Some(e)) => e,
            Ok(None) => {
                // An empty batch is not the end: the server answers within the await
                // time, having scanned only part of the history when it is long. Go on
                // until it has scanned past the cut, or has nothing more. The first
                // batch's token may name the server's newest time rather than how far
                // it scanned (the test server's does): it decides nothing.
                empty += 1;
                let now = stream.resume_token();
                let past_cut = now
                    .as_ref()
                    .and_then(token_time)
                    .is_some_and(|t| t >= until);
                if empty > 1 && (past_cut || now == position) {
                    break;
                }
                position = now;
                continue;
            }
            Err(e) => return history_or_error(e),
        };
        let at = event.cluster_time.map(|t| ClusterTime {
            t: t.time,
            i: t.increment,
        });
        // A start time includes `since`, which the run before already read.
        if token.is_none() && at.is_some_and(|t| t <= since) {
            continue;
        }
        let Some(id) = event.document_key.and_then(|k| k.get("_id").cloned()) else {
            continue;
        };
        let key = key(&id);
        match event.operation_type {
            mongodb::change_stream::event::OperationType::Delete => {
                if deleted.insert(key) {
                    out.deleted.push(id);
                }
            }
            _ => {
                if changed.insert(key) {
                    out.changed.push(id);
                }
            }
        }
    }
    out.token = stream.resume_token().as_ref().and_then(encode);
    Ok(out)
}

/// The point of the history a resume token stands at, where its format is known:
/// MongoDB's (`_data`, a hex key string that starts with the cluster time, type byte
/// 0x82), or a document holding a timestamp (the test server's).
fn token_time(token: &ResumeToken) -> Option<ClusterTime> {
    let value = mongodb::bson::serialize_to_bson(token).ok()?;
    let hex = value.as_document()?.get_str("_data").ok()?;
    let bytes: Vec<u8> = (0..hex.len() / 2)
        .map(|i| u8::from_str_radix(hex.get(2 * i..2 * i + 2)?, 16).ok())
        .collect::<Option<_>>()?;
    if let [0x82, t @ ..] = bytes.as_slice()
        && t.len() >= 8
    {
        let word = |b: &[u8]| u32::from_be_bytes([b[0], b[1], b[2], b[3]]);
        return Some(ClusterTime {
            t: word(&t[..4]),
            i: word(&t[4..8]),
        });
    }
    let doc = mongodb::bson::RawDocument::from_bytes(&bytes).ok()?;
    doc.iter().find_map(|e| match e.ok()?.1 {
        mongodb::bson::RawBsonRef::Timestamp(ts) => Some(ClusterTime {
            t: ts.time,
            i: ts.increment,
        }),
        _ => None,
    })
}

/// The filter matching a time field outside `window` (missing or not a date too).
fn outside_window(w: &TimeWindow) -> Document {
    let to = mongodb::bson::DateTime::from_chrono(w.to);
    let inside = match w.from {
        Some(from) => doc! {"$gte": mongodb::bson::DateTime::from_chrono(from), "$lt": to},
        None => doc! {"$lt": to},
    };
    doc! {"$not": inside}
}

/// An `_id` as a set key: its BSON encoding.
fn key(id: &Bson) -> Vec<u8> {
    mongodb::bson::serialize_to_vec(&doc! {"_id": id.clone()}).unwrap_or_default()
}

/// A change stream that cannot be opened or read: no history here (a standalone
/// server), history gone (the oplog rolled past), or an error to report.
fn history_or_error(e: mongodb::error::Error) -> Result<ChangeSet, ExportError> {
    let history = match e.kind.as_ref() {
        ErrorKind::Command(c) if UNAVAILABLE.contains(&c.code) => {
            History::Unavailable(format!("{} ({})", c.message, c.code_name))
        }
        ErrorKind::Command(c) if LOST.contains(&c.code) => {
            History::Lost(format!("{} ({})", c.message, c.code_name))
        }
        _ => return Err(ExportError::from_mongo(e)),
    };
    Ok(ChangeSet {
        history: Some(history),
        ..ChangeSet::default()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn token(data: &str) -> ResumeToken {
        mongodb::bson::deserialize_from_bson(Bson::Document(doc! {"_data": data})).unwrap()
    }

    // Where a resume token stands: MongoDB's key string (0x82, then the timestamp big
    // endian), the test server's BSON document; anything else is not guessed at.
    #[test]
    fn resume_token_positions() {
        assert_eq!(
            token_time(&token("826B155E12000000050123")),
            Some(ClusterTime {
                t: 0x6b15_5e12,
                i: 5
            })
        );
        assert_eq!(
            token_time(&token(
                "2a0000001073000100000011740005000000125e156b026e0004000000742e7800036b00050000000000"
            )),
            Some(ClusterTime {
                t: 0x6b15_5e12,
                i: 5
            })
        );
        assert_eq!(token_time(&token("82")), None);
        assert_eq!(token_time(&token("zz")), None);
    }

    // The filter that finds documents the window misses: outside [from, to), or
    // before `to` when the window is unbounded.
    #[test]
    fn outside_the_window() {
        let to = Utc.with_ymd_and_hms(2026, 11, 2, 0, 0, 0).unwrap();
        let from = Utc.with_ymd_and_hms(2026, 11, 1, 0, 0, 0).unwrap();
        let f = outside_window(&TimeWindow {
            from: Some(from),
            to,
        });
        let inner = f.get_document("$not").unwrap();
        assert!(inner.contains_key("$gte") && inner.contains_key("$lt"));
        let f = outside_window(&TimeWindow { from: None, to });
        let inner = f.get_document("$not").unwrap();
        assert!(!inner.contains_key("$gte") && inner.contains_key("$lt"));
        assert_ne!(
            key(&Bson::Int32(1)),
            key(&Bson::Int64(1)),
            "types stay apart"
        );
    }
}
