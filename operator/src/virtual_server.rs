//! The reconciler of `MCPVirtualServer`s: review (the admission rules, with the servers it
//! selects and the policies of its namespace) -> serving certificate -> children (rendered by
//! `palisade_render::render_virtual`) -> status (`ServersResolved`, `NamesResolved` from the
//! gateways' admin `/status`, `Ready`). It runs beside the MCPServer controller and shares its
//! caches; a change to any MCPServer of a namespace re-checks that namespace's virtual servers.

use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::api::{Api, DynamicObject, Patch, PatchParams};
use kube::runtime::controller::Action;
use kube::runtime::reflector::{ObjectRef, Store};
use kube::{Resource, ResourceExt};
use palisade_admission::check::Object;
use palisade_admission::review::{self, Facts, Review};
use palisade_crds::mcpvirtualserver::MCPVirtualServerStatus;
use palisade_crds::{MCPServer, MCPVirtualServer, VIRTUAL_SERVER_LABEL};
use serde_json::{Value, json};
use tracing::warn;

use crate::gateways::Report;
use crate::reconcile::{Context, Error, apply_objects, ensure_tls_secret, prune_pdb};
use crate::status::condition;

/// How often a virtual server is looked at again (its gateways' readiness and what they
/// withhold are not watched).
const RECHECK: Duration = Duration::from_secs(30);

/// What the virtual-server reconciler needs beyond the MCPServer reconciler's context.
pub struct VirtualContext {
    pub ctx: Arc<Context>,
    /// The MCPServer controller's cache.
    pub servers: Store<DynamicObject>,
}

fn servers_in(vctx: &VirtualContext, ns: &str) -> Vec<MCPServer> {
    vctx.servers
        .state()
        .iter()
        .filter(|s| s.namespace().as_deref() == Some(ns))
        .filter_map(|s| serde_json::to_value(s.as_ref()).ok())
        .filter_map(|v| serde_json::from_value(v).ok())
        .collect()
}

/// `NamesResolved`: what the gateways withhold from the combined listing (conflicts, names
/// too long), from their admin `/status`.
fn names_resolved(prev: &[Condition], report: Option<&Report>, g: i64) -> Condition {
    let answers = match report {
        Some(Report::Answered(a)) => a,
        Some(Report::Unreachable(e)) => {
            return condition(
                prev,
                "NamesResolved",
                "Unknown",
                "GatewayUnreachable",
                format!("the gateways' admin port did not answer: {e}"),
                g,
            );
        }
        _ => {
            return condition(
                prev,
                "NamesResolved",
                "Unknown",
                "NoGatewayReady",
                "no ready gateway to ask".into(),
                g,
            );
        }
    };
    let mut withheld: Vec<String> = answers
        .iter()
        .flat_map(|a| a["namesWithheld"].as_array().cloned().unwrap_or_default())
        .filter_map(|w| w.as_str().map(str::to_string))
        .collect();
    withheld.sort();
    withheld.dedup();
    if withheld.is_empty() {
        condition(
            prev,
            "NamesResolved",
            "True",
            "NoConflicts",
            "every listed name reaches exactly one server".into(),
            g,
        )
    } else {
        let mut message = format!("withheld from clients: {}", withheld.join("; "));
        message.truncate(1000);
        condition(prev, "NamesResolved", "False", "NamesWithheld", message, g)
    }
}

