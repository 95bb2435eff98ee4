//! AdmissionReview in, AdmissionReview out: the webhook's whole decision as a pure function over the request body
//! and the revision's [`InjectionConfig`]. The server around it only does transport, caching, metrics and Events.
#![cfg_attr(not(test), deny(clippy::indexing_slicing))]

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::fmt;

use serde::Deserialize;
use serde::de::{self, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde_json::Value;

use crate::inject::pod::Object;
use crate::inject::pod::Owner;
use crate::inject::{self, InjectError, Injector, PodOutcome, Rule, Submitted, Workload};
use crate::json_read::{Bail, RAW_VALUE_KEY, Read, Reader};
use crate::json_text;
use crate::precoded::{self, Placements};

/// Audit annotation carrying the decision and its reason. The API server records it under the webhook's name
/// (`rev.namespace.sidecar-injector.mizzen.io/injection`): it prefixes each key with the name and a `/` and drops a
/// key that then holds two, so the key itself has none.
pub const AUDIT_ANNOTATION: &str = "injection";

/// Why a body is not a usable AdmissionReview: the server answers HTTP 400 with this message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReviewError {
    /// Not JSON, or not shaped like an AdmissionReview.
    #[error("request body is not an admission.k8s.io/v1 AdmissionReview: {0}")]
    Malformed(String),
    /// JSON of another kind or version.
    #[error("expected apiVersion admission.k8s.io/v1 and kind AdmissionReview, got {api_version:?} {kind:?}")]
    WrongKind {
        /// The body's apiVersion.
        api_version: String,
        /// The body's kind.
        kind: String,
    },
    /// The review has no `request`.
    #[error("AdmissionReview has no request")]
    MissingRequest,
}

/// What the webhook decided, for logs, metrics and Events.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    /// The sidecar was injected.
    Injected(Rule),
    /// The pod was left alone.
    Skipped(Rule),
    /// The pod was refused (the user's error, such as a bad annotation).
    Denied(String),
    /// Nothing to do (not a CREATE, not a Pod, or a subresource such as `status` or `exec`).
    Ignored(String),
    /// No MeshInstall serves the revision the review was sent to (deleted before its webhook configuration, or not
    /// yet seen): the webhook's failure, not a verdict on the pod. The server answers it with an HTTP error, so that
    /// the configuration's `failurePolicy` decides.
    Unserved(String),
}

impl Outcome {
    /// A short label for metrics: `injected`, `skipped`, `denied`, `ignored`, `unknown_revision`.
    pub fn result(&self) -> &'static str {
        match self {
            Outcome::Injected(_) => "injected",
            Outcome::Skipped(_) => "skipped",
            Outcome::Denied(_) => "denied",
            Outcome::Ignored(_) => "ignored",
            Outcome::Unserved(_) => "unknown_revision",
        }
    }

    /// The reason as one line.
    pub fn reason(&self) -> String {
        match self {
            Outcome::Injected(rule) | Outcome::Skipped(rule) => rule.to_string(),
            Outcome::Denied(message) | Outcome::Ignored(message) | Outcome::Unserved(message) => message.clone(),
        }
    }

    /// A stable label for the reason (for metrics): the rule's kind, without values.
    pub fn reason_label(&self) -> &'static str {
        match self {
            Outcome::Injected(rule) | Outcome::Skipped(rule) => match rule {
                Rule::HostNetwork => "host_network",
                Rule::IgnoredNamespace(_) => "ignored_namespace",
                Rule::PodLabel(_) => "pod_label",
                Rule::PodAnnotation(_) => "pod_annotation",
                Rule::NeverInjectSelector(_) => "never_inject_selector",
                Rule::AlwaysInjectSelector(_) => "always_inject_selector",
                Rule::Policy(_) => "policy",
            },
            Outcome::Denied(_) => "invalid_pod",
            Outcome::Ignored(_) => "not_create",
            Outcome::Unserved(_) => "unknown_revision",
        }
    }
}

/// The operation of a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Operation {
    /// Creates a resource.
    Create,
    /// Updates a resource.
    Update,
    /// Deletes a resource.
    Delete,
    /// Connects to a resource.
    Connect,
}

/// The group, version and kind of the object a request is about, borrowed from the body where they have no
/// escapes.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct GroupVersionKind<'a> {
    /// API group (`""` for core).
    #[serde(borrow)]
    pub group: Cow<'a, str>,
    /// Version.
    #[serde(borrow)]
    pub version: Cow<'a, str>,
    /// Kind.
    #[serde(borrow)]
    pub kind: Cow<'a, str>,
}

#[derive(Deserialize)]
#[allow(dead_code)] // Checked for presence and shape, as the API server always sends it.
struct GroupVersionResource<'a> {
    #[serde(borrow)]
    group: Cow<'a, str>,
    #[serde(borrow)]
    version: Cow<'a, str>,
    #[serde(borrow)]
    resource: Cow<'a, str>,
}

/// `request` of a review, as far as the webhook reads it (the pod only as far as injection may read it).
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RequestWire<'a> {
    uid: String,
    #[serde(borrow)]
    kind: GroupVersionKind<'a>,
    #[allow(dead_code)]
    #[serde(borrow)]
    resource: GroupVersionResource<'a>,
    #[serde(default)]
    sub_resource: Option<String>,
    #[serde(default)]
    namespace: Option<String>,
    operation: Operation,
    #[allow(dead_code)]
    user_info: IgnoredAny,
    #[serde(default, borrow)]
    object: Option<Object<'a>>,
    #[serde(default)]
    dry_run: bool,
}

/// A member whose value is kept only when it is a string.
struct Loose<'a>(Option<Cow<'a, str>>);

impl<'de: 'a, 'a> Deserialize<'de> for Loose<'a> {
    fn deserialize<D: de::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V<'a>(std::marker::PhantomData<&'a ()>);
        impl<'de: 'a, 'a> Visitor<'de> for V<'a> {
            type Value = Loose<'a>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("any value")
            }
            fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Loose<'a>, E> {
                Ok(Loose(Some(Cow::Borrowed(v))))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Loose<'a>, E> {
                Ok(Loose(Some(Cow::Owned(v.to_owned()))))
            }
            fn visit_bool<E: de::Error>(self, _: bool) -> Result<Loose<'a>, E> {
                Ok(Loose(None))
            }
            fn visit_i64<E: de::Error>(self, _: i64) -> Result<Loose<'a>, E> {
                Ok(Loose(None))
            }
            fn visit_u64<E: de::Error>(self, _: u64) -> Result<Loose<'a>, E> {
                Ok(Loose(None))
            }
            fn visit_f64<E: de::Error>(self, _: f64) -> Result<Loose<'a>, E> {
                Ok(Loose(None))
            }
            fn visit_unit<E: de::Error>(self) -> Result<Loose<'a>, E> {
                Ok(Loose(None))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Loose<'a>, A::Error> {
                while seq.next_element::<IgnoredAny>()?.is_some() {}
                Ok(Loose(None))
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Loose<'a>, A::Error> {
                while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
                Ok(Loose(None))
            }
        }
        d.deserialize_any(V(std::marker::PhantomData))
    }
}

/// The review around the request, read in one pass.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Envelope<'a> {
    #[serde(default, borrow)]
    api_version: Option<Loose<'a>>,
    #[serde(default, borrow)]
    kind: Option<Loose<'a>>,
    #[serde(default, borrow)]
    request: Option<RequestWire<'a>>,
}

