//! The MCPServer reconciler, one linear pass: parse (an unreadable object is reported, never
//! fatal) -> converge (policy review, image digest, signature, supply chain, serving
//! certificate, children) -> record (status and events, written only when they change).
//! Everything it needs arrives in a [`Context`], so tests drive it with a mocked API server
//! and a fake [`Verifier`].

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use k8s_openapi::ByteString;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{
    ConfigMap, Namespace, ObjectReference, Secret, Service, ServiceAccount,
};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use kube::api::{Api, DeleteParams, DynamicObject, Patch, PatchParams};
use kube::runtime::controller::Action;
use kube::runtime::events::{Event, EventType, Recorder};
use kube::runtime::reflector::{ObjectRef, Store};
use kube::{Client, Resource, ResourceExt};
use palisade_admission::check::Object;
use palisade_admission::review::{self, Facts, Review};
use palisade_admission::rules::trust;
use palisade_core::image::ImageRef;
use palisade_crds::mcppolicy::Advisory;
use palisade_crds::mcpserver::{ImageStatus, MCPServerStatus, SbomStatus};
use palisade_crds::{MCPPolicy, MCPServer};
use palisade_render::{RenderOptions, names};
use serde_json::json;
use tracing::{debug, info, warn};

use crate::apply::{self, Applied, FIELD_MANAGER, Live};
use crate::gateways::Gateways;
use crate::metrics::{Metrics, ResultLabel};
use crate::registry::{ResolveError, Resolver, Verification, Verifier};
use crate::sbom;
use crate::status::{self, Blocker, Observed};
use palisade_https::ca::{self as certs, Authority};

