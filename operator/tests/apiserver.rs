//! Tier 3: the operator's controller, in process, against a real API server (see `support` for where it comes
//! from), one scenario per behaviour. The API server's own behaviour — defaulting, dropped empty fields,
//! server-side apply ownership, garbage collection, watch events — is part of what is tested.
//!
//! Each scenario has its own MeshInstall (label `mizzen.io/test=<scenario>`, which its controller selects on), its
//! own revision, operator namespace and mesh namespace, so scenarios run in parallel on one API server.

mod support;

use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{ConfigMap, Namespace, Pod, Service, ServiceAccount};
use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding};
use kube::api::{Api, DeleteParams, ObjectMeta, Patch, PatchParams, PostParams};
use kube::{Client, ResourceExt};
use mizzen::MeshInstall;
use mizzen_operator::controller::{Options, run};
use mizzen_operator::metrics::Metrics;
use serde_json::{Value, json};
use support::{Cluster, Requests, eventually};

const WAIT: Duration = Duration::from_secs(60);

/// One scenario's MeshInstall and the controller reconciling it.
struct Scenario {
    cluster: Arc<Cluster>,
    client: Client,
    /// What the operator sent.
    requests: Requests,
    name: String,
    operator_ns: String,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<()>>,
    /// The controller's counters.
    metrics: Arc<Metrics>,
    /// Stands in for the webhook (out of cluster): the operator only checks that it accepts connections.
    webhook: Option<std::net::TcpListener>,
    /// The webhook's port, bound but not listening (connections are refused) until the webhook comes up: held, so
    /// nothing else can take it meanwhile.
    reserved: Option<tokio::net::TcpSocket>,
    webhook_port: u16,
    /// The operator manages an in-cluster webhook (no `--webhook-url`): it reads the webhook's readiness from the
    /// `mizzen-webhook` Deployment in its namespace.
    in_cluster: bool,
}

impl Scenario {
    /// Starts listening on the reserved webhook port.
    fn webhook_comes_up(&mut self) {
        let socket = self.reserved.take().expect("the webhook's port is reserved");
        let listener = socket.listen(128).expect("listening on the webhook's port");
        self.webhook = Some(listener.into_std().expect("a std listener"));
    }
}

/// A MeshInstall spec for a scenario: its own revision and namespace, one ClusterIP ingress gateway.
fn spec(name: &str) -> Value {
    json!({
        "version": "1.28.0",
        "namespace": format!("{name}-mesh"),
        "revision": name,
        "meshConfig": {"accessLogFile": "/dev/stdout"},
        "gateways": [{"name": "istio-ingressgateway", "kind": "ingress", "service": {"type": "ClusterIP"}}],
    })
}

impl Scenario {
    /// Creates the MeshInstall and starts a controller for it; `None` when there is no API server (skipped).
    async fn start(name: &str, spec: Value) -> Option<Self> {
        Self::start_with_webhook(name, spec, true).await
    }

    /// Like [`Scenario::start`]; without a webhook listening when `webhook_up` is false.
    async fn start_with_webhook(name: &str, spec: Value, webhook_up: bool) -> Option<Self> {
        Self::start_as(name, spec, webhook_up, false).await
    }

    /// Like [`Scenario::start`], with the operator managing an in-cluster webhook (see `Scenario::in_cluster`).
    async fn start_in_cluster(name: &str, spec: Value) -> Option<Self> {
        Self::start_as(name, spec, false, true).await
    }

    async fn start_as(name: &str, spec: Value, webhook_up: bool, in_cluster: bool) -> Option<Self> {
        let cluster = support::cluster().await?;
        let client = cluster.client().await;
        let operator_ns = format!("{name}-op");
        // Namespaces a previous run is still deleting must be gone first.
        for ns in [format!("{name}-mesh"), format!("{name}-b-mesh")] {
            settled_namespace(&client, &ns).await;
        }
        ensure_namespace(&client, &operator_ns).await;
        let socket = tokio::net::TcpSocket::new_v4().expect("a socket for the webhook stand-in");
        socket
            .bind(([127, 0, 0, 1], 0).into())
            .expect("a port for the webhook stand-in");
        let webhook_port = socket.local_addr().expect("addr").port();
        let mut s = Self {
            cluster,
            client,
            requests: Requests::default(),
            metrics: Arc::new(Metrics::default()),
            name: name.to_owned(),
            operator_ns,
            stop: None,
            task: None,
            webhook: None,
            reserved: Some(socket),
            webhook_port,
            in_cluster,
        };
        if webhook_up {
            s.webhook_comes_up();
        }
        s.create_mesh(name, spec).await;
        s.start_controller().await;
        Some(s)
    }

    async fn create_mesh(&self, name: &str, spec: Value) {
        let meshes: Api<MeshInstall> = Api::all(self.client.clone());
        let mi = json!({
            "apiVersion": "mizzen.io/v1alpha1", "kind": "MeshInstall",
            "metadata": {"name": name, "labels": {"mizzen.io/test": self.name}},
            "spec": spec,
        });
        // A leftover from an interrupted run is replaced.
        if meshes.get_opt(name).await.expect("get").is_some() {
            let _ = meshes.delete(name, &DeleteParams::foreground()).await;
            eventually(WAIT, "the leftover MeshInstall is gone", || async {
                meshes.get_opt(name).await.expect("get").is_none().then_some(())
            })
            .await;
        }
        meshes
            .create(
                &PostParams::default(),
                &serde_json::from_value(mi).expect("MeshInstall"),
            )
            .await
            .expect("creating the MeshInstall");
    }

    async fn start_controller(&mut self) {
        let (client, requests) = self.cluster.counting_client().await;
        self.requests = requests;
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let options = Options {
            namespace: self.operator_ns.clone(),
            identity: Some(format!("test-{}", self.name)),
            meshinstall_selector: Some(format!("mizzen.io/test={}", self.name)),
            webhook_url: (!self.in_cluster).then(|| format!("https://127.0.0.1:{}/inject", self.webhook_port)),
            ..Options::default()
        };
        self.task = Some(tokio::spawn(run(client, options, self.metrics.clone(), async {
            let _ = stopped.await;
        })));
        self.stop = Some(stop);
    }

    async fn stop_controller(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
    }

    fn mesh_ns(&self) -> String {
        format!("{}-mesh", self.name)
    }

    fn api<K>(&self) -> Api<K>
    where
        K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>,
    {
        Api::namespaced(self.client.clone(), &self.mesh_ns())
    }

    async fn mesh(&self, name: &str) -> MeshInstall {
        Api::<MeshInstall>::all(self.client.clone())
            .get(name)
            .await
            .expect("MeshInstall")
    }

    /// Waits for a condition of MeshInstall `name` to have `status` and `reason`; returns its message.
    async fn condition(&self, name: &str, type_: &str, status: &str, reason: &str) -> String {
        eventually(WAIT, &format!("{name}: {type_}={status} ({reason})"), || async {
            let mi = self.mesh(name).await;
            let s = mi.status?;
            let c = s.conditions.iter().find(|c| c.type_ == type_)?;
            (c.status == status && c.reason == reason && s.observed_generation == mi.metadata.generation)
                .then(|| c.message.clone())
        })
        .await
    }

    async fn patch_spec(&self, name: &str, patch: Value) {
        Api::<MeshInstall>::all(self.client.clone())
            .patch(name, &PatchParams::default(), &Patch::Merge(json!({"spec": patch})))
            .await
            .expect("patching the spec");
    }

    async fn annotate(&self, name: &str, key: &str, value: Option<&str>) {
        Api::<MeshInstall>::all(self.client.clone())
            .patch(
                name,
                &PatchParams::default(),
                &Patch::Merge(json!({"metadata": {"annotations": {key: value}}})),
            )
            .await
            .expect("annotating");
    }

    /// Events about this run's MeshInstall `name` (not an earlier run's of that name) with `reason`, as their notes.
    async fn events(&self, reason: &str) -> Vec<String> {
        let events: Api<k8s_openapi::api::events::v1::Event> = Api::all(self.client.clone());
        let list = events.list(&Default::default()).await.expect("events");
        let uid = self.mesh(&self.name).await.metadata.uid;
        list.items
            .into_iter()
            .filter(|e| e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some(self.name.as_str()))
            .filter(|e| e.regarding.as_ref().and_then(|r| r.uid.clone()) == uid)
            .filter(|e| e.reason.as_deref() == Some(reason))
            .filter_map(|e| e.note)
            .collect()
    }

    /// Stops the controller and deletes what the scenario made.
    async fn finish(mut self) {
        self.stop_controller().await;
        let meshes: Api<MeshInstall> = Api::all(self.client.clone());
        let mine = meshes
            .list(&kube::api::ListParams::default().labels(&format!("mizzen.io/test={}", self.name)))
            .await
            .map(|l| l.items)
            .unwrap_or_default();
        for mi in mine {
            let _ = meshes.delete(&mi.name_any(), &DeleteParams::background()).await;
        }
        let namespaces: Api<Namespace> = Api::all(self.client.clone());
        for ns in [
            self.operator_ns.clone(),
            self.mesh_ns(),
            format!("{}-b-mesh", self.name),
        ] {
            let _ = namespaces.delete(&ns, &DeleteParams::background()).await;
        }
    }
}

/// Waits until namespace `name` is not terminating (gone or active).
async fn settled_namespace(client: &Client, name: &str) {
    let namespaces: Api<Namespace> = Api::all(client.clone());
    eventually(
        Duration::from_secs(120),
        &format!("namespace {name} finishes terminating"),
        || async {
            match namespaces.get_opt(name).await.expect("get") {
                Some(ns) if ns.metadata.deletion_timestamp.is_some() => None,
                _ => Some(()),
            }
        },
    )
    .await;
}

/// Creates namespace `name` unless it exists (after any deletion of it has finished).
async fn ensure_namespace(client: &Client, name: &str) {
    settled_namespace(client, name).await;
    let namespaces: Api<Namespace> = Api::all(client.clone());
    let ns = Namespace {
        metadata: ObjectMeta {
            name: Some(name.to_owned()),
            ..ObjectMeta::default()
        },
        ..Namespace::default()
    };
    match namespaces.create(&PostParams::default(), &ns).await {
        Ok(_) => {}
        Err(kube::Error::Api(e)) if e.code == 409 => {}
        Err(e) => panic!("creating namespace {name}: {e}"),
    }
}

fn writes_of(requests: &Requests) -> Vec<String> {
    requests.take_writes()
}

