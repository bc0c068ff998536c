//! The HTTP source: the Open Inference Protocol (V2) over axum, plus MLRun-style body routing
//! (`POST /` with `model` in the body).
//!
//! [`router`] builds the app from its state, apart from any listener, so tests drive it with
//! `tower::ServiceExt::oneshot` and the binary serves it on a socket.

use std::sync::Arc;

use arc_swap::ArcSwapOption;
use axum::body::{Body, Bytes};
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::json;
use tokio::sync::Semaphore;

use crate::error::{Error, ErrorKind};
use crate::event::{ATTRIBUTIONS, Target};
use crate::graph::Graph;
use crate::protocol::{self, decode_request, encode_response};
use crate::tracking::{TrackContext, Tracker, run_tracked};

/// The binary tensor extension's header: the JSON part's length.
pub const HEADER_CONTENT_LENGTH: &str = "inference-header-content-length";
/// Headers that name the model and version when neither the URL nor the body does.
pub const MODEL_HEADER: &str = "x-model-name";
pub const VERSION_HEADER: &str = "x-model-version";

/// Settings of the HTTP source.
#[derive(Clone, Debug)]
pub struct HttpConfig {
    /// Largest request body accepted; larger ones get 413.
    pub max_body_bytes: usize,
    /// The admin endpoints (`/admin/*`); off (404) without.
    pub admin: Option<Admin>,
}

impl Default for HttpConfig {
    fn default() -> Self {
        HttpConfig {
            max_body_bytes: 16 * 1024 * 1024,
            admin: None,
        }
    }
}

/// What a reload answers: a summary, or every error that kept the old graph serving.
pub type ReloadResult = Result<serde_json::Value, String>;

/// The admin endpoints' settings: the bearer token they require, and where reloads go.
#[derive(Clone)]
pub struct Admin {
    pub token: String,
    pub reload: tokio::sync::mpsc::Sender<tokio::sync::oneshot::Sender<ReloadResult>>,
}

impl std::fmt::Debug for Admin {
    /// Never shows the token.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Admin { token: <redacted> }")
    }
}

/// A graph being served, with its admission limit and its tracking stream.
pub struct Served {
    pub graph: Arc<Graph>,
    in_flight: Semaphore,
    tracker: Option<Tracker>,
    metrics: crate::metrics::RequestMetrics,
}

impl Served {
    pub fn new(graph: Arc<Graph>, tracker: Option<Tracker>) -> Served {
        let permits = graph.max_in_flight;
        Served {
            metrics: crate::metrics::RequestMetrics::new(&graph.name, "http"),
            graph,
            in_flight: Semaphore::new(permits),
            tracker,
        }
    }
}

/// What the handlers share: the graph once it is loaded (`None` while models load).
pub struct AppState {
    served: ArcSwapOption<Served>,
    config: HttpConfig,
}

impl AppState {
    /// A state with nothing loaded yet: every model route answers 503 until [`AppState::serve`].
    pub fn new(config: HttpConfig) -> Arc<AppState> {
        Arc::new(AppState {
            served: ArcSwapOption::empty(),
            config,
        })
    }

    /// Starts serving `graph` (with its tracking stream, if any); requests already running
    /// finish on the graph they started on.
    pub fn serve(&self, graph: Arc<Graph>, tracker: Option<Tracker>) {
        self.served
            .store(Some(Arc::new(Served::new(graph, tracker))));
    }

    /// Stops serving: drops the graph (and so its tracker, letting the tracking writer drain).
    pub fn unload(&self) {
        self.served.store(None);
    }

    fn current(&self) -> Result<Arc<Served>, Error> {
        self.served
            .load_full()
            .ok_or_else(|| Error::unavailable("not ready: models are loading"))
    }
}

/// The HTTP status of an error kind (the one mapping is [`ErrorKind::status`]).
pub fn status_of(kind: ErrorKind) -> StatusCode {
    StatusCode::from_u16(kind.status()).expect("a valid status")
}

