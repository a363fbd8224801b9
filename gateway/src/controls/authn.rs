//! Who is calling: OAuth 2.1 bearer tokens (the gateway is a resource server, per the MCP
//! authorization spec) and mTLS client certificates. Fails closed: when a method is configured,
//! a request without a valid credential never reaches a handler.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use jsonwebtoken::jwk::{Jwk, JwkSet};
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use palisade_core::config::GatewayConfig;
use palisade_core::spec::{AuthMode, CertPrincipal, OidcAuth};
use serde_json::{Map, Value, json};
use sha2::{Digest, Sha256};
use tracing::{debug, info, warn};

use crate::controls::authz::Principal;
use crate::upstream::credentials::SubjectToken;

/// Keys are re-read after this long even when every `kid` is known (key rotation).
const JWKS_TTL: Duration = Duration::from_secs(600);
/// An unknown `kid` triggers at most one JWKS fetch per this interval (a flood of tokens with
/// made-up key IDs must not turn the gateway into a load generator against the IdP).
const MIN_REFRESH_INTERVAL: Duration = Duration::from_secs(30);
const FETCH_TIMEOUT: Duration = Duration::from_secs(5);
/// Largest discovery document or JWKS read.
const MAX_DOCUMENT_BYTES: usize = 256 * 1024;
/// Largest bearer token accepted.
const MAX_TOKEN_BYTES: usize = 16 * 1024;
/// Signature algorithms accepted; `none` and HMAC (a shared secret is not a resource server's
/// business) are never accepted.
const ALGORITHMS: &[Algorithm] = &[
    Algorithm::RS256,
    Algorithm::RS384,
    Algorithm::RS512,
    Algorithm::PS256,
    Algorithm::PS384,
    Algorithm::PS512,
    Algorithm::ES256,
    Algorithm::ES384,
    Algorithm::EdDSA,
];

pub const PRM_PATH: &str = "/.well-known/oauth-protected-resource";

/// Why a request was not authenticated. `Display` is for logs and security events; clients
/// only see the RFC 6750 error code.
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    #[error("no credentials")]
    Missing,
    #[error("access token in the query string")]
    TokenInQuery,
    #[error("malformed Authorization header")]
    MalformedHeader,
    #[error("token rejected: {0}")]
    InvalidToken(String),
    #[error("token lacks required scopes: {0}")]
    InsufficientScope(String),
    #[error("client certificate: {0}")]
    Certificate(String),
    #[error("identity provider unavailable: {0}")]
    Provider(String),
}

impl AuthError {
    pub fn status(&self) -> StatusCode {
        match self {
            AuthError::InsufficientScope(_) => StatusCode::FORBIDDEN,
            AuthError::TokenInQuery | AuthError::MalformedHeader => StatusCode::BAD_REQUEST,
            AuthError::Provider(_) => StatusCode::SERVICE_UNAVAILABLE,
            _ => StatusCode::UNAUTHORIZED,
        }
    }

    /// RFC 6750 section 3.1 error code.
    fn code(&self) -> Option<&'static str> {
        match self {
            AuthError::Missing | AuthError::Certificate(_) => None,
            AuthError::TokenInQuery | AuthError::MalformedHeader => Some("invalid_request"),
            AuthError::InvalidToken(_) | AuthError::Provider(_) => Some("invalid_token"),
            AuthError::InsufficientScope(_) => Some("insufficient_scope"),
        }
    }
}

