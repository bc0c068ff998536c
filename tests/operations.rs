//! Running servegraph in production (issue 6), through the real binary: metrics, reload,
//! admin endpoints and limits.

mod common;

use common::*;

/// The value of the sample of `metric` whose labels include every one of `labels`.
fn sample(text: &str, metric: &str, labels: &[(&str, &str)]) -> Option<f64> {
    text.lines().find_map(|line| {
        let rest = line.strip_prefix(metric)?;
        let (set, value) = match rest.strip_prefix('{') {
            Some(r) => r.split_once("} ")?,
            None => ("", rest.strip_prefix(' ')?),
        };
        let pairs: Vec<&str> = set.split(',').collect();
        labels
            .iter()
            .all(|(k, v)| pairs.contains(&format!("{k}=\"{v}\"").as_str()))
            .then(|| value.trim().parse().ok())?
    })
}

#[test]
fn metrics_cover_requests_steps_routes_and_models() {
    let s = Server::start("graphs/iris.yaml", &[]);
    let n = 20;
    for i in 0..n {
        let r = post(
            &s.addr,
            "/v2/models/iris/infer",
            &iris_request(&format!("m{i}")),
        );
        assert_eq!(r.status, 200);
    }
    assert_eq!(post(&s.addr, "/v2/models/iris/infer", "{").status, 400);
    let m = get_blocking(&s.addr, "/metrics");
    assert_eq!(m.status, 200);
    let text = String::from_utf8_lossy(&m.body).into_owned();
    let http = [("graph", "iris"), ("source", "http")];
    let get = |metric: &str, labels: &[(&str, &str)]| {
        sample(&text, metric, labels).unwrap_or_else(|| panic!("no {metric} {labels:?}\n{text}"))
    };
    let code = |c: &'static str| [("graph", "iris"), ("source", "http"), ("code", c)];
    assert_eq!(get("servegraph_requests_total", &code("200")), n as f64);
    assert_eq!(get("servegraph_requests_total", &code("400")), 1.0);
    assert_eq!(
        get("servegraph_request_duration_seconds_count", &http),
        n as f64 + 1.0
    );
    assert_eq!(get("servegraph_requests_in_flight", &http), 0.0);
    // The engine's own share: only requests that ran.
    assert_eq!(
        get("servegraph_engine_overhead_seconds_count", &http),
        n as f64
    );
    let overhead = get("servegraph_engine_overhead_seconds_sum", &http);
    let total = get("servegraph_request_duration_seconds_sum", &http);
    assert!(overhead > 0.0 && overhead < total, "{overhead} of {total}");
    assert_eq!(
        get(
            "servegraph_step_duration_seconds_count",
            &[("graph", "iris"), ("step", "iris")]
        ),
        n as f64
    );
    let mut routed = 0.0;
    let mut runs = 0.0;
    for route in ["iris-lr", "iris-rf"] {
        routed += sample(
            &text,
            "servegraph_route_duration_seconds_count",
            &[("router", "iris"), ("route", route)],
        )
        .unwrap_or(0.0);
        let model = [("model", route)];
        runs += sample(&text, "servegraph_model_batch_size_count", &model).unwrap_or(0.0);
        assert!(get("servegraph_model_load_seconds", &model) > 0.0);
    }
    assert_eq!(routed, n as f64);
    assert!(runs >= 1.0 && runs <= n as f64, "{runs}");
    assert_eq!(text.lines().last(), Some("# EOF"));
}

/// POSTs with headers.
fn post_with(addr: &str, path: &str, headers: &[(&str, String)], body: &str) -> Reply {
    block_on(request(
        addr,
        "POST",
        path,
        headers,
        body.as_bytes().to_vec(),
    ))
    .expect("POST")
}

/// graphs/iris.yaml in `dir` (model paths made absolute), with the router's `weights`.
fn iris_with_weights(dir: &std::path::Path, weights: &str) -> std::path::PathBuf {
    let text = std::fs::read_to_string(root().join("graphs/iris.yaml"))
        .unwrap()
        .replace("../models/", &format!("{}/models/", root().display()))
        .replace(
            "weights: {iris-lr: 50, iris-rf: 50}",
            &format!("weights: {weights}"),
        );
    let path = dir.join("iris.yaml");
    std::fs::write(&path, text).unwrap();
    path
}

