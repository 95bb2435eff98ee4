//! The submitted pod as the webhook reads it: only what the injector reads is parsed, in one pass over the request
//! body. The metadata is parsed whole but for `managedFields`, which Istio's webhook drops too, and `ownerReferences`
//! while they are a list of objects: read as [`Owner`]s and their members kept as read (strings borrowed), out of the
//! tree until a user's template may need them there. Of the
//! spec, the fields injection reads or merges into (containers, init containers, volumes, image pull secrets,
//! security context, service account, host network); of a container only its name, ports, probes, lifecycle and
//! restart policy; of a volume only its name. The rest stays text in the body (checked, borrowed) until the metadata
//! says what the injection may touch: containers and volumes of the templates' names, or of what an earlier
//! injection added, are then parsed whole, and so is everything when a template other than `sidecar` or `gateway`
//! is selected or the pod brings its own volumes. Unparsed container fields the shape checks look at are checked
//! without being built, so a pod of 40,000 env vars costs a scan, not a tree ten times its size.
//!
//! The webhook reads the pod with [`crate::json_read`]'s reader ([`read_object`]), the admission review's other
//! readings with serde_json ([`Object`]'s visitors); both give the same [`Submitted`], which the admission tests and
//! fuzzer compare.
#![cfg_attr(not(test), deny(clippy::indexing_slicing))]

use std::borrow::Cow;
use std::collections::{HashMap, HashSet};
use std::fmt;

use serde::Deserialize as _;
use serde::de::value::{MapAccessDeserializer, SeqAccessDeserializer};
use serde::de::{self, DeserializeSeed, Deserializer as _, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde_json::value::RawValue;
use serde_json::{Map, Value};

use crate::json_read::{Bail, Read, Reader};

use super::annotations as ann;
use super::compile::Injector;
use super::fragment::{self, string_map};
use super::strip::PreviousInjection;
use super::{InjectError, SCAN_UP_TO, TEMPLATE_CONTAINERS, TemplateKind};

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

/// Fields of a volume the injector reads.
pub const VOLUME_FIELDS: &[&str] = &["name"];

/// Names of the volumes the built-in templates add: a pod's own volume of one of these is merged with the
/// template's, so it is parsed whole.
const TEMPLATE_VOLUMES: &[&str] = &[
    "workload-socket",
    "credential-socket",
    "workload-certs",
    "custom-bootstrap-volume",
    "istio-envoy",
    "istio-data",
    "istio-podinfo",
    "istio-token",
    "istiod-ca-cert",
    "istio-ca-crl",
    "istio-certs",
];

/// Fields of an application container only checked for shape (a map; a list of maps).
const CHECKED_OBJECTS: &[&str] = &["securityContext", "resources"];
const CHECKED_LISTS: &[&str] = &["env", "volumeMounts"];

/// The lists of the spec that are parsed item by item, with the fields of an item parsed at once.
const LISTS: [(&str, &[&str]); 3] = [
    ("initContainers", CONTAINER_FIELDS),
    ("containers", CONTAINER_FIELDS),
    ("volumes", VOLUME_FIELDS),
];

/// A member name, borrowed from the text when it has no escapes.
struct Key<'de>(Cow<'de, str>);

impl<'de> de::Deserialize<'de> for Key<'de> {
    fn deserialize<D: de::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Key<'de>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a member name")
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

/// Members kept as text (checked JSON, without the whitespace around it), in the order first seen.
type Texts<'a> = Vec<(Cow<'a, str>, &'a str)>;

/// Members being kept as text, the last of a repeated name winning (as when parsing into a map).
struct Kept<'a> {
    texts: Texts<'a>,
    /// Where each name is in `texts`, once there are more than [`SCAN_UP_TO`]: an object of n members costs O(n)
    /// rather than O(n²).
    index: Option<HashMap<Cow<'a, str>, usize>>,
}

impl<'a> Kept<'a> {
    /// Room for `n` members before the list grows (a container's or a spec's usual members, in one allocation).
    fn with_capacity(n: usize) -> Self {
        Self {
            texts: Vec::with_capacity(n),
            index: None,
        }
    }

    fn keep(&mut self, key: Cow<'a, str>, value: &'a str) {
        let found = match &self.index {
            Some(index) => index.get(&key).copied(),
            None => self.texts.iter().position(|(k, _)| *k == key),
        };
        if let Some(slot) = found.and_then(|i| self.texts.get_mut(i)) {
            slot.1 = value;
            return;
        }
        if let Some(index) = &mut self.index {
            index.insert(key.clone(), self.texts.len());
        }
        self.texts.push((key, value));
        if self.index.is_none() && self.texts.len() > SCAN_UP_TO {
            let index = self
                .texts
                .iter()
                .enumerate()
                .map(|(i, (k, _))| (k.clone(), i))
                .collect();
            self.index = Some(index);
        }
    }
}

/// A value parsed from a visitor that received something other than what it parses item by item.
fn scalar<E>(value: impl Into<Value>) -> Result<Value, E> {
    Ok(value.into())
}

/// Implements the scalar and sequence/map visits of a visitor producing `$wrap(Value)`.
macro_rules! visit_as_value {
    ($wrap:expr, $($skip:ident)*) => {
        fn visit_bool<E: de::Error>(self, v: bool) -> Result<Self::Value, E> {
            scalar(v).map($wrap)
        }
        fn visit_i64<E: de::Error>(self, v: i64) -> Result<Self::Value, E> {
            scalar(v).map($wrap)
        }
        fn visit_u64<E: de::Error>(self, v: u64) -> Result<Self::Value, E> {
            scalar(v).map($wrap)
        }
        fn visit_f64<E: de::Error>(self, v: f64) -> Result<Self::Value, E> {
            Ok($wrap(serde_json::Number::from_f64(v).map_or(Value::Null, Value::Number)))
        }
        fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
            scalar(v).map($wrap)
        }
        fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
            Ok($wrap(Value::Null))
        }
        $(visit_as_value!(@$skip $wrap);)*
    };
    (@seq $wrap:expr) => {
        fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<Self::Value, A::Error> {
            Value::deserialize(SeqAccessDeserializer::new(seq)).map($wrap)
        }
    };
    (@map $wrap:expr) => {
        fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Self::Value, A::Error> {
            Value::deserialize(MapAccessDeserializer::new(map)).map($wrap)
        }
    };
}

/// A list item: the fields read at once parsed, the others text.
#[derive(Debug)]
struct ItemDraft<'a> {
    parsed: Map<String, Value>,
    texts: Texts<'a>,
}

/// An item of a list parsed item by item: a draft when it is an object, else parsed whole (for the shape checks).
#[derive(Debug)]
enum Item<'a> {
    Draft(ItemDraft<'a>),
    Value(Value),
}

struct ItemSeed(&'static [&'static str]);

impl<'de> DeserializeSeed<'de> for ItemSeed {
    type Value = Item<'de>;
    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<Item<'de>, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for ItemSeed {
    type Value = Item<'de>;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a list item")
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Item<'de>, A::Error> {
        // A name is always parsed or always kept as text, so the two never hold the same name.
        let mut parsed = Map::new();
        let mut kept = Kept::with_capacity(8);
        while let Some(Key(key)) = map.next_key()? {
            if self.0.contains(&key.as_ref()) {
                let value: Value = map.next_value()?;
                parsed.insert(key.into_owned(), value);
            } else {
                let value: &'de RawValue = map.next_value()?;
                kept.keep(key, value.get());
            }
        }
        Ok(Item::Draft(ItemDraft {
            parsed,
            texts: kept.texts,
        }))
    }
    visit_as_value!(Item::Value, seq);
}

