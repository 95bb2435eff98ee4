//! Istio's API CRDs (networking, security, telemetry, extensions), written by mizzen with Istio's names, versions,
//! short names and printer columns. Their schemas keep unknown fields: istiod validates the content.

use serde_json::{Value, json};

/// A printer column: name, type, JSON path.
type Column = (&'static str, &'static str, &'static str);

/// One Istio API kind.
pub struct IstioCrd {
    /// API group.
    pub group: &'static str,
    /// Kind.
    pub kind: &'static str,
    /// Plural resource name.
    pub plural: &'static str,
    /// Short names.
    pub short_names: &'static [&'static str],
    /// Served versions; the first is the storage version.
    pub versions: &'static [&'static str],
    /// Printer columns (the same for every version).
    pub columns: &'static [Column],
}

const AGE: Column = ("Age", "date", ".metadata.creationTimestamp");
const NETWORKING: &[&str] = &["v1", "v1alpha3", "v1beta1"];
const SECURITY: &[&str] = &["v1", "v1beta1"];

/// The Istio APIs mizzen installs.
pub const ISTIO_CRDS: &[IstioCrd] = &[
    IstioCrd {
        group: "networking.istio.io",
        kind: "Gateway",
        plural: "gateways",
        short_names: &["gw"],
        versions: NETWORKING,
        columns: &[],
    },
    IstioCrd {
        group: "networking.istio.io",
        kind: "VirtualService",
        plural: "virtualservices",
        short_names: &["vs"],
        versions: NETWORKING,
        columns: &[
            ("Gateways", "string", ".spec.gateways"),
            ("Hosts", "string", ".spec.hosts"),
            AGE,
        ],
    },
    IstioCrd {
        group: "networking.istio.io",
        kind: "DestinationRule",
        plural: "destinationrules",
        short_names: &["dr"],
        versions: NETWORKING,
        columns: &[("Host", "string", ".spec.host"), AGE],
    },
    IstioCrd {
        group: "networking.istio.io",
        kind: "ServiceEntry",
        plural: "serviceentries",
        short_names: &["se"],
        versions: NETWORKING,
        columns: &[
            ("Hosts", "string", ".spec.hosts"),
            ("Location", "string", ".spec.location"),
            ("Resolution", "string", ".spec.resolution"),
            AGE,
        ],
    },
    IstioCrd {
        group: "networking.istio.io",
        kind: "Sidecar",
        plural: "sidecars",
        short_names: &[],
        versions: NETWORKING,
        columns: &[],
    },
    IstioCrd {
        group: "networking.istio.io",
        kind: "WorkloadEntry",
        plural: "workloadentries",
        short_names: &["we"],
        versions: NETWORKING,
        columns: &[AGE, ("Address", "string", ".spec.address")],
    },
    IstioCrd {
        group: "networking.istio.io",
        kind: "WorkloadGroup",
        plural: "workloadgroups",
        short_names: &["wg"],
        versions: NETWORKING,
        columns: &[AGE],
    },
    IstioCrd {
        group: "networking.istio.io",
        kind: "EnvoyFilter",
        plural: "envoyfilters",
        short_names: &[],
        versions: &["v1alpha3"],
        columns: &[],
    },
    IstioCrd {
        group: "networking.istio.io",
        kind: "ProxyConfig",
        plural: "proxyconfigs",
        short_names: &[],
        versions: &["v1beta1"],
        columns: &[],
    },
    IstioCrd {
        group: "security.istio.io",
        kind: "AuthorizationPolicy",
        plural: "authorizationpolicies",
        short_names: &["ap"],
        versions: SECURITY,
        columns: &[("Action", "string", ".spec.action"), AGE],
    },
    IstioCrd {
        group: "security.istio.io",
        kind: "PeerAuthentication",
        plural: "peerauthentications",
        short_names: &["pa"],
        versions: SECURITY,
        columns: &[("Mode", "string", ".spec.mtls.mode"), AGE],
    },
    IstioCrd {
        group: "security.istio.io",
        kind: "RequestAuthentication",
        plural: "requestauthentications",
        short_names: &["ra"],
        versions: SECURITY,
        columns: &[],
    },
    // Telemetry stores v1alpha1 and also serves v1.
    IstioCrd {
        group: "telemetry.istio.io",
        kind: "Telemetry",
        plural: "telemetries",
        short_names: &["telemetry"],
        versions: &["v1alpha1", "v1"],
        columns: &[AGE],
    },
    IstioCrd {
        group: "extensions.istio.io",
        kind: "WasmPlugin",
        plural: "wasmplugins",
        short_names: &[],
        versions: &["v1alpha1"],
        columns: &[AGE],
    },
];

impl IstioCrd {
    /// The CustomResourceDefinition object.
    pub fn to_object(&self) -> Value {
        let columns: Vec<Value> = self
            .columns
            .iter()
            .map(|(name, type_, path)| json!({"name": name, "type": type_, "jsonPath": path}))
            .collect();
        let versions: Vec<Value> = self
            .versions
            .iter()
            .enumerate()
            .map(|(i, v)| {
                let mut version = json!({
                    "name": v,
                    "served": true,
                    "storage": i == 0,
                    "subresources": {"status": {}},
                    "schema": {"openAPIV3Schema": {
                        "type": "object",
                        "description": format!("Istio {} ({}); validated by istiod.", self.kind, self.group),
                        "properties": {
                            "spec": {"type": "object", "x-kubernetes-preserve-unknown-fields": true},
                            "status": {"type": "object", "x-kubernetes-preserve-unknown-fields": true},
                        },
                    }},
                });
                if !columns.is_empty() {
                    version["additionalPrinterColumns"] = Value::Array(columns.clone());
                }
                version
            })
            .collect();
        let mut names = json!({
            "kind": self.kind,
            "listKind": format!("{}List", self.kind),
            "plural": self.plural,
            "singular": self.kind.to_ascii_lowercase(),
            "categories": ["istio-io", self.group.replace('.', "-")],
        });
        if !self.short_names.is_empty() {
            names["shortNames"] = json!(self.short_names);
        }
        json!({
            "apiVersion": "apiextensions.k8s.io/v1",
            "kind": "CustomResourceDefinition",
            "metadata": {
                "name": format!("{}.{}", self.plural, self.group),
                "labels": {"app.kubernetes.io/part-of": "istio", "app.kubernetes.io/managed-by": "mizzen"},
            },
            "spec": {"group": self.group, "names": names, "scope": "Namespaced", "versions": versions},
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fourteen_apis_with_istio_names() {
        let names: Vec<String> = ISTIO_CRDS
            .iter()
            .map(|c| c.to_object()["metadata"]["name"].as_str().unwrap().to_owned())
            .collect();
        assert_eq!(names.len(), 14);
        for want in [
            "virtualservices.networking.istio.io",
            "authorizationpolicies.security.istio.io",
            "telemetries.telemetry.istio.io",
            "wasmplugins.extensions.istio.io",
        ] {
            assert!(names.iter().any(|n| n == want), "{want}");
        }
    }

    #[test]
    fn exactly_one_storage_version_each() {
        for crd in ISTIO_CRDS {
            let obj = crd.to_object();
            let storage = obj["spec"]["versions"]
                .as_array()
                .unwrap()
                .iter()
                .filter(|v| v["storage"] == true)
                .count();
            assert_eq!(storage, 1, "{}", crd.kind);
        }
    }
}
