//! A JSON reader for the webhook's hot path: it walks a text member by member, borrows strings that have no
//! escapes, and skips what it does not read while checking it is JSON, a word at a time through strings.
//!
//! It reads only what it is sure of. Anything else (a key with an escape where a caller matches keys, a surrogate
//! escape anywhere, nesting deeper than [`MAX_DEPTH`] in what it skips or builds, a number where a caller wants a
//! string, a value serde_json builds by rules of its own: see [`Reader::value`]) is [`Bail`]: the caller then parses
//! the same text with serde_json, which decides, and words any error as always. So a text it reads is one serde_json
//! reads the same way, and a text it refuses costs a second parse but is read no differently, with one exception:
//! serde_json's recursion limit (128 levels) counts from where serde_json starts, so a value nested within a few levels
//! of it can be read when serde_json starts at the value (as [`Reader::serde`] has it) and refused when it starts
//! further out. What it accepts is a strict subset of what serde_json accepts: the four whitespace bytes, strings
//! without raw control characters and with the escapes `\" \\ \/ \b \f \n \r \t \uXXXX` (no surrogates), numbers
//! `-?(0|[1-9][0-9]*)(.[0-9]+)?([eE][+-]?[0-9]+)?`, `true`, `false`, `null`; the text is `&str`, so UTF-8 is checked
//! already. Keys with escapes inside skipped values are checked and accepted, as serde_json does.
#![cfg_attr(not(test), deny(clippy::indexing_slicing))]

use std::borrow::Cow;

use crate::json_text::json_escapes;

/// The reader met something it does not read: parse the text with serde_json instead.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Bail;

/// What the reader's steps give.
pub type Read<T> = Result<T, Bail>;

/// Containers nested deeper than this are not skipped or built here (serde_json's own limit, 128, applies to what
/// it builds; its skipping has none, and this one only sends the text back to it).
pub const MAX_DEPTH: usize = 64;

/// serde_json's private key by which a JSON object stands for the text of another value: serde_json's own trees
/// (`Value`, with its `raw_value` feature) build an object whose first key it is as that value. No API server
/// sends it.
pub const RAW_VALUE_KEY: &str = "$serde_json::private::RawValue";

/// What serde_json's private keys start with ([`RAW_VALUE_KEY`]; with its `arbitrary_precision` feature, a number's):
/// [`Reader::value`] leaves an object whose first key starts so to serde_json.
const PRIVATE_KEYS: &str = "$serde_json::private::";

/// A position in a JSON text (cloned to come back to it).
#[derive(Clone)]
pub struct Reader<'a> {
    text: &'a str,
    at: usize,
}

impl<'a> Reader<'a> {
    /// A reader at the start of `text`.
    pub fn new(text: &'a str) -> Self {
        Self { text, at: 0 }
    }

