//! The gRPC source: the Open Inference Protocol (V2) over gRPC, wire-compatible with
//! Triton's `inference.GRPCInferenceService` (`proto/inference.proto`), so
//! `tritonclient.grpc` and KServe's clients work unchanged.
//!
//! Every RPC is answered by the protocol service ([`crate::serve::Service`]), as the HTTP
//! transport's routes are: inference through the one request path
//! ([`crate::request::Pipeline`], with [`Encoding::Tensors`] so tensors stay binary),
//! metadata, readiness, configuration, statistics and the repository from the service.
//! Errors take their codes from [`ErrorKind::grpc_code`], beside the HTTP statuses. The
//! service is an axum route (`/inference.GRPCInferenceService/*`), served on its own listener
//! ([`GrpcSource`], `--grpc-listen`) or on the HTTP port beside the REST routes
//! ([`GrpcState::routes`]).

mod convert;
mod unary;

use std::borrow::Cow;
use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use serde_json::{Value, json};
use tonic::metadata::MetadataMap;
use tonic::{Code, Status};

pub use convert::{decode_request, decode_response, encode_request, encode_response};

use crate::error::{Error, ErrorKind};
use crate::request::{Encoding, Headers, Pipeline, Request, SpanInfo};
use crate::serve::{Admin, AdminAction, Refusal};

/// The generated messages, server and client (`proto/inference.proto`).
#[allow(clippy::all, clippy::pedantic, missing_docs)]
pub mod pb {
    tonic::include_proto!("inference");
}

use pb::grpc_inference_service_server::{GrpcInferenceService, GrpcInferenceServiceServer};

/// The path every RPC of the service is under (for routing it beside other routes).
pub const SERVICE_PATH: &str = "/inference.GRPCInferenceService/{*rpc}";

/// Requests of one stream served at once (answers still go back in request order).
const STREAM_IN_FLIGHT: usize = 64;

impl Headers for MetadataMap {
    fn header(&self, name: &str) -> Option<Cow<'_, str>> {
        self.get(name)
            .and_then(|v| v.to_str().ok())
            .map(Cow::Borrowed)
    }

    /// The text entries (binary ones, `-bin`, are left out).
    fn for_each(&self, each: &mut dyn FnMut(&str, &str) -> bool) {
        for entry in self.iter() {
            if let tonic::metadata::KeyAndValueRef::Ascii(name, value) = entry
                && let Ok(value) = value.to_str()
                && !each(name.as_str(), value)
            {
                return;
            }
        }
    }
}

/// Settings of the gRPC source.
#[derive(Clone, Debug)]
pub struct GrpcConfig {
    /// Largest message received or sent (tonic's default of 4 MiB is too small for images).
    pub max_message_bytes: usize,
    /// The repository's load and unload RPCs (with the admin token); off without.
    pub admin: Option<Admin>,
}

/// What the RPCs share: the protocol service, and the message limit.
pub struct GrpcState {
    service: Arc<crate::serve::Service>,
    max_message_bytes: usize,
}

impl GrpcState {
    pub fn new(config: GrpcConfig) -> Arc<GrpcState> {
        Arc::new(GrpcState {
            service: crate::serve::Service::new("grpc", config.admin),
            max_message_bytes: config.max_message_bytes,
        })
    }

    /// Starts serving `live`'s graph (requests already running finish on theirs).
    pub fn serve(&self, live: &crate::graph::Live) {
        self.service.serve(live);
    }

    fn current(&self) -> Result<Arc<Pipeline>, Status> {
        self.service.current().map_err(status)
    }

