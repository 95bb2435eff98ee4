//! AdmissionReview bytes -> response bytes, the webhook's whole pure path, with the sample MeshInstall's
//! configuration. Anything may be refused; nothing may panic, and every answer must serialise.
#![no_main]

use std::sync::LazyLock;

use libfuzzer_sys::fuzz_target;
use mizzen::admission;
use mizzen::inject::{InjectionConfig, Injector};

static INJECTOR: LazyLock<Injector> = LazyLock::new(|| {
    let text = include_str!("../../../config/samples/meshinstall.yaml");
    let mi = mizzen::cli::mesh_install_from_yaml("sample", text).expect("the sample MeshInstall parses");
    Injector::compile(InjectionConfig::from_mesh_install(&mi.spec))
});

fuzz_target!(|data: &[u8]| {
    let Ok(mut request) = admission::parse(data) else {
        return;
    };
    let (response, _outcome) = admission::respond(&mut request, Some(&INJECTOR), "default", None);
    let body = admission::to_body(&response);
    assert!(!body.is_empty(), "every response serialises");
});
