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
    let decoded = taken_metadata.as_ref().and_then(labels_as_go_decodes);
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

/// A copy of a manifest's pod `metadata` with its labels and annotations as Go decodes them into its
/// `map[string]string` (`istioctl kube-inject` reads manifests with `sigs.k8s.io/yaml` into Kubernetes' types, which
/// turns a scalar into the text of the string it is decoded into): null (`sidecar.istio.io/inject:` with nothing
/// after it) as `""`, a boolean as `true` or `false`, an integer in decimal, a float as Go's
/// `strconv.FormatFloat(f, 'g', -1, 32)`; `None` when every value is a string already (or not a scalar, which the
/// injection refuses, naming it).
pub fn labels_as_go_decodes(metadata: &Value) -> Option<Value> {
    const MAPS: [&str; 2] = ["labels", "annotations"];
    let coerced = |v: &Value| match v {
        Value::Null => Some(String::new()),
        Value::Bool(b) => Some(b.to_string()),
        Value::Number(n) if n.is_f64() => n.as_f64().map(go_float32),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    };
    let any = |key: &str| {
        metadata
            .get(key)
            .and_then(Value::as_object)
            .is_some_and(|m| m.values().any(|v| coerced(v).is_some()))
    };
    if !MAPS.iter().any(|key| any(key)) {
        return None;
    }
    let mut decoded = metadata.clone();
    for key in MAPS {
        if let Some(map) = decoded.get_mut(key).and_then(Value::as_object_mut) {
            for value in map.values_mut() {
                if let Some(text) = coerced(value) {
                    *value = Value::String(text);
                }
            }
        }
    }
    Some(decoded)
}

