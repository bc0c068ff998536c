//! The HTTP source: the Open Inference Protocol (V2) over axum, plus MLRun-style body routing
//! (`POST /` with `model` in the body).
//!
//! [`router`] builds the app from its state, apart from any listener, so tests drive it with
//! `tower::ServiceExt::oneshot` and the binary serves it on a socket.

use std::borrow::Cow;
use std::sync::Arc;

use arc_swap::ArcSwapOption;
use axum::body::{Body, Bytes};
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::json;

use crate::error::{Error, ErrorKind};
use crate::graph::Graph;
use crate::request::{Encoding, Headers, Pipeline, Request, SpanInfo};
use crate::tracking::Tracker;

pub use crate::request::{HEADER_CONTENT_LENGTH, MODEL_HEADER, VERSION_HEADER};

impl Headers for HeaderMap {
    fn header(&self, name: &str) -> Option<Cow<'_, str>> {
        self.get(name)
            .and_then(|v| v.to_str().ok())
            .map(Cow::Borrowed)
    }
}

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

/// What an admin action answers: a summary, or why the old graph keeps serving.
pub type ReloadResult = Result<serde_json::Value, Error>;

/// What the admin endpoints ask of the server (which owns the graph file and the model
/// repository, and applies one change at a time).
#[derive(Debug)]
pub enum AdminAction {
    /// Re-read the graph file (`POST /admin/reload`, SIGHUP).
    Reload,
    /// Triton's `POST /v2/repository/models/{model}/load`, with its body.
    Load {
        model: String,
        body: serde_json::Value,
    },
    /// Triton's `POST /v2/repository/models/{model}/unload`, with its body.
    Unload {
        model: String,
        body: serde_json::Value,
    },
    /// `POST /v2/repository/models/{model}/default` (`{"version": …}`): the version requests
    /// naming none get.
    Default { model: String, version: String },
}

/// One admin action and where its answer goes.
#[derive(Debug)]
pub struct AdminRequest {
    pub action: AdminAction,
    pub reply: tokio::sync::oneshot::Sender<ReloadResult>,
}

/// The admin endpoints' settings: the bearer token they require, and where actions go.
#[derive(Clone)]
pub struct Admin {
    pub token: String,
    pub reload: tokio::sync::mpsc::Sender<AdminRequest>,
}

impl Admin {
    /// Whether a request's headers carry the admin token (`Authorization: Bearer <token>`),
    /// compared in constant time.
    pub fn accepts(&self, headers: &dyn Headers) -> bool {
        let authorization = headers.header("authorization");
        let given = authorization
            .as_deref()
            .and_then(|v| v.strip_prefix("Bearer "))
            .unwrap_or_default();
        bool::from(subtle::ConstantTimeEq::ct_eq(
            given.as_bytes(),
            self.token.as_bytes(),
        ))
    }
}

impl std::fmt::Debug for Admin {
    /// Never shows the token.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Admin { token: <redacted> }")
    }
}

/// What the handlers share: the graph once it is loaded (`None` while models load).
pub struct AppState {
    served: ArcSwapOption<Pipeline>,
    config: HttpConfig,
    /// Shutting down: not ready, still serving (the grace period).
    draining: std::sync::atomic::AtomicBool,
}

impl AppState {
    /// A state with nothing loaded yet: every model route answers 503 until [`AppState::serve`].
    pub fn new(config: HttpConfig) -> Arc<AppState> {
        Arc::new(AppState {
            served: ArcSwapOption::empty(),
            config,
            draining: Default::default(),
        })
    }

    /// Starts serving `graph` (with its tracking stream, if any); requests already running
    /// finish on the graph they started on.
    pub fn serve(&self, graph: Arc<Graph>, tracker: Option<Tracker>) {
        let live = crate::graph::Live { graph, tracker };
        self.served
            .store(Some(Arc::new(Pipeline::new(&live, "http"))));
    }

    /// Stops serving: drops the graph (and so its tracker, letting the tracking writer drain).
    pub fn unload(&self) {
        self.served.store(None);
    }

    fn current(&self) -> Result<Arc<Pipeline>, Error> {
        self.served
            .load_full()
            .ok_or_else(|| Error::unavailable("not ready: models are loading"))
    }
}

