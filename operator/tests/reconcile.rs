//! The reconciler without a cluster: a mocked API server (an in-memory object store behind
//! the client's HTTP service) records every request, and a fake signature verifier answers as
//! each case needs. Each case checks the exact requests the reconcile made.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::path::Path;
use std::sync::{Arc, Mutex};

use futures::future::BoxFuture;
use http::{Method, Request, Response, StatusCode};
use http_body_util::BodyExt;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{ConfigMap, Namespace, Service, ServiceAccount};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use kube::Client;
use kube::api::DynamicObject;
use kube::runtime::events::{Recorder, Reporter};
use kube::runtime::reflector::{self, store::Writer};
use kube::runtime::watcher;
use palisade_admission::rules::trust::TrustSet;
use palisade_crds::{MCPPolicy, MCPServer};
use palisade_https::ca::Authority;
use palisade_operator::gateways::{Gateways, Report};
use palisade_operator::metrics::Metrics;
use palisade_operator::reconcile::{Caches, Context, reconcile};
use palisade_operator::registry::{Resolver, Verification, Verifier};
use palisade_operator::sbom::{Sbom, SbomError};
use palisade_render::RenderOptions;
use serde_json::{Value, json};

const NS: &str = "mcp-demo";
const GATEWAY_IMAGE: &str = "registry.test/palisade-gateway@sha256:1111111111111111111111111111111111111111111111111111111111111111";

fn example(file: &str) -> Value {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples").join(file);
    serde_saphyr::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

/// One request the API server received.
#[derive(Debug, Clone)]
struct Seen {
    method: Method,
    path: String,
    body: Value,
}

impl Seen {
    fn is_write(&self) -> bool {
        self.method != Method::GET
    }
    /// The method and path; an event's generated name reads `*`.
    fn line(&self) -> String {
        let path = match self.path.split_once("/events/") {
            Some((events, _)) => format!("{events}/events/*"),
            None => self.path.clone(),
        };
        format!("{} {path}", self.method)
    }
}

/// An API server that keeps what is applied, merges status patches into the stored server,
/// accepts events, and answers 404 for anything it does not have.
#[derive(Default)]
struct ApiServer {
    objects: BTreeMap<String, Value>,
    seen: Vec<Seen>,
}

fn status_404() -> Value {
    json!({"kind": "Status", "apiVersion": "v1", "status": "Failure", "reason": "NotFound",
           "code": 404, "message": "not found"})
}

fn merge(target: &mut Value, patch: &Value) {
    match (target.as_object_mut(), patch.as_object()) {
        (Some(t), Some(p)) => {
            for (k, v) in p {
                if v.is_null() {
                    t.remove(k);
                } else {
                    merge(t.entry(k.clone()).or_insert(Value::Null), v);
                }
            }
        }
        _ => *target = patch.clone(),
    }
}

impl ApiServer {
    fn answer(&mut self, method: &Method, path: &str, body: &Value) -> (StatusCode, Value) {
        if let Some(server_path) = path.strip_suffix("/status") {
            let Some(stored) = self.objects.get_mut(server_path) else {
                return (StatusCode::NOT_FOUND, status_404());
            };
            merge(stored, body);
            return (StatusCode::OK, stored.clone());
        }
        match *method {
            Method::GET => match self.objects.get(path) {
                Some(v) => (StatusCode::OK, v.clone()),
                None => (StatusCode::NOT_FOUND, status_404()),
            },
            Method::PATCH => {
                self.objects.insert(path.to_string(), body.clone());
                (StatusCode::OK, body.clone())
            }
            Method::POST => (StatusCode::CREATED, body.clone()),
            Method::DELETE => {
                self.objects.remove(path);
                (StatusCode::OK, json!({"kind": "Status", "apiVersion": "v1", "status": "Success"}))
            }
            _ => (StatusCode::METHOD_NOT_ALLOWED, status_404()),
        }
    }
}

type Shared = Arc<Mutex<ApiServer>>;

fn client(api: &Shared) -> Client {
    let api = api.clone();
    let service = tower::service_fn(move |req: Request<kube::client::Body>| {
        let api = api.clone();
        async move {
            let (parts, body) = req.into_parts();
            let bytes = body.collect().await.map(|b| b.to_bytes()).unwrap_or_default();
            let body: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
            let path = parts.uri.path().to_string();
            let (status, answer) = {
                let mut a = api.lock().unwrap();
                a.seen.push(Seen {
                    method: parts.method.clone(),
                    path: path.clone(),
                    body: body.clone(),
                });
                a.answer(&parts.method, &path, &body)
            };
            let response = Response::builder()
                .status(status)
                .header("content-type", "application/json")
                .body(kube::client::Body::from(answer.to_string().into_bytes()))
                .unwrap();
            Ok::<_, Infallible>(response)
        }
    });
    Client::new(service, "default")
}

/// A verifier that answers the same for every image, and has no SBOMs.
struct FakeVerifier(Verification);

impl Verifier for FakeVerifier {
    fn verify<'a>(
        &'a self,
        _: &'a MCPServer,
        _: &'a str,
        _: &'a [TrustSet],
    ) -> BoxFuture<'a, Verification> {
        Box::pin(async move { self.0.clone() })
    }

    fn sbom<'a>(
        &'a self,
        _: &'a MCPServer,
        _: &'a str,
    ) -> BoxFuture<'a, Result<Arc<Sbom>, SbomError>> {
        Box::pin(async { Err(SbomError::Missing("the image".into())) })
    }
}

