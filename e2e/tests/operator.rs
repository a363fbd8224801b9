//! The operator on a real control plane: hardened children for every transport, drift
//! correction, roll-outs, no writes when idle, garbage collection, leader election and tag
//! resolution through a real registry.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::time::Duration;

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{ConfigMap, Pod, Secret, Service, ServiceAccount};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::{Client, ResourceExt};
use palisade_admission::rules::pss;
use palisade_crds::{MCPPolicy, MCPServer};
use palisade_e2e::{
    Cluster, Operator, Registry, TestNamespace, cosign, cosign_attest, cosign_sign, eventually,
    install_crds, load_yaml, palisade_bin, signed_images,
};
use serde_json::json;

const WAIT: Duration = Duration::from_secs(60);

struct Setup {
    client: Client,
    ns: TestNamespace,
    operator: Operator,
    shard: String,
}

async fn setup(prefix: &str, extra: &[&str]) -> Setup {
    let cluster = Cluster::shared().await;
    let client = cluster.client().await.unwrap();
    install_crds(&client).await.unwrap();
    let ns = TestNamespace::create(&client, prefix).await.unwrap();
    let shard = ns.name.clone();
    let operator = Operator::start(cluster, &ns.name, &shard, extra).await.unwrap();
    Setup { client, ns, operator, shard }
}

/// An example MCPServer placed in the test namespace and shard.
fn example(file: &str, s: &Setup) -> MCPServer {
    example_in(file, &s.ns.name, &s.shard)
}

fn example_in(file: &str, ns: &str, shard: &str) -> MCPServer {
    let mut m: MCPServer = load_yaml(file).unwrap();
    m.metadata.namespace = Some(ns.to_string());
    m.metadata.labels =
        Some(BTreeMap::from([("palisade.dev/e2e-shard".to_string(), shard.to_string())]));
    m
}

async fn wait_ready(api: &Api<MCPServer>, name: &str) -> MCPServer {
    eventually(WAIT, &format!("{name} Ready"), || async {
        let s = api.get(name).await.ok()?;
        let st = s.status.as_ref()?;
        let ready = st.conditions.iter().any(|c| c.type_ == "Ready" && c.status == "True");
        (ready && st.observed_generation == s.metadata.generation).then_some(s)
    })
    .await
    .unwrap()
}

#[tokio::test]
async fn every_transport_becomes_a_hardened_running_workload() {
    let s = setup("e2e-op-transports", &[]).await;
    let api: Api<MCPServer> = Api::namespaced(s.client.clone(), &s.ns.name);
    let files = [
        "examples/everything-http.yaml",
        "examples/filesystem-stdio.yaml",
        "examples/weather-sse.yaml",
    ];
    for f in files {
        api.create(&PostParams::default(), &example(f, &s)).await.unwrap();
    }
    let n = &s.ns.name;
    let c = &s.client;
    for name in ["everything", "filesystem", "weather"] {
        let server = wait_ready(&api, name).await;
        let status = server.status.clone().unwrap();
        assert_eq!(
            status.endpoint.as_deref(),
            Some(format!("https://{name}.{n}.svc.cluster.local:8443/mcp").as_str())
        );
        assert!(status.image.unwrap().digest.starts_with("sha256:"));
        let verified = status.conditions.iter().find(|c| c.type_ == "ImageVerified").unwrap();
        // The signed stand-in's cosign signature, checked with the run's public key.
        assert_eq!(
            (verified.status.as_str(), verified.reason.as_str()),
            ("True", "SignatureVerified"),
            "{name}: {}",
            verified.message
        );
        assert!(
            status.conditions.iter().any(|c| c.type_ == "PolicyCompliant" && c.status == "True")
        );

        let sa = Api::<ServiceAccount>::namespaced(c.clone(), n).get(name).await.unwrap();
        assert_eq!(sa.automount_service_account_token, Some(false));
        let d = Api::<Deployment>::namespaced(c.clone(), n).get(name).await.unwrap();
        assert_eq!(d.owner_references()[0].uid, server.metadata.uid.clone().unwrap());
        let pod_spec = d.spec.unwrap().template.spec.unwrap();
        let verdict = pss::check_pod_spec(&pod_spec, None, "spec.template.spec");
        assert!(verdict.allowed(), "{name}: live Deployment violates: {}", verdict.message());
        for np in ["default-deny", "ingress", "egress"] {
            Api::<NetworkPolicy>::namespaced(c.clone(), n)
                .get(&format!("{name}-{np}"))
                .await
                .unwrap();
        }
        let svc = Api::<Service>::namespaced(c.clone(), n).get(name).await.unwrap();
        let svc_spec = svc.spec.unwrap();
        // Sessions and approvals live in one gateway replica: clients stick to it.
        assert_eq!(svc_spec.session_affinity.as_deref(), Some("ClientIP"));
        let ports = svc_spec.ports.unwrap();
        assert_eq!(ports.iter().map(|p| p.port).collect::<Vec<_>>(), vec![8443]);
        Api::<ConfigMap>::namespaced(c.clone(), n).get(&format!("{name}-gateway")).await.unwrap();
        let tls = Api::<Secret>::namespaced(c.clone(), n)
            .get(&format!("{name}-gateway-tls"))
            .await
            .unwrap();
        assert_eq!(tls.type_.as_deref(), Some("kubernetes.io/tls"));

        let pods = Api::<Pod>::namespaced(c.clone(), n)
            .list(&ListParams::default().labels(&format!("palisade.dev/mcp-server={name}")))
            .await
            .unwrap();
        assert_eq!(pods.items.len() as i32, server.spec.replicas, "{name}");
        for p in pods.items {
            assert_eq!(p.status.unwrap().phase.as_deref(), Some("Running"));
            assert!(p.spec.unwrap().node_name.unwrap().starts_with("kwok-node-"));
        }
    }
    let pdb = Api::<PodDisruptionBudget>::namespaced(c.clone(), n);
    assert!(pdb.get_opt("everything").await.unwrap().is_some(), "2 replicas get a PDB");
    assert!(pdb.get_opt("weather").await.unwrap().is_none());
    s.ns.delete().await.unwrap();
}

