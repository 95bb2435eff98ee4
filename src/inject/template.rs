//! The injection templates (`sidecar`, `gateway`, `grpc-agent`, `grpc-simple`, and the user's own): what a pod
//! gets added, as a fragment of pod metadata and spec.
//!
//! The built-in ones mirror the behaviour of Istio's injection templates, expressed as code: every value is derived
//! from the [`InjectionConfig`], the pod's annotations and labels, and the effective proxy configuration. User
//! templates are Go templates (as Istio's `sidecarInjectorWebhook.templates`), run by [`super::gotemplate`] over the
//! data Istio gives them ([`template_data`]).
// Indexing here writes only into JSON this module built itself (reads of the pod with `[]` yield Null, never panic).
#![allow(clippy::indexing_slicing)]

use std::borrow::Cow;
use std::cell::RefCell;
use std::collections::BTreeSet;

use serde_json::{Map, Value, json};

use crate::json_text;

use super::annotations as ann;
use super::compile::COMPILED_VOLUMES;
use super::config::InjectionConfig;
use super::gojson;
use super::{PROXY_NAME, Workload};

/// What a template adds to a pod.
#[derive(Debug, Default)]
pub struct Fragment {
    /// Labels set when the pod does not have them.
    pub labels: Vec<(String, String)>,
    /// Annotations added to the pod.
    pub annotations: Vec<(String, String)>,
    /// Init containers, in order.
    pub init_containers: Vec<Value>,
    /// Containers, in order.
    pub containers: Vec<Value>,
    /// Volumes, in order.
    pub volumes: Vec<Value>,
    /// Image pull secret names.
    pub image_pull_secrets: Vec<String>,
    /// Pod security context fields merged into the pod's.
    pub pod_security_context: Option<Value>,
    /// Any other pod spec fields a user template sets (such as `dnsConfig`), merged into the pod's.
    pub spec_rest: Map<String, Value>,
    /// The metadata fields other than labels and annotations each user template sets (such as `finalizers`), one
    /// map per template in the order they ran: each is merged into the pod's metadata in turn, as Istio merges
    /// each template into the pod (so a template's `null` removes the pod's field).
    pub metadata_patches: Vec<Map<String, Value>>,
}

impl Fragment {
    /// Moves the proxy container, if any, to the end of the init containers: a native sidecar.
    pub fn proxy_to_init_containers(&mut self) {
        if let Some(pos) = self
            .containers
            .iter()
            .position(|c| c.get("name").and_then(Value::as_str) == Some(super::PROXY_NAME))
        {
            let proxy = self.containers.remove(pos);
            self.init_containers.push(proxy);
        }
    }

    /// The fragment a user template rendered (a pod's `metadata` and `spec`, as YAML).
    pub fn from_pod(name: &str, pod: &Value) -> Result<Self, String> {
        let string_pairs = |v: &Value, what: &str| -> Result<Vec<(String, String)>, String> {
            match v {
                Value::Null => Ok(Vec::new()),
                Value::Object(m) => Ok(m
                    .iter()
                    .map(|(k, v)| {
                        (
                            k.clone(),
                            v.as_str().map(str::to_owned).unwrap_or_else(|| v.to_string()),
                        )
                    })
                    .collect()),
                _ => Err(format!("template {name:?}: metadata.{what} must be a map")),
            }
        };
        let list = |v: &Value, what: &str| -> Result<Vec<Value>, String> {
            match v {
                Value::Null => Ok(Vec::new()),
                Value::Array(a) if a.iter().all(|i| i["name"].is_string()) => Ok(a.clone()),
                _ => Err(format!(
                    "template {name:?}: spec.{what} must be a list of items with a name"
                )),
            }
        };
        if !(pod.is_object() || pod.is_null()) {
            return Err(format!("template {name:?} must render a pod's metadata and spec"));
        }
        let metadata_rest: Map<String, Value> = match &pod["metadata"] {
            Value::Null => Map::new(),
            Value::Object(m) => m
                .iter()
                .filter(|(k, _)| !matches!(k.as_str(), "labels" | "annotations"))
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
            _ => return Err(format!("template {name:?}: metadata must be a map")),
        };
        // Checked as the API machinery's merge would find them: it cannot merge others into the pod's.
        if let Some(why) = super::merge::unmergeable_metadata(&metadata_rest, &["finalizers", "ownerReferences"]) {
            return Err(format!("template {name:?}: {why}"));
        }
        let spec = &pod["spec"];
        let mut rest = spec.as_object().cloned().unwrap_or_default();
        for k in [
            "initContainers",
            "containers",
            "volumes",
            "imagePullSecrets",
            "securityContext",
        ] {
            rest.remove(k);
        }
        Ok(Self {
            labels: string_pairs(&pod["metadata"]["labels"], "labels")?,
            annotations: string_pairs(&pod["metadata"]["annotations"], "annotations")?,
            init_containers: list(&spec["initContainers"], "initContainers")?,
            containers: list(&spec["containers"], "containers")?,
            volumes: list(&spec["volumes"], "volumes")?,
            image_pull_secrets: list(&spec["imagePullSecrets"], "imagePullSecrets")?
                .iter()
                .filter_map(|s| s["name"].as_str().map(str::to_owned))
                .collect(),
            pod_security_context: spec.get("securityContext").filter(|v| !v.is_null()).cloned(),
            spec_rest: rest,
            metadata_patches: if metadata_rest.is_empty() {
                Vec::new()
            } else {
                vec![metadata_rest]
            },
        })
    }
}

/// What the parts of a built-in template that do not depend on the pod's labels, containers or workload read: the
/// configuration, the pod's annotations and what was derived from them. [`Static`] parts are functions of these
/// only (the type keeps them from reading more), which is what lets [`super::compile`] render them once.
pub struct Settings<'a> {
    /// The configuration.
    pub config: &'a InjectionConfig,
    /// The pod's annotations.
    pub annotations: &'a Map<String, Value>,
    /// When set, the annotations read are recorded here (compiling: those a pod must not have to reuse the
    /// compiled parts).
    pub reads: Option<&'a RefCell<BTreeSet<&'static str>>>,
    /// Effective proxy configuration (mesh defaults and the pod's `proxy.istio.io/config`).
    pub proxy_config: &'a Map<String, Value>,
    /// `PROXY_CONFIG`: the effective fields that differ from Istio's defaults.
    pub proxy_config_json: &'a str,
    /// `REDIRECT`, `TPROXY` or `NONE`: the pod's annotation, else the proxy configuration's.
    pub interception_mode: &'a str,
    /// Inject the proxy as a native sidecar.
    pub native: bool,
    /// Hold the application until the proxy is ready.
    pub hold: bool,
    /// OpenShift: UID/GID for the proxy (top of the namespace's range), if known.
    pub openshift_uid: Option<i64>,
    /// UID the proxy runs as (traffic from it is not captured): 1337 unless the pod's own `istio-proxy` says.
    pub proxy_uid: i64,
    /// GID the proxy runs as: 1337 unless the pod's own `istio-proxy` says.
    pub proxy_gid: i64,
}

/// Everything a template reads: the [`Settings`] and the pod itself.
pub struct Context<'a> {
    /// Configuration, annotations and what was derived from them.
    pub settings: Settings<'a>,
    /// The pod's labels.
    pub labels: &'a Map<String, Value>,
    /// The pod's spec (user containers only).
    pub spec: &'a Value,
    /// The pod's spec as submitted (without what an earlier injection added), including the user's own
    /// declarations of template containers: what Istio's templates range over.
    pub full_spec: &'a Value,
    /// The owning workload.
    pub workload: &'a Workload,
}

impl<'a> std::ops::Deref for Context<'a> {
    type Target = Settings<'a>;
    fn deref(&self) -> &Settings<'a> {
        &self.settings
    }
}

impl Settings<'_> {
    fn annotation(&self, key: &'static str) -> Option<&str> {
        if let Some(reads) = self.reads {
            reads.borrow_mut().insert(key);
        }
        self.annotations.get(key).and_then(Value::as_str)
    }

    /// The annotation's value, or `default` when the pod does not set it.
    fn annotation_or(&self, key: &'static str, default: &str) -> String {
        self.annotation(key)
            .map(str::to_owned)
            .unwrap_or_else(|| default.to_owned())
    }

    /// `REDIRECT`, `TPROXY` or `NONE`: the annotation, else the proxy config.
    pub fn interception_mode(&self) -> &str {
        self.interception_mode
    }

    fn status_port(&self) -> String {
        self.annotation_or(ann::STATUS_PORT, &self.config.proxy.status_port.to_string())
    }

    fn proxy_metadata(&self) -> Vec<(String, String)> {
        match self.proxy_config.get("proxyMetadata") {
            Some(Value::Object(map)) => map
                .iter()
                .map(|(k, v)| {
                    (
                        k.clone(),
                        v.as_str().map(str::to_owned).unwrap_or_else(|| v.to_string()),
                    )
                })
                .collect(),
            _ => Vec::new(),
        }
    }

    fn image_pull_policy(&self) -> Option<&str> {
        self.config.image_pull_policy.as_deref()
    }

    fn proxy_image(&self) -> String {
        match self.annotation(ann::PROXY_IMAGE) {
            Some(image) if image.contains('/') => image.to_owned(),
            _ => self.config.proxy_image(),
        }
    }

    fn init_image(&self) -> String {
        match self.annotation(ann::PROXY_IMAGE) {
            Some(image) if image.contains('/') => image.to_owned(),
            _ => self.config.init_image(),
        }
    }

    fn trust_domain(&self) -> &str {
        &self.config.mesh.trust_domain
    }

    fn cni(&self) -> bool {
        self.config.cni.enabled
    }

    fn tproxy(&self) -> bool {
        self.interception_mode() == "TPROXY"
    }
}