    /// The service as an axum router (one route, `/inference.GRPCInferenceService/*`), to
    /// serve alone or beside the REST routes with `Router::merge`.
    pub fn routes(self: &Arc<Self>) -> axum::Router {
        let limit = self.max_message_bytes;
        let service = GrpcInferenceServiceServer::new(Service(Arc::clone(self)))
            .max_decoding_message_size(limit)
            .max_encoding_message_size(limit);
        // ModelInfer by hand (`unary.rs`); every other RPC through tonic.
        axum::Router::new()
            .route(
                "/inference.GRPCInferenceService/ModelInfer",
                axum::routing::post(unary::model_infer),
            )
            .with_state(Arc::clone(self))
            .route_service(SERVICE_PATH, service)
    }
}

/// A gRPC status for an error: its code from the one error table, its message.
pub fn status(e: Error) -> Status {
    let code = Code::from_i32(e.kind.grpc_code());
    if e.kind == ErrorKind::Internal
        && crate::logs::first_in_a_while(&(e.kind.status(), &e.message, &e.step))
    {
        tracing::warn!(code = ?code, error = %e, "gRPC request failed (the same failure is logged again after a minute at the earliest)");
    } else {
        tracing::debug!(code = ?code, error = %e, "gRPC request refused");
    }
    Status::new(code, e.to_string())
}

/// `grpc-timeout` (an integer of at most 8 digits and a unit: H, M, S, m, u, n) as a
/// duration.
pub fn parse_timeout(value: &str) -> Result<Duration, Error> {
    let bad = || {
        Error::bad_request(format!(
            "grpc-timeout `{value}` is not a timeout (up to 8 digits and a unit: H, M, S, m, u, n)"
        ))
    };
    if value.len() < 2 || value.len() > 9 {
        return Err(bad());
    }
    let (digits, unit) = value.split_at(value.len() - 1);
    let n: u64 = digits.parse().map_err(|_| bad())?;
    Ok(match unit {
        "H" => Duration::from_secs(n * 3600),
        "M" => Duration::from_secs(n * 60),
        "S" => Duration::from_secs(n),
        "m" => Duration::from_millis(n),
        "u" => Duration::from_micros(n),
        "n" => Duration::from_nanos(n),
        _ => return Err(bad()),
    })
}

fn deadline(metadata: &dyn Headers) -> Result<Option<Duration>, Error> {
    metadata
        .header("grpc-timeout")
        .map(|v| parse_timeout(&v))
        .transpose()
}

/// `version` as the engine takes it: empty is none.
fn version(v: &str) -> Option<&str> {
    (!v.is_empty()).then_some(v)
}

/// One inference request through the request path; the answer, or the error.
async fn infer(
    served: &Pipeline,
    metadata: &dyn Headers,
    mut message: pb::ModelInferRequest,
) -> Result<pb::ModelInferResponse, Error> {
    let deadline = deadline(metadata)?;
    let model = std::mem::take(&mut message.model_name);
    let model_version = std::mem::take(&mut message.model_version);
    let request = Request {
        // No model named: the graph's own policy (or `x-model-name`) decides.
        model: (!model.is_empty()).then_some(model.as_str()),
        version: version(&model_version),
        explain: false,
        headers: metadata,
        resume_after: None,
        encoding: Encoding::Tensors,
        deadline,
        codec: None,
    };
    let span = || {
        let named = if model.is_empty() {
            &served.graph.name
        } else {
            &model
        };
        SpanInfo {
            name: format!("infer {named}"),
            kind: opentelemetry::trace::SpanKind::Server,
            attributes: vec![
                opentelemetry::KeyValue::new("servegraph.graph", served.graph.name.clone()),
                opentelemetry::KeyValue::new("servegraph.model", named.to_owned()),
                opentelemetry::KeyValue::new("rpc.system", "grpc"),
            ],
        }
    };
    // Decoded once admitted, as HTTP bodies are read once admitted.
    let body = async move { decode_request(message) };
    let answer = served.handle(request, span, body).await?;
    let tensors = answer
        .tensors
        .ok_or_else(|| Error::internal("the request path gave no tensors"))?;
    Ok(encode_response(answer.id, tensors))
}

