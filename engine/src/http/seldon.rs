//! Seldon Core's v1 REST protocol, as its gateway serves a deployment: predictions and
//! feedback at `/api/v1.0/...` (and behind the gateway's prefixes `/seldon/{deployment}/...`
//! and `/seldon/{namespace}/{deployment}/...`; a deployment named like a model of the graph
//! addresses that model), `/health/ping`, `/health/status`, `/api/v1.0/metadata`. Bodies are
//! `SeldonMessage`s ([`crate::protocol::seldon`]); errors are Seldon's `{"status": {"code",
//! "info", "reason", "status": "FAILURE"}}`.

use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::{Value, json};

use super::{AppState, Inference, http_response, log_failure};
use crate::error::{Error, ErrorKind};
use crate::protocol::seldon::{SeldonMessage, error_body};

/// The gateway's prefixes before `/api/v1.0/...`: none, the deployment, or its namespace and
/// the deployment.
const PREFIXES: [&str; 3] = [
    "",
    "/seldon/{deployment}",
    "/seldon/{namespace}/{deployment}",
];

pub(super) fn routes() -> Router<Arc<AppState>> {
    let mut router = Router::new()
        .route("/api/v0.1/predictions", post(predict))
        .route("/api/v0.1/feedback", post(feedback))
        .route("/health/ping", get(|| async { "pong" }))
        .route("/health/status", get(status))
        .route("/api/v1.0/health/status", get(status));
    for version in ["v1.0", "v0.1"] {
        router = router
            .route(
                &format!("/api/{version}/status/{{model}}"),
                get(model_status),
            )
            .route(
                &format!("/api/{version}/metadata/{{model}}"),
                get(model_metadata),
            );
    }
    for prefix in PREFIXES {
        router = router
            .route(&format!("{prefix}/api/v1.0/predictions"), post(predict))
            .route(&format!("{prefix}/api/v1.0/explain"), post(explain))
            .route(&format!("{prefix}/api/v1.0/feedback"), post(feedback))
            .route(&format!("{prefix}/api/v1.0/metadata"), get(metadata));
    }
    router
}

/// What the gateway's path addressed: its deployment, when that names a model of the graph
/// other than the graph itself (a 404 for a name that is neither).
type Deployment = Option<Path<std::collections::HashMap<String, String>>>;

fn addressed(state: &AppState, path: &Deployment) -> Result<Option<String>, Error> {
    let Some(name) = path.as_ref().and_then(|p| p.get("deployment")) else {
        return Ok(None);
    };
    let served = state.current()?;
    if *name == served.graph.name {
        return Ok(None);
    }
    served.graph.find_model(name, None)?;
    Ok(Some(name.clone()))
}

/// `POST .../api/v1.0/predictions`: the graph (or the addressed model) on a SeldonMessage.
async fn predict(
    State(state): State<Arc<AppState>>,
    path: Deployment,
    headers: HeaderMap,
    body: Body,
) -> Response {
    message(state, path, headers, body, false).await
}

/// `POST .../api/v1.0/explain`: the graph's `/explain` on a SeldonMessage.
async fn explain(
    State(state): State<Arc<AppState>>,
    path: Deployment,
    headers: HeaderMap,
    body: Body,
) -> Response {
    message(state, path, headers, body, true).await
}

async fn message(
    state: Arc<AppState>,
    path: Deployment,
    headers: HeaderMap,
    body: Body,
    explain: bool,
) -> Response {
    let model = match addressed(&state, &path) {
        Ok(model) => model,
        Err(e) => return seldon_error(e),
    };
    let at = Inference {
        model: model.as_deref(),
        explain,
        codec: Some(&SeldonMessage),
        ..Inference::default()
    };
    match super::infer(&state, at, &headers, body).await {
        Ok(answer) => http_response(answer),
        Err(e) => seldon_error(e),
    }
}