/// The connection's TLS client certificate chain (leaf first), when the client sent one.
pub type ClientCerts<'a> = &'a [rustls::pki_types::CertificateDer<'static>];

struct Keys {
    by_kid: HashMap<String, Jwk>,
    /// Keys without a `kid` (a single-key JWKS), tried in order.
    anonymous: Vec<Jwk>,
    jwks_uri: Option<String>,
    fetched: Option<Instant>,
    last_attempt: Option<Instant>,
}

/// A verified token, remembered so that a client's next requests skip the signature check.
struct Verified {
    principal: Principal,
    cnf: Option<String>,
    exp: u64,
    checked: Instant,
}

/// How long a verified token is trusted without re-checking its signature (its `exp` is
/// checked on every request regardless).
const VERIFIED_TTL: Duration = Duration::from_secs(60);
const MAX_VERIFIED: usize = 10_000;

pub struct Authenticator {
    http: reqwest::Client,
    verified: Mutex<HashMap<[u8; 32], Verified>>,
    keys: tokio::sync::Mutex<Keys>,
    /// Certificates seen recently, parsed once (handshakes repeat per connection, not request).
    cert_names: Mutex<HashMap<[u8; 32], String>>,
}

impl Authenticator {
    pub fn new(cfg: &GatewayConfig) -> Result<Authenticator, AuthError> {
        palisade_https::install_crypto_provider();
        let mut b = reqwest::Client::builder()
            .timeout(FETCH_TIMEOUT)
            .redirect(reqwest::redirect::Policy::none())
            .https_only(true);
        if let Some(path) = &cfg.auth.oidc_ca_file {
            b = crate::upstream::reach::with_extra_roots(b, path, "the issuer's")
                .map_err(|e| AuthError::Provider(e.to_string()))?;
        }
        let http = b.build().map_err(|e| AuthError::Provider(e.to_string()))?;
        Ok(Authenticator {
            http,
            verified: Mutex::new(HashMap::new()),
            keys: tokio::sync::Mutex::new(Keys {
                by_kid: HashMap::new(),
                anonymous: vec![],
                jwks_uri: None,
                fetched: None,
                last_attempt: None,
            }),
            cert_names: Mutex::new(HashMap::new()),
        })
    }

    /// Drops remembered token verifications (the config changed: issuer, audience or scopes
    /// may be different now).
    pub fn forget_verified(&self) {
        if let Ok(mut m) = self.verified.lock() {
            m.clear();
        }
    }

    /// Authenticates one request. `query` is the request URI's query string.
    pub async fn authenticate(
        &self,
        cfg: &GatewayConfig,
        headers: &HeaderMap,
        query: Option<&str>,
        certs: ClientCerts<'_>,
    ) -> Result<Principal, AuthError> {
        if query.is_some_and(|q| {
            q.split('&').any(|kv| kv.split('=').next().is_some_and(|k| k == "access_token"))
        }) {
            // RFC 9700 / MCP authorization: tokens in URIs end up in logs and histories.
            return Err(AuthError::TokenInQuery);
        }
        let auth = &cfg.auth;
        if auth.oidc.is_none() && auth.mtls.is_none() {
            return Ok(Principal::anonymous());
        }
        let bearer = bearer_of(headers)?;
        let cert = match (&auth.mtls, certs.first()) {
            (Some(m), Some(leaf)) => Some(self.cert_principal(leaf.as_ref(), m.principal_from)?),
            _ => None,
        };
        let token = match (&auth.oidc, bearer) {
            (Some(oidc), Some(t)) => Some(self.verify(oidc, t).await?),
            (None, Some(_)) => {
                return Err(AuthError::InvalidToken("bearer tokens are not accepted here".into()));
            }
            _ => None,
        };
        match (auth.mode, token, cert) {
            (AuthMode::AllOf, Some(_), None) if auth.mtls.is_some() => {
                Err(AuthError::Certificate("a client certificate is required".into()))
            }
            (AuthMode::AllOf, None, _) if auth.oidc.is_some() => Err(AuthError::Missing),
            (_, Some((mut p, cnf)), cert) => {
                if let Some(expected) = cnf {
                    // RFC 8705: a certificate-bound token is only valid on that certificate.
                    let presented = certs.first().map(|c| b64url(&Sha256::digest(c.as_ref())));
                    if presented.as_deref() != Some(expected.as_str()) {
                        return Err(AuthError::InvalidToken(
                            "token is bound to another client certificate".into(),
                        ));
                    }
                }
                if let Some(name) = cert {
                    p.claims.insert("x509_principal".into(), Value::String(name));
                }
                Ok(p)
            }
            (_, None, Some(name)) => Ok(Principal::from_certificate(name)),
            (_, None, None) => Err(AuthError::Missing),
        }
    }

    /// Verifies a bearer JWT; returns the principal and its RFC 8705 `cnf.x5t#S256`, if any.
    async fn verify(
        &self,
        oidc: &OidcAuth,
        token: &str,
    ) -> Result<(Principal, Option<String>), AuthError> {
        if token.len() > MAX_TOKEN_BYTES {
            return Err(AuthError::InvalidToken("token too large".into()));
        }
        let digest: [u8; 32] = Sha256::digest(token.as_bytes()).into();
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default()
            .as_secs();
        if let Some(v) = self.verified.lock().ok().and_then(|m| {
            m.get(&digest)
                .filter(|v| v.checked.elapsed() < VERIFIED_TTL && now < v.exp)
                .map(|v| (v.principal.clone(), v.cnf.clone()))
        }) {
            return Ok(v);
        }
        let (principal, cnf) = self.verify_signed(oidc, token).await?;
        let exp = principal.claims.get("exp").and_then(Value::as_u64).unwrap_or(0);
        if let Ok(mut m) = self.verified.lock() {
            if m.len() >= MAX_VERIFIED {
                m.retain(|_, v| v.checked.elapsed() < VERIFIED_TTL && now < v.exp);
                if m.len() >= MAX_VERIFIED {
                    m.clear();
                }
            }
            m.insert(
                digest,
                Verified {
                    principal: principal.clone(),
                    cnf: cnf.clone(),
                    exp,
                    checked: Instant::now(),
                },
            );
        }
        Ok((principal, cnf))
    }

    async fn verify_signed(
        &self,
        oidc: &OidcAuth,
        token: &str,
    ) -> Result<(Principal, Option<String>), AuthError> {
        let head = jsonwebtoken::decode_header(token)
            .map_err(|e| AuthError::InvalidToken(format!("header: {e}")))?;
        if !ALGORITHMS.contains(&head.alg) {
            return Err(AuthError::InvalidToken(format!("algorithm {:?} not accepted", head.alg)));
        }
        let jwk = self.key_for(oidc, head.kid.as_deref(), head.alg).await?;
        let key = DecodingKey::from_jwk(&jwk)
            .map_err(|e| AuthError::InvalidToken(format!("issuer key unusable: {e}")))?;
        let mut v = Validation::new(head.alg);
        v.set_issuer(&[oidc.issuer.as_str()]);
        v.set_audience(&[oidc.audience.as_str()]);
        v.leeway = u64::from(oidc.clock_skew_seconds);
        v.validate_nbf = true;
        v.set_required_spec_claims(&["exp", "iss", "aud"]);
        let data = jsonwebtoken::decode::<Map<String, Value>>(token, &key, &v)
            .map_err(|e| AuthError::InvalidToken(e.to_string()))?;
        let claims = data.claims;
        let granted = scopes_of(&claims);
        let missing: Vec<&str> = oidc
            .required_scopes
            .iter()
            .map(String::as_str)
            .filter(|s| !granted.contains(s))
            .collect();
        if !missing.is_empty() {
            return Err(AuthError::InsufficientScope(missing.join(" ")));
        }
        let subject = claims
            .get(&oidc.principal_claim)
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty())
            .ok_or_else(|| AuthError::InvalidToken(format!("no `{}` claim", oidc.principal_claim)))?
            .to_string();
        let cnf = claims
            .get("cnf")
            .and_then(|c| c.get("x5t#S256"))
            .and_then(Value::as_str)
            .map(str::to_string);
        Ok((Principal { subject, claims, token: Some(SubjectToken::new(token)) }, cnf))
    }

    /// The issuer's key for `kid`, fetching the JWKS when it is stale or the key is unknown
    /// (at most once per [`MIN_REFRESH_INTERVAL`]).
    async fn key_for(
        &self,
        oidc: &OidcAuth,
        kid: Option<&str>,
        alg: Algorithm,
    ) -> Result<Jwk, AuthError> {
        let mut keys = self.keys.lock().await;
        let stale = keys.fetched.is_none_or(|t| t.elapsed() > JWKS_TTL);
        let known = find(&keys, kid, alg).is_some();
        let may_refresh = keys.last_attempt.is_none_or(|t| t.elapsed() > MIN_REFRESH_INTERVAL);
        if (stale || !known) && may_refresh {
            keys.last_attempt = Some(Instant::now());
            match self.fetch(oidc, keys.jwks_uri.clone()).await {
                Ok((uri, set)) => {
                    keys.by_kid.clear();
                    keys.anonymous.clear();
                    for k in set.keys {
                        match k.common.key_id.clone() {
                            Some(id) => {
                                keys.by_kid.insert(id, k);
                            }
                            None => keys.anonymous.push(k),
                        }
                    }
                    info!(keys = keys.by_kid.len() + keys.anonymous.len(), "issuer keys loaded");
                    keys.jwks_uri = Some(uri);
                    keys.fetched = Some(Instant::now());
                }
                // Keep serving with the keys we have; without any, fail closed.
                Err(e) => warn!(error = %e, "refreshing the issuer's keys failed"),
            }
        }
        if let Some(k) = find(&keys, kid, alg) {
            return Ok(k.clone());
        }
        if keys.fetched.is_none() {
            return Err(AuthError::Provider("the issuer's keys could not be loaded".into()));
        }
        Err(AuthError::InvalidToken("signed by a key the issuer does not publish".into()))
    }

    async fn fetch(
        &self,
        oidc: &OidcAuth,
        known_uri: Option<String>,
    ) -> Result<(String, JwkSet), AuthError> {
        let uri = match oidc.jwks_uri.clone().or(known_uri) {
            Some(u) => u,
            None => self.discover(&oidc.issuer).await?,
        };
        let set: JwkSet = serde_json::from_slice(&self.get(&uri).await?)
            .map_err(|e| AuthError::Provider(format!("JWKS: {e}")))?;
        debug!(uri, "JWKS fetched");
        Ok((uri, set))
    }

    /// OIDC discovery (then RFC 8414 metadata); the document must name the same issuer.
    async fn discover(&self, issuer: &str) -> Result<String, AuthError> {
        let base = issuer.trim_end_matches('/');
        let mut last = AuthError::Provider("no discovery document".into());
        for well_known in ["openid-configuration", "oauth-authorization-server"] {
            let doc = match self.get(&format!("{base}/.well-known/{well_known}")).await {
                Ok(d) => d,
                Err(e) => {
                    last = e;
                    continue;
                }
            };
            let doc: Value = serde_json::from_slice(&doc)
                .map_err(|e| AuthError::Provider(format!("discovery document: {e}")))?;
            if doc.get("issuer").and_then(Value::as_str) != Some(issuer) {
                return Err(AuthError::Provider(
                    "the discovery document names another issuer".into(),
                ));
            }
            return doc
                .get("jwks_uri")
                .and_then(Value::as_str)
                .filter(|u| u.starts_with("https://"))
                .map(str::to_string)
                .ok_or_else(|| AuthError::Provider("no https jwks_uri in discovery".into()));
        }
        Err(last)
    }

    async fn get(&self, uri: &str) -> Result<Vec<u8>, AuthError> {
        let resp = self
            .http
            .get(uri)
            .header(header::ACCEPT, "application/json")
            .send()
            .await
            .map_err(|e| AuthError::Provider(format!("GET {uri}: {e}")))?;
        if !resp.status().is_success() {
            return Err(AuthError::Provider(format!("GET {uri}: {}", resp.status())));
        }
        let body = resp.bytes().await.map_err(|e| AuthError::Provider(e.to_string()))?;
        if body.len() > MAX_DOCUMENT_BYTES {
            return Err(AuthError::Provider(format!("GET {uri}: document too large")));
        }
        Ok(body.to_vec())
    }

    fn cert_principal(&self, der: &[u8], from: CertPrincipal) -> Result<String, AuthError> {
        let digest: [u8; 32] = Sha256::digest(der).into();
        if let Some(name) = self.cert_names.lock().ok().and_then(|m| m.get(&digest).cloned()) {
            return Ok(name);
        }
        let name = certificate_name(der, from)?;
        if let Ok(mut m) = self.cert_names.lock() {
            if m.len() > 4096 {
                m.clear();
            }
            m.insert(digest, name.clone());
        }
        Ok(name)
    }
}

