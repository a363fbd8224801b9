//! What the gateway presents to the server (`upstreamAuth`): one header whose value comes from
//! a mounted Secret, or, with OAuth 2.0 Token Exchange (RFC 8693), a token the token endpoint
//! issues for the calling user, with the client's own token as the subject token. The client's
//! token itself never reaches the server. Exchanged tokens are cached by the digest of the
//! subject token until shortly before they expire; the gateway's own requests (its handshake)
//! carry a client-credentials token. A credential that cannot be obtained fails the request
//! (nothing is sent without it).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use palisade_core::config::{TokenExchangeConfig, UpstreamAuthConfig};
use reqwest::header::{HeaderName, HeaderValue};
use serde_json::Value;
use sha2::{Digest, Sha256};

const TOKEN_EXCHANGE: &str = "urn:ietf:params:oauth:grant-type:token-exchange";
const ACCESS_TOKEN: &str = "urn:ietf:params:oauth:token-type:access_token";
const FETCH_TIMEOUT: Duration = Duration::from_secs(10);
/// A token is used until this long before it expires.
const EXPIRY_MARGIN: Duration = Duration::from_secs(30);
/// Without `expires_in`, a token is kept this long.
const DEFAULT_LIFETIME: Duration = Duration::from_secs(300);
/// Exchanged tokens kept at most (the oldest are dropped first).
const CACHE_ENTRIES: usize = 4096;

#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum CredentialError {
    #[error("upstream credentials are misconfigured: {0}")]
    Config(String),
    #[error("the upstream credential could not be read")]
    Unreadable,
    #[error("no token for the server: the caller presented no bearer token to exchange")]
    NoSubjectToken,
    #[error("the token endpoint refused the exchange: {0}")]
    Refused(String),
    #[error("the token endpoint could not be reached")]
    Unreachable,
}

/// A bearer token the client presented: kept out of every log and debug output.
#[derive(Clone, PartialEq, Eq)]
pub struct SubjectToken(Arc<str>);

impl SubjectToken {
    pub fn new(token: &str) -> SubjectToken {
        SubjectToken(Arc::from(token))
    }

    fn expose(&self) -> &str {
        &self.0
    }

    fn digest(&self) -> String {
        hex::encode(Sha256::digest(self.0.as_bytes()))
    }
}

impl std::fmt::Debug for SubjectToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SubjectToken(<redacted>)")
    }
}

struct Cached {
    token: String,
    until: Instant,
}

/// The gateway's upstream credentials.
pub struct Credentials {
    source: Source,
}

enum Source {
    Header { name: HeaderName, prefix: String, file: String },
    Exchange(Box<Exchange>),
}

struct Exchange {
    cfg: TokenExchangeConfig,
    http: reqwest::Client,
    /// Exchanged tokens by the digest of their subject token ("" for the gateway's own).
    cache: Mutex<HashMap<String, Cached>>,
}

impl Credentials {
    pub fn new(cfg: &UpstreamAuthConfig) -> Result<Credentials, CredentialError> {
        let source = match cfg {
            UpstreamAuthConfig::Header { name, prefix, value_file } => Source::Header {
                name: HeaderName::from_bytes(name.as_bytes()).map_err(|_| {
                    CredentialError::Config(format!("invalid header name {name:?}"))
                })?,
                prefix: prefix.clone(),
                file: value_file.clone(),
            },
            UpstreamAuthConfig::TokenExchange(t) => {
                palisade_https::install_crypto_provider();
                let mut b = reqwest::Client::builder()
                    .timeout(FETCH_TIMEOUT)
                    .redirect(reqwest::redirect::Policy::none())
                    .https_only(true);
                if let Some(path) = &t.ca_file {
                    b = super::reach::with_extra_roots(b, path, "the token endpoint's")
                        .map_err(|e| CredentialError::Config(e.to_string()))?;
                }
                let http = b.build().map_err(|e| CredentialError::Config(e.to_string()))?;
                Source::Exchange(Box::new(Exchange {
                    cfg: t.clone(),
                    http,
                    cache: Mutex::new(HashMap::new()),
                }))
            }
        };
        Ok(Credentials { source })
    }

