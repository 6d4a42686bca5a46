//! The HTTP admin endpoint: `/healthz`, `/status` (JSON), `/metrics` (Prometheus).
//! Off unless configured; loopback by default.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;

/// What the endpoint shows, supplied by the service.
pub trait Source: Send + Sync + 'static {
    fn healthy(&self) -> bool;
    fn status_json(&self) -> String;
    fn metrics_text(&self) -> String;
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
/// Returns the bound address (useful with port 0).
pub async fn spawn(
    addr: &str,
    source: Arc<dyn Source>,
) -> std::io::Result<(SocketAddr, tokio::task::JoinHandle<()>)> {
    let listener = tokio::net::TcpListener::bind(listen_addr(addr)).await?;
    let bound = listener.local_addr()?;
    if !bound.ip().is_loopback() {
        tracing::warn!(%bound, "the admin endpoint listens beyond loopback; it has no authentication");
    }
    let app = Router::new()
        .route("/healthz", get(healthz))
        .route("/status", get(status))
        .route("/metrics", get(metrics))
        .with_state(source);
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
}