/// The service: each RPC answers from the graph being served.
struct Service(Arc<GrpcState>);

impl Service {
    /// The admin settings, when the call carries the admin token (`authorization: Bearer
    /// <token>` metadata); UNIMPLEMENTED with none configured, UNAUTHENTICATED without it.
    fn admin(&self, metadata: &MetadataMap) -> Result<&Admin, Status> {
        self.0
            .service
            .authorize(metadata)
            .map_err(|refusal| match refusal {
                Refusal::Off => Status::unimplemented(
                    "the repository's load and unload are off: start the server with --admin-token",
                ),
                Refusal::Unauthorized => Status::unauthenticated(
                    "load and unload need `authorization: Bearer <token>` metadata",
                ),
                Refusal::WrongToken => Status::unauthenticated(
                    "`authorization: Bearer <token>` carries a token that is not the admin token (`--admin-token`)",
                ),
            })
    }
}

type Answer<T> = Result<tonic::Response<T>, Status>;

fn ok<T>(message: T) -> Answer<T> {
    Ok(tonic::Response::new(message))
}

/// A repository parameter as JSON, as HTTP's load and unload bodies carry it (file contents
/// as base64).
fn repository_param(p: &pb::ModelRepositoryParameter) -> Value {
    use base64::Engine as _;
    use pb::model_repository_parameter::ParameterChoice as P;
    match &p.parameter_choice {
        None => Value::Null,
        Some(P::BoolParam(b)) => Value::Bool(*b),
        Some(P::Int64Param(n)) => Value::from(*n),
        Some(P::StringParam(s)) => Value::String(s.clone()),
        Some(P::BytesParam(b)) => {
            Value::String(base64::engine::general_purpose::STANDARD.encode(b))
        }
    }
}

fn repository_body(
    params: &std::collections::HashMap<String, pb::ModelRepositoryParameter>,
) -> Value {
    let map: serde_json::Map<String, Value> = params
        .iter()
        .map(|(k, v)| (k.clone(), repository_param(v)))
        .collect();
    json!({ "parameters": map })
}

/// Triton's model configuration message from the JSON the HTTP extension serves.
fn model_config(config: &Value) -> pb::ModelConfig {
    let text = |key: &str| config[key].as_str().unwrap_or_default().to_owned();
    let dims = |t: &Value| -> Vec<i64> {
        t["dims"]
            .as_array()
            .map_or_else(Vec::new, |d| d.iter().filter_map(Value::as_i64).collect())
    };
    let data_type = |t: &Value| {
        t["data_type"]
            .as_str()
            .and_then(pb::DataType::from_str_name)
            .unwrap_or(pb::DataType::TypeInvalid) as i32
    };
    let tensors = |key: &str| config[key].as_array().cloned().unwrap_or_default();
    let versions: Vec<i64> = config["version_policy"]["specific"]["versions"]
        .as_array()
        .map_or_else(Vec::new, |v| {
            v.iter()
                .filter_map(|v| v.as_str().and_then(|s| s.parse().ok()).or(v.as_i64()))
                .collect()
        });
    let batching = config
        .get("dynamic_batching")
        .map(|b| pb::ModelDynamicBatching {
            preferred_batch_size: b["preferred_batch_size"]
                .as_array()
                .map_or_else(Vec::new, |v| {
                    v.iter()
                        .filter_map(|n| n.as_i64())
                        .map(|n| n as i32)
                        .collect()
                }),
            max_queue_delay_microseconds: b["max_queue_delay_microseconds"].as_u64().unwrap_or(0),
        });
    pb::ModelConfig {
        name: text("name"),
        platform: text("platform"),
        backend: text("backend"),
        version_policy: Some(pb::ModelVersionPolicy {
            policy_choice: Some(pb::model_version_policy::PolicyChoice::Specific(
                pb::model_version_policy::Specific { versions },
            )),
        }),
        max_batch_size: config["max_batch_size"].as_i64().unwrap_or(0) as i32,
        input: tensors("input")
            .iter()
            .map(|t| pb::ModelInput {
                name: t["name"].as_str().unwrap_or_default().to_owned(),
                data_type: data_type(t),
                dims: dims(t),
            })
            .collect(),
        output: tensors("output")
            .iter()
            .map(|t| pb::ModelOutput {
                name: t["name"].as_str().unwrap_or_default().to_owned(),
                data_type: data_type(t),
                dims: dims(t),
            })
            .collect(),
        scheduling_choice: batching.map(pb::model_config::SchedulingChoice::DynamicBatching),
    }
}