#[tokio::test]
async fn hand_edits_and_deletions_are_reverted() {
    let s = setup("e2e-op-drift", &[]).await;
    let api: Api<MCPServer> = Api::namespaced(s.client.clone(), &s.ns.name);
    api.create(&PostParams::default(), &example("examples/weather-sse.yaml", &s)).await.unwrap();
    wait_ready(&api, "weather").await;
    let deploys: Api<Deployment> = Api::namespaced(s.client.clone(), &s.ns.name);
    let nps: Api<NetworkPolicy> = Api::namespaced(s.client.clone(), &s.ns.name);

    // As `kubectl edit` would: another field manager weakens the security context.
    let weaken = json!([
        {"op": "replace", "path": "/spec/template/spec/containers/0/securityContext/readOnlyRootFilesystem", "value": false},
        {"op": "replace", "path": "/spec/template/spec/containers/0/securityContext/allowPrivilegeEscalation", "value": true}
    ]);
    deploys
        .patch(
            "weather",
            &PatchParams::default(),
            &Patch::<()>::Json(serde_json::from_value(weaken).unwrap()),
        )
        .await
        .unwrap();
    nps.delete("weather-egress", &DeleteParams::default()).await.unwrap();

    eventually(Duration::from_secs(20), "security context restored", || async {
        let d = deploys.get("weather").await.ok()?;
        let sc = d.spec?.template.spec?.containers[0].security_context.clone()?;
        (sc.read_only_root_filesystem == Some(true) && sc.allow_privilege_escalation == Some(false))
            .then_some(())
    })
    .await
    .unwrap();
    eventually(Duration::from_secs(20), "egress policy restored", || async {
        nps.get_opt("weather-egress").await.ok()?.map(|_| ())
    })
    .await
    .unwrap();
    s.ns.delete().await.unwrap();
}

