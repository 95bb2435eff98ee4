//! From one merged IstioOperator `spec` (profile, files and flags applied) to a MeshInstall. Each setting the
//! MeshInstall carries is taken out of the tree as it is used; proxy settings go through the injection's own
//! reading of Istio values ([`InjectionConfig::apply_value`]); whatever is left is reported unless it is empty or
//! equal to what Istio (and so the MeshInstall) does by default. Gateways are in [`super::gateways`].

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use serde_json::{Map, Value, json};

use super::tree::{self, Path, Seg, take};
use super::{ConvertError, Unsupported};
use crate::api::{
    AutoscaleSpec, ControlPlaneSpec, DEFAULT_HUB, DEFAULT_ISTIO_VERSION, DEFAULT_NAMESPACE, InjectionPolicy,
    InjectionSpec, MeshConfig, MeshInstall, MeshInstallSpec, NativeSidecarMode, ProxySpec, PullPolicy, Resources,
};
use crate::inject::InjectionConfig;
use crate::inject::config::flatten;

/// Values (relative to `values.`) whose setting changes nothing: Istio's own default, which the MeshInstall
/// renders the same way, or what mizzen does whatever the value (`gateways.*` stands for either gateway).
const SILENT: &[(&str, &str)] = &[
    ("global.logAsJson", "false"),
    ("global.logging.level", "\"default:info\""),
    // mizzen installs no validation webhook and no injector ConfigMap, whichever way these are set.
    ("global.configValidation", "true"),
    ("global.configValidation", "false"),
    ("global.omitSidecarInjectorConfigMap", "false"),
    ("global.omitSidecarInjectorConfigMap", "true"),
    ("global.operatorManageWebhooks", "false"),
    ("global.defaultPodDisruptionBudget.enabled", "true"),
    ("global.defaultResources.requests.cpu", "\"10m\""),
    ("global.jwtPolicy", "\"third-party-jwt\""),
    ("global.pilotCertProvider", "\"istiod\""),
    ("global.sds.token.aud", "\"istio-ca\""),
    ("global.sts.servicePort", "0"),
    ("global.istiod.enableAnalysis", "false"),
    ("global.multiCluster.enabled", "false"),
    ("global.multiCluster.clusterName", "\"\""),
    ("global.resourceScope", "\"all\""),
    ("global.nativeNftables", "false"),
    ("global.networkPolicy.enabled", "false"),
    ("global.externalIstiod", "false"),
    ("global.configCluster", "false"),
    ("global.proxy_init.forceApplyIptables", "false"),
    ("pilot.rollingMaxSurge", "\"100%\""),
    ("pilot.rollingMaxUnavailable", "\"25%\""),
    ("pilot.keepaliveMaxServerConnectionAge", "\"30m\""),
    ("pilot.configMap", "true"),
    ("pilot.cni.enabled", "false"),
    ("pilot.taint.enabled", "false"),
    ("pilot.istiodRemote.enabled", "false"),
    ("sidecarInjectorWebhook.enableNamespacesByDefault", "false"),
    ("sidecarInjectorWebhook.reinvocationPolicy", "\"Never\""),
    ("telemetry.enabled", "true"),
    ("telemetry.v2.enabled", "true"),
    ("telemetry.v2.prometheus.enabled", "true"),
    ("telemetry.v2.stackdriver.enabled", "false"),
    ("base.enableIstioConfigCRDs", "true"),
    // Defaults of older releases, still found in dumped profiles: off, as mizzen has them.
    ("base.enableCRDTemplates", "false"),
    ("global.oneNamespace", "false"),
    ("global.useMCP", "false"),
    ("telemetry.v2.metadataExchange.wasmEnabled", "false"),
    ("telemetry.v2.prometheus.wasmEnabled", "false"),
    ("telemetry.v2.stackdriver.logging", "false"),
    ("telemetry.v2.stackdriver.monitoring", "false"),
    ("telemetry.v2.stackdriver.topology", "false"),
    ("pdb.minAvailable", "1"),
    ("experimental.stableValidationPolicy", "false"),
    ("gateways.*.rollingMaxSurge", "\"100%\""),
    ("gateways.*.rollingMaxUnavailable", "\"25%\""),
    ("gateways.*.runAsRoot", "false"),
    ("gateways.*.customService", "false"),
    ("gateways.*.zvpn.enabled", "false"),
    // Istio 1.28's chart defaults, as an installed-state dump lists them: the same in a MeshInstall.
    ("global.proxy.tracer", "\"none\""),
    ("istiodRemote.enabled", "false"),
    ("istiodRemote.enabledLocalInjectorIstiod", "false"),
    ("istiodRemote.injectionURL", "\"\""),
    ("pilot.cni.provider", "\"default\""),
    ("pilot.taint.name", "\"cni.istio.io/not-ready\""),
    ("pilot.taint.namespace", "\"\""),
    // Ambient's waypoints: mizzen runs sidecars only, whatever their resources.
    ("global.waypoint.resources.requests.cpu", "\"100m\""),
    ("global.waypoint.resources.requests.memory", "\"128Mi\""),
    ("global.waypoint.resources.limits.cpu", "\"2\""),
    ("global.waypoint.resources.limits.memory", "\"1Gi\""),
];

