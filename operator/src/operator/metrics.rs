//! Prometheus metrics and the operator's health endpoints.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ResultLabel {
    pub result: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct WriteLabel {
    pub kind: String,
    pub op: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct VerbLabel {
    pub verb: String,
}

pub struct Metrics {
    pub api_requests: Family<VerbLabel, Counter>,
    pub reconciles: Family<ResultLabel, Counter>,
    pub errors: Family<ResultLabel, Counter>,
    pub duration: Histogram,
    pub queue_depth: Gauge,
    pub api_writes: Family<WriteLabel, Counter>,
    pub leader: Gauge,
    registry: Registry,
}

impl Metrics {
    pub fn new() -> Metrics {
        let mut registry = Registry::with_prefix("palisade_operator");
        let reconciles = Family::<ResultLabel, Counter>::default();
        let errors = Family::<ResultLabel, Counter>::default();
        let duration = Histogram::new(exponential_buckets(0.001, 2.0, 16));
        let queue_depth = Gauge::default();
        let api_writes = Family::<WriteLabel, Counter>::default();
        let leader = Gauge::default();
        let api_requests = Family::<VerbLabel, Counter>::default();
        registry.register(
            "api_requests",
            "Requests sent to the API server, by verb (WATCH for watches)",
            api_requests.clone(),
        );
        registry.register("reconciles", "Reconciliations by result", reconciles.clone());
        registry.register("reconcile_errors", "Reconcile errors by kind", errors.clone());
        registry.register(
            "reconcile_duration_seconds",
            "Time per reconciliation",
            duration.clone(),
        );
        registry.register(
            "queue_depth",
            "MCPServers whose latest generation is not reconciled yet, plus those waiting to retry",
            queue_depth.clone(),
        );
        registry.register(
            "api_writes",
            "Create/patch/delete requests sent to the API server",
            api_writes.clone(),
        );
        registry.register("leader", "1 when this replica holds the leader lease", leader.clone());
        Metrics {
            api_requests,
            reconciles,
            errors,
            duration,
            queue_depth,
            api_writes,
            leader,
            registry,
        }
    }

    pub fn count_write(&self, kind: &str, op: &str) {
        self.api_writes.get_or_create(&WriteLabel { kind: kind.into(), op: op.into() }).inc();
    }

    /// Counts a request by verb; watches (`?watch=true`) are counted apart from reads.
    pub fn count_request<B>(&self, req: &http::Request<B>) {
        let watch = req
            .uri()
            .query()
            .is_some_and(|q| q.split('&').any(|kv| kv == "watch=true" || kv == "watch=1"));
        let verb = if watch { "WATCH".to_string() } else { req.method().as_str().to_string() };
        self.api_requests.get_or_create(&VerbLabel { verb }).inc();
    }

    pub fn encode(&self) -> String {
        let mut out = String::new();
        if prometheus_client::encoding::text::encode(&mut out, &self.registry).is_err() {
            out.clear();
        }
        out
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

#[derive(Clone)]
struct HttpState {
    metrics: Arc<Metrics>,
    ready: Arc<AtomicBool>,
}

async fn healthz() -> &'static str {
    "ok"
}

async fn readyz(State(s): State<HttpState>) -> impl IntoResponse {
    if s.ready.load(Ordering::Relaxed) {
        (StatusCode::OK, "ok")
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "starting")
    }
}

async fn metrics_handler(State(s): State<HttpState>) -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "application/openmetrics-text; version=1.0.0; charset=utf-8")],
        s.metrics.encode(),
    )
}

/// Serves `/healthz`, `/readyz` and `/metrics` until `shutdown` resolves.
pub async fn serve(
    addr: SocketAddr,
    metrics: Arc<Metrics>,
    ready: Arc<AtomicBool>,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let app = Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics_handler))
        .with_state(HttpState { metrics, ready });
    let listener = tokio::net::TcpListener::bind(addr).await?;
    tracing::info!(%addr, "serving /healthz, /readyz and /metrics");
    axum::serve(listener, app).with_graceful_shutdown(shutdown).await
}
