//! Shape checks of the pod fields the injector reads or writes into, run before injecting: untrusted input of the
//! wrong JSON type is refused with an error naming the field, so no later step meets (or panics on) a string where
//! it expects an object. The API server decodes pods into typed objects before calling a webhook, so these only
//! fire for hand-written manifests (`kube-inject`) and hostile requests.
#![cfg_attr(not(test), deny(clippy::indexing_slicing))]

use serde_json::{Map, Value};

use super::InjectError;

/// Where a field is, written out only for an error message.
#[derive(Clone, Copy)]
enum Path<'a> {
    /// A top-level field such as `metadata`.
    Root(&'a str),
    /// `parent.key`.
    Field(&'a Path<'a>, &'a str),
    /// `parent[i]`.
    Index(&'a Path<'a>, usize),
    /// `parent["key"]` (a map entry).
    Entry(&'a Path<'a>, &'a str),
}

impl std::fmt::Display for Path<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Path::Root(name) => f.write_str(name),
            Path::Field(parent, key) => write!(f, "{parent}.{key}"),
            Path::Index(parent, i) => write!(f, "{parent}[{i}]"),
            Path::Entry(parent, key) => write!(f, "{parent}[{key:?}]"),
        }
    }
}

fn wrong(field: &Path, expected: &str, got: &Value) -> InjectError {
    InjectError::InvalidPod(format!("{field} must be {expected}, not {}", kind_of(got)))
}

/// A JSON value's kind, for messages.
pub fn kind_of(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "an object",
    }
}

/// `key` of `parent` (at `at`) as an object; absent or null is fine.
fn optional_object<'a>(
    parent: &'a Map<String, Value>,
    at: &Path,
    key: &str,
) -> Result<Option<&'a Map<String, Value>>, InjectError> {
    match parent.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Object(map)) => Ok(Some(map)),
        Some(other) => Err(wrong(&Path::Field(at, key), "an object", other)),
    }
}

/// `key` of `parent` (at `at`) as a list of objects; absent or null is fine.
fn optional_objects<'a>(
    parent: &'a Map<String, Value>,
    at: &Path,
    key: &str,
) -> Result<impl Iterator<Item = &'a Map<String, Value>>, InjectError> {
    let field = Path::Field(at, key);
    let items = match parent.get(key) {
        None | Some(Value::Null) => &[][..],
        Some(Value::Array(items)) => items.as_slice(),
        Some(other) => return Err(wrong(&field, "a list", other)),
    };
    if let Some((i, other)) = items.iter().enumerate().find(|(_, item)| !item.is_object()) {
        return Err(wrong(&Path::Index(&field, i), "an object", other));
    }
    Ok(items.iter().filter_map(Value::as_object))
}

/// `key` of `parent` (at `at`) is a list of objects, absent or null.
fn objects(parent: &Map<String, Value>, at: &Path, key: &str) -> Result<(), InjectError> {
    optional_objects(parent, at, key).map(|_| ())
}

/// A map of strings (labels, annotations); absent or null is fine.
fn string_map(parent: &Map<String, Value>, at: &Path, key: &str) -> Result<(), InjectError> {
    if let Some(map) = optional_object(parent, at, key)? {
        for (k, v) in map {
            if !v.is_string() {
                return Err(wrong(&Path::Entry(&Path::Field(at, key), k), "a string", v));
            }
        }
    }
    Ok(())
}

/// The pod's `metadata`: an object (or absent) whose labels and annotations are maps of strings.
pub fn metadata(metadata: &Value) -> Result<(), InjectError> {
    let root = Path::Root("metadata");
    let meta = match metadata {
        Value::Null => return Ok(()),
        Value::Object(map) => map,
        other => return Err(wrong(&root, "an object", other)),
    };
    string_map(meta, &root, "labels")?;
    string_map(meta, &root, "annotations")?;
    objects(meta, &root, "ownerReferences")?;
    Ok(())
}

