//! Admission for MCP workloads: the rules (pure), the offline checker and the webhook server.

pub mod check;
pub mod rules;
pub mod verdict;

pub use verdict::{Verdict, Violation};
