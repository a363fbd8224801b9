//! The security controls a request passes: who is calling (authentication), what they may do
//! (authorization), what their arguments may be (guards), the gate of a tool call (effect,
//! approval, budgets), live tool definitions against their pins and screening, approvals, quotas, and the mediation and sanitising of what the server
//! says. Controls decide; they do not route or speak HTTP.

pub mod approvals;
pub mod authn;
pub mod authz;
pub mod definitions;
pub mod guard;
pub mod mediate;
pub mod quota;
pub mod sanitize;
pub mod toolgate;
