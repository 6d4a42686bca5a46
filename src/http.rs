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
    (
        [(header::CONTENT_TYPE, "application/json")],
        s.status_json(),
    )
        .into_response()
}

async fn metrics(State(s): State<Arc<dyn Source>>) -> Response {
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        s.metrics_text(),
    )
        .into_response()
}

/// Bind `addr` and serve until the returned task is aborted. Returns the bound
/// address (useful with port 0).
pub async fn spawn(
    addr: &str,
    source: Arc<dyn Source>,
) -> std::io::Result<(SocketAddr, tokio::task::JoinHandle<()>)> {
    let listener = tokio::net::TcpListener::bind(addr).await?;
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
