//! Bandit routers learning from feedback, through the real HTTP API (issue 5): seeded
//! simulations of two routes with reward probabilities 0.3 and 0.7.

mod common;

use common::*;
use serde_json::{Value, json};

/// A deterministic reward source (xorshift), so the simulations are repeatable.
struct Coin(u64);

impl Coin {
    fn flip(&mut self, p: f64) -> f64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        if (self.0 >> 11) as f64 / (1u64 << 53) as f64 <= p {
            1.0
        } else {
            0.0
        }
    }
}

fn server(policy: &str) -> Server {
    let dir = tempfile::tempdir().unwrap();
    let g = dir.path().join("ab.yaml");
    std::fs::write(
        &g,
        format!("name: ab\ngraph:\n  kind: router\n  policy: {policy}\n  routes:\n    a: {{kind: transform, op: noop}}\n    b: {{kind: transform, op: noop}}\n"),
    )
    .unwrap();
    let s = Server::start(g.to_str().unwrap(), &[]);
    std::mem::forget(dir);
    s
}

const REQ: &str = r#"{"inputs":[{"name":"x","shape":[1],"datatype":"FP32","data":[1]}]}"#;

/// `n` requests, each answered by feedback with reward probability `p[route]`; the routes taken.
fn run(s: &Server, coin: &mut Coin, p: (f64, f64), n: usize) -> Vec<String> {
    (0..n)
        .map(|_| {
            let r = post(&s.addr, "/v2/models/ab/infer", REQ);
            assert_eq!(r.status, 200);
            let v = r.json();
            let route = v["parameters"]["route"].as_str().unwrap().to_owned();
            let reward = coin.flip(if route == "a" { p.0 } else { p.1 });
            let f = post(
                &s.addr,
                "/v2/models/ab/feedback",
                &json!({"id": v["id"], "reward": reward}).to_string(),
            );
            assert_eq!(f.status, 200, "{:?}", String::from_utf8_lossy(&f.body));
            route
        })
        .collect()
}

fn share(routes: &[String], route: &str) -> f64 {
    routes.iter().filter(|r| *r == route).count() as f64 / routes.len() as f64
}

#[test]
fn bandits_send_most_traffic_to_the_better_route() {
    for (policy, want) in [
        ("{type: thompson, seed: 7}", 0.9),
        ("{type: ucb1, seed: 7}", 0.9),
        ("{type: epsilon_greedy, epsilon: 0.1, seed: 7}", 0.85),
    ] {
        let s = server(policy);
        let routes = run(&s, &mut Coin(0x9E3779B97F4A7C15), (0.3, 0.7), 2000);
        let last = share(&routes[1000..], "b");
        assert!(
            last >= want,
            "{policy}: {last} of the last 1,000 to the better route"
        );

        let stats = get_blocking(&s.addr, "/v2/models/ab/experiment").json();
        let b = &stats["routes"][1];
        assert_eq!(b["route"], "b");
        assert_eq!(
            stats["routes"][0]["pulls"].as_u64().unwrap() + b["pulls"].as_u64().unwrap(),
            2000
        );
        assert!(
            (b["reward_mean"].as_f64().unwrap() - 0.7).abs() < 0.05,
            "{stats}"
        );
    }
}

#[test]
fn discounted_thompson_follows_a_swap() {
    let s = server("{type: thompson, discount: 0.98, seed: 3}");
    let mut coin = Coin(12345);
    run(&s, &mut coin, (0.3, 0.7), 2000);
    let after = run(&s, &mut coin, (0.7, 0.3), 1000);
    let last = share(&after[500..], "a");
    assert!(last >= 0.8, "{last} of the last 500 to the new best route");
}

