//! The effective proxy configuration of a pod (Istio `ProxyConfig`): Istio's defaults, the mesh's `defaultConfig`
//! and the pod's `proxy.istio.io/config` annotation, merged field by field; and its `PROXY_CONFIG` text.

use serde_json::{Map, Value, json};

use super::InjectError;
use super::annotations as ann;
use super::gojson;

/// ProxyConfig fields in protobuf declaration order, which is the order protojson writes them in.
const FIELD_ORDER: &[&str] = &[
    "configPath",
    "binaryPath",
    "serviceCluster",
    "tracingServiceName",
    "drainDuration",
    "parentShutdownDuration",
    "discoveryAddress",
    "discoveryRefreshDelay",
    "zipkinAddress",
    "statsdUdpAddress",
    "envoyMetricsServiceAddress",
    "proxyAdminPort",
    "availabilityZone",
    "controlPlaneAuthPolicy",
    "customConfigFile",
    "statNameLength",
    "concurrency",
    "proxyBootstrapTemplatePath",
    "interceptionMode",
    "tracing",
    "sds",
    "envoyAccessLogService",
    "envoyMetricsService",
    "proxyMetadata",
    "runtimeValues",
    "statusPort",
    "extraStatTags",
    "gatewayTopology",
    "terminationDrainDuration",
    "meshId",
    "readinessProbe",
    "proxyStatsMatcher",
    "holdApplicationUntilProxyStarts",
    "caCertificatesPem",
    "image",
    "privateKeyProvider",
    "proxyHeaders",
    "fileFlushInterval",
    "fileFlushMinSizeKb",
];

/// Istio's built-in proxy defaults (those that PROXY_CONFIG is relative to).
pub fn defaults(discovery_address: &str) -> Map<String, Value> {
    let v = json!({
        "configPath": "./etc/istio/proxy",
        "binaryPath": "/usr/local/bin/envoy",
        "serviceCluster": "istio-proxy",
        "drainDuration": "45s",
        "terminationDrainDuration": "5s",
        "discoveryAddress": discovery_address,
        "proxyAdminPort": 15000,
        "controlPlaneAuthPolicy": "MUTUAL_TLS",
        "statNameLength": 189,
        "statusPort": 15020,
        "tracing": {"zipkin": {"address": "zipkin.istio-system:9411"}},
    });
    match v {
        Value::Object(m) => m,
        _ => Map::new(),
    }
}

/// Longest `proxy.istio.io/config` accepted (bytes): a real one is a few lines.
pub const MAX_ANNOTATION_BYTES: usize = 64 * 1024;

/// The YAML parser's limits for the annotation: a ProxyConfig is a few dozen nodes a few levels deep, so these
/// leave room for any real one while an alias bomb (a few hundred bytes expanding to millions of nodes) or a deep
/// nesting is refused before it costs memory or time.
fn yaml_options() -> serde_saphyr::Options {
    serde_saphyr::options! {
        budget: serde_saphyr::budget! {
            max_documents: 1,
            max_events: 20_000,
            max_nodes: 5_000,
            max_depth: 16,
            flow_nesting_limit: 16,
            max_anchors: 32,
            max_aliases: 32,
            max_merge_keys: 32,
            max_recorded_anchor_events: 5_000,
            max_total_scalar_bytes: MAX_ANNOTATION_BYTES,
        },
        alias_limits: serde_saphyr::alias_limits! {
            max_total_replayed_events: 5_000,
            max_replay_stack_depth: 4,
        },
    }
}

/// Parses the `proxy.istio.io/config` annotation (YAML or JSON) into ProxyConfig fields, checked as Istio's
/// `validateProxyConfig` checks them (the field types of the proto, then `ValidateMeshConfigProxyConfig`). A null
/// field is left unset, as protojson does.
pub fn parse_annotation(text: &str) -> Result<Map<String, Value>, InjectError> {
    let err = |message: String| InjectError::InvalidAnnotation {
        annotation: ann::PROXY_CONFIG.to_owned(),
        message,
    };
    if text.len() > MAX_ANNOTATION_BYTES {
        return Err(err(format!(
            "{} bytes is over the limit of {MAX_ANNOTATION_BYTES} bytes",
            text.len()
        )));
    }
    let value: Value = serde_saphyr::from_str_with_options(text, yaml_options())
        .map_err(|e| err(format!("not valid YAML or JSON: {e}")))?;
    match value {
        Value::Object(mut map) => {
            map.retain(|_, v| !v.is_null());
            for (key, value) in &map {
                check_field(key, value).map_err(|why| err(format!("{key}: {why}")))?;
            }
            Ok(map)
        }
        Value::Null => Ok(Map::new()),
        _ => Err(err("expected a map of ProxyConfig fields".into())),
    }
}

