//! The observability addons of `spec.addons` — Prometheus, Grafana and Jaeger — named as Istio's samples name them,
//! in the mesh namespace, with restricted security contexts; and how the mesh's tracing follows the install.

use serde_json::{Value, json};

use super::{Ctx, invalid, resources};
use crate::api::{MeshInstallSpec, Resources};
use crate::render::InvalidSpec;

/// Prometheus image when `spec.addons.prometheus.image` is not given (the version Istio's samples pin).
pub const PROMETHEUS_IMAGE: &str = "docker.io/prom/prometheus:v3.7.3";
/// Grafana image when `spec.addons.grafana.image` is not given.
pub const GRAFANA_IMAGE: &str = "docker.io/grafana/grafana:12.2.0";
/// Jaeger (v2, all-in-one configuration) image when `spec.addons.jaeger.image` is not given.
pub const JAEGER_IMAGE: &str = "docker.io/jaegertracing/jaeger:2.17.0";

/// Port of the zipkin collector the proxies send spans to.
pub const ZIPKIN_PORT: u16 = 9411;
/// UID/GID each addon runs as: the non-root user its upstream image declares (`nobody` for Prometheus).
const PROMETHEUS_UID: i64 = 65534;
const GRAFANA_UID: i64 = 472;
const JAEGER_UID: i64 = 10001;
/// Pod-template annotation carrying a hash of the addon's configuration, so a changed ConfigMap rolls the pod.
pub const CONFIG_HASH: &str = "mizzen.io/config-hash";
/// The Grafana datasource uid the provisioned dashboards query.
pub const PROMETHEUS_DATASOURCE_UID: &str = "prometheus";

/// Names of every object an addon may render in the mesh namespace: a gateway must not take one of them.
const RESERVED: &[(&str, &str)] = &[
    ("prometheus", "prometheus"),
    ("grafana", "grafana"),
    ("grafana", "grafana-dashboards"),
    ("jaeger", "jaeger"),
    ("jaeger", "tracing"),
    ("jaeger", "zipkin"),
    ("jaeger", "jaeger-collector"),
];

/// The enabled addons, in status order. Each runs as the Deployment of the same name in `spec.namespace`.
pub fn enabled(spec: &MeshInstallSpec) -> Vec<&'static str> {
    let a = &spec.addons;
    [
        ("prometheus", a.prometheus.enabled),
        ("grafana", a.grafana.enabled),
        ("jaeger", a.jaeger.enabled),
    ]
    .into_iter()
    .filter_map(|(name, on)| on.then_some(name))
    .collect()
}

/// `zipkin.<namespace>:9411`: the proxies' zipkin collector. It is the jaeger addon's `zipkin` Service when the
/// addon is enabled, and whatever the user runs under that name otherwise (Istio's samples use the same name).
pub fn zipkin_address(spec: &MeshInstallSpec) -> String {
    format!("zipkin.{}:{ZIPKIN_PORT}", spec.namespace)
}

/// The proxies' tracing (ProxyConfig `tracing`) unless the user's `meshConfig.defaultConfig.tracing` sets it:
/// zipkin in the mesh's own namespace, or `{}` when `meshConfig.enableTracing` is false, which leaves the zipkin
/// cluster out of every proxy's bootstrap. `None` when the user's setting stands.
///
/// A `tracing` of the user's that names no tracer (only `sampling`, say, as Istio's docs often show) would replace
/// the whole default and leave the proxies with no collector at all: it gets the mesh's zipkin address added.
pub fn proxy_tracing(spec: &MeshInstallSpec) -> Option<Value> {
    let mc = &spec.mesh_config;
    if let Some(user) = mc.default_config.as_ref().and_then(|dc| dc.rest.get("tracing")) {
        const TRACERS: [&str; 6] = [
            "zipkin",
            "lightstep",
            "datadog",
            "stackdriver",
            "openCensusAgent",
            "custom",
        ];
        let Value::Object(fields) = user else {
            return None;
        };
        if mc.enable_tracing == Some(false) || TRACERS.iter().any(|t| fields.contains_key(*t)) {
            return None;
        }
        let mut merged = fields.clone();
        merged.insert("zipkin".into(), json!({"address": zipkin_address(spec)}));
        return Some(Value::Object(merged));
    }
    Some(if mc.enable_tracing == Some(false) {
        json!({})
    } else {
        json!({"zipkin": {"address": zipkin_address(spec)}})
    })
}

/// istiod's `PILOT_TRACE_SAMPLING` from `spec.addons.jaeger.sampling`, when the jaeger addon is on and sets it.
pub fn trace_sampling(spec: &MeshInstallSpec) -> Option<String> {
    let jaeger = &spec.addons.jaeger;
    jaeger.sampling.filter(|_| jaeger.enabled).map(|s| s.to_string())
}

/// The tracing provider the jaeger addon adds to `meshConfig.extensionProviders` (the one Istio's demo profile
/// defines), so Telemetry resources can select it by name: OTLP over gRPC to `jaeger-collector`.
pub fn extension_provider(spec: &MeshInstallSpec) -> Option<Value> {
    spec.addons.jaeger.enabled.then(|| {
        json!({"name": "jaeger", "opentelemetry": {
            "service": format!("jaeger-collector.{}.svc.cluster.local", spec.namespace), "port": 4317}})
    })
}

/// What the schema may not have refused (offline rendering skips it) and names that would collide.
pub(super) fn validate(spec: &MeshInstallSpec) -> Result<(), InvalidSpec> {
    if let Some(s) = spec.addons.jaeger.sampling
        && !(0.0..=100.0).contains(&s)
    {
        return Err(invalid("spec.addons.jaeger.sampling", "must be between 0 and 100"));
    }
    let images = [
        ("prometheus", &spec.addons.prometheus.image),
        ("grafana", &spec.addons.grafana.image),
        ("jaeger", &spec.addons.jaeger.image),
    ];
    for (name, image) in images {
        if image.as_deref().is_some_and(|i| i.trim().is_empty()) {
            return Err(invalid(format!("spec.addons.{name}.image"), "must not be empty"));
        }
    }
    let on = enabled(spec);
    for (i, g) in spec.gateways.iter().enumerate() {
        if let Some((addon, _)) = RESERVED
            .iter()
            .find(|(addon, object)| *object == g.name && on.contains(addon))
        {
            return Err(invalid(
                format!("spec.gateways[{i}].name"),
                format!("{:?} is a name the {addon} addon uses in {}", g.name, spec.namespace),
            ));
        }
    }
    Ok(())
}

/// Every enabled addon's objects.
pub(super) fn render(ctx: &Ctx) -> Vec<Value> {
    let a = &ctx.spec.addons;
    let mut out = Vec::new();
    if a.prometheus.enabled {
        out.extend(prometheus(ctx));
    }
    if a.grafana.enabled {
        out.extend(grafana(ctx));
    }
    if a.jaeger.enabled {
        out.extend(jaeger(ctx));
    }
    out
}

