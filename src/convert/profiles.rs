//! istioctl's installation profiles, as IstioOperator `spec` trees: what each one installs and the chart defaults
//! the conversion needs to know (every profile is applied over `default`, as istioctl does). Only settings that
//! change the MeshInstall are here; proxy defaults come from [`crate::inject::InjectionConfig::default`].

use serde_json::{Value, json};

use super::ConvertError;
use super::tree::merge;

/// Profiles `mizzenctl convert` knows.
pub const PROFILES: &[&str] = &["default", "demo", "minimal", "empty"];

/// Ports of the ingress gateway Service in Istio's gateway chart.
fn ingress_ports() -> Value {
    json!([
        {"name": "status-port", "port": 15021, "targetPort": 15021, "protocol": "TCP"},
        {"name": "http2", "port": 80, "targetPort": 8080, "protocol": "TCP"},
        {"name": "https", "port": 443, "targetPort": 8443, "protocol": "TCP"},
    ])
}

/// A gateway's chart defaults: autoscaled 1 to 5 at 80% CPU, 100m/128Mi requested, 2 CPU/1Gi limit.
fn gateway(service_type: &str, ports: Value) -> Value {
    json!({
        "type": service_type,
        "ports": ports,
        "autoscaleEnabled": true,
        "autoscaleMin": 1,
        "autoscaleMax": 5,
        "cpu": {"targetAverageUtilization": 80},
        "resources": {"requests": {"cpu": "100m", "memory": "128Mi"}, "limits": {"cpu": "2000m", "memory": "1024Mi"}},
    })
}

/// The `default` profile over the charts' defaults: istiod (autoscaled 1 to 5, 500m/2Gi requested) and an ingress
/// gateway on a LoadBalancer Service; the egress gateway is listed but off.
fn default_profile() -> Value {
    json!({
        "components": {
            "base": {"enabled": true},
            "pilot": {"enabled": true},
            "ingressGateways": [{"name": "istio-ingressgateway", "enabled": true}],
            "egressGateways": [{"name": "istio-egressgateway", "enabled": false}],
            "cni": {"enabled": false},
        },
        "values": {
            "pilot": {
                "autoscaleEnabled": true,
                "autoscaleMin": 1,
                "autoscaleMax": 5,
                "replicaCount": 1,
                "cpu": {"targetAverageUtilization": 80},
                "resources": {"requests": {"cpu": "500m", "memory": "2048Mi"}},
                "traceSampling": 1.0,
            },
            "gateways": {
                "istio-ingressgateway": gateway("LoadBalancer", ingress_ports()),
                "istio-egressgateway": gateway("ClusterIP", json!([
                    {"name": "http2", "port": 80, "targetPort": 8080, "protocol": "TCP"},
                    {"name": "https", "port": 443, "targetPort": 8443, "protocol": "TCP"},
                ])),
            },
        },
    })
}

/// What `demo` changes: both gateways, no autoscaling, small requests, every trace sampled, access logs on stdout,
/// telemetry providers, and two more ingress ports (tcp 31400, tls 15443). (It also lowers the requests of Istio
/// CNI, ztunnel and waypoints, none of which a sidecar install with demo runs; they are left out.)
fn demo_overlay() -> Value {
    let small = json!({"requests": {"cpu": "10m", "memory": "40Mi"}});
    let mut ports = ingress_ports();
    if let Value::Array(list) = &mut ports {
        list.push(json!({"name": "tcp", "port": 31400, "targetPort": 31400}));
        list.push(json!({"name": "tls", "port": 15443, "targetPort": 15443}));
    }
    json!({
        "components": {
            "ingressGateways": [{"name": "istio-ingressgateway", "enabled": true}],
            "egressGateways": [{"name": "istio-egressgateway", "enabled": true}],
        },
        "values": {
            "meshConfig": {
                "accessLogFile": "/dev/stdout",
                "extensionProviders": [
                    {"name": "otel", "envoyOtelAls": {"service": "opentelemetry-collector.observability.svc.cluster.local", "port": 4317}},
                    {"name": "skywalking", "skywalking": {"service": "tracing.istio-system.svc.cluster.local", "port": 11800}},
                    {"name": "otel-tracing", "opentelemetry": {"service": "opentelemetry-collector.observability.svc.cluster.local", "port": 4317}},
                    {"name": "jaeger", "opentelemetry": {"service": "jaeger-collector.istio-system.svc.cluster.local", "port": 4317}},
                ],
            },
            "global": {"proxy": {"resources": small}},
            "pilot": {
                "autoscaleEnabled": false,
                "traceSampling": 100,
                "resources": {"requests": {"cpu": "10m", "memory": "100Mi"}},
            },
            "gateways": {
                "istio-egressgateway": {"autoscaleEnabled": false, "resources": small},
                "istio-ingressgateway": {"autoscaleEnabled": false, "ports": ports, "resources": small},
            },
        },
    })
}

/// The IstioOperator `spec` a profile stands for.
pub fn profile(name: &str) -> Result<Value, ConvertError> {
    let mut base = default_profile();
    let overlay = match name {
        "" | "default" => return Ok(base),
        "demo" => demo_overlay(),
        "minimal" => json!({"components": {"ingressGateways": [{"name": "istio-ingressgateway", "enabled": false}]}}),
        "empty" => json!({"components": {
            "base": {"enabled": false},
            "pilot": {"enabled": false},
            "ingressGateways": [{"name": "istio-ingressgateway", "enabled": false}],
        }}),
        other => {
            return Err(ConvertError::UnknownProfile {
                profile: other.to_owned(),
            });
        }
    };
    merge(&mut base, overlay);
    Ok(base)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn profiles_apply_over_default() {
        let demo = profile("demo").unwrap();
        assert_eq!(demo["values"]["pilot"]["autoscaleMax"], 5, "kept from default");
        assert_eq!(demo["values"]["pilot"]["autoscaleEnabled"], false);
        assert_eq!(
            demo["values"]["gateways"]["istio-ingressgateway"]["resources"]["limits"]["cpu"],
            "2000m"
        );
        assert_eq!(
            demo["values"]["gateways"]["istio-ingressgateway"]["ports"]
                .as_array()
                .map(Vec::len),
            Some(5)
        );
        assert_eq!(
            profile("minimal").unwrap()["components"]["ingressGateways"][0]["enabled"],
            false
        );
        assert_eq!(profile("empty").unwrap()["components"]["pilot"]["enabled"], false);
    }

    #[test]
    fn unknown_profiles_are_refused_by_name() {
        let err = profile("ambient").unwrap_err().to_string();
        assert!(
            err.contains("\"ambient\"") && err.contains("default, demo, minimal, empty"),
            "{err}"
        );
    }
}