fn tensor_metadata(
    list: &[crate::tensor::TensorMeta],
) -> Vec<pb::model_metadata_response::TensorMetadata> {
    list.iter()
        .map(|t| pb::model_metadata_response::TensorMetadata {
            name: t.name.clone(),
            datatype: t.datatype.as_str().to_owned(),
            shape: t.shape.clone(),
        })
        .collect()
}

#[tonic::async_trait]
impl GrpcInferenceService for Service {
    async fn server_live(
        &self,
        _: tonic::Request<pb::ServerLiveRequest>,
    ) -> Answer<pb::ServerLiveResponse> {
        ok(pb::ServerLiveResponse { live: true })
    }

    async fn server_ready(
        &self,
        _: tonic::Request<pb::ServerReadyRequest>,
    ) -> Answer<pb::ServerReadyResponse> {
        ok(pb::ServerReadyResponse {
            ready: self.0.service.ready().is_ok(),
        })
    }

    async fn model_ready(
        &self,
        request: tonic::Request<pb::ModelReadyRequest>,
    ) -> Answer<pb::ModelReadyResponse> {
        let r = request.into_inner();
        if self.0.service.loaded().is_none() {
            return ok(pb::ModelReadyResponse { ready: false });
        }
        match self.0.service.model_ready(&r.name, version(&r.version)) {
            Ok(()) => ok(pb::ModelReadyResponse { ready: true }),
            Err(e) if e.kind == ErrorKind::Unavailable => {
                ok(pb::ModelReadyResponse { ready: false })
            }
            Err(e) => Err(status(e)),
        }
    }

    async fn server_metadata(
        &self,
        _: tonic::Request<pb::ServerMetadataRequest>,
    ) -> Answer<pb::ServerMetadataResponse> {
        ok(pb::ServerMetadataResponse {
            name: "servegraph".into(),
            version: env!("CARGO_PKG_VERSION").into(),
            extensions: crate::serve::EXTENSIONS
                .iter()
                .map(|e| e.to_string())
                .collect(),
        })
    }

    async fn model_metadata(
        &self,
        request: tonic::Request<pb::ModelMetadataRequest>,
    ) -> Answer<pb::ModelMetadataResponse> {
        let r = request.into_inner();
        let served = self.0.current()?;
        let graph = &served.graph;
        let info = graph
            .find_model(&r.name, version(&r.version))
            .map_err(status)?;
        ok(pb::ModelMetadataResponse {
            name: info.name.clone(),
            versions: graph
                .versions(&r.name)
                .into_iter()
                .map(str::to_owned)
                .collect(),
            platform: info.platform.as_str().to_owned(),
            inputs: tensor_metadata(&info.inputs),
            outputs: tensor_metadata(&info.outputs),
        })
    }

