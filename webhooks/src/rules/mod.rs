//! Admission rules. Pure functions of the objects under review, so `palisade check` gives
//! offline exactly the verdict the webhook gives in the cluster.

pub mod argv;
pub mod policy;
pub mod pss;
pub mod server;
pub mod trust;
pub mod workload;
