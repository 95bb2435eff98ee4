//! Desired state as a pure function of a `MeshInstall`: istiod and its RBAC, Service, mesh ConfigMap and autoscaling;
//! each gateway's Deployment, Service, RBAC and autoscaling; the enabled addons ([`addons`]); Istio's API CRDs; and
//! the MutatingWebhookConfiguration pointing at mizzen's webhook. The operator applies exactly this list; `mizzenctl
//! render` prints it.

pub mod addons;

use std::collections::BTreeMap;

use serde_json::{Map, Value, json};

use crate::api::{GatewayKind, GatewayPort, MeshInstall, MeshInstallSpec, Resources, ServiceType};
use crate::inject::annotations as ann;

/// `app.kubernetes.io/managed-by` value on every child.
pub const MANAGED_BY: &str = "mizzen";
/// Label naming the MeshInstall a child belongs to (for pruning).
pub const OWNER_LABEL: &str = "mizzen.io/meshinstall";
/// Namespace of the mizzen webhook Service.
pub const DEFAULT_OPERATOR_NAMESPACE: &str = "mizzen-system";
/// Name of the mizzen webhook Service.
pub const WEBHOOK_SERVICE: &str = "mizzen-webhook";

/// How rendering reaches the webhook.
#[derive(Debug, Clone, Default)]
pub struct RenderOptions {
    /// Namespace of the mizzen webhook Service (`mizzen-system`).
    pub operator_namespace: String,
    /// A URL for the webhook instead of the in-cluster Service (out-of-cluster development).
    pub webhook_url: Option<String>,
    /// PEM CA bundle of the webhook's certificate, if known.
    pub ca_bundle: Option<String>,
    /// Leave Istio's CRDs out (the operator applies them from their text, see [`crate::istio_crds::raw`]).
    pub skip_istio_crds: bool,
    /// What this MeshInstall holds among all of them (tags, the `default` name; see [`crate::revisions::assign`]);
    /// `None` judges it alone (`mizzenctl render`): every tag it lists, and `default` for the default revision.
    pub holdings: Option<crate::revisions::Holdings>,
}

/// A spec the schema could not refuse but mizzen cannot render; names the field.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {message}")]
pub struct InvalidSpec {
    /// The offending field, such as `spec.gateways[1].name`.
    pub field: String,
    /// What is wrong.
    pub message: String,
}

fn invalid(field: impl Into<String>, message: impl Into<String>) -> InvalidSpec {
    InvalidSpec {
        field: field.into(),
        message: message.into(),
    }
}

/// Names derived from the revision, as Istio names them.
pub struct Names {
    /// `""` or `-<revision>`.
    pub suffix: String,
    /// `default` or the revision.
    pub revision: String,
    /// Control-plane namespace.
    pub namespace: String,
}

impl Names {
    /// Names for a spec.
    pub fn new(spec: &MeshInstallSpec) -> Self {
        Self {
            suffix: if spec.revision.is_empty() {
                String::new()
            } else {
                format!("-{}", spec.revision)
            },
            revision: spec.revision_label().to_owned(),
            namespace: spec.namespace.clone(),
        }
    }
    /// `istiod[-rev]`.
    pub fn istiod(&self) -> String {
        format!("istiod{}", self.suffix)
    }
    /// `istio[-rev]`, the mesh ConfigMap.
    pub fn mesh_config(&self) -> String {
        format!("istio{}", self.suffix)
    }
    /// `mizzen-sidecar-injector[-rev]`.
    pub fn webhook_config(&self) -> String {
        format!("mizzen-sidecar-injector{}", self.suffix)
    }
}

fn owner_reference(mi: &MeshInstall) -> Value {
    json!({
        "apiVersion": "mizzen.io/v1alpha1",
        "kind": "MeshInstall",
        "name": mi.metadata.name.clone().unwrap_or_default(),
        "uid": mi.metadata.uid.clone().unwrap_or_default(),
        "controller": true,
        "blockOwnerDeletion": true,
    })
}

/// Gives each webhook configuration among `objects` named in `heirs` an owner reference to its heir (see
/// [`crate::revisions::heirs`]) after its controller reference: not a controller, and not blocking the heir's
/// deletion, it only keeps the garbage collector from deleting the configuration with its holder.
pub fn add_heirs(objects: &mut [Value], heirs: &BTreeMap<String, &MeshInstall>) {
    for o in objects
        .iter_mut()
        .filter(|o| o["kind"] == "MutatingWebhookConfiguration")
    {
        let Some(heir) = o["metadata"]["name"].as_str().and_then(|n| heirs.get(n)) else {
            continue;
        };
        let reference = json!({
            "apiVersion": "mizzen.io/v1alpha1",
            "kind": "MeshInstall",
            "name": heir.metadata.name.clone().unwrap_or_default(),
            "uid": heir.metadata.uid.clone().unwrap_or_default(),
        });
        if let Some(references) = o["metadata"]["ownerReferences"].as_array_mut() {
            references.push(reference);
        }
    }
}

fn quantity_map(map: &BTreeMap<String, k8s_openapi::apimachinery::pkg::api::resource::Quantity>) -> Value {
    Value::Object(
        map.iter()
            .map(|(k, q)| {
                (
                    k.clone(),
                    Value::String(crate::quantity::canonical(&q.0).unwrap_or_else(|_| q.0.clone())),
                )
            })
            .collect(),
    )
}

fn resources(r: &Resources) -> Value {
    let mut out = Map::new();
    if !r.limits.is_empty() {
        out.insert("limits".into(), quantity_map(&r.limits));
    }
    if !r.requests.is_empty() {
        out.insert("requests".into(), quantity_map(&r.requests));
    }
    Value::Object(out)
}

struct Ctx<'a> {
    mi: &'a MeshInstall,
    spec: &'a MeshInstallSpec,
    names: Names,
    owner: Value,
}

impl Ctx<'_> {
    fn meta(&self, name: &str, namespace: Option<&str>, labels: &[(&str, &str)]) -> Value {
        let mut l = Map::new();
        l.insert("app.kubernetes.io/managed-by".into(), json!(MANAGED_BY));
        l.insert(
            OWNER_LABEL.into(),
            json!(self.mi.metadata.name.clone().unwrap_or_default()),
        );
        l.insert(ann::REVISION.into(), json!(self.names.revision));
        for (k, v) in labels {
            l.insert((*k).into(), json!(v));
        }
        let mut m = json!({"name": name, "labels": l, "ownerReferences": [self.owner.clone()]});
        if let Some(ns) = namespace {
            m["namespace"] = json!(ns);
        }
        m
    }

    fn object(&self, api_version: &str, kind: &str, meta: Value, body: Value) -> Value {
        let mut o = json!({"apiVersion": api_version, "kind": kind, "metadata": meta});
        if let (Value::Object(o), Value::Object(b)) = (&mut o, body) {
            o.extend(b);
        }
        o
    }

    /// `<hub>/<name>:<version>`, or `name` itself when it is a full reference (contains `/`), the rule
    /// `spec.proxy.image` documents and the injector follows.
    fn image(&self, name: &str) -> String {
        if name.contains('/') {
            name.to_owned()
        } else {
            format!("{}/{}:{}", self.spec.hub, name, self.spec.version)
        }
    }
}

/// Renders everything a MeshInstall asks for, in apply order.
pub fn render(mi: &MeshInstall, options: &RenderOptions) -> Result<Vec<Value>, InvalidSpec> {
    let spec = &mi.spec;
    validate(spec, options)?;
    let ctx = Ctx {
        mi,
        spec,
        names: Names::new(spec),
        owner: owner_reference(mi),
    };
    let mut out = Vec::new();
    if !options.skip_istio_crds {
        out.extend(crate::istio_crds::crds().map_err(|e| invalid("(built-in Istio CRDs)", e.to_string()))?);
    }
    out.push(json!({
        "apiVersion": "v1",
        "kind": "Namespace",
        // Created when missing; an existing namespace that is not mizzen's is used as it is (never relabelled).
        "metadata": {"name": spec.namespace, "labels": {"app.kubernetes.io/managed-by": MANAGED_BY}},
    }));
    out.push(operator_binding(&ctx, options));
    out.extend(control_plane(&ctx));
    for g in &spec.gateways {
        out.extend(gateway(&ctx, g));
    }
    out.extend(addons::render(&ctx));
    out.extend(webhook_configurations(&ctx, options));
    Ok(out)
}

