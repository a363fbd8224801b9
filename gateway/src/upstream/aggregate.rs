//! A virtual server: one upstream made of several servers (their gateways), each over a
//! connection of its own. It answers the gateway as one MCP server would: the handshake
//! merged (every server must take part, and agree on the revision), listings combined under
//! the names `palisade_core::naming` gives (prefixes, length limit, conflicts withheld), and
//! every request, notification and answer routed to the server that owns the name, URI or
//! request. The policy above it (roles, guards, pins, audit) sees the combined server; each
//! server's own gateway applies its own as well.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use palisade_core::naming::{self, Listed, Names};
use palisade_core::spec::Naming;
use serde_json::{Map, Value, json};
use tokio::sync::mpsc;
use tracing::{debug, warn};

use super::connection::Connection;
use super::credentials::Identity;
use super::pipe::Arrival;
use super::{Bounds, Connector, UpstreamError};
use crate::protocol::jsonrpc::{self, is_final};
use crate::protocol::revision::Rev;

/// Most pages of one server's listing that are combined.
const MAX_PAGES: usize = 100;

/// The servers of a virtual server, as the gateway reaches them.
pub struct Members {
    pub names: Vec<String>,
    pub prefixes: Vec<String>,
    pub connectors: Vec<Connector>,
    pub naming: Naming,
    /// Bound on the calls the aggregate makes itself (handshakes, listings).
    pub timeout: Duration,
}

/// The kinds of listed items, by list method.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
enum Kind {
    Tools,
    Prompts,
    Resources,
    Templates,
}

impl Kind {
    fn of_list(method: &str) -> Option<Kind> {
        match method {
            "tools/list" => Some(Kind::Tools),
            "prompts/list" => Some(Kind::Prompts),
            "resources/list" => Some(Kind::Resources),
            "resources/templates/list" => Some(Kind::Templates),
            _ => None,
        }
    }
    fn list_method(self) -> &'static str {
        match self {
            Kind::Tools => "tools/list",
            Kind::Prompts => "prompts/list",
            Kind::Resources => "resources/list",
            Kind::Templates => "resources/templates/list",
        }
    }
    fn key(self) -> &'static str {
        match self {
            Kind::Tools => "tools",
            Kind::Prompts => "prompts",
            Kind::Resources => "resources",
            Kind::Templates => "resourceTemplates",
        }
    }
}

#[derive(Default)]
struct State {
    names: HashMap<Kind, Names>,
    /// Resource URI -> server (URIs are not renamed; one listed by two servers is withheld).
    uris: HashMap<String, usize>,
    /// URI template heads (up to the first `{`) -> server.
    templates: Vec<(String, usize)>,
    /// The client's request id -> the task forwarding it (aborted on cancellation).
    inflight: HashMap<String, tokio::task::AbortHandle>,
    /// What the last listings withheld, described.
    withheld: Vec<String>,
}

/// The virtual server's side of one upstream connection.
pub struct Aggregate {
    members: Vec<Arc<Connection>>,
    names: Vec<String>,
    prefixes: Vec<String>,
    naming: Naming,
    timeout: Duration,
    rev: Rev,
    out: mpsc::Sender<Result<Arrival, UpstreamError>>,
    state: Mutex<State>,
}

fn key(v: &Value) -> String {
    v.to_string()
}

fn error(id: &Value, code: i64, message: impl Into<String>) -> Value {
    json!({"jsonrpc": "2.0", "id": id, "error": {"code": code, "message": message.into()}})
}

fn answer(id: &Value, result: Value) -> Value {
    json!({"jsonrpc": "2.0", "id": id, "result": result})
}

/// `params` without the client's pagination cursor (the aggregate lists everything).
fn without_cursor(params: &Option<Value>) -> Option<Value> {
    let mut p = params.clone().unwrap_or_else(|| json!({}));
    if let Some(o) = p.as_object_mut() {
        o.remove("cursor");
    }
    Some(p)
}

/// The union of the servers' capabilities (a capability any of them has, with `listChanged`
/// and `subscribe` when any has them).
fn merged_capabilities<'a>(all: impl Iterator<Item = &'a Value>) -> Value {
    let mut out = Map::new();
    for caps in all {
        let Some(caps) = caps.as_object() else { continue };
        for (name, value) in caps {
            let entry = out.entry(name.clone()).or_insert_with(|| json!({}));
            if let (Some(e), Some(v)) = (entry.as_object_mut(), value.as_object()) {
                for (flag, on) in v {
                    if on.as_bool() == Some(true) || !e.contains_key(flag) {
                        e.insert(flag.clone(), on.clone());
                    }
                }
            }
        }
    }
    // Tasks are not offered through a virtual server (results pass policy synchronously).
    out.remove("tasks");
    Value::Object(out)
}