/// The HTTP source: the app on a listener, plain or TLS. It listens from the moment it is
/// built (live, not ready: model routes answer 503 until it is started on a graph).
pub struct HttpSource {
    state: Arc<AppState>,
    server: Option<tokio::task::JoinHandle<std::io::Result<()>>>,
    /// Turns true to stop accepting and finish open requests.
    stop: tokio::sync::watch::Sender<bool>,
}

impl HttpSource {
    /// Serves `state`'s app on `listener`, over TLS when `tls` is given.
    pub fn listen(
        listener: tokio::net::TcpListener,
        state: Arc<AppState>,
        tls: Option<axum_server::tls_rustls::RustlsConfig>,
    ) -> std::io::Result<HttpSource> {
        let app = router(Arc::clone(&state));
        HttpSource::listen_app(listener, state, app, tls, false)
    }

    /// [`HttpSource::listen`] with an app built from `state` by the caller; `grpc` when it
    /// also serves gRPC on this port (HTTP/2 is then set up for large messages).
    pub fn listen_app(
        listener: tokio::net::TcpListener,
        state: Arc<AppState>,
        app: Router,
        tls: Option<axum_server::tls_rustls::RustlsConfig>,
        grpc: bool,
    ) -> std::io::Result<HttpSource> {
        let (server, stop) = spawn_app(listener, app, tls, grpc)?;
        Ok(HttpSource {
            state,
            server: Some(server),
            stop,
        })
    }
}

/// A running server: its task, and the switch that stops it accepting (open connections
/// finish their requests).
pub(crate) type Server = (
    tokio::task::JoinHandle<std::io::Result<()>>,
    tokio::sync::watch::Sender<bool>,
);

/// Serves `app` on `listener` (HTTP/1.1 and HTTP/2, gRPC included), over TLS when `tls` is
/// given (ALPN offers `h2` and `http/1.1`). With `grpc`, HTTP/2 is set up for large gRPC
/// messages ([`tune_http2`]).
pub(crate) fn spawn_app(
    listener: tokio::net::TcpListener,
    app: Router,
    tls: Option<axum_server::tls_rustls::RustlsConfig>,
    grpc: bool,
) -> std::io::Result<Server> {
    let (stop, mut stopped) = tokio::sync::watch::channel(false);
    let server = if tls.is_none() && !grpc {
        let server = axum::serve(listener, app).with_graceful_shutdown(async move {
            let _ = stopped.wait_for(|s| *s).await;
        });
        tokio::spawn(async move { server.await })
    } else {
        // Stops accepting on the signal; open connections finish their requests.
        let handle = axum_server::Handle::new();
        let stopping = handle.clone();
        tokio::spawn(async move {
            let _ = stopped.wait_for(|s| *s).await;
            stopping.graceful_shutdown(None);
        });
        let listener = listener.into_std()?;
        // Every acceptor sets TCP_NODELAY, as axum::serve does: without it a call's last small
        // frame (gRPC's trailers) waits for the peer's delayed ACK, tens of milliseconds per
        // call. gRPC's also reads through a buffer, and HTTP/2 is set up for large messages.
        macro_rules! serve_with {
            ($acceptor:expr, $grpc:expr) => {{
                let mut server = axum_server::from_tcp(listener)?
                    .acceptor($acceptor)
                    .handle(handle);
                if $grpc {
                    tune_http2(server.http_builder());
                }
                tokio::spawn(server.serve(app.into_make_service()))
            }};
        }
        use axum_server::tls_rustls::RustlsAcceptor;
        match (tls, grpc) {
            (Some(config), false) => serve_with!(
                RustlsAcceptor::new(config).acceptor(axum_server::accept::NoDelayAcceptor),
                false
            ),
            (Some(config), true) => {
                serve_with!(RustlsAcceptor::new(config).acceptor(GrpcAcceptor), true)
            }
            (None, _) => serve_with!(GrpcAcceptor, true),
        }
    };
    Ok((server, stop))
}

/// Accepts a gRPC connection: TCP_NODELAY, and reads through a 64 KiB buffer. HTTP/2's
/// frame reader asks the socket for one frame at a time (16 KiB, as most clients send them),
/// so a 1 MiB message took some 70 `recv` calls, each making the kernel send an ACK; the
/// buffer takes what the socket holds in one call (writes pass straight through).
#[derive(Clone, Copy, Debug)]
struct GrpcAcceptor;

