//! `palisade approvals list|approve|deny`: a client of a gateway's approvals API, so that an
//! approver acts without curl. The token comes from a file or `PALISADE_TOKEN`, never from a
//! flag (command lines are visible to every user of the machine). `approve` and `deny` show the
//! plan they decide; `--plan-hash` makes sure it is the plan that was reviewed.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use serde_json::{Value, json};

use crate::cli::{CliError, Output};

#[derive(Debug, clap::Args)]
pub struct Target {
    /// The gateway's base URL (`https://<name>.<namespace>.svc:8443`).
    #[arg(long)]
    pub gateway: String,
    /// A file holding the bearer token (default: the PALISADE_TOKEN environment variable).
    #[arg(long)]
    pub token_file: Option<PathBuf>,
    /// CA certificate (PEM) the gateway's certificate chains to (Palisade's CA, the `ca.crt`
    /// of the gateway's TLS Secret); the system roots otherwise.
    #[arg(long)]
    pub ca_file: Option<PathBuf>,
}

#[derive(Debug, clap::Subcommand)]
pub enum Action {
    /// Plans that have not expired: all of them for an approver, your own otherwise.
    List {
        #[command(flatten)]
        target: Target,
        #[arg(long, short, value_enum, default_value = "text")]
        output: Output,
    },
    /// Approve one plan (shown first).
    Approve {
        id: String,
        #[command(flatten)]
        target: Target,
        /// The hash of the plan you reviewed; refused if the plan is another.
        #[arg(long)]
        plan_hash: Option<String>,
    },
    /// Deny one plan (shown first).
    Deny {
        id: String,
        #[command(flatten)]
        target: Target,
        #[arg(long)]
        plan_hash: Option<String>,
    },
}

fn input(message: impl Into<String>) -> CliError {
    CliError::Input(message.into())
}

struct Api {
    http: reqwest::Client,
    base: String,
    token: String,
}

impl Api {
    fn new(t: &Target) -> Result<Api, CliError> {
        let token = match &t.token_file {
            Some(f) => std::fs::read_to_string(f)
                .map_err(|source| CliError::Read { path: f.display().to_string(), source })?,
            None => std::env::var("PALISADE_TOKEN")
                .map_err(|_| input("give --token-file or set PALISADE_TOKEN"))?,
        };
        let mut b = reqwest::Client::builder().timeout(Duration::from_secs(30));
        if let Some(f) = &t.ca_file {
            let pem = std::fs::read(f)
                .map_err(|source| CliError::Read { path: f.display().to_string(), source })?;
            let certs = reqwest::Certificate::from_pem_bundle(&pem)
                .map_err(|e| input(format!("{}: {e}", f.display())))?;
            for c in certs {
                b = b.add_root_certificate(c);
            }
        }
        let http = b.build().map_err(|e| input(format!("HTTP client: {e}")))?;
        Ok(Api {
            http,
            base: t.gateway.trim_end_matches('/').to_string(),
            token: token.trim().into(),
        })
    }

    async fn send(&self, req: reqwest::RequestBuilder) -> Result<Value, CliError> {
        let r = req
            .bearer_auth(&self.token)
            .send()
            .await
            .map_err(|e| input(format!("{}: {e}", self.base)))?;
        let status = r.status();
        let body = r.text().await.unwrap_or_default();
        let value: Value = serde_json::from_str(&body).unwrap_or(Value::String(body));
        if !status.is_success() {
            let why = value.get("error").and_then(Value::as_str).map(str::to_string);
            return Err(input(format!(
                "the gateway answered {status}: {}",
                why.unwrap_or_else(|| value.to_string())
            )));
        }
        Ok(value)
    }

    async fn list(&self) -> Result<Vec<Value>, CliError> {
        let v = self.send(self.http.get(format!("{}/approvals", self.base))).await?;
        Ok(v.get("approvals").and_then(Value::as_array).cloned().unwrap_or_default())
    }

    async fn get(&self, id: &str) -> Result<Value, CliError> {
        self.send(self.http.get(format!("{}/approvals/{id}", self.base))).await
    }

    async fn decide(&self, id: &str, hash: &str, approve: bool) -> Result<Value, CliError> {
        let body = json!({"planHash": hash, "approve": approve});
        self.send(self.http.post(format!("{}/approvals/{id}", self.base)).json(&body)).await
    }
}

fn show(out: &mut impl Write, plan: &Value) -> std::io::Result<()> {
    let s = |k: &str| plan.get(k).and_then(Value::as_str).unwrap_or("?").to_string();
    writeln!(out, "approval {}", s("approvalId"))?;
    writeln!(out, "  tool:      {}", s("tool"))?;
    writeln!(out, "  arguments: {}", plan.get("arguments").unwrap_or(&Value::Null))?;
    if let Some(p) = plan.get("preview").filter(|p| !p.is_null()) {
        writeln!(out, "  preview:   {p}")?;
    }
    writeln!(out, "  requester: {}", s("requester"))?;
    writeln!(out, "  state:     {}", s("state"))?;
    writeln!(out, "  plan hash: {}", s("planHash"))?;
    let expires = plan.get("expiresInSeconds").and_then(Value::as_u64).unwrap_or(0);
    writeln!(out, "  expires:   in {expires} s")
}

async fn decide(
    id: &str,
    target: &Target,
    plan_hash: Option<&str>,
    approve: bool,
) -> Result<ExitCode, CliError> {
    let api = Api::new(target)?;
    let plan = api.get(id).await?;
    let mut out = std::io::stdout().lock();
    show(&mut out, &plan)?;
    let hash = plan.get("planHash").and_then(Value::as_str).unwrap_or_default();
    if let Some(expected) = plan_hash
        && expected != hash
    {
        return Err(input(format!(
            "approval {id} is plan {hash}, not the plan {expected} you reviewed; nothing was decided"
        )));
    }
    let decided = api.decide(id, hash, approve).await?;
    let state = decided.get("state").and_then(Value::as_str).unwrap_or("?");
    writeln!(out, "{state}")?;
    Ok(ExitCode::SUCCESS)
}

async fn run(action: Action) -> Result<ExitCode, CliError> {
    match action {
        Action::List { target, output } => {
            let plans = Api::new(&target)?.list().await?;
            let mut out = std::io::stdout().lock();
            match output {
                Output::Json => writeln!(out, "{}", serde_json::to_string_pretty(&plans)?)?,
                Output::Text if plans.is_empty() => writeln!(out, "no approvals")?,
                Output::Text => {
                    for p in &plans {
                        show(&mut out, p)?;
                    }
                }
            }
            Ok(ExitCode::SUCCESS)
        }
        Action::Approve { id, target, plan_hash } => {
            decide(&id, &target, plan_hash.as_deref(), true).await
        }
        Action::Deny { id, target, plan_hash } => {
            decide(&id, &target, plan_hash.as_deref(), false).await
        }
    }
}

/// Runs one `palisade approvals` command.
pub fn approvals(action: Action) -> Result<ExitCode, CliError> {
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| input(format!("cannot start the async runtime: {e}")))?;
    runtime.block_on(run(action))
}
