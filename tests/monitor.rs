//! `servegraph monitor` through the real binary: reference profiles, the statistics against
//! scipy's, drift detected on a generated stream (issue 26's bar), performance joined by id,
//! errors with their place, and the in-process monitor of `serve` at `GET /v2/monitor`.

mod common;

use std::fmt::Write as _;
use std::path::Path;

#[allow(unused_imports)]
use common::kafka;
use common::*;
use serde_json::Value;

/// `graphs/iris.yaml` written to `dir` as `g.yaml` (its models from the repository), tracked
/// to `events.jsonl` there (every event, written at once), with `monitor` (the lines under
/// `monitor:`) appended.
fn tracked_iris(dir: &std::path::Path, monitor: &str) -> std::path::PathBuf {
    let text = std::fs::read_to_string(root().join("graphs/iris.yaml"))
        .unwrap()
        .replace("../models/", &format!("{}/models/", root().display()));
    let graph = dir.join("g.yaml");
    std::fs::write(
        &graph,
        format!("{text}tracking: {{sink: \"file://events.jsonl\", batch: 1, flush_ms: 10}}\nmonitor:\n{monitor}"),
    )
    .unwrap();
    graph
}

/// xorshift64* and Box–Muller: a fixed-seed stream.
struct Gen(u64);

impl Gen {
    fn uniform(&mut self) -> f64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        ((self.0.wrapping_mul(0x2545_f491_4f6c_dd1d) >> 11) as f64 + 0.5) / (1u64 << 53) as f64
    }
    fn normal(&mut self) -> f64 {
        let (u, v) = (self.uniform(), self.uniform());
        (-2.0 * u.ln()).sqrt() * (2.0 * std::f64::consts::PI * v).cos()
    }
}

const MONITOR: &str = "name: drift
monitor:
  reference: {profile: reference.json}
  features:
    - {tensor: input, index: 0, name: f0, type: numerical}
    - {tensor: input, index: 1, name: f1, type: numerical}
    - {tensor: input, index: 2, name: f2, type: numerical}
    - {tensor: input, index: 3, name: f3, type: numerical}
    - {field: /labels/region, name: region, type: categorical}
  window: {events: 1000, min_events: 200, max_age: 1h}
  report: file://reports.jsonl
";

