//! `MCPServer`: one MCP server that Palisade runs as a hardened workload behind its gateway.

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, LabelSelector};
use kube::{CustomResource, KubeSchema};
use palisade_core::spec::{
    AuthMode, CertPrincipal, Limits, OidcAuth, ProtocolSpec, Role, Sandbox, ToolDefaults,
    ToolPolicy,
};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// How the gateway talks to the server process.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Transport {
    /// The server reads JSON-RPC on stdin; Palisade's shell-free bridge launches it.
    #[serde(rename = "stdio")]
    Stdio,
    /// The server speaks Streamable HTTP on `port`/`path` inside the pod.
    #[serde(rename = "streamable-http")]
    StreamableHttp,
    /// The server speaks the legacy HTTP+SSE transport (2024-11-05) on `port`/`path`.
    #[serde(rename = "sse")]
    Sse,
}

impl Transport {
    pub fn as_str(self) -> &'static str {
        match self {
            Transport::Stdio => "stdio",
            Transport::StreamableHttp => "streamable-http",
            Transport::Sse => "sse",
        }
    }

    pub fn is_http(self) -> bool {
        self != Transport::Stdio
    }
}

/// A key of a Secret (or ConfigMap) in the MCPServer's namespace.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct KeyRef {
    #[schemars(length(min = 1, max = 253))]
    pub name: String,
    #[schemars(length(min = 1, max = 253))]
    pub key: String,
}

/// Where an environment variable's value comes from, when it is not a literal.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[x_kube(validation = Rule::new("has(self.secretKeyRef) != has(self.configMapKeyRef)").message("set exactly one of secretKeyRef or configMapKeyRef"))]
pub struct EnvSource {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_key_ref: Option<KeyRef>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub config_map_key_ref: Option<KeyRef>,
}

/// An environment variable of the server. Credentials belong in Secrets (`valueFrom`);
/// plaintext values that look like credentials are refused at admission.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[x_kube(validation = Rule::new("has(self.value) != has(self.valueFrom)").message("set exactly one of value or valueFrom"))]
pub struct EnvVar {
    #[schemars(length(min = 1, max = 256), pattern(r"^[A-Za-z_][A-Za-z0-9_]*$"))]
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 32768))]
    pub value: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value_from: Option<EnvSource>,
}

/// A Secret mounted read-only as files (preferred over env for credentials).
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SecretMount {
    #[schemars(length(min = 1, max = 253))]
    pub secret_name: String,
    /// Absolute directory in the server container.
    #[schemars(length(min = 2, max = 1024), pattern(r"^/[^\x00]+$"))]
    pub mount_path: String,
    /// Only these keys, if set.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 64))]
    pub keys: Vec<String>,
}

/// A writable in-memory directory. The root filesystem is always read-only, so every path a
/// server writes to (`/tmp`, npm/uv/pip caches, `$HOME`) is declared here.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ScratchDir {
    #[schemars(length(min = 2, max = 1024), pattern(r"^/[^\x00]+$"))]
    pub path: String,
    /// Size limit of the tmpfs (counts against the container's memory).
    #[serde(default = "default_scratch_size")]
    pub size_limit: Quantity,
}

fn default_scratch_size() -> Quantity {
    Quantity("64Mi".to_string())
}

pub fn default_scratch() -> Vec<ScratchDir> {
    vec![ScratchDir { path: "/tmp".to_string(), size_limit: default_scratch_size() }]
}

/// Requests and limits of the server container. Limits of `cpu` and `memory` are required.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Resources {
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub requests: BTreeMap<String, Quantity>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub limits: BTreeMap<String, Quantity>,
}

/// A cosign public key, as a key of a Secret in the MCPServer's namespace.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SignatureKey {
    pub secret_ref: KeyRef,
}

/// A keyless (Fulcio certificate) identity that may have signed the image.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[x_kube(validation = Rule::new("has(self.subject) != has(self.subjectRegExp)").message("set exactly one of subject or subjectRegExp"))]
pub struct KeylessIdentity {
    /// OIDC issuer of the signing certificate, e.g. `https://token.actions.githubusercontent.com`.
    #[schemars(length(min = 1, max = 2048))]
    pub issuer: String,
    /// Exact certificate subject (SAN), e.g. a workflow URI or an email address.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 2048))]
    pub subject: Option<String>,
    /// Regular expression the whole subject must match.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 2048))]
    pub subject_reg_exp: Option<String>,
}

