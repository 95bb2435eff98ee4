//! Wiring: the MeshInstall controller with its child watches and the TLS keeper ([`run`]), and the whole process
//! around it — admin port, leader election, shutdown ([`operate`]).

use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use futures::StreamExt;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::coordination::v1::Lease;
use kube::api::{Api, DynamicObject};
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::{Controller, WatchStreamExt, watcher};
use kube::{Client, ResourceExt};
use mizzen::MeshInstall;
use mizzen::render::OWNER_LABEL;

use crate::Error;
use crate::cache::Caches;
use crate::dataplane::DataPlaneCache;
use crate::kinds::ManagedKind;
use crate::leader::{Elector, Fence, Timings};
use crate::metrics::Metrics;
use crate::reconcile::{Context, Views, WEBHOOK_DEPLOYMENT, error_policy, reconcile};
use crate::tls::Keeper;

/// The leader-election Lease, in the operator's namespace.
pub const LEASE: &str = "mizzen-operator";

/// Operator settings.
#[derive(Debug, Clone, Default)]
pub struct Options {
    /// The operator's own namespace (TLS Secrets, Lease).
    pub namespace: String,
    /// Point the MutatingWebhookConfiguration at this URL instead of the Service.
    pub webhook_url: Option<String>,
    /// Also write the webhook's serving certificate here.
    pub webhook_tls_dir: Option<PathBuf>,
    /// Who this replica is (Events, the Lease).
    pub identity: Option<String>,
    /// Reconcile only MeshInstalls matching this label selector (sharding; tests).
    pub meshinstall_selector: Option<String>,
    /// Set by leader election: writes stop when the lease may have passed to another replica.
    pub fence: Arc<Fence>,
}

/// MeshInstalls a child's change concerns: its owner (by label, as a cluster-scoped reference), or every
/// MeshInstall for shared objects (Istio's CRDs, the mesh namespace).
fn concerned(object: &DynamicObject, kind: &ManagedKind, meshes: &Store<MeshInstall>) -> Vec<ObjectRef<MeshInstall>> {
    // A webhook configuration's change can concern its successor too (a revision tag or `default` that moved).
    if kind.kind == "MutatingWebhookConfiguration" {
        return meshes.state().iter().map(|m| ObjectRef::from_obj(m.as_ref())).collect();
    }
    if let Some(owner) = object.labels().get(OWNER_LABEL) {
        // Only MeshInstalls this operator reconciles (with a selector, others' children are not ours to queue).
        let owner = ObjectRef::new(owner);
        return meshes.get(&owner).map(|_| owner).into_iter().collect();
    }
    let namespace = (kind.kind == "Namespace").then(|| object.name_any());
    meshes
        .state()
        .iter()
        .filter(|m| namespace.as_ref().is_none_or(|ns| *ns == m.spec.namespace))
        .map(|m| ObjectRef::from_obj(m.as_ref()))
        .collect()
}

/// MeshInstalls whose generation, annotations or deletion changed (not their status).
fn spec_changes(
    api: Api<MeshInstall>,
) -> impl futures::Stream<Item = Result<MeshInstall, watcher::Error>> + Send + 'static {
    use std::collections::HashMap;
    use std::hash::{Hash, Hasher};
    let mut seen: HashMap<String, u64> = HashMap::new();
    watcher::watcher(api, watcher::Config::default())
        .default_backoff()
        .filter_map(move |event| {
            let out = match event {
                Ok(watcher::Event::Apply(mi) | watcher::Event::InitApply(mi)) => {
                    let mut h = std::collections::hash_map::DefaultHasher::new();
                    (
                        mi.metadata.generation,
                        mi.annotations(),
                        mi.metadata.deletion_timestamp.is_some(),
                    )
                        .hash(&mut h);
                    let key = mi.uid().unwrap_or_default();
                    (seen.insert(key, h.finish()) != Some(h.finish())).then_some(Ok(mi))
                }
                Ok(watcher::Event::Delete(mi)) => {
                    seen.remove(&mi.uid().unwrap_or_default());
                    Some(Ok(mi))
                }
                Ok(watcher::Event::Init | watcher::Event::InitDone) => None,
                Err(e) => Some(Err(e)),
            };
            futures::future::ready(out)
        })
}