impl Context<'_> {
    fn label(&self, key: &str) -> Option<&str> {
        self.labels.get(key).and_then(Value::as_str).filter(|v| !v.is_empty())
    }

    /// The pod's container names but the proxy's.
    fn app_containers(&self) -> impl Iterator<Item = &str> {
        containers(self.spec)
            .iter()
            .filter_map(|c| c["name"].as_str())
            .filter(|n| *n != PROXY_NAME)
    }
}

fn containers(spec: &Value) -> &[Value] {
    spec["containers"].as_array().map(Vec::as_slice).unwrap_or_default()
}

/// Joins the status port to the excluded inbound ports unless it is 0 or already listed.
pub fn exclude_inbound_port(status_port: &str, excluded: &str) -> String {
    let port = status_port.trim();
    let mut ports: Vec<&str> = excluded.split(',').map(str::trim).filter(|p| !p.is_empty()).collect();
    if port.is_empty() || port == "0" || ports.contains(&port) {
        return ports.join(",");
    }
    ports.push(port);
    ports.join(",")
}

/// The proxy's resources: from the resource annotations when any is set, else from the values.
fn resources(ctx: &Settings) -> Value {
    let pick = |key: &'static str| ctx.annotation(key).map(|v| Value::String(canonical_quantity(v)));
    let (cpu, memory, cpu_limit, memory_limit) = (
        pick(ann::PROXY_CPU),
        pick(ann::PROXY_MEMORY),
        pick(ann::PROXY_CPU_LIMIT),
        pick(ann::PROXY_MEMORY_LIMIT),
    );
    let mut out = Map::new();
    if cpu.is_some() || memory.is_some() || cpu_limit.is_some() || memory_limit.is_some() {
        let section = |a: Option<Value>, b: Option<Value>| {
            let mut m = Map::new();
            if let Some(a) = a {
                m.insert("cpu".into(), a);
            }
            if let Some(b) = b {
                m.insert("memory".into(), b);
            }
            m
        };
        let requests = section(cpu, memory);
        let limits = section(cpu_limit, memory_limit);
        if !limits.is_empty() {
            out.insert("limits".into(), Value::Object(limits));
        }
        if !requests.is_empty() {
            out.insert("requests".into(), Value::Object(requests));
        }
        return Value::Object(out);
    }
    for (kind, entries) in &ctx.config.proxy.resources {
        let m: Map<String, Value> = entries
            .iter()
            .filter_map(|(name, q)| q.as_ref().map(|q| (name.clone(), Value::String(canonical_quantity(q)))))
            .collect();
        if !m.is_empty() {
            out.insert(kind.clone(), Value::Object(m));
        }
    }
    Value::Object(out)
}

fn canonical_quantity(q: &str) -> String {
    crate::quantity::canonical(q).unwrap_or_else(|_| q.to_owned())
}

fn field_env(name: &str, path: &str) -> Value {
    json!({"name": name, "valueFrom": {"fieldRef": {"fieldPath": path}}})
}

fn resource_env(name: &str, resource: &str) -> Value {
    json!({"name": name, "valueFrom": {"resourceFieldRef": {"divisor": "1", "resource": resource}}})
}

/// An env var; an empty value is left out, as Go's `omitempty` does.
fn value_env(name: &str, value: impl Into<String>) -> Value {
    let value = value.into();
    if value.is_empty() {
        json!({"name": name})
    } else {
        json!({"name": name, "value": value})
    }
}

/// `ISTIO_META_POD_PORTS`: every declared container port, as Istio lays it out.
fn pod_ports(spec: &Value) -> String {
    let ports = containers(spec)
        .iter()
        .flat_map(|c| c["ports"].as_array().into_iter().flatten());
    let mut out = Vec::with_capacity(128);
    out.push(b'[');
    for (i, p) in ports.enumerate() {
        out.extend_from_slice(if i > 0 { b"\n    ," } else { b"\n    " });
        gojson::write(&mut out, p, gojson::CONTAINER_PORT);
    }
    out.extend_from_slice(b"\n]");
    // gojson writes UTF-8.
    String::from_utf8(out).unwrap_or_default()
}

/// An env var of the proxy: fixed by the [`Settings`], or filled in per pod.
#[derive(Clone, Debug, PartialEq)]
pub enum EnvVar {
    /// The same for every pod with these settings.
    Fixed(Value),
    /// `ISTIO_META_POD_PORTS`: the pod's container ports.
    PodPorts,
    /// `ISTIO_META_APP_CONTAINERS`: the pod's container names.
    AppContainers,
    /// `ISTIO_META_WORKLOAD_NAME` and `ISTIO_META_OWNER`: the pod's workload, when it has one.
    Workload,
    /// `OTEL_RESOURCE_ATTRIBUTES`: the pod's OpenTelemetry service attributes (with
    /// `serviceAttributeEnrichment: OTEL_SEMANTIC_CONVENTIONS`).
    OtelResourceAttributes,
}

/// The environment shared by the sidecar and gateway proxies, up to and including `TRUST_DOMAIN`.
fn proxy_env(ctx: &Settings, gateway: bool) -> Vec<EnvVar> {
    use EnvVar::Fixed;
    let config = ctx.config;
    let mut env = Vec::new();
    if !gateway && config.mesh.inbound_localhost {
        env.push(Fixed(value_env("REWRITE_PROBE_LEGACY_LOCALHOST_DESTINATION", "true")));
    }
    env.extend(
        [
            value_env("PILOT_CERT_PROVIDER", &config.pilot_cert_provider),
            value_env("CA_ADDR", config.ca_address()),
            field_env("POD_NAME", "metadata.name"),
            field_env("POD_NAMESPACE", "metadata.namespace"),
            field_env("INSTANCE_IP", "status.podIP"),
            field_env("SERVICE_ACCOUNT", "spec.serviceAccountName"),
            field_env("HOST_IP", "status.hostIP"),
            resource_env("ISTIO_CPU_LIMIT", "limits.cpu"),
            value_env("PROXY_CONFIG", format!("{}\n", ctx.proxy_config_json)),
        ]
        .map(Fixed),
    );
    env.push(EnvVar::PodPorts);
    if gateway {
        env.push(Fixed(resource_env("GOMEMLIMIT", "limits.memory")));
        env.push(EnvVar::AppContainers);
    } else {
        env.push(EnvVar::AppContainers);
        env.push(Fixed(resource_env("GOMEMLIMIT", "limits.memory")));
    }
    if let Some(policy) = &config.compliance_policy {
        env.push(Fixed(value_env("COMPLIANCE_POLICY", policy)));
        if policy == "fips-140-3" {
            env.push(Fixed(value_env("GODEBUG", "fips140=only")));
        }
    }
    env.push(Fixed(value_env("ISTIO_META_CLUSTER_ID", &config.cluster_id)));
    env.push(Fixed(field_env("ISTIO_META_NODE_NAME", "spec.nodeName")));
    env.push(Fixed(value_env(
        "ISTIO_META_INTERCEPTION_MODE",
        ctx.interception_mode(),
    )));
    env.push(EnvVar::Workload);
    if !gateway && ctx.annotation(ann::BOOTSTRAP_OVERRIDE).is_some() {
        env.push(Fixed(value_env(
            "ISTIO_BOOTSTRAP_OVERRIDE",
            "/etc/istio/custom-bootstrap/custom_bootstrap.json",
        )));
    }
    let mesh_id = config.mesh_id.clone().unwrap_or_else(|| ctx.trust_domain().to_owned());
    if !mesh_id.is_empty() {
        env.push(Fixed(value_env("ISTIO_META_MESH_ID", mesh_id)));
    }
    if !ctx.trust_domain().is_empty() {
        env.push(Fixed(value_env("TRUST_DOMAIN", ctx.trust_domain())));
    }
    if !gateway && config.mesh.otel_semantic_conventions() {
        env.push(EnvVar::OtelResourceAttributes);
    }
    if let Some(network) = &config.network {
        env.push(Fixed(value_env("ISTIO_META_NETWORK", network)));
    }
    for (k, v) in ctx.proxy_metadata() {
        env.push(Fixed(value_env(&k, v)));
    }
    env
}