/// What a value is, for a message: a scalar as written, else its kind.
fn shown(value: &Value) -> String {
    match value {
        Value::Bool(_) | Value::Number(_) | Value::String(_) => value.to_string(),
        other => super::shape::kind_of(other).to_owned(),
    }
}

/// The JSON type of a ProxyConfig field, from the proto.
enum FieldType {
    String,
    /// An int32 (or wrapper) within the range.
    Int(i64, i64),
    Bool,
    /// A `google.protobuf.Duration`, as Go's `time.ParseDuration` reads it.
    Duration,
    /// An enum, by name.
    Enum(&'static [&'static str]),
    /// A `map<string, string>`.
    StringMap,
    /// A `repeated string`.
    StringList,
    /// A message.
    Object,
}

fn field_type(field: &str) -> Option<FieldType> {
    use FieldType as T;
    Some(match field {
        "configPath"
        | "binaryPath"
        | "serviceCluster"
        | "discoveryAddress"
        | "zipkinAddress"
        | "statsdUdpAddress"
        | "envoyMetricsServiceAddress"
        | "availabilityZone"
        | "customConfigFile"
        | "proxyBootstrapTemplatePath"
        | "meshId" => T::String,
        "drainDuration"
        | "parentShutdownDuration"
        | "discoveryRefreshDelay"
        | "terminationDrainDuration"
        | "fileFlushInterval" => T::Duration,
        "proxyAdminPort" | "statusPort" => T::Int(1, 65535),
        "concurrency" => T::Int(0, i64::from(i32::MAX)),
        "statNameLength" => T::Int(i64::from(i32::MIN), i64::from(i32::MAX)),
        "fileFlushMinSizeKb" => T::Int(0, i64::from(u32::MAX)),
        "holdApplicationUntilProxyStarts" => T::Bool,
        "controlPlaneAuthPolicy" => T::Enum(&["NONE", "MUTUAL_TLS"]),
        "interceptionMode" => T::Enum(&["REDIRECT", "TPROXY", "NONE"]),
        "tracingServiceName" => T::Enum(&[
            "APP_LABEL_AND_NAMESPACE",
            "CANONICAL_NAME_ONLY",
            "CANONICAL_NAME_AND_NAMESPACE",
        ]),
        "proxyMetadata" | "runtimeValues" => T::StringMap,
        "extraStatTags" | "caCertificatesPem" => T::StringList,
        "tracing"
        | "sds"
        | "envoyAccessLogService"
        | "envoyMetricsService"
        | "gatewayTopology"
        | "readinessProbe"
        | "proxyStatsMatcher"
        | "image"
        | "privateKeyProvider"
        | "proxyHeaders" => T::Object,
        _ => return None,
    })
}

