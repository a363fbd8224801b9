//! Admission for MCP workloads, as pure functions of the objects under review: the objects
//! typed strictly (`object`), the rules by object kind (`rules/`), the CRDs' own schema and
//! CEL offline (`schema`), one dispatcher by kind (`review`) that `palisade check`, the
//! webhook and the operator all call, the webhook's decision (`decide`), and the offline
//! checker over YAML files (`check`). No I/O: callers gather what the cluster knows and pass
//! it in.

pub mod check;
pub mod decide;
pub mod object;
pub mod review;
pub mod rules;
pub mod schema;
pub mod verdict;

pub use verdict::{Verdict, Violation};
