//! Watches that keep the [`Store`] current: MeshInstalls, Namespaces (metadata only) and Nodes; and the one that
//! keeps the serving certificate current from its Secret.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use futures::StreamExt;
use k8s_openapi::api::core::v1::{Namespace, Node, Secret};
use kube::core::PartialObjectMeta;
use kube::runtime::WatchStreamExt;
use kube::runtime::watcher::{self, Event};
use kube::{Api, Client, ResourceExt};
use mizzen::MeshInstall;

use crate::store::{Cache, MeshEntry, NamespaceInfo, Store};
use crate::tls::Reloading;

/// Starts the three watches; they run until the runtime stops.
pub fn spawn(client: Client, store: Arc<Store>) {
    tokio::spawn(meshes(client.clone(), store.clone()));
    tokio::spawn(namespaces(client.clone(), store.clone()));
    tokio::spawn(nodes(client, store));
}

async fn meshes(client: Client, store: Arc<Store>) {
    let mut stream = watcher::watcher(Api::<MeshInstall>::all(client), watcher::Config::default())
        .default_backoff()
        .boxed();
    let mut buffer: BTreeMap<String, MeshEntry> = BTreeMap::new();
    while let Some(event) = stream.next().await {
        match event {
            Ok(Event::Init) => buffer.clear(),
            Ok(Event::InitApply(mi)) => {
                // None: an unsupported version never rolled out (`served` says so).
                if let Some(entry) = served(&store, &mi) {
                    buffer.insert(mi.name_any(), entry);
                }
            }
            Ok(Event::InitDone) => {
                store.replace_meshes(std::mem::take(&mut buffer));
                store.mark_synced(Cache::Meshes);
                tracing::info!(revisions = ?store.revisions(), "MeshInstall cache synced");
            }
            Ok(Event::Apply(mi)) => {
                let name = mi.name_any();
                if let Some(entry) = served(&store, &mi) {
                    store.apply_mesh(&name, entry);
                }
                tracing::info!(meshinstall = %name, revisions = ?store.revisions(), "MeshInstall updated");
            }
            Ok(Event::Delete(mi)) => store.delete_mesh(&mi.name_any()),
            Err(error) => tracing::warn!(%error, "MeshInstall watch failed; retrying"),
        }
    }
}

/// What to serve for a MeshInstall: the spec the operator last applied (`status.appliedSpec`); without one (before
/// the first apply, or a status an older operator wrote), its spec, or, while its spec.version is unsupported, what
/// was served before, whole (a hub changed in the same edit does not apply either), or, after a restart, its spec
/// with the version last rolled out (`status.version`).
fn served(store: &Store, mi: &MeshInstall) -> Option<MeshEntry> {
    let unsupported_version = mizzen::revisions::check_version(&mi.spec.version).is_err();
    if unsupported_version {
        unsupported(mi);
    }
    if unsupported_version
        && mizzen::revisions::applied_spec(mi).is_none()
        && let Some(before) = store.mesh_entry(&mi.name_any())
    {
        return Some(before);
    }
    MeshEntry::of(mi)
}

/// A MeshInstall whose version is not supported: the webhook keeps serving the spec last applied, else what it
/// served before, or, after a restart, its spec with the version last rolled out.
fn unsupported(mi: &MeshInstall) {
    tracing::warn!(
        meshinstall = %mi.name_any(),
        version = %mi.spec.version,
        "spec.version is not a supported Istio release; serving the spec last applied (status.appliedSpec), else what \
         was served before, else its spec with the version last rolled out (status.version), if any"
    );
}

async fn namespaces(client: Client, store: Arc<Store>) {
    // Metadata only: labels and annotations are all the webhook needs.
    let mut stream = watcher::watcher(
        Api::<PartialObjectMeta<Namespace>>::all(client),
        watcher::Config::default(),
    )
    .default_backoff()
    .boxed();
    let mut buffer = HashMap::new();
    let info = |meta: &kube::api::ObjectMeta| NamespaceInfo {
        labels: meta.labels.clone().unwrap_or_default(),
        annotations: meta.annotations.clone().unwrap_or_default(),
    };
    while let Some(event) = stream.next().await {
        match event {
            Ok(Event::Init) => buffer.clear(),
            Ok(Event::InitApply(ns)) => {
                buffer.insert(ns.name_any(), info(&ns.metadata));
            }
            Ok(Event::InitDone) => {
                store.replace_namespaces(std::mem::take(&mut buffer));
                store.mark_synced(Cache::Namespaces);
            }
            Ok(Event::Apply(ns)) => store.apply_namespace(&ns.name_any(), info(&ns.metadata)),
            Ok(Event::Delete(ns)) => store.delete_namespace(&ns.name_any()),
            Err(error) => tracing::warn!(%error, "Namespace watch failed; retrying"),
        }
    }
}