impl IntoResponse for Error {
    fn into_response(self) -> Response {
        let status = status_of(self.kind);
        if self.kind == ErrorKind::Internal {
            tracing::warn!(status = status.as_u16(), error = %self, "request failed");
        } else {
            tracing::debug!(status = status.as_u16(), error = %self, "request refused");
        }
        let mut response = (status, Json(json!({ "error": self.to_string() }))).into_response();
        if status == StatusCode::TOO_MANY_REQUESTS {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
        }
        response
    }
}

/// The app: every OIP route, body routing at `/`, and a JSON 404 for anything else.
pub fn router(state: Arc<AppState>) -> Router {
    Router::new()
        .route("/", post(infer_body_routed))
        .route("/v2", get(server_metadata))
        .route("/v2/health/live", get(live))
        .route("/v2/health/ready", get(ready))
        .route("/v2/models/{model}", get(model_metadata))
        .route(
            "/v2/models/{model}/versions/{version}",
            get(model_metadata_version),
        )
        .route("/v2/models/{model}/ready", get(model_ready))
        .route(
            "/v2/models/{model}/versions/{version}/ready",
            get(model_ready_version),
        )
        .route("/v2/models/{model}/infer", post(infer))
        .route(
            "/v2/models/{model}/versions/{version}/infer",
            post(infer_version),
        )
        .route("/metrics", get(metrics))
        .route("/admin/reload", post(admin_reload))
        .route("/v2/models/{model}/feedback", post(feedback))
        .route("/v2/models/{model}/stats", get(stats))
        .route("/v2/models/{model}/explain", post(explain))
        .route(
            "/v2/models/{model}/versions/{version}/explain",
            post(explain_version),
        )
        .fallback(not_found)
        .with_state(state)
}

async fn not_found(method: Method, uri: Uri) -> Error {
    Error::not_found(format!("no route for {method} {}", uri.path()))
}

async fn server_metadata() -> Json<serde_json::Value> {
    Json(json!({
        "name": "servegraph",
        "version": env!("CARGO_PKG_VERSION"),
        "extensions": ["binary_tensor_data"],
    }))
}

async fn live() -> Json<serde_json::Value> {
    Json(json!({ "live": true }))
}

async fn ready(State(state): State<Arc<AppState>>) -> Result<Json<serde_json::Value>, Error> {
    state.current()?;
    Ok(Json(json!({ "ready": true })))
}

async fn model_metadata(
    State(state): State<Arc<AppState>>,
    Path(model): Path<String>,
) -> Result<Json<serde_json::Value>, Error> {
    metadata(&state, &model, None)
}

async fn model_metadata_version(
    State(state): State<Arc<AppState>>,
    Path((model, version)): Path<(String, String)>,
) -> Result<Json<serde_json::Value>, Error> {
    metadata(&state, &model, Some(&version))
}

fn metadata(
    state: &AppState,
    model: &str,
    version: Option<&str>,
) -> Result<Json<serde_json::Value>, Error> {
    let served = state.current()?;
    find_model(&served.graph, model, version)?;
    let versions: Vec<String> = served
        .graph
        .models()
        .iter()
        .filter(|m| m.name == model)
        .map(|m| m.version.clone().unwrap_or_else(|| "1".to_owned()))
        .collect();
    let info = served.graph.model(model, version).expect("found above");
    Ok(Json(json!({
        "name": info.name,
        "versions": versions,
        "platform": info.platform,
        "inputs": info.inputs,
        "outputs": info.outputs,
    })))
}

fn find_model(graph: &Graph, model: &str, version: Option<&str>) -> Result<(), Error> {
    if graph.model(model, version).is_some() {
        return Ok(());
    }
    if let Some(v) = version
        && graph.model(model, None).is_some()
    {
        return Err(Error::not_found(format!(
            "model `{model}` has no version `{v}`"
        )));
    }
    let mut names: Vec<&str> = graph.models().iter().map(|m| m.name.as_str()).collect();
    names.dedup();
    Err(Error::not_found(format!(
        "unknown model `{model}`; this server's models are: {}",
        names.join(", ")
    )))
}

async fn model_ready(
    State(state): State<Arc<AppState>>,
    Path(model): Path<String>,
) -> Result<Json<serde_json::Value>, Error> {
    let served = state.current()?;
    find_model(&served.graph, &model, None)?;
    Ok(Json(json!({ "name": model, "ready": true })))
}