async fn children_versions(c: &Client, ns: &str, name: &str) -> Vec<String> {
    let mut v = vec![
        Api::<Deployment>::namespaced(c.clone(), ns)
            .get(name)
            .await
            .unwrap()
            .resource_version()
            .unwrap(),
        Api::<Service>::namespaced(c.clone(), ns)
            .get(name)
            .await
            .unwrap()
            .resource_version()
            .unwrap(),
        Api::<ServiceAccount>::namespaced(c.clone(), ns)
            .get(name)
            .await
            .unwrap()
            .resource_version()
            .unwrap(),
        Api::<ConfigMap>::namespaced(c.clone(), ns)
            .get(&format!("{name}-gateway"))
            .await
            .unwrap()
            .resource_version()
            .unwrap(),
        Api::<Secret>::namespaced(c.clone(), ns)
            .get(&format!("{name}-gateway-tls"))
            .await
            .unwrap()
            .resource_version()
            .unwrap(),
        Api::<MCPServer>::namespaced(c.clone(), ns)
            .get(name)
            .await
            .unwrap()
            .resource_version()
            .unwrap(),
    ];
    for np in ["default-deny", "ingress", "egress"] {
        v.push(
            Api::<NetworkPolicy>::namespaced(c.clone(), ns)
                .get(&format!("{name}-{np}"))
                .await
                .unwrap()
                .resource_version()
                .unwrap(),
        );
    }
    v
}

#[tokio::test]
async fn spec_changes_roll_out_and_idle_reconciles_write_nothing() {
    let s = setup("e2e-op-rollout", &[]).await;
    let api: Api<MCPServer> = Api::namespaced(s.client.clone(), &s.ns.name);
    api.create(&PostParams::default(), &example("examples/weather-sse.yaml", &s)).await.unwrap();
    wait_ready(&api, "weather").await;
    let cms: Api<ConfigMap> = Api::namespaced(s.client.clone(), &s.ns.name);
    let deploys: Api<Deployment> = Api::namespaced(s.client.clone(), &s.ns.name);
    let hash_of = |d: &Deployment| {
        d.spec.as_ref().unwrap().template.metadata.as_ref().unwrap().annotations.as_ref().unwrap()["palisade.dev/config-hash"].clone()
    };
    let config_before =
        cms.get("weather-gateway").await.unwrap().data.unwrap()["gateway.json"].clone();
    let hash_before = hash_of(&deploys.get("weather").await.unwrap());

    // A tool-policy change: the config and the pod template hash change, so pods roll.
    let patch = json!({"spec": {"tools": [
        {"name": "get_forecast", "effect": "read"},
        {"name": "get_alerts", "effect": "read"},
        {"name": "set_alert", "effect": "write"}
    ]}});
    api.patch("weather", &PatchParams::default(), &Patch::Merge(&patch)).await.unwrap();
    let new_hash = eventually(Duration::from_secs(30), "new config hash", || async {
        let h = hash_of(&deploys.get("weather").await.ok()?);
        (h != hash_before).then_some(h)
    })
    .await
    .unwrap();
    let config_after =
        cms.get("weather-gateway").await.unwrap().data.unwrap()["gateway.json"].clone();
    assert_ne!(config_after, config_before);
    assert!(config_after.contains("set_alert"));
    assert_eq!(new_hash, palisade_render::sha256_hex(config_after.as_bytes()));
    wait_ready(&api, "weather").await;

    // Let the roll-out settle, then force a reconcile without a spec change.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let versions = children_versions(&s.client, &s.ns.name, "weather").await;
    let writes = s.operator.metric("palisade_operator_api_writes_total").await.unwrap();
    let reconciles = s.operator.metric("palisade_operator_reconciles_total").await.unwrap();
    let nudge = json!({"metadata": {"annotations": {"e2e/nudge": "1"}}});
    api.patch("weather", &PatchParams::default(), &Patch::Merge(&nudge)).await.unwrap();
    eventually(Duration::from_secs(20), "a reconcile after the nudge", || async {
        let r = s.operator.metric("palisade_operator_reconciles_total").await?;
        (r > reconciles).then_some(())
    })
    .await
    .unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let writes_after = s.operator.metric("palisade_operator_api_writes_total").await.unwrap();
    assert_eq!(writes_after, writes, "an idle reconcile wrote to the API server");
    let mut after = children_versions(&s.client, &s.ns.name, "weather").await;
    // The nudge itself changed the MCPServer's resourceVersion; the children must not change.
    let server_idx = 5;
    after[server_idx] = versions[server_idx].clone();
    assert_eq!(after, versions, "children changed on an idle reconcile");
    s.ns.delete().await.unwrap();
}