/// Proxy values the MeshInstall's `spec.proxy` carries (read through [`InjectionConfig`]).
const CARRIED: &[&str] = &[
    "global.proxy.image",
    "global.proxy_init.image",
    "global.proxy.logLevel",
    "global.proxy.componentLogLevel",
    "global.proxy.includeIPRanges",
    "global.proxy.excludeIPRanges",
    "global.proxy.includeInboundPorts",
    "global.proxy.excludeInboundPorts",
    "global.proxy.excludeOutboundPorts",
    "global.proxy.statusPort",
    "global.proxy.privileged",
    "global.proxy.holdApplicationUntilProxyStarts",
    "global.proxy.resources",
    "global.imagePullPolicy",
    "global.imagePullSecrets",
];

const LOG_LEVELS: &[&str] = &["trace", "debug", "info", "warning", "error", "critical", "off"];

/// Walks a merged tree, collecting what it cannot carry.
pub(super) struct Mapper<'a> {
    user: &'a Value,
    profile: String,
    /// Settings with no MeshInstall equivalent.
    pub unsupported: Vec<Unsupported>,
}

pub(super) fn invalid(path: &Path, message: impl Into<String>) -> ConvertError {
    ConvertError::InvalidSetting {
        setting: path.to_string(),
        message: message.into(),
    }
}

pub(super) fn is_empty(value: &Value) -> bool {
    match value {
        Value::Null => true,
        Value::String(s) => s.is_empty(),
        Value::Array(a) => a.is_empty(),
        Value::Object(m) => m.is_empty(),
        _ => false,
    }
}

fn same(a: &Value, b: &Value) -> bool {
    match (a.as_f64(), b.as_f64()) {
        (Some(x), Some(y)) => x == y,
        _ => a == b,
    }
}

/// A subtree that must be a map (absent and null count as empty).
pub(super) fn map_at(path: &Path, value: Option<Value>) -> Result<Value, ConvertError> {
    match value {
        None | Some(Value::Null) => Ok(json!({})),
        Some(v @ Value::Object(_)) => Ok(v),
        Some(other) => Err(invalid(path, format!("expected a map, got {other}"))),
    }
}

pub(super) fn string(path: &Path, value: &Value) -> Result<String, ConvertError> {
    match value {
        Value::String(s) => Ok(s.clone()),
        Value::Null => Ok(String::new()),
        Value::Number(_) | Value::Bool(_) => Ok(value.to_string()),
        _ => Err(invalid(path, format!("expected a string, got {value}"))),
    }
}

pub(super) fn boolean(path: &Path, value: &Value) -> Result<bool, ConvertError> {
    match value {
        Value::Bool(b) => Ok(*b),
        Value::String(s) if s == "true" => Ok(true),
        Value::String(s) if s == "false" => Ok(false),
        _ => Err(invalid(path, format!("expected true or false, got {value}"))),
    }
}

pub(super) fn int(path: &Path, value: &Value) -> Result<i64, ConvertError> {
    let n = match value {
        Value::Number(n) => n.as_i64().or_else(|| {
            n.as_f64()
                .filter(|f| f.fract() == 0.0 && f.abs() < 1e15)
                .map(|f| f as i64)
        }),
        Value::String(s) => s.trim().parse().ok(),
        _ => None,
    };
    n.ok_or_else(|| invalid(path, format!("expected an integer, got {value}")))
}

pub(super) fn int_in(path: &Path, value: &Value, lo: i64, hi: i64) -> Result<i32, ConvertError> {
    let n = int(path, value)?;
    if n < lo || n > hi {
        return Err(invalid(path, format!("{n} is outside {lo} to {hi}")));
    }
    i32::try_from(n).map_err(|_| invalid(path, format!("{n} is too large")))
}

/// A DNS label of at most `max` characters, as the MeshInstall schema checks names.
pub(super) fn dns_label(s: &str, max: usize) -> bool {
    let b = s.as_bytes();
    !b.is_empty()
        && b.len() <= max
        && b.iter()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'-')
        && b[0] != b'-'
        && b[b.len() - 1] != b'-'
}

fn quantities(path: &Path, value: &Value) -> Result<BTreeMap<String, Quantity>, ConvertError> {
    let mut out = BTreeMap::new();
    let Value::Object(map) = value else {
        return if value.is_null() {
            Ok(out)
        } else {
            Err(invalid(path, format!("expected a map of quantities, got {value}")))
        };
    };
    for (name, q) in map {
        if q.is_null() {
            continue;
        }
        let text = string(&path.key(name), q)?;
        let canonical = crate::quantity::canonical(&text).map_err(|e| invalid(&path.key(name), e.to_string()))?;
        out.insert(name.clone(), Quantity(canonical));
    }
    Ok(out)
}

pub(super) fn same_resources(r: &Resources, requests: &[(&str, &str)], limits: &[(&str, &str)]) -> bool {
    let canonical = |pairs: &[(&str, &str)]| {
        pairs
            .iter()
            .map(|(k, v)| {
                (
                    (*k).to_owned(),
                    Quantity(crate::quantity::canonical(v).unwrap_or_default()),
                )
            })
            .collect::<BTreeMap<_, _>>()
    };
    r.requests == canonical(requests) && r.limits == canonical(limits)
}

/// Replicas and autoscaling of a Deployment, as Istio's values and `k8s` settings give them.
#[derive(Clone, Debug)]
pub(super) struct Scale {
    enabled: bool,
    min: i64,
    max: i64,
    cpu: Option<i64>,
    cpu_setting: Path,
    pub(super) replicas: i64,
    pub(super) replicas_setting: Path,
}

