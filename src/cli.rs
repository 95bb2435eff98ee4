//! What `mizzenctl` does, as plain functions over text (the binary only parses flags and prints).

use std::collections::BTreeMap;
use std::fmt::Write as _;

use serde_json::{Value, json};

use crate::api::MeshInstall;
use crate::inject::{self, InjectionConfig, Route};
use crate::kubeinject::{split_documents, template_pointer};

/// A command failed; the message names what was wrong.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct CliError(pub String);

/// Reads the MeshInstall(s) in a YAML text; the first one is used.
pub fn mesh_install_from_yaml(path: &str, text: &str) -> Result<MeshInstall, CliError> {
    let docs = crate::yaml::parse_documents(text).map_err(|e| CliError(format!("{path}: {e}")))?;
    let doc = docs
        .into_iter()
        .find(|d| d["kind"] == "MeshInstall")
        .ok_or_else(|| CliError(format!("{path}: no MeshInstall document found")))?;
    serde_json::from_value(doc).map_err(|e| CliError(format!("{path}: not a valid MeshInstall: {e}")))
}

/// Parses `k=v,k2=v2` label lists.
pub fn parse_labels(text: &str) -> Result<BTreeMap<String, String>, CliError> {
    text.split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|pair| {
            pair.split_once('=')
                .map(|(k, v)| (k.trim().to_owned(), v.trim().to_owned()))
                .filter(|(k, _)| !k.is_empty())
                .ok_or_else(|| CliError(format!("--namespace-labels: {pair:?} is not key=value")))
        })
        .collect()
}

/// One pod template's decisions, as `check-inject` reports them.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Check {
    /// `Kind/name` of the workload.
    pub workload: String,
    /// Namespace the decision assumed.
    pub namespace: String,
    /// Stage 1: the revision whose webhook receives the pod, if any.
    pub webhook: Option<String>,
    /// Why stage 1 decided as it did.
    pub webhook_reason: String,
    /// Stage 2: whether the injector injects (when the pod reaches it).
    pub inject: bool,
    /// The rule that decided stage 2.
    pub inject_reason: String,
    /// Whether the pod ends up with a sidecar.
    pub injected: bool,
    /// What Istio's injector would log about the pod, such as an unrecognised `sidecar.istio.io/inject` value.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub warning: Option<String>,
}

fn pod_templates(doc: &Value, out: &mut Vec<(String, Value, Value, String)>) {
    let kind = doc["kind"].as_str().unwrap_or_default();
    let name = doc["metadata"]["name"].as_str().unwrap_or_default();
    let namespace = doc["metadata"]["namespace"].as_str().unwrap_or_default().to_owned();
    if kind == "List" {
        for item in doc["items"].as_array().into_iter().flatten() {
            pod_templates(item, out);
        }
        return;
    }
    let (meta, spec) = if kind == "Pod" {
        (doc["metadata"].clone(), doc["spec"].clone())
    } else if let Some(p) = template_pointer(kind) {
        let t = doc.pointer(p).cloned().unwrap_or(Value::Null);
        (t["metadata"].clone(), t["spec"].clone())
    } else {
        return;
    };
    out.push((format!("{kind}/{name}"), meta, spec, namespace));
}