#[tokio::test]
async fn deleting_the_server_removes_every_child() {
    let s = setup("e2e-op-delete", &[]).await;
    let api: Api<MCPServer> = Api::namespaced(s.client.clone(), &s.ns.name);
    api.create(&PostParams::default(), &example("examples/everything-http.yaml", &s))
        .await
        .unwrap();
    wait_ready(&api, "everything").await;
    api.delete("everything", &DeleteParams::foreground()).await.unwrap();
    let (c, n) = (s.client.clone(), s.ns.name.clone());
    eventually(WAIT, "children garbage-collected", || async {
        let gone = Api::<Deployment>::namespaced(c.clone(), &n)
            .get_opt("everything")
            .await
            .ok()?
            .is_none()
            && Api::<Service>::namespaced(c.clone(), &n)
                .get_opt("everything")
                .await
                .ok()?
                .is_none()
            && Api::<ServiceAccount>::namespaced(c.clone(), &n)
                .get_opt("everything")
                .await
                .ok()?
                .is_none()
            && Api::<ConfigMap>::namespaced(c.clone(), &n)
                .get_opt("everything-gateway")
                .await
                .ok()?
                .is_none()
            && Api::<Secret>::namespaced(c.clone(), &n)
                .get_opt("everything-gateway-tls")
                .await
                .ok()?
                .is_none()
            && Api::<PodDisruptionBudget>::namespaced(c.clone(), &n)
                .get_opt("everything")
                .await
                .ok()?
                .is_none()
            && Api::<NetworkPolicy>::namespaced(c.clone(), &n)
                .list(&ListParams::default())
                .await
                .ok()?
                .items
                .is_empty()
            && Api::<Pod>::namespaced(c.clone(), &n)
                .list(&ListParams::default())
                .await
                .ok()?
                .items
                .is_empty()
            && api.get_opt("everything").await.ok()?.is_none();
        gone.then_some(())
    })
    .await
    .unwrap();
    s.ns.delete().await.unwrap();
}

#[tokio::test]
async fn exactly_one_leader_reconciles_and_a_standby_takes_over() {
    let cluster = Cluster::shared().await;
    let client = cluster.client().await.unwrap();
    install_crds(&client).await.unwrap();
    let ns = TestNamespace::create(&client, "e2e-op-lease").await.unwrap();
    let shard = ns.name.clone();
    let a = Operator::start(cluster, &ns.name, &shard, &["--identity", "replica-a"]).await.unwrap();
    let b = Operator::start(cluster, &ns.name, &shard, &["--identity", "replica-b"]).await.unwrap();
    let leaders = || async {
        let la = a.metric("palisade_operator_leader").await.unwrap_or(0.0);
        let lb = b.metric("palisade_operator_leader").await.unwrap_or(0.0);
        (la, lb)
    };
    eventually(Duration::from_secs(30), "a leader", || async {
        let (la, lb) = leaders().await;
        (la + lb == 1.0).then_some(())
    })
    .await
    .unwrap();
    let (la, _) = leaders().await;
    let (mut leader, standby) = if la == 1.0 { (a, b) } else { (b, a) };

    let api: Api<MCPServer> = Api::namespaced(client.clone(), &ns.name);
    api.create(&PostParams::default(), &example_in("examples/weather-sse.yaml", &ns.name, &shard))
        .await
        .unwrap();
    wait_ready(&api, "weather").await;
    assert!(leader.metric("palisade_operator_reconciles_total").await.unwrap() > 0.0);
    assert_eq!(
        standby.metric("palisade_operator_reconciles_total").await.unwrap_or(0.0),
        0.0,
        "the standby reconciled"
    );
    assert_eq!(
        standby.metric("palisade_operator_api_writes_total").await.unwrap_or(0.0),
        0.0,
        "the standby wrote"
    );

    // Kill the leader without a chance to release the lease: the standby takes over when the
    // lease expires (15 s) and reconciles new work.
    leader.kill().await;
    eventually(Duration::from_secs(40), "standby becomes leader", || async {
        (standby.metric("palisade_operator_leader").await? == 1.0).then_some(())
    })
    .await
    .unwrap();
    api.create(
        &PostParams::default(),
        &example_in("examples/filesystem-stdio.yaml", &ns.name, &shard),
    )
    .await
    .unwrap();
    wait_ready(&api, "filesystem").await;
    assert!(standby.metric("palisade_operator_reconciles_total").await.unwrap() > 0.0);
    ns.delete().await.unwrap();
}

