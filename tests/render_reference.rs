//! The operator's rendering against what Istio's installer renders (`../shared/conformance/istio-manifests`, or
//! `MIZZEN_MANIFESTS_DIR`): for equivalent inputs, the same objects istiod and the ingress gateway need, with the
//! same container args, environment and ports. Known, intended differences are listed in README.md.

use std::path::{Path, PathBuf};

use mizzen::render::{RenderOptions, render};
use serde_json::{Value, json};

fn dir() -> Option<PathBuf> {
    let d = std::env::var_os("MIZZEN_MANIFESTS_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/conformance/istio-manifests"));
    d.join("output").is_dir().then_some(d)
}

fn golden(dir: &Path, name: &str) -> Vec<Value> {
    let text = std::fs::read_to_string(dir.join("output").join(name)).unwrap();
    mizzen::yaml::parse_documents(&text).unwrap()
}

fn ours(spec: Value) -> Vec<Value> {
    let mi = serde_json::from_value(json!({"apiVersion": "mizzen.io/v1alpha1", "kind": "MeshInstall",
        "metadata": {"name": "default", "uid": "u"}, "spec": spec}))
    .unwrap();
    render(&mi, &RenderOptions::default()).unwrap()
}

fn find<'a>(objects: &'a [Value], kind: &str, name: &str) -> Option<&'a Value> {
    objects
        .iter()
        .find(|o| o["kind"] == kind && o["metadata"]["name"] == name)
}

fn container(d: &Value) -> &Value {
    &d["spec"]["template"]["spec"]["containers"][0]
}

fn env_names(c: &Value) -> Vec<String> {
    c["env"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["name"].as_str().unwrap().to_owned())
        .collect()
}

#[test]
fn istiod_has_what_istios_installer_gives_it() {
    let Some(dir) = dir() else {
        eprintln!("skipped: Istio manifest references not found (MIZZEN_MANIFESTS_DIR or ../shared)");
        return;
    };
    let theirs = golden(&dir, "pilot_default.golden.yaml");
    let mine = ours(json!({"hub": "registry.istio.io/release", "version": "1.1.4"}));
    // Objects istiod needs: same kinds and names.
    for (kind, name) in [
        ("ServiceAccount", "istiod"),
        ("ClusterRole", "istiod-clusterrole-istio-system"),
        ("ClusterRole", "istiod-gateway-controller-istio-system"),
        ("ClusterRoleBinding", "istiod-clusterrole-istio-system"),
        ("ClusterRoleBinding", "istiod-gateway-controller-istio-system"),
        ("Role", "istiod"),
        ("RoleBinding", "istiod"),
        ("ConfigMap", "istio"),
        ("Deployment", "istiod"),
        ("Service", "istiod"),
    ] {
        assert!(find(&theirs, kind, name).is_some(), "reference lacks {kind}/{name}");
        assert!(
            find(&mine, kind, name).is_some(),
            "mizzen does not render {kind}/{name}"
        );
    }
    let (t, m) = (
        container(find(&theirs, "Deployment", "istiod").unwrap()),
        container(find(&mine, "Deployment", "istiod").unwrap()),
    );
    assert_eq!(m["image"], t["image"]);
    assert_eq!(m["args"], t["args"]);
    assert_eq!(m["ports"], t["ports"]);
    assert_eq!(m["readinessProbe"], t["readinessProbe"]);
    assert_eq!(m["volumeMounts"], t["volumeMounts"]);
    let (tn, mn) = (env_names(t), env_names(m));
    for name in &tn {
        assert!(mn.contains(name), "istiod env {name} missing");
    }
    let extra: Vec<&String> = mn.iter().filter(|n| !tn.contains(n)).collect();
    assert_eq!(
        extra,
        [
            "INJECTION_WEBHOOK_CONFIG_NAME",
            "VALIDATION_WEBHOOK_CONFIG_NAME",
            "ISTIOD_CUSTOM_HOST"
        ]
    );
    let (ts, ms) = (
        find(&theirs, "Service", "istiod").unwrap(),
        find(&mine, "Service", "istiod").unwrap(),
    );
    assert_eq!(ms["spec"]["ports"], ts["spec"]["ports"]);
    // Same RBAC rules for istiod's own Role.
    assert_eq!(
        find(&mine, "Role", "istiod").unwrap()["rules"],
        find(&theirs, "Role", "istiod").unwrap()["rules"]
    );
}

#[test]
fn ingress_gateway_has_what_istios_installer_gives_it() {
    let Some(dir) = dir() else {
        eprintln!("skipped: Istio manifest references not found (MIZZEN_MANIFESTS_DIR or ../shared)");
        return;
    };
    let theirs = golden(&dir, "ingressgateway_k8s_settings.golden.yaml");
    let mine = ours(json!({"gateways": [{"name": "istio-ingressgateway", "service": {
        "externalTrafficPolicy": "Local", "annotations": {"manifest-generate": "testserviceAnnotation"}}}]}));
    let (td, md) = (
        find(&theirs, "Deployment", "istio-ingressgateway").unwrap(),
        find(&mine, "Deployment", "istio-ingressgateway").unwrap(),
    );
    let (t, m) = (container(td), container(md));
    assert_eq!(m["args"], t["args"]);
    assert_eq!(env_names(m), env_names(t));
    assert_eq!(m["ports"], t["ports"]);
    assert_eq!(m["readinessProbe"], t["readinessProbe"]);
    assert_eq!(m["securityContext"], t["securityContext"]);
    let (ts, ms) = (
        find(&theirs, "Service", "istio-ingressgateway").unwrap(),
        find(&mine, "Service", "istio-ingressgateway").unwrap(),
    );
    assert_eq!(ms["spec"]["ports"], ts["spec"]["ports"]);
    assert_eq!(ms["spec"]["type"], ts["spec"]["type"]);
    assert_eq!(ms["spec"]["externalTrafficPolicy"], ts["spec"]["externalTrafficPolicy"]);
    assert_eq!(ms["spec"]["selector"], ts["spec"]["selector"]);
    assert_eq!(
        ms["metadata"]["annotations"]["manifest-generate"],
        "testserviceAnnotation"
    );
}

#[test]
fn autoscaling_matches_istios_hpa_and_pdb() {
    let Some(dir) = dir() else {
        eprintln!("skipped: Istio manifest references not found (MIZZEN_MANIFESTS_DIR or ../shared)");
        return;
    };
    let theirs = golden(&dir, "pilot_default.golden.yaml");
    let mine = ours(json!({"controlPlane": {"autoscale": {"min": 1, "max": 5, "targetCPUUtilizationPercentage": 80}}}));
    let (th, mh) = (
        find(&theirs, "HorizontalPodAutoscaler", "istiod").unwrap(),
        find(&mine, "HorizontalPodAutoscaler", "istiod").unwrap(),
    );
    assert_eq!(mh["spec"], th["spec"]);
}
