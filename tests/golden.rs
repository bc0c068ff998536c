//! Golden tests: every graph in `graphs/` has `tests/golden/<file stem>.json`, a list of
//! requests with the outputs they must produce, run through `servegraph invoke` (the server's
//! request path, in-process). One test per graph file (a new example graph gets its own test,
//! and fails it until it has a golden file).

mod common;

use std::path::{Path, PathBuf};

use common::*;
use serde_json::Value;

/// A graph's golden cases, and its file stem.
fn golden_cases(path: &Path) -> (String, Vec<Value>) {
    let stem = path.file_stem().unwrap().to_str().unwrap().to_owned();
    let golden = root().join(format!("tests/golden/{stem}.json"));
    let cases: Vec<Value> =
        serde_json::from_str(&std::fs::read_to_string(&golden).unwrap_or_else(|_| {
            panic!("{} has no golden file {}", path.display(), golden.display())
        }))
        .unwrap();
    assert!(!cases.is_empty());
    (stem, cases)
}

/// A copy of the graph in `dir` pointed at the test broker (the model paths made absolute):
/// what a case that needs Kafka runs on. With `isolate`, every topic and consumer group the
/// graph names gets `isolate` appended (created here), so a server consuming them takes no
/// other test's messages.
fn kafka_copy(path: &Path, dir: &Path, topics: &[String], isolate: Option<&str>) -> PathBuf {
    let mut text = std::fs::read_to_string(path)
        .unwrap()
        .replace("127.0.0.1:9092", common::kafka::broker())
        .replace("../models/", &format!("{}/models/", root().display()));
    let mut create: Vec<String> = topics.to_vec();
    if let Some(suffix) = isolate {
        let (named, groups) = kafka_names(&text);
        for name in named.iter().chain(&groups) {
            text = text.replace(name.as_str(), &format!("{name}{suffix}"));
        }
        create = create.iter().map(|t| format!("{t}{suffix}")).collect();
        create.extend(named.iter().map(|t| format!("{t}{suffix}")));
        create.sort();
        create.dedup();
    }
    let wanted: Vec<(&str, i32)> = create.iter().map(|t| (t.as_str(), 1)).collect();
    if !wanted.is_empty() {
        common::kafka::create_topics(&wanted);
    }
    let copy = dir.join(path.file_name().unwrap());
    std::fs::write(&copy, text).unwrap();
    copy
}

/// The topics and the consumer groups a graph file names (`topics: [...]`, `*topic: x`,
/// `kafka://HOST:PORT/TOPIC`, `group: x`, inline or not).
fn kafka_names(text: &str) -> (Vec<String>, Vec<String>) {
    let (mut names, mut groups) = (Vec::new(), Vec::new());
    for line in text
        .lines()
        .map(|l| l.split('#').next().unwrap_or_default())
    {
        for (i, _) in line.match_indices("topic") {
            let rest = &line[i..];
            let Some(value) = rest.split_once(':').map(|(k, v)| (k, v.trim_start())) else {
                continue;
            };
            if value.0.contains(' ') || value.0.contains(',') {
                continue;
            }
            let value = value.1;
            let list = if let Some(inner) = value.strip_prefix('[') {
                inner.split(']').next().unwrap_or_default()
            } else {
                value.split([',', '}']).next().unwrap_or_default()
            };
            names.extend(
                list.split(',')
                    .map(|t| t.trim().trim_matches('"').to_owned()),
            );
        }
        // A tracking sink's or shared learning's `kafka://HOST:PORT/TOPIC`.
        for (i, _) in line.match_indices("kafka://") {
            let url = &line[i + "kafka://".len()..];
            if let Some((_, rest)) = url.split_once('/') {
                names.push(
                    rest.split(['"', '\'', ',', '}', ' '])
                        .next()
                        .unwrap_or_default()
                        .to_owned(),
                );
            }
        }
        if let Some((_, g)) = line.split_once("group:") {
            groups.push(
                g.split([',', '}'])
                    .next()
                    .unwrap_or_default()
                    .trim()
                    .trim_matches('"')
                    .to_owned(),
            );
        }
    }
    for list in [&mut names, &mut groups] {
        list.retain(|n| !n.is_empty() && !n.contains(' '));
        list.sort();
        list.dedup();
    }
    (names, groups)
}