#[test]
fn feedback_is_counted_once_and_checked() {
    let s = server("{type: thompson, seed: 1}");
    let v = post(&s.addr, "/v2/models/ab/infer", REQ).json();
    let id = v["id"].as_str().unwrap().to_owned();
    let fb = |body: Value| post(&s.addr, "/v2/models/ab/feedback", &body.to_string());

    assert_eq!(fb(json!({"id": id, "reward": 1})).json()["accepted"], 1);
    let again = fb(json!({"id": id, "reward": 1})).json();
    assert_eq!(
        (again["accepted"].clone(), again["duplicates"].clone()),
        (json!(0), json!(1))
    );

    let r = fb(json!({"id": "nope", "reward": 1}));
    assert_eq!(r.status, 404);
    assert!(
        r.error().contains("no response `nope` to credit"),
        "{}",
        r.error()
    );
    let r = fb(json!({"id": id, "reward": "high"}));
    assert_eq!(
        (r.status, r.error()),
        (422, "feedback 0: `reward` must be a number".to_owned())
    );

    let v2 = post(&s.addr, "/v2/models/ab/infer", REQ).json();
    let r = fb(json!({"id": v2["id"], "reward": 2.5}));
    assert_eq!(r.status, 422);
    assert!(r.error().contains("outside [0, 1]"), "{}", r.error());

    // A batch, with an unknown id reported, not fatal.
    let v3 = post(&s.addr, "/v2/models/ab/infer", REQ).json();
    let r = fb(json!([{"id": v3["id"], "reward": 0}, {"id": "gone", "reward": 1}])).json();
    assert_eq!(
        (r["accepted"].clone(), r["unknown"].clone()),
        (json!(1), json!(["gone"]))
    );

    // Seldon's shape: the route from the response when the id is not remembered.
    let seldon = json!({"request": {}, "response": {"id": "elsewhere", "parameters": {"route": "b"}}, "reward": 1, "truth": null});
    assert_eq!(fb(seldon).json()["accepted"], 1);

    // A router that routes by name takes no feedback.
    let p = server("{type: path}");
    let r = post(
        &p.addr,
        "/v2/models/ab/feedback",
        &json!({"id": "x", "reward": 1}).to_string(),
    );
    assert_eq!(r.status, 404);
    assert!(
        r.error().contains("its policy takes no feedback"),
        "{}",
        r.error()
    );
}

#[test]
fn bandit_learning_survives_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let g = dir.path().join("ab.yaml");
    std::fs::write(
        &g,
        "name: ab\ngraph:\n  kind: router\n  policy: {type: thompson, seed: 5, state_file: ab-state.json, state_every_ms: 100}\n  routes:\n    a: {kind: transform, op: noop}\n    b: {kind: transform, op: noop}\n",
    )
    .unwrap();
    let state = dir.path().join("ab-state.json");
    let mut s = Server::start(g.to_str().unwrap(), &[]);
    let mut coin = Coin(777);
    run(&s, &mut coin, (0.3, 0.7), 300);
    // The periodic snapshot lands while the server runs...
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while !state.exists() {
        assert!(std::time::Instant::now() < deadline, "no snapshot written");
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let before = get_blocking(&s.addr, "/v2/models/ab/experiment").json();
    // ...and the last one when it stops.
    assert!(s.terminate().success());
    let saved: Value = serde_json::from_slice(&std::fs::read(&state).unwrap()).unwrap();
    assert_eq!(saved["policy"], "thompson");
    assert_eq!(
        saved["routes"]["a"]["pulls"].as_u64().unwrap()
            + saved["routes"]["b"]["pulls"].as_u64().unwrap(),
        300
    );

    let s = Server::start(g.to_str().unwrap(), &[]);
    let after = get_blocking(&s.addr, "/v2/models/ab/experiment").json();
    for i in 0..2 {
        for field in ["route", "pulls", "rewards", "reward_mean"] {
            assert_eq!(
                after["routes"][i][field], before["routes"][i][field],
                "{after}"
            );
        }
    }
    // It carries on from what it learnt: the better route from the first request.
    let routes = run(&s, &mut coin, (0.3, 0.7), 100);
    assert!(share(&routes, "b") >= 0.8, "{}", share(&routes, "b"));

    // A snapshot it cannot read is an error that names the file, and stays as it was.
    drop(s);
    std::fs::write(&state, "{not json").unwrap();
    for args in [&["validate"][..], &["serve", "--listen", "127.0.0.1:0"]] {
        let out = bin().args(args).arg(&g).output().unwrap();
        let text = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{args:?}");
        assert!(
            text.contains("cannot restore the bandit state") && text.contains("ab-state.json"),
            "{args:?}: {text}"
        );
    }
    assert_eq!(std::fs::read_to_string(&state).unwrap(), "{not json");
}

