//! Application probes and lifecycle hooks rewritten to go through the agent's status port, so they keep working
//! when mTLS is enforced; the originals travel to the agent in `ISTIO_KUBE_APP_PROBERS`.
#![cfg_attr(not(test), deny(clippy::indexing_slicing))]

use std::collections::BTreeMap;
use std::sync::LazyLock;

use serde_json::{Map, Value, json};

use super::gojson;
use crate::json_text;

/// `ISTIO_KUBE_APP_PROBERS` entries: path on the status port → the original probe handler.
pub type Probers = BTreeMap<String, Value>;

/// `ISTIO_KUBE_APP_PROBERS` entries written as they are found: path on the status port → the original handler's
/// JSON, as [`probers_json`] writes it.
pub type ProberTexts = BTreeMap<String, Vec<u8>>;

/// The `ISTIO_KUBE_APP_PROBERS` text of entries written as they were found: [`probers_json`]'s.
pub fn prober_texts_json(probers: &ProberTexts) -> String {
    let size = 2 + probers.iter().map(|(p, t)| p.len() + t.len() + 4).sum::<usize>();
    write_probers(probers, size, |out, prober| out.extend_from_slice(prober))
}

/// The `ISTIO_KUBE_APP_PROBERS` text.
pub fn probers_json(probers: &Probers) -> String {
    write_probers(probers, 2 + 96 * probers.len(), |out, prober| {
        gojson::write(out, prober, gojson::PROBER)
    })
}

/// The `ISTIO_KUBE_APP_PROBERS` object: each path as a Go string, then its prober as `write` writes it (UTF-8 JSON).
fn write_probers<T>(probers: &BTreeMap<String, T>, capacity: usize, write: impl Fn(&mut Vec<u8>, &T)) -> String {
    let mut out = Vec::with_capacity(capacity);
    out.push(b'{');
    for (i, (path, prober)) in probers.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        gojson::write_str(&mut out, path);
        out.push(b':');
        write(&mut out, prober);
    }
    out.push(b'}');
    debug_assert!(std::str::from_utf8(&out).is_ok());
    String::from_utf8(out).unwrap_or_default()
}

/// The port Go writes for an action without one (or with `null`): its zero value, `0`.
static ZERO: LazyLock<Value> = LazyLock::new(|| Value::from(0));

/// The port of the original Istio gives the agent for a handler rewritten with `change` (`DumpAppProbers`): its
/// `port` with a name resolved against the container's `ports`, `0` when it has none (as Go writes the zero value
/// of its typed action, and for a named port whose `containerPort` is missing). `None` when the agent gets no
/// original: the port is a name the container does not declare (a port without a name is never found), or the
/// mesh's status port `mesh_port` as a number, `0` included (taken to be a probe of the agent's own); the handler is
/// rewritten either way. A gRPC port is a number (the shape checks) and is given as it is.
fn agent_port<'a>(obj: &'a Map<String, Value>, change: Change, ports: &'a Value, mesh_port: i64) -> Option<&'a Value> {
    let port = obj.get(change.field()).and_then(|action| action.get("port"));
    if matches!(change, Change::Grpc) {
        return Some(port.filter(|p| !p.is_null()).unwrap_or(&ZERO));
    }
    let port = match port {
        // Go's zero value, compared with the mesh's port as any number is.
        None | Some(Value::Null) => &ZERO,
        Some(Value::String(name)) if name.is_empty() => return None,
        Some(Value::String(name)) => {
            return ports
                .as_array()?
                .iter()
                .find(|p| p.get("name").and_then(Value::as_str) == Some(name))
                .map(|p| match p.get("containerPort") {
                    Some(number @ Value::Number(_)) => number,
                    _ => &ZERO,
                });
        }
        Some(port) => port,
    };
    (!port.is_number() || *port != mesh_port).then_some(port)
}

/// How a handler is rewritten to a path on the status port, chosen from the handler as it is.
#[derive(Clone, Copy)]
enum Change {
    /// Its `httpGet` keeps its other fields; its path and port are replaced, and an HTTPS scheme becomes HTTP.
    Http,
    /// Its `tcpSocket` is replaced by an `httpGet` of the path and port alone.
    Tcp,
    /// Its `grpc` (a probe's only) is replaced by an `httpGet` of the path and port alone.
    Grpc,
}

