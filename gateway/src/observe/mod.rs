//! What the gateway tells the world about itself: the hash-chained audit log, security events
//! (with severity and ATT&CK technique), Prometheus metrics, W3C trace context, and
//! OpenTelemetry spans exported over OTLP.

pub mod audit;
pub mod events;
pub mod metrics;
pub mod telemetry;
pub mod trace;

/// Where a component reports to: metrics and the audit log (security events go to both), and
/// the tracer when spans are exported.
pub struct Observer {
    pub metrics: metrics::Metrics,
    pub audit: audit::Audit,
    pub telemetry: Option<telemetry::Telemetry>,
}

impl Observer {
    /// The server span of a request (a no-op without a tracer) and the trace context the
    /// request goes on with.
    pub fn request_span(
        &self,
        trace: &trace::TraceContext,
        method: &str,
    ) -> (telemetry::RequestSpan, trace::TraceContext) {
        match &self.telemetry {
            Some(t) => t.request(trace, method),
            None => (telemetry::RequestSpan::none(), trace.clone()),
        }
    }
}

/// A secret identifier (a session or approval ID) as logs and audit records show it: its
/// first characters, never the whole secret.
pub fn short(id: &str) -> String {
    id.chars().take(8).collect()
}
