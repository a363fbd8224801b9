//! Everything a `tools/call` passes before the server sees it: the tool's effect (spec, made
//! stricter by the server's annotations), budgets and rate limits, argument policy, and the
//! approval of mutating calls.

use std::time::Duration;

use palisade_core::config::GatewayConfig;
use palisade_core::policy::{ToolEffect, ToolPolicy, UnlistedTools};
use serde_json::{Map, Value, json};

use crate::approvals::{META_KEY, Plan};
use crate::events::Kind;
use crate::forward::{Call, tool_cache};
use crate::jsonrpc::{self, INVALID_PARAMS, LIMIT_EXCEEDED, POLICY_REFUSED};

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

/// What the server's annotations claim, which can only make a tool stricter.
fn annotated_effect(tool: &str) -> ToolEffect {
    let Some(known) = tool_cache().get(tool) else { return ToolEffect::Read };
    let a = known.def.get("annotations");
    let flag = |k: &str| a.and_then(|a| a.get(k)).and_then(Value::as_bool);
    match (flag("readOnlyHint"), flag("destructiveHint")) {
        (_, Some(true)) => ToolEffect::Destructive,
        (Some(false), _) => ToolEffect::Write,
        _ => ToolEffect::Read,
    }
}

/// The effect a call is treated with, and whether it needs approval.
pub fn classify(cfg: &GatewayConfig, tool: &str) -> (ToolEffect, bool) {
    let hinted = annotated_effect(tool);
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
    let (effect, needs_approval) = classify(cfg, &tool);
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
    let known = tool_cache().get(&tool);
    let checked = crate::guard::check_arguments(
        &tool,
        policy_of(cfg, &tool),
        &cfg.tool_defaults,
        known.as_ref().and_then(|t| t.input_validator()),
        args,
        call.gw.resolver.as_ref(),
    )
    .await;
    let args = match (checked, params.get_mut("arguments").map(Value::take)) {
        (Ok(()), Some(Value::Object(m))) => m,
        (Err(r), _) => {
            return Err(refused(
                id,
                r.kind,
                INVALID_PARAMS,
                format!("Invalid arguments for {tool}: {}", r.message),
                None,
            ));
        }
        (Ok(()), _) => {
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
                let preview = preview(call, &tool, &args).await;
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
    let limits = &cfg.limits;
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
    if let Some(p) = policy_of(cfg, &tool)
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

/// The tool's dry-run answer, where the spec names a dry-run argument.
async fn preview(call: &Call, tool: &str, args: &Map<String, Value>) -> Option<Value> {
    let dry = policy_of(&call.cfg, tool)?.dry_run.as_ref()?;
    let mut a = args.clone();
    a.insert(dry.argument.clone(), Value::Bool(true));
    let upstream = match &call.session {
        Some(s) => s.upstream.clone(),
        None => call.gw.shared_upstream().await.ok()?,
    };
    let mut params = json!({"name": tool, "arguments": a});
    if call.rev.stateless() && upstream.rev.stateless() {
        params["_meta"] = json!({
            "io.modelcontextprotocol/protocolVersion": call.rev.as_str(),
            "io.modelcontextprotocol/clientCapabilities": {},
        });
    }
    let timeout = Duration::from_secs(u64::from(call.cfg.limits.request_timeout_seconds));
    let answer = upstream.call("tools/call", Some(params), timeout).await.ok()?;
    let mut result = answer.get("result")?.clone();
    crate::mediate::result("tools/call", &mut result, &call.cfg.limits);
    Some(result)
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
