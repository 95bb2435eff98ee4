//! Tier 2: Istio's sidecar-injection golden corpus, every row of `cases.tsv`, through mizzen's kube-inject path and
//! (for webhook rows) its admission path, compared as data (the corpus README's semantic mode).
//!
//! The corpus lives outside the repository: `MIZZEN_CONFORMANCE_DIR`, default `../shared/conformance/istio-inject`.
//! Without it the test prints why and passes without checking anything.

mod common;

use std::collections::BTreeMap;
use std::path::Path;

use common::corpus_dir;
use mizzen::inject::{InjectionConfig, Injector};
use mizzen::kubeinject::{inject_stream, split_documents};
use serde_json::{Map, Value, json};

/// Rows that must pass; raise it as cases are fixed, never lower it.
const PASS_FLOOR: usize = 136;
/// Webhook patches of the corpus written from the lists and compared with the tree path's, at least (of the pods
/// that fit the lists; raise it with them, never lower it).
const LISTS_FLOOR: usize = 76;

/// Rows known to fail, with the reason. Any other failing row is a regression. (Also listed in README.md.)
const EXCLUDED: &[(&str, &str)] = &[];

struct Case {
    input: String,
    output: String,
    expect_error: String,
    settings: String,
    expect_log: String,
    modes: String,
    test_name: String,
}

fn cases(dir: &Path) -> Vec<Case> {
    let text = std::fs::read_to_string(dir.join("cases.tsv")).expect("read cases.tsv");
    text.lines()
        .skip(1)
        .filter(|l| !l.trim().is_empty())
        .map(|line| {
            let f: Vec<&str> = line.split('\t').collect();
            let get = |i: usize| f.get(i).copied().unwrap_or_default().to_owned();
            Case {
                input: get(0),
                output: get(1),
                expect_error: get(2),
                settings: get(3),
                modes: get(4),
                expect_log: get(6),
                test_name: get(8),
            }
        })
        .collect()
}

fn config_for(dir: &Path, settings: &str) -> Result<InjectionConfig, String> {
    let mut config = InjectionConfig::istio_test_defaults();
    let pairs: Vec<(&str, &str)> = settings
        .split(';')
        .filter(|s| !s.is_empty())
        .map(|s| s.split_once('=').unwrap_or((s, "")))
        .collect();
    // The IstioOperator overlay is applied first, then the --set style settings.
    for (key, value) in &pairs {
        if *key == "iop" {
            let text = std::fs::read_to_string(dir.join(value)).map_err(|e| format!("{value}: {e}"))?;
            let iop: Value = serde_saphyr::from_str(&text).map_err(|e| format!("{value}: {e}"))?;
            config.apply_values(&iop["spec"]["values"]).map_err(|e| e.to_string())?;
        }
    }
    for (key, value) in &pairs {
        if *key != "iop" {
            config.apply_setting(key, value).map_err(|e| e.to_string())?;
        }
    }
    Ok(config)
}

fn parse(doc: &str) -> Value {
    serde_saphyr::from_str(doc).unwrap_or(Value::Null)
}

fn normalize_pod_spec(spec: &mut Value) {
    let Some(obj) = spec.as_object_mut() else { return };
    obj.entry("containers").or_insert_with(|| json!([]));
    for field in ["containers", "initContainers"] {
        for c in obj.get_mut(field).and_then(Value::as_array_mut).into_iter().flatten() {
            if let Some(r) = c.get_mut("resources") {
                mizzen::quantity::canonicalize_resources(r);
                if r.as_object().is_some_and(Map::is_empty) {
                    c.as_object_mut().map(|m| m.remove("resources"));
                }
            }
        }
    }
}

fn normalize_metadata(meta: &mut Value) {
    let Some(obj) = meta.as_object_mut() else { return };
    if obj.get("creationTimestamp").is_some_and(Value::is_null) {
        obj.remove("creationTimestamp");
    }
    if let Some(annotations) = obj.get_mut("annotations").and_then(Value::as_object_mut)
        && let Some(status) = annotations.get("sidecar.istio.io/status").and_then(Value::as_str)
        && let Ok(mut parsed) = serde_json::from_str::<Value>(status)
    {
        parsed.as_object_mut().map(|m| m.remove("version"));
        annotations.insert("sidecar.istio.io/status".into(), parsed);
    }
}

