//! The HTTP transport: the REST protocols over axum, each a module of routes registered in
//! [`REST_PROTOCOLS`], all answering from the protocol service ([`crate::serve::Service`])
//! and the one request path. This module holds what they share: the state, the app, errors
//! as responses, reading bodies, inference.
//!
//! | file | what |
//! |---|---|
//! | `oip.rs` | the Open Inference Protocol (V2) and Triton's extensions: health, metadata, readiness, infer, explain, configuration, statistics, the repository |
//! | `servegraph.rs` | servegraph's own: feedback, experiments, custom operations, metrics, reload |
//! | `dashboard.rs` | servegraph's dashboard (part of servegraph's own routes): the page, embedded, and its data |
//! | `mlrun.rs` | MLRun's: `POST /` with the model in the body, `.../predict` |
//! | `seldon.rs` | Seldon Core's v1: `/api/v1.0/predictions`, `feedback`, `metadata` (also behind the gateway's `/seldon/...` prefixes), `/health/ping`, `/health/status` |
//! | `clipper.rs` | Clipper's query frontend: `POST /{app}/predict`, default outputs and SLOs |
//! | `kserve.rs` | KServe's v1: `GET /v1/models`, `GET /v1/models/{m}`, `POST /v1/models/{m}:predict`, `:explain` |
//!
//! A new REST protocol is a module of routes, with its
//! body codec ([`crate::protocol::Codec`]) handed to the request path, and one line in
//! [`REST_PROTOCOLS`].
//!
//! [`router`] builds the app from its state, apart from any listener, so tests drive it with
//! `tower::ServiceExt::oneshot` and the server (`crate::server`) serves it on a socket.

mod clipper;
mod dashboard;
mod kserve;
mod mlrun;
mod oip;
mod seldon;
mod servegraph;
#[cfg(test)]
mod tests;

use std::borrow::Cow;
use std::sync::Arc;

use axum::body::{Body, Bytes};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use axum::{Json, Router};
use serde_json::json;
use tower_http::body::UnsyncBoxBody;

use crate::error::{Error, ErrorKind};
use crate::graph::Graph;
use crate::request::{Encoding, Headers, Pipeline, Request, SpanInfo};
use crate::serve::{Admin, Refusal, Service};
use crate::tracking::Tracker;

pub use crate::request::{HEADER_CONTENT_LENGTH, MODEL_HEADER, VERSION_HEADER};

/// One REST protocol: its name and its routes.
pub struct RestProtocol {
    pub name: &'static str,
    pub routes: fn() -> Router<Arc<AppState>>,
}

/// Every REST protocol the HTTP transport serves, once. A path and method are served by one
/// protocol (axum refuses the same path and method twice), and literal segments win over
/// parameters.
pub const REST_PROTOCOLS: [RestProtocol; 6] = [
    RestProtocol {
        name: "oip",
        routes: oip::routes,
    },
    RestProtocol {
        name: "servegraph",
        routes: servegraph::routes,
    },
    RestProtocol {
        name: "mlrun",
        routes: mlrun::routes,
    },
    RestProtocol {
        name: "seldon",
        routes: seldon::routes,
    },
    RestProtocol {
        name: "clipper",
        routes: clipper::routes,
    },
    RestProtocol {
        name: "kserve-v1",
        routes: kserve::routes,
    },
];

/// Up to this many header values, a header is found by scanning the names ([`Headers`]).
const SCANNED_HEADERS: usize = 16;

impl Headers for HeaderMap {
    fn header(&self, name: &str) -> Option<Cow<'_, str>> {
        // A request carries a handful of headers: comparing their (lowercase) names with a
        // lowercase `name` is cheaper than the map's lookup, which parses `name` into a
        // header name and hashes it (~500 instructions for a long name, several per request).
        // Both give the name's first value.
        let value =
            if self.len() <= SCANNED_HEADERS && !name.bytes().any(|b| b.is_ascii_uppercase()) {
                self.iter()
                    .find(|(k, _)| k.as_str() == name)
                    .map(|(_, v)| v)
            } else {
                self.get(name)
            };
        value.and_then(|v| v.to_str().ok()).map(Cow::Borrowed)
    }

    fn for_each(&self, each: &mut dyn FnMut(&str, &str) -> bool) {
        for (name, value) in self {
            if let Ok(value) = value.to_str()
                && !each(name.as_str(), value)
            {
                return;
            }
        }
    }
}

/// Settings of the HTTP transport.
#[derive(Clone, Debug)]
pub struct HttpConfig {
    /// Largest request body accepted; larger ones get 413.
    pub max_body_bytes: usize,
    /// The admin endpoints (`/admin/*`); off (404) without.
    pub admin: Option<Admin>,
    /// The dashboard (`GET /dashboard`, `GET /dashboard/data`); off (404) without. Behind the
    /// admin token when one is set.
    pub dashboard: bool,
}