/// `POST .../api/v1.0/feedback`: Seldon's `{"request", "response", "reward", "truth"}`,
/// crediting the graph's learning router with the decision the response's `meta.puid` names,
/// and handed to the `send_feedback` of the Python classes that served that request (a graph
/// with neither takes it and does nothing, as Seldon's components without `send_feedback`
/// do). Answers an empty SeldonMessage.
async fn feedback(
    State(state): State<Arc<AppState>>,
    path: Deployment,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let run = async {
        let model = match addressed(&state, &path)? {
            Some(model) => model,
            None => state.current()?.graph.name.clone(),
        };
        let body = state.body(body, &headers).await?;
        let value: Value = serde_json::from_slice(&body)
            .map_err(|e| Error::bad_request(format!("malformed feedback: {e}")))?;
        if value.get("reward").and_then(Value::as_f64).is_none() {
            return Err(Error::bad_request(
                "Seldon's feedback needs a numeric `reward`",
            ));
        }
        // The graph's learning router (a bandit's, or a Seldon ROUTER class's send_feedback)...
        // (A router that routes by name, or did not route this request, has no decision to
        // credit: as in Seldon, that is no error.)
        if state.service.takes_feedback(&model).is_ok() {
            match state.service.feedback(&model, &body) {
                Err(e) if matches!(e.kind, ErrorKind::NotFound | ErrorKind::Unprocessable) => {}
                other => {
                    other?;
                }
            }
        }
        // ... and the classes of the models that served the request (their send_feedback).
        state.service.seldon_feedback(&value).await?;
        Ok(json!({"data": {"names": [], "ndarray": []}, "meta": {}}))
    };
    match run.await {
        Ok(v) => Json(v).into_response(),
        Err(e) => seldon_error(e),
    }
}

/// `GET /health/status`: the graph's Seldon component's `health_status()` as Seldon's
/// wrapper answers it (the first model whose class is one), else Seldon's default
/// (`"healthy"`) once the graph is ready; Seldon's error (503) while it is not.
async fn status(State(state): State<Arc<AppState>>) -> Response {
    let run = async {
        state.service.ready()?;
        if let Some(health) = state.service.first_seldon_health().await? {
            return Ok(health);
        }
        Ok(json!({"strData": "healthy", "meta": {}}))
    };
    match run.await {
        Ok(v) => Json(v).into_response(),
        Err(e) => seldon_error(e),
    }
}

/// `GET /api/v1.0/status/{model}`: the model's health as Seldon's executor asks its
/// component (the class's `health_status()`), else Seldon's default once it is ready.
async fn model_status(State(state): State<Arc<AppState>>, Path(model): Path<String>) -> Response {
    let run = async {
        state.service.model_ready(&model, None)?;
        Ok(state
            .service
            .seldon_health(&model)
            .await?
            .unwrap_or_else(|| json!({"strData": "healthy", "meta": {}})))
    };
    match run.await {
        Ok(v) => Json(v).into_response(),
        Err(e) => seldon_error(e),
    }
}

/// `GET /api/v1.0/metadata/{model}`: the model's metadata as Seldon's executor asks its
/// component: the class's `init_metadata()` completed as Seldon does, else the OIP's.
async fn model_metadata(State(state): State<Arc<AppState>>, Path(model): Path<String>) -> Response {
    match state.service.seldon_metadata(&model).await {
        Ok(v) => Json(v).into_response(),
        Err(e) => seldon_error(e),
    }
}

/// `GET .../api/v1.0/metadata`: the deployment's metadata as Seldon's gateway gives it
/// (`name`, `models` by name, `graphinputs`, `graphoutputs`), from the OIP metadata.
async fn metadata(State(state): State<Arc<AppState>>, path: Deployment) -> Response {
    let run = async {
        let served = state.current()?;
        let graph = addressed(&state, &path)?.unwrap_or_else(|| served.graph.name.clone());
        let top = state.service.metadata(&graph, None)?;
        // Seldon's executor lists its graph's components: every Python class that says its
        // metadata (a flow's steps too), then the models the graph serves.
        let mut models = state.service.seldon_components().await?;
        for name in state.service.model_names()? {
            if models.contains_key(&name) {
                continue;
            }
            let (model, version) = match name.split_once(':') {
                Some((m, v)) => (m, Some(v)),
                None => (name.as_str(), None),
            };
            let m = match version {
                None => state.service.seldon_metadata(model).await,
                Some(v) => state.service.metadata(model, Some(v)),
            };
            if let Ok(m) = m {
                models.insert(name.clone(), m);
            }
        }
        Ok(json!({
            "name": graph,
            "models": models,
            "graphinputs": top.get("inputs").cloned().unwrap_or_else(|| json!([])),
            "graphoutputs": top.get("outputs").cloned().unwrap_or_else(|| json!([])),
        }))
    };
    match run.await {
        Ok(v) => Json(v).into_response(),
        Err(e) => seldon_error(e),
    }
}

/// An error in Seldon's shape (logged as every protocol's are).
fn seldon_error(e: Error) -> Response {
    log_failure(&e);
    let status = super::status_of(e.kind);
    let body = error_body(status.as_u16(), e.kind, &e.to_string());
    let mut response = (status, Json(body)).into_response();
    if e.kind == ErrorKind::Overloaded {
        response
            .headers_mut()
            .insert(header::RETRY_AFTER, header::HeaderValue::from_static("1"));
    }
    response
}