/// The review read by [`json_read`], member by member: what serde_json would make of `text` as an [`Envelope`], or
/// [`Bail`] where the reader is not sure of that (a repeated or missing field, a value of another type, a key or a
/// surrogate escape, ...), for serde_json to parse and word any error. The pod is read by [`inject::pod::read_object`],
/// which hands its metadata, and any field it does not build itself, to serde_json from where they start (and the whole
/// pod, from where it starts, when it bails), so serde_json's recursion limit counts from there rather than from the
/// body: a pod whose metadata or fields nest within six levels of the limit may be read here and refused by the full
/// parse (`the_recursion_limit_counts_from_the_member_serde_json_reads`). No pod the API server sends comes near: it
/// decodes the pod into its typed object before calling webhooks, so the nesting is the Pod schema's (but for
/// `managedFields[].fieldsV1`, raw JSON both readings skip without a limit). A bail after the pod (a field repeated
/// after `object`) has the pod parsed twice: at most twice the work, for a body no API server sends.
fn read_envelope(text: &str) -> Read<Envelope<'_>> {
    let mut r = Reader::new(text);
    let mut envelope = Envelope {
        api_version: None,
        kind: None,
        request: None,
    };
    let mut seen = [false; 3];
    r.object(|r, key| {
        let (slot, i) = match key {
            "apiVersion" => (&mut envelope.api_version, 0),
            "kind" => (&mut envelope.kind, 1),
            "request" => {
                once(&mut seen, 2)?;
                envelope.request = if r.null() { None } else { Some(read_request(r)?) };
                return Ok(());
            }
            _ => return r.skip(),
        };
        once(&mut seen, i)?;
        *slot = match r.peek() {
            _ if r.null() => None,
            Some(b'"') => Some(Loose(Some(r.string()?))),
            // A number is left to serde_json, which refuses one out of range here.
            Some(b'-' | b'0'..=b'9') => return Err(Bail),
            _ => r.skip().map(|()| Some(Loose(None)))?,
        };
        Ok(())
    })?;
    if !r.at_end() {
        return Err(Bail);
    }
    Ok(envelope)
}

/// Marks field `i` seen: a field seen twice is refused by serde_json ("duplicate field").
fn once<const N: usize>(seen: &mut [bool; N], i: usize) -> Read<()> {
    match seen.get_mut(i) {
        Some(seen) if !*seen => {
            *seen = true;
            Ok(())
        }
        _ => Err(Bail),
    }
}

/// An optional string field: null or absent is `None`.
fn optional_string(r: &mut Reader) -> Read<Option<String>> {
    if r.null() {
        return Ok(None);
    }
    r.string().map(|s| Some(s.into_owned()))
}

/// `request.kind` or `request.resource`: an object of three strings, the third named `third`.
fn read_gvk<'a>(r: &mut Reader<'a>, third: &str) -> Read<GroupVersionKind<'a>> {
    let (mut group, mut version, mut kind) = (None, None, None);
    r.object(|r, key| {
        let slot = match key {
            "group" => &mut group,
            "version" => &mut version,
            _ if key == third => &mut kind,
            _ => return r.skip(),
        };
        if slot.is_some() {
            return Err(Bail);
        }
        *slot = Some(r.string()?);
        Ok(())
    })?;
    Ok(GroupVersionKind {
        group: group.ok_or(Bail)?,
        version: version.ok_or(Bail)?,
        kind: kind.ok_or(Bail)?,
    })
}

/// `request`, as [`RequestWire`] reads it.
fn read_request<'a>(r: &mut Reader<'a>) -> Read<RequestWire<'a>> {
    let (mut uid, mut kind, mut resource, mut operation) = (None, None, None, None);
    let (mut sub_resource, mut namespace, mut object, mut dry_run) = (None, None, None, None);
    let mut user_info = false;
    r.object(|r, key| {
        match key {
            "uid" if uid.is_none() => uid = Some(r.string()?.into_owned()),
            "kind" if kind.is_none() => kind = Some(read_gvk(r, "kind")?),
            "resource" if resource.is_none() => {
                let gvr = read_gvk(r, "resource")?;
                resource = Some(GroupVersionResource {
                    group: gvr.group,
                    version: gvr.version,
                    resource: gvr.kind,
                });
            }
            "subResource" if sub_resource.is_none() => sub_resource = Some(optional_string(r)?),
            "namespace" if namespace.is_none() => namespace = Some(optional_string(r)?),
            "operation" if operation.is_none() => {
                operation = Some(match &*r.string()? {
                    "CREATE" => Operation::Create,
                    "UPDATE" => Operation::Update,
                    "DELETE" => Operation::Delete,
                    "CONNECT" => Operation::Connect,
                    _ => return Err(Bail),
                });
            }
            "userInfo" if !user_info => {
                user_info = true;
                r.skip()?;
            }
            "object" if object.is_none() => {
                object = Some(if r.null() {
                    None
                } else {
                    // The pod read here as far as it is read at once; anything the reader is not sure of in it is
                    // read by serde_json from where the pod starts, borrowing from the body as the full parse does.
                    let start = r.clone();
                    Some(inject::pod::read_object(r).or_else(|Bail| {
                        *r = start;
                        r.serde::<Object>()
                    })?)
                });
            }
            "dryRun" if dry_run.is_none() => dry_run = Some(r.bool()?),
            "uid" | "kind" | "resource" | "subResource" | "namespace" | "operation" | "userInfo" | "object"
            | "dryRun" => return Err(Bail),
            _ => r.skip()?,
        }
        Ok(())
    })?;
    if !user_info {
        return Err(Bail);
    }
    Ok(RequestWire {
        uid: uid.ok_or(Bail)?,
        kind: kind.ok_or(Bail)?,
        resource: resource.ok_or(Bail)?,
        sub_resource: sub_resource.flatten(),
        namespace: namespace.flatten(),
        operation: operation.ok_or(Bail)?,
        user_info: IgnoredAny,
        object: object.flatten(),
        dry_run: dry_run.unwrap_or_default(),
    })
}

/// What a reading of the review gives, every field of it, with the pod's metadata and its spec parsed whole.
fn summary(envelope: Envelope) -> String {
    let loose = |l: &Option<Loose>| format!("{:?}", l.as_ref().map(|l| l.0.as_deref()));
    let request = envelope.request.map(|w| {
        let pod = match w.object {
            None => "no object".to_owned(),
            Some(Object::Other) => "not an object".to_owned(),
            Some(Object::Pod(mut pod)) => {
                let draft = pod.spec_as_read();
                let spec = pod.spec(&inject::pod::Depth::Full);
                let spec = spec.map(|s| s.value.to_string()).map_err(|e| e.to_string());
                let owners = format!("{:?}", pod.owners());
                let metadata = pod.whole_metadata().to_string();
                format!("{} {metadata} {owners} {draft} {spec:?}", pod.has_metadata())
            }
        };
        let r = &w.resource;
        format!(
            "{} {:?} {} {} {} {:?} {:?} {:?} {} {pod}",
            w.uid, w.kind, r.group, r.version, r.resource, w.sub_resource, w.namespace, w.operation, w.dry_run
        )
    });
    format!("{} {} {request:?}", loose(&envelope.api_version), loose(&envelope.kind))
}

