//! The maps of strings stage 4 reads and changes (a pod's labels and its annotations), either a copy of the pod's
//! own or an [`Overlay`]: the changes beside the pod's map, which is neither copied nor changed. The webhook takes
//! the overlay for a pod seen the first time whose metadata is an object and changes only in its labels and
//! annotations (no template sets other metadata), and writes its patch from the changes alone ([`Overlay::changes`]);
//! `kube-inject`, re-injection and the rest take copies. The tests compare the webhook's patch byte for byte with
//! the one written by diffing the copies.

use std::borrow::Cow;
use std::collections::BTreeMap;

use serde_json::{Map, Value};

use super::SCAN_UP_TO;

/// A map of strings as stage 4 uses it. Keys are in order (serde_json's map is sorted); a value that is not a
/// string (the shape checks refuse them in a pod's labels and annotations) reads as no string.
pub trait StringMap {
    /// The value of `key`, if it is a string.
    fn get_str(&self, key: &str) -> Option<&str>;
    /// The value of the first key in order that `matches`, if that value is a string.
    fn find_str(&self, matches: impl FnMut(&str) -> bool) -> Option<&str>;
    /// Sets `key` to `value` (as written in the code, or made for the pod).
    fn set(&mut self, key: impl Into<Cow<'static, str>>, value: impl Into<Cow<'static, str>>);
    /// Removes every key that `matches`.
    fn remove_where(&mut self, matches: impl FnMut(&str) -> bool);
}

impl StringMap for Map<String, Value> {
    fn get_str(&self, key: &str) -> Option<&str> {
        self.get(key).and_then(Value::as_str)
    }

    fn find_str(&self, mut matches: impl FnMut(&str) -> bool) -> Option<&str> {
        self.iter().find(|(k, _)| matches(k)).and_then(|(_, v)| v.as_str())
    }

    fn set(&mut self, key: impl Into<Cow<'static, str>>, value: impl Into<Cow<'static, str>>) {
        self.insert(key.into().into_owned(), Value::String(value.into().into_owned()));
    }

    fn remove_where(&mut self, mut matches: impl FnMut(&str) -> bool) {
        self.retain(|k, _| !matches(k));
    }
}

/// What injection changes in a pod's labels and its annotations, over the pod's own.
#[derive(Debug)]
pub struct Changes<'a> {
    metadata: &'a Map<String, Value>,
    // Within the crate only: an overlay over another map must not pass for one over `metadata`'s.
    pub(crate) labels: Overlay<'a>,
    pub(crate) annotations: Overlay<'a>,
}

impl<'a> Changes<'a> {
    /// No changes yet over the labels and annotations of `metadata` (a pod's, an object).
    pub fn over(metadata: &'a Map<String, Value>) -> Self {
        Self {
            metadata,
            labels: Overlay::over(metadata.get("labels")),
            annotations: Overlay::over(metadata.get("annotations")),
        }
    }

    /// The metadata the changes are over.
    pub fn metadata(&self) -> &'a Map<String, Value> {
        self.metadata
    }
}

type Key = Cow<'static, str>;
/// A value set, or `None` for a key removed.
type Change = Option<Cow<'static, str>>;

/// Changes by key, in key order: a sorted list while they are few (a pod's usual handful: no tree allocated), a tree
/// past [`SCAN_UP_TO`], so that many (a template may echo the pod's annotations) cost O(n log n), not O(n²).
#[derive(Debug)]
enum ByKey {
    Few(Vec<(Key, Change)>),
    Many(BTreeMap<Key, Change>),
}

/// Where `key` is in a sorted list of changes, or where it would go.
fn position(few: &[(Key, Change)], key: &str) -> Result<usize, usize> {
    few.binary_search_by(|(k, _)| k.as_ref().cmp(key))
}

impl ByKey {
    fn get(&self, key: &str) -> Option<&Change> {
        match self {
            Self::Few(few) => position(few, key).ok().and_then(|i| few.get(i)).map(|(_, c)| c),
            Self::Many(many) => many.get(key),
        }
    }

    fn put(&mut self, key: Key, change: Change) {
        match self {
            Self::Few(few) => match position(few, &key) {
                Ok(i) => {
                    if let Some((_, c)) = few.get_mut(i) {
                        *c = change;
                    }
                }
                Err(i) if few.len() < SCAN_UP_TO => few.insert(i, (key, change)),
                Err(_) => {
                    let mut many: BTreeMap<Key, Change> = std::mem::take(few).into_iter().collect();
                    many.insert(key, change);
                    *self = Self::Many(many);
                }
            },
            Self::Many(many) => {
                many.insert(key, change);
            }
        }
    }

