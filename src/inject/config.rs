//! Everything sidecar injection depends on, in one typed struct, built from a `MeshInstall` or from Istio-style
//! settings (`values.*`, `meshConfig.*`, `env.*`, `iop=`, `nodes=`) as used by Istio's golden corpus.

use std::collections::BTreeMap;

use serde_json::{Map, Value, json};

use crate::api::{InjectionPolicy, MeshInstallSpec, NativeSidecarMode};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;

/// Resource requirements as Istio values express them: a `null` entry removes the default.
pub type ResourceValues = BTreeMap<String, BTreeMap<String, Option<String>>>;

/// Settings of the injected proxy (Istio `values.global.proxy`).
#[derive(Clone, Debug, PartialEq)]
pub struct ProxyValues {
    /// Proxy image name, or a full reference when it contains `/`.
    pub image: String,
    /// Image of `istio-init` (Istio `values.global.proxy_init.image`).
    pub init_image: String,
    /// Envoy log level.
    pub log_level: String,
    /// Envoy component log levels.
    pub component_log_level: String,
    /// Outbound CIDRs captured.
    pub include_ip_ranges: String,
    /// Outbound CIDRs not captured.
    pub exclude_ip_ranges: String,
    /// Inbound ports captured.
    pub include_inbound_ports: String,
    /// Inbound ports not captured.
    pub exclude_inbound_ports: String,
    /// Outbound ports captured (empty: all).
    pub include_outbound_ports: String,
    /// Outbound ports not captured.
    pub exclude_outbound_ports: String,
    /// Agent status port; 0 disables the readiness probe.
    pub status_port: i64,
    /// Readiness probe initial delay.
    pub readiness_initial_delay_seconds: i64,
    /// Readiness probe period.
    pub readiness_period_seconds: i64,
    /// Readiness probe failure threshold.
    pub readiness_failure_threshold: i64,
    /// Startup probe of the native sidecar.
    pub startup_probe_enabled: bool,
    /// Startup probe failure threshold.
    pub startup_probe_failure_threshold: i64,
    /// Run the proxy privileged.
    pub privileged: bool,
    /// Add an `enable-core-dump` init container.
    pub enable_core_dump: bool,
    /// Give the proxy NET_BIND_SERVICE.
    pub cap_net_bind_service: bool,
    /// Hold the application until the proxy is ready.
    pub hold_application_until_proxy_starts: bool,
    /// Proxy resources (requests / limits), `None` entries removed.
    pub resources: ResourceValues,
    /// Custom lifecycle of the proxy container, replacing the default one.
    pub lifecycle: Option<Value>,
    /// Cluster DNS domain.
    pub cluster_domain: String,
}

/// Istio CNI settings.
#[derive(Clone, Debug, PartialEq)]
pub struct CniValues {
    /// CNI plugin does the traffic capture; `istio-validation` replaces `istio-init`.
    pub enabled: bool,
    /// Chained plugin (true) or Multus network attachment (false).
    pub chained: bool,
}

/// Mesh-config settings injection reads.
#[derive(Clone, Debug, PartialEq)]
pub struct MeshValues {
    /// `defaultConfig` (ProxyConfig) fields as given, camelCase; merged over Istio's proxy defaults.
    pub default_config: Map<String, Value>,
    /// Trust domain.
    pub trust_domain: String,
    /// `inboundTrafficPolicy.mode: LOCALHOST`.
    pub inbound_localhost: bool,
    /// Merge application metrics into the agent's (prometheus annotations).
    pub enable_prometheus_merge: bool,
    /// `extensionProviders`, as given: an OpenTelemetry provider that asks for `serviceAttributeEnrichment:
    /// OTEL_SEMANTIC_CONVENTIONS` gives the sidecar `OTEL_RESOURCE_ATTRIBUTES`; templates see them as
    /// `.MeshConfig.extensionProviders`.
    pub extension_providers: Vec<Value>,
}

impl MeshValues {
    /// Whether a provider asks for OpenTelemetry's semantic conventions (see [`otel_semantic_conventions`]).
    pub fn otel_semantic_conventions(&self) -> bool {
        self.extension_providers.iter().any(otel_semantic_conventions)
    }
}

