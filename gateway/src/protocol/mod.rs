//! MCP and JSON-RPC as data: envelopes, SSE framing, header encoding, revisions, the
//! per-revision message schemas and their checker, exact translation between eras, and the
//! tool definitions servers declare. Pure: no I/O, no state, and nothing else of the crate.

pub mod digest;
pub mod headers;
pub mod jsonrpc;
pub mod revision;
pub mod schema;
pub mod screening;
pub mod sse;
pub mod tool;
pub mod translate;
