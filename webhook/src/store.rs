//! The webhook's in-memory view of the cluster: injection configuration per revision (from MeshInstalls), namespace
//! labels and annotations, and node kubelet versions. Filled by watches or from files; read on every request
//! without any API call.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};

use mizzen::MeshInstallSpec;
use mizzen::inject::{InjectionConfig, Injector};

/// What a namespace contributes to injection.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NamespaceInfo {
    /// Labels (`istio-injection`, `istio.io/rev`).
    pub labels: BTreeMap<String, String>,
    /// Annotations (OpenShift UID ranges).
    pub annotations: BTreeMap<String, String>,
}

/// A MeshInstall as the webhook serves it: the spec to inject with (see [`mizzen::revisions::serving_spec`]) and
/// when it was created (when two claim one revision, the older serves it, as the operator decides).
#[derive(Debug, Clone, PartialEq)]
pub struct MeshEntry {
    /// The spec injection follows.
    pub spec: MeshInstallSpec,
    /// `metadata.creationTimestamp` (seconds), if known.
    pub created: Option<i64>,
}

impl MeshEntry {
    /// The entry of a live MeshInstall, or `None` when it has nothing to serve yet (an unsupported version never
    /// rolled out).
    pub fn of(mi: &mizzen::MeshInstall) -> Option<Self> {
        Some(Self {
            spec: mizzen::revisions::serving_spec(mi)?,
            created: mi.metadata.creation_timestamp.as_ref().map(|t| t.0.as_second()),
        })
    }
}

impl From<MeshInstallSpec> for MeshEntry {
    fn from(spec: MeshInstallSpec) -> Self {
        Self { spec, created: None }
    }
}

/// The caches.
#[derive(Debug, Default)]
pub struct Store {
    meshes: RwLock<BTreeMap<String, MeshEntry>>,
    configs: RwLock<HashMap<String, Arc<Injector>>>,
    namespaces: RwLock<HashMap<String, NamespaceInfo>>,
    nodes: RwLock<BTreeMap<String, String>>,
    meshes_synced: AtomicBool,
    namespaces_synced: AtomicBool,
    nodes_synced: AtomicBool,
    certificate_loaded: AtomicBool,
    /// Held through a rebuild, from reading the MeshInstalls and nodes to storing what was compiled from them: the
    /// MeshInstall and node watches rebuild from their own tasks, and without it a rebuild that read the nodes
    /// before the other task changed them could store its older result last, to stay until the next change.
    rebuilding: std::sync::Mutex<()>,
    /// Tests: the next rebuild, once it has compiled, says so on the sender and waits on the receiver to store.
    #[cfg(test)]
    pause_before_store: std::sync::Mutex<Option<(std::sync::mpsc::Sender<()>, std::sync::mpsc::Receiver<()>)>>,
}

fn read<T>(lock: &RwLock<T>) -> std::sync::RwLockReadGuard<'_, T> {
    lock.read().unwrap_or_else(|e| e.into_inner())
}

fn write<T>(lock: &RwLock<T>) -> std::sync::RwLockWriteGuard<'_, T> {
    lock.write().unwrap_or_else(|e| e.into_inner())
}

/// Which cache finished its initial listing.
#[derive(Debug, Clone, Copy)]
pub enum Cache {
    /// MeshInstalls.
    Meshes,
    /// Namespaces.
    Namespaces,
    /// Nodes.
    Nodes,
    /// The serving certificate (from its Secret).
    Certificate,
}

impl Store {
    /// A store serving fixed MeshInstalls (no cluster): ready at once, native-sidecar `auto` treated as on.
    pub fn from_specs(specs: impl IntoIterator<Item = (String, MeshInstallSpec)>) -> Self {
        let store = Self::default();
        *write(&store.meshes) = specs.into_iter().map(|(name, spec)| (name, spec.into())).collect();
        store.rebuild();
        for cache in [Cache::Meshes, Cache::Namespaces, Cache::Nodes, Cache::Certificate] {
            store.mark_synced(cache);
        }
        store
    }

    /// The compiled configuration serving a revision (`default` for the default revision).
    pub fn config(&self, revision: &str) -> Option<Arc<Injector>> {
        read(&self.configs).get(revision).cloned()
    }

