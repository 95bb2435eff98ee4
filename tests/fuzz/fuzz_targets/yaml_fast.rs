//! The fast YAML reader and writer against the full parser and serialiser: wherever the fast reader answers, the
//! full parser must accept the text and give the same value; wherever the fast writer answers for a value the full
//! parser read, it must print the full serialiser's text byte for byte. Nothing may panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use serde_json::Value;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let full: Result<Value, _> = serde_saphyr::from_str(text);
    if let Some(fast) = mizzen::yaml::fast::parse(text) {
        match &full {
            Ok(full) => assert_eq!(&fast, full, "the readers disagree on {text:?}"),
            Err(e) => panic!("the full parser refuses what the fast reader accepted ({e}): {text:?}"),
        }
    }
    if let Ok(value) = full {
        let mut out = String::new();
        if mizzen::yaml::emit::write_document(&mut out, &value)
            && let Ok(expected) = serde_saphyr::to_string(&value)
        {
            assert_eq!(out, expected, "the writers disagree on {value}");
        }
    }
});
