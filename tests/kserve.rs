//! KServe's v1 REST protocol (issue 25) through the real binary: `GET /v1/models`,
//! `GET /v1/models/{m}`, `POST /v1/models/{m}:predict` and `:explain` with plain bodies as
//! KServe's docs write them, errors in KServe's shapes, and the `kserve` SDK's
//! `InferenceRESTClient` with `RESTConfig(protocol="v1")`.

mod common;

use common::*;
use serde_json::{Value, json};

fn iris() -> Server {
    Server::start("graphs/iris.yaml", &[])
}

fn ok(r: Reply) -> Value {
    assert_eq!(r.status, 200, "{:?}", String::from_utf8_lossy(&r.body));
    r.json()
}

/// The expected rows' predictions of `model`, one object per instance.
fn expected_predictions(model: &str) -> Vec<(i64, Vec<f64>)> {
    let e = expected();
    let labels = e[model]["label"].as_array().unwrap().clone();
    let probs = e[model]["probabilities"].as_array().unwrap().clone();
    labels
        .iter()
        .zip(probs)
        .map(|(l, p)| {
            let p = p.as_array().unwrap().iter().map(|x| x.as_f64().unwrap());
            (l.as_i64().unwrap(), p.collect())
        })
        .collect()
}

fn assert_predictions(v: &Value, model: &str) {
    let preds = v["predictions"].as_array().unwrap_or_else(|| panic!("{v}"));
    let want = expected_predictions(model);
    assert_eq!(preds.len(), want.len(), "{v}");
    for (p, (label, probs)) in preds.iter().zip(want) {
        assert_eq!(p["label"], json!(label), "{p}");
        let got = p["probabilities"].as_array().unwrap();
        for (g, w) in got.iter().zip(probs) {
            assert!((g.as_f64().unwrap() - w).abs() < 1e-4, "{p}");
        }
    }
}

#[test]
fn predict_on_an_onnx_model_takes_instances_as_rows() {
    let s = iris();
    let body = json!({"instances": expected()["rows"]}).to_string();
    let v = ok(post(&s.addr, "/v1/models/iris-lr:predict", &body));
    assert_predictions(&v, "iris-lr");
    assert_eq!(v.as_object().unwrap().len(), 1, "only predictions: {v}");
}

#[test]
fn predict_takes_inputs_as_instances() {
    let s = iris();
    let body = json!({"inputs": expected()["rows"]}).to_string();
    let v = ok(post(&s.addr, "/v1/models/iris-rf:predict", &body));
    assert_predictions(&v, "iris-rf");
}

#[test]
fn explain_answers_predictions_and_per_instance_attributions() {
    let s = iris();
    let body = json!({"instances": [[5.1, 3.5, 1.4, 0.2], [6.7, 3.0, 5.2, 2.3]]}).to_string();
    let v = ok(post(&s.addr, "/v1/models/iris-lr:explain", &body));
    let explanations = v["explanations"]
        .as_array()
        .unwrap_or_else(|| panic!("{v}"));
    assert_eq!(explanations.len(), 2, "{v}");
    assert!(
        explanations
            .iter()
            .all(|r| r.as_array().unwrap().len() == 4),
        "{v}"
    );
    assert_eq!(v["predictions"][0]["label"], 0, "{v}");
    assert!(v["predictions"][0].get("attributions").is_none(), "{v}");
}

#[test]
fn model_list_and_readiness() {
    let s = iris();
    let v = ok(get_blocking(&s.addr, "/v1/models"));
    assert_eq!(v, json!({"models": ["iris-lr", "iris-rf"]}));
    let v = ok(get_blocking(&s.addr, "/v1/models/iris-lr"));
    assert_eq!(v, json!({"name": "iris-lr", "ready": true}));
    // The router is a model too.
    let v = ok(get_blocking(&s.addr, "/v1/models/iris"));
    assert_eq!(v["ready"], true);
}