/// Gateways that always say the same.
struct FakeGateways(Report);

impl Gateways for FakeGateways {
    fn status<'a>(&'a self, _: &'a str, _: &'a str) -> BoxFuture<'a, Report> {
        Box::pin(async move { self.0.clone() })
    }
}

fn verified() -> Verification {
    Verification::Verified { by: "cosign key cosign-public-key/cosign.pub".into() }
}

/// The writers behind the context's caches, to show the reconciler what exists.
struct Writers {
    deployments: Writer<Deployment>,
    services: Writer<Service>,
    service_accounts: Writer<ServiceAccount>,
    config_maps: Writer<ConfigMap>,
    network_policies: Writer<NetworkPolicy>,
    pdbs: Writer<PodDisruptionBudget>,
}

fn put<K>(w: &mut Writer<K>, v: &Value)
where
    K: kube::Resource<DynamicType = ()> + Clone + serde::de::DeserializeOwned,
{
    let obj: K = serde_json::from_value(v.clone()).unwrap();
    w.apply_watcher_event(&watcher::Event::Apply(obj));
}

impl Writers {
    /// Puts every object the API server holds into the caches of its kind.
    fn show(&mut self, api: &Shared) {
        let objects = api.lock().unwrap().objects.clone();
        for v in objects.values() {
            match v["kind"].as_str().unwrap_or_default() {
                "Deployment" => put(&mut self.deployments, v),
                "Service" => put(&mut self.services, v),
                "ServiceAccount" => put(&mut self.service_accounts, v),
                "ConfigMap" => put(&mut self.config_maps, v),
                "NetworkPolicy" => put(&mut self.network_policies, v),
                "PodDisruptionBudget" => put(&mut self.pdbs, v),
                _ => {}
            }
        }
    }
}

struct Harness {
    api: Shared,
    ctx: Arc<Context>,
    writers: Writers,
}