    /// Whether the credential depends on the caller (each user's requests need their own).
    pub fn per_user(&self) -> bool {
        matches!(self.source, Source::Exchange(_))
    }

    /// The header for a request made for `subject` (`None`: the gateway's own request).
    pub async fn header(
        &self,
        subject: Option<&SubjectToken>,
    ) -> Result<(HeaderName, HeaderValue), CredentialError> {
        match &self.source {
            Source::Header { name, prefix, file } => {
                let value =
                    std::fs::read_to_string(file).map_err(|_| CredentialError::Unreadable)?;
                let value = format!("{prefix}{}", value.trim());
                let mut v =
                    HeaderValue::from_str(&value).map_err(|_| CredentialError::Unreadable)?;
                v.set_sensitive(true);
                Ok((name.clone(), v))
            }
            Source::Exchange(x) => {
                let token = x.token(subject).await?;
                let mut v = HeaderValue::from_str(&format!("Bearer {token}")).map_err(|_| {
                    CredentialError::Refused("the issued token is not a header value".into())
                })?;
                v.set_sensitive(true);
                Ok((reqwest::header::AUTHORIZATION, v))
            }
        }
    }
}

impl Exchange {
    async fn token(&self, subject: Option<&SubjectToken>) -> Result<String, CredentialError> {
        let key = subject.map(SubjectToken::digest).unwrap_or_default();
        if let Ok(cache) = self.cache.lock()
            && let Some(c) = cache.get(&key)
            && Instant::now() < c.until
        {
            return Ok(c.token.clone());
        }
        let secret = std::fs::read_to_string(&self.cfg.client_secret_file)
            .map_err(|_| CredentialError::Unreadable)?;
        let mut form: Vec<(&str, String)> = Vec::new();
        match subject {
            Some(s) => {
                form.push(("grant_type", TOKEN_EXCHANGE.into()));
                form.push(("subject_token", s.expose().to_string()));
                form.push(("subject_token_type", ACCESS_TOKEN.into()));
                form.push(("requested_token_type", ACCESS_TOKEN.into()));
            }
            None => form.push(("grant_type", "client_credentials".into())),
        }
        if let Some(a) = &self.cfg.audience {
            form.push(("audience", a.clone()));
        }
        if let Some(r) = &self.cfg.resource {
            form.push(("resource", r.clone()));
        }
        if !self.cfg.scopes.is_empty() {
            form.push(("scope", self.cfg.scopes.join(" ")));
        }
        let body = url::form_urlencoded::Serializer::new(String::new()).extend_pairs(form).finish();
        let resp = self
            .http
            .post(&self.cfg.token_endpoint)
            .basic_auth(&self.cfg.client_id, Some(secret.trim()))
            .header(reqwest::header::CONTENT_TYPE, "application/x-www-form-urlencoded")
            .body(body)
            .send()
            .await
            .map_err(|_| CredentialError::Unreachable)?;
        let status = resp.status();
        let body: Value = resp.json().await.unwrap_or(Value::Null);
        if !status.is_success() {
            // RFC 6749 5.2: `error` (and `error_description`) name why; nothing else is quoted.
            let why = body.get("error").and_then(Value::as_str).unwrap_or("no error code");
            return Err(CredentialError::Refused(format!("HTTP {}: {why}", status.as_u16())));
        }
        let token = body
            .get("access_token")
            .and_then(Value::as_str)
            .filter(|t| !t.is_empty())
            .ok_or_else(|| CredentialError::Refused("no access_token in the answer".into()))?
            .to_string();
        let lifetime = body
            .get("expires_in")
            .and_then(Value::as_u64)
            .map(Duration::from_secs)
            .unwrap_or(DEFAULT_LIFETIME);
        let until = Instant::now() + lifetime.saturating_sub(EXPIRY_MARGIN);
        if let Ok(mut cache) = self.cache.lock() {
            let now = Instant::now();
            cache.retain(|_, c| c.until > now);
            if cache.len() >= CACHE_ENTRIES
                && let Some(oldest) =
                    cache.iter().min_by_key(|(_, c)| c.until).map(|(k, _)| k.clone())
            {
                cache.remove(&oldest);
            }
            cache.insert(key, Cached { token: token.clone(), until });
        }
        Ok(token)
    }
}

