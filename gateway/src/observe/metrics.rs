//! The gateway's Prometheus metrics.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabel {
    pub method: String,
    pub outcome: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct EventLabel {
    pub kind: String,
}

pub struct Metrics {
    pub requests: Family<RequestLabel, Counter>,
    pub duration: Histogram,
    pub security_events: Family<EventLabel, Counter>,
    pub sessions: Gauge,
    pub in_flight: Gauge,
    pub ready: Gauge,
    registry: Registry,
}

impl Metrics {
    pub fn new() -> Metrics {
        let mut registry = Registry::with_prefix("palisade_gateway");
        let requests = Family::<RequestLabel, Counter>::default();
        let duration = Histogram::new(exponential_buckets(0.0001, 2.0, 18));
        let security_events = Family::<EventLabel, Counter>::default();
        let (sessions, in_flight, ready) = (Gauge::default(), Gauge::default(), Gauge::default());
        registry.register("requests", "MCP requests by method and outcome", requests.clone());
        registry.register(
            "request_duration_seconds",
            "Time from receiving a request to the final response",
            duration.clone(),
        );
        registry.register("security_events", "Security events by kind", security_events.clone());
        registry.register("sessions", "Open client sessions (session era)", sessions.clone());
        registry.register("in_flight", "Requests being served", in_flight.clone());
        registry.register("ready", "1 when the handshake with the server succeeded", ready.clone());
        Metrics { requests, duration, security_events, sessions, in_flight, ready, registry }
    }

    pub fn count(&self, method: &str, outcome: &str) {
        self.requests
            .get_or_create(&RequestLabel { method: method.into(), outcome: outcome.into() })
            .inc();
    }

    pub fn encode(&self) -> String {
        let mut out = String::new();
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}
