//! The operator's permissions to create istiod's and the gateways' RBAC, derived from what [`crate::render`]
//! renders, instead of `escalate` and `bind` on every role.
//!
//! Kubernetes lets a subject create a Role or ClusterRole only with rules it holds itself (or with `escalate`), and
//! bind one only if it holds its rules (or with `bind`). So the operator holds:
//!
//! - ClusterRole `mizzen-operator-istio`: every rule of every ClusterRole mizzen renders (istiod's, and what addons
//!   need), cluster-wide, as istiod holds them;
//! - ClusterRole `mizzen-operator-mesh-namespace`: every rule of every namespaced Role mizzen renders (istiod's
//!   Secrets and leases in the mesh namespace, the gateways' Secrets). It is bound to the operator only inside each
//!   mesh namespace, by a RoleBinding the operator renders there, which its `bind` permission, restricted by name to
//!   this one ClusterRole, allows.
//!
//! `mizzenctl rbac` prints both (`config/rbac/operator-grants.yaml`, checked for drift).

use std::collections::BTreeMap;

use serde_json::{Value, json};

use crate::MeshInstall;
use crate::render::{MANAGED_BY, RenderOptions, render};

/// The ClusterRole with the rules of every rendered ClusterRole.
pub const ISTIO_GRANTS: &str = "mizzen-operator-istio";
/// The ClusterRole with the rules of every rendered Role, bound to the operator in each mesh namespace.
pub const MESH_NAMESPACE_GRANTS: &str = "mizzen-operator-mesh-namespace";
/// The operator's ServiceAccount.
pub const OPERATOR_SERVICE_ACCOUNT: &str = "mizzen-operator";

/// A MeshInstall that renders every kind of role mizzen can render (extend it with every optional part that
/// brings roles of its own).
fn everything() -> Option<MeshInstall> {
    let spec = json!({
        "version": "1.28.0",
        "gateways": [
            {"name": "istio-ingressgateway", "kind": "ingress"},
            {"name": "istio-egressgateway", "kind": "egress"},
        ],
        "controlPlane": {"autoscale": {"min": 1, "max": 2}},
        "addons": {"prometheus": {"enabled": true}, "grafana": {"enabled": true}, "jaeger": {"enabled": true}},
    });
    let mut mi = MeshInstall::new("rbac", serde_json::from_value(spec).ok()?);
    mi.metadata.uid = Some("rbac".into());
    Some(mi)
}

/// Rules merged: one rule per (apiGroups, resources, resourceNames, nonResourceURLs), verbs united.
fn merge_rules(rules: impl IntoIterator<Item = Value>) -> Vec<Value> {
    let mut merged: BTreeMap<String, (Value, Vec<String>)> = BTreeMap::new();
    for rule in rules {
        let mut key_rule = rule.clone();
        let verbs: Vec<String> = rule["verbs"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|v| v.as_str().map(str::to_owned))
            .collect();
        if let Some(o) = key_rule.as_object_mut() {
            o.remove("verbs");
        }
        let entry = merged
            .entry(key_rule.to_string())
            .or_insert_with(|| (key_rule, Vec::new()));
        for v in verbs {
            if !entry.1.contains(&v) {
                entry.1.push(v);
            }
        }
    }
    merged
        .into_values()
        .map(|(mut rule, mut verbs)| {
            verbs.sort();
            rule["verbs"] = json!(verbs);
            rule
        })
        .collect()
}

fn metadata(name: &str) -> Value {
    json!({"name": name, "labels": {"app.kubernetes.io/name": "mizzen-operator", "app.kubernetes.io/part-of": MANAGED_BY}})
}