/// The operator's rights inside the mesh namespace (see [`crate::rbac`]): what istiod's and the gateways' Roles
/// grant, so it may create those Roles without `escalate`.
fn operator_binding(ctx: &Ctx, options: &RenderOptions) -> Value {
    let operator_ns = if options.operator_namespace.is_empty() {
        DEFAULT_OPERATOR_NAMESPACE
    } else {
        &options.operator_namespace
    };
    ctx.object(
        "rbac.authorization.k8s.io/v1",
        "RoleBinding",
        ctx.meta(
            &format!("mizzen-operator{}", ctx.names.suffix),
            Some(&ctx.spec.namespace),
            &[],
        ),
        json!({
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole",
                        "name": crate::rbac::MESH_NAMESPACE_GRANTS},
            "subjects": [{"kind": "ServiceAccount", "name": crate::rbac::OPERATOR_SERVICE_ACCOUNT, "namespace": operator_ns}],
        }),
    )
}

fn validate(spec: &MeshInstallSpec, options: &RenderOptions) -> Result<(), InvalidSpec> {
    let operator_ns = if options.operator_namespace.is_empty() {
        DEFAULT_OPERATOR_NAMESPACE
    } else {
        &options.operator_namespace
    };
    crate::revisions::check_version(&spec.version).map_err(|message| invalid("spec.version", message))?;
    if spec.namespace == operator_ns {
        return Err(invalid(
            "spec.namespace",
            format!("{operator_ns:?} is the operator's own namespace; the mesh needs a namespace of its own"),
        ));
    }
    let names = Names::new(spec);
    for (i, g) in spec.gateways.iter().enumerate() {
        if g.name == names.istiod() || g.name == "istiod" {
            return Err(invalid(
                format!("spec.gateways[{i}].name"),
                format!("{:?} is istiod's name", g.name),
            ));
        }
        let mut seen = BTreeMap::new();
        for (j, p) in g.service.ports.iter().enumerate() {
            // Default ports have no nodePort, so only declared ports can break this.
            if p.node_port.is_some() && g.service_type() == ServiceType::ClusterIp {
                return Err(invalid(
                    format!("spec.gateways[{i}].service.ports[{j}].nodePort"),
                    "needs service.type NodePort or LoadBalancer",
                ));
            }
            if let Some(k) = seen.insert(p.port, j) {
                return Err(invalid(
                    format!("spec.gateways[{i}].service.ports[{j}].port"),
                    format!("port {} is already used by ports[{k}]", p.port),
                ));
            }
        }
        if let Some(a) = &g.autoscale
            && a.min > a.max
        {
            return Err(invalid(format!("spec.gateways[{i}].autoscale"), "min exceeds max"));
        }
    }
    for (name, text) in &spec.injection.templates {
        if let Err(e) = crate::inject::gotemplate::Template::parse(name, text) {
            return Err(invalid(format!("spec.injection.templates[{name:?}]"), e.message));
        }
    }
    for (i, tag) in spec.revision_tags.iter().enumerate() {
        if *tag == spec.revision {
            return Err(invalid(
                format!("spec.revisionTags[{i}]"),
                format!("{tag:?} is the install's own revision"),
            ));
        }
        let label = tag.len() <= 63
            && tag.starts_with(|c: char| c.is_ascii_lowercase() || c.is_ascii_digit())
            && tag.ends_with(|c: char| c.is_ascii_lowercase() || c.is_ascii_digit())
            && tag
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-');
        if !label {
            return Err(invalid(
                format!("spec.revisionTags[{i}]"),
                format!("{tag:?} is not a DNS label"),
            ));
        }
    }
    let as_field = |e: crate::inject::InjectError| match e {
        crate::inject::InjectError::InvalidAnnotation { annotation, message } => invalid(annotation, message),
        other => invalid("spec", other.to_string()),
    };
    // Only what breaks every injected pod (and gateway): a spec refused here stops reconciling and gives up the
    // names it holds, so a fault of one object (istiod's or a gateway's resources, a Service field) stays that
    // object's apply error instead.
    crate::inject::validate::mesh_install(spec).map_err(as_field)?;
    addons::validate(spec)?;
    for key in spec.control_plane.env.keys() {
        if key.is_empty() || key.contains('=') {
            return Err(invalid(
                format!("spec.controlPlane.env[{key:?}]"),
                "not a valid environment variable name",
            ));
        }
    }
    Ok(())
}

/// The mesh configuration istiod and the proxies read (ConfigMap `istio[-rev]`, key `mesh`).
pub fn mesh_config(spec: &MeshInstallSpec) -> Value {
    let names = Names::new(spec);
    let mut mesh = Map::new();
    mesh.insert("rootNamespace".into(), json!(spec.namespace));
    mesh.insert("trustDomain".into(), json!("cluster.local"));
    mesh.insert("enablePrometheusMerge".into(), json!(true));
    mesh.insert("defaultProviders".into(), json!({"metrics": ["prometheus"]}));
    let mut default_config = json!({"discoveryAddress": format!("{}.{}.svc:15012", names.istiod(), spec.namespace)});
    if spec.proxy.hold_application_until_proxy_starts {
        default_config["holdApplicationUntilProxyStarts"] = json!(true);
    }
    // The user's fields win: typed ones, then the pass-through rest (tracing is settled after them).
    if let Ok(Value::Object(user)) = serde_json::to_value(&spec.mesh_config) {
        for (k, v) in user {
            if k == "defaultConfig" {
                if let Value::Object(dc) = v {
                    for (dk, dv) in dc {
                        default_config[dk] = dv;
                    }
                }
            } else {
                mesh.insert(k, v);
            }
        }
    }
    if let Some(tracing) = addons::proxy_tracing(spec) {
        default_config["tracing"] = tracing;
    }
    mesh.insert("defaultConfig".into(), default_config);
    // The jaeger addon's provider joins the user's, unless one of theirs already has its name.
    if let Some(provider) = addons::extension_provider(spec) {
        let providers = mesh.entry("extensionProviders").or_insert_with(|| json!([]));
        if let Value::Array(list) = providers
            && !list.iter().any(|p| p["name"] == provider["name"])
        {
            list.push(provider);
        }
    }
    Value::Object(mesh)
}