/// Cosign signature verification of the image before it runs.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[x_kube(validation = Rule::new("(has(self.keys) ? size(self.keys) : 0) + (has(self.keyless) ? size(self.keyless) : 0) > 0").message("name at least one public key or keyless identity"))]
pub struct SignatureSpec {
    #[serde(default)]
    #[schemars(length(max = 16))]
    pub keys: Vec<SignatureKey>,
    #[serde(default)]
    #[schemars(length(max = 16))]
    pub keyless: Vec<KeylessIdentity>,
}

/// mTLS client authentication.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct MtlsAuth {
    /// PEM bundle of CAs that issue client certificates.
    #[serde(rename = "clientCASecretRef")]
    pub client_ca_secret_ref: KeyRef,
    #[serde(default)]
    pub principal_from: CertPrincipal,
}

/// Client authentication at the gateway. Required for every server: the gateway is reachable
/// over the network whatever the server's own transport.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[x_kube(validation = Rule::new("has(self.oidc) || has(self.mtls)").message("configure oidc, mtls or both"))]
pub struct AuthSpec {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub oidc: Option<OidcAuth>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mtls: Option<MtlsAuth>,
    /// `AnyOf`: either method suffices; `AllOf`: mTLS is a second factor.
    #[serde(default)]
    pub mode: AuthMode,
    /// PEM bundle of CAs for the issuer's HTTPS endpoints (discovery, JWKS), for identity
    /// providers with a private CA; the system roots are trusted as well.
    #[serde(default, rename = "oidcCASecretRef", skip_serializing_if = "Option::is_none")]
    pub oidc_ca_secret_ref: Option<KeyRef>,
}

/// Who may use what. Deny by default: a principal without a role can do nothing.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AuthorizationSpec {
    #[serde(default)]
    #[schemars(length(max = 64), extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["name"]))]
    pub roles: Vec<Role>,
}

/// Transport protocol of a network port.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum PortProtocol {
    #[default]
    #[serde(rename = "TCP")]
    Tcp,
    #[serde(rename = "UDP")]
    Udp,
}

impl PortProtocol {
    pub fn as_str(self) -> &'static str {
        match self {
            PortProtocol::Tcp => "TCP",
            PortProtocol::Udp => "UDP",
        }
    }
}

/// A destination port (or range up to `endPort`).
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[x_kube(validation = Rule::new("!has(self.endPort) || self.endPort >= self.port").message("endPort must not be below port"))]
pub struct EgressPort {
    #[schemars(range(min = 1, max = 65535))]
    pub port: u16,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 65535))]
    pub end_port: Option<u16>,
    #[serde(default)]
    pub protocol: PortProtocol,
}

/// One allowed destination of the pod's outbound traffic. Everything else is denied.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[x_kube(validation = Rule::new("has(self.cidr) != has(self.host)").message("set exactly one of cidr or host"))]
pub struct EgressRule {
    /// Destination network. Cloud metadata and link-local ranges are always excluded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new("isCIDR(self)").message("must be a CIDR such as 203.0.113.0/24"))]
    #[schemars(length(max = 64))]
    pub cidr: Option<String>,
    /// Destination DNS name. Kubernetes NetworkPolicy cannot express names; these are
    /// rendered for CNIs with FQDN policies (see docs/network.md) and recorded on the pod.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(
        length(max = 253),
        pattern(r"^(\*\.)?[a-z0-9]([a-z0-9-]*[a-z0-9])?(\.[a-z0-9]([a-z0-9-]*[a-z0-9])?)*$")
    )]
    pub host: Option<String>,
    /// Destination ports; at least one, so that "any port" is never implied.
    #[schemars(length(min = 1, max = 32))]
    pub ports: Vec<EgressPort>,
}

/// A network peer: pods (selected by labels, in the MCPServer's namespace or in selected
/// namespaces) or a CIDR. Within one entry, selectors combine (AND).
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[x_kube(validation = Rule::new("has(self.namespaceSelector) || has(self.podSelector) || has(self.cidr)").message("set namespaceSelector, podSelector or cidr"))]
#[x_kube(validation = Rule::new("!has(self.cidr) || !(has(self.namespaceSelector) || has(self.podSelector))").message("cidr cannot be combined with selectors"))]
pub struct Peer {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace_selector: Option<LabelSelector>,
    /// Pods in the MCPServer's namespace (or in the selected namespaces).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod_selector: Option<LabelSelector>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new("isCIDR(self)").message("must be a CIDR such as 10.0.0.0/8"))]
    #[schemars(length(max = 64))]
    pub cidr: Option<String>,
}

