//! Palisade on the cluster's real node (`e2e/cluster up --nodes real`), installed by Helm with
//! its own images by digest: the operator (2 replicas, leader election) and the webhook (2
//! replicas behind its Service) as pods; MCP servers built from the official servers, signed
//! with cosign, reconciled into hardened pods that run under containerd and runc; NetworkPolicy
//! enforced by kube-router, checked with packets. Runs inside the cluster's network namespace
//! (e2e/run-tests), after the other e2e tests, one stage after another.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::PathBuf;
use std::time::{Duration, Instant};

use base64::Engine;
use palisade_e2e::{
    Cluster, eventually, free_port, kubectl, palisade_bin, repo_root, signed_images, tool,
};
use serde_json::Value;

/// The node's address inside the cluster's namespace, and the decoy metadata endpoint there.
const NODE_IP: &str = "10.200.0.1";
const DECOY: &str = "169.254.169.254";
const RELEASE_NS: &str = "palisade-system";
const WAIT: Duration = Duration::from_secs(240);

/// `name -> repo@digest` from a tab-separated images file named by an environment variable.
fn image(var: &str, name: &str) -> String {
    let path = std::env::var(var).unwrap_or_else(|_| panic!("{var} is not set (e2e/run-tests)"));
    let text = std::fs::read_to_string(&path).unwrap();
    text.lines()
        .filter_map(|l| {
            let mut f = l.split('\t');
            Some((f.next()?, f.next()?))
        })
        .find(|(n, _)| *n == name)
        .map(|(_, r)| r.to_string())
        .unwrap_or_else(|| panic!("{name} is not in {path}"))
}

async fn helm(cluster: &Cluster, args: &[&str]) -> (bool, String) {
    let out = tokio::process::Command::new(tool("helm").unwrap())
        .args(args)
        .env("KUBECONFIG", &cluster.kubeconfig)
        .current_dir(repo_root())
        .output()
        .await
        .unwrap();
    let mut text = String::from_utf8_lossy(&out.stdout).into_owned();
    text.push_str(&String::from_utf8_lossy(&out.stderr));
    (out.status.success(), text)
}

/// kubectl that must succeed; its output.
async fn k(cluster: &Cluster, args: &[&str]) -> String {
    let (ok, out) = kubectl(cluster, args, None).await.unwrap();
    assert!(ok, "kubectl {}: {out}", args.join(" "));
    out
}

async fn k_json(cluster: &Cluster, args: &[&str]) -> Value {
    let mut all = args.to_vec();
    all.extend(["-o", "json"]);
    serde_json::from_str(&k(cluster, &all).await).unwrap()
}

async fn apply(cluster: &Cluster, yaml: &str) {
    let (ok, out) = kubectl(cluster, &["apply", "-f", "-"], Some(yaml)).await.unwrap();
    assert!(ok, "{out}\n{yaml}");
}

/// The Python of the MCP peers (official SDK, pyjwt, cryptography), installed before the run.
fn python() -> PathBuf {
    let out = std::process::Command::new(repo_root().join("e2e/peers/install")).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    PathBuf::from(String::from_utf8_lossy(&out.stdout).trim()).join("venv/bin/python")
}

/// The test identity provider (e2e/nodes/idp.py) on the node's address, which the gateways
/// reach through their egress allowlist. Stopped when dropped.
struct Idp {
    dir: PathBuf,
    port: u16,
    issuer: String,
    child: std::process::Child,
}

impl Idp {
    fn start() -> Idp {
        let dir = std::env::temp_dir().join(format!("palisade-idp-{}", std::process::id()));
        let port = free_port();
        let child = std::process::Command::new(python())
            .arg(repo_root().join("e2e/nodes/idp.py"))
            .args(["serve", dir.to_str().unwrap(), NODE_IP, &port.to_string()])
            .spawn()
            .unwrap();
        let start = Instant::now();
        while !dir.join("ready").exists() {
            assert!(start.elapsed() < Duration::from_secs(30), "the test IdP did not start");
            std::thread::sleep(Duration::from_millis(100));
        }
        Idp { issuer: format!("https://{NODE_IP}:{port}"), dir, port, child }
    }

    fn token(&self, subject: &str, audience: &str) -> String {
        let out = std::process::Command::new(python())
            .arg(repo_root().join("e2e/nodes/idp.py"))
            .args(["token", self.dir.to_str().unwrap(), subject, audience])
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }
}

