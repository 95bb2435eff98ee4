//! The Prometheus addon's scrape configuration against the pods of the mesh it runs in: the targets Prometheus
//! derives from Kubernetes service discovery, computed here with Prometheus' relabelling rules, for istiod, an
//! ingress gateway, sidecars injected by mizzen (with the application's own metrics merged) and pods it must leave
//! alone.

use std::collections::BTreeMap;

use mizzen::MeshInstall;
use mizzen::inject::{InjectionConfig, Injector};
use mizzen::render::{RenderOptions, render};
use regex::Regex;
use serde_json::{Value, json};

type Labels = BTreeMap<String, String>;

const SAMPLE: &str = include_str!("../config/samples/meshinstall-addons.yaml");

fn sample() -> MeshInstall {
    serde_saphyr::from_str(SAMPLE).expect("the addons sample parses")
}

fn find<'a>(objects: &'a [Value], kind: &str, name: &str) -> &'a Value {
    objects
        .iter()
        .find(|o| o["kind"] == kind && o["metadata"]["name"] == name)
        .unwrap_or_else(|| panic!("{kind}/{name} not rendered"))
}

/// The `kubernetes-pods` job of the rendered Prometheus configuration.
fn pods_job(objects: &[Value]) -> Value {
    let text = find(objects, "ConfigMap", "prometheus")["data"]["prometheus.yml"]
        .as_str()
        .expect("prometheus.yml");
    let config = mizzen::yaml::parse_documents(text)
        .expect("prometheus.yml is YAML")
        .remove(0);
    config["scrape_configs"]
        .as_array()
        .expect("scrape_configs")
        .iter()
        .find(|j| j["job_name"] == "kubernetes-pods")
        .expect("a kubernetes-pods job")
        .clone()
}

/// Prometheus' label-name sanitising (`[^a-zA-Z0-9_]` → `_`), as its Kubernetes discovery applies it.
fn sanitize(name: &str) -> String {
    name.chars()
        .map(|c| if c.is_ascii_alphanumeric() || c == '_' { c } else { '_' })
        .collect()
}

/// The labels Prometheus' Kubernetes service discovery (role `pod`) gives the target of a pod's first container
/// port, before relabelling.
fn discovered(job: &str, namespace: &str, name: &str, ip: &str, phase: &str, template: &Value) -> Labels {
    let mut l = Labels::new();
    let port = template["spec"]["containers"][0]["ports"][0]["containerPort"]
        .as_i64()
        .map(|p| {
            if ip.contains(':') {
                format!("[{ip}]:{p}")
            } else {
                format!("{ip}:{p}")
            }
        })
        .unwrap_or_else(|| ip.to_owned());
    l.insert("__address__".into(), port);
    l.insert("__scheme__".into(), "http".into());
    l.insert("__metrics_path__".into(), "/metrics".into());
    l.insert("job".into(), job.into());
    l.insert("__meta_kubernetes_namespace".into(), namespace.into());
    l.insert("__meta_kubernetes_pod_name".into(), name.into());
    l.insert("__meta_kubernetes_pod_ip".into(), ip.into());
    l.insert("__meta_kubernetes_pod_phase".into(), phase.into());
    for (kind, field) in [("label", "labels"), ("annotation", "annotations")] {
        for (k, v) in template["metadata"][field].as_object().into_iter().flatten() {
            let value = v.as_str().expect("string label/annotation").to_owned();
            l.insert(format!("__meta_kubernetes_pod_{kind}_{}", sanitize(k)), value);
        }
    }
    l
}

