//! The gateway's config file, derived from the spec. Secret references become the paths
//! where the Deployment mounts them.

use palisade_core::config::{
    AuditConfig, AuthConfig, Authorization, GatewayConfig, Listen, MtlsConfig, ServerRef,
    StateStore, TlsFiles, TokenExchangeConfig, Upstream, UpstreamAuthConfig,
};
use palisade_crds::MCPServer;
use palisade_crds::mcpserver::Transport;

use crate::{ADMIN_PORT, BRIDGE_SOCKET, GATEWAY_PATH, GATEWAY_PORT};

pub(crate) const TLS_DIR: &str = "/etc/palisade/tls";
pub(crate) const CLIENT_CA_DIR: &str = "/etc/palisade/client-ca";
pub(crate) const AUDIT_KEY_DIR: &str = "/etc/palisade/audit-key";
pub(crate) const OIDC_CA_DIR: &str = "/etc/palisade/oidc-ca";
/// The shared state store's password and CA.
pub(crate) const STORE_SECRET_DIR: &str = "/etc/palisade/store";
pub(crate) const STORE_CA_DIR: &str = "/etc/palisade/store-ca";
/// The upstream credential (a header's value, or the token exchange's client secret) and the
/// token endpoint's CA.
pub(crate) const UPSTREAM_SECRET_DIR: &str = "/etc/palisade/upstream";
pub(crate) const UPSTREAM_CA_DIR: &str = "/etc/palisade/upstream-ca";
/// A remote server's CA.
pub(crate) const REMOTE_CA_DIR: &str = "/etc/palisade/remote-ca";
/// The gateway's own state that outlives a container restart (an emptyDir of the pod).
pub(crate) const STATE_DIR: &str = "/var/lib/palisade";
/// Where the audit chain's head is kept.
pub(crate) const AUDIT_HEAD_FILE: &str = "/var/lib/palisade/audit-head.json";

pub fn gateway_config(server: &MCPServer, name: &str, namespace: &str) -> GatewayConfig {
    let spec = &server.spec;
    let upstream = match (&spec.remote, spec.transport) {
        (Some(remote), transport) => Upstream::Http {
            url: remote.url.clone(),
            sse: transport == Transport::Sse,
            ca_file: remote.ca_secret_ref.as_ref().map(|r| format!("{REMOTE_CA_DIR}/{}", r.key)),
        },
        (None, Transport::Stdio) => {
            Upstream::Stdio { socket: BRIDGE_SOCKET.to_string(), sandbox: spec.sandbox.clone() }
        }
        (None, Transport::StreamableHttp | Transport::Sse) => Upstream::Http {
            url: format!("http://127.0.0.1:{}{}", spec.port.unwrap_or(8080), spec.upstream_path()),
            sse: spec.transport == Transport::Sse,
            ca_file: None,
        },
    };
    GatewayConfig {
        server: ServerRef { name: name.to_string(), namespace: namespace.to_string() },
        listen: Listen {
            address: format!("0.0.0.0:{GATEWAY_PORT}"),
            admin_address: format!("0.0.0.0:{ADMIN_PORT}"),
            path: GATEWAY_PATH.to_string(),
            tls: Some(TlsFiles {
                cert_file: format!("{TLS_DIR}/tls.crt"),
                key_file: format!("{TLS_DIR}/tls.key"),
            }),
            allowed_origins: spec.gateway.allowed_origins.clone(),
            resource_uri: spec.auth.oidc.as_ref().map(|o| o.audience.clone()),
        },
        upstream,
        protocol: spec.protocol.clone(),
        auth: AuthConfig {
            oidc: spec.auth.oidc.clone(),
            mtls: spec.auth.mtls.as_ref().map(|m| MtlsConfig {
                client_ca_file: format!("{CLIENT_CA_DIR}/{}", m.client_ca_secret_ref.key),
                principal_from: m.principal_from,
            }),
            mode: spec.auth.mode,
            oidc_ca_file: spec
                .auth
                .oidc_ca_secret_ref
                .as_ref()
                .map(|r| format!("{OIDC_CA_DIR}/{}", r.key)),
        },
        authorization: Authorization { roles: spec.authorization.roles.clone() },
        tools: spec.tools.clone(),
        tool_defaults: spec.tool_defaults.clone(),
        limits: spec.limits.clone(),
        audit: AuditConfig {
            enabled: spec.audit.enabled,
            checkpoint_every: spec.audit.checkpoint_every,
            signing_key_file: spec
                .audit
                .signing_key_secret_ref
                .as_ref()
                .map(|k| format!("{AUDIT_KEY_DIR}/{}", k.key)),
            file: None,
            head_file: Some(AUDIT_HEAD_FILE.to_string()),
        },
        protected_paths: spec.secret_mounts.iter().map(|m| m.mount_path.clone()).collect(),
        state: spec.gateway.state.as_ref().map(|s| StateStore {
            url: s.url.clone(),
            password_file: Some(format!("{STORE_SECRET_DIR}/{}", s.password_secret_ref.key)),
            ca_file: s.ca_secret_ref.as_ref().map(|r| format!("{STORE_CA_DIR}/{}", r.key)),
            key_prefix: format!("palisade:{namespace}/{name}:"),
        }),
        tracing: None,
        upstream_auth: spec.upstream_auth.as_ref().and_then(|u| {
            if let Some(h) = &u.header {
                return Some(UpstreamAuthConfig::Header {
                    name: h.name.clone(),
                    prefix: h.prefix.clone(),
                    value_file: format!("{UPSTREAM_SECRET_DIR}/{}", h.secret_ref.key),
                });
            }
            u.token_exchange.as_ref().map(|t| {
                UpstreamAuthConfig::TokenExchange(TokenExchangeConfig {
                    token_endpoint: t.token_endpoint.clone(),
                    client_id: t.client_id.clone(),
                    client_secret_file: format!(
                        "{UPSTREAM_SECRET_DIR}/{}",
                        t.client_secret_ref.key
                    ),
                    audience: t.audience.clone(),
                    resource: t.resource.clone(),
                    scopes: t.scopes.clone(),
                    ca_file: t
                        .ca_secret_ref
                        .as_ref()
                        .map(|r| format!("{UPSTREAM_CA_DIR}/{}", r.key)),
                })
            })
        }),
    }
}
