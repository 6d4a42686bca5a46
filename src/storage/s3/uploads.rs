//! Incomplete multipart uploads: listed (`ListMultipartUploads`) and aborted
//! (`AbortMultipartUpload`) with requests signed here (AWS SigV4 by reqsign, the
//! signer opendal itself uses), since opendal can abort only the upload of a writer it
//! still holds, not one a crashed process left behind.

use std::io;

use reqsign_aws_v4::{Credential, RequestSigner, StaticCredentialProvider};
use reqsign_core::{Context, Signer};
use serde::Deserialize;

use super::Credentials;

/// An upload started and never completed nor aborted: its parts are stored (and
/// billed) but no object exists.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pending {
    /// The full key in the bucket (with the target's prefix).
    pub key: String,
    pub upload_id: String,
}

/// Signed requests to one bucket.
pub struct Uploads {
    client: reqwest::Client,
    /// `<endpoint>/<bucket>` (path style) or `<scheme>://<bucket>.<host>`.
    bucket_url: String,
    signer: Signer<Credential>,
}

impl std::fmt::Debug for Uploads {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Uploads")
            .field("bucket_url", &self.bucket_url)
            .finish_non_exhaustive()
    }
}

impl Uploads {
    pub fn new(
        client: reqwest::Client,
        bucket_url: String,
        region: &str,
        credentials: &Credentials,
    ) -> Uploads {
        let provider = StaticCredentialProvider::new(
            &credentials.access_key_id,
            &credentials.secret_access_key,
        );
        let signer = Signer::new(Context::new(), provider, RequestSigner::new("s3", region));
        Uploads {
            client,
            bucket_url,
            signer,
        }
    }

    /// The incomplete uploads whose keys start with `prefix` (every page).
    pub async fn list(&self, prefix: &str) -> io::Result<Vec<Pending>> {
        let mut out = Vec::new();
        let mut markers: Option<(String, String)> = None;
        loop {
            let mut query = format!("uploads=&prefix={}", encode(prefix, false));
            if let Some((key, id)) = &markers {
                query.push_str(&format!(
                    "&key-marker={}&upload-id-marker={}",
                    encode(key, false),
                    encode(id, false)
                ));
            }
            let url = format!("{}/?{query}", self.bucket_url);
            let body = self.send(http::Method::GET, &url).await?;
            let page = parse_list(&body)?;
            out.extend(page.uploads);
            match page.next {
                Some(next) if markers.as_ref() != Some(&next) => markers = Some(next),
                _ => break,
            }
        }
        Ok(out)
    }

    /// Abort one upload; one already gone is no error.
    pub async fn abort(&self, upload: &Pending) -> io::Result<()> {
        let url = format!(
            "{}/{}?uploadId={}",
            self.bucket_url,
            encode(&upload.key, true),
            encode(&upload.upload_id, false)
        );
        match self.send(http::Method::DELETE, &url).await {
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            other => other.map(drop),
        }
    }

    async fn send(&self, method: http::Method, url: &str) -> io::Result<String> {
        let request = http::Request::builder()
            .method(method)
            .uri(url)
            .body(())
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e.to_string()))?;
        let (mut parts, ()) = request.into_parts();
        self.signer
            .sign(&mut parts, None)
            .await
            .map_err(|e| io::Error::other(format!("cannot sign the request: {e}")))?;
        let request = http::Request::from_parts(parts, reqwest::Body::from(Vec::new()));
        let request = reqwest::Request::try_from(request)
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e.without_url()))?;
        let response = self
            .client
            .execute(request)
            .await
            .map_err(|e| io::Error::other(e.without_url()))?;
        let status = response.status();
        let body = response
            .text()
            .await
            .map_err(|e| io::Error::other(e.without_url()))?;
        if status.is_success() {
            return Ok(body);
        }
        Err(status_error(status.as_u16(), &body))
    }
}

/// An S3 error answer as an I/O error: its status and `<Code>`, never the request.
pub fn status_error(status: u16, body: &str) -> io::Error {
    let kind = match status {
        403 => io::ErrorKind::PermissionDenied,
        404 => io::ErrorKind::NotFound,
        409 | 412 => io::ErrorKind::AlreadyExists,
        _ => io::ErrorKind::Other,
    };
    let code = tag(body, "Code").unwrap_or_default();
    io::Error::new(kind, format!("HTTP {status} {code}").trim_end().to_string())
}

