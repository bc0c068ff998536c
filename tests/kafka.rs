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
    let s = Server::start(graph.to_str().unwrap(), &[]);

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

    // Metrics: requests by outcome, and (from librdkafka's statistics, every 5 s) each
    // partition's lag and committed offset.
    let line = |text: &str, prefix: &str| {
        text.lines()
            .find(|l| l.starts_with(prefix))
            .map(|l| l.rsplit(' ').next().unwrap().parse::<f64>().unwrap())
    };
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        let text = String::from_utf8_lossy(&get_blocking(&s.addr, "/metrics").body).into_owned();
        let kafka = |code: &str| {
            line(
                &text,
                &format!(
                    "servegraph_requests_total{{graph=\"iris\",source=\"kafka\",code=\"{code}\"}}"
                ),
            )
        };
        let committed: f64 = (0..2)
            .filter_map(|p| {
                line(
                    &text,
                    &format!(
                        "servegraph_kafka_committed_offset{{topic=\"{}\",partition=\"{p}\"}}",
                        t.input
                    ),
                )
            })
            .sum();
        let lag = line(
            &text,
            &format!(
                "servegraph_kafka_consumer_lag{{topic=\"{}\",partition=\"0\"}}",
                t.input
            ),
        );
        if kafka("200") == Some(20.0)
            && kafka("400") == Some(1.0)
            && kafka("404") == Some(1.0)
            && committed == 22.0
            && lag == Some(0.0)
        {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "Kafka metrics never settled:\n{text}"
        );
        std::thread::sleep(Duration::from_millis(250));
    }
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

/// A bandit router `ab` over two no-op routes, with `policy_extra` and `tail` (e.g. a source).
fn bandit_graph(dir: &std::path::Path, name: &str, policy_extra: &str, tail: &str) -> String {
    let path = dir.join(format!("{name}.yaml"));
    std::fs::write(
        &path,
        format!(
            "name: ab\ngraph:\n  kind: router\n  policy: {{type: thompson{policy_extra}}}\n  routes:\n    a: {{kind: transform, op: noop}}\n    b: {{kind: transform, op: noop}}\n{tail}"
        ),
    )
    .unwrap();
    path.to_str().unwrap().to_owned()
}

const AB_REQ: &str = r#"{"inputs":[{"name":"x","shape":[1],"datatype":"FP32","data":[1]}]}"#;