pub async fn reconcile(
    vs: Arc<MCPVirtualServer>,
    vctx: Arc<VirtualContext>,
) -> Result<Action, Error> {
    let ctx = &vctx.ctx;
    let ns = vs.namespace().ok_or(Error::NoNamespace)?;
    let name = vs.name_any();
    if vs.metadata.deletion_timestamp.is_some() {
        return Ok(Action::await_change());
    }
    let g = vs.metadata.generation.unwrap_or(0);
    let prev = vs.status.clone().unwrap_or_default();
    let all = servers_in(&vctx, &ns);
    let members: Vec<MCPServer> = all.iter().filter(|s| vs.selects(s)).cloned().collect();
    let mut conditions = Vec::new();

    // The same review as admission's, with the servers and policies known now.
    let ns_labels = ctx
        .namespaces
        .get(&ObjectRef::new(&ns))
        .and_then(|n| n.metadata.labels.clone())
        .unwrap_or_default();
    let violation = {
        let policies = ctx.policies.state();
        let refs: Vec<&palisade_crds::MCPPolicy> = policies.iter().map(|p| p.as_ref()).collect();
        let lookup = |_: &str| all.clone();
        let facts = Facts {
            namespace_labels: Some(&ns_labels),
            policies: &refs,
            servers: Some(&lookup),
            ..Facts::default()
        };
        let object = Object::VirtualServer(Box::new(vs.as_ref().clone()));
        match review::review(&object, &facts) {
            Review::Verdict(v) => (!v.allowed()).then(|| v.message()),
            Review::NotReviewed(why) => Some(why),
        }
    };
    // An MCPServer of the same name would share every child's name.
    let taken = all.iter().any(|s| s.metadata.name.as_deref() == Some(name.as_str()));
    let blocker = match (&violation, taken, members.is_empty()) {
        (Some(v), _, _) => {
            Some(("PolicyViolation", format!("the current spec is not applied: {v}")))
        }
        (None, true, _) => Some((
            "NameTaken",
            format!(
                "an MCPServer called {name} exists in this namespace; their objects would share names: rename the virtual server"
            ),
        )),
        (None, false, true) => Some((
            "NoServers",
            "no MCPServer of this namespace is named in spec.servers or matches spec.selector"
                .to_string(),
        )),
        _ => None,
    };
    let servers_list: Vec<String> = {
        let mut m: Vec<String> = members
            .iter()
            .map(|s| {
                let n = s.metadata.name.clone().unwrap_or_default();
                format!("{n}={}", vs.spec.prefix_of(&n))
            })
            .collect();
        m.sort();
        m
    };
    conditions.push(match &blocker {
        Some((reason, message)) => {
            condition(&prev.conditions, "ServersResolved", "False", reason, message.clone(), g)
        }
        None => condition(
            &prev.conditions,
            "ServersResolved",
            "True",
            "Resolved",
            format!("{} server(s): {}", members.len(), servers_list.join(", ")),
            g,
        ),
    });

    let mut config_hash = prev.config_hash.clone();
    let mut render_error = None;
    if blocker.is_none() {
        if vs.spec.gateway.tls_secret_name.is_none() {
            ensure_tls_secret(ctx, vs.controller_owner_ref(&()), &ns, &name).await?;
        }
        match palisade_render::render_virtual(&vs, &members, &ctx.render) {
            Ok(rendered) => {
                apply_objects(ctx, &ns, &rendered).await?;
                let uid = vs.metadata.uid.clone().unwrap_or_default();
                prune_pdb(ctx, &rendered, &ns, &name, &uid).await?;
                config_hash = Some(rendered.config_hash);
            }
            Err(e) => render_error = Some(e.to_string()),
        }
    }

    let deployment = ctx.caches.deployments.get(&ObjectRef::new(&name).within(&ns));
    let (available, ready_pods) = deployment
        .as_ref()
        .and_then(|d| d.status.as_ref())
        .map(|s| (s.available_replicas.unwrap_or(0), s.ready_replicas.unwrap_or(0)))
        .unwrap_or((0, 0));
    let report = if ready_pods > 0 {
        Some(ctx.gateways.status(&ns, &format!("{VIRTUAL_SERVER_LABEL}={name}")).await)
    } else {
        None
    };
    conditions.push(names_resolved(&prev.conditions, report.as_ref(), g));
    conditions.push(match (&blocker, &render_error) {
        (Some((reason, message)), _) => condition(&prev.conditions, "Ready", "False", reason, message.clone(), g),
        (None, Some(e)) => condition(&prev.conditions, "Ready", "False", "RenderFailed", e.clone(), g),
        _ if vs.spec.replicas == 0 => condition(&prev.conditions, "Ready", "False", "ScaledToZero", "spec.replicas is 0".into(), g),
        _ if available >= vs.spec.replicas => condition(&prev.conditions, "Ready", "True", "Available", format!("{available}/{} replicas available", vs.spec.replicas), g),
        _ => condition(&prev.conditions, "Ready", "False", "Progressing", format!("{available}/{} replicas available (a gateway is ready once its handshake with every server succeeded)", vs.spec.replicas), g),
    });
    let status = MCPVirtualServerStatus {
        observed_generation: Some(g),
        conditions,
        servers: (!servers_list.is_empty()).then(|| servers_list.join(",")),
        endpoint: Some(palisade_render::endpoint(&name, &ns, &ctx.render.cluster_domain)),
        config_hash,
    };
    if status != prev {
        let api: Api<MCPVirtualServer> = Api::namespaced(ctx.client.clone(), &ns);
        let patch = json!({"status": serde_json::to_value(&status)?});
        api.patch_status(&name, &PatchParams::default(), &Patch::Merge(&patch)).await?;
        ctx.metrics.count_write("MCPVirtualServer/status", "patch");
    }
    let settled = status.conditions.iter().all(|c| c.status == "True");
    Ok(Action::requeue(if settled { RECHECK * 10 } else { RECHECK }))
}

pub fn error_policy(vs: Arc<MCPVirtualServer>, err: &Error, _: Arc<VirtualContext>) -> Action {
    warn!(object = %format!("{}/{}", vs.namespace().unwrap_or_default(), vs.name_any()), error = %err, "virtual server reconcile failed; retrying");
    Action::requeue(Duration::from_secs(5))
}

/// The virtual servers of the namespace of an MCPServer that changed.
pub fn of_namespace(
    store: &Store<MCPVirtualServer>,
    server: &Value,
) -> Vec<ObjectRef<MCPVirtualServer>> {
    let ns = server.pointer("/metadata/namespace").and_then(Value::as_str).unwrap_or_default();
    store
        .state()
        .iter()
        .filter(|v| v.namespace().as_deref() == Some(ns))
        .map(|v| ObjectRef::from_obj(v.as_ref()))
        .collect()
}
