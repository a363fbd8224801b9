//! Header values carrying MCP names (RFC 8187-style encoding): decoding any text never panics,
//! and what is decoded encodes back to a value that decodes to the same text.
#![no_main]

use libfuzzer_sys::fuzz_target;
use palisade_gateway::protocol::headers;

fuzz_target!(|data: &[u8]| {
    let Ok(s) = std::str::from_utf8(data) else { return };
    if let Some(decoded) = headers::decode(s) {
        let again = headers::decode(&headers::encode(&decoded));
        assert_eq!(again.as_deref(), Some(decoded.as_str()), "encode/decode differ");
    }
    assert_eq!(headers::decode(&headers::encode(s)).as_deref(), Some(s), "no round trip");
});
