//! Whether a pod gets the sidecar, and which rule decided. Two stages: which pods the API server sends to a
//! revision's webhook (the MutatingWebhookConfiguration selectors, labels only), and what the injector decides for
//! a pod that arrives.

use std::borrow::Cow;
use std::cell::OnceCell;
use std::collections::BTreeMap;
use std::fmt;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, LabelSelectorRequirement};
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

/// [`inject_value`] of a pod's JSON `metadata`: its `sidecar.istio.io/inject` label and annotation, read as
/// [`string_map`] reads them (a value that is not a string as its JSON text), without copying the maps.
fn pod_inject_value(metadata: &Value) -> InjectValue {
    let read = |field: &str| {
        metadata[field].get(ann::INJECT).map(|v| match v {
            Value::String(s) => Cow::Borrowed(s.as_str()),
            other => Cow::Owned(other.to_string()),
        })
    };
    inject_value(read("labels").as_deref(), read("annotations").as_deref())
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
    match pod_inject_value(metadata) {
        InjectValue::Decides(inject, rule) => return decided(inject, rule),
        InjectValue::Unset | InjectValue::Unrecognised(_) => {}
    }
    // Istio skips empty selectors (they would otherwise match every pod). The labels are read once, and only when a
    // selector needs them.
    let usable = |s: &&LabelSelector| !selector_is_empty(s);
    let labels_read = OnceCell::new();
    let labels = || labels_read.get_or_init(|| string_map(&metadata["labels"]));
    for (i, selector) in config.never_inject_selector.iter().enumerate() {
        if usable(&selector) && selector_matches(selector, labels()) {
            return decided(false, Rule::NeverInjectSelector(i));
        }
    }
    for (i, selector) in config.always_inject_selector.iter().enumerate() {
        if usable(&selector) && selector_matches(selector, labels()) {
            return decided(true, Rule::AlwaysInjectSelector(i));
        }
    }
    decided(config.policy == InjectionPolicy::Enabled, Rule::Policy(config.policy))
}

/// What the pod's `sidecar.istio.io/inject` label or annotation says (Istio's `injectRequired`): the label, when
/// present, replaces the annotation whatever its value (even empty); then only the exact strings `"true"` and
/// `"false"` decide. An empty value counts as unset; any other value is unrecognised and also falls through to the
/// selectors and the policy (Istio logs a warning, see [`unrecognised_inject_warning`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum InjectValue {
    /// `"true"` or `"false"`, from the rule given.
    Decides(bool, Rule),
    /// Neither label nor annotation, or an empty value.
    Unset,
    /// A value other than `"true"`, `"false"` or empty.
    Unrecognised(String),
}

/// Reads the pod's opt-in/opt-out as Istio does. The one rule the webhook, `kube-inject`, `check-inject` and Events
/// share.
pub fn inject_value(label: Option<&str>, annotation: Option<&str>) -> InjectValue {
    let (value, rule): (&str, fn(String) -> Rule) = match (label, annotation) {
        (Some(label), _) => (label, Rule::PodLabel),
        (None, Some(annotation)) => (annotation, Rule::PodAnnotation),
        (None, None) => return InjectValue::Unset,
    };
    match value {
        "true" => InjectValue::Decides(true, rule(value.to_owned())),
        "false" => InjectValue::Decides(false, rule(value.to_owned())),
        "" => InjectValue::Unset,
        other => InjectValue::Unrecognised(other.to_owned()),
    }
}

/// Istio's warning for an unrecognised `sidecar.istio.io/inject` value (its injector logs exactly this).
pub fn unrecognised_inject_warning(value: &str) -> String {
    format!(
        "Invalid value for {}: {value:?}. Only 'true' and 'false' are accepted. Falling back to default injection \
         policy.",
        ann::INJECT
    )
}

/// The warning for a pod's `sidecar.istio.io/inject` value, if Istio would log one.
pub fn inject_warning(metadata: &Value) -> Option<String> {
    match pod_inject_value(metadata) {
        InjectValue::Unrecognised(v) => Some(unrecognised_inject_warning(&v)),
        _ => None,
    }
}