/// One field: its type, then what Istio's `ValidateMeshConfigProxyConfig` checks of it.
fn check_field(field: &str, value: &Value) -> Result<(), String> {
    let Some(kind) = field_type(field) else {
        return Err("unknown ProxyConfig field".into());
    };
    match (kind, value) {
        (FieldType::String, Value::String(_)) | (FieldType::Bool, Value::Bool(_)) => {}
        (FieldType::String, v) => return Err(format!("must be a string, not {}", shown(v))),
        (FieldType::Bool, v) => return Err(format!("must be true or false, not {}", shown(v))),
        (FieldType::Int(min, max), v) => match v.as_i64() {
            Some(n) if (min..=max).contains(&n) => {}
            _ if min == 1 && max == 65535 => {
                return Err(format!("must be a port number (1 to 65535), not {}", shown(v)));
            }
            _ => return Err(format!("must be an integer from {min} to {max}, not {}", shown(v))),
        },
        (FieldType::Duration, Value::String(text)) => {
            go_duration(text).map_err(|why| format!("{text:?} is not a duration ({why})"))?;
        }
        (FieldType::Duration, v) => return Err(format!("must be a duration such as \"5s\", not {}", shown(v))),
        (FieldType::Enum(names), Value::String(name)) if names.contains(&name.as_str()) => {}
        (FieldType::Enum(names), v) => return Err(format!("must be one of {}, not {}", names.join(", "), shown(v))),
        (FieldType::StringMap, Value::Object(map)) => {
            if let Some((k, v)) = map.iter().find(|(_, v)| !v.is_string()) {
                return Err(format!("values must be strings: {k:?} is {}", shown(v)));
            }
        }
        (FieldType::StringMap, v) => return Err(format!("must be a map of strings, not {}", shown(v))),
        (FieldType::StringList, Value::Array(items)) if items.iter().all(Value::is_string) => {}
        (FieldType::StringList, v) => return Err(format!("must be a list of strings, not {}", shown(v))),
        (FieldType::Object, Value::Object(_)) => {}
        (FieldType::Object, v) => return Err(format!("must be a map, not {}", shown(v))),
    }
    check_value(field, value)
}

/// What `ValidateMeshConfigProxyConfig` checks of a field of the right type.
fn check_value(field: &str, value: &Value) -> Result<(), String> {
    let text = value.as_str().unwrap_or_default();
    match field {
        "configPath" | "binaryPath" | "serviceCluster" | "discoveryAddress" if text.is_empty() => {
            Err("must not be empty".into())
        }
        "discoveryAddress" | "statsdUdpAddress" | "envoyMetricsServiceAddress" if !text.is_empty() => {
            proxy_address(text)
        }
        "drainDuration" => drain_duration(text),
        "envoyAccessLogService" | "envoyMetricsService" => match value.get("address") {
            None | Some(Value::Null) => Ok(()),
            Some(Value::String(a)) if a.is_empty() => Ok(()),
            Some(Value::String(a)) => proxy_address(a).map_err(|why| format!("address: {why}")),
            Some(v) => Err(format!("address must be a string, not {}", shown(v))),
        },
        "tracing" => tracing(value),
        _ => Ok(()),
    }
}

/// The tracers' collector addresses (`ValidateZipkinCollector`, `ValidateDatadogCollector`,
/// `ValidateLightstepCollector`), where given.
fn tracing(value: &Value) -> Result<(), String> {
    for tracer in ["zipkin", "datadog", "lightstep"] {
        match value.get(tracer) {
            None | Some(Value::Null) => {}
            Some(Value::Object(t)) => match t.get("address") {
                None | Some(Value::Null) => {}
                Some(Value::String(a)) => proxy_address(&a.replacen("$(HOST_IP)", "127.0.0.1", 1))
                    .map_err(|why| format!("{tracer}.address: {why}"))?,
                Some(v) => return Err(format!("{tracer}.address must be a string, not {}", shown(v))),
            },
            Some(v) => return Err(format!("{tracer} must be a map, not {}", shown(v))),
        }
    }
    Ok(())
}

/// Istio's `ValidateProxyAddress`: `host:port`, the host a DNS name or an IP address, the port 1 to 65535.
fn proxy_address(address: &str) -> Result<(), String> {
    let (host, port) = split_host_port(address).map_err(|why| format!("{address:?}: {why}"))?;
    // Go's `strconv.Atoi` takes a leading sign; a negative port is out of range anyway.
    let digits = port.strip_prefix('+').unwrap_or(port);
    let port_ok = !digits.is_empty()
        && digits.bytes().all(|b| b.is_ascii_digit())
        && digits.parse::<u32>().is_ok_and(|p| (1..=65535).contains(&p));
    if !port_ok {
        return Err(format!("{address:?}: port {port:?} is not a port number (1 to 65535)"));
    }
    if fqdn(host) || host.parse::<std::net::IpAddr>().is_ok() {
        Ok(())
    } else {
        Err(format!(
            "{address:?}: {host:?} is not a valid hostname or an IP address"
        ))
    }
}