fn control_plane(ctx: &Ctx) -> Vec<Value> {
    let spec = ctx.spec;
    let ns = spec.namespace.as_str();
    let istiod = ctx.names.istiod();
    let labels = [("app", "istiod"), ("istio", "pilot")];
    let cluster_suffix = format!("{}-{ns}", ctx.names.suffix);
    let mut out = Vec::new();
    out.push(ctx.object("v1", "ServiceAccount", ctx.meta(&istiod, Some(ns), &labels), json!({})));
    let cluster_role = format!("istiod-clusterrole{cluster_suffix}");
    let gateway_role = format!("istiod-gateway-controller{cluster_suffix}");
    let all = ["get", "watch", "list", "update", "patch", "create", "delete"];
    out.push(ctx.object("rbac.authorization.k8s.io/v1", "ClusterRole", ctx.meta(&cluster_role, None, &labels), json!({"rules": [
        {"apiGroups": ["admissionregistration.k8s.io"], "resources": ["mutatingwebhookconfigurations"], "verbs": ["get", "list", "watch", "update", "patch"]},
        {"apiGroups": ["admissionregistration.k8s.io"], "resources": ["validatingwebhookconfigurations"], "verbs": ["get", "list", "watch", "update"]},
        {"apiGroups": ["config.istio.io", "security.istio.io", "networking.istio.io", "authentication.istio.io", "rbac.istio.io", "telemetry.istio.io", "extensions.istio.io"], "resources": ["*"], "verbs": ["get", "watch", "list"]},
        {"apiGroups": ["networking.istio.io"], "resources": ["workloadentries"], "verbs": all},
        {"apiGroups": ["networking.istio.io"], "resources": ["workloadentries/status", "serviceentries/status"], "verbs": all},
        {"apiGroups": ["security.istio.io"], "resources": ["authorizationpolicies/status"], "verbs": all},
        {"apiGroups": [""], "resources": ["services/status"], "verbs": all},
        {"apiGroups": ["apiextensions.k8s.io"], "resources": ["customresourcedefinitions"], "verbs": ["get", "list", "watch"]},
        {"apiGroups": [""], "resources": ["pods", "nodes", "services", "namespaces", "endpoints"], "verbs": ["get", "list", "watch"]},
        {"apiGroups": ["discovery.k8s.io"], "resources": ["endpointslices"], "verbs": ["get", "list", "watch"]},
        {"apiGroups": ["networking.k8s.io"], "resources": ["ingresses", "ingressclasses"], "verbs": ["get", "list", "watch"]},
        {"apiGroups": ["networking.k8s.io"], "resources": ["ingresses/status"], "verbs": ["*"]},
        {"apiGroups": [""], "resources": ["configmaps"], "verbs": ["create", "get", "list", "watch", "update"]},
        {"apiGroups": ["authentication.k8s.io"], "resources": ["tokenreviews"], "verbs": ["create"]},
        {"apiGroups": ["authorization.k8s.io"], "resources": ["subjectaccessreviews"], "verbs": ["create"]},
        {"apiGroups": ["gateway.networking.k8s.io", "gateway.networking.x-k8s.io"], "resources": ["*"], "verbs": ["get", "watch", "list"]},
        {"apiGroups": ["gateway.networking.x-k8s.io"], "resources": ["xbackendtrafficpolicies/status"], "verbs": ["update", "patch"]},
        {"apiGroups": ["gateway.networking.k8s.io"], "resources": ["backendtlspolicies/status", "gatewayclasses/status", "gateways/status", "grpcroutes/status", "httproutes/status", "referencegrants/status", "tcproutes/status", "tlsroutes/status", "udproutes/status", "listenersets/status"], "verbs": ["update", "patch"]},
        {"apiGroups": ["gateway.networking.k8s.io"], "resources": ["gatewayclasses"], "verbs": ["create", "update", "patch", "delete"]},
        {"apiGroups": ["inference.networking.k8s.io"], "resources": ["inferencepools"], "verbs": ["get", "watch", "list"]},
        {"apiGroups": ["inference.networking.k8s.io"], "resources": ["inferencepools/status"], "verbs": ["update", "patch"]},
        {"apiGroups": [""], "resources": ["secrets"], "verbs": ["get", "watch", "list"]},
        {"apiGroups": ["multicluster.x-k8s.io"], "resources": ["serviceexports"], "verbs": ["get", "watch", "list", "create", "delete"]},
        {"apiGroups": ["multicluster.x-k8s.io"], "resources": ["serviceimports"], "verbs": ["get", "watch", "list"]},
    ]})));
    out.push(ctx.object(
        "rbac.authorization.k8s.io/v1",
        "ClusterRole",
        ctx.meta(&gateway_role, None, &labels),
        json!({"rules": [
            {"apiGroups": ["apps"], "resources": ["deployments"], "verbs": all},
            {"apiGroups": ["autoscaling"], "resources": ["horizontalpodautoscalers"], "verbs": all},
            {"apiGroups": ["policy"], "resources": ["poddisruptionbudgets"], "verbs": all},
            {"apiGroups": [""], "resources": ["services"], "verbs": all},
            {"apiGroups": [""], "resources": ["serviceaccounts"], "verbs": all},
        ]}),
    ));
    for role in [&cluster_role, &gateway_role] {
        out.push(ctx.object(
            "rbac.authorization.k8s.io/v1",
            "ClusterRoleBinding",
            ctx.meta(role, None, &labels),
            json!({
                "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": role},
                "subjects": [{"kind": "ServiceAccount", "name": istiod, "namespace": ns}],
            }),
        ));
    }
    out.push(ctx.object("rbac.authorization.k8s.io/v1", "Role", ctx.meta(&istiod, Some(ns), &labels), json!({"rules": [
        {"apiGroups": ["networking.istio.io"], "resources": ["gateways"], "verbs": ["create"]},
        {"apiGroups": [""], "resources": ["secrets"], "verbs": ["create", "get", "watch", "list", "update", "delete"]},
        {"apiGroups": [""], "resources": ["configmaps"], "verbs": ["delete"]},
        {"apiGroups": ["coordination.k8s.io"], "resources": ["leases"], "verbs": ["get", "update", "patch", "create"]},
    ]})));
    out.push(ctx.object(
        "rbac.authorization.k8s.io/v1",
        "RoleBinding",
        ctx.meta(&istiod, Some(ns), &labels),
        json!({
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": istiod},
            "subjects": [{"kind": "ServiceAccount", "name": istiod, "namespace": ns}],
        }),
    ));
    let mesh_yaml = crate::yaml::to_yaml(&mesh_config(spec)).unwrap_or_default();
    out.push(ctx.object(
        "v1",
        "ConfigMap",
        ctx.meta(&ctx.names.mesh_config(), Some(ns), &[("app", "istiod")]),
        json!({
            "data": {"mesh": mesh_yaml, "meshNetworks": "networks: {}\n"},
        }),
    ));
    out.push(istiod_deployment(ctx));
    out.push(ctx.object(
        "v1",
        "Service",
        ctx.meta(&istiod, Some(ns), &labels),
        json!({"spec": {
            "ports": [
                {"name": "grpc-xds", "port": 15010, "protocol": "TCP"},
                {"name": "https-dns", "port": 15012, "protocol": "TCP"},
                {"name": "https-webhook", "port": 443, "protocol": "TCP", "targetPort": 15017},
                {"name": "http-monitoring", "port": 15014, "protocol": "TCP"},
            ],
            "selector": istiod_selector(ctx, true),
        }}),
    ));
    out.extend(scaling(
        ctx,
        &istiod,
        ns,
        &labels,
        spec.control_plane.autoscale.as_ref(),
        spec.control_plane.replicas,
        &istiod_selector(ctx, true),
    ));
    out
}

/// istiod's pod selector as Istio's chart writes it, so that mizzen can take over an istiod installed by `istioctl
/// install` or Helm in place (a Deployment's selector is immutable): `istio: pilot` for the default revision,
/// `app: istiod` + `istio.io/rev` for the others. Services and PDBs (`with_app`) also select on `app: istiod`.
fn istiod_selector(ctx: &Ctx, with_app: bool) -> Value {
    if ctx.spec.revision.is_empty() {
        if with_app {
            json!({"app": "istiod", "istio": "pilot"})
        } else {
            json!({"istio": "pilot"})
        }
    } else {
        json!({"app": "istiod", ann::REVISION: ctx.names.revision})
    }
}

fn autoscaling(ctx: &Ctx, name: &str, ns: &str, labels: &[(&str, &str)], a: &crate::api::AutoscaleSpec) -> Value {
    ctx.object("autoscaling/v2", "HorizontalPodAutoscaler", ctx.meta(name, Some(ns), labels), json!({"spec": {
        "maxReplicas": a.max,
        "minReplicas": a.min,
        "metrics": [{"type": "Resource", "resource": {"name": "cpu", "target": {"type": "Utilization", "averageUtilization": a.target_cpu_utilization_percentage}}}],
        "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": name},
    }}))
}

/// The HPA when autoscaling is on, and the PodDisruptionBudget when there may be more than one pod: with
/// autoscaling (as before), or more than one replica without it, as Istio's charts render one (`replicaCount` > 1);
/// a single fixed replica gets none.
fn scaling(
    ctx: &Ctx,
    name: &str,
    ns: &str,
    labels: &[(&str, &str)],
    autoscale: Option<&crate::api::AutoscaleSpec>,
    replicas: i32,
    selector: &Value,
) -> Vec<Value> {
    let mut out = Vec::new();
    if let Some(a) = autoscale {
        out.push(autoscaling(ctx, name, ns, labels, a));
    }
    if autoscale.is_some() || replicas > 1 {
        out.push(ctx.object(
            "policy/v1",
            "PodDisruptionBudget",
            ctx.meta(name, Some(ns), labels),
            json!({"spec": {
                // Istio's: one pod may be down, so a drain never blocks on a single replica.
                "maxUnavailable": 1,
                "selector": {"matchLabels": selector},
            }}),
        ));
    }
    out
}