#[test]
fn reload_under_load_fails_no_request() {
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
    use std::sync::{Arc, Mutex};
    let dir = tempfile::tempdir().unwrap();
    let graph = iris_with_weights(dir.path(), "{iris-lr: 1}");
    let s = Server::start(graph.to_str().unwrap(), &["--admin-token", "s3cret"]);
    let auth = |t: &str| vec![("authorization", format!("Bearer {t}"))];
    let load_time = |s: &Server| {
        let m = get_blocking(&s.addr, "/metrics");
        sample(
            &String::from_utf8_lossy(&m.body),
            "servegraph_model_load_seconds",
            &[("model", "iris-lr")],
        )
        .unwrap()
    };
    let loaded = load_time(&s);

    // Load: closed-loop clients for the whole test; every answer must be a 200.
    let stop = Arc::new(AtomicBool::new(false));
    let served = Arc::new(AtomicUsize::new(0));
    let routes = Arc::new(Mutex::new(Vec::<String>::new()));
    let clients: Vec<_> = (0..4)
        .map(|c| {
            let (addr, stop, served, routes) = (
                s.addr.clone(),
                Arc::clone(&stop),
                Arc::clone(&served),
                Arc::clone(&routes),
            );
            std::thread::spawn(move || {
                let mut i = 0;
                while !stop.load(Ordering::Relaxed) {
                    let r = post(
                        &addr,
                        "/v2/models/iris/infer",
                        &iris_request(&format!("{c}-{i}")),
                    );
                    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
                    let route = r.json()["parameters"]["route"].as_str().unwrap().to_owned();
                    routes.lock().unwrap().push(route);
                    served.fetch_add(1, Ordering::Relaxed);
                    i += 1;
                }
            })
        })
        .collect();
    let last_route = || routes.lock().unwrap().last().cloned();
    let wait_for_route = |want: &str| {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
        loop {
            routes.lock().unwrap().clear();
            std::thread::sleep(std::time::Duration::from_millis(100));
            if last_route().as_deref() == Some(want) {
                return;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "never routed to {want}"
            );
        }
    };
    wait_for_route("iris-lr");

    // Without the token, or with a wrong one: refused.
    assert_eq!(post_with(&s.addr, "/admin/reload", &[], "").status, 401);
    assert_eq!(
        post_with(&s.addr, "/admin/reload", &auth("nope"), "").status,
        401
    );

    // A valid change: the new graph serves; the unchanged model is not loaded again.
    iris_with_weights(dir.path(), "{iris-rf: 1}");
    let r = post_with(&s.addr, "/admin/reload", &auth("s3cret"), "");
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    assert_eq!(r.json()["reloaded"], true);
    wait_for_route("iris-rf");
    assert_eq!(load_time(&s), loaded, "iris-lr was reused, not reloaded");

    // An invalid file: 422 with the errors, and the old graph keeps serving.
    std::fs::write(
        &graph,
        "name: iris\ngraph:\n  kind: router\n  routes: {a: {kind: nope}}\n",
    )
    .unwrap();
    let r = post_with(&s.addr, "/admin/reload", &auth("s3cret"), "");
    assert_eq!(r.status, 422);
    let error = r.json()["error"].as_str().unwrap().to_owned();
    assert!(
        error.contains("iris.yaml:4:") && error.contains("nope"),
        "{error}"
    );
    wait_for_route("iris-rf");

    // SIGHUP reloads too.
    iris_with_weights(dir.path(), "{iris-lr: 1}");
    s.signal("HUP");
    wait_for_route("iris-lr");

    stop.store(true, Ordering::Relaxed);
    for c in clients {
        c.join().expect("every request answered 200");
    }
    assert!(served.load(Ordering::Relaxed) > 100);
}

#[test]
fn admin_endpoints_are_off_without_a_token() {
    let s = Server::start("graphs/iris.yaml", &[]);
    let r = post_with(
        &s.addr,
        "/admin/reload",
        &[("authorization", "Bearer x".to_owned())],
        "",
    );
    assert_eq!(r.status, 404);
}

/// An OTLP/HTTP (JSON) collector on a free port: the bodies posted to `/v1/traces`.
fn collector() -> (
    String,
    std::sync::Arc<std::sync::Mutex<Vec<serde_json::Value>>>,
) {
    use std::sync::{Arc, Mutex};
    let received: Arc<Mutex<Vec<serde_json::Value>>> = Arc::default();
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let sink = Arc::clone(&received);
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async move {
            let app = axum::Router::new().route(
                "/v1/traces",
                axum::routing::post(move |body: axum::body::Bytes| {
                    let sink = Arc::clone(&sink);
                    async move {
                        let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
                        sink.lock().unwrap().push(v);
                        "{}"
                    }
                }),
            );
            let listener = tokio::net::TcpListener::from_std(listener).unwrap();
            axum::serve(listener, app).await.unwrap();
        });
    });
    (addr, received)
}

