//! KServe's `Model` API (issue 25): subclasses of `kserve.Model` in the exact shapes of
//! KServe's own examples (`tests/python/kserve/models.py`) served unchanged by `class:
//! python`, each behaviour twice: with the real `kserve` 0.21 (the test venv) and with
//! servegraph's stand-in (the Seldon venv, which has no `kserve`). Driven with plain HTTP and
//! with the `kserve` SDK's own `InferenceRESTClient` (`tests/python/kserve_model_check.py`).

mod common;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::*;
use serde_json::{Value, json};

/// The interpreter with the real `kserve` (0.21.0).
fn real() -> PathBuf {
    test_python()
}

/// An interpreter without `kserve`: classes get servegraph's stand-in.
fn stand_in() -> PathBuf {
    let py = seldon_python();
    let has = std::process::Command::new(&py)
        .args(["-c", "import kserve"])
        .output()
        .unwrap();
    assert!(!has.status.success(), "{} has kserve", py.display());
    py
}

/// A graph serving classes of `tests/python/kserve/{file}` with `python`: a router of
/// `routes` (name, YAML flow-mapping fields), written into `dir`.
fn graph(dir: &Path, python: &Path, file: &str, routes: &[(&str, &str)]) -> String {
    graph_of(
        dir,
        python,
        &root().join("tests/python/kserve").join(file),
        routes,
    )
}

/// A graph serving classes of the file `models` with `python` (as [`graph`]).
fn graph_of(dir: &Path, python: &Path, models: &Path, routes: &[(&str, &str)]) -> String {
    let mut yaml = String::from("name: ks\ngraph:\n  kind: router\n  routes:\n");
    for (name, fields) in routes {
        yaml.push_str(&format!(
            "    {name}: {{kind: model, class: python, path: {}, python: {}, {fields}}}\n",
            models.display(),
            python.display()
        ));
    }
    let path = dir.join("ks.yaml");
    std::fs::write(&path, yaml).unwrap();
    path.display().to_string()
}

/// Serves the routes of `models.py` with `python`, ready.
fn serve(python: &Path, routes: &[(&str, &str)]) -> (Server, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let g = graph(dir.path(), python, "models.py", routes);
    (Server::start(&g, &[]), dir)
}

/// `servegraph validate` of a router of the class `class` of `source` (written into a temp
/// folder), served by the stand-in with `fields`: its stderr, which must say it failed.
fn validate_fails(source: &str, class: &str, fields: &str) -> String {
    let dir = tempfile::tempdir().unwrap();
    let model = dir.path().join("model.py");
    std::fs::write(&model, source).unwrap();
    let route = format!("class_name: {class}{fields}");
    let g = graph_of(dir.path(), &stand_in(), &model, &[("m", &route)]);
    let out = bin().args(["validate", &g]).output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(!out.status.success(), "validate passed: {stderr}");
    stderr
}

fn ok(r: Reply) -> Value {
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    r.json()
}

/// An OIP request of one input.
fn v2(name: &str, datatype: &str, shape: &[usize], data: Value) -> String {
    json!({"inputs": [{"name": name, "datatype": datatype, "shape": shape, "data": data}]})
        .to_string()
}

