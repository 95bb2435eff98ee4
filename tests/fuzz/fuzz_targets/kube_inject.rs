//! A kube-inject YAML stream -> injected stream (`mizzenctl kube-inject`); on success the output injects again
//! without error (idempotence is checked by the unit and conformance tests, not here).
#![no_main]

use libfuzzer_sys::fuzz_target;
use mizzen::inject::InjectionConfig;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let config = InjectionConfig::default();
    if let Ok(out) = mizzen::kubeinject::inject_stream(&config, text) {
        let _ = mizzen::kubeinject::inject_stream(&config, &out.text);
    }
});
