//! Signed SBOM attestations and the vulnerability watch (checklist 10.5).
//!
//! `cosign attest --type cyclonedx|spdxjson` stores a DSSE envelope around an in-toto statement
//! whose subject is the image digest and whose predicate is the SBOM. The operator verifies the
//! envelope with the server's cosign keys, checks the subject against the digest it runs, reads
//! the component list, and matches it against the advisories of the selecting MCPPolicies.
//! Everything here is pure; fetching lives in `signature.rs`.

use std::cmp::Ordering;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use palisade_crds::mcppolicy::{Advisory, VersionRange};
use serde::Deserialize;
use sigstore::crypto::{CosignVerificationKey, Signature};

/// Layer media type of cosign attestations.
pub const DSSE_MEDIA_TYPE: &str = "application/vnd.dsse.envelope.v1+json";
const IN_TOTO_PAYLOAD_TYPE: &str = "application/vnd.in-toto+json";
pub const CYCLONEDX: &str = "https://cyclonedx.org/bom";
pub const SPDX: &str = "https://spdx.dev/Document";
/// Bounds what a hostile registry can make the operator hold or walk.
pub const MAX_ENVELOPE_BYTES: i64 = 16 << 20;
const MAX_COMPONENTS: usize = 100_000;
const MAX_DEPTH: usize = 32;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Component {
    pub name: String,
    pub version: Option<String>,
    pub purl: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sbom {
    /// The predicate type ([`CYCLONEDX`] or [`SPDX`]).
    pub format: String,
    pub signed_by: String,
    pub components: Vec<Component>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SbomError {
    #[error(
        "no SBOM attestation of {0} was found in its registry (cosign attest --type cyclonedx)"
    )]
    Missing(String),
    #[error("no SBOM attestation of {image} verified: {reasons}")]
    Unverified { image: String, reasons: String },
    /// The registry failed; retried with the other blocked rechecks.
    #[error("{0}")]
    Unreachable(String),
    #[error("{0}")]
    Keys(String),
}

#[derive(Deserialize)]
struct Envelope {
    #[serde(rename = "payloadType")]
    payload_type: String,
    payload: String,
    #[serde(default)]
    signatures: Vec<EnvelopeSignature>,
}

#[derive(Deserialize)]
struct EnvelopeSignature {
    sig: String,
}

/// DSSE pre-authentication encoding: what the signature covers.
fn pae(payload_type: &str, payload: &[u8]) -> Vec<u8> {
    let mut out =
        format!("DSSEv1 {} {} {} ", payload_type.len(), payload_type, payload.len()).into_bytes();
    out.extend_from_slice(payload);
    out
}

/// The payload of an envelope signed by one of `keys`, and the name of that key.
pub fn verify_envelope(
    envelope: &[u8],
    keys: &[(String, CosignVerificationKey)],
) -> Result<(String, Vec<u8>), String> {
    let env: Envelope =
        serde_json::from_slice(envelope).map_err(|e| format!("not a DSSE envelope: {e}"))?;
    if env.payload_type != IN_TOTO_PAYLOAD_TYPE {
        return Err(format!("payload type {} is not in-toto", env.payload_type));
    }
    let payload =
        STANDARD.decode(env.payload.as_bytes()).map_err(|e| format!("payload encoding: {e}"))?;
    let signed = pae(&env.payload_type, &payload);
    for s in &env.signatures {
        for (name, key) in keys {
            if key.verify_signature(Signature::Base64Encoded(s.sig.as_bytes()), &signed).is_ok() {
                return Ok((name.clone(), payload));
            }
        }
    }
    Err(format!("{} signature(s), none made by a key in spec.signature.keys", env.signatures.len()))
}

#[derive(Deserialize)]
struct Statement {
    #[serde(rename = "_type")]
    type_: String,
    #[serde(rename = "predicateType")]
    predicate_type: String,
    #[serde(default)]
    subject: Vec<Subject>,
    #[serde(default)]
    predicate: serde_json::Value,
}

#[derive(Deserialize)]
struct Subject {
    #[serde(default)]
    digest: std::collections::BTreeMap<String, String>,
}

