//! Seldon Core's v1 protocol and component types: classes written as Seldon's documentation
//! writes them (`tests/python/seldon/models.py`), driven with the bodies Seldon's clients send
//! (`SeldonClient` posts the `SeldonMessage` as JSON to the gateway's paths), answered in
//! Seldon's shapes.

mod common;

use common::{Server, bin, get_blocking, post, root, test_python};
use serde_json::{Value, json};

/// A graph file in `dir` with `graph` (YAML, indented under `graph:`), where `MODELS` stands
/// for the test classes' file and `PYTHON` for the test interpreter.
fn graph_file(dir: &std::path::Path, graph: &str) -> String {
    let yaml = format!("name: seldon\ngraph:\n{graph}")
        .replace(
            "MODELS",
            &root()
                .join("tests/python/seldon/models.py")
                .display()
                .to_string(),
        )
        .replace("PYTHON", &test_python().display().to_string());
    let path = dir.join("seldon.yaml");
    std::fs::write(&path, yaml).unwrap();
    path.display().to_string()
}

fn serve(graph: &str) -> (tempfile::TempDir, Server) {
    let dir = tempfile::tempdir().unwrap();
    let path = graph_file(dir.path(), graph);
    let server = Server::start(&path, &[]);
    (dir, server)
}

/// Routes by name to each class (`name: ClassName`), with `extra` fields on each.
fn models(names: &[(&str, &str)]) -> String {
    let mut yaml = String::from("  kind: router\n  routes:\n");
    for (name, class) in names {
        yaml.push_str(&format!(
            "    {name}: {{kind: model, class: python, path: MODELS, python: PYTHON, class_name: {class}}}\n"
        ));
    }
    yaml
}