#[tokio::test]
async fn tags_are_resolved_once_through_a_real_registry() {
    let registry = Registry::start().await.unwrap();
    let digest = registry.push_random_image("mcp/tagged", "1.0.0").await.unwrap();
    assert!(digest.starts_with("sha256:"), "{digest}");
    // The example trusts the run's key: sign what the tag points to now.
    signed_images()
        .expect("e2e/run-tests provides signed images")
        .sign(&format!("{}/mcp/tagged@{digest}", registry.host))
        .await
        .unwrap();
    let s = setup("e2e-op-registry", &["--insecure-registry", &registry.host]).await;
    let api: Api<MCPServer> = Api::namespaced(s.client.clone(), &s.ns.name);
    let mut server = example("examples/weather-sse.yaml", &s);
    server.spec.image = Some(format!("{}/mcp/tagged:1.0.0", registry.host));
    api.create(&PostParams::default(), &server).await.unwrap();
    let ready = wait_ready(&api, "weather").await;
    assert_eq!(ready.status.unwrap().image.unwrap().digest, digest);
    let d =
        Api::<Deployment>::namespaced(s.client.clone(), &s.ns.name).get("weather").await.unwrap();
    let image = d.spec.unwrap().template.spec.unwrap().containers[0].image.clone().unwrap();
    assert_eq!(image, format!("{}/mcp/tagged:1.0.0@{digest}", registry.host));

    // The tag moves; the running server stays on the digest it was admitted with until the
    // spec names another image.
    let moved = registry.push_random_image("mcp/tagged", "1.0.0").await.unwrap();
    assert_ne!(moved, digest);
    let nudge = json!({"spec": {"replicas": 2}});
    api.patch("weather", &PatchParams::default(), &Patch::Merge(&nudge)).await.unwrap();
    let again = wait_ready(&api, "weather").await;
    assert_eq!(again.status.unwrap().image.unwrap().digest, digest);

    // A tag that does not exist is a permanent error with a clear condition, not a hot loop.
    let missing = json!({"spec": {"image": format!("{}/mcp/tagged:9.9.9", registry.host)}});
    api.patch("weather", &PatchParams::default(), &Patch::Merge(&missing)).await.unwrap();
    let cond = eventually(Duration::from_secs(30), "ImageResolutionFailed", || async {
        let s = api.get("weather").await.ok()?;
        let c = s
            .status?
            .conditions
            .into_iter()
            .find(|c| c.type_ == "Ready" && c.reason == "ImageResolutionFailed")?;
        Some(c)
    })
    .await
    .unwrap();
    assert!(cond.message.contains("9.9.9"), "{}", cond.message);
    let errors_before =
        s.operator.metric("palisade_operator_reconcile_errors_total").await.unwrap_or(0.0);
    tokio::time::sleep(Duration::from_secs(3)).await;
    let reconciles = s.operator.metric("palisade_operator_reconciles_total").await.unwrap();
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(
        s.operator.metric("palisade_operator_reconciles_total").await.unwrap(),
        reconciles,
        "hot loop on a permanent error"
    );
    assert_eq!(
        s.operator.metric("palisade_operator_reconcile_errors_total").await.unwrap_or(0.0),
        errors_before
    );
    s.ns.delete().await.unwrap();
}

fn verified_condition(s: &MCPServer) -> Option<(String, String, String)> {
    let c = s.status.as_ref()?.conditions.iter().find(|c| c.type_ == "ImageVerified")?;
    Some((c.status.clone(), c.reason.clone(), c.message.clone()))
}

