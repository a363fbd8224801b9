//! Status conditions computed from what the reconciler observed. A condition keeps its
//! `lastTransitionTime` while its status does not change, so an idle reconcile produces an
//! identical status and no write.

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use palisade_crds::mcpserver::ServerInfoStatus;
use palisade_crds::mcpserver::conditions::{
    GATEWAY_READY, IMAGE_VERIFIED, POLICY_COMPLIANT, READY, TOOLS_VERIFIED,
};
use serde_json::Value;

use crate::gateways::Report;
use crate::registry::Verification;

/// Why the operator did not (or could not) apply the current spec.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Blocker {
    PolicyViolation(String),
    ImageResolution(String),
    /// The image's signature did not verify: nothing of the new spec runs.
    ImageNotVerified(String),
    /// A policy requires a signed SBOM and none verified: nothing of the new spec runs.
    SbomNotVerified(String),
    /// The SBOM lists a component with an advisory: the server is scaled to zero.
    Vulnerable(String),
    Render(String),
}

impl Blocker {
    fn reason(&self) -> &'static str {
        match self {
            Blocker::PolicyViolation(_) => "PolicyViolation",
            Blocker::ImageResolution(_) => "ImageResolutionFailed",
            Blocker::ImageNotVerified(_) => "ImageNotVerified",
            Blocker::SbomNotVerified(_) => "SbomNotVerified",
            Blocker::Vulnerable(_) => "VulnerableComponent",
            Blocker::Render(_) => "RenderFailed",
        }
    }

    fn message(&self) -> &str {
        match self {
            Blocker::PolicyViolation(m)
            | Blocker::ImageResolution(m)
            | Blocker::ImageNotVerified(m)
            | Blocker::SbomNotVerified(m)
            | Blocker::Vulnerable(m)
            | Blocker::Render(m) => m,
        }
    }
}

pub struct Observed<'a> {
    pub generation: i64,
    pub desired_replicas: i32,
    /// `None` when the spec complies with every selecting policy.
    pub policy_violation: Option<String>,
    pub blocker: Option<Blocker>,
    pub verification: Option<&'a Verification>,
    pub deployment: Option<&'a Deployment>,
    /// What the ready gateways said (`None`: none was asked).
    pub gateways: Option<&'a Report>,
}

/// A condition, keeping its last transition time while its status stays the same.
pub(crate) fn condition(
    prev: &[Condition],
    type_: &str,
    status: &str,
    reason: &str,
    message: String,
    generation: i64,
) -> Condition {
    let last = prev
        .iter()
        .find(|c| c.type_ == type_ && c.status == status)
        .map(|c| c.last_transition_time.clone())
        .unwrap_or_else(|| Time(k8s_openapi::jiff::Timestamp::now()));
    Condition {
        type_: type_.to_string(),
        status: status.to_string(),
        reason: reason.to_string(),
        message,
        observed_generation: Some(generation),
        last_transition_time: last,
    }
}

/// Replicas that are available and updated to the current template, if the controller has
/// observed the current Deployment generation.
fn available(d: &Deployment) -> Option<(i32, i32)> {
    let status = d.status.as_ref()?;
    let observed = status.observed_generation.unwrap_or(0) >= d.metadata.generation.unwrap_or(0);
    if !observed {
        return None;
    }
    let updated = status.updated_replicas.unwrap_or(0);
    let available = status.available_replicas.unwrap_or(0);
    Some((available.min(updated), status.ready_replicas.unwrap_or(0)))
}