impl Aggregate {
    /// Opens a connection to every server (speaking `rev`, for `identity`'s user) and the
    /// aggregate over them; what it answers goes to `out`.
    pub async fn open(
        members: &Members,
        bounds: Bounds,
        rev: Rev,
        identity: Option<Arc<Identity>>,
        out: mpsc::Sender<Result<Arrival, UpstreamError>>,
    ) -> Result<Arc<Aggregate>, UpstreamError> {
        let mut connections = Vec::with_capacity(members.connectors.len());
        for connector in &members.connectors {
            let own = match (&identity, connector.credentials()) {
                (Some(user), Some(c)) => Some(user.with(c)),
                _ => connector.identity(None),
            };
            connections.push(connector.open(bounds, rev, own).await?);
        }
        let aggregate = Arc::new(Aggregate {
            members: connections,
            names: members.names.clone(),
            prefixes: members.prefixes.clone(),
            naming: members.naming.clone(),
            timeout: members.timeout,
            rev,
            out,
            state: Mutex::new(State::default()),
        });
        for (i, m) in aggregate.members.iter().enumerate() {
            let (tx, rx) = mpsc::channel(64);
            m.set_unsolicited(tx);
            tokio::spawn(Aggregate::relay_unsolicited(Arc::downgrade(&aggregate), i, rx));
        }
        Ok(aggregate)
    }

    /// What the servers send on their own (notifications, requests to the client): passed on,
    /// requests with ids that say which server asked (`v<server>-<its id>`).
    async fn relay_unsolicited(
        aggregate: std::sync::Weak<Aggregate>,
        server: usize,
        mut rx: mpsc::Receiver<Value>,
    ) {
        while let Some(mut msg) = rx.recv().await {
            let Some(a) = aggregate.upgrade() else { return };
            if let Some(id) = msg.get("id").filter(|_| msg.get("method").is_some()).cloned() {
                msg["id"] = Value::String(format!("v{server}-{id}"));
            }
            if let Some(kind) = msg
                .get("method")
                .and_then(Value::as_str)
                .and_then(|m| m.strip_prefix("notifications/"))
                .and_then(|m| m.strip_suffix("/list_changed"))
            {
                a.forget_names(kind);
            }
            if a.out.send(Ok(Arrival::unrelated(msg))).await.is_err() {
                return;
            }
        }
    }

    fn forget_names(&self, kind: &str) {
        if let Ok(mut s) = self.state.lock() {
            match kind {
                "tools" => {
                    s.names.remove(&Kind::Tools);
                }
                "prompts" => {
                    s.names.remove(&Kind::Prompts);
                }
                _ => {
                    s.names.remove(&Kind::Resources);
                    s.uris.clear();
                }
            }
        }
    }

    /// What the last listings withheld (conflicts, names too long), described.
    pub fn withheld(&self) -> Vec<String> {
        self.state.lock().map(|s| s.withheld.clone()).unwrap_or_default()
    }

    pub fn set_protocol_version(&self, rev: &str) {
        for m in &self.members {
            m.pipe().set_protocol_version(rev);
        }
    }

    pub fn last_failure(&self) -> Option<String> {
        self.members.iter().enumerate().find_map(|(i, m)| {
            m.pipe().last_failure().map(|f| format!("server {}: {f}", self.names[i]))
        })
    }

    pub async fn close(&self) {
        for m in &self.members {
            m.close().await;
        }
    }

