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

/// Issue 26 (5): every decision a router's policy makes is in the request's event (the routes,
/// their probabilities, the chosen index, the policy, its generation, the sampling), and each
/// reward taken is an event of its own with the request's id: one stream joins offline.
#[test]
fn decisions_and_feedback_join_in_the_stream() {
    let dir = tempfile::tempdir().unwrap();
    let g = dir.path().join("g.yaml");
    std::fs::write(
        &g,
        "name: ab\ngraph:\n  kind: router\n  policy: {type: thompson, seed: 1}\n  routes:\n    a: {kind: transform, op: noop}\n    b:\n      kind: router\n      policy: {type: weighted, weights: {c: 3, d: 1}, sticky: \"header:x-user\"}\n      routes:\n        c: {kind: transform, op: noop}\n        d: {kind: transform, op: noop}\ntracking: {sink: \"file://events.jsonl\", batch: 1}\n",
    )
    .unwrap();
    let mut s = Server::start(g.to_str().unwrap(), &[]);
    let req = |id: &str| {
        format!(
            r#"{{"id":"{id}","inputs":[{{"name":"x","shape":[1],"datatype":"FP32","data":[1]}}]}}"#
        )
    };
    for i in 0..20 {
        let r = post(&s.addr, "/v2/models/ab/infer", &req(&format!("r{i}")));
        assert_eq!(r.status, 200);
    }
    // A request that names its route is no decision of the policy.
    assert_eq!(
        post(&s.addr, "/v2/models/a/infer", &req("named")).status,
        200
    );
    let f = post(
        &s.addr,
        "/v2/models/ab/feedback",
        &json!([{"id": "r3", "reward": 1}, {"id": "r4", "reward": 0}, {"id": "r3", "reward": 1}])
            .to_string(),
    );
    assert_eq!(f.json()["accepted"], 2);
    assert!(s.terminate().success());
    let evs = events(&dir.path().join("events.jsonl"));
    let infer: Vec<&Value> = evs.iter().filter(|e| e["op"] == "infer").collect();
    assert_eq!(infer.len(), 21);
    for e in infer.iter().filter(|e| e["id"] != "named") {
        let d = &e["decisions"][0];
        assert_eq!(d["router"], "ab", "{e}");
        assert_eq!(d["policy"], "thompson");
        assert_eq!(d["generation"], 1);
        assert_eq!(d["routes"], json!(["a", "b"]));
        assert_eq!(d["sampled"], 1.0);
        let pmf: Vec<f64> = d["pmf"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p.as_f64().unwrap())
            .collect();
        assert!((pmf.iter().sum::<f64>() - 1.0).abs() < 1e-9, "{d}");
        let chosen = d["chosen"].as_u64().unwrap() as usize;
        assert!(pmf[chosen] > 0.0);
        if chosen == 1 {
            // The nested weighted router's decision: its weights, its unit; the event's
            // `route` is the innermost route taken.
            let inner = &e["decisions"][1];
            assert_eq!(inner["router"], "b", "{e}");
            assert_eq!(inner["routes"], json!(["c", "d"]));
            assert_eq!(inner["pmf"], json!([0.75, 0.25]));
            assert_eq!(inner["unit"], "header:x-user");
            let inner_chosen = inner["chosen"].as_u64().unwrap() as usize;
            assert_eq!(e["route"], ["c", "d"][inner_chosen], "{e}");
        } else {
            assert_eq!(e["route"], "a", "{e}");
            assert_eq!(e["decisions"].as_array().unwrap().len(), 1, "{e}");
        }
    }
    let named = infer.iter().find(|e| e["id"] == "named").unwrap();
    assert!(named.get("decisions").is_none(), "{named}");
    let feedback: Vec<&Value> = evs.iter().filter(|e| e["op"] == "feedback").collect();
    assert_eq!(feedback.len(), 2, "a duplicate is no event");
    for (f, (id, reward)) in feedback.iter().zip([("r3", 1.0), ("r4", 0.0)]) {
        assert_eq!(f["id"], id);
        assert_eq!(f["reward"], reward);
        assert_eq!(f["model"], "ab");
        assert_eq!(f["graph"], "ab");
        assert!(f["when"].as_str().unwrap().ends_with('Z'));
        assert!(f.get("request").is_none(), "{f}");
        assert!(infer.iter().any(|e| e["id"] == id), "joins a decision");
    }
}
