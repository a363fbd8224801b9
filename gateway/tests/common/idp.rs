//! A loopback OIDC identity provider over HTTPS (its own CA), publishing the JWKS of an ES256
//! key that signs test tokens, with a token endpoint for OAuth 2.0 Token Exchange (RFC 8693,
//! for [`EXCHANGE_CLIENT`]) and client credentials. Shared by the policy and upstream
//! credential tests and the gateway benchmark.
#![allow(clippy::unwrap_used, clippy::expect_used, dead_code)]

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde_json::{Value, json};

pub const AUDIENCE: &str = "https://mcp.test.example/mcp";
pub const SCOPE: &str = "mcp:tools";
/// The client the token endpoint knows (HTTP Basic), and its secret.
pub const EXCHANGE_CLIENT: &str = "palisade-gateway";
pub const EXCHANGE_SECRET: &str = "exchange-secret-1";

pub struct Idp {
    pub issuer: String,
    pub ca_file: PathBuf,
    pub key: EncodingKey,
    /// A key the issuer does not publish.
    pub rogue: EncodingKey,
    /// What the token endpoint did: `(grant_type, subject or client)` per issued token.
    pub issued: Arc<std::sync::Mutex<Vec<(String, String)>>>,
    /// Requests the token endpoint refused.
    pub refused: Arc<AtomicUsize>,
}

/// The token endpoint: RFC 8693 token exchange (the subject token must be one this issuer
/// signed, for the gateway's audience) and client credentials, for [`EXCHANGE_CLIENT`] only.
/// An issued token names its subject, the requested `audience` and, for an exchange, the
/// client as actor (`act.sub`).
fn token_endpoint(
    headers: &axum::http::HeaderMap,
    body: &str,
    issuer: &str,
    key: &EncodingKey,
    verify: &DecodingKey,
) -> Result<Value, (u16, &'static str)> {
    let basic = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Basic "))
        .and_then(|b| base64::engine::general_purpose::STANDARD.decode(b).ok())
        .map(|b| String::from_utf8_lossy(&b).to_string());
    if basic.as_deref() != Some(&format!("{EXCHANGE_CLIENT}:{EXCHANGE_SECRET}")) {
        return Err((401, "invalid_client"));
    }
    let form: std::collections::HashMap<String, String> =
        url::form_urlencoded::parse(body.as_bytes()).into_owned().collect();
    let audience = form.get("audience").cloned().unwrap_or_default();
    let (sub, act) = match form.get("grant_type").map(String::as_str) {
        Some("urn:ietf:params:oauth:grant-type:token-exchange") => {
            if form.get("subject_token_type").map(String::as_str)
                != Some("urn:ietf:params:oauth:token-type:access_token")
            {
                return Err((400, "invalid_request"));
            }
            let mut v = Validation::new(Algorithm::ES256);
            v.set_issuer(&[issuer]);
            v.set_audience(&[AUDIENCE]);
            let subject = form.get("subject_token").ok_or((400, "invalid_request"))?;
            let data = jsonwebtoken::decode::<Value>(subject, verify, &v)
                .map_err(|_| (400, "invalid_grant"))?;
            let sub = data.claims["sub"].as_str().ok_or((400, "invalid_grant"))?.to_string();
            (sub, Some(json!({"sub": EXCHANGE_CLIENT})))
        }
        Some("client_credentials") => (EXCHANGE_CLIENT.to_string(), None),
        _ => return Err((400, "unsupported_grant_type")),
    };
    let mut claims = json!({"iss": issuer, "aud": audience, "sub": sub, "exp": now() + 300,
                            "iat": now(), "scope": form.get("scope").cloned().unwrap_or_default()});
    if let Some(act) = act {
        claims["act"] = act;
    }
    let mut h = Header::new(Algorithm::ES256);
    h.kid = Some("k1".into());
    let token = jsonwebtoken::encode(&h, &claims, key).map_err(|_| (500, "server_error"))?;
    Ok(json!({"access_token": token, "token_type": "Bearer", "expires_in": 300,
              "issued_token_type": "urn:ietf:params:oauth:token-type:access_token"}))
}

fn es256_key() -> (EncodingKey, Value) {
    let kp = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    let raw = kp.public_key_raw(); // 0x04 || x || y
    let b64 = |b: &[u8]| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b);
    let jwk = json!({"kty": "EC", "crv": "P-256", "x": b64(&raw[1..33]), "y": b64(&raw[33..65]),
                     "alg": "ES256", "use": "sig", "kid": "k1"});
    (EncodingKey::from_ec_der(kp.serialized_der()), jwk)
}

