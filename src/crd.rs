//! The MeshInstall CustomResourceDefinition, generated from the Rust types in [`crate::api`].

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::CustomResourceExt;

use crate::api::MeshInstall;

/// Path of the generated CRD under `config/`.
pub const CRD_PATH: &str = "crd/mizzen.io_meshinstalls.yaml";

/// The MeshInstall CRD as the API server receives it.
pub fn meshinstall_crd() -> CustomResourceDefinition {
    MeshInstall::crd()
}

#[cfg(test)]
mod tests {
    use kube::core::cel::{Validator, compile_schema};
    use serde_json::{Value, json};

    use super::*;
    use crate::api::{MeshInstallSpec, ServiceType};

    const SAMPLE: &str = include_str!("../config/samples/meshinstall.yaml");

    fn schema() -> Value {
        let crd = meshinstall_crd();
        let version = &crd.spec.versions[0];
        serde_json::to_value(version.schema.as_ref().unwrap().open_api_v3_schema.as_ref().unwrap()).unwrap()
    }

    fn sample() -> Value {
        crate::yaml::parse_documents(SAMPLE).unwrap().remove(0)
    }

    /// Validates `object` (optionally as an update of `old`) and returns the failure messages.
    fn cel_errors(object: &Value, old: Option<&Value>) -> Vec<String> {
        match Validator::new().validate(&schema(), object, old) {
            Ok(()) => Vec::new(),
            Err(errors) => errors.iter().map(|e| e.to_string()).collect(),
        }
    }

    /// Sets the field at `pointer`, adding it to its parent object when absent.
    fn with(mut object: Value, pointer: &str, value: Value) -> Value {
        let (parent, key) = pointer.rsplit_once('/').unwrap();
        let parent = object
            .pointer_mut(parent)
            .unwrap_or_else(|| panic!("no {parent} in sample"));
        match parent {
            Value::Array(items) => items[key.parse::<usize>().unwrap()] = value,
            Value::Object(map) => {
                map.insert(key.to_owned(), value);
            }
            other => panic!("{pointer}: parent is {other}"),
        }
        object
    }

    fn all_rules(schema: &Value, out: &mut Vec<String>) {
        match schema {
            Value::Object(map) => {
                if let Some(Value::Array(rules)) = map.get("x-kubernetes-validations") {
                    out.extend(rules.iter().map(|r| r["rule"].as_str().unwrap().to_owned()));
                }
                map.values().for_each(|v| all_rules(v, out));
            }
            Value::Array(items) => items.iter().for_each(|v| all_rules(v, out)),
            _ => {}
        }
    }

    #[test]
    fn crd_is_cluster_scoped_with_short_name_and_category() {
        let crd = meshinstall_crd();
        assert_eq!(crd.metadata.name.as_deref(), Some("meshinstalls.mizzen.io"));
        assert_eq!(crd.spec.scope, "Cluster");
        assert_eq!(crd.spec.names.short_names, Some(vec!["mi".to_owned()]));
        assert_eq!(crd.spec.names.categories, Some(vec!["mizzen".to_owned()]));
        assert_eq!(crd.spec.versions.len(), 1);
        assert_eq!(crd.spec.versions[0].name, "v1alpha1");
        assert!(crd.spec.versions[0].subresources.as_ref().unwrap().status.is_some());
    }

    #[test]
    fn printer_columns_are_revision_version_ready_proxies_status_age() {
        let crd = meshinstall_crd();
        let columns = crd.spec.versions[0].additional_printer_columns.clone().unwrap();
        let got: Vec<(&str, &str)> = columns
            .iter()
            .map(|c| (c.name.as_str(), c.json_path.as_str()))
            .collect();
        assert_eq!(
            got,
            [
                ("Revision", ".spec.revision"),
                ("Version", ".spec.version"),
                ("Ready", ".status.ready"),
                ("Proxies", ".status.proxies"),
                ("Status", ".status.state"),
                ("Age", ".metadata.creationTimestamp"),
            ]
        );
    }

    #[test]
    fn cel_rules_are_present_and_compile() {
        let mut rules = Vec::new();
        all_rules(&schema(), &mut rules);
        for wanted in [
            "self >= 30000 && self <= 32767",
            "self >= 1 && self <= 65535",
            "self.all(g, self.exists_one(h, h.name == g.name))",
            "self == '' || self.matches('^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$')",
            "self.min <= self.max",
            "self == oldSelf",
        ] {
            assert!(
                rules.iter().any(|r| r == wanted),
                "rule {wanted:?} missing from {rules:#?}"
            );
        }
        let compiled = compile_schema(&schema());
        assert!(!compiled.has_errors(), "{:?}", compiled.compilation_errors());
    }

