//! `class: python` models against real worker processes and the test virtualenv's Python:
//! each API shape, errors, a crash, a hang, batching, BYTES, and no worker left behind.

mod common;

use std::time::{Duration, Instant};

use common::{Server, bin, post, root, test_python};
use serde_json::{Value, json};

/// A graph whose router serves the given routes (YAML mappings, one per line), each a Python
/// model with the test Python and `tests/python/models/models.py`.
fn graph(dir: &std::path::Path, routes: &[(&str, &str)]) -> String {
    let models = root().join("tests/python/models/models.py");
    let python = test_python();
    let mut yaml = String::from("name: py\ngraph:\n  kind: router\n  routes:\n");
    for (name, fields) in routes {
        yaml.push_str(&format!(
            "    {name}: {{kind: model, class: python, path: {}, python: {}, {fields}}}\n",
            models.display(),
            python.display()
        ));
    }
    let path = dir.join("py.yaml");
    std::fs::write(&path, yaml).unwrap();
    path.display().to_string()
}

fn request(values: &[f32], parameters: Value) -> String {
    json!({
        "inputs": [{"name": "input", "shape": [1, values.len()], "datatype": "FP32", "data": values}],
        "parameters": parameters,
    })
    .to_string()
}

fn output<'a>(reply: &'a Value, name: &str) -> &'a Value {
    reply["outputs"]
        .as_array()
        .unwrap()
        .iter()
        .find(|o| o["name"] == name)
        .unwrap_or_else(|| panic!("no output `{name}` in {reply}"))
}

const ECHO: &str = "class_name: Echo, class_args: {scale: 2.5}, inputs: [{name: input, datatype: FP32, shape: [-1, -1]}]";

/// The pid of the worker that answers one echo request (which must succeed).
fn echo_pid(addr: &str) -> u64 {
    let r = post(addr, "/v2/models/echo/infer", &request(&[1.0], json!({})));
    assert_eq!(r.status, 200, "{:?}", r.body);
    output(&r.json(), "pid")["data"][0].as_u64().unwrap()
}

fn alive(pid: u64) -> bool {
    std::path::Path::new(&format!("/proc/{pid}")).exists()
        && !std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .unwrap_or_default()
            .contains(") Z ")
}

#[test]
fn each_api_shape_answers() {
    let dir = tempfile::tempdir().unwrap();
    let weights = root().join("tests/python/models/weights");
    let g = graph(
        dir.path(),
        &[
            ("echo", ECHO),
            ("double", "function: double"),
            (
                "seldon",
                &format!("class_name: Model, model_uri: {}", weights.display()),
            ),
            (
                "mlrun",
                &format!(
                    "class_name: LinearServer, model_path: {}, class_args: {{factor: 2}}",
                    weights.display()
                ),
            ),
            (
                "component",
                "class_name: Component, class_args: {offset: 0.5}",
            ),
            ("clipper", "function: feature_sum"),
        ],
    );
    let server = Server::start(&g, &[]);
    let r = post(
        &server.addr,
        "/v2/models/echo/infer",
        &request(&[1.0, 2.0], json!({})),
    );
    assert_eq!(r.status, 200, "{:?}", r.body);
    assert_eq!(output(&r.json(), "output")["data"], json!([2.5, 5.0]));
    assert_eq!(output(&r.json(), "output")["datatype"], "FP32");
    assert_eq!(output(&r.json(), "pid")["datatype"], "INT64");
    let r = post(
        &server.addr,
        "/v2/models/double/infer",
        &request(&[1.5], json!({})),
    );
    assert_eq!(r.status, 200, "{:?}", r.body);
    assert_eq!(output(&r.json(), "output")["data"], json!([3.0]));
    // PrimeHub's Model: model_uri is the folder, predict(X, feature_names, meta).
    let r = post(
        &server.addr,
        "/v2/models/seldon/infer",
        &request(&[2.0], json!({})),
    );
    assert_eq!(r.status, 200, "{:?}", r.body);
    assert_eq!(output(&r.json(), "output")["data"], json!([6.0]));
    // MLRun's V2ModelServer: get_model, get_param, then preprocess → predict (rows + 1, × 6).
    let r = post(
        &server.addr,
        "/v2/models/mlrun/infer",
        &request(&[1.0, 2.0], json!({})),
    );
    assert_eq!(r.status, 200, "{:?}", r.body);
    assert_eq!(output(&r.json(), "output")["data"], json!([12.0, 18.0]));
    // Seldon's SeldonComponent answering a SeldonResponse.
    let r = post(
        &server.addr,
        "/v2/models/component/infer",
        &request(&[1.0], json!({})),
    );
    assert_eq!(r.status, 200, "{:?}", r.body);
    assert_eq!(output(&r.json(), "output")["data"], json!([1.5]));
    assert_eq!(
        r.json()["parameters"]["tags"],
        json!({"seen": 1, "component": "v1"}),
        "{:?}",
        r.body
    );
    // Clipper's contract: a function of the list of inputs, one output per input.
    let body = json!({"inputs": [{"name": "input", "shape": [2, 2], "datatype": "FP32", "data": [1, 2, 3, 4.5]}]});
    let r = post(&server.addr, "/v2/models/clipper/infer", &body.to_string());
    assert_eq!(r.status, 200, "{:?}", r.body);
    assert_eq!(output(&r.json(), "output")["data"], json!(["3.0", "7.5"]));
    assert_eq!(output(&r.json(), "output")["datatype"], "BYTES");
}

