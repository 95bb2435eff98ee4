//! Compact JSON in the field order Go's `encoding/json` uses for Kubernetes types.
//!
//! Istio writes several annotation and environment values (`proxy.istio.io/overrides`, `ISTIO_META_POD_PORTS`,
//! `ISTIO_KUBE_APP_PROBERS`) by marshalling Go structs, so their text follows struct declaration order rather than
//! sorted keys. These values are compared as exact strings, so we reproduce that order. Unknown keys follow the
//! known ones, sorted. Strings are escaped as `json.Marshal` escapes them, which is serde_json's escaping plus
//! `<`, `>`, `&`, U+2028 and U+2029 as `\u003c`, `\u003e`, `\u0026`, `\u2028` and `\u2029` (a probe path such as
//! `/healthz?a=1&b=2` is written `/healthz?a=1\u0026b=2`, as Istio writes it).

use serde_json::{Map, Value};

use crate::json_text;

/// The shape of a Go type, enough to order its JSON.
#[derive(Clone, Copy)]
pub enum Shape {
    /// A scalar, a list of scalars or a free-form map: written as is (maps sorted).
    Plain,
    /// A struct with fields in declaration order.
    Struct(&'static [(&'static str, Shape)]),
    /// A list of one shape.
    List(&'static Shape),
    /// A struct of one of Istio's own types, all of whose fields are declared: members it does not declare are
    /// dropped (as decoding into it drops them), and each field is written as its shape says ([`Shape::OmitEmpty`],
    /// [`Shape::Text`], [`Shape::Pointer`]; any other shape: when present).
    Typed(&'static [(&'static str, Shape)]),
    /// A field of a [`Shape::Typed`] struct with `omitempty`: left out when absent, null, `""`, `0`, `false`, `[]`
    /// or `{}` (null decodes to the Go type's zero value, which `omitempty` leaves out). Not for pointers to
    /// structs, which Go leaves out only when nil.
    OmitEmpty(&'static Shape),
    /// A `string` field of a [`Shape::Typed`] struct without `omitempty`: `""` when absent or null.
    Text,
    /// A pointer field of a [`Shape::Typed`] struct without `omitempty`: `null` when absent.
    Pointer(&'static Shape),
}

use Shape::{List, OmitEmpty, Plain, Pointer, Struct, Text, Typed};

const FIELD_REF: Shape = Struct(&[("apiVersion", Plain), ("fieldPath", Plain)]);
const RESOURCE_FIELD_REF: Shape = Struct(&[("containerName", Plain), ("resource", Plain), ("divisor", Plain)]);
const KEY_REF: Shape = Struct(&[("name", Plain), ("key", Plain), ("optional", Plain)]);
const ENV_SOURCE: Shape = Struct(&[
    ("fieldRef", FIELD_REF),
    ("resourceFieldRef", RESOURCE_FIELD_REF),
    ("configMapKeyRef", KEY_REF),
    ("secretKeyRef", KEY_REF),
]);
const ENV: Shape = Struct(&[("name", Plain), ("value", Plain), ("valueFrom", ENV_SOURCE)]);
/// `corev1.ContainerPort`.
pub const CONTAINER_PORT: Shape = Struct(&[
    ("name", Plain),
    ("hostPort", Plain),
    ("containerPort", Plain),
    ("protocol", Plain),
    ("hostIP", Plain),
]);
const RESOURCES: Shape = Struct(&[("limits", Plain), ("requests", Plain), ("claims", Plain)]);
const VOLUME_MOUNT: Shape = Struct(&[
    ("name", Plain),
    ("readOnly", Plain),
    ("recursiveReadOnly", Plain),
    ("mountPath", Plain),
    ("subPath", Plain),
    ("mountPropagation", Plain),
    ("subPathExpr", Plain),
]);
const HTTP_HEADER: Shape = Struct(&[("name", Plain), ("value", Plain)]);
/// `corev1.HTTPGetAction`.
const HTTP_GET: Shape = Struct(&[
    ("path", Plain),
    ("port", Plain),
    ("host", Plain),
    ("scheme", Plain),
    ("httpHeaders", List(&HTTP_HEADER)),
]);
/// `corev1.TCPSocketAction`.
const TCP_SOCKET: Shape = Struct(&[("port", Plain), ("host", Plain)]);
/// `corev1.GRPCAction`.
const GRPC: Shape = Struct(&[("port", Plain), ("service", Plain)]);
const EXEC: Shape = Struct(&[("command", Plain)]);
const SLEEP: Shape = Struct(&[("seconds", Plain)]);
/// `corev1.Probe` (with its inlined `ProbeHandler`).
pub const PROBE: Shape = Struct(&[
    ("exec", EXEC),
    ("httpGet", HTTP_GET),
    ("tcpSocket", TCP_SOCKET),
    ("grpc", GRPC),
    ("initialDelaySeconds", Plain),
    ("timeoutSeconds", Plain),
    ("periodSeconds", Plain),
    ("successThreshold", Plain),
    ("failureThreshold", Plain),
    ("terminationGracePeriodSeconds", Plain),
]);
/// Istio's app prober: the original handler of a rewritten probe, as `DumpAppProbers` marshals its `Prober` (the
/// action a pointer with `omitempty`, present when written; `timeoutSeconds` an `int32` with `omitempty`, which the
/// caller leaves out when 0 or null).
pub const PROBER: Shape = Struct(&[
    ("httpGet", PROBER_HTTP_GET),
    ("tcpSocket", PROBER_TCP_SOCKET),
    ("grpc", PROBER_GRPC),
    ("timeoutSeconds", Plain),
]);
/// The prober's `HTTPHeader` (Istio's `apimirror` copy of `corev1.HTTPHeader`): two strings without `omitempty`.
const PROBER_HTTP_HEADER: Shape = Typed(&[("name", Text), ("value", Text)]);
/// The prober's `HTTPGetAction` (Istio's `apimirror` copy of `corev1.HTTPGetAction`): `path`, `host`, `scheme` and
/// `httpHeaders` with `omitempty`, `port` always written.
pub const PROBER_HTTP_GET: Shape = Typed(&[
    ("path", OmitEmpty(&Plain)),
    ("port", Plain),
    ("host", OmitEmpty(&Plain)),
    ("scheme", OmitEmpty(&Plain)),
    ("httpHeaders", OmitEmpty(&List(&PROBER_HTTP_HEADER))),
]);
/// The prober's `TCPSocketAction`: `host` with `omitempty`, `port` always written.
pub const PROBER_TCP_SOCKET: Shape = Typed(&[("port", Plain), ("host", OmitEmpty(&Plain))]);
/// The prober's `GRPCAction`: `port` always written, `service` a `*string` without `omitempty` (`null` when absent).
pub const PROBER_GRPC: Shape = Typed(&[("port", Plain), ("service", Pointer(&Plain))]);
/// `corev1.LifecycleHandler`.
pub const LIFECYCLE_HANDLER: Shape = Struct(&[
    ("exec", EXEC),
    ("httpGet", HTTP_GET),
    ("tcpSocket", TCP_SOCKET),
    ("sleep", SLEEP),
]);
const LIFECYCLE: Shape = Struct(&[
    ("postStart", LIFECYCLE_HANDLER),
    ("preStop", LIFECYCLE_HANDLER),
    ("stopSignal", Plain),
]);
const CAPABILITIES: Shape = Struct(&[("add", Plain), ("drop", Plain)]);
const SECURITY_CONTEXT: Shape = Struct(&[
    ("capabilities", CAPABILITIES),
    ("privileged", Plain),
    ("seLinuxOptions", Plain),
    ("windowsOptions", Plain),
    ("runAsUser", Plain),
    ("runAsGroup", Plain),
    ("runAsNonRoot", Plain),
    ("readOnlyRootFilesystem", Plain),
    ("allowPrivilegeEscalation", Plain),
    ("procMount", Plain),
    ("seccompProfile", Plain),
    ("appArmorProfile", Plain),
]);
/// `corev1.Container`.
pub const CONTAINER: Shape = Struct(&[
    ("name", Plain),
    ("image", Plain),
    ("command", Plain),
    ("args", Plain),
    ("workingDir", Plain),
    ("ports", List(&CONTAINER_PORT)),
    ("envFrom", Plain),
    ("env", List(&ENV)),
    ("resources", RESOURCES),
    ("resizePolicy", Plain),
    ("restartPolicy", Plain),
    ("restartPolicyRules", Plain),
    ("volumeMounts", List(&VOLUME_MOUNT)),
    ("volumeDevices", Plain),
    ("livenessProbe", PROBE),
    ("readinessProbe", PROBE),
    ("startupProbe", PROBE),
    ("lifecycle", LIFECYCLE),
    ("terminationMessagePath", Plain),
    ("terminationMessagePolicy", Plain),
    ("imagePullPolicy", Plain),
    ("securityContext", SECURITY_CONTEXT),
    ("stdin", Plain),
    ("stdinOnce", Plain),
    ("tty", Plain),
]);

/// Writes `value` as compact JSON ordered by `shape`.
pub fn to_string(value: &Value, shape: Shape) -> String {
    let mut out = Vec::new();
    write(&mut out, value, shape);
    // json_text writes UTF-8, and so does everything else here.
    String::from_utf8(out).unwrap_or_default()
}

/// Appends a string as `json.Marshal` writes it.
pub fn write_str(out: &mut Vec<u8>, text: &str) {
    json_text::write_go_str(out, text);
}

/// A [`std::fmt::Write`] that passes JSON text on with Go's `json.Marshal` escapes (`<`, `>`, `&`, U+2028, U+2029,
/// which in JSON text occur only inside strings).
pub struct GoEscapes<'w, W: std::fmt::Write>(pub &'w mut W);