#[tokio::test]
async fn first_reconcile_creates_everything_and_a_second_writes_nothing() {
    let Some(s) = Scenario::start("sc-create", spec("sc-create")).await else {
        return;
    };
    s.condition("sc-create", "Reconciled", "True", "Applied").await;
    let mi = s.mesh("sc-create").await;
    let uid = mi.uid().expect("uid");
    // Every child is owned by the MeshInstall and carries mizzen's labels.
    let deployments: Api<Deployment> = s.api();
    for name in ["istiod-sc-create", "istio-ingressgateway"] {
        let d = deployments.get(name).await.expect(name);
        assert!(
            d.owner_references()
                .iter()
                .any(|o| o.uid == uid && o.controller == Some(true)),
            "{name} is owned"
        );
        assert_eq!(
            d.labels().get("app.kubernetes.io/managed-by").map(String::as_str),
            Some("mizzen")
        );
        assert_eq!(
            d.labels().get("mizzen.io/meshinstall").map(String::as_str),
            Some("sc-create")
        );
    }
    let mwc: Api<k8s_openapi::api::admissionregistration::v1::MutatingWebhookConfiguration> =
        Api::all(s.client.clone());
    mwc.get("mizzen-sidecar-injector-sc-create")
        .await
        .expect("the webhook configuration");
    // No pods run here (no node), so the status reports the rollout in progress, by component.
    let message = s.condition("sc-create", "Ready", "False", "RollingOut").await;
    assert_eq!(message, "0/2 components available");
    let status = s.mesh("sc-create").await.status.expect("status");
    assert_eq!(status.ready.as_deref(), Some("0/2"));
    assert_eq!(status.state, Some(mizzen::api::MeshState::Progressing));

    // Nothing to change: a reconcile (triggered by an annotation) sends no write at all.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let settled = writes_of(&s.requests);
    assert!(!settled.is_empty(), "the first reconcile wrote");
    let reconciles = s.metrics.reconciles();
    s.annotate("sc-create", "test.mizzen.io/poke", Some("1")).await;
    eventually(WAIT, "the annotation triggers a reconcile", || async {
        (s.metrics.reconciles() > reconciles).then_some(())
    })
    .await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let writes = writes_of(&s.requests);
    assert!(
        writes.is_empty(),
        "a reconcile with nothing to change wrote: {writes:#?}"
    );
    s.finish().await;
}

#[tokio::test]
async fn deleted_children_are_recreated_and_edited_ones_reverted() {
    let Some(s) = Scenario::start("sc-drift", spec("sc-drift")).await else {
        return;
    };
    s.condition("sc-drift", "Reconciled", "True", "Applied").await;
    let deployments: Api<Deployment> = s.api();
    let old = deployments.get("istiod-sc-drift").await.expect("istiod").uid();
    deployments
        .delete("istiod-sc-drift", &DeleteParams::default())
        .await
        .expect("delete");
    eventually(WAIT, "istiod recreated", || async {
        let d = deployments.get_opt("istiod-sc-drift").await.expect("get")?;
        (d.uid() != old && d.metadata.deletion_timestamp.is_none()).then_some(())
    })
    .await;
    let services: Api<Service> = s.api();
    services
        .patch(
            "istio-ingressgateway",
            &PatchParams::apply("someone-else").force(),
            &Patch::Apply(json!({"apiVersion": "v1", "kind": "Service",
                "spec": {"ports": [{"name": "http2", "port": 80, "targetPort": 9999}]}})),
        )
        .await
        .expect("editing the gateway Service");
    eventually(WAIT, "the gateway Service's targetPort is restored", || async {
        let svc = services.get("istio-ingressgateway").await.expect("svc");
        let port = svc.spec?.ports?.into_iter().find(|p| p.port == 80)?;
        (port.target_port == Some(k8s_openapi::apimachinery::pkg::util::intstr::IntOrString::Int(8080))).then_some(())
    })
    .await;
    // A subject added to a binding (a list applied whole): removed again.
    let bindings: Api<k8s_openapi::api::rbac::v1::ClusterRoleBinding> = Api::all(s.client.clone());
    let binding = bindings
        .list(&kube::api::ListParams::default().labels("mizzen.io/meshinstall=sc-drift"))
        .await
        .expect("bindings")
        .items
        .into_iter()
        .next()
        .expect("istiod has a ClusterRoleBinding");
    let binding_name = binding.name_any();
    bindings
        .patch(
            &binding_name,
            &PatchParams::default(),
            &Patch::Json::<()>(
                serde_json::from_value(json!([{"op": "add", "path": "/subjects/-",
                    "value": {"kind": "User", "name": "mallory", "apiGroup": "rbac.authorization.k8s.io"}}]))
                .expect("patch"),
            ),
        )
        .await
        .expect("adding a subject");
    eventually(WAIT, "the added subject is removed", || async {
        let b = bindings.get(&binding_name).await.expect("binding");
        (!b.subjects.unwrap_or_default().iter().any(|x| x.name == "mallory")).then_some(())
    })
    .await;
    // A `false` removed from a security context (a zero value someone deleted): put back.
    let path = "/spec/template/spec/containers/0/securityContext/allowPrivilegeEscalation";
    deployments
        .patch(
            "istiod-sc-drift",
            &PatchParams::default(),
            &Patch::Json::<()>(serde_json::from_value(json!([{"op": "remove", "path": path}])).expect("patch")),
        )
        .await
        .expect("removing allowPrivilegeEscalation");
    eventually(WAIT, "allowPrivilegeEscalation: false is back", || async {
        let d = deployments.get("istiod-sc-drift").await.expect("istiod");
        let c = d.spec?.template.spec?.containers.into_iter().next()?;
        (c.security_context?.allow_privilege_escalation == Some(false)).then_some(())
    })
    .await;
    s.finish().await;
}

#[tokio::test]
async fn objects_that_exist_and_are_not_mizzens_are_adopted_only_when_asked() {
    let name = "sc-adopt";
    let Some(cluster) = support::cluster().await else {
        return;
    };
    let client = cluster.client().await;
    ensure_namespace(&client, &format!("{name}-mesh")).await;
    // Someone's own `istio-<revision>` ConfigMap, where the mesh config goes.
    let configmaps: Api<ConfigMap> = Api::namespaced(client.clone(), &format!("{name}-mesh"));
    let theirs: ConfigMap =
        serde_json::from_value(json!({"metadata": {"name": format!("istio-{name}")}, "data": {"mesh": "theirs"}}))
            .expect("configmap");
    match configmaps.create(&PostParams::default(), &theirs).await {
        Ok(_) => {}
        Err(kube::Error::Api(e)) if e.code == 409 => {}
        Err(e) => panic!("{e}"),
    }
    let Some(s) = Scenario::start(name, spec(name)).await else {
        return;
    };
    let message = s.condition(name, "Reconciled", "False", "Conflict").await;
    assert!(
        message.contains(&format!(
            "ConfigMap {name}-mesh/istio-{name} exists and is not mizzen's"
        )),
        "{message}"
    );
    let cm = configmaps.get(&format!("istio-{name}")).await.expect("configmap");
    assert_eq!(
        cm.data.unwrap_or_default().get("mesh").map(String::as_str),
        Some("theirs"),
        "it was overwritten"
    );
    s.annotate(name, mizzen_operator::ADOPT_ANNOTATION, Some("true")).await;
    s.condition(name, "Reconciled", "True", "Applied").await;
    let cm = configmaps.get(&format!("istio-{name}")).await.expect("configmap");
    assert_eq!(
        cm.labels().get("app.kubernetes.io/managed-by").map(String::as_str),
        Some("mizzen")
    );
    assert!(
        cm.owner_references().iter().any(|o| o.controller == Some(true)),
        "adopted and owned"
    );
    s.finish().await;
}

#[tokio::test]
async fn what_the_spec_no_longer_asks_for_disappears() {
    let mut two = spec("sc-prune");
    two["gateways"] = json!([
        {"name": "istio-ingressgateway", "kind": "ingress",
         "service": {"type": "ClusterIP", "annotations": {"example.com/lb": "internal"}}},
        {"name": "istio-egressgateway", "kind": "egress"},
    ]);
    two["controlPlane"] = json!({"replicas": 3});
    let Some(s) = Scenario::start("sc-prune", two).await else {
        return;
    };
    s.condition("sc-prune", "Reconciled", "True", "Applied").await;
    // A user's ConfigMap that copies mizzen's labels is not mizzen's to delete.
    let configmaps: Api<ConfigMap> = s.api();
    let copy: ConfigMap = serde_json::from_value(json!({
        "metadata": {"name": "users-copy", "labels": {"mizzen.io/meshinstall": "sc-prune",
                      "app.kubernetes.io/managed-by": "mizzen"}},
        "data": {"a": "b"},
    }))
    .expect("configmap");
    configmaps.create(&PostParams::default(), &copy).await.expect("create");
    let deployments: Api<Deployment> = s.api();
    deployments
        .get("istio-egressgateway")
        .await
        .expect("egress gateway exists");
    // An egress gateway's Service is ClusterIP by default; three fixed istiod replicas get a disruption budget.
    let services: Api<Service> = s.api();
    let egress = services.get("istio-egressgateway").await.expect("egress Service");
    assert_eq!(egress.spec.and_then(|s| s.type_).as_deref(), Some("ClusterIP"));
    let pdbs: Api<k8s_openapi::api::policy::v1::PodDisruptionBudget> = s.api();
    let pdb = pdbs.get("istiod-sc-prune").await.expect("istiod's PodDisruptionBudget");
    assert_eq!(
        pdb.spec.and_then(|s| s.max_unavailable),
        Some(k8s_openapi::apimachinery::pkg::util::intstr::IntOrString::Int(1))
    );

    // Drop the egress gateway and the Service annotation; turn on autoscaling (replicas are then the HPA's).
    s.patch_spec(
        "sc-prune",
        json!({"gateways": [{"name": "istio-ingressgateway", "kind": "ingress", "service": {"type": "ClusterIP"}}],
               "controlPlane": {"autoscale": {"min": 1, "max": 3}}}),
    )
    .await;
    eventually(WAIT, "the egress gateway's objects are deleted", || async {
        let sa: Api<k8s_openapi::api::core::v1::ServiceAccount> = s.api();
        let gone = deployments.get_opt("istio-egressgateway").await.expect("get").is_none()
            && sa
                .get_opt("istio-egressgateway-service-account")
                .await
                .expect("get")
                .is_none();
        gone.then_some(())
    })
    .await;
    eventually(WAIT, "the removed Service annotation is gone", || async {
        let svc = services.get("istio-ingressgateway").await.expect("svc");
        (!svc.annotations().contains_key("example.com/lb")).then_some(())
    })
    .await;
    eventually(WAIT, "istiod's replicas are no longer the operator's", || async {
        let d = deployments.get("istiod-sc-prune").await.expect("istiod");
        let ours = d
            .managed_fields()
            .iter()
            .find(|m| {
                m.manager.as_deref() == Some(mizzen_operator::FIELD_MANAGER) && m.operation.as_deref() == Some("Apply")
            })?
            .fields_v1
            .clone()?;
        (ours.0["f:spec"].get("f:replicas").is_none()).then_some(())
    })
    .await;
    // Handed over at its value, not reset to 1 by the API server's defaulting (the HPA has no metrics here).
    let replicas = deployments
        .get("istiod-sc-prune")
        .await
        .expect("istiod")
        .spec
        .and_then(|s| s.replicas);
    assert_eq!(replicas, Some(3), "turning autoscaling on changed istiod's replicas");
    assert!(
        configmaps.get_opt("users-copy").await.expect("get").is_some(),
        "a user's object with copied labels was pruned"
    );
    s.finish().await;
}