impl<S> axum_server::accept::Accept<tokio::net::TcpStream, S> for GrpcAcceptor {
    type Stream = tokio::io::BufReader<tokio::net::TcpStream>;
    type Service = S;
    type Future = std::future::Ready<std::io::Result<(Self::Stream, S)>>;

    fn accept(&self, stream: tokio::net::TcpStream, service: S) -> Self::Future {
        std::future::ready(stream.set_nodelay(true).map(|()| {
            (
                tokio::io::BufReader::with_capacity(64 << 10, stream),
                service,
            )
        }))
    }
}

/// HTTP/2 for gRPC's large messages: HTTP/2's default 64 KiB flow-control window makes a
/// 1 MiB tensor wait for window updates (a round trip each), and 16 KiB frames cut it in 64;
/// windows of 4 MiB (stream) and 8 MiB (connection) and 4 MiB frames (what grpcio offers) let a message of
/// several MiB arrive without a stall. The windows bound what one connection can send ahead
/// of the server; at most 256 streams at once per connection.
fn tune_http2(
    builder: &mut hyper_util::server::conn::auto::Builder<hyper_util::rt::TokioExecutor>,
) {
    builder
        .http2()
        .initial_stream_window_size(4 << 20)
        .initial_connection_window_size(8 << 20)
        .max_frame_size(4 << 20)
        .max_send_buf_size(4 << 20)
        .max_concurrent_streams(256);
}

/// Follows the process's phase for a server: `draining` turns true in the grace period
/// (not ready, still serving); once stopping, stops accepting and waits (up to the drain
/// deadline) for open requests to finish.
pub(crate) async fn follow_phase(
    what: &'static str,
    server: tokio::task::JoinHandle<std::io::Result<()>>,
    stop: tokio::sync::watch::Sender<bool>,
    draining: &std::sync::atomic::AtomicBool,
    mut ctx: crate::sources::SourceContext,
) {
    use crate::sources::{Phase, SourceContext};
    SourceContext::reached(&mut ctx.phase, Phase::Draining).await;
    // Not ready, so load balancers stop sending; still accepting and serving.
    draining.store(true, std::sync::atomic::Ordering::Relaxed);
    SourceContext::reached(&mut ctx.phase, Phase::Stopping).await;
    let _ = stop.send(true);
    match tokio::time::timeout(ctx.drain, server).await {
        Ok(Ok(Ok(()))) => {}
        Ok(Ok(Err(e))) => tracing::error!(error = %e, "serving {what} failed"),
        Ok(Err(e)) => tracing::error!(error = %e, "the {what} server panicked"),
        Err(_) => tracing::warn!(
            secs = ctx.drain.as_secs(),
            "{what} requests still running after the drain deadline"
        ),
    }
}

#[async_trait::async_trait]
impl crate::sources::Source for HttpSource {
    fn name(&self) -> &'static str {
        "http"
    }

    async fn start(
        &mut self,
        ctx: crate::sources::SourceContext,
    ) -> Result<tokio::task::JoinHandle<()>, String> {
        let live = ctx.live.borrow().clone();
        self.state.serve(live.graph, live.tracker);
        let (state, stop) = (Arc::clone(&self.state), self.stop.clone());
        let server = self
            .server
            .take()
            .ok_or("the HTTP source is started twice")?;
        Ok(tokio::spawn(async move {
            follow_phase("HTTP", server, stop, &state.draining, ctx).await
        }))
    }

    fn reload(&self, live: &crate::graph::Live) {
        self.state
            .serve(Arc::clone(&live.graph), live.tracker.clone());
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
        // MLRun's spelling of infer (its body shape works at both).
        .route("/v2/models/{model}/predict", post(infer))
        .route(
            "/v2/models/{model}/versions/{version}/predict",
            post(infer_version),
        )
        .route("/metrics", get(metrics))
        .route("/admin/reload", post(admin_reload))
        .route("/v2/models/{model}/feedback", post(feedback))
        .route("/v2/models/{model}/experiment", get(experiment))
        .route("/v2/models/stats", get(all_statistics))
        .route("/v2/models/{model}/stats", get(statistics))
        .route(
            "/v2/models/{model}/versions/{version}/stats",
            get(statistics_version),
        )
        .route("/v2/models/{model}/config", get(config))
        .route(
            "/v2/models/{model}/versions/{version}/config",
            get(config_version),
        )
        .route("/v2/repository/index", post(repository_index))
        .route(
            "/v2/repository/models/{model}/{action}",
            post(repository_action),
        )
        .route("/v2/models/{model}/explain", post(explain))
        .route(
            "/v2/models/{model}/versions/{version}/explain",
            post(explain_version),
        )
        // Custom operations (MLRun's `op_<name>`): the paths above take precedence.
        .route("/v2/models/{model}/{operation}", post(operation))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .with_state(state)
        // `Content-Encoding: gzip|deflate` bodies are read decompressed (the body limit counts
        // what they decompress to), and answers are compressed when `Accept-Encoding` asks.
        .layer(tower_http::decompression::RequestDecompressionLayer::new())
        .layer(axum::middleware::map_response(unsupported_encoding))
        .layer(tower_http::compression::CompressionLayer::new())
}

