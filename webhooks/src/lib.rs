//! Admission for MCP workloads: the rules (pure), the offline checker and the webhook server.

pub mod admission;
pub mod check;
pub mod rules;
pub mod schema;
pub mod server;
pub mod tls;
pub mod verdict;

pub use verdict::{Verdict, Violation};
