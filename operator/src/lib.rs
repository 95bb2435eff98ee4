//! mizzen-operator: reconciles MeshInstall resources. Reconcile = render (pure, `mizzen::render`) → server-side
//! apply of what differs, with one field manager → prune labelled children no longer rendered → status.
//! A reconcile with nothing to change makes no write call.
#![forbid(unsafe_code)]

pub mod tls;

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use k8s_openapi::api::apps::v1::Deployment;
use kube::api::{Api, ApiResource, DeleteParams, DynamicObject, GroupVersionKind, ListParams, Patch, PatchParams};
use kube::runtime::controller::Action;
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use kube::{Client, Resource, ResourceExt};
use mizzen::MeshInstall;
use mizzen::api::{GatewayStatus, ReplicaStatus};
use mizzen::render::{OWNER_LABEL, RenderOptions, render};
use mizzen::status::{self, Outcome};
use serde_json::{Value, json};

/// The one field manager every apply uses.
pub const FIELD_MANAGER: &str = "mizzen-operator";
/// `"true"` on a MeshInstall stops reconciling it.
pub const PAUSED_ANNOTATION: &str = "mizzen.io/paused";

/// Why a reconcile failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Reading an object failed.
    #[error("reading {kind} {name}: {source}")]
    Get {
        /// Kind.
        kind: String,
        /// Name.
        name: String,
        /// Why.
        source: kube::Error,
    },
    /// Applying an object failed.
    #[error("applying {kind} {name}: {source}")]
    Apply {
        /// Kind.
        kind: String,
        /// Name.
        name: String,
        /// Why.
        source: kube::Error,
    },
    /// Listing children failed.
    #[error("listing {kind}: {source}")]
    List {
        /// Kind.
        kind: String,
        /// Why.
        source: kube::Error,
    },
    /// Deleting an orphan failed.
    #[error("deleting {kind} {name}: {source}")]
    Delete {
        /// Kind.
        kind: String,
        /// Name.
        name: String,
        /// Why.
        source: kube::Error,
    },
    /// Writing the status failed.
    #[error("writing the status of {name}: {source}")]
    PatchStatus {
        /// MeshInstall name.
        name: String,
        /// Why.
        source: kube::Error,
    },
    /// The rendered object is not one mizzen knows how to apply (a bug).
    #[error("unknown kind {0}")]
    UnknownKind(String),
    /// Webhook certificate handling failed.
    #[error("webhook TLS: {0}")]
    Tls(String),
}

/// Operator settings.
#[derive(Debug, Clone)]
pub struct Options {
    /// The operator's own namespace (TLS Secret, Lease).
    pub namespace: String,
    /// Point the MutatingWebhookConfiguration at this URL instead of the Service.
    pub webhook_url: Option<String>,
    /// Also write the webhook's serving certificate here.
    pub webhook_tls_dir: Option<PathBuf>,
}

/// Counters for `/metrics`.
#[derive(Debug, Default)]
pub struct Metrics {
    /// Reconciles run.
    pub reconciles: AtomicU64,
    /// Reconciles that failed.
    pub errors: AtomicU64,
    /// Objects applied (created or changed).
    pub applied: AtomicU64,
    /// Orphans deleted.
    pub pruned: AtomicU64,
    /// Total reconcile time in microseconds.
    pub duration_micros: AtomicU64,
}

impl Metrics {
    /// Prometheus text.
    pub fn render(&self) -> String {
        let g = |a: &AtomicU64| a.load(Ordering::Relaxed);
        format!(
            "# TYPE mizzen_operator_reconciles_total counter\nmizzen_operator_reconciles_total {}\n\
             # TYPE mizzen_operator_reconcile_errors_total counter\nmizzen_operator_reconcile_errors_total {}\n\
             # TYPE mizzen_operator_objects_applied_total counter\nmizzen_operator_objects_applied_total {}\n\
             # TYPE mizzen_operator_objects_pruned_total counter\nmizzen_operator_objects_pruned_total {}\n\
             # TYPE mizzen_operator_reconcile_seconds_total counter\nmizzen_operator_reconcile_seconds_total {}\n",
            g(&self.reconciles),
            g(&self.errors),
            g(&self.applied),
            g(&self.pruned),
            g(&self.duration_micros) as f64 / 1e6
        )
    }
}