impl Change {
    /// The field of the handler the change reads the original from.
    fn field(self) -> &'static str {
        match self {
            Change::Http => "httpGet",
            Change::Tcp => "tcpSocket",
            Change::Grpc => "grpc",
        }
    }
}

/// Whether the handler `obj` already probes `path` on `status_port` (rewritten by an earlier injection).
fn already_rewritten(obj: &Map<String, Value>, path: &str, status_port: i64) -> bool {
    obj.get("httpGet")
        .is_some_and(|get| get["path"] == path && get["port"] == status_port)
}

/// The change that rewrites the handler `obj`, if it is of a kind that is rewritten (handlers of another shape are
/// left alone; the injector's shape checks refuse them before this). `obj` is not already rewritten.
fn change(obj: &Map<String, Value>, lifecycle: bool) -> Option<Change> {
    if obj.get("httpGet").is_some_and(Value::is_object) {
        Some(Change::Http)
    } else if obj.get("tcpSocket").is_some_and(Value::is_object) {
        Some(Change::Tcp)
    } else if !lifecycle && obj.get("grpc").is_some_and(|g| !g.is_null()) {
        // A `grpc: null` is no gRPC action in Go's typed pod (kube-inject reads one from YAML; the API server drops
        // it).
        Some(Change::Grpc)
    } else {
        None
    }
}

/// The original of the handler `obj` for the agent, with `port` (see [`agent_port`]).
fn prober(obj: &Map<String, Value>, change: Change, port: &Value, lifecycle: bool) -> Value {
    let mut prober = Map::new();
    let original = obj.get(change.field()).unwrap_or(&Value::Null);
    let original = match original.as_object() {
        Some(map) => {
            let mut map = map.clone();
            let port = port.clone();
            match map.get_mut("port") {
                Some(slot) => *slot = port,
                None => {
                    map.insert("port".into(), port);
                }
            }
            Value::Object(map)
        }
        _ => original.clone(),
    };
    prober.insert(change.field().into(), original);
    if !lifecycle && let Some(t) = timeout(obj) {
        prober.insert("timeoutSeconds".into(), t.clone());
    }
    Value::Object(prober)
}

/// The probe's `timeoutSeconds` as Istio's prober carries it: an `int32` with `omitempty`, so neither `0` nor
/// `null` is written.
fn timeout(obj: &Map<String, Value>) -> Option<&Value> {
    obj.get("timeoutSeconds").filter(|t| !t.is_null() && **t != 0)
}

/// Appends [`prober`]'s value as [`probers_json`] writes it, without making the value.
fn write_prober(out: &mut Vec<u8>, obj: &Map<String, Value>, change: Change, port: &Value, lifecycle: bool) {
    let shape = match change {
        Change::Http => gojson::PROBER_HTTP_GET,
        Change::Tcp => gojson::PROBER_TCP_SOCKET,
        Change::Grpc => gojson::PROBER_GRPC,
    };
    out.push(b'{');
    gojson::write_str(out, change.field());
    out.push(b':');
    let original = obj.get(change.field()).unwrap_or(&Value::Null);
    match original.as_object() {
        Some(map) => gojson::write_with(out, map, shape, ("port", port)),
        _ => gojson::write(out, original, shape),
    }
    if !lifecycle && let Some(t) = timeout(obj) {
        out.extend_from_slice(b",\"timeoutSeconds\":");
        gojson::write(out, t, gojson::Shape::Plain);
    }
    out.push(b'}');
}

/// The agent's path for a container's handler: `{base}{name}/{suffix}` (`/app-health/web/readyz`), put together
/// without the formatting machinery.
fn agent_path(base: &str, name: &str, suffix: &str) -> String {
    let mut path = String::with_capacity(base.len() + name.len() + 1 + suffix.len());
    path.push_str(base);
    path.push_str(name);
    path.push('/');
    path.push_str(suffix);
    path
}

/// The agent's status ports: the pod's, which handlers are rewritten to (its annotation, else the mesh's), and the
/// mesh's (see [`agent_port`]).
#[derive(Clone, Copy, Debug)]
pub struct StatusPorts {
    pub pod: i64,
    pub mesh: i64,
}