    /// A message from the gateway to the virtual server. (Boxed: forwarding goes through a
    /// pipe again, so the future's type would otherwise contain itself.)
    pub fn send(
        self: &Arc<Self>,
        msg: Value,
    ) -> futures::future::BoxFuture<'static, Result<(), UpstreamError>> {
        let me = self.clone();
        Box::pin(async move { me.dispatch(msg).await })
    }

    async fn dispatch(self: &Arc<Self>, msg: Value) -> Result<(), UpstreamError> {
        let method = msg.get("method").and_then(Value::as_str).map(str::to_string);
        let id = msg.get("id").filter(|i| !i.is_null()).cloned();
        match (method, id) {
            (Some(method), Some(id)) => {
                let me = self.clone();
                let params = msg.get("params").cloned();
                let k = key(&id);
                // Registered under the lock the task takes to deregister: never after it ended.
                let Ok(mut state) = self.state.lock() else {
                    return Err(UpstreamError::Closed);
                };
                let task = tokio::spawn(async move {
                    let reply = me.request(&id, &method, params).await;
                    if let Some(reply) = reply {
                        let _ = me
                            .out
                            .send(Ok(Arrival { msg: reply, on_stream_of: Some(id.clone()) }))
                            .await;
                    }
                    if let Ok(mut s) = me.state.lock() {
                        s.inflight.remove(&key(&id));
                    }
                });
                state.inflight.insert(k, task.abort_handle());
                Ok(())
            }
            (Some(method), None) => {
                self.notification(&method, msg.get("params").cloned()).await;
                Ok(())
            }
            (None, Some(id)) => self.client_answer(id, msg).await,
            (None, None) => Err(UpstreamError::Malformed("neither a request nor an answer".into())),
        }
    }

    /// A notification from the client: a cancellation stops the forwarding task (its
    /// exchange tells the server); the others go to every server.
    async fn notification(&self, method: &str, params: Option<Value>) {
        if method == "notifications/cancelled" {
            let id = params.as_ref().and_then(|p| p.get("requestId")).map(key);
            let task =
                id.and_then(|k| self.state.lock().ok().and_then(|mut s| s.inflight.remove(&k)));
            if let Some(t) = task {
                t.abort();
            }
            return;
        }
        for m in &self.members {
            if let Err(e) = m.notify(method, params.clone()).await {
                debug!(error = %e, "a notification did not reach a server of the virtual server");
            }
        }
    }

    /// The client's answer to a server's request: back to the server that asked.
    async fn client_answer(&self, id: Value, mut msg: Value) -> Result<(), UpstreamError> {
        let routed = id.as_str().and_then(|s| s.strip_prefix('v')).and_then(|s| s.split_once('-'));
        let Some((server, original)) = routed else {
            warn!("an answer to a request no server of the virtual server made; dropped");
            return Ok(());
        };
        let (Ok(server), Ok(original)) =
            (server.parse::<usize>(), serde_json::from_str::<Value>(original))
        else {
            return Ok(());
        };
        let Some(m) = self.members.get(server) else { return Ok(()) };
        msg["id"] = original;
        m.respond(msg).await
    }

    /// One request of the client; `None` when the answer already went out (forwarded).
    async fn request(&self, id: &Value, method: &str, params: Option<Value>) -> Option<Value> {
        match method {
            "initialize" => Some(self.initialize(id, params).await),
            "server/discover" => Some(self.discover(id, params).await),
            "ping" => Some(self.composed(id, json!({}))),
            "logging/setLevel" => Some(self.everywhere(id, method, params).await),
            "tools/call" | "prompts/get" => {
                let kind = if method == "tools/call" { Kind::Tools } else { Kind::Prompts };
                let name = params.as_ref()?.get("name").and_then(Value::as_str)?.to_string();
                match self.route_name(kind, &name, &params).await {
                    Some((server, original)) => {
                        let mut p = params.unwrap_or_default();
                        p["name"] = Value::String(original);
                        self.forward(server, id, method, Some(p)).await
                    }
                    None => Some(error(
                        id,
                        jsonrpc::INVALID_PARAMS,
                        format!(
                            "Unknown {}: {name}",
                            if kind == Kind::Tools { "tool" } else { "prompt" }
                        ),
                    )),
                }
            }
            "resources/read" | "resources/subscribe" | "resources/unsubscribe" => {
                let uri = params.as_ref()?.get("uri").and_then(Value::as_str)?.to_string();
                match self.route_uri(&uri, &params).await {
                    Some(server) => self.forward(server, id, method, params).await,
                    None => {
                        Some(error(id, jsonrpc::INVALID_PARAMS, format!("Unknown resource: {uri}")))
                    }
                }
            }
            "completion/complete" => {
                let reference = params.as_ref()?.get("ref")?.clone();
                let routed = match reference.get("type").and_then(Value::as_str) {
                    Some("ref/prompt") => {
                        let name = reference.get("name").and_then(Value::as_str)?.to_string();
                        self.route_name(Kind::Prompts, &name, &params)
                            .await
                            .map(|(s, o)| (s, Some(o)))
                    }
                    Some("ref/resource") => {
                        let uri = reference.get("uri").and_then(Value::as_str)?.to_string();
                        self.route_uri(&uri, &params).await.map(|s| (s, None))
                    }
                    _ => None,
                };
                match routed {
                    Some((server, original)) => {
                        let mut p = params.unwrap_or_default();
                        if let Some(o) = original {
                            p["ref"]["name"] = Value::String(o);
                        }
                        self.forward(server, id, method, Some(p)).await
                    }
                    None => Some(error(
                        id,
                        jsonrpc::INVALID_PARAMS,
                        "the completion names no known prompt or resource",
                    )),
                }
            }
            m => match Kind::of_list(m) {
                Some(kind) => Some(match self.list(kind, &params).await {
                    Ok(items) => {
                        let mut result = Map::new();
                        result.insert(kind.key().to_string(), Value::Array(items));
                        self.composed(id, Value::Object(result))
                    }
                    Err(e) => error(id, jsonrpc::UPSTREAM_UNAVAILABLE, e),
                }),
                None => Some(error(
                    id,
                    jsonrpc::METHOD_NOT_FOUND,
                    format!("{m} is not served by a virtual server"),
                )),
            },
        }
    }

    /// Sends a request to every server and waits for all answers: their results in order, or
    /// the first error (a server's own, with its code and the server named; or the transport's).
    async fn all(&self, method: &str, params: &Option<Value>) -> Result<Vec<Value>, Value> {
        let calls = self.members.iter().map(|m| m.call(method, params.clone(), self.timeout));
        let answers = futures::future::join_all(calls).await;
        let mut out = Vec::with_capacity(answers.len());
        for (i, a) in answers.into_iter().enumerate() {
            let server = &self.names[i];
            match a {
                Ok(v) => match (v.get("result"), v.get("error")) {
                    (Some(r), _) => out.push(r.clone()),
                    (None, e) => {
                        let mut e =
                            e.cloned().unwrap_or_else(|| json!({"code": jsonrpc::INTERNAL_ERROR}));
                        let why = e.get("message").and_then(Value::as_str).unwrap_or("an error");
                        e["message"] = json!(format!("server {server}: {why}"));
                        return Err(e);
                    }
                },
                Err(e) => {
                    return Err(
                        json!({"code": jsonrpc::UPSTREAM_UNAVAILABLE, "message": format!("server {server}: {e}")}),
                    );
                }
            }
        }
        Ok(out)
    }

    /// A result the aggregate composed itself. In the stateless revision every result says
    /// what it is and how it may be cached: complete, never cached, and private (it is this
    /// caller's view of several servers).
    fn composed(&self, id: &Value, mut result: Value) -> Value {
        if self.rev.stateless()
            && let Some(r) = result.as_object_mut()
        {
            r.insert("resultType".into(), json!("complete"));
            r.insert("ttlMs".into(), json!(0));
            r.insert("cacheScope".into(), json!("private"));
        }
        answer(id, result)
    }

    fn failed(id: &Value, e: Value) -> Value {
        json!({"jsonrpc": "2.0", "id": id, "error": e})
    }

    async fn initialize(&self, id: &Value, params: Option<Value>) -> Value {
        let results = match self.all("initialize", &params).await {
            Ok(r) => r,
            Err(e) => return Aggregate::failed(id, e),
        };
        let versions: Vec<&str> = results
            .iter()
            .filter_map(|r| r.get("protocolVersion").and_then(Value::as_str))
            .collect();
        let agreed = versions.first().copied();
        if versions.len() != results.len() || versions.iter().any(|v| Some(*v) != agreed) {
            return error(
                id,
                jsonrpc::UPSTREAM_UNAVAILABLE,
                format!(
                    "the servers of the virtual server do not agree on a protocol revision ({})",
                    versions.join(", ")
                ),
            );
        }
        let caps = merged_capabilities(results.iter().filter_map(|r| r.get("capabilities")));
        answer(
            id,
            json!({
                "protocolVersion": agreed,
                "capabilities": caps,
                "serverInfo": {"name": "palisade-virtual-server", "version": env!("CARGO_PKG_VERSION")},
            }),
        )
    }

    async fn discover(&self, id: &Value, params: Option<Value>) -> Value {
        let results = match self.all("server/discover", &params).await {
            Ok(r) => r,
            Err(e) => return Aggregate::failed(id, e),
        };
        let mut versions: Option<Vec<Value>> = None;
        for r in &results {
            let theirs =
                r.get("supportedVersions").and_then(Value::as_array).cloned().unwrap_or_default();
            versions = Some(match versions {
                None => theirs,
                Some(v) => v.into_iter().filter(|x| theirs.contains(x)).collect(),
            });
        }
        let caps = merged_capabilities(results.iter().filter_map(|r| r.get("capabilities")));
        self.composed(
            id,
            json!({
                "supportedVersions": versions.unwrap_or_default(),
                "capabilities": caps,
                "_meta": {"io.modelcontextprotocol/serverInfo": {"name": "palisade-virtual-server", "version": env!("CARGO_PKG_VERSION")}},
            }),
        )
    }

    async fn everywhere(&self, id: &Value, method: &str, params: Option<Value>) -> Value {
        match self.all(method, &params).await {
            Ok(_) => self.composed(id, json!({})),
            Err(e) => Aggregate::failed(id, e),
        }
    }

    /// Every page of one server's listing of `kind`.
    async fn pages(
        &self,
        server: usize,
        kind: Kind,
        params: &Option<Value>,
    ) -> Result<Vec<Value>, String> {
        let m = &self.members[server];
        let mut items = Vec::new();
        let mut p = without_cursor(params);
        for _ in 0..MAX_PAGES {
            let v = m
                .call(kind.list_method(), p.clone(), self.timeout)
                .await
                .map_err(|e| format!("server {}: {e}", self.names[server]))?;
            let Some(result) = v.get("result") else {
                let why = v.pointer("/error/message").and_then(Value::as_str).unwrap_or("an error");
                let code = v.pointer("/error/code").and_then(Value::as_i64);
                if code == Some(jsonrpc::UPSTREAM_UNAVAILABLE) {
                    return Err(format!("server {}: {why}", self.names[server]));
                }
                // The server (its gateway) refuses this user the listing: nothing of it here.
                debug!(server = %self.names[server], error = why, "a server lists nothing for this caller");
                return Ok(Vec::new());
            };
            items.extend(
                result.get(kind.key()).and_then(Value::as_array).cloned().unwrap_or_default(),
            );
            match result.get("nextCursor").and_then(Value::as_str) {
                Some(c) if !c.is_empty() => {
                    if let Some(o) = p.as_mut().and_then(Value::as_object_mut) {
                        o.insert("cursor".into(), json!(c));
                    }
                }
                _ => return Ok(items),
            }
        }
        Ok(items)
    }

    /// The combined listing of `kind` under the names clients see; remembered for routing.
    async fn list(&self, kind: Kind, params: &Option<Value>) -> Result<Vec<Value>, String> {
        let lists =
            futures::future::join_all((0..self.members.len()).map(|i| self.pages(i, kind, params)))
                .await;
        let mut per_server = Vec::with_capacity(lists.len());
        for l in lists {
            per_server.push(l?);
        }
        let mut listed = Vec::new();
        for (server, items) in per_server.iter().enumerate() {
            for item in items {
                if let Some(name) = item.get("name").and_then(Value::as_str) {
                    listed.push(Listed { server, name: name.to_string() });
                }
            }
        }
        let names = naming::expose(&self.naming, &self.prefixes, &listed);
        let mut withheld: Vec<String> =
            names.withheld.iter().map(|w| w.describe(&self.names)).collect();
        // Resources keep their URIs: two servers listing one URI cannot both be routed to.
        let mut uri_owner: HashMap<String, Vec<usize>> = HashMap::new();
        if kind == Kind::Resources {
            for (server, items) in per_server.iter().enumerate() {
                for item in items {
                    if let Some(uri) = item.get("uri").and_then(Value::as_str) {
                        uri_owner.entry(uri.to_string()).or_default().push(server);
                    }
                }
            }
            for (uri, servers) in &uri_owner {
                if servers.len() > 1 {
                    let who: Vec<&str> = servers.iter().map(|s| self.names[*s].as_str()).collect();
                    withheld.push(format!("resource {uri} is listed by {}", who.join(" and ")));
                }
            }
        }
        let mut out = Vec::new();
        let mut templates = Vec::new();
        for (server, items) in per_server.into_iter().enumerate() {
            for mut item in items {
                let Some(original) = item.get("name").and_then(Value::as_str).map(str::to_string)
                else {
                    continue;
                };
                let Some(exposed) = names.exposed_name(server, &original).map(str::to_string)
                else {
                    continue;
                };
                if let Some(uri) = item.get("uri").and_then(Value::as_str)
                    && uri_owner.get(uri).is_some_and(|s| s.len() > 1)
                {
                    continue;
                }
                if let Some(t) = item.get("uriTemplate").and_then(Value::as_str) {
                    templates.push((t.split('{').next().unwrap_or_default().to_string(), server));
                }
                item["name"] = Value::String(exposed);
                out.push(item);
            }
        }
        for w in &withheld {
            warn!(withheld = %w, "a virtual server withholds an item");
        }
        if let Ok(mut s) = self.state.lock() {
            if kind == Kind::Resources {
                s.uris = uri_owner
                    .into_iter()
                    .filter(|(_, v)| v.len() == 1)
                    .map(|(k, v)| (k, v[0]))
                    .collect();
            }
            if kind == Kind::Templates {
                s.templates = templates;
            }
            s.names.insert(kind, names);
            s.withheld.retain(|w| !withheld.contains(w));
            s.withheld.extend(withheld);
        }
        Ok(out)
    }

    /// The server and its own name for an exposed name; listed first when not known yet.
    async fn route_name(
        &self,
        kind: Kind,
        name: &str,
        params: &Option<Value>,
    ) -> Option<(usize, String)> {
        let known = |s: &Aggregate| {
            s.state.lock().ok().and_then(|st| {
                st.names.get(&kind).and_then(|n| n.route(name).map(|(i, o)| (i, o.to_string())))
            })
        };
        if let Some(r) = known(self) {
            return Some(r);
        }
        let listing = json!({"_meta": params.as_ref().and_then(|p| p.get("_meta")).cloned().unwrap_or(json!({}))});
        if let Err(e) = self.list(kind, &Some(listing)).await {
            debug!(error = %e, "listing for routing failed");
        }
        known(self)
    }

    /// The server of a resource URI (listed, or under a listed template's head).
    async fn route_uri(&self, uri: &str, params: &Option<Value>) -> Option<usize> {
        let known = |s: &Aggregate| {
            s.state.lock().ok().and_then(|st| {
                st.uris.get(uri).copied().or_else(|| {
                    let mut heads: Vec<&(String, usize)> = st
                        .templates
                        .iter()
                        .filter(|(h, _)| !h.is_empty() && uri.starts_with(h.as_str()))
                        .collect();
                    heads.sort_by_key(|(h, _)| std::cmp::Reverse(h.len()));
                    // The longest head decides; two servers with that head: no route.
                    match heads.as_slice() {
                        [a, b, ..] if a.0.len() == b.0.len() && a.1 != b.1 => None,
                        [a, ..] => Some(a.1),
                        [] => None,
                    }
                })
            })
        };
        if let Some(s) = known(self) {
            return Some(s);
        }
        let listing = json!({"_meta": params.as_ref().and_then(|p| p.get("_meta")).cloned().unwrap_or(json!({}))});
        for kind in [Kind::Resources, Kind::Templates] {
            if let Err(e) = self.list(kind, &Some(listing.clone())).await {
                debug!(error = %e, "listing for routing failed");
            }
        }
        known(self)
    }

    /// Forwards a request to one server; its messages (progress, the answer) go to the client.
    async fn forward(
        &self,
        server: usize,
        id: &Value,
        method: &str,
        params: Option<Value>,
    ) -> Option<Value> {
        let m = &self.members[server];
        let mut exchange = match m.request(id.clone(), method, params).await {
            Ok(x) => x,
            Err(e) => return Some(error(id, jsonrpc::UPSTREAM_UNAVAILABLE, e.to_string())),
        };
        while let Some(msg) = exchange.next().await {
            let last = is_final(&msg);
            if self.out.send(Ok(Arrival { msg, on_stream_of: Some(id.clone()) })).await.is_err()
                || last
            {
                return None;
            }
        }
        Some(error(
            id,
            jsonrpc::UPSTREAM_UNAVAILABLE,
            m.closed().unwrap_or(UpstreamError::Closed).to_string(),
        ))
    }
}
