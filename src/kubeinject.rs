//! `kube-inject`: sidecar injection over YAML manifests (Pod, Deployment, ReplicaSet, ReplicationController,
//! DaemonSet, StatefulSet, Job, CronJob, OpenShift DeploymentConfig, and Lists of them). Other documents pass
//! through byte for byte.
#![cfg_attr(not(test), deny(clippy::indexing_slicing))]

use serde_json::Value;

use crate::inject::{self, InjectError, Injector, Workload};
use crate::yaml::{YamlError, parse_document, write_document};

/// Why a manifest stream could not be injected.
#[derive(Debug, thiserror::Error)]
pub enum KubeInjectError {
    /// A document is not valid YAML.
    #[error("document {index}: {source}")]
    Yaml {
        /// 1-based document index.
        index: usize,
        /// The parse error.
        source: YamlError,
    },
    /// A pod template cannot be injected.
    #[error("document {index} ({kind} {name}): {source}")]
    Inject {
        /// 1-based document index.
        index: usize,
        /// Kind of the document.
        kind: String,
        /// Name of the document.
        name: String,
        /// Why.
        source: InjectError,
    },
}

/// One pod template that was left alone, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Skipped {
    /// `Kind/name` of the workload.
    pub workload: String,
    /// Namespace of the workload as written (may be empty).
    pub namespace: String,
    /// The deciding rule.
    pub rule: inject::Rule,
}

impl std::fmt::Display for Skipped {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let (kind, name) = self.workload.split_once('/').unwrap_or(("", &self.workload));
        match self.rule {
            // Istio's wording, which scripts grep for.
            inject::Rule::HostNetwork => write!(
                f,
                "Skipping injection because {kind} \"{}/{name}\" has host networking enabled",
                self.namespace
            ),
            ref rule => write!(f, "Skipping injection of {kind} \"{}/{name}\": {rule}", self.namespace),
        }
    }
}

/// The injected stream and the pod templates that were skipped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Output {
    /// The manifests, each document followed by `---`.
    pub text: String,
    /// Pod templates not injected, with the reason.
    pub skipped: Vec<Skipped>,
}

/// Splits a YAML stream into documents on `---` lines (the text of each, borrowed), leaving out documents with
/// nothing but blank lines and comments.
pub fn split_documents(text: &str) -> Vec<&str> {
    let mut docs = Vec::new();
    let (mut start, mut offset) = (0, 0);
    for line in text.split_inclusive('\n') {
        let bare = line.trim_end();
        if bare == "---" || bare.starts_with("--- ") || bare.starts_with("---\t") {
            docs.push(text.get(start..offset).unwrap_or_default());
            start = offset + line.len();
        }
        offset += line.len();
    }
    docs.push(text.get(start..).unwrap_or_default());
    docs.retain(|d| {
        d.lines()
            .any(|l| !l.trim().is_empty() && !l.trim_start().starts_with('#'))
    });
    docs
}

/// Where a kind keeps its pod template, as a JSON pointer.
pub fn template_pointer(kind: &str) -> Option<&'static str> {
    match kind {
        "Deployment"
        | "ReplicaSet"
        | "ReplicationController"
        | "DaemonSet"
        | "StatefulSet"
        | "Job"
        | "DeploymentConfig" => Some("/spec/template"),
        "CronJob" => Some("/spec/jobTemplate/spec/template"),
        _ => None,
    }
}

/// Where kube-inject reads and writes pod metadata and spec for a kind. For a CronJob, Istio's kube-inject uses the
/// *job template's* metadata with the pod template's spec; we do the same so output matches `istioctl kube-inject`.
fn pod_pointers(kind: &str) -> Option<(&'static str, &'static str)> {
    match kind {
        "Pod" => Some(("/metadata", "/spec")),
        "CronJob" => Some(("/spec/jobTemplate/metadata", "/spec/jobTemplate/spec/template/spec")),
        _ => template_pointer(kind).map(|_| ("/spec/template/metadata", "/spec/template/spec")),
    }
}

