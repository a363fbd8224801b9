//! Test harness for end-to-end tests against a real API server.
//!
//! The first test of a run starts the local control plane with `e2e/cluster up` (which reuses a
//! running one) unless `PALISADE_E2E_KUBECONFIG` names another cluster; every test gets a fresh
//! namespace. `make test` stops the cluster at the end of the run.
#![allow(clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::time::Duration;

use k8s_openapi::api::core::v1::Namespace;
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Client, Config};
use serde::de::DeserializeOwned;
use tokio::sync::OnceCell;

#[derive(Debug, thiserror::Error)]
pub enum HarnessError {
    #[error("e2e/cluster up failed (exit {0:?}); see its output above")]
    ClusterUp(Option<i32>),
    #[error("cannot run {0}: {1}")]
    Spawn(String, std::io::Error),
    #[error("kubeconfig: {0}")]
    Kubeconfig(#[from] kube::config::KubeconfigError),
    #[error("kube: {0}")]
    Kube(#[from] kube::Error),
    #[error("{0}: {1}")]
    Io(String, std::io::Error),
    #[error("{0}: {1}")]
    Yaml(String, String),
    #[error("timed out after {0:?} waiting for {1}")]
    Timeout(Duration, String),
}

pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("e2e/ is inside the repo").to_path_buf()
}

/// The cluster under test, shared by all tests of the process.
pub struct Cluster {
    pub kubeconfig: PathBuf,
}

static CLUSTER: OnceCell<Cluster> = OnceCell::const_new();

impl Cluster {
    pub async fn shared() -> &'static Cluster {
        CLUSTER.get_or_init(|| async { Cluster::start().await.expect("cluster starts") }).await
    }

    async fn start() -> Result<Cluster, HarnessError> {
        // One crypto provider for the whole process (kube and sigstore both use aws-lc-rs).
        let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
        if let Ok(path) = std::env::var("PALISADE_E2E_KUBECONFIG") {
            return Ok(Cluster { kubeconfig: PathBuf::from(path) });
        }
        let script = repo_root().join("e2e/cluster");
        let status = tokio::process::Command::new(&script)
            .arg("up")
            .status()
            .await
            .map_err(|e| HarnessError::Spawn(script.display().to_string(), e))?;
        if !status.success() {
            return Err(HarnessError::ClusterUp(status.code()));
        }
        let out = tokio::process::Command::new(&script)
            .arg("env")
            .output()
            .await
            .map_err(|e| HarnessError::Spawn(script.display().to_string(), e))?;
        let line = String::from_utf8_lossy(&out.stdout);
        let path = line.trim().trim_start_matches("export KUBECONFIG=").to_string();
        Ok(Cluster { kubeconfig: PathBuf::from(path) })
    }

    pub async fn client(&self) -> Result<Client, HarnessError> {
        let kc = Kubeconfig::read_from(&self.kubeconfig)?;
        let config = Config::from_custom_kubeconfig(kc, &KubeConfigOptions::default()).await?;
        Ok(Client::try_from(config)?)
    }

    /// The pinned kubectl (built by e2e/tools), as admin of this cluster.
    pub fn kubectl(&self) -> Result<tokio::process::Command, HarnessError> {
        let tools = repo_root().join("e2e/tools");
        let out = std::process::Command::new(&tools)
            .args(["path", "kubectl"])
            .output()
            .map_err(|e| HarnessError::Spawn(tools.display().to_string(), e))?;
        let path = String::from_utf8_lossy(&out.stdout).trim().to_string();
        let mut cmd = tokio::process::Command::new(path);
        cmd.arg("--kubeconfig").arg(&self.kubeconfig);
        Ok(cmd)
    }
}

/// A namespace that exists for one test.
pub struct TestNamespace {
    pub name: String,
    client: Client,
}

