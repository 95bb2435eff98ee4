//! Sidecar injection: the decision ([`decide`]) and the mutation of a pod, exactly as Istio's injector does them
//! (its golden corpus is the specification), as pure functions of the pod and an [`Injector`] (an
//! [`InjectionConfig`] compiled once).
//!
//! The mutation works on the pod as JSON (`metadata` and `spec`) in stages, each its own module:
//!
//! 1. [`strip`]: what an earlier injection added comes out, so injecting twice changes nothing;
//! 2. [`fragment`]: the pod-dependent fragment: the selected templates rendered for this pod (the parts that do not
//!    depend on the pod were rendered once, by [`compile`]);
//! 3. [`merge`]: the fragment merged under the pod with Kubernetes' strategic-merge rules, so a user-declared
//!    `istio-proxy` container overrides the template field by field;
//! 4. [`post`]: containers placed (native or classic layout), probes rewritten, labels and bookkeeping annotations
//!    written;
//! 5. [`patch`] (the webhook's): the JSON patch from the submitted pod to the injected one, written directly.
//!
//! [`inject`] runs stages 1–4 on a whole pod (`kube-inject`); [`inject_pod`] decides and runs all five on a submitted
//! pod of which only what the injector reads was parsed ([`pod`]). For a pod seen the first time that takes the
//! compiled parts whole and whose lists the merge would only place the template's items around, stage 3 is skipped:
//! stage 4 gives only what changes in its lists ([`patch::Lists`]: the template's items, the pod's rewritten probes),
//! and stage 5 writes the patch from those and the pod as parsed, with no merged pod, no copy of the spec and no diff
//! of it. The tests compare that patch byte for byte with the one written from the whole injected pod.
#![cfg_attr(not(test), deny(clippy::indexing_slicing))]

pub mod annotations;
pub mod compile;
pub mod config;
pub mod decision;
pub mod fragment;
pub mod gojson;
pub mod gotemplate;
pub mod merge;
pub mod overlay;
pub mod patch;
pub mod pod;
pub mod post;
pub mod probes;
pub mod prometheus;
pub mod proxy_config;
pub mod shape;
pub mod strip;
pub mod template;
pub mod validate;

use std::borrow::Cow;
use std::collections::BTreeMap;

use serde_json::Value;

use patch::InjectedSpec;

pub use compile::Injector;
pub use config::InjectionConfig;
pub use decision::{Decision, Route, Rule, decide, webhook_route};
pub use pod::Submitted;

/// Up to this many items (a list's, or an object's members) are searched or compared by a scan, which costs less
/// than allocating and hashing a set for a pod's few containers, volumes or keys; past it they go into a hash map or
/// set (or a tree, where order matters), so n items cost O(n) or O(n log n), not O(n²) (a pod of 60,000 volumes fits
/// in a review). Shared by [`merge`], [`overlay`], [`patch`] and [`pod`].
pub(crate) const SCAN_UP_TO: usize = 16;

/// Name of the injected proxy container.
pub const PROXY_NAME: &str = "istio-proxy";

/// Names of containers the templates inject; a pod's own container of one of these names overrides it.
pub const TEMPLATE_CONTAINERS: &[&str] = &[PROXY_NAME, "istio-init", "istio-validation", "enable-core-dump"];

/// The workload a pod belongs to (Istio's "deployment meta" and "type meta").
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Workload {
    /// Workload name (Deployment, StatefulSet, …, or the pod itself).
    pub name: String,
    /// Namespace; empty means `default`.
    pub namespace: String,
    /// Kind, such as `Deployment`.
    pub kind: String,
    /// API version, such as `apps/v1`.
    pub api_version: String,
}

impl Workload {
    /// The namespace, `default` when it names none (kube-inject of a manifest without one), as Istio's template
    /// writes `ISTIO_META_OWNER` (`valueOrDefault .DeploymentMeta.Namespace "default"`).
    pub fn namespace_or_default(&self) -> &str {
        if self.namespace.is_empty() {
            "default"
        } else {
            &self.namespace
        }
    }

    /// `kubernetes://apis/<apiVersion>/namespaces/<ns>/<kind>s/<name>`, as `ISTIO_META_OWNER`.
    pub fn owner_uri(&self) -> String {
        let ns = self.namespace_or_default();
        // kubernetes://apis/{apiVersion}/namespaces/{ns}/{kind, lower case}s/{name}, written in one buffer.
        let parts = [self.api_version.as_str(), ns, &self.kind, &self.name];
        let mut uri = String::with_capacity(36 + parts.iter().map(|p| p.len()).sum::<usize>());
        uri.push_str("kubernetes://apis/");
        uri.push_str(&self.api_version);
        uri.push_str("/namespaces/");
        uri.push_str(ns);
        uri.push('/');
        uri.extend(self.kind.chars().map(|c| c.to_ascii_lowercase()));
        uri.push_str("s/");
        uri.push_str(&self.name);
        uri
    }

    /// The workload of a pod, as Istio's `GetDeployMetaFromPod` derives it: the pod itself, unless its name is
    /// generated (`generateName`) and a controller owns it; then the controller, with Istio's heuristics: a
    /// ReplicaSet named `<name>-<pod-template-hash>` is Deployment `<name>`, one named
    /// `<name>-<rollouts-pod-template-hash>` is Argo Rollout `<name>`, a ReplicationController of a pod labelled
    /// `deploymentconfig` is that OpenShift DeploymentConfig, and a Job named `<name>-<8 to 10 digits>` is CronJob
    /// `<name>`.
    pub fn of_pod(metadata: &Value) -> Self {
        Self::of_pod_owned_by(metadata, &pod::Owner::all_in(metadata))
    }

    /// [`Workload::of_pod`], with the pod's `ownerReferences` as read ([`Submitted::owners`]).
    pub fn of_pod_owned_by(metadata: &Value, owners: &[pod::Owner]) -> Self {
        let namespace = metadata["namespace"].as_str().unwrap_or_default().to_owned();
        let name = metadata["name"].as_str().unwrap_or_default();
        let pod = |name: &str, namespace| Self {
            name: name.to_owned(),
            namespace,
            kind: "Pod".into(),
            api_version: "v1".into(),
        };
        let generated = metadata["generateName"].as_str().is_some_and(|g| !g.is_empty());
        let controller = owners.iter().find(|o| o.controller);
        let Some(owner) = controller.filter(|_| generated) else {
            // A pod created by hand without a name of its own keeps its generateName's stem, for logs and Events.
            if name.is_empty() && generated {
                let stem = metadata["generateName"].as_str().unwrap_or_default();
                return pod(stem.trim_end_matches('-'), namespace);
            }
            return pod(name, namespace);
        };
        let (name, kind, api_version) = (&*owner.name, &*owner.kind, &*owner.api_version);
        let label = |key: &str| {
            metadata
                .get("labels")
                .and_then(|l| l.get(key))
                .and_then(Value::as_str)
                .filter(|v| !v.is_empty())
        };
        // Istio's `HasSuffix(name, hash)`, then `TrimSuffix(name, "-"+hash)`: a name that ends in the hash without
        // the dash is the Deployment's (or Rollout's) name whole.
        let trimmed = |hash: &str| {
            name.strip_suffix(hash)
                .map(|rest| rest.strip_suffix('-').unwrap_or(name))
        };
        let (name, kind, api_version) = if kind == "ReplicaSet"
            && let Some(deployment) = label("pod-template-hash").and_then(trimmed)
        {
            (deployment, "Deployment", api_version)
        } else if kind == "ReplicaSet"
            && let Some(rollout) = label("rollouts-pod-template-hash").and_then(trimmed)
        {
            // Argo Rollouts (Istio's heuristic, apiVersion included).
            (rollout, "Rollout", "v1alpha1")
        } else if kind == "ReplicationController"
            && let Some(config) = label("deploymentconfig")
        {
            (config, "DeploymentConfig", api_version)
        } else if kind == "Job"
            && let Some((cronjob, stamp)) = name.rsplit_once('-')
            && !cronjob.is_empty()
            && (8..=10).contains(&stamp.len())
            && stamp.bytes().all(|b| b.is_ascii_digit())
        {
            // Jobs created by a CronJob are named <cronjob>-<scheduled time in minutes>.
            (cronjob, "CronJob", "batch/v1")
        } else {
            (name, kind, api_version)
        };
        Self {
            name: name.to_owned(),
            namespace,
            kind: kind.to_owned(),
            api_version: api_version.to_owned(),
        }
    }
}

/// Why a pod could not be injected. These are the user's errors: the webhook refuses the pod with the message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InjectError {
    /// An annotation has a value that cannot be used.
    #[error("annotation {annotation}: {message}")]
    InvalidAnnotation {
        /// The annotation's name.
        annotation: String,
        /// What is wrong, naming the parameter (`includeIPRanges invalid: …`).
        message: String,
    },
    /// The pod asks for a template mizzen does not have.
    #[error(
        "annotation inject.istio.io/templates: template {0:?} is not defined (built in: sidecar, gateway, grpc-agent, \
         grpc-simple; others come from spec.injection.templates)"
    )]
    UnknownTemplate(String),
    /// A user template failed for this pod (it does not parse, fails to run, or renders something that is not a
    /// pod fragment).
    #[error("injection template failed: {0}")]
    Template(String),
    /// The pod itself is malformed.
    #[error("invalid pod: {0}")]
    InvalidPod(String),
}

/// A pod to inject.
#[derive(Clone, Debug)]
pub struct PodInput<'a> {
    /// The pod's `metadata`.
    pub metadata: &'a Value,
    /// The pod's `spec`.
    pub spec: &'a Value,
    /// The workload the pod belongs to.
    pub workload: Workload,
    /// Annotations of the pod's namespace, when known (OpenShift UID ranges).
    pub namespace_annotations: Option<&'a BTreeMap<String, String>>,
}

/// The injected pod's `metadata` and `spec`.
#[derive(Clone, Debug, PartialEq)]
pub struct Injected {
    /// New metadata.
    pub metadata: Value,
    /// New spec.
    pub spec: Value,
}

