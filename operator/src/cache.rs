//! Watch caches of what the operator manages: one reflector per kind, selecting only objects labelled
//! `app.kubernetes.io/managed-by=mizzen`, so unrelated Deployments or ConfigMaps in the cluster cost nothing. The
//! reconciler reads live objects from here instead of the API server.

use std::collections::HashMap;
use std::time::Duration;

use futures::{Stream, StreamExt, TryStreamExt};
use kube::api::{Api, DynamicObject, TypeMeta};
use kube::core::PartialObjectMeta;
use kube::runtime::WatchStreamExt;
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::watcher::{self, Event};
use kube::{Client, ResourceExt};
use std::sync::Arc;

use crate::kinds::{MANAGED, ManagedKind};
use crate::{Error, MANAGED_SELECTOR};

/// One store per managed kind.
#[derive(Clone)]
pub struct Caches {
    stores: HashMap<&'static str, (&'static ManagedKind, Store<DynamicObject>)>,
}

/// A stream of changed (or deleted) objects of one kind, which feeds its store as it is polled.
pub type Changes = std::pin::Pin<Box<dyn Stream<Item = Result<DynamicObject, watcher::Error>> + Send>>;

fn from_meta(event: Event<PartialObjectMeta<DynamicObject>>, kind: &ManagedKind) -> Event<DynamicObject> {
    let object = |m: PartialObjectMeta<DynamicObject>| DynamicObject {
        types: Some(TypeMeta {
            api_version: kind.api_version.into(),
            kind: kind.kind.into(),
        }),
        metadata: m.metadata,
        data: serde_json::Value::Null,
    };
    match event {
        Event::Apply(m) => Event::Apply(object(m)),
        Event::Delete(m) => Event::Delete(object(m)),
        Event::InitApply(m) => Event::InitApply(object(m)),
        Event::Init => Event::Init,
        Event::InitDone => Event::InitDone,
    }
}

impl Caches {
    /// Creates the stores and the streams that fill them (the controller polls the streams).
    pub fn new(client: &Client) -> (Self, Vec<(&'static ManagedKind, Changes)>) {
        let mut stores = HashMap::new();
        let mut streams = Vec::new();
        for kind in MANAGED {
            let ar = kind.api_resource();
            let config = watcher::Config::default().labels(MANAGED_SELECTOR);
            let writer = reflector::store::Writer::new(ar.clone());
            let store = writer.as_reader();
            let events: std::pin::Pin<Box<dyn Stream<Item = _> + Send>> = if kind.cached_in_full {
                watcher::watcher(Api::<DynamicObject>::all_with(client.clone(), &ar), config).boxed()
            } else {
                let api: Api<PartialObjectMeta<DynamicObject>> = Api::all_with(client.clone(), &ar);
                watcher::watcher(api, config)
                    .map_ok(move |e| from_meta(e, kind))
                    .boxed()
            };
            let changes = events.default_backoff().reflect(writer).touched_objects().boxed();
            stores.insert(kind.kind, (kind, store));
            streams.push((kind, changes as Changes));
        }
        (Self { stores }, streams)
    }

    /// Waits until every store has its initial list.
    ///
    /// Polled rather than awaited: kube-runtime's readiness future can miss the wake-up of one of several tasks
    /// waiting on the same store at once (seen here: the TLS keeper waited forever while a reconcile went on).
    pub async fn wait_ready(&self, timeout: Duration) -> Result<(), Error> {
        let started = tokio::time::Instant::now();
        loop {
            let mut ready = true;
            for (_, store) in self.stores.values() {
                match futures::FutureExt::now_or_never(store.wait_until_ready()) {
                    Some(Ok(())) => {}
                    Some(Err(e)) => return Err(Error::CacheSync(e.to_string())),
                    None => {
                        ready = false;
                        break;
                    }
                }
            }
            if ready {
                return Ok(());
            }
            if started.elapsed() >= timeout {
                return Err(Error::CacheSync(format!(
                    "not every watch listed its objects within {}s",
                    timeout.as_secs()
                )));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    fn store(&self, kind: &ManagedKind) -> Option<&Store<DynamicObject>> {
        self.stores.get(kind.kind).map(|(_, s)| s)
    }

    /// The live object, if the cache has it.
    pub fn get(&self, kind: &ManagedKind, namespace: Option<&str>, name: &str) -> Option<Arc<DynamicObject>> {
        let mut key = ObjectRef::new_with(name, kind.api_resource());
        if let Some(ns) = namespace.filter(|_| kind.namespaced) {
            key = key.within(ns);
        }
        self.store(kind)?.get(&key)
    }

    /// Every cached object of a kind.
    pub fn list(&self, kind: &ManagedKind) -> Vec<Arc<DynamicObject>> {
        self.store(kind).map(Store::state).unwrap_or_default()
    }

    /// Cached objects of every kind: (kind, object).
    pub fn all(&self) -> impl Iterator<Item = (&'static ManagedKind, Arc<DynamicObject>)> + '_ {
        MANAGED
            .iter()
            .flat_map(move |k| self.list(k).into_iter().map(move |o| (k, o)))
    }
}

/// `namespace/name`, or `name` for cluster-scoped objects.
pub fn display_name(object: &DynamicObject) -> String {
    match object.namespace() {
        Some(ns) => format!("{ns}/{}", object.name_any()),
        None => object.name_any(),
    }
}
