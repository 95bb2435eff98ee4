//! Does applying a desired object change anything? Compared against the live object as the API server returns it,
//! which differs from what was applied in ways that mean nothing: Go's `omitempty` drops zero values (`value: ""`),
//! quantities come back canonical (`1000m` → `1`), defaults are added, and other managers may own extra entries of
//! the lists the API server merges by key. What does mean something: a zero value someone removed (a zero value
//! counts as present only where this manager still owns the field), an extra element of a list that is replaced
//! whole (`subjects`, `rules`, `args`), and fields this operator applied earlier but no longer renders (server-side
//! apply drops them when the manager stops sending them).

use mizzen::inject::gojson::go_empty;
use serde_json::{Map, Value};

type Fields = Map<String, Value>;

/// Whether a server-side apply of `desired` by `manager` would change `live`.
/// `apiVersion` and `kind` are not compared: objects from a list response do not carry them.
pub fn needs_apply(live: &Value, desired: &Value, manager: &str) -> bool {
    let owned = owned_fields(live, manager);
    let same = match (live, desired) {
        (Value::Object(l), Value::Object(d)) => {
            let d: Map<String, Value> = d
                .iter()
                .filter(|(k, _)| !matches!(k.as_str(), "apiVersion" | "kind"))
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect();
            contains_object(l, &d, None, owned)
        }
        _ => contains(live, desired, None, owned),
    };
    if !same {
        return true;
    }
    owned.is_some_and(|fields| owns_more_than(fields, desired))
}

/// Keys under which values are resource quantities (`resources.requests.cpu`, …).
fn holds_quantities(key: Option<&str>) -> bool {
    matches!(key, Some("requests" | "limits" | "hard"))
}

fn sub<'a>(owned: Option<&'a Fields>, key: &str) -> Option<&'a Fields> {
    owned?.get(&format!("f:{key}"))?.as_object()
}

fn contains_object(
    l: &Map<String, Value>,
    d: &Map<String, Value>,
    parent: Option<&str>,
    owned: Option<&Fields>,
) -> bool {
    d.iter().all(|(k, dv)| match l.get(k) {
        Some(lv) => {
            if holds_quantities(parent)
                && let (Value::String(a), Value::String(b)) = (lv, dv)
            {
                return same_quantity(a, b);
            }
            contains(lv, dv, Some(k), sub(owned, k))
        }
        // Absent: the API server dropped a zero value this manager applied (it still owns the field), or someone
        // removed the field (then nobody owns it any more).
        None => go_empty(dv) && sub(owned, k).is_some(),
    })
}

/// Whether every field of `desired` is in `live` with an equal value. `parent` is the key `desired` sits under;
/// `owned` is this manager's part of `fieldsV1` at this place.
fn contains(live: &Value, desired: &Value, parent: Option<&str>, owned: Option<&Fields>) -> bool {
    match (live, desired) {
        (Value::Object(l), Value::Object(d)) => contains_object(l, d, parent, owned),
        (Value::Array(l), Value::Array(d)) => contains_list(l, d, parent, owned),
        (Value::Number(l), Value::Number(d)) => l.as_f64() == d.as_f64(),
        _ => live == desired,
    }
}

fn same_quantity(a: &str, b: &str) -> bool {
    a == b
        || matches!(
            (mizzen::quantity::canonical(a), mizzen::quantity::canonical(b)),
            (Ok(x), Ok(y)) if x == y
        )
}

/// The merge key of the lists the API server merges by key (`x-kubernetes-list-type: map` / `patchMergeKey`), by
/// the field they sit under; every other list is replaced whole by an apply.
fn list_key(parent: Option<&str>, d: &[Value]) -> Option<&'static str> {
    let key = match parent? {
        "containers"
        | "initContainers"
        | "ephemeralContainers"
        | "env"
        | "volumes"
        | "imagePullSecrets"
        | "webhooks" => "name",
        "volumeMounts" => "mountPath",
        "ownerReferences" => "uid",
        "hostAliases" => "ip",
        "conditions" => "type",
        "ports" if d.iter().all(|e| e.get("containerPort").is_some()) => "containerPort",
        "ports" => "port",
        _ => return None,
    };
    d.iter().all(|e| e.get(key).is_some()).then_some(key)
}

/// This manager's `k:{...}` entry for a list element, matched on the key's fields (a key field the element leaves
/// out was defaulted, such as `protocol: TCP`).
fn owned_element<'a>(owned: Option<&'a Fields>, element: &Value) -> Option<&'a Fields> {
    owned?.iter().find_map(|(path, sub)| {
        let key = path.strip_prefix("k:")?;
        let Ok(Value::Object(key)) = serde_json::from_str::<Value>(key) else {
            return None;
        };
        key.iter()
            .all(|(k, v)| element.get(k).is_none_or(|ev| same_scalar(ev, v)))
            .then(|| sub.as_object())
            .flatten()
    })
}