/// The decompression layer's bare 415 for a `Content-Encoding` it cannot read, as an
/// `{"error"}` naming the ones it can.
async fn unsupported_encoding(response: Response) -> Response {
    if response.status() != StatusCode::UNSUPPORTED_MEDIA_TYPE {
        return response;
    }
    let mut answer = (
        StatusCode::UNSUPPORTED_MEDIA_TYPE,
        Json(json!({
            "error": "the request's Content-Encoding is not one this server reads: send gzip, deflate or identity"
        })),
    )
        .into_response();
    if let Some(accept) = response.headers().get(header::ACCEPT_ENCODING) {
        answer
            .headers_mut()
            .insert(header::ACCEPT_ENCODING, accept.clone());
    }
    answer
}

async fn not_found(method: Method, uri: Uri) -> Error {
    Error::not_found(format!("no route for {method} {}", uri.path()))
}

/// A path served for another method (a GET on `/infer`): 405 with `Allow` and an `{"error"}`
/// naming the method to use. Every path takes one method: inference, feedback, operations
/// and reloads are POSTs, the rest GETs.
async fn method_not_allowed(method: Method, uri: Uri) -> Response {
    let path = uri.path();
    let gets = ["/v2", "/metrics", "/v2/health/live", "/v2/health/ready"];
    let post = path == "/" || path == "/admin/reload";
    let get = !post
        && (gets.contains(&path)
            || path.ends_with("/ready")
            || path.ends_with("/stats")
            || path.split('/').count() <= 4
            || (path.contains("/versions/") && path.split('/').count() == 6));
    let allowed = if get { "GET" } else { "POST" };
    let error = Error::new(
        ErrorKind::MethodNotAllowed,
        format!("{method} is not served at {path}: use {allowed}"),
    );
    let mut response = error.into_response();
    response
        .headers_mut()
        .insert(header::ALLOW, HeaderValue::from_static(allowed));
    response
}

/// The protocol extensions the server metadata lists (HTTP and gRPC alike).
pub const EXTENSIONS: [&str; 6] = [
    "binary_tensor_data",
    "classification",
    "model_configuration",
    "model_repository",
    "statistics",
    "parameters",
];

async fn server_metadata() -> Json<serde_json::Value> {
    Json(json!({
        "name": "servegraph",
        "version": env!("CARGO_PKG_VERSION"),
        "extensions": EXTENSIONS,
    }))
}

async fn live() -> Json<serde_json::Value> {
    Json(json!({ "live": true }))
}

async fn ready(State(state): State<Arc<AppState>>) -> Result<Json<serde_json::Value>, Error> {
    let served = state.current()?;
    server_readiness(
        &served,
        state.draining.load(std::sync::atomic::Ordering::Relaxed),
    )?;
    Ok(Json(json!({ "ready": true })))
}

/// The server's readiness: not while shutting down, nor while a step is not ready.
pub(crate) fn server_readiness(served: &Pipeline, draining: bool) -> Result<(), Error> {
    if draining {
        return Err(Error::unavailable("not ready: shutting down"));
    }
    if let Some(why) = served.graph.unready() {
        return Err(Error::unavailable(format!("not ready: {why}")));
    }
    Ok(())
}

