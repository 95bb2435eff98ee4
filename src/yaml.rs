//! YAML in and out: multi-document streams parsed to JSON values, and values printed as YAML documents.

use serde::Serialize;
use serde_json::Value;

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

/// Prints values as a multi-document YAML stream, each document introduced by `---`.
pub fn to_yaml_stream<T: Serialize>(values: &[T]) -> Result<String, YamlError> {
    let mut out = String::new();
    for value in values {
        out.push_str("---\n");
        out.push_str(&to_yaml(value)?);
    }
    Ok(out)
}
