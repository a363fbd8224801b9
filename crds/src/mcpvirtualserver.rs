//! `MCPVirtualServer`: one gateway endpoint in front of several `MCPServer`s of its namespace,
//! their tools, prompts and resources under prefixed names.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, LabelSelector};
use kube::{CustomResource, KubeSchema};
use palisade_core::spec::{Limits, Naming, ProtocolSpec, ToolDefaults, ToolPolicy};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::mcpserver::{
    AuditSpec, AuthSpec, AuthorizationSpec, EgressRule, GatewaySpec, KeyRef, MCPServer,
    MCPServerSpec, Peer, TokenExchange, Transport, UpstreamAuth,
};

/// One server behind the virtual server, named.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct VirtualMember {
    /// The MCPServer's name (in this namespace).
    #[schemars(length(min = 1, max = 63))]
    pub name: String,
    /// The prefix of its names (default: its name).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 32), regex(pattern = r"^[A-Za-z0-9_.-]+$"))]
    pub prefix: Option<String>,
}

/// How the virtual server's gateway authenticates to each server's gateway: a token for the
/// calling user, exchanged (RFC 8693) for that server's OIDC audience, so that each server's
/// own roles apply to the same user. The gateway's own requests (its handshake) use a
/// client-credentials token.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct MemberTokenExchange {
    #[schemars(length(min = 9, max = 2048), regex(pattern = r"^https://"))]
    pub token_endpoint: String,
    #[schemars(length(min = 1, max = 256))]
    pub client_id: String,
    pub client_secret_ref: KeyRef,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 32))]
    pub scopes: Vec<String>,
    /// PEM bundle of CAs for the token endpoint (a private CA); system roots are trusted too.
    #[serde(default, rename = "caSecretRef", skip_serializing_if = "Option::is_none")]
    pub ca_secret_ref: Option<KeyRef>,
}

/// The desired state of a virtual MCP server.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "palisade.dev",
    version = "v1alpha1",
    kind = "MCPVirtualServer",
    doc = "One MCP endpoint in front of several MCPServers of its namespace, their names prefixed.",
    plural = "mcpvirtualservers",
    singular = "mcpvirtualserver",
    shortname = "mcpv",
    category = "palisade",
    namespaced,
    status = "MCPVirtualServerStatus",
    derive = "PartialEq",
    cel,
    printcolumn = r#"{"name":"Servers","type":"string","jsonPath":".status.servers"}"#,
    printcolumn = r#"{"name":"Ready","type":"string","jsonPath":".status.conditions[?(@.type==\"Ready\")].status"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[x_kube(validation = Rule::new("(has(self.servers) && size(self.servers) > 0) || has(self.selector)").message("name the servers (servers) or select them by label (selector)"))]
pub struct MCPVirtualServerSpec {
    /// Servers by name.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 32), extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["name"]))]
    pub servers: Vec<VirtualMember>,
    /// Servers by label (in addition to those named).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub selector: Option<LabelSelector>,
    #[serde(default)]
    pub naming: Naming,
    pub auth: AuthSpec,
    #[serde(default)]
    pub authorization: AuthorizationSpec,
    /// The credential for the servers' gateways.
    pub member_auth: MemberAuth,
    /// Per-tool policy, under the names clients see (prefixed).
    #[serde(default)]
    #[schemars(length(max = 256), extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["name"]))]
    pub tools: Vec<ToolPolicy>,
    #[serde(default)]
    pub tool_defaults: ToolDefaults,
    #[serde(default)]
    pub limits: Limits,
    #[serde(default)]
    pub protocol: ProtocolSpec,
    #[serde(default = "one")]
    #[schemars(range(min = 0, max = 100))]
    pub replicas: i32,
    /// Allowed outbound destinations besides the servers (the token endpoint, the issuer).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 64))]
    pub egress: Vec<EgressRule>,
    /// Who may reach the gateway.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 64))]
    pub ingress: Vec<Peer>,
    #[serde(default)]
    pub audit: AuditSpec,
    #[serde(default)]
    pub gateway: GatewaySpec,
}

/// How the virtual server's gateway authenticates to the servers' gateways.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct MemberAuth {
    pub token_exchange: MemberTokenExchange,
}

fn one() -> i32 {
    1
}

/// Observed state.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct MCPVirtualServerStatus {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// `Ready`, `ServersResolved`, `NamesResolved`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["type"]))]
    pub conditions: Vec<Condition>,
    /// The servers behind it, with their prefixes (`name=prefix`, comma-separated).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub servers: Option<String>,
    /// In-cluster URL of the gateway's MCP endpoint.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub endpoint: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub config_hash: Option<String>,
}

impl MCPVirtualServerSpec {
    /// The prefix of a named server (its own name unless the spec gives one).
    pub fn prefix_of(&self, server: &str) -> String {
        self.servers
            .iter()
            .find(|m| m.name == server)
            .and_then(|m| m.prefix.clone())
            .unwrap_or_else(|| server.to_string())
    }
}

impl MCPVirtualServer {
    /// Whether `server` (of this namespace) is behind this virtual server: named in
    /// `servers`, or matched by `selector`. An invalid selector selects nothing.
    pub fn selects(&self, server: &MCPServer) -> bool {
        use kube::core::{Selector, SelectorExt};
        if server.metadata.namespace != self.metadata.namespace {
            return false;
        }
        let name = server.metadata.name.as_deref().unwrap_or_default();
        if self.spec.servers.iter().any(|m| m.name == name) {
            return true;
        }
        let Some(sel) = &self.spec.selector else { return false };
        let labels = server.metadata.labels.clone().unwrap_or_default();
        Selector::try_from(sel.clone()).is_ok_and(|s| s.matches(&labels))
    }

    /// The virtual server's gateway settings in the shape of a server's spec: no image and no
    /// remote (its pod is the gateway alone), the member credential's Secrets as the
    /// upstream credential's (so that they are mounted, and checked, the same way).
    pub fn gateway_spec(&self) -> MCPServerSpec {
        let s = &self.spec;
        let x = &s.member_auth.token_exchange;
        MCPServerSpec {
            image: None,
            remote: None,
            transport: Transport::StreamableHttp,
            command: vec![],
            args: vec![],
            port: None,
            path: None,
            env: vec![],
            secret_mounts: vec![],
            scratch: vec![],
            replicas: s.replicas,
            run_as_user: None,
            resources: Default::default(),
            protocol: s.protocol.clone(),
            signature: None,
            auth: s.auth.clone(),
            authorization: s.authorization.clone(),
            tools: s.tools.clone(),
            tool_defaults: s.tool_defaults.clone(),
            limits: s.limits.clone(),
            sandbox: Default::default(),
            egress: s.egress.clone(),
            ingress: s.ingress.clone(),
            audit: s.audit.clone(),
            gateway: s.gateway.clone(),
            upstream_auth: Some(UpstreamAuth {
                header: None,
                token_exchange: Some(TokenExchange {
                    token_endpoint: x.token_endpoint.clone(),
                    client_id: x.client_id.clone(),
                    client_secret_ref: x.client_secret_ref.clone(),
                    audience: None,
                    resource: None,
                    scopes: x.scopes.clone(),
                    ca_secret_ref: x.ca_secret_ref.clone(),
                }),
            }),
        }
    }
}