/// 64-bit FNV-1a: stable across Rust releases (the std hasher is not), enough to notice a changed configuration.
fn config_hash(parts: &[&str]) -> String {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for part in parts {
        for b in part.bytes().chain([0]) {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
    }
    format!("{h:016x}")
}

fn yaml(value: &Value) -> String {
    crate::yaml::to_yaml(value).unwrap_or_default()
}

/// The Pod Security Standards' `restricted` profile, plus a read-only root filesystem.
fn pod_security(uid: i64) -> Value {
    json!({"runAsNonRoot": true, "runAsUser": uid, "runAsGroup": uid, "fsGroup": uid,
           "seccompProfile": {"type": "RuntimeDefault"}})
}

fn container_security() -> Value {
    json!({"allowPrivilegeEscalation": false, "capabilities": {"drop": ["ALL"]}, "readOnlyRootFilesystem": true,
           "runAsNonRoot": true, "seccompProfile": {"type": "RuntimeDefault"}})
}

fn addon_resources(given: Option<&Resources>, cpu: &str, memory: &str) -> Value {
    given
        .map(resources)
        .unwrap_or_else(|| json!({"requests": {"cpu": cpu, "memory": memory}}))
}

/// One addon's Deployment: a single replica (its data lives in memory), replaced rather than surged.
struct Workload<'a> {
    name: &'a str,
    /// The pod selector of Istio's sample for this addon, so a hand-installed sample is adopted in place.
    selector: Value,
    service_account: &'a str,
    uid: i64,
    config_hash: String,
    container: Value,
    volumes: Value,
}

fn deployment(ctx: &Ctx, w: Workload) -> Value {
    let ns = ctx.spec.namespace.as_str();
    let mut labels = w.selector.clone();
    labels["app"] = json!(w.name);
    labels[crate::inject::annotations::INJECT] = json!("false");
    ctx.object(
        "apps/v1",
        "Deployment",
        ctx.meta(w.name, Some(ns), &[("app", w.name)]),
        json!({"spec": {
            "replicas": 1,
            // The old pod goes before the new one starts. Not `Recreate`: a Deployment installed from Istio's samples
            // has `rollingUpdate` set, which `Recreate` forbids, and could then not be taken over.
            "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 0, "maxUnavailable": 1}},
            "selector": {"matchLabels": w.selector},
            "template": {
                "metadata": {"labels": labels, "annotations": {CONFIG_HASH: w.config_hash}},
                "spec": {
                    "serviceAccountName": w.service_account,
                    "securityContext": pod_security(w.uid),
                    "containers": [w.container],
                    "volumes": w.volumes,
                },
            },
        }}),
    )
}

fn service(ctx: &Ctx, name: &str, app: &str, selector: &Value, ports: Value) -> Value {
    let ns = ctx.spec.namespace.as_str();
    ctx.object(
        "v1",
        "Service",
        ctx.meta(name, Some(ns), &[("app", app)]),
        json!({"spec": {"type": "ClusterIP", "selector": selector, "ports": ports}}),
    )
}

fn service_account(ctx: &Ctx, name: &str, mount_token: bool) -> Value {
    let ns = ctx.spec.namespace.as_str();
    ctx.object(
        "v1",
        "ServiceAccount",
        ctx.meta(name, Some(ns), &[("app", name)]),
        json!({"automountServiceAccountToken": mount_token}),
    )
}

fn config_map(ctx: &Ctx, name: &str, app: &str, data: Value) -> Value {
    let ns = ctx.spec.namespace.as_str();
    ctx.object(
        "v1",
        "ConfigMap",
        ctx.meta(name, Some(ns), &[("app", app)]),
        json!({"data": data}),
    )
}

fn image<'a>(given: &'a Option<String>, pinned: &'a str) -> &'a str {
    given.as_deref().unwrap_or(pinned)
}

/// Prometheus' configuration: itself, and every pod annotated `prometheus.io/scrape: "true"` — istiod (`:15014`),
/// the gateways and every injected sidecar (`:15020/stats/prometheus`, where the agent merges the application's
/// own metrics when the pod asked for them with the same annotations). `prometheus.io/port`, `path` and `scheme`
/// pick the endpoint; pod labels, namespace and pod name become target labels.
pub fn prometheus_config() -> Value {
    let meta = |s: &str| format!("__meta_kubernetes_pod_{s}");
    json!({
        "global": {"scrape_interval": "15s", "scrape_timeout": "10s", "evaluation_interval": "1m"},
        "scrape_configs": [
            {"job_name": "prometheus", "static_configs": [{"targets": ["localhost:9090"]}]},
            {
                "job_name": "kubernetes-pods",
                "honor_labels": true,
                "kubernetes_sd_configs": [{"role": "pod"}],
                "relabel_configs": [
                    {"action": "keep", "source_labels": [meta("annotation_prometheus_io_scrape")], "regex": "true"},
                    {"action": "drop", "source_labels": [meta("phase")], "regex": "Pending|Succeeded|Failed|Unknown"},
                    {"action": "replace", "source_labels": [meta("annotation_prometheus_io_scheme")],
                     "regex": "(https?)", "target_label": "__scheme__"},
                    {"action": "replace", "source_labels": [meta("annotation_prometheus_io_path")],
                     "regex": "(.+)", "target_label": "__metrics_path__"},
                    // The annotated port on the pod's IP; IPv6 addresses need brackets.
                    {"action": "replace", "source_labels": [meta("ip"), meta("annotation_prometheus_io_port")],
                     "regex": "([^:]+);(\\d+)", "replacement": "$1:$2", "target_label": "__address__"},
                    {"action": "replace", "source_labels": [meta("ip"), meta("annotation_prometheus_io_port")],
                     "regex": "(.+:.+);(\\d+)", "replacement": "[$1]:$2", "target_label": "__address__"},
                    {"action": "labelmap", "regex": "__meta_kubernetes_pod_label_(.+)"},
                    {"action": "replace", "source_labels": ["__meta_kubernetes_namespace"], "target_label": "namespace"},
                    {"action": "replace", "source_labels": [meta("name")], "target_label": "pod"},
                ],
            },
        ],
    })
}

