//! AdmissionReview in, AdmissionReview out: the webhook's whole decision as a pure function over the request body
//! and the revision's [`InjectionConfig`]. The server around it only does transport, caching, metrics and Events.
#![cfg_attr(not(test), deny(clippy::indexing_slicing))]

use std::collections::BTreeMap;

use kube::core::DynamicObject;
use kube::core::admission::{AdmissionRequest, AdmissionResponse, AdmissionReview, Operation};
use serde_json::Value;

use crate::inject::{self, InjectError, InjectionConfig, PodOutcome, Rule, Workload};

/// Audit annotation carrying the decision and its reason (`kubectl get --raw` audit logs, Events).
pub const AUDIT_ANNOTATION: &str = "mizzen.io/injection";

/// Why a body is not a usable AdmissionReview: the server answers HTTP 400 with this message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReviewError {
    /// Not JSON, or not shaped like an AdmissionReview.
    #[error("request body is not an admission.k8s.io/v1 AdmissionReview: {0}")]
    Malformed(String),
    /// JSON of another kind or version.
    #[error("expected apiVersion admission.k8s.io/v1 and kind AdmissionReview, got {api_version:?} {kind:?}")]
    WrongKind {
        /// The body's apiVersion.
        api_version: String,
        /// The body's kind.
        kind: String,
    },
    /// The review has no `request`.
    #[error("AdmissionReview has no request")]
    MissingRequest,
}

/// What the webhook decided, for logs, metrics and Events.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    /// The sidecar was injected.
    Injected(Rule),
    /// The pod was left alone.
    Skipped(Rule),
    /// The pod was refused (the user's error, such as a bad annotation).
    Denied(String),
    /// Nothing to do (not a CREATE, not a Pod, or a subresource such as `status` or `exec`).
    Ignored(String),
}

impl Outcome {
    /// A short label for metrics: `injected`, `skipped`, `denied`, `ignored`.
    pub fn result(&self) -> &'static str {
        match self {
            Outcome::Injected(_) => "injected",
            Outcome::Skipped(_) => "skipped",
            Outcome::Denied(_) => "denied",
            Outcome::Ignored(_) => "ignored",
        }
    }

    /// The reason as one line.
    pub fn reason(&self) -> String {
        match self {
            Outcome::Injected(rule) | Outcome::Skipped(rule) => rule.to_string(),
            Outcome::Denied(message) | Outcome::Ignored(message) => message.clone(),
        }
    }

    /// A stable label for the reason (for metrics): the rule's kind, without values.
    pub fn reason_label(&self) -> &'static str {
        match self {
            Outcome::Injected(rule) | Outcome::Skipped(rule) => match rule {
                Rule::HostNetwork => "host_network",
                Rule::IgnoredNamespace(_) => "ignored_namespace",
                Rule::PodLabel(_) => "pod_label",
                Rule::PodAnnotation(_) => "pod_annotation",
                Rule::NeverInjectSelector(_) => "never_inject_selector",
                Rule::AlwaysInjectSelector(_) => "always_inject_selector",
                Rule::Policy(_) => "policy",
            },
            Outcome::Denied(_) => "invalid_pod",
            Outcome::Ignored(_) => "not_create",
        }
    }
}

/// A parsed review request.
pub struct Request {
    /// The request as kube types.
    pub request: AdmissionRequest<DynamicObject>,
    /// The pod as JSON.
    pub pod: Value,
}

impl Request {
    /// The namespace the pod is created in.
    pub fn namespace(&self) -> &str {
        self.request.namespace.as_deref().unwrap_or_default()
    }

    /// The workload the pod belongs to (for logs and Events).
    pub fn workload(&self) -> Workload {
        let mut w = Workload::of_pod(self.pod.get("metadata").unwrap_or(&Value::Null));
        if w.namespace.is_empty() {
            w.namespace = self.namespace().to_owned();
        }
        w
    }