/// Templates mizzen provides itself.
pub const BUILTIN_TEMPLATES: &[&str] = &["sidecar", "gateway", "grpc-agent", "grpc-simple"];

/// A template a pod selects.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TemplateKind {
    /// `sidecar`.
    Sidecar,
    /// `gateway`.
    Gateway,
    /// `grpc-agent`.
    GrpcAgent,
    /// `grpc-simple`.
    GrpcSimple,
    /// One of the user's templates (`spec.injection.templates`); it wins over a built-in of the same name.
    User(String),
}

/// `value[key]` without indexing: Null when `value` is not an object or has no such key.
fn at<'a>(value: &'a Value, key: &str) -> &'a Value {
    value.get(key).unwrap_or(&Value::Null)
}

/// A pod annotation's text, if set.
fn annotation<'a>(metadata: &'a Value, key: &str) -> Option<&'a str> {
    metadata.get("annotations")?.get(key)?.as_str()
}

/// Injects the sidecar into a pod (stages 1 to 4). The caller has already decided to inject (see [`decide`]).
pub fn inject(injector: &Injector, input: &PodInput) -> Result<Injected, InjectError> {
    run(
        injector,
        Cow::Borrowed(input.metadata),
        Cow::Borrowed(input.spec),
        &input.workload,
        input.namespace_annotations,
        Path::Whole,
    )?
    .injected()
}

/// [`inject`] for a caller that hands over the pod's `metadata` and `spec`, which saves copying them (`kube-inject`
/// of a large manifest).
pub fn inject_owned(
    injector: &Injector,
    metadata: Value,
    spec: Value,
    workload: &Workload,
    namespace_annotations: Option<&BTreeMap<String, String>>,
) -> Result<Injected, InjectError> {
    run(
        injector,
        Cow::Owned(metadata),
        Cow::Owned(spec),
        workload,
        namespace_annotations,
        Path::Whole,
    )?
    .injected()
}

/// What [`run`] is for.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Path {
    /// The whole injected pod (`kube-inject`).
    Whole,
    /// A patch (the webhook's): the injected metadata may be only its labels and annotations, when injection changes
    /// nothing else of it (no template sets other metadata: stages 2 and 3 read the whole metadata, and stage 4
    /// writes only those two then), so the rest is not copied, and the patch refuses anything else it finds there
    /// ([`patch::PatchError::MetadataOutOfScope`]). With `shortcuts`, compiled template items may be stand-ins for
    /// stage 5 to write (see [`compile::StandIns`]), and the labels and annotations of a pod seen the first time are
    /// not copied either: stage 4 writes only its changes to them ([`overlay::Changes`]).
    Patch {
        /// Whether stand-ins and changes may be used.
        shortcuts: bool,
    },
}

/// The injected metadata, as [`run`] gives it.
enum RanMetadata<'m> {
    /// All of it.
    Whole(Value),
    /// Only its labels and annotations.
    LabelsAndAnnotations(Value),
    /// Only the changes to the pod's labels and annotations.
    Changes(overlay::Changes<'m>),
}

impl RanMetadata<'_> {
    fn for_patch(&self) -> patch::Metadata<'_, '_> {
        match self {
            Self::Whole(m) => patch::Metadata::Whole(m),
            Self::LabelsAndAnnotations(m) => patch::Metadata::LabelsAndAnnotations(m),
            Self::Changes(c) => patch::Metadata::Changes(c),
        }
    }
}

/// What [`run`] gives: the injected metadata and spec, and the stand-ins for the compiled items in them, if any.
struct Ran<'c, 'm> {
    metadata: RanMetadata<'m>,
    spec: InjectedSpec,
    stand_ins: Option<compile::StandIns<'c>>,
}

impl Ran<'_, '_> {
    /// The injected pod (of [`Path::Whole`], which gives neither [`InjectedSpec::Lists`] nor only parts of the
    /// metadata).
    fn injected(self) -> Result<Injected, InjectError> {
        match (self.spec, self.metadata) {
            (InjectedSpec::Whole(spec), RanMetadata::Whole(metadata)) => Ok(Injected { metadata, spec }),
            _ => Err(InjectError::InvalidPod(
                "internal error: a whole pod was asked for and only parts of it were injected".into(),
            )),
        }
    }
}

std::thread_local! {
    /// Patches written from the lists on this thread ([`patches_from_lists`]).
    static LISTS_TAKEN: std::cell::Cell<usize> = const { std::cell::Cell::new(0) };
}

/// How many patches were written from the lists ([`patch::Lists`]) on this thread: for the tests to see that the
/// comparisons of the two ways of writing a patch compare two ways.
#[doc(hidden)]
pub fn patches_from_lists() -> usize {
    LISTS_TAKEN.get()
}

/// Stages 1 to 4 for the pod `metadata` and `spec` of `workload`, for `path`.
fn run<'c, 'm>(
    injector: &'c Injector,
    metadata: Cow<'m, Value>,
    spec: Cow<'_, Value>,
    workload: &Workload,
    namespace_annotations: Option<&BTreeMap<String, String>>,
    path: Path,
) -> Result<Ran<'c, 'm>, InjectError> {
    let shortcuts = path == Path::Patch { shortcuts: true };
    shape::metadata(&metadata)?;
    shape::spec(&spec)?;
    let original = merge::OriginalLists::of(&spec);
    let strip::Stripped {
        metadata,
        spec,
        submitted,
        previous_probers,
    } = strip::previous_injection(metadata, spec)?;
    let fresh = submitted.is_none();
    let (mut merged, status_port, stand_ins, probers_appended, lists) = {
        let mut pod = fragment::Pod::read(injector, &metadata, spec, namespace_annotations)?;
        let (fragment, stand_ins) = fragment::render(injector, &pod, workload, &metadata, shortcuts && fresh)?;
        let status_port = pod
            .proxy_config
            .get("statusPort")
            .map(|p| p.as_str().map(str::to_owned).unwrap_or_else(|| p.to_string()))
            .unwrap_or_default();
        let hold_first = pod.hold && pod.sidecar;
        // A pod seen the first time that takes the compiled parts whole and declares none of the templates' items
        // (stand-ins only then: `fragment::render`'s `mergeable`), whose lists fit: the lists only.
        if let Some(s) = stand_ins.as_ref()
            && patch::Lists::fit(&fragment, &pod.spec)
        {
            let status = s.lists_status().text().to_owned();
            let template::Fragment {
                labels,
                annotations,
                init_containers,
                containers,
                volumes,
                ..
            } = fragment;
            let mut items = serde_json::Map::new();
            if !init_containers.is_empty() {
                items.insert("initContainers".into(), Value::Array(init_containers));
            }
            if !containers.is_empty() {
                items.insert("containers".into(), Value::Array(containers));
            }
            let mut items = Value::Object(items);
            post::reorder(&mut items, hold_first);
            let (rewritten, probers_appended) = if pod.sidecar {
                post::pod_probes_through_agent(injector, pod.annotations, &pod.spec, &mut items)
            } else {
                (Vec::new(), false)
            };
            // What stage 4's metadata writing reads of the merged pod: the proxy (for the metrics env), in `items`.
            let merged = merge::Merged {
                spec: items,
                status,
                overrides: None,
                labels,
                annotations,
                metadata_patches: Vec::new(),
            };
            debug_assert!(
                volumes.len() <= 1,
                "`Lists::fit` allows the compiled volumes' stand-in only"
            );
            let volumes = volumes.into_iter().next();
            (
                merged,
                status_port,
                stand_ins,
                probers_appended,
                Some((rewritten, volumes, hold_first)),
            )
        } else {
            let mut merged = merge::fragment_under_pod(
                fragment,
                std::mem::take(&mut pod.spec).into_owned(),
                std::mem::take(&mut pod.overrides),
                submitted,
                original,
                injector.config().revision_label(),
                stand_ins.as_ref(),
            );
            let probers_appended = post::spec(
                injector,
                &mut merged.spec,
                pod.annotations,
                hold_first,
                pod.interception_mode == "TPROXY",
                pod.sidecar,
                &previous_probers,
            );
            (merged, status_port, stand_ins, probers_appended, None)
        }
    };
    // The webhook diffs the metadata against the pod's: when only labels and annotations change (no template sets
    // other metadata; `post::metadata` writes nothing else), only they are taken to change, and of a pod seen the
    // first time (its own metadata, not a copy stripped of an earlier injection) only the changes to them. (Stages 2
    // and 3 read the whole metadata, above.)
    let metadata = match (path, merged.metadata_patches.is_empty(), metadata) {
        (Path::Patch { .. }, true, Cow::Borrowed(Value::Object(own))) if shortcuts => {
            let mut changes = overlay::Changes::over(own);
            post::metadata_changes(injector, &mut changes, &mut merged, &status_port, probers_appended)?;
            RanMetadata::Changes(changes)
        }
        (Path::Patch { .. }, true, mut metadata) => {
            let mut changed = serde_json::Map::new();
            for key in ["labels", "annotations"] {
                // Copied from the pod's own metadata; moved from one stripped of an earlier injection (a copy).
                let value = match &mut metadata {
                    Cow::Borrowed(m) => m.get(key).cloned(),
                    Cow::Owned(m) => m.as_object_mut().and_then(|m| m.remove(key)),
                };
                if let Some(value) = value {
                    changed.insert(key.to_owned(), value);
                }
            }
            let mut changed = Value::Object(changed);
            post::metadata(injector, &mut changed, &mut merged, &status_port, probers_appended)?;
            RanMetadata::LabelsAndAnnotations(changed)
        }
        (_, _, metadata) => {
            let mut metadata = metadata.into_owned();
            post::metadata(injector, &mut metadata, &mut merged, &status_port, probers_appended)?;
            RanMetadata::Whole(metadata)
        }
    };
    let spec = match lists {
        Some((rewritten, volumes, proxy_first)) => InjectedSpec::Lists(patch::Lists {
            items: merged.spec,
            rewritten,
            volumes,
            proxy_first,
        }),
        None => InjectedSpec::Whole(merged.spec),
    };
    Ok(Ran {
        metadata,
        spec,
        stand_ins,
    })
}

