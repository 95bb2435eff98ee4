//! The data plane: a cache of injected pods (only what the report needs of each) and of namespaces' injection
//! labels, fed by two watches that wake every MeshInstall's reconcile at most once a second; and the automatic
//! rollout that restarts outdated workloads (`spec.dataPlane.rollout: Automatic`).

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use futures::{Stream, StreamExt};
use k8s_openapi::api::core::v1::{Namespace, Pod};
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use kube::api::{Api, DynamicObject, ListParams, PartialObjectMeta, Patch, PatchParams};
use kube::runtime::WatchStreamExt;
use kube::runtime::events::EventType;
use kube::runtime::watcher::{self, Event as WatchEvent};
use kube::{Client, Resource, ResourceExt};
use mizzen::MeshInstall;
use mizzen::api::{DataPlaneStatus, HeldWorkload, RolloutMode, WorkloadRestart};
use mizzen::dataplane::{INJECTED_POD_LABEL, InjectedPod, Progress, Report, Workload, restartable, rollout_progress};
use mizzen::inject::annotations as ann;
use mizzen::revisions::Assignment;
use serde_json::{Value, json};

use crate::reconcile::Context;

/// A workload annotated so is never restarted by the automatic rollout.
pub const AUTO_RESTART_ANNOTATION: &str = "mizzen.io/auto-restart";
/// Set on a workload the rollout restarted: for which revision and image (a second restart for the same target
/// would loop; the rollout stalls instead).
pub const RESTARTED_FOR_ANNOTATION: &str = "mizzen.io/restarted-for";
/// The pod-template annotation `kubectl rollout restart` sets.
pub const RESTARTED_AT_ANNOTATION: &str = "kubectl.kubernetes.io/restartedAt";
/// Field manager of the restarts (not the apply manager: the workloads are the user's).
const RESTART_MANAGER: &str = "mizzen-operator-rollout";

/// Injected pods and namespace labels, kept by the watches.
#[derive(Debug, Default)]
pub struct DataPlaneCache {
    pods: RwLock<HashMap<(String, String), InjectedPod>>,
    namespaces: RwLock<BTreeMap<String, BTreeMap<String, String>>>,
    pods_synced: AtomicBool,
    namespaces_synced: AtomicBool,
    dirty: AtomicBool,
    /// The rollout's own record per MeshInstall (by UID): restarts in flight and a stall, as last decided here.
    rollouts: std::sync::Mutex<HashMap<String, Remembered>>,
    /// Workloads found not restartable, per MeshInstall, with when and why.
    held: std::sync::Mutex<HashMap<(String, Workload), (std::time::Instant, String)>>,
}

/// What a rollout step decided last, kept in memory.
#[derive(Debug, Clone, Default)]
pub struct Remembered {
    restarting: Vec<WorkloadRestart>,
    stalled: Option<WorkloadRestart>,
}

fn read<T>(lock: &RwLock<T>) -> std::sync::RwLockReadGuard<'_, T> {
    lock.read().unwrap_or_else(|e| e.into_inner())
}

fn write<T>(lock: &RwLock<T>) -> std::sync::RwLockWriteGuard<'_, T> {
    lock.write().unwrap_or_else(|e| e.into_inner())
}

/// The namespace labels injection looks at.
fn injection_labels(meta: &kube::api::ObjectMeta) -> BTreeMap<String, String> {
    meta.labels
        .iter()
        .flatten()
        .filter(|(k, _)| *k == ann::NAMESPACE_INJECTION || *k == ann::REVISION)
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect()
}

fn pod_key(pod: &Pod) -> (String, String) {
    (pod.namespace().unwrap_or_default(), pod.name_any())
}

impl DataPlaneCache {
    /// Whether both watches have listed once.
    pub fn synced(&self) -> bool {
        self.pods_synced.load(Ordering::Acquire) && self.namespaces_synced.load(Ordering::Acquire)
    }

    fn changed(&self) {
        self.dirty.store(true, Ordering::Release);
    }