impl Scale {
    /// Takes `autoscaleEnabled`, `autoscaleMin`, `autoscaleMax`, `cpu.targetAverageUtilization` and `replicaCount`.
    pub(super) fn take(m: &mut Mapper, values: &mut Value, path: &Path) -> Result<Self, ConvertError> {
        let mut scale = Self {
            enabled: false,
            min: 1,
            max: 5,
            cpu: None,
            cpu_setting: path.key("cpu").key("targetAverageUtilization"),
            replicas: 1,
            replicas_setting: path.key("replicaCount"),
        };
        if let Some(v) = take(values, &["autoscaleEnabled"]) {
            scale.enabled = boolean(&path.key("autoscaleEnabled"), &v)?;
        }
        if let Some(v) = take(values, &["autoscaleMin"]) {
            scale.min = int(&path.key("autoscaleMin"), &v)?;
        }
        if let Some(v) = take(values, &["autoscaleMax"]) {
            scale.max = int(&path.key("autoscaleMax"), &v)?;
        }
        if let Some(v) = take(values, &["cpu", "targetAverageUtilization"]) {
            scale.cpu = Some(int(&scale.cpu_setting, &v)?);
        }
        if let Some(v) = take(values, &["memory", "targetAverageUtilization"])
            && !v.is_null()
        {
            m.report(
                &path.key("memory").key("targetAverageUtilization"),
                &v,
                "MeshInstall autoscales on CPU utilisation only",
            );
        }
        if let Some(v) = take(values, &["replicaCount"]) {
            scale.replicas = int(&scale.replicas_setting, &v)?;
        }
        Ok(scale)
    }

    /// Applies a `k8s.hpaSpec` patch; istioctl patches the HorizontalPodAutoscaler, so without one it does nothing.
    pub(super) fn hpa(&mut self, m: &mut Mapper, path: &Path, spec: Value, target: &str) -> Result<(), ConvertError> {
        let Value::Object(spec) = spec else {
            return Err(invalid(path, "expected a HorizontalPodAutoscaler spec"));
        };
        if !self.enabled {
            m.report(
                path,
                &Value::Object(spec),
                "has no effect, as with istioctl: autoscaling is off for this component (autoscaleEnabled: false)",
            );
            return Ok(());
        }
        for (key, value) in spec {
            let here = path.key(&key);
            match key.as_str() {
                "minReplicas" => self.min = i64::from(int_in(&here, &value, 1, i64::from(i32::MAX))?),
                "maxReplicas" => self.max = i64::from(int_in(&here, &value, 1, i64::from(i32::MAX))?),
                "metrics" => {
                    let Value::Array(metrics) = value else {
                        return Err(invalid(&here, "expected a list of metrics"));
                    };
                    self.cpu = Some(80);
                    let mut cpu = false;
                    for (i, metric) in metrics.into_iter().enumerate() {
                        match cpu_utilisation(&metric) {
                            Some(n) if !cpu => {
                                self.cpu = Some(n);
                                self.cpu_setting = here.with(Seg::Index(i));
                                cpu = true;
                            }
                            _ => m.report(
                                &here.with(Seg::Index(i)),
                                &metric,
                                "MeshInstall autoscales on one CPU utilisation target only",
                            ),
                        }
                    }
                }
                "scaleTargetRef" if value.get("name").and_then(Value::as_str).is_none_or(|n| n == target) => {}
                _ => m.report(&here, &value, "no MeshInstall equivalent"),
            }
        }
        Ok(())
    }

    pub(super) fn finish(self, m: &mut Mapper, path: &Path) -> Result<(i32, Option<AutoscaleSpec>), ConvertError> {
        let replicas = int_in(&self.replicas_setting, &json!(self.replicas), 0, i64::from(i32::MAX))?;
        if self.enabled && (self.min < 0 || self.max < 0) {
            return Err(invalid(
                path,
                format!("autoscaling bounds {} to {} are negative", self.min, self.max),
            ));
        }
        // Istio renders the autoscaler only when enabled with non-zero bounds.
        if !(self.enabled && self.min > 0 && self.max > 0) {
            return Ok((replicas, None));
        }
        if self.min > self.max {
            return Err(invalid(
                path,
                format!("autoscaling minimum {} exceeds maximum {}", self.min, self.max),
            ));
        }
        let max = i32::try_from(self.max).map_err(|_| invalid(path, "autoscaling maximum is too large"))?;
        let mut target = 80;
        if let Some(cpu) = self.cpu {
            if (1..=100).contains(&cpu) {
                target = cpu as i32;
            } else {
                m.report(
                    &self.cpu_setting,
                    &json!(cpu),
                    "MeshInstall takes a CPU utilisation target of 1 to 100 percent; 80 is used",
                );
            }
        }
        Ok((
            replicas,
            Some(AutoscaleSpec {
                min: self.min as i32,
                max,
                target_cpu_utilization_percentage: target,
            }),
        ))
    }
}

/// The CPU utilisation target of an HPA metric (autoscaling/v2 or the older `targetAverageUtilization`).
fn cpu_utilisation(metric: &Value) -> Option<i64> {
    if metric.get("type").is_some_and(|t| t != "Resource") {
        return None;
    }
    let resource = metric.get("resource")?;
    if resource.get("name")? != "cpu" {
        return None;
    }
    match resource.get("target") {
        Some(t) if t.get("type").is_none_or(|k| k == "Utilization") => t.get("averageUtilization")?.as_i64(),
        Some(_) => None,
        None => resource.get("targetAverageUtilization")?.as_i64(),
    }
}

impl<'a> Mapper<'a> {
    pub(super) fn new(user: &'a Value, profile: &str) -> Self {
        Self {
            user,
            profile: profile.to_owned(),
            unsupported: Vec::new(),
        }
    }