    #[test]
    fn enums_are_refused_by_the_schema() {
        let schema = schema();
        let spec = &schema["properties"]["spec"]["properties"];
        assert_eq!(
            spec["injection"]["properties"]["policy"]["enum"],
            json!(["enabled", "disabled"])
        );
        assert_eq!(
            spec["injection"]["properties"]["failurePolicy"]["enum"],
            json!(["Fail", "Ignore"])
        );
        assert_eq!(
            spec["proxy"]["properties"]["nativeSidecar"]["enum"],
            json!(["auto", "true", "false"])
        );
        assert_eq!(
            spec["meshConfig"]["properties"]["accessLogEncoding"]["enum"],
            json!(["TEXT", "JSON"])
        );
        assert_eq!(spec["gateways"]["x-kubernetes-list-map-keys"], json!(["name"]));
        assert_eq!(spec["meshConfig"]["x-kubernetes-preserve-unknown-fields"], json!(true));
    }

    #[test]
    fn sample_round_trips_and_keeps_its_settings() {
        let parsed: crate::MeshInstall = serde_json::from_value(sample()).unwrap();
        let spec: &MeshInstallSpec = &parsed.spec;
        assert!(spec.proxy.hold_application_until_proxy_starts);
        assert_eq!(spec.mesh_config.access_log_file.as_deref(), Some("/dev/stdout"));
        assert_eq!(spec.gateways[0].service.type_, Some(ServiceType::NodePort));
        let http2 = spec.gateways[0]
            .service
            .ports
            .iter()
            .find(|p| p.name == "http2")
            .unwrap();
        assert_eq!(
            (http2.port, http2.target_port, http2.node_port),
            (80, Some(8080), Some(30080))
        );

        let again: crate::MeshInstall = serde_json::from_value(serde_json::to_value(&parsed).unwrap()).unwrap();
        assert_eq!(again, parsed);
    }

    #[test]
    fn unknown_mesh_config_fields_are_kept() {
        let object = with(
            sample(),
            "/spec/meshConfig",
            json!({"accessLogFile": "/dev/stdout", "outboundTrafficPolicy": {"mode": "REGISTRY_ONLY"}}),
        );
        let parsed: crate::MeshInstall = serde_json::from_value(object).unwrap();
        let back = serde_json::to_value(&parsed).unwrap();
        assert_eq!(
            back["spec"]["meshConfig"]["outboundTrafficPolicy"]["mode"],
            "REGISTRY_ONLY"
        );
    }

    #[test]
    fn sample_passes_every_cel_rule() {
        assert_eq!(cel_errors(&sample(), None), Vec::<String>::new());
    }

    #[test]
    fn node_port_outside_the_node_port_range_is_refused() {
        let bad = with(sample(), "/spec/gateways/0/service/ports/1/nodePort", json!(80));
        let errors = cel_errors(&bad, None);
        assert!(
            errors
                .iter()
                .any(|e| e.contains("nodePort must be between 30000 and 32767")),
            "{errors:?}"
        );
    }

    #[test]
    fn port_outside_1_to_65535_is_refused() {
        let bad = with(sample(), "/spec/gateways/0/service/ports/1/port", json!(70000));
        let errors = cel_errors(&bad, None);
        assert!(
            errors.iter().any(|e| e.contains("port must be between 1 and 65535")),
            "{errors:?}"
        );
    }

    #[test]
    fn duplicate_gateway_names_are_refused() {
        let mut bad = sample();
        let gateway = bad["spec"]["gateways"][0].clone();
        bad["spec"]["gateways"].as_array_mut().unwrap().push(gateway);
        let errors = cel_errors(&bad, None);
        assert!(
            errors.iter().any(|e| e.contains("spec.gateways names must be unique")),
            "{errors:?}"
        );
    }

