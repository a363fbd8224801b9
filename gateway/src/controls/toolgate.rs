//! Everything a `tools/call` passes before the server sees it: the tool's definition (listed
//! again once when unknown, else refused; withheld when it differs from its pin or fails
//! screening), its effect (spec, made stricter by the server's annotations), chain depth,
//! argument policy, the approval of mutating calls (with a dry-run preview where the tool
//! declares the flag), and budgets and rate limits. The gate takes what it needs explicitly
//! ([`Gate`]) and reaches the server only through [`ToolServer`].

use std::sync::Arc;

use futures::future::BoxFuture;
use palisade_core::config::GatewayConfig;
use palisade_core::spec::{ToolEffect, ToolPolicy, UnlistedTools};
use serde_json::{Map, Value, json};

use crate::controls::approvals::{META_KEY, plan_result};
use crate::controls::authz::Principal;
use crate::controls::definitions;
use crate::controls::guard::{self, Resolve};
use crate::controls::quota::{self, QuotaError};
use crate::observe::audit::CallRecord;
use crate::observe::events::{self, Kind};
use crate::observe::{Observer, short};
use crate::protocol::digest::digest;
use crate::protocol::jsonrpc::{
    self, INVALID_PARAMS, LIMIT_EXCEEDED, POLICY_REFUSED, STATE_UNAVAILABLE,
};
use crate::protocol::revision::Rev;
use crate::protocol::tool::Tool;
use crate::state::{ApprovalError, Exceeded, Plan, State};
/// Where a client (an agent framework) reports how deep in a chain of tool calls it is.
pub const CHAIN_DEPTH_KEY: &str = "palisade.dev/chainDepth";

/// A refusal: the security event (if any) and the JSON-RPC error for the client.
pub struct Refused {
    pub kind: Kind,
    pub reason: String,
    pub response: Value,
}

fn refused(id: &Value, kind: Kind, code: i64, message: String, data: Option<Value>) -> Refused {
    Refused {
        kind,
        reason: message.clone(),
        response: jsonrpc::error(Some(id.clone()), code, message, data),
    }
}

/// The tool's policy in the spec, if listed.
pub fn policy_of<'a>(cfg: &'a GatewayConfig, tool: &str) -> Option<&'a ToolPolicy> {
    cfg.tools.iter().find(|t| t.name == tool)
}

/// Whether a tool exists for clients at all (unlisted tools are hidden when the spec says so).
pub fn visible(cfg: &GatewayConfig, tool: &str) -> bool {
    policy_of(cfg, tool).is_some() || cfg.tool_defaults.unlisted != UnlistedTools::Deny
}

/// What the server's annotations claim, which can only make a tool stricter. A tool the
/// gateway has no definition for never gets this far (it is refused).
fn annotated_effect(known: Option<&Tool>) -> ToolEffect {
    let Some(known) = known else { return ToolEffect::Read };
    let a = known.def.get("annotations");
    let flag = |k: &str| a.and_then(|a| a.get(k)).and_then(Value::as_bool);
    match (flag("readOnlyHint"), flag("destructiveHint")) {
        (_, Some(true)) => ToolEffect::Destructive,
        (Some(false), _) => ToolEffect::Write,
        _ => ToolEffect::Read,
    }
}

/// The effect a call is treated with, and whether it needs approval.
pub fn classify(cfg: &GatewayConfig, tool: &str, known: Option<&Tool>) -> (ToolEffect, bool) {
    let hinted = annotated_effect(known);
    match policy_of(cfg, tool) {
        Some(p) => {
            let effect = p.effect.max(hinted);
            (effect, p.approval_required() || (hinted > p.effect && hinted > ToolEffect::Read))
        }
        None => match cfg.tool_defaults.unlisted {
            UnlistedTools::RequireApproval => (hinted.max(ToolEffect::Write), true),
            _ => (hinted, hinted > ToolEffect::Read),
        },
    }
}