impl TestNamespace {
    pub async fn create(client: &Client, prefix: &str) -> Result<TestNamespace, HarnessError> {
        Self::create_with_labels(client, prefix, &[]).await
    }

    pub async fn create_with_labels(
        client: &Client,
        prefix: &str,
        labels: &[(&str, &str)],
    ) -> Result<TestNamespace, HarnessError> {
        let suffix: u32 = rand::random::<u32>() % 1_000_000;
        let name = format!("{prefix}-{suffix:06}");
        let mut ns = Namespace::default();
        ns.metadata.name = Some(name.clone());
        ns.metadata.labels =
            Some(labels.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect());
        Api::<Namespace>::all(client.clone()).create(&PostParams::default(), &ns).await?;
        if let Some(signed) = signed_images() {
            signed.install_key(client, &name).await?;
        }
        Ok(TestNamespace { name, client: client.clone() })
    }

    pub async fn delete(self) -> Result<(), HarnessError> {
        Api::<Namespace>::all(self.client).delete(&self.name, &DeleteParams::background()).await?;
        Ok(())
    }
}

/// Reads a YAML file of the repository into `T`. Example images that have signed stand-ins
/// (see [`SignedImages`]) are replaced by them.
pub fn load_yaml<T: DeserializeOwned>(relative: &str) -> Result<T, HarnessError> {
    let path = repo_root().join(relative);
    let mut text =
        std::fs::read_to_string(&path).map_err(|e| HarnessError::Io(relative.into(), e))?;
    if let Some(signed) = signed_images() {
        text = signed.rewrite(&text);
    }
    serde_saphyr::from_str(&text).map_err(|e| HarnessError::Yaml(relative.into(), e.to_string()))
}

/// Runs the real cosign CLI in `dir` (keys without a password).
pub async fn cosign(dir: &Path, args: &[&str]) -> Result<(), HarnessError> {
    let bin = tool("cosign")?;
    let out = tokio::process::Command::new(&bin)
        .args(args)
        .current_dir(dir)
        .env("COSIGN_PASSWORD", "")
        .output()
        .await
        .map_err(|e| HarnessError::Spawn(bin.display().to_string(), e))?;
    if !out.status.success() {
        return Err(HarnessError::Yaml(
            format!("cosign {}", args.first().unwrap_or(&"")),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        ));
    }
    Ok(())
}

/// Signs `image` with the key pair `cosign.key` in `key_dir`, storing the signature in the
/// image's (plain HTTP, local) registry without a transparency-log entry.
pub async fn cosign_sign(key_dir: &Path, image: &str) -> Result<(), HarnessError> {
    let args = [
        "sign",
        "--key",
        "cosign.key",
        "--tlog-upload=false",
        "--allow-http-registry",
        "--yes",
        image,
    ];
    cosign(key_dir, &args).await
}

/// Attaches a signed in-toto attestation of `kind` (`cyclonedx`, `spdxjson`, ...) with the
/// predicate file `predicate` to `image`, made with `cosign.key` in `key_dir`.
pub async fn cosign_attest(
    key_dir: &Path,
    image: &str,
    predicate: &Path,
    kind: &str,
) -> Result<(), HarnessError> {
    let predicate = predicate.display().to_string();
    let args = [
        "attest",
        "--key",
        "cosign.key",
        "--type",
        kind,
        "--predicate",
        &predicate,
        "--tlog-upload=false",
        "--allow-http-registry",
        "--yes",
        image,
    ];
    cosign(key_dir, &args).await
}

/// The Secret (and key) that the examples with `spec.signature.keys` name.
pub const EXAMPLE_KEY_SECRET: (&str, &str) = ("cosign-public-key", "cosign.pub");

/// Signed stand-ins for the examples whose spec names cosign keys, made with the real cosign
/// CLI in a local registry by `e2e/signed-images up` (which `e2e/run-tests` runs and exports
/// as `PALISADE_E2E_SIGNED`). Every test namespace gets the run's public key in the Secret the
/// examples name, and operators started by the harness may reach the registry over HTTP.
pub struct SignedImages {
    pub dir: PathBuf,
    pub host: String,
    pub public_key: String,
    /// (example image, signed stand-in pinned by digest)
    pub images: Vec<(String, String)>,
}

