//! `class: remote`: one servegraph calling another over loopback, with the binary extension
//! and with JSON; the caller answers 503 quickly while the remote is down and recovers by
//! itself when it is back.

mod common;

use std::time::{Duration, Instant};

use common::*;
use serde_json::Value;

fn labels(r: &Reply) -> Value {
    let v = r.json();
    v["outputs"]
        .as_array()
        .unwrap()
        .iter()
        .find(|o| o["name"] == "label")
        .unwrap()["data"]
        .clone()
}

#[test]
fn a_graph_calls_a_model_on_another_server_and_survives_its_restart() {
    let mut upstream = Server::start("graphs/iris.yaml", &[]);
    let dir = tempfile::tempdir().unwrap();
    let graph = dir.path().join("proxy.yaml");
    std::fs::write(
        &graph,
        format!(
            "name: proxy
graph:
  kind: router
  routes:
    far-lr: {{kind: model, class: remote, url: \"http://{addr}\", model: iris-lr, attempt_timeout_ms: 1000, retries: 1, backoff_ms: 20}}
    far-rf: {{kind: model, class: remote, url: \"http://{addr}\", model: iris-rf, binary: false}}
",
            addr = upstream.addr
        ),
    )
    .unwrap();
    let proxy = Server::start(graph.to_str().unwrap(), &[]);
    let exp = expected();
    for (route, model) in [("far-lr", "iris-lr"), ("far-rf", "iris-rf")] {
        let r = post(
            &proxy.addr,
            &format!("/v2/models/{route}/infer"),
            &iris_request("p"),
        );
        assert_eq!(
            r.status,
            200,
            "{route}: {:?}",
            String::from_utf8_lossy(&r.body)
        );
        assert_eq!(labels(&r), exp[model]["label"], "{route}");
    }
    // Its metadata came from the upstream server at load.
    let md = get_blocking(&proxy.addr, "/v2/models/far-lr").json();
    assert_eq!(md["platform"], "remote");
    assert_eq!(md["inputs"][0]["name"], "input");
    // A request the remote refuses (422) is passed on as such, with the remote's message.
    let bad = r#"{"inputs":[{"name":"input","shape":[1,3],"datatype":"FP32","data":[1,2,3]}]}"#;
    let r = post(&proxy.addr, "/v2/models/far-lr/infer", bad);
    assert_eq!(r.status, 422);
    assert!(
        r.error()
            .contains("must have shape [-1, 4] but has shape [1, 3]"),
        "{}",
        r.error()
    );

    // The upstream goes away: fast 503s, no hang, the proxy keeps serving.
    let addr = upstream.addr.clone();
    assert!(upstream.terminate().success());
    let t0 = Instant::now();
    let r = post(
        &proxy.addr,
        "/v2/models/far-lr/infer",
        &iris_request("down"),
    );
    assert_eq!(r.status, 503, "{:?}", String::from_utf8_lossy(&r.body));
    assert!(r.error().contains("cannot reach"), "{}", r.error());
    assert!(r.error().contains("(after 2 attempts)"), "{}", r.error());
    assert!(
        t0.elapsed() < Duration::from_secs(5),
        "took {:?}",
        t0.elapsed()
    );
    assert_eq!(get_blocking(&proxy.addr, "/v2/health/live").status, 200);

    // It comes back on the same address: the proxy recovers without a restart.
    let _upstream = Server::start_at("graphs/iris.yaml", &addr, &[]);
    let r = post(
        &proxy.addr,
        "/v2/models/far-lr/infer",
        &iris_request("back"),
    );
    assert_eq!(r.status, 200, "{:?}", String::from_utf8_lossy(&r.body));
    assert_eq!(labels(&r), exp["iris-lr"]["label"]);
}

/// Issue 14: `protocol: grpc` calls the other server's gRPC port, tensors raw both ways; its
/// refusals and its absence are handled as over HTTP.
#[test]
fn a_remote_step_over_grpc_between_two_servers() {
    let mut upstream = Server::start("graphs/iris.yaml", &["--grpc-listen", "127.0.0.1:0"]);
    let grpc = upstream.grpc.clone().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let graph = dir.path().join("proxy.yaml");
    std::fs::write(
        &graph,
        format!(
            "name: proxy
graph:
  kind: router
  routes:
    far-lr: {{kind: model, class: remote, protocol: grpc, url: \"http://{grpc}\", model: iris-lr, attempt_timeout_ms: 1000, retries: 1, backoff_ms: 20}}
    far-rf: {{kind: model, class: remote, protocol: grpc, url: \"http://{grpc}\", model: iris-rf, version: \"1\"}}
"
        ),
    )
    .unwrap();
    let proxy = Server::start(graph.to_str().unwrap(), &[]);
    let exp = expected();
    for (route, model) in [("far-lr", "iris-lr"), ("far-rf", "iris-rf")] {
        let r = post(
            &proxy.addr,
            &format!("/v2/models/{route}/infer"),
            &iris_request("g"),
        );
        assert_eq!(
            r.status,
            200,
            "{route}: {:?}",
            String::from_utf8_lossy(&r.body)
        );
        assert_eq!(labels(&r), exp[model]["label"], "{route}");
    }
    // Its metadata came over gRPC at load.
    let md = get_blocking(&proxy.addr, "/v2/models/far-lr").json();
    assert_eq!(md["inputs"][0]["shape"], serde_json::json!([-1, 4]), "{md}");
    // The upstream's refusal is passed on with its message (INVALID_ARGUMENT: a 400).
    let bad = r#"{"inputs":[{"name":"input","shape":[1,3],"datatype":"FP32","data":[1,2,3]}]}"#;
    let r = post(&proxy.addr, "/v2/models/far-lr/infer", bad);
    assert_eq!(r.status, 400);
    assert!(
        r.error()
            .contains("must have shape [-1, 4] but has shape [1, 3]"),
        "{}",
        r.error()
    );
    // Down: fast 503s after the retries; back: served again without a restart.
    let addr = upstream.addr.clone();
    assert!(upstream.terminate().success());
    let t0 = Instant::now();
    let r = post(
        &proxy.addr,
        "/v2/models/far-lr/infer",
        &iris_request("down"),
    );
    assert_eq!(r.status, 503, "{:?}", String::from_utf8_lossy(&r.body));
    assert!(r.error().contains("(after 2 attempts)"), "{}", r.error());
    assert!(
        t0.elapsed() < Duration::from_secs(5),
        "took {:?}",
        t0.elapsed()
    );
    let _upstream = Server::start_at("graphs/iris.yaml", &addr, &["--grpc-listen", &grpc]);
    let r = post(
        &proxy.addr,
        "/v2/models/far-lr/infer",
        &iris_request("back"),
    );
    assert_eq!(r.status, 200, "{:?}", String::from_utf8_lossy(&r.body));
    assert_eq!(labels(&r), exp["iris-lr"]["label"]);
}

#[test]
fn remote_fields_are_validated() {
    let dir = tempfile::tempdir().unwrap();
    let graph = dir.path().join("bad.yaml");
    std::fs::write(
        &graph,
        "name: bad
graph:
  kind: router
  routes:
    a: {kind: model, class: remote}
    b: {kind: model, class: remote, url: \"ftp://x\"}
    c: {kind: model, class: remote, url: \"http://127.0.0.1:9\", model_path: m.onnx}
    d: {kind: model, class: onnx, model_path: ../models/iris_lr.onnx, url: \"http://x\"}
",
    )
    .unwrap();
    let out = bin()
        .args(["validate", "--short"])
        .arg(&graph)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stderr);
    for want in [
        "step `a`: missing field `url` for `class: remote`",
        "step `b`: `url` must be http://host:port, not `ftp://x`",
        "step `c`: `model_path` applies to `class: onnx`, not `class: remote`",
        "step `d`: `url` applies to `class: remote`, not `class: onnx`",
    ] {
        assert!(text.contains(want), "{want:?} not in {text}");
    }
}