/// A selector with neither `matchLabels` nor `matchExpressions` entries.
pub fn selector_is_empty(selector: &LabelSelector) -> bool {
    selector.match_labels.as_ref().is_none_or(BTreeMap::is_empty)
        && selector.match_expressions.as_ref().is_none_or(Vec::is_empty)
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

/// One webhook of a revision's MutatingWebhookConfiguration: which namespaces and pods the API server sends to it.
/// Rendering writes exactly these selectors, and stage 1 evaluates them, so the two cannot disagree.
#[derive(Debug, Clone, PartialEq)]
pub struct WebhookSelector {
    /// Istio's name for the webhook without its domain: `rev.namespace`, `rev.object`, `namespace`, `object`.
    pub name: &'static str,
    /// Labels the pod's namespace must match.
    pub namespace_selector: LabelSelector,
    /// Labels the pod must match.
    pub object_selector: LabelSelector,
}

fn requirement(key: &str, operator: &str, values: &[&str]) -> LabelSelectorRequirement {
    LabelSelectorRequirement {
        key: key.to_owned(),
        operator: operator.to_owned(),
        values: (!values.is_empty()).then(|| values.iter().map(|v| (*v).to_owned()).collect()),
    }
}

fn expressions(requirements: Vec<LabelSelectorRequirement>) -> LabelSelector {
    LabelSelector {
        match_expressions: Some(requirements),
        match_labels: None,
    }
}

/// The webhooks of revision `revision` (`default` for the default revision), in Istio's order and with Istio's
/// selectors: every revision has `rev.namespace` (namespace `istio.io/rev=<rev>` without `istio-injection`) and
/// `rev.object` (pod `istio.io/rev=<rev>` in a namespace with neither label); the default revision also has
/// `namespace` (namespace `istio-injection=enabled`) and `object` (pod `sidecar.istio.io/inject=true` without
/// `istio.io/rev`, namespace with neither label). Pods labelled `sidecar.istio.io/inject=false` are never sent.
pub fn webhook_selectors(revision: &str) -> Vec<WebhookSelector> {
    let not_opted_out = || requirement(ann::INJECT, "NotIn", &["false"]);
    let mut hooks = vec![
        WebhookSelector {
            name: "rev.namespace",
            namespace_selector: expressions(vec![
                requirement(ann::REVISION, "In", &[revision]),
                requirement(ann::NAMESPACE_INJECTION, "DoesNotExist", &[]),
            ]),
            object_selector: expressions(vec![not_opted_out()]),
        },
        WebhookSelector {
            name: "rev.object",
            namespace_selector: expressions(vec![
                requirement(ann::REVISION, "DoesNotExist", &[]),
                requirement(ann::NAMESPACE_INJECTION, "DoesNotExist", &[]),
            ]),
            object_selector: expressions(vec![not_opted_out(), requirement(ann::REVISION, "In", &[revision])]),
        },
    ];
    if revision == "default" {
        hooks.extend([
            WebhookSelector {
                name: "namespace",
                namespace_selector: expressions(vec![requirement(ann::NAMESPACE_INJECTION, "In", &["enabled"])]),
                object_selector: expressions(vec![not_opted_out()]),
            },
            WebhookSelector {
                name: "object",
                namespace_selector: expressions(vec![
                    requirement(ann::NAMESPACE_INJECTION, "DoesNotExist", &[]),
                    requirement(ann::REVISION, "DoesNotExist", &[]),
                ]),
                object_selector: expressions(vec![
                    requirement(ann::INJECT, "In", &["true"]),
                    requirement(ann::REVISION, "DoesNotExist", &[]),
                ]),
            },
        ]);
    }
    hooks
}

fn why_sent(hook: &str, namespace_labels: &BTreeMap<String, String>, pod_labels: &BTreeMap<String, String>) -> String {
    let label = |labels: &BTreeMap<String, String>, key: &str| {
        format!("{key}={}", labels.get(key).map(String::as_str).unwrap_or_default())
    };
    match hook {
        "rev.namespace" => format!("namespace label {}", label(namespace_labels, ann::REVISION)),
        "rev.object" => format!("pod label {}", label(pod_labels, ann::REVISION)),
        "namespace" => format!("namespace label {}", label(namespace_labels, ann::NAMESPACE_INJECTION)),
        _ => format!("pod label {}", label(pod_labels, ann::INJECT)),
    }
}

/// Stage 1: which revision's webhook the API server sends the pod to, if any, and why. Evaluates the selectors of
/// [`webhook_selectors`] for the default revision and for any revision the namespace or pod names.
pub fn webhook_route(namespace_labels: &BTreeMap<String, String>, pod_labels: &BTreeMap<String, String>) -> Route {
    let mut revisions = vec!["default"];
    // No revision is named "": an empty label names none (and, being there, still fails `DoesNotExist`).
    for rev in [namespace_labels.get(ann::REVISION), pod_labels.get(ann::REVISION)]
        .into_iter()
        .flatten()
        .filter(|rev| !rev.is_empty())
    {
        if !revisions.contains(&rev.as_str()) {
            revisions.push(rev);
        }
    }
    for rev in revisions {
        for hook in webhook_selectors(rev) {
            if selector_matches(&hook.namespace_selector, namespace_labels)
                && selector_matches(&hook.object_selector, pod_labels)
            {
                let why = why_sent(hook.name, namespace_labels, pod_labels);
                return Route::Sent(rev.to_owned(), format!("{why} ({} webhook)", hook.name));
            }
        }
    }
    if pod_labels.get(ann::INJECT).map(String::as_str) == Some("false") {
        return Route::NotSent(format!("pod label {}=false", ann::INJECT));
    }
    match namespace_labels.get(ann::NAMESPACE_INJECTION) {
        Some(v) if v == "enabled" => {}
        Some(v) => {
            return Route::NotSent(format!(
                "namespace label {}={v} (only \"enabled\" selects)",
                ann::NAMESPACE_INJECTION
            ));
        }
        None => {}
    }
    Route::NotSent(format!(
        "neither namespace nor pod carries {}=enabled, {}=<revision> or (pod) {}=true",
        ann::NAMESPACE_INJECTION,
        ann::REVISION,
        ann::INJECT
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
    use serde_json::json;

    use super::*;

    fn pod(labels: Value, annotations: Value) -> Value {
        json!({"labels": labels, "annotations": annotations})
    }

    /// The decision for a pod of these labels and annotations, with [`config`], in namespace `default`.
    fn decide_pod(labels: Value, annotations: Value) -> Decision {
        decide(&config(), &pod(labels, annotations), &json!({}), "default")
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
        let d = decide_pod(json!({ann::INJECT: "false"}), json!({ann::INJECT: "true"}));
        assert_eq!(
            d,
            Decision {
                inject: false,
                rule: Rule::PodLabel("false".into())
            }
        );
        let d = decide_pod(json!({ann::INJECT: "true"}), json!({ann::INJECT: "false"}));
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
    fn inject_values_that_are_not_strings_are_read_as_their_json_text() {
        // The decision runs before the shape checks refuse such a pod, so it reads them as it reads the selectors'
        // labels: `false` as "false", `1` as "1", `null` as "null". (Only a hand-made review can hold them: the API
        // server sends strings, and kube-inject and check-inject turn a manifest's scalars into the text Go decodes
        // them to first, `kubeinject::labels_as_go_decodes`.)
        let d = decide_pod(json!({ann::INJECT: false}), json!({}));
        assert_eq!(
            d,
            Decision {
                inject: false,
                rule: Rule::PodLabel("false".into())
            }
        );
        let d = decide_pod(json!({}), json!({ann::INJECT: 1}));
        assert_eq!(d.rule, Rule::Policy(InjectionPolicy::Enabled));
        assert_eq!(
            inject_warning(&pod(json!({}), json!({ann::INJECT: 1}))),
            Some(unrecognised_inject_warning("1"))
        );
        // A label that is not a string still replaces the annotation.
        let d = decide_pod(json!({ann::INJECT: null}), json!({ann::INJECT: "false"}));
        assert_eq!(d.rule, Rule::Policy(InjectionPolicy::Enabled));
        assert_eq!(
            inject_warning(&pod(json!({ann::INJECT: null}), json!({}))),
            Some(unrecognised_inject_warning("null"))
        );
        // A label map that is not a map has no labels.
        let d = decide(
            &config(),
            &json!({"labels": "x", "annotations": {ann::INJECT: "false"}}),
            &json!({}),
            "default",
        );
        assert_eq!(d.rule, Rule::PodAnnotation("false".into()));
    }

    /// The decision table of Istio's `injectRequired` for the `sidecar.istio.io/inject` label and annotation:
    /// (label, annotation, policy) → inject, deciding rule.
    #[test]
    fn inject_label_and_annotation_decide_as_istio_does() {
        use InjectionPolicy::{Disabled, Enabled};
        type Row<'a> = (Option<&'a str>, Option<&'a str>, InjectionPolicy, bool, Rule);
        let cases: &[Row] = &[
            // The label, when present, replaces the annotation whatever its value.
            (
                Some("false"),
                Some("true"),
                Enabled,
                false,
                Rule::PodLabel("false".into()),
            ),
            (
                Some("true"),
                Some("false"),
                Disabled,
                true,
                Rule::PodLabel("true".into()),
            ),
            (Some("maybe"), Some("false"), Enabled, true, Rule::Policy(Enabled)),
            (Some(""), Some("false"), Enabled, true, Rule::Policy(Enabled)),
            (Some(""), Some("true"), Disabled, false, Rule::Policy(Disabled)),
            // Only the exact strings decide; Go ParseBool spellings do not.
            (None, Some("false"), Enabled, false, Rule::PodAnnotation("false".into())),
            (None, Some("true"), Disabled, true, Rule::PodAnnotation("true".into())),
            (None, Some("False"), Enabled, true, Rule::Policy(Enabled)),
            (None, Some("FALSE"), Enabled, true, Rule::Policy(Enabled)),
            (None, Some("0"), Enabled, true, Rule::Policy(Enabled)),
            (None, Some("1"), Disabled, false, Rule::Policy(Disabled)),
            (None, Some("t"), Disabled, false, Rule::Policy(Disabled)),
            (None, Some("True"), Disabled, false, Rule::Policy(Disabled)),
            (None, Some("yes"), Disabled, false, Rule::Policy(Disabled)),
            (Some("1"), None, Disabled, false, Rule::Policy(Disabled)),
            (Some("False"), None, Enabled, true, Rule::Policy(Enabled)),
            (None, Some(""), Disabled, false, Rule::Policy(Disabled)),
            (None, None, Enabled, true, Rule::Policy(Enabled)),
        ];
        for (label, annotation, policy, inject, rule) in cases {
            let mut c = config();
            c.policy = *policy;
            let mut labels = Map::new();
            let mut annotations = Map::new();
            if let Some(l) = label {
                labels.insert(ann::INJECT.into(), json!(l));
            }
            if let Some(a) = annotation {
                annotations.insert(ann::INJECT.into(), json!(a));
            }
            let d = decide(
                &c,
                &pod(Value::Object(labels), Value::Object(annotations)),
                &json!({}),
                "default",
            );
            assert_eq!(
                (d.inject, &d.rule),
                (*inject, rule),
                "label {label:?}, annotation {annotation:?}, policy {policy:?}"
            );
        }
    }

    #[test]
    fn unrecognised_values_fall_through_to_the_selectors() {
        let mut c = config();
        c.never_inject_selector = vec![selector("app", "db")];
        let d = decide(
            &c,
            &pod(json!({"app": "db", ann::INJECT: "yes"}), json!({})),
            &json!({}),
            "default",
        );
        assert_eq!(d.rule, Rule::NeverInjectSelector(0));
        let mut c = config();
        c.policy = InjectionPolicy::Disabled;
        c.always_inject_selector = vec![selector("app", "db")];
        let d = decide(
            &c,
            &pod(json!({"app": "db"}), json!({ann::INJECT: "1"})),
            &json!({}),
            "default",
        );
        assert_eq!((d.inject, d.rule), (true, Rule::AlwaysInjectSelector(0)));
    }

    #[test]
    fn empty_selectors_match_nothing_as_in_istio() {
        let mut c = config();
        c.never_inject_selector = vec![LabelSelector::default()];
        let d = decide(&c, &pod(json!({"app": "web"}), json!({})), &json!({}), "default");
        assert_eq!(d.rule, Rule::Policy(InjectionPolicy::Enabled));
    }

    #[test]
    fn unrecognised_values_get_istios_warning_and_recognised_ones_none() {
        let warn = inject_warning(&pod(json!({ann::INJECT: "maybe"}), json!({ann::INJECT: "false"})));
        assert_eq!(
            warn.as_deref(),
            Some(
                "Invalid value for sidecar.istio.io/inject: \"maybe\". Only 'true' and 'false' are accepted. \
                 Falling back to default injection policy."
            )
        );
        assert_eq!(inject_warning(&pod(json!({}), json!({ann::INJECT: "true"}))), None);
        assert_eq!(
            inject_warning(&pod(json!({ann::INJECT: ""}), json!({ann::INJECT: "x"}))),
            None
        );
        assert!(inject_warning(&pod(json!({}), json!({ann::INJECT: "False"}))).is_some());
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
        // The default revision also serves istio.io/rev=default, on the namespace or on the pod.
        assert_eq!(
            sent(webhook_route(&labels(&[("istio.io/rev", "default")]), &labels(&[]))),
            Some("default".into())
        );
        assert_eq!(
            sent(webhook_route(&labels(&[]), &labels(&[("istio.io/rev", "default")]))),
            Some("default".into())
        );
        assert_eq!(
            sent(webhook_route(&labels(&[]), &labels(&[(ann::INJECT, "true")]))),
            Some("default".into())
        );
        // istio-injection wins over istio.io/rev on the namespace; a namespace label wins over the pod's.
        assert_eq!(
            sent(webhook_route(
                &labels(&[("istio-injection", "enabled"), ("istio.io/rev", "canary")]),
                &labels(&[])
            )),
            Some("default".into())
        );
        assert_eq!(
            sent(webhook_route(
                &labels(&[("istio.io/rev", "canary")]),
                &labels(&[("istio.io/rev", "default")])
            )),
            Some("canary".into())
        );
        // An empty revision label names no webhook, and is there for the selectors that want none.
        assert_eq!(
            sent(webhook_route(&labels(&[]), &labels(&[("istio.io/rev", "")]))),
            None
        );
        assert_eq!(
            sent(webhook_route(
                &labels(&[("istio.io/rev", "")]),
                &labels(&[(ann::INJECT, "true")])
            )),
            None
        );
        assert_eq!(
            sent(webhook_route(
                &labels(&[("istio-injection", "enabled")]),
                &labels(&[("istio.io/rev", "")])
            )),
            Some("default".into())
        );
        // A pod with inject=true and its own revision goes to that revision only.
        assert_eq!(
            sent(webhook_route(
                &labels(&[]),
                &labels(&[(ann::INJECT, "true"), ("istio.io/rev", "canary")])
            )),
            Some("canary".into())
        );
    }

    #[test]
    fn default_revision_has_istios_four_webhooks_and_others_two() {
        let names = |rev: &str| webhook_selectors(rev).iter().map(|h| h.name).collect::<Vec<_>>();
        assert_eq!(names("default"), ["rev.namespace", "rev.object", "namespace", "object"]);
        assert_eq!(names("canary"), ["rev.namespace", "rev.object"]);
    }
}
