//! Tier 3: reconcile scenarios against an in-memory fake API server (a tower service behind a real kube Client):
//! GET/LIST/PATCH(apply, status)/DELETE on stored objects, every write recorded. One test per behaviour.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::sync::{Arc, Mutex};

use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use kube::Client;
use mizzen::MeshInstall;
use mizzen_operator::{Context, Options, reconcile};
use serde_json::{Value, json};

/// (apiVersion prefix and plural) → (namespace, name) → object.
type Objects = BTreeMap<String, BTreeMap<(String, String), Value>>;

#[derive(Default)]
struct State {
    objects: Objects,
    writes: Vec<String>,
    uid: u64,
}

#[derive(Clone, Default)]
struct Fake(Arc<Mutex<State>>);

struct Target {
    collection: String,
    namespace: String,
    name: Option<String>,
    subresource: Option<String>,
}

fn parse_path(path: &str) -> Target {
    let segs: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    let (prefix, rest) = if segs[0] == "api" {
        (segs[..2].join("/"), &segs[2..])
    } else {
        (segs[..3].join("/"), &segs[3..])
    };
    let (namespace, rest) = if rest.len() >= 3 && rest[0] == "namespaces" {
        (rest[1].to_owned(), &rest[2..])
    } else {
        (String::new(), rest)
    };
    Target {
        collection: format!("{prefix}/{}", rest[0]),
        namespace,
        name: rest.get(1).map(|s| (*s).to_owned()),
        subresource: rest.get(2).map(|s| (*s).to_owned()),
    }
}

fn status(code: u16, reason: &str) -> (u16, Value) {
    (
        code,
        json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure", "reason": reason, "code": code}),
    )
}

fn merge(target: &mut Value, patch: &Value) {
    match (target, patch) {
        (Value::Object(t), Value::Object(p)) => {
            for (k, v) in p {
                if v.is_null() {
                    t.remove(k);
                } else {
                    merge(t.entry(k.clone()).or_insert(Value::Null), v);
                }
            }
        }
        (t, p) => *t = p.clone(),
    }
}

fn selector_matches(object: &Value, selector: &str) -> bool {
    selector.split(',').filter(|s| !s.is_empty()).all(|pair| {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        object["metadata"]["labels"][k] == v
    })
}

impl Fake {
    fn handle(&self, method: &str, path: &str, query: &str, body: &[u8]) -> (u16, Value) {
        let t = parse_path(path);
        let mut s = self.0.lock().unwrap();
        if method != "GET" {
            s.writes.push(format!("{method} {path}"));
        }
        if t.collection.ends_with("/events") {
            return (201, serde_json::from_slice(body).unwrap_or(json!({})));
        }
        let key = (t.namespace.clone(), t.name.clone().unwrap_or_default());
        match (method, &t.name) {
            ("GET", None) => {
                let selector = query
                    .split('&')
                    .find_map(|q| q.strip_prefix("labelSelector="))
                    .map(|s| s.replace("%3D", "=").replace("%2C", ",").replace("%2F", "/"))
                    .unwrap_or_default();
                let items: Vec<Value> = s
                    .objects
                    .get(&t.collection)
                    .into_iter()
                    .flat_map(|m| m.values())
                    .filter(|o| selector_matches(o, &selector))
                    .cloned()
                    .collect();
                (
                    200,
                    json!({"apiVersion": "v1", "kind": "List", "metadata": {"resourceVersion": "1"}, "items": items}),
                )
            }
            ("GET", Some(_)) => match s.objects.get(&t.collection).and_then(|m| m.get(&key)) {
                Some(o) => (200, o.clone()),
                None => status(404, "NotFound"),
            },
            ("PATCH", Some(_)) => {
                let patch: Value = serde_json::from_slice(body).unwrap();
                s.uid += 1;
                let uid = s.uid;
                let objects = s.objects.entry(t.collection.clone()).or_default();
                if t.subresource.as_deref() == Some("status") {
                    return match objects.get_mut(&key) {
                        Some(o) => {
                            merge(o, &json!({"status": patch["status"]}));
                            (200, o.clone())
                        }
                        None => status(404, "NotFound"),
                    };
                }
                let mut object = patch.clone();
                let previous = objects.get(&key).cloned();
                let generation = previous
                    .as_ref()
                    .and_then(|p| p["metadata"]["generation"].as_i64())
                    .unwrap_or(0)
                    + 1;
                object["metadata"]["uid"] = previous
                    .as_ref()
                    .map(|p| p["metadata"]["uid"].clone())
                    .unwrap_or(json!(format!("uid-{uid}")));
                object["metadata"]["resourceVersion"] = json!(uid.to_string());
                object["metadata"]["generation"] = json!(generation);
                if let Some(st) = previous.as_ref().and_then(|p| p.get("status")) {
                    object["status"] = st.clone();
                }
                objects.insert(key, object.clone());
                (200, object)
            }
            ("DELETE", Some(_)) => match s.objects.get_mut(&t.collection).and_then(|m| m.remove(&key)) {
                Some(o) => (200, o),
                None => status(404, "NotFound"),
            },
            _ => status(405, "MethodNotAllowed"),
        }
    }

