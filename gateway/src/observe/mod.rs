//! What the gateway tells the world about itself: the hash-chained audit log, security events
//! (with severity and ATT&CK technique), Prometheus metrics, and W3C trace context.

pub mod audit;
pub mod events;
pub mod metrics;
pub mod trace;

/// Where a component reports to: metrics and the audit log (security events go to both).
pub struct Observer {
    pub metrics: metrics::Metrics,
    pub audit: audit::Audit,
}

/// A secret identifier (a session or approval ID) as logs and audit records show it: its
/// first characters, never the whole secret.
pub fn short(id: &str) -> String {
    id.chars().take(8).collect()
}