fn field(name: &str, path: &str) -> Value {
    json!({"name": name, "valueFrom": {"fieldRef": {"apiVersion": "v1", "fieldPath": path}}})
}

fn istiod_deployment(ctx: &Ctx) -> Value {
    let spec = ctx.spec;
    let ns = spec.namespace.as_str();
    let istiod = ctx.names.istiod();
    let mut env = vec![
        json!({"name": "REVISION", "value": ctx.names.revision}),
        json!({"name": "PILOT_CERT_PROVIDER", "value": "istiod"}),
        field("POD_NAME", "metadata.name"),
        field("POD_NAMESPACE", "metadata.namespace"),
        field("SERVICE_ACCOUNT", "spec.serviceAccountName"),
        json!({"name": "KUBECONFIG", "value": "/var/run/secrets/remote/config"}),
        json!({"name": "CA_TRUSTED_NODE_ACCOUNTS", "value": format!("{ns}/ztunnel")}),
        json!({"name": "PILOT_TRACE_SAMPLING", "value": addons::trace_sampling(spec).unwrap_or_else(|| "1".into())}),
        json!({"name": "PILOT_ENABLE_ANALYSIS", "value": "false"}),
        json!({"name": "CLUSTER_ID", "value": "Kubernetes"}),
        json!({"name": "GOMAXPROCS", "valueFrom": {"resourceFieldRef": {"divisor": "1", "resource": "limits.cpu"}}}),
        json!({"name": "PLATFORM", "value": ""}),
        // mizzen injects sidecars and owns the webhook configurations: istiod must not patch them.
        json!({"name": "INJECTION_WEBHOOK_CONFIG_NAME", "value": ""}),
        json!({"name": "VALIDATION_WEBHOOK_CONFIG_NAME", "value": ""}),
        json!({"name": "ISTIOD_CUSTOM_HOST", "value": format!("{istiod}.{ns}.svc")}),
    ];
    for (k, v) in &spec.control_plane.env {
        env.retain(|e| e["name"] != k.as_str());
        env.push(json!({"name": k, "value": v}));
    }
    let resources = spec
        .control_plane
        .resources
        .as_ref()
        .map(resources)
        .unwrap_or_else(|| json!({"requests": {"cpu": "500m", "memory": "2Gi"}}));
    let pod_labels = json!({"app": "istiod", "istio": "pilot", ann::REVISION: ctx.names.revision, ann::INJECT: "false", "istio.io/dataplane-mode": "none"});
    let mut deployment_spec = json!({
        "selector": {"matchLabels": istiod_selector(ctx, false)},
        "strategy": {"rollingUpdate": {"maxSurge": "100%", "maxUnavailable": "25%"}},
        "template": {
            "metadata": {
                "labels": pod_labels,
                "annotations": {"prometheus.io/port": "15014", "prometheus.io/scrape": "true", ann::INJECT: "false"},
            },
            "spec": {
                "serviceAccountName": istiod,
                "tolerations": [{"key": "cni.istio.io/not-ready", "operator": "Exists"}],
                "containers": [{
                    "name": "discovery",
                    "image": ctx.image("pilot"),
                    "args": ["discovery", "--monitoringAddr=:15014", "--log_output_level=default:info", "--domain", "cluster.local", "--keepaliveMaxServerConnectionAge", "30m"],
                    "env": env,
                    "ports": [
                        {"containerPort": 8080, "name": "http-debug", "protocol": "TCP"},
                        {"containerPort": 15010, "name": "grpc-xds", "protocol": "TCP"},
                        {"containerPort": 15012, "name": "tls-xds", "protocol": "TCP"},
                        {"containerPort": 15017, "name": "https-webhooks", "protocol": "TCP"},
                        {"containerPort": 15014, "name": "http-monitoring", "protocol": "TCP"},
                    ],
                    "readinessProbe": {"httpGet": {"path": "/ready", "port": 8080}, "initialDelaySeconds": 1, "periodSeconds": 3, "timeoutSeconds": 5},
                    "resources": resources,
                    "securityContext": {"allowPrivilegeEscalation": false, "capabilities": {"drop": ["ALL"]}, "readOnlyRootFilesystem": true, "runAsNonRoot": true},
                    "volumeMounts": [
                        {"mountPath": "/var/run/secrets/tokens", "name": "istio-token", "readOnly": true},
                        {"mountPath": "/var/run/secrets/istio-dns", "name": "local-certs"},
                        {"mountPath": "/etc/cacerts", "name": "cacerts", "readOnly": true},
                        {"mountPath": "/var/run/secrets/remote", "name": "istio-kubeconfig", "readOnly": true},
                        {"mountPath": "/var/run/secrets/istiod/tls", "name": "istio-csr-dns-cert", "readOnly": true},
                        {"mountPath": "/var/run/secrets/istiod/ca", "name": "istio-csr-ca-configmap", "readOnly": true},
                    ],
                }],
                "volumes": [
                    {"name": "local-certs", "emptyDir": {"medium": "Memory"}},
                    {"name": "istio-token", "projected": {"sources": [{"serviceAccountToken": {"audience": "istio-ca", "expirationSeconds": 43200, "path": "istio-token"}}]}},
                    {"name": "cacerts", "secret": {"secretName": "cacerts", "optional": true}},
                    {"name": "istio-kubeconfig", "secret": {"secretName": "istio-kubeconfig", "optional": true}},
                    {"name": "istio-csr-dns-cert", "secret": {"secretName": "istiod-tls", "optional": true}},
                    {"name": "istio-csr-ca-configmap", "configMap": {"name": "istio-ca-root-cert", "defaultMode": 420, "optional": true}},
                ],
            },
        },
    });
    if spec.control_plane.autoscale.is_none() {
        deployment_spec["replicas"] = json!(spec.control_plane.replicas);
    }
    ctx.object(
        "apps/v1",
        "Deployment",
        ctx.meta(&istiod, Some(ns), &[("app", "istiod"), ("istio", "pilot")]),
        json!({"spec": deployment_spec}),
    )
}

/// The gateway's `istio` label: its name without the `istio-` prefix (`istio-ingressgateway` → `ingressgateway`).
pub fn gateway_selector(name: &str) -> &str {
    name.strip_prefix("istio-").unwrap_or(name)
}

fn default_ports(kind: GatewayKind) -> Vec<GatewayPort> {
    let p = |name: &str, port: i32, target: i32| GatewayPort {
        name: name.into(),
        port,
        target_port: Some(target),
        node_port: None,
        protocol: None,
    };
    match kind {
        GatewayKind::Ingress => vec![
            p("status-port", 15021, 15021),
            p("http2", 80, 8080),
            p("https", 443, 8443),
        ],
        GatewayKind::Egress => vec![p("http2", 80, 8080), p("https", 443, 8443)],
    }
}

