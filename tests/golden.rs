//! Golden tests: every graph in `graphs/` has `tests/golden/<file stem>.json`, a list of
//! requests with the outputs they must produce, run through `servegraph invoke` (the server's
//! request path, in-process). One test per graph file (a new example graph gets its own test,
//! and fails it until it has a golden file).

mod common;

use std::path::{Path, PathBuf};

use common::*;
use serde_json::Value;

#[rstest::rstest]
fn example_graph_answers_its_golden_requests(#[files("graphs/*.yaml")] path: PathBuf) {
    {
        let stem = path.file_stem().unwrap().to_str().unwrap();
        let golden = root().join(format!("tests/golden/{stem}.json"));
        let cases: Vec<Value> =
            serde_json::from_str(&std::fs::read_to_string(&golden).unwrap_or_else(|_| {
                panic!("{} has no golden file {}", path.display(), golden.display())
            }))
            .unwrap();
        assert!(!cases.is_empty());
        for case in cases {
            let model = case["model"].as_str().unwrap();
            // A case that needs Kafka: the test broker, its topics, the graph pointed at it.
            let dir = tempfile::tempdir().unwrap();
            let graph = match case.get("kafka") {
                None => path.clone(),
                Some(k) => {
                    let topics: Vec<(&str, i32)> = k["create_topics"]
                        .as_array()
                        .unwrap()
                        .iter()
                        .map(|t| (t.as_str().unwrap(), 1))
                        .collect();
                    common::kafka::create_topics(&topics);
                    let text = std::fs::read_to_string(&path)
                        .unwrap()
                        .replace("127.0.0.1:9092", common::kafka::broker())
                        .replace("../models/", &format!("{}/models/", root().display()));
                    let copy = dir.path().join(path.file_name().unwrap());
                    std::fs::write(&copy, text).unwrap();
                    copy
                }
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
            metadata_matches_request(&graph, stem, model, &case["request"], &v);
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