/// Whether an entry of `meshConfig.extensionProviders` is an OpenTelemetry provider with
/// `serviceAttributeEnrichment: OTEL_SEMANTIC_CONVENTIONS` (or `service_attribute_enrichment`, the proto field name,
/// which istiod's protojson reading of the mesh config accepts as well).
pub fn otel_semantic_conventions(provider: &Value) -> bool {
    let Some(otel) = provider.get("opentelemetry") else {
        return false;
    };
    ["serviceAttributeEnrichment", "service_attribute_enrichment"]
        .iter()
        .any(|field| otel.get(field).and_then(Value::as_str) == Some("OTEL_SEMANTIC_CONVENTIONS"))
}

/// Everything injection depends on.
#[derive(Clone, Debug, PartialEq)]
pub struct InjectionConfig {
    /// Image registry.
    pub hub: String,
    /// Image tag.
    pub tag: String,
    /// Pull policy of injected containers.
    pub image_pull_policy: Option<String>,
    /// Image pull secrets added before the pod's own.
    pub image_pull_secrets: Vec<String>,
    /// Control-plane revision; empty for the default revision.
    pub revision: String,
    /// Revision tags the MeshInstall lists (`spec.revisionTags`): webhooks selecting them call this revision too.
    pub revision_tags: Vec<String>,
    /// Namespace of istiod.
    pub istio_namespace: String,
    /// Cluster name (`ISTIO_META_CLUSTER_ID`).
    pub cluster_id: String,
    /// Network name (`ISTIO_META_NETWORK`), if any.
    pub network: Option<String>,
    /// Mesh ID; defaults to the trust domain.
    pub mesh_id: Option<String>,
    /// Certificate provider of the proxies.
    pub pilot_cert_provider: String,
    /// CA address; defaults to istiod's.
    pub ca_address: Option<String>,
    /// Agent log level (`--log_output_level`).
    pub agent_log_level: String,
    /// Mount `istio.<serviceaccount>` certificates at /etc/certs.
    pub mount_mtls_certs: bool,
    /// Proxy values.
    pub proxy: ProxyValues,
    /// CNI values.
    pub cni: CniValues,
    /// Mesh config.
    pub mesh: MeshValues,
    /// Injection policy.
    pub policy: InjectionPolicy,
    /// Pods matching any of these are not injected unless they opt in.
    pub never_inject_selector: Vec<LabelSelector>,
    /// Pods matching any of these are injected even with policy disabled.
    pub always_inject_selector: Vec<LabelSelector>,
    /// Native sidecar mode.
    pub native_sidecar: NativeSidecarMode,
    /// Kubelet versions of the cluster's nodes, for `auto`.
    pub node_kubelet_versions: Vec<String>,
    /// Pods are rewritten to probe through the agent (`sidecarInjectorWebhook.rewriteAppHTTPProbe`).
    pub rewrite_app_http_probe: bool,
    /// OpenShift: run as the namespace's UID range.
    pub openshift: bool,
    /// Compliance policy (`fips-140-3`), passed to the proxy.
    pub compliance_policy: Option<String>,
    /// The user's injection templates by name (`spec.injection.templates`, Istio's
    /// `sidecarInjectorWebhook.templates`), parsed; one that does not parse fails the pods that select it.
    pub user_templates: BTreeMap<String, UserTemplate>,
}

/// A user template as parsed, or why it does not parse.
pub type UserTemplate = Result<super::gotemplate::Template, super::gotemplate::TemplateError>;

/// Parses the user's templates.
pub fn parse_templates(templates: &BTreeMap<String, String>) -> BTreeMap<String, UserTemplate> {
    templates
        .iter()
        .map(|(name, text)| (name.clone(), super::gotemplate::Template::parse(name, text)))
        .collect()
}

impl Default for CniValues {
    fn default() -> Self {
        Self {
            enabled: false,
            chained: true,
        }
    }
}

