//! Stage 3 of the pipeline: the fragment merged under the pod ([`fragment_under_pod`]), with Kubernetes' strategic
//! merge of pod JSON ([`strategic`]): maps merge recursively, lists of named things merge by their key, other lists
//! and scalars are replaced by the patch. Merged lists are ordered as the API machinery orders them
//! (`normalizeElementOrder`): items only in the original keep their place relative to the patch's items where both
//! are known to the original, otherwise the patch's items come first.
#![cfg_attr(not(test), deny(clippy::indexing_slicing))]

use std::collections::{HashMap, HashSet};
use std::hash::{Hash, Hasher};

use serde_json::{Map, Value, json};

use super::compile::{COMPILED_VOLUMES, StandIns};
use super::fragment::take_overrides;
use super::template::Fragment;
use super::{SCAN_UP_TO, TEMPLATE_CONTAINERS, at, gojson};

/// The spec with the fragment merged in, and what the metadata stage records about it.
pub struct Merged {
    /// The injected pod's spec (before post-processing); for a pod whose patch is written from the lists (see
    /// `patch::Lists`), only the template's items, post-processed.
    pub spec: Value,
    /// `sidecar.istio.io/status`: the names of what the templates injected.
    pub status: String,
    /// `proxy.istio.io/overrides`: the pod's own declarations of template containers, where the templates put
    /// them, so re-injection can restore them; `None` when the pod has none.
    pub overrides: Option<String>,
    /// Labels the fragment sets where the pod has none.
    pub labels: Vec<(String, String)>,
    /// Annotations the fragment sets.
    pub annotations: Vec<(String, String)>,
    /// Other metadata fields the templates set, one map per template, to merge into the pod's metadata in turn.
    pub metadata_patches: Vec<Map<String, Value>>,
}

fn names(items: &[Value]) -> impl Iterator<Item = &str> {
    items.iter().filter_map(|i| at(i, "name").as_str())
}

/// Which list a pod's own declaration of a template container goes to: where the template puts that name, or,
/// when the templates put it in both (a native sidecar plus a template naming `istio-proxy` under containers), where
/// the pod had it.
fn placement(init: &[Value], containers: &[Value], item: &Value, origin: &'static str) -> &'static str {
    let has = |l: &[Value]| l.iter().any(|c| at(c, "name") == at(item, "name"));
    match (has(init), has(containers)) {
        (true, false) => "initContainers",
        (false, true) => "containers",
        (true, true) => origin,
        (false, false) => "containers",
    }
}

/// `sidecar.istio.io/status`, as Istio's `SidecarInjectionStatus` marshals: its fields in Go's order, an empty
/// list as `null`.
pub fn status(fragment: &Fragment, revision: &str, stand_ins: Option<&StandIns>) -> String {
    fn list<'a>(out: &mut Vec<u8>, field: &str, names: impl Iterator<Item = &'a str>) {
        out.extend_from_slice(field.as_bytes());
        let mut empty = true;
        for name in names {
            out.push(if std::mem::take(&mut empty) { b'[' } else { b',' });
            gojson::write_str(out, name);
        }
        out.extend_from_slice(if empty { b"null," } else { b"]," });
    }
    let mut out = Vec::with_capacity(256);
    list(&mut out, "{\"initContainers\":", names(&fragment.init_containers));
    list(&mut out, "\"containers\":", names(&fragment.containers));
    // The stand-in for the compiled volumes is their names.
    let volumes = names(&fragment.volumes).flat_map(|name| {
        let block = stand_ins.filter(|_| name == COMPILED_VOLUMES);
        let own = block.is_none().then_some(name);
        own.into_iter()
            .chain(block.into_iter().flat_map(StandIns::volume_names))
    });
    list(&mut out, "\"volumes\":", volumes);
    let secrets = fragment.image_pull_secrets.iter().map(String::as_str);
    list(&mut out, "\"imagePullSecrets\":", secrets);
    out.extend_from_slice(b"\"revision\":");
    gojson::write_str(&mut out, revision);
    out.push(b'}');
    // The writer writes UTF-8.
    String::from_utf8(out).unwrap_or_default()
}

