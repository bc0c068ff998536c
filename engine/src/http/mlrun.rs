//! MLRun's serving routes: `GET /` and `GET /v2/health` (its router's details), `POST /` with
//! the model (route) in the body's `model` field or the
//! `x-model-name` header (the graph's own policy otherwise), `predict`, MLRun's spelling of
//! `infer`, and the model list (`GET /v2/models`, which KServe serves too). Its row-shaped bodies (`{"inputs": [[...], ...]}`) are read wherever an
//! inference body is ([`crate::protocol::mlrun`]), since MLRun's clients send them to
//! `/infer` too.

use std::sync::Arc;

use axum::body::Body;
use axum::extract::State;
use axum::handler::Handler;
use axum::http::HeaderMap;
use axum::response::Response;
use axum::routing::{get, post};
use axum::{Json, Router};

use super::oip::{infer, versioned};
use super::{AppState, Inference, compressed, run_infer};

pub(super) fn routes() -> Router<Arc<AppState>> {
    Router::new()
        .route(
            "/",
            post(infer_body_routed.layer(compressed())).get(router_metadata.layer(compressed())),
        )
        .merge(versioned("/predict", post(infer.layer(compressed()))))
        .route("/v2/health", get(router_metadata))
        .route("/v2/models", get(models))
        .route("/v2/models/", get(models))
}

/// `GET /` and `GET /v2/health`: MLRun's model router's details, as its `ModelRouter`
/// answers them (`{"name": "ModelRouter", "version": "v2", "extensions": []}`).
async fn router_metadata() -> Json<serde_json::Value> {
    Json(serde_json::json!({"name": "ModelRouter", "version": "v2", "extensions": []}))
}

/// `GET /v2/models`: `{"models": ["m1", "m3:v1", ...]}`, as MLRun lists them.
async fn models(
    State(state): State<Arc<AppState>>,
) -> Result<Json<serde_json::Value>, crate::error::Error> {
    let names = state.service.model_names()?;
    Ok(Json(serde_json::json!({ "models": names })))
}

/// `POST /`: the model the body (or `x-model-name`) names, else the graph's own policy.
async fn infer_body_routed(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    run_infer(&state, Inference::default(), &headers, body).await
}