/// A probe or lifecycle handler: an object whose `httpGet`, `tcpSocket`, `grpc` and `exec` are objects, and whose
/// actions' `port` is what Go decodes it into (Istio's webhook refuses a pod it cannot decode): a whole number of 32
/// bits or a name for `httpGet` and `tcpSocket` (an `IntOrString`), such a number for `grpc`; absent or null is
/// fine.
fn handler(parent: &Map<String, Value>, at: &Path, key: &str) -> Result<(), InjectError> {
    if let Some(h) = optional_object(parent, at, key)? {
        let field = Path::Field(at, key);
        for k in ["httpGet", "tcpSocket", "grpc", "exec"] {
            let Some(action) = optional_object(h, &field, k)? else {
                continue;
            };
            let at = Path::Field(&Path::Field(&field, k), "port");
            let expected = match (k, action.get("port")) {
                (_, None | Some(Value::Null)) => continue,
                ("httpGet" | "tcpSocket" | "grpc", Some(Value::Number(n))) => {
                    if n.as_i64().is_some_and(|n| i32::try_from(n).is_ok()) {
                        continue;
                    }
                    return Err(InjectError::InvalidPod(format!(
                        "{at} must be a whole number that fits in 32 bits, not {n}"
                    )));
                }
                ("httpGet" | "tcpSocket", Some(Value::String(_))) => continue,
                ("httpGet" | "tcpSocket", _) => "a number or a port name",
                ("grpc", _) => "a number",
                _ => continue,
            };
            if let Some(port) = action.get("port") {
                return Err(wrong(&at, expected, port));
            }
        }
    }
    Ok(())
}

fn container(c: &Map<String, Value>, at: &Path) -> Result<(), InjectError> {
    match c.get("name") {
        Some(Value::String(_)) => {}
        Some(other) => return Err(wrong(&Path::Field(at, "name"), "a string", other)),
        None => return Err(InjectError::InvalidPod(format!("{at} has no name"))),
    }
    for probe in ["livenessProbe", "readinessProbe", "startupProbe"] {
        handler(c, at, probe)?;
    }
    if let Some(lifecycle) = optional_object(c, at, "lifecycle")? {
        let field = Path::Field(at, "lifecycle");
        for hook in ["postStart", "preStop"] {
            handler(lifecycle, &field, hook)?;
        }
    }
    for key in ["securityContext", "resources"] {
        optional_object(c, at, key)?;
    }
    for key in ["ports", "env", "volumeMounts"] {
        objects(c, at, key)?;
    }
    Ok(())
}