    /// Whether the review may have side effects such as Events: not for a `dryRun` request (the
    /// MutatingWebhookConfiguration declares `sideEffects: None`).
    pub fn publishes_events(&self) -> bool {
        !self.request.dry_run
    }

    /// Why this request is not about injecting a pod, if it is not: another kind, or a subresource.
    pub fn not_a_pod(&self) -> Option<String> {
        let kind = &self.request.kind;
        if kind.kind != "Pod" || !kind.group.is_empty() {
            let group = if kind.group.is_empty() { "core" } else { &kind.group };
            return Some(format!(
                "mizzen injects Pods only; this request is for {group}/{}",
                kind.kind
            ));
        }
        match self.request.sub_resource.as_deref() {
            Some(sub) if !sub.is_empty() => Some(format!("the {sub} subresource of a Pod is not injected")),
            _ => None,
        }
    }

    /// A name for the pod in logs: its name, else its generateName.
    pub fn pod_name(&self) -> String {
        let meta = self.pod.get("metadata").unwrap_or(&Value::Null);
        meta["name"]
            .as_str()
            .filter(|n| !n.is_empty())
            .or_else(|| meta["generateName"].as_str())
            .unwrap_or_default()
            .to_owned()
    }
}

/// Parses a request body.
pub fn parse(body: &[u8]) -> Result<Request, ReviewError> {
    let raw: Value = serde_json::from_slice(body).map_err(|e| ReviewError::Malformed(e.to_string()))?;
    let api_version = raw.get("apiVersion").and_then(Value::as_str).unwrap_or_default();
    let kind = raw.get("kind").and_then(Value::as_str).unwrap_or_default();
    if api_version != "admission.k8s.io/v1" || kind != "AdmissionReview" {
        return Err(ReviewError::WrongKind {
            api_version: api_version.to_owned(),
            kind: kind.to_owned(),
        });
    }
    if raw.get("request").is_none_or(Value::is_null) {
        return Err(ReviewError::MissingRequest);
    }
    // The pod is taken out before the typed decoding, which would otherwise buffer and convert it twice.
    let mut raw = raw;
    let object = raw
        .pointer_mut("/request/object")
        .map(Value::take)
        .unwrap_or(Value::Null);
    let review: AdmissionReview<DynamicObject> =
        serde_json::from_value(raw).map_err(|e| ReviewError::Malformed(e.to_string()))?;
    let request: AdmissionRequest<DynamicObject> = review.try_into().map_err(|_| ReviewError::MissingRequest)?;
    let parsed = Request {
        request,
        pod: Value::Null,
    };
    if parsed.not_a_pod().is_some() {
        // Answered `allowed` without a patch: the webhook configuration should not send these, but when it does,
        // refusing them would block unrelated API calls.
        return Ok(parsed);
    }
    let request = parsed.request;
    let pod = match object {
        Value::Object(_) => object,
        Value::Null if request.operation != Operation::Create => Value::Null,
        Value::Null => return Err(ReviewError::Malformed("request.object is missing".into())),
        _ => return Err(ReviewError::Malformed("request.object is not an object".into())),
    };
    Ok(Request { request, pod })
}

