//! The admission webhook called by the real API server over TLS, and the CEL baseline as a
//! ValidatingAdmissionPolicy. Admission configuration is cluster-wide, so the tests of this
//! binary run one at a time and remove what they installed.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::PathBuf;
use std::time::Duration;

use k8s_openapi::api::admissionregistration::v1::ValidatingWebhookConfiguration;
use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, PostParams};
use palisade_crds::MCPServer;
use palisade_e2e::{
    Case, Cluster, Operator, TestNamespace, VAP_RULES, Webhook, chart_admission_objects,
    eventually, install_crds, kubectl, load_yaml, refused_by_the_crd, rejection_table, repo_root,
};
use tokio::sync::Mutex;

static SERIAL: Mutex<()> = Mutex::const_new(());

/// Removes the cluster-wide admission objects when the test ends, even when it fails.
struct AdmissionGuard {
    kubeconfig: PathBuf,
}

impl Drop for AdmissionGuard {
    fn drop(&mut self) {
        let kubectl = palisade_e2e::tool("kubectl").unwrap();
        let _ = std::process::Command::new(kubectl)
            .arg("--kubeconfig")
            .arg(&self.kubeconfig)
            .args(["delete", "--ignore-not-found", "validatingwebhookconfiguration/palisade"])
            .args([
                "validatingadmissionpolicy/palisade-baseline-mcpservers",
                "validatingadmissionpolicy/palisade-baseline-workloads",
            ])
            .args([
                "validatingadmissionpolicybinding/palisade-baseline-mcpservers",
                "validatingadmissionpolicybinding/palisade-baseline-workloads",
            ])
            .output();
    }
}

async fn install(cluster: &Cluster, url: Option<&str>, policy: bool, ns: &str) -> AdmissionGuard {
    let yaml = chart_admission_objects(url, policy, ns).await.unwrap();
    let (ok, out) = kubectl(cluster, &["apply", "-f", "-"], Some(&yaml)).await.unwrap();
    assert!(ok, "{out}");
    let guard = AdmissionGuard { kubeconfig: cluster.kubeconfig.clone() };
    if url.is_some() {
        // The webhook publishes its CA into the configuration it finds; wait for that.
        let configs: Api<ValidatingWebhookConfiguration> =
            Api::all(cluster.client().await.unwrap());
        eventually(Duration::from_secs(30), "caBundle published", || async {
            let cfg = configs.get("palisade").await.ok()?;
            cfg.webhooks?
                .iter()
                .all(|w| w.client_config.ca_bundle.as_ref().is_some_and(|b| !b.0.is_empty()))
                .then_some(())
        })
        .await
        .unwrap();
    }
    guard
}

/// `spec.tools[0].requireApproval` -> `spec.tools`: CRD rules report the field they are
/// attached to, which is as precise as a schema can be.
fn schema_field(field: &str) -> String {
    field
        .split('.')
        .take(2)
        .collect::<Vec<_>>()
        .join(".")
        .split('[')
        .next()
        .unwrap_or_default()
        .to_string()
}

fn table() -> Vec<Case> {
    rejection_table()
}

/// An example file placed into namespace `ns`.
fn in_namespace(file: &str, ns: &str) -> String {
    std::fs::read_to_string(file)
        .unwrap()
        .replace("namespace: mcp-demo", &format!("namespace: {ns}"))
}

/// Starts the webhook (with `flags`) in a fresh namespace and registers it with the API
/// server; the guard removes the registration.
async fn registered_webhook(
    cluster: &Cluster,
    client: &kube::Client,
    home_prefix: &str,
    flags: &[&str],
) -> (TestNamespace, Webhook, AdmissionGuard) {
    install_crds(client).await.unwrap();
    let home = TestNamespace::create(client, home_prefix).await.unwrap();
    let webhook = Webhook::start(cluster, &home.name, flags).await.unwrap();
    let guard =
        install(cluster, Some(&format!("https://127.0.0.1:{}", webhook.port)), false, &home.name)
            .await;
    (home, webhook, guard)
}