    #[test]
    fn revision_must_be_a_dns_label_and_not_default() {
        let errors = cel_errors(&with(sample(), "/spec/revision", json!("Canary_1")), None);
        assert!(
            errors
                .iter()
                .any(|e| e.contains("spec.revision must be empty or a DNS label")),
            "{errors:?}"
        );
        let errors = cel_errors(&with(sample(), "/spec/revision", json!("default")), None);
        assert!(errors.iter().any(|e| e.contains("'default' is reserved")), "{errors:?}");
        assert!(cel_errors(&with(sample(), "/spec/revision", json!("canary")), None).is_empty());
    }

    #[test]
    fn revision_tags_are_unique_dns_labels_other_than_the_own_revision() {
        // Uniqueness and the label format are schema, not CEL (the API server's CEL cost budget is tight).
        let tags = &schema()["properties"]["spec"]["properties"]["revisionTags"];
        assert_eq!(tags["x-kubernetes-list-type"], "set");
        assert_eq!(tags["maxItems"], 16);
        assert_eq!(tags["items"]["maxLength"], 63);
        assert_eq!(tags["items"]["pattern"], "^[a-z0-9]([-a-z0-9]*[a-z0-9])?$");
        let ok = with(sample(), "/spec/revisionTags", json!(["prod", "default"]));
        assert_eq!(cel_errors(&ok, None), Vec::<String>::new());
        let own = with(
            with(sample(), "/spec/revision", json!("canary")),
            "/spec/revisionTags",
            json!(["canary"]),
        );
        let errors = cel_errors(&own, None);
        assert!(
            errors
                .iter()
                .any(|e| e.contains("must not list the install's own revision")),
            "{errors:?}"
        );
    }

    #[test]
    fn data_plane_rollout_settings_are_bounded() {
        let ok = with(
            sample(),
            "/spec/dataPlane",
            json!({"rollout": "Automatic", "maxConcurrent": 2}),
        );
        assert_eq!(cel_errors(&ok, None), Vec::<String>::new());
        let errors = cel_errors(&with(sample(), "/spec/dataPlane", json!({"maxConcurrent": 0})), None);
        assert!(
            errors
                .iter()
                .any(|e| e.contains("maxConcurrent must be between 1 and 100")),
            "{errors:?}"
        );
        let errors = cel_errors(
            &with(sample(), "/spec/dataPlane", json!({"progressDeadlineSeconds": 5})),
            None,
        );
        assert!(
            errors
                .iter()
                .any(|e| e.contains("progressDeadlineSeconds must be between 30 and 86400")),
            "{errors:?}"
        );
    }

    #[test]
    fn revision_and_namespace_are_immutable() {
        let old = with(sample(), "/spec/revision", json!("canary"));
        let errors = cel_errors(&with(old.clone(), "/spec/revision", json!("stable")), Some(&old));
        assert!(
            errors.iter().any(|e| e.contains("spec.revision is immutable")),
            "{errors:?}"
        );
        let errors = cel_errors(&with(sample(), "/spec/namespace", json!("other")), Some(&sample()));
        assert!(
            errors.iter().any(|e| e.contains("spec.namespace is immutable")),
            "{errors:?}"
        );
    }

    #[test]
    fn node_port_needs_a_node_port_service() {
        let bad = with(sample(), "/spec/gateways/0/service/type", json!("ClusterIP"));
        let errors = cel_errors(&bad, None);
        assert!(
            errors
                .iter()
                .any(|e| e.contains("nodePort needs service.type NodePort")),
            "{errors:?}"
        );
    }

    #[test]
    fn an_egress_gateway_takes_a_node_port_only_with_a_service_type_that_has_one() {
        let egress = |service: Value| {
            let spec = with(
                sample(),
                "/spec/gateways",
                json!([{"name": "istio-egressgateway", "kind": "egress", "service": service}]),
            );
            cel_errors(&spec, None)
        };
        let ports = json!([{"name": "http2", "port": 80, "nodePort": 30080}]);
        // ClusterIP by default for an egress gateway: no node port.
        let errors = egress(json!({"ports": ports}));
        assert!(
            errors
                .iter()
                .any(|e| e.contains("egress gateway's Service is ClusterIP")),
            "{errors:?}"
        );
        assert_eq!(
            egress(json!({"type": "NodePort", "ports": ports})),
            Vec::<String>::new()
        );
        assert_eq!(
            egress(json!({"ports": [{"name": "http2", "port": 80}]})),
            Vec::<String>::new()
        );
        // An ingress gateway is LoadBalancer by default: a node port is fine.
        let ingress = with(
            sample(),
            "/spec/gateways",
            json!([{"name": "istio-ingressgateway", "service": {"ports": ports}}]),
        );
        assert_eq!(cel_errors(&ingress, None), Vec::<String>::new());
        // Kubernetes refuses an external traffic policy on a ClusterIP Service.
        let errors = egress(json!({"externalTrafficPolicy": "Local"}));
        assert!(
            errors
                .iter()
                .any(|e| e.contains("externalTrafficPolicy needs service.type")),
            "{errors:?}"
        );
        assert_eq!(
            egress(json!({"type": "LoadBalancer", "externalTrafficPolicy": "Local"})),
            Vec::<String>::new()
        );
    }

