//! The API on a real API server: the generated CRDs install (structural schema and CEL rules
//! accepted), valid objects are stored with defaults, invalid ones are refused by the schema.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, DeleteParams, PostParams};
use palisade_crds::{MCPPolicy, MCPServer};
use palisade_e2e::{Cluster, TestNamespace, eventually, install_crds, load_yaml};

async fn setup(prefix: &str) -> (kube::Client, TestNamespace) {
    let cluster = Cluster::shared().await;
    let client = cluster.client().await.unwrap();
    install_crds(&client).await.unwrap();
    let ns = TestNamespace::create(&client, prefix).await.unwrap();
    (client, ns)
}

fn in_ns(mut s: MCPServer, ns: &str) -> MCPServer {
    s.metadata.namespace = Some(ns.to_string());
    s
}

#[tokio::test]
async fn crds_are_established_with_structural_schemas() {
    let cluster = Cluster::shared().await;
    let client = cluster.client().await.unwrap();
    install_crds(&client).await.unwrap();
    use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
    let api: Api<CustomResourceDefinition> = Api::all(client);
    for (_, crd) in palisade_crds::crds() {
        let got = api.get(crd.metadata.name.as_deref().unwrap()).await.unwrap();
        let conds = got.status.unwrap().conditions.unwrap();
        assert!(conds.iter().any(|c| c.type_ == "Established" && c.status == "True"));
        assert!(!conds.iter().any(|c| c.type_ == "NonStructuralSchema"), "{conds:?}");
    }
}

#[tokio::test]
async fn valid_servers_are_stored_with_defaults() {
    let (client, ns) = setup("e2e-valid").await;
    let api: Api<MCPServer> = Api::namespaced(client.clone(), &ns.name);
    for file in [
        "examples/everything-http.yaml",
        "examples/filesystem-stdio.yaml",
        "examples/weather-sse.yaml",
    ] {
        let s = in_ns(load_yaml::<MCPServer>(file).unwrap(), &ns.name);
        let created = api.create(&PostParams::default(), &s).await.unwrap();
        assert_eq!(created.spec.image, s.spec.image, "{file}");
        assert_eq!(created.spec.tools, s.spec.tools, "{file}");
    }
    // Defaults from the schema are applied by the API server.
    let raw: serde_json::Value = client
        .request(http_get(&format!(
            "/apis/palisade.dev/v1alpha1/namespaces/{}/mcpservers/weather",
            ns.name
        )))
        .await
        .unwrap();
    assert_eq!(raw["spec"]["limits"]["maxMessageBytes"], 1048576);
    assert_eq!(raw["spec"]["audit"]["enabled"], true);
    assert_eq!(raw["spec"]["toolDefaults"]["unlisted"], "Deny");
    assert_eq!(raw["spec"]["replicas"], 1);
    // Cluster-scoped: a name of its own so that parallel tests do not collide.
    let mut policy: MCPPolicy = load_yaml("examples/policy.yaml").unwrap();
    policy.metadata.name = Some(ns.name.clone());
    let papi: Api<MCPPolicy> = Api::all(client.clone());
    let stored = papi.create(&PostParams::default(), &policy).await.unwrap();
    assert_eq!(stored.spec, policy.spec);
    papi.delete(&ns.name, &DeleteParams::default()).await.unwrap();
    ns.delete().await.unwrap();
}

fn http_get(path: &str) -> http::Request<Vec<u8>> {
    http::Request::get(path).body(vec![]).unwrap()
}

