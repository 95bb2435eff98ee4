//! One reconcile of one MeshInstall: render → apply what differs from the watch caches → prune what this
//! MeshInstall owns and no longer renders → status. Errors back off per MeshInstall; Warning Events are rate-limited.

use std::collections::hash_map::DefaultHasher;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::hash::{Hash, Hasher};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::api::{Api, DeleteParams, DynamicObject, PartialObjectMeta, Patch, PatchParams, PostParams, Preconditions};
use kube::runtime::controller::Action;
use kube::runtime::events::EventType;
use kube::runtime::reflector::Store;
use kube::{Client, Resource, ResourceExt};
use mizzen::MeshInstall;
use mizzen::api::{AddonStatus, ComponentsStatus, DataPlaneStatus, GatewayStatus, ReplicaStatus, WebhookStatus};
use mizzen::events::{Occurrence, Publish, Reporter, Series};
use mizzen::render::{RenderOptions, render};
use mizzen::revisions::{self, Assignment};
use mizzen::status::{self, Outcome};
use serde_json::{Value, json};

use crate::cache::{Caches, display_name};
use crate::controller::Options;
use crate::dataplane::DataPlaneCache;
use crate::diff::needs_apply;
use crate::kinds::{self, ManagedKind};
use crate::metrics::Metrics;
use crate::tls::CaBundle;
use crate::{ADOPT_ANNOTATION, Error, FIELD_MANAGER, PAUSED_ANNOTATION};
use mizzen::render::MANAGED_BY;

/// How soon to look again while components are still rolling out (their watch events usually come first).
const PROGRESS_REQUEUE: Duration = Duration::from_secs(15);
/// How soon to look again when all is well (catches MeshInstalls whose older rival went away).
const STEADY_REQUEUE: Duration = Duration::from_secs(300);
/// How often restarts in flight are looked at (their pods' events usually come first).
const ROLLOUT_POLL: Duration = Duration::from_secs(5);
/// How often an out-of-cluster webhook URL is tried while the webhook configuration waits for it.
const WEBHOOK_POLL: Duration = Duration::from_secs(2);
/// The webhook Deployment the bundle installs in the operator's namespace.
pub const WEBHOOK_DEPLOYMENT: &str = "mizzen-webhook";
/// First retry after a failure; doubles per consecutive failure up to [`MAX_BACKOFF`].
const FIRST_BACKOFF: Duration = Duration::from_secs(2);
/// Doublings a persistent error skips (its first retry comes after 16 s rather than 2 s).
const PERSISTENT_HEAD_START: u32 = 3;
/// The longest wait between retries of a failing MeshInstall.
const MAX_BACKOFF: Duration = Duration::from_secs(300);
/// The same Warning (reason and message) is published at most once per this period per MeshInstall.
const WARNING_EVERY: Duration = Duration::from_secs(600);
/// How long a reconcile waits for the watch caches to list their objects at start-up.
const CACHE_SYNC: Duration = Duration::from_secs(60);

/// Shared by every reconcile.
pub struct Context {
    /// API client.
    pub client: Client,
    /// Settings.
    pub options: Options,
    /// Counters.
    pub metrics: Arc<Metrics>,
    /// Event reporter: the recent events, counted in series.
    pub recorder: Mutex<Series>,
    /// Watch caches of the children.
    pub caches: Caches,
    /// Every MeshInstall (the controller's own cache), to find overlapping installs.
    pub meshes: Store<MeshInstall>,
    /// The webhook's CA bundle, kept by the TLS keeper.
    pub ca_bundle: CaBundle,
    /// The webhook Deployment in the operator's namespace (install order: no webhook configuration before it is
    /// ready).
    pub webhook: Store<Deployment>,
    /// Injected pods and namespace labels, for the data plane report.
    pub data_plane: Arc<DataPlaneCache>,
    /// Objects cached by metadata only: the `resourceVersion` and desired-object hash last seen equal.
    compared: Mutex<HashMap<(String, String), (String, u64)>>,
    /// Consecutive failures per MeshInstall (by UID), for the backoff.
    failures: Mutex<HashMap<String, Failures>>,
    /// When each (MeshInstall, reason, message) Warning was last published.
    warned: Mutex<HashMap<(String, String, String), Instant>>,
    /// Istio CRDs and namespaces found to be someone else's, and when (by kind and name).
    foreign: Mutex<HashMap<(String, String), Instant>>,
    /// The status this process last wrote, per MeshInstall (by UID).
    last_status: Mutex<HashMap<String, Value>>,
}

/// The caches a reconcile reads, filled by the controller's watches.
pub struct Views {
    /// Watch caches of the children.
    pub caches: Caches,
    /// Every MeshInstall.
    pub meshes: Store<MeshInstall>,
    /// The webhook Deployment.
    pub webhook: Store<Deployment>,
    /// Injected pods and namespace labels.
    pub data_plane: Arc<DataPlaneCache>,
}

impl Context {
    /// A context; the recorder reports as this pod (`POD_NAME`).
    pub fn new(client: Client, options: Options, views: Views, ca_bundle: CaBundle, metrics: Arc<Metrics>) -> Self {
        let Views {
            caches,
            meshes,
            webhook,
            data_plane,
        } = views;
        let reporter = Reporter {
            controller: FIELD_MANAGER.into(),
            instance: options.identity.clone(),
        };
        Self {
            recorder: Mutex::new(Series::new(reporter)),
            client,
            options,
            metrics,
            caches,
            meshes,
            ca_bundle,
            webhook,
            data_plane,
            compared: Mutex::default(),
            failures: Mutex::default(),
            warned: Mutex::default(),
            foreign: Mutex::default(),
            last_status: Mutex::default(),
        }
    }

    fn api(&self, kind: &ManagedKind, namespace: Option<&str>) -> Api<DynamicObject> {
        let ar = kind.api_resource();
        match namespace.filter(|_| kind.namespaced) {
            Some(ns) => Api::namespaced_with(self.client.clone(), ns, &ar),
            None => Api::all_with(self.client.clone(), &ar),
        }
    }

    /// Whether this replica may still write (see [`crate::leader::Fence`]).
    fn still_leading(&self) -> Result<(), Error> {
        if self.options.fence.allows_writes() {
            Ok(())
        } else {
            Err(Error::LeadershipLost)
        }
    }

    /// Publishes an Event on the MeshInstall; the same Warning at most once per [`WARNING_EVERY`].
    pub(crate) async fn publish(&self, mi: &MeshInstall, type_: EventType, reason: &str, note: String) {
        if type_ == EventType::Warning {
            let key = (mi.uid().unwrap_or_default(), reason.to_owned(), note.clone());
            let mut warned = lock(&self.warned);
            if warned.get(&key).is_some_and(|t| t.elapsed() < WARNING_EVERY) {
                return;
            }
            // Forget what no longer mutes anything.
            warned.retain(|_, t| t.elapsed() < WARNING_EVERY);
            warned.insert(key, Instant::now());
        }
        let occurrence = Occurrence {
            warning: type_ == EventType::Warning,
            reason: reason.into(),
            note,
            action: "Reconcile".into(),
            regarding: mi.object_ref(&()),
            related: None,
        };
        self.send_event(&occurrence).await;
    }

