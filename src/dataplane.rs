//! The data plane report: which injected pods run the proxy image and revision of the MeshInstall that serves them
//! now, and which workloads still run an older one. The operator computes it from its pod cache for the status,
//! `mizzenctl proxy-status` from a listing; both call [`report`].

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::Pod;
use serde_json::Value;

use crate::api::{DataPlaneStatus, MeshInstall, OutdatedWorkload};
use crate::inject::annotations as ann;
use crate::revisions::Assignment;

/// How many outdated workloads the status lists (the count covers all of them).
pub const LISTED_WORKLOADS: usize = 20;

/// The label every pod Istio's injector (and mizzen's) injects carries; the operator's pod watch selects on it.
pub const INJECTED_POD_LABEL: &str = "service.istio.io/canonical-name";

/// A workload: what owns a pod, as `kubectl rollout restart` would name it.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Workload {
    /// Namespace.
    pub namespace: String,
    /// `Deployment`, `StatefulSet`, `DaemonSet`, `Job`, `ReplicaSet`, another owner kind, or `Pod`.
    pub kind: String,
    /// Name.
    pub name: String,
}

impl std::fmt::Display for Workload {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}/{}", self.namespace, self.kind, self.name)
    }
}

/// What the report needs of an injected pod (the operator keeps only this per pod).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InjectedPod {
    /// Its workload.
    pub workload: Workload,
    /// The revision that injected it (`sidecar.istio.io/status`, else `istio.io/rev`, else `default`).
    pub revision: String,
    /// The image of its `istio-proxy` container.
    pub image: Option<String>,
    /// The image the pod asked for itself (`sidecar.istio.io/proxyImage` holding a full reference, the only form
    /// the injector honours), which an upgrade does not change.
    pub pinned_image: Option<String>,
    /// Its labels that route it to a webhook (`istio.io/rev`, `sidecar.istio.io/inject`): a pod that opted in itself
    /// goes to the holder of the name it gives.
    pub routing_labels: BTreeMap<String, String>,
}

/// The labels that decide which webhook a pod is sent to, of a label map.
pub fn routing_labels(labels: Option<&BTreeMap<String, String>>) -> BTreeMap<String, String> {
    labels
        .into_iter()
        .flatten()
        .filter(|(k, _)| *k == ann::REVISION || *k == ann::INJECT)
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect()
}

/// The injected pod in a Pod, if it is one: injected (`sidecar.istio.io/status`), not finished and not being
/// deleted (a rollout's old pods stop counting once they terminate).
pub fn injected_pod(pod: &Pod) -> Option<InjectedPod> {
    let meta = &pod.metadata;
    if meta.deletion_timestamp.is_some() {
        return None;
    }
    if let Some(phase) = pod.status.as_ref().and_then(|s| s.phase.as_deref())
        && matches!(phase, "Succeeded" | "Failed")
    {
        return None;
    }
    let annotations = meta.annotations.as_ref()?;
    let status = annotations.get(ann::STATUS)?;
    let recorded = serde_json::from_str::<Value>(status)
        .ok()
        .and_then(|v| v.get("revision").and_then(Value::as_str).map(str::to_owned))
        .filter(|r| !r.is_empty());
    let revision = recorded
        .or_else(|| annotations.get(ann::REVISION).cloned())
        .unwrap_or_else(|| "default".into());
    let spec = pod.spec.as_ref();
    let image = spec.and_then(|s| {
        s.containers
            .iter()
            .chain(s.init_containers.iter().flatten())
            .find(|c| c.name == "istio-proxy")
            .and_then(|c| c.image.clone())
    });
    Some(InjectedPod {
        workload: workload_of(pod),
        revision,
        image,
        pinned_image: annotations.get(ann::PROXY_IMAGE).filter(|i| i.contains('/')).cloned(),
        routing_labels: routing_labels(meta.labels.as_ref()),
    })
}

/// The workload a pod belongs to: its controller, with a ReplicaSet named `<deployment>-<pod-template-hash>` taken
/// as its Deployment; the pod itself when nothing controls it.
pub fn workload_of(pod: &Pod) -> Workload {
    let meta = &pod.metadata;
    let namespace = meta.namespace.clone().unwrap_or_default();
    let controller = meta
        .owner_references
        .iter()
        .flatten()
        .find(|o| o.controller == Some(true));
    let Some(owner) = controller else {
        return Workload {
            namespace,
            kind: "Pod".into(),
            name: meta.name.clone().unwrap_or_default(),
        };
    };
    if owner.kind == "ReplicaSet" && owner.api_version.starts_with("apps/") {
        let hash = meta.labels.as_ref().and_then(|l| l.get("pod-template-hash"));
        if let Some(deployment) = hash.and_then(|h| owner.name.strip_suffix(&format!("-{h}")))
            && !deployment.is_empty()
        {
            return Workload {
                namespace,
                kind: "Deployment".into(),
                name: deployment.to_owned(),
            };
        }
    }
    Workload {
        namespace,
        kind: owner.kind.clone(),
        name: owner.name.clone(),
    }
}