/// Go's `net.SplitHostPort`.
fn split_host_port(address: &str) -> Result<(&str, &str), &'static str> {
    if let Some(rest) = address.strip_prefix('[') {
        let (host, after) = rest.split_once(']').ok_or("missing ']' in address")?;
        let port = after.strip_prefix(':').ok_or("missing port in address")?;
        if host.contains('[') || host.contains(']') || port.contains('[') || port.contains(']') {
            return Err("unexpected '[' or ']' in address");
        }
        return Ok((host, port));
    }
    let (host, port) = address.rsplit_once(':').ok_or("missing port in address")?;
    if host.contains(':') {
        return Err("too many colons in address");
    }
    if address.contains('[') || address.contains(']') {
        return Err("unexpected '[' or ']' in address");
    }
    Ok((host, port))
}

/// Istio's `ValidateFQDN`: DNS-1123 labels, the last one not all digits (an empty last label, `a.b.`, is fine).
fn fqdn(name: &str) -> bool {
    let label_ok = |l: &str| {
        !l.is_empty()
            && l.len() <= 63
            && l.bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
            && !l.starts_with('-')
            && !l.ends_with('-')
    };
    if name.is_empty() || name.len() > 255 {
        return false;
    }
    let labels: Vec<&str> = name.split('.').collect();
    let last = labels.last().copied().unwrap_or_default();
    if last.parse::<i64>().is_ok() {
        return false;
    }
    labels
        .iter()
        .enumerate()
        .all(|(i, l)| label_ok(l) || (i > 0 && i + 1 == labels.len() && l.is_empty()))
}

/// Istio's `ValidateDrainDuration`: at least 1ms, in whole seconds.
fn drain_duration(text: &str) -> Result<(), String> {
    let nanos = go_duration(text).map_err(|why| format!("{text:?} is not a duration ({why})"))?;
    if nanos < 1_000_000 {
        return Err("invalid drain duration: duration must be greater than 1ms".into());
    }
    if nanos % 1_000_000_000 != 0 {
        return Err("drain time only supports durations to seconds precision".into());
    }
    Ok(())
}

/// Go's `time.ParseDuration`, in nanoseconds: `[-+]` then numbers with units (`ns`, `us`, `µs`, `ms`, `s`, `m`,
/// `h`), or `0`.
fn go_duration(text: &str) -> Result<i128, &'static str> {
    let (negative, mut rest) = match text.strip_prefix('-') {
        Some(r) => (true, r),
        None => (false, text.strip_prefix('+').unwrap_or(text)),
    };
    if rest == "0" {
        return Ok(0);
    }
    if rest.is_empty() {
        return Err("empty");
    }
    let mut total: i128 = 0;
    while !rest.is_empty() {
        let digits = rest
            .find(|c: char| !c.is_ascii_digit() && c != '.')
            .unwrap_or(rest.len());
        let (number, after) = rest.split_at(digits);
        let (whole, fraction) = number.split_once('.').unwrap_or((number, ""));
        if whole.is_empty() && fraction.is_empty() {
            return Err("expected a number");
        }
        if fraction.contains('.') {
            return Err("expected a number");
        }
        let unit_len = after
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(after.len());
        let (unit, next) = after.split_at(unit_len);
        let scale: i128 = match unit {
            "ns" => 1,
            "us" | "µs" | "μs" => 1_000,
            "ms" => 1_000_000,
            "s" => 1_000_000_000,
            "m" => 60_000_000_000,
            "h" => 3_600_000_000_000,
            "" => return Err("missing unit"),
            _ => return Err("unknown unit"),
        };
        let whole: i128 = if whole.is_empty() {
            0
        } else {
            whole.parse().map_err(|_| "out of range")?
        };
        let mut part = whole.checked_mul(scale).ok_or("out of range")?;
        let mut place = scale;
        for d in fraction.bytes().take(30) {
            place /= 10;
            part += i128::from(d - b'0') * place;
        }
        total = total.checked_add(part).ok_or("out of range")?;
        if total > i128::from(i64::MAX) {
            return Err("out of range");
        }
        rest = next;
    }
    Ok(if negative { -total } else { total })
}

/// Merges `overlay` over `base`: a field set in the overlay replaces the base's whole field.
pub fn merge(base: &Map<String, Value>, overlay: &Map<String, Value>) -> Map<String, Value> {
    let mut out = base.clone();
    for (k, v) in overlay {
        out.insert(k.clone(), v.clone());
    }
    out
}