fn prometheus(ctx: &Ctx) -> Vec<Value> {
    let spec = ctx.spec;
    let ns = spec.namespace.as_str();
    let addon = &spec.addons.prometheus;
    let cluster_name = format!("prometheus-{ns}");
    let config = yaml(&prometheus_config());
    let selector = json!({"app.kubernetes.io/component": "server", "app.kubernetes.io/name": "prometheus",
                          "app.kubernetes.io/instance": "prometheus"});
    let container = json!({
        "name": "prometheus",
        "image": image(&addon.image, PROMETHEUS_IMAGE),
        "args": ["--config.file=/etc/config/prometheus.yml", "--storage.tsdb.path=/prometheus",
                 "--storage.tsdb.retention.time=24h", "--web.listen-address=:9090"],
        "ports": [{"name": "http", "containerPort": 9090, "protocol": "TCP"}],
        "readinessProbe": {"httpGet": {"path": "/-/ready", "port": 9090}, "periodSeconds": 5, "timeoutSeconds": 4},
        "livenessProbe": {"httpGet": {"path": "/-/healthy", "port": 9090}, "initialDelaySeconds": 30,
                          "periodSeconds": 15, "timeoutSeconds": 10},
        "resources": addon_resources(addon.resources.as_ref(), "100m", "256Mi"),
        "securityContext": container_security(),
        "volumeMounts": [
            {"name": "config", "mountPath": "/etc/config", "readOnly": true},
            {"name": "data", "mountPath": "/prometheus"},
        ],
    });
    vec![
        service_account(ctx, "prometheus", true),
        // Service discovery of pods in every namespace, and nothing else.
        ctx.object(
            "rbac.authorization.k8s.io/v1",
            "ClusterRole",
            ctx.meta(&cluster_name, None, &[("app", "prometheus")]),
            json!({"rules": [{"apiGroups": [""], "resources": ["pods"], "verbs": ["get", "list", "watch"]}]}),
        ),
        ctx.object(
            "rbac.authorization.k8s.io/v1",
            "ClusterRoleBinding",
            ctx.meta(&cluster_name, None, &[("app", "prometheus")]),
            json!({
                "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": cluster_name},
                "subjects": [{"kind": "ServiceAccount", "name": "prometheus", "namespace": ns}],
            }),
        ),
        config_map(ctx, "prometheus", "prometheus", json!({"prometheus.yml": config})),
        deployment(
            ctx,
            Workload {
                name: "prometheus",
                selector: selector.clone(),
                service_account: "prometheus",
                uid: PROMETHEUS_UID,
                config_hash: config_hash(&[&config]),
                container,
                volumes: json!([
                    {"name": "config", "configMap": {"name": "prometheus"}},
                    {"name": "data", "emptyDir": {}},
                ]),
            },
        ),
        service(
            ctx,
            "prometheus",
            "prometheus",
            &selector,
            json!([{"name": "http", "port": 9090, "protocol": "TCP", "targetPort": 9090}]),
        ),
    ]
}

/// Grafana's datasources: the mesh namespace's `prometheus` Service (the addon's when enabled) as the default,
/// and Jaeger's query API when the jaeger addon is on.
pub fn grafana_datasources(spec: &MeshInstallSpec) -> Value {
    let ns = &spec.namespace;
    let mut sources = vec![json!({
        "name": "Prometheus", "uid": PROMETHEUS_DATASOURCE_UID, "type": "prometheus", "access": "proxy",
        "url": format!("http://prometheus.{ns}.svc:9090"), "isDefault": true, "editable": false,
        "jsonData": {"timeInterval": "15s"},
    })];
    if spec.addons.jaeger.enabled {
        sources.push(json!({
            "name": "Jaeger", "uid": "jaeger", "type": "jaeger", "access": "proxy",
            "url": format!("http://tracing.{ns}.svc:80/jaeger"), "editable": false,
        }));
    }
    json!({"apiVersion": 1, "datasources": sources})
}

/// Grafana's settings: anonymous users are Editors (they can explore and import dashboards; the datasources are
/// provisioned read-only), and there is no sign-in, so no Admin; nothing is fetched from or reported to grafana.com.
const GRAFANA_INI: &str = "\
[analytics]
reporting_enabled = false
check_for_updates = false
check_for_plugin_updates = false
[news]
news_feed_enabled = false
[log]
mode = console
[auth]
disable_login_form = true
[auth.basic]
enabled = false
[auth.anonymous]
enabled = true
org_role = Editor
[plugins]
preinstall_disabled = true
";

const GRAFANA_DASHBOARDS_PATH: &str = "/etc/grafana/dashboards/istio";

fn grafana(ctx: &Ctx) -> Vec<Value> {
    let addon = &ctx.spec.addons.grafana;
    let datasources = yaml(&grafana_datasources(ctx.spec));
    let providers = yaml(&json!({"apiVersion": 1, "providers": [{
        "name": "istio", "folder": "Istio", "type": "file", "disableDeletion": true, "allowUiUpdates": false,
        "options": {"path": GRAFANA_DASHBOARDS_PATH},
    }]}));
    let dashboard = mesh_dashboard().to_string();
    let selector = json!({"app.kubernetes.io/name": "grafana", "app.kubernetes.io/instance": "grafana"});
    let env = |name: &str, value: &str| json!({"name": name, "value": value});
    let container = json!({
        "name": "grafana",
        "image": image(&addon.image, GRAFANA_IMAGE),
        // The image's start script passes these paths to Grafana, overriding the ini file's.
        "env": [
            env("GF_PATHS_CONFIG", "/etc/grafana-config/grafana.ini"),
            env("GF_PATHS_DATA", "/var/lib/grafana"),
            env("GF_PATHS_LOGS", "/var/lib/grafana/log"),
            env("GF_PATHS_PLUGINS", "/var/lib/grafana/plugins"),
            env("GF_PATHS_PROVISIONING", "/etc/grafana/provisioning"),
        ],
        "ports": [{"name": "http", "containerPort": 3000, "protocol": "TCP"}],
        "readinessProbe": {"httpGet": {"path": "/api/health", "port": 3000}, "periodSeconds": 10, "timeoutSeconds": 5},
        "livenessProbe": {"httpGet": {"path": "/api/health", "port": 3000}, "initialDelaySeconds": 60,
                          "periodSeconds": 15, "timeoutSeconds": 10, "failureThreshold": 10},
        "resources": addon_resources(addon.resources.as_ref(), "50m", "128Mi"),
        "securityContext": container_security(),
        "volumeMounts": [
            {"name": "config", "mountPath": "/etc/grafana-config", "readOnly": true},
            {"name": "provisioning", "mountPath": "/etc/grafana/provisioning", "readOnly": true},
            {"name": "dashboards", "mountPath": GRAFANA_DASHBOARDS_PATH, "readOnly": true},
            {"name": "storage", "mountPath": "/var/lib/grafana"},
            {"name": "tmp", "mountPath": "/tmp"},
        ],
    });
    vec![
        service_account(ctx, "grafana", false),
        config_map(
            ctx,
            "grafana",
            "grafana",
            json!({"grafana.ini": GRAFANA_INI, "datasources.yaml": datasources, "dashboards.yaml": providers}),
        ),
        config_map(
            ctx,
            "grafana-dashboards",
            "grafana",
            json!({"istio-mesh.json": dashboard}),
        ),
        deployment(
            ctx,
            Workload {
                name: "grafana",
                selector: selector.clone(),
                service_account: "grafana",
                uid: GRAFANA_UID,
                config_hash: config_hash(&[GRAFANA_INI, &datasources, &providers, &dashboard]),
                container,
                volumes: json!([
                    {"name": "config", "configMap": {"name": "grafana", "items": [{"key": "grafana.ini", "path": "grafana.ini"}]}},
                    {"name": "provisioning", "configMap": {"name": "grafana", "items": [
                        {"key": "datasources.yaml", "path": "datasources/datasources.yaml"},
                        {"key": "dashboards.yaml", "path": "dashboards/dashboards.yaml"},
                    ]}},
                    {"name": "dashboards", "configMap": {"name": "grafana-dashboards"}},
                    {"name": "storage", "emptyDir": {}},
                    {"name": "tmp", "emptyDir": {}},
                ]),
            },
        ),
        service(
            ctx,
            "grafana",
            "grafana",
            &selector,
            json!([{"name": "http", "port": 3000, "protocol": "TCP", "targetPort": 3000}]),
        ),
    ]
}

