//! Where Palisade's CA is kept: a Secret (created on first use, rotated when due, written with
//! optimistic concurrency so that several replicas agree), and the `caBundle` of the webhook
//! configurations. What is kept and how it rotates is `palisade_https::ca::CaState`.

use std::time::Duration;

use k8s_openapi::ByteString;
use k8s_openapi::api::admissionregistration::v1::ValidatingWebhookConfiguration;
use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, PostParams};
use kube::{Client, ResourceExt};
use palisade_https::ca::{self, BUNDLE_KEY, CERT_KEY, CaState, KEY_KEY};
use tracing::info;

#[derive(Debug, thiserror::Error)]
pub enum CaStoreError {
    #[error("Kubernetes API: {0}")]
    Kube(#[from] kube::Error),
    #[error("{0}")]
    Cert(#[from] ca::CertError),
    #[error("the CA Secret {0} kept changing under us")]
    Contention(String),
}

fn text(secret: &Secret, key: &str) -> String {
    secret
        .data
        .as_ref()
        .and_then(|d| d.get(key))
        .map(|b| String::from_utf8_lossy(&b.0).into_owned())
        .unwrap_or_default()
}

fn secret_with(name: &str, state: &CaState) -> Secret {
    let mut s = Secret {
        type_: Some("kubernetes.io/tls".into()),
        data: Some(
            state
                .stored()
                .into_iter()
                .map(|(k, v)| (k.to_string(), ByteString(v.as_bytes().to_vec())))
                .collect(),
        ),
        ..Secret::default()
    };
    s.metadata.name = Some(name.to_string());
    s.metadata.labels =
        Some([("app.kubernetes.io/part-of".to_string(), "palisade".to_string())].into());
    s
}

/// Loads the CA from its Secret, creating it on first use and rotating it when less than
/// `renew_before` of its life remains. Safe to call from several replicas at once: writes use
/// optimistic concurrency and the loser reads the winner's CA.
pub async fn ensure_ca(
    client: &Client,
    namespace: &str,
    name: &str,
    lifetime: Duration,
    renew_before: Duration,
) -> Result<CaState, CaStoreError> {
    let api: Api<Secret> = Api::namespaced(client.clone(), namespace);
    for _ in 0..5 {
        let Some(existing) = api.get_opt(name).await? else {
            let state = CaState::generate(lifetime)?;
            match api.create(&PostParams::default(), &secret_with(name, &state)).await {
                Ok(_) => {
                    info!(secret = %format!("{namespace}/{name}"), "created the Palisade CA");
                    return Ok(state);
                }
                Err(kube::Error::Api(e)) if e.code == 409 => continue,
                Err(e) => return Err(e.into()),
            }
        };
        let current = CaState::from_stored(
            &text(&existing, CERT_KEY),
            &text(&existing, KEY_KEY),
            &text(&existing, BUNDLE_KEY),
        )?;
        if !current.expiring(renew_before) {
            return Ok(current);
        }
        let next = current.rotated(lifetime)?;
        let mut replacement = secret_with(name, &next);
        replacement.metadata.resource_version = existing.resource_version();
        match api.replace(name, &PostParams::default(), &replacement).await {
            Ok(_) => {
                info!(secret = %format!("{namespace}/{name}"), "rotated the Palisade CA");
                return Ok(next);
            }
            Err(kube::Error::Api(e)) if e.code == 409 => continue,
            Err(e) => return Err(e.into()),
        }
    }
    Err(CaStoreError::Contention(format!("{namespace}/{name}")))
}

/// Sets `caBundle` of every webhook of the named configurations to `bundle`; returns how many
/// configurations were changed.
pub async fn publish_ca_bundle(
    client: &Client,
    configurations: &[String],
    bundle: &str,
) -> Result<usize, CaStoreError> {
    let api: Api<ValidatingWebhookConfiguration> = Api::all(client.clone());
    let mut changed = 0;
    for name in configurations {
        for _ in 0..5 {
            let Some(mut cfg) = api.get_opt(name).await? else { break };
            let mut dirty = false;
            for hook in cfg.webhooks.iter_mut().flatten() {
                if hook.client_config.ca_bundle.as_ref().map(|b| b.0.as_slice())
                    != Some(bundle.as_bytes())
                {
                    hook.client_config.ca_bundle = Some(ByteString(bundle.as_bytes().to_vec()));
                    dirty = true;
                }
            }
            if !dirty {
                break;
            }
            match api.replace(name, &PostParams::default(), &cfg).await {
                Ok(_) => {
                    changed += 1;
                    info!(configuration = %name, "published the CA bundle");
                    break;
                }
                Err(kube::Error::Api(e)) if e.code == 409 => continue,
                Err(e) => return Err(e.into()),
            }
        }
    }
    Ok(changed)
}