fn monitor(args: &[&str]) -> std::process::Output {
    let out = bin().arg("monitor").args(args).output().unwrap();
    assert!(
        out.status.success(),
        "{args:?}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

fn lines(path: &Path) -> Vec<Value> {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

/// Issue 26, item 9: 20,000 events, a 0.3σ shift of f0 after event 10,000: f0 is detected
/// within two windows of the shift, and at most 1% of feature-windows before it are flagged.
#[test]
fn a_small_shift_is_detected_within_two_windows_and_nothing_before() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    std::fs::write(d.join("monitor.yaml"), MONITOR).unwrap();
    let mut g = Gen(26);
    let regions = ["eu", "us", "apac"];
    // The reference dataset: 10,000 rows as CSV.
    let mut csv = String::from("f0,f1,f2,f3,region\n");
    for _ in 0..10_000 {
        let x: Vec<f64> = (0..4).map(|_| g.normal()).collect();
        let r = regions[(g.uniform() * 3.0) as usize];
        writeln!(csv, "{},{},{},{},{r}", x[0], x[1], x[2], x[3]).unwrap();
    }
    std::fs::write(d.join("reference.csv"), csv).unwrap();
    let d_str = |p: &str| d.join(p).to_str().unwrap().to_owned();
    let out = monitor(&[
        "profile",
        &d_str("monitor.yaml"),
        "--dataset",
        &d_str("reference.csv"),
        "--out",
        &d_str("reference.json"),
    ]);
    assert!(String::from_utf8_lossy(&out.stdout).contains("version 1 of 10000 rows"));
    let profile: Value =
        serde_json::from_slice(&std::fs::read(d.join("reference.json")).unwrap()).unwrap();
    assert_eq!(profile["columns"][0]["edges"].as_array().unwrap().len(), 21);
    assert_eq!(
        profile["columns"][0]["fractions"].as_array().unwrap().len(),
        22
    );
    assert_eq!(
        profile["columns"][4]["categories"]
            .as_array()
            .unwrap()
            .len(),
        3
    );

    // The stream: tracking events, f0 shifted by 0.3σ from event 10,000.
    let mut stream = String::new();
    for i in 0..20_000 {
        let mut x: Vec<f64> = (0..4).map(|_| g.normal()).collect();
        if i >= 10_000 {
            x[0] += 0.3;
        }
        let r = regions[(g.uniform() * 3.0) as usize];
        writeln!(
            stream,
            r#"{{"id":"r{i}","when":"2026-12-01T{:02}:{:02}:{:02}Z","graph":"drift","model":"drift","op":"infer","request":[{{"name":"input","datatype":"FP64","shape":[1,4],"data":[{},{},{},{}]}}],"resp":[],"microsec":5,"step_microsec":{{}},"labels":{{"region":"{r}"}}}}"#,
            i / 3600, (i / 60) % 60, i % 60, x[0], x[1], x[2], x[3]
        )
        .unwrap();
    }
    std::fs::write(d.join("events.jsonl"), stream).unwrap();
    monitor(&[
        "run",
        &d_str("monitor.yaml"),
        "--events",
        &d_str("events.jsonl"),
        "--state",
        &d_str("state.json"),
    ]);
    let reports = lines(&d.join("reports.jsonl"));
    assert_eq!(reports.len(), 20);
    let mut flagged_before = 0;
    let mut windows_before = 0;
    let mut first_detected = None;
    for r in &reports {
        let w = r["window"].as_u64().unwrap();
        assert_eq!(r["events"], 1000);
        for f in r["features"].as_array().unwrap() {
            let status = f["status"].as_i64().unwrap();
            assert!((0..=2).contains(&status), "{f}");
            if w < 10 {
                windows_before += 1;
                flagged_before += usize::from(status == 2);
            } else if f["name"] == "f0" && status == 2 && first_detected.is_none() {
                first_detected = Some(w);
            }
        }
    }
    assert_eq!(windows_before, 50);
    // At most 1% of the 50 feature-windows before the shift: none.
    assert_eq!(flagged_before, 0, "flagged before the shift");
    // Window 10 is the first after the shift: detected there or in the next one.
    assert!(
        first_detected.is_some_and(|w| w <= 11),
        "{first_detected:?}"
    );
    // After the shift, the unshifted features stay quiet (no spill-over).
    let after: Vec<i64> = reports[10..]
        .iter()
        .flat_map(|r| r["features"].as_array().unwrap().iter())
        .filter(|f| f["name"] != "f0")
        .map(|f| f["status"].as_i64().unwrap())
        .collect();
    assert!(after.iter().filter(|s| **s == 2).count() <= 1, "{after:?}");

    // The state, as `GET /v2/monitor` would list it.
    let state: Value =
        serde_json::from_slice(&std::fs::read(d.join("state.json")).unwrap()).unwrap();
    assert_eq!(state["graph"], "drift");
    assert_eq!(state["reference"]["events"], 10000);
    assert_eq!(state["window"]["events"], 1000);
    let f0 = &state["features"][0];
    assert_eq!(f0["name"], "f0");
    assert_eq!(f0["last"]["status"], 2);
    assert_eq!(f0["history"].as_array().unwrap().len(), 20);
    assert!(f0["last"]["stats"]["ks"].as_f64().unwrap() > 0.08);
    assert_eq!(state["features"][4]["type"], "categorical");
    assert!(
        state["features"][4]["last"]["stats"]["chi2_p"]
            .as_f64()
            .is_some()
    );
    assert!(state["dataset"]["share"].as_f64().unwrap() > 0.0);
}

/// Each statistic against scipy and numpy on fixed samples: K-S and its asymptotic p-value,
/// Wasserstein (and Evidently's norming), χ² on a contingency table, Jensen–Shannon (base 2),
/// and PSI, TVD, Hellinger from Evidently's and MLRun's formulas on the same bins.
#[test]
fn statistics_match_scipy_and_the_anchors_formulas() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let mut g = Gen(3);
    let write = |name: &str, values: &[String]| {
        std::fs::write(d.join(name), values.join("\n")).unwrap();
        d.join(name).to_str().unwrap().to_owned()
    };
    let reference: Vec<String> = (0..3000).map(|_| format!("{}", g.normal())).collect();
    let current: Vec<String> = (0..700)
        .map(|_| format!("{}", g.normal() * 1.2 + 0.2))
        .collect();
    let (r, c) = (write("r.txt", &reference), write("c.txt", &current));
    let cats = ["a", "b", "c", "d"];
    let rc: Vec<String> = (0..2000)
        .map(|_| cats[(g.uniform() * 4.0) as usize].to_owned())
        .collect();
    let cc: Vec<String> = (0..500)
        .map(|_| cats[((g.uniform().powf(1.3)) * 4.0) as usize].to_owned())
        .collect();
    let (rcp, ccp) = (write("rc.txt", &rc), write("cc.txt", &cc));
    let num = monitor(&["stats", "--reference", &r, "--current", &c]);
    let cat = monitor(&[
        "stats",
        "--reference",
        &rcp,
        "--current",
        &ccp,
        "--type",
        "categorical",
    ]);
    std::fs::write(d.join("num.json"), &num.stdout).unwrap();
    std::fs::write(d.join("cat.json"), &cat.stdout).unwrap();
    python_case("monitor_oracle.py", "stats", &[d.as_os_str()]);
}

/// Feedback events (`kind: feedback`) join predictions by `id`: realised accuracy and F1;
/// CBPE's estimate from the positive class's probability.
#[test]
fn feedback_joins_by_id_into_realised_performance_and_cbpe_estimates() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    std::fs::write(
        d.join("m.yaml"),
        "name: clf
monitor:
  reference: {events: 100}
  outputs: [{tensor: label, name: label, type: categorical}]
  window: {events: 1000, min_events: 10}
  performance:
    task: classification
    prediction: {tensor: label}
    probability: {tensor: p, index: 0}
    positive: \"1\"
",
    )
    .unwrap();
    let mut s = String::new();
    // 100 reference events, then 100 with feedback: predictions 1 with p 0.8, 0 with p 0.3;
    // labels right for 3 in 4.
    for i in 0..200 {
        let (label, p) = if i % 2 == 0 { (1, 0.8) } else { (0, 0.3) };
        writeln!(
            s,
            r#"{{"id":"e{i}","request":[{{"name":"x","shape":[1],"data":[1]}}],"resp":[{{"name":"label","shape":[1],"data":[{label}]}},{{"name":"p","shape":[1,1],"data":[{p}]}}]}}"#
        )
        .unwrap();
        if i >= 100 {
            let truth = if i % 4 < 3 { label } else { 1 - label };
            writeln!(s, r#"{{"kind":"feedback","id":"e{i}","label":{truth}}}"#).unwrap();
        }
    }
    writeln!(s, r#"{{"kind":"feedback","id":"unknown","label":1}}"#).unwrap();
    std::fs::write(d.join("e.jsonl"), s).unwrap();
    let p = |n: &str| d.join(n).to_str().unwrap().to_owned();
    monitor(&[
        "run",
        &p("m.yaml"),
        "--events",
        &p("e.jsonl"),
        "--state",
        &p("s.json"),
    ]);
    let state: Value = serde_json::from_slice(&std::fs::read(d.join("s.json")).unwrap()).unwrap();
    let perf = &state["performance"];
    assert_eq!(perf["task"], "classification");
    assert_eq!(perf["realised"]["n"], 100, "{perf}");
    assert_eq!(perf["realised"]["accuracy"], 0.75);
    // Positives: 50 predicted 1 (38 right: i%4 in {0,2} → right, 25+... ) computed exactly:
    let (mut tp, mut fp, mut fn_) = (0.0, 0.0, 0.0);
    for i in 100..200 {
        let pred = i32::from(i % 2 == 0);
        let truth = if i % 4 < 3 { pred } else { 1 - pred };
        match (pred, truth) {
            (1, 1) => tp += 1.0,
            (1, 0) => fp += 1.0,
            (0, 1) => fn_ += 1.0,
            _ => {}
        }
    }
    let f1 = tp / (tp + 0.5 * (fp + fn_));
    assert!((perf["realised"]["f1"].as_f64().unwrap() - f1).abs() < 1e-12);
    // CBPE: E[TP] = 50·0.8, E[FP] = 50·0.2, E[FN] = 50·0.3, E[TN] = 50·0.7.
    let est = &perf["estimated"];
    assert!(
        (est["accuracy"].as_f64().unwrap() - 0.75).abs() < 1e-9,
        "{est}"
    );
    assert!((est["f1"].as_f64().unwrap() - 40.0 / (40.0 + 0.5 * 25.0)).abs() < 1e-9);
    assert_eq!(perf["unmatched_feedback"], 1);
}

/// `validate` and `monitor run` name a bad monitor field with its line and column.
#[test]
fn monitor_errors_name_the_field_and_its_place() {
    let dir = tempfile::tempdir().unwrap();
    let text = std::fs::read_to_string(root().join("graphs/iris.yaml"))
        .unwrap()
        .replace("../models/", &format!("{}/models/", root().display()));
    let graph = dir.path().join("g.yaml");
    std::fs::write(
        &graph,
        format!(
            "{text}monitor:\n  reference: {{events: 100}}\n  features:\n    - {{tensor: input, index: 0, name: a, type: numerical}}\n  window: {{events: 100, min_events: 500}}\n"
        ),
    )
    .unwrap();
    let lines_before = text.lines().count();
    let out = bin()
        .args(["validate", "--short", "--offline", graph.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(&format!("g.yaml:{}:", lines_before + 5))
            && err.contains(
                "monitor.window.min_events: `min_events` (500) is more than `events` (100)"
            ),
        "{err}"
    );
    std::fs::write(
        &graph,
        format!("{text}monitor:\n  reference: {{events: 100}}\n  features:\n    - {{tensor: input, name: a, type: numeric}}\n"),
    )
    .unwrap();
    let out = bin()
        .args([
            "monitor",
            "run",
            graph.to_str().unwrap(),
            "--events",
            "/dev/null",
        ])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("numeric") && err.contains(&format!("{}", lines_before + 4)),
        "{err}"
    );
}

/// `serve` runs the monitor in-process on its tracking file: `GET /v2/monitor` lists it and
/// `/metrics` has the drift gauges once a window closes.
#[test]
fn serve_runs_the_monitor_in_process() {
    let dir = tempfile::tempdir().unwrap();
    let graph = tracked_iris(
        dir.path(),
        "  reference: {events: 20}\n  features:\n    - {tensor: input, index: 0, name: sepal_length, type: numerical}\n  outputs:\n    - {tensor: label, name: class, type: categorical}\n  window: {events: 20, min_events: 5}\n",
    );
    let s = Server::start(graph.to_str().unwrap(), &[]);
    let empty = get_blocking(&s.addr, "/v2/monitor").json();
    assert_eq!(empty["monitors"][0]["graph"], "iris");
    assert!(empty["monitors"][0]["reference"].is_null());
    // The expected rows are several per request: enough rows for the reference and a window.
    let mut closed = false;
    for i in 0..200 {
        assert_eq!(
            post(
                &s.addr,
                "/v2/models/iris-lr/infer",
                &iris_request(&format!("q{i}"))
            )
            .status,
            200
        );
        let state = get_blocking(&s.addr, "/v2/monitor").json();
        if state["monitors"][0]["features"][0]["last"].is_object() {
            closed = true;
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    assert!(closed, "no window closed");
    let state = get_blocking(&s.addr, "/v2/monitor").json();
    let m = &state["monitors"][0];
    assert_eq!(
        m["reference"]["events"].as_u64().map(|e| e >= 20),
        Some(true),
        "{m}"
    );
    assert_eq!(m["features"][1]["kind"], "output");
    assert!(m["features"][1]["reference"]["categories"].is_array());
    let metrics = get_blocking(&s.addr, "/metrics");
    let text = String::from_utf8_lossy(&metrics.body);
    assert!(
        text.contains("servegraph_drift_status{graph=\"iris\",feature=\"sepal_length\"}"),
        "{text}"
    );
    assert!(
        text.contains(
            "servegraph_drift_score{graph=\"iris\",feature=\"sepal_length\",stat=\"ks\"}"
        )
    );
    assert!(text.contains("servegraph_drift_window_end_timestamp_seconds{graph=\"iris\"}"));
}

/// `monitor run --kafka`: the tracking topic read as the monitor's own consumer group, the
/// reference frozen from its first events; a second run of the same group starts where the
/// first committed.
#[test]
fn a_kafka_topic_is_read_as_the_monitors_own_group() {
    let topic = kafka::unique("monitor-events");
    kafka::create_topics(&[(&topic, 1)]);
    let mut g = Gen(11);
    let records: Vec<kafka::Outgoing> = (0..3000)
        .map(|i| {
            let x = g.normal();
            (
                format!("r{i}"),
                format!(
                    r#"{{"id":"r{i}","when":"2026-12-01T00:00:{:02}Z","request":[{{"name":"input","shape":[1,1],"data":[{x}]}}],"resp":null}}"#,
                    i / 100
                ),
                Vec::new(),
            )
        })
        .collect();
    kafka::produce(&topic, &records);
    let dir = tempfile::tempdir().unwrap();
    let spec = dir.path().join("m.yaml");
    std::fs::write(
        &spec,
        "name: k\nmonitor:\n  reference: {events: 1000}\n  features: [{tensor: input, name: x, type: numerical}]\n  window: {events: 500, min_events: 100, max_age: 1h}\n",
    )
    .unwrap();
    let state = dir.path().join("s.json");
    let url = format!("{}/{topic}", kafka::broker());
    // Each window's report goes to a topic too.
    let reports = kafka::unique("monitor-reports");
    kafka::create_topics(&[(&reports, 1)]);
    let report_url = format!("kafka://{}/{reports}", kafka::broker());
    let run = || {
        monitor(&[
            "run",
            spec.to_str().unwrap(),
            "--kafka",
            &url,
            "--group",
            "monitor-test",
            "--idle",
            "3",
            "--state",
            state.to_str().unwrap(),
            "--report",
            &report_url,
        ])
    };
    let out = run();
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("3000 lines"),
        "{out:?}"
    );
    let s: Value = serde_json::from_slice(&std::fs::read(&state).unwrap()).unwrap();
    assert_eq!(s["reference"]["events"], 1000);
    let history = s["features"][0]["history"].as_array().unwrap();
    assert_eq!(history.len(), 4, "{s}");
    assert!(
        history
            .iter()
            .all(|h| h["events"] == 500 && h["status"].as_i64().unwrap() >= 0)
    );
    let sent = kafka::consume_until(&reports, std::time::Duration::from_secs(20), |r| {
        r.len() >= 4
    });
    let windows: Vec<Value> = sent
        .iter()
        .map(|r| serde_json::from_str(&r.payload).unwrap())
        .collect();
    assert_eq!(
        windows
            .iter()
            .map(|w| w["window"].clone())
            .collect::<Vec<_>>(),
        history
            .iter()
            .map(|h| h["window"].clone())
            .collect::<Vec<_>>(),
        "one report per window on the report topic"
    );
    // The group's offsets were committed: nothing is read again.
    let out = run();
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("0 lines"),
        "{out:?}"
    );
}

/// Feedback through the router's feedback API with a `label` becomes the tracking stream's
/// `op: feedback` event, which the in-process monitor joins by id into realised performance.
#[test]
fn feedback_labels_from_the_feedback_api_join_in_process() {
    let dir = tempfile::tempdir().unwrap();
    let graph = tracked_iris(
        dir.path(),
        "  reference: {events: 200}\n  features:\n    - {tensor: input, index: 0, name: sepal_length, type: numerical}\n  window: {events: 200, min_events: 50}\n  performance: {task: classification, prediction: {tensor: label}, positive: \"0\"}\n",
    );
    let s = Server::start(graph.to_str().unwrap(), &[]);
    let mut realised = serde_json::Value::Null;
    let mut state = serde_json::Value::Null;
    for i in 0..400 {
        let id = format!("q{i}");
        assert_eq!(
            post(&s.addr, "/v2/models/iris/infer", &iris_request(&id)).status,
            200
        );
        // A request has 10 rows (a window of 200 rows is 20 requests); the prediction joined
        // is the first row's, a setosa (class 0); every third label says otherwise.
        let label = if i % 3 == 0 { 2 } else { 0 };
        let fb = post(
            &s.addr,
            "/v2/models/iris/feedback",
            &format!(r#"{{"id": "{id}", "reward": 1, "label": {label}}}"#),
        );
        assert_eq!(fb.status, 200, "{}", String::from_utf8_lossy(&fb.body));
        state = get_blocking(&s.addr, "/v2/monitor").json();
        let r = &state["monitors"][0]["performance"]["realised"];
        if r["n"].as_u64().is_some_and(|n| n >= 12) {
            realised = r.clone();
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    assert!(
        realised.is_object(),
        "no realised performance: {}",
        state["monitors"][0]["performance"]
    );
    let (n, accuracy) = (
        realised["n"].as_f64().unwrap(),
        realised["accuracy"].as_f64().unwrap(),
    );
    // Each window's share of wrong labels is about a third (the window boundaries cut the
    // 1-in-3 pattern anywhere).
    assert!(
        (accuracy - 2.0 / 3.0).abs() <= 1.0 / n + 1e-9,
        "accuracy {accuracy} over {n} joined predictions: {realised}"
    );
    let events = std::fs::read_to_string(dir.path().join("events.jsonl")).unwrap();
    assert!(
        events
            .lines()
            .any(|l| l.contains(r#""op":"feedback""#) && l.contains(r#""label":2"#)),
        "the stream carries the label"
    );
}

/// The experiment readout from the stream (`GET /v2/monitor`'s `experiments`, and
/// `servegraph monitor run` over the same file) agrees with the router's live one: the same
/// decisions and rewards, read back from the tracking stream's decisions and feedback events.
#[test]
fn experiment_readouts_from_the_stream_match_the_live_ones() {
    let dir = tempfile::tempdir().unwrap();
    let graph = tracked_iris(
        dir.path(),
        "  reference: {events: 100}\n  features:\n    - {tensor: input, index: 0, name: sepal_length, type: numerical}\n  window: {events: 500, min_events: 50}\n  experiments:\n    iris: {control: iris-lr, min_sample: 10}\n",
    );
    let s = Server::start(graph.to_str().unwrap(), &[]);
    let n = 120;
    for i in 0..n {
        let id = format!("e{i}");
        let answer = post(&s.addr, "/v2/models/iris/infer", &iris_request(&id)).json();
        let route = answer["parameters"]["route"].as_str().unwrap().to_owned();
        // iris-rf earns 3 in 4, iris-lr 1 in 4.
        let reward = u8::from(if route == "iris-rf" {
            i % 4 != 0
        } else {
            i % 4 == 0
        });
        let fb = post(
            &s.addr,
            "/v2/models/iris/feedback",
            &format!(r#"{{"id": "{id}", "reward": {reward}}}"#),
        );
        assert_eq!(fb.status, 200);
    }
    let mut from_stream = serde_json::Value::Null;
    for _ in 0..200 {
        let state = get_blocking(&s.addr, "/v2/monitor").json();
        let e = &state["monitors"][0]["experiments"]["routers"]["iris"];
        let rewarded: u64 = e["routes"]
            .as_array()
            .map(|r| r.iter().filter_map(|x| x["rewards"].as_u64()).sum())
            .unwrap_or(0);
        if rewarded == n {
            from_stream = e.clone();
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    assert!(
        from_stream.is_object(),
        "the stream's readout never counted every reward"
    );
    let live = get_blocking(&s.addr, "/v2/models/iris/experiment").json();
    let ro = &from_stream["readout"];
    assert_eq!(ro["control"], "iris-lr", "{ro}");
    for route in ["iris-lr", "iris-rf"] {
        let pick = |r: &serde_json::Value| {
            r["routes"]
                .as_array()
                .unwrap()
                .iter()
                .find(|x| x["route"] == route)
                .cloned()
                .unwrap()
        };
        let (a, b) = (pick(ro), pick(&live["readout"]));
        assert_eq!(a["n"], b["n"], "{route}: {a} / {b}");
        assert_eq!(a["rewarded"], b["rewarded"], "{route}: {a} / {b}");
        assert!(
            (a["mean"].as_f64().unwrap() - b["mean"].as_f64().unwrap()).abs() < 1e-12,
            "{route}: {a} / {b}"
        );
    }
    // `servegraph monitor run` over the same file: the same counts.
    let out = bin()
        .args(["monitor", "run", graph.to_str().unwrap(), "--events"])
        .arg(dir.path().join("events.jsonl"))
        .arg("--state")
        .arg(dir.path().join("state.json"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let state: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.path().join("state.json")).unwrap()).unwrap();
    let offline = &state["experiments"]["routers"]["iris"]["readout"];
    assert_eq!(
        offline["routes"], ro["routes"],
        "offline and in-process readouts differ"
    );
}
