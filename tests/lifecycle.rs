//! The serve process's life: it exits cleanly on SIGTERM, and a model that cannot load stops
//! it with the error instead of leaving a server that never becomes ready.

mod common;

use common::*;

#[test]
fn sigterm_stops_serving_and_exits_zero() {
    let mut s = Server::start("graphs/iris.yaml", &["--shutdown-timeout", "5"]);
    assert_eq!(
        post(&s.addr, "/v2/models/iris-lr/infer", &iris_request("a")).status,
        200
    );
    let status = s.terminate();
    assert!(status.success(), "exit status {status:?}");
    assert!(
        block_on(get(&s.addr, "/v2/health/live")).is_err(),
        "still listening after exit"
    );
}

#[test]
fn a_model_that_cannot_load_stops_serve_with_the_error() {
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bad.onnx");
    std::fs::write(&bad, b"this is not an onnx file").unwrap();
    let graph = dir.path().join("g.yaml");
    std::fs::write(&graph, "name: g\ngraph: {kind: router, routes: {m: {kind: model, class: onnx, model_path: bad.onnx}}}\n").unwrap();
    let out = bin()
        .args(["serve", graph.to_str().unwrap(), "--listen", "127.0.0.1:0"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("step `m`: ONNX Runtime cannot load"),
        "{stderr}"
    );
    assert!(stderr.contains("bad.onnx"), "{stderr}");
}
