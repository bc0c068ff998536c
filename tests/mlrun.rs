//! MLRun's model servers (`V2ModelServer` subclasses, as MLRun's docs and framework servers
//! write them) driven with MLRun's own bodies, answered as MLRun answers: the class gets
//! `inputs` as the JSON's list (rows or dicts of features) with no `inputs:` declared in the
//! graph, and its response comes back as it returned it.

mod common;

use common::{Server, post, root, test_python};
use serde_json::{Value, json};

/// A graph routing by name to MLRun classes of `tests/python/mlrun/models.py` (YAML fields
/// per route), none with declared inputs, as `fn.add_model(name, class_name=...)` gives.
fn serve(routes: &[(&str, &str)]) -> (tempfile::TempDir, Server) {
    let dir = tempfile::tempdir().unwrap();
    let models = root().join("tests/python/mlrun/models.py");
    let mut yaml = String::from("name: mlrun\ngraph:\n  kind: router\n  routes:\n");
    for (name, fields) in routes {
        yaml.push_str(&format!(
            "    {name}: {{kind: model, class: python, path: {}, python: {}, {fields}}}\n",
            models.display(),
            test_python().display()
        ));
    }
    let path = dir.path().join("mlrun.yaml");
    std::fs::write(&path, yaml).unwrap();
    let server = Server::start(&path.display().to_string(), &[]);
    (dir, server)
}

fn ok(r: common::Reply) -> Value {
    assert_eq!(r.status, 200, "{:?}", r.body);
    r.json()
}

#[test]
fn mlruns_documented_classifier_takes_rows_with_no_declared_inputs() {
    let (_dir, server) = serve(&[(
        "model1",
        "class_name: ClassifierModel, class_args: {offset: 0.5}",
    )]);
    let body = json!({"id": "r1", "inputs": [[5.1, 3.5, 1.4, 0.2], [1, 2, 3, 4]]}).to_string();
    for path in ["/v2/models/model1/infer", "/v2/models/model1/predict"] {
        let v = ok(post(&server.addr, path, &body));
        assert_eq!(v["id"], "r1");
        assert_eq!(v["model_name"], "model1");
        assert_eq!(v["outputs"], json!([10.7, 10.5]), "{v}");
        // MLRun's timestamp: `datetime.isoformat(sep=" ", timespec="microseconds")`.
        let ts = v["timestamp"].as_str().unwrap();
        assert_eq!(ts.len(), "2026-12-07 11:38:05.123456+00:00".len(), "{ts}");
        assert_eq!(ts.as_bytes()[10], b' ', "{ts}");
    }
    // MLRun's router path: `POST /` with the model in the body.
    let routed = json!({"model": "model1", "inputs": [[1, 1]]}).to_string();
    let v = ok(post(&server.addr, "/", &routed));
    assert_eq!(v["outputs"], json!([2.5]), "{v}");
    // No `id`: the answer carries the one the server gave the request.
    assert!(v["id"].as_str().is_some_and(|id| !id.is_empty()), "{v}");
}

#[test]
fn outputs_come_back_exactly_as_predict_returned_them() {
    let (_dir, server) = serve(&[("shapes", "class_name: Shapes")]);
    let rows = [[1, 2], [3, 4]];
    for (kind, expected) in [
        ("list", json!([3, 7])),
        ("scalar", json!(2)),
        ("dict", json!({"predictions": [3, 7], "count": 2})),
        ("string", json!("rows: 2")),
    ] {
        let body = json!({"inputs": rows, "kind": kind}).to_string();
        let v = ok(post(&server.addr, "/v2/models/shapes/infer", &body));
        assert_eq!(v["outputs"], expected, "{kind}: {v}");
    }
}

#[test]
fn explain_calls_the_classs_explain() {
    let (_dir, server) = serve(&[("shapes", "class_name: Shapes")]);
    let body = json!({"id": "e1", "inputs": [[1, 2], [3, 4]]}).to_string();
    let v = ok(post(&server.addr, "/v2/models/shapes/explain", &body));
    assert_eq!(
        v,
        json!({"id": "e1", "model_name": "shapes", "outputs": {"explanation": "sums each row", "rows": 2}}),
        "MLRun's explain answer has no timestamp"
    );
    // An OIP `/explain` calls it too, and answers OIP tensors.
    let oip =
        json!({"inputs": [{"name": "x", "shape": [1, 2], "datatype": "FP32", "data": [1, 2]}]});
    let v = ok(post(
        &server.addr,
        "/v2/models/shapes/explain",
        &oip.to_string(),
    ));
    let names: Vec<&str> = v["outputs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|o| o["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["explanation", "rows"], "{v}");
}

#[test]
fn dicts_of_features_reach_the_class_as_they_are() {
    let (_dir, server) = serve(&[("features", "class_name: Features")]);
    let body = json!({"inputs": [{"x": [1, 2], "y": [3, 5.5]}]}).to_string();
    let v = ok(post(&server.addr, "/v2/models/features/infer", &body));
    assert_eq!(v["outputs"], json!([4.0, 7.5]), "{v}");
    let rows = json!({"inputs": [[1, 3], [2, 5.5]]}).to_string();
    let v = ok(post(&server.addr, "/v2/models/features/infer", &rows));
    assert_eq!(v["outputs"], json!([4.0, 7.5]), "{v}");
}

#[test]
fn hooks_run_in_mlruns_order_on_the_body() {
    let (_dir, server) = serve(&[("hooks", "class_name: Hooks")]);
    let body = json!({"inputs": [[1, 2]]}).to_string();
    let v = ok(post(&server.addr, "/v2/models/hooks/infer", &body));
    assert_eq!(
        v["outputs"],
        json!({"rows": [[10, 20]], "seen": ["infer"]}),
        "{v}"
    );
    assert_eq!(v["post"], true, "{v}");
}

#[test]
fn oip_requests_keep_getting_oip_tensors() {
    let (_dir, server) = serve(&[(
        "model1",
        "class_name: ClassifierModel, inputs: [{name: input, datatype: FP32, shape: [-1, 2]}]",
    )]);
    let oip = json!({"inputs": [{"name": "input", "shape": [2, 2], "datatype": "FP32", "data": [1, 2, 3, 4]}]});
    let v = ok(post(
        &server.addr,
        "/v2/models/model1/infer",
        &oip.to_string(),
    ));
    assert_eq!(v["outputs"][0]["name"], "output", "{v}");
    assert_eq!(v["outputs"][0]["data"], json!([3.0, 7.0]), "{v}");
    assert_eq!(v["model_name"], "model1");
}

#[test]
fn a_class_taking_tensors_refuses_a_body_it_has_no_tensors_for() {
    let dir = tempfile::tempdir().unwrap();
    let models = root().join("tests/python/models/models.py");
    let yaml = format!(
        "name: g\ngraph:\n  kind: flow\n  steps:\n    double: {{kind: model, class: python, path: {}, python: {}, function: double}}\n",
        models.display(),
        test_python().display()
    );
    let path = dir.path().join("g.yaml");
    std::fs::write(&path, yaml).unwrap();
    let server = Server::start(&path.display().to_string(), &[]);
    let r = post(
        &server.addr,
        "/v2/models/g/infer",
        r#"{"inputs": [[1, 2]]}"#,
    );
    assert_eq!(r.status, 400, "{:?}", r.body);
    assert!(
        r.error().contains("declare the model's `inputs:`"),
        "{:?}",
        r.body
    );
}
