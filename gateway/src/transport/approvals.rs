//! The approvals API: a principal lists and sees its own plans, an approver lists and sees
//! every plan and approves or denies one exact plan, named by ID and hash (`palisade
//! approvals` is a client of it). Every decision is audited with
//! what was approved (credentials redacted).

use axum::body::Bytes;
use axum::extract::{Extension, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::Response;
use serde_json::{Value, json};
use tracing::info;

use super::encode::{api_refusal, json_response, plain};
use super::{App, trace_of};
use crate::controls::authz::Principal;
use crate::controls::mediate::redacted;
use crate::observe::events::{self, Kind};
use crate::session::short;
use crate::state::ApprovalError;

/// The answer when the approvals cannot be read or changed.
fn store_refusal(e: &ApprovalError) -> Option<Response> {
    (*e == ApprovalError::Unavailable).then(|| {
        let mut r = api_refusal(StatusCode::SERVICE_UNAVAILABLE, e.to_string());
        r.headers_mut().insert(header::RETRY_AFTER, header::HeaderValue::from_static("5"));
        r
    })
}

/// Plans that have not expired: every plan for an approver, a principal's own otherwise.
pub(super) async fn list(
    State(app): State<App>,
    Extension(principal): Extension<Principal>,
) -> Response {
    let approver = app.gw.authz.is_approver(&principal);
    let whose = (!approver).then_some(principal.subject.as_str());
    match app.gw.state.approvals.list(whose).await {
        Ok(plans) => {
            let views: Vec<Value> = plans.iter().map(|p| p.view()).collect();
            json_response(200, &json!({"approvals": views}), &[])
        }
        Err(e) => {
            store_refusal(&e).unwrap_or_else(|| api_refusal(StatusCode::CONFLICT, e.to_string()))
        }
    }
}

/// A plan, for approvers (and for the principal who asked).
pub(super) async fn get(
    State(app): State<App>,
    Extension(principal): Extension<Principal>,
    axum::extract::Path(id): axum::extract::Path<String>,
) -> Response {
    match app.gw.state.approvals.get(&id).await {
        Ok(Some(p)) if p.requester == principal.subject || app.gw.authz.is_approver(&principal) => {
            json_response(200, &p.view(), &[])
        }
        Ok(_) => plain(StatusCode::NOT_FOUND, "no such approval"),
        Err(e) => {
            store_refusal(&e).unwrap_or_else(|| plain(StatusCode::NOT_FOUND, "no such approval"))
        }
    }
}

#[derive(serde::Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct ApprovalDecision {
    plan_hash: String,
    approve: bool,
}

/// An approver approves (or denies) one exact plan, named by ID and hash.
pub(super) async fn decide(
    State(app): State<App>,
    Extension(principal): Extension<Principal>,
    h: HeaderMap,
    axum::extract::Path(id): axum::extract::Path<String>,
    body: Bytes,
) -> Response {
    let trace = trace_of(&h);
    if !app.gw.authz.is_approver(&principal) {
        events::emit(
            &app.gw.observe,
            Kind::PolicyBlock,
            &trace.request_id(),
            &principal.subject,
            "approval decision by a principal without the approver role",
        );
        return plain(StatusCode::FORBIDDEN, "approver role required");
    }
    let Ok(d) = serde_json::from_slice::<ApprovalDecision>(&body) else {
        return plain(
            StatusCode::BAD_REQUEST,
            "body must be {\"planHash\": \"...\", \"approve\": true|false}",
        );
    };
    match app.gw.state.approvals.decide(&id, &d.plan_hash, &principal.subject, d.approve).await {
        Ok(plan) => {
            app.gw.observe.audit.record(
                "approval",
                json!({
                    "request_id": trace.request_id(),
                    "approval_id": plan.id,
                    "plan_hash": plan.hash,
                    "tool": plan.tool,
                    "requester": plan.requester,
                    "approver": principal.subject,
                    "decision": if d.approve { "approved" } else { "denied" },
                    // What was approved, as the approver saw it (credentials redacted).
                    "arguments": redacted(&Value::Object(plan.arguments.clone())),
                    "preview": plan.preview.as_ref().map(redacted),
                }),
            );
            info!(approval = %short(&plan.id), tool = %plan.tool, approver = %principal.subject, approve = d.approve, "approval decided");
            json_response(200, &plan.view(), &[])
        }
        Err(e) => {
            if let Some(r) = store_refusal(&e) {
                return r;
            }
            let status = match e {
                ApprovalError::Unknown(_) => StatusCode::NOT_FOUND,
                ApprovalError::SelfApproval => StatusCode::FORBIDDEN,
                _ => StatusCode::CONFLICT,
            };
            api_refusal(status, e.to_string())
        }
    }
}
