//! Stage 5 of the pipeline (the webhook's): the RFC 6902 JSON patch from the submitted pod to the injected one,
//! written directly as JSON text. Labels and annotations are patched key by key; the lists injection adds to
//! (containers, init containers, volumes, image pull secrets) item by item, matched by name, so an item the pod
//! already had is patched only in the fields that changed (a rewritten probe) and the new ones are added where
//! they go; other spec fields are replaced when they changed. Nothing else of the pod appears in the patch, and
//! nothing is copied to produce it. Paths escape `~` and `/` (`sidecar.istio.io~1status`); a parent is added before
//! its children. For a pod whose injection changes only its lists ([`Lists`]), the spec's operations are written
//! from those changes and the pod as parsed ([`InjectedSpec::Lists`]), the same operations in the same order.
#![cfg_attr(not(test), deny(clippy::indexing_slicing))]

use serde_json::{Map, Value};

use crate::json_text;
use crate::precoded::{Placed, Placements, Precoded};

use super::SCAN_UP_TO;
use super::compile::{COMPILED_VOLUMES, StandIns, Written, place};
use super::overlay::{Changes, Overlay};
use super::pod::{SPEC_FIELDS, Spec};
use super::template::Fragment;

/// The injected pod's metadata, as [`build`] gets it.
#[derive(Clone, Copy, Debug)]
pub enum Metadata<'v, 'a> {
    /// All of it.
    Whole(&'v Value),
    /// Only its `labels` and `annotations`: the rest is the submitted pod's, unchanged.
    LabelsAndAnnotations(&'v Value),
    /// Only the changes to the submitted pod's `labels` and `annotations`, over the metadata they were made over,
    /// which must be `old_metadata` itself (the same object, not a copy; nothing else of it changes).
    Changes(&'v Changes<'a>),
}

/// Why no patch was written.
#[derive(Debug, thiserror::Error)]
pub enum PatchError {
    /// The injection changed a part of the pod that was not parsed, or a stand-in for a compiled item, or changes to
    /// the labels and annotations came over other metadata than the pod's (none happens when the conditions for them
    /// hold): the pod must be injected again, parsed whole and with its items and metadata as values.
    #[error("the injection changed a part of the pod that was not parsed or compiled, or metadata not the pod's")]
    Fallback,
    /// The injected metadata holds a field other than labels and annotations where it was to hold only those: the
    /// injection changed what the patch would leave out (a defect of mizzen's, refused rather than lost).
    #[error("internal error: the injection changed metadata.{0}, which the patch leaves as the pod has it")]
    MetadataOutOfScope(String),
}

/// The injected spec, as `inject::run` gives it and [`build`] takes it.
pub enum InjectedSpec {
    /// The whole spec.
    Whole(Value),
    /// Only what injection changes in the lists (see [`Lists`]).
    Lists(Lists),
}

/// What injection changes in the lists of a pod seen the first time that takes the compiled parts whole and
/// declares none of the templates' items ([`Lists::fit`]): the template's items (stand-ins), the pod's containers
/// whose handlers were rewritten, and the stand-in for the compiled volumes. Everything else of the spec is the
/// pod's, unchanged, so the patch is written from these and the pod as parsed: no merged pod, no copy of the spec,
/// no diff of it. It is the patch [`build`] writes from the whole injected spec, byte for byte (the conformance
/// tests and `inject::tests` compare the two).
pub struct Lists {
    /// `initContainers` (the pod has none) and `containers` of the template's items only, in their final order.
    pub items: Value,
    /// Per container of the pod, by index: its probes and hooks that were rewritten, in key order (none past the
    /// end), each with the JSON text of what it became.
    pub rewritten: Vec<super::probes::Rewritten>,
    /// The stand-in for the compiled volumes, placed before the pod's own (as the strategic merge places them).
    pub volumes: Option<Value>,
    /// Whether the proxy, when a container, goes before the pod's containers (holding the application), not after.
    pub proxy_first: bool,
}

/// Whether each of a list's items is an object with a name of its own: a string, no two alike, none `reserved`.
fn named_apart(list: &[Value], reserved: &[&str]) -> bool {
    // A pod's few items are compared pairwise, with no set allocated and hashed; many go through a set.
    if list.len() <= SCAN_UP_TO {
        return list.iter().enumerate().all(|(i, item)| {
            name(item)
                .is_some_and(|n| !reserved.contains(&n) && list.iter().take(i).all(|earlier| name(earlier) != Some(n)))
        });
    }
    let mut seen = std::collections::HashSet::with_capacity(list.len());
    list.iter()
        .all(|item| name(item).is_some_and(|n| !reserved.contains(&n) && seen.insert(n)))
}

impl Lists {
    /// Whether the lists are all that injecting this pod changes in its spec: the fragment is the compiled
    /// template's stand-ins with nothing else (at most one container, the proxy; no image pull secrets, pod
    /// security context, other spec or metadata fields, or volume besides the compiled ones), and the pod has no
    /// init containers and lists of containers and volumes whose items have distinct names of their own (of
    /// containers, none a template container's), so that the strategic merge only places the template's items
    /// before them (`merge::fragment_under_pod`) and the post-processing moves only the proxy.
    pub fn fit(fragment: &Fragment, spec: &Value) -> bool {
        let Some(spec) = spec.as_object() else {
            return false;
        };
        let stand_in = |item: &Value| {
            item.get("name")
                .and_then(Value::as_str)
                .is_some_and(|n| super::TEMPLATE_CONTAINERS.contains(&n))
        };
        let block = |item: &Value| {
            item.as_object()
                .is_some_and(|m| m.len() == 1 && m.get("name").and_then(Value::as_str) == Some(COMPILED_VOLUMES))
        };
        fragment.image_pull_secrets.is_empty()
            && fragment.pod_security_context.is_none()
            && fragment.spec_rest.is_empty()
            && fragment.metadata_patches.is_empty()
            && fragment.init_containers.iter().all(stand_in)
            && fragment.containers.len() <= 1
            && fragment
                .containers
                .iter()
                .all(|c| c.get("name").and_then(Value::as_str) == Some(super::PROXY_NAME))
            && fragment.volumes.len() <= 1
            && fragment.volumes.iter().all(block)
            && !spec.contains_key("initContainers")
            && spec
                .get("containers")
                .and_then(Value::as_array)
                .is_some_and(|c| named_apart(c, super::TEMPLATE_CONTAINERS))
            && spec
                .get("volumes")
                .is_none_or(|v| v.as_array().is_some_and(|v| named_apart(v, &[])))
    }
}

/// Lists whose items are matched by name.
const KEYED_LISTS: &[&str] = &["containers", "initContainers", "volumes", "imagePullSecrets"];

struct Writer<'s, 'c> {
    out: Vec<u8>,
    path: String,
    stand_ins: Option<&'s StandIns<'c>>,
    /// Where compiled texts went in `out`.
    placed: Vec<Placed<'c>>,
}

/// A JSON patch as written, with where compiled texts went in it, for the answer to copy their base64
/// ([`crate::precoded::encode_append`]).
#[derive(Debug)]
pub struct Patch<'c> {
    /// The patch, as JSON text.
    pub bytes: Vec<u8>,
    /// Compiled texts in `bytes`, by offset.
    pub placed: Placements<'c>,
}

impl<'c> Writer<'_, 'c> {
    /// Runs `f` with `segment` appended to the path (escaped as a JSON pointer token).
    fn at<R>(&mut self, segment: &str, f: impl FnOnce(&mut Self) -> R) -> R {
        let len = self.path.len();
        self.path.push('/');
        // Copied a run at a time between the characters escaped (label and annotation keys have a `/` or two);
        // both are ASCII, so each run is on character boundaries.
        let mut start = 0;
        for (i, byte) in segment.bytes().enumerate() {
            let escaped = match byte {
                b'~' => "~0",
                b'/' => "~1",
                _ => continue,
            };
            self.path.push_str(segment.get(start..i).unwrap_or_default());
            self.path.push_str(escaped);
            start = i + 1;
        }
        self.path.push_str(segment.get(start..).unwrap_or_default());
        let r = f(self);
        self.path.truncate(len);
        r
    }

