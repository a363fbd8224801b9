//! Property-based fuzzing of what parses untrusted input: JSON-RPC envelopes, MCP params and
//! results of every method and revision, the SSE parser, header decoding, error sanitising,
//! and the argument guards. Inputs are generated (and shrunk on failure) by proptest; the
//! properties are "never panics" plus the invariants each function promises.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use palisade_gateway::guard::{check_path, loose_ipv4};
use palisade_gateway::jsonrpc::Message;
use palisade_gateway::validate::{self, METHODS, Rev};
use palisade_gateway::{headers, sanitize, sse};
use proptest::prelude::*;
use serde_json::{Map, Value, json};

/// Arbitrary JSON, biased towards the shapes MCP messages have.
fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(|n| json!(n)),
        any::<f64>().prop_filter("finite", |f| f.is_finite()).prop_map(|f| json!(f)),
        "[a-z/_]{0,12}".prop_map(Value::String),
        any::<String>().prop_map(Value::String),
    ];
    leaf.prop_recursive(4, 64, 8, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            prop::collection::btree_map(
                prop_oneof![
                    Just("jsonrpc".to_string()),
                    Just("id".to_string()),
                    Just("method".to_string()),
                    Just("params".to_string()),
                    Just("result".to_string()),
                    Just("error".to_string()),
                    Just("name".to_string()),
                    Just("uri".to_string()),
                    Just("arguments".to_string()),
                    Just("_meta".to_string()),
                    Just("content".to_string()),
                    Just("type".to_string()),
                    "[a-zA-Z]{1,8}",
                ],
                inner,
                0..6,
            )
            .prop_map(|m| Value::Object(m.into_iter().collect::<Map<_, _>>())),
        ]
    })
}

fn revisions() -> Vec<Rev> {
    ["2024-11-05", "2025-03-26", "2025-06-18", "2025-11-25", "2026-07-28"]
        .iter()
        .filter_map(|r| Rev::parse(r))
        .collect()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn envelopes_parse_or_refuse_without_panicking(v in json_value()) {
        if let Ok(m) = Message::parse(&v) {
            // What parses re-serialises to an envelope that parses to the same message.
            let again = Message::parse(&m.to_value()).expect("a parsed message round-trips");
            prop_assert_eq!(again.method(), m.method());
        }
    }

    #[test]
    fn params_and_results_of_every_method_are_checked_without_panicking(
        v in json_value(),
        pick in any::<prop::sample::Index>(),
        strict in any::<bool>(),
    ) {
        let m = &METHODS[pick.index(METHODS.len())];
        for rev in revisions() {
            let _ = validate::check_params(m, Some(&v), rev, strict);
            let _ = validate::check_result(m, &v, rev, strict);
        }
    }

    #[test]
    fn the_sse_parser_is_bounded_and_split_independent(
        body in prop::collection::vec(any::<u8>(), 0..2048),
        cut in any::<prop::sample::Index>(),
    ) {
        let mut whole = sse::Parser::new(512);
        let all = whole.feed(&body);
        let at = cut.index(body.len() + 1);
        let mut split = sse::Parser::new(512);
        let first = split.feed(&body[..at]);
        let second = split.feed(&body[at..]);
        match (all, first, second) {
            (Ok(events), Ok(mut a), Ok(b)) => {
                a.extend(b);
                prop_assert_eq!(events.clone(), a);
                prop_assert!(events.iter().all(|e| e.data.len() <= 512));
            }
            // An oversized event is refused however the bytes arrive.
            (Err(_), _, _) => {}
            (Ok(_), first, second) => prop_assert!(first.is_err() || second.is_err()),
        }
    }

    #[test]
    fn sse_encoding_round_trips(event in "[a-z]{0,8}", data in "[^\r]{0,200}") {
        let ev = (!event.is_empty()).then_some(event.as_str());
        let text = sse::encode(ev, None, &data);
        let got = sse::Parser::new(1 << 16).feed(text.as_bytes()).unwrap();
        prop_assert_eq!(got.len(), 1);
        prop_assert_eq!(&got[0].data, &data);
        prop_assert_eq!(got[0].event.as_deref(), ev);
    }

    #[test]
    fn header_values_round_trip(s in any::<String>()) {
        prop_assert_eq!(headers::decode(&headers::encode(&s)), Some(s));
    }

    #[test]
    fn header_decoding_never_panics(s in any::<String>()) {
        let _ = headers::decode(&s);
    }

    #[test]
    fn sanitised_errors_hide_internal_addresses_and_paths(
        prefix in "[A-Za-z ]{0,20}",
        a in 0u8..=255, b in 0u8..=255, c in 1u8..=254,
        dir in "[a-z]{1,8}", file in "[a-z]{1,8}",
    ) {
        let internal = format!("10.{a}.{b}.{c}");
        let path = format!("/srv/{dir}/{file}.py");
        let out = sanitize::text(&format!("{prefix} connect {internal}:5432 failed in {path}"));
        prop_assert!(!out.contains(&internal), "{}", out);
        prop_assert!(!out.contains(&path), "{}", out);
    }

    #[test]
    fn accepted_paths_are_plain_and_under_a_root(p in any::<String>()) {
        let roots = vec!["/data".to_string(), "/srv/shared".to_string()];
        if check_path(&p, &roots).is_ok() {
            prop_assert!(p.starts_with("/data") || p.starts_with("/srv/shared"), "{:?}", p);
            prop_assert!(!p.split('/').any(|s| s == ".."), "{:?}", p);
            prop_assert!(!p.contains('%') && !p.contains('\\') && !p.contains('\0'), "{:?}", p);
        }
    }

    #[test]
    fn traversal_never_passes_whatever_surrounds_it(
        head in "(/data|/srv/shared)(/[a-z]{1,6}){0,3}",
        dots in prop_oneof![Just(".."), Just("%2e%2e"), Just("..%2f"), Just("\u{FF0E}\u{FF0E}"), Just(".. ")],
        tail in "(/[a-z]{1,6}){0,3}",
    ) {
        let p = format!("{head}/{dots}{tail}");
        prop_assert!(check_path(&p, &["/data".to_string(), "/srv/shared".to_string()]).is_err(), "{:?}", p);
    }

    #[test]
    fn every_ipv4_spelling_means_the_same_address(ip in any::<u32>(), style in 0usize..4, parts in 1usize..=4) {
        let o = ip.to_be_bytes();
        // inet_aton: the last part fills the remaining bytes.
        let mut nums: Vec<u64> = o[..parts - 1].iter().map(|&b| u64::from(b)).collect();
        let rest = o[parts - 1..].iter().fold(0u64, |acc, &b| (acc << 8) | u64::from(b));
        nums.push(rest);
        let text: Vec<String> = nums
            .iter()
            .map(|&n| match style {
                0 => n.to_string(),
                1 => format!("0x{n:x}"),
                2 => format!("0{n:o}"),
                _ => if n % 2 == 0 { format!("0X{n:X}") } else { n.to_string() },
            })
            .collect();
        let spelled = text.join(".");
        prop_assert_eq!(loose_ipv4(&spelled), Some(std::net::Ipv4Addr::from(ip)), "{}", spelled);
    }
}