impl Default for ProxyValues {
    fn default() -> Self {
        let mut resources = ResourceValues::new();
        resources.insert(
            "requests".into(),
            BTreeMap::from([
                ("cpu".into(), Some("100m".into())),
                ("memory".into(), Some("128Mi".into())),
            ]),
        );
        resources.insert(
            "limits".into(),
            BTreeMap::from([
                ("cpu".into(), Some("2000m".into())),
                ("memory".into(), Some("1024Mi".into())),
            ]),
        );
        Self {
            image: "proxyv2".into(),
            init_image: "proxyv2".into(),
            log_level: "warning".into(),
            component_log_level: "misc:error".into(),
            include_ip_ranges: "*".into(),
            exclude_ip_ranges: String::new(),
            include_inbound_ports: "*".into(),
            exclude_inbound_ports: String::new(),
            include_outbound_ports: String::new(),
            exclude_outbound_ports: String::new(),
            status_port: 15020,
            readiness_initial_delay_seconds: 0,
            readiness_period_seconds: 15,
            readiness_failure_threshold: 4,
            startup_probe_enabled: true,
            startup_probe_failure_threshold: 600,
            privileged: false,
            enable_core_dump: false,
            cap_net_bind_service: false,
            hold_application_until_proxy_starts: false,
            resources,
            lifecycle: None,
            cluster_domain: "cluster.local".into(),
        }
    }
}

impl Default for InjectionConfig {
    fn default() -> Self {
        Self {
            hub: crate::api::DEFAULT_HUB.into(),
            tag: crate::api::DEFAULT_ISTIO_VERSION.into(),
            image_pull_policy: None,
            image_pull_secrets: Vec::new(),
            revision: String::new(),
            revision_tags: Vec::new(),
            istio_namespace: crate::api::DEFAULT_NAMESPACE.into(),
            cluster_id: "Kubernetes".into(),
            network: None,
            mesh_id: None,
            pilot_cert_provider: "istiod".into(),
            ca_address: None,
            agent_log_level: "default:info".into(),
            mount_mtls_certs: false,
            proxy: ProxyValues::default(),
            cni: CniValues::default(),
            mesh: MeshValues {
                default_config: Map::new(),
                trust_domain: "cluster.local".into(),
                inbound_localhost: false,
                enable_prometheus_merge: true,
                extension_providers: Vec::new(),
            },
            policy: InjectionPolicy::Enabled,
            never_inject_selector: Vec::new(),
            always_inject_selector: Vec::new(),
            native_sidecar: NativeSidecarMode::Auto,
            node_kubelet_versions: Vec::new(),
            rewrite_app_http_probe: true,
            openshift: false,
            compliance_policy: None,
            user_templates: BTreeMap::new(),
        }
    }
}

/// A setting the configuration cannot take.
#[derive(Debug, thiserror::Error, PartialEq)]
#[error("setting {key}: {message}")]
pub struct SettingError {
    /// The setting's key, such as `values.global.proxy.statusPort`.
    pub key: String,
    /// What is wrong with it.
    pub message: String,
}

impl SettingError {
    fn new(key: &str, message: impl Into<String>) -> Self {
        Self {
            key: key.to_owned(),
            message: message.into(),
        }
    }
}

