//! IstioOperator trees as istioctl handles them: key-wise merge (lists replaced), and `--set` paths such as
//! `components.ingressGateways[name:istio-ingressgateway].k8s.service.ports[1].nodePort` or
//! `values.gateways.istio-ingressgateway.serviceAnnotations.service\.beta\.kubernetes\.io/aws-load-balancer-type`.

use std::fmt;

use serde_json::{Map, Value};

/// One step of a path.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Seg {
    /// A map key.
    Key(String),
    /// A list element by position: `[2]`.
    Index(usize),
    /// The list element whose `key` is the string `value`: `[name:istio-ingressgateway]`.
    Match(String, String),
}

impl Seg {
    fn is_selector(&self) -> bool {
        !matches!(self, Seg::Key(_))
    }
}

/// A path into an IstioOperator `spec`, as written after `--set`.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct Path(pub Vec<Seg>);

impl Path {
    /// Parses istioctl's path syntax: `.` separates keys (`\.` is a literal dot), `key[expr]` selects a list
    /// element by index (`[0]`) or by a field's value (`[name:foo]`).
    pub fn parse(text: &str) -> Result<Self, String> {
        let text = text.trim().trim_start_matches('.').trim_end_matches('.');
        if text.is_empty() {
            return Err("empty path".into());
        }
        let mut segs = Vec::new();
        for piece in split_unescaped_dots(text) {
            if piece.is_empty() {
                return Err(format!("empty key in {text:?}"));
            }
            match piece.find('[') {
                Some(0) => return Err(format!("{piece:?}: a list selector must follow a key")),
                Some(open) => {
                    segs.push(Seg::Key(piece[..open].to_owned()));
                    segs.push(selector(&piece[open..])?);
                }
                None => segs.push(Seg::Key(piece)),
            }
        }
        Ok(Self(segs))
    }

    /// A path of plain keys.
    pub fn keys(keys: &[&str]) -> Self {
        Self(keys.iter().map(|k| Seg::Key((*k).to_owned())).collect())
    }

    /// This path with one more key.
    pub fn key(&self, key: &str) -> Self {
        let mut segs = self.0.clone();
        segs.push(Seg::Key(key.to_owned()));
        Self(segs)
    }

    /// This path with one more selector.
    pub fn with(&self, seg: Seg) -> Self {
        let mut segs = self.0.clone();
        segs.push(seg);
        Self(segs)
    }
}

impl fmt::Display for Path {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, seg) in self.0.iter().enumerate() {
            match seg {
                Seg::Key(k) => {
                    if i > 0 {
                        f.write_str(".")?;
                    }
                    f.write_str(&k.replace('.', "\\."))?;
                }
                Seg::Index(n) => write!(f, "[{n}]")?,
                Seg::Match(k, v) => write!(f, "[{k}:{v}]")?,
            }
        }
        Ok(())
    }
}

fn split_unescaped_dots(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut current = String::new();
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\\' if chars.peek() == Some(&'.') => {
                current.push('.');
                chars.next();
            }
            '.' => out.push(std::mem::take(&mut current)),
            _ => current.push(c),
        }
    }
    out.push(current);
    out
}

fn selector(text: &str) -> Result<Seg, String> {
    let inner = text
        .strip_prefix('[')
        .and_then(|t| t.strip_suffix(']'))
        .filter(|t| !t.contains(['[', ']']))
        .ok_or_else(|| format!("{text:?} is not a list selector such as [0] or [name:foo]"))?;
    if let Ok(n) = inner.parse::<usize>() {
        return Ok(Seg::Index(n));
    }
    match inner.split_once(':') {
        Some((k, v)) if !k.is_empty() => Ok(Seg::Match(k.to_owned(), v.to_owned())),
        _ => Err(format!("{text:?} is not a list selector such as [0] or [name:foo]")),
    }
}

