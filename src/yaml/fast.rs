//! A fast reader for the YAML that Kubernetes manifests are written in: block mappings and sequences (indentless
//! ones included), one-line flow collections, plain, single- and double-quoted one-line scalars, comments.
//!
//! It answers `None` for anything outside that subset or anything it is not sure about (anchors, tags, block and
//! multi-line scalars, documents markers, tabs, floats, YAML 1.1 spellings such as `yes`, duplicate keys, ...), and
//! the caller then uses the full parser. Where it answers, the answer equals the full parser's: the tests compare
//! both on every fixture and corpus input, and the `yaml_fast` fuzz target compares them on arbitrary text.
//! It exists because the full parser costs about 400 instructions per byte, two thirds of `kube-inject`'s time.
#![cfg_attr(not(test), deny(clippy::indexing_slicing))]

use std::cell::Cell;

use serde_json::{Map, Number, Value};

/// Deeper nesting is for the full parser, whose budget refuses more than 64 levels (and the recursion here stays
/// shallow).
const MAX_DEPTH: usize = 48;
/// More nodes are for the full parser, whose budget refuses more than 250,000.
const MAX_NODES: usize = 200_000;
/// Longer implicit keys are for the full parser, which looks at most 1,024 characters ahead for a key's colon.
const MAX_KEY_BYTES: usize = 1000;

/// One line that holds content: the column of its first character, and its content's byte range.
#[derive(Clone, Copy)]
struct Line {
    indent: usize,
    start: usize,
    end: usize,
}

/// Parses one YAML document, or `None` when the text is not in the subset this reader handles.
pub fn parse(text: &str) -> Option<Value> {
    if !plain_characters(text) {
        return None;
    }
    let mut lines = Vec::new();
    let mut offset = 0;
    for raw in text.split('\n') {
        let start_of_line = offset;
        offset += raw.len() + 1;
        let content = raw.trim_start_matches(' ');
        if content.is_empty() || content.starts_with('#') {
            continue;
        }
        let indent = raw.len() - content.len();
        // Document markers and directives: the caller splits streams; anything left here is for the full parser.
        if indent == 0 && (content.starts_with("---") || content.starts_with("...") || content.starts_with('%')) {
            return None;
        }
        lines.push(Line {
            indent,
            start: start_of_line + indent,
            end: start_of_line + raw.len(),
        });
    }
    let mut reader = Reader {
        text,
        bytes: text.as_bytes(),
        lines,
        next: 0,
        depth: Cell::new(0),
        nodes: Cell::new(0),
    };
    let Some(first) = reader.lines.first().copied() else {
        return Some(Value::Null);
    };
    let value = reader.block(first.indent)?;
    (reader.next == reader.lines.len()).then_some(value)
}

/// Whether the text is free of what this reader leaves to the full parser: tabs, carriage returns, control
/// characters, byte-order marks and the Unicode line separators.
fn plain_characters(text: &str) -> bool {
    // The usual case in one pass: printable ASCII and newlines only.
    if text.bytes().all(|b| (0x20..0x7f).contains(&b) || b == b'\n') {
        return true;
    }
    if text.bytes().any(|b| (b < 0x20 && b != b'\n') || b == 0x7f) {
        return false;
    }
    text.is_ascii()
        || !text.chars().any(|c| {
            matches!(
                c,
                '\u{80}'..='\u{9f}' | '\u{feff}' | '\u{fffe}' | '\u{ffff}' | '\u{2028}' | '\u{2029}'
            )
        })
}

struct Reader<'a> {
    text: &'a str,
    bytes: &'a [u8],
    lines: Vec<Line>,
    next: usize,
    depth: Cell<usize>,
    nodes: Cell<usize>,
}