    fn pod_event(&self, event: WatchEvent<Pod>, buffer: &mut HashMap<(String, String), InjectedPod>) {
        match event {
            WatchEvent::Init => buffer.clear(),
            WatchEvent::InitApply(pod) => {
                if let Some(p) = mizzen::dataplane::injected_pod(&pod) {
                    buffer.insert(pod_key(&pod), p);
                }
            }
            WatchEvent::InitDone => {
                *write(&self.pods) = std::mem::take(buffer);
                self.pods_synced.store(true, Ordering::Release);
                self.changed();
            }
            WatchEvent::Apply(pod) => {
                let key = pod_key(&pod);
                let next = mizzen::dataplane::injected_pod(&pod);
                let mut pods = write(&self.pods);
                let changed = match next {
                    Some(p) => pods.insert(key, p.clone()).as_ref() != Some(&p),
                    None => pods.remove(&key).is_some(),
                };
                if changed {
                    self.changed();
                }
            }
            WatchEvent::Delete(pod) => {
                if write(&self.pods).remove(&pod_key(&pod)).is_some() {
                    self.changed();
                }
            }
        }
    }

    fn namespace_event(
        &self,
        event: WatchEvent<PartialObjectMeta<Namespace>>,
        buffer: &mut BTreeMap<String, BTreeMap<String, String>>,
    ) {
        match event {
            WatchEvent::Init => buffer.clear(),
            WatchEvent::InitApply(ns) => {
                buffer.insert(ns.name_any(), injection_labels(&ns.metadata));
            }
            WatchEvent::InitDone => {
                *write(&self.namespaces) = std::mem::take(buffer);
                self.namespaces_synced.store(true, Ordering::Release);
                self.changed();
            }
            WatchEvent::Apply(ns) => {
                let labels = injection_labels(&ns.metadata);
                if write(&self.namespaces).insert(ns.name_any(), labels.clone()) != Some(labels) {
                    self.changed();
                }
            }
            WatchEvent::Delete(ns) => {
                if write(&self.namespaces).remove(&ns.name_any()).is_some() {
                    self.changed();
                }
            }
        }
    }

    /// A namespace's injection labels.
    pub fn namespace_labels(&self, namespace: &str) -> BTreeMap<String, String> {
        read(&self.namespaces).get(namespace).cloned().unwrap_or_default()
    }

    fn remember(&self, uid: &str, step: &Step) {
        let mut all = self.rollouts.lock().unwrap_or_else(|e| e.into_inner());
        all.insert(
            uid.to_owned(),
            Remembered {
                restarting: step.restarting.clone(),
                stalled: step.stalled.clone(),
            },
        );
    }

    fn remembered(&self, uid: &str) -> Remembered {
        let all = self.rollouts.lock().unwrap_or_else(|e| e.into_inner());
        all.get(uid).cloned().unwrap_or_default()
    }

    fn forget(&self, uid: &str) {
        self.rollouts.lock().unwrap_or_else(|e| e.into_inner()).remove(uid);
        self.held
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .retain(|(u, _), _| u != uid);
    }

    fn hold(&self, uid: &str, w: &Workload, reason: &str) {
        let mut held = self.held.lock().unwrap_or_else(|e| e.into_inner());
        held.retain(|_, (at, _)| at.elapsed() < HELD_RECHECK);
        held.insert(
            (uid.to_owned(), w.clone()),
            (std::time::Instant::now(), reason.to_owned()),
        );
    }

    fn held_recently(&self, uid: &str, w: &Workload) -> Option<String> {
        let held = self.held.lock().unwrap_or_else(|e| e.into_inner());
        held.get(&(uid.to_owned(), w.clone()))
            .filter(|(at, _)| at.elapsed() < HELD_RECHECK)
            .map(|(_, reason)| reason.clone())
    }