/// A model's readiness: the step that serves it says whether it can.
pub(crate) fn model_is_ready(
    served: &Pipeline,
    model: &str,
    version: Option<&str>,
) -> Result<(), Error> {
    served.graph.find_model(model, version)?;
    match served
        .graph
        .model_step(model, version)
        .and_then(|s| s.model())
        .and_then(|m| m.unready())
    {
        Some(why) => Err(Error::unavailable(format!(
            "model `{model}` is not ready: {why}"
        ))),
        None => Ok(()),
    }
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
    served.graph.metadata(model, version).map(Json)
}

async fn model_ready(
    State(state): State<Arc<AppState>>,
    Path(model): Path<String>,
) -> Result<Json<serde_json::Value>, Error> {
    let served = state.current()?;
    model_is_ready(&served, &model, None)?;
    Ok(Json(json!({ "name": model, "ready": true })))
}

async fn model_ready_version(
    State(state): State<Arc<AppState>>,
    Path((model, version)): Path<(String, String)>,
) -> Result<Json<serde_json::Value>, Error> {
    let served = state.current()?;
    model_is_ready(&served, &model, Some(&version))?;
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

/// `POST /v2/models/{model}/{operation}`: a custom operation of the step serving `model`
/// (an MLRun model's `op_<name>(event)`), JSON in and out.
async fn operation(
    State(state): State<Arc<AppState>>,
    Path((model, name)): Path<(String, String)>,
    headers: HeaderMap,
    body: Body,
) -> Result<Json<serde_json::Value>, Error> {
    let served = state.current()?;
    let step = served
        .graph
        .find_step(&model)
        .ok_or_else(|| Error::not_found(format!("no model `{model}`")))?;
    let body = read_body(body, &headers, state.config.max_body_bytes).await?;
    let value: serde_json::Value = if body.is_empty() {
        serde_json::Value::Null
    } else {
        serde_json::from_slice(&body)
            .map_err(|e| Error::bad_request(format!("`{name}` takes a JSON body: {e}")))?
    };
    let answer = match step.model() {
        Some(m) => m.operation(&name, value).await,
        None => None,
    };
    match answer {
        Some(answer) => answer.map(Json),
        None => Err(Error::not_found(format!(
            "model `{model}` has no operation `{name}` (it serves infer, predict and explain)"
        ))),
    }
}

/// The step named `name` that learns from feedback (a router), or a 404.
fn learner<'a>(served: &'a Pipeline, name: &str) -> Result<&'a dyn crate::Learner, Error> {
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

/// The admin settings when the request carries the admin token; else the answer: 404 when no
/// token is configured (admin endpoints off), 401 without the right bearer token.
async fn authorized<'a>(
    state: &'a AppState,
    method: Method,
    uri: Uri,
    headers: &HeaderMap,
) -> Result<&'a Admin, Response> {
    let Some(admin) = &state.config.admin else {
        return Err(not_found(method, uri).await.into_response());
    };
    if !admin.accepts(headers) {
        let mut response = (
            StatusCode::UNAUTHORIZED,
            Json(json!({"error": "admin endpoints need `Authorization: Bearer <token>`"})),
        )
            .into_response();
        response
            .headers_mut()
            .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        return Err(response);
    }
    Ok(admin)
}

/// Hands an action to the server and waits for its answer.
pub(crate) async fn act(admin: &Admin, action: AdminAction) -> ReloadResult {
    let (reply, answer) = tokio::sync::oneshot::channel();
    let stopping = || Error::unavailable("the server is stopping");
    admin
        .reload
        .send(AdminRequest { action, reply })
        .await
        .map_err(|_| stopping())?;
    answer.await.map_err(|_| stopping())?
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
    let admin = match authorized(&state, method, uri, &headers).await {
        Ok(admin) => admin,
        Err(response) => return response,
    };
    match act(admin, AdminAction::Reload).await {
        Ok(summary) => Json(summary).into_response(),
        Err(e) => (
            status_of(e.kind),
            Json(json!({"error": e.message, "reloaded": false})),
        )
            .into_response(),
    }
}

/// `GET /metrics`: Prometheus metrics (see [`crate::metrics`]).
async fn metrics(State(state): State<Arc<AppState>>) -> Result<Response, Error> {
    let graph = state.served.load_full().map(|s| Arc::clone(&s.graph));
    let text = crate::metrics::render(graph)
        .map_err(|_| Error::internal("the metrics could not be encoded"))?;
    Ok(([(header::CONTENT_TYPE, crate::metrics::CONTENT_TYPE)], text).into_response())
}