impl Default for HttpConfig {
    fn default() -> Self {
        HttpConfig {
            max_body_bytes: 16 * 1024 * 1024,
            admin: None,
            dashboard: false,
        }
    }
}

/// What the handlers share: the protocol service, and the body limit.
pub struct AppState {
    service: Arc<Service>,
    max_body_bytes: usize,
    dashboard: bool,
}

impl AppState {
    /// A state with nothing loaded yet: every model route answers 503 until [`AppState::serve`].
    pub fn new(config: HttpConfig) -> Arc<AppState> {
        Arc::new(AppState {
            service: Service::new("http", config.admin),
            max_body_bytes: config.max_body_bytes,
            dashboard: config.dashboard,
        })
    }

    /// Starts serving `graph` (with its tracking stream, if any); requests already running
    /// finish on the graph they started on.
    pub fn serve(&self, graph: Arc<Graph>, tracker: Option<Tracker>) {
        self.service.serve(&crate::graph::Live { graph, tracker });
    }

    /// Stops serving: drops the graph (and so its tracker, letting the tracking writer drain).
    pub fn unload(&self) {
        self.service.unload();
    }

    fn current(&self) -> Result<Arc<Pipeline>, Error> {
        self.service.current()
    }

    /// Reads a request body within the limit (413 past it).
    async fn body(&self, body: Body, headers: &HeaderMap) -> Result<Bytes, Error> {
        read_body(body, headers, self.max_body_bytes).await
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
        app: impl crate::serve::listen::Served,
        tls: Option<axum_server::tls_rustls::RustlsConfig>,
        grpc: bool,
    ) -> std::io::Result<HttpSource> {
        let (server, stop) = crate::serve::listen::spawn_app(listener, app, tls, grpc)?;
        Ok(HttpSource {
            state,
            server: Some(server),
            stop,
        })
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
    ) -> Result<tokio::task::JoinHandle<()>, crate::sources::StartError> {
        let live = ctx.live.borrow().clone();
        self.state.service.serve(&live);
        self.state.service.follow(&ctx.health);
        let (state, stop) = (Arc::clone(&self.state), self.stop.clone());
        let server = self
            .server
            .take()
            .ok_or("the HTTP source is started twice")?;
        Ok(tokio::spawn(async move {
            crate::serve::listen::follow_phase("HTTP", server, stop, &state.service, ctx).await
        }))
    }

    fn reload(&self, live: &crate::graph::Live) {
        self.state.service.serve(live);
    }
}

/// The HTTP status of an error kind (the one mapping is [`ErrorKind::status`]).
pub fn status_of(kind: ErrorKind) -> StatusCode {
    StatusCode::from_u16(kind.status()).expect("a valid status")
}

/// Logs a failed request: an internal failure at warn (the same one once a minute), anything
/// else at debug.
fn log_failure(error: &Error) {
    let status = status_of(error.kind);
    if error.kind == ErrorKind::Internal
        && crate::logs::first_in_a_while(&(status.as_u16(), &error.message, &error.step))
    {
        tracing::warn!(status = status.as_u16(), %error, "request failed (the same failure is logged again after a minute at the earliest)");
    } else {
        tracing::debug!(status = status.as_u16(), %error, "request refused");
    }
}

impl IntoResponse for Error {
    fn into_response(self) -> Response {
        let status = status_of(self.kind);
        log_failure(&self);
        let mut response = (status, Json(json!({ "error": self.to_string() }))).into_response();
        if status == StatusCode::TOO_MANY_REQUESTS {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
        }
        response
    }
}

/// The app as served: every REST protocol's routes, a JSON 404 (405) for anything else,
/// behind request decompression. `Content-Encoding: gzip|deflate` bodies are read
/// decompressed (the body limit counts what they decompress to); inference routes compress
/// their answers ([`compressed`]).
///
/// The decompression layer and its 415 in our shape wrap the router as one service, not
/// through `Router::layer`: that wraps each route's boxed service in two more boxes, and axum
/// clones a route's boxes for every request (nested: ~20 boxed-service clones, each an
/// allocation, per inference; issue 27). Around the router they are plain values whose clone
/// (one per request, by hyper's service adapter) copies an `Arc`.
pub type App = tower::util::MapResponse<
    tower_http::decompression::RequestDecompression<Router>,
    fn(Response<UnsyncBoxBody<Bytes, axum::BoxError>>) -> Response,
>;

/// The app ([`App`]) from its state.
pub fn router(state: Arc<AppState>) -> App {
    let routes = REST_PROTOCOLS
        .iter()
        .fold(Router::new(), |app, p| app.merge((p.routes)()))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .with_state(state);
    let unsupported: fn(_) -> Response = unsupported_encoding;
    tower::ServiceBuilder::new()
        .map_response(unsupported)
        .layer(tower_http::decompression::RequestDecompressionLayer::new())
        .service(routes)
}