/// Prometheus' relabelling (`replace`, `keep`, `drop`, `labelmap`); `None` when the target is dropped.
fn relabel(mut labels: Labels, rules: &Value) -> Option<Labels> {
    for rule in rules.as_array().expect("relabel_configs") {
        let action = rule["action"].as_str().unwrap_or("replace");
        let regex = Regex::new(&format!("^(?:{})$", rule["regex"].as_str().unwrap_or("(.*)"))).expect("regex");
        let replacement = rule["replacement"].as_str().unwrap_or("$1");
        let separator = rule["separator"].as_str().unwrap_or(";");
        let source = rule["source_labels"]
            .as_array()
            .map(|s| {
                s.iter()
                    .map(|n| labels.get(n.as_str().unwrap()).cloned().unwrap_or_default())
                    .collect::<Vec<_>>()
                    .join(separator)
            })
            .unwrap_or_default();
        match action {
            "keep" if !regex.is_match(&source) => return None,
            "drop" if regex.is_match(&source) => return None,
            "keep" | "drop" => {}
            "replace" => {
                if let Some(caps) = regex.captures(&source) {
                    let target = rule["target_label"].as_str().expect("target_label");
                    let mut value = String::new();
                    caps.expand(replacement, &mut value);
                    if value.is_empty() {
                        labels.remove(target);
                    } else {
                        labels.insert(target.to_owned(), value);
                    }
                }
            }
            "labelmap" => {
                let mapped: Vec<(String, String)> = labels
                    .iter()
                    .filter_map(|(k, v)| {
                        let caps = regex.captures(k)?;
                        let mut name = String::new();
                        caps.expand(replacement, &mut name);
                        Some((name, v.clone()))
                    })
                    .collect();
                labels.extend(mapped);
            }
            other => panic!("relabel action {other} is not modelled here"),
        }
    }
    // What Prometheus keeps of a target: no meta labels.
    labels.retain(|k, _| !k.starts_with("__meta_"));
    Some(labels)
}

/// The URL Prometheus scrapes for a pod, with the target's labels; `None` when the pod is not scraped.
fn target(
    objects: &[Value],
    namespace: &str,
    name: &str,
    ip: &str,
    phase: &str,
    template: &Value,
) -> Option<(String, Labels)> {
    let job = pods_job(objects);
    let labels = discovered(job["job_name"].as_str()?, namespace, name, ip, phase, template);
    let labels = relabel(labels, &job["relabel_configs"])?;
    let url = format!(
        "{}://{}{}",
        labels["__scheme__"], labels["__address__"], labels["__metrics_path__"]
    );
    Some((url, labels))
}

/// The pod template of a workload after mizzen's injection with the sample's configuration.
fn injected(workload: Value) -> Value {
    let config = Injector::compile(InjectionConfig::from_mesh_install(&sample().spec));
    let mut object = workload;
    let mut skipped = Vec::new();
    let changed = mizzen::kubeinject::inject_object(&config, &mut object, &mut skipped).expect("injects");
    assert!(changed && skipped.is_empty(), "not injected: {skipped:?}");
    object["spec"]["template"].clone()
}

fn app(annotations: Value) -> Value {
    json!({
        "apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "shop", "namespace": "default"},
        "spec": {"selector": {"matchLabels": {"app": "shop"}}, "template": {
            "metadata": {"labels": {"app": "shop", "version": "v1"}, "annotations": annotations},
            "spec": {"containers": [{"name": "shop", "image": "example.com/shop:1",
                                     "ports": [{"containerPort": 8080}, {"containerPort": 9100}]}]},
        }},
    })
}

#[test]
fn istiod_is_scraped_on_its_monitoring_port() {
    let objects = render(&sample(), &RenderOptions::default()).expect("renders");
    let istiod = &find(&objects, "Deployment", "istiod")["spec"]["template"];
    let (url, labels) =
        target(&objects, "istio-system", "istiod-6d5f", "10.0.0.10", "Running", istiod).expect("istiod is scraped");
    assert_eq!(url, "http://10.0.0.10:15014/metrics");
    assert_eq!(labels["app"], "istiod");
    assert_eq!(labels["namespace"], "istio-system");
    assert_eq!(labels["pod"], "istiod-6d5f");
}

#[test]
fn gateways_are_scraped_on_the_agents_merged_endpoint() {
    let objects = render(&sample(), &RenderOptions::default()).expect("renders");
    let gateway = &find(&objects, "Deployment", "istio-ingressgateway")["spec"]["template"];
    let (url, labels) = target(
        &objects,
        "istio-system",
        "istio-ingressgateway-1",
        "10.0.0.11",
        "Running",
        gateway,
    )
    .expect("the gateway is scraped");
    assert_eq!(url, "http://10.0.0.11:15020/stats/prometheus");
    assert_eq!(labels["istio"], "ingressgateway");
}

