//! YAML in and out: multi-document streams parsed to JSON values, and values printed as YAML documents.

use serde::Serialize;
use serde_json::Value;

pub mod emit;
pub mod fast;

/// Words YAML 1.1 or 1.2 readers may take for booleans, nulls or special floats, in any capitalisation: the fast
/// reader leaves them to the full parser, and the fast writer never writes them plain.
fn special_word(s: &str) -> bool {
    s.len() <= 8
        && [
            "y", "n", "yes", "no", "on", "off", "true", "false", "null", "nan", "inf", "infinity",
        ]
        .iter()
        .any(|word| word.eq_ignore_ascii_case(s))
}

/// Why a YAML stream could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum YamlError {
    /// The text is not valid YAML.
    #[error("invalid YAML in document {index}: {message}")]
    Parse {
        /// 1-based index of the document in the stream.
        index: usize,
        /// What the parser said.
        message: String,
    },
    /// A value could not be turned into YAML.
    #[error("cannot serialise to YAML: {0}")]
    Serialize(String),
}

/// Parses one YAML document (no `---` separators between documents): the fast reader where the text is in its
/// subset, the full parser otherwise, with the same result either way.
pub fn parse_document(text: &str) -> Result<Value, YamlError> {
    if let Some(value) = fast::parse(text) {
        return Ok(value);
    }
    serde_saphyr::from_str(text).map_err(|e| YamlError::Parse {
        index: 1,
        message: e.to_string(),
    })
}

/// Parses a multi-document YAML stream into JSON values, dropping empty documents.
pub fn parse_documents(text: &str) -> Result<Vec<Value>, YamlError> {
    let docs: Vec<Value> = serde_saphyr::from_multiple(text).map_err(|e| YamlError::Parse {
        index: 0,
        message: e.to_string(),
    })?;
    Ok(docs.into_iter().filter(|d| !d.is_null()).collect())
}

/// Prints one value as a YAML document (no leading `---`).
pub fn to_yaml<T: Serialize>(value: &T) -> Result<String, YamlError> {
    serde_saphyr::to_string(value).map_err(|e| YamlError::Serialize(e.to_string()))
}

/// Appends one value as a YAML document (no leading `---`) to `out`: the fast writer where the value is in its
/// subset, the full serialiser otherwise; the text is the same either way.
pub fn write_document(out: &mut String, value: &Value) -> Result<(), YamlError> {
    if emit::write_document(out, value) {
        return Ok(());
    }
    out.push_str(&to_yaml(value)?);
    Ok(())
}

/// Prints values as a multi-document YAML stream, each document introduced by `---`.
pub fn to_yaml_stream<T: Serialize>(values: &[T]) -> Result<String, YamlError> {
    let mut out = String::new();
    for value in values {
        out.push_str("---\n");
        out.push_str(&to_yaml(value)?);
    }
    Ok(out)
}
