//! Workloads that present themselves as MCP servers (the `palisade.dev/mcp-server` label on
//! the object or its pod template) must look exactly like what the operator renders: hardened,
//! fronted by the gateway, and running the verified digest. This closes the bypass of creating
//! an MCP pod by hand.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::PodSpec;
use palisade_core::image::ImageRef;
use palisade_crds::MCP_SERVER_LABEL;
use serde_json::Value;

use crate::rules::{mcpserver, pss};
use crate::verdict::Verdict;

/// Kinds that carry a pod template, and where it is.
pub const WORKLOAD_KINDS: &[(&str, &str)] = &[
    ("Pod", ""),
    ("Deployment", "spec.template"),
    ("ReplicaSet", "spec.template"),
    ("StatefulSet", "spec.template"),
    ("DaemonSet", "spec.template"),
    ("Job", "spec.template"),
    ("CronJob", "spec.jobTemplate.spec.template"),
];

pub fn is_workload_kind(kind: &str) -> bool {
    WORKLOAD_KINDS.iter().any(|(k, _)| *k == kind)
}

/// What the cluster knows about the MCP server a workload claims to be.
#[derive(Debug, Default, Clone)]
pub struct Expectations {
    /// The digest the operator resolved and verified (`MCPServer.status.image.digest`).
    pub verified_digest: Option<String>,
    /// The gateway image the operator injects.
    pub gateway_image: Option<String>,
    /// The claimed MCPServer is remote: no container but the gateway may run.
    pub gateway_only: bool,
}

fn pointer<'a>(v: &'a Value, dotted: &str) -> Option<&'a Value> {
    if dotted.is_empty() {
        return Some(v);
    }
    dotted.split('.').try_fold(v, |cur, key| cur.get(key))
}

/// The MCP server name a workload claims, from its labels or its pod template's labels.
pub fn claimed_server(obj: &Value, kind: &str) -> Option<String> {
    let template = WORKLOAD_KINDS.iter().find(|(k, _)| *k == kind).map(|(_, t)| *t)?;
    let label = |meta: Option<&Value>| {
        meta.and_then(|m| m.get("labels"))
            .and_then(|l| l.get(MCP_SERVER_LABEL))
            .and_then(Value::as_str)
            .map(str::to_string)
    };
    label(obj.get("metadata")).or_else(|| {
        let tmpl = pointer(obj, template)?;
        if template.is_empty() { None } else { label(tmpl.get("metadata")) }
    })
}

/// Reviews a labelled workload. Returns `None` when the object does not claim to be an MCP
/// server (it is then none of Palisade's business).
pub fn review_workload(obj: &Value, kind: &str, expect: &Expectations) -> Option<Verdict> {
    let name = claimed_server(obj, kind)?;
    let template_path = WORKLOAD_KINDS.iter().find(|(k, _)| *k == kind).map(|(_, t)| *t)?;
    let mut v = Verdict::default();
    let template = pointer(obj, template_path);
    let (spec_path, spec_value) = if template_path.is_empty() {
        ("spec".to_string(), obj.get("spec"))
    } else {
        (format!("{template_path}.spec"), template.and_then(|t| t.get("spec")))
    };
    let spec: PodSpec = match spec_value.cloned().map(serde_json::from_value) {
        Some(Ok(s)) => s,
        Some(Err(e)) => {
            v.deny("workload.parse", spec_path, format!("not a valid pod spec: {e}"));
            return Some(v);
        }
        None => {
            v.deny("workload.parse", spec_path, "missing pod spec");
            return Some(v);
        }
    };
    let annotations: Option<BTreeMap<String, String>> = template
        .and_then(|t| t.get("metadata"))
        .or_else(|| obj.get("metadata"))
        .and_then(|m| m.get("annotations"))
        .and_then(|a| serde_json::from_value(a.clone()).ok());

    v.merge(pss::check_pod_spec(&spec, annotations.as_ref(), &spec_path));
    v.merge(beyond_pss(&spec, &spec_path));

    let mut has_gateway = false;
    let all = spec
        .init_containers
        .iter()
        .flatten()
        .map(|c| ("initContainers", c))
        .chain(spec.containers.iter().map(|c| ("containers", c)));
    let mut index: BTreeMap<&str, usize> = BTreeMap::new();
    for (list, c) in all {
        let i = index.entry(list).or_default();
        let field = format!("{spec_path}.{list}[{i}].image");
        *i += 1;
        let image = c.image.clone().unwrap_or_default();
        let parsed = ImageRef::parse(&image);
        let Ok(parsed) = parsed else {
            v.deny("workload.image", field, format!("{image:?} is not a valid image reference"));
            continue;
        };
        let Some(digest) = parsed.digest.clone() else {
            v.deny(
                "workload.image",
                field,
                format!(
                    "{image} must be pinned by digest (MCP workloads run only verified digests)"
                ),
            );
            continue;
        };
        let is_gateway =
            c.name == "gateway" || (list == "initContainers" && c.name == "install-bridge");
        if is_gateway {
            has_gateway |= c.name == "gateway";
            if let Some(gw) = &expect.gateway_image
                && ImageRef::parse(gw).ok().and_then(|g| g.digest) != Some(digest)
            {
                v.deny(
                    "workload.gatewayImage",
                    field,
                    format!("the gateway must be the operator's image {gw}"),
                );
            }
        } else if expect.gateway_only {
            v.deny(
                "workload.remoteServer",
                field,
                format!("MCPServer {name} is remote: its pods run the Palisade gateway alone"),
            );
        } else if let Some(verified) = &expect.verified_digest
            && &digest != verified
        {
            v.deny("workload.verifiedDigest", field, format!("runs {digest}, but MCPServer {name} verified {verified}; only the verified digest may run"));
        }
    }
    if !has_gateway {
        v.deny("workload.gateway", format!("{spec_path}.containers"), "MCP servers run behind the Palisade gateway: create an MCPServer instead of a hand-made workload");
    }
    Some(v)
}