/// Go's `strconv.FormatFloat(f, 'g', -1, 32)`: the shortest digits that read back as the same float32, with an
/// exponent (`1.5e+07`, at least two digits) when the decimal exponent is below -4 or at least 6, else without
/// (`0.0001`, `123456`, `1`).
fn go_float32(f: f64) -> String {
    // The float32 nearest to f, as Go rounds it.
    let x = f as f32;
    if !x.is_finite() {
        return if x.is_nan() {
            "NaN"
        } else if x > 0.0 {
            "+Inf"
        } else {
            "-Inf"
        }
        .to_owned();
    }
    if x == 0.0 {
        return if x.is_sign_negative() { "-0" } else { "0" }.to_owned();
    }
    // Rust's exponent form has the shortest digits that round-trip, as Go's (`-1.2345e-7`; the tests pin it to Go's
    // output).
    let text = format!("{x:e}");
    let (mantissa, exponent) = text.split_once('e').unwrap_or((&text, "0"));
    let exp: i32 = exponent.parse().unwrap_or(0);
    let digits: String = mantissa.chars().filter(char::is_ascii_digit).collect();
    let mut out = String::with_capacity(digits.len() + 8);
    if mantissa.starts_with('-') {
        out.push('-');
    }
    // The point goes after `dp` digits.
    let dp = exp + 1;
    let nd = digits.len() as i32;
    if !(-4..6).contains(&exp) {
        let (first, rest) = digits.split_at(1);
        out.push_str(first);
        if !rest.is_empty() {
            out.push('.');
            out.push_str(rest);
        }
        out.push_str(if exp < 0 { "e-" } else { "e+" });
        if exp.abs() < 10 {
            out.push('0');
        }
        out.push_str(&exp.abs().to_string());
    } else if dp <= 0 {
        out.push_str("0.");
        out.extend(std::iter::repeat_n('0', (-dp) as usize));
        out.push_str(&digits);
    } else if nd <= dp {
        out.push_str(&digits);
        out.extend(std::iter::repeat_n('0', (dp - nd) as usize));
    } else {
        let (int, frac) = digits.split_at(dp as usize);
        out.push_str(int);
        out.push('.');
        out.push_str(frac);
    }
    out
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
        // A null among the annotations only; a Pod; a List of an injected and a skipped pod.
        let pod = |name: &str, labels: &str| {
            format!(
                "{{kind: Pod, metadata: {{name: {name}, labels: {labels}, annotations: {{note: null}}}}, \
                     spec: {{containers: [{{name: c, image: i}}]}}}}"
            )
        };
        let pod_text = format!("{}\n", pod("p", "{app: web}"));
        let out = inject_stream(&injector, &pod_text).unwrap();
        assert!(out.skipped.is_empty(), "{:?}", out.skipped);
        let injected = crate::yaml::parse_document(out.text.trim_end_matches("---\n")).unwrap();
        assert_eq!(injected["metadata"]["annotations"]["note"], "");
        let list = format!(
            "{{kind: List, items: [{}, {}]}}\n",
            pod("a", "{app: a, sidecar.istio.io/inject: null}"),
            pod("b", "{app: b, sidecar.istio.io/inject: \"false\"}")
        );
        let out = inject_stream(&injector, &list).unwrap();
        let injected = crate::yaml::parse_document(out.text.trim_end_matches("---\n")).unwrap();
        let items = injected["items"].as_array().unwrap();
        assert_eq!(items[0]["metadata"]["labels"]["sidecar.istio.io/inject"], "");
        assert!(items[0]["metadata"]["annotations"]["sidecar.istio.io/status"].is_string());
        assert_eq!(items[1]["metadata"]["annotations"]["note"], Value::Null);
        assert_eq!(out.skipped.len(), 1, "{:?}", out.skipped);
    }

    #[test]
    fn scalar_labels_and_annotations_read_as_the_text_go_decodes_them_to() {
        let injector = Injector::compile(InjectionConfig::default());
        // Unquoted, as people write them: a boolean opt-in, a numeric version, an integer annotation.
        let text = "kind: Pod\nmetadata:\n  name: p\n  labels: {sidecar.istio.io/inject: true, version: 1.0, build: 42}\n\
                    \x20 annotations: {sidecar.istio.io/inject: false, ratio: 1.5e-5, big: 1234567.0}\n\
                    spec: {containers: [{name: c, image: i}]}\n";
        let out = inject_stream(&injector, text).unwrap();
        assert!(out.skipped.is_empty(), "{:?}", out.skipped);
        let injected = crate::yaml::parse_document(out.text.trim_end_matches("---\n")).unwrap();
        let meta = &injected["metadata"];
        assert_eq!(meta["labels"]["sidecar.istio.io/inject"], "true");
        assert_eq!(meta["labels"]["version"], "1");
        assert_eq!(meta["labels"]["build"], "42");
        assert_eq!(meta["annotations"]["ratio"], "1.5e-05");
        assert_eq!(meta["annotations"]["big"], "1.234567e+06");
        // `false` unquoted opts out as "false" does.
        let out = inject_stream(&injector, &text.replace("inject: true", "inject: false")).unwrap();
        assert_eq!(out.skipped.len(), 1);
        // check-inject reads them alike: `true` opts in with no warning; an empty (or null) revision label names no
        // revision.
        let checks = crate::cli::check_inject(injector.config(), text, "default", &Default::default()).unwrap();
        assert!(checks[0].inject && checks[0].warning.is_none(), "{:?}", checks[0]);
        assert_eq!(checks[0].webhook.as_deref(), Some("default"), "{:?}", checks[0]);
        let with_rev = text.replace("build: 42", "istio.io/rev: null");
        let checks = crate::cli::check_inject(injector.config(), &with_rev, "default", &Default::default()).unwrap();
        assert_eq!(checks[0].webhook, None, "{:?}", checks[0]);
        // A list or a map is no string in Go either: refused, naming the field.
        let error = inject_stream(&injector, &text.replace("build: 42", "build: [4, 2]"))
            .unwrap_err()
            .to_string();
        assert!(
            error.contains("metadata.labels[\"build\"] must be a string, not a list"),
            "{error}"
        );
    }

    #[test]
    fn floats_are_written_as_gos_format_float_g_32_writes_them() {
        // strconv.FormatFloat(f, 'g', -1, 32): shortest float32 digits; an exponent of two digits or more when the
        // decimal exponent is below -4 or at least 6.
        for (f, go) in [
            (0.0, "0"),
            (-0.0, "-0"),
            (1.0, "1"),
            (1.5, "1.5"),
            (-2.5, "-2.5"),
            (0.1, "0.1"),
            (1.1, "1.1"),
            (100.0, "100"),
            (123456.0, "123456"),
            (1e6, "1e+06"),
            (1234567.0, "1.234567e+06"),
            (16777217.0, "1.6777216e+07"),
            (1e21, "1e+21"),
            (0.0001, "0.0001"),
            (0.00001, "1e-05"),
            (1.5e-5, "1.5e-05"),
            (2.71875, "2.71875"),
            (1e-45, "1e-45"),
            (-1.5e-7, "-1.5e-07"),
            (1e39, "+Inf"),
            (-1e39, "-Inf"),
        ] {
            assert_eq!(go_float32(f), go, "{f}");
        }
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
