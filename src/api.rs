//! The `MeshInstall` custom resource (`mizzen.io/v1alpha1`): what a user asks for and what mizzen reports back.
//!
//! Field names follow Istio's (`meshConfig`, `holdApplicationUntilProxyStarts`, …) wherever Istio has one, so that
//! Istio users recognise them. The CRD schema, CEL rules and defaults are derived from these types; `config/crd/` is
//! generated from them by `mizzenctl crd`.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::ResourceRequirements;
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, LabelSelector};
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// API group of every mizzen resource.
pub const GROUP: &str = "mizzen.io";
/// The only served version.
pub const VERSION: &str = "v1alpha1";
/// Istio release installed when `spec.version` is not given.
pub const DEFAULT_ISTIO_VERSION: &str = "1.28.0";
/// Image registry used when `spec.hub` is not given.
pub const DEFAULT_HUB: &str = "docker.io/istio";
/// Namespace of the control plane when `spec.namespace` is not given.
pub const DEFAULT_NAMESPACE: &str = "istio-system";

/// Desired state of an Istio-compatible service mesh: control plane, gateways, mesh-wide proxy settings and sidecar
/// injection. Cluster-scoped; one MeshInstall per revision.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "mizzen.io",
    version = "v1alpha1",
    kind = "MeshInstall",
    plural = "meshinstalls",
    singular = "meshinstall",
    shortname = "mi",
    category = "mizzen",
    status = "MeshInstallStatus",
    derive = "PartialEq",
    doc = "MeshInstall installs and runs an Istio-compatible service mesh: istiod, gateways, mesh configuration and \
           the mizzen sidecar-injection webhook for one revision.",
    // Raw JSON columns: the structured form repeats `type_ = "string"`, which clippy flags as duplicated attributes.
    printcolumn = r#"{"name":"Revision","type":"string","jsonPath":".spec.revision","description":"Control-plane revision; empty is the default revision"}"#,
    printcolumn = r#"{"name":"Version","type":"string","jsonPath":".spec.version","description":"Istio version (image tag)"}"#,
    printcolumn = r#"{"name":"Ready","type":"string","jsonPath":".status.ready","description":"Ready components / desired components"}"#,
    printcolumn = r#"{"name":"Proxies","type":"string","jsonPath":".status.proxies","description":"Injected pods this install serves that run its proxy image and revision / all of them"}"#,
    printcolumn = r#"{"name":"Status","type":"string","jsonPath":".status.state","description":"Healthy, Progressing, Error or Paused"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("!has(self.revisionTags) || !has(self.revision) || !(self.revision in self.revisionTags)").message("spec.revisionTags must not list the install's own revision"))]
pub struct MeshInstallSpec {
    /// Istio version to run, used as the image tag of istiod (`<hub>/pilot:<version>`) and of every proxy and gateway
    /// (`<hub>/proxyv2:<version>`). Changing it rolls the control plane and gateways; injected pods pick the new proxy
    /// up when they are recreated.
    #[serde(default = "default_version")]
    #[schemars(length(max = 128))]
    #[x_kube(validation = Rule::new("self.size() > 0 && self.size() <= 128").message("spec.version must be a non-empty image tag of at most 128 characters"))]
    pub version: String,

    /// Image registry of the Istio images, such as `docker.io/istio` or a private mirror.
    #[serde(default = "default_hub")]
    #[schemars(length(max = 255))]
    #[x_kube(validation = Rule::new("self.size() > 0 && self.size() <= 255").message("spec.hub must be a non-empty registry of at most 255 characters"))]
    pub hub: String,

