//! The operator's Prometheus metrics (served by `palisade_https::admin`).

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
