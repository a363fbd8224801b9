//! Property-based fuzzing of what parses untrusted input: JSON-RPC envelopes, MCP params and
//! results of every method and revision, the SSE parser, header decoding, error sanitising,
//! and the argument guards. Inputs are generated (and shrunk on failure) by proptest; the
//! properties are "never panics" plus the invariants each function promises.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use palisade_gateway::controls::guard::{check_path, loose_ipv4};
use palisade_gateway::controls::sanitize;
use palisade_gateway::protocol::jsonrpc::Message;
use palisade_gateway::protocol::revision::Rev;
use palisade_gateway::protocol::schema::{self, METHODS};
use palisade_gateway::protocol::{headers, sse};
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

/// JSON-RPC ids: strings and integers.
fn id() -> impl Strategy<Value = Value> {
    prop_oneof![any::<i64>().prop_map(|n| json!(n)), "[a-zA-Z0-9-]{0,16}".prop_map(Value::String)]
}

fn object() -> impl Strategy<Value = Value> {
    prop::collection::btree_map("[a-zA-Z_]{1,8}", json_value(), 0..4)
        .prop_map(|m| Value::Object(m.into_iter().collect::<Map<_, _>>()))
}

/// Envelopes of every kind, well formed: what a conforming peer sends.
fn valid_envelope() -> impl Strategy<Value = Value> {
    let method = "[a-z]{1,10}(/[a-zA-Z]{1,10}){0,2}";
    prop_oneof![
        (id(), method, prop::option::of(object())).prop_map(|(id, m, p)| {
            let mut v = json!({"jsonrpc": "2.0", "id": id, "method": m});
            if let Some(p) = p {
                v["params"] = p;
            }
            v
        }),
        (method, prop::option::of(object())).prop_map(|(m, p)| {
            let mut v = json!({"jsonrpc": "2.0", "method": m});
            if let Some(p) = p {
                v["params"] = p;
            }
            v
        }),
        (id(), object()).prop_map(|(id, r)| json!({"jsonrpc": "2.0", "id": id, "result": r})),
        (prop::option::of(id()), any::<i32>(), "[ -~]{0,40}", prop::option::of(json_value()))
            .prop_map(|(id, code, message, data)| {
                let mut e = json!({"code": code, "message": message});
                if let Some(d) = data {
                    e["data"] = d;
                }
                json!({"jsonrpc": "2.0", "id": id.unwrap_or(Value::Null), "error": e})
            }),
    ]
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
            prop_assert_eq!(again, m);
        }
    }

    /// Every well-formed envelope is accepted and round-trips to itself; one unknown member
    /// or a wrong version makes the same envelope refused.
    #[test]
    fn well_formed_envelopes_are_accepted_and_round_trip(
        v in valid_envelope(),
        extra in "[a-z]{3,8}",
    ) {
        let m = Message::parse(&v);
        prop_assert!(m.is_ok(), "refused {}: {:?}", v, m.err());
        let m = m.unwrap();
        prop_assert_eq!(m.to_value(), v.clone());
        let mut smuggled = v.clone();
        smuggled[extra.as_str()] = json!(1);
        prop_assert!(Message::parse(&smuggled).is_err(), "accepted {}", smuggled);
        let mut old = v;
        old["jsonrpc"] = json!("1.0");
        prop_assert!(Message::parse(&old).is_err());
    }

    #[test]
    fn params_and_results_of_every_method_are_checked_without_panicking(
        v in json_value(),
        pick in any::<prop::sample::Index>(),
        strict in any::<bool>(),
    ) {
        let m = &METHODS[pick.index(METHODS.len())];
        for rev in revisions() {
            let _ = schema::check_params(m, Some(&v), rev, strict);
            let _ = schema::check_result(m, &v, rev, strict);
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
            // An oversized event is refused however the bytes arrive...
            (Err(_), first, second) => prop_assert!(first.is_err() || second.is_err()),
            // ...and what is accepted whole is accepted split.
            (Ok(events), first, second) => prop_assert!(
                false,
                "accepted whole ({} events) but not split: {:?} {:?}",
                events.len(),
                first.err(),
                second.err()
            ),
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

    /// Plain paths under a root are accepted (so the property below is not vacuous).
    #[test]
    fn plain_paths_under_a_root_are_accepted(
        root in prop_oneof![Just("/data"), Just("/srv/shared")],
        segments in prop::collection::vec("[a-zA-Z0-9_-][a-zA-Z0-9._-]{0,11}", 0..5),
    ) {
        let p = format!("{root}/{}", segments.join("/"));
        let roots = vec!["/data".to_string(), "/srv/shared".to_string()];
        let devices = ["CON", "PRN", "AUX", "NUL", "COM", "LPT"];
        let device = segments.iter().any(|s| {
            let stem = s.split('.').next().unwrap_or(s).to_ascii_uppercase();
            devices.iter().any(|d| stem.starts_with(d))
        });
        let dots = segments.iter().any(|s| s.trim_end_matches(['.', ' ']).is_empty());
        prop_assume!(!device && !dots);
        prop_assert!(check_path(&p, &roots).is_ok(), "refused {:?}: {:?}", p, check_path(&p, &roots));
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