/// What the gate needs besides the call's params.
pub struct Gate<'a> {
    pub cfg: &'a GatewayConfig,
    pub principal: &'a Principal,
    pub request_id: &'a str,
    /// The client's revision.
    pub rev: Rev,
    /// The session's ID (session era): its budgets, and its short form in audit records.
    pub session: Option<&'a str>,
    pub state: &'a State,
    pub resolver: &'a dyn Resolve,
    pub observe: &'a Observer,
    pub server: &'a dyn ToolServer,
}

/// The server, as far as the gate reaches it: listing its tools (an unknown tool) and a
/// dry-run call (the preview of a plan).
pub trait ToolServer: Send + Sync {
    fn list_tools(&self) -> BoxFuture<'_, Result<Vec<Value>, String>>;
    /// Calls a tool with `params` and returns its result, if it answered with one.
    fn call_tool(&self, params: Value) -> BoxFuture<'_, Option<Value>>;
    /// Whether requests to this server carry the stateless envelope.
    fn stateless(&self) -> bool;
}

impl Gate<'_> {
    fn event(&self, kind: Kind, detail: &str) {
        events::emit(self.observe, kind, self.request_id, &self.principal.subject, detail);
    }

    fn record(
        &self,
        tool: &str,
        params_hash: Option<&str>,
        decision: &str,
        reason: &str,
        result: Option<&str>,
    ) {
        CallRecord {
            request_id: self.request_id,
            principal: &self.principal.subject,
            session: self.session.map(short),
            revision: self.rev.as_str(),
            method: "tools/call",
            name: Some(tool),
            params_sha256: params_hash,
            result_sha256: result,
            decision,
            reason,
            extra: None,
        }
        .write(&self.observe.audit);
    }
}

/// What the gate decided for a call that may go on.
pub struct Passed {
    pub effect: ToolEffect,
    pub approval: Option<Plan>,
}

/// How long a client waits before retrying a call refused because the state store is down.
const STORE_RETRY_SECONDS: u64 = 5;

/// The answer to a call that needs the shared state store while it is unreachable.
pub fn state_unavailable(id: &Value) -> Value {
    jsonrpc::error(
        Some(id.clone()),
        STATE_UNAVAILABLE,
        format!(
            "The gateway cannot reach its state store, so calls that change state (and approvals) are refused; retry after {STORE_RETRY_SECONDS} s"
        ),
        Some(json!({"retryAfterSeconds": STORE_RETRY_SECONDS})),
    )
}

fn store_down(id: &Value) -> Refused {
    Refused {
        kind: Kind::PolicyBlock,
        reason: "state store unavailable".into(),
        response: state_unavailable(id),
    }
}

fn over(id: &Value, e: QuotaError) -> Refused {
    let e: Exceeded = match e {
        QuotaError::Exceeded(e) => e,
        QuotaError::Unavailable => return store_down(id),
    };
    let advice = if e.limit.ends_with("per session") {
        "start a new session".to_string()
    } else {
        format!("retry after {} s", e.retry_after_seconds)
    };
    refused(
        id,
        Kind::RateLimit,
        LIMIT_EXCEEDED,
        format!("Limit reached: {}; {advice}", e.limit),
        Some(json!({"limit": e.limit, "retryAfterSeconds": e.retry_after_seconds})),
    )
}

/// An approval that could not be used or recorded.
fn approval_refused(id: &Value, e: ApprovalError) -> Refused {
    match e {
        ApprovalError::Unavailable => store_down(id),
        e => refused(id, Kind::PolicyBlock, POLICY_REFUSED, e.to_string(), None),
    }
}

