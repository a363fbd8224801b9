//! `palisade pin`: writes the digests of a running server's tool definitions into an
//! MCPServer file (`spec.tools[].pin`), for review in git. The definitions come from the
//! gateway's admin endpoint (`/tools`, reached with `kubectl port-forward`), which reports them
//! as the server lists them, before any filtering. Tools the spec does not list are reported,
//! not added: their policy (effect, approval) is a decision for the reviewer.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use serde_json::Value;

use crate::cli::CliError;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// The MCPServer file (one document) whose `spec.tools` get their pins.
    pub file: PathBuf,
    /// The gateway's admin address (`http://127.0.0.1:9090` through
    /// `kubectl port-forward deploy/<name> 9090`).
    #[arg(long)]
    pub gateway: String,
    /// Rewrite FILE in place (comments in it are not kept) instead of printing the result.
    #[arg(long)]
    pub write: bool,
}

/// What pinning changed.
#[derive(Debug, Default, PartialEq)]
pub struct Pinned {
    /// Tools whose pin was written (new or changed).
    pub updated: Vec<String>,
    /// Tools whose pin already matched.
    pub unchanged: Vec<String>,
    /// Tools the server offers that the spec does not list.
    pub unlisted: Vec<String>,
    /// Tools the spec lists that the server does not offer.
    pub missing: Vec<String>,
}

/// Sets `spec.tools[].pin` of `server` from the gateway's `/tools` answer.
pub fn apply(server: &mut Value, live: &Value) -> Result<Pinned, CliError> {
    if server.get("kind").and_then(Value::as_str) != Some("MCPServer") {
        return Err(CliError::Input("the file is not an MCPServer".into()));
    }
    let live = live
        .get("tools")
        .and_then(Value::as_array)
        .ok_or_else(|| CliError::Input("the gateway's /tools answer has no tools".into()))?;
    let pin_of = |name: &str| {
        live.iter().find(|t| t.get("name").and_then(Value::as_str) == Some(name)).map(|t| &t["pin"])
    };
    let mut out = Pinned::default();
    let listed: Vec<String> = match server.pointer_mut("/spec/tools").and_then(Value::as_array_mut)
    {
        Some(tools) => {
            let mut names = Vec::new();
            for tool in tools.iter_mut() {
                let Some(name) = tool.get("name").and_then(Value::as_str).map(str::to_string)
                else {
                    continue;
                };
                match pin_of(&name) {
                    Some(pin) if pin.get("definition").is_some_and(Value::is_string) => {
                        if tool.get("pin") == Some(pin) {
                            out.unchanged.push(name.clone());
                        } else {
                            tool["pin"] = pin.clone();
                            out.updated.push(name.clone());
                        }
                    }
                    _ => out.missing.push(name.clone()),
                }
                names.push(name);
            }
            names
        }
        None => Vec::new(),
    };
    out.unlisted = live
        .iter()
        .filter_map(|t| t.get("name").and_then(Value::as_str))
        .filter(|n| !listed.iter().any(|l| l == n))
        .map(str::to_string)
        .collect();
    Ok(out)
}

/// `palisade pin FILE --gateway URL [--write]`. Exit 0: every listed tool pinned; 1: some
/// listed tool is not offered by the server (its pin is left as it was).
pub fn pin(args: Args) -> Result<ExitCode, CliError> {
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| CliError::Input(format!("cannot start the async runtime: {e}")))?;
    runtime.block_on(run(args))
}

async fn run(args: Args) -> Result<ExitCode, CliError> {
    let path = args.file.display().to_string();
    let text = std::fs::read_to_string(&args.file)
        .map_err(|source| CliError::Read { path: path.clone(), source })?;
    let mut server: Value = serde_saphyr::from_str(&text)
        .map_err(|e| CliError::Input(format!("{path}: not one YAML document: {e}")))?;
    let url = format!("{}/tools", args.gateway.trim_end_matches('/'));
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .map_err(|e| CliError::Input(format!("cannot build an HTTP client: {e}")))?;
    let live: Value = http
        .get(&url)
        .send()
        .await
        .and_then(|r| r.error_for_status())
        .map_err(|e| CliError::Input(format!("{url}: {e}")))?
        .json()
        .await
        .map_err(|e| CliError::Input(format!("{url}: not the gateway's /tools answer: {e}")))?;
    let pinned = apply(&mut server, &live)?;
    let yaml = serde_saphyr::to_string(&server)?;
    if args.write {
        std::fs::write(&args.file, &yaml)
            .map_err(|source| CliError::Write { path: path.clone(), source })?;
    } else {
        print!("{yaml}");
    }
    for (what, names) in [
        ("pinned", &pinned.updated),
        ("already pinned", &pinned.unchanged),
        ("not in spec.tools (not pinned; add a policy for it to pin it)", &pinned.unlisted),
        ("not offered by the server (pin left as it was)", &pinned.missing),
    ] {
        if !names.is_empty() {
            eprintln!("{what}: {}", names.join(", "));
        }
    }
    Ok(if pinned.missing.is_empty() { ExitCode::SUCCESS } else { ExitCode::from(1) })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn pins_the_listed_tools_and_reports_the_rest() {
        let mut server = json!({"apiVersion": "palisade.dev/v1alpha1", "kind": "MCPServer",
            "spec": {"tools": [
                {"name": "add", "effect": "read"},
                {"name": "get_weather", "effect": "read", "pin": {"definition": "old"}},
                {"name": "gone", "effect": "read"}]}});
        let pin = |d: &str| json!({"definition": d, "description": "0123456789abcdef"});
        let live = json!({"tools": [
            {"name": "add", "pin": pin("a")},
            {"name": "get_weather", "pin": pin("w")},
            {"name": "delete", "pin": pin("d")}]});
        let out = apply(&mut server, &live).unwrap_or_default();
        assert_eq!(out.updated, ["add", "get_weather"]);
        assert_eq!(out.unlisted, ["delete"]);
        assert_eq!(out.missing, ["gone"]);
        assert_eq!(server.pointer("/spec/tools/0/pin"), Some(&pin("a")));
        assert_eq!(server.pointer("/spec/tools/1/pin"), Some(&pin("w")));
        assert_eq!(server.pointer("/spec/tools/2/pin"), None);
        let again = apply(&mut server, &live).unwrap_or_default();
        assert_eq!(again.unchanged, ["add", "get_weather"]);
        assert!(apply(&mut json!({"kind": "Pod"}), &live).is_err());
    }
}