impl Drop for Idp {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Runs the official Python SDK client through a gateway's Service; its JSON report.
async fn client(url: &str, token: &str, ca: &std::path::Path, calls: &[&str]) -> Value {
    try_client(url, token, ca, calls).await.unwrap_or_else(|e| panic!("{e}"))
}

/// [`client`], with its failure returned for the caller to add what it knows.
async fn try_client(
    url: &str,
    token: &str,
    ca: &std::path::Path,
    calls: &[&str],
) -> Result<Value, String> {
    client_in("legacy", url, token, ca, calls).await
}

/// The official Python SDK client in `mode` (`legacy`: the session era; `2026-07-28`).
async fn client_in(
    mode: &str,
    url: &str,
    token: &str,
    ca: &std::path::Path,
    calls: &[&str],
) -> Result<Value, String> {
    let out = tokio::process::Command::new(python())
        .arg(repo_root().join("gateway/tests/peers/py_auth_client.py"))
        .args([url, token, mode, "--ca", ca.to_str().unwrap()])
        .args(calls)
        .output()
        .await
        .unwrap();
    if !out.status.success() {
        return Err(format!(
            "client: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    serde_json::from_slice(&out.stdout).map_err(|e| format!("client report: {e}"))
}

/// The names of a pod's containers.
fn containers(pod: &Value) -> Vec<&str> {
    let all = pod["spec"]["containers"].as_array().map(Vec::as_slice).unwrap_or_default();
    all.iter().filter_map(|c| c["name"].as_str()).collect()
}

/// The CA that issued a gateway's serving certificate (the operator's), as a file for clients.
async fn gateway_ca(cluster: &Cluster, ns: &str, server: &str, dir: &std::path::Path) -> PathBuf {
    let secret =
        k_json(cluster, &["get", "secret", "-n", ns, &format!("{server}-gateway-tls")]).await;
    let pem = secret["data"]["ca.crt"].as_str().expect("the gateway TLS Secret has ca.crt");
    let path = dir.join(format!("{server}-ca.pem"));
    std::fs::write(&path, base64::engine::general_purpose::STANDARD.decode(pem).unwrap()).unwrap();
    path
}

/// A namespace on the real node whose pods PodSecurity admission holds to `restricted`.
async fn real_namespace(cluster: &Cluster, name: &str) {
    let yaml = format!(
        "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: {name}\n  labels:\n    \
         pod-security.kubernetes.io/enforce: restricted\n    \
         pod-security.kubernetes.io/enforce-version: latest\n    palisade.dev/enforce: \"true\"\n  \
         annotations:\n    scheduler.alpha.kubernetes.io/node-selector: type=real\n"
    );
    apply(cluster, &yaml).await;
}

/// Probes `host:port` with TCP from inside a container (its image's Node.js; there is no
/// shell): "open", or "blocked" when nothing answered within 3 s.
async fn probe(
    cluster: &Cluster,
    ns: &str,
    pod: &str,
    container: &str,
    host: &str,
    port: u16,
) -> String {
    let script = format!(
        "const s=require('net').connect({port},'{host}');s.setTimeout(3000);\
         s.on('connect',()=>{{console.log('open');process.exit(0)}});\
         s.on('timeout',()=>{{console.log('blocked');process.exit(0)}});\
         s.on('error',e=>{{console.log('blocked '+e.code);process.exit(0)}});"
    );
    let out = k(
        cluster,
        &["exec", "-n", ns, pod, "-c", container, "--", "/usr/local/bin/node", "-e", &script],
    )
    .await;
    out.trim().to_string()
}

/// Pods of an MCP server, by name; pods on their way out (a finished rollout's) are not counted.
async fn server_pods(cluster: &Cluster, ns: &str, server: &str) -> Vec<Value> {
    let list = k_json(
        cluster,
        &["get", "pods", "-n", ns, "-l", &format!("palisade.dev/mcp-server={server}")],
    )
    .await;
    let items = list["items"].as_array().cloned().unwrap_or_default();
    items.into_iter().filter(|p| p["metadata"]["deletionTimestamp"].is_null()).collect()
}

async fn wait_ready(cluster: &Cluster, ns: &str, server: &str) {
    let t0 = Instant::now();
    let res = eventually(WAIT, &format!("{server} Ready"), || async {
        let s = k_json(cluster, &["get", "mcpserver", "-n", ns, server]).await;
        let ready = s["status"]["conditions"]
            .as_array()?
            .iter()
            .any(|c| c["type"] == "Ready" && c["status"] == "True");
        ready.then_some(())
    })
    .await;
    if res.is_err() {
        let pods = k(cluster, &["get", "pods", "-n", ns, "-o", "wide"]).await;
        let events = k(cluster, &["get", "events", "-n", ns]).await;
        let s = k(cluster, &["get", "mcpserver", "-n", ns, server, "-o", "yaml"]).await;
        panic!("{server} not Ready:\n{s}\n{pods}\n{events}");
    }
    println!("{server}: Ready after {:.1}s", t0.elapsed().as_secs_f64());
    // Ready only with every container of every pod ready, the gateway's readiness included.
    for pod in server_pods(cluster, ns, server).await {
        for c in pod["status"]["containerStatuses"].as_array().unwrap() {
            assert_eq!(c["ready"], true, "{server}: container {} not ready", c["name"]);
        }
    }
}

/// Processes on the node that belong to a pod (their cgroup path names its UID), as
/// (pid, name, /proc/PID/status). The test runs in the cluster's pid namespace.
fn pod_processes(uid: &str) -> Vec<(u32, String, String)> {
    let uid_in_cgroup = uid.replace('-', "_");
    let mut found = vec![];
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else { continue };
        let Ok(cgroup) = std::fs::read_to_string(format!("/proc/{pid}/cgroup")) else { continue };
        if !(cgroup.contains(uid) || cgroup.contains(&uid_in_cgroup)) {
            continue;
        }
        let Ok(status) = std::fs::read_to_string(format!("/proc/{pid}/status")) else { continue };
        let name =
            status.lines().next().unwrap_or("").trim_start_matches("Name:").trim().to_string();
        found.push((pid, name, status));
    }
    found
}

fn status_field<'a>(status: &'a str, field: &str) -> &'a str {
    status.lines().find_map(|l| l.strip_prefix(&format!("{field}:"))).map(str::trim).unwrap_or("")
}

/// The official "everything" server over Streamable HTTP (`streamableHttp`, at /mcp) or over
/// the legacy HTTP+SSE transport (`sse`, at /sse); either way clients reach the gateway at /mcp.
/// An MCPServer from a template in e2e/nodes (shared with the demo), its @NAMES@ filled in.
fn server_yaml(file: &str, vars: &[(&str, &str)]) -> String {
    let text = std::fs::read_to_string(repo_root().join("e2e/nodes").join(file)).unwrap();
    let filled = vars.iter().fold(text, |t, (k, v)| t.replace(&format!("@{k}@"), v));
    assert!(!filled.contains("@NAMESPACE@") && !filled.contains("@IMAGE@"), "{filled}");
    filled
}

/// The official "everything" server over Streamable HTTP (`streamableHttp`, at /mcp) or over
/// the legacy HTTP+SSE transport (`sse`, at /sse); either way clients reach the gateway at /mcp.
fn everything_yaml(ns: &str, name: &str, mode: &str, image: &str, idp: &Idp) -> String {
    let (transport, path) =
        if mode == "sse" { ("sse", "/sse") } else { ("streamable-http", "/mcp") };
    let port = idp.port.to_string();
    server_yaml(
        "everything.yaml",
        &[
            ("NAMESPACE", ns),
            ("NAME", name),
            ("MODE", mode),
            ("TRANSPORT", transport),
            ("PATH", path),
            ("IMAGE", image),
            ("ISSUER", &idp.issuer),
            ("NODE_IP", NODE_IP),
            ("IDP_PORT", &port),
        ],
    )
}

/// `filesystem.yaml` (Node.js, stdio) or `python-sse.yaml` (the Python SDK, legacy SSE).
fn server_from(file: &str, ns: &str, image: &str, idp: &Idp) -> String {
    let port = idp.port.to_string();
    server_yaml(
        file,
        &[
            ("NAMESPACE", ns),
            ("IMAGE", image),
            ("ISSUER", &idp.issuer),
            ("NODE_IP", NODE_IP),
            ("IDP_PORT", &port),
        ],
    )
}

/// The `rug` MCPServer and its `ToolsVerified` condition, once it has one.
async fn tools_verified(cluster: &Cluster, ns: &str) -> Option<(Value, Value)> {
    let s = k_json(cluster, &["get", "mcpserver", "-n", ns, "rug"]).await;
    let c = s["status"]["conditions"]
        .as_array()?
        .iter()
        .find(|c| c["type"] == "ToolsVerified")?
        .clone();
    Some((s, c))
}

/// A rug pull on the real node: the tools of `rug` pinned with `palisade pin` from its running
/// gateway, then the server rewrites a description: the tool leaves the listing, its call is
/// refused, the gateway's audit log names the change, and the operator's `ToolsVerified`
/// condition says what changed.
async fn tool_definitions_pinned(cluster: &Cluster, ns: &str, unpinned: &str, idp: &Idp) {
    let t0 = Instant::now();
    wait_ready(cluster, ns, "rug").await;
    let pod = server_pods(cluster, ns, "rug").await.remove(0);
    let ip = pod["status"]["podIP"].as_str().unwrap().to_string();
    // The admin port, as `kubectl port-forward` would give it (the node reaches its pods).
    let file = idp.dir.join("rug.yaml");
    std::fs::write(&file, unpinned).unwrap();
    let out = std::process::Command::new(palisade_bin())
        .args(["pin", file.to_str().unwrap(), "--write", "--gateway", &format!("http://{ip}:9090")])
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&out.stderr).to_string();
    assert!(out.status.success(), "palisade pin: {said}");
    assert!(said.contains("pinned: get_weather, add, rewrite_tool"), "{said}");
    let pinned = std::fs::read_to_string(&file).unwrap();
    assert_eq!(pinned.matches("definition:").count(), 3, "{pinned}");
    apply(cluster, &pinned).await;
    // The pins change the gateway's config: the Deployment rolls out.
    k(cluster, &["rollout", "status", "-n", ns, "deployment/rug", "--timeout=240s"]).await;
    eventually(WAIT, "rug: ToolsVerified True with the pins", || async {
        let (s, c) = tools_verified(cluster, ns).await?;
        let current = s["status"]["observedGeneration"] == s["metadata"]["generation"];
        (current && c["reason"] == "DefinitionsVerified").then_some(())
    })
    .await
    .unwrap();
    wait_ready(cluster, ns, "rug").await;

