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
}

fn init_tracing() {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
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
            Command::Install { .. } => Ok(()),
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