pub fn signed_images() -> Option<&'static SignedImages> {
    static SIGNED: std::sync::OnceLock<Option<SignedImages>> = std::sync::OnceLock::new();
    SIGNED
        .get_or_init(|| {
            let dir = PathBuf::from(std::env::var_os("PALISADE_E2E_SIGNED")?);
            let read = |f: &str| std::fs::read_to_string(dir.join(f)).ok();
            let images = read("images.tsv")?
                .lines()
                .filter_map(|l| l.split_once('\t'))
                .map(|(a, b)| (a.to_string(), b.to_string()))
                .collect();
            Some(SignedImages {
                host: read("host")?.trim().to_string(),
                public_key: read("cosign.pub")?,
                images,
                dir,
            })
        })
        .as_ref()
}

impl SignedImages {
    /// `text` with every example image replaced by its signed stand-in.
    pub fn rewrite(&self, text: &str) -> String {
        self.images.iter().fold(text.to_string(), |t, (from, to)| t.replace(from.as_str(), to))
    }

    /// Signs `image` (`host/repo@sha256:...`) with the run's key, as the examples' stand-ins are.
    pub async fn sign(&self, image: &str) -> Result<(), HarnessError> {
        cosign_sign(&self.dir, image).await
    }

    /// Attests `image` with the run's key (see [`cosign_attest`]).
    pub async fn attest(
        &self,
        image: &str,
        predicate: &Path,
        kind: &str,
    ) -> Result<(), HarnessError> {
        cosign_attest(&self.dir, image, predicate, kind).await
    }

    /// Puts the run's cosign public key where the keyed examples expect it.
    pub async fn install_key(&self, client: &Client, ns: &str) -> Result<(), HarnessError> {
        let (name, key) = EXAMPLE_KEY_SECRET;
        let secret: k8s_openapi::api::core::v1::Secret =
            serde_json::from_value(serde_json::json!({
                "metadata": {"name": name},
                "stringData": {key: self.public_key},
            }))
            .map_err(|e| HarnessError::Yaml("cosign key Secret".into(), e.to_string()))?;
        Api::<k8s_openapi::api::core::v1::Secret>::namespaced(client.clone(), ns)
            .create(&PostParams::default(), &secret)
            .await?;
        Ok(())
    }
}

/// Server-side applies every CRD of the API and waits until the API server serves them.
pub async fn install_crds(client: &Client) -> Result<(), HarnessError> {
    use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
    let api: Api<CustomResourceDefinition> = Api::all(client.clone());
    let pp = PatchParams::apply("palisade-e2e").force();
    for (_, crd) in palisade_crds::crds() {
        let name = crd.metadata.name.clone().unwrap_or_default();
        api.patch(&name, &pp, &Patch::Apply(&crd)).await?;
        eventually(Duration::from_secs(30), &format!("{name} Established"), || async {
            let c = api.get(&name).await.ok()?;
            let conds = c.status?.conditions?;
            conds.iter().any(|c| c.type_ == "Established" && c.status == "True").then_some(())
        })
        .await?;
    }
    Ok(())
}