fn find<'a>(keys: &'a Keys, kid: Option<&str>, alg: Algorithm) -> Option<&'a Jwk> {
    let fits = |k: &&Jwk| {
        // A key that declares its algorithm is only used with it (no algorithm confusion).
        k.common.key_algorithm.is_none_or(|a| a.to_string() == format!("{alg:?}"))
    };
    match kid {
        Some(id) => keys.by_kid.get(id).filter(fits),
        None => keys.anonymous.iter().find(fits),
    }
}

/// The bearer token of the single `Authorization` header, if any.
fn bearer_of(headers: &HeaderMap) -> Result<Option<&str>, AuthError> {
    let mut values = headers.get_all(header::AUTHORIZATION).iter();
    let Some(v) = values.next() else { return Ok(None) };
    if values.next().is_some() {
        return Err(AuthError::MalformedHeader);
    }
    let v = v.to_str().map_err(|_| AuthError::MalformedHeader)?;
    let (scheme, token) = v.split_once(' ').ok_or(AuthError::MalformedHeader)?;
    if !scheme.eq_ignore_ascii_case("bearer") {
        return Err(AuthError::InvalidToken(format!("authorization scheme {scheme} not accepted")));
    }
    let token = token.trim();
    if token.is_empty() || token.contains(' ') {
        return Err(AuthError::MalformedHeader);
    }
    Ok(Some(token))
}