/// The `PROXY_CONFIG` text: the fields of `effective` that differ from `defaults`, in protobuf order.
pub fn to_env_json(effective: &Map<String, Value>, defaults: &Map<String, Value>) -> String {
    let mut out = String::from("{");
    let mut first = true;
    let mut push = |out: &mut String, k: &str, v: &Value| {
        if !first {
            out.push(',');
        }
        first = false;
        // jsonpb writes names and values through json.Marshal: Go's escapes.
        out.push_str(&gojson::string(k));
        out.push(':');
        out.push_str(&gojson::to_string(v, gojson::Shape::Plain));
    };
    let differs = |k: &str, v: &Value| defaults.get(k) != Some(v);
    for key in FIELD_ORDER {
        if let Some(v) = effective.get(*key)
            && differs(key, v)
        {
            push(&mut out, key, v);
        }
    }
    for (k, v) in effective {
        if !FIELD_ORDER.contains(&k.as_str()) && differs(k, v) {
            push(&mut out, k, v);
        }
    }
    out.push('}');
    out
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn only_fields_differing_from_the_defaults_are_written_in_proto_order() {
        let defaults = defaults("istiod.istio-system.svc:15012");
        let annotation =
            parse_annotation("proxyMetadata: {FOO: bar}\nconcurrency: 0\ndiscoveryAddress: foo:123\n").unwrap();
        let effective = merge(&defaults, &annotation);
        assert_eq!(
            to_env_json(&effective, &defaults),
            r#"{"discoveryAddress":"foo:123","concurrency":0,"proxyMetadata":{"FOO":"bar"}}"#
        );
        assert_eq!(to_env_json(&defaults, &defaults), "{}");
    }

    #[test]
    fn strings_have_gos_escapes_as_jsonpb_writes_them() {
        // Istio's protoToJSON is the legacy jsonpb Marshaler, which writes strings and map keys with json.Marshal.
        let defaults = defaults("istiod.istio-system.svc:15012");
        let annotation = parse_annotation("proxyMetadata: {\"A&B\": \"http://x/?a=1&b=<2>\"}\n").unwrap();
        assert_eq!(
            to_env_json(&merge(&defaults, &annotation), &defaults),
            r#"{"proxyMetadata":{"A\u0026B":"http://x/?a=1\u0026b=\u003c2\u003e"}}"#
        );
    }

    fn refused(text: &str) -> String {
        let err = parse_annotation(text).expect_err(text).to_string();
        assert!(err.contains("proxy.istio.io/config"), "{err}");
        err
    }

    #[test]
    fn an_alias_bomb_is_refused_before_it_expands() {
        // Under `tracing` (a field passed through to the proxy): a 300-byte string, then five levels of ten
        // aliases each. About 600 bytes that expand to 10^5 copies, 30 MB, while staying under serde-saphyr's
        // default budget (250,000 nodes).
        let mut text = format!("tracing:\n  s: &s {}\n", "x".repeat(300));
        let mut prev = 's';
        for level in ['a', 'b', 'c', 'd', 'e'] {
            let aliases = vec![format!("*{prev}"); 10].join(",");
            text.push_str(&format!("  {level}: &{level} [{aliases}]\n"));
            prev = level;
        }
        assert!(text.len() < 700, "{}", text.len());
        let started = std::time::Instant::now();
        let err = refused(&text);
        assert!(err.contains("not valid YAML or JSON"), "{err}");
        assert!(
            started.elapsed() < std::time::Duration::from_secs(2),
            "{:?}",
            started.elapsed()
        );
        // A few aliases, as a hand-written configuration may use, are fine.
        let fine = parse_annotation("proxyMetadata: &m {A: b}\nruntimeValues: *m\n").unwrap();
        assert_eq!(fine["runtimeValues"], json!({"A": "b"}));
    }

    #[test]
    fn deep_or_long_annotations_are_refused() {
        refused(&format!("tracing: {}{}", "{a: ".repeat(100), "}".repeat(100)));
        let err = refused(&format!("meshId: {}", "x".repeat(MAX_ANNOTATION_BYTES)));
        assert!(err.contains("over the limit of 65536 bytes"), "{err}");
    }

    #[test]
    fn typed_fields_are_checked_as_istio_validates_them() {
        for (text, want) in [
            ("statusPort: abc", "statusPort: must be a port number"),
            (
                "statusPort: {a: 1}",
                "statusPort: must be a port number (1 to 65535), not an object",
            ),
            ("statusPort: 70000", "statusPort"),
            ("statusPort: 0", "statusPort"),
            ("statusPort: 15020.5", "statusPort"),
            ("proxyAdminPort: -1", "proxyAdminPort"),
            ("concurrency: -5", "concurrency: must be an integer from 0"),
            ("concurrency: two", "concurrency"),
            ("proxyMetadata: hello", "proxyMetadata: must be a map of strings"),
            ("proxyMetadata: {A: {b: 1}}", "proxyMetadata: values must be strings"),
            ("proxyMetadata: {A: 1}", "proxyMetadata: values must be strings"),
            ("runtimeValues: [a]", "runtimeValues"),
            ("drainDuration: soon", "drainDuration"),
            ("drainDuration: 45", "drainDuration"),
            (
                "drainDuration: 1500ms",
                "drainDuration: drain time only supports durations to seconds precision",
            ),
            ("drainDuration: 0s", "drainDuration"),
            ("terminationDrainDuration: 5 seconds", "terminationDrainDuration"),
            ("parentShutdownDuration: 1x", "parentShutdownDuration"),
            ("discoveryAddress: istiod", "discoveryAddress"),
            ("discoveryAddress: 'istiod:port'", "discoveryAddress"),
            ("discoveryAddress: 'istiod:0'", "discoveryAddress"),
            ("discoveryAddress: 'Not_A_Host:15012'", "discoveryAddress"),
            ("discoveryAddress: ''", "discoveryAddress: must not be empty"),
            ("statsdUdpAddress: 'a:b:c'", "statsdUdpAddress"),
            (
                "holdApplicationUntilProxyStarts: maybe",
                "holdApplicationUntilProxyStarts: must be true or false",
            ),
            ("holdApplicationUntilProxyStarts: 1", "holdApplicationUntilProxyStarts"),
            ("tracing: zipkin", "tracing: must be a map"),
            ("tracing: {zipkin: {address: nowhere}}", "tracing: zipkin.address"),
            ("controlPlaneAuthPolicy: INHERIT", "controlPlaneAuthPolicy"),
            ("interceptionMode: MAGIC", "interceptionMode"),
            ("extraStatTags: a", "extraStatTags"),
            ("meshId: 1", "meshId: must be a string"),
            ("configPath: ''", "configPath"),
            ("image: distroless", "image"),
        ] {
            let err = refused(text);
            assert!(err.contains(want), "{text}: {err}");
        }
        for text in [
            "statusPort: 15021\nproxyAdminPort: 15000\nconcurrency: 0",
            "drainDuration: 1m\nterminationDrainDuration: 1.5s\nparentShutdownDuration: 1h2m3s",
            "discoveryAddress: 'istiod.istio-system.svc:15012'",
            "discoveryAddress: '10.0.0.1:15012'\nstatsdUdpAddress: '[fd00::1]:8125'",
            "tracing: {zipkin: {address: '$(HOST_IP):9411'}}",
            "tracing: {}",
            "holdApplicationUntilProxyStarts: false\nproxyMetadata: {}",
            "controlPlaneAuthPolicy: MUTUAL_TLS\ninterceptionMode: TPROXY\ntracingServiceName: CANONICAL_NAME_ONLY",
            "extraStatTags: [a, b]\nimage: {imageType: distroless}",
            "statusPort: null",
            "",
        ] {
            assert!(parse_annotation(text).is_ok(), "{text}: {:?}", parse_annotation(text));
        }
        assert!(
            parse_annotation("statusPort: ~").unwrap().is_empty(),
            "a null field is left unset"
        );
    }

    #[test]
    fn unknown_fields_are_refused_with_the_annotation_name() {
        let err = parse_annotation("holdApplication: true").unwrap_err();
        assert!(err.to_string().contains("proxy.istio.io/config"), "{err}");
    }
}