#[test]
fn spans_reach_the_collector_with_the_callers_trace() {
    let (collector, received) = collector();
    let dir = tempfile::tempdir().unwrap();
    let graph = iris_with_weights(dir.path(), "{iris-lr: 1}");
    let mut text = std::fs::read_to_string(&graph).unwrap();
    text.push_str(&format!(
        "telemetry: {{otlp_endpoint: \"http://{collector}\"}}\n"
    ));
    std::fs::write(&graph, text).unwrap();
    let mut s = Server::start(graph.to_str().unwrap(), &[]);
    let trace = "4bf92f3577b34da6a3ce929d0e0e4736";
    let parent = "00f067aa0ba902b7";
    let r = block_on(request(
        &s.addr,
        "POST",
        "/v2/models/iris/infer",
        &[("traceparent", format!("00-{trace}-{parent}-01"))],
        iris_request("traced").into_bytes(),
    ))
    .unwrap();
    assert_eq!(r.status, 200);
    assert_eq!(post(&s.addr, "/v2/models/iris/infer", "{").status, 400);
    // Shutdown flushes the spans.
    assert!(s.terminate().success());
    let bodies = received.lock().unwrap().clone();
    let mut spans = Vec::new();
    for body in &bodies {
        for rs in body["resourceSpans"].as_array().unwrap() {
            let service = rs["resource"]["attributes"]
                .as_array()
                .unwrap()
                .iter()
                .find(|a| a["key"] == "service.name")
                .map(|a| a["value"]["stringValue"].clone());
            assert_eq!(service, Some("servegraph-iris".into()));
            for ss in rs["scopeSpans"].as_array().unwrap() {
                spans.extend(ss["spans"].as_array().unwrap().iter().cloned());
            }
        }
    }
    let request_span = spans
        .iter()
        .find(|s| s["traceId"] == trace && s["parentSpanId"] == parent)
        .unwrap_or_else(|| panic!("no request span in the caller's trace: {spans:#?}"));
    assert_eq!(request_span["name"], "infer iris");
    let step = spans
        .iter()
        .find(|s| s["parentSpanId"] == request_span["spanId"])
        .unwrap_or_else(|| panic!("no step span under the request: {spans:#?}"));
    assert_eq!(step["name"], "iris");
    assert_eq!(step["traceId"], trace);
    // The malformed request has a span of its own, in a new trace, marked as an error.
    let failed = spans
        .iter()
        .find(|s| s["traceId"] != trace)
        .unwrap_or_else(|| panic!("no span for the second request: {spans:#?}"));
    assert_eq!(failed["status"]["code"], 2, "{failed:#}");
}

