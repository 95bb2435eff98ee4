//! The kinds the operator applies, watches and prunes: one table, so the watches, the applier and the pruner cannot
//! drift apart.

use kube::api::{ApiResource, GroupVersionKind};

/// One kind of object a MeshInstall renders.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ManagedKind {
    /// `apiVersion`.
    pub api_version: &'static str,
    /// `kind`.
    pub kind: &'static str,
    /// Resource name in the API path.
    pub plural: &'static str,
    /// Namespaced or cluster-scoped.
    pub namespaced: bool,
    /// Deleted when a MeshInstall no longer renders it. CRDs and namespaces stay so users' resources survive.
    pub pruned: bool,
    /// Cached in full. Istio's CRDs are large (about 1 MB of schema), so only their metadata is watched and the
    /// full object is read when its `resourceVersion` moved since the operator last compared it.
    pub cached_in_full: bool,
}

impl ManagedKind {
    const fn new(api_version: &'static str, kind: &'static str, plural: &'static str, namespaced: bool) -> Self {
        Self {
            api_version,
            kind,
            plural,
            namespaced,
            pruned: true,
            cached_in_full: true,
        }
    }

    /// The dynamic API resource.
    pub fn api_resource(&self) -> ApiResource {
        let (group, version) = self.api_version.rsplit_once('/').unwrap_or(("", self.api_version));
        ApiResource::from_gvk_with_plural(&GroupVersionKind::gvk(group, version, self.kind), self.plural)
    }
}

/// Everything the operator manages, in apply order (CRDs and namespaces before what lives in them).
pub const MANAGED: &[ManagedKind] = &[
    ManagedKind {
        pruned: false,
        cached_in_full: false,
        ..ManagedKind::new(
            "apiextensions.k8s.io/v1",
            "CustomResourceDefinition",
            "customresourcedefinitions",
            false,
        )
    },
    ManagedKind {
        pruned: false,
        ..ManagedKind::new("v1", "Namespace", "namespaces", false)
    },
    ManagedKind::new("v1", "ServiceAccount", "serviceaccounts", true),
    ManagedKind::new("rbac.authorization.k8s.io/v1", "ClusterRole", "clusterroles", false),
    ManagedKind::new(
        "rbac.authorization.k8s.io/v1",
        "ClusterRoleBinding",
        "clusterrolebindings",
        false,
    ),
    ManagedKind::new("rbac.authorization.k8s.io/v1", "Role", "roles", true),
    ManagedKind::new("rbac.authorization.k8s.io/v1", "RoleBinding", "rolebindings", true),
    ManagedKind::new("v1", "ConfigMap", "configmaps", true),
    ManagedKind::new("apps/v1", "Deployment", "deployments", true),
    ManagedKind::new("v1", "Service", "services", true),
    ManagedKind::new(
        "autoscaling/v2",
        "HorizontalPodAutoscaler",
        "horizontalpodautoscalers",
        true,
    ),
    ManagedKind::new("policy/v1", "PodDisruptionBudget", "poddisruptionbudgets", true),
    ManagedKind::new(
        "admissionregistration.k8s.io/v1",
        "MutatingWebhookConfiguration",
        "mutatingwebhookconfigurations",
        false,
    ),
];

/// The entry for an object's `apiVersion` and `kind`.
pub fn lookup(api_version: &str, kind: &str) -> Option<&'static ManagedKind> {
    MANAGED.iter().find(|k| k.api_version == api_version && k.kind == kind)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn everything_render_produces_is_managed() {
        for sample in [
            include_str!("../../config/samples/meshinstall.yaml"),
            include_str!("../../config/samples/meshinstall-addons.yaml"),
        ] {
            let mi: mizzen::MeshInstall = serde_saphyr::from_str(sample).expect("sample parses");
            let objects = mizzen::render::render(&mi, &mizzen::render::RenderOptions::default()).expect("renders");
            for o in objects {
                let (av, kind) = (o["apiVersion"].as_str().unwrap(), o["kind"].as_str().unwrap());
                assert!(lookup(av, kind).is_some(), "{av} {kind} is rendered but not managed");
            }
        }
    }

    #[test]
    fn api_resources_split_group_and_version() {
        let ar = lookup("apps/v1", "Deployment").unwrap().api_resource();
        assert_eq!(
            (ar.group.as_str(), ar.version.as_str(), ar.plural.as_str()),
            ("apps", "v1", "deployments")
        );
        let core = lookup("v1", "Service").unwrap().api_resource();
        assert_eq!((core.group.as_str(), core.api_version.as_str()), ("", "v1"));
    }
}