    /// Every MeshInstall's report, once both watches listed.
    pub fn report(&self, meshes: &[&MeshInstall], assignment: &Assignment) -> Option<BTreeMap<String, Report>> {
        if !self.synced() {
            return None;
        }
        let namespaces = read(&self.namespaces);
        let pods = read(&self.pods);
        Some(mizzen::dataplane::report(meshes, assignment, &namespaces, pods.values()).0)
    }

    /// Runs the two watches (until dropped) and yields `()` at most once a second after something the report
    /// reads changed: the controller reconciles every MeshInstall on it.
    pub fn watch(self: &Arc<Self>, client: &Client) -> impl Stream<Item = ()> + Send + 'static {
        let pods = {
            let cache = self.clone();
            let mut buffer = HashMap::new();
            watcher::watcher(
                Api::<Pod>::all(client.clone()),
                watcher::Config::default().labels(INJECTED_POD_LABEL),
            )
            .default_backoff()
            .for_each(move |event| {
                match event {
                    Ok(event) => cache.pod_event(event, &mut buffer),
                    Err(error) => tracing::warn!(%error, "pod watch failed; retrying"),
                }
                futures::future::ready(())
            })
        };
        let namespaces = {
            let cache = self.clone();
            let mut buffer = BTreeMap::new();
            watcher::watcher(
                Api::<PartialObjectMeta<Namespace>>::all(client.clone()),
                watcher::Config::default(),
            )
            .default_backoff()
            .for_each(move |event| {
                match event {
                    Ok(event) => cache.namespace_event(event, &mut buffer),
                    Err(error) => tracing::warn!(%error, "namespace watch failed; retrying"),
                }
                futures::future::ready(())
            })
        };
        let watches = tokio::spawn(async move {
            futures::join!(pods, namespaces);
        });
        let guard = Arc::new(AbortOnDrop(watches));
        let cache = self.clone();
        let ticks = tokio_stream_interval(Duration::from_secs(1));
        ticks.filter_map(move |_| {
            let _keep = &guard;
            let fire = cache.dirty.swap(false, Ordering::AcqRel);
            futures::future::ready(fire.then_some(()))
        })
    }
}

/// Aborts the task when the last holder goes.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

fn tokio_stream_interval(period: Duration) -> impl Stream<Item = ()> + Send + 'static {
    futures::stream::unfold(tokio::time::interval(period), |mut interval| async move {
        interval.tick().await;
        Some(((), interval))
    })
}

/// The workload kinds the rollout restarts, as dynamic API resources.
fn workload_api(client: &Client, w: &Workload) -> Option<Api<DynamicObject>> {
    let plural = match w.kind.as_str() {
        "Deployment" => "deployments",
        "StatefulSet" => "statefulsets",
        "DaemonSet" => "daemonsets",
        _ => return None,
    };
    let gvk = kube::api::GroupVersionKind::gvk("apps", "v1", &w.kind);
    let ar = kube::api::ApiResource::from_gvk_with_plural(&gvk, plural);
    Some(Api::namespaced_with(client.clone(), &w.namespace, &ar))
}

async fn get_workload(ctx: &Context, w: &Workload) -> Result<Option<Value>, String> {
    let Some(api) = workload_api(&ctx.client, w) else {
        return Ok(None);
    };
    match api.get_opt(&w.name).await {
        Ok(Some(o)) => serde_json::to_value(o).map(Some).map_err(|e| e.to_string()),
        Ok(None) => Ok(None),
        Err(e) => Err(format!("reading {w}: {e}")),
    }
}

fn restart_of(w: &Workload, at: &str) -> WorkloadRestart {
    WorkloadRestart {
        namespace: w.namespace.clone(),
        kind: w.kind.clone(),
        name: w.name.clone(),
        restarted_at: at.to_owned(),
        message: None,
    }
}

fn workload_of(r: &WorkloadRestart) -> Workload {
    Workload {
        namespace: r.namespace.clone(),
        kind: r.kind.clone(),
        name: r.name.clone(),
    }
}