    /// Namespace where istiod, the gateways and the mesh ConfigMap live. Created if missing. Immutable.
    #[serde(default = "default_namespace")]
    #[schemars(length(max = 63))]
    #[x_kube(
        validation = Rule::new("self.matches('^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$')").message("spec.namespace must be a DNS label (lower-case letters, digits and '-', at most 63 characters)"),
        validation = Rule::new("self == oldSelf").message("spec.namespace is immutable: create a new MeshInstall instead"),
        validation = Rule::new("!(self in ['kube-system', 'kube-public', 'kube-node-lease', 'mizzen-system'])").message("spec.namespace must not be kube-system, kube-public, kube-node-lease or mizzen-system")
    )]
    pub namespace: String,

    /// Control-plane revision. Empty for the default revision (istiod, label `istio.io/rev=default`, namespaces
    /// labelled `istio-injection=enabled`); otherwise resources are named `istiod-<revision>` and namespaces opt in
    /// with `istio.io/rev=<revision>`. Immutable.
    #[serde(default)]
    #[schemars(length(max = 63))]
    #[x_kube(
        validation = Rule::new("self == '' || self.matches('^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$')").message("spec.revision must be empty or a DNS label (lower-case letters, digits and '-', at most 63 characters)"),
        validation = Rule::new("self != 'default'").message("spec.revision 'default' is reserved: leave it empty for the default revision"),
        validation = Rule::new("self == oldSelf").message("spec.revision is immutable: create a new MeshInstall for a new revision")
    )]
    pub revision: String,

    /// Revision tags this install serves, as Istio's `istioctl tag set <tag> --revision <revision>`: namespaces
    /// labelled `istio.io/rev=<tag>` (and pods labelled so) are injected by this install. Moving a tag to another
    /// MeshInstall (remove it here, add it there) moves new pods without relabelling namespaces. The tag `default`
    /// also takes namespaces labelled `istio-injection=enabled` from the default revision. When two MeshInstalls
    /// list one tag, the older keeps it and the younger reports a `Conflict`; a tag may not name an existing
    /// revision.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(
        length(max = 16),
        inner(length(max = 63), regex(pattern = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"))
    )]
    #[schemars(extend("x-kubernetes-list-type" = "set"))]
    pub revision_tags: Vec<String>,

    /// Mesh-wide configuration, rendered into ConfigMap `istio` (key `mesh`) and read by istiod and every proxy.
    /// Common fields are typed; any other MeshConfig field is passed through as given.
    #[serde(default)]
    pub mesh_config: MeshConfig,

    /// Settings of the injected `istio-proxy` sidecar and its `istio-init` container.
    #[serde(default)]
    pub proxy: ProxySpec,

    /// Which pods get the sidecar, and how the API server calls the injection webhook.
    #[serde(default)]
    pub injection: InjectionSpec,

    /// The istiod Deployment.
    #[serde(default)]
    pub control_plane: ControlPlaneSpec,

    /// Ingress and egress gateways run in `spec.namespace`. Names must be unique.
    #[serde(default)]
    #[schemars(length(max = 16))]
    #[x_kube(
        merge_strategy = ListMerge::Map(vec!["name".into()]),
        validation = Rule::new("self.all(g, self.exists_one(h, h.name == g.name))").message("spec.gateways names must be unique")
    )]
    pub gateways: Vec<GatewaySpec>,

    /// Observability addons, run in `spec.namespace` with the names Istio's samples give them: Prometheus (Service
    /// `prometheus:9090`), Grafana (`grafana:3000`) and Jaeger (`tracing:80`, `zipkin:9411`). For trying the mesh
    /// out and for workshops: one replica each, data kept in memory. Disabling an addon deletes it.
    #[serde(default)]
    pub addons: AddonsSpec,

    /// Upgrades of the data plane: whether the operator restarts workloads whose injected proxies are outdated
    /// (another image or revision than this install's) once this install serves them.
    #[serde(default)]
    pub data_plane: DataPlaneSpec,
}

fn default_version() -> String {
    DEFAULT_ISTIO_VERSION.to_owned()
}
fn default_hub() -> String {
    DEFAULT_HUB.to_owned()
}
fn default_namespace() -> String {
    DEFAULT_NAMESPACE.to_owned()
}

/// Mesh configuration (Istio `MeshConfig`). Unknown fields are kept and rendered as given.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("x-kubernetes-preserve-unknown-fields" = true))]
pub struct MeshConfig {
    /// File the proxies write access logs to, such as `/dev/stdout`. Empty disables access logging.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub access_log_file: Option<String>,

    /// Encoding of the access log: `TEXT` or `JSON`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub access_log_encoding: Option<AccessLogEncoding>,

    /// Envoy access-log format string; empty uses Istio's default format.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub access_log_format: Option<String>,

    /// Merge the application's Prometheus metrics with the proxy's on the agent's port 15020 (Istio's default: true).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub enable_prometheus_merge: Option<bool>,

    /// Enable tracing in the proxies (Istio's default: true).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub enable_tracing: Option<bool>,

    /// Trust domain of workload identities (Istio's default: `cluster.local`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trust_domain: Option<String>,

    /// Default proxy configuration (Istio `ProxyConfig`) for every injected proxy and gateway. A pod can override it
    /// with the `proxy.istio.io/config` annotation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default_config: Option<ProxyConfig>,

    /// Any other MeshConfig field, passed through unchanged (for example `outboundTrafficPolicy`,
    /// `extensionProviders`; the injector reads an OpenTelemetry provider's `serviceAttributeEnrichment`).
    #[serde(flatten)]
    #[schemars(skip)]
    pub rest: BTreeMap<String, serde_json::Value>,
}

/// Access-log encoding.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
pub enum AccessLogEncoding {
    /// Plain text lines.
    #[serde(rename = "TEXT")]
    Text,
    /// One JSON object per line.
    #[serde(rename = "JSON")]
    Json,
}

/// Proxy configuration (Istio `ProxyConfig`). Unknown fields are kept and passed to the proxies as given.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("x-kubernetes-preserve-unknown-fields" = true))]
pub struct ProxyConfig {
    /// Start the application containers only after the proxy is ready. Overrides `spec.proxy.holdApplicationUntilProxyStarts`
    /// when set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hold_application_until_proxy_starts: Option<bool>,

    /// How inbound traffic is captured: `REDIRECT` (default), `TPROXY` or `NONE`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interception_mode: Option<InterceptionMode>,

