//! HTTPS serving for Palisade's network-facing processes (the gateway and the webhook).
//!
//! - TLS 1.2 and 1.3 only (rustls, aws-lc-rs), ALPN h2 and http/1.1.
//! - The certificate can be swapped at run time ([`CertStore`]), from files that are reloaded
//!   when they change or from memory (the webhook's self-managed certificate).
//! - Flood limits: TLS handshake timeout, HTTP/1 header size and read timeout, HTTP/2
//!   concurrent streams, header list size and reset-flood limits.
//! - Graceful shutdown: stop accepting, let in-flight requests finish, then close.

#[cfg(feature = "admin")]
pub mod admin;
#[cfg(feature = "ca")]
pub mod ca;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime};

use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::service::TowerToHyperService;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert, WebPkiClientVerifier};
use rustls::sign::CertifiedKey;
use rustls::{RootCertStore, ServerConfig};
use tokio::net::TcpListener;
use tracing::{debug, info, warn};

#[derive(Debug, thiserror::Error)]
pub enum HttpsError {
    #[error("{path}: {source}")]
    Read { path: String, source: std::io::Error },
    #[error("no certificate in {0}")]
    NoCertificate(String),
    #[error("no usable private key in {0}")]
    NoKey(String),
    #[error("TLS: {0}")]
    Tls(#[from] rustls::Error),
    #[error("client CA: {0}")]
    ClientCa(String),
}

/// The TLS provider of every Palisade process; installed once at start-up.
/// Resolves on SIGTERM (Kubernetes stopping the pod) or Ctrl-C, whichever comes first; the
/// servers of every Palisade binary drain on it.
pub async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    match signal(SignalKind::terminate()) {
        Ok(mut term) => {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {},
                _ = term.recv() => {},
            }
        }
        Err(_) => {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}

pub fn install_crypto_provider() {
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::aws_lc_rs::default_provider())
}

/// Parses a PEM certificate chain and private key into a signing key for rustls.
pub fn certified_key(
    cert_pem: &[u8],
    key_pem: &[u8],
    what: &str,
) -> Result<CertifiedKey, HttpsError> {
    let certs: Vec<CertificateDer<'static>> =
        CertificateDer::pem_slice_iter(cert_pem).filter_map(Result::ok).collect();
    if certs.is_empty() {
        return Err(HttpsError::NoCertificate(what.to_string()));
    }
    let key =
        PrivateKeyDer::from_pem_slice(key_pem).map_err(|_| HttpsError::NoKey(what.to_string()))?;
    Ok(CertifiedKey::from_der(certs, key, &provider())?)
}

/// The serving certificate, replaceable while connections are being accepted.
#[derive(Debug)]
pub struct CertStore {
    current: RwLock<Arc<CertifiedKey>>,
}

impl CertStore {
    pub fn new(key: CertifiedKey) -> Arc<CertStore> {
        Arc::new(CertStore { current: RwLock::new(Arc::new(key)) })
    }

    pub fn from_pem(cert_pem: &[u8], key_pem: &[u8]) -> Result<Arc<CertStore>, HttpsError> {
        Ok(CertStore::new(certified_key(cert_pem, key_pem, "certificate")?))
    }

    /// Replaces the certificate for new handshakes.
    pub fn set(&self, key: CertifiedKey) {
        if let Ok(mut guard) = self.current.write() {
            *guard = Arc::new(key);
        }
    }

    pub fn current(&self) -> Option<Arc<CertifiedKey>> {
        self.current.read().ok().map(|g| g.clone())
    }
}

impl ResolvesServerCert for CertStore {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        self.current()
    }
}

fn modified(path: &Path) -> Option<SystemTime> {
    std::fs::metadata(path).and_then(|m| m.modified()).ok()
}

fn read(path: &Path) -> Result<Vec<u8>, HttpsError> {
    std::fs::read(path)
        .map_err(|source| HttpsError::Read { path: path.display().to_string(), source })
}

