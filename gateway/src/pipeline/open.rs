//! Opening a session of the session era: the client's `initialize` is checked against the
//! pinned revisions and its schema, goes to a fresh connection to the server, and the
//! server's answer must agree to a pinned revision; the session is then registered (and
//! recorded for the other replicas, when they share a store) and the messages the server
//! starts on its own are checked and mediated on their way to the client. Finding a session
//! resumes, on this replica, one that another replica opened.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use serde_json::{Value, json};
use tokio::sync::mpsc;
use tracing::{info, warn};

use super::Refusal;
use crate::controls::authz::Principal;
use crate::controls::mediate;
use crate::gateway::Gateway;
use crate::observe::audit::CallRecord;
use crate::observe::events::{self, Kind};
use crate::observe::trace::TraceContext;
use crate::protocol::jsonrpc::{
    INVALID_PARAMS, INVALID_REQUEST, LIMIT_EXCEEDED, Message, UPSTREAM_INVALID,
    UPSTREAM_UNAVAILABLE,
};
use crate::protocol::revision::Rev;
use crate::protocol::schema::{self, Direction, Method};
use crate::protocol::translate::without_tasks;
use crate::session::{ClientSession, short};
use crate::state::SessionRecord;
use crate::upstream::Connection;

/// What the client asked to open.
pub struct Opening {
    pub id: Value,
    pub params: Option<Value>,
    pub principal: Principal,
    pub trace: TraceContext,
    pub session_id: String,
    /// The stream the session's messages go to, when the transport has one already (legacy
    /// SSE); Streamable HTTP attaches it later with GET.
    pub stream: Option<mpsc::Sender<(u64, String)>>,
}

/// Opens a session; the answer is the `initialize` response for the client.
pub async fn open(gw: &Arc<Gateway>, o: Opening) -> Result<(Arc<ClientSession>, Value), Refusal> {
    let Opening { id, params, principal, trace, session_id, stream } = o;
    let event = |kind: Kind, detail: &str| {
        events::emit(&gw.observe, kind, &trace.request_id(), &principal.subject, detail)
    };
    let requested = params
        .as_ref()
        .and_then(|p| p.get("protocolVersion"))
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string();
    let allowed: Vec<Rev> = gw.allowed().into_iter().filter(|r| !r.stateless()).collect();
    let Some(rev) = Rev::parse(&requested).filter(|r| allowed.contains(r)) else {
        let supported = gw.supported_on(false);
        return Err(Refusal::new(
            400,
            Some(id),
            INVALID_PARAMS,
            "Unsupported protocol version",
            Some(json!({"supported": supported, "requested": requested})),
        ));
    };
    let Some(def) = schema::method("initialize", Direction::ClientToServer, rev) else {
        return Err(Refusal::new(
            400,
            Some(id),
            INVALID_REQUEST,
            "initialize is not part of this revision",
            None,
        ));
    };
    if let Err(e) = schema::check_params(def, params.as_ref(), rev, true) {
        event(Kind::ValidationFailure, &format!("initialize: {e}"));
        return Err(Refusal::new(
            400,
            Some(id),
            INVALID_PARAMS,
            format!("Invalid params: {e}"),
            None,
        ));
    }
    let mut params = params;
    if let Some(p) = params.as_mut() {
        without_tasks(p);
    }
    let (upstream, result) = match handshake(gw, rev, &principal, params.clone(), def).await {
        Ok(done) => done,
        Err(Failed::Unavailable) => {
            return Err(Refusal::new(
                200,
                Some(id),
                UPSTREAM_UNAVAILABLE,
                "The MCP server is unavailable",
                None,
            ));
        }
        Err(Failed::Refused(mut e)) => {
            e["id"] = id;
            mediate::error(&mut e);
            return Err(Refusal { status: 200, message: e });
        }
        Err(Failed::Invalid(why)) => {
            event(Kind::UpstreamValidationFailure, &format!("initialize: {why}"));
            return Err(Refusal::new(
                200,
                Some(id),
                UPSTREAM_INVALID,
                "The MCP server sent an invalid response",
                None,
            ));
        }
    };
    // The server must agree to a pinned revision; anything else fails closed.
    let agreed = result.get("protocolVersion").and_then(Value::as_str).and_then(Rev::parse);
    let session_rev = match agreed {
        Some(a) if allowed.contains(&a) && a <= rev => a,
        _ => {
            upstream.close().await;
            return Err(Refusal::new(
                200,
                Some(id),
                UPSTREAM_INVALID,
                format!(
                    "The MCP server does not speak {requested}; no pinned revision is available"
                ),
                None,
            ));
        }
    };
    upstream.pipe().set_protocol_version(session_rev.as_str());
    let per_session = gw.config().limits.max_in_flight_per_session as usize;
    let session = Arc::new(ClientSession::new(
        session_id,
        session_rev,
        upstream.clone(),
        principal.clone(),
        per_session,
        stream,
    ));
    if !gw.insert_session(session.clone()) {
        upstream.close().await;
        return Err(Refusal::new(
            503,
            Some(id),
            LIMIT_EXCEEDED,
            "Too many sessions",
            Some(json!({"retryAfterSeconds": 30})),
        ));
    }
    relay_unsolicited(gw, &session);
    info!(session = %short(&session.id), revision = session_rev.as_str(), principal = %principal.subject, "session opened");
    let request_id = trace.request_id();
    CallRecord {
        request_id: &request_id,
        principal: &principal.subject,
        session: Some(short(&session.id)),
        revision: session_rev.as_str(),
        method: "initialize",
        decision: "allow",
        ..CallRecord::default()
    }
    .write(&gw.observe.audit);
    // Other replicas resume the session from its record, replaying this initialize.
    if let Some(p) = params.as_mut().and_then(Value::as_object_mut) {
        p.insert("protocolVersion".into(), Value::String(session_rev.as_str().into()));
    }
    record(gw, &session, params).await;
    let mut result = result;
    without_tasks(&mut result);
    mediate::listing(&mut result);
    if let Some(obj) = result.as_object_mut() {
        obj.insert("protocolVersion".into(), Value::String(session_rev.as_str().into()));
    }
    Ok((session, json!({"jsonrpc": "2.0", "id": id, "result": result})))
}