    fn remove(&mut self, key: &str) {
        match self {
            Self::Few(few) => {
                if let Ok(i) = position(few, key) {
                    few.remove(i);
                }
            }
            Self::Many(many) => {
                many.remove(key);
            }
        }
    }

    fn iter(&self) -> impl Iterator<Item = (&Key, &Change)> {
        let (few, many) = match self {
            Self::Few(few) => (few.as_slice(), None),
            Self::Many(many) => (&[][..], Some(many)),
        };
        few.iter().map(|(k, c)| (k, c)).chain(many.into_iter().flatten())
    }
}

/// A pod's map of strings (labels or annotations) with changes over it: reads see the changes, and the pod's map
/// stays as it was submitted.
#[derive(Debug)]
pub struct Overlay<'a> {
    /// The pod's own map; `None` when it has none (absent, or null).
    base: Option<&'a Map<String, Value>>,
    /// The changes, each key once. A key set to its value in `base` is kept here too (it writes no operation).
    changes: ByKey,
}

impl<'a> Overlay<'a> {
    /// No changes over `base` (a pod's labels or annotations: an object, or anything else for none).
    pub fn over(base: Option<&'a Value>) -> Self {
        Self {
            base: base.and_then(Value::as_object),
            changes: ByKey::Few(Vec::with_capacity(8)),
        }
    }

    /// The changes in key order: `Some` a value set, `None` a key of the pod's map removed.
    pub fn changes(&self) -> impl Iterator<Item = (&str, Option<&str>)> {
        self.changes.iter().map(|(k, v)| (k.as_ref(), v.as_deref()))
    }

    /// The keys and string values of the changed map, in key order.
    pub fn entries(&self) -> impl Iterator<Item = (&str, &str)> {
        let mut base = self.base.into_iter().flatten().peekable();
        let mut changes = self.changes.iter().peekable();
        std::iter::from_fn(move || {
            loop {
                let from_base = match (base.peek(), changes.peek()) {
                    (None, None) => return None,
                    (Some(_), None) => true,
                    (None, Some(_)) => false,
                    (Some((kb, _)), Some((kc, _))) => kb.as_str() < kc.as_ref(),
                };
                if from_base {
                    if let Some((k, v)) = base.next()
                        && let Some(v) = v.as_str()
                    {
                        return Some((k.as_str(), v));
                    }
                    continue;
                }
                let (k, change) = changes.next()?;
                // A change to a key of the base replaces its entry there.
                if base.peek().is_some_and(|(kb, _)| kb.as_str() == k.as_ref()) {
                    base.next();
                }
                if let Some(v) = change {
                    return Some((k.as_ref(), v.as_ref()));
                }
            }
        })
    }
}

