//! Compact JSON text, byte for byte as `serde_json::to_writer` writes it, for the webhook's hot path.
//!
//! serde_json's string escaper looks each byte up in a table; the patch, the env entries and the annotations the
//! injector writes are mostly long runs that need no escape. Here a run is checked eight bytes at a time (one
//! `u64` word, bit tricks instead of a table), and the bits of a word that holds a byte to escape say which byte
//! comes first; a text of up to 16 bytes that needs no escape (most member names and many values) is written as
//! its one or two words and a truncation, without a call to `memcpy`. The escapes are serde_json's: `\"`, `\\`,
//! `\b`, `\f`, `\n`, `\r`, `\t`, and `\u00XX` (lower-case hex) for the other control characters. The Go flavour
//! adds the string escapes Go's `json.Marshal` has beyond those: `<`, `>`, `&` as `\u003c`, `\u003e`, `\u0026`, and
//! U+2028, U+2029 as `\u2028`, `\u2029` (only strings: numbers are serde_json's text, which for some floats is not
//! Go's, e.g. `3.0` for Go's `3`; the values Istio marshals hold integers).
//!
//! The tests compare both with serde_json (and the Go flavour with serde_json plus those five) for every byte
//! and character class at every position of a word, the bit tricks with a byte-by-byte check, and the short path's
//! loads with the bytes (a wrong one could only send clean text the slow way, which no output shows).

use serde_json::Value;

const ONES: u64 = 0x0101_0101_0101_0101;
const HIGH: u64 = 0x8080_8080_8080_8080;

/// The high bit of each byte of `word` that is below 0x20, `"` or `\\` (what serde_json escapes) may be set; the
/// lowest bit set marks the first such byte exactly, and none is set when there is none. `(x - n·ONES) & !x & HIGH`
/// flags the bytes of `x` below `n` (for `n` ≤ 0x80), and a byte equal to `c` is a zero byte of `x ^ c·ONES`,
/// whose high bit is `x`'s for `c` < 0x80. A borrow only runs upwards from a flagged byte, so bits above the
/// lowest may be wrong, never the lowest.
#[inline]
pub(crate) fn json_escapes(word: u64) -> u64 {
    let control = word.wrapping_sub(ONES * 0x20);
    let quote = (word ^ (ONES * u64::from(b'"'))).wrapping_sub(ONES);
    let backslash = (word ^ (ONES * u64::from(b'\\'))).wrapping_sub(ONES);
    (control | quote | backslash) & !word & HIGH
}

/// [`json_escapes`], and the bytes `<`, `>`, `&` and 0xE2 (the first byte of U+2028 and U+2029): what Go escapes,
/// with 0xE2 a candidate only.
#[inline]
fn go_escapes(word: u64) -> u64 {
    let lt = (word ^ (ONES * u64::from(b'<'))).wrapping_sub(ONES);
    let gt = (word ^ (ONES * u64::from(b'>'))).wrapping_sub(ONES);
    let amp = (word ^ (ONES * u64::from(b'&'))).wrapping_sub(ONES);
    let e2 = word ^ (ONES * 0xE2);
    json_escapes(word) | ((lt | gt | amp) & !word & HIGH) | (e2.wrapping_sub(ONES) & !e2 & HIGH)
}

/// The flagged bytes of `word` for the flavour: [`go_escapes`] or [`json_escapes`].
#[inline]
fn escapes(word: u64, go: bool) -> u64 {
    if go { go_escapes(word) } else { json_escapes(word) }
}

const HEX: &[u8; 16] = b"0123456789abcdef";

/// How a byte is written.
enum Escape {
    /// As it is.
    No,
    /// A backslash and this character.
    Short(u8),
    /// These six bytes, replacing this many bytes of the text (3 for U+2028 and U+2029).
    Long([u8; 6], usize),
}

