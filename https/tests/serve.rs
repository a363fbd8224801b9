#![allow(clippy::unwrap_used, clippy::expect_used)]
//! The shared HTTPS server with a real TLS client: protocol versions, ALPN, certificate
//! reload, client certificates, header limits and graceful draining.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use palisade_https::{CertStore, ClientAuth, Limits, Peer, serve, server_config};
use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair};
use rustls::pki_types::{CertificateDer, ServerName};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

struct Pki {
    ca_pem: String,
    issuer: Issuer<'static, KeyPair>,
}

impl Pki {
    fn new() -> Pki {
        let mut p = CertificateParams::new(Vec::<String>::new()).unwrap();
        p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let key = KeyPair::generate().unwrap();
        let ca = p.self_signed(&key).unwrap();
        Pki { ca_pem: ca.pem(), issuer: Issuer::new(p, key) }
    }

    fn leaf(&self, names: &[&str], client: bool) -> (String, String) {
        let mut p = CertificateParams::new(names.iter().map(|s| s.to_string()).collect::<Vec<_>>())
            .unwrap();
        if client {
            p.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ClientAuth];
        }
        let key = KeyPair::generate().unwrap();
        let cert = p.signed_by(&key, &self.issuer).unwrap();
        (cert.pem(), key.serialize_pem())
    }
}

/// Answers with the HTTP version and the number of client certificates it saw.
#[derive(Clone)]
struct Echo {
    delay: Duration,
}

impl tower::Service<http::Request<hyper::body::Incoming>> for Echo {
    type Response = http::Response<Full<Bytes>>;
    type Error = Infallible;
    type Future = std::pin::Pin<
        Box<dyn std::future::Future<Output = Result<Self::Response, Infallible>> + Send>,
    >;

    fn poll_ready(
        &mut self,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), Infallible>> {
        std::task::Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: http::Request<hyper::body::Incoming>) -> Self::Future {
        let delay = self.delay;
        Box::pin(async move {
            tokio::time::sleep(delay).await;
            let peer = req.extensions().get::<Peer>().cloned();
            let body = format!(
                "{:?} certs={}",
                req.version(),
                peer.map(|p| p.certificates.len()).unwrap_or(99)
            );
            Ok(http::Response::new(Full::new(Bytes::from(body))))
        })
    }
}

async fn start(
    store: Arc<CertStore>,
    auth: ClientAuth,
    delay: Duration,
    limits: Limits,
) -> (u16, tokio::sync::oneshot::Sender<()>, tokio::task::JoinHandle<()>) {
    palisade_https::install_crypto_provider();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let tls = server_config(store, auth).unwrap();
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(serve(
        listener,
        Some(tls),
        Echo { delay },
        limits,
        async {
            let _ = rx.await;
        },
        Duration::from_secs(5),
    ));
    (port, tx, task)
}

fn client_config(
    ca_pem: &str,
    alpn: &[&[u8]],
    client: Option<(String, String)>,
    versions: &[&'static rustls::SupportedProtocolVersion],
) -> Arc<rustls::ClientConfig> {
    let mut roots = rustls::RootCertStore::empty();
    for c in rustls::pki_types::pem::PemObject::pem_slice_iter(ca_pem.as_bytes()) {
        let c: CertificateDer<'static> = c.unwrap();
        roots.add(c).unwrap();
    }
    let b = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::aws_lc_rs::default_provider(),
    ))
    .with_protocol_versions(versions)
    .unwrap()
    .with_root_certificates(roots);
    let mut cfg = match client {
        Some((cert, key)) => {
            let k =
                palisade_https::certified_key(cert.as_bytes(), key.as_bytes(), "client").unwrap();
            b.with_client_auth_cert(
                k.cert.clone(),
                rustls::pki_types::pem::PemObject::from_pem_slice(key.as_bytes()).unwrap(),
            )
            .unwrap()
        }
        None => b.with_no_client_auth(),
    };
    cfg.alpn_protocols = alpn.iter().map(|a| a.to_vec()).collect();
    Arc::new(cfg)
}

