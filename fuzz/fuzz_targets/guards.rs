//! The argument guards: paths against roots, and URLs against a rule with names resolved by a
//! table (no network). Accepted paths are plain and under a root; an accepted URL never
//! reaches a private, loopback, link-local or metadata address.
#![no_main]

use std::net::{IpAddr, Ipv4Addr};

use libfuzzer_sys::fuzz_target;
use palisade_gateway::controls::guard::{Resolve, check_path, check_url, loose_ipv4};

/// Names containing "in" resolve to an internal address; the rest to a public one.
struct Table;

impl Resolve for Table {
    fn resolve<'a>(
        &'a self,
        host: &'a str,
        _port: u16,
    ) -> futures::future::BoxFuture<'a, std::io::Result<Vec<IpAddr>>> {
        let internal = host.to_ascii_lowercase().contains("in");
        let ip =
            if internal { Ipv4Addr::new(10, 1, 2, 3) } else { Ipv4Addr::new(93, 184, 216, 34) };
        Box::pin(async move { Ok(vec![IpAddr::V4(ip)]) })
    }
}

fn internal(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => {
            v4.is_private()
                || v4.is_loopback()
                || v4.is_link_local()
                || v4.is_unspecified()
                || v4.is_broadcast()
        }
        IpAddr::V6(v6) => {
            v6.is_loopback()
                || v6.is_unspecified()
                || v6.to_ipv4_mapped().is_some_and(|m| internal(IpAddr::V4(m)))
                || (v6.segments()[0] & 0xfe00) == 0xfc00
                || (v6.segments()[0] & 0xffc0) == 0xfe80
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let Ok(s) = std::str::from_utf8(data) else { return };
    let roots = ["/data".to_string(), "/srv/shared".to_string()];
    if check_path(s, &roots).is_ok() {
        assert!(s.starts_with("/data") || s.starts_with("/srv/shared"), "outside the roots");
        assert!(!s.split('/').any(|seg| seg == ".."), "traversal accepted");
        assert!(!s.contains(['%', '\\', '\0']), "escapes accepted");
    }
    let _ = loose_ipv4(s);
    let rule = serde_json::from_value(serde_json::json!({ "schemes": ["https", "http"] }))
        .expect("a valid rule");
    if let Ok(canonical) = futures::executor::block_on(check_url(s, &rule, &Table)) {
        let url = url_host(&canonical);
        assert!(!url.to_ascii_lowercase().contains("in"), "an internal name passed: {canonical}");
        if let Some(ip) = url
            .trim_matches(['[', ']'])
            .parse::<IpAddr>()
            .ok()
            .or_else(|| loose_ipv4(&url).map(IpAddr::V4))
        {
            assert!(!internal(ip), "an internal address passed: {canonical}");
        }
    }
});

/// The host of a canonical (already parsed and serialised) URL.
fn url_host(canonical: &str) -> String {
    let rest = canonical.split_once("://").map_or(canonical, |(_, r)| r);
    let authority = rest.split(['/', '?', '#']).next().unwrap_or_default();
    let host = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    match host.strip_prefix('[') {
        Some(v6) => v6.split(']').next().unwrap_or_default().to_string(),
        None => host.split(':').next().unwrap_or_default().to_string(),
    }
}