fn seconds_since(rfc3339: &str) -> i64 {
    rfc3339
        .parse::<k8s_openapi::jiff::Timestamp>()
        .map(|t| k8s_openapi::jiff::Timestamp::now().as_second() - t.as_second())
        .unwrap_or(i64::MAX)
}

/// Whether a PodDisruptionBudget that selects the workload's pods currently allows no disruption; its name if so.
async fn blocked_by_pdb(ctx: &Context, w: &Workload, workload: &Value) -> Result<Option<String>, String> {
    let labels: BTreeMap<String, String> =
        serde_json::from_value(workload["spec"]["template"]["metadata"]["labels"].clone()).unwrap_or_default();
    let api: Api<PodDisruptionBudget> = Api::namespaced(ctx.client.clone(), &w.namespace);
    let pdbs = api
        .list(&ListParams::default())
        .await
        .map_err(|e| format!("listing PodDisruptionBudgets in {}: {e}", w.namespace))?;
    for pdb in pdbs {
        let Some(selector) = pdb.spec.as_ref().and_then(|s| s.selector.as_ref()) else {
            continue;
        };
        // An empty selector selects nothing for a PodDisruptionBudget (policy/v1).
        if selector.match_labels.as_ref().is_none_or(|m| m.is_empty())
            && selector.match_expressions.as_ref().is_none_or(|m| m.is_empty())
        {
            continue;
        }
        if !mizzen::inject::decision::selector_matches(selector, &labels) {
            continue;
        }
        if pdb.status.as_ref().is_some_and(|s| s.disruptions_allowed <= 0) {
            return Ok(Some(pdb.name_any()));
        }
    }
    Ok(None)
}

/// What a rollout step decided, for the status.
#[derive(Debug, Default)]
pub struct Step {
    /// Restarts still rolling out.
    pub restarting: Vec<WorkloadRestart>,
    /// A restart that stalls the rollout.
    pub stalled: Option<WorkloadRestart>,
    /// Outdated workloads left alone for now, and why.
    pub held: Vec<HeldWorkload>,
}

/// How long a workload found not restartable is taken as such without reading it again.
const HELD_RECHECK: Duration = Duration::from_secs(30);

fn held(w: &Workload, reason: String) -> HeldWorkload {
    HeldWorkload {
        namespace: w.namespace.clone(),
        kind: w.kind.clone(),
        name: w.name.clone(),
        reason,
    }
}

/// Why the automatic rollout must not restart this workload now, if it must not: opted out, an update strategy under
/// which a template change restarts nothing, or new pods that this install's webhook would not inject by any of
/// `assignments` (restarting would strip their sidecars or hand them to another install): first where the live
/// webhook configurations send them, then who should hold their name (the cache of configurations may lag this install's own
/// writes, such as a tag's configuration it just deleted).
fn not_restartable(
    w: &Workload,
    live: &Value,
    mi: &MeshInstall,
    assignments: &[&Assignment],
    namespace_labels: &BTreeMap<String, String>,
) -> Option<String> {
    let annotations = &live["metadata"]["annotations"];
    if annotations[AUTO_RESTART_ANNOTATION] == "false" {
        return Some(format!("annotated {AUTO_RESTART_ANNOTATION}: \"false\""));
    }
    let spec = &live["spec"];
    match w.kind.as_str() {
        "StatefulSet" | "DaemonSet" if spec["updateStrategy"]["type"] == "OnDelete" => {
            return Some("its updateStrategy is OnDelete: restart its pods by deleting them".into());
        }
        "StatefulSet"
            if spec["updateStrategy"]["rollingUpdate"]["partition"]
                .as_i64()
                .unwrap_or(0)
                > 0 =>
        {
            return Some("a rolling-update partition holds back some of its pods".into());
        }
        "Deployment" if spec["paused"] == true => return Some("its rollout is paused".into()),
        _ => {}
    }
    let labels: BTreeMap<String, String> =
        serde_json::from_value(spec["template"]["metadata"]["labels"].clone()).unwrap_or_default();
    let me = mi.name_any();
    let routing_labels = mizzen::dataplane::routing_labels(Some(&labels));
    assignments.iter().enumerate().find_map(|(i, assignment)| {
        match assignment.injector_of(namespace_labels, &routing_labels) {
            Some(injector) if injector == me => None,
            // The first assignment is the live configurations' routing, the others who should hold each name.
            Some(other) if i == 0 => Some(format!(
                "its new pods would be injected by MeshInstall {other}, not this one"
            )),
            Some(other) => Some(format!(
                "MeshInstall {other}, not this one, should hold the name its new pods would be sent to"
            )),
            None if i == 0 => Some(
                "its new pods would not be injected by this MeshInstall (no live webhook configuration routes its \
                 namespace's or its template's labels to exactly one MeshInstall: none selects them, or two \
                 configurations serve the same name)"
                    .into(),
            ),
            None => Some(
                "its new pods would get no sidecar (no MeshInstall holds the name its namespace's or its template's \
                 labels select)"
                    .into(),
            ),
        }
    })
}