/// Leaf certificates are issued for 90 days and renewed when fewer than 30 remain.
const CERT_LIFETIME: Duration = certs::days(90);
const CERT_RENEW_MARGIN: Duration = Duration::from_secs(30 * 24 * 3600);
/// Periodic re-check of a healthy server (drift between watch events, cert renewal).
const RESYNC: Duration = Duration::from_secs(600);
/// Re-check of a server blocked by its spec; watches on policies and the spec wake it earlier.
const BLOCKED_RECHECK: Duration = Duration::from_secs(600);
/// How often the gateways of a server with pinned tools are asked whether they withhold one
/// (the gateways enforce at once; this bounds how stale the `ToolsVerified` condition is).
const TOOLS_RECHECK: Duration = Duration::from_secs(60);

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("Kubernetes API: {0}")]
    Kube(#[from] kube::Error),
    #[error("registry: {0}")]
    Registry(String),
    #[error("certificates: {0}")]
    Certs(#[from] certs::CertError),
    #[error("{0}")]
    Ca(#[from] palisade_webhooks::ca_store::CaStoreError),
    #[error("serialization: {0}")]
    Json(#[from] serde_json::Error),
    #[error("object has no namespace")]
    NoNamespace,
}

impl Error {
    pub fn kind(&self) -> &'static str {
        match self {
            Error::Kube(_) => "kube",
            Error::Registry(_) => "registry",
            Error::Certs(_) | Error::Ca(_) => "certs",
            Error::Json(_) => "json",
            Error::NoNamespace => "metadata",
        }
    }
}

/// Watch caches of the owned kinds (only objects labelled managed-by=palisade): deciding that
/// a child is up to date costs no API request.
pub struct Caches {
    pub deployments: Store<Deployment>,
    pub services: Store<Service>,
    pub service_accounts: Store<ServiceAccount>,
    pub config_maps: Store<ConfigMap>,
    pub network_policies: Store<NetworkPolicy>,
    pub pdbs: Store<PodDisruptionBudget>,
}

fn cached<K>(store: &Store<K>, ns: &str, name: &str) -> Live
where
    K: kube::Resource<DynamicType = ()> + Clone + serde::Serialize + 'static,
{
    Live::Cached(
        store
            .get(&ObjectRef::new(name).within(ns))
            .and_then(|o| serde_json::to_value(o.as_ref()).ok()),
    )
}

impl Caches {
    fn live(&self, kind: &str, ns: &str, name: &str) -> Live {
        match kind {
            "Deployment" => cached(&self.deployments, ns, name),
            "Service" => cached(&self.services, ns, name),
            "ServiceAccount" => cached(&self.service_accounts, ns, name),
            "ConfigMap" => cached(&self.config_maps, ns, name),
            "NetworkPolicy" => cached(&self.network_policies, ns, name),
            "PodDisruptionBudget" => cached(&self.pdbs, ns, name),
            _ => Live::Fetch,
        }
    }
}

pub struct Context {
    pub caches: Caches,
    pub client: Client,
    pub render: RenderOptions,
    pub resolver: Resolver,
    pub verifier: Box<dyn Verifier>,
    /// The running gateways' admin `/status` (tool definitions, handshake summary).
    pub gateways: Box<dyn Gateways>,
    pub recorder: Recorder,
    pub metrics: Arc<Metrics>,
    pub ca: Authority,
    pub policies: Store<MCPPolicy>,
    pub namespaces: Store<Namespace>,
    pub retries: Mutex<HashMap<String, u32>>,
}

fn object_reference(obj: &DynamicObject) -> ObjectReference {
    ObjectReference {
        api_version: Some(palisade_crds::API_VERSION.to_string()),
        kind: Some("MCPServer".to_string()),
        name: obj.metadata.name.clone(),
        namespace: obj.metadata.namespace.clone(),
        uid: obj.metadata.uid.clone(),
        resource_version: obj.metadata.resource_version.clone(),
        ..ObjectReference::default()
    }
}

async fn event(ctx: &Context, obj: &DynamicObject, type_: EventType, reason: &str, note: String) {
    let ev = Event {
        type_,
        reason: reason.into(),
        note: Some(note),
        action: "Reconcile".into(),
        secondary: None,
    };
    if let Err(e) = ctx.recorder.publish(&ev, &object_reference(obj)).await {
        warn!(error = %e, "cannot publish event");
    }
}

fn servers_api(client: &Client, ns: &str) -> Api<MCPServer> {
    Api::namespaced(client.clone(), ns)
}

/// An RFC 7386 merge patch that turns `old` into `new`: a field that `new` no longer has is
/// set to null, since omitting it would leave the stored value in place.
fn merge_diff(old: &serde_json::Value, new: &serde_json::Value) -> serde_json::Value {
    match (old, new) {
        (serde_json::Value::Object(o), serde_json::Value::Object(n)) => {
            let mut patch = serde_json::Map::new();
            for (k, v) in n {
                match o.get(k) {
                    Some(was) if was == v => {}
                    Some(was) => {
                        patch.insert(k.clone(), merge_diff(was, v));
                    }
                    None => {
                        patch.insert(k.clone(), v.clone());
                    }
                }
            }
            for k in o.keys().filter(|k| !n.contains_key(*k)) {
                patch.insert(k.clone(), serde_json::Value::Null);
            }
            serde_json::Value::Object(patch)
        }
        _ => new.clone(),
    }
}

async fn patch_status(
    ctx: &Context,
    ns: &str,
    name: &str,
    prev: &MCPServerStatus,
    status: &MCPServerStatus,
) -> Result<(), Error> {
    let diff = merge_diff(&serde_json::to_value(prev)?, &serde_json::to_value(status)?);
    let patch = json!({ "status": diff });
    servers_api(&ctx.client, ns)
        .patch_status(name, &PatchParams::default(), &Patch::Merge(&patch))
        .await?;
    ctx.metrics.count_write("MCPServer/status", "patch");
    Ok(())
}

/// The digest the pods should run, or why there is none.
async fn pin_image(
    ctx: &Context,
    server: &MCPServer,
    image: &str,
) -> Result<Result<String, Blocker>, Error> {
    let parsed = match ImageRef::parse(image) {
        Ok(p) => p,
        Err(e) => return Ok(Err(Blocker::ImageResolution(format!("spec.image: {e}")))),
    };
    if let Some(d) = parsed.digest {
        return Ok(Ok(d));
    }
    // A tag is resolved once per spec change: reuse the digest recorded for this reference.
    if let Some(img) = server.status.as_ref().and_then(|s| s.image.as_ref())
        && img.reference == image
        && !img.digest.is_empty()
    {
        return Ok(Ok(img.digest.clone()));
    }
    match ctx.resolver.resolve(image).await {
        Ok(d) => Ok(Ok(d)),
        Err(ResolveError::Permanent(m)) => Ok(Err(Blocker::ImageResolution(m))),
        Err(ResolveError::Transient(m)) => Err(Error::Registry(m)),
    }
}

/// Makes sure the gateway's serving certificate exists, is signed by the current CA, covers
/// the Service names and is not about to expire.
pub(crate) async fn ensure_tls_secret(
    ctx: &Context,
    owner: Option<k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference>,
    ns: &str,
    name: &str,
) -> Result<(), Error> {
    let secret_name = names::tls_secret(name);
    let domain = &ctx.render.cluster_domain;
    let dns = vec![
        format!("{name}.{ns}.svc"),
        format!("{name}.{ns}.svc.{domain}"),
        format!("{name}.{ns}"),
        name.to_string(),
    ];
    let api: Api<Secret> = Api::namespaced(ctx.client.clone(), ns);
    if let Some(existing) = api.get_opt(&secret_name).await? {
        let data = existing.data.unwrap_or_default();
        let text = |k: &str| {
            data.get(k).map(|b| String::from_utf8_lossy(&b.0).into_owned()).unwrap_or_default()
        };
        if text("ca.crt") == ctx.ca.cert_pem
            && !certs::needs_rotation(&text("tls.crt"), &dns, CERT_RENEW_MARGIN)
        {
            return Ok(());
        }
    }
    let leaf = ctx.ca.issue_server(&dns, CERT_LIFETIME)?;
    let mut secret = Secret {
        type_: Some("kubernetes.io/tls".into()),
        data: Some(
            [
                ("tls.crt", leaf.cert_pem),
                ("tls.key", leaf.key_pem),
                ("ca.crt", ctx.ca.cert_pem.clone()),
            ]
            .into_iter()
            .map(|(k, v)| (k.to_string(), ByteString(v.into_bytes())))
            .collect(),
        ),
        ..Secret::default()
    };
    secret.metadata.name = Some(secret_name.clone());
    secret.metadata.namespace = Some(ns.to_string());
    secret.metadata.labels = Some(palisade_render::standard_labels(name));
    secret.metadata.owner_references = owner.map(|o| vec![o]);
    let mut value = serde_json::to_value(&secret)?;
    value["apiVersion"] = json!("v1");
    value["kind"] = json!("Secret");
    api.patch(&secret_name, &PatchParams::apply(FIELD_MANAGER).force(), &Patch::Apply(&value))
        .await?;
    ctx.metrics.count_write("Secret", "apply");
    info!(secret = %secret_name, "issued gateway serving certificate");
    Ok(())
}

/// Deletes an optional child (PDB, FQDN policy) that the spec no longer asks for.
async fn prune<K>(
    ctx: &Context,
    api: Api<K>,
    name: &str,
    owner_uid: &str,
    kind: &str,
) -> Result<(), Error>
where
    K: Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    if let Some(obj) = api.get_opt(name).await? {
        let owned = obj.owner_references().iter().any(|o| o.uid == owner_uid);
        if owned {
            api.delete(name, &DeleteParams::background()).await?;
            ctx.metrics.count_write(kind, "delete");
        }
    }
    Ok(())
}

/// The SBOM and advisory checks of the selecting policies: the status to record and, when the
/// server must not run as specified, why.
async fn supply_chain(
    ctx: &Context,
    server: &MCPServer,
    pinned: &str,
    policies: &[&MCPPolicy],
) -> (Option<SbomStatus>, Option<Blocker>) {
    let required = policies.iter().any(|p| p.spec.supply_chain.require_sbom);
    let advisories: Vec<&Advisory> =
        policies.iter().flat_map(|p| &p.spec.supply_chain.advisories).collect();
    let keyed = server.spec.signature.as_ref().is_some_and(|s| !s.keys.is_empty());
    if !required && (advisories.is_empty() || !keyed) {
        return (None, None);
    }
    match ctx.verifier.sbom(server, pinned).await {
        Ok(sbom) => {
            let vulnerabilities = sbom::findings(advisories, &sbom.components);
            let blocker = (!vulnerabilities.is_empty()).then(|| {
                Blocker::Vulnerable(format!(
                    "the image's SBOM lists components with advisories; the server is stopped until the image or the advisory changes: {}",
                    vulnerabilities.join(", ")
                ))
            });
            let status = SbomStatus {
                format: sbom.format.clone(),
                signed_by: sbom.signed_by.clone(),
                components: u32::try_from(sbom.components.len()).unwrap_or(u32::MAX),
                vulnerabilities,
            };
            (Some(status), blocker)
        }
        // Optional SBOMs that are missing or unreadable leave the server as signed.
        Err(e) if !required => {
            debug!(error = %e, "no SBOM to check advisories against");
            (None, None)
        }
        Err(e) => (None, Some(Blocker::SbomNotVerified(e.to_string()))),
    }
}

async fn apply_children(
    ctx: &Context,
    server: &MCPServer,
    ns: &str,
    name: &str,
    digest: Option<&str>,
) -> Result<Result<String, Blocker>, Error> {
    let opts = RenderOptions { resolved_digest: digest.map(str::to_string), ..ctx.render.clone() };
    let rendered = match palisade_render::render(server, &opts) {
        Ok(r) => r,
        Err(e) => return Ok(Err(Blocker::Render(e.to_string()))),
    };
    apply_objects(ctx, ns, &rendered).await?;
    let uid = server.metadata.uid.clone().unwrap_or_default();
    prune_pdb(ctx, &rendered, ns, name, &uid).await?;
    Ok(Ok(rendered.config_hash))
}

/// Applies every rendered object that differs from the cached one.
pub(crate) async fn apply_objects(
    ctx: &Context,
    ns: &str,
    rendered: &palisade_render::Rendered,
) -> Result<(), Error> {
    for obj in rendered.objects()? {
        let kind = obj.get("kind").and_then(|k| k.as_str()).unwrap_or("?").to_string();
        let child =
            obj.pointer("/metadata/name").and_then(|n| n.as_str()).unwrap_or_default().to_string();
        let live = ctx.caches.live(&kind, ns, &child);
        match apply::ensure(&ctx.client, ns, obj, live).await {
            Ok(Applied::Unchanged) => {}
            Ok(Applied::Created) => ctx.metrics.count_write(&kind, "create"),
            Ok(Applied::Updated) => ctx.metrics.count_write(&kind, "apply"),
            // CiliumNetworkPolicy is optional: a cluster without Cilium does not serve it.
            Err(kube::Error::Api(e)) if e.code == 404 && kind == "CiliumNetworkPolicy" => {
                warn!(
                    "CiliumNetworkPolicy is not served by this cluster; DNS-name egress is recorded only"
                );
            }
            Err(e) => return Err(e.into()),
        }
    }
    Ok(())
}

/// Deletes the PodDisruptionBudget the rendering no longer has.
pub(crate) async fn prune_pdb(
    ctx: &Context,
    rendered: &palisade_render::Rendered,
    ns: &str,
    name: &str,
    uid: &str,
) -> Result<(), Error> {
    let pdb_cached = ctx.caches.pdbs.get(&ObjectRef::new(name).within(ns)).is_some();
    if rendered.pod_disruption_budget.is_none() && pdb_cached {
        prune(
            ctx,
            Api::<PodDisruptionBudget>::namespaced(ctx.client.clone(), ns),
            name,
            uid,
            "PodDisruptionBudget",
        )
        .await?;
    }
    Ok(())
}

/// A stored object that the types cannot read (e.g. written under another CRD version): report
/// it on the object and wait for it to change; never crash, never hot-loop.
async fn report_invalid(
    ctx: &Context,
    obj: &DynamicObject,
    ns: &str,
    name: &str,
    err: &serde_json::Error,
) -> Result<Action, Error> {
    let message = format!("the stored object cannot be read: {err}");
    let cond = json!([{
        "type": "Ready", "status": "False", "reason": "InvalidSpec", "message": message,
        "observedGeneration": obj.metadata.generation, "lastTransitionTime": k8s_openapi::jiff::Timestamp::now().to_string(),
    }]);
    let current = obj.data.pointer("/status/conditions/0/message").and_then(|m| m.as_str());
    if current != Some(message.as_str()) {
        let patch = json!({ "status": { "conditions": cond, "observedGeneration": obj.metadata.generation } });
        servers_api(&ctx.client, ns)
            .patch_status(name, &PatchParams::default(), &Patch::Merge(&patch))
            .await?;
        ctx.metrics.count_write("MCPServer/status", "patch");
        event(ctx, obj, EventType::Warning, "InvalidSpec", message).await;
    }
    Ok(Action::await_change())
}

pub async fn reconcile(obj: Arc<DynamicObject>, ctx: Arc<Context>) -> Result<Action, Error> {
    let started = Instant::now();
    let ns = obj.namespace().ok_or(Error::NoNamespace)?;
    let name = obj.name_any();
    let span = tracing::info_span!("reconcile", object = %format!("{ns}/{name}"));
    let _guard = span.enter();
    let result = reconcile_inner(&obj, &ctx, &ns, &name).await;
    ctx.metrics.duration.observe(started.elapsed().as_secs_f64());
    let label = if result.is_ok() { "ok" } else { "error" };
    ctx.metrics.reconciles.get_or_create(&ResultLabel { result: label.into() }).inc();
    if result.is_ok()
        && let Ok(mut r) = ctx.retries.lock()
    {
        r.remove(&format!("{ns}/{name}"));
    }
    result
}

async fn reconcile_inner(
    obj: &DynamicObject,
    ctx: &Context,
    ns: &str,
    name: &str,
) -> Result<Action, Error> {
    let server: MCPServer = match serde_json::from_value(serde_json::to_value(obj)?) {
        Ok(s) => s,
        Err(e) => return report_invalid(ctx, obj, ns, name, &e).await,
    };
    if server.metadata.deletion_timestamp.is_some() {
        // Children carry owner references; the garbage collector removes them.
        return Ok(Action::await_change());
    }
    let prev = server.status.clone().unwrap_or_default();
    let mut progress = Progress {
        policy_violation: None,
        blocker: None,
        image: prev.image.clone(),
        verification: None,
        config_hash: prev.config_hash.clone(),
    };
    converge(ctx, &server, ns, name, &mut progress).await?;
    let blocked = progress.blocker.is_some();
    record(ctx, obj, &server, ns, name, &prev, progress).await?;
    // Deployment status changes and policy changes arrive through watches; these requeues
    // only bound how long drift outside watched fields (and certificate expiry) can last. A
    // server with pinned tools is asked about its definitions more often.
    let pinned = server.spec.tools.iter().any(|t| t.pin.is_some());
    Ok(Action::requeue(match (blocked, pinned) {
        (true, _) => BLOCKED_RECHECK,
        (false, true) => TOOLS_RECHECK,
        (false, false) => RESYNC,
    }))
}

/// What one reconcile found and did, for the status.
struct Progress {
    /// `None` when the spec complies with the baseline and every selecting policy.
    policy_violation: Option<String>,
    /// Why the spec does not run as written.
    blocker: Option<Blocker>,
    image: Option<ImageStatus>,
    verification: Option<Verification>,
    config_hash: Option<String>,
}

/// The server as specified, but stopped.
fn scaled_to_zero(server: &MCPServer) -> MCPServer {
    let mut stopped = server.clone();
    stopped.spec.replicas = 0;
    stopped
}

/// The steps, in order; each either lets the next run or records why the spec does not run
/// (and stops a server that must not go on running): policy review -> image digest ->
/// signature -> supply chain -> serving certificate -> children.
async fn converge(
    ctx: &Context,
    server: &MCPServer,
    ns: &str,
    name: &str,
    p: &mut Progress,
) -> Result<(), Error> {
    // Policy: the baseline plus every MCPPolicy selecting the namespace, from the caches, with
    // the same review as admission's.
    let ns_labels = ctx
        .namespaces
        .get(&ObjectRef::new(ns))
        .and_then(|n| n.metadata.labels.clone())
        .unwrap_or_default();
    let policies: Vec<Arc<MCPPolicy>> = ctx.policies.state();
    let all: Vec<&MCPPolicy> = policies.iter().map(|p| p.as_ref()).collect();
    let selecting = review::selecting(&all, Some(&ns_labels));
    p.policy_violation = {
        let facts =
            Facts { namespace_labels: Some(&ns_labels), policies: &all, ..Facts::default() };
        match review::review(&Object::Server(Box::new(server.clone())), &facts) {
            Review::Verdict(v) => (!v.allowed()).then(|| v.message()),
            Review::NotReviewed(why) => Some(why),
        }
    };
    if let Some(v) = &p.policy_violation {
        p.blocker = Some(Blocker::PolicyViolation(v.clone()));
        return Ok(());
    }

    let Some(image) = server.spec.image.as_deref() else {
        // A remote server: no image to pin or verify, only its gateway to run.
        p.verification = Some(Verification::NotChecked {
            reason: "RemoteServer".into(),
            message: "a remote server runs no image here: the gateway proxies to spec.remote.url over TLS".into(),
        });
        p.image = None;
        return apply_gateway(ctx, server, ns, name, None, false, p).await;
    };
    let digest = match pin_image(ctx, server, image).await? {
        Ok(d) => d,
        Err(b) => {
            p.blocker = Some(b);
            return Ok(());
        }
    };
    let pinned =
        ImageRef::parse(image).map(|r| r.with_digest(&digest).to_string()).unwrap_or_default();

    let verification =
        ctx.verifier.verify(server, &pinned, &trust::requirements(server, &selecting)).await;
    let (verified_by, failed) = match &verification {
        Verification::Verified { by } => (Some(by.clone()), None),
        Verification::Failed { message, .. } => (None, Some(message.clone())),
        Verification::NotChecked { .. } => (None, None),
    };
    p.verification = Some(verification);
    p.image = Some(ImageStatus {
        reference: image.to_string(),
        digest: digest.clone(),
        verified_by,
        sbom: None,
    });
    if let Some(message) = failed {
        p.blocker = Some(Blocker::ImageNotVerified(format!(
            "the image signature did not verify: {message}"
        )));
        // An image that no longer verifies (a policy changed, a key was withdrawn) stops: a
        // running Deployment is scaled to zero; nothing new is created.
        if ctx.caches.deployments.get(&ObjectRef::new(name).within(ns)).is_some()
            && let Ok(hash) =
                apply_children(ctx, &scaled_to_zero(server), ns, name, Some(&digest)).await?
        {
            p.config_hash = Some(hash);
        }
        return Ok(());
    }

    let (sbom, supply_blocker) = supply_chain(ctx, server, &pinned, &selecting).await;
    if let Some(image) = p.image.as_mut() {
        image.sbom = sbom;
    }
    // A vulnerable server is stopped, not just left as it was: its children are applied with
    // zero replicas until the image or the advisory changes.
    let stop = matches!(supply_blocker, Some(Blocker::Vulnerable(_)));
    p.blocker = supply_blocker;
    if p.blocker.is_some() && !stop {
        return Ok(());
    }

    apply_gateway(ctx, server, ns, name, Some(&digest), stop, p).await
}

/// The last step: the gateway's serving certificate, then the children (stopped when `stop`).
async fn apply_gateway(
    ctx: &Context,
    server: &MCPServer,
    ns: &str,
    name: &str,
    digest: Option<&str>,
    stop: bool,
    p: &mut Progress,
) -> Result<(), Error> {
    if server.spec.gateway.tls_secret_name.is_none() {
        ensure_tls_secret(ctx, server.controller_owner_ref(&()), ns, name).await?;
    }
    let desired = if stop { scaled_to_zero(server) } else { server.clone() };
    match apply_children(ctx, &desired, ns, name, digest).await? {
        Ok(hash) => p.config_hash = Some(hash),
        Err(b) => p.blocker = Some(b),
    }
    Ok(())
}

/// The status that says what the reconcile found, written only when it changed, with events
/// for the transitions a person wants to know about.
async fn record(
    ctx: &Context,
    obj: &DynamicObject,
    server: &MCPServer,
    ns: &str,
    name: &str,
    prev: &MCPServerStatus,
    p: Progress,
) -> Result<(), Error> {
    let generation = server.metadata.generation.unwrap_or(0);
    let deployment =
        ctx.caches.deployments.get(&ObjectRef::new(name).within(ns)).map(|d| d.as_ref().clone());
    let ready = deployment
        .as_ref()
        .and_then(|d| d.status.as_ref())
        .and_then(|s| s.ready_replicas)
        .unwrap_or(0);
    let gateways = if ready > 0 && p.blocker.is_none() {
        Some(ctx.gateways.status(ns, &format!("{}={name}", palisade_crds::MCP_SERVER_LABEL)).await)
    } else {
        None
    };
    let observed = Observed {
        generation,
        desired_replicas: server.spec.replicas,
        policy_violation: p.policy_violation,
        blocker: p.blocker,
        verification: p.verification.as_ref(),
        deployment: deployment.as_ref(),
        gateways: gateways.as_ref(),
    };
    let new_status = MCPServerStatus {
        observed_generation: Some(generation),
        conditions: status::conditions(&prev.conditions, &observed),
        image: p.image,
        endpoint: Some(palisade_render::endpoint(name, ns, &ctx.render.cluster_domain)),
        server: status::server_info(gateways.as_ref()).or_else(|| prev.server.clone()),
        config_hash: p.config_hash,
    };
    if new_status != *prev {
        patch_status(ctx, ns, name, prev, &new_status).await?;
        announce_transitions(ctx, obj, prev, &new_status).await;
    }
    Ok(())
}

fn condition<'a>(
    s: &'a MCPServerStatus,
    t: &str,
) -> Option<&'a k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition> {
    s.conditions.iter().find(|c| c.type_ == t)
}