/// Scopes granted by a token: the space-separated `scope` claim or the `scp` array.
fn scopes_of(claims: &Map<String, Value>) -> Vec<&str> {
    let mut out: Vec<&str> = claims
        .get("scope")
        .and_then(Value::as_str)
        .map(|s| s.split_whitespace().collect())
        .unwrap_or_default();
    if let Some(Value::Array(a)) = claims.get("scp") {
        out.extend(a.iter().filter_map(Value::as_str));
    }
    out
}

fn certificate_name(der: &[u8], from: CertPrincipal) -> Result<String, AuthError> {
    use x509_parser::prelude::{FromDer, GeneralName, X509Certificate};
    let (_, cert) = X509Certificate::from_der(der)
        .map_err(|e| AuthError::Certificate(format!("unparseable: {e}")))?;
    let sans: Vec<GeneralName> = cert
        .subject_alternative_name()
        .ok()
        .flatten()
        .map(|s| s.value.general_names.clone())
        .unwrap_or_default();
    let name = match from {
        CertPrincipal::UriSan => sans.iter().find_map(|n| match n {
            GeneralName::URI(u) => Some(u.to_string()),
            _ => None,
        }),
        CertPrincipal::DnsSan => sans.iter().find_map(|n| match n {
            GeneralName::DNSName(d) => Some(d.to_string()),
            _ => None,
        }),
        CertPrincipal::CommonName => cert
            .subject()
            .iter_common_name()
            .next()
            .and_then(|cn| cn.as_str().ok())
            .map(str::to_string),
    };
    name.filter(|n| !n.is_empty())
        .ok_or_else(|| AuthError::Certificate(format!("no {from:?} to name the principal")))
}

