//! Go templates (`spec.injection.templates`): template text -> parse -> execute over the data the injector gives a
//! user template, then, when it renders, a whole injection of a pod selecting it (the output read as a pod fragment
//! and merged over the sidecar). Anything may be refused; nothing may panic, and the output bound holds.
#![no_main]

use std::cell::RefCell;
use std::sync::LazyLock;

use libfuzzer_sys::fuzz_target;
use mizzen::inject::gotemplate::{MAX_OUTPUT, Template};
use mizzen::inject::{InjectionConfig, Injector, Submitted, inject_pod};
use serde_json::{Value, json};

/// A representative pod: a Deployment's, two containers and an init container with ports, probes, env, resources
/// and mounts, and a few annotations and labels. It selects the templates `sidecar` and `<name>`.
fn pod(template: &str) -> Value {
    json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {
            "name": "web-7d4b9-x2x9q", "namespace": "shop", "generateName": "web-7d4b9-",
            "labels": {"app": "web", "version": "v1", "pod-template-hash": "7d4b9"},
            "annotations": {
                "inject.istio.io/templates": format!("sidecar,{template}"),
                "sidecar.istio.io/proxyCPU": "200m",
                "proxy.istio.io/config": "holdApplicationUntilProxyStarts: true\n",
                "prometheus.io/scrape": "true", "prometheus.io/port": "9090",
                "team": "a",
            },
            "ownerReferences": [{"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "web-7d4b9",
                                 "uid": "0f0e", "controller": true}],
        },
        "spec": {
            "serviceAccountName": "web",
            "securityContext": {"runAsUser": 1000, "fsGroup": 2000},
            "initContainers": [{"name": "migrate", "image": "busybox", "command": ["sh", "-c", "true"]}],
            "containers": [
                {"name": "web", "image": "nginx:1.27", "ports": [{"containerPort": 80, "name": "http"}],
                 "env": [{"name": "MODE", "value": "prod"}, {"name": "POD_IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}}],
                 "resources": {"requests": {"cpu": "100m", "memory": "64Mi"}},
                 "readinessProbe": {"httpGet": {"port": "http", "path": "/ready"}, "periodSeconds": 5},
                 "livenessProbe": {"tcpSocket": {"port": 80}},
                 "volumeMounts": [{"name": "data", "mountPath": "/data"}]},
                {"name": "metrics", "image": "exporter:2", "ports": [{"containerPort": 9090}],
                 "args": ["--port=9090"]},
            ],
            "volumes": [{"name": "data", "emptyDir": {}}, {"name": "cfg", "configMap": {"name": "web"}}],
        },
    })
}

/// The sample MeshInstall's injection configuration.
fn config() -> InjectionConfig {
    let text = include_str!("../../../config/samples/meshinstall.yaml");
    let mi = mizzen::cli::mesh_install_from_yaml("sample", text).expect("the sample MeshInstall parses");
    InjectionConfig::from_mesh_install(&mi.spec)
}

/// The data object a user template runs over, captured from a real injection of [`pod`] by a template that
/// prints it into an annotation.
static DATA: LazyLock<Value> = LazyLock::new(|| {
    let mut config = config();
    let capture = "metadata:\n  annotations:\n    captured: {{ toJSON . | toJSON }}\n";
    config.user_templates.insert("capture".into(), Template::parse("capture", capture));
    // kube-inject's path: the same injection, with the injected pod itself to read.
    let mut pod = pod("capture");
    let injected = mizzen::kubeinject::inject_object(&Injector::compile(config), &mut pod, &mut Vec::new());
    assert!(matches!(injected, Ok(true)), "the capturing template injects");
    let text = pod["metadata"]["annotations"]["captured"].as_str().expect("captured");
    serde_json::from_str(text).expect("the captured data is JSON")
});

thread_local! {
    static CONFIG: RefCell<InjectionConfig> = RefCell::new(config());
}

static POD: LazyLock<String> = LazyLock::new(|| pod("fuzz").to_string());

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(template) = Template::parse("fuzz", text) else {
        return;
    };
    let Ok(out) = template.execute(&DATA) else {
        return;
    };
    assert!(out.len() <= MAX_OUTPUT, "output of {} bytes", out.len());
    CONFIG.with_borrow_mut(|config| {
        config.user_templates.insert("fuzz".into(), Ok(template));
        // The webhook's path; the injector is compiled per configuration, so per template here.
        let injector = Injector::compile(config.clone());
        let mut submitted = Submitted::from_json(&POD).expect("the pod parses");
        let _ = inject_pod(&injector, &mut submitted, "shop", None);
    });
});
