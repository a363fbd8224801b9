//! A loopback OIDC identity provider over HTTPS (its own CA), publishing the JWKS of an ES256
//! key that signs test tokens. Shared by the policy tests and the gateway benchmark.
#![allow(clippy::unwrap_used, clippy::expect_used, dead_code)]

use std::path::PathBuf;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{Value, json};

pub const AUDIENCE: &str = "https://mcp.test.example/mcp";
pub const SCOPE: &str = "mcp:tools";

pub struct Idp {
    pub issuer: String,
    pub ca_file: PathBuf,
    pub key: EncodingKey,
    /// A key the issuer does not publish.
    pub rogue: EncodingKey,
}

fn es256_key() -> (EncodingKey, Value) {
    let kp = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    let raw = kp.public_key_raw(); // 0x04 || x || y
    let b64 = |b: &[u8]| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b);
    let jwk = json!({"kty": "EC", "crv": "P-256", "x": b64(&raw[1..33]), "y": b64(&raw[33..65]),
                     "alg": "ES256", "use": "sig", "kid": "k1"});
    (EncodingKey::from_ec_der(kp.serialized_der()), jwk)
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
    let jwks = json!({"keys": [jwk]});
    let app = axum::Router::new()
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
    Idp { issuer, ca_file, key, rogue }
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
