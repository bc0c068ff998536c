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
        let r = post(&s.addr, "/v2/models/iris/infer", &iris_request(&format!("m{i}")));
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
