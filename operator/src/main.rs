//! `palisade`: one binary for the offline tools, the operator and the admission webhook.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use palisade_operator::{approvals, cli, pin, run};
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
    /// Print an MCPPolicy whose supplyChain.advisories come from OSV vulnerability records
    /// (OSV JSON files, arrays of records, or scanner reports that contain them).
    Advisories {
        #[arg(required = true)]
        files: Vec<PathBuf>,
        /// metadata.name of the policy.
        #[arg(long, default_value = "mcp-advisories")]
        name: String,
        /// Select namespaces by label (KEY=VALUE, repeatable); none: every namespace.
        #[arg(long = "namespace-label", value_name = "KEY=VALUE")]
        namespace_labels: Vec<String>,
        /// Also require a signed SBOM attestation of every server image.
        #[arg(long)]
        require_sbom: bool,
    },
    /// List, approve or deny a gateway's approval plans (a client of its approvals API).
    #[command(subcommand)]
    Approvals(approvals::Action),
    /// Write the digests of a running server's tool definitions into an MCPServer file
    /// (`spec.tools[].pin`), read from its gateway's admin endpoint. Exit 0: every listed tool
    /// pinned; 1: a listed tool is not offered by the server; 2: error.
    Pin(pin::Args),
    /// Run the operator: reconcile MCPServers into hardened workloads (uses KUBECONFIG or the
    /// in-cluster service account).
    Operator(run::Args),
    /// Run the admission webhook (HTTPS AdmissionReview for MCPServers, MCPPolicies and
    /// workloads labelled palisade.dev/mcp-server).
    Webhook(palisade_webhooks::server::Args),
}

/// Structured logs: JSON when PALISADE_LOG_FORMAT=json (in cluster), text otherwise; level
/// from RUST_LOG (default info).
fn init_tracing() {
    use tracing_subscriber::EnvFilter;
    // rustls warns once per handshake about what a client sent (an IP address as SNI): a
    // client could fill the log with it, and there is nothing for an operator to do.
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info,rustls=error"));
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    if std::env::var("PALISADE_LOG_FORMAT").is_ok_and(|f| f == "json") {
        builder.json().with_current_span(true).init();
    } else {
        builder.init();
    }
}

fn run_async<F: std::future::Future<Output = Result<(), E>>, E: std::fmt::Display>(
    f: F,
) -> ExitCode {
    init_tracing();
    // One crypto provider for the whole process: aws-lc-rs (kube, oci-client, webhook TLS).
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("palisade: cannot start the async runtime: {e}");
            return ExitCode::from(2);
        }
    };
    match runtime.block_on(f) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = %e, "exiting");
            ExitCode::from(1)
        }
    }
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
        Command::Advisories { files, name, namespace_labels, require_sbom } => {
            cli::advisories(cli::AdvisoryArgs { files, name, namespace_labels, require_sbom })
        }
        Command::Approvals(action) => approvals::approvals(action),
        Command::Pin(args) => pin::pin(args),
        Command::Operator(args) => return run_async(run::run(args)),
        Command::Webhook(args) => return run_async(palisade_webhooks::server::run(args)),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("palisade: {e}");
            ExitCode::from(2)
        }
    }
}
