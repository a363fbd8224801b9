//! The one dispatcher: the verdict on an object by its kind, given what is known about the
//! cluster. `palisade check` calls it offline (every given policy applies, the CRDs' schema and
//! CEL are applied here, claims are not looked up); the webhook with the namespace's labels and
//! the claimed server from its caches; the operator for every MCPServer it reconciles.

use std::collections::BTreeMap;

use palisade_crds::MCP_SERVER_LABEL;
use palisade_crds::mcppolicy::MCPPolicy;

use crate::object::Object;
use crate::rules::{mcppolicy, mcpserver, mcpvirtualserver, workload};
use crate::schema::{CrdSchemas, SchemaError};
use crate::verdict::{Verdict, Violation};

/// What a workload's claimed MCP server looks like in the cluster.
pub enum Claimed {
    /// No MCPServer of that name in the namespace.
    Missing,
    /// The MCPServer exists; the digest its pods may run, if known yet.
    Digest(Option<String>),
    /// The MCPServer is remote: its pods run the gateway alone.
    Remote,
}

/// The MCPServers of a namespace.
pub type ServersOf<'a> = dyn Fn(&str) -> Vec<palisade_crds::MCPServer> + 'a;

/// What is known beyond the object itself.
#[derive(Default)]
pub struct Facts<'a> {
    /// Labels of the object's namespace; `None` offline, where every given policy applies.
    pub namespace_labels: Option<&'a BTreeMap<String, String>>,
    /// Every MCPPolicy (those that select the namespace are applied).
    pub policies: &'a [&'a MCPPolicy],
    /// The CRDs' schema and CEL rules, applied offline (in a cluster the API server has
    /// applied them before admission runs).
    pub schemas: Option<&'a Result<CrdSchemas, SchemaError>>,
    /// Looks up a workload's claimed MCPServer; `None` offline, where claims are not checked.
    pub claimed: Option<&'a dyn Fn(&str) -> Claimed>,
    /// The gateway image the workload's gateway container must run, when known.
    pub gateway_image: Option<&'a str>,
    /// The MCPServers of a namespace (for virtual servers); `None` when unknown.
    pub servers: Option<&'a ServersOf<'a>>,
}

/// The outcome for one object.
#[derive(Debug)]
pub enum Review {
    Verdict(Verdict),
    /// The object is none of admission's business, and why.
    NotReviewed(String),
}

/// The policies that select a namespace with `labels` (all of them when unknown).
pub fn selecting<'a>(
    policies: &[&'a MCPPolicy],
    labels: Option<&BTreeMap<String, String>>,
) -> Vec<&'a MCPPolicy> {
    policies.iter().copied().filter(|p| mcppolicy::selects(p, labels)).collect()
}

/// The CRD's verdict on an object, or a refusal when the schemas cannot be used.
fn structure(facts: &Facts, f: impl Fn(&CrdSchemas) -> Verdict) -> Verdict {
    match facts.schemas {
        None => Verdict::default(),
        Some(Ok(c)) => f(c),
        Some(Err(e)) => {
            let mut v = Verdict::default();
            v.deny("crd.schema", "<object>", e.to_string());
            v
        }
    }
}

/// Reviews `obj`.
pub fn review(obj: &Object, facts: &Facts) -> Review {
    match obj {
        Object::Server(s) => {
            let mut v = structure(facts, |c| c.server(s));
            v.merge(mcpserver::review(s, &selecting(facts.policies, facts.namespace_labels)));
            Review::Verdict(v)
        }
        Object::VirtualServer(vs) => {
            let mut v = structure(facts, |c| c.virtual_server(vs));
            let ns = vs.metadata.namespace.clone().unwrap_or_default();
            let servers = facts.servers.map(|f| f(&ns));
            let policies = selecting(facts.policies, facts.namespace_labels);
            v.merge(mcpvirtualserver::review(vs, servers.as_deref(), &policies));
            Review::Verdict(v)
        }
        Object::Policy(p) => {
            let mut v = structure(facts, |c| c.policy(p));
            v.merge(mcppolicy::review_policy(p));
            Review::Verdict(v)
        }
        Object::Other { kind, .. } => {
            Review::NotReviewed(format!("{kind} cannot run an MCP server: not reviewed"))
        }
        Object::Workload { kind, value } => {
            let Some(claimed) = workload::claimed_server(value, kind) else {
                return Review::NotReviewed(format!(
                    "no {MCP_SERVER_LABEL} label: not an MCP workload, not reviewed"
                ));
            };
            let claim = facts.claimed.map(|f| f(&claimed));
            let gateway_only = matches!(claim, Some(Claimed::Remote));
            let (verified_digest, problem) = match claim {
                None | Some(Claimed::Remote) => (None, None),
                Some(Claimed::Missing) => (
                    None,
                    Some(format!(
                        "it claims MCPServer {claimed}, which does not exist in this namespace; MCP servers are created through an MCPServer, not by hand"
                    )),
                ),
                Some(Claimed::Digest(None)) => (
                    None,
                    Some(format!(
                        "MCPServer {claimed} has no verified image digest yet; the operator records it before creating pods"
                    )),
                ),
                Some(Claimed::Digest(d)) => (d, None),
            };
            let expect = workload::Expectations {
                verified_digest,
                gateway_image: facts.gateway_image.map(str::to_string),
                gateway_only,
            };
            let mut v = workload::review_workload(value, kind, &expect).unwrap_or_default();
            if let Some(message) = problem {
                v.violations.insert(
                    0,
                    Violation {
                        field: format!("metadata.labels[{MCP_SERVER_LABEL}]"),
                        message,
                        rule: "workload.claimedServer",
                        policy: None,
                    },
                );
            }
            Review::Verdict(v)
        }
    }
}