/// Removes serialiser artefacts and puts quantities and the status annotation in comparable form.
fn normalize(doc: &mut Value) {
    let Some(obj) = doc.as_object_mut() else { return };
    // Go writes a workload's status struct even when every counter is zero.
    if obj
        .get("status")
        .is_some_and(|s| s.as_object().is_some_and(|m| m.values().all(is_zero)))
    {
        obj.remove("status");
    }
    if obj.get("kind").and_then(Value::as_str) == Some("List") {
        if obj
            .get("metadata")
            .is_some_and(|m| m.as_object().is_some_and(Map::is_empty))
        {
            obj.remove("metadata");
        }
        for item in obj.get_mut("items").and_then(Value::as_array_mut).into_iter().flatten() {
            normalize(item);
        }
        return;
    }
    if let Some(meta) = obj.get_mut("metadata") {
        normalize_metadata(meta);
    }
    if let Some(meta) = doc.pointer_mut("/spec/jobTemplate/metadata") {
        normalize_metadata(meta);
    }
    let Some(obj) = doc.as_object_mut() else { return };
    let kind = obj.get("kind").and_then(Value::as_str).unwrap_or_default().to_owned();
    if let Some(spec) = obj.get_mut("spec").and_then(Value::as_object_mut) {
        for f in ["strategy", "updateStrategy"] {
            if spec.get(f).is_some_and(|s| s.as_object().is_some_and(Map::is_empty)) {
                spec.remove(f);
            }
        }
        // OpenShift's DeploymentConfig is decoded into Go types: `minReadySeconds: 0` and `paused: false` are
        // dropped (omitempty), `test: false` and a strategy's `resources: {}` are written. Those zero values are also
        // the API defaults, so they are compared as absent on both sides.
        if kind == "DeploymentConfig" {
            spec.retain(|_, v| !matches!(v, Value::Bool(false)) && v.as_i64() != Some(0));
            if let Some(strategy) = spec.get_mut("strategy").and_then(Value::as_object_mut)
                && strategy
                    .get("resources")
                    .is_some_and(|r| r.as_object().is_some_and(Map::is_empty))
            {
                strategy.remove("resources");
            }
        }
    }
    let pointer = if kind == "Pod" {
        Some("")
    } else {
        mizzen::kubeinject::template_pointer(&kind)
    };
    if let Some(p) = pointer
        && let Some(template) = doc.pointer_mut(p)
    {
        if let Some(meta) = template.get_mut("metadata") {
            normalize_metadata(meta);
        }
        // An empty pod-template `metadata: {}` is Go's zero value, not a setting.
        if template
            .get("metadata")
            .is_some_and(|m| m.as_object().is_some_and(Map::is_empty))
        {
            template.as_object_mut().map(|t| t.remove("metadata"));
        }
        if let Some(spec) = template.get_mut("spec") {
            normalize_pod_spec(spec);
        }
    }
}

fn is_zero(v: &Value) -> bool {
    match v {
        Value::Number(n) => n.as_f64() == Some(0.0),
        Value::Object(m) => m.is_empty(),
        Value::Null => true,
        _ => false,
    }
}

fn first_difference(a: &Value, b: &Value, path: &str) -> Option<String> {
    match (a, b) {
        (Value::Object(x), Value::Object(y)) => {
            let keys: std::collections::BTreeSet<&String> = x.keys().chain(y.keys()).collect();
            keys.into_iter().find_map(|k| match (x.get(k), y.get(k)) {
                (Some(u), Some(v)) => first_difference(u, v, &format!("{path}/{k}")),
                (Some(u), None) => Some(format!("{path}/{k}: unexpected {}", short(u))),
                (None, Some(v)) => Some(format!("{path}/{k}: missing, want {}", short(v))),
                (None, None) => None,
            })
        }
        (Value::Array(x), Value::Array(y)) => {
            if x.len() != y.len() {
                let n = |l: &Vec<Value>| {
                    l.iter()
                        .map(|i| i["name"].as_str().unwrap_or("?").to_owned())
                        .collect::<Vec<_>>()
                };
                return Some(format!(
                    "{path}: {} items {:?}, want {} {:?}",
                    x.len(),
                    n(x),
                    y.len(),
                    n(y)
                ));
            }
            x.iter()
                .zip(y)
                .enumerate()
                .find_map(|(i, (u, v))| first_difference(u, v, &format!("{path}/{i}")))
        }
        _ if a == b => None,
        _ => Some(format!("{path}: got {}, want {}", short(a), short(b))),
    }
}

