//! The objects admission reviews, typed strictly from JSON: MCPServers and MCPPolicies
//! (unknown fields refused with their path and a fix), workloads that could run an MCP server,
//! and built-in kinds that cannot. Shared by the webhook (objects from an AdmissionReview)
//! and `palisade check` (objects from YAML files).

use palisade_crds::mcppolicy::MCPPolicy;
use palisade_crds::mcpserver::MCPServer;
use palisade_crds::mcpvirtualserver::MCPVirtualServer;
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;

use crate::rules::{mcpserver, workload};

/// Why a document could not be reviewed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct LoadError {
    /// 1-based line in the file, when known.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub line: Option<usize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub column: Option<usize>,
    /// Field path, when the problem is a field.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub field: Option<String>,
    pub message: String,
}

/// What a document holds.
#[derive(Debug, Clone)]
pub enum Object {
    Server(Box<MCPServer>),
    Policy(Box<MCPPolicy>),
    VirtualServer(Box<MCPVirtualServer>),
    Workload {
        kind: String,
        value: Value,
    },
    /// A built-in kind that cannot run an MCP server.
    Other {
        kind: String,
        value: Value,
    },
}

impl Object {
    pub fn kind(&self) -> &str {
        match self {
            Object::Server(_) => "MCPServer",
            Object::Policy(_) => "MCPPolicy",
            Object::VirtualServer(_) => "MCPVirtualServer",
            Object::Workload { kind, .. } | Object::Other { kind, .. } => kind,
        }
    }

    pub fn name(&self) -> String {
        let meta = match self {
            Object::Server(s) => s.metadata.name.clone(),
            Object::Policy(p) => p.metadata.name.clone(),
            Object::VirtualServer(v) => v.metadata.name.clone(),
            Object::Workload { value, .. } | Object::Other { value, .. } => {
                value.pointer("/metadata/name").and_then(Value::as_str).map(str::to_string)
            }
        };
        meta.unwrap_or_else(|| "<unnamed>".to_string())
    }
}

/// Built-in kinds that admission does not review (they cannot run an MCP server); a file
/// that mixes them with MCPServers checks cleanly.
pub(crate) const NOT_REVIEWED: &[&str] = &[
    "Namespace",
    "Secret",
    "ConfigMap",
    "Service",
    "ServiceAccount",
    "NetworkPolicy",
    "Role",
    "RoleBinding",
    "ClusterRole",
    "ClusterRoleBinding",
    "PodDisruptionBudget",
    "ResourceQuota",
    "LimitRange",
    "CustomResourceDefinition",
];

pub(crate) const TOP_LEVEL: &[&str] = &["apiVersion", "kind", "metadata", "spec", "status"];

pub(crate) fn explain_serde(message: &str) -> String {
    // serde: "unknown field `hostNetwork`, expected one of `image`, ..."
    if let Some(rest) = message.strip_prefix("unknown field `")
        && let Some((field, _)) = rest.split_once('`')
    {
        if mcpserver::SMUGGLED_FIELDS.contains(&field) {
            return format!(
                "{field} is not an MCPServer field: Palisade renders a hardened pod and never \
                 lets a spec set host, privileged or pod-level security settings; remove it"
            );
        }
        return format!("unknown field {field}; remove it or check its spelling (see docs/api.md)");
    }
    if let Some(rest) = message.strip_prefix("missing field `")
        && let Some((field, _)) = rest.split_once('`')
    {
        let why = match field {
            "auth" => "the gateway is reachable over the network: configure auth.oidc or auth.mtls",
            "resources" => "set resources.limits.cpu and resources.limits.memory",
            "image" => "name the server image, pinned by digest",
            "transport" => "one of stdio, streamable-http, sse",
            _ => "add it",
        };
        return format!("{field} is required: {why}");
    }
    message.to_string()
}

/// Parses a palisade.dev object strictly from JSON (an AdmissionReview's object): unknown
/// fields anywhere are refused with their path.
pub fn parse_object<T: DeserializeOwned>(value: &Value) -> Result<T, LoadError> {
    if let Some(map) = value.as_object() {
        for key in map.keys() {
            if !TOP_LEVEL.contains(&key.as_str()) {
                return Err(LoadError {
                    line: None,
                    column: None,
                    field: Some(key.clone()),
                    message: format!(
                        "unknown top-level field {key}; objects have apiVersion, kind, metadata, spec and status"
                    ),
                });
            }
        }
    }
    serde_path_to_error::deserialize::<_, T>(value.clone()).map_err(|e| {
        let mut path = e.path().to_string();
        let inner = e.into_inner().to_string();
        // A missing field is reported at the field itself, not at its parent.
        if let Some(rest) = inner.strip_prefix("missing field `")
            && let Some((field, _)) = rest.split_once('`')
        {
            path = if path.is_empty() || path == "." {
                field.to_string()
            } else {
                format!("{path}.{field}")
            };
        }
        LoadError { line: None, column: None, message: explain_serde(&inner), field: Some(path) }
    })
}

/// The object of `kind` (as an AdmissionReview names it), typed; `Ok(None)` for a kind
/// admission does not know.
pub fn of_kind(kind: &str, value: &Value) -> Result<Option<Object>, LoadError> {
    Ok(Some(match kind {
        "MCPServer" => Object::Server(Box::new(parse_object(value)?)),
        "MCPPolicy" => Object::Policy(Box::new(parse_object(value)?)),
        "MCPVirtualServer" => Object::VirtualServer(Box::new(parse_object(value)?)),
        k if workload::is_workload_kind(k) => {
            Object::Workload { kind: k.to_string(), value: value.clone() }
        }
        k if NOT_REVIEWED.contains(&k) => {
            Object::Other { kind: k.to_string(), value: value.clone() }
        }
        _ => return Ok(None),
    }))
}