/// The escape of `bytes[i]`.
#[inline]
fn escape_of(bytes: &[u8], i: usize, go: bool) -> Escape {
    let b = bytes[i];
    match b {
        b'"' => Escape::Short(b'"'),
        b'\\' => Escape::Short(b'\\'),
        0x08 => Escape::Short(b'b'),
        0x0C => Escape::Short(b'f'),
        b'\n' => Escape::Short(b'n'),
        b'\r' => Escape::Short(b'r'),
        b'\t' => Escape::Short(b't'),
        0x00..=0x1F => Escape::Long(
            [
                b'\\',
                b'u',
                b'0',
                b'0',
                HEX[usize::from(b >> 4)],
                HEX[usize::from(b & 0xF)],
            ],
            1,
        ),
        b'<' if go => Escape::Long(*b"\\u003c", 1),
        b'>' if go => Escape::Long(*b"\\u003e", 1),
        b'&' if go => Escape::Long(*b"\\u0026", 1),
        // U+2028 is E2 80 A8 and U+2029 is E2 80 A9.
        0xE2 if go && bytes.get(i + 1) == Some(&0x80) => match bytes.get(i + 2) {
            Some(0xA8) => Escape::Long(*b"\\u2028", 3),
            Some(0xA9) => Escape::Long(*b"\\u2029", 3),
            _ => Escape::No,
        },
        _ => Escape::No,
    }
}

/// The bytes of `short` (at most eight are read) as a little-endian word, padded with `A` (never escaped) past
/// its end: two overlapping loads of four or two bytes, or one byte, rather than a call to `memcpy`.
#[inline]
fn short_word(short: &[u8]) -> u64 {
    let n = short.len();
    if let Some(eight) = short.first_chunk::<8>() {
        return u64::from_le_bytes(*eight);
    }
    // The bytes past the end: shifting by 8·n < 64 leaves them `A`.
    let pad = (ONES * u64::from(b'A')) << (8 * n);
    // The two loads overlap when n is not 4 or 2; a byte ORed with itself is unchanged.
    let body = match (short.first_chunk::<4>(), short.last_chunk::<4>()) {
        (Some(lo), Some(hi)) => {
            u64::from(u32::from_le_bytes(*lo)) | u64::from(u32::from_le_bytes(*hi)) << (8 * (n - 4))
        }
        _ => match (short.first_chunk::<2>(), short.last_chunk::<2>()) {
            (Some(lo), Some(hi)) => {
                u64::from(u16::from_le_bytes(*lo)) | u64::from(u16::from_le_bytes(*hi)) << (8 * (n - 2))
            }
            _ => short.first().map_or(0, |b| u64::from(*b)),
        },
    };
    body | pad
}

/// A text of up to 16 bytes that needs no escape, written as one or two fixed-size stores of its words and a
/// truncation, not copied a byte count at a time; `false` (nothing written) for any other text.
#[inline]
fn short_clean(out: &mut Vec<u8>, bytes: &[u8], go: bool) -> bool {
    let n = bytes.len();
    let (head, tail) = match bytes.split_first_chunk::<8>() {
        None => (short_word(bytes), None),
        Some((head, rest)) if rest.len() <= 8 => (u64::from_le_bytes(*head), Some(short_word(rest))),
        Some(_) => return false,
    };
    if escapes(head, go) | tail.map_or(0, |tail| escapes(tail, go)) != 0 {
        return false;
    }
    out.reserve(18);
    let start = out.len();
    out.push(b'"');
    out.extend_from_slice(&head.to_le_bytes());
    if let Some(tail) = tail {
        out.extend_from_slice(&tail.to_le_bytes());
    }
    // Drops the padding after the text.
    out.truncate(start + 1 + n);
    out.push(b'"');
    true
}

fn string(out: &mut Vec<u8>, text: &str, go: bool) {
    let bytes = text.as_bytes();
    if short_clean(out, bytes, go) {
        return;
    }
    out.reserve(bytes.len() + 2);
    out.push(b'"');
    // Bytes before `start` are written; bytes from `start` to `i` need no escape.
    let (mut start, mut i) = (0, 0);
    while i < bytes.len() {
        // Eight bytes, or the last few padded with `A`, which is never escaped.
        let rest = &bytes[i..];
        let n = rest.len().min(8);
        let word = short_word(rest);
        let flagged = escapes(word, go);
        if flagged == 0 {
            i += n;
            continue;
        }
        i += (flagged.trailing_zeros() / 8) as usize;
        // Fixed-size writes of the escape itself, which compile to stores rather than calls.
        match escape_of(bytes, i, go) {
            Escape::Short(c) => {
                out.extend_from_slice(&bytes[start..i]);
                out.extend_from_slice(&[b'\\', c]);
                i += 1;
                start = i;
            }
            Escape::Long(text, used) => {
                out.extend_from_slice(&bytes[start..i]);
                out.extend_from_slice(&text);
                i += used;
                start = i;
            }
            // An 0xE2 that does not start U+2028 or U+2029.
            Escape::No => i += 1,
        }
    }
    out.extend_from_slice(&bytes[start..]);
    out.push(b'"');
}

