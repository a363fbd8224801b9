//! The webhook's decision for one AdmissionReview object, given what the cluster knows: the
//! review of `review.rs` as an admission response (allowed, a message naming fields and
//! fixes, warnings). Pure: the server gathers the inputs from its caches; tests call it
//! directly.

use std::collections::BTreeMap;

use palisade_core::image::ImageRef;
use palisade_crds::MCPPolicy;
use serde_json::Value;

use crate::object;
pub use crate::review::Claimed;
use crate::review::{Facts, Review, review};
use crate::verdict::Verdict;

pub struct Inputs<'a> {
    /// Labels of the request's namespace (`None` for cluster-scoped objects).
    pub namespace_labels: Option<&'a BTreeMap<String, String>>,
    pub policies: &'a [&'a MCPPolicy],
    pub claimed: &'a dyn Fn(&str) -> Claimed,
    pub gateway_image: Option<&'a str>,
    /// The MCPServers of a namespace, for virtual servers.
    pub servers: Option<&'a crate::review::ServersOf<'a>>,
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
    let obj = match object::of_kind(kind, object) {
        Ok(Some(o)) => o,
        Err(e) => {
            return Decision::deny(format!(
                "{kind} {name} is not admitted: {}: {}",
                e.field.unwrap_or_default(),
                e.message
            ));
        }
        // Anything else never reaches the webhook (rules and matchConditions), but if it does
        // it is none of Palisade's business.
        Ok(None) => return Decision::allow(),
    };
    let facts = Facts {
        namespace_labels: inputs.namespace_labels,
        policies: inputs.policies,
        schemas: None,
        claimed: Some(inputs.claimed),
        gateway_image: inputs.gateway_image,
        servers: inputs.servers,
    };
    match review(&obj, &facts) {
        Review::Verdict(v) => Decision::from_verdict(&format!("{kind} {name}"), v),
        Review::NotReviewed(_) => Decision::allow(),
    }
}