fn gateway(ctx: &Ctx, g: &crate::api::GatewaySpec) -> Vec<Value> {
    let spec = ctx.spec;
    let ns = spec.namespace.as_str();
    let name = g.name.as_str();
    let selector = gateway_selector(name);
    let labels = [("app", name), ("istio", selector)];
    let ports = if g.service.ports.is_empty() {
        default_ports(g.kind)
    } else {
        g.service.ports.clone()
    };
    let mut out = Vec::new();
    let sa = format!("{name}-service-account");
    out.push(ctx.object("v1", "ServiceAccount", ctx.meta(&sa, Some(ns), &labels), json!({})));
    let role = format!("{name}-sds");
    out.push(ctx.object(
        "rbac.authorization.k8s.io/v1",
        "Role",
        ctx.meta(&role, Some(ns), &labels),
        json!({"rules": [
            {"apiGroups": [""], "resources": ["secrets"], "verbs": ["get", "watch", "list"]},
        ]}),
    ));
    out.push(ctx.object(
        "rbac.authorization.k8s.io/v1",
        "RoleBinding",
        ctx.meta(&role, Some(ns), &labels),
        json!({
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": role},
            "subjects": [{"kind": "ServiceAccount", "name": sa}],
        }),
    ));
    let mut container_ports: Vec<Value> = ports
        .iter()
        .map(|p| json!({"containerPort": p.target_port.unwrap_or(p.port), "protocol": protocol(p)}))
        .collect();
    container_ports.push(json!({"containerPort": 15090, "name": "http-envoy-prom", "protocol": "TCP"}));
    let istiod = ctx.names.istiod();
    let env = vec![
        json!({"name": "PILOT_CERT_PROVIDER", "value": "istiod"}),
        json!({"name": "CA_ADDR", "value": format!("{istiod}.{ns}.svc:15012")}),
        field("NODE_NAME", "spec.nodeName"),
        field("POD_NAME", "metadata.name"),
        field("POD_NAMESPACE", "metadata.namespace"),
        field("INSTANCE_IP", "status.podIP"),
        field("HOST_IP", "status.hostIP"),
        json!({"name": "ISTIO_CPU_LIMIT", "valueFrom": {"resourceFieldRef": {"resource": "limits.cpu"}}}),
        field("SERVICE_ACCOUNT", "spec.serviceAccountName"),
        json!({"name": "ISTIO_META_WORKLOAD_NAME", "value": name}),
        json!({"name": "ISTIO_META_OWNER", "value": format!("kubernetes://apis/apps/v1/namespaces/{ns}/deployments/{name}")}),
        json!({"name": "ISTIO_META_MESH_ID", "value": "cluster.local"}),
        json!({"name": "TRUST_DOMAIN", "value": "cluster.local"}),
        json!({"name": "ISTIO_META_UNPRIVILEGED_POD", "value": "true"}),
        json!({"name": "ISTIO_META_CLUSTER_ID", "value": "Kubernetes"}),
        field("ISTIO_META_NODE_NAME", "spec.nodeName"),
    ];
    let resources = g.resources.as_ref().map(resources).unwrap_or_else(
        || json!({"limits": {"cpu": "2", "memory": "1Gi"}, "requests": {"cpu": "100m", "memory": "128Mi"}}),
    );
    let mut deployment_spec = json!({
        "selector": {"matchLabels": {"app": name, "istio": selector}},
        "strategy": {"rollingUpdate": {"maxSurge": "100%", "maxUnavailable": "25%"}},
        "template": {
            "metadata": {
                "labels": {"app": name, "istio": selector, ann::REVISION: ctx.names.revision, ann::INJECT: "false",
                           ann::CANONICAL_NAME: name, ann::CANONICAL_REVISION: "latest", "istio.io/dataplane-mode": "none"},
                "annotations": {ann::REVISION: ctx.names.revision, "prometheus.io/path": "/stats/prometheus", "prometheus.io/port": "15020", "prometheus.io/scrape": "true", ann::INJECT: "false"},
            },
            "spec": {
                "serviceAccountName": sa,
                "securityContext": {"runAsUser": 1337, "runAsGroup": 1337, "runAsNonRoot": true,
                                    "sysctls": [{"name": "net.ipv4.ip_unprivileged_port_start", "value": "0"}]},
                "containers": [{
                    "name": "istio-proxy",
                    "image": ctx.image(&spec.proxy.image),
                    "args": ["proxy", "router", "--domain", "$(POD_NAMESPACE).svc.cluster.local",
                             format!("--proxyLogLevel={}", spec.proxy.log_level),
                             format!("--proxyComponentLogLevel={}", spec.proxy.component_log_level),
                             "--log_output_level=default:info"],
                    "env": env,
                    "ports": container_ports,
                    "readinessProbe": {"httpGet": {"path": "/healthz/ready", "port": 15021, "scheme": "HTTP"},
                                       "initialDelaySeconds": 1, "periodSeconds": 2, "timeoutSeconds": 1, "successThreshold": 1, "failureThreshold": 30},
                    "resources": resources,
                    "securityContext": {"allowPrivilegeEscalation": false, "capabilities": {"drop": ["ALL"]}, "privileged": false, "readOnlyRootFilesystem": true},
                    "volumeMounts": [
                        {"name": "workload-socket", "mountPath": "/var/run/secrets/workload-spiffe-uds"},
                        {"name": "credential-socket", "mountPath": "/var/run/secrets/credential-uds"},
                        {"name": "workload-certs", "mountPath": "/var/run/secrets/workload-spiffe-credentials"},
                        {"name": "istio-envoy", "mountPath": "/etc/istio/proxy"},
                        {"name": "config-volume", "mountPath": "/etc/istio/config"},
                        {"name": "istiod-ca-cert", "mountPath": "/var/run/secrets/istio"},
                        {"name": "istio-token", "mountPath": "/var/run/secrets/tokens", "readOnly": true},
                        {"name": "istio-data", "mountPath": "/var/lib/istio/data"},
                        {"name": "podinfo", "mountPath": "/etc/istio/pod"},
                    ],
                }],
                "volumes": [
                    {"name": "workload-socket", "emptyDir": {}},
                    {"name": "credential-socket", "emptyDir": {}},
                    {"name": "workload-certs", "emptyDir": {}},
                    {"name": "istiod-ca-cert", "configMap": {"name": "istio-ca-root-cert"}},
                    {"name": "podinfo", "downwardAPI": {"items": [
                        {"path": "labels", "fieldRef": {"fieldPath": "metadata.labels"}},
                        {"path": "annotations", "fieldRef": {"fieldPath": "metadata.annotations"}},
                    ]}},
                    {"name": "istio-envoy", "emptyDir": {}},
                    {"name": "istio-data", "emptyDir": {}},
                    {"name": "istio-token", "projected": {"sources": [{"serviceAccountToken": {"audience": "istio-ca", "expirationSeconds": 43200, "path": "istio-token"}}]}},
                    {"name": "config-volume", "configMap": {"name": ctx.names.mesh_config(), "optional": true}},
                ],
            },
        },
    });
    if g.autoscale.is_none() {
        deployment_spec["replicas"] = json!(g.replicas);
    }
    out.push(ctx.object(
        "apps/v1",
        "Deployment",
        ctx.meta(name, Some(ns), &labels),
        json!({"spec": deployment_spec}),
    ));
    let service_ports: Vec<Value> = ports
        .iter()
        .map(|p| {
            let mut sp = json!({"name": p.name, "port": p.port, "protocol": protocol(p), "targetPort": p.target_port.unwrap_or(p.port)});
            if let Some(np) = p.node_port {
                sp["nodePort"] = json!(np);
            }
            sp
        })
        .collect();
    let type_ = match g.service_type() {
        ServiceType::ClusterIp => "ClusterIP",
        ServiceType::NodePort => "NodePort",
        ServiceType::LoadBalancer => "LoadBalancer",
    };
    let mut service_meta = ctx.meta(name, Some(ns), &labels);
    if !g.service.annotations.is_empty() {
        service_meta["annotations"] = json!(g.service.annotations);
    }
    let mut service_spec = json!({"type": type_, "ports": service_ports, "selector": {"app": name, "istio": selector}});
    if let Some(p) = g.service.external_traffic_policy {
        service_spec["externalTrafficPolicy"] = serde_json::to_value(p).unwrap_or(Value::Null);
    }
    out.push(ctx.object("v1", "Service", service_meta, json!({"spec": service_spec})));
    out.extend(scaling(
        ctx,
        name,
        ns,
        &labels,
        g.autoscale.as_ref(),
        g.replicas,
        &json!({"app": name, "istio": selector}),
    ));
    out
}

fn protocol(p: &GatewayPort) -> &'static str {
    match p.protocol {
        Some(crate::api::PortProtocol::Udp) => "UDP",
        _ => "TCP",
    }
}