/// Appends `text` as a JSON string, as serde_json writes it.
pub fn write_str(out: &mut Vec<u8>, text: &str) {
    string(out, text, false);
}

/// Appends `text` as a JSON string, as Go's `json.Marshal` writes it.
pub fn write_go_str(out: &mut Vec<u8>, text: &str) {
    string(out, text, true);
}

/// A string with its JSON written once: [`write_value_knowing`] appends that JSON for any string value equal to it
/// instead of escaping it again.
#[derive(Debug)]
pub struct Known {
    text: String,
    /// Its JSON, as [`write_str`] writes it (only [`Known::new`] makes one outside the tests).
    json: Vec<u8>,
}

impl Known {
    /// `text` with its JSON.
    pub fn new(text: String) -> Self {
        let mut json = Vec::with_capacity(text.len() + 64);
        string(&mut json, &text, false);
        Self { text, json }
    }

    /// The string.
    pub fn text(&self) -> &str {
        &self.text
    }
}

fn value(out: &mut Vec<u8>, v: &Value, go: bool, known: Option<&Known>) {
    match v {
        Value::Null => out.extend_from_slice(b"null"),
        Value::Bool(true) => out.extend_from_slice(b"true"),
        Value::Bool(false) => out.extend_from_slice(b"false"),
        // Writing a number into a Vec cannot fail; serde_json's own digits.
        Value::Number(n) => {
            let _ = serde_json::to_writer(&mut *out, n);
        }
        // A known string's JSON has serde_json's escapes, not Go's.
        Value::String(s) => match known {
            Some(k) if !go => write_str_knowing(out, s, k),
            _ => string(out, s, go),
        },
        Value::Array(items) => {
            out.push(b'[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                value(out, item, go, known);
            }
            out.push(b']');
        }
        Value::Object(map) => {
            out.push(b'{');
            for (i, (k, item)) in map.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                string(out, k, go);
                out.push(b':');
                value(out, item, go, known);
            }
            out.push(b'}');
        }
    }
}

/// Appends `v` as compact JSON, as `serde_json::to_writer` writes it (members in the map's order).
pub fn write_value(out: &mut Vec<u8>, v: &Value) {
    value(out, v, false, None);
}

/// [`write_value`], writing strings equal to `known`'s text from its JSON.
pub fn write_value_knowing(out: &mut Vec<u8>, v: &Value, known: &Known) {
    value(out, v, false, Some(known));
}

/// [`write_str`], from `known`'s JSON when `text` is its text.
pub fn write_str_knowing(out: &mut Vec<u8>, text: &str, known: &Known) {
    if text == known.text {
        out.extend_from_slice(&known.json);
    } else {
        string(out, text, false);
    }
}

