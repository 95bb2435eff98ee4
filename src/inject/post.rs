//! Stage 4 of the pipeline: post-processing of the merged pod. Containers are put in Istio's order, TPROXY gets its
//! root proxy, application probes are rewritten through the agent, and the metadata gets the fragment's labels and
//! annotations, metrics merging and the bookkeeping annotations (`sidecar.istio.io/status`,
//! `proxy.istio.io/overrides`).
#![cfg_attr(not(test), deny(clippy::indexing_slicing))]

use serde_json::{Map, Value, json};

use super::annotations as ann;
use super::compile::Injector;
use super::merge::{self, Merged};
use super::overlay::{Changes, StringMap};
use super::{InjectError, PROXY_NAME, at, probes, prometheus};

const PROBERS_ENV: &str = "ISTIO_KUBE_APP_PROBERS";

/// Post-processes the spec: container order, TPROXY, probes. Returns whether the proxy's env gained
/// `ISTIO_KUBE_APP_PROBERS` (for [`metadata`] to put the metrics entry before it, as Istio's order has them).
pub fn spec(
    injector: &Injector,
    spec: &mut Value,
    annotations: &Map<String, Value>,
    hold_first: bool,
    tproxy: bool,
    rewrite_probes: bool,
    previous_probers: &probes::Probers,
) -> bool {
    reorder(spec, hold_first);
    if tproxy
        && let Some(sc) = find_container_mut(spec, PROXY_NAME)
            .and_then(|c| c.get_mut("securityContext"))
            .and_then(Value::as_object_mut)
    {
        // TPROXY needs the proxy to run as root whatever the pod asked for.
        sc.insert("runAsUser".into(), json!(0));
    }
    rewrite_probes && probes_through_agent(injector, annotations, spec, previous_probers)
}

/// Merges what user templates set in the metadata besides labels and annotations, template by template, as Istio
/// merges each template into the pod (strategically: `finalizers` as a set, `ownerReferences` by uid), which needs
/// the pod's lists of the shape the API machinery merges.
fn template_metadata(meta: &mut Map<String, Value>, patches: Vec<Map<String, Value>>) -> Result<(), InjectError> {
    for patch in patches {
        let lists: Vec<&str> = ["finalizers", "ownerReferences"]
            .into_iter()
            .filter(|k| patch.contains_key(*k))
            .collect();
        let merged_into: Vec<&str> = lists
            .iter()
            .copied()
            .filter(|k| patch.get(*k).is_some_and(Value::is_array))
            .collect();
        if let Some(why) = merge::unmergeable_metadata(meta, &merged_into) {
            return Err(InjectError::InvalidPod(format!(
                "{why}, which a template's metadata is merged into"
            )));
        }
        let mut whole = Value::Object(std::mem::take(meta));
        merge::strategic(&mut whole, Value::Object(patch));
        if let Value::Object(m) = whole {
            *meta = m;
        }
        // An empty list a template leaves is left out, as Istio's typed pod leaves it out.
        for k in lists {
            if meta.get(k).and_then(Value::as_array).is_some_and(Vec::is_empty) {
                meta.remove(k);
            }
        }
    }
    Ok(())
}

/// Writes the metadata: what user templates set besides labels and annotations ([`template_metadata`]), the
/// fragment's labels (where the pod has none) and annotations, metrics merging (which may give the proxy
/// `ISTIO_PROMETHEUS_ANNOTATIONS`, before the `ISTIO_KUBE_APP_PROBERS` that [`spec`] or
/// [`pod_probes_through_agent`] appended when
/// `probers_appended`, as Istio orders them), and the bookkeeping annotations. `merged_port` is the agent's status
/// port from the effective proxy configuration.
pub fn metadata(
    injector: &Injector,
    metadata: &mut Value,
    merged: &mut Merged,
    merged_port: &str,
    probers_appended: bool,
) -> Result<(), InjectError> {
    let meta = metadata
        .as_object_mut()
        .ok_or_else(|| InjectError::InvalidPod("metadata must be an object".into()))?;
    template_metadata(meta, std::mem::take(&mut merged.metadata_patches))?;
    labels(object_entry(meta, "labels")?, merged);
    annotations(
        injector,
        object_entry(meta, "annotations")?,
        merged,
        merged_port,
        probers_appended,
    )
}