/// `OTEL_RESOURCE_ATTRIBUTES` for a pod (Istio's `otelResourceAttributes` template function, with the
/// `.DeploymentMeta.Namespace` and `.Spec.Containers` it is given): `service.namespace`, `service.version` and
/// `service.instance.id`, in that order, each from the pod's `resource.opentelemetry.io/<attribute>` annotation when it
/// has a value, else the namespace; the `app.kubernetes.io/version` label, else, for a pod of one container, its
/// image's version ([`image_version`]); and `<namespace>.$(POD_NAME).<container>` (kubelet expands `$(POD_NAME)` from
/// the proxy's own `POD_NAME`). An attribute with no value is left out (so no `service.namespace` without a namespace,
/// as in Istio's unit test; the instance id then has `$(POD_NAMESPACE)`); values are written as they are (no
/// percent-encoding). The container is the first one but `istio-proxy`, and "one container" counts those but
/// `istio-proxy`: the corpus's one case has one container and the version label, and the rest is mizzen's reading of
/// Istio's change that added the function and of OpenTelemetry's rules (see README, "Conformance with Istio").
pub fn otel_resource_attributes(
    annotations: Option<&Map<String, Value>>,
    labels: Option<&Map<String, Value>>,
    namespace: &str,
    containers: &[Value],
) -> String {
    fn text<'m>(map: Option<&'m Map<String, Value>>, key: &str) -> Option<&'m str> {
        map.and_then(|m| m.get(key))
            .and_then(Value::as_str)
            .filter(|v| !v.is_empty())
    }
    let annotation = |attribute: &str| text(annotations, &format!("resource.opentelemetry.io/{attribute}"));
    let mut apps = containers
        .iter()
        .filter(|c| c.get("name").and_then(Value::as_str) != Some(PROXY_NAME));
    let first = apps.next();
    let only = first.filter(|_| apps.next().is_none());
    // A container without a name (the API server refuses it after admission) gives no instance id, as in
    // OpenTelemetry's operator.
    let container = first
        .and_then(|c| c.get("name").and_then(Value::as_str))
        .filter(|name| !name.is_empty());
    // Without a namespace (a manifest given to kube-inject that names none), kubelet's: the proxy's `POD_NAMESPACE`.
    let instance = match annotation("service.instance.id") {
        Some(id) => Some(id.to_owned()),
        None if namespace.is_empty() => container.map(|c| format!("$(POD_NAMESPACE).$(POD_NAME).{c}")),
        None => container.map(|c| format!("{namespace}.$(POD_NAME).{c}")),
    };
    let version = annotation("service.version")
        .or(text(labels, "app.kubernetes.io/version"))
        .map(Cow::Borrowed)
        .or_else(|| {
            only.and_then(|c| c.get("image"))
                .and_then(Value::as_str)
                .and_then(image_version)
        });
    let attributes = [
        ("service.namespace", annotation("service.namespace").or(Some(namespace))),
        ("service.version", version.as_deref()),
        ("service.instance.id", instance.as_deref()),
    ];
    let mut out = String::new();
    for (key, value) in attributes {
        if let Some(value) = value.filter(|v| !v.is_empty()) {
            if !out.is_empty() {
                out.push(',');
            }
            out.push_str(key);
            out.push('=');
            out.push_str(value);
        }
    }
    out
}

/// The version an image reference names, as OpenTelemetry's operator reads it for `service.version`: its tag, its
/// digest, or `<tag>@<digest>` when it has both; none for a reference with neither (`nginx`, `registry:5000/app`) or
/// that is not one by Docker's grammar (`distribution/reference`): a name of at most 255 characters of path
/// components (`[a-z0-9]+` joined by `.`, `_`, `__` or dashes) after an optional domain (`host[:port]`); a tag of a
/// word character then up to 127 of `[A-Za-z0-9_.-]`; a digest `sha256`, `sha384` or `sha512` with 64, 96 or 128
/// lowercase hex digits. (An IPv6 registry address is not read: no version.)
pub fn image_version(image: &str) -> Option<Cow<'_, str>> {
    let (rest, digest) = match image.split_once('@') {
        Some((rest, digest)) => (rest, Some(digest)),
        None => (image, None),
    };
    // A tag is after a `:` in the last path component (a `:` before the last `/` is a registry's port).
    let last_start = rest.rfind('/').map_or(0, |i| i + 1);
    let (name, tag) = match rest.get(last_start..).and_then(|last| last.rfind(':')) {
        Some(i) => (
            rest.get(..last_start + i).unwrap_or_default(),
            rest.get(last_start + i + 1..),
        ),
        None => (rest, None),
    };
    let path_component = |c: &str| {
        // [a-z0-9]+ ((\.|_|__|-+) [a-z0-9]+)*
        let b = c.as_bytes();
        let alnum = |x: &u8| x.is_ascii_lowercase() || x.is_ascii_digit();
        let (mut i, mut ok) = (0, !b.is_empty());
        while ok && i < b.len() {
            let start = i;
            while b.get(i).is_some_and(alnum) {
                i += 1;
            }
            if i == start {
                ok = false;
            } else if i < b.len() {
                let sep = i;
                while b.get(i).is_some_and(|x| *x == b'-') {
                    i += 1;
                }
                if i == sep {
                    match (b.get(i), b.get(i + 1)) {
                        (Some(b'_'), Some(b'_')) => i += 2,
                        (Some(b'.' | b'_'), _) => i += 1,
                        _ => ok = false,
                    }
                }
                ok = ok && i < b.len();
            }
        }
        ok
    };
    let domain = |d: &str| {
        let (host, port) = match d.rsplit_once(':') {
            Some((host, port)) => (host, Some(port)),
            None => (d, None),
        };
        let label = |l: &str| {
            !l.is_empty()
                && l.bytes().all(|x| x.is_ascii_alphanumeric() || x == b'-')
                && !l.starts_with('-')
                && !l.ends_with('-')
        };
        host.split('.').all(label) && port.is_none_or(|p| !p.is_empty() && p.bytes().all(|x| x.is_ascii_digit()))
    };
    let mut components = name.split('/');
    let first = components.next().unwrap_or_default();
    let name_ok = name.len() <= 255
        && if name.contains('/') {
            (path_component(first) || domain(first)) && components.all(path_component)
        } else {
            path_component(name)
        };
    let tag_ok = |t: &str| {
        t.len() <= 128
            && t.bytes().next().is_some_and(|b| b.is_ascii_alphanumeric() || b == b'_')
            && t.bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'))
    };
    let digest_ok = |d: &str| {
        let hex_len = match d.split_once(':') {
            Some(("sha256", hex)) => (hex.len() == 64).then_some(hex),
            Some(("sha384", hex)) => (hex.len() == 96).then_some(hex),
            Some(("sha512", hex)) => (hex.len() == 128).then_some(hex),
            _ => None,
        };
        hex_len.is_some_and(|hex| hex.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)))
    };
    if !name_ok || tag.is_some_and(|t| !tag_ok(t)) || digest.is_some_and(|d| !digest_ok(d)) {
        return None;
    }
    match (tag, digest) {
        (Some(tag), Some(digest)) => Some(Cow::Owned(format!("{tag}@{digest}"))),
        (Some(tag), None) => Some(Cow::Borrowed(tag)),
        (None, Some(digest)) => Some(Cow::Borrowed(digest)),
        (None, None) => None,
    }
}

