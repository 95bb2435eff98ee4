//! The submitted pod as the webhook reads it: only what the injector reads is parsed. The metadata is parsed whole;
//! of the spec, the fields injection reads or merges into (containers, init containers, volumes, image pull secrets,
//! security context, service account, host network); and of an application container only its name, ports, probes,
//! lifecycle and restart policy, its other fields (env, mounts, command, …) staying text in the request body. Those
//! are checked for shape without being built, so a pod of 40,000 env vars costs a scan, not a tree ten times its
//! size. Containers the injection may rewrite (the templates' names, what an earlier injection added) are parsed
//! whole, and so is everything when a template other than `sidecar` or `gateway` is selected, since those can
//! touch any container.
#![cfg_attr(not(test), deny(clippy::indexing_slicing))]

use std::borrow::Cow;
use std::fmt;

use serde::Deserializer as _;
use serde::de::{self, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde_json::value::RawValue;
use serde_json::{Map, Value};

use super::annotations as ann;
use super::compile::Injector;
use super::fragment::{self, string_map};
use super::strip::PreviousInjection;
use super::{InjectError, TEMPLATE_CONTAINERS, TemplateKind};

/// Fields of the spec the injector reads or merges into; the others are not parsed.
pub const SPEC_FIELDS: &[&str] = &[
    "containers",
    "initContainers",
    "volumes",
    "imagePullSecrets",
    "securityContext",
    "serviceAccountName",
    "hostNetwork",
];

/// Fields of an application container the injector reads (names, ports, probes and hooks to rewrite).
pub const CONTAINER_FIELDS: &[&str] = &[
    "name",
    "ports",
    "livenessProbe",
    "readinessProbe",
    "startupProbe",
    "lifecycle",
    "restartPolicy",
];

/// Fields of an application container only checked for shape (a map; a list of maps).
const CHECKED_OBJECTS: &[&str] = &["securityContext", "resources"];
const CHECKED_LISTS: &[&str] = &["env", "volumeMounts"];

/// A submitted pod: its metadata parsed, its spec still text.
pub struct Submitted<'a> {
    metadata: Option<Value>,
    spec: Option<&'a RawValue>,
}

/// How much of the spec to parse.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Depth {
    /// Everything.
    Full,
    /// What the built-in `sidecar` and `gateway` templates read; containers of the named ones whole.
    Shallow(Vec<String>),
}

/// The parsed spec.
pub struct Spec {
    /// The spec, as deep as it was parsed.
    pub value: Value,
    /// Whether parts of it were left out.
    pub shallow: bool,
    /// Per item of `initContainers` and `containers`: whether only [`CONTAINER_FIELDS`] of it were parsed.
    pub shallow_items: [Vec<bool>; 2],
}

impl Spec {
    /// The shallow flags of `initContainers` (0) or `containers` (1), by index.
    pub fn shallow_items(&self, field: &str) -> &[bool] {
        match field {
            "initContainers" => self.shallow_items.first().map(Vec::as_slice).unwrap_or_default(),
            "containers" => self.shallow_items.get(1).map(Vec::as_slice).unwrap_or_default(),
            _ => &[],
        }
    }
}

enum PodKey {
    Metadata,
    Spec,
    Other,
}

struct PodKeyVisitor;

impl Visitor<'_> for PodKeyVisitor {
    type Value = PodKey;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a field name")
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<PodKey, E> {
        Ok(match v {
            "metadata" => PodKey::Metadata,
            "spec" => PodKey::Spec,
            _ => PodKey::Other,
        })
    }
}

impl<'de> de::Deserialize<'de> for PodKey {
    fn deserialize<D: de::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_str(PodKeyVisitor)
    }
}

struct PodVisitor;

impl<'de> Visitor<'de> for PodVisitor {
    type Value = Submitted<'de>;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a Pod object")
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Submitted<'de>, A::Error> {
        let mut pod = Submitted {
            metadata: None,
            spec: None,
        };
        while let Some(key) = map.next_key::<PodKey>()? {
            match key {
                PodKey::Metadata => pod.metadata = Some(map.next_value()?),
                PodKey::Spec => pod.spec = Some(map.next_value()?),
                PodKey::Other => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        Ok(pod)
    }
}

/// A map key, borrowed from the text when it has no escapes.
struct Key<'de>(Cow<'de, str>);

impl<'de> de::Deserialize<'de> for Key<'de> {
    fn deserialize<D: de::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Key<'de>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a field name")
            }
            fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Key<'de>, E> {
                Ok(Key(Cow::Borrowed(v)))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Key<'de>, E> {
                Ok(Key(Cow::Owned(v.to_owned())))
            }
        }
        d.deserialize_str(V)
    }
}

/// An object's members as text, the last of repeated names winning (as when parsing into a map).
struct Members<'de>(Vec<(Cow<'de, str>, &'de RawValue)>);

