//! Resolving an image tag to its manifest digest through the registry API, and the seam where
//! signature verification (`signature.rs`) plugs in.

use oci_client::client::{ClientConfig, ClientProtocol};
use oci_client::errors::OciDistributionError;
use oci_client::secrets::RegistryAuth;
use oci_client::{Client, Reference};
use palisade_core::image::ImageRef;

#[derive(Debug, thiserror::Error)]
pub enum ResolveError {
    /// The reference cannot be resolved however often we try (bad name, no such tag, denied).
    #[error("{0}")]
    Permanent(String),
    /// The registry could not be reached or failed; retry with backoff.
    #[error("{0}")]
    Transient(String),
}

pub struct Resolver {
    client: Client,
}

impl Resolver {
    /// `insecure` lists registries (`host:port`) reached over plain HTTP (local test registries).
    pub fn new(insecure: Vec<String>) -> Resolver {
        let protocol = if insecure.is_empty() {
            ClientProtocol::Https
        } else {
            ClientProtocol::HttpsExcept(insecure)
        };
        Resolver { client: Client::new(ClientConfig { protocol, ..ClientConfig::default() }) }
    }

    /// The digest (`sha256:...`) that `image` currently points to.
    pub async fn resolve(&self, image: &str) -> Result<String, ResolveError> {
        let parsed = ImageRef::parse(image).map_err(|e| ResolveError::Permanent(e.to_string()))?;
        let reference: Reference = parsed
            .to_string()
            .parse()
            .map_err(|e| ResolveError::Permanent(format!("{image}: {e}")))?;
        let digest = self
            .client
            .fetch_manifest_digest(&reference, &RegistryAuth::Anonymous)
            .await
            .map_err(|e| classify(image, e))?;
        Ok(digest)
    }
}

fn classify(image: &str, e: OciDistributionError) -> ResolveError {
    match e {
        OciDistributionError::ImageManifestNotFoundError(_) => {
            ResolveError::Permanent(format!("{image}: no such tag in the registry"))
        }
        OciDistributionError::UnauthorizedError { .. }
        | OciDistributionError::AuthenticationFailure(_) => ResolveError::Permanent(format!(
            "{image}: the registry refused anonymous access; pin the image by digest"
        )),
        OciDistributionError::ServerError { code, .. }
            if (400..500).contains(&code) && code != 429 =>
        {
            ResolveError::Permanent(format!("{image}: the registry answered {code}"))
        }
        OciDistributionError::RegistryError { envelope, .. } => {
            let codes: Vec<String> =
                envelope.errors.iter().map(|e| format!("{:?}", e.code)).collect();
            if codes.iter().any(|c| c.contains("ManifestUnknown") || c.contains("NameUnknown")) {
                ResolveError::Permanent(format!("{image}: no such image or tag in the registry"))
            } else {
                ResolveError::Transient(format!("{image}: registry error {}", codes.join(", ")))
            }
        }
        other => ResolveError::Transient(format!("{image}: {other}")),
    }
}

/// Outcome of checking an image's signature.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verification {
    Verified { by: String },
    Failed { reason: String, message: String },
    NotChecked { reason: String, message: String },
}

/// Checks the signature of a pinned image (`repo@sha256:...`) against every trust set (the
/// server's own and each requiring policy's, see `palisade_admission::rules::trust`): verified
/// only when each set has a key that verifies a signature. Implemented by
/// [`crate::signature::Cosign`]; tests may plug in others.
pub trait Verifier: Send + Sync {
    fn verify<'a>(
        &'a self,
        server: &'a palisade_crds::MCPServer,
        image: &'a str,
        sets: &'a [palisade_admission::rules::trust::TrustSet],
    ) -> futures::future::BoxFuture<'a, Verification>;

    /// The image's SBOM attestation, verified with the server's keys.
    fn sbom<'a>(
        &'a self,
        server: &'a palisade_crds::MCPServer,
        image: &'a str,
    ) -> futures::future::BoxFuture<
        'a,
        Result<std::sync::Arc<crate::sbom::Sbom>, crate::sbom::SbomError>,
    >;
}
