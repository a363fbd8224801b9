//! Authorization: what an authenticated principal may do. Roles match claims (or the mTLS
//! principal) and grant MCP methods and named tools, resources and prompts; nothing is
//! allowed unless a role allows it. Listings are filtered with the same answers.

use std::sync::RwLock;

use palisade_core::config::GatewayConfig;
use palisade_core::spec::{Role, glob_matches};
use serde_json::{Map, Value};

use crate::upstream::credentials::SubjectToken;

/// An authenticated caller.
#[derive(Debug, Clone, PartialEq)]
pub struct Principal {
    /// The principal's name (token `sub`, certificate SAN, or `anonymous`).
    pub subject: String,
    /// Claims roles match on (token claims; `sub` for certificate principals).
    pub claims: Map<String, Value>,
    /// The bearer token the principal presented, for a token exchange on their behalf
    /// (`upstreamAuth.tokenExchange`); never forwarded, logged or shown.
    pub token: Option<SubjectToken>,
}

impl Principal {
    pub fn anonymous() -> Principal {
        let mut claims = Map::new();
        claims.insert("sub".into(), Value::String("anonymous".into()));
        Principal { subject: "anonymous".into(), claims, token: None }
    }

    /// A principal named by its client certificate; roles match it on `sub`.
    pub fn from_certificate(name: String) -> Principal {
        let mut claims = Map::new();
        claims.insert("sub".into(), Value::String(name.clone()));
        claims.insert("auth_method".into(), Value::String("mtls".into()));
        Principal { subject: name, claims, token: None }
    }

    fn claim_matches(&self, claim: &str, values: &[String]) -> bool {
        match self.claims.get(claim) {
            Some(Value::String(s)) => values.iter().any(|v| v == s),
            Some(Value::Array(items)) => {
                items.iter().filter_map(Value::as_str).any(|s| values.iter().any(|v| v == s))
            }
            Some(Value::Bool(b)) => values.iter().any(|v| v == &b.to_string()),
            Some(Value::Number(n)) => values.iter().any(|v| v == &n.to_string()),
            _ => false,
        }
    }
}

/// Methods every authenticated principal may use: the protocol's own lifecycle.
const LIFECYCLE: &[&str] = &[
    "initialize",
    "ping",
    "server/discover",
    "notifications/initialized",
    "notifications/cancelled",
    "notifications/progress",
    "notifications/roots/list_changed",
];

/// Whether one of the role's subject matches names the principal.
fn holds(p: &Principal, r: &Role) -> bool {
    r.subjects.iter().any(|s| p.claim_matches(&s.claim, &s.values))
}

pub struct Authorizer {
    roles: RwLock<Vec<Role>>,
}

impl Authorizer {
    pub fn new(cfg: &GatewayConfig) -> Authorizer {
        Authorizer { roles: RwLock::new(cfg.authorization.roles.clone()) }
    }

    pub fn reload(&self, cfg: &GatewayConfig) {
        if let Ok(mut r) = self.roles.write() {
            *r = cfg.authorization.roles.clone();
        }
    }

    /// Whether some role the principal holds satisfies `f` (read under the lock, nothing
    /// copied: this runs several times per request and once per listed item).
    fn any_role(&self, p: &Principal, f: impl Fn(&Role) -> bool) -> bool {
        self.roles.read().is_ok_and(|roles| roles.iter().any(|r| holds(p, r) && f(r)))
    }

    /// The principal's class for metrics: the first role that matches it (`none` without one).
    pub fn class_of(&self, p: &Principal) -> String {
        let Ok(roles) = self.roles.read() else { return "none".into() };
        roles.iter().find(|r| holds(p, r)).map_or_else(|| "none".into(), |r| r.name.clone())
    }

    /// Whether the principal holds a role that may approve plans of mutating tools.
    pub fn is_approver(&self, p: &Principal) -> bool {
        self.any_role(p, |r| r.approver)
    }

    /// Deny by default: a method is allowed when some role of the principal grants it.
    pub fn method_allowed(&self, p: &Principal, method: &str) -> bool {
        LIFECYCLE.contains(&method) || self.any_role(p, |r| r.allows_method(method))
    }

    /// Whether the principal may use the named tool, resource or prompt.
    pub fn item_allowed(&self, p: &Principal, kind: ItemKind, name: &str) -> bool {
        self.any_role(p, |r| {
            let grants = match kind {
                ItemKind::Tool => &r.tools,
                ItemKind::Resource => &r.resources,
                ItemKind::Prompt => &r.prompts,
            };
            grants.iter().any(|g| glob_matches(g, name))
        })
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ItemKind {
    Tool,
    Resource,
    Prompt,
}