    /// Extra environment variables for the proxy (`ISTIO_META_*` and agent settings).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub proxy_metadata: BTreeMap<String, String>,

    /// Any other ProxyConfig field (for example `drainDuration`, `tracing`, `concurrency`), passed through unchanged.
    #[serde(flatten)]
    #[schemars(skip)]
    pub rest: BTreeMap<String, serde_json::Value>,
}

/// Traffic interception mode of the sidecar.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum InterceptionMode {
    /// iptables REDIRECT (the default).
    #[default]
    #[serde(rename = "REDIRECT")]
    Redirect,
    /// iptables TPROXY; keeps the original source address, needs extra privileges.
    #[serde(rename = "TPROXY")]
    Tproxy,
    /// No traffic capture; the application talks to the proxy explicitly.
    #[serde(rename = "NONE")]
    None,
}

/// Settings of the injected sidecar.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ProxySpec {
    /// Hold application containers until the proxy is ready, so they never start without a working network. With
    /// native sidecars the kubelet does this through the proxy's startupProbe; in the classic layout the proxy is
    /// put first with a `postStart` hook that waits for it.
    #[serde(default)]
    pub hold_application_until_proxy_starts: bool,

    /// Inject the proxy as a Kubernetes native sidecar (an init container with `restartPolicy: Always`): `auto`
    /// (when every node's kubelet is 1.33 or newer), `"true"` or `"false"`. A pod can override this with the
    /// `sidecar.istio.io/nativeSidecar` annotation.
    #[serde(default)]
    pub native_sidecar: NativeSidecarMode,

    /// Proxy image name (under `spec.hub`, tagged `spec.version`), or a full image reference when it contains `/`.
    #[serde(default = "default_proxy_image")]
    #[x_kube(validation = Rule::new("self.size() > 0").message("spec.proxy.image must not be empty"))]
    pub image: String,

    /// Image pull policy of the injected containers; empty leaves it to Kubernetes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image_pull_policy: Option<PullPolicy>,

    /// Image pull secrets added to every injected pod, listed before the pod's own.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub image_pull_secrets: Vec<String>,

    /// Compute resources of `istio-proxy` (and `istio-init`). Default: requests 100m CPU / 128Mi, limits 2 CPU / 1Gi.
    #[serde(default = "default_proxy_resources")]
    pub resources: Resources,

    /// Envoy log level: trace, debug, info, warning, error, critical or off.
    #[serde(default = "default_log_level")]
    #[x_kube(validation = Rule::new("self in ['trace', 'debug', 'info', 'warning', 'error', 'critical', 'off']").message("spec.proxy.logLevel must be one of trace, debug, info, warning, error, critical, off"))]
    pub log_level: String,

    /// Envoy per-component log levels, such as `misc:error`.
    #[serde(default = "default_component_log_level")]
    pub component_log_level: String,

    /// Outbound IP ranges (comma-separated CIDRs, or `*`) redirected to the proxy.
    #[serde(default = "default_star")]
    pub include_ip_ranges: String,

    /// Outbound IP ranges (comma-separated CIDRs) that bypass the proxy.
    #[serde(default)]
    pub exclude_ip_ranges: String,

    /// Inbound ports (comma-separated, or `*`) redirected to the proxy.
    #[serde(default = "default_star")]
    pub include_inbound_ports: String,

    /// Inbound ports (comma-separated) that bypass the proxy.
    #[serde(default)]
    pub exclude_inbound_ports: String,

    /// Outbound ports (comma-separated) that bypass the proxy.
    #[serde(default)]
    pub exclude_outbound_ports: String,

    /// Port of the agent's health and merged-metrics endpoint; 0 disables the readiness probe.
    #[serde(default = "default_status_port")]
    #[x_kube(validation = Rule::new("self >= 0 && self <= 65535").message("spec.proxy.statusPort must be between 0 and 65535"))]
    pub status_port: i32,

    /// Run the proxy privileged (only for debugging).
    #[serde(default)]
    pub privileged: bool,
}

impl Default for ProxySpec {
    fn default() -> Self {
        Self {
            hold_application_until_proxy_starts: false,
            native_sidecar: NativeSidecarMode::Auto,
            image: default_proxy_image(),
            image_pull_policy: None,
            image_pull_secrets: Vec::new(),
            resources: default_proxy_resources(),
            log_level: default_log_level(),
            component_log_level: default_component_log_level(),
            include_ip_ranges: default_star(),
            exclude_ip_ranges: String::new(),
            include_inbound_ports: default_star(),
            exclude_inbound_ports: String::new(),
            exclude_outbound_ports: String::new(),
            status_port: default_status_port(),
            privileged: false,
        }
    }
}

fn default_proxy_image() -> String {
    "proxyv2".to_owned()
}
fn default_log_level() -> String {
    "warning".to_owned()
}
fn default_component_log_level() -> String {
    "misc:error".to_owned()
}
fn default_star() -> String {
    "*".to_owned()
}
fn default_status_port() -> i32 {
    15020
}