/// A list parsed item by item, or what the field held instead.
#[derive(Debug)]
enum ListDraft<'a> {
    Items(Vec<Item<'a>>),
    Value(Value),
}

struct ListSeed(&'static [&'static str]);

impl<'de> DeserializeSeed<'de> for ListSeed {
    type Value = ListDraft<'de>;
    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<ListDraft<'de>, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for ListSeed {
    type Value = ListDraft<'de>;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a list")
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<ListDraft<'de>, A::Error> {
        let mut items = Vec::with_capacity(seq.size_hint().unwrap_or(4));
        while let Some(item) = seq.next_element_seed(ItemSeed(self.0))? {
            items.push(item);
        }
        Ok(ListDraft::Items(items))
    }
    visit_as_value!(ListDraft::Value, map);
}

/// The spec as first read: lists item by item, the other fields read parsed, the rest text.
#[derive(Debug)]
struct SpecDraft<'a> {
    lists: [Option<ListDraft<'a>>; 3],
    parsed: Map<String, Value>,
    texts: Texts<'a>,
}

struct SpecVisitor;

impl<'de> Visitor<'de> for SpecVisitor {
    type Value = SpecDraft<'de>;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a pod spec")
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<SpecDraft<'de>, A::Error> {
        let mut spec = SpecDraft {
            lists: [None, None, None],
            parsed: Map::new(),
            texts: Vec::new(),
        };
        let mut kept = Kept::with_capacity(16);
        while let Some(Key(key)) = map.next_key()? {
            let list = LISTS.iter().position(|(name, _)| *name == key);
            match (list, spec.lists.get_mut(list.unwrap_or(usize::MAX))) {
                (Some(i), Some(slot)) => {
                    let fields = LISTS.get(i).map_or(CONTAINER_FIELDS, |(_, f)| *f);
                    *slot = Some(map.next_value_seed(ListSeed(fields))?);
                }
                _ if SPEC_FIELDS.contains(&key.as_ref()) => {
                    let value: Value = map.next_value()?;
                    spec.parsed.insert(key.into_owned(), value);
                }
                _ => {
                    let value: &'de RawValue = map.next_value()?;
                    kept.keep(key, value.get());
                }
            }
        }
        spec.texts = kept.texts;
        Ok(spec)
    }
}

/// The pod's `spec` member: a spec, or something else (the pod is refused as having no spec).
#[derive(Debug)]
enum SpecMember<'a> {
    Spec(SpecDraft<'a>),
    NotAnObject,
}

impl<'de> de::Deserialize<'de> for SpecMember<'de> {
    fn deserialize<D: de::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = SpecMember<'de>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a pod spec")
            }
            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<SpecMember<'de>, A::Error> {
                SpecVisitor.visit_map(map).map(SpecMember::Spec)
            }
            visit_as_value!(|_| SpecMember::NotAnObject, seq);
        }
        d.deserialize_any(V)
    }
}

/// A submitted pod: its metadata parsed (but for `managedFields`, and `ownerReferences` while only read), its spec as
/// far as injection reads it so far (taken by [`Submitted::spec`]).
pub struct Submitted<'a> {
    metadata: Option<Value>,
    /// The metadata's `ownerReferences` when kept out of `metadata`: see [`OwnersRead`].
    owners: Option<OwnersRead<'a>>,
    spec: Option<SpecMember<'a>>,
}

/// The pod's `ownerReferences` when they are a list of objects (all the API server sends): read in the pod's pass,
/// each owner's members kept as they were read (strings borrowed from the body) with what is read of them
/// ([`Owner`]), rather than parsed into a tree only dropped again (a tree of one small object costs a review about 8 k
/// instructions). Built into the metadata's tree when a user's template may read or merge them
/// ([`Submitted::whole_metadata`]). Any other shape stays in the metadata's tree, for the shape checks to name.
struct OwnersRead<'a> {
    /// Per owner, its members as read.
    members: Vec<Vec<(Cow<'a, str>, MemberValue<'a>)>>,
    /// Per owner, what is read of it.
    read: Vec<Owner<'a>>,
}

/// What is read of one of a pod's `ownerReferences`, borrowed from the text where it has no escapes, as a JSON tree
/// reads it: a member that is absent or not a string is empty, `controller` is true only when it is `true`, and of a
/// repeated member the last counts.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Owner<'a> {
    /// `apiVersion`.
    pub api_version: Cow<'a, str>,
    /// `kind`.
    pub kind: Cow<'a, str>,
    /// `name`.
    pub name: Cow<'a, str>,
    /// `uid`.
    pub uid: Cow<'a, str>,
    /// `controller` is `true`.
    pub controller: bool,
}

impl<'a> Owner<'a> {
    /// The owners in a metadata tree's `ownerReferences` (none when it is not a list; an item that is not an object
    /// reads as an owner of empty names).
    pub fn all_in(metadata: &'a Value) -> Vec<Owner<'a>> {
        let text = |o: &'a Value, key: &str| Cow::Borrowed(o.get(key).and_then(Value::as_str).unwrap_or_default());
        metadata
            .get("ownerReferences")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .map(|o| Owner {
                api_version: text(o, "apiVersion"),
                kind: text(o, "kind"),
                name: text(o, "name"),
                uid: text(o, "uid"),
                controller: o.get("controller").and_then(Value::as_bool) == Some(true),
            })
            .collect()
    }

    /// The pod's direct owner, for its Event: the one that is its controller, else the first.
    pub fn direct<'o>(owners: &'o [Owner<'a>]) -> Option<&'o Owner<'a>> {
        owners.iter().find(|o| o.controller).or_else(|| owners.first())
    }
}

/// A member of an owner as read in the pod's pass: a string borrowed from the body (when it has no escapes), or
/// anything else (an escaped string too) as the tree would hold it. Read by the pod's parser, so it refuses what the
/// tree refuses (a lone surrogate, a number out of a double's range, nesting past the limit counted from the body),
/// with the same message.
enum MemberValue<'a> {
    Str(&'a str),
    Other(Value),
}

impl<'a> MemberValue<'a> {
    /// The string, or empty when it is something else (as a tree's `as_str().unwrap_or_default()`), borrowed from
    /// the body when it has no escapes.
    fn text(&self) -> Cow<'a, str> {
        match self {
            MemberValue::Str(s) => Cow::Borrowed(s),
            // An escaped string, or one the tree made of an object (serde_json's private raw-value key).
            MemberValue::Other(Value::String(s)) => Cow::Owned(s.clone()),
            MemberValue::Other(_) => Cow::Borrowed(""),
        }
    }

    fn into_value(self) -> Value {
        match self {
            MemberValue::Str(s) => Value::String(s.to_owned()),
            MemberValue::Other(v) => v,
        }
    }
}