    /// Records a setting the MeshInstall cannot carry.
    pub(super) fn report(&mut self, path: &Path, value: &Value, reason: &str) {
        let from_user = tree::get(self.user, path).is_some();
        self.unsupported.push(Unsupported {
            setting: path.to_string(),
            value: value.clone(),
            profile: (!from_user).then(|| self.profile.clone()),
            reason: reason.to_owned(),
        });
    }

    /// Records a flattened value (`values.a.b`, whose keys may themselves hold dots) the MeshInstall cannot carry.
    fn report_key(&mut self, key: &str, value: &Value, reason: &str) {
        let from_user = has_dotted(self.user, key);
        self.unsupported.push(Unsupported {
            setting: key.to_owned(),
            value: value.clone(),
            profile: (!from_user).then(|| self.profile.clone()),
            reason: reason.to_owned(),
        });
    }

    /// Reports every key of `rest` that is not empty.
    pub(super) fn leftovers(&mut self, path: &Path, rest: Value, reason: &str) {
        if let Value::Object(map) = rest {
            for (k, v) in map {
                if !is_empty(&v) {
                    self.report(&path.key(&k), &v, reason);
                }
            }
        }
    }

    /// The MeshInstall a merged IstioOperator spec stands for.
    pub(super) fn mesh_install(&mut self, mut spec: Value, name: Option<String>) -> Result<MeshInstall, ConvertError> {
        take(&mut spec, &["profile"]);
        let mut values = match take(&mut spec, &["values"]) {
            None | Some(Value::Null) => json!({}),
            Some(v @ Value::Object(_)) => v,
            Some(other) => {
                return Err(invalid(
                    &Path::keys(&["values"]),
                    format!("expected a map, got {other}"),
                ));
            }
        };
        if let Some(extra) = take(&mut spec, &["unvalidatedValues"]) {
            tree::merge(&mut values, extra);
        }
        // istioctl copies these into the values; values the user wrote win. Messages name whichever was used.
        let mut top = |from: &str, to: &[&str]| -> Option<(Value, Path)> {
            let top = take(&mut spec, &[from]).filter(|v| !is_empty(v));
            match (take(&mut values, to).filter(|v| !is_empty(v)), top) {
                (Some(v), _) => Some((v, Path::keys(&[&["values"][..], to].concat()))),
                (None, Some(v)) => Some((v, Path::keys(&[from]))),
                (None, None) => None,
            }
        };
        let revision = top("revision", &["revision"]);
        let namespace = top("namespace", &["global", "istioNamespace"]);
        let hub = top("hub", &["global", "hub"]);
        let tag = top("tag", &["global", "tag"]);
        let text = |entry: Option<(Value, Path)>, default: &str| -> Result<(String, Path), ConvertError> {
            match entry {
                Some((v, path)) => Ok((string(&path, &v)?, path)),
                None => Ok((default.to_owned(), Path::default())),
            }
        };
        let (revision, revision_path) = text(revision, "")?;
        let revision = if revision == "default" { String::new() } else { revision };
        if !revision.is_empty() && !dns_label(&revision, 63) {
            return Err(invalid(
                &revision_path,
                format!("{revision:?} is not a DNS label (lower-case letters, digits and '-', at most 63 characters)"),
            ));
        }
        let (namespace, namespace_path) = text(namespace, DEFAULT_NAMESPACE)?;
        if !dns_label(&namespace, 63) {
            return Err(invalid(&namespace_path, format!("{namespace:?} is not a DNS label")));
        }
        let (hub, hub_path) = text(hub, DEFAULT_HUB)?;
        let (mut version, tag_path) = text(tag, DEFAULT_ISTIO_VERSION)?;
        if let Some(v) = take(&mut values, &["global", "variant"]) {
            let variant = string(&Path::keys(&["values", "global", "variant"]), &v)?;
            if !variant.is_empty() && variant != "default" {
                // Istio tags variant images `<tag>-<variant>`, which is what spec.version becomes.
                version = format!("{version}-{variant}");
            }
        }
        if hub.len() > 255 {
            return Err(invalid(&hub_path, "MeshInstall takes a hub of at most 255 characters"));
        }
        if version.len() > 128 {
            return Err(invalid(
                &tag_path,
                "MeshInstall takes a version of at most 128 characters",
            ));
        }
        let revision_tags = self.revision_tags(take(&mut values, &["revisionTags"]))?;
        let mut mesh = take(&mut values, &["meshConfig"]).unwrap_or_else(|| json!({}));
        if let Some(m) = take(&mut spec, &["meshConfig"]) {
            tree::merge(&mut mesh, m);
        }
        let mut components = map_at(&Path::keys(&["components"]), take(&mut spec, &["components"]))?;

        let mesh_config = self.mesh_config(mesh)?;
        let injection = self.injection(&mut values)?;
        let mut pilot_values = map_at(&Path::keys(&["values", "pilot"]), take(&mut values, &["pilot"]))?;
        let mut pilot = map_at(&Path::keys(&["components", "pilot"]), take(&mut components, &["pilot"]))?;
        let istiod = if revision.is_empty() {
            "istiod".to_owned()
        } else {
            format!("istiod-{revision}")
        };
        let (control_plane, native) =
            self.control_plane(&mut pilot_values, &mut pilot, &namespace, &istiod, &hub, &version)?;
        if let Value::Object(rest) = pilot_values
            && !rest.is_empty()
        {
            tree::set(&mut values, &Path::keys(&["pilot"]), Value::Object(rest))
                .map_err(|e| invalid(&Path::keys(&["values", "pilot"]), e))?;
        }
        let gateways = self.gateways(&mut values, &mut components, &namespace)?;
        self.components(components)?;
        let mut proxy = self.proxy(values)?;
        if let Some(native) = native {
            proxy.native_sidecar = native;
        }
        for (k, v) in spec.as_object().cloned().unwrap_or_default() {
            if !is_empty(&v) {
                self.report(&Path::keys(&[&k]), &v, "no MeshInstall equivalent");
            }
        }
        let spec = MeshInstallSpec {
            version,
            hub,
            namespace,
            revision: revision.clone(),
            mesh_config,
            proxy,
            injection,
            control_plane,
            gateways,
            // Istio's operator dropped its addons in 1.8: nothing to convert.
            addons: Default::default(),
            revision_tags,
            data_plane: Default::default(),
        };
        let name = name.unwrap_or_else(|| {
            if revision.is_empty() {
                "default".into()
            } else {
                revision
            }
        });
        let mesh_install = MeshInstall::new(&name, spec);
        crate::render::render(&mesh_install, &crate::render::RenderOptions::default())?;
        Ok(mesh_install)
    }

