//! How the gateway reaches an HTTP server, on the pod's loopback or remote
//! (`spec.remote.url`): the HTTP client's rules (no redirects: a server never sends the
//! gateway, and the credential it carries, elsewhere; `https` only for an `https` server;
//! extra trust anchors from a mounted CA), and the addresses it may connect to (never cloud
//! metadata, link-local, unspecified, multicast or broadcast, whatever a name resolves to).

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use palisade_core::net::{AddressClass, classify};

const DNS_TIMEOUT: Duration = Duration::from_secs(5);

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ReachError {
    #[error("{what} CA file cannot be read")]
    CaUnreadable { what: &'static str },
    #[error("{what} CA file holds no PEM certificate")]
    CaNotPem { what: &'static str },
    #[error("the server's URL is not valid")]
    BadUrl,
    #[error("the server's URL names a {0} address, which the gateway never connects to")]
    Forbidden(&'static str),
    #[error("the HTTP client cannot be built: {0}")]
    Client(String),
}

/// Addresses no upstream connection may go to: the cloud metadata endpoints and every address
/// that is not a single reachable host. Loopback stays allowed: it is the pod's own network
/// (the server beside the gateway).
pub fn forbidden(ip: IpAddr) -> Option<&'static str> {
    let class = classify(ip);
    matches!(
        class,
        AddressClass::Metadata
            | AddressClass::LinkLocal
            | AddressClass::Unspecified
            | AddressClass::Multicast
            | AddressClass::Broadcast
    )
    .then(|| class.as_str())
}

/// The addresses of a resolved name that a connection may use; an error when none may.
pub fn admissible(
    name: &str,
    found: impl IntoIterator<Item = SocketAddr>,
) -> Result<Vec<SocketAddr>, String> {
    let (ok, refused): (Vec<_>, Vec<_>) =
        found.into_iter().partition(|a| forbidden(a.ip()).is_none());
    if ok.is_empty() {
        return Err(if refused.is_empty() {
            format!("{name} resolves to no address")
        } else {
            format!("{name} resolves only to addresses the gateway never connects to")
        });
    }
    Ok(ok)
}

/// The system resolver, with [`admissible`] applied to every answer (a name that resolves to
/// the metadata address later, DNS rebinding, is refused at connection time).
struct GuardedResolver;

impl reqwest::dns::Resolve for GuardedResolver {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        Box::pin(async move {
            let host = name.as_str().to_string();
            let found =
                tokio::time::timeout(DNS_TIMEOUT, tokio::net::lookup_host((host.as_str(), 0)))
                    .await
                    .map_err(|_| format!("resolving {host} timed out"))??;
            let ok = admissible(&host, found)?;
            let addrs: reqwest::dns::Addrs = Box::new(ok.into_iter());
            Ok(addrs)
        })
    }
}

/// Adds the certificates of a PEM bundle to a client's trust anchors (the system roots stay).
pub fn with_extra_roots(
    mut builder: reqwest::ClientBuilder,
    path: &str,
    what: &'static str,
) -> Result<reqwest::ClientBuilder, ReachError> {
    let pem = std::fs::read(path).map_err(|_| ReachError::CaUnreadable { what })?;
    let certs = reqwest::Certificate::from_pem_bundle(&pem)
        .ok()
        .filter(|c| !c.is_empty())
        .ok_or(ReachError::CaNotPem { what })?;
    for c in certs {
        builder = builder.add_root_certificate(c);
    }
    Ok(builder)
}

/// The client for the server at `url` (`None`: a stdio server, which needs none).
pub fn client(
    builder: reqwest::ClientBuilder,
    url: Option<&str>,
    ca_file: Option<&str>,
) -> Result<reqwest::Client, ReachError> {
    let mut builder = builder
        .redirect(reqwest::redirect::Policy::none())
        .dns_resolver(std::sync::Arc::new(GuardedResolver));
    if let Some(url) = url {
        let parsed = reqwest::Url::parse(url).map_err(|_| ReachError::BadUrl)?;
        let ip = match parsed.host() {
            Some(url::Host::Ipv4(v4)) => Some(IpAddr::V4(v4)),
            Some(url::Host::Ipv6(v6)) => Some(IpAddr::V6(v6)),
            Some(url::Host::Domain(_)) => None,
            None => return Err(ReachError::BadUrl),
        };
        if let Some(why) = ip.and_then(forbidden) {
            return Err(ReachError::Forbidden(why));
        }
        if parsed.scheme() == "https" {
            builder = builder.https_only(true);
        }
    }
    if let Some(path) = ca_file {
        builder = with_extra_roots(builder, path, "the server's")?;
    }
    builder.build().map_err(|e| ReachError::Client(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(ip: &str) -> SocketAddr {
        SocketAddr::new(ip.parse().unwrap_or_else(|e| panic!("{e}")), 443)
    }

    #[test]
    fn metadata_and_link_local_answers_are_dropped_and_alone_refused() {
        let mixed = admissible("mcp.example", [at("169.254.169.254"), at("203.0.113.7")]);
        assert_eq!(mixed, Ok(vec![at("203.0.113.7")]));
        for bad in
            ["169.254.169.254", "fe80::1", "::ffff:169.254.169.254", "fd00:ec2::254", "0.0.0.0"]
        {
            let refused = admissible("rebound.example", [at(bad)]);
            assert!(refused.is_err(), "{bad} admitted");
        }
        assert!(admissible("none.example", []).is_err());
        // In-cluster and loopback servers stay reachable.
        assert!(admissible("svc", [at("10.96.0.10"), at("127.0.0.1")]).is_ok());
    }

    #[test]
    fn a_url_naming_a_forbidden_address_builds_no_client() {
        palisade_https::install_crypto_provider();
        let b = || reqwest::Client::builder();
        for url in ["https://169.254.169.254/mcp", "https://[fe80::1]/mcp", "http://0.0.0.0:80/"] {
            assert!(
                matches!(client(b(), Some(url), None), Err(ReachError::Forbidden(_))),
                "{url} accepted"
            );
        }
        assert!(client(b(), Some("http://127.0.0.1:8080/mcp"), None).is_ok());
        assert!(client(b(), Some("https://mcp.example.com/mcp"), None).is_ok());
        assert_eq!(client(b(), Some("not a url"), None).err(), Some(ReachError::BadUrl));
    }

    #[test]
    fn a_ca_file_must_hold_certificates() {
        palisade_https::install_crypto_provider();
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let junk = dir.path().join("ca.pem");
        std::fs::write(&junk, "not a certificate").unwrap_or_else(|e| panic!("{e}"));
        let junk = junk.to_string_lossy().to_string();
        let url = Some("https://mcp.example.com/mcp");
        assert_eq!(
            client(reqwest::Client::builder(), url, Some(&junk)).err(),
            Some(ReachError::CaNotPem { what: "the server's" })
        );
        assert_eq!(
            client(reqwest::Client::builder(), url, Some("/nonexistent/ca.pem")).err(),
            Some(ReachError::CaUnreadable { what: "the server's" })
        );
    }
}