/// The webhook's view of one pod: injected with a JSON patch, or skipped with the deciding rule.
#[derive(Debug, Clone, PartialEq)]
pub enum PodOutcome<'c> {
    /// The pod gets the sidecar.
    Injected {
        /// RFC 6902 patch from the submitted pod to the injected one, as JSON text.
        patch: Vec<u8>,
        /// The injector's compiled texts in `patch`, by offset: their base64 is copied into the answer
        /// ([`crate::precoded::encode_append`]).
        placed: crate::precoded::Placements<'c>,
        /// Why it was injected.
        decision: Decision,
    },
    /// The pod is left alone.
    Skipped(Decision),
}

/// Decides and, when the decision is to inject, injects a submitted Pod in `namespace` (all five stages).
pub fn inject_pod<'c>(
    injector: &'c Injector,
    pod: &mut Submitted,
    namespace: &str,
    namespace_annotations: Option<&BTreeMap<String, String>>,
) -> Result<PodOutcome<'c>, InjectError> {
    inject_pod_with(injector, pod, namespace, namespace_annotations, true)
}

/// [`inject_pod`], writing the patch the webhook's way with `shortcuts` (as [`inject_pod`] does: a pod that fits the
/// compiled parts from their text, the labels and annotations of a pod seen the first time from their changes) or,
/// as for any other pod, from the injected values: the same bytes either way, which the tests check. Public for the
/// conformance tests.
#[doc(hidden)]
pub fn inject_pod_with<'c>(
    injector: &'c Injector,
    pod: &mut Submitted,
    namespace: &str,
    namespace_annotations: Option<&BTreeMap<String, String>>,
    shortcuts: bool,
) -> Result<PodOutcome<'c>, InjectError> {
    let depth = pod.depth(injector);
    if depth == pod::Depth::Full {
        // The whole metadata for the full parse: a user's template (chosen among others) may read the owners or merge
        // into them.
        pod.whole_metadata();
    }
    let spec = pod.spec(&depth)?;
    let metadata = pod.metadata();
    let decision = decide(injector.config(), metadata, &spec.value, namespace);
    if !decision.inject {
        return Ok(PodOutcome::Skipped(decision));
    }
    let mut workload = Workload::of_pod_owned_by(metadata, &pod.owners());
    if workload.namespace.is_empty() {
        workload.namespace = namespace.to_owned();
    }
    let old_metadata = pod.has_metadata().then_some(metadata);
    let attempt = |spec: &pod::Spec, shortcuts: bool| {
        let ran = run(
            injector,
            Cow::Borrowed(metadata),
            Cow::Borrowed(&spec.value),
            &workload,
            namespace_annotations,
            Path::Patch { shortcuts },
        )?;
        let patch = patch::build(
            old_metadata,
            ran.metadata.for_patch(),
            spec,
            &ran.spec,
            ran.stand_ins.as_ref(),
        );
        if patch.is_ok() && matches!(ran.spec, InjectedSpec::Lists(_)) {
            LISTS_TAKEN.set(LISTS_TAKEN.get() + 1);
        }
        Ok::<_, InjectError>(patch)
    };
    // A patch that cannot be written from what was parsed and compiled is written from the whole pod (never
    // needed for Istio's corpus; see `patch::PatchError::Fallback`).
    let patch = match attempt(&spec, shortcuts)? {
        Err(patch::PatchError::Fallback) => attempt(&spec.deepen()?, false)?,
        other => other,
    }
    .map_err(|e| InjectError::InvalidPod(e.to_string()))?;
    Ok(PodOutcome::Injected {
        patch: patch.bytes,
        placed: patch.placed,
        decision,
    })
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::annotations as ann;
    use super::*;

    /// The webhook's path: the pod as JSON text in, the patch and the patched pod out.
    fn webhook(config: &InjectionConfig, pod: &Value) -> Result<Option<(String, Value)>, InjectError> {
        let text = pod.to_string();
        let mut submitted = Submitted::from_json(&text).unwrap();
        match inject_pod(&Injector::compile(config.clone()), &mut submitted, "shop", None)? {
            PodOutcome::Injected { patch, .. } => {
                let ops: json_patch::Patch = serde_json::from_slice(&patch).unwrap();
                let mut patched = pod.clone();
                json_patch::patch(&mut patched, &ops).unwrap();
                Ok(Some((String::from_utf8(patch).unwrap(), patched)))
            }
            PodOutcome::Skipped(_) => Ok(None),
        }
    }

    /// The patch written the webhook's way (from the compiled text, stand-ins, and from the changes to the labels
    /// and annotations) is, byte for byte, the one written from the injected values, for pods that take the compiled
    /// parts and pods that do not, and metadata of many shapes, under configurations that change them.
    #[test]
    fn patches_written_the_webhooks_way_are_those_written_from_the_values() {
        // TPROXY is left out: it never takes the compiled text.
        let mut configs = crate::test_support::configs_with(&[
            ("components.cni.enabled", "true"),
            ("values.global.mountMtlsCerts", "true"),
            ("values.global.proxy.holdApplicationUntilProxyStarts", "true"),
            ("env.ENABLE_NATIVE_SIDECARS", "false"),
            ("values.global.proxy.enableCoreDump", "true"),
            ("values.global.imagePullSecrets", "[\"reg\"]"),
            ("meshConfig.extensionProviders+", OTEL_PROVIDER),
        ]);
        configs.push(holding_classic());
        let with = |patch: Value| {
            let mut p = pod();
            json_patch::merge(&mut p, &patch);
            p
        };
        // The pod with these members of its metadata as they are (a merge patch would drop nulls and merge maps).
        let metadata_with = |members: Value| {
            let mut p = pod();
            for (k, v) in members.as_object().unwrap() {
                p["metadata"][k] = v.clone();
            }
            p
        };
        let probes = json!({"containers": [
            {"name": "web", "image": "nginx", "ports": [{"name": "http", "containerPort": 80}],
             "readinessProbe": {"httpGet": {"path": "/ready?a=1&b=2", "port": "http"}},
             "livenessProbe": {"tcpSocket": {"port": 80}, "timeoutSeconds": 3},
             "lifecycle": {"preStop": {"httpGet": {"path": "/stop", "port": 80}}}},
            {"name": "worker", "image": "w", "startupProbe": {"grpc": {"port": 9000}}}]});
        let pods = [
            pod(),
            with(
                json!({"spec": {"volumes": [{"name": "data", "emptyDir": {}}, {"name": "cfg", "configMap": {"name": "c"}}]}}),
            ),
            with(json!({"spec": {"volumes": [{"name": "istio-envoy", "emptyDir": {"medium": "Memory"}}]}})),
            with(json!({"spec": {"volumes": [{"name": compile::COMPILED_VOLUMES, "emptyDir": {}}]}})),
            with(json!({"spec": {"volumes": [{"name": "istio-certs", "emptyDir": {}}]}})),
            with(
                json!({"spec": {"initContainers": [{"name": "setup", "image": "busybox", "restartPolicy": "Always"}]}}),
            ),
            with(json!({"spec": probes})),
            with(json!({"metadata": {"annotations": {"prometheus.io/scrape": "true", "prometheus.io/port": "9090"}}})),
            with(json!({"metadata": {"annotations": {"sidecar.istio.io/logLevel": "debug"}}})),
            with(
                json!({"metadata": {"annotations": {ann::TEMPLATES: "gateway"}, "labels": {"istio": "ingressgateway"}}}),
            ),
            with(json!({"spec": {"imagePullSecrets": [{"name": "own"}], "securityContext": {"fsGroup": 7}}})),
            // Lists the strategic merge does more with than placing the template's items around the pod's.
            with(json!({"spec": {"initContainers": []}})),
            with(json!({"spec": {"volumes": []}})),
            with(
                json!({"spec": {"containers": [{"name": "web", "image": "a"}, {"name": "web", "image": "b",
                "readinessProbe": {"httpGet": {"port": 80}}}]}}),
            ),
            with(
                json!({"spec": {"containers": [{"image": "a", "readinessProbe": {"httpGet": {"port": 80}}},
                {"name": "web"}]}}),
            ),
            with(json!({"spec": {"containers": [], "volumes": [{"name": "a"}, {"name": "a", "emptyDir": {}}]}})),
            with(json!({"spec": {"volumes": [{"emptyDir": {}}]}})),
            // A volume may share a container's name.
            with(json!({"spec": {"volumes": [{"name": "istio-proxy", "emptyDir": {}}]}})),
            // Labels and annotations of other shapes (the webhook writes their changes, not a diff): null, empty,
            // keys to escape and values the injection sets already, spellings of the metrics annotations that mean
            // the same (more of them than a short list of changes holds), scrape targets.
            metadata_with(json!({"labels": null, "annotations": null})),
            metadata_with(json!({"labels": {}, "annotations": {}})),
            metadata_with(json!({"labels": {"a~b/c": "1", "security.istio.io/tlsMode": "istio",
                "service.istio.io/canonical-name": "own"},
                "annotations": {"kubectl.kubernetes.io/default-container": "web", "x~/y": ""}})),
            metadata_with(
                json!({"annotations": {"prometheus.io/scrape": "true", "prometheus.io.scrape": "true",
                "prometheus-io/port": "9090", "prometheus.io/path": "/m",
                "prometheus.istio.io/scrape-targets": "9091:/x", "prometheus.io/zzz": "z"}}),
            ),
            metadata_with(json!({"annotations": (0..20)
                .map(|i| {
                    let sep = |j: usize| "./-:_ @".get(j % 7..j % 7 + 1).unwrap();
                    (format!("prometheus{}io{}port", sep(i), sep(i / 7)), json!(i.to_string()))
                })
                .chain([("a".to_owned(), json!("b"))])
                .collect::<serde_json::Map<_, _>>()})),
        ];
        let mut lists_taken = Vec::new();
        for (config_index, config) in configs.iter().enumerate() {
            let injector = Injector::compile(config.clone());
            // The comparison is not of the values path with itself: the plain pod takes the compiled text.
            let plain = pod();
            let Ran { stand_ins, spec, .. } = run(
                &injector,
                Cow::Borrowed(&plain["metadata"]),
                Cow::Borrowed(&plain["spec"]),
                &Workload::of_pod(&plain["metadata"]),
                None,
                Path::Patch { shortcuts: true },
            )
            .unwrap();
            assert!(stand_ins.is_some(), "the plain pod takes the compiled text");
            // Its patch is written from the lists alone unless the template adds image pull secrets or a volume
            // of its own for the pod (`istio-certs`).
            assert_eq!(
                matches!(spec, InjectedSpec::Lists(_)),
                config.image_pull_secrets.is_empty() && !config.mount_mtls_certs,
                "{config:?}"
            );
            for (i, pod) in pods.iter().enumerate() {
                let text = pod.to_string();
                let run = |shortcuts| {
                    let mut submitted = Submitted::from_json(&text).unwrap();
                    inject_pod_with(&injector, &mut submitted, "shop", None, shortcuts)
                };
                let before = LISTS_TAKEN.get();
                let compiled = run(true);
                if LISTS_TAKEN.get() > before {
                    lists_taken.push((config_index, i));
                }
                match (compiled, run(false)) {
                    (Ok(PodOutcome::Injected { patch: a, .. }), Ok(PodOutcome::Injected { patch: b, .. })) => {
                        assert_eq!(String::from_utf8(a).unwrap(), String::from_utf8(b).unwrap(), "{pod}");
                    }
                    (a, b) => assert_eq!(format!("{a:?}"), format!("{b:?}"), "{pod}"),
                }
            }
        }
        // The pods written from the lists, under each configuration that allows it: the plain one, with volumes of
        // its own, with probes and a hook, with metrics annotations, with image pull secrets and a security context
        // of its own, with an empty list of volumes, with a volume named like the proxy, and those with labels and
        // annotations of other shapes. (Not: a template volume or init container of its own, another log level, the
        // gateway template, lists the merge does more with.)
        let pods_taking_lists = [0, 1, 6, 7, 10, 12, 17, 18, 19, 20, 21, 22];
        let want: Vec<(usize, usize)> = configs
            .iter()
            .enumerate()
            .filter(|(_, c)| c.image_pull_secrets.is_empty() && !c.mount_mtls_certs)
            .flat_map(|(i, _)| pods_taking_lists.map(|p| (i, p)))
            .collect();
        assert_eq!(lists_taken, want);
    }

    /// Holding the application until the proxy is ready, with the proxy a classic container (so it goes first).
    fn holding_classic() -> InjectionConfig {
        let mut config = InjectionConfig::default();
        config
            .apply_setting("values.global.proxy.holdApplicationUntilProxyStarts", "true")
            .unwrap();
        config.apply_setting("env.ENABLE_NATIVE_SIDECARS", "false").unwrap();
        config
    }

    /// The same over the admission-review fuzzer's seeds (a thousand reviews, many of them damaged or odd), under
    /// configurations that change which pods take the compiled text and how the proxy is placed: whatever the pod,
    /// the patch (or error) written the webhook's way is the one written from the values.
    #[test]
    fn fuzz_seeds_get_the_same_patch_written_either_way() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fuzz/corpus/admission_review");
        let mut configs = crate::test_support::configs_with(&[
            ("values.global.proxy.holdApplicationUntilProxyStarts", "true"),
            ("env.ENABLE_NATIVE_SIDECARS", "false"),
        ]);
        configs.push(holding_classic());
        let injectors: Vec<Injector> = configs.into_iter().map(Injector::compile).collect();
        let lists_before = LISTS_TAKEN.get();
        let mut pods = 0;
        let mut injected = 0;
        for entry in std::fs::read_dir(&dir).unwrap() {
            let bytes = std::fs::read(entry.unwrap().path()).unwrap();
            let Ok(review) = serde_json::from_slice::<Value>(&bytes) else {
                continue;
            };
            let Some(object) = review.get("request").and_then(|r| r.get("object")) else {
                continue;
            };
            let text = object.to_string();
            pods += 1;
            for injector in &injectors {
                let run = |shortcuts| {
                    let mut submitted = Submitted::from_json(&text).map_err(InjectError::InvalidPod)?;
                    inject_pod_with(injector, &mut submitted, "shop", None, shortcuts)
                };
                let (a, b) = (run(true), run(false));
                injected += usize::from(matches!(a, Ok(PodOutcome::Injected { .. })));
                let show = |o: &Result<PodOutcome, InjectError>| match o {
                    Ok(PodOutcome::Injected { patch, .. }) => String::from_utf8_lossy(patch).into_owned(),
                    other => format!("{other:?}"),
                };
                assert_eq!(show(&a), show(&b), "{text}");
            }
        }
        // The seeds are there, many of them pods that get injected, and many of those written from the lists.
        let lists = LISTS_TAKEN.get() - lists_before;
        eprintln!("{pods} pods, {injected} injections, {lists} from the lists");
        assert!(
            pods > 500 && injected > pods && lists > 300,
            "{pods} pods, {injected} injections, {lists} from the lists"
        );
    }

    /// The injected pod, through the webhook's path.
    fn through_webhook(config: &InjectionConfig, pod: &Value) -> Value {
        webhook(config, pod).unwrap().expect("expected injection").1
    }

    /// The injected pod, through [`inject`] (kube-inject's path).
    fn through_inject(config: &InjectionConfig, pod: &Value) -> Injected {
        inject(
            &Injector::compile(config.clone()),
            &PodInput {
                metadata: &pod["metadata"],
                spec: &pod["spec"],
                workload: Workload::of_pod(&pod["metadata"]),
                namespace_annotations: None,
            },
        )
        .unwrap()
    }

    /// The env of the pod's `istio-proxy` container, in `initContainers` or `containers`.
    fn proxy_env(pod: &Value) -> Vec<Value> {
        pod["spec"]["initContainers"]
            .as_array()
            .into_iter()
            .chain(pod["spec"]["containers"].as_array())
            .flatten()
            .find(|c| c["name"] == PROXY_NAME)
            .and_then(|c| c["env"].as_array())
            .expect("an istio-proxy container with env")
            .clone()
    }

    /// The value of the proxy's env var `name`, if it has one.
    fn env_value(pod: &Value, name: &str) -> Option<Value> {
        proxy_env(pod)
            .into_iter()
            .find(|e| e["name"] == name)
            .map(|e| e["value"].clone())
    }

    fn pod() -> Value {
        json!({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": "web", "namespace": "shop", "annotations": {"team": "a"}, "labels": {"app": "web"}},
            "spec": {"containers": [{"name": "web", "image": "nginx", "ports": [{"containerPort": 80}]}]}
        })
    }

    #[test]
    fn webhook_patch_escapes_slashes_in_annotation_keys_and_applies_cleanly() {
        let (text, patched) = webhook(&InjectionConfig::default(), &pod()).unwrap().unwrap();
        assert!(
            text.contains("/metadata/annotations/sidecar.istio.io~1status"),
            "{text}"
        );
        // The patch applied to the pod gives what kube-inject gives.
        let p = pod();
        let whole = through_inject(&InjectionConfig::default(), &p);
        assert_eq!((&patched["metadata"], &patched["spec"]), (&whole.metadata, &whole.spec));
    }

    #[test]
    fn the_webhook_patches_only_labels_and_annotations_of_the_metadata_and_agrees_with_kube_inject() {
        // The webhook copies and diffs only the labels and annotations when no template sets other metadata; a
        // template that does (finalizers) takes the whole metadata. Either way the patched pod is kube-inject's.
        let with_template = |template: &str| {
            let mut config = InjectionConfig::default();
            config.user_templates = config::parse_templates(&BTreeMap::from([("fin".to_owned(), template.to_owned())]));
            config
        };
        // A template that sets nothing, and one that sets finalizers.
        let (without_finalizers, with_finalizers) = (
            with_template("{}\n"),
            with_template("metadata:\n  finalizers: [example.com/fin]\n"),
        );
        let others = json!({"name": "web", "namespace": "shop", "uid": "u-1", "resourceVersion": "7",
            "finalizers": ["keep"], "generateName": "web-",
            "ownerReferences": [{"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "web-1", "uid": "r-1",
                                 "controller": true}],
            "a/b~c": "x"});
        let label_shapes = [None, Some(json!(null)), Some(json!({})), Some(json!({"app": "web"}))];
        let annotation_shapes = [
            None,
            Some(json!(null)),
            Some(json!({})),
            Some(json!({"team": "a", "prometheus.io/scrape": "true"})),
            Some(json!({"inject.istio.io/templates": "sidecar,fin"})),
        ];
        let mut cases = 0;
        for (config, templated) in [(without_finalizers, false), (with_finalizers, true)] {
            for metadata in [None, Some(json!(null)), Some(json!({})), Some(others.clone())] {
                for labels in &label_shapes {
                    for annotations in &annotation_shapes {
                        let mut p = pod();
                        match &metadata {
                            None => {
                                p.as_object_mut().unwrap().remove("metadata");
                            }
                            Some(m) => p["metadata"] = m.clone(),
                        }
                        if p["metadata"].is_object() {
                            let m = p["metadata"].as_object_mut().unwrap();
                            m.remove("labels");
                            m.remove("annotations");
                            if let Some(l) = labels {
                                m.insert("labels".into(), l.clone());
                            }
                            if let Some(a) = annotations {
                                m.insert("annotations".into(), a.clone());
                            }
                        }
                        let (patch, patched) = webhook(&config, &p).unwrap().expect("injected");
                        let whole = through_inject(&config, &p);
                        assert_eq!(
                            (&patched["metadata"], &patched["spec"]),
                            (&whole.metadata, &whole.spec),
                            "{p}"
                        );
                        let ops: Vec<Value> = serde_json::from_str(&patch).unwrap();
                        for op in &ops {
                            let path = op["path"].as_str().unwrap();
                            let finalizers = templated && path == "/metadata/finalizers";
                            assert!(
                                !path.starts_with("/metadata/")
                                    || path.starts_with("/metadata/labels")
                                    || path.starts_with("/metadata/annotations")
                                    || finalizers,
                                "{path} in the patch of {p}"
                            );
                        }
                        // Re-injecting the injected pod changes nothing.
                        let (again, _) = webhook(&config, &patched).unwrap().expect("injected");
                        assert_eq!(again, "[]", "{patched}");
                        cases += 1;
                    }
                }
            }
        }
        assert_eq!(cases, 2 * 4 * 4 * 5);
    }

    #[test]
    fn probers_are_escaped_as_go_marshals_them_on_both_paths() {
        // Istio writes ISTIO_KUBE_APP_PROBERS with json.Marshal, which escapes `&`, `<` and `>`; a probe path with a
        // query string is ordinary input.
        let mut p = pod();
        p["spec"]["containers"][0]["readinessProbe"] = json!({"httpGet": {"path": "/ready?a=1&b=<2>", "port": 80}});
        let probers = |pod: &Value| {
            env_value(pod, "ISTIO_KUBE_APP_PROBERS")
                .unwrap()
                .as_str()
                .unwrap()
                .to_owned()
        };
        let want = r#"{"/app-health/web/readyz":{"httpGet":{"path":"/ready?a=1\u0026b=\u003c2\u003e","port":80}}}"#;
        let whole = through_inject(&InjectionConfig::default(), &p);
        let whole_pod = json!({"spec": whole.spec});
        assert_eq!(probers(&whole_pod), want);
        assert_eq!(probers(&through_webhook(&InjectionConfig::default(), &p)), want);
    }

    #[test]
    fn metrics_merge_and_probe_rewrite_come_in_istios_order_and_reinjection_changes_nothing() {
        // Istio's postProcessPod merges the metrics annotations (appending ISTIO_PROMETHEUS_ANNOTATIONS) before it
        // rewrites the probes (appending ISTIO_KUBE_APP_PROBERS, or replacing it in place when there is one).
        let mut p = pod();
        p["metadata"]["annotations"] = json!({"prometheus.io/scrape": "true", "prometheus.io/port": "9090"});
        p["spec"]["containers"][0]["readinessProbe"] = json!({"httpGet": {"path": "/ready", "port": 80}});
        let env_names = |pod: &Value| -> Vec<String> {
            proxy_env(pod)
                .iter()
                .filter_map(|e| e["name"].as_str())
                .filter(|n| n.starts_with("ISTIO_KUBE") || n.starts_with("ISTIO_PROM"))
                .map(str::to_owned)
                .collect()
        };
        let config = InjectionConfig::default();
        let once = through_webhook(&config, &p);
        assert_eq!(
            env_names(&once),
            ["ISTIO_PROMETHEUS_ANNOTATIONS", "ISTIO_KUBE_APP_PROBERS"]
        );
        let whole = through_inject(&config, &p);
        assert_eq!(env_names(&json!({"spec": whole.spec})), env_names(&once));
        // Injecting the injected pod again: no patch, and the same pod from kube-inject.
        let (patch, _) = webhook(&config, &once).unwrap().unwrap();
        assert_eq!(patch, "[]");
        let again = through_inject(&config, &json!({"metadata": whole.metadata, "spec": whole.spec}));
        assert_eq!((&again.metadata, &again.spec), (&whole.metadata, &whole.spec));
    }

    const OTEL_PROVIDER: &str = r#"{"name":"otel","opentelemetry":{"service":"collector.obs.svc","port":4317,"serviceAttributeEnrichment":"OTEL_SEMANTIC_CONVENTIONS"}}"#;

    #[test]
    fn otel_resource_attributes_follow_the_pod_on_both_paths() {
        let with_provider = |provider: &str| {
            let mut config = InjectionConfig::default();
            config
                .apply_setting("meshConfig.extensionProviders+", provider)
                .unwrap();
            config
        };
        let semconv = with_provider(OTEL_PROVIDER);
        // The value on the webhook's path and kube-inject's, which must agree, and the env names around it.
        let attributes = |config: &InjectionConfig, pod: &Value| {
            let names = |env: &[Value]| -> Vec<String> {
                env.iter()
                    .filter_map(|e| e["name"].as_str())
                    .map(str::to_owned)
                    .collect()
            };
            let patched = proxy_env(&through_webhook(config, pod));
            let whole = proxy_env(&json!({"spec": through_inject(config, pod).spec}));
            assert_eq!(patched, whole, "the webhook's env is kube-inject's");
            let at = names(&patched).iter().position(|n| n == "OTEL_RESOURCE_ATTRIBUTES");
            if let Some(at) = at {
                assert_eq!(
                    names(&patched)[at - 1],
                    "TRUST_DOMAIN",
                    "after TRUST_DOMAIN, as Istio's template has it"
                );
            }
            at.map(|at| patched[at]["value"].as_str().unwrap().to_owned())
        };
        assert_eq!(
            attributes(&semconv, &pod()).as_deref(),
            Some("service.namespace=shop,service.instance.id=shop.$(POD_NAME).web")
        );
        // The version from the label; the first container stands for the pod.
        let mut p = pod();
        p["metadata"]["labels"]["app.kubernetes.io/version"] = json!("v2");
        p["spec"]["containers"] = json!([{"name": "first", "image": "a"}, {"name": "second", "image": "b"}]);
        assert_eq!(
            attributes(&semconv, &p).as_deref(),
            Some("service.namespace=shop,service.version=v2,service.instance.id=shop.$(POD_NAME).first")
        );
        // The pod's annotations win over the namespace, the label and the container; an empty one counts as unset.
        p["metadata"]["annotations"] = json!({
            "resource.opentelemetry.io/service.namespace": "custom-ns",
            "resource.opentelemetry.io/service.version": "v2.0",
            "resource.opentelemetry.io/service.instance.id": "custom-id",
        });
        assert_eq!(
            attributes(&semconv, &p).as_deref(),
            Some("service.namespace=custom-ns,service.version=v2.0,service.instance.id=custom-id")
        );
        p["metadata"]["annotations"]["resource.opentelemetry.io/service.version"] = json!("");
        assert_eq!(
            attributes(&semconv, &p).as_deref(),
            Some("service.namespace=custom-ns,service.version=v2,service.instance.id=custom-id")
        );
        // A pod of one container without the label: its image's version, whatever a proxy container of the pod's own
        // declares; with two, none. The container is the first but `istio-proxy`.
        let digest = format!("sha256:{}", "0123456789abcdef".repeat(4));
        let mut one = pod();
        one["spec"]["containers"] = json!([
            {"name": "istio-proxy", "image": "auto"},
            {"name": "app", "image": format!("registry:5000/team/app:1.25@{digest}")}]);
        assert_eq!(
            attributes(&semconv, &one),
            Some(format!(
                "service.namespace=shop,service.version=1.25@{digest},service.instance.id=shop.$(POD_NAME).app"
            ))
        );
        one["spec"]["containers"][1]["image"] = json!("registry:5000/team/app:v7");
        assert_eq!(
            attributes(&semconv, &one).as_deref(),
            Some("service.namespace=shop,service.version=v7,service.instance.id=shop.$(POD_NAME).app")
        );
        one["metadata"]["labels"]["app.kubernetes.io/version"] = json!("label");
        assert_eq!(
            attributes(&semconv, &one).as_deref(),
            Some("service.namespace=shop,service.version=label,service.instance.id=shop.$(POD_NAME).app")
        );
        let mut two = pod();
        two["spec"]["containers"] = json!([{"name": "a", "image": "a:1"}, {"name": "b", "image": "b:2"}]);
        assert_eq!(
            attributes(&semconv, &two).as_deref(),
            Some("service.namespace=shop,service.instance.id=shop.$(POD_NAME).a")
        );
        // A container without a name: no instance id (the API server refuses the pod after admission).
        let mut nameless = pod();
        nameless["spec"]["containers"] = json!([{"name": "", "image": "a:1"}]);
        assert_eq!(
            attributes(&semconv, &nameless).as_deref(),
            Some("service.namespace=shop,service.version=1")
        );
        // Re-injecting changes nothing.
        let once = through_webhook(&semconv, &p);
        assert_eq!(webhook(&semconv, &once).unwrap().unwrap().0, "[]");
        // A manifest that names no namespace: no service.namespace (as in Istio's unit test), and the instance id from
        // the namespace kubelet knows.
        let mut bare = pod();
        bare["metadata"].as_object_mut().unwrap().remove("namespace");
        let whole = through_inject(&semconv, &bare);
        assert_eq!(
            env_value(&json!({"spec": whole.spec}), "OTEL_RESOURCE_ATTRIBUTES"),
            Some(json!("service.instance.id=$(POD_NAMESPACE).$(POD_NAME).web"))
        );
        // Before the proxy metadata, as Istio's template writes them.
        let mut with_metadata = semconv.clone();
        with_metadata
            .apply_setting("meshConfig.defaultConfig.proxyMetadata.FOO", "bar")
            .unwrap();
        let names: Vec<String> = proxy_env(&through_webhook(&with_metadata, &pod()))
            .iter()
            .filter_map(|e| e["name"].as_str().map(str::to_owned))
            .collect();
        let at = |name: &str| names.iter().position(|n| n == name).unwrap();
        assert_eq!(at("OTEL_RESOURCE_ATTRIBUTES") + 1, at("FOO"), "{names:?}");
        // Before the network, which Istio moves to the end of the env after rendering its template.
        let mut with_network = semconv.clone();
        with_network.apply_setting("values.global.network", "net1").unwrap();
        let names: Vec<String> = proxy_env(&through_webhook(&with_network, &pod()))
            .iter()
            .filter_map(|e| e["name"].as_str().map(str::to_owned))
            .collect();
        let at = |name: &str| names.iter().position(|n| n == name).unwrap();
        assert!(at("OTEL_RESOURCE_ATTRIBUTES") < at("ISTIO_META_NETWORK"), "{names:?}");
        // One compiled injector, pods one after another: each gets its own values.
        let injector = Injector::compile(semconv.clone());
        for (name, version) in [("a", "1"), ("b", "2"), ("a", "1")] {
            let mut q = pod();
            q["metadata"]["labels"]["app.kubernetes.io/version"] = json!(version);
            q["spec"]["containers"][0]["name"] = json!(name);
            let text = q.to_string();
            let mut submitted = Submitted::from_json(&text).unwrap();
            let PodOutcome::Injected { patch, .. } = inject_pod(&injector, &mut submitted, "shop", None).unwrap()
            else {
                panic!("not injected")
            };
            let want =
                format!("service.namespace=shop,service.version={version},service.instance.id=shop.$(POD_NAME).{name}");
            assert!(String::from_utf8(patch).unwrap().contains(&want), "{want}");
        }
        // Gateways do not get them: Istio's gateway template does not call the function.
        let mut gateway = pod();
        gateway["metadata"]["annotations"][ann::TEMPLATES] = json!("gateway");
        let env = proxy_env(&through_webhook(&semconv, &gateway));
        assert!(
            env.iter().any(|e| e["name"] == "TRUST_DOMAIN"),
            "a gateway's proxy env: {env:?}"
        );
        assert!(!env.iter().any(|e| e["name"] == "OTEL_RESOURCE_ATTRIBUTES"), "{env:?}");
        // Nor proxyless gRPC pods, whose templates do not call it either.
        for template in ["grpc-agent", "grpc-simple"] {
            let mut grpc = pod();
            grpc["metadata"]["annotations"][ann::TEMPLATES] = json!(template);
            let injected = through_webhook(&semconv, &grpc);
            assert!(
                !injected.to_string().contains("OTEL_RESOURCE_ATTRIBUTES"),
                "{template}: {injected}"
            );
        }
        // Not without the provider's enrichment, nor with Istio's canonical enrichment.
        assert_eq!(attributes(&InjectionConfig::default(), &pod()), None);
        let canonical = with_provider(&OTEL_PROVIDER.replace("OTEL_SEMANTIC_CONVENTIONS", "ISTIO_CANONICAL"));
        assert_eq!(attributes(&canonical, &pod()), None);
        assert!(!canonical.mesh.otel_semantic_conventions());
    }

    #[test]
    fn user_templates_call_otel_resource_attributes_as_istios_template_does() {
        // The call in Istio's sidecar template, in a template of one's own: the built-in env var's value, or empty.
        let template = "metadata:\n  annotations:\n    otel: \"{{ otelResourceAttributes .MeshConfig \
                        .ObjectMeta.Annotations .ObjectMeta.Labels .DeploymentMeta.Namespace .Spec.Containers }}\"\n";
        let mut p = pod();
        p["metadata"]["annotations"][ann::TEMPLATES] = json!("sidecar,otel");
        p["metadata"]["labels"]["app.kubernetes.io/version"] = json!("v3");
        for provider in [Some(OTEL_PROVIDER), None] {
            let mut config = InjectionConfig::default();
            if let Some(provider) = provider {
                config
                    .apply_setting("meshConfig.extensionProviders+", provider)
                    .unwrap();
            }
            config.user_templates =
                config::parse_templates(&BTreeMap::from([("otel".to_owned(), template.to_owned())]));
            let injected = through_webhook(&config, &p);
            let built_in = env_value(&injected, "OTEL_RESOURCE_ATTRIBUTES").unwrap_or(json!(""));
            assert_eq!(injected["metadata"]["annotations"]["otel"], built_in);
            assert_eq!(
                built_in,
                json!(if provider.is_some() {
                    "service.namespace=shop,service.version=v3,service.instance.id=shop.$(POD_NAME).web"
                } else {
                    ""
                })
            );
            // A pod that declares its own istio-proxy first and has no version label: the template, given the whole
            // spec, skips the proxy for the container and the image as the built-in value does.
            let mut own = p.clone();
            own["metadata"]["labels"]
                .as_object_mut()
                .unwrap()
                .remove("app.kubernetes.io/version");
            own["spec"]["containers"] =
                json!([{"name": "istio-proxy", "image": "auto"}, {"name": "app", "image": "app:1.25"}]);
            let injected = through_webhook(&config, &own);
            let built_in = env_value(&injected, "OTEL_RESOURCE_ATTRIBUTES").unwrap_or(json!(""));
            assert_eq!(injected["metadata"]["annotations"]["otel"], built_in);
            if provider.is_some() {
                assert_eq!(
                    built_in,
                    json!("service.namespace=shop,service.version=1.25,service.instance.id=shop.$(POD_NAME).app")
                );
            }
            // A manifest that names no namespace (kube-inject): the template is given it empty, as the built-in one.
            let mut bare = p.clone();
            bare["metadata"].as_object_mut().unwrap().remove("namespace");
            let whole = through_inject(&config, &bare);
            let built_in = env_value(&json!({"spec": whole.spec}), "OTEL_RESOURCE_ATTRIBUTES").unwrap_or(json!(""));
            assert_eq!(whole.metadata["annotations"]["otel"], built_in);
            if provider.is_some() {
                assert_eq!(
                    built_in,
                    json!("service.version=v3,service.instance.id=$(POD_NAMESPACE).$(POD_NAME).web")
                );
            }
        }
    }

    #[test]
    fn image_versions_are_tags_digests_or_both() {
        let digest = format!("sha256:{}", "0123456789abcdef".repeat(4));
        let long = "x".repeat(250);
        for (image, version) in [
            ("nginx:1.25", Some("1.25".to_owned())),
            ("docker.io/library/nginx:1.25-alpine", Some("1.25-alpine".to_owned())),
            ("registry:5000/team/app:v7", Some("v7".to_owned())),
            ("Registry.Example-1.com:5000/a.b__c--d/e_f:v7", Some("v7".to_owned())),
            ("registry:5000", Some("5000".to_owned())),
            (&format!("app@{digest}"), Some(digest.clone())),
            (&format!("registry:5000/app:v7@{digest}"), Some(format!("v7@{digest}"))),
            (
                &format!("app@sha512:{}", "ab".repeat(64)),
                Some(format!("sha512:{}", "ab".repeat(64))),
            ),
            ("nginx", None),
            ("registry:5000/team/app", None),
            ("", None),
            (":1.0", None),
            ("app:", None),
            ("app:-bad", None),
            ("app:a b", None),
            (&format!("app:{}", "x".repeat(129)), None),
            // Not a name: uppercase or other characters in a path component, empty components, a leading or doubled
            // separator, longer than 255.
            ("MyApp:1.0", None),
            ("my app:1", None),
            ("/app:1", None),
            ("a//b:1", None),
            ("-app:1", None),
            ("app.:1", None),
            ("a___b:1", None),
            ("ü:v1", None),
            ("-registry/app:1", None),
            (&format!("r/{long}/{long}:1"), None),
            // Not a digest: the wrong length, uppercase, an unknown algorithm.
            ("app@sha256:abc", None),
            (&format!("app@sha256:{}", "0123456789abcdef".repeat(2)), None),
            (&format!("app@sha256:{}", "0123456789ABCDEF".repeat(4)), None),
            (&format!("app@md5:{}", "0123456789abcdef".repeat(2)), None),
            ("app@:0123456789abcdef0123456789abcdef", None),
        ] {
            assert_eq!(
                template::image_version(image).map(|v| v.into_owned()),
                version,
                "{image}"
            );
        }
    }

    #[test]
    fn app_containers_are_joined_with_empty_names_in_their_place() {
        // The shape checks let an empty container name through (the API server refuses it later); Istio's template
        // joins the names with commas whatever they are, and so do both paths here.
        let mut p = pod();
        p["spec"]["containers"] = json!([{"name": ""}, {"name": "b"}, {"name": ""}]);
        let app_containers = |pod: &Value| env_value(pod, "ISTIO_META_APP_CONTAINERS");
        let patched = through_webhook(&InjectionConfig::default(), &p);
        assert_eq!(app_containers(&patched), Some(json!(",b,")));
        let whole = through_inject(&InjectionConfig::default(), &p);
        assert_eq!(app_containers(&json!({"spec": whole.spec})), Some(json!(",b,")));
    }

    #[test]
    fn injecting_twice_changes_nothing() {
        let injected = through_webhook(&InjectionConfig::default(), &pod());
        let twice = through_webhook(&InjectionConfig::default(), &injected);
        assert_eq!(injected, twice);
    }

    #[test]
    fn status_annotation_lists_what_was_injected_in_istio_order() {
        let injected = through_webhook(&InjectionConfig::default(), &pod());
        let status = injected["metadata"]["annotations"][ann::STATUS].as_str().unwrap();
        assert!(
            status.starts_with(r#"{"initContainers":["istio-init","istio-proxy"],"containers":null,"volumes":["#),
            "{status}"
        );
        assert!(
            status.ends_with(r#""imagePullSecrets":null,"revision":"default"}"#),
            "{status}"
        );
    }

    #[test]
    fn pods_of_50000_volumes_and_env_vars_are_injected_whole() {
        // Every list search of the merge, the parse and the strip is indexed, so this takes seconds in a debug
        // build rather than the minutes of per-item scans.
        const N: usize = 50_000;
        let volumes: Vec<Value> = (0..N)
            .map(|i| json!({"name": format!("vol-{i}"), "emptyDir": {}}))
            .collect();
        let env: Vec<Value> = (0..N).map(|i| json!({"name": format!("E{i}"), "value": "1"})).collect();
        let mut p = pod();
        p["spec"]["volumes"] = json!(volumes);
        p["spec"]["containers"][0]["env"] = json!(env);
        let own = |pod: &Value| -> Vec<Value> {
            let all = pod["spec"]["volumes"].as_array().unwrap();
            all.iter()
                .filter(|v| v["name"].as_str().unwrap().starts_with("vol-"))
                .cloned()
                .collect()
        };
        let injected = through_webhook(&InjectionConfig::default(), &p);
        assert_eq!(own(&injected), volumes, "the pod's own volumes, all of them, in order");
        let web = injected["spec"]["containers"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["name"] == "web")
            .unwrap();
        assert_eq!(web["env"], json!(env));
        let whole = through_inject(&InjectionConfig::default(), &p);
        assert_eq!(
            (&injected["metadata"], &injected["spec"]),
            (&whole.metadata, &whole.spec)
        );
        assert_eq!(
            through_webhook(&InjectionConfig::default(), &injected),
            injected,
            "idempotent"
        );

        // A status annotation naming every volume: the templates see the pod without them, and the result is
        // merged over the pod as submitted, as Istio does, so it comes back the same.
        let mut recorded = injected.clone();
        let mut names: Vec<String> = (0..N).map(|i| format!("vol-{i}")).collect();
        names.extend(
            [
                "istio-envoy",
                "istio-data",
                "istio-podinfo",
                "istio-token",
                "istiod-ca-cert",
            ]
            .map(String::from),
        );
        let status = json!({"initContainers": ["istio-init", "istio-proxy"], "volumes": names}).to_string();
        recorded["metadata"]["annotations"][ann::STATUS] = json!(status);
        let reinjected = through_webhook(&InjectionConfig::default(), &recorded);
        assert_eq!(reinjected, injected);
    }

    #[test]
    fn an_unreadable_status_annotation_is_ignored_as_istio_does() {
        let fresh = through_webhook(&InjectionConfig::default(), &pod());
        for status in [
            "{not json",
            "[]",
            "\"x\"",
            r#"{"containers": "web"}"#,
            r#"{"volumes": [1]}"#,
            r#"{"revision": 1}"#,
        ] {
            let mut p = pod();
            p["metadata"]["annotations"][ann::STATUS] = json!(status);
            let injected = through_webhook(&InjectionConfig::default(), &p);
            assert_eq!(injected, fresh, "status {status}: injected as if seen the first time");
        }
        // An injected pod whose status annotation is unreadable: its proxy is taken as the pod's own (Istio's
        // templates merge over it), so nothing is injected twice.
        let mut p = fresh.clone();
        p["metadata"]["annotations"][ann::STATUS] = json!("{not json");
        let again = through_webhook(&InjectionConfig::default(), &p);
        let proxies = again["spec"]["initContainers"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|c| c["name"] == PROXY_NAME);
        assert_eq!(proxies.count(), 1);
    }

    #[test]
    fn bad_traffic_annotation_is_refused_with_its_name() {
        let mut p = pod();
        p["metadata"]["annotations"][ann::EXCLUDE_OUTBOUND_IP_RANGES] = json!("10.0.0.0");
        let err = webhook(&InjectionConfig::default(), &p).unwrap_err().to_string();
        assert!(
            err.contains(ann::EXCLUDE_OUTBOUND_IP_RANGES) && err.contains("excludeIPRanges"),
            "{err}"
        );
    }

    #[test]
    fn the_applications_prometheus_port_is_merged_by_the_agent() {
        let mut p = pod();
        p["metadata"]["annotations"]["prometheus.io/port"] = json!("9090");
        p["metadata"]["annotations"]["prometheus.io/scrape"] = json!("true");
        let injected = through_webhook(&InjectionConfig::default(), &p);
        let a = &injected["metadata"]["annotations"];
        assert_eq!(
            (
                &a["prometheus.io/port"],
                &a["prometheus.io/path"],
                &a["prometheus.io/scrape"]
            ),
            (&json!("15020"), &json!("/stats/prometheus"), &json!("true"))
        );
        let proxy = injected["spec"]["initContainers"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["name"] == PROXY_NAME)
            .unwrap();
        let env = proxy["env"]
            .as_array()
            .unwrap()
            .iter()
            .find(|e| e["name"] == "ISTIO_PROMETHEUS_ANNOTATIONS")
            .unwrap();
        assert_eq!(env["value"], r#"{"scrape":"true","path":"","port":"9090"}"#);
        // Injecting again keeps the application's settings.
        let twice = through_webhook(&InjectionConfig::default(), &injected);
        assert_eq!(twice, injected);
    }

    fn with_templates(templates: &[(&str, &str)]) -> InjectionConfig {
        let map = templates
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        InjectionConfig {
            user_templates: config::parse_templates(&map),
            ..InjectionConfig::default()
        }
    }

    #[test]
    fn user_templates_are_selected_by_annotation_and_merged_after_the_sidecar() {
        let config = with_templates(&[(
            "dns",
            "metadata:\n  annotations:\n    team-of: {{ .DeploymentMeta.Name }}\nspec:\n  dnsConfig:\n    searches: [\"{{ .DeploymentMeta.Namespace }}.global\"]\n  containers:\n  {{- range .Spec.Containers }}\n  - name: {{ .Name }}\n    env: [{name: FROM_TEMPLATE, value: \"yes\"}]\n  {{- end }}\n",
        )]);
        let mut p = pod();
        p["metadata"]["annotations"][ann::TEMPLATES] = json!("sidecar,dns");
        let injected = through_webhook(&config, &p);
        assert_eq!(injected["spec"]["dnsConfig"]["searches"], json!(["shop.global"]));
        assert_eq!(injected["metadata"]["annotations"]["team-of"], "web");
        let web = &injected["spec"]["containers"][0];
        assert_eq!((&web["name"], &web["image"]), (&json!("web"), &json!("nginx")));
        assert_eq!(web["env"], json!([{"name": "FROM_TEMPLATE", "value": "yes"}]));
        // The sidecar is still there, and the user's container is recorded for re-injection.
        assert!(
            injected["spec"]["initContainers"]
                .as_array()
                .unwrap()
                .iter()
                .any(|c| c["name"] == PROXY_NAME)
        );
        assert!(
            injected["metadata"]["annotations"][ann::OVERRIDES]
                .as_str()
                .unwrap()
                .contains("\"web\"")
        );
        let twice = through_webhook(&config, &injected);
        assert_eq!(twice, injected);
    }

    /// The `managedFields` the API server writes on a pod a ReplicaSet creates (kube-controller-manager's entry,
    /// as the kit's v1.36 API server wrote it for this pod).
    fn managed_fields() -> Value {
        json!([{
            "apiVersion": "v1", "fieldsType": "FieldsV1", "manager": "kube-controller-manager", "operation": "Update",
            "time": "2026-12-05T06:56:20Z",
            "fieldsV1": {
                "f:metadata": {"f:generateName": {}, "f:labels": {".": {}, "f:app": {}}},
                "f:spec": {"f:containers": {"k:{\"name\":\"web\"}": {".": {}, "f:image": {}, "f:name": {},
                    "f:ports": {".": {}, "k:{\"containerPort\":80,\"protocol\":\"TCP\"}": {".": {}, "f:containerPort": {}}}}}}
            }
        }])
    }

    #[test]
    fn owner_references_read_as_text_reach_user_templates_whole_and_are_left_alone_otherwise() {
        let owners = json!([
            {"apiVersion": "v1", "kind": "ConfigMap", "name": "keeper", "uid": "u2"},
            {"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "web-7d4b9c", "uid": "u1", "controller": true,
             "blockOwnerDeletion": true}
        ]);
        let mut p = pod();
        p["metadata"]["ownerReferences"] = owners.clone();
        p["metadata"]["generateName"] = json!("web-7d4b9c-");
        // The built-in template: the patch does not touch them, and the patched pod is what kube-inject makes of the
        // whole pod (the workload, from the controller, included).
        let (text, patched) = webhook(&InjectionConfig::default(), &p).unwrap().unwrap();
        assert!(!text.contains("ownerReferences"), "{text}");
        assert_eq!(patched["metadata"]["ownerReferences"], owners);
        let whole = through_inject(&InjectionConfig::default(), &p);
        assert_eq!((&patched["metadata"], &patched["spec"]), (&whole.metadata, &whole.spec));
        // A user's template reads them as the pod has them.
        let config = with_templates(&[(
            "count",
            "metadata:\n  annotations:\n    owners: \"{{ len .ObjectMeta.OwnerReferences }}\"\n",
        )]);
        p["metadata"]["annotations"][ann::TEMPLATES] = json!("sidecar,count");
        let injected = through_webhook(&config, &p);
        assert_eq!(injected["metadata"]["annotations"]["owners"], "2");
        assert_eq!(injected["metadata"]["ownerReferences"], owners);
        assert_eq!(through_inject(&config, &p).metadata, injected["metadata"]);
    }

    #[test]
    fn the_webhook_drops_managed_fields_as_istios_does_and_leaves_them_in_the_pod() {
        let mut p = pod();
        p["metadata"]["managedFields"] = managed_fields();
        // The built-in template: the patch does not touch them, and the patched pod is what kube-inject makes of
        // the whole pod.
        let (text, patched) = webhook(&InjectionConfig::default(), &p).unwrap().unwrap();
        assert!(
            !text.contains("managedFields") && !text.contains("f:metadata"),
            "{text}"
        );
        assert_eq!(patched["metadata"]["managedFields"], managed_fields());
        let whole = through_inject(&InjectionConfig::default(), &p);
        assert_eq!((&patched["metadata"], &patched["spec"]), (&whole.metadata, &whole.spec));
        // A template of the user's does not see them through the webhook, as Istio's webhook sets
        // `pod.ManagedFields = nil` before injecting; kube-inject (Istio's too) keeps them.
        let config = with_templates(&[(
            "count",
            "metadata:\n  annotations:\n    managed-fields: \"{{ len .ObjectMeta.ManagedFields }}\"\n",
        )]);
        p["metadata"]["annotations"][ann::TEMPLATES] = json!("sidecar,count");
        let injected = through_webhook(&config, &p);
        assert_eq!(injected["metadata"]["annotations"]["managed-fields"], "0");
        assert_eq!(injected["metadata"]["managedFields"], managed_fields());
        assert_eq!(
            through_inject(&config, &p).metadata["annotations"]["managed-fields"],
            "1"
        );
    }

    #[test]
    fn a_user_templates_other_metadata_is_merged_as_istio_merges_it() {
        // Istio merges each template into the whole pod in turn, strategically: metadata fields other than labels
        // and annotations too (`finalizers` as a set, `ownerReferences` by uid, anything else replaced, null
        // removing). Expected orders worked by hand from apimachinery's `mergeSlice` and `normalizeElementOrder`.
        let config = with_templates(&[
            (
                "meta",
                "metadata:\n  finalizers: [example.com/cleanup, a]\n  ownerReferences:\n  - {apiVersion: v1, kind: ConfigMap, name: keeper, uid: u2}\n  - {apiVersion: apps/v1, kind: ReplicaSet, name: web, uid: u1, controller: true}\n  generation: 3\n",
            ),
            // A second template, merged into the pod after the first: its null removes the pod's field (merging the
            // templates first would only remove the first template's).
            (
                "more",
                "metadata:\n  finalizers: [example.com/more]\n  generation: null\n",
            ),
            // Not Istio's: a strategic merge would remove the whole metadata (README).
            ("nothing", "metadata: null\n"),
        ]);
        let mut p = pod();
        p["metadata"]["annotations"][ann::TEMPLATES] = json!("sidecar,meta,more,nothing");
        p["metadata"]["finalizers"] = json!(["a", "b"]);
        p["metadata"]["generation"] = json!(1);
        p["metadata"]["ownerReferences"] =
            json!([{"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "web", "uid": "u1"}]);
        let injected = through_webhook(&config, &p);
        assert_eq!(
            injected["metadata"]["finalizers"],
            json!(["example.com/more", "example.com/cleanup", "a", "b"])
        );
        assert_eq!(
            injected["metadata"]["ownerReferences"],
            json!([
                {"apiVersion": "v1", "kind": "ConfigMap", "name": "keeper", "uid": "u2"},
                {"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "web", "uid": "u1", "controller": true}
            ])
        );
        assert!(
            injected["metadata"].get("generation").is_none(),
            "{}",
            injected["metadata"]
        );
        assert_eq!(through_inject(&config, &p).metadata, injected["metadata"]);
        // Injecting again changes nothing.
        assert_eq!(through_webhook(&config, &injected), injected);
        // Template by template, the order is Istio's: pod [a], then [x] gives [x, a], then [a] keeps it (merged
        // first, the templates' [x, a] would go in as [a, x]).
        let order = with_templates(&[
            ("x", "metadata:\n  finalizers: [x]\n"),
            ("a", "metadata:\n  finalizers: [a]\n"),
        ]);
        let mut q = pod();
        q["metadata"]["annotations"][ann::TEMPLATES] = json!("sidecar,x,a");
        q["metadata"]["finalizers"] = json!(["a"]);
        assert_eq!(through_webhook(&order, &q)["metadata"]["finalizers"], json!(["x", "a"]));
        // An empty list a template sets on a pod without one is left out, as Istio's typed pod leaves it out.
        let empty = with_templates(&[("e", "metadata:\n  finalizers: []\n  ownerReferences: []\n")]);
        q["metadata"]["annotations"][ann::TEMPLATES] = json!("sidecar,e");
        q["metadata"].as_object_mut().unwrap().remove("finalizers");
        let (text, injected) = webhook(&empty, &q).unwrap().unwrap();
        assert!(
            !text.contains("/metadata/finalizers") && !text.contains("/metadata/ownerReferences"),
            "{text}"
        );
        assert_eq!(injected["metadata"], through_inject(&empty, &q).metadata);
        assert!(injected["metadata"].get("finalizers").is_none());
        // What the API machinery could not merge is refused, naming the field: from the template, or in the pod.
        for (template, want) in [
            ("metadata: [x]\n", "\"bad\": metadata must be a map"),
            (
                "metadata:\n  finalizers: [1]\n",
                "\"bad\": metadata.finalizers must be a list of strings",
            ),
            (
                "metadata:\n  ownerReferences: [{name: x}]\n",
                "\"bad\": metadata.ownerReferences[0] has no uid",
            ),
            (
                "metadata:\n  ownerReferences: {uid: x}\n",
                "\"bad\": metadata.ownerReferences must be a list",
            ),
        ] {
            let config = with_templates(&[("bad", template)]);
            p["metadata"]["annotations"][ann::TEMPLATES] = json!("sidecar,bad");
            let err = webhook(&config, &p).unwrap_err().to_string();
            assert!(err.contains(want), "{err}");
        }
        p["metadata"]["annotations"][ann::TEMPLATES] = json!("sidecar,meta");
        p["metadata"]["ownerReferences"] = json!([{"name": "web"}]);
        let err = webhook(&config, &p).unwrap_err().to_string();
        assert!(
            err.contains("metadata.ownerReferences[0] has no uid (a string)"),
            "{err}"
        );
        p["metadata"]["finalizers"] = json!([{"a": 1}]);
        let err = webhook(&config, &p).unwrap_err().to_string();
        assert!(err.contains("metadata.finalizers must be a list of strings"), "{err}");
    }

    #[test]
    fn a_failing_user_template_refuses_the_pod_naming_the_template() {
        let config = with_templates(&[("bad", "spec: {{ nosuch .Spec }}"), ("broken", "{{ if .X }}")]);
        for (name, want) in [("bad", "nosuch"), ("broken", "end")] {
            let mut p = pod();
            p["metadata"]["annotations"][ann::TEMPLATES] = json!(format!("sidecar,{name}"));
            let err = webhook(&config, &p).unwrap_err();
            let text = err.to_string();
            assert!(matches!(err, InjectError::Template(_)), "{text}");
            assert!(text.contains(name) && text.contains(want), "{text}");
        }
        let config = with_templates(&[("list", "- not a pod")]);
        let mut p = pod();
        p["metadata"]["annotations"][ann::TEMPLATES] = json!("list");
        assert!(matches!(webhook(&config, &p), Err(InjectError::Template(_))));
    }

    #[test]
    fn unknown_templates_are_refused() {
        let mut p = pod();
        p["metadata"]["annotations"][ann::TEMPLATES] = json!("sidecar,waypoint");
        let err = webhook(&InjectionConfig::default(), &p).unwrap_err();
        assert_eq!(err, InjectError::UnknownTemplate("waypoint".into()));
    }

    #[test]
    fn workloads_are_derived_as_istios_get_deploy_meta_from_pod_does() {
        let of = |meta: Value| {
            let w = Workload::of_pod(&meta);
            (w.kind, w.name, w.api_version)
        };
        let owned = |kind: &str, name: &str, labels: Value| {
            json!({"name": "", "generateName": format!("{name}-"), "labels": labels, "ownerReferences": [
                {"apiVersion": if kind == "Job" { "batch/v1" } else if kind == "ReplicationController" { "v1" } else { "apps/v1" },
                 "kind": kind, "name": name, "controller": true}]})
        };
        let t = |k: &str, n: &str, a: &str| (k.to_owned(), n.to_owned(), a.to_owned());
        // (owner kind, owner name, pod labels) → (workload kind, name, apiVersion).
        let cases = [
            (
                ("ReplicaSet", "web-7d4b9", json!({"pod-template-hash": "7d4b9"})),
                ("Deployment", "web", "apps/v1"),
            ),
            // Istio tests the hash as a suffix and trims it with the dash: without the dash, the name stays whole.
            (
                ("ReplicaSet", "webabc", json!({"pod-template-hash": "abc"})),
                ("Deployment", "webabc", "apps/v1"),
            ),
            (
                ("ReplicaSet", "canaryabc", json!({"rollouts-pod-template-hash": "abc"})),
                ("Rollout", "canaryabc", "v1alpha1"),
            ),
            (
                ("ReplicaSet", "web-7d4b9", json!({"pod-template-hash": "other"})),
                ("ReplicaSet", "web-7d4b9", "apps/v1"),
            ),
            (
                (
                    "ReplicaSet",
                    "canary-6f7c9d",
                    json!({"rollouts-pod-template-hash": "6f7c9d"}),
                ),
                ("Rollout", "canary", "v1alpha1"),
            ),
            (
                (
                    "ReplicationController",
                    "frontend-1",
                    json!({"deploymentconfig": "frontend"}),
                ),
                ("DeploymentConfig", "frontend", "v1"),
            ),
            (("Job", "backup-28930560", json!({})), ("CronJob", "backup", "batch/v1")),
            // A CronJob's Jobs end in 8 to 10 digits.
            (
                ("Job", "backup-28930560123", json!({})),
                ("Job", "backup-28930560123", "batch/v1"),
            ),
            (("StatefulSet", "db", json!({})), ("StatefulSet", "db", "apps/v1")),
        ];
        for ((kind, name, labels), (k, n, a)) in cases {
            assert_eq!(of(owned(kind, name, labels)), t(k, n, a), "{kind} {name}");
        }
        // Only a controller counts, and only for a pod whose name is generated.
        let mut node_owned = owned("Node", "node1", json!({}));
        node_owned["ownerReferences"][0]["controller"] = json!(false);
        node_owned["name"] = json!("mirror-pod");
        assert_eq!(of(node_owned), t("Pod", "mirror-pod", "v1"));
        let mut named = owned("ReplicaSet", "web-7d4b9", json!({"pod-template-hash": "7d4b9"}));
        named["name"] = json!("web-7d4b9-abcde");
        named["generateName"] = json!("");
        assert_eq!(of(named), t("Pod", "web-7d4b9-abcde", "v1"));
    }
}
