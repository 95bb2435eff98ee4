//! A kube-inject YAML stream -> injected stream (`mizzenctl kube-inject`). Anything may be refused; nothing may
//! panic. (Idempotence is checked by the unit and conformance tests.)
#![no_main]

use std::sync::LazyLock;

use libfuzzer_sys::fuzz_target;
use mizzen::inject::{InjectionConfig, Injector};

static INJECTOR: LazyLock<Injector> = LazyLock::new(|| Injector::compile(InjectionConfig::default()));

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let _ = mizzen::kubeinject::inject_stream(&INJECTOR, text);
});