#[test]
fn an_exception_is_an_error_answer_and_the_worker_goes_on() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(&graph(dir.path(), &[("echo", ECHO)]), &[]);
    let r = post(
        &server.addr,
        "/v2/models/echo/infer",
        &request(&[-1.0], json!({})),
    );
    assert_eq!(r.status, 500, "{:?}", r.body);
    assert!(
        r.error()
            .contains("ValueError: negative one is not allowed"),
        "{:?}",
        r.body
    );
    // ModelError chooses the status.
    let r = post(
        &server.addr,
        "/v2/models/echo/infer",
        &request(&[-3.0], json!({})),
    );
    assert_eq!(r.status, 400, "{:?}", r.body);
    assert!(r.error().contains("minus three"), "{:?}", r.body);
    // An input the model does not declare is the engine's 400, before Python.
    let wrong = json!({"inputs": [{"name": "x", "shape": [1], "datatype": "FP32", "data": [1]}]});
    let r = post(&server.addr, "/v2/models/echo/infer", &wrong.to_string());
    assert_eq!(r.status, 400, "{:?}", r.body);
    assert!(
        r.error().contains("input `x` is not one `echo` takes"),
        "{:?}",
        r.body
    );
    let r = post(
        &server.addr,
        "/v2/models/echo/infer",
        &request(&[4.0], json!({})),
    );
    assert_eq!(r.status, 200, "{:?}", r.body);
}

