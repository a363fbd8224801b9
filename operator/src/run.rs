//! `palisade operator`, the process: leader election, the watch caches (MCPServers, owned
//! kinds, MCPPolicies, namespaces) and the controller that runs [`crate::reconcile`] on them,
//! the metrics endpoint, and shutdown.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use futures::{StreamExt, future};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{ConfigMap, Namespace, Service, ServiceAccount};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use kube::api::{Api, DynamicObject};
use kube::core::{ApiResource, GroupVersionKind};
use kube::runtime::controller::{Config as ControllerConfig, Controller};
use kube::runtime::events::{Recorder, Reporter};
use kube::runtime::reflector::{self, ObjectRef};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Client, ResourceExt};
use kube_lease_manager::LeaseManagerBuilder;
use palisade_crds::{MCPPolicy, MCPVirtualServer};
use palisade_render::{FqdnPolicy, RenderOptions};
use tracing::{error, info, warn};

use crate::metrics::Metrics;
use crate::reconcile::{self, Context};
use crate::{gateways, registry, signature, virtual_server};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Gateway sidecar image, pinned by digest. Required: a default could never pull, and every
    /// server rendered with it would never start.
    #[arg(long, env = "PALISADE_GATEWAY_IMAGE")]
    pub gateway_image: String,
    /// Namespace the operator runs in (its CA Secret and leader Lease live here).
    #[arg(long, env = "POD_NAMESPACE", default_value = "palisade-system")]
    pub namespace: String,
    /// Address of /healthz, /readyz and /metrics.
    #[arg(long, default_value = "0.0.0.0:8080")]
    pub metrics_address: SocketAddr,
    /// Disable leader election (single replica, or tests).
    #[arg(long)]
    pub no_leader_election: bool,
    #[arg(long, default_value = "palisade-operator")]
    pub lease_name: String,
    /// This replica's identity in the Lease (default: POD_NAME, else a random string).
    #[arg(long, env = "POD_NAME")]
    pub identity: Option<String>,
    /// Registries (host:port) reached over plain HTTP, for local test registries only.
    #[arg(long = "insecure-registry", value_name = "HOST")]
    pub insecure_registries: Vec<String>,
    /// Also render CiliumNetworkPolicies for DNS-name egress rules.
    #[arg(long)]
    pub cilium_fqdn_policies: bool,
    #[arg(long, default_value = "cluster.local")]
    pub cluster_domain: String,
    /// Namespace of the Prometheus that scrapes the gateways: its pods may reach their admin
    /// port (metrics) through the rendered NetworkPolicy.
    #[arg(long)]
    pub metrics_namespace: Option<String>,
    /// The OpenTelemetry Collector's OTLP/HTTP base URL the gateways send spans to.
    #[arg(long, requires = "otlp_namespace")]
    pub otlp_endpoint: Option<String>,
    /// The collector's namespace: the gateways' egress is opened to its pods on the URL's port.
    #[arg(long)]
    pub otlp_namespace: Option<String>,
    /// Share of traces started at the gateways that are recorded (0 to 1).
    #[arg(long, default_value_t = 1.0)]
    pub trace_sample_ratio: f64,
    /// Only reconcile MCPServers whose labels match this selector (sharding, canary rollouts of
    /// a new operator version, tests).
    #[arg(long)]
    pub selector: Option<String>,
    /// Reconciliations run in parallel.
    #[arg(long, default_value_t = 8)]
    pub concurrency: u16,
}