pub fn conditions(prev: &[Condition], o: &Observed) -> Vec<Condition> {
    let g = o.generation;
    let mut out = Vec::new();

    out.push(match &o.policy_violation {
        None => condition(
            prev,
            POLICY_COMPLIANT,
            "True",
            "Compliant",
            "the spec meets the baseline and every MCPPolicy that selects this namespace".into(),
            g,
        ),
        Some(m) => condition(
            prev,
            POLICY_COMPLIANT,
            "False",
            "PolicyViolation",
            format!("the current spec is not applied: {m}"),
            g,
        ),
    });

    out.push(match o.verification {
        Some(Verification::Verified { by }) => condition(
            prev,
            IMAGE_VERIFIED,
            "True",
            "SignatureVerified",
            format!("signature verified by {by}"),
            g,
        ),
        Some(Verification::Failed { reason, message }) => {
            condition(prev, IMAGE_VERIFIED, "False", reason, message.clone(), g)
        }
        Some(Verification::NotChecked { reason, message }) => {
            condition(prev, IMAGE_VERIFIED, "Unknown", reason, message.clone(), g)
        }
        None => condition(
            prev,
            IMAGE_VERIFIED,
            "Unknown",
            "ImageNotResolved",
            "the image digest is not known yet".into(),
            g,
        ),
    });

    let replicas = o.deployment.and_then(available);
    let gateway = match replicas {
        Some((_, ready)) if ready > 0 => condition(
            prev,
            GATEWAY_READY,
            "True",
            "HandshakeCompleted",
            format!(
                "{ready} gateway(s) passed readiness, which requires a protocol handshake with the server"
            ),
            g,
        ),
        _ if o.desired_replicas == 0 => {
            condition(prev, GATEWAY_READY, "False", "ScaledToZero", "spec.replicas is 0".into(), g)
        }
        _ => condition(
            prev,
            GATEWAY_READY,
            "False",
            "WaitingForGateway",
            "no gateway has passed readiness yet (it needs a protocol handshake with the server)"
                .into(),
            g,
        ),
    };
    out.push(gateway);

    let ready = match (&o.blocker, replicas) {
        (Some(b), _) => condition(prev, READY, "False", b.reason(), b.message().to_string(), g),
        (None, _) if o.desired_replicas == 0 => {
            condition(prev, READY, "False", "ScaledToZero", "spec.replicas is 0".into(), g)
        }
        (None, Some((avail, _))) if avail >= o.desired_replicas => condition(
            prev,
            READY,
            "True",
            "Available",
            format!("{avail}/{} replicas available", o.desired_replicas),
            g,
        ),
        (None, Some((avail, _))) => condition(
            prev,
            READY,
            "False",
            "Progressing",
            format!("{avail}/{} replicas available", o.desired_replicas),
            g,
        ),
        (None, None) => condition(
            prev,
            READY,
            "False",
            "Progressing",
            "waiting for the Deployment to roll out".into(),
            g,
        ),
    };
    out.push(ready);
    out.push(tools_verified(prev, o.gateways, g));
    out
}

/// The longest condition message about tool definitions (the gateways' `/status` has them all).
const TOOLS_MESSAGE_CHARS: usize = 1000;

/// Whether the gateways withhold tool definitions (a pin that no longer matches, screening).
fn tools_verified(prev: &[Condition], report: Option<&Report>, g: i64) -> Condition {
    let answers = match report {
        None | Some(Report::NoneReady) => {
            return condition(
                prev,
                TOOLS_VERIFIED,
                "Unknown",
                "NoGatewayReady",
                "no ready gateway to ask about the server's tool definitions".into(),
                g,
            );
        }
        Some(Report::Unreachable(e)) => {
            return condition(
                prev,
                TOOLS_VERIFIED,
                "Unknown",
                "GatewayUnreachable",
                format!("the gateways' admin port did not answer: {e}"),
                g,
            );
        }
        Some(Report::Answered(a)) => a,
    };
    // Every replica's verdicts, once per tool (a withheld verdict wins).
    let mut withheld: Vec<String> = Vec::new();
    let mut flagged: Vec<String> = Vec::new();
    for t in answers.iter().filter_map(|a| a.get("tools")).filter_map(Value::as_array).flatten() {
        let name = t.get("name").and_then(Value::as_str).unwrap_or("?");
        let reason = t.get("reason").and_then(Value::as_str).unwrap_or("withheld");
        let line = format!("tool {name}: {reason}");
        let is_withheld = t.get("withheld").and_then(Value::as_bool).unwrap_or(true);
        let known = |l: &Vec<String>| l.iter().any(|x| x.starts_with(&format!("tool {name}: ")));
        if is_withheld && !known(&withheld) {
            flagged.retain(|x| !x.starts_with(&format!("tool {name}: ")));
            withheld.push(line);
        } else if !is_withheld && !known(&withheld) && !known(&flagged) {
            flagged.push(line);
        }
    }
    let bounded = |l: &[String]| {
        let m = l.join("; ");
        if m.chars().count() > TOOLS_MESSAGE_CHARS {
            format!(
                "{}... (see the gateway's /status)",
                m.chars().take(TOOLS_MESSAGE_CHARS).collect::<String>()
            )
        } else {
            m
        }
    };
    if !withheld.is_empty() {
        let m = format!("the gateways withhold {} tool(s): {}", withheld.len(), bounded(&withheld));
        return condition(prev, TOOLS_VERIFIED, "False", "ToolDefinitionsWithheld", m, g);
    }
    if !flagged.is_empty() {
        let m = format!("screening warnings: {}", bounded(&flagged));
        return condition(prev, TOOLS_VERIFIED, "True", "ScreeningWarnings", m, g);
    }
    condition(
        prev,
        TOOLS_VERIFIED,
        "True",
        "DefinitionsVerified",
        format!(
            "{} gateway(s) asked: every tool definition matches its pin and passes screening",
            answers.len()
        ),
        g,
    )
}