async fn platform_namespace(
    client: &kube::Client,
    cluster: &Cluster,
    prefix: &str,
) -> TestNamespace {
    let ns =
        TestNamespace::create_with_labels(client, prefix, &[("team", "platform")]).await.unwrap();
    let policy = std::fs::read_to_string(repo_root().join("examples/policy.yaml")).unwrap();
    let (ok, out) = kubectl(cluster, &["apply", "-f", "-"], Some(&policy)).await.unwrap();
    assert!(ok, "{out}");
    ns
}

/// The API server's verdict on `yaml`, with and without server-side dry run.
async fn apply(cluster: &Cluster, yaml: &str, dry_run: bool) -> (bool, String) {
    let mut args = vec!["apply", "-f", "-"];
    if dry_run {
        args.push("--dry-run=server");
    }
    kubectl(cluster, &args, Some(yaml)).await.unwrap()
}

#[tokio::test]
async fn rejected_classes_fail_with_the_webhooks_message_and_dry_run_agrees() {
    let _serial = SERIAL.lock().await;
    let cluster = Cluster::shared().await;
    let client = cluster.client().await.unwrap();
    let (home, webhook, _guard) = registered_webhook(cluster, &client, "e2e-wh-home", &[]).await;
    let ns = platform_namespace(&client, cluster, "e2e-wh-table").await;

    for case in table() {
        let yaml = in_namespace(&case.file, &ns.name);
        for dry_run in [true, false] {
            let (ok, out) = apply(cluster, &yaml, dry_run).await;
            assert!(!ok, "{} was admitted (dry run {dry_run}): {out}", case.file);
            let schema_catches =
                out.contains("is invalid:") || out.contains("strict decoding error");
            let named = if schema_catches { schema_field(&case.field) } else { case.field.clone() };
            assert!(
                out.contains(&named),
                "{}: the refusal does not name {named}: {out}",
                case.file
            );
            if !schema_catches {
                assert!(
                    out.contains("admission webhook") && out.contains("denied the request"),
                    "{}: not the webhook's refusal: {out}",
                    case.file
                );
                assert!(
                    out.contains(&format!("[{}]", case.rule)),
                    "{}: rule {} not named: {out}",
                    case.file,
                    case.rule
                );
            }
        }
    }
    // The examples are admitted, dry run and for real.
    for f in [
        "examples/everything-http.yaml",
        "examples/filesystem-stdio.yaml",
        "examples/weather-sse.yaml",
    ] {
        let yaml = in_namespace(&repo_root().join(f).display().to_string(), &ns.name);
        for dry_run in [true, false] {
            let (ok, out) = apply(cluster, &yaml, dry_run).await;
            assert!(ok, "{f} refused: {out}");
        }
    }
    assert!(
        webhook.metric("palisade_webhook_admissions_total", "verdict=\"denied\"").await.unwrap()
            > 0.0
    );
    ns.delete().await.unwrap();
    home.delete().await.unwrap();
}