/// The SBOM in a verified statement about `digest` (`sha256:...`). `Ok(None)`: a statement of
/// another kind (e.g. SLSA provenance), which is skipped.
pub fn read_statement(
    payload: &[u8],
    digest: &str,
    signed_by: String,
) -> Result<Option<Sbom>, String> {
    let st: Statement =
        serde_json::from_slice(payload).map_err(|e| format!("not an in-toto statement: {e}"))?;
    if !st.type_.starts_with("https://in-toto.io/Statement/") {
        return Err(format!("statement type {} is not in-toto", st.type_));
    }
    let (algorithm, hex) = digest.split_once(':').unwrap_or(("sha256", digest));
    if !st.subject.iter().any(|s| s.digest.get(algorithm).is_some_and(|d| d == hex)) {
        // A valid signature over another image's SBOM must not vouch for this one.
        return Err(format!("the attestation is about another image, not {digest}"));
    }
    let predicate = match st.predicate.get("Data") {
        // cosign before v2 wrapped predicates as {"Data": ..., "Timestamp": ...}.
        Some(data) if st.predicate.get("Timestamp").is_some() => data,
        _ => &st.predicate,
    };
    let components = match st.predicate_type.as_str() {
        CYCLONEDX => cyclonedx_components(predicate)?,
        SPDX => spdx_components(predicate)?,
        _ => return Ok(None),
    };
    Ok(Some(Sbom { format: st.predicate_type, signed_by, components }))
}

fn text(v: &serde_json::Value, key: &str) -> Option<String> {
    v.get(key).and_then(|s| s.as_str()).map(str::to_string)
}

fn cyclonedx_components(bom: &serde_json::Value) -> Result<Vec<Component>, String> {
    if bom.get("bomFormat").and_then(|f| f.as_str()) != Some("CycloneDX") {
        return Err("the predicate is not a CycloneDX JSON document".into());
    }
    let mut out = vec![];
    // Components nest (a package inside an application); walk iteratively with a depth bound.
    let mut stack: Vec<(&serde_json::Value, usize)> = vec![(bom, 0)];
    while let Some((node, depth)) = stack.pop() {
        let Some(children) = node.get("components").and_then(|c| c.as_array()) else { continue };
        if depth >= MAX_DEPTH {
            return Err(format!("components nest deeper than {MAX_DEPTH}"));
        }
        for c in children {
            out.push(Component {
                name: text(c, "name").unwrap_or_default(),
                version: text(c, "version"),
                purl: text(c, "purl"),
            });
            if out.len() > MAX_COMPONENTS {
                return Err(format!("more than {MAX_COMPONENTS} components"));
            }
            stack.push((c, depth + 1));
        }
    }
    Ok(out)
}

fn spdx_components(doc: &serde_json::Value) -> Result<Vec<Component>, String> {
    let packages = doc
        .get("packages")
        .and_then(|p| p.as_array())
        .ok_or("the predicate is not an SPDX JSON document with packages")?;
    if packages.len() > MAX_COMPONENTS {
        return Err(format!("more than {MAX_COMPONENTS} packages"));
    }
    Ok(packages
        .iter()
        .map(|p| Component {
            name: text(p, "name").unwrap_or_default(),
            version: text(p, "versionInfo"),
            purl: p.get("externalRefs").and_then(|r| r.as_array()).and_then(|refs| {
                refs.iter()
                    .find(|r| r.get("referenceType").and_then(|t| t.as_str()) == Some("purl"))
                    .and_then(|r| text(r, "referenceLocator"))
            }),
        })
        .collect())
}

/// A purl's base (type, namespace, name) and version, with qualifiers and subpath dropped;
/// as written, not decoded.
pub fn purl_parts(purl: &str) -> (&str, Option<&str>) {
    let end = purl.find(['?', '#']).unwrap_or(purl.len());
    let bare = &purl[..end];
    // The version follows the last '@' after the type; an npm scope's '@' may be unencoded.
    let after_type = bare.find('/').map_or(0, |i| i + 1);
    match bare[after_type..].rfind('@') {
        Some(i) if i > 0 => (&bare[..after_type + i], Some(&bare[after_type + i + 1..])),
        _ => (bare, None),
    }
}

/// A purl's base percent-decoded and lower-cased (npm and PyPI names are case-insensitive),
/// and its version.
fn split_purl(purl: &str) -> (String, Option<String>) {
    let (base, version) = purl_parts(purl);
    (normalize(base), version.map(percent_decode))
}

