//! Palisade's MCP gateway: the only way in to an MCP server.
//!
//! The code is layered by concern. Each row of the table may use only the rows below it
//! (`tests/layers.rs` reads this table and fails when an import crosses a layer upward):
//!
//! | layer | owns |
//! |---|---|
//! | `serve` | one gateway process: TLS listener, admin endpoints, handshake loop, housekeeping |
//! | `transport/` | the HTTP router, request layers (authentication, origin, refusal audit), Streamable HTTP, legacy SSE, the approvals API, response encoding |
//! | `pipeline/` | one client request: the stages, the relay of server messages, response checks; opening a session and dispatching its messages |
//! | `gateway` | the composition root: configuration, the server connection, state, controls, sessions |
//! | `session/` | client sessions of the session era and the registry that finds them |
//! | `controls/` | authentication, authorization, argument guards, the tool gate, approval plans, quotas, mediation and sanitising of server text |
//! | `upstream/` | connections to the server: one pipe per transport, correlation, the credentials presented to the server, the handshake probe |
//! | `state/` | what spans requests (approvals, counters, tool definitions) behind traits, in memory |
//! | `observe/` | audit log, security events, metrics, trace context, spans exported over OTLP |
//! | `protocol/` | MCP and JSON-RPC as data: envelopes, SSE, headers, revisions, per-revision schemas, era translation, tool definitions |
//! | `bridge` | the stdio bridge, a process of its own that uses nothing of the gateway |

pub mod bridge;
pub mod controls;
pub mod gateway;
pub mod observe;
pub mod pipeline;
pub mod protocol;
pub mod serve;
pub mod session;
pub mod state;
pub mod transport;
pub mod upstream;