/// Compute resources of a container: requests and limits by resource name (`cpu`, `memory`, `ephemeral-storage`).
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Resources {
    /// Minimum resources reserved for the container, such as `cpu: 100m`, `memory: 128Mi`.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    #[schemars(schema_with = "quantity_map_schema")]
    pub requests: BTreeMap<String, Quantity>,
    /// Maximum resources the container may use, such as `cpu: "2"`, `memory: 1Gi`.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    #[schemars(schema_with = "quantity_map_schema")]
    pub limits: BTreeMap<String, Quantity>,
}

impl Resources {
    /// Builds resources from `(resource, quantity)` pairs.
    pub fn new(requests: &[(&str, &str)], limits: &[(&str, &str)]) -> Self {
        let map = |pairs: &[(&str, &str)]| {
            pairs
                .iter()
                .map(|(k, v)| ((*k).to_owned(), Quantity((*v).to_owned())))
                .collect::<BTreeMap<_, _>>()
        };
        Self {
            requests: map(requests),
            limits: map(limits),
        }
    }

    /// The Kubernetes form of these resources (`None` maps where empty).
    pub fn to_requirements(&self) -> ResourceRequirements {
        ResourceRequirements {
            requests: (!self.requests.is_empty()).then(|| self.requests.clone()),
            limits: (!self.limits.is_empty()).then(|| self.limits.clone()),
            ..Default::default()
        }
    }
}

fn quantity_map_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
    schemars::json_schema!({
        "type": "object",
        "additionalProperties": {
            "pattern": "^(\\+|-)?(([0-9]+(\\.[0-9]*)?)|(\\.[0-9]+))(([KMGTPE]i)|[numkMGTPE]|([eE](\\+|-)?(([0-9]+(\\.[0-9]*)?)|(\\.[0-9]+))))?$",
            "x-kubernetes-int-or-string": true
        }
    })
}

fn default_proxy_resources() -> Resources {
    Resources::new(
        &[("cpu", "100m"), ("memory", "128Mi")],
        &[("cpu", "2"), ("memory", "1Gi")],
    )
}

/// Whether the proxy is injected as a native sidecar.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum NativeSidecarMode {
    /// Native when every node's kubelet supports it (1.33 or newer).
    #[default]
    #[serde(rename = "auto")]
    Auto,
    /// Always native.
    #[serde(rename = "true", alias = "on")]
    On,
    /// Never native: the proxy is a regular container.
    #[serde(rename = "false", alias = "off")]
    Off,
}

/// Image pull policy.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
pub enum PullPolicy {
    /// Always pull.
    Always,
    /// Pull only when the image is not present.
    IfNotPresent,
    /// Never pull.
    Never,
}

/// Which pods get the sidecar and how the API server calls the webhook.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct InjectionSpec {
    /// `enabled` injects every pod that reaches the webhook unless it opts out; `disabled` injects only pods that
    /// opt in (label or annotation `sidecar.istio.io/inject: "true"`, or an alwaysInjectSelector match).
    #[serde(default)]
    pub policy: InjectionPolicy,

    /// Pods matching any of these label selectors are not injected (unless they opt in explicitly).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub never_inject_selector: Vec<LabelSelector>,

    /// Pods matching any of these label selectors are injected even when the policy is `disabled` (unless they opt
    /// out explicitly). neverInjectSelector wins over alwaysInjectSelector.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub always_inject_selector: Vec<LabelSelector>,

    /// What the API server does when the webhook cannot be reached: `Fail` rejects the pod, `Ignore` creates it
    /// without a sidecar.
    #[serde(default)]
    pub failure_policy: FailurePolicy,

    /// How long the API server waits for the webhook, 1 to 30 seconds.
    #[serde(default = "default_timeout_seconds")]
    #[x_kube(validation = Rule::new("self >= 1 && self <= 30").message("spec.injection.timeoutSeconds must be between 1 and 30"))]
    pub timeout_seconds: i32,

    /// Your own injection templates by name, as Istio's `sidecarInjectorWebhook.templates`: Go templates that render
    /// a pod's `metadata` and `spec` to merge into the pod (with `.ObjectMeta`, `.Spec`, `.Values`, `.ProxyConfig`,
    /// … as in Istio). A pod selects them with the annotation `inject.istio.io/templates: sidecar,<name>`; a
    /// template named like a built-in one (`sidecar`, `gateway`, `grpc-agent`, `grpc-simple`) replaces it.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    #[x_kube(validation = Rule::new("self.all(k, k.matches('^[A-Za-z0-9][-A-Za-z0-9_.]*$'))").message("spec.injection.templates names must be letters, digits, '-', '_' or '.' (a pod lists them comma-separated)"))]
    pub templates: BTreeMap<String, String>,
}

impl Default for InjectionSpec {
    fn default() -> Self {
        Self {
            policy: InjectionPolicy::Enabled,
            never_inject_selector: Vec::new(),
            always_inject_selector: Vec::new(),
            failure_policy: FailurePolicy::Fail,
            timeout_seconds: default_timeout_seconds(),
            templates: BTreeMap::new(),
        }
    }
}

