//! The result of reviewing one object: violations (which reject it) and warnings.

use serde::Serialize;
use std::fmt;

/// One reason to reject an object: where, what is wrong and how to fix it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Violation {
    /// Field path, e.g. `spec.egress[0].cidr`.
    pub field: String,
    /// What is wrong and how to fix it, in one sentence a person can act on.
    pub message: String,
    /// Stable identifier of the rule, for documentation, metrics and tests.
    pub rule: &'static str,
    /// The policy that imposed it, when it is not part of the built-in baseline.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub policy: Option<String>,
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.field, self.message)?;
        if let Some(p) = &self.policy {
            write!(f, " (MCPPolicy {p})")?;
        }
        write!(f, " [{}]", self.rule)
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Verdict {
    pub violations: Vec<Violation>,
    pub warnings: Vec<String>,
}

impl Verdict {
    pub fn allowed(&self) -> bool {
        self.violations.is_empty()
    }

    pub fn deny(
        &mut self,
        rule: &'static str,
        field: impl Into<String>,
        message: impl Into<String>,
    ) {
        self.violations.push(Violation {
            field: field.into(),
            message: message.into(),
            rule,
            policy: None,
        });
    }

    pub fn warn(&mut self, message: impl Into<String>) {
        self.warnings.push(message.into());
    }

    /// Adds `other`'s findings, attributing its violations to `policy`.
    pub fn merge_from_policy(&mut self, other: Verdict, policy: &str) {
        for mut v in other.violations {
            v.policy = Some(policy.to_string());
            self.violations.push(v);
        }
        self.warnings.extend(other.warnings);
    }

    pub fn merge(&mut self, other: Verdict) {
        self.violations.extend(other.violations);
        self.warnings.extend(other.warnings);
    }

    /// One message listing every violation, as the API server shows it to `kubectl`.
    pub fn message(&self) -> String {
        self.violations.iter().map(|v| v.to_string()).collect::<Vec<_>>().join("; ")
    }

    /// Whether some violation is of `rule` at `field`.
    pub fn has(&self, rule: &str, field: &str) -> bool {
        self.violations.iter().any(|v| v.rule == rule && v.field == field)
    }
}
