//! The Kafka source against a real broker (Tansu): topic → graph → topic, the dead-letter
//! topic, and at-least-once across a SIGKILL.

mod common;

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use common::kafka::*;
use common::*;
use serde_json::Value;

struct Topics {
    input: String,
    output: String,
    dlq: String,
    group: String,
}

/// graphs/iris.yaml with a Kafka source on fresh topics (`partitions` each), in `dir`.
fn kafka_graph(
    dir: &std::path::Path,
    partitions: i32,
    extra: &str,
) -> (std::path::PathBuf, Topics) {
    let t = Topics {
        input: unique("requests"),
        output: unique("results"),
        dlq: unique("dlq"),
        group: unique("group"),
    };
    create_topics(&[(&t.input, partitions), (&t.output, 1), (&t.dlq, 1)]);
    let text = std::fs::read_to_string(root().join("graphs/iris.yaml"))
        .unwrap()
        .replace("../models/", &format!("{}/models/", root().display()));
    let path = dir.join("iris-kafka.yaml");
    std::fs::write(
        &path,
        format!(
            "{text}sources:\n  kafka: {{brokers: \"{}\", group: {}, topics: [{}], output_topic: {}, dlq_topic: {}{extra}}}\n",
            broker(),
            t.group,
            t.input,
            t.output,
            t.dlq
        ),
    )
    .unwrap();
    (path, t)
}

fn request(i: usize) -> String {
    let exp = expected();
    let rows = exp["rows"].as_array().unwrap();
    let row = &rows[i % rows.len()];
    serde_json::json!({"id": format!("req-{i}"), "inputs": [{"name": "input", "shape": [1, 4], "datatype": "FP32", "data": [row]}]}).to_string()
}

fn label(payload: &str) -> i64 {
    let v: Value = serde_json::from_str(payload).unwrap();
    v["outputs"]
        .as_array()
        .unwrap()
        .iter()
        .find(|o| o["name"] == "label")
        .unwrap()["data"][0]
        .as_i64()
        .unwrap()
}

#[test]
fn requests_from_a_topic_results_to_a_topic_and_poison_to_the_dlq() {
    let dir = tempfile::tempdir().unwrap();
    let (graph, t) = kafka_graph(dir.path(), 2, "");
    let mut records: Vec<Outgoing> = (0..20)
        .map(|i| {
            (
                format!("key-{i}"),
                request(i),
                vec![("x-model-name", "iris-lr"), ("trace", "abc")],
            )
        })
        .collect();
    records.insert(5, ("poison".into(), "{not json".into(), vec![]));
    records.insert(
        9,
        (
            "unknown".into(),
            request(0),
            vec![("x-model-name", "no-such-model")],
        ),
    );
    produce(&t.input, &records);
    let _s = Server::start(graph.to_str().unwrap(), &[]);

    let results = consume_until(&t.output, Duration::from_secs(60), |r| r.len() >= 20);
    assert_eq!(results.len(), 20);
    let exp = expected();
    let want: Vec<i64> = exp["iris-lr"]["label"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_i64().unwrap())
        .collect();
    for r in &results {
        let id = &r.headers["correlation-id"];
        let i: usize = id.strip_prefix("req-").unwrap().parse().unwrap();
        assert_eq!(
            r.key.as_deref(),
            Some(format!("key-{i}").as_str()),
            "the input's key"
        );
        assert_eq!(r.headers["trace"], "abc", "the input's headers are carried");
        assert_eq!(label(&r.payload), want[i % want.len()], "{id}");
    }
    let dead = consume_until(&t.dlq, Duration::from_secs(30), |r| r.len() >= 2);
    let by_key: HashMap<&str, &Record> = dead
        .iter()
        .map(|r| (r.key.as_deref().unwrap(), r))
        .collect();
    let poison = by_key["poison"];
    assert_eq!(poison.payload, "{not json");
    assert_eq!(poison.headers["error-status"], "400");
    assert!(
        poison.headers["error"].contains("malformed inference request"),
        "{:?}",
        poison.headers
    );
    assert_eq!(poison.headers["source-topic"], t.input);
    let unknown = by_key["unknown"];
    assert_eq!(unknown.headers["error-status"], "404");
    assert!(unknown.headers["error"].contains("unknown model `no-such-model`"));
}

#[test]
fn sigkill_mid_stream_loses_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let (graph, t) = kafka_graph(
        dir.path(),
        3,
        ", max_in_flight: 64, commit_interval_ms: 100",
    );
    let n = 3000;
    let records: Vec<Outgoing> = (0..n)
        .map(|i| {
            (
                format!("k{i}"),
                request(i),
                vec![("x-model-name", "iris-rf")],
            )
        })
        .collect();
    produce(&t.input, &records);

    let mut first = Server::start(graph.to_str().unwrap(), &[]);
    // Let it answer part of the stream, then kill it without warning.
    let some = consume_until(&t.output, Duration::from_secs(60), |r| r.len() >= n / 10);
    assert!(
        some.len() >= n / 10,
        "the first process answered {} of {n}",
        some.len()
    );
    first.kill();

    let _second = Server::start(graph.to_str().unwrap(), &[]);
    let all = consume_until(&t.output, Duration::from_secs(120), |r| {
        r.iter()
            .map(|r| &r.headers["correlation-id"])
            .collect::<HashSet<_>>()
            .len()
            >= n
    });
    let ids: HashSet<&String> = all.iter().map(|r| &r.headers["correlation-id"]).collect();
    let missing: Vec<usize> = (0..n)
        .filter(|i| !ids.contains(&format!("req-{i}")))
        .collect();
    assert!(
        missing.is_empty(),
        "{} of {n} requests have no result, e.g. {:?}",
        missing.len(),
        &missing[..missing.len().min(5)]
    );
    // At-least-once: some were answered twice (those in flight at the kill), none lost.
    assert!(all.len() >= n);
}