impl<W: std::fmt::Write> std::fmt::Write for GoEscapes<'_, W> {
    fn write_str(&mut self, text: &str) -> std::fmt::Result {
        let mut rest = text;
        while let Some(i) = rest.find(['<', '>', '&', '\u{2028}', '\u{2029}']) {
            let (head, tail) = rest.split_at(i);
            self.0.write_str(head)?;
            let mut chars = tail.chars();
            self.0.write_str(match chars.next() {
                Some('<') => "\\u003c",
                Some('>') => "\\u003e",
                Some('&') => "\\u0026",
                Some('\u{2028}') => "\\u2028",
                _ => "\\u2029",
            })?;
            rest = chars.as_str();
        }
        self.0.write_str(rest)
    }
}

/// A string as `json.Marshal` writes it.
pub fn string(text: &str) -> String {
    let mut out = Vec::with_capacity(text.len() + 2);
    json_text::write_go_str(&mut out, text);
    // The writer writes UTF-8.
    String::from_utf8(out).unwrap_or_default()
}

/// Appends `value` as compact JSON ordered by `shape`.
pub fn write(out: &mut Vec<u8>, value: &Value, shape: Shape) {
    match (shape, value) {
        (Struct(fields) | Typed(fields), Value::Object(map)) => write_struct_with(out, map, shape, fields, None),
        (Text, Value::Null) => out.extend_from_slice(b"\"\""),
        (OmitEmpty(inner) | Pointer(inner), _) => write(out, value, *inner),
        (List(item), Value::Array(items)) => {
            out.push(b'[');
            for (i, v) in items.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                match (*item, v) {
                    // A null item of a struct type (not a pointer) decodes to the struct's zero value.
                    (Typed(fields), Value::Null) => write_struct_with(out, &Map::new(), *item, fields, None),
                    _ => write(out, v, *item),
                }
            }
            out.push(b']');
        }
        _ => json_text::write_go_value(out, value),
    }
}

