//! `palisade-gateway bridge`: runs a stdio MCP server for the gateway without a shell.
//!
//! Listens on a Unix socket; every connection gets a fresh server process (so sessions never
//! share a server's state), launched from argv with `execve` semantics, a scrubbed
//! environment (allowlist), its own process group and the rlimits given on the command line.
//! Bytes are piped both ways (newline-delimited JSON-RPC; the gateway validates every message).
//! When the connection closes, the process outlives its lifetime limit, or the bridge stops,
//! the whole process group is terminated, then killed.

use std::path::PathBuf;
use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use rustix::process::{Pid, Resource, Rlimit, Signal};
use tokio::io::AsyncWriteExt;
use tokio::net::UnixListener;
use tokio::process::{Child, Command};
use tokio::sync::Semaphore;
use tracing::{info, warn};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Unix socket the gateway connects to.
    #[arg(long)]
    pub socket: PathBuf,
    /// RLIMIT_CPU of the server, in seconds of CPU time.
    #[arg(long)]
    pub rlimit_cpu: Option<u64>,
    /// RLIMIT_AS of the server, in bytes.
    #[arg(long)]
    pub rlimit_as: Option<u64>,
    /// RLIMIT_NOFILE of the server.
    #[arg(long)]
    pub rlimit_nofile: Option<u64>,
    /// RLIMIT_NPROC of the server's user.
    #[arg(long)]
    pub rlimit_nproc: Option<u64>,
    /// Environment variables passed to the server (comma-separated); every other is removed.
    #[arg(long, value_delimiter = ',')]
    pub env_allow: Vec<String>,
    /// Servers running at once (one per gateway session).
    #[arg(long, default_value_t = 32)]
    pub max_processes: usize,
    /// A server process is stopped after this many seconds (0: no limit).
    #[arg(long, default_value_t = 0)]
    pub max_lifetime: u64,
    /// The server's argv (after `--`). Never run through a shell.
    #[arg(last = true, required = true)]
    pub argv: Vec<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum BridgeError {
    #[error("cannot listen on {path}: {source}")]
    Listen { path: String, source: std::io::Error },
    #[error("cannot set {what}: {source}")]
    Rlimit { what: &'static str, source: rustix::io::Errno },
}

/// Applies the limits to this process; children inherit them.
fn apply_rlimits(args: &Args) -> Result<(), BridgeError> {
    let limits = [
        (Resource::Cpu, args.rlimit_cpu, "RLIMIT_CPU"),
        (Resource::As, args.rlimit_as, "RLIMIT_AS"),
        (Resource::Nofile, args.rlimit_nofile, "RLIMIT_NOFILE"),
        (Resource::Nproc, args.rlimit_nproc, "RLIMIT_NPROC"),
    ];
    for (resource, value, what) in limits {
        if let Some(v) = value {
            rustix::process::setrlimit(resource, Rlimit { current: Some(v), maximum: Some(v) })
                .map_err(|source| BridgeError::Rlimit { what, source })?;
        }
    }
    Ok(())
}

/// The command for one server process: argv, scrubbed environment, own process group.
pub fn command(argv: &[String], env_allow: &[String]) -> Command {
    let mut cmd = Command::new(&argv[0]);
    cmd.args(&argv[1..]);
    cmd.env_clear();
    for name in env_allow {
        if let Some(v) = std::env::var_os(name) {
            cmd.env(name, v);
        }
    }
    cmd.process_group(0);
    cmd.stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::inherit());
    cmd.kill_on_drop(true);
    cmd
}

/// Terminates a process group: SIGTERM, a grace period, then SIGKILL.
pub async fn stop_group(child: &mut Child, grace: Duration) {
    let Some(pid) = child.id().and_then(|p| Pid::from_raw(p as i32)) else { return };
    let _ = rustix::process::kill_process_group(pid, Signal::TERM);
    if tokio::time::timeout(grace, child.wait()).await.is_err() {
        let _ = rustix::process::kill_process_group(pid, Signal::KILL);
        let _ = child.wait().await;
    }
    // Children of the server that outlived it are in the same group.
    let _ = rustix::process::kill_process_group(pid, Signal::KILL);
}

async fn serve_connection(stream: tokio::net::UnixStream, args: Arc<Args>) {
    let mut child = match command(&args.argv, &args.env_allow).spawn() {
        Ok(c) => c,
        Err(e) => {
            // Only the program name: the gateway turns this into a generic upstream error.
            warn!(program = %args.argv[0], error = %e, "cannot start the server");
            return;
        }
    };
    let pid = child.id().unwrap_or_default();
    info!(pid, "server process started");
    let (Some(mut stdin), Some(mut stdout)) = (child.stdin.take(), child.stdout.take()) else {
        stop_group(&mut child, Duration::from_secs(2)).await;
        return;
    };
    let (mut rd, mut wr) = stream.into_split();
    let to_server = async {
        let _ = tokio::io::copy(&mut rd, &mut stdin).await;
        let _ = stdin.shutdown().await;
    };
    let from_server = async {
        let _ = tokio::io::copy(&mut stdout, &mut wr).await;
        let _ = wr.shutdown().await;
    };
    let lifetime = async {
        if args.max_lifetime == 0 {
            futures::future::pending::<()>().await
        } else {
            tokio::time::sleep(Duration::from_secs(args.max_lifetime)).await;
            warn!(pid, "server process reached its lifetime limit");
        }
    };
    tokio::select! {
        _ = to_server => {}
        _ = from_server => {}
        _ = child.wait() => {}
        _ = lifetime => {}
    }
    stop_group(&mut child, Duration::from_secs(2)).await;
    info!(pid, "server process stopped");
}

pub async fn run(args: Args) -> Result<(), BridgeError> {
    apply_rlimits(&args)?;
    let _ = std::fs::remove_file(&args.socket);
    let listener = UnixListener::bind(&args.socket).map_err(|source| BridgeError::Listen {
        path: args.socket.display().to_string(),
        source,
    })?;
    // Only the pod's group may connect: the gateway runs under its own UID in the pod's group.
    let _ = rustix::fs::chmod(&args.socket, rustix::fs::Mode::from_raw_mode(0o660));
    info!(socket = %args.socket.display(), program = %args.argv[0], "bridge listening");
    let args = Arc::new(args);
    let slots = Arc::new(Semaphore::new(args.max_processes));
    let mut tasks = tokio::task::JoinSet::new();
    loop {
        tokio::select! {
            _ = palisade_https::shutdown_signal() => break,
            accepted = listener.accept() => {
                let Ok((stream, _)) = accepted else { continue };
                let Ok(permit) = slots.clone().try_acquire_owned() else {
                    warn!("too many server processes; refusing a connection");
                    continue;
                };
                let args = args.clone();
                tasks.spawn(async move {
                    let _permit = permit;
                    serve_connection(stream, args).await;
                });
            }
        }
    }
    // Dropping the tasks drops their children (kill_on_drop) after each stops its group.
    tasks.shutdown().await;
    let _ = std::fs::remove_file(&args.socket);
    Ok(())
}