/// Shared by every reconcile.
pub struct Context {
    /// API client.
    pub client: Client,
    /// Settings.
    pub options: Options,
    /// Counters.
    pub metrics: Arc<Metrics>,
    /// Event reporter.
    pub recorder: Recorder,
}

impl Context {
    /// A context (the recorder is built from the client).
    pub fn new(client: Client, options: Options) -> Self {
        let reporter = Reporter {
            controller: FIELD_MANAGER.into(),
            instance: std::env::var("POD_NAME").ok(),
        };
        Self {
            recorder: Recorder::new(client.clone(), reporter),
            client,
            options,
            metrics: Arc::default(),
        }
    }
}

/// Kinds the operator applies: (apiVersion, kind, plural, namespaced, pruned when no longer rendered).
const KINDS: &[(&str, &str, &str, bool, bool)] = &[
    (
        "apiextensions.k8s.io/v1",
        "CustomResourceDefinition",
        "customresourcedefinitions",
        false,
        false,
    ),
    ("v1", "Namespace", "namespaces", false, false),
    ("v1", "ServiceAccount", "serviceaccounts", true, true),
    (
        "rbac.authorization.k8s.io/v1",
        "ClusterRole",
        "clusterroles",
        false,
        true,
    ),
    (
        "rbac.authorization.k8s.io/v1",
        "ClusterRoleBinding",
        "clusterrolebindings",
        false,
        true,
    ),
    ("rbac.authorization.k8s.io/v1", "Role", "roles", true, true),
    (
        "rbac.authorization.k8s.io/v1",
        "RoleBinding",
        "rolebindings",
        true,
        true,
    ),
    ("v1", "ConfigMap", "configmaps", true, true),
    ("apps/v1", "Deployment", "deployments", true, true),
    ("v1", "Service", "services", true, true),
    (
        "autoscaling/v2",
        "HorizontalPodAutoscaler",
        "horizontalpodautoscalers",
        true,
        true,
    ),
    ("policy/v1", "PodDisruptionBudget", "poddisruptionbudgets", true, true),
    (
        "admissionregistration.k8s.io/v1",
        "MutatingWebhookConfiguration",
        "mutatingwebhookconfigurations",
        false,
        true,
    ),
];

fn api_resource(api_version: &str, kind: &str) -> Option<(ApiResource, bool)> {
    KINDS
        .iter()
        .find(|k| k.0 == api_version && k.1 == kind)
        .map(|(av, k, plural, ns, _)| {
            let (group, version) = av.rsplit_once('/').unwrap_or(("", av));
            let gvk = GroupVersionKind::gvk(group, version, k);
            (ApiResource::from_gvk_with_plural(&gvk, plural), *ns)
        })
}

fn dynamic_api(client: &Client, ar: &ApiResource, namespaced: bool, namespace: Option<&str>) -> Api<DynamicObject> {
    match (namespaced, namespace) {
        (true, Some(ns)) => Api::namespaced_with(client.clone(), ns, ar),
        _ => Api::all_with(client.clone(), ar),
    }
}

/// Whether every field of `desired` is present with the same value in `live` (so applying changes nothing).
pub fn contains(live: &Value, desired: &Value) -> bool {
    match (live, desired) {
        (Value::Object(l), Value::Object(d)) => d.iter().all(|(k, dv)| l.get(k).is_some_and(|lv| contains(lv, dv))),
        (Value::Array(l), Value::Array(d)) => l.len() == d.len() && l.iter().zip(d).all(|(lv, dv)| contains(lv, dv)),
        (Value::Number(l), Value::Number(d)) => l.as_f64() == d.as_f64(),
        _ => live == desired,
    }
}

/// Applies what differs; returns the number of objects written.
async fn apply(ctx: &Context, desired: &[Value]) -> Result<u64, Error> {
    let mut written = 0;
    let params = PatchParams::apply(FIELD_MANAGER).force();
    for object in desired {
        let kind = object["kind"].as_str().unwrap_or_default();
        let name = object["metadata"]["name"].as_str().unwrap_or_default();
        let (ar, namespaced) = api_resource(object["apiVersion"].as_str().unwrap_or_default(), kind)
            .ok_or_else(|| Error::UnknownKind(kind.to_owned()))?;
        let api = dynamic_api(&ctx.client, &ar, namespaced, object["metadata"]["namespace"].as_str());
        let live = api.get_opt(name).await.map_err(|source| Error::Get {
            kind: kind.into(),
            name: name.into(),
            source,
        })?;
        if let Some(live) = live
            && let Ok(live) = serde_json::to_value(&live)
            && contains(&live, object)
        {
            continue;
        }
        api.patch(name, &params, &Patch::Apply(object))
            .await
            .map_err(|source| Error::Apply {
                kind: kind.into(),
                name: name.into(),
                source,
            })?;
        written += 1;
        tracing::info!(%kind, %name, "applied");
    }
    Ok(written)
}