    fn client(&self) -> Client {
        let fake = self.clone();
        let service = tower::service_fn(move |req: http::Request<kube::client::Body>| {
            let fake = fake.clone();
            async move {
                let method = req.method().to_string();
                let path = req.uri().path().to_owned();
                let query = req.uri().query().unwrap_or_default().to_owned();
                let body = req
                    .into_body()
                    .collect()
                    .await
                    .map(|b| b.to_bytes())
                    .unwrap_or_default();
                let (code, value) = fake.handle(&method, &path, &query, &body);
                let response = http::Response::builder()
                    .status(code)
                    .header("content-type", "application/json")
                    .body(Full::new(Bytes::from(serde_json::to_vec(&value).unwrap())))
                    .unwrap();
                Ok::<_, Infallible>(response)
            }
        });
        Client::new(service, "default")
    }

    fn take_writes(&self) -> Vec<String> {
        std::mem::take(&mut self.0.lock().unwrap().writes)
    }

    fn count(&self, collection: &str) -> usize {
        self.0.lock().unwrap().objects.get(collection).map_or(0, BTreeMap::len)
    }

    fn get(&self, collection: &str, ns: &str, name: &str) -> Option<Value> {
        self.0
            .lock()
            .unwrap()
            .objects
            .get(collection)?
            .get(&(ns.to_owned(), name.to_owned()))
            .cloned()
    }

    fn put(&self, collection: &str, ns: &str, name: &str, object: Value) {
        self.0
            .lock()
            .unwrap()
            .objects
            .entry(collection.to_owned())
            .or_default()
            .insert((ns.to_owned(), name.to_owned()), object);
    }

    fn remove(&self, collection: &str, ns: &str, name: &str) {
        self.0
            .lock()
            .unwrap()
            .objects
            .get_mut(collection)
            .unwrap()
            .remove(&(ns.to_owned(), name.to_owned()));
    }

    /// The MeshInstall as the API server has it (with the status written so far).
    fn mesh(&self) -> Arc<MeshInstall> {
        Arc::new(
            serde_json::from_value(self.get("apis/mizzen.io/v1alpha1/meshinstalls", "", "default").unwrap()).unwrap(),
        )
    }

    fn set_mesh_spec(&self, spec: Value) {
        let mut mi = self.get("apis/mizzen.io/v1alpha1/meshinstalls", "", "default").unwrap();
        mi["spec"] = spec;
        self.put("apis/mizzen.io/v1alpha1/meshinstalls", "", "default", mi);
    }
}

fn setup(spec: Value, annotations: Value) -> (Fake, Arc<Context>) {
    let fake = Fake::default();
    fake.put(
        "apis/mizzen.io/v1alpha1/meshinstalls",
        "",
        "default",
        json!({"apiVersion": "mizzen.io/v1alpha1", "kind": "MeshInstall",
               "metadata": {"name": "default", "uid": "mesh-uid", "generation": 1, "annotations": annotations},
               "spec": spec}),
    );
    let ctx = Arc::new(Context::new(
        fake.client(),
        Options {
            namespace: "mizzen-system".into(),
            webhook_url: None,
            webhook_tls_dir: None,
        },
    ));
    (fake, ctx)
}

