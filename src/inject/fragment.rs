//! Stage 2 of the pipeline: the pod-dependent fragment. Reads what the templates need from the stripped pod (its
//! annotations, validated; the templates it selects; its effective proxy configuration; its own declarations of
//! template containers, taken out as overrides) and renders the selected templates into one [`Fragment`].
#![cfg_attr(not(test), deny(clippy::indexing_slicing))]

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::sync::LazyLock;

use serde_json::{Map, Value};

use super::annotations as ann;
use super::compile::{Injector, StandIns};
use super::config::InjectionConfig;
use super::template::{self, Fragment};
use super::{InjectError, PROXY_NAME, TEMPLATE_CONTAINERS, TemplateKind, Workload, at, merge, proxy_config, validate};

/// UID and GID of the proxy unless the pod's own `istio-proxy` (or OpenShift) says otherwise.
pub const DEFAULT_PROXY_ID: i64 = 1337;

/// `REDIRECT`, `TPROXY` or `NONE`: the pod's annotation, else the proxy configuration's.
pub fn interception_mode<'a>(annotations: &'a Map<String, Value>, proxy_config: &'a Map<String, Value>) -> &'a str {
    annotations
        .get(ann::INTERCEPTION_MODE)
        .and_then(Value::as_str)
        .or_else(|| proxy_config.get("interceptionMode").and_then(Value::as_str))
        .unwrap_or("REDIRECT")
}

/// Whether the application waits for the proxy: the proxy configuration's or the mesh's setting.
pub fn hold(config: &InjectionConfig, proxy_config: &Map<String, Value>) -> bool {
    proxy_config
        .get("holdApplicationUntilProxyStarts")
        .and_then(Value::as_bool)
        == Some(true)
        || config.proxy.hold_application_until_proxy_starts
}

/// An empty map, for a pod without labels or annotations.
static EMPTY: LazyLock<Map<String, Value>> = LazyLock::new(Map::new);

/// The pod's labels or annotations (the shape checks refused anything but a map of strings).
pub fn string_map<'a>(metadata: &'a Value, key: &str) -> &'a Map<String, Value> {
    metadata.get(key).and_then(Value::as_object).unwrap_or(&EMPTY)
}

/// The pod as the templates read it.
pub struct Pod<'a> {
    /// The pod's annotations (validated).
    pub annotations: &'a Map<String, Value>,
    /// The pod's labels.
    pub labels: &'a Map<String, Value>,
    /// The templates the pod selects, in order.
    pub kinds: Vec<TemplateKind>,
    /// Effective proxy configuration: Istio defaults < mesh `defaultConfig` < the pod's `proxy.istio.io/config`.
    pub proxy_config: Cow<'a, Map<String, Value>>,
    /// `PROXY_CONFIG`: the effective fields that differ from Istio's defaults.
    pub proxy_config_json: Cow<'a, str>,
    /// `REDIRECT`, `TPROXY` or `NONE`.
    pub interception_mode: String,
    /// Hold the application until the proxy is ready.
    pub hold: bool,
    /// The `sidecar` template is among the selected ones.
    pub sidecar: bool,
    /// The proxy is a native sidecar.
    pub native: bool,
    /// The spec without the pod's own declarations of template containers: the pod's own, not copied, when it
    /// declares none.
    pub spec: Cow<'a, Value>,
    /// The spec with them: what Istio's templates range over; `None` when the pod declares none (then it is
    /// `spec`).
    pub full_spec: Option<Value>,
    /// The pod's own declarations of template containers, with the list they came from.
    pub overrides: Vec<(&'static str, Value)>,
    /// OpenShift: the top of the namespace's UID range.
    pub openshift_uid: Option<i64>,
    /// UID the proxy runs as.
    pub proxy_uid: i64,
    /// GID the proxy runs as.
    pub proxy_gid: i64,
}

