//! OCI image references: parsing, normalisation and registry allowlist matching.

use std::fmt;

/// A parsed image reference such as `ghcr.io/acme/server:1.2@sha256:...`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageRef {
    /// Registry host (and port), `docker.io` when the reference names none.
    pub registry: String,
    /// Repository path inside the registry (`library/` added for Docker Hub official images).
    pub repository: String,
    pub tag: Option<String>,
    /// `sha256:<64 hex>` or `sha512:<128 hex>`.
    pub digest: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ImageRefError {
    #[error("image reference is empty")]
    Empty,
    #[error("{0:?}: digest must be sha256:<64 hex digits> (or sha512:<128>)")]
    BadDigest(String),
    #[error("{0:?}: tag must be 1-128 characters of [A-Za-z0-9_.-], not starting with . or -")]
    BadTag(String),
    #[error("{0:?}: repository path must be lower-case components of [a-z0-9._-] separated by /")]
    BadRepository(String),
}

pub const DOCKER_HUB: &str = "docker.io";

fn valid_digest(d: &str) -> bool {
    let hex_ok = |h: &str, n: usize| {
        h.len() == n && h.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    };
    match d.split_once(':') {
        Some(("sha256", h)) => hex_ok(h, 64),
        Some(("sha512", h)) => hex_ok(h, 128),
        _ => false,
    }
}

fn valid_tag(t: &str) -> bool {
    !t.is_empty()
        && t.len() <= 128
        && !t.starts_with(['.', '-'])
        && t.bytes().all(|b| b.is_ascii_alphanumeric() || b"_.-".contains(&b))
}

fn valid_component(c: &str) -> bool {
    !c.is_empty()
        && c.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"._-".contains(&b))
        && c.as_bytes()[0].is_ascii_alphanumeric()
        && c.as_bytes()[c.len() - 1].is_ascii_alphanumeric()
}

impl ImageRef {
    pub fn parse(s: &str) -> Result<ImageRef, ImageRefError> {
        let s = s.trim();
        if s.is_empty() {
            return Err(ImageRefError::Empty);
        }
        let (name_tag, digest) = match s.split_once('@') {
            Some((n, d)) => {
                if !valid_digest(d) {
                    return Err(ImageRefError::BadDigest(s.to_string()));
                }
                (n, Some(d.to_string()))
            }
            None => (s, None),
        };
        let last_slash = name_tag.rfind('/').map_or(0, |i| i + 1);
        let (name, tag) = match name_tag[last_slash..].rfind(':') {
            Some(i) => {
                let tag = &name_tag[last_slash + i + 1..];
                if !valid_tag(tag) {
                    return Err(ImageRefError::BadTag(s.to_string()));
                }
                (&name_tag[..last_slash + i], Some(tag.to_string()))
            }
            None => (name_tag, None),
        };
        let (registry, repository) = match name.split_once('/') {
            Some((first, rest))
                if first.contains('.') || first.contains(':') || first == "localhost" =>
            {
                (first.to_ascii_lowercase(), rest.to_string())
            }
            _ if !name.contains('/') => (DOCKER_HUB.to_string(), format!("library/{name}")),
            _ => (DOCKER_HUB.to_string(), name.to_string()),
        };
        if !repository.split('/').all(valid_component) {
            return Err(ImageRefError::BadRepository(s.to_string()));
        }
        Ok(ImageRef { registry, repository, tag, digest })
    }

    /// `registry/repository`, without tag or digest.
    pub fn name(&self) -> String {
        format!("{}/{}", self.registry, self.repository)
    }

    /// The same image pinned to `digest`, keeping the tag for readers (the digest governs).
    pub fn with_digest(&self, digest: &str) -> ImageRef {
        ImageRef { digest: Some(digest.to_string()), ..self.clone() }
    }