/// The MutatingWebhookConfigurations: the revision's own (`mizzen-sidecar-injector[-rev]`; for the default
/// revision, the four `default` webhooks, unless an explicit `default` tag elsewhere took them) and one per tag held
/// (`mizzen-revision-tag-<tag>`, as Istio's `istio-revision-tag-<tag>`), all calling this revision's path.
fn webhook_configurations(ctx: &Ctx, options: &RenderOptions) -> Vec<Value> {
    let holdings = options.holdings.clone().unwrap_or_else(|| crate::revisions::Holdings {
        tags: ctx.spec.revision_tags.clone(),
        ..Default::default()
    });
    let mut out = Vec::new();
    let own = if ctx.spec.revision.is_empty() {
        !holdings.default_elsewhere
    } else {
        !holdings.revision_blocked
    };
    if own {
        out.push(webhook_configuration(
            ctx,
            options,
            &ctx.names.webhook_config(),
            &ctx.names.revision,
            None,
        ));
    }
    for tag in holdings.rendered_tags(ctx.spec) {
        out.push(webhook_configuration(
            ctx,
            options,
            &crate::revisions::webhook_config_for(ctx.spec, &tag),
            &tag,
            Some(&tag),
        ));
    }
    out
}

/// One webhook configuration selecting pods by `selects` (a revision or tag name) and calling this revision's path;
/// a tag's carries the label `istio.io/tag`, as istioctl's do (istiod's tag watcher reads it).
fn webhook_configuration(ctx: &Ctx, options: &RenderOptions, name: &str, selects: &str, tag: Option<&str>) -> Value {
    let revision = &ctx.names.revision;
    let default = ctx.spec.revision.is_empty();
    let path = if default {
        "/inject".to_owned()
    } else {
        format!("/inject/{revision}")
    };
    let mut client = match &options.webhook_url {
        Some(url) => json!({"url": format!("{}{}", url.trim_end_matches("/inject").trim_end_matches('/'), path)}),
        None => {
            let ns = if options.operator_namespace.is_empty() {
                DEFAULT_OPERATOR_NAMESPACE
            } else {
                &options.operator_namespace
            };
            json!({"service": {"name": WEBHOOK_SERVICE, "namespace": ns, "path": path, "port": 443}})
        }
    };
    if let Some(ca) = &options.ca_bundle {
        use base64::Engine as _;
        client["caBundle"] = json!(base64::engine::general_purpose::STANDARD.encode(ca));
    }
    let failure = serde_json::to_value(ctx.spec.injection.failure_policy).unwrap_or(json!("Fail"));
    let webhook = |hook: crate::inject::decision::WebhookSelector| {
        json!({
            "name": format!("{}.sidecar-injector.mizzen.io", hook.name),
            "admissionReviewVersions": ["v1"],
            "clientConfig": client,
            "failurePolicy": failure,
            "matchPolicy": "Equivalent",
            "namespaceSelector": hook.namespace_selector,
            "objectSelector": hook.object_selector,
            "reinvocationPolicy": "Never",
            "rules": [{"apiGroups": [""], "apiVersions": ["v1"], "operations": ["CREATE"], "resources": ["pods"], "scope": "*"}],
            // Events are published for injected and skipped pods, never for a dry run.
            "sideEffects": "NoneOnDryRun",
            "timeoutSeconds": ctx.spec.injection.timeout_seconds,
        })
    };
    ctx.object(
        "admissionregistration.k8s.io/v1",
        "MutatingWebhookConfiguration",
        ctx.meta(
            name,
            None,
            &[("app", "mizzen-webhook")]
                .into_iter()
                .chain(tag.map(|t| ("istio.io/tag", t)))
                .collect::<Vec<_>>(),
        ),
        json!({"webhooks": crate::inject::decision::webhook_selectors(selects).into_iter().map(webhook).collect::<Vec<_>>()}),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mesh(extra: Value) -> MeshInstall {
        let mut doc = json!({"apiVersion": "mizzen.io/v1alpha1", "kind": "MeshInstall",
            "metadata": {"name": "default", "uid": "1234"}, "spec": {}});
        if let (Some(spec), Value::Object(extra)) = (doc["spec"].as_object_mut(), extra) {
            spec.extend(extra);
        }
        serde_json::from_value(doc).unwrap()
    }

    fn find<'a>(objects: &'a [Value], kind: &str, name: &str) -> &'a Value {
        objects
            .iter()
            .find(|o| o["kind"] == kind && o["metadata"]["name"] == name)
            .unwrap_or_else(|| panic!("{kind}/{name} not rendered"))
    }

    #[test]
    fn a_webhook_configuration_with_an_heir_is_owned_by_it_too_but_not_controlled() {
        let mut objects = render(&mesh(json!({"revisionTags": ["prod"]})), &RenderOptions::default()).unwrap();
        let mut heir = mesh(json!({"revision": "canary"}));
        heir.metadata.name = Some("canary".into());
        heir.metadata.uid = Some("5678".into());
        add_heirs(
            &mut objects,
            &BTreeMap::from([("mizzen-revision-tag-prod".to_owned(), &heir)]),
        );
        let tag = find(&objects, "MutatingWebhookConfiguration", "mizzen-revision-tag-prod");
        assert_eq!(
            tag["metadata"]["ownerReferences"],
            json!([
                {"apiVersion": "mizzen.io/v1alpha1", "kind": "MeshInstall", "name": "default", "uid": "1234",
                 "controller": true, "blockOwnerDeletion": true},
                {"apiVersion": "mizzen.io/v1alpha1", "kind": "MeshInstall", "name": "canary", "uid": "5678"},
            ])
        );
        // Nothing else is.
        for o in objects
            .iter()
            .filter(|o| o["metadata"]["name"] != "mizzen-revision-tag-prod")
        {
            let references = o["metadata"]["ownerReferences"].as_array().map_or(0, Vec::len);
            assert!(references <= 1, "{}", o["metadata"]["name"]);
        }
    }

    #[test]
    fn every_child_but_crds_and_namespace_is_owned_and_labelled() {
        let objects = render(&mesh(json!({})), &RenderOptions::default()).unwrap();
        for o in &objects {
            let kind = o["kind"].as_str().unwrap();
            if kind == "CustomResourceDefinition" || kind == "Namespace" {
                assert!(
                    o["metadata"]["ownerReferences"].is_null(),
                    "{kind} must outlive the MeshInstall"
                );
                continue;
            }
            assert_eq!(o["metadata"]["ownerReferences"][0]["uid"], "1234", "{kind}");
            assert_eq!(o["metadata"]["labels"][OWNER_LABEL], "default", "{kind}");
            assert_eq!(
                o["metadata"]["labels"]["app.kubernetes.io/managed-by"], "mizzen",
                "{kind}"
            );
        }
    }

    #[test]
    fn revisions_suffix_names_and_point_at_their_webhook_path() {
        let objects = render(&mesh(json!({"revision": "canary"})), &RenderOptions::default()).unwrap();
        let d = find(&objects, "Deployment", "istiod-canary");
        assert_eq!(d["metadata"]["labels"]["istio.io/rev"], "canary");
        find(&objects, "ConfigMap", "istio-canary");
        find(&objects, "ClusterRole", "istiod-clusterrole-canary-istio-system");
        let mwc = find(
            &objects,
            "MutatingWebhookConfiguration",
            "mizzen-sidecar-injector-canary",
        );
        assert_eq!(mwc["webhooks"][0]["clientConfig"]["service"]["path"], "/inject/canary");
        assert_eq!(
            mwc["webhooks"][0]["namespaceSelector"]["matchExpressions"][0]["values"],
            json!(["canary"])
        );
    }

    #[test]
    fn revision_tags_get_webhook_configurations_calling_the_revisions_path() {
        let objects = render(&mesh(json!({"revisionTags": ["prod"]})), &RenderOptions::default()).unwrap();
        let tag = find(&objects, "MutatingWebhookConfiguration", "mizzen-revision-tag-prod");
        assert_eq!(tag["metadata"]["labels"]["istio.io/tag"], "prod");
        assert_eq!(tag["metadata"]["labels"]["istio.io/rev"], "default");
        let names: Vec<&str> = tag["webhooks"]
            .as_array()
            .unwrap()
            .iter()
            .map(|w| w["name"].as_str().unwrap())
            .collect();
        assert_eq!(
            names,
            [
                "rev.namespace.sidecar-injector.mizzen.io",
                "rev.object.sidecar-injector.mizzen.io"
            ]
        );
        assert_eq!(tag["webhooks"][0]["clientConfig"]["service"]["path"], "/inject");
        assert_eq!(
            tag["webhooks"][0]["namespaceSelector"]["matchExpressions"][0]["values"],
            json!(["prod"])
        );
        assert_eq!(
            tag["webhooks"][1]["objectSelector"]["matchExpressions"][1]["values"],
            json!(["prod"])
        );
        find(&objects, "MutatingWebhookConfiguration", "mizzen-sidecar-injector");

        // A canary holding `default` serves the four default webhooks on its own path ...
        let canary = render(
            &mesh(json!({"revision": "canary", "revisionTags": ["default"]})),
            &RenderOptions::default(),
        )
        .unwrap();
        // (in `mizzen-sidecar-injector`, whoever holds `default`, so it changes hands in place) ...
        let tag = find(&canary, "MutatingWebhookConfiguration", "mizzen-sidecar-injector");
        assert_eq!(tag["metadata"]["labels"]["istio.io/tag"], "default");
        assert_eq!(tag["webhooks"].as_array().unwrap().len(), 4);
        assert_eq!(
            tag["webhooks"][2]["namespaceSelector"]["matchExpressions"][0]["key"],
            "istio-injection"
        );
        assert_eq!(tag["webhooks"][2]["clientConfig"]["service"]["path"], "/inject/canary");
        // ... and the default revision steps aside.
        let options = RenderOptions {
            holdings: Some(crate::revisions::Holdings {
                default_elsewhere: true,
                ..Default::default()
            }),
            ..Default::default()
        };
        let default = render(&mesh(json!({})), &options).unwrap();
        assert!(!default.iter().any(|o| o["kind"] == "MutatingWebhookConfiguration"));
    }

    #[test]
    fn an_unsupported_istio_version_is_refused_by_field() {
        let error = render(&mesh(json!({"version": "1.25.2"})), &RenderOptions::default()).unwrap_err();
        assert_eq!(error.field, "spec.version");
        assert!(error.message.contains("1.27.x to 1.28.x"), "{error}");
    }

    #[test]
    fn default_revision_webhook_selects_enabled_namespaces_revision_default_and_opted_in_pods() {
        let objects = render(
            &mesh(json!({"injection": {"failurePolicy": "Ignore", "timeoutSeconds": 5}})),
            &RenderOptions::default(),
        )
        .unwrap();
        let mwc = find(&objects, "MutatingWebhookConfiguration", "mizzen-sidecar-injector");
        let hooks = mwc["webhooks"].as_array().unwrap();
        let names: Vec<&str> = hooks.iter().map(|h| h["name"].as_str().unwrap()).collect();
        assert_eq!(
            names,
            [
                "rev.namespace.sidecar-injector.mizzen.io",
                "rev.object.sidecar-injector.mizzen.io",
                "namespace.sidecar-injector.mizzen.io",
                "object.sidecar-injector.mizzen.io"
            ]
        );
        assert_eq!(
            hooks[0]["namespaceSelector"]["matchExpressions"][0],
            json!({"key": "istio.io/rev", "operator": "In", "values": ["default"]})
        );
        assert_eq!(
            hooks[2]["namespaceSelector"]["matchExpressions"][0],
            json!({"key": "istio-injection", "operator": "In", "values": ["enabled"]})
        );
        assert_eq!(
            hooks[3]["objectSelector"]["matchExpressions"][0]["values"],
            json!(["true"])
        );
        for hook in hooks {
            assert_eq!(hook["failurePolicy"], "Ignore");
            assert_eq!(hook["timeoutSeconds"], 5);
            assert_eq!(hook["clientConfig"]["service"]["name"], "mizzen-webhook");
        }
    }

    #[test]
    fn istiod_selects_its_pods_as_istio_does_so_an_existing_install_can_be_taken_over() {
        let objects = render(&mesh(json!({})), &RenderOptions::default()).unwrap();
        let d = find(&objects, "Deployment", "istiod");
        assert_eq!(d["spec"]["selector"], json!({"matchLabels": {"istio": "pilot"}}));
        assert_eq!(d["spec"]["template"]["metadata"]["labels"]["istio"], "pilot");
        let svc = find(&objects, "Service", "istiod");
        assert_eq!(svc["spec"]["selector"], json!({"app": "istiod", "istio": "pilot"}));
        let objects = render(&mesh(json!({"revision": "canary"})), &RenderOptions::default()).unwrap();
        let d = find(&objects, "Deployment", "istiod-canary");
        assert_eq!(
            d["spec"]["selector"],
            json!({"matchLabels": {"app": "istiod", "istio.io/rev": "canary"}})
        );
    }

    #[test]
    fn a_full_proxy_image_reference_is_used_as_is_by_gateways() {
        let mi = mesh(
            json!({"proxy": {"image": "mirror.example/istio/proxyv2:1.28.0-distroless"},
            "gateways": [{"name": "istio-ingressgateway"}]}),
        );
        let objects = render(&mi, &RenderOptions::default()).unwrap();
        let d = find(&objects, "Deployment", "istio-ingressgateway");
        assert_eq!(
            d["spec"]["template"]["spec"]["containers"][0]["image"],
            "mirror.example/istio/proxyv2:1.28.0-distroless"
        );
        // The injector follows the same rule.
        let config = crate::inject::InjectionConfig::from_mesh_install(&mi.spec);
        assert_eq!(config.proxy_image(), "mirror.example/istio/proxyv2:1.28.0-distroless");
    }

    #[test]
    fn webhook_url_and_ca_bundle_replace_the_service() {
        let options = RenderOptions {
            webhook_url: Some("https://127.0.0.1:8443/inject".into()),
            ca_bundle: Some("PEM".into()),
            ..Default::default()
        };
        let objects = render(&mesh(json!({})), &options).unwrap();
        let mwc = find(&objects, "MutatingWebhookConfiguration", "mizzen-sidecar-injector");
        assert_eq!(
            mwc["webhooks"][0]["clientConfig"]["url"],
            "https://127.0.0.1:8443/inject"
        );
        assert_eq!(mwc["webhooks"][0]["clientConfig"]["caBundle"], "UEVN");
    }

    #[test]
    fn mesh_config_carries_the_users_settings() {
        let mi = mesh(
            json!({"meshConfig": {"accessLogFile": "/dev/stdout", "accessLogEncoding": "JSON",
            "outboundTrafficPolicy": {"mode": "REGISTRY_ONLY"}}, "proxy": {"holdApplicationUntilProxyStarts": true}}),
        );
        let m = mesh_config(&mi.spec);
        assert_eq!(m["accessLogFile"], "/dev/stdout");
        assert_eq!(m["accessLogEncoding"], "JSON");
        assert_eq!(m["outboundTrafficPolicy"]["mode"], "REGISTRY_ONLY");
        assert_eq!(m["defaultConfig"]["holdApplicationUntilProxyStarts"], true);
        assert_eq!(m["defaultConfig"]["discoveryAddress"], "istiod.istio-system.svc:15012");
    }

    #[test]
    fn autoscaling_renders_hpa_and_pdb_and_leaves_replicas_to_the_hpa() {
        let objects = render(
            &mesh(json!({"controlPlane": {"autoscale": {"min": 2, "max": 4}}})),
            &RenderOptions::default(),
        )
        .unwrap();
        let hpa = find(&objects, "HorizontalPodAutoscaler", "istiod");
        assert_eq!(
            (hpa["spec"]["minReplicas"].clone(), hpa["spec"]["maxReplicas"].clone()),
            (json!(2), json!(4))
        );
        let pdb = find(&objects, "PodDisruptionBudget", "istiod");
        assert_eq!(
            pdb["spec"],
            json!({"maxUnavailable": 1, "selector": {"matchLabels": {"app": "istiod", "istio": "pilot"}}})
        );
        assert!(find(&objects, "Deployment", "istiod")["spec"]["replicas"].is_null());
    }

    /// An egress gateway's Service is ClusterIP unless `service.type` says otherwise (Istio's profiles: it is reached
    /// from inside the mesh); an ingress gateway's is LoadBalancer.
    #[test]
    fn gateway_service_types_default_by_kind() {
        let objects = render(
            &mesh(json!({"gateways": [
                {"name": "istio-ingressgateway"},
                {"name": "istio-egressgateway", "kind": "egress"},
                {"name": "egress-public", "kind": "egress", "service": {"type": "LoadBalancer"}},
            ]})),
            &RenderOptions::default(),
        )
        .unwrap();
        let type_of = |name: &str| find(&objects, "Service", name)["spec"]["type"].clone();
        assert_eq!(type_of("istio-ingressgateway"), "LoadBalancer");
        assert_eq!(type_of("istio-egressgateway"), "ClusterIP");
        assert_eq!(type_of("egress-public"), "LoadBalancer");
        let node_port = mesh(json!({"gateways": [{"name": "istio-egressgateway", "kind": "egress",
            "service": {"ports": [{"name": "http2", "port": 80, "nodePort": 30080}]}}]}));
        let error = render(&node_port, &RenderOptions::default()).unwrap_err();
        assert_eq!(error.field, "spec.gateways[0].service.ports[0].nodePort");
    }

    /// Istio's charts render a PodDisruptionBudget for a fixed replica count above one (`replicaCount` > 1), so a
    /// node drain cannot evict every istiod or gateway pod at once; one replica gets none (it would only ever allow
    /// the drain anyway).
    #[test]
    fn several_fixed_replicas_get_a_disruption_budget_and_one_gets_none() {
        let pdbs = |spec: Value| {
            render(&mesh(spec), &RenderOptions::default())
                .unwrap()
                .into_iter()
                .filter(|o| o["kind"] == "PodDisruptionBudget")
                .map(|o| (o["metadata"]["name"].as_str().unwrap().to_owned(), o["spec"].clone()))
                .collect::<Vec<_>>()
        };
        let gateway = |replicas: i32| json!({"name": "istio-ingressgateway", "replicas": replicas});
        assert_eq!(pdbs(json!({"gateways": [gateway(1)]})), vec![]);
        assert_eq!(
            pdbs(
                json!({"controlPlane": {"replicas": 3}, "gateways": [gateway(2), {"name": "istio-egressgateway", "kind": "egress"}]})
            ),
            vec![
                (
                    "istiod".to_owned(),
                    json!({"maxUnavailable": 1, "selector": {"matchLabels": {"app": "istiod", "istio": "pilot"}}})
                ),
                (
                    "istio-ingressgateway".to_owned(),
                    json!({"maxUnavailable": 1, "selector": {"matchLabels": {"app": "istio-ingressgateway", "istio": "ingressgateway"}}})
                ),
            ]
        );
    }

    #[test]
    fn gateways_get_deployment_service_and_rbac_with_node_ports() {
        let mi = mesh(
            json!({"gateways": [{"name": "istio-ingressgateway", "service": {"type": "NodePort",
            "ports": [{"name": "http2", "port": 80, "targetPort": 8080, "nodePort": 30080}]}}]}),
        );
        let objects = render(&mi, &RenderOptions::default()).unwrap();
        let svc = find(&objects, "Service", "istio-ingressgateway");
        assert_eq!(svc["spec"]["type"], "NodePort");
        assert_eq!(svc["spec"]["ports"][0]["nodePort"], 30080);
        assert_eq!(svc["spec"]["selector"]["istio"], "ingressgateway");
        let d = find(&objects, "Deployment", "istio-ingressgateway");
        assert_eq!(
            d["spec"]["template"]["spec"]["containers"][0]["image"],
            "docker.io/istio/proxyv2:1.28.0"
        );
        find(&objects, "Role", "istio-ingressgateway-sds");
    }

    #[test]
    fn specs_the_schema_cannot_refuse_are_reported_by_field() {
        let mi = mesh(json!({"gateways": [{"name": "gw", "service": {"ports": [
            {"name": "a", "port": 80}, {"name": "b", "port": 80}]}}]}));
        let err = render(&mi, &RenderOptions::default()).unwrap_err();
        assert_eq!(err.field, "spec.gateways[0].service.ports[1].port");
        let mi = mesh(
            json!({"gateways": [{"name": "gw", "service": {"type": "ClusterIP", "ports": [
            {"name": "a", "port": 80, "nodePort": 30080}]}}]}),
        );
        let err = render(&mi, &RenderOptions::default()).unwrap_err();
        assert_eq!(err.field, "spec.gateways[0].service.ports[0].nodePort");
        let err = render(
            &mesh(json!({"gateways": [{"name": "istiod"}]})),
            &RenderOptions::default(),
        )
        .unwrap_err();
        assert_eq!(err.field, "spec.gateways[0].name");
        let err = render(
            &mesh(json!({"injection": {"templates": {"spire": "{{ if .X }}"}}})),
            &RenderOptions::default(),
        )
        .unwrap_err();
        assert_eq!(err.field, "spec.injection.templates[\"spire\"]");
    }

    /// Proxy settings every injected pod would fail on (Envoy refusing a log level, the API server a request above
    /// its limit or a negative quantity) are refused naming the field; CIDR and port lists are left as istio-init
    /// takes them (it skips a CIDR it cannot parse).
    #[test]
    fn proxy_settings_that_would_break_every_pod_are_reported_by_field() {
        for (proxy, field, says) in [
            (
                json!({"componentLogLevel": "misc:loud"}),
                "spec.proxy.componentLogLevel",
                "\"misc:loud\" is not a component:level",
            ),
            (
                json!({"componentLogLevel": "misc:info,,upstream:debug"}),
                "spec.proxy.componentLogLevel",
                "\"\" is not a component:level",
            ),
            (
                json!({"componentLogLevel": "misc:error, upstream:debug"}),
                "spec.proxy.componentLogLevel",
                "\" upstream:debug\" is not",
            ),
            (
                json!({"componentLogLevel": "misc:ERROR"}),
                "spec.proxy.componentLogLevel",
                "\"misc:ERROR\" is not",
            ),
            (
                json!({"resources": {"requests": {"cpu": "3"}, "limits": {"cpu": "2"}}}),
                "spec.proxy.resources.requests.cpu",
                "\"3\" is more than the limit \"2\"",
            ),
            (
                json!({"resources": {"requests": {"memory": "1025Mi"}, "limits": {"memory": "1Gi"}}}),
                "spec.proxy.resources.requests.memory",
                "is more than the limit",
            ),
            (
                json!({"resources": {"limits": {"memory": "-1Gi"}}}),
                "spec.proxy.resources.limits.memory",
                "must not be negative",
            ),
        ] {
            let err = render(&mesh(json!({"proxy": proxy})), &RenderOptions::default()).unwrap_err();
            assert_eq!(err.field, field, "{proxy}");
            assert!(err.message.contains(says), "{proxy}: {}", err.message);
        }
        // A fault of one object (istiod's or a gateway's resources) is that object's apply error, not a spec that
        // stops reconciling.
        let one_object = json!({"controlPlane": {"resources": {"requests": {"cpu": "3"}, "limits": {"cpu": "2"}}},
            "gateways": [{"name": "gw", "resources": {"requests": {"memory": "2Gi"}, "limits": {"memory": "1Gi"}}}]});
        render(&mesh(one_object), &RenderOptions::default()).unwrap();
        // What works today keeps working: CIDR items istio-init skips, a trailing comma, a request equal to its
        // limit, quantities finer than mizzen's parser reads (left to the API server), an empty level list.
        for fine in [
            json!({"includeIpRanges": "10.0.0.0/8,", "excludeIpRanges": "10.0.0.0/8, 10.1.0.0/16", "includeInboundPorts": "*",
                "excludeInboundPorts": "15020", "componentLogLevel": "misc:error,upstream:debug",
                "resources": {"requests": {"cpu": "100m"}, "limits": {"cpu": "0.1"}}}),
            json!({"componentLogLevel": "", "resources": {"requests": {"cpu": "0.0000000001"}, "limits": {"cpu": "1e-10"}}}),
        ] {
            render(&mesh(json!({"proxy": fine})), &RenderOptions::default()).unwrap();
        }
    }
}