/// One step of the automatic rollout for a MeshInstall: follow the restarts in flight, then restart the next
/// outdated workloads up to `maxConcurrent`. Manual mode forgets everything.
///
/// The restarts in flight are the status's and this process's own record of them (the status read from the cache
/// may not show the last write yet), so `maxConcurrent` holds even when reconciles come faster than the cache.
/// A workload is restarted only when each of `assignments` has this install inject its new pods.
pub async fn step(
    ctx: &Context,
    mi: &MeshInstall,
    assignments: &[&Assignment],
    report: &Report,
    previous: Option<&DataPlaneStatus>,
) -> Step {
    let spec = &mi.spec.data_plane;
    let uid = mi.uid().unwrap_or_default();
    if spec.rollout != RolloutMode::Automatic {
        ctx.data_plane.forget(&uid);
        return Step::default();
    }
    let deadline = i64::from(spec.progress_deadline_seconds);
    let outdated: BTreeMap<&Workload, &String> = report.outdated.iter().map(|(w, _, reason)| (w, reason)).collect();
    let remembered = ctx.data_plane.remembered(&uid);
    let mut step = Step {
        restarting: Vec::new(),
        stalled: previous.and_then(|p| p.stalled.clone()).or(remembered.stalled),
        held: Vec::new(),
    };
    let mut in_flight: Vec<WorkloadRestart> = previous.map(|p| p.restarting.clone()).unwrap_or_default();
    for r in remembered.restarting {
        if !in_flight.iter().any(|p| workload_of(p) == workload_of(&r)) {
            in_flight.push(r);
        }
    }
    // Restarts in flight.
    for r in in_flight {
        let w = workload_of(&r);
        let live = match get_workload(ctx, &w).await {
            Ok(Some(live)) => live,
            Ok(None) => continue, // deleted
            Err(error) => {
                tracing::warn!(%error, "following a restart");
                step.restarting.push(r);
                continue;
            }
        };
        match rollout_progress(&w.kind, &live) {
            Progress::Complete => {}
            Progress::Failed(why) => {
                step.stalled = Some(WorkloadRestart {
                    message: Some(format!("did not roll out: {why}")),
                    ..r
                });
            }
            Progress::Rolling if seconds_since(&r.restarted_at) > deadline => {
                step.stalled = Some(WorkloadRestart {
                    message: Some(format!("was not available within {deadline} s of its restart")),
                    ..r
                });
            }
            Progress::Rolling => step.restarting.push(r),
        }
    }
    // A stall lasts until its workload is no longer outdated (rolled out after all, fixed by hand, deleted).
    if let Some(stalled) = step.stalled.clone() {
        if outdated.contains_key(&workload_of(&stalled)) {
            if previous.and_then(|p| p.stalled.as_ref()) != Some(&stalled) {
                publish(
                    ctx,
                    mi,
                    EventType::Warning,
                    "RolloutStalled",
                    format!(
                        "{}/{}/{} {}; the automatic rollout waits until it is up to date",
                        stalled.namespace,
                        stalled.kind,
                        stalled.name,
                        stalled.message.as_deref().unwrap_or_default()
                    ),
                )
                .await;
            }
            ctx.data_plane.remember(&uid, &step);
            return step;
        }
        step.stalled = None;
    }
    let target = format!("{}@{}", mi.spec.revision_label(), mi.spec.proxy_image());
    let mut slots = usize::try_from(spec.max_concurrent)
        .unwrap_or(1)
        .saturating_sub(step.restarting.len());
    for (w, _, _) in &report.outdated {
        if step.held.len() >= mizzen::dataplane::LISTED_WORKLOADS && slots == 0 {
            break;
        }
        if !restartable(&w.kind) {
            step.held
                .push(held(w, format!("a {} is not restarted automatically", w.kind)));
            continue;
        }
        if step.restarting.iter().any(|r| workload_of(r) == *w) {
            continue;
        }
        if let Some(reason) = ctx.data_plane.held_recently(&uid, w) {
            step.held.push(held(w, reason));
            continue;
        }
        if slots == 0 {
            continue;
        }
        let live = match get_workload(ctx, w).await {
            Ok(Some(live)) => live,
            Ok(None) => continue,
            Err(error) => {
                tracing::warn!(%error, "reading an outdated workload");
                continue;
            }
        };
        let namespace_labels = ctx.data_plane.namespace_labels(&w.namespace);
        if let Some(reason) = not_restartable(w, &live, mi, assignments, &namespace_labels) {
            ctx.data_plane.hold(&uid, w, &reason);
            step.held.push(held(w, reason));
            continue;
        }
        if live["metadata"]["annotations"][RESTARTED_FOR_ANNOTATION] == target.as_str() {
            // Restarted for this very revision and image before, and still outdated: restarting again would loop.
            let at = live["spec"]["template"]["metadata"]["annotations"][RESTARTED_AT_ANNOTATION]
                .as_str()
                .unwrap_or_default();
            step.stalled = Some(WorkloadRestart {
                message: Some(format!(
                    "was restarted for {target} at {at} but its pods still run an older proxy"
                )),
                ..restart_of(w, at)
            });
            break;
        }
        if rollout_progress(&w.kind, &live) != Progress::Complete {
            step.held.push(held(w, "it is rolling out on its own".into()));
            continue; // look again later
        }
        match blocked_by_pdb(ctx, w, &live).await {
            Ok(None) => {}
            Ok(Some(pdb)) => {
                let reason = format!("PodDisruptionBudget {pdb} allows no disruption now");
                ctx.data_plane.hold(&uid, w, &reason);
                step.held.push(held(w, reason));
                continue;
            }
            Err(error) => {
                tracing::warn!(%error, "checking PodDisruptionBudgets");
                continue;
            }
        }
        if !ctx.options.fence.allows_writes() {
            break;
        }
        if restart(ctx, mi, w, &live, &target).await {
            step.restarting
                .push(restart_of(w, &k8s_openapi::jiff::Timestamp::now().to_string()));
            slots -= 1;
            // Remembered at once: the next step may come before the status write reaches the cache.
            ctx.data_plane.remember(&uid, &step);
        }
    }
    step.held.truncate(mizzen::dataplane::LISTED_WORKLOADS);
    ctx.data_plane.remember(&uid, &step);
    step
}