/// Lists merged by key: each desired element must match the live element with the same key, in order; extra live
/// elements belong to other managers and survive an apply. Other lists must match element by element.
fn contains_list(l: &[Value], d: &[Value], parent: Option<&str>, owned: Option<&Fields>) -> bool {
    let Some(key) = list_key(parent, d) else {
        return l.len() == d.len() && l.iter().zip(d).all(|(lv, dv)| contains(lv, dv, parent, None));
    };
    let mut rest = l.iter();
    d.iter().all(|dv| {
        let own = owned_element(owned, dv);
        rest.by_ref().any(|lv| {
            lv.get(key)
                .is_some_and(|k| dv.get(key).is_some_and(|dk| same_scalar(k, dk)))
                && contains(lv, dv, parent, own)
        })
    })
}

/// The `fieldsV1` set `manager` owns through apply (the main resource, not a subresource).
fn owned_fields<'a>(live: &'a Value, manager: &str) -> Option<&'a Map<String, Value>> {
    live.get("metadata")?
        .get("managedFields")?
        .as_array()?
        .iter()
        .find(|e| {
            e.get("manager").and_then(Value::as_str) == Some(manager)
                && e.get("operation").and_then(Value::as_str) == Some("Apply")
                && e.get("subresource")
                    .and_then(Value::as_str)
                    .unwrap_or_default()
                    .is_empty()
        })?
        .get("fieldsV1")?
        .as_object()
}

/// Whether the owned set names a field that `desired` no longer has.
fn owns_more_than(fields: &Map<String, Value>, desired: &Value) -> bool {
    fields.iter().any(|(path, sub)| {
        let sub = sub.as_object();
        let deeper = |d: &Value| sub.is_some_and(|s| owns_more_than(s, d));
        if path == "." {
            false
        } else if let Some(name) = path.strip_prefix("f:") {
            match desired.get(name) {
                Some(d) => deeper(d),
                None => true,
            }
        } else if let Some(key) = path.strip_prefix("k:") {
            let Ok(Value::Object(key)) = serde_json::from_str::<Value>(key) else {
                return false;
            };
            // A key field the desired element leaves out was defaulted (`protocol: TCP`): it matches.
            let element = desired.as_array().and_then(|items| {
                items
                    .iter()
                    .find(|e| key.iter().all(|(k, v)| e.get(k).is_none_or(|ev| same_scalar(ev, v))))
            });
            match element {
                Some(e) => deeper(e),
                None => true,
            }
        } else if let Some(value) = path.strip_prefix("v:") {
            let Ok(value) = serde_json::from_str::<Value>(value) else {
                return false;
            };
            !desired
                .as_array()
                .is_some_and(|items| items.iter().any(|e| same_scalar(e, &value)))
        } else {
            false
        }
    })
}

