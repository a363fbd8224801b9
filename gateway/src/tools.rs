//! The server's tool definitions as the gateway last saw them in `tools/list` (every page):
//! input schemas for argument checks, output schemas for result checks, annotations for the
//! effect of a call. Owned by the [`crate::state::Gateway`], emptied on a config reload, and
//! refreshed (at most every [`REFRESH_INTERVAL`]) when a call names a tool it does not know,
//! so that a tool is never called without its declared schema being checked.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::upstream::{Session, UpstreamError};
use crate::validate::Rev;

/// Least time between two refreshes caused by unknown tools (a client naming made-up tools
/// cannot make the gateway list the server's tools on every call).
pub const REFRESH_INTERVAL: Duration = Duration::from_secs(5);
/// Most pages of `tools/list` the gateway follows.
pub const MAX_PAGES: usize = 100;

/// A tool as the server declared it, with its schemas compiled on first use (compiling costs
/// far more than validating; a definition changes only with the list).
pub struct Tool {
    pub def: Value,
    input: OnceLock<Option<Result<jsonschema::Validator, String>>>,
    output: OnceLock<Option<Result<jsonschema::Validator, String>>>,
}

fn compile(schema: Option<&Value>) -> Option<Result<jsonschema::Validator, String>> {
    schema.map(|s| jsonschema::validator_for(s).map_err(|e| e.to_string()))
}

impl Tool {
    pub fn new(def: Value) -> Tool {
        Tool { def, input: OnceLock::new(), output: OnceLock::new() }
    }

    /// The compiled `inputSchema`: `None` without one, `Err` when it does not compile.
    pub fn input_validator(&self) -> Option<Result<&jsonschema::Validator, &str>> {
        let compiled = self.input.get_or_init(|| compile(self.def.get("inputSchema")));
        compiled.as_ref().map(|r| r.as_ref().map_err(String::as_str))
    }

    pub fn output_validator(&self) -> Option<&jsonschema::Validator> {
        let compiled = self.output.get_or_init(|| compile(self.def.get("outputSchema")));
        compiled.as_ref().and_then(|r| r.as_ref().ok())
    }

    /// The argument names the `inputSchema` declares (its top-level `properties`).
    pub fn declared_arguments(&self) -> Vec<&str> {
        self.def
            .pointer("/inputSchema/properties")
            .and_then(Value::as_object)
            .map(|p| p.keys().map(String::as_str).collect())
            .unwrap_or_default()
    }

    /// Whether the `inputSchema` declares `name` as a boolean argument (or without a type).
    pub fn declares_flag(&self, name: &str) -> bool {
        match self.def.pointer("/inputSchema/properties").and_then(|p| p.get(name)) {
            None => false,
            Some(prop) => match prop.get("type") {
                None => true,
                Some(Value::String(t)) => t == "boolean",
                Some(Value::Array(ts)) => ts.iter().any(|t| t == "boolean"),
                Some(_) => false,
            },
        }
    }
}

/// Tool definitions by name.
#[derive(Default)]
pub struct ToolCache {
    tools: Mutex<HashMap<String, Arc<Tool>>>,
    last_refresh: Mutex<Option<Instant>>,
}

impl ToolCache {
    pub fn learn(&self, tools: &[Value]) {
        if let Ok(mut m) = self.tools.lock() {
            for t in tools {
                let Some(name) = t.get("name").and_then(Value::as_str) else { continue };
                if m.get(name).is_some_and(|known| known.def == *t) {
                    continue; // keep the compiled schemas
                }
                m.insert(name.to_string(), Arc::new(Tool::new(t.clone())));
            }
        }
    }

    pub fn get(&self, name: &str) -> Option<Arc<Tool>> {
        self.tools.lock().ok().and_then(|m| m.get(name).cloned())
    }

    pub fn len(&self) -> usize {
        self.tools.lock().map(|m| m.len()).unwrap_or(0)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Forgets every definition (a new configuration may judge tools differently).
    pub fn clear(&self) {
        if let Ok(mut m) = self.tools.lock() {
            m.clear();
        }
        if let Ok(mut r) = self.last_refresh.lock() {
            *r = None;
        }
    }

    /// Whether a refresh may run now; records it when so.
    pub fn refresh_allowed(&self) -> bool {
        let Ok(mut last) = self.last_refresh.lock() else { return false };
        if last.is_some_and(|t| t.elapsed() < REFRESH_INTERVAL) {
            return false;
        }
        *last = Some(Instant::now());
        true
    }
}

/// Every tool the server lists, following `nextCursor` (at most [`MAX_PAGES`] pages). `meta`
/// is the stateless envelope when the connection speaks the stateless revision.
pub async fn list_all(
    session: &Arc<Session>,
    rev: Rev,
    timeout: Duration,
) -> Result<Vec<Value>, UpstreamError> {
    let mut tools = Vec::new();
    let mut cursor: Option<Value> = None;
    for _ in 0..MAX_PAGES {
        let mut params = json!({});
        if rev.stateless() {
            params["_meta"] = json!({
                "io.modelcontextprotocol/protocolVersion": rev.as_str(),
                "io.modelcontextprotocol/clientCapabilities": {},
            });
        }
        if let Some(c) = cursor.take() {
            params["cursor"] = c;
        }
        let params = (params.as_object().is_some_and(|p| !p.is_empty())).then_some(params);
        let answer = session.call("tools/list", params, timeout).await?;
        let Some(result) = answer.get("result") else {
            return Err(UpstreamError::Malformed("tools/list failed".into()));
        };
        tools.extend(result.get("tools").and_then(Value::as_array).cloned().unwrap_or_default());
        match result.get("nextCursor") {
            Some(c) if !c.is_null() => cursor = Some(c.clone()),
            _ => return Ok(tools),
        }
    }
    Ok(tools)
}