/// For the tests and the fuzzer: whether [`read_envelope`] read `body` (`Ok(false)`: it bailed, or the body is not
/// UTF-8), and an error naming the difference when it read a body serde_json refuses or reads otherwise. serde_json's
/// recursion limit counts from where it starts (see [`read_envelope`]), so a body the reader read and serde_json
/// refused for that limit alone is compared as serde_json reads it without the limit.
#[doc(hidden)]
pub fn read_as_serde_json_reads(body: &[u8]) -> Result<bool, String> {
    let Ok(text) = std::str::from_utf8(body) else {
        return Ok(false);
    };
    let Ok(read) = read_envelope(text) else {
        return Ok(false);
    };
    let refused = |e: serde_json::Error| format!("read by the reader, refused by serde_json ({e})");
    let full = match serde_json::from_str::<Envelope>(text) {
        Ok(full) => full,
        // serde_json's recursion limit counts from the body here and from the members the reader hands it there:
        // the body is compared without the limit (the reader read it, so it nests some 136 levels at most).
        Err(e) if e.to_string().starts_with("recursion limit exceeded") => {
            let mut de = serde_json::Deserializer::from_str(text);
            de.disable_recursion_limit();
            Envelope::deserialize(&mut de)
                .and_then(|full| de.end().map(|()| full))
                .map_err(refused)?
        }
        Err(e) => return Err(refused(e)),
    };
    let (read, full) = (summary(read), summary(full));
    if read != full {
        return Err(format!("read as {read}, by serde_json as {full}"));
    }
    metadata_as_the_tree_has_it(text)?;
    Ok(true)
}

/// Whether a JSON text has [`RAW_VALUE_KEY`] as a key anywhere (escaped or not).
struct HasRawValueKey(bool);

impl<'de> Deserialize<'de> for HasRawValueKey {
    fn deserialize<D: de::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = HasRawValueKey;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("any value")
            }
            fn visit_bool<E: de::Error>(self, _: bool) -> Result<HasRawValueKey, E> {
                Ok(HasRawValueKey(false))
            }
            fn visit_i64<E: de::Error>(self, _: i64) -> Result<HasRawValueKey, E> {
                Ok(HasRawValueKey(false))
            }
            fn visit_u64<E: de::Error>(self, _: u64) -> Result<HasRawValueKey, E> {
                Ok(HasRawValueKey(false))
            }
            fn visit_f64<E: de::Error>(self, _: f64) -> Result<HasRawValueKey, E> {
                Ok(HasRawValueKey(false))
            }
            fn visit_str<E: de::Error>(self, _: &str) -> Result<HasRawValueKey, E> {
                Ok(HasRawValueKey(false))
            }
            fn visit_unit<E: de::Error>(self) -> Result<HasRawValueKey, E> {
                Ok(HasRawValueKey(false))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<HasRawValueKey, A::Error> {
                let mut found = false;
                while let Some(HasRawValueKey(f)) = seq.next_element()? {
                    found |= f;
                }
                Ok(HasRawValueKey(found))
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<HasRawValueKey, A::Error> {
                let mut found = false;
                while let Some(key) = map.next_key::<Cow<str>>()? {
                    found |= key == RAW_VALUE_KEY;
                    found |= map.next_value::<HasRawValueKey>()?.0;
                }
                Ok(HasRawValueKey(found))
            }
        }
        d.deserialize_any(V)
    }
}

/// For [`read_as_serde_json_reads`]: the pod's metadata as the review's reading gives it, its owners as read and then
/// built back into it, against serde_json's tree of the body (without `managedFields`); an error naming the
/// difference. Bodies serde_json refuses as a tree or as a review are left to the other checks.
fn metadata_as_the_tree_has_it(text: &str) -> Result<(), String> {
    let (Ok(tree), Ok(envelope)) = (
        serde_json::from_str::<Value>(text),
        serde_json::from_str::<Envelope>(text),
    ) else {
        return Ok(());
    };
    let Some(RequestWire {
        object: Some(Object::Pod(mut pod)),
        ..
    }) = envelope.request
    else {
        return Ok(());
    };
    let mut want = tree
        .get("request")
        .and_then(|r| r.get("object"))
        .and_then(|o| o.get("metadata"))
        .cloned()
        .unwrap_or(Value::Null);
    if let Some(members) = want.as_object_mut() {
        members.remove("managedFields");
    }
    if serde_json::from_str::<HasRawValueKey>(text).is_ok_and(|k| k.0) {
        return Ok(());
    }
    let owners = format!("{:?}", pod.owners());
    let want_owners = format!("{:?}", Owner::all_in(&want));
    let metadata = pod.whole_metadata();
    if owners != want_owners {
        return Err(format!(
            "the pod's owners read as {owners}, from serde_json's tree {want_owners}"
        ));
    }
    if *metadata != want {
        return Err(format!(
            "the pod's metadata read as {metadata}, by serde_json as {want}"
        ));
    }
    Ok(())
}

/// The review's kind alone, to tell a body of another kind from a broken review.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Header<'a> {
    #[serde(default, borrow)]
    api_version: Option<Loose<'a>>,
    #[serde(default, borrow)]
    kind: Option<Loose<'a>>,
}

fn loose_text<'v>(v: &'v Option<Loose>) -> &'v str {
    v.as_ref().and_then(|l| l.0.as_deref()).unwrap_or_default()
}

fn of_another_kind(api_version: &Option<Loose>, kind: &Option<Loose>) -> Option<ReviewError> {
    let (api_version, kind) = (loose_text(api_version), loose_text(kind));
    (api_version != "admission.k8s.io/v1" || kind != "AdmissionReview").then(|| ReviewError::WrongKind {
        api_version: api_version.to_owned(),
        kind: kind.to_owned(),
    })
}

/// A parsed review request. The pod is read lazily from the body it borrows: only what the injector reads is
/// ever parsed.
pub struct Request<'a> {
    /// The request's uid, echoed in the response.
    pub uid: String,
    /// What the request is about.
    pub kind: GroupVersionKind<'a>,
    /// The subresource, if any (`status`, `exec`, …).
    pub sub_resource: Option<String>,
    /// The namespace.
    pub namespace: Option<String>,
    /// CREATE, UPDATE, …
    pub operation: Operation,
    /// A dry run: no side effects.
    pub dry_run: bool,
    /// The submitted pod, when the request is about one.
    pub pod: Option<Submitted<'a>>,
}

impl Request<'_> {
    /// The namespace the pod is created in.
    pub fn namespace(&self) -> &str {
        self.namespace.as_deref().unwrap_or_default()
    }

    /// The pod's metadata (null when there is no pod), without its `ownerReferences` while they are kept as read
    /// (see [`Submitted::metadata`]; [`Request::workload`] and [`Request::pod_owner`] read them).
    pub fn pod_metadata(&self) -> &Value {
        self.pod.as_ref().map_or(&Value::Null, Submitted::metadata)
    }

    /// The workload the pod belongs to (for logs and Events).
    pub fn workload(&self) -> Workload {
        let mut w = match &self.pod {
            Some(pod) => Workload::of_pod_owned_by(pod.metadata(), &pod.owners()),
            None => Workload::of_pod(&Value::Null),
        };
        if w.namespace.is_empty() {
            w.namespace = self.namespace().to_owned();
        }
        w
    }

    /// The pod's direct owner, for its Event ([`Owner::direct`]): `apiVersion`, `kind`, `name` and `uid`.
    pub fn pod_owner(&self) -> Option<(String, String, String, String)> {
        let owners = self.pod.as_ref()?.owners();
        Owner::direct(&owners).map(|o| {
            let s = |v: &str| v.to_owned();
            (s(&o.api_version), s(&o.kind), s(&o.name), s(&o.uid))
        })
    }

    /// Whether the review may have side effects such as Events: not for a `dryRun` request (the
    /// MutatingWebhookConfiguration declares `sideEffects: NoneOnDryRun`).
    pub fn publishes_events(&self) -> bool {
        !self.dry_run
    }

    /// Why this request is not about injecting a pod, if it is not: another kind, or a subresource.
    pub fn not_a_pod(&self) -> Option<String> {
        let kind = &self.kind;
        if kind.kind != "Pod" || !kind.group.is_empty() {
            let group = if kind.group.is_empty() { "core" } else { &kind.group };
            return Some(format!(
                "mizzen injects Pods only; this request is for {group}/{}",
                kind.kind
            ));
        }
        match self.sub_resource.as_deref() {
            Some(sub) if !sub.is_empty() => Some(format!("the {sub} subresource of a Pod is not injected")),
            _ => None,
        }
    }

    /// A name for the pod in logs: its name, else its generateName.
    pub fn pod_name(&self) -> String {
        let meta = self.pod_metadata();
        let text = |key: &str| meta.get(key).and_then(Value::as_str);
        text("name")
            .filter(|n| !n.is_empty())
            .or_else(|| text("generateName"))
            .unwrap_or_default()
            .to_owned()
    }
}