/// Both decision stages for every pod template in a YAML stream.
pub fn check_inject(
    config: &InjectionConfig,
    text: &str,
    default_namespace: &str,
    namespace_labels: &BTreeMap<String, String>,
) -> Result<Vec<Check>, CliError> {
    let mut templates = Vec::new();
    for (i, doc) in split_documents(text).iter().enumerate() {
        let value = crate::yaml::parse_document(doc).map_err(|e| match e {
            crate::yaml::YamlError::Parse { message, .. } => CliError(format!("document {}: {message}", i + 1)),
            other => CliError(format!("document {}: {other}", i + 1)),
        })?;
        pod_templates(&value, &mut templates);
    }
    let mut checks = Vec::new();
    for (workload, meta, spec, ns) in templates {
        let meta = crate::kubeinject::labels_as_go_decodes(&meta).unwrap_or(meta);
        let namespace = if ns.is_empty() {
            default_namespace.to_owned()
        } else {
            ns
        };
        let pod_labels = inject::decision::labels_of(&meta);
        let route = inject::webhook_route(namespace_labels, &pod_labels);
        let (webhook, webhook_reason) = match route {
            Route::Sent(rev, why) => (Some(rev), why),
            Route::NotSent(why) => (None, why),
        };
        let spec = if spec.is_object() { spec } else { json!({}) };
        let decision = inject::decide(config, &meta, &spec, &namespace);
        checks.push(Check {
            workload,
            namespace,
            injected: webhook.as_deref().is_some_and(|w| config.serves(w)) && decision.inject,
            webhook,
            webhook_reason,
            inject: decision.inject,
            inject_reason: decision.rule.to_string(),
            warning: inject::decision::inject_warning(&meta),
        });
    }
    Ok(checks)
}

/// `check-inject` as a table.
pub fn checks_table(checks: &[Check], config: &InjectionConfig) -> String {
    let revision = config.revision_label();
    let mut rows = vec![[
        "WORKLOAD".to_owned(),
        "NAMESPACE".to_owned(),
        "SIDECAR".to_owned(),
        "WEBHOOK (stage 1)".to_owned(),
        "INJECTOR (stage 2)".to_owned(),
    ]];
    for c in checks {
        let stage1 = match &c.webhook {
            Some(rev) if rev == revision => format!("sent to revision {rev}: {}", c.webhook_reason),
            Some(tag) if config.serves(tag) => {
                format!("sent to tag {tag} of revision {revision}: {}", c.webhook_reason)
            }
            Some(rev) => format!("sent to another revision ({rev}): {}", c.webhook_reason),
            None => format!("not sent: {}", c.webhook_reason),
        };
        let stage2 = format!("{}: {}", if c.inject { "inject" } else { "skip" }, c.inject_reason);
        rows.push([
            c.workload.clone(),
            c.namespace.clone(),
            if c.injected { "yes" } else { "no" }.to_owned(),
            stage1,
            stage2,
        ]);
    }
    let widths: Vec<usize> = (0..5)
        .map(|i| rows.iter().map(|r| r[i].len()).max().unwrap_or(0))
        .collect();
    let mut out = String::new();
    for r in rows {
        let line: Vec<String> = r
            .iter()
            .enumerate()
            .map(|(i, c)| format!("{c:<w$}", w = widths[i]))
            .collect();
        let _ = writeln!(out, "{}", line.join("  ").trim_end());
    }
    for c in checks {
        if let Some(w) = &c.warning {
            let _ = writeln!(out, "warning: {}: {w}", c.workload);
        }
    }
    out
}

/// Rows of text as aligned columns (two spaces apart).
fn columns(rows: &[Vec<String>]) -> String {
    let n = rows.iter().map(Vec::len).max().unwrap_or(0);
    let widths: Vec<usize> = (0..n)
        .map(|i| {
            rows.iter()
                .filter_map(|r| r.get(i))
                .map(|c| c.chars().count())
                .max()
                .unwrap_or(0)
        })
        .collect();
    let mut out = String::new();
    for r in rows {
        let line: Vec<String> = r.iter().zip(&widths).map(|(c, w)| format!("{c:<w$}")).collect();
        let _ = writeln!(out, "{}", line.join("  ").trim_end());
    }
    out
}