impl Reader<'_> {
    /// Enters a collection: `None` past the depth or node limit.
    fn enter(&self) -> Option<()> {
        let depth = self.depth.get() + 1;
        (depth <= MAX_DEPTH).then(|| self.depth.set(depth))?;
        self.node()
    }

    fn leave(&self) {
        self.depth.set(self.depth.get().saturating_sub(1));
    }

    /// Counts an entry (a key and its value count twice): `None` past the node limit.
    fn node(&self) -> Option<()> {
        let nodes = self.nodes.get() + 2;
        (nodes <= MAX_NODES).then(|| self.nodes.set(nodes))
    }

    fn byte(&self, i: usize) -> Option<u8> {
        self.bytes.get(i).copied()
    }

    fn slice(&self, start: usize, end: usize) -> Option<&str> {
        self.text.get(start..end)
    }

    fn line(&self, i: usize) -> Option<Line> {
        self.lines.get(i).copied()
    }

    /// A block node whose first line (`self.next`) starts at column `indent`.
    fn block(&mut self, indent: usize) -> Option<Value> {
        let line = self.line(self.next)?;
        if self.is_sequence_entry(line.start, line.end) {
            self.sequence(indent)
        } else {
            self.mapping(indent)
        }
    }

    /// `-` followed by a space or the end of the line.
    fn is_sequence_entry(&self, start: usize, end: usize) -> bool {
        self.byte(start) == Some(b'-') && (start + 1 == end || self.byte(start + 1) == Some(b' '))
    }

    fn mapping(&mut self, indent: usize) -> Option<Value> {
        self.enter()?;
        let mut map = Map::new();
        while let Some(line) = self.line(self.next) {
            if line.indent < indent {
                break;
            }
            if line.indent > indent || self.is_sequence_entry(line.start, line.end) {
                return None;
            }
            let (key, after_colon) = self.key(line.start, line.end)?;
            self.node()?;
            self.next += 1;
            let value = self.value_after_key(indent, after_colon, line.end)?;
            if map.insert(key, value).is_some() {
                return None;
            }
        }
        self.leave();
        Some(Value::Object(map))
    }

    /// The value of a block mapping's key: on the key's line, or the block below it.
    fn value_after_key(&mut self, indent: usize, from: usize, end: usize) -> Option<Value> {
        let start = self.skip_spaces(from, end);
        if start == end || self.byte(start) == Some(b'#') {
            return match self.line(self.next) {
                Some(next) if next.indent > indent => self.block(next.indent),
                Some(next) if next.indent == indent && self.is_sequence_entry(next.start, next.end) => {
                    self.sequence(indent)
                }
                _ => Some(Value::Null),
            };
        }
        if self.byte(start) == Some(b'|') {
            return self.literal(indent, start, end);
        }
        let value = self.inline_value(start, end)?;
        self.no_continuation(indent)?;
        Some(value)
    }

    /// A literal block scalar (`|` or `|-`) whose header runs from `start` to `end`, under a node at column
    /// `parent`; `self.next` is the line after the header. Folded scalars, explicit indentation, `|+` and leading
    /// blank lines are for the full parser.
    fn literal(&mut self, parent: usize, start: usize, end: usize) -> Option<Value> {
        let mut after = start + 1;
        let strip = self.byte(after) == Some(b'-');
        if strip {
            after += 1;
        }
        let rest = self.skip_spaces(after, end);
        if !(rest == end || (rest > after && self.byte(rest) == Some(b'#'))) {
            return None;
        }
        let mut out = String::new();
        let mut indent = None;
        let mut blank_lines = 0;
        let mut pos = end + 1;
        while pos < self.text.len() {
            let line_end = pos + self.text.get(pos..)?.find('\n')?;
            let raw = self.slice(pos, line_end)?;
            let spaces = raw.len() - raw.trim_start_matches(' ').len();
            if spaces == raw.len() {
                // A blank line: kept (as an empty line) if content follows; more spaces than the content's are
                // content themselves, and blank lines before the first content line are for the full parser.
                if indent.is_none_or(|m| spaces > m) {
                    return None;
                }
                blank_lines += 1;
                pos = line_end + 1;
                continue;
            }
            let m = *indent.get_or_insert(spaces);
            if spaces < m {
                if spaces > parent {
                    return None;
                }
                break;
            }
            if m <= parent {
                return None;
            }
            for _ in 0..blank_lines {
                out.push('\n');
            }
            blank_lines = 0;
            out.push_str(raw.get(m..)?);
            out.push('\n');
            pos = line_end + 1;
        }
        // The last line of a document without a final line break is for the full parser.
        if indent.is_none() || (pos >= self.text.len() && !self.text.ends_with('\n')) {
            return None;
        }
        if strip {
            out.pop();
        }
        while self.line(self.next).is_some_and(|line| line.start < pos) {
            self.next += 1;
        }
        Some(Value::String(out))
    }

    /// A scalar or flow value must not be followed by deeper lines (a multi-line scalar, or an error).
    fn no_continuation(&self, indent: usize) -> Option<()> {
        match self.line(self.next) {
            Some(next) if next.indent > indent => None,
            _ => Some(()),
        }
    }

    fn sequence(&mut self, indent: usize) -> Option<Value> {
        self.enter()?;
        let mut items = Vec::new();
        while let Some(line) = self.line(self.next) {
            if line.indent < indent || !self.is_sequence_entry(line.start, line.end) {
                break;
            }
            if line.indent > indent {
                return None;
            }
            self.node()?;
            let start = self.skip_spaces(line.start + 1, line.end);
            if start == line.end || self.byte(start) == Some(b'#') {
                self.next += 1;
                items.push(match self.line(self.next) {
                    Some(next) if next.indent > indent => self.block(next.indent)?,
                    _ => Value::Null,
                });
                continue;
            }
            if self.byte(start) == Some(b'|') {
                self.next += 1;
                items.push(self.literal(indent, start, line.end)?);
            } else if self.is_sequence_entry(start, line.end) || self.key(start, line.end).is_some() {
                // A compact nested node ("- - a", "- name: a"): it starts at the item's column.
                let column = line.indent + (start - line.start);
                let slot = self.lines.get_mut(self.next)?;
                slot.indent = column;
                slot.start = start;
                items.push(self.block(column)?);
            } else {
                self.next += 1;
                items.push(self.inline_value(start, line.end)?);
                self.no_continuation(indent)?;
            }
        }
        self.leave();
        Some(Value::Array(items))
    }

    /// A mapping key at `start` on a line ending at `end`: the key and the offset after its colon, or `None` when
    /// the text there is not a key this reader accepts.
    fn key(&self, start: usize, end: usize) -> Option<(String, usize)> {
        match self.byte(start)? {
            b'"' | b'\'' => {
                let (key, after) = self.quoted(start, end)?;
                if after - start > MAX_KEY_BYTES {
                    return None;
                }
                let colon_ends = after + 1 == end || self.byte(after + 1) == Some(b' ');
                (self.byte(after) == Some(b':') && colon_ends).then_some((key, after + 1))
            }
            _ => {
                if starts_with_indicator(self.bytes, start, end) {
                    return None;
                }
                let mut i = start;
                loop {
                    if i >= end {
                        return None;
                    }
                    if i - start > MAX_KEY_BYTES {
                        return None;
                    }
                    match self.byte(i)? {
                        b':' if i + 1 == end || self.byte(i + 1) == Some(b' ') => break,
                        b'#' if self.space_before(i) => return None,
                        _ => i += 1,
                    }
                }
                match resolve_plain(self.slice(start, i)?.trim_end_matches(' '))? {
                    Value::String(key) if key != "<<" => Some((key, i + 1)),
                    _ => None,
                }
            }
        }
    }

    /// A value that ends its line (spaces and a comment may follow).
    fn inline_value(&self, start: usize, end: usize) -> Option<Value> {
        let (value, after) = match self.byte(start)? {
            b'"' | b'\'' => {
                let (text, after) = self.quoted(start, end)?;
                (Value::String(text), after)
            }
            b'{' | b'[' => {
                let mut i = start;
                let value = self.flow_node(&mut i, end)?;
                (value, i)
            }
            _ => {
                let raw = self.slice(start, self.plain_end(start, end)?)?.trim_end_matches(' ');
                (resolve_plain(raw)?, start + raw.len())
            }
        };
        let rest = self.skip_spaces(after, end);
        match self.byte(rest) {
            _ if rest == end => Some(value),
            Some(b'#') if rest > after => Some(value),
            _ => None,
        }
    }

    /// Where a block plain scalar starting at `start` ends: before a comment or at the end of the line.
    fn plain_end(&self, start: usize, end: usize) -> Option<usize> {
        if starts_with_indicator(self.bytes, start, end) {
            return None;
        }
        let mut i = start;
        while i < end {
            match self.byte(i)? {
                b':' if i + 1 == end || self.byte(i + 1) == Some(b' ') => return None,
                b'#' if self.space_before(i) => return Some(i),
                _ => i += 1,
            }
        }
        Some(end)
    }

    /// Whether a space precedes offset `i` (a `#` there starts a comment).
    fn space_before(&self, i: usize) -> bool {
        i.checked_sub(1).and_then(|j| self.byte(j)) == Some(b' ')
    }

    fn skip_spaces(&self, mut i: usize, end: usize) -> usize {
        while i < end && self.byte(i) == Some(b' ') {
            i += 1;
        }
        i
    }

    /// A one-line quoted scalar at `start`: its value and the offset after the closing quote. Runs between quotes
    /// and escapes are copied whole (both are ASCII, so every run ends on a character boundary).
    fn quoted(&self, start: usize, end: usize) -> Option<(String, usize)> {
        let quote = self.byte(start)?;
        let body = self.slice(start + 1, end)?;
        let bytes = body.as_bytes();
        let special = |b: &u8| *b == quote || (quote == b'"' && *b == b'\\');
        let mut out = String::new();
        let mut i = 0;
        loop {
            let at = i + bytes.get(i..)?.iter().position(special)?;
            out.push_str(body.get(i..at)?);
            match (bytes.get(at).copied()?, bytes.get(at + 1).copied()) {
                (b'\'', Some(b'\'')) => {
                    out.push('\'');
                    i = at + 2;
                }
                (b'\'' | b'"', _) => return Some((out, start + 1 + at + 1)),
                (_, escape) => {
                    out.push(match escape? {
                        b'"' => '"',
                        b'\\' => '\\',
                        b'/' => '/',
                        b'n' => '\n',
                        b't' => '\t',
                        b'r' => '\r',
                        b'0' => '\0',
                        b'b' => '\u{8}',
                        b'u' => {
                            let mut code = 0u32;
                            for digit in bytes.get(at + 2..at + 6)? {
                                code = code * 16 + char::from(*digit).to_digit(16)?;
                            }
                            i = at + 6;
                            out.push(char::from_u32(code)?);
                            continue;
                        }
                        _ => return None,
                    });
                    i = at + 2;
                }
            }
        }
    }

    /// A node inside a one-line flow collection, starting at `*i` (spaces first); leaves `*i` after it.
    fn flow_node(&self, i: &mut usize, end: usize) -> Option<Value> {
        *i = self.skip_spaces(*i, end);
        if *i >= end {
            return None;
        }
        match self.byte(*i)? {
            b'{' => {
                self.enter()?;
                *i += 1;
                let mut map = Map::new();
                if self.flow_close(i, end, b'}') {
                    self.leave();
                    return Some(Value::Object(map));
                }
                loop {
                    *i = self.skip_spaces(*i, end);
                    self.node()?;
                    let key_start = *i;
                    let key = match self.byte(*i)? {
                        b'"' | b'\'' => {
                            let (key, after) = self.quoted(*i, end)?;
                            *i = after;
                            key
                        }
                        _ => match self.flow_plain(i, end)? {
                            Value::String(key) if key != "<<" => key,
                            _ => return None,
                        },
                    };
                    // `key: value`, the colon followed by a space.
                    if *i - key_start > MAX_KEY_BYTES || self.byte(*i) != Some(b':') || self.byte(*i + 1) != Some(b' ')
                    {
                        return None;
                    }
                    *i += 1;
                    let value = self.flow_node(i, end)?;
                    if map.insert(key, value).is_some() {
                        return None;
                    }
                    if self.flow_next(i, end, b'}')? {
                        self.leave();
                        return Some(Value::Object(map));
                    }
                }
            }
            b'[' => {
                self.enter()?;
                *i += 1;
                let mut items = Vec::new();
                if self.flow_close(i, end, b']') {
                    self.leave();
                    return Some(Value::Array(items));
                }
                loop {
                    self.node()?;
                    items.push(self.flow_node(i, end)?);
                    if self.flow_next(i, end, b']')? {
                        self.leave();
                        return Some(Value::Array(items));
                    }
                }
            }
            b'"' | b'\'' => {
                let (text, after) = self.quoted(*i, end)?;
                *i = after;
                Some(Value::String(text))
            }
            _ => {
                let value = self.flow_plain(i, end)?;
                // A single-pair mapping inside a sequence (`[a: b]`) is for the full parser.
                (self.byte(*i) != Some(b':')).then_some(value)
            }
        }
    }

    /// Consumes `close` (after spaces) if it comes next.
    fn flow_close(&self, i: &mut usize, end: usize, close: u8) -> bool {
        let j = self.skip_spaces(*i, end);
        if self.byte(j) == Some(close) && j < end {
            *i = j + 1;
            true
        } else {
            false
        }
    }

    /// After a flow entry: `,` and another entry (`Some(false)`), or the closing bracket (`Some(true)`).
    fn flow_next(&self, i: &mut usize, end: usize, close: u8) -> Option<bool> {
        *i = self.skip_spaces(*i, end);
        if *i >= end {
            return None;
        }
        match self.byte(*i)? {
            b',' => {
                *i += 1;
                // A trailing comma is for the full parser.
                (!self.flow_close(&mut i.clone(), end, close)).then_some(false)
            }
            c if c == close => {
                *i += 1;
                Some(true)
            }
            _ => None,
        }
    }

    /// A plain scalar inside a flow collection; stops before `,`, a closing bracket, or a `:` followed by a space.
    fn flow_plain(&self, i: &mut usize, end: usize) -> Option<Value> {
        let start = *i;
        // `-` before a flow indicator (`[-]`) is refused by the full parser.
        let dash_then_indicator =
            self.byte(start) == Some(b'-') && self.byte(start + 1).is_some_and(|c| b",[]{}".contains(&c));
        if starts_with_indicator(self.bytes, start, end) || dash_then_indicator {
            return None;
        }
        while *i < end {
            match self.byte(*i)? {
                b',' | b']' | b'}' => break,
                b':' if self.byte(*i + 1) == Some(b' ') => break,
                b'[' | b'{' | b':' => return None,
                b'#' if self.space_before(*i) => return None,
                _ => *i += 1,
            }
        }
        if *i >= end {
            return None;
        }
        let raw = self.slice(start, *i)?.trim_end_matches(' ');
        if raw.is_empty() {
            return None;
        }
        resolve_plain(raw)
    }
}

