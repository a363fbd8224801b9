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
        Ok(TestNamespace { name, client: client.clone() })
    }

    pub async fn delete(self) -> Result<(), HarnessError> {
        Api::<Namespace>::all(self.client).delete(&self.name, &DeleteParams::background()).await?;
        Ok(())
    }
}

/// Reads a YAML file of the repository into `T`.
pub fn load_yaml<T: DeserializeOwned>(relative: &str) -> Result<T, HarnessError> {
    let path = repo_root().join(relative);
    let text = std::fs::read_to_string(&path).map_err(|e| HarnessError::Io(relative.into(), e))?;
    serde_saphyr::from_str(&text).map_err(|e| HarnessError::Yaml(relative.into(), e.to_string()))
}

/// Server-side applies every CRD of the API and waits until the API server serves them.
pub async fn install_crds(client: &Client) -> Result<(), HarnessError> {
    use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
    let api: Api<CustomResourceDefinition> = Api::all(client.clone());
    let pp = PatchParams::apply("palisade-e2e").force();
    for (_, crd) in palisade_api::crds() {
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
