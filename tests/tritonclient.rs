//! The stock Python `tritonclient[http]` against the real server, unchanged: metadata, binary
//! and JSON tensors on `iris-lr`, `iris-rf` and the `iris` router, and a refused wrong dtype.
//! Needs the test virtualenv that `scripts/setup.sh --test` creates (or SERVEGRAPH_PYTHON).

mod common;

use std::process::Command;

use common::*;

#[test]
fn tritonclient_gets_correct_predictions() {
    let py = test_python();
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
