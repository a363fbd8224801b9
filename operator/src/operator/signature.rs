//! Cosign signature verification of the pinned image, with the public keys named in
//! `spec.signature.keys` (Secrets in the server's namespace). Fails closed: no signature, a
//! signature by another key, an unreadable key or an unreachable signature store all block the
//! rollout. Keyless identities need the Sigstore trust root (Fulcio, Rekor), which the operator
//! is not configured with: they are reported as not checked, never as verified.

use std::collections::HashMap;
use std::str::FromStr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use futures::future::BoxFuture;
use k8s_openapi::api::core::v1::Secret;
use kube::{Api, Client};
use palisade_api::MCPServer;
use sha2::{Digest, Sha256};
use sigstore::cosign::verification_constraint::{PublicKeyVerifier, VerificationConstraint};
use sigstore::cosign::{ClientBuilder, CosignCapabilities, verify_constraints};
use sigstore::crypto::SigningScheme;
use sigstore::registry::{Auth, ClientConfig, ClientProtocol, OciReference};
use tracing::{debug, info};

use super::registry::{Verification, Verifier};

/// A positive result is trusted this long for the same image and keys; failures are never
/// cached, so a fixed registry or a new signature is seen at the next reconcile.
const VERIFIED_TTL: Duration = Duration::from_secs(600);

pub struct Cosign {
    kube: Client,
    insecure: Vec<String>,
    verified: Mutex<HashMap<[u8; 32], (Verification, Instant)>>,
}

fn failed(reason: &str, message: String) -> Verification {
    Verification::Failed { reason: reason.into(), message }
}

impl Cosign {
    /// `insecure` lists registries (`host:port`) reached over plain HTTP (local test registries).
    pub fn new(kube: Client, insecure: Vec<String>) -> Cosign {
        Cosign { kube, insecure, verified: Mutex::new(HashMap::new()) }
    }

    async fn keys(
        &self,
        server: &MCPServer,
        ns: &str,
    ) -> Result<Vec<(String, Vec<u8>)>, Verification> {
        let secrets: Api<Secret> = Api::namespaced(self.kube.clone(), ns);
        let mut keys = vec![];
        for k in server.spec.signature.iter().flat_map(|s| &s.keys) {
            let r = &k.secret_ref;
            let name = format!("{ns}/{}[{}]", r.name, r.key);
            let secret = secrets
                .get(&r.name)
                .await
                .map_err(|e| failed("KeyUnavailable", format!("cosign public key {name}: {e}")))?;
            let pem =
                secret.data.and_then(|d| d.get(&r.key).map(|b| b.0.clone())).ok_or_else(|| {
                    failed(
                        "KeyUnavailable",
                        format!("cosign public key {name}: no such key in the Secret"),
                    )
                })?;
            keys.push((name, pem));
        }
        Ok(keys)
    }

    async fn check(&self, server: &MCPServer, image: &str) -> Verification {
        let Some(spec) = &server.spec.signature else {
            return Verification::NotChecked {
                reason: "NotRequested".into(),
                message: format!("spec.signature is not set: {image} runs by digest, unsigned"),
            };
        };
        if spec.keys.is_empty() {
            return Verification::NotChecked {
                reason: "KeylessNotSupported".into(),
                message: "keyless identities need the Sigstore trust root (Fulcio and Rekor), which this operator is not configured with; add a public key to spec.signature.keys".into(),
            };
        }
        let ns = server.metadata.namespace.clone().unwrap_or_default();
        // Keyed by the image and the key references, so that a verified server's reconciles
        // read no Secrets; a changed key Secret is seen when the entry expires.
        let mut h = Sha256::new();
        h.update(image.as_bytes());
        h.update(ns.as_bytes());
        for k in &spec.keys {
            h.update(b"\0");
            h.update(k.secret_ref.name.as_bytes());
            h.update(b"\0");
            h.update(k.secret_ref.key.as_bytes());
        }
        let cache_key: [u8; 32] = h.finalize().into();
        if let Some((v, _)) =
            self.verified.lock().ok().and_then(|m| {
                m.get(&cache_key).filter(|(_, at)| at.elapsed() < VERIFIED_TTL).cloned()
            })
        {
            return v;
        }
        let keys = match self.keys(server, &ns).await {
            Ok(k) => k,
            Err(v) => return v,
        };
        let v = self.verify_with(image, &keys).await;
        if matches!(v, Verification::Verified { .. }) {
            if let Ok(mut m) = self.verified.lock() {
                m.retain(|_, (_, at)| at.elapsed() < VERIFIED_TTL);
                m.insert(cache_key, (v.clone(), Instant::now()));
            }
            info!(image, "image signature verified");
        }
        v
    }

    async fn verify_with(&self, image: &str, keys: &[(String, Vec<u8>)]) -> Verification {
        let reference = match OciReference::from_str(image) {
            Ok(r) => r,
            Err(e) => return failed("InvalidReference", format!("{image}: {e}")),
        };
        let protocol = if self.insecure.is_empty() {
            ClientProtocol::Https
        } else {
            ClientProtocol::HttpsExcept(self.insecure.clone())
        };
        let mut client = match ClientBuilder::default()
            .with_oci_client_config(ClientConfig { protocol, ..ClientConfig::default() })
            .build()
        {
            Ok(c) => c,
            Err(e) => return failed("VerifierUnavailable", e.to_string()),
        };
        let layers = match client.trusted_signature_layers(&Auth::Anonymous, &reference).await {
            Ok(l) => l,
            Err(e) => return failed("SignatureFetchFailed", format!("{image}: {e}")),
        };
        if layers.is_empty() {
            return failed(
                "NoSignature",
                format!("no cosign signature of {image} was found in its registry"),
            );
        }
        for (name, pem) in keys {
            let verifier = match PublicKeyVerifier::new(pem, &SigningScheme::default()) {
                Ok(v) => v,
                Err(e) => {
                    return failed("InvalidKey", format!("cosign public key {name}: {e}"));
                }
            };
            let constraints: Vec<Box<dyn VerificationConstraint>> = vec![Box::new(verifier)];
            if verify_constraints(&layers, constraints.iter()).is_ok() {
                return Verification::Verified { by: format!("cosign key {name}") };
            }
            debug!(image, key = %name, "no signature by this key");
        }
        failed(
            "SignatureMismatch",
            format!(
                "{} signature(s) of {image} found, none made by a key in spec.signature.keys",
                layers.len()
            ),
        )
    }
}

impl Verifier for Cosign {
    fn verify<'a>(&'a self, server: &'a MCPServer, image: &'a str) -> BoxFuture<'a, Verification> {
        Box::pin(self.check(server, image))
    }
}
