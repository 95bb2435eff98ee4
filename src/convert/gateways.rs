//! Gateways: each enabled `components.ingressGateways` / `egressGateways` entry, rendered by istioctl with the shared
//! `values.gateways.istio-*gateway` values and the entry's own `k8s` settings, as a MeshInstall gateway.

use std::collections::BTreeMap;

use serde_json::{Map, Value, json};

use super::ConvertError;
use super::mapping::{
    Mapper, Scale, boolean, dns_label, int, int_in, invalid, is_empty, map_at, same_resources, string,
};
use super::tree::{self, Path, Seg, take};
use crate::api::{
    ExternalTrafficPolicy, GatewayKind, GatewayPort, GatewayServiceSpec, GatewaySpec, PortProtocol, ServiceType,
};
use crate::render::gateway_selector;

/// What a gateway's shared values (`values.gateways.istio-ingressgateway.*`) give every gateway of its kind.
#[derive(Clone)]
struct GatewayValues {
    type_: ServiceType,
    ports: Vec<GatewayPort>,
    scale: Scale,
    resources: Value,
    annotations: BTreeMap<String, String>,
    external_traffic_policy: Option<ExternalTrafficPolicy>,
    labels: Map<String, Value>,
}

impl Mapper<'_> {
    /// Ingress then egress gateways: istioctl renders each enabled `components.*Gateways` entry with the shared
    /// `values.gateways.istio-*gateway` values and the entry's own `k8s` settings.
    pub(super) fn gateways(
        &mut self,
        values: &mut Value,
        components: &mut Value,
        namespace: &str,
    ) -> Result<Vec<GatewaySpec>, ConvertError> {
        let mut out = Vec::new();
        for (kind, root, list_key) in [
            (GatewayKind::Ingress, "istio-ingressgateway", "ingressGateways"),
            (GatewayKind::Egress, "istio-egressgateway", "egressGateways"),
        ] {
            let vp = Path::keys(&["values", "gateways", root]);
            let mut shared = map_at(&vp, take(values, &["gateways", root]))?;
            let also = match take(&mut shared, &["enabled"]) {
                Some(v) if !v.is_null() => boolean(&vp.key("enabled"), &v)?,
                _ => false,
            };
            // istioctl sets the name from each component.
            take(&mut shared, &["name"]);
            let elements = match take(components, &[list_key]) {
                // No list: istioctl installs one ingress gateway (and an egress one only when enabled in values).
                None if kind == GatewayKind::Ingress || also => vec![json!({})],
                None | Some(Value::Null) => Vec::new(),
                Some(Value::Array(list)) => list,
                Some(other) => {
                    return Err(invalid(
                        &Path::keys(&["components", list_key]),
                        format!("expected a list, got {other}"),
                    ));
                }
            };
            let mut enabled = Vec::new();
            for (i, element) in elements.into_iter().enumerate() {
                let by_index = Path::keys(&["components", list_key]).with(Seg::Index(i));
                let mut element = map_at(&by_index, Some(element))?;
                let on = match take(&mut element, &["enabled"]) {
                    Some(v) if !v.is_null() => boolean(&by_index.key("enabled"), &v)?,
                    _ => true,
                };
                // Settings of a gateway that is off change nothing, in Istio as here.
                if on || also {
                    enabled.push((i, element));
                }
            }
            if enabled.is_empty() {
                continue;
            }
            let base = self.gateway_values(&mut shared, &vp)?;
            for (i, element) in enabled {
                out.push(self.gateway(kind, root, list_key, i, element, &base, namespace)?);
            }
            if let Value::Object(rest) = shared
                && !rest.is_empty()
            {
                tree::set(values, &Path::keys(&["gateways", root]), Value::Object(rest))
                    .map_err(|e| invalid(&vp, e))?;
            }
        }
        for (i, g) in out.iter().enumerate() {
            if out[..i].iter().any(|h| h.name == g.name) {
                return Err(invalid(
                    &Path::keys(&["components"]),
                    format!("two gateways are named {:?}", g.name),
                ));
            }
        }
        Ok(out)
    }

    fn gateway_values(&mut self, shared: &mut Value, vp: &Path) -> Result<GatewayValues, ConvertError> {
        let type_ = match take(shared, &["type"]) {
            Some(v) if !is_empty(&v) => service_type(&vp.key("type"), &v)?,
            _ => ServiceType::LoadBalancer,
        };
        let ports = match take(shared, &["ports"]) {
            Some(v) if !v.is_null() => self.ports(&vp.key("ports"), &v)?,
            _ => Vec::new(),
        };
        let scale = Scale::take(self, shared, vp)?;
        let resources = take(shared, &["resources"]).unwrap_or(Value::Null);
        let annotations = match take(shared, &["serviceAnnotations"]) {
            Some(v) => string_map(&vp.key("serviceAnnotations"), &v)?,
            None => BTreeMap::new(),
        };
        let external_traffic_policy = match take(shared, &["externalTrafficPolicy"]) {
            Some(v) => traffic_policy(&vp.key("externalTrafficPolicy"), &v)?,
            None => None,
        };
        let labels = match map_at(&vp.key("labels"), take(shared, &["labels"]))? {
            Value::Object(l) => l,
            _ => Map::new(),
        };
        Ok(GatewayValues {
            type_,
            ports,
            scale,
            resources,
            annotations,
            external_traffic_policy,
            labels,
        })
    }

    #[allow(clippy::too_many_arguments)]
    fn gateway(
        &mut self,
        kind: GatewayKind,
        root: &str,
        list_key: &str,
        index: usize,
        mut element: Value,
        base: &GatewayValues,
        namespace: &str,
    ) -> Result<GatewaySpec, ConvertError> {
        let list = Path::keys(&["components", list_key]);
        let (name, path) = match take(&mut element, &["name"]) {
            Some(v) if !is_empty(&v) => {
                let name = string(&list.with(Seg::Index(index)).key("name"), &v)?;
                let path = list.with(Seg::Match("name".into(), name.clone()));
                (name, path)
            }
            _ => (root.to_owned(), list.with(Seg::Index(index))),
        };
        if !dns_label(&name, 63) {
            return Err(invalid(
                &path.key("name"),
                format!("{name:?} is not a DNS label (lower-case letters, digits and '-', at most 63 characters)"),
            ));
        }
        let mut scale = base.scale.clone();
        let mut resources = base.resources.clone();
        let mut type_ = base.type_;
        let mut ports = base.ports.clone();
        let mut annotations = base.annotations.clone();
        let mut external_traffic_policy = base.external_traffic_policy;
        let label = match take(&mut element, &["label"]) {
            None | Some(Value::Null) => None,
            Some(v) => match map_at(&path.key("label"), Some(v))? {
                Value::Object(l) => Some(l),
                _ => None,
            },
        };
        self.gateway_labels(&path, &name, root, label.as_ref(), &base.labels);
        self.component_placement(&mut element, &path, namespace)?;
        if let Some(k8s) = take(&mut element, &["k8s"]) {
            let kp = path.key("k8s");
            let mut k8s = map_at(&kp, Some(k8s))?;
            if let Some(v) = take(&mut k8s, &["replicaCount"]) {
                scale.replicas = int(&kp.key("replicaCount"), &v)?;
                scale.replicas_setting = kp.key("replicaCount");
            }
            if let Some(v) = take(&mut k8s, &["resources"]) {
                tree::merge(&mut resources, v);
            }
            if let Some(v) = take(&mut k8s, &["hpaSpec"]) {
                scale.hpa(self, &kp.key("hpaSpec"), v, &name)?;
            }
            if let Some(v) = take(&mut k8s, &["serviceAnnotations"]) {
                annotations.extend(string_map(&kp.key("serviceAnnotations"), &v)?);
            }
            if let Some(service) = take(&mut k8s, &["service"]) {
                let sp = kp.key("service");
                let mut service = map_at(&sp, Some(service))?;
                if let Some(v) = take(&mut service, &["type"])
                    && !is_empty(&v)
                {
                    type_ = service_type(&sp.key("type"), &v)?;
                }
                if let Some(v) = take(&mut service, &["ports"])
                    && !is_empty(&v)
                {
                    ports = self.ports(&sp.key("ports"), &v)?;
                }
                if let Some(v) = take(&mut service, &["externalTrafficPolicy"]) {
                    external_traffic_policy = traffic_policy(&sp.key("externalTrafficPolicy"), &v)?;
                }
                self.leftovers(&sp, service, "no MeshInstall equivalent");
            }
            self.leftovers(&kp, k8s, "no MeshInstall equivalent");
        }
        self.leftovers(&path, element, "no MeshInstall equivalent");
        if type_ == ServiceType::ClusterIp
            && let Some(p) = ports.iter().find(|p| p.node_port.is_some())
        {
            return Err(invalid(
                &path,
                format!("port {:?} has a nodePort but the Service type is ClusterIP", p.name),
            ));
        }
        let resources = self.resources(&path.key("resources"), &resources)?;
        let (replicas, autoscale) = scale.finish(self, &path)?;
        let default_resources = same_resources(
            &resources,
            &[("cpu", "100m"), ("memory", "128Mi")],
            &[("cpu", "2000m"), ("memory", "1024Mi")],
        );
        Ok(GatewaySpec {
            name,
            kind,
            replicas,
            resources: (!default_resources).then_some(resources),
            autoscale,
            service: GatewayServiceSpec {
                type_: Some(type_),
                ports,
                annotations,
                external_traffic_policy,
            },
        })
    }

    /// Istio labels every ingress gateway `istio: ingressgateway` unless told otherwise; mizzen derives the label
    /// from the gateway's name. Gateway resources select on `istio`, so a difference matters (as do labels the user
    /// wrote that mizzen would not set).
    fn gateway_labels(
        &mut self,
        path: &Path,
        name: &str,
        root: &str,
        label: Option<&Map<String, Value>>,
        shared: &Map<String, Value>,
    ) {
        let pick = |key: &str, default: &str| {
            label
                .and_then(|l| l.get(key))
                .or_else(|| shared.get(key))
                .and_then(Value::as_str)
                .unwrap_or(default)
                .to_owned()
        };
        let istio = pick("istio", gateway_selector(root));
        // Istio's default `app` label selects nothing users write; one they set themselves must match.
        let app = pick("app", name);
        let selector = gateway_selector(name);
        let extra: Vec<&String> = label
            .into_iter()
            .chain([shared])
            .flat_map(|l| l.keys())
            .filter(|k| *k != "app" && *k != "istio")
            .collect();
        if istio != selector || app != name || !extra.is_empty() {
            let mut labels = shared.clone();
            labels.extend(label.cloned().unwrap_or_default());
            labels.insert("istio".into(), json!(istio));
            let at = if label.is_some() {
                path.key("label")
            } else {
                path.clone()
            };
            self.report(
                &at,
                &Value::Object(labels),
                &format!(
                    "Istio labels this gateway's pods with these; mizzen labels them app={name}, istio={selector} \
                     (from the name), so Gateway resources must select istio={selector}"
                ),
            );
        }
    }

    fn ports(&mut self, path: &Path, value: &Value) -> Result<Vec<GatewayPort>, ConvertError> {
        let Value::Array(list) = value else {
            return Err(invalid(path, format!("expected a list of ports, got {value}")));
        };
        let mut out: Vec<GatewayPort> = Vec::new();
        for (i, port) in list.iter().enumerate() {
            let pp = path.with(Seg::Index(i));
            let Value::Object(fields) = port else {
                return Err(invalid(&pp, format!("expected a port, got {port}")));
            };
            let mut p = GatewayPort {
                name: String::new(),
                port: 0,
                target_port: None,
                node_port: None,
                protocol: None,
            };
            for (key, v) in fields {
                let here = pp.key(key);
                match key.as_str() {
                    "name" => p.name = string(&here, v)?,
                    "port" => p.port = int_in(&here, v, 1, 65535)?,
                    "targetPort" if v.is_string() && v.as_str().is_some_and(|s| s.parse::<i64>().is_err()) => {
                        return Err(invalid(
                            &here,
                            format!("{v} is a named port; MeshInstall takes a port number"),
                        ));
                    }
                    "targetPort" => p.target_port = Some(int_in(&here, v, 1, 65535)?),
                    "nodePort" if v.is_null() || v == 0 => {}
                    "nodePort" => p.node_port = Some(int_in(&here, v, 30000, 32767)?),
                    "protocol" => {
                        p.protocol = match string(&here, v)?.as_str() {
                            "" | "TCP" => None,
                            "UDP" => Some(PortProtocol::Udp),
                            other => return Err(invalid(&here, format!("{other:?} is not TCP or UDP"))),
                        }
                    }
                    _ if is_empty(v) => {}
                    _ => self.report(&here, v, "no MeshInstall equivalent"),
                }
            }
            if !dns_label(&p.name, 15) {
                return Err(invalid(
                    &pp.key("name"),
                    format!(
                        "{:?}: MeshInstall needs every port named with a DNS label of at most 15 characters",
                        p.name
                    ),
                ));
            }
            if p.port == 0 {
                return Err(invalid(&pp.key("port"), "every port needs a port number"));
            }
            if let Some(q) = out.iter().find(|q| q.name == p.name || q.port == p.port) {
                return Err(invalid(
                    &pp,
                    format!("port {} ({}) clashes with {} ({})", p.port, p.name, q.port, q.name),
                ));
            }
            out.push(p);
        }
        Ok(out)
    }
}

