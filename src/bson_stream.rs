//! Reading concatenated BSON documents (a mongodump `.bson` file) from a stream. Every
//! length prefix is checked before anything is allocated, and every document is
//! walked to the last element, so hostile bytes are an error, never a panic or a huge
//! allocation.

use std::fmt;
use std::io::{self, Read};

use bson::RawDocument;

/// The largest document accepted: MongoDB stores user documents of at most 16 MiB
/// (BSONObjMaxUserSize); its 16 KiB of internal headroom is for commands, not for
/// documents, so a bigger one would pass verify and then fail mid-restore.
pub const MAX_DOCUMENT: usize = 16 * 1024 * 1024;

/// Deeper nesting than MongoDB stores; bounding it bounds the walk's stack.
const MAX_DEPTH: usize = 180;

#[derive(Debug)]
pub enum BsonError {
    Io(io::Error),
    /// The stream ended inside a document.
    Truncated {
        offset: u64,
        expected: u64,
        got: u64,
    },
    /// A length prefix no valid document has.
    BadLength {
        offset: u64,
        length: i64,
    },
    /// The bytes are not a well-formed document.
    Malformed {
        offset: u64,
        message: String,
    },
}

impl fmt::Display for BsonError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BsonError::Io(e) => write!(f, "{e}"),
            BsonError::Truncated {
                offset,
                expected,
                got,
            } => write!(
                f,
                "the document at byte {offset} is cut short: its length says {expected} bytes, {got} remain"
            ),
            BsonError::BadLength { offset, length } => write!(
                f,
                "the document at byte {offset} has an impossible length prefix ({length}; valid: 5 to {MAX_DOCUMENT})"
            ),
            BsonError::Malformed { offset, message } => {
                write!(f, "the document at byte {offset} is malformed: {message}")
            }
        }
    }
}

impl std::error::Error for BsonError {}

/// Documents, one at a time, from a stream of concatenated BSON.
pub struct BsonReader<R> {
    inner: R,
    offset: u64,
    buf: Vec<u8>,
}

impl<R: Read> BsonReader<R> {
    pub fn new(inner: R) -> Self {
        BsonReader {
            inner,
            offset: 0,
            buf: Vec::new(),
        }
    }

    /// Bytes consumed so far (the offset of the next document).
    pub fn offset(&self) -> u64 {
        self.offset
    }

    pub fn into_inner(self) -> R {
        self.inner
    }

    /// The next well-formed document, or `None` at a clean end of the stream.
    pub fn next_document(&mut self) -> Result<Option<&RawDocument>, BsonError> {
        let start = self.offset;
        let mut prefix = [0u8; 4];
        let got = read_full(&mut self.inner, &mut prefix).map_err(BsonError::Io)?;
        if got == 0 {
            return Ok(None);
        }
        if got < 4 {
            return Err(BsonError::Truncated {
                offset: start,
                expected: 4,
                got: got as u64,
            });
        }
        let length = i32::from_le_bytes(prefix);
        if length < 5 || length as usize > MAX_DOCUMENT {
            return Err(BsonError::BadLength {
                offset: start,
                length: length.into(),
            });
        }
        let length = length as usize;
        self.buf.clear();
        self.buf.extend_from_slice(&prefix);
        self.buf.resize(length, 0);
        let got = read_full(&mut self.inner, &mut self.buf[4..]).map_err(BsonError::Io)?;
        if got < length - 4 {
            return Err(BsonError::Truncated {
                offset: start,
                expected: length as u64,
                got: 4 + got as u64,
            });
        }
        self.offset += length as u64;
        let malformed = |message: String| BsonError::Malformed {
            offset: start,
            message,
        };
        walk(&self.buf, 0).map_err(malformed)?;
        let doc = RawDocument::from_bytes(&self.buf).map_err(|e| malformed(e.to_string()))?;
        Ok(Some(doc))
    }
}