/// Who a connection to the server speaks for: the gateway's credentials and, for a per-user
/// credential, the caller's current token (updated with each of their requests).
pub struct Identity {
    credentials: Option<Arc<Credentials>>,
    /// Shared by the identities derived with [`Identity::with`] (one user, several servers).
    subject: Arc<Mutex<Option<SubjectToken>>>,
}

impl Identity {
    pub fn new(credentials: Arc<Credentials>, subject: Option<SubjectToken>) -> Arc<Identity> {
        Arc::new(Identity {
            credentials: Some(credentials),
            subject: Arc::new(Mutex::new(subject)),
        })
    }

    /// The user alone, without a credential of its own (a virtual server's, whose servers
    /// each have theirs: [`Identity::with`]).
    pub fn user(subject: Option<SubjectToken>) -> Arc<Identity> {
        Arc::new(Identity { credentials: None, subject: Arc::new(Mutex::new(subject)) })
    }

    /// The same user with `credentials`: the caller's newest token reaches both.
    pub fn with(&self, credentials: Arc<Credentials>) -> Arc<Identity> {
        Arc::new(Identity { credentials: Some(credentials), subject: self.subject.clone() })
    }

    /// The caller's newest token (a session outlives the token it was opened with).
    pub fn update(&self, subject: Option<&SubjectToken>) {
        if let (Some(s), Ok(mut current)) = (subject, self.subject.lock())
            && current.as_ref() != Some(s)
        {
            *current = Some(s.clone());
        }
    }

    pub async fn header(&self) -> Result<(HeaderName, HeaderValue), CredentialError> {
        let Some(credentials) = &self.credentials else {
            return Err(CredentialError::Config("no credential is configured".into()));
        };
        let subject = self.subject.lock().ok().and_then(|s| s.clone());
        if credentials.per_user() && subject.is_none() {
            // A per-user credential for a connection opened without a user: the gateway's own.
            return credentials.header(None).await;
        }
        credentials.header(subject.as_ref()).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_subject_token_never_shows_in_debug_output() {
        let t = SubjectToken::new("eyJhbGciOi.secret.sig");
        assert_eq!(format!("{t:?}"), "SubjectToken(<redacted>)");
        assert_eq!(t.digest().len(), 64);
    }

    #[tokio::test]
    async fn a_header_credential_is_read_from_its_file_and_marked_sensitive() {
        let dir = std::env::temp_dir().join(format!("palisade-cred-{}", std::process::id()));
        let _ = std::fs::create_dir_all(&dir);
        let file = dir.join("token");
        let _ = std::fs::write(&file, "s3cret\n");
        let c = Credentials::new(&UpstreamAuthConfig::Header {
            name: "Authorization".into(),
            prefix: "Bearer ".into(),
            value_file: file.display().to_string(),
        });
        let Ok(c) = c else { panic!("valid config") };
        let h = c.header(None).await;
        let Ok((name, value)) = h else { panic!("{h:?}") };
        assert_eq!(name, reqwest::header::AUTHORIZATION);
        assert_eq!(value.to_str().ok(), Some("Bearer s3cret"));
        assert!(value.is_sensitive());
        let _ = std::fs::remove_file(&file);
        assert_eq!(c.header(None).await.err(), Some(CredentialError::Unreadable));
        let bad = Credentials::new(&UpstreamAuthConfig::Header {
            name: "bad header".into(),
            prefix: String::new(),
            value_file: "x".into(),
        });
        assert!(bad.is_err());
    }
}
