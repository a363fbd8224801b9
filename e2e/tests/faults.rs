//! The control plane failing under the operator: the API server, and then etcd, are restarted
//! (stopped with SIGTERM and started again with the same command line, as a kubelet restarts
//! a static pod) while MCPServers are being reconciled. Nothing is lost: every server created
//! before, between and after the restarts converges to Ready with its children. An operator
//! that cannot renew its lease during the outage exits (so that no two replicas write) and is
//! started again here, as its Deployment would be.
//!
//! Needs the cluster of `e2e/cluster` (its processes run in the test's namespaces); run by
//! `e2e/run-tests` after the other e2e tests, since it interrupts everyone's API server, when
//! `PALISADE_E2E_FAULTS=1` (it fails today: docs/testing.md, "Control-plane faults").
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::networking::v1::NetworkPolicy;
use kube::api::{Api, PostParams};
use kube::{Client, ResourceExt};
use palisade_crds::MCPServer;
use palisade_e2e::{Cluster, Operator, TestNamespace, install_crds, load_yaml};

/// A control-plane process of the cluster: its pid and command line.
struct Component {
    pid: u32,
    argv: Vec<String>,
}

fn cluster_dir() -> PathBuf {
    PathBuf::from(
        std::env::var("PALISADE_CLUSTER_DIR")
            .expect("PALISADE_CLUSTER_DIR: this test needs the cluster of e2e/cluster"),
    )
}

/// The running process whose program is `name` and whose command line names the cluster's
/// state directory.
fn component(name: &str) -> Component {
    let dir = cluster_dir().display().to_string();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else { continue };
        let Ok(raw) = std::fs::read(entry.path().join("cmdline")) else { continue };
        let argv: Vec<String> = raw
            .split(|b| *b == 0)
            .filter(|a| !a.is_empty())
            .map(|a| String::from_utf8_lossy(a).into_owned())
            .collect();
        let named = argv.first().is_some_and(|p| p.ends_with(&format!("/{name}")));
        if named && argv.iter().any(|a| a.contains(&dir)) {
            return Component { pid, argv };
        }
    }
    panic!("no {name} of the cluster in {dir} runs in this test's namespace (needs e2e/cluster)");
}

fn gone(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Err(_) => true,
        // A zombie has ended; its parent has not collected it yet.
        Ok(stat) => stat.rsplit(") ").next().is_some_and(|rest| rest.starts_with('Z')),
    }
}