#[test]
fn policy_fields_are_checked() {
    let dir = tempfile::tempdir().unwrap();
    for (policy, want) in [
        (
            "{type: ucb1, epsilon: 0.2}",
            "unknown field `policy.epsilon` for `policy.type: ucb1`",
        ),
        (
            "{type: weighted, seed: 1}",
            "unknown field `policy.seed` for `policy.type: weighted` (expected one of `weights`, `sticky`, `shadow`, `remember`, `experiment`, `features` or `type`)",
        ),
        (
            "{type: thompson, discount: 1.5}",
            "`policy.discount` must be a number > 0 and ≤ 1, found the number 1.5",
        ),
        (
            "{type: ucb1, shadow: {route: a}}",
            "unknown field `policy.shadow` for `policy.type: ucb1`",
        ),
        (
            "{type: weighted, shadow: {route: z}}",
            "`shadow.route` names `z`, which is not a route",
        ),
        (
            "{type: weighted, state_file: s.json}",
            "unknown field `policy.state_file` for `policy.type: weighted`",
        ),
        (
            "{type: ucb1, state_every_ms: 100}",
            "`policy.state_every_ms` needs `policy.state_file`",
        ),
        (
            "{type: softmax}",
            "unknown `policy.type` `softmax` (expected one of",
        ),
        (
            "{type: ucb1, sticky: \"header:x-user\"}",
            "unknown field `policy.sticky` for `policy.type: ucb1`",
        ),
        (
            "{type: path, remember: 10}",
            "unknown field `policy.remember` for `policy.type: path`",
        ),
        (
            "{type: weighted, share: \"kafka://h:9092/t\"}",
            "unknown field `policy.share` for `policy.type: weighted`",
        ),
        (
            "{type: ucb1, share: \"h:9092/t\"}",
            "`share: h:9092/t`: expected kafka://HOST:PORT/TOPIC",
        ),
        (
            "{type: weighted, weights: {a: 1, b: 1}, shadow: {route: b}}",
            "`b` is the shadow route: it gets copies only, so no weight",
        ),
        (
            "{type: weighted, experiment: {control: z}}",
            "`experiment.control` names `z`, which is not a route with a weight of the policy",
        ),
        (
            "{type: weighted, weights: {a: 1}, experiment: {control: b}}",
            "`experiment.control` names `b`, which is not a route with a weight of the policy",
        ),
        (
            "{type: thompson, arms: [b], experiment: {control: a}}",
            "`experiment.control` names `a`, which is not an arm of the policy",
        ),
        (
            "{type: ucb1, experiment: {alpha: 0.9}}",
            "`policy.experiment.alpha` must be a number > 0 and ≤ 0.5, found the number 0.9",
        ),
        (
            "{type: weighted, experiment: {planned_n: 0}}",
            "`policy.experiment.planned_n` must be",
        ),
        (
            "{type: weighted, experiment: {min_sampel: 10}}",
            "unknown field `min_sampel` in `policy.experiment` (did you mean `min_sample`?",
        ),
        (
            "{type: path, experiment: {control: a}}",
            "unknown field `policy.experiment` for `policy.type: path`",
        ),
    ] {
        let g = dir.path().join("p.yaml");
        std::fs::write(&g, format!("name: ab\ngraph: {{kind: router, policy: {policy}, routes: {{a: {{kind: transform, op: noop}}, b: {{kind: transform, op: noop}}}}}}\n")).unwrap();
        let out = bin()
            .args(["validate", "--short"])
            .arg(&g)
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stderr);
        assert!(text.contains(want), "{policy}: {text}");
    }
}

