//! Cosign signature verification of the pinned image, with the public keys named in
//! `spec.signature.keys` (Secrets in the server's namespace). Fails closed: no signature, a
//! signature by another key, an unreadable key or an unreachable signature store all block the
//! rollout. Keyless identities need the Sigstore trust root (Fulcio, Rekor), which the operator
//! is not configured with: they are reported as not checked, never as verified.

use std::collections::HashMap;
use std::str::FromStr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::future::BoxFuture;
use k8s_openapi::api::core::v1::Secret;
use kube::{Api, Client};
use palisade_api::MCPServer;
use sha2::{Digest, Sha256};
use sigstore::cosign::verification_constraint::{PublicKeyVerifier, VerificationConstraint};
use sigstore::cosign::{ClientBuilder, CosignCapabilities, verify_constraints};
use sigstore::crypto::{CosignVerificationKey, SigningScheme};
use sigstore::registry::{Auth, ClientConfig, ClientProtocol, OciReference};
use tracing::{debug, info};

use super::registry::{Verification, Verifier};
use super::sbom::{self, Sbom, SbomError};

/// A positive result is trusted this long for the same image and keys; failures are never
/// cached, so a fixed registry or a new signature is seen at the next reconcile.
const VERIFIED_TTL: Duration = Duration::from_secs(600);

type Cache<T> = Mutex<HashMap<[u8; 32], (T, Instant)>>;

pub struct Cosign {
    kube: Client,
    insecure: Vec<String>,
    oci: oci_client::Client,
    verified: Cache<Verification>,
    sboms: Cache<Arc<Sbom>>,
}

fn cached<T: Clone>(cache: &Cache<T>, key: &[u8; 32]) -> Option<T> {
    let m = cache.lock().ok()?;
    m.get(key).filter(|(_, at)| at.elapsed() < VERIFIED_TTL).map(|(v, _)| v.clone())
}

fn remember<T>(cache: &Cache<T>, key: [u8; 32], value: T) {
    if let Ok(mut m) = cache.lock() {
        m.retain(|_, (_, at)| at.elapsed() < VERIFIED_TTL);
        m.insert(key, (value, Instant::now()));
    }
}

/// Keyed by what was checked and the key references, so that a verified server's reconciles
/// read no Secrets; a changed key Secret is seen when the entry expires.
fn cache_key(image: &str, ns: &str, server: &MCPServer) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(image.as_bytes());
    h.update(ns.as_bytes());
    for k in server.spec.signature.iter().flat_map(|s| &s.keys) {
        h.update(b"\0");
        h.update(k.secret_ref.name.as_bytes());
        h.update(b"\0");
        h.update(k.secret_ref.key.as_bytes());
    }
    h.finalize().into()
}

fn failed(reason: &str, message: String) -> Verification {
    Verification::Failed { reason: reason.into(), message }
}