/// Whether a plain scalar may not start here (or this reader leaves it to the full parser): YAML's indicators,
/// `-` followed by a space, and `?` and `:` in any position.
fn starts_with_indicator(bytes: &[u8], start: usize, end: usize) -> bool {
    match bytes.get(start) {
        None => true,
        Some(b'-') => start + 1 == end || bytes.get(start + 1) == Some(&b' '),
        Some(c) => b"?:,[]{}#&*!|>'\"%@`".contains(c),
    }
}

/// The value of a plain scalar under YAML's core schema, or `None` where the full parser's answer is not obvious
/// (floats, other number forms, YAML 1.1 booleans and their capitalised spellings, merge keys).
fn resolve_plain(raw: &str) -> Option<Value> {
    match raw {
        "" | "~" | "null" => return Some(Value::Null),
        "true" => return Some(Value::Bool(true)),
        "false" => return Some(Value::Bool(false)),
        _ => {}
    }
    let bytes = raw.as_bytes();
    if super::special_word(raw) {
        return None;
    }
    let first = *bytes.first()?;
    if first.is_ascii_digit() || matches!(first, b'-' | b'+' | b'.') {
        if let Some(n) = integer(raw) {
            return Some(Value::Number(n));
        }
        // A character no number has makes it a string (`100m`, `128Mi`, `--port=80`), and so does the lack of both
        // a digit and the letters of `inf` and `nan` (`-i`, `--`); otherwise ask the full parser.
        let lower = |word: &[u8]| bytes.windows(word.len()).any(|w| w.eq_ignore_ascii_case(word));
        let maybe_number = bytes
            .iter()
            .all(|c| c.is_ascii_hexdigit() || b"+-._:xXoOiInNtTyY".contains(c))
            && (bytes.iter().any(u8::is_ascii_digit) || lower(b"inf") || lower(b"nan"));
        return (!maybe_number).then(|| Value::String(raw.to_owned()));
    }
    if first == b'<' && raw.starts_with("<<") {
        return None;
    }
    Some(Value::String(raw.to_owned()))
}

