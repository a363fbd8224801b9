//! The admission decision for one AdmissionReview object, given what the cluster knows.
//! Pure: the server gathers the inputs from its caches; tests call it directly.

use std::collections::BTreeMap;

use palisade_api::{MCPPolicy, MCPServer};
use palisade_core::image::ImageRef;
use serde_json::Value;

use crate::check::parse_object;
use crate::rules::{policy, server, workload};
use crate::verdict::Verdict;

/// What a workload's claimed MCP server looks like in the cluster.
pub enum Claimed {
    /// No MCPServer of that name in the namespace.
    Missing,
    /// The MCPServer exists; the digest its pods may run, if known yet.
    Digest(Option<String>),
}

pub struct Inputs<'a> {
    /// Labels of the request's namespace (`None` for cluster-scoped objects).
    pub namespace_labels: Option<&'a BTreeMap<String, String>>,
    pub policies: &'a [&'a MCPPolicy],
    pub claimed: &'a dyn Fn(&str) -> Claimed,
    pub gateway_image: Option<&'a str>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    pub allowed: bool,
    /// Why not, naming fields and fixes.
    pub message: String,
    pub warnings: Vec<String>,
}

impl Decision {
    fn from_verdict(what: &str, v: Verdict) -> Decision {
        Decision {
            allowed: v.allowed(),
            message: if v.allowed() {
                String::new()
            } else {
                format!("{what} is not admitted: {}", v.message())
            },
            warnings: v.warnings,
        }
    }

    fn deny(message: String) -> Decision {
        Decision { allowed: false, message, warnings: vec![] }
    }

    fn allow() -> Decision {
        Decision { allowed: true, message: String::new(), warnings: vec![] }
    }
}

/// The verified digest an MCPServer's pods may run: the spec's own digest, else the one the
/// operator resolved and recorded.
pub fn server_digest(server: &Value) -> Option<String> {
    let image = server.pointer("/spec/image").and_then(Value::as_str)?;
    if let Some(d) = ImageRef::parse(image).ok().and_then(|r| r.digest) {
        return Some(d);
    }
    let recorded_for = server.pointer("/status/image/reference").and_then(Value::as_str);
    let digest = server.pointer("/status/image/digest").and_then(Value::as_str);
    (recorded_for == Some(image)).then(|| digest.map(str::to_string)).flatten()
}

/// Decides on `object` of `kind` (the object being created or updated).
pub fn decide(kind: &str, object: &Value, inputs: &Inputs) -> Decision {
    let name = object.pointer("/metadata/name").and_then(Value::as_str).unwrap_or("<generated>");
    match kind {
        "MCPServer" => match parse_object::<MCPServer>(object) {
            Err(e) => Decision::deny(format!(
                "MCPServer {name} is not admitted: {}: {}",
                e.field.unwrap_or_default(),
                e.message
            )),
            Ok(s) => {
                let selecting: Vec<&MCPPolicy> = inputs
                    .policies
                    .iter()
                    .copied()
                    .filter(|p| policy::selects(p, inputs.namespace_labels))
                    .collect();
                Decision::from_verdict(&format!("MCPServer {name}"), server::review(&s, &selecting))
            }
        },
        "MCPPolicy" => match parse_object::<MCPPolicy>(object) {
            Err(e) => Decision::deny(format!(
                "MCPPolicy {name} is not admitted: {}: {}",
                e.field.unwrap_or_default(),
                e.message
            )),
            Ok(p) => {
                Decision::from_verdict(&format!("MCPPolicy {name}"), policy::review_policy(&p))
            }
        },
        k if workload::is_workload_kind(k) => {
            let Some(claimed) = workload::claimed_server(object, k) else {
                return Decision::allow();
            };
            let label = format!("metadata.labels[{}]", palisade_api::MCP_SERVER_LABEL);
            let (verified, problem) = match (inputs.claimed)(&claimed) {
                Claimed::Missing => (
                    None,
                    Some(format!(
                        "it claims MCPServer {claimed}, which does not exist in this namespace; MCP servers are created through an MCPServer, not by hand"
                    )),
                ),
                Claimed::Digest(None) => (
                    None,
                    Some(format!(
                        "MCPServer {claimed} has no verified image digest yet; the operator records it before creating pods"
                    )),
                ),
                Claimed::Digest(d) => (d, None),
            };
            let expect = workload::Expectations {
                verified_digest: verified,
                gateway_image: inputs.gateway_image.map(str::to_string),
            };
            let mut v = workload::review_workload(object, k, &expect).unwrap_or_default();
            if let Some(message) = problem {
                v.violations.insert(
                    0,
                    crate::verdict::Violation {
                        field: label,
                        message,
                        rule: "workload.claimedServer",
                        policy: None,
                    },
                );
            }
            Decision::from_verdict(&format!("{k} {name}"), v)
        }
        // Anything else never reaches the webhook (rules and matchConditions), but if it does
        // it is none of Palisade's business.
        _ => Decision::allow(),
    }
}