/// `proxy.istio.io/overrides`: the overrides by the list the templates put them in, as Go marshals containers.
fn recorded_overrides(fragment: &Fragment, overrides: &[(&'static str, Value)]) -> Option<String> {
    if overrides.is_empty() {
        return None;
    }
    let mut by_field: [(&str, Vec<String>); 2] = [("initContainers", Vec::new()), ("containers", Vec::new())];
    for (origin, o) in overrides {
        let field = placement(&fragment.init_containers, &fragment.containers, o, origin);
        for (f, list) in &mut by_field {
            if *f == field {
                list.push(gojson::container_to_string(o));
            }
        }
    }
    let fields: Vec<String> = by_field
        .iter()
        .filter(|(_, items)| !items.is_empty())
        .map(|(field, items)| format!("\"{field}\":[{}]", items.join(",")))
        .collect();
    Some(format!("{{{}}}", fields.join(",")))
}

/// Which of the lists an empty merge result drops the submitted spec had (an empty list the user wrote stays).
#[derive(Clone, Copy, Debug)]
pub struct OriginalLists {
    init_containers: bool,
    volumes: bool,
}

impl OriginalLists {
    /// Reads them from the spec as submitted.
    pub fn of(spec: &Value) -> Self {
        Self {
            init_containers: spec.get("initContainers").is_some(),
            volumes: spec.get("volumes").is_some(),
        }
    }
}

/// Merges the fragment under the pod: the pod (`spec`, its user containers) is the original and the template the
/// patch, with the pod's own declarations of template containers (`overrides`) moved to where the template puts
/// them; then each of those is merged again over the result so that the user's fields win. (List order follows the
/// API machinery's strategic merge, as Istio's does.) A pod injected before (`submitted`) is merged as submitted.
/// `original` says which lists the spec as submitted had.
pub fn fragment_under_pod(
    fragment: Fragment,
    mut spec: Value,
    mut overrides: Vec<(&'static str, Value)>,
    submitted: Option<Value>,
    original: OriginalLists,
    revision: &str,
    stand_ins: Option<&StandIns>,
) -> Merged {
    // The pod's own containers of any name a template uses are overrides too.
    let extra: Vec<String> = names(&fragment.init_containers)
        .chain(names(&fragment.containers))
        .filter(|n| !TEMPLATE_CONTAINERS.contains(n))
        .map(str::to_owned)
        .collect();
    let template_names: Vec<&str> = TEMPLATE_CONTAINERS
        .iter()
        .copied()
        .chain(extra.iter().map(String::as_str))
        .collect();
    overrides.extend(take_overrides(&mut spec, &template_names));
    let status = status(&fragment, revision, stand_ins);
    let recorded = recorded_overrides(&fragment, &overrides);
    let (mut pod, merged_overrides) = match submitted {
        Some(mut submitted) => {
            let merged = take_overrides(&mut submitted, &template_names);
            (submitted, merged)
        }
        None => (spec, overrides),
    };
    let placed: Vec<(&'static str, Value)> = merged_overrides
        .into_iter()
        .map(|(origin, o)| {
            (
                placement(&fragment.init_containers, &fragment.containers, &o, origin),
                o,
            )
        })
        .collect();

    // The template, as a patch of the pod.
    let Fragment {
        labels,
        annotations,
        init_containers,
        containers,
        volumes,
        image_pull_secrets,
        pod_security_context,
        spec_rest,
        metadata_patches,
    } = fragment;
    let mut base = Map::new();
    base.insert("initContainers".into(), Value::Array(init_containers));
    base.insert("containers".into(), Value::Array(containers));
    base.insert("volumes".into(), Value::Array(volumes));
    if !image_pull_secrets.is_empty() {
        base.insert(
            "imagePullSecrets".into(),
            Value::Array(image_pull_secrets.into_iter().map(|n| json!({"name": n})).collect()),
        );
    }
    if let Some(sc) = pod_security_context {
        base.insert("securityContext".into(), sc);
    }
    base.extend(spec_rest);

    for (field, o) in &placed {
        if let Some(list) = pod
            .as_object_mut()
            .map(|m| m.entry(*field).or_insert_with(|| json!([])))
            .and_then(Value::as_array_mut)
        {
            list.push(o.clone());
        }
    }
    strategic(&mut pod, Value::Object(base));
    for (field, o) in placed {
        let found = pod
            .get_mut(field)
            .and_then(Value::as_array_mut)
            .and_then(|l| l.iter_mut().find(|c| at(c, "name") == at(&o, "name")));
        match found {
            Some(c) => strategic(c, o),
            None => {
                if let Some(list) = pod.get_mut("containers").and_then(Value::as_array_mut) {
                    list.push(o);
                }
            }
        }
    }
    for (field, had) in [
        ("initContainers", original.init_containers),
        ("volumes", original.volumes),
    ] {
        if pod.get(field).and_then(Value::as_array).is_some_and(Vec::is_empty) && !had {
            pod.as_object_mut().map(|m| m.remove(field));
        }
    }
    Merged {
        spec: pod,
        status,
        overrides: recorded,
        labels,
        annotations,
        metadata_patches,
    }
}

/// The merge key of a list field, if the field is merged rather than replaced.
fn merge_key(field: &str) -> Option<&'static str> {
    match field {
        "containers"
        | "initContainers"
        | "ephemeralContainers"
        | "volumes"
        | "imagePullSecrets"
        | "env"
        | "sysctls"
        | "hostAliases" => Some(match field {
            "hostAliases" => "ip",
            _ => "name",
        }),
        "ports" => Some("containerPort"),
        // A pod's metadata, which a user template may set too.
        "ownerReferences" => Some("uid"),
        "volumeMounts" => Some("mountPath"),
        "volumeDevices" => Some("devicePath"),
        _ => None,
    }
}

/// Merges `patch` over `base` (taking the patch's values rather than copying them).
pub fn strategic(base: &mut Value, patch: Value) {
    merge_value(base, patch, "");
}

fn merge_value(base: &mut Value, patch: Value, field: &str) {
    match (base, patch) {
        (Value::Object(b), Value::Object(p)) => {
            for (k, pv) in p {
                if pv.is_null() {
                    b.remove(&k);
                    continue;
                }
                match b.get_mut(&k) {
                    Some(bv) => merge_value(bv, pv, &k),
                    None => {
                        b.insert(k, pv);
                    }
                }
            }
        }
        // Metadata lists a pod has empty: Istio's typed pod leaves them out, so the template's are taken as they are.
        (Value::Array(b), Value::Array(p)) if b.is_empty() && matches!(field, "finalizers" | "ownerReferences") => {
            *b = p;
        }
        (Value::Array(b), Value::Array(p)) if merge_key(field).is_some() => {
            let key = merge_key(field).unwrap_or("name");
            merge_list(b, p, key);
        }
        (Value::Array(b), Value::Array(p)) if field == "finalizers" => union(b, p),
        (b, p) => *b = p,
    }
}

/// Why the API machinery could not merge `metadata`'s lists of these `fields` (`finalizers`, `ownerReferences`)
/// with a template's, if it could not: a finalizer that is not a string, a reference without a string uid.
pub fn unmergeable_metadata(metadata: &Map<String, Value>, fields: &[&str]) -> Option<String> {
    fields.iter().find_map(|&field| match (field, metadata.get(field)) {
        (_, None | Some(Value::Null)) => None,
        ("finalizers", Some(Value::Array(items))) if items.iter().all(Value::is_string) => None,
        ("finalizers", Some(_)) => Some("metadata.finalizers must be a list of strings".to_owned()),
        ("ownerReferences", Some(Value::Array(items))) => items
            .iter()
            .position(|o| !at(o, "uid").is_string())
            .map(|i| format!("metadata.ownerReferences[{i}] has no uid (a string)")),
        ("ownerReferences", Some(_)) => Some("metadata.ownerReferences must be a list".to_owned()),
        _ => None,
    })
}

/// A list of scalars merged as a set, as the API machinery merges `finalizers` (`patchStrategy: merge`): each item
/// once; the patch's items in the patch's order, merged with the base's other items in the base's order as
/// `normalizeElementOrder` does (a base item goes first only when it comes before the patch item in the base).
/// Where the base repeats an item, Go's merge can order the result differently (it deduplicates the base in place,
/// through memory it shares with the list it sorts by); that case is not reproduced.
fn union(base: &mut Vec<Value>, patch: Vec<Value>) {
    let order: Vec<(bool, usize)> = {
        let mut base_first: HashMap<KeyOf, usize> = HashMap::new();
        for (i, v) in base.iter().enumerate() {
            base_first.entry(KeyOf(v)).or_insert(i);
        }
        let mut in_patch = HashSet::new();
        let patch_items: Vec<usize> = (0..patch.len())
            .filter(|&j| patch.get(j).is_some_and(|v| in_patch.insert(KeyOf(v))))
            .collect();
        let base_only: Vec<usize> = base
            .iter()
            .enumerate()
            .filter(|&(i, v)| base_first.get(&KeyOf(v)) == Some(&i) && !in_patch.contains(&KeyOf(v)))
            .map(|(i, _)| i)
            .collect();
        let (mut l, mut r) = (0, 0);
        let mut order = Vec::with_capacity(base_only.len() + patch_items.len());
        loop {
            let take_base = match (base_only.get(l), patch_items.get(r)) {
                (None, None) => break,
                (Some(_), None) => true,
                (None, Some(_)) => false,
                (Some(&i), Some(&j)) => patch
                    .get(j)
                    .and_then(|v| base_first.get(&KeyOf(v)))
                    .is_some_and(|&at| i < at),
            };
            if take_base {
                order.extend(base_only.get(l).map(|&i| (false, i)));
                l += 1;
            } else {
                order.extend(patch_items.get(r).map(|&j| (true, j)));
                r += 1;
            }
        }
        order
    };
    let mut from_base: Vec<Option<Value>> = std::mem::take(base).into_iter().map(Some).collect();
    let mut from_patch: Vec<Option<Value>> = patch.into_iter().map(Some).collect();
    *base = order
        .into_iter()
        .filter_map(|(patched, i)| {
            let items = if patched { &mut from_patch } else { &mut from_base };
            items.get_mut(i).and_then(Option::take)
        })
        .collect();
}

/// A merge key as a hash map key: equal exactly when the values are equal (`==`). Scalars hash by value; lists and
/// maps (keys nobody uses) by their length only, which is consistent with `==` and merely slower.
#[derive(Clone, Copy, PartialEq, Eq)]
struct KeyOf<'a>(&'a Value);

impl Hash for KeyOf<'_> {
    fn hash<H: Hasher>(&self, state: &mut H) {
        std::mem::discriminant(self.0).hash(state);
        match self.0 {
            Value::Null => {}
            Value::Bool(b) => b.hash(state),
            Value::Number(n) => n.hash(state),
            Value::String(s) => s.hash(state),
            Value::Array(a) => a.len().hash(state),
            Value::Object(o) => o.len().hash(state),
        }
    }
}

/// The first position of each merge key seen so far.
enum Firsts<'a> {
    Scan(Vec<(KeyOf<'a>, usize)>),
    Hashed(HashMap<KeyOf<'a>, usize>),
}

impl<'a> Firsts<'a> {
    fn new() -> Self {
        Firsts::Scan(Vec::new())
    }

    fn get(&self, key: &KeyOf) -> Option<usize> {
        match self {
            Firsts::Scan(firsts) => firsts.iter().find(|(k, _)| k == key).map(|&(_, i)| i),
            Firsts::Hashed(firsts) => firsts.get(key).copied(),
        }
    }

    /// Records `i` as the position of `key` unless `key` has one already.
    fn insert_first(&mut self, key: KeyOf<'a>, i: usize) {
        match self {
            Firsts::Scan(firsts) if firsts.iter().any(|(k, _)| *k == key) => {}
            Firsts::Scan(firsts) if firsts.len() < SCAN_UP_TO => firsts.push((key, i)),
            Firsts::Scan(firsts) => {
                let mut hashed: HashMap<KeyOf, usize> = firsts.drain(..).collect();
                hashed.insert(key, i);
                *self = Firsts::Hashed(hashed);
            }
            Firsts::Hashed(firsts) => {
                firsts.entry(key).or_insert(i);
            }
        }
    }
}

/// The first position of every key in `list` (null included: a missing key is null).
fn first_positions<'a>(list: &'a [Value], key: &str) -> Firsts<'a> {
    let mut first = Firsts::new();
    for (i, item) in list.iter().enumerate() {
        first.insert_first(KeyOf(at(item, key)), i);
    }
    first
}

/// Lists short enough to be compared pairwise for [`all_new`]: patch length × (patch + server length) at most this.
const PAIRWISE_UP_TO: usize = 256;

/// Whether every patch item is new: its key is set, no other patch item has it and no server item does. (An
/// injection into a pod it has not seen: the template's containers and volumes are all new.)
fn all_new(server: &[Value], patch: &[Value], key: &str) -> bool {
    if patch.len().saturating_mul(patch.len().saturating_add(server.len())) > PAIRWISE_UP_TO {
        return false;
    }
    patch.iter().enumerate().all(|(j, p)| {
        let k = at(p, key);
        !k.is_null() && !server.iter().any(|s| at(s, key) == k) && !patch.iter().take(j).any(|q| at(q, key) == k)
    })
}

fn merge_list(server: &mut Vec<Value>, patch: Vec<Value>, key: &str) {
    // When every patch item is new, the merged list is the patch items in their order, then the server's: what
    // the general merge below gives (nothing merges; added patch items go before server-only ones).
    if all_new(server, &patch, key) {
        let mut merged = patch;
        merged.append(server);
        *server = merged;
        return;
    }
    // Every search below is a look-up in these indexes of first positions.
    let server_first = first_positions(server, key);
    let patch_first = first_positions(&patch, key);
    // Where each patch item goes: merged into a server item, into an earlier patch item of the same key, or added.
    // (The first match wins, server items first, as when searching the merged list in order.)
    #[derive(Clone, Copy)]
    enum Into {
        Server(usize),
        Patch(usize),
        Added,
    }
    let mut into = Vec::with_capacity(patch.len());
    // The patch items added so far, by key: a later item of the same key merges into the first.
    let mut added_first = Firsts::new();
    for (j, p) in patch.iter().enumerate() {
        let k = at(p, key);
        let target = if k.is_null() {
            Into::Added
        } else if let Some(i) = server_first.get(&KeyOf(k)) {
            Into::Server(i)
        } else if let Some(q) = added_first.get(&KeyOf(k)) {
            Into::Patch(q)
        } else {
            added_first.insert_first(KeyOf(k), j);
            Into::Added
        };
        into.push(target);
    }
    // Per item of the merged list (server items, then added patch items): whether a patch item has its key, the
    // first patch position of its key, and the first server position of its key.
    let rank = |k: &Value| {
        let patch_pos = patch_first.get(&KeyOf(k));
        let in_patch = !k.is_null() && patch_pos.is_some();
        let server_pos = if k.is_null() { None } else { server_first.get(&KeyOf(k)) };
        (in_patch, patch_pos.unwrap_or(usize::MAX), server_pos)
    };
    let mut ranks: Vec<(bool, usize, Option<usize>)> = server.iter().map(|s| rank(at(s, key))).collect();
    for (p, t) in patch.iter().zip(&into) {
        if matches!(t, Into::Added) {
            ranks.push(rank(at(p, key)));
        }
    }
    drop((server_first, patch_first, added_first));
    // Merge or add, in patch order.
    let mut merged: Vec<Option<Value>> = std::mem::take(server).into_iter().map(Some).collect();
    let mut added_at = Vec::with_capacity(patch.len());
    for (p, t) in patch.into_iter().zip(into) {
        let slot = match t {
            Into::Server(i) => Some(i),
            Into::Patch(j) => added_at.get(j).copied().flatten(),
            Into::Added => None,
        };
        match slot.and_then(|i| merged.get_mut(i)).and_then(Option::as_mut) {
            Some(existing) => {
                merge_value(existing, p, "");
                added_at.push(None);
            }
            None => {
                added_at.push(Some(merged.len()));
                merged.push(Some(p));
            }
        }
    }
    // Patch items in patch order, server-only ones in theirs; then mergeSortedSlice(serverOnly, patch): take the
    // server-only item when both are in the original and it comes first there, otherwise the patch item.
    let (mut patch_items, server_only): (Vec<usize>, Vec<usize>) =
        (0..merged.len()).partition(|&i| ranks.get(i).is_some_and(|r| r.0));
    patch_items.sort_by_key(|&i| ranks.get(i).map_or(usize::MAX, |r| r.1));
    let server_pos = |i: &usize| ranks.get(*i).and_then(|r| r.2);
    let (mut l, mut r) = (server_only.into_iter().peekable(), patch_items.into_iter().peekable());
    loop {
        let take_left = match (l.peek(), r.peek()) {
            (None, None) => break,
            (Some(_), None) => true,
            (None, Some(_)) => false,
            (Some(a), Some(b)) => matches!((server_pos(a), server_pos(b)), (Some(x), Some(y)) if x < y),
        };
        let next = if take_left { l.next() } else { r.next() };
        server.extend(next.and_then(|i| merged.get_mut(i)).and_then(Option::take));
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    /// The status annotation as first written: a JSON value written in the order of Istio's struct.
    fn reference_status(fragment: &Fragment, revision: &str) -> String {
        let list = |names: Vec<&str>| if names.is_empty() { Value::Null } else { json!(names) };
        let status = json!({
            "initContainers": list(names(&fragment.init_containers).collect()),
            "containers": list(names(&fragment.containers).collect()),
            "volumes": list(names(&fragment.volumes).collect()),
            "imagePullSecrets": list(fragment.image_pull_secrets.iter().map(String::as_str).collect()),
            "revision": revision,
        });
        // Istio's `SidecarInjectionStatus`, field by field.
        const INJECTION_STATUS: gojson::Shape = gojson::Shape::Struct(&[
            ("initContainers", gojson::Shape::Plain),
            ("containers", gojson::Shape::Plain),
            ("volumes", gojson::Shape::Plain),
            ("imagePullSecrets", gojson::Shape::Plain),
            ("revision", gojson::Shape::Plain),
        ]);
        gojson::to_string(&status, INJECTION_STATUS)
    }

    #[test]
    fn finalizers_merge_as_a_set_and_owner_references_by_uid() {
        let mut base = json!({"finalizers": ["a", "b"], "ownerReferences": [{"uid": "1", "name": "x"}]});
        strategic(
            &mut base,
            json!({"finalizers": ["c", "a"], "ownerReferences": [{"uid": "2"}, {"uid": "1", "controller": true}]}),
        );
        assert_eq!(
            base,
            json!({"finalizers": ["c", "a", "b"],
                   "ownerReferences": [{"uid": "2"}, {"uid": "1", "name": "x", "controller": true}]})
        );
        // The API machinery's order (apimachinery's `mergeSlice` and `normalizeElementOrder`, worked by hand): a
        // base item goes first only when it is before the patch item at hand in the base.
        for (base, patch, want) in [
            (json!(["a"]), json!(["x"]), json!(["x", "a"])),
            (json!(["a", "b", "c"]), json!(["c", "a"]), json!(["b", "c", "a"])),
            (json!(["a", "b"]), json!(["b", "x", "a"]), json!(["b", "x", "a"])),
            (json!(["d", "e"]), json!(["c"]), json!(["c", "d", "e"])),
            (json!(["a", "a"]), json!(["b", "b"]), json!(["b", "a"])),
            (json!([]), json!(["a"]), json!(["a"])),
            (json!(["a"]), json!([]), json!(["a"])),
        ] {
            let mut merged = json!({"finalizers": base.clone()});
            strategic(&mut merged, json!({"finalizers": patch.clone()}));
            assert_eq!(merged["finalizers"], want, "{base} + {patch}");
        }
        // As long as a review allows, in the same order.
        let many: Vec<Value> = (0..25_000).map(|i| json!(format!("f{i}"))).collect();
        let mut base = json!({"finalizers": many});
        strategic(&mut base, json!({"finalizers": ["f1", "new"]}));
        let merged = base["finalizers"].as_array().unwrap();
        assert_eq!(merged.len(), 25_001);
        assert_eq!(
            (&merged[0], &merged[1], &merged[2], &merged[3], &merged[25_000]),
            (
                &json!("f0"),
                &json!("f1"),
                &json!("new"),
                &json!("f2"),
                &json!("f24999")
            )
        );
        // Each item once, however often repeated. (With repeated items in the base the order is not Go's; see
        // `union`.)
        let many: Vec<Value> = (0..50_000).map(|i| json!(format!("f{}", i % 25_000))).collect();
        let mut base = json!({"finalizers": many});
        strategic(&mut base, json!({"finalizers": ["f1", "new"]}));
        let merged = base["finalizers"].as_array().unwrap();
        let distinct: HashSet<&Value> = merged.iter().collect();
        assert_eq!((merged.len(), distinct.len()), (25_001, 25_001));
        assert!(distinct.contains(&json!("new")));
        // A pod's empty list is taken as absent, as Istio's typed pod leaves it out: the template's as it is.
        let mut base = json!({"finalizers": [], "ownerReferences": []});
        strategic(
            &mut base,
            json!({"finalizers": ["x", "x"], "ownerReferences": [{"uid": "1"}, {"uid": "1"}]}),
        );
        assert_eq!(
            base,
            json!({"finalizers": ["x", "x"], "ownerReferences": [{"uid": "1"}, {"uid": "1"}]})
        );
    }

    #[test]
    fn status_is_written_as_istio_marshals_it() {
        let named = |names: &[&str]| -> Vec<Value> { names.iter().map(|n| json!({"name": n})).collect() };
        let fragment = |init: &[&str], containers: &[&str], volumes: &[&str], secrets: &[&str]| Fragment {
            labels: Vec::new(),
            annotations: Vec::new(),
            init_containers: named(init),
            containers: named(containers),
            volumes: named(volumes),
            image_pull_secrets: secrets.iter().map(|s| (*s).to_owned()).collect(),
            pod_security_context: None,
            spec_rest: Map::new(),
            metadata_patches: Vec::new(),
        };
        let cases = [
            (fragment(&["istio-init", "istio-proxy"], &[], &["a", "b"], &[]), ""),
            (fragment(&[], &["istio-proxy"], &["x\"/\\é\u{1}"], &["reg"]), "canary"),
            (fragment(&[], &[], &[], &[]), "rev\"q"),
        ];
        for (f, revision) in &cases {
            assert_eq!(status(f, revision, None), reference_status(f, revision));
        }
        assert_eq!(
            status(&cases[0].0, "", None),
            r#"{"initContainers":["istio-init","istio-proxy"],"containers":null,"volumes":["a","b"],"imagePullSecrets":null,"revision":""}"#
        );
    }

    /// Lists longer than [`SCAN_UP_TO`] switch from scans to a hash map part way; positions, duplicates and order
    /// come out as for short lists.
    #[test]
    fn long_lists_merge_as_short_ones_do() {
        let mut server: Vec<Value> = (0..40).map(|i| json!({"name": format!("v{i}")})).collect();
        // A later item with the key of an earlier one: the first keeps the key's position.
        server.push(json!({"name": "v30", "dup": true}));
        let mut base = json!({ "volumes": server });
        let patch = json!({"volumes": [
            {"name": "v30", "a": 1},
            {"name": "v35", "b": 2},
            {"name": "new"},
            {"name": "new", "c": 3}
        ]});
        strategic(&mut base, patch);
        // Items of both keep the original's order around them; the added item follows the last patch item the
        // original knows, and a second patch item of the same key merges into the first.
        let mut want: Vec<Value> = (0..30).map(|i| json!({"name": format!("v{i}")})).collect();
        want.push(json!({"name": "v30", "a": 1}));
        want.push(json!({"name": "v30", "dup": true}));
        want.extend((31..35).map(|i| json!({"name": format!("v{i}")})));
        want.push(json!({"name": "v35", "b": 2}));
        want.push(json!({"name": "new", "c": 3}));
        want.extend((36..40).map(|i| json!({"name": format!("v{i}")})));
        assert_eq!(base, json!({ "volumes": want }));
    }

    #[test]
    fn containers_merge_by_name_and_env_by_name() {
        let mut base = json!({"containers": [{"name": "istio-proxy", "image": "a", "env": [{"name": "A", "value": "1"}],
            "resources": {"limits": {"cpu": "2", "memory": "1Gi"}}}]});
        let patch = json!({"containers": [{"name": "hello"}, {"name": "istio-proxy", "env": [{"name": "B", "value": "2"}],
            "resources": {"limits": {"cpu": "3"}}, "args": ["x"]}]});
        strategic(&mut base, patch);
        assert_eq!(
            base,
            json!({"containers": [
                {"name": "hello"},
                {"name": "istio-proxy", "image": "a", "env": [{"name": "B", "value": "2"}, {"name": "A", "value": "1"}],
                 "resources": {"limits": {"cpu": "3", "memory": "1Gi"}}, "args": ["x"]}
            ]})
        );
    }

    #[test]
    fn new_patch_items_go_before_items_only_in_the_original() {
        // As kubectl would: the template's volumes (patch) before the pod's own (original only).
        let mut pod = json!({"volumes": [{"name": "certs"}]});
        strategic(&mut pod, json!({"volumes": [{"name": "a"}, {"name": "b"}]}));
        assert_eq!(
            pod,
            json!({"volumes": [{"name": "a"}, {"name": "b"}, {"name": "certs"}]})
        );
    }

    #[test]
    fn original_only_items_keep_their_place_among_known_items() {
        let mut env = json!({"env": [{"name": "A"}, {"name": "X"}, {"name": "B"}, {"name": "C"}]});
        strategic(&mut env, json!({"env": [{"name": "X"}, {"name": "B"}, {"name": "N"}]}));
        assert_eq!(
            env,
            json!({"env": [{"name": "A"}, {"name": "X"}, {"name": "B"}, {"name": "N"}, {"name": "C"}]})
        );
    }

    /// The list merge as first written (cloning keys, searching the merged list), kept as the reference.
    fn reference_merge_list(server: &mut Vec<Value>, patch: &[Value], key: &str) {
        let server_order: Vec<Value> = server.iter().map(|i| i[key].clone()).collect();
        let position = |k: &Value| server_order.iter().position(|s| !k.is_null() && s == k);
        let mut merged = std::mem::take(server);
        for item in patch {
            match merged.iter_mut().find(|e| !item[key].is_null() && e[key] == item[key]) {
                Some(existing) => merge_value(existing, item.clone(), ""),
                None => merged.push(item.clone()),
            }
        }
        let in_patch = |i: &Value| patch.iter().any(|p| !p[key].is_null() && p[key] == i[key]);
        let (mut patch_items, server_only): (Vec<Value>, Vec<Value>) = merged.into_iter().partition(|i| in_patch(i));
        patch_items.sort_by_key(|i| patch.iter().position(|p| p[key] == i[key]).unwrap_or(usize::MAX));
        let (mut l, mut r) = (server_only.into_iter().peekable(), patch_items.into_iter().peekable());
        loop {
            let take_left = match (l.peek(), r.peek()) {
                (None, None) => break,
                (Some(_), None) => true,
                (None, Some(_)) => false,
                (Some(a), Some(b)) => matches!((position(&a[key]), position(&b[key])), (Some(x), Some(y)) if x < y),
            };
            let next = if take_left { l.next() } else { r.next() };
            server.extend(next);
        }
    }

    #[test]
    fn list_merge_orders_as_the_reference_does() {
        // Lists of up to 6 items from 4 names, some repeated, some items without a name, each tagged so that
        // which one went where shows.
        let mut random = crate::test_support::xorshift(0x2545_f491_4f6c_dd1d);
        let mut next = move |n: u64| random() % n;
        let mut all_new_cases = 0;
        for case in 0..5000 {
            let mut list = |tag: &str| -> Vec<Value> {
                (0..next(7))
                    .map(|i| match next(5) {
                        4 => json!({"tag": format!("{tag}{i}")}),
                        n => json!({"name": format!("n{n}"), "tag": format!("{tag}{i}"), tag: i}),
                    })
                    .collect()
            };
            let (server, patch) = (list("s"), list("p"));
            let mut want = server.clone();
            reference_merge_list(&mut want, &patch, "name");
            let mut got = server.clone();
            // Counted where the shortcut does more than return the server's list.
            all_new_cases += usize::from(!server.is_empty() && !patch.is_empty() && all_new(&server, &patch, "name"));
            merge_list(&mut got, patch.clone(), "name");
            assert_eq!(got, want, "case {case}: {server:?} <- {patch:?}");
        }
        // Both the shortcut for all-new patch items and the general merge were compared.
        assert!(
            (100..4900).contains(&all_new_cases),
            "{all_new_cases} of 5000 cases all new, both lists non-empty"
        );
    }

    #[test]
    fn lists_of_50000_items_merge_whole_and_in_order() {
        // As large as a 3 MiB review allows: every look-up is indexed, so this is a fraction of a second even in
        // a debug build (searching the lists per item took minutes).
        const N: usize = 50_000;
        let volumes: Vec<Value> = (0..N)
            .map(|i| json!({"name": format!("v{i}"), "emptyDir": {}}))
            .collect();
        let env: Vec<Value> = (0..N).map(|i| json!({"name": format!("E{i}"), "value": "1"})).collect();
        let mut pod = json!({"volumes": volumes, "containers": [{"name": "app", "env": env}]});
        let patch = json!({
            "volumes": [{"name": "a"}, {"name": "b"}, {"name": "v25000", "secret": {}}, {"name": "c"}, {"name": "a", "x": 1}],
            "containers": [{"name": "app", "env": [{"name": "E7", "value": "2"}, {"name": "NEW", "value": "3"}]}],
        });
        strategic(&mut pod, patch);

        let names: Vec<&str> = pod["volumes"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v["name"].as_str().unwrap())
            .collect();
        let mut want: Vec<String> = vec!["a".into(), "b".into()];
        want.extend((0..=25_000).map(|i| format!("v{i}")));
        want.push("c".into());
        want.extend((25_001..N).map(|i| format!("v{i}")));
        assert_eq!(names, want);
        assert_eq!(
            pod["volumes"][0],
            json!({"name": "a", "x": 1}),
            "a repeated patch item merges into the first"
        );
        assert_eq!(
            pod["volumes"][25_002],
            json!({"name": "v25000", "emptyDir": {}, "secret": {}})
        );

        let env = pod["containers"][0]["env"].as_array().unwrap();
        assert_eq!(env.len(), N + 1);
        assert_eq!(env[7], json!({"name": "E7", "value": "2"}));
        assert_eq!(env[8], json!({"name": "NEW", "value": "3"}));
        assert_eq!(
            (&env[0]["name"], &env[N]["name"]),
            (&json!("E0"), &json!(format!("E{}", N - 1)))
        );
    }

    #[test]
    fn plain_lists_are_replaced() {
        let mut base = json!({"args": ["a", "b"]});
        strategic(&mut base, json!({"args": ["c"]}));
        assert_eq!(base, json!({"args": ["c"]}));
    }
}