    /// Whether the image is allowed by a registry prefix such as `ghcr.io/acme/`. A prefix
    /// without a trailing `/` still matches only at a path boundary, so `ghcr.io/acme` does not
    /// admit `ghcr.io/acme-evil/x`.
    pub fn matches_prefix(&self, prefix: &str) -> bool {
        let name = self.name();
        let prefix = normalize_prefix(prefix);
        if prefix.ends_with('/') {
            name.starts_with(&prefix)
        } else {
            name == prefix || name.starts_with(&format!("{prefix}/"))
        }
    }
}

/// Normalises a registry prefix the way references are normalised (`nginx` ->
/// `docker.io/library/nginx`, `docker.io/` stays).
fn normalize_prefix(prefix: &str) -> String {
    let p = prefix.trim();
    match p.split_once('/') {
        Some((host, rest)) if host.contains('.') || host.contains(':') || host == "localhost" => {
            format!("{}/{rest}", host.to_ascii_lowercase())
        }
        None if p.contains('.') || p.contains(':') || p == "localhost" => p.to_ascii_lowercase(),
        Some(_) => format!("{DOCKER_HUB}/{p}"),
        None => format!("{DOCKER_HUB}/library/{p}"),
    }
}

impl fmt::Display for ImageRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.registry, self.repository)?;
        if let Some(t) = &self.tag {
            write!(f, ":{t}")?;
        }
        if let Some(d) = &self.digest {
            write!(f, "@{d}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const D: &str = "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

    #[test]
    fn parses_and_normalises() {
        let r = ImageRef::parse("nginx").unwrap();
        assert_eq!(
            (r.registry.as_str(), r.repository.as_str(), r.tag),
            ("docker.io", "library/nginx", None)
        );
        let r = ImageRef::parse("ghcr.io/acme/server:1.2.3").unwrap();
        assert_eq!(r.name(), "ghcr.io/acme/server");
        assert_eq!(r.tag.as_deref(), Some("1.2.3"));
        let r = ImageRef::parse(&format!("localhost:5000/mcp/everything:v1@{D}")).unwrap();
        assert_eq!(r.registry, "localhost:5000");
        assert_eq!(r.digest.as_deref(), Some(D));
        assert_eq!(r.to_string(), format!("localhost:5000/mcp/everything:v1@{D}"));
        let r = ImageRef::parse("acme/tool").unwrap();
        assert_eq!(r.name(), "docker.io/acme/tool");
    }

    #[test]
    fn refuses_malformed_references() {
        assert_eq!(ImageRef::parse(""), Err(ImageRefError::Empty));
        assert!(matches!(ImageRef::parse("a@sha256:abc"), Err(ImageRefError::BadDigest(_))));
        assert!(matches!(ImageRef::parse("a:-x"), Err(ImageRefError::BadTag(_))));
        assert!(matches!(ImageRef::parse("ghcr.io/Acme/x"), Err(ImageRefError::BadRepository(_))));
        assert!(matches!(ImageRef::parse("ghcr.io//x"), Err(ImageRefError::BadRepository(_))));
    }

    #[test]
    fn registry_prefixes_match_at_path_boundaries() {
        let r = ImageRef::parse("ghcr.io/acme/server:1").unwrap();
        assert!(r.matches_prefix("ghcr.io/acme/"));
        assert!(r.matches_prefix("ghcr.io/acme"));
        assert!(r.matches_prefix("GHCR.io/acme"));
        assert!(r.matches_prefix("ghcr.io"));
        assert!(!r.matches_prefix("ghcr.io/ac"));
        let evil = ImageRef::parse("ghcr.io/acme-evil/x:1").unwrap();
        assert!(!evil.matches_prefix("ghcr.io/acme"));
        let hub = ImageRef::parse("nginx:1.27").unwrap();
        assert!(hub.matches_prefix("docker.io/library/"));
        assert!(hub.matches_prefix("nginx"));
        assert!(!hub.matches_prefix("ghcr.io/"));
    }
}