impl Cosign {
    /// `insecure` lists registries (`host:port`) reached over plain HTTP (local test registries).
    pub fn new(kube: Client, insecure: Vec<String>) -> Cosign {
        let oci = oci_client::Client::new(oci_client::client::ClientConfig {
            protocol: if insecure.is_empty() {
                oci_client::client::ClientProtocol::Https
            } else {
                oci_client::client::ClientProtocol::HttpsExcept(insecure.clone())
            },
            ..Default::default()
        });
        Cosign {
            kube,
            insecure,
            oci,
            verified: Mutex::new(HashMap::new()),
            sboms: Mutex::new(HashMap::new()),
        }
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
        let cache_key = cache_key(image, &ns, server);
        if let Some(v) = cached(&self.verified, &cache_key) {
            return v;
        }
        let keys = match self.keys(server, &ns).await {
            Ok(k) => k,
            Err(v) => return v,
        };
        let v = self.verify_with(image, &keys).await;
        if matches!(v, Verification::Verified { .. }) {
            remember(&self.verified, cache_key, v.clone());
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

impl Cosign {
    async fn sbom_of(&self, server: &MCPServer, image: &str) -> Result<Arc<Sbom>, SbomError> {
        let ns = server.metadata.namespace.clone().unwrap_or_default();
        let mut key = cache_key(image, &ns, server);
        key[0] ^= 0x5b; // distinct from the signature entry of the same image and keys
        if let Some(s) = cached(&self.sboms, &key) {
            return Ok(s);
        }
        let keys = match self.keys(server, &ns).await {
            Ok(k) => k,
            Err(
                Verification::Failed { message, .. } | Verification::NotChecked { message, .. },
            ) => {
                return Err(SbomError::Keys(message));
            }
            Err(Verification::Verified { .. }) => vec![],
        };
        let keys: Vec<(String, CosignVerificationKey)> = keys
            .iter()
            .map(|(name, pem)| {
                CosignVerificationKey::from_pem(pem, &SigningScheme::default())
                    .map(|k| (name.clone(), k))
                    .map_err(|e| SbomError::Keys(format!("cosign public key {name}: {e}")))
            })
            .collect::<Result<_, _>>()?;
        let found = Arc::new(self.fetch_sbom(image, &keys).await?);
        info!(image, components = found.components.len(), "SBOM attestation verified");
        remember(&self.sboms, key, found.clone());
        Ok(found)
    }

    /// Reads cosign's attestation manifest (`<repo>:sha256-<hex>.att`) and returns the first
    /// CycloneDX or SPDX statement about `image` signed by one of `keys`.
    async fn fetch_sbom(
        &self,
        image: &str,
        keys: &[(String, CosignVerificationKey)],
    ) -> Result<Sbom, SbomError> {
        let unreachable = |e: String| SbomError::Unreachable(format!("SBOM of {image}: {e}"));
        let pinned: oci_client::Reference =
            image.parse().map_err(|e| unreachable(format!("{e}")))?;
        let digest = pinned.digest().ok_or_else(|| unreachable("not pinned by digest".into()))?;
        let att = oci_client::Reference::with_tag(
            pinned.registry().to_string(),
            pinned.repository().to_string(),
            format!("{}.att", digest.replace(':', "-")),
        );
        let auth = oci_client::secrets::RegistryAuth::Anonymous;
        let manifest = match self.oci.pull_image_manifest(&att, &auth).await {
            Ok((m, _)) => m,
            Err(oci_client::errors::OciDistributionError::ImageManifestNotFoundError(_)) => {
                return Err(SbomError::Missing(image.to_string()));
            }
            Err(oci_client::errors::OciDistributionError::RegistryError { envelope, .. })
                if envelope.errors.iter().any(|e| {
                    matches!(e.code, oci_client::errors::OciErrorCode::ManifestUnknown)
                }) =>
            {
                return Err(SbomError::Missing(image.to_string()));
            }
            Err(e) => return Err(unreachable(e.to_string())),
        };
        let mut reasons = vec![];
        for layer in manifest.layers.iter().filter(|l| l.media_type == sbom::DSSE_MEDIA_TYPE) {
            if layer.size > sbom::MAX_ENVELOPE_BYTES {
                reasons.push(format!("an attestation of {} bytes is too large", layer.size));
                continue;
            }
            let mut envelope = vec![];
            if let Err(e) = self.oci.pull_blob(&att, layer, &mut envelope).await {
                return Err(unreachable(e.to_string()));
            }
            let statement = sbom::verify_envelope(&envelope, keys).and_then(|(by, payload)| {
                sbom::read_statement(&payload, digest, format!("cosign key {by}"))
            });
            match statement {
                Ok(Some(found)) => return Ok(found),
                Ok(None) => debug!(image, "skipping an attestation that is not an SBOM"),
                Err(reason) => reasons.push(reason),
            }
        }
        if reasons.is_empty() {
            return Err(SbomError::Missing(image.to_string()));
        }
        Err(SbomError::Unverified { image: image.to_string(), reasons: reasons.join("; ") })
    }
}

impl Verifier for Cosign {
    fn verify<'a>(&'a self, server: &'a MCPServer, image: &'a str) -> BoxFuture<'a, Verification> {
        Box::pin(self.check(server, image))
    }

    fn sbom<'a>(
        &'a self,
        server: &'a MCPServer,
        image: &'a str,
    ) -> BoxFuture<'a, Result<Arc<Sbom>, SbomError>> {
        Box::pin(self.sbom_of(server, image))
    }
}
