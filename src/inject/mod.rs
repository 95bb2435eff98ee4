//! Sidecar injection: the decision ([`decide`]) and the mutation ([`inject`]) of a pod, exactly as Istio's injector
//! does them (its golden corpus is the specification), as pure functions of the pod and an [`InjectionConfig`].
//!
//! The mutation works on the pod as JSON (`metadata` and `spec`): the chosen template's fragment is the base and the
//! pod is merged over it with Kubernetes' strategic-merge rules, so a user-declared `istio-proxy` container
//! overrides the template field by field; then probes are rewritten, containers placed (native or classic layout)
//! and the bookkeeping annotations written.
#![cfg_attr(not(test), deny(clippy::indexing_slicing))]

pub mod annotations;
pub mod config;
pub mod decision;
pub mod gojson;
pub mod gotemplate;
pub mod merge;
pub mod probes;
pub mod prometheus;
pub mod proxy_config;
pub mod shape;
pub mod template;
pub mod validate;

use std::collections::BTreeMap;

use serde_json::{Map, Value, json};

use annotations as ann;
pub use config::InjectionConfig;
pub use decision::{Decision, Route, Rule, decide, webhook_route};

/// Name of the injected proxy container.
pub const PROXY_NAME: &str = "istio-proxy";

/// Names of containers the templates inject; a pod's own container of one of these names overrides it.
const TEMPLATE_CONTAINERS: &[&str] = &[PROXY_NAME, "istio-init", "istio-validation", "enable-core-dump"];

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
    /// `kubernetes://apis/<apiVersion>/namespaces/<ns>/<kind>s/<name>`, as `ISTIO_META_OWNER`.
    pub fn owner_uri(&self) -> String {
        let ns = if self.namespace.is_empty() {
            "default"
        } else {
            &self.namespace
        };
        format!(
            "kubernetes://apis/{}/namespaces/{ns}/{}s/{}",
            self.api_version,
            self.kind.to_ascii_lowercase(),
            self.name
        )
    }

    /// The workload of a pod from its controller owner reference (a ReplicaSet made by a Deployment counts as the
    /// Deployment, a Job made by a CronJob as the CronJob), or the pod itself when it has none.
    pub fn of_pod(metadata: &Value) -> Self {
        let namespace = metadata["namespace"].as_str().unwrap_or_default().to_owned();
        let owners = metadata["ownerReferences"].as_array().cloned().unwrap_or_default();
        let controller = owners
            .iter()
            .find(|o| o["controller"].as_bool() == Some(true))
            .or_else(|| owners.first());
        let Some(owner) = controller else {
            let name = metadata["name"]
                .as_str()
                .filter(|n| !n.is_empty())
                .map(str::to_owned)
                .or_else(|| {
                    metadata["generateName"]
                        .as_str()
                        .map(|g| g.trim_end_matches('-').to_owned())
                })
                .unwrap_or_default();
            return Self {
                name,
                namespace,
                kind: "Pod".into(),
                api_version: "v1".into(),
            };
        };
        let mut workload = Self {
            name: owner["name"].as_str().unwrap_or_default().to_owned(),
            namespace,
            kind: owner["kind"].as_str().unwrap_or_default().to_owned(),
            api_version: owner["apiVersion"].as_str().unwrap_or_default().to_owned(),
        };
        let hash = metadata.pointer("/labels/pod-template-hash").and_then(Value::as_str);
        if workload.kind == "ReplicaSet"
            && let Some(hash) = hash
            && let Some(deployment) = workload.name.strip_suffix(&format!("-{hash}"))
        {
            workload.name = deployment.to_owned();
            workload.kind = "Deployment".into();
            workload.api_version = "apps/v1".into();
        } else if workload.kind == "Job"
            && let Some((cronjob, stamp)) = workload.name.rsplit_once('-')
            && (8..=11).contains(&stamp.len())
            && stamp.bytes().all(|b| b.is_ascii_digit())
        {
            // Jobs created by a CronJob are named <cronjob>-<scheduled time in minutes>.
            workload.name = cronjob.to_owned();
            workload.kind = "CronJob".into();
            workload.api_version = "batch/v1".into();
        }
        workload
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

#[derive(Clone, PartialEq, Eq)]
enum TemplateKind {
    Sidecar,
    Gateway,
    GrpcAgent,
    GrpcSimple,
    /// One of the user's templates (`spec.injection.templates`); it wins over a built-in of the same name.
    User(String),
}

fn templates(config: &InjectionConfig, annotations: &Map<String, Value>) -> Result<Vec<TemplateKind>, InjectError> {
    let names = annotations
        .get(ann::TEMPLATES)
        .and_then(Value::as_str)
        .unwrap_or("sidecar");
    let mut out = Vec::new();
    for name in names.split(',').map(str::trim).filter(|n| !n.is_empty()) {
        out.push(if config.user_templates.contains_key(name) {
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

/// `value[key]` without indexing: Null when `value` is not an object or has no such key.
fn at<'a>(value: &'a Value, key: &str) -> &'a Value {
    value.get(key).unwrap_or(&Value::Null)
}

/// A pod annotation's text, if set.
fn annotation<'a>(metadata: &'a Value, key: &str) -> Option<&'a str> {
    metadata.get("annotations")?.get(key)?.as_str()
}

fn object(value: &Value) -> Map<String, Value> {
    value.as_object().cloned().unwrap_or_default()
}

fn names(items: &[Value]) -> Vec<String> {
    items
        .iter()
        .filter_map(|i| i["name"].as_str().map(str::to_owned))
        .collect()
}

/// What an earlier injection added, from its `sidecar.istio.io/status` annotation.
#[derive(Default)]
struct PreviousInjection {
    init_containers: Vec<String>,
    containers: Vec<String>,
    volumes: Vec<String>,
    image_pull_secrets: Vec<String>,
}

fn string_list(v: &Value) -> Vec<String> {
    v.as_array()
        .map(|a| a.iter().filter_map(|s| s.as_str().map(str::to_owned)).collect())
        .unwrap_or_default()
}

/// Removes what an earlier injection added, restoring the user's own overrides; returns the agent's previous
/// probers so already-rewritten probes keep their originals.
fn strip_previous(metadata: &mut Value, spec: &mut Value) -> Result<probes::Probers, InjectError> {
    let mut previous_probers = probes::Probers::new();
    let Some(status) = annotation(metadata, ann::STATUS).map(str::to_owned) else {
        return Ok(previous_probers);
    };
    let status: Value = serde_json::from_str(&status).map_err(|e| InjectError::InvalidAnnotation {
        annotation: ann::STATUS.into(),
        message: format!("not valid JSON: {e}"),
    })?;
    let previous = PreviousInjection {
        init_containers: string_list(at(&status, "initContainers")),
        containers: string_list(at(&status, "containers")),
        volumes: string_list(at(&status, "volumes")),
        image_pull_secrets: string_list(at(&status, "imagePullSecrets")),
    };
    for (field, removed) in [
        ("initContainers", &previous.init_containers),
        ("containers", &previous.containers),
        ("volumes", &previous.volumes),
        ("imagePullSecrets", &previous.image_pull_secrets),
    ] {
        if let Some(items) = spec.get_mut(field).and_then(Value::as_array_mut) {
            items.retain(|item| {
                let name = item["name"].as_str().unwrap_or_default();
                let drop = removed.iter().any(|r| r == name);
                if drop && name == PROXY_NAME {
                    for env in item["env"].as_array().into_iter().flatten() {
                        if env["name"] == "ISTIO_KUBE_APP_PROBERS"
                            && let Some(Ok(Value::Object(map))) = env["value"].as_str().map(serde_json::from_str)
                        {
                            previous_probers.extend(map);
                        }
                    }
                }
                !drop
            });
        }
    }
    if let Some(overrides) = annotation(metadata, ann::OVERRIDES).map(str::to_owned) {
        let overrides: Value = serde_json::from_str(&overrides).map_err(|e| InjectError::InvalidAnnotation {
            annotation: ann::OVERRIDES.into(),
            message: format!("not valid JSON: {e}"),
        })?;
        for field in ["initContainers", "containers"] {
            for c in at(&overrides, field).as_array().into_iter().flatten() {
                let list = spec
                    .as_object_mut()
                    .ok_or_else(|| InjectError::InvalidPod("spec is not an object".into()))?
                    .entry(field)
                    .or_insert_with(|| json!([]));
                if let Some(items) = list.as_array_mut()
                    && !items.iter().any(|i| i["name"] == c["name"])
                {
                    items.push(c.clone());
                }
            }
        }
    }
    if let Some(a) = metadata.get_mut("annotations").and_then(Value::as_object_mut) {
        a.remove(ann::STATUS);
        a.remove(ann::OVERRIDES);
    }
    Ok(previous_probers)
}

/// The pod's own containers named like template containers (`names`), taken out of `spec` (with `image: auto`
/// dropped).
fn take_overrides(spec: &mut Value, names: &[String]) -> Vec<(&'static str, Value)> {
    let mut overrides = Vec::new();
    for field in ["initContainers", "containers"] {
        if let Some(items) = spec.get_mut(field).and_then(Value::as_array_mut) {
            let mut kept = Vec::new();
            for mut item in items.drain(..) {
                if at(&item, "name").as_str().is_some_and(|n| names.iter().any(|x| x == n)) {
                    if at(&item, "image") == "auto"
                        && let Some(m) = item.as_object_mut()
                    {
                        m.remove("image");
                    }
                    canonicalize_resources(&mut item);
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

fn canonicalize_resources(container: &mut Value) {
    if let Some(resources) = container.get_mut("resources") {
        crate::quantity::canonicalize_resources(resources);
    }
}

fn bool_annotation(annotations: &Map<String, Value>, key: &str) -> Option<bool> {
    match annotations.get(key).and_then(Value::as_str) {
        Some("true") => Some(true),
        Some("false") => Some(false),
        _ => None,
    }
}

fn openshift_uid(config: &InjectionConfig, namespace_annotations: Option<&BTreeMap<String, String>>) -> Option<i64> {
    if !config.openshift {
        return None;
    }
    let range = namespace_annotations?.get("openshift.io/sa.scc.uid-range")?;
    let (start, size) = range.split_once('/')?;
    Some(start.trim().parse::<i64>().ok()? + size.trim().parse::<i64>().ok()? - 1)
}

/// Injects the sidecar into a pod. The caller has already decided to inject (see [`decide`]).
pub fn inject(config: &InjectionConfig, input: &PodInput) -> Result<Injected, InjectError> {
    shape::metadata(input.metadata)?;
    shape::spec(input.spec)?;
    let mut metadata = input.metadata.clone();
    let mut spec = input.spec.clone();
    if !metadata.is_object() {
        metadata = json!({});
    }
    // Re-injection: the template reads the pod without what an earlier injection added, but the template is merged
    // under the pod as submitted, so earlier injected containers act as overrides (Istio does the same). A pod seen
    // for the first time needs no second copy.
    let reinjecting = annotation(&metadata, ann::STATUS).is_some();
    let submitted_spec = reinjecting.then(|| spec.clone());
    let previous_probers = strip_previous(&mut metadata, &mut spec)?;
    let annotations = object(at(&metadata, "annotations"));
    let labels = object(at(&metadata, "labels"));
    validate::annotations(&annotations)?;
    let kinds = templates(config, &annotations)?;

    // Effective proxy configuration: Istio defaults < mesh defaultConfig < pod annotation.
    let defaults = proxy_config::defaults(&config.ca_address());
    let mut effective = proxy_config::merge(&defaults, &config.mesh.default_config);
    if let Some(text) = annotations.get(ann::PROXY_CONFIG).and_then(Value::as_str) {
        effective = proxy_config::merge(&effective, &proxy_config::parse_annotation(text)?);
    }
    let proxy_config_json = proxy_config::to_env_json(&effective, &defaults);
    let hold = effective
        .get("holdApplicationUntilProxyStarts")
        .and_then(Value::as_bool)
        == Some(true)
        || config.proxy.hold_application_until_proxy_starts;

    // What Istio's templates range over: the pod without an earlier injection, with the user's own containers.
    let full_spec = spec.clone();
    let builtin_names: Vec<String> = TEMPLATE_CONTAINERS.iter().map(|n| (*n).to_owned()).collect();
    let mut overrides = take_overrides(&mut spec, &builtin_names);
    let os_uid = openshift_uid(config, input.namespace_annotations);
    if os_uid.is_some() {
        // On OpenShift the proxy runs as the top of the namespace's UID range: a UID the pod sets on its own
        // istio-proxy is dropped from the override (and so from what is recorded for re-injection), as Istio does.
        for (_, o) in overrides.iter_mut().filter(|(_, o)| o["name"] == PROXY_NAME) {
            if let Some(sc) = o.get_mut("securityContext").and_then(Value::as_object_mut) {
                sc.remove("runAsUser");
            }
        }
    }
    let sidecar = kinds.contains(&TemplateKind::Sidecar);
    let native = sidecar
        && bool_annotation(&annotations, ann::NATIVE_SIDECAR).unwrap_or_else(|| config.native_sidecars_by_default());

    let tproxy = annotations
        .get(ann::INTERCEPTION_MODE)
        .and_then(Value::as_str)
        .or_else(|| effective.get("interceptionMode").and_then(Value::as_str))
        == Some("TPROXY");
    let ctx = template::Context {
        config,
        annotations: &annotations,
        labels: &labels,
        spec: &spec,
        full_spec: &full_spec,
        workload: &input.workload,
        proxy_config: &effective,
        proxy_config_json,
        native,
        hold,
        openshift_uid: os_uid,
        proxy_uid: overrides
            .iter()
            .find(|(_, o)| o["name"] == PROXY_NAME)
            .and_then(|(_, o)| o.pointer("/securityContext/runAsUser"))
            .and_then(Value::as_i64)
            .or(os_uid.filter(|_| !tproxy))
            .unwrap_or(1337),
        proxy_gid: overrides
            .iter()
            .find(|(_, o)| o["name"] == PROXY_NAME)
            .and_then(|(_, o)| o.pointer("/securityContext/runAsGroup"))
            .and_then(Value::as_i64)
            .unwrap_or(1337),
    };
    let mut fragment = template::Fragment::default();
    for kind in &kinds {
        let f = match kind {
            TemplateKind::Sidecar => {
                let mut f = template::sidecar(&ctx);
                add_user_volumes(&ctx, &mut f)?;
                // A native sidecar is an init container in the template itself, so a later template that names
                // `istio-proxy` under containers adds a container of that name, as Istio's does.
                if native && let Some(pos) = f.containers.iter().position(|c| c["name"] == PROXY_NAME) {
                    let proxy = f.containers.remove(pos);
                    f.init_containers.push(proxy);
                }
                f
            }
            TemplateKind::Gateway => {
                let mut f = template::gateway(&ctx);
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
                let parsed = config
                    .user_templates
                    .get(name)
                    .ok_or_else(|| InjectError::UnknownTemplate(name.clone()))?
                    .as_ref()
                    .map_err(|e| InjectError::Template(e.to_string()))?;
                template::user(&ctx, name, parsed, &metadata).map_err(InjectError::Template)?
            }
        };
        merge_fragment(&mut fragment, f);
    }
    // The pod's own containers of any name a template uses are overrides, merged again over the result.
    let template_names: Vec<String> = builtin_names
        .iter()
        .cloned()
        .chain(names(&fragment.init_containers))
        .chain(names(&fragment.containers))
        .collect();
    let tproxy_mode = ctx.interception_mode() == "TPROXY";
    drop(ctx);
    overrides.extend(take_overrides(&mut spec, &template_names));
    let (mut patch, merged_overrides) = match submitted_spec {
        Some(mut submitted) => {
            let merged = take_overrides(&mut submitted, &template_names);
            (submitted, merged)
        }
        None => (Value::Null, overrides.clone()),
    };
    let status = json!({
        "initContainers": none_if_empty(names(&fragment.init_containers)),
        "containers": none_if_empty(names(&fragment.containers)),
        "volumes": none_if_empty(names(&fragment.volumes)),
        "imagePullSecrets": none_if_empty(fragment.image_pull_secrets.clone()),
        "revision": config.revision_label(),
    });

    // Overrides are recorded where the template puts them, so re-injection can restore them.
    let mut recorded = Map::new();
    for (origin, o) in &overrides {
        let field = placement(&fragment.init_containers, &fragment.containers, o, origin);
        if let Some(list) = recorded.entry(field).or_insert_with(|| json!([])).as_array_mut() {
            list.push(o.clone());
        }
    }

    // Template as base, the pod (and its overrides) merged over it.
    let mut base = json!({
        "initContainers": fragment.init_containers,
        "containers": fragment.containers,
        "volumes": fragment.volumes,
    });
    if let Some(base) = base.as_object_mut() {
        if !fragment.image_pull_secrets.is_empty() {
            base.insert(
                "imagePullSecrets".into(),
                Value::Array(fragment.image_pull_secrets.iter().map(|n| json!({"name": n})).collect()),
            );
        }
        if let Some(sc) = fragment.pod_security_context {
            base.insert("securityContext".into(), sc);
        }
    }
    if let Some(b) = base.as_object_mut() {
        for (k, v) in fragment.spec_rest {
            b.insert(k, v);
        }
    }
    if patch.is_null() {
        patch = spec;
    }
    // The pod is the original and the template the patch, with the pod's own declarations of template containers
    // moved to where the template puts them; then each of those is merged again over the result so that the
    // user's fields win. (List order follows the API machinery's strategic merge, as Istio's does.)
    let empty = Vec::new();
    let list_of = |field: &str| at(&base, field).as_array().unwrap_or(&empty);
    let placed: Vec<(&str, &Value)> = merged_overrides
        .iter()
        .map(|(origin, o)| {
            (
                placement(list_of("initContainers"), list_of("containers"), o, origin),
                o,
            )
        })
        .collect();
    for (field, o) in &placed {
        if let Some(list) = patch
            .as_object_mut()
            .map(|m| m.entry(*field).or_insert_with(|| json!([])))
            .and_then(Value::as_array_mut)
        {
            list.push((*o).clone());
        }
    }
    merge::strategic(&mut patch, &base);
    let mut spec = patch;
    for (field, o) in placed {
        let found = spec
            .get_mut(field)
            .and_then(Value::as_array_mut)
            .and_then(|l| l.iter_mut().find(|c| c["name"] == o["name"]));
        match found {
            Some(c) => merge::strategic(c, o),
            None => {
                if let Some(list) = spec.get_mut("containers").and_then(Value::as_array_mut) {
                    list.push(o.clone());
                }
            }
        }
    }
    for field in ["initContainers", "volumes"] {
        if spec.get(field).and_then(Value::as_array).is_some_and(Vec::is_empty) && input.spec.get(field).is_none() {
            spec.as_object_mut().map(|m| m.remove(field));
        }
    }

    reorder(&mut spec, hold && sidecar);
    if tproxy_mode
        && let Some(sc) = find_container_mut(&mut spec, PROXY_NAME)
            .and_then(|c| c.get_mut("securityContext"))
            .and_then(Value::as_object_mut)
    {
        // TPROXY needs the proxy to run as root whatever the pod asked for.
        sc.insert("runAsUser".into(), json!(0));
    }

    if sidecar {
        rewrite_probes(config, &annotations, &mut spec, &previous_probers);
    }

    // Metadata.
    let meta = metadata
        .as_object_mut()
        .ok_or_else(|| InjectError::InvalidPod("metadata must be an object".into()))?;
    let labels_out = object_entry(meta, "labels")?;
    for (k, v) in &fragment.labels {
        if labels_out.get(k).and_then(Value::as_str).is_none_or(str::is_empty) {
            labels_out.insert(k.clone(), json!(v));
        }
    }
    let annotations_out = object_entry(meta, "annotations")?;
    for (k, v) in &fragment.annotations {
        annotations_out.insert(k.clone(), json!(v));
    }
    // The agent serves merged metrics on the proxy config's status port.
    let merged_port = effective
        .get("statusPort")
        .map(|p| p.as_str().map(str::to_owned).unwrap_or_else(|| p.to_string()))
        .unwrap_or_default();
    if let Some(merge) = prometheus::apply(annotations_out, config.mesh.enable_prometheus_merge, &merged_port)?
        && let Some(env) = merge.env
        && let Some(proxy) = find_container_mut(&mut spec, PROXY_NAME)
        && let Some(list) = proxy
            .as_object_mut()
            .map(|p| p.entry("env").or_insert_with(|| json!([])))
            .and_then(Value::as_array_mut)
    {
        list.retain(|e| at(e, "name") != prometheus::SCRAPE_CONFIG_ENV);
        list.push(json!({"name": prometheus::SCRAPE_CONFIG_ENV, "value": env}));
    }
    annotations_out.insert(
        ann::STATUS.into(),
        json!(gojson::to_string(&status, gojson::INJECTION_STATUS)),
    );
    if !recorded.is_empty() {
        let mut text = String::from("{");
        for (i, field) in ["initContainers", "containers"]
            .iter()
            .filter(|f| recorded.contains_key(**f))
            .enumerate()
        {
            if i > 0 {
                text.push(',');
            }
            let items: Vec<String> = recorded
                .get(*field)
                .unwrap_or(&Value::Null)
                .as_array()
                .into_iter()
                .flatten()
                .map(gojson::container_to_string)
                .collect();
            text.push_str(&format!("\"{field}\":[{}]", items.join(",")));
        }
        text.push('}');
        annotations_out.insert(ann::OVERRIDES.into(), json!(text));
    }
    Ok(Injected { metadata, spec })
}

/// Which list a pod's own declaration of a template container goes to: where the template puts that name, or,
/// when the templates put it in both (a native sidecar plus a template naming `istio-proxy` under containers), where
/// the pod had it.
fn placement(init: &[Value], containers: &[Value], item: &Value, origin: &'static str) -> &'static str {
    let has = |l: &[Value]| l.iter().any(|c| c["name"] == item["name"]);
    match (has(init), has(containers)) {
        (true, false) => "initContainers",
        (false, true) => "containers",
        (true, true) => origin,
        (false, false) => "containers",
    }
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
            && let Some(c) = items.iter_mut().find(|c| c["name"] == name)
        {
            found = Some(c);
            break;
        }
    }
    found
}

/// Moves the named container to the front or back of a list.
fn move_container(list: &mut Vec<Value>, name: &str, first: bool) {
    if let Some(pos) = list.iter().position(|c| c["name"] == name) {
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
fn reorder(spec: &mut Value, hold: bool) {
    if let Some(list) = spec.get_mut("containers").and_then(Value::as_array_mut) {
        move_container(list, PROXY_NAME, hold);
    }
    if let Some(list) = spec.get_mut("initContainers").and_then(Value::as_array_mut) {
        if list.iter().any(|c| c["name"] == PROXY_NAME) {
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

fn none_if_empty(items: Vec<String>) -> Value {
    if items.is_empty() { Value::Null } else { json!(items) }
}

fn merge_fragment(into: &mut template::Fragment, f: template::Fragment) {
    into.labels.extend(f.labels);
    into.annotations.extend(f.annotations);
    for (list, add) in [
        (&mut into.init_containers, f.init_containers),
        (&mut into.containers, f.containers),
        (&mut into.volumes, f.volumes),
    ] {
        for item in add {
            if let Some(existing) = list.iter_mut().find(|e| at(e, "name") == at(&item, "name")) {
                merge::strategic(existing, &item);
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
            Some(existing) => merge::strategic(existing, &sc),
            None => into.pod_security_context = Some(sc),
        }
    }
    let mut rest = Value::Object(std::mem::take(&mut into.spec_rest));
    merge::strategic(&mut rest, &Value::Object(f.spec_rest));
    if let Value::Object(m) = rest {
        into.spec_rest = m;
    }
}

/// Volumes and proxy mounts from `sidecar.istio.io/userVolume` and `userVolumeMount` (shape-checked, and each
/// mount naming a volume the pod will have).
fn add_user_volumes(ctx: &template::Context, fragment: &mut template::Fragment) -> Result<(), InjectError> {
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

/// Rewrites application probes through the agent and hands the originals to the proxy.
fn rewrite_probes(
    config: &InjectionConfig,
    annotations: &Map<String, Value>,
    spec: &mut Value,
    previous: &probes::Probers,
) {
    let enabled = bool_annotation(annotations, ann::REWRITE_APP_HTTP_PROBERS).unwrap_or(config.rewrite_app_http_probe);
    let status_port: i64 = annotations
        .get(ann::STATUS_PORT)
        .and_then(Value::as_str)
        .and_then(|p| p.parse().ok())
        .unwrap_or(config.proxy.status_port);
    if !enabled || status_port == 0 {
        return;
    }
    let mut probers = probes::Probers::new();
    for field in ["initContainers", "containers"] {
        for c in spec.get_mut(field).and_then(Value::as_array_mut).into_iter().flatten() {
            let is_app = c["name"] != PROXY_NAME && (field == "containers" || c["restartPolicy"] == "Always");
            if is_app {
                probes::rewrite_container(c, status_port, previous, &mut probers);
            }
        }
    }
    if probers.is_empty() {
        return;
    }
    let value = probes::probers_json(&probers);
    for field in ["initContainers", "containers"] {
        for c in spec.get_mut(field).and_then(Value::as_array_mut).into_iter().flatten() {
            if c["name"] == PROXY_NAME
                && let Some(env) = c.get_mut("env").and_then(Value::as_array_mut)
            {
                env.retain(|e| e["name"] != "ISTIO_KUBE_APP_PROBERS");
                env.push(json!({"name": "ISTIO_KUBE_APP_PROBERS", "value": value}));
            }
        }
    }
}

/// The webhook's view of one pod: injected with a JSON patch, or skipped with the deciding rule.
#[derive(Debug, Clone, PartialEq)]
pub enum PodOutcome {
    /// The pod gets the sidecar.
    Injected {
        /// The injected pod.
        pod: Value,
        /// RFC 6902 patch from the submitted pod to the injected one.
        patch: json_patch::Patch,
        /// Why it was injected.
        decision: Decision,
    },
    /// The pod is left alone.
    Skipped(Decision),
}

/// Decides and, when the decision is to inject, injects a whole Pod object submitted in `namespace`.
pub fn inject_pod(
    config: &InjectionConfig,
    pod: &Value,
    namespace: &str,
    namespace_annotations: Option<&BTreeMap<String, String>>,
) -> Result<PodOutcome, InjectError> {
    let metadata = pod.get("metadata").cloned().unwrap_or_else(|| json!({}));
    let spec = pod
        .get("spec")
        .filter(|s| s.is_object())
        .ok_or_else(|| InjectError::InvalidPod("the pod has no spec".into()))?;
    let decision = decide(config, &metadata, spec, namespace);
    if !decision.inject {
        return Ok(PodOutcome::Skipped(decision));
    }
    let mut workload = Workload::of_pod(&metadata);
    if workload.namespace.is_empty() {
        workload.namespace = namespace.to_owned();
    }
    let injected = inject(
        config,
        &PodInput {
            metadata: &metadata,
            spec,
            workload,
            namespace_annotations,
        },
    )?;
    // The injected pod shares everything but metadata and spec with the submitted one.
    let mut out = Map::new();
    for (k, v) in pod.as_object().into_iter().flatten() {
        if k != "metadata" && k != "spec" {
            out.insert(k.clone(), v.clone());
        }
    }
    out.insert("metadata".into(), injected.metadata);
    out.insert("spec".into(), injected.spec);
    let out = Value::Object(out);
    let patch = json_patch::diff(pod, &out);
    Ok(PodOutcome::Injected {
        pod: out,
        patch,
        decision,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod() -> Value {
        json!({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": "web", "namespace": "shop", "annotations": {"team": "a"}, "labels": {"app": "web"}},
            "spec": {"containers": [{"name": "web", "image": "nginx", "ports": [{"containerPort": 80}]}]}
        })
    }

    #[test]
    fn webhook_patch_escapes_slashes_in_annotation_keys_and_applies_cleanly() {
        let PodOutcome::Injected {
            pod: injected, patch, ..
        } = inject_pod(&InjectionConfig::default(), &pod(), "shop", None).unwrap()
        else {
            panic!("expected injection")
        };
        let text = serde_json::to_string(&patch).unwrap();
        assert!(
            text.contains("/metadata/annotations/sidecar.istio.io~1status"),
            "{text}"
        );
        let mut applied = pod();
        json_patch::patch(&mut applied, &patch).unwrap();
        assert_eq!(applied, injected);
    }

    #[test]
    fn injecting_twice_changes_nothing() {
        let PodOutcome::Injected { pod: once, .. } =
            inject_pod(&InjectionConfig::default(), &pod(), "shop", None).unwrap()
        else {
            panic!("expected injection")
        };
        let PodOutcome::Injected { pod: twice, .. } =
            inject_pod(&InjectionConfig::default(), &once, "shop", None).unwrap()
        else {
            panic!("expected injection")
        };
        assert_eq!(once, twice);
    }

    #[test]
    fn status_annotation_lists_what_was_injected_in_istio_order() {
        let PodOutcome::Injected { pod: injected, .. } =
            inject_pod(&InjectionConfig::default(), &pod(), "shop", None).unwrap()
        else {
            panic!("expected injection")
        };
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
    fn bad_traffic_annotation_is_refused_with_its_name() {
        let mut p = pod();
        p["metadata"]["annotations"][ann::EXCLUDE_OUTBOUND_IP_RANGES] = json!("10.0.0.0");
        let err = inject_pod(&InjectionConfig::default(), &p, "shop", None)
            .unwrap_err()
            .to_string();
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
        let PodOutcome::Injected { pod: injected, .. } =
            inject_pod(&InjectionConfig::default(), &p, "shop", None).unwrap()
        else {
            panic!("expected injection")
        };
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
        let PodOutcome::Injected { pod: twice, .. } =
            inject_pod(&InjectionConfig::default(), &injected, "shop", None).unwrap()
        else {
            panic!("expected injection")
        };
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
        let PodOutcome::Injected { pod: injected, .. } = inject_pod(&config, &p, "shop", None).unwrap() else {
            panic!("expected injection")
        };
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
        let PodOutcome::Injected { pod: twice, .. } = inject_pod(&config, &injected, "shop", None).unwrap() else {
            panic!("expected injection")
        };
        assert_eq!(twice, injected);
    }

    #[test]
    fn a_failing_user_template_refuses_the_pod_naming_the_template() {
        let config = with_templates(&[("bad", "spec: {{ nosuch .Spec }}"), ("broken", "{{ if .X }}")]);
        for (name, want) in [("bad", "nosuch"), ("broken", "end")] {
            let mut p = pod();
            p["metadata"]["annotations"][ann::TEMPLATES] = json!(format!("sidecar,{name}"));
            let err = inject_pod(&config, &p, "shop", None).unwrap_err();
            let text = err.to_string();
            assert!(matches!(err, InjectError::Template(_)), "{text}");
            assert!(text.contains(name) && text.contains(want), "{text}");
        }
        let config = with_templates(&[("list", "- not a pod")]);
        let mut p = pod();
        p["metadata"]["annotations"][ann::TEMPLATES] = json!("list");
        assert!(matches!(
            inject_pod(&config, &p, "shop", None),
            Err(InjectError::Template(_))
        ));
    }

    #[test]
    fn unknown_templates_are_refused() {
        let mut p = pod();
        p["metadata"]["annotations"][ann::TEMPLATES] = json!("sidecar,waypoint");
        let err = inject_pod(&InjectionConfig::default(), &p, "shop", None).unwrap_err();
        assert_eq!(err, InjectError::UnknownTemplate("waypoint".into()));
    }

    #[test]
    fn workload_of_a_replicaset_pod_is_its_deployment() {
        let meta = json!({"labels": {"pod-template-hash": "7d4b9"}, "ownerReferences": [
            {"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "web-7d4b9", "controller": true}]});
        let w = Workload::of_pod(&meta);
        assert_eq!((w.kind.as_str(), w.name.as_str()), ("Deployment", "web"));
        let meta = json!({"ownerReferences": [{"apiVersion": "batch/v1", "kind": "Job", "name": "backup-28930560", "controller": true}]});
        let w = Workload::of_pod(&meta);
        assert_eq!((w.kind.as_str(), w.name.as_str()), ("CronJob", "backup"));
    }
}