#[tokio::test]
async fn addons_are_reported_in_the_status_and_pruned_when_disabled() {
    let name = "sc-addons";
    let mut with_addons = spec(name);
    with_addons["addons"] = json!({"prometheus": {"enabled": true}, "grafana": {"enabled": true},
                                   "jaeger": {"enabled": true, "sampling": 100}});
    let Some(s) = Scenario::start(name, with_addons).await else {
        return;
    };
    s.condition(name, "Reconciled", "True", "Applied").await;
    let uid = s.mesh(name).await.uid().expect("uid");
    let deployments: Api<Deployment> = s.api();
    let services: Api<Service> = s.api();
    let configmaps: Api<ConfigMap> = s.api();
    let accounts: Api<ServiceAccount> = s.api();
    let cluster_roles: Api<ClusterRole> = Api::all(s.client.clone());
    let bindings: Api<ClusterRoleBinding> = Api::all(s.client.clone());
    let cluster_name = format!("prometheus-{name}-mesh");
    for d in ["prometheus", "grafana", "jaeger"] {
        let d = deployments.get(d).await.expect(d);
        assert!(
            d.owner_references()
                .iter()
                .any(|o| o.uid == uid && o.controller == Some(true)),
            "{} is owned",
            d.name_any()
        );
    }
    for svc in ["prometheus", "grafana", "tracing", "zipkin", "jaeger-collector"] {
        services.get(svc).await.expect(svc);
    }
    cluster_roles.get(&cluster_name).await.expect("Prometheus' ClusterRole");
    bindings
        .get(&cluster_name)
        .await
        .expect("Prometheus' ClusterRoleBinding");
    // The mesh's tracing points at this namespace's zipkin, and istiod samples what the addon asks.
    let mesh = configmaps.get(&format!("istio-{name}")).await.expect("mesh config");
    let mesh_text = mesh.data.unwrap_or_default().remove("mesh").unwrap_or_default();
    assert!(mesh_text.contains(&format!("zipkin.{name}-mesh:9411")), "{mesh_text}");
    let istiod = deployments.get(&format!("istiod-{name}")).await.expect("istiod");
    let env = istiod
        .spec
        .and_then(|s| s.template.spec)
        .map(|s| s.containers[0].env.clone().unwrap_or_default());
    let sampling = env.into_iter().flatten().find(|e| e.name == "PILOT_TRACE_SAMPLING");
    assert_eq!(sampling.and_then(|e| e.value).as_deref(), Some("100"));

    // The API server's PodSecurity admission takes the addons' pods at the `restricted` level (and refuses istiod's,
    // which sets no seccomp profile: the check is live).
    let restricted = format!("{name}-restricted");
    ensure_namespace(&s.client, &restricted).await;
    Api::<Namespace>::all(s.client.clone())
        .patch(
            &restricted,
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"labels": {"pod-security.kubernetes.io/enforce": "restricted"}}})),
        )
        .await
        .expect("labelling the namespace restricted");
    let pods: Api<Pod> = Api::namespaced(s.client.clone(), &restricted);
    // The controller-manager creates it; envtest has none, so create it when missing.
    let restricted_accounts: Api<ServiceAccount> = Api::namespaced(s.client.clone(), &restricted);
    let default_account: ServiceAccount =
        serde_json::from_value(json!({"metadata": {"name": "default"}})).expect("service account");
    match restricted_accounts
        .create(&PostParams::default(), &default_account)
        .await
    {
        Ok(_) => {}
        Err(kube::Error::Api(e)) if e.code == 409 => {}
        Err(e) => panic!("creating the default ServiceAccount: {e}"),
    }
    let dry_run = PostParams {
        dry_run: true,
        ..PostParams::default()
    };
    let pod_of = |d: Deployment| {
        let mut spec = d.spec.and_then(|s| s.template.spec).expect("pod template");
        // Its ServiceAccount lives in the mesh namespace; PodSecurity does not look at it.
        spec.service_account_name = None;
        spec.service_account = None;
        Pod {
            metadata: ObjectMeta {
                name: Some(format!("{}-check", d.metadata.name.unwrap_or_default())),
                ..ObjectMeta::default()
            },
            spec: Some(spec),
            ..Pod::default()
        }
    };
    for addon in ["prometheus", "grafana", "jaeger"] {
        let pod = pod_of(deployments.get(addon).await.expect(addon));
        if let Err(e) = pods.create(&dry_run, &pod).await {
            panic!("{addon}'s pod is refused at the restricted level: {e}");
        }
    }
    let istiod = pod_of(deployments.get(&format!("istiod-{name}")).await.expect("istiod"));
    match pods.create(&dry_run, &istiod).await {
        Err(kube::Error::Api(e)) if e.code == 403 && e.message.contains("restricted") => {}
        other => panic!("istiod's pod should violate the restricted level: {other:?}"),
    }
    let _ = Api::<Namespace>::all(s.client.clone())
        .delete(&restricted, &DeleteParams::background())
        .await;

    // No pods run here (no node): each addon is a component not yet available, and READY counts it.
    let message = s.condition(name, "Ready", "False", "RollingOut").await;
    assert_eq!(message, "0/5 components available");
    let status = s.mesh(name).await.status.expect("status");
    assert_eq!(status.ready.as_deref(), Some("0/5"));
    let addons = status.components.expect("components").addons;
    let listed: Vec<(&str, i32, i32)> = addons.iter().map(|a| (a.name.as_str(), a.ready, a.desired)).collect();
    assert_eq!(listed, [("prometheus", 0, 1), ("grafana", 0, 1), ("jaeger", 0, 1)]);

    // The addons' objects survive the API server's normalisation: a reconcile with nothing to change writes nothing.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let _ = writes_of(&s.requests);
    s.annotate(name, "test.mizzen.io/poke", Some("1")).await;
    tokio::time::sleep(Duration::from_secs(5)).await;
    let writes = writes_of(&s.requests);
    assert!(
        writes.is_empty(),
        "a reconcile with nothing to change wrote: {writes:#?}"
    );

    // Disabling Prometheus deletes everything it had, cluster-scoped RBAC included; the others stay.
    s.patch_spec(name, json!({"addons": {"prometheus": {"enabled": false}}}))
        .await;
    eventually(WAIT, "Prometheus' objects are deleted", || async {
        let gone = deployments.get_opt("prometheus").await.expect("get").is_none()
            && services.get_opt("prometheus").await.expect("get").is_none()
            && configmaps.get_opt("prometheus").await.expect("get").is_none()
            && accounts.get_opt("prometheus").await.expect("get").is_none()
            && cluster_roles.get_opt(&cluster_name).await.expect("get").is_none()
            && bindings.get_opt(&cluster_name).await.expect("get").is_none();
        gone.then_some(())
    })
    .await;
    deployments.get("jaeger").await.expect("jaeger stays");
    services.get("zipkin").await.expect("zipkin stays");
    let message = s.condition(name, "Ready", "False", "RollingOut").await;
    assert_eq!(message, "0/4 components available");
    let status = s.mesh(name).await.status.expect("status");
    let addons = status.components.expect("components").addons;
    assert_eq!(
        addons.iter().map(|a| a.name.as_str()).collect::<Vec<_>>(),
        ["grafana", "jaeger"]
    );
    eventually(WAIT, "a Pruned Event names Prometheus' Deployment", || async {
        s.events("Pruned")
            .await
            .iter()
            .any(|n| n.contains(&format!("Deployment/{name}-mesh/prometheus")))
            .then_some(())
    })
    .await;
    s.finish().await;
}

#[tokio::test]
async fn invalid_spec_is_reported_by_field() {
    let mut bad = spec("sc-invalid");
    bad["gateways"] = json!([{"name": "istiod", "kind": "ingress"}]);
    let Some(s) = Scenario::start("sc-invalid", bad).await else {
        return;
    };
    let message = s.condition("sc-invalid", "Reconciled", "False", "InvalidSpec").await;
    assert!(message.contains("spec.gateways[0].name"), "{message}");
    let status = s.mesh("sc-invalid").await.status.expect("status");
    assert_eq!(status.state, Some(mizzen::api::MeshState::Error));
    eventually(WAIT, "a Warning Event names the field", || async {
        s.events("InvalidSpec")
            .await
            .iter()
            .any(|n| n.contains("spec.gateways[0].name"))
            .then_some(())
    })
    .await;
    let deployments: Api<Deployment> = s.api();
    assert!(
        deployments.get_opt("istiod-sc-invalid").await.expect("get").is_none(),
        "nothing applied"
    );
    s.finish().await;
}

#[tokio::test]
async fn a_spec_refused_or_failing_to_apply_is_not_injected() {
    let name = "sc-served";
    let Some(s) = Scenario::start(name, spec(name)).await else {
        return;
    };
    s.condition(name, "Reconciled", "True", "Applied").await;
    let served = |mi: &MeshInstall| mizzen::revisions::serving_spec(mi).expect("served");
    let first = s.mesh(name).await;
    assert_eq!(served(&first), first.spec);
    assert_eq!(
        first.status.as_ref().and_then(|s| s.applied_generation),
        first.metadata.generation
    );
    // Refused (Envoy would not start with this level): new pods keep the spec applied.
    s.patch_spec(
        name,
        json!({"proxy": {"componentLogLevel": "misc:loud", "logLevel": "debug"}}),
    )
    .await;
    s.condition(name, "Reconciled", "False", "InvalidSpec").await;
    assert_eq!(served(&s.mesh(name).await), first.spec, "a refused spec is served");
    // Valid, but an object fails to apply (the API server refuses istiod's request above its limit).
    s.patch_spec(
        name,
        json!({"proxy": {"componentLogLevel": "misc:error"},
               "controlPlane": {"resources": {"requests": {"cpu": "2"}, "limits": {"cpu": "1"}}}}),
    )
    .await;
    let message = s.condition(name, "Reconciled", "False", "ApplyFailed").await;
    assert!(message.contains("istiod"), "{message}");
    assert_eq!(
        served(&s.mesh(name).await),
        first.spec,
        "a spec that failed to apply is served"
    );
    // Fixed: applied, and served.
    s.patch_spec(name, json!({"controlPlane": {"resources": null}})).await;
    s.condition(name, "Reconciled", "True", "Applied").await;
    let now = s.mesh(name).await;
    assert_eq!(now.spec.proxy.log_level, "debug");
    assert_eq!(
        now.status.as_ref().and_then(|s| s.applied_generation),
        now.metadata.generation
    );
    assert_eq!(served(&now), now.spec);
    s.finish().await;
}

#[tokio::test]
async fn an_in_cluster_webhook_without_ready_pods_is_in_the_status() {
    let name = "sc-webhook-pods";
    let Some(s) = Scenario::start_in_cluster(name, spec(name)).await else {
        return;
    };
    let webhook = |mi: MeshInstall| {
        let w = mi.status?.components?.webhook?;
        Some((w.ready, w.desired))
    };
    // No webhook Deployment yet: none of its pods can be ready.
    s.condition(name, "Ready", "False", "WebhookNotReady").await;
    assert_eq!(webhook(s.mesh(name).await), Some((0, 0)));
    // Its Deployment, whose pods cannot run (no node): two desired, none ready, the configuration still waits.
    let deployments: Api<Deployment> = Api::namespaced(s.client.clone(), &s.operator_ns);
    let deployment = json!({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": mizzen_operator::reconcile::WEBHOOK_DEPLOYMENT},
        "spec": {
            "replicas": 2,
            "selector": {"matchLabels": {"app": "webhook-stand-in"}},
            "template": {
                "metadata": {"labels": {"app": "webhook-stand-in"}},
                "spec": {"containers": [{"name": "webhook", "image": "example.invalid/webhook:0"}]},
            },
        },
    });
    deployments
        .create(
            &PostParams::default(),
            &serde_json::from_value(deployment).expect("Deployment"),
        )
        .await
        .expect("creating the webhook Deployment");
    eventually(WAIT, "status.components.webhook is 0 of 2", || async {
        (webhook(s.mesh(name).await) == Some((0, 2))).then_some(())
    })
    .await;
    s.condition(name, "Ready", "False", "WebhookNotReady").await;
    let configs: Api<k8s_openapi::api::admissionregistration::v1::MutatingWebhookConfiguration> =
        Api::all(s.client.clone());
    let mine = configs
        .list(&kube::api::ListParams::default())
        .await
        .expect("list")
        .items
        .into_iter()
        .filter(|c| c.owner_references().iter().any(|o| o.name == name))
        .count();
    assert_eq!(mine, 0, "a webhook configuration before a webhook pod is ready");
    s.finish().await;
}