/// Polls `f` until it returns `Some`, or fails after `timeout`.
pub async fn eventually<T, F, Fut>(
    timeout: Duration,
    what: &str,
    mut f: F,
) -> Result<T, HarnessError>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if let Some(v) = f().await {
            return Ok(v);
        }
        if tokio::time::Instant::now() > deadline {
            return Err(HarnessError::Timeout(timeout, what.to_string()));
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Path of a binary built by e2e/tools (kubectl, crane, registry, helm, cosign).
pub fn tool(name: &str) -> Result<PathBuf, HarnessError> {
    let tools = repo_root().join("e2e/tools");
    let out = std::process::Command::new(&tools)
        .args(["path", name])
        .output()
        .map_err(|e| HarnessError::Spawn(tools.display().to_string(), e))?;
    Ok(PathBuf::from(String::from_utf8_lossy(&out.stdout).trim()))
}

/// The `palisade` binary under test (built by e2e/run-tests; `PALISADE_BIN` overrides).
pub fn palisade_bin() -> PathBuf {
    std::env::var("PALISADE_BIN").map(PathBuf::from).unwrap_or_else(|_| {
        let target = std::env::var("CARGO_TARGET_DIR")
            .map(PathBuf::from)
            .unwrap_or_else(|_| repo_root().join("target"));
        target.join("debug/palisade")
    })
}

/// A loopback port nothing listens on, below the kernel's ephemeral range (32768 and up), so
/// that no outgoing connection of a parallel test takes it before its server binds it; a
/// port is handed out once per test process.
pub fn free_port() -> u16 {
    use std::collections::HashSet;
    use std::sync::Mutex;
    static GIVEN: Mutex<Option<HashSet<u16>>> = Mutex::new(None);
    let Ok(mut given) = GIVEN.lock() else { return 0 };
    let given = given.get_or_insert_with(HashSet::new);
    let mut port = 20000 + (std::process::id() as u16 % 10000);
    for _ in 0..11000 {
        port = if port >= 30999 { 20000 } else { port + 1 };
        if !given.contains(&port) && std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            given.insert(port);
            return port;
        }
    }
    0
}

/// An operator process (`palisade operator`) of a test, killed when dropped.
pub struct Operator {
    child: tokio::process::Child,
    pub metrics_port: u16,
}

impl Operator {
    /// Starts an operator that keeps its CA and lease in `namespace` and reconciles only the
    /// MCPServers labelled `palisade.dev/e2e-shard=<shard>`.
    pub async fn start(
        cluster: &Cluster,
        namespace: &str,
        shard: &str,
        extra: &[&str],
    ) -> Result<Operator, HarnessError> {
        Self::start_with_kubeconfig(&cluster.kubeconfig, namespace, shard, extra).await
    }

    /// Like `start`, acting with the credentials of `kubeconfig` (e.g. the chart's ServiceAccount).
    pub async fn start_with_kubeconfig(
        kubeconfig: &Path,
        namespace: &str,
        shard: &str,
        extra: &[&str],
    ) -> Result<Operator, HarnessError> {
        let metrics_port = free_port();
        let mut args = vec![
            "--namespace".to_string(),
            namespace.to_string(),
            "--metrics-address".to_string(),
            format!("127.0.0.1:{metrics_port}"),
            "--selector".to_string(),
            format!("palisade.dev/e2e-shard={shard}"),
        ];
        args.extend(extra.iter().map(|a| a.to_string()));
        if let Some(signed) = signed_images() {
            args.extend(["--insecure-registry".to_string(), signed.host.clone()]);
        }
        let child = spawn_palisade(
            "operator",
            &args,
            kubeconfig,
            &format!("palisade-operator-{shard}-{metrics_port}.log"),
            metrics_port,
        )
        .await?;
        Ok(Operator { child, metrics_port })
    }

    /// The sum of a metric family in the operator's /metrics.
    pub async fn metric(&self, family: &str) -> Option<f64> {
        metric_sum(self.metrics_port, |l| {
            l.starts_with(family)
                && (l[family.len()..].starts_with('{') || l[family.len()..].starts_with(' '))
        })
        .await
    }

    pub async fn kill(&mut self) {
        let _ = self.child.kill().await;
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.id()
    }

    /// How the process ended, if it has.
    pub fn exited(&mut self) -> Option<std::process::ExitStatus> {
        self.child.try_wait().ok().flatten()
    }
}

