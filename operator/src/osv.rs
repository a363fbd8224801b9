//! OSV records (https://ossf.github.io/osv-schema/) to `MCPPolicy` advisories: the bridge from
//! a vulnerability feed (OSV exports, `osv-scanner` output, GitHub advisories) to the
//! operator's SBOM watch. Pure; the CLI reads the files and prints the policy.

use palisade_crds::mcppolicy::{Advisory, VersionRange};
use serde::Deserialize;

/// The CRD's bounds, checked here so that a generated policy is not refused at apply time.
const MAX_ADVISORIES: usize = 2048;
const MAX_VERSIONS: usize = 256;
const MAX_RANGES: usize = 32;

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum OsvError {
    #[error("{0}: not JSON: {1}")]
    Json(String, String),
    #[error("{0}: no OSV records (objects with `id` and `affected`)")]
    Empty(String),
    #[error(
        "{0} advisories are more than one MCPPolicy holds ({MAX_ADVISORIES}); split the feed by namespace or ecosystem"
    )]
    TooMany(usize),
}

#[derive(Deserialize)]
struct Record {
    id: String,
    #[serde(default)]
    withdrawn: Option<String>,
    #[serde(default)]
    affected: Vec<Affected>,
}

#[derive(Deserialize)]
struct Affected {
    #[serde(default)]
    package: Option<Package>,
    #[serde(default)]
    ranges: Vec<Range>,
    #[serde(default)]
    versions: Vec<String>,
}

#[derive(Deserialize)]
struct Package {
    #[serde(default)]
    ecosystem: String,
    #[serde(default)]
    name: String,
    #[serde(default)]
    purl: Option<String>,
}

#[derive(Deserialize)]
struct Range {
    #[serde(rename = "type")]
    kind: String,
    #[serde(default)]
    events: Vec<serde_json::Map<String, serde_json::Value>>,
}

/// What the conversion did with each record, for the operator's eyes.
#[derive(Debug, Default, PartialEq)]
pub struct Converted {
    pub advisories: Vec<Advisory>,
    /// `id: why` for every affected package that could not be expressed.
    pub skipped: Vec<String>,
}

/// The package URL (without version) of an OSV package, for the ecosystems whose SBOM purls
/// Palisade can match.
fn purl(p: &Package) -> Option<String> {
    if let Some(purl) = &p.purl {
        // The policy's schema keeps '@' for versions: encode an npm scope's.
        let (base, _) = crate::sbom::purl_parts(purl);
        return Some(base.replacen("/@", "/%40", 1));
    }
    let name = p.name.trim();
    if name.is_empty() {
        return None;
    }
    let kind = match p.ecosystem.as_str() {
        "npm" => return Some(format!("pkg:npm/{}", name.replacen('@', "%40", 1))),
        "PyPI" => {
            let normal: String = name
                .to_ascii_lowercase()
                .chars()
                .map(|c| if c == '_' || c == '.' { '-' } else { c })
                .collect();
            return Some(format!("pkg:pypi/{normal}"));
        }
        "Maven" => return name.split_once(':').map(|(g, a)| format!("pkg:maven/{g}/{a}")),
        "crates.io" => "cargo",
        "Go" => "golang",
        "RubyGems" => "gem",
        "NuGet" => "nuget",
        "Packagist" => "composer",
        "Hex" => "hex",
        "Pub" => "pub",
        _ => return None,
    };
    Some(format!("pkg:{kind}/{name}"))
}

/// OSV events in order: each `introduced` opens a range that the next `fixed`, `limit` or
/// `last_affected` closes; one left open is affected to the end.
fn ranges(events: &[serde_json::Map<String, serde_json::Value>]) -> Vec<VersionRange> {
    let mut out = vec![];
    let mut open: Option<Option<String>> = None;
    for e in events {
        let get = |k: &str| e.get(k).and_then(|v| v.as_str()).map(str::to_string);
        if let Some(v) = get("introduced") {
            // "0" means "from the first version": an open lower bound.
            open = Some((v != "0").then_some(v));
        } else if let Some(v) = get("fixed").or_else(|| get("limit")) {
            if let Some(introduced) = open.take() {
                out.push(VersionRange { introduced, fixed: Some(v), last_affected: None });
            }
        } else if let Some(v) = get("last_affected")
            && let Some(introduced) = open.take()
        {
            out.push(VersionRange { introduced, fixed: None, last_affected: Some(v) });
        }
    }
    if let Some(introduced) = open {
        out.push(VersionRange { introduced, fixed: None, last_affected: None });
    }
    out
}

fn collect_records<'a>(v: &'a serde_json::Value, out: &mut Vec<&'a serde_json::Value>) {
    match v {
        serde_json::Value::Object(o) => {
            if o.get("id").is_some_and(|i| i.is_string())
                && o.get("affected").is_some_and(|a| a.is_array())
            {
                out.push(v);
            } else {
                o.values().for_each(|c| collect_records(c, out));
            }
        }
        serde_json::Value::Array(a) => a.iter().for_each(|c| collect_records(c, out)),
        _ => {}
    }
}