fn default_timeout_seconds() -> i32 {
    10
}

/// Injection policy.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum InjectionPolicy {
    /// Inject unless the pod opts out.
    #[default]
    #[serde(rename = "enabled")]
    Enabled,
    /// Inject only pods that opt in.
    #[serde(rename = "disabled")]
    Disabled,
}

/// Webhook failure policy.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum FailurePolicy {
    /// Reject the pod when the webhook fails.
    #[default]
    Fail,
    /// Admit the pod without a sidecar when the webhook fails.
    Ignore,
}

/// The istiod Deployment.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ControlPlaneSpec {
    /// Number of istiod replicas when autoscaling is off.
    #[serde(default = "default_replicas")]
    #[x_kube(validation = Rule::new("self >= 0").message("spec.controlPlane.replicas must not be negative"))]
    pub replicas: i32,

    /// Compute resources of istiod. Default: requests 500m CPU / 2Gi.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<Resources>,

    /// Horizontal autoscaling of istiod; off when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub autoscale: Option<AutoscaleSpec>,

    /// Extra environment variables of istiod (for example `PILOT_TRACE_SAMPLING`).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub env: BTreeMap<String, String>,
}

impl Default for ControlPlaneSpec {
    fn default() -> Self {
        Self {
            replicas: default_replicas(),
            resources: None,
            autoscale: None,
            env: BTreeMap::new(),
        }
    }
}

fn default_replicas() -> i32 {
    1
}

/// Horizontal autoscaling (a HorizontalPodAutoscaler and a PodDisruptionBudget).
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("self.min <= self.max").message("autoscale.min must not exceed autoscale.max"))]
pub struct AutoscaleSpec {
    /// Minimum number of replicas.
    #[serde(default = "default_replicas")]
    #[x_kube(validation = Rule::new("self >= 1").message("autoscale.min must be at least 1"))]
    pub min: i32,

    /// Maximum number of replicas.
    #[serde(default = "default_autoscale_max")]
    pub max: i32,

    /// Target average CPU utilisation in percent.
    #[serde(default = "default_target_cpu")]
    #[x_kube(validation = Rule::new("self >= 1 && self <= 100").message("autoscale.targetCPUUtilizationPercentage must be between 1 and 100"))]
    #[serde(rename = "targetCPUUtilizationPercentage")]
    pub target_cpu_utilization_percentage: i32,
}

fn default_autoscale_max() -> i32 {
    5
}
fn default_target_cpu() -> i32 {
    80
}

/// An ingress or egress gateway (an Envoy proxy Deployment and its Service).
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
#[x_kube(
    validation = Rule::new("!has(self.service) || !has(self.service.ports) || self.service.ports.all(p, !has(p.nodePort)) || (has(self.service.type) ? self.service.type != 'ClusterIP' : (!has(self.kind) || self.kind != 'egress'))").message("service.ports[].nodePort needs service.type NodePort or LoadBalancer (an egress gateway's Service is ClusterIP unless service.type says otherwise)"),
    validation = Rule::new("!has(self.service) || !has(self.service.externalTrafficPolicy) || (has(self.service.type) ? self.service.type != 'ClusterIP' : (!has(self.kind) || self.kind != 'egress'))").message("service.externalTrafficPolicy needs service.type NodePort or LoadBalancer (an egress gateway's Service is ClusterIP unless service.type says otherwise)")
)]
pub struct GatewaySpec {
    /// Name of the gateway's Deployment and Service, such as `istio-ingressgateway`; also its `istio` label value
    /// with the `istio-` prefix removed (`istio: ingressgateway`), which Gateway resources select.
    #[schemars(length(max = 63))]
    #[x_kube(validation = Rule::new("self.matches('^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$')").message("gateway name must be a DNS label (lower-case letters, digits and '-', at most 63 characters)"))]
    pub name: String,

    /// `ingress` (traffic into the mesh) or `egress` (traffic leaving it).
    #[serde(default)]
    pub kind: GatewayKind,

    /// Number of replicas when autoscaling is off.
    #[serde(default = "default_replicas")]
    #[x_kube(validation = Rule::new("self >= 0").message("gateway replicas must not be negative"))]
    pub replicas: i32,

    /// Compute resources of the gateway proxy. Default: requests 100m CPU / 128Mi, limits 2 CPU / 1Gi.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<Resources>,

    /// Horizontal autoscaling; off when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub autoscale: Option<AutoscaleSpec>,

    /// The gateway's Service.
    #[serde(default)]
    pub service: GatewayServiceSpec,
}

impl GatewaySpec {
    /// The Service type: `service.type`, else by kind (`LoadBalancer` for ingress, `ClusterIP` for egress).
    pub fn service_type(&self) -> ServiceType {
        self.service.type_.unwrap_or(match self.kind {
            GatewayKind::Ingress => ServiceType::LoadBalancer,
            GatewayKind::Egress => ServiceType::ClusterIp,
        })
    }
}

