//! The gateway's configuration file. The operator renders it from an `MCPServer` into a
//! ConfigMap; the gateway reads it at start-up and on change. Kubernetes references in the
//! spec (Secrets) become file paths here, because the pod mounts them.

use serde::{Deserialize, Serialize};

use crate::spec::{
    AuthMode, CertPrincipal, Limits, Naming, OidcAuth, ProtocolSpec, Role, Sandbox, ToolDefaults,
    ToolPolicy,
};

/// The file name of the config inside its ConfigMap and mount.
pub const FILE_NAME: &str = "gateway.json";
/// Where the operator mounts it in the gateway container.
pub const MOUNT_DIR: &str = "/etc/palisade";

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct GatewayConfig {
    pub server: ServerRef,
    pub listen: Listen,
    pub upstream: Upstream,
    #[serde(default)]
    pub protocol: ProtocolSpec,
    pub auth: AuthConfig,
    #[serde(default)]
    pub authorization: Authorization,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tools: Vec<ToolPolicy>,
    #[serde(default)]
    pub tool_defaults: ToolDefaults,
    #[serde(default)]
    pub limits: Limits,
    #[serde(default)]
    pub audit: AuditConfig,
    /// Directories no tool argument may name, whatever the argument's roots say: the server's
    /// Secret mounts (credentials are never a tool's input).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub protected_paths: Vec<String>,
    /// The store that replicas share approvals, budgets and sessions through; without it each
    /// replica keeps its own.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state: Option<StateStore>,
    /// What the gateway presents to the server for each request (the client's own token
    /// never reaches it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub upstream_auth: Option<UpstreamAuthConfig>,
    /// Where spans go (OTLP/HTTP); without it the gateway only passes trace context on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tracing: Option<TracingConfig>,
}

/// OpenTelemetry traces over OTLP/HTTP (protobuf).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TracingConfig {
    /// The collector's OTLP/HTTP base URL (`http://collector.observability:4318`); spans are
    /// posted to `<endpoint>/v1/traces`.
    pub otlp_endpoint: String,
    /// Share of traces started here (no sampled parent) that are recorded, 0 to 1; a client's
    /// sampling decision is followed.
    #[serde(default = "all")]
    pub sample_ratio: f64,
}

fn all() -> f64 {
    1.0
}

/// Credentials the gateway sends to the server: one header from a mounted Secret, or a token
/// exchanged (RFC 8693) for each calling user.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub enum UpstreamAuthConfig {
    /// The same header on every request: `name: prefix + <file content, trimmed>`.
    #[serde(rename_all = "camelCase")]
    Header { name: String, prefix: String, value_file: String },
    /// A token for the calling user from the token endpoint (the client's token is the
    /// subject token); the gateway's own requests (its handshake) use a client-credentials
    /// token from the same endpoint.
    TokenExchange(TokenExchangeConfig),
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TokenExchangeConfig {
    pub token_endpoint: String,
    pub client_id: String,
    pub client_secret_file: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub audience: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resource: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub scopes: Vec<String>,
    /// Extra trust anchors (PEM) for the token endpoint.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_file: Option<String>,
}

/// A Redis-protocol store (Redis, Valkey, a managed Redis) shared by a server's replicas.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct StateStore {
    /// `redis://[user@]host:port[/db]`, or `rediss://` for TLS. Never carries a password.
    pub url: String,
    /// The file holding the password (a mounted Secret).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password_file: Option<String>,
    /// Trust anchors (PEM) for a `rediss://` store with a private CA.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_file: Option<String>,
    /// Prefix of every key this gateway writes, so that servers sharing one store never see
    /// each other's state (`palisade:<namespace>/<name>:`).
    pub key_prefix: String,
}

/// The parts of a store URL that admission and rendering look at.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoreUrl {
    pub tls: bool,
    pub host: String,
    pub port: u16,
    pub has_password: bool,
}

