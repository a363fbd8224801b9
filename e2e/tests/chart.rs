//! The Helm chart: lints, renders the committed manifests, installs with the real helm, and its
//! RBAC is enough for the operator (which then runs as the chart's ServiceAccount).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::time::Duration;

use kube::api::{Api, PostParams};
use palisade_api::MCPServer;
use palisade_e2e::{
    Cluster, Operator, TestNamespace, eventually, install_crds, load_yaml, repo_root,
    service_account_kubeconfig, tool,
};

async fn helm(cluster: &Cluster, args: &[&str]) -> std::process::Output {
    tokio::process::Command::new(tool("helm").unwrap())
        .args(args)
        .env("KUBECONFIG", &cluster.kubeconfig)
        .current_dir(repo_root())
        .output()
        .await
        .unwrap()
}

#[tokio::test]
async fn chart_lints_and_the_committed_manifests_are_current() {
    let cluster = Cluster::shared().await;
    let lint = helm(cluster, &["lint", "charts/palisade"]).await;
    assert!(lint.status.success(), "{}", String::from_utf8_lossy(&lint.stdout));
    let out = helm(
        cluster,
        &[
            "template",
            "palisade",
            "charts/palisade",
            "--namespace",
            "palisade-system",
            "--include-crds",
            "--kube-version",
            "1.33.0",
        ],
    )
    .await;
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let committed = std::fs::read_to_string(repo_root().join("manifests/install.yaml")).unwrap();
    assert!(
        String::from_utf8_lossy(&out.stdout) == committed,
        "manifests/install.yaml is out of date: run `make manifests`"
    );
}

#[tokio::test]
async fn the_operator_works_with_the_charts_rbac() {
    let cluster = Cluster::shared().await;
    let client = cluster.client().await.unwrap();
    install_crds(&client).await.unwrap();
    let ns = TestNamespace::create(&client, "e2e-chart").await.unwrap();
    let install = helm(
        cluster,
        &[
            "install",
            "palisade",
            "charts/palisade",
            "--namespace",
            &ns.name,
            "--skip-crds",
            "--wait=false",
        ],
    )
    .await;
    assert!(install.status.success(), "{}", String::from_utf8_lossy(&install.stderr));

    let kubeconfig =
        service_account_kubeconfig(cluster, &ns.name, "palisade-operator").await.unwrap();
    let shard = ns.name.clone();
    let _op = Operator::start_with_kubeconfig(&kubeconfig, &ns.name, &shard, &[]).await.unwrap();
    let mut server: MCPServer = load_yaml("examples/everything-http.yaml").unwrap();
    server.metadata.namespace = Some(ns.name.clone());
    server.metadata.labels =
        Some(BTreeMap::from([("palisade.dev/e2e-shard".to_string(), shard.clone())]));
    let api: Api<MCPServer> = Api::namespaced(client.clone(), &ns.name);
    api.create(&PostParams::default(), &server).await.unwrap();
    eventually(Duration::from_secs(60), "Ready with the chart's RBAC", || async {
        let s = api.get("everything").await.ok()?;
        s.status?.conditions.iter().any(|c| c.type_ == "Ready" && c.status == "True").then_some(())
    })
    .await
    .unwrap();
    let uninstall = helm(cluster, &["uninstall", "palisade", "--namespace", &ns.name]).await;
    assert!(uninstall.status.success());
    ns.delete().await.unwrap();
}