impl InjectionConfig {
    /// The configuration a `MeshInstall` asks for.
    pub fn from_mesh_install(spec: &MeshInstallSpec) -> Self {
        let mut config = Self {
            hub: spec.hub.clone(),
            tag: spec.version.clone(),
            revision: spec.revision.clone(),
            revision_tags: spec.revision_tags.clone(),
            istio_namespace: spec.namespace.clone(),
            policy: spec.injection.policy,
            never_inject_selector: spec.injection.never_inject_selector.clone(),
            always_inject_selector: spec.injection.always_inject_selector.clone(),
            native_sidecar: spec.proxy.native_sidecar,
            image_pull_secrets: spec.proxy.image_pull_secrets.clone(),
            user_templates: parse_templates(&spec.injection.templates),
            image_pull_policy: spec.proxy.image_pull_policy.map(|p| {
                serde_json::to_value(p)
                    .ok()
                    .and_then(|v| v.as_str().map(str::to_owned))
                    .unwrap_or_default()
            }),
            ..Self::default()
        };
        let p = &spec.proxy;
        config.proxy.image = p.image.clone();
        config.proxy.init_image = p.image.clone();
        config.proxy.hold_application_until_proxy_starts = p.hold_application_until_proxy_starts;
        config.proxy.log_level = p.log_level.clone();
        config.proxy.component_log_level = p.component_log_level.clone();
        config.proxy.include_ip_ranges = p.include_ip_ranges.clone();
        config.proxy.exclude_ip_ranges = p.exclude_ip_ranges.clone();
        config.proxy.include_inbound_ports = p.include_inbound_ports.clone();
        config.proxy.exclude_inbound_ports = p.exclude_inbound_ports.clone();
        config.proxy.exclude_outbound_ports = p.exclude_outbound_ports.clone();
        config.proxy.status_port = i64::from(p.status_port);
        config.proxy.privileged = p.privileged;
        let to_values = |m: &BTreeMap<String, k8s_openapi::apimachinery::pkg::api::resource::Quantity>| {
            m.iter()
                .map(|(k, v)| (k.clone(), Some(v.0.clone())))
                .collect::<BTreeMap<_, _>>()
        };
        config.proxy.resources = ResourceValues::new();
        if !p.resources.requests.is_empty() {
            config
                .proxy
                .resources
                .insert("requests".into(), to_values(&p.resources.requests));
        }
        if !p.resources.limits.is_empty() {
            config
                .proxy
                .resources
                .insert("limits".into(), to_values(&p.resources.limits));
        }
        let mc = &spec.mesh_config;
        if let Some(td) = &mc.trust_domain {
            config.mesh.trust_domain = td.clone();
        }
        if let Some(merge) = mc.enable_prometheus_merge {
            config.mesh.enable_prometheus_merge = merge;
        }
        if let Some(dc) = &mc.default_config
            && let Ok(Value::Object(map)) = serde_json::to_value(dc)
        {
            config.mesh.default_config = map;
        }
        // The install's tracing (its own namespace's zipkin, or none), as the mesh ConfigMap gives it to gateways.
        if let Some(tracing) = crate::render::addons::proxy_tracing(spec) {
            config.mesh.default_config.insert("tracing".into(), tracing);
        }
        // Either spelling, as istiod's protojson reading of the mesh config takes either.
        let providers = mc
            .rest
            .get("extensionProviders")
            .or_else(|| mc.rest.get("extension_providers"));
        if let Some(Value::Array(providers)) = providers {
            config.mesh.extension_providers = providers.clone();
        }
        if mc
            .rest
            .get("inboundTrafficPolicy")
            .and_then(|p| p.get("mode"))
            .and_then(Value::as_str)
            == Some("LOCALHOST")
        {
            config.mesh.inbound_localhost = true;
        }
        config
    }

    /// The defaults of Istio's injection test harness: hub `registry.istio.io/testing`, tag `latest`, nodes on
    /// kubelet 1.33 and 1.34.
    pub fn istio_test_defaults() -> Self {
        Self {
            hub: "registry.istio.io/testing".into(),
            tag: "latest".into(),
            node_kubelet_versions: vec!["v1.33.0".into(), "v1.34.0".into()],
            ..Self::default()
        }
    }

    /// Applies IstioOperator-style `values` (the `spec.values` of an `.iop.yaml` overlay, or a nested map).
    pub fn apply_values(&mut self, values: &Value) -> Result<(), SettingError> {
        let mut flat = Vec::new();
        flatten("values", values, &mut flat);
        for (key, value) in flat {
            if !self.apply_value(&key, &value)? {
                return Err(SettingError::new(&key, "unsupported value for injection"));
            }
        }
        Ok(())
    }