fn kubelet_version(node: &Node) -> String {
    node.status
        .as_ref()
        .and_then(|s| s.node_info.as_ref())
        .map(|i| i.kubelet_version.clone())
        .unwrap_or_default()
}

async fn nodes(client: Client, store: Arc<Store>) {
    let mut stream = watcher::watcher(Api::<Node>::all(client), watcher::Config::default())
        .default_backoff()
        .boxed();
    let mut buffer = BTreeMap::new();
    while let Some(event) = stream.next().await {
        match event {
            Ok(Event::Init) => buffer.clear(),
            Ok(Event::InitApply(node)) => {
                buffer.insert(node.name_any(), kubelet_version(&node));
            }
            Ok(Event::InitDone) => {
                store.replace_nodes(std::mem::take(&mut buffer));
                store.mark_synced(Cache::Nodes);
            }
            Ok(Event::Apply(node)) => store.apply_node(&node.name_any(), kubelet_version(&node)),
            Ok(Event::Delete(node)) => store.delete_node(&node.name_any()),
            Err(error) => tracing::warn!(%error, "Node watch failed; retrying"),
        }
    }
}

/// Serves the certificate in Secret `namespace/name` (`tls.crt`, `tls.key`) from the moment it exists or changes.
/// The webhook reads it through the API instead of a mounted volume: no pod waits for the Secret to mount, and a
/// rotated certificate is served within a second instead of after the kubelet's next sync.
pub fn spawn_certificate(client: Client, namespace: &str, name: &str, certificate: Arc<Reloading>, store: Arc<Store>) {
    let api: Api<Secret> = Api::namespaced(client, namespace);
    let config = watcher::Config::default().fields(&format!("metadata.name={name}"));
    let source = format!("{namespace}/{name}");
    tokio::spawn(async move {
        let mut stream = watcher::watcher(api, config)
            .default_backoff()
            .applied_objects()
            .boxed();
        while let Some(event) = stream.next().await {
            let secret = match event {
                Ok(secret) => secret,
                Err(error) => {
                    tracing::warn!(%error, secret = %source, "certificate Secret watch failed; retrying");
                    continue;
                }
            };
            let field = |key: &str| secret.data.as_ref().and_then(|d| d.get(key)).map(|b| b.0.clone());
            let (Some(cert), Some(key)) = (field("tls.crt"), field("tls.key")) else {
                tracing::warn!(secret = %source, "the Secret has no tls.crt and tls.key yet");
                continue;
            };
            match certificate.set_pem(&cert, &key) {
                Ok(true) => tracing::info!(secret = %source, "serving the certificate from the Secret"),
                Ok(false) => {}
                Err(error) => {
                    tracing::warn!(%error, "the certificate in the Secret is not usable; keeping the current one")
                }
            }
            if certificate.is_loaded() {
                store.mark_synced(Cache::Certificate);
            }
        }
    });
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn mesh(spec: serde_json::Value, status: serde_json::Value) -> MeshInstall {
        let mut mi = MeshInstall::new("default", serde_json::from_value(spec).unwrap());
        mi.status = Some(serde_json::from_value(status).unwrap());
        mi
    }

    #[test]
    fn the_spec_last_applied_is_served_whatever_the_spec_says() {
        let store = Store::from_specs([]);
        let applied = json!({"version": "1.28.0", "proxy": {"logLevel": "info"}});
        let mi = mesh(
            json!({"version": "1.28.1", "proxy": {"logLevel": "debug"}}),
            json!({"appliedSpec": applied.to_string(), "appliedGeneration": 1, "appliedSpecObservedGeneration": 1, "observedGeneration": 1}),
        );
        let served_spec = served(&store, &mi).unwrap().spec;
        assert_eq!(
            (served_spec.version.as_str(), served_spec.proxy.log_level.as_str()),
            ("1.28.0", "info")
        );
        // An unsupported spec.version: still the applied spec, not what was served before.
        store.apply_mesh(
            "default",
            serde_json::from_value::<mizzen::MeshInstallSpec>(json!({"proxy": {"logLevel": "error"}})).unwrap(),
        );
        let mi = mesh(
            json!({"version": "1.30.0"}),
            json!({"appliedSpec": applied.to_string(), "appliedGeneration": 1, "appliedSpecObservedGeneration": 1, "observedGeneration": 1}),
        );
        assert_eq!(served(&store, &mi).unwrap().spec.proxy.log_level, "info");
        // Without an applied spec (an older operator's status): what was served before.
        let mi = mesh(json!({"version": "1.30.0"}), json!({"version": "1.27.0"}));
        assert_eq!(served(&store, &mi).unwrap().spec.proxy.log_level, "error");
    }
}
