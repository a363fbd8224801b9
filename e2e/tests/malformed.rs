//! A stored MCPServer that the operator's types cannot read (as after a CRD change) is reported
//! on the object and never crashes or stalls the operator. Its own test binary: it loosens the
//! CRD for a moment, which no other test may observe.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::time::Duration;

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, DynamicObject, Patch, PatchParams, PostParams};
use palisade_crds::MCPServer;
use palisade_e2e::{Cluster, Operator, TestNamespace, eventually, install_crds, load_yaml};
use serde_json::json;

#[tokio::test]
async fn unreadable_objects_are_reported_not_fatal() {
    let cluster = Cluster::shared().await;
    let client = cluster.client().await.unwrap();
    install_crds(&client).await.unwrap();
    let ns = TestNamespace::create(&client, "e2e-malformed").await.unwrap();
    let shard = ns.name.clone();

    // An older, looser schema: spec is free-form.
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    let mut loose =
        serde_json::to_value(<palisade_crds::MCPServer as kube::CustomResourceExt>::crd()).unwrap();
    loose["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"] =
        json!({"type": "object", "x-kubernetes-preserve-unknown-fields": true});
    crds.patch(
        "mcpservers.palisade.dev",
        &PatchParams::apply("palisade-e2e").force(),
        &Patch::Apply(&loose),
    )
    .await
    .unwrap();
    let ar = kube::core::ApiResource::from_gvk_with_plural(
        &kube::core::GroupVersionKind::gvk("palisade.dev", "v1alpha1", "MCPServer"),
        "mcpservers",
    );
    let dynamic: Api<DynamicObject> = Api::namespaced_with(client.clone(), &ns.name, &ar);
    let bad: DynamicObject = serde_json::from_value(json!({
        "apiVersion": "palisade.dev/v1alpha1", "kind": "MCPServer",
        "metadata": {"name": "unreadable", "labels": {"palisade.dev/e2e-shard": shard}},
        "spec": {"transport": "stdio", "replicas": "many"}
    }))
    .unwrap();
    let created = eventually(Duration::from_secs(20), "loose schema served", || async {
        dynamic.create(&PostParams::default(), &bad).await.ok()
    })
    .await
    .unwrap();
    assert_eq!(created.data["spec"]["replicas"], "many");
    install_crds(&client).await.unwrap();

    let op = Operator::start(cluster, &ns.name, &shard, &[]).await.unwrap();
    let mut good: MCPServer = load_yaml("examples/weather-sse.yaml").unwrap();
    good.metadata.namespace = Some(ns.name.clone());
    good.metadata.labels =
        Some(BTreeMap::from([("palisade.dev/e2e-shard".to_string(), shard.clone())]));
    let servers: Api<MCPServer> = Api::namespaced(client.clone(), &ns.name);
    servers.create(&PostParams::default(), &good).await.unwrap();

    let reason = eventually(Duration::from_secs(60), "InvalidSpec condition", || async {
        let o = dynamic.get("unreadable").await.ok()?;
        let c = o.data.pointer("/status/conditions/0")?.clone();
        (c["reason"] == "InvalidSpec").then_some(c)
    })
    .await
    .unwrap();
    assert!(reason["message"].as_str().unwrap().contains("cannot be read"), "{reason}");
    eventually(Duration::from_secs(60), "the valid server still becomes Ready", || async {
        let s = servers.get("weather").await.ok()?;
        s.status?.conditions.iter().any(|c| c.type_ == "Ready" && c.status == "True").then_some(())
    })
    .await
    .unwrap();
    assert!(
        op.metric("palisade_operator_reconciles_total").await.is_some(),
        "the operator is still serving"
    );
    ns.delete().await.unwrap();
}
