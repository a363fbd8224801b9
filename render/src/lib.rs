//! Renders an `MCPServer` into the objects the operator applies: a pure function with no
//! cluster access, so `palisade render`, the operator and the tests share one source of truth.

mod gateway_config;
mod labels;
mod network;
mod pod;
mod virtual_server;

use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{ConfigMap, Service, ServiceAccount};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use palisade_core::config::GatewayConfig;
use palisade_core::image::{ImageRef, ImageRefError};
use palisade_crds::MCPServer;
use serde::Serialize;
use sha2::{Digest, Sha256};

pub use gateway_config::gateway_config;
pub use labels::{selector_labels, standard_labels};
pub use network::METADATA_EXCLUSION_NOTE;
pub use virtual_server::{member_endpoints, render_virtual};

/// Ports and paths of the gateway container; the admin port never serves MCP.
pub const GATEWAY_PORT: i32 = 8443;
pub const ADMIN_PORT: i32 = 9090;
pub const GATEWAY_PATH: &str = "/mcp";
/// Annotation on the pod template carrying the hash of the rendered gateway config, so a
/// change of policy (and only a change) rolls the pods.
pub const CONFIG_HASH_ANNOTATION: &str = "palisade.dev/config-hash";
/// Annotation listing DNS-name egress rules that NetworkPolicy cannot express.
pub const EGRESS_HOSTS_ANNOTATION: &str = "palisade.dev/egress-hosts";
/// Where the stdio bridge listens, in a volume shared by the server and gateway containers.
pub const BRIDGE_SOCKET: &str = "/palisade/run/mcp.sock";
/// Where the init container installs the gateway binary for the stdio bridge.
pub const BRIDGE_BINARY: &str = "/palisade/bin/palisade-gateway";
/// Owner UID used when rendering offline, before the API server assigned one.
pub const OFFLINE_UID: &str = "00000000-0000-0000-0000-000000000000";

/// Image of the gateway sidecar when the operator is not told otherwise. Releases replace the
/// digest; clusters set `gateway.image` in the Helm chart to their own mirrored digest.
pub const DEFAULT_GATEWAY_IMAGE: &str = "ghcr.io/palisade-dev/palisade-gateway:0.1.0@sha256:0000000000000000000000000000000000000000000000000000000000000000";

/// Which CNI-specific policy to render for DNS-name egress rules.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum FqdnPolicy {
    /// Record the names in an annotation only (NetworkPolicy cannot express them).
    #[default]
    None,
    /// Also render a `cilium.io/v2` CiliumNetworkPolicy with `toFQDNs`, and restrict DNS to
    /// the names the pod needs (Cilium's DNS proxy) instead of leaving it open.
    Cilium,
}

/// Where cluster DNS runs, for the egress rule that lets the pod resolve names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DnsPeer {
    pub namespace: String,
    pub pod_labels: BTreeMap<String, String>,
}

impl Default for DnsPeer {
    fn default() -> Self {
        DnsPeer {
            namespace: "kube-system".to_string(),
            pod_labels: BTreeMap::from([("k8s-app".to_string(), "kube-dns".to_string())]),
        }
    }
}

/// The OpenTelemetry Collector the gateways export spans to (OTLP/HTTP).
#[derive(Debug, Clone, PartialEq)]
pub struct TraceExport {
    /// Its OTLP/HTTP base URL (`http://otel-collector.observability:4318`).
    pub otlp_endpoint: String,
    /// The namespace it runs in and the port the URL names: the gateways' egress is opened to
    /// that port of that namespace's pods, nothing more.
    pub namespace: String,
    pub port: u16,
    /// Share of traces started at the gateways that are recorded.
    pub sample_ratio: f64,
}

/// Cluster-level inputs that are not part of the MCPServer.
#[derive(Debug, Clone, PartialEq)]
pub struct RenderOptions {
    /// Gateway image, pinned by digest.
    pub gateway_image: String,
    /// Digest of `spec.image` resolved by the operator (`sha256:...`); not needed when the spec
    /// already pins a digest.
    pub resolved_digest: Option<String>,
    /// Namespace of the operator, whose pods may reach the gateway's admin port.
    pub operator_namespace: String,
    /// Namespace of the Prometheus that scrapes the gateways' metrics (admin port), if any.
    pub metrics_namespace: Option<String>,
    /// Where the gateways send their spans, if anywhere.
    pub tracing: Option<TraceExport>,
    pub cluster_domain: String,
    pub dns: DnsPeer,
    pub fqdn_policy: FqdnPolicy,
}

