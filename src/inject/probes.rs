//! Application probes and lifecycle hooks rewritten to go through the agent's status port, so they keep working
//! when mTLS is enforced; the originals travel to the agent in `ISTIO_KUBE_APP_PROBERS`.
#![cfg_attr(not(test), deny(clippy::indexing_slicing))]

use std::collections::BTreeMap;

use serde_json::{Map, Value, json};

use super::gojson;

/// `ISTIO_KUBE_APP_PROBERS` entries: path on the status port → the original probe handler.
pub type Probers = BTreeMap<String, Value>;

/// The `ISTIO_KUBE_APP_PROBERS` text.
pub fn probers_json(probers: &Probers) -> String {
    let mut out = Vec::with_capacity(2 + 96 * probers.len());
    out.push(b'{');
    for (i, (path, prober)) in probers.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        gojson::write_str(&mut out, path);
        out.push(b':');
        gojson::write(&mut out, prober, gojson::PROBER);
    }
    out.push(b'}');
    // The shape writer writes UTF-8.
    String::from_utf8(out).unwrap_or_default()
}

fn resolve_port(port: &Value, ports: &Value) -> Value {
    match port {
        Value::String(name) => ports
            .as_array()
            .and_then(|ports| ports.iter().find(|p| p["name"] == *name.as_str()))
            .map(|p| p["containerPort"].clone())
            .unwrap_or_else(|| port.clone()),
        other => other.clone(),
    }
}

/// Rewrites one handler (probe or lifecycle hook) to `path` on `status_port`; returns the original for the agent.
fn rewrite_handler(
    handler: &mut Value,
    ports: &Value,
    path: &str,
    status_port: i64,
    previous: &Probers,
    lifecycle: bool,
) -> Option<Value> {
    let obj = handler.as_object_mut()?;
    // Already rewritten by an earlier injection: keep the original the agent was given then.
    if let Some(get) = obj.get("httpGet")
        && get["path"] == path
        && get["port"] == status_port
    {
        return previous.get(path).cloned();
    }
    let mut prober = Map::new();
    // Handlers of another shape are left alone (the injector's shape checks refuse them before this).
    if let Some(get) = obj.get_mut("httpGet").and_then(Value::as_object_mut) {
        // Members the handler has are replaced in place (no key allocated for them).
        let set = |map: &mut Map<String, Value>, key: &str, value: Value| match map.get_mut(key) {
            Some(slot) => *slot = value,
            None => {
                map.insert(key.to_owned(), value);
            }
        };
        let mut original = get.clone();
        let port = resolve_port(get.get("port").unwrap_or(&Value::Null), ports);
        set(&mut original, "port", port);
        prober.insert("httpGet".into(), Value::Object(original));
        set(get, "path", Value::String(path.to_owned()));
        set(get, "port", Value::from(status_port));
        if get.get("scheme").and_then(Value::as_str) == Some("HTTPS") {
            set(get, "scheme", Value::String("HTTP".to_owned()));
        }
    } else if obj.get("tcpSocket").is_some_and(Value::is_object)
        && let Some(Value::Object(tcp)) = obj.remove("tcpSocket")
    {
        let mut original = tcp.clone();
        original.insert(
            "port".into(),
            resolve_port(tcp.get("port").unwrap_or(&Value::Null), ports),
        );
        prober.insert("tcpSocket".into(), Value::Object(original));
        obj.insert("httpGet".into(), json!({"path": path, "port": status_port}));
    } else if !lifecycle && let Some(grpc) = obj.remove("grpc") {
        prober.insert("grpc".into(), grpc);
        obj.insert("httpGet".into(), json!({"path": path, "port": status_port}));
    } else {
        return None;
    }
    if !lifecycle && let Some(t) = obj.get("timeoutSeconds") {
        prober.insert("timeoutSeconds".into(), t.clone());
    }
    Some(Value::Object(prober))
}