/// Events for the transitions a person wants to know about.
async fn announce_transitions(
    ctx: &Context,
    obj: &DynamicObject,
    prev: &MCPServerStatus,
    new: &MCPServerStatus,
) {
    for t in ["Ready", "PolicyCompliant", "ImageVerified", "ToolsVerified"] {
        let (old, cur) = (condition(prev, t), condition(new, t));
        let Some(cur) = cur else { continue };
        // Not knowing the tools' state (no gateway ready yet) is not news.
        if t == "ToolsVerified" && cur.status == "Unknown" {
            continue;
        }
        if old.map(|o| (&o.status, &o.reason)) == Some((&cur.status, &cur.reason)) {
            continue;
        }
        let problem = cur.status == "False"
            && !matches!(cur.reason.as_str(), "Progressing" | "WaitingForGateway" | "ScaledToZero");
        let type_ = if problem { EventType::Warning } else { EventType::Normal };
        event(ctx, obj, type_, &cur.reason, format!("{t}={}: {}", cur.status, cur.message)).await;
    }
    let (old_digest, new_digest) =
        (prev.image.as_ref().map(|i| &i.digest), new.image.as_ref().map(|i| &i.digest));
    if new_digest.is_some()
        && old_digest != new_digest
        && let Some(img) = &new.image
    {
        event(
            ctx,
            obj,
            EventType::Normal,
            "ImagePinned",
            format!("{} pinned to {}", img.reference, img.digest),
        )
        .await;
    }
}

