//! Recognises credentials in text: admission refuses them as plaintext env values, the
//! gateway redacts them from results. One set of patterns so that both agree.

use regex::Regex;
use std::collections::BTreeMap;
use std::sync::LazyLock;

/// A kind of credential, named in audit records and admission messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum SecretKind {
    AwsAccessKey,
    AwsSecretKey,
    GithubToken,
    GitlabToken,
    SlackToken,
    SlackWebhook,
    PrivateKey,
    Jwt,
    Bearer,
    GoogleApiKey,
    StripeKey,
    ProviderApiKey,
    GenericKeyValue,
}

impl SecretKind {
    pub fn as_str(self) -> &'static str {
        match self {
            SecretKind::AwsAccessKey => "aws-access-key",
            SecretKind::AwsSecretKey => "aws-secret-key",
            SecretKind::GithubToken => "github-token",
            SecretKind::GitlabToken => "gitlab-token",
            SecretKind::SlackToken => "slack-token",
            SecretKind::SlackWebhook => "slack-webhook",
            SecretKind::PrivateKey => "private-key",
            SecretKind::Jwt => "jwt",
            SecretKind::Bearer => "bearer-token",
            SecretKind::GoogleApiKey => "google-api-key",
            SecretKind::StripeKey => "stripe-key",
            SecretKind::ProviderApiKey => "api-key",
            SecretKind::GenericKeyValue => "high-entropy-value",
        }
    }
}

struct Pattern {
    kind: SecretKind,
    regex: Regex,
    /// Index of the capture group that holds the secret itself (0: the whole match).
    group: usize,
}

// Compiled once; the patterns are literals covered by tests, so a failure is a build defect.
#[allow(clippy::expect_used)]
static PATTERNS: LazyLock<Vec<Pattern>> = LazyLock::new(|| {
    let p = |kind, re: &str, group| Pattern {
        kind,
        regex: Regex::new(re).expect("secret pattern compiles"),
        group,
    };
    vec![
        p(
            SecretKind::PrivateKey,
            r"-----BEGIN ([A-Z0-9]+ )*PRIVATE KEY( BLOCK)?-----[\s\S]*?(-----END ([A-Z0-9]+ )*PRIVATE KEY( BLOCK)?-----|\z)",
            0,
        ),
        p(SecretKind::AwsAccessKey, r"\b(?:AKIA|ASIA|ABIA|ACCA|A3T[A-Z0-9])[A-Z0-9]{16}\b", 0),
        p(
            SecretKind::AwsSecretKey,
            r#"(?i)aws.{0,20}?(?:secret|sk).{0,20}?[=:]\s*["']?([A-Za-z0-9/+=]{40})\b"#,
            1,
        ),
        p(
            SecretKind::GithubToken,
            r"\b(?:gh[pousr]_[A-Za-z0-9]{36,255}|github_pat_[A-Za-z0-9_]{22,255})\b",
            0,
        ),
        p(SecretKind::GitlabToken, r"\bgl(?:pat|dt|rt|ptt|cbt)-[A-Za-z0-9_\-]{20,}", 0),
        p(SecretKind::SlackWebhook, r"https://hooks\.slack\.com/services/[A-Za-z0-9_/]+", 0),
        p(SecretKind::SlackToken, r"\bxox[abposr]-[A-Za-z0-9-]{10,}", 0),
        p(SecretKind::Jwt, r"\beyJ[A-Za-z0-9_-]{8,}\.eyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}", 0),
        p(SecretKind::GoogleApiKey, r"\bAIza[0-9A-Za-z_\-]{35}\b", 0),
        p(SecretKind::StripeKey, r"\b(?:sk|rk)_live_[0-9A-Za-z]{20,}\b", 0),
        p(SecretKind::ProviderApiKey, r"\bsk-(?:ant-|proj-)?[A-Za-z0-9_\-]{32,}", 0),
        p(SecretKind::Bearer, r"(?i)\bbearer\s+([A-Za-z0-9._~+/=\-]{16,})", 1),
        p(
            SecretKind::GenericKeyValue,
            r#"(?i)\b[a-z0-9_.\-]*(?:api[_\-]?key|secret|token|passw(?:or)?d|pwd|access[_\-]?key|credential)s?["']?\s*[:=]\s*["']?([^\s"',;&]{8,})"#,
            1,
        ),
    ]
});

/// A credential found in a text: its kind and byte range.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finding {
    pub kind: SecretKind,
    pub start: usize,
    pub end: usize,
}

