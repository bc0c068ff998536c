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
    let server = start_in(dir.path(), &yaml);
    (dir, server)
}

/// Writes `yaml` as a graph file in `dir` and serves it.
fn start_in(dir: &std::path::Path, yaml: &str) -> Server {
    let path = dir.join("graph.yaml");
    std::fs::write(&path, yaml).unwrap();
    Server::start(&path.display().to_string(), &[])
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
        ("numpy", json!([3, 7])),
        ("numpy-keys", json!({"0": 3.0, "1": 7.0})),
    ] {
        let body = json!({"inputs": rows, "kind": kind}).to_string();
        let v = ok(post(&server.addr, "/v2/models/shapes/infer", &body));
        assert_eq!(v["outputs"], expected, "{kind}: {v}");
    }
    // What JSON cannot carry is said, and the model goes on serving.
    let body = json!({"inputs": rows, "kind": "object"}).to_string();
    let r = post(&server.addr, "/v2/models/shapes/infer", &body);
    assert_eq!(r.status, 400, "{:?}", r.body);
    let text = String::from_utf8_lossy(&r.body);
    assert!(
        text.contains("holds a object, which JSON cannot carry"),
        "{text}"
    );
    let body = json!({"inputs": rows}).to_string();
    assert_eq!(
        ok(post(&server.addr, "/v2/models/shapes/infer", &body))["outputs"],
        json!([3, 7])
    );
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
    let server = start_in(dir.path(), &yaml);
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

/// A flow of `kind: task` steps (fields per step) on `tests/python/mlrun/tasks.py`.
fn flow(steps: &[(&str, &str)]) -> (tempfile::TempDir, Server) {
    let dir = tempfile::tempdir().unwrap();
    let path = flow_file(dir.path(), steps);
    let server = Server::start(&path, &[]);
    (dir, server)
}

fn flow_file(dir: &std::path::Path, steps: &[(&str, &str)]) -> String {
    let tasks = root().join("tests/python/mlrun/tasks.py");
    let mut yaml = String::from("name: flow\ngraph:\n  kind: flow\n  steps:\n");
    let mut previous: Option<&str> = None;
    for (name, fields) in steps {
        let after = previous
            .map(|p| format!(", after: [{p}]"))
            .unwrap_or_default();
        yaml.push_str(&format!(
            "    {name}: {{kind: task, path: {}, python: {}, {fields}{after}}}\n",
            tasks.display(),
            test_python().display()
        ));
        previous = Some(name);
    }
    let path = dir.join("flow.yaml");
    std::fs::write(&path, yaml).unwrap();
    path.display().to_string()
}

#[test]
fn a_handler_task_gets_the_body_and_its_result_is_the_next_body() {
    let (_dir, server) = flow(&[("double", "handler: double")]);
    let v = ok(post(
        &server.addr,
        "/v2/models/flow/infer",
        r#"{"values": [1, 2.5]}"#,
    ));
    assert_eq!(v, json!([2, 5.0]));
}

#[test]
fn input_path_and_result_path_pick_and_place_parts_of_the_body() {
    let (_dir, server) = flow(&[(
        "double",
        "handler: double, input_path: data, result_path: out.doubled",
    )]);
    let v = ok(post(
        &server.addr,
        "/v2/models/flow/infer",
        r#"{"data": {"values": [3]}, "keep": true}"#,
    ));
    assert_eq!(
        v,
        json!({"data": {"values": [3]}, "keep": true, "out": {"doubled": [6]}})
    );
}

