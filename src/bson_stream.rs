//! Reading concatenated BSON documents (a mongodump `.bson` file) from a stream. Every
//! length prefix is checked before anything is allocated, and every document is
//! walked to the last element, so hostile bytes are an error, never a panic or a huge
//! allocation.

use std::fmt;
use std::io::{self, Read};

use bson::{RawBsonRef, RawDocument};

/// The largest document accepted: MongoDB's 16 MiB limit plus the 16 KiB of headroom
/// the server itself allows internally.
pub const MAX_DOCUMENT: usize = 16 * 1024 * 1024 + 16 * 1024;

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
        let doc = RawDocument::from_bytes(&self.buf).map_err(|e| malformed(e.to_string()))?;
        walk(doc, 0).map_err(malformed)?;
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

/// Check every element, recursively.
fn walk(doc: &RawDocument, depth: usize) -> Result<(), String> {
    if depth > MAX_DEPTH {
        return Err(format!("nested more than {MAX_DEPTH} levels deep"));
    }
    for element in doc.iter() {
        let (_, value) = element.map_err(|e| e.to_string())?;
        walk_value(value, depth)?;
    }
    Ok(())
}

fn walk_value(value: RawBsonRef<'_>, depth: usize) -> Result<(), String> {
    match value {
        RawBsonRef::Document(d) => walk(d, depth + 1),
        RawBsonRef::Array(a) => {
            if depth + 1 > MAX_DEPTH {
                return Err(format!("nested more than {MAX_DEPTH} levels deep"));
            }
            for v in a {
                walk_value(v.map_err(|e| e.to_string())?, depth + 1)?;
            }
            Ok(())
        }
        RawBsonRef::JavaScriptCodeWithScope(c) => walk(c.scope, depth + 1),
        _ => Ok(()),
    }
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