/// One MeshInstall's view of its data plane: the status numbers and every outdated workload (not only the listed
/// ones), for the rollout.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Report {
    /// What the status shows.
    pub status: DataPlaneStatus,
    /// Every outdated workload, sorted, with its pod count and reason.
    pub outdated: Vec<(Workload, i32, String)>,
}

/// One workload's injected pods, as one MeshInstall serves them (or none).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Row {
    /// The MeshInstall serving the pods now, if any.
    pub mesh_install: Option<String>,
    /// The workload.
    #[serde(flatten)]
    pub workload: WorkloadName,
    /// The revisions that injected the pods.
    pub injected_by: Vec<String>,
    /// Pods running the serving MeshInstall's proxy image and revision.
    pub up_to_date: i32,
    /// The other pods.
    pub outdated: i32,
    /// Why the first outdated pod is outdated.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// A workload as JSON output names it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct WorkloadName {
    /// Namespace.
    pub namespace: String,
    /// Kind.
    pub kind: String,
    /// Name.
    pub name: String,
}

impl From<&Workload> for WorkloadName {
    fn from(w: &Workload) -> Self {
        Self {
            namespace: w.namespace.clone(),
            kind: w.kind.clone(),
            name: w.name.clone(),
        }
    }
}

/// Every workload with injected pods, sorted by namespace, kind and name, with the MeshInstall that serves it.
///
/// A pod counts for the MeshInstall whose webhook would inject it if it were created now (the webhook selectors on
/// its namespace's and its own labels: `istio-injection=enabled` → the holder of `default`, `istio.io/rev=<name>` →
/// the holder of that revision or tag); when none would, for the revision that injected it. It is up to date when that
/// MeshInstall's revision injected it and it runs that MeshInstall's proxy image (or the image it pinned with
/// `sidecar.istio.io/proxyImage`).
pub fn rows<'a>(
    meshes: &[&MeshInstall],
    assignment: &Assignment,
    namespaces: &BTreeMap<String, BTreeMap<String, String>>,
    pods: impl IntoIterator<Item = &'a InjectedPod>,
) -> Vec<Row> {
    let by_name: BTreeMap<String, &MeshInstall> = meshes
        .iter()
        .filter_map(|m| Some((m.metadata.name.clone()?, *m)))
        .collect();
    let mut rows: BTreeMap<(Workload, Option<String>), Row> = BTreeMap::new();
    let empty = BTreeMap::new();
    for pod in pods {
        let labels = namespaces.get(&pod.workload.namespace).unwrap_or(&empty);
        let server = assignment
            .injector_of(labels, &pod.routing_labels)
            .map(str::to_owned)
            .or_else(|| assignment.serving.get(&pod.revision).cloned());
        let mesh = server.and_then(|s| by_name.get(&s).copied());
        let name = mesh.and_then(|m| m.metadata.name.clone());
        let row = rows.entry((pod.workload.clone(), name.clone())).or_insert_with(|| Row {
            mesh_install: name,
            workload: WorkloadName::from(&pod.workload),
            injected_by: Vec::new(),
            up_to_date: 0,
            outdated: 0,
            reason: None,
        });
        if !row.injected_by.contains(&pod.revision) {
            row.injected_by.push(pod.revision.clone());
            row.injected_by.sort();
        }
        let reason = match mesh {
            None => Some(format!(
                "no MeshInstall serves revision {} or the namespace's label any more",
                pod.revision
            )),
            Some(mesh) => {
                let revision = mesh.spec.revision_label();
                let wanted = pod.pinned_image.clone().unwrap_or_else(|| mesh.spec.proxy_image());
                if pod.revision != revision {
                    Some(format!(
                        "injected by revision {}; revision {revision} serves it now",
                        pod.revision
                    ))
                } else if pod.image.as_deref() != Some(wanted.as_str()) {
                    Some(format!(
                        "proxy {}; want {wanted}",
                        pod.image.as_deref().unwrap_or("(none)")
                    ))
                } else {
                    None
                }
            }
        };
        match reason {
            None => row.up_to_date += 1,
            Some(reason) => {
                row.outdated += 1;
                row.reason.get_or_insert(reason);
            }
        }
    }
    rows.into_values().collect()
}