/// Converts OSV documents: single records, arrays of them, or any JSON that contains them
/// (e.g. `osv-scanner --format json`). `sources` are (name, text) pairs.
pub fn convert(sources: &[(String, String)]) -> Result<Converted, OsvError> {
    let mut conv = Converted::default();
    for (name, text) in sources {
        let doc: serde_json::Value =
            serde_json::from_str(text).map_err(|e| OsvError::Json(name.clone(), e.to_string()))?;
        let mut found = vec![];
        collect_records(&doc, &mut found);
        if found.is_empty() {
            return Err(OsvError::Empty(name.clone()));
        }
        for raw in found {
            let record: Record = match serde_json::from_value(raw.clone()) {
                Ok(r) => r,
                Err(e) => {
                    conv.skipped.push(format!("{name}: an unreadable record: {e}"));
                    continue;
                }
            };
            if record.withdrawn.is_some() {
                conv.skipped.push(format!("{}: withdrawn", record.id));
                continue;
            }
            for a in &record.affected {
                add(&mut conv, &record.id, a);
            }
        }
    }
    conv.advisories.sort_by(|a, b| (&a.id, &a.package).cmp(&(&b.id, &b.package)));
    conv.advisories.dedup();
    if conv.advisories.len() > MAX_ADVISORIES {
        return Err(OsvError::TooMany(conv.advisories.len()));
    }
    Ok(conv)
}