    fn at_index<R>(&mut self, index: usize, f: impl FnOnce(&mut Self) -> R) -> R {
        let len = self.path.len();
        self.path.push('/');
        push_decimal(&mut self.path, index);
        let r = f(self);
        self.path.truncate(len);
        r
    }

    fn op(&mut self, op: &str, value: Option<&Value>) -> Result<(), PatchError> {
        self.op_with(op, |w| match value {
            Some(value) => {
                w.out.extend_from_slice(b",\"value\":");
                w.value(value);
                Ok(())
            }
            None => Ok(()),
        })
    }

    /// Writes `v` as [`json_text::write_value`] does. With stand-ins, any string in it equal to the status
    /// annotation of a pod that takes the lists (the annotation's value, alone or in the annotations added whole)
    /// is written from the JSON they keep of it: the same bytes, not escaped again per pod.
    fn value(&mut self, v: &Value) {
        match self.stand_ins {
            Some(s) => json_text::write_value_knowing(&mut self.out, v, s.lists_status()),
            None => json_text::write_value(&mut self.out, v),
        }
    }

    /// The `value` member of a string, written as [`Writer::value`] writes it.
    fn value_str(&mut self, v: &str) -> Result<(), PatchError> {
        self.out.extend_from_slice(b",\"value\":");
        self.string(v);
        Ok(())
    }

    fn string(&mut self, v: &str) {
        match self.stand_ins.map(StandIns::lists_status) {
            Some(status) => json_text::write_str_knowing(&mut self.out, v, status),
            None => json_text::write_str(&mut self.out, v),
        }
    }

    /// The changed map of `overlay` as an object, as [`Writer::value`] writes it.
    fn string_map(&mut self, overlay: &Overlay) {
        self.out.push(b'{');
        for (i, (k, v)) in overlay.entries().enumerate() {
            if i > 0 {
                self.out.push(b',');
            }
            json_text::write_str(&mut self.out, k);
            self.out.push(b':');
            self.string(v);
        }
        self.out.push(b'}');
    }