    fn mesh_config(&mut self, mut mesh: Value) -> Result<MeshConfig, ConvertError> {
        // ProxyConfig's proxyMetadata is a map of strings; YAML may have typed some values.
        if let Some(Value::Object(md)) = mesh.pointer_mut("/defaultConfig/proxyMetadata") {
            for v in md.values_mut() {
                if let Value::Number(_) | Value::Bool(_) = v {
                    *v = Value::String(v.to_string());
                }
            }
        }
        serde_json::from_value(mesh).map_err(|e| invalid(&Path::keys(&["meshConfig"]), e.to_string()))
    }

    /// `values.revisionTags` (the istiod chart's revision tags, as `istioctl tag set` makes them) to
    /// `spec.revisionTags`.
    fn revision_tags(&mut self, tags: Option<Value>) -> Result<Vec<String>, ConvertError> {
        let path = Path::keys(&["values", "revisionTags"]);
        let Some(tags) = tags.filter(|v| !is_empty(v)) else {
            return Ok(Vec::new());
        };
        let Value::Array(items) = tags else {
            return Err(invalid(&path, "expected a list of tag names"));
        };
        let mut out: Vec<String> = Vec::new();
        for item in items {
            let tag = string(&path, &item)?;
            if !dns_label(&tag, 63) {
                return Err(invalid(&path, format!("{tag:?} is not a DNS label")));
            }
            if !out.contains(&tag) {
                out.push(tag);
            }
        }
        Ok(out)
    }

    fn injection(&mut self, values: &mut Value) -> Result<InjectionSpec, ConvertError> {
        let mut injection = InjectionSpec::default();
        let auto = Path::keys(&["values", "global", "proxy", "autoInject"]);
        if let Some(v) = take(values, &["global", "proxy", "autoInject"]) {
            injection.policy = match string(&auto, &v)?.as_str() {
                "enabled" => InjectionPolicy::Enabled,
                "disabled" => InjectionPolicy::Disabled,
                other => return Err(invalid(&auto, format!("{other:?} is not enabled or disabled"))),
            };
        }
        for (key, slot) in [
            ("neverInjectSelector", &mut injection.never_inject_selector),
            ("alwaysInjectSelector", &mut injection.always_inject_selector),
        ] {
            if let Some(v) = take(values, &["sidecarInjectorWebhook", key])
                && !v.is_null()
            {
                let path = Path::keys(&["values", "sidecarInjectorWebhook", key]);
                *slot = serde_json::from_value(v).map_err(|e| invalid(&path, e.to_string()))?;
            }
        }
        Ok(injection)
    }

