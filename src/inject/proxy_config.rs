//! The effective proxy configuration of a pod (Istio `ProxyConfig`): Istio's defaults, the mesh's `defaultConfig`
//! and the pod's `proxy.istio.io/config` annotation, merged field by field; and its `PROXY_CONFIG` text.

use serde_json::{Map, Value, json};

use super::InjectError;
use super::annotations as ann;

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

/// Parses the `proxy.istio.io/config` annotation (YAML or JSON) into ProxyConfig fields.
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
        Value::Object(map) => {
            for key in map.keys() {
                if !FIELD_ORDER.contains(&key.as_str()) {
                    return Err(err(format!("unknown ProxyConfig field {key:?}")));
                }
            }
            if let Some(v) = map.get("holdApplicationUntilProxyStarts")
                && !v.is_boolean()
            {
                return Err(err("holdApplicationUntilProxyStarts must be true or false".into()));
            }
            if let Some(Value::Object(md)) = map.get("proxyMetadata")
                && md.values().any(|v| !v.is_string())
            {
                return Err(err("proxyMetadata values must be strings".into()));
            }
            Ok(map)
        }
        Value::Null => Ok(Map::new()),
        _ => Err(err("expected a map of ProxyConfig fields".into())),
    }
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
        out.push_str(&Value::String(k.to_owned()).to_string());
        out.push(':');
        out.push_str(&v.to_string());
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
    fn unknown_fields_are_refused_with_the_annotation_name() {
        let err = parse_annotation("holdApplication: true").unwrap_err();
        assert!(err.to_string().contains("proxy.istio.io/config"), "{err}");
    }
}
