//! Palisade's own message definitions against the official MCP schema (2026-07-28), used as
//! the oracle: every official example passes our validator; mutated examples fail it; and on
//! every case our verdict agrees with a JSON Schema validator run on the official file (with
//! `additionalProperties: false` added where Palisade closes an object by policy).
//!
//! The schema and examples are data of the workplace (`../shared/mcp-schemas`, beside the
//! repository), read at test time and never copied into it. PALISADE_MCP_SCHEMAS names another
//! directory. Without them the tests fail.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};

use palisade_gateway::protocol::jsonrpc::Message;
use palisade_gateway::protocol::revision::R2026;
use palisade_gateway::protocol::schema::{self, Direction};
use serde_json::{Value, json};

/// The schemas' directory; the tests fail without it.
fn schemas_dir() -> PathBuf {
    let dir = std::env::var("PALISADE_MCP_SCHEMAS")
        .map(PathBuf::from)
        .unwrap_or_else(|_| Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/mcp-schemas"));
    assert!(
        dir.join("2026-07-28.schema.json").exists(),
        "the official MCP schemas are missing at {} (set PALISADE_MCP_SCHEMAS to their directory)",
        dir.display()
    );
    dir
}

/// Definition name -> the method it belongs to.
const METHODS: &[(&str, &str)] = &[
    ("CallTool", "tools/call"),
    ("ListTools", "tools/list"),
    ("ListResources", "resources/list"),
    ("ListResourceTemplates", "resources/templates/list"),
    ("ReadResource", "resources/read"),
    ("ListPrompts", "prompts/list"),
    ("GetPrompt", "prompts/get"),
    ("Complete", "completion/complete"),
    ("Discover", "server/discover"),
    ("SubscriptionsListen", "subscriptions/listen"),
];

/// How Palisade checks an instance of a definition; `None` for definitions it does not check
/// on their own (content blocks and other nested objects are checked inside messages).
#[derive(Clone, Copy, Debug)]
enum Kind {
    Request,
    Params(&'static str),
    Result(&'static str),
    ResultResponse(&'static str),
    Notification,
    ErrorResponse,
}

fn kind_of(def: &str) -> Option<Kind> {
    if def.ends_with("Error") {
        return Some(Kind::ErrorResponse);
    }
    if def.ends_with("Notification") {
        return Some(Kind::Notification);
    }
    for (prefix, method) in METHODS {
        if def == format!("{prefix}Request") {
            return Some(Kind::Request);
        }
        if def == format!("{prefix}RequestParams") {
            return Some(Kind::Params(method));
        }
        if def == format!("{prefix}Result") {
            return Some(Kind::Result(method));
        }
        if def == format!("{prefix}ResultResponse") {
            return Some(Kind::ResultResponse(method));
        }
    }
    None
}

/// Our verdict: `Ok` when Palisade accepts the instance (strict mode).
fn ours(kind: Kind, v: &Value) -> Result<(), String> {
    let c2s = |m: &str| {
        schema::method(m, Direction::ClientToServer, R2026).ok_or(format!("no method {m}"))
    };
    match kind {
        Kind::Request => match Message::parse(v).map_err(|e| e.message)? {
            Message::Request { method, params, .. } => {
                schema::check_params(c2s(&method)?, params.as_ref(), R2026, true)
                    .map_err(|e| e.to_string())
            }
            _ => Err("not a request".into()),
        },
        Kind::Params(m) => {
            schema::check_params(c2s(m)?, Some(v), R2026, true).map_err(|e| e.to_string())
        }
        Kind::Result(m) => schema::check_result(c2s(m)?, v, R2026, true).map_err(|e| e.to_string()),
        Kind::ResultResponse(m) => match Message::parse(v).map_err(|e| e.message)? {
            Message::Result { result, .. } => {
                schema::check_result(c2s(m)?, &result, R2026, true).map_err(|e| e.to_string())
            }
            _ => Err("not a result response".into()),
        },
        Kind::Notification => match Message::parse(v).map_err(|e| e.message)? {
            Message::Notification { method, params } => {
                let def = schema::method(&method, Direction::ServerToClient, R2026)
                    .or_else(|| schema::method(&method, Direction::ClientToServer, R2026))
                    .ok_or(format!("no notification {method}"))?;
                schema::check_params(def, params.as_ref(), R2026, true).map_err(|e| e.to_string())
            }
            _ => Err("not a notification".into()),
        },
        // Examples of error definitions are a whole response or the error object alone.
        Kind::ErrorResponse => {
            let response = if v.get("jsonrpc").is_some() {
                v.clone()
            } else {
                json!({"jsonrpc": "2.0", "id": 1, "error": v})
            };
            match Message::parse(&response).map_err(|e| e.message)? {
                Message::Error { .. } => Ok(()),
                _ => Err("not an error".into()),
            }
        }
    }
}

/// The official verdict. A result response's `result` is an `anyOf` of `InputRequiredResult`
/// (open, so it would admit almost anything) and the method's result; `resultType` says which
/// one a receiver parses it as, so the branch is chosen by it, as the spec intends. When
/// `closed`, `additionalProperties: false` is added at the object Palisade closes for this kind
/// (params of a request, the result object).
fn official(schema: &Value, def: &str, kind: Kind, v: &Value, closed: bool) -> bool {
    let mut doc = schema.clone();
    let mut target = match kind {
        Kind::Params(_) | Kind::Result(_) => Some(def.to_string()),
        Kind::Request => doc["$defs"][def]["properties"]["params"]["$ref"]
            .as_str()
            .map(|r| r.rsplit('/').next().unwrap_or_default().to_string()),
        Kind::ResultResponse(_) => {
            let branch = if v["result"]["resultType"] == "input_required" {
                "InputRequiredResult".to_string()
            } else {
                def.trim_end_matches("Response").to_string()
            };
            doc["$defs"][def]["properties"]["result"] =
                json!({"$ref": format!("#/$defs/{branch}")});
            Some(branch)
        }
        _ => None,
    };
    if !closed {
        target = None;
    }
    if let Some(t) = target
        && doc["$defs"][&t].get("properties").is_some()
    {
        doc["$defs"][&t]["additionalProperties"] = json!(false);
    }
    doc["$ref"] = json!(format!("#/$defs/{def}"));
    let validator = jsonschema::options().build(&doc).expect("the official schema compiles");
    validator.is_valid(v)
}

/// The official file as it stands, without choosing a branch.
fn official_as_published(schema: &Value, def: &str, v: &Value) -> bool {
    let mut doc = schema.clone();
    doc["$ref"] = json!(format!("#/$defs/{def}"));
    jsonschema::options().build(&doc).expect("the official schema compiles").is_valid(v)
}

/// Mutations of an instance and whether they make it invalid for us and (closed) officially.
fn mutations(kind: Kind, v: &Value) -> Vec<(String, Value)> {
    let mut out = Vec::new();
    let (path, obj): (&str, Option<&Value>) = match kind {
        Kind::Request => ("/params", v.get("params")),
        Kind::ResultResponse(_) => ("/result", v.get("result")),
        Kind::Params(_) | Kind::Result(_) => ("", Some(v)),
        _ => return out,
    };
    let Some(obj) = obj.and_then(Value::as_object) else { return out };
    // An unknown member where Palisade closes the object.
    let mut extra = v.clone();
    pointer_obj(&mut extra, path).insert("palisadeInjected".into(), json!(true));
    out.push(("unknown member".into(), extra));
    // Each required-looking string member turned into a number, each member removed.
    for (key, val) in obj {
        if key == "_meta" {
            continue;
        }
        if val.is_string() {
            let mut wrong = v.clone();
            pointer_obj(&mut wrong, path).insert(key.clone(), json!(12345));
            out.push((format!("{key} as a number"), wrong));
        }
        let mut missing = v.clone();
        pointer_obj(&mut missing, path).remove(key);
        out.push((format!("{key} removed"), missing));
    }
    out
}

fn pointer_obj<'a>(v: &'a mut Value, path: &str) -> &'a mut serde_json::Map<String, Value> {
    if path.is_empty() {
        v.as_object_mut().unwrap()
    } else {
        v.pointer_mut(path).unwrap().as_object_mut().unwrap()
    }
}

#[test]
fn official_examples_pass_and_mutations_agree_with_the_official_schema() {
    let dir = schemas_dir();
    let schema: Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("2026-07-28.schema.json")).unwrap())
            .unwrap();
    let examples = dir.join("examples-2026-07-28");
    let mut checked = 0;
    let mut mutated = 0;
    let mut disagreements = Vec::new();
    let mut inconsistent = Vec::new();
    let mut defs: Vec<_> =
        std::fs::read_dir(&examples).unwrap().map(|e| e.unwrap().path()).collect();
    defs.sort();
    for def_dir in defs {
        let def = def_dir.file_name().unwrap().to_string_lossy().to_string();
        let Some(kind) = kind_of(&def) else { continue };
        for file in std::fs::read_dir(&def_dir).unwrap().map(|e| e.unwrap().path()) {
            let v: Value = serde_json::from_str(&std::fs::read_to_string(&file).unwrap()).unwrap();
            let name = format!("{def}/{}", file.file_name().unwrap().to_string_lossy());
            assert!(
                official_as_published(&schema, &def, &v),
                "{name}: the official schema rejects its own example?"
            );
            let strict = official(&schema, &def, kind, &v, false);
            let verdict = ours(kind, &v);
            if verdict.is_ok() != strict {
                disagreements.push(format!(
                    "{name}: Palisade says {verdict:?}, the official schema (branch by resultType) says {strict}"
                ));
                continue;
            }
            if !strict {
                // Only valid through the open InputRequiredResult branch although it says
                // "complete": the example omits fields its own result definition requires.
                inconsistent.push(format!("{name}: {}", verdict.err().unwrap_or_default()));
                continue;
            }
            checked += 1;
            for (what, m) in mutations(kind, &v) {
                let theirs = official(&schema, &def, kind, &m, true);
                let mine = ours(kind, &m);
                if mine.is_ok() != theirs {
                    disagreements.push(format!(
                        "{name} with {what}: Palisade says {mine:?}, the official schema (closed) says {theirs}: {m}"
                    ));
                }
                let mine = mine.is_ok();
                if !mine {
                    mutated += 1;
                }
            }
        }
    }
    assert!(
        disagreements.is_empty(),
        "{} disagreements:\n{}",
        disagreements.len(),
        disagreements.join("\n")
    );
    eprintln!(
        "{} official examples contradict their own definition and are rejected, as the schema requires:\n  {}",
        inconsistent.len(),
        inconsistent.join("\n  ")
    );
    eprintln!(
        "{checked} official examples accepted, {mutated} mutations rejected in agreement with the official schema"
    );
    // The counts of the schemas of 2026-07-28 as published (57 examples, 176 mutations): a
    // drop means examples went unchecked.
    assert!(checked >= 57, "only {checked} examples were checked");
    assert!(mutated >= 176, "only {mutated} mutations were rejected");
}