#[tokio::test]
async fn labelled_workloads_are_checked_and_unlabelled_ones_never_reach_the_webhook() {
    let _serial = SERIAL.lock().await;
    let cluster = Cluster::shared().await;
    let client = cluster.client().await.unwrap();
    let (home, webhook, _guard) =
        registered_webhook(cluster, &client, "e2e-wh-pods-home", &[]).await;
    let ns = TestNamespace::create(&client, "e2e-wh-pods").await.unwrap();
    let n = &ns.name;

    // The operator's own workloads pass: hardened, gateway injected, verified digest.
    let shard = ns.name.clone();
    let _op = Operator::start(cluster, &home.name, &shard, &[]).await.unwrap();
    let mut server: MCPServer = load_yaml("examples/weather-sse.yaml").unwrap();
    server.metadata.namespace = Some(n.clone());
    server.metadata.labels = Some([("palisade.dev/e2e-shard".to_string(), shard.clone())].into());
    Api::<MCPServer>::namespaced(client.clone(), n)
        .create(&PostParams::default(), &server)
        .await
        .unwrap();
    eventually(Duration::from_secs(60), "operator-made pods admitted and Ready", || async {
        let s = Api::<MCPServer>::namespaced(client.clone(), n).get("weather").await.ok()?;
        s.status?.conditions.iter().any(|c| c.type_ == "Ready" && c.status == "True").then_some(())
    })
    .await
    .unwrap();
    assert!(
        webhook
            .metric("palisade_webhook_admissions_total", "kind=\"Pod\",verdict=\"allowed\"")
            .await
            .unwrap()
            >= 1.0
    );

    // Hand-made pods that claim to be MCP servers.
    for (file, want) in [
        ("examples/rejected/hand-made-pod-privileged.yaml", "privileged"),
        ("examples/rejected/hand-made-pod-tag.yaml", "pinned by digest"),
    ] {
        let yaml = in_namespace(&repo_root().join(file).display().to_string(), n);
        let (ok, out) = apply(cluster, &yaml, false).await;
        assert!(!ok && out.contains("admission webhook") && out.contains(want), "{file}: {out}");
    }
    let claims_missing = in_namespace(
        &repo_root().join("examples/rejected/hand-made-pod-tag.yaml").display().to_string(),
        n,
    )
    .replace("palisade.dev/mcp-server: everything", "palisade.dev/mcp-server: nonexistent");
    let (ok, out) = apply(cluster, &claims_missing, false).await;
    assert!(!ok && out.contains("claims MCPServer nonexistent, which does not exist"), "{out}");
    // A copy of the operator's pod with another image digest is refused: only the verified one runs.
    let pods = kubectl(
        cluster,
        &["get", "pods", "-n", n, "-l", "palisade.dev/mcp-server=weather", "-o", "json"],
        None,
    )
    .await
    .unwrap()
    .1;
    let list: serde_json::Value = serde_json::from_str(&pods).unwrap();
    let mut pod = list["items"][0].clone();
    for k in [
        "uid",
        "resourceVersion",
        "creationTimestamp",
        "ownerReferences",
        "generateName",
        "managedFields",
    ] {
        pod["metadata"].as_object_mut().unwrap().remove(k);
    }
    pod.as_object_mut().unwrap().remove("status");
    pod["spec"].as_object_mut().unwrap().remove("nodeName");
    pod["metadata"]["name"] = "weather-copy".into();
    let other = format!("sha256:{}", "e".repeat(64));
    let image = pod["spec"]["containers"][0]["image"].as_str().unwrap().to_string();
    pod["spec"]["containers"][0]["image"] =
        format!("{}@{other}", image.split('@').next().unwrap()).into();
    let (ok, out) = kubectl(cluster, &["create", "-f", "-"], Some(&pod.to_string())).await.unwrap();
    assert!(!ok && out.contains("only the verified digest may run"), "{out}");

    // Unlabelled pods, even privileged ones, are never sent to the webhook.
    let before = webhook.metric("palisade_webhook_admissions_total", "kind=\"Pod\"").await.unwrap();
    let plain = format!(
        "apiVersion: v1\nkind: Pod\nmetadata: {{name: plain, namespace: {n}}}\nspec:\n  containers:\n  - name: c\n    image: busybox:1\n    securityContext: {{privileged: true}}\n"
    );
    let (ok, out) = apply(cluster, &plain, false).await;
    assert!(ok, "{out}");
    assert_eq!(
        webhook.metric("palisade_webhook_admissions_total", "kind=\"Pod\"").await.unwrap(),
        before,
        "an unlabelled pod reached the webhook"
    );
    ns.delete().await.unwrap();
    home.delete().await.unwrap();
}