/// The report of every MeshInstall (by name), from [`rows`], and the rows no MeshInstall serves.
pub fn report<'a>(
    meshes: &[&MeshInstall],
    assignment: &Assignment,
    namespaces: &BTreeMap<String, BTreeMap<String, String>>,
    pods: impl IntoIterator<Item = &'a InjectedPod>,
) -> (BTreeMap<String, Report>, Vec<Row>) {
    let mut reports: BTreeMap<String, Report> = meshes
        .iter()
        .filter_map(|m| Some((m.metadata.name.clone()?, Report::default())))
        .collect();
    let mut unserved = Vec::new();
    for row in rows(meshes, assignment, namespaces, pods) {
        let Some(report) = row.mesh_install.as_ref().and_then(|m| reports.get_mut(m)) else {
            unserved.push(row);
            continue;
        };
        report.status.up_to_date += row.up_to_date;
        report.status.total += row.up_to_date + row.outdated;
        if row.outdated > 0 {
            let workload = Workload {
                namespace: row.workload.namespace.clone(),
                kind: row.workload.kind.clone(),
                name: row.workload.name.clone(),
            };
            report
                .outdated
                .push((workload, row.outdated, row.reason.clone().unwrap_or_default()));
        }
    }
    for report in reports.values_mut() {
        report.status.outdated_workloads = i32::try_from(report.outdated.len()).unwrap_or(i32::MAX);
        report.status.outdated = report
            .outdated
            .iter()
            .take(LISTED_WORKLOADS)
            .map(|(w, pods, reason)| OutdatedWorkload {
                namespace: w.namespace.clone(),
                kind: w.kind.clone(),
                name: w.name.clone(),
                pods: *pods,
                reason: reason.clone(),
            })
            .collect();
    }
    (reports, unserved)
}

/// Where a restarted workload's rollout stands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Progress {
    /// Every replica runs the current template and is available.
    Complete,
    /// Still rolling out.
    Rolling,
    /// The workload's controller gave up (a Deployment past its `progressDeadlineSeconds`).
    Failed(String),
}

/// The rollout progress of a Deployment, StatefulSet or DaemonSet (as JSON), as `kubectl rollout status` judges it.
pub fn rollout_progress(kind: &str, workload: &Value) -> Progress {
    let int = |v: &Value| v.as_i64().unwrap_or(0);
    let status = &workload["status"];
    let generation = workload["metadata"]["generation"].as_i64().unwrap_or(0);
    if int(&status["observedGeneration"]) < generation {
        return Progress::Rolling;
    }
    match kind {
        "Deployment" => {
            let failed = status["conditions"].as_array().into_iter().flatten().find(|c| {
                c["type"] == "Progressing" && c["status"] == "False" && c["reason"] == "ProgressDeadlineExceeded"
            });
            if let Some(c) = failed {
                return Progress::Failed(format!(
                    "ProgressDeadlineExceeded: {}",
                    c["message"].as_str().unwrap_or_default()
                ));
            }
            let replicas = workload["spec"]["replicas"].as_i64().unwrap_or(1);
            let updated = int(&status["updatedReplicas"]);
            if updated >= replicas
                && int(&status["replicas"]) <= updated
                && int(&status["availableReplicas"]) >= updated
            {
                Progress::Complete
            } else {
                Progress::Rolling
            }
        }
        "StatefulSet" => {
            let replicas = workload["spec"]["replicas"].as_i64().unwrap_or(1);
            if int(&status["readyReplicas"]) < replicas {
                return Progress::Rolling;
            }
            let partition = int(&workload["spec"]["updateStrategy"]["rollingUpdate"]["partition"]);
            if partition > 0 {
                return if int(&status["updatedReplicas"]) < replicas - partition {
                    Progress::Rolling
                } else {
                    Progress::Complete
                };
            }
            if !status["updateRevision"].is_null() && status["updateRevision"] != status["currentRevision"] {
                return Progress::Rolling;
            }
            Progress::Complete
        }
        "DaemonSet" => {
            let desired = int(&status["desiredNumberScheduled"]);
            if int(&status["updatedNumberScheduled"]) >= desired && int(&status["numberAvailable"]) >= desired {
                Progress::Complete
            } else {
                Progress::Rolling
            }
        }
        _ => Progress::Complete,
    }
}

/// Kinds the automatic rollout restarts (through their pod template).
pub fn restartable(kind: &str) -> bool {
    matches!(kind, "Deployment" | "StatefulSet" | "DaemonSet")
}