/// Audit trail of every MCP call.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AuditSpec {
    /// Audit cannot be switched off; `false` is refused at admission and kept for clarity.
    #[serde(default = "yes")]
    pub enabled: bool,
    /// Write a signed checkpoint of the hash chain every N records.
    #[serde(default = "default_checkpoint_every")]
    #[schemars(range(min = 1, max = 100000))]
    pub checkpoint_every: u32,
    /// Ed25519 private key (PKCS#8 PEM) that signs checkpoints.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signing_key_secret_ref: Option<KeyRef>,
}

fn yes() -> bool {
    true
}

fn default_checkpoint_every() -> u32 {
    100
}

impl Default for AuditSpec {
    fn default() -> Self {
        AuditSpec { enabled: true, checkpoint_every: 100, signing_key_secret_ref: None }
    }
}

/// Gateway settings that are not policy.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct GatewaySpec {
    /// Secret of type `kubernetes.io/tls` with the gateway's serving certificate. Default:
    /// `<name>-gateway-tls`, issued by the operator when it does not exist.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 253))]
    pub tls_secret_name: Option<String>,
    /// Browser origins allowed to call the gateway (exact `scheme://host[:port]`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 32))]
    pub allowed_origins: Vec<String>,
    /// Resources of the gateway container (defaults: 50m/64Mi requested, 500m/128Mi limits).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<Resources>,
    /// A store the gateway replicas share approvals, budgets and sessions through. Without it
    /// each replica keeps its own (see docs/state.md).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state: Option<SharedState>,
}

/// A Redis-protocol store (Redis 7, Valkey, a managed Redis) shared by the gateway replicas.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[x_kube(validation = Rule::new("self.url.startsWith('redis://') || self.url.startsWith('rediss://')").message("url must start with redis:// (or rediss:// for TLS)").field_path(".url"))]
pub struct SharedState {
    /// `redis://[user@]host:port[/db]`, or `rediss://` for TLS. No password in the URL.
    #[schemars(length(min = 1, max = 512))]
    pub url: String,
    /// The store's password. Required: the MCP server shares the pod's network, and a store it
    /// could use without the gateway's password would let it forge approvals and budgets.
    pub password_secret_ref: KeyRef,
    /// CA certificate (PEM) of a `rediss://` store with a private CA.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_secret_ref: Option<KeyRef>,
    /// Where the store runs: Palisade adds an egress rule to it for the URL's port only.
    pub peer: Peer,
}

/// The desired state of an MCP server.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "palisade.dev",
    version = "v1alpha1",
    kind = "MCPServer",
    doc = "An MCP server that Palisade runs as a hardened workload behind its gateway.",
    plural = "mcpservers",
    singular = "mcpserver",
    shortname = "mcps",
    category = "palisade",
    namespaced,
    status = "MCPServerStatus",
    derive = "PartialEq",
    cel,
    printcolumn = r#"{"name":"Transport","type":"string","jsonPath":".spec.transport"}"#,
    printcolumn = r#"{"name":"Ready","type":"string","jsonPath":".status.conditions[?(@.type==\"Ready\")].status"}"#,
    printcolumn = r#"{"name":"Verified","type":"string","jsonPath":".status.conditions[?(@.type==\"ImageVerified\")].status"}"#,
    printcolumn = r#"{"name":"Endpoint","type":"string","priority":1,"jsonPath":".status.endpoint"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[x_kube(validation = Rule::new("self.transport != 'stdio' || (has(self.command) && size(self.command) > 0)").message("stdio servers need spec.command: the bridge launches the server by argv, never through an image entrypoint or a shell").field_path(".command"))]
