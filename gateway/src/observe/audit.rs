//! The audit log: one JSON line per call, approval and security event, each carrying the
//! SHA-256 of the previous line so that removing, reordering or editing a line breaks the
//! chain; signed checkpoints (Ed25519) every N records let a verifier also detect a truncated
//! tail and prove who wrote the chain. Lines go to stdout (the cluster's log shipper) and
//! optionally to a file.
//!
//! The chain outlives the process: its head (last sequence number and hash) is kept in a small
//! file of the pod, and a restarted gateway begins with a `boot` record (signed like a
//! checkpoint) that continues from that head. A restart is therefore visible in the chain, and
//! records removed before a restart break it at the `boot` record.

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
    /// Where the head is kept (rewritten in place after every record).
    head: Option<std::fs::File>,
}

/// The chain's head as kept in the head file.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Head {
    pub seq: u64,
    pub hash: String,
}

/// Room for a head record (padded, so it is rewritten in place).
const HEAD_BYTES: usize = 160;

fn read_head(path: &str) -> Option<Head> {
    let text = std::fs::read_to_string(path).ok()?;
    serde_json::from_str(text.trim_end_matches(['\0', ' ', '\n'])).ok()
}

/// The last record of an audit file, as a head (when no head file is kept).
fn last_record(path: &str) -> Option<Head> {
    let text = std::fs::read_to_string(path).ok()?;
    let last = text.lines().rev().find(|l| !l.trim().is_empty())?;
    let v: Value = serde_json::from_str(last).ok()?;
    Some(Head { seq: v.get("seq")?.as_u64()?, hash: v.get("hash")?.as_str()?.to_string() })
}

pub struct Audit {
    enabled: bool,
    checkpoint_every: u32,
    key: Option<SigningKey>,
    chain: Mutex<Chain>,
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
        // Where the chain left off: the head file, else the audit file's last record.
        let previous = cfg
            .head_file
            .as_deref()
            .and_then(read_head)
            .or_else(|| cfg.file.as_deref().and_then(last_record));
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
        let head = match &cfg.head_file {
            Some(path) => Some(
                std::fs::OpenOptions::new()
                    .create(true)
                    .truncate(false)
                    .write(true)
                    .open(path)
                    .map_err(|source| AuditError::File { path: path.clone(), source })?,
            ),
            None => None,
        };
        let audit = Audit {
            enabled: cfg.enabled,
            checkpoint_every: cfg.checkpoint_every.max(1),
            key,
            chain: Mutex::new(Chain {
                seq: previous.as_ref().map_or(0, |h| h.seq),
                prev: previous.as_ref().map_or_else(|| GENESIS.to_string(), |h| h.hash.clone()),
                since_checkpoint: 0,
                file,
                head,
            }),
        };
        audit.boot(previous.as_ref());
        Ok(audit)
    }

    /// The first record of every process: which head it continues (none for a new chain),
    /// signed like a checkpoint.
    fn boot(&self, previous: Option<&Head>) {
        if !self.enabled {
            return;
        }
        let Ok(mut chain) = self.chain.lock() else { return };
        let mut fields = json!({
            "previous": previous,
            "replica": std::env::var("HOSTNAME").unwrap_or_default(),
            "pid": std::process::id(),
            "signed": chain.prev,
        });
        if let Some(k) = &self.key {
            let sig = k.sign(chain.prev.as_bytes());
            fields["signature"] = json!(hex::encode(sig.to_bytes()));
            fields["keyId"] = json!(key_id(&k.verifying_key()));
        }
        self.append(&mut chain, "boot", fields);
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
        if let Some(h) = chain.head.as_ref() {
            use std::os::unix::fs::FileExt;
            let mut text = json!({"seq": chain.seq, "hash": hash}).to_string();
            text.push('\n');
            let mut bytes = text.into_bytes();
            bytes.resize(HEAD_BYTES.max(bytes.len()), b' ');
            if let Err(e) = h.write_at(&bytes, 0) {
                warn!(error = %e, "writing the audit chain's head failed");
            }
        }
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

/// One record of a call (allowed, refused, answered with a plan, or a preview): who, what,
/// the hashes of params and result, the decision and why. Fields are set by name; `extra`
/// adds what a particular outcome knows (latency, redactions, the approval redeemed).
#[derive(Debug, Clone, Default)]
pub struct CallRecord<'a> {
    pub request_id: &'a str,
    pub principal: &'a str,
    pub session: Option<String>,
    pub revision: &'a str,
    pub method: &'a str,
    pub name: Option<&'a str>,
    pub params_sha256: Option<&'a str>,
    pub result_sha256: Option<&'a str>,
    pub decision: &'a str,
    pub reason: &'a str,
    pub extra: Option<Value>,
}