async fn model_ready_version(
    State(state): State<Arc<AppState>>,
    Path((model, version)): Path<(String, String)>,
) -> Result<Json<serde_json::Value>, Error> {
    let served = state.current()?;
    find_model(&served.graph, &model, Some(&version))?;
    Ok(Json(json!({ "name": model, "ready": true })))
}

async fn infer(
    State(state): State<Arc<AppState>>,
    Path(model): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    run_infer(&state, Some(&model), None, &headers, body, false).await
}

async fn infer_version(
    State(state): State<Arc<AppState>>,
    Path((model, version)): Path<(String, String)>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    run_infer(&state, Some(&model), Some(&version), &headers, body, false).await
}

/// Like `infer`, with per-feature attributions from the models that can explain.
async fn explain(
    State(state): State<Arc<AppState>>,
    Path(model): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    run_infer(&state, Some(&model), None, &headers, body, true).await
}

async fn explain_version(
    State(state): State<Arc<AppState>>,
    Path((model, version)): Path<(String, String)>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    run_infer(&state, Some(&model), Some(&version), &headers, body, true).await
}

/// The step named `name` that learns from feedback (a router), or a 404.
fn learner<'a>(served: &'a Served, name: &str) -> Result<&'a dyn crate::Step, Error> {
    served
        .graph
        .learner(name)
        .ok_or_else(|| Error::not_found(format!("no router `{name}` that takes feedback")))
}