/// Appends the map `map` as [`write`] writes it ordered by the struct `shape`, but with the member `replaced.0`
/// holding `replaced.1` (where the struct declares it, whether or not the map has it): the JSON of a copy of the map
/// with that member set, without the copy. A shape other than a struct writes the map as it is.
pub fn write_with(out: &mut Vec<u8>, map: &Map<String, Value>, shape: Shape, replaced: (&str, &Value)) {
    match shape {
        Struct(fields) | Typed(fields) if fields.iter().any(|(name, _)| *name == replaced.0) => {
            write_struct_with(out, map, shape, fields, Some(replaced));
        }
        _ => {
            let mut copy = map.clone();
            copy.insert(replaced.0.to_owned(), replaced.1.clone());
            write(out, &Value::Object(copy), shape);
        }
    }
}

/// Whether `value` is a Go zero value, what `omitempty` leaves out (null standing for the zero value it decodes
/// to): the API server drops these from `omitempty` fields too (the operator's comparison with live objects).
pub fn go_empty(value: &Value) -> bool {
    match value {
        Value::Null => true,
        Value::Bool(b) => !b,
        Value::Number(n) => n.as_f64() == Some(0.0),
        Value::String(s) => s.is_empty(),
        Value::Array(items) => items.is_empty(),
        Value::Object(map) => map.is_empty(),
    }
}