/// The templates a pod selects (`inject.istio.io/templates`, default `sidecar`).
pub fn templates(injector: &Injector, annotations: &Map<String, Value>) -> Result<Vec<TemplateKind>, InjectError> {
    let names = annotations
        .get(ann::TEMPLATES)
        .and_then(Value::as_str)
        .unwrap_or("sidecar");
    let mut out = Vec::new();
    for name in names.split(',').map(str::trim).filter(|n| !n.is_empty()) {
        out.push(if injector.config().user_templates.contains_key(name) {
            TemplateKind::User(name.to_owned())
        } else {
            match name {
                "sidecar" => TemplateKind::Sidecar,
                "gateway" => TemplateKind::Gateway,
                "grpc-agent" => TemplateKind::GrpcAgent,
                "grpc-simple" => TemplateKind::GrpcSimple,
                other => return Err(InjectError::UnknownTemplate(other.to_owned())),
            }
        });
    }
    if out.is_empty() {
        out.push(TemplateKind::Sidecar);
    }
    Ok(out)
}

fn bool_annotation(annotations: &Map<String, Value>, key: &str) -> Option<bool> {
    match annotations.get(key).and_then(Value::as_str) {
        Some("true") => Some(true),
        Some("false") => Some(false),
        _ => None,
    }
}

fn openshift_uid(injector: &Injector, namespace_annotations: Option<&BTreeMap<String, String>>) -> Option<i64> {
    if !injector.config().openshift {
        return None;
    }
    let range = namespace_annotations?.get("openshift.io/sa.scc.uid-range")?;
    let (start, size) = range.split_once('/')?;
    Some(start.trim().parse::<i64>().ok()? + size.trim().parse::<i64>().ok()? - 1)
}

/// The pod's own containers named like template containers (`names`), taken out of `spec` (with `image: auto`
/// dropped and resources in canonical form).
pub fn take_overrides(spec: &mut Value, names: &[&str]) -> Vec<(&'static str, Value)> {
    let mut overrides = Vec::new();
    for field in ["initContainers", "containers"] {
        if let Some(items) = spec.get_mut(field).and_then(Value::as_array_mut) {
            if !items
                .iter()
                .any(|i| at(i, "name").as_str().is_some_and(|n| names.contains(&n)))
            {
                continue;
            }
            let mut kept = Vec::new();
            for mut item in items.drain(..) {
                if at(&item, "name").as_str().is_some_and(|n| names.contains(&n)) {
                    if at(&item, "image") == "auto"
                        && let Some(m) = item.as_object_mut()
                    {
                        m.remove("image");
                    }
                    if let Some(resources) = item.get_mut("resources") {
                        crate::quantity::canonicalize_resources(resources);
                    }
                    overrides.push((field, item));
                } else {
                    kept.push(item);
                }
            }
            *items = kept;
        }
    }
    overrides
}