#[tokio::test]
async fn only_images_signed_by_a_trusted_key_run() {
    let registry = Registry::start().await.unwrap();
    let s = setup("e2e-op-signature", &["--insecure-registry", &registry.host]).await;
    let api: Api<MCPServer> = Api::namespaced(s.client.clone(), &s.ns.name);
    let deployments = Api::<Deployment>::namespaced(s.client.clone(), &s.ns.name);
    let template = example("examples/weather-sse.yaml", &s);
    let named = |name: &str, image: &str| {
        let mut m = template.clone();
        m.metadata.name = Some(name.to_string());
        m.spec.image = Some(image.to_string());
        m
    };

    // An image nobody signed, and one signed with a key the server does not trust.
    let unsigned = registry.push_random_image("mcp/unsigned", "1").await.unwrap();
    let other = registry.push_random_image("mcp/other", "1").await.unwrap();
    let keys = std::env::temp_dir().join(format!("palisade-other-key-{}", rand::random::<u32>()));
    std::fs::create_dir_all(&keys).unwrap();
    cosign(&keys, &["generate-key-pair"]).await.unwrap();
    let other_ref = format!("{}/mcp/other@{other}", registry.host);
    cosign_sign(&keys, &other_ref).await.unwrap();

    api.create(
        &PostParams::default(),
        &named("unsigned", &format!("{}/mcp/unsigned@{unsigned}", registry.host)),
    )
    .await
    .unwrap();
    api.create(&PostParams::default(), &named("other", &other_ref)).await.unwrap();
    for (name, reason) in [("unsigned", "NoSignature"), ("other", "SignatureMismatch")] {
        let (status, got, message) = eventually(WAIT, &format!("{name} refused"), || async {
            let c = verified_condition(&api.get(name).await.ok()?)?;
            (c.0 == "False").then_some(c)
        })
        .await
        .unwrap();
        assert_eq!((status.as_str(), got.as_str()), ("False", reason), "{name}: {message}");
        let server = api.get(name).await.unwrap();
        let ready =
            server.status.unwrap().conditions.into_iter().find(|c| c.type_ == "Ready").unwrap();
        assert_eq!(
            (ready.status.as_str(), ready.reason.as_str()),
            ("False", "ImageNotVerified"),
            "{name}"
        );
        assert!(deployments.get_opt(name).await.unwrap().is_none(), "{name}: nothing may run");
    }

    // The signed stand-in runs, verified by the key its spec names.
    api.create(&PostParams::default(), &template).await.unwrap();
    let weather = wait_ready(&api, "weather").await;
    let (status, reason, message) = verified_condition(&weather).unwrap();
    assert_eq!((status.as_str(), reason.as_str()), ("True", "SignatureVerified"), "{message}");
    assert!(message.contains("cosign-public-key"), "{message}");

    // Trusting the other key (a new Secret named in the spec) lets that image run.
    let pem = std::fs::read_to_string(keys.join("cosign.pub")).unwrap();
    let secret: Secret = serde_json::from_value(json!({
        "metadata": {"name": "other-key"}, "stringData": {"cosign.pub": pem}}))
    .unwrap();
    Api::<Secret>::namespaced(s.client.clone(), &s.ns.name)
        .create(&PostParams::default(), &secret)
        .await
        .unwrap();
    let trust = json!({"spec": {"signature": {"keys": [{"secretRef": {"name": "other-key", "key": "cosign.pub"}}]}}});
    api.patch("other", &PatchParams::default(), &Patch::Merge(&trust)).await.unwrap();
    let other = wait_ready(&api, "other").await;
    assert_eq!(verified_condition(&other).unwrap().0, "True");
    let image =
        deployments.get("other").await.unwrap().spec.unwrap().template.spec.unwrap().containers[0]
            .image
            .clone()
            .unwrap();
    assert_eq!(image, other_ref);

    // Hole 1 of the audit. A policy's trusted key is a trust root: a server that names only a
    // keyless identity (which the operator cannot verify) runs when the policy's key verifies.
    let policies: Api<MCPPolicy> = Api::all(s.client.clone());
    let policy_name = format!("{}-trust", s.ns.name);
    let selector = json!({"matchLabels": {"kubernetes.io/metadata.name": s.ns.name}});
    let identity = json!({"issuer": "https://token.actions.githubusercontent.com",
                          "subjectRegExp": "https://github.com/acme/.*"});
    let policy: MCPPolicy = serde_json::from_value(json!({
        "apiVersion": "palisade.dev/v1alpha1", "kind": "MCPPolicy",
        "metadata": {"name": policy_name},
        "spec": {"namespaceSelector": selector,
                 "signature": {"required": true, "trustedKeys": [pem.trim()]}}}))
    .unwrap();
    policies.create(&PostParams::default(), &policy).await.unwrap();
    let mut keyless = named("keyless", &other_ref);
    keyless.spec.signature =
        Some(serde_json::from_value(json!({"keyless": [identity.clone()]})).unwrap());
    api.create(&PostParams::default(), &keyless).await.unwrap();
    let keyless = wait_ready(&api, "keyless").await;
    let (status, _, message) = verified_condition(&keyless).unwrap();
    assert_eq!(status, "True", "{message}");
    assert!(message.contains(&format!("MCPPolicy {policy_name} trustedKeys[0]")), "{message}");

    // With onlyTrusted the keys a namespace names for itself no longer count: the weather
    // server, signed by the run's key that its own spec names, stops (scaled to zero).
    let only =
        json!({"spec": {"signature": {"onlyTrusted": true, "trustedIdentities": [identity]}}});
    policies.patch(&policy_name, &PatchParams::default(), &Patch::Merge(&only)).await.unwrap();
    let (status, reason, message) = eventually(WAIT, "weather no longer verified", || async {
        let c = verified_condition(&api.get("weather").await.ok()?)?;
        (c.0 == "False").then_some(c)
    })
    .await
    .unwrap();
    assert_eq!((status.as_str(), reason.as_str()), ("False", "SignatureMismatch"), "{message}");
    eventually(WAIT, "weather scaled to zero", || async {
        (replicas(&deployments.get("weather").await.ok()?) == 0).then_some(())
    })
    .await
    .unwrap();
    let keyless = api.get("keyless").await.unwrap();
    assert_eq!(
        verified_condition(&keyless).unwrap().0,
        "True",
        "the policy's own key still verifies"
    );
    policies.delete(&policy_name, &DeleteParams::default()).await.unwrap();
    s.ns.delete().await.unwrap();
    let _ = std::fs::remove_dir_all(keys);
}

