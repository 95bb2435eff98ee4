//! Kubernetes Events about injection decisions, published off the request path: `Injected`,
//! `InjectionSkipped` and `InjectionRefused` on the pod's workload, so `kubectl describe deploy` shows why.
//! Bounded and rate-limited: a full queue drops events rather than slowing admission.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::batch::v1::CronJob;
use k8s_openapi::api::core::v1::ObjectReference;
use kube::api::{Patch, PatchParams, PostParams};
use kube::{Api, Client};
use mizzen::admission::{Outcome, Request};
use mizzen::events::{Occurrence, Publish, Reporter, Series};
use mizzen::inject::Workload;
use tokio::sync::mpsc;

/// Events with the same workload and reason are published at most this often.
const MIN_INTERVAL: Duration = Duration::from_secs(60);
/// Events waiting to be published; more are dropped.
const QUEUE: usize = 1024;

/// One decision to report.
#[derive(Debug, Clone)]
pub struct Decision {
    /// The workload the pod belongs to.
    pub workload: Workload,
    /// The pod's direct controller (`apiVersion`, `kind`, `name`, `uid`), if any.
    pub owner: Option<(String, String, String, String)>,
    /// What was decided.
    pub outcome: Outcome,
    /// Istio's warning about the pod's `sidecar.istio.io/inject` value, if any (the same one `check-inject` shows).
    pub warning: Option<String>,
}

impl Decision {
    /// Builds a decision about a review's pod.
    pub fn new(request: &Request, outcome: Outcome) -> Self {
        let (workload, owner, pod_metadata) = (request.workload(), request.pod_owner(), request.pod_metadata());
        Self {
            workload,
            owner,
            outcome,
            warning: mizzen::inject::decision::inject_warning(pod_metadata),
        }
    }
}

/// Where decisions go.
#[derive(Debug, Clone)]
pub struct EventSink {
    tx: Option<mpsc::Sender<Decision>>,
}

impl EventSink {
    /// A sink that publishes nothing (no cluster).
    pub fn disabled() -> Self {
        Self { tx: None }
    }

    /// Starts the publisher.
    pub fn spawn(client: Client, reporter: Reporter) -> Self {
        let (tx, rx) = mpsc::channel(QUEUE);
        tokio::spawn(publish(client, reporter, rx));
        Self { tx: Some(tx) }
    }

    /// Whether decisions are published at all (there is a cluster).
    pub fn is_enabled(&self) -> bool {
        self.tx.is_some()
    }

    /// Queues a decision; never waits.
    pub fn send(&self, decision: Decision) {
        if let Some(tx) = &self.tx
            && tx.try_send(decision).is_err()
        {
            tracing::debug!("event queue full; dropping an injection event");
        }
    }
}

fn object_ref(
    api_version: String,
    kind: String,
    name: String,
    namespace: Option<String>,
    uid: String,
) -> ObjectReference {
    ObjectReference {
        api_version: Some(api_version),
        kind: Some(kind),
        name: Some(name),
        namespace,
        uid: Some(uid),
        ..Default::default()
    }
}

async fn reference(client: &Client, d: &Decision) -> Option<ObjectReference> {
    let w = &d.workload;
    let (owner_api, owner_kind, owner_name, owner_uid) = d.owner.clone()?;
    let namespace = Some(w.namespace.clone()).filter(|n| !n.is_empty());
    // The pod's direct owner is the workload itself (DaemonSet, StatefulSet, Job, …).
    if owner_kind == w.kind && owner_name == w.name {
        return Some(object_ref(owner_api, owner_kind, owner_name, namespace, owner_uid));
    }
    // The workload is one level up (Deployment over ReplicaSet, CronJob over Job): look its UID up, so
    // `kubectl describe` finds the Event; fall back to the direct owner.
    let ns = w.namespace.as_str();
    let uid = match w.kind.as_str() {
        "Deployment" => Api::<Deployment>::namespaced(client.clone(), ns)
            .get_opt(&w.name)
            .await
            .ok()
            .flatten()
            .and_then(|o| o.metadata.uid),
        "CronJob" => Api::<CronJob>::namespaced(client.clone(), ns)
            .get_opt(&w.name)
            .await
            .ok()
            .flatten()
            .and_then(|o| o.metadata.uid),
        _ => None,
    };
    Some(match uid {
        Some(uid) => object_ref(w.api_version.clone(), w.kind.clone(), w.name.clone(), namespace, uid),
        None => object_ref(owner_api, owner_kind, owner_name, namespace, owner_uid),
    })
}

async fn publish(client: Client, reporter: Reporter, mut rx: mpsc::Receiver<Decision>) {
    let mut recorder = Series::new(reporter);
    let mut last: HashMap<(String, String), Instant> = HashMap::new();
    while let Some(d) = rx.recv().await {
        let (refused, reason) = match &d.outcome {
            Outcome::Injected(_) => (false, "Injected"),
            Outcome::Skipped(_) => (false, "InjectionSkipped"),
            Outcome::Denied(_) => (true, "InjectionRefused"),
            Outcome::Ignored(_) | Outcome::Unserved(_) => continue,
        };
        let key = (
            format!("{}/{}/{}", d.workload.namespace, d.workload.kind, d.workload.name),
            reason.to_owned(),
        );
        let now = Instant::now();
        if last.get(&key).is_some_and(|t| now.duration_since(*t) < MIN_INTERVAL) {
            continue;
        }
        if last.len() > 10_000 {
            last.retain(|_, t| now.duration_since(*t) < MIN_INTERVAL);
        }
        last.insert(key, now);
        let Some(reference) = reference(&client, &d).await else {
            continue;
        };
        let warning = d.warning.as_deref().map(|w| format!(" ({w})")).unwrap_or_default();
        let note: String = format!("sidecar {}: {}{warning}", d.outcome.result(), d.outcome.reason())
            .chars()
            .take(1000)
            .collect();
        let occurrence = Occurrence {
            warning: refused,
            reason: reason.into(),
            note,
            action: "InjectSidecar".into(),
            regarding: reference,
            related: None,
        };
        send(&client, &mut recorder, &occurrence).await;
    }
}

/// Publishes an Event, counted in the series of an identical recent one (see [`mizzen::events`]).
async fn send(client: &Client, recorder: &mut Series, occurrence: &Occurrence) {
    // A second attempt when the event to count in is gone (the API server expires events): a new one.
    for _ in 0..2 {
        let publish = recorder.next(occurrence, k8s_openapi::jiff::Timestamp::now());
        let event = publish.event();
        let namespace = event.metadata.namespace.as_deref().unwrap_or("default");
        let api: Api<k8s_openapi::api::events::v1::Event> = Api::namespaced(client.clone(), namespace);
        let sent = match &publish {
            Publish::Patch(event) => {
                let name = event.metadata.name.as_deref().unwrap_or_default();
                let series = serde_json::json!({"series": event.series});
                api.patch(name, &PatchParams::default(), &Patch::Merge(&series))
                    .await
                    .map(drop)
            }
            Publish::Create(event) => api.create(&PostParams::default(), event).await.map(drop),
        };
        match sent {
            Ok(()) => return recorder.sent(occurrence, publish),
            Err(kube::Error::Api(e)) if e.code == 404 && matches!(publish, Publish::Patch(_)) => {
                recorder.forget(occurrence);
            }
            Err(error) => return tracing::debug!(%error, "could not publish an injection event"),
        }
    }
}