    /// An operation whose `value` member (if any) `value` writes.
    fn op_with(&mut self, op: &str, value: impl FnOnce(&mut Self) -> Result<(), PatchError>) -> Result<(), PatchError> {
        self.out.push(if self.out.is_empty() { b'[' } else { b',' });
        self.out.extend_from_slice(b"{\"op\":\"");
        self.out.extend_from_slice(op.as_bytes());
        self.out.extend_from_slice(b"\",\"path\":");
        json_text::write_str(&mut self.out, &self.path);
        value(self)?;
        self.out.push(b'}');
        Ok(())
    }

    /// An item of the injected pod's `list`: from the compiled text when it stands in for a compiled one.
    fn item(&mut self, list: &str, item: &Value) -> Result<(), PatchError> {
        if let Some(stand_ins) = self.stand_ins {
            match stand_ins.write(&mut self.out, &mut self.placed, list, item) {
                Written::Yes => return Ok(()),
                Written::Changed => return Err(PatchError::Fallback),
                Written::NotAStandIn => {}
            }
        }
        json_text::write_value(&mut self.out, item);
        Ok(())
    }

    /// `add` of a whole item at the current path.
    fn add_item(&mut self, list: &str, item: &Value) -> Result<(), PatchError> {
        self.op_with("add", |w| {
            w.out.extend_from_slice(b",\"value\":");
            w.item(list, item)
        })
    }

    /// Compiled operations (see [`compiled_volume_ops`]), after the operations written so far.
    fn ops_compiled(&mut self, ops: &'c Precoded) {
        if ops.text().is_empty() {
            return;
        }
        self.out.push(if self.out.is_empty() { b'[' } else { b',' });
        place(&mut self.out, &mut self.placed, ops);
    }

    /// `add` of a compiled item at the current path.
    fn add_compiled(&mut self, text: &'c Precoded) -> Result<(), PatchError> {
        self.op_with("add", |w| {
            w.out.extend_from_slice(b",\"value\":");
            place(&mut w.out, &mut w.placed, text);
            Ok(())
        })
    }

    /// `op` of a value given as JSON text at the current path.
    fn op_text(&mut self, op: &str, text: &[u8]) -> Result<(), PatchError> {
        self.op_with(op, |w| {
            w.out.extend_from_slice(b",\"value\":");
            w.out.extend_from_slice(text);
            Ok(())
        })
    }

    /// `add` of a whole list at the current path.
    fn add_list(&mut self, list: &str, items: &[Value]) -> Result<(), PatchError> {
        self.op_with("add", |w| {
            w.out.extend_from_slice(b",\"value\":[");
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    w.out.push(b',');
                }
                w.item(list, item)?;
            }
            w.out.push(b']');
            Ok(())
        })
    }

    fn finish(mut self) -> Patch<'c> {
        if self.out.is_empty() {
            self.out.push(b'[');
        }
        self.out.push(b']');
        Patch {
            bytes: self.out,
            placed: Placements(self.placed),
        }
    }
}

/// Appends `n` in decimal, as `{n}` formats it.
fn push_decimal(out: &mut String, n: usize) {
    if n >= 10 {
        push_decimal(out, n / 10);
    }
    // n % 10 < 10, so the digit is ASCII.
    out.push(char::from(b'0' + (n % 10) as u8));
}

/// Walks the members of two objects in key order: `f(key, old, new)` for each key in either.
fn members(
    w: &mut Writer,
    old: &Map<String, Value>,
    new: &Map<String, Value>,
    mut f: impl FnMut(&mut Writer, &str, Option<&Value>, Option<&Value>) -> Result<(), PatchError>,
) -> Result<(), PatchError> {
    let (mut a, mut b) = (old.iter().peekable(), new.iter().peekable());
    loop {
        let next = match (a.peek(), b.peek()) {
            (None, None) => return Ok(()),
            (Some((ka, _)), Some((kb, _))) => ka.as_str().cmp(kb.as_str()),
            (Some(_), None) => std::cmp::Ordering::Less,
            (None, Some(_)) => std::cmp::Ordering::Greater,
        };
        match next {
            std::cmp::Ordering::Less => {
                if let Some((k, v)) = a.next() {
                    f(w, k, Some(v), None)?;
                }
            }
            std::cmp::Ordering::Greater => {
                if let Some((k, v)) = b.next() {
                    f(w, k, None, Some(v))?;
                }
            }
            std::cmp::Ordering::Equal => {
                if let (Some((k, va)), Some((_, vb))) = (a.next(), b.next()) {
                    f(w, k, Some(va), Some(vb))?;
                }
            }
        }
    }
}

/// The operation turning `old` into `new` at the current path, whole values only.
fn replace(w: &mut Writer, old: Option<&Value>, new: Option<&Value>) -> Result<(), PatchError> {
    match (old, new) {
        (Some(_), None) => w.op("remove", None),
        (None, Some(n)) => w.op("add", Some(n)),
        (Some(o), Some(n)) if o != n => w.op("replace", Some(n)),
        _ => Ok(()),
    }
}