/// Reads `redis://[user[:password]@]host:port[/db]` (or `rediss://`); the port is required,
/// because the egress rule to the store names it.
pub fn parse_store_url(url: &str) -> Result<StoreUrl, String> {
    let (tls, rest) = if let Some(r) = url.strip_prefix("rediss://") {
        (true, r)
    } else if let Some(r) = url.strip_prefix("redis://") {
        (false, r)
    } else {
        return Err("must start with redis:// or rediss://".into());
    };
    let authority = rest.split(['/', '?', '#']).next().unwrap_or_default();
    let (userinfo, hostport) = match authority.rsplit_once('@') {
        Some((u, h)) => (Some(u), h),
        None => (None, authority),
    };
    let has_password = userinfo.is_some_and(|u| u.contains(':'));
    let (host, port) = if let Some(v6) = hostport.strip_prefix('[') {
        let (h, p) = v6.split_once(']').ok_or("unclosed [ in the host")?;
        (h.to_string(), p.strip_prefix(':').unwrap_or_default())
    } else {
        match hostport.rsplit_once(':') {
            Some((h, p)) => (h.to_string(), p),
            None => (hostport.to_string(), ""),
        }
    };
    if host.is_empty() {
        return Err("names no host".into());
    }
    let port: u16 = port
        .parse()
        .ok()
        .filter(|p| *p > 0)
        .ok_or("needs an explicit port (the egress rule to the store names it), e.g. :6379")?;
    Ok(StoreUrl { tls, host, port, has_password })
}

/// The parts of a remote server's URL that admission and rendering look at.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RemoteUrl {
    /// Lower case; an IPv6 address without brackets.
    pub host: String,
    pub port: u16,
    /// The host, when it is an address.
    pub address: Option<std::net::IpAddr>,
}

/// Reads `https://host[:port][/path]`: no credentials in the URL, port 443 by default.
pub fn parse_remote_url(url: &str) -> Result<RemoteUrl, String> {
    let rest = url.strip_prefix("https://").ok_or("must start with https://")?;
    let authority = rest.split(['/', '?', '#']).next().unwrap_or_default();
    if authority.contains('@') {
        return Err("carries credentials; give them with spec.upstreamAuth".into());
    }
    let (host, port) = if let Some(v6) = authority.strip_prefix('[') {
        let (h, p) = v6.split_once(']').ok_or("unclosed [ in the host")?;
        (h.to_string(), p.strip_prefix(':'))
    } else {
        match authority.rsplit_once(':') {
            Some((h, p)) => (h.to_string(), Some(p)),
            None => (authority.to_string(), None),
        }
    };
    if host.is_empty() {
        return Err("names no host".into());
    }
    let port = match port {
        None => 443,
        Some(p) => p.parse().ok().filter(|p| *p > 0).ok_or("has a port that is not 1-65535")?,
    };
    let host = host.to_ascii_lowercase();
    let address = host.parse().ok();
    Ok(RemoteUrl { host, port, address })
}

/// Which MCPServer this gateway fronts (for logs, audit records and metrics labels).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ServerRef {
    pub name: String,
    pub namespace: String,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Listen {
    /// Client-facing address (the only port exposed by the pod).
    pub address: String,
    /// Health, readiness and metrics; never the MCP endpoint.
    pub admin_address: String,
    /// Path of the MCP endpoint.
    pub path: String,
    /// Serving certificate; absent only in tests and local development.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<TlsFiles>,
    /// Browser origins allowed to call the gateway; requests with any other `Origin` get 403.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub allowed_origins: Vec<String>,
    /// The externally visible resource URI (OAuth audience and protected-resource metadata).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resource_uri: Option<String>,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TlsFiles {
    pub cert_file: String,
    pub key_file: String,
}

/// How the gateway reaches the server.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(tag = "kind", rename_all = "camelCase", deny_unknown_fields)]
pub enum Upstream {
    /// Streamable HTTP (or legacy HTTP+SSE when `sse`): on the pod's loopback for a server
    /// Palisade runs, or an `https` URL for a remote server.
    #[serde(rename_all = "camelCase")]
    Http {
        url: String,
        sse: bool,
        /// Extra trust anchors (PEM) for a remote server's certificate; system roots are
        /// trusted as well.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        ca_file: Option<String>,
    },
    /// Newline-delimited JSON-RPC on the stdio bridge's Unix socket.
    #[serde(rename_all = "camelCase")]
    Stdio { socket: String, sandbox: Sandbox },
    /// A virtual server: one endpoint in front of several servers (their gateways), their
    /// names prefixed per `naming`.
    #[serde(rename_all = "camelCase")]
    Virtual { members: Vec<Member>, naming: Naming },
}