/// Restarts a workload as `kubectl rollout restart` does (and records why on it); whether it worked.
async fn restart(ctx: &Context, mi: &MeshInstall, w: &Workload, live: &Value, target: &str) -> bool {
    let now = k8s_openapi::jiff::Timestamp::now().to_string();
    let patch = json!({
        "metadata": {"annotations": {RESTARTED_FOR_ANNOTATION: target}},
        "spec": {"template": {"metadata": {"annotations": {RESTARTED_AT_ANNOTATION: now}}}},
    });
    let Some(api) = workload_api(&ctx.client, w) else {
        return false;
    };
    let params = PatchParams {
        field_manager: Some(RESTART_MANAGER.into()),
        ..Default::default()
    };
    match api.patch(&w.name, &params, &Patch::Merge(&patch)).await {
        Ok(_) => {
            tracing::info!(workload = %w, %target, "restarted to update its proxies");
            publish(
                ctx,
                mi,
                EventType::Normal,
                "Restarted",
                format!("restarted {w} so its pods run {target}"),
            )
            .await;
            let reference = k8s_openapi::api::core::v1::ObjectReference {
                api_version: Some("apps/v1".into()),
                kind: Some(w.kind.clone()),
                name: Some(w.name.clone()),
                namespace: Some(w.namespace.clone()),
                uid: live["metadata"]["uid"].as_str().map(str::to_owned),
                ..Default::default()
            };
            let occurrence = mizzen::events::Occurrence {
                warning: false,
                reason: "ProxyUpgrade".into(),
                note: format!("restarted by MeshInstall {} so its pods run {target}", mi.name_any()),
                action: "Restart".into(),
                regarding: reference,
                related: Some(mi.object_ref(&())),
            };
            ctx.send_event(&occurrence).await;
            true
        }
        Err(error) => {
            tracing::warn!(workload = %w, %error, "restart failed");
            publish(
                ctx,
                mi,
                EventType::Warning,
                "RestartFailed",
                format!("restarting {w}: {error}"),
            )
            .await;
            false
        }
    }
}

