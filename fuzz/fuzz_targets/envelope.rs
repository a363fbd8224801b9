//! JSON-RPC envelopes: any bytes are parsed as JSON, then as an MCP envelope; what is accepted
//! re-serialises to an envelope that parses to the same message.
#![no_main]

use libfuzzer_sys::fuzz_target;
use palisade_gateway::protocol::jsonrpc::Message;
use serde_json::Value;

fuzz_target!(|data: &[u8]| {
    let Ok(v) = serde_json::from_slice::<Value>(data) else { return };
    if let Ok(m) = Message::parse(&v) {
        let again = Message::parse(&m.to_value());
        assert_eq!(again.as_ref().ok(), Some(&m), "a parsed message does not round-trip");
    }
});