#[test]
fn sticky_keys_always_reach_the_same_route() {
    let s = server("{type: weighted, weights: {a: 1, b: 3}, sticky: \"header:x-user\"}");
    let route_for = |user: &str| -> String {
        let r = block_on(request(
            &s.addr,
            "POST",
            "/v2/models/ab/infer",
            &[("x-user", user.to_owned())],
            REQ.as_bytes().to_vec(),
        ))
        .unwrap();
        r.json()["parameters"]["route"].as_str().unwrap().to_owned()
    };
    let mut b = 0;
    for i in 0..1000 {
        let user = format!("user-{i}");
        let first = route_for(&user);
        assert_eq!(route_for(&user), first, "{user} moved");
        b += (first == "b") as usize;
    }
    // The keys split by the weights: 750 expected; five standard deviations is ±69.
    assert!((681..=819).contains(&b), "{b} of 1,000 keys on b");

    // The key may come from the body's parameters; no key: random.
    let body = server("{type: weighted, sticky: \"body:user\"}");
    let with = |user: &str| {
        let req = json!({"parameters": {"user": user}, "inputs": [{"name": "x", "shape": [1], "datatype": "FP32", "data": [1]}]});
        post(&body.addr, "/v2/models/ab/infer", &req.to_string()).json()["parameters"]["route"]
            .clone()
    };
    // ... or be a top-level field of the body, where MLRun and Seldon users put it: the same
    // key reaches the same route either way.
    let top = |user: &str| {
        let req = json!({"user": user, "inputs": [{"name": "x", "shape": [1], "datatype": "FP32", "data": [1]}]});
        post(&body.addr, "/v2/models/ab/infer", &req.to_string()).json()["parameters"]["route"]
            .clone()
    };
    let mut routes = std::collections::HashSet::new();
    for i in 0..100 {
        let u = format!("u{i}");
        let r = with(&u);
        assert_eq!(with(&u), r);
        assert_eq!(top(&u), r, "top-level `user` {u}");
        routes.insert(r.to_string());
    }
    assert_eq!(routes.len(), 2, "100 keys all on one route");
    let unkeyed: std::collections::HashSet<String> = (0..50)
        .map(|_| {
            post(&body.addr, "/v2/models/ab/infer", REQ).json()["parameters"]["route"]
                .as_str()
                .unwrap()
                .to_owned()
        })
        .collect();
    assert_eq!(
        unkeyed.len(),
        2,
        "requests without a key are split at random"
    );
}

