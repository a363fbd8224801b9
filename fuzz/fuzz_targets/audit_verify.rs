//! The audit verifier: a real log written by the gateway's own `Audit` (a hash chain with
//! signed checkpoints), cut after as many lines as the first byte says, followed by the rest of
//! the input as lines. Verified with and without the key: nothing panics, and what verifies
//! with the key verifies without it.
#![no_main]

use std::sync::OnceLock;

use ed25519_dalek::SigningKey;
use ed25519_dalek::pkcs8::EncodePrivateKey;
use libfuzzer_sys::fuzz_target;
use palisade_gateway::observe::audit::{Audit, verify_lines};
use serde_json::json;

/// The key's seed: fixed, so that every run checks signatures against the same key.
const SEED: [u8; 32] = [7; 32];

/// The real log's lines, written once per process.
fn real_log() -> &'static [String] {
    static LOG: OnceLock<Vec<String>> = OnceLock::new();
    LOG.get_or_init(|| {
        let dir = std::env::temp_dir().join(format!("palisade-fuzz-audit-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("a scratch directory");
        let key = dir.join("key.pem");
        let pem = SigningKey::from_bytes(&SEED).to_pkcs8_pem(Default::default()).expect("PEM");
        std::fs::write(&key, pem.as_bytes()).expect("the key is written");
        let config = serde_json::from_value(json!({
            "enabled": true,
            "checkpointEvery": 3,
            "signingKeyFile": key,
            "file": dir.join("audit.jsonl"),
        }))
        .expect("an audit config");
        let audit = Audit::new(&config).expect("an audit log");
        for n in 0..8 {
            audit.record("call", json!({ "n": n, "tool": "echo", "decision": "allow" }));
        }
        audit.flush();
        drop(audit);
        let text = std::fs::read_to_string(dir.join("audit.jsonl")).expect("the log");
        let _ = std::fs::remove_dir_all(&dir);
        text.lines().map(str::to_string).collect()
    })
}

fuzz_target!(|data: &[u8]| {
    let real = real_log();
    let [keep, rest @ ..] = data else { return };
    let keep = usize::from(*keep) % (real.len() + 1);
    let tail = String::from_utf8_lossy(rest);
    let lines = || real[..keep].iter().cloned().chain(tail.lines().map(str::to_string));
    let unkeyed = verify_lines(lines(), None);
    let key = SigningKey::from_bytes(&SEED).verifying_key();
    if verify_lines(lines(), Some(&key)).is_ok() {
        assert!(unkeyed.is_ok(), "verified with the key but not without it");
    }
});
