//! A fast YAML writer that prints exactly what the full serialiser (`serde_saphyr::to_string`) prints for a JSON
//! value, for the shapes manifests have: block mappings and sequences, `{}`/`[]`, and scalars. The common keys and
//! strings are written directly; any other scalar is printed by the full serialiser on its own and placed here,
//! which is exact for single-line scalars and literal block scalars (`|`). Where placing it is not certainly exact
//! (folded scalars, which wrap by column, or indentation indicators) the writer answers `false` and the caller
//! uses the full serialiser for the whole document. Checked byte for byte against the full serialiser by the
//! tests over every fixture and corpus document and by the `yaml_fast` fuzz target.
#![cfg_attr(not(test), deny(clippy::indexing_slicing))]

use std::fmt::Write as _;

use serde_json::{Map, Value};

use super::special_word;

/// Appends `value` as one YAML document (no `---`) to `out`; `false` (with `out` as it was) when the value is not
/// in the writer's subset.
pub fn write_document(out: &mut String, value: &Value) -> bool {
    let start = out.len();
    let written = match value {
        Value::Object(map) if !map.is_empty() => mapping(out, map, 0, false),
        _ => None,
    };
    if written.is_none() {
        out.truncate(start);
    }
    written.is_some()
}

fn indent(out: &mut String, column: usize) {
    const SPACES: &str = "                                                                ";
    let mut left = column;
    while left > 0 {
        let n = left.min(SPACES.len());
        out.push_str(SPACES.get(..n).unwrap_or_default());
        left -= n;
    }
}

/// The entries of a mapping whose keys sit at `column`; with `inline`, the first key follows a `- ` already written.
fn mapping(out: &mut String, map: &Map<String, Value>, column: usize, inline: bool) -> Option<()> {
    for (i, (key, value)) in map.iter().enumerate() {
        if i > 0 || !inline {
            indent(out, column);
        }
        write_key(out, key)?;
        match value {
            Value::Object(child) if !child.is_empty() => {
                out.push_str(":\n");
                mapping(out, child, column + 2, false)?;
            }
            Value::Array(items) if !items.is_empty() => {
                out.push_str(":\n");
                sequence(out, items, column, false)?;
            }
            _ => {
                out.push_str(": ");
                scalar(out, value, column)?;
            }
        }
    }
    Some(())
}

/// The items of a sequence whose dashes sit at `column`; with `inline`, the first dash follows a `- `.
fn sequence(out: &mut String, items: &[Value], column: usize, inline: bool) -> Option<()> {
    for (i, item) in items.iter().enumerate() {
        if i > 0 || !inline {
            indent(out, column);
        }
        out.push_str("- ");
        match item {
            Value::Object(child) if !child.is_empty() => mapping(out, child, column + 2, true)?,
            Value::Array(nested) if !nested.is_empty() => sequence(out, nested, column + 2, true)?,
            _ => scalar(out, item, column)?,
        }
    }
    Some(())
}

fn write_key(out: &mut String, key: &str) -> Option<()> {
    if plain_key(key) {
        out.push_str(key);
        return Some(());
    }
    // The full serialiser's spelling of this key, from a one-entry mapping.
    let mut one = Map::new();
    one.insert(key.to_owned(), Value::Null);
    let text = serde_saphyr::to_string(&one).ok()?;
    let spelled = text.strip_suffix(": null\n")?;
    (!spelled.contains('\n')).then(|| out.push_str(spelled))
}

/// A scalar (or `{}`/`[]`) after `key: ` or `- `, with its line break; `column` is where the key or dash sits.
fn scalar(out: &mut String, value: &Value, column: usize) -> Option<()> {
    match value {
        Value::Null => out.push_str("null\n"),
        Value::Bool(b) => out.push_str(if *b { "true\n" } else { "false\n" }),
        Value::Number(n) if n.is_i64() || n.is_u64() => {
            let _ = writeln!(out, "{n}");
        }
        Value::String(s) if plain_value(s) => {
            out.push_str(s);
            out.push('\n');
        }
        Value::Object(map) if map.is_empty() => out.push_str("{}\n"),
        Value::Array(items) if items.is_empty() => out.push_str("[]\n"),
        _ => {
            // The full serialiser's spelling of the scalar on its own: exact here when it is one line, or a literal
            // block scalar re-indented under `column`.
            let text = serde_saphyr::to_string(value).ok()?;
            let (first, rest) = text.split_once('\n')?;
            if rest.is_empty() {
                out.push_str(&text);
            } else if first == "|" || first == "|-" {
                out.push_str(first);
                out.push('\n');
                for line in rest.split_inclusive('\n') {
                    if line != "\n" {
                        indent(out, column);
                    }
                    out.push_str(line);
                }
            } else {
                return None;
            }
        }
    }
    Some(())
}