/// A shadow route that hangs (a server that accepts connections and never answers) or fails
/// (nothing listening) leaves the caller's answer and latency as they were; its copies are
/// counted in the stats and recorded in tracking, marked `shadow`.
#[test]
fn a_slow_or_failing_shadow_never_reaches_the_caller() {
    let hang = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    for (url, want) in [
        (hang.local_addr().unwrap().to_string(), "timed out"),
        (closed.to_string(), "cannot reach"),
    ] {
        let dir = tempfile::tempdir().unwrap();
        let g = dir.path().join("ab.yaml");
        std::fs::write(
            &g,
            format!(
                "name: ab\n\
                 graph:\n  kind: router\n\
                 \x20 policy: {{type: weighted, shadow: {{route: candidate, percent: 100, timeout_ms: 1500}}}}\n\
                 \x20 routes:\n\
                 \x20   main: {{kind: transform, op: rename, args: {{x: y}}}}\n\
                 \x20   candidate: {{kind: model, class: remote, url: \"http://{url}\", model: m, retries: 0, attempt_timeout_ms: 60000}}\n\
                 tracking: {{sink: \"file://events.jsonl\", batch: 1, flush_ms: 50}}\n"
            ),
        )
        .unwrap();
        let mut s = Server::start(g.to_str().unwrap(), &[]);
        for _ in 0..20 {
            let t0 = std::time::Instant::now();
            let r = post(&s.addr, "/v2/models/ab/infer", REQ);
            let took = t0.elapsed();
            assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
            let v = r.json();
            assert_eq!(v["parameters"]["route"], "main");
            assert_eq!(v["outputs"][0]["name"], "y");
            assert_eq!(v["outputs"][0]["data"], json!([1.0]));
            // The shadow's 1.5 s deadline is nowhere near the caller's answer.
            assert!(took < std::time::Duration::from_millis(1000), "{took:?}");
        }
        let stats = get_blocking(&s.addr, "/v2/models/ab/experiment").json();
        assert_eq!(stats["shadow"]["route"], "candidate");
        assert_eq!(stats["shadow"]["sent"], 20, "{stats}");
        assert_eq!(
            stats["routes"][1]["pulls"], 0,
            "no traffic of its own: {stats}"
        );
        // Every copy ends (failed or timed out) and is tracked.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
        loop {
            let stats = get_blocking(&s.addr, "/v2/models/ab/experiment").json();
            if stats["shadow"]["failed"] == 20 {
                break;
            }
            assert!(std::time::Instant::now() < deadline, "{stats}");
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
        assert!(s.terminate().success());
        let events: Vec<Value> = std::fs::read_to_string(dir.path().join("events.jsonl"))
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        let (shadows, own): (Vec<&Value>, Vec<&Value>) =
            events.iter().partition(|e| e["shadow"] == true);
        assert_eq!(own.len(), 20);
        assert_eq!(shadows.len(), 20, "{events:?}");
        for e in shadows {
            assert_eq!(e["route"], "candidate");
            assert!(e["resp"].is_null());
            assert!(e["error"].as_str().unwrap().contains(want), "{e}");
        }
    }
}

#[test]
fn router_stats_are_prometheus_metrics() {
    let s = server("{type: ucb1}");
    run(&s, &mut Coin(3), (0.3, 0.7), 50);
    let m = get_blocking(&s.addr, "/metrics");
    assert_eq!(m.status, 200);
    assert!(
        m.headers["content-type"]
            .to_str()
            .unwrap()
            .starts_with("application/openmetrics-text"),
        "{:?}",
        m.headers
    );
    let text = String::from_utf8_lossy(&m.body).into_owned();
    let stats = get_blocking(&s.addr, "/v2/models/ab/experiment").json();
    for r in stats["routes"].as_array().unwrap() {
        let labels = format!(
            "{{graph=\"ab\",router=\"ab\",policy=\"ucb1\",route=\"{}\"}}",
            r["route"].as_str().unwrap()
        );
        for (metric, field) in [
            ("servegraph_router_requests_total", "pulls"),
            ("servegraph_router_rewards_total", "rewards"),
        ] {
            let line = format!("{metric}{labels} {}", r[field]);
            assert!(text.lines().any(|l| l == line), "{line}\n{text}");
        }
        let estimate = text
            .lines()
            .find_map(|l| l.strip_prefix(&format!("servegraph_router_estimate{labels} ")))
            .unwrap_or_else(|| panic!("no estimate for {labels}\n{text}"));
        let estimate: f64 = estimate.parse().unwrap();
        assert!(
            (estimate - r["estimate"].as_f64().unwrap()).abs() < 1e-9,
            "{text}"
        );
    }
    assert_eq!(text.lines().last(), Some("# EOF"));
}

/// Feedback for a request that named its route (so did not go through the policy) says what
/// happened, and how to credit the route, instead of "unknown".
#[test]
fn feedback_for_a_request_that_named_its_route_says_so() {
    let s = server("{type: thompson, seed: 1}");
    let body = REQ.replacen('{', r#"{"id":"named-1","#, 1);
    let r = post(&s.addr, "/v2/models/b/infer", &body);
    assert_eq!(r.status, 200, "{:?}", r.body);
    let r = post(
        &s.addr,
        "/v2/models/ab/feedback",
        &json!({"id": "named-1", "reward": 1}).to_string(),
    );
    assert_eq!(r.status, 422, "{:?}", r.body);
    assert!(
        r.error().contains("named route `b`")
            && r.error()
                .contains(r#"{"response": {"parameters": {"route": "b"}}, "reward": …}"#),
        "{}",
        r.error()
    );
    // Crediting the route as it says works; an id never seen is still unknown (404).
    let r = post(
        &s.addr,
        "/v2/models/ab/feedback",
        &json!({"response": {"parameters": {"route": "b"}}, "reward": 1}).to_string(),
    );
    assert_eq!(r.status, 200, "{:?}", r.body);
    let r = post(
        &s.addr,
        "/v2/models/ab/feedback",
        &json!({"id": "never", "reward": 1}).to_string(),
    );
    assert_eq!(r.status, 404, "{:?}", r.body);
}

const TOKEN: &str = "exp-token";

/// A router graph `ab` (routes `a` and `b`, both `noop`) with `policy`, served with an admin
/// token; its folder stays while the test runs.
fn deployable(policy: &str) -> (tempfile::TempDir, std::path::PathBuf, Server) {
    let dir = tempfile::tempdir().unwrap();
    let g = dir.path().join("ab.yaml");
    write_ab(&g, policy);
    let s = Server::start(g.to_str().unwrap(), &["--admin-token", TOKEN]);
    (dir, g, s)
}

fn write_ab(g: &std::path::Path, policy: &str) {
    std::fs::write(
        g,
        format!("name: ab\ngraph:\n  kind: router\n  policy: {policy}\n  routes:\n    a: {{kind: transform, op: noop}}\n    b: {{kind: transform, op: noop}}\n"),
    )
    .unwrap();
}

/// An admin action (Triton's repository extension): its reply.
fn admin(s: &Server, path: &str, body: Value) -> common::Reply {
    block_on(request(
        &s.addr,
        "POST",
        path,
        &[("authorization", format!("Bearer {TOKEN}"))],
        body.to_string().into_bytes(),
    ))
    .unwrap()
}

/// Loads `bytes` as version 1 of ONNX model `name`.
fn deploy(s: &Server, name: &str, bytes: &[u8]) -> common::Reply {
    admin(
        s,
        &format!("/v2/repository/models/{name}/load"),
        json!({"parameters": {"file:1/model.onnx": base64_of(bytes)}}),
    )
}

fn iris_onnx() -> Vec<u8> {
    std::fs::read(root().join("models/iris_lr.onnx")).unwrap()
}

/// Issue 24 (1): a model deployed into a graph whose router learns (or splits at random
/// without weights) is no arm of it: it gets only the requests that name it, until the graph
/// names it among the policy's `arms`.
#[test]
fn a_deployed_model_gets_only_the_requests_that_name_it() {
    for policy in [
        "{type: thompson, seed: 9}",
        "{type: epsilon_greedy, epsilon: 0.5, seed: 9}",
        "{type: weighted}",
    ] {
        let (_dir, g, s) = deployable(policy);
        let r = deploy(&s, "flower", &iris_onnx());
        assert_eq!(r.status, 200, "{policy}: {}", r.error());
        for _ in 0..100 {
            let r = post(&s.addr, "/v2/models/ab/infer", REQ);
            assert_eq!(r.status, 200, "{policy}: {}", r.error());
            let route = r.json()["parameters"]["route"].clone();
            assert!(route == "a" || route == "b", "{policy}: went to {route}");
        }
        // Named, it answers.
        let r = post(&s.addr, "/v2/models/flower/infer", &iris_request("f"));
        assert_eq!(r.status, 200, "{policy}: {}", r.error());
        let stats = get_blocking(&s.addr, "/v2/models/ab/experiment").json();
        let flower = &stats["routes"][2];
        assert_eq!(flower["route"], "flower:1", "{stats}");
        assert_eq!(flower["pulls"], 1, "{stats}");
        assert!(flower.get("estimate").is_none(), "not an arm: {stats}");
        if policy.contains("weighted") {
            continue;
        }
        // The graph says so: an arm from the next build on.
        let with_arms = policy.replace('}', ", arms: [a, b, \"flower:1\"]}");
        write_ab(&g, &with_arms);
        let r = admin(&s, "/admin/reload", json!({}));
        assert_eq!(r.status, 200, "{}", r.error());
        let stats = get_blocking(&s.addr, "/v2/models/ab/experiment").json();
        assert!(stats["routes"][2]["estimate"].is_number(), "{stats}");
        let mut to_flower = 0;
        for _ in 0..60 {
            let r = post(&s.addr, "/v2/models/ab/infer", &iris_request("x"));
            if r.status == 200 && r.json()["parameters"]["route"] == "flower:1" {
                to_flower += 1;
            }
        }
        assert!(to_flower > 0, "{with_arms}: the arm was never chosen");
    }
}

/// `arms` must name routes, each once.
#[test]
fn arms_that_are_not_routes_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let g = dir.path().join("ab.yaml");
    write_ab(&g, "{type: ucb1, arms: [a, c]}");
    let out = bin()
        .args(["validate", g.to_str().unwrap()])
        .output()
        .unwrap();
    let text =
        String::from_utf8_lossy(&out.stderr).into_owned() + &String::from_utf8_lossy(&out.stdout);
    assert!(!out.status.success());
    assert!(
        text.contains("`arms` names `c`, which is not a route"),
        "{text}"
    );
    write_ab(&g, "{type: ucb1, arms: [a, a]}");
    let out = bin()
        .args(["validate", g.to_str().unwrap()])
        .output()
        .unwrap();
    let text =
        String::from_utf8_lossy(&out.stderr).into_owned() + &String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("`arms` names `a` twice"), "{text}");
}

/// Issue 24 (2): deploys, unloads and a refused deploy keep the router's learning as it is:
/// the decisions awaiting feedback, the counts, the bandit.
#[test]
fn repository_changes_keep_pending_feedback_and_counts() {
    let (_dir, _g, s) = deployable("{type: thompson, seed: 4}");
    let ids: Vec<String> = (0..20)
        .map(|_| {
            let r = post(&s.addr, "/v2/models/ab/infer", REQ);
            assert_eq!(r.status, 200);
            r.json()["id"].as_str().unwrap().to_owned()
        })
        .collect();
    let named = post(&s.addr, "/v2/models/a/infer", REQ).json()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let fb = |id: &str| {
        post(
            &s.addr,
            "/v2/models/ab/feedback",
            &json!({"id": id, "reward": 1}).to_string(),
        )
    };
    for id in &ids[..5] {
        assert_eq!(fb(id).status, 200);
    }
    let before = get_blocking(&s.addr, "/v2/models/ab/experiment").json();

    assert_eq!(deploy(&s, "flower", &iris_onnx()).status, 200);
    for id in &ids[5..10] {
        let r = fb(id);
        assert_eq!(r.status, 200, "after a deploy: {}", r.error());
    }
    let refused = deploy(&s, "broken", b"not an onnx model");
    assert_eq!(refused.status, 400, "{}", refused.error());
    for id in &ids[10..15] {
        let r = fb(id);
        assert_eq!(r.status, 200, "after a refused deploy: {}", r.error());
    }
    let r = admin(&s, "/v2/repository/models/flower/unload", json!({}));
    assert_eq!(r.status, 200, "{}", r.error());
    for id in &ids[15..] {
        let r = fb(id);
        assert_eq!(r.status, 200, "after an unload: {}", r.error());
    }
    // Counted once, as before.
    assert_eq!(fb(&ids[0]).json()["duplicates"], 1);
    // A request that named its route is still told so.
    let r = fb(&named);
    assert_eq!(r.status, 422, "{}", r.error());

    let after = get_blocking(&s.addr, "/v2/models/ab/experiment").json();
    let total = |v: &Value, field: &str| -> u64 {
        v["routes"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r[field].as_u64().unwrap())
            .sum()
    };
    assert_eq!(total(&before, "pulls"), 21, "{before}");
    assert_eq!(total(&after, "pulls"), 21, "{after}");
    assert_eq!(total(&before, "rewards"), 5, "{before}");
    assert_eq!(total(&after, "rewards"), 20, "{after}");
}

/// Issue 26 (4, 9): an A/B test through the real HTTP API, rewards 0.10 on the control and
/// 0.15 on the variant (seeded), read out every 250 requests as a dashboard would: the
/// variant is called `better` (never `worse`), the always-valid p-value never rises between
/// looks, the ratio check holds, the counts `/experiment` answered before are all still there,
/// and the readout is exported as gauges.
#[test]
fn an_ab_test_calls_a_real_lift_for_the_right_arm() {
    let s = server("{type: weighted, weights: {a: 1, b: 1}, experiment: {control: a}}");
    let mut coin = Coin(0x5eed_2026);
    let mut called = None;
    let mut last_p = 1.0;
    for look in 1..=40 {
        let feedback: Vec<Value> = (0..250)
            .map(|_| {
                let r = post(&s.addr, "/v2/models/ab/infer", REQ);
                assert_eq!(r.status, 200);
                let v = r.json();
                let p = if v["parameters"]["route"] == "a" {
                    0.10
                } else {
                    0.15
                };
                json!({"id": v["id"], "reward": coin.flip(p)})
            })
            .collect();
        let f = post(
            &s.addr,
            "/v2/models/ab/feedback",
            &Value::from(feedback).to_string(),
        );
        assert_eq!(f.json()["accepted"], 250);
        let e = get_blocking(&s.addr, "/v2/models/ab/experiment").json();
        let readout = &e["readout"];
        assert_eq!(readout["control"], "a");
        assert_eq!(e["routes"][0]["route"], "a", "{e}");
        assert!(e["routes"][0]["pulls"].as_u64().is_some(), "{e}");
        let (a, b) = (&readout["routes"][0], &readout["routes"][1]);
        assert_eq!(a["lift_abs"], Value::Null);
        assert_eq!(a["p_always_valid"], Value::Null);
        assert_eq!(b["route"], "b");
        assert_eq!(
            a["n"].as_u64().unwrap() + b["n"].as_u64().unwrap(),
            250 * look as u64
        );
        assert_eq!(readout["srm"]["alert"], false, "{readout}");
        let p = b["p_always_valid"].as_f64().unwrap();
        assert!(p <= last_p, "look {look}: {p} after {last_p}");
        last_p = p;
        assert_ne!(b["verdict"], "worse", "look {look}: {readout}");
        if b["verdict"] == "better" {
            assert!(readout["verdict_ready"].as_bool().unwrap());
            assert!(b["cs95"][0].as_f64().unwrap() > 0.0, "{readout}");
            assert!(b["chance_to_beat_control"].as_f64().unwrap() > 0.95);
            called = Some(look);
            break;
        }
    }
    let look = called.expect("the +5 point lift was never called");
    eprintln!("+5 points called at look {look} ({} requests)", look * 250);
    let metrics = String::from_utf8(get_blocking(&s.addr, "/metrics").body.to_vec()).unwrap();
    for name in [
        "servegraph_router_experiment_lift{graph=\"ab\",router=\"ab\",policy=\"weighted\",route=\"b\"}",
        "servegraph_router_experiment_p_value{graph=\"ab\",router=\"ab\",policy=\"weighted\",route=\"b\"}",
        "servegraph_router_experiment_srm_p_value{graph=\"ab\",router=\"ab\",policy=\"weighted\"}",
    ] {
        assert!(metrics.contains(name), "{name}\n{metrics}");
    }
}

/// A bandit's readout estimates each route from the propensities it logged (SNIPS), says so,
/// and runs no ratio check (its allocation is adaptive by design).
#[test]
fn a_bandit_readout_comes_from_its_propensities() {
    let s = server("{type: epsilon_greedy, epsilon: 0.3, seed: 3, experiment: {min_sample: 20}}");
    let mut coin = Coin(77);
    run(&s, &mut coin, (0.3, 0.7), 600);
    let e = get_blocking(&s.addr, "/v2/models/ab/experiment").json();
    let readout = &e["readout"];
    assert_eq!(readout["method"]["estimator"], "snips", "{readout}");
    assert_eq!(readout["method"]["policy"], "epsilon_greedy");
    assert_eq!(readout["srm"], Value::Null);
    assert_eq!(readout["control"], "a", "the first arm by default");
    // Within 3.3 standard errors (99.9 %: the 95 % intervals cover 93.5 % and 95 % of 400
    // simulated runs of this policy, a seed's miss is no failure of the plumbing).
    for (route, truth) in [(0, 0.3), (1, 0.7)] {
        let r = &readout["routes"][route];
        let ci = r["ci95"].as_array().unwrap();
        let (lo, hi) = (ci[0].as_f64().unwrap(), ci[1].as_f64().unwrap());
        let mean = r["mean"].as_f64().unwrap();
        assert!((mean - truth).abs() < (hi - lo) / 2.0 * 3.3 / 1.96, "{r}");
        assert!(hi - lo > 0.0 && hi - lo < 0.5, "{r}");
    }
    assert_eq!(readout["routes"][1]["verdict"], "better", "{readout}");
    assert_eq!(readout["policy_value"]["rewarded"], 600, "{readout}");
    // UCB1 never randomises: nothing to compare, and it says why.
    let s = server("{type: ucb1}");
    run(&s, &mut coin, (0.3, 0.7), 50);
    let readout = get_blocking(&s.addr, "/v2/models/ab/experiment").json()["readout"].clone();
    assert_eq!(readout["routes"][1]["mean"], Value::Null, "{readout}");
    assert!(
        readout["warnings"][0]
            .as_str()
            .unwrap()
            .contains("never randomises")
    );
}
