//! Offline subcommands: `crds`, `render`, `check`. None of them talks to a cluster.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use palisade_admission::check::{self, Object, Report};
use palisade_render::{FqdnPolicy, RenderOptions};

#[derive(Debug, thiserror::Error)]
pub enum CliError {
    #[error("{path}: {source}")]
    Read { path: String, source: std::io::Error },
    #[error("{path}: {source}")]
    Write { path: String, source: std::io::Error },
    #[error("{0}")]
    Input(String),
    #[error("cannot write output: {0}")]
    Output(#[from] std::io::Error),
    #[error("cannot serialize: {0}")]
    Json(#[from] serde_json::Error),
    #[error("cannot serialize YAML: {0}")]
    Yaml(#[from] serde_saphyr::ser_error::Error),
    #[error(transparent)]
    Crd(#[from] palisade_crds::CrdError),
}

fn read(path: &Path) -> Result<(String, String), CliError> {
    let name = path.display().to_string();
    let text = std::fs::read_to_string(path)
        .map_err(|source| CliError::Read { path: name.clone(), source })?;
    Ok((name, text))
}

/// YAML documents of `values`, separated by `---`.
pub fn yaml_stream(values: &[serde_json::Value]) -> Result<String, CliError> {
    let mut out = String::new();
    for v in values {
        out.push_str("---\n");
        out.push_str(&serde_saphyr::to_string(v)?);
    }
    Ok(out)
}

/// `palisade crds`: print the CRDs, or write them into each of `dirs`.
pub fn crds(dirs: &[PathBuf]) -> Result<ExitCode, CliError> {
    if dirs.is_empty() {
        let mut out = std::io::stdout().lock();
        for (_, crd) in palisade_crds::crds() {
            write!(out, "---\n{}", palisade_crds::crd_yaml(&crd)?)?;
        }
        return Ok(ExitCode::SUCCESS);
    }
    for dir in dirs {
        std::fs::create_dir_all(dir)
            .map_err(|source| CliError::Write { path: dir.display().to_string(), source })?;
        for (file, crd) in palisade_crds::crds() {
            let path = dir.join(file);
            std::fs::write(&path, palisade_crds::crd_yaml(&crd)?)
                .map_err(|source| CliError::Write { path: path.display().to_string(), source })?;
            eprintln!("wrote {}", path.display());
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// `palisade crds --update-docs FILE`: replace the generated field reference in FILE.
pub fn update_docs(path: &Path) -> Result<ExitCode, CliError> {
    let (name, text) = read(path)?;
    let updated = palisade_crds::reference::splice(&text).ok_or_else(|| {
        CliError::Input(format!("{name}: no {} marker", palisade_crds::reference::BEGIN))
    })?;
    std::fs::write(path, updated)
        .map_err(|source| CliError::Write { path: name.clone(), source })?;
    eprintln!("updated {name}");
    Ok(ExitCode::SUCCESS)
}

pub struct RenderArgs {
    pub files: Vec<PathBuf>,
    pub gateway_image: String,
    pub digest: Option<String>,
    pub operator_namespace: String,
    pub fqdn_policy: FqdnPolicy,
}

/// `palisade render`: the objects the operator would create for every MCPServer in the files.
pub fn render(args: RenderArgs) -> Result<ExitCode, CliError> {
    let mut servers = Vec::new();
    for path in &args.files {
        let (name, text) = read(path)?;
        for doc in check::split_documents(&text) {
            match check::load(&doc) {
                Ok(Some(Object::Server(s))) => servers.push((name.clone(), doc.line, s)),
                Ok(_) => {}
                Err(e) => {
                    return Err(CliError::Input(format!(
                        "{name}:{}: {}{}",
                        e.line.unwrap_or(doc.line),
                        e.field.map(|f| format!("{f}: ")).unwrap_or_default(),
                        e.message
                    )));
                }
            }
        }
    }
    if servers.is_empty() {
        return Err(CliError::Input("no MCPServer objects in the given files".into()));
    }
    if args.digest.is_some() && servers.len() > 1 {
        return Err(CliError::Input(
            "--digest applies to a single MCPServer; render files one at a time".into(),
        ));
    }
    let opts = RenderOptions {
        gateway_image: args.gateway_image,
        resolved_digest: args.digest,
        operator_namespace: args.operator_namespace,
        fqdn_policy: args.fqdn_policy,
        ..RenderOptions::default()
    };
    let mut objects = Vec::new();
    for (file, line, server) in &servers {
        let rendered = palisade_render::render(server, &opts).map_err(|e| {
            CliError::Input(format!(
                "{file}:{line}: MCPServer {}: {e}",
                server.metadata.name.clone().unwrap_or_default()
            ))
        })?;
        objects.extend(rendered.objects()?);
        if server.metadata.uid.is_none() {
            eprintln!(
                "note: {file}:{line}: ownerReferences carry a placeholder uid ({}); the operator uses the real one",
                palisade_render::OFFLINE_UID
            );
        }
    }
    print!("{}", yaml_stream(&objects)?);
    Ok(ExitCode::SUCCESS)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Output {
    Text,
    Json,
}

/// `palisade check`: exit 0 when every object is admitted, 1 when any is rejected.
pub fn check(
    files: &[PathBuf],
    policy_files: &[PathBuf],
    output: Output,
) -> Result<ExitCode, CliError> {
    let mut policies = Vec::new();
    for path in policy_files {
        let (name, text) = read(path)?;
        policies.extend(check::load_policies(&name, &text).map_err(CliError::Input)?);
    }
    let mut inputs = Vec::new();
    for path in files {
        inputs.push(read(path)?);
    }
    let reports = check::check(&inputs, &policies);
    let admitted = reports.iter().all(|r| r.admitted);
    let mut out = std::io::stdout().lock();
    match output {
        Output::Json => {
            serde_json::to_writer_pretty(&mut out, &reports)?;
            writeln!(out)?;
        }
        Output::Text => write_text(&mut out, &reports, policies.len())?,
    }
    Ok(if admitted { ExitCode::SUCCESS } else { ExitCode::from(1) })
}

fn write_text(out: &mut impl Write, reports: &[Report], policies: usize) -> std::io::Result<()> {
    for r in reports {
        let verdict = if r.admitted { "ADMITTED" } else { "REJECTED" };
        writeln!(out, "{verdict} {}:{} {} {}", r.file, r.line, r.kind, r.name)?;
        if let Some(e) = &r.error {
            let loc = match (e.line, e.column) {
                (Some(l), Some(c)) => format!("{}:{l}:{c}", r.file),
                (Some(l), None) => format!("{}:{l}", r.file),
                _ => r.file.clone(),
            };
            let field = e.field.as_deref().map(|f| format!("{f}: ")).unwrap_or_default();
            writeln!(out, "  error at {loc}: {field}{}", e.message)?;
        }
        for v in &r.verdict.violations {
            writeln!(out, "  - {v}")?;
        }
        for w in &r.verdict.warnings {
            writeln!(out, "  warning: {w}")?;
        }
        if let Some(n) = &r.note {
            writeln!(out, "  note: {n}")?;
        }
    }
    let rejected = reports.iter().filter(|r| !r.admitted).count();
    writeln!(
        out,
        "{} object(s) checked against the baseline and {policies} polic{}: {} admitted, {rejected} rejected",
        reports.len(),
        if policies == 1 { "y" } else { "ies" },
        reports.len() - rejected
    )
}

pub struct AdvisoryArgs {
    pub files: Vec<PathBuf>,
    pub name: String,
    pub namespace_labels: Vec<String>,
    pub require_sbom: bool,
}

/// `palisade advisories`: an MCPPolicy whose `supplyChain.advisories` come from OSV records.
pub fn advisories(args: AdvisoryArgs) -> Result<ExitCode, CliError> {
    let mut sources = Vec::new();
    for path in &args.files {
        sources.push(read(path)?);
    }
    let converted = crate::osv::convert(&sources).map_err(|e| CliError::Input(e.to_string()))?;
    let mut labels = std::collections::BTreeMap::new();
    for l in &args.namespace_labels {
        let (k, v) = l
            .split_once('=')
            .ok_or_else(|| CliError::Input(format!("--namespace-label {l}: expected KEY=VALUE")))?;
        labels.insert(k.to_string(), v.to_string());
    }
    let mut spec = palisade_crds::MCPPolicySpec::default();
    if !labels.is_empty() {
        spec.namespace_selector =
            Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector {
                match_labels: Some(labels),
                match_expressions: None,
            });
    }
    spec.supply_chain.require_sbom = args.require_sbom;
    spec.supply_chain.advisories = converted.advisories;
    let count = spec.supply_chain.advisories.len();
    let policy = palisade_crds::MCPPolicy::new(&args.name, spec);
    let mut err = std::io::stderr().lock();
    for s in &converted.skipped {
        writeln!(err, "palisade: skipped {s}")?;
    }
    writeln!(err, "palisade: {count} advisories")?;
    print!("{}", yaml_stream(&[serde_json::to_value(&policy)?])?);
    Ok(ExitCode::SUCCESS)
}