fn harness(verification: Verification, policies: &[Value], namespace_labels: Value) -> Harness {
    let api: Shared = Arc::default();
    let client = client(&api);
    let (deployments, dw) = reflector::store::<Deployment>();
    let (services, sw) = reflector::store::<Service>();
    let (service_accounts, aw) = reflector::store::<ServiceAccount>();
    let (config_maps, cw) = reflector::store::<ConfigMap>();
    let (network_policies, nw) = reflector::store::<NetworkPolicy>();
    let (pdbs, pw) = reflector::store::<PodDisruptionBudget>();
    let (policy_store, mut policy_writer) = reflector::store::<MCPPolicy>();
    for p in policies {
        put(&mut policy_writer, p);
    }
    let (namespaces, mut ns_writer) = reflector::store::<Namespace>();
    put(
        &mut ns_writer,
        &json!({"apiVersion": "v1", "kind": "Namespace",
                "metadata": {"name": NS, "labels": namespace_labels}}),
    );
    let ctx = Context {
        caches: Caches {
            deployments,
            services,
            service_accounts,
            config_maps,
            network_policies,
            pdbs,
        },
        client: client.clone(),
        render: RenderOptions { gateway_image: GATEWAY_IMAGE.into(), ..RenderOptions::default() },
        resolver: Resolver::new(vec![]),
        verifier: Box::new(FakeVerifier(verification)),
        gateways: Box::new(FakeGateways(Report::NoneReady)),
        recorder: Recorder::new(
            client,
            Reporter { controller: "palisade-operator".into(), instance: Some("test".into()) },
        ),
        metrics: Arc::new(Metrics::new()),
        ca: Authority::generate("palisade-test-ca", std::time::Duration::from_secs(86400)).unwrap(),
        policies: policy_store,
        namespaces,
        retries: Default::default(),
    };
    let writers = Writers {
        deployments: dw,
        services: sw,
        service_accounts: aw,
        config_maps: cw,
        network_policies: nw,
        pdbs: pw,
    };
    Harness { api, ctx: Arc::new(ctx), writers }
}

const SERVER_PATH: &str = "/apis/palisade.dev/v1alpha1/namespaces/mcp-demo/mcpservers";

impl Harness {
    /// Stores `server` (as the API server would hold it) and returns its path.
    fn create(&self, mut server: Value) -> String {
        let name = server["metadata"]["name"].as_str().unwrap().to_string();
        server["metadata"]["uid"] = json!(format!("uid-{name}"));
        server["metadata"]["generation"] = json!(1);
        server["metadata"]["resourceVersion"] = json!("1");
        let path = format!("{SERVER_PATH}/{name}");
        self.api.lock().unwrap().objects.insert(path.clone(), server);
        path
    }

    /// One reconcile of the stored server at `path`; the requests it made.
    async fn reconcile(&self, path: &str) -> Vec<Seen> {
        let stored = self.api.lock().unwrap().objects[path].clone();
        let obj: DynamicObject = serde_json::from_value(stored).unwrap();
        let before = self.api.lock().unwrap().seen.len();
        reconcile(Arc::new(obj), self.ctx.clone()).await.expect("the reconcile succeeds");
        self.api.lock().unwrap().seen[before..].to_vec()
    }

    fn stored(&self, path: &str) -> Value {
        self.api.lock().unwrap().objects.get(path).cloned().unwrap_or(Value::Null)
    }
}

fn lines(seen: &[Seen]) -> Vec<String> {
    seen.iter().map(Seen::line).collect()
}

fn condition<'a>(server: &'a Value, t: &str) -> &'a Value {
    server["status"]["conditions"]
        .as_array()
        .and_then(|c| c.iter().find(|c| c["type"] == t))
        .unwrap_or(&Value::Null)
}

const DEPLOYMENT: &str = "/apis/apps/v1/namespaces/mcp-demo/deployments/everything";

