//! Validation of the annotations that shape traffic capture, the proxy's resources, probes, logging and volumes,
//! run before injecting. Errors name the annotation and, for the ones Istio validates
//! (`pkg/kube/inject/validate.go`), use Istio's wording; the rest refuse values Kubernetes or the proxy would
//! refuse later (negative quantities, requests above limits, out-of-range integers, mounts of unknown volumes).
#![cfg_attr(not(test), deny(clippy::indexing_slicing))]

use std::collections::BTreeSet;
use std::net::IpAddr;

use serde_json::{Map, Value};

use super::InjectError;
use super::annotations as ann;
use super::shape::kind_of;
use crate::quantity::Quantity;

fn invalid(annotation: &str, message: String) -> InjectError {
    InjectError::InvalidAnnotation {
        annotation: annotation.to_owned(),
        message,
    }
}

/// Go's `strconv.ParseUint(text, 10, bits)` error text, or the value.
fn parse_uint(text: &str, max: u64) -> Result<u64, String> {
    if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
        return Err(format!("strconv.ParseUint: parsing {text:?}: invalid syntax"));
    }
    match text.parse::<u64>() {
        Ok(n) if n <= max => Ok(n),
        _ => Err(format!("strconv.ParseUint: parsing {text:?}: value out of range")),
    }
}

/// A comma-separated CIDR list, or `*` where allowed, or empty. As Istio: items are not trimmed, and an empty item
/// in a non-empty list (`a,,b`, a trailing comma) is refused.
pub fn cidr_list(annotation: &str, param: &str, value: &str, star: bool) -> Result<(), InjectError> {
    if value.is_empty() || (star && value == "*") {
        return Ok(());
    }
    for item in value.split(',') {
        let bad = |why: &str| {
            invalid(
                annotation,
                format!("{param} invalid: failed parsing cidr '{item}': {why}"),
            )
        };
        let (ip, prefix) = item.split_once('/').ok_or_else(|| bad("no '/'"))?;
        let ip: IpAddr = ip.parse().map_err(|_| bad("bad IP address"))?;
        let max = if ip.is_ipv4() { 32 } else { 128 };
        let leading_zero = prefix.len() > 1 && prefix.starts_with('0');
        match parse_uint(prefix, max) {
            Ok(_) if !leading_zero => {}
            _ => return Err(bad(&format!("bad bits after slash: {prefix:?}"))),
        }
    }
    Ok(())
}

/// A comma-separated port list (0–65535, each item trimmed, as Istio's `parsePorts`: `strconv.ParseUint(p, 10,
/// 16)`), or `*` where allowed, or empty. An empty item in a non-empty list (`1,2,,3`) is refused, as Istio does.
pub fn port_list(annotation: &str, param: &str, value: &str, star: bool) -> Result<(), InjectError> {
    let value = value.trim();
    if value.is_empty() || (star && value == "*") {
        return Ok(());
    }
    for item in value.split(',') {
        if let Err(why) = parse_uint(item.trim(), 65535) {
            return Err(invalid(
                annotation,
                format!("{param} invalid: failed parsing port '{item}': {why}"),
            ));
        }
    }
    Ok(())
}

/// Go's `strconv.ParseBool`.
fn go_bool(annotation: &str, value: &str) -> Result<(), InjectError> {
    match value {
        "1" | "t" | "T" | "true" | "TRUE" | "True" | "0" | "f" | "F" | "false" | "FALSE" | "False" => Ok(()),
        _ => Err(invalid(
            annotation,
            format!("strconv.ParseBool: parsing {value:?}: invalid syntax"),
        )),
    }
}

/// Exactly `"true"` or `"false"`: the templates compare with `"true"`, so `"True"` would silently mean false.
fn strict_bool(annotation: &str, value: &str) -> Result<(), InjectError> {
    match value {
        "true" | "false" => Ok(()),
        _ => Err(invalid(
            annotation,
            format!("{value:?} (expected \"true\" or \"false\")"),
        )),
    }
}