/// One HTTP/1.1 request over TLS; returns the server's leaf certificate and the raw response.
async fn get(
    port: u16,
    cfg: Arc<rustls::ClientConfig>,
    extra_header: &str,
) -> Result<(CertificateDer<'static>, String), String> {
    let tcp =
        tokio::net::TcpStream::connect(("127.0.0.1", port)).await.map_err(|e| e.to_string())?;
    let connector = tokio_rustls::TlsConnector::from(cfg);
    let mut tls = connector
        .connect(ServerName::try_from("localhost").unwrap(), tcp)
        .await
        .map_err(|e| e.to_string())?;
    let leaf = tls.get_ref().1.peer_certificates().unwrap()[0].clone();
    tls.write_all(
        format!("GET / HTTP/1.1\r\nHost: localhost\r\n{extra_header}Connection: close\r\n\r\n")
            .as_bytes(),
    )
    .await
    .map_err(|e| e.to_string())?;
    let mut out = Vec::new();
    let _ = tls.read_to_end(&mut out).await;
    Ok((leaf, String::from_utf8_lossy(&out).into_owned()))
}

#[tokio::test]
async fn serves_tls12_and_tls13_and_negotiates_h2() {
    let pki = Pki::new();
    let (cert, key) = pki.leaf(&["localhost"], false);
    let (port, stop, task) = start(
        CertStore::from_pem(cert.as_bytes(), key.as_bytes()).unwrap(),
        ClientAuth::None,
        Duration::ZERO,
        Limits::default(),
    )
    .await;
    for v in [&rustls::version::TLS12, &rustls::version::TLS13] {
        let (_, resp) =
            get(port, client_config(&pki.ca_pem, &[b"http/1.1"], None, &[v]), "").await.unwrap();
        assert!(resp.starts_with("HTTP/1.1 200"), "{resp}");
        assert!(resp.contains("HTTP/1.1 certs=0"), "{resp}");
    }
    // ALPN h2 is offered and chosen.
    let tcp = tokio::net::TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    let tls = tokio_rustls::TlsConnector::from(client_config(
        &pki.ca_pem,
        &[b"h2", b"http/1.1"],
        None,
        &[&rustls::version::TLS13],
    ))
    .connect(ServerName::try_from("localhost").unwrap(), tcp)
    .await
    .unwrap();
    assert_eq!(tls.get_ref().1.alpn_protocol(), Some(&b"h2"[..]));
    let _ = stop.send(());
    task.await.unwrap();
}

#[tokio::test]
async fn certificates_are_swapped_without_restart() {
    let pki = Pki::new();
    let (c1, k1) = pki.leaf(&["localhost"], false);
    let store = CertStore::from_pem(c1.as_bytes(), k1.as_bytes()).unwrap();
    let (port, stop, _task) =
        start(store.clone(), ClientAuth::None, Duration::ZERO, Limits::default()).await;
    // A fresh client each time: a resumed TLS session would not show the new certificate.
    let cfg = || client_config(&pki.ca_pem, &[b"http/1.1"], None, &[&rustls::version::TLS13]);
    let (first, _) = get(port, cfg(), "").await.unwrap();
    let (c2, k2) = pki.leaf(&["localhost"], false);
    store.set(palisade_https::certified_key(c2.as_bytes(), k2.as_bytes(), "c2").unwrap());
    let (second, resp) = get(port, cfg(), "").await.unwrap();
    assert_ne!(first, second, "the new certificate is served");
    assert!(resp.starts_with("HTTP/1.1 200"));
    let _ = stop.send(());
}