/// Triton's trace extension over the exported spans: a model's level, count and rate (and
/// the global ones) decide which requests get a span; `null` gives a model the global
/// setting back.
#[test]
fn trace_settings_choose_which_requests_are_traced() {
    let (collector, received) = collector();
    let dir = tempfile::tempdir().unwrap();
    let graph = iris_with_weights(dir.path(), "{iris-lr: 1}");
    let mut text = std::fs::read_to_string(&graph).unwrap();
    text.push_str(&format!(
        "telemetry: {{otlp_endpoint: \"http://{collector}\"}}\n"
    ));
    std::fs::write(&graph, text).unwrap();
    let mut s = Server::start(graph.to_str().unwrap(), &[]);
    let setting = |path: &str, body: Option<serde_json::Value>| {
        let r = match body {
            None => get_blocking(&s.addr, path),
            Some(b) => post(&s.addr, path, &b.to_string()),
        };
        assert_eq!(r.status, 200, "{path}: {:?}", r.body);
        r.json()
    };
    assert_eq!(
        setting("/v2/trace/setting", None),
        serde_json::json!({"trace_level": ["TIMESTAMPS"], "trace_rate": "1",
                           "trace_count": "-1", "trace_mode": "opentelemetry"})
    );
    let lr = "/v2/models/iris-lr/trace/setting";
    let rf = "/v2/models/iris-rf/trace/setting";
    assert_eq!(
        setting(lr, Some(serde_json::json!({"trace_level": ["OFF"]})))["trace_level"],
        serde_json::json!(["OFF"])
    );
    assert_eq!(
        setting(rf, Some(serde_json::json!({"trace_count": "2"})))["trace_count"],
        "2"
    );
    // Each batch of requests in a trace of its own: its request spans are counted below.
    let send = |model: &str, trace: &str, n: usize| {
        for _ in 0..n {
            let r = block_on(request(
                &s.addr,
                "POST",
                &format!("/v2/models/{model}/infer"),
                &[("traceparent", format!("00-{trace}-00f067aa0ba902b7-01"))],
                iris_request("t").into_bytes(),
            ))
            .unwrap();
            assert_eq!(r.status, 200);
        }
    };
    let (off, counted, cleared, rated) = (
        "0000000000000000000000000000000a",
        "0000000000000000000000000000000b",
        "0000000000000000000000000000000c",
        "0000000000000000000000000000000d",
    );
    send("iris-lr", off, 3);
    send("iris-rf", counted, 4);
    assert_eq!(setting(rf, None)["trace_count"], "0");
    let back = setting(lr, Some(serde_json::json!({"trace_level": null})));
    assert_eq!(back["trace_level"], serde_json::json!(["TIMESTAMPS"]));
    send("iris-lr", cleared, 1);
    assert_eq!(
        setting(
            "/v2/trace/setting",
            Some(serde_json::json!({"trace_rate": "2"}))
        )["trace_rate"],
        "2"
    );
    send("iris", rated, 4);
    let r = post(&s.addr, lr, r#"{"trace_level": ["TENSORS"]}"#);
    assert_eq!(r.status, 400, "{:?}", r.body);
    assert_eq!(
        post(&s.addr, "/v2/models/nope/trace/setting", "{}").status,
        404
    );
    assert!(s.terminate().success());
    let bodies = received.lock().unwrap().clone();
    let mut requests: std::collections::HashMap<String, usize> = Default::default();
    for body in &bodies {
        for rs in body["resourceSpans"].as_array().unwrap() {
            for ss in rs["scopeSpans"].as_array().unwrap() {
                for span in ss["spans"].as_array().unwrap() {
                    if span["parentSpanId"] == "00f067aa0ba902b7" {
                        let trace = span["traceId"].as_str().unwrap().to_owned();
                        *requests.entry(trace).or_default() += 1;
                    }
                }
            }
        }
    }
    let traced = |t: &str| requests.get(t).copied().unwrap_or(0);
    assert_eq!(
        [traced(off), traced(counted), traced(cleared), traced(rated)],
        [0, 2, 1, 2],
        "{requests:?}"
    );
}

#[test]
fn tensor_element_limit_is_a_422() {
    let dir = tempfile::tempdir().unwrap();
    let graph = iris_with_weights(dir.path(), "{iris-lr: 1}");
    let text = std::fs::read_to_string(&graph).unwrap();
    std::fs::write(&graph, format!("max_tensor_elements: 8\n{text}")).unwrap();
    let s = Server::start(graph.to_str().unwrap(), &[]);
    let row = "[5.1, 3.5, 1.4, 0.2]";
    let body = |rows: usize| {
        format!(
            r#"{{"inputs":[{{"name":"input","shape":[{rows},4],"datatype":"FP32","data":[{}]}}]}}"#,
            vec![row; rows].join(",")
        )
    };
    assert_eq!(post(&s.addr, "/v2/models/iris/infer", &body(2)).status, 200);
    let r = post(&s.addr, "/v2/models/iris/infer", &body(3));
    assert_eq!(r.status, 422);
    assert_eq!(
        r.error(),
        "input `input` has 12 elements (shape [3, 4]), over the graph's max_tensor_elements of 8"
    );
}

#[test]
fn model_paths_stay_under_the_allowed_folders() {
    let dir = tempfile::tempdir().unwrap();
    let graphs = dir.path().join("graphs");
    std::fs::create_dir(&graphs).unwrap();
    std::fs::copy(
        root().join("models/iris_lr.onnx"),
        dir.path().join("lr.onnx"),
    )
    .unwrap();
    let graph = graphs.join("g.yaml");
    std::fs::write(
        &graph,
        "name: g\ngraph: {kind: router, routes: {m: {kind: model, class: onnx, model_path: ../lr.onnx}}}\n",
    )
    .unwrap();
    // `..` out of the graph's folder, with only the project as a root: refused.
    let out = bin()
        .args(["validate", "--short"])
        .arg(&graph)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        text.contains(
            "g.yaml:2:74: step `m`: model file `../lr.onnx` is not allowed: it resolves to"
        ) && text.contains("outside the folders files may come from"),
        "{text}"
    );
    // Without roots, the folder above the graph's is allowed, and nothing further up.
    let out = bin()
        .env_remove("SERVEGRAPH_MODEL_ROOTS")
        .args(["validate", "--short"])
        .arg(&graph)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let deeper = graphs.join("deeper");
    std::fs::create_dir(&deeper).unwrap();
    let far = deeper.join("g.yaml");
    std::fs::write(
        &far,
        "name: g\ngraph: {kind: router, routes: {m: {kind: model, class: onnx, model_path: ../../lr.onnx}}}\n",
    )
    .unwrap();
    let out = bin()
        .env_remove("SERVEGRAPH_MODEL_ROOTS")
        .args(["validate", "--short"])
        .arg(&far)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && text.contains("the folder above it"),
        "{text}"
    );
    // Allowed once its folder is a root.
    let out = bin()
        .args(["validate", "--model-root"])
        .arg(dir.path())
        .arg(&graph)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn https_with_a_certificate_and_key() {
    let dir = tempfile::tempdir().unwrap();
    let (mut child, line, cert_pem) = tls_server("graphs/iris.yaml", dir.path(), &[]);
    let addr = line
        .trim()
        .strip_prefix("servegraph listening on https://")
        .unwrap_or_else(|| panic!("{line:?}"))
        .to_owned();
    // A real TLS client that trusts only this certificate: Python's ssl.
    let script = r#"
import json, ssl, sys, time, urllib.request
ctx = ssl.create_default_context(cafile=sys.argv[1])
base = "https://" + sys.argv[2]
for _ in range(600):
    try:
        urllib.request.urlopen(base + "/v2/health/ready", context=ctx)
        break
    except Exception:
        time.sleep(0.05)
body = json.dumps({"inputs": [{"name": "input", "shape": [1, 4], "datatype": "FP32", "data": [5.1, 3.5, 1.4, 0.2]}]}).encode()
req = urllib.request.Request(base + "/v2/models/iris-lr/infer", data=body, headers={"content-type": "application/json"})
print(json.load(urllib.request.urlopen(req, context=ctx))["outputs"][0]["name"])
"#;
    let out = std::process::Command::new(test_python())
        .args(["-c", script])
        .arg(&cert_pem)
        .arg(&addr)
        .output()
        .unwrap();
    let _ = child.kill();
    let _ = child.wait();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let names = String::from_utf8_lossy(&out.stdout);
    assert!(
        names.trim() == "label" || names.trim() == "probabilities",
        "{names}"
    );
    // Plain HTTP on the TLS port gets no answer.
    assert!(block_on(get(&addr, "/v2/health/live")).is_err());
}