/// `POST /v2/models/{router}/feedback`: `{"id", "reward"}`, a batch `[...]` of those, or
/// Seldon's `{"request", "response", "reward", "truth"}` (the route from the response's
/// `parameters.route` when its id is not remembered).
async fn feedback(
    State(state): State<Arc<AppState>>,
    Path(model): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Result<Json<serde_json::Value>, Error> {
    let served = state.current()?;
    let router = learner(&served, &model)?;
    let body = read_body(body, &headers, state.config.max_body_bytes).await?;
    let value: serde_json::Value = serde_json::from_slice(&body)
        .map_err(|e| Error::bad_request(format!("malformed feedback: {e}")))?;
    let (items, single) = crate::feedback::parse(&value)?;
    let (mut accepted, mut duplicates, mut unknown) = (0, 0, Vec::new());
    for item in items {
        match (item.id, item.route) {
            (Some(id), route) => match router.feedback(id, item.reward) {
                Ok(true) => accepted += 1,
                Ok(false) => duplicates += 1,
                Err(e) if e.kind == ErrorKind::NotFound => match route {
                    Some(route) => {
                        router.feedback_route(route, item.reward)?;
                        accepted += 1;
                    }
                    None if single => return Err(e),
                    None => unknown.push(id.to_owned()),
                },
                Err(e) => return Err(e),
            },
            (None, Some(route)) => {
                router.feedback_route(route, item.reward)?;
                accepted += 1;
            }
            (None, None) => unreachable!("parse requires an id or a route"),
        }
    }
    Ok(Json(
        json!({ "accepted": accepted, "duplicates": duplicates, "unknown": unknown }),
    ))
}

/// `POST /admin/reload`: re-reads the graph file; 200 with a summary when the new graph
/// serves, 422 with every error when the old one keeps serving. 401 without the bearer token;
/// 404 when no token is configured (admin endpoints off).
async fn admin_reload(
    State(state): State<Arc<AppState>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
) -> Response {
    let Some(admin) = &state.config.admin else {
        return not_found(method, uri).await.into_response();
    };
    let given = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or_default();
    if !bool::from(subtle::ConstantTimeEq::ct_eq(
        given.as_bytes(),
        admin.token.as_bytes(),
    )) {
        let mut response = (
            StatusCode::UNAUTHORIZED,
            Json(json!({"error": "admin endpoints need `Authorization: Bearer <token>`"})),
        )
            .into_response();
        response
            .headers_mut()
            .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        return response;
    }
    let (reply, answer) = tokio::sync::oneshot::channel();
    if admin.reload.send(reply).await.is_err() {
        return Error::unavailable("the server is stopping").into_response();
    }
    match answer.await {
        Ok(Ok(summary)) => Json(summary).into_response(),
        Ok(Err(errors)) => (
            StatusCode::UNPROCESSABLE_ENTITY,
            Json(json!({"error": errors, "reloaded": false})),
        )
            .into_response(),
        Err(_) => Error::unavailable("the server is stopping").into_response(),
    }
}

/// `GET /metrics`: Prometheus metrics (see [`crate::metrics`]).
async fn metrics(State(state): State<Arc<AppState>>) -> Result<Response, Error> {
    let graph = state.served.load_full().map(|s| Arc::clone(&s.graph));
    let text = crate::metrics::render(graph)
        .map_err(|_| Error::internal("the metrics could not be encoded"))?;
    Ok(([(header::CONTENT_TYPE, crate::metrics::CONTENT_TYPE)], text).into_response())
}

/// `GET /v2/models/{router}/stats`: per route, requests, rewards and the policy's estimate.
async fn stats(
    State(state): State<Arc<AppState>>,
    Path(model): Path<String>,
) -> Result<Json<serde_json::Value>, Error> {
    let served = state.current()?;
    let router = learner(&served, &model)?;
    Ok(Json(router.stats().expect("a learner has stats")))
}

/// MLRun-style: `POST /` with the model (route) in the body's `model` field or the
/// `x-model-name` header; the graph's own policy otherwise.
async fn infer_body_routed(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    run_infer(&state, None, None, &headers, body, false).await
}

async fn run_infer(
    state: &AppState,
    model: Option<&str>,
    version: Option<&str>,
    headers: &HeaderMap,
    body: Body,
    explain: bool,
) -> Response {
    let start = std::time::Instant::now();
    let served = match state.current() {
        Ok(served) => served,
        Err(e) => return e.into_response(),
    };
    let _in_flight = served.metrics.start();
    let span = crate::telemetry::enabled()
        .then(|| {
            let named = model.unwrap_or(&served.graph.name);
            crate::telemetry::request_span(
                format!("{} {named}", if explain { "explain" } else { "infer" }),
                opentelemetry::trace::SpanKind::Server,
                |h| {
                    headers
                        .get(h)
                        .and_then(|v| v.to_str().ok())
                        .map(str::to_owned)
                },
                vec![
                    opentelemetry::KeyValue::new("servegraph.graph", served.graph.name.clone()),
                    opentelemetry::KeyValue::new("servegraph.model", named.to_owned()),
                ],
            )
        })
        .flatten();
    let trace = span.as_ref().map(|s| s.context());
    let to = Addressed {
        model,
        version,
        explain,
    };
    let (response, model_time, error) =
        match try_infer(state, &served, to, headers, body, trace).await {
            Ok((response, model_time)) => (response, Some(model_time), None),
            Err(e) => {
                let message = e.to_string();
                (e.into_response(), None, Some(message))
            }
        };
    let code = response.status().as_u16();
    served.metrics.finish(code, start.elapsed(), model_time);
    if let Some(span) = span {
        span.end(code, error.as_deref());
    }
    response
}

/// What a request's URL addresses.
struct Addressed<'a> {
    model: Option<&'a str>,
    version: Option<&'a str>,
    explain: bool,
}