/// Runs the controller and the TLS keeper until `shutdown` resolves.
pub async fn run(
    client: Client,
    options: Options,
    metrics: Arc<Metrics>,
    shutdown: impl Future<Output = ()> + Send + Sync + 'static,
) {
    let (caches, streams) = Caches::new(&client);
    let (keeper, ca_bundle) = Keeper::new(
        client.clone(),
        &options.namespace,
        options.webhook_url.as_deref(),
        options.webhook_tls_dir.clone(),
        caches.clone(),
    );
    let keeper = keeper.fenced(options.fence.clone());
    let mut config = watcher::Config::default();
    if let Some(selector) = &options.meshinstall_selector {
        config = config.labels(selector);
    }
    let mut controller = Controller::new(Api::<MeshInstall>::all(client.clone()), config);
    let meshes = controller.store();
    for (kind, changes) in streams {
        let meshes = meshes.clone();
        controller = controller.watches_stream_with(
            changes,
            move |o: DynamicObject| concerned(&o, kind, &meshes),
            kind.api_resource(),
        );
    }
    // A new CA must reach every MeshInstall's webhook configuration.
    controller = controller.reconcile_all_on(ca_bundle.changes());
    // Injected pods and namespaces' injection labels feed every MeshInstall's data plane report.
    let data_plane = Arc::new(DataPlaneCache::default());
    controller = controller.reconcile_all_on(data_plane.watch(&client));
    // One MeshInstall's spec decides what the others hold (revision tags, the `default` name, conflicts): a change
    // of its spec or annotations, or its deletion, concerns every other one. Status writes do not.
    let all_meshes = meshes.clone();
    controller = controller.watches_stream(
        spec_changes(Api::<MeshInstall>::all(client.clone())),
        move |changed: MeshInstall| {
            all_meshes
                .state()
                .iter()
                .filter(|m| m.uid() != changed.uid())
                .map(|m| ObjectRef::from_obj(m.as_ref()))
                .collect::<Vec<_>>()
        },
    );
    // The webhook Deployment's readiness gates new webhook configurations (install order).
    let webhook_writer = reflector::store::Writer::<Deployment>::default();
    let webhook = webhook_writer.as_reader();
    let webhook_changes = watcher::watcher(
        Api::<Deployment>::namespaced(client.clone(), &options.namespace),
        watcher::Config::default().fields(&format!("metadata.name={WEBHOOK_DEPLOYMENT}")),
    )
    .default_backoff()
    .reflect(webhook_writer)
    .touched_objects();
    let all = meshes.clone();
    controller = controller.watches_stream(webhook_changes, move |_: Deployment| {
        all.state()
            .iter()
            .map(|m| ObjectRef::from_obj(m.as_ref()))
            .collect::<Vec<_>>()
    });
    let views = Views {
        caches,
        meshes,
        webhook,
        data_plane,
    };
    let ctx = Arc::new(Context::new(client, options, views, ca_bundle, metrics));
    // Aborted with this function, even when the function itself is aborted (the guard is dropped then).
    struct AbortOnDrop(tokio::task::JoinHandle<()>);
    impl Drop for AbortOnDrop {
        fn drop(&mut self) {
            self.0.abort();
        }
    }
    let _keeper = AbortOnDrop(tokio::spawn(keeper.run()));
    controller
        .graceful_shutdown_on(shutdown)
        .run(reconcile, error_policy, ctx)
        .for_each(|result| async move {
            match result {
                Ok((object, _)) => tracing::debug!(meshinstall = %object.name, "reconciled"),
                // Reconcile failures are logged by the error policy; anything else (a watch, the queue) here.
                Err(kube::runtime::controller::Error::ReconcilerFailed(..)) => {}
                Err(error) => tracing::warn!(%error, "controller error"),
            }
        })
        .await;
}

