//! The gateway's Prometheus metrics. Every series carries the server it fronts
//! (`server="<namespace>/<name>"`, a constant label); requests are counted by method, tool
//! (for `tools/call`, a tool the server listed; `other` otherwise), principal class (the first
//! role that matches the caller, `none` without one) and outcome. The dashboard shipped in the
//! chart (`charts/palisade/dashboards/`) is built on these names.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabel {
    pub method: String,
    pub tool: String,
    pub principal_class: String,
    pub outcome: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct MethodLabel {
    pub method: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct EventLabel {
    pub kind: String,
}

pub struct Metrics {
    pub requests: Family<RequestLabel, Counter>,
    pub duration: Family<MethodLabel, Histogram>,
    pub security_events: Family<EventLabel, Counter>,
    pub sessions: Gauge,
    pub in_flight: Gauge,
    pub ready: Gauge,
    /// Tools withheld because their definition differs from its pin or fails screening.
    pub tools_withheld: Gauge,
    registry: Registry,
}

impl Metrics {
    /// Metrics of the gateway in front of `server` (`<namespace>/<name>`).
    pub fn new(server: &str) -> Metrics {
        let mut registry = Registry::with_prefix_and_labels(
            "palisade_gateway",
            [(std::borrow::Cow::Borrowed("server"), std::borrow::Cow::Owned(server.to_string()))]
                .into_iter(),
        );
        let requests = Family::<RequestLabel, Counter>::default();
        let duration = Family::<MethodLabel, Histogram>::new_with_constructor(
            (|| Histogram::new(exponential_buckets(0.0001, 2.0, 18))) as fn() -> Histogram,
        );
        let security_events = Family::<EventLabel, Counter>::default();
        let (sessions, in_flight, ready) = (Gauge::default(), Gauge::default(), Gauge::default());
        registry.register(
            "requests",
            "MCP requests by method, tool, principal class and outcome",
            requests.clone(),
        );
        registry.register(
            "request_duration_seconds",
            "Time from receiving a request to the final response",
            duration.clone(),
        );
        registry.register("security_events", "Security events by kind", security_events.clone());
        registry.register("sessions", "Open client sessions (session era)", sessions.clone());
        registry.register("in_flight", "Requests being served", in_flight.clone());
        registry.register("ready", "1 when the handshake with the server succeeded", ready.clone());
        let tools_withheld = Gauge::default();
        registry.register(
            "tools_withheld",
            "Tools withheld: definition differs from its pin, or screening hides it",
            tools_withheld.clone(),
        );
        Metrics {
            requests,
            duration,
            security_events,
            sessions,
            in_flight,
            ready,
            tools_withheld,
            registry,
        }
    }

    /// Counts one request (and observes its duration, when it reached a final answer).
    pub fn count(&self, label: RequestLabel, took: Option<std::time::Duration>) {
        if let Some(d) = took {
            self.duration
                .get_or_create(&MethodLabel { method: label.method.clone() })
                .observe(d.as_secs_f64());
        }
        self.requests.get_or_create(&label).inc();
    }

    pub fn encode(&self) -> String {
        let mut out = String::new();
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new("")
    }
}