#[tokio::test]
async fn a_compliant_verified_server_is_applied_then_left_alone() {
    let mut h = harness(verified(), &[], json!({}));
    let path = h.create(example("everything-http.yaml"));
    let first = h.reconcile(&path).await;
    assert_eq!(
        lines(&first),
        [
            "GET /api/v1/namespaces/mcp-demo/secrets/everything-gateway-tls",
            "PATCH /api/v1/namespaces/mcp-demo/secrets/everything-gateway-tls",
            "PATCH /api/v1/namespaces/mcp-demo/serviceaccounts/everything",
            "PATCH /api/v1/namespaces/mcp-demo/configmaps/everything-gateway",
            "PATCH /apis/networking.k8s.io/v1/namespaces/mcp-demo/networkpolicies/everything-default-deny",
            "PATCH /apis/networking.k8s.io/v1/namespaces/mcp-demo/networkpolicies/everything-ingress",
            "PATCH /apis/networking.k8s.io/v1/namespaces/mcp-demo/networkpolicies/everything-egress",
            "PATCH /api/v1/namespaces/mcp-demo/services/everything",
            "PATCH /apis/apps/v1/namespaces/mcp-demo/deployments/everything",
            "PATCH /apis/policy/v1/namespaces/mcp-demo/poddisruptionbudgets/everything",
            "PATCH /apis/palisade.dev/v1alpha1/namespaces/mcp-demo/mcpservers/everything/status",
            // Ready, PolicyCompliant, ImageVerified, ImagePinned.
            "POST /apis/events.k8s.io/v1/namespaces/mcp-demo/events",
            "POST /apis/events.k8s.io/v1/namespaces/mcp-demo/events",
            "POST /apis/events.k8s.io/v1/namespaces/mcp-demo/events",
            "POST /apis/events.k8s.io/v1/namespaces/mcp-demo/events",
        ],
    );
    // What was applied: the pinned image, the replicas asked for, a serving certificate.
    let deployment = h.stored(DEPLOYMENT);
    assert_eq!(deployment["spec"]["replicas"], 2);
    let images: Vec<&str> = deployment["spec"]["template"]["spec"]["containers"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|c| c["image"].as_str())
        .collect();
    assert!(
        images.iter().any(|i| i
            .ends_with("@sha256:472e3c603a08e1dbc0adc02bc235ada8fcc09effaf1d61d1d2380b6978ac3f08")),
        "{images:?}"
    );
    assert!(images.contains(&GATEWAY_IMAGE), "{images:?}");
    let tls = h.stored("/api/v1/namespaces/mcp-demo/secrets/everything-gateway-tls");
    assert_eq!(tls["type"], "kubernetes.io/tls");
    let server = h.stored(&path);
    assert_eq!(condition(&server, "PolicyCompliant")["status"], "True");
    assert_eq!(condition(&server, "ImageVerified")["status"], "True");
    assert_eq!(server["status"]["image"]["verifiedBy"], "cosign key cosign-public-key/cosign.pub");

    // The caches now hold the children; the Deployment's appearance is recorded once ...
    h.writers.show(&h.api);
    let second = h.reconcile(&path).await;
    assert!(
        second
            .iter()
            .filter(|s| s.is_write())
            .all(|s| s.path.ends_with("/status") || s.path.contains("/events")),
        "only the status may change once the children exist: {:?}",
        lines(&second)
    );
    // ... and then nothing changes: no write at all, only the certificate's freshness is read.
    let third = h.reconcile(&path).await;
    assert_eq!(
        lines(&third),
        ["GET /api/v1/namespaces/mcp-demo/secrets/everything-gateway-tls"],
        "an idle reconcile writes nothing"
    );
}