/// Exponential backoff with jitter for transient errors, per object.
pub fn error_policy(obj: Arc<DynamicObject>, err: &Error, ctx: Arc<Context>) -> Action {
    let key = format!("{}/{}", obj.namespace().unwrap_or_default(), obj.name_any());
    ctx.metrics.errors.get_or_create(&ResultLabel { result: err.kind().into() }).inc();
    let attempt = match ctx.retries.lock() {
        Ok(mut r) => {
            let n = r.entry(key.clone()).or_insert(0);
            *n = n.saturating_add(1);
            *n
        }
        Err(_) => 1,
    };
    let delay = backoff(attempt, rand::random::<f64>());
    warn!(object = %key, attempt, delay_ms = delay.as_millis() as u64, error = %err, "reconcile failed; retrying");
    Action::requeue(delay)
}

/// 500 ms doubling per attempt up to 5 minutes, with ±20% jitter so that retries of many
/// objects do not synchronise.
pub fn backoff(attempt: u32, jitter: f64) -> Duration {
    let base = 0.5 * 2f64.powi(attempt.saturating_sub(1).min(20) as i32);
    let capped = base.min(300.0);
    Duration::from_secs_f64(capped * (0.8 + 0.4 * jitter.clamp(0.0, 1.0)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_exponentially_with_bounded_jitter() {
        let d: Vec<f64> = (1..=12).map(|n| backoff(n, 0.5).as_secs_f64()).collect();
        assert!((d[0] - 0.5).abs() < 1e-9);
        assert!((d[1] - 1.0).abs() < 1e-9);
        assert!((d[4] - 8.0).abs() < 1e-9);
        assert!((d[11] - 300.0).abs() < 1e-9, "capped at 5 minutes");
        assert!(backoff(3, 0.0) < backoff(3, 1.0));
        assert!(backoff(3, 0.0).as_secs_f64() >= 0.8 * 2.0 - 1e-9);
        assert!(backoff(3, 1.0).as_secs_f64() <= 1.2 * 2.0 + 1e-9);
        assert_eq!(backoff(u32::MAX, 0.5), Duration::from_secs(300));
    }

    /// RFC 7386 as the API server applies it.
    fn apply_merge(target: &mut serde_json::Value, patch: &serde_json::Value) {
        let (Some(t), Some(p)) = (target.as_object_mut(), patch.as_object()) else {
            *target = patch.clone();
            return;
        };
        for (k, v) in p {
            if v.is_null() {
                t.remove(k);
            } else if v.is_object() && t.get(k).is_some_and(|x| x.is_object()) {
                apply_merge(t.get_mut(k).unwrap(), v);
            } else {
                t.insert(k.clone(), v.clone());
            }
        }
    }

    #[test]
    fn status_patches_remove_what_the_new_status_no_longer_has() {
        let old = serde_json::json!({
            "image": {"digest": "sha256:a", "verifiedBy": "key", "sbom": {
                "format": "f", "components": 3, "vulnerabilities": ["CVE-1: pkg:npm/x@1"]}},
            "conditions": [{"type": "Ready", "status": "False"}],
            "configHash": "h",
        });
        let new = serde_json::json!({
            "image": {"digest": "sha256:a", "sbom": {"format": "f", "components": 3}},
            "conditions": [{"type": "Ready", "status": "True"}],
            "endpoint": "https://x",
        });
        let patch = merge_diff(&old, &new);
        let mut applied = old.clone();
        apply_merge(&mut applied, &patch);
        assert_eq!(applied, new, "patch: {patch}");
        assert_eq!(patch["image"]["sbom"]["vulnerabilities"], serde_json::Value::Null);
        assert!(patch["image"].get("digest").is_none(), "unchanged fields are not sent");
        assert_eq!(merge_diff(&new, &new), serde_json::json!({}));
    }
}