async fn publish(ctx: &Context, mi: &MeshInstall, type_: EventType, reason: &str, note: String) {
    ctx.publish(mi, type_, reason, note).await;
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn a_restart_needs_every_assignment_to_name_this_install() {
        let mesh = |name: &str| -> MeshInstall {
            serde_json::from_value(json!({"apiVersion": "mizzen.io/v1alpha1", "kind": "MeshInstall",
                "metadata": {"name": name}, "spec": {"revision": name}}))
            .unwrap()
        };
        let me = mesh("canary");
        let serving = |holder: Option<&str>| Assignment {
            serving: holder.map(|h| ("prod".to_owned(), h.to_owned())).into_iter().collect(),
            ..Assignment::default()
        };
        let w = Workload {
            namespace: "shop".into(),
            kind: "Deployment".into(),
            name: "web".into(),
        };
        let live = json!({"spec": {"template": {"metadata": {"labels": {"app": "web"}}}}});
        let labels = BTreeMap::from([("istio.io/rev".to_owned(), "prod".to_owned())]);
        let (mine, other, none) = (serving(Some("canary")), serving(Some("stable")), serving(None));
        assert_eq!(not_restartable(&w, &live, &me, &[&mine, &mine], &labels), None);
        // The live configurations still route to it (a cache behind its own prune), but the name is no one's now;
        // or the name is its own now, but the configuration is still another's.
        for (routing, holding) in [(&mine, &none), (&other, &mine), (&mine, &other), (&none, &mine)] {
            let reason = not_restartable(&w, &live, &me, &[routing, holding], &labels);
            assert!(reason.is_some(), "{:?} / {:?}", routing.serving, holding.serving);
        }
        assert_eq!(
            not_restartable(&w, &live, &me, &[&other, &mine], &labels).as_deref(),
            Some("its new pods would be injected by MeshInstall stable, not this one")
        );
        // Each refusal names what refused: the live configurations, or who should hold the name.
        let live_refusal = not_restartable(&w, &live, &me, &[&none, &mine], &labels).unwrap();
        assert!(
            live_refusal.contains("no live webhook configuration routes"),
            "{live_refusal}"
        );
        let holding_refusal = not_restartable(&w, &live, &me, &[&mine, &none], &labels).unwrap();
        assert!(
            holding_refusal.contains("no MeshInstall holds the name"),
            "{holding_refusal}"
        );
        assert_eq!(
            not_restartable(&w, &live, &me, &[&mine, &other], &labels).as_deref(),
            Some("MeshInstall stable, not this one, should hold the name its new pods would be sent to")
        );
    }
}
