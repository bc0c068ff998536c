use std::path::Path;

use axum::http::Request;
use http_body_util::BodyExt;
use tokio::sync::Notify;
use tower::ServiceExt;

use super::*;
use crate::event::Event;
use crate::graph::Graph;
use crate::step::{BuildContext, BuildMode, Registry, Step, StepNode};

/// Holds every request until released.
struct Hold(Arc<Notify>);

#[async_trait::async_trait]
impl Step for Hold {
    async fn process(&self, e: Event) -> crate::Result<Event> {
        self.0.notified().await;
        Ok(e)
    }
}

fn state_with(yaml: &str, gate: Arc<Notify>) -> Arc<AppState> {
    let mut r = Registry::new();
    r.register("hold", move |_: &StepNode, _: &mut BuildContext| {
        Some(Box::new(Hold(Arc::clone(&gate))) as Box<dyn Step>)
    });
    let graph = Graph::from_yaml(yaml, Path::new("."), &r, BuildMode::Load).unwrap();
    let state = AppState::new(HttpConfig::default());
    state.serve(Arc::new(graph), None);
    state
}

const REQ: &str = r#"{"inputs":[{"name":"x","shape":[1],"datatype":"FP32","data":[1]}]}"#;

fn infer_request(model: &str) -> Request<Body> {
    Request::post(format!("/v2/models/{model}/infer"))
        .body(Body::from(REQ))
        .unwrap()
}

async fn body_json(r: Response) -> serde_json::Value {
    serde_json::from_slice(&r.into_body().collect().await.unwrap().to_bytes()).unwrap()
}

#[tokio::test]
async fn not_ready_until_a_graph_is_served() {
    let app = router(AppState::new(HttpConfig::default()));
    let r = app
        .clone()
        .oneshot(
            Request::get("/v2/health/ready")
                .body(Body::empty())
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::SERVICE_UNAVAILABLE);
    // (Loads are named process-wide: other tests' models may be named after it.)
    let error = body_json(r).await["error"].as_str().unwrap().to_owned();
    assert!(
        error.starts_with("not ready: models are loading"),
        "{error}"
    );
    let r = app
        .clone()
        .oneshot(Request::get("/v2/health/live").body(Body::empty()).unwrap())
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let r = app.oneshot(infer_request("g")).await.unwrap();
    assert_eq!(r.status(), StatusCode::SERVICE_UNAVAILABLE);
}

#[tokio::test]
async fn over_max_in_flight_is_429_with_retry_after() {
    let gate = Arc::new(Notify::new());
    let state = state_with(
        "name: g\nmax_in_flight: 1\ngraph: {kind: flow, steps: {h: {kind: hold}}}\n",
        Arc::clone(&gate),
    );
    let app = router(Arc::clone(&state));
    let first = tokio::spawn(app.clone().oneshot(infer_request("g")));
    // Wait until the first request holds the only permit (it waits on the gate).
    while state.current().unwrap().graph.admission_available() > 0 {
        tokio::task::yield_now().await;
    }
    let r = app.oneshot(infer_request("g")).await.unwrap();
    assert_eq!(r.status(), StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(r.headers()[header::RETRY_AFTER], "1");
    assert_eq!(
        body_json(r).await["error"],
        "too many requests in flight (max_in_flight is 1)"
    );
    gate.notify_one();
    let r = first.await.unwrap().unwrap();
    assert_eq!(r.status(), StatusCode::OK);
}

#[tokio::test]
async fn clipper_queries_before_a_graph_is_served_are_clippers_503() {
    let app = router(AppState::new(HttpConfig::default()));
    let query = Request::post("/m/predict")
        .header(header::CONTENT_TYPE, "application/json")
        .body(Body::from(r#"{"input": [1.0]}"#))
        .unwrap();
    let r = app.oneshot(query).await.unwrap();
    assert_eq!(r.status(), StatusCode::SERVICE_UNAVAILABLE);
    let v = body_json(r).await;
    assert_eq!(v["error"], "Query processing error", "{v}");
    // (Loads are named process-wide: other tests' models may be named after it.)
    let cause = v["cause"].as_str().unwrap();
    assert!(cause.starts_with("not ready: models are loading"), "{v}");
}

/// A header is found the same way in a small map (scanned) and a large one (looked up): the
/// first value of the name, whatever the case of the name asked for.
#[test]
fn headers_are_found_by_scan_and_by_lookup_alike() {
    use crate::request::Headers;
    use axum::http::{HeaderMap, HeaderValue};
    for extra in [0, 40] {
        let mut h = HeaderMap::new();
        h.insert("content-type", HeaderValue::from_static("application/json"));
        h.append("x-user", HeaderValue::from_static("first"));
        h.append("x-user", HeaderValue::from_static("second"));
        h.insert(
            "inference-header-content-length",
            HeaderValue::from_static("12"),
        );
        for i in 0..extra {
            h.insert(
                axum::http::HeaderName::try_from(format!("x-extra-{i}")).unwrap(),
                HeaderValue::from_static("v"),
            );
        }
        assert_eq!(h.header("x-user").as_deref(), Some("first"), "{extra}");
        assert_eq!(h.header("X-User").as_deref(), Some("first"), "{extra}");
        assert_eq!(
            h.header("inference-header-content-length").as_deref(),
            Some("12")
        );
        assert_eq!(
            h.header("Content-Type").as_deref(),
            Some("application/json")
        );
        assert_eq!(h.header("x-missing"), None);
        assert_eq!(h.header("x-extr"), None);
    }
}
