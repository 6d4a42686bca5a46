//! Percent-encoding as URIs use it (RFC 3986), shared by the places that read URIs.

/// `%XX` escapes to bytes; anything malformed (`%zz`, a `%` at the end) is kept as
/// written.
pub fn decode(s: &str) -> Vec<u8> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = |b: u8| (b as char).to_digit(16);
        if bytes[i] == b'%'
            && let (Some(h), Some(l)) = (
                bytes.get(i + 1).copied().and_then(hex),
                bytes.get(i + 2).copied().and_then(hex),
            )
        {
            out.push((h * 16 + l) as u8);
            i += 3;
            continue;
        }
        out.push(bytes[i]);
        i += 1;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::decode;

    #[test]
    fn decodes_escapes_and_keeps_malformed_ones() {
        assert_eq!(decode("a%20b%E2%82%AC"), "a b€".as_bytes());
        assert_eq!(decode("%zz%4"), b"%zz%4");
        assert_eq!(decode("%2f%2F"), b"//");
        assert_eq!(decode(""), b"");
    }
}