fn sample_spec() -> Value {
    json!({"gateways": [{"name": "istio-ingressgateway", "service": {"type": "NodePort",
        "ports": [{"name": "http2", "port": 80, "targetPort": 8080, "nodePort": 30080}]}}]})
}

/// Server-side applies of objects (not status writes, not Events).
fn applies(writes: &[String]) -> usize {
    writes
        .iter()
        .filter(|w| w.starts_with("PATCH") && !w.ends_with("/status") && !w.contains("/events"))
        .count()
}

#[tokio::test]
async fn first_reconcile_creates_everything_and_reports_progress() {
    let (fake, ctx) = setup(sample_spec(), json!({}));
    reconcile(fake.mesh(), ctx.clone()).await.unwrap();
    let writes = fake.take_writes();
    let rendered = mizzen::render::render(&fake.mesh(), &mizzen::render::RenderOptions::default())
        .unwrap()
        .len();
    assert_eq!(
        applies(&writes),
        rendered + 1,
        "every object plus the TLS Secret: {writes:#?}"
    );
    assert!(fake.get("apis/apps/v1/deployments", "istio-system", "istiod").is_some());
    assert!(
        fake.get("api/v1/secrets", "mizzen-system", "mizzen-webhook-tls")
            .is_some()
    );
    let mwc = fake
        .get(
            "apis/admissionregistration.k8s.io/v1/mutatingwebhookconfigurations",
            "",
            "mizzen-sidecar-injector",
        )
        .unwrap();
    assert!(
        mwc["webhooks"][0]["clientConfig"]["caBundle"]
            .as_str()
            .is_some_and(|b| !b.is_empty())
    );
    let status = &fake.mesh().status.clone().unwrap();
    assert_eq!(status.state, Some(mizzen::api::MeshState::Progressing));
    assert_eq!(status.observed_generation, Some(1));
    assert_eq!(status.conditions[0].type_, "Reconciled");
    assert_eq!(status.conditions[0].status, "True");
}

#[tokio::test]
async fn second_reconcile_writes_nothing() {
    let (fake, ctx) = setup(sample_spec(), json!({}));
    reconcile(fake.mesh(), ctx.clone()).await.unwrap();
    fake.take_writes();
    reconcile(fake.mesh(), ctx.clone()).await.unwrap();
    assert_eq!(fake.take_writes(), Vec::<String>::new());
}

#[tokio::test]
async fn deleted_child_is_recreated() {
    let (fake, ctx) = setup(sample_spec(), json!({}));
    reconcile(fake.mesh(), ctx.clone()).await.unwrap();
    fake.remove("apis/apps/v1/deployments", "istio-system", "istiod");
    fake.take_writes();
    reconcile(fake.mesh(), ctx.clone()).await.unwrap();
    let writes = fake.take_writes();
    assert_eq!(applies(&writes), 1, "{writes:#?}");
    assert!(fake.get("apis/apps/v1/deployments", "istio-system", "istiod").is_some());
}

#[tokio::test]
async fn edited_child_is_reverted() {
    let (fake, ctx) = setup(sample_spec(), json!({}));
    reconcile(fake.mesh(), ctx.clone()).await.unwrap();
    let mut svc = fake
        .get("api/v1/services", "istio-system", "istio-ingressgateway")
        .unwrap();
    svc["spec"]["type"] = json!("ClusterIP");
    fake.put("api/v1/services", "istio-system", "istio-ingressgateway", svc);
    reconcile(fake.mesh(), ctx.clone()).await.unwrap();
    assert_eq!(
        fake.get("api/v1/services", "istio-system", "istio-ingressgateway")
            .unwrap()["spec"]["type"],
        "NodePort"
    );
}