/// graphs/iris.yaml routing to iris-lr, whose requests each wait `wait_us` for their batch
/// to fill (so they stay in flight that long), with `top` added at the top level.
fn slow_iris(dir: &std::path::Path, wait_us: u64, top: &str) -> std::path::PathBuf {
    let graph = iris_with_weights(dir, "{iris-lr: 1}");
    let text = std::fs::read_to_string(&graph)
        .unwrap()
        .replace("max_wait_us: 0", &format!("max_wait_us: {wait_us}"));
    std::fs::write(&graph, format!("{top}{text}")).unwrap();
    graph
}

#[test]
fn sigterm_under_load_answers_every_request_in_flight() {
    let dir = tempfile::tempdir().unwrap();
    // Each request waits ~300 ms for its batch to fill: all are in flight at the signal.
    let graph = slow_iris(dir.path(), 300_000, "");
    let mut s = Server::start(graph.to_str().unwrap(), &["--shutdown-timeout", "10"]);
    let clients: Vec<_> = (0..8)
        .map(|i| {
            let addr = s.addr.clone();
            std::thread::spawn(move || {
                let r = post(
                    &addr,
                    "/v2/models/iris-lr/infer",
                    &iris_request(&format!("t{i}")),
                );
                (r.status, r.json()["id"].clone())
            })
        })
        .collect();
    std::thread::sleep(std::time::Duration::from_millis(100));
    s.signal("TERM");
    for (i, c) in clients.into_iter().enumerate() {
        let (status, id) = c.join().expect("answered");
        assert_eq!((status, id), (200, serde_json::json!(format!("t{i}"))));
    }
    let status = s.terminate_wait();
    assert!(status.success(), "{status:?}");
}

