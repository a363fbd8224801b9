//! Palisade's MCP gateway: the only way in to an MCP server.

pub mod approvals;
pub mod audit;
pub mod auth;
pub mod bridge;
pub mod events;
pub mod forward;
pub mod guard;
pub mod headers;
pub mod http;
pub mod jsonrpc;
pub mod mediate;
pub mod metrics;
pub mod policy;
pub mod quota;
pub mod sanitize;
pub mod serve;
pub mod sse;
pub mod state;
pub mod toolgate;
pub mod tools;
pub mod trace;
pub mod upstream;
pub mod validate;