fn add(conv: &mut Converted, id: &str, a: &Affected) {
    let Some(package) = a.package.as_ref().and_then(purl) else {
        let eco = a.package.as_ref().map_or("?", |p| p.ecosystem.as_str());
        conv.skipped.push(format!("{id}: ecosystem {eco} has no package URL Palisade matches"));
        return;
    };
    let mut ranges: Vec<VersionRange> = a
        .ranges
        .iter()
        .filter(|r| r.kind == "SEMVER" || r.kind == "ECOSYSTEM")
        .flat_map(|r| ranges(&r.events))
        .collect();
    ranges.dedup();
    let mut versions = a.versions.clone();
    // Ranges say the same as long version lists more compactly; keep the list only if short.
    if versions.len() > MAX_VERSIONS {
        if ranges.is_empty() {
            conv.skipped.push(format!(
                "{id} ({package}): {} versions and no range; more than an advisory holds",
                versions.len()
            ));
            return;
        }
        versions.clear();
    }
    if ranges.len() > MAX_RANGES {
        conv.skipped.push(format!("{id} ({package}): {} ranges", ranges.len()));
        return;
    }
    if versions.is_empty() && ranges.is_empty() {
        conv.skipped.push(format!("{id} ({package}): no SEMVER or ECOSYSTEM range or version"));
        return;
    }
    let id = id.chars().take(64).collect();
    conv.advisories.push(Advisory { id, package, versions, ranges });
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;
    use serde_json::json;

    fn one(record: serde_json::Value) -> Converted {
        convert(&[("feed.json".into(), record.to_string())]).unwrap()
    }

    #[test]
    fn an_npm_record_becomes_a_purl_with_its_fixed_range() {
        let c = one(json!({
            "id": "GHSA-w48q-cv73-mx4w", "aliases": ["CVE-2025-66414"],
            "affected": [{
                "package": {"ecosystem": "npm", "name": "@modelcontextprotocol/sdk"},
                "ranges": [{"type": "SEMVER", "events": [{"introduced": "0"}, {"fixed": "1.24.0"}]}],
            }],
        }));
        assert_eq!(c.skipped, Vec::<String>::new());
        assert_eq!(c.advisories.len(), 1);
        let a = &c.advisories[0];
        assert_eq!(a.package, "pkg:npm/%40modelcontextprotocol/sdk");
        assert_eq!(
            a.ranges,
            [VersionRange { introduced: None, fixed: Some("1.24.0".into()), last_affected: None }]
        );
    }

    #[test]
    fn events_pair_up_into_ranges_and_an_open_one_runs_to_the_end() {
        let events: Vec<_> = [
            json!({"introduced": "1.0.0"}),
            json!({"fixed": "1.0.5"}),
            json!({"introduced": "1.2.0"}),
            json!({"last_affected": "1.2.9"}),
            json!({"introduced": "2.0.0"}),
        ]
        .iter()
        .map(|e| e.as_object().unwrap().clone())
        .collect();
        let r = ranges(&events);
        let s = |v: &str| Some(v.to_string());
        assert_eq!(
            r,
            [
                VersionRange { introduced: s("1.0.0"), fixed: s("1.0.5"), last_affected: None },
                VersionRange { introduced: s("1.2.0"), fixed: None, last_affected: s("1.2.9") },
                VersionRange { introduced: s("2.0.0"), fixed: None, last_affected: None },
            ]
        );
    }

    #[test]
    fn package_urls_follow_each_ecosystem() {
        for (eco, name, want) in [
            ("PyPI", "Foo_Bar.baz", Some("pkg:pypi/foo-bar-baz")),
            ("Maven", "org.apache:commons-text", Some("pkg:maven/org.apache/commons-text")),
            ("Go", "github.com/x/y", Some("pkg:golang/github.com/x/y")),
            ("crates.io", "hyper", Some("pkg:cargo/hyper")),
            ("npm", "left-pad", Some("pkg:npm/left-pad")),
            ("Debian:12", "openssl", None),
        ] {
            let p = Package { ecosystem: eco.into(), name: name.into(), purl: None };
            assert_eq!(purl(&p).as_deref(), want, "{eco} {name}");
        }
        for (given, want) in [
            ("pkg:npm/%40scope/pkg@1.0.0", "pkg:npm/%40scope/pkg"),
            ("pkg:npm/@scope/pkg@1.0.0", "pkg:npm/%40scope/pkg"),
            ("pkg:pypi/mcp?repository_url=x", "pkg:pypi/mcp"),
            ("pkg:cargo/hyper", "pkg:cargo/hyper"),
        ] {
            let p =
                Package { ecosystem: String::new(), name: String::new(), purl: Some(given.into()) };
            assert_eq!(purl(&p).as_deref(), Some(want), "{given}");
        }
    }

    #[test]
    fn scanner_output_withdrawn_records_and_unknown_ecosystems() {
        // Records nested in a scanner report are found wherever they sit.
        let report = json!({"results": [{"packages": [{"vulnerabilities": [
            {"id": "PYSEC-2025-1", "affected": [{"package": {"ecosystem": "PyPI", "name": "mcp"},
                "versions": ["1.0.0", "1.0.1"]}]},
            {"id": "GHSA-old", "withdrawn": "2025-01-01T00:00:00Z", "affected": []},
            {"id": "DSA-1", "affected": [{"package": {"ecosystem": "Debian:12", "name": "openssl"},
                "versions": ["3.0"]}]},
            {"id": "GHSA-git", "affected": [{"package": {"ecosystem": "npm", "name": "x"},
                "ranges": [{"type": "GIT", "events": [{"introduced": "abc"}]}]}]},
        ]}]}]});
        let c = one(report);
        assert_eq!(c.advisories.len(), 1);
        assert_eq!(c.advisories[0].versions, ["1.0.0", "1.0.1"]);
        assert_eq!(c.skipped.len(), 3, "{:?}", c.skipped);
        assert!(c.skipped.iter().any(|s| s.starts_with("GHSA-old: withdrawn")));
        assert!(c.skipped.iter().any(|s| s.contains("Debian:12")));
        assert!(c.skipped.iter().any(|s| s.contains("no SEMVER")));
    }

    #[test]
    fn bad_input_is_refused_with_the_file_name() {
        let err = convert(&[("a.json".into(), "{".into())]).unwrap_err();
        assert!(matches!(err, OsvError::Json(ref n, _) if n == "a.json"), "{err}");
        let err = convert(&[("b.json".into(), "{\"x\": 1}".into())]).unwrap_err();
        assert_eq!(err, OsvError::Empty("b.json".into()));
        let many: Vec<_> = (0..=MAX_ADVISORIES)
            .map(|i| {
                json!({"id": format!("X-{i}"), "affected": [{
                "package": {"ecosystem": "npm", "name": "p"}, "versions": ["1"]}]})
            })
            .collect();
        let err = convert(&[("c.json".into(), json!(many).to_string())]).unwrap_err();
        assert_eq!(err, OsvError::TooMany(MAX_ADVISORIES + 1));
    }

    /// What the conversion emits is what the operator matches: an OSV range round-trips into a
    /// finding for an affected SBOM component and none for the fixed version.
    #[test]
    fn converted_advisories_match_sbom_components() {
        use crate::sbom::{Component, findings};
        let c = one(json!({"id": "GHSA-1", "affected": [{
            "package": {"ecosystem": "npm", "name": "@modelcontextprotocol/sdk"},
            "ranges": [{"type": "SEMVER", "events": [{"introduced": "1.10.0"}, {"fixed": "1.24.0"}]}]}]}));
        let comp = |v: &str| Component {
            name: String::new(),
            version: None,
            purl: Some(format!("pkg:npm/%40modelcontextprotocol/sdk@{v}")),
        };
        assert_eq!(findings(&c.advisories, &[comp("1.23.0")]).len(), 1);
        assert!(findings(&c.advisories, &[comp("1.24.0")]).is_empty());
        assert!(findings(&c.advisories, &[comp("1.9.9")]).is_empty());
    }
}