fn ready_condition(s: &MCPServer) -> Option<(String, String, String)> {
    let c = s.status.as_ref()?.conditions.iter().find(|c| c.type_ == "Ready")?;
    Some((c.status.clone(), c.reason.clone(), c.message.clone()))
}

fn replicas(d: &Deployment) -> i32 {
    d.spec.as_ref().and_then(|s| s.replicas).unwrap_or(-1)
}

/// Checklist 10.5 with the real cosign CLI: a policy that requires signed SBOMs keeps
/// unattested images (and SBOMs signed by other keys) from running, and its advisories stop a
/// running server whose SBOM lists an affected component until the advisory changes.
#[tokio::test]
async fn signed_sboms_gate_rollouts_and_advisories_stop_vulnerable_servers() {
    let signed = signed_images().expect("e2e/run-tests provides signed images");
    let registry = Registry::start().await.unwrap();
    let s = setup("e2e-op-sbom", &["--insecure-registry", &registry.host]).await;
    let api: Api<MCPServer> = Api::namespaced(s.client.clone(), &s.ns.name);
    let deployments = Api::<Deployment>::namespaced(s.client.clone(), &s.ns.name);
    let template = example("examples/weather-sse.yaml", &s);
    let work = std::env::temp_dir().join(format!("palisade-sbom-{}", rand::random::<u32>()));
    std::fs::create_dir_all(&work).unwrap();
    let sbom = work.join("sbom.json");
    std::fs::write(
        &sbom,
        json!({"bomFormat": "CycloneDX", "specVersion": "1.5", "components": [
            {"name": "weather", "version": "1.0.0", "components": [
                {"name": "@modelcontextprotocol/sdk", "version": "1.23.0",
                 "purl": "pkg:npm/%40modelcontextprotocol/sdk@1.23.0"}]},
            {"name": "zod", "version": "3.23.8", "purl": "pkg:npm/zod@3.23.8"}]})
        .to_string(),
    )
    .unwrap();

    // Three signed images: attested by the run's key, not attested, attested by another key.
    let mut images = BTreeMap::new();
    for name in ["attested", "bare", "foreign"] {
        let digest = registry.push_random_image(&format!("mcp/{name}"), "1").await.unwrap();
        let image = format!("{}/mcp/{name}@{digest}", registry.host);
        signed.sign(&image).await.unwrap();
        images.insert(name, image);
    }
    signed.attest(&images["attested"], &sbom, "cyclonedx").await.unwrap();
    cosign(&work, &["generate-key-pair"]).await.unwrap();
    cosign_attest(&work, &images["foreign"], &sbom, "cyclonedx").await.unwrap();

    // The policy comes from an OSV record through `palisade advisories`, as a feed would.
    let policies: Api<MCPPolicy> = Api::all(s.client.clone());
    let policy_name = format!("{}-supply-chain", s.ns.name);
    let osv = work.join("osv.json");
    std::fs::write(
        &osv,
        json!({"id": "GHSA-w48q-cv73-mx4w", "aliases": ["CVE-2025-66414"], "affected": [{
            "package": {"ecosystem": "npm", "name": "@modelcontextprotocol/sdk"},
            "ranges": [{"type": "SEMVER", "events": [{"introduced": "0"}, {"fixed": "1.24.0"}]}]}]})
        .to_string(),
    )
    .unwrap();
    let label = format!("kubernetes.io/metadata.name={}", s.ns.name);
    let out = std::process::Command::new(palisade_bin())
        .args(["advisories", "--name", &policy_name, "--namespace-label", &label, "--require-sbom"])
        .arg(&osv)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let policy: MCPPolicy = serde_saphyr::from_str(&String::from_utf8_lossy(&out.stdout)).unwrap();
    policies.create(&PostParams::default(), &policy).await.unwrap();

    for name in ["attested", "bare", "foreign"] {
        let mut m = template.clone();
        m.metadata.name = Some(name.to_string());
        m.spec.image = Some(images[name].clone());
        api.create(&PostParams::default(), &m).await.unwrap();
    }
    // No SBOM, or one signed by a key the server does not name: nothing runs.
    for (name, needle) in [("bare", "no SBOM attestation"), ("foreign", "none made by a key")] {
        let (_, _, message) = eventually(WAIT, &format!("{name} SbomNotVerified"), || async {
            let c = ready_condition(&api.get(name).await.ok()?)?;
            (c.1 == "SbomNotVerified").then_some(c)
        })
        .await
        .unwrap();
        assert!(message.contains(needle), "{name}: {message}");
        assert!(deployments.get_opt(name).await.unwrap().is_none(), "{name}: nothing may run");
    }
    // The attested image lists an affected SDK: its workload exists but is scaled to zero.
    let (_, _, message) = eventually(WAIT, "attested VulnerableComponent", || async {
        let c = ready_condition(&api.get("attested").await.ok()?)?;
        (c.1 == "VulnerableComponent").then_some(c)
    })
    .await
    .unwrap();
    assert!(
        message.contains("GHSA-w48q-cv73-mx4w: pkg:npm/@modelcontextprotocol/sdk@1.23.0"),
        "{message}"
    );
    let stopped = eventually(WAIT, "attested scaled to zero", || async {
        deployments.get_opt("attested").await.ok()?.filter(|d| replicas(d) == 0)
    })
    .await
    .unwrap();
    assert_eq!(replicas(&stopped), 0);
    let status = api.get("attested").await.unwrap().status.unwrap().image.unwrap();
    let sbom_status = status.sbom.unwrap();
    assert_eq!(sbom_status.format, "https://cyclonedx.org/bom");
    assert_eq!(sbom_status.components, 3, "nested components are counted");
    assert!(sbom_status.signed_by.contains("cosign-public-key"), "{}", sbom_status.signed_by);

    // The feed learns that 1.23.0 was never affected: the watch resumes the server.
    let narrowed = json!({"spec": {"supplyChain": {"requireSbom": true, "advisories": [{
        "id": "GHSA-w48q-cv73-mx4w", "package": "pkg:npm/%40modelcontextprotocol/sdk",
        "ranges": [{"fixed": "1.23.0"}]}]}}});
    policies.patch(&policy_name, &PatchParams::default(), &Patch::Merge(&narrowed)).await.unwrap();
    let ready = wait_ready(&api, "attested").await;
    let sbom_status = ready.status.unwrap().image.unwrap().sbom.unwrap();
    assert!(sbom_status.vulnerabilities.is_empty(), "{:?}", sbom_status.vulnerabilities);
    assert_eq!(replicas(&deployments.get("attested").await.unwrap()), template.spec.replicas);

    policies.delete(&policy_name, &DeleteParams::default()).await.unwrap();
    s.ns.delete().await.unwrap();
    let _ = std::fs::remove_dir_all(work);
}