/// The top-level members (name -> required) of a params or result object in an official
/// schema, following `$ref` and `allOf`. `_meta` is left out: Palisade admits it everywhere,
/// as the base `Request`/`Result` of every revision does.
fn members(defs: &Value, schema: &Value) -> std::collections::BTreeMap<String, bool> {
    let mut out = std::collections::BTreeMap::new();
    let schema = match schema.get("$ref").and_then(Value::as_str) {
        Some(r) => &defs[r.rsplit('/').next().unwrap_or_default()],
        None => schema,
    };
    for part in schema.get("allOf").and_then(Value::as_array).into_iter().flatten() {
        out.extend(members(defs, part));
    }
    // Alternatives (form or URL elicitation): every member of any of them, required only
    // where all of them require it.
    if let Some(alternatives) = schema.get("anyOf").and_then(Value::as_array) {
        let each: Vec<_> = alternatives.iter().map(|a| members(defs, a)).collect();
        for m in &each {
            for key in m.keys() {
                let everywhere = each.iter().all(|o| o.get(key) == Some(&true));
                out.insert(key.clone(), everywhere);
            }
        }
    }
    let required: Vec<&str> = schema
        .get("required")
        .and_then(Value::as_array)
        .map(|r| r.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    for key in
        schema.get("properties").and_then(Value::as_object).into_iter().flatten().map(|p| p.0)
    {
        if key != "_meta" {
            out.insert(key.clone(), required.contains(&key.as_str()));
        }
    }
    out
}

fn ours_members(
    shape: &schema::Shape,
    rev: palisade_gateway::protocol::revision::Rev,
) -> std::collections::BTreeMap<String, bool> {
    shape
        .fields
        .iter()
        .filter(|f| f.present_in(rev) && f.name != "_meta")
        .map(|f| (f.name.to_string(), f.required_in(rev)))
        .collect()
}

/// Task methods of 2025-11-25: Palisade removes the `tasks` capability on both sides of
/// `initialize`, so no task is ever created and these methods are refused as unknown.
const NEGOTIATED_AWAY: &[&str] =
    &["tasks/get", "tasks/result", "tasks/cancel", "tasks/list", "notifications/tasks/status"];

/// Every method of every revision, in both directions: the same methods exist in Palisade's
/// tables, and their params and results have the same top-level members with the same
/// required-ness as the official schema of that revision.
#[test]
fn every_revision_has_the_official_methods_params_and_results() {
    let dir = schemas_dir();
    let mut problems = Vec::new();
    let mut compared = 0;
    for (i, rev_name) in palisade_core::revisions::KNOWN.iter().enumerate() {
        let rev = palisade_gateway::protocol::revision::Rev(i as u8);
        let file = dir.join(format!("{rev_name}.schema.json"));
        let doc: Value = serde_json::from_str(&std::fs::read_to_string(&file).unwrap()).unwrap();
        let defs = doc.get("$defs").or_else(|| doc.get("definitions")).unwrap();
        let mut official_methods = std::collections::BTreeSet::new();
        for (union, direction) in [
            ("ClientRequest", Direction::ClientToServer),
            ("ClientNotification", Direction::ClientToServer),
            ("ServerRequest", Direction::ServerToClient),
            ("ServerNotification", Direction::ServerToClient),
        ] {
            // A union of one is the definition itself (2026-07-28 ClientNotification).
            let members_of_union: Vec<(String, &Value)> = match defs[union].get("anyOf") {
                Some(Value::Array(a)) => a
                    .iter()
                    .map(|r| {
                        let name = r["$ref"].as_str().unwrap().rsplit('/').next().unwrap();
                        (name.to_string(), &defs[name])
                    })
                    .collect(),
                _ => vec![(union.to_string(), &defs[union])],
            };
            for (def_name, def) in members_of_union {
                let def_name = def_name.as_str();
                let Some(method) = def["properties"]["method"]["const"].as_str() else {
                    continue;
                };
                official_methods.insert((method.to_string(), format!("{direction:?}")));
                if NEGOTIATED_AWAY.contains(&method) {
                    // Must stay unknown to Palisade, so that they are refused.
                    if schema::method(method, direction, rev).is_some() {
                        problems.push(format!("{rev_name}: {method} should not be served"));
                    }
                    continue;
                }
                let Some(m) = schema::method(method, direction, rev) else {
                    problems.push(format!("{rev_name}: Palisade lacks {method} ({direction:?})"));
                    continue;
                };
                compared += 1;
                let params = members(defs, &def["properties"]["params"]);
                let mine = ours_members(m.params, rev);
                if params != mine {
                    problems.push(format!(
                        "{rev_name} {method} params: official {params:?}, Palisade {mine:?}"
                    ));
                }
                if let (Some(result_shape), Some(base)) =
                    (m.result, def_name.strip_suffix("Request"))
                {
                    let result_def = format!("{base}Result");
                    if defs.get(&result_def).is_some() {
                        let official = members(defs, &json!({"$ref": format!("#/x/{result_def}")}));
                        let mine = ours_members(result_shape, rev);
                        if official != mine {
                            problems.push(format!(
                                "{rev_name} {method} result: official {official:?}, Palisade {mine:?}"
                            ));
                        }
                    }
                }
            }
        }
        for m in schema::METHODS.iter().filter(|m| m.since <= rev && rev <= m.until) {
            if !official_methods.contains(&(m.name.to_string(), format!("{:?}", m.direction))) {
                problems.push(format!(
                    "{rev_name}: Palisade defines {} ({:?}), the official schema does not",
                    m.name, m.direction
                ));
            }
        }
    }
    assert!(problems.is_empty(), "{} differences:\n{}", problems.len(), problems.join("\n"));
    eprintln!(
        "{compared} method definitions across {} revisions agree",
        palisade_core::revisions::KNOWN.len()
    );
    assert!(compared >= 130, "only {compared} methods compared");
}