/// The router's stats: total rewards and, per route, (pulls, rewards).
fn ab_stats(s: &Server) -> (u64, Vec<(u64, u64)>) {
    let v = get_blocking(&s.addr, "/v2/models/ab/experiment").json();
    let routes: Vec<(u64, u64)> = v["routes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| (r["pulls"].as_u64().unwrap(), r["rewards"].as_u64().unwrap()))
        .collect();
    (routes.iter().map(|r| r.1).sum(), routes)
}

/// A fresh topic to share learning through, as the policy's `share` field (with a comma).
fn shared_learning_topic() -> String {
    let topic = unique("learning");
    create_topics(&[(&topic, 2)]);
    format!(", share: \"kafka://{}/{topic}\"", broker())
}

/// Polls `cond` for up to 15 s.
fn eventually(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    while !cond() {
        assert!(std::time::Instant::now() < deadline, "timed out: {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn replicas_learn_together_through_a_shared_topic() {
    let dir = tempfile::tempdir().unwrap();
    let share = shared_learning_topic();
    let a = Server::start(
        &bandit_graph(dir.path(), "a", &format!(", seed: 1{share}"), ""),
        &[],
    );
    let b = Server::start(
        &bandit_graph(dir.path(), "b", &format!(", seed: 2{share}"), ""),
        &[],
    );
    // Only `a` gets feedback: route `b` pays 1, route `a` pays 0.
    for _ in 0..200 {
        let v = post(&a.addr, "/v2/models/ab/infer", AB_REQ).json();
        let reward = if v["parameters"]["route"] == "b" {
            1
        } else {
            0
        };
        let f = post(
            &a.addr,
            "/v2/models/ab/feedback",
            &serde_json::json!({"id": v["id"], "reward": reward}).to_string(),
        );
        assert_eq!(f.status, 200);
    }
    // `b` applies every reward `a` took, and routes by them.
    eventually("replica b learns a's 200 rewards", || ab_stats(&b).0 == 200);
    let (_, from_a) = ab_stats(&a);
    let (_, in_b) = ab_stats(&b);
    assert_eq!(
        from_a.iter().map(|r| r.1).collect::<Vec<_>>(),
        in_b.iter().map(|r| r.1).collect::<Vec<_>>()
    );
    assert_eq!(
        in_b.iter().map(|r| r.0).sum::<u64>(),
        0,
        "pulls are per replica"
    );
    let mut ids = Vec::new();
    let mut to_b = 0;
    for _ in 0..100 {
        let v = post(&b.addr, "/v2/models/ab/infer", AB_REQ).json();
        to_b += (v["parameters"]["route"] == "b") as usize;
        ids.push(v["id"].as_str().unwrap().to_owned());
    }
    assert!(
        to_b >= 90,
        "replica b sent {to_b} of 100 to the better route"
    );
    // And the other way: feedback `b` takes reaches `a`, once each.
    for id in &ids {
        let body = serde_json::json!({"id": id, "reward": 1}).to_string();
        assert_eq!(post(&b.addr, "/v2/models/ab/feedback", &body).status, 200);
        assert_eq!(post(&b.addr, "/v2/models/ab/feedback", &body).status, 200);
    }
    eventually("replica a learns b's 100 rewards", || ab_stats(&a).0 == 300);
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(ab_stats(&a).0, 300, "each reward applied once");
    assert_eq!(ab_stats(&b).0, 300);
}

/// Contextual replicas share (context, route, reward): replica `b` never gets feedback, yet
/// routes by the context as `a` learnt it (route `a` pays on x = 1, route `b` on x = −1).
#[test]
fn contextual_replicas_share_contexts_through_the_topic() {
    let dir = tempfile::tempdir().unwrap();
    let share = shared_learning_topic();
    let graph = |name: &str, seed: u64| {
        let path = dir.path().join(format!("{name}.yaml"));
        std::fs::write(
            &path,
            format!(
                "name: ab\ngraph:\n  kind: router\n  policy: {{type: squarecb, seed: {seed}, features: [{{tensor: x, size: 1}}]{share}}}\n  routes:\n    a: {{kind: transform, op: noop}}\n    b: {{kind: transform, op: noop}}\n"
            ),
        )
        .unwrap();
        path.to_str().unwrap().to_owned()
    };
    let a = Server::start(&graph("a", 1), &[]);
    let b = Server::start(&graph("b", 2), &[]);
    let req = |x: f64| {
        format!(r#"{{"inputs":[{{"name":"x","shape":[1],"datatype":"FP32","data":[{x}]}}]}}"#)
    };
    for i in 0..200 {
        let x = if i % 2 == 0 { 1.0 } else { -1.0 };
        let v = post(&a.addr, "/v2/models/ab/infer", &req(x)).json();
        let right = (v["parameters"]["route"] == "a") == (x > 0.0);
        let f = post(
            &a.addr,
            "/v2/models/ab/feedback",
            &serde_json::json!({"id": v["id"], "reward": right as u8}).to_string(),
        );
        assert_eq!(f.status, 200, "{}", String::from_utf8_lossy(&f.body));
    }
    eventually("replica b learns a's 200 rewards", || ab_stats(&b).0 == 200);
    let mut right = 0;
    for i in 0..100 {
        let x = if i % 2 == 0 { 1.0 } else { -1.0 };
        let v = post(&b.addr, "/v2/models/ab/infer", &req(x)).json();
        right += ((v["parameters"]["route"] == "a") == (x > 0.0)) as usize;
    }
    assert!(
        right >= 90,
        "replica b routed {right} of 100 by the context"
    );
}

#[test]
fn feedback_from_a_topic_is_credited_by_the_replica_that_routed_it() {
    let dir = tempfile::tempdir().unwrap();
    let (input, output, feedback, group) = (
        unique("requests"),
        unique("results"),
        unique("feedback"),
        unique("group"),
    );
    create_topics(&[(&input, 1), (&output, 1), (&feedback, 2)]);
    let source = format!(
        "sources:\n  kafka: {{brokers: \"{}\", group: {group}, topics: [{input}], output_topic: {output}, feedback_topic: {feedback}}}\n",
        broker()
    );
    // Replica `a` is tracked: each reward it takes from the topic is an event (issue 26, 5).
    let tracked = format!("{source}tracking: {{sink: \"file://a-events.jsonl\", batch: 1}}\n");
    let mut a = Server::start(&bandit_graph(dir.path(), "a", "", &tracked), &[]);
    let b = Server::start(&bandit_graph(dir.path(), "b", "", &source), &[]);
    let mut records: Vec<Outgoing> = Vec::new();
    for (s, reward) in [(&a, "1"), (&b, "0")] {
        for _ in 0..10 {
            let v = post(&s.addr, "/v2/models/ab/infer", AB_REQ).json();
            let id = v["id"].as_str().unwrap().to_owned();
            let single = format!(r#"{{"id": "{id}", "reward": {reward}}}"#);
            // Each twice: counted once.
            records.push((id.clone(), single.clone(), vec![]));
            records.push((id.clone(), single, vec![("x-model-name", "ab")]));
        }
    }
    // Seldon's shape, a batch, an unknown id and junk are taken or skipped, never fatal.
    let c = post(&a.addr, "/v2/models/ab/infer", AB_REQ).json();
    let d = post(&b.addr, "/v2/models/ab/infer", AB_REQ).json();
    records.push((
        "s".into(),
        serde_json::json!({"request": {}, "response": c, "reward": 1, "truth": {}}).to_string(),
        vec![],
    ));
    records.push((
        "batch".into(),
        serde_json::json!([{"id": d["id"], "reward": 0}, {"id": "nobody", "reward": 1}])
            .to_string(),
        vec![],
    ));
    records.push(("junk".into(), "{not json".into(), vec![]));
    records.push((
        "other".into(),
        r#"{"id": "x", "reward": 1}"#.into(),
        vec![("x-model-name", "no-such-router")],
    ));
    produce(&feedback, &records);
    eventually("both replicas credit their own responses", || {
        ab_stats(&a).0 == 11 && ab_stats(&b).0 == 11
    });
    std::thread::sleep(Duration::from_millis(300));
    let reward_sum = |s: &Server| {
        get_blocking(&s.addr, "/v2/models/ab/experiment").json()["routes"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["reward_sum"].as_f64().unwrap())
            .sum::<f64>()
    };
    assert_eq!((ab_stats(&a).0, reward_sum(&a)), (11, 11.0));
    assert_eq!((ab_stats(&b).0, reward_sum(&b)), (11, 0.0));
    assert!(a.terminate().success());
    let events: Vec<serde_json::Value> = std::fs::read_to_string(dir.path().join("a-events.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let decided: Vec<&str> = events
        .iter()
        .filter(|e| e["op"] == "infer")
        .map(|e| e["id"].as_str().unwrap())
        .collect();
    let rewarded: Vec<&serde_json::Value> =
        events.iter().filter(|e| e["op"] == "feedback").collect();
    assert_eq!(
        rewarded.len(),
        11,
        "one per reward taken, none for duplicates"
    );
    for f in rewarded {
        assert_eq!(
            (&f["model"], &f["reward"]),
            (&"ab".into(), &1.0.into()),
            "{f}"
        );
        assert!(decided.contains(&f["id"].as_str().unwrap()), "{f}");
    }
}

#[test]
fn a_restarted_replica_catches_up_on_what_it_missed() {
    let dir = tempfile::tempdir().unwrap();
    let share = shared_learning_topic();
    let a_graph = bandit_graph(
        dir.path(),
        "a",
        &format!(", state_file: a-state.json{share}"),
        "",
    );
    let mut a = Server::start(&a_graph, &[]);
    let b = Server::start(&bandit_graph(dir.path(), "b", &share, ""), &[]);
    let reward_all = |s: &Server, n: usize| {
        for _ in 0..n {
            let v = post(&s.addr, "/v2/models/ab/infer", AB_REQ).json();
            let body = serde_json::json!({"id": v["id"], "reward": 1}).to_string();
            assert_eq!(post(&s.addr, "/v2/models/ab/feedback", &body).status, 200);
        }
    };
    reward_all(&a, 100);
    eventually("b learns a's rewards", || ab_stats(&b).0 == 100);
    // `a` stops (its snapshot holds 100 rewards) and misses 50 of `b`'s.
    assert!(a.terminate().success());
    reward_all(&b, 50);
    let a = Server::start(&a_graph, &[]);
    eventually("a replays what it missed", || ab_stats(&a).0 == 150);
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(
        ab_stats(&a).0,
        150,
        "its own rewards are not replayed twice"
    );
    assert_eq!(ab_stats(&b).0, 150);
}

/// Runs `cmd` for at most `limit`: its exit status (`None` when it had to be killed), stdout
/// and stderr.
fn run_for(
    cmd: &mut std::process::Command,
    limit: Duration,
) -> (Option<std::process::ExitStatus>, String, String) {
    let dir = tempfile::tempdir().unwrap();
    let (out, err) = (dir.path().join("out"), dir.path().join("err"));
    let mut child = cmd
        .stdout(std::fs::File::create(&out).unwrap())
        .stderr(std::fs::File::create(&err).unwrap())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + limit;
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break Some(status);
        }
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let read = |p: &std::path::Path| std::fs::read_to_string(p).unwrap_or_default();
    (status, read(&out), read(&err))
}

/// The iris graph with `tail` (its sources, tracking, ...) in `dir`.
fn iris_with(dir: &std::path::Path, tail: &str) -> std::path::PathBuf {
    let text = std::fs::read_to_string(root().join("graphs/iris.yaml"))
        .unwrap()
        .replace("../models/", &format!("{}/models/", root().display()));
    let path = dir.join("iris-topics.yaml");
    std::fs::write(&path, format!("{text}{tail}")).unwrap();
    path
}

/// Issue 24 (5): every Kafka topic a graph uses is checked, by `validate` (all in one run)
/// and by `serve` before it says it listens: a missing one is an error naming it and what
/// uses it.
#[test]
fn missing_topics_are_errors_naming_them_in_validate_and_serve() {
    let dir = tempfile::tempdir().unwrap();
    let (input, output, feedback, events, group) = (
        unique("requests"),
        unique("results"),
        unique("feedback"),
        unique("events"),
        unique("group"),
    );
    create_topics(&[(&input, 1), (&output, 1)]);
    let b = broker();
    let graph = iris_with(
        dir.path(),
        &format!(
            "sources:\n  kafka: {{brokers: \"{b}\", group: {group}, topics: [{input}], output_topic: {output}, feedback_topic: {feedback}}}\ntracking: {{sink: \"kafka://{b}/{events}\"}}\n"
        ),
    );
    let missing_feedback = format!(
        "Kafka topic `{feedback}` (`sources.kafka.feedback_topic`) does not exist on {b}: create it, or set `create_topics: {{partitions: N, replication: N}}` to have servegraph create it"
    );
    let missing_events =
        format!("Kafka topic `{events}` (the tracking sink) does not exist on {b}");

    let (status, _, err) = run_for(
        bin().args(["validate", "--short"]).arg(&graph),
        Duration::from_secs(60),
    );
    assert_eq!(status.and_then(|s| s.code()), Some(1), "{err}");
    assert!(err.contains(&missing_feedback), "{err}");
    assert!(err.contains(&missing_events), "{err}");
    assert!(
        !err.contains(&format!("`{input}`")),
        "the input topic exists: {err}"
    );
    // Positions: the source's and the tracking stream's fields.
    assert!(err.contains("iris-topics.yaml:"), "{err}");

    // `serve` refuses before it says it listens (it used to listen, then exit).
    let (status, out, err) = run_for(
        bin().args(["serve", "--listen", "127.0.0.1:0"]).arg(&graph),
        Duration::from_secs(60),
    );
    assert_eq!(status.and_then(|s| s.code()), Some(1), "{out}{err}");
    assert!(!out.contains("listening"), "{out}");
    assert!(err.contains(&missing_feedback), "{err}");
    assert!(err.contains(&missing_events), "{err}");

    // A missing request topic too (it used to be a warning, and the server served nothing).
    let graph = iris_with(
        dir.path(),
        &format!(
            "sources:\n  kafka: {{brokers: \"{b}\", group: {group}, topics: [{events}], output_topic: {output}}}\n"
        ),
    );
    let (status, out, err) = run_for(
        bin().args(["serve", "--listen", "127.0.0.1:0"]).arg(&graph),
        Duration::from_secs(60),
    );
    assert_eq!(status.and_then(|s| s.code()), Some(1), "{out}{err}");
    assert!(
        err.contains(&format!(
            "Kafka topic `{events}` (`sources.kafka.topics`) does not exist on {b}"
        )),
        "{err}"
    );
}

/// Issue 24 (5): a queue step's topic is one of the graph's, with every use named once.
#[test]
fn a_queue_steps_topic_is_checked_with_the_sources() {
    let dir = tempfile::tempdir().unwrap();
    let (stage2, results, group) = (unique("stage2"), unique("results"), unique("group"));
    create_topics(&[(&results, 1)]);
    // (Without the example's `create_topics`, a missing topic is an error.)
    let text = std::fs::read_to_string(root().join("graphs/iris-queue.yaml"))
        .unwrap()
        .replace("create_topics: {partitions: 3, replication: 1}\n", "")
        .replace("127.0.0.1:9092", broker())
        .replace("iris-stage2", &stage2)
        .replace("iris-results", &results)
        .replace("servegraph-iris-queue", &group)
        .replace("../models/", &format!("{}/models/", root().display()));
    let graph = dir.path().join("q.yaml");
    std::fs::write(&graph, &text).unwrap();
    let out = bin()
        .args(["validate", "--short"])
        .arg(&graph)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains(&format!(
            "Kafka topic `{stage2}` (`sources.kafka.topics`, queue step `handoff`) does not exist on {}",
            broker()
        )),
        "{err}"
    );
    assert_eq!(err.lines().count(), 1, "{err}");
    create_topics(&[(&stage2, 1)]);
    let out = bin().args(["validate"]).arg(&graph).output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Issue 24 (5): `create_topics` creates what is missing at start-up (`validate` says it
/// would, and creates nothing), with the partitions asked for; the graph then serves.
#[test]
fn create_topics_creates_the_missing_topics_at_start_up() {
    let dir = tempfile::tempdir().unwrap();
    let (input, output, feedback, group) = (
        unique("requests"),
        unique("results"),
        unique("feedback"),
        unique("group"),
    );
    let graph = iris_with(
        dir.path(),
        &format!(
            "sources:\n  kafka: {{brokers: \"{}\", group: {group}, topics: [{input}], output_topic: {output}, feedback_topic: {feedback}}}\ncreate_topics: {{partitions: 2, replication: 1}}\n",
            broker()
        ),
    );
    let out = bin().arg("validate").arg(&graph).output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        text.contains(&format!(
            "`serve` creates the Kafka topics `{input}` on {}",
            broker()
        )),
        "{text}"
    );
    assert_eq!(partitions(&input), 0, "validate creates nothing");

    let _s = Server::start(graph.to_str().unwrap(), &[]);
    for t in [&input, &output, &feedback] {
        assert_eq!(partitions(t), 2, "{t}");
    }
    produce(
        &input,
        &[("k".into(), request(0), vec![("x-model-name", "iris-lr")])],
    );
    let results = consume_until(&output, Duration::from_secs(60), |r| !r.is_empty());
    assert_eq!(results.len(), 1);
    assert_eq!(results[0].headers["correlation-id"], "req-0");
}

/// The `servegraph_kafka_connected` line of `client`, and the whole text.
fn connected(addr: &str, client: &str) -> (Option<String>, String) {
    let text = String::from_utf8_lossy(&get_blocking(addr, "/metrics").body).into_owned();
    let value = text
        .lines()
        .find(|l| l.starts_with(&format!("servegraph_kafka_connected{{client=\"{client}\"")))
        .map(|l| l.rsplit(' ').next().unwrap().to_owned());
    (value, text)
}

/// Issue 24 (6): a graph fed by Kafka whose broker is down starts anyway, logs a bounded
/// number of lines, says not ready (naming the broker) and `servegraph_kafka_connected 0`;
/// once a broker listens there, it creates its topics, turns ready and serves.
#[test]
fn a_broker_that_is_down_is_quiet_unready_and_recovers() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let brokers = format!("127.0.0.1:{port}");
    let (input, output, group) = (unique("requests"), unique("results"), unique("group"));
    let graph = iris_with(
        dir.path(),
        &format!(
            "sources:\n  kafka: {{brokers: \"{brokers}\", group: {group}, topics: [{input}], output_topic: {output}, broker_grace_ms: 1000}}\ncreate_topics: {{partitions: 1, replication: 1}}\n"
        ),
    );
    // At info, as `serve` logs by default.
    let log = dir.path().join("log");
    let mut child = bin()
        .env("RUST_LOG", "info,ort=warn")
        .args(["serve", "--listen", "127.0.0.1:0", "--drain-grace", "0"])
        .arg(&graph)
        .stdout(std::process::Stdio::piped())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    struct Kill(std::process::Child);
    impl Drop for Kill {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let mut line = String::new();
    std::io::BufRead::read_line(
        &mut std::io::BufReader::new(child.stdout.take().unwrap()),
        &mut line,
    )
    .unwrap();
    let child = Kill(child);
    let addr = line
        .trim()
        .strip_prefix("servegraph listening on http://")
        .unwrap_or_else(|| {
            panic!(
                "{line:?}: {}",
                std::fs::read_to_string(&log).unwrap_or_default()
            )
        })
        .to_owned();
    let started = std::time::Instant::now();
    let ready = || get_blocking(&addr, "/v2/health/ready");

    // Once the sources have started (a moment after the listening line): not ready, and why.
    let mut r = ready();
    while r.status == 503 && r.error().contains("loading") && started.elapsed().as_secs() < 20 {
        std::thread::sleep(Duration::from_millis(100));
        r = ready();
    }
    assert_eq!(r.status, 503);
    assert!(
        r.error()
            .contains(&format!("cannot reach the Kafka brokers {brokers}")),
        "{}",
        r.error()
    );
    // 20 s of a broker that is down.
    std::thread::sleep(Duration::from_secs(20).saturating_sub(started.elapsed()));
    let lines = std::fs::read_to_string(&log).unwrap();
    assert!(
        lines.lines().count() <= 25,
        "{} log lines in 20 s:\n{lines}",
        lines.lines().count()
    );
    let r = ready();
    assert_eq!(r.status, 503);
    assert!(r.error().contains(&brokers), "{}", r.error());
    let (value, text) = connected(&addr, "source");
    assert_eq!(value.as_deref(), Some("0"), "{text}");
    assert!(text.contains(&format!("brokers=\"{brokers}\"")), "{text}");
    // The server itself is alive.
    assert_eq!(get_blocking(&addr, "/v2/health/live").status, 200);

    // A broker comes up there: topics created, ready, connected, serving.
    let broker = OwnBroker::start(port);
    let deadline = std::time::Instant::now() + Duration::from_secs(90);
    while ready().status != 200 {
        assert!(
            std::time::Instant::now() < deadline,
            "not ready after the broker came up: {}\n{}",
            ready().error(),
            std::fs::read_to_string(&log).unwrap()
        );
        std::thread::sleep(Duration::from_millis(250));
    }
    let (value, text) = connected(&addr, "source");
    assert_eq!(value.as_deref(), Some("1"), "{text}");
    assert!(
        !text.contains(" -1001"),
        "no offset before the first commit: {text}"
    );
    let producer: rdkafka::producer::ThreadedProducer<rdkafka::producer::DefaultProducerContext> =
        rdkafka::ClientConfig::new()
            .set("bootstrap.servers", &brokers)
            .create()
            .unwrap();
    let payload = request(1);
    let record = rdkafka::producer::BaseRecord::to(&input)
        .key("k")
        .payload(&payload)
        .headers(
            rdkafka::message::OwnedHeaders::new().insert(rdkafka::message::Header {
                key: "x-model-name",
                value: Some("iris-lr"),
            }),
        );
    producer.send(record).map_err(|(e, _)| e).unwrap();
    rdkafka::producer::Producer::flush(&producer, Duration::from_secs(30)).unwrap();
    let reader: rdkafka::consumer::BaseConsumer = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", &brokers)
        .set("group.id", unique("reader"))
        .create()
        .unwrap();
    let mut list = rdkafka::TopicPartitionList::new();
    list.add_partition_offset(&output, 0, rdkafka::Offset::Beginning)
        .unwrap();
    rdkafka::consumer::Consumer::assign(&reader, &list).unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(90);
    let answer = loop {
        assert!(
            std::time::Instant::now() < deadline,
            "no result after the broker came up:\n{}",
            std::fs::read_to_string(&log).unwrap()
        );
        if let Some(Ok(m)) = reader.poll(Duration::from_millis(500)) {
            use rdkafka::message::Message;
            break String::from_utf8_lossy(m.payload().unwrap_or_default()).into_owned();
        }
    };
    assert_eq!(
        label(&answer),
        expected()["iris-lr"]["label"][1].as_i64().unwrap()
    );

    // The broker goes away again: past the grace (1 s here), not ready, saying for how long.
    drop(broker);
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let r = loop {
        let r = ready();
        if r.status == 503 {
            break r;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "still ready with the broker gone"
        );
        std::thread::sleep(Duration::from_millis(250));
    };
    assert!(
        r.error().starts_with(&format!(
            "not ready: the Kafka source cannot reach the brokers {brokers} (for "
        )),
        "{}",
        r.error()
    );
    assert_eq!(connected(&addr, "source").0.as_deref(), Some("0"));
    drop(child);
}