/// Loads a certificate and key from files and reloads them when either changes (Kubernetes
/// updates Secret mounts by swapping a symlink, which changes the files' mtimes).
pub fn watch_files(
    cert: PathBuf,
    key: PathBuf,
    every: Duration,
) -> Result<Arc<CertStore>, HttpsError> {
    let store =
        CertStore::new(certified_key(&read(&cert)?, &read(&key)?, &cert.display().to_string())?);
    let weak = Arc::downgrade(&store);
    let mut seen = (modified(&cert), modified(&key));
    tokio::spawn(async move {
        loop {
            tokio::time::sleep(every).await;
            let Some(store) = weak.upgrade() else { return };
            let now = (modified(&cert), modified(&key));
            if now == seen {
                continue;
            }
            match read(&cert).and_then(|c| {
                read(&key).and_then(|k| certified_key(&c, &k, &cert.display().to_string()))
            }) {
                Ok(k) => {
                    store.set(k);
                    seen = now;
                    info!(cert = %cert.display(), "reloaded the serving certificate");
                }
                // A half-written pair is retried on the next tick; the old certificate stays.
                Err(e) => warn!(error = %e, "certificate reload failed; keeping the current one"),
            }
        }
    });
    Ok(store)
}

/// Client certificate policy for mTLS.
pub enum ClientAuth {
    None,
    /// Verify against these CAs; anonymous clients are allowed (the application decides).
    Optional(Vec<u8>),
    /// Verify against these CAs; clients without a certificate are refused in the handshake.
    Required(Vec<u8>),
}

/// A rustls server config: TLS 1.2+, ALPN h2 and http/1.1, the certificate from `certs`.
pub fn server_config(
    certs: Arc<CertStore>,
    client_auth: ClientAuth,
) -> Result<Arc<ServerConfig>, HttpsError> {
    let builder = ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])?;
    let builder = match client_auth {
        ClientAuth::None => builder.with_no_client_auth(),
        ClientAuth::Optional(pem) | ClientAuth::Required(pem) if pem.is_empty() => {
            return Err(HttpsError::ClientCa("empty CA bundle".into()));
        }
        ClientAuth::Optional(pem) => {
            builder.with_client_cert_verifier(client_verifier(&pem, true)?)
        }
        ClientAuth::Required(pem) => {
            builder.with_client_cert_verifier(client_verifier(&pem, false)?)
        }
    };
    let mut config = builder.with_cert_resolver(certs);
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

fn client_verifier(
    pem: &[u8],
    optional: bool,
) -> Result<Arc<dyn rustls::server::danger::ClientCertVerifier>, HttpsError> {
    let mut roots = RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(pem) {
        let cert = cert.map_err(|e| HttpsError::ClientCa(e.to_string()))?;
        roots.add(cert).map_err(|e| HttpsError::ClientCa(e.to_string()))?;
    }
    let builder = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider());
    let builder = if optional { builder.allow_unauthenticated() } else { builder };
    builder.build().map_err(|e| HttpsError::ClientCa(e.to_string()))
}

/// Connection-level bounds.
#[derive(Debug, Clone)]
pub struct Limits {
    pub handshake_timeout: Duration,
    /// HTTP/1: time to receive the request head.
    pub header_read_timeout: Duration,
    /// HTTP/1: read buffer, which bounds the request head.
    pub max_header_bytes: usize,
    /// HTTP/2: streams per connection.
    pub max_concurrent_streams: u32,
    /// HTTP/2: decoded header list size.
    pub max_header_list_bytes: u32,
    /// HTTP/2: reset streams not yet accepted (CVE-2023-44487 rapid reset).
    pub max_pending_reset_streams: usize,
    /// HTTP/2: streams the server itself had to reset (CVE-2024-27316 style floods).
    pub max_local_error_resets: usize,
    pub keep_alive_interval: Option<Duration>,
    /// Connections served at once; more wait in the kernel's accept queue.
    pub max_connections: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            handshake_timeout: Duration::from_secs(10),
            header_read_timeout: Duration::from_secs(10),
            max_header_bytes: 16 * 1024,
            max_concurrent_streams: 100,
            max_header_list_bytes: 16 * 1024,
            max_pending_reset_streams: 20,
            max_local_error_resets: 256,
            keep_alive_interval: Some(Duration::from_secs(30)),
            max_connections: 4096,
        }
    }
}

/// What a handler can learn about the connection a request came on.
#[derive(Debug, Clone)]
pub struct Peer {
    pub addr: SocketAddr,
    /// The client's verified certificate chain (mTLS), leaf first.
    pub certificates: Vec<CertificateDer<'static>>,
    pub tls: bool,
}