/// A TLS client that trusts any certificate: for handshakes that only read the served
/// certificate, or attack the server.
#[derive(Debug)]
struct Any;
impl rustls::client::danger::ServerCertVerifier for Any {
    fn verify_server_cert(
        &self,
        _: &rustls::pki_types::CertificateDer<'_>,
        _: &[rustls::pki_types::CertificateDer<'_>],
        _: &rustls::pki_types::ServerName<'_>,
        _: &[u8],
        _: rustls::pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        Ok(rustls::client::danger::ServerCertVerified::assertion())
    }
    fn verify_tls12_signature(
        &self,
        _: &[u8],
        _: &rustls::pki_types::CertificateDer<'_>,
        _: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        Ok(rustls::client::danger::HandshakeSignatureValid::assertion())
    }
    fn verify_tls13_signature(
        &self,
        _: &[u8],
        _: &rustls::pki_types::CertificateDer<'_>,
        _: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        Ok(rustls::client::danger::HandshakeSignatureValid::assertion())
    }
    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        rustls::crypto::aws_lc_rs::default_provider()
            .signature_verification_algorithms
            .supported_schemes()
    }
}

fn trusting(alpn: &[&[u8]]) -> std::sync::Arc<rustls::ClientConfig> {
    let mut cfg = rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(
        rustls::crypto::aws_lc_rs::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .dangerous()
    .with_custom_certificate_verifier(std::sync::Arc::new(Any))
    .with_no_client_auth();
    cfg.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    std::sync::Arc::new(cfg)
}

fn leaf_serial(port: u16) -> Option<Vec<u8>> {
    use std::io::{Read, Write};
    let mut conn =
        rustls::ClientConnection::new(trusting(&[]), "127.0.0.1".try_into().ok()?).ok()?;
    let mut tcp = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
    let mut tls = rustls::Stream::new(&mut conn, &mut tcp);
    tls.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").ok()?;
    let mut buf = Vec::new();
    let _ = tls.read_to_end(&mut buf);
    conn.peer_certificates().map(|c| c[0].to_vec())
}

#[tokio::test]
async fn certificates_bootstrap_rotate_and_the_ca_bundle_follows() {
    let _serial = SERIAL.lock().await;
    let cluster = Cluster::shared().await;
    let client = cluster.client().await.unwrap();
    // Short lifetimes stand in for months: leaves live 6 s, the CA 24 s.
    let (home, webhook, _guard) = registered_webhook(
        cluster,
        &client,
        "e2e-wh-certs",
        &["--cert-validity", "6s", "--ca-validity", "24s"],
    )
    .await;
    let configs: Api<ValidatingWebhookConfiguration> = Api::all(client.clone());
    let secrets: Api<Secret> = Api::namespaced(client.clone(), &home.name);
    let bundle = || async {
        let cfg = configs.get("palisade").await.ok()?;
        cfg.webhooks?
            .first()?
            .client_config
            .ca_bundle
            .clone()
            .map(|b| String::from_utf8_lossy(&b.0).into_owned())
    };
    let ca_of = || async {
        let s = secrets.get("palisade-ca").await.ok()?;
        Some(String::from_utf8_lossy(&s.data?.get("tls.crt")?.0).into_owned())
    };
    let first_ca = eventually(Duration::from_secs(20), "CA created", &ca_of).await.unwrap();
    eventually(Duration::from_secs(20), "bundle has the CA", || async {
        bundle().await?.contains(first_ca.trim()).then_some(())
    })
    .await
    .unwrap();
    let port = webhook.port;
    let first_leaf = tokio::task::spawn_blocking(move || leaf_serial(port)).await.unwrap().unwrap();

    let ns = platform_namespace(&client, cluster, "e2e-wh-certs-use").await;
    let example = in_namespace(
        &repo_root().join("examples/weather-sse.yaml").display().to_string(),
        &ns.name,
    );
    let rejected = in_namespace(
        &repo_root().join("examples/rejected/registry-not-allowed.yaml").display().to_string(),
        &ns.name,
    );

    // The leaf is renewed before it expires; admissions keep working across renewals.
    let renewed = eventually(Duration::from_secs(20), "leaf renewed", || async {
        let l = tokio::task::spawn_blocking(move || leaf_serial(port)).await.ok()??;
        (l != first_leaf).then_some(l)
    })
    .await
    .unwrap();
    assert_ne!(renewed, first_leaf);
    // The CA rotates; the bundle carries the new CA (and the old one while it is valid).
    let second_ca = eventually(Duration::from_secs(40), "CA rotated", || async {
        let c = ca_of().await?;
        (c != first_ca).then_some(c)
    })
    .await
    .unwrap();
    eventually(Duration::from_secs(20), "bundle follows the CA", || async {
        bundle().await?.contains(second_ca.trim()).then_some(())
    })
    .await
    .unwrap();
    for _ in 0..5 {
        let (ok, out) = apply(cluster, &example, true).await;
        assert!(ok, "admission broke across a rotation: {out}");
        let (ok, out) = apply(cluster, &rejected, true).await;
        assert!(!ok && out.contains("policy.registry"), "{out}");
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
    webhook.stop().await;
    ns.delete().await.unwrap();
    home.delete().await.unwrap();
}

/// The chart's ValidatingAdmissionPolicy holds the baseline when the webhook is gone: every
/// baseline case of the rejection table is refused with the policy's own message naming the
/// rule (a CRD refusal does not count), and the cases the CRD itself refuses are listed apart
/// and refused as invalid before any admission control runs.
#[tokio::test]
async fn the_admission_policy_keeps_the_baseline_without_the_webhook() {
    let _serial = SERIAL.lock().await;
    let cluster = Cluster::shared().await;
    let client = cluster.client().await.unwrap();
    install_crds(&client).await.unwrap();
    let home = TestNamespace::create(&client, "e2e-vap-home").await.unwrap();
    let ns = platform_namespace(&client, cluster, "e2e-vap").await;
    let (by_crd, baseline): (Vec<Case>, Vec<Case>) = table()
        .into_iter()
        .filter(|c| VAP_RULES.contains(&c.rule.as_str()) || c.rule.starts_with("crd."))
        .partition(|c| refused_by_the_crd(&c.file));
    let baseline: Vec<Case> =
        baseline.into_iter().filter(|c| VAP_RULES.contains(&c.rule.as_str())).collect();
    assert!(baseline.len() >= 20, "the shared baseline shrank to {}", baseline.len());
    assert!(!by_crd.is_empty(), "the table has cases the CRD refuses");

    // The webhook is not installed: only the API server's own policy and schema decide.
    let _guard = install(cluster, None, true, &home.name).await;
    for c in &baseline {
        let yaml = in_namespace(&c.file, &ns.name);
        let out = eventually(Duration::from_secs(20), "policy active", || async {
            let (ok, out) = apply(cluster, &yaml, true).await;
            (!ok).then_some(out)
        })
        .await
        .unwrap_or_else(|_| panic!("{} admitted without the webhook", c.file));
        assert!(
            out.contains("ValidatingAdmissionPolicy") && out.contains(&format!("[{}]", c.rule)),
            "{}: not the policy's refusal for {}: {out}",
            c.file,
            c.rule
        );
    }
    for c in &by_crd {
        let (ok, out) = apply(cluster, &in_namespace(&c.file, &ns.name), true).await;
        assert!(!ok && out.contains("is invalid"), "{}: not refused by the CRD: {out}", c.file);
    }
    for f in [
        "examples/everything-http.yaml",
        "examples/filesystem-stdio.yaml",
        "examples/weather-sse.yaml",
    ] {
        let (ok, out) = apply(
            cluster,
            &in_namespace(&repo_root().join(f).display().to_string(), &ns.name),
            true,
        )
        .await;
        assert!(ok, "{f} refused by the policy: {out}");
    }
    ns.delete().await.unwrap();
    home.delete().await.unwrap();
}

/// Opens and resets `n` streams on one HTTP/2 connection to the webhook, then asks once more:
/// whether the connection still serves a request.
async fn webhook_serves_after_resets(port: u16, n: usize) -> bool {
    let tcp = tokio::net::TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    let tls = tokio_rustls::TlsConnector::from(trusting(&[b"h2"]))
        .connect("127.0.0.1".try_into().unwrap(), tcp)
        .await
        .unwrap();
    let (mut send, conn) = h2::client::handshake(tls).await.unwrap();
    let conn = tokio::spawn(conn);
    let request = || {
        http::Request::builder()
            .method("POST")
            .uri(format!("https://127.0.0.1:{port}/validate"))
            .body(())
            .unwrap()
    };
    for _ in 0..n {
        send = match send.ready().await {
            Ok(s) => s,
            Err(_) => return false,
        };
        match send.send_request(request(), false) {
            Ok((_, mut stream)) => stream.send_reset(h2::Reason::CANCEL),
            Err(_) => return false,
        }
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let served = async {
        let send = send.ready().await.ok()?;
        let (resp, _) = send.clone().send_request(request(), true).ok()?;
        resp.await.ok().map(|r| r.status().as_u16())
    };
    let status = tokio::time::timeout(Duration::from_secs(10), served).await.ok().flatten();
    conn.abort();
    status.is_some()
}

/// CVE-2023-44487 against the webhook binary: a connection that opens and resets streams at
/// once is ended, and admission goes on for everyone else.
#[tokio::test]
async fn http2_rapid_reset_against_the_webhook_ends_the_connection() {
    let _serial = SERIAL.lock().await;
    let cluster = Cluster::shared().await;
    let client = cluster.client().await.unwrap();
    let (home, webhook, _guard) = registered_webhook(cluster, &client, "e2e-wh-h2", &[]).await;
    // Control: the same kind of connection, without the resets, is served.
    assert!(
        webhook_serves_after_resets(webhook.port, 0).await,
        "the webhook does not serve HTTP/2"
    );
    assert!(
        !webhook_serves_after_resets(webhook.port, 2000).await,
        "a rapid-reset flood was served on"
    );
    // The API server's own calls are still answered: a noncompliant server is refused with
    // the webhook's message.
    let ns = platform_namespace(&client, cluster, "e2e-wh-h2-use").await;
    let rejected = in_namespace(
        &repo_root().join("examples/rejected/registry-not-allowed.yaml").display().to_string(),
        &ns.name,
    );
    let (admitted, out) = apply(cluster, &rejected, true).await;
    assert!(!admitted && out.contains("policy.registry"), "{out}");
    webhook.stop().await;
    ns.delete().await.unwrap();
    home.delete().await.unwrap();
}

/// The webhook killed: admission fails closed (a compliant server is not admitted without its
/// verdict, and neither is one only the webhook would refuse), and resumes with the webhook's
/// own verdicts when it is back on its address.
#[tokio::test]
async fn a_killed_webhook_fails_closed_and_admission_resumes_when_it_returns() {
    let _serial = SERIAL.lock().await;
    let cluster = Cluster::shared().await;
    let client = cluster.client().await.unwrap();
    let (home, webhook, _guard) = registered_webhook(cluster, &client, "e2e-wh-kill", &[]).await;
    let ns = platform_namespace(&client, cluster, "e2e-wh-kill-use").await;
    let file = |f: &str| in_namespace(&repo_root().join(f).display().to_string(), &ns.name);
    let (compliant, rejected) =
        (file("examples/weather-sse.yaml"), file("examples/rejected/registry-not-allowed.yaml"));
    let port = webhook.port;
    webhook.stop().await;
    for (yaml, what) in [(&compliant, "a compliant server"), (&rejected, "a noncompliant server")] {
        let (ok, out) = apply(cluster, yaml, true).await;
        assert!(!ok, "{what} was admitted while the webhook was down: {out}");
        assert!(out.contains("failed calling webhook"), "{what}: {out}");
    }
    let webhook = Webhook::start_on(cluster, &home.name, port, &[]).await.unwrap();
    let out = eventually(Duration::from_secs(30), "admission back", || async {
        let (ok, out) = apply(cluster, &compliant, true).await;
        ok.then_some(out)
    })
    .await
    .unwrap();
    assert!(!out.contains("failed calling webhook"), "{out}");
    let (ok, out) = apply(cluster, &rejected, true).await;
    assert!(!ok && out.contains("policy.registry"), "{out}");
    webhook.stop().await;
    ns.delete().await.unwrap();
    home.delete().await.unwrap();
}