#[test]
fn a_worker_that_dies_fails_its_call_at_once_and_is_started_again() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(&graph(dir.path(), &[("echo", ECHO)]), &[]);
    let pid_of = |r: &common::Reply| output(&r.json(), "pid")["data"][0].as_u64().unwrap();
    let first = echo_pid(&server.addr);
    let t0 = Instant::now();
    let r = post(
        &server.addr,
        "/v2/models/echo/infer",
        &request(&[1.0], json!({"crash": true})),
    );
    assert_eq!(r.status, 503, "{:?}", r.body);
    assert!(t0.elapsed() < Duration::from_secs(3), "answered at once");
    assert!(
        r.error().contains("`echo`") && r.error().contains("exit status 3"),
        "{:?}",
        r.body
    );
    // Its only worker is gone: not ready until it is back.
    let ready = common::get_blocking(&server.addr, "/v2/health/ready");
    assert_eq!(ready.status, 503, "{:?}", ready.body);
    assert!(
        ready.error().contains("Python workers is loaded"),
        "{:?}",
        ready.body
    );
    let ready = common::get_blocking(&server.addr, "/v2/models/echo/ready");
    assert_eq!(ready.status, 503, "{:?}", ready.body);
    // Started again (after a backoff of 0.5 s): a new process answers.
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let r = post(
            &server.addr,
            "/v2/models/echo/infer",
            &request(&[1.0], json!({})),
        );
        if r.status == 200 {
            assert_ne!(pid_of(&r), first, "a new worker");
            assert_eq!(
                common::get_blocking(&server.addr, "/v2/health/ready").status,
                200
            );
            break;
        }
        assert_eq!(r.status, 503, "{:?}", r.body);
        assert!(
            Instant::now() < deadline,
            "the worker was not started again"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn a_call_past_its_deadline_is_504_and_a_stuck_worker_is_replaced() {
    let dir = tempfile::tempdir().unwrap();
    let fields = format!("{ECHO}, hang_kill_ms: 1000");
    let g = graph(dir.path(), &[("echo", &fields)]);
    // The request's deadline (the graph's `timeout_ms`).
    let text = std::fs::read_to_string(&g)
        .unwrap()
        .replace("name: py\n", "name: py\ntimeout_ms: 300\n");
    std::fs::write(&g, text).unwrap();
    let server = Server::start(&g, &[]);
    let t0 = Instant::now();
    let r = post(
        &server.addr,
        "/v2/models/echo/infer",
        &request(&[-2.0], json!({})),
    );
    assert_eq!(r.status, 504, "{:?}", r.body);
    assert!(t0.elapsed() < Duration::from_secs(2), "{:?}", t0.elapsed());
    // The worker sleeps 5 s; past hang_kill_ms it is killed and a new one serves.
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let r = post(
            &server.addr,
            "/v2/models/echo/infer",
            &request(&[1.0], json!({})),
        );
        if r.status == 200 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "never served again: {:?}",
            r.body
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(
        t0.elapsed() < Duration::from_secs(5),
        "replaced before its sleep ended"
    );
}

#[test]
fn batched_requests_each_get_their_own_rows() {
    let dir = tempfile::tempdir().unwrap();
    let fields = format!("{ECHO}, batch: {{max_size: 64, max_wait_us: 2000}}");
    let server = Server::start(&graph(dir.path(), &[("echo", &fields)]), &[]);
    let addr = server.addr.clone();
    let threads: Vec<_> = (0..24)
        .map(|i| {
            let addr = addr.clone();
            std::thread::spawn(move || {
                for j in 0..10 {
                    let v = (i * 100 + j) as f32;
                    let r = post(
                        &addr,
                        "/v2/models/echo/infer",
                        &request(&[v, v + 0.5], json!({})),
                    );
                    assert_eq!(r.status, 200, "{:?}", r.body);
                    let reply = r.json();
                    let out = output(&reply, "output");
                    assert_eq!(out["data"], json!([v * 2.5, (v + 0.5) * 2.5]));
                    assert_eq!(out["shape"], json!([1, 2]));
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    let metrics =
        String::from_utf8_lossy(&common::get_blocking(&addr, "/metrics").body).into_owned();
    assert!(metrics.contains("servegraph_"), "metrics answer");
}

/// Requests gathered for a batch not yet written to a worker count against `queue_size`
/// (Triton's `max_queue_size`): past it, 503 at once.
#[test]
fn requests_waiting_for_a_batch_count_against_queue_size() {
    let dir = tempfile::tempdir().unwrap();
    let fields = format!("{ECHO}, queue_size: 2, batch: {{max_size: 64, max_wait_us: 500000}}");
    let server = Server::start(&graph(dir.path(), &[("echo", &fields)]), &[]);
    let clients: Vec<_> = (0..5)
        .map(|i| {
            let addr = server.addr.clone();
            std::thread::spawn(move || {
                // The first two wait for their batch to fill; the rest arrive meanwhile.
                std::thread::sleep(Duration::from_millis(if i < 2 { 0 } else { 150 }));
                let r = post(&addr, "/v2/models/echo/infer", &request(&[1.0], json!({})));
                (i, r.status, r.json())
            })
        })
        .collect();
    for c in clients {
        let (i, status, body) = c.join().unwrap();
        if i < 2 {
            assert_eq!(status, 200, "request {i}: {body}");
        } else {
            assert_eq!(status, 503, "request {i}: {body}");
            assert_eq!(
                body["error"],
                "step `echo`: model `echo` is busy: 2 requests are already waiting for it (its queue_size)"
            );
        }
    }
}

#[test]
fn bytes_travel_as_bytes() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(&graph(dir.path(), &[("rev", "class_name: Reverse")]), &[]);
    let body =
        json!({"inputs": [{"name": "s", "shape": [2], "datatype": "BYTES", "data": ["abc", ""]}]});
    let r = post(&server.addr, "/v2/models/rev/infer", &body.to_string());
    assert_eq!(r.status, 200, "{:?}", r.body);
    assert_eq!(output(&r.json(), "output")["data"], json!(["cba", ""]));
    assert_eq!(output(&r.json(), "output")["datatype"], "BYTES");
}

#[test]
fn a_failing_load_is_a_graph_error_with_the_traceback() {
    let dir = tempfile::tempdir().unwrap();
    let g = graph(dir.path(), &[("broken", "class_name: Broken")]);
    let out = bin().args(["validate", &g]).output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(
        stderr.contains("step `broken`: could not load: RuntimeError: the weights are missing"),
        "{stderr}"
    );
    assert!(
        stderr.contains("models.py\", line") && stderr.contains("in load"),
        "the user's frame: {stderr}"
    );
    assert!(
        !stderr.contains("_worker.py"),
        "not the runtime's frames: {stderr}"
    );
    assert!(
        stderr.contains("py.yaml:5:5"),
        "the step's position: {stderr}"
    );
    // A missing class names itself.
    let g = graph(dir.path(), &[("nope", "class_name: Nope")]);
    let out = bin().args(["validate", &g]).output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("has no class `Nope`"), "{stderr}");
    // One typo away from a name in the file: "did you mean".
    let g = graph(dir.path(), &[("typo", "function: doubel")]);
    let out = bin().args(["validate", &g]).output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("has no function `doubel` (did you mean `double`?)"),
        "{stderr}"
    );
}

#[test]
fn no_worker_outlives_the_server() {
    for how in ["TERM", "KILL"] {
        let dir = tempfile::tempdir().unwrap();
        let fields = format!("{ECHO}, workers: 2");
        let mut server = Server::start(&graph(dir.path(), &[("echo", &fields)]), &[]);
        let pids: std::collections::BTreeSet<u64> =
            (0..50).map(|_| echo_pid(&server.addr)).collect();
        assert!(!pids.is_empty());
        for &p in &pids {
            assert!(alive(p), "worker {p} runs");
        }
        if how == "TERM" {
            assert!(server.terminate().success());
        } else {
            server.kill();
        }
        let deadline = Instant::now() + Duration::from_secs(5);
        while pids.iter().any(|&p| alive(p)) {
            assert!(
                Instant::now() < deadline,
                "workers {pids:?} outlived SIG{how} of the server"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

/// The graph is built on a thread of tokio's blocking pool, which ends after 10 s idle; a
/// worker started from it would get its parent-death signal then. Workers are started by
/// their own threads, so they live as long as the model.
#[test]
fn workers_outlive_the_thread_that_built_the_graph() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(&graph(dir.path(), &[("echo", ECHO)]), &[]);
    let first = echo_pid(&server.addr);
    std::thread::sleep(Duration::from_secs(12));
    assert_eq!(
        echo_pid(&server.addr),
        first,
        "the same worker, never restarted"
    );
}

/// `recycle.max_requests`: after that many calls a new worker is loaded, then the old one
/// stops; no request fails meanwhile and readiness never drops.
#[test]
fn workers_are_recycled_after_max_requests_without_a_failed_request() {
    let dir = tempfile::tempdir().unwrap();
    let fields = format!("{ECHO}, recycle: {{max_requests: 5}}");
    let server = Server::start(&graph(dir.path(), &[("echo", &fields)]), &[]);
    let mut pids = Vec::new();
    for _ in 0..12 {
        pids.push(echo_pid(&server.addr));
        assert_eq!(
            common::get_blocking(&server.addr, "/v2/health/ready").status,
            200
        );
    }
    // Calls 1–5 on the first worker, 6–10 on the second, 11–12 on the third.
    assert!(pids[..5].iter().all(|&p| p == pids[0]), "{pids:?}");
    assert!(pids[5..10].iter().all(|&p| p == pids[5]), "{pids:?}");
    assert_ne!(pids[0], pids[5], "{pids:?}");
    assert_ne!(pids[5], pids[10], "{pids:?}");
    let deadline = Instant::now() + Duration::from_secs(5);
    while alive(pids[0]) {
        assert!(
            Instant::now() < deadline,
            "the recycled worker {} still runs",
            pids[0]
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// `recycle.max_rss_mb`: a worker over the limit (any Python is over 1 MiB) is replaced at its
/// next memory check, every 16 calls.
#[test]
fn workers_over_max_rss_mb_are_recycled() {
    let dir = tempfile::tempdir().unwrap();
    let fields = format!("{ECHO}, recycle: {{max_rss_mb: 1}}");
    let server = Server::start(&graph(dir.path(), &[("echo", &fields)]), &[]);
    let pids: Vec<u64> = (0..20).map(|_| echo_pid(&server.addr)).collect();
    assert!(pids[..16].iter().all(|&p| p == pids[0]), "{pids:?}");
    assert!(
        pids[16..].iter().all(|&p| p != pids[0]),
        "replaced after 16 calls: {pids:?}"
    );
}

/// `python:` per model: two models of one graph run in two environments (a second venv made
/// here, which borrows the test venv's packages through a `.pth` file).
#[test]
fn two_models_run_in_two_interpreters() {
    let dir = tempfile::tempdir().unwrap();
    let venv = dir.path().join("venv2");
    let made = std::process::Command::new(test_python())
        .args(["-m", "venv", "--without-pip"])
        .arg(&venv)
        .status()
        .unwrap();
    assert!(made.success());
    let site = |py: &std::path::Path| -> String {
        let out = std::process::Command::new(py)
            .args([
                "-c",
                "import sysconfig; print(sysconfig.get_paths()['purelib'])",
            ])
            .output()
            .unwrap();
        String::from_utf8(out.stdout).unwrap().trim().to_owned()
    };
    let python2 = venv.join("bin/python");
    std::fs::write(
        std::path::Path::new(&site(&python2)).join("borrowed.pth"),
        site(&test_python()),
    )
    .unwrap();
    let g = graph(
        dir.path(),
        &[("one", "function: where"), ("two", "function: where")],
    );
    // The second model's interpreter is the new venv's.
    let text = std::fs::read_to_string(&g).unwrap();
    let (head, tail) = text.split_once("    two:").unwrap();
    let tail = tail.replace(
        &test_python().display().to_string(),
        &python2.display().to_string(),
    );
    std::fs::write(&g, format!("{head}    two:{tail}")).unwrap();
    let server = Server::start(&g, &[]);
    let prefix = |model: &str| -> String {
        let r = post(
            &server.addr,
            &format!("/v2/models/{model}/infer"),
            &request(&[1.0], json!({})),
        );
        assert_eq!(r.status, 200, "{:?}", r.body);
        output(&r.json(), "prefix")["data"][0]
            .as_str()
            .unwrap()
            .to_owned()
    };
    let (one, two) = (prefix("one"), prefix("two"));
    assert_ne!(one, two);
    assert_eq!(
        std::path::Path::new(&two),
        venv.canonicalize().unwrap().as_path(),
        "{two}"
    );
}

/// MLRun's body (`{"inputs": rows}`) at `/infer` and at MLRun's `/predict`, for a Python model
/// and an ONNX one, answered in MLRun's shape; a model with several inputs refuses rows.
#[test]
fn mlrun_rows_work_for_every_model_at_infer_and_predict() {
    let server = Server::start(
        &root()
            .join("graphs/python-mlrun.yaml")
            .display()
            .to_string(),
        &[],
    );
    let rows =
        json!({"id": "m1", "inputs": [[5.1, 3.5, 1.4, 0.2], [6.7, 3.0, 5.2, 2.3]]}).to_string();
    for path in ["/v2/models/iris-lr/infer", "/v2/models/iris-lr/predict"] {
        let r = post(&server.addr, path, &rows);
        assert_eq!(r.status, 200, "{path}: {:?}", r.body);
        let v = r.json();
        assert_eq!(v["id"], "m1");
        assert_eq!(v["model_name"], "iris-lr");
        assert_eq!(v["outputs"], json!([0, 2]), "{v}");
    }
    let onnx = Server::start(&root().join("graphs/iris.yaml").display().to_string(), &[]);
    let r = post(&onnx.addr, "/v2/models/iris-lr/predict", &rows);
    assert_eq!(r.status, 200, "{:?}", r.body);
    let v = r.json();
    assert_eq!(v["outputs"]["label"], json!([0, 2]), "{v}");
    assert_eq!(
        v["outputs"]["probabilities"].as_array().unwrap().len(),
        2,
        "{v}"
    );
    // OIP bodies are unchanged at /predict.
    let r = post(
        &onnx.addr,
        "/v2/models/iris-lr/predict",
        &request(&[5.1, 3.5, 1.4, 0.2], json!({})),
    );
    assert_eq!(r.status, 200, "{:?}", r.body);
    assert!(r.json()["outputs"][0]["name"].is_string());
}

/// `kind: python` steps (MLRun's `handler:` steps) in a flow: each function's tensors are put
/// into the event and the others pass on, so a later step sees both.
#[test]
fn python_handler_steps_put_their_tensors_and_pass_the_rest_on() {
    let dir = tempfile::tempdir().unwrap();
    let models = root().join("tests/python/models/models.py");
    let yaml = format!(
        "name: steps\ngraph:\n  kind: flow\n  steps:\n    a: {{kind: python, path: {m}, handler: add_one, python: {py}}}\n    b: {{kind: python, path: {m}, handler: double, python: {py}, after: [a]}}\n    c: {{kind: transform, op: noop, after: [b]}}\n",
        m = models.display(),
        py = test_python().display()
    );
    let g = dir.path().join("steps.yaml");
    std::fs::write(&g, yaml).unwrap();
    let server = Server::start(&g.display().to_string(), &[]);
    let r = post(
        &server.addr,
        "/v2/models/steps/infer",
        &request(&[1.0, 2.0], json!({})),
    );
    assert_eq!(r.status, 200, "{:?}", r.body);
    assert_eq!(
        output(&r.json(), "input")["data"],
        json!([2.0, 3.0]),
        "a replaced `input`"
    );
    assert_eq!(
        output(&r.json(), "output")["data"],
        json!([4.0, 6.0]),
        "b added `output`"
    );
    // Its fields are checked as any step's.
    let bad = dir.path().join("bad.yaml");
    std::fs::write(
        &bad,
        format!("name: bad\ngraph:\n  kind: flow\n  steps:\n    a: {{kind: python, path: {}, handlr: f}}\n", models.display()),
    )
    .unwrap();
    let out = bin()
        .args(["validate", &bad.display().to_string()])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        stderr.contains("handlr") && stderr.contains("did you mean `handler`"),
        "{stderr}"
    );
}

/// A 4 MiB tensor made by one Python step, returned as is by a second (no copy: it points at
/// its input) and checked by a third: it crosses as shared memory each way, intact; with
/// `shm_mb: 0`, or shared memory too small for it, it crosses the pipe instead, as intact.
#[test]
fn large_tensors_cross_through_shared_memory() {
    let dir = tempfile::tempdir().unwrap();
    let models = root().join("tests/python/models/models.py");
    let step = |name: &str, handler: &str, after: &str, shm: &str| {
        format!(
            "    {name}: {{kind: python, path: {}, handler: {handler}, python: {}{shm}{after}}}\n",
            models.display(),
            test_python().display()
        )
    };
    let body = json!({
        "inputs": [{"name": "n", "shape": [1], "datatype": "INT64", "data": [1 << 20]}],
        "outputs": [{"name": "passed_in_shm"}, {"name": "checked_in_shm"}, {"name": "intact"}, {"name": "size"}],
    })
    .to_string();
    for (shm, shared) in [("", true), (", shm_mb: 0", false), (", shm_mb: 1", false)] {
        let yaml = format!(
            "name: big\ngraph:\n  kind: flow\n  steps:\n{}{}{}",
            step("make", "make_big", "", shm),
            step("pass", "pass_big", ", after: [make]", shm),
            step("check", "check_big", ", after: [pass]", shm),
        );
        let g = dir.path().join("big.yaml");
        std::fs::write(&g, yaml).unwrap();
        let server = Server::start(&g.display().to_string(), &[]);
        let r = post(&server.addr, "/v2/models/big/infer", &body);
        assert_eq!(r.status, 200, "{shm}: {:?}", r.body);
        let v = r.json();
        assert_eq!(output(&v, "size")["data"], json!([1 << 20]), "{shm}");
        assert_eq!(output(&v, "intact")["data"], json!([true]), "{shm}");
        assert_eq!(
            output(&v, "passed_in_shm")["data"],
            json!([shared]),
            "{shm}"
        );
        assert_eq!(
            output(&v, "checked_in_shm")["data"],
            json!([shared]),
            "{shm}"
        );
    }
}

/// `load_mode: async`: the server serves its other models at once; the loading one is not
/// ready (and answers 503 saying it loads) until it has loaded. `validate` waits for it and
/// reports a failing load as an error.
#[test]
fn async_load_is_not_ready_until_loaded_and_validate_waits_for_it() {
    let dir = tempfile::tempdir().unwrap();
    let g = graph(
        dir.path(),
        &[
            ("fast", ECHO),
            (
                "slow",
                "class_name: SlowLoad, class_args: {seconds: 2}, load_mode: async",
            ),
        ],
    );
    let server = Server::listening(&g, "127.0.0.1:0", &["--drain-grace", "0"]);
    let body = request(&[1.0, 2.0], json!({}));
    let deadline = Instant::now() + Duration::from_secs(30);
    while post(&server.addr, "/v2/models/fast/infer", &body).status != 200 {
        assert!(Instant::now() < deadline, "`fast` never served");
        std::thread::sleep(Duration::from_millis(20));
    }
    // `fast` serves while `slow` still loads.
    assert_eq!(
        common::get_blocking(&server.addr, "/v2/models/slow/ready").status,
        503
    );
    assert_eq!(
        common::get_blocking(&server.addr, "/v2/health/ready").status,
        503
    );
    let r = post(&server.addr, "/v2/models/slow/infer", &body);
    assert_eq!(r.status, 503, "{:?}", r.body);
    assert!(r.error().contains("loading"), "{}", r.error());
    while common::get_blocking(&server.addr, "/v2/models/slow/ready").status != 200 {
        assert!(Instant::now() < deadline, "`slow` never became ready");
        std::thread::sleep(Duration::from_millis(50));
    }
    let r = post(&server.addr, "/v2/models/slow/infer", &body);
    assert_eq!(r.status, 200, "{:?}", r.body);
    assert_eq!(output(&r.json(), "output")["data"], json!([1.0, 2.0]));

    let failing = graph(
        dir.path(),
        &[(
            "slow",
            "class_name: SlowLoad, class_args: {seconds: 0.2, fail: true}, load_mode: async",
        )],
    );
    let out = bin().args(["validate", &failing]).output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(
        stderr.contains("step `slow`") && stderr.contains("RuntimeError: the slow load failed"),
        "{stderr}"
    );
}

/// MLRun's `op_<name>(event)` at `POST /v2/models/{m}/{name}` (a missing one is a 404, a
/// model without operations too); `set_metric` and Seldon's `metrics()` reach `/metrics`.
#[test]
fn operations_and_model_metrics() {
    let dir = tempfile::tempdir().unwrap();
    let weights = root().join("tests/python/models/weights");
    let g = graph(
        dir.path(),
        &[
            (
                "mlrun",
                &format!(
                    "class_name: LinearServer, model_path: {}, class_args: {{factor: 2}}",
                    weights.display()
                ),
            ),
            ("component", "class_name: Component, api: seldon"),
            ("fn", "function: double"),
        ],
    );
    let server = Server::start(&g, &[]);
    let r = post(
        &server.addr,
        "/v2/models/mlrun/scale",
        r#"{"values": [1, 2]}"#,
    );
    assert_eq!(r.status, 200, "{:?}", r.body);
    let weight: f64 =
        std::fs::read_to_string(root().join("tests/python/models/weights/weight.txt"))
            .unwrap()
            .trim()
            .parse()
            .unwrap();
    assert_eq!(
        r.json(),
        json!({"scaled": [weight * 2.0, weight * 4.0], "path": "/v2/models/mlrun/scale"})
    );
    // MLRun's own answer to an operation its class lacks.
    let r = post(&server.addr, "/v2/models/mlrun/nope", "{}");
    assert_eq!(r.status, 400, "{:?}", r.body);
    assert!(
        r.error()
            .contains("illegal model operation nope, method=POST"),
        "{}",
        r.error()
    );
    let r = post(&server.addr, "/v2/models/mlrun/$health", "{}");
    assert_eq!(
        r.status, 404,
        "the health probe's operation is not one: {:?}",
        r.body
    );
    let r = post(&server.addr, "/v2/models/fn/scale", "{}");
    assert_eq!(r.status, 404, "{:?}", r.body);
    let r = post(&server.addr, "/v2/models/mlrun/scale", "{not json");
    assert_eq!(r.status, 400, "{:?}", r.body);

    for _ in 0..2 {
        assert_eq!(
            post(
                &server.addr,
                "/v2/models/mlrun/infer",
                &request(&[1.0, 2.0], json!({}))
            )
            .status,
            200
        );
        assert_eq!(
            post(
                &server.addr,
                "/v2/models/component/infer",
                &request(&[1.0], json!({}))
            )
            .status,
            200
        );
    }
    let metrics =
        String::from_utf8_lossy(&common::get_blocking(&server.addr, "/metrics").body).into_owned();
    let line = |prefix: &str| {
        metrics
            .lines()
            .find(|l| l.starts_with(prefix))
            .unwrap_or_else(|| panic!("no {prefix} in {metrics}"))
            .to_owned()
    };
    assert!(
        line(r#"servegraph_model_user_gauge{model="mlrun",key="rows"}"#).ends_with(" 1.0")
            || line(r#"servegraph_model_user_gauge{model="mlrun",key="rows"}"#).ends_with(" 1"),
        "{metrics}"
    );
    assert!(
        line(r#"servegraph_model_user_counter_total{model="component",key="calls"}"#)
            .ends_with(" 2.0"),
        "{metrics}"
    );
    assert!(
        line(r#"servegraph_model_user_timer_seconds_count{model="component",key="took"}"#)
            .ends_with(" 2"),
        "{metrics}"
    );
}

/// A class's `health_status()` feeds readiness: while it raises, the model is not ready and
/// says why; once it passes again, the model is ready.
#[test]
fn health_status_feeds_readiness() {
    let dir = tempfile::tempdir().unwrap();
    let sick = dir.path().join("sick");
    let g = graph(
        dir.path(),
        &[(
            "moody",
            &format!(
                "class_name: Moody, class_args: {{sick: {}}}, health_interval_ms: 50",
                sick.display()
            ),
        )],
    );
    let server = Server::start(&g, &[]);
    let wait_for = |status: u16| {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let r = common::get_blocking(&server.addr, "/v2/models/moody/ready");
            if r.status == status {
                return r;
            }
            assert!(Instant::now() < deadline, "never {status}: {:?}", r.body);
            std::thread::sleep(Duration::from_millis(20));
        }
    };
    wait_for(200);
    std::fs::write(&sick, "").unwrap();
    let r = wait_for(503);
    assert!(
        r.error().contains("RuntimeError: feeling sick"),
        "{}",
        r.error()
    );
    std::fs::remove_file(&sick).unwrap();
    wait_for(200);
}

/// `on_error` stands in for failures of the graph (a model that raises: 500), never for the
/// caller's own mistakes (a model refusing the input with 400, a wrong datatype: 422).
#[test]
fn an_error_handler_answers_for_the_graph_not_for_the_caller() {
    let dir = tempfile::tempdir().unwrap();
    let models = root().join("tests/python/models/models.py");
    let yaml = format!(
        "name: guarded\ngraph:\n  kind: flow\n  steps:\n    m: {{kind: model, class: python, path: {}, python: {}, {ECHO}, on_error: fallback}}\n    fallback:\n      kind: error_handler\n      outputs: [{{name: output, datatype: FP32, shape: [1], data: [0]}}]\n",
        models.display(),
        test_python().display()
    );
    let g = dir.path().join("guarded.yaml");
    std::fs::write(&g, yaml).unwrap();
    let server = Server::start(&g.display().to_string(), &[]);
    // The model raises: the handler answers, and says why.
    let r = post(
        &server.addr,
        "/v2/models/guarded/infer",
        &request(&[-1.0, 2.0], json!({})),
    );
    assert_eq!(r.status, 200, "{:?}", r.body);
    assert_eq!(output(&r.json(), "output")["data"], json!([0.0]));
    assert_eq!(r.json()["parameters"]["error"]["step"], "m");
    // The model says the input is the caller's mistake: its 400 passes through.
    let r = post(
        &server.addr,
        "/v2/models/guarded/infer",
        &request(&[-3.0, 2.0], json!({})),
    );
    assert_eq!(r.status, 400, "{:?}", r.body);
    // The wrong datatype for the declared input: 422.
    let body =
        json!({"inputs": [{"name": "input", "shape": [1, 1], "datatype": "INT64", "data": [1]}]});
    let r = post(&server.addr, "/v2/models/guarded/infer", &body.to_string());
    assert_eq!(r.status, 422, "{:?}", r.body);
}

/// A model with its own `preprocess`/`postprocess` ops is still the model: its custom
/// operations are served, and `validate` waits for its `load_mode: async` load (the
/// pre/post wrapper once hid both: 404 for the operation, "not ready" from `validate`).
#[test]
fn a_model_with_hooks_keeps_its_operations_and_async_load() {
    let dir = tempfile::tempdir().unwrap();
    let weights = root().join("tests/python/models/weights");
    let hooks = "preprocess: [{op: clip, args: {min: -100, max: 100}}]";
    let g = graph(
        dir.path(),
        &[(
            "mlrun",
            &format!(
                "class_name: LinearServer, model_path: {}, class_args: {{factor: 2}}, {hooks}",
                weights.display()
            ),
        )],
    );
    let server = Server::start(&g, &[]);
    let r = post(&server.addr, "/v2/models/mlrun/scale", r#"{"values": [1]}"#);
    assert_eq!(r.status, 200, "{:?}", r.body);
    assert!(r.json()["scaled"].is_array(), "{:?}", r.body);
    drop(server);

    let slow = graph(
        dir.path(),
        &[(
            "slow",
            &format!(
                "class_name: SlowLoad, class_args: {{seconds: 0.5}}, load_mode: async, {hooks}"
            ),
        )],
    );
    let out = bin().args(["validate", &slow]).output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
}

/// `pip install ./python` installs the whole package, the peers' base classes
/// (`servegraph.compat`) included, so users can unit-test their MLRun and Seldon classes.
#[test]
fn pip_install_brings_the_compat_package() {
    let dir = tempfile::tempdir().unwrap();
    // Built from a copy, so the build's files stay out of the source tree.
    let src = dir.path().join("src");
    copy_tree(&root().join("python"), &src);
    let target = dir.path().join("site");
    let out = std::process::Command::new(test_python())
        .args([
            "-m",
            "pip",
            "install",
            "--quiet",
            "--no-build-isolation",
            "--no-deps",
        ])
        .args(["--no-index", "--target"])
        .arg(&target)
        .arg(&src)
        .env("PIP_DISABLE_PIP_VERSION_CHECK", "1")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for file in [
        "servegraph/_worker.py",
        "servegraph/compat/mlrun.py",
        "servegraph/compat/seldon.py",
    ] {
        assert!(target.join(file).is_file(), "{file} is not installed");
    }
}

/// Copies a folder's files (no `__pycache__`), recursively.
fn copy_tree(from: &std::path::Path, to: &std::path::Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let (path, name) = (entry.path(), entry.file_name());
        if name == "__pycache__" || name.to_string_lossy().ends_with(".egg-info") {
            continue;
        }
        if path.is_dir() {
            copy_tree(&path, &to.join(&name));
        } else {
            std::fs::copy(&path, to.join(&name)).unwrap();
        }
    }
}

/// A Python model's load time and its workers' restarts are metrics.
#[test]
fn python_load_time_and_restarts_are_metrics() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(&graph(dir.path(), &[("echo", ECHO)]), &[]);
    let metric = |name: &str| -> Option<f64> {
        let text = String::from_utf8_lossy(&common::get_blocking(&server.addr, "/metrics").body)
            .into_owned();
        text.lines()
            .find(|l| l.starts_with(&format!("{name}{{model=\"echo\"}}")))
            .and_then(|l| l.rsplit(' ').next()?.parse().ok())
    };
    assert!(metric("servegraph_model_load_seconds").is_some_and(|s| s > 0.0));
    assert_eq!(metric("servegraph_model_restarts_total"), None);
    let r = post(
        &server.addr,
        "/v2/models/echo/infer",
        &request(&[1.0], json!({"crash": true})),
    );
    assert_eq!(r.status, 503, "{:?}", r.body);
    let deadline = Instant::now() + Duration::from_secs(20);
    while post(
        &server.addr,
        "/v2/models/echo/infer",
        &request(&[1.0], json!({})),
    )
    .status
        != 200
    {
        assert!(
            Instant::now() < deadline,
            "the worker was not started again"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(metric("servegraph_model_restarts_total"), Some(1.0));
}

/// A Python call's traceback is logged at the default level, once per distinct failure (not
/// once per request): a failing model does not flood the log.
#[test]
fn a_python_traceback_is_logged_once_per_distinct_failure() {
    use std::io::BufRead;
    let dir = tempfile::tempdir().unwrap();
    let g = graph(dir.path(), &[("echo", ECHO)]);
    let log = dir.path().join("stderr.log");
    let child = bin()
        .args(["serve", &g, "--listen", "127.0.0.1:0", "--drain-grace", "0"])
        .env_remove("RUST_LOG")
        .stdout(std::process::Stdio::piped())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    // Killed however the test ends: no server outlives it.
    struct Killed(std::process::Child);
    impl Drop for Killed {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let mut child = Killed(child);
    let mut line = String::new();
    std::io::BufReader::new(child.0.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let addr = line.trim().rsplit("http://").next().unwrap().to_owned();
    let deadline = Instant::now() + Duration::from_secs(20);
    while common::get_blocking(&addr, "/v2/health/ready").status != 200 {
        assert!(Instant::now() < deadline, "never ready");
        std::thread::sleep(Duration::from_millis(20));
    }
    for _ in 0..5 {
        let r = post(&addr, "/v2/models/echo/infer", &request(&[-1.0], json!({})));
        assert_eq!(r.status, 500, "{:?}", r.body);
    }
    drop(child);
    let text = std::fs::read_to_string(&log).unwrap();
    // Once in the traceback, once in the request's failure.
    assert_eq!(
        text.matches("ValueError: negative one is not allowed")
            .count(),
        2,
        "{text}"
    );
    assert!(
        text.contains("models.py\", line"),
        "the user's frame: {text}"
    );
}

/// A nested structure a Python model returns (a dict as an output) travels as JSON text in a
/// BYTES tensor, never as Python's repr.
#[test]
fn a_nested_dict_output_is_json_text() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(&graph(dir.path(), &[("nested", "function: nested")]), &[]);
    let r = post(
        &server.addr,
        "/v2/models/nested/infer",
        &request(&[1.0, 2.0], json!({})),
    );
    assert_eq!(r.status, 200, "{:?}", r.body);
    let info = output(&r.json(), "info").clone();
    assert_eq!(info["datatype"], "BYTES", "{info}");
    let text = info["data"][0].as_str().unwrap().to_owned();
    let parsed: Value = serde_json::from_str(&text).unwrap_or_else(|e| panic!("{e}: {text}"));
    assert_eq!(parsed, json!({"rows": 1, "tags": ["a", "b"]}));
}

const TOKEN: &str = "py-token";

/// An admin action: its reply.
fn admin(addr: &str, path: &str, body: Value) -> common::Reply {
    common::block_on(common::request(
        addr,
        "POST",
        path,
        &[("authorization", format!("Bearer {TOKEN}"))],
        body.to_string().into_bytes(),
    ))
    .unwrap()
}

/// Triton's load of `name` version 1: an ONNX file, or `models.py`'s class `Echo`.
fn load_body(onnx: Option<&[u8]>) -> Value {
    match onnx {
        Some(bytes) => json!({"parameters": {"file:1/model.onnx": common::base64_of(bytes)}}),
        None => {
            let code = std::fs::read(root().join("tests/python/models/models.py")).unwrap();
            let config = json!({
                "backend": "python",
                "parameters": {
                    "path": {"string_value": "models.py"},
                    "class_name": {"string_value": "Echo"},
                },
            });
            json!({"parameters": {
                "config": config.to_string(),
                "file:1/models.py": common::base64_of(&code),
            }})
        }
    }
}

/// The pid of the worker of Python model `model` that answers one request.
fn pid_of(addr: &str, model: &str) -> u64 {
    let r = post(
        addr,
        &format!("/v2/models/{model}/infer"),
        &request(&[1.0], json!({})),
    );
    assert_eq!(r.status, 200, "{model}: {}", r.error());
    output(&r.json(), "pid")["data"][0].as_u64().unwrap()
}

/// Issue 24 (3): a change of the model repository rebuilds only what changed: Python models
/// whose spec and files did not change keep their workers (the same processes) across a
/// deploy of another model, a refused deploy and an unload; a model loaded again with new
/// files starts new ones.
#[test]
fn repository_changes_keep_the_workers_of_unchanged_python_models() {
    let dir = tempfile::tempdir().unwrap();
    let g = graph(dir.path(), &[("echo", ECHO)]);
    let server = Server::start(&g, &["--admin-token", TOKEN]);
    let addr = server.addr.as_str();
    let onnx = std::fs::read(root().join("models/iris_lr.onnx")).unwrap();
    let echo = pid_of(addr, "echo");

    let r = admin(addr, "/v2/repository/models/deployed/load", load_body(None));
    assert_eq!(r.status, 200, "{}", r.error());
    let deployed = pid_of(addr, "deployed");
    assert_eq!(pid_of(addr, "echo"), echo, "a deploy of another model");

    let r = admin(
        addr,
        "/v2/repository/models/flower/load",
        load_body(Some(&onnx)),
    );
    assert_eq!(r.status, 200, "{}", r.error());
    assert_eq!(pid_of(addr, "echo"), echo, "a deploy of an ONNX model");
    assert_eq!(
        pid_of(addr, "deployed"),
        deployed,
        "a deploy of an ONNX model"
    );

    let r = admin(
        addr,
        "/v2/repository/models/broken/load",
        load_body(Some(b"not a model")),
    );
    assert_eq!(r.status, 400, "{}", r.error());
    assert_eq!(pid_of(addr, "echo"), echo, "a refused deploy");
    assert_eq!(pid_of(addr, "deployed"), deployed, "a refused deploy");

    let r = admin(addr, "/v2/repository/models/flower/unload", json!({}));
    assert_eq!(r.status, 200, "{}", r.error());
    assert_eq!(pid_of(addr, "echo"), echo, "an unload");
    assert_eq!(pid_of(addr, "deployed"), deployed, "an unload");
    assert!(alive(echo) && alive(deployed));

    // Loaded again (new files, a new folder): new workers, and the old ones end.
    let r = admin(addr, "/v2/repository/models/deployed/load", load_body(None));
    assert_eq!(r.status, 200, "{}", r.error());
    assert_ne!(pid_of(addr, "deployed"), deployed, "a new version of it");
    assert_eq!(pid_of(addr, "echo"), echo);
    let deadline = Instant::now() + Duration::from_secs(10);
    while alive(deployed) {
        assert!(
            Instant::now() < deadline,
            "the replaced worker is still running"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Issue 24 (18): Python models load in parallel (two 4 s loads take about 4 s, not 8), and
/// meanwhile readiness and the log say which models are still loading, and for how long.
#[test]
fn python_models_load_in_parallel_and_say_what_is_loading() {
    let dir = tempfile::tempdir().unwrap();
    let slow = "class_name: SlowLoad, class_args: {seconds: 4}";
    let g = graph(dir.path(), &[("slow-a", slow), ("slow-b", slow)]);
    // A free port, to ask readiness before the server says where it listens (it says so
    // once its models have loaded).
    let addr = {
        let probe = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        probe.local_addr().unwrap().to_string()
    };
    let started = Instant::now();
    let mut child = bin()
        .args(["serve", &g, "--listen", &addr])
        .env("RUST_LOG", "info")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let log = child.stderr.take().unwrap();
    let log = std::thread::spawn(move || {
        let mut text = String::new();
        std::io::Read::read_to_string(&mut std::io::BufReader::new(log), &mut text).unwrap();
        text
    });
    // Bound before loading: readiness answers, and names the models it waits for.
    let mut reasons = Vec::new();
    let ready_after = loop {
        match common::block_on(common::get(&addr, "/v2/health/ready")) {
            Ok(r) if r.status == 200 => break started.elapsed(),
            Ok(r) => reasons.push(r.error()),
            // Not listening yet.
            Err(_) => {}
        }
        assert!(started.elapsed() < Duration::from_secs(30), "{reasons:?}");
        std::thread::sleep(Duration::from_millis(200));
    };
    let _ = child.kill();
    let _ = child.wait();
    let log = log.join().unwrap();
    assert!(
        ready_after < Duration::from_millis(7500),
        "ready after {ready_after:?}: the loads ran one after the other"
    );
    let named = reasons
        .iter()
        .find(|r| r.contains("`slow-a` (") && r.contains("`slow-b` ("))
        .unwrap_or_else(|| panic!("{reasons:?}"));
    assert!(
        named.starts_with("not ready: models are loading: `slow-"),
        "{named}"
    );
    assert!(named.contains(" s)"), "{named}");
    assert!(
        log.contains("still loading: `slow-") && log.contains("`slow-b` ("),
        "{log}"
    );
}