fn short(v: &Value) -> String {
    let s = v.to_string();
    if s.len() > 160 { format!("{}…", &s[..160]) } else { s }
}

fn compare_streams(got: &str, want: &str) -> Result<(), String> {
    let g: Vec<Value> = split_documents(got).iter().map(|d| parse(d)).collect();
    let w: Vec<Value> = split_documents(want).iter().map(|d| parse(d)).collect();
    if g.len() != w.len() {
        return Err(format!("{} documents, want {}", g.len(), w.len()));
    }
    for (i, (mut a, mut b)) in g.into_iter().zip(w).enumerate() {
        normalize(&mut a);
        normalize(&mut b);
        if let Some(d) = first_difference(&a, &b, "") {
            return Err(format!("document {}: {d}", i + 1));
        }
    }
    Ok(())
}

fn run_kube_inject(config: &Injector, input: &str, want: &str, expect_log: &str) -> Result<(), String> {
    let out = inject_stream(config, input).map_err(|e| format!("kube-inject failed: {e}"))?;
    if !expect_log.is_empty() && !out.skipped.iter().any(|s| s.to_string().contains(expect_log)) {
        let said: Vec<String> = out.skipped.iter().map(ToString::to_string).collect();
        return Err(format!(
            "kube-inject: no warning contains {expect_log:?}; warnings: {said:?}"
        ));
    }
    compare_streams(&out.text, want).map_err(|e| format!("kube-inject: {e}"))?;
    // Idempotence: injecting the expected output again changes nothing.
    let again = inject_stream(config, want).map_err(|e| format!("re-inject failed: {e}"))?;
    compare_streams(&again.text, want).map_err(|e| format!("re-inject: {e}"))
}

/// Turns a workload document into the pod the API server would send, as the upstream webhook harness does.
fn pods_of(doc: &Value) -> Vec<Value> {
    let kind = doc["kind"].as_str().unwrap_or_default();
    let name = doc["metadata"]["name"].as_str().unwrap_or_default();
    match kind {
        "List" => doc["items"]
            .as_array()
            .into_iter()
            .flatten()
            .flat_map(pods_of)
            .collect(),
        "Pod" => vec![json!({"apiVersion": "v1", "kind": "Pod", "metadata": doc["metadata"], "spec": doc["spec"]})],
        _ => {
            let Some(pointer) = mizzen::kubeinject::template_pointer(kind) else {
                return vec![];
            };
            let template = doc.pointer(pointer).cloned().unwrap_or(Value::Null);
            let mut meta = template["metadata"].clone();
            if !meta.is_object() {
                meta = json!({});
            }
            if let Some(ns) = doc["metadata"]["namespace"].as_str() {
                meta["namespace"] = json!(ns);
            }
            if kind == "Deployment" {
                meta["generateName"] = json!(format!("{name}-fake-"));
                meta["ownerReferences"] = json!([{"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": format!("{name}-fake"), "controller": true, "uid": ""}]);
                if !meta["labels"].is_object() {
                    meta["labels"] = json!({});
                }
                meta["labels"]["pod-template-hash"] = json!("fake");
            } else {
                meta["generateName"] = json!(name);
                meta["ownerReferences"] = json!([{"apiVersion": doc["apiVersion"], "kind": kind, "name": name, "controller": true, "uid": ""}]);
            }
            vec![json!({"apiVersion": "v1", "kind": "Pod", "metadata": meta, "spec": template["spec"]})]
        }
    }
}

fn comparable_pod(pod: &Value, produced: bool) -> Value {
    let mut meta = pod["metadata"].clone();
    normalize_metadata(&mut meta);
    if let Some(a) = meta.get_mut("annotations").and_then(Value::as_object_mut) {
        a.remove("sidecar.istio.io/status");
        if a.is_empty() {
            meta.as_object_mut().map(|m| m.remove("annotations"));
        }
    }
    let mut spec = pod["spec"].clone();
    normalize_pod_spec(&mut spec);
    if produced {
        for c in spec
            .get_mut("containers")
            .and_then(Value::as_array_mut)
            .into_iter()
            .flatten()
        {
            for e in c.get_mut("env").and_then(Value::as_array_mut).into_iter().flatten() {
                if let Some(f) = e.pointer_mut("/valueFrom/fieldRef").and_then(Value::as_object_mut) {
                    f.remove("apiVersion");
                }
            }
        }
    }
    json!({"metadata": meta, "spec": spec})
}