/// Deletes children labelled for this MeshInstall that are no longer rendered; returns how many.
async fn prune(ctx: &Context, mi_name: &str, desired: &[Value]) -> Result<Vec<String>, Error> {
    let keep: BTreeSet<(String, String, String)> = desired
        .iter()
        .map(|o| {
            (
                o["kind"].as_str().unwrap_or_default().to_owned(),
                o["metadata"]["namespace"].as_str().unwrap_or_default().to_owned(),
                o["metadata"]["name"].as_str().unwrap_or_default().to_owned(),
            )
        })
        .collect();
    let selector = format!("{OWNER_LABEL}={mi_name},app.kubernetes.io/managed-by=mizzen");
    let mut deleted = Vec::new();
    for (api_version, kind, _, namespaced, pruned) in KINDS {
        if !pruned {
            continue;
        }
        let Some((ar, _)) = api_resource(api_version, kind) else {
            continue;
        };
        let api: Api<DynamicObject> = Api::all_with(ctx.client.clone(), &ar);
        let list = api
            .list(&ListParams::default().labels(&selector))
            .await
            .map_err(|source| Error::List {
                kind: (*kind).into(),
                source,
            })?;
        for item in list.items {
            let ns = item.namespace().unwrap_or_default();
            let name = item.name_any();
            if keep.contains(&((*kind).to_owned(), ns.clone(), name.clone())) {
                continue;
            }
            let api = dynamic_api(&ctx.client, &ar, *namespaced, Some(&ns));
            api.delete(&name, &DeleteParams::background())
                .await
                .map_err(|source| Error::Delete {
                    kind: (*kind).into(),
                    name: name.clone(),
                    source,
                })?;
            tracing::info!(%kind, %name, namespace = %ns, "pruned");
            deleted.push(format!("{kind}/{name}"));
        }
    }
    Ok(deleted)
}

async fn readiness(ctx: &Context, mi: &MeshInstall) -> (Option<ReplicaStatus>, Vec<GatewayStatus>) {
    let names = mizzen::render::Names::new(&mi.spec);
    let api: Api<Deployment> = Api::namespaced(ctx.client.clone(), &mi.spec.namespace);
    let read = |d: Option<Deployment>| {
        d.and_then(|d| serde_json::to_value(d).ok())
            .map(|v| status::deployment_readiness(&v))
    };
    let control_plane = read(api.get_opt(&names.istiod()).await.ok().flatten()).or(Some(ReplicaStatus {
        ready: 0,
        desired: mi.spec.control_plane.replicas,
    }));
    let mut gateways = Vec::new();
    for g in &mi.spec.gateways {
        let r = read(api.get_opt(&g.name).await.ok().flatten()).unwrap_or(ReplicaStatus {
            ready: 0,
            desired: g.replicas,
        });
        gateways.push(GatewayStatus {
            name: g.name.clone(),
            ready: r.ready,
            desired: r.desired,
        });
    }
    (control_plane, gateways)
}

async fn publish(ctx: &Context, mi: &MeshInstall, type_: EventType, reason: &str, note: String) {
    let event = Event {
        type_,
        reason: reason.into(),
        note: Some(note.chars().take(1000).collect()),
        action: "Reconcile".into(),
        secondary: None,
    };
    if let Err(error) = ctx.recorder.publish(&event, &mi.object_ref(&())).await {
        tracing::debug!(%error, "could not publish an event");
    }
}

async fn write_status(ctx: &Context, mi: &MeshInstall, outcome: &Outcome) -> Result<(), Error> {
    let (control_plane, gateways) = match outcome {
        Outcome::InvalidSpec(_) => (None, Vec::new()),
        _ => readiness(ctx, mi).await,
    };
    let now = k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(k8s_openapi::jiff::Timestamp::now());
    let next = status::next(
        mi.status.as_ref(),
        mi.metadata.generation,
        outcome,
        control_plane,
        gateways,
        &now,
    );
    if !status::differs(mi.status.as_ref(), &next) {
        return Ok(());
    }
    let name = mi.name_any();
    let api: Api<MeshInstall> = Api::all(ctx.client.clone());
    api.patch_status(&name, &PatchParams::default(), &Patch::Merge(json!({"status": next})))
        .await
        .map_err(|source| Error::PatchStatus { name, source })?;
    Ok(())
}

