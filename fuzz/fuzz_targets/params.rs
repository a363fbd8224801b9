//! The params and results of every method in every revision: the first byte picks the method,
//! the second strictness; the rest is JSON checked as that method's params and as its result
//! under each revision. The property is that checking never panics, and that what the strict
//! check accepts the lenient one accepts too.
#![no_main]

use libfuzzer_sys::fuzz_target;
use palisade_gateway::protocol::revision::Rev;
use palisade_gateway::protocol::schema::{self, METHODS};
use serde_json::Value;

const REVISIONS: [&str; 5] = ["2024-11-05", "2025-03-26", "2025-06-18", "2025-11-25", "2026-07-28"];

fuzz_target!(|data: &[u8]| {
    let [pick, _strict, rest @ ..] = data else { return };
    let Ok(v) = serde_json::from_slice::<Value>(rest) else { return };
    let m = &METHODS[usize::from(*pick) % METHODS.len()];
    for rev in REVISIONS.iter().filter_map(|r| Rev::parse(r)) {
        if schema::check_params(m, Some(&v), rev, true).is_ok() {
            assert!(
                schema::check_params(m, Some(&v), rev, false).is_ok(),
                "strict but not lenient"
            );
        }
        if schema::check_result(m, &v, rev, true).is_ok() {
            assert!(schema::check_result(m, &v, rev, false).is_ok(), "strict but not lenient");
        }
    }
});