/// Shannon entropy in bits per character: separates `password=hunter2hunter2` from
/// `password=${PASSWORD}` poorly, but separates real keys from English words well.
pub fn entropy(s: &str) -> f64 {
    let mut counts: BTreeMap<char, usize> = BTreeMap::new();
    let mut n = 0usize;
    for c in s.chars() {
        *counts.entry(c).or_default() += 1;
        n += 1;
    }
    if n == 0 {
        return 0.0;
    }
    counts
        .values()
        .map(|&c| {
            let p = c as f64 / n as f64;
            -p * p.log2()
        })
        .sum()
}

fn generic_value_is_secret(value: &str) -> bool {
    // References and placeholders are not secrets.
    if value.starts_with('$') || value.starts_with('<') || value.starts_with('{') {
        return false;
    }
    value.len() >= 12 && entropy(value) >= 3.3
}

/// Every credential in `text`, without overlaps, in order.
pub fn find(text: &str) -> Vec<Finding> {
    let mut found: Vec<Finding> = Vec::new();
    for pattern in PATTERNS.iter() {
        for caps in pattern.regex.captures_iter(text) {
            let Some(m) = caps.get(pattern.group) else { continue };
            if pattern.kind == SecretKind::GenericKeyValue && !generic_value_is_secret(m.as_str()) {
                continue;
            }
            if found.iter().any(|f| m.start() < f.end && f.start < m.end()) {
                continue;
            }
            found.push(Finding { kind: pattern.kind, start: m.start(), end: m.end() });
        }
    }
    found.sort_by_key(|f| f.start);
    found
}

/// Whether a value by itself looks like a credential (used for env values, where the value
/// stands alone, so a long high-entropy token counts even without a `key=` prefix).
pub fn value_looks_secret(value: &str) -> Option<SecretKind> {
    if let Some(f) = find(value).first() {
        return Some(f.kind);
    }
    let v = value.trim();
    let token_like = v.len() >= 24
        && !v.contains(char::is_whitespace)
        && !v.contains("://")
        && !v.starts_with('/')
        && v.chars().any(|c| c.is_ascii_digit())
        && v.chars().any(|c| c.is_ascii_alphabetic());
    (token_like && entropy(v) >= 4.0).then_some(SecretKind::GenericKeyValue)
}

/// The words of an identifier, upper case: split at `_`, `-`, `.` and at lower-to-upper case
/// changes (`GIT_AUTHOR_NAME` -> GIT AUTHOR NAME, `apiKey` -> API KEY).
pub fn words(name: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut prev_lower = false;
    for c in name.chars() {
        if !c.is_ascii_alphanumeric() {
            if !cur.is_empty() {
                out.push(std::mem::take(&mut cur));
            }
            prev_lower = false;
            continue;
        }
        if c.is_ascii_uppercase() && prev_lower && !cur.is_empty() {
            out.push(std::mem::take(&mut cur));
        }
        prev_lower = c.is_ascii_lowercase() || c.is_ascii_digit();
        cur.push(c.to_ascii_uppercase());
    }
    if !cur.is_empty() {
        out.push(cur);
    }
    out
}

/// Words that name a credential on their own.
const CREDENTIAL_WORDS: &[&str] = &[
    "TOKEN",
    "SECRET",
    "PASSWORD",
    "PASSWD",
    "PASSPHRASE",
    "PWD",
    "APIKEY",
    "CREDENTIAL",
    "CREDENTIALS",
    "CREDS",
    "PRIVATEKEY",
    "SECRETKEY",
    "ACCESSKEY",
    "AUTHORIZATION",
    "COOKIE",
];
/// Words that name a credential when they come before `KEY`.
const KEY_QUALIFIERS: &[&str] =
    &["API", "ACCESS", "PRIVATE", "SECRET", "SIGNING", "ENCRYPTION", "MASTER", "LICENSE", "AUTH"];
/// Last words that make a name a reference to a credential, or a setting about one, rather
/// than the credential (`TOKEN_FILE`, `SECRET_NAME`, `TOKEN_TTL`).
const NOT_THE_VALUE: &[&str] = &[
    "FILE", "FILES", "PATH", "DIR", "FILENAME", "NAME", "ID", "REF", "URL", "URI", "ENDPOINT",
    "HOST", "PORT", "TYPE", "MODE", "TTL", "EXPIRY", "EXPIRES", "SECONDS", "LIFETIME", "LENGTH",
    "ENABLED", "HEADER", "FIELD", "KIND", "VERSION", "ISSUER", "AUDIENCE", "SCOPE", "SCOPES",
];

