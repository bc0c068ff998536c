//! The dashboard (`servegraph serve --dashboard`): one HTML page, its CSS and JavaScript
//! embedded in the binary (nothing is fetched from elsewhere), and the data it polls.
//!
//! | path | answers |
//! |---|---|
//! | `GET /dashboard` | the page (`page.html` with `dashboard.css` and `dashboard.js` inlined) |
//! | `GET /dashboard/data` | the graph's shape and its steps' timers ([`crate::serve::dashboard`]) |
//!
//! Both are 404 unless the dashboard is on. With an admin token (`--admin-token`) both need
//! it: as `Authorization: Bearer <token>`, or for the page, which a browser opens without
//! headers, as `?token=<token>`; the page then sends the header with every request it makes.
//! Besides its data the page reads `GET /v2/models/{router}/experiment` and `GET /v2/monitor`.

use std::sync::Arc;

use axum::extract::{Query, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::json;

use super::{AppState, not_found};
use crate::serve::Refusal;

/// The page, whole: its style and script inlined, so that it is one response (a browser's
/// requests for a stylesheet or script would carry no token).
const PAGE: &str = concat!(
    include_str!("page.html"),
    "<style>\n",
    include_str!("dashboard.css"),
    "</style>\n<script>\n",
    include_str!("dashboard.js"),
    "</script>\n</body>\n</html>\n"
);

/// What the page may do: run its own inline script and style, and fetch from this server.
const CSP: &str = "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; \
                   connect-src 'self'; img-src data:; base-uri 'none'; form-action 'self'; \
                   frame-ancestors 'none'";

pub(super) fn routes() -> Router<Arc<AppState>> {
    Router::new()
        .route("/dashboard", get(page))
        .route("/dashboard/data", get(data))
}

#[derive(Deserialize)]
struct PageQuery {
    token: Option<String>,
}

/// `GET /dashboard`: the page.
async fn page(
    State(state): State<Arc<AppState>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    Query(query): Query<PageQuery>,
) -> Response {
    if let Err(refusal) = allowed(&state, &headers, query.token.as_deref()) {
        return refused(refusal, method, uri, true).await;
    }
    let mut response = PAGE.into_response();
    let h = response.headers_mut();
    for (name, value) in [
        (header::CONTENT_TYPE, "text/html; charset=utf-8"),
        (header::CACHE_CONTROL, "no-store"),
        (header::REFERRER_POLICY, "no-referrer"),
        (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        (header::CONTENT_SECURITY_POLICY, CSP),
    ] {
        h.insert(name, HeaderValue::from_static(value));
    }
    response
}

/// `GET /dashboard/data`: the graph's shape and its steps' timers.
async fn data(
    State(state): State<Arc<AppState>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
) -> Response {
    if let Err(refusal) = allowed(&state, &headers, None) {
        return refused(refusal, method, uri, false).await;
    }
    match state.service.dashboard() {
        Ok(data) => {
            let mut response = Json(data).into_response();
            response
                .headers_mut()
                .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
            response
        }
        Err(e) => e.into_response(),
    }
}

/// Whether the dashboard answers this request: it is on, and no admin token is set or the
/// request carries it (`Authorization: Bearer`, or `token` for the page).
fn allowed(state: &AppState, headers: &HeaderMap, token: Option<&str>) -> Result<(), Refusal> {
    if !state.dashboard {
        return Err(Refusal::Off);
    }
    match state.service.authorize(headers) {
        Ok(_) | Err(Refusal::Off) => Ok(()),
        Err(refusal) => {
            let Some(token) = token else {
                return Err(refusal);
            };
            let mut given = HeaderMap::new();
            let bearer = HeaderValue::from_str(&format!("Bearer {token}"))
                .map_err(|_| Refusal::WrongToken)?;
            given.insert(header::AUTHORIZATION, bearer);
            state.service.authorize(&given).map(|_| ())
        }
    }
}

/// The answer to a refused request: 404 when the dashboard is off, else 401 saying how to
/// give the token.
async fn refused(refusal: Refusal, method: Method, uri: Uri, page: bool) -> Response {
    if refusal == Refusal::Off {
        return not_found(method, uri).await.into_response();
    }
    let how = if page {
        "open the dashboard as /dashboard?token=<admin token>, or send `Authorization: Bearer <admin token>`"
    } else {
        "send `Authorization: Bearer <admin token>`"
    };
    let error = match refusal {
        Refusal::WrongToken => format!("the token given is not the admin token: {how}"),
        _ => format!("the dashboard needs the admin token (`--admin-token`): {how}"),
    };
    let mut response = (StatusCode::UNAUTHORIZED, Json(json!({ "error": error }))).into_response();
    response
        .headers_mut()
        .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
    response
}
