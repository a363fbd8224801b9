//! Everything a `tools/call` passes before the server sees it: the tool's effect (spec, made
//! stricter by the server's annotations), budgets and rate limits, argument policy, and the
//! approval of mutating calls.

use std::time::Duration;

use palisade_core::config::GatewayConfig;
use palisade_core::policy::{ToolEffect, ToolPolicy, UnlistedTools};
use serde_json::{Map, Value, json};

use crate::approvals::{META_KEY, Plan};
use crate::events::Kind;
use crate::forward::Call;
use crate::jsonrpc::{self, INVALID_PARAMS, LIMIT_EXCEEDED, POLICY_REFUSED};
use crate::tools::Tool;

const HOUR: Duration = Duration::from_secs(3600);
const MINUTE: Duration = Duration::from_secs(60);
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

/// What the gate decided for a call that may go on.
pub struct Passed {
    pub effect: ToolEffect,
    pub approval: Option<Plan>,
}

/// The gate. `Ok(Err(plan_result))` is the plan returned instead of forwarding.
pub async fn check(
    call: &Call,
    id: &Value,
    params: &mut Value,
) -> Result<Result<Passed, Value>, Refused> {
    let cfg = &call.cfg;
    let who = call.principal.subject.as_str();
    let tool = params.get("name").and_then(Value::as_str).unwrap_or_default().to_string();
    if !visible(cfg, &tool) {
        return Err(refused(
            id,
            Kind::PolicyBlock,
            INVALID_PARAMS,
            format!("Unknown tool: {tool}"),
            None,
        ));
    }
    // The tool's definition: its schema is checked and its annotations read on every call,
    // so a tool the gateway has not seen is looked up (every page) before it is refused.
    let Some(known) = definition(call, &tool).await else {
        return Err(refused(
            id,
            Kind::PolicyBlock,
            INVALID_PARAMS,
            format!("Unknown tool: {tool}"),
            None,
        ));
    };
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
    let guard = crate::guard::Context {
        tool: &tool,
        policy: policy_of(cfg, &tool),
        defaults: &cfg.tool_defaults,
        definition: Some(&known),
        protected: &cfg.protected_paths,
        resolver: call.gw.resolver.as_ref(),
    };
    let checked = crate::guard::check_arguments(&guard, args).await;
    let args = match (checked, params.get_mut("arguments").map(Value::take)) {
        (Ok(notes), Some(Value::Object(m))) => {
            for n in notes {
                call.event_for(n.kind, &format!("{tool}: {}", n.detail));
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
                let plan =
                    call.gw.approvals.redeem(&approval_id, &tool, &args, who).map_err(|e| {
                        refused(id, Kind::PolicyBlock, POLICY_REFUSED, e.to_string(), None)
                    })?;
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
                let preview = preview(call, id, &tool, &args, &known).await?;
                let plan = call.gw.approvals.propose(&tool, args, who, preview);
                call.gw.audit.record(
                    "approval_requested",
                    json!({
                        "request_id": call.request_id(),
                        "principal": who,
                        "approval_id": plan.id,
                        "plan_hash": plan.hash,
                        "tool": tool,
                        "effect": format!("{effect:?}").to_lowercase(),
                        "arguments": crate::mediate::redacted(&Value::Object(plan.arguments.clone())),
                        "preview": plan.preview,
                    }),
                );
                return Ok(Err(plan_result(id, &plan, call.rev.stateless())));
            }
        }
    }

    if had_arguments {
        params["arguments"] = Value::Object(args);
    } else if let Some(p) = params.as_object_mut() {
        p.remove("arguments");
    }

    // Budgets and rates, counted only for calls that go to the server.
    budget(call, id, &tool, effect)?;
    let limits = &cfg.limits;
    if let Some(s) = &call.session {
        use std::sync::atomic::Ordering::Relaxed;
        let session_over = |limit: &str| {
            refused(
                id,
                Kind::RateLimit,
                LIMIT_EXCEEDED,
                format!("Limit reached: {limit}; start a new session"),
                Some(json!({"limit": limit})),
            )
        };
        if s.tool_calls.fetch_add(1, Relaxed) >= u64::from(limits.max_tool_calls_per_session) {
            return Err(session_over("tool calls per session"));
        }
        if effect > ToolEffect::Read
            && s.mutations.fetch_add(1, Relaxed) >= u64::from(limits.max_mutations_per_session)
        {
            return Err(session_over("mutations per session"));
        }
    }
    Ok(Ok(Passed { effect, approval }))
}

