//! Security events: a structured log line (for the cluster's log shipper and SIEM) with
//! severity and the MITRE ATT&CK technique it relates to, and a metric.

use serde_json::json;
use tracing::warn;

use super::Observer;
use super::metrics::EventLabel;

/// Kinds of security events and their ATT&CK mapping.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    AuthFailure,
    PolicyBlock,
    RateLimit,
    ValidationFailure,
    UpstreamValidationFailure,
    SessionHijack,
    Ssrf,
    PathTraversal,
    SafetyFlagOverride,
    OriginRejected,
    /// A tool's live definition differs from its pin (a rug pull).
    ToolDefinitionChanged,
    /// A tool definition carries text aimed at the model (tool poisoning).
    ToolPoisoning,
}

impl Kind {
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::AuthFailure => "auth_failure",
            Kind::PolicyBlock => "policy_block",
            Kind::RateLimit => "rate_limit",
            Kind::ValidationFailure => "validation_failure",
            Kind::UpstreamValidationFailure => "upstream_validation_failure",
            Kind::SessionHijack => "session_hijack_attempt",
            Kind::Ssrf => "ssrf_attempt",
            Kind::PathTraversal => "path_traversal_attempt",
            Kind::SafetyFlagOverride => "safety_flag_override",
            Kind::OriginRejected => "origin_rejected",
            Kind::ToolDefinitionChanged => "tool_definition_changed",
            Kind::ToolPoisoning => "tool_poisoning",
        }
    }

    pub fn severity(self) -> &'static str {
        match self {
            Kind::SessionHijack
            | Kind::Ssrf
            | Kind::ToolDefinitionChanged
            | Kind::ToolPoisoning => "high",
            Kind::AuthFailure
            | Kind::PathTraversal
            | Kind::SafetyFlagOverride
            | Kind::UpstreamValidationFailure
            | Kind::OriginRejected => "medium",
            Kind::PolicyBlock | Kind::ValidationFailure | Kind::RateLimit => "low",
        }
    }

    /// MITRE ATT&CK technique IDs.
    pub fn technique(self) -> &'static str {
        match self {
            Kind::AuthFailure => "T1110",   // Brute Force
            Kind::SessionHijack => "T1550", // Use Alternate Authentication Material
            Kind::Ssrf => "T1090",          // Proxy (server-side request forgery pivot)
            Kind::PathTraversal => "T1083", // File and Directory Discovery
            Kind::PolicyBlock => "T1190",   // Exploit Public-Facing Application
            Kind::RateLimit => "T1499",     // Endpoint Denial of Service
            Kind::ValidationFailure => "T1190",
            Kind::UpstreamValidationFailure => "T1195", // Supply Chain Compromise (a misbehaving server)
            Kind::SafetyFlagOverride => "T1562",        // Impair Defenses
            Kind::OriginRejected => "T1189",            // Drive-by Compromise (DNS rebinding)
            Kind::ToolDefinitionChanged => "T1195.002", // Compromise Software Supply Chain
            Kind::ToolPoisoning => "T1027",             // Obfuscated Files or Information
        }
    }
}

/// Records a security event. `detail` must not contain secrets or client-visible paths.
pub fn emit(to: &Observer, kind: Kind, request_id: &str, principal: &str, detail: &str) {
    to.metrics.security_events.get_or_create(&EventLabel { kind: kind.as_str().into() }).inc();
    let event = json!({
        "kind": kind.as_str(),
        "severity": kind.severity(),
        "mitre_attack": kind.technique(),
        "request_id": request_id,
        "principal": principal,
        "detail": detail,
    });
    warn!(target: "palisade::security", security_event = %event, "{}", kind.as_str());
    // Security events are part of the tamper-evident record too (the record adds `type`).
    to.audit.record("security_event", event);
}
