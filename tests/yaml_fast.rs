//! The fast YAML reader (`mizzen::yaml::fast`) and writer (`mizzen::yaml::emit`) against the full parser and
//! serialiser on every YAML document we have: the project's own files and, when present, Istio's injection corpus
//! (`MIZZEN_CONFORMANCE_DIR`, default `../shared/conformance/istio-inject`; skipped with a message when absent, a
//! failure when `CI` is set). Where the fast ones answer, their answer must equal the full ones' (the writer's byte
//! for byte); they must also answer for the usual manifests.

mod common;

use std::path::{Path, PathBuf};

use common::corpus_dir;
use mizzen::kubeinject::split_documents;
use serde_json::Value;

fn yaml_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        let name = path.file_name().and_then(|n| n.to_str()).unwrap_or_default();
        if path.is_dir() {
            if name != "target" && !name.starts_with('.') {
                yaml_files(&path, out);
            }
        } else if name.ends_with(".yaml") || name.ends_with(".yml") || name.ends_with(".injected") {
            out.push(path);
        }
    }
}

/// (documents, documents the fast reader answered for, documents the fast writer answered for); panics on any
/// disagreement.
fn compare(files: &[PathBuf]) -> (usize, usize, usize) {
    let (mut documents, mut fast, mut written) = (0, 0, 0);
    for file in files {
        let Ok(text) = std::fs::read_to_string(file) else {
            continue;
        };
        for doc in split_documents(&text) {
            documents += 1;
            if let Ok(full) = serde_saphyr::from_str::<Value>(doc) {
                let mut out = String::new();
                if mizzen::yaml::emit::write_document(&mut out, &full) {
                    written += 1;
                    let expected = serde_saphyr::to_string(&full).unwrap();
                    assert_eq!(out, expected, "{}: the writers disagree on:\n{doc}", file.display());
                }
            }
            let Some(value) = mizzen::yaml::fast::parse(doc) else {
                continue;
            };
            fast += 1;
            let full: Value = serde_saphyr::from_str(doc).unwrap_or_else(|e| {
                panic!(
                    "{}: the fast reader accepted a document the full parser refuses ({e}):\n{doc}",
                    file.display()
                )
            });
            assert_eq!(value, full, "{}: the readers disagree on:\n{doc}", file.display());
        }
    }
    (documents, fast, written)
}

#[test]
fn the_fast_reader_agrees_with_the_full_parser_on_the_projects_files() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut files = Vec::new();
    for dir in ["config", "tests", "webhook", "operator", "hack"] {
        yaml_files(&root.join(dir), &mut files);
    }
    let documents = compare_and_count("project files", &files);
    assert!(documents > 50, "found only {documents} documents");
}

#[test]
fn the_fast_reader_agrees_with_the_full_parser_on_istios_corpus() {
    let Some(dir) = corpus_dir() else {
        eprintln!("skipped: Istio injection corpus not found (set MIZZEN_CONFORMANCE_DIR)");
        return;
    };
    let mut files = Vec::new();
    yaml_files(&dir, &mut files);
    let documents = compare_and_count("Istio's corpus", &files);
    // The corpus holds over 200 documents: a directory with none (a stray `cases.tsv`) must not pass.
    assert!(documents > 200, "found only {documents} documents in {}", dir.display());
}

/// [`compare`], printed under `what`; the fast reader and writer must each answer for at least 90% of the
/// documents. Returns how many documents there were.
fn compare_and_count(what: &str, files: &[PathBuf]) -> usize {
    let (documents, fast, written) = compare(files);
    println!("{what}: {documents} documents, the fast reader answered {fast}, the fast writer {written}");
    assert!(
        fast * 10 >= documents * 9,
        "the fast reader answered only {fast} of {documents} documents"
    );
    assert!(
        written * 10 >= documents * 9,
        "the fast writer answered only {written} of {documents} documents"
    );
    documents
}
