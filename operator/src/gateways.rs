//! What the operator asks a server's running gateways: their admin `/status` (the handshake
//! summary and the tool definitions they withhold or flag), over the pod network on the admin
//! port, which the rendered NetworkPolicy opens to the operator's pods only. The
//! [`Gateways`] seam lets the reconcile tests answer without pods.

use std::time::Duration;

use futures::future::BoxFuture;
use k8s_openapi::api::core::v1::Pod;
use kube::api::ListParams;
use kube::{Api, Client};
use serde_json::Value;

/// How many ready gateways of one server are asked (each replica judges the definitions its
/// own server process lists).
const ASKED: usize = 3;
const TIMEOUT: Duration = Duration::from_secs(2);

/// What the gateways of one server said.
#[derive(Debug, Clone, PartialEq)]
pub enum Report {
    /// No gateway pod is ready to ask.
    NoneReady,
    /// Ready gateways exist but none answered.
    Unreachable(String),
    /// The `/status` answers of the gateways asked.
    Answered(Vec<Value>),
}

pub trait Gateways: Send + Sync {
    /// What the ready gateways among the pods `selector` (a label selector) selects say.
    fn status<'a>(&'a self, namespace: &'a str, selector: &'a str) -> BoxFuture<'a, Report>;
}

/// The gateways' admin ports, found through the server's ready pods.
pub struct AdminPorts {
    client: Client,
    http: reqwest::Client,
}

impl AdminPorts {
    pub fn new(client: Client) -> AdminPorts {
        let http = reqwest::Client::builder()
            .timeout(TIMEOUT)
            .no_proxy()
            .build()
            .unwrap_or_else(|_| reqwest::Client::new());
        AdminPorts { client, http }
    }
}

fn ready_ip(pod: &Pod) -> Option<String> {
    let status = pod.status.as_ref()?;
    let ready =
        status.conditions.as_ref()?.iter().any(|c| c.type_ == "Ready" && c.status == "True");
    if !ready || pod.metadata.deletion_timestamp.is_some() {
        return None;
    }
    status.pod_ip.clone()
}

impl Gateways for AdminPorts {
    fn status<'a>(&'a self, namespace: &'a str, selector: &'a str) -> BoxFuture<'a, Report> {
        Box::pin(async move {
            let pods: Api<Pod> = Api::namespaced(self.client.clone(), namespace);
            let listed = match pods.list(&ListParams::default().labels(selector)).await {
                Ok(l) => l,
                Err(e) => return Report::Unreachable(format!("cannot list the gateway pods: {e}")),
            };
            let ips: Vec<String> = listed.items.iter().filter_map(ready_ip).take(ASKED).collect();
            if ips.is_empty() {
                return Report::NoneReady;
            }
            let mut answers = Vec::new();
            let mut last_error = String::new();
            for ip in ips {
                let host = if ip.contains(':') { format!("[{ip}]") } else { ip };
                let url = format!("http://{host}:{}/status", palisade_render::ADMIN_PORT);
                match self.http.get(&url).send().await.and_then(|r| r.error_for_status()) {
                    Ok(r) => match r.json::<Value>().await {
                        Ok(v) => answers.push(v),
                        Err(e) => last_error = format!("unreadable /status: {e}"),
                    },
                    Err(e) => last_error = format!("{}", e.without_url()),
                }
            }
            if answers.is_empty() {
                Report::Unreachable(last_error)
            } else {
                Report::Answered(answers)
            }
        })
    }
}