    /// istiod: replicas, autoscaling, resources and environment; also the native-sidecar switch, which Istio reads
    /// from istiod's environment and the MeshInstall keeps in `spec.proxy`.
    #[allow(clippy::too_many_arguments)]
    fn control_plane(
        &mut self,
        values: &mut Value,
        component: &mut Value,
        namespace: &str,
        istiod: &str,
        hub: &str,
        version: &str,
    ) -> Result<(ControlPlaneSpec, Option<NativeSidecarMode>), ConvertError> {
        let vp = Path::keys(&["values", "pilot"]);
        let cp = Path::keys(&["components", "pilot"]);
        for (path, v) in [
            (cp.key("enabled"), take(component, &["enabled"])),
            (vp.key("enabled"), take(values, &["enabled"])),
        ] {
            if let Some(v) = v
                && !v.is_null()
                && !boolean(&path, &v)?
            {
                self.report(&path, &v, "MeshInstall always runs istiod");
            }
        }
        let mut scale = Scale::take(self, values, &vp)?;
        let mut resources = take(values, &["resources"]).unwrap_or(Value::Null);
        let mut env = BTreeMap::new();
        if let Some(v) = take(values, &["traceSampling"]) {
            let sampling = match &v {
                Value::Number(n) => n.as_f64().map(|f| f.to_string()).unwrap_or_else(|| n.to_string()),
                other => string(&vp.key("traceSampling"), other)?,
            };
            if sampling != "1" {
                env.insert("PILOT_TRACE_SAMPLING".to_owned(), sampling);
            }
        }
        let vars = match take(values, &["env"]) {
            None | Some(Value::Null) => Map::new(),
            Some(Value::Object(vars)) => vars,
            Some(other) => {
                return Err(invalid(
                    &vp.key("env"),
                    format!("expected a map of names to values, got {other}"),
                ));
            }
        };
        for (name, v) in vars {
            match v {
                Value::String(_) | Value::Number(_) | Value::Bool(_) => {
                    env.insert(name, string(&vp.key("env"), &v)?);
                }
                other => self.report(
                    &vp.key("env").key(&name),
                    &other,
                    "MeshInstall takes plain string values",
                ),
            }
        }
        if let Some(v) = take(values, &["image"])
            && !is_empty(&v)
            && v != "pilot"
        {
            self.report(&vp.key("image"), &v, &format!("MeshInstall runs {hub}/pilot:{version}"));
        }
        for key in ["hub", "tag", "variant"] {
            if let Some(v) = take(values, &[key])
                && !is_empty(&v)
            {
                self.report(
                    &vp.key(key),
                    &v,
                    "MeshInstall takes one hub and version for every image",
                );
            }
        }
        if let Some(k8s) = take(component, &["k8s"]) {
            let kp = cp.key("k8s");
            let mut k8s = map_at(&kp, Some(k8s))?;
            if let Some(v) = take(&mut k8s, &["replicaCount"]) {
                scale.replicas = int(&kp.key("replicaCount"), &v)?;
                scale.replicas_setting = kp.key("replicaCount");
            }
            if let Some(v) = take(&mut k8s, &["resources"]) {
                tree::merge(&mut resources, v);
            }
            if let Some(v) = take(&mut k8s, &["hpaSpec"]) {
                scale.hpa(self, &kp.key("hpaSpec"), v, istiod)?;
            }
            if let Some(v) = take(&mut k8s, &["env"]) {
                let Value::Array(vars) = v else {
                    return Err(invalid(&kp.key("env"), "expected a list of {name, value}"));
                };
                for var in vars {
                    let name = var.get("name").and_then(Value::as_str).unwrap_or_default().to_owned();
                    match var.get("value") {
                        Some(value) if var.get("valueFrom").is_none() => {
                            env.insert(name, string(&kp.key("env"), value)?);
                        }
                        _ => self.report(
                            &kp.key("env").with(Seg::Match("name".into(), name)),
                            &var,
                            "MeshInstall takes plain string values",
                        ),
                    }
                }
            }
            self.leftovers(&kp, k8s, "no MeshInstall equivalent");
        }
        self.component_placement(component, &cp, namespace)?;
        self.leftovers(&cp, component.take(), "no MeshInstall equivalent");

        let native = match env.remove("ENABLE_NATIVE_SIDECARS").as_deref() {
            None => None,
            Some("true") => Some(NativeSidecarMode::On),
            Some("false") => Some(NativeSidecarMode::Off),
            Some(other) => {
                return Err(invalid(
                    &vp.key("env").key("ENABLE_NATIVE_SIDECARS"),
                    format!("{other:?} is not true or false"),
                ));
            }
        };
        for name in env.keys() {
            if name.is_empty() || name.contains('=') {
                return Err(invalid(
                    &vp.key("env"),
                    format!("{name:?} is not an environment variable name"),
                ));
            }
        }
        let resources = self.resources(&vp.key("resources"), &resources)?;
        let (replicas, autoscale) = scale.finish(self, &vp)?;
        Ok((
            ControlPlaneSpec {
                replicas,
                resources: (!same_resources(&resources, &[("cpu", "500m"), ("memory", "2048Mi")], &[]))
                    .then_some(resources),
                autoscale,
                env,
            },
            native,
        ))
    }

    /// A component's own `hub`, `tag` and `namespace`, which the MeshInstall cannot set per component.
    pub(super) fn component_placement(
        &mut self,
        component: &mut Value,
        path: &Path,
        namespace: &str,
    ) -> Result<(), ConvertError> {
        for key in ["hub", "tag"] {
            if let Some(v) = take(component, &[key])
                && !is_empty(&v)
            {
                self.report(
                    &path.key(key),
                    &v,
                    "MeshInstall takes one hub and version for every image",
                );
            }
        }
        if let Some(v) = take(component, &["namespace"]) {
            let ns = string(&path.key("namespace"), &v)?;
            if !ns.is_empty() && ns != namespace {
                self.report(
                    &path.key("namespace"),
                    &v,
                    &format!("MeshInstall runs every component in spec.namespace ({namespace})"),
                );
            }
        }
        Ok(())
    }

    pub(super) fn resources(&mut self, path: &Path, value: &Value) -> Result<Resources, ConvertError> {
        let mut out = Resources::default();
        match value {
            Value::Null => {}
            Value::Object(map) => {
                for (kind, v) in map {
                    match kind.as_str() {
                        "requests" => out.requests = quantities(&path.key(kind), v)?,
                        "limits" => out.limits = quantities(&path.key(kind), v)?,
                        _ if is_empty(v) => {}
                        _ => self.report(&path.key(kind), v, "MeshInstall takes requests and limits only"),
                    }
                }
            }
            other => return Err(invalid(path, format!("expected requests and limits, got {other}"))),
        }
        Ok(out)
    }

    /// Istio components other than istiod and the gateways.
    fn components(&mut self, components: Value) -> Result<(), ConvertError> {
        let Value::Object(map) = components else {
            return Ok(());
        };
        for (name, component) in map {
            let path = Path::keys(&["components", &name]);
            let mut component = map_at(&path, Some(component))?;
            let enabled = match take(&mut component, &["enabled"]) {
                Some(v) if !v.is_null() => Some((boolean(&path.key("enabled"), &v)?, v)),
                _ => None,
            };
            match (name.as_str(), enabled) {
                // Off, as MeshInstall has them: anything else they say is moot.
                ("cni" | "ztunnel" | "istiodRemote", None | Some((false, _))) => {}
                ("base", None | Some((true, _))) => self.leftovers(&path, component, "no MeshInstall equivalent"),
                ("base", Some((false, v))) => self.report(
                    &path.key("enabled"),
                    &v,
                    "MeshInstall always installs Istio's CRDs (base)",
                ),
                (_, Some((true, v))) => self.report(
                    &path.key("enabled"),
                    &v,
                    &format!("MeshInstall does not install the {name} component"),
                ),
                _ => self.leftovers(&path, component, "no MeshInstall equivalent"),
            }
        }
        Ok(())
    }

