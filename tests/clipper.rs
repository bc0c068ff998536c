//! Clipper's query API (issue 23): `POST /{app}/predict` with `{"input": ...}` or
//! `{"input_batch": [...]}`, sent as Clipper's clients send it (raw HTTP, `Content-Type:
//! application/json`), answered in Clipper's shape; apps deployed with the Clipper-style
//! deployers (`tests/python/clipper_check.py`), default outputs and SLOs.

mod common;

use common::*;
use serde_json::{Value, json};

const TOKEN: &str = "clipper-token";

/// POSTs `body` to `path` as Clipper's clients do.
fn query(s: &Server, path: &str, body: &Value) -> Reply {
    post(&s.addr, path, &body.to_string())
}

/// The keys of a JSON object in the order the server wrote them.
fn keys_in_order(body: &[u8]) -> Vec<String> {
    #[derive(serde::Deserialize)]
    struct Ordered(#[serde(with = "ordered")] Vec<String>);
    mod ordered {
        use serde::de::{Deserializer, IgnoredAny, MapAccess, Visitor};
        pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
            struct Keys;
            impl<'de> Visitor<'de> for Keys {
                type Value = Vec<String>;
                fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                    f.write_str("an object")
                }
                fn visit_map<A: MapAccess<'de>>(self, mut m: A) -> Result<Vec<String>, A::Error> {
                    let mut keys = Vec::new();
                    while let Some((k, _)) = m.next_entry::<String, IgnoredAny>()? {
                        keys.push(k);
                    }
                    Ok(keys)
                }
            }
            d.deserialize_map(Keys)
        }
    }
    serde_json::from_slice::<Ordered>(body).unwrap().0
}

fn close(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Array(x), Value::Array(y)) => {
            x.len() == y.len() && x.iter().zip(y).all(|(a, b)| close(a, b))
        }
        (a, b) => (a.as_f64().unwrap() - b.as_f64().unwrap()).abs() < 1e-5,
    }
}

/// A router graph in a new folder (deployed apps' files and overlay go beside it), served
/// with an admin token, with the Python apps of `case` deployed.
fn deployed(case: &str) -> (tempfile::TempDir, Server) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("apps.yaml");
    std::fs::write(
        &path,
        format!(
            "name: apps\ngraph:\n  kind: router\n  routes:\n    iris-lr: {{kind: model, class: onnx, model_path: \"{}\"}}\n",
            root().join("models/iris_lr.onnx").display()
        ),
    )
    .unwrap();
    let s = Server::start(&path.display().to_string(), &["--admin-token", TOKEN]);
    let root = root();
    python_case(
        "clipper_check.py",
        case,
        &[s.addr.as_ref(), TOKEN.as_ref(), root.as_ref()],
    );
    (dir, s)
}

