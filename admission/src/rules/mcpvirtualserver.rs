//! `MCPVirtualServer`: the gateway baseline and policies applied to its settings (in the shape
//! of a server's), the member credential, and, with the servers it selects, whether they can
//! be reached (OIDC for the exchange, an ingress peer for its pods) and what clients would see:
//! a name two servers would share without a prefix is refused, as is one too long with
//! `longNames: Refuse`; shortened names are announced.

use palisade_core::naming::{self, Listed, Withheld};
use palisade_core::spec::PrefixMode;
use palisade_crds::mcppolicy::MCPPolicy;
use palisade_crds::{MCPServer, MCPVirtualServer, VIRTUAL_SERVER_LABEL};

use crate::rules::mcpserver::{Allowances, gateway_baseline, gateway_policy_rules};
use crate::verdict::Verdict;

/// Reviews `vs`; `servers` are the MCPServers of its namespace when known (the webhook's
/// cache, the files `palisade check` reads), `None` when not.
pub fn review(
    vs: &MCPVirtualServer,
    servers: Option<&[MCPServer]>,
    policies: &[&MCPPolicy],
) -> Verdict {
    let spec = vs.gateway_spec();
    let mut v = gateway_baseline(&spec, &Allowances::new(policies));
    let x = &vs.spec.member_auth.token_exchange;
    if vs.spec.auth.oidc.is_none() {
        v.deny("virtual.memberAuth", "spec.auth.oidc", "the virtual server reaches its servers with each caller's token exchanged for theirs: configure spec.auth.oidc (certificate principals have no token to exchange)");
    }
    if !x.token_endpoint.starts_with("https://") {
        v.deny("virtual.memberAuth", "spec.memberAuth.tokenExchange.tokenEndpoint", "the token endpoint must be an https URL (the client secret and users' tokens travel to it)");
    }
    if vs.spec.egress.is_empty() {
        v.warn(format!("the gateway exchanges tokens at {}: allow it in spec.egress (host or CIDR, port 443), or every call will fail", x.token_endpoint));
    }
    let mut prefixes: Vec<(String, String)> =
        vs.spec.servers.iter().map(|m| (vs.spec.prefix_of(&m.name), m.name.clone())).collect();
    prefixes.sort();
    for pair in prefixes.windows(2) {
        if pair[0].0 == pair[1].0 {
            v.deny(
                "virtual.prefix",
                "spec.servers",
                format!(
                    "servers {} and {} have the same prefix {}; give one of them another",
                    pair[0].1, pair[1].1, pair[0].0
                ),
            );
        }
    }
    if let Some(all) = servers {
        members(&mut v, vs, all);
    }
    for p in policies {
        let name = p.metadata.name.clone().unwrap_or_default();
        v.merge_from_policy(gateway_policy_rules(&spec, &p.spec), &name);
    }
    v
}

/// What the selected servers make of the virtual server.
fn members(v: &mut Verdict, vs: &MCPVirtualServer, all: &[MCPServer]) {
    let mut selected: Vec<&MCPServer> = all.iter().filter(|s| vs.selects(s)).collect();
    selected.sort_by_key(|s| s.metadata.name.clone());
    let name_of = |s: &MCPServer| s.metadata.name.clone().unwrap_or_default();
    for (i, m) in vs.spec.servers.iter().enumerate() {
        if !selected.iter().any(|s| name_of(s) == m.name) {
            v.warn(format!("spec.servers[{i}]: MCPServer {} does not exist in this namespace (yet); the virtual server goes without it until it does", m.name));
        }
    }
    if selected.is_empty() {
        v.warn("no MCPServer is selected yet: the virtual server will not be ready");
        return;
    }
    let vs_name = vs.metadata.name.clone().unwrap_or_default();
    for s in &selected {
        let name = name_of(s);
        if s.spec.auth.oidc.is_none() {
            v.deny("virtual.members", "spec.servers", format!("MCPServer {name} has no spec.auth.oidc: the virtual server reaches it with a token exchanged for its audience"));
        }
        let admits = s.spec.ingress.iter().any(|p| {
            p.namespace_selector.is_none()
                && p.pod_selector
                    .as_ref()
                    .and_then(|ps| ps.match_labels.as_ref())
                    .is_some_and(|l| l.get(VIRTUAL_SERVER_LABEL) == Some(&vs_name))
        });
        if !admits {
            v.warn(format!("MCPServer {name} does not admit this virtual server's pods: add to its spec.ingress `podSelector: {{matchLabels: {{{VIRTUAL_SERVER_LABEL}: {vs_name}}}}}`, or its NetworkPolicy drops the virtual server's requests"));
        }
    }
    // The names clients would see of the tools the servers' specs list.
    let server_names: Vec<String> = selected.iter().map(|s| name_of(s)).collect();
    let prefixes: Vec<String> = server_names.iter().map(|n| vs.spec.prefix_of(n)).collect();
    let listed: Vec<Listed> = selected
        .iter()
        .enumerate()
        .flat_map(|(i, s)| {
            s.spec.tools.iter().map(move |t| Listed { server: i, name: t.name.clone() })
        })
        .collect();
    let names = naming::expose(&vs.spec.naming, &prefixes, &listed);
    for w in &names.withheld {
        let what = w.describe(&server_names);
        match w {
            Withheld::Conflict { .. } if vs.spec.naming.prefix == PrefixMode::Never => v.deny("virtual.nameConflict", "spec.naming.prefix", format!("{what}: without prefixes two servers' tools would share one name; use prefix Always or OnConflict")),
            Withheld::Conflict { .. } => v.deny("virtual.nameConflict", "spec.servers", format!("{what} once prefixed: give the servers prefixes that cannot meet")),
            Withheld::TooLong { .. } => v.deny("virtual.nameLength", "spec.naming.maxLength", format!("{what}, above the limit of {}: shorten the prefix, or use longNames: Shorten", vs.spec.naming.max_length)),
        }
    }
    for e in names.exposed.iter().filter(|e| e.shortened) {
        v.warn(format!(
            "{}/{} is offered as {} (cut to {} characters)",
            server_names[e.server], e.original, e.name, vs.spec.naming.max_length
        ));
    }
    // Tool policies name what clients see.
    for (i, t) in vs.spec.tools.iter().enumerate() {
        if !names.exposed.iter().any(|e| e.name == t.name) {
            v.warn(format!("spec.tools[{i}] names {}, which no selected server lists under that name (names here carry their server's prefix)", t.name));
        }
    }
}