#[tokio::test]
async fn a_server_a_policy_refuses_is_never_applied() {
    let policy = example("policy.yaml");
    let h = harness(verified(), &[policy], json!({"team": "platform"}));
    let path = h.create(example("rejected/egress-denied-by-policy.yaml"));
    let seen = h.reconcile(&path).await;
    assert_eq!(
        lines(&seen),
        [
            "PATCH /apis/palisade.dev/v1alpha1/namespaces/mcp-demo/mcpservers/egress-denied-by-policy/status",
            // Ready and PolicyCompliant share a reason (one event series); the image was
            // never resolved.
            "POST /apis/events.k8s.io/v1/namespaces/mcp-demo/events",
            "PATCH /apis/events.k8s.io/v1/namespaces/mcp-demo/events/*",
            "POST /apis/events.k8s.io/v1/namespaces/mcp-demo/events",
        ],
    );
    let reasons: Vec<&str> = seen[1..].iter().filter_map(|s| s.body["reason"].as_str()).collect();
    assert_eq!(reasons, ["PolicyViolation", "PolicyViolation", "ImageNotResolved"]);
    let server = h.stored(&path);
    let compliant = condition(&server, "PolicyCompliant");
    assert_eq!(compliant["status"], "False");
    assert!(
        compliant["message"].as_str().unwrap_or_default().contains("spec.egress[0].cidr"),
        "{compliant}"
    );

    // The same server in a namespace the policy does not select goes ahead.
    let elsewhere = harness(verified(), &[example("policy.yaml")], json!({"team": "data"}));
    let path = elsewhere.create(example("rejected/egress-denied-by-policy.yaml"));
    let seen = elsewhere.reconcile(&path).await;
    assert!(
        seen.iter().any(|s| s.method == Method::PATCH && s.path.contains("/deployments/")),
        "{:?}",
        lines(&seen)
    );
}

#[tokio::test]
async fn an_unverified_image_never_runs_and_a_running_one_is_stopped() {
    let failed = Verification::Failed {
        reason: "SignatureInvalid".into(),
        message: "no signature verifies with the trusted keys".into(),
    };
    // Nothing exists yet: nothing is created, not even the certificate.
    let h = harness(failed.clone(), &[], json!({}));
    let path = h.create(example("everything-http.yaml"));
    let seen = h.reconcile(&path).await;
    assert!(
        seen.iter()
            .all(|s| !s.is_write() || s.path.ends_with("/status") || s.path.contains("/events")),
        "{:?}",
        lines(&seen)
    );
    let server = h.stored(&path);
    assert_eq!(condition(&server, "ImageVerified")["status"], "False");
    assert!(server["status"]["image"]["verifiedBy"].is_null());

    // Running from an earlier, verified spec: its children are applied with zero replicas.
    let mut h = harness(verified(), &[], json!({}));
    let path = h.create(example("everything-http.yaml"));
    h.reconcile(&path).await;
    h.writers.show(&h.api);
    let running = Harness {
        api: h.api.clone(),
        ctx: Arc::new(Context {
            verifier: Box::new(FakeVerifier(failed)),
            ..clone_context(&h.ctx)
        }),
        writers: h.writers,
    };
    let seen = running.reconcile(&path).await;
    let deployment_patch = seen
        .iter()
        .find(|s| s.method == Method::PATCH && s.path == DEPLOYMENT)
        .unwrap_or_else(|| panic!("the Deployment is patched: {:?}", lines(&seen)));
    assert_eq!(deployment_patch.body["spec"]["replicas"], 0);
    assert!(
        !seen.iter().any(|s| s.path.contains("/secrets/") && s.is_write()),
        "no new certificate for an unverified image"
    );
}

/// The same context with the same caches and API server (for swapping one part).
fn clone_context(ctx: &Context) -> Context {
    Context {
        caches: Caches {
            deployments: ctx.caches.deployments.clone(),
            services: ctx.caches.services.clone(),
            service_accounts: ctx.caches.service_accounts.clone(),
            config_maps: ctx.caches.config_maps.clone(),
            network_policies: ctx.caches.network_policies.clone(),
            pdbs: ctx.caches.pdbs.clone(),
        },
        client: ctx.client.clone(),
        render: ctx.render.clone(),
        resolver: Resolver::new(vec![]),
        verifier: Box::new(FakeVerifier(verified())),
        gateways: Box::new(FakeGateways(Report::NoneReady)),
        recorder: Recorder::new(
            ctx.client.clone(),
            Reporter { controller: "palisade-operator".into(), instance: Some("test".into()) },
        ),
        metrics: ctx.metrics.clone(),
        ca: Authority::from_pem(&ctx.ca.cert_pem, &ctx.ca.key_pem).unwrap(),
        policies: ctx.policies.clone(),
        namespaces: ctx.namespaces.clone(),
        retries: Default::default(),
    }
}

