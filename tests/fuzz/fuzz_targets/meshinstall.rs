//! MeshInstall YAML -> decode -> render (what the operator applies) and the injection configuration.
#![no_main]

use libfuzzer_sys::fuzz_target;
use mizzen::inject::InjectionConfig;
use mizzen::render::{RenderOptions, render};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(mi) = mizzen::cli::mesh_install_from_yaml("fuzz", text) else {
        return;
    };
    let options = RenderOptions {
        operator_namespace: "mizzen-system".into(),
        webhook_url: None,
        ca_bundle: None,
        skip_istio_crds: false,
        holdings: None,
    };
    let _ = render(&mi, &options);
    let _ = InjectionConfig::from_mesh_install(&mi.spec);
});