    /// Applies one Istio-style setting `key=value` (`values.*`, `components.*`, `meshConfig.*`, `env.*`,
    /// `nodes=`). `iop=` must be resolved by the caller with [`InjectionConfig::apply_values`].
    pub fn apply_setting(&mut self, key: &str, raw: &str) -> Result<(), SettingError> {
        if let Some(rest) = key.strip_prefix("meshConfig.") {
            return self.apply_mesh(key, rest, raw);
        }
        match key {
            "components.cni.enabled" => self.cni.enabled = parse_bool(key, raw)?,
            "env.ENABLE_NATIVE_SIDECARS" => {
                self.native_sidecar = match raw {
                    "true" => NativeSidecarMode::On,
                    "false" => NativeSidecarMode::Off,
                    "auto" => NativeSidecarMode::Auto,
                    _ => return Err(SettingError::new(key, "expected true, false or auto")),
                }
            }
            "env.PLATFORM" => self.openshift = raw == "openshift",
            "env.COMPLIANCE_POLICY" => self.compliance_policy = Some(raw.to_owned()),
            "nodes" => {
                self.node_kubelet_versions = raw
                    .split(',')
                    .map(|n| n.split_once(':').map(|(_, v)| v.to_owned()).unwrap_or_default())
                    .collect()
            }
            _ if key.starts_with("values.") => {
                if !self.apply_value(key, &scalar(raw))? {
                    return Err(SettingError::new(key, "unsupported value for injection"));
                }
            }
            _ => return Err(SettingError::new(key, "unknown setting")),
        }
        Ok(())
    }

    fn apply_mesh(&mut self, key: &str, path: &str, raw: &str) -> Result<(), SettingError> {
        if let Some(field) = path.strip_prefix("defaultConfig.") {
            if let Some(md) = field.strip_prefix("proxyMetadata.") {
                let entry = self
                    .mesh
                    .default_config
                    .entry("proxyMetadata")
                    .or_insert_with(|| Value::Object(Map::new()));
                if let Value::Object(map) = entry {
                    map.insert(md.to_owned(), Value::String(raw.to_owned()));
                }
                return Ok(());
            }
            let value = match field {
                "tracing" => serde_json::from_str(raw).map_err(|e| SettingError::new(key, e.to_string()))?,
                _ => Value::String(raw.to_owned()),
            };
            self.mesh.default_config.insert(field.to_owned(), value);
            return Ok(());
        }
        match path {
            "inboundTrafficPolicy.mode" => self.mesh.inbound_localhost = raw == "LOCALHOST",
            "trustDomain" => self.mesh.trust_domain = raw.to_owned(),
            "enablePrometheusMerge" => self.mesh.enable_prometheus_merge = parse_bool(key, raw)?,
            // One provider appended to the list; only OpenTelemetry's service attribute enrichment is injected.
            "extensionProviders+" => {
                let provider: Value = serde_json::from_str(raw).map_err(|e| SettingError::new(key, e.to_string()))?;
                self.mesh.extension_providers.push(provider);
            }
            _ => return Err(SettingError::new(key, "unsupported meshConfig setting")),
        }
        Ok(())
    }