/// Rewrites the probes and lifecycle hooks of one application container, adding the originals to `probers`.
pub fn rewrite_container(container: &mut Value, status_port: i64, previous: &Probers, probers: &mut Probers) {
    let Some(name) = container["name"].as_str().map(str::to_owned) else {
        return;
    };
    // Named ports are resolved against the container's ports, taken out while its handlers are rewritten and put
    // back: serde_json's `Map` is a `BTreeMap` here (no `preserve_order`, on which the patch writer relies too), so
    // the container is as before but for the handlers.
    let Some(fields) = container.as_object_mut() else {
        return;
    };
    let ports = fields.remove_entry("ports");
    let snapshot = ports.as_ref().map_or(&Value::Null, |(_, p)| p);
    let mut handlers = Handlers::default();
    for (key, value) in fields.iter_mut() {
        if let Some(slot) = handlers.slot(key) {
            *slot = Some(value);
        }
    }
    rewrite_handlers(&name, snapshot, handlers, status_port, previous, probers);
    if let Some((key, ports)) = ports {
        fields.insert(key, ports);
    }
}

/// A container's handlers that [`rewrite_handlers`] rewrites, by the fields they are in: [`HANDLER_FIELDS`].
#[derive(Default)]
pub struct Handlers<'a>(pub [Option<&'a mut Value>; 4]);

/// The fields of a container that hold handlers, in key order.
pub const HANDLER_FIELDS: [&str; 4] = ["lifecycle", "livenessProbe", "readinessProbe", "startupProbe"];

impl<'a> Handlers<'a> {
    /// The slot of a container's field, if it holds handlers.
    pub fn slot(&mut self, field: &str) -> Option<&mut Option<&'a mut Value>> {
        let i = HANDLER_FIELDS.iter().position(|f| *f == field)?;
        self.0.get_mut(i)
    }
}

/// [`rewrite_container`] of the container `name` with `ports`, on its `handlers`, which are all it changes.
pub fn rewrite_handlers(
    name: &str,
    ports: &Value,
    handlers: Handlers,
    status_port: i64,
    previous: &Probers,
    probers: &mut Probers,
) {
    let [lifecycle, probes @ ..] = handlers.0;
    for (probe, suffix) in probes.into_iter().zip(["livez", "readyz", "startupz"]) {
        if let Some(probe) = probe {
            let path = format!("/app-health/{name}/{suffix}");
            if let Some(p) = rewrite_handler(probe, ports, &path, status_port, previous, false) {
                probers.insert(path, p);
            }
        }
    }
    if let Some(lifecycle) = lifecycle {
        for (field, suffix) in [("postStart", "poststartz"), ("preStop", "prestopz")] {
            if let Some(hook) = lifecycle.get_mut(field) {
                let path = format!("/app-lifecycle/{name}/{suffix}");
                if let Some(p) = rewrite_handler(hook, ports, &path, status_port, previous, true) {
                    probers.insert(path, p);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn http_probe_on_a_named_port_is_rewritten_and_recorded() {
        let mut c = json!({"name": "hello", "ports": [{"name": "http", "containerPort": 80}],
            "readinessProbe": {"httpGet": {"port": "http", "scheme": "HTTPS"}}});
        let mut probers = Probers::new();
        rewrite_container(&mut c, 15020, &Probers::new(), &mut probers);
        assert_eq!(
            c["readinessProbe"]["httpGet"],
            json!({"path": "/app-health/hello/readyz", "port": 15020, "scheme": "HTTP"})
        );
        assert_eq!(
            c["ports"],
            json!([{"name": "http", "containerPort": 80}]),
            "the ports stay"
        );
        assert_eq!(
            probers_json(&probers),
            r#"{"/app-health/hello/readyz":{"httpGet":{"port":80,"scheme":"HTTPS"}}}"#
        );
    }

    #[test]
    fn exec_probes_are_left_alone() {
        let mut c = json!({"name": "w", "livenessProbe": {"exec": {"command": ["true"]}}});
        let before = c.clone();
        let mut probers = Probers::new();
        rewrite_container(&mut c, 15020, &Probers::new(), &mut probers);
        assert_eq!(c, before);
        assert!(probers.is_empty());
    }
}