    /// `spec.proxy` from the remaining values, read by the injection's own parser; every other value is reported
    /// unless it changes nothing.
    fn proxy(&mut self, values: Value) -> Result<ProxySpec, ConvertError> {
        let mut config = InjectionConfig::default();
        let mut leaves = Vec::new();
        flatten("values", &values, &mut leaves);
        let mut init_image_set = false;
        for (key, value) in leaves {
            let relative = key.strip_prefix("values.").unwrap_or(&key);
            if silent(relative, &value) {
                continue;
            }
            let applied = config
                .apply_value(&key, &value)
                .map_err(|e| ConvertError::InvalidSetting {
                    setting: e.key,
                    message: e.message,
                })?;
            if applied {
                init_image_set |= relative == "global.proxy_init.image";
                let carried = CARRIED
                    .iter()
                    .any(|c| relative == *c || relative.starts_with(&format!("{c}.")));
                if matches!(relative, "global.imagePullPolicy" | "global.imagePullSecrets") && !is_empty(&value) {
                    self.report_key(
                        &key,
                        &value,
                        "applied to injected proxies only; MeshInstall's istiod and gateways do not get it",
                    );
                } else if !carried && changes_injection(&key, &value) {
                    self.report_key(
                        &key,
                        &value,
                        "read by sidecar injection, but MeshInstall has no field for it",
                    );
                }
            } else if !is_empty(&value) {
                self.report_key(&key, &value, "no MeshInstall equivalent");
            }
        }
        let p = &config.proxy;
        if p.init_image != p.image {
            let (setting, value) = if init_image_set {
                ("values.global.proxy_init.image", &p.init_image)
            } else {
                ("values.global.proxy.image", &p.image)
            };
            self.report_key(
                setting,
                &json!(value),
                &format!(
                    "MeshInstall runs istio-init from the proxy image ({}), where Istio runs it from {}",
                    p.image, p.init_image
                ),
            );
        }
        let resources_path = Path::keys(&["values", "global", "proxy", "resources"]);
        let mut resources = Resources::default();
        for (kind, entries) in &p.resources {
            let map: Map<String, Value> = entries
                .iter()
                .filter_map(|(k, v)| v.as_ref().map(|q| (k.clone(), json!(q))))
                .collect();
            match kind.as_str() {
                "requests" => resources.requests = quantities(&resources_path.key(kind), &Value::Object(map))?,
                "limits" => resources.limits = quantities(&resources_path.key(kind), &Value::Object(map))?,
                _ => self.report(
                    &resources_path.key(kind),
                    &Value::Object(map),
                    "MeshInstall takes requests and limits only",
                ),
            }
        }
        if !LOG_LEVELS.contains(&p.log_level.as_str()) {
            return Err(invalid(
                &Path::keys(&["values", "global", "proxy", "logLevel"]),
                format!("{:?} is not one of {}", p.log_level, LOG_LEVELS.join(", ")),
            ));
        }
        let status_path = Path::keys(&["values", "global", "proxy", "statusPort"]);
        let image_pull_policy = match config.image_pull_policy.as_deref() {
            None => None,
            Some("Always") => Some(PullPolicy::Always),
            Some("IfNotPresent") => Some(PullPolicy::IfNotPresent),
            Some("Never") => Some(PullPolicy::Never),
            Some(other) => {
                return Err(invalid(
                    &Path::keys(&["values", "global", "imagePullPolicy"]),
                    format!("{other:?} is not Always, IfNotPresent or Never"),
                ));
            }
        };
        if p.image.is_empty() {
            return Err(invalid(
                &Path::keys(&["values", "global", "proxy", "image"]),
                "empty image",
            ));
        }
        Ok(ProxySpec {
            hold_application_until_proxy_starts: p.hold_application_until_proxy_starts,
            native_sidecar: NativeSidecarMode::Auto,
            image: p.image.clone(),
            image_pull_policy,
            image_pull_secrets: config.image_pull_secrets.clone(),
            resources,
            log_level: p.log_level.clone(),
            component_log_level: p.component_log_level.clone(),
            include_ip_ranges: p.include_ip_ranges.clone(),
            exclude_ip_ranges: p.exclude_ip_ranges.clone(),
            include_inbound_ports: p.include_inbound_ports.clone(),
            exclude_inbound_ports: p.exclude_inbound_ports.clone(),
            exclude_outbound_ports: p.exclude_outbound_ports.clone(),
            status_port: int_in(&status_path, &json!(p.status_port), 0, 65535)?,
            privileged: p.privileged,
        })
    }
}

/// Whether `tree` holds the dotted `key`, whose map keys may contain dots themselves.
fn has_dotted(tree: &Value, key: &str) -> bool {
    let Value::Object(map) = tree else {
        return false;
    };
    map.iter().any(|(k, child)| {
        key == k
            || key
                .strip_prefix(k.as_str())
                .and_then(|rest| rest.strip_prefix('.'))
                .is_some_and(|rest| has_dotted(child, rest))
    })
}

