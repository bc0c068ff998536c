//! KServe's v1 REST protocol, for every model of the graph: `GET /v1/models`,
//! `GET /v1/models/{m}` (readiness), `POST /v1/models/{m}:predict` and `:explain`, with
//! bodies `{"instances": [...]}` (or `{"inputs": [...]}`) answered `{"predictions": [...]}`
//! ([`crate::protocol::kserve`]), and errors as KServe's server answers them: `{"error": "..."}`,
//! 400 for invalid input, 404 `Model with name m does not exist.`, 503 `Model with name m is
//! not ready.`, 500 for a failure. A model is named as `GET /v1/models` lists it: `name`, or
//! `name:version` for a version.

use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Path, State};
use axum::handler::Handler;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::json;

use super::{AppState, Inference, compressed, run_infer};
use crate::error::{Error, ErrorKind};
use crate::protocol::kserve::KserveV1;

const PREDICT: KserveV1 = KserveV1 { explain: false };
const EXPLAIN: KserveV1 = KserveV1 { explain: true };

pub(super) fn routes() -> Router<Arc<AppState>> {
    // `{m}:predict` is one path segment: the verb is split off its last `:`.
    Router::new()
        .route(
            "/v1/models/{model}",
            post(verb.layer(compressed())).get(model_ready),
        )
        .route("/v1/models", get(models))
}

/// `GET /v1/models`: `{"models": ["iris-lr", "iris-rf:2", ...]}`, as `GET /v2/models` lists them.
async fn models(State(state): State<Arc<AppState>>) -> Result<Json<serde_json::Value>, Error> {
    let names = state.service.model_names()?;
    Ok(Json(json!({ "models": names })))
}

/// The model (and version) a path's model segment names: a model of that name, else
/// `name:version`; KServe's 404 (`Model with name m does not exist.`) for neither, its 503
/// (`Model with name m is not ready.`, with why) for a model that cannot serve yet.
fn ready(state: &AppState, segment: &str) -> Result<(String, Option<String>), Error> {
    let not_ready = |e: Error| {
        Error::unavailable(format!(
            "Model with name {segment} is not ready. {}",
            e.message
        ))
    };
    let served = state.service.current().map_err(not_ready)?;
    let graph = &served.graph;
    // Exactly KServe's words (`GET /v1/models` lists the models there are).
    let not_found = || Error::not_found(format!("Model with name {segment} does not exist."));
    let (name, version) = match graph.find_model(segment, None) {
        Ok(_) => (segment.to_owned(), None),
        Err(_) => match segment.rsplit_once(':') {
            Some((name, version)) if graph.find_model(name, Some(version)).is_ok() => {
                (name.to_owned(), Some(version.to_owned()))
            }
            _ => return Err(not_found()),
        },
    };
    match state.service.model_ready(&name, version.as_deref()) {
        Ok(()) => Ok((name, version)),
        Err(e) if e.kind == ErrorKind::NotFound => Err(not_found()),
        Err(e) => Err(not_ready(e)),
    }
}

/// `GET /v1/models/{m}`: `{"name": m, "ready": true}`; a GET of `{m}:predict` (or
/// `:explain`) is a 405 naming POST.
async fn model_ready(State(state): State<Arc<AppState>>, Path(segment): Path<String>) -> Response {
    match ready(&state, &segment) {
        Ok(_) => Json(json!({ "name": segment, "ready": true })).into_response(),
        Err(e) if e.kind == ErrorKind::NotFound && split_verb(&segment).is_some() => {
            method_not_allowed(&segment, "POST")
        }
        Err(e) => e.into_response(),
    }
}

/// The model segment and verb of `m:predict` / `m:explain`.
fn split_verb(segment: &str) -> Option<(&str, bool)> {
    match segment.rsplit_once(':')? {
        (m, "predict") => Some((m, false)),
        (m, "explain") => Some((m, true)),
        _ => None,
    }
}

fn method_not_allowed(segment: &str, allowed: &'static str) -> Response {
    let path = format!("/v1/models/{segment}");
    let what = if allowed == "GET" {
        "readiness; POST to `{m}:predict` or `{m}:explain`"
    } else {
        "KServe's v1 inference"
    };
    let mut response = Error::new(
        ErrorKind::MethodNotAllowed,
        format!("the method is not served at {path} ({what}): use {allowed}"),
    )
    .into_response();
    response
        .headers_mut()
        .insert(header::ALLOW, HeaderValue::from_static(allowed));
    response
}

/// `POST /v1/models/{m}:predict` and `:explain`.
async fn verb(
    State(state): State<Arc<AppState>>,
    Path(segment): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let Some((model, explain)) = split_verb(&segment) else {
        if !segment.contains(':') || ready(&state, &segment).is_ok() {
            return method_not_allowed(&segment, "GET");
        }
        return (
            StatusCode::NOT_FOUND,
            Json(json!({
                "error": format!(
                    "no route for POST /v1/models/{segment}: KServe's v1 verbs are `:predict` and `:explain`"
                )
            })),
        )
            .into_response();
    };
    let (name, version) = match ready(&state, model) {
        Ok(at) => at,
        Err(e) => return e.into_response(),
    };
    let at = Inference {
        model: Some(&name),
        version: version.as_deref(),
        explain,
        codec: Some(if explain { &EXPLAIN } else { &PREDICT }),
        deadline: None,
    };
    run_infer(&state, at, &headers, body).await
}