const ENVOY_LEVELS: &[&str] = &["trace", "debug", "info", "warning", "warn", "error", "critical", "off"];
const AGENT_LEVELS: &[&str] = &["none", "fatal", "error", "warn", "info", "debug"];

/// Envoy's `--log-level`.
fn envoy_level(annotation: &str, value: &str) -> Result<(), InjectError> {
    if ENVOY_LEVELS.contains(&value) {
        return Ok(());
    }
    Err(invalid(
        annotation,
        format!("{value:?} is not an Envoy log level ({})", ENVOY_LEVELS.join(", ")),
    ))
}

/// `component:level,...` (Envoy's `--component-log-level`), or the agent's `scope:level,...` / `level` when
/// `levels` is the agent's.
fn scoped_levels(annotation: &str, value: &str, levels: &[&str], bare_level: bool) -> Result<(), InjectError> {
    if value.is_empty() {
        return Ok(());
    }
    for item in value.split(',') {
        let ok = match item.split_once(':') {
            Some((scope, level)) => !scope.trim().is_empty() && levels.contains(&level.trim()),
            None => bare_level && levels.contains(&item.trim()),
        };
        if !ok {
            let form = if bare_level {
                "level or scope:level"
            } else {
                "component:level"
            };
            return Err(invalid(
                annotation,
                format!(
                    "{item:?} is not a {form} item (levels: {}; items separated by commas)",
                    levels.join(", ")
                ),
            ));
        }
    }
    Ok(())
}

/// A readiness probe field: Istio's unsigned 32-bit check, then Kubernetes' int32 range.
fn probe_seconds(annotation: &str, value: &str) -> Result<(), InjectError> {
    let n = parse_uint(value, u64::from(u32::MAX)).map_err(|e| invalid(annotation, e))?;
    if n > i32::MAX as u64 {
        return Err(invalid(
            annotation,
            format!("{value} is out of range for a probe field (0 to {})", i32::MAX),
        ));
    }
    Ok(())
}

/// `sidecar.istio.io/proxyCPU`, …: parseable, not negative, and each request no larger than its limit.
fn resources(annotations: &Map<String, Value>) -> Result<(), InjectError> {
    let get = |k: &'static str| annotations.get(k).and_then(Value::as_str);
    let mut parsed = std::collections::BTreeMap::new();
    for key in [
        ann::PROXY_CPU,
        ann::PROXY_MEMORY,
        ann::PROXY_CPU_LIMIT,
        ann::PROXY_MEMORY_LIMIT,
    ] {
        if let Some(v) = get(key) {
            let q = Quantity::parse(v).map_err(|e| invalid(key, e.to_string()))?;
            if q.milli_value() < 0 {
                return Err(invalid(key, format!("{v:?} must not be negative")));
            }
            parsed.insert(key, q);
        }
    }
    for (request, limit) in [
        (ann::PROXY_CPU, ann::PROXY_CPU_LIMIT),
        (ann::PROXY_MEMORY, ann::PROXY_MEMORY_LIMIT),
    ] {
        if let (Some(r), Some(l)) = (parsed.get(request), parsed.get(limit))
            && r.milli_value() > l.milli_value()
        {
            return Err(invalid(
                request,
                format!(
                    "request {:?} is larger than the limit {:?} of {limit}",
                    get(request).unwrap_or_default(),
                    get(limit).unwrap_or_default()
                ),
            ));
        }
    }
    Ok(())
}

/// A Kubernetes object name (DNS-1123 subdomain), as a ConfigMap's.
fn dns_subdomain(annotation: &str, value: &str) -> Result<(), InjectError> {
    let label_ok = |l: &str| {
        !l.is_empty()
            && l.bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
            && !l.starts_with('-')
            && !l.ends_with('-')
    };
    if value.len() <= 253 && value.split('.').all(label_ok) {
        return Ok(());
    }
    Err(invalid(
        annotation,
        format!("{value:?} is not a valid ConfigMap name (lowercase letters, digits, '-' and '.', at most 253)"),
    ))
}