/// The gate. `Ok(Err(plan_result))` is the plan returned instead of forwarding.
pub async fn check(
    gate: &Gate<'_>,
    id: &Value,
    params: &mut Value,
) -> Result<Result<Passed, Value>, Refused> {
    let cfg = gate.cfg;
    let who = gate.principal.subject.as_str();
    let tool = params.get("name").and_then(Value::as_str).unwrap_or_default().to_string();
    let unknown =
        || refused(id, Kind::PolicyBlock, INVALID_PARAMS, format!("Unknown tool: {tool}"), None);
    if !visible(cfg, &tool) {
        return Err(unknown());
    }
    // The tool's definition: its schema is checked and its annotations read on every call,
    // so a tool the gateway has not seen is looked up (every page) before it is refused.
    let Some(known) = definition(gate, &tool).await else {
        return Err(unknown());
    };
    // A definition that changed since review, or whose text addresses the model, is not
    // used (a server withheld as a whole refuses every call).
    let judged = definitions::judge(cfg, &known);
    definitions::report(gate.observe, gate.request_id, who, &known, &judged);
    let server_withheld = definitions::server_withheld(cfg, gate.state.tools.as_ref());
    if judged.withheld() || server_withheld.is_some() {
        let kind =
            if judged.drift.is_some() { Kind::ToolDefinitionChanged } else { Kind::ToolPoisoning };
        let why =
            if judged.withheld() { judged.reason() } else { server_withheld.unwrap_or_default() };
        return Err(Refused {
            kind,
            reason: format!("{tool}: withheld: {why}"),
            response: jsonrpc::error(
                Some(id.clone()),
                POLICY_REFUSED,
                format!(
                    "Tool {tool} is withheld: its definition differs from the one reviewed for this server, or its text is aimed at the model; an administrator must review it"
                ),
                None,
            ),
        });
    }
    let (effect, needs_approval) = classify(cfg, &tool, Some(&known));
    let depth = params
        .pointer(&format!("/_meta/{}", CHAIN_DEPTH_KEY.replace('/', "~1")))
        .and_then(Value::as_u64)
        .unwrap_or(0);
    if depth > u64::from(cfg.limits.max_chain_depth) {
        return Err(refused(
            id,
            Kind::PolicyBlock,
            POLICY_REFUSED,
            format!("tool-call chain deeper than {}", cfg.limits.max_chain_depth),
            None,
        ));
    }

    // Arguments: safety flags, inputSchema, per-argument rules; checked where they are, in
    // the params that will be forwarded.
    let had_arguments = params.get("arguments").is_some();
    let Some(p) = params.as_object_mut() else {
        return Err(refused(
            id,
            Kind::ValidationFailure,
            INVALID_PARAMS,
            "params must be an object".into(),
            None,
        ));
    };
    let args = p.entry("arguments").or_insert_with(|| Value::Object(Map::new()));
    let context = guard::Context {
        tool: &tool,
        policy: policy_of(cfg, &tool),
        defaults: &cfg.tool_defaults,
        definition: Some(&known),
        protected: &cfg.protected_paths,
        resolver: gate.resolver,
    };
    let checked = guard::check_arguments(&context, args).await;
    let args = match (checked, params.get_mut("arguments").map(Value::take)) {
        (Ok(notes), Some(Value::Object(m))) => {
            for n in notes {
                gate.event(n.kind, &format!("{tool}: {}", n.detail));
            }
            m
        }
        (Err(r), _) => {
            return Err(refused(
                id,
                r.kind,
                INVALID_PARAMS,
                format!("Invalid arguments for {tool}: {}", r.message),
                None,
            ));
        }
        (Ok(_), _) => {
            return Err(refused(
                id,
                Kind::ValidationFailure,
                INVALID_PARAMS,
                "arguments must be an object".into(),
                None,
            ));
        }
    };

    // Approval: plan first, then the approved exact call.
    let mut approval = None;
    if needs_approval {
        let presented =
            params.get_mut("_meta").and_then(Value::as_object_mut).and_then(|m| m.remove(META_KEY));
        match presented {
            Some(Value::String(approval_id)) => {
                let plan = gate
                    .state
                    .approvals
                    .redeem(&approval_id, &tool, &args, who)
                    .await
                    .map_err(|e| approval_refused(id, e))?;
                approval = Some(plan);
            }
            Some(_) => {
                return Err(refused(
                    id,
                    Kind::ValidationFailure,
                    INVALID_PARAMS,
                    format!("{META_KEY} must be a string"),
                    None,
                ));
            }
            None => {
                let preview = preview(gate, id, &tool, &args, &known).await?;
                let plan = gate
                    .state
                    .approvals
                    .propose(&tool, args, who, preview)
                    .await
                    .map_err(|e| approval_refused(id, e))?;
                gate.observe.audit.record(
                    "approval_requested",
                    json!({
                        "request_id": gate.request_id,
                        "principal": who,
                        "approval_id": plan.id,
                        "plan_hash": plan.hash,
                        "tool": tool,
                        "effect": format!("{effect:?}").to_lowercase(),
                        "arguments": crate::controls::mediate::redacted(&Value::Object(plan.arguments.clone())),
                        "preview": plan.preview,
                    }),
                );
                return Ok(Err(plan_result(id, &plan, gate.rev.stateless())));
            }
        }
    }

    if had_arguments {
        params["arguments"] = Value::Object(args);
    } else if let Some(p) = params.as_object_mut() {
        p.remove("arguments");
    }

    // Budgets and rates, counted only for calls that go to the server.
    quota::tool_call(gate.state, cfg, who, &tool, effect, gate.session)
        .await
        .map_err(|e| over(id, e))?;
    Ok(Ok(Passed { effect, approval }))
}