#[test]
fn a_handler_asking_for_context_gets_mlruns_context() {
    let (_dir, server) = flow(&[("ctx", "handler: with_context")]);
    let v = ok(post(&server.addr, "/v2/models/flow/infer", r#"{"a": 1}"#));
    assert_eq!(v, json!({"param": "default", "got": {"a": 1}}));
}

#[test]
fn class_tasks_call_do_do_event_or_the_named_handler() {
    let (_dir, server) = flow(&[
        ("count", "class_name: Counter, class_args: {start: 10}"),
        ("event", "class_name: EventStep"),
    ]);
    let v = ok(post(
        &server.addr,
        "/v2/models/flow/infer",
        r#"{"id": "e1", "x": 1}"#,
    ));
    assert_eq!(
        v,
        json!({"id": "e1", "body": {"step": "count", "count": 11, "context": true, "body": {"id": "e1", "x": 1}}})
    );
    let (_dir, server) = flow(&[("named", "class_name: Named, handler: shout")]);
    let v = ok(post(&server.addr, "/v2/models/flow/infer", r#""hello""#));
    assert_eq!(v, json!("HELLO"));
}

#[test]
fn a_task_naming_another_mlrun_function_or_nothing_to_run_is_refused_by_validate() {
    let dir = tempfile::tempdir().unwrap();
    let path = flow_file(
        dir.path(),
        &[
            ("remote", "handler: double, function: other-fn"),
            ("empty", "comment: nothing"),
        ],
    );
    let out = common::bin().args(["validate", &path]).output().unwrap();
    assert!(!out.status.success());
    let text = String::from_utf8_lossy(&out.stderr) + String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("`function: other-fn` runs the step in another MLRun serving function"),
        "{text}"
    );
    assert!(
        text.contains("needs `handler` (a function) or `class_name`"),
        "{text}"
    );
}

#[test]
fn a_body_answer_is_refused_over_grpc_with_the_reason() {
    let dir = tempfile::tempdir().unwrap();
    let path = flow_file(dir.path(), &[("same", "handler: identity")]);
    let server = Server::start(&path, &["--grpc-listen", "127.0.0.1:0"]);
    let script = r#"
import sys, numpy as np, tritonclient.grpc as g
c = g.InferenceServerClient(sys.argv[1])
i = g.InferInput("values", [2], "FP32"); i.set_data_from_numpy(np.array([1, 2], dtype=np.float32))
try:
    c.infer("flow", [i]); print("answered")
except g.InferenceServerException as e:
    print(e.message())
"#;
    let out = std::process::Command::new(test_python())
        .args(["-c", script, server.grpc.as_deref().unwrap()])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("answered with a body"),
        "{text} {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn get_model_gives_the_folders_other_files_as_extra_data() {
    let dir = tempfile::tempdir().unwrap();
    let folder = dir.path().join("model");
    std::fs::create_dir(&folder).unwrap();
    std::fs::write(folder.join("weights.txt"), "2.5").unwrap();
    std::fs::write(folder.join("labels.csv"), "a,b").unwrap();
    let models = root().join("tests/python/mlrun/models.py");
    let yaml = format!(
        "name: extra\ngraph:\n  kind: router\n  routes:\n    m: {{kind: model, class: python, path: {}, python: {}, class_name: WithExtra, model_path: model}}\n",
        models.display(),
        test_python().display()
    );
    let server = start_in(dir.path(), &yaml);
    let v = ok(post(
        &server.addr,
        "/v2/models/m/infer",
        r#"{"inputs": [[1]]}"#,
    ));
    assert_eq!(
        v["outputs"],
        json!({"weight": 2.5, "labels": ["a", "b"], "files": ["labels.csv", "weights.txt"]}),
        "{v}"
    );
}

#[test]
fn a_serving_functions_graph_in_mlruns_field_names_serves() {
    let dir = tempfile::tempdir().unwrap();
    let models = root().join("tests/python/mlrun/models.py");
    let tasks = root().join("tests/python/mlrun/tasks.py");
    let python = test_python();
    // `spec.graph` as MLRun's `fn.to_yaml()` writes a router of models, with the code's file.
    let router = format!(
        "name: fn\ngraph:\n  kind: router\n  class_name: mlrun.serving.ModelRouter\n  class_args: {{}}\n  routes:\n    model1:\n      kind: task\n      class_name: ClassifierModel\n      class_args: {{offset: 1}}\n      path: {}\n      python: {}\n",
        models.display(),
        python.display()
    );
    let server = start_in(dir.path(), &router);
    let v = ok(post(
        &server.addr,
        "/v2/models/model1/infer",
        r#"{"inputs": [[1, 2]]}"#,
    ));
    assert_eq!(v["outputs"], json!([4.0]), "{v}");
    // A flow with MLRun's `engine` and `default_final_step`.
    let flow = format!(
        "name: flow\ngraph:\n  kind: flow\n  engine: async\n  default_final_step: b\n  steps:\n    a: {{kind: task, handler: identity, path: {t}, python: {p}}}\n    b: {{kind: task, handler: double, path: {t}, python: {p}, after: [a]}}\n",
        t = tasks.display(),
        p = python.display()
    );
    let server = start_in(dir.path(), &flow);
    let v = ok(post(
        &server.addr,
        "/v2/models/flow/infer",
        r#"{"values": [2]}"#,
    ));
    assert_eq!(v, json!([4]));
}

#[test]
fn mlruns_router_classes_that_are_not_served_are_refused_naming_the_equivalent() {
    let dir = tempfile::tempdir().unwrap();
    let yaml = "name: fn\ngraph:\n  kind: router\n  class_name: mlrun.serving.VotingEnsemble\n  routes:\n    a: {kind: task, handler: identity, path: x.py}\n";
    std::fs::write(dir.path().join("x.py"), "def identity(b):\n    return b\n").unwrap();
    let path = dir.path().join("g.yaml");
    std::fs::write(&path, yaml).unwrap();
    let out = common::bin()
        .args(["validate", &path.display().to_string()])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let text = String::from_utf8_lossy(&out.stderr) + String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("`kind: ensemble` step with `combine: vote`"),
        "{text}"
    );
}

#[test]
fn text_bodies_reach_the_flow_as_text_as_mlrun_reads_them() {
    let (_dir, server) = flow(&[("typed", "handler: typed")]);
    let path = "/v2/models/flow/infer";
    // Not JSON, no content type: text.
    let v = ok(common::post_with(&server.addr, path, "hello there", &[]));
    assert_eq!(v, json!({"type": "str", "body": "hello there"}));
    // Not JSON but said to be: MLRun's 400.
    let r = post(&server.addr, path, "hello there");
    assert_eq!(r.status, 400, "{:?}", r.body);
    // JSON: parsed, as MLRun's server does without a text content type.
    let v = ok(common::post_with(&server.addr, path, "[1, 2]", &[]));
    assert_eq!(v, json!({"type": "list", "body": [1, 2]}));
    // A text content type keeps even JSON as text.
    let r = common::post_with(
        &server.addr,
        path,
        "[1, 2]",
        &[("content-type", "application/text")],
    );
    assert_eq!(r.status, 200, "{:?}", r.body);
    assert_eq!(r.json(), json!({"type": "str", "body": "[1, 2]"}));
}

#[test]
fn handlers_may_be_expressions_or_module_functions_without_a_file() {
    let dir = tempfile::tempdir().unwrap();
    let yaml = format!(
        "name: flow\ngraph:\n  kind: flow\n  steps:\n    plus: {{kind: task, handler: \"(event + 1)\", python: {p}}}\n    text: {{kind: task, handler: json.dumps, python: {p}, after: [plus]}}\n",
        p = test_python().display()
    );
    let server = start_in(dir.path(), &yaml);
    let v = ok(post(&server.addr, "/v2/models/flow/infer", "5"));
    assert_eq!(v, json!("6"));
}

#[test]
fn an_error_handler_task_gets_the_failure_on_its_event() {
    let dir = tempfile::tempdir().unwrap();
    let yaml = format!(
        "name: flow\ngraph:\n  kind: flow\n  steps:\n    step: {{kind: task, path: {t}, python: {p}, handler: fails, on_error: catcher}}\n    catcher: {{kind: task, path: {t}, python: {p}, class_name: Catcher, full_event: true}}\n",
        t = root().join("tests/python/mlrun/tasks.py").display(),
        p = test_python().display()
    );
    let server = start_in(dir.path(), &yaml);
    let v = ok(post(&server.addr, "/v2/models/flow/infer", r#"{"x": 1}"#));
    assert_eq!(v["origin"], "step", "{v}");
    // MLRun's `event.error`: the failing step's message by its name.
    assert!(
        v["error"]["step"].as_str().unwrap().contains("no good"),
        "{v}"
    );
    assert_eq!(v["body"], json!({"x": 1}), "{v}");
}

#[test]
fn mlruns_graph_context_imports_inside_a_worker() {
    let (_dir, server) = flow(&[("ctx", "handler: uses_graph_context")]);
    let v = ok(post(&server.addr, "/v2/models/flow/infer", "{}"));
    assert_eq!(v, json!({"context": "GraphContext"}));
}

#[test]
fn a_model_after_a_task_step_answers_its_own_outputs_in_mlruns_shape() {
    let dir = tempfile::tempdir().unwrap();
    let yaml = format!(
        "name: flow\ngraph:\n  kind: flow\n  steps:\n    to-cm: {{kind: task, path: {f}, python: {p}, handler: centimetres}}\n    iris: {{kind: model, class: onnx, model_path: {m}, after: [to-cm]}}\n",
        f = root().join("models/mlrun_flow.py").display(),
        p = test_python().display(),
        m = root().join("models/iris_lr.onnx").display(),
    );
    let server = start_in(dir.path(), &yaml);
    let v = ok(post(
        &server.addr,
        "/v2/models/flow/infer",
        r#"{"id": "r", "inputs": [[51, 35, 14, 2], [67, 30, 52, 23]]}"#,
    ));
    assert_eq!(v["outputs"]["label"], json!([0, 2]), "{v}");
    assert_eq!(v["id"], "r", "{v}");
}

#[test]
fn a_classs_exception_is_mlruns_400_and_its_error_handler_still_runs() {
    // A model server whose validate() refuses a body: MLRun answers 400.
    let (_dir, server) = serve(&[("model1", "class_name: ClassifierModel")]);
    let r = post(
        &server.addr,
        "/v2/models/model1/infer",
        r#"{"inputs": {"x": 1}}"#,
    );
    assert_eq!(r.status, 400, "{:?}", r.body);
    assert!(
        r.error().contains("Expected \"inputs\" to be a list"),
        "{}",
        r.error()
    );
    // A flow step's exception is 400 too, and its on_error handler runs for it.
    let (_dir, server) = flow(&[("step", "handler: fails")]);
    let r = post(&server.addr, "/v2/models/flow/infer", r#"{"x": 1}"#);
    assert_eq!(r.status, 400, "{:?}", r.body);
}

#[test]
fn an_empty_model_path_among_class_args_reaches_the_class_as_mlrun_hands_it() {
    let dir = tempfile::tempdir().unwrap();
    let yaml = format!(
        "name: g\ngraph:\n  kind: router\n  routes:\n    m: {{kind: task, path: {}, python: {}, class_name: EmptyPath, class_args: {{model_path: \"\"}}}}\n",
        root().join("tests/python/mlrun/models.py").display(),
        test_python().display()
    );
    let server = start_in(dir.path(), &yaml);
    let v = ok(post(
        &server.addr,
        "/v2/models/m/infer",
        r#"{"inputs": [[1]]}"#,
    ));
    assert_eq!(v["outputs"], json!({"model_path": ""}), "{v}");
}

/// MLRun's VotingEnsemble, as servegraph writes it: an ensemble over MLRun model servers
/// combines their `outputs` (a vote of classes, or a mean) and answers in MLRun's shape.
#[test]
fn an_ensemble_of_mlrun_model_servers_combines_their_outputs() {
    let dir = tempfile::tempdir().unwrap();
    let member = |outputs: &str| {
        format!(
            "{{kind: model, class: python, path: {}, python: {}, class_name: Fixed, class_args: {{outputs: {outputs}}}}}",
            root().join("tests/python/mlrun/models.py").display(),
            test_python().display()
        )
    };
    let vote_only = format!(
        "name: g\ngraph:\n  kind: flow\n  steps:\n    vote:\n      kind: ensemble\n      combine: vote\n      routes:\n        a: {}\n        b: {}\n        c: {}\n",
        member("[0, 1]"),
        member("[0, 2]"),
        member("[1, 2]"),
    );
    let server = start_in(dir.path(), &vote_only);
    let v = ok(post(
        &server.addr,
        "/v2/models/g/infer",
        r#"{"id": "v", "inputs": [[1], [2]]}"#,
    ));
    assert_eq!(
        v,
        json!({"id": "v", "model_name": "vote", "outputs": [0, 2]})
    );
    drop(server);
    let mean_only = format!(
        "name: g\ngraph:\n  kind: flow\n  steps:\n    mean:\n      kind: ensemble\n      combine: mean\n      routes:\n        d: {}\n        e: {}\n",
        member("[1.0, 3.0]"),
        member("[3.0, 5.0]"),
    );
    let server = start_in(dir.path(), &mean_only);
    let v = ok(post(
        &server.addr,
        "/v2/models/g/infer",
        r#"{"id": "m", "inputs": [[1], [2]]}"#,
    ));
    assert_eq!(
        v,
        json!({"id": "m", "model_name": "mean", "outputs": [2.0, 4.0]})
    );
}

#[test]
fn mlruns_router_details_answer_at_the_root_and_v2_health() {
    let (_dir, server) = serve(&[("model1", "class_name: ClassifierModel")]);
    for path in ["/", "/v2/health"] {
        let v = ok(common::get_blocking(&server.addr, path));
        assert_eq!(
            v,
            json!({"name": "ModelRouter", "version": "v2", "extensions": []}),
            "{path}"
        );
    }
}