#[tokio::test]
async fn files_are_reloaded_when_they_change() {
    let pki = Pki::new();
    let dir = std::env::temp_dir().join(format!("palisade-https-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let (c1, k1) = pki.leaf(&["localhost"], false);
    std::fs::write(dir.join("tls.crt"), &c1).unwrap();
    std::fs::write(dir.join("tls.key"), &k1).unwrap();
    palisade_https::install_crypto_provider();
    let store = palisade_https::watch_files(
        dir.join("tls.crt"),
        dir.join("tls.key"),
        Duration::from_millis(100),
    )
    .unwrap();
    let (port, stop, _task) =
        start(store, ClientAuth::None, Duration::ZERO, Limits::default()).await;
    let cfg = || client_config(&pki.ca_pem, &[b"http/1.1"], None, &[&rustls::version::TLS13]);
    let (first, _) = get(port, cfg(), "").await.unwrap();
    tokio::time::sleep(Duration::from_millis(1100)).await; // mtime granularity
    let (c2, k2) = pki.leaf(&["localhost"], false);
    std::fs::write(dir.join("tls.key"), &k2).unwrap();
    std::fs::write(dir.join("tls.crt"), &c2).unwrap();
    let mut changed = false;
    for _ in 0..30 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        if get(port, cfg(), "").await.unwrap().0 != first {
            changed = true;
            break;
        }
    }
    assert!(changed, "the rewritten certificate was not picked up");
    let _ = stop.send(());
}

#[tokio::test]
async fn client_certificates_reach_the_handler_and_are_required_when_configured() {
    let pki = Pki::new();
    let (cert, key) = pki.leaf(&["localhost"], false);
    let client = pki.leaf(&["agent.example"], true);
    let store = CertStore::from_pem(cert.as_bytes(), key.as_bytes()).unwrap();
    let (port, stop, _t) = start(
        store.clone(),
        ClientAuth::Optional(pki.ca_pem.clone().into_bytes()),
        Duration::ZERO,
        Limits::default(),
    )
    .await;
    let (_, resp) = get(
        port,
        client_config(
            &pki.ca_pem,
            &[b"http/1.1"],
            Some(client.clone()),
            &[&rustls::version::TLS13],
        ),
        "",
    )
    .await
    .unwrap();
    assert!(resp.contains("certs=1"), "{resp}");
    let (_, resp) =
        get(port, client_config(&pki.ca_pem, &[b"http/1.1"], None, &[&rustls::version::TLS13]), "")
            .await
            .unwrap();
    assert!(resp.contains("certs=0"), "optional: anonymous allowed: {resp}");
    let _ = stop.send(());

    let (port, stop, _t) = start(
        store,
        ClientAuth::Required(pki.ca_pem.clone().into_bytes()),
        Duration::ZERO,
        Limits::default(),
    )
    .await;
    let anonymous =
        get(port, client_config(&pki.ca_pem, &[b"http/1.1"], None, &[&rustls::version::TLS13]), "")
            .await;
    assert!(
        anonymous.is_err() || !anonymous.as_ref().unwrap().1.contains("200"),
        "required: anonymous refused: {anonymous:?}"
    );
    let other = Pki::new().leaf(&["intruder"], true);
    let wrong = get(
        port,
        client_config(&pki.ca_pem, &[b"http/1.1"], Some(other), &[&rustls::version::TLS13]),
        "",
    )
    .await;
    assert!(
        wrong.is_err() || !wrong.as_ref().unwrap().1.contains("200"),
        "a certificate from another CA is refused: {wrong:?}"
    );
    let _ = stop.send(());
}

#[tokio::test]
async fn oversized_headers_are_refused() {
    let pki = Pki::new();
    let (cert, key) = pki.leaf(&["localhost"], false);
    let limits = Limits { max_header_bytes: 8192, ..Limits::default() };
    let (port, stop, _t) = start(
        CertStore::from_pem(cert.as_bytes(), key.as_bytes()).unwrap(),
        ClientAuth::None,
        Duration::ZERO,
        limits,
    )
    .await;
    let cfg = client_config(&pki.ca_pem, &[b"http/1.1"], None, &[&rustls::version::TLS13]);
    let big = format!("X-Big: {}\r\n", "a".repeat(64 * 1024));
    let (_, resp) = get(port, cfg.clone(), &big).await.unwrap();
    assert!(resp.starts_with("HTTP/1.1 431"), "{:?}", &resp[..resp.len().min(80)]);
    // Control: a request within the limit is served.
    let (_, ok) = get(port, cfg, "X-Small: a\r\n").await.unwrap();
    assert!(ok.starts_with("HTTP/1.1 200"), "{ok}");
    let _ = stop.send(());
}

/// An HTTP/2 connection over TLS, as a client that can reset its own streams.
async fn h2_client(
    port: u16,
    cfg: Arc<rustls::ClientConfig>,
) -> (h2::client::SendRequest<Bytes>, tokio::task::JoinHandle<Result<(), h2::Error>>) {
    let tcp = tokio::net::TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    let tls = tokio_rustls::TlsConnector::from(cfg)
        .connect(ServerName::try_from("localhost").unwrap(), tcp)
        .await
        .unwrap();
    let (send, conn) = h2::client::handshake(tls).await.unwrap();
    (send, tokio::spawn(conn))
}

fn h2_request(port: u16) -> http::Request<()> {
    http::Request::builder().uri(format!("https://localhost:{port}/")).body(()).unwrap()
}

/// Opens and resets 2000 streams as fast as one connection allows, then asks once more:
/// whether the connection still serves a request.
async fn survives_rapid_resets(port: u16, cfg: Arc<rustls::ClientConfig>) -> bool {
    let (mut send, conn) = h2_client(port, cfg).await;
    for _ in 0..2000 {
        send = match send.ready().await {
            Ok(s) => s,
            Err(_) => return false,
        };
        match send.send_request(h2_request(port), false) {
            Ok((_, mut stream)) => stream.send_reset(h2::Reason::CANCEL),
            Err(_) => return false,
        }
    }
    // Streams the server accepted before their reset may still count against its
    // concurrency for a moment.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let served = async {
        let send = send.ready().await.ok()?;
        let (resp, _) = send.clone().send_request(h2_request(port), true).ok()?;
        resp.await.ok().map(|r| r.status() == 200)
    };
    let ok =
        tokio::time::timeout(Duration::from_secs(10), served).await.ok().flatten() == Some(true);
    conn.abort();
    ok
}