/// Read until `buf` is full or the stream ends; how many bytes were read.
fn read_full(r: &mut impl Read, buf: &mut [u8]) -> io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match r.read(&mut buf[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(n)
}

/// Check the structure of every element, recursively: types, lengths and terminators,
/// as `mongod` validates. Invalid UTF-8 inside strings is not an error here: MongoDB
/// stores such strings and mongodump keeps them, so a faithful backup must too.
fn walk(doc: &[u8], depth: usize) -> Result<(), String> {
    if depth > MAX_DEPTH {
        return Err(format!("nested more than {MAX_DEPTH} levels deep"));
    }
    // The caller has checked that the length prefix equals `doc.len()` (>= 5).
    let end = doc.len() - 1;
    if doc[end] != 0 {
        return Err("the document does not end with a zero byte".into());
    }
    let mut at = 4;
    while at < end {
        let kind = doc[at];
        at += 1;
        let key_end = cstring_end(doc, at, end).ok_or("an element name runs past the document")?;
        at = key_end + 1;
        let need = |n: usize, at: usize| -> Result<usize, String> {
            at.checked_add(n)
                .filter(|&e| e <= end)
                .ok_or_else(|| format!("a value of type {kind:#04x} runs past the document"))
        };
        at = match kind {
            0x01 | 0x09 | 0x11 | 0x12 => need(8, at)?,
            0x10 => need(4, at)?,
            0x13 => need(16, at)?,
            0x07 => need(12, at)?,
            0x08 => {
                let e = need(1, at)?;
                if doc[at] > 1 {
                    return Err("a boolean is neither 0 nor 1".into());
                }
                e
            }
            0x06 | 0x0A | 0x7F | 0xFF => at,
            0x02 | 0x0D | 0x0E => string_end(doc, at, end)?,
            0x0C => need(12, string_end(doc, at, end)?)?,
            0x03 | 0x04 => {
                let len = length_at(doc, at, end)?;
                let e = need(len, at)?;
                if len < 5 {
                    return Err("an embedded document is shorter than 5 bytes".into());
                }
                walk(&doc[at..e], depth + 1)?;
                e
            }
            0x05 => {
                let len = length_at(doc, at, end)?;
                need(len, need(5, at)?)?
            }
            0x0B => {
                let pattern = cstring_end(doc, at, end).ok_or("a regex runs past the document")?;
                cstring_end(doc, pattern + 1, end).ok_or("a regex runs past the document")? + 1
            }
            0x0F => {
                let total = length_at(doc, at, end)?;
                let e = need(total, at)?;
                let code_end = string_end(doc, at + 4, e)?;
                let scope_len = length_at(doc, code_end, e)?;
                if code_end + scope_len != e || scope_len < 5 {
                    return Err("a code-with-scope value has inconsistent lengths".into());
                }
                walk(&doc[code_end..e], depth + 1)?;
                e
            }
            other => return Err(format!("unknown element type {other:#04x}")),
        };
    }
    if at != end {
        return Err("the last element runs past the document".into());
    }
    Ok(())
}

/// The index of the zero byte ending a C string that starts at `at`, before `end`.
fn cstring_end(doc: &[u8], at: usize, end: usize) -> Option<usize> {
    doc.get(at..end)?
        .iter()
        .position(|&b| b == 0)
        .map(|p| at + p)
}

/// A little-endian i32 length at `at`, as a usize (negative is an error).
fn length_at(doc: &[u8], at: usize, end: usize) -> Result<usize, String> {
    let bytes: [u8; 4] = doc
        .get(at..at.saturating_add(4).min(end))
        .and_then(|b| b.try_into().ok())
        .ok_or("a length runs past the document")?;
    usize::try_from(i32::from_le_bytes(bytes)).map_err(|_| "a negative length".to_string())
}

/// Where a BSON string (i32 length, bytes, zero) starting at `at` ends.
fn string_end(doc: &[u8], at: usize, end: usize) -> Result<usize, String> {
    let len = length_at(doc, at, end)?;
    let e = (at + 4)
        .checked_add(len)
        .filter(|&e| e <= end && len >= 1)
        .ok_or("a string runs past the document")?;
    if doc[e - 1] != 0 {
        return Err("a string does not end with a zero byte".into());
    }
    Ok(e)
}

#[cfg(test)]
mod tests {
    use super::*;
    use bson::{doc, rawdoc};

    fn bytes(docs: &[bson::Document]) -> Vec<u8> {
        let mut out = Vec::new();
        for d in docs {
            d.to_writer(&mut out).unwrap();
        }
        out
    }

    fn read_all(data: &[u8]) -> Result<Vec<Vec<u8>>, BsonError> {
        let mut r = BsonReader::new(data);
        let mut out = Vec::new();
        while let Some(d) = r.next_document()? {
            out.push(d.as_bytes().to_vec());
        }
        Ok(out)
    }

    #[test]
    fn reads_documents_back_byte_for_byte() {
        let docs = [
            doc! {"_id": 1, "a": {"b": [1, 2, {"c": "x"}]}},
            doc! {},
            doc! {"s": "é"},
        ];
        let data = bytes(&docs);
        let got = read_all(&data).unwrap();
        assert_eq!(got.len(), 3);
        assert_eq!(got.concat(), data);
        assert!(read_all(&[]).unwrap().is_empty());
    }

    #[test]
    fn truncation_is_reported_with_its_offset() {
        let data = bytes(&[doc! {"a": 1}, doc! {"b": "hello"}]);
        let first = rawdoc! {"a": 1}.as_bytes().len() as u64;
        for cut in [data.len() - 1, first as usize + 2, first as usize + 6] {
            match read_all(&data[..cut]) {
                Err(BsonError::Truncated { offset, .. }) => assert_eq!(offset, first),
                other => panic!("cut at {cut}: {other:?}"),
            }
        }
    }

    #[test]
    fn absurd_length_prefixes_are_refused_before_allocating() {
        for length in [i32::MAX, -1, 0, 4, (MAX_DOCUMENT + 1) as i32] {
            let mut data = length.to_le_bytes().to_vec();
            data.extend_from_slice(&[0; 16]);
            assert!(
                matches!(read_all(&data), Err(BsonError::BadLength { .. })),
                "{length}"
            );
        }
    }

    // Exactly 16 MiB is a document MongoDB stores; one byte more is not.
    #[test]
    fn the_size_limit_is_16_mib_exactly() {
        let sized = |total: usize| {
            // length(4) type(1) "s\0"(2) strlen(4) bytes NUL(1) document NUL(1)
            let text = "x".repeat(total - 13);
            let d = doc! {"s": text};
            let b = bytes(&[d]);
            assert_eq!(b.len(), total);
            b
        };
        let at_limit = sized(MAX_DOCUMENT);
        assert_eq!(read_all(&at_limit).unwrap().len(), 1);
        let over = sized(MAX_DOCUMENT + 1);
        assert!(matches!(
            read_all(&over),
            Err(BsonError::BadLength { length, .. }) if length == MAX_DOCUMENT as i64 + 1
        ));
        assert_eq!(MAX_DOCUMENT, 16 * 1024 * 1024);
    }

    #[test]
    fn malformed_documents_are_refused() {
        // A string element whose length runs past the document.
        let mut bad = bytes(&[doc! {"s": "abc"}]);
        bad[4 + 1 + 2] = 0x7f;
        assert!(matches!(read_all(&bad), Err(BsonError::Malformed { .. })));
        // A missing terminating zero.
        let mut bad = bytes(&[doc! {"a": 1}]);
        let n = bad.len();
        bad[n - 1] = 1;
        assert!(matches!(read_all(&bad), Err(BsonError::Malformed { .. })));
    }

    // Invalid UTF-8 in a string is kept (MongoDB stores it); types and lengths are not.
    #[test]
    fn structure_is_checked_not_utf8() {
        let mut data = bytes(&[doc! {"s": "abc"}]);
        // "abc" sits after: length(4) type(1) key "s\0"(2) strlen(4).
        data[11] = 0xff;
        assert_eq!(read_all(&data).unwrap().len(), 1);
        let mut bad = bytes(&[doc! {"a": 1}]);
        bad[4] = 0x42; // an element type that does not exist
        assert!(matches!(read_all(&bad), Err(BsonError::Malformed { .. })));
        let mut bad = bytes(&[doc! {"b": true}]);
        bad[7] = 2; // a boolean that is neither
        assert!(matches!(read_all(&bad), Err(BsonError::Malformed { .. })));
        // Every kind of value dcb may meet passes.
        let all = doc! {
            "d": 1.5, "s": "x", "o": {"a": [1, "b", {"c": null}]}, "bin": bson::Binary { subtype: bson::spec::BinarySubtype::Generic, bytes: vec![1, 2] },
            "oid": bson::oid::ObjectId::new(), "t": true, "dt": bson::DateTime::now(), "n": null,
            "re": bson::Regex { pattern: "a.*".try_into().unwrap(), options: "i".try_into().unwrap() },
            "js": bson::Bson::JavaScriptCode("f()".into()),
            "jss": bson::Bson::JavaScriptCodeWithScope(bson::JavaScriptCodeWithScope { code: "g()".into(), scope: doc! {"x": 1} }),
            "i": 1i32, "ts": bson::Timestamp { time: 1, increment: 2 }, "l": 2i64,
            "dec": bson::Decimal128::from_bytes([0; 16]), "min": bson::Bson::MinKey, "max": bson::Bson::MaxKey,
            "u": bson::Bson::Undefined,
        };
        assert_eq!(read_all(&bytes(&[all])).unwrap().len(), 1);
    }

    #[test]
    fn deep_nesting_is_an_error_not_a_stack_overflow() {
        let mut d = doc! {"x": 1};
        for _ in 0..(MAX_DEPTH + 5) {
            d = doc! {"d": d};
        }
        assert!(matches!(
            read_all(&bytes(&[d])),
            Err(BsonError::Malformed { .. })
        ));
    }
}