/// This pod's entries of a per-pod variable, as names and values (none for a fixed one).
fn hole_values(ctx: &Context, var: &EnvVar, out: &mut Vec<(&'static str, String)>) {
    match var {
        EnvVar::Fixed(_) => {}
        EnvVar::PodPorts => out.push(("ISTIO_META_POD_PORTS", pod_ports(ctx.spec))),
        EnvVar::AppContainers => {
            // Joined as Go's `strings.Join` does: an empty name still takes its place (`,b`).
            let names: Vec<&str> = ctx.app_containers().collect();
            out.push(("ISTIO_META_APP_CONTAINERS", names.join(",")));
        }
        EnvVar::Workload if !ctx.workload.name.is_empty() => {
            // The workload-name label renames the workload for telemetry; the owner stays the real object.
            let name = ctx.label(ann::WORKLOAD_NAME).unwrap_or(&ctx.workload.name);
            out.push(("ISTIO_META_WORKLOAD_NAME", name.to_owned()));
            if !ctx.workload.api_version.is_empty() {
                out.push(("ISTIO_META_OWNER", ctx.workload.owner_uri()));
            }
        }
        EnvVar::Workload => {}
        EnvVar::OtelResourceAttributes => {
            // Read from the pod: per-pod values are never part of what compiled parts depend on.
            let attributes = otel_resource_attributes(
                Some(ctx.annotations),
                Some(ctx.labels),
                &ctx.workload.namespace,
                containers(ctx.spec),
            );
            if !attributes.is_empty() {
                out.push(("OTEL_RESOURCE_ATTRIBUTES", attributes));
            }
        }
    }
}

/// The proxy's environment for this pod.
fn fill_env(ctx: &Context, env: Vec<EnvVar>) -> Value {
    let mut out = Vec::with_capacity(env.len() + 1);
    let mut values = Vec::new();
    for var in env {
        match var {
            EnvVar::Fixed(v) => out.push(v),
            hole => {
                hole_values(ctx, &hole, &mut values);
                out.extend(values.drain(..).map(|(name, value)| value_env(name, value)));
            }
        }
    }
    Value::Array(out)
}

/// This pod's entries of the per-pod variables of an env (what [`value_env`] makes, written as JSON text), one
/// after another in one buffer.
#[derive(Debug, Default)]
pub struct EnvHoles {
    text: Vec<u8>,
    /// Each entry's variable (its index in the env) and its bytes in `text`. Only [`EnvHoles::push`] writes either
    /// field, recording each range right after appending it, so every range is within `text`.
    entries: Vec<(usize, std::ops::Range<usize>)>,
}

impl EnvHoles {
    /// Appends the entry `name`=`value` of the variable at `index`.
    fn push(&mut self, index: usize, name: &str, value: &str) {
        let start = self.text.len();
        write_env_entry(&mut self.text, name, value);
        self.entries.push((index, start..self.text.len()));
    }

    /// The entries of the variable at `index`, in order.
    pub fn of(&self, index: usize) -> impl Iterator<Item = &[u8]> {
        self.entries
            .iter()
            .filter(move |(i, _)| *i == index)
            .filter_map(|(_, range)| {
                debug_assert!(range.end <= self.text.len(), "an env entry's range is within the text");
                self.text.get(range.clone())
            })
    }
}

/// This pod's entries of the per-pod variables of `env`.
pub fn env_holes(ctx: &Context, env: &[EnvVar]) -> EnvHoles {
    let mut holes = EnvHoles {
        text: Vec::with_capacity(512),
        entries: Vec::with_capacity(4),
    };
    let mut values = Vec::new();
    for (i, var) in env.iter().enumerate() {
        hole_values(ctx, var, &mut values);
        for (name, value) in values.drain(..) {
            holes.push(i, name, &value);
        }
    }
    holes
}

/// Appends `{"name":…,"value":…}`, or `{"name":…}` for an empty value: [`value_env`]'s entry as serde_json writes
/// it.
fn write_env_entry(text: &mut Vec<u8>, name: &str, value: &str) {
    text.extend_from_slice(b"{\"name\":");
    json_text::write_str(text, name);
    if !value.is_empty() {
        text.extend_from_slice(b",\"value\":");
        json_text::write_str(text, value);
    }
    text.push(b'}');
}

fn readiness_probe(ctx: &Settings) -> Value {
    let mut probe = json!({
        "httpGet": {"path": "/healthz/ready", "port": 15021},
        "periodSeconds": int_annotation(ctx, ann::READINESS_PERIOD, ctx.config.proxy.readiness_period_seconds),
        "timeoutSeconds": 3,
        "failureThreshold": int_annotation(ctx, ann::READINESS_FAILURE_THRESHOLD, ctx.config.proxy.readiness_failure_threshold),
    });
    let delay = int_annotation(
        ctx,
        ann::READINESS_INITIAL_DELAY,
        ctx.config.proxy.readiness_initial_delay_seconds,
    );
    if delay != 0 {
        probe["initialDelaySeconds"] = json!(delay);
    }
    probe
}

fn int_annotation(ctx: &Settings, key: &'static str, default: i64) -> i64 {
    ctx.annotation(key)
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(default)
}

fn proxy_volume_mounts(ctx: &Settings, sidecar: bool) -> Vec<Value> {
    let mut mounts = vec![
        json!({"mountPath": "/var/run/secrets/workload-spiffe-uds", "name": "workload-socket"}),
        json!({"mountPath": "/var/run/secrets/credential-uds", "name": "credential-socket"}),
        json!({"mountPath": "/var/run/secrets/workload-spiffe-credentials", "name": "workload-certs"}),
        json!({"mountPath": "/var/run/secrets/istio", "name": "istiod-ca-cert"}),
    ];
    if sidecar {
        mounts.push(json!({"mountPath": "/var/run/secrets/istio/crl", "name": "istio-ca-crl"}));
    }
    mounts.push(json!({"mountPath": "/var/lib/istio/data", "name": "istio-data"}));
    if sidecar && ctx.annotation(ann::BOOTSTRAP_OVERRIDE).is_some() {
        mounts.push(json!({"mountPath": "/etc/istio/custom-bootstrap", "name": "custom-bootstrap-volume"}));
    }
    mounts.push(json!({"mountPath": "/etc/istio/proxy", "name": "istio-envoy"}));
    mounts.push(json!({"mountPath": "/var/run/secrets/tokens", "name": "istio-token"}));
    if ctx.config.mount_mtls_certs {
        mounts.push(json!({"mountPath": "/etc/certs/", "name": "istio-certs", "readOnly": true}));
    }
    mounts.push(json!({"mountPath": "/etc/istio/pod", "name": "istio-podinfo"}));
    mounts
}

/// The proxy's volumes, but for `istio-certs` (see [`certs_volume`]).
fn proxy_volumes(ctx: &Settings, sidecar: bool) -> Vec<Value> {
    let mut volumes = vec![
        json!({"name": "workload-socket"}),
        if sidecar {
            json!({"name": "credential-socket"})
        } else {
            json!({"name": "credential-socket", "emptyDir": {}})
        },
        if sidecar {
            json!({"name": "workload-certs"})
        } else {
            json!({"name": "workload-certs", "emptyDir": {}})
        },
    ];
    if sidecar && let Some(config_map) = ctx.annotation(ann::BOOTSTRAP_OVERRIDE) {
        volumes.push(json!({"name": "custom-bootstrap-volume", "configMap": {"name": config_map}}));
    }
    volumes.extend([
        json!({"name": "istio-envoy", "emptyDir": {"medium": "Memory"}}),
        json!({"name": "istio-data", "emptyDir": {}}),
        json!({"name": "istio-podinfo", "downwardAPI": {"items": [
            {"path": "labels", "fieldRef": {"fieldPath": "metadata.labels"}},
            {"path": "annotations", "fieldRef": {"fieldPath": "metadata.annotations"}},
        ]}}),
        json!({"name": "istio-token", "projected": {"sources": [
            {"serviceAccountToken": {"path": "istio-token", "expirationSeconds": 43200, "audience": "istio-ca"}}
        ]}}),
        json!({"name": "istiod-ca-cert", "configMap": {"name": "istio-ca-root-cert"}}),
    ]);
    if sidecar {
        volumes.push(json!({"name": "istio-ca-crl", "configMap": {"name": "istio-ca-crl", "optional": true}}));
    }
    volumes
}

/// `istio-certs`, the last of the proxy's volumes, when the mesh mounts mTLS certificates: the pod's service
/// account's.
fn certs_volume(ctx: &Context) -> Option<Value> {
    if !ctx.config.mount_mtls_certs {
        return None;
    }
    let sa = ctx.spec["serviceAccountName"]
        .as_str()
        .filter(|s| !s.is_empty())
        .unwrap_or("default");
    Some(json!({"name": "istio-certs", "secret": {"optional": true, "secretName": format!("istio.{sa}")}}))
}

fn canonical_labels(ctx: &Context) -> [(String, String); 2] {
    let name = ctx
        .label(ann::CANONICAL_NAME)
        .or_else(|| ctx.label("app.kubernetes.io/name"))
        .or_else(|| ctx.label("app"))
        .unwrap_or(&ctx.workload.name);
    let revision = ctx
        .label(ann::CANONICAL_REVISION)
        .or_else(|| ctx.label("app.kubernetes.io/version"))
        .or_else(|| ctx.label("version"))
        .unwrap_or("latest");
    [
        (ann::CANONICAL_NAME.to_owned(), truncate_label(name)),
        (ann::CANONICAL_REVISION.to_owned(), truncate_label(revision)),
    ]
}

/// Label values are at most 63 characters and must end with an alphanumeric character.
fn truncate_label(value: &str) -> String {
    if value.len() <= 63 {
        return value.to_owned();
    }
    let cut: String = value.chars().take(63).collect();
    cut.trim_end_matches(|c: char| !c.is_ascii_alphanumeric()).to_owned()
}

fn default_container_annotations(ctx: &Context, only_if_single: bool) -> Vec<(String, String)> {
    let mut apps = ctx.app_containers();
    let mut out = Vec::new();
    let Some(first) = apps.next() else { return out };
    if only_if_single && apps.next().is_some() {
        return out;
    }
    for key in [ann::DEFAULT_LOGS_CONTAINER, ann::DEFAULT_CONTAINER] {
        if ctx.annotation(key).is_none() {
            out.push((key.to_owned(), first.to_owned()));
        }
    }
    out
}

fn iptables_args(ctx: &Settings) -> Vec<Value> {
    let config = &ctx.config.proxy;
    let a = |key: &'static str, default: &str| ctx.annotation_or(key, default);
    let excluded = exclude_inbound_port(
        &ctx.status_port(),
        &a(ann::EXCLUDE_INBOUND_PORTS, &config.exclude_inbound_ports),
    );
    let mut args: Vec<String> = vec![
        "istio-iptables".into(),
        "-p".into(),
        "15001".into(),
        "-z".into(),
        "15006".into(),
        "-u".into(),
        ctx.proxy_uid.to_string(),
        "-m".into(),
        ctx.interception_mode().to_owned(),
        "-i".into(),
        a(ann::INCLUDE_OUTBOUND_IP_RANGES, &config.include_ip_ranges),
        "-x".into(),
        a(ann::EXCLUDE_OUTBOUND_IP_RANGES, &config.exclude_ip_ranges),
        "-b".into(),
        a(ann::INCLUDE_INBOUND_PORTS, &config.include_inbound_ports),
        "-d".into(),
        if excluded.is_empty() {
            "15090,15021".into()
        } else {
            format!("15090,15021,{excluded}")
        },
    ];
    if ctx.annotation(ann::INCLUDE_OUTBOUND_PORTS).is_some() || !config.include_outbound_ports.is_empty() {
        args.extend([
            "-q".into(),
            a(ann::INCLUDE_OUTBOUND_PORTS, &config.include_outbound_ports),
        ]);
    }
    if ctx.annotation(ann::EXCLUDE_OUTBOUND_PORTS).is_some() || !config.exclude_outbound_ports.is_empty() {
        args.extend([
            "-o".into(),
            a(ann::EXCLUDE_OUTBOUND_PORTS, &config.exclude_outbound_ports),
        ]);
    }
    // The newer reroute-virtual-interfaces annotation takes precedence over the KubeVirt one.
    if let Some(k) = ctx
        .annotation(ann::REROUTE_VIRTUAL_INTERFACES)
        .or_else(|| ctx.annotation(ann::KUBEVIRT_INTERFACES))
    {
        args.extend(["-k".into(), k.to_owned()]);
    }
    if let Some(c) = ctx.annotation(ann::EXCLUDE_INTERFACES) {
        args.extend(["-c".into(), c.to_owned()]);
    }
    args.push(format!(
        "--log_output_level={}",
        a(ann::AGENT_LOG_LEVEL, &ctx.config.agent_log_level)
    ));
    if ctx.cni() {
        args.extend(["--run-validation".into(), "--skip-rule-apply".into()]);
    }
    args.into_iter().map(Value::String).collect()
}

fn init_container(ctx: &Settings) -> Value {
    let privileged = ctx.config.proxy.privileged;
    let mut c = json!({
        "name": if ctx.cni() { "istio-validation" } else { "istio-init" },
        "image": ctx.init_image(),
        "args": iptables_args(ctx),
        "resources": resources(ctx),
    });
    if let Some(policy) = ctx.image_pull_policy() {
        c["imagePullPolicy"] = json!(policy);
    }
    let metadata = ctx.proxy_metadata();
    if !metadata.is_empty() {
        c["env"] = Value::Array(metadata.iter().map(|(k, v)| value_env(k, v)).collect());
    }
    c["securityContext"] = if ctx.cni() {
        let (uid, gid) = match (ctx.openshift_uid, ctx.tproxy()) {
            (Some(uid), false) => (uid, uid),
            _ => (ctx.proxy_uid, ctx.proxy_gid),
        };
        json!({
            "allowPrivilegeEscalation": privileged,
            "privileged": privileged,
            "capabilities": {"drop": ["ALL"]},
            "readOnlyRootFilesystem": true,
            "runAsGroup": gid,
            "runAsUser": uid,
            "runAsNonRoot": true,
        })
    } else {
        json!({
            "allowPrivilegeEscalation": privileged,
            "privileged": privileged,
            "capabilities": {"add": ["NET_ADMIN", "NET_RAW"], "drop": ["ALL"]},
            "readOnlyRootFilesystem": false,
            "runAsGroup": 0,
            "runAsNonRoot": false,
            "runAsUser": 0,
        })
    };
    c
}

fn core_dump_container(ctx: &Settings) -> Value {
    let mut c = json!({
        "name": "enable-core-dump",
        "args": ["-c", "sysctl -w kernel.core_pattern=/var/lib/istio/data/core.proxy && ulimit -c unlimited"],
        "command": ["/bin/sh"],
        "image": ctx.init_image(),
        "resources": resources(ctx),
        "securityContext": {
            "allowPrivilegeEscalation": true,
            "capabilities": {"add": ["SYS_ADMIN"], "drop": ["ALL"]},
            "privileged": true,
            "readOnlyRootFilesystem": false,
            "runAsGroup": 0,
            "runAsNonRoot": false,
            "runAsUser": 0,
        },
    });
    if let Some(policy) = ctx.image_pull_policy() {
        c["imagePullPolicy"] = json!(policy);
    }
    c
}

fn sidecar_security_context(ctx: &Settings) -> Value {
    let privileged = ctx.config.proxy.privileged;
    let core_dump = ctx.annotation_or(ann::ENABLE_CORE_DUMP, &ctx.config.proxy.enable_core_dump.to_string()) == "true";
    let tproxy = ctx.tproxy();
    let bind = ctx.annotation_or(
        ann::CAP_NET_BIND_SERVICE,
        &ctx.config.proxy.cap_net_bind_service.to_string(),
    ) == "true";
    let mut capabilities = json!({"drop": ["ALL"]});
    let mut add = Vec::new();
    if tproxy {
        add.push("NET_ADMIN");
    }
    if bind {
        add.push("NET_BIND_SERVICE");
    }
    if !add.is_empty() {
        capabilities["add"] = json!(add);
    }
    let (uid, gid, non_root) = if tproxy || bind {
        (0, 1337, false)
    } else if let Some(uid) = ctx.openshift_uid {
        (uid, uid, true)
    } else {
        (1337, 1337, true)
    };
    json!({
        "allowPrivilegeEscalation": privileged,
        "capabilities": capabilities,
        "privileged": privileged,
        "readOnlyRootFilesystem": !core_dump,
        "runAsGroup": gid,
        "runAsNonRoot": non_root,
        "runAsUser": uid,
    })
}

/// The sidecar's proxy container, without its env (see [`Static::env`]).
fn sidecar_proxy(ctx: &Settings) -> Value {
    let config = ctx.config;
    let status_port = ctx.status_port();
    let args = vec![
        json!("proxy"),
        json!("sidecar"),
        json!("--domain"),
        json!(format!("$(POD_NAMESPACE).svc.{}", config.proxy.cluster_domain)),
        json!(format!(
            "--proxyLogLevel={}",
            ctx.annotation_or(ann::LOG_LEVEL, &config.proxy.log_level)
        )),
        json!(format!(
            "--proxyComponentLogLevel={}",
            ctx.annotation_or(ann::COMPONENT_LOG_LEVEL, &config.proxy.component_log_level)
        )),
        json!(format!(
            "--log_output_level={}",
            ctx.annotation_or(ann::AGENT_LOG_LEVEL, &config.agent_log_level)
        )),
    ];
    let mut c = json!({
        "name": PROXY_NAME,
        "image": ctx.proxy_image(),
        "ports": [{"containerPort": 15090, "protocol": "TCP", "name": "http-envoy-prom"}],
        "args": args,
        "resources": resources(ctx),
        "securityContext": sidecar_security_context(ctx),
        "volumeMounts": proxy_volume_mounts(ctx, true),
    });
    if let Some(lifecycle) = &config.proxy.lifecycle {
        c["lifecycle"] = lifecycle.clone();
    } else if ctx.native {
        c["lifecycle"] = json!({"preStop": {"exec": {"command": [
            "pilot-agent", "request", format!("--debug-port={status_port}"), "POST", "drain"
        ]}}});
    } else if ctx.hold {
        c["lifecycle"] = json!({"postStart": {"exec": {"command": ["pilot-agent", "wait"]}}});
    }
    if let Some(policy) = ctx.image_pull_policy() {
        c["imagePullPolicy"] = json!(policy);
    }
    if status_port != "0" {
        c["readinessProbe"] = readiness_probe(ctx);
        if config.proxy.startup_probe_enabled {
            c["startupProbe"] = json!({
                "httpGet": {"path": "/healthz/ready", "port": 15021},
                "periodSeconds": 1,
                "timeoutSeconds": 3,
                "failureThreshold": config.proxy.startup_probe_failure_threshold,
            });
        }
    }
    if ctx.native {
        c["restartPolicy"] = json!("Always");
    }
    c
}

/// The parts of a built-in template (`sidecar`, `gateway`) that depend only on its [`Settings`]: compiled once for
/// a pod without annotations, rendered per pod otherwise; [`sidecar`] and [`gateway`] add the pod's own parts.
#[derive(Clone, Debug, PartialEq)]
pub struct Static {
    /// Annotations, before the pod's.
    annotations: Vec<(String, String)>,
    /// Init containers.
    init_containers: Vec<Value>,
    /// The proxy container, without `env`.
    proxy: Value,
    /// The proxy's env.
    env: Vec<EnvVar>,
    /// Volumes, but for `istio-certs`.
    volumes: Vec<Value>,
    /// Image pull secrets.
    image_pull_secrets: Vec<String>,
    /// Pod security context.
    pod_security_context: Option<Value>,
}

/// What a built-in template adds that depends on the pod's labels, containers and workload, besides the proxy's env.
pub struct PodParts {
    /// Labels.
    pub labels: Vec<(String, String)>,
    /// Annotations, after the [`Static`] ones.
    pub annotations: Vec<(String, String)>,
    /// `istio-certs`, after the [`Static`] volumes.
    pub certs_volume: Option<Value>,
}

impl Static {
    /// The template's fragment: these parts and the pod's.
    pub fn fragment(self, ctx: &Context, pod: PodParts) -> Fragment {
        let mut annotations = self.annotations;
        annotations.extend(pod.annotations);
        let mut volumes = self.volumes;
        volumes.extend(pod.certs_volume);
        let mut proxy = self.proxy;
        if let Some(map) = proxy.as_object_mut() {
            map.insert("env".into(), fill_env(ctx, self.env));
        }
        Fragment {
            labels: pod.labels,
            annotations,
            init_containers: self.init_containers,
            containers: vec![proxy],
            volumes,
            image_pull_secrets: self.image_pull_secrets,
            pod_security_context: self.pod_security_context,
            spec_rest: Map::new(),
            metadata_patches: Vec::new(),
        }
    }

    /// The same fragment with stand-ins for the items of these parts, for a pod whose patch is written from their
    /// compiled text (see [`super::compile::StandIns`]): each is only its name, and the proxy also an empty `env`
    /// that later stages may append to; the volumes have one stand-in for them all.
    pub fn stand_in_fragment(&self, pod: PodParts) -> Fragment {
        let stand_in = |item: &Value| {
            let mut map = Map::new();
            map.insert("name".into(), item.get("name").cloned().unwrap_or(Value::Null));
            map
        };
        let mut annotations = Vec::with_capacity(self.annotations.len() + pod.annotations.len());
        annotations.extend_from_slice(&self.annotations);
        annotations.extend(pod.annotations);
        // One stand-in for all the compiled volumes (see [`COMPILED_VOLUMES`]).
        let mut volumes = Vec::with_capacity(2);
        if !self.volumes.is_empty() {
            let mut block = Map::new();
            block.insert("name".into(), Value::String(COMPILED_VOLUMES.to_owned()));
            volumes.push(Value::Object(block));
        }
        volumes.extend(pod.certs_volume);
        let mut proxy = stand_in(&self.proxy);
        proxy.insert("env".into(), Value::Array(Vec::new()));
        Fragment {
            labels: pod.labels,
            annotations,
            init_containers: {
                // Room for the proxy, which a native sidecar moves here.
                let mut items = Vec::with_capacity(self.init_containers.len() + 1);
                items.extend(self.init_containers.iter().map(|c| Value::Object(stand_in(c))));
                items
            },
            containers: vec![Value::Object(proxy)],
            volumes,
            image_pull_secrets: self.image_pull_secrets.clone(),
            pod_security_context: self.pod_security_context.clone(),
            spec_rest: Map::new(),
            metadata_patches: Vec::new(),
        }
    }

    /// Init containers.
    pub fn init_containers(&self) -> &[Value] {
        &self.init_containers
    }

    /// The proxy container, without `env`.
    pub fn proxy_container(&self) -> &Value {
        &self.proxy
    }

    /// The proxy's env.
    pub fn env(&self) -> &[EnvVar] {
        &self.env
    }

    /// Volumes, but for `istio-certs`.
    pub fn volumes(&self) -> &[Value] {
        &self.volumes
    }
}

/// What the `sidecar` template adds whatever the pod's labels, containers and workload.
pub fn sidecar_static(ctx: &Settings) -> Static {
    let mut init_containers = Vec::new();
    if ctx.interception_mode() != "NONE" {
        init_containers.push(init_container(ctx));
    }
    if ctx.annotation_or(ann::ENABLE_CORE_DUMP, &ctx.config.proxy.enable_core_dump.to_string()) == "true" {
        init_containers.push(core_dump_container(ctx));
    }
    Static {
        annotations: vec![(ann::REVISION.to_owned(), ctx.config.revision_label().to_owned())],
        init_containers,
        proxy: sidecar_proxy(ctx),
        env: proxy_env(ctx, false),
        volumes: proxy_volumes(ctx, true),
        image_pull_secrets: ctx.config.image_pull_secrets.clone(),
        pod_security_context: None,
    }
}

/// The `sidecar` template's parts that depend on the pod.
pub fn sidecar_pod_parts(ctx: &Context) -> PodParts {
    // The mode, the two canonical labels and the network.
    let mut labels = Vec::with_capacity(4);
    labels.push((
        ann::TLS_MODE.to_owned(),
        ctx.label(ann::TLS_MODE).unwrap_or("istio").to_owned(),
    ));
    labels.extend(canonical_labels(ctx));
    if let Some(network) = &ctx.config.network
        && ctx.label("topology.istio.io/network").is_none()
    {
        labels.push(("topology.istio.io/network".to_owned(), network.clone()));
    }
    let mut annotations = default_container_annotations(ctx, false);
    if ctx.cni() {
        cni_annotations(ctx, &mut annotations);
    }
    PodParts {
        labels,
        annotations,
        certs_volume: certs_volume(ctx),
    }
}

/// The `sidecar` template: its [`Static`] parts (from [`sidecar_static`]) and the pod's.
pub fn sidecar(ctx: &Context, parts: Static) -> Fragment {
    parts.fragment(ctx, sidecar_pod_parts(ctx))
}

/// With the CNI plugin doing the capture, the pod carries its capture settings as annotations for the plugin.
fn cni_annotations(ctx: &Context, out: &mut Vec<(String, String)>) {
    let p = &ctx.config.proxy;
    if !ctx.config.cni.chained {
        let existing = ctx.annotation(ann::MULTUS_NETWORKS).unwrap_or("");
        let namespace = if ctx.workload.namespace.is_empty() {
            "default"
        } else {
            &ctx.workload.namespace
        };
        out.push((
            ann::MULTUS_NETWORKS.to_owned(),
            append_multus_network(existing, "istio-cni", namespace),
        ));
    }
    out.push((ann::INTERCEPTION_MODE.to_owned(), ctx.interception_mode().to_owned()));
    for (key, default) in [
        (ann::INCLUDE_OUTBOUND_IP_RANGES, &p.include_ip_ranges),
        (ann::EXCLUDE_OUTBOUND_IP_RANGES, &p.exclude_ip_ranges),
        (ann::INCLUDE_INBOUND_PORTS, &p.include_inbound_ports),
    ] {
        let v = ctx.annotation_or(key, default);
        if !v.is_empty() {
            out.push((key.to_owned(), v));
        }
    }
    out.push((
        ann::EXCLUDE_INBOUND_PORTS.to_owned(),
        exclude_inbound_port(
            &ctx.status_port(),
            &ctx.annotation_or(ann::EXCLUDE_INBOUND_PORTS, &p.exclude_inbound_ports),
        ),
    ));
    for (key, default) in [
        (ann::INCLUDE_OUTBOUND_PORTS, &p.include_outbound_ports),
        (ann::EXCLUDE_OUTBOUND_PORTS, &p.exclude_outbound_ports),
    ] {
        if ctx.annotation(key).is_some() || !default.is_empty() {
            out.push((key.to_owned(), ctx.annotation_or(key, default)));
        }
    }
    for key in [ann::KUBEVIRT_INTERFACES, ann::EXCLUDE_INTERFACES] {
        if let Some(v) = ctx.annotation(key) {
            out.push((key.to_owned(), v.to_owned()));
        }
    }
}

/// Adds `<namespace>/<network>` to a Multus networks annotation, which is either a comma-separated list or a JSON
/// list (extended as text, so the user's formatting is kept).
pub fn append_multus_network(existing: &str, network: &str, namespace: &str) -> String {
    let trimmed = existing.trim();
    if trimmed.is_empty() {
        return format!("{namespace}/{network}");
    }
    if trimmed.starts_with('[') {
        if let Ok(Value::Array(items)) = serde_json::from_str::<Value>(trimmed)
            && items.iter().any(|i| i["name"] == network)
        {
            return existing.to_owned();
        }
        let body = trimmed.trim_end_matches(']').trim_end();
        let sep = if body.ends_with('[') { "" } else { ", " };
        return format!("{body}{sep}{{\"name\": \"{network}\", \"namespace\": \"{namespace}\"}}]");
    }
    if trimmed.split(',').any(|n| {
        let n = n.trim();
        n == network || n.ends_with(&format!("/{network}"))
    }) {
        return existing.to_owned();
    }
    format!("{trimmed}, {namespace}/{network}")
}

/// What the `gateway` template (the pod *is* the proxy, `proxy router`, no traffic capture) adds whatever the
/// pod's labels, containers and workload.
pub fn gateway_static(ctx: &Settings) -> Static {
    let config = ctx.config;
    let mut proxy = json!({
        "name": PROXY_NAME,
        "image": ctx.proxy_image(),
        "ports": [{"containerPort": 15090, "protocol": "TCP", "name": "http-envoy-prom"}],
        "args": [
            "proxy", "router", "--domain", format!("$(POD_NAMESPACE).svc.{}", config.proxy.cluster_domain),
            format!("--proxyLogLevel={}", ctx.annotation_or(ann::LOG_LEVEL, &config.proxy.log_level)),
            format!("--proxyComponentLogLevel={}", ctx.annotation_or(ann::COMPONENT_LOG_LEVEL, &config.proxy.component_log_level)),
            format!("--log_output_level={}", ctx.annotation_or(ann::AGENT_LOG_LEVEL, &config.agent_log_level)),
        ],
        "readinessProbe": {
            "httpGet": {"path": "/healthz/ready", "port": 15021},
            "periodSeconds": config.proxy.readiness_period_seconds,
            "timeoutSeconds": 3,
            "failureThreshold": config.proxy.readiness_failure_threshold,
        },
        "securityContext": {"runAsUser": 1337, "runAsGroup": 1337},
        "volumeMounts": proxy_volume_mounts(ctx, false),
    });
    if config.proxy.readiness_initial_delay_seconds != 0 {
        proxy["readinessProbe"]["initialDelaySeconds"] = json!(config.proxy.readiness_initial_delay_seconds);
    }
    if let Some(lifecycle) = &config.proxy.lifecycle {
        proxy["lifecycle"] = lifecycle.clone();
    }
    if let Some(policy) = ctx.image_pull_policy() {
        proxy["imagePullPolicy"] = json!(policy);
    }
    Static {
        annotations: vec![(ann::REVISION.to_owned(), config.revision_label().to_owned())],
        init_containers: Vec::new(),
        proxy,
        env: proxy_env(ctx, true),
        volumes: proxy_volumes(ctx, false),
        image_pull_secrets: config.image_pull_secrets.clone(),
        pod_security_context: Some(json!({"sysctls": [{"name": "net.ipv4.ip_unprivileged_port_start", "value": "0"}]})),
    }
}

/// The `gateway` template's parts that depend on the pod.
pub fn gateway_pod_parts(ctx: &Context) -> PodParts {
    PodParts {
        labels: canonical_labels(ctx).into(),
        annotations: default_container_annotations(ctx, true),
        certs_volume: certs_volume(ctx),
    }
}

/// The `gateway` template: its [`Static`] parts (from [`gateway_static`]) and the pod's.
pub fn gateway(ctx: &Context, parts: Static) -> Fragment {
    parts.fragment(ctx, gateway_pod_parts(ctx))
}

fn full_app_containers(ctx: &Context) -> Vec<String> {
    containers(ctx.full_spec)
        .iter()
        .filter_map(|c| c["name"].as_str())
        .filter(|n| *n != PROXY_NAME)
        .map(str::to_owned)
        .collect()
}

/// The `grpc-agent` template (proxyless gRPC with the agent): the agent runs without Envoy (`DISABLE_ENVOY`),
/// serves xDS and certificates to the application over a shared volume, and the application containers get the
/// gRPC xDS bootstrap.
pub fn grpc_agent(ctx: &Context) -> Fragment {
    let config = ctx.config;
    let apps = full_app_containers(ctx);
    let mut f = Fragment {
        labels: canonical_labels(ctx).into(),
        ..Fragment::default()
    };
    if let Some(first) = apps.first() {
        for key in [ann::DEFAULT_LOGS_CONTAINER, ann::DEFAULT_CONTAINER] {
            if ctx.annotation(key).is_none() {
                f.annotations.push((key.to_owned(), first.clone()));
            }
        }
    }
    f.annotations
        .push((ann::REWRITE_APP_HTTP_PROBERS.to_owned(), "false".to_owned()));
    f.annotations
        .push((ann::REVISION.to_owned(), config.revision_label().to_owned()));
    let mut env = vec![
        value_env("ISTIO_META_GENERATOR", "grpc"),
        value_env("OUTPUT_CERTS", "/var/lib/istio/data"),
        value_env("PILOT_CERT_PROVIDER", &config.pilot_cert_provider),
        value_env("CA_ADDR", config.ca_address()),
        field_env("POD_NAME", "metadata.name"),
        field_env("POD_NAMESPACE", "metadata.namespace"),
        field_env("INSTANCE_IP", "status.podIP"),
        field_env("SERVICE_ACCOUNT", "spec.serviceAccountName"),
        field_env("HOST_IP", "status.hostIP"),
        value_env("PROXY_CONFIG", format!("{}\n", ctx.proxy_config_json)),
        value_env("ISTIO_META_POD_PORTS", pod_ports(ctx.full_spec)),
        value_env("ISTIO_META_APP_CONTAINERS", apps.join(",")),
        value_env("ISTIO_META_CLUSTER_ID", &config.cluster_id),
    ];
    if let Some(network) = &config.network {
        env.push(value_env("ISTIO_META_NETWORK", network));
    }
    env.push(field_env("ISTIO_META_NODE_NAME", "spec.nodeName"));
    if !ctx.workload.name.is_empty() {
        let name = ctx.label(ann::WORKLOAD_NAME).unwrap_or(&ctx.workload.name);
        env.push(value_env("ISTIO_META_WORKLOAD_NAME", name));
        if !ctx.workload.api_version.is_empty() {
            env.push(value_env("ISTIO_META_OWNER", ctx.workload.owner_uri()));
        }
    }
    let mesh_id = config.mesh_id.clone().unwrap_or_else(|| ctx.trust_domain().to_owned());
    if !mesh_id.is_empty() {
        env.push(value_env("ISTIO_META_MESH_ID", mesh_id));
    }
    if !ctx.trust_domain().is_empty() {
        env.push(value_env("TRUST_DOMAIN", ctx.trust_domain()));
    }
    for (k, v) in ctx.proxy_metadata() {
        env.push(value_env(&k, v));
    }
    // gRPC resolves xds:/// names itself: no DNS capture, no Envoy.
    env.push(value_env("ISTIO_META_DNS_CAPTURE", "false"));
    env.push(value_env("DISABLE_ENVOY", "true"));
    let mut proxy = json!({
        "name": PROXY_NAME,
        "image": ctx.proxy_image(),
        "ports": [{"containerPort": 15020, "protocol": "TCP", "name": "mesh-metrics"}],
        "args": [
            "proxy", "sidecar", "--domain", format!("$(POD_NAMESPACE).svc.{}", config.proxy.cluster_domain),
            format!("--proxyLogLevel={}", ctx.annotation_or(ann::LOG_LEVEL, &config.proxy.log_level)),
            format!("--proxyComponentLogLevel={}", ctx.annotation_or(ann::COMPONENT_LOG_LEVEL, &config.proxy.component_log_level)),
            format!("--log_output_level={}", ctx.annotation_or(ann::AGENT_LOG_LEVEL, &config.agent_log_level)),
        ],
        "lifecycle": {"postStart": {"exec": {"command": ["pilot-agent", "wait", "--url=http://localhost:15020/healthz/ready"]}}},
        "env": env,
        "resources": resources(ctx),
    });
    if let Some(policy) = ctx.image_pull_policy() {
        proxy["imagePullPolicy"] = json!(policy);
    }
    if ctx.status_port() != "0" {
        let mut probe = readiness_probe(ctx);
        probe["httpGet"]["port"] = json!(15020);
        proxy["readinessProbe"] = probe;
    }
    let istiod_ca = config.pilot_cert_provider == "istiod";
    let mut mounts = vec![
        json!({"name": "workload-socket", "mountPath": "/var/run/secrets/workload-spiffe-uds"}),
        json!({"name": "workload-certs", "mountPath": "/var/run/secrets/workload-spiffe-credentials"}),
    ];
    if istiod_ca {
        mounts.push(json!({"mountPath": "/var/run/secrets/istio", "name": "istiod-ca-cert"}));
    }
    mounts.extend([
        json!({"mountPath": "/var/lib/istio/data", "name": "istio-data"}),
        json!({"mountPath": "/etc/istio/proxy", "name": "istio-xds"}),
        json!({"mountPath": "/var/run/secrets/tokens", "name": "istio-token"}),
    ]);
    if config.mount_mtls_certs {
        mounts.push(json!({"mountPath": "/etc/certs/", "name": "istio-certs", "readOnly": true}));
    }
    mounts.push(json!({"name": "istio-podinfo", "mountPath": "/etc/istio/pod"}));
    proxy["volumeMounts"] = Value::Array(mounts);
    f.containers.push(proxy);
    for app in &apps {
        f.containers.push(json!({
            "name": app,
            "env": [
                {"name": "GRPC_XDS_EXPERIMENTAL_SECURITY_SUPPORT", "value": "true"},
                {"name": "GRPC_XDS_BOOTSTRAP", "value": "/etc/istio/proxy/grpc-bootstrap.json"},
            ],
            "volumeMounts": [
                {"mountPath": "/var/lib/istio/data", "name": "istio-data"},
                {"mountPath": "/etc/istio/proxy", "name": "istio-xds"},
                {"name": "workload-certs", "mountPath": "/var/run/secrets/workload-spiffe-credentials"},
            ],
        }));
    }
    f.volumes.push(json!({"name": "workload-socket"}));
    f.volumes.push(json!({"name": "workload-certs"}));
    if let Some(config_map) = ctx.annotation(ann::BOOTSTRAP_OVERRIDE) {
        f.volumes
            .push(json!({"name": "custom-bootstrap-volume", "configMap": {"name": config_map}}));
    }
    f.volumes.extend([
        json!({"name": "istio-xds", "emptyDir": {"medium": "Memory"}}),
        json!({"name": "istio-data", "emptyDir": {}}),
        json!({"name": "istio-podinfo", "downwardAPI": {"items": [
            {"path": "labels", "fieldRef": {"fieldPath": "metadata.labels"}},
            {"path": "annotations", "fieldRef": {"fieldPath": "metadata.annotations"}},
        ]}}),
        json!({"name": "istio-token", "projected": {"sources": [
            {"serviceAccountToken": {"path": "istio-token", "expirationSeconds": 43200, "audience": "istio-ca"}}
        ]}}),
    ]);
    if istiod_ca {
        f.volumes
            .push(json!({"name": "istiod-ca-cert", "configMap": {"name": "istio-ca-root-cert"}}));
    }
    if config.mount_mtls_certs {
        let sa = ctx.full_spec["serviceAccountName"]
            .as_str()
            .filter(|s| !s.is_empty())
            .unwrap_or("default");
        f.volumes
            .push(json!({"name": "istio-certs", "secret": {"optional": true, "secretName": format!("istio.{sa}")}}));
    }
    f.image_pull_secrets = config.image_pull_secrets.clone();
    f
}

/// The shell script of `grpc-simple`'s init container: writes a gRPC xDS bootstrap pointing at istiod.
const GRPC_BOOTSTRAP_SCRIPT: &str = r#"NODE_ID="sidecar~${INSTANCE_IP}~${POD_NAME}.${POD_NAMESPACE}~cluster.local"
SERVER_URI="dns:///istiod.${ISTIO_NAMESPACE}.svc:15010"
echo '
{
  "xds_servers": [
    {
      "server_uri": "'${SERVER_URI}'",
      "channel_creds": [{"type": "insecure"}],
      "server_features" : ["xds_v3"]
    }
  ],
  "node": {
    "id": "'${NODE_ID}'",
    "metadata": {
      "GENERATOR": "grpc"
    }
  }
}' > /var/lib/grpc/data/bootstrap.json"#;

/// The `grpc-simple` template (proxyless gRPC without an agent): an init container writes a plaintext xDS
/// bootstrap, and every container reads it.
pub fn grpc_simple(ctx: &Context) -> Fragment {
    let mount = json!({"mountPath": "/var/lib/grpc/data/", "name": "grpc-io-proxyless-bootstrap"});
    let mut f = Fragment::default();
    f.annotations
        .push((ann::REWRITE_APP_HTTP_PROBERS.to_owned(), "false".to_owned()));
    f.init_containers.push(json!({
        "name": "grpc-bootstrap-init",
        "image": "busybox:1.28",
        "volumeMounts": [mount],
        "env": [
            field_env("INSTANCE_IP", "status.podIP"),
            field_env("POD_NAME", "metadata.name"),
            field_env("POD_NAMESPACE", "metadata.namespace"),
            {"name": "ISTIO_NAMESPACE", "value": format!("{}\n", ctx.config.istio_namespace)},
        ],
        "command": ["sh", "-c", GRPC_BOOTSTRAP_SCRIPT],
    }));
    for c in containers(ctx.full_spec) {
        let Some(name) = c["name"].as_str() else { continue };
        f.containers.push(json!({
            "name": name,
            "env": [
                {"name": "GRPC_XDS_BOOTSTRAP", "value": "/var/lib/grpc/data/bootstrap.json"},
                {"name": "GRPC_GO_LOG_VERBOSITY_LEVEL", "value": "99"},
                {"name": "GRPC_GO_LOG_SEVERITY_LEVEL", "value": "info"},
            ],
            "volumeMounts": [mount],
        }));
    }
    f.volumes
        .push(json!({"name": "grpc-io-proxyless-bootstrap", "emptyDir": {}}));
    f
}

/// Istio's `.Values`, as far as mizzen's configuration knows them.
fn values_tree(ctx: &Context) -> Value {
    let c = ctx.config;
    let p = &c.proxy;
    let resources: Map<String, Value> = p
        .resources
        .iter()
        .map(|(kind, entries)| {
            (
                kind.clone(),
                Value::Object(
                    entries
                        .iter()
                        .filter_map(|(k, v)| v.as_ref().map(|v| (k.clone(), json!(v))))
                        .collect(),
                ),
            )
        })
        .collect();
    json!({
        "revision": c.revision,
        "global": {
            "hub": c.hub,
            "tag": c.tag,
            "imagePullPolicy": c.image_pull_policy.clone().unwrap_or_default(),
            "imagePullSecrets": c.image_pull_secrets,
            "istioNamespace": c.istio_namespace,
            "network": c.network.clone().unwrap_or_default(),
            "meshID": c.mesh_id.clone().unwrap_or_default(),
            "caAddress": c.ca_address.clone().unwrap_or_default(),
            "pilotCertProvider": c.pilot_cert_provider,
            "jwtPolicy": "third-party-jwt",
            "sds": {"token": {"aud": "istio-ca"}},
            "mountMtlsCerts": c.mount_mtls_certs,
            "logging": {"level": c.agent_log_level},
            "multiCluster": {"clusterName": c.cluster_id},
            "trustDomain": c.mesh.trust_domain,
            "proxy": {
                "image": p.image,
                "clusterDomain": p.cluster_domain,
                "logLevel": p.log_level,
                "componentLogLevel": p.component_log_level,
                "includeIPRanges": p.include_ip_ranges,
                "excludeIPRanges": p.exclude_ip_ranges,
                "includeInboundPorts": p.include_inbound_ports,
                "excludeInboundPorts": p.exclude_inbound_ports,
                "includeOutboundPorts": p.include_outbound_ports,
                "excludeOutboundPorts": p.exclude_outbound_ports,
                "statusPort": p.status_port,
                "readinessInitialDelaySeconds": p.readiness_initial_delay_seconds,
                "readinessPeriodSeconds": p.readiness_period_seconds,
                "readinessFailureThreshold": p.readiness_failure_threshold,
                "privileged": p.privileged,
                "enableCoreDump": p.enable_core_dump,
                "holdApplicationUntilProxyStarts": p.hold_application_until_proxy_starts,
                "resources": resources,
                "lifecycle": p.lifecycle.clone().unwrap_or(Value::Null),
                "startupProbe": {"enabled": p.startup_probe_enabled, "failureThreshold": p.startup_probe_failure_threshold},
            },
            "proxy_init": {"image": p.init_image},
        },
        "sidecarInjectorWebhook": {"rewriteAppHTTPProbe": c.rewrite_app_http_probe},
    })
}

/// The data a user template sees, named as Istio's `SidecarTemplateData`: `.TypeMeta` (the workload's kind and
/// apiVersion), `.DeploymentMeta` (its name and namespace), `.ObjectMeta` (the pod's metadata), `.Spec` (the pod's
/// spec), `.ProxyConfig` (effective, camelCase fields), `.MeshConfig`, `.Values` (Istio's values as mizzen knows
/// them: `global.hub`, `global.tag`, `global.proxy.*`, …), `.Revision`, `.ProxyImage`, `.NativeSidecars`,
/// `.ProxyUID`, `.ProxyGID`.
pub fn template_data(ctx: &Context, metadata: &Value) -> Value {
    // Empty for a manifest given to kube-inject that names no namespace, as Istio's: its own template writes
    // `valueOrDefault .DeploymentMeta.Namespace "default"` where it needs one, and `otelResourceAttributes` is given it
    // as it is (so a template of one's own gets the value the built-in one writes).
    let namespace = &ctx.workload.namespace;
    json!({
        "TypeMeta": {"kind": ctx.workload.kind, "apiVersion": ctx.workload.api_version},
        "DeploymentMeta": {"name": ctx.workload.name, "namespace": namespace},
        "ObjectMeta": metadata,
        "Spec": ctx.full_spec,
        "ProxyConfig": ctx.proxy_config,
        "MeshConfig": {
            "trustDomain": ctx.trust_domain(),
            "defaultConfig": ctx.config.mesh.default_config,
            "extensionProviders": ctx.config.mesh.extension_providers,
        },
        "Values": values_tree(ctx),
        "Revision": ctx.config.revision_label(),
        "ProxyImage": ctx.proxy_image(),
        "NativeSidecars": ctx.native,
        "ProxyUID": ctx.proxy_uid,
        "ProxyGID": ctx.proxy_gid,
        "CompliancePolicy": ctx.config.compliance_policy.clone().unwrap_or_default(),
        "InboundTrafficPolicyMode": if ctx.config.mesh.inbound_localhost { "LOCALHOST" } else { "" },
    })
}

/// Runs a user template: renders it over [`template_data`] and reads the result as a pod fragment.
pub fn user(
    ctx: &Context,
    name: &str,
    template: &super::gotemplate::Template,
    metadata: &Value,
) -> Result<Fragment, String> {
    let text = template
        .execute(&template_data(ctx, metadata))
        .map_err(|e| e.to_string())?;
    let pod: Value =
        serde_saphyr::from_str(&text).map_err(|e| format!("template {name:?} rendered invalid YAML: {e}"))?;
    Fragment::from_pod(name, &pod)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pod_ports_are_laid_out_as_istios_template_lays_them_out() {
        assert_eq!(pod_ports(&json!({"containers": [{"name": "a"}]})), "[\n]");
        let spec = json!({"containers": [
            {"name": "a", "ports": [{"containerPort": 80, "name": "http", "protocol": "TCP"}]},
            {"name": "b"},
            {"name": "c", "ports": [{"containerPort": 9090, "hostIP": "a&b"}, {"containerPort": 1}]},
        ]});
        assert_eq!(
            pod_ports(&spec),
            concat!(
                "[\n    {\"name\":\"http\",\"containerPort\":80,\"protocol\":\"TCP\"}",
                "\n    ,{\"containerPort\":9090,\"hostIP\":\"a\\u0026b\"}",
                "\n    ,{\"containerPort\":1}\n]"
            )
        );
    }

    #[test]
    fn env_holes_give_each_variable_its_entries_in_order() {
        let mut holes = EnvHoles::default();
        for (i, name, value) in [(1, "A", "a"), (1, "B", ""), (3, "C", "c")] {
            holes.push(i, name, value);
        }
        let of = |i| {
            holes
                .of(i)
                .map(|e| String::from_utf8(e.to_vec()).unwrap())
                .collect::<Vec<_>>()
        };
        assert_eq!(of(1), [r#"{"name":"A","value":"a"}"#, r#"{"name":"B"}"#]);
        assert_eq!(of(3), [r#"{"name":"C","value":"c"}"#]);
        assert!(of(0).is_empty() && of(2).is_empty() && of(99).is_empty());
    }

    #[test]
    fn env_entries_are_written_as_their_values_serialise() {
        for (name, value) in [
            ("ISTIO_META_APP_CONTAINERS", "web,worker"),
            ("ISTIO_META_WORKLOAD_NAME", ""),
            (
                "ISTIO_META_POD_PORTS",
                "[\n    {\"containerPort\":80,\"protocol\":\"TCP\"}\n]",
            ),
            (
                "ISTIO_META_OWNER",
                "kubernetes://apis/v1/namespaces/ns/pods/\u{7f}\u{1}é\\\"</>",
            ),
        ] {
            let want = serde_json::to_vec(&value_env(name, value)).unwrap();
            let mut text = b"[".to_vec();
            write_env_entry(&mut text, name, value);
            assert_eq!(
                String::from_utf8(text).unwrap(),
                format!("[{}", String::from_utf8(want).unwrap())
            );
        }
    }

    #[test]
    fn status_port_joins_excluded_ports_once() {
        assert_eq!(exclude_inbound_port("15020", ""), "15020");
        assert_eq!(exclude_inbound_port("15020", "4,5,6"), "4,5,6,15020");
        assert_eq!(exclude_inbound_port("0", "4,5"), "4,5");
        assert_eq!(exclude_inbound_port("5", "4,5"), "4,5");
    }

    #[test]
    fn multus_networks_append_in_either_form() {
        assert_eq!(append_multus_network("", "istio-cni", "default"), "default/istio-cni");
        assert_eq!(append_multus_network("a, b", "istio-cni", "ns"), "a, b, ns/istio-cni");
        assert_eq!(
            append_multus_network(r#"[{"name": "a"}]"#, "istio-cni", "ns"),
            r#"[{"name": "a"}, {"name": "istio-cni", "namespace": "ns"}]"#
        );
    }
}