    async fn model_stream_infer(
        &self,
        request: tonic::Request<tonic::Streaming<pb::ModelInferRequest>>,
    ) -> Answer<tonic::codegen::BoxStream<pb::ModelStreamInferResponse>> {
        let (metadata, _, incoming) = request.into_parts();
        let metadata = Arc::new(metadata);
        let state = Arc::clone(&self.0);
        let answers = incoming
            .map(move |message| {
                let (state, metadata) = (Arc::clone(&state), Arc::clone(&metadata));
                async move {
                    let message = message?;
                    let id = message.id.clone();
                    // The graph serving when the request arrived (a reload may come mid-stream).
                    let result = match state.service.loaded() {
                        None => Err(crate::serve::not_loaded()),
                        Some(served) => infer(&served, &*metadata, message).await,
                    };
                    Ok(match result {
                        Ok(response) => pb::ModelStreamInferResponse {
                            error_message: String::new(),
                            infer_response: Some(response),
                        },
                        // A failed request is answered in the stream, which goes on.
                        Err(e) => pb::ModelStreamInferResponse {
                            error_message: e.to_string(),
                            infer_response: Some(pb::ModelInferResponse {
                                id,
                                ..Default::default()
                            }),
                        },
                    })
                }
            })
            .buffered(STREAM_IN_FLIGHT);
        ok(Box::pin(answers))
    }

    async fn model_config(
        &self,
        request: tonic::Request<pb::ModelConfigRequest>,
    ) -> Answer<pb::ModelConfigResponse> {
        let r = request.into_inner();
        let config = self
            .0
            .service
            .config(&r.name, version(&r.version))
            .map_err(status)?;
        ok(pb::ModelConfigResponse {
            config: Some(model_config(&config)),
        })
    }

    async fn model_statistics(
        &self,
        request: tonic::Request<pb::ModelStatisticsRequest>,
    ) -> Answer<pb::ModelStatisticsResponse> {
        let r = request.into_inner();
        let name = (!r.name.is_empty()).then_some(r.name.as_str());
        let stats = self
            .0
            .service
            .statistics(name, version(&r.version))
            .map_err(status)?;
        serde_json::from_value(stats)
            .map(tonic::Response::new)
            .map_err(|e| {
                status(Error::internal(format!(
                    "the statistics do not fit their message: {e}"
                )))
            })
    }

    async fn repository_index(
        &self,
        request: tonic::Request<pb::RepositoryIndexRequest>,
    ) -> Answer<pb::RepositoryIndexResponse> {
        let r = request.into_inner();
        let text = |v: &Value, k: &str| v[k].as_str().unwrap_or_default().to_owned();
        let models = self
            .0
            .service
            .repository_index()
            .map_err(status)?
            .iter()
            .map(|m| pb::repository_index_response::ModelIndex {
                name: text(m, "name"),
                version: text(m, "version"),
                state: text(m, "state"),
                reason: text(m, "reason"),
            })
            .filter(|m| !r.ready || m.state == "READY")
            .collect();
        ok(pb::RepositoryIndexResponse { models })
    }

    async fn repository_model_load(
        &self,
        request: tonic::Request<pb::RepositoryModelLoadRequest>,
    ) -> Answer<pb::RepositoryModelLoadResponse> {
        let admin = self.admin(request.metadata())?;
        let r = request.get_ref();
        let action = AdminAction::Load {
            model: r.model_name.clone(),
            body: repository_body(&r.parameters),
        };
        admin.act(action).await.map_err(status)?;
        ok(pb::RepositoryModelLoadResponse {})
    }

    async fn repository_model_unload(
        &self,
        request: tonic::Request<pb::RepositoryModelUnloadRequest>,
    ) -> Answer<pb::RepositoryModelUnloadResponse> {
        let admin = self.admin(request.metadata())?;
        let r = request.get_ref();
        let action = AdminAction::Unload {
            model: r.model_name.clone(),
            body: repository_body(&r.parameters),
        };
        admin.act(action).await.map_err(status)?;
        ok(pb::RepositoryModelUnloadResponse {})
    }
}

/// The gRPC source on its own listener (Triton's port 8001), plain or TLS. It listens from
/// the moment it is built (live; not ready until started on a graph).
pub struct GrpcSource {
    state: Arc<GrpcState>,
    listener: Listener,
}