/// The text of the first `<name>` element, unescaped.
fn tag(body: &str, name: &str) -> Option<String> {
    let open = format!("<{name}>");
    let start = body.find(&open)? + open.len();
    let end = body[start..].find(&format!("</{name}>"))? + start;
    quick_xml::escape::unescape(&body[start..end])
        .ok()
        .map(|s| s.into_owned())
}

/// One page of `ListMultipartUploads`: the uploads, and the markers of the next page
/// when it is truncated.
#[derive(Debug, PartialEq)]
pub struct Page {
    pub uploads: Vec<Pending>,
    pub next: Option<(String, String)>,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct ListResult {
    #[serde(default)]
    is_truncated: bool,
    #[serde(default)]
    next_key_marker: Option<String>,
    #[serde(default)]
    next_upload_id_marker: Option<String>,
    #[serde(default, rename = "Upload")]
    uploads: Vec<UploadEntry>,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct UploadEntry {
    key: String,
    upload_id: String,
}

pub fn parse_list(body: &str) -> io::Result<Page> {
    let result: ListResult = quick_xml::de::from_str(body).map_err(|e| {
        io::Error::new(
            io::ErrorKind::InvalidData,
            format!("cannot read the list of uploads: {e}"),
        )
    })?;
    let next = match (
        result.is_truncated,
        result.next_key_marker,
        result.next_upload_id_marker,
    ) {
        (true, Some(k), Some(u)) => Some((k, u)),
        _ => None,
    };
    Ok(Page {
        uploads: result
            .uploads
            .into_iter()
            .map(|u| Pending {
                key: u.key,
                upload_id: u.upload_id,
            })
            .collect(),
        next,
    })
}

/// Percent-encoding as SigV4 wants it: every byte but the unreserved ones (and `/` in
/// a path).
pub fn encode(s: &str, keep_slash: bool) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric()
            || matches!(b, b'-' | b'_' | b'.' | b'~')
            || (keep_slash && b == b'/')
        {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    // Keys and query values are encoded as SigV4 canonicalizes them.
    #[test]
    fn encodes() {
        assert_eq!(
            encode("dcb/hot/a b+c.tar.gz", true),
            "dcb/hot/a%20b%2Bc.tar.gz"
        );
        assert_eq!(encode("dcb/hot/", false), "dcb%2Fhot%2F");
        assert_eq!(encode("é~", false), "%C3%A9~");
    }

    // A page of uploads is read, escaped keys and next-page markers included.
    #[test]
    fn parses_pages() {
        let body = r#"<?xml version="1.0" encoding="UTF-8"?>
<ListMultipartUploadsResult xmlns="http://s3.amazonaws.com/doc/2006-03-01/">
  <Bucket>b</Bucket><KeyMarker></KeyMarker><UploadIdMarker></UploadIdMarker>
  <NextKeyMarker>dcb/hot/b&amp;c.tar.gz</NextKeyMarker><NextUploadIdMarker>u2</NextUploadIdMarker>
  <MaxUploads>2</MaxUploads><IsTruncated>true</IsTruncated>
  <Upload><Key>dcb/hot/a.tar.gz</Key><UploadId>u1</UploadId><Initiated>2026-01-01T00:00:00.000Z</Initiated></Upload>
  <Upload><Key>dcb/hot/b&amp;c.tar.gz</Key><UploadId>u2</UploadId></Upload>
</ListMultipartUploadsResult>"#;
        let page = parse_list(body).unwrap();
        assert_eq!(page.uploads.len(), 2);
        assert_eq!(page.uploads[1].key, "dcb/hot/b&c.tar.gz");
        assert_eq!(
            page.next,
            Some(("dcb/hot/b&c.tar.gz".to_string(), "u2".to_string()))
        );
        let empty = parse_list(
            "<ListMultipartUploadsResult><IsTruncated>false</IsTruncated></ListMultipartUploadsResult>",
        )
        .unwrap();
        assert_eq!(
            empty,
            Page {
                uploads: vec![],
                next: None
            }
        );
        assert!(parse_list("not xml <").is_err());
    }

    // An error answer keeps its status and code, as the kind callers test.
    #[test]
    fn errors_keep_status_and_code() {
        let e = status_error(
            403,
            "<Error><Code>AccessDenied</Code><Message>no</Message></Error>",
        );
        assert_eq!(e.kind(), io::ErrorKind::PermissionDenied);
        assert_eq!(e.to_string(), "HTTP 403 AccessDenied");
        assert_eq!(status_error(404, "").kind(), io::ErrorKind::NotFound);
        assert_eq!(status_error(500, "").to_string(), "HTTP 500");
    }
}