#[rstest::rstest]
fn example_graph_answers_its_golden_requests(#[files("graphs/*.yaml")] path: PathBuf) {
    let (stem, cases) = golden_cases(&path);
    for case in cases {
        let model = case["model"].as_str().unwrap();
        // A case that needs Kafka: the test broker, its topics, the graph pointed at it.
        let dir = tempfile::tempdir().unwrap();
        let graph = match case.get("kafka") {
            None => path.clone(),
            Some(k) => kafka_copy(&path, dir.path(), &case_topics(k), None),
        };
        let out = bin()
            .arg("invoke")
            .arg(&graph)
            .args(["--model", model, "--data"])
            .arg(case["request"].to_string())
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{stem}/{model}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let v: Value = serde_json::from_slice(&out.stdout).unwrap();
        if let Some(answer) = case.get("answer") {
            // A flow of steps written against bodies (MLRun's) answers its last step's body.
            assert_eq!(
                &without_timestamp(v),
                answer,
                "{stem}/{model}: the body answered"
            );
            continue;
        }
        metadata_matches_request(&graph, &stem, model, &case["request"], &v);
        check_answer(&stem, model, &case, &v);
    }
}

/// A body answer without MLRun's `timestamp` (the time of the run), at any depth.
fn without_timestamp(mut v: Value) -> Value {
    if let Value::Object(m) = &mut v {
        m.remove("timestamp");
        for value in m.values_mut() {
            *value = without_timestamp(value.take());
        }
    }
    v
}

/// Issue 14: every example graph answers its golden requests over gRPC as over HTTP, sent by
/// the stock `tritonclient[grpc]` (raw tensors both ways) to a real server.
#[rstest::rstest]
fn example_graph_answers_its_golden_requests_over_grpc(#[files("graphs/*.yaml")] path: PathBuf) {
    let (stem, cases) = golden_cases(&path);
    let dir = tempfile::tempdir().unwrap();
    let text = std::fs::read_to_string(&path).unwrap();
    let topics: Vec<String> = cases
        .iter()
        .filter_map(|c| c.get("kafka"))
        .flat_map(case_topics)
        .collect();
    // A server consumes its graph's topics: they are this test's own.
    let suffix = format!("-grpc-{stem}-{}", std::process::id());
    let graph = if text.contains("9092") {
        kafka_copy(&path, dir.path(), &topics, Some(&suffix))
    } else {
        path.clone()
    };
    let s = Server::start(graph.to_str().unwrap(), &["--grpc-listen", "127.0.0.1:0"]);
    // Body answers (an MLRun flow's) are HTTP's and Kafka's: gRPC carries tensors only, and
    // refuses them (tests/mlrun.rs).
    let cases: Vec<Value> = cases
        .into_iter()
        .filter(|c| c.get("answer").is_none())
        .collect();
    if cases.is_empty() {
        return;
    }
    let requests: Vec<Value> = cases
        .iter()
        .map(|c| serde_json::json!({"model": c["model"], "request": c["request"]}))
        .collect();
    let file = dir.path().join("cases.json");
    std::fs::write(&file, serde_json::to_vec(&requests).unwrap()).unwrap();
    let out = std::process::Command::new(test_python())
        .arg(root().join("tests/python/grpc_golden.py"))
        .arg(s.grpc.as_deref().expect("a gRPC address"))
        .arg(&file)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{stem} over gRPC: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    // The answers name this test's own topics (a queue step's `queued`) as the graph's.
    let stdout = String::from_utf8_lossy(&out.stdout).replace(&suffix, "");
    let answers: Vec<Value> = serde_json::from_str(&stdout).unwrap();
    assert_eq!(answers.len(), cases.len());
    for (case, v) in cases.iter().zip(&answers) {
        let model = case["model"].as_str().unwrap();
        assert_eq!(
            v["id"], case["request"]["id"],
            "{stem}/{model}: the request id"
        );
        check_answer(&stem, model, case, v);
    }
}