impl<'de> de::Deserialize<'de> for Members<'de> {
    fn deserialize<D: de::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Members<'de>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("an object")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Members<'de>, A::Error> {
                let mut out: Vec<(Cow<'de, str>, &'de RawValue)> = Vec::new();
                while let Some(Key(key)) = map.next_key()? {
                    let value: &'de RawValue = map.next_value()?;
                    match out.iter_mut().find(|(k, _)| *k == key) {
                        Some(slot) => slot.1 = value,
                        None => out.push((key, value)),
                    }
                }
                Ok(Members(out))
            }
        }
        d.deserialize_map(V)
    }
}

/// Whether a JSON list's items are all objects, without building them.
struct AllObjects;

impl<'de> Visitor<'de> for AllObjects {
    type Value = bool;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a list")
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<bool, A::Error> {
        let mut all = true;
        while let Some(item) = seq.next_element::<&'de RawValue>()? {
            all &= item.get().starts_with('{');
        }
        Ok(all)
    }
}

fn parse_value(raw: &RawValue) -> Result<Value, InjectError> {
    serde_json::from_str(raw.get()).map_err(|e| InjectError::InvalidPod(e.to_string()))
}

/// `null`, or what `shape` accepts: the field need not be built.
fn shape_ok(field: &str, raw: &RawValue) -> bool {
    let text = raw.get();
    if text == "null" {
        return true;
    }
    if CHECKED_OBJECTS.contains(&field) {
        return text.starts_with('{');
    }
    text.starts_with('[')
        && serde_json::Deserializer::from_str(text)
            .deserialize_seq(AllObjects)
            .unwrap_or(false)
}

/// One container: whole when its name is one the injection may rewrite, else its [`CONTAINER_FIELDS`] (and any
/// wrongly shaped checked field, for the shape checks to name). Returns the value and whether it is partial.
fn container(raw: &RawValue, relevant: &[String]) -> Result<(Value, bool), InjectError> {
    if !raw.get().starts_with('{') {
        return Ok((parse_value(raw)?, false));
    }
    let members: Members = serde_json::from_str(raw.get()).map_err(|e| InjectError::InvalidPod(e.to_string()))?;
    let name = members.0.iter().find(|(k, _)| k == "name").map(|(_, v)| v.get());
    let named_relevant = name
        .and_then(|n| serde_json::from_str::<Key>(n).ok())
        .is_some_and(|Key(n)| relevant.iter().any(|r| *r == n));
    if named_relevant {
        return Ok((parse_value(raw)?, false));
    }
    let mut map = Map::new();
    for (key, value) in members.0 {
        let keep = CONTAINER_FIELDS.contains(&key.as_ref())
            || ((CHECKED_OBJECTS.contains(&key.as_ref()) || CHECKED_LISTS.contains(&key.as_ref()))
                && !shape_ok(&key, value));
        if keep {
            map.insert(key.into_owned(), parse_value(value)?);
        }
    }
    Ok((Value::Object(map), true))
}

fn containers(raw: &RawValue, relevant: &[String], flags: &mut Vec<bool>) -> Result<Value, InjectError> {
    if !raw.get().starts_with('[') {
        return parse_value(raw);
    }
    let items: Vec<&RawValue> = serde_json::from_str(raw.get()).map_err(|e| InjectError::InvalidPod(e.to_string()))?;
    let mut out = Vec::with_capacity(items.len());
    for item in items {
        let (value, partial) = container(item, relevant)?;
        out.push(value);
        flags.push(partial);
    }
    Ok(Value::Array(out))
}

impl<'a> Submitted<'a> {
    /// Reads a pod object (`request.object` of a review).
    pub fn parse(object: &'a RawValue) -> Result<Self, String> {
        Self::from_json(object.get())
    }

    /// Reads a pod from its JSON text.
    pub fn from_json(text: &'a str) -> Result<Self, String> {
        if !text.trim_start().starts_with('{') {
            return Err("request.object is not an object".into());
        }
        serde_json::Deserializer::from_str(text)
            .deserialize_map(PodVisitor)
            .map_err(|e| e.to_string())
    }

    /// The pod's metadata (null when it has none).
    pub fn metadata(&self) -> &Value {
        self.metadata.as_ref().unwrap_or(&Value::Null)
    }

    /// Whether the pod has a `metadata` field that is not null.
    pub fn has_metadata(&self) -> bool {
        self.metadata.as_ref().is_some_and(|m| !m.is_null())
    }

    /// How deep to parse the spec for injection with `injector`.
    pub fn depth(&self, injector: &Injector) -> Depth {
        let annotations = string_map(self.metadata(), "annotations");
        let builtin = fragment::templates(injector, annotations).is_ok_and(|kinds| {
            kinds
                .iter()
                .all(|k| matches!(k, TemplateKind::Sidecar | TemplateKind::Gateway))
        });
        if !builtin {
            return Depth::Full;
        }
        let mut relevant: Vec<String> = TEMPLATE_CONTAINERS.iter().map(|n| (*n).to_owned()).collect();
        if let Some(status) = annotations.get(ann::STATUS).and_then(Value::as_str) {
            match PreviousInjection::parse(status) {
                Ok(previous) => relevant.extend(previous.init_containers.into_iter().chain(previous.containers)),
                Err(_) => return Depth::Full,
            }
        }
        Depth::Shallow(relevant)
    }

