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

#[test]
fn two_processes_in_one_group_share_the_work_and_track_to_kafka() {
    let dir = tempfile::tempdir().unwrap();
    let events = unique("events");
    create_topics(&[(&events, 1)]);
    let (graph, t) = kafka_graph(dir.path(), 4, "");
    let text = std::fs::read_to_string(&graph).unwrap();
    let for_process = |name: &str| {
        let path = dir.path().join(format!("{name}.yaml"));
        let tracking = format!(
            "tracking: {{sink: \"kafka://{}/{events}\", batch: 10, flush_ms: 100, labels: {{process: {name}}}}}\n",
            broker()
        );
        std::fs::write(&path, format!("{text}{tracking}")).unwrap();
        path
    };
    let (a, b) = (for_process("a"), for_process("b"));
    let _a = Server::start(a.to_str().unwrap(), &[]);
    let _b = Server::start(b.to_str().unwrap(), &[]);
    // Requests over 12 s, so both processes own partitions for most of the stream whatever
    // the timing of the group joins.
    let n = 600;
    for chunk in 0..12 {
        let records: Vec<Outgoing> = (chunk * 50..(chunk + 1) * 50)
            .map(|i| {
                (
                    format!("k{i}"),
                    request(i),
                    vec![("x-model-name", "iris-lr")],
                )
            })
            .collect();
        produce(&t.input, &records);
        std::thread::sleep(Duration::from_secs(1));
    }
    let results = consume_until(&t.output, Duration::from_secs(60), |r| {
        r.iter()
            .map(|r| &r.headers["correlation-id"])
            .collect::<HashSet<_>>()
            .len()
            >= n
    });
    let ids: HashSet<&String> = results
        .iter()
        .map(|r| &r.headers["correlation-id"])
        .collect();
    assert_eq!(ids.len(), n, "together they answer every request");

    // Every request has a tracking event, and both processes served some.
    let tracked = consume_until(&events, Duration::from_secs(30), |r| r.len() >= n);
    let mut by_process: HashMap<String, usize> = HashMap::new();
    for e in &tracked {
        let v: Value = serde_json::from_str(&e.payload).unwrap();
        assert_eq!(v["graph"], "iris");
        assert_eq!(v["model"], "iris-lr");
        assert!(v["id"].as_str().unwrap().starts_with("req-"));
        *by_process
            .entry(v["labels"]["process"].as_str().unwrap().to_owned())
            .or_default() += 1;
    }
    assert!(
        tracked.len() >= n,
        "{} events for {n} requests",
        tracked.len()
    );
    assert!(
        by_process.get("a").is_some_and(|&c| c > 0),
        "{by_process:?}"
    );
    assert!(
        by_process.get("b").is_some_and(|&c| c > 0),
        "{by_process:?}"
    );
}

#[test]
fn a_queue_step_splits_a_flow_over_kafka() {
    let dir = tempfile::tempdir().unwrap();
    let (stage2, results, group) = (unique("stage2"), unique("results"), unique("group"));
    create_topics(&[(&stage2, 2), (&results, 1)]);
    let text = std::fs::read_to_string(root().join("graphs/iris-queue.yaml"))
        .unwrap()
        .replace("127.0.0.1:9092", broker())
        .replace("iris-stage2", &stage2)
        .replace("iris-results", &results)
        .replace("servegraph-iris-queue", &group)
        .replace("../models/", &format!("{}/models/", root().display()));
    let graph = dir.path().join("q.yaml");
    std::fs::write(&graph, text).unwrap();
    let s = Server::start(graph.to_str().unwrap(), &[]);

    // The receiving side: standardize, publish, acknowledge.
    let r = post(&s.addr, "/v2/models/iris-queue/infer", &iris_request("q-1"));
    assert_eq!(r.status, 202, "{:?}", String::from_utf8_lossy(&r.body));
    let ack = r.json();
    assert_eq!(ack["id"], "q-1");
    assert_eq!(ack["parameters"]["queued"], stage2.as_str());
    assert_eq!(ack["outputs"], serde_json::json!([]));

    // The far side (here the same process, as a member of the group): the rest of the flow.
    let out = consume_until(&results, Duration::from_secs(60), |r| !r.is_empty());
    assert_eq!(out.len(), 1);
    assert_eq!(out[0].headers["correlation-id"], "q-1");
    let v: Value = serde_json::from_str(&out[0].payload).unwrap();
    let exp = expected();
    let classes = exp["classes"].as_array().unwrap();
    let want: Vec<Value> = exp["iris-ensemble"]["label"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| classes[i.as_u64().unwrap() as usize].clone())
        .collect();
    let label = v["outputs"]
        .as_array()
        .unwrap()
        .iter()
        .find(|o| o["name"] == "label")
        .unwrap();
    assert_eq!(label["data"], Value::Array(want));
}

#[test]
fn a_queue_step_needs_a_straight_chain() {
    let dir = tempfile::tempdir().unwrap();
    let g = dir.path().join("branchy.yaml");
    std::fs::write(
        &g,
        "name: b
graph:
  kind: flow
  steps:
    a: {kind: transform, op: noop}
    q: {kind: queue, after: a, topic: t, brokers: \"127.0.0.1:1\"}
    side: {kind: transform, op: noop, after: a}
    end: {kind: transform, op: noop, after: [q, side]}
",
    )
    .unwrap();
    let out = bin()
        .args(["validate", "--short"])
        .arg(&g)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let text = String::from_utf8_lossy(&out.stderr);
    assert!(
        text.contains("step `q`: a queue step must be in a flow that is a straight chain of steps"),
        "{text}"
    );
}