impl<'a> Pod<'a> {
    /// Reads the stripped pod: validates its annotations, picks its templates and its proxy configuration, and
    /// takes its own declarations of template containers out of `spec`.
    pub fn read(
        injector: &'a Injector,
        metadata: &'a Value,
        mut spec: Cow<'a, Value>,
        namespace_annotations: Option<&BTreeMap<String, String>>,
    ) -> Result<Self, InjectError> {
        let annotations = string_map(metadata, "annotations");
        let labels = string_map(metadata, "labels");
        let checked = validate::annotations(annotations)?;
        let kinds = templates(injector, annotations)?;
        let (proxy_config, proxy_config_json) = match checked.proxy_config {
            Some(fields) => {
                let effective = proxy_config::merge(injector.mesh_proxy_config(), &fields);
                let json = proxy_config::to_env_json(&effective, injector.proxy_defaults());
                (Cow::Owned(effective), Cow::Owned(json))
            }
            None => (
                Cow::Borrowed(injector.mesh_proxy_config()),
                Cow::Borrowed(injector.mesh_proxy_config_json()),
            ),
        };
        let hold = hold(injector.config(), &proxy_config);
        let interception_mode = interception_mode(annotations, &proxy_config).to_owned();

        // What Istio's templates range over: the pod without an earlier injection, with the user's own containers.
        // A copy only when taking the overrides changes the spec (a pod declaring its own istio-proxy, ...).
        let declares_template_containers = ["initContainers", "containers"].iter().any(|field| {
            spec.get(field).and_then(Value::as_array).is_some_and(|items| {
                items
                    .iter()
                    .any(|i| at(i, "name").as_str().is_some_and(|n| TEMPLATE_CONTAINERS.contains(&n)))
            })
        });
        let full_spec = declares_template_containers.then(|| spec.as_ref().clone());
        let mut overrides = if declares_template_containers {
            take_overrides(spec.to_mut(), TEMPLATE_CONTAINERS)
        } else {
            Vec::new()
        };
        let openshift_uid = openshift_uid(injector, namespace_annotations);
        if openshift_uid.is_some() {
            // On OpenShift the proxy runs as the top of the namespace's UID range: a UID the pod sets on its own
            // istio-proxy is dropped from the override (and so from what is recorded for re-injection), as Istio does.
            for (_, o) in overrides.iter_mut().filter(|(_, o)| at(o, "name") == PROXY_NAME) {
                if let Some(sc) = o.get_mut("securityContext").and_then(Value::as_object_mut) {
                    sc.remove("runAsUser");
                }
            }
        }
        let sidecar = kinds.contains(&TemplateKind::Sidecar);
        let native = sidecar
            && bool_annotation(annotations, ann::NATIVE_SIDECAR)
                .unwrap_or_else(|| injector.config().native_sidecars_by_default());
        let tproxy = interception_mode == "TPROXY";
        let own_proxy = overrides.iter().find(|(_, o)| at(o, "name") == PROXY_NAME);
        let own_id = |field: &str| {
            own_proxy
                .and_then(|(_, o)| o.get("securityContext"))
                .and_then(|sc| sc.get(field))
                .and_then(Value::as_i64)
        };
        let proxy_uid = own_id("runAsUser")
            .or(openshift_uid.filter(|_| !tproxy))
            .unwrap_or(DEFAULT_PROXY_ID);
        let proxy_gid = own_id("runAsGroup").unwrap_or(DEFAULT_PROXY_ID);
        Ok(Self {
            annotations,
            labels,
            kinds,
            proxy_config,
            proxy_config_json,
            interception_mode,
            hold,
            sidecar,
            native,
            spec,
            full_spec,
            overrides,
            openshift_uid,
            proxy_uid,
            proxy_gid,
        })
    }
}

