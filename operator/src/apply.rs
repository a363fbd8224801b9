//! Server-side apply of rendered children, skipping objects that already match so that an
//! idle reconcile makes no API writes.
//!
//! An object is up to date when (1) it carries the hash of the desired object in
//! `palisade.dev/applied-hash` (so removed fields are noticed: the hash changes), and (2) every
//! field we set has the value we set (so hand edits of our fields are noticed and undone).

use kube::Client;
use kube::api::{Api, DynamicObject, Patch, PatchParams};
use kube::core::{ApiResource, GroupVersionKind};
use serde_json::Value;

use palisade_crds::quantity;

pub const FIELD_MANAGER: &str = "palisade-operator";
pub const APPLIED_HASH: &str = "palisade.dev/applied-hash";

/// Keys whose string values are Kubernetes quantities, which the API server canonicalises
/// (`0.5` is stored as `500m`).
const QUANTITY_KEYS: &[&str] = &["limits", "requests", "sizeLimit"];

fn is_zero(v: &Value) -> bool {
    match v {
        Value::Null => true,
        Value::Bool(b) => !b,
        Value::Number(n) => n.as_f64() == Some(0.0),
        Value::String(s) => s.is_empty(),
        Value::Array(a) => a.is_empty(),
        Value::Object(o) => o.is_empty(),
    }
}

/// Whether every field of `desired` is present in `live` with the same value. Zero values
/// match absent fields (Kubernetes omits them); quantities compare by value.
pub fn is_subset(desired: &Value, live: &Value) -> bool {
    subset(desired, live, false)
}

fn subset(desired: &Value, live: &Value, quantities: bool) -> bool {
    match (desired, live) {
        (Value::Object(d), Value::Object(l)) => d.iter().all(|(k, dv)| {
            let q = quantities || QUANTITY_KEYS.contains(&k.as_str());
            match l.get(k) {
                Some(lv) => subset(dv, lv, q),
                None => is_zero(dv),
            }
        }),
        (Value::Array(d), Value::Array(l)) => {
            d.len() == l.len() && d.iter().zip(l).all(|(dv, lv)| subset(dv, lv, quantities))
        }
        (Value::String(d), Value::String(l)) if quantities && d != l => {
            matches!((quantity::parse(d), quantity::parse(l)), (Ok(a), Ok(b)) if (a - b).abs() <= f64::EPSILON * a.abs().max(1.0))
        }
        (Value::Number(d), Value::Number(l)) => d.as_f64() == l.as_f64(),
        (d, l) => d == l || (is_zero(d) && l.is_null()),
    }
}

/// Adds the applied-hash annotation to `obj` and returns the hash.
pub fn stamp(obj: &mut Value) -> String {
    if let Some(meta) = obj.get_mut("metadata").and_then(Value::as_object_mut)
        && let Some(annotations) = meta.get_mut("annotations").and_then(Value::as_object_mut)
    {
        annotations.remove(APPLIED_HASH);
    }
    let hash = palisade_render::sha256_hex(obj.to_string().as_bytes());
    let meta = obj.as_object_mut().and_then(|o| {
        o.entry("metadata").or_insert_with(|| Value::Object(Default::default())).as_object_mut()
    });
    if let Some(meta) = meta {
        let annotations =
            meta.entry("annotations").or_insert_with(|| Value::Object(Default::default()));
        if let Some(a) = annotations.as_object_mut() {
            a.insert(APPLIED_HASH.to_string(), Value::String(hash.clone()));
        }
    }
    hash
}

/// What `ensure` did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Applied {
    Unchanged,
    Created,
    Updated,
}

/// The namespaced API of the object's kind.
pub fn api_for(
    client: &Client,
    obj: &Value,
    namespace: &str,
) -> Option<(Api<DynamicObject>, String)> {
    let api_version = obj.get("apiVersion")?.as_str()?;
    let kind = obj.get("kind")?.as_str()?;
    let (group, version) = api_version.rsplit_once('/').unwrap_or(("", api_version));
    let gvk = GroupVersionKind::gvk(group, version, kind);
    let ar = ApiResource::from_gvk(&gvk);
    let name = obj.pointer("/metadata/name")?.as_str()?.to_string();
    Some((Api::namespaced_with(client.clone(), namespace, &ar), name))
}