/// Serves one request; the response and the time its models took.
async fn try_infer(
    state: &AppState,
    served: &Served,
    to: Addressed<'_>,
    headers: &HeaderMap,
    body: Body,
    trace: Option<opentelemetry::Context>,
) -> Result<(Response, std::time::Duration), Error> {
    let Addressed {
        model: url_model,
        version: url_version,
        explain,
    } = to;
    let graph = &served.graph;
    if let Some(model) = url_model {
        find_model(graph, model, url_version)?;
    }
    let _permit = served.in_flight.try_acquire().map_err(|_| {
        Error::new(
            ErrorKind::Overloaded,
            format!(
                "too many requests in flight (max_in_flight is {})",
                graph.max_in_flight
            ),
        )
    })?;
    let body = read_body(body, headers, state.config.max_body_bytes).await?;
    let json_len = match headers.get(HEADER_CONTENT_LENGTH) {
        None => None,
        Some(v) => Some(
            v.to_str()
                .ok()
                .and_then(|s| s.trim().parse::<usize>().ok())
                .ok_or_else(|| {
                    Error::bad_request("Inference-Header-Content-Length must be a byte count")
                })?,
        ),
    };
    let request = decode_request(&body, json_len)?;
    graph.check_request(&request.event)?;
    let mut event = request.event;
    for name in &graph.headers {
        if let Some(v) = headers.get(name.as_str()).and_then(|v| v.to_str().ok()) {
            event.headers.push((name.clone(), v.to_owned()));
        }
    }
    if event.id.is_empty() {
        event.id = protocol::new_id();
    }
    // The route: a route named in the URL; else (the URL names the graph, or `POST /`) the
    // body's `model`, else the `x-model-name` header; else the graph's own policy decides.
    let header = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    };
    let target = match url_model {
        Some(m) if m != graph.name => Some(Target {
            model: m.to_owned(),
            version: url_version.map(str::to_owned),
        }),
        _ => {
            let named = event.target.take().or_else(|| {
                header(MODEL_HEADER).map(|model| Target {
                    model,
                    version: header(VERSION_HEADER),
                })
            });
            if let Some(t) = &named {
                find_model(graph, &t.model, t.version.as_deref())?;
            }
            named
        }
    };
    let (model_name, model_version) = match &target {
        Some(t) => (
            t.model.clone(),
            graph
                .model(&t.model, t.version.as_deref())
                .and_then(|m| m.version.clone()),
        ),
        None => (graph.name.clone(), None),
    };
    event.target = target.filter(|t| t.model != graph.name);
    event.explain = explain;
    event.trace = trace;

    let done = match served.tracker.as_ref().filter(|t| t.sampled()) {
        None => graph.run(event).await?,
        Some(tracker) => {
            let ctx = TrackContext {
                graph,
                model: &model_name,
                version: model_version.as_deref(),
                explain,
            };
            run_tracked(tracker, ctx, event).await?
        }
    };
    if explain && done.get(ATTRIBUTIONS).is_none() {
        return Err(Error::bad_request(format!(
            "`{model_name}` cannot explain: no model on the route it took gives `{ATTRIBUTIONS}` \
             (explain works on tabular ONNX models)"
        )));
    }
    let encoded = encode_response(
        &done,
        &model_name,
        model_version.as_deref(),
        &request.outputs,
        request.binary_output,
    )?;
    let mut response = Response::new(Body::from(encoded.body));
    if done.stopped {
        // Handed on (a queue step): accepted, the result goes elsewhere.
        *response.status_mut() = StatusCode::ACCEPTED;
    }
    let h = response.headers_mut();
    match encoded.json_len {
        Some(n) => {
            h.insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/octet-stream"),
            );
            h.insert(HEADER_CONTENT_LENGTH, HeaderValue::from(n));
        }
        None => {
            h.insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            );
        }
    }
    Ok((response, done.model_time))
}

/// Reads the body up to `limit` bytes; a declared or actual larger body is a 413.
async fn read_body(body: Body, headers: &HeaderMap, limit: usize) -> Result<Bytes, Error> {
    let too_large = || {
        Error::new(
            ErrorKind::PayloadTooLarge,
            format!("the request body is larger than the limit of {limit} bytes"),
        )
    };
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|s| s.parse::<usize>().ok());
    if declared.is_some_and(|n| n > limit) {
        return Err(too_large());
    }
    axum::body::to_bytes(body, limit).await.map_err(|e| {
        let inner = e.into_inner();
        let mut source: Option<&(dyn std::error::Error + 'static)> = Some(inner.as_ref());
        while let Some(err) = source {
            if err.is::<http_body_util::LengthLimitError>() {
                return too_large();
            }
            source = err.source();
        }
        Error::bad_request(format!("cannot read the request body: {inner}"))
    })
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use axum::http::Request;
    use http_body_util::BodyExt;
    use tokio::sync::Notify;
    use tower::ServiceExt;

    use super::*;
    use crate::event::Event;
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
        assert_eq!(body_json(r).await["error"], "not ready: models are loading");
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
        while state.current().unwrap().in_flight.available_permits() > 0 {
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
}