/// Merges `overlay` into `base` key by key, as istioctl merges files over a profile: maps recurse, anything else
/// (lists included) replaces.
pub fn merge(base: &mut Value, overlay: Value) {
    match (base, overlay) {
        (Value::Object(b), Value::Object(o)) => {
            for (k, v) in o {
                match b.get_mut(&k) {
                    Some(existing) if existing.is_object() && v.is_object() => merge(existing, v),
                    _ => {
                        b.insert(k, v);
                    }
                }
            }
        }
        (b, o) => *b = o,
    }
}

fn find(list: &[Value], key: &str, value: &str) -> Option<usize> {
    list.iter()
        .position(|e| e.get(key).and_then(Value::as_str) == Some(value))
}

/// The value at `path`, if there is one.
pub fn get<'a>(tree: &'a Value, path: &Path) -> Option<&'a Value> {
    let mut cur = tree;
    for seg in &path.0 {
        cur = match seg {
            Seg::Key(k) => cur.get(k)?,
            Seg::Index(n) => cur.as_array()?.get(*n)?,
            Seg::Match(k, v) => {
                let list = cur.as_array()?;
                &list[find(list, k, v)?]
            }
        };
    }
    Some(cur)
}

/// Removes and returns the value at a path of plain keys.
pub fn take(tree: &mut Value, keys: &[&str]) -> Option<Value> {
    let (last, parents) = keys.split_last()?;
    let mut cur = tree;
    for k in parents {
        cur = cur.get_mut(*k)?;
    }
    cur.as_object_mut()?.remove(*last)
}

/// Sets `value` at `path`, creating maps and lists on the way as istioctl does: `[n]` past the end of a list
/// appends, `[key:value]` must find its element.
pub fn set(tree: &mut Value, path: &Path, value: Value) -> Result<(), String> {
    set_at(tree, &path.0, value, &Path::default())
}

fn set_at(tree: &mut Value, segs: &[Seg], value: Value, done: &Path) -> Result<(), String> {
    let Some((first, rest)) = segs.split_first() else {
        *tree = value;
        return Ok(());
    };
    let here = done.with(first.clone());
    match first {
        Seg::Key(k) => {
            if tree.is_null() {
                *tree = Value::Object(Map::new());
            }
            let Value::Object(map) = tree else {
                return Err(format!("{done} is not a map"));
            };
            let child = map.entry(k.clone()).or_insert_with(|| {
                if rest.first().is_some_and(Seg::is_selector) {
                    Value::Array(Vec::new())
                } else {
                    Value::Null
                }
            });
            set_at(child, rest, value, &here)
        }
        Seg::Index(n) => {
            let list = as_list(tree, done)?;
            if *n < list.len() {
                set_at(&mut list[*n], rest, value, &here)
            } else {
                let mut element = Value::Null;
                set_at(&mut element, rest, value, &here)?;
                list.push(element);
                Ok(())
            }
        }
        Seg::Match(k, v) => {
            let list = as_list(tree, done)?;
            let i = find(list, k, v).ok_or_else(|| format!("{done} has no element with {k}: {v}"))?;
            set_at(&mut list[i], rest, value, &here)
        }
    }
}

fn as_list<'a>(tree: &'a mut Value, done: &Path) -> Result<&'a mut Vec<Value>, String> {
    if tree.is_null() {
        *tree = Value::Array(Vec::new());
    }
    tree.as_array_mut().ok_or_else(|| format!("{done} is not a list"))
}