/// The webhook's whole path for one pod: an AdmissionReview body in, the response body out, its patch applied to
/// the pod. A refused pod is an error with the message.
fn webhook(
    injector: &Injector,
    pod: &Value,
    namespace: &str,
    ns_annotations: Option<&BTreeMap<String, String>>,
) -> Result<Value, String> {
    use base64::Engine as _;
    let body = serde_json::to_vec(&json!({
        "apiVersion": "admission.k8s.io/v1",
        "kind": "AdmissionReview",
        "request": {
            "uid": "conformance",
            "kind": {"group": "", "version": "v1", "kind": "Pod"},
            "resource": {"group": "", "version": "v1", "resource": "pods"},
            "namespace": namespace,
            "operation": "CREATE",
            "userInfo": {},
            "object": pod,
        }
    }))
    .map_err(|e| e.to_string())?;
    let mut request = mizzen::admission::parse(&body).map_err(|e| format!("webhook: {e}"))?;
    let (response, _) = mizzen::admission::respond(&mut request, Some(injector), "default", ns_annotations);
    let answer: Value = serde_json::from_slice(&mizzen::admission::to_body(&response)).map_err(|e| e.to_string())?;
    let answer = &answer["response"];
    if answer["allowed"] != true {
        return Err(format!("webhook: {}", answer["status"]["message"]));
    }
    let mut patched = pod.clone();
    if let Some(text) = answer["patch"].as_str() {
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(text)
            .map_err(|e| e.to_string())?;
        let patch: json_patch::Patch =
            serde_json::from_slice(&bytes).map_err(|e| format!("webhook: the patch is not JSON patch: {e}"))?;
        json_patch::patch(&mut patched, &patch).map_err(|e| format!("webhook: patch does not apply: {e}"))?;
    }
    Ok(patched)
}

/// Pods whose patch written the webhook's way came from the lists (`mizzen::inject::patch::Lists`) in
/// [`webhooks_way_is_the_values_way`]: that comparison compares two ways of writing a patch for them.
static COMPARED_FROM_LISTS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

/// The webhook's patch for `pod` written its way (from the compiled text where it fits, and from the changes to the
/// labels and annotations of a pod seen the first time) is, byte for byte, the one written from the injected values.
fn webhooks_way_is_the_values_way(
    injector: &Injector,
    pod: &Value,
    namespace: &str,
    ns_annotations: Option<&BTreeMap<String, String>>,
) -> Result<(), String> {
    let text = pod.to_string();
    let run = |shortcuts| {
        let mut submitted = mizzen::inject::pod::Submitted::from_json(&text)?;
        mizzen::inject::inject_pod_with(injector, &mut submitted, namespace, ns_annotations, shortcuts)
            .map_err(|e| e.to_string())
    };
    let before = mizzen::inject::patches_from_lists();
    let (a, b) = (run(true), run(false));
    if mizzen::inject::patches_from_lists() > before {
        COMPARED_FROM_LISTS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    }
    if a != b {
        return Err(format!(
            "webhook: the patch written the webhook's way differs from the one written from values:\n{}\n{}",
            show(&a),
            show(&b)
        ));
    }
    Ok(())
}

fn show(outcome: &Result<mizzen::inject::PodOutcome, String>) -> String {
    match outcome {
        Ok(mizzen::inject::PodOutcome::Injected { patch, .. }) => String::from_utf8_lossy(patch).into_owned(),
        other => format!("{other:?}"),
    }
}