impl<'de> de::Deserialize<'de> for MemberValue<'de> {
    fn deserialize<D: de::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = MemberValue<'de>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("any value")
            }
            fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<MemberValue<'de>, E> {
                Ok(MemberValue::Str(v))
            }
            // An escaped string is held as the tree holds it; `text` reads it the same.
            visit_as_value!(MemberValue::Other, seq map);
        }
        d.deserialize_any(V)
    }
}

/// An owner's members (in their order, repeated names too), with what is read of them (the last of a repeated name
/// counting).
struct OwnerMembers<'a> {
    members: Vec<(Cow<'a, str>, MemberValue<'a>)>,
    owner: Owner<'a>,
}

/// An owner's members as a tree, as parsing the owner would have built it (the last of a repeated name counting).
fn owner_tree(members: Vec<(Cow<'_, str>, MemberValue<'_>)>) -> Value {
    let mut map = Map::new();
    for (key, value) in members {
        map.insert(key.into_owned(), value.into_value());
    }
    Value::Object(map)
}

/// An item of `ownerReferences`: an object's members, or something else as a tree.
enum OwnerItem<'a> {
    Object(OwnerMembers<'a>),
    Other(Value),
}

impl<'de> de::Deserialize<'de> for OwnerItem<'de> {
    fn deserialize<D: de::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = OwnerItem<'de>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("an owner reference")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<OwnerItem<'de>, A::Error> {
                // Repeated names are kept as they come: the tree, if built, keeps the last.
                let mut members = Vec::with_capacity(6);
                let mut owner = Owner::default();
                while let Some(Key(key)) = map.next_key()? {
                    let value: MemberValue = map.next_value()?;
                    match key.as_ref() {
                        "apiVersion" => owner.api_version = value.text(),
                        "kind" => owner.kind = value.text(),
                        "name" => owner.name = value.text(),
                        "uid" => owner.uid = value.text(),
                        "controller" => owner.controller = matches!(value, MemberValue::Other(Value::Bool(true))),
                        _ => {}
                    }
                    members.push((key, value));
                }
                Ok(OwnerItem::Object(OwnerMembers { members, owner }))
            }
            visit_as_value!(OwnerItem::Other, seq);
        }
        d.deserialize_any(V)
    }
}

/// The metadata's `ownerReferences`: a list of objects as read, or anything else as a tree.
enum OwnersField<'a> {
    Read(OwnersRead<'a>),
    Tree(Value),
}

impl<'de> de::Deserialize<'de> for OwnersField<'de> {
    fn deserialize<D: de::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = OwnersField<'de>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("any value")
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<OwnersField<'de>, A::Error> {
                let n = seq.size_hint().unwrap_or(1);
                let mut owners = OwnersRead {
                    members: Vec::with_capacity(n),
                    read: Vec::with_capacity(n),
                };
                while let Some(item) = seq.next_element::<OwnerItem>()? {
                    match item {
                        OwnerItem::Object(OwnerMembers { members, owner }) => {
                            owners.members.push(members);
                            owners.read.push(owner);
                        }
                        OwnerItem::Other(value) => {
                            // Not a list of objects: a tree, for the shape checks to name the item.
                            let mut items: Vec<Value> = owners.members.into_iter().map(owner_tree).collect();
                            items.push(value);
                            while let Some(value) = seq.next_element::<Value>()? {
                                items.push(value);
                            }
                            return Ok(OwnersField::Tree(Value::Array(items)));
                        }
                    }
                }
                Ok(OwnersField::Read(owners))
            }
            visit_as_value!(OwnersField::Tree, map);
        }
        d.deserialize_any(V)
    }
}

impl OwnersRead<'_> {
    /// The owners as a tree, as parsing them would have built it.
    fn tree(self) -> Value {
        Value::Array(self.members.into_iter().map(owner_tree).collect())
    }
}

/// The pod's `metadata`, parsed whole but for `managedFields`, which are skipped: Istio's webhook drops them before
/// it injects (`pod.ManagedFields = nil`: they can be large and change nothing in the output), so no template, not
/// even a user's, sees them there, and the patch leaves them as they are. The API server writes them on every pod it
/// sends (for a one-container pod a tree of some sixty objects, the largest member of the metadata).
/// `ownerReferences` are kept out of it while they are a list of objects ([`OwnersRead`]).
struct Metadata<'a>(Value, Option<OwnersRead<'a>>);

impl<'de> de::Deserialize<'de> for Metadata<'de> {
    fn deserialize<D: de::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Metadata<'de>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("any value")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Metadata<'de>, A::Error> {
                let mut members = Map::new();
                let mut owners = None;
                // A repeated name: the last one wins, as when parsing into a map.
                while let Some(Key(key)) = map.next_key()? {
                    match key.as_ref() {
                        "managedFields" => {
                            map.next_value::<IgnoredAny>()?;
                        }
                        "ownerReferences" => match map.next_value()? {
                            OwnersField::Read(read) => {
                                members.remove("ownerReferences");
                                owners = Some(read);
                            }
                            OwnersField::Tree(value) => {
                                members.insert(key.into_owned(), value);
                                owners = None;
                            }
                        },
                        _ => {
                            members.insert(key.into_owned(), map.next_value()?);
                        }
                    }
                }
                Ok(Metadata(Value::Object(members), owners))
            }
            visit_as_value!(|v| Metadata(v, None), seq);
        }
        d.deserialize_any(V)
    }
}

/// `request.object` of a review: a pod (or any object), or something else.
#[expect(
    clippy::large_enum_variant,
    reason = "one per review, moved once into the request: boxing the pod would cost every review an allocation"
)]
pub enum Object<'a> {
    /// An object, read as a pod.
    Pod(Submitted<'a>),
    /// Not an object.
    Other,
}

impl<'de: 'a, 'a> de::Deserialize<'de> for Object<'a> {
    fn deserialize<D: de::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        object(d).map(|o| o as Object<'a>)
    }
}

fn object<'de, D: de::Deserializer<'de>>(d: D) -> Result<Object<'de>, D::Error> {
    {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Object<'de>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("an object")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Object<'de>, A::Error> {
                let mut pod = Submitted {
                    metadata: None,
                    owners: None,
                    spec: None,
                };
                while let Some(Key(key)) = map.next_key()? {
                    match key.as_ref() {
                        "metadata" => {
                            let Metadata(metadata, owners) = map.next_value()?;
                            (pod.metadata, pod.owners) = (Some(metadata), owners);
                        }
                        "spec" => pod.spec = Some(map.next_value()?),
                        _ => {
                            map.next_value::<IgnoredAny>()?;
                        }
                    }
                }
                Ok(Object::Pod(pod))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Object<'de>, A::Error> {
                while seq.next_element::<IgnoredAny>()?.is_some() {}
                Ok(Object::Other)
            }
            visit_as_value!(|_| Object::Other,);
        }
        d.deserialize_any(V)
    }
}