fn service_type(path: &Path, value: &Value) -> Result<ServiceType, ConvertError> {
    match string(path, value)?.as_str() {
        "ClusterIP" => Ok(ServiceType::ClusterIp),
        "NodePort" => Ok(ServiceType::NodePort),
        "LoadBalancer" => Ok(ServiceType::LoadBalancer),
        other => Err(invalid(
            path,
            format!("{other:?} is not ClusterIP, NodePort or LoadBalancer"),
        )),
    }
}

fn traffic_policy(path: &Path, value: &Value) -> Result<Option<ExternalTrafficPolicy>, ConvertError> {
    match string(path, value)?.as_str() {
        "" => Ok(None),
        "Cluster" => Ok(Some(ExternalTrafficPolicy::Cluster)),
        "Local" => Ok(Some(ExternalTrafficPolicy::Local)),
        other => Err(invalid(path, format!("{other:?} is not Cluster or Local"))),
    }
}

fn string_map(path: &Path, value: &Value) -> Result<BTreeMap<String, String>, ConvertError> {
    match value {
        Value::Null => Ok(BTreeMap::new()),
        Value::Object(map) => map
            .iter()
            .map(|(k, v)| Ok((k.clone(), string(&path.key(k), v)?)))
            .collect(),
        other => Err(invalid(path, format!("expected a map of strings, got {other}"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_matter_only_when_they_differ_from_mizzens() {
        let user = json!({});
        let mut m = Mapper::new(&user, "default");
        let path = Path::keys(&["components", "ingressGateways"]).with(Seg::Index(0));
        m.gateway_labels(&path, "istio-ingressgateway", "istio-ingressgateway", None, &Map::new());
        let own = json!({"istio": "internal"});
        m.gateway_labels(&path, "internal", "istio-ingressgateway", own.as_object(), &Map::new());
        assert!(m.unsupported.is_empty(), "{:?}", m.unsupported);
        m.gateway_labels(&path, "internal", "istio-ingressgateway", None, &Map::new());
        assert_eq!(m.unsupported.len(), 1);
        assert_eq!(
            m.unsupported[0].value,
            json!({"istio": "ingressgateway"}),
            "Istio's default selector"
        );
        assert!(
            m.unsupported[0].reason.contains("app=internal, istio=internal"),
            "{:?}",
            m.unsupported
        );
        let own_app = json!({"istio": "internal", "app": "edge-proxy"});
        m.gateway_labels(
            &path,
            "internal",
            "istio-ingressgateway",
            own_app.as_object(),
            &Map::new(),
        );
        assert_eq!(
            m.unsupported.len(),
            2,
            "a label the user wrote and mizzen would not set"
        );
        assert_eq!(m.unsupported[1].setting, "components.ingressGateways[0].label");
    }
}
