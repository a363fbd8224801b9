//! `palisade-gateway`: the MCP gateway sidecar (`serve`), the stdio bridge (`bridge`), and the
//! installer the init container runs (`install`).

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "palisade-gateway", version, about = "The MCP gateway of Palisade")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Serve MCP clients in front of one server.
    Serve {
        #[arg(long, default_value = "/etc/palisade/gateway.json")]
        config: PathBuf,
    },
    /// Run a stdio server behind a Unix socket, without a shell.
    Bridge(palisade_gateway::bridge::Args),
    /// Copy this binary to DEST (the init container installs the bridge this way).
    Install { dest: PathBuf },
    /// Work with audit logs.
    Audit {
        #[command(subcommand)]
        command: AuditCommand,
    },
}

#[derive(Subcommand)]
enum AuditCommand {
    /// Check a log's hash chain (and checkpoint signatures with --public-key); names the first
    /// bad line. Exit code 0: intact; 1: broken.
    Verify {
        file: PathBuf,
        /// Ed25519 public key (SPKI PEM) of the gateway's audit signing key.
        #[arg(long)]
        public_key: Option<PathBuf>,
    },
}

fn audit_verify(file: &std::path::Path, public_key: Option<&std::path::Path>) -> ExitCode {
    use palisade_gateway::observe::audit;
    let key = match public_key.map(audit::read_public_key).transpose() {
        Ok(k) => k,
        Err(e) => {
            eprintln!("palisade-gateway: public key: {e}");
            return ExitCode::from(2);
        }
    };
    match audit::verify(file, key.as_ref()) {
        Ok(v) => {
            let start = if v.first_seq > 1 {
                format!(" (continuing a chain from record {}, after a restart)", v.first_seq)
            } else {
                String::new()
            };
            println!(
                "{}: intact{start}: {} records, {} checkpoints ({} signature-verified), {} restarts, {} records after the last signed record",
                file.display(),
                v.records,
                v.checkpoints,
                v.signed_checkpoints,
                v.restarts,
                v.unsigned_tail
            );
            ExitCode::SUCCESS
        }
        Err(e) => {
            println!("{}: BROKEN at {e}", file.display());
            ExitCode::from(1)
        }
    }
}

fn init_tracing() {
    use tracing_subscriber::EnvFilter;
    // rustls warns once per handshake about what a client sent (an IP address as SNI): a
    // client could fill the log with it, and there is nothing for an operator to do.
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info,rustls=error"));
    let b = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    if std::env::var("PALISADE_LOG_FORMAT").is_ok_and(|f| f == "json") {
        b.json().init();
    } else {
        b.init();
    }
}

fn install(dest: &PathBuf) -> std::io::Result<()> {
    let me = std::env::current_exe()?;
    let tmp = dest.with_extension("tmp");
    std::fs::copy(me, &tmp)?;
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o555))?;
    std::fs::rename(tmp, dest)
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_tracing();
    if let Command::Audit { command: AuditCommand::Verify { file, public_key } } = &cli.command {
        return audit_verify(file, public_key.as_deref());
    }
    if let Command::Install { dest } = &cli.command {
        return match install(dest) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("palisade-gateway: cannot install to {}: {e}", dest.display());
                ExitCode::from(1)
            }
        };
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("palisade-gateway: cannot start the runtime: {e}");
            return ExitCode::from(2);
        }
    };
    let result = runtime.block_on(async {
        match cli.command {
            Command::Serve { config } => {
                palisade_gateway::serve::run(config).await.map_err(|e| e.to_string())
            }
            Command::Bridge(args) => {
                palisade_gateway::bridge::run(args).await.map_err(|e| e.to_string())
            }
            Command::Install { .. } | Command::Audit { .. } => Ok(()),
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = %e, "exiting");
            ExitCode::from(1)
        }
    }
}