    /// Revisions served, sorted.
    pub fn revisions(&self) -> Vec<String> {
        let mut r: Vec<String> = read(&self.configs).keys().cloned().collect();
        r.sort();
        r
    }

    /// A namespace's labels and annotations, if known.
    pub fn namespace(&self, name: &str) -> Option<NamespaceInfo> {
        read(&self.namespaces).get(name).cloned()
    }

    /// Ready once every cache has finished its initial listing.
    pub fn is_ready(&self) -> bool {
        self.meshes_synced.load(Ordering::Acquire)
            && self.namespaces_synced.load(Ordering::Acquire)
            && self.nodes_synced.load(Ordering::Acquire)
            && self.certificate_loaded.load(Ordering::Acquire)
    }

    /// Records that a cache finished its initial listing.
    pub fn mark_synced(&self, cache: Cache) {
        let flag = match cache {
            Cache::Meshes => &self.meshes_synced,
            Cache::Namespaces => &self.namespaces_synced,
            Cache::Nodes => &self.nodes_synced,
            Cache::Certificate => &self.certificate_loaded,
        };
        flag.store(true, Ordering::Release);
    }

    /// Adds or updates a MeshInstall.
    pub fn apply_mesh(&self, name: &str, entry: impl Into<MeshEntry>) {
        write(&self.meshes).insert(name.to_owned(), entry.into());
        self.rebuild();
    }

    /// The entry a MeshInstall is served by, if any.
    pub fn mesh_entry(&self, name: &str) -> Option<MeshEntry> {
        read(&self.meshes).get(name).cloned()
    }

    /// Removes a MeshInstall.
    pub fn delete_mesh(&self, name: &str) {
        write(&self.meshes).remove(name);
        self.rebuild();
    }

    /// Replaces every MeshInstall (after a relist).
    pub fn replace_meshes(&self, meshes: BTreeMap<String, MeshEntry>) {
        *write(&self.meshes) = meshes;
        self.rebuild();
    }

    /// Adds or updates a namespace.
    pub fn apply_namespace(&self, name: &str, info: NamespaceInfo) {
        write(&self.namespaces).insert(name.to_owned(), info);
    }

    /// Removes a namespace.
    pub fn delete_namespace(&self, name: &str) {
        write(&self.namespaces).remove(name);
    }

    /// Replaces every namespace (after a relist).
    pub fn replace_namespaces(&self, namespaces: HashMap<String, NamespaceInfo>) {
        *write(&self.namespaces) = namespaces;
    }

    /// Adds or updates a node's kubelet version.
    pub fn apply_node(&self, name: &str, kubelet_version: String) {
        let changed = write(&self.nodes).insert(name.to_owned(), kubelet_version.clone()) != Some(kubelet_version);
        if changed {
            self.rebuild();
        }
    }

    /// Removes a node.
    pub fn delete_node(&self, name: &str) {
        if write(&self.nodes).remove(name).is_some() {
            self.rebuild();
        }
    }

    /// Replaces every node (after a relist).
    pub fn replace_nodes(&self, nodes: BTreeMap<String, String>) {
        *write(&self.nodes) = nodes;
        self.rebuild();
    }