/// Whether an identifier (an environment variable, a command-line flag) says that it holds a
/// credential, judged by whole words: `GITHUB_TOKEN`, `db_password`, `apiKey`, `BASIC_AUTH`,
/// but not `MAX_TOKENS`, `GIT_AUTHOR_NAME`, `TOKEN_FILE` or `PWD` (the working directory).
pub fn name_looks_secret(name: &str) -> bool {
    let w = words(name);
    let Some(last) = w.last() else { return false };
    if NOT_THE_VALUE.contains(&last.as_str()) {
        return false;
    }
    if w.len() == 1 && (last == "PWD" || last == "OLDPWD") {
        return false;
    }
    let by_word = w.iter().any(|x| CREDENTIAL_WORDS.contains(&x.as_str()));
    let by_pair = w.windows(2).any(|p| p[1] == "KEY" && KEY_QUALIFIERS.contains(&p[0].as_str()));
    // BASIC_AUTH, PROXY_AUTH: an "auth" setting that is the credential itself.
    let auth_last = last == "AUTH" && w.len() > 1;
    by_word || by_pair || auth_last
}

/// Whether a value is a reference or placeholder rather than a literal (`${TOKEN}`, `$(cat
/// f)`, `<token>`, a file path).
fn is_reference(value: &str) -> bool {
    let v = value.trim();
    v.is_empty()
        || v.starts_with('$')
        || v.starts_with('<')
        || v.starts_with('{')
        || v.starts_with('/')
        || v.starts_with("file:")
}

/// Whether a URL carries a password in its user information (`postgres://u:p@db/x`).
pub fn url_has_credentials(value: &str) -> bool {
    let mut rest = value;
    while let Some(i) = rest.find("://") {
        let after = &rest[i + 3..];
        let authority = after.split(['/', '?', '#', ' ', '"', '\'']).next().unwrap_or_default();
        if let Some((userinfo, _host)) = authority.rsplit_once('@')
            && let Some((_user, password)) = userinfo.split_once(':')
            && !is_reference(password)
        {
            return true;
        }
        rest = after;
    }
    false
}

/// Why an argv entry (at `i`) passes a credential in plaintext, if it does: `--token=...`,
/// `--api-key VALUE`, a literal that looks like a key, or a URL with a password. The reason
/// never contains the value.
pub fn argument_credential(argv: &[String], i: usize) -> Option<String> {
    let arg = argv.get(i)?;
    if let Some(kind) = value_looks_secret(arg) {
        return Some(format!("a value that looks like a credential ({})", kind.as_str()));
    }
    if url_has_credentials(arg) {
        return Some("a URL with a password in it".into());
    }
    let flag = arg.strip_prefix("--").or_else(|| arg.strip_prefix('-'))?;
    match flag.split_once('=') {
        Some((name, value)) if name_looks_secret(name) && !is_reference(value) => {
            Some(format!("the credential flag --{name} with a literal value"))
        }
        Some(_) => None,
        None if name_looks_secret(flag) => {
            let next = argv.get(i + 1)?;
            (!next.starts_with('-') && !is_reference(next))
                .then(|| format!("the credential flag {arg} followed by a literal value"))
        }
        None => None,
    }
}