/// A plain-HTTP GET to 127.0.0.1 (the operator's metrics port), without a client library.
pub async fn http_get_local(port: u16, path: &str) -> Option<String> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(("127.0.0.1", port)).await.ok()?;
    s.write_all(
        format!("GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n").as_bytes(),
    )
    .await
    .ok()?;
    let mut buf = Vec::new();
    s.read_to_end(&mut buf).await.ok()?;
    let text = String::from_utf8_lossy(&buf).into_owned();
    let (head, body) = text.split_once("\r\n\r\n")?;
    if !head.starts_with("HTTP/1.1 200") {
        return None;
    }
    // The operator answers with a fixed length or chunked; small bodies are enough here.
    if head.to_ascii_lowercase().contains("transfer-encoding: chunked") {
        let mut out = String::new();
        let mut rest = body;
        while let Some((size, tail)) = rest.split_once("\r\n") {
            let n = usize::from_str_radix(size.trim(), 16).ok()?;
            if n == 0 {
                break;
            }
            out.push_str(tail.get(..n)?);
            rest = tail.get(n + 2..)?;
        }
        return Some(out);
    }
    Some(body.to_string())
}

/// A real OCI registry (CNCF distribution) on loopback, killed when dropped.
pub struct Registry {
    _child: tokio::process::Child,
    pub host: String,
    _dir: PathBuf,
}

impl Registry {
    pub async fn start() -> Result<Registry, HarnessError> {
        let port = free_port();
        let dir = std::env::temp_dir().join(format!("palisade-registry-{port}"));
        std::fs::create_dir_all(&dir).map_err(|e| HarnessError::Io("registry dir".into(), e))?;
        let config = dir.join("config.yml");
        std::fs::write(
            &config,
            format!(
                "version: 0.1\nlog:\n  level: warn\nstorage:\n  filesystem:\n    rootdirectory: {}\n  delete:\n    enabled: true\nhttp:\n  addr: 127.0.0.1:{port}\n",
                dir.join("data").display()
            ),
        )
        .map_err(|e| HarnessError::Io("registry config".into(), e))?;
        let bin = tool("registry")?;
        let child = tokio::process::Command::new(&bin)
            .arg("serve")
            .arg(&config)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| HarnessError::Spawn(bin.display().to_string(), e))?;
        let host = format!("127.0.0.1:{port}");
        eventually(Duration::from_secs(20), "registry /v2/", || async {
            http_get_local(port, "/v2/").await.map(|_| ())
        })
        .await?;
        Ok(Registry { _child: child, host, _dir: dir })
    }

    /// Pushes a fresh single-layer image to `repo:tag` with crane and returns its digest.
    pub async fn push_random_image(&self, repo: &str, tag: &str) -> Result<String, HarnessError> {
        let crane = tool("crane")?;
        let work = self._dir.join(format!("layer-{}", rand::random::<u32>()));
        std::fs::create_dir_all(&work).map_err(|e| HarnessError::Io("layer dir".into(), e))?;
        std::fs::write(work.join("server"), rand::random::<u64>().to_string())
            .map_err(|e| HarnessError::Io("layer file".into(), e))?;
        let tar = work.join("layer.tar");
        let status = tokio::process::Command::new("tar")
            .arg("-cf")
            .arg(&tar)
            .arg("-C")
            .arg(&work)
            .arg("server")
            .status()
            .await
            .map_err(|e| HarnessError::Spawn("tar".into(), e))?;
        if !status.success() {
            return Err(HarnessError::Yaml("tar".into(), "failed".into()));
        }
        let image = format!("{}/{repo}:{tag}", self.host);
        let out = tokio::process::Command::new(&crane)
            .args(["append", "--insecure", "-f"])
            .arg(&tar)
            .args(["-t", &image])
            .output()
            .await
            .map_err(|e| HarnessError::Spawn(crane.display().to_string(), e))?;
        if !out.status.success() {
            return Err(HarnessError::Yaml(
                "crane append".into(),
                String::from_utf8_lossy(&out.stderr).into_owned(),
            ));
        }
        let out = tokio::process::Command::new(&crane)
            .args(["digest", "--insecure", &image])
            .output()
            .await
            .map_err(|e| HarnessError::Spawn(crane.display().to_string(), e))?;
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
    }
}