    #[test]
    fn a_gateway_service_without_ports_passes() {
        // The rules must not read fields a user may leave out (the API server found this one).
        let minimal = with(
            sample(),
            "/spec/gateways",
            json!([{"name": "istio-ingressgateway", "kind": "ingress", "service": {"type": "ClusterIP"}},
                   {"name": "istio-egressgateway", "kind": "egress"}]),
        );
        assert_eq!(cel_errors(&minimal, None), Vec::<String>::new());
    }

    #[test]
    fn autoscale_min_above_max_is_refused() {
        let bad = with(
            sample(),
            "/spec/controlPlane",
            json!({"autoscale": {"min": 4, "max": 2}}),
        );
        let errors = cel_errors(&bad, None);
        assert!(
            errors
                .iter()
                .any(|e| e.contains("autoscale.min must not exceed autoscale.max")),
            "{errors:?}"
        );
    }

    #[test]
    fn webhook_timeout_is_bounded() {
        let bad = with(sample(), "/spec/injection/timeoutSeconds", json!(45));
        let errors = cel_errors(&bad, None);
        assert!(
            errors
                .iter()
                .any(|e| e.contains("timeoutSeconds must be between 1 and 30")),
            "{errors:?}"
        );
    }

    #[test]
    fn addons_need_only_enabled_and_sampling_is_a_percentage() {
        // The rules must not read fields a user may leave out.
        let minimal = with(
            sample(),
            "/spec/addons",
            json!({"prometheus": {"enabled": true}, "grafana": {}, "jaeger": {"enabled": true}}),
        );
        assert_eq!(cel_errors(&minimal, None), Vec::<String>::new());
        let full = with(
            minimal.clone(),
            "/spec/addons/jaeger",
            json!({"enabled": true, "sampling": 100, "image": "example.com/jaeger:2"}),
        );
        assert_eq!(cel_errors(&full, None), Vec::<String>::new());
        let bad = with(
            minimal.clone(),
            "/spec/addons/jaeger",
            json!({"enabled": true, "sampling": 100.5}),
        );
        let errors = cel_errors(&bad, None);
        assert!(
            errors
                .iter()
                .any(|e| e.contains("spec.addons.jaeger.sampling must be between 0 and 100")),
            "{errors:?}"
        );
        let bad = with(minimal, "/spec/addons/grafana", json!({"enabled": true, "image": ""}));
        let errors = cel_errors(&bad, None);
        assert!(
            errors.iter().any(|e| e.contains("an addon's image must not be empty")),
            "{errors:?}"
        );
    }

    #[test]
    fn empty_spec_gets_the_documented_defaults() {
        let parsed: crate::MeshInstall = serde_json::from_value(
            json!({"apiVersion": "mizzen.io/v1alpha1", "kind": "MeshInstall", "metadata": {"name": "x"}, "spec": {}}),
        )
        .unwrap();
        assert_eq!(parsed.spec.version, crate::api::DEFAULT_ISTIO_VERSION);
        assert_eq!(parsed.spec.hub, "docker.io/istio");
        assert_eq!(parsed.spec.namespace, "istio-system");
        assert_eq!(parsed.spec.revision_label(), "default");
        assert_eq!(parsed.spec.injection.timeout_seconds, 10);
        assert_eq!(parsed.spec.proxy.status_port, 15020);
        assert_eq!(parsed.spec.proxy.resources.limits["cpu"].0, "2");
        assert_eq!(parsed.spec.data_plane.rollout, crate::api::RolloutMode::Manual);
        assert_eq!(parsed.spec.data_plane.max_concurrent, 1);
        assert!(parsed.spec.revision_tags.is_empty());
    }
}