/// The public half of a JWK made by [`es256_key`].
fn decoding_key(jwk: &Value) -> DecodingKey {
    DecodingKey::from_ec_components(jwk["x"].as_str().unwrap(), jwk["y"].as_str().unwrap()).unwrap()
}

pub async fn idp() -> Idp {
    palisade_https::install_crypto_provider();
    let dir = tempfile::tempdir().unwrap().keep();
    let ca =
        palisade_https::ca::Authority::generate("test IdP CA", Duration::from_secs(3600)).unwrap();
    let leaf = ca.issue_server(&["localhost".to_string()], Duration::from_secs(3600)).unwrap();
    let ca_file = dir.join("ca.pem");
    std::fs::write(&ca_file, &ca.cert_pem).unwrap();
    let (key, jwk) = es256_key();
    let (rogue, _) = es256_key();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let issuer = format!("https://localhost:{}", listener.local_addr().unwrap().port());
    let discovery = json!({"issuer": issuer, "jwks_uri": format!("{issuer}/jwks"),
                           "authorization_endpoint": format!("{issuer}/authorize"),
                           "token_endpoint": format!("{issuer}/token")});
    let verify = decoding_key(&jwk);
    let jwks = json!({"keys": [jwk]});
    let issued: Arc<std::sync::Mutex<Vec<(String, String)>>> = Arc::default();
    let refused = Arc::new(AtomicUsize::new(0));
    let endpoint = {
        let (issuer, key, issued, refused) =
            (issuer.clone(), key.clone(), issued.clone(), refused.clone());
        move |headers: axum::http::HeaderMap, body: String| {
            let answer = token_endpoint(&headers, &body, &issuer, &key, &verify);
            let form: std::collections::HashMap<String, String> =
                url::form_urlencoded::parse(body.as_bytes()).into_owned().collect();
            async move {
                match answer {
                    Ok(v) => {
                        let grant = form.get("grant_type").cloned().unwrap_or_default();
                        let token = v["access_token"].as_str().unwrap_or_default();
                        let claims = jsonwebtoken::dangerous::insecure_decode::<Value>(token)
                            .map(|d| d.claims)
                            .unwrap_or_default();
                        let sub = claims["sub"].as_str().unwrap_or_default().to_string();
                        issued.lock().unwrap().push((grant, sub));
                        (axum::http::StatusCode::OK, axum::Json(v))
                    }
                    Err((status, error)) => {
                        refused.fetch_add(1, Ordering::SeqCst);
                        let status = axum::http::StatusCode::from_u16(status).unwrap();
                        (status, axum::Json(json!({"error": error})))
                    }
                }
            }
        }
    };
    let app = axum::Router::new()
        .route("/token", axum::routing::post(endpoint))
        .route(
            "/.well-known/openid-configuration",
            axum::routing::get(move || async move { axum::Json(discovery) }),
        )
        .route("/jwks", axum::routing::get(move || async move { axum::Json(jwks) }));
    let certs =
        palisade_https::CertStore::from_pem(leaf.cert_pem.as_bytes(), leaf.key_pem.as_bytes())
            .unwrap();
    let tls = palisade_https::server_config(certs, palisade_https::ClientAuth::None).unwrap();
    tokio::spawn(palisade_https::serve(
        listener,
        Some(tls),
        app,
        palisade_https::Limits::default(),
        std::future::pending::<()>(),
        Duration::from_secs(1),
    ));
    Idp { issuer, ca_file, key, rogue, issued, refused }
}

pub fn now() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs() as i64
}

impl Idp {
    pub fn claims(&self, sub: &str) -> Value {
        json!({"iss": self.issuer, "aud": AUDIENCE, "sub": sub, "exp": now() + 300,
               "nbf": now() - 5, "iat": now(), "scope": SCOPE})
    }

    pub fn sign(&self, claims: &Value) -> String {
        let mut h = Header::new(Algorithm::ES256);
        h.kid = Some("k1".into());
        jsonwebtoken::encode(&h, claims, &self.key).unwrap()
    }

    pub fn token(&self, sub: &str) -> String {
        self.sign(&self.claims(sub))
    }
}