/// Answers a parsed request with the revision's configuration (`None` when no MeshInstall serves the revision).
pub fn respond(
    request: &Request,
    config: Option<&InjectionConfig>,
    revision: &str,
    namespace_annotations: Option<&BTreeMap<String, String>>,
) -> (AdmissionResponse, Outcome) {
    let response = AdmissionResponse::from(&request.request);
    if let Some(reason) = request.not_a_pod() {
        return (response, Outcome::Ignored(reason));
    }
    if request.request.operation != Operation::Create {
        let outcome = Outcome::Ignored(format!(
            "{:?} is not injected; only CREATE is",
            request.request.operation
        ));
        return (response, outcome);
    }
    let Some(config) = config else {
        let message = format!(
            "mizzen: no MeshInstall serves injection revision {revision:?}; create one, or fix the namespace's \
             istio.io/rev label"
        );
        return (response.deny(&message), Outcome::Denied(message));
    };
    match inject::inject_pod(config, &request.pod, request.namespace(), namespace_annotations) {
        Ok(PodOutcome::Injected { patch, decision, .. }) => {
            let outcome = Outcome::Injected(decision.rule);
            let mut response = match response.with_patch(patch) {
                Ok(r) => r,
                Err(e) => {
                    let message = format!("mizzen: cannot serialise the patch: {e}");
                    return (
                        AdmissionResponse::from(&request.request).deny(&message),
                        Outcome::Denied(message),
                    );
                }
            };
            response
                .audit_annotations
                .insert(AUDIT_ANNOTATION.into(), format!("injected: {}", outcome.reason()));
            (with_inject_warning(response, &request.pod), outcome)
        }
        Ok(PodOutcome::Skipped(decision)) => {
            let outcome = Outcome::Skipped(decision.rule);
            let mut response = response;
            response
                .audit_annotations
                .insert(AUDIT_ANNOTATION.into(), format!("skipped: {}", outcome.reason()));
            (with_inject_warning(response, &request.pod), outcome)
        }
        Err(error) => {
            let message = match &error {
                InjectError::InvalidPod(_)
                | InjectError::InvalidAnnotation { .. }
                | InjectError::UnknownTemplate(_)
                | InjectError::Template(_) => {
                    format!("mizzen sidecar injection refused this pod: {error}")
                }
            };
            (response.deny(&message), Outcome::Denied(message))
        }
    }
}

/// Istio's warning about an unrecognised `sidecar.istio.io/inject` value, as an admission warning (kubectl prints
/// it) and in the audit annotation.
fn with_inject_warning(mut response: AdmissionResponse, pod: &Value) -> AdmissionResponse {
    if let Some(warning) = inject::decision::inject_warning(&pod["metadata"]) {
        if let Some(a) = response.audit_annotations.get_mut(AUDIT_ANNOTATION) {
            a.push_str(&format!(" ({warning})"));
        }
        response.warnings.get_or_insert_with(Vec::new).push(warning);
    }
    response
}