    /// Applies one flattened Istio value such as `values.global.proxy.statusPort` (the `values.` prefix is optional).
    /// `Ok(false)` when injection does not read that key, so callers decide whether that is an error.
    pub fn apply_value(&mut self, key: &str, value: &Value) -> Result<bool, SettingError> {
        let path = key.strip_prefix("values.").unwrap_or(key);
        let s = || value_string(value);
        let i = || value_int(key, value);
        let b = || value_bool(key, value);
        let proxy = &mut self.proxy;
        match path {
            "global.hub" => self.hub = s(),
            "global.tag" => self.tag = s(),
            "global.imagePullPolicy" => self.image_pull_policy = Some(s()).filter(|p| !p.is_empty()),
            "global.imagePullSecrets" => {
                self.image_pull_secrets = match value {
                    Value::Array(items) => items.iter().map(value_string).collect(),
                    Value::Null => Vec::new(),
                    other => vec![value_string(other)],
                }
            }
            "global.network" => self.network = Some(s()).filter(|n| !n.is_empty()),
            "global.meshID" => self.mesh_id = Some(s()).filter(|n| !n.is_empty()),
            "global.istioNamespace" => self.istio_namespace = s(),
            "global.caAddress" => self.ca_address = Some(s()).filter(|n| !n.is_empty()),
            "global.pilotCertProvider" => self.pilot_cert_provider = s(),
            "global.mountMtlsCerts" => self.mount_mtls_certs = b()?,
            "global.logging.level" => self.agent_log_level = s(),
            "global.multiCluster.clusterName" => self.cluster_id = s(),
            "global.proxy.image" => proxy.image = s(),
            "global.proxy_init.image" => proxy.init_image = s(),
            "global.proxy.logLevel" => proxy.log_level = s(),
            "global.proxy.componentLogLevel" => proxy.component_log_level = s(),
            "global.proxy.includeIPRanges" => proxy.include_ip_ranges = s(),
            "global.proxy.excludeIPRanges" => proxy.exclude_ip_ranges = s(),
            "global.proxy.includeInboundPorts" => proxy.include_inbound_ports = s(),
            "global.proxy.excludeInboundPorts" => proxy.exclude_inbound_ports = s(),
            "global.proxy.includeOutboundPorts" => proxy.include_outbound_ports = s(),
            "global.proxy.excludeOutboundPorts" => proxy.exclude_outbound_ports = s(),
            "global.proxy.statusPort" => proxy.status_port = i()?,
            "global.proxy.readinessInitialDelaySeconds" => proxy.readiness_initial_delay_seconds = i()?,
            "global.proxy.readinessPeriodSeconds" => proxy.readiness_period_seconds = i()?,
            "global.proxy.readinessFailureThreshold" => proxy.readiness_failure_threshold = i()?,
            "global.proxy.privileged" => proxy.privileged = b()?,
            "global.proxy.enableCoreDump" => proxy.enable_core_dump = b()?,
            "global.proxy.holdApplicationUntilProxyStarts" => proxy.hold_application_until_proxy_starts = b()?,
            "global.proxy.clusterDomain" => proxy.cluster_domain = s(),
            "global.proxy.lifecycle" => proxy.lifecycle = Some(value.clone()).filter(|v| !is_empty(v)),
            "global.proxy.startupProbe.enabled" => proxy.startup_probe_enabled = b()?,
            "global.proxy.startupProbe.failureThreshold" => proxy.startup_probe_failure_threshold = i()?,
            "cni.provider" => self.cni.chained = s() != "multus",
            "cni.chained" | "istio_cni.chained" => self.cni.chained = b()?,
            "istio_cni.enabled" => self.cni.enabled = b()?,
            "sidecarInjectorWebhook.rewriteAppHTTPProbe" => self.rewrite_app_http_probe = b()?,
            "sidecarInjectorWebhook.templates" => {
                let Value::Object(map) = value else {
                    return Err(SettingError::new(
                        key,
                        "expected a map of template name to template text",
                    ));
                };
                for (name, text) in map {
                    let text = text
                        .as_str()
                        .ok_or_else(|| SettingError::new(key, format!("template {name:?} is not text")))?;
                    let parsed = super::gotemplate::Template::parse(name, text)
                        .map_err(|e| SettingError::new(key, e.to_string()))?;
                    self.user_templates.insert(name.clone(), Ok(parsed));
                }
            }
            "revision" => self.revision = s(),
            // Accepted and without effect, as in Istio: its injection template no longer reads it (no dnsConfig is
            // injected), so neither the value nor Go-template text inside it changes a pod.
            "global.podDNSSearchNamespaces" => {}
            _ => {
                if let Some(rest) = path.strip_prefix("global.proxy.resources.") {
                    let (kind, resource) = rest
                        .split_once('.')
                        .ok_or_else(|| SettingError::new(key, "expected resources.<requests|limits>.<name>"))?;
                    let slot = proxy.resources.entry(kind.to_owned()).or_default();
                    let q = match value {
                        Value::Null => None,
                        other => Some(value_string(other)),
                    };
                    slot.insert(resource.to_owned(), q);
                } else if path == "global.proxy.resources" && value.is_null() {
                    proxy.resources.clear();
                } else {
                    return Ok(false);
                }
            }
        }
        Ok(true)
    }

