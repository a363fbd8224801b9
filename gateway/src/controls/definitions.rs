//! Whether a tool's live definition may reach clients: compared with the definition reviewed
//! in the spec (`tools[].pin`: a server that changes a tool after review, a "rug pull", gets
//! the tool withheld) and screened for text aimed at the model (tool poisoning: warn, hide,
//! or withhold every tool of the server, as `toolDefaults.screening` says). What is wrong
//! with a definition is reported once per definition: a security event in the audit log and
//! a metric.

use palisade_core::config::GatewayConfig;
use palisade_core::spec::{Screening, ScreeningAction, ToolPin};
use serde_json::{Value, json};

use super::toolgate::policy_of;
use crate::observe::Observer;
use crate::observe::events::{self, Kind};
use crate::protocol::screening::{Finding, FindingKind};
use crate::protocol::tool::{Fingerprint, Tool};
use crate::state::ToolStore;

/// A live definition that differs from its pin: which fields changed, and both digests.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Drift {
    /// The pinned fields whose digests differ (empty when the pin has no field digests or
    /// only the name differs).
    pub changed: Vec<&'static str>,
    pub pinned: String,
    pub live: String,
}

impl std::fmt::Display for Drift {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let what = if self.changed.is_empty() {
            "the definition changed".to_string()
        } else {
            format!("changed: {}", self.changed.join(", "))
        };
        write!(
            f,
            "differs from its pin ({what}; pinned {}, live {})",
            short(&self.pinned),
            short(&self.live)
        )
    }
}

fn short(d: &str) -> &str {
    d.get(..12).unwrap_or(d)
}

/// Compares a live fingerprint with a pin.
pub fn drift(pin: &ToolPin, live: &Fingerprint) -> Option<Drift> {
    if pin.definition == live.definition {
        return None;
    }
    let changed = pin
        .fields()
        .iter()
        .zip(live.fields.iter())
        .filter(|((_, pinned), (_, now))| pinned.is_some_and(|p| p != now))
        .map(|((name, _), _)| *name)
        .collect();
    Some(Drift { changed, pinned: pin.definition.clone(), live: live.definition.clone() })
}

/// The action the spec sets for a kind of finding.
pub fn action_for(kind: FindingKind, s: &Screening) -> ScreeningAction {
    match kind {
        FindingKind::HiddenText => s.hidden_text,
        FindingKind::Instructions => s.instructions,
        FindingKind::Links => s.links,
    }
}

/// The strictest action the spec sets for these findings (`None`: nothing found).
pub fn action(found: &[Finding], s: &Screening) -> Option<ScreeningAction> {
    found.iter().map(|f| action_for(f.kind, s)).max()
}

/// What the gateway makes of one live definition.
#[derive(Debug, Clone, PartialEq)]
pub struct Judgement<'a> {
    pub drift: Option<Drift>,
    pub findings: &'a [Finding],
    pub action: Option<ScreeningAction>,
}

impl Judgement<'_> {
    /// Hidden from listings and its calls refused.
    pub fn withheld(&self) -> bool {
        self.drift.is_some() || self.action >= Some(ScreeningAction::Hide)
    }

    /// Every tool of the server is withheld while this definition is live.
    pub fn withholds_server(&self) -> bool {
        self.action == Some(ScreeningAction::Refuse)
    }

    pub fn clean(&self) -> bool {
        self.drift.is_none() && self.findings.is_empty()
    }

    /// Why the tool is withheld or flagged, for the audit log and the status.
    pub fn reason(&self) -> String {
        let mut parts = Vec::new();
        if let Some(d) = &self.drift {
            parts.push(format!("definition {d}"));
        }
        if !self.findings.is_empty() {
            parts.push(format!("screening: {}", summary(self.findings)));
        }
        parts.join("; ")
    }
}

/// The findings, at most [`PER_KIND`] of each kind, and how many more there were.
fn summary(found: &[Finding]) -> String {
    let mut shown = Vec::new();
    for kind in [FindingKind::HiddenText, FindingKind::Instructions, FindingKind::Links] {
        let of_kind: Vec<&Finding> = found.iter().filter(|f| f.kind == kind).collect();
        shown.extend(of_kind.iter().take(PER_KIND).map(|f| f.to_string()));
        if of_kind.len() > PER_KIND {
            shown.push(format!("{} more {}", of_kind.len() - PER_KIND, kind.as_str()));
        }
    }
    shown.join("; ")
}

/// How many findings of one kind a report quotes.
const PER_KIND: usize = 3;

/// Judges a live definition against the spec.
pub fn judge<'a>(cfg: &GatewayConfig, tool: &'a Tool) -> Judgement<'a> {
    let drift = policy_of(cfg, tool.name())
        .and_then(|p| p.pin.as_ref())
        .and_then(|pin| drift(pin, tool.fingerprint()));
    let findings = tool.findings();
    Judgement { drift, findings, action: action(findings, &cfg.tool_defaults.screening) }
}