fn normalize(base: &str) -> String {
    percent_decode(base).to_ascii_lowercase()
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = bytes.get(i + 1..i + 3).and_then(|h| std::str::from_utf8(h).ok());
        match (bytes[i], hex.and_then(|h| u8::from_str_radix(h, 16).ok())) {
            (b'%', Some(b)) => {
                out.push(b);
                i += 3;
            }
            (b, _) => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Dotted numeric order: numeric parts compare as numbers, others as text; a pre-release
/// (`-rc.1`) sorts before its release; build metadata (`+...`) and a leading `v` are ignored.
pub fn compare_versions(a: &str, b: &str) -> Ordering {
    fn parts(v: &str) -> (Vec<&str>, Option<&str>) {
        let v = v.trim().trim_start_matches(['v', 'V']);
        let v = v.split('+').next().unwrap_or(v);
        let (release, pre) = match v.split_once('-') {
            Some((r, p)) => (r, Some(p)),
            None => (v, None),
        };
        (release.split('.').collect(), pre)
    }
    fn part(a: &str, b: &str) -> Ordering {
        match (a.parse::<u64>(), b.parse::<u64>()) {
            (Ok(x), Ok(y)) => x.cmp(&y),
            (Ok(_), Err(_)) => Ordering::Less,
            (Err(_), Ok(_)) => Ordering::Greater,
            (Err(_), Err(_)) => a.cmp(b),
        }
    }
    let (ra, pa) = parts(a);
    let (rb, pb) = parts(b);
    for i in 0..ra.len().max(rb.len()) {
        let o = part(ra.get(i).copied().unwrap_or("0"), rb.get(i).copied().unwrap_or("0"));
        if o != Ordering::Equal {
            return o;
        }
    }
    match (pa, pb) {
        (None, None) => Ordering::Equal,
        (Some(_), None) => Ordering::Less,
        (None, Some(_)) => Ordering::Greater,
        (Some(x), Some(y)) => {
            let (x, y): (Vec<&str>, Vec<&str>) = (x.split('.').collect(), y.split('.').collect());
            for i in 0..x.len().max(y.len()) {
                let o = match (x.get(i), y.get(i)) {
                    (Some(p), Some(q)) => part(p, q),
                    (None, Some(_)) => Ordering::Less,
                    (Some(_), None) => Ordering::Greater,
                    (None, None) => Ordering::Equal,
                };
                if o != Ordering::Equal {
                    return o;
                }
            }
            Ordering::Equal
        }
    }
}

fn in_range(version: &str, r: &VersionRange) -> bool {
    r.introduced.as_deref().is_none_or(|low| compare_versions(version, low) != Ordering::Less)
        && r.fixed.as_deref().is_none_or(|high| compare_versions(version, high) == Ordering::Less)
        && r.last_affected
            .as_deref()
            .is_none_or(|last| compare_versions(version, last) != Ordering::Greater)
}

/// `ID: purl@version` for every advisory that affects a listed component, sorted.
pub fn findings<'a>(
    advisories: impl IntoIterator<Item = &'a Advisory>,
    components: &[Component],
) -> Vec<String> {
    let listed: Vec<(String, String)> = components
        .iter()
        .filter_map(|c| {
            let (base, purl_version) = split_purl(c.purl.as_deref()?);
            Some((base, purl_version.or_else(|| c.version.clone())?))
        })
        .collect();
    let mut out: Vec<String> = advisories
        .into_iter()
        .flat_map(|a| {
            let package = normalize(&a.package);
            listed
                .iter()
                .filter(move |(base, version)| {
                    *base == package
                        && (a.versions.iter().any(|v| v == version)
                            || a.ranges.iter().any(|r| in_range(version, r)))
                })
                .map(move |(base, version)| format!("{}: {base}@{version}", a.id))
        })
        .collect();
    out.sort();
    out.dedup();
    out
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;
    use serde_json::json;
    use sigstore::crypto::SigningScheme;

    const DIGEST: &str = "sha256:4f0b9c8e1d7a6b5c4d3e2f1a0b9c8d7e6f5a4b3c2d1e0f9a8b7c6d5e4f3a2b1c";

    fn statement(predicate_type: &str, digest: &str, predicate: serde_json::Value) -> Vec<u8> {
        let (_, hex) = digest.split_once(':').unwrap();
        serde_json::to_vec(&json!({
            "_type": "https://in-toto.io/Statement/v0.1",
            "predicateType": predicate_type,
            "subject": [{"name": "registry.local/mcp/weather", "digest": {"sha256": hex}}],
            "predicate": predicate,
        }))
        .unwrap()
    }

    fn bom(components: serde_json::Value) -> serde_json::Value {
        json!({"bomFormat": "CycloneDX", "specVersion": "1.5", "components": components})
    }

    /// A P-256 key pair as cosign makes them, and an envelope signed with it.
    fn keypair() -> (sigstore::crypto::SigStoreSigner, CosignVerificationKey) {
        let signer = SigningScheme::ECDSA_P256_SHA256_ASN1.create_signer().unwrap();
        let pem = signer.to_sigstore_keypair().unwrap().public_key_to_pem().unwrap();
        let key =
            CosignVerificationKey::from_pem(pem.as_bytes(), &SigningScheme::default()).unwrap();
        (signer, key)
    }

    fn envelope(signer: &sigstore::crypto::SigStoreSigner, payload: &[u8]) -> Vec<u8> {
        let sig = signer.sign(&pae(IN_TOTO_PAYLOAD_TYPE, payload)).unwrap();
        serde_json::to_vec(&json!({
            "payloadType": IN_TOTO_PAYLOAD_TYPE,
            "payload": STANDARD.encode(payload),
            "signatures": [{"keyid": "", "sig": STANDARD.encode(sig)}],
        }))
        .unwrap()
    }

    #[test]
    fn an_envelope_verifies_only_with_the_key_that_signed_it() {
        let (signer, key) = keypair();
        let (_, other) = keypair();
        let payload = statement(CYCLONEDX, DIGEST, bom(json!([])));
        let env = envelope(&signer, &payload);
        let keys = vec![("ns/other[cosign.pub]".to_string(), other)];
        let err = verify_envelope(&env, &keys).unwrap_err();
        assert!(err.contains("none made by a key"), "{err}");
        let keys = vec![keys[0].clone(), ("ns/trusted[cosign.pub]".to_string(), key)];
        let (by, got) = verify_envelope(&env, &keys).unwrap();
        assert_eq!((by.as_str(), got), ("ns/trusted[cosign.pub]", payload));
    }

    #[test]
    fn a_changed_payload_or_type_breaks_the_signature() {
        let (signer, key) = keypair();
        let keys = vec![("k".to_string(), key)];
        let payload = statement(CYCLONEDX, DIGEST, bom(json!([])));
        let mut env: serde_json::Value =
            serde_json::from_slice(&envelope(&signer, &payload)).unwrap();
        let forged = statement(CYCLONEDX, DIGEST, bom(json!([{"name": "x"}])));
        env["payload"] = json!(STANDARD.encode(&forged));
        assert!(verify_envelope(&serde_json::to_vec(&env).unwrap(), &keys).is_err());
        env["payload"] = json!(STANDARD.encode(&payload));
        env["payloadType"] = json!("application/json");
        assert!(verify_envelope(&serde_json::to_vec(&env).unwrap(), &keys).is_err());
        assert!(verify_envelope(b"{not json", &keys).unwrap_err().contains("not a DSSE"));
    }

    #[test]
    fn a_statement_about_another_digest_is_refused() {
        let other = DIGEST.replace("4f0b", "0000");
        let payload = statement(CYCLONEDX, &other, bom(json!([])));
        let err = read_statement(&payload, DIGEST, "k".into()).unwrap_err();
        assert!(err.contains("another image"), "{err}");
        assert!(read_statement(&payload, &other, "k".into()).unwrap().is_some());
    }

    #[test]
    fn cyclonedx_components_are_read_at_every_depth_and_spdx_packages_too() {
        let nested = bom(json!([
            {"name": "weather", "version": "1.0.0", "components": [
                {"name": "@modelcontextprotocol/sdk", "version": "1.0.0",
                 "purl": "pkg:npm/%40modelcontextprotocol/sdk@1.0.0"},
            ]},
            {"name": "zod", "version": "3.23.8", "purl": "pkg:npm/zod@3.23.8"},
        ]));
        let sbom = read_statement(&statement(CYCLONEDX, DIGEST, nested), DIGEST, "k".into())
            .unwrap()
            .unwrap();
        let mut names: Vec<_> = sbom.components.iter().map(|c| c.name.as_str()).collect();
        names.sort();
        assert_eq!(names, ["@modelcontextprotocol/sdk", "weather", "zod"]);

        let spdx = json!({"spdxVersion": "SPDX-2.3", "packages": [
            {"name": "mcp", "versionInfo": "1.2.0", "externalRefs": [
                {"referenceCategory": "PACKAGE-MANAGER", "referenceType": "purl",
                 "referenceLocator": "pkg:pypi/mcp@1.2.0"}]},
        ]});
        let sbom =
            read_statement(&statement(SPDX, DIGEST, spdx), DIGEST, "k".into()).unwrap().unwrap();
        assert_eq!(sbom.components[0].purl.as_deref(), Some("pkg:pypi/mcp@1.2.0"));

        let provenance = statement("https://slsa.dev/provenance/v1", DIGEST, json!({}));
        assert_eq!(read_statement(&provenance, DIGEST, "k".into()).unwrap(), None);
        let not_a_bom = statement(CYCLONEDX, DIGEST, json!({"components": []}));
        assert!(read_statement(&not_a_bom, DIGEST, "k".into()).is_err());
    }

    #[test]
    fn deeply_nested_components_are_refused_not_walked_forever() {
        let mut node = json!({"name": "leaf"});
        for _ in 0..MAX_DEPTH + 1 {
            node = json!({"name": "n", "components": [node]});
        }
        let doc = bom(json!([node]));
        let err =
            read_statement(&statement(CYCLONEDX, DIGEST, doc), DIGEST, "k".into()).unwrap_err();
        assert!(err.contains("deeper"), "{err}");
    }

    #[test]
    fn versions_compare_numerically_with_prereleases_first() {
        use Ordering::*;
        for (a, b, o) in [
            ("1.10.0", "1.9.2", Greater),
            ("1.2", "1.2.0", Equal),
            ("v1.2.3", "1.2.3", Equal),
            ("1.2.0-rc.1", "1.2.0", Less),
            ("1.2.0-rc.2", "1.2.0-rc.10", Less),
            ("1.2.0+build.5", "1.2.0", Equal),
            ("2.0.0", "10.0.0", Less),
        ] {
            assert_eq!(compare_versions(a, b), o, "{a} vs {b}");
            assert_eq!(compare_versions(b, a), o.reverse(), "{b} vs {a}");
        }
    }

    fn advisory(
        package: &str,
        versions: &[&str],
        ranges: &[(Option<&str>, Option<&str>)],
    ) -> Advisory {
        Advisory {
            id: "CVE-2025-0001".into(),
            package: package.into(),
            versions: versions.iter().map(|v| v.to_string()).collect(),
            ranges: ranges
                .iter()
                .map(|(i, f)| VersionRange {
                    introduced: i.map(str::to_string),
                    fixed: f.map(str::to_string),
                    last_affected: None,
                })
                .collect(),
        }
    }

    fn component(purl: &str) -> Component {
        Component { name: String::new(), version: None, purl: Some(purl.into()) }
    }

    #[test]
    fn advisories_match_by_package_and_affected_version() {
        let sdk = "pkg:npm/%40modelcontextprotocol/sdk";
        let below_fix = advisory(sdk, &[], &[(None, Some("1.24.0"))]);
        for (purl, hit) in [
            ("pkg:npm/%40modelcontextprotocol/sdk@1.23.9", true),
            ("pkg:npm/@modelcontextprotocol/sdk@1.0.0", true),
            ("pkg:npm/%40modelcontextprotocol/sdk@1.24.0", false),
            ("pkg:npm/%40modelcontextprotocol/sdk@1.100.0", false),
            ("pkg:npm/%40modelcontextprotocol/sdk-extra@1.0.0", false),
            ("pkg:npm/%40modelcontextprotocol/sdk@1.2.0?arch=x64#lib", true),
            ("pkg:pypi/mcp@1.0.0", false),
        ] {
            let got = findings([&below_fix], &[component(purl)]);
            assert_eq!(!got.is_empty(), hit, "{purl}: {got:?}");
        }
        let window = advisory("pkg:pypi/MCP", &["0.9.1"], &[(Some("1.2.0"), Some("1.2.5"))]);
        let versions = |v: &str| findings([&window], &[component(&format!("pkg:pypi/mcp@{v}"))]);
        assert_eq!(versions("1.2.0"), ["CVE-2025-0001: pkg:pypi/mcp@1.2.0"]);
        assert!(versions("1.1.9").is_empty());
        assert!(versions("1.2.5").is_empty());
        assert!(!versions("0.9.1").is_empty(), "exact versions match too");
        // A component without a purl version falls back to its version field.
        let c = Component {
            name: "mcp".into(),
            version: Some("1.2.3".into()),
            purl: Some("pkg:pypi/mcp".into()),
        };
        assert_eq!(findings([&window], &[c]).len(), 1);
        // An inclusive upper bound when no fix is known.
        let mut open = advisory("pkg:pypi/mcp", &[], &[(Some("1.0"), None)]);
        open.ranges[0].last_affected = Some("1.3.0".into());
        let hit =
            |v: &str| !findings([&open], &[component(&format!("pkg:pypi/mcp@{v}"))]).is_empty();
        assert!(hit("1.3.0") && hit("1.0.0") && !hit("1.3.1") && !hit("0.9"));
        // No purl: nothing to match on.
        let c = Component { name: "mcp".into(), version: Some("1.2.3".into()), purl: None };
        assert!(findings([&window], &[c]).is_empty());
    }
}
