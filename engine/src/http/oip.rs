//! The Open Inference Protocol (V2) over HTTP, with Triton's extensions: health, server and
//! model metadata, readiness, infer and explain (JSON or the binary tensor extension),
//! generate and generate_stream (the generate extension, streamed as server-sent events),
//! the trace settings,
//! model configuration, statistics, and the model repository.

use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Path, State};
use axum::handler::Handler;
use axum::http::{HeaderMap, Method, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::{MethodRouter, get, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{Value, json};

use super::{AppState, Inference, authorized, compressed, json_body, run_infer};
use crate::error::Error;
use crate::serve::{AdminAction, Service};

type Answer = Result<Json<Value>, Error>;

pub(super) fn routes() -> Router<Arc<AppState>> {
    Router::new()
        .merge(versioned("/infer", post(infer.layer(compressed()))))
        .merge(versioned("/explain", post(explain.layer(compressed()))))
        .merge(versioned("/generate", post(generate.layer(compressed()))))
        .merge(versioned("/generate_stream", post(generate_stream)))
        .merge(versioned("/infer_stream", post(infer_stream)))
        .route("/v2", get(server_metadata))
        .route("/v2/health/live", get(live))
        .route("/v2/health/ready", get(ready))
        .merge(versioned("", get(model_metadata)))
        .merge(versioned("/ready", get(model_ready)))
        .route("/v2/models/stats", get(all_statistics))
        .merge(versioned("/stats", get(statistics)))
        .merge(versioned("/config", get(config)))
        .route(
            "/v2/trace/setting",
            get(global_trace_setting).post(update_global_trace_setting),
        )
        .route(
            "/v2/models/{model}/trace/setting",
            get(model_trace_setting).post(update_model_trace_setting),
        )
        .route("/v2/repository/index", post(repository_index))
        .route(
            "/v2/repository/models/{model}/{action}",
            post(repository_action),
        )
}

/// A model's path and its version's: `/v2/models/{model}{suffix}` and
/// `/v2/models/{model}/versions/{version}{suffix}`, served alike ([`Addressed`]).
pub(super) fn versioned(
    suffix: &str,
    handler: MethodRouter<Arc<AppState>>,
) -> Router<Arc<AppState>> {
    Router::new()
        .route(&format!("/v2/models/{{model}}{suffix}"), handler.clone())
        .route(
            &format!("/v2/models/{{model}}/versions/{{version}}{suffix}"),
            handler,
        )
}

/// The model (and version) a path addresses.
#[derive(Deserialize)]
pub(super) struct Addressed {
    model: String,
    #[serde(default)]
    version: Option<String>,
}

async fn server_metadata() -> Json<Value> {
    Json(Service::server_metadata())
}

async fn live() -> Json<Value> {
    Json(json!({ "live": true }))
}

async fn ready(State(state): State<Arc<AppState>>) -> Answer {
    state.service.ready()?;
    Ok(Json(json!({ "ready": true })))
}

async fn model_metadata(State(state): State<Arc<AppState>>, Path(at): Path<Addressed>) -> Answer {
    state
        .service
        .metadata(&at.model, at.version.as_deref())
        .map(Json)
}

async fn model_ready(State(state): State<Arc<AppState>>, Path(at): Path<Addressed>) -> Answer {
    state
        .service
        .model_ready(&at.model, at.version.as_deref())?;
    Ok(Json(json!({ "name": at.model, "ready": true })))
}

pub(super) async fn infer(
    State(state): State<Arc<AppState>>,
    Path(at): Path<Addressed>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    infer_at(&state, &at, &headers, body, false).await
}

/// Like `infer`, with per-feature attributions from the models that can explain.
async fn explain(
    State(state): State<Arc<AppState>>,
    Path(at): Path<Addressed>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    infer_at(&state, &at, &headers, body, true).await
}

async fn infer_at(
    state: &AppState,
    at: &Addressed,
    headers: &HeaderMap,
    body: Body,
    explain: bool,
) -> Response {
    let at = Inference {
        model: Some(&at.model),
        version: at.version.as_deref(),
        explain,
        ..Default::default()
    };
    run_infer(state, at, headers, body).await
}

/// `POST /v2/models/{m}[/versions/{v}]/generate`: the generate extension, one flat JSON
/// answer (a model that streams its answer answers the pieces joined). An OIP request
/// (MLServer's clients post their `InferenceRequest`s here) is answered as `/infer` answers
/// it, in JSON.
async fn generate(
    State(state): State<Arc<AppState>>,
    Path(at): Path<Addressed>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let bytes = match state.body(body, &headers).await {
        Ok(b) => b,
        Err(e) => return e.into_response(),
    };
    let flat = crate::protocol::generate::Generate::default();
    let oip = crate::protocol::OipStream::default();
    let codec: &dyn crate::protocol::Codec = if crate::protocol::generate::is_oip(&bytes) {
        &oip
    } else {
        &flat
    };
    let at = Inference {
        model: Some(&at.model),
        version: at.version.as_deref(),
        codec: Some(codec),
        ..Default::default()
    };
    run_infer(&state, at, &headers, Body::from(bytes)).await
}

/// How many pieces of a streamed answer may wait for the client: past it the model waits.
const STREAM_PIECES: usize = 16;

/// `POST /v2/models/{m}[/versions/{v}]/generate_stream`: the generate extension as
/// server-sent events (`text/event-stream`): `data: {...}` per piece of the answer as a model
/// that streams (a Python `predict` that yields) gives it, else one event with the whole
/// answer. A request that fails before anything is answered is a JSON error with its status;
/// a failure after the first event is one last event `data: {"error": "..."}`. A client that
/// goes away cancels the request. An OIP request (MLServer's clients post their
/// `InferenceRequest`s here) is streamed as `/infer_stream` streams it.
async fn generate_stream(
    State(state): State<Arc<AppState>>,
    Path(at): Path<Addressed>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let bytes = match state.body(body, &headers).await {
        Ok(b) => b,
        Err(e) => return e.into_response(),
    };
    let oip = crate::protocol::generate::is_oip(&bytes);
    streamed(state, at, headers, bytes, oip).await
}

/// `POST /v2/models/{m}[/versions/{v}]/infer_stream`: an OIP request answered as server-sent
/// events, each an OIP response (`model_name`, `id`, `outputs`) of one piece of the answer
/// as a model that streams gives it (MLServer's `predict_stream`), else one with the whole
/// answer; failures as `/generate_stream`'s.
async fn infer_stream(
    State(state): State<Arc<AppState>>,
    Path(at): Path<Addressed>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let bytes = match state.body(body, &headers).await {
        Ok(b) => b,
        Err(e) => return e.into_response(),
    };
    streamed(state, at, headers, bytes, true).await
}

/// A request whose answer goes as server-sent events: the generate extension's flat pieces,
/// or (`oip`) OIP responses.
async fn streamed(
    state: Arc<AppState>,
    at: Addressed,
    headers: HeaderMap,
    bytes: axum::body::Bytes,
    oip: bool,
) -> Response {
    use futures_util::StreamExt;
    let id = serde_json::from_slice::<Value>(&bytes)
        .ok()
        .and_then(|v| v.get("id")?.as_str().map(str::to_owned));
    let named = match state.service.current() {
        Ok(served) => served
            .graph
            .model(&at.model, at.version.as_deref())
            .map(|m| (m.name.clone(), m.version.clone())),
        Err(e) => return e.into_response(),
    };
    let (pieces_tx, mut pieces) = tokio::sync::mpsc::channel(STREAM_PIECES);
    let task = {
        let state = Arc::clone(&state);
        let at = Addressed {
            model: at.model.clone(),
            version: at.version.clone(),
        };
        tokio::spawn(async move {
            let (flat, whole) = if oip {
                (None, Some(pieces_tx))
            } else {
                (Some(pieces_tx), None)
            };
            let flat = crate::protocol::generate::Generate { chunks: flat };
            let whole = crate::protocol::OipStream { chunks: whole };
            let codec: &dyn crate::protocol::Codec = if oip { &whole } else { &flat };
            let inference = Inference {
                model: Some(&at.model),
                version: at.version.as_deref(),
                codec: Some(codec),
                ..Default::default()
            };
            super::infer(&state, inference, &headers, Body::from(bytes)).await
        })
    };
    /// The request's task, cancelled when the answer's stream is dropped (the client went).
    struct Running(tokio::task::JoinHandle<Result<crate::request::Response, Error>>);
    impl Drop for Running {
        fn drop(&mut self) {
            self.0.abort();
        }
    }
    let mut running = Running(task);
    let (model, version) = named.unwrap_or((at.model.clone(), at.version.clone()));
    let piece_event = move |tensors: Vec<crate::tensor::Tensor>| {
        let id = id.as_deref().unwrap_or_default();
        let piece = if oip {
            let piece = crate::event::Event::new(id, tensors);
            crate::protocol::encode_json_response(&piece, &model, version.as_deref(), Vec::new())
        } else {
            crate::protocol::generate::answer_of(id, &model, version.as_deref(), &tensors)
                .map(|v| serde_json::to_vec(&v).expect("JSON"))
        };
        match piece {
            Ok(json) => event(&json),
            Err(e) => event(&serde_json::to_vec(&json!({ "error": e.to_string() })).expect("JSON")),
        }
    };
    let first = match pieces.recv().await {
        Some(piece) => piece_event(piece),
        // No pieces: the whole answer, or the error with its status.
        None => {
            let finished = (&mut running.0).await;
            return match finished {
                Ok(Ok(answer)) => sse(futures_util::stream::iter([Ok::<
                    _,
                    std::convert::Infallible,
                >(event(
                    &answer.body,
                ))])
                .boxed()),
                Ok(Err(e)) => e.into_response(),
                Err(_) => {
                    Error::internal("the generate request's task ended early").into_response()
                }
            };
        }
    };
    // The rest of the pieces, then a last event only when the request failed after them.
    let rest = futures_util::stream::unfold(
        (pieces, running, piece_event, false),
        |(mut pieces, mut running, piece_event, ended)| async move {
            if ended {
                return None;
            }
            match pieces.recv().await {
                Some(piece) => Some((piece_event(piece), (pieces, running, piece_event, false))),
                None => match (&mut running.0).await {
                    Ok(Ok(_)) => None,
                    Ok(Err(e)) => Some((
                        event(
                            &serde_json::to_vec(&json!({ "error": e.to_string() })).expect("JSON"),
                        ),
                        (pieces, running, piece_event, true),
                    )),
                    Err(_) => None,
                },
            }
        },
    );
    sse(futures_util::stream::once(async move { first })
        .chain(rest)
        .map(Ok::<_, std::convert::Infallible>)
        .boxed())
}

/// One server-sent event: `data: <json>` and a blank line.
fn event(json: &[u8]) -> axum::body::Bytes {
    let mut e = Vec::with_capacity(json.len() + 8);
    e.extend_from_slice(b"data: ");
    e.extend_from_slice(json);
    e.extend_from_slice(b"\n\n");
    axum::body::Bytes::from(e)
}

/// A `text/event-stream` answer of `events`.
fn sse(
    events: futures_util::stream::BoxStream<
        'static,
        Result<axum::body::Bytes, std::convert::Infallible>,
    >,
) -> Response {
    let mut response = Response::new(Body::from_stream(events));
    response.headers_mut().insert(
        axum::http::header::CONTENT_TYPE,
        axum::http::HeaderValue::from_static("text/event-stream; charset=utf-8"),
    );
    response.headers_mut().insert(
        axum::http::header::CACHE_CONTROL,
        axum::http::HeaderValue::from_static("no-cache"),
    );
    response
}

/// `GET /v2/models/stats`: every model's statistics (Triton's statistics extension).
async fn all_statistics(State(state): State<Arc<AppState>>) -> Answer {
    state.service.statistics(None, None).map(Json)
}

/// `GET /v2/models/{m}[/versions/{v}]/stats`: the statistics of each version of `m` (or of
/// the one named).
async fn statistics(State(state): State<Arc<AppState>>, Path(at): Path<Addressed>) -> Answer {
    state
        .service
        .statistics(Some(&at.model), at.version.as_deref())
        .map(Json)
}

/// `GET /v2/models/{m}[/versions/{v}]/config`: the model configuration in Triton's JSON shape.
async fn config(State(state): State<Arc<AppState>>, Path(at): Path<Addressed>) -> Answer {
    state
        .service
        .config(&at.model, at.version.as_deref())
        .map(Json)
}

/// `GET /v2/trace/setting`: Triton's global trace settings.
async fn global_trace_setting(State(state): State<Arc<AppState>>) -> Answer {
    state.service.trace_setting(None).map(Json)
}

/// `GET /v2/models/{m}/trace/setting`: the trace settings that apply to `m`.
async fn model_trace_setting(
    State(state): State<Arc<AppState>>,
    Path(model): Path<String>,
) -> Answer {
    state.service.trace_setting(Some(&model)).map(Json)
}

/// `POST /v2/trace/setting`: updates the global trace settings.
async fn update_global_trace_setting(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    body: Body,
) -> Answer {
    let body = state.body(body, &headers).await?;
    let body = json_body(&body, json!({}), "the trace setting request is not JSON")?;
    state.service.update_trace_setting(None, &body).map(Json)
}

/// `POST /v2/models/{m}/trace/setting`: updates `m`'s trace settings (`null` clears a field
/// back to the global one).
async fn update_model_trace_setting(
    State(state): State<Arc<AppState>>,
    Path(model): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Answer {
    let body = state.body(body, &headers).await?;
    let body = json_body(&body, json!({}), "the trace setting request is not JSON")?;
    state
        .service
        .update_trace_setting(Some(&model), &body)
        .map(Json)
}

/// `POST /v2/repository/index`: every served model with its version and state; with
/// Triton's `{"ready": true}`, only the ready ones.
async fn repository_index(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    body: Body,
) -> Answer {
    let body = state.body(body, &headers).await?;
    let body = json_body(&body, json!({}), "the request body is not JSON")?;
    let ready = match body.get("ready") {
        None | Some(Value::Null) => false,
        Some(Value::Bool(b)) => *b,
        Some(other) => {
            return Err(Error::bad_request(format!(
                "`ready` is true (only ready models) or false, not {other}"
            )));
        }
    };
    let mut entries = state.service.repository_index()?;
    if ready {
        entries.retain(|e| e["state"] == "READY");
    }
    Ok(Json(Value::Array(entries)))
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
    let body = match state.body(body, &headers).await {
        Ok(b) => b,
        Err(e) => return e.into_response(),
    };
    let body = match json_body(&body, json!({}), "the request body is not JSON") {
        Ok(v) => v,
        Err(e) => return e.into_response(),
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
    match admin.act(action).await {
        Ok(summary) => Json(summary).into_response(),
        Err(e) => e.into_response(),
    }
}