/// Injects every pod template of a YAML stream.
pub fn inject_stream(injector: &Injector, text: &str) -> Result<Output, KubeInjectError> {
    let mut out = String::with_capacity(text.len() + text.len() / 2 + 16 * 1024);
    let mut skipped = Vec::new();
    for (i, doc) in split_documents(text).iter().enumerate() {
        let index = i + 1;
        let mut value = parse_document(doc).map_err(|source| KubeInjectError::Yaml {
            index,
            source: match source {
                YamlError::Parse { message, .. } => YamlError::Parse { index, message },
                other => other,
            },
        })?;
        let changed = inject_object(injector, &mut value, &mut skipped).map_err(|(kind, name, source)| {
            KubeInjectError::Inject {
                index,
                kind,
                name,
                source,
            }
        })?;
        if changed {
            write_document(&mut out, &value).map_err(|source| KubeInjectError::Yaml { index, source })?;
        } else {
            out.push_str(doc);
            if !doc.ends_with('\n') {
                out.push('\n');
            }
        }
        out.push_str("---\n");
    }
    Ok(Output { text: out, skipped })
}

type ObjectError = (String, String, InjectError);

/// Injects the pod template(s) of one object in place; returns whether anything changed. An object that is not
/// injected (skipped, or without a pod spec) is left as it was; after an injection error its pod template may be
/// gone, so callers refuse the whole object.
pub fn inject_object(injector: &Injector, object: &mut Value, skipped: &mut Vec<Skipped>) -> Result<bool, ObjectError> {
    let kind = object["kind"].as_str().unwrap_or_default().to_owned();
    let name = object
        .pointer("/metadata/name")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_owned();
    if kind == "List" {
        let mut changed = false;
        for item in object
            .get_mut("items")
            .and_then(Value::as_array_mut)
            .into_iter()
            .flatten()
        {
            changed |= inject_object(injector, item, skipped)?;
        }
        return Ok(changed);
    }
    let namespace = object
        .pointer("/metadata/namespace")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_owned();
    let Some((meta_ptr, spec_ptr)) = pod_pointers(&kind) else {
        return Ok(false);
    };
    let workload = if kind == "Pod" {
        Workload::of_pod(&object["metadata"])
    } else {
        Workload {
            name: name.clone(),
            namespace: namespace.clone(),
            kind: kind.clone(),
            api_version: object["apiVersion"].as_str().unwrap_or_default().to_owned(),
        }
    };
    let err = |e| (kind.clone(), name.clone(), e);
    // The pod's metadata and spec are moved out (not copied) while they are read, and put back unless replaced.
    let taken_metadata = object.pointer_mut(meta_ptr).map(std::mem::take);
    let taken_spec = object.pointer_mut(spec_ptr).map(std::mem::take);
    let restore = |object: &mut Value, metadata: Option<Value>, spec: Option<Value>| {
        for (pointer, value) in [(meta_ptr, metadata), (spec_ptr, spec)] {
            if let (Some(slot), Some(value)) = (object.pointer_mut(pointer), value) {
                *slot = value;
            }
        }
    };
    let empty = Value::Object(Default::default());
    // Read (and injected) as Go's types decode it; the metadata as written is what a skipped object keeps.
    let decoded = taken_metadata.as_ref().and_then(nulls_as_empty_strings);
    let metadata = decoded
        .as_ref()
        .or(taken_metadata.as_ref())
        .filter(|m| m.is_object())
        .unwrap_or(&empty);
    let Some(spec) = taken_spec.as_ref().filter(|s| s.is_object()) else {
        restore(object, taken_metadata, taken_spec);
        return Err(err(InjectError::InvalidPod(format!(
            "{kind} has no pod spec at {spec_ptr}"
        ))));
    };
    let decision = inject::decide(injector.config(), metadata, spec, &namespace);
    if !decision.inject {
        skipped.push(Skipped {
            workload: format!("{kind}/{name}"),
            namespace: namespace.clone(),
            rule: decision.rule,
        });
        restore(object, taken_metadata, taken_spec);
        return Ok(false);
    }
    // Handed over, not copied: on an injection error the caller drops the object (the stream is refused).
    let injected = inject::inject_owned(
        injector,
        decoded.or(taken_metadata).filter(Value::is_object).unwrap_or(empty),
        taken_spec.unwrap_or_default(),
        &workload,
        None,
    )
    .map_err(err)?;
    set_pointer(object, meta_ptr, injected.metadata);
    set_pointer(object, spec_ptr, injected.spec);
    Ok(true)
}