/// Rewrites one handler (probe or lifecycle hook) to `path` on the pod's status port; returns the original for the
/// agent, if it gets one.
fn rewrite_handler(
    handler: &mut Value,
    ports: &Value,
    path: &str,
    status: StatusPorts,
    previous: &Probers,
    lifecycle: bool,
) -> Option<Value> {
    let status_port = status.pod;
    let obj = handler.as_object_mut()?;
    // Already rewritten by an earlier injection: keep the original the agent was given then.
    if already_rewritten(obj, path, status_port) {
        return previous.get(path).cloned();
    }
    let change = change(obj, lifecycle)?;
    let prober = agent_port(obj, change, ports, status.mesh).map(|port| prober(obj, change, port, lifecycle));
    match change {
        Change::Http => {
            if let Some(get) = obj.get_mut("httpGet").and_then(Value::as_object_mut) {
                // Members the handler has are replaced in place (no key allocated for them).
                let set = |map: &mut Map<String, Value>, key: &str, value: Value| match map.get_mut(key) {
                    Some(slot) => *slot = value,
                    None => {
                        map.insert(key.to_owned(), value);
                    }
                };
                set(get, "path", Value::String(path.to_owned()));
                set(get, "port", Value::from(status_port));
                if get.get("scheme").and_then(Value::as_str) == Some("HTTPS") {
                    set(get, "scheme", Value::String("HTTP".to_owned()));
                }
            }
        }
        Change::Tcp | Change::Grpc => {
            obj.remove(change.field());
            obj.insert("httpGet".into(), json!({"path": path, "port": status_port}));
        }
    }
    prober
}

/// Appends `"key":` as the patch writer writes a member name.
fn write_key(out: &mut Vec<u8>, key: &str) {
    json_text::write_str(out, key);
    out.push(b':');
}

/// Appends the `httpGet` `get` with its path and port replaced (added in key order when it has none) and an HTTPS
/// scheme as HTTP: the JSON of what [`rewrite_handler`] makes of it.
fn write_http_get(out: &mut Vec<u8>, get: &Map<String, Value>, path: &str, status_port: i64) {
    const REPLACED: [&str; 2] = ["path", "port"];
    let write_replaced = |out: &mut Vec<u8>, name: &str| {
        write_key(out, name);
        if name == "path" {
            json_text::write_str(out, path);
        } else {
            json_text::write_value(out, &Value::from(status_port));
        }
    };
    let mut pending = REPLACED.iter().peekable();
    out.push(b'{');
    let mut first = true;
    let mut comma = |out: &mut Vec<u8>| {
        if !std::mem::take(&mut first) {
            out.push(b',');
        }
    };
    for (key, value) in get {
        // The replaced members go where their names sort, whether or not the map has them.
        while let Some(name) = pending.next_if(|name| **name <= key.as_str()) {
            comma(out);
            write_replaced(out, name);
        }
        if REPLACED.contains(&key.as_str()) {
            continue;
        }
        comma(out);
        write_key(out, key);
        match value.as_str() {
            Some("HTTPS") if key == "scheme" => json_text::write_str(out, "HTTP"),
            _ => json_text::write_value(out, value),
        }
    }
    for name in pending {
        comma(out);
        write_replaced(out, name);
    }
    out.push(b'}');
}

/// Appends the handler `obj` as [`rewrite_handler`] rewrites it with `change`.
fn write_rewritten(out: &mut Vec<u8>, obj: &Map<String, Value>, change: Change, path: &str, status_port: i64) {
    out.push(b'{');
    let mut first = true;
    let mut comma = |out: &mut Vec<u8>| {
        if !std::mem::take(&mut first) {
            out.push(b',');
        }
    };
    let new_get = |out: &mut Vec<u8>| {
        write_key(out, "httpGet");
        out.extend_from_slice(b"{\"path\":");
        json_text::write_str(out, path);
        out.extend_from_slice(b",\"port\":");
        json_text::write_value(out, &Value::from(status_port));
        out.push(b'}');
    };
    let mut get_written = false;
    for (key, value) in obj {
        match change {
            Change::Http if key == "httpGet" => {
                comma(out);
                write_key(out, key);
                match value.as_object() {
                    Some(get) => write_http_get(out, get, path, status_port),
                    None => json_text::write_value(out, value),
                }
                continue;
            }
            Change::Tcp | Change::Grpc => {
                if !get_written && key.as_str() >= "httpGet" {
                    comma(out);
                    new_get(out);
                    get_written = true;
                }
                if key == change.field() || key == "httpGet" {
                    continue;
                }
            }
            Change::Http => {}
        }
        comma(out);
        write_key(out, key);
        json_text::write_value(out, value);
    }
    if !matches!(change, Change::Http) && !get_written {
        comma(out);
        new_get(out);
    }
    out.push(b'}');
}