#[test]
fn overload_is_answered_at_once_with_429() {
    let dir = tempfile::tempdir().unwrap();
    let graph = slow_iris(dir.path(), 500_000, "max_in_flight: 2\n");
    let s = Server::start(graph.to_str().unwrap(), &[]);
    let clients: Vec<_> = (0..6)
        .map(|i| {
            let addr = s.addr.clone();
            std::thread::spawn(move || {
                // The first two are admitted and wait for their batch; the rest arrive after.
                std::thread::sleep(std::time::Duration::from_millis(if i < 2 {
                    0
                } else {
                    150
                }));
                let t0 = std::time::Instant::now();
                let r = post(&addr, "/v2/models/iris-lr/infer", &iris_request("o"));
                (
                    i,
                    r.status,
                    r.headers.get("retry-after").cloned(),
                    t0.elapsed(),
                )
            })
        })
        .collect();
    for c in clients {
        let (i, status, retry, took) = c.join().unwrap();
        if i < 2 {
            assert_eq!(status, 200);
        } else {
            assert_eq!(status, 429, "request {i}");
            assert_eq!(retry.unwrap(), "1");
            assert!(took < std::time::Duration::from_millis(200), "{took:?}");
        }
    }
}

/// Requests gathered for a batch that has not started count against the model's
/// `queue_size`, as Triton's `max_queue_size` counts them: past it, 503 at once, not one
/// more request joined to the pending batch.
#[test]
fn requests_waiting_for_a_batch_count_against_queue_size() {
    let dir = tempfile::tempdir().unwrap();
    let graph = slow_iris(dir.path(), 500_000, "");
    let text = std::fs::read_to_string(&graph)
        .unwrap()
        .replace("      batch:", "      queue_size: 2\n      batch:");
    std::fs::write(&graph, text).unwrap();
    let s = Server::start(graph.to_str().unwrap(), &[]);
    let clients: Vec<_> = (0..5)
        .map(|i| {
            let addr = s.addr.clone();
            std::thread::spawn(move || {
                // The first two wait for their batch to fill; the rest arrive meanwhile.
                std::thread::sleep(std::time::Duration::from_millis(if i < 2 {
                    0
                } else {
                    150
                }));
                let t0 = std::time::Instant::now();
                let r = post(&addr, "/v2/models/iris-lr/infer", &iris_request("q"));
                (i, r.status, r.body, t0.elapsed())
            })
        })
        .collect();
    for c in clients {
        let (i, status, body, took) = c.join().unwrap();
        let body: serde_json::Value = serde_json::from_slice(&body).unwrap();
        if i < 2 {
            assert_eq!(status, 200, "request {i}: {body}");
        } else {
            assert_eq!(status, 503, "request {i}: {body}");
            assert_eq!(
                body["error"],
                "step `iris-lr`: model `iris-lr` is busy: 2 requests are already waiting for it (its queue_size)"
            );
            assert!(took < std::time::Duration::from_millis(200), "{took:?}");
        }
    }
    // Their places are given back when their run starts: the model takes two more.
    for _ in 0..2 {
        let r = post(&s.addr, "/v2/models/iris-lr/infer", &iris_request("again"));
        assert_eq!(r.status, 200, "{:?}", r.body);
    }
}

/// A wrong admin token is told apart from a missing one.
#[test]
fn a_wrong_admin_token_is_said_to_be_wrong() {
    let s = Server::start("graphs/iris.yaml", &["--admin-token", "s3cret"]);
    let r = post_with(&s.addr, "/admin/reload", &[], "");
    assert_eq!(r.status, 401);
    assert!(
        r.error().contains("need `Authorization: Bearer <token>`"),
        "{}",
        r.error()
    );
    let r = post_with(
        &s.addr,
        "/admin/reload",
        &[("authorization", "Bearer wrong".to_owned())],
        "",
    );
    assert_eq!(r.status, 401);
    assert!(
        r.error()
            .contains("carries a token that is not the admin token"),
        "{}",
        r.error()
    );
}

/// Prometheus HELP lines are sentences with one full stop (prometheus-client adds it).
#[test]
fn metric_help_ends_with_one_full_stop() {
    let s = Server::start("graphs/iris.yaml", &[]);
    assert_eq!(
        post(&s.addr, "/v2/models/iris/infer", &iris_request("m")).status,
        200
    );
    let text = String::from_utf8_lossy(&get_blocking(&s.addr, "/metrics").body).into_owned();
    let help: Vec<&str> = text.lines().filter(|l| l.starts_with("# HELP")).collect();
    assert!(help.len() > 5, "{text}");
    for line in help {
        assert!(line.ends_with('.') && !line.ends_with(".."), "{line}");
    }
}