/// `request.object` read on the webhook's hot path: the pod [`Object`] reads with serde_json, its spec's members, lists
/// and items walked by [`Reader`] (whose skipping of what is kept as text takes a third of the instructions of
/// serde_json's), the fields read at once built by [`Reader::value`] (or, where it bails, by serde_json from where
/// the field starts), the metadata read by serde_json from where it starts. [`Bail`] for anything else the reader
/// does not read (an object that is not one, a key with an escape, a spec that is not an object, ...): the caller
/// then reads the object with serde_json, which gives the same pod (but for serde_json's recursion limit, which
/// counts from where serde_json starts: see [`crate::json_read`]).
pub fn read_object<'a>(r: &mut Reader<'a>) -> Read<Object<'a>> {
    let mut pod = Submitted {
        metadata: None,
        owners: None,
        spec: None,
    };
    r.object(|r, key| {
        match key {
            "metadata" => {
                let Metadata(metadata, owners) = r.serde()?;
                (pod.metadata, pod.owners) = (Some(metadata), owners);
            }
            "spec" => pod.spec = Some(SpecMember::Spec(read_spec(r)?)),
            _ => r.skip()?,
        }
        Ok(())
    })?;
    Ok(Object::Pod(pod))
}

/// The spec, as [`SpecVisitor`] reads it.
fn read_spec<'a>(r: &mut Reader<'a>) -> Read<SpecDraft<'a>> {
    let mut lists = [None, None, None];
    let mut parsed = Map::new();
    let mut kept = Kept::with_capacity(16);
    r.object(|r, key| {
        match LISTS.iter().zip(&mut lists).find(|((name, _), _)| *name == key) {
            Some(((_, fields), slot)) => *slot = Some(read_list(r, fields)?),
            None if SPEC_FIELDS.contains(&key) => {
                parsed.insert(key.to_owned(), read_value(r)?);
            }
            None => kept.keep(Cow::Borrowed(key), r.skip_text()?),
        }
        Ok(())
    })?;
    Ok(SpecDraft {
        lists,
        parsed,
        texts: kept.texts,
    })
}

/// A list of the spec, as [`ListSeed`] reads it.
fn read_list<'a>(r: &mut Reader<'a>, fields: &[&str]) -> Read<ListDraft<'a>> {
    if r.peek() != Some(b'[') {
        return r.serde().map(ListDraft::Value);
    }
    let mut items = Vec::with_capacity(4);
    r.array(|r| {
        items.push(read_item(r, fields)?);
        Ok(())
    })?;
    Ok(ListDraft::Items(items))
}

/// An item of a list, as [`ItemSeed`] reads it.
fn read_item<'a>(r: &mut Reader<'a>, fields: &[&str]) -> Read<Item<'a>> {
    if r.peek() != Some(b'{') {
        return r.serde().map(Item::Value);
    }
    let mut parsed = Map::new();
    let mut kept = Kept::with_capacity(8);
    r.object(|r, key| {
        if fields.contains(&key) {
            parsed.insert(key.to_owned(), read_value(r)?);
        } else {
            kept.keep(Cow::Borrowed(key), r.skip_text()?);
        }
        Ok(())
    })?;
    Ok(Item::Draft(ItemDraft {
        parsed,
        texts: kept.texts,
    }))
}

/// A value parsed at once: built by the reader, or by serde_json when the reader leaves it to it.
fn read_value(r: &mut Reader) -> Read<Value> {
    let start = r.clone();
    r.value().or_else(|Bail| {
        *r = start;
        r.serde()
    })
}

/// How much of the spec to parse.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Depth {
    /// Everything.
    Full,
    /// What the built-in `sidecar` and `gateway` templates read; containers and volumes of the templates' names
    /// ([`TEMPLATE_CONTAINERS`], [`TEMPLATE_VOLUMES`]) and of `earlier` (what an earlier injection added) whole. The
    /// template names are always parsed whole: `earlier` is empty for a pod never injected.
    Shallow {
        /// The names an earlier injection recorded.
        earlier: Vec<String>,
        /// Whether the containers' `image` is read too (for OpenTelemetry's `service.version`, only when a provider
        /// asks for it: parsing it costs every review about 2% more).
        images: bool,
    },
}

/// The names of the items a shallow parse parses whole.
struct Relevant<'r> {
    /// A set: the names an earlier injection recorded can be as many as the pod's items.
    earlier: HashSet<&'r str>,
    /// Fields of `containers` (not `initContainers`) parsed besides [`CONTAINER_FIELDS`].
    container_fields: &'static [&'static str],
}

impl Relevant<'_> {
    fn contains(&self, name: &str) -> bool {
        TEMPLATE_CONTAINERS.contains(&name) || TEMPLATE_VOLUMES.contains(&name) || self.earlier.contains(name)
    }
}

/// The parsed spec.
pub struct Spec<'a> {
    /// The spec, as deep as it was parsed.
    pub value: Value,
    /// Whether parts of it were left out.
    pub shallow: bool,
    /// Per item of `initContainers`, `containers` and `volumes`: whether only the fields read at once of it were
    /// parsed ([`CONTAINER_FIELDS`], [`VOLUME_FIELDS`]).
    pub shallow_items: [Vec<bool>; 3],
    /// What was left out: of those items, and of the spec.
    unparsed: ([Vec<Texts<'a>>; 3], Texts<'a>),
}

impl Spec<'_> {
    /// The shallow flags of a list's items, by index.
    pub fn shallow_items(&self, list: &str) -> &[bool] {
        LISTS
            .iter()
            .position(|(name, _)| *name == list)
            .and_then(|i| self.shallow_items.get(i))
            .map(Vec::as_slice)
            .unwrap_or_default()
    }

    /// The fields that were parsed of a shallow item of `list`.
    pub fn parsed_fields(list: &str) -> &'static [&'static str] {
        LISTS
            .iter()
            .find(|(name, _)| *name == list)
            .map_or(&[], |(_, fields)| *fields)
    }

    /// The whole spec: this one with what was left out parsed.
    pub fn deepen(&self) -> Result<Spec<'static>, InjectError> {
        let mut value = self.value.clone();
        let (items, rest) = &self.unparsed;
        if let Some(map) = value.as_object_mut() {
            for ((name, _), texts) in LISTS.iter().zip(items) {
                if let Some(list) = map.get_mut(*name).and_then(Value::as_array_mut) {
                    for (item, texts) in list.iter_mut().zip(texts) {
                        if let Some(item) = item.as_object_mut() {
                            for (key, text) in texts {
                                item.insert(key.clone().into_owned(), parse_value(text)?);
                            }
                        }
                    }
                }
            }
            for (key, text) in rest {
                map.insert(key.clone().into_owned(), parse_value(text)?);
            }
        }
        Ok(Spec {
            value,
            shallow: false,
            shallow_items: [Vec::new(), Vec::new(), Vec::new()],
            unparsed: ([Vec::new(), Vec::new(), Vec::new()], Vec::new()),
        })
    }
}

