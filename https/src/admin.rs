//! Plain-HTTP `/healthz`, `/readyz` and `/metrics` for every Palisade process, on a port of its
//! own (never the port that serves MCP or admission traffic).

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;

/// Produces the Prometheus text exposition.
pub type Encoder = Arc<dyn Fn() -> String + Send + Sync>;

/// Readiness as a function, so that each process decides (caches synced, upstream reachable).
pub type Readiness = Arc<dyn Fn() -> bool + Send + Sync>;

pub fn flag(ready: Arc<AtomicBool>) -> Readiness {
    Arc::new(move || ready.load(Ordering::Relaxed))
}

#[derive(Clone)]
struct AdminState {
    encode: Encoder,
    ready: Readiness,
}

async fn healthz() -> &'static str {
    "ok"
}

async fn readyz(State(s): State<AdminState>) -> impl IntoResponse {
    if (s.ready)() {
        (StatusCode::OK, "ok")
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "not ready")
    }
}

async fn metrics(State(s): State<AdminState>) -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "application/openmetrics-text; version=1.0.0; charset=utf-8")],
        (s.encode)(),
    )
}

/// The admin routes; `extra` adds process-specific routes (the gateway's handshake summary).
pub fn router(encode: Encoder, ready: Readiness) -> Router {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .with_state(AdminState { encode, ready })
}

/// Serves `router` on `addr` until `shutdown` resolves; returns the bound address first so that
/// port 0 can be used.
pub async fn bind(addr: SocketAddr) -> std::io::Result<tokio::net::TcpListener> {
    tokio::net::TcpListener::bind(addr).await
}

pub async fn serve(
    listener: tokio::net::TcpListener,
    router: Router,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    axum::serve(listener, router).with_graceful_shutdown(shutdown).await
}