/// The tool's definition, listing the server's tools again (rate-limited) when it is unknown.
async fn definition(call: &Call, tool: &str) -> Option<std::sync::Arc<Tool>> {
    if let Some(t) = call.gw.tools.get(tool) {
        return Some(t);
    }
    if !call.gw.tools.refresh_allowed() {
        return None;
    }
    let upstream = match &call.session {
        Some(s) => s.upstream.clone(),
        None => call.gw.shared_upstream().await.ok()?,
    };
    let timeout = Duration::from_secs(u64::from(call.cfg.limits.request_timeout_seconds));
    match crate::tools::list_all(&upstream, upstream.rev, timeout).await {
        Ok(tools) => call.gw.tools.learn(&tools),
        Err(e) => tracing::debug!(error = %e, "listing the server's tools failed"),
    }
    call.gw.tools.get(tool)
}

/// The tool's dry-run answer, where the spec names a dry-run argument that the tool itself
/// declares as a flag (a tool that does not know the argument would ignore it and act). The
/// preview is a real call of the server: it is budgeted and audited like any call.
async fn preview(
    call: &Call,
    id: &Value,
    tool: &str,
    args: &Map<String, Value>,
    known: &Tool,
) -> Result<Option<Value>, Refused> {
    let Some(dry) = policy_of(&call.cfg, tool).and_then(|p| p.dry_run.as_ref()) else {
        return Ok(None);
    };
    if !known.declares_flag(&dry.argument) {
        call.event_for(
            Kind::PolicyBlock,
            &format!(
                "{tool}: no preview: the tool does not declare the dry-run argument {}",
                dry.argument
            ),
        );
        return Ok(None);
    }
    budget(call, id, tool, ToolEffect::Read)?;
    let mut a = args.clone();
    a.insert(dry.argument.clone(), Value::Bool(true));
    let upstream = match &call.session {
        Some(s) => s.upstream.clone(),
        None => match call.gw.shared_upstream().await {
            Ok(u) => u,
            Err(_) => return Ok(None),
        },
    };
    let mut params = json!({"name": tool, "arguments": a});
    if call.rev.stateless() && upstream.rev.stateless() {
        params["_meta"] = json!({
            "io.modelcontextprotocol/protocolVersion": call.rev.as_str(),
            "io.modelcontextprotocol/clientCapabilities": {},
        });
    }
    let params_hash = crate::audit::digest(&params);
    let timeout = Duration::from_secs(u64::from(call.cfg.limits.request_timeout_seconds));
    let answer = upstream.call("tools/call", Some(params), timeout).await.ok();
    let mut result = answer.as_ref().and_then(|a| a.get("result")).cloned();
    if let Some(r) = result.as_mut() {
        crate::mediate::result("tools/call", r, &call.cfg.limits);
    }
    crate::forward::audit_call(
        call,
        "tools/call",
        Some(tool),
        Some(&params_hash),
        "preview",
        "dry run for an approval plan",
        result.as_ref().map(crate::audit::digest).as_deref(),
        None,
    );
    Ok(result)
}

/// Counts a call that reaches the server against the principal's rates and budgets.
fn budget(call: &Call, id: &Value, tool: &str, effect: ToolEffect) -> Result<(), Refused> {
    let limits = &call.cfg.limits;
    let who = call.principal.subject.as_str();
    let q = &call.gw.quotas;
    let over = |e: crate::quota::Exceeded| {
        refused(
            id,
            Kind::RateLimit,
            LIMIT_EXCEEDED,
            format!("Limit reached: {}; retry after {} s", e.limit, e.retry_after_seconds),
            Some(json!({"limit": e.limit, "retryAfterSeconds": e.retry_after_seconds})),
        )
    };
    if let Some(p) = policy_of(&call.cfg, tool)
        && let Some(rate) = p.rate_per_minute
    {
        q.take(who, &format!("calls of {tool} per minute"), u64::from(rate), MINUTE)
            .map_err(over)?;
    }
    q.take(
        who,
        "tool calls per principal per hour",
        u64::from(limits.max_tool_calls_per_principal_per_hour),
        HOUR,
    )
    .map_err(over)?;
    if effect > ToolEffect::Read {
        q.take(
            who,
            "mutations per principal per hour",
            u64::from(limits.max_mutations_per_principal_per_hour),
            HOUR,
        )
        .map_err(over)?;
    }
    Ok(())
}

/// The result returned instead of running a call that needs approval: a tool error the model
/// can read, with the plan in `_meta` for programs.
fn plan_result(id: &Value, plan: &Plan, stateless: bool) -> Value {
    let text = format!(
        "Approval required: this call of '{}' changes state and was not run. An approver must \
         approve plan {} (approval ID {}) at POST /approvals/{}; then repeat the identical call \
         with _meta {{\"{META_KEY}\": \"{}\"}}. The approval is single-use and expires in {} s.",
        plan.tool,
        plan.hash,
        plan.id,
        plan.id,
        plan.id,
        crate::approvals::TTL.as_secs()
    );
    let mut result = json!({
        "content": [{"type": "text", "text": text}],
        "isError": true,
        "_meta": {"palisade.dev/approvalRequired": plan.view()},
    });
    if stateless {
        result["resultType"] = json!("complete");
    }
    json!({"jsonrpc": "2.0", "id": id, "result": result})
}