/// One server behind a virtual server.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Member {
    /// Its name (the MCPServer's), and the prefix of its names.
    pub name: String,
    pub prefix: String,
    pub url: String,
    #[serde(default)]
    pub sse: bool,
    /// Extra trust anchors (PEM) for its certificate.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_file: Option<String>,
    /// What the virtual server's gateway presents to it (for a member gateway: a token for
    /// the calling user, exchanged for the member's audience).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub upstream_auth: Option<UpstreamAuthConfig>,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AuthConfig {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub oidc: Option<OidcAuth>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mtls: Option<MtlsConfig>,
    #[serde(default)]
    pub mode: AuthMode,
    /// Extra trust anchors (PEM) for the issuer's HTTPS endpoints, for private identity
    /// providers; the system roots are used as well.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub oidc_ca_file: Option<String>,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct MtlsConfig {
    pub client_ca_file: String,
    #[serde(default)]
    pub principal_from: CertPrincipal,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Authorization {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub roles: Vec<Role>,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AuditConfig {
    pub enabled: bool,
    /// A signed checkpoint is written after this many records.
    pub checkpoint_every: u32,
    /// Ed25519 private key (PKCS#8 PEM) for checkpoints; unsigned chain without it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signing_key_file: Option<String>,
    /// Also append records to this file (stdout always gets them).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub file: Option<String>,
    /// Where the gateway keeps the chain's head (last sequence number and hash) so that after a
    /// restart the chain continues from it with a `boot` record: a restart is visible, and so
    /// is a tail removed before it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub head_file: Option<String>,
}

impl Default for AuditConfig {
    fn default() -> Self {
        AuditConfig {
            enabled: true,
            checkpoint_every: 100,
            signing_key_file: None,
            file: None,
            head_file: None,
        }
    }
}

/// Errors a config file can have.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("gateway config is not valid: {0}")]
    Parse(#[from] serde_json::Error),
}

impl GatewayConfig {
    pub fn from_json(text: &str) -> Result<Self, ConfigError> {
        Ok(serde_json::from_str(text)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn store_urls_name_host_and_port_and_never_a_password() {
        let u = parse_store_url("rediss://palisade@redis.ns.svc:6380/2")
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            u,
            StoreUrl { tls: true, host: "redis.ns.svc".into(), port: 6380, has_password: false }
        );
        let v6 = parse_store_url("redis://[fd00::5]:6379").unwrap_or_else(|e| panic!("{e}"));
        assert_eq!((v6.host.as_str(), v6.port), ("fd00::5", 6379));
        assert!(parse_store_url("redis://u:secret@h:6379").is_ok_and(|u| u.has_password));
        assert!(parse_store_url("redis://h").is_err(), "port required");
        assert!(parse_store_url("redis://:6379").is_err(), "host required");
        assert!(parse_store_url("http://h:6379").is_err());
    }

    #[test]
    fn remote_urls_name_host_port_and_address_and_never_credentials() {
        let u =
            parse_remote_url("https://MCP.Example.com/v1/mcp").unwrap_or_else(|e| panic!("{e}"));
        assert_eq!((u.host.as_str(), u.port, u.address), ("mcp.example.com", 443, None));
        let v6 = parse_remote_url("https://[fd00::7]:8443/mcp").unwrap_or_else(|e| panic!("{e}"));
        assert_eq!((v6.port, v6.address), (8443, "fd00::7".parse().ok()));
        assert!(parse_remote_url("https://u:p@h/mcp").is_err(), "credentials");
        assert!(parse_remote_url("http://h/mcp").is_err(), "plain http");
        assert!(parse_remote_url("https://h:0/mcp").is_err());
        assert!(parse_remote_url("https:///mcp").is_err());
    }
}