/// Whether a value the injection reads makes it behave differently from its defaults (which are Istio's).
fn changes_injection(key: &str, value: &Value) -> bool {
    let mut config = InjectionConfig::default();
    config.apply_value(key, value).is_ok_and(|applied| applied) && config != InjectionConfig::default()
}

fn silent(relative: &str, value: &Value) -> bool {
    let generic = ["istio-ingressgateway", "istio-egressgateway"]
        .iter()
        .find_map(|root| relative.strip_prefix(&format!("gateways.{root}.")))
        .map(|rest| format!("gateways.*.{rest}"));
    let key = generic.as_deref().unwrap_or(relative);
    SILENT
        .iter()
        .any(|(k, v)| *k == key && serde_json::from_str::<Value>(v).is_ok_and(|d| same(&d, value)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hpa_metrics_of_both_autoscaling_versions_give_the_cpu_target() {
        let v2 = json!({"type": "Resource", "resource": {"name": "cpu", "target": {"type": "Utilization", "averageUtilization": 60}}});
        assert_eq!(cpu_utilisation(&v2), Some(60));
        let v2beta1 = json!({"type": "Resource", "resource": {"name": "cpu", "targetAverageUtilization": 70}});
        assert_eq!(cpu_utilisation(&v2beta1), Some(70));
        for other in [
            json!({"type": "Resource", "resource": {"name": "memory", "target": {"type": "Utilization", "averageUtilization": 60}}}),
            json!({"type": "Resource", "resource": {"name": "cpu", "target": {"type": "AverageValue", "averageValue": "500m"}}}),
            json!({"type": "Pods", "pods": {}}),
        ] {
            assert_eq!(cpu_utilisation(&other), None, "{other}");
        }
    }

    #[test]
    fn only_istios_own_defaults_are_silent() {
        assert!(silent("global.logAsJson", &json!(false)));
        assert!(!silent("global.logAsJson", &json!(true)));
        assert!(silent("gateways.istio-egressgateway.rollingMaxSurge", &json!("100%")));
        assert!(!silent("gateways.istio-egressgateway.rollingMaxSurge", &json!("50%")));
        assert!(silent("pdb.minAvailable", &json!(1.0)), "numbers compare by value");
    }

    #[test]
    fn injection_values_equal_to_istios_defaults_change_nothing() {
        assert!(!changes_injection(
            "values.global.proxy.readinessPeriodSeconds",
            &json!(15)
        ));
        assert!(changes_injection(
            "values.global.proxy.readinessPeriodSeconds",
            &json!(30)
        ));
        assert!(
            !changes_injection("values.global.proxy.tracer", &json!("zipkin")),
            "not read by injection"
        );
    }

    #[test]
    fn dotted_keys_are_found_whatever_dots_their_map_keys_hold() {
        let user = json!({"values": {"gateways": {"istio-ingressgateway": {"podAnnotations": {"prometheus.io/scrape": "false"}}}}});
        assert!(has_dotted(
            &user,
            "values.gateways.istio-ingressgateway.podAnnotations.prometheus.io/scrape"
        ));
        assert!(!has_dotted(
            &user,
            "values.gateways.istio-ingressgateway.podAnnotations.prometheus.io/port"
        ));
        assert!(!has_dotted(&user, "values.gateways.istio-egressgateway"));
    }

    fn scale(values: Value) -> Result<(i32, Option<AutoscaleSpec>, Vec<String>), ConvertError> {
        let user = json!({});
        let mut m = Mapper::new(&user, "default");
        let mut values = values;
        let path = Path::keys(&["values", "pilot"]);
        let s = Scale::take(&mut m, &mut values, &path)?;
        let (replicas, autoscale) = s.finish(&mut m, &path)?;
        Ok((
            replicas,
            autoscale,
            m.unsupported.iter().map(ToString::to_string).collect(),
        ))
    }

    #[test]
    fn autoscaling_follows_istios_rules() {
        let (replicas, autoscale, lines) =
            scale(json!({"autoscaleEnabled": true, "autoscaleMin": 2, "autoscaleMax": 4, "replicaCount": 3})).unwrap();
        assert_eq!(
            (replicas, autoscale.map(|a| (a.min, a.max)), lines.len()),
            (3, Some((2, 4)), 0)
        );
        // Istio renders no autoscaler when a bound is zero.
        let (_, autoscale, _) = scale(json!({"autoscaleEnabled": true, "autoscaleMin": 0})).unwrap();
        assert_eq!(autoscale, None);
        let (_, autoscale, lines) =
            scale(json!({"autoscaleEnabled": true, "cpu": {"targetAverageUtilization": 150}})).unwrap();
        assert_eq!(autoscale.map(|a| a.target_cpu_utilization_percentage), Some(80));
        assert_eq!(
            lines,
            [
                "values.pilot.cpu.targetAverageUtilization=150 (profile default): MeshInstall takes a CPU utilisation \
              target of 1 to 100 percent; 80 is used"
            ]
        );
        let err = scale(json!({"autoscaleEnabled": true, "autoscaleMin": 5, "autoscaleMax": 2})).unwrap_err();
        assert_eq!(err.to_string(), "values.pilot: autoscaling minimum 5 exceeds maximum 2");
        let err = scale(json!({"autoscaleEnabled": true, "autoscaleMin": -1})).unwrap_err();
        assert!(err.to_string().contains("negative"), "{err}");
        let err = scale(json!({"replicaCount": -1})).unwrap_err();
        assert!(
            err.to_string().starts_with("values.pilot.replicaCount: -1 is outside"),
            "{err}"
        );
    }
}
