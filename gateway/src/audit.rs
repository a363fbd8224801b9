//! The audit log: one JSON line per call, approval and security event, each carrying the
//! SHA-256 of the previous line so that removing, reordering or editing a line breaks the
//! chain; signed checkpoints (Ed25519) every N records let a verifier also detect a truncated
//! tail and prove who wrote the chain. Lines go to stdout (the cluster's log shipper) and
//! optionally to a file.

use std::io::{BufRead, Write};
use std::path::Path;
use std::sync::Mutex;
use std::time::{SystemTime, UNIX_EPOCH};

use ed25519_dalek::pkcs8::{DecodePrivateKey, DecodePublicKey};
use ed25519_dalek::{Signature, Signer, SigningKey, Verifier, VerifyingKey};
use palisade_core::config::AuditConfig;
use serde_json::{Map, Value, json};
use sha2::{Digest, Sha256};
use tracing::warn;

/// The hash that precedes the first record.
pub const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";

#[derive(Debug, thiserror::Error)]
pub enum AuditError {
    #[error("audit signing key {path}: {reason}")]
    Key { path: String, reason: String },
    #[error("audit file {path}: {source}")]
    File { path: String, source: std::io::Error },
}

struct Chain {
    seq: u64,
    prev: String,
    since_checkpoint: u32,
    file: Option<std::fs::File>,
}

pub struct Audit {
    enabled: bool,
    checkpoint_every: u32,
    key: Option<SigningKey>,
    chain: Mutex<Chain>,
}

/// SHA-256 of a JSON value's canonical text (serde_json orders object keys).
pub fn digest(v: &Value) -> String {
    hex::encode(Sha256::digest(v.to_string().as_bytes()))
}

/// The hash of a record: over its canonical text (serde_json orders object keys) without its
/// own `hash` member, which the caller has removed.
fn record_hash(text_without_hash: &str) -> String {
    hex::encode(Sha256::digest(text_without_hash.as_bytes()))
}

fn now_rfc3339() -> String {
    let d = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = d.as_secs() as i64;
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    // Civil date from days since the epoch (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:03}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60,
        d.subsec_millis()
    )
}

impl Audit {
    pub fn new(cfg: &AuditConfig) -> Result<Audit, AuditError> {
        let key = match &cfg.signing_key_file {
            Some(path) => {
                let pem = std::fs::read_to_string(path)
                    .map_err(|e| AuditError::Key { path: path.clone(), reason: e.to_string() })?;
                Some(
                    SigningKey::from_pkcs8_pem(&pem).map_err(|e| AuditError::Key {
                        path: path.clone(),
                        reason: e.to_string(),
                    })?,
                )
            }
            None => None,
        };
        let file = match &cfg.file {
            Some(path) => Some(
                std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(path)
                    .map_err(|source| AuditError::File { path: path.clone(), source })?,
            ),
            None => None,
        };
        Ok(Audit {
            enabled: cfg.enabled,
            checkpoint_every: cfg.checkpoint_every.max(1),
            key,
            chain: Mutex::new(Chain {
                seq: 0,
                prev: GENESIS.to_string(),
                since_checkpoint: 0,
                file,
            }),
        })
    }

    /// Whether records are written (callers skip computing what only the record needs).
    pub fn enabled(&self) -> bool {
        self.enabled
    }

    /// Appends a record (`type` plus fields); returns its hash.
    pub fn record(&self, kind: &str, fields: Value) -> Option<String> {
        if !self.enabled {
            return None;
        }
        let Ok(mut chain) = self.chain.lock() else { return None };
        let hash = self.append(&mut chain, kind, fields);
        chain.since_checkpoint += 1;
        if chain.since_checkpoint >= self.checkpoint_every {
            self.checkpoint(&mut chain);
        }
        Some(hash)
    }

    fn append(&self, chain: &mut Chain, kind: &str, fields: Value) -> String {
        let mut r = Map::new();
        r.insert("type".into(), json!(kind));
        r.insert("ts".into(), json!(now_rfc3339()));
        r.insert("seq".into(), json!(chain.seq + 1));
        r.insert("prev".into(), json!(chain.prev));
        if let Value::Object(f) = fields {
            for (k, v) in f {
                r.entry(k).or_insert(v);
            }
        }
        let text = Value::Object(r).to_string();
        let hash = record_hash(&text);
        // The line is the canonical text with the hash appended; verifiers re-serialise
        // canonically, so where `hash` sits in the line does not matter.
        let line = format!("{},\"hash\":\"{hash}\"}}\n", &text[..text.len() - 1]);
        {
            let mut out = std::io::stdout().lock();
            let _ = out.write_all(line.as_bytes());
            let _ = out.flush();
        }
        if let Some(f) = chain.file.as_mut()
            && let Err(e) = f.write_all(line.as_bytes())
        {
            warn!(error = %e, "writing the audit file failed");
        }
        chain.seq += 1;
        chain.prev = hash.clone();
        hash
    }