/// Key by key when both are objects, else whole.
fn map(w: &mut Writer, old: Option<&Value>, new: Option<&Value>) -> Result<(), PatchError> {
    match (old, new) {
        (Some(Value::Object(o)), Some(Value::Object(n))) => {
            members(w, o, n, |w, key, o, n| w.at(key, |w| replace(w, o, n)))
        }
        _ => replace(w, old, new),
    }
}

fn name(item: &Value) -> Option<&str> {
    item.get("name").and_then(Value::as_str)
}

/// A list of named items: items of `old` kept in order where `new` has them (matched by name), the rest removed,
/// the new ones added in place, and kept ones patched field by field. `shallow[i]` marks an old item of which only
/// the fields read at once were parsed ([`Spec::parsed_fields`]): it must be kept, and only those fields may change.
fn list(w: &mut Writer, key: &str, old: &[Value], new: &[Value], shallow: &[bool]) -> Result<(), PatchError> {
    let is_shallow = |i: usize| shallow.get(i).copied().unwrap_or(false);
    let mut kept = vec![false; old.len()];
    let mut source: Vec<Option<usize>> = Vec::with_capacity(new.len());
    let mut floor = 0;
    for item in new {
        let found = name(item).and_then(|n| {
            old.iter()
                .enumerate()
                .skip(floor)
                .find(|(i, o)| !kept.get(*i).copied().unwrap_or(true) && name(o) == Some(n))
                .map(|(i, _)| i)
        });
        if let Some(i) = found {
            if let Some(k) = kept.get_mut(i) {
                *k = true;
            }
            floor = i + 1;
        }
        source.push(found);
    }
    for (i, kept) in kept.iter().enumerate().rev() {
        if !kept {
            if is_shallow(i) {
                return Err(PatchError::Fallback);
            }
            w.at_index(i, |w| w.op("remove", None))?;
        }
    }
    // The index the next item is written at: the stand-in for the compiled volumes is as many items as they are.
    let mut j = 0;
    for (item, source) in new.iter().zip(source) {
        if source.is_none()
            && let Some(block) = w.stand_ins.and_then(|s| s.volume_block(key, item))
        {
            for text in block {
                w.at_index(j, |w| w.add_compiled(text))?;
                j += 1;
            }
            continue;
        }
        match source.and_then(|i| old.get(i).map(|o| (i, o))) {
            Some((i, old_item)) => {
                if let (Some(stand_ins), Some(n)) = (w.stand_ins, name(item))
                    && stand_ins.names(key, n)
                {
                    // A stand-in cannot be merged with the pod's own item.
                    return Err(PatchError::Fallback);
                }
                let parsed = is_shallow(i).then(|| Spec::parsed_fields(key));
                w.at_index(j, |w| item_fields(w, old_item, item, parsed))?
            }
            None => w.at_index(j, |w| w.add_item(key, item))?,
        }
        j += 1;
    }
    Ok(())
}

/// A kept item, field by field; of a shallow item only the `parsed` fields may change.
fn item_fields(w: &mut Writer, old: &Value, new: &Value, parsed: Option<&[&str]>) -> Result<(), PatchError> {
    match (old, new) {
        (Value::Object(o), Value::Object(n)) => members(w, o, n, |w, key, o, n| {
            if parsed.is_some_and(|p| o != n && !p.contains(&key)) {
                return Err(PatchError::Fallback);
            }
            w.at(key, |w| replace(w, o, n))
        }),
        _ if parsed.is_some() => Err(PatchError::Fallback),
        _ => replace(w, Some(old), Some(new)),
    }
}

std::thread_local! {
    /// The buffer of the last patch given back on this thread ([`give_back`]).
    static SPARE: std::cell::Cell<Vec<u8>> = const { std::cell::Cell::new(Vec::new()) };
}

/// A patch's buffer grown beyond this is not kept: what a thread holds between reviews stays small.
const KEEP_UP_TO: usize = 64 * 1024;

/// An empty buffer for a patch: the last one given back on this thread, else a new one of 8 KiB. Reusing it spares
/// the allocator a large request per review, which in glibc also sorts every small chunk freed since the last one.
fn buffer() -> Vec<u8> {
    let mut out = SPARE.take();
    out.clear();
    if out.capacity() == 0 {
        out.reserve(8 * 1024);
    }
    out
}

/// Gives a patch's buffer back for the next patch written on this thread (dropped when larger than 64 KiB).
pub fn give_back(patch: Vec<u8>) {
    if patch.capacity() <= KEEP_UP_TO {
        // A thread being torn down keeps nothing.
        let _ = SPARE.try_with(|spare| spare.set(patch));
    }
}