#[test]
fn sidecars_are_scraped_with_the_applications_own_metrics_merged() {
    let objects = render(&sample(), &RenderOptions::default()).expect("renders");
    // The application asks for its own metrics at :9100/custom: the injection points Prometheus at the agent,
    // which merges them with the proxy's.
    let template = injected(app(
        json!({"prometheus.io/scrape": "true", "prometheus.io/port": "9100",
                                        "prometheus.io/path": "/custom"}),
    ));
    let (url, labels) =
        target(&objects, "default", "shop-1", "10.0.0.12", "Running", &template).expect("the sidecar is scraped");
    assert_eq!(url, "http://10.0.0.12:15020/stats/prometheus");
    assert_eq!((labels["app"].as_str(), labels["version"].as_str()), ("shop", "v1"));
    let containers = template["spec"]["initContainers"]
        .as_array()
        .into_iter()
        .chain(template["spec"]["containers"].as_array())
        .flatten();
    let proxy = containers
        .into_iter()
        .find(|c| c["name"] == "istio-proxy")
        .expect("istio-proxy");
    let merged = proxy["env"]
        .as_array()
        .expect("env")
        .iter()
        .find(|e| e["name"] == "ISTIO_PROMETHEUS_ANNOTATIONS")
        .expect("the agent is told where the application's metrics are");
    let merged: Value = serde_json::from_str(merged["value"].as_str().expect("text")).expect("JSON");
    assert_eq!(
        (merged["port"].as_str(), merged["path"].as_str()),
        (Some("9100"), Some("/custom"))
    );
    // A pod without metrics of its own is scraped for the proxy's.
    let template = injected(app(json!({})));
    let (url, _) = target(&objects, "default", "shop-2", "10.0.0.13", "Running", &template).expect("scraped");
    assert_eq!(url, "http://10.0.0.13:15020/stats/prometheus");
    // IPv6 pods get a bracketed address.
    let (url, _) = target(&objects, "default", "shop-3", "fd00::13", "Running", &template).expect("scraped");
    assert_eq!(url, "http://[fd00::13]:15020/stats/prometheus");
}

#[test]
fn pods_that_do_not_ask_and_pods_not_running_are_left_alone() {
    let objects = render(&sample(), &RenderOptions::default()).expect("renders");
    let plain = app(json!({}))["spec"]["template"].clone();
    assert!(target(&objects, "default", "plain", "10.0.0.20", "Running", &plain).is_none());
    let opted_out = app(json!({"prometheus.io/scrape": "false"}))["spec"]["template"].clone();
    assert!(target(&objects, "default", "opted-out", "10.0.0.21", "Running", &opted_out).is_none());
    let istiod = &find(&objects, "Deployment", "istiod")["spec"]["template"];
    assert!(target(&objects, "istio-system", "istiod-old", "10.0.0.22", "Succeeded", istiod).is_none());
    // The addons do not scrape one another through this job (Prometheus scrapes itself in its own job).
    for addon in ["prometheus", "grafana", "jaeger"] {
        let template = &find(&objects, "Deployment", addon)["spec"]["template"];
        assert!(
            target(&objects, "istio-system", addon, "10.0.0.30", "Running", template).is_none(),
            "{addon}"
        );
    }
}

#[test]
fn the_relabelling_model_follows_prometheus() {
    // keep/drop/replace/labelmap as Prometheus documents them, on a hand-made target.
    let labels: Labels = [
        ("__address__", "a:1"),
        ("__meta_x", "yes"),
        ("__meta_kubernetes_pod_label_tier", "web"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v.to_owned()))
    .collect();
    let rules = json!([
        {"action": "keep", "source_labels": ["__meta_x"], "regex": "yes"},
        {"source_labels": ["__address__"], "regex": "(.*):1", "replacement": "$1:2", "target_label": "__address__"},
        {"action": "labelmap", "regex": "__meta_kubernetes_pod_label_(.+)"},
        {"source_labels": ["__meta_missing"], "target_label": "gone"},
    ]);
    let out = relabel(labels.clone(), &rules).expect("kept");
    assert_eq!(out["__address__"], "a:2");
    assert_eq!(out["tier"], "web");
    assert!(!out.contains_key("gone") && !out.contains_key("__meta_x"));
    assert!(
        relabel(
            labels,
            &json!([{"action": "drop", "source_labels": ["__meta_x"], "regex": "y.*"}])
        )
        .is_none()
    );
}
