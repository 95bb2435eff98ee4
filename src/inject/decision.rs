//! Whether a pod gets the sidecar, and which rule decided. Two stages: which pods the API server sends to a
//! revision's webhook (the MutatingWebhookConfiguration selectors, labels only), and what the injector decides for
//! a pod that arrives.

use std::collections::BTreeMap;
use std::fmt;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use serde_json::{Map, Value};

use super::annotations as ann;
use super::config::InjectionConfig;
use crate::api::InjectionPolicy;

/// Namespaces whose pods are never injected.
pub const IGNORED_NAMESPACES: &[&str] = &["kube-system", "kube-public", "kube-node-lease", "local-path-storage"];

/// The rule that decided.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Rule {
    /// The pod uses the host's network: a sidecar would capture the node's traffic.
    HostNetwork,
    /// The pod is in a system namespace.
    IgnoredNamespace(String),
    /// The pod's `sidecar.istio.io/inject` label.
    PodLabel(String),
    /// The pod's `sidecar.istio.io/inject` annotation.
    PodAnnotation(String),
    /// The n-th (0-based) `neverInjectSelector` entry matched.
    NeverInjectSelector(usize),
    /// The n-th (0-based) `alwaysInjectSelector` entry matched.
    AlwaysInjectSelector(usize),
    /// The injection policy.
    Policy(InjectionPolicy),
}

impl fmt::Display for Rule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Rule::HostNetwork => write!(f, "pod uses hostNetwork"),
            Rule::IgnoredNamespace(ns) => write!(f, "namespace {ns} is never injected"),
            Rule::PodLabel(v) => write!(f, "pod label {}={v:?}", ann::INJECT),
            Rule::PodAnnotation(v) => write!(f, "pod annotation {}={v:?}", ann::INJECT),
            Rule::NeverInjectSelector(i) => write!(f, "injection.neverInjectSelector[{i}] matches the pod"),
            Rule::AlwaysInjectSelector(i) => write!(f, "injection.alwaysInjectSelector[{i}] matches the pod"),
            Rule::Policy(InjectionPolicy::Enabled) => write!(f, "injection policy is enabled"),
            Rule::Policy(InjectionPolicy::Disabled) => write!(f, "injection policy is disabled"),
        }
    }
}

/// The injector's verdict for one pod.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    /// Inject the sidecar.
    pub inject: bool,
    /// The deciding rule.
    pub rule: Rule,
}

impl fmt::Display for Decision {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let verb = if self.inject { "inject" } else { "skip" };
        write!(f, "{verb}: {}", self.rule)
    }
}

fn string_map(value: &Value) -> BTreeMap<String, String> {
    value
        .as_object()
        .map(|m| {
            m.iter()
                .map(|(k, v)| {
                    (
                        k.clone(),
                        v.as_str().map(str::to_owned).unwrap_or_else(|| v.to_string()),
                    )
                })
                .collect()
        })
        .unwrap_or_default()
}

/// Stage 2: what the injector decides for a pod (`metadata` and `spec` as JSON) in `namespace`. First match wins.
pub fn decide(config: &InjectionConfig, metadata: &Value, spec: &Value, namespace: &str) -> Decision {
    let decided = |inject: bool, rule: Rule| Decision { inject, rule };
    if spec["hostNetwork"].as_bool() == Some(true) {
        return decided(false, Rule::HostNetwork);
    }
    if IGNORED_NAMESPACES.contains(&namespace) {
        return decided(false, Rule::IgnoredNamespace(namespace.to_owned()));
    }
    let labels = string_map(&metadata["labels"]);
    let annotations = string_map(&metadata["annotations"]);
    // Only "true" and "false" decide; any other value falls through to the selectors and the policy.
    for (value, rule) in [
        (labels.get(ann::INJECT), Rule::PodLabel as fn(String) -> Rule),
        (annotations.get(ann::INJECT), Rule::PodAnnotation),
    ] {
        if let Some(v) = value {
            // Go's strconv.ParseBool, as Istio reads it.
            match v.as_str() {
                "1" | "t" | "T" | "true" | "TRUE" | "True" => return decided(true, rule(v.clone())),
                "0" | "f" | "F" | "false" | "FALSE" | "False" => return decided(false, rule(v.clone())),
                _ => {}
            }
        }
    }
    for (i, selector) in config.never_inject_selector.iter().enumerate() {
        if selector_matches(selector, &labels) {
            return decided(false, Rule::NeverInjectSelector(i));
        }
    }
    for (i, selector) in config.always_inject_selector.iter().enumerate() {
        if selector_matches(selector, &labels) {
            return decided(true, Rule::AlwaysInjectSelector(i));
        }
    }
    decided(config.policy == InjectionPolicy::Enabled, Rule::Policy(config.policy))
}