/// The two ClusterRoles and the ClusterRoleBinding of the first, for the operator in `operator_namespace`.
pub fn operator_grants(operator_namespace: &str) -> Vec<Value> {
    let objects = everything()
        .and_then(|mi| render(&mi, &RenderOptions::default()).ok())
        .unwrap_or_default();
    let rules_of = |kind: &str| {
        merge_rules(
            objects
                .iter()
                .filter(|o| o["kind"] == kind)
                .flat_map(|o| o["rules"].as_array().cloned().unwrap_or_default()),
        )
    };
    vec![
        json!({
            "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole",
            "metadata": metadata(ISTIO_GRANTS),
            "rules": rules_of("ClusterRole"),
        }),
        json!({
            "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding",
            "metadata": metadata(ISTIO_GRANTS),
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": ISTIO_GRANTS},
            "subjects": [{"kind": "ServiceAccount", "name": OPERATOR_SERVICE_ACCOUNT, "namespace": operator_namespace}],
        }),
        json!({
            "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole",
            "metadata": metadata(MESH_NAMESPACE_GRANTS),
            "rules": rules_of("Role"),
        }),
    ]
}

/// `config/rbac/operator-grants.yaml`.
pub fn operator_grants_yaml() -> Result<String, crate::yaml::YamlError> {
    Ok(format!(
        "# Generated by `mizzenctl rbac` from what mizzen renders (src/rbac.rs explains why). Do not edit.\n{}",
        crate::yaml::to_yaml_stream(&operator_grants(crate::render::DEFAULT_OPERATOR_NAMESPACE))?
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn covers(grants: &[Value], rule: &Value) -> bool {
        let list = |v: &Value, k: &str| -> Vec<String> {
            v[k].as_array()
                .into_iter()
                .flatten()
                .filter_map(|x| x.as_str().map(str::to_owned))
                .collect()
        };
        list(rule, "verbs").iter().all(|verb| {
            grants.iter().any(|g| {
                list(g, "verbs").contains(verb)
                    && list(rule, "apiGroups").iter().all(|a| list(g, "apiGroups").contains(a))
                    && list(rule, "resources").iter().all(|r| list(g, "resources").contains(r))
                    && list(rule, "nonResourceURLs")
                        .iter()
                        .all(|u| list(g, "nonResourceURLs").contains(u))
                    && (list(g, "resourceNames").is_empty()
                        || list(rule, "resourceNames")
                            .iter()
                            .all(|n| list(g, "resourceNames").contains(n)))
            })
        })
    }

    #[test]
    fn the_grants_cover_every_rule_mizzen_renders_for_any_install() {
        let grants = operator_grants("mizzen-system");
        let cluster = grants[0]["rules"].as_array().unwrap().clone();
        let namespaced = grants[2]["rules"].as_array().unwrap().clone();
        // The sample and a revision, besides the built-in everything.
        let sample: MeshInstall = serde_saphyr::from_str(include_str!("../config/samples/meshinstall.yaml")).unwrap();
        let addons: MeshInstall =
            serde_saphyr::from_str(include_str!("../config/samples/meshinstall-addons.yaml")).unwrap();
        assert!(!cluster.is_empty() && !namespaced.is_empty());
        for mi in [everything().unwrap(), sample, addons] {
            for o in render(&mi, &RenderOptions::default()).unwrap() {
                let grants = match o["kind"].as_str() {
                    Some("ClusterRole") => &cluster,
                    Some("Role") => &namespaced,
                    _ => continue,
                };
                for rule in o["rules"].as_array().unwrap() {
                    assert!(
                        covers(grants, rule),
                        "{} {} rule not granted: {rule}",
                        o["kind"],
                        o["metadata"]["name"]
                    );
                }
            }
        }
    }

    #[test]
    fn rules_merge_by_resource_and_unite_verbs() {
        let merged = merge_rules([
            json!({"apiGroups": [""], "resources": ["secrets"], "verbs": ["get", "list"]}),
            json!({"apiGroups": [""], "resources": ["secrets"], "verbs": ["watch", "get"]}),
            json!({"apiGroups": [""], "resources": ["configmaps"], "verbs": ["get"]}),
        ]);
        assert_eq!(merged.len(), 2);
        assert!(
            merged.contains(&json!({"apiGroups": [""], "resources": ["secrets"], "verbs": ["get", "list", "watch"]}))
        );
        // The grants never need escalate or bind.
        let text = operator_grants_yaml().unwrap();
        assert!(!text.contains("escalate") && !text.contains("- bind"), "{text}");
    }
}
