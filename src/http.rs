//! The HTTP admin endpoint: `/` (the status page, [`crate::page`]), `/healthz`,
//! `/status` (JSON), `/metrics` (Prometheus). Off unless configured; loopback by
//! default. With a token, every path but `/healthz` requires it
//! (`Authorization: Bearer TOKEN` or `?token=TOKEN`).

use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;

/// What the endpoint shows, supplied by the service.
pub trait Source: Send + Sync + 'static {
    fn healthy(&self) -> bool;
    fn status_json(&self) -> String;
    fn metrics_text(&self) -> String;
    /// The status page (HTML) for a browser that sent `accept_language`.
    fn page_html(&self, accept_language: Option<&str>) -> String;
}

async fn page(State(s): State<Arc<dyn Source>>, headers: HeaderMap) -> Response {
    let accept = headers
        .get(header::ACCEPT_LANGUAGE)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    // The page reads the state and scans the archives: not on an async worker.
    match tokio::task::spawn_blocking(move || s.page_html(accept.as_deref())).await {
        Ok(body) => (
            [
                (header::CONTENT_TYPE, "text/html; charset=utf-8"),
                (header::CACHE_CONTROL, "no-store"),
                (header::VARY, "Accept-Language"),
            ],
            body,
        )
            .into_response(),
        Err(_) => (StatusCode::INTERNAL_SERVER_ERROR, "page failed\n").into_response(),
    }
}

/// Whether a request carries `token`, as a bearer token or a `token` query parameter.
pub fn authorized(token: &str, authorization: Option<&str>, query: Option<&str>) -> bool {
    let bearer = authorization
        .and_then(|a| a.trim().split_once(' '))
        .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
        .map(|(_, t)| t.trim());
    let in_query = query
        .into_iter()
        .flat_map(|q| q.split('&'))
        .filter_map(|kv| kv.strip_prefix("token=").map(percent_decode));
    bearer
        .map(str::to_owned)
        .into_iter()
        .chain(in_query)
        .any(|given| same(given.as_bytes(), token.as_bytes()))
}

/// Equal, in a time that does not depend on where they differ.
fn same(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let hex = |c: u8| (c as char).to_digit(16).map(|d| d as u8);
        match (
            b[i],
            b.get(i + 1).copied().and_then(hex),
            b.get(i + 2).copied().and_then(hex),
        ) {
            (b'%', Some(h), Some(l)) => {
                out.push(h * 16 + l);
                i += 3;
            }
            (b'+', _, _) => {
                out.push(b' ');
                i += 1;
            }
            (c, _, _) => {
                out.push(c);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

async fn require_token(State(token): State<Arc<str>>, req: Request, next: Next) -> Response {
    let authorization = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok());
    if authorized(&token, authorization, req.uri().query()) {
        next.run(req).await
    } else {
        (
            StatusCode::UNAUTHORIZED,
            [(header::WWW_AUTHENTICATE, "Bearer")],
            "a token is required: `Authorization: Bearer TOKEN` or `?token=TOKEN`\n",
        )
            .into_response()
    }
}

async fn healthz(State(s): State<Arc<dyn Source>>) -> Response {
    if s.healthy() {
        (StatusCode::OK, "ok\n").into_response()
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "unhealthy\n").into_response()
    }
}

async fn status(State(s): State<Arc<dyn Source>>) -> Response {
    // The status reads the state and scans the archives: not on an async worker.
    match tokio::task::spawn_blocking(move || s.status_json()).await {
        Ok(body) => ([(header::CONTENT_TYPE, "application/json")], body).into_response(),
        Err(_) => (StatusCode::INTERNAL_SERVER_ERROR, "status failed\n").into_response(),
    }
}

async fn metrics(State(s): State<Arc<dyn Source>>) -> Response {
    (
        [(header::CONTENT_TYPE, crate::metrics::CONTENT_TYPE)],
        s.metrics_text(),
    )
        .into_response()
}

/// The address to bind: a bare port (`9187` or `:9187`) is on loopback; anything else
/// is taken as given.
pub fn listen_addr(addr: &str) -> String {
    let port = addr.strip_prefix(':').unwrap_or(addr);
    if port.parse::<u16>().is_ok() {
        format!("127.0.0.1:{port}")
    } else {
        addr.to_string()
    }
}

/// Bind `addr` (see [`listen_addr`]) and serve until the returned task is aborted.
/// With `token`, every path but `/healthz` requires it. Returns the bound address
/// (useful with port 0).
pub async fn spawn(
    addr: &str,
    source: Arc<dyn Source>,
    token: Option<String>,
) -> std::io::Result<(SocketAddr, tokio::task::JoinHandle<()>)> {
    let listener = tokio::net::TcpListener::bind(listen_addr(addr)).await?;
    let bound = listener.local_addr()?;
    if !bound.ip().is_loopback() && token.is_none() {
        tracing::warn!(
            %bound,
            "THE ADMIN ENDPOINT IS OPEN: it listens beyond loopback without a token, so \
             anyone who reaches {bound} sees the status page, /status and /metrics; set \
             http.token (or DCB_HTTP_TOKEN) in dcb.yaml, or listen on 127.0.0.1"
        );
    }
    let mut guarded = Router::new()
        .route("/", get(page))
        .route("/status", get(status))
        .route("/metrics", get(metrics))
        .with_state(source.clone());
    if let Some(token) = token {
        guarded = guarded.layer(middleware::from_fn_with_state(
            Arc::<str>::from(token),
            require_token,
        ));
    }
    let app = Router::new()
        .route("/healthz", get(healthz))
        .with_state(source)
        .merge(guarded);
    let task = tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, app).await {
            tracing::error!(error = %e, "the admin endpoint stopped");
        }
    });
    Ok((bound, task))
}

#[cfg(test)]
mod tests {
    use super::*;
    use rstest::rstest;

    // A bare port means loopback (the endpoint has no authentication); a host stays.
    #[rstest]
    #[case("9187", "127.0.0.1:9187")]
    #[case(":9187", "127.0.0.1:9187")]
    #[case("127.0.0.1:9187", "127.0.0.1:9187")]
    #[case("0.0.0.0:9187", "0.0.0.0:9187")]
    #[case("[::1]:9187", "[::1]:9187")]
    #[case("localhost:9187", "localhost:9187")]
    fn bare_ports_are_loopback(#[case] given: &str, #[case] bound: &str) {
        assert_eq!(listen_addr(given), bound);
    }

    // The token is accepted as a bearer token or a query parameter (percent-encoded
    // or not), and nothing else passes.
    #[rstest]
    #[case(Some("Bearer s3cr+t"), None, true)]
    #[case(Some("bearer  s3cr+t "), None, true)]
    #[case(None, Some("a=1&token=s3cr%2Bt"), true)]
    #[case(None, Some("token=s3cr+t"), false)]
    #[case(Some("Basic s3cr+t"), None, false)]
    #[case(Some("Bearer s3cr"), Some("token="), false)]
    #[case(None, None, false)]
    #[case(Some("Bearer"), Some("tokens=s3cr%2Bt"), false)]
    fn token_from_header_or_query(
        #[case] authorization: Option<&str>,
        #[case] query: Option<&str>,
        #[case] ok: bool,
    ) {
        assert_eq!(authorized("s3cr+t", authorization, query), ok);
    }
}