#[x_kube(validation = Rule::new("has(self.image) != has(self.remote)").message("set exactly one of spec.image (a server Palisade runs) or spec.remote (a server elsewhere that the gateway proxies to)"))]
#[x_kube(validation = Rule::new("!has(self.remote) || self.transport != 'stdio'").message("a remote server speaks streamable-http or sse").field_path(".transport"))]
#[x_kube(validation = Rule::new("!has(self.remote) || !(has(self.command) || has(self.args) || has(self.port) || has(self.path) || has(self.env) || has(self.secretMounts) || has(self.runAsUser) || has(self.signature))").message("a remote server runs no workload here: remove spec.command, spec.args, spec.port, spec.path, spec.env, spec.secretMounts, spec.runAsUser and spec.signature").field_path(".remote"))]
#[x_kube(validation = Rule::new("self.transport == 'stdio' || has(self.port) || has(self.remote)").message("HTTP transports need spec.port, the port the server listens on inside the pod").field_path(".port"))]
#[x_kube(validation = Rule::new("self.transport != 'stdio' || (!has(self.port) && !has(self.path))").message("stdio servers have no port or path; remove them").field_path(".port"))]
#[x_kube(validation = Rule::new("!has(self.tools) || self.tools.all(t, t.effect != 'destructive' || !has(t.requireApproval) || t.requireApproval)").message("destructive tools require approval; remove requireApproval: false").field_path(".tools"))]
pub struct MCPServerSpec {
    /// Server image. Prefer `registry/repo@sha256:<digest>`; a tag is resolved to a digest once
    /// per spec change and the pod always runs the digest. `latest` and untagged images are refused.
    #[schemars(length(min = 1, max = 1024))]
    #[x_kube(validation = Rule::new("!self.endsWith(':latest') && (self.contains('@sha256:') || self.matches(':[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$'))").message("pin the image by digest (repo@sha256:...) or by a version tag; latest and untagged images are refused"))]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<String>,
    /// A server Palisade does not run (instead of `image`): only the gateway is deployed, and
    /// it proxies to this server under the same policy.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub remote: Option<RemoteSpec>,
    pub transport: Transport,
    /// argv of the server (replaces the image entrypoint). Never run through a shell.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 64), inner(length(max = 4096)))]
    pub command: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 256), inner(length(max = 4096)))]
    pub args: Vec<String>,
    /// Port the server listens on inside the pod (HTTP transports). Never exposed directly.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1024, max = 65535))]
    pub port: Option<u16>,
    /// HTTP path of the server's MCP endpoint (default `/mcp`, `/sse` for `sse`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 256), pattern(r"^/[A-Za-z0-9._~!$&'()*+,;=:@%/-]*$"))]
    pub path: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 128), extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["name"]))]
    pub env: Vec<EnvVar>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 32))]
    pub secret_mounts: Vec<SecretMount>,
    /// Writable tmpfs directories (default: `/tmp`, 64Mi).
    #[serde(default = "default_scratch")]
    #[schemars(length(max = 16))]
    pub scratch: Vec<ScratchDir>,
    #[serde(default = "default_replicas")]
    #[schemars(range(min = 0, max = 100))]
    pub replicas: i32,
    /// UID the server runs as (non-zero). Default 65532.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 2147483647))]
    pub run_as_user: Option<i64>,
    /// Requests and limits of the server container (required unless the server is remote).
    #[serde(default)]
    pub resources: Resources,
    #[serde(default)]
    pub protocol: ProtocolSpec,
    /// Image signature verification. Required when a cluster MCPPolicy says so.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signature: Option<SignatureSpec>,
    pub auth: AuthSpec,
    #[serde(default)]
    pub authorization: AuthorizationSpec,
    /// Per-tool effect, approval and argument constraints.
    #[serde(default)]
    #[schemars(length(max = 256), extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["name"]))]
    pub tools: Vec<ToolPolicy>,
    #[serde(default)]
    pub tool_defaults: ToolDefaults,
    #[serde(default)]
    pub limits: Limits,
    /// Limits of the stdio server process (ignored for HTTP servers).
    #[serde(default)]
    pub sandbox: Sandbox,
    /// Allowed outbound destinations (DNS is always allowed). Empty: no egress at all.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 64))]
    pub egress: Vec<EgressRule>,
    /// Who may reach the gateway. Empty: nobody (the Service exists but every peer is denied).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 64))]
    pub ingress: Vec<Peer>,
    #[serde(default)]
    pub audit: AuditSpec,
    #[serde(default)]
    pub gateway: GatewaySpec,
    /// What the gateway presents to the server on each request. The client's own token never
    /// reaches the server; without this, the server gets no credential at all.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub upstream_auth: Option<UpstreamAuth>,
}

/// A remote MCP server: the gateway's upstream is this URL instead of a container of its pod.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RemoteSpec {
    /// The server's MCP endpoint: `https://host[:port]/path`, without credentials (give them
    /// with `upstreamAuth`).
    #[schemars(length(min = 9, max = 2048), regex(pattern = r"^https://[^/?#@\s]+(/[^#\s]*)?$"))]
    pub url: String,
    /// PEM bundle of CAs for the server's certificate (a private CA); system roots are
    /// trusted too.
    #[serde(default, rename = "caSecretRef", skip_serializing_if = "Option::is_none")]
    pub ca_secret_ref: Option<KeyRef>,
    /// Where the server is, as NetworkPolicy names it (pods, namespaces or a CIDR): the
    /// gateway's egress rule to the URL's port goes to this peer. Without it: the URL's address
    /// when the host is one, else a DNS-name rule (a CNI with FQDN policies enforces it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub peer: Option<Peer>,
}