/// The pod's `spec`: an object whose containers, init containers, volumes and image pull secrets are lists of
/// objects, each container named, with object-shaped probes, lifecycle hooks, security context and resources.
pub fn spec(spec: &Value) -> Result<(), InjectError> {
    let root = Path::Root("spec");
    let Value::Object(spec) = spec else {
        return Err(wrong(&root, "an object", spec));
    };
    for key in ["containers", "initContainers"] {
        let list = Path::Field(&root, key);
        for (i, c) in optional_objects(spec, &root, key)?.enumerate() {
            container(c, &Path::Index(&list, i))?;
        }
    }
    for key in ["volumes", "imagePullSecrets"] {
        objects(spec, &root, key)?;
    }
    optional_object(spec, &root, "securityContext")?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn message(r: Result<(), InjectError>) -> String {
        r.unwrap_err().to_string()
    }

    #[test]
    fn wrong_shaped_metadata_is_refused_naming_the_field() {
        assert!(metadata(&json!({"labels": {"a": "b"}, "annotations": {}})).is_ok());
        assert!(metadata(&Value::Null).is_ok());
        assert!(message(metadata(&json!("x"))).contains("metadata must be an object"));
        let m = message(metadata(&json!({"labels": "app=web"})));
        assert!(m.contains("metadata.labels must be an object, not a string"), "{m}");
        let m = message(metadata(&json!({"annotations": {"a": 1}})));
        assert!(
            m.contains("metadata.annotations[\"a\"] must be a string, not a number"),
            "{m}"
        );
        let m = message(metadata(&json!({"annotations": [1]})));
        assert!(m.contains("metadata.annotations must be an object, not a list"), "{m}");
    }

    #[test]
    fn wrong_shaped_probes_and_containers_are_refused_naming_the_field() {
        let ok = json!({"containers": [{"name": "web", "readinessProbe": {"httpGet": {"port": 80}},
            "lifecycle": {"preStop": {"exec": {"command": ["x"]}}}}]});
        assert!(spec(&ok).is_ok());
        let m = message(spec(
            &json!({"containers": [{"name": "web", "readinessProbe": {"httpGet": "x"}}]}),
        ));
        assert!(
            m.contains("spec.containers[0].readinessProbe.httpGet must be an object, not a string"),
            "{m}"
        );
        let m = message(spec(
            &json!({"containers": [{"name": "w", "lifecycle": {"postStart": {"tcpSocket": 1}}}]}),
        ));
        assert!(m.contains("spec.containers[0].lifecycle.postStart.tcpSocket"), "{m}");
        let m = message(spec(
            &json!({"containers": [{"name": "w", "livenessProbe": {"httpGet": {"path": "/", "port": true}}}]}),
        ));
        assert!(
            m.contains("spec.containers[0].livenessProbe.httpGet.port must be a number or a port name, not a boolean"),
            "{m}"
        );
        let m = message(spec(
            &json!({"containers": [{"name": "w", "lifecycle": {"preStop": {"tcpSocket": {"port": [80]}}}}]}),
        ));
        assert!(
            m.contains(
                "spec.containers[0].lifecycle.preStop.tcpSocket.port must be a number or a port name, not a list"
            ),
            "{m}"
        );
        let m = message(spec(
            &json!({"initContainers": [{"name": "s", "startupProbe": {"grpc": {"port": "grpc"}}}]}),
        ));
        assert!(
            m.contains("spec.initContainers[0].startupProbe.grpc.port must be a number, not a string"),
            "{m}"
        );
        for port in [json!(80.5), json!(1e2), json!(4_294_967_296_u64)] {
            let m = message(spec(
                &json!({"containers": [{"name": "w", "readinessProbe": {"grpc": {"port": port}}}]}),
            ));
            assert!(
                m.contains(&format!(
                    "spec.containers[0].readinessProbe.grpc.port must be a whole number that fits in 32 bits, not {port}"
                )),
                "{m}"
            );
        }
        let m = message(spec(
            &json!({"containers": [{"name": "w", "readinessProbe": {"exec": {"command": ["x"]}, "httpGet": {"port": {}}}}]}),
        ));
        assert!(
            m.contains("readinessProbe.httpGet.port must be a number or a port name, not an object"),
            "{m}"
        );
        for port in [json!(80), json!("http"), Value::Null, json!(-1)] {
            let fine = json!({"containers": [{"name": "w", "readinessProbe": {"httpGet": {"port": port}},
                "livenessProbe": {"tcpSocket": {"port": port}}, "startupProbe": {"grpc": {"port": null}, "exec": {"port": true}},
                "lifecycle": {"preStop": {"httpGet": {"path": "/"}}}}]});
            assert!(spec(&fine).is_ok(), "{port}");
        }
        let m = message(spec(&json!({"initContainers": [{"name": 3}]})));
        assert!(m.contains("spec.initContainers[0].name must be a string"), "{m}");
        let m = message(spec(&json!({"containers": "web"})));
        assert!(m.contains("spec.containers must be a list"), "{m}");
        let m = message(spec(&json!({"containers": [{"name": "w", "securityContext": []}]})));
        assert!(
            m.contains("spec.containers[0].securityContext must be an object"),
            "{m}"
        );
        let m = message(spec(&json!({"volumes": [1]})));
        assert!(m.contains("spec.volumes[0] must be an object"), "{m}");
        assert!(message(spec(&json!([]))).contains("spec must be an object"));
    }
}
