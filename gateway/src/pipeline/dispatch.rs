//! The messages of an open session: it must belong to the caller; requests go through the
//! stages, notifications the revision defines are passed on, and responses reach the server
//! only for requests it actually sent.

use std::sync::Arc;

use serde_json::Value;

use super::{Call, Reply, request};
use crate::controls::authz::Principal;
use crate::gateway::Gateway;
use crate::observe::events::{self, Kind};
use crate::observe::trace::TraceContext;
use crate::protocol::jsonrpc::{self, INVALID_REQUEST, Message};
use crate::protocol::schema::{self, Direction};
use crate::session::{ClientSession, short};

/// Whether `principal` owns `session`; a stranger's attempt is a security event (the
/// transport answers as for an unknown session).
pub fn owns(
    gw: &Gateway,
    session: &ClientSession,
    principal: &Principal,
    trace: &TraceContext,
) -> bool {
    if session.principal.subject == principal.subject {
        return true;
    }
    events::emit(
        &gw.observe,
        Kind::SessionHijack,
        &trace.request_id(),
        &principal.subject,
        &format!("session {} belongs to another principal", short(&session.id)),
    );
    false
}

/// One message of a session (`None`: nothing to answer).
pub async fn message(
    gw: &Arc<Gateway>,
    session: &Arc<ClientSession>,
    value: Value,
    principal: &Principal,
    trace: &TraceContext,
) -> Option<Reply> {
    let event = |kind: Kind, detail: &str| {
        events::emit(&gw.observe, kind, &trace.request_id(), &principal.subject, detail)
    };
    let msg = match Message::parse(&value) {
        Ok(m) => m,
        Err(e) => {
            event(Kind::ValidationFailure, &e.message);
            return Some(Reply::Final(jsonrpc::error(
                e.id,
                INVALID_REQUEST,
                format!("Invalid request: {}", e.message),
                None,
            )));
        }
    };
    match msg {
        Message::Request { id, method, .. } if method == "initialize" => Some(Reply::Final(
            jsonrpc::error(Some(id), INVALID_REQUEST, "the session is already initialized", None),
        )),
        Message::Request { id, method, params } => {
            let call = Arc::new(Call::new(
                gw.clone(),
                session.rev,
                principal.clone(),
                trace,
                Some(session.clone()),
                &method,
            ));
            Some(request(call, id, method, params).await)
        }
        Message::Notification { method, params } => {
            match schema::method(&method, Direction::ClientToServer, session.rev) {
                Some(def)
                    if schema::check_params(def, params.as_ref(), session.rev, true).is_ok() =>
                {
                    let _ = session.upstream.notify(&method, params).await;
                }
                _ => event(Kind::ValidationFailure, &format!("notification {method} dropped")),
            }
            None
        }
        Message::Result { ref id, .. } | Message::Error { id: Some(ref id), .. } => {
            let known = session
                .server_requests
                .lock()
                .map(|mut p| p.remove(&id.to_string()).is_some())
                .unwrap_or(false);
            if known {
                let _ = session.upstream.respond(msg.to_value()).await;
            } else {
                event(Kind::ValidationFailure, "a response to a request the server never sent");
            }
            None
        }
        Message::Error { id: None, .. } => None,
    }
}
