//! Palisade's CA in a Secret, its rotation, and the `caBundle` of the webhook configurations.
//!
//! The Secret holds `tls.crt`/`tls.key` (the current CA) and `ca-bundle.crt` (every CA whose
//! certificates may still be in use: the current one and, after a rotation, the previous one
//! until it expires). Clients (the API server) trust the bundle, so a rotation never breaks a
//! handshake: the bundle is published first, then new leaves are issued.

use std::time::Duration;

use k8s_openapi::ByteString;
use k8s_openapi::api::admissionregistration::v1::ValidatingWebhookConfiguration;
use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, PostParams};
use kube::{Client, ResourceExt};
use palisade_https::ca::{self, Authority};
use time::OffsetDateTime;
use tracing::info;

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("Kubernetes API: {0}")]
    Kube(#[from] kube::Error),
    #[error("{0}")]
    Cert(#[from] ca::CertError),
    #[error("the CA Secret {0} kept changing under us")]
    Contention(String),
}

/// The current CA and the PEM bundle to trust.
pub struct CaState {
    pub authority: Authority,
    pub bundle: String,
}

fn text(secret: &Secret, key: &str) -> String {
    secret
        .data
        .as_ref()
        .and_then(|d| d.get(key))
        .map(|b| String::from_utf8_lossy(&b.0).into_owned())
        .unwrap_or_default()
}

fn secret_with(name: &str, authority: &Authority, bundle: &str) -> Secret {
    let mut s = Secret {
        type_: Some("kubernetes.io/tls".into()),
        data: Some(
            [
                ("tls.crt", authority.cert_pem.as_str()),
                ("tls.key", authority.key_pem.as_str()),
                ("ca-bundle.crt", bundle),
            ]
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

/// PEM blocks of a bundle, dropping certificates that expired.
fn live_certs(bundle: &str) -> Vec<String> {
    let now = OffsetDateTime::now_utc();
    bundle
        .split_inclusive("-----END CERTIFICATE-----")
        .map(|c| c.trim().to_string())
        .filter(|c| c.starts_with("-----BEGIN CERTIFICATE-----"))
        .filter(|c| ca::inspect(c).is_ok_and(|i| i.not_after > now))
        .collect()
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
) -> Result<CaState, TlsError> {
    let api: Api<Secret> = Api::namespaced(client.clone(), namespace);
    for _ in 0..5 {
        let Some(existing) = api.get_opt(name).await? else {
            let authority = Authority::generate("palisade-ca", lifetime)?;
            let bundle = authority.cert_pem.trim().to_string() + "\n";
            match api.create(&PostParams::default(), &secret_with(name, &authority, &bundle)).await
            {
                Ok(_) => {
                    info!(secret = %format!("{namespace}/{name}"), "created the Palisade CA");
                    return Ok(CaState { authority, bundle });
                }
                Err(kube::Error::Api(e)) if e.code == 409 => continue,
                Err(e) => return Err(e.into()),
            }
        };
        let current =
            Authority::from_pem(&text(&existing, "tls.crt"), &text(&existing, "tls.key"))?;
        let mut bundle = text(&existing, "ca-bundle.crt");
        if bundle.trim().is_empty() {
            bundle = current.cert_pem.clone();
        }
        let expiring = ca::inspect(&current.cert_pem)
            .map(|i| i.not_after <= OffsetDateTime::now_utc() + renew_before)
            .unwrap_or(true);
        if !expiring {
            return Ok(CaState { authority: current, bundle });
        }
        // Rotate: the new CA goes first in the bundle, the old one stays while it is valid.
        let next = Authority::generate("palisade-ca", lifetime)?;
        let mut certs = vec![next.cert_pem.trim().to_string()];
        certs.extend(live_certs(&bundle).into_iter().filter(|c| c.trim() != next.cert_pem.trim()));
        let new_bundle = certs.join("\n") + "\n";
        let mut replacement = secret_with(name, &next, &new_bundle);
        replacement.metadata.resource_version = existing.resource_version();
        match api.replace(name, &PostParams::default(), &replacement).await {
            Ok(_) => {
                info!(secret = %format!("{namespace}/{name}"), "rotated the Palisade CA");
                return Ok(CaState { authority: next, bundle: new_bundle });
            }
            Err(kube::Error::Api(e)) if e.code == 409 => continue,
            Err(e) => return Err(e.into()),
        }
    }
    Err(TlsError::Contention(format!("{namespace}/{name}")))
}

/// Sets `caBundle` of every webhook of the named configurations to `bundle`; returns how many
/// configurations were changed.
pub async fn publish_ca_bundle(
    client: &Client,
    configurations: &[String],
    bundle: &str,
) -> Result<usize, TlsError> {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expired_certificates_leave_the_bundle() {
        let live = Authority::generate("live", Duration::from_secs(3600)).unwrap();
        let expired = Authority::generate("expired", Duration::ZERO).unwrap();
        std::thread::sleep(Duration::from_millis(1100));
        let bundle = format!("{}\n{}", live.cert_pem, expired.cert_pem);
        let kept = live_certs(&bundle);
        assert_eq!(kept, vec![live.cert_pem.trim().to_string()]);
    }
}
