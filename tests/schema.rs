//! `servegraph schema` is a valid JSON Schema (draft 2020-12) that every example graph
//! satisfies and typical mistakes violate, checked with Python's `jsonschema`.

mod common;

use std::process::Command;

use common::*;

#[test]
fn the_schema_accepts_the_examples_and_refuses_mistakes() {
    let out = bin().arg("schema").output().unwrap();
    assert!(out.status.success());
    let dir = tempfile::tempdir().unwrap();
    let schema = dir.path().join("graph.schema.json");
    std::fs::write(&schema, &out.stdout).unwrap();
    let mut graphs: Vec<_> = std::fs::read_dir(root().join("graphs"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    graphs.sort();
    let out = Command::new(test_python())
        .arg(root().join("tests/python/schema_check.py"))
        .arg(&schema)
        .args(&graphs)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("all schema checks passed"), "{stdout}");
}