/// A decimal integer without sign, leading zeros or more than 18 digits.
fn integer(raw: &str) -> Option<Number> {
    let digits = raw.strip_prefix('-').unwrap_or(raw);
    if digits.is_empty() || digits.len() > 18 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    if digits.starts_with('0') && (digits.len() > 1 || raw.starts_with('-')) {
        return None;
    }
    let n: i64 = raw.parse().ok()?;
    Some(Number::from(n))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The fast reader's answer, checked against the full parser's.
    fn both(text: &str) -> Option<Value> {
        let fast = parse(text);
        if let Some(fast) = &fast {
            let full: Value = serde_saphyr::from_str(text).expect("the full parser accepts what the fast one does");
            assert_eq!(fast, &full, "for {text:?}");
        }
        fast
    }

    #[test]
    fn reads_the_usual_manifest_shapes() {
        let text = "apiVersion: apps/v1\nkind: Deployment # a comment\nmetadata:\n  name: web\n  labels: {app: web, \
                    tier: \"front\"}\n  annotations:\n    a: 'it''s'\n    b: \"x\\ny \\u00e9\"\nspec:\n  replicas: 2\n  \
                    template:\n    spec:\n      containers:\n      - name: app\n        args:\n        - --port=80\n        \
                    - -Xmx512m\n        resources: {limits: {cpu: 100m, memory: 128Mi}}\n        ports: [8080, \
                    {containerPort: 9090}]\n      -\n        name: second\n      - - nested\n        - deeper\n      \
                    volumes: []\n      empty:\n      nothing: ~\n      yes_key: true\n      neg: -3\n";
        let value = both(text).expect("in the subset");
        assert_eq!(value["spec"]["replicas"], 2);
        assert_eq!(value["metadata"]["annotations"]["a"], "it's");
        assert_eq!(value["metadata"]["annotations"]["b"], "x\ny é");
        let containers = &value["spec"]["template"]["spec"]["containers"];
        assert_eq!(containers[0]["args"][1], "-Xmx512m");
        assert_eq!(containers[0]["resources"]["limits"]["memory"], "128Mi");
        assert_eq!(containers[1]["name"], "second");
        assert_eq!(containers[2][1], "deeper");
        assert_eq!(value["spec"]["template"]["spec"]["empty"], Value::Null);
        assert_eq!(value["spec"]["template"]["spec"]["neg"], -3);
    }

    #[test]
    fn leaves_everything_else_to_the_full_parser() {
        for text in [
            "a: &x 1\nb: *x\n",
            "a: !!str 1\n",
            "a: >\n  text\n",
            "a: |+\n  text\n\n",
            "a: |2\n   text\n",
            "a: |\n\n  after a blank line\n",
            "a: |\n  text\n b: 1\n",
            "a: |\nb: 1\n",
            "a: |\n  no final line break",
            "a: plain\n  continued\n",
            "a: \"two\n  lines\"\n",
            "a: 1.5\n",
            "a: 0x1f\n",
            "a: 010\n",
            "a: yes\n",
            "a: True\n",
            "a: NULL\n",
            "a: .inf\n",
            "a: 2001-12-14\n",
            "a: 1.4.2\n",
            "a: 1\na: 2\n",
            "{a: 1}\n",
            "a: {b: 1,\n  c: 2}\n",
            "a: [1, 2, ]\n",
            "a:\tb\n",
            "a: b\r\n",
            "<<: {a: 1}\n",
            "? a\n: b\n",
            "8080: port\n",
            "a: b: c\n",
            "a: [b: c]\n",
            "a: \"\\x41\"\n",
            "just a scalar\n",
            "- a\nb: c\n",
            "a:\n    b: 1\n  c: 2\n",
            "%YAML 1.2\n---\na: 1\n",
            "a: 1\n...\n",
            "a: \"x\"y\n",
            "a: [-]\n",
            "a: [a, -]\n",
            "a: {k: -}\n",
            "- [-, a]\n",
            "a: \"open\n",
            "a: 'open\n",
            "a: \"\\u00\"\n",
            "a: \"\\ud800\"\n",
            "a: \"x\\\n",
            "a: \"\\e\"\n",
        ] {
            assert_eq!(both(text), None, "{text:?} should go to the full parser");
        }
        // Past the full parser's limits (depth, nodes, key length), and deep enough to overflow a recursive reader.
        for text in [
            format!("a: {}{}\n", "[".repeat(65), "]".repeat(65)),
            format!("a: {}1{}\n", "[".repeat(40_000), "]".repeat(40_000)),
            format!("{}a\n", "- ".repeat(40_000)),
            (0..70).map(|i| format!("{}k:\n", " ".repeat(i))).collect(),
            format!("a: [{}1]\n", "1, ".repeat(250_000)),
            format!("{}: v\n", "k".repeat(1025)),
            format!("'{}': v\n", "k".repeat(1023)),
            format!("a: {{{}: v}}\n", "k".repeat(1025)),
            format!("- {}: v\n", "k".repeat(1025)),
        ] {
            assert_eq!(parse(&text), None, "{:?}... should go to the full parser", &text[..40]);
        }
    }

    #[test]
    fn agrees_with_the_full_parser_on_edge_cases_it_accepts() {
        for text in [
            "",
            "# only a comment\n",
            "a:\n",
            "a: b#c\n",
            "a: http://x:80/p # c\n",
            "a: '-'\n",
            "list:\n- a\n- b\nnext: 1\n",
            "  indented: 1\n  too: 2\n",
            "a: 'x' # c\n",
            "a:    spaced   \n",
            "a: {}\n",
            "a: [[], {}, [a, [b]]]\n",
            "a: 9223372036854775\n",
            "a: -9\n",
            "a: 0\n",
            "\"quoted key\": 1\n'single': 2\n",
            "- a: 1\n  b: 2\n- c\n",
            "a: {\"k\": 'v', x: \"y\"}\n",
            "a: b,c\n",
            "a: $(VAR)\n",
            "a: |\n  line one\n\n    indented # not a comment\n  \n  last\n\n\nb: |-\n  stripped\nc: 1\n",
            "- |\n  in a sequence\n- |-\n  x\n",
            "- name: a\n  value: |\n    {\"k\": 1}\n- name: b\n",
            "a:\n  b: |  # a comment\n    x\n  c: 2\n",
            // Quoted scalars: runs between escapes, doubled single quotes, escapes at either end, non-ASCII text.
            "a: 'it''s a ''b''' \nb: ''''\nc: '\\n \\'\nd: 'é ü'\n",
            r#"a: "\"x\"""#,
            r#"a: "\u00e9\u0041z\/\t""#,
            r#"a: "é\n""#,
            r#"a: """#,
            r#"a: "a'b""#,
            r#"a: {k: "x\\", 'q''': 'y', z: "\""}"#,
        ] {
            assert!(both(text).is_some(), "{text:?} should be in the subset");
        }
    }
}
