//! MLServer's `MLModel` API: classes written as MLServer's repository writes them (its test
//! fixtures, its docs' custom runtimes, its scikit-learn runtime:
//! `tests/python/mlserver/models.py`), served by `class: python` twice: under servegraph's
//! stand-in (`servegraph.compat.mlserver`, in the test venv, which has no `mlserver`) and
//! under MLServer 1.7.1's own package (`common::mlserver_python()`). They are driven with
//! MLServer's own request types and codecs (`tests/python/mlserver_client.py`, which needs the
//! real package) or plain HTTP, and answer as MLServer answers.

mod common;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::{Server, bin, get_blocking, mlserver_python, post, root, test_python};
use serde_json::{Value, json};

/// The interpreter a test's models run in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Py {
    /// The test venv: no `mlserver`, servegraph's stand-in answers its imports.
    StandIn,
    /// MLServer 1.7.1 installed: its own classes are driven.
    Real,
}

impl Py {
    fn python(self) -> PathBuf {
        match self {
            Py::StandIn => test_python(),
            Py::Real => mlserver_python(),
        }
    }
}

fn models_py() -> PathBuf {
    root().join("tests/python/mlserver/models.py")
}

/// A graph `g` in `dir` routing to each `(name, fields)` model: `class: python` in `py`, with
/// `CLASS: X` standing for the test classes' file and class `X`.
fn graph(dir: &Path, py: Py, routes: &[(&str, &str)]) -> String {
    let mut yaml = String::from("name: g\ngraph:\n  kind: router\n  routes:\n");
    for (name, fields) in routes {
        let fields = match fields.strip_prefix("CLASS: ") {
            Some(rest) => {
                let (class, more) = rest.split_once(',').unwrap_or((rest, ""));
                format!(
                    "path: {}, class_name: {}{}",
                    models_py().display(),
                    class.trim(),
                    if more.is_empty() {
                        String::new()
                    } else {
                        format!(",{more}")
                    }
                )
            }
            None => fields.to_string(),
        };
        yaml.push_str(&format!(
            "    {name}: {{kind: model, class: python, python: {}, {fields}}}\n",
            py.python().display()
        ));
    }
    let path = dir.join("g.yaml");
    std::fs::write(&path, yaml).unwrap();
    path.display().to_string()
}

fn serve(py: Py, routes: &[(&str, &str)]) -> (tempfile::TempDir, Server) {
    let dir = tempfile::tempdir().unwrap();
    let path = graph(dir.path(), py, routes);
    let server = Server::start(&path, &[]);
    (dir, server)
}