#[test]
fn unknown_model_is_kserves_404() {
    let s = iris();
    let r = get_blocking(&s.addr, "/v1/models/nope");
    assert_eq!(r.status, 404);
    // Exactly KServe's body.
    assert_eq!(
        r.json(),
        json!({"error": "Model with name nope does not exist."})
    );
    let r = post(
        &s.addr,
        "/v1/models/nope:predict",
        r#"{"instances": [[1, 2, 3, 4]]}"#,
    );
    assert_eq!(r.status, 404);
    assert!(
        r.error()
            .starts_with("Model with name nope does not exist."),
        "{}",
        r.error()
    );
}

#[test]
fn bad_bodies_are_kserves_400() {
    let s = iris();
    let cases = [
        ("{not json", "Unrecognized request format: "),
        (
            r#"{"data": [[1, 2, 3, 4]]}"#,
            "Expected \"instances\" or \"inputs\" in the request body",
        ),
        (r#"{"instances": 5}"#, "Expected \"instances\" to be a list"),
    ];
    for (body, error) in cases {
        let r = post(&s.addr, "/v1/models/iris-lr:predict", body);
        assert_eq!(r.status, 400, "{body}");
        assert!(r.error().starts_with(error), "{body}: {}", r.error());
    }
}

#[test]
fn wrong_verbs_and_methods_say_what_is_served() {
    let s = iris();
    let r = post(&s.addr, "/v1/models/iris-lr:score", "{}");
    assert_eq!(r.status, 404);
    assert!(
        r.error().contains("`:predict` and `:explain`"),
        "{}",
        r.error()
    );
    let r = get_blocking(&s.addr, "/v1/models/iris-lr:predict");
    assert_eq!(r.status, 405);
    assert_eq!(r.headers["allow"], "POST");
    let r = post(&s.addr, "/v1/models/iris-lr", "{}");
    assert_eq!(r.status, 405);
    assert_eq!(r.headers["allow"], "GET");
}

#[test]
fn kserves_own_v1_client_predicts_and_explains() {
    let s = iris();
    let expected = root().join("models/iris_expected.json");
    python_case(
        "kserve_v1_check.py",
        "client",
        &[s.addr.as_ref(), expected.as_ref()],
    );
}

/// A router of Python routes (YAML fields per route), classes of `tests/python/{file}`.
fn python_graph(dir: &std::path::Path, file: &str, routes: &[(&str, &str)]) -> String {
    let models = root().join("tests/python").join(file);
    let mut yaml = String::from("name: py\ngraph:\n  kind: router\n  routes:\n");
    for (name, fields) in routes {
        yaml.push_str(&format!(
            "    {name}: {{kind: model, class: python, path: {}, python: {}, {fields}}}\n",
            models.display(),
            test_python().display()
        ));
    }
    let path = dir.join("py.yaml");
    std::fs::write(&path, yaml).unwrap();
    path.display().to_string()
}

#[test]
fn python_models_answer_instances_as_tensors_or_as_mlruns_body() {
    let dir = tempfile::tempdir().unwrap();
    let g = python_graph(
        dir.path(),
        "models/models.py",
        &[(
            "echo",
            "class_name: Echo, class_args: {scale: 2.5}, inputs: [{name: input, datatype: FP32, shape: [-1, -1]}]",
        )],
    );
    let s = Server::start(&g, &[]);
    // Declared inputs: the instances are its input tensor; two outputs, an object per row.
    let v = ok(post(
        &s.addr,
        "/v1/models/echo:predict",
        r#"{"instances": [[1, 2], [3, 4]]}"#,
    ));
    let preds = v["predictions"].as_array().unwrap_or_else(|| panic!("{v}"));
    assert_eq!(preds[0]["output"], json!([2.5, 5.0]), "{v}");
    assert_eq!(preds[1]["output"], json!([7.5, 10.0]), "{v}");
    assert!(preds[1]["pid"].as_i64().is_some(), "{v}");
    // The class raising: a 500 in KServe's shape.
    let r = post(
        &s.addr,
        "/v1/models/echo:predict",
        r#"{"instances": [[-1, 2]]}"#,
    );
    assert_eq!(r.status, 500);
    assert!(
        r.error().contains("negative one is not allowed"),
        "{}",
        r.error()
    );

    // An MLRun class with no declared inputs gets MLRun's body; its outputs are predictions.
    let dir = tempfile::tempdir().unwrap();
    let g = python_graph(
        dir.path(),
        "mlrun/models.py",
        &[(
            "sum",
            "class_name: ClassifierModel, class_args: {offset: 0.5}",
        )],
    );
    let s = Server::start(&g, &[]);
    let body = r#"{"instances": [[5.1, 3.5, 1.4, 0.2], [1, 2, 3, 4]]}"#;
    let v = ok(post(&s.addr, "/v1/models/sum:predict", body));
    assert_eq!(v, json!({"predictions": [10.7, 10.5]}));
}

#[test]
fn a_model_still_loading_is_kserves_503() {
    let dir = tempfile::tempdir().unwrap();
    let g = python_graph(
        dir.path(),
        "models/models.py",
        &[("slow", "class_name: SlowLoad, class_args: {seconds: 3}")],
    );
    // A free port, to ask before the server says where it listens (once its models load).
    let addr = {
        let probe = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        probe.local_addr().unwrap().to_string()
    };
    let mut child = bin()
        .args(["serve", &g, "--listen", &addr])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let started = std::time::Instant::now();
    let mut refused = Vec::new();
    let ready = loop {
        match block_on(get(&addr, "/v1/models/slow")) {
            Ok(r) if r.status == 200 => break r.json(),
            Ok(r) => refused.push((r.status, r.error())),
            Err(_) => {}
        }
        if started.elapsed() > std::time::Duration::from_secs(30) {
            break Value::Null;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    };
    let _ = child.kill();
    let _ = child.wait();
    assert_eq!(ready, json!({"name": "slow", "ready": true}), "{refused:?}");
    let (status, error) = refused.first().unwrap_or_else(|| panic!("never refused"));
    assert_eq!(*status, 503, "{refused:?}");
    assert!(
        error.starts_with("Model with name slow is not ready. not ready: models are loading"),
        "{error}"
    );
}

#[test]
fn a_versioned_route_is_named_as_the_list_names_it() {
    let dir = tempfile::tempdir().unwrap();
    let model = root().join("models/iris_lr.onnx");
    let graph = dir.path().join("g.yaml");
    std::fs::write(
        &graph,
        format!(
            "name: g\ngraph:\n  kind: router\n  routes:\n    lr:2: {{kind: model, class: onnx, model_path: {}}}\n",
            model.display()
        ),
    )
    .unwrap();
    let s = Server::start(graph.to_str().unwrap(), &[]);
    let v = ok(get_blocking(&s.addr, "/v1/models"));
    assert_eq!(v, json!({"models": ["lr:2"]}));
    let v = ok(get_blocking(&s.addr, "/v1/models/lr:2"));
    assert_eq!(v, json!({"name": "lr:2", "ready": true}));
    let body = json!({"instances": expected()["rows"]}).to_string();
    let v = ok(post(&s.addr, "/v1/models/lr:2:predict", &body));
    assert_predictions(&v, "iris-lr");
    let r = post(&s.addr, "/v1/models/lr:3:predict", &body);
    assert_eq!(r.status, 404);
    assert!(
        r.error()
            .starts_with("Model with name lr:3 does not exist."),
        "{}",
        r.error()
    );
}

#[test]
fn other_methods_on_predict_name_post() {
    let s = iris();
    let r = block_on(request(
        &s.addr,
        "PUT",
        "/v1/models/iris-lr:predict",
        &[],
        Vec::new(),
    ))
    .unwrap();
    assert_eq!(r.status, 405);
    assert_eq!(r.headers["allow"], "POST");
    let r = block_on(request(&s.addr, "DELETE", "/v1/models", &[], Vec::new())).unwrap();
    assert_eq!(r.status, 405);
    assert_eq!(r.headers["allow"], "GET");
}