/// Each behaviour with the real `kserve` and with the stand-in.
macro_rules! both {
    ($(#[$doc:meta])* fn $name:ident($py:ident: &Path) $body:block) => {
        $(#[$doc])*
        mod $name {
            use super::*;

            fn case($py: &Path) $body

            #[test]
            fn real_kserve() {
                case(&real())
            }

            #[test]
            fn stand_in() {
                case(&super::stand_in())
            }
        }
    };
}

both! {
    /// KServe's custom model (AlexNet's shape): a sync class with `return_response_headers`,
    /// a preprocess that tells v1 from v2 (and REST's base64 from gRPC's raw bytes), an
    /// InferResponse (or `{"predictions"}` for v1), driven by KServe's own v1, v2 and gRPC
    /// clients.
    fn a_sync_custom_model_answers_kserves_clients(py: &Path) {
        let dir = tempfile::tempdir().unwrap();
        let g = graph(dir.path(), py, "models.py", &[("topk", "class_name: TopK")]);
        let s = Server::start(&g, &["--grpc-listen", "127.0.0.1:0"]);
        python_case("kserve_model_check.py", "topk", &[s.addr.as_ref()]);
        let grpc = s.grpc.as_ref().expect("a gRPC listener");
        python_case("kserve_model_check.py", "topk-grpc", &[grpc.as_ref()]);
    }
}

both! {
    /// KServe's own DummyModel (async predict and explain): v1 bodies echoed, v2 through
    /// get_predict_input / get_predict_response with the request's parameters, binary data
    /// both ways.
    fn an_async_model_answers_kserves_clients(py: &Path) {
        let (s, _dir) = serve(py, &[("dummy", "class_name: DummyModel")]);
        python_case("kserve_model_check.py", "dummy", &[s.addr.as_ref()]);
    }
}

both! {
    /// An async preprocess, a sync predict and an async postprocess run in KServe's order,
    /// with the class's own constructor argument from `class_args`.
    fn preprocess_predict_postprocess_run_in_order(py: &Path) {
        let (s, _dir) = serve(py, &[("pp", "class_name: PrePost, class_args: {offset: 0.5}")]);
        let v = ok(post(&s.addr, "/v1/models/pp:predict", r#"{"instances": [[1, 2], [3, 4]]}"#));
        assert_eq!(v, json!({"predictions": [4.0, 8.0], "postprocessed": true}));
    }
}

both! {
    /// An InferResponse of two outputs (FP32 and BYTES) with response parameters: the OIP's
    /// outputs (JSON or binary, as asked), and on v1 its REST dict, as KServe's dataplane
    /// answers it.
    fn an_infer_response_becomes_the_outputs(py: &Path) {
        let (s, _dir) = serve(py, &[("outputs", "class_name: Outputs")]);
        python_case("kserve_model_check.py", "outputs", &[s.addr.as_ref()]);
        let v = ok(post(&s.addr, "/v2/models/outputs/infer", &v2("x", "FP32", &[2], json!([1, 3]))));
        assert_eq!(v["parameters"]["answered_by"], "outputs", "{v}");
        let labels = v["outputs"].as_array().unwrap().iter().find(|o| o["name"] == "labels").unwrap();
        assert_eq!(labels["datatype"], "BYTES", "{v}");
        assert_eq!(labels["data"], json!(["small", "big"]), "{v}");
    }
}

both! {
    /// KServe's SKLearnModel shape: `model_dir` is the step's `model_uri` (a folder), which
    /// `load` reads with `kserve_storage.Storage.download`; v1 instances and v2 agree.
    fn a_model_dir_class_loads_its_folder(py: &Path) {
        // The model folder beside the graph (files come from the graph's folder).
        let dir = tempfile::tempdir().unwrap();
        let folder = dir.path().join("model");
        std::fs::create_dir(&folder).unwrap();
        let rows = expected()["rows"].clone();
        let want: Value = if py == real().as_path() {
            std::fs::copy(root().join("models/iris_lr.pkl"), folder.join("model.pkl")).unwrap();
            expected()["iris-lr"]["label"].clone()
        } else {
            let out = std::process::Command::new(real())
                .args(["-c", "import numpy, sys; numpy.save(sys.argv[1], numpy.array([1.0, 2.0, 3.0, 4.0]))"])
                .arg(folder.join("weights.npy"))
                .output()
                .unwrap();
            assert!(out.status.success(), "{out:?}");
            let sums: Vec<f64> = rows
                .as_array()
                .unwrap()
                .iter()
                .map(|r| {
                    r.as_array().unwrap().iter().enumerate().map(|(i, v)| v.as_f64().unwrap() * (i + 1) as f64).sum()
                })
                .collect();
            json!(sums)
        };
        let g = graph(dir.path(), py, "models.py", &[("file", "class_name: FileModel, model_uri: model")]);
        let s = Server::start(&g, &[]);
        let v = ok(post(&s.addr, "/v1/models/file:predict", &json!({"instances": rows}).to_string()));
        let got = v["predictions"].as_array().unwrap_or_else(|| panic!("{v}"));
        let want = want.as_array().unwrap();
        assert_eq!(got.len(), want.len(), "{v}");
        for (g, w) in got.iter().zip(want) {
            assert!((g.as_f64().unwrap() - w.as_f64().unwrap()).abs() < 1e-6, "{v} vs {want:?}");
        }
        python_case("kserve_model_check.py", "sklearn", &[s.addr.as_ref()]);
    }
}

both! {
    /// `explain()` answers `:explain` (v1) and the OIP's `/explain` with what it returns, as
    /// it is; `predict` on a v2 request answering a dict that is not an OIP response is
    /// answered as it is too.
    fn explain_answers_as_the_class_returns(py: &Path) {
        let (s, _dir) = serve(py, &[("ex", "class_name: Explainer")]);
        let body = r#"{"instances": [[1, 1, 1], [2, 0, 1]]}"#;
        let v = ok(post(&s.addr, "/v1/models/ex:explain", body));
        assert_eq!(v, json!({"meta": {"name": "Shares"}, "data": {"contributions": [[1.0, 2.0, 3.0], [2.0, 0.0, 3.0]]}}));
        let v = ok(post(&s.addr, "/v1/models/ex:predict", body));
        assert_eq!(v, json!({"predictions": [6.0, 5.0]}));
        let request = v2("x", "FP64", &[1, 3], json!([1, 2, 3]));
        let v = ok(post(&s.addr, "/v2/models/ex/explain", &request));
        assert_eq!(v["data"]["contributions"], json!([[1.0, 4.0, 9.0]]), "{v}");
        let v = ok(post(&s.addr, "/v2/models/ex/infer", &request));
        assert_eq!(v, json!({"predictions": [14.0]}));
    }
}

both! {
    /// KServe's exceptions answer with the status KServe's server gives them, in KServe's
    /// `{"error": ...}` shape, on v1 and v2.
    fn kserves_exceptions_answer_with_kserves_statuses(py: &Path) {
        let (s, _dir) = serve(py, &[("raises", "class_name: Raises")]);
        let cases = [
            ("invalid", 400, "InvalidInput: the instance is not an image"),
            ("not-found", 404, "Model with name elsewhere does not exist."),
            ("not-ready", 503, "Model with name raises is not ready. warming up"),
            ("inference", 500, "InferenceError: the model diverged"),
            ("not-implemented", 501, "NotImplementedError: no such verb"),
            ("http", 404, "404: Intentional 404 code"),
            ("value", 500, "ValueError: a plain failure"),
        ];
        for (what, status, message) in cases {
            let r = post(&s.addr, "/v1/models/raises:predict", &json!({"instances": [what]}).to_string());
            assert_eq!(r.status, status, "{what}: {}", String::from_utf8_lossy(&r.body));
            let v = r.json();
            assert_eq!(v.as_object().unwrap().len(), 1, "only `error`: {v}");
            assert!(r.error().contains(message), "{what}: {}", r.error());
            let r = post(&s.addr, "/v2/models/raises/infer", &v2("w", "BYTES", &[1], json!([what])));
            assert_eq!(r.status, status, "v2 {what}: {}", String::from_utf8_lossy(&r.body));
        }
        let v = ok(post(&s.addr, "/v1/models/raises:predict", r#"{"instances": ["fine"]}"#));
        assert_eq!(v, json!({"predictions": ["fine"]}));
    }
}

/// Polls `path` until `done` says yes of its answer (or fails after 30 s with what it saw).
fn until(addr: &str, path: &str, done: impl Fn(&Reply) -> bool) -> Reply {
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut seen = Vec::new();
    loop {
        if let Ok(r) = block_on(get(addr, path)) {
            if done(&r) {
                return r;
            }
            seen.push((r.status, String::from_utf8_lossy(&r.body).into_owned()));
        }
        assert!(Instant::now() < deadline, "{path}: {seen:?}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

both! {
    /// A class whose `ready` stays False after `load()` is loaded but not ready: KServe's
    /// readiness (`GET /v1/models/m`) and predict are 503 naming why, the OIP's readiness is
    /// not 200.
    fn a_model_not_ready_after_load_is_not_ready(py: &Path) {
        let dir = tempfile::tempdir().unwrap();
        let g = graph(dir.path(), py, "models.py", &[("nl", "class_name: NotLoaded")]);
        let s = Server::listening(&g, "127.0.0.1:0", &[]);
        let r = until(&s.addr, "/v1/models/nl", |r| r.status == 503 && r.error().contains("`ready` is False"));
        assert!(r.error().starts_with("Model with name nl is not ready."), "{}", r.error());
        let r = post(&s.addr, "/v1/models/nl:predict", r#"{"instances": [1]}"#);
        assert_eq!(r.status, 503, "{}", String::from_utf8_lossy(&r.body));
        assert!(r.error().contains("`ready` is False"), "{}", r.error());
        assert_ne!(get_blocking(&s.addr, "/v2/models/nl/ready").status, 200);
    }
}

both! {
    /// Readiness follows the class's own `async def healthy()`, asked every
    /// `health_interval_ms`.
    fn readiness_follows_healthy(py: &Path) {
        let dir = tempfile::tempdir().unwrap();
        let flag = dir.path().join("flag");
        let fields = format!(
            "class_name: Flagged, class_args: {{flag: {}}}, health_interval_ms: 100",
            flag.display()
        );
        let g = graph(dir.path(), py, "models.py", &[("fl", &fields)]);
        let s = Server::listening(&g, "127.0.0.1:0", &[]);
        let r = until(&s.addr, "/v1/models/fl", |r| r.status == 503 && r.error().contains("`ready` is False"));
        assert!(r.error().contains("healthy()"), "{}", r.error());
        std::fs::write(&flag, "").unwrap();
        let r = until(&s.addr, "/v1/models/fl", |r| r.status == 200);
        assert_eq!(r.json(), json!({"name": "fl", "ready": true}));
        let v = ok(post(&s.addr, "/v1/models/fl:predict", r#"{"instances": [1]}"#));
        assert_eq!(v, json!({"predictions": ["served"]}));
        std::fs::remove_file(&flag).unwrap();
        until(&s.addr, "/v1/models/fl", |r| r.status == 503);
    }
}

both! {
    /// The class gets the request's headers (every one, lower-case names, as KServe's dict
    /// has them), a v1 body as it came whatever its shape, and a v2 request's id.
    fn the_class_gets_the_requests_headers_and_body(py: &Path) {
        let (s, _dir) = serve(py, &[("h", "class_name: Headers")]);
        let r = post_with(
            &s.addr,
            "/v1/models/h:predict",
            r#"{"text": "any shape", "n": [1, 2]}"#,
            &[("X-Request-Id", "req-7"), ("X-Tenant", "acme"), ("Content-Type", "application/json")],
        );
        let v = ok(r);
        assert_eq!(v["body"], json!({"text": "any shape", "n": [1, 2]}), "{v}");
        assert_eq!(v["headers"]["x-request-id"], "req-7", "{v}");
        assert_eq!(v["headers"]["x-tenant"], "acme", "{v}");
        assert_eq!(v["headers"]["content-type"], "application/json", "{v}");
        let body = json!({"id": "r-9", "inputs": [{"name": "x", "datatype": "FP32", "shape": [1], "data": [1]}]});
        let v = ok(post_with(&s.addr, "/v2/models/h/infer", &body.to_string(), &[("x-tenant", "v2")]));
        assert_eq!(v["headers"]["x-tenant"], "v2", "{v}");
        assert_eq!(v["body"], json!({"v2": "x"}), "{v}");
        assert_eq!(v["id"], "r-9", "{v}");
        // At most 64 KiB of them reach it (HTTP itself takes at most 100 headers).
        let big = "v".repeat(8 * 1024);
        let many: Vec<(String, &str)> = (0..10).map(|i| (format!("x-big-{i}"), big.as_str())).collect();
        let refs: Vec<(&str, &str)> = many.iter().map(|(k, v)| (k.as_str(), *v)).collect();
        let v = ok(post_with(&s.addr, "/v1/models/h:predict", "{}", &refs));
        let n = v["headers"].as_object().unwrap().keys().filter(|k| k.starts_with("x-big-")).count();
        assert!((6..=7).contains(&n), "{n} of the 8 KiB headers: {v}");
    }
}

both! {
    /// A NumPy array is answered as KServe's server sends it: the JSON array itself on v1,
    /// `output-0` on v2 (as `get_predict_response` names it).
    fn an_array_is_answered_as_kserve_sends_it(py: &Path) {
        let (s, _dir) = serve(py, &[("arr", "class_name: Arrays")]);
        let v = ok(post(&s.addr, "/v1/models/arr:predict", r#"{"instances": [[1, 2]]}"#));
        assert_eq!(v, json!([[10.0, 20.0]]));
        let v = ok(post(&s.addr, "/v2/models/arr/infer", &v2("x", "FP32", &[1, 2], json!([1, 2]))));
        assert_eq!(v["outputs"][0]["name"], "output-0", "{v}");
        assert_eq!(v["outputs"][0]["datatype"], "FP64", "{v}");
        assert_eq!(v["outputs"][0]["data"], json!([10.0, 20.0]), "{v}");
    }
}

both! {
    /// Text: a v1 body of the class's own shape, v2 BYTES as strings both ways.
    fn strings_in_and_out(py: &Path) {
        let (s, _dir) = serve(py, &[("t", "class_name: Texts")]);
        let v = ok(post(&s.addr, "/v1/models/t:predict", r#"{"text": "hi"}"#));
        assert_eq!(v, json!({"predictions": ["HI"]}));
        let v = ok(post(&s.addr, "/v2/models/t/infer", &v2("w", "BYTES", &[2], json!(["ab", "cd"]))));
        assert_eq!(v["outputs"][0]["datatype"], "BYTES", "{v}");
        assert_eq!(v["outputs"][0]["data"], json!(["AB", "CD"]), "{v}");
    }
}

both! {
    /// Datetimes in an answer are written as KServe's server writes them: ISO 8601 in a v1
    /// body, `str()` in a v2 BYTES output (`set_data_from_numpy`).
    fn datetimes_are_answered_as_kserve_writes_them(py: &Path) {
        let (s, _dir) = serve(py, &[("dates", "class_name: Dates")]);
        let v = ok(post(&s.addr, "/v1/models/dates:predict", r#"{"instances": [1]}"#));
        assert_eq!(v, json!({"predictions": ["2026-12-07T12:30:15.250000+00:00", "2026-12-07"]}));
        let v = ok(post(&s.addr, "/v2/models/dates/infer", &v2("x", "FP32", &[1], json!([1]))));
        assert_eq!(v["outputs"][0]["data"], json!(["2026-12-07 12:30:15.250000+00:00"]), "{v}");
    }
}

both! {
    /// A class that builds its own InferRequest (as a transformer does) gets KServe's
    /// `to_rest` and `as_numpy`.
    fn a_class_builds_infer_requests(py: &Path) {
        let (s, _dir) = serve(py, &[("rq", "class_name: Requests")]);
        let v = ok(post(&s.addr, "/v1/models/rq:predict", r#"{"instances": [[1.5, 2]]}"#));
        assert_eq!(v["predictions"], json!([[1.5, 2.0]]), "{v}");
        assert_eq!(v["inputs"], json!([{"name": "x", "shape": [1, 2], "datatype": "FP32", "data": [1.5, 2.0]}]), "{v}");
    }
}

/// `servegraph serve GRAPH` with its log in `dir/stderr.log`: the process (killed when
/// dropped), its address once ready, and the log's path.
struct Logged {
    child: std::process::Child,
    addr: String,
    log: PathBuf,
}

impl Logged {
    fn start(graph: &str, dir: &Path) -> Logged {
        use std::io::BufRead;
        let log = dir.join("stderr.log");
        let mut child = bin()
            .args([
                "serve",
                graph,
                "--listen",
                "127.0.0.1:0",
                "--drain-grace",
                "0",
            ])
            .env_remove("RUST_LOG")
            .stdout(std::process::Stdio::piped())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap();
        let mut line = String::new();
        std::io::BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let addr = line.trim().rsplit("http://").next().unwrap().to_owned();
        let logged = Logged { child, addr, log };
        until(&logged.addr, "/v2/health/ready", |r| r.status == 200);
        logged
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap()
    }
}

impl Drop for Logged {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

both! {
    /// A model file in the shape of KServe's docs (its argument parser extended from
    /// `model_server.parser`, `from kserve.model_server import app`, a `__main__` block that
    /// starts KServe's server) loads unchanged: the block does not run (the file is imported).
    /// A file that starts KServe's server outside the block loads too: the call starts nothing
    /// and says so in the log.
    fn kserves_example_file_loads_unchanged(py: &Path) {
        let dir = tempfile::tempdir().unwrap();
        let g = graph(dir.path(), py, "custom_model.py", &[("custom", "class_name: AlexNetModel")]);
        let s = Logged::start(&g, dir.path());
        let v = ok(post(&s.addr, "/v1/models/custom:predict", r#"{"instances": [[1, 1]]}"#));
        let p = v["predictions"][0].as_array().unwrap_or_else(|| panic!("{v}"));
        assert!((p[0].as_f64().unwrap() - 0.1).abs() < 1e-6 && (p[1].as_f64().unwrap() - 0.2).abs() < 1e-6, "{v}");
        let v = ok(post(&s.addr, "/v2/models/custom/infer", &v2("x", "FP32", &[1, 2], json!([10, 10]))));
        assert_eq!(v["outputs"][0]["name"], "output-0", "{v}");
        assert!(!s.log().contains("started no server"), "the __main__ block ran: {}", s.log());
        drop(s);

        let dir = tempfile::tempdir().unwrap();
        let g = graph(dir.path(), py, "unguarded.py", &[("echo", "class_name: Echo")]);
        let s = Logged::start(&g, dir.path());
        let v = ok(post(&s.addr, "/v1/models/echo:predict", r#"{"instances": [3]}"#));
        assert_eq!(v, json!({"predictions": [3]}));
        let log = s.log();
        assert!(
            log.contains("kserve.ModelServer.start() started no server: servegraph serves this model itself"),
            "{log}"
        );
    }
}

/// `api: kserve` names the API; a class that is not a `kserve.Model` is refused at load,
/// naming it.
#[test]
fn api_kserve_refuses_a_class_that_is_not_kserves() {
    let source =
        "class Plain:\n    def predict(self, inputs, parameters):\n        return inputs\n";
    let stderr = validate_fails(source, "Plain", ", api: kserve");
    assert!(
        stderr.contains("`Plain` is not a subclass of kserve.Model, which `api: kserve` serves"),
        "{stderr}"
    );
}

/// Under the stand-in, what it does not provide is refused by name at load.
#[test]
fn the_stand_in_refuses_what_it_does_not_provide() {
    let source =
        "import kserve\nfrom kserve import KServeClient\n\nclass M(kserve.Model):\n    pass\n";
    let stderr = validate_fails(source, "M", "");
    assert!(
        stderr.contains("`kserve.KServeClient` is not part of servegraph's stand-in for kserve"),
        "{stderr}"
    );
    assert!(
        stderr.contains("Install kserve in the model's interpreter"),
        "{stderr}"
    );
}

/// The stand-in's types and helpers behave as KServe 0.21's do (both in the test venv, side
/// by side: `tests/python/kserve_compat_check.py`).
#[test]
fn the_stand_in_behaves_as_kserve() {
    let python = root().join("python");
    for case in ["types", "helpers", "errors", "parser", "storage", "model"] {
        python_case("kserve_compat_check.py", case, &[python.as_ref()]);
    }
}

both! {
    /// An `async def` hook runs as a task of the worker's loop, whether it waits or not:
    /// `asyncio.timeout` works (and fires), `current_task()` is the call's task, and a task
    /// the class starts in one call has run by the next.
    fn async_hooks_run_as_tasks(py: &Path) {
        let (s, _dir) = serve(py, &[("t", "class_name: InTask")]);
        let call = |body: &str| ok(post(&s.addr, "/v1/models/t:predict", body))["predictions"].clone();
        assert_eq!(call(r#"{"instances": [], "spawn": true}"#), json!([true, [], false]));
        assert_eq!(call(r#"{"instances": []}"#), json!([true, ["done"], false]));
        assert_eq!(call(r#"{"instances": [], "sleep": 0.002}"#), json!([true, ["done"], false]));
        assert_eq!(call(r#"{"instances": [], "time_out": true}"#), json!([true, ["done"], true]));
    }
}