/// mizzen's own Istio dashboard over Istio's standard metrics: request volume, success rate, latency and
/// responses by destination service, and istiod's connected proxies and xDS pushes.
pub fn mesh_dashboard() -> Value {
    let ds = json!({"type": "prometheus", "uid": PROMETHEUS_DATASOURCE_UID});
    let panel = |id: u32, title: &str, kind: &str, unit: &str, pos: [u32; 4], targets: &[(&str, &str)]| {
        let targets: Vec<Value> = targets
            .iter()
            .zip('A'..)
            .map(|((expr, legend), ref_id)| {
                json!({"datasource": ds, "expr": expr, "legendFormat": legend, "refId": ref_id.to_string()})
            })
            .collect();
        json!({"id": id, "title": title, "type": kind, "datasource": ds, "targets": targets,
               "fieldConfig": {"defaults": {"unit": unit}, "overrides": []},
               "gridPos": {"x": pos[0], "y": pos[1], "w": pos[2], "h": pos[3]}})
    };
    let requests = r#"istio_requests_total{reporter="destination"}"#;
    let latency = |q: &str| {
        format!(
            "histogram_quantile({q}, sum by (le, destination_service) \
             (rate(istio_request_duration_milliseconds_bucket{{reporter=\"destination\"}}[$__rate_interval])))"
        )
    };
    let (p50, p90, p99) = (latency("0.50"), latency("0.90"), latency("0.99"));
    json!({
        "uid": "mizzen-istio-mesh",
        "title": "Istio mesh (mizzen)",
        "tags": ["istio", "mizzen"],
        "editable": false,
        "schemaVersion": 39,
        "version": 1,
        "refresh": "10s",
        "time": {"from": "now-30m", "to": "now"},
        "panels": [
            panel(1, "Requests per second", "stat", "reqps", [0, 0, 6, 4],
                  &[(&format!("sum(rate({requests}[$__rate_interval]))"), "requests")]),
            panel(2, "Success rate (not 5xx)", "stat", "percentunit", [6, 0, 6, 4],
                  &[(&format!("sum(rate(istio_requests_total{{reporter=\"destination\",response_code!~\"5.*\"}}[$__rate_interval])) / sum(rate({requests}[$__rate_interval]))"), "success")]),
            panel(3, "Connected proxies", "stat", "short", [12, 0, 6, 4], &[("sum(pilot_xds)", "proxies")]),
            panel(4, "xDS pushes per second", "stat", "short", [18, 0, 6, 4],
                  &[("sum(rate(pilot_xds_pushes[$__rate_interval]))", "pushes")]),
            panel(5, "Requests per second by destination service", "timeseries", "reqps", [0, 4, 12, 8],
                  &[(&format!("sum by (destination_service) (rate({requests}[$__rate_interval]))"), "{{destination_service}}")]),
            panel(6, "Responses by code", "timeseries", "reqps", [12, 4, 12, 8],
                  &[(&format!("sum by (response_code) (rate({requests}[$__rate_interval]))"), "{{response_code}}")]),
            panel(7, "Latency by destination service", "timeseries", "ms", [0, 12, 24, 8],
                  &[(&p50, "{{destination_service}} p50"), (&p90, "{{destination_service}} p90"),
                    (&p99, "{{destination_service}} p99")]),
        ],
    })
}

/// Jaeger v2's configuration in its all-in-one form: OTLP and zipkin receivers, in-memory storage, the query UI
/// under `/jaeger` (as in Istio's sample) and the health endpoint the probes use.
pub fn jaeger_config() -> Value {
    json!({
        "service": {
            "extensions": ["jaeger_storage", "jaeger_query", "healthcheckv2"],
            "pipelines": {"traces": {"receivers": ["otlp", "zipkin"], "processors": ["batch"],
                                     "exporters": ["jaeger_storage_exporter"]}},
        },
        "extensions": {
            "healthcheckv2": {"use_v2": true, "http": {"endpoint": "0.0.0.0:13133"}},
            "jaeger_query": {"base_path": "/jaeger", "storage": {"traces": "memstore"},
                             "http": {"endpoint": "0.0.0.0:16686"}, "grpc": {"endpoint": "0.0.0.0:16685"}},
            "jaeger_storage": {"backends": {"memstore": {"memory": {"max_traces": 50000}}}},
        },
        "receivers": {
            "otlp": {"protocols": {"grpc": {"endpoint": "0.0.0.0:4317"}, "http": {"endpoint": "0.0.0.0:4318"}}},
            "zipkin": {"endpoint": format!("0.0.0.0:{ZIPKIN_PORT}")},
        },
        "processors": {"batch": {}},
        "exporters": {"jaeger_storage_exporter": {"trace_storage": "memstore"}},
    })
}

fn jaeger(ctx: &Ctx) -> Vec<Value> {
    let addon = &ctx.spec.addons.jaeger;
    let config = yaml(&jaeger_config());
    let selector = json!({"app": "jaeger"});
    let port = |name: &str, port: u16| json!({"name": name, "containerPort": port, "protocol": "TCP"});
    let health = json!({"httpGet": {"path": "/status", "port": 13133}});
    let mut readiness = health.clone();
    readiness["periodSeconds"] = json!(5);
    let mut liveness = health;
    liveness["initialDelaySeconds"] = json!(10);
    liveness["periodSeconds"] = json!(15);
    let container = json!({
        "name": "jaeger",
        "image": image(&addon.image, JAEGER_IMAGE),
        "args": ["--config", "/etc/jaeger/config.yaml"],
        "ports": [port("http-query", 16686), port("grpc-query", 16685), port("http-zipkin", ZIPKIN_PORT),
                  port("grpc-otlp", 4317), port("http-otlp", 4318), port("http-health", 13133)],
        "readinessProbe": readiness,
        "livenessProbe": liveness,
        "resources": addon_resources(addon.resources.as_ref(), "50m", "128Mi"),
        "securityContext": container_security(),
        "volumeMounts": [
            {"name": "config", "mountPath": "/etc/jaeger", "readOnly": true},
            {"name": "tmp", "mountPath": "/tmp"},
        ],
    });
    let svc_port = |name: &str, port: u16, target: u16| json!({"name": name, "port": port, "protocol": "TCP", "targetPort": target});
    vec![
        service_account(ctx, "jaeger", false),
        config_map(ctx, "jaeger", "jaeger", json!({"config.yaml": config})),
        deployment(
            ctx,
            Workload {
                name: "jaeger",
                selector: selector.clone(),
                service_account: "jaeger",
                uid: JAEGER_UID,
                config_hash: config_hash(&[&config]),
                container,
                volumes: json!([
                    {"name": "config", "configMap": {"name": "jaeger"}},
                    {"name": "tmp", "emptyDir": {}},
                ]),
            },
        ),
        service(
            ctx,
            "tracing",
            "jaeger",
            &selector,
            json!([svc_port("http-query", 80, 16686), svc_port("grpc-query", 16685, 16685)]),
        ),
        // Jaeger speaks zipkin: the proxies' default collector name.
        service(
            ctx,
            "zipkin",
            "jaeger",
            &selector,
            json!([svc_port("http-zipkin", ZIPKIN_PORT, ZIPKIN_PORT)]),
        ),
        service(
            ctx,
            "jaeger-collector",
            "jaeger",
            &selector,
            json!([
                svc_port("grpc-otlp", 4317, 4317),
                svc_port("http-otlp", 4318, 4318),
                svc_port("http-zipkin", ZIPKIN_PORT, ZIPKIN_PORT)
            ]),
        ),
    ]
}