/// Renders the pod's templates, in order, into one fragment (a later template's items merge over an earlier
/// one's of the same name). With `stand_ins` (the webhook, for a pod not injected before), a pod that takes a
/// built-in template's compiled parts unchanged gets stand-ins for them, and their text for stage 5.
pub fn render<'c>(
    injector: &'c Injector,
    pod: &Pod,
    workload: &Workload,
    metadata: &Value,
    stand_ins: bool,
) -> Result<(Fragment, Option<StandIns<'c>>), InjectError> {
    let ctx = template::Context {
        settings: template::Settings {
            config: injector.config(),
            annotations: pod.annotations,
            reads: None,
            proxy_config: &pod.proxy_config,
            proxy_config_json: &pod.proxy_config_json,
            interception_mode: &pod.interception_mode,
            native: pod.native,
            hold: pod.hold,
            openshift_uid: pod.openshift_uid,
            proxy_uid: pod.proxy_uid,
            proxy_gid: pod.proxy_gid,
        },
        labels: pod.labels,
        spec: &pod.spec,
        full_spec: pod.full_spec.as_ref().unwrap_or(pod.spec.as_ref()),
        workload,
    };
    let mergeable = stand_ins
        && pod.kinds.len() == 1
        && pod.overrides.is_empty()
        && !pod.annotations.contains_key(ann::USER_VOLUME)
        && !pod.annotations.contains_key(ann::USER_VOLUME_MOUNT);
    let mut stand_ins = None;
    let mut fragment = Fragment::default();
    for kind in &pod.kinds {
        let builtin = matches!(kind, TemplateKind::Sidecar | TemplateKind::Gateway);
        if builtin && let Some((mut f, s)) = injector.stand_ins(&ctx, *kind == TemplateKind::Gateway, mergeable) {
            stand_ins = Some(s);
            if pod.native {
                f.proxy_to_init_containers();
            }
            merge_fragment(&mut fragment, f);
            continue;
        }
        let f = match kind {
            TemplateKind::Sidecar => {
                let mut f = template::sidecar(&ctx, injector.sidecar_parts(&ctx.settings));
                add_user_volumes(&ctx, &mut f)?;
                // A native sidecar is an init container in the template itself, so a later template that names
                // `istio-proxy` under containers adds a container of that name, as Istio's does.
                if pod.native {
                    f.proxy_to_init_containers();
                }
                f
            }
            TemplateKind::Gateway => {
                let mut f = template::gateway(&ctx, injector.gateway_parts(&ctx.settings));
                add_user_volumes(&ctx, &mut f)?;
                f
            }
            TemplateKind::GrpcAgent => {
                let mut f = template::grpc_agent(&ctx);
                add_user_volumes(&ctx, &mut f)?;
                f
            }
            TemplateKind::GrpcSimple => template::grpc_simple(&ctx),
            TemplateKind::User(name) => {
                let parsed = injector
                    .config()
                    .user_templates
                    .get(name)
                    .ok_or_else(|| InjectError::UnknownTemplate(name.clone()))?
                    .as_ref()
                    .map_err(|e| InjectError::Template(e.to_string()))?;
                template::user(&ctx, name, parsed, metadata).map_err(InjectError::Template)?
            }
        };
        merge_fragment(&mut fragment, f);
    }
    Ok((fragment, stand_ins))
}

fn merge_fragment(into: &mut Fragment, f: Fragment) {
    append(&mut into.labels, f.labels);
    append(&mut into.annotations, f.annotations);
    for (list, add) in [
        (&mut into.init_containers, f.init_containers),
        (&mut into.containers, f.containers),
        (&mut into.volumes, f.volumes),
    ] {
        if list.is_empty() && distinct_names(&add) {
            // Nothing to merge with, within the list or before it: the items as they are.
            *list = add;
            continue;
        }
        for item in add {
            if let Some(existing) = list.iter_mut().find(|e| at(e, "name") == at(&item, "name")) {
                merge::strategic(existing, item);
            } else {
                list.push(item);
            }
        }
    }
    for s in f.image_pull_secrets {
        if !into.image_pull_secrets.contains(&s) {
            into.image_pull_secrets.push(s);
        }
    }
    if let Some(sc) = f.pod_security_context {
        match &mut into.pod_security_context {
            Some(existing) => merge::strategic(existing, sc),
            None => into.pod_security_context = Some(sc),
        }
    }
    append(&mut into.metadata_patches, f.metadata_patches);
    if f.spec_rest.is_empty() {
        return;
    }
    let mut rest = Value::Object(std::mem::take(&mut into.spec_rest));
    merge::strategic(&mut rest, Value::Object(f.spec_rest));
    if let Value::Object(m) = rest {
        into.spec_rest = m;
    }
}

/// `more` after the items of `into`: moved when `into` is empty (the first fragment's lists), not copied.
fn append<T>(into: &mut Vec<T>, more: Vec<T>) {
    if into.is_empty() {
        *into = more;
    } else {
        into.extend(more);
    }
}

/// Whether no two of `items` have the same `name` (a missing one counting as null, as [`merge_fragment`] compares
/// them): then none is merged into another. Lists longer than a few items are not checked (`false`).
fn distinct_names(items: &[Value]) -> bool {
    const CHECKED: usize = 16;
    static NULL: Value = Value::Null;
    if items.len() > CHECKED {
        return false;
    }
    let mut names = [&NULL; CHECKED];
    for (slot, item) in names.iter_mut().zip(items) {
        *slot = at(item, "name");
    }
    let names = names.get(..items.len()).unwrap_or_default();
    names
        .iter()
        .enumerate()
        .all(|(i, a)| names.get(i + 1..).unwrap_or_default().iter().all(|b| a != b))
}

