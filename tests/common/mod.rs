//! Shared by the integration tests: where the reference files that live outside the repository are.
// Each test crate uses some of these.
#![allow(dead_code)]

use std::path::{Path, PathBuf};

/// The directory named by the environment variable `var`, else `default` (relative to the repository), when it
/// holds `marker`. `None` when it does not, for the caller to skip with a message, except when `CI` is set: CI has
/// the files beside the repository, so a missing one there is a failure, not a skip.
pub fn shared_dir(var: &str, default: &str, marker: &str, what: &str) -> Option<PathBuf> {
    let dir = std::env::var_os(var)
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join(default));
    let found = dir.join(marker).exists();
    assert!(
        found || std::env::var_os("CI").is_none(),
        "{what} not found in {} ({var}, default {default}) and CI is set",
        dir.display()
    );
    found.then_some(dir)
}

/// Istio's sidecar-injection golden corpus (`MIZZEN_CONFORMANCE_DIR`, default `../shared/conformance/istio-inject`).
pub fn corpus_dir() -> Option<PathBuf> {
    shared_dir(
        "MIZZEN_CONFORMANCE_DIR",
        "../shared/conformance/istio-inject",
        "cases.tsv",
        "Istio injection corpus",
    )
}

/// What Istio's installer renders (`MIZZEN_MANIFESTS_DIR`, default `../shared/conformance/istio-manifests`).
pub fn manifests_dir() -> Option<PathBuf> {
    shared_dir(
        "MIZZEN_MANIFESTS_DIR",
        "../shared/conformance/istio-manifests",
        "output",
        "Istio manifest references",
    )
}