impl CallRecord<'_> {
    pub fn write(self, audit: &Audit) {
        if !audit.enabled() {
            return;
        }
        let mut rec = json!({
            "request_id": self.request_id,
            "principal": self.principal,
            "session": self.session,
            "revision": self.revision,
            "method": self.method,
            "name": self.name,
            "params_sha256": self.params_sha256,
            "result_sha256": self.result_sha256,
            "decision": self.decision,
            "reason": self.reason,
        });
        if let (Some(Value::Object(e)), Some(r)) = (self.extra, rec.as_object_mut()) {
            r.extend(e);
        }
        audit.record("call", rec);
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
    /// `boot` records that continue an earlier head: restarts of the gateway.
    pub restarts: u64,
    /// The sequence number of the first line (1 for a log that starts the chain; more for a
    /// log that starts at a restart, such as one container's output).
    pub first_seq: u64,
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
    let mut out = Verified {
        records: 0,
        checkpoints: 0,
        signed_checkpoints: 0,
        unsigned_tail: 0,
        restarts: 0,
        first_seq: 1,
    };
    let mut next_seq = 1;
    for (i, line) in lines.enumerate() {
        let n = i + 1;
        let bad = |problem: String| Broken { line: n, problem };
        let Ok(Value::Object(mut r)) = serde_json::from_str::<Value>(&line) else {
            return Err(bad("not a JSON object (edited or damaged)".into()));
        };
        let seq = r.get("seq").and_then(Value::as_u64);
        let kind = r.get("type").and_then(Value::as_str).unwrap_or_default().to_string();
        // A log may begin where a gateway restarted (one container's output): its first
        // record is then a boot record that names the head it continues.
        let continues = r.get("previous").and_then(Value::as_object).cloned();
        if n == 1
            && kind == "boot"
            && let Some(p) = &continues
        {
            let p_seq = p.get("seq").and_then(Value::as_u64);
            let p_hash = p.get("hash").and_then(Value::as_str);
            if p_seq.map(|s| s + 1) != seq || r.get("prev").and_then(Value::as_str) != p_hash {
                return Err(bad("boot record does not continue the head it names".into()));
            }
            next_seq = seq.unwrap_or(1);
            out.first_seq = next_seq;
            prev = p_hash.unwrap_or_default().to_string();
        }
        if seq != Some(next_seq) {
            return Err(bad(format!(
                "sequence {} where {} was expected: a record before it was removed or the lines were reordered",
                seq.map(|s| s.to_string()).unwrap_or_else(|| "missing".into()),
                next_seq
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
        if kind == "checkpoint" || kind == "boot" {
            if r.get("signed").and_then(Value::as_str) != Some(prev.as_str()) {
                return Err(bad(format!("{kind} record signs another record")));
            }
            if let Some(k) = key {
                let sig = r
                    .get("signature")
                    .and_then(Value::as_str)
                    .and_then(|s| hex::decode(s).ok())
                    .and_then(|b| Signature::from_slice(&b).ok())
                    .ok_or_else(|| bad(format!("{kind} record is not signed")))?;
                k.verify(prev.as_bytes(), &sig).map_err(|_| {
                    bad(format!("{kind} signature does not verify with the given key"))
                })?;
            }
        }
        if kind == "boot" {
            // A boot inside the log must continue the record before it: a restart with a
            // removed tail (or a lost head) breaks here.
            if continues.is_some() {
                if n > 1 {
                    out.restarts += 1;
                }
            } else if n > 1 {
                return Err(bad("a new chain starts here: the gateway restarted without the head of the chain before it".into()));
            }
            if key.is_some() {
                out.unsigned_tail = 0;
            } else {
                out.unsigned_tail += 1;
            }
        } else if kind == "checkpoint" {
            out.checkpoints += 1;
            if key.is_some() {
                out.signed_checkpoints += 1;
            }
            out.unsigned_tail = 0;
        } else {
            out.unsigned_tail += 1;
        }
        out.records += 1;
        next_seq += 1;
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

    fn config(dir: &std::path::Path) -> AuditConfig {
        AuditConfig {
            enabled: true,
            checkpoint_every: 3,
            signing_key_file: None,
            file: Some(dir.join("audit.jsonl").display().to_string()),
            head_file: Some(dir.join("head.json").display().to_string()),
        }
    }

    fn lines(dir: &std::path::Path) -> Vec<String> {
        std::fs::read_to_string(dir.join("audit.jsonl"))
            .unwrap_or_default()
            .lines()
            .map(str::to_string)
            .collect()
    }

    #[test]
    fn the_chain_continues_across_restarts_and_a_removed_tail_shows() {
        let dir = std::env::temp_dir().join(format!("palisade-audit-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap_or_default();
        {
            let a = Audit::new(&config(&dir)).unwrap_or_else(|e| panic!("{e}"));
            for i in 0..5 {
                a.record("call", json!({"n": i}));
            }
        }
        // Restarted: the second process continues the first one's chain.
        {
            let a = Audit::new(&config(&dir)).unwrap_or_else(|e| panic!("{e}"));
            a.record("call", json!({"n": 5}));
        }
        let all = lines(&dir);
        let v = verify_lines(all.clone().into_iter(), None).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(v.restarts, 1, "{v:?}");
        let boots = all.iter().filter(|l| l.contains("\"type\":\"boot\"")).count();
        assert_eq!(boots, 2);
        // The second process's own output verifies on its own (it starts at the restart).
        let restart = all.iter().rposition(|l| l.contains("\"type\":\"boot\"")).unwrap_or(0);
        let tail =
            verify_lines(all[restart..].iter().cloned(), None).unwrap_or_else(|e| panic!("{e}"));
        assert!(tail.first_seq > 1, "{tail:?}");
        // Records removed before the restart break the chain at the boot record.
        let mut cut = all.clone();
        cut.drain(restart - 2..restart);
        let e = verify_lines(cut.into_iter(), None).err();
        assert_eq!(
            e.as_ref().map(|e| e.line),
            Some(restart - 1),
            "breaks at the boot record: {e:?}"
        );
        // A restart that lost the head starts a new chain: visible as well.
        std::fs::remove_file(dir.join("head.json")).unwrap_or_default();
        std::fs::write(dir.join("audit.jsonl"), all.join("\n") + "\n").unwrap_or_default();
        let mut no_file = config(&dir);
        no_file.file = None;
        let fresh = dir.join("fresh.jsonl");
        no_file.file = Some(fresh.display().to_string());
        drop(Audit::new(&no_file));
        let mut joined = all.clone();
        joined.extend(
            std::fs::read_to_string(&fresh).unwrap_or_default().lines().map(str::to_string),
        );
        let e = verify_lines(joined.into_iter(), None).err();
        assert!(e.is_some(), "a new chain inside a log is refused");
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn timestamps_are_rfc3339() {
        let t = now_rfc3339();
        assert_eq!(t.len(), 24, "{t}");
        assert!(t.starts_with("20") && t.ends_with('Z'), "{t}");
    }
}