/// Each case: a mutation of a valid spec and the schema's message for it.
#[tokio::test]
async fn invalid_servers_are_refused_by_the_schema() {
    let (client, ns) = setup("e2e-invalid").await;
    let api: Api<MCPServer> = Api::namespaced(client.clone(), &ns.name);
    let base = in_ns(load_yaml::<MCPServer>("examples/everything-http.yaml").unwrap(), &ns.name);
    type Mutation = Box<dyn Fn(&mut serde_json::Value)>;
    let cases: Vec<(&str, Mutation)> = vec![
        (
            "pin the image by digest",
            Box::new(|v| v["spec"]["image"] = "docker.io/mcp/everything:latest".into()),
        ),
        (
            "pin the image by digest",
            Box::new(|v| v["spec"]["image"] = "docker.io/mcp/everything".into()),
        ),
        (
            "stdio servers need spec.command",
            Box::new(|v| {
                v["spec"]["transport"] = "stdio".into();
                v["spec"].as_object_mut().unwrap().remove("command");
                v["spec"].as_object_mut().unwrap().remove("port");
                v["spec"].as_object_mut().unwrap().remove("path");
            }),
        ),
        (
            "HTTP transports need spec.port",
            Box::new(|v| {
                v["spec"].as_object_mut().unwrap().remove("port");
            }),
        ),
        ("configure oidc, mtls or both", Box::new(|v| v["spec"]["auth"] = serde_json::json!({}))),
        ("must be a CIDR", Box::new(|v| v["spec"]["egress"][0]["cidr"] = "not-a-cidr".into())),
        (
            "set exactly one of cidr or host",
            Box::new(|v| v["spec"]["egress"][0]["host"] = "example.com".into()),
        ),
        (
            "destructive tools require approval",
            Box::new(|v| {
                v["spec"]["tools"][0]["effect"] = "destructive".into();
                v["spec"]["tools"][0]["requireApproval"] = false.into();
            }),
        ),
        (
            "Unsupported value: \"websocket\"",
            Box::new(|v| v["spec"]["transport"] = "websocket".into()),
        ),
        (
            "Unsupported value: \"2025-06-19\"",
            Box::new(|v| v["spec"]["protocol"]["versions"] = serde_json::json!(["2025-06-19"])),
        ),
        (
            "unknown field \"spec.hostNetwork\"",
            Box::new(|v| v["spec"]["hostNetwork"] = true.into()),
        ),
    ];
    for (i, (want, mutate)) in cases.into_iter().enumerate() {
        let mut v = serde_json::to_value(&base).unwrap();
        v["metadata"]["name"] = format!("invalid-{i}").into();
        mutate(&mut v);
        let err = create_raw(&client, &ns.name, &v, false).await.unwrap_err();
        assert!(err.contains(want), "case {i}: expected {want:?} in {err}");
    }
    assert!(api.list(&Default::default()).await.unwrap().items.is_empty(), "nothing was stored");
    ns.delete().await.unwrap();
}

/// Creates an MCPServer from raw JSON with strict field validation (as kubectl does).
async fn create_raw(
    client: &kube::Client,
    ns: &str,
    v: &serde_json::Value,
    dry_run: bool,
) -> Result<serde_json::Value, String> {
    let mut path =
        format!("/apis/palisade.dev/v1alpha1/namespaces/{ns}/mcpservers?fieldValidation=Strict");
    if dry_run {
        path.push_str("&dryRun=All");
    }
    let req = http::Request::post(path)
        .header("content-type", "application/json")
        .body(serde_json::to_vec(v).unwrap())
        .unwrap();
    client.request::<serde_json::Value>(req).await.map_err(|e| e.to_string())
}

#[tokio::test]
async fn server_side_dry_run_validates_without_storing() {
    let (client, ns) = setup("e2e-dryrun").await;
    let api: Api<MCPServer> = Api::namespaced(client.clone(), &ns.name);
    let s = in_ns(load_yaml::<MCPServer>("examples/filesystem-stdio.yaml").unwrap(), &ns.name);
    let v = serde_json::to_value(&s).unwrap();
    let created = create_raw(&client, &ns.name, &v, true).await.unwrap();
    assert_eq!(created["metadata"]["name"], "filesystem");
    assert_eq!(created["spec"]["limits"]["maxInFlight"], 256, "defaults applied in dry run");
    assert!(api.get_opt("filesystem").await.unwrap().is_none(), "dry run stored the object");
    let mut bad = v.clone();
    bad["spec"]["image"] = "docker.io/mcp/filesystem:latest".into();
    let err = create_raw(&client, &ns.name, &bad, true).await.unwrap_err();
    assert!(err.contains("pin the image by digest"), "{err}");
    ns.delete().await.unwrap();
}

#[tokio::test]
async fn pods_are_scheduled_to_kwok_nodes_and_run() {
    let (client, ns) = setup("e2e-pods").await;
    let pods: Api<Pod> = Api::namespaced(client.clone(), &ns.name);
    let pod: Pod = serde_json::from_value(serde_json::json!({
        "metadata": { "name": "probe" },
        "spec": {
            "automountServiceAccountToken": false,
            "containers": [{ "name": "c", "image": "registry.example/probe@sha256:0000000000000000000000000000000000000000000000000000000000000000" }]
        }
    }))
    .unwrap();
    pods.create(&PostParams::default(), &pod).await.unwrap();
    let (node, phase) = eventually(Duration::from_secs(60), "pod Running", || async {
        let p = pods.get("probe").await.ok()?;
        let node = p.spec?.node_name?;
        let phase = p.status?.phase?;
        (phase == "Running").then_some((node, phase))
    })
    .await
    .unwrap();
    assert!(node.starts_with("kwok-node-"), "{node}");
    assert_eq!(phase, "Running");
    ns.delete().await.unwrap();
}