/// A copy of a manifest's pod `metadata` with its labels and annotations of null value (`sidecar.istio.io/inject:`
/// with nothing after it) as empty strings, which is how Go decodes them (`istioctl kube-inject`, and the API server
/// when the manifest is applied); `None` when there is none.
pub fn nulls_as_empty_strings(metadata: &Value) -> Option<Value> {
    const MAPS: [&str; 2] = ["labels", "annotations"];
    let has_null = |key: &str| {
        metadata
            .get(key)
            .and_then(Value::as_object)
            .is_some_and(|m| m.values().any(Value::is_null))
    };
    if !MAPS.iter().any(|key| has_null(key)) {
        return None;
    }
    let mut decoded = metadata.clone();
    for key in MAPS {
        if let Some(map) = decoded.get_mut(key).and_then(Value::as_object_mut) {
            for value in map.values_mut().filter(|v| v.is_null()) {
                *value = Value::String(String::new());
            }
        }
    }
    Some(decoded)
}

/// Sets the value at a JSON pointer, creating missing parent objects.
fn set_pointer(root: &mut Value, pointer: &str, value: Value) {
    let mut current = root;
    let parts: Vec<&str> = pointer.split('/').skip(1).collect();
    for (i, part) in parts.iter().enumerate() {
        if !current.is_object() {
            *current = Value::Object(Default::default());
        }
        let Some(map) = current.as_object_mut() else {
            return;
        };
        if i + 1 == parts.len() {
            map.insert((*part).to_owned(), value);
            return;
        }
        current = map.entry(*part).or_insert_with(|| Value::Object(Default::default()));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::inject::InjectionConfig;

    #[test]
    fn documents_split_on_separator_lines_only() {
        let docs = split_documents("a: 1\n---\nb: '---'\n--- \n# only a comment\n---\nc: 3\n");
        assert_eq!(docs, vec!["a: 1\n", "b: '---'\n", "c: 3\n"]);
    }

    #[test]
    fn other_kinds_pass_through_unchanged() {
        let text = "apiVersion: v1\nkind: Service\nmetadata:\n  name: x   # keep me\n";
        let out = inject_stream(&Injector::compile(InjectionConfig::default()), text).unwrap();
        assert_eq!(out.text, format!("{text}---\n"));
    }

    #[test]
    fn host_network_pods_are_skipped_with_the_reason() {
        let text = "apiVersion: v1\nkind: Pod\nmetadata: {name: p}\nspec:\n  hostNetwork: true\n  containers: [{name: c, image: i}]\n";
        let out = inject_stream(&Injector::compile(InjectionConfig::default()), text).unwrap();
        assert_eq!(
            out.skipped,
            vec![Skipped {
                workload: "Pod/p".into(),
                namespace: String::new(),
                rule: inject::Rule::HostNetwork
            }]
        );
        assert_eq!(
            out.skipped[0].to_string(),
            "Skipping injection because Pod \"/p\" has host networking enabled"
        );
    }

    #[test]
    fn objects_not_injected_are_left_as_they_were() {
        let injector = Injector::compile(InjectionConfig::default());
        for text in [
            // skipped by the decision
            "kind: Deployment\nmetadata: {name: d}\nspec:\n  template:\n    metadata: {labels: {sidecar.istio.io/inject: \"false\"}}\n    spec: {containers: [{name: c, image: i}]}\n",
            // refused: no pod spec
            "kind: Deployment\nmetadata: {name: d}\nspec:\n  template:\n    metadata: {labels: {a: b}}\n    spec: 3\n",
        ] {
            let original = crate::yaml::parse_document(text).unwrap();
            let mut object = original.clone();
            let mut skipped = Vec::new();
            let result = inject_object(&injector, &mut object, &mut skipped);
            assert!(!matches!(result, Ok(true)), "{text}");
            assert_eq!(object, original, "{text}");
        }
    }

    #[test]
    fn null_labels_and_annotations_read_as_empty_strings_as_go_decodes_them() {
        let injector = Injector::compile(InjectionConfig::default());
        let manifest = |inject_label: &str, version: &str| {
            format!(
                "kind: Deployment\nmetadata: {{name: d}}\nspec:\n  template:\n    metadata:\n      labels:\n        app: web\n\
                 {inject_label}        version:{version}\n      annotations:\n        sidecar.istio.io/inject: \"false\"\n\
                 \x20       note:{version}\n    spec: {{containers: [{{name: c, image: i}}]}}\n"
            )
        };
        // The label, present even empty, replaces the annotation: the pod is injected by the default policy.
        let with_nulls = manifest("        sidecar.istio.io/inject:\n", "");
        let with_empty = manifest("        sidecar.istio.io/inject: \"\"\n", " \"\"");
        let out = inject_stream(&injector, &with_nulls).unwrap();
        assert!(out.skipped.is_empty(), "{:?}", out.skipped);
        assert_eq!(out.text, inject_stream(&injector, &with_empty).unwrap().text);
        let injected = crate::yaml::parse_document(out.text.trim_end_matches("---\n")).unwrap();
        let meta = &injected["spec"]["template"]["metadata"];
        assert_eq!(meta["labels"]["version"], "");
        assert_eq!(meta["labels"]["sidecar.istio.io/inject"], "");
        assert_eq!(meta["annotations"]["note"], "");
        // check-inject reads them alike: no warning about an unrecognised value.
        let checks = crate::cli::check_inject(injector.config(), &with_nulls, "default", &Default::default()).unwrap();
        assert_eq!(checks.len(), 1);
        assert!(checks[0].inject && checks[0].warning.is_none(), "{:?}", checks[0]);
        // A skipped object keeps its nulls as written.
        let skipped = manifest("", "").replace("app: web", "sidecar.istio.io/inject: \"false\"");
        let out = inject_stream(&injector, &skipped).unwrap();
        assert_eq!(out.text, format!("{skipped}---\n"));
        assert_eq!(out.skipped.len(), 1);
        // Other values that are not strings are still refused, naming the field.
        let number = manifest("        sidecar.istio.io/inject: \"\"\n", " 1");
        let error = inject_stream(&injector, &number).unwrap_err().to_string();
        assert!(
            error.contains("metadata.labels[\"version\"] must be a string, not a number"),
            "{error}"
        );
    }

    #[test]
    fn hostile_nesting_is_refused_not_a_crash() {
        let injector = Injector::compile(InjectionConfig::default());
        for text in [
            format!("kind: ConfigMap\ndata:\n  a: {}\n", "[".repeat(40_000)),
            format!(
                "kind: ConfigMap\ndata:\n  a: {}1{}\n",
                "[".repeat(40_000),
                "]".repeat(40_000)
            ),
            format!("kind: Pod\nspec:\n{}a\n", "- ".repeat(40_000)),
        ] {
            assert!(matches!(
                inject_stream(&injector, &text),
                Err(KubeInjectError::Yaml { index: 1, .. })
            ));
        }
    }
}