/// The tool's definition, listing the server's tools again (rate-limited) when it is unknown.
async fn definition(gate: &Gate<'_>, tool: &str) -> Option<Arc<Tool>> {
    let tools = &gate.state.tools;
    if let Some(t) = tools.get(tool) {
        return Some(t);
    }
    if !tools.refresh_allowed() {
        return None;
    }
    match gate.server.list_tools().await {
        Ok(listed) => tools.learn(&listed),
        Err(e) => tracing::debug!(error = %e, "listing the server's tools failed"),
    }
    tools.get(tool)
}

/// The tool's dry-run answer, where the spec names a dry-run argument that the tool itself
/// declares as a flag (a tool that does not know the argument would ignore it and act). The
/// preview is a real call of the server: it is budgeted and audited like any call.
async fn preview(
    gate: &Gate<'_>,
    id: &Value,
    tool: &str,
    args: &Map<String, Value>,
    known: &Tool,
) -> Result<Option<Value>, Refused> {
    let Some(dry) = policy_of(gate.cfg, tool).and_then(|p| p.dry_run.as_ref()) else {
        return Ok(None);
    };
    if !known.declares_flag(&dry.argument) {
        gate.event(
            Kind::PolicyBlock,
            &format!(
                "{tool}: no preview: the tool does not declare the dry-run argument {}",
                dry.argument
            ),
        );
        return Ok(None);
    }
    quota::tool_call(gate.state, gate.cfg, &gate.principal.subject, tool, ToolEffect::Read, None)
        .await
        .map_err(|e| over(id, e))?;
    let mut a = args.clone();
    a.insert(dry.argument.clone(), Value::Bool(true));
    let mut params = json!({"name": tool, "arguments": a});
    if gate.server.stateless() {
        params["_meta"] = json!({
            "io.modelcontextprotocol/protocolVersion": gate.rev.as_str(),
            "io.modelcontextprotocol/clientCapabilities": {},
        });
    }
    let params_hash = digest(&params);
    let mut result = gate.server.call_tool(params).await;
    if let Some(r) = result.as_mut() {
        crate::controls::mediate::result("tools/call", r, &gate.cfg.limits);
    }
    let result_hash = result.as_ref().map(digest);
    gate.record(
        tool,
        Some(&params_hash),
        "preview",
        "dry run for an approval plan",
        result_hash.as_deref(),
    );
    Ok(result)
}
