//! A virtual server rendered (pure): a server-shaped spec of its settings with no image and
//! no remote (the pod is the gateway alone), whose gateway's upstream is its servers'
//! gateways, reached over https with Palisade's CA and a token exchanged for each server's
//! audience, and whose egress adds those servers' pods on the gateway port only.

use k8s_openapi::api::networking::v1::{NetworkPolicyEgressRule, NetworkPolicyPeer};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, LabelSelectorRequirement};
use palisade_core::config::{Member, TokenExchangeConfig, Upstream, UpstreamAuthConfig};
use palisade_crds::{MCP_SERVER_LABEL, MCPServer, MCPVirtualServer};

use crate::gateway_config::{TLS_DIR, UPSTREAM_CA_DIR, UPSTREAM_SECRET_DIR};
use crate::{GATEWAY_PORT, RenderError, RenderOptions, Rendered, Shape, assemble, endpoint};

/// The servers as the virtual server's gateway reaches them, in name order.
pub fn member_endpoints(
    vs: &MCPVirtualServer,
    members: &[MCPServer],
    cluster_domain: &str,
) -> Result<Vec<Member>, RenderError> {
    let namespace =
        vs.metadata.namespace.as_deref().ok_or(RenderError::MissingMetadata("namespace"))?;
    let x = &vs.spec.member_auth.token_exchange;
    let mut sorted: Vec<&MCPServer> = members.iter().collect();
    sorted.sort_by_key(|m| m.metadata.name.clone());
    let mut out = Vec::with_capacity(sorted.len());
    for m in sorted {
        let name = m.metadata.name.as_deref().ok_or(RenderError::MissingMetadata("server name"))?;
        let audience = m.spec.auth.oidc.as_ref().map(|o| o.audience.clone()).ok_or_else(|| {
            RenderError::BadMember(format!(
                "server {name} has no OIDC: the virtual server reaches it with a token exchanged for its audience"
            ))
        })?;
        out.push(Member {
            name: name.to_string(),
            prefix: vs.spec.prefix_of(name),
            url: endpoint(name, namespace, cluster_domain),
            sse: false,
            // Palisade's CA issued the servers' serving certificates, and is in this gateway's.
            ca_file: Some(format!("{TLS_DIR}/ca.crt")),
            upstream_auth: Some(UpstreamAuthConfig::TokenExchange(TokenExchangeConfig {
                token_endpoint: x.token_endpoint.clone(),
                client_id: x.client_id.clone(),
                client_secret_file: format!("{UPSTREAM_SECRET_DIR}/{}", x.client_secret_ref.key),
                audience: Some(audience),
                resource: None,
                scopes: x.scopes.clone(),
                ca_file: x.ca_secret_ref.as_ref().map(|r| format!("{UPSTREAM_CA_DIR}/{}", r.key)),
            })),
        });
    }
    Ok(out)
}

/// A server of the virtual server's own settings (its gateway alone), owned by it.
fn as_server(vs: &MCPVirtualServer) -> MCPServer {
    let mut server =
        MCPServer::new(vs.metadata.name.as_deref().unwrap_or_default(), vs.gateway_spec());
    server.metadata.namespace = vs.metadata.namespace.clone();
    server.metadata.uid = vs.metadata.uid.clone();
    server
}

/// Renders every object for `vs` over `members` (the MCPServers it selects).
pub fn render_virtual(
    vs: &MCPVirtualServer,
    members: &[MCPServer],
    opts: &RenderOptions,
) -> Result<Rendered, RenderError> {
    if members.is_empty() {
        return Err(RenderError::BadMember(
            "no MCPServer matches the virtual server's servers or selector".into(),
        ));
    }
    let endpoints = member_endpoints(vs, members, &opts.cluster_domain)?;
    let names: Vec<String> = endpoints.iter().map(|m| m.name.clone()).collect();
    let to_members = NetworkPolicyEgressRule {
        to: Some(vec![NetworkPolicyPeer {
            pod_selector: Some(LabelSelector {
                match_labels: None,
                match_expressions: Some(vec![LabelSelectorRequirement {
                    key: MCP_SERVER_LABEL.to_string(),
                    operator: "In".to_string(),
                    values: Some(names),
                }]),
            }),
            namespace_selector: None,
            ip_block: None,
        }]),
        ports: Some(vec![k8s_openapi::api::networking::v1::NetworkPolicyPort {
            port: Some(k8s_openapi::apimachinery::pkg::util::intstr::IntOrString::Int(
                GATEWAY_PORT,
            )),
            protocol: Some("TCP".to_string()),
            end_port: None,
        }]),
    };
    let shape = Shape {
        owner_kind: Some("MCPVirtualServer"),
        upstream: Some(Upstream::Virtual { members: endpoints, naming: vs.spec.naming.clone() }),
        egress: vec![to_members],
    };
    let rendered = assemble(&as_server(vs), opts, None, &shape)?;
    Ok(rendered)
}
