//! Every annotation parser: the first byte picks the annotation, the rest is its value. The value goes through
//! the validator and, when accepted, through a whole injection of a small pod carrying it (so the template code
//! that reads the annotation runs too).
#![no_main]

use std::sync::LazyLock;

use libfuzzer_sys::fuzz_target;
use mizzen::inject::annotations as ann;
use mizzen::inject::{InjectionConfig, Injector, Submitted, inject_pod};
use serde_json::json;

static INJECTOR: LazyLock<Injector> = LazyLock::new(|| Injector::compile(InjectionConfig::default()));

const KEYS: &[&str] = &[
    ann::INCLUDE_OUTBOUND_IP_RANGES,
    ann::EXCLUDE_OUTBOUND_IP_RANGES,
    ann::INCLUDE_INBOUND_PORTS,
    ann::EXCLUDE_INBOUND_PORTS,
    ann::INCLUDE_OUTBOUND_PORTS,
    ann::EXCLUDE_OUTBOUND_PORTS,
    ann::INTERCEPTION_MODE,
    ann::STATUS_PORT,
    ann::READINESS_INITIAL_DELAY,
    ann::READINESS_PERIOD,
    ann::READINESS_FAILURE_THRESHOLD,
    ann::PROXY_CPU,
    ann::PROXY_MEMORY,
    ann::PROXY_CPU_LIMIT,
    ann::PROXY_MEMORY_LIMIT,
    ann::USER_VOLUME,
    ann::USER_VOLUME_MOUNT,
    ann::NATIVE_SIDECAR,
    ann::REWRITE_APP_HTTP_PROBERS,
    ann::ENABLE_CORE_DUMP,
    ann::CAP_NET_BIND_SERVICE,
    ann::PROMETHEUS_MERGE_METRICS,
    ann::LOG_LEVEL,
    ann::COMPONENT_LOG_LEVEL,
    ann::AGENT_LOG_LEVEL,
    ann::BOOTSTRAP_OVERRIDE,
    ann::PROXY_CONFIG,
    ann::TEMPLATES,
    ann::STATUS,
    ann::OVERRIDES,
    ann::PROXY_IMAGE,
    ann::MULTUS_NETWORKS,
    ann::KUBEVIRT_INTERFACES,
    ann::EXCLUDE_INTERFACES,
    ann::INJECT,
];

fuzz_target!(|data: &[u8]| {
    let Some((&selector, value)) = data.split_first() else {
        return;
    };
    let Ok(value) = std::str::from_utf8(value) else {
        return;
    };
    let key = KEYS[usize::from(selector) % KEYS.len()];
    let annotations = json!({ key: value, ann::INJECT: "true" });
    let pod = json!({
        "metadata": {"name": "p", "annotations": annotations, "labels": {"app": "p"}},
        "spec": {"containers": [{"name": "app", "image": "nginx", "ports": [{"containerPort": 80, "name": "http"}],
                 "readinessProbe": {"httpGet": {"port": "http", "path": "/"}}}],
                 "volumes": [{"name": "data", "emptyDir": {}}]},
    });
    let validated = mizzen::inject::validate::annotations(annotations.as_object().expect("built as an object"));
    let text = pod.to_string();
    let mut submitted = Submitted::from_json(&text).expect("the pod parses");
    let injected = inject_pod(&INJECTOR, &mut submitted, "shop", None);
    if let (Err(_), Ok(mizzen::inject::PodOutcome::Injected { .. })) = (&validated, &injected) {
        panic!("{key}={value:?} was refused by the validator but injected");
    }
});
