//! Kubernetes strategic merge of pod JSON: maps merge recursively, lists of named things merge by their key
//! (base order first, new items appended), other lists and scalars are replaced by the patch.

use serde_json::Value;

/// The merge key of a list field, if the field is merged rather than replaced.
fn merge_key(field: &str) -> Option<&'static str> {
    match field {
        "containers" | "initContainers" | "ephemeralContainers" | "volumes" | "imagePullSecrets" | "env"
        | "sysctls" | "hostAliases" => Some(match field {
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
            for item in p {
                match b.iter_mut().find(|e| !item[key].is_null() && e[key] == item[key]) {
                    Some(existing) => merge_value(existing, item, ""),
                    None => b.push(item.clone()),
                }
            }
        }
        (b, p) => *b = p.clone(),
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
                {"name": "istio-proxy", "image": "a", "env": [{"name": "A", "value": "1"}, {"name": "B", "value": "2"}],
                 "resources": {"limits": {"cpu": "3", "memory": "1Gi"}}, "args": ["x"]},
                {"name": "hello"}
            ]})
        );
    }

    #[test]
    fn plain_lists_are_replaced() {
        let mut base = json!({"args": ["a", "b"]});
        strategic(&mut base, &json!({"args": ["c"]}));
        assert_eq!(base, json!({"args": ["c"]}));
    }
}