#[tokio::test]
async fn removed_gateway_is_pruned() {
    let (fake, ctx) = setup(sample_spec(), json!({}));
    reconcile(fake.mesh(), ctx.clone()).await.unwrap();
    assert_eq!(fake.count("apis/apps/v1/deployments"), 2);
    fake.set_mesh_spec(json!({}));
    fake.take_writes();
    reconcile(fake.mesh(), ctx.clone()).await.unwrap();
    let deletes: Vec<String> = fake
        .take_writes()
        .into_iter()
        .filter(|w| w.starts_with("DELETE"))
        .collect();
    assert_eq!(
        deletes.len(),
        5,
        "SA, Role, RoleBinding, Deployment, Service: {deletes:#?}"
    );
    assert!(
        fake.get("apis/apps/v1/deployments", "istio-system", "istio-ingressgateway")
            .is_none()
    );
    assert!(fake.get("apis/apps/v1/deployments", "istio-system", "istiod").is_some());
    // Istio's CRDs are never pruned.
    assert_eq!(
        fake.count("apis/apiextensions.k8s.io/v1/customresourcedefinitions"),
        mizzen::istio_crds::crds().unwrap().len()
    );
}

#[tokio::test]
async fn status_turns_healthy_once_deployments_roll_out() {
    let (fake, ctx) = setup(sample_spec(), json!({}));
    reconcile(fake.mesh(), ctx.clone()).await.unwrap();
    let before = fake.mesh().status.clone().unwrap();
    assert_eq!(before.ready.as_deref(), Some("0/2"));
    for name in ["istiod", "istio-ingressgateway"] {
        let mut d = fake.get("apis/apps/v1/deployments", "istio-system", name).unwrap();
        let generation = d["metadata"]["generation"].clone();
        d["status"] =
            json!({"observedGeneration": generation, "updatedReplicas": 1, "availableReplicas": 1, "replicas": 1});
        fake.put("apis/apps/v1/deployments", "istio-system", name, d);
    }
    reconcile(fake.mesh(), ctx.clone()).await.unwrap();
    let after = fake.mesh().status.clone().unwrap();
    assert_eq!(after.state, Some(mizzen::api::MeshState::Healthy));
    assert_eq!(after.ready.as_deref(), Some("2/2"));
    let ready = after.conditions.iter().find(|c| c.type_ == "Ready").unwrap();
    assert_eq!(ready.status, "True");
    let reconciled_before = &before.conditions[0];
    assert_eq!(
        after.conditions[0].last_transition_time, reconciled_before.last_transition_time,
        "Reconciled did not flip"
    );
}

#[tokio::test]
async fn invalid_spec_is_reported_on_the_resource() {
    let (fake, ctx) = setup(
        json!({"gateways": [{"name": "gw", "service": {"ports": [{"name": "a", "port": 80}, {"name": "b", "port": 80}]}}]}),
        json!({}),
    );
    reconcile(fake.mesh(), ctx.clone()).await.unwrap();
    let writes = fake.take_writes();
    assert_eq!(applies(&writes), 1, "only the TLS Secret: {writes:#?}");
    assert!(writes.iter().any(|w| w.contains("/events")), "a Warning event");
    let status = fake.mesh().status.clone().unwrap();
    assert_eq!(status.state, Some(mizzen::api::MeshState::Error));
    assert_eq!(status.conditions[0].reason, "InvalidSpec");
    assert!(
        status.conditions[0]
            .message
            .contains("spec.gateways[0].service.ports[1].port")
    );
}

#[tokio::test]
async fn paused_mesh_installs_are_left_alone() {
    let (fake, ctx) = setup(sample_spec(), json!({"mizzen.io/paused": "true"}));
    reconcile(fake.mesh(), ctx.clone()).await.unwrap();
    let writes = fake.take_writes();
    assert_eq!(applies(&writes), 0, "{writes:#?}");
    assert_eq!(
        fake.mesh().status.clone().unwrap().state,
        Some(mizzen::api::MeshState::Paused)
    );
}
