//! `palisade`: one binary for the offline tools, the operator and the admission webhook.

mod cli;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use palisade_render::FqdnPolicy;

#[derive(Parser)]
#[command(name = "palisade", version, about = "Run MCP servers safely on Kubernetes")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum FqdnArg {
    None,
    Cilium,
}

#[derive(Subcommand)]
enum Command {
    /// Print the CustomResourceDefinitions (or write them into directories).
    Crds {
        /// Write one file per CRD into DIR (repeatable) instead of printing.
        #[arg(long = "write", value_name = "DIR")]
        write: Vec<PathBuf>,
        /// Regenerate the field reference block of a Markdown file (docs/api.md).
        #[arg(long = "update-docs", value_name = "FILE")]
        update_docs: Option<PathBuf>,
    },
    /// Print the objects the operator would create for the MCPServers in FILEs (offline).
    Render {
        #[arg(required = true)]
        files: Vec<PathBuf>,
        /// Gateway sidecar image, pinned by digest.
        #[arg(long, env = "PALISADE_GATEWAY_IMAGE", default_value = palisade_render::DEFAULT_GATEWAY_IMAGE)]
        gateway_image: String,
        /// Resolved digest (sha256:...) for a spec that names a tag.
        #[arg(long)]
        digest: Option<String>,
        #[arg(long, default_value = "palisade-system")]
        operator_namespace: String,
        /// Also render CNI policies for DNS-name egress rules.
        #[arg(long, value_enum, default_value = "none")]
        fqdn_policy: FqdnArg,
    },
    /// Admission verdict for every object in FILEs, offline, with the webhook's rules.
    /// Exit 0: all admitted; 1: some rejected; 2: unreadable input.
    Check {
        #[arg(required = true)]
        files: Vec<PathBuf>,
        /// MCPPolicy file(s) to enforce (offline, every given policy applies).
        #[arg(long = "policy", value_name = "FILE")]
        policies: Vec<PathBuf>,
        #[arg(long, short, value_enum, default_value = "text")]
        output: cli::Output,
    },
}

fn main() -> ExitCode {
    let args = Cli::parse();
    let result = match args.command {
        Command::Crds { write, update_docs } => match update_docs {
            Some(doc) => cli::update_docs(&doc),
            None => cli::crds(&write),
        },
        Command::Render { files, gateway_image, digest, operator_namespace, fqdn_policy } => {
            cli::render(cli::RenderArgs {
                files,
                gateway_image,
                digest,
                operator_namespace,
                fqdn_policy: match fqdn_policy {
                    FqdnArg::None => FqdnPolicy::None,
                    FqdnArg::Cilium => FqdnPolicy::Cilium,
                },
            })
        }
        Command::Check { files, policies, output } => cli::check(&files, &policies, output),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("palisade: {e}");
            ExitCode::from(2)
        }
    }
}
