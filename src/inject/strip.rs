//! Stage 1 of the pipeline: take out what an earlier injection added (the items its `sidecar.istio.io/status`
//! annotation lists) and put back the user's own declarations it recorded (`proxy.istio.io/overrides`), so the
//! templates see the pod as its author wrote it and injecting twice changes nothing.
#![cfg_attr(not(test), deny(clippy::indexing_slicing))]

use std::borrow::Cow;
use std::collections::HashSet;

use serde_json::{Value, json};

use super::annotations as ann;
use super::{InjectError, PROXY_NAME, annotation, at, probes};

/// The pod with an earlier injection taken out.
pub struct Stripped<'m, 's> {
    /// Metadata without the status and overrides annotations: the pod's own, not copied, when it has no status
    /// annotation that reads as one (a pod seen the first time).
    pub metadata: Cow<'m, Value>,
    /// The spec without the previously injected items, with the recorded overrides restored: the pod's own, not
    /// copied, for a pod seen the first time.
    pub spec: Cow<'s, Value>,
    /// The spec as submitted, when the pod was injected before: the template is merged under it, so earlier
    /// injected containers act as the user's overrides (as Istio does). `None` for a pod seen the first time.
    pub submitted: Option<Value>,
    /// The agent's previous probers, so already-rewritten probes keep their originals.
    pub previous_probers: probes::Probers,
}

/// What an earlier injection added, from its `sidecar.istio.io/status` annotation.
#[derive(Default)]
pub struct PreviousInjection {
    /// Init container names.
    pub init_containers: Vec<String>,
    /// Container names.
    pub containers: Vec<String>,
    /// Volume names.
    pub volumes: Vec<String>,
    /// Image pull secret names.
    pub image_pull_secrets: Vec<String>,
}

impl PreviousInjection {
    /// Reads a status annotation's text as Istio's `SidecarInjectionStatus` (Go's `json.Unmarshal`): a JSON object
    /// (or `null`) whose lists are lists of strings (or `null`) and whose `revision` is a string.
    pub fn parse(status: &str) -> Result<Self, InjectError> {
        let invalid = |message: String| InjectError::InvalidAnnotation {
            annotation: ann::STATUS.into(),
            message,
        };
        let status: Value = serde_json::from_str(status).map_err(|e| invalid(format!("not valid JSON: {e}")))?;
        if !(status.is_object() || status.is_null()) {
            return Err(invalid("not a JSON object".into()));
        }
        if !(at(&status, "revision").is_string() || at(&status, "revision").is_null()) {
            return Err(invalid("revision must be a string".into()));
        }
        let list = |field: &str| {
            string_list(at(&status, field)).ok_or_else(|| invalid(format!("{field} must be a list of strings")))
        };
        Ok(Self {
            init_containers: list("initContainers")?,
            containers: list("containers")?,
            volumes: list("volumes")?,
            image_pull_secrets: list("imagePullSecrets")?,
        })
    }
}

/// A list of strings (null: none); `None` for anything else.
fn string_list(v: &Value) -> Option<Vec<String>> {
    match v {
        Value::Null => Some(Vec::new()),
        Value::Array(items) => items.iter().map(|s| s.as_str().map(str::to_owned)).collect(),
        _ => None,
    }
}

/// Takes an earlier injection out of the pod (`metadata` must be an object or null, `spec` an object).
pub fn previous_injection<'m, 's>(
    metadata: Cow<'m, Value>,
    spec: Cow<'s, Value>,
) -> Result<Stripped<'m, 's>, InjectError> {
    let metadata = if metadata.is_object() {
        metadata
    } else {
        Cow::Owned(json!({}))
    };
    // A status annotation that does not read as one is ignored and the pod injected as if seen the first time, as
    // Istio does (its `injectionStatus` returns nil on an unmarshalling error).
    let previous = annotation(&metadata, ann::STATUS).and_then(|status| PreviousInjection::parse(status).ok());
    let Some(previous) = previous else {
        return Ok(Stripped {
            metadata,
            spec,
            submitted: None,
            previous_probers: probes::Probers::new(),
        });
    };
    let mut metadata = metadata.into_owned();
    let mut spec = spec.into_owned();
    let submitted = Some(spec.clone());
    let previous_probers = remove_injected(&mut spec, &previous);
    if let Some(overrides) = annotation(&metadata, ann::OVERRIDES) {
        restore_overrides(&mut spec, overrides)?;
    }
    if let Some(a) = metadata.get_mut("annotations").and_then(Value::as_object_mut) {
        a.remove(ann::STATUS);
        a.remove(ann::OVERRIDES);
    }
    Ok(Stripped {
        metadata: Cow::Owned(metadata),
        spec: Cow::Owned(spec),
        submitted,
        previous_probers,
    })
}

/// Removes the listed items; returns the probers the removed proxy was given.
fn remove_injected(spec: &mut Value, previous: &PreviousInjection) -> probes::Probers {
    let mut probers = probes::Probers::new();
    for (field, removed) in [
        ("initContainers", &previous.init_containers),
        ("containers", &previous.containers),
        ("volumes", &previous.volumes),
        ("imagePullSecrets", &previous.image_pull_secrets),
    ] {
        if let Some(items) = spec.get_mut(field).and_then(Value::as_array_mut) {
            // A set: the annotation can list as many names as the pod has items.
            let removed: HashSet<&str> = removed.iter().map(String::as_str).collect();
            items.retain(|item| {
                let name = at(item, "name").as_str().unwrap_or_default();
                let drop = removed.contains(name);
                if drop && name == PROXY_NAME {
                    for env in at(item, "env").as_array().into_iter().flatten() {
                        if at(env, "name") == "ISTIO_KUBE_APP_PROBERS"
                            && let Some(Ok(Value::Object(map))) = at(env, "value").as_str().map(serde_json::from_str)
                        {
                            probers.extend(map);
                        }
                    }
                }
                !drop
            });
        }
    }
    probers
}

/// Puts back the user's own declarations of template containers that the earlier injection recorded.
fn restore_overrides(spec: &mut Value, overrides: &str) -> Result<(), InjectError> {
    let overrides: Value = serde_json::from_str(overrides).map_err(|e| InjectError::InvalidAnnotation {
        annotation: ann::OVERRIDES.into(),
        message: format!("not valid JSON: {e}"),
    })?;
    for field in ["initContainers", "containers"] {
        let recorded = at(&overrides, field).as_array().map(Vec::as_slice).unwrap_or_default();
        if recorded.is_empty() {
            continue;
        }
        let list = spec
            .as_object_mut()
            .ok_or_else(|| InjectError::InvalidPod("spec is not an object".into()))?
            .entry(field)
            .or_insert_with(|| json!([]));
        let Some(items) = list.as_array_mut() else {
            continue;
        };
        // The names present, as JSON text (equal exactly when the names are), so that each recorded container is
        // checked in O(1): the annotation can record as many as the pod has.
        let mut present: HashSet<String> = items.iter().map(|i| at(i, "name").to_string()).collect();
        for c in recorded {
            if present.insert(at(c, "name").to_string()) {
                items.push(c.clone());
            }
        }
    }
    Ok(())
}