/// What an MCPServer may not do, applied to the containers of a hand-made workload too:
/// shells and inline code, plaintext credentials in argv and env, code-injection variables;
/// and what would open the pod to other processes or the API: a projected ServiceAccount
/// token, a shared process namespace, ephemeral (debug) containers.
pub fn beyond_pss(spec: &PodSpec, prefix: &str) -> Verdict {
    let mut v = Verdict::default();
    let lists = [
        ("initContainers", spec.init_containers.as_deref().unwrap_or_default()),
        ("containers", spec.containers.as_slice()),
    ];
    for (list, containers) in lists {
        for (i, c) in containers.iter().enumerate() {
            let at = format!("{prefix}.{list}[{i}]");
            let command = c.command.clone().unwrap_or_default();
            let mut argv = command.clone();
            argv.extend(c.args.clone().unwrap_or_default());
            // An image entrypoint (no command) is the image's business, and the gateway's
            // own containers are checked by their digest.
            if !argv.is_empty() {
                mcpserver::argv_rules(
                    &mut v,
                    &argv,
                    command.len(),
                    &format!("{at}.command"),
                    &format!("{at}.args"),
                );
            }
            for (j, e) in c.env.iter().flatten().enumerate() {
                let field = format!("{at}.env[{j}]");
                if mcpserver::injects_code(&e.name) {
                    v.deny(
                        "baseline.envInjection",
                        format!("{field}.name"),
                        format!("{} injects code into the process; remove it", e.name),
                    );
                }
                if let Some(value) = &e.value
                    && let Some(why) = mcpserver::plaintext_env(&e.name, value)
                {
                    v.deny(
                        "baseline.plaintextSecret",
                        format!("{field}.value"),
                        format!("{} holds {why} in plaintext; use valueFrom.secretKeyRef", e.name),
                    );
                }
                if e.value_from.as_ref().is_some_and(|f| f.config_map_key_ref.is_some())
                    && palisade_core::secrets::name_looks_secret(&e.name)
                {
                    v.deny("baseline.plaintextSecret", format!("{field}.valueFrom.configMapKeyRef"), format!("{} is a credential; ConfigMaps are plaintext, use valueFrom.secretKeyRef", e.name));
                }
            }
        }
    }
    for (i, vol) in spec.volumes.iter().flatten().enumerate() {
        let token = vol
            .projected
            .as_ref()
            .and_then(|p| p.sources.as_ref())
            .is_some_and(|s| s.iter().any(|src| src.service_account_token.is_some()));
        if token {
            v.deny("workload.serviceAccountToken", format!("{prefix}.volumes[{i}].projected"), "a projected ServiceAccount token gives the MCP server a Kubernetes API credential; MCP servers get none");
        }
    }
    if spec.share_process_namespace == Some(true) {
        v.deny("workload.shareProcessNamespace", format!("{prefix}.shareProcessNamespace"), "a shared process namespace lets the server see and signal the gateway (and read its memory and environment); set it to false");
    }
    if spec.ephemeral_containers.as_ref().is_some_and(|e| !e.is_empty()) {
        v.deny("workload.ephemeralContainers", format!("{prefix}.ephemeralContainers"), "debug containers in an MCP pod bypass the gateway and the pod's hardening; debug a copy of the pod (kubectl debug --copy-to) in a namespace Palisade does not enforce");
    }
    v
}
