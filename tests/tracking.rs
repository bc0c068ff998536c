//! The tracking stream through the real binary: one JSON event per (sampled) request with
//! MLRun's field names, failures included, written in batches and flushed at shutdown.

mod common;

use common::*;
use serde_json::{Value, json};

/// `graph` (an example file) with `tracking` added, in a temp dir; model paths made absolute.
fn with_tracking(example: &str, tracking: &str, dir: &std::path::Path) -> std::path::PathBuf {
    let text = std::fs::read_to_string(root().join(example)).unwrap();
    let text = text.replace("../models/", &format!("{}/models/", root().display()));
    let path = dir.join("g.yaml");
    std::fs::write(&path, format!("{text}tracking: {tracking}\n")).unwrap();
    path
}

fn events(path: &std::path::Path) -> Vec<Value> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

#[test]
fn every_request_is_tracked_and_the_stream_is_flushed_at_shutdown() {
    let dir = tempfile::tempdir().unwrap();
    let graph = with_tracking(
        "graphs/iris.yaml",
        "{sink: \"file://events.jsonl\", batch: 2, flush_ms: 60000, labels: {env: test}}",
        dir.path(),
    );
    let mut s = Server::start(graph.to_str().unwrap(), &[]);
    assert_eq!(
        post(&s.addr, "/v2/models/iris-lr/infer", &iris_request("t1")).status,
        200
    );
    assert_eq!(
        post(&s.addr, "/v2/models/iris-rf/infer", &iris_request("t2")).status,
        200
    );
    assert_eq!(
        post(&s.addr, "/v2/models/iris/infer", &iris_request("t3")).status,
        200
    );
    let bad =
        r#"{"id":"t4","inputs":[{"name":"input","shape":[1,3],"datatype":"FP32","data":[1,2,3]}]}"#;
    assert_eq!(post(&s.addr, "/v2/models/iris-lr/infer", bad).status, 422);
    // Batches of 2 with a long flush: the last batch is written only at shutdown.
    assert!(s.terminate().success());
    let evs = events(&dir.path().join("events.jsonl"));
    let ids: Vec<&str> = evs.iter().map(|e| e["id"].as_str().unwrap()).collect();
    assert_eq!(ids, ["t1", "t2", "t3", "t4"]);

    let e = &evs[0];
    assert_eq!(e["graph"], "iris");
    assert_eq!(e["model"], "iris-lr");
    assert_eq!(e["route"], "iris-lr");
    assert_eq!(e["op"], "infer");
    assert_eq!(e["labels"], json!({"env": "test"}));
    assert!(e["when"].as_str().unwrap().ends_with('Z'));
    assert!(e["microsec"].as_u64().unwrap() > 0);
    assert!(e["step_microsec"]["iris"].as_u64().is_some(), "{e}");
    assert_eq!(e["request"][0]["name"], "input");
    assert_eq!(e["request"][0]["data"].as_array().unwrap().len(), 40);
    let label = e["resp"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["name"] == "label")
        .unwrap();
    assert_eq!(label["data"], expected()["iris-lr"]["label"]);
    assert!(e.get("error").is_none());
    // The router's choice is recorded.
    assert_eq!(evs[2]["model"], "iris");
    assert!(["iris-lr", "iris-rf"].contains(&evs[2]["route"].as_str().unwrap()));
    // The failure, with its error, the route it took and no response.
    assert_eq!(evs[3]["resp"], Value::Null);
    assert_eq!(evs[3]["route"], "iris-lr", "{}", evs[3]);
    assert!(
        evs[3]["error"]
            .as_str()
            .unwrap()
            .contains("must have shape [-1, 4]"),
        "{}",
        evs[3]
    );
}

#[test]
fn sampling_and_step_timings_in_a_flow() {
    let dir = tempfile::tempdir().unwrap();
    let graph = with_tracking(
        "graphs/iris-ensemble.yaml",
        "{sink: \"file://e.jsonl\", sample: 2, batch: 1, max_tensor_elements: 8}",
        dir.path(),
    );
    let mut s = Server::start(graph.to_str().unwrap(), &[]);
    for i in 0..6 {
        let r = post(
            &s.addr,
            "/v2/models/iris-ensemble/infer",
            &iris_request(&format!("s{i}")),
        );
        assert_eq!(r.status, 200);
    }
    assert!(s.terminate().success());
    let evs = events(&dir.path().join("e.jsonl"));
    let ids: Vec<&str> = evs.iter().map(|e| e["id"].as_str().unwrap()).collect();
    assert_eq!(ids, ["s0", "s2", "s4"], "one request in two");
    let steps = evs[0]["step_microsec"].as_object().unwrap();
    // In the order the steps ran.
    assert_eq!(steps.keys().collect::<Vec<_>>(), ["scale", "vote", "names"]);
    // 40 elements > max_tensor_elements: shape and datatype only.
    assert_eq!(evs[0]["request"][0]["shape"], json!([10, 4]));
    assert!(evs[0]["request"][0].get("data").is_none());
}

#[test]
fn a_bad_tracking_sink_is_a_validation_error() {
    let dir = tempfile::tempdir().unwrap();
    let graph = with_tracking(
        "graphs/iris.yaml",
        "{sink: \"s3://bucket\", sample: 0}",
        dir.path(),
    );
    let out = bin()
        .args(["validate", "--short"])
        .arg(&graph)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let text = String::from_utf8_lossy(&out.stderr);
    assert!(
        text.contains("tracking: `sample`, `batch`, `queue` and `flush_ms` must be at least 1"),
        "{text}"
    );
}