fn parse_value(raw: &str) -> Result<Value, InjectError> {
    serde_json::from_str(raw).map_err(|e| InjectError::InvalidPod(e.to_string()))
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

/// `null`, or what the shape checks accept of a container field: it need not be built.
fn shape_ok(field: &str, text: &str) -> bool {
    if text == "null" {
        return true;
    }
    if CHECKED_OBJECTS.contains(&field) {
        return text.starts_with('{');
    }
    if !CHECKED_LISTS.contains(&field) {
        return true;
    }
    if !text.starts_with('[') {
        return false;
    }
    // The reader's walk of the list, or serde_json's when the reader leaves it.
    let mut all = true;
    let read = Reader::new(text).array(|r| {
        all &= r.peek() == Some(b'{');
        r.skip()
    });
    match read {
        Ok(()) => all,
        Err(Bail) => serde_json::Deserializer::from_str(text)
            .deserialize_seq(AllObjects)
            .unwrap_or(false),
    }
}

/// A list item: whole when `whole`, else what was parsed at once (and, for a container, any wrongly shaped checked
/// field, for the shape checks to name), and those named in `extra`. Returns the value and what was left out of it.
fn item<'a>(item: Item<'a>, whole: bool, extra: &[&str]) -> Result<(Value, Texts<'a>), InjectError> {
    let draft = match item {
        Item::Value(v) => return Ok((v, Vec::new())),
        Item::Draft(d) => d,
    };
    let mut map = draft.parsed;
    let mut left_out = if whole {
        Vec::new()
    } else {
        Vec::with_capacity(draft.texts.len())
    };
    for (key, text) in draft.texts {
        if whole || extra.contains(&key.as_ref()) || !shape_ok(&key, text) {
            map.insert(key.into_owned(), parse_value(text)?);
        } else {
            left_out.push((key, text));
        }
    }
    Ok((Value::Object(map), left_out))
}

/// A list, its items parsed whole when named in `relevant` (all of them when `None`), else with the fields named in
/// `extra` besides those parsed at once; records per item whether it is partial and what was left out of it.
fn list<'a>(
    draft: ListDraft<'a>,
    relevant: Option<&Relevant>,
    extra: &[&str],
    flags: &mut Vec<bool>,
    left_out: &mut Vec<Texts<'a>>,
) -> Result<Value, InjectError> {
    let items = match draft {
        ListDraft::Value(v) => return Ok(v),
        ListDraft::Items(items) => items,
    };
    let mut out = Vec::with_capacity(items.len());
    flags.reserve_exact(items.len());
    left_out.reserve_exact(items.len());
    for i in items {
        let whole = match (&i, relevant) {
            (Item::Draft(d), Some(relevant)) => d
                .parsed
                .get("name")
                .and_then(Value::as_str)
                .is_some_and(|n| relevant.contains(n)),
            _ => true,
        };
        let (value, texts) = item(i, whole, extra)?;
        out.push(value);
        flags.push(!texts.is_empty());
        left_out.push(texts);
    }
    Ok(Value::Array(out))
}

impl<'a> Submitted<'a> {
    /// Reads a pod from its JSON text.
    pub fn from_json(text: &'a str) -> Result<Self, String> {
        match serde_json::from_str::<Object>(text).map_err(|e| e.to_string())? {
            Object::Pod(pod) => Ok(pod),
            Object::Other => Err("request.object is not an object".into()),
        }
    }

    /// For the tests and the fuzzer: the spec as first read (before [`Submitted::spec`] takes it), to compare
    /// readings.
    #[doc(hidden)]
    pub fn spec_as_read(&self) -> String {
        format!("{:?}", self.spec)
    }

    /// The pod's metadata (null when it has none), without its `ownerReferences` while they are kept as read (read
    /// them with [`Submitted::owners`]; [`Submitted::whole_metadata`] puts them back).
    pub fn metadata(&self) -> &Value {
        self.metadata.as_ref().unwrap_or(&Value::Null)
    }

    /// The pod's metadata whole (null when it has none; `managedFields` skipped), its `ownerReferences` built back
    /// into it if they were kept as read: for a user's template, which may read them or merge into them.
    pub fn whole_metadata(&mut self) -> &Value {
        if let Some(owners) = self.owners.take()
            && let Some(Value::Object(members)) = &mut self.metadata
        {
            members.insert("ownerReferences".to_owned(), owners.tree());
        }
        self.metadata()
    }