/// Keys the full serialiser certainly writes plain: `[A-Za-z][A-Za-z0-9._/-]*`, no special word, at most 1,000
/// characters (it writes longer ones as explicit `? ` keys).
fn plain_key(s: &str) -> bool {
    let bytes = s.as_bytes();
    bytes.len() <= 1000
        && bytes.first().is_some_and(u8::is_ascii_alphabetic)
        && bytes
            .iter()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'.' | b'_' | b'/' | b'-'))
        && !special_word(s)
}

/// Strings the full serialiser certainly writes plain in block context: up to 80 printable ASCII characters (longer
/// ones may be folded), starting with a letter or `/` (or a number with a unit, such as `100m`), no special word, no
/// `: `, ` #`, trailing `:` or trailing space.
fn plain_value(s: &str) -> bool {
    let bytes = s.as_bytes();
    let Some(&first) = bytes.first() else {
        return false;
    };
    if bytes.len() > 80 || !bytes.iter().all(|c| (0x20..0x7f).contains(c)) {
        return false;
    }
    let starts_well = if first.is_ascii_digit() {
        // `100m`, `128Mi`: alphanumeric with a letter no number spelling has.
        bytes.iter().all(u8::is_ascii_alphanumeric)
            && bytes
                .iter()
                .any(|c| c.is_ascii_alphabetic() && !c.is_ascii_hexdigit() && !b"xXoO".contains(c))
    } else {
        first.is_ascii_alphabetic() || first == b'/'
    };
    // No `: ` or ` #` inside (one pass over the pairs), no `:` or space at the end.
    let separator = bytes.windows(2).any(|pair| matches!(pair, [b':', b' '] | [b' ', b'#']));
    starts_well && !special_word(s) && !separator && !s.ends_with(':') && !s.ends_with(' ')
}

#[cfg(test)]
mod tests {
    use super::*;

    fn same_as_full(value: &Value) -> bool {
        let mut out = String::new();
        let written = write_document(&mut out, value);
        if written {
            assert_eq!(out, serde_saphyr::to_string(value).unwrap(), "for {value}");
        } else {
            assert!(out.is_empty());
        }
        written
    }

    #[test]
    fn writes_what_the_full_serialiser_writes() {
        let value = serde_json::json!({
            "a": {"b": 1, "c": [1, "x", {"d": {"e": 1}, "f": [1, 2]}, [1, 2], {}, [], null, {"g": []}, {"h": {}},
                  [[1]], [{"i": 1}]]},
            "e": {}, "f": [], "n": null, "t": true, "neg": -5, "fl": 1.5, "s": "15020", "m": "100m", "yes": "yes",
            "multi": "line1\nline2\n", "stripped": "a\n\n  b", "k:ey": 1, "empty": "", "colon": "a: b",
            "x": [{"a": [1], "b": 2, "lit": "x\ny\n"}, {"m": {"n": 1, "deep": "p\nq"}}, "r\ns"],
            "quoted": "{\"a\":1}", "version": "1.28.0", "url": "http://x:80/p", "arg": "--port=80",
            "unicode": "é", "long quoted": format!("\"{}\"", "x".repeat(100)),
        });
        assert!(same_as_full(&value));
    }

    #[test]
    fn leaves_folded_scalars_to_the_full_serialiser() {
        let long = "word ".repeat(30);
        assert!(!same_as_full(&serde_json::json!({"a": {"b": long.trim_end()}})));
        assert!(!same_as_full(&serde_json::json!([1])));
        assert!(!same_as_full(&serde_json::json!({})));
        // A key longer than 1,024 characters is written as an explicit key.
        assert!(!same_as_full(&serde_json::json!({"x": [{"a".repeat(1025): 1}]})));
    }
}