/// Direction of a gateway.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum GatewayKind {
    /// Traffic entering the mesh.
    #[default]
    #[serde(rename = "ingress")]
    Ingress,
    /// Traffic leaving the mesh.
    #[serde(rename = "egress")]
    Egress,
}

/// The Service in front of a gateway.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct GatewayServiceSpec {
    /// Service type: `ClusterIP`, `NodePort` or `LoadBalancer`. Default: `LoadBalancer` for an ingress gateway,
    /// `ClusterIP` for an egress gateway (as Istio's profiles: an egress gateway is reached from inside the mesh).
    #[serde(default, rename = "type", skip_serializing_if = "Option::is_none")]
    pub type_: Option<ServiceType>,

    /// Ports the gateway listens on. Default for an ingress gateway: status-port 15021, http2 80→8080, https
    /// 443→8443; for an egress gateway: http2 80→8080, https 443→8443.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 64))]
    #[x_kube(
        merge_strategy = ListMerge::Map(vec!["port".into()]),
        validation = Rule::new("self.all(p, self.exists_one(q, q.name == p.name))").message("service.ports names must be unique")
    )]
    pub ports: Vec<GatewayPort>,

    /// Annotations on the Service (for example a cloud load balancer's settings).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,

    /// External traffic policy of a NodePort or LoadBalancer Service: `Cluster` or `Local`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub external_traffic_policy: Option<ExternalTrafficPolicy>,
}

/// Service type: `ClusterIP`, `NodePort` or `LoadBalancer`. Default: `LoadBalancer` for an ingress gateway,
/// `ClusterIP` for an egress gateway.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
pub enum ServiceType {
    /// Reachable inside the cluster only.
    #[serde(rename = "ClusterIP")]
    ClusterIp,
    /// Also on a port of every node.
    NodePort,
    /// Also through a cloud load balancer (the default for an ingress gateway).
    LoadBalancer,
}

/// External traffic policy of a Service.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
pub enum ExternalTrafficPolicy {
    /// Spread to every node (source IP is lost).
    Cluster,
    /// Only to pods on the receiving node (keeps the source IP).
    Local,
}

/// One port of a gateway Service.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct GatewayPort {
    /// Port name; its prefix tells Istio the protocol (`http2-…`, `https-…`, `tcp-…`, `tls-…`).
    #[schemars(length(max = 15))]
    #[x_kube(validation = Rule::new("self.matches('^[a-z0-9]([-a-z0-9]{0,13}[a-z0-9])?$')").message("port name must be a DNS label of at most 15 characters"))]
    pub name: String,

    /// Port of the Service.
    #[x_kube(validation = Rule::new("self >= 1 && self <= 65535").message("port must be between 1 and 65535"))]
    pub port: i32,

    /// Port the gateway container listens on; defaults to `port`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new("self >= 1 && self <= 65535").message("targetPort must be between 1 and 65535"))]
    pub target_port: Option<i32>,

    /// Port on every node for NodePort and LoadBalancer Services, 30000 to 32767; assigned by Kubernetes when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new("self >= 30000 && self <= 32767").message("nodePort must be between 30000 and 32767"))]
    pub node_port: Option<i32>,

    /// `TCP` (default) or `UDP`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub protocol: Option<PortProtocol>,
}

/// Transport protocol of a port.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
pub enum PortProtocol {
    /// TCP.
    #[serde(rename = "TCP")]
    Tcp,
    /// UDP.
    #[serde(rename = "UDP")]
    Udp,
}

/// The observability addons.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct AddonsSpec {
    /// Prometheus, scraping istiod, the gateways and every sidecar (with the application's own metrics merged into
    /// the sidecar's): Service `prometheus:9090`.
    #[serde(default)]
    pub prometheus: AddonSpec,

    /// Grafana with the Prometheus datasource (and Jaeger's, when enabled) provisioned: Service `grafana:3000`.
    /// Anonymous users are Editors; nobody can sign in as Admin.
    #[serde(default)]
    pub grafana: AddonSpec,

    /// Jaeger in one process (collector, in-memory storage and query UI): Services `tracing:80` (UI under
    /// `/jaeger`), `zipkin:9411` and `jaeger-collector` (OTLP on 4317/4318). The proxies send their spans to it.
    #[serde(default)]
    pub jaeger: JaegerAddonSpec,
}

/// An addon: on or off, its image and resources.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct AddonSpec {
    /// Run the addon.
    #[serde(default)]
    pub enabled: bool,

    /// Full image reference; when absent, the upstream image at the version this mizzen release pins (see the
    /// README).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 512))]
    #[x_kube(validation = Rule::new("self.size() > 0").message("an addon's image must not be empty"))]
    pub image: Option<String>,

    /// Compute resources of the addon's container; when absent, modest requests and no limits.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<Resources>,
}