#[tokio::test]
async fn paused_mesh_installs_are_left_alone() {
    let Some(s) = Scenario::start("sc-paused", spec("sc-paused")).await else {
        return;
    };
    s.condition("sc-paused", "Reconciled", "True", "Applied").await;
    s.annotate("sc-paused", mizzen_operator::PAUSED_ANNOTATION, Some("true"))
        .await;
    s.condition("sc-paused", "Reconciled", "False", "Paused").await;
    let deployments: Api<Deployment> = s.api();
    deployments
        .delete("istiod-sc-paused", &DeleteParams::default())
        .await
        .expect("delete");
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert!(
        deployments.get_opt("istiod-sc-paused").await.expect("get").is_none(),
        "a paused MeshInstall was reconciled"
    );
    // A spec changed while paused is not injected either: the webhook serves the one applied.
    let before = s.mesh("sc-paused").await.spec;
    s.patch_spec("sc-paused", json!({"proxy": {"logLevel": "debug"}})).await;
    // The paused status of the new generation (written by a reconcile that saw it).
    s.condition("sc-paused", "Reconciled", "False", "Paused").await;
    let paused = s.mesh("sc-paused").await;
    assert_eq!(paused.spec.proxy.log_level, "debug");
    assert_eq!(mizzen::revisions::serving_spec(&paused), Some(before));
    s.annotate("sc-paused", mizzen_operator::PAUSED_ANNOTATION, None).await;
    eventually(WAIT, "istiod is back once unpaused", || async {
        deployments.get_opt("istiod-sc-paused").await.expect("get").map(|_| ())
    })
    .await;
    s.condition("sc-paused", "Reconciled", "True", "Applied").await;
    let resumed = s.mesh("sc-paused").await;
    let recorded = resumed.status.as_ref().and_then(|s| s.applied_generation);
    assert_eq!(
        recorded, resumed.metadata.generation,
        "the resumed spec is not recorded"
    );
    assert_eq!(mizzen::revisions::serving_spec(&resumed), Some(resumed.spec));
    s.finish().await;
}

#[tokio::test]
async fn foreground_deletion_is_not_fought() {
    let Some(s) = Scenario::start("sc-delete", spec("sc-delete")).await else {
        return;
    };
    if !s.cluster.has_gc {
        eprintln!(
            "skipped: foreground deletion needs a garbage collector ({})",
            s.cluster.source
        );
        s.finish().await;
        return;
    }
    s.condition("sc-delete", "Reconciled", "True", "Applied").await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let _ = s.requests.take_writes();
    let meshes: Api<MeshInstall> = Api::all(s.client.clone());
    meshes
        .delete("sc-delete", &DeleteParams::foreground())
        .await
        .expect("foreground delete");
    eventually(WAIT, "the MeshInstall is gone", || async {
        meshes.get_opt("sc-delete").await.expect("get").is_none().then_some(())
    })
    .await;
    // Foreground: the MeshInstall goes only after its children (what `kubectl delete --cascade=foreground` waits
    // for, as the README says).
    let deployments: Api<Deployment> = s.api();
    let left: Vec<String> = deployments
        .list(&Default::default())
        .await
        .expect("list")
        .items
        .iter()
        .map(|d| d.name_any())
        .collect();
    assert!(left.is_empty(), "Deployments outlived their MeshInstall: {left:?}");
    let writes: Vec<String> = s
        .requests
        .take_writes()
        .into_iter()
        .filter(|w| !w.contains("/meshinstalls/"))
        .collect();
    assert!(
        writes.is_empty(),
        "the operator wrote children during the deletion: {writes:#?}"
    );
    s.finish().await;
}

#[tokio::test]
async fn two_mesh_installs_reconcile_independently() {
    let Some(s) = Scenario::start("sc-two", spec("sc-two")).await else {
        return;
    };
    let mut b = spec("sc-two-b");
    b["namespace"] = json!("sc-two-b-mesh");
    s.create_mesh("sc-two-b", b).await;
    s.condition("sc-two", "Reconciled", "True", "Applied").await;
    s.condition("sc-two-b", "Reconciled", "True", "Applied").await;
    let a_istiod: Api<Deployment> = s.api();
    let b_istiod: Api<Deployment> = Api::namespaced(s.client.clone(), "sc-two-b-mesh");
    let a_generation = a_istiod.get("istiod-sc-two").await.expect("a").metadata.generation;
    b_istiod.get("istiod-sc-two-b").await.expect("b");
    s.patch_spec("sc-two-b", json!({"controlPlane": {"env": {"EXAMPLE": "1"}}}))
        .await;
    eventually(WAIT, "b's istiod gets the new variable", || async {
        let d = b_istiod.get("istiod-sc-two-b").await.expect("b");
        let env = d.spec?.template.spec?.containers.into_iter().next()?.env?;
        env.iter().any(|e| e.name == "EXAMPLE").then_some(())
    })
    .await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(
        a_istiod.get("istiod-sc-two").await.expect("a").metadata.generation,
        a_generation,
        "changing one MeshInstall touched the other's istiod"
    );
    s.finish().await;
}

#[tokio::test]
async fn overlapping_mesh_installs_report_a_conflict_and_the_older_keeps_its_objects() {
    let Some(s) = Scenario::start("sc-conflict", spec("sc-conflict")).await else {
        return;
    };
    s.condition("sc-conflict", "Reconciled", "True", "Applied").await;
    let owner = s.mesh("sc-conflict").await.uid().expect("uid");
    // Same namespace and gateway name, another revision: the gateway's objects overlap.
    let mut b = spec("sc-conflict-b");
    b["namespace"] = json!("sc-conflict-mesh");
    s.create_mesh("sc-conflict-b", b).await;
    let message = s.condition("sc-conflict-b", "Reconciled", "False", "Conflict").await;
    assert!(
        message.contains("Deployment sc-conflict-mesh/istio-ingressgateway belongs to MeshInstall sc-conflict"),
        "{message}"
    );
    eventually(WAIT, "a Warning Event names the other MeshInstall", || async {
        let events: Api<k8s_openapi::api::events::v1::Event> = Api::all(s.client.clone());
        let list = events.list(&Default::default()).await.expect("events");
        list.items
            .iter()
            .any(|e| {
                e.reason.as_deref() == Some("Conflict")
                    && e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some("sc-conflict-b")
                    && e.note.as_deref().is_some_and(|n| n.contains("MeshInstall sc-conflict"))
            })
            .then_some(())
    })
    .await;
    // The younger's own objects exist; the shared one stays the older's.
    let deployments: Api<Deployment> = s.api();
    deployments.get("istiod-sc-conflict-b").await.expect("b's istiod");
    tokio::time::sleep(Duration::from_secs(3)).await;
    let gw = deployments.get("istio-ingressgateway").await.expect("gateway");
    assert!(
        gw.owner_references()
            .iter()
            .any(|o| o.uid == owner && o.controller == Some(true)),
        "the older MeshInstall lost its gateway"
    );
    // The older one's spec turns invalid (it renders nothing): what it controls stays its own.
    let meshes: Api<MeshInstall> = Api::all(s.client.clone());
    meshes
        .patch(
            "sc-conflict",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"gateways": [{"name": "istiod", "kind": "ingress"}]}})),
        )
        .await
        .expect("an invalid spec for the older MeshInstall");
    s.condition("sc-conflict", "Reconciled", "False", "InvalidSpec").await;
    s.annotate("sc-conflict-b", "test.mizzen.io/poke", Some("1")).await;
    tokio::time::sleep(Duration::from_secs(5)).await;
    let message = s.condition("sc-conflict-b", "Reconciled", "False", "Conflict").await;
    assert!(message.contains("belongs to MeshInstall sc-conflict"), "{message}");
    let gw = deployments.get("istio-ingressgateway").await.expect("gateway");
    assert!(
        gw.owner_references()
            .iter()
            .any(|o| o.uid == owner && o.controller == Some(true)),
        "the younger MeshInstall took the gateway while the older one's spec was invalid"
    );
    s.finish().await;
}

#[tokio::test]
async fn a_persistent_failure_backs_off() {
    let name = "sc-backoff";
    let Some(cluster) = support::cluster().await else {
        return;
    };
    // An istiod Deployment that exists (labelled as mizzen's, so not an adoption conflict) with another
    // selector: the operator's apply is refused as immutable.
    let client = cluster.client().await;
    ensure_namespace(&client, &format!("{name}-mesh")).await;
    let squatter: Deployment = serde_json::from_value(json!({
        "metadata": {"name": format!("istiod-{name}"), "labels": {"app.kubernetes.io/managed-by": "mizzen"}},
        "spec": {"selector": {"matchLabels": {"squatter": "yes"}},
                 "template": {"metadata": {"labels": {"squatter": "yes"}},
                              "spec": {"containers": [{"name": "c", "image": "example.com/c"}]}}},
    }))
    .expect("deployment");
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), &format!("{name}-mesh"));
    match deployments.create(&PostParams::default(), &squatter).await {
        Ok(_) => {}
        // Left by an earlier run: make sure it carries the label.
        Err(kube::Error::Api(e)) if e.code == 409 => {
            deployments
                .patch(
                    &format!("istiod-{name}"),
                    &PatchParams::default(),
                    &Patch::Merge(json!({"metadata": {"labels": {"app.kubernetes.io/managed-by": "mizzen"}}})),
                )
                .await
                .expect("labelling the squatter");
        }
        Err(e) => panic!("{e}"),
    }
    let Some(s) = Scenario::start(name, spec(name)).await else {
        return;
    };
    let message = s.condition(name, "Reconciled", "False", "ApplyFailed").await;
    assert!(message.contains(&format!("istiod-{name}")), "{message}");
    let _ = s.requests.take_all();
    tokio::time::sleep(Duration::from_secs(60)).await;
    let requests = s.requests.take_all();
    let applies = requests
        .iter()
        .filter(|r| r.starts_with("PATCH") && r.contains("/deployments/"))
        .count();
    let events = requests.iter().filter(|r| r.contains("/events")).count();
    eprintln!(
        "backoff: {} requests in 60 s after the first failure ({applies} applies of the Deployment, {events} Event writes)",
        requests.len()
    );
    let mut kinds = std::collections::BTreeMap::new();
    for r in &requests {
        *kinds.entry(r.clone()).or_insert(0) += 1;
    }
    eprintln!("backoff: requests by path: {kinds:#?}");
    assert!(applies <= 8, "{applies} retries in 60 s: {requests:#?}");
    assert!(
        events <= 2,
        "{events} Event writes in 60 s (rate-limited warnings expected): {requests:#?}"
    );
    s.finish().await;
}