/// What `mizzenctl proxy-status` prints: each MeshInstall (revision, the tags `routing` gives it, proxies up to date,
/// rollout), then every workload with injected pods, sorted by namespace, with the MeshInstall serving it and whether
/// its proxies are up to date.
pub fn proxy_status_table(
    meshes: &[&MeshInstall],
    routing: &crate::revisions::Assignment,
    rows: &[crate::dataplane::Row],
) -> String {
    let mut summary = vec![vec![
        "MESHINSTALL".to_owned(),
        "REVISION".to_owned(),
        "TAGS".to_owned(),
        "PROXY".to_owned(),
        "UP-TO-DATE".to_owned(),
        "ROLLOUT".to_owned(),
    ]];
    let mut sorted: Vec<&&MeshInstall> = meshes.iter().collect();
    sorted.sort_by_key(|m| m.metadata.name.clone());
    for mi in sorted {
        let name = mi.metadata.name.clone().unwrap_or_default();
        let (up, total) = rows
            .iter()
            .filter(|r| r.mesh_install.as_deref() == Some(name.as_str()))
            .fold((0, 0), |(u, t), r| (u + r.up_to_date, t + r.up_to_date + r.outdated));
        let tags = routing.of(&name).tags;
        summary.push(vec![
            name,
            mi.spec.revision_label().to_owned(),
            if tags.is_empty() {
                "-".to_owned()
            } else {
                tags.join(",")
            },
            mi.spec.proxy_image(),
            format!("{up}/{total}"),
            format!("{:?}", mi.spec.data_plane.rollout),
        ]);
    }
    let mut table = vec![vec![
        "NAMESPACE".to_owned(),
        "WORKLOAD".to_owned(),
        "PODS".to_owned(),
        "UP-TO-DATE".to_owned(),
        "INJECTED-BY".to_owned(),
        "MESHINSTALL".to_owned(),
        "STATUS".to_owned(),
    ]];
    for r in rows {
        table.push(vec![
            r.workload.namespace.clone(),
            format!("{}/{}", r.workload.kind, r.workload.name),
            (r.up_to_date + r.outdated).to_string(),
            r.up_to_date.to_string(),
            r.injected_by.join(","),
            r.mesh_install.clone().unwrap_or_else(|| "-".into()),
            match &r.reason {
                None => "up to date".to_owned(),
                Some(reason) => format!("outdated: {reason}"),
            },
        ]);
    }
    let mut out = columns(&summary);
    out.push('\n');
    if rows.is_empty() {
        out.push_str("no injected pods\n");
    } else {
        out.push_str(&columns(&table));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const DEPLOYMENT: &str = "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: web}\nspec:\n  template:\n    metadata:\n      labels: {app: web}\n    spec:\n      containers: [{name: web, image: nginx}]\n";

    #[test]
    fn check_inject_explains_both_stages() {
        let labels = parse_labels("istio-injection=enabled").unwrap();
        let checks = check_inject(&InjectionConfig::default(), DEPLOYMENT, "default", &labels).unwrap();
        assert_eq!(checks.len(), 1);
        assert_eq!(checks[0].webhook.as_deref(), Some("default"));
        assert!(checks[0].inject && checks[0].injected);
        let table = checks_table(&checks, &InjectionConfig::default());
        assert!(
            table.contains("Deployment/web") && table.contains("injection policy is enabled"),
            "{table}"
        );
    }

    #[test]
    fn unlabelled_namespace_never_reaches_the_webhook() {
        let checks = check_inject(&InjectionConfig::default(), DEPLOYMENT, "default", &BTreeMap::new()).unwrap();
        assert_eq!(checks[0].webhook, None);
        assert!(!checks[0].injected);
    }

    #[test]
    fn unrecognised_inject_values_fall_back_to_the_policy_with_istios_warning() {
        let doc = DEPLOYMENT.replace(
            "labels: {app: web}",
            "labels: {app: web, sidecar.istio.io/inject: \"False\"}",
        );
        let labels = parse_labels("istio-injection=enabled").unwrap();
        let checks = check_inject(&InjectionConfig::default(), &doc, "default", &labels).unwrap();
        assert!(checks[0].injected, "{checks:?}");
        assert_eq!(checks[0].inject_reason, "injection policy is enabled");
        let table = checks_table(&checks, &InjectionConfig::default());
        assert!(
            table.contains(
                "warning: Deployment/web: Invalid value for sidecar.istio.io/inject: \"False\". Only 'true' and 'false' are accepted."
            ),
            "{table}"
        );
    }

    #[test]
    fn pods_labelled_with_the_default_revision_are_sent_to_it() {
        let doc = DEPLOYMENT.replace("labels: {app: web}", "labels: {app: web, istio.io/rev: default}");
        let checks = check_inject(&InjectionConfig::default(), &doc, "default", &BTreeMap::new()).unwrap();
        assert_eq!(checks[0].webhook.as_deref(), Some("default"));
        assert!(checks[0].injected);
        let labels = parse_labels("istio.io/rev=default").unwrap();
        let checks = check_inject(&InjectionConfig::default(), DEPLOYMENT, "default", &labels).unwrap();
        assert!(checks[0].injected, "{checks:?}");
    }

    #[test]
    fn namespaces_labelled_with_a_tag_are_injected_by_the_revision_holding_it() {
        let config = InjectionConfig {
            revision: "canary".into(),
            revision_tags: vec!["prod".into()],
            ..InjectionConfig::default()
        };
        let labels = parse_labels("istio.io/rev=prod").unwrap();
        let checks = check_inject(&config, DEPLOYMENT, "default", &labels).unwrap();
        assert_eq!(checks[0].webhook.as_deref(), Some("prod"));
        assert!(checks[0].injected, "{checks:?}");
        let table = checks_table(&checks, &config);
        assert!(table.contains("sent to tag prod of revision canary"), "{table}");
        let labels = parse_labels("istio.io/rev=other").unwrap();
        let checks = check_inject(&config, DEPLOYMENT, "default", &labels).unwrap();
        assert!(!checks[0].injected, "{checks:?}");
    }

    #[test]
    fn proxy_status_lists_installs_then_workloads_by_namespace() {
        let mut mi: MeshInstall = serde_json::from_value(json!({
            "apiVersion": "mizzen.io/v1alpha1", "kind": "MeshInstall",
            "metadata": {"name": "default"}, "spec": {"version": "1.28.1", "revisionTags": ["prod"]}}))
        .unwrap();
        mi.metadata.creation_timestamp = None;
        let meshes = [&mi];
        let assignment = crate::revisions::assign(meshes);
        let pod = |ns: &str, name: &str, image: &str| crate::dataplane::InjectedPod {
            workload: crate::dataplane::Workload {
                namespace: ns.into(),
                kind: "Deployment".into(),
                name: name.into(),
            },
            revision: "default".into(),
            image: Some(image.into()),
            pinned_image: None,
            routing_labels: BTreeMap::new(),
        };
        let pods = [
            pod("shop", "web", "docker.io/istio/proxyv2:1.28.0"),
            pod("shop", "web", "docker.io/istio/proxyv2:1.28.1"),
            pod("a", "db", "docker.io/istio/proxyv2:1.28.1"),
        ];
        let namespaces = BTreeMap::from([
            (
                "shop".to_owned(),
                BTreeMap::from([("istio.io/rev".to_owned(), "prod".to_owned())]),
            ),
            (
                "a".to_owned(),
                BTreeMap::from([("istio-injection".to_owned(), "enabled".to_owned())]),
            ),
        ]);
        let rows = crate::dataplane::rows(&meshes, &assignment, &namespaces, &pods);
        let table = proxy_status_table(&meshes, &assignment, &rows);
        let lines: Vec<&str> = table.lines().collect();
        assert!(
            lines[1].starts_with("default") && lines[1].contains("default,prod") && lines[1].contains("2/3"),
            "{table}"
        );
        assert!(lines[4].starts_with("a ") && lines[4].contains("up to date"), "{table}");
        assert!(
            lines[5].starts_with("shop")
                && lines[5]
                    .contains("outdated: proxy docker.io/istio/proxyv2:1.28.0; want docker.io/istio/proxyv2:1.28.1"),
            "{table}"
        );
    }

    #[test]
    fn bad_label_lists_are_refused() {
        assert!(parse_labels("istio-injection").is_err());
    }
}