/// Stops `name` (SIGTERM, then waits for it to end) and starts it again with the same
/// command line, its output appended to its log. Returns how long it was down for.
async fn restart(name: &str) -> Instant {
    use std::os::unix::process::CommandExt;
    let c = component(name);
    let stopped = Instant::now();
    let status = std::process::Command::new("kill").arg(c.pid.to_string()).status().unwrap();
    assert!(status.success(), "kill {name}");
    let deadline = Instant::now() + Duration::from_secs(60);
    while !gone(c.pid) {
        assert!(Instant::now() < deadline, "{name} did not stop within 60 s of SIGTERM");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let log = std::fs::OpenOptions::new()
        .append(true)
        .create(true)
        .open(cluster_dir().join("logs").join(format!("{name}.log")))
        .unwrap();
    // Its own process group: it outlives this test, until the cluster's namespace ends (whose
    // first process then collects it); while the test runs, a thread waits for it.
    let mut child = std::process::Command::new(&c.argv[0])
        .args(&c.argv[1..])
        .stdin(std::process::Stdio::null())
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .process_group(0)
        .spawn()
        .unwrap_or_else(|e| panic!("starting {name} again: {e}"));
    std::thread::spawn(move || child.wait());
    stopped
}

/// Waits until the API server answers a list of MCPServers (it is up and reaches etcd).
async fn serving(client: &Client, since: Instant) -> Duration {
    let api: Api<MCPServer> = Api::all(client.clone());
    let deadline = Instant::now() + Duration::from_secs(180);
    loop {
        if api.list(&Default::default()).await.is_ok() {
            return since.elapsed();
        }
        assert!(Instant::now() < deadline, "the API server did not serve again within 180 s");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

fn server(name: &str, ns: &str, shard: &str) -> MCPServer {
    let mut m: MCPServer = load_yaml("examples/everything-http.yaml").unwrap();
    m.metadata.name = Some(name.to_string());
    m.metadata.namespace = Some(ns.to_string());
    m.metadata.labels =
        Some(BTreeMap::from([("palisade.dev/e2e-shard".to_string(), shard.to_string())]));
    m
}

async fn create(api: &Api<MCPServer>, ns: &str, shard: &str, names: std::ops::Range<usize>) {
    for i in names {
        let name = format!("s{i}");
        // The API server may still be settling: retried, never skipped.
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            match api.create(&PostParams::default(), &server(&name, ns, shard)).await {
                Ok(_) => break,
                Err(kube::Error::Api(e)) if e.code == 409 => break,
                Err(e) => {
                    assert!(Instant::now() < deadline, "creating {name}: {e}");
                    tokio::time::sleep(Duration::from_millis(500)).await;
                }
            }
        }
    }
}

fn ready(s: &MCPServer) -> bool {
    s.status.as_ref().is_some_and(|st| {
        st.conditions.iter().any(|c| c.type_ == "Ready" && c.status == "True")
            && st.observed_generation == s.metadata.generation
    })
}

#[tokio::test]
async fn api_server_and_etcd_restarts_during_reconciles_lose_nothing() {
    const FIRST: usize = 12;
    const BETWEEN: usize = 6;
    const AFTER: usize = 4;
    let total = FIRST + BETWEEN + AFTER;
    let cluster = Cluster::shared().await;
    let client = cluster.client().await.unwrap();
    install_crds(&client).await.unwrap();
    let ns = TestNamespace::create(&client, "e2e-faults").await.unwrap();
    let shard = ns.name.clone();
    let mut operator = Operator::start(cluster, &ns.name, &shard, &[]).await.unwrap();
    let api: Api<MCPServer> = Api::namespaced(client.clone(), &ns.name);

    // The API server restarts while the first servers are being reconciled.
    create(&api, &ns.name, &shard, 0..FIRST).await;
    let apiserver_down = serving(&client, restart("kube-apiserver").await).await;
    create(&api, &ns.name, &shard, FIRST..FIRST + BETWEEN).await;
    // etcd restarts under a serving API server, with more reconciles under way.
    let etcd_down = serving(&client, restart("etcd").await).await;
    create(&api, &ns.name, &shard, FIRST + BETWEEN..total).await;

    // Every server converges; an operator that lost its lease is started again.
    let started = Instant::now();
    let deadline = started + Duration::from_secs(300);
    let mut restarts = vec![];
    loop {
        if let Some(status) = operator.exited() {
            restarts.push(status.to_string());
            operator = Operator::start(cluster, &ns.name, &shard, &[]).await.unwrap();
        }
        let list = api.list(&Default::default()).await.map(|l| l.items).unwrap_or_default();
        let done = list.iter().filter(|s| ready(s)).count();
        if done == total {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{done} of {total} servers Ready 300 s after the restarts; operator exits: {restarts:?}; \
             not ready: {:?}",
            list.iter().filter(|s| !ready(s)).map(|s| s.name_any()).collect::<Vec<_>>()
        );
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    eprintln!(
        "faults: API server restart served again after {apiserver_down:?}, etcd restart after \
         {etcd_down:?}; {total} servers Ready {:?} after the last restart; operator exits: {restarts:?}",
        started.elapsed()
    );
    // Nothing lost: each server's children are there.
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), &ns.name);
    let policies: Api<NetworkPolicy> = Api::namespaced(client.clone(), &ns.name);
    for i in 0..total {
        let name = format!("s{i}");
        deployments.get(&name).await.unwrap_or_else(|e| panic!("{name}'s Deployment: {e}"));
        policies
            .get(&format!("{name}-default-deny"))
            .await
            .unwrap_or_else(|e| panic!("{name}'s default-deny NetworkPolicy: {e}"));
    }
    drop(operator);
    ns.delete().await.unwrap();
}