#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error("cannot connect to Kubernetes: {0}")]
    Connect(#[source] kube::Error),
    #[error("leader election: {0}")]
    Lease(#[from] kube_lease_manager::LeaseManagerError),
    #[error("lost the leader lease; exiting so that no two replicas write")]
    LostLeadership,
    #[error("{0}")]
    Setup(#[from] reconcile::Error),
    #[error("metrics endpoint: {0}")]
    Http(#[from] std::io::Error),
    #[error("{0}")]
    Config(String),
}

/// A watch cache of one owned kind, and the stream of changes that triggers reconciles.
#[allow(clippy::type_complexity)]
fn owned_cache<K>(
    client: &Client,
    config: &watcher::Config,
) -> (reflector::Store<K>, impl futures::Stream<Item = Result<K, watcher::Error>> + Send + 'static)
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
    let stream =
        reflector::reflector(writer, watcher(Api::<K>::all(client.clone()), config.clone()))
            .default_backoff()
            .touched_objects();
    (store, stream)
}

pub fn mcpserver_resource() -> ApiResource {
    ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk(palisade_crds::GROUP, palisade_crds::VERSION, "MCPServer"),
        "mcpservers",
    )
}

/// A client (KUBECONFIG or in-cluster) whose every request is counted in the metrics, so
/// that API requests per reconcile can be measured from the operator's side.
async fn counting_client(metrics: Arc<Metrics>) -> Result<Client, RunError> {
    let config =
        kube::Config::infer().await.map_err(|e| RunError::Connect(kube::Error::InferConfig(e)))?;
    let builder = kube::client::ClientBuilder::try_from(config).map_err(RunError::Connect)?;
    let layer = tower::util::MapRequestLayer::new(move |req: http::Request<kube::client::Body>| {
        metrics.count_request(&req);
        req
    });
    Ok(builder.with_layer(&layer).build())
}

/// Where the gateways send spans, from the flags; a URL without a host or port is refused.
fn trace_export(args: &Args) -> Result<Option<palisade_render::TraceExport>, RunError> {
    let (Some(endpoint), Some(namespace)) = (&args.otlp_endpoint, &args.otlp_namespace) else {
        return Ok(None);
    };
    let url = reqwest::Url::parse(endpoint)
        .map_err(|e| RunError::Config(format!("--otlp-endpoint {endpoint}: {e}")))?;
    let port = url
        .port_or_known_default()
        .filter(|_| matches!(url.scheme(), "http" | "https") && url.host().is_some())
        .ok_or_else(|| {
            RunError::Config(format!("--otlp-endpoint {endpoint}: an http(s) URL with a host"))
        })?;
    if !(0.0..=1.0).contains(&args.trace_sample_ratio) {
        return Err(RunError::Config("--trace-sample-ratio must be between 0 and 1".into()));
    }
    Ok(Some(palisade_render::TraceExport {
        otlp_endpoint: endpoint.clone(),
        namespace: namespace.clone(),
        port,
        sample_ratio: args.trace_sample_ratio,
    }))
}

pub async fn run(args: Args) -> Result<(), RunError> {
    let metrics = Arc::new(Metrics::new());
    let client = counting_client(metrics.clone()).await?;
    let ready = Arc::new(AtomicBool::new(false));
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let http_stop = {
        let mut rx = stop_rx.clone();
        async move {
            let _ = rx.wait_for(|s| *s).await;
        }
    };
    let encode: palisade_https::admin::Encoder = {
        let m = metrics.clone();
        Arc::new(move || m.encode())
    };
    let listener = palisade_https::admin::bind(args.metrics_address).await?;
    info!(addr = %listener.local_addr()?, "serving /healthz, /readyz and /metrics");
    let router = palisade_https::admin::router(encode, palisade_https::admin::flag(ready.clone()));
    let http = tokio::spawn(palisade_https::admin::serve(listener, router, http_stop));

    let identity =
        args.identity.clone().unwrap_or_else(|| format!("palisade-{:016x}", rand::random::<u64>()));
    let mut lease = None;
    if !args.no_leader_election {
        let manager = LeaseManagerBuilder::new(client.clone(), &args.lease_name)
            .with_namespace(&args.namespace)
            .with_identity(&identity)
            .with_duration(15)
            .with_grace(5)
            .build()
            .await?;
        let (mut leader_rx, task) = manager.watch().await;
        ready.store(true, Ordering::Relaxed);
        info!(%identity, lease = %args.lease_name, "waiting for the leader lease");
        tokio::select! {
            r = leader_rx.wait_for(|l| *l) => { if r.is_err() { return Err(RunError::LostLeadership) } }
            _ = palisade_https::shutdown_signal() => { info!("stopped before becoming leader"); return Ok(()) }
        }
        info!(%identity, "acquired the leader lease");
        lease = Some((leader_rx, task));
    }
    metrics.leader.set(1);

    // The CA is shared with the webhook, which rotates it; the operator only reads it.
    let lifetime = palisade_https::ca::days(3650);
    let ca = palisade_webhooks::ca_store::ensure_ca(
        &client,
        &args.namespace,
        "palisade-ca",
        lifetime,
        lifetime / 3,
    )
    .await
    .map_err(reconcile::Error::from)?
    .authority;
    let render = RenderOptions {
        gateway_image: args.gateway_image.clone(),
        resolved_digest: None,
        operator_namespace: args.namespace.clone(),
        metrics_namespace: args.metrics_namespace.clone(),
        tracing: trace_export(&args)?,
        cluster_domain: args.cluster_domain.clone(),
        fqdn_policy: if args.cilium_fqdn_policies { FqdnPolicy::Cilium } else { FqdnPolicy::None },
        ..RenderOptions::default()
    };

    // Caches of policies and namespace labels: policy checks make no API requests.
    let (policies, policy_writer) = reflector::store::<MCPPolicy>();
    let policy_events = reflector::reflector(
        policy_writer,
        watcher(Api::<MCPPolicy>::all(client.clone()), watcher::Config::default()),
    )
    .default_backoff()
    .touched_objects()
    .filter_map(|r| future::ready(r.ok().map(|_| ())));
    let (namespaces, ns_writer) = reflector::store::<Namespace>();
    let ns_cache = reflector::reflector(
        ns_writer,
        watcher(Api::<Namespace>::all(client.clone()), watcher::Config::default()),
    )
    .default_backoff()
    .for_each(|_| future::ready(()));
    let ns_cache = tokio::spawn(ns_cache);

    let ar = mcpserver_resource();
    let servers: Api<DynamicObject> = Api::all_with(client.clone(), &ar);
    let owned = watcher::Config::default().labels("app.kubernetes.io/managed-by=palisade");
    // Owned kinds are watched through caches of our own, so that reconciles read them locally.
    let (deployments, deploy_events) = owned_cache::<Deployment>(&client, &owned);
    let (services, service_events) = owned_cache::<Service>(&client, &owned);
    let (service_accounts, sa_events) = owned_cache::<ServiceAccount>(&client, &owned);
    let (config_maps, cm_events) = owned_cache::<ConfigMap>(&client, &owned);
    let (network_policies, np_events) = owned_cache::<NetworkPolicy>(&client, &owned);
    let (pdbs, pdb_events) = owned_cache::<PodDisruptionBudget>(&client, &owned);
    let caches = reconcile::Caches {
        deployments,
        services,
        service_accounts,
        config_maps,
        network_policies,
        pdbs,
    };
    let server_watch = match &args.selector {
        Some(sel) => watcher::Config::default().labels(sel),
        None => watcher::Config::default(),
    };
    let controller = Controller::new_with(servers, server_watch, ar.clone())
        .with_config(ControllerConfig::default().concurrency(args.concurrency))
        .owns_stream(deploy_events)
        .owns_stream(service_events)
        .owns_stream(sa_events)
        .owns_stream(cm_events)
        .owns_stream(np_events)
        .owns_stream(pdb_events);
    let store = controller.store();
    // A namespace's labels decide which policies apply: re-check its servers when they change.
    let controller = {
        let store = store.clone();
        let ar = ar.clone();
        controller.watches(
            Api::<Namespace>::all(client.clone()),
            watcher::Config::default(),
            move |ns: Namespace| {
                let name = ns.name_any();
                store
                    .state()
                    .iter()
                    .filter(|s| s.namespace().as_deref() == Some(name.as_str()))
                    .map(|s| ObjectRef::new_with(&s.name_any(), ar.clone()).within(&name))
                    .collect::<Vec<_>>()
            },
        )
    };

    let ctx = Arc::new(Context {
        caches,
        client: client.clone(),
        render,
        resolver: registry::Resolver::new(args.insecure_registries.clone()),
        verifier: Box::new(signature::Cosign::new(
            client.clone(),
            args.insecure_registries.clone(),
        )),
        gateways: Box::new(gateways::AdminPorts::new(client.clone())),
        recorder: Recorder::new(
            client.clone(),
            Reporter { controller: "palisade-operator".into(), instance: Some(identity.clone()) },
        ),
        metrics: metrics.clone(),
        ca,
        policies,
        namespaces,
        retries: Default::default(),
    });

    // Queue depth: servers whose current generation is not reconciled yet, plus retries.
    let depth_task = {
        let store = store.clone();
        let ctx = ctx.clone();
        tokio::spawn(async move {
            loop {
                let behind = store
                    .state()
                    .iter()
                    .filter(|s| {
                        s.data.pointer("/status/observedGeneration").and_then(|g| g.as_i64())
                            != s.metadata.generation
                    })
                    .count();
                let retrying = ctx.retries.lock().map(|r| r.len()).unwrap_or(0);
                ctx.metrics.queue_depth.set((behind + retrying) as i64);
                tokio::time::sleep(Duration::from_secs(2)).await;
            }
        })
    };

    let lost = Arc::new(AtomicBool::new(false));
    let shutdown = {
        let lost = lost.clone();
        let mut leader_rx = lease.as_ref().map(|(rx, _)| rx.clone());
        async move {
            match leader_rx.as_mut() {
                Some(rx) => tokio::select! {
                    _ = palisade_https::shutdown_signal() => {},
                    _ = rx.wait_for(|l| !*l) => { lost.store(true, Ordering::Relaxed); },
                },
                None => palisade_https::shutdown_signal().await,
            }
        }
    };

    // Virtual servers: their own controller, on the same caches; a change to any MCPServer
    // re-checks the virtual servers of its namespace.
    let virtuals = {
        let api: Api<MCPVirtualServer> = Api::all(client.clone());
        let vc = Controller::new(api, watcher::Config::default())
            .with_config(ControllerConfig::default().concurrency(args.concurrency));
        let vstore = vc.store();
        let server_api: Api<DynamicObject> = Api::all_with(client.clone(), &ar);
        let vc = vc.watches_with(server_api, ar.clone(), watcher::Config::default(), move |s| {
            let value = serde_json::to_value(&s).unwrap_or_default();
            virtual_server::of_namespace(&vstore, &value)
        });
        let vctx =
            Arc::new(virtual_server::VirtualContext { ctx: ctx.clone(), servers: store.clone() });
        let (vstop_tx, vstop_rx) = tokio::sync::watch::channel(false);
        let vstop = async move {
            let mut rx = vstop_rx;
            let _ = rx.wait_for(|s| *s).await;
        };
        let task = tokio::spawn(
            vc.graceful_shutdown_on(vstop)
                .run(virtual_server::reconcile, virtual_server::error_policy, vctx)
                .for_each(|res| async move {
                    if let Err(kube::runtime::controller::Error::ObjectNotFound(_)) = res {
                        return;
                    }
                    if let Err(e) = res
                        && !matches!(e, kube::runtime::controller::Error::ReconcilerFailed(..))
                    {
                        warn!(error = %e, "virtual-server controller");
                    }
                }),
        );
        (vstop_tx, task)
    };

    ready.store(true, Ordering::Relaxed);
    info!("operator started");
    controller
        .reconcile_all_on(policy_events)
        .graceful_shutdown_on(shutdown)
        .run(reconcile::reconcile, reconcile::error_policy, ctx)
        .for_each(|res| async move {
            if let Err(e) = res {
                match e {
                    kube::runtime::controller::Error::ReconcilerFailed(..) => {}
                    other => warn!(error = %other, "controller"),
                }
            }
        })
        .await;
    let _ = virtuals.0.send(true);
    let _ = virtuals.1.await;
    depth_task.abort();
    ns_cache.abort();
    metrics.leader.set(0);

    if let Some((rx, task)) = lease {
        drop(rx);
        match task.await {
            Ok(Ok(manager)) => {
                if let Err(e) = manager.release().await {
                    warn!(error = %e, "could not release the lease");
                }
            }
            Ok(Err(e)) => warn!(error = %e, "lease manager failed"),
            Err(e) => warn!(error = %e, "lease task panicked"),
        }
    }
    let _ = stop_tx.send(true);
    if let Ok(Err(e)) = http.await {
        error!(error = %e, "metrics endpoint failed");
    }
    if lost.load(Ordering::Relaxed) {
        return Err(RunError::LostLeadership);
    }
    info!("operator stopped");
    Ok(())
}