/// [`metadata`] for a pod whose metadata changes only in its labels and annotations: the changes over the pod's own.
pub fn metadata_changes(
    injector: &Injector,
    changes: &mut Changes,
    merged: &mut Merged,
    merged_port: &str,
    probers_appended: bool,
) -> Result<(), InjectError> {
    debug_assert!(
        merged.metadata_patches.is_empty(),
        "templates that set other metadata take the whole metadata (`metadata`)"
    );
    labels(&mut changes.labels, merged);
    annotations(
        injector,
        &mut changes.annotations,
        merged,
        merged_port,
        probers_appended,
    )
}

/// The fragment's labels, where the pod has none (or an empty one).
fn labels(labels: &mut impl StringMap, merged: &mut Merged) {
    for (k, v) in merged.labels.drain(..) {
        if labels.get_str(&k).is_none_or(str::is_empty) {
            labels.set(k, v);
        }
    }
}

/// The fragment's annotations, metrics merging (whose entry in the proxy's env goes into `merged`'s proxy) and the
/// bookkeeping annotations.
fn annotations(
    injector: &Injector,
    annotations: &mut impl StringMap,
    merged: &mut Merged,
    merged_port: &str,
    probers_appended: bool,
) -> Result<(), InjectError> {
    for (k, v) in merged.annotations.drain(..) {
        annotations.set(k, v);
    }
    // The agent serves merged metrics on the proxy config's status port.
    if let Some(merge) = prometheus::apply(annotations, injector.config().mesh.enable_prometheus_merge, merged_port)?
        && let Some(env) = merge.env
        && let Some(proxy) = find_container_mut(&mut merged.spec, PROXY_NAME)
        && let Some(list) = proxy
            .as_object_mut()
            .map(|p| p.entry("env").or_insert_with(|| json!([])))
            .and_then(Value::as_array_mut)
    {
        list.retain(|e| at(e, "name") != prometheus::SCRAPE_CONFIG_ENV);
        // Istio merges the metrics before it rewrites the probes: the entry goes before the probers appended.
        let at_end =
            list.len() - usize::from(probers_appended && list.last().is_some_and(|e| at(e, "name") == PROBERS_ENV));
        list.insert(at_end, json!({"name": prometheus::SCRAPE_CONFIG_ENV, "value": env}));
    }
    annotations.set(ann::STATUS, std::mem::take(&mut merged.status));
    if let Some(overrides) = merged.overrides.take() {
        annotations.set(ann::OVERRIDES, overrides);
    }
    Ok(())
}

/// `map[key]` as an object, replacing whatever else was there (the shape checks refused non-objects already).
fn object_entry<'a>(map: &'a mut Map<String, Value>, key: &str) -> Result<&'a mut Map<String, Value>, InjectError> {
    let entry = map.entry(key).or_insert_with(|| json!({}));
    if !entry.is_object() {
        *entry = json!({});
    }
    entry
        .as_object_mut()
        .ok_or_else(|| InjectError::InvalidPod(format!("metadata.{key} must be an object")))
}

fn find_container_mut<'a>(spec: &'a mut Value, name: &str) -> Option<&'a mut Value> {
    let spec = spec.as_object_mut()?;
    let mut found = None;
    for (field, list) in spec.iter_mut() {
        if (field == "containers" || field == "initContainers")
            && let Some(items) = list.as_array_mut()
            && let Some(c) = items.iter_mut().find(|c| at(c, "name") == name)
        {
            found = Some(c);
            break;
        }
    }
    found
}

/// Moves the named container to the front or back of a list.
fn move_container(list: &mut Vec<Value>, name: &str, first: bool) {
    if let Some(pos) = list.iter().position(|c| at(c, "name") == name) {
        let c = list.remove(pos);
        if first {
            list.insert(0, c);
        } else {
            list.push(c);
        }
    }
}

/// Istio's container order. The proxy is the last container (so `kubectl exec` defaults to the application) or
/// the first when it must start before the application. With a native sidecar, init containers run
/// `istio-init`/`istio-validation`, then the proxy, then the pod's own, so those are in the mesh; otherwise the
/// iptables setup runs last, so it does not cut off the pod's own init containers.
pub fn reorder(spec: &mut Value, hold: bool) {
    if let Some(list) = spec.get_mut("containers").and_then(Value::as_array_mut) {
        move_container(list, PROXY_NAME, hold);
    }
    if let Some(list) = spec.get_mut("initContainers").and_then(Value::as_array_mut) {
        if list.iter().any(|c| at(c, "name") == PROXY_NAME) {
            for name in ["enable-core-dump", PROXY_NAME, "istio-validation", "istio-init"] {
                move_container(list, name, true);
            }
        } else {
            for name in ["enable-core-dump", "istio-validation", "istio-init"] {
                move_container(list, name, false);
            }
        }
    }
}