fn run_webhook(injector: &Injector, input: &str, want: &str) -> Result<(), String> {
    let split = |t: &str| -> Vec<Value> {
        t.split("\n---")
            .map(parse)
            .filter(|v| !v.is_null())
            .flat_map(|d| pods_of(&d))
            .collect()
    };
    let inputs = split(input);
    let wants = split(want);
    if inputs.len() != wants.len() {
        return Err(format!("webhook: {} pods, want {}", inputs.len(), wants.len()));
    }
    for (i, (pod, want_pod)) in inputs.iter().zip(&wants).enumerate() {
        let namespace = pod["metadata"]["namespace"].as_str().unwrap_or_default();
        // The upstream harness's fake namespace with OpenShift UID ranges.
        let test_ns: BTreeMap<String, String> = [
            ("openshift.io/sa.scc.uid-range", "1000620000/10000"),
            ("openshift.io/sa.scc.supplemental-groups", "1000620000/10000"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
        let ns_annotations = (namespace == "test-ns").then_some(&test_ns);
        let produced = webhook(injector, pod, namespace, ns_annotations)?;
        // (Only a pod not injected before can take the compiled text or the changes.)
        webhooks_way_is_the_values_way(injector, pod, namespace, ns_annotations)?;
        // Idempotence: the webhook given its own output changes nothing.
        let again = webhook(injector, &produced, namespace, ns_annotations).map_err(|e| format!("re-inject: {e}"))?;
        if let Some(d) = first_difference(&again, &produced, "") {
            return Err(format!("webhook re-inject of pod {} changed it: {d}", i + 1));
        }
        let got = comparable_pod(&produced, true);
        let want = comparable_pod(want_pod, false);
        if let Some(d) = first_difference(&got, &want, "") {
            return Err(format!("webhook pod {}: {d}", i + 1));
        }
    }
    Ok(())
}

fn run_case(dir: &Path, case: &Case) -> Result<(), String> {
    let config = Injector::compile(config_for(dir, &case.settings)?);
    let input = std::fs::read_to_string(dir.join(&case.input)).map_err(|e| format!("{}: {e}", case.input))?;
    if !case.expect_error.is_empty() {
        return match inject_stream(&config, &input) {
            Ok(_) => Err(format!(
                "expected an error containing {:?}, got success",
                case.expect_error
            )),
            Err(e) if e.to_string().to_lowercase().contains(&case.expect_error) => Ok(()),
            Err(e) => Err(format!("error {e:?} does not contain {:?}", case.expect_error)),
        };
    }
    let want = std::fs::read_to_string(dir.join(&case.output)).map_err(|e| format!("{}: {e}", case.output))?;
    // Both modes run even when the first fails, so a kube-inject failure cannot hide a webhook one.
    let mut errors = Vec::new();
    if case.modes == "both" || case.modes == "kube-inject" {
        errors.extend(run_kube_inject(&config, &input, &want, &case.expect_log).err());
    }
    if case.modes == "both" || case.modes == "webhook" {
        errors.extend(run_webhook(&config, &input, &want).err());
    }
    if errors.is_empty() {
        Ok(())
    } else {
        Err(errors.join("; "))
    }
}

#[test]
fn istio_injection_corpus() {
    let Some(dir) = corpus_dir() else {
        eprintln!(
            "skipped: Istio injection corpus not found (set MIZZEN_CONFORMANCE_DIR or put shared/ beside the repository)"
        );
        return;
    };
    let excluded: BTreeMap<&str, &str> = EXCLUDED.iter().copied().collect();
    let mut passed = 0;
    let mut failed = 0;
    let mut regressions = Vec::new();
    let mut fixed = Vec::new();
    for case in cases(&dir) {
        let id = case.test_name.clone();
        match run_case(&dir, &case) {
            Ok(()) => {
                passed += 1;
                if excluded.contains_key(id.as_str()) {
                    fixed.push(id);
                }
            }
            Err(e) => {
                failed += 1;
                let known = excluded.get(id.as_str());
                println!(
                    "FAIL {id}: {e}{}",
                    known.map(|r| format!(" [excluded: {r}]")).unwrap_or_default()
                );
                if known.is_none() {
                    regressions.push(id);
                }
            }
        }
    }
    let from_lists = COMPARED_FROM_LISTS.load(std::sync::atomic::Ordering::Relaxed);
    println!("conformance: {passed} passed, {failed} failed; {from_lists} webhook patches written from the lists");
    for id in &fixed {
        println!("now passing, remove from EXCLUDED: {id}");
    }
    assert!(
        from_lists >= LISTS_FLOOR,
        "{from_lists} webhook patches were written from the lists, fewer than {LISTS_FLOOR}: the comparison of the \
         two ways of writing them covers fewer pods"
    );
    assert!(
        passed >= PASS_FLOOR,
        "conformance fell below the floor: {passed} < {PASS_FLOOR}"
    );
    assert!(
        regressions.is_empty(),
        "rows failing that are not in EXCLUDED: {regressions:?}"
    );
}