/// The struct `map` of `shape` (whose fields are `fields`), with the declared member `replaced.0` holding
/// `replaced.1` when given.
fn write_struct_with(
    out: &mut Vec<u8>,
    map: &Map<String, Value>,
    shape: Shape,
    fields: &[(&str, Shape)],
    replaced: Option<(&str, &Value)>,
) {
    out.push(b'{');
    let mut first = true;
    let mut emit = |out: &mut Vec<u8>, key: &str, v: &Value, shape: Shape| {
        if !first {
            out.push(b',');
        }
        first = false;
        json_text::write_go_str(out, key);
        out.push(b':');
        write(out, v, shape);
    };
    let mut known = 0;
    for (name, field) in fields {
        let own = map.get(*name);
        known += usize::from(own.is_some());
        let v = match replaced {
            Some((key, v)) if key == *name => Some(v),
            _ => own,
        };
        match (field, v) {
            (OmitEmpty(_), v) if v.is_none_or(go_empty) => {}
            (Text, None) => emit(out, name, &Value::Null, Text),
            (Pointer(_), None) => emit(out, name, &Value::Null, Plain),
            (_, Some(v)) => emit(out, name, v, *field),
            (_, None) => {}
        }
    }
    // Members the struct does not declare, in key order (none, usually: then the map is not walked again).
    if known < map.len() && !matches!(shape, Typed(_)) {
        for (k, v) in map {
            if !fields.iter().any(|(name, _)| name == k) {
                emit(out, k, v, Plain);
            }
        }
    }
    out.push(b'}');
}

