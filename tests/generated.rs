//! Generated files under `config/` match what the code generates, and the kustomization yields the same objects
//! as the bundle.

use std::path::Path;
use std::process::Command;

use serde_json::Value;

fn repo_file(path: &str) -> String {
    let full = Path::new(env!("CARGO_MANIFEST_DIR")).join(path);
    std::fs::read_to_string(&full).unwrap_or_else(|e| panic!("cannot read {}: {e}", full.display()))
}

#[test]
fn committed_crd_matches_the_rust_types() {
    let want = mizzen::bundle::crd_yaml().unwrap();
    assert!(
        repo_file("config/crd/mizzen.io_meshinstalls.yaml") == want,
        "config/crd/mizzen.io_meshinstalls.yaml is stale: run hack/generate.sh"
    );
}

#[test]
fn committed_bundle_matches_mizzenctl_bundle() {
    let want = mizzen::bundle::bundle_yaml().unwrap();
    assert!(
        repo_file("config/bundle.yaml") == want,
        "config/bundle.yaml is stale: run hack/generate.sh"
    );
}

fn identity(object: &Value) -> String {
    format!(
        "{}/{}/{}/{}",
        object["apiVersion"].as_str().unwrap_or_default(),
        object["kind"].as_str().unwrap_or_default(),
        object["metadata"]["namespace"].as_str().unwrap_or_default(),
        object["metadata"]["name"].as_str().unwrap_or_default()
    )
}

#[test]
fn kustomization_yields_the_bundle_objects() {
    let output = match Command::new("kubectl")
        .args(["kustomize", "config/"])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
    {
        Ok(output) => output,
        Err(error) => {
            eprintln!("skipped: kubectl not found ({error}); .ci/run checks the kustomization with kubectl");
            return;
        }
    };
    assert!(
        output.status.success(),
        "kubectl kustomize failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let mut from_kustomize = mizzen::yaml::parse_documents(&String::from_utf8(output.stdout).unwrap()).unwrap();
    let mut from_bundle = mizzen::yaml::parse_documents(&repo_file("config/bundle.yaml")).unwrap();
    from_kustomize.sort_by_key(identity);
    from_bundle.sort_by_key(identity);
    let ids = |objects: &[Value]| objects.iter().map(identity).collect::<Vec<_>>();
    assert_eq!(ids(&from_kustomize), ids(&from_bundle));
    for (k, b) in from_kustomize.iter().zip(&from_bundle) {
        assert_eq!(k, b, "{} differs between kustomize and the bundle", identity(k));
    }
}

#[test]
fn committed_istio_crds_are_generated_from_istios_crd_file() {
    let reference = std::env::var_os("MIZZEN_REFERENCE_DIR")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/reference"))
        .join("istio-crd-all.gen.yaml");
    let Ok(text) = std::fs::read_to_string(&reference) else {
        assert!(
            std::env::var_os("CI").is_none(),
            "{} not found and CI is set",
            reference.display()
        );
        eprintln!(
            "skipped: {} not found (MIZZEN_REFERENCE_DIR or ../shared/reference)",
            reference.display()
        );
        return;
    };
    let want = mizzen::istio_crds::from_reference(&text).unwrap();
    assert!(
        repo_file("src/istio_crds.gen.json") == want,
        "src/istio_crds.gen.json is stale: run hack/generate.sh"
    );
}