    /// The pod's spec, parsed to `depth`; an error when the pod has no spec object.
    pub fn spec(&self, depth: &Depth) -> Result<Spec, InjectError> {
        let raw = self
            .spec
            .filter(|s| s.get().starts_with('{'))
            .ok_or_else(|| InjectError::InvalidPod("the pod has no spec".into()))?;
        let relevant = match depth {
            Depth::Full => {
                return Ok(Spec {
                    value: parse_value(raw)?,
                    shallow: false,
                    shallow_items: [Vec::new(), Vec::new()],
                });
            }
            Depth::Shallow(relevant) => relevant,
        };
        let members: Members = serde_json::from_str(raw.get()).map_err(|e| InjectError::InvalidPod(e.to_string()))?;
        let mut map = Map::new();
        let [init_flags, container_flags] = [&mut Vec::new(), &mut Vec::new()];
        for (key, value) in members.0 {
            let parsed = match key.as_ref() {
                "initContainers" => containers(value, relevant, init_flags)?,
                "containers" => containers(value, relevant, container_flags)?,
                k if SPEC_FIELDS.contains(&k) => parse_value(value)?,
                _ => continue,
            };
            map.insert(key.into_owned(), parsed);
        }
        Ok(Spec {
            value: Value::Object(map),
            shallow: true,
            shallow_items: [std::mem::take(init_flags), std::mem::take(container_flags)],
        })
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::inject::InjectionConfig;

    fn pod(value: &Value) -> String {
        value.to_string()
    }

    #[test]
    fn application_containers_keep_only_what_injection_reads() {
        let text = pod(&json!({"metadata": {"name": "p"}, "spec": {
        "tolerations": [{"key": "a"}],
        "containers": [
            {"name": "web", "image": "nginx", "env": [{"name": "A", "value": "1"}], "ports": [{"containerPort": 80}],
             "readinessProbe": {"httpGet": {"port": 80}}, "resources": {"limits": {"cpu": "1"}}},
            {"name": "istio-proxy", "image": "auto", "env": [{"name": "B"}]}
        ]}}));
        let submitted = Submitted::from_json(&text).unwrap();
        let injector = Injector::compile(InjectionConfig::default());
        let spec = submitted.spec(&submitted.depth(&injector)).unwrap();
        assert_eq!(
            spec.value,
            json!({"containers": [
                {"name": "web", "ports": [{"containerPort": 80}], "readinessProbe": {"httpGet": {"port": 80}}},
                {"name": "istio-proxy", "image": "auto", "env": [{"name": "B"}]}
            ]})
        );
        assert_eq!(spec.shallow_items("containers"), &[true, false]);
    }

    #[test]
    fn wrongly_shaped_fields_are_kept_for_the_shape_checks() {
        let text =
            pod(&json!({"spec": {"containers": [{"name": "web", "env": [{"name": "A"}, "B"], "resources": []}]}}));
        let submitted = Submitted::from_json(&text).unwrap();
        let injector = Injector::compile(InjectionConfig::default());
        let spec = submitted.spec(&submitted.depth(&injector)).unwrap();
        assert_eq!(
            spec.value,
            json!({"containers": [{"name": "web", "env": [{"name": "A"}, "B"], "resources": []}]})
        );
    }

    #[test]
    fn other_templates_and_unreadable_status_parse_everything() {
        let injector = Injector::compile(InjectionConfig::default());
        for annotations in [
            json!({"inject.istio.io/templates": "sidecar,grpc-agent"}),
            json!({"sidecar.istio.io/status": "{not json"}),
        ] {
            let text = pod(&json!({"metadata": {"annotations": annotations}, "spec": {"containers": []}}));
            assert_eq!(Submitted::from_json(&text).unwrap().depth(&injector), Depth::Full);
        }
        let text =
            pod(&json!({"metadata": {"annotations": {"sidecar.istio.io/status": "{\"containers\":[\"app\"]}"}}}));
        let Depth::Shallow(relevant) = Submitted::from_json(&text).unwrap().depth(&injector) else {
            panic!("expected a shallow parse")
        };
        assert!(relevant.contains(&"app".to_owned()));
    }

    #[test]
    fn a_pod_without_a_spec_object_is_refused() {
        let injector = Injector::compile(InjectionConfig::default());
        for text in [r#"{"metadata":{}}"#, r#"{"spec":[]}"#, r#"{"spec":null}"#] {
            let submitted = Submitted::from_json(text).unwrap();
            let err = submitted.spec(&submitted.depth(&injector)).err().map(|e| e.to_string());
            assert_eq!(err.as_deref(), Some("invalid pod: the pod has no spec"), "{text}");
        }
        assert!(Submitted::from_json("[1]").is_err());
    }
}