/// `GET /v2/models/{router}/experiment`: per route, requests, rewards and the policy's
/// estimate.
async fn experiment(
    State(state): State<Arc<AppState>>,
    Path(model): Path<String>,
) -> Result<Json<crate::LearnerStats>, Error> {
    let served = state.current()?;
    let router = learner(&served, &model)?;
    Ok(Json(router.stats()))
}

/// `GET /v2/models/stats`: every model's statistics (Triton's statistics extension).
async fn all_statistics(
    State(state): State<Arc<AppState>>,
) -> Result<Json<serde_json::Value>, Error> {
    let served = state.current()?;
    crate::stats::statistics(&served.graph, None, None).map(Json)
}

/// `GET /v2/models/{m}/stats`: the statistics of each version of `m`.
async fn statistics(
    State(state): State<Arc<AppState>>,
    Path(model): Path<String>,
) -> Result<Json<serde_json::Value>, Error> {
    let served = state.current()?;
    crate::stats::statistics(&served.graph, Some(&model), None).map(Json)
}

async fn statistics_version(
    State(state): State<Arc<AppState>>,
    Path((model, version)): Path<(String, String)>,
) -> Result<Json<serde_json::Value>, Error> {
    let served = state.current()?;
    crate::stats::statistics(&served.graph, Some(&model), Some(&version)).map(Json)
}

/// `GET /v2/models/{m}/config`: the model configuration in Triton's JSON shape.
async fn config(
    State(state): State<Arc<AppState>>,
    Path(model): Path<String>,
) -> Result<Json<serde_json::Value>, Error> {
    let served = state.current()?;
    model_config(&served.graph, &model, None).map(Json)
}

async fn config_version(
    State(state): State<Arc<AppState>>,
    Path((model, version)): Path<(String, String)>,
) -> Result<Json<serde_json::Value>, Error> {
    let served = state.current()?;
    model_config(&served.graph, &model, Some(&version)).map(Json)
}

/// Triton's configuration of a model: a batching model's `max_batch_size` is its `batch`
/// `max_size` and its `dims` leave out the batch dimension, as Triton's do; others have
/// `max_batch_size: 0` and their whole shapes.
pub fn model_config(
    graph: &Graph,
    model: &str,
    version: Option<&str>,
) -> Result<serde_json::Value, Error> {
    let info = graph.find_model(model, version)?;
    let step = graph
        .model_step(&info.name, info.version.as_deref())
        .filter(|_| info.name != graph.name || graph.models().len() == 1);
    let batching = step.and_then(|s| s.model()).and_then(|m| m.batching());
    let tensors = |list: &[crate::tensor::TensorMeta]| -> Vec<serde_json::Value> {
        list.iter()
            .map(|t| {
                let dims = match (batching, t.shape.split_first()) {
                    (Some(_), Some((_, rest))) => rest.to_vec(),
                    _ => t.shape.clone(),
                };
                json!({ "name": t.name, "data_type": triton_type(t.datatype), "dims": dims })
            })
            .collect()
    };
    let (platform, backend) = (info.platform.as_str(), info.platform.backend());
    let mut config = json!({
        "name": info.name,
        "platform": platform,
        "backend": backend,
        "version_policy": { "specific": { "versions": graph.versions(&info.name) } },
        "max_batch_size": batching.map_or(0, |(n, _)| n),
        "input": tensors(&info.inputs),
        "output": tensors(&info.outputs),
    });
    if let Some((n, wait)) = batching {
        config["dynamic_batching"] = json!({
            "preferred_batch_size": [n],
            "max_queue_delay_microseconds": wait.as_micros() as u64,
        });
    }
    Ok(config)
}

/// A datatype as Triton's model configuration spells it.
fn triton_type(d: crate::tensor::DataType) -> String {
    match d {
        crate::tensor::DataType::Bytes => "TYPE_STRING".to_owned(),
        other => format!("TYPE_{}", other.as_str()),
    }
}

