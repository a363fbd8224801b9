//! NetworkPolicies: default deny both ways, ingress only to the gateway port, egress only to
//! DNS, the spec's allowlist and the shared state store's port, with metadata and link-local
//! ranges carved out of every CIDR.

use std::collections::BTreeMap;

use ipnet::IpNet;
use k8s_openapi::api::networking::v1::{
    IPBlock, NetworkPolicy, NetworkPolicyEgressRule, NetworkPolicyIngressRule, NetworkPolicyPeer,
    NetworkPolicyPort, NetworkPolicySpec,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use palisade_core::config::{parse_remote_url, parse_store_url};
use palisade_core::net::{self, DeniedOverlap};
use palisade_crds::MCPServer;
use palisade_crds::mcpserver::{EgressPort, Peer, PortProtocol};
use serde_json::json;

use crate::labels::Meta;
use crate::{ADMIN_PORT, FqdnPolicy, GATEWAY_PORT, RenderError, RenderOptions, names};

/// How Palisade keeps metadata endpoints out of reach even when a spec allows a broad CIDR.
pub const METADATA_EXCLUSION_NOTE: &str = "every ipBlock excludes the always-denied ranges it \
contains, in every IPv4 and IPv6 spelling (palisade_core::net::always_denied_everywhere); a \
CIDR inside one of them is refused";

fn selector(labels: &BTreeMap<String, String>) -> LabelSelector {
    LabelSelector { match_labels: Some(labels.clone()), match_expressions: None }
}

fn namespace_selector(namespace: &str) -> LabelSelector {
    selector(&BTreeMap::from([("kubernetes.io/metadata.name".to_string(), namespace.to_string())]))
}

fn tcp(port: i32) -> NetworkPolicyPort {
    NetworkPolicyPort {
        port: Some(IntOrString::Int(port)),
        protocol: Some("TCP".to_string()),
        end_port: None,
    }
}

/// An ipBlock for `cidr` with every always-denied range inside it excluded.
fn ip_block(cidr: &str) -> Result<IPBlock, String> {
    let net: IpNet = net::parse_canonical_cidr(cidr)?;
    let mut except = Vec::new();
    for overlap in net::denied_overlaps(&net, &net::always_denied_everywhere()) {
        match overlap {
            DeniedOverlap::Inside(d) => {
                return Err(format!("{cidr} lies inside {d}, which is always denied"));
            }
            DeniedOverlap::Contains(d) => except.push(d.to_string()),
        }
    }
    Ok(IPBlock { cidr: net.to_string(), except: (!except.is_empty()).then_some(except) })
}

/// A peer of the spec as NetworkPolicy names it (a CIDR keeps its always-denied excepts).
fn policy_peer(peer: &Peer) -> Result<NetworkPolicyPeer, String> {
    Ok(match &peer.cidr {
        Some(cidr) => {
            NetworkPolicyPeer { ip_block: Some(ip_block(cidr)?), ..NetworkPolicyPeer::default() }
        }
        None => NetworkPolicyPeer {
            namespace_selector: peer.namespace_selector.clone(),
            // Without a namespace selector, a pod selector means "in this namespace".
            pod_selector: peer.pod_selector.clone(),
            ip_block: None,
        },
    })
}

fn egress_ports(ports: &[EgressPort]) -> Vec<NetworkPolicyPort> {
    ports
        .iter()
        .map(|p| NetworkPolicyPort {
            port: Some(IntOrString::Int(i32::from(p.port))),
            end_port: p.end_port.map(i32::from),
            protocol: Some(p.protocol.as_str().to_string()),
        })
        .collect()
}

/// A remote server named by DNS name without a `peer`: NetworkPolicy cannot name it, so it
/// becomes a DNS-name rule (host, port) like `egress[].host`.
fn remote_host_rule(server: &MCPServer) -> Option<(String, u16)> {
    let remote = server.spec.remote.as_ref().filter(|r| r.peer.is_none())?;
    let url = parse_remote_url(&remote.url).ok()?;
    url.address.is_none().then_some((url.host, url.port))
}

/// `host:port` strings of DNS-name egress rules, for the pod annotation.
pub(crate) fn egress_hosts(server: &MCPServer) -> Vec<String> {
    let mut out: Vec<String> =
        remote_host_rule(server).map(|(h, p)| format!("{h}:{p}")).into_iter().collect();
    for rule in &server.spec.egress {
        if let Some(host) = &rule.host {
            for p in &rule.ports {
                match p.end_port {
                    Some(end) => out.push(format!("{host}:{}-{end}", p.port)),
                    None => out.push(format!("{host}:{}", p.port)),
                }
            }
        }
    }
    out
}

pub(crate) fn network_policies(
    server: &MCPServer,
    meta: &Meta,
    opts: &RenderOptions,
) -> Result<Vec<NetworkPolicy>, RenderError> {
    let pods = selector(&meta.selector);
    let policy = |name: String, spec: NetworkPolicySpec| NetworkPolicy {
        metadata: meta.object(&name),
        spec: Some(spec),
    };

    let default_deny = policy(
        names::default_deny(&meta.name),
        NetworkPolicySpec {
            pod_selector: Some(pods.clone()),
            policy_types: Some(vec!["Ingress".to_string(), "Egress".to_string()]),
            ingress: None,
            egress: None,
        },
    );

    // An empty `from` would allow every source, so a rule is emitted only with peers.
    let mut ingress = Vec::new();
    let mut peers = Vec::new();
    for (index, peer) in server.spec.ingress.iter().enumerate() {
        peers
            .push(policy_peer(peer).map_err(|message| RenderError::BadIngress { index, message })?);
    }
    if !peers.is_empty() {
        ingress.push(NetworkPolicyIngressRule {
            from: Some(peers),
            ports: Some(vec![tcp(GATEWAY_PORT)]),
        });
    }
    ingress.push(NetworkPolicyIngressRule {
        from: Some(vec![NetworkPolicyPeer {
            namespace_selector: Some(namespace_selector(&opts.operator_namespace)),
            pod_selector: Some(selector(&BTreeMap::from([(
                "app.kubernetes.io/name".to_string(),
                "palisade-operator".to_string(),
            )]))),
            ip_block: None,
        }]),
        ports: Some(vec![tcp(ADMIN_PORT)]),
    });
    // The gateway's metrics (admin port), for the cluster's Prometheus when it is named.
    if let Some(ns) = &opts.metrics_namespace {
        ingress.push(NetworkPolicyIngressRule {
            from: Some(vec![NetworkPolicyPeer {
                namespace_selector: Some(namespace_selector(ns)),
                pod_selector: None,
                ip_block: None,
            }]),
            ports: Some(vec![tcp(ADMIN_PORT)]),
        });
    }
    let ingress_policy = policy(
        names::ingress_policy(&meta.name),
        NetworkPolicySpec {
            pod_selector: Some(pods.clone()),
            policy_types: Some(vec!["Ingress".to_string()]),
            ingress: Some(ingress),
            egress: None,
        },
    );

    // With Cilium, DNS is allowed by the CiliumNetworkPolicy, for the spec's names only; an
    // open port-53 rule here would let any name through (Cilium ORs the policies).
    let mut egress = Vec::new();
    let open_dns = NetworkPolicyEgressRule {
        to: Some(vec![NetworkPolicyPeer {
            namespace_selector: Some(namespace_selector(&opts.dns.namespace)),
            pod_selector: Some(selector(&opts.dns.pod_labels)),
            ip_block: None,
        }]),
        ports: Some(vec![
            NetworkPolicyPort {
                port: Some(IntOrString::Int(53)),
                protocol: Some("UDP".to_string()),
                end_port: None,
            },
            tcp(53),
        ]),
    };
    if opts.fqdn_policy != FqdnPolicy::Cilium {
        egress.push(open_dns);
    }
    for (index, rule) in server.spec.egress.iter().enumerate() {
        if let Some(cidr) = &rule.cidr {
            let block =
                ip_block(cidr).map_err(|message| RenderError::BadEgress { index, message })?;
            egress.push(NetworkPolicyEgressRule {
                to: Some(vec![NetworkPolicyPeer { ip_block: Some(block), ..Default::default() }]),
                ports: Some(egress_ports(&rule.ports)),
            });
        }
    }
    // The shared state store, on its port only.
    if let Some(store) = &server.spec.gateway.state {
        let url = parse_store_url(&store.url).map_err(RenderError::BadStateStore)?;
        egress.push(NetworkPolicyEgressRule {
            to: Some(vec![policy_peer(&store.peer).map_err(RenderError::BadStateStore)?]),
            ports: Some(vec![tcp(i32::from(url.port))]),
        });
    }
    // A remote server, on its URL's port only: at its peer, or at its address.
    if let Some(remote) = &server.spec.remote {
        let url = parse_remote_url(&remote.url).map_err(RenderError::BadRemote)?;
        let to = match (&remote.peer, url.address) {
            (Some(peer), _) => Some(policy_peer(peer).map_err(RenderError::BadRemote)?),
            (None, Some(ip)) => {
                let single = if ip.is_ipv4() { 32 } else { 128 };
                let block = ip_block(&format!("{ip}/{single}")).map_err(RenderError::BadRemote)?;
                Some(NetworkPolicyPeer { ip_block: Some(block), ..Default::default() })
            }
            // A DNS name: the FQDN policy and the pod annotation carry it.
            (None, None) => None,
        };
        if let Some(to) = to {
            egress.push(NetworkPolicyEgressRule {
                to: Some(vec![to]),
                ports: Some(vec![tcp(i32::from(url.port))]),
            });
        }
    }
    // The trace collector, on its OTLP port only.
    if let Some(t) = &opts.tracing {
        egress.push(NetworkPolicyEgressRule {
            to: Some(vec![NetworkPolicyPeer {
                namespace_selector: Some(namespace_selector(&t.namespace)),
                pod_selector: None,
                ip_block: None,
            }]),
            ports: Some(vec![tcp(i32::from(t.port))]),
        });
    }
    let egress_policy = policy(
        names::egress_policy(&meta.name),
        NetworkPolicySpec {
            pod_selector: Some(pods),
            policy_types: Some(vec!["Egress".to_string()]),
            ingress: None,
            egress: Some(egress),
        },
    );

    Ok(vec![default_deny, ingress_policy, egress_policy])
}

/// The DNS names the pod needs to resolve: the spec's host egress rules, and the OIDC issuer
/// (discovery) and JWKS hosts the gateway fetches keys from. Wildcards stay patterns.
pub(crate) fn dns_names(server: &MCPServer) -> Vec<String> {
    let mut names: Vec<String> = server.spec.egress.iter().filter_map(|r| r.host.clone()).collect();
    if let Some(url) = server.spec.remote.as_ref().and_then(|r| parse_remote_url(&r.url).ok())
        && url.address.is_none()
    {
        names.push(url.host);
    }
    if let Some(oidc) = &server.spec.auth.oidc {
        for url in std::iter::once(&oidc.issuer).chain(oidc.jwks_uri.iter()) {
            if let Some(host) = url
                .strip_prefix("https://")
                .and_then(|r| r.split(['/', '?', '#']).next())
                .map(|a| a.rsplit('@').next().unwrap_or(a))
                .and_then(|a| a.split(':').next())
                .filter(|h| !h.is_empty() && h.parse::<std::net::IpAddr>().is_err())
            {
                names.push(host.to_ascii_lowercase());
            }
        }
    }
    names.sort();
    names.dedup();
    names
}

/// A CiliumNetworkPolicy that allows the spec's DNS-name egress rules, and DNS itself only for
/// the names the pod needs ([`dns_names`]), through Cilium's DNS proxy: a name outside the
/// list is refused by the proxy, so DNS cannot carry data out. Cilium ORs it with the
/// NetworkPolicies above (which then omit their open DNS rule).
pub(crate) fn cilium_fqdn_policy(
    server: &MCPServer,
    meta: &Meta,
    opts: &RenderOptions,
) -> serde_json::Value {
    let remote = remote_host_rule(server).map(|(host, port)| {
        json!({
            "toFQDNs": [fqdn_selector(&host)],
            "toPorts": [{ "ports": [{ "port": port.to_string(), "protocol": PortProtocol::Tcp.as_str() }] }]
        })
    });
    let rules: Vec<_> = server
        .spec
        .egress
        .iter()
        .filter_map(|r| {
            let host = r.host.as_ref()?;
            let ports: Vec<_> = r
                .ports
                .iter()
                .map(|p| {
                    let mut port =
                        json!({ "port": p.port.to_string(), "protocol": p.protocol.as_str() });
                    if let Some(end) = p.end_port {
                        port["endPort"] = json!(end);
                    }
                    port
                })
                .collect();
            Some(json!({ "toFQDNs": [fqdn_selector(host)], "toPorts": [{ "ports": ports }] }))
        })
        .collect();
    let mut dns_selector = serde_json::Map::new();
    dns_selector.insert("k8s:io.kubernetes.pod.namespace".to_string(), json!(opts.dns.namespace));
    for (k, v) in &opts.dns.pod_labels {
        dns_selector.insert(format!("k8s:{k}"), json!(v));
    }
    let names: Vec<_> = dns_names(server).iter().map(|n| fqdn_selector(n)).collect();
    let mut egress = Vec::new();
    // Without names, no DNS at all.
    if !names.is_empty() {
        egress.push(json!({
            "toEndpoints": [{ "matchLabels": dns_selector }],
            "toPorts": [{
                "ports": [
                    { "port": "53", "protocol": PortProtocol::Udp.as_str() },
                    { "port": "53", "protocol": PortProtocol::Tcp.as_str() }
                ],
                "rules": { "dns": names }
            }]
        }));
    }
    egress.extend(rules);
    egress.extend(remote);
    let metadata = meta.object(&format!("{}-fqdn", meta.name));
    json!({
        "apiVersion": "cilium.io/v2",
        "kind": "CiliumNetworkPolicy",
        "metadata": metadata,
        "spec": {
            "endpointSelector": { "matchLabels": meta.selector },
            "egress": egress,
        }
    })
}

fn fqdn_selector(host: &str) -> serde_json::Value {
    if host.starts_with("*.") {
        json!({ "matchPattern": host })
    } else {
        json!({ "matchName": host })
    }
}