/// A container as Go marshals a `corev1.Container`: `resources` is always present (it is not a pointer).
pub fn container_to_string(container: &Value) -> String {
    let mut c = container.clone();
    if let Value::Object(map) = &mut c {
        map.entry("resources").or_insert_with(|| Value::Object(Map::new()));
    }
    to_string(&c, CONTAINER)
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn a_member_replaced_is_written_as_in_a_copy_with_it_set() {
        let port = json!(8080);
        for map in [
            json!({}),
            json!({"port": "http"}),
            json!({"path": "/p", "scheme": "HTTPS", "port": 1, "zz": [1], "aa": "<&>"}),
            json!({"host": "h", "httpHeaders": [{"value": "v", "name": "n", "x": 1}]}),
        ] {
            let map = map.as_object().unwrap();
            for (shape, key) in [
                (HTTP_GET, "port"),
                (TCP_SOCKET, "port"),
                (GRPC, "service"),
                (PROBER_HTTP_GET, "port"),
                (PROBER_TCP_SOCKET, "port"),
                (PROBER_GRPC, "port"),
                (PROBER_GRPC, "service"),
                (Plain, "port"),
            ] {
                let mut copy = map.clone();
                copy.insert(key.into(), port.clone());
                let mut want = Vec::new();
                write(&mut want, &Value::Object(copy), shape);
                let mut got = Vec::new();
                write_with(&mut got, map, shape, (key, &port));
                assert_eq!(String::from_utf8(got).unwrap(), String::from_utf8(want).unwrap());
            }
        }
    }

    /// `write_struct` counts the declared fields a map has to skip the walk for undeclared ones: a shape must not
    /// declare a field twice.
    #[test]
    fn no_shape_declares_a_field_twice() {
        fn check(shape: Shape, seen: &mut usize) {
            match shape {
                Plain | Text => {}
                List(item) | OmitEmpty(item) | Pointer(item) => check(*item, seen),
                Struct(fields) | Typed(fields) => {
                    *seen += 1;
                    for (i, (name, inner)) in fields.iter().enumerate() {
                        assert!(!fields[..i].iter().any(|(n, _)| n == name), "{name} twice");
                        check(*inner, seen);
                    }
                }
            }
        }
        let mut seen = 0;
        // Every public shape, and through them every private one (a private shape nothing reaches is dead code).
        for shape in [CONTAINER, PROBER, LIFECYCLE_HANDLER, CONTAINER_PORT, PROBE] {
            check(shape, &mut seen);
        }
        assert!(seen > 20, "{seen} structs checked");
        // An undeclared member still follows the declared ones, and one missing declared field does not hide it.
        let v = json!({"z": 1, "containerPort": 80, "a": 2, "protocol": "TCP"});
        assert_eq!(
            to_string(&v, CONTAINER_PORT),
            r#"{"containerPort":80,"protocol":"TCP","a":2,"z":1}"#
        );
    }

    #[test]
    fn strings_are_escaped_for_html_as_go_marshals_them() {
        // What Go's json.Marshal writes for these (encoding/json escapes <, >, & and the two line separators).
        let v = json!({"path": "/h?a=1&b=<2>", "sep": "x\u{2028}y\u{2029}z", "other": "é€\u{2027}", "a&b": 1});
        assert_eq!(
            to_string(&v, Plain),
            concat!(
                r#"{"a\u0026b":1,"other":"#,
                "\"é€\u{2027}\"",
                r#","path":"/h?a=1\u0026b=\u003c2\u003e","sep":"x\u2028y\u2029z"}"#
            )
        );
        let probe = json!({"httpGet": {"path": "/healthz?a=1&b=2", "port": 8080}});
        assert_eq!(
            to_string(&probe, PROBER),
            r#"{"httpGet":{"path":"/healthz?a=1\u0026b=2","port":8080}}"#
        );
    }

    #[test]
    fn the_escaping_writer_escapes_as_the_byte_writer_does() {
        use std::fmt::Write as _;
        let v = json!({"path": "/h?a=1&b=<2>", "sep": "x\u{2028}y\u{2029}z", "other": "é€\u{2027}", "a&b": 1});
        let mut text = String::new();
        write!(GoEscapes(&mut text), "{v}").unwrap();
        assert_eq!(text, to_string(&v, Plain));
    }

    /// What Go's `json.Marshal` writes for Istio's `Prober` decoded from these originals (`apimirror`'s types:
    /// `omitempty` strings and lists left out when empty or null, header strings `""` when missing, a gRPC
    /// `service` pointer `null` when missing, undeclared members dropped).
    #[test]
    fn prober_originals_are_written_as_go_marshals_istios_types() {
        for (prober, want) in [
            (
                json!({"httpGet": {"path": "", "port": 80, "host": "", "scheme": "", "httpHeaders": []}}),
                r#"{"httpGet":{"port":80}}"#,
            ),
            (
                json!({"httpGet": {"path": null, "port": 80, "host": null, "scheme": null, "httpHeaders": null}}),
                r#"{"httpGet":{"port":80}}"#,
            ),
            (
                json!({"httpGet": {"scheme": "HTTPS", "extra": 1, "port": "http", "path": "/p", "host": "h",
                    "httpHeaders": [{"name": "a"}, {"value": "v", "name": null, "x": 2}]}, "timeoutSeconds": 3}),
                r#"{"httpGet":{"path":"/p","port":"http","host":"h","scheme":"HTTPS","httpHeaders":[{"name":"a","value":""},{"name":"","value":"v"}]},"timeoutSeconds":3}"#,
            ),
            (
                json!({"httpGet": {"port": 1, "httpHeaders": [null, {"name": "n", "value": null}]}}),
                r#"{"httpGet":{"port":1,"httpHeaders":[{"name":"","value":""},{"name":"n","value":""}]}}"#,
            ),
            (
                json!({"tcpSocket": {"host": "", "port": 81}}),
                r#"{"tcpSocket":{"port":81}}"#,
            ),
            (
                json!({"tcpSocket": {"host": "h", "port": 81, "x": 1}}),
                r#"{"tcpSocket":{"port":81,"host":"h"}}"#,
            ),
            (
                json!({"grpc": {"port": 9090}}),
                r#"{"grpc":{"port":9090,"service":null}}"#,
            ),
            (
                json!({"grpc": {"port": 9090, "service": ""}}),
                r#"{"grpc":{"port":9090,"service":""}}"#,
            ),
            (
                json!({"grpc": {"service": "s", "port": 9090}}),
                r#"{"grpc":{"port":9090,"service":"s"}}"#,
            ),
        ] {
            assert_eq!(to_string(&prober, PROBER), want, "{prober}");
            // With another port written in place, as the webhook writes it: the same action, that port in it.
            let (name, action) = prober.as_object().unwrap().iter().next().unwrap();
            let shape = match name.as_str() {
                "httpGet" => PROBER_HTTP_GET,
                "tcpSocket" => PROBER_TCP_SOCKET,
                _ => PROBER_GRPC,
            };
            let mut text = Vec::new();
            write_with(&mut text, action.as_object().unwrap(), shape, ("port", &json!(4242)));
            // The action's text in `want`: after `{"<name>":`, before `,"timeoutSeconds"` or the closing brace.
            let inner = want
                .strip_prefix(&format!("{{\"{name}\":"))
                .unwrap()
                .strip_suffix('}')
                .unwrap();
            let inner = inner.split(",\"timeoutSeconds\"").next().unwrap();
            let expected = inner.replace(&format!("\"port\":{}", action["port"]), "\"port\":4242");
            assert_eq!(String::from_utf8(text).unwrap(), expected, "{prober}");
        }
    }

    #[test]
    fn container_fields_follow_go_declaration_order() {
        let c = json!({"securityContext": {"runAsGroup": 4321, "runAsUser": 1234}, "name": "istio-proxy"});
        assert_eq!(
            container_to_string(&c),
            r#"{"name":"istio-proxy","resources":{},"securityContext":{"runAsUser":1234,"runAsGroup":4321}}"#
        );
    }

    #[test]
    fn ports_put_name_before_container_port() {
        let p = json!({"containerPort": 80, "name": "http"});
        assert_eq!(to_string(&p, CONTAINER_PORT), r#"{"name":"http","containerPort":80}"#);
    }
}