/// `POST /v2/repository/index`: every served model with its version and state.
async fn repository_index(
    State(state): State<Arc<AppState>>,
) -> Result<Json<serde_json::Value>, Error> {
    let served = state.current()?;
    Ok(Json(serde_json::Value::Array(repository_entries(&served))))
}

/// The repository index: every served model with its version and state (`READY`, or
/// `UNAVAILABLE` with the reason), and the unloaded ones.
pub(crate) fn repository_entries(served: &Pipeline) -> Vec<serde_json::Value> {
    let graph = &served.graph;
    graph
        .models()
        .iter()
        .map(|m| {
            let version = m.version.as_deref().unwrap_or("1");
            match model_is_ready(served, &m.name, m.version.as_deref()) {
                Ok(()) => json!({ "name": m.name, "version": version, "state": "READY" }),
                Err(e) => json!({
                    "name": m.name, "version": version, "state": "UNAVAILABLE",
                    "reason": e.message,
                }),
            }
        })
        .chain(
            graph
                .repository()
                .models
                .iter()
                .filter(|e| !e.loaded)
                .map(|e| {
                    json!({
                        "name": e.name, "version": e.version, "state": "UNAVAILABLE",
                        "reason": "unloaded",
                    })
                }),
        )
        .collect()
}

/// `POST /v2/repository/models/{m}/load|unload|default`: Triton's load (with its
/// `parameters.config` and `file:` parameters) and unload, and servegraph's default version;
/// behind the admin token like `/admin/reload` (404 with none configured, 401 without it).
async fn repository_action(
    State(state): State<Arc<AppState>>,
    Path((model, action)): Path<(String, String)>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Body,
) -> Response {
    if !matches!(action.as_str(), "load" | "unload" | "default") {
        return Error::not_found(format!(
            "no route for POST /v2/repository/models/{model}/{action}: the actions are load, unload and default"
        ))
        .into_response();
    }
    let admin = match authorized(&state, method, uri, &headers).await {
        Ok(admin) => admin,
        Err(response) => return response,
    };
    let body = match read_body(body, &headers, state.config.max_body_bytes).await {
        Ok(b) => b,
        Err(e) => return e.into_response(),
    };
    let body: serde_json::Value = if body.is_empty() {
        json!({})
    } else {
        match serde_json::from_slice(&body) {
            Ok(v) => v,
            Err(e) => {
                return Error::bad_request(format!("the request body is not JSON: {e}"))
                    .into_response();
            }
        }
    };
    let action = match action.as_str() {
        "load" => AdminAction::Load { model, body },
        "unload" => AdminAction::Unload { model, body },
        _ => match body.get("version").and_then(|v| {
            v.as_str()
                .map(str::to_owned)
                .or_else(|| v.as_u64().map(|n| n.to_string()))
        }) {
            Some(version) => AdminAction::Default { model, version },
            None => {
                return Error::bad_request("`default` takes `{\"version\": \"<version>\"}`")
                    .into_response();
            }
        },
    };
    match act(admin, action).await {
        Ok(summary) => Json(summary).into_response(),
        Err(e) => e.into_response(),
    }
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
    let served = match state.current() {
        Ok(served) => served,
        Err(e) => return e.into_response(),
    };
    let request = Request {
        model,
        version,
        explain,
        headers,
        resume_after: None,
        encoding: Encoding::AsRequested,
        deadline: None,
    };
    let span = || {
        let named = model.unwrap_or(&served.graph.name);
        SpanInfo {
            name: format!("{} {named}", if explain { "explain" } else { "infer" }),
            kind: opentelemetry::trace::SpanKind::Server,
            attributes: vec![
                opentelemetry::KeyValue::new("servegraph.graph", served.graph.name.clone()),
                opentelemetry::KeyValue::new("servegraph.model", named.to_owned()),
            ],
        }
    };
    let body = read_body(body, headers, state.config.max_body_bytes);
    match served.handle(request, span, body).await {
        Ok(answer) => http_response(answer),
        Err(e) => e.into_response(),
    }
}

/// An answer as an HTTP response: JSON, or JSON then binary data (the binary extension).
fn http_response(answer: crate::request::Response) -> Response {
    let status = StatusCode::from_u16(answer.code()).expect("a valid status");
    let mut response = Response::new(Body::from(answer.body));
    *response.status_mut() = status;
    let h = response.headers_mut();
    match answer.json_len {
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
    response
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
}