/// Process settings beyond [`Options`].
#[derive(Debug, Clone)]
pub struct Process {
    /// Admin listener.
    pub admin_listen: SocketAddr,
    /// Leader-election timings.
    pub timings: Timings,
}

/// The operator process: admin port, leader election, controller; returns on SIGTERM/Ctrl-C (after releasing
/// the lease) or with an error when leadership is lost (the pod restarts and rejoins the election).
pub async fn operate(config: kube::Config, mut options: Options, process: Process) -> Result<(), Error> {
    let metrics = Arc::new(Metrics::default());
    let counted = metrics.clone();
    // Leader election has a client of its own, so /metrics counts what reconciling costs.
    let lease_client = Client::try_from(config.clone()).map_err(|source| Error::Client { source })?;
    let client = kube::client::ClientBuilder::try_from(config)
        .map_err(|source| Error::Client { source })?
        .with_layer(&tower::util::MapRequestLayer::new(
            move |req: http::Request<kube::client::Body>| {
                counted.api_request(req.method().as_str());
                req
            },
        ))
        .build();
    let ready = Arc::new(AtomicBool::new(false));
    crate::admin::serve(process.admin_listen, metrics.clone(), ready.clone())
        .await
        .map_err(|source| Error::Bind {
            what: "--admin-listen",
            addr: process.admin_listen,
            source,
        })?;
    let identity = options.identity.clone().unwrap_or_else(crate::leader::identity);
    options.identity = Some(identity.clone());
    let elector = Elector::new(
        Api::<Lease>::namespaced(lease_client, &options.namespace),
        LEASE,
        identity,
        process.timings,
        options.fence.clone(),
    );
    ready.store(true, Ordering::Release);
    let signal = shutdown_signal();
    tokio::pin!(signal);
    let mut leadership = tokio::select! {
        l = elector.lead() => l,
        _ = &mut signal => return Ok(()),
    };
    metrics.set_leader(true);
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let mut controller = tokio::spawn(run(client, options, metrics.clone(), async move {
        let _ = stop_rx.await;
    }));
    let lost = tokio::select! {
        _ = &mut signal => false,
        _ = leadership.lost() => true,
        ended = &mut controller => {
            // The controller stopped on its own (a panic in a reconcile, or a failure it could not survive): a
            // leader that reconciles nothing must not keep the lease. Exit so the pod restarts and another replica
            // (or this one) leads.
            tracing::error!(result = ?ended.err(), "the controller stopped; releasing the lease and exiting");
            metrics.set_leader(false);
            leadership.release().await;
            return Err(Error::ControllerStopped);
        }
    };
    if lost {
        // Stop reconciling at once: another replica may acquire the lease shortly.
        controller.abort();
        // Requests in flight end with the task (their writes were fenced before they left).
        let _ = controller.await;
        metrics.set_leader(false);
        return Err(Error::LeadershipLost);
    }
    tracing::info!("shutting down: finishing reconciles in flight");
    let _ = stop_tx.send(());
    // Reconciles in flight may finish, but not past the point where the lease may pass to another replica.
    let drained = tokio::select! {
        _ = &mut controller => true,
        _ = leadership.lost() => false,
        _ = tokio::time::sleep(process.timings.renew_deadline) => false,
    };
    if !drained {
        tracing::warn!("reconciles still running at the renew deadline; stopping them");
        controller.abort();
        let _ = controller.await;
    }
    metrics.set_leader(false);
    leadership.release().await;
    Ok(())
}

async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(mut term) => {
            tokio::select! {
                _ = ctrl_c => {},
                _ = term.recv() => {},
            }
        }
        Err(_) => {
            let _ = ctrl_c.await;
        }
    }
}