impl StringMap for Overlay<'_> {
    fn get_str(&self, key: &str) -> Option<&str> {
        match self.changes.get(key) {
            Some(change) => change.as_deref(),
            None => self.base.and_then(|b| b.get(key)).and_then(Value::as_str),
        }
    }

    fn find_str(&self, mut matches: impl FnMut(&str) -> bool) -> Option<&str> {
        // As the map's `find_str`: the first key that matches, whose value may be no string (only in the base).
        let in_changes = self.changes.iter().find(|(k, v)| v.is_some() && matches(k));
        let in_base = self
            .base
            .into_iter()
            .flatten()
            .find(|(k, _)| self.changes.get(k).is_none() && matches(k));
        match (in_changes, in_base) {
            (Some((kc, v)), Some((kb, _))) if kc.as_ref() < kb.as_str() => v.as_deref(),
            (_, Some((_, v))) => v.as_str(),
            (Some((_, v)), None) => v.as_deref(),
            (None, None) => None,
        }
    }

    fn set(&mut self, key: impl Into<Cow<'static, str>>, value: impl Into<Cow<'static, str>>) {
        self.changes.put(key.into(), Some(value.into()));
    }

    fn remove_where(&mut self, mut matches: impl FnMut(&str) -> bool) {
        let base = self.base;
        let in_base = |k: &str| base.is_some_and(|b| b.contains_key(k));
        let removed: Vec<String> = self
            .base
            .into_iter()
            .flatten()
            .map(|(k, _)| k.as_str())
            // The base's keys without a change, then the keys set (each key once).
            .filter(|k| self.changes.get(k).is_none())
            .chain(
                self.changes
                    .iter()
                    .filter(|(_, v)| v.is_some())
                    .map(|(k, _)| k.as_ref()),
            )
            .filter(|k| matches(k))
            .map(str::to_owned)
            .collect();
        for key in removed {
            if in_base(&key) {
                self.changes.put(key.into(), None);
            } else {
                self.changes.remove(&key);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    /// The same operations on a copy and on an overlay give the same map, and the same answers on the way.
    #[test]
    fn an_overlay_reads_and_changes_as_a_copy_does() {
        let base = json!({"a": "1", "b/x": "2", "c": "3", "d": 4, "e_x": "5"});
        let mut copy = base.as_object().unwrap().clone();
        let mut overlay = Overlay::over(Some(&base));
        let check = |copy: &Map<String, Value>, overlay: &Overlay| {
            let want: Vec<(&str, &str)> = copy
                .iter()
                .filter_map(|(k, v)| v.as_str().map(|v| (k.as_str(), v)))
                .collect();
            assert_eq!(overlay.entries().collect::<Vec<_>>(), want);
            for key in ["a", "b/x", "c", "d", "e_x", "f", "0", "zz"] {
                assert_eq!(overlay.get_str(key), copy.get_str(key), "{key}");
            }
            for prefix in ["", "a", "b", "c", "d", "e", "f", "z"] {
                let starts = |k: &str| k.starts_with(prefix);
                assert_eq!(overlay.find_str(starts), copy.find_str(starts), "{prefix}");
            }
            // The first key matching is `d`, whose value is no string: no string, not the next match's.
            let d_or_e = |k: &str| k == "d" || k == "e_x";
            assert_eq!(overlay.find_str(d_or_e), copy.find_str(d_or_e));
        };
        check(&copy, &overlay);
        let steps = [
            ("b/x", Some("20")),
            ("f", Some("6")),
            ("0", Some("0")),
            ("c", None),
            ("f", None),
            ("c", Some("30")),
            ("a", Some("1")),
        ];
        for (key, value) in steps {
            match value {
                Some(v) => {
                    copy.set(key.to_owned(), v.to_owned());
                    overlay.set(key.to_owned(), v.to_owned());
                }
                None => {
                    copy.remove_where(|k| k == key);
                    overlay.remove_where(|k| k == key);
                }
            }
            check(&copy, &overlay);
        }
        // Removing by a rule reaches the base's keys and the changes' alike.
        copy.remove_where(|k| k < "c");
        overlay.remove_where(|k| k < "c");
        check(&copy, &overlay);
        // `0` was set and removed: no change; `a` was set to its value and then removed.
        assert_eq!(
            overlay.changes().collect::<Vec<_>>(),
            [("a", None), ("b/x", None), ("c", Some("30"))]
        );
        // Many changes, set out of order (past the short list's length, into a tree), and removed by a rule.
        for i in (0..3 * SCAN_UP_TO).rev().chain(0..SCAN_UP_TO) {
            let key = format!("k{:02}", (i * 7) % (3 * SCAN_UP_TO));
            copy.set(key.clone(), i.to_string());
            overlay.set(key, i.to_string());
            check(&copy, &overlay);
        }
        assert!(matches!(overlay.changes, ByKey::Many(_)));
        copy.remove_where(|k| k.ends_with('1') || k == "e_x");
        overlay.remove_where(|k| k.ends_with('1') || k == "e_x");
        check(&copy, &overlay);
        assert_eq!(
            base,
            json!({"a": "1", "b/x": "2", "c": "3", "d": 4, "e_x": "5"}),
            "the base is unchanged"
        );
    }

    /// The overlay reads keys in the map's order, which is the order of their text only while serde_json's
    /// `preserve_order` is off (as it is: the patch written from the changes depends on it).
    #[test]
    fn maps_keep_their_keys_in_order() {
        let map: Map<String, Value> = ["b", "a", "c"].into_iter().map(|k| (k.to_owned(), json!(k))).collect();
        assert_eq!(map.keys().collect::<Vec<_>>(), ["a", "b", "c"]);
    }

    #[test]
    fn an_overlay_over_nothing_holds_what_is_set() {
        for base in [None, Some(json!(null)), Some(json!("x"))] {
            let mut overlay = Overlay::over(base.as_ref());
            overlay.set("b", "2");
            overlay.set("a", "1");
            overlay.remove_where(|k| k == "b");
            assert_eq!(overlay.entries().collect::<Vec<_>>(), [("a", "1")]);
            assert_eq!(overlay.changes().collect::<Vec<_>>(), [("a", Some("1"))]);
        }
    }
}
