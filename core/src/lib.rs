//! Kubernetes-free building blocks shared by every Palisade component.

pub mod config;
pub mod image;
pub mod naming;
pub mod net;
pub mod paths;
pub mod revisions;
pub mod secrets;
pub mod spec;
