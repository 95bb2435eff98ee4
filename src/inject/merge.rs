//! Kubernetes strategic merge of pod JSON: maps merge recursively, lists of named things merge by their key, other
//! lists and scalars are replaced by the patch. Merged lists are ordered as the API machinery orders them
//! (`normalizeElementOrder`): items only in the original keep their place relative to the patch's items where both
//! are known to the original, otherwise the patch's items come first.
#![cfg_attr(not(test), deny(clippy::indexing_slicing))]

use serde_json::Value;

/// The merge key of a list field, if the field is merged rather than replaced.
fn merge_key(field: &str) -> Option<&'static str> {
    match field {
        "containers"
        | "initContainers"
        | "ephemeralContainers"
        | "volumes"
        | "imagePullSecrets"
        | "env"
        | "sysctls"
        | "hostAliases" => Some(match field {
            "hostAliases" => "ip",
            _ => "name",
        }),
        "ports" => Some("containerPort"),
        "volumeMounts" => Some("mountPath"),
        "volumeDevices" => Some("devicePath"),
        _ => None,
    }
}

/// Merges `patch` over `base`.
pub fn strategic(base: &mut Value, patch: &Value) {
    merge_value(base, patch, "");
}

fn merge_value(base: &mut Value, patch: &Value, field: &str) {
    match (base, patch) {
        (Value::Object(b), Value::Object(p)) => {
            for (k, pv) in p {
                match b.get_mut(k) {
                    Some(bv) if !pv.is_null() => merge_value(bv, pv, k),
                    _ if pv.is_null() => {
                        b.remove(k);
                    }
                    _ => {
                        b.insert(k.clone(), pv.clone());
                    }
                }
            }
        }
        (Value::Array(b), Value::Array(p)) if merge_key(field).is_some() => {
            let key = merge_key(field).unwrap_or("name");
            merge_list(b, p, key);
        }
        (b, p) => *b = p.clone(),
    }
}

fn merge_list(server: &mut Vec<Value>, patch: &[Value], key: &str) {
    let server_order: Vec<Value> = server.iter().map(|i| i[key].clone()).collect();
    let position = |k: &Value| server_order.iter().position(|s| !k.is_null() && s == k);
    let mut merged = std::mem::take(server);
    for item in patch {
        match merged.iter_mut().find(|e| !item[key].is_null() && e[key] == item[key]) {
            Some(existing) => merge_value(existing, item, ""),
            None => merged.push(item.clone()),
        }
    }
    let in_patch = |i: &Value| patch.iter().any(|p| !p[key].is_null() && p[key] == i[key]);
    let (patch_items, server_only): (Vec<Value>, Vec<Value>) = merged.into_iter().partition(|i| in_patch(i));
    // Patch items in patch order.
    let mut patch_items = patch_items;
    patch_items.sort_by_key(|i| patch.iter().position(|p| p[key] == i[key]).unwrap_or(usize::MAX));
    // mergeSortedSlice(serverOnly, patch): take the server-only item when both are in the original and it comes
    // first there; otherwise take the patch item.
    let (mut l, mut r) = (server_only.into_iter().peekable(), patch_items.into_iter().peekable());
    loop {
        let take_left = match (l.peek(), r.peek()) {
            (None, None) => break,
            (Some(_), None) => true,
            (None, Some(_)) => false,
            (Some(a), Some(b)) => matches!((position(&a[key]), position(&b[key])), (Some(x), Some(y)) if x < y),
        };
        let next = if take_left { l.next() } else { r.next() };
        server.extend(next);
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn containers_merge_by_name_and_env_by_name() {
        let mut base = json!({"containers": [{"name": "istio-proxy", "image": "a", "env": [{"name": "A", "value": "1"}],
            "resources": {"limits": {"cpu": "2", "memory": "1Gi"}}}]});
        let patch = json!({"containers": [{"name": "hello"}, {"name": "istio-proxy", "env": [{"name": "B", "value": "2"}],
            "resources": {"limits": {"cpu": "3"}}, "args": ["x"]}]});
        strategic(&mut base, &patch);
        assert_eq!(
            base,
            json!({"containers": [
                {"name": "hello"},
                {"name": "istio-proxy", "image": "a", "env": [{"name": "B", "value": "2"}, {"name": "A", "value": "1"}],
                 "resources": {"limits": {"cpu": "3", "memory": "1Gi"}}, "args": ["x"]}
            ]})
        );
    }

    #[test]
    fn new_patch_items_go_before_items_only_in_the_original() {
        // As kubectl would: the template's volumes (patch) before the pod's own (original only).
        let mut pod = json!({"volumes": [{"name": "certs"}]});
        strategic(&mut pod, &json!({"volumes": [{"name": "a"}, {"name": "b"}]}));
        assert_eq!(
            pod,
            json!({"volumes": [{"name": "a"}, {"name": "b"}, {"name": "certs"}]})
        );
    }

    #[test]
    fn original_only_items_keep_their_place_among_known_items() {
        let mut env = json!({"env": [{"name": "A"}, {"name": "X"}, {"name": "B"}, {"name": "C"}]});
        strategic(&mut env, &json!({"env": [{"name": "X"}, {"name": "B"}, {"name": "N"}]}));
        assert_eq!(
            env,
            json!({"env": [{"name": "A"}, {"name": "X"}, {"name": "B"}, {"name": "N"}, {"name": "C"}]})
        );
    }

    #[test]
    fn plain_lists_are_replaced() {
        let mut base = json!({"args": ["a", "b"]});
        strategic(&mut base, &json!({"args": ["c"]}));
        assert_eq!(base, json!({"args": ["c"]}));
    }
}
