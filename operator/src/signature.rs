//! Cosign signature verification of the pinned image, with the keys of every trust set (the
//! server's `spec.signature.keys`, Secrets in its namespace, and the selecting policies'
//! `trustedKeys`, as `palisade_admission::rules::trust` decides). Fails closed: no signature, a
//! signature by another key, an unreadable key, an unreachable signature store, or a set with
//! no key at all (keyless identities only: the operator has no Sigstore trust root) all block
//! the rollout.

use std::collections::HashMap;
use std::str::FromStr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::future::BoxFuture;
use k8s_openapi::api::core::v1::Secret;
use kube::{Api, Client};
use palisade_crds::MCPServer;
use sha2::{Digest, Sha256};
use sigstore::cosign::verification_constraint::{PublicKeyVerifier, VerificationConstraint};
use sigstore::cosign::{ClientBuilder, CosignCapabilities, verify_constraints};
use sigstore::crypto::{CosignVerificationKey, SigningScheme};
use sigstore::registry::{Auth, ClientConfig, ClientProtocol, OciReference};
use tracing::{debug, info};

use palisade_admission::rules::trust::{self, KeySource, TrustSet};

use crate::registry::{Verification, Verifier};
use crate::sbom::{self, Sbom, SbomError};

/// A positive result is trusted this long for the same image and keys; failures are never
/// cached, so a fixed registry or a new signature is seen at the next reconcile.
const VERIFIED_TTL: Duration = Duration::from_secs(600);

type Cache<T> = Mutex<HashMap<[u8; 32], (T, Instant)>>;
/// A public key: how it is named, and its PEM.
type NamedKey = (String, Vec<u8>);
/// A trust set with its keys read: who requires it, and the keys.
type ResolvedSet = (String, Vec<NamedKey>);

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
    let sets =
        [TrustSet { required_by: trust::Requirer::Server, keys: trust::server_keys(server) }];
    sets_cache_key(image, ns, &sets)
}