fn b64url(bytes: &[u8]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

/// The resource URI clients address (the token audience).
pub fn resource_uri(cfg: &GatewayConfig) -> Option<String> {
    cfg.listen.resource_uri.clone().or_else(|| cfg.auth.oidc.as_ref().map(|o| o.audience.clone()))
}

/// `WWW-Authenticate` for a refused request (RFC 6750, RFC 9728 `resource_metadata`).
pub fn challenge(cfg: &GatewayConfig, e: &AuthError) -> Option<HeaderValue> {
    let oidc = cfg.auth.oidc.as_ref()?;
    let mut parts = vec![];
    if let Some(r) = resource_uri(cfg) {
        parts.push(format!("resource_metadata=\"{}\"", metadata_url(&r)));
    }
    if let Some(code) = e.code() {
        parts.push(format!("error=\"{code}\""));
    }
    if matches!(e, AuthError::InsufficientScope(_) | AuthError::Missing)
        && !oidc.required_scopes.is_empty()
    {
        parts.push(format!("scope=\"{}\"", oidc.required_scopes.join(" ")));
    }
    let text = if parts.is_empty() {
        "Bearer".to_string()
    } else {
        format!("Bearer {}", parts.join(", "))
    };
    HeaderValue::from_str(&text).ok()
}

/// RFC 9728 section 3.1: the metadata of `https://host/path` lives at
/// `https://host/.well-known/oauth-protected-resource/path`.
pub fn metadata_url(resource: &str) -> String {
    match url::Url::parse(resource) {
        Ok(u) => {
            let path = u.path().trim_end_matches('/');
            format!("{}{PRM_PATH}{path}", u.origin().ascii_serialization())
        }
        Err(_) => format!("{}{PRM_PATH}", resource.trim_end_matches('/')),
    }
}

/// RFC 9728 protected resource metadata.
pub fn protected_resource_metadata(cfg: &GatewayConfig) -> Option<Value> {
    let oidc = cfg.auth.oidc.as_ref()?;
    Some(json!({
        "resource": resource_uri(cfg),
        "authorization_servers": [oidc.issuer],
        "bearer_methods_supported": ["header"],
        "scopes_supported": oidc.required_scopes,
        "resource_name": format!("{}/{}", cfg.server.namespace, cfg.server.name),
        "tls_client_certificate_bound_access_tokens": cfg.auth.mtls.is_some(),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_one_bearer_header_in_the_header_form() {
        let mut h = HeaderMap::new();
        assert!(matches!(bearer_of(&h), Ok(None)));
        h.insert(header::AUTHORIZATION, HeaderValue::from_static("Bearer abc"));
        assert_eq!(bearer_of(&h).ok().flatten(), Some("abc"));
        h.append(header::AUTHORIZATION, HeaderValue::from_static("Bearer def"));
        assert!(matches!(bearer_of(&h), Err(AuthError::MalformedHeader)));
        let mut h = HeaderMap::new();
        h.insert(header::AUTHORIZATION, HeaderValue::from_static("Basic dXNlcjpwYXNz"));
        assert!(matches!(bearer_of(&h), Err(AuthError::InvalidToken(_))));
    }

    #[test]
    fn scopes_come_from_scope_or_scp() {
        let c: Map<String, Value> =
            serde_json::from_value(json!({"scope": "a b", "scp": ["c"]})).unwrap_or_default();
        assert_eq!(scopes_of(&c), vec!["a", "b", "c"]);
    }

    #[test]
    fn metadata_lives_under_the_well_known_prefix() {
        assert_eq!(
            metadata_url("https://mcp.example.com/mcp"),
            "https://mcp.example.com/.well-known/oauth-protected-resource/mcp"
        );
        assert_eq!(
            metadata_url("https://mcp.example.com"),
            "https://mcp.example.com/.well-known/oauth-protected-resource"
        );
    }
}
