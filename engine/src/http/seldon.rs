//! Seldon Core's v1 REST protocol, as its gateway serves a deployment: predictions and
//! feedback at `/api/v1.0/...` (and behind the gateway's prefixes `/seldon/{deployment}/...`
//! and `/seldon/{namespace}/{deployment}/...`; a deployment named like a model of the graph
//! addresses that model), `/health/ping`, `/health/status`, `/api/v1.0/metadata`; and a
//! component microservice's `/predict`, `/send-feedback` and `/metadata` (what
//! `SeldonClient.microservice` and `seldon-core-microservice-tester` call), its other
//! endpoints (`/route`, `/aggregate`, `/transform-input`, `/transform-output`) refused naming
//! what serves them here. Bodies are `SeldonMessage`s ([`crate::protocol::seldon`]), as JSON
//! or, as Seldon's microservice also takes them, in a form's or the query's `json` field;
//! errors are Seldon's `{"status": {"code", "info", "reason", "status": "FAILURE"}}`.

use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Path, RawQuery, State};
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
        // A component microservice's own endpoints.
        .route("/predict", get(predict).post(predict))
        .route("/send-feedback", get(feedback).post(feedback))
        .route("/metadata", get(metadata))
        .route("/route", get(component).post(component))
        .route("/aggregate", get(component).post(component))
        .route("/transform-input", get(component).post(component))
        .route("/transform-output", get(component).post(component))
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
    RawQuery(query): RawQuery,
    headers: HeaderMap,
    body: Body,
) -> Response {
    match form_json(&state, query, headers, body).await {
        Ok((headers, body)) => message(state, path, headers, body, false).await,
        Err(e) => seldon_error(e),
    }
}

/// The message of a request as Seldon's microservice reads one (its `get_request`): a form's
/// `json` field, else the query's, else the body itself (as JSON).
async fn form_json(
    state: &AppState,
    query: Option<String>,
    mut headers: HeaderMap,
    body: Body,
) -> Result<(HeaderMap, Body), Error> {
    let field = |raw: &[u8]| {
        url::form_urlencoded::parse(raw)
            .find(|(k, _)| k == "json")
            .map(|(_, v)| v.into_owned())
    };
    let form = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/x-www-form-urlencoded"));
    let json = if form {
        let raw = state.body(body, &headers).await?;
        match field(&raw) {
            Some(json) => json,
            None => {
                return Err(Error::bad_request(
                    "Can't find JSON in data: a form's message is its `json` field",
                ));
            }
        }
    } else {
        match query.as_deref().and_then(|q| field(q.as_bytes())) {
            Some(json) => json,
            None => return Ok((headers, body)),
        }
    };
    headers.insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("application/json"),
    );
    headers.remove(header::CONTENT_LENGTH);
    headers.remove(header::CONTENT_ENCODING);
    Ok((headers, Body::from(json)))
}

/// A component microservice's `/route`, `/aggregate`, `/transform-input` and
/// `/transform-output`: a graph here is served whole, as Seldon's executor serves one; the
/// error names the step that runs each kind of component.
async fn component(uri: axum::http::Uri) -> Response {
    let path = uri.path();
    let runs = match path {
        "/route" => {
            "a ROUTER class runs as a router step's `policy: {type: seldon, class_name: ...}`"
        }
        "/aggregate" => {
            "a COMBINER class runs as an ensemble's `combine: seldon` with `seldon: {class_name: ...}`"
        }
        "/transform-input" => "a TRANSFORMER class runs as a step with `role: transformer`",
        _ => "an OUTPUT_TRANSFORMER class runs as a step with `role: output_transformer`",
    };
    seldon_error(Error::not_found(format!(
        "Seldon's component endpoint `{path}` is not served: servegraph serves the whole graph, \
         as Seldon's executor does (POST /api/v1.0/predictions, or /predict); {runs}"
    )))
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
    RawQuery(query): RawQuery,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let run = async {
        let (headers, body) = form_json(&state, query, headers, body).await?;
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