    fn bytes(&self) -> &'a [u8] {
        self.text.as_bytes()
    }

    /// The next byte that is not whitespace, not taken.
    pub fn peek(&mut self) -> Option<u8> {
        let bytes = self.bytes();
        while let Some(&b) = bytes.get(self.at) {
            if !matches!(b, b' ' | b'\n' | b'\r' | b'\t') {
                return Some(b);
            }
            self.at += 1;
        }
        None
    }

    /// Takes `b`, after whitespace.
    fn eat(&mut self, b: u8) -> Read<()> {
        if self.peek() != Some(b) {
            return Err(Bail);
        }
        self.at += 1;
        Ok(())
    }

    /// Whether only whitespace is left.
    pub fn at_end(&mut self) -> bool {
        self.peek().is_none()
    }

    /// The text from here on (after whitespace).
    pub fn rest(&mut self) -> &'a str {
        self.peek();
        self.text.get(self.at..).unwrap_or_default()
    }

    /// Moves `n` bytes on, past what another reader took of [`Self::rest`].
    pub fn advance(&mut self, n: usize) -> Read<()> {
        let at = self.at + n;
        if at > self.text.len() || !self.text.is_char_boundary(at) {
            return Err(Bail);
        }
        self.at = at;
        Ok(())
    }

    /// Takes `null` when it comes next: whether it did.
    pub fn null(&mut self) -> bool {
        if self.peek() == Some(b'n') && self.bytes().get(self.at..self.at + 4) == Some(b"null") {
            self.at += 4;
            return true;
        }
        false
    }

    /// Takes `true` or `false`.
    pub fn bool(&mut self) -> Read<bool> {
        let value = match self.peek() {
            Some(b't') => true,
            Some(b'f') => false,
            _ => return Err(Bail),
        };
        let word: &[u8] = if value { b"true" } else { b"false" };
        if self.bytes().get(self.at..self.at + word.len()) != Some(word) {
            return Err(Bail);
        }
        self.at += word.len();
        Ok(value)
    }

    /// Takes a string, after whitespace: its text, borrowed when it has no escape.
    pub fn string(&mut self) -> Read<Cow<'a, str>> {
        if self.peek() != Some(b'"') {
            return Err(Bail);
        }
        let start = self.at;
        if self.skip_string()? {
            // Rare: serde_json decodes it, exactly as it would have.
            let token = self.text.get(start..self.at).ok_or(Bail)?;
            return serde_json::from_str::<String>(token).map(Cow::Owned).map_err(|_| Bail);
        }
        self.text.get(start + 1..self.at - 1).map(Cow::Borrowed).ok_or(Bail)
    }

    /// Takes a string without escapes, after whitespace: an object's key as the caller matches it.
    fn key(&mut self) -> Read<&'a str> {
        if self.peek() != Some(b'"') {
            return Err(Bail);
        }
        let start = self.at + 1;
        if self.skip_string()? {
            return Err(Bail);
        }
        self.text.get(start..self.at - 1).ok_or(Bail)
    }

    /// Takes a string at `"`, checked: whether it has escapes. Inlined for the usual string: eight bytes at a time
    /// to its closing `"` with nothing to check before it; anything else (an escape, a control byte, the text's
    /// last bytes) is [`Self::skip_string_from`]'s.
    #[inline]
    fn skip_string(&mut self) -> Read<bool> {
        let bytes = self.bytes();
        let mut i = self.at + 1;
        while let Some(word) = bytes.get(i..i + 8).and_then(|w| w.first_chunk::<8>()) {
            let flagged = json_escapes(u64::from_le_bytes(*word));
            if flagged != 0 {
                i += (flagged.trailing_zeros() / 8) as usize;
                if bytes.get(i) == Some(&b'"') {
                    self.at = i + 1;
                    return Ok(false);
                }
                break;
            }
            i += 8;
        }
        self.skip_string_from(i, false)
    }

    /// [`Self::skip_string`] from byte `i` of a string whose bytes before it are checked (`escaped`: whether they
    /// had an escape).
    #[inline(never)]
    fn skip_string_from(&mut self, mut i: usize, mut escaped: bool) -> Read<bool> {
        let bytes = self.bytes();
        loop {
            // Eight bytes at a time to the first `"`, `\` or control byte; the last few one at a time.
            while let Some(word) = bytes.get(i..i + 8).and_then(|w| w.first_chunk::<8>()) {
                let flagged = json_escapes(u64::from_le_bytes(*word));
                if flagged != 0 {
                    i += (flagged.trailing_zeros() / 8) as usize;
                    break;
                }
                i += 8;
            }
            while bytes.get(i).is_some_and(|&b| b >= 0x20 && b != b'"' && b != b'\\') {
                i += 1;
            }
            match bytes.get(i) {
                Some(b'"') => {
                    self.at = i + 1;
                    return Ok(escaped);
                }
                Some(b'\\') => {
                    escaped = true;
                    match bytes.get(i + 1) {
                        Some(b'"' | b'\\' | b'/' | b'b' | b'f' | b'n' | b'r' | b't') => i += 2,
                        Some(b'u') => {
                            let hex = bytes.get(i + 2..i + 6).ok_or(Bail)?;
                            if !hex.iter().all(u8::is_ascii_hexdigit) {
                                return Err(Bail);
                            }
                            // Surrogates, paired or not, are left to serde_json.
                            if matches!(hex.first(), Some(b'd' | b'D'))
                                && matches!(hex.get(1), Some(b'8'..=b'9' | b'a'..=b'f' | b'A'..=b'F'))
                            {
                                return Err(Bail);
                            }
                            i += 6;
                        }
                        _ => return Err(Bail),
                    }
                }
                // A control byte, or the end of the text.
                _ => return Err(Bail),
            }
        }
    }

    /// Takes a number, checked against JSON's grammar.
    fn skip_number(&mut self) -> Read<()> {
        let bytes = self.bytes();
        let digits = |mut i: usize| {
            while bytes.get(i).is_some_and(u8::is_ascii_digit) {
                i += 1;
            }
            i
        };
        let mut i = self.at;
        if bytes.get(i) == Some(&b'-') {
            i += 1;
        }
        match bytes.get(i) {
            Some(b'0') => i += 1,
            Some(b'1'..=b'9') => i = digits(i + 1),
            _ => return Err(Bail),
        }
        if bytes.get(i) == Some(&b'.') {
            let end = digits(i + 1);
            if end == i + 1 {
                return Err(Bail);
            }
            i = end;
        }
        if matches!(bytes.get(i), Some(b'e' | b'E')) {
            i += 1;
            if matches!(bytes.get(i), Some(b'+' | b'-')) {
                i += 1;
            }
            let end = digits(i);
            if end == i {
                return Err(Bail);
            }
            i = end;
        }
        // `01`, `1.5.`, `2x`: what follows a number is for the caller to check, but a digit never may.
        if bytes.get(i).is_some_and(u8::is_ascii_digit) {
            return Err(Bail);
        }
        self.at = i;
        Ok(())
    }

    /// Takes a scalar (string, number, literal) or the opening of a container: which container, if one.
    fn value_start(&mut self) -> Read<Option<u8>> {
        match self.peek() {
            Some(b'"') => self.skip_string().map(|_| None),
            Some(b'-' | b'0'..=b'9') => self.skip_number().map(|()| None),
            Some(b't' | b'f') => self.bool().map(|_| None),
            Some(b'n') if self.null() => Ok(None),
            Some(open @ (b'{' | b'[')) => {
                self.at += 1;
                Ok(Some(open))
            }
            _ => Err(Bail),
        }
    }

    /// Takes a member's key and its colon, after whitespace.
    fn key_and_colon(&mut self) -> Read<()> {
        if self.peek() != Some(b'"') {
            return Err(Bail);
        }
        self.skip_string()?;
        self.eat(b':')
    }

    /// Takes any value, checked, without building it.
    pub fn skip(&mut self) -> Read<()> {
        // The open containers, innermost last: `true` for an object.
        let mut open = [false; MAX_DEPTH];
        let mut depth = 0;
        loop {
            // A value is due.
            if let Some(container) = self.value_start()? {
                let object = container == b'{';
                let close = if object { b'}' } else { b']' };
                if self.peek() == Some(close) {
                    self.at += 1;
                } else {
                    *open.get_mut(depth).ok_or(Bail)? = object;
                    depth += 1;
                    if object {
                        self.key_and_colon()?;
                    }
                    continue;
                }
            }
            // A value was taken: a comma and the next one, or the end of containers.
            loop {
                let Some(object) = depth.checked_sub(1).and_then(|d| open.get(d).copied()) else {
                    return Ok(());
                };
                match self.peek() {
                    Some(b',') => {
                        self.at += 1;
                        if object {
                            self.key_and_colon()?;
                        }
                        break;
                    }
                    Some(b'}') if object => {}
                    Some(b']') if !object => {}
                    _ => return Err(Bail),
                }
                self.at += 1;
                depth -= 1;
            }
        }
    }

    /// Takes any value, checked, without building it: its text (without the whitespace around it), as serde_json's
    /// `RawValue` has it.
    pub fn skip_text(&mut self) -> Read<&'a str> {
        self.peek();
        let start = self.at;
        self.skip()?;
        self.text.get(start..self.at).ok_or(Bail)
    }

    /// Takes the next value as serde_json reads it into `T` (borrowing from the text where `T` does); any error
    /// is [`Bail`], for serde_json to word when it parses the whole text.
    pub fn serde<T: serde::Deserialize<'a>>(&mut self) -> Read<T> {
        let mut values = serde_json::Deserializer::from_str(self.rest()).into_iter::<T>();
        let value = values.next().and_then(Result::ok).ok_or(Bail)?;
        self.advance(values.byte_offset())?;
        Ok(value)
    }

    /// Takes any value and builds it as serde_json builds its `Value`: strings decoded, integers as its `u64` (or
    /// `i64` when negative), an object's repeated key the last one's. [`Bail`] for what serde_json builds by its own
    /// rules (fractions, exponents, integers out of range and `-0`, which it makes floats; an object whose first
    /// key is one of its private keys, such as [`RAW_VALUE_KEY`]), keys with escapes, and nesting deeper than
    /// [`MAX_DEPTH`].
    pub fn value(&mut self) -> Read<serde_json::Value> {
        self.value_within(MAX_DEPTH)
    }

    fn value_within(&mut self, depth: usize) -> Read<serde_json::Value> {
        use serde_json::Value;
        match self.peek() {
            Some(b'"') => self.string().map(|s| Value::String(s.into_owned())),
            Some(b'-' | b'0'..=b'9') => self.integer(),
            Some(b't' | b'f') => self.bool().map(Value::Bool),
            Some(b'n') if self.null() => Ok(Value::Null),
            Some(b'[') if depth > 0 => {
                let mut items = Vec::new();
                self.array(|r| {
                    items.push(r.value_within(depth - 1)?);
                    Ok(())
                })?;
                Ok(Value::Array(items))
            }
            Some(b'{') if depth > 0 => {
                let mut map = serde_json::Map::new();
                self.object(|r, key| {
                    if map.is_empty() && key.starts_with(PRIVATE_KEYS) {
                        return Err(Bail);
                    }
                    let value = r.value_within(depth - 1)?;
                    map.insert(key.to_owned(), value);
                    Ok(())
                })?;
                Ok(Value::Object(map))
            }
            _ => Err(Bail),
        }
    }

    /// Takes an integer that serde_json reads as one.
    fn integer(&mut self) -> Read<serde_json::Value> {
        let start = self.at;
        self.skip_number()?;
        let text = self.text.get(start..self.at).ok_or(Bail)?;
        if text.bytes().any(|b| matches!(b, b'.' | b'e' | b'E')) {
            return Err(Bail);
        }
        match text.parse::<u64>() {
            Ok(n) => Ok(n.into()),
            Err(_) => match text.parse::<i64>() {
                Ok(n) if n < 0 => Ok(n.into()),
                _ => Err(Bail),
            },
        }
    }

    /// Takes a list, `item` taking each of its items.
    pub fn array(&mut self, mut item: impl FnMut(&mut Self) -> Read<()>) -> Read<()> {
        self.eat(b'[')?;
        if self.peek() == Some(b']') {
            self.at += 1;
            return Ok(());
        }
        loop {
            item(self)?;
            match self.peek() {
                Some(b',') => self.at += 1,
                Some(b']') => {
                    self.at += 1;
                    return Ok(());
                }
                _ => return Err(Bail),
            }
        }
    }

    /// Takes an object, handing each member's key to `member`, which takes its value. Keys with escapes are not
    /// read here (the caller could not match them as serde_json would without decoding them).
    pub fn object(&mut self, mut member: impl FnMut(&mut Self, &'a str) -> Read<()>) -> Read<()> {
        self.eat(b'{')?;
        if self.peek() == Some(b'}') {
            self.at += 1;
            return Ok(());
        }
        loop {
            let key = self.key()?;
            self.eat(b':')?;
            member(self, key)?;
            match self.peek() {
                Some(b',') => self.at += 1,
                Some(b'}') => {
                    self.at += 1;
                    return Ok(());
                }
                _ => return Err(Bail),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use serde::de::IgnoredAny;

    use super::*;

    /// What serde_json says of skipping `text` whole.
    fn serde_skips(text: &str) -> bool {
        serde_json::from_str::<IgnoredAny>(text).is_ok()
    }

    fn skips(text: &str) -> Read<()> {
        let mut r = Reader::new(text);
        r.skip()?;
        if r.at_end() { Ok(()) } else { Err(Bail) }
    }

    #[test]
    fn what_it_skips_serde_json_skips_and_it_refuses_what_serde_json_refuses() {
        let cases = [
            r#"{}"#,
            r#"[]"#,
            r#" { "a" : [ 1 , -2.5e+3 , 0 , 0.0 , 1E9 , true , false , null , "x" , { } , [ ] ] } "#,
            r#"{"a":{"b":{"c":[[["d"]]]}}}"#,
            r#""plain""#,
            r#""esc \" \\ \/ \b \f \n \r \t \u00e9 \u0041""#,
            r#""long enough to take the word path, with an escape \n in the middle of it all""#,
            r#""é ü ✓ 😀 non-ASCII""#,
            "-0",
            "123456789012345678901234567890",
            "1e400",
            // Refused by both.
            r#"{"a":}"#,
            r#"{"a" 1}"#,
            r#"{"a":1,}"#,
            r#"[1,]"#,
            r#"[1 2]"#,
            r#"{"a":1"#,
            r#"["#,
            "01",
            "1.",
            ".5",
            "-",
            "1e",
            "1e+",
            "+1",
            "tru",
            "nul",
            "True",
            r#""unterminated"#,
            r#""bad \x escape""#,
            r#""bad \u12 escape""#,
            "\"raw \u{1} control\"",
            "\"raw \n newline\"",
            r#"{1:2}"#,
            r#"[}"#,
            r#"{]"#,
            "",
            "   ",
        ];
        for text in cases {
            match skips(text) {
                Ok(()) => assert!(serde_skips(text), "{text:?} skipped here, refused by serde_json"),
                Err(Bail) => assert!(!serde_skips(text), "{text:?} refused here, skipped by serde_json"),
            }
        }
    }

    #[test]
    fn more_edges_agree_with_serde_json() {
        for text in [
            "-01",
            "1.e5",
            "1.5e",
            "[1]]",
            "[1],",
            r#""\u12"#,
            r#""\u12""#,
            r#""\"#,
            r#"{"\u0061":1,"b\n":[{"\\":null}]}"#,
            "[-0.0e-0,0E+1,10,1e010]",
            "\u{feff}{}",
            "{\"a\":1}\u{0}",
        ] {
            match skips(text) {
                Ok(()) => assert!(serde_skips(text), "{text:?} skipped here, refused by serde_json"),
                Err(Bail) => assert!(!serde_skips(text), "{text:?} refused here, skipped by serde_json"),
            }
        }
    }

    #[test]
    fn the_word_path_and_the_tail_stop_at_every_byte_to_stop_at_wherever_it_is() {
        // A byte that ends or breaks a string at each position of the first two words and of the tail.
        for len in 1..24 {
            for at in 0..len {
                for (special, ends) in [
                    (b'"', true),
                    (b'\\', false),
                    (0x01, false),
                    (b'\n', false),
                    (0x1f, false),
                ] {
                    let mut body = vec![b'a'; len];
                    body[at] = special;
                    let text = format!("\"{}\"", String::from_utf8(body).unwrap());
                    let mut r = Reader::new(&text);
                    let read = r.string();
                    if ends {
                        // The string ends at `at`, and the reader right after it.
                        assert_eq!(read.unwrap(), "a".repeat(at), "{text:?}");
                        assert_eq!(r.rest(), &text[at + 2..], "{text:?}");
                    } else {
                        assert_eq!(read.is_ok(), serde_json::from_str::<String>(&text).is_ok(), "{text:?}");
                        assert!(read.is_err(), "{text:?}");
                    }
                }
            }
        }
    }

    #[test]
    fn advancing_stays_within_the_text_and_on_character_boundaries() {
        let mut r = Reader::new("  ab");
        assert_eq!(r.rest(), "ab");
        assert_eq!(r.advance(3), Err(Bail));
        assert_eq!(r.advance(2), Ok(()));
        assert!(r.at_end());
        let mut r = Reader::new("é");
        assert_eq!(r.advance(1), Err(Bail));
        assert_eq!(r.advance(2), Ok(()));
    }

    #[test]
    fn values_are_built_as_serde_json_builds_them_or_left_to_it() {
        let deep = |n: usize| format!("{}{}", "[".repeat(n), "]".repeat(n));
        let cases: &[(&str, bool)] = &[
            ("null", true),
            ("true", true),
            ("false", true),
            ("0", true),
            ("7", true),
            ("-7", true),
            ("18446744073709551615", true),
            ("-9223372036854775808", true),
            ("18446744073709551616", false),
            ("-9223372036854775809", false),
            ("-0", false),
            ("1.5", false),
            ("1e3", false),
            ("1E3", false),
            ("\"\"", true),
            ("\"a\\u00e9\\n\\\"b\"", true),
            ("\"\\ud83d\\ude00\"", false),
            ("[]", true),
            ("{}", true),
            (" [ 1 , \"x\" , { \"a\" : [ null ] } ] ", true),
            ("{\"b\":1,\"a\":2,\"b\":3}", true),
            ("{\"b\":{\"x\":1},\"b\":{\"y\":2}}", true),
            ("{\"\\u0061\":1}", false),
            ("{\"$serde_json::private::RawValue\":\"[1]\"}", false),
            ("{\"$serde_json::private::Number\":\"1\"}", false),
            ("{\"\\ud83d\\ude00\":1}", false),
            ("\"\\u0000\"", true),
            ("\"a\u{1}b\"", false),
            ("{\"a\":{\"$serde_json::private::RawValue\":\"[1]\"}}", false),
            ("{\"a\":1,\"$serde_json::private::RawValue\":\"[1]\"}", true),
            ("{\"a\":1,}", false),
            ("[1,]", false),
            ("[1 2]", false),
            ("{\"a\" 1}", false),
            ("nul", false),
            ("tru", false),
            ("01", false),
            ("\"a", false),
            ("", false),
        ];
        let deeper = [(deep(MAX_DEPTH), true), (deep(MAX_DEPTH + 1), false)];
        let cases = cases.iter().map(|(t, b)| ((*t).to_owned(), *b)).chain(deeper);
        for (text, expected) in cases {
            let mut r = Reader::new(&text);
            let built = r.value().ok().filter(|_| r.at_end());
            if let Some(built) = &built {
                let full: serde_json::Value = serde_json::from_str(&text).unwrap();
                // Values compare numbers by kind too: a float never equals an integer, `-0.0` never `0`.
                assert_eq!(built, &full, "{text}");
            }
            assert_eq!(built.is_some(), expected, "{text}");
        }
    }

    #[test]
    fn surrogates_and_deep_nesting_are_left_to_serde_json() {
        for text in [r#""\ud83d\ude00""#, r#""\uD800""#, r#""\uDFFF""#] {
            assert_eq!(skips(text), Err(Bail), "{text}");
        }
        assert_eq!(skips(r#""\uE000 \uCFFF""#), Ok(()));
        let nested = |n: usize| format!("{}1{}", "[".repeat(n), "]".repeat(n));
        assert_eq!(skips(&nested(MAX_DEPTH)), Ok(()));
        assert_eq!(skips(&nested(MAX_DEPTH + 1)), Err(Bail));
        let objects = |n: usize| format!("{}1{}", r#"{"a":"#.repeat(n), "}".repeat(n));
        assert_eq!(skips(&objects(MAX_DEPTH)), Ok(()));
        assert_eq!(skips(&objects(MAX_DEPTH + 1)), Err(Bail));
    }

    #[test]
    fn strings_are_borrowed_without_escapes_and_decoded_as_serde_json_decodes_them() {
        for text in [
            r#""""#,
            r#""web""#,
            r#""a longer value than a word, é""#,
            r#""tab\tand \u00e9""#,
        ] {
            let mut r = Reader::new(text);
            let read = r.string().unwrap();
            assert_eq!(read, serde_json::from_str::<String>(text).unwrap());
            assert_eq!(matches!(read, Cow::Borrowed(_)), !text.contains('\\'), "{text}");
            assert!(r.at_end());
        }
    }

    #[test]
    fn objects_hand_over_their_members_and_refuse_escaped_keys() {
        let mut seen = Vec::new();
        let mut r = Reader::new(r#" { "a" : 1 , "b" : [true] } "#);
        r.object(|r, key| {
            seen.push(key);
            r.skip()
        })
        .unwrap();
        assert!(r.at_end());
        assert_eq!(seen, ["a", "b"]);
        let mut r = Reader::new(r#"{"\u0061":1}"#);
        assert_eq!(r.object(|r, _| r.skip()), Err(Bail));
        let mut r = Reader::new(r#"{"a":1 "b":2}"#);
        assert_eq!(r.object(|r, _| r.skip()), Err(Bail));
    }
}