fn sets_cache_key(image: &str, ns: &str, sets: &[TrustSet]) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(image.as_bytes());
    h.update(ns.as_bytes());
    for set in sets {
        h.update(b"\x01");
        h.update(set.required_by.to_string().as_bytes());
        for k in &set.keys {
            h.update(b"\0");
            match k {
                KeySource::Secret { name, key } => {
                    h.update(name.as_bytes());
                    h.update(b"\0");
                    h.update(key.as_bytes());
                }
                KeySource::Policy { policy, index, pem } => {
                    h.update(policy.as_bytes());
                    h.update(index.to_string().as_bytes());
                    h.update(pem.as_bytes());
                }
            }
        }
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

    /// The PEM of one key: a Secret of the namespace, or a policy's inline key.
    async fn key(&self, source: &KeySource, ns: &str) -> Result<(String, Vec<u8>), Verification> {
        let name = source.label(ns);
        match source {
            KeySource::Policy { pem, .. } => Ok((name, pem.as_bytes().to_vec())),
            KeySource::Secret { name: secret, key } => {
                let secrets: Api<Secret> = Api::namespaced(self.kube.clone(), ns);
                let found = secrets
                    .get(secret)
                    .await
                    .map_err(|e| failed("KeyUnavailable", format!("{name}: {e}")))?;
                let pem =
                    found.data.and_then(|d| d.get(key).map(|b| b.0.clone())).ok_or_else(|| {
                        failed("KeyUnavailable", format!("{name}: no such key in the Secret"))
                    })?;
                Ok((name, pem))
            }
        }
    }

    async fn check(&self, server: &MCPServer, image: &str, sets: &[TrustSet]) -> Verification {
        if sets.is_empty() {
            return Verification::NotChecked {
                reason: "NotRequested".into(),
                message: format!(
                    "neither spec.signature nor a policy asks for a signature: {image} runs by digest, unsigned"
                ),
            };
        }
        // A set without keys can never be satisfied: keyless identities only, and no policy
        // key to verify with. Fail closed before touching the registry.
        if let Some(empty) = sets.iter().find(|s| s.keys.is_empty()) {
            return failed(
                "NoUsableKey",
                format!(
                    "{} asks for a verified signature, but names no cosign key the operator can verify with (keyless identities need the Sigstore trust root, Fulcio and Rekor, which this operator is not configured with); add spec.signature.keys or a policy's trustedKeys",
                    empty.required_by
                ),
            );
        }
        let ns = server.metadata.namespace.clone().unwrap_or_default();
        let cache_key = sets_cache_key(image, &ns, sets);
        if let Some(v) = cached(&self.verified, &cache_key) {
            return v;
        }
        let mut resolved: Vec<ResolvedSet> = Vec::new();
        for set in sets {
            let mut keys = Vec::new();
            for k in &set.keys {
                match self.key(k, &ns).await {
                    Ok(key) => keys.push(key),
                    Err(v) => return v,
                }
            }
            resolved.push((set.required_by.to_string(), keys));
        }
        let v = self.verify_with(image, &resolved).await;
        if matches!(v, Verification::Verified { .. }) {
            remember(&self.verified, cache_key, v.clone());
            info!(image, "image signature verified");
        }
        v
    }

    /// Verified when every set has a key that verifies one of the image's signatures.
    async fn verify_with(&self, image: &str, sets: &[ResolvedSet]) -> Verification {
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
        let mut by = Vec::new();
        for (required_by, keys) in sets {
            let mut found = None;
            for (name, pem) in keys {
                let verifier = match PublicKeyVerifier::new(pem, &SigningScheme::default()) {
                    Ok(v) => v,
                    Err(e) => return failed("InvalidKey", format!("{name}: {e}")),
                };
                let constraints: Vec<Box<dyn VerificationConstraint>> = vec![Box::new(verifier)];
                if verify_constraints(&layers, constraints.iter()).is_ok() {
                    found = Some(name.clone());
                    break;
                }
                debug!(image, key = %name, "no signature by this key");
            }
            match found {
                Some(name) if !by.contains(&name) => by.push(name),
                Some(_) => {}
                None => {
                    let names: Vec<&str> = keys.iter().map(|(n, _)| n.as_str()).collect();
                    return failed(
                        "SignatureMismatch",
                        format!(
                            "{} signature(s) of {image} found, none made by a key {required_by} trusts ({})",
                            layers.len(),
                            names.join(", ")
                        ),
                    );
                }
            }
        }
        Verification::Verified { by: by.join(", ") }
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
        let mut keys = Vec::new();
        for k in trust::server_keys(server) {
            match self.key(&k, &ns).await {
                Ok(key) => keys.push(key),
                Err(
                    Verification::Failed { message, .. } | Verification::NotChecked { message, .. },
                ) => return Err(SbomError::Keys(message)),
                Err(Verification::Verified { .. }) => {}
            }
        }
        let keys: Vec<(String, CosignVerificationKey)> = keys
            .iter()
            .map(|(name, pem)| {
                CosignVerificationKey::from_pem(pem, &SigningScheme::default())
                    .map(|k| (name.clone(), k))
                    .map_err(|e| SbomError::Keys(format!("{name}: {e}")))
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
            let statement = sbom::verify_envelope(&envelope, keys)
                .and_then(|(by, payload)| sbom::read_statement(&payload, digest, by.to_string()));
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
    fn verify<'a>(
        &'a self,
        server: &'a MCPServer,
        image: &'a str,
        sets: &'a [TrustSet],
    ) -> BoxFuture<'a, Verification> {
        Box::pin(self.check(server, image, sets))
    }

    fn sbom<'a>(
        &'a self,
        server: &'a MCPServer,
        image: &'a str,
    ) -> BoxFuture<'a, Result<Arc<Sbom>, SbomError>> {
        Box::pin(self.sbom_of(server, image))
    }
}
