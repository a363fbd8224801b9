//! Which keys must verify an MCPServer's image. The server's own request (`spec.signature`)
//! and every selecting policy that requires signatures or trusts only its own keys are
//! enforced each on its own: the image runs only when, for every one of them, some key of its
//! set verifies a signature of the pinned digest. Admission refuses a server for which some set
//! is empty (nothing could ever verify it); the operator verifies with exactly these sets.
//! Pure: the operator resolves the Secret references.

use palisade_crds::mcppolicy::MCPPolicy;
use palisade_crds::mcpserver::MCPServer;

/// Where a public key comes from.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum KeySource {
    /// A key of a Secret in the MCPServer's namespace (`spec.signature.keys[]`).
    Secret { name: String, key: String },
    /// `MCPPolicy.spec.signature.trustedKeys[index]`, inline PEM.
    Policy { policy: String, index: usize, pem: String },
}

impl KeySource {
    /// How the key is named in status and messages (never the key material).
    pub fn label(&self, namespace: &str) -> String {
        match self {
            KeySource::Secret { name, key } => format!("cosign key {namespace}/{name}[{key}]"),
            KeySource::Policy { policy, index, .. } => {
                format!("MCPPolicy {policy} trustedKeys[{index}]")
            }
        }
    }
}

/// One requirement: some key of `keys` must verify the image.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TrustSet {
    /// Whose requirement: `spec.signature`, or the policy's name.
    pub required_by: Requirer,
    pub keys: Vec<KeySource>,
}

/// Who asked for a signature.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Requirer {
    Server,
    Policy(String),
}

impl std::fmt::Display for Requirer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Requirer::Server => write!(f, "spec.signature"),
            Requirer::Policy(p) => write!(f, "MCPPolicy {p}"),
        }
    }
}

/// The keys the server names itself (Secrets in its namespace).
pub fn server_keys(server: &MCPServer) -> Vec<KeySource> {
    server
        .spec
        .signature
        .iter()
        .flat_map(|s| &s.keys)
        .map(|k| KeySource::Secret {
            name: k.secret_ref.name.clone(),
            key: k.secret_ref.key.clone(),
        })
        .collect()
}

fn policy_keys(policy: &MCPPolicy) -> Vec<KeySource> {
    let name = policy.metadata.name.clone().unwrap_or_default();
    policy
        .spec
        .signature
        .trusted_keys
        .iter()
        .enumerate()
        .map(|(index, pem)| KeySource::Policy { policy: name.clone(), index, pem: pem.clone() })
        .collect()
}

/// The set one policy imposes, if it imposes one: its trusted keys, plus the server's own
/// keys unless it trusts only its own.
pub fn policy_set(server: &MCPServer, policy: &MCPPolicy) -> Option<TrustSet> {
    let sig = &policy.spec.signature;
    let applies = sig.required || (sig.only_trusted && server.spec.signature.is_some());
    if !applies {
        return None;
    }
    let mut keys = policy_keys(policy);
    if !sig.only_trusted {
        keys.extend(server_keys(server));
    }
    Some(TrustSet {
        required_by: Requirer::Policy(policy.metadata.name.clone().unwrap_or_default()),
        keys,
    })
}

/// The server's own set (when it names `spec.signature`): its keys and every selecting
/// policy's trusted keys (a keyless-only server can run on a policy's trust root).
pub fn server_set(server: &MCPServer, policies: &[&MCPPolicy]) -> Option<TrustSet> {
    server.spec.signature.as_ref()?;
    let mut keys = server_keys(server);
    for p in policies {
        keys.extend(policy_keys(p));
    }
    Some(TrustSet { required_by: Requirer::Server, keys })
}

/// Every set that must be satisfied; empty when nobody asked for a signature (the image runs
/// by digest, unsigned).
pub fn requirements(server: &MCPServer, policies: &[&MCPPolicy]) -> Vec<TrustSet> {
    let mut sets: Vec<TrustSet> = server_set(server, policies).into_iter().collect();
    sets.extend(policies.iter().filter_map(|p| policy_set(server, p)));
    sets
}