/// Credentials for the server: one header from a Secret, or a token exchanged for each calling
/// user (OAuth 2.0 Token Exchange, RFC 8693).
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[x_kube(validation = Rule::new("has(self.header) != has(self.tokenExchange)").message("set exactly one of header or tokenExchange"))]
pub struct UpstreamAuth {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub header: Option<UpstreamHeader>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token_exchange: Option<TokenExchange>,
}

/// The same header on every request: `name: prefix + <the Secret's value>`.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct UpstreamHeader {
    /// Default `Authorization`.
    #[serde(default = "authorization_header")]
    #[schemars(length(min = 1, max = 128), regex(pattern = r"^[A-Za-z0-9-]+$"))]
    pub name: String,
    /// Default `Bearer ` (with its space); empty for a raw value (an API key header).
    #[serde(default = "bearer_prefix")]
    #[schemars(length(max = 64))]
    pub prefix: String,
    pub secret_ref: KeyRef,
}

fn authorization_header() -> String {
    "Authorization".into()
}

fn bearer_prefix() -> String {
    "Bearer ".into()
}

/// A token for the calling user from the token endpoint, with the client's token as the
/// subject token; the gateway's own requests (its handshake) use a client-credentials token.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TokenExchange {
    #[schemars(length(min = 9, max = 2048), regex(pattern = r"^https://"))]
    pub token_endpoint: String,
    #[schemars(length(min = 1, max = 256))]
    pub client_id: String,
    pub client_secret_ref: KeyRef,
    /// The `audience` requested (the server's identifier at the authorization server).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 2048))]
    pub audience: Option<String>,
    /// The `resource` requested (RFC 8707).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 2048))]
    pub resource: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 32))]
    pub scopes: Vec<String>,
    /// PEM bundle of CAs for the token endpoint (a private CA); system roots are trusted too.
    #[serde(default, rename = "caSecretRef", skip_serializing_if = "Option::is_none")]
    pub ca_secret_ref: Option<KeyRef>,
}

fn default_replicas() -> i32 {
    1
}

/// The resolved image, as the pods run it.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct ImageStatus {
    /// `spec.image` when it was resolved.
    pub reference: String,
    /// `sha256:...`.
    pub digest: String,
    /// Which signature verified it, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub verified_by: Option<String>,
    /// The image's verified SBOM attestation, when a policy asks for one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sbom: Option<SbomStatus>,
}

/// What the operator read from the image's signed SBOM.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct SbomStatus {
    /// The in-toto predicate type, e.g. `https://cyclonedx.org/bom`.
    pub format: String,
    /// Which key signed the attestation.
    pub signed_by: String,
    /// How many components it lists.
    pub components: u32,
    /// Advisories that match a listed component (`ID: purl@version`); empty when none do.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub vulnerabilities: Vec<String>,
}

/// What the gateway learned from the server's handshake.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct ServerInfoStatus {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub protocol_version: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tool_count: Option<u32>,
}

/// Observed state.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct MCPServerStatus {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// `Ready`, `ImageVerified`, `PolicyCompliant`, `GatewayReady`, `ToolsVerified`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["type"]))]
    pub conditions: Vec<Condition>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<ImageStatus>,
    /// In-cluster URL of the gateway's MCP endpoint.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub endpoint: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub server: Option<ServerInfoStatus>,
    /// Hash of the rendered gateway config the pods run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub config_hash: Option<String>,
}

/// Condition types of `MCPServer.status.conditions`.
pub mod conditions {
    pub const READY: &str = "Ready";
    pub const IMAGE_VERIFIED: &str = "ImageVerified";
    pub const POLICY_COMPLIANT: &str = "PolicyCompliant";
    pub const GATEWAY_READY: &str = "GatewayReady";
    /// The gateways withhold no tool definition (pins, screening).
    pub const TOOLS_VERIFIED: &str = "ToolsVerified";
}

impl MCPServerSpec {
    /// Whether Palisade runs no workload for this server (only its gateway).
    pub fn is_remote(&self) -> bool {
        self.remote.is_some()
    }

    /// The HTTP path of the server's own endpoint (HTTP transports).
    pub fn upstream_path(&self) -> &str {
        match (&self.path, self.transport) {
            (Some(p), _) => p,
            (None, Transport::Sse) => "/sse",
            (None, _) => "/mcp",
        }
    }
}
