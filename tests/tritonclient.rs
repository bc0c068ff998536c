//! The stock Python `tritonclient[http]` against the real server, unchanged: metadata, binary
//! and JSON tensors on `iris-lr`, `iris-rf` and the `iris` router, and a refused wrong dtype.
//! Needs the test virtualenv that `scripts/setup.sh --test` creates (or SERVEGRAPH_PYTHON).

mod common;

use std::path::PathBuf;
use std::process::Command;

use common::*;

fn python() -> PathBuf {
    if let Some(p) = std::env::var_os("SERVEGRAPH_PYTHON") {
        return PathBuf::from(p);
    }
    let cache = std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(std::env::var_os("HOME").expect("HOME")).join(".cache"));
    cache.join("servegraph/venv-test/bin/python")
}

#[test]
fn tritonclient_gets_correct_predictions() {
    let py = python();
    assert!(
        py.exists(),
        "{} is missing: run `scripts/setup.sh --test` (or set SERVEGRAPH_PYTHON)",
        py.display()
    );
    let s = Server::start("graphs/iris.yaml", &[]);
    let out = Command::new(&py)
        .arg(root().join("tests/python/tritonclient_check.py"))
        .arg(&s.addr)
        .arg(root().join("models/iris_expected.json"))
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "tritonclient checks failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains("all tritonclient checks passed"),
        "{stdout}"
    );
}