/// Where a gRPC source is served.
enum Listener {
    /// A listener of its own, not started yet.
    Own(crate::serve::listen::Server),
    /// The HTTP port (the HTTP source owns the socket; this source follows the graph and
    /// the drain).
    HttpPort,
    /// Its own listener, started.
    Started,
}

impl GrpcSource {
    /// Serves `state` on `listener`, over TLS when `tls` is given.
    pub fn listen(
        listener: tokio::net::TcpListener,
        state: Arc<GrpcState>,
        tls: Option<axum_server::tls_rustls::RustlsConfig>,
    ) -> std::io::Result<GrpcSource> {
        let server = crate::serve::listen::spawn_app(listener, state.routes(), tls, true)?;
        Ok(GrpcSource {
            state,
            listener: Listener::Own(server),
        })
    }

    /// The source for a service served on the HTTP port ([`GrpcState::routes`] merged into
    /// the HTTP app): it follows the graph and the drain; the HTTP source owns the socket.
    pub fn on_http_port(state: Arc<GrpcState>) -> GrpcSource {
        GrpcSource {
            state,
            listener: Listener::HttpPort,
        }
    }
}

#[async_trait::async_trait]
impl crate::sources::Source for GrpcSource {
    fn name(&self) -> &'static str {
        "grpc"
    }

    async fn start(
        &mut self,
        mut ctx: crate::sources::SourceContext,
    ) -> Result<tokio::task::JoinHandle<()>, crate::sources::StartError> {
        let live = ctx.live.borrow().clone();
        self.state.serve(&live);
        self.state.service.follow(&ctx.health);
        let state = Arc::clone(&self.state);
        match std::mem::replace(&mut self.listener, Listener::Started) {
            Listener::HttpPort => {
                self.listener = Listener::HttpPort;
                Ok(tokio::spawn(async move {
                    use crate::sources::{Phase, SourceContext};
                    SourceContext::reached(&mut ctx.phase, Phase::Draining).await;
                    state.service.drain();
                }))
            }
            Listener::Own((server, stop)) => Ok(tokio::spawn(async move {
                crate::serve::listen::follow_phase("gRPC", server, stop, &state.service, ctx).await
            })),
            Listener::Started => Err("the gRPC source is started twice".into()),
        }
    }

    fn reload(&self, live: &crate::graph::Live) {
        self.state.serve(live);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grpc_timeouts_are_read_in_every_unit() {
        assert_eq!(parse_timeout("5S").unwrap(), Duration::from_secs(5));
        assert_eq!(parse_timeout("250m").unwrap(), Duration::from_millis(250));
        assert_eq!(
            parse_timeout("99999999u").unwrap(),
            Duration::from_micros(99_999_999)
        );
        assert_eq!(parse_timeout("1H").unwrap(), Duration::from_secs(3600));
        assert!(parse_timeout("5").is_err());
        assert!(parse_timeout("123456789S").is_err());
        assert!(parse_timeout("5s").is_err());
    }

    #[test]
    fn every_error_kind_has_a_grpc_code_that_maps_back_to_its_class() {
        for kind in [
            ErrorKind::BadRequest,
            ErrorKind::NotFound,
            ErrorKind::Overloaded,
            ErrorKind::Unavailable,
            ErrorKind::Timeout,
            ErrorKind::Internal,
            ErrorKind::NotImplemented,
            ErrorKind::Forbidden,
        ] {
            let code = kind.grpc_code();
            assert_ne!(Code::from_i32(code), Code::Unknown, "{kind:?}");
            assert_eq!(ErrorKind::from_grpc_code(code), kind, "{kind:?}");
        }
        assert_eq!(
            ErrorKind::Overloaded.grpc_code(),
            Code::ResourceExhausted as i32
        );
        assert_eq!(
            ErrorKind::Timeout.grpc_code(),
            Code::DeadlineExceeded as i32
        );
    }
}