/// Parses a request body, in one pass. The request borrows it: the pod is parsed from it only as far as injection
/// may read it.
pub fn parse(body: &[u8]) -> Result<Request<'_>, ReviewError> {
    let malformed = |e: serde_json::Error| ReviewError::Malformed(e.to_string());
    let first = body.iter().find(|b| !b.is_ascii_whitespace());
    if first != Some(&b'{') {
        // JSON, but not an object: of another kind.
        serde_json::from_slice::<IgnoredAny>(body).map_err(malformed)?;
        return Err(ReviewError::WrongKind {
            api_version: String::new(),
            kind: String::new(),
        });
    }
    // Valid UTF-8 checked once for the whole body, rather than string by string while parsing; a body that is not
    // is parsed from bytes, for serde_json to name where.
    // The usual review is read by `json_read` (the review around the pod in about four fifths of the instructions
    // serde_json's derived visitors take), anything it is not sure of by serde_json.
    let envelope = match std::str::from_utf8(body) {
        Ok(text) => read_envelope(text).or_else(|Bail| serde_json::from_str::<Envelope>(text)),
        Err(_) => serde_json::from_slice::<Envelope>(body),
    };
    let envelope = match envelope {
        Ok(envelope) => envelope,
        // A body of another kind is that, whatever its `request`.
        Err(e) => match serde_json::from_slice::<Header>(body) {
            Ok(header) => return Err(of_another_kind(&header.api_version, &header.kind).unwrap_or(malformed(e))),
            Err(_) => return Err(malformed(e)),
        },
    };
    if let Some(wrong) = of_another_kind(&envelope.api_version, &envelope.kind) {
        return Err(wrong);
    }
    let Some(wire) = envelope.request else {
        return Err(ReviewError::MissingRequest);
    };
    let mut request = Request {
        uid: wire.uid,
        kind: wire.kind,
        sub_resource: wire.sub_resource,
        namespace: wire.namespace,
        operation: wire.operation,
        dry_run: wire.dry_run,
        pod: None,
    };
    if request.not_a_pod().is_some() {
        // Answered `allowed` without a patch: the webhook configuration should not send these, but when it does,
        // refusing them would block unrelated API calls.
        return Ok(request);
    }
    match wire.object {
        Some(Object::Pod(pod)) => request.pod = Some(pod),
        None if request.operation != Operation::Create => {}
        None => return Err(ReviewError::Malformed("request.object is missing".into())),
        Some(Object::Other) => return Err(ReviewError::Malformed("request.object is not an object".into())),
    }
    Ok(request)
}

/// The answer to a review.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response<'c> {
    /// The request's uid.
    pub uid: String,
    /// Whether the object is admitted.
    pub allowed: bool,
    /// Why not, when it is not (`status.message`).
    pub message: String,
    /// The JSON patch to apply, as JSON text.
    pub patch: Option<Vec<u8>>,
    /// The injector's compiled texts in `patch`, by offset, whose base64 [`to_body`] copies.
    pub placed: Placements<'c>,
    /// The `injection` audit annotation ([`AUDIT_ANNOTATION`]).
    pub audit: Option<String>,
    /// Warnings for the client (`kubectl` prints them).
    pub warnings: Vec<String>,
}

impl Drop for Response<'_> {
    /// The patch's buffer is kept for the next review on this thread.
    fn drop(&mut self) {
        if let Some(patch) = self.patch.take() {
            inject::patch::give_back(patch);
        }
    }
}

impl Response<'_> {
    fn allow(uid: &str) -> Self {
        Self {
            uid: uid.to_owned(),
            allowed: true,
            message: String::new(),
            patch: None,
            placed: Placements::default(),
            audit: None,
            warnings: Vec::new(),
        }
    }

    fn deny(mut self, message: String) -> Self {
        self.allowed = false;
        self.message = message;
        self
    }
}

/// Answers a parsed request with the revision's compiled configuration. `None` when no MeshInstall serves the
/// revision: [`Outcome::Unserved`], which the webhook answers with an HTTP error instead of the response (a denial
/// naming the revision, for a caller that can only answer with a review).
pub fn respond<'c>(
    request: &mut Request,
    injector: Option<&'c Injector>,
    revision: &str,
    namespace_annotations: Option<&BTreeMap<String, String>>,
) -> (Response<'c>, Outcome) {
    let response = Response::allow(&request.uid);
    if let Some(reason) = request.not_a_pod() {
        return (response, Outcome::Ignored(reason));
    }
    if request.operation != Operation::Create {
        let outcome = Outcome::Ignored(format!("{:?} is not injected; only CREATE is", request.operation));
        return (response, outcome);
    }
    let Some(injector) = injector else {
        let message = format!(
            "mizzen: no MeshInstall serves injection revision {revision:?}; create one, or fix the namespace's \
             istio.io/rev label"
        );
        return (response.deny(message.clone()), Outcome::Unserved(message));
    };
    let namespace = request.namespace.as_deref().unwrap_or_default();
    let Some(pod) = &mut request.pod else {
        let message = "mizzen: the review has no pod".to_owned();
        return (response.deny(message.clone()), Outcome::Denied(message));
    };
    match inject::inject_pod(injector, pod, namespace, namespace_annotations) {
        Ok(PodOutcome::Injected {
            patch,
            placed,
            decision,
        }) => {
            let mut response = response;
            response.patch = Some(patch);
            response.placed = placed;
            // `outcome.reason()`, without a copy of it.
            response.audit = Some(format!("injected: {}", decision.rule));
            let outcome = Outcome::Injected(decision.rule);
            (with_inject_warning(response, pod.metadata()), outcome)
        }
        Ok(PodOutcome::Skipped(decision)) => {
            let mut response = response;
            response.audit = Some(format!("skipped: {}", decision.rule));
            let outcome = Outcome::Skipped(decision.rule);
            (with_inject_warning(response, pod.metadata()), outcome)
        }
        Err(error) => {
            let message = match &error {
                InjectError::InvalidPod(_)
                | InjectError::InvalidAnnotation { .. }
                | InjectError::UnknownTemplate(_)
                | InjectError::Template(_) => {
                    format!("mizzen sidecar injection refused this pod: {error}")
                }
            };
            (response.deny(message.clone()), Outcome::Denied(message))
        }
    }
}

/// Istio's warning about an unrecognised `sidecar.istio.io/inject` value, as an admission warning (kubectl prints
/// it) and in the audit annotation.
fn with_inject_warning<'c>(mut response: Response<'c>, metadata: &Value) -> Response<'c> {
    if let Some(warning) = inject::decision::inject_warning(metadata) {
        if let Some(a) = response.audit.as_mut() {
            a.push_str(&format!(" ({warning})"));
        }
        response.warnings.push(warning);
    }
    response
}