    /// Publishes an Event, counted in the series of an identical recent one (see [`mizzen::events`]).
    pub(crate) async fn send_event(&self, occurrence: &Occurrence) {
        // A second attempt when the event to count in is gone (the API server expires events): a new one.
        for _ in 0..2 {
            let publish = lock(&self.recorder).next(occurrence, k8s_openapi::jiff::Timestamp::now());
            let event = publish.event();
            let namespace = event.metadata.namespace.as_deref().unwrap_or("default");
            let api: Api<k8s_openapi::api::events::v1::Event> = Api::namespaced(self.client.clone(), namespace);
            let sent = match &publish {
                Publish::Patch(event) => {
                    let name = event.metadata.name.as_deref().unwrap_or_default();
                    let series = json!({"series": event.series});
                    api.patch(name, &PatchParams::default(), &Patch::Merge(&series))
                        .await
                        .map(drop)
                }
                Publish::Create(event) => api.create(&PostParams::default(), event).await.map(drop),
            };
            match sent {
                Ok(()) => return lock(&self.recorder).sent(occurrence, publish),
                Err(kube::Error::Api(e)) if e.code == 404 && matches!(publish, Publish::Patch(_)) => {
                    lock(&self.recorder).forget(occurrence);
                }
                Err(error) => return tracing::debug!(%error, "could not publish an event"),
            }
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// A MeshInstall's run of failures: how many, when the next attempt is due, and at which generation.
#[derive(Debug, Clone, Copy)]
struct Failures {
    count: u32,
    retry_at: Instant,
    /// What a user changes to make a retry worth it at once: the spec (generation) and the annotations
    /// (`mizzen.io/paused`, `mizzen.io/adopt`).
    version: (Option<i64>, u64),
}

/// The generation and a hash of the annotations.
fn user_version(mi: &MeshInstall) -> (Option<i64>, u64) {
    let mut h = DefaultHasher::new();
    mi.annotations().hash(&mut h);
    (mi.metadata.generation, h.finish())
}

/// (kind, namespace, name) of a rendered or live object.
type Key = (String, String, String);

fn key_of(object: &Value) -> Key {
    let s = |v: &Value| v.as_str().unwrap_or_default().to_owned();
    (
        s(&object["kind"]),
        s(&object["metadata"]["namespace"]),
        s(&object["metadata"]["name"]),
    )
}

/// Kinds several MeshInstalls legitimately render alike (Istio's CRDs, the mesh namespace): the oldest
/// MeshInstall applies them and the others leave them alone, without a conflict.
fn shared(kind: &str) -> bool {
    matches!(kind, "CustomResourceDefinition" | "Namespace")
}

fn older(a: &MeshInstall, b: &MeshInstall) -> bool {
    let created = |m: &MeshInstall| m.metadata.creation_timestamp.as_ref().map(|t| t.0);
    (created(a), a.name_any()) < (created(b), b.name_any())
}

fn paused(mi: &MeshInstall) -> bool {
    mi.annotations().get(PAUSED_ANNOTATION).map(String::as_str) == Some("true")
}

fn controlled_by(object: &DynamicObject, uid: &str) -> bool {
    object
        .owner_references()
        .iter()
        .any(|o| o.controller == Some(true) && o.uid == uid)
}

/// Render options of one MeshInstall: the shared ones with what it holds among all of them.
fn options_for(base: &RenderOptions, assignment: &Assignment, mi: &MeshInstall) -> RenderOptions {
    RenderOptions {
        holdings: Some(assignment.of(&mi.name_any())),
        ..base.clone()
    }
}

/// What every other live MeshInstall renders (`None` when its spec does not render).
type OtherRenders = Vec<(Arc<MeshInstall>, Option<Vec<Value>>)>;

fn render_others(ctx: &Context, mi: &MeshInstall, base: &RenderOptions, assignment: &Assignment) -> OtherRenders {
    ctx.meshes
        .state()
        .into_iter()
        .filter(|other| other.uid() != mi.uid() && other.metadata.deletion_timestamp.is_none())
        .map(|other| {
            let objects = render(&other, &options_for(base, assignment, &other)).ok();
            (other, objects)
        })
        .collect()
}

/// Objects that older MeshInstalls render too, with the name of the older one.
fn claimed_by_older(ctx: &Context, mi: &MeshInstall, others: &OtherRenders) -> BTreeMap<Key, String> {
    let mut claims = BTreeMap::new();
    // MeshInstalls that keep everything they control, rendered or not: being deleted, paused (pausing must not
    // hand its objects to another) or with a spec that does not render (it became invalid). One being deleted keeps
    // all but its webhook configurations: a name it served (`default`, a tag) is another's now, which takes the
    // configuration over in place (its owner reference as the heir kept the garbage collector from deleting it).
    let mut keeping: BTreeMap<String, (String, bool)> = BTreeMap::new();
    for other in ctx.meshes.state() {
        if other.uid() == mi.uid() || !older(&other, mi) {
            continue;
        }
        let rendered = others
            .iter()
            .find(|(o, _)| o.uid() == other.uid())
            .and_then(|(_, r)| r.as_ref());
        match rendered {
            Some(objects) if !paused(&other) => {
                for o in objects {
                    claims.entry(key_of(o)).or_insert_with(|| other.name_any());
                }
            }
            _ => {
                // A paused one keeps what it renders, except what is shared (the mesh namespace, which a younger
                // install may need to create).
                for o in rendered
                    .into_iter()
                    .flatten()
                    .filter(|o| !shared(o["kind"].as_str().unwrap_or_default()))
                {
                    claims.entry(key_of(o)).or_insert_with(|| other.name_any());
                }
                if let Some(uid) = other.uid() {
                    keeping.insert(uid, (other.name_any(), other.metadata.deletion_timestamp.is_some()));
                }
            }
        }
    }
    // What such an older MeshInstall controls stays its own: a younger one must not take the live objects over in
    // between. (An older one that renders and no longer renders an object has let it go: a younger one rendering
    // it takes it over in place, as a revision tag that moves.)
    let older_uids = keeping;
    for (kind, object) in ctx.caches.all() {
        let owner = object
            .owner_references()
            .iter()
            .find(|o| o.controller == Some(true))
            .and_then(|o| older_uids.get(&o.uid))
            .filter(|(_, deleting)| !(*deleting && kind.kind == "MutatingWebhookConfiguration"))
            .map(|(name, _)| name);
        if let Some(owner) = owner {
            let key = (
                kind.kind.to_owned(),
                object.namespace().unwrap_or_default(),
                object.name_any(),
            );
            claims.entry(key).or_insert_with(|| owner.clone());
        }
    }
    claims
}

fn hash(text: &str) -> u64 {
    let mut h = DefaultHasher::new();
    text.hash(&mut h);
    h.finish()
}

/// One of Istio's CRDs: its name, its JSON text, and a hash of the text.
type IstioCrd = (String, &'static str, u64);

/// Istio's CRDs, read once.
fn istio_crds() -> Result<&'static [IstioCrd], Error> {
    static CRDS: std::sync::OnceLock<Result<Vec<IstioCrd>, String>> = std::sync::OnceLock::new();
    CRDS.get_or_init(|| {
        mizzen::istio_crds::raw()
            .map(|(_, text)| {
                Ok((
                    mizzen::istio_crds::name(text).map_err(|e| e.to_string())?,
                    text,
                    hash(text),
                ))
            })
            .collect()
    })
    .as_deref()
    .map_err(|e| Error::IstioCrd(e.clone()))
}

/// Istio's CRDs, applied by the oldest MeshInstall only. Each is parsed from its text only when its
/// `resourceVersion` moved since it was last seen equal (about a megabyte of schema is never kept parsed).
async fn apply_istio_crds(ctx: &Context, mi: &MeshInstall) -> Applied {
    let mut done = Applied::default();
    let Some(kind) = kinds::lookup("apiextensions.k8s.io/v1", "CustomResourceDefinition") else {
        return done;
    };
    let crds = match istio_crds() {
        Ok(crds) => crds,
        Err(e) => {
            done.errors.push(e);
            return done;
        }
    };
    let params = PatchParams::apply(FIELD_MANAGER).force();
    for (name, text, wanted) in crds {
        let (name, wanted) = (name.clone(), *wanted);
        let key = (kind.kind.to_owned(), String::new(), name.clone());
        let live = ctx.caches.get(kind, None, &name);
        if let Some(live) = &live
            && lock(&ctx.compared).get(&(kind.kind.to_owned(), name.clone()))
                == Some(&(live.resource_version().unwrap_or_default(), wanted))
        {
            continue;
        }
        // Not mizzen's (the cache holds only mizzen's): installed by istioctl, Helm or another tool, perhaps of
        // another Istio release. Left as it is (Istio's own CRDs serve mizzen's mesh as well) unless the MeshInstall
        // asks to adopt: applying an older schema over a newer one would prune fields from users' resources.
        if live.is_none() {
            match foreign_object(ctx, kind, &name).await {
                Ok(true) if !may_adopt(mi) => continue,
                Ok(_) => {}
                Err(e) => {
                    done.errors.push(e);
                    continue;
                }
            }
        }
        let object: Value = match serde_json::from_str(text) {
            Ok(o) => o,
            Err(e) => {
                done.errors.push(Error::IstioCrd(e.to_string()));
                continue;
            }
        };
        match differs(ctx, kind, &object, &key, wanted).await {
            Ok(false) => continue,
            Ok(true) => {}
            Err(e) => {
                done.errors.push(e);
                continue;
            }
        }
        if let Err(e) = ctx.still_leading() {
            done.errors.push(e);
            return done;
        }
        match ctx.api(kind, None).patch(&name, &params, &Patch::Apply(&object)).await {
            Ok(applied) => {
                lock(&ctx.compared).insert(
                    (kind.kind.to_owned(), name.clone()),
                    (applied.resource_version().unwrap_or_default(), wanted),
                );
                lock(&ctx.foreign).remove(&(kind.kind.to_owned(), name.clone()));
                tracing::info!(kind = kind.kind, %name, "applied");
                done.written.push(format!("{}/{name}", kind.kind));
            }
            // Every other CRD is still tried.
            Err(source) => done.errors.push(Error::Apply {
                kind: kind.kind,
                name: name.clone(),
                source,
            }),
        }
    }
    done
}

/// How long an object found to be someone else's is taken as such without asking the API again.
const FOREIGN_RECHECK: Duration = Duration::from_secs(300);

/// Whether the cluster-scoped object `name` exists and is not mizzen's (remembered for [`FOREIGN_RECHECK`], so a
/// reconcile with nothing to change asks nothing).
async fn foreign_object(ctx: &Context, kind: &ManagedKind, name: &str) -> Result<bool, Error> {
    let memo_key = (kind.kind.to_owned(), name.to_owned());
    if lock(&ctx.foreign)
        .get(&memo_key)
        .is_some_and(|seen| seen.elapsed() < FOREIGN_RECHECK)
    {
        return Ok(true);
    }
    let existing = ctx
        .api(kind, None)
        .get_metadata_opt(name)
        .await
        .map_err(|source| Error::Get {
            kind: kind.kind,
            name: name.to_owned(),
            source,
        })?;
    let foreign = existing.is_some_and(|e| !is_mizzens(&e));
    let mut memo = lock(&ctx.foreign);
    if foreign {
        memo.insert(memo_key, Instant::now());
    } else {
        memo.remove(&memo_key);
    }
    Ok(foreign)
}

fn is_mizzens(object: &impl ResourceExt) -> bool {
    object.labels().get("app.kubernetes.io/managed-by").map(String::as_str) == Some(MANAGED_BY)
}

/// Whether applying `object` would change what is live, read from the caches.
async fn differs(ctx: &Context, kind: &ManagedKind, object: &Value, key: &Key, wanted: u64) -> Result<bool, Error> {
    let namespace = Some(key.1.as_str()).filter(|n| !n.is_empty());
    let Some(live) = ctx.caches.get(kind, namespace, &key.2) else {
        return Ok(true);
    };
    if kind.cached_in_full {
        let live = serde_json::to_value(live.as_ref()).map_err(|source| Error::Rendered {
            kind: kind.kind,
            name: key.2.clone(),
            source,
        })?;
        return Ok(needs_apply(&live, object, FIELD_MANAGER));
    }
    // Cached by metadata only: compare in full once per resourceVersion.
    let version = live.resource_version().unwrap_or_default();
    let memo_key = (kind.kind.to_owned(), key.2.clone());
    if lock(&ctx.compared).get(&memo_key) == Some(&(version.clone(), wanted)) {
        return Ok(false);
    }
    let full = ctx
        .api(kind, namespace)
        .get_opt(&key.2)
        .await
        .map_err(|source| Error::Get {
            kind: kind.kind,
            name: key.2.clone(),
            source,
        })?;
    let Some(full) = full else { return Ok(true) };
    let full = serde_json::to_value(&full).map_err(|source| Error::Rendered {
        kind: kind.kind,
        name: key.2.clone(),
        source,
    })?;
    let changed = needs_apply(&full, object, FIELD_MANAGER);
    if !changed {
        let version = full["metadata"]["resourceVersion"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        lock(&ctx.compared).insert(memo_key, (version, wanted));
    }
    Ok(changed)
}

/// What applying did: objects written (`Kind/namespace/name`), objects left alone because they exist and are not
/// mizzen's, and the errors (every object is tried, so one refusal does not hold the others back).
#[derive(Default)]
struct Applied {
    written: Vec<String>,
    not_ours: Vec<String>,
    errors: Vec<Error>,
}

/// Whether an existing object that is not mizzen's can be taken over when the MeshInstall asks: RBAC objects and
/// webhook configurations only when they are Istio's own (label `app.kubernetes.io/part-of=istio`, as Istio's
/// charts set), as the guardrails policy (config/rbac/operator-guardrails.yaml) enforces.
fn adoptable(kind: &str, existing: &PartialObjectMeta<DynamicObject>) -> bool {
    let guarded = matches!(
        kind,
        "ClusterRole" | "ClusterRoleBinding" | "Role" | "RoleBinding" | "MutatingWebhookConfiguration"
    );
    !guarded || existing.labels().get("app.kubernetes.io/part-of").map(String::as_str) == Some("istio")
}

/// Whether an object that exists and is not mizzen's may be taken over.
fn may_adopt(mi: &MeshInstall) -> bool {
    mi.annotations().get(ADOPT_ANNOTATION).map(String::as_str) == Some("true")
}

/// Applies what differs.
async fn apply(ctx: &Context, mi: &MeshInstall, desired: &[Value]) -> Applied {
    let mut done = Applied::default();
    let params = PatchParams::apply(FIELD_MANAGER).force();
    for object in desired {
        let key = key_of(object);
        let api_version = object["apiVersion"].as_str().unwrap_or_default();
        let Some(kind) = kinds::lookup(api_version, &key.0) else {
            done.errors.push(Error::UnknownKind {
                api_version: api_version.into(),
                kind: key.0.clone(),
            });
            continue;
        };
        let namespace = Some(key.1.as_str()).filter(|n| !n.is_empty());
        let shown = match namespace {
            Some(ns) => format!("{ns}/{}", key.2),
            None => key.2.clone(),
        };
        let wanted = if kind.cached_in_full {
            0
        } else {
            hash(&object.to_string())
        };
        match differs(ctx, kind, object, &key, wanted).await {
            Ok(false) => continue,
            Ok(true) => {}
            Err(e) => {
                done.errors.push(e);
                continue;
            }
        }
        let cached = ctx.caches.get(kind, namespace, &key.2);
        if kind.kind == "Namespace" {
            // The mesh namespace: created when missing, never relabelled when it is someone else's (an application
            // namespace or one an Istio install made); it is used as it is, which is no conflict.
            if cached.is_none() {
                match foreign_object(ctx, kind, &key.2).await {
                    Ok(true) => continue,
                    Ok(false) => {}
                    Err(e) => {
                        done.errors.push(e);
                        continue;
                    }
                }
            }
        } else if let Some(live) = &cached {
            // mizzen's by label, but controlled by something that is no MeshInstall this operator knows (a user's
            // copy with mizzen's labels, another operator's or another shard's install): not taken unless asked.
            let uid = mi.uid().unwrap_or_default();
            let foreign = live
                .owner_references()
                .iter()
                .find(|o| o.controller == Some(true))
                .filter(|o| o.uid != uid)
                .filter(|o| {
                    !ctx.meshes
                        .state()
                        .iter()
                        .any(|m| m.uid().as_deref() == Some(o.uid.as_str()))
                })
                .cloned();
            let mut foreign_owner = foreign.is_some();
            // A webhook configuration whose MeshInstall is gone (deleted in the background, its configuration not
            // yet collected) is taken over in place by the one rendering it now: the name it serves is this one's.
            if let Some(owner) = &foreign
                && kind.kind == "MutatingWebhookConfiguration"
                && owner.kind == "MeshInstall"
                && owner.api_version.starts_with("mizzen.io/")
            {
                match Api::<MeshInstall>::all(ctx.client.clone()).get_opt(&owner.name).await {
                    Ok(found) => {
                        foreign_owner = found.is_some_and(|m| m.uid().as_deref() == Some(owner.uid.as_str()));
                    }
                    Err(source) => {
                        done.errors.push(Error::Get {
                            kind: "MeshInstall",
                            name: owner.name.clone(),
                            source,
                        });
                        continue;
                    }
                }
            }
            if foreign_owner && !may_adopt(mi) {
                done.not_ours.push(format!("{} {shown}", kind.kind));
                continue;
            }
        } else {
            // Not in the caches (which hold only mizzen's objects): is there one that is someone else's?
            match ctx.api(kind, namespace).get_metadata_opt(&key.2).await {
                Ok(Some(existing)) if !(is_mizzens(&existing) || may_adopt(mi) && adoptable(kind.kind, &existing)) => {
                    done.not_ours.push(format!("{} {shown}", kind.kind));
                    continue;
                }
                Ok(_) => {}
                Err(source) => {
                    done.errors.push(Error::Get {
                        kind: kind.kind,
                        name: shown,
                        source,
                    });
                    continue;
                }
            }
        }
        if let Err(e) = ctx.still_leading() {
            done.errors.push(e);
            return done;
        }
        if let Some(live) = &cached
            && let Some(replicas) = replicas_to_hand_over(kind, live, object)
        {
            // Autoscaling was turned on: `spec.replicas` is no longer sent, and if the operator were its only owner
            // the API server would reset it to 1 (server-side apply removes the field, defaulting fills it in)
            // until the HPA acts. Another manager first takes it at its current value, as Kubernetes documents for
            // handing a field over; the HPA then owns it through the scale subresource.
            let handover = json!({
                "apiVersion": object["apiVersion"], "kind": object["kind"],
                "metadata": {"name": key.2, "namespace": key.1},
                "spec": {"replicas": replicas},
            });
            if let Err(source) = ctx
                .api(kind, namespace)
                .patch(
                    &key.2,
                    &PatchParams::apply(REPLICAS_HANDOVER).force(),
                    &Patch::Apply(&handover),
                )
                .await
            {
                done.errors.push(Error::Apply {
                    kind: kind.kind,
                    name: shown,
                    source,
                });
                continue;
            }
        }
        match ctx
            .api(kind, namespace)
            .patch(&key.2, &params, &Patch::Apply(object))
            .await
        {
            Ok(applied) => {
                if !kind.cached_in_full {
                    let version = applied.resource_version().unwrap_or_default();
                    lock(&ctx.compared).insert((kind.kind.to_owned(), key.2.clone()), (version, wanted));
                }
                tracing::info!(kind = kind.kind, name = %shown, "applied");
                done.written.push(format!("{}/{shown}", kind.kind));
            }
            Err(source) => done.errors.push(Error::Apply {
                kind: kind.kind,
                name: shown,
                source,
            }),
        }
    }
    done
}

/// What pruning did: objects deleted, errors, and whether a webhook configuration waits for its successor.
#[derive(Default)]
struct Pruned {
    deleted: Vec<String>,
    errors: Vec<Error>,
    deferred: bool,
}

/// Whether a webhook configuration this MeshInstall no longer renders must wait before it goes: the injection name it
/// serves (`default`, a tag) passed to another MeshInstall whose own configuration for it is not live yet. Deleting
/// it first would leave namespaces labelled for that name without injection in between.
fn waits_for_successor(ctx: &Context, mi: &MeshInstall, object: &DynamicObject, assignment: &Assignment) -> bool {
    let Some(name) = revisions::webhook_config_serves(&object.name_any()) else {
        return false;
    };
    let Some(successor) = assignment.serving.get(&name) else {
        return false;
    };
    if *successor == mi.name_any() {
        return false;
    }
    let Some(other) = ctx.meshes.state().into_iter().find(|m| m.name_any() == *successor) else {
        return false;
    };
    let config = revisions::webhook_config_for(&other.spec, &name);
    kinds::lookup("admissionregistration.k8s.io/v1", "MutatingWebhookConfiguration")
        .and_then(|k| ctx.caches.get(k, None, &config))
        .is_none_or(|live| !controlled_by(&live, &other.uid().unwrap_or_default()))
}

/// Whether `object` is a webhook configuration whose controller is gone and whose owners left include this
/// MeshInstall, as its heir: the garbage collector kept it for this install to take over. When this install does not
/// render it (it no longer lists the name, or lost it to another since its holder last wrote the reference, say while
/// paused), it is this install's to delete, as nobody else would, and it would call a revision no webhook serves.
fn orphaned_heir_of(kind: &ManagedKind, object: &DynamicObject, uid: &str) -> bool {
    kind.kind == "MutatingWebhookConfiguration"
        && object.owner_references().iter().all(|o| o.controller != Some(true))
        && object.owner_references().iter().any(|o| o.uid == uid)
}

/// The field manager that keeps `spec.replicas` when autoscaling takes it over.
const REPLICAS_HANDOVER: &str = "mizzen-operator-replicas-handover";

/// The live replicas of a Deployment whose `spec.replicas` the operator owns but no longer sends.
fn replicas_to_hand_over(kind: &ManagedKind, live: &DynamicObject, desired: &Value) -> Option<i64> {
    if kind.kind != "Deployment" || !desired["spec"]["replicas"].is_null() {
        return None;
    }
    let replicas = live.data["spec"]["replicas"].as_i64()?;
    let owned = live.managed_fields().iter().any(|m| {
        m.manager.as_deref() == Some(FIELD_MANAGER)
            && m.operation.as_deref() == Some("Apply")
            && m.fields_v1
                .as_ref()
                .is_some_and(|f| f.0["f:spec"].get("f:replicas").is_some())
    });
    owned.then_some(replicas)
}

/// Deletes what this MeshInstall controls (by owner UID, not by label) and no longer renders, except what another
/// MeshInstall renders now (it takes the object over in place: a revision tag that moved) and webhook
/// configurations whose successor is not live yet.
async fn prune(
    ctx: &Context,
    mi: &MeshInstall,
    desired: &[Value],
    others: &OtherRenders,
    assignment: &Assignment,
) -> Pruned {
    let uid = mi.uid().unwrap_or_default();
    let keep: BTreeSet<Key> = desired.iter().map(key_of).collect();
    let handed_over: BTreeSet<Key> = others
        .iter()
        .filter(|(other, _)| !paused(other))
        .filter_map(|(_, objects)| objects.as_ref())
        .flatten()
        .map(key_of)
        .collect();
    let mut pruned = Pruned::default();
    for (kind, object) in ctx.caches.all() {
        if !kind.pruned || !(controlled_by(&object, &uid) || orphaned_heir_of(kind, &object, &uid)) {
            continue;
        }
        // Already being deleted (held by a finalizer, such as a load balancer's cleanup): deleting it again would
        // change nothing, and would count as pruned on every reconcile.
        if object.metadata.deletion_timestamp.is_some() {
            continue;
        }
        let key = (
            kind.kind.to_owned(),
            object.namespace().unwrap_or_default(),
            object.name_any(),
        );
        if keep.contains(&key) || handed_over.contains(&key) {
            continue;
        }
        if kind.kind == "MutatingWebhookConfiguration" && waits_for_successor(ctx, mi, &object, assignment) {
            pruned.deferred = true;
            continue;
        }
        let name = display_name(&object);
        if let Err(e) = ctx.still_leading() {
            pruned.errors.push(e);
            break;
        }
        let params = DeleteParams {
            // The object as the cache saw it: if another MeshInstall took it over since (a stale cache), the
            // delete fails (409) and the next reconcile sees the new owner.
            preconditions: Some(Preconditions {
                uid: object.uid(),
                resource_version: object.resource_version(),
            }),
            ..DeleteParams::background()
        };
        match ctx
            .api(kind, object.namespace().as_deref())
            .delete(&key.2, &params)
            .await
        {
            Ok(_) => {}
            // Already gone, or replaced by another object of the same name (the UID precondition failed).
            Err(kube::Error::Api(e)) if e.code == 404 || e.code == 409 => continue,
            // Every other object is still tried.
            Err(source) => {
                pruned.errors.push(Error::Delete {
                    kind: kind.kind,
                    name,
                    source,
                });
                continue;
            }
        }
        tracing::info!(kind = kind.kind, %name, "pruned");
        pruned.deleted.push(format!("{}/{name}", kind.kind));
    }
    pruned
}

fn readiness(ctx: &Context, mi: &MeshInstall) -> ComponentsStatus {
    let names = mizzen::render::Names::new(&mi.spec);
    let deployments = kinds::lookup("apps/v1", "Deployment");
    let read = |name: &str| {
        let live = deployments.and_then(|k| ctx.caches.get(k, Some(&mi.spec.namespace), name))?;
        // Only a Deployment this MeshInstall controls counts.
        if !controlled_by(&live, &mi.uid().unwrap_or_default()) {
            return None;
        }
        serde_json::to_value(live.as_ref())
            .ok()
            .map(|v| status::deployment_readiness(&v))
    };
    let control_plane = read(&names.istiod()).unwrap_or(ReplicaStatus {
        ready: 0,
        desired: mi.spec.control_plane.replicas,
    });
    let gateways = mi
        .spec
        .gateways
        .iter()
        .map(|g| {
            let r = read(&g.name).unwrap_or(ReplicaStatus {
                ready: 0,
                desired: g.replicas,
            });
            GatewayStatus {
                name: g.name.clone(),
                ready: r.ready,
                desired: r.desired,
            }
        })
        .collect();
    // Each enabled addon runs as the Deployment of its name.
    let addons = mizzen::render::addons::enabled(&mi.spec)
        .into_iter()
        .map(|name| {
            let r = read(name).unwrap_or(ReplicaStatus { ready: 0, desired: 1 });
            AddonStatus {
                name: name.to_owned(),
                ready: r.ready,
                desired: r.desired,
            }
        })
        .collect();
    // The webhook in the cluster: ready pods of any revision (each answers), whatever this MeshInstall renders. The
    // reconcile waited for its cache to list, so an empty cache never reads as no webhook.
    let webhook = ctx.options.webhook_url.is_none().then(|| {
        webhook_deployment(ctx).map_or(WebhookStatus { ready: 0, desired: 0 }, |d| WebhookStatus {
            ready: d.status.as_ref().and_then(|s| s.ready_replicas).unwrap_or(0),
            desired: d.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1),
        })
    });
    ComponentsStatus {
        control_plane: Some(control_plane),
        gateways,
        addons,
        webhook,
    }
}

/// What the status says beyond the outcome and the components; `None` keeps what the last status said.
#[derive(Default)]
struct Extras {
    /// The revision tags held.
    tags: Option<Vec<String>>,
    /// The data plane report with the rollout's state.
    data_plane: Option<DataPlaneStatus>,
    /// Every object was applied, or all but webhook configurations (waiting for a ready webhook, or of names other
    /// installs hold): the spec is recorded as the one the webhook injects with.
    applied: bool,
}

/// Whether every component is available (the automatic rollout waits for a ready control plane, and for a webhook
/// that answers: the pods it restarts are created through it; `webhook` is absent only with `--webhook-url`).
fn components_ready(components: &ComponentsStatus) -> bool {
    components.webhook.as_ref().is_none_or(|w| w.ready > 0)
        && components.control_plane.as_ref().is_none_or(|c| c.ready >= c.desired)
        && components.gateways.iter().all(|g| g.ready >= g.desired)
        && components.addons.iter().all(|a| a.ready >= a.desired)
}

/// The data plane this MeshInstall serves, from the pod cache (`None` until it listed), with one step of the
/// automatic rollout when `rollout` gives who should hold each name (else the restarts in flight are kept as they
/// were). The report goes by where the API server sends new pods now (the live webhook configurations,
/// [`revisions::routing`]), not by who should hold each name: a paused holder keeps its configurations, and a new
/// holder's is not live at once. A restart needs both to name this install: it must not hand pods to a webhook that
/// injects them with another install, nor trust a cache of configurations that lags this install's own writes.
async fn data_plane(ctx: &Context, mi: &MeshInstall, rollout: Option<&Assignment>) -> Option<DataPlaneStatus> {
    // Each install as the webhook serves it: the spec last applied (`revisions::serving_spec`).
    let meshes: Vec<MeshInstall> = ctx
        .meshes
        .state()
        .iter()
        .map(|m| revisions::as_served(m.as_ref().clone()))
        .collect();
    let refs: Vec<&MeshInstall> = meshes.iter().collect();
    let configs = kinds::lookup("admissionregistration.k8s.io/v1", "MutatingWebhookConfiguration")
        .map(|k| ctx.caches.list(k))
        .unwrap_or_default();
    let assignment = &revisions::routing(configs.iter().map(|c| &c.metadata), &refs);
    let report = ctx
        .data_plane
        .report(&refs, assignment)?
        .remove(&mi.name_any())
        .unwrap_or_default();
    let previous = mi.status.as_ref().and_then(|s| s.data_plane.as_ref());
    let mut status = report.status.clone();
    if let Some(holding) = rollout {
        let step = crate::dataplane::step(ctx, mi, &[assignment, holding], &report, previous).await;
        status.restarting = step.restarting;
        status.stalled = step.stalled;
        status.held = step.held;
    } else if let Some(previous) = previous {
        status.restarting = previous.restarting.clone();
        status.stalled = previous.stalled.clone();
        status.held = previous.held.clone();
    }
    Some(status)
}

/// The MeshInstalls that may hold names (a revision, tags, `default`): not being deleted, not paused, with a spec
/// that renders. One that cannot serve must not take a name from one that does.
fn eligible(ctx: &Context, base: &RenderOptions) -> Vec<Arc<MeshInstall>> {
    ctx.meshes
        .state()
        .into_iter()
        .filter(|m| m.metadata.deletion_timestamp.is_none() && !paused(m) && render(m, base).is_ok())
        .collect()
}

async fn write_status(ctx: &Context, mi: &MeshInstall, outcome: &Outcome, extras: Extras) -> Result<bool, Error> {
    let components = match outcome {
        Outcome::InvalidSpec(_) => ComponentsStatus::default(),
        _ => readiness(ctx, mi),
    };
    let now = Time(k8s_openapi::jiff::Timestamp::now());
    let mut next = status::next(mi.status.as_ref(), mi.metadata.generation, outcome, components, &now);
    // What the webhook injects with (`revisions::serving_spec`): the spec applied, and the version rolled out, which
    // it falls back to while spec.version is unsupported (a status without `appliedSpec`).
    if extras.applied && revisions::check_version(&mi.spec.version).is_ok() {
        next.version = Some(mi.spec.version.clone());
        status::with_applied_spec(&mut next, &mi.spec, mi.metadata.generation);
    }
    if let Some(tags) = extras.tags {
        next.revision_tags = tags;
    }
    let next = status::with_data_plane(
        next,
        mi.status.as_ref(),
        extras.data_plane.map(|d| (d, mi.spec.data_plane.rollout)),
        mi.metadata.generation,
        &now,
    );
    let healthy = next.state == Some(mizzen::api::MeshState::Healthy);
    if !status::differs(mi.status.as_ref(), &next) {
        return Ok(healthy);
    }
    ctx.still_leading()?;
    let name = mi.name_any();
    let api: Api<MeshInstall> = Api::all(ctx.client.clone());
    // Fields the new status no longer has are removed (a plain merge patch of `next` would keep them), whether the
    // cached status or this process's last write has them (the cache may not show that write yet).
    let mut old = serde_json::to_value(&mi.status).unwrap_or(Value::Null);
    if let Some(last) = lock(&ctx.last_status).get(&mi.uid().unwrap_or_default()) {
        mizzen::status::add_missing_keys(&mut old, last);
    }
    let new = serde_json::to_value(&next).unwrap_or(Value::Null);
    let patch = json!({"status": mizzen::status::merge_patch(&old, &new)});
    api.patch_status(&name, &PatchParams::default(), &Patch::Merge(patch))
        .await
        .map_err(|source| Error::PatchStatus { name, source })?;
    lock(&ctx.last_status).insert(mi.uid().unwrap_or_default(), new);
    Ok(healthy)
}

/// Whether the webhook can answer: a ready replica of its Deployment, or, with `--webhook-url`, a TCP connection
/// to the URL's host and port.
async fn webhook_ready(ctx: &Context) -> bool {
    if let Some(url) = &ctx.options.webhook_url {
        let Some(addr) = url_authority(url) else {
            return false;
        };
        let connect = tokio::net::TcpStream::connect(addr);
        return matches!(tokio::time::timeout(Duration::from_secs(1), connect).await, Ok(Ok(_)));
    }
    webhook_deployment(ctx)
        .and_then(|d| d.status.as_ref().and_then(|s| s.ready_replicas))
        .is_some_and(|n| n > 0)
}

/// The webhook's Deployment in the operator's namespace, from its watch cache.
fn webhook_deployment(ctx: &Context) -> Option<Arc<Deployment>> {
    let key = kube::runtime::reflector::ObjectRef::new(WEBHOOK_DEPLOYMENT).within(&ctx.options.namespace);
    ctx.webhook.get(&key)
}

/// `host:port` of an https URL (port 443 when absent).
pub(crate) fn url_authority(url: &str) -> Option<String> {
    let rest = url.strip_prefix("https://")?;
    let authority = rest.split('/').next().filter(|a| !a.is_empty())?;
    let has_port = match authority.strip_prefix('[') {
        Some(v6) => v6.split_once(']').is_some_and(|(_, after)| after.starts_with(':')),
        None => authority.contains(':'),
    };
    Some(if has_port {
        authority.to_owned()
    } else {
        format!("{authority}:443")
    })
}

/// Reconciles one MeshInstall.
pub async fn reconcile(mi: Arc<MeshInstall>, ctx: Arc<Context>) -> Result<Action, Error> {
    // A failing MeshInstall waits out its backoff whatever triggers it (children's or shared objects' events),
    // unless its spec changed.
    // A replica whose lease may have passed to another (its renewal is overdue, say after a freeze) does not even
    // start: only one replica reconciles at a time.
    ctx.still_leading()?;
    let uid = mi.uid().unwrap_or_default();
    tracing::debug!(meshinstall = %mi.name_any(), "reconcile");
    let pending = lock(&ctx.failures)
        .get(&uid)
        .filter(|f| f.version == user_version(&mi))
        .map(|f| f.retry_at.saturating_duration_since(Instant::now()))
        .filter(|wait| !wait.is_zero());
    if let Some(wait) = pending {
        return Ok(Action::requeue(wait));
    }
    let started = Instant::now();
    let result = reconcile_inner(&mi, &ctx).await;
    ctx.metrics.observe_reconcile(started.elapsed(), result.is_ok());
    if result.is_ok() {
        lock(&ctx.failures).remove(&uid);
    }
    // MeshInstalls that are gone leave nothing behind.
    let live: BTreeSet<String> = ctx.meshes.state().iter().filter_map(|m| m.uid()).collect();
    lock(&ctx.failures).retain(|uid, _| live.contains(uid));
    result
}

async fn reconcile_inner(mi: &MeshInstall, ctx: &Context) -> Result<Action, Error> {
    let name = mi.name_any();
    if mi.metadata.deletion_timestamp.is_some() {
        // Being deleted: the garbage collector removes the children (in the foreground case before the
        // MeshInstall goes); applying now would recreate what it just deleted.
        tracing::debug!(meshinstall = %name, "being deleted; nothing to do");
        return Ok(Action::await_change());
    }
    // Before any status: readiness is read from the caches, and empty ones (a restart, a new leader) would flip a
    // paused install's Ready to False and back; when they do not fill, the reconcile fails and is retried.
    ctx.caches.wait_ready(CACHE_SYNC).await?;
    // The webhook Deployment's cache too: its readiness is part of the status and gates the automatic rollout.
    if ctx.options.webhook_url.is_none() {
        match tokio::time::timeout(CACHE_SYNC, ctx.webhook.wait_until_ready()).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => return Err(Error::CacheSync(e.to_string())),
            Err(_) => {
                return Err(Error::CacheSync(format!(
                    "the webhook Deployment's watch did not list within {}s",
                    CACHE_SYNC.as_secs()
                )));
            }
        }
    }
    if paused(mi) {
        let extras = Extras {
            data_plane: data_plane(ctx, mi, None).await,
            ..Extras::default()
        };
        write_status(ctx, mi, &Outcome::Paused, extras).await?;
        return Ok(Action::await_change());
    }
    let ca_bundle = match ctx.ca_bundle.wait(Duration::from_secs(30)).await {
        Ok(bundle) => bundle,
        Err(error) => {
            // Said in the status: the keeper's failure, such as a CA Secret it cannot use, is for the user to fix.
            if let Err(status_error) =
                write_status(ctx, mi, &Outcome::Failed(error.to_string()), Extras::default()).await
            {
                tracing::warn!(error = %status_error, "could not report the failure in the status");
            }
            return Err(error);
        }
    };
    tracing::debug!(meshinstall = %name, "caches listed, webhook CA known");
    // The keeper keeps the bundle it published when a pass fails, such as on a CA Secret it cannot use: say why on
    // every MeshInstall, whose webhook configurations trust that CA.
    if let Some(failure) = ctx.ca_bundle.failure() {
        ctx.publish(mi, EventType::Warning, "WebhookCertificate", failure).await;
    }
    let base = RenderOptions {
        operator_namespace: ctx.options.namespace.clone(),
        webhook_url: ctx.options.webhook_url.clone(),
        ca_bundle: Some(ca_bundle),
        skip_istio_crds: true,
        holdings: None,
    };
    let all = ctx.meshes.state();
    let serving = eligible(ctx, &base);
    let assignment = revisions::assign_among(serving.iter().map(AsRef::as_ref), all.iter().map(AsRef::as_ref));
    let holdings = assignment.of(&name);
    let options = options_for(&base, &assignment, mi);
    let mut desired = match render(mi, &options) {
        Ok(d) => d,
        Err(invalid) => {
            let message = invalid.to_string();
            ctx.publish(mi, EventType::Warning, "InvalidSpec", message.clone())
                .await;
            let extras = Extras {
                data_plane: data_plane(ctx, mi, None).await,
                ..Extras::default()
            };
            write_status(ctx, mi, &Outcome::InvalidSpec(message), extras).await?;
            // The spec must change before anything can happen (and a change triggers a reconcile).
            return Ok(Action::await_change());
        }
    };
    // The webhook configurations another install would take over if this one went are owned by it too, so that the
    // garbage collector keeps them until it has.
    let heirs: BTreeMap<String, &MeshInstall> =
        revisions::heirs(serving.iter().map(AsRef::as_ref), all.iter().map(AsRef::as_ref), mi)
            .into_iter()
            .filter_map(|(config, heir)| {
                let heir = all.iter().find(|m| m.name_any() == heir)?;
                Some((config, heir.as_ref()))
            })
            .collect();
    mizzen::render::add_heirs(&mut desired, &heirs);
    let others = render_others(ctx, mi, &base, &assignment);
    let claims = claimed_by_older(ctx, mi, &others);
    let mut skip = BTreeSet::new();
    let mut conflicts = Vec::new();
    for o in &desired {
        let key = key_of(o);
        if let Some(other) = claims.get(&key) {
            if !shared(&key.0) {
                let object = if key.1.is_empty() {
                    format!("{} {}", key.0, key.2)
                } else {
                    format!("{} {}/{}", key.0, key.1, key.2)
                };
                conflicts.push(format!("{object} belongs to MeshInstall {other}"));
            }
            skip.insert(key);
        }
    }
    // Install order: a new webhook configuration (the revision's or a tag's) only once the webhook can answer.
    let mut waiting_for_webhook = false;
    let mut ready: Option<bool> = None;
    for mwc in desired.iter().filter(|o| o["kind"] == "MutatingWebhookConfiguration") {
        let key = key_of(mwc);
        if skip.contains(&key) {
            continue;
        }
        let exists = kinds::lookup("admissionregistration.k8s.io/v1", &key.0)
            .and_then(|k| ctx.caches.get(k, None, &key.2))
            .is_some();
        if exists {
            continue;
        }
        let webhook_up = match ready {
            Some(up) => up,
            None => *ready.insert(webhook_ready(ctx).await),
        };
        if !webhook_up {
            waiting_for_webhook = true;
            skip.insert(key);
        }
    }
    // Objects an older MeshInstall renders are not pruned either: they are not this one's to delete.
    let keep: Vec<Value> = desired.iter().filter(|o| !skip.contains(&key_of(o))).cloned().collect();
    // Istio's CRDs are applied by the oldest MeshInstall whose spec renders.
    let oldest = !others
        .iter()
        .any(|(other, objects)| older(other, mi) && objects.is_some() && !paused(other));
    let mut done = Applied::default();
    if oldest {
        let crds = apply_istio_crds(ctx, mi).await;
        done.written.extend(crds.written);
        done.errors.extend(crds.errors);
    }
    let applied = apply(ctx, mi, &keep).await;
    done.written.extend(applied.written);
    done.not_ours.extend(applied.not_ours);
    done.errors.extend(applied.errors);
    // Another replica may lead by now: nothing more is written (no prune from a stale view, no status).
    if done.errors.iter().any(|e| matches!(e, Error::LeadershipLost)) {
        return Err(Error::LeadershipLost);
    }
    // Pruning is by owner UID, so it is safe even when some objects could not be applied.
    let Pruned {
        deleted: pruned,
        errors: prune_errors,
        deferred,
    } = prune(ctx, mi, &desired, &others, &assignment).await;
    if prune_errors.iter().any(|e| matches!(e, Error::LeadershipLost)) {
        return Err(Error::LeadershipLost);
    }
    // What the webhook injects with follows once every object took the spec (a stale object that could not be
    // deleted does not hold it back).
    let applied_whole = done.errors.is_empty() && done.not_ours.is_empty() && conflicts.is_empty();
    done.errors.extend(prune_errors);
    ctx.metrics.objects_applied(done.written.len());
    ctx.metrics.objects_pruned(pruned.len());
    if !done.written.is_empty() {
        ctx.publish(
            mi,
            EventType::Normal,
            "Applied",
            format!("applied {}", done.written.join(", ")),
        )
        .await;
    }
    if !pruned.is_empty() {
        ctx.publish(
            mi,
            EventType::Normal,
            "Pruned",
            format!("deleted {}", pruned.join(", ")),
        )
        .await;
    }
    if !done.errors.is_empty() {
        let error = Error::many(done.errors);
        ctx.publish(mi, EventType::Warning, "ApplyFailed", error.to_string())
            .await;
        let extras = Extras {
            tags: Some(holdings.tags.clone()),
            data_plane: data_plane(ctx, mi, None).await,
            applied: applied_whole,
        };
        if let Err(status_error) = write_status(ctx, mi, &Outcome::Failed(error.to_string()), extras).await {
            tracing::warn!(error = %status_error, "could not report the failure in the status");
        }
        return Err(error);
    }
    conflicts.extend(done.not_ours.iter().map(|o| {
        format!("{o} exists and is not mizzen's (annotate the MeshInstall {ADOPT_ANNOTATION}=true to take it over)")
    }));
    // Objects left to another install or to nobody of mizzen's (istiod's, a gateway's) keep the last applied spec
    // for the webhook (`applied_whole`); names held elsewhere (a tag, a blocked revision) skip only webhook
    // configurations.
    conflicts.extend(holdings.conflicts.iter().cloned());
    let outcome = if conflicts.is_empty() {
        if waiting_for_webhook {
            Outcome::WaitingForWebhook
        } else {
            Outcome::Applied
        }
    } else {
        let message = conflicts.join("; ");
        ctx.publish(mi, EventType::Warning, "Conflict", message.clone()).await;
        Outcome::Conflict(message)
    };
    let applied = done.written;
    // Proxies are restarted only into a control plane that runs: everything applied and available. (A webhook
    // configuration just deleted, or one waiting for a successor, may still route pods here in the caches: a
    // restart also needs the should-hold assignment to name this install.)
    // And only once the status the webhook reads says this spec (written by an earlier reconcile, whose write wakes
    // the next): the report judges pods by the spec served, the restarts name this one.
    let served = status::serves(mi.status.as_ref(), &mi.spec, mi.metadata.generation);
    let rollout = outcome == Outcome::Applied && applied.is_empty() && served && components_ready(&readiness(ctx, mi));
    let dp = data_plane(ctx, mi, rollout.then_some(&assignment)).await;
    let rolling = dp.as_ref().is_some_and(|d| !d.restarting.is_empty());
    let extras = Extras {
        tags: Some(holdings.tags.clone()),
        data_plane: dp,
        applied: applied_whole,
    };
    let healthy = write_status(ctx, mi, &outcome, extras).await?;
    if (waiting_for_webhook && ctx.options.webhook_url.is_some()) || deferred {
        // An out-of-cluster webhook has no watch to wake us, and a successor's webhook configuration may come
        // from another reconcile: look again soon.
        return Ok(Action::requeue(WEBHOOK_POLL));
    }
    Ok(Action::requeue(if rolling {
        ROLLOUT_POLL
    } else if healthy && applied.is_empty() {
        STEADY_REQUEUE
    } else {
        PROGRESS_REQUEUE
    }))
}

/// The wait before retrying a MeshInstall that failed `failures` times in a row.
pub fn backoff(failures: u32) -> Duration {
    let factor = 1u32 << failures.saturating_sub(1).min(16);
    FIRST_BACKOFF.saturating_mul(factor).min(MAX_BACKOFF)
}

/// Failures retry with exponential backoff per MeshInstall (reset by the next success).
pub fn error_policy(mi: Arc<MeshInstall>, error: &Error, ctx: Arc<Context>) -> Action {
    let (failures, wait) = {
        let mut all = lock(&ctx.failures);
        let entry = all.entry(mi.uid().unwrap_or_default()).or_insert(Failures {
            count: 0,
            retry_at: Instant::now(),
            version: user_version(&mi),
        });
        // A new spec or new annotations start a new run.
        if entry.version != user_version(&mi) {
            entry.count = 0;
            entry.version = user_version(&mi);
        }
        entry.count = entry.count.saturating_add(1);
        // An error only a change can fix (RBAC, an immutable field) starts further out.
        let wait = if error.is_persistent() {
            backoff(entry.count.saturating_add(PERSISTENT_HEAD_START))
        } else {
            backoff(entry.count)
        };
        entry.retry_at = Instant::now() + wait;
        (entry.count, wait)
    };
    tracing::warn!(meshinstall = %mi.name_any(), %error, failures, retry_in = ?wait, persistent = error.is_persistent(), "reconcile failed");
    Action::requeue(wait)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_from_seconds_to_minutes() {
        let waits: Vec<u64> = (1..=10).map(|n| backoff(n).as_secs()).collect();
        assert_eq!(waits, [2, 4, 8, 16, 32, 64, 128, 256, 300, 300]);
        assert_eq!(backoff(u32::MAX), MAX_BACKOFF);
    }

    #[test]
    fn webhook_urls_give_host_and_port() {
        assert_eq!(
            url_authority("https://127.0.0.1:8443/inject").as_deref(),
            Some("127.0.0.1:8443")
        );
        assert_eq!(
            url_authority("https://example.com/inject").as_deref(),
            Some("example.com:443")
        );
        assert_eq!(
            url_authority("https://[::1]:9443/inject").as_deref(),
            Some("[::1]:9443")
        );
        assert_eq!(url_authority("https://[::1]/inject").as_deref(), Some("[::1]:443"));
        assert_eq!(url_authority("http://example.com/"), None);
    }

    #[test]
    fn older_is_by_creation_then_name() {
        let mi = |name: &str, secs: i64| {
            let spec = serde_json::from_value(json!({"version": "1.28.0"})).unwrap();
            let mut m = MeshInstall::new(name, spec);
            m.metadata.creation_timestamp = Some(Time(k8s_openapi::jiff::Timestamp::from_second(secs).unwrap()));
            m
        };
        assert!(older(&mi("b", 1), &mi("a", 2)));
        assert!(older(&mi("a", 1), &mi("b", 1)));
        assert!(!older(&mi("b", 1), &mi("a", 1)));
    }
}
