//! Connections to the MCP server: a message pipe per transport (stdio bridge socket,
//! Streamable HTTP, legacy HTTP+SSE), request/response correlation on top of it, the
//! credentials the gateway presents to the server, and the start-up handshake probe.

pub mod aggregate;
pub mod connection;
pub mod credentials;
pub mod pipe;
pub mod probe;
pub mod reach;

use std::sync::Arc;
use std::time::Duration;

use credentials::{Credentials, Identity, SubjectToken};

pub use connection::{Connection, Exchange};
pub use pipe::Pipe;

#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum UpstreamError {
    #[error("the server could not be reached")]
    Unreachable(String),
    #[error("the server closed the connection")]
    Closed,
    #[error("the server did not answer within {0:?}")]
    Timeout(Duration),
    #[error("the server sent a malformed message")]
    Malformed(String),
    #[error("the server's message exceeded {0} bytes")]
    TooLarge(usize),
    #[error("the gateway could not obtain a credential for the server ({0})")]
    Credentials(String),
}

/// How to reach the server.
#[derive(Clone)]
pub enum Target {
    Stdio {
        socket: String,
    },
    Http {
        url: String,
    },
    Sse {
        url: String,
    },
    /// Several servers behind one (a virtual server).
    Virtual(Arc<aggregate::Members>),
}

/// Size bounds for what the server sends.
#[derive(Debug, Clone, Copy)]
pub struct Bounds {
    pub max_message: usize,
    pub max_event: usize,
}

/// Opens connections to the server. Owns the HTTP client (and its connection pool) that every
/// connection of one gateway shares.
pub struct Connector {
    target: Target,
    client: reqwest::Client,
    credentials: Option<Arc<Credentials>>,
    /// Connections made by this connector that still exist (sessions', shared, probes').
    live: Arc<std::sync::atomic::AtomicUsize>,
}

impl Target {
    /// The server's URL (HTTP transports).
    pub fn url(&self) -> Option<&str> {
        match self {
            Target::Http { url } | Target::Sse { url } => Some(url),
            Target::Stdio { .. } | Target::Virtual(_) => None,
        }
    }
}

impl Connector {
    /// `ca_file`: extra trust anchors for a remote server's certificate.
    pub fn new(
        target: Target,
        credentials: Option<Credentials>,
        ca_file: Option<&str>,
    ) -> Result<Connector, reach::ReachError> {
        // The provider must exist before any rustls-backed client is built, whichever binary
        // or test builds it first.
        palisade_https::install_crypto_provider();
        // Idle connections are dropped before common servers' keep-alive timeouts (Node and
        // uvicorn close them after 5 s), so a request is never sent on a connection the server
        // is closing ("the server could not be reached" under light load).
        let builder = reqwest::Client::builder()
            .no_proxy()
            .pool_max_idle_per_host(64)
            .pool_idle_timeout(Duration::from_secs(3));
        let client = reach::client(builder, target.url(), ca_file)?;
        Ok(Connector {
            target,
            client,
            credentials: credentials.map(Arc::new),
            live: Arc::default(),
        })
    }

    /// How many connections this connector made still exist: a closed session's must not.
    pub fn live_connections(&self) -> usize {
        self.live.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Whether each user's traffic needs a connection of its own (a per-user credential).
    pub fn per_user(&self) -> bool {
        match &self.target {
            Target::Virtual(m) => m.connectors.iter().any(Connector::per_user),
            _ => self.credentials.as_ref().is_some_and(|c| c.per_user()),
        }
    }

    /// The identity for a connection made for `subject` (`None`: the gateway's own). A
    /// virtual server's carries the user to each server's own credential.
    pub fn identity(&self, subject: Option<SubjectToken>) -> Option<Arc<Identity>> {
        match &self.target {
            Target::Virtual(_) => Some(Identity::user(subject)),
            _ => self.credentials.as_ref().map(|c| Identity::new(c.clone(), subject)),
        }
    }

    /// The credential this connector presents, if any.
    pub fn credentials(&self) -> Option<Arc<Credentials>> {
        self.credentials.clone()
    }

    /// Whether the gateway's own credential for every server can be obtained now (no
    /// credential configured: yes).
    pub async fn own_credentials(&self) -> Result<(), credentials::CredentialError> {
        if let Target::Virtual(m) = &self.target {
            for c in &m.connectors {
                Box::pin(c.own_credentials()).await?;
            }
            return Ok(());
        }
        match self.identity(None) {
            Some(identity) => identity.header().await.map(|_| ()),
            None => Ok(()),
        }
    }

    pub fn target(&self) -> &Target {
        &self.target
    }

    /// A new pipe to the server and the stream of what it sends, speaking for `identity`.
    pub async fn connect(
        &self,
        bounds: Bounds,
        identity: Option<Arc<Identity>>,
    ) -> Result<(Pipe, pipe::Incoming), UpstreamError> {
        match &self.target {
            Target::Stdio { socket } => Pipe::stdio(socket, bounds).await,
            Target::Http { url } => Pipe::streamable_http(&self.client, url, bounds, identity),
            Target::Sse { url } => Pipe::legacy_sse(&self.client, url, bounds, identity).await,
            // Opened with its revision, by `open`.
            Target::Virtual(_) => {
                Err(UpstreamError::Unreachable("a virtual server is opened per revision".into()))
            }
        }
    }

    /// A new connection to the server that speaks `rev` (not yet initialized).
    pub async fn open(
        &self,
        bounds: Bounds,
        rev: crate::protocol::revision::Rev,
        identity: Option<Arc<Identity>>,
    ) -> Result<std::sync::Arc<Connection>, UpstreamError> {
        if let Target::Virtual(members) = &self.target {
            let (tx, incoming) = tokio::sync::mpsc::channel(256);
            let aggregate =
                Box::pin(aggregate::Aggregate::open(members, bounds, rev, identity.clone(), tx))
                    .await?;
            let live = connection::Live::new(&self.live);
            return Ok(Connection::new(Pipe::Virtual(aggregate), incoming, rev, identity, live));
        }
        let (pipe, incoming) = self.connect(bounds, identity.clone()).await?;
        Ok(Connection::new(pipe, incoming, rev, identity, connection::Live::new(&self.live)))
    }
}