fn builder(limits: &Limits) -> auto::Builder<TokioExecutor> {
    let mut b = auto::Builder::new(TokioExecutor::new());
    b.http1()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout)
        .max_buf_size(limits.max_header_bytes.max(8192))
        .keep_alive(true);
    b.http2()
        .timer(TokioTimer::new())
        .max_concurrent_streams(limits.max_concurrent_streams)
        .max_header_list_size(limits.max_header_list_bytes)
        .max_pending_accept_reset_streams(limits.max_pending_reset_streams)
        .max_local_error_reset_streams(limits.max_local_error_resets)
        .keep_alive_interval(limits.keep_alive_interval);
    b
}

/// Inserts the connection's [`Peer`] into every request's extensions.
#[derive(Clone)]
pub struct WithPeer<S> {
    inner: S,
    peer: Peer,
}

impl<S, ReqBody> tower::Service<http::Request<ReqBody>> for WithPeer<S>
where
    S: tower::Service<http::Request<ReqBody>>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = S::Future;

    fn poll_ready(
        &mut self,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: http::Request<ReqBody>) -> Self::Future {
        req.extensions_mut().insert(self.peer.clone());
        self.inner.call(req)
    }
}

/// Serves `app` (an axum `Router` or any cloneable tower service) on `listener`, over TLS when
/// `tls` is set, until `shutdown` resolves; then stops accepting and waits up to `drain` for
/// open connections to finish their requests.
pub async fn serve<S, B, F>(
    listener: TcpListener,
    tls: Option<Arc<ServerConfig>>,
    app: S,
    limits: Limits,
    shutdown: F,
    drain: Duration,
) where
    S: tower::Service<
            http::Request<hyper::body::Incoming>,
            Response = http::Response<B>,
            Error = std::convert::Infallible,
        > + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
    B: hyper::body::Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    F: std::future::Future<Output = ()> + Send,
{
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    let acceptor = tls.map(tokio_rustls::TlsAcceptor::from);
    let slots = Arc::new(tokio::sync::Semaphore::new(limits.max_connections));
    let builder = Arc::new(builder(&limits));
    tokio::pin!(shutdown);
    loop {
        let permit = tokio::select! {
            _ = &mut shutdown => break,
            p = slots.clone().acquire_owned() => match p { Ok(p) => p, Err(_) => break },
        };
        let (tcp, addr) = tokio::select! {
            _ = &mut shutdown => break,
            r = listener.accept() => match r {
                Ok(c) => c,
                Err(e) => {
                    warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let _ = tcp.set_nodelay(true);
        let acceptor = acceptor.clone();
        let app = app.clone();
        let builder = builder.clone();
        let watcher = graceful.watcher();
        let handshake_timeout = limits.handshake_timeout;
        tokio::spawn(async move {
            let _permit = permit;
            let result = match acceptor {
                Some(acceptor) => {
                    let stream =
                        match tokio::time::timeout(handshake_timeout, acceptor.accept(tcp)).await {
                            Ok(Ok(s)) => s,
                            Ok(Err(e)) => {
                                debug!(%addr, error = %e, "TLS handshake failed");
                                return;
                            }
                            Err(_) => {
                                debug!(%addr, "TLS handshake timed out");
                                return;
                            }
                        };
                    let certificates = stream
                        .get_ref()
                        .1
                        .peer_certificates()
                        .map(|c| c.to_vec())
                        .unwrap_or_default();
                    let svc = TowerToHyperService::new(WithPeer {
                        inner: app,
                        peer: Peer { addr, certificates, tls: true },
                    });
                    watcher
                        .watch(builder.serve_connection(TokioIo::new(stream), svc).into_owned())
                        .await
                }
                None => {
                    let svc = TowerToHyperService::new(WithPeer {
                        inner: app,
                        peer: Peer { addr, certificates: vec![], tls: false },
                    });
                    watcher
                        .watch(builder.serve_connection(TokioIo::new(tcp), svc).into_owned())
                        .await
                }
            };
            if let Err(e) = result {
                debug!(%addr, error = %e, "connection ended with an error");
            }
        });
    }
    drop(listener);
    if tokio::time::timeout(drain, graceful.shutdown()).await.is_err() {
        warn!("connections still open after the drain period; closing them");
    }
}