    /// The image of the proxy: `<hub>/<image>:<tag>`, or the image itself when it contains `/`.
    pub fn proxy_image(&self) -> String {
        self.image_ref(&self.proxy.image)
    }

    /// The image of `istio-init`.
    pub fn init_image(&self) -> String {
        self.image_ref(&self.proxy.init_image)
    }

    fn image_ref(&self, image: &str) -> String {
        if image.contains('/') {
            image.to_owned()
        } else {
            format!("{}/{}:{}", self.hub, image, self.tag)
        }
    }

    /// The revision label value (`default` for the default revision).
    pub fn revision_label(&self) -> &str {
        if self.revision.is_empty() {
            "default"
        } else {
            &self.revision
        }
    }

    /// Whether pods sent to the webhooks of `name` (`default`, a revision or a tag) are injected with this
    /// configuration: its revision, or a tag it lists (the default revision serves `default`).
    pub fn serves(&self, name: &str) -> bool {
        name == self.revision_label() || self.revision_tags.iter().any(|t| t == name)
    }

    /// The istiod address proxies get certificates from.
    pub fn ca_address(&self) -> String {
        self.ca_address.clone().unwrap_or_else(|| {
            let istiod = if self.revision.is_empty() {
                "istiod".to_owned()
            } else {
                format!("istiod-{}", self.revision)
            };
            format!("{istiod}.{}.svc:15012", self.istio_namespace)
        })
    }

    /// Whether native sidecars are used when the pod does not say (`auto` looks at the nodes).
    pub fn native_sidecars_by_default(&self) -> bool {
        match self.native_sidecar {
            NativeSidecarMode::On => true,
            NativeSidecarMode::Off => false,
            // With no nodes known, assume mizzen's minimum supported Kubernetes (1.33), where native sidecars are GA.
            NativeSidecarMode::Auto => self
                .node_kubelet_versions
                .iter()
                .all(|v| kubelet_minor(v).is_some_and(|m| m >= 33)),
        }
    }
}

/// Minor version of a kubelet version string such as `v1.33.2` or `v1.34.0-gke.100`.
pub fn kubelet_minor(version: &str) -> Option<u64> {
    let v = version.trim_start_matches('v');
    let mut parts = v.split('.');
    let major: u64 = parts.next()?.parse().ok()?;
    let minor: String = parts.next()?.chars().take_while(char::is_ascii_digit).collect();
    (major == 1).then_some(())?;
    minor.parse().ok()
}

/// Flattens nested Istio values into `(dotted.key, leaf)` pairs under `prefix`, as [`InjectionConfig::apply_value`]
/// reads them: lists, empty maps and free-form maps (`lifecycle`, `templates`, …) are leaves.
pub fn flatten(prefix: &str, value: &Value, out: &mut Vec<(String, Value)>) {
    match value {
        Value::Object(map)
            if !map.is_empty()
                && !prefix.ends_with("lifecycle")
                && !prefix.ends_with("podDNSSearchNamespaces")
                && !prefix.ends_with("templates") =>
        {
            for (k, v) in map {
                flatten(&format!("{prefix}.{k}"), v, out);
            }
        }
        _ => out.push((prefix.to_owned(), value.clone())),
    }
}

fn is_empty(value: &Value) -> bool {
    match value {
        Value::Null => true,
        Value::Object(m) => m.is_empty(),
        Value::Array(a) => a.is_empty(),
        Value::String(s) => s.is_empty(),
        _ => false,
    }
}

/// A `--set` style scalar: numbers and booleans typed, everything else a string.
fn scalar(raw: &str) -> Value {
    match raw {
        "true" => json!(true),
        "false" => json!(false),
        "null" => Value::Null,
        _ => raw
            .parse::<i64>()
            .map(Value::from)
            .unwrap_or_else(|_| Value::String(raw.to_owned())),
    }
}

fn value_string(value: &Value) -> String {
    match value {
        Value::String(s) => s.clone(),
        Value::Null => String::new(),
        other => other.to_string(),
    }
}