/// A CA of someone's own, named otherwise than mizzen's: (certificate, PKCS#8 key) PEM.
fn own_ca() -> (String, String) {
    ca_for_days(None)
}

/// [`own_ca`], valid for `days` from today when given (rcgen's default otherwise).
fn ca_for_days(days: Option<i64>) -> (String, String) {
    let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    if let Some(days) = days {
        use k8s_openapi::jiff::{SignedDuration, Timestamp, tz::TimeZone};
        let end = (Timestamp::now() + SignedDuration::from_hours(days * 24))
            .to_zoned(TimeZone::UTC)
            .date();
        params.not_after = rcgen::date_time_ymd(i32::from(end.year()), end.month() as u8, end.day() as u8);
    }
    params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    params.key_usages = vec![rcgen::KeyUsagePurpose::KeyCertSign, rcgen::KeyUsagePurpose::CrlSign];
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "Example Corp Root CA");
    let key = rcgen::KeyPair::generate().unwrap();
    let cert = params.self_signed(&key).unwrap();
    (cert.pem(), key.serialize_pem())
}

#[tokio::test]
async fn a_ca_secret_that_cannot_sign_is_reported_never_replaced_and_once_fixed_used() {
    let name = "sc-ownca";
    let Some(cluster) = support::cluster().await else {
        return;
    };
    let client = cluster.client().await;
    let operator_ns = format!("{name}-op");
    ensure_namespace(&client, &operator_ns).await;
    // Made by hand, without the label the operator's Secret watch selects, with an EC key in SEC1 form.
    let (crt, _) = own_ca();
    let sec1 = include_str!("../src/testdata/sec1-ec.key");
    let secrets: Api<k8s_openapi::api::core::v1::Secret> = Api::namespaced(client.clone(), &operator_ns);
    let secret = |crt: &str, key: &str| {
        serde_json::from_value::<k8s_openapi::api::core::v1::Secret>(json!({
            "metadata": {"name": "mizzen-webhook-ca"},
            "stringData": {"ca.crt": crt, "ca.key": key},
        }))
        .unwrap()
    };
    let _ = secrets.delete("mizzen-webhook-ca", &DeleteParams::default()).await;
    secrets
        .create(&PostParams::default(), &secret(&crt, sec1))
        .await
        .expect("creating the CA Secret");
    let Some(s) = Scenario::start(name, spec(name)).await else {
        return;
    };
    let message = s.condition(name, "Reconciled", "False", "ApplyFailed").await;
    assert!(
        message.contains("mizzen-webhook-ca") && message.contains("PKCS#8"),
        "{message}"
    );
    let kept = secrets.get("mizzen-webhook-ca").await.expect("the CA Secret");
    let key_now = kept.data.as_ref().and_then(|d| d.get("ca.key")).map(|b| b.0.clone());
    assert_eq!(key_now.as_deref(), Some(sec1.as_bytes()), "the CA Secret was replaced");
    // Fixed (still without the label): the operator uses it, and the webhook configuration trusts it.
    let (crt, key) = own_ca();
    secrets
        .replace("mizzen-webhook-ca", &PostParams::default(), &secret(&crt, &key))
        .await
        .expect("replacing the CA Secret");
    s.condition(name, "Reconciled", "True", "Applied").await;
    let mwc = webhook_configs(&s.client)
        .get(&format!("mizzen-sidecar-injector-{name}"))
        .await
        .expect("the webhook configuration");
    let bundle = mwc.webhooks.unwrap_or_default()[0]
        .client_config
        .ca_bundle
        .clone()
        .expect("a CA bundle");
    let bundle = String::from_utf8(bundle.0).unwrap();
    assert!(bundle.contains(crt.trim()), "{bundle}");
    // Broken after use (the key of another CA): a Warning Event says so, and the CA in use stays, and so does the
    // Secret. (That the keeper's failure wakes the reconciles, which a healthy install would otherwise do only every
    // 300 s, is a unit test's: here the install is never healthy, without a node, and reconciled every few seconds.)
    let (_, other_key) = own_ca();
    secrets
        .replace("mizzen-webhook-ca", &PostParams::default(), &secret(&crt, &other_key))
        .await
        .expect("replacing the CA Secret");
    let note = eventually(
        Duration::from_secs(150),
        "a Warning Event about the broken CA Secret",
        || async {
            s.events("WebhookCertificate")
                .await
                .into_iter()
                .find(|n| n.contains("is not accepted by a client trusting ca.crt"))
        },
    )
    .await;
    assert!(note.contains("mizzen-webhook-ca"), "{note}");
    let kept = secrets.get("mizzen-webhook-ca").await.expect("the CA Secret");
    let key_now = kept.data.as_ref().and_then(|d| d.get("ca.key")).map(|b| b.0.clone());
    assert_eq!(
        key_now.as_deref(),
        Some(other_key.as_bytes()),
        "the CA Secret was replaced"
    );
    s.finish().await;
}

#[tokio::test]
async fn a_minted_ca_near_its_end_is_renewed_and_an_own_one_warned_about() {
    let name = "sc-caend";
    let Some(cluster) = support::cluster().await else {
        return;
    };
    let client = cluster.client().await;
    let operator_ns = format!("{name}-op");
    ensure_namespace(&client, &operator_ns).await;
    let secrets: Api<k8s_openapi::api::core::v1::Secret> = Api::namespaced(client.clone(), &operator_ns);
    let secret = |crt: &str, key: &str, annotations: Value| {
        serde_json::from_value::<k8s_openapi::api::core::v1::Secret>(json!({
            // With the label the operator's Secret watch selects: it sees each change at once.
            "metadata": {
                "name": "mizzen-webhook-ca",
                "annotations": annotations,
                "labels": {"app.kubernetes.io/name": "mizzen-webhook"},
            },
            "stringData": {"ca.crt": crt, "ca.key": key},
        }))
        .unwrap()
    };
    let data = |s: &k8s_openapi::api::core::v1::Secret, key: &str| {
        s.data
            .as_ref()
            .and_then(|d| d.get(key))
            .map(|b| String::from_utf8_lossy(&b.0).into_owned())
    };
    for leftover in ["mizzen-webhook-ca", "mizzen-webhook-tls"] {
        let _ = secrets.delete(leftover, &DeleteParams::default()).await;
    }
    let bundle_of = |client: Client| async move {
        let mwc = webhook_configs(&client)
            .get(&format!("mizzen-sidecar-injector-{name}"))
            .await
            .ok()?;
        let bundle = mwc.webhooks?.first()?.client_config.ca_bundle.clone()?;
        String::from_utf8(bundle.0).ok()
    };
    // A CA with a year left, not the operator's: used as it is (warnings start 90 days before its end).
    let (old_crt, old_key) = ca_for_days(Some(365));
    secrets
        .create(&PostParams::default(), &secret(&old_crt, &old_key, json!({})))
        .await
        .expect("creating the CA Secret");
    let Some(s) = Scenario::start(name, spec(name)).await else {
        return;
    };
    eventually(
        WAIT,
        "the configuration trusting the CA, the webhook serving under it",
        || async {
            let tls = secrets.get("mizzen-webhook-tls").await.ok()?;
            (data(&tls, "ca.crt")?.trim() == old_crt.trim()).then_some(())?;
            (bundle_of(s.client.clone()).await?.trim() == old_crt.trim()).then_some(())
        },
    )
    .await;
    // Unmarked, it stays through the keeper's passes (a change to the Secret, which it watches, makes one).
    secrets
        .patch(
            "mizzen-webhook-ca",
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"annotations": {"example.com/touched": "1"}}})),
        )
        .await
        .expect("touching the CA Secret");
    tokio::time::sleep(Duration::from_secs(5)).await;
    let kept = secrets.get("mizzen-webhook-ca").await.expect("the CA Secret");
    assert_eq!(
        data(&kept, "ca.crt").as_deref(),
        Some(old_crt.as_str()),
        "an unmarked CA was renewed"
    );
    // Marked as minted by the operator (the mark is the CA's fingerprint; a mark of another CA, or of none, is no
    // mark): renewed as a deleted one is replaced, with the configuration trusting it.
    let mark = |crt: &str| {
        use rustls_pki_types::pem::PemObject as _;
        let der = rustls_pki_types::CertificateDer::from_pem_slice(crt.as_bytes()).unwrap();
        let digest = ring::digest::digest(&ring::digest::SHA256, &der);
        digest.as_ref().iter().map(|b| format!("{b:02x}")).collect::<String>()
    };
    secrets
        .patch(
            "mizzen-webhook-ca",
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"annotations": {"mizzen.io/ca-minted": mark(&old_crt)}}})),
        )
        .await
        .expect("annotating the CA Secret");
    let renewed = eventually(Duration::from_secs(120), "a renewed CA", || async {
        let ca = secrets.get("mizzen-webhook-ca").await.ok()?;
        let crt = data(&ca, "ca.crt")?;
        (crt.trim() != old_crt.trim()).then_some((ca, crt))
    })
    .await;
    let (ca, new_crt) = renewed;
    assert_eq!(
        ca.annotations().get("mizzen.io/ca-minted"),
        Some(&mark(&new_crt)),
        "the successor is marked minted"
    );
    // The old CA stays trusted while the configurations and the webhook move over.
    let previous = data(&ca, "previous.crt").unwrap_or_default();
    assert!(previous.contains(old_crt.trim()), "previous.crt: {previous}");
    // The serving certificate moves to the new CA once every configuration trusts both.
    eventually(
        Duration::from_secs(120),
        "a serving certificate under the new CA, trusted with the old by the configuration",
        || async {
            let tls = secrets.get("mizzen-webhook-tls").await.ok()?;
            (data(&tls, "ca.crt")?.trim() == new_crt.trim()).then_some(())?;
            let bundle = bundle_of(s.client.clone()).await?;
            (bundle.contains(new_crt.trim()) && bundle.contains(old_crt.trim())).then_some(())
        },
    )
    .await;
    assert!(
        s.events("WebhookCertificate").await.is_empty(),
        "a CA a year from its end is not warned about, and a minted one is renewed"
    );
    // Someone's own CA with 30 days left, merged into the Secret (which keeps the mark of the CA it replaces): kept,
    // and a Warning Event says when it ends and what to do.
    let (own_crt, own_key) = ca_for_days(Some(30));
    let b64 = |s: &str| base64::Engine::encode(&base64::engine::general_purpose::STANDARD, s);
    secrets
        .patch(
            "mizzen-webhook-ca",
            &PatchParams::default(),
            &Patch::Merge(json!({"data": {"ca.crt": b64(&own_crt), "ca.key": b64(&own_key), "previous.crt": null}})),
        )
        .await
        .expect("patching the CA Secret");
    let note = eventually(
        Duration::from_secs(150),
        "a Warning Event about the CA's end",
        || async {
            s.events("WebhookCertificate")
                .await
                .into_iter()
                .find(|n| n.contains("expires at"))
        },
    )
    .await;
    assert!(
        note.contains("mizzen-webhook-ca") && note.contains("delete the Secret"),
        "{note}"
    );
    // Settled on it (the webhook serves under it), it is still the CA: a renewal would come no earlier.
    eventually(
        Duration::from_secs(120),
        "a serving certificate under the own CA",
        || async {
            let tls = secrets.get("mizzen-webhook-tls").await.ok()?;
            (data(&tls, "ca.crt")?.trim() == own_crt.trim()).then_some(())
        },
    )
    .await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let kept = secrets.get("mizzen-webhook-ca").await.expect("the CA Secret");
    assert_eq!(
        data(&kept, "ca.crt").as_deref(),
        Some(own_crt.as_str()),
        "an own CA was replaced"
    );
    assert_eq!(
        data(&kept, "ca.key").as_deref(),
        Some(own_key.as_str()),
        "an own CA was replaced"
    );
    assert_ne!(kept.annotations().get("mizzen.io/ca-minted"), Some(&mark(&own_crt)));
    s.finish().await;
}