#[cfg(test)]
mod tests {
    use serde_json::{Value, json};

    use super::*;
    use crate::render::{RenderOptions, mesh_config, render};

    fn mesh(spec: Value) -> crate::MeshInstall {
        serde_json::from_value(json!({"apiVersion": "mizzen.io/v1alpha1", "kind": "MeshInstall",
            "metadata": {"name": "default", "uid": "1234"}, "spec": spec}))
        .unwrap()
    }

    fn all_on(namespace: &str) -> crate::MeshInstall {
        mesh(
            json!({"namespace": namespace, "gateways": [{"name": "istio-ingressgateway"}],
            "addons": {"prometheus": {"enabled": true}, "grafana": {"enabled": true},
                       "jaeger": {"enabled": true, "sampling": 100}}}),
        )
    }

    fn objects(mi: &crate::MeshInstall) -> Vec<Value> {
        render(mi, &RenderOptions::default()).unwrap()
    }

    fn find<'a>(objects: &'a [Value], kind: &str, name: &str) -> &'a Value {
        objects
            .iter()
            .find(|o| o["kind"] == kind && o["metadata"]["name"] == name)
            .unwrap_or_else(|| panic!("{kind}/{name} not rendered"))
    }

    fn pod(deployment: &Value) -> &Value {
        &deployment["spec"]["template"]["spec"]
    }

    fn container(deployment: &Value) -> &Value {
        &pod(deployment)["containers"][0]
    }

    /// Whether every `key: value` of `selector` is among `labels`.
    fn selects(selector: &Value, labels: &Value) -> bool {
        let (Some(s), Some(l)) = (selector.as_object(), labels.as_object()) else {
            return false;
        };
        !s.is_empty() && s.iter().all(|(k, v)| l.get(k) == Some(v))
    }

    /// The container port a Service port reaches, checked to exist on the Deployment's container.
    fn service_reaches(objects: &[Value], service: &str, port: i64, deployment: &str) -> i64 {
        let svc = find(objects, "Service", service);
        let d = find(objects, "Deployment", deployment);
        assert!(
            selects(&svc["spec"]["selector"], &d["spec"]["template"]["metadata"]["labels"]),
            "Service {service} does not select {deployment}'s pods"
        );
        let p = svc["spec"]["ports"]
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["port"] == port)
            .unwrap_or_else(|| panic!("Service {service} has no port {port}"));
        let target = p["targetPort"].as_i64().unwrap();
        let ports = container(d)["ports"].as_array().unwrap();
        assert!(
            ports.iter().any(|c| c["containerPort"] == target),
            "{deployment} does not listen on {target} (Service {service}:{port})"
        );
        target
    }

    /// A YAML document of a ConfigMap key.
    fn config_yaml(objects: &[Value], config_map: &str, key: &str) -> Value {
        let text = find(objects, "ConfigMap", config_map)["data"][key]
            .as_str()
            .unwrap_or_else(|| panic!("ConfigMap {config_map} has no {key}"));
        crate::yaml::parse_documents(text).unwrap().remove(0)
    }

    /// Where a ConfigMap key appears in a Deployment's container: the mounted path of the key.
    fn mounted_path(d: &Value, config_map: &str, key: &str) -> Option<String> {
        let volumes = pod(d)["volumes"].as_array()?;
        for v in volumes {
            if v["configMap"]["name"] != config_map {
                continue;
            }
            let path = match v["configMap"]["items"].as_array() {
                Some(items) => match items.iter().find(|i| i["key"] == key) {
                    Some(item) => item["path"].as_str()?.to_owned(),
                    None => continue,
                },
                None => key.to_owned(),
            };
            let mount = container(d)["volumeMounts"]
                .as_array()?
                .iter()
                .find(|m| m["name"] == v["name"])?;
            return Some(format!("{}/{path}", mount["mountPath"].as_str()?));
        }
        None
    }

    /// The port of a `host:port` listen address.
    fn port_of(endpoint: &Value) -> i64 {
        endpoint.as_str().unwrap().rsplit(':').next().unwrap().parse().unwrap()
    }

    /// Violations of the Pod Security Standards' `restricted` profile (Kubernetes 1.33).
    fn restricted_violations(name: &str, pod: &Value) -> Vec<String> {
        let mut out = Vec::new();
        for host in ["hostNetwork", "hostPID", "hostIPC"] {
            if pod[host] == true {
                out.push(format!("{name}: {host}"));
            }
        }
        let allowed = [
            "configMap",
            "csi",
            "downwardAPI",
            "emptyDir",
            "ephemeral",
            "persistentVolumeClaim",
            "projected",
            "secret",
        ];
        for v in pod["volumes"].as_array().into_iter().flatten() {
            let kind = v.as_object().unwrap().keys().find(|k| *k != "name").unwrap();
            if !allowed.contains(&kind.as_str()) {
                out.push(format!("{name}: volume type {kind}"));
            }
        }
        let pod_sc = &pod["securityContext"];
        for c in pod["containers"].as_array().unwrap() {
            let sc = &c["securityContext"];
            let either = |k: &str| if sc[k].is_null() { &pod_sc[k] } else { &sc[k] };
            if sc["privileged"] == true {
                out.push(format!("{name}: privileged"));
            }
            if sc["allowPrivilegeEscalation"] != false {
                out.push(format!("{name}: allowPrivilegeEscalation is not false"));
            }
            if sc["capabilities"]["drop"] != json!(["ALL"]) {
                out.push(format!("{name}: capabilities not dropped"));
            }
            let added = sc["capabilities"]["add"].as_array().cloned().unwrap_or_default();
            if added.iter().any(|c| c != "NET_BIND_SERVICE") {
                out.push(format!("{name}: capabilities added {added:?}"));
            }
            if either("runAsNonRoot") != true {
                out.push(format!("{name}: runAsNonRoot is not true"));
            }
            if either("runAsUser") == 0 {
                out.push(format!("{name}: runs as root"));
            }
            if !matches!(
                either("seccompProfile")["type"].as_str(),
                Some("RuntimeDefault" | "Localhost")
            ) {
                out.push(format!("{name}: no RuntimeDefault seccomp profile"));
            }
            if c["ports"]
                .as_array()
                .into_iter()
                .flatten()
                .any(|p| !p["hostPort"].is_null())
            {
                out.push(format!("{name}: hostPort"));
            }
        }
        out
    }

    #[test]
    fn disabled_addons_render_nothing() {
        let plain = objects(&mesh(json!({})));
        let with_addons = objects(&all_on("istio-system"));
        let names = |objects: &[Value]| -> Vec<String> {
            objects
                .iter()
                .map(|o| {
                    format!(
                        "{}/{}",
                        o["kind"].as_str().unwrap(),
                        o["metadata"]["name"].as_str().unwrap()
                    )
                })
                .collect()
        };
        let (plain, with_addons) = (names(&plain), names(&with_addons));
        for addon in ["prometheus", "grafana", "jaeger"] {
            assert!(
                !plain.contains(&format!("Deployment/{addon}")),
                "{addon} rendered while off"
            );
            assert!(
                with_addons.contains(&format!("Deployment/{addon}")),
                "{addon} not rendered"
            );
        }
        assert!(!plain.iter().any(|n| n.contains("prometheus") || n.contains("zipkin")));
    }

    #[test]
    fn services_are_named_as_istios_samples_and_reach_their_containers() {
        let o = objects(&all_on("mesh-a"));
        assert_eq!(service_reaches(&o, "prometheus", 9090, "prometheus"), 9090);
        assert_eq!(service_reaches(&o, "grafana", 3000, "grafana"), 3000);
        assert_eq!(service_reaches(&o, "tracing", 80, "jaeger"), 16686);
        assert_eq!(service_reaches(&o, "zipkin", 9411, "jaeger"), 9411);
        assert_eq!(service_reaches(&o, "jaeger-collector", 4317, "jaeger"), 4317);
        for o in o.iter().filter(|o| o["kind"] == "Deployment" || o["kind"] == "Service") {
            assert_eq!(o["metadata"]["namespace"], "mesh-a", "{}", o["metadata"]["name"]);
        }
        for name in ["prometheus", "grafana", "jaeger"] {
            let d = find(&o, "Deployment", name);
            assert!(selects(
                &d["spec"]["selector"]["matchLabels"],
                &d["spec"]["template"]["metadata"]["labels"]
            ));
            assert_eq!(
                d["spec"]["template"]["metadata"]["labels"]["sidecar.istio.io/inject"],
                "false"
            );
            assert_eq!(d["spec"]["replicas"], 1);
            // Never two at once: the data is the pod's own.
            assert_eq!(d["spec"]["strategy"]["rollingUpdate"]["maxSurge"], 0);
        }
    }

    #[test]
    fn images_are_pinned_upstream_ones_and_overridable() {
        let o = objects(&all_on("istio-system"));
        assert_eq!(
            container(find(&o, "Deployment", "prometheus"))["image"],
            PROMETHEUS_IMAGE
        );
        assert_eq!(container(find(&o, "Deployment", "grafana"))["image"], GRAFANA_IMAGE);
        assert_eq!(container(find(&o, "Deployment", "jaeger"))["image"], JAEGER_IMAGE);
        for pinned in [PROMETHEUS_IMAGE, GRAFANA_IMAGE, JAEGER_IMAGE] {
            let tag = pinned.rsplit(':').next().unwrap();
            assert!(
                tag.chars().next().unwrap().is_ascii_digit() || tag.starts_with('v'),
                "{pinned} is not pinned"
            );
        }
        let mi = mesh(
            json!({"addons": {"grafana": {"enabled": true, "image": "mirror.example/grafana:12.2.1",
            "resources": {"limits": {"memory": "512Mi"}}}}}),
        );
        let o = objects(&mi);
        let c = container(find(&o, "Deployment", "grafana"));
        assert_eq!(c["image"], "mirror.example/grafana:12.2.1");
        assert_eq!(c["resources"], json!({"limits": {"memory": "512Mi"}}));
    }

    #[test]
    fn addon_pods_meet_the_restricted_pod_security_standard() {
        let o = objects(&all_on("istio-system"));
        for name in ["prometheus", "grafana", "jaeger"] {
            let d = find(&o, "Deployment", name);
            assert_eq!(restricted_violations(name, pod(d)), Vec::<String>::new());
            // The root filesystem is read-only, so every path the addon writes is a volume.
            let c = container(d);
            assert_eq!(c["securityContext"]["readOnlyRootFilesystem"], true);
            let writable: Vec<&str> = c["volumeMounts"]
                .as_array()
                .unwrap()
                .iter()
                .filter(|m| m["readOnly"] != true)
                .map(|m| m["mountPath"].as_str().unwrap())
                .collect();
            let needed: &[&str] = match name {
                "prometheus" => &["/prometheus"],
                "grafana" => &["/var/lib/grafana", "/tmp"],
                _ => &["/tmp"],
            };
            for path in needed {
                assert!(writable.contains(path), "{name}: {path} is not writable: {writable:?}");
            }
        }
        // The checker itself catches what it must.
        let bad = json!({"hostNetwork": true, "volumes": [{"name": "h", "hostPath": {"path": "/"}}],
                         "containers": [{"name": "c", "securityContext": {"privileged": true}}]});
        assert_eq!(restricted_violations("bad", &bad).len(), 7);
    }

    #[test]
    fn prometheus_may_discover_pods_in_every_namespace_and_nothing_more() {
        let o = objects(&all_on("mesh-a"));
        let d = find(&o, "Deployment", "prometheus");
        assert_eq!(pod(d)["serviceAccountName"], "prometheus");
        let sa = find(&o, "ServiceAccount", "prometheus");
        assert_eq!(sa["metadata"]["namespace"], "mesh-a");
        assert_eq!(
            sa["automountServiceAccountToken"], true,
            "service discovery needs the token"
        );
        let role = find(&o, "ClusterRole", "prometheus-mesh-a");
        assert_eq!(
            role["rules"],
            json!([{"apiGroups": [""], "resources": ["pods"], "verbs": ["get", "list", "watch"]}])
        );
        let binding = find(&o, "ClusterRoleBinding", "prometheus-mesh-a");
        assert_eq!(binding["roleRef"]["name"], "prometheus-mesh-a");
        assert_eq!(
            binding["subjects"],
            json!([{"kind": "ServiceAccount", "name": "prometheus", "namespace": "mesh-a"}])
        );
        // The configuration file is where the arguments say, and discovers pods cluster-wide.
        let path = mounted_path(d, "prometheus", "prometheus.yml").unwrap();
        let args = container(d)["args"].as_array().unwrap();
        assert!(args.contains(&json!(format!("--config.file={path}"))), "{args:?}");
        let config = config_yaml(&o, "prometheus", "prometheus.yml");
        assert_eq!(config, prometheus_config());
        let pods = config["scrape_configs"]
            .as_array()
            .unwrap()
            .iter()
            .find(|j| j["job_name"] == "kubernetes-pods")
            .unwrap();
        assert_eq!(pods["kubernetes_sd_configs"], json!([{"role": "pod"}]));
        let storage = args
            .iter()
            .find_map(|a| a.as_str()?.strip_prefix("--storage.tsdb.path="))
            .unwrap();
        assert!(
            container(d)["volumeMounts"]
                .as_array()
                .unwrap()
                .iter()
                .any(|m| m["mountPath"] == storage),
            "the TSDB path is not a volume"
        );
    }

    #[test]
    fn grafana_is_provisioned_with_the_prometheus_datasource_and_a_dashboard() {
        let o = objects(&all_on("mesh-a"));
        let d = find(&o, "Deployment", "grafana");
        let env = |name: &str| {
            container(d)["env"]
                .as_array()
                .unwrap()
                .iter()
                .find(|e| e["name"] == name)
                .and_then(|e| e["value"].as_str())
                .unwrap()
                .to_owned()
        };
        assert_eq!(
            mounted_path(d, "grafana", "grafana.ini").unwrap(),
            env("GF_PATHS_CONFIG")
        );
        let provisioning = env("GF_PATHS_PROVISIONING");
        assert_eq!(
            mounted_path(d, "grafana", "datasources.yaml").unwrap(),
            format!("{provisioning}/datasources/datasources.yaml")
        );
        assert_eq!(
            mounted_path(d, "grafana", "dashboards.yaml").unwrap(),
            format!("{provisioning}/dashboards/dashboards.yaml")
        );
        let sources = config_yaml(&o, "grafana", "datasources.yaml");
        let prom = &sources["datasources"][0];
        assert_eq!(
            (prom["type"].as_str(), prom["isDefault"].as_bool()),
            (Some("prometheus"), Some(true))
        );
        // The URL is the prometheus Service of the mesh namespace, on its port.
        assert_eq!(prom["url"], "http://prometheus.mesh-a.svc:9090");
        service_reaches(&o, "prometheus", 9090, "prometheus");
        let jaeger = &sources["datasources"][1];
        assert_eq!(
            (jaeger["type"].as_str(), jaeger["url"].as_str()),
            (Some("jaeger"), Some("http://tracing.mesh-a.svc:80/jaeger"))
        );
        // The dashboard provider reads the directory the dashboards are mounted at; each panel queries the
        // provisioned datasource.
        let providers = config_yaml(&o, "grafana", "dashboards.yaml");
        let dir = providers["providers"][0]["options"]["path"].as_str().unwrap();
        assert_eq!(
            mounted_path(d, "grafana-dashboards", "istio-mesh.json").unwrap(),
            format!("{dir}/istio-mesh.json")
        );
        let text = find(&o, "ConfigMap", "grafana-dashboards")["data"]["istio-mesh.json"]
            .as_str()
            .unwrap();
        let dashboard: Value = serde_json::from_str(text).unwrap();
        let panels = dashboard["panels"].as_array().unwrap();
        assert!(panels.len() >= 5);
        for p in panels {
            assert_eq!(p["datasource"]["uid"], prom["uid"], "{}", p["title"]);
            for t in p["targets"].as_array().unwrap() {
                let expr = t["expr"].as_str().unwrap();
                assert!(expr.contains("istio_") || expr.contains("pilot_"), "{expr}");
                assert_eq!(expr.matches('(').count(), expr.matches(')').count(), "{expr}");
            }
        }
        // Without the jaeger addon there is no Jaeger datasource, and the changed configuration rolls Grafana.
        let only = objects(&mesh(
            json!({"namespace": "mesh-a", "addons": {"grafana": {"enabled": true}}}),
        ));
        let sources = config_yaml(&only, "grafana", "datasources.yaml");
        assert_eq!(sources["datasources"].as_array().unwrap().len(), 1);
        let hash = |o: &[Value]| {
            find(o, "Deployment", "grafana")["spec"]["template"]["metadata"]["annotations"][CONFIG_HASH].clone()
        };
        assert_ne!(hash(&o), hash(&only));
    }

    #[test]
    fn jaeger_listens_where_its_services_and_probes_point() {
        let o = objects(&all_on("istio-system"));
        let d = find(&o, "Deployment", "jaeger");
        let path = mounted_path(d, "jaeger", "config.yaml").unwrap();
        assert_eq!(container(d)["args"], json!(["--config", path]));
        let config = config_yaml(&o, "jaeger", "config.yaml");
        assert_eq!(config, jaeger_config());
        let pipeline = &config["service"]["pipelines"]["traces"];
        assert!(pipeline["receivers"].as_array().unwrap().contains(&json!("zipkin")));
        assert_eq!(
            port_of(&config["receivers"]["zipkin"]["endpoint"]),
            service_reaches(&o, "zipkin", 9411, "jaeger")
        );
        assert_eq!(
            port_of(&config["extensions"]["jaeger_query"]["http"]["endpoint"]),
            service_reaches(&o, "tracing", 80, "jaeger")
        );
        assert_eq!(
            port_of(&config["receivers"]["otlp"]["protocols"]["grpc"]["endpoint"]),
            service_reaches(&o, "jaeger-collector", 4317, "jaeger")
        );
        let health = port_of(&config["extensions"]["healthcheckv2"]["http"]["endpoint"]);
        assert_eq!(container(d)["readinessProbe"]["httpGet"]["port"], health);
        assert_eq!(container(d)["livenessProbe"]["httpGet"]["port"], health);
        // Every extension and pipeline component the service uses is configured.
        for e in config["service"]["extensions"].as_array().unwrap() {
            assert!(config["extensions"][e.as_str().unwrap()].is_object(), "{e}");
        }
        for (section, key) in [
            ("receivers", "receivers"),
            ("processors", "processors"),
            ("exporters", "exporters"),
        ] {
            for c in pipeline[key].as_array().unwrap() {
                assert!(config[section][c.as_str().unwrap()].is_object(), "{section}.{c}");
            }
        }
    }

    #[test]
    fn tracing_follows_the_install() {
        let tracing = |spec: Value| mesh_config(&mesh(spec).spec)["defaultConfig"]["tracing"].clone();
        assert_eq!(
            tracing(json!({"namespace": "mesh-a"})),
            json!({"zipkin": {"address": "zipkin.mesh-a:9411"}})
        );
        assert_eq!(
            tracing(json!({"namespace": "mesh-a", "addons": {"jaeger": {"enabled": true}}})),
            json!({"zipkin": {"address": "zipkin.mesh-a:9411"}}),
            "the jaeger addon's zipkin Service"
        );
        assert_eq!(
            tracing(json!({"meshConfig": {"enableTracing": false}})),
            json!({}),
            "tracing off: no cluster"
        );
        let theirs = json!({"zipkin": {"address": "collector.example:9411"}, "sampling": 5.0});
        assert_eq!(
            tracing(json!({"meshConfig": {"defaultConfig": {"tracing": theirs}}})),
            theirs,
            "the user's tracing wins"
        );
        assert_eq!(
            tracing(json!({"namespace": "mesh-a", "addons": {"jaeger": {"enabled": true}},
                           "meshConfig": {"defaultConfig": {"tracing": {"sampling": 50.0}}}})),
            json!({"sampling": 50.0, "zipkin": {"address": "zipkin.mesh-a:9411"}}),
            "a tracing with no tracer keeps the mesh's collector"
        );
    }

    #[test]
    fn the_jaeger_addon_adds_its_provider_and_sets_the_sampling() {
        let m = mesh_config(&all_on("mesh-a").spec);
        assert_eq!(
            m["extensionProviders"],
            json!([{"name": "jaeger", "opentelemetry": {"service": "jaeger-collector.mesh-a.svc.cluster.local", "port": 4317}}])
        );
        let theirs = json!([{"name": "otel", "opentelemetry": {"service": "otel.example", "port": 4317}},
                            {"name": "jaeger", "zipkin": {"service": "mine.example", "port": 9411}}]);
        let mut mi = all_on("mesh-a");
        mi.spec
            .mesh_config
            .rest
            .insert("extensionProviders".into(), theirs.clone());
        assert_eq!(
            mesh_config(&mi.spec)["extensionProviders"],
            theirs,
            "a provider of theirs named jaeger stays"
        );
        let sampling = |mi: &crate::MeshInstall| {
            let o = objects(mi);
            let env = container(find(&o, "Deployment", "istiod"))["env"]
                .as_array()
                .unwrap()
                .clone();
            env.into_iter().find(|e| e["name"] == "PILOT_TRACE_SAMPLING").unwrap()["value"].clone()
        };
        assert_eq!(sampling(&all_on("mesh-a")), "100");
        assert_eq!(sampling(&mesh(json!({}))), "1", "Istio's default");
        assert_eq!(
            sampling(&mesh(json!({"addons": {"jaeger": {"enabled": false, "sampling": 50}}}))),
            "1",
            "only with the addon on"
        );
        let mut mi = all_on("mesh-a");
        mi.spec
            .control_plane
            .env
            .insert("PILOT_TRACE_SAMPLING".into(), "2.5".into());
        assert_eq!(sampling(&mi), "2.5", "controlPlane.env wins");
        assert_eq!(
            sampling(&mesh(json!({"addons": {"jaeger": {"enabled": true, "sampling": 0.5}}}))),
            "0.5"
        );
    }

    /// `PROXY_CONFIG` of a pod injected with a MeshInstall's configuration.
    fn injected_proxy_config(mi: &crate::MeshInstall) -> String {
        let config = crate::inject::Injector::compile(crate::inject::InjectionConfig::from_mesh_install(&mi.spec));
        let mut pod = json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "app", "namespace": "default"},
                             "spec": {"containers": [{"name": "app", "image": "example.com/app"}]}});
        let mut skipped = Vec::new();
        assert!(crate::kubeinject::inject_object(&config, &mut pod, &mut skipped).unwrap());
        let proxy = pod["spec"]["initContainers"]
            .as_array()
            .into_iter()
            .chain(pod["spec"]["containers"].as_array())
            .flatten()
            .find(|c| c["name"] == "istio-proxy")
            .unwrap();
        let env = proxy["env"].as_array().unwrap();
        env.iter().find(|e| e["name"] == "PROXY_CONFIG").unwrap()["value"]
            .as_str()
            .unwrap()
            .to_owned()
    }

    #[test]
    fn injected_proxies_send_spans_to_the_installs_own_namespace() {
        let proxy_config =
            |spec: Value| -> Value { serde_json::from_str(&injected_proxy_config(&mesh(spec))).unwrap() };
        // Istio's default (zipkin.istio-system:9411) is what the agent assumes: nothing to say.
        assert!(proxy_config(json!({})).get("tracing").is_none());
        assert_eq!(
            proxy_config(json!({"namespace": "mesh-a", "addons": {"jaeger": {"enabled": true}}}))["tracing"],
            json!({"zipkin": {"address": "zipkin.mesh-a:9411"}})
        );
        // Tracing off: an empty tracing block, so the agent renders no zipkin cluster.
        assert_eq!(
            proxy_config(json!({"meshConfig": {"enableTracing": false}}))["tracing"],
            json!({})
        );
    }

    #[test]
    fn addon_names_the_schema_cannot_protect_are_reported_by_field() {
        let err = render(
            &mesh(json!({"gateways": [{"name": "grafana"}], "addons": {"grafana": {"enabled": true}}})),
            &RenderOptions::default(),
        )
        .unwrap_err();
        assert_eq!(err.field, "spec.gateways[0].name");
        assert!(err.message.contains("grafana addon"), "{}", err.message);
        // The same gateway name is fine while the addon is off.
        render(
            &mesh(json!({"gateways": [{"name": "grafana"}]})),
            &RenderOptions::default(),
        )
        .unwrap();
        let err = render(
            &mesh(json!({"gateways": [{"name": "zipkin"}], "addons": {"jaeger": {"enabled": true}}})),
            &RenderOptions::default(),
        )
        .unwrap_err();
        assert_eq!(err.field, "spec.gateways[0].name");
        let err = render(
            &mesh(json!({"addons": {"jaeger": {"enabled": true, "sampling": 150}}})),
            &RenderOptions::default(),
        )
        .unwrap_err();
        assert_eq!(err.field, "spec.addons.jaeger.sampling");
        let err = render(
            &mesh(json!({"addons": {"prometheus": {"enabled": true, "image": " "}}})),
            &RenderOptions::default(),
        )
        .unwrap_err();
        assert_eq!(err.field, "spec.addons.prometheus.image");
    }

    #[test]
    fn the_addons_sample_renders_every_addon() {
        let mi: crate::MeshInstall =
            serde_saphyr::from_str(include_str!("../../config/samples/meshinstall-addons.yaml")).unwrap();
        assert_eq!(enabled(&mi.spec), ["prometheus", "grafana", "jaeger"]);
        let o = objects(&mi);
        for name in ["prometheus", "grafana", "jaeger"] {
            find(&o, "Deployment", name);
        }
        // Apart from the addons it is the plain sample, so applying it over that one only adds them.
        let plain: crate::MeshInstall =
            serde_saphyr::from_str(include_str!("../../config/samples/meshinstall.yaml")).unwrap();
        let mut without = mi.spec.clone();
        without.addons = Default::default();
        assert_eq!(without, plain.spec);
    }
}