/// Why a handshake with the server did not give a session.
enum Failed {
    Unavailable,
    /// The server answered `initialize` with an error (the message, as it sent it).
    Refused(Value),
    Invalid(String),
}

/// A new connection to the server, initialized with the client's `params` at `rev`: the
/// connection and the server's result (checked against the revision's schema).
async fn handshake(
    gw: &Gateway,
    rev: Rev,
    principal: &Principal,
    params: Option<Value>,
    def: &Method,
) -> Result<(Arc<Connection>, Value), Failed> {
    let upstream = gw.open_upstream(rev, principal).await.map_err(|_| Failed::Unavailable)?;
    let timeout = Duration::from_secs(u64::from(gw.config().limits.request_timeout_seconds));
    let answer = match upstream.call("initialize", params, timeout).await {
        Ok(a) => a,
        Err(_) => {
            upstream.close().await;
            return Err(Failed::Unavailable);
        }
    };
    let Some(result) = answer.get("result") else {
        upstream.close().await;
        return Err(Failed::Refused(answer));
    };
    if let Err(e) = schema::check_result(def, result, rev, true) {
        upstream.close().await;
        return Err(Failed::Invalid(e.to_string()));
    }
    Ok((upstream, result.clone()))
}

/// Records a session for the other replicas (when they share a store); a store that cannot be
/// reached leaves the session to this replica.
async fn record(gw: &Gateway, session: &ClientSession, initialize: Option<Value>) {
    let Some(store) = gw.state.sessions.as_ref() else { return };
    let rec = SessionRecord {
        principal: session.principal.subject.clone(),
        revision: session.rev.as_str().to_string(),
        initialize,
    };
    if store.put(&session.id, &rec, gw.idle_timeout()).await.is_err() {
        warn!(session = %short(&session.id), "state store unavailable: the session is known to this replica only");
    }
}

