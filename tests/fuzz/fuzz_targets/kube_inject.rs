//! A kube-inject YAML stream -> injected stream (`mizzenctl kube-inject`). Anything may be refused; nothing may
//! panic. (Idempotence is checked by the unit and conformance tests.)
#![no_main]

use libfuzzer_sys::fuzz_target;
use mizzen::inject::InjectionConfig;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let config = InjectionConfig::default();
    let _ = mizzen::kubeinject::inject_stream(&config, text);
});