/// The Jaeger addon.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct JaegerAddonSpec {
    /// Run Jaeger and point the proxies' tracing at it.
    #[serde(default)]
    pub enabled: bool,

    /// Full image reference; when absent, the upstream image at the version this mizzen release pins (see the
    /// README).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 512))]
    #[x_kube(validation = Rule::new("self.size() > 0").message("an addon's image must not be empty"))]
    pub image: Option<String>,

    /// Compute resources of the Jaeger container; when absent, modest requests and no limits.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<Resources>,

    /// Percentage of requests traced, 0 to 100 (Istio's `pilot.traceSampling`, istiod's `PILOT_TRACE_SAMPLING`;
    /// Istio's default is 1). Applies mesh-wide at once, to running proxies too. `spec.controlPlane.env`
    /// `PILOT_TRACE_SAMPLING` wins when set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new("self >= 0.0 && self <= 100.0").message("spec.addons.jaeger.sampling must be between 0 and 100"))]
    pub sampling: Option<f64>,
}

/// How outdated proxies are brought up to date.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct DataPlaneSpec {
    /// `Manual` (default): outdated workloads are reported in the status and by `mizzenctl proxy-status`, and you
    /// restart them (`kubectl rollout restart`). `Automatic`: the operator restarts outdated Deployments,
    /// StatefulSets and DaemonSets itself, as `kubectl rollout restart` does, `maxConcurrent` at a time, each once
    /// the previous ones are available again. A workload annotated `mizzen.io/auto-restart: "false"` is left alone.
    #[serde(default)]
    pub rollout: RolloutMode,

    /// How many workloads Automatic restarts at once, 1 to 100.
    #[serde(default = "default_max_concurrent")]
    #[x_kube(validation = Rule::new("self >= 1 && self <= 100").message("spec.dataPlane.maxConcurrent must be between 1 and 100"))]
    pub max_concurrent: i32,

    /// How long a restarted workload may take to become available before the rollout pauses (reported in the
    /// `ProxiesUpToDate` condition and an Event naming it), 30 to 86400 seconds.
    #[serde(default = "default_progress_deadline")]
    #[x_kube(validation = Rule::new("self >= 30 && self <= 86400").message("spec.dataPlane.progressDeadlineSeconds must be between 30 and 86400"))]
    pub progress_deadline_seconds: i32,
}

impl Default for DataPlaneSpec {
    fn default() -> Self {
        Self {
            rollout: RolloutMode::Manual,
            max_concurrent: default_max_concurrent(),
            progress_deadline_seconds: default_progress_deadline(),
        }
    }
}

fn default_max_concurrent() -> i32 {
    1
}

fn default_progress_deadline() -> i32 {
    600
}

/// Who restarts workloads with outdated proxies.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum RolloutMode {
    /// You do; the status and `mizzenctl proxy-status` say which.
    #[default]
    Manual,
    /// The operator does, one rollout (or `maxConcurrent`) at a time.
    Automatic,
}

/// Observed state of a MeshInstall, written by the operator.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct MeshInstallStatus {
    /// The `metadata.generation` this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,

    /// `Reconciled` (every object applied) and `Ready` (every component rolled out), Kubernetes-style.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[x_kube(merge_strategy = ListMerge::Map(vec!["type".into()]))]
    pub conditions: Vec<Condition>,

    /// Readiness of each component.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub components: Option<ComponentsStatus>,

    /// Ready components over desired components, such as `2/2`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ready: Option<String>,

    /// Summary: `Healthy`, `Progressing`, `Error` or `Paused`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state: Option<MeshState>,

    /// The Istio version last rolled out (`spec.version` once applied). While `spec.version` names an
    /// unsupported release nothing changes, and a webhook without `appliedSpec` to go by injects this version's
    /// proxy.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,

    /// The spec the operator last applied, as JSON text (a string, which a status write replaces whole): what the
    /// webhook injects with. Written when every object took it (webhook configurations waiting for a ready webhook
    /// or for a name another install holds aside); a spec the operator refuses (`InvalidSpec`), fails to apply,
    /// cannot apply for an object another install or nobody of mizzen's owns, or does not reconcile
    /// (`mizzen.io/paused`) reaches no new pod. Absent before the first apply and for a spec over 256 KiB as stored
    /// (the webhook then injects with the spec itself).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 262144))]
    pub applied_spec: Option<String>,

    /// The `metadata.generation` of `appliedSpec`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub applied_generation: Option<i64>,

    /// The `observedGeneration` of the last status this operator wrote. When `observedGeneration` differs, another
    /// writer (an operator of an earlier release, which does not know `appliedSpec`) has written the status since,
    /// and may have applied other specs: `appliedSpec` is then ignored, and dropped at the next write.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub applied_spec_observed_generation: Option<i64>,

    /// The revision tags this install holds (including `default` when it serves `istio-injection=enabled`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub revision_tags: Vec<String>,

    /// Injected pods this install serves that run its proxy image and revision, over all of them, such as `3/4`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub proxies: Option<String>,

    /// The data plane this install serves: which workloads still run an older proxy, and the automatic rollout.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data_plane: Option<DataPlaneStatus>,
}

