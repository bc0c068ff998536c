//! servegraph's own routes: feedback for routers that learn, experiment readouts, custom
//! operations (MLRun's `op_<name>`), Prometheus metrics, the admin reload, and the dashboard
//! (`dashboard.rs`).

use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, Method, Uri, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::{Value, json};

use super::{AppState, authorized, json_body, status_of};
use crate::error::Error;
use crate::serve::AdminAction;

pub(super) fn routes() -> Router<Arc<AppState>> {
    Router::new()
        .route("/metrics", get(metrics))
        .route("/v2/monitor", get(monitor))
        .route("/admin/reload", post(admin_reload))
        .route("/v2/models/{model}/feedback", post(feedback))
        .route("/v2/models/{model}/experiment", get(experiment))
        // Custom operations: every other path of this shape is the protocols' (literal
        // segments win).
        .route("/v2/models/{model}/{operation}", post(operation))
        .merge(super::dashboard::routes())
}

/// `GET /v2/monitor`: the state of the monitors this process runs (docs/monitoring.md).
async fn monitor() -> Json<Value> {
    Json(crate::monitor::snapshot())
}

/// `POST /v2/models/{model}/{operation}`: a custom operation of the step serving `model`
/// (an MLRun model's `op_<name>(event)`), JSON in and out.
async fn operation(
    State(state): State<Arc<AppState>>,
    Path((model, name)): Path<(String, String)>,
    headers: HeaderMap,
    body: Body,
) -> Result<Json<Value>, Error> {
    let served = state.current()?;
    served
        .graph
        .find_step(&model)
        .ok_or_else(|| Error::not_found(format!("no model `{model}`")))?;
    let body = state.body(body, &headers).await?;
    let value = json_body(&body, Value::Null, &format!("`{name}` takes a JSON body"))?;
    state
        .service
        .operation(&model, &name, value)
        .await
        .map(Json)
}

/// `POST /v2/models/{router}/feedback`: `{"id", "reward"}`, a batch `[...]` of those, or
/// Seldon's `{"request", "response", "reward", "truth"}`.
async fn feedback(
    State(state): State<Arc<AppState>>,
    Path(model): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Result<Json<Value>, Error> {
    state.service.takes_feedback(&model)?;
    let body = state.body(body, &headers).await?;
    state.service.feedback(&model, &body).map(Json)
}

/// `GET /v2/models/{router}/experiment`: per route, requests, rewards and the policy's
/// estimate.
async fn experiment(
    State(state): State<Arc<AppState>>,
    Path(model): Path<String>,
) -> Result<Json<crate::LearnerStats>, Error> {
    state.service.experiment(&model).map(Json)
}

/// `GET /metrics`: Prometheus metrics (see [`crate::metrics`]).
async fn metrics(State(state): State<Arc<AppState>>) -> Result<Response, Error> {
    let text = state.service.metrics()?;
    Ok(([(header::CONTENT_TYPE, crate::metrics::CONTENT_TYPE)], text).into_response())
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
    match admin.act(AdminAction::Reload).await {
        Ok(summary) => Json(summary).into_response(),
        Err(e) => (
            status_of(e.kind),
            Json(json!({"error": e.message, "reloaded": false})),
        )
            .into_response(),
    }
}