#[tokio::test]
async fn the_webhook_configuration_waits_for_a_webhook_that_answers() {
    let name = "sc-order";
    // A revision tag's configuration waits too.
    let tag_config = "mizzen-revision-tag-sc-order-tag";
    let mut with_tag = spec(name);
    with_tag["revisionTags"] = json!(["sc-order-tag"]);
    let Some(mut s) = Scenario::start_with_webhook(name, with_tag, false).await else {
        return;
    };
    let message = s.condition(name, "Ready", "False", "WebhookNotReady").await;
    assert!(message.contains("MutatingWebhookConfiguration"), "{message}");
    let mwc: Api<k8s_openapi::api::admissionregistration::v1::MutatingWebhookConfiguration> =
        Api::all(s.client.clone());
    let deployments: Api<Deployment> = s.api();
    deployments
        .get(&format!("istiod-{name}"))
        .await
        .expect("the rest is applied");
    assert!(
        mwc.get_opt(&format!("mizzen-sidecar-injector-{name}"))
            .await
            .expect("get")
            .is_none(),
        "a webhook configuration before the webhook answers"
    );
    assert!(
        mwc.get_opt(tag_config).await.expect("get").is_none(),
        "a revision tag's webhook configuration before the webhook answers"
    );
    s.webhook_comes_up();
    for config in [format!("mizzen-sidecar-injector-{name}"), tag_config.to_owned()] {
        eventually(WAIT, "the webhook configurations once the webhook answers", || async {
            mwc.get_opt(&config).await.expect("get").map(|_| ())
        })
        .await;
    }
    s.condition(name, "Reconciled", "True", "Applied").await;
    s.finish().await;
}

/// The MutatingWebhookConfigurations API.
fn webhook_configs(client: &Client) -> Api<k8s_openapi::api::admissionregistration::v1::MutatingWebhookConfiguration> {
    Api::all(client.clone())
}