/// The handshake summary of the first gateway that answered.
pub fn server_info(report: Option<&Report>) -> Option<ServerInfoStatus> {
    let Some(Report::Answered(answers)) = report else { return None };
    let a = answers.first()?;
    let text = |p: &str| a.pointer(p).and_then(Value::as_str).map(str::to_string);
    Some(ServerInfoStatus {
        name: text("/server/name"),
        version: text("/server/version"),
        protocol_version: text("/protocolVersion"),
        tool_count: a.get("toolCount").and_then(Value::as_u64).and_then(|n| u32::try_from(n).ok()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::apps::v1::DeploymentStatus;

    fn deployment(available: i32, ready: i32) -> Deployment {
        let mut d = Deployment::default();
        d.metadata.generation = Some(2);
        d.status = Some(DeploymentStatus {
            observed_generation: Some(2),
            updated_replicas: Some(available),
            available_replicas: Some(available),
            ready_replicas: Some(ready),
            ..Default::default()
        });
        d
    }

    fn get<'a>(c: &'a [Condition], t: &str) -> &'a Condition {
        c.iter().find(|x| x.type_ == t).unwrap()
    }

    #[test]
    fn ready_follows_the_deployment_and_blockers() {
        let d = deployment(2, 2);
        let verification = Verification::NotChecked {
            reason: "VerificationNotAvailable".into(),
            message: "m".into(),
        };
        let o = Observed {
            generation: 3,
            desired_replicas: 2,
            policy_violation: None,
            blocker: None,
            verification: Some(&verification),
            deployment: Some(&d),
            gateways: None,
        };
        let c = conditions(&[], &o);
        assert_eq!(get(&c, READY).status, "True");
        assert_eq!(get(&c, GATEWAY_READY).status, "True");
        assert_eq!(get(&c, IMAGE_VERIFIED).status, "Unknown", "never True without verification");
        assert_eq!(get(&c, READY).observed_generation, Some(3));

        let partial = deployment(1, 1);
        let o = Observed { deployment: Some(&partial), ..o };
        assert_eq!(get(&conditions(&[], &o), READY).reason, "Progressing");

        let o = Observed {
            blocker: Some(Blocker::PolicyViolation("x".into())),
            policy_violation: Some("x".into()),
            ..o
        };
        let c = conditions(&[], &o);
        assert_eq!(get(&c, READY).reason, "PolicyViolation");
        assert_eq!(get(&c, POLICY_COMPLIANT).status, "False");
    }

    #[test]
    fn transition_time_is_kept_while_status_is_unchanged() {
        let d = deployment(1, 1);
        let o = Observed {
            generation: 1,
            desired_replicas: 1,
            policy_violation: None,
            blocker: None,
            verification: None,
            deployment: Some(&d),
            gateways: None,
        };
        let mut first = conditions(&[], &o);
        let old = Time(k8s_openapi::jiff::Timestamp::UNIX_EPOCH);
        for c in &mut first {
            c.last_transition_time = old.clone();
        }
        let second = conditions(&first, &o);
        assert_eq!(first, second);
        let none = Observed { deployment: None, ..o };
        let third = conditions(&first, &none);
        assert_ne!(get(&third, READY).last_transition_time, old);
    }

    #[test]
    fn tools_verified_names_what_the_gateways_withhold() {
        use serde_json::json;
        let c = tools_verified(&[], None, 1);
        assert_eq!((c.status.as_str(), c.reason.as_str()), ("Unknown", "NoGatewayReady"));
        let c = tools_verified(&[], Some(&Report::Unreachable("timed out".into())), 1);
        assert_eq!((c.status.as_str(), c.reason.as_str()), ("Unknown", "GatewayUnreachable"));
        let clean = Report::Answered(vec![json!({"tools": [], "toolCount": 2})]);
        let c = tools_verified(&[], Some(&clean), 1);
        assert_eq!((c.status.as_str(), c.reason.as_str()), ("True", "DefinitionsVerified"));
        let changed = json!({"name": "get_weather", "withheld": true,
            "reason": "definition differs from its pin (changed: description; pinned a, live b)"});
        let warned = json!({"name": "add", "withheld": false, "reason": "screening: links at /description: https://x"});
        // Two replicas: one sees the change, the other only the warning.
        let report =
            Report::Answered(vec![json!({"tools": [warned]}), json!({"tools": [changed, warned]})]);
        let c = tools_verified(&[], Some(&report), 1);
        assert_eq!((c.status.as_str(), c.reason.as_str()), ("False", "ToolDefinitionsWithheld"));
        assert_eq!(
            c.message,
            "the gateways withhold 1 tool(s): tool get_weather: definition differs from its pin (changed: description; pinned a, live b)"
        );
        let only_warned = Report::Answered(vec![json!({"tools": [warned]})]);
        let c = tools_verified(&[], Some(&only_warned), 1);
        assert_eq!((c.status.as_str(), c.reason.as_str()), ("True", "ScreeningWarnings"));
    }
}