/// The text with every credential replaced by `[REDACTED:<kind>]`, and counts per kind.
pub fn redact(text: &str) -> (String, BTreeMap<SecretKind, usize>) {
    let findings = find(text);
    let mut counts = BTreeMap::new();
    if findings.is_empty() {
        return (text.to_string(), counts);
    }
    let mut out = String::with_capacity(text.len());
    let mut last = 0;
    for f in findings {
        out.push_str(&text[last..f.start]);
        out.push_str("[REDACTED:");
        out.push_str(f.kind.as_str());
        out.push(']');
        last = f.end;
        *counts.entry(f.kind).or_insert(0) += 1;
    }
    out.push_str(&text[last..]);
    (out, counts)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kinds(text: &str) -> Vec<SecretKind> {
        find(text).into_iter().map(|f| f.kind).collect()
    }

    #[test]
    fn finds_each_kind() {
        let cases = [
            ("AKIAIOSFODNN7EXAMPLE", SecretKind::AwsAccessKey),
            (
                "aws_secret_access_key = wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY",
                SecretKind::AwsSecretKey,
            ),
            ("ghp_0123456789abcdefghijABCDEFGHIJ012345", SecretKind::GithubToken),
            ("github_pat_11ABCDEFG0123456789_abcdefghijklmnop", SecretKind::GithubToken),
            ("glpat-abcdefghij0123456789", SecretKind::GitlabToken),
            ("xoxb-1234567890-abcdefghij", SecretKind::SlackToken),
            ("https://hooks.slack.com/services/T000/B000/XXXXXXXX", SecretKind::SlackWebhook),
            (
                "-----BEGIN RSA PRIVATE KEY-----\nMIIEow\n-----END RSA PRIVATE KEY-----",
                SecretKind::PrivateKey,
            ),
            ("-----BEGIN OPENSSH PRIVATE KEY-----\nb3Blbn", SecretKind::PrivateKey),
            (
                "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0.dozjgNryP4J3jVmNHl0w5N_XgL0n3I9PlFUP0THsR8U",
                SecretKind::Jwt,
            ),
            ("Authorization: Bearer abcdef0123456789ABCDEF", SecretKind::Bearer),
            ("AIzaSyA-1234567890abcdefghijklmnopqrstu", SecretKind::GoogleApiKey),
            ("sk_live_0123456789abcdefghijKLMN", SecretKind::StripeKey),
            ("sk-proj-abcdefghijklmnopqrstuvwxyz0123456789", SecretKind::ProviderApiKey),
            ("api_key=Zx9Q2mP7vL4kR8tW1yB6", SecretKind::GenericKeyValue),
            ("\"client_secret\": \"q8W3e9R2t7Y1u6I4o0P5\"", SecretKind::GenericKeyValue),
        ];
        for (text, want) in cases {
            assert_eq!(kinds(text), vec![want], "{text}");
        }
    }

    #[test]
    fn ignores_ordinary_text() {
        for text in [
            "the password field is required",
            "token=${GITHUB_TOKEN}",
            "password=changeme",
            "https://example.com/api/v1/items?page=2",
            "a perfectly normal sentence about keys and secrets",
        ] {
            assert!(find(text).is_empty(), "{text}: {:?}", find(text));
        }
    }

    #[test]
    fn redacts_and_counts() {
        let text = "key AKIAIOSFODNN7EXAMPLE and AKIAIOSFODNN7EXAMPL2 and ghp_0123456789abcdefghijABCDEFGHIJ012345.";
        let (out, counts) = redact(text);
        assert_eq!(
            out,
            "key [REDACTED:aws-access-key] and [REDACTED:aws-access-key] and [REDACTED:github-token]."
        );
        assert_eq!(counts.get(&SecretKind::AwsAccessKey), Some(&2));
        assert_eq!(counts.get(&SecretKind::GithubToken), Some(&1));
    }

    #[test]
    fn env_names_and_values() {
        for secret in [
            "GITHUB_TOKEN",
            "db_password",
            "apiKey",
            "OPENAI_API_KEY",
            "AWS_SECRET_ACCESS_KEY",
            "BASIC_AUTH",
            "DB_PWD",
            "oauthClientSecret",
            "SLACK_BOT_TOKEN",
            "AUTH_TOKEN",
        ] {
            assert!(name_looks_secret(secret), "{secret}");
        }
        for ordinary in [
            "TOKEN_FILE",
            "LOG_LEVEL",
            "GIT_AUTHOR_NAME",
            "MAX_TOKENS",
            "PWD",
            "SECRET_NAME",
            "OIDC_ISSUER",
            "TOKEN_TTL",
            "AUTH_MODE",
            "AUTHOR",
            "PRIMARY_KEY",
        ] {
            assert!(!name_looks_secret(ordinary), "{ordinary}");
        }
        assert!(value_looks_secret("Zk3p9Qx7Lm2Vb8Nw4Rt6Yh1Jc5Gd0Fs").is_some());
        assert!(value_looks_secret("info").is_none());
        assert!(value_looks_secret("https://api.example.com/v1/with/a/long/path").is_none());
        assert!(value_looks_secret("/var/run/secrets/token").is_none());
    }

    #[test]
    fn credentials_in_argv_and_urls() {
        let argv = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        let found = |v: &[&str]| {
            let a = argv(v);
            (0..a.len()).find_map(|i| argument_credential(&a, i))
        };
        assert!(found(&["server", "--token=s3cr3t-value"]).is_some());
        assert!(found(&["server", "--api-key", "abc123"]).is_some());
        assert!(found(&["server", "-password=hunter2"]).is_some());
        assert!(found(&["server", "--db", "postgres://app:hunter2@db:5432/x"]).is_some());
        assert!(found(&["server", "ghp_0123456789abcdefghijABCDEFGHIJ012345"]).is_some());
        assert!(found(&["server", "--token-file", "/var/run/token"]).is_none());
        assert!(found(&["server", "--token", "${TOKEN}"]).is_none());
        assert!(found(&["server", "--max-tokens", "4096"]).is_none());
        assert!(found(&["server", "--token", "--verbose"]).is_none());
        assert!(found(&["server", "https://api.example.com/v1"]).is_none());
        assert!(url_has_credentials("redis://:pa55@cache:6379"));
        assert!(!url_has_credentials("ssh://git@github.com/x"));
        assert!(!url_has_credentials("postgres://app:${DB_PASSWORD}@db/x"));
    }
}