/// What a script of `tests/python/` printed (JSON) after driving the server at `addr` with
/// Seldon's own client, in the interpreter that has seldon-core.
fn seldon_check(script: &str, addr: &str) -> Value {
    let out = std::process::Command::new(common::seldon_python())
        .arg(root().join("tests/python").join(script))
        .arg(addr)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

fn ok(r: common::Reply) -> Value {
    assert_eq!(r.status, 200, "{:?}", r.body);
    r.json()
}

#[test]
fn a_model_answers_ndarray_and_tensor_requests_in_seldons_shape() {
    let (_dir, server) = serve(&models(&[("doubler", "Doubler")]));
    let body =
        json!({"data": {"names": ["a", "b"], "ndarray": [[1, 2], [3, 4]]}, "meta": {"puid": "p1"}});
    for path in [
        "/seldon/ns/doubler/api/v1.0/predictions",
        "/seldon/doubler/api/v1.0/predictions",
    ] {
        let v = ok(post(&server.addr, path, &body.to_string()));
        assert_eq!(v["data"]["ndarray"], json!([[2, 4], [6, 8]]), "{v}");
        assert_eq!(v["data"]["names"], json!(["t:0", "t:1"]), "{v}");
        assert_eq!(v["meta"]["puid"], "p1", "{v}");
    }
    let tensor = json!({"data": {"tensor": {"shape": [1, 2], "values": [1.5, 2]}}});
    let v = ok(post(
        &server.addr,
        "/seldon/doubler/api/v1.0/predictions",
        &tensor.to_string(),
    ));
    assert_eq!(
        v["data"]["tensor"],
        json!({"shape": [1, 2], "values": [3.0, 4.0]}),
        "{v}"
    );
    // Without a puid, the answer carries the id the server gave the request.
    assert!(
        v["meta"]["puid"].as_str().is_some_and(|p| !p.is_empty()),
        "{v}"
    );
}

#[test]
fn text_json_and_bytes_payloads_travel_as_seldon_sends_them() {
    let (_dir, server) = serve(&models(&[("kinds", "Kinds")]));
    let path = "/seldon/kinds/api/v1.0/predictions";
    let v = ok(post(
        &server.addr,
        path,
        &json!({"strData": "hello"}).to_string(),
    ));
    assert_eq!(v["strData"], "HELLO", "{v}");
    assert_eq!(v["meta"]["tags"], json!({"component": "kinds"}), "{v}");
    let v = ok(post(
        &server.addr,
        path,
        &json!({"jsonData": {"b": 1, "a": 2}, "meta": {"tags": {"user": "x"}}}).to_string(),
    ));
    assert_eq!(
        v["jsonData"],
        json!({"keys": ["a", "b"], "meta_tags": {"user": "x"}}),
        "{v}"
    );
    // Request tags are kept in the answer, with the class's.
    assert_eq!(
        v["meta"]["tags"],
        json!({"user": "x", "component": "kinds"}),
        "{v}"
    );
    // base64 of b"abc" in, of b"cba" out.
    let v = ok(post(
        &server.addr,
        path,
        &json!({"binData": "YWJj"}).to_string(),
    ));
    assert_eq!(v["binData"], "Y2Jh", "{v}");
    // A SeldonResponse's tags and data.
    let v = ok(post(
        &server.addr,
        path,
        &json!({"data": {"ndarray": [[1.0]]}}).to_string(),
    ));
    assert_eq!(v["data"]["ndarray"], json!([[2.0]]), "{v}");
    assert_eq!(
        v["meta"]["tags"],
        json!({"component": "kinds", "kind": "array"}),
        "{v}"
    );
}

#[test]
fn predict_raw_takes_precedence_over_predict() {
    let (_dir, server) = serve(&models(&[("raw", "Raw")]));
    let body = json!({"data": {"ndarray": [[1, 2], [3, 4]]}});
    let v = ok(post(
        &server.addr,
        "/seldon/raw/api/v1.0/predictions",
        &body.to_string(),
    ));
    assert_eq!(v["data"]["ndarray"], json!([[3], [7]]), "{v}");
    assert_eq!(v["meta"]["tags"], json!({"raw": true}), "{v}");
    // Over the OIP too: predict_raw gets the request as a SeldonMessage.
    let oip =
        json!({"inputs": [{"name": "x", "shape": [1, 2], "datatype": "FP32", "data": [1, 2]}]});
    let v = ok(post(&server.addr, "/v2/models/raw/infer", &oip.to_string()));
    assert_eq!(v["outputs"][0]["data"], json!([3.0]), "{v}");
}

#[test]
fn transformer_model_and_output_transformer_run_as_a_seldon_graph() {
    let flow = "  kind: flow
  steps:
    scale: {kind: model, class: python, path: MODELS, python: PYTHON, class_name: Scaler, role: transformer}
    model: {kind: model, class: python, path: MODELS, python: PYTHON, class_name: Doubler, after: scale}
    label: {kind: model, class: python, path: MODELS, python: PYTHON, class_name: Labeller, role: output_transformer, after: model}
";
    let (_dir, server) = serve(flow);
    let body = json!({"data": {"ndarray": [[1, 5], [3, 4]]}});
    let v = ok(post(
        &server.addr,
        "/api/v1.0/predictions",
        &body.to_string(),
    ));
    // (x / 10) * 2 > 0.5
    assert_eq!(
        v["data"]["ndarray"],
        json!([["low", "high"], ["high", "high"]]),
        "{v}"
    );
}

#[test]
fn errors_are_answered_in_seldons_shape() {
    let (_dir, server) = serve(&models(&[("doubler", "Doubler")]));
    let r = post(
        &server.addr,
        "/seldon/doubler/api/v1.0/predictions",
        r#"{"nothing": 1}"#,
    );
    assert_eq!(r.status, 400, "{:?}", r.body);
    let status = &r.json()["status"];
    assert_eq!(status["code"], 400);
    assert_eq!(status["status"], "FAILURE");
    assert_eq!(status["reason"], "MICROSERVICE_BAD_DATA");
    assert!(
        status["info"].as_str().unwrap().contains("`data`"),
        "{status}"
    );
    let r = post(
        &server.addr,
        "/seldon/nope/api/v1.0/predictions",
        r#"{"data": {"ndarray": [1]}}"#,
    );
    assert_eq!(r.status, 404, "{:?}", r.body);
    assert_eq!(r.json()["status"]["status"], "FAILURE");
    let r = post(
        &server.addr,
        "/seldon/doubler/api/v1.0/predictions",
        "{not json",
    );
    assert_eq!(r.status, 400, "{:?}", r.body);
    assert!(
        r.json()["status"]["info"]
            .as_str()
            .unwrap()
            .contains("malformed JSON")
    );
}

#[test]
fn health_and_metadata_as_seldons_gateway_serves_them() {
    let (_dir, server) = serve(&models(&[("healthy", "Healthy"), ("doubler", "Doubler")]));
    let r = get_blocking(&server.addr, "/health/ping");
    assert_eq!((r.status, &r.body[..]), (200, &b"pong"[..]));
    // A class without health_status(): Seldon's default.
    let v = ok(get_blocking(&server.addr, "/api/v1.0/status/doubler"));
    assert_eq!(v["strData"], "healthy", "{v}");
    let v = ok(get_blocking(&server.addr, "/api/v1.0/metadata"));
    assert_eq!(v["name"], "seldon", "{v}");
    // The class's init_metadata() says what it takes.
    assert_eq!(v["models"]["healthy"]["inputs"][0]["name"], "input", "{v}");
    assert_eq!(
        v["models"]["healthy"]["inputs"][0]["datatype"], "FP64",
        "{v}"
    );
}

#[test]
fn an_onnx_model_takes_seldons_ndarray() {
    let server = Server::start(&root().join("graphs/iris.yaml").display().to_string(), &[]);
    let body = json!({"data": {"ndarray": [[5.1, 3.5, 1.4, 0.2], [6.7, 3.0, 5.2, 2.3]]}});
    let v = ok(post(
        &server.addr,
        "/seldon/default/iris-lr/api/v1.0/predictions",
        &body.to_string(),
    ));
    // Two outputs (label, probabilities): Seldon's jsonData by name.
    assert_eq!(v["jsonData"]["label"], json!([0, 2]), "{v}");
}

#[test]
fn feedback_credits_the_learning_router_by_the_answers_puid() {
    let graph = "  kind: router
  policy: {type: epsilon_greedy, epsilon: 0}
  routes:
    a: {kind: model, class: python, path: MODELS, python: PYTHON, class_name: Doubler}
    b: {kind: model, class: python, path: MODELS, python: PYTHON, class_name: Doubler, class_args: {factor: 3}}
";
    let (_dir, server) = serve(graph);
    let request = json!({"data": {"ndarray": [[1.0]]}});
    let response = ok(post(
        &server.addr,
        "/api/v1.0/predictions",
        &request.to_string(),
    ));
    // Seldon's routing: the router's index of its routes.
    let index = response["meta"]["routing"]["seldon"].as_i64().unwrap();
    let route = ["a", "b"][index as usize];
    let feedback = json!({"request": request, "response": response, "reward": 1.0});
    let v = ok(post(
        &server.addr,
        "/api/v1.0/feedback",
        &feedback.to_string(),
    ));
    assert!(v["data"].is_object(), "{v}");
    let stats = ok(get_blocking(&server.addr, "/v2/models/seldon/experiment"));
    let rewarded: f64 = stats["routes"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["route"] == route)
        .map(|r| r["rewards"].as_f64().unwrap_or_default())
        .sum();
    assert_eq!(rewarded, 1.0, "{stats}");
    let r = post(&server.addr, "/api/v1.0/feedback", r#"{"response": {}}"#);
    assert_eq!(r.status, 400, "{:?}", r.body);
    assert_eq!(r.json()["status"]["status"], "FAILURE");
}

#[test]
fn a_router_or_combiner_role_on_a_model_says_where_it_goes() {
    let dir = tempfile::tempdir().unwrap();
    let path = graph_file(
        dir.path(),
        "  kind: flow\n  steps:\n    r: {kind: model, class: python, path: MODELS, python: PYTHON, class_name: Doubler, role: router}\n",
    );
    let out = bin().args(["validate", &path]).output().unwrap();
    assert!(!out.status.success());
    let text = String::from_utf8_lossy(&out.stderr) + String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("a Seldon `router` has children"), "{text}");
    assert!(text.contains("policy: {type: seldon"), "{text}");
}

#[test]
fn a_seldon_router_class_routes_and_learns_from_feedback() {
    let graph = "  kind: router
  policy: {type: seldon, path: MODELS, python: PYTHON, class_name: BestRouter, class_args: {n_branches: 2}}
  routes:
    small: {kind: model, class: python, path: MODELS, python: PYTHON, class_name: Doubler}
    large: {kind: model, class: python, path: MODELS, python: PYTHON, class_name: Doubler, class_args: {factor: 10}}
";
    let (_dir, server) = serve(graph);
    let predict = |x: f64| {
        let body = json!({"data": {"ndarray": [[x]]}});
        ok(post(
            &server.addr,
            "/api/v1.0/predictions",
            &body.to_string(),
        ))
    };
    // route() by the features: 1.0 → route 0 (× 2), 20.0 → route 1 (× 10).
    assert_eq!(predict(1.0)["data"]["ndarray"], json!([[2.0]]));
    let large = predict(20.0);
    assert_eq!(large["data"]["ndarray"], json!([[200.0]]), "{large}");
    assert_eq!(large["meta"]["routing"]["seldon"], 1, "{large}");
    // Feedback on the large answer reaches send_feedback(routing=1): small requests follow.
    let feedback =
        json!({"request": {"data": {"ndarray": [[20.0]]}}, "response": large, "reward": 5.0});
    ok(post(
        &server.addr,
        "/api/v1.0/feedback",
        &feedback.to_string(),
    ));
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        if predict(1.0)["data"]["ndarray"] == json!([[10.0]]) {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "send_feedback never changed the route"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    // Over the OIP too: the router's class gets the request as a SeldonMessage.
    let oip =
        json!({"inputs": [{"name": "x", "shape": [1, 1], "datatype": "FP64", "data": [1.0]}]});
    let v = ok(post(
        &server.addr,
        "/v2/models/seldon/infer",
        &oip.to_string(),
    ));
    assert_eq!(v["outputs"][0]["data"], json!([10.0]), "{v}");
}

#[test]
fn a_seldon_router_may_send_to_every_route_or_to_none() {
    let routes = "  routes:
    a: {kind: model, class: python, path: MODELS, python: PYTHON, class_name: Doubler}
    b: {kind: model, class: python, path: MODELS, python: PYTHON, class_name: Doubler, class_args: {factor: 3}}
";
    let all = format!(
        "  kind: router\n  policy: {{type: seldon, path: MODELS, python: PYTHON, class_name: Everyone}}\n{routes}"
    );
    let (_dir, server) = serve(&all);
    let body = json!({"data": {"ndarray": [[1.0]]}}).to_string();
    // Every route ran; without a combiner the first one's answer is the router's, as in Seldon.
    let v = ok(post(&server.addr, "/api/v1.0/predictions", &body));
    assert_eq!(v["data"]["ndarray"], json!([[2.0]]), "{v}");
    let none = format!(
        "  kind: router\n  policy: {{type: seldon, path: MODELS, python: PYTHON, class_name: Nobody}}\n{routes}"
    );
    let (_dir, server) = serve(&none);
    let v = ok(post(&server.addr, "/api/v1.0/predictions", &body));
    assert_eq!(
        v["data"]["ndarray"],
        json!([[1.0]]),
        "the request is the answer: {v}"
    );
}

#[test]
fn a_seldon_combiner_class_aggregates_the_members_answers() {
    let graph = "  kind: flow
  steps:
    mean:
      kind: ensemble
      combine: seldon
      seldon: {path: MODELS, python: PYTHON, class_name: Averager}
      routes:
        two: {kind: model, class: python, path: MODELS, python: PYTHON, class_name: Doubler}
        four: {kind: model, class: python, path: MODELS, python: PYTHON, class_name: Doubler, class_args: {factor: 4}}
";
    let (_dir, server) = serve(graph);
    let body = json!({"data": {"ndarray": [[1.0, 2.0]]}}).to_string();
    let v = ok(post(&server.addr, "/api/v1.0/predictions", &body));
    assert_eq!(v["data"]["ndarray"], json!([[3.0, 6.0]]), "{v}");
}

#[test]
fn feedback_reaches_send_feedback_of_the_models_that_served_the_request() {
    let (_dir, server) = serve(&models(&[("learner", "Rewarded")]));
    let path = "/seldon/learner/api/v1.0/predictions";
    let request = json!({"data": {"ndarray": [[1.5]]}});
    let response = ok(post(&server.addr, path, &request.to_string()));
    assert_eq!(response["jsonData"]["total"], 0.0, "{response}");
    let feedback = json!({
        "request": request, "response": response, "reward": 2.0,
        "truth": {"data": {"ndarray": [[1]]}},
    });
    ok(post(
        &server.addr,
        "/seldon/learner/api/v1.0/feedback",
        &feedback.to_string(),
    ));
    let v = ok(post(&server.addr, path, &request.to_string()));
    assert_eq!(
        v["jsonData"],
        json!({"total": 2.0, "last": [[[1.5]], [[1]]]}),
        "{v}"
    );
    // A response it did not serve: not its feedback.
    let other = json!({"response": {"meta": {"puid": "someone-else"}}, "reward": 5.0});
    ok(post(&server.addr, "/api/v1.0/feedback", &other.to_string()));
    let v = ok(post(&server.addr, path, &request.to_string()));
    assert_eq!(v["jsonData"]["total"], 2.0, "{v}");
}

#[test]
fn a_class_opens_its_files_relative_to_its_own_folder_as_under_s2i() {
    // The graph's folder holds the model's folder (its code and the file it opens); the
    // server runs elsewhere (the repository's root).
    let dir = tempfile::tempdir().unwrap();
    let code = dir.path().join("iris-s2i");
    std::fs::create_dir(&code).unwrap();
    std::fs::write(code.join("coef.txt"), "3").unwrap();
    std::fs::write(
        code.join("S2iModel.py"),
        "class S2iModel:\n    def __init__(self):\n        self.coef = float(open('coef.txt').read())\n    def predict(self, X, features_names):\n        return X * self.coef\n",
    )
    .unwrap();
    let yaml = format!(
        "name: s2i\ngraph:\n  kind: router\n  routes:\n    m: {{kind: model, class: python, path: iris-s2i/S2iModel.py, python: {}, class_name: S2iModel}}\n",
        test_python().display()
    );
    let path = dir.path().join("g.yaml");
    std::fs::write(&path, yaml).unwrap();
    let server = Server::start(&path.display().to_string(), &[]);
    let v = ok(post(
        &server.addr,
        "/seldon/m/api/v1.0/predictions",
        &json!({"data": {"ndarray": [[2.0]]}}).to_string(),
    ));
    assert_eq!(v["data"]["ndarray"], json!([[6.0]]), "{v}");
}

/// Seldon Core's own `SeldonClient` (from its PyPI package, in its own virtualenv), unchanged,
/// through the gateway's paths: predictions with each payload type, and feedback that reaches
/// the class's `send_feedback`. It parses every answer into Seldon's proto messages, so an
/// answer not in Seldon's exact shape fails here.
#[test]
fn seldons_own_client_predicts_and_sends_feedback() {
    let (_dir, server) = serve(&models(&[
        ("doubler", "Doubler"),
        ("kinds", "Kinds"),
        ("learner", "Rewarded"),
    ]));
    let v = seldon_check("seldon_client_check.py", &server.addr);
    for case in [
        "ndarray",
        "tensor",
        "str",
        "json",
        "feedback",
        "after_feedback",
    ] {
        assert_eq!(v[case]["success"], true, "{case}: {v}");
    }
    assert_eq!(
        v["ndarray"]["response"]["data"]["ndarray"],
        json!([[2.0, 4.0]]),
        "{v}"
    );
    assert_eq!(
        v["ndarray"]["response"]["data"]["names"],
        json!(["t:0", "t:1"]),
        "{v}"
    );
    assert_eq!(
        v["tensor"]["response"]["data"]["tensor"],
        json!({"shape": [1, 2], "values": [2.0, 4.0]}),
        "{v}"
    );
    assert_eq!(v["str"]["response"]["strData"], "HELLO", "{v}");
    assert_eq!(
        v["json"]["response"]["jsonData"]["keys"],
        json!(["a", "b"]),
        "{v}"
    );
    assert_eq!(
        v["after_feedback"]["response"]["jsonData"]["total"], 2.0,
        "{v}"
    );
}

/// A graph served as a Seldon component microservice is (`seldon-core-microservice`), driven
/// with Seldon's own client: `/predict` and `/send-feedback` with the message in a form's
/// `json` field (and in the query, for a GET), and the endpoints of other component types
/// refused naming what serves them here.
#[test]
fn seldons_microservice_endpoints_take_its_clients_forms() {
    let (_dir, server) = serve(
        "  kind: flow\n  steps:\n    learner: {kind: model, class: python, path: MODELS, python: PYTHON, class_name: Rewarded}\n",
    );
    let v = seldon_check("seldon_microservice_check.py", &server.addr);
    for case in ["predict", "feedback", "after_feedback"] {
        assert_eq!(v[case]["success"], true, "{case}: {v}");
    }
    assert_eq!(
        v["after_feedback"]["response"]["jsonData"]["total"], 3.0,
        "the feedback reached the class: {v}"
    );
    assert_eq!(v["route"]["success"], false, "{v}");
    // A GET with the message in the query, as Seldon's microservice takes one.
    let query = "/predict?json=%7B%22data%22%3A%7B%22ndarray%22%3A%5B%5B1%5D%5D%7D%7D";
    let r = get_blocking(&server.addr, query);
    assert_eq!(r.status, 200, "{:?}", r.body);
    assert_eq!(r.json()["jsonData"]["total"], 3.0);
    // Another component type's endpoint: Seldon's error, naming what runs it here.
    let r = post(&server.addr, "/route", r#"{"data": {"ndarray": [[1]]}}"#);
    assert_eq!(r.status, 404);
    let v = r.json();
    assert_eq!(v["status"]["status"], "FAILURE", "{v}");
    let info = v["status"]["info"].as_str().unwrap();
    assert!(
        info.contains("`/route` is not served") && info.contains("policy: {type: seldon"),
        "{info}"
    );
}

/// A model subclassing Seldon's real `SeldonComponent` (seldon-core installed in the model's
/// interpreter, so servegraph's stand-in is not used): the base class's methods raise
/// `SeldonNotImplementedError`, which servegraph takes as Seldon's wrapper does.
#[test]
fn a_subclass_of_seldons_real_base_class_is_driven_as_seldon_does() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("real.py"),
        "import seldon_core\nfrom seldon_core.user_model import SeldonComponent\n\n\
class Real(SeldonComponent):\n    def predict(self, X, feature_names, **kwargs):\n        \
return X * 2\n\n    def where(self):\n        return seldon_core.__file__\n",
    )
    .unwrap();
    let yaml = format!(
        "name: g\ngraph:\n  kind: router\n  routes:\n    real: {{kind: model, class: python, path: real.py, python: {}, class_name: Real}}\n",
        common::seldon_python().display()
    );
    let path = dir.path().join("g.yaml");
    std::fs::write(&path, yaml).unwrap();
    let server = Server::start(&path.display().to_string(), &[]);
    let v = ok(post(
        &server.addr,
        "/seldon/real/api/v1.0/predictions",
        &json!({"data": {"ndarray": [[1.5]]}}).to_string(),
    ));
    assert_eq!(v["data"]["ndarray"], json!([[3.0]]), "{v}");
    // The base class's tags(), metrics() and class_names() said "not implemented": no tags,
    // and Seldon's default names for a 2-D answer.
    assert_eq!(v["data"]["names"], json!(["t:0"]), "{v}");
    assert!(v["meta"].get("tags").is_none(), "{v}");
    let ready = common::get_blocking(&server.addr, "/v2/models/real/ready");
    assert_eq!(ready.status, 200);
}

#[test]
fn health_status_and_per_model_routes_answer_as_seldons_components_do() {
    let (_dir, server) = serve(&models(&[("healthy", "Healthy")]));
    // health_status() → [1, 2], answered as Seldon's wrapper does.
    let want =
        json!({"data": {"names": [], "tensor": {"shape": [2], "values": [1, 2]}}, "meta": {}});
    for path in ["/health/status", "/api/v1.0/status/healthy"] {
        let v = ok(get_blocking(&server.addr, path));
        assert_eq!(v, want, "{path}");
    }
    // init_metadata(), completed as Seldon's validate_model_metadata does.
    let v = ok(get_blocking(&server.addr, "/api/v1.0/metadata/healthy"));
    assert_eq!(v["name"], "healthy", "{v}");
    assert_eq!(v["versions"], json!(["v1"]), "{v}");
    assert_eq!(v["platform"], "", "{v}");
    assert_eq!(v["custom"], json!({"author": "tests"}), "{v}");
    assert_eq!(v["outputs"], json!([]), "{v}");
    let v = ok(get_blocking(&server.addr, "/api/v1.0/metadata"));
    assert_eq!(
        v["models"]["healthy"]["custom"],
        json!({"author": "tests"}),
        "{v}"
    );
    let r = get_blocking(&server.addr, "/api/v1.0/status/nope");
    assert_eq!(r.status, 404, "{:?}", r.body);
}

#[test]
fn a_bad_metric_fails_the_request_as_in_seldon() {
    let (_dir, server) = serve(&models(&[("bad", "BadMetrics")]));
    let r = post(
        &server.addr,
        "/seldon/bad/api/v1.0/predictions",
        &json!({"data": {"ndarray": [[1]]}}).to_string(),
    );
    assert_eq!(r.status, 500, "{:?}", r.body);
    assert!(
        r.json()["status"]["info"]
            .as_str()
            .unwrap()
            .contains("Bad metric created during request")
    );
}

#[test]
fn feedback_without_a_response_reaches_every_class_that_takes_it() {
    let (_dir, server) = serve(&models(&[("learner", "Rewarded")]));
    let feedback = json!({"request": {"data": {"ndarray": [[3.0]]}}, "reward": 1.5});
    ok(post(
        &server.addr,
        "/api/v1.0/feedback",
        &feedback.to_string(),
    ));
    let v = ok(post(
        &server.addr,
        "/seldon/learner/api/v1.0/predictions",
        &json!({"data": {"ndarray": [[0]]}}).to_string(),
    ));
    assert_eq!(v["jsonData"]["total"], 1.5, "{v}");
}

#[test]
fn mlrun_rows_reach_a_seldon_class_as_its_input_tensor() {
    let dir = tempfile::tempdir().unwrap();
    let path = graph_file(
        dir.path(),
        "  kind: router\n  routes:\n    doubler: {kind: model, class: python, path: MODELS, python: PYTHON, class_name: Doubler, inputs: [{name: x, datatype: FP64, shape: [-1, 2]}]}\n",
    );
    let server = Server::start(&path, &[]);
    let v = ok(post(
        &server.addr,
        "/v2/models/doubler/infer",
        r#"{"inputs": [[1, 2]]}"#,
    ));
    assert_eq!(v["outputs"], json!([[2.0, 4.0]]), "{v}");
}

#[test]
fn a_transformer_without_its_role_is_told_which_role_to_give() {
    let dir = tempfile::tempdir().unwrap();
    let path = graph_file(
        dir.path(),
        "  kind: router\n  routes:\n    t: {kind: model, class: python, path: MODELS, python: PYTHON, class_name: TransformOnly, api: seldon}\n",
    );
    let out = bin().args(["validate", &path]).output().unwrap();
    assert!(!out.status.success());
    let text = String::from_utf8_lossy(&out.stderr) + String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("give the step `role: transformer`"), "{text}");
}