    /// The pod's `ownerReferences`, as read ([`Owner`]).
    pub fn owners(&self) -> Cow<'_, [Owner<'_>]> {
        match &self.owners {
            Some(owners) => Cow::Borrowed(owners.read.as_slice()),
            None => Cow::Owned(Owner::all_in(self.metadata())),
        }
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
        if !builtin || annotations.contains_key(ann::USER_VOLUME) {
            return Depth::Full;
        }
        let mut relevant = Vec::new();
        if let Some(status) = annotations.get(ann::STATUS).and_then(Value::as_str) {
            match PreviousInjection::parse(status) {
                Ok(previous) => relevant.extend(
                    previous
                        .init_containers
                        .into_iter()
                        .chain(previous.containers)
                        .chain(previous.volumes),
                ),
                Err(_) => return Depth::Full,
            }
        }
        Depth::Shallow {
            earlier: relevant,
            images: injector.config().mesh.otel_semantic_conventions(),
        }
    }

    /// The pod's spec, parsed to `depth`; an error when the pod has no spec object. The pod's spec is taken: a
    /// second call finds none (see [`Spec::deepen`] to parse more of it).
    pub fn spec(&mut self, depth: &Depth) -> Result<Spec<'a>, InjectError> {
        let Some(SpecMember::Spec(draft)) = self.spec.take() else {
            return Err(InjectError::InvalidPod("the pod has no spec".into()));
        };
        let relevant = match depth {
            Depth::Full => None,
            Depth::Shallow { earlier, images } => Some(Relevant {
                earlier: earlier.iter().map(String::as_str).collect(),
                container_fields: if *images { &["image"] } else { &[] },
            }),
        };
        let relevant = relevant.as_ref();
        let SpecDraft { lists, parsed, texts } = draft;
        let mut map = parsed;
        let mut shallow_items = [Vec::new(), Vec::new(), Vec::new()];
        let mut left_out = [Vec::new(), Vec::new(), Vec::new()];
        for (((name, _), slot), (flags, left_out)) in LISTS
            .iter()
            .zip(lists)
            .zip(shallow_items.iter_mut().zip(left_out.iter_mut()))
        {
            if let Some(d) = slot {
                let extra = match relevant {
                    Some(r) if *name == "containers" => r.container_fields,
                    _ => &[],
                };
                map.insert((*name).to_owned(), list(d, relevant, extra, flags, left_out)?);
            }
        }
        let rest = match relevant {
            None => {
                for (key, text) in texts {
                    map.insert(key.into_owned(), parse_value(text)?);
                }
                Vec::new()
            }
            Some(_) => texts,
        };
        Ok(Spec {
            value: Value::Object(map),
            shallow: relevant.is_some(),
            shallow_items,
            unparsed: (left_out, rest),
        })
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::inject::{InjectionConfig, Workload};

    fn pod(value: &Value) -> String {
        value.to_string()
    }

    /// What a reading of a pod gives: its metadata whole, its owners as read, and its spec as first read.
    fn seen(object: Object) -> String {
        match object {
            Object::Other => "not an object".to_owned(),
            Object::Pod(mut pod) => {
                let draft = pod.spec_as_read();
                let owners = format!("{:?}", pod.owners());
                format!("{} {owners} {draft}", pod.whole_metadata())
            }
        }
    }

    #[test]
    fn the_reader_reads_pods_as_serde_json_does_or_leaves_them_to_it() {
        let base = r#"{"apiVersion":"v1","kind":"Pod","metadata":{"name":"p","labels":{"a":"b"},"ownerReferences":[{"kind":"ReplicaSet","name":"r","controller":true}]},"spec":{"containers":[{"name":"web","image":"nginx","ports":[{"containerPort":80}],"env":[{"name":"A","value":"x"}]}],"volumes":[{"name":"v","emptyDir":{}}],"serviceAccountName":"sa","tolerations":[]}}"#;
        let deep = format!("{}{}", "[".repeat(70), "]".repeat(70));
        // (from, to, whether the reader reads it rather than leaving it to serde_json)
        let edits: &[(&str, &str, bool)] = &[
            ("", "", true),
            (r#""spec":{"#, r#""spec":{"containers":null,"#, true),
            (r#""spec":{"#, r#""spec":{"containers":[{"name":"x"}],"#, true),
            (r#""containers":["#, r#""containers":[1,"x",null,[],{},"#, true),
            (
                r#""containers":["#,
                r#""containers" : [ { "name" : "a" , "image" : [ 1 , 2 ] } , "#,
                true,
            ),
            (r#""volumes":[{"name":"v","emptyDir":{}}]"#, r#""volumes":7"#, true),
            (
                r#""volumes":[{"name":"v","emptyDir":{}}]"#,
                r#""volumes":{"a":1}"#,
                true,
            ),
            (r#""volumes":[{"name":"v","emptyDir":{}}]"#, r#""volumes":[]"#, true),
            (r#""image":"nginx""#, r#""image":"ng\u0069nx\n""#, true),
            (r#""name":"web""#, r#""name":"w\u0065b""#, true),
            (r#""name":"web""#, r#""name":"web","name":7"#, true),
            (r#""image":"nginx""#, r#""image":"a","image":"b""#, true),
            (
                r#""serviceAccountName":"#,
                r#""serviceAccountName":"a","serviceAccountName":"#,
                true,
            ),
            (
                r#""serviceAccountName":"sa""#,
                r#""serviceAccountName":{"x":[1.5e-3,-0,true,null]}"#,
                true,
            ),
            (r#""spec":{"#, r#""spec":{"x":1e5,"y":-0.25,"z":"\u00e9\t","#, true),
            (r#""tolerations":[]"#, r#""tolerations" :	[ ] "#, true),
            (r#""kind":"Pod""#, r#""kind":"Pod","kind":{"deep":[1,2]}"#, true),
            (r#""metadata":{"#, r#""metadata":null,"metadata":{"#, true),
            (r#""metadata":{"#, r#""metadata":7,"metadata":{"#, true),
            (
                r#""metadata":{"#,
                r#""metadata":{"managedFields":[{"a":{"b":[1,2.5]}}],"#,
                true,
            ),
            (
                r#""metadata":{"#,
                r#""metadata":{"managedFields":7,"managedFields":null,"#,
                true,
            ),
            (r#""metadata":{"#, r#""metadata":{"ownerReferences":7,"#, true),
            (
                r#""ownerReferences":["#,
                r#""ownerReferences":[{"name":"x"}],"ownerReferences":["#,
                true,
            ),
            (
                r#""metadata":{"#,
                r#""metadata":{"annotations":{"a":"b","a":"c","c":1.5},"#,
                true,
            ),
            (
                r#""metadata":{"#,
                r#""metadata":{"x":{"$serde_json::private::RawValue":"[1]"},"#,
                true,
            ),
            (r#""metadata":{"#, r#""metadata":{"m\u0061nagedFields":[],"#, true),
            (
                r#""metadata":{"#,
                &format!(r#""metadata":{{"managedFields":{deep},"#),
                true,
            ),
            (
                r#""spec":{"#,
                r#""spec":{"securityContext":{"$serde_json::private::RawValue":"{\"a\":1}"},"#,
                true,
            ),
            (r#""spec":{"#, r#""spec":null,"spec":{"#, false),
            (r#""spec":{"#, r#""spec":{},"spec":{"#, true),
            (r#""spec":{"#, r#""spec":[],"x":{"#, false),
            (r#""image":"#, r#""im\u0061ge":"#, false),
            (r#""spec":{"#, r#""sp\u0065c":{"#, false),
            (r#""spec":{"#, r#""spec":{"\u0076olumes":[],"#, false),
            (r#""spec":{"#, r#""spec":{"x":"\ud83d\ude00","#, false),
            (r#""tolerations":[]"#, &format!(r#""tolerations":{deep}"#), false),
            (r#""image":"nginx""#, &format!(r#""image":{deep}"#), false),
            // Not JSON: serde_json refuses it too.
            (r#""containerPort":80"#, r#""containerPort":1e400"#, false),
            (r#""tolerations":[]"#, r#""tolerations":[],"#, false),
            (r#""tolerations":[]"#, r#""tolerations":[1,]"#, false),
            (r#""image":"nginx""#, r#""image":"nginx"""#, false),
            (r#""emptyDir":{}"#, r#""emptyDir":{"a"}"#, false),
        ];
        for (from, to, expected) in edits {
            assert!(base.contains(from), "{from}");
            let text = base.replacen(from, to, 1);
            let full = serde_json::from_str::<Object>(&text).map(seen);
            let mut r = Reader::new(&text);
            let read = read_object(&mut r).ok().filter(|_| r.at_end()).map(seen);
            if let Some(read) = &read {
                assert_eq!(full.as_ref().ok(), Some(read), "{text}");
            }
            assert_eq!(read.is_some(), *expected, "{text}: {full:?}");
        }
        // Not an object.
        for text in ["[]", "null", "\"pod\"", "7"] {
            assert!(read_object(&mut Reader::new(text)).is_err(), "{text}");
        }
    }

    #[test]
    fn application_containers_keep_only_what_injection_reads() {
        let text = pod(&json!({"metadata": {"name": "p"}, "spec": {
        "tolerations": [{"key": "a"}],
        "volumes": [{"name": "data", "emptyDir": {}}, {"name": "istio-envoy", "emptyDir": {}}],
        "containers": [
            {"name": "web", "image": "nginx", "env": [{"name": "A", "value": "1"}], "ports": [{"containerPort": 80}],
             "readinessProbe": {"httpGet": {"port": 80}}, "resources": {"limits": {"cpu": "1"}}},
            {"name": "istio-proxy", "image": "auto", "env": [{"name": "B"}]}
        ]}}));
        let mut submitted = Submitted::from_json(&text).unwrap();
        let injector = Injector::compile(InjectionConfig::default());
        let depth = submitted.depth(&injector);
        let spec = submitted.spec(&depth).unwrap();
        assert_eq!(
            spec.value,
            json!({"volumes": [{"name": "data"}, {"name": "istio-envoy", "emptyDir": {}}], "containers": [
                {"name": "web", "ports": [{"containerPort": 80}], "readinessProbe": {"httpGet": {"port": 80}}},
                {"name": "istio-proxy", "image": "auto", "env": [{"name": "B"}]}
            ]})
        );
        assert_eq!(spec.shallow_items("containers"), &[true, false]);
        assert_eq!(spec.shallow_items("volumes"), &[true, false]);
        // Deepened: the whole spec.
        let full = spec.deepen().unwrap();
        assert_eq!(full.value, serde_json::from_str::<Value>(&text).unwrap()["spec"]);
        assert!(submitted.spec(&Depth::Full).is_err(), "the spec was taken");
        // With an OpenTelemetry provider that asks for the service attributes, the containers' images too (not the
        // volumes'), the rest still left out.
        let mut otel = InjectionConfig::default();
        otel.apply_setting(
            "meshConfig.extensionProviders+",
            r#"{"name":"otel","opentelemetry":{"service":"c","port":4317,"serviceAttributeEnrichment":"OTEL_SEMANTIC_CONVENTIONS"}}"#,
        )
        .unwrap();
        let text = text.replace(r#""emptyDir":{}"#, r#""emptyDir":{},"image":"v""#);
        let mut submitted = Submitted::from_json(&text).unwrap();
        let depth = submitted.depth(&Injector::compile(otel));
        assert!(matches!(depth, Depth::Shallow { images: true, .. }), "{depth:?}");
        let spec = submitted.spec(&depth).unwrap();
        assert_eq!(spec.value["containers"][0]["image"], "nginx");
        assert_eq!(spec.value["containers"][0].get("env"), None);
        assert_eq!(spec.value["volumes"][0], json!({"name": "data"}));
        assert_eq!(spec.shallow_items("containers"), &[true, false]);
    }

    #[test]
    fn wrongly_shaped_fields_are_kept_for_the_shape_checks() {
        let text =
            pod(&json!({"spec": {"containers": [{"name": "web", "env": [{"name": "A"}, "B"], "resources": []}, "x"]}}));
        let mut submitted = Submitted::from_json(&text).unwrap();
        let injector = Injector::compile(InjectionConfig::default());
        let depth = submitted.depth(&injector);
        let spec = submitted.spec(&depth).unwrap();
        assert_eq!(
            spec.value,
            json!({"containers": [{"name": "web", "env": [{"name": "A"}, "B"], "resources": []}, "x"]})
        );
        let text = pod(&json!({"spec": {"containers": {"name": "web"}, "volumes": "v"}}));
        let mut submitted = Submitted::from_json(&text).unwrap();
        let depth = submitted.depth(&injector);
        let spec = submitted.spec(&depth).unwrap();
        assert_eq!(spec.value, json!({"containers": {"name": "web"}, "volumes": "v"}));
    }

    #[test]
    fn checked_lists_are_lists_of_objects_whoever_walks_them() {
        let deep = format!("{}{}", "[".repeat(70), "]".repeat(70));
        let cases = [
            ("[]".to_owned(), true),
            ("[{}]".to_owned(), true),
            (r#"[ {} , {"a":[1,{"b":null}]} ]"#.to_owned(), true),
            ("[{},1]".to_owned(), false),
            (r#"[{}, "x"]"#.to_owned(), false),
            ("[[]]".to_owned(), false),
            ("{}".to_owned(), false),
            ("7".to_owned(), false),
            ("null".to_owned(), true),
            // Left by the reader to serde_json: nested deeper than it walks, a surrogate escape.
            (format!("[{deep}]"), false),
            (format!(r#"[{{"a":{deep}}}]"#), true),
            (r#"[{"\ud83d\ude00":1}]"#.to_owned(), true),
            (r#"[{"a":"\ud83d\ude00"}, 1]"#.to_owned(), false),
        ];
        for (text, want) in cases {
            assert_eq!(shape_ok("env", &text), want, "{text}");
            assert_eq!(shape_ok("volumeMounts", &text), want, "{text}");
        }
        assert!(shape_ok("image", "[1]") && shape_ok("resources", "{}") && !shape_ok("resources", "[]"));
    }

    #[test]
    fn repeated_members_keep_the_last_as_a_map_would() {
        let text = r#"{"spec":{"containers":[{"name":"a","env":[1],"env":[{"x":1}],"ports":[],"ports":[{"containerPort":1}]}],"x":1,"x":2}}"#;
        let mut submitted = Submitted::from_json(text).unwrap();
        let whole: Value = serde_json::from_str(text).unwrap();
        assert_eq!(submitted.spec(&Depth::Full).unwrap().value, whole["spec"]);
    }

    #[test]
    fn managed_fields_are_skipped_whatever_they_hold_and_however_often() {
        for (text, want) in [
            (
                r#"{"metadata":{"managedFields":[1],"name":"p","managedFields":[{"manager":"m"}]},"spec":{}}"#,
                json!({"name": "p"}),
            ),
            (
                r#"{"metadata":{"managed\u0046ields":null,"name":"p"},"spec":{}}"#,
                json!({"name": "p"}),
            ),
            // Checked for syntax only: a number serde_json could not hold as an f64 (Go keeps fieldsV1 as bytes).
            (
                r#"{"metadata":{"managedFields":[{"fieldsV1":{"f:x":1e400}}]},"spec":{}}"#,
                json!({}),
            ),
            // The last metadata wins, as when parsing into a map.
            (
                r#"{"metadata":{"managedFields":[1]},"metadata":{"name":"q"},"spec":{}}"#,
                json!({"name": "q"}),
            ),
            // Metadata that is not an object is kept as it is, for the shape checks.
            (r#"{"metadata":"x","spec":{}}"#, json!("x")),
            (r#"{"metadata":[1],"spec":{}}"#, json!([1])),
            (r#"{"metadata":null,"spec":{}}"#, Value::Null),
        ] {
            let submitted = Submitted::from_json(text).unwrap();
            assert_eq!(submitted.metadata(), &want, "{text}");
        }
        // Text that is not JSON is still refused when the pod is read.
        assert!(Submitted::from_json(r#"{"metadata":{"managedFields":[1,]},"spec":{}}"#).is_err());
    }

    #[test]
    fn owners_kept_as_read_read_as_the_tree_reads_them_and_come_back_whole() {
        let owner = r#"{"apiVersion":"apps/v1","kind":"ReplicaSet","name":"web-1","uid":"u1","controller":true,"blockOwnerDeletion":true}"#;
        for (references, as_text) in [
            (format!("[{owner}]"), true),
            ("[]".to_owned(), true),
            // The controller is the first with `controller: true`; anything else is not one.
            (
                r#"[{"name":"a","controller":"true"},{"name":"b","controller":1},{"name":"c","controller":true}]"#.to_owned(),
                true,
            ),
            (r#"[{"name":"a","controller":null},{"name":"b"}]"#.to_owned(), true),
            // Of a repeated member the last counts, even when it is not a string.
            (r#"[{"name":"a","name":"b","kind":"K","kind":7,"controller":true,"controller":false}]"#.to_owned(), true),
            // Escapes; members that are not strings read as empty; unknown members of any shape.
            (
                r#"[{"name":"w\u0065b","uid":"a\"b","kind":["x"],"apiVersion":{"a":1},"x":{"y":[1,2.5,-3e2]},"controller":true}]"#
                    .to_owned(),
                true,
            ),
            // Names with escapes; a repeated member before an item that is not an object.
            (r#"[{"n\u0061me":"a","\u0063ontroller":true,"kind":"\ud83d\ude00"}]"#.to_owned(), true),
            (r#"[{"name":"a","name":"b","uid":"u"},1,{"name":"c"}]"#.to_owned(), false),
            // Nested as deep as the tree allows.
            (format!(r#"[{{"x":{}1{}}}]"#, "[".repeat(120), "]".repeat(120)), true),
            // Other shapes stay in the tree, for the shape checks to name.
            (r#"[{"name":"a"},"b"]"#.to_owned(), false),
            (r#"{"name":"a"}"#.to_owned(), false),
            ("null".to_owned(), false),
            ("7".to_owned(), false),
        ] {
            let text = format!(
                r#"{{"metadata":{{"generateName":"web-1-","ownerReferences":{references},"labels":{{"pod-template-hash":"1"}}}},"spec":{{}}}}"#
            );
            let tree: Value = serde_json::from_str(&text).unwrap();
            let mut submitted = Submitted::from_json(&text).unwrap();
            assert_eq!(
                submitted.metadata().get("ownerReferences").is_none(),
                as_text,
                "{references}"
            );
            assert_eq!(&*submitted.owners(), Owner::all_in(&tree["metadata"]), "{references}");
            assert_eq!(
                Workload::of_pod_owned_by(submitted.metadata(), &submitted.owners()),
                Workload::of_pod(&tree["metadata"]),
                "{references}"
            );
            assert_eq!(submitted.whole_metadata(), &tree["metadata"], "{references}");
            assert_eq!(&*submitted.owners(), Owner::all_in(&tree["metadata"]), "{references}");
        }
        // The last metadata counts, with its owners or none.
        for text in [
            r#"{"metadata":{"ownerReferences":[{"name":"a"}]},"metadata":"x","spec":{}}"#,
            r#"{"metadata":{"ownerReferences":[{"name":"a"}]},"metadata":{"name":"p"},"spec":{}}"#,
            r#"{"metadata":{"name":"p"},"metadata":{"ownerReferences":[{"name":"a"}]},"spec":{}}"#,
        ] {
            let tree: Value = serde_json::from_str(text).unwrap();
            let mut submitted = Submitted::from_json(text).unwrap();
            assert_eq!(&*submitted.owners(), Owner::all_in(&tree["metadata"]), "{text}");
            assert_eq!(submitted.whole_metadata(), &tree["metadata"], "{text}");
        }
        // The last of repeated `ownerReferences` counts, whichever way each is kept.
        for (first, last) in [
            ("[{\"name\":\"a\"}]", "7"),
            ("7", "[{\"name\":\"a\"}]"),
            ("[{}]", "[{\"uid\":\"b\"}]"),
        ] {
            let text = format!(r#"{{"metadata":{{"ownerReferences":{first},"ownerReferences":{last}}},"spec":{{}}}}"#);
            let tree: Value = serde_json::from_str(&text).unwrap();
            let mut submitted = Submitted::from_json(&text).unwrap();
            assert_eq!(&*submitted.owners(), Owner::all_in(&tree["metadata"]), "{text}");
            assert_eq!(submitted.whole_metadata(), &tree["metadata"], "{text}");
        }
        // What the tree refuses is refused, read by the same parser: the same message, at the same place.
        let deep = format!("{}1{}", "[".repeat(130), "]".repeat(130));
        for references in [
            r#"[{"x":1e400}]"#,
            r#"[{"name":1e400}]"#,
            r#"[{"x":[-1e999]}]"#,
            r#"[{"x":1},1e400]"#,
            r#"[{"uid":"\ud800"}]"#,
            r#"[{"x":"a\udc00"}]"#,
            r#"[{"name":"a","name":"b"},"\ud800"]"#,
            &format!(r#"[{{"x":{deep}}}]"#),
            r#"[{"name":"a""#,
            r#"[{"name":"a",}]"#,
        ] {
            let text = format!(r#"{{"metadata":{{"ownerReferences":{references}}},"spec":{{}}}}"#);
            let tree = serde_json::from_str::<Value>(&text).unwrap_err().to_string();
            assert_eq!(Submitted::from_json(&text).err(), Some(tree), "{references}");
        }
        // The direct owner: the controller, else the first.
        for (references, direct) in [
            (r#"[{"name":"a"},{"name":"b","controller":true}]"#, "b"),
            (r#"[{"name":"a"},{"name":"b"}]"#, "a"),
        ] {
            let tree = json!({"ownerReferences": serde_json::from_str::<Value>(references).unwrap()});
            let owners = Owner::all_in(&tree);
            assert_eq!(Owner::direct(&owners).map(|o| &*o.name), Some(direct));
        }
        assert_eq!(Owner::direct(&[]), None);
    }

    #[test]
    fn items_and_specs_of_many_members_keep_the_last_of_each_in_first_place() {
        // Past the scanned few, repeated names are found through an index: 50,000 members cost a pass each.
        let members = |n: usize| -> String {
            let mut text: Vec<String> = (0..n).map(|i| format!("\"m{i}\":{i}")).collect();
            text.extend((0..n).step_by(7).map(|i| format!("\"m{i}\":\"again\"")));
            text.join(",")
        };
        for n in [3, 17, 50_000] {
            let text = format!(
                r#"{{"spec":{{"containers":[{{"name":"web",{m}}}],"volumes":[{{"name":"v",{m}}}],{m}}}}}"#,
                m = members(n)
            );
            let whole: Value = serde_json::from_str(&text).unwrap();
            let mut submitted = Submitted::from_json(&text).unwrap();
            let injector = Injector::compile(InjectionConfig::default());
            let depth = submitted.depth(&injector);
            let spec = submitted.spec(&depth).unwrap();
            assert_eq!(spec.value["containers"][0]["name"], "web", "{n}");
            let full = spec.deepen().unwrap();
            assert_eq!(full.value, whole["spec"], "{n}");
            assert_eq!(full.value["m0"], "again", "{n}");
        }
    }

    #[test]
    fn other_templates_user_volumes_and_unreadable_status_parse_everything() {
        let injector = Injector::compile(InjectionConfig::default());
        for annotations in [
            json!({"inject.istio.io/templates": "sidecar,grpc-agent"}),
            json!({"sidecar.istio.io/status": "{not json"}),
            json!({"sidecar.istio.io/userVolume": "{}"}),
        ] {
            let text = pod(&json!({"metadata": {"annotations": annotations}, "spec": {"containers": []}}));
            assert_eq!(Submitted::from_json(&text).unwrap().depth(&injector), Depth::Full);
        }
        let text =
            pod(&json!({"metadata": {"annotations": {"sidecar.istio.io/status": "{\"containers\":[\"app\"]}"}}}));
        let Depth::Shallow { earlier: relevant, .. } = Submitted::from_json(&text).unwrap().depth(&injector) else {
            panic!("expected a shallow parse")
        };
        assert!(relevant.contains(&"app".to_owned()));
    }

    #[test]
    fn a_pod_without_a_spec_object_is_refused() {
        let injector = Injector::compile(InjectionConfig::default());
        for text in [
            r#"{"metadata":{}}"#,
            r#"{"spec":[]}"#,
            r#"{"spec":null}"#,
            r#"{"spec":"x"}"#,
        ] {
            let mut submitted = Submitted::from_json(text).unwrap();
            let depth = submitted.depth(&injector);
            let err = submitted.spec(&depth).err().map(|e| e.to_string());
            assert_eq!(err.as_deref(), Some("invalid pod: the pod has no spec"), "{text}");
        }
        assert!(Submitted::from_json("[1]").is_err());
    }
}