/// The data plane an install serves.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct DataPlaneStatus {
    /// Injected pods that run this install's proxy image and revision.
    pub up_to_date: i32,
    /// Injected pods this install serves (by their namespace's labels, else the revision that injected them).
    pub total: i32,
    /// How many workloads have outdated pods (the list below holds the first 20 by namespace, kind and name).
    #[serde(default)]
    pub outdated_workloads: i32,
    /// Workloads with outdated pods.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub outdated: Vec<OutdatedWorkload>,
    /// Workloads the operator restarted that have not finished rolling out (`rollout: Automatic`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub restarting: Vec<WorkloadRestart>,
    /// A restart that did not finish within `progressDeadlineSeconds`: the automatic rollout waits until this
    /// workload is available again (or the rollout is switched to Manual).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stalled: Option<WorkloadRestart>,
    /// Outdated workloads the automatic rollout leaves alone for now, and why (opted out, a PodDisruptionBudget that
    /// allows no disruption, an update strategy that needs its pods deleted, new pods that this install would not
    /// inject); the first 20.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub held: Vec<HeldWorkload>,
}

/// An outdated workload the automatic rollout does not restart now.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct HeldWorkload {
    /// Namespace.
    pub namespace: String,
    /// Kind.
    pub kind: String,
    /// Name.
    pub name: String,
    /// Why it is not restarted.
    pub reason: String,
}

/// A workload whose pods run an older proxy.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct OutdatedWorkload {
    /// Namespace.
    pub namespace: String,
    /// `Deployment`, `StatefulSet`, `DaemonSet`, `Job`, `ReplicaSet` or `Pod`.
    pub kind: String,
    /// Name.
    pub name: String,
    /// Its outdated pods.
    pub pods: i32,
    /// What is outdated: the image or the revision the pods run, and what this install wants.
    pub reason: String,
}

/// A restart the operator made.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct WorkloadRestart {
    /// Namespace.
    pub namespace: String,
    /// `Deployment`, `StatefulSet` or `DaemonSet`.
    pub kind: String,
    /// Name.
    pub name: String,
    /// When it was restarted (RFC 3339, the value of its `kubectl.kubernetes.io/restartedAt` pod annotation).
    pub restarted_at: String,
    /// Why it is stalled, for a stalled restart.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

/// Summary state of a MeshInstall.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
pub enum MeshState {
    /// Everything applied and rolled out.
    Healthy,
    /// Applied, some component still rolling out.
    Progressing,
    /// The spec is invalid or applying failed; see the conditions.
    Error,
    /// Reconciliation is paused by the `mizzen.io/paused` annotation.
    Paused,
}

/// Readiness of each component.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ComponentsStatus {
    /// The istiod Deployment.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub control_plane: Option<ReplicaStatus>,

    /// Each gateway Deployment.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub gateways: Vec<GatewayStatus>,

    /// Each enabled addon's Deployment.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub addons: Vec<AddonStatus>,

    /// The mizzen-webhook Deployment every MeshInstall's injection goes through. Absent when the webhook runs
    /// outside the cluster (`--webhook-url`). Not counted in READY.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub webhook: Option<WebhookStatus>,
}

/// Readiness of the shared webhook.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct WebhookStatus {
    /// Pods of the mizzen-webhook Deployment that are ready, of any revision (each one answers reviews). With none,
    /// a MeshInstall whose own components are available is not Ready (reason `WebhookUnavailable`), and its
    /// automatic proxy rollout waits.
    pub ready: i32,
    /// Replicas the Deployment asks for (0 when it does not exist).
    pub desired: i32,
}

/// Ready and desired replicas of a Deployment.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct ReplicaStatus {
    /// Replicas of the current revision that are available.
    pub ready: i32,
    /// Replicas asked for.
    pub desired: i32,
}

/// Readiness of one gateway.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct GatewayStatus {
    /// Gateway name.
    pub name: String,
    /// Replicas of the current revision that are available.
    pub ready: i32,
    /// Replicas asked for.
    pub desired: i32,
}

/// Readiness of one addon.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct AddonStatus {
    /// Addon name: `prometheus`, `grafana` or `jaeger`.
    pub name: String,
    /// Replicas of the current revision that are available.
    pub ready: i32,
    /// Replicas asked for.
    pub desired: i32,
}

impl MeshInstallSpec {
    /// The proxy image injected pods and gateways run: `spec.proxy.image` itself when it is a full reference
    /// (contains `/`), else `<hub>/<image>:<version>`.
    pub fn proxy_image(&self) -> String {
        if self.proxy.image.contains('/') {
            self.proxy.image.clone()
        } else {
            format!("{}/{}:{}", self.hub, self.proxy.image, self.version)
        }
    }

    /// The revision label value: `default` for the default revision.
    pub fn revision_label(&self) -> &str {
        if self.revision.is_empty() {
            "default"
        } else {
            &self.revision
        }
    }
}