#[tokio::test]
async fn what_the_gateways_withhold_is_in_the_status() {
    let mut h = harness(verified(), &[], json!({}));
    let path = h.create(example("everything-http.yaml"));
    h.reconcile(&path).await;
    // No ready gateway yet: nobody is asked.
    let server = h.stored(&path);
    assert_eq!(condition(&server, "ToolsVerified")["reason"], "NoGatewayReady");
    // The Deployment's pods become ready; their gateways withhold a changed tool.
    h.api.lock().unwrap().objects.get_mut(DEPLOYMENT).unwrap()["status"] = json!({
        "observedGeneration": 1, "replicas": 2, "updatedReplicas": 2, "availableReplicas": 2, "readyReplicas": 2});
    h.writers.show(&h.api);
    let answer = json!({"ready": true, "server": {"name": "mcp-servers/everything", "version": "2.0.0"},
        "protocolVersion": "2025-11-25", "toolCount": 13,
        "tools": [{"name": "echo", "withheld": true,
            "reason": "definition differs from its pin (changed: description; pinned 3f2a, live 9c1d)"}]});
    let asking = Harness {
        api: h.api.clone(),
        ctx: Arc::new(Context {
            gateways: Box::new(FakeGateways(Report::Answered(vec![answer]))),
            ..clone_context(&h.ctx)
        }),
        writers: h.writers,
    };
    let seen = asking.reconcile(&path).await;
    let server = asking.stored(&path);
    let c = condition(&server, "ToolsVerified");
    assert_eq!(c["status"], "False", "{c}");
    assert_eq!(c["reason"], "ToolDefinitionsWithheld");
    assert_eq!(
        c["message"],
        "the gateways withhold 1 tool(s): tool echo: definition differs from its pin (changed: description; pinned 3f2a, live 9c1d)"
    );
    assert_eq!(server["status"]["server"]["name"], "mcp-servers/everything");
    assert_eq!(server["status"]["server"]["toolCount"], 13);
    // The transition is announced as a warning.
    let warned = seen.iter().any(|s| {
        s.path.ends_with("/events")
            && s.body["type"] == "Warning"
            && s.body["reason"] == "ToolDefinitionsWithheld"
    });
    assert!(warned, "{:?}", lines(&seen));
}

#[tokio::test]
async fn a_remote_server_gets_its_gateway_without_an_image_to_pin_or_verify() {
    // A verifier that refuses everything: a remote server has no image for it to judge.
    let refusing =
        Verification::Failed { reason: "SignatureMismatch".into(), message: "refused".into() };
    let h = harness(refusing, &[], json!({}));
    let path = h.create(example("remote-https.yaml"));
    let seen = lines(&h.reconcile(&path).await);
    assert!(
        seen.contains(&"PATCH /apis/apps/v1/namespaces/mcp-demo/deployments/tickets".to_string()),
        "{seen:?}"
    );
    let deployment = h.stored("/apis/apps/v1/namespaces/mcp-demo/deployments/tickets");
    let containers = deployment["spec"]["template"]["spec"]["containers"].as_array().unwrap();
    let names: Vec<&str> = containers.iter().filter_map(|c| c["name"].as_str()).collect();
    assert_eq!(names, ["gateway"]);
    let config = h.stored("/api/v1/namespaces/mcp-demo/configmaps/tickets-gateway");
    let gateway_json: Value =
        serde_json::from_str(config["data"]["gateway.json"].as_str().unwrap()).unwrap();
    assert_eq!(gateway_json["upstream"]["url"], "https://mcp.tickets.example.com/mcp");
    let server = h.stored(&path);
    let verified = condition(&server, "ImageVerified");
    assert_eq!(
        (&verified["status"], &verified["reason"]),
        (&json!("Unknown"), &json!("RemoteServer"))
    );
    assert_eq!(condition(&server, "PolicyCompliant")["status"], "True");
    assert!(server["status"].get("image").is_none(), "no image status: {server}");
}
