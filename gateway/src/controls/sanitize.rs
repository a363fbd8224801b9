//! Error text that reaches clients: no absolute filesystem paths, no internal addresses, no
//! stack traces. What is removed is replaced by a marker, so the error still reads.

use std::sync::LazyLock;

use regex::Regex;

#[allow(clippy::expect_used)]
static PATH: LazyLock<Regex> = LazyLock::new(|| {
    // Unix absolute paths of two or more segments, and Windows drive paths.
    Regex::new(
        r#"(?:[A-Za-z]:\\[^\s'"<>|]+|(?:^|[\s'"(=:])(/[A-Za-z0-9._-]+(?:/[A-Za-z0-9._@+-]+)+/?))"#,
    )
    .expect("path pattern")
});
#[allow(clippy::expect_used)]
static IPV4: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"\b(?:\d{1,3}\.){3}\d{1,3}(?::\d{1,5})?\b").expect("ipv4 pattern")
});
#[allow(clippy::expect_used)]
static IPV6: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"\[?(?:[0-9a-fA-F]{1,4})?(?::(?:[0-9a-fA-F]{1,4})?){2,7}\]?(?::\d{1,5})?")
        .expect("ipv6 pattern")
});

fn internal_ip(candidate: &str) -> bool {
    let host = candidate.trim_start_matches('[').split(']').next().unwrap_or(candidate);
    let host =
        if host.matches(':').count() == 1 { host.split(':').next().unwrap_or(host) } else { host };
    host.parse::<std::net::IpAddr>().is_ok_and(|ip| !palisade_core::net::classify(ip).is_public())
}

/// `text` with stack traces cut, absolute paths and internal addresses masked.
pub fn text(input: &str) -> String {
    // Stack traces: keep the first line only.
    let first = input.lines().next().unwrap_or_default();
    let mut s = if input.contains("\n    at ")
        || input.contains("Traceback (most recent call last)")
        || input.contains("\n\tat ")
    {
        first.to_string()
    } else {
        input.to_string()
    };
    s = PATH
        .replace_all(&s, |c: &regex::Captures| {
            let whole = c.get(0).map(|m| m.as_str()).unwrap_or_default();
            match c.get(1) {
                Some(p) => whole.replace(p.as_str(), "<path>"),
                None => "<path>".to_string(),
            }
        })
        .into_owned();
    for re in [&*IPV4, &*IPV6] {
        s = re
            .replace_all(&s, |c: &regex::Captures| {
                let m = c.get(0).map(|m| m.as_str()).unwrap_or_default();
                if internal_ip(m) { "<internal-address>".to_string() } else { m.to_string() }
            })
            .into_owned();
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn masks_paths_addresses_and_traces() {
        assert_eq!(
            text("ENOENT: no such file or directory, open '/home/app/data/secret.txt'"),
            "ENOENT: no such file or directory, open '<path>'"
        );
        assert_eq!(text("cannot read C:\\Users\\svc\\key.pem"), "cannot read <path>");
        assert_eq!(
            text("connect ECONNREFUSED 10.1.2.3:5432"),
            "connect ECONNREFUSED <internal-address>"
        );
        assert_eq!(text("upstream 169.254.169.254 blocked"), "upstream <internal-address> blocked");
        assert_eq!(text("fetch [fd00:ec2::254]:80 failed"), "fetch <internal-address> failed");
        assert_eq!(text("public 8.8.8.8 is fine"), "public 8.8.8.8 is fine");
        assert_eq!(text("Error: boom\n    at f (/app/index.js:1:1)\n    at g"), "Error: boom");
        assert_eq!(text("ratio 1/2 and a/b stay"), "ratio 1/2 and a/b stay");
    }
}