/// Where the live object comes from.
pub enum Live {
    /// From a watch cache: `None` means it does not exist (or the cache has not seen it yet,
    /// in which case the apply is a harmless no-op).
    Cached(Option<Value>),
    /// Not cached: read it from the API server.
    Fetch,
}

/// Applies `desired` unless the live object already matches it. Returns what happened; every
/// `Updated`/`Created` is one API write; an `Unchanged` from the cache costs no request.
pub async fn ensure(
    client: &Client,
    namespace: &str,
    mut desired: Value,
    live: Live,
) -> Result<Applied, kube::Error> {
    let hash = stamp(&mut desired);
    let Some((api, name)) = api_for(client, &desired, namespace) else {
        return Err(kube::Error::Discovery(kube::error::DiscoveryError::MissingResource(
            "rendered object without apiVersion, kind or name".into(),
        )));
    };
    let live = match live {
        Live::Cached(v) => v,
        Live::Fetch => match api.get_opt(&name).await? {
            Some(l) => Some(serde_json::to_value(l).map_err(kube::Error::SerdeError)?),
            None => None,
        },
    };
    let outcome = match &live {
        Some(l) => {
            let same_hash = l
                .pointer("/metadata/annotations")
                .and_then(|a| a.get(APPLIED_HASH))
                .and_then(Value::as_str)
                == Some(hash.as_str());
            if same_hash && is_subset(&desired, l) {
                return Ok(Applied::Unchanged);
            }
            Applied::Updated
        }
        None => Applied::Created,
    };
    // `force`: these objects belong to the operator; a person's `kubectl edit` takes ownership
    // of the fields it changed, and taking them back needs force.
    let pp = PatchParams::apply(FIELD_MANAGER).force();
    api.patch(&name, &pp, &Patch::Apply(&desired)).await?;
    Ok(outcome)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn subset_ignores_server_defaults_and_omitted_zero_values() {
        let desired =
            json!({"spec": {"hostNetwork": false, "replicas": 2, "env": [], "c": [{"name": "a"}]}});
        let live = json!({"spec": {"replicas": 2, "c": [{"name": "a", "terminationMessagePath": "/dev/termination-log"}], "dnsPolicy": "ClusterFirst"}});
        assert!(is_subset(&desired, &live));
    }

    #[test]
    fn subset_notices_changed_and_missing_fields() {
        let desired =
            json!({"spec": {"sc": {"readOnlyRootFilesystem": true}, "c": [{"name": "a"}]}});
        assert!(!is_subset(
            &desired,
            &json!({"spec": {"sc": {"readOnlyRootFilesystem": false}, "c": [{"name": "a"}]}})
        ));
        assert!(!is_subset(&desired, &json!({"spec": {"sc": {}, "c": [{"name": "a"}]}})));
        assert!(!is_subset(
            &desired,
            &json!({"spec": {"sc": {"readOnlyRootFilesystem": true}, "c": [{"name": "a"}, {"name": "b"}]}})
        ));
    }

    #[test]
    fn quantities_compare_by_value_only_where_they_are_quantities() {
        let desired =
            json!({"resources": {"limits": {"cpu": "0.5", "memory": "1Gi"}}, "image": "0.5"});
        assert!(is_subset(
            &desired,
            &json!({"resources": {"limits": {"cpu": "500m", "memory": "1Gi"}}, "image": "0.5"})
        ));
        assert!(!is_subset(
            &desired,
            &json!({"resources": {"limits": {"cpu": "400m", "memory": "1Gi"}}, "image": "0.5"})
        ));
        assert!(!is_subset(&json!({"image": "0.5"}), &json!({"image": "500m"})));
    }

    #[test]
    fn stamp_is_stable_and_ignores_its_own_annotation() {
        let mut a = json!({"metadata": {"name": "x", "annotations": {"k": "v"}}, "spec": {"a": 1}});
        let h1 = stamp(&mut a);
        let h2 = stamp(&mut a);
        assert_eq!(h1, h2);
        assert_eq!(a["metadata"]["annotations"][APPLIED_HASH], h1);
        let mut b = json!({"metadata": {"name": "x", "annotations": {"k": "v"}}, "spec": {"a": 2}});
        assert_ne!(stamp(&mut b), h1);
    }
}