/// The review to send back, written directly. The patch is base64-encoded, as the API server writes `[]byte`
/// fields.
pub fn to_body(response: &Response) -> Vec<u8> {
    let patch_len = response.patch.as_ref().map_or(0, |p| p.len().div_ceil(3) * 4);
    let mut out = Vec::with_capacity(256 + patch_len + response.message.len());
    out.extend_from_slice(br#"{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview","response":{"uid":"#);
    json_text::write_str(&mut out, &response.uid);
    out.extend_from_slice(if response.allowed {
        br#","allowed":true,"status":{"#
    } else {
        br#","allowed":false,"status":{"#
    });
    if !response.message.is_empty() {
        out.extend_from_slice(br#""message":"#);
        json_text::write_str(&mut out, &response.message);
    }
    out.push(b'}');
    if let Some(patch) = &response.patch {
        out.extend_from_slice(br#","patch":""#);
        precoded::encode_append(&mut out, patch, &response.placed.0);
        out.extend_from_slice(br#"","patchType":"JSONPatch""#);
    }
    if let Some(audit) = &response.audit {
        out.extend_from_slice(br#","auditAnnotations":{"#);
        json_text::write_str(&mut out, AUDIT_ANNOTATION);
        out.push(b':');
        json_text::write_str(&mut out, audit);
        out.push(b'}');
    }
    if !response.warnings.is_empty() {
        out.extend_from_slice(br#","warnings":["#);
        for (i, w) in response.warnings.iter().enumerate() {
            if i > 0 {
                out.push(b',');
            }
            json_text::write_str(&mut out, w);
        }
        out.push(b']');
    }
    out.extend_from_slice(b"}}");
    out
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::inject::InjectionConfig;

    fn injector() -> Injector {
        Injector::compile(InjectionConfig::default())
    }

    fn review(pod: Value, namespace: &str) -> Vec<u8> {
        serde_json::to_vec(&json!({
            "apiVersion": "admission.k8s.io/v1",
            "kind": "AdmissionReview",
            "request": {
                "uid": "0df28fbd-5f5f-11e8-bc74-36e6bb280816",
                "kind": {"group": "", "version": "v1", "kind": "Pod"},
                "resource": {"group": "", "version": "v1", "resource": "pods"},
                "namespace": namespace,
                "operation": "CREATE",
                "userInfo": {"username": "system:serviceaccount:kube-system:replicaset-controller"},
                "object": pod,
                "dryRun": false
            }
        }))
        .unwrap()
    }

    fn pod(annotations: Value) -> Value {
        json!({"apiVersion": "v1", "kind": "Pod",
               "metadata": {"generateName": "web-7d4b9-", "labels": {"app": "web"}, "annotations": annotations},
               "spec": {"containers": [{"name": "web", "image": "nginx"}]}})
    }

    #[test]
    fn injected_pods_get_a_patch_and_an_audit_annotation() {
        let body = review(pod(json!({})), "shop");
        let mut req = parse(&body).unwrap();
        let injector = injector();
        let (response, outcome) = respond(&mut req, Some(&injector), "default", None);
        assert!(response.allowed);
        assert!(response.patch.is_some());
        assert_eq!(outcome.result(), "injected");
        assert!(response.audit.as_deref().unwrap().starts_with("injected: "));
        let body: Value = serde_json::from_slice(&to_body(&response)).unwrap();
        assert_eq!(body["response"]["patchType"], "JSONPatch");
        assert!(body["response"]["patch"].is_string(), "the patch must be base64 text");
        assert_eq!(body["response"]["uid"], "0df28fbd-5f5f-11e8-bc74-36e6bb280816");
    }

    #[test]
    fn answers_carry_the_patch_in_base64_with_the_compiled_texts_copied_where_they_are() {
        use base64::Engine as _;
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
        let injector = injector();
        let (mut answered, mut with_placements) = (0, 0);
        let dirs = ["webhook/tests/fixtures", "tests/fuzz/corpus/admission_review"];
        for entry in dirs.iter().flat_map(|d| std::fs::read_dir(root.join(d)).unwrap()) {
            let body = std::fs::read(entry.unwrap().path()).unwrap();
            let Ok(mut request) = parse(&body) else { continue };
            let (response, _) = respond(&mut request, Some(&injector), "default", None);
            let Some(patch) = &response.patch else { continue };
            // Every placement is where its text is, in order, so the answer copies each one's base64.
            let mut end = 0;
            for (at, text) in &response.placed.0 {
                assert!(*at >= end, "placements in order, apart");
                end = at + text.text().len();
                assert_eq!(&patch[*at..end], text.text().as_bytes());
            }
            with_placements += usize::from(!response.placed.0.is_empty());
            let answer: Value = serde_json::from_slice(&to_body(&response)).unwrap();
            let decoded = base64::engine::general_purpose::STANDARD
                .decode(answer["response"]["patch"].as_str().unwrap())
                .unwrap();
            assert_eq!(&decoded, patch);
            answered += 1;
        }
        assert!(
            answered >= 100 && with_placements >= 50,
            "{answered} answered, {with_placements} with placements"
        );
    }

    #[test]
    fn the_workload_and_the_events_owner_come_from_the_owner_references_before_and_after_injection() {
        let owned = |annotations: Value| {
            let mut p = pod(annotations);
            p["metadata"]["ownerReferences"] = json!([
                {"apiVersion": "v1", "kind": "ConfigMap", "name": "keeper", "uid": "u2"},
                {"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "web-7d4b9", "uid": "u1", "controller": true}
            ]);
            p["metadata"]["labels"]["pod-template-hash"] = json!("7d4b9");
            review(p, "shop")
        };
        let mut config = InjectionConfig::default();
        config.user_templates = crate::inject::config::parse_templates(
            &[(
                "mine".to_owned(),
                "metadata:\n  labels:\n    mine: \"yes\"\n".to_owned(),
            )]
            .into(),
        );
        let injector = Injector::compile(config);
        let want_owner = Some(("apps/v1", "ReplicaSet", "web-7d4b9", "u1"));
        // Built-in template only (the owners stay as read), and a user's (they are built into the metadata).
        for annotations in [json!({}), json!({"inject.istio.io/templates": "sidecar,mine"})] {
            let body = owned(annotations.clone());
            let mut req = parse(&body).unwrap();
            for stage in ["parsed", "answered"] {
                if stage == "answered" {
                    let (response, _) = respond(&mut req, Some(&injector), "default", None);
                    assert!(response.patch.is_some(), "{annotations}");
                }
                let w = req.workload();
                let w = (w.kind.as_str(), w.name.as_str(), w.namespace.as_str());
                assert_eq!(w, ("Deployment", "web", "shop"), "{annotations} {stage}");
                let owner = req.pod_owner();
                let owner = owner
                    .as_ref()
                    .map(|(a, k, n, u)| (a.as_str(), k.as_str(), n.as_str(), u.as_str()));
                assert_eq!(owner, want_owner, "{annotations} {stage}");
            }
        }
        // No owners: the pod itself, and no owner for the Event.
        let body = review(pod(json!({})), "shop");
        let req = parse(&body).unwrap();
        assert_eq!(req.pod_owner(), None);
        assert_eq!(req.workload().kind, "Pod");
    }

    #[test]
    fn serde_jsons_private_raw_value_key_is_no_false_difference_and_owners_read_what_the_tree_makes_of_it() {
        let key = RAW_VALUE_KEY;
        // In an owner's member: the tree makes a string of it, and so does the owners' reading.
        let p = json!({"metadata": {"generateName": "web-1-", "labels": {"pod-template-hash": "1"},
                       "ownerReferences": [{"kind": "ReplicaSet", "controller": true, "name": {key: "\"web-1\""}}]},
                       "spec": {"containers": [{"name": "web"}]}});
        let body = review(p, "shop");
        assert!(read_as_serde_json_reads(&body).unwrap());
        let request = parse(&body).unwrap();
        assert_eq!(
            (request.workload().kind.as_str(), request.workload().name.as_str()),
            ("Deployment", "web")
        );
        // As `request.object`, and escaped: the reading and the tree differ there, and the check leaves it alone.
        let text = String::from_utf8(review(json!({"placeholder": 1}), "shop")).unwrap();
        for stand_in in [
            format!(r#"{{"{key}":"{{\"metadata\":{{}}}}"}}"#),
            format!(r#"{{"{}\u0065":"{{\"metadata\":{{}}}}"}}"#, &key[..key.len() - 1]),
        ] {
            let body = text.replace(r#"{"placeholder":1}"#, &stand_in);
            assert!(body.contains("metadata"), "{body}");
            read_as_serde_json_reads(body.as_bytes()).unwrap();
        }
    }

    #[test]
    fn the_audit_annotation_key_is_valid_once_the_api_server_prefixes_the_webhooks_name() {
        // The API server records `<webhook name>/<key>` and drops a key that is not a qualified name with one `/`.
        for webhook in [
            "rev.namespace.sidecar-injector.mizzen.io",
            "object.sidecar-injector.mizzen.io",
        ] {
            let recorded = format!("{webhook}/{AUDIT_ANNOTATION}");
            let parts: Vec<&str> = recorded.split('/').collect();
            assert_eq!(parts.len(), 2, "{recorded}");
            let name = parts[1];
            assert!(!name.is_empty() && name.len() <= 63, "{recorded}");
            assert!(
                name.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b)),
                "{recorded}"
            );
            assert!(name.starts_with(|c: char| c.is_ascii_alphanumeric()), "{recorded}");
            assert!(name.ends_with(|c: char| c.is_ascii_alphanumeric()), "{recorded}");
        }
    }

    #[test]
    fn skipped_pods_are_allowed_without_a_patch() {
        let body = review(pod(json!({"sidecar.istio.io/inject": "false"})), "shop");
        let mut req = parse(&body).unwrap();
        let injector = injector();
        let (response, outcome) = respond(&mut req, Some(&injector), "default", None);
        assert!(response.allowed && response.patch.is_none());
        assert_eq!(outcome, Outcome::Skipped(Rule::PodAnnotation("false".into())));
        assert!(response.audit.as_deref().unwrap().contains("sidecar.istio.io/inject"));
    }

    #[test]
    fn unrecognised_inject_values_are_injected_by_policy_with_istios_warning() {
        let body = review(pod(json!({"sidecar.istio.io/inject": "False"})), "shop");
        let mut req = parse(&body).unwrap();
        let injector = injector();
        let (response, outcome) = respond(&mut req, Some(&injector), "default", None);
        assert_eq!(outcome.result(), "injected");
        let warnings = response.warnings.clone();
        assert_eq!(warnings.len(), 1);
        assert!(warnings[0].starts_with("Invalid value for sidecar.istio.io/inject: \"False\""));
        assert!(
            response
                .audit
                .as_deref()
                .unwrap()
                .contains("Only 'true' and 'false' are accepted")
        );
    }

    #[test]
    fn dry_run_reviews_publish_no_events() {
        let body = review(pod(json!({})), "shop");
        let req = parse(&body).unwrap();
        assert!(req.publishes_events());
        let mut body: Value = serde_json::from_slice(&review(pod(json!({})), "shop")).unwrap();
        body["request"]["dryRun"] = json!(true);
        let body = serde_json::to_vec(&body).unwrap();
        let req = parse(&body).unwrap();
        assert!(!req.publishes_events());
    }

    #[test]
    fn bad_annotations_deny_the_pod_naming_the_annotation() {
        let body = review(
            pod(json!({"traffic.sidecar.istio.io/includeInboundPorts": "bad"})),
            "shop",
        );
        let mut req = parse(&body).unwrap();
        let injector = injector();
        let (response, outcome) = respond(&mut req, Some(&injector), "default", None);
        assert!(!response.allowed);
        assert!(
            response
                .message
                .contains("traffic.sidecar.istio.io/includeInboundPorts")
        );
        assert_eq!(outcome.result(), "denied");
    }

    #[test]
    fn unknown_revisions_are_denied_clearly() {
        let body = review(pod(json!({})), "shop");
        let mut req = parse(&body).unwrap();
        let (response, outcome) = respond(&mut req, None, "canary", None);
        assert!(!response.allowed);
        assert!(response.message.contains("\"canary\""));
        assert_eq!(outcome, Outcome::Unserved(response.message.clone()));
    }

    fn review_of(kind: Value, sub_resource: Option<&str>, object: Value) -> Vec<u8> {
        let mut r: Value = serde_json::from_slice(&review(object, "shop")).unwrap();
        r["request"]["kind"] = kind;
        if let Some(sub) = sub_resource {
            r["request"]["subResource"] = json!(sub);
        }
        serde_json::to_vec(&r).unwrap()
    }

    #[test]
    fn other_kinds_and_subresources_are_allowed_without_a_patch() {
        let deployment = json!({"group": "apps", "version": "v1", "kind": "Deployment"});
        let secret = json!({"group": "", "version": "v1", "kind": "Secret"});
        let pod = json!({"group": "", "version": "v1", "kind": "Pod"});
        for (kind, sub, object) in [
            (
                deployment,
                None,
                json!({"kind": "Deployment", "spec": {"template": {}}}),
            ),
            (secret, None, json!({"kind": "Secret", "data": {"a": "Yg=="}})),
            (pod.clone(), Some("status"), pod_value()),
            (
                pod.clone(),
                Some("exec"),
                json!({"kind": "PodExecOptions", "command": ["sh"]}),
            ),
            (pod, Some("binding"), Value::Null),
        ] {
            let body = review_of(kind.clone(), sub, object);
            let mut req = parse(&body).unwrap();
            let injector = injector();
            let (response, outcome) = respond(&mut req, Some(&injector), "default", None);
            assert!(response.allowed && response.patch.is_none(), "{kind} {sub:?}");
            assert_eq!(outcome.result(), "ignored", "{kind} {sub:?}");
        }
    }

    fn pod_value() -> Value {
        pod(json!({}))
    }

    /// The shapes that panicked before (issue 11): each is now refused with the field or annotation named.
    #[test]
    fn wrong_shaped_pods_and_annotations_are_refused_naming_the_field() {
        let mut cases: Vec<(Value, &str)> = Vec::new();
        for v in [r#"{"x":1}"#, r#"{"name":1}"#, "[1]", "1", r#""s""#, "null"] {
            cases.push((
                pod(json!({"sidecar.istio.io/userVolume": v})),
                "sidecar.istio.io/userVolume",
            ));
            cases.push((
                pod(json!({"sidecar.istio.io/userVolumeMount": v})),
                "sidecar.istio.io/userVolumeMount",
            ));
        }
        for labels in [json!("app=web"), json!([1]), json!(1), json!({"app": 1})] {
            let mut p = pod(json!({}));
            p["metadata"]["labels"] = labels;
            cases.push((p, "metadata.labels"));
        }
        for annotations in [json!("a"), json!([1]), json!(true)] {
            let mut p = pod(json!({}));
            p["metadata"]["annotations"] = annotations;
            cases.push((p, "metadata.annotations"));
        }
        for probe in ["livenessProbe", "readinessProbe", "startupProbe"] {
            for handler in ["httpGet", "tcpSocket", "grpc"] {
                let mut p = pod(json!({}));
                p["spec"]["containers"][0][probe] = json!({ handler: "x" });
                cases.push((p, "spec.containers[0]."));
            }
        }
        let mut p = pod(json!({}));
        p["spec"]["containers"][0]["lifecycle"] = json!({"preStop": {"httpGet": 8080}});
        cases.push((p, "spec.containers[0].lifecycle.preStop.httpGet"));
        let mut p = pod(json!({}));
        p["spec"]["containers"] = json!([{"name": "istio-proxy", "securityContext": "root"}]);
        cases.push((p, "spec.containers[0].securityContext"));
        let mut p = pod(json!({}));
        p["metadata"] = json!("web");
        cases.push((p, "metadata must be an object"));
        for (p, field) in cases {
            let body = review(p.clone(), "shop");
            let mut req = parse(&body).unwrap();
            let injector = injector();
            let (response, outcome) = respond(&mut req, Some(&injector), "default", None);
            assert!(!response.allowed, "{p}");
            assert_eq!(outcome.result(), "denied");
            assert!(response.message.contains(field), "{field}: {}", response.message);
        }
    }

    #[test]
    fn patches_are_standard_base64() {
        use base64::Engine as _;
        // Every byte value, then pseudo-random bytes (a linear congruential generator), at every length and offset:
        // the vector paths, their scalar tails and the padding.
        let mut state = 0x2545_f491_u32;
        let random = std::iter::repeat_with(|| {
            state = state.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
            state.to_be_bytes()[0]
        });
        let bytes: Vec<u8> = (0..=255u8).chain((0..=255u8).rev()).chain(random.take(1024)).collect();
        for n in 0..bytes.len() {
            // Every length, after an output prefix of 0 to 6 bytes (the input starting as far in).
            for skip in 0..7.min(n + 1) {
                let mut out = b"prefix"[..skip].to_vec();
                precoded::encode_append(&mut out, &bytes[skip..n], &[]);
                assert_eq!(&out[..skip], &b"prefix"[..skip]);
                assert_eq!(
                    String::from_utf8(out[skip..].to_vec()).unwrap(),
                    base64::engine::general_purpose::STANDARD.encode(&bytes[skip..n])
                );
            }
        }
    }

    /// Whether the reader read `body`, failing where it read it other than serde_json does.
    fn reads(body: impl AsRef<[u8]>) -> bool {
        read_as_serde_json_reads(body.as_ref())
            .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(body.as_ref())))
    }

    #[test]
    fn the_reader_reads_reviews_as_serde_json_does_and_leaves_it_the_rest() {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
        // The fixtures: every one that is JSON is read by the reader (a review of another kind too).
        let mut read = 0;
        for entry in std::fs::read_dir(root.join("webhook/tests/fixtures")).unwrap() {
            let path = entry.unwrap().path();
            if path.extension().is_some_and(|e| e == "json") {
                let name = path.file_name().unwrap().to_string_lossy().into_owned();
                let expected = name != "malformed.json";
                assert_eq!(reads(std::fs::read(&path).unwrap()), expected, "{name}");
                read += usize::from(expected);
            }
        }
        assert_eq!(read, 10);
        // The fuzzer's seeds, many of them damaged.
        let (mut seeds, mut seeds_read) = (0, 0);
        for entry in std::fs::read_dir(root.join("tests/fuzz/corpus/admission_review")).unwrap() {
            seeds += 1;
            seeds_read += usize::from(reads(std::fs::read(entry.unwrap().path()).unwrap()));
        }
        assert!(
            seeds > 500 && seeds_read > seeds / 4,
            "{seeds_read} of {seeds} seeds read"
        );
        // Fields of other types, repeated, escaped, missing or null, and odd values: whether the reader reads the
        // body (else serde_json decides).
        let body = String::from_utf8(review(pod(json!({"a": "b"})), "shop")).unwrap();
        let edits: &[(&str, &str, bool)] = &[
            (r#""uid":"#, r#""uid":"x","uid":"#, false),
            (r#""uid":"#, r#""\u0075id":"#, false),
            (r#""uid":"#, r#""uidx":"#, false),
            (r#""uid":"#, r#""uid":"a\u0000b","x":"#, true),
            (r#""uid":"#, r#""uid":"\ud83d\ude00","x":"#, false),
            (r#""kind":"AdmissionReview""#, r#""kind":7"#, false),
            (r#""kind":"AdmissionReview""#, r#""kind":1e400"#, false),
            (r#""kind":"AdmissionReview""#, r#""kind":null"#, true),
            (
                r#""kind":"AdmissionReview""#,
                r#""kind":["AdmissionReview",1e400]"#,
                true,
            ),
            (r#""kind":"AdmissionReview""#, r#""kind":"Admissi\u006fnReview""#, true),
            (r#""apiVersion":"#, r#""apiVersion":"v1","apiVersion":"#, false),
            (r#""operation":"CREATE""#, r#""operation":"create""#, false),
            (r#""operation":"CREATE""#, r#""operation":"UPDATE""#, true),
            (r#""operation":"CREATE""#, r#""operation":"CR\u0045ATE""#, true),
            (r#""operation":"CREATE""#, r#""operation":{"CREATE":null}"#, false),
            (r#""namespace":"shop""#, r#""namespace":null"#, true),
            (r#""namespace":"shop""#, r#""namespace":3"#, false),
            (r#""namespace":"shop""#, r#""namespace":"sh\"op""#, true),
            (
                r#""namespace":"shop""#,
                r#""namespace":"shop","subResource":"status""#,
                true,
            ),
            (
                r#""namespace":"shop""#,
                r#""namespace":"shop","subResource":null"#,
                true,
            ),
            (r#""namespace":"shop""#, r#""namespace":"shop","dryRun":true"#, false),
            (
                r#""namespace":"shop""#,
                r#""namespace":"shop","extra":[1,{"a":[-0.5e-3,null,"\\"]}]"#,
                true,
            ),
            (
                r#""namespace":"shop""#,
                r#""namespace":"shop","extra":{"\u0061":1}"#,
                true,
            ),
            (r#""namespace":"shop""#, r#""namespace":"shop","extra":"\ud800""#, false),
            (r#""userInfo":"#, r#""userInfoX":"#, false),
            (r#""userInfo":"#, r#""userInfo":null,"other":"#, true),
            (r#""object":"#, r#""object":null,"x":"#, true),
            (r#""object":"#, r#""object":[1,2],"x":"#, true),
            (r#""object":"#, r#""object":"pod","x":"#, true),
            (r#""object":"#, r#""object":12,"x":"#, true),
            (r#""object":"#, r#""object":12"x":"#, false),
            (r#""object":"#, r#""object":{},"object":"#, false),
            (r#""group":"","#, r#""group":"","group":"","#, false),
            (r#""group":"","#, r#""#, false),
            (r#""group":"","#, r#""group":null,"#, false),
            (r#""group":"","#, r#""group":"","x":{},"#, true),
            (
                r#""kind":"Pod","version":"v1""#,
                r#""kind":"Pod","kind":"Pod","version":"v1""#,
                false,
            ),
            (
                r#""kind":"Pod","version":"v1""#,
                r#""kind":"Deployment","version":"v1""#,
                true,
            ),
            (r#""dryRun":false"#, r#""dryRun":true"#, true),
            (r#""dryRun":false"#, r#""dryRun":false,"dryRun":false"#, false),
            (r#""dryRun":false"#, r#""dryRun":null"#, false),
            (r#""dryRun":false"#, r#""dryRun":0"#, false),
            (r#""request":"#, r#""request":null,"x":"#, true),
            (r#""request":"#, r#""request":[],"x":"#, false),
        ];
        for (from, to, read) in edits {
            assert!(body.contains(from), "{from}");
            let edited = body.replacen(from, to, 1);
            assert_eq!(reads(&edited), *read, "{edited}");
        }
        for (tail, read) in [
            (" ", true),
            ("\n", true),
            ("x", false),
            ("{}", false),
            (",", false),
            ("]", false),
        ] {
            assert_eq!(reads(format!("{body}{tail}")), read, "{tail:?}");
        }
        // Damage at random: bytes dropped, doubled, or replaced by JSON's punctuation and other bytes.
        let mut state = 0x9e37_79b9_7f4a_7c15_u64;
        let mut next = |n: usize| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            usize::try_from(state % n as u64).unwrap()
        };
        let bytes = body.as_bytes();
        let (mut damaged, mut damaged_read) = (0, 0);
        for _ in 0..4000 {
            let mut b = bytes.to_vec();
            for _ in 0..1 + next(2) {
                let at = next(b.len());
                let punct = b"{}[]\":,\\ 0123456789.-+eEtrufalsn\t\n";
                match next(4) {
                    0 => {
                        b.remove(at);
                    }
                    1 => b.insert(at, b[at]),
                    2 => b[at] = punct[next(punct.len())],
                    _ => b.insert(at, punct[next(punct.len())]),
                }
            }
            damaged += 1;
            damaged_read += usize::from(reads(&b));
        }
        // Most damage falls in the pod or in strings and leaves a review both read.
        assert!(
            damaged_read > damaged / 4,
            "{damaged_read} of {damaged} damaged bodies read"
        );
    }

    #[test]
    fn a_pod_the_reader_leaves_midway_is_read_by_serde_json_from_where_it_starts() {
        let p = json!({"metadata": {"name": "p", "labels": {"a": "b"}},
                       "spec": {"containers": [{"name": "web", "image": "nginx", "ports": [{"containerPort": 80}]}],
                                "volumes": [{"name": "v"}], "z": 1}, "status": {}});
        let body = String::from_utf8(review(p.clone(), "shop")).unwrap();
        let pod_text = p.to_string();
        assert!(body.contains(&pod_text));
        // Left in the spec after its lists, in a container, in a kept text of the spec, and after the spec.
        for (from, to) in [
            (r#""z":1"#, r#""\u007a":1"#),
            (r#""image":"nginx""#, r#""im\u0061ge":"nginx""#),
            (r#""z":1"#, r#""z":"\ud83d\ude00""#),
            (r#""status":{}"#, r#""st\u0061tus":{}"#),
        ] {
            let (edited, edited_pod) = (body.replacen(from, to, 1), pod_text.replacen(from, to, 1));
            assert!(edited.contains(&edited_pod), "{from}");
            let mut r = Reader::new(&edited_pod);
            assert!(inject::pod::read_object(&mut r).is_err(), "{edited_pod}");
            // The review is still read here, its pod by serde_json, as the full parse reads it.
            assert!(reads(&edited), "{edited}");
            let request = parse(edited.as_bytes()).unwrap();
            let spec = request.pod.map(|p| p.spec_as_read()).unwrap_or_default();
            assert!(spec.contains("nginx"), "{spec}");
        }
    }

    /// The one known difference: serde_json's recursion limit counts from the member it reads here (the metadata, a
    /// field the reader leaves to it), from the body in the full parse, so a member nested within a few levels of the
    /// limit is read here and refused there. Deeper, both refuse it; shallower, both read it.
    #[test]
    fn the_recursion_limit_counts_from_the_member_serde_json_reads() {
        // serde_json's limit of 128 levels counts from where it starts: the whole body for the full parse, the
        // metadata or a spec field read at once for the reader. So the reader reads a few more levels, and never
        // fewer; either way what is built stays within 128 levels of the member.
        let differ = |pod: Value| -> Vec<usize> {
            (120..=132)
                .filter(|&levels| {
                    let nested = format!("{}1{}", "[".repeat(levels), "]".repeat(levels));
                    let body = String::from_utf8(review(pod.clone(), "shop"))
                        .unwrap()
                        .replace(r#""X""#, &nested);
                    let full = serde_json::from_str::<Envelope>(&body).is_ok();
                    let read = read_envelope(&body).is_ok();
                    assert!(read || !full, "{levels} levels: refused here, read by serde_json");
                    // The fuzzer's comparison reads what the reader read without the limit, and compares it.
                    assert_eq!(read_as_serde_json_reads(body.as_bytes()), Ok(read), "{levels}");
                    read != full
                })
                .collect()
        };
        // serde_json builds up to 127 levels. The review and its request are two, the pod the third, its metadata
        // the fourth: the full parse refuses 124 lists in the metadata, the reader 127.
        assert_eq!(differ(json!({"metadata": {"x": "X"}})), [124, 125, 126]);
        // A container's ports, read at once, are the seventh level (the spec, its list and the item between): the
        // full parse refuses 122 lists there, the reader 128.
        assert_eq!(
            differ(json!({"spec": {"containers": [{"name": "web", "ports": "X"}]}})),
            [122, 123, 124, 125, 126, 127]
        );
    }

    #[test]
    fn bodies_that_are_not_reviews_are_refused() {
        assert!(matches!(parse(b"{not json"), Err(ReviewError::Malformed(_))));
        assert!(matches!(
            parse(br#"{"apiVersion":"v1","kind":"Pod"}"#),
            Err(ReviewError::WrongKind { .. })
        ));
        assert_eq!(
            parse(br#"{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview"}"#).err(),
            Some(ReviewError::MissingRequest)
        );
    }

    #[test]
    fn kinds_and_resources_written_with_escapes_read_as_their_text() {
        let body = String::from_utf8(review(pod(json!({})), "shop")).unwrap();
        let escaped = body
            .replace(r#""kind":"Pod""#, r#""kind":"P\u006fd""#)
            .replace(r#""resource":"pods""#, r#""resource":"p\u006fds""#)
            .replace(r#""version":"v1""#, r#""version":"\u00761""#);
        assert_ne!(escaped, body);
        let request = parse(escaped.as_bytes()).unwrap();
        assert_eq!((&*request.kind.kind, &*request.kind.version), ("Pod", "v1"));
        assert!(
            matches!(request.kind.kind, Cow::Owned(_)),
            "an escaped text cannot be borrowed"
        );
        assert_eq!(request.not_a_pod(), None);
        assert!(request.pod.is_some());
        let plain = parse(body.as_bytes()).unwrap();
        assert!(matches!(plain.kind.kind, Cow::Borrowed("Pod")));
    }

    #[test]
    fn bodies_that_are_not_utf8_are_read_as_serde_json_reads_bytes() {
        // What parsing the bytes says: the error, word for word, or that the review reads.
        let from_bytes = |body: &[u8]| {
            serde_json::from_slice::<Envelope>(body)
                .map(|_| ())
                .map_err(|e| e.to_string())
        };
        let good = review(pod(json!({})), "shop");
        // A byte that is not UTF-8 in a label value the injector reads: refused, naming the place.
        let mut in_label = good.clone();
        let at = in_label.windows(11).position(|w| w == br#""app":"web""#).unwrap();
        in_label[at + 8] = 0xff; // "w\xffb"
        let message = from_bytes(&in_label).unwrap_err();
        assert!(
            message.contains("invalid unicode") && message.contains("column"),
            "{message}"
        );
        assert_eq!(parse(&in_label).err(), Some(ReviewError::Malformed(message)));
        // Outside any string: refused, naming the place.
        let mut outside = good.clone();
        outside.insert(1, 0xfe);
        let message = from_bytes(&outside).unwrap_err();
        assert_eq!(parse(&outside).err(), Some(ReviewError::Malformed(message)));
        // In a string that is skipped, not read (`userInfo`): answered as reading the bytes answers (serde_json
        // 1.0 does not check skipped strings, so the review is read, as before the body was checked as a whole).
        let mut skipped = good.clone();
        let at = skipped
            .windows(23)
            .position(|w| w == br#"system:serviceaccount:k"#)
            .unwrap();
        skipped[at] = 0xc3;
        assert!(std::str::from_utf8(&skipped).is_err());
        match from_bytes(&skipped) {
            Ok(()) => assert!(parse(&skipped).unwrap().pod.is_some()),
            Err(message) => assert_eq!(parse(&skipped).err(), Some(ReviewError::Malformed(message))),
        }
        // The same body in UTF-8 is read.
        assert!(parse(&good).unwrap().pod.is_some());
    }
}