#[cfg(test)]
mod tests {
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
    use serde_json::json;

    use super::*;
    use crate::revisions::assign;

    fn pod(ns: &str, owner: Option<(&str, &str)>, hash: &str, revision: &str, image: &str) -> Pod {
        let mut p = json!({
            "metadata": {
                "name": "p", "namespace": ns,
                "labels": {"pod-template-hash": hash, "service.istio.io/canonical-name": "x"},
                "annotations": {"sidecar.istio.io/status": format!("{{\"initContainers\":[\"istio-init\",\"istio-proxy\"],\"revision\":\"{revision}\"}}")},
            },
            "spec": {"containers": [{"name": "app", "image": "app:1"}],
                     "initContainers": [{"name": "istio-proxy", "image": image}]},
        });
        if let Some((kind, name)) = owner {
            p["metadata"]["ownerReferences"] =
                json!([{"apiVersion": "apps/v1", "kind": kind, "name": name, "uid": "u", "controller": true}]);
        }
        serde_json::from_value(p).unwrap()
    }

    fn mi(name: &str, age: i64, spec: Value) -> MeshInstall {
        let mut m = MeshInstall::new(name, serde_json::from_value(spec).unwrap());
        m.metadata.creation_timestamp = Some(Time(k8s_openapi::jiff::Timestamp::from_second(1000 - age).unwrap()));
        m
    }

    #[test]
    fn workloads_are_named_as_rollout_restart_names_them() {
        let p = pod("ns", Some(("ReplicaSet", "web-5d4f8")), "5d4f8", "default", "i");
        assert_eq!(workload_of(&p).to_string(), "ns/Deployment/web");
        let p = pod("ns", Some(("ReplicaSet", "web-5d4f8")), "other", "default", "i");
        assert_eq!(workload_of(&p).to_string(), "ns/ReplicaSet/web-5d4f8");
        let p = pod("ns", Some(("StatefulSet", "db")), "", "default", "i");
        assert_eq!(workload_of(&p).to_string(), "ns/StatefulSet/db");
        let p = pod("ns", None, "", "default", "i");
        assert_eq!(workload_of(&p).to_string(), "ns/Pod/p");
    }

    #[test]
    fn only_live_injected_pods_count() {
        let p = pod("ns", None, "", "canary", "hub/proxyv2:1.28.0");
        let i = injected_pod(&p).unwrap();
        assert_eq!(
            (i.revision.as_str(), i.image.as_deref()),
            ("canary", Some("hub/proxyv2:1.28.0"))
        );
        let mut gone = p.clone();
        gone.metadata.deletion_timestamp = Some(Time(k8s_openapi::jiff::Timestamp::from_second(1).unwrap()));
        assert_eq!(injected_pod(&gone), None);
        let mut done = p.clone();
        done.status = Some(serde_json::from_value(json!({"phase": "Succeeded"})).unwrap());
        assert_eq!(injected_pod(&done), None);
        let mut plain = p;
        plain.metadata.annotations = None;
        assert_eq!(injected_pod(&plain), None);
    }

    #[test]
    fn an_upgrade_makes_pods_outdated_until_restarted() {
        let default = mi("default", 10, json!({"version": "1.28.1"}));
        let meshes = [&default];
        let a = assign(meshes);
        let namespaces = BTreeMap::from([(
            "web".to_owned(),
            BTreeMap::from([("istio-injection".to_owned(), "enabled".to_owned())]),
        )]);
        let old = injected_pod(&pod(
            "web",
            Some(("ReplicaSet", "app-1")),
            "1",
            "default",
            "docker.io/istio/proxyv2:1.28.0",
        ))
        .unwrap();
        let new = injected_pod(&pod(
            "web",
            Some(("ReplicaSet", "app-2")),
            "2",
            "default",
            "docker.io/istio/proxyv2:1.28.1",
        ))
        .unwrap();
        let (reports, unserved) = report(&meshes, &a, &namespaces, [&old, &old, &new]);
        let r = &reports["default"];
        assert_eq!(
            (r.status.up_to_date, r.status.total, r.status.outdated_workloads),
            (1, 3, 1)
        );
        assert_eq!(r.status.outdated[0].name, "app");
        assert_eq!(r.status.outdated[0].pods, 2);
        assert!(
            r.status.outdated[0]
                .reason
                .contains("want docker.io/istio/proxyv2:1.28.1"),
            "{:?}",
            r.status.outdated
        );
        assert!(unserved.is_empty());
        // A pod that opted in itself (istio.io/rev label) in an unlabelled namespace goes to that revision's holder.
        let canary = mi("canary", 1, json!({"revision": "canary", "version": "1.28.1"}));
        let both = [&default, &canary];
        let b = assign(both);
        let mut opted = injected_pod(&pod("apps", None, "", "default", "docker.io/istio/proxyv2:1.28.1")).unwrap();
        opted.routing_labels = BTreeMap::from([("istio.io/rev".to_owned(), "canary".to_owned())]);
        let (reports, _) = report(&both, &b, &namespaces, [&opted]);
        assert_eq!(reports["canary"].status.total, 1);
        assert!(
            reports["canary"].outdated[0]
                .2
                .contains("injected by revision default; revision canary serves it now")
        );
        // A pod that pinned its image is up to date with it.
        let mut pinned = old.clone();
        pinned.pinned_image = Some("docker.io/istio/proxyv2:1.28.0".into());
        let (reports, _) = report(&meshes, &a, &namespaces, [&pinned]);
        assert_eq!(reports["default"].status.up_to_date, 1);
    }