    /// A checkpoint signs the hash of the record before it (and so the whole chain so far).
    fn checkpoint(&self, chain: &mut Chain) {
        let mut fields = json!({"records": chain.seq, "signed": chain.prev});
        if let Some(k) = &self.key {
            let sig = k.sign(chain.prev.as_bytes());
            fields["signature"] = json!(hex::encode(sig.to_bytes()));
            fields["keyId"] = json!(key_id(&k.verifying_key()));
        }
        self.append(chain, "checkpoint", fields);
        chain.since_checkpoint = 0;
    }

    /// Writes a checkpoint now (at shutdown), so the tail of the log is covered too.
    pub fn flush(&self) {
        if let Ok(mut chain) = self.chain.lock()
            && self.enabled
            && chain.since_checkpoint > 0
        {
            self.checkpoint(&mut chain);
        }
    }
}

pub fn key_id(k: &VerifyingKey) -> String {
    hex::encode(&Sha256::digest(k.as_bytes())[..8])
}

/// The outcome of verifying a log.
#[derive(Debug, PartialEq)]
pub struct Verified {
    pub records: u64,
    pub checkpoints: u64,
    pub signed_checkpoints: u64,
    /// Records after the last checkpoint (not covered by a signature).
    pub unsigned_tail: u64,
}

/// Where the chain breaks: the 1-based line number and what is wrong there.
#[derive(Debug, thiserror::Error, PartialEq)]
#[error("line {line}: {problem}")]
pub struct Broken {
    pub line: usize,
    pub problem: String,
}

/// Verifies a log file. With a public key, checkpoint signatures are checked as well.
pub fn verify(path: &Path, key: Option<&VerifyingKey>) -> Result<Verified, Broken> {
    let file = std::fs::File::open(path)
        .map_err(|e| Broken { line: 0, problem: format!("cannot open: {e}") })?;
    verify_lines(std::io::BufReader::new(file).lines().map(|l| l.unwrap_or_default()), key)
}

pub fn verify_lines(
    lines: impl Iterator<Item = String>,
    key: Option<&VerifyingKey>,
) -> Result<Verified, Broken> {
    let mut prev = GENESIS.to_string();
    let mut out = Verified { records: 0, checkpoints: 0, signed_checkpoints: 0, unsigned_tail: 0 };
    for (i, line) in lines.enumerate() {
        let n = i + 1;
        let bad = |problem: String| Broken { line: n, problem };
        let Ok(Value::Object(mut r)) = serde_json::from_str::<Value>(&line) else {
            return Err(bad("not a JSON object (edited or damaged)".into()));
        };
        let seq = r.get("seq").and_then(Value::as_u64);
        if seq != Some(out.records + 1) {
            return Err(bad(format!(
                "sequence {} where {} was expected: a record before it was removed or the lines were reordered",
                seq.map(|s| s.to_string()).unwrap_or_else(|| "missing".into()),
                out.records + 1
            )));
        }
        if r.get("prev").and_then(Value::as_str) != Some(prev.as_str()) {
            return Err(bad(
                "does not follow the previous record (removed, inserted or reordered lines)".into(),
            ));
        }
        let claimed = r.remove("hash");
        let hash = record_hash(&Value::Object(r.clone()).to_string());
        if claimed.as_ref().and_then(Value::as_str) != Some(hash.as_str()) {
            return Err(bad("content does not match its hash (edited)".into()));
        }
        if r.get("type").and_then(Value::as_str) == Some("checkpoint") {
            out.checkpoints += 1;
            if r.get("signed").and_then(Value::as_str) != Some(prev.as_str()) {
                return Err(bad("checkpoint signs another record".into()));
            }
            if let Some(k) = key {
                let sig = r
                    .get("signature")
                    .and_then(Value::as_str)
                    .and_then(|s| hex::decode(s).ok())
                    .and_then(|b| Signature::from_slice(&b).ok())
                    .ok_or_else(|| bad("checkpoint is not signed".into()))?;
                k.verify(prev.as_bytes(), &sig).map_err(|_| {
                    bad("checkpoint signature does not verify with the given key".into())
                })?;
                out.signed_checkpoints += 1;
            }
            out.unsigned_tail = 0;
        } else {
            out.unsigned_tail += 1;
        }
        out.records += 1;
        prev = hash;
    }
    Ok(out)
}

/// Reads an Ed25519 public key (SPKI PEM) for `audit verify --public-key`.
pub fn read_public_key(path: &Path) -> Result<VerifyingKey, String> {
    let pem = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
    VerifyingKey::from_public_key_pem(&pem).map_err(|e| format!("{}: {e}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_are_rfc3339() {
        let t = now_rfc3339();
        assert_eq!(t.len(), 24, "{t}");
        assert!(t.starts_with("20") && t.ends_with('Z'), "{t}");
    }
}
