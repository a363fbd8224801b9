//! The final answer of the server to one request, before the client sees it: the envelope
//! and the result checked against the client's revision (completed for a stateless client of
//! a session-era server), listings filtered for the principal (and tools whose definition
//! differs from its pin or fails screening withheld), `server/discover` pinned to
//! the gateway's revisions, structured content checked against the tool's output schema, and
//! server-authored text mediated. Errors from the server lose internal detail.

use serde_json::{Value, json};

use super::Call;
use crate::controls::authz::ItemKind;
use crate::controls::{definitions, mediate, toolgate};
use crate::observe::events::Kind;
use crate::protocol::jsonrpc::{self, UPSTREAM_INVALID};
use crate::protocol::schema::{self, Method};
use crate::protocol::translate;

/// The final response from the server, validated and filtered for this principal.
pub(super) fn checked_final(
    call: &Call,
    def: &Method,
    method: &str,
    mut msg: Value,
    translate: bool,
    tool: Option<&str>,
) -> Value {
    let id = msg.get("id").cloned();
    if let Err(e) = jsonrpc::Message::parse(&msg) {
        call.event(
            Kind::UpstreamValidationFailure,
            &format!("{method}: malformed response: {}", e.message),
        );
        return jsonrpc::error(
            id,
            UPSTREAM_INVALID,
            "The MCP server sent an invalid response",
            None,
        );
    }
    let Some(result) = msg.get_mut("result") else {
        return sanitize_error(msg);
    };
    if translate {
        translate::stateless_result(method, result);
    }
    if let Err(e) = schema::check_result(def, result, call.rev, call.strict())
        && (call.strict() || !e.unknown_fields_only)
    {
        call.event(Kind::UpstreamValidationFailure, &format!("{method}: {e}"));
        return jsonrpc::error(
            id,
            UPSTREAM_INVALID,
            "The MCP server sent an invalid response",
            None,
        );
    }
    filter_result(call, method, result);
    // Descriptions, titles and instructions are server-authored text the model reads.
    mediate::listing(result);
    if method == "server/discover" {
        pin_discovered_versions(call, result);
    }
    if let Some(problem) = tool.and_then(|t| output_schema_violation(call, t, &msg)) {
        call.event(
            Kind::UpstreamValidationFailure,
            &format!("tools/call: structuredContent violates the tool's outputSchema: {problem}"),
        );
        return jsonrpc::error(
            id,
            UPSTREAM_INVALID,
            "The tool's result does not match its declared output schema",
            None,
        );
    }
    msg
}

/// The client may only choose revisions the gateway is pinned to (and the server speaks).
fn pin_discovered_versions(call: &Call, result: &mut Value) {
    let pinned = call.gw.supported_on(true);
    let server: Vec<&str> = result
        .get("supportedVersions")
        .and_then(Value::as_array)
        .map(|v| v.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    let both: Vec<&str> = pinned.iter().copied().filter(|v| server.contains(v)).collect();
    result["supportedVersions"] = json!(if both.is_empty() { pinned } else { both });
}

/// Lists show only what the principal may use.
fn filter_result(call: &Call, method: &str, result: &mut Value) {
    let (key, kind, name_key) = match method {
        "tools/list" => ("tools", ItemKind::Tool, "name"),
        "prompts/list" => ("prompts", ItemKind::Prompt, "name"),
        "resources/list" => ("resources", ItemKind::Resource, "uri"),
        "resources/templates/list" => ("resourceTemplates", ItemKind::Resource, "uriTemplate"),
        _ => return,
    };
    if let Some(items) = result.get_mut(key).and_then(Value::as_array_mut) {
        if method == "tools/list" {
            call.gw.state.tools.learn(items);
            if let Some(why) = definitions::server_withheld(&call.cfg, call.gw.state.tools.as_ref())
            {
                tracing::debug!(reason = %why, "every tool of the server is withheld");
                items.clear();
            }
        }
        items.retain(|item| {
            let name = item.get(name_key).and_then(Value::as_str).unwrap_or_default();
            call.gw.authz.item_allowed(&call.principal, kind, name)
                && (kind != ItemKind::Tool
                    || (toolgate::visible(&call.cfg, name) && !withheld(call, name)))
        });
    }
}

/// Whether a listed tool's live definition is withheld (its pin, its screening); what is
/// wrong with it is reported once per definition.
fn withheld(call: &Call, name: &str) -> bool {
    let Some(tool) = call.gw.state.tools.get(name) else { return true };
    let j = definitions::judge(&call.cfg, &tool);
    definitions::report(&call.gw.observe, &call.request_id(), &call.principal.subject, &tool, &j);
    j.withheld()
}

fn output_schema_violation(call: &Call, tool: &str, msg: &Value) -> Option<String> {
    let structured = msg.pointer("/result/structuredContent")?;
    let tool = call.gw.state.tools.get(tool)?;
    tool.output_validator()?.iter_errors(structured).next().map(|e| e.to_string())
}

/// Errors from the server reach the client without internal detail or credentials: no stack
/// traces, absolute paths, internal addresses or keys, in the message or the data.
fn sanitize_error(mut msg: Value) -> Value {
    mediate::error(&mut msg);
    msg
}

/// `server/discover` answered from the handshake, for a server that speaks only the session era.
pub(super) fn discover_from_handshake(call: &Call, id: &Value) -> Value {
    let info = call.gw.server_info();
    let mut answer = translate::discover_result(
        id,
        &call.gw.supported_on(true),
        info.capabilities,
        info.instructions,
        info.server_info,
    );
    if let Some(result) = answer.get_mut("result") {
        mediate::listing(result);
    }
    answer
}