/// The review to send back. The patch is written base64-encoded, as the API server writes `[]byte` fields (kube's
/// types would write it as an array of numbers, several times larger).
pub fn to_body(mut response: AdmissionResponse) -> Vec<u8> {
    use base64::Engine as _;
    #[derive(serde::Serialize)]
    struct Review<'a> {
        #[serde(rename = "apiVersion")]
        api_version: &'a str,
        kind: &'a str,
        response: Response<'a>,
    }
    #[derive(serde::Serialize)]
    struct Response<'a> {
        #[serde(flatten)]
        inner: &'a AdmissionResponse,
        #[serde(skip_serializing_if = "Option::is_none")]
        patch: Option<String>,
    }
    let patch = response
        .patch
        .take()
        .map(|bytes| base64::engine::general_purpose::STANDARD.encode(bytes));
    let review = Review {
        api_version: "admission.k8s.io/v1",
        kind: "AdmissionReview",
        response: Response {
            inner: &response,
            patch,
        },
    };
    serde_json::to_vec(&review).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn review(pod: Value, namespace: &str) -> Vec<u8> {
        serde_json::to_vec(&json!({
            "apiVersion": "admission.k8s.io/v1",
            "kind": "AdmissionReview",
            "request": {
                "uid": "0df28fbd-5f5f-11e8-bc74-36e6bb280816",
                "kind": {"group": "", "version": "v1", "kind": "Pod"},
                "resource": {"group": "", "version": "v1", "resource": "pods"},
                "namespace": namespace,
                "operation": "CREATE",
                "userInfo": {"username": "system:serviceaccount:kube-system:replicaset-controller"},
                "object": pod,
                "dryRun": false
            }
        }))
        .unwrap()
    }

    fn pod(annotations: Value) -> Value {
        json!({"apiVersion": "v1", "kind": "Pod",
               "metadata": {"generateName": "web-7d4b9-", "labels": {"app": "web"}, "annotations": annotations},
               "spec": {"containers": [{"name": "web", "image": "nginx"}]}})
    }

    #[test]
    fn injected_pods_get_a_patch_and_an_audit_annotation() {
        let req = parse(&review(pod(json!({})), "shop")).unwrap();
        let (response, outcome) = respond(&req, Some(&InjectionConfig::default()), "default", None);
        assert!(response.allowed);
        assert!(response.patch.is_some());
        assert_eq!(outcome.result(), "injected");
        assert!(response.audit_annotations[AUDIT_ANNOTATION].starts_with("injected: "));
        let body: Value = serde_json::from_slice(&to_body(response)).unwrap();
        assert_eq!(body["response"]["patchType"], "JSONPatch");
        assert!(body["response"]["patch"].is_string(), "the patch must be base64 text");
        assert_eq!(body["response"]["uid"], "0df28fbd-5f5f-11e8-bc74-36e6bb280816");
    }

    #[test]
    fn skipped_pods_are_allowed_without_a_patch() {
        let req = parse(&review(pod(json!({"sidecar.istio.io/inject": "false"})), "shop")).unwrap();
        let (response, outcome) = respond(&req, Some(&InjectionConfig::default()), "default", None);
        assert!(response.allowed && response.patch.is_none());
        assert_eq!(outcome, Outcome::Skipped(Rule::PodAnnotation("false".into())));
        assert!(response.audit_annotations[AUDIT_ANNOTATION].contains("sidecar.istio.io/inject"));
    }

    #[test]
    fn unrecognised_inject_values_are_injected_by_policy_with_istios_warning() {
        let req = parse(&review(pod(json!({"sidecar.istio.io/inject": "False"})), "shop")).unwrap();
        let (response, outcome) = respond(&req, Some(&InjectionConfig::default()), "default", None);
        assert_eq!(outcome.result(), "injected");
        let warnings = response.warnings.clone().unwrap_or_default();
        assert_eq!(warnings.len(), 1);
        assert!(warnings[0].starts_with("Invalid value for sidecar.istio.io/inject: \"False\""));
        assert!(response.audit_annotations[AUDIT_ANNOTATION].contains("Only 'true' and 'false' are accepted"));
    }

    #[test]
    fn dry_run_reviews_publish_no_events() {
        let req = parse(&review(pod(json!({})), "shop")).unwrap();
        assert!(req.publishes_events());
        let mut body: Value = serde_json::from_slice(&review(pod(json!({})), "shop")).unwrap();
        body["request"]["dryRun"] = json!(true);
        let req = parse(&serde_json::to_vec(&body).unwrap()).unwrap();
        assert!(!req.publishes_events());
    }

    #[test]
    fn bad_annotations_deny_the_pod_naming_the_annotation() {
        let req = parse(&review(
            pod(json!({"traffic.sidecar.istio.io/includeInboundPorts": "bad"})),
            "shop",
        ))
        .unwrap();
        let (response, outcome) = respond(&req, Some(&InjectionConfig::default()), "default", None);
        assert!(!response.allowed);
        assert!(
            response
                .result
                .message
                .contains("traffic.sidecar.istio.io/includeInboundPorts")
        );
        assert_eq!(outcome.result(), "denied");
    }

    #[test]
    fn unknown_revisions_are_denied_clearly() {
        let req = parse(&review(pod(json!({})), "shop")).unwrap();
        let (response, _) = respond(&req, None, "canary", None);
        assert!(!response.allowed);
        assert!(response.result.message.contains("\"canary\""));
    }

    fn review_of(kind: Value, sub_resource: Option<&str>, object: Value) -> Vec<u8> {
        let mut r: Value = serde_json::from_slice(&review(object, "shop")).unwrap();
        r["request"]["kind"] = kind;
        if let Some(sub) = sub_resource {
            r["request"]["subResource"] = json!(sub);
        }
        serde_json::to_vec(&r).unwrap()
    }

    #[test]
    fn other_kinds_and_subresources_are_allowed_without_a_patch() {
        let deployment = json!({"group": "apps", "version": "v1", "kind": "Deployment"});
        let secret = json!({"group": "", "version": "v1", "kind": "Secret"});
        let pod = json!({"group": "", "version": "v1", "kind": "Pod"});
        for (kind, sub, object) in [
            (
                deployment,
                None,
                json!({"kind": "Deployment", "spec": {"template": {}}}),
            ),
            (secret, None, json!({"kind": "Secret", "data": {"a": "Yg=="}})),
            (pod.clone(), Some("status"), pod_value()),
            (
                pod.clone(),
                Some("exec"),
                json!({"kind": "PodExecOptions", "command": ["sh"]}),
            ),
            (pod, Some("binding"), Value::Null),
        ] {
            let req = parse(&review_of(kind.clone(), sub, object)).unwrap();
            let (response, outcome) = respond(&req, Some(&InjectionConfig::default()), "default", None);
            assert!(response.allowed && response.patch.is_none(), "{kind} {sub:?}");
            assert_eq!(outcome.result(), "ignored", "{kind} {sub:?}");
        }
    }

    fn pod_value() -> Value {
        pod(json!({}))
    }

    /// The shapes that panicked before (issue 11): each is now refused with the field or annotation named.
    #[test]
    fn wrong_shaped_pods_and_annotations_are_refused_naming_the_field() {
        let mut cases: Vec<(Value, &str)> = Vec::new();
        for v in [r#"{"x":1}"#, r#"{"name":1}"#, "[1]", "1", r#""s""#, "null"] {
            cases.push((
                pod(json!({"sidecar.istio.io/userVolume": v})),
                "sidecar.istio.io/userVolume",
            ));
            cases.push((
                pod(json!({"sidecar.istio.io/userVolumeMount": v})),
                "sidecar.istio.io/userVolumeMount",
            ));
        }
        for labels in [json!("app=web"), json!([1]), json!(1), json!({"app": 1})] {
            let mut p = pod(json!({}));
            p["metadata"]["labels"] = labels;
            cases.push((p, "metadata.labels"));
        }
        for annotations in [json!("a"), json!([1]), json!(true)] {
            let mut p = pod(json!({}));
            p["metadata"]["annotations"] = annotations;
            cases.push((p, "metadata.annotations"));
        }
        for probe in ["livenessProbe", "readinessProbe", "startupProbe"] {
            for handler in ["httpGet", "tcpSocket", "grpc"] {
                let mut p = pod(json!({}));
                p["spec"]["containers"][0][probe] = json!({ handler: "x" });
                cases.push((p, "spec.containers[0]."));
            }
        }
        let mut p = pod(json!({}));
        p["spec"]["containers"][0]["lifecycle"] = json!({"preStop": {"httpGet": 8080}});
        cases.push((p, "spec.containers[0].lifecycle.preStop.httpGet"));
        let mut p = pod(json!({}));
        p["spec"]["containers"] = json!([{"name": "istio-proxy", "securityContext": "root"}]);
        cases.push((p, "spec.containers[0].securityContext"));
        let mut p = pod(json!({}));
        p["metadata"] = json!("web");
        cases.push((p, "metadata must be an object"));
        for (p, field) in cases {
            let req = parse(&review(p.clone(), "shop")).unwrap();
            let (response, outcome) = respond(&req, Some(&InjectionConfig::default()), "default", None);
            assert!(!response.allowed, "{p}");
            assert_eq!(outcome.result(), "denied");
            assert!(
                response.result.message.contains(field),
                "{field}: {}",
                response.result.message
            );
        }
    }

    #[test]
    fn bodies_that_are_not_reviews_are_refused() {
        assert!(matches!(parse(b"{not json"), Err(ReviewError::Malformed(_))));
        assert!(matches!(
            parse(br#"{"apiVersion":"v1","kind":"Pod"}"#),
            Err(ReviewError::WrongKind { .. })
        ));
        assert_eq!(
            parse(br#"{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview"}"#).err(),
            Some(ReviewError::MissingRequest)
        );
    }
}
