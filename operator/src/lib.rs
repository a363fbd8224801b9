//! Palisade's control plane as a library, behind the `palisade` binary (`main.rs`): the
//! offline commands (`cli`, `osv`), the approvals client (`approvals`), `pin` (tool
//! definition digests from a running gateway into an MCPServer file), and the operator: `reconcile` (one MCPServer: policy
//! review, image pinning and verification, supply chain, certificates, apply, status),
//! with what it calls: `apply` (server-side apply against caches), `registry` (tag
//! resolution and the `Verifier` seam), `gateways` (the running gateways' admin `/status`,
//! behind the `Gateways` seam), `signature` (cosign), `sbom`, `status`
//! (conditions), `metrics`; `run` wires them into a process.

pub mod apply;
pub mod approvals;
pub mod cli;
pub mod gateways;
pub mod metrics;
pub mod osv;
pub mod pin;
pub mod reconcile;
pub mod registry;
pub mod run;
pub mod sbom;
pub mod signature;
pub mod status;
pub mod virtual_server;