/// What checking the annotations parsed on the way, so it is not parsed twice.
#[derive(Debug, Default)]
pub struct Checked {
    /// The fields of `proxy.istio.io/config`, when the pod sets it.
    pub proxy_config: Option<Map<String, Value>>,
}

/// Checks every validated annotation the pod sets (each one's shape and range; see also [`user_volumes`]).
pub fn annotations(annotations: &Map<String, Value>) -> Result<Checked, InjectError> {
    for (key, value) in annotations {
        if !value.is_string() {
            return Err(invalid(
                key,
                format!("annotation values must be strings, not {}", kind_of(value)),
            ));
        }
    }
    let get = |k: &'static str| annotations.get(k).and_then(Value::as_str);
    if let Some(v) = get(ann::INCLUDE_OUTBOUND_IP_RANGES) {
        cidr_list(ann::INCLUDE_OUTBOUND_IP_RANGES, "includeIPRanges", v, true)?;
    }
    if let Some(v) = get(ann::EXCLUDE_OUTBOUND_IP_RANGES) {
        cidr_list(ann::EXCLUDE_OUTBOUND_IP_RANGES, "excludeIPRanges", v, false)?;
    }
    for (key, param, star) in [
        (ann::INCLUDE_INBOUND_PORTS, "includeInboundPorts", true),
        (ann::EXCLUDE_INBOUND_PORTS, "excludeInboundPorts", false),
        (ann::INCLUDE_OUTBOUND_PORTS, "includeOutboundPorts", true),
        (ann::EXCLUDE_OUTBOUND_PORTS, "excludeOutboundPorts", false),
    ] {
        if let Some(v) = get(key) {
            port_list(key, param, v, star)?;
        }
    }
    if let Some(v) = get(ann::INTERCEPTION_MODE)
        && !matches!(v, "REDIRECT" | "TPROXY" | "NONE")
    {
        return Err(invalid(
            ann::INTERCEPTION_MODE,
            format!("interceptionMode invalid, use REDIRECT,TPROXY,NONE: {v}"),
        ));
    }
    if let Some(v) = get(ann::STATUS_PORT) {
        parse_uint(v.trim(), 65535).map_err(|e| {
            invalid(
                ann::STATUS_PORT,
                format!("statusPort invalid: failed parsing port '{v}': {e}"),
            )
        })?;
    }
    for key in [
        ann::READINESS_INITIAL_DELAY,
        ann::READINESS_PERIOD,
        ann::READINESS_FAILURE_THRESHOLD,
    ] {
        if let Some(v) = get(key) {
            probe_seconds(key, v)?;
        }
    }
    resources(annotations)?;
    for key in [ann::USER_VOLUME, ann::USER_VOLUME_MOUNT] {
        if let Some(v) = get(key) {
            json_object_of_objects(key, v)?;
        }
    }
    for key in [
        ann::NATIVE_SIDECAR,
        ann::REWRITE_APP_HTTP_PROBERS,
        ann::CAP_NET_BIND_SERVICE,
    ] {
        if let Some(v) = get(key) {
            strict_bool(key, v)?;
        }
    }
    // Istio validates these with `strconv.ParseBool` (its template then compares `enableCoreDump` with "true",
    // as mizzen's does, so "True" admits the pod without a core dump setup there too).
    for key in [ann::ENABLE_CORE_DUMP, ann::PROMETHEUS_MERGE_METRICS] {
        if let Some(v) = get(key) {
            go_bool(key, v)?;
        }
    }
    if let Some(v) = get(ann::LOG_LEVEL) {
        envoy_level(ann::LOG_LEVEL, v)?;
    }
    if let Some(v) = get(ann::COMPONENT_LOG_LEVEL) {
        scoped_levels(ann::COMPONENT_LOG_LEVEL, v, ENVOY_LEVELS, false)?;
    }
    if let Some(v) = get(ann::AGENT_LOG_LEVEL) {
        scoped_levels(ann::AGENT_LOG_LEVEL, v, AGENT_LEVELS, true)?;
    }
    if let Some(v) = get(ann::BOOTSTRAP_OVERRIDE) {
        dns_subdomain(ann::BOOTSTRAP_OVERRIDE, v)?;
    }
    let proxy_config = get(ann::PROXY_CONFIG)
        .map(super::proxy_config::parse_annotation)
        .transpose()?;
    Ok(Checked { proxy_config })
}