#[tokio::test]
async fn revision_tags_move_between_installs_in_place_and_are_never_fought_over() {
    let name = "sc-tag";
    let tag = "sc-tag-prod";
    let config = format!("mizzen-revision-tag-{tag}");
    let mut a = spec(name);
    a["revisionTags"] = json!([tag]);
    let Some(s) = Scenario::start(name, a).await else {
        return;
    };
    let mut b = spec("sc-tag-b");
    b["namespace"] = json!("sc-tag-b-mesh");
    b["gateways"] = json!([]);
    s.create_mesh("sc-tag-b", b).await;
    s.condition(name, "Reconciled", "True", "Applied").await;
    s.condition("sc-tag-b", "Reconciled", "True", "Applied").await;
    let a_uid = s.mesh(name).await.uid().expect("uid");
    let b_uid = s.mesh("sc-tag-b").await.uid().expect("uid");
    let configs = webhook_configs(&s.client);
    let held = eventually(WAIT, "the tag's webhook configuration, the older install's", || async {
        let c = configs.get_opt(&config).await.expect("get")?;
        c.owner_references()
            .iter()
            .any(|o| o.uid == a_uid && o.controller == Some(true))
            .then_some(c)
    })
    .await;
    let hooks = held.webhooks.clone().unwrap_or_default();
    assert_eq!(hooks.len(), 2, "rev.namespace and rev.object");
    let selector = serde_json::to_value(&hooks[0].namespace_selector).expect("json");
    assert_eq!(selector["matchExpressions"][0]["values"], json!([tag]));
    assert_eq!(
        hooks[0].client_config.url.as_deref(),
        Some(format!("https://127.0.0.1:{}/inject/{name}", s.webhook_port).as_str())
    );
    assert_eq!(s.mesh(name).await.status.expect("status").revision_tags, vec![tag]);

    // The younger install asks for the same tag: reported, not taken.
    s.patch_spec("sc-tag-b", json!({"revisionTags": [tag]})).await;
    let message = s.condition("sc-tag-b", "Reconciled", "False", "Conflict").await;
    assert!(
        message.contains(&format!("revision tag {tag} is held by the older MeshInstall {name}")),
        "{message}"
    );
    tokio::time::sleep(Duration::from_secs(3)).await;
    let still = configs.get(&config).await.expect("the tag's configuration");
    assert!(
        still
            .owner_references()
            .iter()
            .any(|o| o.uid == a_uid && o.controller == Some(true)),
        "the tag was fought over"
    );

    // The older one lets it go: the younger takes the same object over (no moment without it).
    let watching = {
        let configs = configs.clone();
        let config = config.clone();
        tokio::spawn(async move {
            let mut missing = 0;
            for _ in 0..100 {
                if configs.get_opt(&config).await.expect("get").is_none() {
                    missing += 1;
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            missing
        })
    };
    s.patch_spec(name, json!({"revisionTags": null})).await;
    let moved = eventually(
        WAIT,
        "the tag's webhook configuration moves to the younger install",
        || async {
            let c = configs.get_opt(&config).await.expect("get")?;
            c.owner_references()
                .iter()
                .any(|o| o.uid == b_uid && o.controller == Some(true))
                .then_some(c)
        },
    )
    .await;
    assert_eq!(
        moved.uid(),
        held.uid(),
        "the configuration was replaced instead of taken over"
    );
    assert_eq!(
        moved.webhooks.clone().unwrap_or_default()[0]
            .client_config
            .url
            .as_deref(),
        Some(format!("https://127.0.0.1:{}/inject/sc-tag-b", s.webhook_port).as_str())
    );
    assert!(!moved.owner_references().iter().any(|o| o.uid == a_uid));
    s.condition("sc-tag-b", "Reconciled", "True", "Applied").await;
    eventually(WAIT, "the statuses say who holds the tag", || async {
        let a = s.mesh(name).await.status?;
        let b = s.mesh("sc-tag-b").await.status?;
        (a.revision_tags.is_empty() && b.revision_tags == vec![tag.to_owned()]).then_some(())
    })
    .await;
    assert_eq!(
        watching.await.expect("watcher"),
        0,
        "the tag's configuration was missing during the move"
    );
    // A tag that names an existing revision is refused.
    s.patch_spec(name, json!({"revisionTags": ["sc-tag-b"]})).await;
    let message = s.condition(name, "Reconciled", "False", "Conflict").await;
    assert!(
        message.contains("revision tag sc-tag-b names the revision of MeshInstall sc-tag-b"),
        "{message}"
    );
    assert!(
        configs
            .get_opt("mizzen-revision-tag-sc-tag-b")
            .await
            .expect("get")
            .is_none()
    );
    s.finish().await;
}

#[tokio::test]
async fn a_tag_of_an_install_being_deleted_is_taken_over_in_place_by_its_successor() {
    let name = "sc-handover";
    let tag = "sc-handover-prod";
    let config = format!("mizzen-revision-tag-{tag}");
    let mut a = spec(name);
    a["revisionTags"] = json!([tag]);
    // An interrupted run's install, held by the test's finalizer, would never go.
    if let Some(cluster) = support::cluster().await {
        let meshes: Api<MeshInstall> = Api::all(cluster.client().await);
        let _ = meshes
            .patch(
                name,
                &PatchParams::default(),
                &Patch::Merge(json!({"metadata": {"finalizers": null}})),
            )
            .await;
    }
    let Some(s) = Scenario::start(name, a).await else {
        return;
    };
    let mut b = spec("sc-handover-b");
    b["namespace"] = json!("sc-handover-b-mesh");
    b["gateways"] = json!([]);
    b["revisionTags"] = json!([tag]);
    s.create_mesh("sc-handover-b", b).await;
    s.condition(name, "Reconciled", "True", "Applied").await;
    let message = s.condition("sc-handover-b", "Reconciled", "False", "Conflict").await;
    assert!(message.contains("is held by the older MeshInstall"), "{message}");
    let a_uid = s.mesh(name).await.uid().expect("uid");
    let b_uid = s.mesh("sc-handover-b").await.uid().expect("uid");
    let configs = webhook_configs(&s.client);
    let held = eventually(WAIT, "the tag's configuration, the older install's", || async {
        let c = configs.get_opt(&config).await.expect("get")?;
        c.owner_references()
            .iter()
            .any(|o| o.uid == a_uid && o.controller == Some(true))
            .then_some(c)
    })
    .await;
    // The older install is deleted, and held in deletion by a finalizer of the test's: while it is being deleted its
    // successor takes the configuration over, before the garbage collector could delete it with its owner.
    let meshes: Api<MeshInstall> = Api::all(s.client.clone());
    let finalizer = |list: Value| json!({"metadata": {"finalizers": list}});
    meshes
        .patch(
            name,
            &PatchParams::default(),
            &Patch::Merge(finalizer(json!(["mizzen.io/test-hold"]))),
        )
        .await
        .expect("adding the test's finalizer");
    meshes
        .delete(name, &DeleteParams::background())
        .await
        .expect("deleting the older install");
    let moved = eventually(WAIT, "the tag's configuration moves to the successor", || async {
        let c = configs.get_opt(&config).await.expect("get")?;
        c.owner_references()
            .iter()
            .any(|o| o.uid == b_uid && o.controller == Some(true))
            .then_some(c)
    })
    .await;
    assert_eq!(moved.uid(), held.uid(), "replaced instead of taken over");
    s.condition("sc-handover-b", "Reconciled", "True", "Applied").await;
    // The older install goes: the configuration, no longer its, stays.
    meshes
        .patch(name, &PatchParams::default(), &Patch::Merge(finalizer(json!(null))))
        .await
        .expect("removing the test's finalizer");
    eventually(WAIT, "the older install is gone", || async {
        meshes.get_opt(name).await.expect("get").is_none().then_some(())
    })
    .await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let kept = configs.get(&config).await.expect("the tag's configuration stays");
    assert_eq!(kept.uid(), held.uid());
    assert_eq!(
        s.mesh("sc-handover-b").await.status.expect("status").revision_tags,
        vec![tag]
    );
    s.finish().await;
}

/// A scenario's install `name` holding the tag `<name>-prod`, and a younger one, `<name>-b`, listing it too: the tag's
/// heir. `None` (skipped) without an API server or without a garbage collector, which these scenarios are about.
struct HolderAndHeir {
    s: Scenario,
    tag: String,
    /// The tag's webhook configuration.
    config: String,
    heir: String,
}

impl HolderAndHeir {
    async fn start(name: &str) -> Option<Self> {
        let tag = format!("{name}-prod");
        let mut a = spec(name);
        a["revisionTags"] = json!([tag]);
        let s = Scenario::start(name, a).await?;
        if !s.cluster.has_gc {
            eprintln!("skipped: needs a garbage collector ({})", s.cluster.source);
            s.finish().await;
            return None;
        }
        let heir = format!("{name}-b");
        let mut b = spec(&heir);
        b["namespace"] = json!(format!("{heir}-mesh"));
        b["gateways"] = json!([]);
        b["revisionTags"] = json!([tag]);
        s.create_mesh(&heir, b).await;
        Some(Self {
            s,
            config: format!("mizzen-revision-tag-{tag}"),
            tag,
            heir,
        })
    }
}

#[tokio::test]
async fn a_tags_configuration_outlives_its_deleted_holder_until_the_heir_takes_it_over() {
    let name = "sc-heir";
    let Some(HolderAndHeir {
        mut s,
        tag,
        config,
        heir,
    }) = HolderAndHeir::start(name).await
    else {
        return;
    };
    let (tag, heir) = (tag.as_str(), heir.as_str());
    s.condition(heir, "Reconciled", "False", "Conflict").await;
    let a_uid = s.mesh(name).await.uid().expect("uid");
    let b_uid = s.mesh(heir).await.uid().expect("uid");
    let configs = webhook_configs(&s.client);
    // (controller?, uid) of each owner reference.
    let owners = |c: &k8s_openapi::api::admissionregistration::v1::MutatingWebhookConfiguration| {
        c.owner_references()
            .iter()
            .map(|o| (o.controller == Some(true), o.uid.clone()))
            .collect::<Vec<_>>()
    };
    let held = eventually(WAIT, "the tag's configuration, owned by its heir too", || async {
        let c = configs.get_opt(&config).await.expect("get")?;
        (owners(&c) == [(true, a_uid.clone()), (false, b_uid.clone())]).then_some(c)
    })
    .await;
    // An heir that cannot serve (paused) is none: its reference goes, and comes back when it is resumed.
    s.annotate(heir, "mizzen.io/paused", Some("true")).await;
    eventually(WAIT, "the paused heir's reference is dropped", || async {
        let c = configs.get_opt(&config).await.expect("get")?;
        (owners(&c) == [(true, a_uid.clone())]).then_some(())
    })
    .await;
    s.annotate(heir, "mizzen.io/paused", None).await;
    eventually(WAIT, "the resumed heir's reference is back", || async {
        let c = configs.get_opt(&config).await.expect("get")?;
        (owners(&c) == [(true, a_uid.clone()), (false, b_uid.clone())]).then_some(())
    })
    .await;
    // The holder is deleted while no operator runs: the garbage collector alone keeps the configuration (it drops
    // the deleted owner's reference), where it used to delete it, leaving the tag's namespaces without injection
    // until the heir made a new one.
    s.stop_controller().await;
    let meshes: Api<MeshInstall> = Api::all(s.client.clone());
    meshes
        .delete(name, &DeleteParams::background())
        .await
        .expect("deleting the holder");
    let kept = eventually(WAIT, "the garbage collector has handled the configuration", || async {
        let Some(c) = configs.get_opt(&config).await.expect("get") else {
            panic!("the garbage collector deleted {config} with its holder");
        };
        (owners(&c) == [(false, b_uid.clone())]).then_some(c)
    })
    .await;
    assert_eq!(kept.uid(), held.uid());
    // The heir takes it over in place.
    s.start_controller().await;
    let moved = eventually(WAIT, "the heir controls the configuration", || async {
        let c = configs.get_opt(&config).await.expect("get")?;
        (owners(&c) == [(true, b_uid.clone())]).then_some(c)
    })
    .await;
    assert_eq!(moved.uid(), held.uid(), "replaced instead of taken over");
    let path = moved.webhooks.as_deref().unwrap_or_default()[0]
        .client_config
        .url
        .clone()
        .unwrap_or_default();
    assert!(path.ends_with(&format!("/inject/{heir}")), "{path}");
    s.condition(heir, "Reconciled", "True", "Applied").await;
    assert_eq!(s.mesh(heir).await.status.expect("status").revision_tags, vec![tag]);
    s.finish().await;
}

#[tokio::test]
async fn an_heir_deletes_a_kept_configuration_it_no_longer_serves() {
    let name = "sc-orphan";
    let Some(HolderAndHeir {
        mut s, config, heir, ..
    }) = HolderAndHeir::start(name).await
    else {
        return;
    };
    let heir = heir.as_str();
    let b_uid = s.mesh(heir).await.uid().expect("uid");
    let configs = webhook_configs(&s.client);
    eventually(WAIT, "the tag's configuration, owned by its heir too", || async {
        let c = configs.get_opt(&config).await.expect("get")?;
        c.owner_references().iter().any(|o| o.uid == b_uid).then_some(())
    })
    .await;
    // While no operator runs (so the holder cannot drop its heir's reference), the heir stops listing the tag and
    // the holder is deleted: the garbage collector keeps the configuration for the heir, which no longer serves it.
    s.stop_controller().await;
    s.patch_spec(heir, json!({"revisionTags": []})).await;
    Api::<MeshInstall>::all(s.client.clone())
        .delete(name, &DeleteParams::background())
        .await
        .expect("deleting the holder");
    eventually(WAIT, "the configuration left to the heir alone", || async {
        let c = configs.get_opt(&config).await.expect("get")?;
        let owners: Vec<&str> = c.owner_references().iter().map(|o| o.uid.as_str()).collect();
        (owners == [b_uid.as_str()]).then_some(())
    })
    .await;
    // It would call a revision no webhook serves: the heir deletes it.
    s.start_controller().await;
    eventually(WAIT, "the heir deletes the configuration", || async {
        configs.get_opt(&config).await.expect("get").is_none().then_some(())
    })
    .await;
    s.condition(heir, "Reconciled", "True", "Applied").await;
    s.finish().await;
}

#[tokio::test]
async fn an_unsupported_version_is_refused_by_field_and_changes_nothing() {
    let name = "sc-version";
    let Some(s) = Scenario::start(name, spec(name)).await else {
        return;
    };
    s.condition(name, "Reconciled", "True", "Applied").await;
    let deployments: Api<Deployment> = s.api();
    let image = |d: Deployment| {
        d.spec
            .and_then(|s| s.template.spec)
            .and_then(|s| s.containers.into_iter().next())
            .and_then(|c| c.image)
            .unwrap_or_default()
    };
    let istiod = format!("istiod-{name}");
    let before = deployments.get(&istiod).await.expect("istiod");
    assert_eq!(image(before.clone()), "docker.io/istio/pilot:1.28.0");
    // What the webhook injects with: the spec applied (status.appliedSpec).
    let served = |mi: MeshInstall| mizzen::revisions::serving_spec(&mi).expect("served");
    let applied = s.mesh(name).await;
    assert!(
        applied.status.as_ref().and_then(|s| s.applied_spec.as_ref()).is_some(),
        "no appliedSpec"
    );
    assert_eq!(served(applied.clone()), applied.spec);
    s.patch_spec(name, json!({"version": "1.26.3", "proxy": {"logLevel": "debug"}}))
        .await;
    let message = s.condition(name, "Reconciled", "False", "InvalidSpec").await;
    assert!(
        message.contains("spec.version") && message.contains("1.26.3") && message.contains("1.27.x to 1.28.x"),
        "{message}"
    );
    tokio::time::sleep(Duration::from_secs(2)).await;
    let after = deployments.get(&istiod).await.expect("istiod");
    assert_eq!(after.metadata.generation, before.metadata.generation, "istiod changed");
    assert_eq!(
        s.mesh(name).await.status.expect("status").version.as_deref(),
        Some("1.28.0"),
        "the version rolled out (what the webhook keeps injecting)"
    );
    let refused = s.mesh(name).await;
    assert_eq!(refused.spec.proxy.log_level, "debug");
    assert_eq!(served(refused), applied.spec, "the refused spec would reach new pods");
    // A supported one rolls istiod, and the webhook injects with it.
    s.patch_spec(name, json!({"version": "1.28.1"})).await;
    s.condition(name, "Reconciled", "True", "Applied").await;
    let now = s.mesh(name).await;
    assert_eq!(
        (now.spec.version.as_str(), now.spec.proxy.log_level.as_str()),
        ("1.28.1", "debug")
    );
    assert_eq!(
        now.status.as_ref().and_then(|s| s.applied_generation),
        now.metadata.generation
    );
    assert_eq!(served(now.clone()), now.spec);
    eventually(WAIT, "istiod runs 1.28.1", || async {
        (image(deployments.get(&istiod).await.ok()?) == "docker.io/istio/pilot:1.28.1").then_some(())
    })
    .await;
    s.finish().await;
}

/// A pod as the injector leaves it: annotated with the revision that injected it, running `image` as istio-proxy.
fn injected_pod(name: &str, revision: &str, image: &str) -> Pod {
    serde_json::from_value(json!({
        "metadata": {
            "name": name,
            "labels": {"app": name, "service.istio.io/canonical-name": name},
            "annotations": {"sidecar.istio.io/status": format!(
                "{{\"initContainers\":[\"istio-init\",\"istio-proxy\"],\"containers\":null,\"revision\":\"{revision}\"}}")},
        },
        "spec": {
            "initContainers": [{"name": "istio-proxy", "image": image, "restartPolicy": "Always"}],
            "containers": [{"name": "app", "image": "docker.io/traefik/whoami:v1.10"}],
        },
    }))
    .expect("pod")
}

#[tokio::test]
async fn the_data_plane_report_counts_outdated_proxies() {
    let name = "sc-proxies";
    let mut mesh = spec(name);
    // Nothing to wait for: no istiod replica, no gateway (there is no node).
    mesh["controlPlane"] = json!({"replicas": 0});
    mesh["gateways"] = json!([]);
    let Some(s) = Scenario::start(name, mesh).await else {
        return;
    };
    let apps = format!("{name}-apps");
    ensure_namespace(&s.client, &apps).await;
    let pods: Api<Pod> = Api::namespaced(s.client.clone(), &apps);
    for pod in ["web-1", "web-2"] {
        let _ = pods.delete(pod, &DeleteParams::default().grace_period(0)).await;
    }
    eventually(WAIT, "no leftover pods", || async {
        pods.list(&Default::default())
            .await
            .ok()?
            .items
            .is_empty()
            .then_some(())
    })
    .await;
    for pod in ["web-1", "web-2"] {
        pods.create(
            &PostParams::default(),
            &injected_pod(pod, name, "docker.io/istio/proxyv2:1.28.0"),
        )
        .await
        .expect("creating an injected pod");
    }
    let proxies = |want: &'static str| {
        let s = &s;
        async move {
            eventually(WAIT, &format!("PROXIES {want}"), || async {
                let status = s.mesh(name).await.status?;
                (status.proxies.as_deref() == Some(want)).then_some(status)
            })
            .await
        }
    };
    let status = proxies("2/2").await;
    let up = status
        .conditions
        .iter()
        .find(|c| c.type_ == "ProxiesUpToDate")
        .expect("condition");
    assert_eq!((up.status.as_str(), up.reason.as_str()), ("True", "UpToDate"));
    // An in-place upgrade: every pod is outdated until restarted.
    s.patch_spec(name, json!({"version": "1.28.1"})).await;
    let status = proxies("0/2").await;
    let dp = status.data_plane.expect("dataPlane");
    assert_eq!((dp.up_to_date, dp.total, dp.outdated_workloads), (0, 2, 2));
    assert_eq!(dp.outdated[0].namespace, apps);
    assert_eq!(
        (dp.outdated[0].kind.as_str(), dp.outdated[0].name.as_str()),
        ("Pod", "web-1")
    );
    assert!(
        dp.outdated[0].reason.contains("want docker.io/istio/proxyv2:1.28.1"),
        "{:?}",
        dp.outdated
    );
    let message = s.condition(name, "ProxiesUpToDate", "False", "Outdated").await;
    assert!(
        message.starts_with("2 pods of 2 workloads run an older proxy"),
        "{message}"
    );
    // Pods that go stop counting; a pod injected with the new proxy is up to date.
    pods.delete("web-2", &DeleteParams::default().grace_period(0))
        .await
        .expect("delete");
    pods.create(
        &PostParams::default(),
        &injected_pod("web-3", name, "docker.io/istio/proxyv2:1.28.1"),
    )
    .await
    .expect("creating an up-to-date pod");
    proxies("1/2").await;
    for pod in ["web-1", "web-3"] {
        let _ = pods.delete(pod, &DeleteParams::default().grace_period(0)).await;
    }
    let _ = Api::<Namespace>::all(s.client.clone())
        .delete(&apps, &DeleteParams::background())
        .await;
    s.finish().await;
}

#[tokio::test]
async fn a_paused_holders_pods_stay_its_own_in_the_data_plane_report() {
    let name = "sc-route";
    let tag = "sc-route-prod";
    let quiet = |mut mesh: Value| {
        mesh["controlPlane"] = json!({"replicas": 0});
        mesh["gateways"] = json!([]);
        mesh["revisionTags"] = json!([tag]);
        mesh
    };
    let Some(s) = Scenario::start(name, quiet(spec(name))).await else {
        return;
    };
    let apps = format!("{name}-apps");
    let namespaces: Api<Namespace> = Api::all(s.client.clone());
    ensure_namespace(&s.client, &apps).await;
    let label = |value: Option<&str>| Patch::Merge(json!({"metadata": {"labels": {"istio.io/rev": value}}}));
    // An interrupted run's label and pod go first.
    namespaces
        .patch(&apps, &PatchParams::default(), &label(None))
        .await
        .expect("unlabelling the namespace");
    let pods: Api<Pod> = Api::namespaced(s.client.clone(), &apps);
    let _ = pods.delete("web-1", &DeleteParams::default().grace_period(0)).await;
    eventually(WAIT, "no leftover pod", || async {
        pods.get_opt("web-1").await.expect("get").is_none().then_some(())
    })
    .await;
    // The pod as the webhook left it (the scenario's stand-in injects nothing), then its namespace labelled for the
    // tag.
    pods.create(
        &PostParams::default(),
        &injected_pod("web-1", name, "docker.io/istio/proxyv2:1.28.0"),
    )
    .await
    .expect("creating an injected pod");
    namespaces
        .patch(&apps, &PatchParams::default(), &label(Some(tag)))
        .await
        .expect("labelling the namespace");
    let heir = "sc-route-b";
    let mut b = quiet(spec(heir));
    b["namespace"] = json!("sc-route-b-mesh");
    s.create_mesh(heir, b).await;
    s.condition(heir, "Reconciled", "False", "Conflict").await;
    let proxies = |mi: MeshInstall| mi.status.and_then(|s| s.proxies);
    eventually(WAIT, "the holder counts its pod", || async {
        (proxies(s.mesh(name).await).as_deref() == Some("1/1")).then_some(())
    })
    .await;
    // Paused, the holder keeps its webhook configurations, so new pods in the tag's namespace still go to it: the
    // pod stays its own, and is not the younger install's outdated pod (whose automatic rollout would restart it
    // into the same webhook, over and over).
    s.annotate(name, "mizzen.io/paused", Some("true")).await;
    s.condition(name, "Reconciled", "False", "Paused").await;
    s.condition(heir, "Reconciled", "False", "Conflict").await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(proxies(s.mesh(name).await).as_deref(), Some("1/1"));
    let b_status = s.mesh(heir).await.status.expect("status");
    assert_eq!(
        b_status.data_plane.as_ref().map_or(0, |d| d.total),
        0,
        "{:?}",
        b_status.data_plane
    );
    s.annotate(name, "mizzen.io/paused", None).await;
    let _ = pods.delete("web-1", &DeleteParams::default().grace_period(0)).await;
    let _ = namespaces.delete(&apps, &DeleteParams::background()).await;
    s.finish().await;
}

#[tokio::test]
async fn someone_elses_namespace_and_objects_are_used_or_reported_never_rewritten() {
    let name = "sc-foreign";
    let Some(cluster) = support::cluster().await else {
        return;
    };
    let client = cluster.client().await;
    // An application namespace, labelled for injection, chosen as the mesh namespace.
    let mesh_ns = format!("{name}-mesh");
    settled_namespace(&client, &mesh_ns).await;
    let namespaces: Api<Namespace> = Api::all(client.clone());
    let ns: Namespace = serde_json::from_value(json!({
        "metadata": {"name": mesh_ns, "labels": {"istio-injection": "enabled", "team": "shop"}}
    }))
    .expect("namespace");
    match namespaces.create(&PostParams::default(), &ns).await {
        Ok(_) => {}
        Err(kube::Error::Api(e)) if e.code == 409 => {}
        Err(e) => panic!("creating {mesh_ns}: {e}"),
    }
    // A ConfigMap named as the mesh config, carrying mizzen's labels, but controlled by something else.
    let owner = namespaces.get(&mesh_ns).await.expect("namespace");
    let configmaps: Api<ConfigMap> = Api::namespaced(client.clone(), &mesh_ns);
    let _ = configmaps
        .delete(&format!("istio-{name}"), &DeleteParams::default())
        .await;
    let copy: ConfigMap = serde_json::from_value(json!({
        "metadata": {
            "name": format!("istio-{name}"),
            "labels": {"app.kubernetes.io/managed-by": "mizzen", "mizzen.io/meshinstall": name},
            "ownerReferences": [{"apiVersion": "v1", "kind": "Namespace", "name": mesh_ns,
                                 "uid": owner.uid(), "controller": true}],
        },
        "data": {"mesh": "users: own"},
    }))
    .expect("configmap");
    configmaps
        .create(&PostParams::default(), &copy)
        .await
        .expect("the user's ConfigMap");
    let Some(s) = Scenario::start(name, spec(name)).await else {
        return;
    };
    let message = s.condition(name, "Reconciled", "False", "Conflict").await;
    assert!(
        message.contains(&format!("ConfigMap {mesh_ns}/istio-{name} exists and is not mizzen's")),
        "{message}"
    );
    let cm = configmaps.get(&format!("istio-{name}")).await.expect("configmap");
    assert_eq!(
        cm.data.clone().unwrap_or_default().get("mesh").map(String::as_str),
        Some("users: own")
    );
    assert!(
        cm.owner_references()
            .iter()
            .all(|o| o.uid == owner.uid().unwrap_or_default())
    );
    // The rest is applied, in the namespace as it was.
    let deployments: Api<Deployment> = s.api();
    deployments.get(&format!("istiod-{name}")).await.expect("istiod");
    let ns = namespaces.get(&mesh_ns).await.expect("namespace");
    assert_eq!(
        ns.labels().get("istio-injection").map(String::as_str),
        Some("enabled"),
        "relabelled"
    );
    assert!(!ns.labels().contains_key("app.kubernetes.io/managed-by"), "taken over");
    let _ = configmaps
        .delete(&format!("istio-{name}"), &DeleteParams::default())
        .await;
    s.finish().await;
}

#[tokio::test]
async fn the_default_tag_moves_to_another_revision_in_place_and_back() {
    let name = "sc-default";
    let mut default = spec(name);
    default["revision"] = json!("");
    default["gateways"] = json!([]);
    default["controlPlane"] = json!({"replicas": 0});
    // Nothing in this test creates pods in labelled namespaces; Ignore keeps the shared API server safe anyway.
    default["injection"] = json!({"failurePolicy": "Ignore"});
    let Some(s) = Scenario::start(name, default).await else {
        return;
    };
    let mut canary = spec("sc-default-b");
    canary["namespace"] = json!("sc-default-b-mesh");
    canary["gateways"] = json!([]);
    canary["controlPlane"] = json!({"replicas": 0});
    canary["injection"] = json!({"failurePolicy": "Ignore"});
    s.create_mesh("sc-default-b", canary).await;
    s.condition(name, "Reconciled", "True", "Applied").await;
    s.condition("sc-default-b", "Reconciled", "True", "Applied").await;
    let default_uid = s.mesh(name).await.uid().expect("uid");
    let canary_uid = s.mesh("sc-default-b").await.uid().expect("uid");
    let configs = webhook_configs(&s.client);
    let path = |c: &k8s_openapi::api::admissionregistration::v1::MutatingWebhookConfiguration| {
        c.webhooks.clone().unwrap_or_default()[0]
            .client_config
            .url
            .clone()
            .unwrap_or_default()
    };
    let before = eventually(WAIT, "mizzen-sidecar-injector is the default revision's", || async {
        let c = configs.get_opt("mizzen-sidecar-injector").await.expect("get")?;
        c.owner_references()
            .iter()
            .any(|o| o.uid == default_uid && o.controller == Some(true))
            .then_some(c)
    })
    .await;
    assert_eq!(before.webhooks.clone().unwrap_or_default().len(), 4);
    assert!(path(&before).ends_with("/inject"), "{}", path(&before));

    // `istioctl tag set default --revision sc-default-b`: the younger canary takes `default` from the older default
    // revision, in place.
    s.patch_spec("sc-default-b", json!({"revisionTags": ["default"]})).await;
    let moved = eventually(WAIT, "mizzen-sidecar-injector moves to the canary", || async {
        let c = configs.get_opt("mizzen-sidecar-injector").await.expect("get")?;
        c.owner_references()
            .iter()
            .any(|o| o.uid == canary_uid && o.controller == Some(true))
            .then_some(c)
    })
    .await;
    assert_eq!(moved.uid(), before.uid(), "replaced instead of taken over");
    assert!(path(&moved).ends_with("/inject/sc-default-b"), "{}", path(&moved));
    assert_eq!(moved.labels().get("istio.io/tag").map(String::as_str), Some("default"));
    assert_eq!(moved.webhooks.clone().unwrap_or_default().len(), 4);
    eventually(WAIT, "the statuses say who holds default", || async {
        let d = s.mesh(name).await.status?;
        let c = s.mesh("sc-default-b").await.status?;
        (d.revision_tags.is_empty() && c.revision_tags == vec!["default".to_owned()]).then_some(())
    })
    .await;
    s.condition(name, "Reconciled", "True", "Applied").await;
    s.condition("sc-default-b", "Reconciled", "True", "Applied").await;

    // And back (the rollback).
    s.patch_spec("sc-default-b", json!({"revisionTags": null})).await;
    let back = eventually(
        WAIT,
        "mizzen-sidecar-injector returns to the default revision",
        || async {
            let c = configs.get_opt("mizzen-sidecar-injector").await.expect("get")?;
            c.owner_references()
                .iter()
                .any(|o| o.uid == default_uid && o.controller == Some(true))
                .then_some(c)
        },
    )
    .await;
    assert_eq!(back.uid(), before.uid());
    assert!(path(&back).ends_with("/inject"), "{}", path(&back));
    s.finish().await;
    let _ = configs
        .delete("mizzen-sidecar-injector", &DeleteParams::default())
        .await;
}
