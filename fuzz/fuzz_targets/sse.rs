//! The SSE parser: the first byte says where the stream is cut in two; the events are the same
//! whether the bytes arrive whole or cut, no event is larger than the bound, and an oversized
//! event is refused however the bytes arrive.
#![no_main]

use libfuzzer_sys::fuzz_target;
use palisade_gateway::protocol::sse::Parser;

const BOUND: usize = 512;

fuzz_target!(|data: &[u8]| {
    let [cut, body @ ..] = data else { return };
    let at = usize::from(*cut) * body.len() / 255;
    let all = Parser::new(BOUND).feed(body);
    let mut split = Parser::new(BOUND);
    let first = split.feed(&body[..at]);
    let second = split.feed(&body[at..]);
    match (all, first, second) {
        (Ok(events), Ok(mut a), Ok(b)) => {
            a.extend(b);
            assert_eq!(events, a, "events differ when the stream is cut");
            assert!(events.iter().all(|e| e.data.len() <= BOUND), "an event exceeds the bound");
        }
        (Err(_), first, second) => assert!(first.is_err() || second.is_err(), "accepted cut"),
        (Ok(_), _, _) => panic!("accepted whole but not cut"),
    }
});
