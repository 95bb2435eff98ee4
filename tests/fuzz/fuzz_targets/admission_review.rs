//! AdmissionReview bytes -> response bytes, the webhook's whole pure path, with the sample MeshInstall's
//! configuration. Anything may be refused; nothing may panic, and every answer must serialise. The review's reader
//! (`json_read`, the pod's spec included) must read what it reads as serde_json does, and the patch's base64 written
//! with the compiled texts' own must be the patch's.
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
    // The webhook's own reader reads a review as serde_json does, or leaves it to serde_json.
    if let Err(difference) = admission::read_as_serde_json_reads(data) {
        panic!("{difference}");
    }
    let Ok(mut request) = admission::parse(data) else {
        return;
    };
    let (response, _outcome) = admission::respond(&mut request, Some(&INJECTOR), "default", None);
    let body = admission::to_body(&response);
    assert!(!body.is_empty(), "every response serialises");
    // The patch's base64 with the compiled texts' copied is the patch's base64.
    if let Some(patch) = &response.patch {
        let (mut copied, mut encoded) = (Vec::new(), Vec::new());
        mizzen::precoded::encode_append(&mut copied, patch, &response.placed.0);
        mizzen::precoded::encode_append(&mut encoded, patch, &[]);
        assert_eq!(copied, encoded, "the compiled texts' base64 is the patch's");
    }
});
