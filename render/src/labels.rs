//! Labels, selectors and owner references shared by every rendered object.

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use palisade_crds::{MCP_SERVER_LABEL, MCPServer, VIRTUAL_SERVER_LABEL};

use crate::OFFLINE_UID;

/// Labels that select the pods of one MCPServer (stable for the Deployment's lifetime).
pub fn selector_labels(name: &str) -> BTreeMap<String, String> {
    BTreeMap::from([
        (MCP_SERVER_LABEL.to_string(), name.to_string()),
        ("app.kubernetes.io/instance".to_string(), name.to_string()),
    ])
}

/// Labels that select the pods of one MCPVirtualServer: a key of their own, so that they
/// never select (or claim) an MCPServer's pods.
pub fn virtual_selector_labels(name: &str) -> BTreeMap<String, String> {
    BTreeMap::from([
        (VIRTUAL_SERVER_LABEL.to_string(), name.to_string()),
        ("app.kubernetes.io/instance".to_string(), name.to_string()),
    ])
}

/// The recommended `app.kubernetes.io` labels plus Palisade's own.
pub fn standard_labels(name: &str) -> BTreeMap<String, String> {
    let mut labels = selector_labels(name);
    for (k, v) in [
        ("app.kubernetes.io/name", "mcp-server"),
        ("app.kubernetes.io/component", "mcp-server"),
        ("app.kubernetes.io/part-of", "palisade"),
        ("app.kubernetes.io/managed-by", "palisade"),
    ] {
        labels.insert(k.to_string(), v.to_string());
    }
    labels
}

pub(crate) struct Meta {
    pub name: String,
    pub namespace: String,
    pub labels: BTreeMap<String, String>,
    pub selector: BTreeMap<String, String>,
    owner: OwnerReference,
}

impl Meta {
    /// Objects of `server`, owned by the object of kind `owner_kind` (the server itself, or
    /// the virtual server it was made from) with the server's UID.
    pub fn new(server: &MCPServer, name: &str, namespace: &str, owner_kind: &str) -> Meta {
        let (mut labels, selector) = if owner_kind == "MCPVirtualServer" {
            let mut labels = standard_labels(name);
            labels.remove(MCP_SERVER_LABEL);
            labels.extend(virtual_selector_labels(name));
            labels.insert("app.kubernetes.io/component".into(), "mcp-virtual-server".into());
            (labels, virtual_selector_labels(name))
        } else {
            (standard_labels(name), selector_labels(name))
        };
        labels.extend(selector.clone());
        Meta {
            name: name.to_string(),
            namespace: namespace.to_string(),
            labels,
            selector,
            owner: OwnerReference {
                api_version: palisade_crds::API_VERSION.to_string(),
                kind: owner_kind.to_string(),
                name: name.to_string(),
                uid: server.metadata.uid.clone().unwrap_or_else(|| OFFLINE_UID.to_string()),
                controller: Some(true),
                block_owner_deletion: Some(true),
            },
        }
    }

    /// Metadata of a child object called `name`.
    pub fn object(&self, name: &str) -> ObjectMeta {
        ObjectMeta {
            name: Some(name.to_string()),
            namespace: Some(self.namespace.clone()),
            labels: Some(self.labels.clone()),
            owner_references: Some(vec![self.owner.clone()]),
            ..ObjectMeta::default()
        }
    }
}