    #[test]
    fn moving_a_tag_makes_the_namespace_pods_the_new_holders_and_outdated() {
        let default = mi("default", 10, json!({}));
        let canary = mi("canary", 1, json!({"revision": "canary", "revisionTags": ["prod"]}));
        let meshes = [&default, &canary];
        let a = assign(meshes);
        let namespaces = BTreeMap::from([(
            "shop".to_owned(),
            BTreeMap::from([("istio.io/rev".to_owned(), "prod".to_owned())]),
        )]);
        let p = injected_pod(&pod("shop", None, "", "default", "docker.io/istio/proxyv2:1.28.0")).unwrap();
        let (reports, _) = report(&meshes, &a, &namespaces, [&p]);
        assert_eq!(reports["default"].status.total, 0);
        let r = &reports["canary"];
        assert_eq!((r.status.up_to_date, r.status.total), (0, 1));
        assert!(
            r.outdated[0]
                .2
                .contains("injected by revision default; revision canary serves it now")
        );
        // A pod whose revision no MeshInstall serves any more is reported apart.
        let p = injected_pod(&pod("other", None, "", "gone", "x")).unwrap();
        let (_, unserved) = report(&meshes, &a, &namespaces, [&p]);
        assert_eq!(unserved[0].injected_by, vec!["gone"]);
        assert!(
            unserved[0]
                .reason
                .as_ref()
                .unwrap()
                .contains("no MeshInstall serves revision gone")
        );
    }

    #[test]
    fn rollouts_are_complete_as_kubectl_rollout_status_says() {
        let d = |generation: i64, observed: i64, replicas: i64, updated: i64, available: i64, total: i64| {
            json!({"metadata": {"generation": generation}, "spec": {"replicas": replicas},
                   "status": {"observedGeneration": observed, "updatedReplicas": updated, "availableReplicas": available, "replicas": total}})
        };
        assert_eq!(rollout_progress("Deployment", &d(2, 1, 2, 2, 2, 2)), Progress::Rolling);
        assert_eq!(rollout_progress("Deployment", &d(2, 2, 2, 1, 2, 3)), Progress::Rolling);
        assert_eq!(
            rollout_progress("Deployment", &d(2, 2, 2, 2, 2, 3)),
            Progress::Rolling,
            "old pods remain"
        );
        assert_eq!(rollout_progress("Deployment", &d(2, 2, 2, 2, 2, 2)), Progress::Complete);
        let mut stuck = d(2, 2, 2, 1, 2, 3);
        stuck["status"]["conditions"] = json!([{"type": "Progressing", "status": "False", "reason": "ProgressDeadlineExceeded", "message": "ReplicaSet \"web-2\" has timed out progressing."}]);
        assert!(matches!(rollout_progress("Deployment", &stuck), Progress::Failed(m) if m.contains("timed out")));
        let ds = json!({"metadata": {"generation": 1}, "status": {"observedGeneration": 1, "desiredNumberScheduled": 2, "updatedNumberScheduled": 2, "numberAvailable": 1}});
        assert_eq!(rollout_progress("DaemonSet", &ds), Progress::Rolling);
        let sts = json!({"metadata": {"generation": 1}, "spec": {"replicas": 2}, "status": {"observedGeneration": 1, "readyReplicas": 2, "updatedReplicas": 2, "currentRevision": "a", "updateRevision": "a"}});
        assert_eq!(rollout_progress("StatefulSet", &sts), Progress::Complete);
        let mut sts2 = sts.clone();
        sts2["status"]["updateRevision"] = json!("b");
        assert_eq!(rollout_progress("StatefulSet", &sts2), Progress::Rolling);
    }
}
