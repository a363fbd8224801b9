//! The admission webhook server: HTTPS with a certificate from Palisade's CA (rotated, its
//! bundle published to the webhook configurations), caches of what the cluster knows
//! (namespaces, MCPPolicies, MCPServers), and the decision of `palisade-admission` for every
//! AdmissionReview.

pub mod ca_store;
pub mod server;