/// The mesh-wide proxy settings of a MeshInstall (`spec.proxy`) that would break every injected pod: a
/// `componentLogLevel` Envoy refuses at start (it exits on a level it does not know or a malformed item), and
/// proxy resources the API server refuses in a pod (a request above its limit, a negative quantity). The error's
/// `annotation` is the field (`spec.proxy.componentLogLevel`). CIDR and port lists are not checked here: istio-init
/// skips a CIDR it cannot parse (for compatibility with its old shell script), so such a list works today, and
/// refusing it would stop an install that runs.
pub fn mesh_install(spec: &crate::api::MeshInstallSpec) -> Result<(), InjectError> {
    let p = &spec.proxy;
    envoy_component_levels("spec.proxy.componentLogLevel", &p.component_log_level)?;
    container_resources("spec.proxy.resources", &p.resources)
}

/// Envoy's `--component-log-level` as Envoy reads it (`OptionsImpl::parseComponentLogLevels`): `name:level` items
/// separated by commas, nothing trimmed, each level one Envoy knows. The names are checked for shape only (lower-case
/// letters, digits, `_`): Envoy also exits on a name it has no logger for, which depends on its build.
fn envoy_component_levels(field: &str, value: &str) -> Result<(), InjectError> {
    if value.is_empty() {
        return Ok(());
    }
    for item in value.split(',') {
        let ok = item.split_once(':').is_some_and(|(name, level)| {
            !name.is_empty()
                && name
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
                && ENVOY_LEVELS.contains(&level)
        });
        if !ok {
            return Err(invalid(
                field,
                format!(
                    "{item:?} is not a component:level item Envoy reads (component: lower-case letters, digits and \
                     '_'; level: {}; items separated by commas, no spaces)",
                    ENVOY_LEVELS.join(", ")
                ),
            ));
        }
    }
    Ok(())
}

/// Requests and limits of a container that the API server refuses in a pod: a negative quantity, a request above
/// its limit. A quantity mizzen's parser does not take (beyond its precision, which Kubernetes rounds) is left to
/// the API server rather than refused here.
fn container_resources(field: &str, r: &crate::api::Resources) -> Result<(), InjectError> {
    let parse = |kind: &str, name: &str, q: &k8s_openapi::apimachinery::pkg::api::resource::Quantity| {
        let parsed = Quantity::parse(&q.0).ok()?;
        Some(if parsed.milli_value() < 0 {
            Err(invalid(
                &format!("{field}.{kind}.{name}"),
                format!("{:?} must not be negative", q.0),
            ))
        } else {
            Ok(parsed.milli_value())
        })
    };
    for (name, q) in &r.limits {
        parse("limits", name, q).transpose()?;
    }
    for (name, q) in &r.requests {
        let Some(request) = parse("requests", name, q).transpose()? else {
            continue;
        };
        let limit = r.limits.get(name).and_then(|l| parse("limits", name, l)).transpose()?;
        // Both rounded up to a thousandth the same way: a request at or below its limit never compares above it.
        if limit.is_some_and(|limit| request > limit) {
            return Err(invalid(
                &format!("{field}.requests.{name}"),
                format!(
                    "{:?} is more than the limit {:?}",
                    q.0,
                    r.limits.get(name).map_or("", |l| l.0.as_str())
                ),
            ));
        }
    }
    Ok(())
}