#[test]
fn an_onnx_model_answers_input_and_input_batch_in_clippers_shape() {
    let s = Server::start("graphs/iris.yaml", &[]);
    let expected = expected();
    let rows = expected["rows"].as_array().unwrap();
    let want = &expected["iris-lr"];

    // One query: `{"query_id", "output", "default"}`, in that order; the model's two outputs
    // by name.
    let r = query(&s, "/iris-lr/predict", &json!({ "input": rows[0] }));
    assert_eq!(r.status, 200, "{:?}", r.body);
    assert_eq!(r.headers["content-type"], "application/json");
    assert_eq!(keys_in_order(&r.body), ["query_id", "output", "default"]);
    let one = r.json();
    assert!(one["query_id"].is_u64(), "{one}");
    assert_eq!(one["default"], false);
    assert_eq!(one["output"]["label"], want["label"][0]);
    assert!(close(
        &one["output"]["probabilities"],
        &want["probabilities"][0]
    ));

    // A batch: `{"batch_predictions": [...]}`, one answer per query, ids increasing.
    let r = query(&s, "/iris-lr/predict", &json!({ "input_batch": rows }));
    assert_eq!(r.status, 200);
    let batch = r.json();
    assert_eq!(keys_in_order(&r.body), ["batch_predictions"]);
    let answers = batch["batch_predictions"].as_array().unwrap();
    assert_eq!(answers.len(), rows.len());
    let first = answers[0]["query_id"].as_u64().unwrap();
    assert!(first > one["query_id"].as_u64().unwrap());
    for (i, a) in answers.iter().enumerate() {
        assert_eq!(a["query_id"], first + i as u64, "{a}");
        assert_eq!(a["default"], false);
        assert_eq!(a["output"]["label"], want["label"][i]);
        assert!(a.get("default_explanation").is_none());
    }

    // As Clipper's frontend: a batch of one is answered as one query; an empty batch is an
    // empty list. The trailing slash Clipper accepts is accepted.
    let r = query(
        &s,
        "/iris-lr/predict/",
        &json!({ "input_batch": [rows[1]] }),
    );
    assert_eq!(r.status, 200);
    assert_eq!(r.json()["output"]["label"], want["label"][1]);
    let r = query(&s, "/iris-lr/predict", &json!({ "input_batch": [] }));
    assert_eq!(r.json(), json!({ "batch_predictions": [] }));

    // The graph's router is an app too (its policy picks the model); a version by `version`.
    let r = query(&s, "/iris/predict", &json!({ "input": rows[0] }));
    assert_eq!(r.status, 200);
    assert_eq!(r.json()["output"]["label"], 0);
    let r = query(
        &s,
        "/iris-rf/predict",
        &json!({ "input": rows[0], "version": "1" }),
    );
    assert_eq!(r.status, 200);
    let r = query(
        &s,
        "/iris-rf/predict",
        &json!({ "input": rows[0], "version": "7" }),
    );
    assert_eq!(r.status, 400);
    assert_eq!(r.json()["error"], "Query processing error");
    assert_eq!(
        r.json()["cause"],
        "Requested version: 7 does not exist for model: iris-rf"
    );

    // The other protocols' routes are untouched; a GET names the method.
    assert_eq!(get_blocking(&s.addr, "/v2/health/ready").status, 200);
    assert_eq!(get_blocking(&s.addr, "/metrics").status, 200);
    assert_eq!(
        post(&s.addr, "/v2/models/iris-lr/predict", &iris_request("m")).status,
        200
    );
    let r = get_blocking(&s.addr, "/iris-lr/predict");
    assert_eq!(r.status, 405);
    assert_eq!(r.headers["allow"], "POST");
}

#[test]
fn an_unknown_app_is_clippers_error_naming_the_apps() {
    let s = Server::start("graphs/iris.yaml", &[]);
    let r = query(
        &s,
        "/iris-lx/predict",
        &json!({ "input": [1.0, 2.0, 3.0, 4.0] }),
    );
    assert_eq!(r.status, 404);
    assert_eq!(keys_in_order(&r.body), ["error", "cause"]);
    assert_eq!(
        r.json(),
        json!({
            "error": "Query processing error",
            "cause": "no application `iris-lx` (did you mean `iris-lr`?); this server's applications are: iris, iris-lr, iris-rf"
        })
    );
}

#[test]
fn a_bad_body_is_clippers_json_error_naming_the_field() {
    let s = Server::start("graphs/iris.yaml", &[]);
    let schema = r#"Expected JSON schema: {"input" := [double] | [int] | [string] | [byte] | [float] | string} or {"input_batch" := [[double] | [int] | [byte] | [float] | string]}"#;
    let cases = [
        (
            "{\"input\": [1, 2",
            "JSON parse error: EOF while parsing a list",
        ),
        (
            r#"{"inputs": [[5.1, 3.5, 1.4, 0.2]]}"#,
            "JSON object does not have required keys input or input_batch",
        ),
        (
            r#"{"input": {"x": 1}}"#,
            "`input` must be a list of numbers, a string or a number, not an object",
        ),
        (
            r#"{"input_batch": [[5.1, 3.5, 1.4, 0.2], null]}"#,
            "`input_batch[1]` must be a list of numbers, a string or a number, not null",
        ),
        (
            r#"{"input": ["a", "b", "c", "d"]}"#,
            "the queries do not fit `iris-lr`'s input `input` (FP32 [-1, 4]): element 0 is \"a\", which is not one of FP32 numbers. Expected",
        ),
    ];
    for (body, want) in cases {
        let r = post(&s.addr, "/iris-lr/predict", body);
        assert_eq!(r.status, 400, "{body}");
        let v = r.json();
        assert_eq!(v["error"], "Json error", "{body}: {v}");
        let cause = v["cause"].as_str().unwrap();
        assert!(
            cause.starts_with("Error parsing JSON: ") && cause.contains(want),
            "{body}: {cause}"
        );
        assert!(cause.ends_with(schema), "{cause}");
    }
}