/// Writes a kubeconfig that acts as ServiceAccount `ns/name` (a TokenRequest token), next to
/// the cluster's admin kubeconfig.
pub async fn service_account_kubeconfig(
    cluster: &Cluster,
    ns: &str,
    name: &str,
) -> Result<PathBuf, HarnessError> {
    use k8s_openapi::api::authentication::v1::{TokenRequest, TokenRequestSpec};
    use k8s_openapi::api::core::v1::ServiceAccount;
    let client = cluster.client().await?;
    let api: Api<ServiceAccount> = Api::namespaced(client, ns);
    let req = TokenRequest {
        spec: TokenRequestSpec {
            audiences: vec![],
            expiration_seconds: Some(3600),
            ..Default::default()
        },
        ..Default::default()
    };
    let resp: TokenRequest =
        api.create_subresource("token", name, &PostParams::default(), &req).await?;
    let token = resp.status.map(|s| s.token).unwrap_or_default();
    let admin = std::fs::read_to_string(&cluster.kubeconfig)
        .map_err(|e| HarnessError::Io("kubeconfig".into(), e))?;
    let mut kc: serde_json::Value = serde_saphyr::from_str(&admin)
        .map_err(|e| HarnessError::Yaml("kubeconfig".into(), e.to_string()))?;
    kc["users"] = serde_json::json!([{ "name": "sa", "user": { "token": token } }]);
    kc["contexts"][0]["context"]["user"] = "sa".into();
    let path = cluster.kubeconfig.with_file_name(format!("sa-{ns}-{name}.kubeconfig"));
    std::fs::write(
        &path,
        serde_json::to_string(&kc)
            .map_err(|e| HarnessError::Yaml("kubeconfig".into(), e.to_string()))?,
    )
    .map_err(|e| HarnessError::Io("kubeconfig".into(), e))?;
    Ok(path)
}

/// A webhook process (`palisade webhook`) on 127.0.0.1 with a certificate for that address.
pub struct Webhook {
    child: tokio::process::Child,
    pub port: u16,
    pub metrics_port: u16,
}

impl Webhook {
    pub async fn start(
        cluster: &Cluster,
        namespace: &str,
        extra: &[&str],
    ) -> Result<Webhook, HarnessError> {
        Self::start_on(cluster, namespace, free_port(), extra).await
    }

    pub async fn start_on(
        cluster: &Cluster,
        namespace: &str,
        port: u16,
        extra: &[&str],
    ) -> Result<Webhook, HarnessError> {
        Self::start_with_kubeconfig(&cluster.kubeconfig, namespace, port, extra).await
    }

    /// Like `start_on`, acting with the credentials of `kubeconfig` (the chart's ServiceAccount).
    pub async fn start_with_kubeconfig(
        kubeconfig: &Path,
        namespace: &str,
        port: u16,
        extra: &[&str],
    ) -> Result<Webhook, HarnessError> {
        let metrics_port = free_port();
        let mut args: Vec<String> = [
            "--namespace",
            namespace,
            "--address",
            &format!("127.0.0.1:{port}"),
            "--metrics-address",
            &format!("127.0.0.1:{metrics_port}"),
            "--extra-san",
            "127.0.0.1",
            "--webhook-configuration",
            "palisade",
        ]
        .iter()
        .map(|a| a.to_string())
        .collect();
        args.extend(extra.iter().map(|a| a.to_string()));
        let child = spawn_palisade(
            "webhook",
            &args,
            kubeconfig,
            &format!("palisade-webhook-{port}.log"),
            metrics_port,
        )
        .await?;
        Ok(Webhook { child, port, metrics_port })
    }