/// `userVolume` / `userVolumeMount`: a JSON object whose every value is an object (a Volume or VolumeMount
/// without its name, which is the key).
fn json_object_of_objects(annotation: &str, text: &str) -> Result<Map<String, Value>, InjectError> {
    let what = "expected a JSON object of name to definition";
    let map = match serde_json::from_str::<Value>(text) {
        Ok(Value::Object(map)) => map,
        Ok(other) => return Err(invalid(annotation, format!("{what}, not {}", kind_of(&other)))),
        Err(e) => return Err(invalid(annotation, format!("{what}: {e}"))),
    };
    for (name, def) in &map {
        if !def.is_object() {
            return Err(invalid(
                annotation,
                format!("{what}: {name:?} maps to {}, not an object", kind_of(def)),
            ));
        }
        if name.is_empty() {
            return Err(invalid(annotation, format!("{what}: a name is empty")));
        }
    }
    Ok(map)
}

/// The volumes of `sidecar.istio.io/userVolume` and the proxy mounts of `userVolumeMount`, named by their keys.
/// Each mount needs a string `mountPath` and must name a volume the pod will have: one of `userVolume`, the
/// pod's own `volumes` (`pod_volumes`) or the template's (`template_volumes`).
pub fn user_volumes(
    annotations: &Map<String, Value>,
    pod_volumes: &[&str],
    template_volumes: &[&str],
) -> Result<(Vec<Value>, Vec<Value>), InjectError> {
    let parse = |key: &str| match annotations.get(key).and_then(Value::as_str) {
        None => Ok(Map::new()),
        Some(text) => json_object_of_objects(key, text),
    };
    let named = |name: String, def: Value| {
        let mut map = match def {
            Value::Object(map) => map,
            _ => Map::new(),
        };
        map.insert("name".into(), Value::String(name));
        Value::Object(map)
    };
    let volumes = parse(ann::USER_VOLUME)?;
    let mounts = parse(ann::USER_VOLUME_MOUNT)?;
    let known: BTreeSet<&str> = volumes
        .keys()
        .map(String::as_str)
        .chain(pod_volumes.iter().copied())
        .chain(template_volumes.iter().copied())
        .collect();
    for (name, mount) in &mounts {
        match mount.get("mountPath") {
            Some(Value::String(p)) if !p.is_empty() => {}
            _ => {
                return Err(invalid(
                    ann::USER_VOLUME_MOUNT,
                    format!("mount {name:?} needs a non-empty string mountPath"),
                ));
            }
        }
        if !known.contains(name.as_str()) {
            return Err(invalid(
                ann::USER_VOLUME_MOUNT,
                format!(
                    "mount {name:?} names no volume of the pod (add it to {} or spec.volumes)",
                    ann::USER_VOLUME
                ),
            ));
        }
    }
    Ok((
        volumes.into_iter().map(|(n, d)| named(n, d)).collect(),
        mounts.into_iter().map(|(n, d)| named(n, d)).collect(),
    ))
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn check(key: &str, value: &str) -> Result<Checked, InjectError> {
        let map = json!({ key: value });
        annotations(map.as_object().unwrap())
    }

    fn refused(key: &str, value: &str) -> String {
        let err = check(key, value).expect_err(&format!("{key}={value:?} accepted"));
        let text = err.to_string();
        assert!(text.contains(key), "{key}={value:?}: {text}");
        text
    }

    #[test]
    fn good_values_pass() {
        for (key, value) in [
            (ann::INCLUDE_OUTBOUND_IP_RANGES, "10.0.0.0/8,127.0.0.1/24"),
            (ann::INCLUDE_OUTBOUND_IP_RANGES, "*"),
            (ann::INCLUDE_OUTBOUND_IP_RANGES, "fd00::/8"),
            (ann::EXCLUDE_OUTBOUND_IP_RANGES, ""),
            (ann::INCLUDE_INBOUND_PORTS, "*"),
            (ann::INCLUDE_INBOUND_PORTS, ""),
            (ann::EXCLUDE_OUTBOUND_PORTS, "7, 8,9"),
            (ann::STATUS_PORT, "0"),
            (ann::READINESS_PERIOD, "2147483647"),
            (ann::PROXY_CPU, "100m"),
            (ann::PROXY_MEMORY_LIMIT, "1Gi"),
            (ann::ENABLE_CORE_DUMP, "true"),
            (ann::LOG_LEVEL, "warning"),
            (ann::COMPONENT_LOG_LEVEL, "misc:error,upstream:debug"),
            (ann::AGENT_LOG_LEVEL, "default:info,ads:debug"),
            (ann::AGENT_LOG_LEVEL, "debug"),
            (ann::PROMETHEUS_MERGE_METRICS, "F"),
            (ann::BOOTSTRAP_OVERRIDE, "my-bootstrap.v1"),
            (ann::USER_VOLUME, r#"{"v": {"emptyDir": {}}}"#),
            (ann::PROXY_CONFIG, "holdApplicationUntilProxyStarts: true"),
        ] {
            assert!(check(key, value).is_ok(), "{key}={value:?}: {:?}", check(key, value));
        }
    }

    #[test]
    fn values_istio_admits_are_admitted() {
        // enableCoreDump: Go's strconv.ParseBool, as Istio's validateBool.
        for value in [
            "1", "t", "T", "TRUE", "true", "True", "0", "f", "F", "FALSE", "false", "False",
        ] {
            assert!(check(ann::ENABLE_CORE_DUMP, value).is_ok(), "{value}");
        }
        // Port 0 in a port list: strconv.ParseUint(p, 10, 16), as Istio's parsePorts.
        for key in [
            ann::INCLUDE_INBOUND_PORTS,
            ann::EXCLUDE_INBOUND_PORTS,
            ann::INCLUDE_OUTBOUND_PORTS,
            ann::EXCLUDE_OUTBOUND_PORTS,
        ] {
            assert!(check(key, "0").is_ok(), "{key}");
            assert!(check(key, "0, 80,65535").is_ok(), "{key}");
            refused(key, "65536");
        }
    }

    #[test]
    fn traffic_annotations_use_istios_messages() {
        let err = refused(ann::INCLUDE_OUTBOUND_IP_RANGES, "1.1.1.1");
        assert!(
            err.contains("includeIPRanges invalid: failed parsing cidr '1.1.1.1'"),
            "{err}"
        );
        refused(ann::INCLUDE_OUTBOUND_IP_RANGES, "10.0.0.0/8,");
        refused(ann::INCLUDE_OUTBOUND_IP_RANGES, "10.0.0.0/33");
        refused(ann::EXCLUDE_OUTBOUND_IP_RANGES, "*");
        refused(ann::EXCLUDE_OUTBOUND_IP_RANGES, "10.0.0.0/8, 10.1.0.0/16");
        let err = refused(ann::EXCLUDE_INBOUND_PORTS, "*");
        assert!(
            err.contains("excludeInboundPorts invalid: failed parsing port '*'"),
            "{err}"
        );
        let err = refused(ann::INCLUDE_INBOUND_PORTS, "1,2,,3");
        assert!(err.contains("failed parsing port ''"), "{err}");
        refused(ann::EXCLUDE_OUTBOUND_PORTS, "70000");
        refused(ann::INCLUDE_OUTBOUND_PORTS, "-1");
        let err = refused(ann::INTERCEPTION_MODE, "MAGIC");
        assert!(
            err.contains("interceptionMode invalid, use REDIRECT,TPROXY,NONE: MAGIC"),
            "{err}"
        );
        refused(ann::STATUS_PORT, "65536");
        refused(ann::STATUS_PORT, "x");
    }

    #[test]
    fn readiness_fields_are_unsigned_and_fit_int32() {
        for key in [
            ann::READINESS_INITIAL_DELAY,
            ann::READINESS_PERIOD,
            ann::READINESS_FAILURE_THRESHOLD,
        ] {
            let err = refused(key, "-1");
            assert!(err.contains("invalid syntax"), "{err}");
            refused(key, "1.5");
            let err = refused(key, "2147483648");
            assert!(err.contains("out of range"), "{err}");
            refused(key, "4294967296");
        }
    }

    #[test]
    fn resource_quantities_are_non_negative_and_requests_within_limits() {
        for key in [
            ann::PROXY_CPU,
            ann::PROXY_MEMORY,
            ann::PROXY_CPU_LIMIT,
            ann::PROXY_MEMORY_LIMIT,
        ] {
            let err = refused(key, "-100m");
            assert!(err.contains("must not be negative"), "{err}");
            refused(key, "lots");
            refused(key, "");
        }
        let map = json!({ann::PROXY_CPU: "2", ann::PROXY_CPU_LIMIT: "1500m"});
        let err = annotations(map.as_object().unwrap()).unwrap_err().to_string();
        assert!(
            err.contains(ann::PROXY_CPU) && err.contains("larger than the limit"),
            "{err}"
        );
        let map = json!({ann::PROXY_MEMORY: "1Gi", ann::PROXY_MEMORY_LIMIT: "1024Mi"});
        assert!(annotations(map.as_object().unwrap()).is_ok());
        let map = json!({ann::PROXY_MEMORY: "2Gi", ann::PROXY_MEMORY_LIMIT: "1Gi"});
        assert!(annotations(map.as_object().unwrap()).is_err());
    }

    #[test]
    fn booleans_log_levels_and_names_are_checked() {
        for key in [
            ann::NATIVE_SIDECAR,
            ann::REWRITE_APP_HTTP_PROBERS,
            ann::CAP_NET_BIND_SERVICE,
        ] {
            refused(key, "True");
            refused(key, "yes");
        }
        let err = refused(ann::ENABLE_CORE_DUMP, "yes");
        assert!(err.contains("strconv.ParseBool"), "{err}");
        let err = refused(ann::PROMETHEUS_MERGE_METRICS, "yes");
        assert!(err.contains("strconv.ParseBool"), "{err}");
        refused(ann::LOG_LEVEL, "loud");
        refused(ann::COMPONENT_LOG_LEVEL, "misc");
        refused(ann::COMPONENT_LOG_LEVEL, "misc:loud,");
        refused(ann::AGENT_LOG_LEVEL, "default:trace");
        refused(ann::BOOTSTRAP_OVERRIDE, "Not_A_Name");
        refused(ann::PROXY_CONFIG, "[1]");
    }

    #[test]
    fn every_validated_annotation_refuses_wrong_shaped_values() {
        // JSON of another shape than the annotation's text format, and text where JSON is expected.
        for (key, values) in [
            (ann::INCLUDE_OUTBOUND_IP_RANGES, &["{\"x\":1}", "[1]", "1", " "][..]),
            (ann::EXCLUDE_OUTBOUND_IP_RANGES, &["{\"x\":1}", "[1]", "1", " "]),
            (ann::INCLUDE_INBOUND_PORTS, &["{\"x\":1}", "[1]", "1e3", "1,2,,3"]),
            (ann::EXCLUDE_INBOUND_PORTS, &["{\"x\":1}", "[1]", "1e3", "1,"]),
            (ann::INCLUDE_OUTBOUND_PORTS, &["{\"x\":1}", "[1]", "1e3", ",1"]),
            (ann::EXCLUDE_OUTBOUND_PORTS, &["{\"x\":1}", "[1]", "1e3", "1,,"]),
            (ann::INTERCEPTION_MODE, &["{\"x\":1}", "[1]", "1", "redirect"]),
            (ann::STATUS_PORT, &["{\"x\":1}", "[1]", "1e3", ""]),
            (ann::READINESS_INITIAL_DELAY, &["{\"x\":1}", "[1]", "1e3", " 1"]),
            (ann::READINESS_PERIOD, &["{\"x\":1}", "[1]", "1e3", ""]),
            (ann::READINESS_FAILURE_THRESHOLD, &["{\"x\":1}", "[1]", "1e3", "0x1"]),
            (ann::PROXY_CPU, &["{\"x\":1}", "[1]", "1e999", "-1"]),
            (ann::PROXY_MEMORY, &["{\"x\":1}", "[1]", "1e999", "-1Mi"]),
            (ann::PROXY_CPU_LIMIT, &["{\"x\":1}", "[1]", "1e999", "-0.5"]),
            (ann::PROXY_MEMORY_LIMIT, &["{\"x\":1}", "[1]", "1e999", "-1Gi"]),
            (ann::USER_VOLUME, &["{\"x\":1}", "[1]", "1", "{\"name\":1}"]),
            (ann::USER_VOLUME_MOUNT, &["{\"x\":1}", "[1]", "1", "{\"x\":[]}"]),
            (ann::NATIVE_SIDECAR, &["{\"x\":1}", "[1]", "1", "True"]),
            (ann::REWRITE_APP_HTTP_PROBERS, &["{\"x\":1}", "[1]", "1", "TRUE"]),
            (ann::ENABLE_CORE_DUMP, &["{\"x\":1}", "[1]", "2", "yes"]),
            (ann::CAP_NET_BIND_SERVICE, &["{\"x\":1}", "[1]", "1", "on"]),
            (ann::PROMETHEUS_MERGE_METRICS, &["{\"x\":1}", "[1]", "2", "yes"]),
            (ann::LOG_LEVEL, &["{\"x\":1}", "[1]", "1", "INFO"]),
            (ann::COMPONENT_LOG_LEVEL, &["{\"x\":1}", "[1]", "1", "a:info,,b:debug"]),
            (ann::AGENT_LOG_LEVEL, &["{\"x\":1}", "[1]", "1", "default:"]),
            (ann::BOOTSTRAP_OVERRIDE, &["{\"x\":1}", "[1]", "-1", ""]),
            (ann::PROXY_CONFIG, &["{\"x\":1}", "[1]", "1", "concurrency: [1"]),
        ] {
            for value in values {
                refused(key, value);
            }
            // A value that is not a string at all.
            for value in [json!(1), json!(true), json!(null), json!({"a": 1}), json!([1])] {
                let map = json!({ key: value });
                let err = annotations(map.as_object().unwrap()).unwrap_err().to_string();
                assert!(err.contains(key) && err.contains("must be strings"), "{err}");
            }
        }
    }

    #[test]
    fn user_volumes_of_any_shape_are_refused_or_named() {
        let anns = |v: &str, m: &str| {
            json!({ann::USER_VOLUME: v, ann::USER_VOLUME_MOUNT: m})
                .as_object()
                .unwrap()
                .clone()
        };
        for (v, m) in [
            (r#"{"x":1}"#, "{}"),
            (r#"{"name":1}"#, "{}"),
            ("[1]", "{}"),
            ("1", "{}"),
            ("\"s\"", "{}"),
            ("{}", r#"{"x":1}"#),
            ("{}", r#"{"x":[]}"#),
            ("{}", "null"),
            (r#"{"v":{}}"#, r#"{"v":{"mountPath":1}}"#),
            (r#"{"v":{}}"#, r#"{"v":{}}"#),
            (r#"{"v":{}}"#, r#"{"other":{"mountPath":"/m"}}"#),
            ("{not json", "{}"),
        ] {
            let err = user_volumes(&anns(v, m), &[], &[]).expect_err(&format!("{v} {m} accepted"));
            assert!(err.to_string().contains("sidecar.istio.io/userVolume"), "{err}");
        }
        let (volumes, mounts) = user_volumes(
            &anns(
                r#"{"v":{"emptyDir":{}}}"#,
                r#"{"v":{"mountPath":"/v"},"own":{"mountPath":"/o","name":"ignored"}}"#,
            ),
            &["own"],
            &[],
        )
        .unwrap();
        assert_eq!(volumes, vec![json!({"name": "v", "emptyDir": {}})]);
        assert_eq!(
            mounts,
            vec![
                json!({"name": "own", "mountPath": "/o"}),
                json!({"name": "v", "mountPath": "/v"})
            ]
        );
    }
}