fn value_int(key: &str, value: &Value) -> Result<i64, SettingError> {
    match value {
        Value::Number(n) => n.as_i64().ok_or_else(|| SettingError::new(key, "expected an integer")),
        Value::String(s) => s
            .parse()
            .map_err(|_| SettingError::new(key, format!("expected an integer, got {s:?}"))),
        _ => Err(SettingError::new(key, "expected an integer")),
    }
}

fn value_bool(key: &str, value: &Value) -> Result<bool, SettingError> {
    match value {
        Value::Bool(b) => Ok(*b),
        Value::String(s) => parse_bool(key, s),
        _ => Err(SettingError::new(key, "expected true or false")),
    }
}

fn parse_bool(key: &str, raw: &str) -> Result<bool, SettingError> {
    match raw {
        "true" => Ok(true),
        "false" => Ok(false),
        _ => Err(SettingError::new(key, format!("expected true or false, got {raw:?}"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn auto_native_sidecars_need_every_node_on_1_33() {
        let mut config = InjectionConfig::istio_test_defaults();
        assert!(config.native_sidecars_by_default());
        config.apply_setting("nodes", "node-1:v1.33.0,node-2:v1.28.0").unwrap();
        assert!(!config.native_sidecars_by_default());
        config.apply_setting("env.ENABLE_NATIVE_SIDECARS", "true").unwrap();
        assert!(config.native_sidecars_by_default());
    }

    #[test]
    fn otel_semantic_conventions_come_from_any_opentelemetry_provider_that_asks_for_them() {
        let spec = |providers: Value| -> MeshInstallSpec {
            serde_json::from_value(json!({"meshConfig": {"extensionProviders": providers}})).unwrap()
        };
        let otel = |enrichment: &str| json!({"name": "otel", "opentelemetry": {"service": "c", "port": 4317, "serviceAttributeEnrichment": enrichment}});
        let zipkin = json!({"name": "zipkin", "zipkin": {"service": "z", "port": 9411}});
        let on = |providers| {
            InjectionConfig::from_mesh_install(&spec(providers))
                .mesh
                .otel_semantic_conventions()
        };
        assert!(on(json!([zipkin, otel("OTEL_SEMANTIC_CONVENTIONS")])));
        assert!(!on(json!([zipkin, otel("ISTIO_CANONICAL")])));
        let snake = json!({"name": "otel", "opentelemetry": {"service": "c", "port": 4317,
                                                             "service_attribute_enrichment": "OTEL_SEMANTIC_CONVENTIONS"}});
        assert!(on(json!([snake])));
        let snake_list: MeshInstallSpec =
            serde_json::from_value(json!({"meshConfig": {"extension_providers": [otel("OTEL_SEMANTIC_CONVENTIONS")]}}))
                .unwrap();
        assert!(
            InjectionConfig::from_mesh_install(&snake_list)
                .mesh
                .otel_semantic_conventions()
        );
        assert!(!on(json!([])));
        let none: MeshInstallSpec = serde_json::from_value(json!({})).unwrap();
        assert!(
            !InjectionConfig::from_mesh_install(&none)
                .mesh
                .otel_semantic_conventions()
        );
        // The corpus's setting appends one provider, which must be JSON.
        let mut config = InjectionConfig::default();
        let err = config
            .apply_setting("meshConfig.extensionProviders+", "{nope")
            .unwrap_err();
        assert_eq!(err.key, "meshConfig.extensionProviders+");
    }

    #[test]
    fn unknown_settings_are_refused_by_name() {
        let err = InjectionConfig::default()
            .apply_setting("values.global.nope", "1")
            .unwrap_err();
        assert_eq!(err.key, "values.global.nope");
    }

    #[test]
    fn revisioned_mesh_points_at_its_istiod() {
        let config = InjectionConfig {
            revision: "canary".into(),
            ..InjectionConfig::default()
        };
        assert_eq!(config.ca_address(), "istiod-canary.istio-system.svc:15012");
        assert_eq!(config.revision_label(), "canary");
    }
}