    /// The sum of a metric family, optionally only lines containing `filter`.
    pub async fn metric(&self, family: &str, filter: &str) -> Option<f64> {
        metric_sum(self.metrics_port, |l| l.starts_with(family) && l.contains(filter)).await
    }

    pub async fn stop(mut self) {
        let _ = self.child.kill().await;
    }
}

/// Starts `palisade SUBCOMMAND ARGS` with `kubeconfig`, its log in the temp dir, and waits
/// until its `/readyz` on `metrics_port` says ok.
/// The gateway image operators started by the harness render: the run's own (e2e/images) when
/// it was built, else a well-formed digest no registry serves (kwok nodes never pull).
pub fn gateway_image() -> String {
    let built = std::env::var("PALISADE_E2E_IMAGES").ok().and_then(|path| {
        let text = std::fs::read_to_string(path).ok()?;
        text.lines().find_map(|l| {
            let mut f = l.split('\t');
            (f.next()? == "palisade-gateway").then(|| f.next().map(str::to_string))?
        })
    });
    built.unwrap_or_else(|| CHART_TEST_IMAGES[3].trim_start_matches("gateway.image=").to_string())
}

async fn spawn_palisade(
    subcommand: &str,
    args: &[String],
    kubeconfig: &Path,
    log_name: &str,
    metrics_port: u16,
) -> Result<tokio::process::Child, HarnessError> {
    let bin = palisade_bin();
    let log = std::fs::File::create(std::env::temp_dir().join(log_name))
        .map_err(|e| HarnessError::Io(format!("{subcommand} log"), e))?;
    let child = tokio::process::Command::new(&bin)
        .arg(subcommand)
        .args(args)
        .env("KUBECONFIG", kubeconfig)
        .env("RUST_LOG", "info")
        .env("PALISADE_GATEWAY_IMAGE", gateway_image())
        .stdout(std::process::Stdio::null())
        .stderr(log)
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| HarnessError::Spawn(bin.display().to_string(), e))?;
    eventually(Duration::from_secs(30), &format!("{subcommand} /readyz"), || async {
        (http_get_local(metrics_port, "/readyz").await? == "ok").then_some(())
    })
    .await?;
    Ok(child)
}

/// The sum of the samples of the lines of a component's /metrics that `keep` selects.
async fn metric_sum(port: u16, keep: impl Fn(&str) -> bool) -> Option<f64> {
    let text = http_get_local(port, "/metrics").await?;
    Some(
        text.lines()
            .filter(|l| keep(l))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum(),
    )
}

/// `helm` arguments naming images pinned by digest, for renders whose pods never pull (the
/// chart has no default images). The digests are well-formed and served by no registry.
pub const CHART_TEST_IMAGES: [&str; 4] = [
    "--set",
    "operator.image=registry.invalid/palisade@sha256:1d5a7f2b0c9e8d7a6b5c4d3e2f1a0b9c8d7e6f5a4b3c2d1e0f9a8b7c6d5e4f3a",
    "--set",
    "gateway.image=registry.invalid/palisade-gateway@sha256:2e6b8a3c1d0f9e8b7c6d5e4f3a2b1c0d9e8f7a6b5c4d3e2f1a0b9c8d7e6f5a4b",
];

