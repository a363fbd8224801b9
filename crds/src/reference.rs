//! A Markdown field reference generated from the CRD schemas, so that docs/api.md documents
//! every field with exactly the constraints the API server enforces.

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::{
    CustomResourceDefinition, JSONSchemaProps, JSONSchemaPropsOrArray,
};

fn escape(s: &str) -> String {
    s.replace('|', "\\|").replace('\n', " ")
}

fn type_of(p: &JSONSchemaProps) -> String {
    match p.type_.as_deref() {
        Some("array") => {
            let inner = match &p.items {
                Some(JSONSchemaPropsOrArray::Schema(s)) => type_of(s),
                _ => "any".to_string(),
            };
            format!("[]{inner}")
        }
        Some("object") if p.properties.is_none() && p.additional_properties.is_some() => {
            "map".into()
        }
        Some(t) => t.to_string(),
        None if p.x_kubernetes_int_or_string == Some(true) => "int-or-string".into(),
        None => "any".into(),
    }
}

fn constraints(p: &JSONSchemaProps) -> Vec<String> {
    let mut c = Vec::new();
    if let Some(e) = &p.enum_ {
        let vals: Vec<String> =
            e.iter().map(|v| format!("`{}`", v.0.as_str().unwrap_or(&v.0.to_string()))).collect();
        c.push(format!("one of {}", vals.join(", ")));
    }
    if let Some(JSONSchemaPropsOrArray::Schema(items)) = &p.items
        && let Some(e) = &items.enum_
    {
        let vals: Vec<String> =
            e.iter().map(|v| format!("`{}`", v.0.as_str().unwrap_or(&v.0.to_string()))).collect();
        c.push(format!("items one of {}", vals.join(", ")));
    }
    if let Some(v) = p.minimum {
        c.push(format!("≥ {v}"));
    }
    if let Some(v) = p.maximum {
        c.push(format!("≤ {v}"));
    }
    if let Some(v) = p.min_length {
        c.push(format!("length ≥ {v}"));
    }
    if let Some(v) = p.max_length {
        c.push(format!("length ≤ {v}"));
    }
    if let Some(v) = p.min_items {
        c.push(format!("items ≥ {v}"));
    }
    if let Some(v) = p.max_items {
        c.push(format!("items ≤ {v}"));
    }
    if let Some(v) = &p.pattern {
        c.push(format!("pattern `{v}`"));
    }
    for rule in p.x_kubernetes_validations.iter().flatten() {
        c.push(format!("CEL `{}`", rule.rule));
    }
    c
}

fn walk(out: &mut String, path: &str, p: &JSONSchemaProps, required: bool) {
    let default = p.default.as_ref().map(|d| format!("`{}`", d.0)).unwrap_or_default();
    out.push_str(&format!(
        "| `{path}` | {} | {} | {} | {} | {} |\n",
        type_of(p),
        if required { "yes" } else { "" },
        escape(&default),
        escape(p.description.as_deref().unwrap_or_default()),
        escape(&constraints(p).join("; ")),
    ));
    let item_schema = match &p.items {
        Some(JSONSchemaPropsOrArray::Schema(s)) => Some(s.as_ref()),
        _ => None,
    };
    let (props, req, prefix) = match (&p.properties, item_schema) {
        (Some(props), _) => (Some(props), p.required.clone().unwrap_or_default(), path.to_string()),
        (None, Some(item)) => (
            item.properties.as_ref(),
            item.required.clone().unwrap_or_default(),
            format!("{path}[]"),
        ),
        _ => (None, vec![], String::new()),
    };
    if let Some(props) = props {
        if prefix.ends_with("[]")
            && let Some(item) = item_schema
        {
            let c = constraints(item);
            if !c.is_empty() {
                out.push_str(&format!(
                    "| `{prefix}` | object | | | each item | {} |\n",
                    escape(&c.join("; "))
                ));
            }
        }
        for (name, child) in props {
            // Standard Kubernetes types are documented upstream; do not expand them.
            if matches!(name.as_str(), "matchExpressions" | "matchLabels") {
                continue;
            }
            walk(out, &format!("{prefix}.{name}"), child, req.contains(name));
        }
    }
}

/// The field reference of one CRD, as Markdown tables (spec, then status).
pub fn field_reference(crd: &CustomResourceDefinition) -> String {
    let kind = &crd.spec.names.kind;
    let mut out = format!("### {kind} fields\n\n");
    let Some(schema) = crd
        .spec
        .versions
        .first()
        .and_then(|v| v.schema.as_ref())
        .and_then(|s| s.open_api_v3_schema.as_ref())
    else {
        return out;
    };
    for section in ["spec", "status"] {
        let Some(p) = schema.properties.as_ref().and_then(|props| props.get(section)) else {
            continue;
        };
        out.push_str("| field | type | required | default | description | validation |\n|---|---|---|---|---|---|\n");
        walk(&mut out, section, p, false);
        out.push('\n');
    }
    out
}

pub const BEGIN: &str = "<!-- BEGIN GENERATED FIELD REFERENCE (make docs) -->";
pub const END: &str = "<!-- END GENERATED FIELD REFERENCE -->";

/// The generated block of docs/api.md.
pub fn generated_block() -> String {
    let mut out = format!("{BEGIN}\n\n");
    for (_, crd) in crate::crds() {
        out.push_str(&field_reference(&crd));
    }
    out.push_str(END);
    out
}

/// `doc` with its generated block replaced by the current one.
pub fn splice(doc: &str) -> Option<String> {
    let start = doc.find(BEGIN)?;
    let end = doc.find(END)? + END.len();
    Some(format!("{}{}{}", &doc[..start], generated_block(), &doc[end..]))
}