/// CVE-2023-44487: a client that opens streams and resets them at once is cut off after the
/// configured number of pending resets. Control: with the limit out of reach, the same flood
/// leaves the connection serving, so the limit is what ends it.
#[tokio::test]
async fn http2_rapid_reset_floods_end_the_connection() {
    let pki = Pki::new();
    let (cert, key) = pki.leaf(&["localhost"], false);
    let cfg = client_config(&pki.ca_pem, &[b"h2"], None, &[&rustls::version::TLS13]);
    let mut verdicts = vec![];
    for pending in [20, 1_000_000] {
        let limits = Limits {
            max_pending_reset_streams: pending,
            max_local_error_resets: 1_000_000,
            ..Limits::default()
        };
        let (port, stop, _t) = start(
            CertStore::from_pem(cert.as_bytes(), key.as_bytes()).unwrap(),
            ClientAuth::None,
            Duration::ZERO,
            limits,
        )
        .await;
        verdicts.push(survives_rapid_resets(port, cfg.clone()).await);
        let _ = stop.send(());
    }
    assert_eq!(verdicts, vec![false, true], "(limit 20, no limit): connection survived?");
}

/// Connections beyond the cap wait: their TLS handshake does not complete until a served
/// connection ends.
#[tokio::test]
async fn connections_beyond_the_cap_wait_for_a_free_slot() {
    let pki = Pki::new();
    let (cert, key) = pki.leaf(&["localhost"], false);
    let limits = Limits { max_connections: 2, ..Limits::default() };
    let (port, stop, _t) = start(
        CertStore::from_pem(cert.as_bytes(), key.as_bytes()).unwrap(),
        ClientAuth::None,
        Duration::ZERO,
        limits,
    )
    .await;
    let cfg = client_config(&pki.ca_pem, &[b"h2"], None, &[&rustls::version::TLS13]);
    let (a, conn_a) = h2_client(port, cfg.clone()).await;
    let (b, conn_b) = h2_client(port, cfg.clone()).await;
    let third = tokio::spawn(h2_client(port, cfg));
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert!(!third.is_finished(), "a third connection was served beyond the cap of 2");
    drop(a);
    conn_a.abort();
    let (mut c, _conn_c) = tokio::time::timeout(Duration::from_secs(10), third)
        .await
        .expect("served once a slot is free")
        .unwrap();
    c = c.ready().await.unwrap();
    let (resp, _) = c.send_request(h2_request(port), true).unwrap();
    assert_eq!(resp.await.unwrap().status(), 200);
    drop(b);
    conn_b.abort();
    let _ = stop.send(());
}

#[tokio::test]
async fn shutdown_drains_in_flight_requests() {
    let pki = Pki::new();
    let (cert, key) = pki.leaf(&["localhost"], false);
    let (port, stop, task) = start(
        CertStore::from_pem(cert.as_bytes(), key.as_bytes()).unwrap(),
        ClientAuth::None,
        Duration::from_millis(500),
        Limits::default(),
    )
    .await;
    let cfg = client_config(&pki.ca_pem, &[b"http/1.1"], None, &[&rustls::version::TLS13]);
    let inflight = tokio::spawn(get(port, cfg.clone(), ""));
    tokio::time::sleep(Duration::from_millis(100)).await;
    let _ = stop.send(());
    let (_, resp) = inflight.await.unwrap().unwrap();
    assert!(resp.starts_with("HTTP/1.1 200"), "the in-flight request completed: {resp}");
    task.await.unwrap();
    assert!(
        tokio::net::TcpStream::connect(("127.0.0.1", port)).await.is_err(),
        "no longer accepting"
    );
}
