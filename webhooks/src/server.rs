//! `palisade webhook`: HTTPS AdmissionReview (`admission.k8s.io/v1`) for MCPServers,
//! MCPPolicies and workloads that claim to be MCP servers.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use axum::Json;
use axum::Router;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::StatusCode;
use axum::routing::post;
use futures::{StreamExt, future};
use k8s_openapi::api::core::v1::Namespace;
use kube::api::{Api, DynamicObject};
use kube::core::admission::{AdmissionRequest, AdmissionResponse, AdmissionReview, Operation};
use kube::core::{ApiResource, GroupVersionKind};
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Client, ResourceExt};
use palisade_crds::MCPPolicy;
use palisade_https::ca;
use palisade_https::{CertStore, ClientAuth, Limits};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;
use tracing::{error, info, warn};

use crate::ca_store;
use palisade_admission::decide::{self, Claimed, Inputs};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// HTTPS address for AdmissionReview requests.
    #[arg(long, default_value = "0.0.0.0:9443")]
    pub address: SocketAddr,
    /// Plain-HTTP address of /healthz, /readyz and /metrics.
    #[arg(long, default_value = "0.0.0.0:8081")]
    pub metrics_address: SocketAddr,
    #[arg(long, env = "POD_NAMESPACE", default_value = "palisade-system")]
    pub namespace: String,
    /// The webhook's Service name; its DNS names go into the serving certificate.
    #[arg(long, default_value = "palisade-webhook")]
    pub service_name: String,
    /// Extra names or IP addresses for the serving certificate (e.g. 127.0.0.1 for a local API server).
    #[arg(long = "extra-san")]
    pub extra_sans: Vec<String>,
    /// ValidatingWebhookConfigurations whose caBundle this process keeps current.
    #[arg(long = "webhook-configuration")]
    pub webhook_configurations: Vec<String>,
    /// Secret (in --namespace) holding Palisade's CA.
    #[arg(long, default_value = "palisade-ca")]
    pub ca_secret: String,
    /// Lifetime of the self-issued serving certificate; renewed when a third remains.
    #[arg(long, default_value = "30d", value_parser = humantime::parse_duration)]
    pub cert_validity: Duration,
    /// Lifetime of the CA; rotated (with overlap in the bundle) when a third remains.
    #[arg(long, default_value = "3650d", value_parser = humantime::parse_duration)]
    pub ca_validity: Duration,
    /// Serve this certificate (cert-manager) instead of issuing one; reloaded when it changes.
    #[arg(long, requires = "tls_key_file")]
    pub tls_cert_file: Option<PathBuf>,
    #[arg(long, requires = "tls_cert_file")]
    pub tls_key_file: Option<PathBuf>,
    /// The gateway image the operator injects, which labelled workloads must use.
    #[arg(long, env = "PALISADE_GATEWAY_IMAGE")]
    pub gateway_image: Option<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum WebhookError {
    #[error("cannot connect to Kubernetes: {0}")]
    Connect(#[from] kube::Error),
    #[error("{0}")]
    CaStore(#[from] ca_store::CaStoreError),
    #[error("{0}")]
    Https(#[from] palisade_https::HttpsError),
    #[error("{0}")]
    Cert(#[from] ca::CertError),
    #[error("{0}")]
    Io(#[from] std::io::Error),
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct AdmissionLabel {
    kind: String,
    verdict: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct KindLabel {
    kind: String,
}

struct Metrics {
    admissions: Family<AdmissionLabel, Counter>,
    latency: Family<KindLabel, Histogram>,
    registry: Registry,
}

impl Metrics {
    fn new() -> Metrics {
        let mut registry = Registry::with_prefix("palisade_webhook");
        let admissions = Family::<AdmissionLabel, Counter>::default();
        let latency = Family::<KindLabel, Histogram>::new_with_constructor(|| {
            Histogram::new(exponential_buckets(0.00005, 2.0, 18))
        });
        registry.register(
            "admissions",
            "Admission reviews by kind and verdict",
            admissions.clone(),
        );
        registry.register(
            "admission_duration_seconds",
            "Time to decide one admission review",
            latency.clone(),
        );
        Metrics { admissions, latency, registry }
    }
}

struct AppState {
    namespaces: Store<Namespace>,
    policies: Store<MCPPolicy>,
    servers: Store<DynamicObject>,
    server_resource: ApiResource,
    gateway_image: Option<String>,
    synced: AtomicBool,
    metrics: Metrics,
}

fn cache<K>(client: &Client) -> (Store<K>, impl std::future::Future<Output = ()> + Send + 'static)
where
    K: kube::Resource<DynamicType = ()>
        + Clone
        + serde::de::DeserializeOwned
        + std::fmt::Debug
        + Send
        + Sync
        + 'static,
{
    let (store, writer) = reflector::store::<K>();
    let task = reflector::reflector(
        writer,
        watcher(Api::<K>::all(client.clone()), watcher::Config::default()),
    )
    .default_backoff()
    .for_each(|_| future::ready(()));
    (store, task)
}

async fn review(
    State(state): State<Arc<AppState>>,
    Json(body): Json<AdmissionReview<DynamicObject>>,
) -> Result<Json<AdmissionReview<DynamicObject>>, (StatusCode, String)> {
    let started = Instant::now();
    let req: AdmissionRequest<DynamicObject> = body
        .try_into()
        .map_err(|e| (StatusCode::BAD_REQUEST, format!("not an AdmissionReview: {e}")))?;
    let kind = req.kind.kind.clone();
    let mut response = AdmissionResponse::from(&req);
    let verdict = if !state.synced.load(Ordering::Relaxed) {
        // Without the caches a policy could be missed: refuse rather than guess.
        response = response.deny("the Palisade webhook is starting; retry in a few seconds");
        "error"
    } else if matches!(req.operation, Operation::Delete | Operation::Connect) {
        "allowed"
    } else {
        match req.object.as_ref().map(serde_json::to_value) {
            Some(Ok(object)) => {
                let ns = req.namespace.clone().unwrap_or_default();
                let labels: Option<BTreeMap<String, String>> = req
                    .namespace
                    .as_ref()
                    .and_then(|n| state.namespaces.get(&ObjectRef::new(n)))
                    .map(|n| n.labels().clone());
                let policies = state.policies.state();
                let refs: Vec<&MCPPolicy> = policies.iter().map(|p| p.as_ref()).collect();
                let claimed = |name: &str| match state
                    .servers
                    .get(&ObjectRef::new_with(name, state.server_resource.clone()).within(&ns))
                {
                    None => Claimed::Missing,
                    Some(s) => match serde_json::to_value(s.as_ref()) {
                        Ok(v) if v.pointer("/spec/remote").is_some_and(|r| !r.is_null()) => {
                            Claimed::Remote
                        }
                        v => Claimed::Digest(v.ok().and_then(|v| decide::server_digest(&v))),
                    },
                };
                let servers_in = |ns: &str| -> Vec<palisade_crds::MCPServer> {
                    state
                        .servers
                        .state()
                        .iter()
                        .filter(|s| s.metadata.namespace.as_deref() == Some(ns))
                        .filter_map(|s| {
                            serde_json::to_value(s.as_ref())
                                .ok()
                                .and_then(|v| serde_json::from_value(v).ok())
                        })
                        .collect()
                };
                let inputs = Inputs {
                    servers: Some(&servers_in),
                    namespace_labels: labels.as_ref(),
                    policies: &refs,
                    claimed: &claimed,
                    gateway_image: state.gateway_image.as_deref(),
                };
                let decision = decide::decide(&kind, &object, &inputs);
                if !decision.warnings.is_empty() {
                    response.warnings = Some(decision.warnings.clone());
                }
                if decision.allowed {
                    "allowed"
                } else {
                    response = response.deny(decision.message);
                    "denied"
                }
            }
            Some(Err(e)) => {
                response = response.deny(format!("cannot read the object: {e}"));
                "error"
            }
            None => {
                response = response.deny("the request carries no object");
                "error"
            }
        }
    };
    state
        .metrics
        .admissions
        .get_or_create(&AdmissionLabel { kind: kind.clone(), verdict: verdict.into() })
        .inc();
    state
        .metrics
        .latency
        .get_or_create(&KindLabel { kind })
        .observe(started.elapsed().as_secs_f64());
    Ok(Json(response.into_review()))
}

/// Keeps the CA (rotating it when due), the serving certificate and the caBundle current.
async fn manage_certificates(
    client: Client,
    args: Arc<Args>,
    store: Arc<CertStore>,
    mut current: String,
) {
    // Frequent enough that a webhook configuration installed after start-up gets its caBundle
    // within seconds; each tick is two GETs when nothing is due.
    let every = (args.cert_validity / 10).clamp(Duration::from_secs(1), Duration::from_secs(10));
    let names = serving_names(&args);
    loop {
        tokio::time::sleep(every).await;
        let result: Result<(), WebhookError> = async {
            let state = ca_store::ensure_ca(
                &client,
                &args.namespace,
                &args.ca_secret,
                args.ca_validity,
                args.ca_validity / 3,
            )
            .await?;
            ca_store::publish_ca_bundle(&client, &args.webhook_configurations, &state.bundle)
                .await?;
            let signer_changed = !ca::issued_by(&current, &state.authority.cert_pem);
            if signer_changed || ca::needs_rotation(&current, &names, args.cert_validity / 3) {
                let leaf = state.authority.issue_server(&names, args.cert_validity)?;
                store.set(palisade_https::certified_key(
                    leaf.cert_pem.as_bytes(),
                    leaf.key_pem.as_bytes(),
                    "webhook",
                )?);
                current = leaf.cert_pem;
                info!("renewed the webhook serving certificate");
            }
            Ok(())
        }
        .await;
        if let Err(e) = result {
            warn!(error = %e, "certificate maintenance failed; retrying");
        }
    }
}

fn serving_names(args: &Args) -> Vec<String> {
    let (svc, ns) = (&args.service_name, &args.namespace);
    let mut names = vec![
        format!("{svc}.{ns}.svc"),
        format!("{svc}.{ns}.svc.cluster.local"),
        format!("{svc}.{ns}"),
    ];
    names.extend(args.extra_sans.iter().cloned());
    names
}

pub async fn run(args: Args) -> Result<(), WebhookError> {
    let args = Arc::new(args);
    let client = Client::try_default().await?;

    let (namespaces, ns_task) = cache::<Namespace>(&client);
    let (policies, policy_task) = cache::<MCPPolicy>(&client);
    let server_resource = ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk(palisade_crds::GROUP, palisade_crds::VERSION, "MCPServer"),
        "mcpservers",
    );
    // MCPServers as dynamic objects: one the types cannot read must not stop the cache.
    let (servers, server_task) = {
        let writer = reflector::store::Writer::<DynamicObject>::new(server_resource.clone());
        let store = writer.as_reader();
        let api: Api<DynamicObject> = Api::all_with(client.clone(), &server_resource);
        let task = reflector::reflector(writer, watcher(api, watcher::Config::default()))
            .default_backoff()
            .for_each(|_| future::ready(()));
        (store, task)
    };
    let tasks = vec![tokio::spawn(ns_task), tokio::spawn(policy_task), tokio::spawn(server_task)];

    let state = Arc::new(AppState {
        namespaces: namespaces.clone(),
        policies: policies.clone(),
        servers: servers.clone(),
        server_resource,
        gateway_image: args.gateway_image.clone(),
        synced: AtomicBool::new(false),
        metrics: Metrics::new(),
    });

    // Certificates: cert-manager files, or issued from Palisade's CA.
    let (store, manager) = match (&args.tls_cert_file, &args.tls_key_file) {
        (Some(cert), Some(key)) => {
            (palisade_https::watch_files(cert.clone(), key.clone(), Duration::from_secs(10))?, None)
        }
        _ => {
            let ca_state = ca_store::ensure_ca(
                &client,
                &args.namespace,
                &args.ca_secret,
                args.ca_validity,
                args.ca_validity / 3,
            )
            .await?;
            ca_store::publish_ca_bundle(&client, &args.webhook_configurations, &ca_state.bundle)
                .await?;
            let leaf =
                ca_state.authority.issue_server(&serving_names(&args), args.cert_validity)?;
            let store = CertStore::from_pem(leaf.cert_pem.as_bytes(), leaf.key_pem.as_bytes())?;
            let manager = tokio::spawn(manage_certificates(
                client.clone(),
                args.clone(),
                store.clone(),
                leaf.cert_pem,
            ));
            (store, Some(manager))
        }
    };
    let tls_config = palisade_https::server_config(store, ClientAuth::None)?;

    // Admin endpoints: ready once the caches are synced.
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let stopped = move || {
        let mut rx = stop_rx.clone();
        async move {
            let _ = rx.wait_for(|s| *s).await;
        }
    };
    let encode: palisade_https::admin::Encoder = {
        let s = state.clone();
        Arc::new(move || {
            let mut out = String::new();
            let _ = prometheus_client::encoding::text::encode(&mut out, &s.metrics.registry);
            out
        })
    };
    let ready: palisade_https::admin::Readiness = {
        let s = state.clone();
        Arc::new(move || s.synced.load(Ordering::Relaxed))
    };
    let admin_listener = palisade_https::admin::bind(args.metrics_address).await?;
    info!(addr = %admin_listener.local_addr()?, "serving /healthz, /readyz and /metrics");
    let admin = tokio::spawn(palisade_https::admin::serve(
        admin_listener,
        palisade_https::admin::router(encode, ready),
        stopped(),
    ));

    {
        let state = state.clone();
        tokio::spawn(async move {
            let _ = tokio::join!(
                namespaces.wait_until_ready(),
                policies.wait_until_ready(),
                servers.wait_until_ready()
            );
            state.synced.store(true, Ordering::Relaxed);
            info!("caches synced; admitting");
        });
    }

    let app = Router::new()
        .route("/validate", post(review))
        .route("/validate/{kind}", post(review))
        // AdmissionReviews carry an object and its old version: bounded by etcd's 1.5 MiB each.
        .layer(DefaultBodyLimit::max(8 * 1024 * 1024))
        .with_state(state);
    let listener = tokio::net::TcpListener::bind(args.address).await?;
    info!(addr = %listener.local_addr()?, "serving AdmissionReviews over TLS");
    palisade_https::serve(
        listener,
        Some(tls_config),
        app,
        Limits::default(),
        palisade_https::shutdown_signal(),
        Duration::from_secs(10),
    )
    .await;

    let _ = stop_tx.send(true);
    for t in tasks {
        t.abort();
    }
    if let Some(m) = manager {
        m.abort();
    }
    if let Ok(Err(e)) = admin.await {
        error!(error = %e, "admin endpoint failed");
    }
    info!("webhook stopped");
    Ok(())
}