/// Appends `v` as compact JSON with Go's `json.Marshal` string escapes (members in the map's order).
pub fn write_go_value(out: &mut Vec<u8>, v: &Value) {
    value(out, v, true, None);
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    /// serde_json's text, with Go's five extra escapes applied to it (they occur only inside strings).
    fn go_reference(text: &str) -> String {
        text.replace('<', "\\u003c")
            .replace('>', "\\u003e")
            .replace('&', "\\u0026")
            .replace('\u{2028}', "\\u2028")
            .replace('\u{2029}', "\\u2029")
    }

    fn check(text: &str) {
        check_after(b"prefix", text);
    }

    /// Both flavours write `text` after `prefix`, which they leave as it was.
    fn check_after(prefix: &[u8], text: &str) {
        let want = serde_json::to_string(text).unwrap();
        for (go, want) in [(false, want.clone()), (true, go_reference(&want))] {
            let mut out = prefix.to_vec();
            if go {
                write_go_str(&mut out, text);
            } else {
                write_str(&mut out, text);
            }
            let (before, written) = out.split_at(prefix.len());
            assert_eq!(before, prefix, "{text:?} go={go}");
            assert_eq!(std::str::from_utf8(written).unwrap(), want, "{text:?} go={go}");
        }
    }

    #[test]
    fn every_ascii_byte_and_the_special_characters_at_every_position_of_a_word() {
        let mut specials: Vec<String> = (0u8..0x80).map(|b| char::from(b).to_string()).collect();
        for c in [
            '\u{2028}', '\u{2029}', '\u{2027}', '\u{202A}', 'é', '€', '\u{E000}', '😀', '\u{80}', '\u{7FF}',
        ] {
            specials.push(c.to_string());
        }
        for special in &specials {
            for before in 0..17 {
                for after in [0, 1, 7, 8, 9] {
                    check(&format!("{}{special}{}", "a".repeat(before), "b".repeat(after)));
                }
            }
        }
    }

    #[test]
    fn runs_of_escapes_and_long_clean_text() {
        check("");
        check(&"x".repeat(1000));
        check(&"\"\\\n<&>\u{2028}\u{2029}\u{0}\u{1F}".repeat(9));
        check(&"abcdefg\"".repeat(20));
        // E2 80 80, E2 80 A7 and E2 82 AC start with 0xE2 but are not U+2028 or U+2029; E2 80 A8 is.
        check("\u{2000}\u{2027}\u{20AC}\u{2028}");
        check("\u{2000}\u{2027}\u{20AC}");
        // U+00E2 U+0080 U+00A8 (C3 A2 C2 80 C2 A8): the code points of U+2028's bytes, not U+2028.
        check("\u{e2}\u{80}\u{a8}");
    }

    #[test]
    fn random_mixes_of_special_and_plain_characters() {
        let alphabet: Vec<char> =
            // With the bytes one above each escaped one (` # ] = ? '`, U+3000 is E3 80 80), which a borrow from an
            // escaped byte below them can flag.
            "ab\"\\\n\t\u{0}\u{1F}\u{7F}<>&é€😀\u{2028}\u{2029}\u{2027}\u{2000}\u{E2}\u{A0}\u{100}\u{FFFF} #]=?'\u{3000}"
                .chars()
                .collect();
        // Half the texts short and mostly clean, for the short path; after prefixes of 0 to 17 bytes.
        let clean: Vec<char> = "abzAZ09-_./:é😀".chars().collect();
        let prefix = b"0123456789abcdefg";
        let mut next = crate::test_support::xorshift(0x2545_F491_4F6C_DD1D);
        for round in 0..40_000 {
            let (len, from) = if round % 2 == 0 {
                (next() % 40, &alphabet)
            } else {
                (next() % 20, &clean)
            };
            let text: String = (0..len).map(|_| from[(next() % from.len() as u64) as usize]).collect();
            check_after(&prefix[..(next() % 18) as usize], &text);
        }
    }

    /// A text's last bytes are read exactly: a wrong load that makes a byte look escapable, or a wrong padding
    /// byte, only sends clean text down the slow path, which the comparisons with serde_json cannot see.
    #[test]
    fn short_words_are_the_bytes_padded_with_a() {
        let text: Vec<u8> = (0u8..=255).collect();
        for start in 0..240 {
            for n in 0..=12 {
                let short = &text[start..start + n];
                let mut want = [b'A'; 8];
                for (to, from) in want.iter_mut().zip(short) {
                    *to = *from;
                }
                assert_eq!(short_word(short), u64::from_le_bytes(want), "{short:02x?}");
            }
        }
    }

    /// Every clean text of up to 16 bytes takes the fast path and is written exactly after what `out` held; a
    /// 17-byte text, or one with a byte to escape (in Go also any 0xE2, e.g. of U+2027), does not, and writes nothing.
    #[test]
    fn short_clean_takes_every_clean_text_of_up_to_16_bytes_and_nothing_else() {
        for filler in ["a", "é", "\u{2027}", "😀"] {
            for len in 0..=17usize {
                let mut text = "a".repeat(len % filler.len());
                text.push_str(&filler.repeat(len / filler.len()));
                for go in [false, true] {
                    let mut out = b"prefix".to_vec();
                    let taken = short_clean(&mut out, text.as_bytes(), go);
                    let clean = len <= 16 && !(go && text.contains('\u{2027}'));
                    assert_eq!(taken, clean, "{text:?} go={go}");
                    let want = if taken {
                        format!("prefix\"{text}\"")
                    } else {
                        "prefix".to_owned()
                    };
                    assert_eq!(out, want.into_bytes(), "{text:?} go={go}");
                }
            }
        }
        for len in 1..=16 {
            for at in 0..len {
                for b in [b'"', b'\\', 0, 0x1F, b'<', b'>', b'&'] {
                    let mut bytes = vec![b'a'; len];
                    bytes[at] = b;
                    for go in [false, true] {
                        let mut out = b"prefix".to_vec();
                        let special = go || !matches!(b, b'<' | b'>' | b'&');
                        assert_eq!(short_clean(&mut out, &bytes, go), !special, "{bytes:02x?} go={go}");
                        if special {
                            assert_eq!(out, b"prefix");
                        }
                    }
                }
            }
        }
    }

    /// The byte-by-byte truth of what the word tricks find.
    fn needs_escape(b: u8, go: bool) -> bool {
        b < 0x20 || b == b'"' || b == b'\\' || (go && matches!(b, b'<' | b'>' | b'&' | 0xE2))
    }

    #[test]
    fn the_word_tricks_find_the_first_byte_to_escape_and_miss_none() {
        // Bytes at and next to every boundary the tricks test, and the bytes that carry a borrow.
        let interesting = [
            0x00, 0x01, 0x1E, 0x1F, 0x20, 0x21, 0x22, 0x23, 0x25, 0x26, 0x27, 0x3B, 0x3C, 0x3D, 0x3E, 0x3F, 0x41, 0x5B,
            0x5C, 0x5D, 0x7F, 0x80, 0x81, 0xA0, 0xA2, 0xBC, 0xDC, 0xE1, 0xE2, 0xE3, 0xFE, 0xFF,
        ];
        let mut next = crate::test_support::xorshift(0x9E37_79B9_7F4A_7C15);
        for round in 0..400_000 {
            let r = next();
            // Half the words from the interesting bytes, half fully random.
            let bytes: [u8; 8] = if round % 2 == 0 {
                std::array::from_fn(|k| interesting[((r >> (k * 5)) % interesting.len() as u64) as usize])
            } else {
                r.to_le_bytes()
            };
            let word = u64::from_le_bytes(bytes);
            for (go, flagged) in [(false, json_escapes(word)), (true, go_escapes(word))] {
                let first = bytes.iter().position(|b| needs_escape(*b, go));
                let found = (flagged != 0).then(|| (flagged.trailing_zeros() / 8) as usize);
                assert_eq!(found, first, "{bytes:02x?} go={go}");
            }
        }
    }

    #[test]
    fn values_are_written_as_serde_json_writes_them() {
        let v = json!({
            "z": [1, -2, 3.5, 1e300, 0.1, u64::MAX, i64::MIN, null, true, false],
            "a": {"k\"ey": "v<a>l&ue\u{2028}", "": {}, "e": []},
            "m": "line\nbreak\ttab\u{7f}",
        });
        let mut out = Vec::new();
        write_value(&mut out, &v);
        assert_eq!(String::from_utf8(out).unwrap(), serde_json::to_string(&v).unwrap());
        let mut out = Vec::new();
        write_go_value(&mut out, &v);
        assert_eq!(
            String::from_utf8(out).unwrap(),
            go_reference(&serde_json::to_string(&v).unwrap())
        );
    }

    #[test]
    fn a_known_string_is_written_from_its_json_wherever_it_is_and_as_it_would_be() {
        let status = r#"{"initContainers":["a<b"],"containers":null}"#;
        let v = json!({"a": status, "b": [status, {"c": status}], "d": "other", status: status});
        let known = Known::new(status.to_owned());
        let mut out = Vec::new();
        write_value_knowing(&mut out, &v, &known);
        assert_eq!(String::from_utf8(out).unwrap(), serde_json::to_string(&v).unwrap());
        // It is the kept JSON that is written (keys are not values: written as they are).
        let marked = Known {
            text: status.to_owned(),
            json: b"0".to_vec(),
        };
        let mut out = Vec::new();
        write_value_knowing(&mut out, &v, &marked);
        let key = serde_json::to_string(status).unwrap();
        assert_eq!(
            String::from_utf8(out).unwrap(),
            format!(r#"{{"a":0,"b":[0,{{"c":0}}],"d":"other",{key}:0}}"#)
        );
    }
}