/// The session `id` for `principal`: this replica's, or one another replica opened, resumed
/// here with a new connection to this replica's server (its `initialize` replayed). `None`
/// when there is no such session for this principal (a stranger's attempt is a security
/// event); the transport answers 404, as for an unknown session.
pub async fn find(
    gw: &Arc<Gateway>,
    id: &str,
    principal: &Principal,
    trace: &TraceContext,
) -> Option<Arc<ClientSession>> {
    if let Some(s) = gw.session(id) {
        return gw.keep(&s).await.then_some(s);
    }
    let store = gw.state.sessions.as_ref()?;
    // One resumption at a time on this replica: a second request for the same session finds
    // the first one's result.
    let _one = gw.resuming.lock().await;
    if let Some(s) = gw.session(id) {
        return Some(s);
    }
    let record = store.get(id).await.ok()??;
    if record.principal != principal.subject {
        events::emit(
            &gw.observe,
            Kind::SessionHijack,
            &trace.request_id(),
            &principal.subject,
            &format!("session {} belongs to another principal", short(id)),
        );
        return None;
    }
    let rev =
        Rev::parse(&record.revision).filter(|r| !r.stateless() && gw.allowed().contains(r))?;
    let def = schema::method("initialize", Direction::ClientToServer, rev)?;
    let (upstream, result) =
        handshake(gw, rev, principal, record.initialize.clone(), def).await.ok()?;
    let agreed = result.get("protocolVersion").and_then(Value::as_str).and_then(Rev::parse);
    if agreed != Some(rev) {
        upstream.close().await;
        warn!(session = %short(id), "the server did not agree to the session's revision again; not resumed");
        return None;
    }
    upstream.pipe().set_protocol_version(rev.as_str());
    if upstream.notify("notifications/initialized", None).await.is_err() {
        upstream.close().await;
        return None;
    }
    let per_session = gw.config().limits.max_in_flight_per_session as usize;
    let session = Arc::new(ClientSession::new(
        id.to_string(),
        rev,
        upstream.clone(),
        principal.clone(),
        per_session,
        None,
    ));
    if !gw.insert_session(session.clone()) {
        upstream.close().await;
        return None;
    }
    relay_unsolicited(gw, &session);
    info!(session = %short(id), revision = rev.as_str(), principal = %principal.subject, "session resumed from another replica");
    gw.keep(&session).await.then_some(session)
}

/// Messages the server starts (notifications, sampling, elicitation) go to the session's
/// stream after validation and mediation.
fn relay_unsolicited(gw: &Arc<Gateway>, session: &Arc<ClientSession>) {
    let (tx, mut rx) = mpsc::channel::<Value>(64);
    session.upstream.set_unsolicited(tx);
    // The task must not keep the session alive: the session holds the connection, whose
    // routing holds `tx`, so a strong reference here would be a cycle that outlives the
    // session (a closed session's connection and tasks never freed). Once the session is
    // dropped, its connection goes, `tx` with it, and this task ends.
    let (gw, weak) = (gw.clone(), Arc::downgrade(session));
    tokio::spawn(async move {
        while let Some(mut m) = rx.recv().await {
            let Some(s) = weak.upgrade() else { break };
            if s.ended.load(Ordering::Relaxed) {
                break;
            }
            match server_message_ok(&s, &m) {
                Ok(()) => {
                    // Log lines, progress, sampling and elicitation requests: server text.
                    mediate::server_message(&mut m);
                    s.deliver(&m)
                }
                Err(why) => events::emit(
                    &gw.observe,
                    Kind::UpstreamValidationFailure,
                    "-",
                    &s.principal.subject,
                    &why,
                ),
            }
        }
    });
}

/// A message the server sends on its own must be a request or notification its revision
/// defines, with valid params.
fn server_message_ok(s: &ClientSession, m: &Value) -> Result<(), String> {
    let msg = Message::parse(m).map_err(|e| format!("malformed server message: {}", e.message))?;
    let method = msg.method().ok_or("a stray response from the server")?.to_string();
    let def = schema::method(&method, Direction::ServerToClient, s.rev)
        .ok_or_else(|| format!("the server sent {method}, undefined in {}", s.rev.as_str()))?;
    schema::check_params(def, m.get("params"), s.rev, true).map_err(|e| format!("{method}: {e}"))
}