#[test]
fn seldons_protobuf_module_imports_and_a_message_used_is_refused_by_name() {
    let (_dir, server) = serve(&models(&[("proto", "UsesProto")]));
    let path = "/seldon/proto/api/v1.0/predictions";
    let v = ok(post(
        &server.addr,
        path,
        &json!({"data": {"ndarray": [[1.0]]}}).to_string(),
    ));
    assert_eq!(v["data"]["ndarray"], json!([[1.0]]), "{v}");
    let r = post(
        &server.addr,
        path,
        &json!({"data": {"ndarray": [[-1.0]]}}).to_string(),
    );
    assert_eq!(r.status, 500, "{:?}", r.body);
    let info = r.json()["status"]["info"].as_str().unwrap().to_owned();
    assert!(
        info.contains("SeldonMessage") && info.contains("Install seldon-core"),
        "{info}"
    );
}

#[test]
fn a_wrong_method_on_seldons_routes_names_the_right_one() {
    let (_dir, server) = serve(&models(&[("doubler", "Doubler")]));
    for (path, allowed) in [
        ("/api/v1.0/predictions", "POST"),
        ("/seldon/ns/doubler/api/v1.0/feedback", "POST"),
        ("/api/v0.1/predictions", "POST"),
    ] {
        let r = get_blocking(&server.addr, path);
        assert_eq!(r.status, 405, "{path}");
        assert_eq!(r.headers["allow"], allowed, "{path}");
    }
    let r = post(&server.addr, "/seldon/doubler/api/v1.0/metadata", "{}");
    assert_eq!(r.status, 405);
    assert_eq!(r.headers["allow"], "GET");
}

#[test]
fn health_status_answers_for_a_flows_seldon_model() {
    let dir = tempfile::tempdir().unwrap();
    let path = graph_file(
        dir.path(),
        "  kind: flow\n  steps:\n    healthy: {kind: model, class: python, path: MODELS, python: PYTHON, class_name: Healthy}\n",
    );
    let server = Server::start(&path, &[]);
    let v = ok(get_blocking(&server.addr, "/health/status"));
    assert_eq!(v["data"]["tensor"]["values"], json!([1, 2]), "{v}");
}

#[test]
fn the_deployments_metadata_lists_a_flows_components_by_their_init_metadata() {
    let dir = tempfile::tempdir().unwrap();
    let path = graph_file(
        dir.path(),
        "  kind: flow\n  steps:\n    healthy: {kind: model, class: python, path: MODELS, python: PYTHON, class_name: Healthy}\n",
    );
    let server = Server::start(&path, &[]);
    let v = ok(get_blocking(&server.addr, "/api/v1.0/metadata"));
    assert_eq!(v["models"]["healthy"]["versions"], json!(["v1"]), "{v}");
    assert_eq!(
        v["models"]["healthy"]["custom"],
        json!({"author": "tests"}),
        "{v}"
    );
}