/// How soon to look again while components are still rolling out.
const PROGRESS_REQUEUE: Duration = Duration::from_secs(15);
/// How soon to look again when all is well (catches drift the watches would miss).
const STEADY_REQUEUE: Duration = Duration::from_secs(300);

/// Reconciles one MeshInstall.
pub async fn reconcile(mi: Arc<MeshInstall>, ctx: Arc<Context>) -> Result<Action, Error> {
    let started = Instant::now();
    ctx.metrics.reconciles.fetch_add(1, Ordering::Relaxed);
    let result = reconcile_inner(&mi, &ctx).await;
    ctx.metrics
        .duration_micros
        .fetch_add(started.elapsed().as_micros() as u64, Ordering::Relaxed);
    if result.is_err() {
        ctx.metrics.errors.fetch_add(1, Ordering::Relaxed);
    }
    result
}

async fn reconcile_inner(mi: &MeshInstall, ctx: &Context) -> Result<Action, Error> {
    let name = mi.name_any();
    if mi.annotations().get(PAUSED_ANNOTATION).map(String::as_str) == Some("true") {
        write_status(ctx, mi, &Outcome::Paused).await?;
        return Ok(Action::await_change());
    }
    let ca = tls::ensure(ctx).await?;
    let options = RenderOptions {
        operator_namespace: ctx.options.namespace.clone(),
        webhook_url: ctx.options.webhook_url.clone(),
        ca_bundle: Some(ca),
    };
    let desired = match render(mi, &options) {
        Ok(d) => d,
        Err(invalid) => {
            let message = invalid.to_string();
            let first_time = mi.status.as_ref().is_none_or(|s| {
                !s.conditions
                    .iter()
                    .any(|c| c.type_ == status::RECONCILED && c.reason == "InvalidSpec" && c.message == message)
            });
            if first_time {
                publish(ctx, mi, EventType::Warning, "InvalidSpec", message.clone()).await;
            }
            write_status(ctx, mi, &Outcome::InvalidSpec(message)).await?;
            // The spec must change before anything can happen; look again rarely.
            return Ok(Action::requeue(STEADY_REQUEUE));
        }
    };
    let outcome = async {
        let applied = apply(ctx, &desired).await?;
        let pruned = prune(ctx, &name, &desired).await?;
        Ok::<_, Error>((applied, pruned))
    }
    .await;
    match outcome {
        Ok((applied, pruned)) => {
            ctx.metrics.applied.fetch_add(applied, Ordering::Relaxed);
            ctx.metrics.pruned.fetch_add(pruned.len() as u64, Ordering::Relaxed);
            if applied > 0 {
                publish(
                    ctx,
                    mi,
                    EventType::Normal,
                    "Applied",
                    format!("applied {applied} objects"),
                )
                .await;
            }
            if !pruned.is_empty() {
                publish(
                    ctx,
                    mi,
                    EventType::Normal,
                    "Pruned",
                    format!("deleted {}", pruned.join(", ")),
                )
                .await;
            }
            write_status(ctx, mi, &Outcome::Applied).await?;
            let healthy = mi.status.as_ref().and_then(|s| s.state) == Some(mizzen::api::MeshState::Healthy);
            Ok(Action::requeue(if healthy && applied == 0 {
                STEADY_REQUEUE
            } else {
                PROGRESS_REQUEUE
            }))
        }
        Err(error) => {
            publish(ctx, mi, EventType::Warning, "ApplyFailed", error.to_string()).await;
            let _ = write_status(ctx, mi, &Outcome::Failed(error.to_string())).await;
            Err(error)
        }
    }
}

/// Transient failures retry soon; the controller's own backoff spaces repeated failures.
pub fn error_policy(_mi: Arc<MeshInstall>, error: &Error, _ctx: Arc<Context>) -> Action {
    tracing::warn!(%error, "reconcile failed");
    match error {
        Error::UnknownKind(_) => Action::requeue(STEADY_REQUEUE),
        _ => Action::requeue(Duration::from_secs(5)),
    }
}
