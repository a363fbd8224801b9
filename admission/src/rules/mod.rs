//! Admission rules by object kind. Pure functions of the objects under review, so that
//! `palisade check` gives offline exactly the verdict the webhook gives in the cluster.
//!
//! - `mcpserver`: the baseline every MCPServer meets (one function per section) and what the
//!   selecting MCPPolicies require of it (`gateway_baseline` and `gateway_policy_rules` for any
//!   gateway);
//! - `mcpvirtualserver`: virtual servers, with the servers they select;
//! - `mcppolicy`: MCPPolicy objects themselves, and which namespaces they select;
//! - `workload`: hand-made workloads that claim to be an MCP server;
//! - `pss`: Pod Security Standards (restricted) and Palisade's hardening, for pod specs;
//! - `argv`: how a command line is judged (wrappers, inline code, credentials);
//! - `trust`: which keys an image must be signed with (shared with the operator).

pub mod argv;
pub mod mcppolicy;
pub mod mcpserver;
pub mod mcpvirtualserver;
pub mod pss;
pub mod trust;
pub mod workload;
