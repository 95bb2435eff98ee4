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

/// Parses the `proxy.istio.io/config` annotation (YAML or JSON) into ProxyConfig fields.
pub fn parse_annotation(text: &str) -> Result<Map<String, Value>, InjectError> {
    let err = |message: String| InjectError::InvalidAnnotation {
        annotation: ann::PROXY_CONFIG.to_owned(),
        message,
    };
    let value: Value = serde_saphyr::from_str(text).map_err(|e| err(format!("not valid YAML or JSON: {e}")))?;
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
    fn unknown_fields_are_refused_with_the_annotation_name() {
        let err = parse_annotation("holdApplication: true").unwrap_err();
        assert!(err.to_string().contains("proxy.istio.io/config"), "{err}");
    }
}