/// The patch from the submitted pod (`old_metadata`, absent when the pod had none; `old_spec` as parsed) to the
/// injected one, whose stand-ins for compiled items (if any) are written from `stand_ins`.
pub fn build<'c>(
    old_metadata: Option<&Value>,
    new_metadata: Metadata,
    old_spec: &Spec,
    new_spec: &InjectedSpec,
    stand_ins: Option<&StandIns<'c>>,
) -> Result<Patch<'c>, PatchError> {
    let mut w = Writer {
        out: buffer(),
        path: String::with_capacity(64),
        stand_ins,
        placed: if stand_ins.is_some() {
            Vec::with_capacity(16)
        } else {
            Vec::new()
        },
    };
    let (new_metadata, only_labels_and_annotations) = match new_metadata {
        Metadata::Whole(m) => (m, false),
        Metadata::LabelsAndAnnotations(m) => (m, true),
        Metadata::Changes(changes) => {
            w.at("metadata", |w| changes_ops(w, old_metadata, changes))?;
            return spec_ops(w, old_spec, new_spec);
        }
    };
    w.at("metadata", |w| match (old_metadata, new_metadata) {
        (Some(Value::Object(o)), Value::Object(n)) => members(w, o, n, |w, key, o, n| {
            w.at(key, |w| match key {
                "labels" | "annotations" => map(w, o, n),
                // Not in the injected metadata, which holds only the labels and annotations: unchanged.
                _ if only_labels_and_annotations => match n {
                    None => Ok(()),
                    Some(_) => Err(PatchError::MetadataOutOfScope(key.to_owned())),
                },
                _ => replace(w, o, n),
            })
        }),
        // The pod had no metadata: the injected metadata is all it has, whichever it is.
        _ => w.op("add", Some(new_metadata)),
    })?;
    spec_ops(w, old_spec, new_spec)
}

/// The operations of the metadata's [`Changes`], in the order [`build`] writes those of the labels and annotations
/// (`annotations` first; in key order within each). They are over the submitted pod's metadata, an object; with any
/// other `old_metadata` the pod is injected again without changes (`Fallback`: its labels and annotations copied and
/// diffed).
fn changes_ops(w: &mut Writer, old_metadata: Option<&Value>, changes: &Changes) -> Result<(), PatchError> {
    let old = match old_metadata {
        Some(Value::Object(old)) if std::ptr::eq(old, changes.metadata()) => old,
        _ => return Err(PatchError::Fallback),
    };
    for (key, overlay) in [("annotations", &changes.annotations), ("labels", &changes.labels)] {
        w.at(key, |w| match old.get(key) {
            Some(Value::Object(own)) => {
                for (k, change) in overlay.changes() {
                    w.at(k, |w| match (own.get(k), change) {
                        (Some(_), None) => w.op("remove", None),
                        (None, Some(v)) => w.op_with("add", |w| w.value_str(v)),
                        (Some(was), Some(v)) if was.as_str() != Some(v) => w.op_with("replace", |w| w.value_str(v)),
                        _ => Ok(()),
                    })?;
                }
                Ok(())
            }
            // No map, or something else (null): the changed map whole.
            other => w.op_with(if other.is_none() { "add" } else { "replace" }, |w| {
                w.out.extend_from_slice(b",\"value\":");
                w.string_map(overlay);
                Ok(())
            }),
        })?;
    }
    Ok(())
}

/// The spec's operations, after the metadata's, and the patch.
fn spec_ops<'c>(mut w: Writer<'_, 'c>, old_spec: &Spec, new_spec: &InjectedSpec) -> Result<Patch<'c>, PatchError> {
    let new_spec = match new_spec {
        InjectedSpec::Whole(spec) => spec,
        InjectedSpec::Lists(lists) => {
            w.at("spec", |w| lists_ops(w, old_spec, lists))?;
            return Ok(w.finish());
        }
    };
    let (Value::Object(old), Value::Object(new)) = (&old_spec.value, new_spec) else {
        return w
            .at("spec", |w| replace(w, Some(&old_spec.value), Some(new_spec)))
            .map(|()| w.finish());
    };
    w.at("spec", |w| {
        members(w, old, new, |w, key, o, n| {
            if old_spec.shallow && o.is_none() && !SPEC_FIELDS.contains(&key) {
                // A field the submitted pod may have had, unparsed.
                return Err(PatchError::Fallback);
            }
            w.at(key, |w| match (o, n) {
                (Some(Value::Array(o)), Some(Value::Array(n))) if KEYED_LISTS.contains(&key) => {
                    list(w, key, o, n, old_spec.shallow_items(key))
                }
                (None, Some(Value::Array(n))) if KEYED_LISTS.contains(&key) => w.add_list(key, n),
                (Some(_), Some(Value::Array(_))) if KEYED_LISTS.contains(&key) && w.stand_ins.is_some() => {
                    // Replacing a list that was not one: written from the values.
                    Err(PatchError::Fallback)
                }
                _ => replace(w, o, n),
            })
        })
    })?;
    Ok(w.finish())
}