    let ca = gateway_ca(cluster, ns, "rug", &idp.dir).await;
    let url = format!("https://rug.{ns}.svc:8443/mcp");
    let token = idp.token("alice", "https://mcp.e2e.test/rug");
    let before = client(&url, &token, &ca, &[r#"get_weather:{"city":"Oslo"}"#]).await;
    assert_eq!(
        before["tools"],
        serde_json::json!(["add", "get_weather", "rewrite_tool"]),
        "{before}"
    );
    assert_eq!(before["calls"]["get_weather"]["error"], false, "{before}");
    // The server changes the reviewed description of get_weather.
    let rewrite = r#"rewrite_tool:{"tool":"get_weather","description":"Returns the weather for a city, in degrees Fahrenheit."}"#;
    let rewritten = client(&url, &token, &ca, &[rewrite]).await;
    assert_eq!(rewritten["calls"]["rewrite_tool"]["error"], false, "{rewritten}");
    let after =
        client(&url, &token, &ca, &[r#"get_weather:{"city":"Oslo"}"#, r#"add:{"a":2,"b":3}"#])
            .await;
    assert_eq!(after["tools"], serde_json::json!(["add", "rewrite_tool"]), "{after}");
    assert_eq!(after["calls"]["get_weather"]["error"], true, "{after}");
    assert!(
        after["calls"]["get_weather"]["text"].as_str().unwrap().contains("withheld"),
        "{after}"
    );
    assert_eq!(after["calls"]["add"]["error"], false, "{after}");
    let logs = k(cluster, &["logs", "-n", ns, "deployment/rug", "-c", "gateway"]).await;
    let event = logs.lines().find(|l| {
        l.starts_with('{')
            && l.contains("\"kind\":\"tool_definition_changed\"")
            && l.contains("changed: description")
    });
    assert!(event.is_some(), "the change is in the gateway's audit log:\n{logs}");
    let t_status = Instant::now();
    let condition = eventually(WAIT, "rug: ToolsVerified False naming the change", || async {
        let (_, c) = tools_verified(cluster, ns).await?;
        (c["status"] == "False").then_some(c)
    })
    .await
    .unwrap();
    let message = condition["message"].as_str().unwrap();
    assert!(
        message
            .contains("tool get_weather: definition differs from its pin (changed: description;"),
        "{condition}"
    );
    println!(
        "rug pull: pinned and verified, change withheld; status after {:.1}s (all {:.1}s)",
        t_status.elapsed().as_secs_f64(),
        t0.elapsed().as_secs_f64()
    );
}

/// Processes of a test stage on the node's side (outside every pod); killed when dropped.
struct Children(Vec<std::process::Child>);

impl Drop for Children {
    fn drop(&mut self) {
        for c in &mut self.0 {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// A remote MCP server on the real node: the official Python SDK server on the node's side,
/// behind HAProxy (from Debian) terminating TLS with a certificate for the node's address from a
/// CA of the test's own, which Palisade neither runs nor pins. Its `MCPServer` (`spec.remote`)
/// becomes a pod with the gateway alone; through it the Python SDK client gets alice's filtered
/// listing and calls, the server receives the gateway's credential from a Secret (never the
/// client's token), a tool outside alice's role is refused, and the audit line is in the log.
async fn remote_server_proxied(cluster: &Cluster, ns: &str, idp: &Idp) {
    let t0 = Instant::now();
    let dir = idp.dir.join("remote");
    std::fs::create_dir_all(&dir).unwrap();
    let (backend, front) = (free_port(), free_port());
    let server = std::process::Command::new(python())
        .arg(repo_root().join("gateway/tests/peers/py_server.py"))
        .args(["http", &backend.to_string()])
        .spawn()
        .unwrap();
    let ca =
        palisade_https::ca::Authority::generate("remote CA", Duration::from_secs(3600)).unwrap();
    let leaf = ca.issue_server(&[NODE_IP.to_string()], Duration::from_secs(3600)).unwrap();
    std::fs::write(dir.join("ca.crt"), &ca.cert_pem).unwrap();
    std::fs::write(dir.join("site.pem"), format!("{}{}", leaf.cert_pem, leaf.key_pem)).unwrap();
    let cfg = format!(
        "global\n  maxconn 256\ndefaults\n  mode http\n  timeout connect 2s\n  timeout client 60s\n  \
         timeout server 60s\nfrontend tls\n  bind {NODE_IP}:{front} ssl crt {}\n  default_backend server\n\
         backend server\n  http-request set-header Host 127.0.0.1:{backend}\n  server s 127.0.0.1:{backend}\n",
        dir.join("site.pem").display()
    );
    std::fs::write(dir.join("haproxy.cfg"), cfg).unwrap();
    let haproxy = std::process::Command::new(tool("haproxy").unwrap())
        .args(["-db", "-f"])
        .arg(dir.join("haproxy.cfg"))
        .spawn()
        .unwrap();
    let _children = Children(vec![server, haproxy]);

    let key = format!("remote-key-{}", rand_suffix());
    let ca_arg = format!("--from-file=ca.crt={}", dir.join("ca.crt").display());
    let key_arg = format!("--from-literal=key={key}");
    k(cluster, &["create", "secret", "generic", "remote-ca", "-n", ns, &ca_arg]).await;
    k(cluster, &["create", "secret", "generic", "remote-key", "-n", ns, &key_arg]).await;
    let idp_port = idp.port.to_string();
    let front_port = front.to_string();
    let yaml = server_yaml(
        "remote.yaml",
        &[
            ("NAMESPACE", ns),
            ("ISSUER", &idp.issuer),
            ("NODE_IP", NODE_IP),
            ("IDP_PORT", &idp_port),
            ("REMOTE_PORT", &front_port),
        ],
    );
    apply(cluster, &yaml).await;
    wait_ready(cluster, ns, "remote").await;
    for pod in server_pods(cluster, ns, "remote").await {
        assert_eq!(containers(&pod), ["gateway"], "a remote server runs no container of its own");
    }
    let status = k_json(cluster, &["get", "mcpserver", "-n", ns, "remote"]).await;
    let verified = status["status"]["conditions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["type"] == "ImageVerified")
        .cloned()
        .unwrap_or_default();
    assert_eq!(verified["reason"], "RemoteServer", "{status}");

    let gw_ca = gateway_ca(cluster, ns, "remote", &idp.dir).await;
    let url = format!("https://remote.{ns}.svc:8443/mcp");
    let token = idp.token("alice", "https://mcp.e2e.test/remote");
    let calls =
        [r#"echo:{"message":"to a remote server"}"#, "show_auth_claims:{}", r#"add:{"a":1,"b":2}"#];
    let report = match try_client(&url, &token, &gw_ca, &calls).await {
        Ok(report) => report,
        Err(e) => {
            let objects =
                ["get", "pods,svc,endpointslices,networkpolicies", "-n", ns, "-o", "wide"];
            let logs = ["logs", "-n", ns, "deployment/remote", "-c", "gateway"];
            let objects = kubectl(cluster, &objects, None).await.map(|r| r.1);
            let logs = kubectl(cluster, &logs, None).await.map(|r| r.1);
            panic!("{e}\n{objects:?}\n{logs:?}");
        }
    };
    assert_eq!(report["tools"], serde_json::json!(["echo", "show_auth_claims"]), "{report}");
    let echo = &report["calls"]["echo"];
    assert!(
        echo["error"] == false && echo["text"].as_str().unwrap().contains("to a remote server")
    );
    assert_eq!(report["calls"]["add"]["error"], true, "add is outside alice's role: {report}");
    let claims: Value =
        serde_json::from_str(report["calls"]["show_auth_claims"]["text"].as_str().unwrap())
            .unwrap_or_else(|_| panic!("{report}"));
    use sha2::Digest;
    assert_eq!(claims["sha256"], hex::encode(sha2::Sha256::digest(key.as_bytes())), "{report}");
    let logs = k(cluster, &["logs", "-n", ns, "deployment/remote", "-c", "gateway"]).await;
    let audited = logs.lines().any(|l| {
        l.starts_with('{')
            && l.contains("\"principal\":\"alice\"")
            && l.contains("\"name\":\"echo\"")
    });
    assert!(audited, "the call's audit line is in the gateway's log:\n{logs}");
    println!("remote server proxied: {:.1}s", t0.elapsed().as_secs_f64());
}

/// A virtual server on the real node, over the `everything` and `python-sse` servers: through
/// the chart's webhook (a name the servers share is refused without prefixes), reconciled by
/// the operator into a gateway-only pod; the official Python SDK client sees each user's
/// prefixed tools (the virtual server's roles, then each server's own for the same user, via
/// a token exchanged at the IdP), calls a tool of each server, and the status names them.
async fn virtual_server_over_two(cluster: &Cluster, ns: &str, idp: &Idp) {
    let t0 = Instant::now();
    let secret = std::fs::read_to_string(idp.dir.join("client-secret")).unwrap();
    let literal = format!("--from-literal=secret={secret}");
    k(cluster, &["create", "secret", "generic", "idp-exchange", "-n", ns, &literal]).await;
    let port = idp.port.to_string();
    let yaml = |prefix: &str| {
        server_yaml(
            "virtual.yaml",
            &[
                ("NAMESPACE", ns),
                ("ISSUER", &idp.issuer),
                ("NODE_IP", NODE_IP),
                ("IDP_PORT", &port),
                ("PREFIX", prefix),
            ],
        )
    };
    // Without prefixes both servers' echo would be one name: refused at admission.
    let (ok, out) = kubectl(cluster, &["apply", "-f", "-"], Some(&yaml("Never"))).await.unwrap();
    assert!(!ok, "a shared name without prefixes was admitted: {out}");
    assert!(out.contains("echo is listed by everything/echo and python-sse/echo"), "{out}");
    apply(cluster, &yaml("Always")).await;
    let ready = eventually(WAIT, "virtual server front Ready", || async {
        let s = k_json(cluster, &["get", "mcpvirtualserver", "-n", ns, "front"]).await;
        let c = s["status"]["conditions"].as_array()?;
        c.iter().any(|c| c["type"] == "Ready" && c["status"] == "True").then_some(s)
    })
    .await;
    let status = match ready {
        Ok(s) => s,
        Err(_) => {
            let s = k(cluster, &["get", "mcpvirtualserver", "-n", ns, "front", "-o", "yaml"]).await;
            let pods = k(cluster, &["get", "pods", "-n", ns, "-o", "wide"]).await;
            let logs = k(cluster, &["logs", "-n", ns, "deployment/front", "-c", "gateway"]).await;
            panic!("front not Ready:\n{s}\n{pods}\n{logs}");
        }
    };
    assert_eq!(status["status"]["servers"], "everything=every,python-sse=py", "{status}");
    let pods =
        k_json(cluster, &["get", "pods", "-n", ns, "-l", "palisade.dev/mcp-virtual-server=front"])
            .await;
    for pod in pods["items"].as_array().unwrap() {
        assert_eq!(containers(pod), ["gateway"], "a virtual server runs only its gateway");
    }

    let ca = gateway_ca(cluster, ns, "front", &idp.dir).await;
    let url = format!("https://front.{ns}.svc:8443/mcp");
    let alice = idp.token("alice", "https://mcp.e2e.test/front");
    let calls = [r#"every_echo:{"message":"to every"}"#, r#"py_echo:{"message":"to py"}"#];
    let report = client(&url, &alice, &ca, &calls).await;
    assert_eq!(report["tools"], serde_json::json!(["every_echo", "py_echo"]), "{report}");
    for (tool, text) in [("every_echo", "to every"), ("py_echo", "to py")] {
        let r = &report["calls"][tool];
        assert!(r["error"] == false && r["text"].as_str().unwrap().contains(text), "{report}");
    }
    // bob: the virtual server grants both echoes, but only python-sse grants him anything.
    let bob = idp.token("bob", "https://mcp.e2e.test/front");
    let report = client(&url, &bob, &ca, &[r#"py_echo:{"message":"bob"}"#]).await;
    assert_eq!(report["tools"], serde_json::json!(["py_echo"]), "{report}");
    assert_eq!(report["calls"]["py_echo"]["error"], false, "{report}");
    // Each server saw alice herself (an exchanged token), under its own tool name.
    let logs = k(cluster, &["logs", "-n", ns, "deployment/python-sse", "-c", "gateway"]).await;
    assert!(
        logs.lines().any(|l| l.starts_with('{')
            && l.contains("\"principal\":\"alice\"")
            && l.contains("\"name\":\"echo\"")),
        "python-sse's audit has alice's echo:\n{logs}"
    );
    println!("virtual server over two servers: {:.1}s", t0.elapsed().as_secs_f64());
}

fn target_pod_yaml(ns: &str, image: &str) -> String {
    format!(
        r#"apiVersion: v1
kind: Pod
metadata:
  name: bystander
  namespace: {ns}
  labels: {{ app: bystander }}
spec:
  automountServiceAccountToken: false
  securityContext:
    runAsNonRoot: true
    runAsUser: 65532
    seccompProfile: {{ type: RuntimeDefault }}
  containers:
    - name: listener
      image: {image}
      command: ["/usr/local/bin/node", "-e", "require('net').createServer(s=>s.end('bystander')).listen(8080)"]
      securityContext:
        allowPrivilegeEscalation: false
        readOnlyRootFilesystem: true
        capabilities: {{ drop: [ALL] }}
      resources:
        limits: {{ cpu: 200m, memory: 128Mi }}
"#
    )
}

#[tokio::test]
async fn palisade_on_a_real_node() {
    let cluster = Cluster::shared().await;
    let signed = signed_images().expect("PALISADE_E2E_SIGNED is set by e2e/run-tests");
    let operator_image = image("PALISADE_E2E_IMAGES", "palisade");
    let gateway_image = image("PALISADE_E2E_IMAGES", "palisade-gateway");
    let server_image = image("PALISADE_E2E_SERVER_IMAGES", "node-mcp");
    let python_image = image("PALISADE_E2E_SERVER_IMAGES", "python-mcp");
    let registry = operator_image.split('/').next().unwrap().to_string();

    // --- Palisade, installed by Helm -----------------------------------------------------------
    // A first install, as on a fresh cluster: the CRDs the earlier tests applied themselves
    // (with every leftover object of theirs; nothing of Palisade sets finalizers) go first, so
    // that the release creates its own.
    let names: Vec<String> =
        palisade_crds::crds().into_iter().filter_map(|(_, crd)| crd.metadata.name).collect();
    let mut delete = vec!["delete", "crd"];
    delete.extend(names.iter().map(String::as_str));
    delete.extend(["--ignore-not-found", "--wait", "--timeout=120s"]);
    k(cluster, &delete).await;
    let t0 = Instant::now();
    real_namespace(cluster, RELEASE_NS).await;
    let (ok, out) = helm(
        cluster,
        &[
            "install",
            "palisade",
            "charts/palisade",
            "--namespace",
            RELEASE_NS,
            "--set",
            &format!("operator.image={operator_image}"),
            "--set",
            &format!("gateway.image={gateway_image}"),
            "--set",
            &format!("operator.insecureRegistries={{{registry}}}"),
            "--wait",
            "--timeout",
            "240s",
        ],
    )
    .await;
    if !ok {
        let pods = k(cluster, &["get", "pods", "-n", RELEASE_NS, "-o", "wide"]).await;
        let events = k(cluster, &["get", "events", "-n", RELEASE_NS]).await;
        panic!("helm install: {out}\n{pods}\n{events}");
    }
    assert!(out.contains("Palisade 0.1.0 is installed"), "NOTES.txt: {out}");
    println!("helm install --wait: {:.1}s", t0.elapsed().as_secs_f64());
    for d in ["palisade-operator", "palisade-webhook"] {
        let dep = k_json(cluster, &["get", "deployment", "-n", RELEASE_NS, d]).await;
        assert_eq!(dep["status"]["readyReplicas"], 2, "{d}: {}", dep["status"]);
    }

    // --- MCP servers on the real node ------------------------------------------------------------
    let ns = format!("e2e-nodes-{:06}", rand_suffix());
    real_namespace(cluster, &ns).await;
    signed.install_key(&cluster.client().await.unwrap(), &ns).await.unwrap();
    let idp = Idp::start();
    k(
        cluster,
        &[
            "create",
            "secret",
            "generic",
            "idp-ca",
            "-n",
            &ns,
            &format!("--from-file=ca.pem={}", idp.dir.join("ca.pem").display()),
        ],
    )
    .await;
    // Ready pods are not yet a data path: kube-proxy programs the webhook's Service a moment
    // later (until then the API server's call is refused). Admission through the Service, timed.
    let everything = everything_yaml(&ns, "everything", "streamableHttp", &server_image, &idp);
    let t_admission = Instant::now();
    eventually(Duration::from_secs(60), "admission through the webhook's Service", || async {
        let dry = ["apply", "--dry-run=server", "-f", "-"];
        kubectl(cluster, &dry, Some(&everything)).await.ok()?.0.then_some(())
    })
    .await
    .unwrap();
    println!("admission through the Service: waited {:.1}s", t_admission.elapsed().as_secs_f64());
    apply(cluster, &everything).await;
    apply(cluster, &everything_yaml(&ns, "everything-sse", "sse", &server_image, &idp)).await;
    apply(cluster, &server_from("filesystem.yaml", &ns, &server_image, &idp)).await;
    apply(cluster, &server_from("python-sse.yaml", &ns, &python_image, &idp)).await;
    let rug_yaml = server_from("rug.yaml", &ns, &python_image, &idp);
    apply(cluster, &rug_yaml).await;
    wait_ready(cluster, &ns, "everything").await;
    wait_ready(cluster, &ns, "filesystem").await;
    wait_ready(cluster, &ns, "everything-sse").await;
    wait_ready(cluster, &ns, "python-sse").await;

    // The official Python SDK client through the Service, with TLS and an IdP token.
    let ca_file = gateway_ca(cluster, &ns, "everything", &idp.dir).await;
    let url = format!("https://everything.{ns}.svc:8443/mcp");
    let token = idp.token("alice", "https://mcp.e2e.test/everything");
    let report = client(
        &url,
        &token,
        &ca_file,
        &[r#"echo:{"message":"hello from the node"}"#, r#"add:{"a":1,"b":2}"#],
    )
    .await;
    assert_eq!(report["tools"], serde_json::json!(["echo"]), "filtered listing: {report}");
    assert_eq!(report["calls"]["echo"]["error"], false, "{report}");
    assert!(report["calls"]["echo"]["text"].as_str().unwrap().contains("hello from the node"));
    assert_eq!(report["calls"]["add"]["error"], true, "add is outside alice's role: {report}");
    let logs = k(cluster, &["logs", "-n", &ns, "deployment/everything", "-c", "gateway"]).await;
    let refused = logs.lines().find(|l| {
        l.starts_with('{') && l.contains("\"principal\":\"alice\"") && l.contains("add not granted")
    });
    assert!(refused.is_some(), "the refusal's audit line is in the gateway's log:\n{logs}");

    // Legacy SSE upstreams (the everything server; the Python SDK's server), behind the same
    // gateway front.
    for server in ["everything-sse", "python-sse"] {
        let ca = gateway_ca(cluster, &ns, server, &idp.dir).await;
        let url = format!("https://{server}.{ns}.svc:8443/mcp");
        let token = idp.token("alice", &format!("https://mcp.e2e.test/{server}"));
        let report = client(&url, &token, &ca, &[r#"echo:{"message":"over sse"}"#]).await;
        assert_eq!(report["tools"], serde_json::json!(["echo"]), "{server}: {report}");
        assert_eq!(report["calls"]["echo"]["error"], false, "{server}: {report}");
        assert!(report["calls"]["echo"]["text"].as_str().unwrap().contains("over sse"));
    }

    // The stdio server, through the shell-free bridge in its container.
    let fs_url = format!("https://filesystem.{ns}.svc:8443/mcp");
    let fs_token = idp.token("alice", "https://mcp.e2e.test/filesystem");
    let fs_ca_file = gateway_ca(cluster, &ns, "filesystem", &idp.dir).await;
    // Both eras: a session's stdio process ends with the session; the gateway's shared
    // connection for stateless calls keeps one running, which is inspected below.
    for mode in ["legacy", "2026-07-28"] {
        let fs_report =
            client_in(mode, &fs_url, &fs_token, &fs_ca_file, &["list_allowed_directories:{}"])
                .await
                .unwrap_or_else(|e| panic!("{mode}: {e}"));
        assert_eq!(
            fs_report["tools"],
            serde_json::json!(["list_allowed_directories"]),
            "{mode}: {fs_report}"
        );
        let dirs = &fs_report["calls"]["list_allowed_directories"];
        assert!(
            dirs["error"] == false && dirs["text"].as_str().unwrap().contains("/projects"),
            "{mode}: {fs_report}"
        );
    }

    tool_definitions_pinned(cluster, &ns, &rug_yaml, &idp).await;
    remote_server_proxied(cluster, &ns, &idp).await;
    virtual_server_over_two(cluster, &ns, &idp).await;

    // --- Hardening, observed from inside the running containers ---------------------------------
    let pod = server_pods(cluster, &ns, "everything").await.remove(0);
    let pod_name = pod["metadata"]["name"].as_str().unwrap().to_string();
    let script = r#"
const fs=require('fs');const r={};
try{fs.writeFileSync('/probe','x');r.root='writable'}catch(e){r.root=e.code}
try{fs.writeFileSync('/tmp/probe','x');r.tmp='ok'}catch(e){r.tmp=e.code}
const st=fs.readFileSync('/proc/self/status','utf8');
for(const f of ['Uid','CapEff','Seccomp','NoNewPrivs']){r[f]=(st.match(new RegExp('^'+f+':\\s*(.*)$','m'))||[])[1]}
r.token=fs.existsSync('/var/run/secrets/kubernetes.io/serviceaccount/token');
console.log(JSON.stringify(r))"#;
    let out = k(
        cluster,
        &["exec", "-n", &ns, &pod_name, "-c", "server", "--", "/usr/local/bin/node", "-e", script],
    )
    .await;
    let seen: Value = serde_json::from_str(out.trim()).unwrap();
    println!("server container: {seen}");
    assert_eq!(seen["root"], "EROFS", "{seen}");
    assert_eq!(seen["tmp"], "ok", "{seen}");
    assert!(!seen["Uid"].as_str().unwrap().split_whitespace().any(|u| u == "0"), "{seen}");
    assert_eq!(seen["CapEff"], "0000000000000000", "{seen}");
    assert_eq!(seen["Seccomp"], "2", "{seen}");
    assert_eq!(seen["NoNewPrivs"], "1", "{seen}");
    assert_eq!(seen["token"], false, "{seen}");
    // Every process of both pods, the gateways included (their images have nothing to exec).
    for server in ["everything", "filesystem"] {
        let pod = server_pods(cluster, &ns, server).await.remove(0);
        let uid = pod["metadata"]["uid"].as_str().unwrap();
        let procs = pod_processes(uid);
        let names: Vec<&str> = procs.iter().map(|(_, n, _)| n.as_str()).collect();
        let tree: Vec<String> = procs
            .iter()
            .map(|(pid, n, st)| format!("{pid}:{n}<-{}", status_field(st, "PPid")))
            .collect();
        println!("{server}: processes {tree:?}");
        assert!(names.iter().any(|n| n.starts_with("palisade-gatew")), "{server}: {names:?}");
        assert!(names.contains(&"node"), "{server}: {names:?}");
        for (pid, name, status) in &procs {
            assert!(
                !["sh", "bash", "dash", "ash", "busybox"].contains(&name.as_str()),
                "{server}: a shell runs in the pod ({name}, pid {pid})"
            );
            if name == "pause" {
                continue;
            }
            let uid_line = status_field(status, "Uid");
            assert!(
                !uid_line.split_whitespace().any(|u| u == "0"),
                "{server}/{name}: Uid {uid_line}"
            );
            assert_eq!(status_field(status, "CapEff"), "0000000000000000", "{server}/{name}");
            assert_eq!(status_field(status, "Seccomp"), "2", "{server}/{name}");
        }
    }

    // --- NetworkPolicy, by packets --------------------------------------------------------------
    apply(cluster, &target_pod_yaml(&ns, &server_image)).await;
    k(cluster, &["wait", "-n", &ns, "--for=condition=Ready", "pod/bystander", "--timeout=120s"])
        .await;
    let bystander = k_json(cluster, &["get", "pod", "-n", &ns, "bystander"]).await;
    let bystander_ip = bystander["status"]["podIP"].as_str().unwrap().to_string();
    let server_ip = pod["status"]["podIP"].as_str().unwrap().to_string();
    let from_server = |host: String, port: u16| {
        let (ns, pod_name) = (ns.clone(), pod_name.clone());
        async move { probe(cluster, &ns, &pod_name, "server", &host, port).await }
    };
    assert!(from_server(DECOY.into(), 80).await.starts_with("blocked"), "cloud metadata");
    assert!(
        from_server(bystander_ip.clone(), 8080).await.starts_with("blocked"),
        "a pod in the namespace that is not allowlisted"
    );
    assert_eq!(from_server(NODE_IP.into(), idp.port).await, "open", "the allowlisted IdP");
    assert!(
        probe(cluster, &ns, "bystander", "listener", &server_ip, 3001).await.starts_with("blocked"),
        "the server's own port, from another pod"
    );
    // Without the policies (and no operator to put them back), the decoy answers: the test
    // above can fail.
    k(cluster, &["scale", "deployment", "-n", RELEASE_NS, "palisade-operator", "--replicas=0"])
        .await;
    k(
        cluster,
        &[
            "wait",
            "-n",
            RELEASE_NS,
            "--for=delete",
            "pod",
            "-l",
            "app.kubernetes.io/name=palisade-operator",
            "--timeout=60s",
        ],
    )
    .await;
    k(cluster, &["delete", "networkpolicy", "-n", &ns, "-l", "palisade.dev/mcp-server=everything"])
        .await;
    let open = eventually(Duration::from_secs(30), "decoy reachable without policies", || async {
        (from_server(DECOY.into(), 80).await == "open").then_some(())
    })
    .await;
    k(cluster, &["scale", "deployment", "-n", RELEASE_NS, "palisade-operator", "--replicas=2"])
        .await;
    open.unwrap();
    eventually(
        Duration::from_secs(120),
        "the operator restores the policies, the decoy is blocked",
        || async { from_server(DECOY.into(), 80).await.starts_with("blocked").then_some(()) },
    )
    .await
    .unwrap();

    // --- Faults ------------------------------------------------------------------------------------
    k(
        cluster,
        &["rollout", "status", "-n", RELEASE_NS, "deployment/palisade-operator", "--timeout=120s"],
    )
    .await;
    let holder = |lease: Value| lease["spec"]["holderIdentity"].as_str().unwrap_or("").to_string();
    let leader = eventually(Duration::from_secs(60), "a leader", || async {
        let h =
            holder(k_json(cluster, &["get", "lease", "-n", RELEASE_NS, "palisade-operator"]).await);
        (!h.is_empty()).then_some(h)
    })
    .await
    .unwrap();
    let t_kill = Instant::now();
    k(cluster, &["delete", "pod", "-n", RELEASE_NS, &leader, "--wait=false"]).await;
    let next = eventually(Duration::from_secs(90), "another replica takes the lease", || async {
        let h =
            holder(k_json(cluster, &["get", "lease", "-n", RELEASE_NS, "palisade-operator"]).await);
        (!h.is_empty() && h != leader).then_some(h)
    })
    .await
    .unwrap();
    println!("leader {leader} deleted; {next} leads after {:.1}s", t_kill.elapsed().as_secs_f64());

    let webhook_pods = k_json(
        cluster,
        &["get", "pods", "-n", RELEASE_NS, "-l", "app.kubernetes.io/name=palisade-webhook"],
    )
    .await;
    let victim = webhook_pods["items"][0]["metadata"]["name"].as_str().unwrap().to_string();
    k(cluster, &["delete", "pod", "-n", RELEASE_NS, &victim, "--wait=false"]).await;
    let rejected = std::fs::read_to_string(repo_root().join("examples/rejected/egress-smtp.yaml"))
        .unwrap()
        .replace("namespace: mcp-demo", &format!("namespace: {ns}"));
    for _ in 0..5 {
        let (ok, out) =
            kubectl(cluster, &["apply", "--dry-run=server", "-f", "-"], Some(&rejected))
                .await
                .unwrap();
        assert!(
            !ok && out.contains("[baseline.riskyPort]"),
            "admission with a webhook pod gone: {out}"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }

    let uid = pod["metadata"]["uid"].as_str().unwrap().to_string();
    let (gw_pid, _, _) = pod_processes(&uid)
        .into_iter()
        .find(|(_, n, _)| n.starts_with("palisade-gatew"))
        .expect("the gateway process");
    std::process::Command::new("kill").args(["-KILL", &gw_pid.to_string()]).status().unwrap();
    eventually(Duration::from_secs(120), "the gateway container restarts and is ready", || async {
        let p = k_json(cluster, &["get", "pod", "-n", &ns, &pod_name]).await;
        let gw = p["status"]["containerStatuses"]
            .as_array()?
            .iter()
            .find(|c| c["name"] == "gateway")?
            .clone();
        (gw["restartCount"].as_u64()? >= 1 && gw["ready"] == true).then_some(())
    })
    .await
    .unwrap();
    let again = client(&url, &token, &ca_file, &[r#"echo:{"message":"after the restart"}"#]).await;
    assert_eq!(again["calls"]["echo"]["error"], false, "{again}");

    // --- helm upgrade and uninstall ---------------------------------------------------------------
    let (ok, out) = helm(
        cluster,
        &[
            "upgrade",
            "palisade",
            "charts/palisade",
            "--namespace",
            RELEASE_NS,
            "--reuse-values",
            "--set",
            "operator.logLevel=debug",
            "--wait",
            "--timeout",
            "240s",
        ],
    )
    .await;
    assert!(ok, "helm upgrade: {out}");
    let dep = k_json(cluster, &["get", "deployment", "-n", RELEASE_NS, "palisade-operator"]).await;
    let env = dep["spec"]["template"]["spec"]["containers"][0]["env"].as_array().unwrap().clone();
    assert!(env.iter().any(|e| e["name"] == "RUST_LOG" && e["value"] == "debug"), "{env:?}");
    assert_eq!(dep["status"]["updatedReplicas"], 2, "rolled out: {}", dep["status"]);

    // Everything the release made, from its own manifest: gone after uninstall, but the CRDs.
    let (ok, manifest) =
        helm(cluster, &["get", "manifest", "palisade", "--namespace", RELEASE_NS]).await;
    assert!(ok, "{manifest}");
    let objects: Vec<(String, String, Option<String>)> = manifest
        .split("\n---")
        .filter_map(|doc| serde_saphyr::from_str::<Value>(doc).ok())
        .filter(|v| v["kind"].is_string())
        .map(|v| {
            let kind = v["kind"].as_str().unwrap().to_string();
            let name = v["metadata"]["name"].as_str().unwrap().to_string();
            let namespace = v["metadata"]["namespace"].as_str().map(String::from);
            (kind, name, namespace)
        })
        .collect();
    assert!(objects.len() > 20, "the release's objects: {objects:?}");
    let (ok, out) =
        helm(cluster, &["uninstall", "palisade", "--namespace", RELEASE_NS, "--wait"]).await;
    assert!(ok, "helm uninstall: {out}");
    for (kind, name, namespace) in &objects {
        let mut args =
            vec!["get", kind.as_str(), name.as_str(), "--ignore-not-found", "-o", "name"];
        if let Some(n) = namespace {
            args.extend(["-n", n.as_str()]);
        }
        let left = k(cluster, &args).await;
        if kind == "CustomResourceDefinition" {
            assert!(!left.trim().is_empty(), "the CRD {name} is kept");
        } else {
            assert!(left.trim().is_empty(), "left behind by helm uninstall: {kind} {name}");
        }
    }
    k(cluster, &["delete", "namespace", &ns, "--wait=false"]).await;
}

fn rand_suffix() -> u32 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().subsec_nanos()
        % 1_000_000
}