    /// Recomputes (and compiles) the per-revision configurations. When two MeshInstalls claim one revision, the older
    /// (by creation, then name) serves it, as the operator decides.
    fn rebuild(&self) {
        let _rebuilding = self.rebuilding.lock().unwrap_or_else(|e| e.into_inner());
        let versions: Vec<String> = read(&self.nodes).values().cloned().collect();
        let mut configs = HashMap::new();
        let meshes = read(&self.meshes);
        let mut ordered: Vec<(&String, &MeshEntry)> = meshes.iter().collect();
        // Unknown creation times (files) sort by name only.
        ordered.sort_by_key(|(name, e)| (e.created.unwrap_or(i64::MIN), *name));
        for (name, entry) in ordered {
            let spec = &entry.spec;
            let revision = spec.revision_label().to_owned();
            if configs.contains_key(&revision) {
                tracing::warn!(meshinstall = %name, %revision, "another MeshInstall already serves this revision; ignoring this one");
                continue;
            }
            let mut config = InjectionConfig::from_mesh_install(spec);
            config.node_kubelet_versions = versions.clone();
            configs.insert(revision, Arc::new(Injector::compile(config)));
        }
        drop(meshes);
        #[cfg(test)]
        if let Some((compiled, store)) = self.pause_before_store.lock().unwrap().take() {
            compiled.send(()).unwrap();
            store.recv().unwrap();
        }
        *write(&self.configs) = configs;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(revision: &str) -> MeshInstallSpec {
        serde_json::from_value(serde_json::json!({"revision": revision})).unwrap()
    }

    #[test]
    fn revisions_map_to_their_mesh_installs() {
        let store = Store::from_specs([("default".to_owned(), spec("")), ("canary".to_owned(), spec("canary"))]);
        assert!(store.is_ready());
        assert_eq!(store.revisions(), vec!["canary".to_owned(), "default".to_owned()]);
        assert_eq!(store.config("canary").unwrap().config().revision, "canary");
        assert!(store.config("other").is_none());
    }

    #[test]
    fn the_older_of_two_installs_of_one_revision_serves_it() {
        let store = Store::from_specs([]);
        let mut young = spec("canary");
        young.version = "1.28.1".into();
        store.apply_mesh(
            "a-young",
            MeshEntry {
                spec: young,
                created: Some(200),
            },
        );
        store.apply_mesh(
            "b-old",
            MeshEntry {
                spec: spec("canary"),
                created: Some(100),
            },
        );
        assert_eq!(store.config("canary").unwrap().config().tag, "1.28.0");
    }

    #[test]
    fn an_unsupported_version_is_served_as_the_version_rolled_out() {
        let mut mi = mizzen::MeshInstall::new("default", spec(""));
        mi.spec.version = "1.30.0".into();
        assert_eq!(MeshEntry::of(&mi), None);
        mi.status = Some(serde_json::from_value(serde_json::json!({"version": "1.28.0"})).unwrap());
        assert_eq!(MeshEntry::of(&mi).unwrap().spec.version, "1.28.0");
    }

    #[test]
    fn node_versions_feed_native_sidecar_auto() {
        let store = Store::from_specs([("default".to_owned(), spec(""))]);
        assert!(store.config("default").unwrap().config().native_sidecars_by_default());
        store.apply_node("old", "v1.31.2".into());
        assert!(!store.config("default").unwrap().config().native_sidecars_by_default());
        store.delete_node("old");
        assert!(store.config("default").unwrap().config().native_sidecars_by_default());
    }

    /// The MeshInstall and node watches rebuild from their own tasks: a rebuild that read older MeshInstalls or
    /// nodes must not store its result after a newer rebuild's, where it would stay until the next change.
    #[test]
    fn a_rebuild_that_read_older_nodes_does_not_store_last() {
        let store = Arc::new(Store::from_specs([("default".to_owned(), spec(""))]));
        let (compiled_tx, compiled) = std::sync::mpsc::channel();
        let (go, go_rx) = std::sync::mpsc::channel();
        *store.pause_before_store.lock().unwrap() = Some((compiled_tx, go_rx));
        // A MeshInstall change rebuilds with no nodes (native sidecars on) and waits before storing.
        let mesh = {
            let store = Arc::clone(&store);
            std::thread::spawn(move || {
                let mut s = spec("");
                s.version = "1.28.1".into();
                store.apply_mesh("default", s);
            })
        };
        compiled.recv().unwrap();
        // Meanwhile a node too old for native sidecars arrives and rebuilds.
        let node = {
            let store = Arc::clone(&store);
            std::thread::spawn(move || store.apply_node("old", "v1.31.2".into()))
        };
        // Time for the node's rebuild to store first, were it not held back until the first one has stored.
        std::thread::sleep(std::time::Duration::from_millis(200));
        go.send(()).unwrap();
        mesh.join().unwrap();
        node.join().unwrap();
        let config = store.config("default").unwrap();
        assert!(
            !config.config().native_sidecars_by_default(),
            "the configuration compiled without the node was stored last"
        );
        assert_eq!(config.config().tag, "1.28.1");
    }

    #[test]
    fn a_live_store_is_ready_only_after_every_cache_synced() {
        let store = Store::default();
        store.mark_synced(Cache::Meshes);
        store.mark_synced(Cache::Nodes);
        assert!(!store.is_ready());
        store.mark_synced(Cache::Namespaces);
        assert!(!store.is_ready(), "no serving certificate yet");
        store.mark_synced(Cache::Certificate);
        assert!(store.is_ready());
    }
}