/// A container's handlers that [`rewritten_texts`] rewrites: each field with the JSON text of what it becomes.
pub type Rewritten = Vec<(&'static str, Vec<u8>)>;

/// The text of what [`rewrite_handler`] makes of `handler` with the original left as it is, and the text of the
/// original for the agent if it gets one; `None` when it leaves the handler alone. For a pod injected the first time
/// (no earlier probers).
fn rewritten_text(
    handler: &Value,
    ports: &Value,
    path: &str,
    status: StatusPorts,
    lifecycle: bool,
) -> Option<(Vec<u8>, Option<Vec<u8>>)> {
    let obj = handler.as_object()?;
    if already_rewritten(obj, path, status.pod) {
        return None;
    }
    let change = change(obj, lifecycle)?;
    let mut text = Vec::with_capacity(128);
    write_rewritten(&mut text, obj, change, path, status.pod);
    let prober = agent_port(obj, change, ports, status.mesh).map(|port| {
        let mut prober = Vec::with_capacity(96);
        write_prober(&mut prober, obj, change, port, lifecycle);
        prober
    });
    Some((text, prober))
}

/// [`rewrite_handlers`] of the container `name` of a pod injected the first time, reading its handlers in place:
/// the fields whose handlers change, in key order, each with the JSON text of what it becomes; the originals are
/// added to `probers` as text.
pub fn rewritten_texts(
    name: &str,
    container: &Map<String, Value>,
    status: StatusPorts,
    probers: &mut ProberTexts,
) -> Rewritten {
    let ports = container.get("ports").unwrap_or(&Value::Null);
    let mut changed = Vec::new();
    if let Some(Value::Object(lifecycle)) = container.get("lifecycle") {
        let mut hooks: [Option<Vec<u8>>; 2] = [None, None];
        for ((field, suffix), slot) in [("postStart", "poststartz"), ("preStop", "prestopz")]
            .into_iter()
            .zip(&mut hooks)
        {
            if let Some(hook) = lifecycle.get(field) {
                let path = agent_path("/app-lifecycle/", name, suffix);
                if let Some((text, p)) = rewritten_text(hook, ports, &path, status, true) {
                    if let Some(p) = p {
                        probers.insert(path, p);
                    }
                    *slot = Some(text);
                }
            }
        }
        if hooks.iter().any(Option::is_some) {
            let mut text = Vec::with_capacity(256);
            text.push(b'{');
            for (i, (key, value)) in lifecycle.iter().enumerate() {
                if i > 0 {
                    text.push(b',');
                }
                write_key(&mut text, key);
                let [post_start, pre_stop] = &hooks;
                let hook = match key.as_str() {
                    "postStart" => post_start.as_deref(),
                    "preStop" => pre_stop.as_deref(),
                    _ => None,
                };
                match hook {
                    Some(hook) => text.extend_from_slice(hook),
                    None => json_text::write_value(&mut text, value),
                }
            }
            text.push(b'}');
            changed.push(("lifecycle", text));
        }
    }
    for (field, suffix) in HANDLER_FIELDS.into_iter().skip(1).zip(["livez", "readyz", "startupz"]) {
        if let Some(probe) = container.get(field) {
            let path = agent_path("/app-health/", name, suffix);
            if let Some((text, p)) = rewritten_text(probe, ports, &path, status, false) {
                if let Some(p) = p {
                    probers.insert(path, p);
                }
                changed.push((field, text));
            }
        }
    }
    changed
}

/// Rewrites the probes and lifecycle hooks of one application container, adding the originals to `probers`.
pub fn rewrite_container(container: &mut Value, status: StatusPorts, previous: &Probers, probers: &mut Probers) {
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
    rewrite_handlers(&name, snapshot, handlers, status, previous, probers);
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
    status: StatusPorts,
    previous: &Probers,
    probers: &mut Probers,
) {
    let [lifecycle, probes @ ..] = handlers.0;
    for (probe, suffix) in probes.into_iter().zip(["livez", "readyz", "startupz"]) {
        if let Some(probe) = probe {
            let path = agent_path("/app-health/", name, suffix);
            if let Some(p) = rewrite_handler(probe, ports, &path, status, previous, false) {
                probers.insert(path, p);
            }
        }
    }
    if let Some(lifecycle) = lifecycle {
        for (field, suffix) in [("postStart", "poststartz"), ("preStop", "prestopz")] {
            if let Some(hook) = lifecycle.get_mut(field) {
                let path = agent_path("/app-lifecycle/", name, suffix);
                if let Some(p) = rewrite_handler(hook, ports, &path, status, previous, true) {
                    probers.insert(path, p);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const PORTS: StatusPorts = StatusPorts {
        pod: 15020,
        mesh: 15020,
    };

    /// What the two paths make of a container: the tree path's rewritten copy and `ISTIO_KUBE_APP_PROBERS`, and the
    /// text path's rewritten fields and `ISTIO_KUBE_APP_PROBERS`.
    struct BothPaths {
        copy: Value,
        tree_probers: String,
        rewritten: Vec<(&'static str, String)>,
        text_probers: String,
    }

    fn both_paths(container: &Value, status: StatusPorts) -> BothPaths {
        let mut copy = container.clone();
        let mut tree = Probers::new();
        rewrite_container(&mut copy, status, &Probers::new(), &mut tree);
        let mut texts = ProberTexts::new();
        let name = container["name"].as_str().unwrap();
        let rewritten = rewritten_texts(name, container.as_object().unwrap(), status, &mut texts)
            .into_iter()
            .map(|(f, text)| (f, String::from_utf8(text).unwrap()))
            .collect();
        BothPaths {
            copy,
            tree_probers: probers_json(&tree),
            rewritten,
            text_probers: prober_texts_json(&texts),
        }
    }

    #[test]
    fn http_probe_on_a_named_port_is_rewritten_and_recorded() {
        let mut c = json!({"name": "hello", "ports": [{"name": "http", "containerPort": 80}],
            "readinessProbe": {"httpGet": {"port": "http", "scheme": "HTTPS"}}});
        let mut probers = Probers::new();
        rewrite_container(&mut c, PORTS, &Probers::new(), &mut probers);
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

    /// Handlers of every kind that is rewritten and some that are not, with members sorting before and after
    /// `httpGet`, for the text written in place to be compared with the rewritten copy.
    fn handler_variety() -> Vec<Value> {
        let http = |get: Value| {
            json!({"exec": {"command": ["x"]}, "httpGet": get, "initialDelaySeconds": 2,
            "timeoutSeconds": 4})
        };
        vec![
            http(
                json!({"path": "/healthz", "port": "http", "scheme": "HTTPS", "host": "h",
                "httpHeaders": [{"name": "A", "value": "b<&>"}]}),
            ),
            http(json!({"port": 8080})),
            http(json!({"path": "/p"})),
            http(json!({})),
            http(json!({"path": "/app-health/hello/readyz", "port": 15020})),
            http(json!({"path": "/app-health/hello/readyz", "port": 15021})),
            http(json!({"path": "/app-health/hello/readyz", "port": 15020.0})),
            http(json!({"aaa": 1, "zzz": 2, "port": "missing", "scheme": "HTTP"})),
            http(json!({"pb": 1, "path": "/x", "port": 1, "pz": "<&>\u{2028}"})),
            // Members Go's prober leaves out or fills in (`omitempty`, zero values, a nil `service`).
            http(json!({"path": "", "port": 80, "host": null, "scheme": "", "httpHeaders": []})),
            http(json!({"port": 80, "path": null, "httpHeaders": null})),
            http(json!({"port": 80, "httpHeaders": [null, {"name": "n"}, {"value": null, "x": 1}]})),
            json!({"tcpSocket": {"port": 80, "host": ""}}),
            json!({"grpc": {"port": 9090}, "timeoutSeconds": 2}),
            json!({"grpc": {"port": 9090, "service": null}}),
            json!({"httpGet": {"path": "/app-lifecycle/l/prestopz", "port": 15020}}),
            json!({"tcpSocket": {"port": 15021}, "timeoutSeconds": 2}),
            json!({"tcpSocket": {"port": ""}}),
            json!({"tcpSocket": {"port": "http", "host": "h"}, "timeoutSeconds": 1, "exec": null}),
            json!({"tcpSocket": {}, "httpGet": "not an object", "periodSeconds": 3}),
            json!({"grpc": {"port": 9090, "service": "s"}, "timeoutSeconds": 1, "failureThreshold": 5}),
            json!({"grpc": null, "httpGet": 7}),
            json!({"grpc": {"port": 1}, "tcpSocket": {"port": 2}}),
            json!({"exec": {"command": ["true"]}}),
            json!({"tcpSocket": "not an object"}),
            json!("not an object"),
            json!({}),
        ]
    }

    #[test]
    fn handlers_written_in_place_are_the_rewritten_copies() {
        let variety = handler_variety();
        let mut containers = Vec::new();
        for (i, h) in variety.iter().enumerate() {
            let ports = json!([{"name": "http", "containerPort": 8080}, {"name": "grpc", "containerPort": 9090}]);
            containers.push(json!({"name": "hello", "ports": ports, "readinessProbe": h}));
            containers.push(
                json!({"name": "w", "livenessProbe": h, "startupProbe": variety[(i + 3) % variety.len()],
                "lifecycle": {"postStart": h, "preStop": variety[(i + 5) % variety.len()], "stopSignal": "SIGTERM"}}),
            );
            containers.push(json!({"name": "l", "lifecycle": {"preStop": h}}));
            containers.push(json!({"name": "n", "lifecycle": h}));
            containers.push(json!({"name": "we\"ird<&>\u{2028}", "livenessProbe": h, "lifecycle": {"preStop": h}}));
        }
        let mut changes = 0;
        let annotated = StatusPorts {
            pod: 15021,
            mesh: 15020,
        };
        for (c, status) in containers.iter().flat_map(|c| [(c, PORTS), (c, annotated)]) {
            let both = both_paths(c, status);
            let want: Vec<(&str, String)> = HANDLER_FIELDS
                .into_iter()
                .filter(|f| both.copy.get(*f) != c.get(*f))
                .map(|f| (f, serde_json::to_string(&both.copy[f]).unwrap()))
                .collect();
            assert_eq!(both.rewritten, want, "{c}");
            assert_eq!(both.text_probers, both.tree_probers, "{c}");
            changes += want.len();
        }
        assert!(changes > 100, "the variety rewrites handlers ({changes})");
    }

    /// Istio's `DumpAppProbers` leaves out the original of a handler whose port is a name the container does not
    /// declare, or the mesh's status port as a number, and `convertAppProber` rewrites the handler all the same.
    #[test]
    fn handlers_on_unknown_names_or_the_agents_port_are_rewritten_without_an_original() {
        let c = json!({"name": "c", "ports": [{"name": "http", "containerPort": 80}, {"containerPort": 81}],
            "livenessProbe": {"httpGet": {"path": "/l", "port": "nope"}},
            "readinessProbe": {"httpGet": {"path": "/r", "port": 15020}},
            "startupProbe": {"tcpSocket": {"port": "15020"}},
            "lifecycle": {"preStop": {"httpGet": {"path": "/s", "port": "http"}},
                "postStart": {"tcpSocket": {"port": ""}}}});
        let annotated = StatusPorts {
            pod: 15021,
            mesh: 15020,
        };
        for status in [PORTS, annotated] {
            let mut copy = c.clone();
            let mut probers = Probers::new();
            rewrite_container(&mut copy, status, &Probers::new(), &mut probers);
            let port = status.pod;
            assert_eq!(
                copy["livenessProbe"],
                json!({"httpGet": {"path": "/app-health/c/livez", "port": port}})
            );
            assert_eq!(
                copy["readinessProbe"],
                json!({"httpGet": {"path": "/app-health/c/readyz", "port": port}})
            );
            assert_eq!(
                copy["startupProbe"],
                json!({"httpGet": {"path": "/app-health/c/startupz", "port": port}})
            );
            assert_eq!(
                copy["lifecycle"]["postStart"],
                json!({"httpGet": {"path": "/app-lifecycle/c/poststartz", "port": port}})
            );
            assert_eq!(
                probers_json(&probers),
                r#"{"/app-lifecycle/c/prestopz":{"httpGet":{"path":"/s","port":80}}}"#,
                "{status:?}"
            );
        }
        // A number other than the mesh's status port keeps its original, even the pod's own status port.
        let c = json!({"name": "c", "readinessProbe": {"httpGet": {"path": "/r", "port": 15021}}});
        let mut probers = Probers::new();
        rewrite_container(&mut c.clone(), annotated, &Probers::new(), &mut probers);
        assert_eq!(
            probers_json(&probers),
            r#"{"/app-health/c/readyz":{"httpGet":{"path":"/r","port":15021}}}"#
        );
    }

    #[test]
    fn an_action_without_a_port_gives_the_agent_port_0_as_go_writes_its_zero_value() {
        let c = json!({"name": "c", "ports": [{"name": "noport"}],
            "livenessProbe": {"httpGet": {"path": "/l"}, "timeoutSeconds": 2},
            "readinessProbe": {"tcpSocket": {"port": null}, "timeoutSeconds": 0},
            "startupProbe": {"grpc": {"service": "s"}},
            "lifecycle": {"preStop": {"httpGet": {"path": "/s", "port": "noport"}},
                "postStart": {"grpc": {"port": 9000}}}});
        let want = concat!(
            r#"{"/app-health/c/livez":{"httpGet":{"path":"/l","port":0},"timeoutSeconds":2},"#,
            r#""/app-health/c/readyz":{"tcpSocket":{"port":0}},"#,
            r#""/app-health/c/startupz":{"grpc":{"port":0,"service":"s"}},"#,
            r#""/app-lifecycle/c/prestopz":{"httpGet":{"path":"/s","port":0}}}"#
        );
        let both = both_paths(&c, PORTS);
        assert_eq!((both.tree_probers.as_str(), both.text_probers.as_str()), (want, want));
        // A named port with a null number is Go's 0 too; a mesh status port of 0 drops a port-less original, as it
        // drops a `port: 0`, but not a gRPC one.
        let c = json!({"name": "c", "ports": [{"name": "p", "containerPort": null}],
            "livenessProbe": {"httpGet": {"path": "/l", "port": "p"}},
            "readinessProbe": {"tcpSocket": {}},
            "startupProbe": {"grpc": {"service": "s"}}});
        let zero_mesh = StatusPorts { pod: 15020, mesh: 0 };
        let want = concat!(
            r#"{"/app-health/c/livez":{"httpGet":{"path":"/l","port":0}},"#,
            r#""/app-health/c/startupz":{"grpc":{"port":0,"service":"s"}}}"#
        );
        let both = both_paths(&c, zero_mesh);
        assert_eq!((both.tree_probers.as_str(), both.text_probers.as_str()), (want, want));
    }

    #[test]
    fn a_null_grpc_action_is_no_grpc_probe() {
        let mut c = json!({"name": "w", "livenessProbe": {"grpc": null, "periodSeconds": 3}});
        let before = c.clone();
        let mut probers = Probers::new();
        rewrite_container(&mut c, PORTS, &Probers::new(), &mut probers);
        assert_eq!(c, before);
        assert!(probers.is_empty());
    }

    #[test]
    fn exec_probes_are_left_alone() {
        let mut c = json!({"name": "w", "livenessProbe": {"exec": {"command": ["true"]}}});
        let before = c.clone();
        let mut probers = Probers::new();
        rewrite_container(&mut c, PORTS, &Probers::new(), &mut probers);
        assert_eq!(c, before);
        assert!(probers.is_empty());
    }
}