fn case_topics(k: &Value) -> Vec<String> {
    k["create_topics"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t.as_str().unwrap().to_owned())
        .collect()
}

/// An answer (OIP JSON response shape) against its golden case: exact outputs, close ones,
/// parameters.
fn check_answer(stem: &str, model: &str, case: &Value, v: &Value) {
    let output = |name: &str| -> Value {
        v["outputs"]
            .as_array()
            .unwrap()
            .iter()
            .find(|o| o["name"] == name)
            .unwrap_or_else(|| panic!("{stem}/{model}: no output `{name}` in {v}"))["data"]
            .clone()
    };
    for (name, want) in case
        .get("parameters")
        .and_then(Value::as_object)
        .into_iter()
        .flatten()
    {
        assert_eq!(
            &v["parameters"][name], want,
            "{stem}/{model}: parameter `{name}`"
        );
    }
    for (name, want) in case["outputs"].as_object().unwrap() {
        assert_eq!(&output(name), want, "{stem}/{model}: output `{name}`");
    }
    for (name, want) in case
        .get("close")
        .and_then(Value::as_object)
        .into_iter()
        .flatten()
    {
        let got = output(name);
        let want: Vec<f64> = want
            .as_array()
            .unwrap()
            .iter()
            .flat_map(|r| r.as_array().cloned().unwrap_or(vec![r.clone()]))
            .map(|x| x.as_f64().unwrap())
            .collect();
        let got: Vec<f64> = got
            .as_array()
            .unwrap()
            .iter()
            .map(|x| x.as_f64().unwrap())
            .collect();
        assert_eq!(got.len(), want.len(), "{stem}/{model}: `{name}` length");
        for (g, w) in got.iter().zip(&want) {
            assert!(
                (g - w).abs() < 1e-4,
                "{stem}/{model}: `{name}` {got:?} vs {want:?}"
            );
        }
    }
}

/// Issue 12: the model's metadata tells the truth. Its inputs are exactly the golden
/// request's (which `infer` accepts), with the same datatypes and shapes that fit; its outputs
/// name what the response gives.
fn metadata_matches_request(
    graph: &Path,
    stem: &str,
    model: &str,
    request: &Value,
    answer: &Value,
) {
    let out = bin()
        .arg("invoke")
        .arg(graph)
        .args(["--model", model, "--metadata"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{stem}/{model} metadata: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let meta: Value = serde_json::from_slice(&out.stdout).unwrap();
    let listed = meta["inputs"].as_array().unwrap();
    let sent = request["inputs"].as_array().unwrap();
    let names = |v: &[Value]| -> Vec<String> {
        let mut n: Vec<String> = v
            .iter()
            .map(|t| t["name"].as_str().unwrap().to_owned())
            .collect();
        n.sort();
        n
    };
    assert_eq!(
        names(listed),
        names(sent),
        "{stem}/{model}: the metadata's inputs are not what the request sends: {meta}"
    );
    for input in sent {
        let m = listed.iter().find(|m| m["name"] == input["name"]).unwrap();
        assert_eq!(
            m["datatype"], input["datatype"],
            "{stem}/{model}: {m} vs {input}"
        );
        let want: Vec<i64> = serde_json::from_value(m["shape"].clone()).unwrap();
        let got: Vec<i64> = serde_json::from_value(input["shape"].clone()).unwrap();
        assert!(
            want.len() == got.len() && want.iter().zip(&got).all(|(w, g)| *w == -1 || w == g),
            "{stem}/{model}: input `{}` is sent as {got:?}, the metadata says {want:?}",
            input["name"]
        );
    }
    for output in meta["outputs"].as_array().unwrap() {
        let named = answer["outputs"]
            .as_array()
            .unwrap()
            .iter()
            .find(|o| o["name"] == output["name"]);
        let o = named.unwrap_or_else(|| {
            panic!("{stem}/{model}: the metadata lists output {output} but the answer has none")
        });
        assert_eq!(
            o["datatype"], output["datatype"],
            "{stem}/{model}: {o} vs {output}"
        );
    }
}