/// The operations of [`Lists`] on the pod's spec, in the order [`build`] writes those of the whole injected spec
/// (its keys in order: `containers`, `initContainers`, `volumes`; no other key changes): [`list`]'s, knowing that
/// every item of the pod is kept in place (distinct names, none a template item's) and the template's are added
/// around them.
fn lists_ops(w: &mut Writer, old_spec: &Spec, lists: &Lists) -> Result<(), PatchError> {
    let template = |key: &str| lists.items.get(key).and_then(Value::as_array).map(Vec::as_slice);
    let containers = old_spec.value.get("containers").and_then(Value::as_array);
    let containers = containers.map(Vec::as_slice).unwrap_or_default();
    // The proxy, unless it is an init container (`fit` allows no other template container).
    let proxy = template("containers").unwrap_or_default();
    w.at("containers", |w| {
        let mut j = 0;
        if lists.proxy_first {
            for item in proxy {
                w.at_index(j, |w| w.add_item("containers", item))?;
                j += 1;
            }
        }
        for i in 0..containers.len() {
            // What `item_fields` writes for the container: a `replace` of each changed field (handlers are parsed
            // fields, and are never removed).
            for (field, new) in lists.rewritten.get(i).into_iter().flatten() {
                w.at_index(j, |w| w.at(field, |w| w.op_text("replace", new)))?;
            }
            j += 1;
        }
        if !lists.proxy_first {
            for item in proxy {
                w.at_index(j, |w| w.add_item("containers", item))?;
                j += 1;
            }
        }
        Ok(())
    })?;
    if let Some(init) = template("initContainers").filter(|i| !i.is_empty()) {
        w.at("initContainers", |w| w.add_list("initContainers", init))?;
    }
    let Some(block) = &lists.volumes else {
        return Ok(());
    };
    w.at("volumes", |w| match old_spec.value.get("volumes") {
        None => w.add_list("volumes", std::slice::from_ref(block)),
        // The compiled volumes added one by one before the pod's own, at 0, 1, …: compiled as one text.
        Some(_) => match w.stand_ins.and_then(|s| s.volume_ops("volumes", block)) {
            Some(ops) if w.path == VOLUMES_PATH => {
                w.ops_compiled(ops);
                Ok(())
            }
            _ => Err(PatchError::Fallback),
        },
    })
}

/// Where [`lists_ops`] adds the compiled volumes.
const VOLUMES_PATH: &str = "/spec/volumes";