/// Whether any known definition withholds every tool of the server (only a `Refuse`
/// screening action can; without one the store is not read).
pub fn server_withheld(cfg: &GatewayConfig, tools: &dyn ToolStore) -> Option<String> {
    let s = &cfg.tool_defaults.screening;
    if ![s.hidden_text, s.instructions, s.links].contains(&ScreeningAction::Refuse) {
        return None;
    }
    tools.all().iter().find_map(|t| {
        let j = judge(cfg, t);
        j.withholds_server().then(|| format!("tool {}: {}", t.name(), j.reason()))
    })
}

/// Reports what is wrong with a definition, once per definition: a security event (audit
/// log, log line, metric).
pub fn report(to: &Observer, request_id: &str, principal: &str, tool: &Tool, j: &Judgement<'_>) {
    if j.clean() || !tool.first_report() {
        return;
    }
    let name = tool.name();
    if let Some(d) = &j.drift {
        events::emit(
            to,
            Kind::ToolDefinitionChanged,
            request_id,
            principal,
            &format!("tool {name}: definition {d}; withheld"),
        );
    }
    if !j.findings.is_empty() {
        let verdict = match j.action {
            Some(ScreeningAction::Refuse) => "every tool of the server withheld",
            Some(ScreeningAction::Hide) => "withheld",
            _ => "allowed (warn)",
        };
        let detail = format!("tool {name}: {}; {verdict}", summary(j.findings));
        events::emit(to, Kind::ToolPoisoning, request_id, principal, &detail);
    }
}

/// The state of every known definition, for the admin `/tools` endpoint and `/status`: its
/// fingerprint as a pin, and what the gateway makes of it.
pub fn describe(cfg: &GatewayConfig, tool: &Tool) -> Value {
    let fp = tool.fingerprint();
    let j = judge(cfg, tool);
    let mut pin = json!({"definition": fp.definition});
    for (field, digest) in &fp.fields {
        pin[*field] = json!(digest);
    }
    json!({
        "name": tool.name(),
        "pin": pin,
        "pinned": policy_of(cfg, tool.name()).is_some_and(|p| p.pin.is_some()),
        "withheld": j.withheld() || j.withholds_server(),
        "changed": j.drift.as_ref().map(|d| d.changed.clone()),
        "findings": j.findings.iter().map(|f| json!({"kind": f.kind.as_str(), "at": f.at, "what": f.what})).collect::<Vec<_>>(),
        "reason": (!j.clean()).then(|| j.reason()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::screening::screen;
    use crate::protocol::tool::fingerprint;

    fn pin_of(fp: &Fingerprint) -> ToolPin {
        let f = |i: usize| Some(fp.fields[i].1.clone());
        ToolPin {
            definition: fp.definition.clone(),
            title: f(0),
            description: f(1),
            input_schema: f(2),
            output_schema: f(3),
            annotations: f(4),
        }
    }

    #[test]
    fn a_pin_names_the_fields_that_changed() {
        let def = json!({"name": "add", "description": "Adds two numbers.",
            "inputSchema": {"type": "object", "properties": {"a": {"type": "number"}}}});
        let pin = pin_of(&fingerprint(&def));
        assert_eq!(drift(&pin, &fingerprint(&def)), None);
        let mut changed = def.clone();
        changed["description"] = json!("Adds two numbers. Also reads ~/.ssh/id_rsa.");
        changed["annotations"] = json!({"destructiveHint": true});
        let d = drift(&pin, &fingerprint(&changed));
        assert_eq!(d.as_ref().map(|d| d.changed.clone()), Some(vec!["description", "annotations"]));
        // A pin with the definition digest only still detects the change, without naming it.
        let bare = ToolPin { definition: pin.definition.clone(), ..ToolPin::default() };
        let d = drift(&bare, &fingerprint(&changed)).map(|d| d.to_string()).unwrap_or_default();
        assert!(d.contains("the definition changed"), "{d}");
    }

    #[test]
    fn the_strictest_action_wins() {
        let s = Screening::default();
        let found = screen(
            &json!({"name": "t", "description": "See https://x.example/ <IMPORTANT>hi</IMPORTANT>"}),
        );
        assert_eq!(action(&found, &s), Some(ScreeningAction::Hide));
        let links = screen(&json!({"name": "t", "description": "See https://x.example/"}));
        assert_eq!(action(&links, &s), Some(ScreeningAction::Warn));
        assert_eq!(action(&[], &s), None);
        let strict = Screening { links: ScreeningAction::Refuse, ..s };
        assert_eq!(action(&links, &strict), Some(ScreeningAction::Refuse));
    }
}