impl Default for RenderOptions {
    fn default() -> Self {
        RenderOptions {
            gateway_image: DEFAULT_GATEWAY_IMAGE.to_string(),
            resolved_digest: None,
            operator_namespace: "palisade-system".to_string(),
            metrics_namespace: None,
            tracing: None,
            cluster_domain: "cluster.local".to_string(),
            dns: DnsPeer::default(),
            fqdn_policy: FqdnPolicy::None,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum RenderError {
    #[error("the MCPServer has no {0}")]
    MissingMetadata(&'static str),
    #[error("spec.image: {0}")]
    BadImage(#[from] ImageRefError),
    #[error(
        "spec.image {0:?} is not pinned by digest and no resolved digest was given; pin it \
         (repo@sha256:...) or let the operator resolve it"
    )]
    ImageNotPinned(String),
    #[error("the spec must name exactly one of image or remote")]
    ImageOrRemote,
    #[error("spec.remote: {0}")]
    BadRemote(String),
    #[error("{0}")]
    BadMember(String),
    #[error("gateway image {0:?} must be pinned by digest")]
    GatewayImageNotPinned(String),
    #[error("spec.egress[{index}].cidr: {message}")]
    BadEgress { index: usize, message: String },
    #[error("spec.ingress[{index}].cidr: {message}")]
    BadIngress { index: usize, message: String },
    #[error("spec.gateway.state: {0}")]
    BadStateStore(String),
    #[error("cannot serialize the gateway config: {0}")]
    Config(#[from] serde_json::Error),
}

/// Everything the operator applies for one MCPServer.
#[derive(Debug, Clone, PartialEq)]
pub struct Rendered {
    pub service_account: ServiceAccount,
    pub config_map: ConfigMap,
    pub deployment: Deployment,
    pub service: Service,
    pub network_policies: Vec<NetworkPolicy>,
    pub pod_disruption_budget: Option<PodDisruptionBudget>,
    /// CNI-specific FQDN policy, when requested and the spec has host rules.
    pub cilium_policy: Option<serde_json::Value>,
    pub gateway_config: GatewayConfig,
    /// SHA-256 of the gateway config file, also on the pod template.
    pub config_hash: String,
    /// The server image the pods run (by digest); `None` for a remote server.
    pub image: Option<String>,
}

impl Rendered {
    /// The objects in apply order, as JSON values with `apiVersion` and `kind`.
    pub fn objects(&self) -> Result<Vec<serde_json::Value>, serde_json::Error> {
        fn typed<T: Serialize + k8s_openapi::Resource>(
            obj: &T,
        ) -> Result<serde_json::Value, serde_json::Error> {
            let mut v = serde_json::to_value(obj)?;
            if let Some(map) = v.as_object_mut() {
                map.insert("apiVersion".into(), T::API_VERSION.into());
                map.insert("kind".into(), T::KIND.into());
            }
            Ok(v)
        }
        let mut out = vec![typed(&self.service_account)?, typed(&self.config_map)?];
        for np in &self.network_policies {
            out.push(typed(np)?);
        }
        if let Some(cnp) = &self.cilium_policy {
            out.push(cnp.clone());
        }
        out.push(typed(&self.service)?);
        out.push(typed(&self.deployment)?);
        if let Some(pdb) = &self.pod_disruption_budget {
            out.push(typed(pdb)?);
        }
        Ok(out)
    }
}

/// Names of the objects rendered for an MCPServer called `name`.
pub mod names {
    pub fn config_map(name: &str) -> String {
        format!("{name}-gateway")
    }
    pub fn tls_secret(name: &str) -> String {
        format!("{name}-gateway-tls")
    }
    pub fn default_deny(name: &str) -> String {
        format!("{name}-default-deny")
    }
    pub fn ingress_policy(name: &str) -> String {
        format!("{name}-ingress")
    }
    pub fn egress_policy(name: &str) -> String {
        format!("{name}-egress")
    }
}

/// The server image by digest (the spec's own digest, or the resolved one); `None` for a
/// remote server, which runs no image.
pub fn pinned_image(
    server: &MCPServer,
    resolved: Option<&str>,
) -> Result<Option<String>, RenderError> {
    let image = match (&server.spec.image, &server.spec.remote) {
        (Some(image), None) => image,
        (None, Some(_)) => return Ok(None),
        _ => return Err(RenderError::ImageOrRemote),
    };
    let parsed = ImageRef::parse(image)?;
    match (&parsed.digest, resolved) {
        (Some(_), _) => Ok(Some(parsed.to_string())),
        (None, Some(d)) => Ok(Some(parsed.with_digest(d).to_string())),
        (None, None) => Err(RenderError::ImageNotPinned(image.clone())),
    }
}

pub fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// Renders every object for `server`.
pub fn render(server: &MCPServer, opts: &RenderOptions) -> Result<Rendered, RenderError> {
    let image = pinned_image(server, opts.resolved_digest.as_deref())?;
    assemble(server, opts, image, &Shape::default())
}

/// What differs between the objects of a server and those of a virtual server, which are
/// rendered from a server-shaped spec of the same settings.
#[derive(Default)]
pub(crate) struct Shape {
    /// The owner's kind (`MCPServer` unless given).
    pub owner_kind: Option<&'static str>,
    /// The gateway's upstream, when it is not the spec's own.
    pub upstream: Option<palisade_core::config::Upstream>,
    /// Egress rules beyond the spec's.
    pub egress: Vec<k8s_openapi::api::networking::v1::NetworkPolicyEgressRule>,
}

pub(crate) fn assemble(
    server: &MCPServer,
    opts: &RenderOptions,
    image: Option<String>,
    shape: &Shape,
) -> Result<Rendered, RenderError> {
    let name = server.metadata.name.as_deref().ok_or(RenderError::MissingMetadata("name"))?;
    let namespace =
        server.metadata.namespace.as_deref().ok_or(RenderError::MissingMetadata("namespace"))?;
    if ImageRef::parse(&opts.gateway_image)?.digest.is_none() {
        return Err(RenderError::GatewayImageNotPinned(opts.gateway_image.clone()));
    }

    let mut gateway_config = gateway_config(server, name, namespace);
    if let Some(upstream) = &shape.upstream {
        // An upstream given by the shape (a virtual server's) carries its own credentials.
        gateway_config.upstream = upstream.clone();
        gateway_config.upstream_auth = None;
    }
    gateway_config.tracing = opts.tracing.as_ref().map(|t| palisade_core::config::TracingConfig {
        otlp_endpoint: t.otlp_endpoint.clone(),
        sample_ratio: t.sample_ratio,
    });
    let config_json = serde_json::to_string_pretty(&gateway_config)?;
    let config_hash = sha256_hex(config_json.as_bytes());
    let meta = labels::Meta::new(server, name, namespace, shape.owner_kind.unwrap_or("MCPServer"));

    let mut network_policies = network::network_policies(server, &meta, opts)?;
    if let Some(egress) = network_policies
        .iter_mut()
        .find(|n| n.metadata.name.as_deref() == Some(names::egress_policy(name).as_str()))
        .and_then(|n| n.spec.as_mut())
        .and_then(|s| s.egress.as_mut())
    {
        egress.extend(shape.egress.iter().cloned());
    }
    let cilium_policy = match opts.fqdn_policy {
        FqdnPolicy::Cilium => Some(network::cilium_fqdn_policy(server, &meta, opts)),
        FqdnPolicy::None => None,
    };

    Ok(Rendered {
        service_account: pod::service_account(&meta),
        config_map: pod::config_map(&meta, config_json),
        deployment: pod::deployment(server, &meta, opts, image.as_deref(), &config_hash),
        service: pod::service(&meta),
        pod_disruption_budget: pod::pod_disruption_budget(server, &meta),
        network_policies,
        cilium_policy,
        gateway_config,
        config_hash,
        image,
    })
}

/// The in-cluster URL of the gateway's MCP endpoint.
pub fn endpoint(name: &str, namespace: &str, cluster_domain: &str) -> String {
    format!("https://{name}.{namespace}.svc.{cluster_domain}:{GATEWAY_PORT}{GATEWAY_PATH}")
}

#[cfg(test)]
mod tests;