/// The operations that add volumes of these texts at the start of a pod's volumes (`add` of each at
/// `/spec/volumes/j`, in order), as the writer writes them, without the separator before the first: what
/// [`lists_ops`] writes for the compiled volumes, compiled once.
pub(crate) fn compiled_volume_ops<'t>(texts: impl IntoIterator<Item = &'t str>) -> String {
    let mut w = Writer {
        out: Vec::new(),
        path: VOLUMES_PATH.to_owned(),
        stand_ins: None,
        placed: Vec::new(),
    };
    for (j, text) in texts.into_iter().enumerate() {
        // Writing text cannot fail.
        let _ = w.at_index(j, |w| w.op_text("add", text.as_bytes()));
    }
    // Without the `[` the first operation starts the writer's text with; the texts are UTF-8.
    String::from_utf8(w.out.get(1..).unwrap_or_default().to_vec()).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn spec(value: Value) -> Spec<'static> {
        let text = serde_json::to_string(&json!({ "spec": value })).unwrap();
        let mut pod = crate::inject::Submitted::from_json(Box::leak(text.into_boxed_str())).unwrap();
        pod.spec(&crate::inject::pod::Depth::Full).unwrap()
    }

    fn shallow(value: Value) -> Spec<'static> {
        let text = serde_json::to_string(&json!({ "spec": value })).unwrap();
        let mut pod = crate::inject::Submitted::from_json(Box::leak(text.into_boxed_str())).unwrap();
        pod.spec(&crate::inject::pod::Depth::Shallow {
            earlier: Vec::new(),
            images: false,
        })
        .unwrap()
    }

    /// The patch from `old` to the injected `new_metadata` and `new_spec`, applied to `old`; and the patch.
    fn applied_to(old: &Value, new_metadata: Metadata, new_spec: &Value) -> Result<(Value, Value), PatchError> {
        let patch = build(
            old.get("metadata"),
            new_metadata,
            &spec(old["spec"].clone()),
            &InjectedSpec::Whole(new_spec.clone()),
            None,
        )?;
        assert!(patch.placed.0.is_empty(), "no compiled text without stand-ins");
        let patch: json_patch::Patch = serde_json::from_slice(&patch.bytes).unwrap();
        let mut pod = old.clone();
        json_patch::patch(&mut pod, &patch).unwrap();
        Ok((pod, serde_json::to_value(patch).unwrap()))
    }

    fn applied(old: &Value, new: &Value) -> (Value, Value) {
        applied_to(old, Metadata::Whole(&new["metadata"]), &new["spec"]).unwrap()
    }

    #[test]
    fn compiled_volume_ops_are_the_adds_at_zero_one_and_on() {
        assert_eq!(
            compiled_volume_ops([r#"{"name":"a"}"#, r#"{"emptyDir":{},"name":"b"}"#]),
            concat!(
                r#"{"op":"add","path":"/spec/volumes/0","value":{"name":"a"}},"#,
                r#"{"op":"add","path":"/spec/volumes/1","value":{"emptyDir":{},"name":"b"}}"#
            )
        );
        assert_eq!(compiled_volume_ops([]), "");
    }

    #[test]
    fn a_buffer_given_back_is_reused_empty_and_a_large_one_is_not_kept() {
        let old = json!({"spec": {"containers": [{"name": "a"}]}});
        let new = json!({"containers": [{"name": "a", "image": "i"}]});
        let write = || {
            build(
                None,
                Metadata::Whole(&json!({})),
                &spec(old["spec"].clone()),
                &InjectedSpec::Whole(new.clone()),
                None,
            )
            .unwrap()
            .bytes
        };
        let first = write();
        // Given back dirty, with more bytes than the next patch has: the next patch is the same bytes.
        let mut dirty = first.clone();
        dirty.extend_from_slice(&[b'x'; 4096]);
        let reused = dirty.as_ptr();
        give_back(dirty);
        let second = write();
        assert_eq!(second, first);
        assert_eq!(second.as_ptr(), reused, "the buffer given back was not reused");
        // One grown beyond 64 KiB is dropped: the next buffer is a new one of 8 KiB.
        give_back(Vec::with_capacity(KEEP_UP_TO + 1));
        let fresh = buffer();
        assert!(fresh.is_empty());
        assert_eq!(fresh.capacity(), 8 * 1024);
    }

    #[test]
    fn indices_are_written_in_decimal() {
        for n in [0, 7, 9, 10, 11, 99, 100, 305, 1_000_000, usize::MAX] {
            let mut out = String::from("/x/");
            push_decimal(&mut out, n);
            assert_eq!(out, format!("/x/{n}"));
        }
    }

    #[test]
    fn items_are_named_apart_when_every_one_has_a_name_of_its_own_outside_the_reserved() {
        // The reference: every item an object with a string name, none reserved, none repeated.
        let reference = |list: &[Value], reserved: &[&str]| {
            let mut seen = std::collections::BTreeSet::new();
            list.iter().all(|item| match item.get("name").and_then(Value::as_str) {
                Some(n) if item.is_object() => !reserved.contains(&n) && seen.insert(n.to_owned()),
                _ => false,
            })
        };
        let reserved = ["istio-proxy"];
        // Lengths on both sides of the pairwise scan's limit, each with a repeat placed anywhere or none.
        for len in [0, 1, 2, 5, SCAN_UP_TO - 1, SCAN_UP_TO, SCAN_UP_TO + 1, 40] {
            let distinct: Vec<Value> = (0..len).map(|i| json!({"name": format!("c{i}")})).collect();
            let mut cases = vec![distinct.clone()];
            for at in 0..len {
                for from in 0..len {
                    if at != from {
                        let mut repeated = distinct.clone();
                        repeated[at] = distinct[from].clone();
                        cases.push(repeated);
                    }
                }
                for odd in [
                    json!({"name": "istio-proxy"}),
                    json!({"image": "x"}),
                    json!({"name": 3}),
                    json!("c"),
                ] {
                    let mut one = distinct.clone();
                    one[at] = odd;
                    cases.push(one);
                }
            }
            for list in &cases {
                assert_eq!(named_apart(list, &reserved), reference(list, &reserved), "{list:?}");
            }
        }
    }

    #[test]
    fn path_segments_escape_tildes_and_slashes_wherever_they_are() {
        for segment in [
            "",
            "a",
            "/",
            "~",
            "~/",
            "/~",
            "a/b~c",
            "//x~~",
            "ü/é~ß",
            "日本/~",
            "x/",
            "~1",
            "service.istio.io/canonical-name",
        ] {
            let mut w = Writer {
                out: Vec::new(),
                path: "/metadata".into(),
                stand_ins: None,
                placed: Vec::new(),
            };
            let inner = w.at(segment, |w| w.path.clone());
            // RFC 6901: `~` first, then `/`.
            let want = format!("/metadata/{}", segment.replace('~', "~0").replace('/', "~1"));
            assert_eq!(inner, want, "{segment:?}");
            assert_eq!(w.path, "/metadata", "the path is restored after {segment:?}");
        }
    }

    #[test]
    fn lists_are_patched_item_by_item_and_fields_field_by_field() {
        let old = json!({"metadata": {"annotations": {"a": "1", "x/y": "2"}},
            "spec": {"containers": [{"name": "a", "image": "1"}, {"name": "b", "image": "2"}, {"name": "c"}],
                     "volumes": [{"name": "v"}], "dnsPolicy": "Default"}});
        let new = json!({"metadata": {"annotations": {"a": "1", "x/y": "3", "n~": "4"}, "labels": {"l": "v"}},
            "spec": {"containers": [{"name": "p"}, {"name": "a", "image": "9"}, {"name": "c"}, {"name": "q"}],
                     "volumes": [{"name": "w"}, {"name": "v"}], "dnsPolicy": "Default"}});
        let (pod, patch) = applied(&old, &new);
        assert_eq!(pod, new);
        let paths: Vec<&str> = patch
            .as_array()
            .unwrap()
            .iter()
            .map(|o| o["path"].as_str().unwrap())
            .collect();
        assert_eq!(
            paths,
            [
                "/metadata/annotations/n~0",
                "/metadata/annotations/x~1y",
                "/metadata/labels",
                "/spec/containers/1",
                "/spec/containers/0",
                "/spec/containers/1/image",
                "/spec/containers/3",
                "/spec/volumes/0"
            ]
        );
    }

    /// Changes to the labels and annotations are written against the metadata they were made over, the pod's own:
    /// over a copy of it (or none) the patch is left to the whole injected metadata.
    #[test]
    fn changes_are_written_only_over_the_metadata_they_were_made_over() {
        use crate::inject::overlay::StringMap as _;
        let old = json!({"metadata": {"labels": {"a": "1", "b": "2"}}, "spec": {"containers": [{"name": "a"}]}});
        let own = old["metadata"].as_object().unwrap();
        let mut changes = Changes::over(own);
        changes.labels.set("b", "3");
        changes.labels.set("c", "4");
        changes.labels.remove_where(|k| k == "a");
        changes.annotations.set("x/y", "z");
        let (pod, patch) = applied_to(&old, Metadata::Changes(&changes), &old["spec"]).unwrap();
        assert_eq!(
            pod["metadata"],
            json!({"labels": {"b": "3", "c": "4"}, "annotations": {"x/y": "z"}})
        );
        assert_eq!(
            patch,
            json!([{"op": "add", "path": "/metadata/annotations", "value": {"x/y": "z"}},
                {"op": "remove", "path": "/metadata/labels/a"},
                {"op": "replace", "path": "/metadata/labels/b", "value": "3"},
                {"op": "add", "path": "/metadata/labels/c", "value": "4"}])
        );
        let copy = old.clone();
        assert!(matches!(
            applied_to(&copy, Metadata::Changes(&changes), &old["spec"]),
            Err(PatchError::Fallback)
        ));
        let bare = json!({"spec": {"containers": [{"name": "a"}]}});
        assert!(matches!(
            applied_to(&bare, Metadata::Changes(&changes), &bare["spec"]),
            Err(PatchError::Fallback)
        ));
    }

    #[test]
    fn metadata_of_only_labels_and_annotations_leaves_the_rest_of_the_pods_alone() {
        let old = json!({"metadata": {"name": "web", "finalizers": ["f"], "labels": {"a": "1", "b": "2"},
                                      "annotations": {"x": "1"}},
                         "spec": {"containers": [{"name": "a"}]}});
        let new_metadata = json!({"labels": {"a": "1", "b": "3", "c": "4"}, "annotations": {}});
        let (pod, _) = applied_to(&old, Metadata::LabelsAndAnnotations(&new_metadata), &old["spec"]).unwrap();
        assert_eq!(
            pod["metadata"],
            json!({"name": "web", "finalizers": ["f"], "labels": {"a": "1", "b": "3", "c": "4"}, "annotations": {}})
        );
        // The same metadata taken whole removes what it does not hold.
        let (pod, _) = applied_to(&old, Metadata::Whole(&new_metadata), &old["spec"]).unwrap();
        assert_eq!(pod["metadata"], new_metadata);
        // A field other than labels and annotations where only those were to be: refused, not left out.
        let stray = json!({"labels": {}, "finalizers": []});
        assert!(matches!(
            applied_to(&old, Metadata::LabelsAndAnnotations(&stray), &old["spec"]),
            Err(PatchError::MetadataOutOfScope(key)) if key == "finalizers"
        ));
        // A pod without metadata gets it whole either way.
        let bare = json!({"spec": {"containers": [{"name": "a"}]}});
        let (pod, _) = applied_to(&bare, Metadata::LabelsAndAnnotations(&new_metadata), &bare["spec"]).unwrap();
        assert_eq!(pod["metadata"], new_metadata);
    }

    #[test]
    fn reordered_items_are_moved_by_removing_and_adding_them() {
        let old = json!({"metadata": {}, "spec": {"containers": [{"name": "a"}, {"name": "b"}, {"name": "c"}]}});
        let new =
            json!({"metadata": {}, "spec": {"containers": [{"name": "c"}, {"name": "a", "x": 1}, {"name": "b"}]}});
        assert_eq!(applied(&old, &new).0, new);
        let old = json!({"spec": {"containers": [{"name": "a"}, {"name": "a"}]}});
        let new = json!({"metadata": {"labels": {}}, "spec": {"containers": [{"name": "a", "y": 1}, {"name": "a"}, {"name": "b"}]}});
        assert_eq!(applied(&old, &new).0, new);
    }

    #[test]
    fn partial_items_may_change_only_in_parsed_fields() {
        let shallow = shallow(
            json!({"containers": [{"name": "web", "image": "nginx", "readinessProbe": {"httpGet": {"port": 80}}}]}),
        );
        assert_eq!(shallow.shallow_items("containers"), &[true]);
        let write = |spec: &Value| {
            build(
                None,
                Metadata::Whole(&json!({})),
                &shallow,
                &InjectedSpec::Whole(spec.clone()),
                None,
            )
        };
        let probe = json!({"containers": [{"name": "web", "readinessProbe": {"httpGet": {"port": 15020}}}]});
        assert!(write(&probe).is_ok());
        let env = json!({"containers": [{"name": "web", "readinessProbe": {"httpGet": {"port": 80}}, "env": []}]});
        assert!(matches!(write(&env), Err(PatchError::Fallback)));
        let dropped = json!({"containers": [{"name": "other"}]});
        assert!(matches!(write(&dropped), Err(PatchError::Fallback)));
        let unparsed =
            json!({"containers": [{"name": "web", "readinessProbe": {"httpGet": {"port": 80}}}], "dnsConfig": {}});
        assert!(matches!(write(&unparsed), Err(PatchError::Fallback)));
    }
}