/// Before a `--set` reaches into a list the user never wrote (`components.ingressGateways[name:…]`,
/// `….ports[1].nodePort`), copies that list from the profile, so the selector finds the element the profile
/// defines (as istioctl did when it applied `--set` over the profile).
pub fn seed_lists(user: &mut Value, profile: &Value, path: &Path) -> Result<(), String> {
    for (i, seg) in path.0.iter().enumerate() {
        if !seg.is_selector() || i == 0 {
            continue;
        }
        let prefix = Path(path.0[..i].to_vec());
        if get(user, &prefix).is_none()
            && let Some(list @ Value::Array(_)) = get(profile, &prefix)
        {
            set(user, &prefix, list.clone())?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn path(text: &str) -> Path {
        Path::parse(text).unwrap()
    }

    #[test]
    fn paths_split_on_unescaped_dots_and_selectors() {
        assert_eq!(
            path("components.ingressGateways[name:istio-ingressgateway].enabled").0,
            vec![
                Seg::Key("components".into()),
                Seg::Key("ingressGateways".into()),
                Seg::Match("name".into(), "istio-ingressgateway".into()),
                Seg::Key("enabled".into()),
            ]
        );
        assert_eq!(
            path(r"values.gateways.istio-ingressgateway.serviceAnnotations.service\.beta\.kubernetes\.io/lb").0[4],
            Seg::Key("service.beta.kubernetes.io/lb".into())
        );
        assert_eq!(path("a.b[2].c").0[2], Seg::Index(2));
        let text = r"values.gateways.ports[1].a\.b";
        assert_eq!(path(text).to_string(), text);
    }

    #[test]
    fn malformed_paths_are_refused_with_the_reason() {
        for bad in ["", "a..b", "[0].a", "a[0", "a[x]", "a[0][1]"] {
            assert!(Path::parse(bad).is_err(), "{bad:?} should be refused");
        }
    }

    #[test]
    fn set_creates_maps_and_appends_past_the_end_of_lists() {
        let mut tree = json!({});
        set(&mut tree, &path("values.pilot.env.A"), json!("1")).unwrap();
        set(&mut tree, &path("components.ingressGateways[0].name"), json!("gw")).unwrap();
        set(
            &mut tree,
            &path("components.ingressGateways[name:gw].enabled"),
            json!(true),
        )
        .unwrap();
        set(&mut tree, &path("components.ingressGateways[5].name"), json!("other")).unwrap();
        assert_eq!(
            tree,
            json!({"values": {"pilot": {"env": {"A": "1"}}},
                   "components": {"ingressGateways": [{"name": "gw", "enabled": true}, {"name": "other"}]}})
        );
    }

    #[test]
    fn set_refuses_missing_elements_and_type_clashes() {
        let mut tree = json!({"values": {"pilot": "x"}, "components": {"ingressGateways": []}});
        let err = set(
            &mut tree,
            &path("components.ingressGateways[name:gw].enabled"),
            json!(true),
        )
        .unwrap_err();
        assert!(err.contains("no element with name: gw"), "{err}");
        let err = set(&mut tree, &path("values.pilot.env.A"), json!(1)).unwrap_err();
        assert!(err.contains("values.pilot is not a map"), "{err}");
    }

    #[test]
    fn merge_recurses_into_maps_and_replaces_lists() {
        let mut base = json!({"a": {"b": 1, "c": [1, 2]}, "d": 1});
        merge(&mut base, json!({"a": {"c": [3], "e": 2}}));
        assert_eq!(base, json!({"a": {"b": 1, "c": [3], "e": 2}, "d": 1}));
    }

    #[test]
    fn seeding_copies_the_profile_list_only_when_the_user_has_none() {
        let profile = json!({"components": {"ingressGateways": [{"name": "istio-ingressgateway", "enabled": true}]}});
        let p = path("components.ingressGateways[name:istio-ingressgateway].enabled");
        let mut user = json!({});
        seed_lists(&mut user, &profile, &p).unwrap();
        set(&mut user, &p, json!(false)).unwrap();
        assert_eq!(
            user,
            json!({"components": {"ingressGateways": [{"name": "istio-ingressgateway", "enabled": false}]}})
        );
        let mut own = json!({"components": {"ingressGateways": [{"name": "mine"}]}});
        seed_lists(&mut own, &profile, &p).unwrap();
        assert!(set(&mut own, &p, json!(false)).is_err());
    }

    #[test]
    fn take_removes_nested_keys() {
        let mut tree = json!({"a": {"b": {"c": 1, "d": 2}}});
        assert_eq!(take(&mut tree, &["a", "b", "c"]), Some(json!(1)));
        assert_eq!(take(&mut tree, &["a", "x", "c"]), None);
        assert_eq!(tree, json!({"a": {"b": {"d": 2}}}));
    }
}