/// Whether a label selector matches labels. An empty selector matches everything; an unknown operator nothing.
pub fn selector_matches(selector: &LabelSelector, labels: &BTreeMap<String, String>) -> bool {
    if let Some(match_labels) = &selector.match_labels
        && match_labels.iter().any(|(k, v)| labels.get(k) != Some(v))
    {
        return false;
    }
    for expr in selector.match_expressions.iter().flatten() {
        let value = labels.get(&expr.key);
        let values = expr.values.as_deref().unwrap_or_default();
        let ok = match expr.operator.as_str() {
            "In" => value.is_some_and(|v| values.contains(v)),
            "NotIn" => value.is_none_or(|v| !values.contains(v)),
            "Exists" => value.is_some(),
            "DoesNotExist" => value.is_none(),
            _ => false,
        };
        if !ok {
            return false;
        }
    }
    true
}

/// Stage 1: which revision's webhook the API server sends the pod to, if any, and why.
///
/// Mirrors the MutatingWebhookConfiguration mizzen installs: the default revision serves namespaces labelled
/// `istio-injection=enabled`; revision `r` serves namespaces labelled `istio.io/rev=r` (without
/// `istio-injection`), and pods labelled `istio.io/rev=r` in namespaces with neither label. Pods labelled
/// `sidecar.istio.io/inject=false` and namespaces labelled `istio-injection=disabled` are never sent.
pub fn webhook_route(namespace_labels: &BTreeMap<String, String>, pod_labels: &BTreeMap<String, String>) -> Route {
    if pod_labels.get(ann::INJECT).map(String::as_str) == Some("false") {
        return Route::NotSent(format!("pod label {}=false", ann::INJECT));
    }
    match namespace_labels.get(ann::NAMESPACE_INJECTION).map(String::as_str) {
        Some("enabled") => {
            return Route::Sent(
                "default".into(),
                format!("namespace label {}=enabled", ann::NAMESPACE_INJECTION),
            );
        }
        Some("disabled") => return Route::NotSent(format!("namespace label {}=disabled", ann::NAMESPACE_INJECTION)),
        Some(other) => {
            return Route::NotSent(format!(
                "namespace label {}={other} (not enabled)",
                ann::NAMESPACE_INJECTION
            ));
        }
        None => {}
    }
    if let Some(rev) = namespace_labels.get(ann::REVISION) {
        return Route::Sent(rev.clone(), format!("namespace label {}={rev}", ann::REVISION));
    }
    if let Some(rev) = pod_labels.get(ann::REVISION) {
        return Route::Sent(rev.clone(), format!("pod label {}={rev}", ann::REVISION));
    }
    if pod_labels.get(ann::INJECT).map(String::as_str) == Some("true") {
        return Route::Sent("default".into(), format!("pod label {}=true", ann::INJECT));
    }
    Route::NotSent(format!(
        "neither namespace nor pod carries {}=enabled or {}",
        ann::NAMESPACE_INJECTION,
        ann::REVISION
    ))
}

/// Result of stage 1.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Route {
    /// Sent to this revision's webhook, because of the reason given.
    Sent(String, String),
    /// Not sent to any webhook, because of the reason given.
    NotSent(String),
}

/// Labels as a string map (for callers holding JSON metadata).
pub fn labels_of(metadata: &Value) -> BTreeMap<String, String> {
    string_map(&metadata["labels"])
}