/// The layer of inference handlers: their answers (not their errors) are compressed when
/// `Accept-Encoding` asks, as Triton's; metadata, statistics and the like never are. Applied to
/// each handler (`handler.layer(compressed())`) rather than to its routes (`Router::layer`),
/// where it made one more boxed service for axum to clone per request (issue 27); a route's
/// 405 is not a success, so never compressed either way.
fn compressed() -> tower_http::compression::CompressionLayer<impl tower_http::compression::Predicate>
{
    use tower_http::compression::{CompressionLayer, Predicate, predicate::DefaultPredicate};
    let answers = |status: StatusCode, _, _: &axum::http::HeaderMap, _: &axum::http::Extensions| {
        status.is_success()
    };
    CompressionLayer::new().compress_when(DefaultPredicate::new().and(answers))
}

/// The decompression layer's bare 415 for a `Content-Encoding` it cannot read, as an
/// `{"error"}` naming the ones it can; any other response as it is.
fn unsupported_encoding(response: Response<UnsyncBoxBody<Bytes, axum::BoxError>>) -> Response {
    let response = response.into_response();
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
    let clipper =
        !path.starts_with("/v2/") && (path.ends_with("/predict") || path.ends_with("/predict/"));
    // Seldon's: predictions, feedback and explain are POSTs; metadata, status, health GETs.
    let seldon = path.contains("/api/v1.0/") || path.contains("/api/v0.1/");
    let seldon_post = seldon
        && ["/predictions", "/feedback", "/explain"]
            .iter()
            .any(|end| path.ends_with(end));
    let seldon_get = (seldon && !seldon_post) || path.starts_with("/health/");
    // KServe's v1: `/v1/models/{m}:predict` and `:explain` are POSTs.
    let kserve_post = path.starts_with("/v1/models/")
        && (path.ends_with(":predict") || path.ends_with(":explain"));
    let post = path == "/" || path == "/admin/reload" || clipper || seldon_post || kserve_post;
    let get = !post
        && (seldon_get
            || gets.contains(&path)
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

/// The admin settings when the request carries the admin token; else the answer: 404 when no
/// token is configured (admin endpoints off), 401 without the right bearer token.
async fn authorized<'a>(
    state: &'a AppState,
    method: Method,
    uri: Uri,
    headers: &HeaderMap,
) -> Result<&'a Admin, Response> {
    match state.service.authorize(headers) {
        Ok(admin) => Ok(admin),
        Err(Refusal::Off) => Err(not_found(method, uri).await.into_response()),
        Err(refusal) => {
            let error = if refusal == Refusal::WrongToken {
                "`Authorization: Bearer <token>` carries a token that is not the admin token (`--admin-token`)"
            } else {
                "admin endpoints need `Authorization: Bearer <token>`"
            };
            let mut response =
                (StatusCode::UNAUTHORIZED, Json(json!({ "error": error }))).into_response();
            response
                .headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
            Err(response)
        }
    }
}

/// Parses a JSON body (empty: `empty`), or a 400 that says what `what` takes.
fn json_body(
    body: &[u8],
    empty: serde_json::Value,
    what: &str,
) -> Result<serde_json::Value, Error> {
    if body.is_empty() {
        return Ok(empty);
    }
    serde_json::from_slice(body).map_err(|e| Error::bad_request(format!("{what}: {e}")))
}

/// What an inference route addressed: the model (the URL's; `None`: the graph's own policy,
/// unless the body or `x-model-name` names one), its version, explain or infer, the
/// protocol's body codec (`None`: the OIP's, or MLRun's rows, by the body's shape), and the
/// protocol's deadline for the request, if it has one.
#[derive(Clone, Copy, Default)]
struct Inference<'a> {
    model: Option<&'a str>,
    version: Option<&'a str>,
    explain: bool,
    codec: Option<&'a dyn crate::protocol::Codec>,
    deadline: Option<std::time::Duration>,
}

/// One inference (or explanation) through the request path, answered as HTTP.
async fn run_infer(
    state: &AppState,
    at: Inference<'_>,
    headers: &HeaderMap,
    body: Body,
) -> Response {
    match infer(state, at, headers, body).await {
        Ok(answer) => http_response(answer),
        Err(e) => e.into_response(),
    }
}

/// One inference (or explanation) through the request path: the answer, or the error for
/// the protocol to answer in its own shape.
async fn infer(
    state: &AppState,
    at: Inference<'_>,
    headers: &HeaderMap,
    body: Body,
) -> Result<crate::request::Response, Error> {
    let Inference {
        model,
        version,
        explain,
        codec,
        deadline,
    } = at;
    let served = state.current()?;
    let request = Request {
        model,
        version,
        explain,
        headers,
        resume_after: None,
        encoding: Encoding::AsRequested,
        deadline,
        codec,
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
    let body = state.body(body, headers);
    served.handle(request, span, body).await
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