fn bool_annotation(annotations: &Map<String, Value>, key: &str) -> Option<bool> {
    match annotations.get(key).and_then(Value::as_str) {
        Some("true") => Some(true),
        Some("false") => Some(false),
        _ => None,
    }
}

/// The agent's status port for rewritten probes, `None` when probes are not rewritten (turned off for the mesh or
/// the pod, or a status port of 0).
fn probe_port(injector: &Injector, annotations: &Map<String, Value>) -> Option<probes::StatusPorts> {
    let config = injector.config();
    let enabled = bool_annotation(annotations, ann::REWRITE_APP_HTTP_PROBERS).unwrap_or(config.rewrite_app_http_probe);
    let status_port: i64 = annotations
        .get(ann::STATUS_PORT)
        .and_then(Value::as_str)
        .and_then(|p| p.parse().ok())
        .unwrap_or(config.proxy.status_port);
    (enabled && status_port != 0).then_some(probes::StatusPorts {
        pod: status_port,
        mesh: config.proxy.status_port,
    })
}

/// Rewrites application probes through the agent and hands the originals to the proxy.
fn probes_through_agent(
    injector: &Injector,
    annotations: &Map<String, Value>,
    spec: &mut Value,
    previous: &probes::Probers,
) -> bool {
    let Some(status) = probe_port(injector, annotations) else {
        return false;
    };
    let mut probers = probes::Probers::new();
    for field in ["initContainers", "containers"] {
        for c in spec.get_mut(field).and_then(Value::as_array_mut).into_iter().flatten() {
            let is_app = at(c, "name") != PROXY_NAME && (field == "containers" || at(c, "restartPolicy") == "Always");
            if is_app {
                probes::rewrite_container(c, status, previous, &mut probers);
            }
        }
    }
    !probers.is_empty() && give_probers(spec, probes::probers_json(&probers))
}

/// [`spec`]'s probes for a pod seen the first time whose own containers are not in `items`, the injected lists
/// (see `patch::Lists`): the handlers of the pod's containers (all of them applications; it has no init
/// containers) are read in place and what they become is written as JSON text, with no copy of them; the proxy in
/// `items` gets the probers. Returns, by the containers' index, the handlers that changed, in key order, with their
/// text, and whether the proxy's env gained `ISTIO_KUBE_APP_PROBERS`.
pub fn pod_probes_through_agent(
    injector: &Injector,
    annotations: &Map<String, Value>,
    spec: &Value,
    items: &mut Value,
) -> (Vec<probes::Rewritten>, bool) {
    let Some(status) = probe_port(injector, annotations) else {
        return (Vec::new(), false);
    };
    let mut probers = probes::ProberTexts::new();
    let mut rewritten = Vec::new();
    for (i, c) in spec
        .get("containers")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .enumerate()
    {
        let (Some(name), Some(container)) = (c.get("name").and_then(Value::as_str), c.as_object()) else {
            continue;
        };
        let changed = probes::rewritten_texts(name, container, status, &mut probers);
        if !changed.is_empty() {
            rewritten.resize_with(i + 1, Vec::new);
            if let Some(slot) = rewritten.get_mut(i) {
                *slot = changed;
            }
        }
    }
    let appended = !probers.is_empty() && give_probers(items, probes::prober_texts_json(&probers));
    (rewritten, appended)
}

/// Gives the proxy in `spec` the probers' JSON `value` as `ISTIO_KUBE_APP_PROBERS` (last in its env); whether it
/// did.
fn give_probers(spec: &mut Value, value: String) -> bool {
    let mut appended = false;
    for field in ["initContainers", "containers"] {
        for c in spec.get_mut(field).and_then(Value::as_array_mut).into_iter().flatten() {
            if at(c, "name") == PROXY_NAME
                && let Some(env) = c.get_mut("env").and_then(Value::as_array_mut)
            {
                env.retain(|e| at(e, "name") != PROBERS_ENV);
                env.push(json!({"name": PROBERS_ENV, "value": value}));
                appended = true;
            }
        }
    }
    appended
}