/// A model folder `name` in `dir` as MLServer lays it out: the test classes' file beside
/// `model-settings.json` (`settings`), with a scikit-learn iris model (`model.joblib`) made
/// by `py` when `joblib`.
fn folder(dir: &Path, name: &str, settings: Value, py: Py, joblib: bool) -> PathBuf {
    let folder = dir.join(name);
    std::fs::create_dir_all(&folder).unwrap();
    std::fs::copy(models_py(), folder.join("models.py")).unwrap();
    std::fs::write(
        folder.join("model-settings.json"),
        serde_json::to_string_pretty(&settings).unwrap(),
    )
    .unwrap();
    if joblib {
        let out = std::process::Command::new(py.python())
            .arg("-c")
            .arg(
                "import sys, joblib\n\
                 from sklearn.datasets import load_iris\n\
                 from sklearn.linear_model import LogisticRegression\n\
                 x, y = load_iris(return_X_y=True)\n\
                 joblib.dump(LogisticRegression(max_iter=1000).fit(x, y), sys.argv[1])",
            )
            .arg(folder.join("model.joblib"))
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    folder
}

/// What `mlserver_client.py CASE` printed after driving `model` at `addr` with MLServer's
/// own types and codecs.
fn client(case: &str, addr: &str, model: &str) -> Value {
    let out = std::process::Command::new(mlserver_python())
        .arg(root().join("tests/python/mlserver_client.py"))
        .args([case, addr, model])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

fn infer(server: &Server, model: &str, body: Value) -> common::Reply {
    post(
        &server.addr,
        &format!("/v2/models/{model}/infer"),
        &body.to_string(),
    )
}

fn ok(r: common::Reply) -> Value {
    assert_eq!(r.status, 200, "{:?}", String::from_utf8_lossy(&r.body));
    r.json()
}

/// The one BYTES element of output `name` of an answer, as text.
fn text_of(answer: &Value, name: &str) -> String {
    let out = answer["outputs"]
        .as_array()
        .unwrap()
        .iter()
        .find(|o| o["name"] == name)
        .unwrap_or_else(|| panic!("no output `{name}` in {answer}"));
    out["data"][0].as_str().unwrap().to_owned()
}

// -- the behaviours, each run under the stand-in and under MLServer's own package ----------

/// MLServer's fixture `SumModel`: NumpyCodec's request decoded (its `content_type: np`),
/// the answer's output with NumpyCodec's parameters, the request's id echoed.
fn numpy_codec_requests_are_summed(py: Py) {
    let (_dir, server) = serve(py, &[("sum", "CLASS: SumModel")]);
    let v = client("numpy", &server.addr, "sum");
    assert_eq!(v["status"], 200, "{v}");
    assert_eq!(v["decoded"], json!([[6.0], [15.0]]), "{v}");
    let body = &v["body"];
    assert_eq!(body["id"], "numpy-1", "{v}");
    assert_eq!(body["model_name"], "sum", "{v}");
    assert_eq!(
        body["outputs"][0],
        json!({"name": "total", "datatype": "FP32", "shape": [2, 1],
               "parameters": {"content_type": "np"}, "data": [6.0, 15.0]}),
        "{v}"
    );
}

/// `@custom_handler` methods are the model's operations (`POST /v2/models/{m}/{method}`).
fn custom_handlers_are_operations(py: Py) {
    let (_dir, server) = serve(py, &[("sum", "CLASS: SumModel")]);
    let r = post(&server.addr, "/v2/models/sum/my_payload", "[1, 2, 3]");
    assert_eq!(r.status, 200, "{:?}", r.body);
    assert_eq!(r.json(), json!(6));
}

/// MLServer's fixture `TextModel`: StringCodec both ways.
fn strings_travel_through_the_string_codec(py: Py) {
    let (_dir, server) = serve(py, &[("text", "CLASS: TextModel")]);
    let v = client("text", &server.addr, "text");
    assert_eq!(v["status"], 200, "{v}");
    assert_eq!(v["decoded"], json!(["hello world"]), "{v}");
    assert_eq!(
        v["body"]["outputs"][0],
        json!({"name": "output", "datatype": "BYTES", "shape": [1, 1],
               "parameters": {"content_type": "str"}, "data": ["hello world"]}),
        "{v}"
    );
}

/// An `MLServerError` answers its `status_code` with `{"error": str(exc)}` exactly, as
/// MLServer's REST server; any other exception is a 500.
fn mlserver_errors_answer_their_status_and_message(py: Py) {
    let (_dir, server) = serve(
        py,
        &[
            ("err", "CLASS: ErrorModel"),
            ("invalid", "CLASS: InvalidInputModel"),
            ("teapot", "CLASS: TeapotModel"),
            ("sum", "CLASS: SumModel"),
        ],
    );
    let x = json!({"inputs": [{"name": "x", "shape": [1, 1], "datatype": "FP32", "data": [1]}]});
    let r = infer(&server, "err", x.clone());
    assert_eq!(r.status, 400);
    assert_eq!(r.json(), json!({"error": "something really bad happened"}));
    let r = infer(&server, "invalid", x.clone());
    assert_eq!(r.status, 400);
    assert_eq!(
        r.json(),
        json!({"error": "input 'x' is not one this model reads"})
    );
    let r = infer(&server, "teapot", x.clone());
    assert_eq!(r.status, 422);
    assert_eq!(r.json(), json!({"error": "no coffee here"}));
    // Without `content_type: np`, MLServer's `decode` hands SumModel the data as it came,
    // which has no `sum`: a 500, as in MLServer.
    let r = infer(&server, "sum", x);
    assert_eq!(r.status, 500);
    assert!(r.error().contains("AttributeError"), "{}", r.error());
}

/// MLServer's fixture `ErrorModel` with `parameters.load_error` (its settings allow any
/// key): the load fails, and `validate` says why.
fn a_failing_load_names_the_mlserver_error(py: Py) {
    let dir = tempfile::tempdir().unwrap();
    folder(
        dir.path(),
        "broken",
        json!({"implementation": "models.ErrorModel", "parameters": {"load_error": true}}),
        py,
        false,
    );
    let path = graph(dir.path(), py, &[("broken", "model_settings: ./broken")]);
    let out = bin().args(["validate", &path]).output().unwrap();
    let text = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        text.contains("could not load: MLServerError: something really bad happened"),
        "{text}"
    );
}

/// MLServer's fixture `SimpleModel`: `@decode_args` hands each input by name, decoded by its
/// type hint, and encodes what it returns (`output-0`).
fn decode_args_maps_inputs_by_name(py: Py) {
    let (_dir, server) = serve(py, &[("simple", "CLASS: SimpleModel")]);
    let v = client("simple", &server.addr, "simple");
    assert_eq!(v["status"], 200, "{v}");
    assert_eq!(v["decoded"], json!([[3], [7]]), "{v}");
    assert_eq!(v["body"]["outputs"][0]["name"], "output-0", "{v}");
    // NumPy sums INT32 rows as INT64, as under MLServer.
    assert_eq!(v["body"]["outputs"][0]["datatype"], "INT64", "{v}");
}

/// MLServer's fixture `EchoModel`: each input answered as it came, its parameters with it.
fn inputs_come_back_with_their_parameters(py: Py) {
    let (_dir, server) = serve(py, &[("echo", "CLASS: EchoModel")]);
    let body = json!({"inputs": [
        {"name": "x", "shape": [1, 2], "datatype": "FP64",
         "parameters": {"content_type": "np", "custom": "k"}, "data": [1.5, 2]},
        {"name": "s", "shape": [2], "datatype": "BYTES", "data": ["a", "é"]}
    ]});
    let v = ok(infer(&server, "echo", body));
    assert_eq!(
        v["outputs"],
        json!([
            {"name": "x", "datatype": "FP64", "shape": [1, 2],
             "parameters": {"content_type": "np", "custom": "k"}, "data": [1.5, 2.0]},
            {"name": "s", "datatype": "BYTES", "shape": [2], "data": ["a", "é"]}
        ]),
        "{v}"
    );
}

/// The `InferenceRequest` a class gets is what MLServer's REST server would have parsed:
/// the id, the request's parameters with its headers, each input's parameters, flat data
/// (text for BYTES, base64 as sent), the outputs asked for; its settings have the step's name, `model_uri` as
/// `parameters.uri` and `class_args` as `parameters.extra`; NumpyCodec's array is a
/// writable copy. The stand-in answers where `mlserver` is not installed, MLServer's own
/// classes where it is.
fn the_class_sees_the_request_as_mlserver_parses_it(py: Py) {
    let uri = models_py().display().to_string();
    let (_dir, server) = serve(
        py,
        &[(
            "seen",
            &format!("CLASS: RequestEcho, class_args: {{k: 1}}, model_uri: {uri}"),
        )],
    );
    let body = json!({
        "id": "req-7",
        "parameters": {"custom": 1},
        "inputs": [
            {"name": "x", "shape": [1, 2], "datatype": "FP32",
             "parameters": {"content_type": "np"}, "data": [[1, 2]]},
            {"name": "b", "shape": [1], "datatype": "BYTES",
             "parameters": {"content_type": "base64"}, "data": ["aGk="]},
            {"name": "s", "shape": [1], "datatype": "BYTES",
             "parameters": {"content_type": "str"}, "data": ["é"]}
        ],
        "outputs": [{"name": "seen"}]
    });
    let v = ok(infer(&server, "seen", body));
    assert_eq!(v["id"], "req-7");
    let seen: Value = serde_json::from_str(&text_of(&v, "seen")).unwrap();
    let base = match py {
        Py::StandIn => "servegraph.compat.mlserver",
        Py::Real => "mlserver.model",
    };
    assert_eq!(seen["base"], base, "{seen}");
    // The request's headers among its parameters, as MLServer puts them there.
    let mut request = seen["request"].clone();
    let headers = request["parameters"]
        .as_object_mut()
        .unwrap()
        .remove("headers")
        .unwrap_or_else(|| panic!("no headers in {seen}"));
    assert_eq!(headers["content-type"], "application/json", "{seen}");
    assert_eq!(
        request,
        json!({
            "id": "req-7",
            "parameters": {"custom": 1},
            "inputs": [
                {"name": "x", "shape": [1, 2], "datatype": "FP32",
                 "parameters": {"content_type": "np"}, "data": [1.0, 2.0]},
                {"name": "b", "shape": [1], "datatype": "BYTES",
                 "parameters": {"content_type": "base64"}, "data": ["aGk="]},
                {"name": "s", "shape": [1], "datatype": "BYTES",
                 "parameters": {"content_type": "str"}, "data": ["é"]}
            ],
            "outputs": [{"name": "seen"}]
        }),
        "{seen}"
    );
    assert_eq!(seen["name"], "seen");
    assert_eq!(seen["version"], Value::Null);
    assert_eq!(seen["uri"], uri.as_str());
    assert_eq!(seen["extra"], json!({"k": 1}));
    assert_eq!(
        seen["decoded"],
        json!({"x": {"array": [[1.0, 2.0]], "dtype": "float32", "writeable": true},
               "b": ["b'hi'"], "s": ["é"]}),
        "{seen}"
    );
    // Without an id, the class sees the one the answer carries.
    let v = ok(infer(
        &server,
        "seen",
        json!({"inputs": [{"name": "x", "shape": [1], "datatype": "INT64", "data": [3]}]}),
    ));
    let seen: Value = serde_json::from_str(&text_of(&v, "seen")).unwrap();
    assert_eq!(seen["id"], v["id"], "{seen}");
    assert!(
        seen["id"].as_str().is_some_and(|id| !id.is_empty()),
        "{seen}"
    );
    assert_eq!(
        seen["request"]["parameters"]
            .as_object()
            .map(|p| p.keys().collect::<Vec<_>>()),
        Some(vec![&"headers".to_string()]),
        "{seen}"
    );
    assert_eq!(seen["outputs"], Value::Null, "{seen}");
}

/// A `load()` that does not return True leaves the model not ready, as MLServer's registry
/// (`model.ready = await model.load()`): readiness says no from the start, with MLServer's
/// words, and inference is refused (503, servegraph's answer for a model not ready).
fn a_load_that_returns_false_is_not_ready(py: Py) {
    let dir = tempfile::tempdir().unwrap();
    let path = graph(dir.path(), py, &[("idle", "CLASS: NotReadyModel")]);
    let server = Server::listening(&path, "127.0.0.1:0", &[]);
    let x = json!({"inputs": [{"name": "x", "shape": [1], "datatype": "FP32", "data": [1]}]});
    let deadline = Instant::now() + Duration::from_secs(60);
    let r = loop {
        let r = infer(&server, "idle", x.clone());
        if !r.error().contains("loading") || Instant::now() > deadline {
            break r;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    assert_eq!(r.status, 503, "{:?}", r.body);
    assert!(
        r.error().contains(
            "its class says it is not ready: ModelNotReady: Model idle is not ready yet."
        ),
        "{}",
        r.error()
    );
    assert_eq!(
        get_blocking(&server.addr, "/v2/models/idle/ready").status,
        503
    );
}

/// MLServer's scikit-learn runtime (`SKLearnModel`, as MLServer has it) served from a model
/// folder (`model_settings:`): `parameters.uri` relative to the folder, `predict` by default,
/// the outputs a request names (`predict_proba`), `parameters.extra.predict_fn`, and its
/// `InferenceError` for an output it does not know. With MLServer installed, its own
/// `mlserver_sklearn.SKLearnModel` answers the same.
fn the_sklearn_runtime_serves_a_model_folder(py: Py) {
    let dir = tempfile::tempdir().unwrap();
    let settings = json!({"name": "iris", "implementation": "models.SKLearnModel",
                          "parameters": {"uri": "./model.joblib", "version": "v0.1.0"}});
    folder(dir.path(), "iris", settings, py, true);
    let proba = json!({"implementation": "models.SKLearnModel",
                       "parameters": {"uri": "./model.joblib",
                                      "extra": {"predict_fn": "predict_proba"}}});
    folder(dir.path(), "proba", proba, py, true);
    let mut routes = vec![
        ("iris", "model_settings: ./iris"),
        ("proba", "model_settings: ./proba/model-settings.json"),
    ];
    if py == Py::Real {
        let real = json!({"implementation": "mlserver_sklearn.SKLearnModel"});
        folder(dir.path(), "real", real, py, true);
        routes.push(("real", "model_settings: ./real"));
    }
    let path = graph(dir.path(), py, &routes);
    let server = Server::start(&path, &[]);
    let v = client("iris", &server.addr, "iris");
    assert_eq!(v["status"], 200, "{v}");
    assert_eq!(v["decoded"], json!({"predict": [[0], [2]]}), "{v}");
    assert_eq!(
        v["body"]["outputs"][0]["parameters"],
        json!({"content_type": "np"})
    );
    let both = client("iris-both", &server.addr, "iris");
    assert_eq!(both["decoded"]["predict"], json!([[0], [2]]), "{both}");
    let p = both["decoded"]["predict_proba"].as_array().unwrap();
    assert_eq!(p.len(), 2);
    for row in p {
        let sum: f64 = row
            .as_array()
            .unwrap()
            .iter()
            .map(|x| x.as_f64().unwrap())
            .sum();
        assert!((sum - 1.0).abs() < 1e-9, "{row}");
    }
    assert!(
        p[0][0].as_f64().unwrap() > 0.9 && p[1][2].as_f64().unwrap() > 0.9,
        "{both}"
    );
    // `parameters.extra.predict_fn`: what it answers without a named output.
    let v = client("iris", &server.addr, "proba");
    assert_eq!(
        v["decoded"]["predict_proba"], both["decoded"]["predict_proba"],
        "{v}"
    );
    let r = infer(
        &server,
        "iris",
        json!({"inputs": [{"name": "x", "shape": [1, 4], "datatype": "FP64", "data": [1, 2, 3, 4]}],
               "outputs": [{"name": "nope"}]}),
    );
    assert_eq!(r.status, 400);
    assert_eq!(
        r.error(),
        "SKLearnModel only supports 'predict', 'predict_proba' and 'transform' as outputs (nope was received)"
    );
    if py == Py::Real {
        let v = client("iris-both", &server.addr, "real");
        assert_eq!(v["decoded"], both["decoded"], "{v}");
    }
}

/// The shape of MLServer's docs' custom runtime: `load()` reads its file through
/// `get_model_uri` (relative to the folder), `@decode_args` with optional arguments.
fn the_docs_custom_runtime_reads_its_uri(py: Py) {
    let dir = tempfile::tempdir().unwrap();
    let settings = json!({"name": "divorce", "implementation": "models.LinearModel",
                          "parameters": {"uri": "./samples.json"}});
    let f = folder(dir.path(), "divorce", settings, py, false);
    std::fs::write(
        f.join("samples.json"),
        r#"{"a": [1.0, 2.0], "bM": [0.5, 0.5], "bA": [0.1]}"#,
    )
    .unwrap();
    let path = graph(dir.path(), py, &[("divorce", "model_settings: ./divorce")]);
    let server = Server::start(&path, &[]);
    let v = ok(infer(
        &server,
        "divorce",
        json!({"inputs": [{"name": "marriage", "shape": [2], "datatype": "FP64", "data": [1, 2]}]}),
    ));
    assert_eq!(v["outputs"][0]["name"], "output-0");
    assert_eq!(v["outputs"][0]["data"], json!([2.0, 2.5]), "{v}");
    assert_eq!(v["outputs"][0]["shape"], json!([2, 1]), "{v}");
}

/// MLServer's docs' JSON model, with its docs' own request (a text whose length is its
/// shape): the JSON answer in one BYTES element (of shape [1]: MLServer sends the class's
/// `[len(text)]`, which does not fit one element).
fn the_docs_json_model_answers_its_text(py: Py) {
    let (_dir, server) = serve(py, &[("hello", "CLASS: JsonHelloWorldModel")]);
    let text = r#"{"name": "Foo Bar", "message": "Hello from Client (REST)!"}"#;
    let v = ok(infer(
        &server,
        "hello",
        json!({"inputs": [{"name": "echo_request", "shape": [text.len()],
                           "datatype": "BYTES", "data": [text]}]}),
    ));
    let out = &v["outputs"][0];
    assert_eq!(out["shape"], json!([1]), "{v}");
    assert_eq!(out["parameters"], json!({"content_type": "str"}), "{v}");
    let answer: Value = serde_json::from_str(out["data"][0].as_str().unwrap()).unwrap();
    assert_eq!(
        answer,
        json!({"request": {"echo_request": {"name": "Foo Bar", "message": "Hello from Client (REST)!"}},
               "server_response": "Got your request. Hello from the server."})
    );
}

/// MLServer's docs' content-type example (`EchoRuntime`) with its docs' own requests: the
/// inputs' `content_type`s, or the settings' metadata's (`inputs` in model-settings.json,
/// with their loose shapes), choose the codec (`self.decode`); a codec registered by the
/// model's own module (`@register_input_codec`) is found by its content type; the echo's
/// `.dict(exclude=...)` of each input is JSON.
fn content_types_choose_the_codec(py: Py) {
    let dir = tempfile::tempdir().unwrap();
    let inputs = json!([
        {"name": "metadata-np", "datatype": "INT32", "shape": [2, 2], "parameters": {"content_type": "np"}},
        {"name": "metadata-str", "datatype": "BYTES", "shape": [11], "parameters": {"content_type": "str"}}
    ]);
    folder(
        dir.path(),
        "echo",
        json!({"name": "content-type-example", "implementation": "models.EchoRuntime", "inputs": inputs}),
        py,
        false,
    );
    folder(
        dir.path(),
        "decoded",
        json!({"implementation": "models.DecodedEcho", "inputs": inputs}),
        py,
        false,
    );
    let path = graph(
        dir.path(),
        py,
        &[
            ("echo", "model_settings: ./echo"),
            ("decoded", "model_settings: ./decoded"),
        ],
    );
    let server = Server::start(&path, &[]);
    let by_parameters = json!({"inputs": [
        {"name": "parameters-np", "datatype": "INT32", "shape": [2, 2], "data": [1, 2, 3, 4],
         "parameters": {"content_type": "np"}},
        {"name": "parameters-str", "datatype": "BYTES", "shape": [1], "data": "hello world 😁",
         "parameters": {"content_type": "str"}}
    ]});
    let by_metadata = json!({"inputs": [
        {"name": "metadata-np", "datatype": "INT32", "shape": [2, 2], "data": [1, 2, 3, 4]},
        {"name": "metadata-str", "datatype": "BYTES", "shape": [11], "data": "hello world 😁"}
    ]});
    for body in [&by_parameters, &by_metadata] {
        let v = ok(infer(&server, "echo", body.clone()));
        assert_eq!(v["outputs"][0]["data"], json!([1, 2, 3, 4]), "{v}");
        assert_eq!(v["outputs"][1]["data"], json!(["hello world 😁"]), "{v}");
        let v = ok(infer(&server, "decoded", body.clone()));
        let decoded: Value = serde_json::from_str(&text_of(&v, "decoded")).unwrap();
        let names: Vec<&str> = body["inputs"]
            .as_array()
            .unwrap()
            .iter()
            .map(|i| i["name"].as_str().unwrap())
            .collect();
        assert_eq!(decoded[names[0]], json!([[1, 2], [3, 4]]), "{decoded}");
        assert_eq!(decoded[names[1]], json!(["hello world 😁"]), "{decoded}");
    }
    // A codec of the model's own, by its content type.
    let v = ok(infer(
        &server,
        "decoded",
        json!({"inputs": [{"name": "t", "datatype": "BYTES", "shape": [1], "data": ["shout"],
                           "parameters": {"content_type": "upper"}}]}),
    ));
    let decoded: Value = serde_json::from_str(&text_of(&v, "decoded")).unwrap();
    assert_eq!(decoded["t"], json!(["SHOUT"]), "{decoded}");
}

/// A pandas model: PandasCodec's request (`content_type: pd`) as a DataFrame, the frame
/// answered with PandasCodec (the response's `content_type: pd`).
fn a_dataframe_goes_both_ways(py: Py) {
    let (_dir, server) = serve(py, &[("frame", "CLASS: ColumnsModel")]);
    let v = client("frame", &server.addr, "frame");
    assert_eq!(v["status"], 200, "{v}");
    assert_eq!(
        v["decoded"],
        json!({"a": [1, 4], "b": [2.5, 3.5], "total": [3.5, 7.5]}),
        "{v}"
    );
    assert_eq!(v["body"]["parameters"]["content_type"], "pd", "{v}");
}

/// MLServer's fixture `TextStreamModel` (`predict_stream`): `/generate_stream` streams its
/// responses' outputs as they come, flat or (an OIP request, as MLServer's clients send it,
/// there or to `/infer_stream`) as OIP responses; `/infer` calls `predict`, which it does not
/// have (MLServer's 500).
fn predict_stream_answers_in_pieces(py: Py) {
    let (_dir, server) = serve(py, &[("words", "CLASS: TextStreamModel")]);
    let r = post(
        &server.addr,
        "/v2/models/words/generate_stream",
        &json!({"text_input": "the quick fox"}).to_string(),
    );
    assert_eq!(r.status, 200, "{:?}", r.body);
    let events: Vec<Value> = String::from_utf8_lossy(&r.body)
        .lines()
        .filter_map(|l| l.strip_prefix("data: "))
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let pieces: Vec<&str> = events.iter().filter_map(|e| e["output"].as_str()).collect();
    assert_eq!(pieces, ["the", " quick", " fox"], "{events:?}");
    // MLServer's own client posts its `InferenceRequest` (the docs' `generate-request.json`,
    // as `.dict()` writes it, nulls included) and reads each event as an `InferenceResponse`.
    let request = json!({"id": null, "parameters": null, "inputs": [{"name": "prompt",
        "shape": [1], "datatype": "BYTES", "parameters": {"content_type": "str", "headers": null},
        "data": ["What is the capital?"]}], "outputs": [{"name": "output", "parameters": null}]});
    for path in ["generate_stream", "infer_stream"] {
        let r = post(
            &server.addr,
            &format!("/v2/models/words/{path}"),
            &request.to_string(),
        );
        assert_eq!(r.status, 200, "{:?}", r.body);
        let events: Vec<Value> = String::from_utf8_lossy(&r.body)
            .lines()
            .filter_map(|l| l.strip_prefix("data: "))
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        let words: Vec<&Value> = events.iter().map(|e| &e["outputs"][0]["data"][0]).collect();
        assert_eq!(words, ["What", " is", " the", " capital?"], "{events:?}");
        assert_eq!(events[0]["model_name"], "words", "{events:?}");
    }
    let r = infer(
        &server,
        "words",
        json!({"inputs": [{"name": "t", "shape": [1], "datatype": "BYTES", "data": ["x"]}]}),
    );
    assert_eq!(r.status, 500);
    assert!(r.error().contains("predict() method not implemented"));
}

/// `batch:` (or the settings' `max_batch_size` and `max_batch_time`) joins concurrent
/// requests' rows into one `InferenceRequest` (with no id, as MLServer's adaptive batching
/// makes it), each answered its own rows; a class whose outputs do not have a row per input
/// row cannot be batched, and says so.
fn batching_joins_rows_into_one_request(py: Py) {
    let dir = tempfile::tempdir().unwrap();
    folder(
        dir.path(),
        "settings",
        json!({"implementation": "models.BatchProbe", "max_batch_size": 8, "max_batch_time": 0.02}),
        py,
        false,
    );
    let path = graph(
        dir.path(),
        py,
        &[
            (
                "yaml",
                "CLASS: BatchProbe, batch: {max_size: 8, max_wait_us: 20000}",
            ),
            ("settings", "model_settings: ./settings"),
            (
                "one",
                "CLASS: OneRowModel, batch: {max_size: 8, max_wait_us: 20000}",
            ),
        ],
    );
    let server = Server::start(&path, &[]);
    for model in ["yaml", "settings"] {
        let answers: Vec<Value> = std::thread::scope(|s| {
            let handles: Vec<_> = (0..6)
                .map(|i| {
                    let server = &server;
                    s.spawn(move || {
                        ok(infer(
                            server,
                            model,
                            json!({"id": format!("r{i}"), "inputs": [{"name": "x", "shape": [1, 2], "datatype": "FP32",
                                               "data": [i, i]}]}),
                        ))
                    })
                })
                .collect();
            handles.into_iter().map(|h| h.join().unwrap()).collect()
        });
        let mut joined = false;
        for (i, a) in answers.iter().enumerate() {
            let out = |name: &str| {
                a["outputs"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .find(|o| o["name"] == name)
                    .unwrap()
                    .clone()
            };
            assert_eq!(a["id"], format!("r{i}"));
            assert_eq!(out("x")["data"], json!([i as f64, i as f64]), "{a}");
            let rows = out("rows")["data"][0].as_i64().unwrap();
            assert_eq!(out("with_id")["data"][0], json!(rows == 1), "{a}");
            joined |= rows > 1;
        }
        assert!(
            joined,
            "{model}: no two requests shared a call: {answers:?}"
        );
    }
    let answers: Vec<common::Reply> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..4)
            .map(|_| {
                let server = &server;
                s.spawn(move || {
                    infer(
                        server,
                        "one",
                        json!({"inputs": [{"name": "x", "shape": [1, 1], "datatype": "FP32", "data": [1]}]}),
                    )
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    assert!(
        answers
            .iter()
            .any(|r| r.status == 500 && r.error().contains("this model cannot be batched")),
        "{:?}",
        answers
            .iter()
            .map(|r| String::from_utf8_lossy(&r.body).into_owned())
            .collect::<Vec<_>>()
    );
}

macro_rules! both {
    ($($name:ident),* $(,)?) => {
        /// Under servegraph's stand-in (the test venv has no `mlserver`).
        mod stand_in {
            $( #[test] fn $name() { super::$name(super::Py::StandIn) } )*
        }
        /// Under MLServer 1.7.1's own package.
        mod real_mlserver {
            $( #[test] fn $name() { super::$name(super::Py::Real) } )*
        }
    };
}

both!(
    numpy_codec_requests_are_summed,
    custom_handlers_are_operations,
    strings_travel_through_the_string_codec,
    mlserver_errors_answer_their_status_and_message,
    a_failing_load_names_the_mlserver_error,
    decode_args_maps_inputs_by_name,
    inputs_come_back_with_their_parameters,
    the_class_sees_the_request_as_mlserver_parses_it,
    a_load_that_returns_false_is_not_ready,
    the_sklearn_runtime_serves_a_model_folder,
    the_docs_custom_runtime_reads_its_uri,
    the_docs_json_model_answers_its_text,
    a_dataframe_goes_both_ways,
    content_types_choose_the_codec,
    predict_stream_answers_in_pieces,
    batching_joins_rows_into_one_request,
);

// -- the stand-in alone, and the settings file ---------------------------------------------

/// The test venv has no `mlserver`: what the stand-in serves there is servegraph's own.
#[test]
fn the_test_venv_has_no_mlserver() {
    let out = std::process::Command::new(test_python())
        .args([
            "-c",
            "import importlib.util as u; print(u.find_spec('mlserver') is None)",
        ])
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "True");
}

/// The stand-in's types are plain classes: pydantic is not needed (nor imported) for them,
/// and they dump and validate as MLServer's do.
#[test]
fn the_stand_in_needs_no_pydantic() {
    let script = r#"
import sys
from servegraph.compat.mlserver import InferenceRequest, Parameters, NumpyCodec
import numpy as np
r = InferenceRequest.model_validate({"id": "a", "inputs": [{"name": "x", "shape": (1, 2),
    "datatype": "FP32", "parameters": {"content_type": "np", "k": 1}, "data": [1, 2]}]})
assert r.model_dump() == {"id": "a", "inputs": [{"name": "x", "shape": [1, 2], "datatype": "FP32",
    "parameters": {"content_type": "np", "k": 1}, "data": [1, 2]}]}, r.model_dump()
assert r.inputs[0].dict()["parameters"] == {"content_type": "np", "headers": None, "k": 1}
assert NumpyCodec.decode_input(r.inputs[0]).tolist() == [[1.0, 2.0]]
assert Parameters(k=1).k == 1
assert "pydantic" not in sys.modules, "pydantic was imported"
print("ok")
"#;
    let out = std::process::Command::new(test_python())
        .args(["-c", script])
        .env("PYTHONPATH", root().join("python"))
        .output()
        .unwrap();
    assert!(
        out.status.success() && String::from_utf8_lossy(&out.stdout).trim() == "ok",
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// What the stand-in does not provide is refused by name at load (`validate` says it).
#[test]
fn the_stand_in_refuses_what_it_does_not_provide() {
    let dir = tempfile::tempdir().unwrap();
    let refused = root().join("tests/python/mlserver/refused.py");
    let path = graph(
        dir.path(),
        Py::StandIn,
        &[(
            "uses",
            &format!("path: {}, class_name: Uses", refused.display()),
        )],
    );
    let out = bin().args(["validate", &path]).output().unwrap();
    let text = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        text.contains(
            "`mlserver.settings.Settings` is not part of servegraph's stand-in for mlserver"
        ),
        "{text}"
    );
    assert!(
        text.contains("`mlserver.settings` (ModelSettings, ModelParameters)"),
        "{text}"
    );
}

/// `api: mlserver` on a class that is not an `MLModel` is a load error naming it.
#[test]
fn api_mlserver_needs_an_mlmodel() {
    let dir = tempfile::tempdir().unwrap();
    let other = root().join("tests/python/models/models.py");
    let path = graph(
        dir.path(),
        Py::StandIn,
        &[(
            "echo",
            &format!("path: {}, class_name: Echo, api: mlserver", other.display()),
        )],
    );
    let out = bin().args(["validate", &path]).output().unwrap();
    let text = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        text.contains("`Echo` is not a subclass of MLServer's `MLModel`"),
        "{text}"
    );
}

/// `validate` reads a model folder's `model-settings.json` and names the file and each field
/// that is wrong, and the step's fields that the file replaces.
#[test]
fn model_settings_are_checked_field_by_field() {
    let dir = tempfile::tempdir().unwrap();
    folder(
        dir.path(),
        "bad",
        json!({"implementation": "NoModule", "parameters": {"uri": 3},
               "inputs": [{"name": "x", "datatype": "FLOAT", "shape": [1]}]}),
        Py::StandIn,
        false,
    );
    folder(
        dir.path(),
        "good",
        json!({"implementation": "models.SumModel"}),
        Py::StandIn,
        false,
    );
    std::fs::create_dir(dir.path().join("empty")).unwrap();
    std::fs::write(dir.path().join("notjson.json"), "{\"implementation\": ").unwrap();
    let path = graph(
        dir.path(),
        Py::StandIn,
        &[
            ("bad", "model_settings: ./bad"),
            ("empty", "model_settings: ./empty"),
            ("notjson", "model_settings: ./notjson.json"),
            (
                "both",
                "model_settings: ./good, class_name: SumModel, class_args: {a: 1}",
            ),
        ],
    );
    let out = bin().args(["validate", &path]).output().unwrap();
    let text = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    let file = dir.path().join("bad/model-settings.json");
    for want in [
        format!("step `bad`: {}: `implementation` must be the class as `module.Class`", file.display()),
        format!("step `bad`: {}: `parameters.uri` must be a string, not 3", file.display()),
        format!("step `bad`: {}: `inputs[0]`.datatype: `FLOAT` is not one of", file.display()),
        format!("step `empty`: `model_settings`: {} does not exist", dir.path().join("empty/model-settings.json").display()),
        "step `notjson`: ".to_string() + &dir.path().join("notjson.json").display().to_string() + ": not JSON: EOF while parsing",
        "step `both`: `class_name` does not go with `model_settings`: the class is the file's `implementation`".to_string(),
        "step `both`: `class_args` does not go with `model_settings`: the class's arguments are the file's `parameters.extra`".to_string(),
    ] {
        assert!(text.contains(&want), "{want}\nnot in:\n{text}");
    }
    assert!(text.contains("7 errors"), "{text}");
}