/// Annotations as a JSON map (empty when absent).
pub fn annotations_of(metadata: &Value) -> Map<String, Value> {
    metadata["annotations"].as_object().cloned().unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelectorRequirement;
    use serde_json::json;

    use super::*;

    fn pod(labels: Value, annotations: Value) -> Value {
        json!({"labels": labels, "annotations": annotations})
    }

    fn selector(key: &str, value: &str) -> LabelSelector {
        LabelSelector {
            match_labels: Some(BTreeMap::from([(key.to_owned(), value.to_owned())])),
            ..Default::default()
        }
    }

    fn config() -> InjectionConfig {
        InjectionConfig::default()
    }

    #[test]
    fn host_network_is_skipped_first() {
        let d = decide(
            &config(),
            &pod(json!({ann::INJECT: "true"}), json!({})),
            &json!({"hostNetwork": true}),
            "default",
        );
        assert_eq!(
            d,
            Decision {
                inject: false,
                rule: Rule::HostNetwork
            }
        );
    }

    #[test]
    fn system_namespaces_are_skipped_even_when_the_pod_opts_in() {
        for ns in IGNORED_NAMESPACES {
            let d = decide(&config(), &pod(json!({ann::INJECT: "true"}), json!({})), &json!({}), ns);
            assert_eq!(d.rule, Rule::IgnoredNamespace((*ns).to_owned()));
            assert!(!d.inject);
        }
    }

    #[test]
    fn pod_label_decides_and_wins_over_the_annotation() {
        let d = decide(
            &config(),
            &pod(json!({ann::INJECT: "false"}), json!({ann::INJECT: "true"})),
            &json!({}),
            "default",
        );
        assert_eq!(
            d,
            Decision {
                inject: false,
                rule: Rule::PodLabel("false".into())
            }
        );
        let d = decide(
            &config(),
            &pod(json!({ann::INJECT: "true"}), json!({ann::INJECT: "false"})),
            &json!({}),
            "default",
        );
        assert_eq!(
            d,
            Decision {
                inject: true,
                rule: Rule::PodLabel("true".into())
            }
        );
    }

    #[test]
    fn pod_annotation_decides_without_a_label() {
        let d = decide(
            &config(),
            &pod(json!({}), json!({ann::INJECT: "false"})),
            &json!({}),
            "default",
        );
        assert_eq!(
            d,
            Decision {
                inject: false,
                rule: Rule::PodAnnotation("false".into())
            }
        );
        let mut c = config();
        c.policy = InjectionPolicy::Disabled;
        let d = decide(&c, &pod(json!({}), json!({ann::INJECT: "true"})), &json!({}), "default");
        assert_eq!(
            d,
            Decision {
                inject: true,
                rule: Rule::PodAnnotation("true".into())
            }
        );
    }

    #[test]
    fn explicit_opt_in_wins_over_never_inject_selector() {
        let mut c = config();
        c.never_inject_selector = vec![selector("app", "db")];
        let d = decide(
            &c,
            &pod(json!({"app": "db", ann::INJECT: "true"}), json!({})),
            &json!({}),
            "default",
        );
        assert!(d.inject);
    }

    #[test]
    fn never_inject_selector_wins_over_always_inject_selector() {
        let mut c = config();
        c.never_inject_selector = vec![selector("tier", "batch")];
        c.always_inject_selector = vec![selector("app", "db")];
        let d = decide(
            &c,
            &pod(json!({"app": "db", "tier": "batch"}), json!({})),
            &json!({}),
            "default",
        );
        assert_eq!(
            d,
            Decision {
                inject: false,
                rule: Rule::NeverInjectSelector(0)
            }
        );
    }

    #[test]
    fn always_inject_selector_overrides_a_disabled_policy() {
        let mut c = config();
        c.policy = InjectionPolicy::Disabled;
        c.always_inject_selector = vec![selector("other", "x"), selector("app", "db")];
        let d = decide(&c, &pod(json!({"app": "db"}), json!({})), &json!({}), "default");
        assert_eq!(
            d,
            Decision {
                inject: true,
                rule: Rule::AlwaysInjectSelector(1)
            }
        );
    }

    #[test]
    fn policy_decides_last() {
        let d = decide(&config(), &pod(json!({}), json!({})), &json!({}), "default");
        assert_eq!(
            d,
            Decision {
                inject: true,
                rule: Rule::Policy(InjectionPolicy::Enabled)
            }
        );
        let mut c = config();
        c.policy = InjectionPolicy::Disabled;
        let d = decide(&c, &pod(json!({}), json!({})), &json!({}), "default");
        assert_eq!(
            d,
            Decision {
                inject: false,
                rule: Rule::Policy(InjectionPolicy::Disabled)
            }
        );
    }

    #[test]
    fn other_inject_values_fall_through_to_the_policy() {
        let d = decide(
            &config(),
            &pod(json!({ann::INJECT: "maybe"}), json!({})),
            &json!({}),
            "default",
        );
        assert_eq!(d.rule, Rule::Policy(InjectionPolicy::Enabled));
    }

    #[test]
    fn match_expressions_are_honoured() {
        let s = LabelSelector {
            match_expressions: Some(vec![LabelSelectorRequirement {
                key: "env".into(),
                operator: "NotIn".into(),
                values: Some(vec!["prod".into()]),
            }]),
            ..Default::default()
        };
        assert!(selector_matches(&s, &BTreeMap::from([("env".into(), "dev".into())])));
        assert!(!selector_matches(&s, &BTreeMap::from([("env".into(), "prod".into())])));
        assert!(selector_matches(&s, &BTreeMap::new()));
    }

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect()
    }

    #[test]
    fn webhook_routes_follow_the_namespace_and_pod_labels() {
        let sent = |r: Route| match r {
            Route::Sent(rev, _) => Some(rev),
            Route::NotSent(_) => None,
        };
        assert_eq!(
            sent(webhook_route(&labels(&[("istio-injection", "enabled")]), &labels(&[]))),
            Some("default".into())
        );
        assert_eq!(
            sent(webhook_route(
                &labels(&[("istio-injection", "disabled"), ("istio.io/rev", "canary")]),
                &labels(&[])
            )),
            None
        );
        assert_eq!(
            sent(webhook_route(&labels(&[("istio.io/rev", "canary")]), &labels(&[]))),
            Some("canary".into())
        );
        assert_eq!(
            sent(webhook_route(&labels(&[]), &labels(&[("istio.io/rev", "canary")]))),
            Some("canary".into())
        );
        assert_eq!(
            sent(webhook_route(
                &labels(&[("istio-injection", "enabled")]),
                &labels(&[(ann::INJECT, "false")])
            )),
            None
        );
        assert_eq!(sent(webhook_route(&labels(&[]), &labels(&[]))), None);
    }
}
