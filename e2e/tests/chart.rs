//! The Helm chart: lints, renders the committed manifests, installs with the real helm, and its
//! RBAC is enough for the operator and the webhook, which then run as the chart's
//! ServiceAccounts (as local processes: the simulated nodes run no containers).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use kube::api::{Api, PostParams};
use palisade_crds::MCPServer;
use palisade_e2e::{
    CHART_TEST_IMAGES, Cluster, Operator, TestNamespace, Webhook, eventually, free_port,
    install_crds, kubectl, load_yaml, repo_root, service_account_kubeconfig, tool,
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
async fn chart_lints_refuses_unpinned_images_and_keeps_its_crds() {
    let cluster = Cluster::shared().await;
    let mut args = vec!["lint", "charts/palisade"];
    args.extend(CHART_TEST_IMAGES);
    let lint = helm(cluster, &args).await;
    assert!(lint.status.success(), "{}", String::from_utf8_lossy(&lint.stdout));
    let template = [
        "template",
        "palisade",
        "charts/palisade",
        "--namespace",
        "palisade-system",
        "--kube-version",
        "1.33.0",
    ];
    // No default image can pull: without digests the render stops and names the value to set.
    let bare = helm(cluster, &template).await;
    let err = String::from_utf8_lossy(&bare.stderr);
    assert!(!bare.status.success() && err.contains("operator.image is required"), "{err}");
    let zeros = format!("gateway.image=r.example/g@sha256:{}", "0".repeat(64));
    let mut args = template.to_vec();
    args.extend([CHART_TEST_IMAGES[0], CHART_TEST_IMAGES[1], "--set", &zeros]);
    let placeholder = helm(cluster, &args).await;
    let err = String::from_utf8_lossy(&placeholder.stderr);
    assert!(!placeholder.status.success() && err.contains("placeholder digest"), "{err}");
    let mut args = template.to_vec();
    args.extend([
        CHART_TEST_IMAGES[0],
        CHART_TEST_IMAGES[1],
        "--set",
        "gateway.image=r.example/g:1.0",
    ]);
    let tagged = helm(cluster, &args).await;
    let err = String::from_utf8_lossy(&tagged.stderr);
    assert!(
        !tagged.status.success() && err.contains("/gateway/image"),
        "values.schema.json: {err}"
    );
    // Pinned: the CRDs are templates that `helm upgrade` updates and `helm uninstall` keeps.
    let mut args = template.to_vec();
    args.extend(CHART_TEST_IMAGES);
    let out = helm(cluster, &args).await;
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let text = String::from_utf8_lossy(&out.stdout);
    let crds: Vec<&str> =
        text.split("\n---\n").filter(|d| d.contains("kind: CustomResourceDefinition")).collect();
    // Every CRD of the repository (crds/, generated from the Rust types), and no other.
    let mut ours: Vec<String> = std::fs::read_dir(repo_root().join("crds"))
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter_map(|f| Some(f.strip_suffix(".yaml")?.split_once('_')?.1.to_string()))
        .collect();
    ours.sort();
    let mut rendered: Vec<String> = crds
        .iter()
        .filter_map(|d| d.lines().find_map(|l| l.trim().strip_prefix("plural: ")))
        .map(str::to_string)
        .collect();
    rendered.sort();
    assert_eq!(rendered, ours, "every CRD is rendered");
    assert!(crds.iter().all(|d| d.contains("helm.sh/resource-policy: keep")));
    let mut args = template.to_vec();
    args.extend(CHART_TEST_IMAGES);
    args.extend(["--set", "crds.install=false"]);
    let out = helm(cluster, &args).await;
    assert!(!String::from_utf8_lossy(&out.stdout).contains("kind: CustomResourceDefinition"));
    // The optional ServiceMonitor: refused without the prometheus-operator API, rendered with it.
    let mut args = template.to_vec();
    args.extend(CHART_TEST_IMAGES);
    args.extend(["--set", "metrics.serviceMonitor.enabled=true"]);
    let without = helm(cluster, &args).await;
    let err = String::from_utf8_lossy(&without.stderr);
    assert!(!without.status.success() && err.contains("prometheus-operator"), "{err}");
    args.extend(["--api-versions", "monitoring.coreos.com/v1/ServiceMonitor"]);
    let with = helm(cluster, &args).await;
    let text = String::from_utf8_lossy(&with.stdout);
    assert!(with.status.success() && text.contains("kind: ServiceMonitor"), "{text}");
    let cm = helm(
        cluster,
        &[
            "template",
            "palisade",
            "charts/palisade",
            "--namespace",
            "x",
            "--kube-version",
            "1.33.0",
            "--set",
            "webhook.certManager.enabled=true",
            CHART_TEST_IMAGES[0],
            CHART_TEST_IMAGES[1],
            CHART_TEST_IMAGES[2],
            CHART_TEST_IMAGES[3],
        ],
    )
    .await;
    let text = String::from_utf8_lossy(&cm.stdout);
    assert!(
        text.contains("kind: Certificate")
            && text.contains("cert-manager.io/inject-ca-from: x/palisade-webhook")
    );
    assert!(
        !text.contains("--webhook-configuration=palisade"),
        "with cert-manager the webhook leaves the caBundle alone"
    );
}

/// Uninstalls the release when the test ends, even when it fails: its webhook configuration
/// would otherwise stay behind for the other test binaries.
struct Release {
    kubeconfig: PathBuf,
    namespace: String,
}

impl Drop for Release {
    fn drop(&mut self) {
        let _ = std::process::Command::new(tool("helm").unwrap())
            .args(["uninstall", "palisade", "--namespace", &self.namespace])
            .env("KUBECONFIG", &self.kubeconfig)
            .output();
    }
}

#[tokio::test]
async fn the_operator_and_webhook_work_with_the_charts_rbac() {
    let cluster = Cluster::shared().await;
    let client = cluster.client().await.unwrap();
    install_crds(&client).await.unwrap();
    let ns = TestNamespace::create(&client, "e2e-chart").await.unwrap();
    let port = free_port();
    let url = format!("webhook.url=https://127.0.0.1:{port}");
    let install = helm(
        cluster,
        &[
            "install",
            "palisade",
            "charts/palisade",
            "--namespace",
            &ns.name,
            "--set",
            "crds.install=false",
            "--set",
            &url,
            CHART_TEST_IMAGES[0],
            CHART_TEST_IMAGES[1],
            CHART_TEST_IMAGES[2],
            CHART_TEST_IMAGES[3],
        ],
    )
    .await;
    assert!(install.status.success(), "{}", String::from_utf8_lossy(&install.stderr));
    let _release = Release { kubeconfig: cluster.kubeconfig.clone(), namespace: ns.name.clone() };

    let webhook_kc =
        service_account_kubeconfig(cluster, &ns.name, "palisade-webhook").await.unwrap();
    let _webhook = Webhook::start_with_kubeconfig(&webhook_kc, &ns.name, port, &[]).await.unwrap();
    let operator_kc =
        service_account_kubeconfig(cluster, &ns.name, "palisade-operator").await.unwrap();
    let shard = ns.name.clone();
    let _op = Operator::start_with_kubeconfig(&operator_kc, &ns.name, &shard, &[]).await.unwrap();

    let mut server: MCPServer = load_yaml("examples/everything-http.yaml").unwrap();
    server.metadata.namespace = Some(ns.name.clone());
    server.metadata.labels =
        Some(BTreeMap::from([("palisade.dev/e2e-shard".to_string(), shard.clone())]));
    let api: Api<MCPServer> = Api::namespaced(client.clone(), &ns.name);
    // The webhook (with its chart identity) publishes the caBundle, then admits the server.
    eventually(Duration::from_secs(40), "admitted through the chart's webhook", || async {
        api.create(&PostParams::default(), &server).await.ok()
    })
    .await
    .unwrap();
    eventually(Duration::from_secs(60), "Ready with the chart's RBAC", || async {
        let s = api.get("everything").await.ok()?;
        s.status?.conditions.iter().any(|c| c.type_ == "Ready" && c.status == "True").then_some(())
    })
    .await
    .unwrap();
    let rejected = std::fs::read_to_string(repo_root().join("examples/rejected/egress-smtp.yaml"))
        .unwrap()
        .replace("namespace: mcp-demo", &format!("namespace: {}", ns.name));
    let (ok, out) = kubectl(cluster, &["apply", "-f", "-"], Some(&rejected)).await.unwrap();
    assert!(!ok && out.contains("[baseline.riskyPort]"), "{out}");
    drop(_release);
    ns.delete().await.unwrap();
}