fn same_scalar(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => x.as_f64() == y.as_f64(),
        _ => a == b,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const M: &str = "mizzen-operator";

    fn managed(fields: Value) -> Value {
        json!([{"manager": M, "operation": "Apply", "apiVersion": "v1", "fieldsType": "FieldsV1", "fieldsV1": fields}])
    }

    #[test]
    fn empty_values_the_api_server_dropped_are_no_change() {
        let desired =
            json!({"spec": {"env": [{"name": "A", "value": ""}, {"name": "B", "value": "x"}], "paused": false}});
        let mut live = json!({"spec": {"env": [{"name": "A"}, {"name": "B", "value": "x"}], "replicas": 1}});
        live["metadata"] = json!({"managedFields": managed(json!({"f:spec": {
            "f:paused": {},
            "f:env": {"k:{\"name\":\"A\"}": {".": {}, "f:name": {}, "f:value": {}},
                      "k:{\"name\":\"B\"}": {".": {}, "f:name": {}, "f:value": {}}},
        }}))});
        assert!(!needs_apply(&live, &desired, M));
    }

    #[test]
    fn a_zero_value_someone_removed_is_a_change() {
        // `allowPrivilegeEscalation: false` deleted with kubectl edit: the field is gone and nobody owns it.
        let desired = json!({"securityContext": {"allowPrivilegeEscalation": false, "runAsNonRoot": true}});
        let mut live = json!({"securityContext": {"runAsNonRoot": true}});
        live["metadata"] = json!({"managedFields": managed(json!({"f:securityContext": {"f:runAsNonRoot": {}}}))});
        assert!(needs_apply(&live, &desired, M));
    }

    #[test]
    fn an_element_added_to_a_list_replaced_whole_is_a_change() {
        // RBAC subjects have no merge key: an apply replaces the list, so an added subject must go.
        let desired = json!({"subjects": [{"kind": "ServiceAccount", "name": "istiod", "namespace": "istio-system"}]});
        let live = json!({"subjects": [
            {"kind": "ServiceAccount", "name": "istiod", "namespace": "istio-system"},
            {"kind": "User", "name": "mallory"},
        ]});
        assert!(needs_apply(&live, &desired, M));
    }

    #[test]
    fn listed_objects_without_type_fields_are_no_change() {
        let desired = json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "a"}});
        let live = json!({"metadata": {"name": "a", "uid": "1"}});
        assert!(!needs_apply(&live, &desired, M));
    }

    #[test]
    fn a_changed_value_is_a_change() {
        let desired = json!({"spec": {"ports": [{"name": "http2", "port": 80, "nodePort": 30080}]}});
        let live = json!({"spec": {"ports": [{"name": "http2", "port": 80, "nodePort": 30081, "protocol": "TCP"}]}});
        assert!(needs_apply(&live, &desired, M));
    }

    #[test]
    fn quantities_compare_by_value() {
        let desired = json!({"resources": {"limits": {"cpu": "2000m", "memory": "1Gi"}}});
        let live = json!({"resources": {"limits": {"cpu": "2", "memory": "1Gi"}}});
        assert!(!needs_apply(&live, &desired, M));
        let smaller = json!({"resources": {"limits": {"cpu": "1", "memory": "1Gi"}}});
        assert!(needs_apply(&smaller, &desired, M));
        // Outside resources, strings are strings.
        assert!(needs_apply(
            &json!({"labels": {"a": "1000m"}}),
            &json!({"labels": {"a": "1"}}),
            M
        ));
    }

    #[test]
    fn entries_other_managers_added_to_keyed_lists_are_no_change() {
        let desired = json!({"env": [{"name": "A", "value": "1"}, {"name": "C", "value": "3"}]});
        let live =
            json!({"env": [{"name": "A", "value": "1"}, {"name": "B", "value": "2"}, {"name": "C", "value": "3"}]});
        assert!(!needs_apply(&live, &desired, M));
        // An atomic list (args) that grew is a change: apply replaces it.
        assert!(needs_apply(
            &json!({"args": ["a", "b", "c"]}),
            &json!({"args": ["a", "c"]}),
            M
        ));
        // A keyed element that is missing is a change.
        let missing = json!({"env": [{"name": "A", "value": "1"}, {"name": "B", "value": "2"}]});
        assert!(needs_apply(&missing, &desired, M));
    }

    #[test]
    fn fields_no_longer_rendered_are_a_change() {
        let desired = json!({"metadata": {"name": "g"}, "spec": {"ports": [{"name": "http2", "port": 80}]}});
        let mut live = json!({"metadata": {"name": "g", "annotations": {"a": "b"}}, "spec": {"ports": [{"name": "http2", "port": 80, "protocol": "TCP"}]}});
        live["metadata"]["managedFields"] = managed(json!({
            "f:metadata": {"f:annotations": {"f:a": {}}},
            "f:spec": {"f:ports": {"k:{\"port\":80,\"protocol\":\"TCP\"}": {".": {}, "f:name": {}, "f:port": {}}}},
        }));
        assert!(
            needs_apply(&live, &desired, M),
            "the annotation mizzen applied before must go"
        );
        live["metadata"]["managedFields"] = managed(json!({
            "f:spec": {"f:ports": {"k:{\"port\":80,\"protocol\":\"TCP\"}": {".": {}, "f:name": {}, "f:port": {}}}},
        }));
        assert!(
            !needs_apply(&live, &desired, M),
            "a defaulted key field (protocol) still matches"
        );
        live["metadata"]["managedFields"] = managed(json!({
            "f:spec": {"f:ports": {"k:{\"port\":443,\"protocol\":\"TCP\"}": {".": {}}}},
        }));
        assert!(
            needs_apply(&live, &desired, M),
            "a port mizzen no longer renders must go"
        );
    }

    #[test]
    fn other_managers_fields_are_not_ours_to_remove() {
        let desired = json!({"spec": {"template": {}}});
        let mut live = json!({"spec": {"replicas": 3, "template": {}}});
        live["metadata"] = json!({"managedFields": [
            {"manager": "kube-controller-manager", "operation": "Update", "subresource": "scale", "fieldsV1": {"f:spec": {"f:replicas": {}}}},
            {"manager": M, "operation": "Apply", "fieldsV1": {"f:spec": {"f:template": {}}}},
        ]});
        assert!(!needs_apply(&live, &desired, M));
        // Set lists are matched by value.
        let desired = json!({"finalizers": ["a"]});
        let live = json!({"finalizers": ["a"], "metadata": {"managedFields": managed(json!({"f:finalizers": {"v:\"a\"": {}, "v:\"b\"": {}}}))}});
        assert!(needs_apply(&live, &desired, M));
    }
}