/// Volumes and proxy mounts from `sidecar.istio.io/userVolume` and `userVolumeMount` (shape-checked, and each
/// mount naming a volume the pod will have).
fn add_user_volumes(ctx: &template::Context, fragment: &mut Fragment) -> Result<(), InjectError> {
    if !ctx.annotations.contains_key(ann::USER_VOLUME) && !ctx.annotations.contains_key(ann::USER_VOLUME_MOUNT) {
        return Ok(());
    }
    let pod_volumes: Vec<&str> = ctx
        .spec
        .get("volumes")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|v| v.get("name").and_then(Value::as_str))
        .collect();
    let template_volumes: Vec<&str> = fragment
        .volumes
        .iter()
        .filter_map(|v| v.get("name").and_then(Value::as_str))
        .collect();
    let (volumes, mounts) = validate::user_volumes(ctx.annotations, &pod_volumes, &template_volumes)?;
    fragment.volumes.extend(volumes);
    if let Some(list) = fragment
        .containers
        .iter_mut()
        .find(|c| c.get("name").and_then(Value::as_str) == Some(PROXY_NAME))
        .and_then(|proxy| proxy.get_mut("volumeMounts"))
        .and_then(Value::as_array_mut)
    {
        list.extend(mounts);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn volumes(items: Value) -> Fragment {
        Fragment {
            volumes: serde_json::from_value(items).unwrap(),
            ..Fragment::default()
        }
    }

    /// Items of one name are merged whether they come from one fragment or two, and items without a name count as
    /// of one name (null), as the list is searched by `name`.
    #[test]
    fn fragments_merge_items_of_one_name_within_and_across_them() {
        let mut into = Fragment::default();
        merge_fragment(&mut into, volumes(json!([{"name": "a", "x": 1}, {"name": "b"}])));
        assert_eq!(into.volumes, [json!({"name": "a", "x": 1}), json!({"name": "b"})]);

        let mut into = Fragment::default();
        merge_fragment(
            &mut into,
            volumes(json!([{"name": "a", "x": 1}, {"name": "b"}, {"name": "a", "y": 2}])),
        );
        assert_eq!(
            into.volumes,
            [json!({"name": "a", "x": 1, "y": 2}), json!({"name": "b"})]
        );

        let mut into = Fragment::default();
        merge_fragment(&mut into, volumes(json!([{"x": 1}, {"name": "b"}, {"y": 2}])));
        assert_eq!(into.volumes, [json!({"x": 1, "y": 2}), json!({"name": "b"})]);

        merge_fragment(&mut into, volumes(json!([{"name": "c"}, {"name": "b", "z": 3}])));
        assert_eq!(
            into.volumes,
            [
                json!({"x": 1, "y": 2}),
                json!({"name": "b", "z": 3}),
                json!({"name": "c"})
            ]
        );

        let many: Vec<Value> = (0..20).map(|i| json!({"name": format!("v{}", i % 19)})).collect();
        let mut into = Fragment::default();
        merge_fragment(&mut into, volumes(Value::Array(many)));
        assert_eq!(into.volumes.len(), 19);
    }

    #[test]
    fn names_are_distinct_only_when_no_two_items_share_one() {
        assert!(distinct_names(&[]));
        assert!(distinct_names(&[
            json!({"name": "a"}),
            json!({"name": "b"}),
            json!("not a map")
        ]));
        assert!(!distinct_names(&[
            json!({"name": "a"}),
            json!({"name": "b"}),
            json!({"name": "a"})
        ]));
        assert!(!distinct_names(&[
            json!({}),
            json!({"name": "b"}),
            json!({"name": null})
        ]));
        assert!(!distinct_names(&[json!(1), json!({})]));
        let long: Vec<Value> = (0..17).map(|i| json!({"name": i})).collect();
        assert!(!distinct_names(&long), "lists over 16 items are not checked");
    }
}