#[test]
fn deployed_closures_are_apps_answering_strings_and_numbers() {
    let (_dir, s) = deployed("closures");
    // A strings closure deployed without an app of its own: an app of its name, strings out.
    let r = query(&s, "/shout/predict", &json!({ "input": "hello" }));
    assert_eq!(r.status, 200, "{:?}", r.body);
    let one = r.json();
    assert_eq!(one["output"], "HELLO!");
    assert_eq!(one["default"], false);
    let r = query(
        &s,
        "/shout/predict",
        &json!({ "input_batch": ["a", "b c"] }),
    );
    let outputs: Vec<Value> = r.json()["batch_predictions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["output"].clone())
        .collect();
    assert_eq!(outputs, [json!("A!"), json!("B C!")]);
    // Clipper's README app: its model's strings are JSON numbers, answered as numbers.
    let r = query(
        &s,
        "/hello-world/predict",
        &json!({ "input": [1.1, 2.2, 3.3] }),
    );
    assert_eq!(r.status, 200);
    let v = r.json();
    assert_eq!(keys_in_order(&r.body), ["query_id", "output", "default"]);
    assert!((v["output"].as_f64().unwrap() - 6.6).abs() < 1e-9, "{v}");
    let r = query(
        &s,
        "/hello-world/predict",
        &json!({ "input_batch": [[1.0], [2.0, 3.0]] }),
    );
    // Rows of different lengths are not one tensor: Clipper's JSON error, not the default.
    assert_eq!(r.status, 400, "{}", r.json());
    assert_eq!(r.json()["error"], "Json error");
    // A `bytes` app's queries are base64, as Clipper's clients send bytes.
    let r = query(&s, "/byte-len/predict", &json!({ "input": "AAH/" }));
    assert_eq!(r.json()["output"], 3, "{}", r.json());
}

#[test]
fn a_failing_model_answers_the_default_output_or_clippers_error() {
    let (dir, s) = deployed("failing");
    // No default output: Clipper's error shape with the failure's status.
    let r = query(&s, "/broken/predict", &json!({ "input": [1.0] }));
    assert_eq!(r.status, 500);
    let v = r.json();
    assert_eq!(v["error"], "Query processing error");
    assert!(
        v["cause"]
            .as_str()
            .unwrap()
            .contains("ValueError: no prediction today"),
        "{v}"
    );
    // A default output (`create_endpoint`'s `default_output="-1.0"`): each query answers it
    // (as JSON, as Clipper does), `default: true`, the failure as the explanation.
    let r = query(
        &s,
        "/broken-default/predict",
        &json!({ "input_batch": [[1.0], [2.0]] }),
    );
    assert_eq!(r.status, 200);
    let answers = r.json()["batch_predictions"].as_array().unwrap().clone();
    assert_eq!(answers.len(), 2);
    let first = answers[0]["query_id"].as_u64().unwrap();
    for (i, a) in answers.iter().enumerate() {
        assert_eq!(a["query_id"], first + i as u64);
        assert_eq!(a["output"], -1.0);
        assert_eq!(a["default"], true);
        let why = a["default_explanation"].as_str().unwrap();
        assert!(why.contains("ValueError: no prediction today"), "{why}");
    }
    let r = query(&s, "/broken-default/predict", &json!({ "input": [1.0] }));
    assert_eq!(
        keys_in_order(&r.body),
        ["query_id", "output", "default", "default_explanation"]
    );
    // A request at fault is an error even with a default output.
    let r = query(&s, "/broken-default/predict", &json!({ "input": true }));
    assert_eq!(r.status, 400);
    assert_eq!(r.json()["error"], "Json error");

    // Past the SLO: Clipper's default output ("None") with Clipper's explanation, in time.
    let start = std::time::Instant::now();
    let r = query(&s, "/slow/predict", &json!({ "input": [1.0] }));
    assert!(start.elapsed() < std::time::Duration::from_millis(1500));
    assert_eq!(r.status, 200);
    let v = r.json();
    assert_eq!(v["output"], "None");
    assert_eq!(v["default"], true);
    assert_eq!(
        v["default_explanation"],
        "Failed to retrieve a prediction response within the specified latency SLO"
    );
    // Without a default output, past the SLO is a 504.
    let r = query(&s, "/slow-error/predict", &json!({ "input": [1.0] }));
    assert_eq!(r.status, 504);
    assert_eq!(
        r.json()["cause"],
        "Failed to retrieve a prediction response within the specified latency SLO of 300000 microseconds"
    );

    // The apps' settings are kept with the repository, so a restart keeps them.
    let overlay: Value =
        serde_json::from_slice(&std::fs::read(dir.path().join("apps.repository.json")).unwrap())
            .unwrap();
    assert_eq!(
        overlay["apps"]["broken-default"],
        json!({"input_type": "doubles", "default_output": "-1.0", "slo_micros": 3000000})
    );
    assert_eq!(overlay["apps"]["broken"], json!({"input_type": "doubles"}));
}