/// The chart's admission objects (webhook configuration and, when `policy`, the
/// ValidatingAdmissionPolicies) rendered for a webhook at `url`, as YAML.
pub async fn chart_admission_objects(
    url: Option<&str>,
    policy: bool,
    release_namespace: &str,
) -> Result<String, HarnessError> {
    let helm = tool("helm")?;
    let mut cmd = tokio::process::Command::new(&helm);
    cmd.args([
        "template",
        "palisade",
        "charts/palisade",
        "--namespace",
        release_namespace,
        "--kube-version",
        "1.33.0",
    ])
    .args(["--set", &format!("webhook.admissionPolicy={policy}")])
    .args(CHART_TEST_IMAGES)
    .current_dir(repo_root());
    if let Some(u) = url {
        cmd.args(["--set", &format!("webhook.url={u}")]);
    }
    let out = cmd.output().await.map_err(|e| HarnessError::Spawn(helm.display().to_string(), e))?;
    if !out.status.success() {
        return Err(HarnessError::Yaml(
            "helm template".into(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        ));
    }
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let docs: Vec<&str> = text
        .split("\n---\n")
        .filter(|d| d.contains("apiVersion: admissionregistration.k8s.io/v1"))
        .filter(|d| url.is_some() || !d.contains("kind: ValidatingWebhookConfiguration"))
        .collect();
    Ok(docs.join("\n---\n"))
}

/// Runs the pinned kubectl with `stdin` as input; returns (success, stdout + stderr).
pub async fn kubectl(
    cluster: &Cluster,
    args: &[&str],
    stdin: Option<&str>,
) -> Result<(bool, String), HarnessError> {
    use tokio::io::AsyncWriteExt;
    let mut cmd = cluster.kubectl()?;
    cmd.args(args).stdout(std::process::Stdio::piped()).stderr(std::process::Stdio::piped());
    if stdin.is_some() {
        cmd.stdin(std::process::Stdio::piped());
    }
    let mut child = cmd.spawn().map_err(|e| HarnessError::Spawn("kubectl".into(), e))?;
    if let (Some(input), Some(mut pipe)) = (stdin, child.stdin.take()) {
        pipe.write_all(input.as_bytes())
            .await
            .map_err(|e| HarnessError::Io("kubectl stdin".into(), e))?;
    }
    let out =
        child.wait_with_output().await.map_err(|e| HarnessError::Spawn("kubectl".into(), e))?;
    let mut text = String::from_utf8_lossy(&out.stdout).into_owned();
    text.push_str(&String::from_utf8_lossy(&out.stderr));
    Ok((out.status.success(), text))
}

/// Rules of the webhook's baseline that the chart's ValidatingAdmissionPolicy also enforces
/// (the backstop while the webhook is unavailable).
pub const VAP_RULES: &[&str] = &[
    "baseline.image",
    "baseline.metadataEgress",
    "baseline.resources",
    "baseline.audit",
    "baseline.destructiveApproval",
    "baseline.envInjection",
    "baseline.plaintextSecret",
    "baseline.mountPath",
    "baseline.noShell",
    "pss.privileged",
    "workload.image",
    "workload.shareProcessNamespace",
];

/// One refusal the rejection table (examples/rejected/) expects: a file, a rule, a field.
#[derive(Debug, Clone)]
pub struct Case {
    pub file: String,
    pub rule: String,
    pub field: String,
}

/// One case per `# expect:` line of examples/rejected/.
pub fn rejection_table() -> Vec<Case> {
    let mut cases = Vec::new();
    let mut files: Vec<_> = std::fs::read_dir(repo_root().join("examples/rejected"))
        .map(|d| d.filter_map(|e| e.ok().map(|e| e.path())).collect())
        .unwrap_or_default();
    files.sort();
    for path in files {
        let text = std::fs::read_to_string(&path).unwrap_or_default();
        for l in text.lines().filter_map(|l| l.strip_prefix("# expect: ")) {
            if let Some((rule, field)) = l.split_once(' ') {
                cases.push(Case {
                    file: path.display().to_string(),
                    rule: rule.into(),
                    field: field.into(),
                });
            }
        }
    }
    cases
}

/// Whether a rejection-table file is refused by the CRD itself (schema or CEL), before any
/// admission control sees it.
pub fn refused_by_the_crd(file: &str) -> bool {
    rejection_table().iter().any(|c| c.file == file && c.rule.starts_with("crd."))
}
