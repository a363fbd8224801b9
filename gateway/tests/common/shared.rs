//! Real processes for tests of gateway replicas: Redis (from Debian, with an append-only file
//! that survives a restart) and HAProxy (from Debian) balancing round-robin across gateways,
//! both cached by `e2e/tools build debs`. Loopback only; every process stops when dropped.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use tokio::process::Command;

use super::{Proc, free_port, repo, scratch, spawn};

/// A Debian tool's cached path; the test fails when it has not been fetched.
pub fn debian_tool(name: &str) -> PathBuf {
    cached_tool(name, "debs")
}

/// An upstream tool's cached path (`e2e/tools path NAME`); the test fails when it is not built
/// (`e2e/tools build TARGET`, part of `make tools`).
pub fn cached_tool(name: &str, target: &str) -> PathBuf {
    let out = std::process::Command::new(repo().join("e2e/tools"))
        .args(["path", name])
        .output()
        .expect("e2e/tools runs");
    let path = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
    assert!(
        path.is_file(),
        "{name} is missing at {}: run `e2e/tools build {target}` (make tools)",
        path.display()
    );
    path
}

async fn wait_listening(port: u16, what: &str) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while tokio::net::TcpStream::connect(("127.0.0.1", port)).await.is_err() {
        assert!(Instant::now() < deadline, "{what} does not listen on {port}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Redis with a password and an append-only file fsynced on every write.
pub struct Redis {
    pub port: u16,
    pub password: String,
    pub password_file: PathBuf,
    dir: PathBuf,
    proc: Option<Proc>,
}

impl Redis {
    pub async fn start() -> Redis {
        let dir = scratch("redis");
        let password = format!("pw-{}", rand::random::<u64>());
        let password_file = dir.join("password");
        std::fs::write(&password_file, format!("{password}\n")).unwrap();
        let mut r = Redis { port: free_port(), password, password_file, dir, proc: None };
        r.restart().await;
        r
    }

    /// Starts (again) on the same port, from the same append-only file.
    pub async fn restart(&mut self) {
        self.proc = Some(spawn(
            Command::new(debian_tool("redis-server"))
                .args(["--port", &self.port.to_string(), "--bind", "127.0.0.1"])
                .args(["--requirepass", &self.password])
                .args(["--appendonly", "yes", "--appendfsync", "always", "--save", ""])
                .arg("--dir")
                .arg(&self.dir),
        ));
        wait_listening(self.port, "redis").await;
    }

    /// Kills it outright (no shutdown save): only what the append-only file holds survives.
    pub async fn kill(&mut self) {
        if let Some(mut p) = self.proc.take() {
            p.0.kill().await.unwrap();
        }
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// The keys the store holds.
    pub fn keys(&self) -> Vec<String> {
        let out = std::process::Command::new(debian_tool("redis-cli"))
            .args(["-p", &self.port.to_string(), "--no-auth-warning", "-a", &self.password])
            .args(["--raw", "KEYS", "*"])
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).lines().map(str::to_string).collect()
    }
}

/// HAProxy in front of gateways: round-robin, health-checked on their readiness endpoints, a
/// failed connection retried on another gateway.
pub struct Haproxy {
    pub url: String,
    _proc: Proc,
}

impl Haproxy {
    /// `backends`: each gateway's (MCP port, admin port).
    pub async fn start(backends: &[(u16, u16)]) -> Haproxy {
        let dir = scratch("haproxy");
        let port = free_port();
        let mut cfg = format!(
            "global\n  maxconn 4096\n\
             defaults\n  mode http\n  timeout connect 2s\n  timeout client 60s\n  timeout server 60s\n  retries 3\n  option redispatch\n\
             frontend mcp\n  bind 127.0.0.1:{port}\n  default_backend gateways\n\
             backend gateways\n  balance roundrobin\n  option httpchk GET /readyz\n"
        );
        for (i, (mcp, admin)) in backends.iter().enumerate() {
            cfg.push_str(&format!(
                "  server g{i} 127.0.0.1:{mcp} check port {admin} inter 300ms fall 1 rise 1\n"
            ));
        }
        let file = dir.join("haproxy.cfg");
        std::fs::write(&file, cfg).unwrap();
        let proc = spawn(Command::new(debian_tool("haproxy")).arg("-db").arg("-f").arg(&file));
        wait_listening(port, "haproxy").await;
        // Let the first health checks mark the gateways up.
        tokio::time::sleep(Duration::from_millis(700)).await;
        Haproxy { url: format!("http://127.0.0.1:{port}/mcp"), _proc: proc }
    }
}

/// HAProxy terminating TLS in front of one HTTP server, as a remote MCP server looks to the
/// gateway: a certificate for `localhost` from a CA of the test's own (`ca_file`), and any
/// path under `/moved` answered with a 307 redirect to `redirect_to`.
pub struct TlsFront {
    pub port: u16,
    pub ca_file: PathBuf,
    _proc: Proc,
}

impl TlsFront {
    pub async fn start(backend_port: u16, redirect_to: &str) -> TlsFront {
        let dir = scratch("tls-front");
        let ca = palisade_https::ca::Authority::generate("remote CA", Duration::from_secs(3600))
            .unwrap();
        let leaf = ca.issue_server(&["localhost".to_string()], Duration::from_secs(3600)).unwrap();
        let ca_file = dir.join("ca.pem");
        std::fs::write(&ca_file, &ca.cert_pem).unwrap();
        let site = dir.join("site.pem");
        std::fs::write(&site, format!("{}{}", leaf.cert_pem, leaf.key_pem)).unwrap();
        let port = free_port();
        let cfg = format!(
            "global\n  maxconn 256\n\
             defaults\n  mode http\n  timeout connect 2s\n  timeout client 60s\n  timeout server 60s\n\
             frontend tls\n  bind 127.0.0.1:{port} ssl crt {}\n\
             \x20 http-request redirect location {redirect_to} code 307 if {{ path_beg /moved }}\n\
             \x20 default_backend server\n\
             backend server\n  server s 127.0.0.1:{backend_port}\n",
            site.display()
        );
        let file = dir.join("haproxy.cfg");
        std::fs::write(&file, cfg).unwrap();
        let proc = spawn(Command::new(debian_tool("haproxy")).arg("-db").arg("-f").arg(&file));
        wait_listening(port, "haproxy (TLS)").await;
        TlsFront { port, ca_file, _proc: proc }
    }
}
