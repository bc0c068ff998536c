//! Clipper's query frontend: `POST /{app}/predict` (and `/{app}/predict/`) with `{"input":
//! x}` or `{"input_batch": [...]}`, answered `{"query_id", "output", "default"}` per query
//! ([`crate::protocol::clipper`]). Every model the graph serves is an app of its name (the
//! graph's own name too: its policy decides); what a deploy said of the app (Clipper's
//! `register_application`: `input_type`, `default_output`, `slo_micros`) is in the model
//! repository's overlay ([`crate::repository::App`]). `slo_micros` is the query's deadline;
//! a model that fails or passes it answers the app's default output with `"default": true`
//! and the reason in `default_explanation`, as Clipper does, or, for an app with no default
//! output, Clipper's error (`{"error", "cause"}`) with the failure's status.

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Body;
use axum::extract::{Path, State};
use axum::handler::Handler;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;

use super::{AppState, Inference, compressed, http_response, infer, log_failure};
use crate::error::{Error, ErrorKind};
use crate::protocol::clipper::{self as queries, JSON_ERROR, QUERY_ERROR};

pub(super) fn routes() -> Router<Arc<AppState>> {
    Router::new()
        .route("/{app}/predict", post(predict.layer(compressed())))
        .route("/{app}/predict/", post(predict.layer(compressed())))
}

/// `POST /{app}/predict`: Clipper's queries for the model (or router) `app`.
async fn predict(
    State(state): State<Arc<AppState>>,
    Path(app): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let start = Instant::now();
    let served = match state.current() {
        Ok(served) => served,
        Err(e) => return failure(QUERY_ERROR, e),
    };
    let graph = &served.graph;
    if graph.model(&app, None).is_none() {
        let mut apps: Vec<&str> = graph.models().iter().map(|m| m.name.as_str()).collect();
        apps.sort_unstable();
        apps.dedup();
        let near = crate::fields::did_you_mean(&app, apps.iter().copied())
            .map(|near| format!(" (did you mean `{near}`?)"))
            .unwrap_or_default();
        let e = Error::not_found(format!(
            "no application `{app}`{near}; this server's applications are: {}",
            apps.join(", ")
        ));
        return failure(QUERY_ERROR, e);
    }
    let settings = graph
        .repository()
        .apps
        .get(&app)
        .cloned()
        .unwrap_or_default();
    // Read (within the body limit) and numbered before the request path runs: a failing
    // model still answers each query with its id.
    let body = match state.body(body, &headers).await {
        Ok(body) => body,
        Err(e) => return failure(QUERY_ERROR, e),
    };
    let parsed = match queries::parse(&body) {
        Ok(parsed) => parsed,
        Err(e) => return failure(JSON_ERROR, e),
    };
    if let Some(v) = &parsed.version
        && graph.model(&app, Some(v)).is_none()
    {
        // Clipper's sentence, exactly (its clients and tests match it).
        let e = Error::bad_request(format!(
            "Requested version: {v} does not exist for model: {app}"
        ));
        return failure(QUERY_ERROR, e);
    }
    let n = parsed.inputs.len();
    let first_id = queries::query_ids(n);
    if n == 0 {
        return json(StatusCode::OK, queries::answer(first_id, Vec::new(), None));
    }
    let codec = queries::Clipper {
        queries: n,
        first_id,
        base64: settings.input_type.as_deref() == Some("bytes"),
    };
    let slo = settings.slo_micros.map(Duration::from_micros);
    let at = Inference {
        model: Some(&app),
        version: parsed.version.as_deref(),
        codec: Some(&codec),
        deadline: slo,
        ..Default::default()
    };
    drop(served);
    let error = match infer(&state, at, &headers, Body::from(body)).await {
        Ok(answer) => return http_response(answer),
        Err(e) => e,
    };
    let past_slo = error.kind == ErrorKind::Timeout && slo.is_some_and(|s| start.elapsed() >= s);
    let explanation = if past_slo {
        queries::SLO_EXPLANATION.to_owned()
    } else {
        error.to_string()
    };
    // The model did not answer (it failed, its queue was full, the SLO passed): the app's
    // default output, when it has one. A request at fault is an error all the same.
    match settings.default_output {
        Some(default) if !error.kind.is_client_error() => {
            log_failure(&error);
            let outputs = vec![queries::output_of_text(&default); n];
            json(
                StatusCode::OK,
                queries::answer(first_id, outputs, Some(&explanation)),
            )
        }
        _ if past_slo => {
            let slo = slo.expect("past the SLO").as_micros();
            let e = Error {
                message: format!("{explanation} of {slo} microseconds"),
                ..error
            };
            failure(QUERY_ERROR, e)
        }
        _ if error.kind == ErrorKind::BadRequest => failure(JSON_ERROR, error),
        _ => failure(QUERY_ERROR, error),
    }
}

/// Clipper's error body (`{"error": name, "cause": ...}`) with the error's status (and its
/// headers: `Retry-After` on a 429).
fn failure(name: &str, error: Error) -> Response {
    let cause = if name == JSON_ERROR {
        queries::json_cause(&error.to_string())
    } else {
        error.to_string()
    };
    // The error's own response (its status, its headers, its log line), with Clipper's body.
    let mut response = error.into_response();
    *response.body_mut() = Body::from(queries::error_body(name, &cause));
    response
}

fn json(status: StatusCode, body: Vec<u8>) -> Response {
    let mut response = (status, body).into_response();
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    response
}
