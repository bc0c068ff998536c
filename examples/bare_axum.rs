//! The HTTP benchmark's baseline: a bare axum server that parses the same OIP V2 request
//! servegraph does (same decoder) and answers a fixed response: no graph, no model.
//!
//!     cargo run --release --example bare_axum -- 127.0.0.1:8081
//!
//! `scripts/bench.sh` runs it next to `servegraph serve` and loads both with `servegraph bench http`.

use axum::Router;
use axum::body::Bytes;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::post;

const ANSWER: &str = r#"{"model_name":"iris-lr","id":"","outputs":[{"name":"label","datatype":"INT64","shape":[1],"data":[0]},{"name":"probabilities","datatype":"FP32","shape":[1,3],"data":[0.98,0.02,0.0]}]}"#;

async fn infer(headers: HeaderMap, body: Bytes) -> impl IntoResponse {
    let json_len = headers
        .get("inference-header-content-length")
        .and_then(|v| v.to_str().ok())
        .and_then(|s| s.parse().ok());
    match servegraph_engine::protocol::decode_request(&body, json_len) {
        Ok(req) => {
            std::hint::black_box(req);
            (
                StatusCode::OK,
                [(header::CONTENT_TYPE, "application/json")],
                ANSWER,
            )
                .into_response()
        }
        Err(e) => (StatusCode::BAD_REQUEST, e.message).into_response(),
    }
}

#[tokio::main]
async fn main() -> std::io::Result<()> {
    let addr = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:8081".into());
    let app = Router::new().route("/v2/models/{model}/infer", post(infer));
    let listener = tokio::net::TcpListener::bind(&addr).await?;
    println!("bare_axum listening on http://{}", listener.local_addr()?);
    axum::serve(listener, app).await
}
