//! `class: remote`: a model served by another Open Inference Protocol (V2) server (another
//! servegraph, Triton, KServe, Seldon, MLServer), called over HTTP/1.1 or, with
//! `protocol: grpc`, over gRPC (tensors raw both ways; one HTTP/2 connection, multiplexed,
//! reconnected when it breaks).
//!
//! HTTP connections are pooled and kept alive. At most `max_in_flight` requests are out at once
//! (more get 503 at once). Each attempt has a deadline; a 5xx or 429 answer, a refused or
//! broken connection, or a missed deadline is retried `retries` times with exponential
//! backoff (`backoff_ms`, doubling); a 4xx answer is the request's fault and is passed on with
//! the remote's message and status. When the server is down, requests fail fast with 503 and
//! the step recovers by itself once the server is back.

use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::{Request, StatusCode, Uri};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use servegraph_engine::protocol::{decode_response, encode_request};
use servegraph_engine::{
    Error, ErrorKind, Event, Result, Signature, Step, TensorMeta, async_trait,
};
use tokio::sync::Semaphore;

/// Largest response body accepted from a remote server.
const MAX_RESPONSE_BYTES: usize = 256 * 1024 * 1024;

/// How to call the remote model.
#[derive(Clone, Debug)]
pub struct RemoteSettings {
    pub model: String,
    pub version: Option<String>,
    pub attempt_timeout: Duration,
    pub retries: u32,
    pub backoff: Duration,
    pub max_in_flight: usize,
    pub binary: bool,
    pub protocol: crate::model::RemoteProtocol,
}

type GrpcClient =
    servegraph_engine::grpc::pb::grpc_inference_service_client::GrpcInferenceServiceClient<
        tonic::transport::Channel,
    >;

/// How requests reach the server (one per step: the variants' sizes do not matter).
#[allow(clippy::large_enum_variant)]
enum Transport {
    Http {
        infer: Uri,
        client: Client<HttpConnector, Full<Bytes>>,
    },
    /// The channel is made on first use, on the serving runtime (its worker task lives
    /// there; steps are built off any runtime).
    Grpc {
        endpoint: tonic::transport::Endpoint,
        client: std::sync::OnceLock<GrpcClient>,
    },
}

pub struct RemoteModel {
    name: String,
    base: String,
    settings: RemoteSettings,
    transport: Transport,
    in_flight: Semaphore,
    /// The remote model's metadata, when it could be read at load.
    meta: Option<(Vec<TensorMeta>, Vec<TensorMeta>)>,
    metrics: servegraph_engine::metrics::ModelMetrics,
}

impl RemoteModel {
    /// Checks the URL and, when `fetch_metadata`, asks the server for the model's inputs and
    /// outputs (a server that is down only costs the validation of those tensors: a warning).
    /// The error is the diagnostic for `url`.
    pub fn new(
        name: &str,
        url: &str,
        settings: RemoteSettings,
        fetch_metadata: bool,
    ) -> std::result::Result<RemoteModel, String> {
        let base = url.trim_end_matches('/').to_owned();
        let path = match &settings.version {
            Some(v) => format!("/v2/models/{}/versions/{v}", settings.model),
            None => format!("/v2/models/{}", settings.model),
        };
        let infer: Uri = format!("{base}{path}/infer")
            .parse()
            .map_err(|e| format!("`url` is not a valid URL: {e}"))?;
        if infer.scheme_str() != Some("http") || infer.authority().is_none() {
            return Err(format!("`url` must be http://host:port, not `{url}`"));
        }
        let grpc = settings.protocol == crate::model::RemoteProtocol::Grpc;
        let meta = if fetch_metadata {
            let meta = if grpc {
                fetch_grpc(&base, &settings.model, settings.version.as_deref())
            } else {
                fetch(&format!("{base}{path}"))
            };
            match meta {
                Ok(meta) => Some(meta),
                Err(e) => {
                    tracing::warn!(step = name, url = %base, error = %e, "remote model metadata unavailable; its tensors are not validated");
                    None
                }
            }
        } else {
            None
        };
        let transport = if grpc {
            Transport::Grpc {
                endpoint: grpc_endpoint(&base)?,
                client: std::sync::OnceLock::new(),
            }
        } else {
            Transport::Http {
                infer,
                client: Client::builder(TokioExecutor::new())
                    .pool_idle_timeout(Duration::from_secs(30))
                    .build_http(),
            }
        };
        Ok(RemoteModel {
            metrics: servegraph_engine::metrics::ModelMetrics::new(name),
            name: name.to_owned(),
            base,
            in_flight: Semaphore::new(settings.max_in_flight),
            settings,
            transport,
            meta,
        })
    }

    /// One gRPC attempt (the request's tensors are shared, not copied, between attempts).
    async fn attempt_grpc(
        &self,
        client: &GrpcClient,
        message: &servegraph_engine::grpc::pb::ModelInferRequest,
    ) -> std::result::Result<Vec<servegraph_engine::Tensor>, (Error, bool)> {
        let mut client = client.clone();
        let mut request = tonic::Request::new(message.clone());
        // The server sees the deadline too (`grpc-timeout`), and gives up when it passes.
        request.set_timeout(self.settings.attempt_timeout);
        let answer =
            tokio::time::timeout(self.settings.attempt_timeout, client.model_infer(request))
                .await
                .map_err(|_| {
                    let ms = self.settings.attempt_timeout.as_millis();
                    (
                        Error::timeout(format!("{} did not answer within {ms} ms", self.base)),
                        true,
                    )
                })?;
        match answer {
            Ok(response) => servegraph_engine::grpc::decode_response(response.into_inner())
                .map_err(|e| (e, false)),
            Err(status) => {
                let kind = ErrorKind::from_grpc_code(status.code() as i32);
                // As over HTTP: the server's trouble (5xx) and overload are retried, the
                // request's own faults are passed on.
                let retry = kind == ErrorKind::Overloaded || kind.status() >= 500;
                let message = if status.code() == tonic::Code::Unavailable
                    && status.message().contains("transport")
                {
                    format!("cannot reach {}: {}", self.base, status.message())
                } else {
                    format!(
                        "{} answered {:?}: {}",
                        self.base,
                        status.code(),
                        status.message()
                    )
                };
                Err((Error::new(kind, message), retry))
            }
        }
    }

    /// One attempt: `Ok` with the tensors, or an error and whether to try again.
    async fn attempt(
        &self,
        infer: &Uri,
        client: &Client<HttpConnector, Full<Bytes>>,
        body: &Bytes,
        json_len: Option<usize>,
    ) -> std::result::Result<Vec<servegraph_engine::Tensor>, (Error, bool)> {
        let mut req = Request::post(infer.clone());
        req = match json_len {
            Some(n) => req
                .header("content-type", "application/octet-stream")
                .header("inference-header-content-length", n),
            None => req.header("content-type", "application/json"),
        };
        let req = req
            .body(Full::new(body.clone()))
            .map_err(|e| (Error::internal(format!("building the request: {e}")), false))?;
        let call = async {
            let resp = client.request(req).await.map_err(|e| {
                (
                    Error::unavailable(format!("cannot reach {}: {e}", self.base)),
                    true,
                )
            })?;
            let status = resp.status();
            let header_len = resp
                .headers()
                .get("inference-header-content-length")
                .and_then(|v| v.to_str().ok())
                .and_then(|s| s.parse::<usize>().ok());
            let bytes = Limited::new(resp.into_body(), MAX_RESPONSE_BYTES)
                .collect()
                .await
                .map_err(|e| {
                    (
                        Error::unavailable(format!("reading the answer of {}: {e}", self.base)),
                        true,
                    )
                })?
                .to_bytes();
            Ok::<_, (Error, bool)>((status, header_len, bytes))
        };
        let (status, header_len, bytes) = tokio::time::timeout(self.settings.attempt_timeout, call)
            .await
            .map_err(|_| {
                let ms = self.settings.attempt_timeout.as_millis();
                (
                    Error::timeout(format!("{} did not answer within {ms} ms", self.base)),
                    true,
                )
            })??;
        if status.is_success() {
            return decode_response(&bytes, header_len).map_err(|e| (e, false));
        }
        let message = serde_json::from_slice::<serde_json::Value>(&bytes)
            .ok()
            .and_then(|v| v.get("error").and_then(|e| e.as_str()).map(str::to_owned))
            .unwrap_or_else(|| String::from_utf8_lossy(&bytes).chars().take(200).collect());
        let message = format!("{} answered {}: {message}", self.base, status.as_u16());
        let (kind, retry) = match status {
            StatusCode::BAD_REQUEST => (ErrorKind::BadRequest, false),
            StatusCode::NOT_FOUND => (ErrorKind::NotFound, false),
            StatusCode::PAYLOAD_TOO_LARGE => (ErrorKind::PayloadTooLarge, false),
            StatusCode::UNPROCESSABLE_ENTITY => (ErrorKind::Unprocessable, false),
            StatusCode::TOO_MANY_REQUESTS => (ErrorKind::Overloaded, true),
            s if s.is_server_error() => (ErrorKind::Unavailable, true),
            _ => (ErrorKind::Internal, false),
        };
        Err((Error::new(kind, message), retry))
    }
}

#[async_trait]
impl Step for RemoteModel {
    async fn process(&self, mut event: Event) -> Result<Event> {
        let _permit = self.in_flight.try_acquire().map_err(|_| {
            Error::unavailable(format!(
                "remote model `{}` already has {} requests in flight",
                self.name, self.settings.max_in_flight
            ))
        })?;
        let request = match &self.transport {
            Transport::Http { .. } => {
                let encoded = encode_request(&event.id, &event.tensors, self.settings.binary)?;
                Encoded::Http(Bytes::from(encoded.body), encoded.json_len)
            }
            Transport::Grpc { .. } => Encoded::Grpc(servegraph_engine::grpc::encode_request(
                &self.settings.model,
                self.settings.version.as_deref(),
                &event.id,
                &event.tensors,
            )),
        };
        let mut delay = self.settings.backoff;
        let mut attempt = 0;
        let start = std::time::Instant::now();
        loop {
            let call = std::time::Instant::now();
            let outcome = match (&self.transport, &request) {
                (Transport::Http { infer, client }, Encoded::Http(body, json_len)) => {
                    self.attempt(infer, client, body, *json_len).await
                }
                (Transport::Grpc { endpoint, client }, Encoded::Grpc(message)) => {
                    let client = client.get_or_init(|| grpc_client(endpoint));
                    self.attempt_grpc(client, message).await
                }
                _ => unreachable!("a request is encoded for its transport"),
            };
            self.metrics.run_seconds.observe(call.elapsed());
            match outcome {
                Ok(tensors) => {
                    event.tensors = tensors;
                    event.model_time += start.elapsed();
                    return Ok(event);
                }
                Err((e, retry)) if retry && attempt < self.settings.retries => {
                    tracing::debug!(step = %self.name, attempt, error = %e, "remote call failed; retrying");
                    attempt += 1;
                    tokio::time::sleep(delay).await;
                    delay = delay.saturating_mul(2);
                }
                Err((mut e, retry)) => {
                    if retry {
                        e.message = format!("{} (after {} attempts)", e.message, attempt + 1);
                    }
                    return Err(e);
                }
            }
        }
    }

    fn infer(&self, input: &Signature) -> std::result::Result<Signature, String> {
        match &self.meta {
            Some((inputs, outputs)) => {
                input.check_provides(inputs)?;
                Ok(Signature::exact(outputs.clone()))
            }
            None => Ok(Signature::open()),
        }
    }

    fn inputs(&self) -> Option<Vec<TensorMeta>> {
        self.meta.as_ref().map(|(inputs, _)| inputs.clone())
    }

    fn model(&self) -> Option<&dyn servegraph_engine::Model> {
        Some(self)
    }
}

impl servegraph_engine::Model for RemoteModel {
    fn platform(&self) -> servegraph_engine::Platform {
        servegraph_engine::Platform::Remote
    }
}

/// A request encoded once for all its attempts.
enum Encoded {
    Http(Bytes, Option<usize>),
    Grpc(servegraph_engine::grpc::pb::ModelInferRequest),
}

/// Where a gRPC server is (`http://host:port`); the error is the diagnostic for `url`.
fn grpc_endpoint(base: &str) -> std::result::Result<tonic::transport::Endpoint, String> {
    Ok(tonic::transport::Endpoint::from_shared(base.to_owned())
        .map_err(|e| format!("`url` is not a valid URL: {e}"))?
        .connect_timeout(Duration::from_secs(2))
        .tcp_nodelay(true))
}

/// A gRPC client of `endpoint`: connects on first use, and again whenever the connection
/// breaks. Must be called on a tokio runtime.
fn grpc_client(endpoint: &tonic::transport::Endpoint) -> GrpcClient {
    GrpcClient::new(endpoint.connect_lazy())
        .max_decoding_message_size(MAX_RESPONSE_BYTES)
        .max_encoding_message_size(usize::MAX)
}

/// The model's inputs and outputs over gRPC (`ModelMetadata`), with a short deadline, on a
/// thread of its own.
fn fetch_grpc(
    base: &str,
    model: &str,
    version: Option<&str>,
) -> Result<(Vec<TensorMeta>, Vec<TensorMeta>)> {
    let (base, model, version) = (
        base.to_owned(),
        model.to_owned(),
        version.map(str::to_owned),
    );
    on_own_runtime(async move {
        let mut client = grpc_client(&grpc_endpoint(&base).map_err(Error::bad_request)?);
        let mut request = tonic::Request::new(servegraph_engine::grpc::pb::ModelMetadataRequest {
            name: model,
            version: version.unwrap_or_default(),
        });
        request.set_timeout(Duration::from_secs(2));
        let meta = tokio::time::timeout(Duration::from_secs(2), client.model_metadata(request))
            .await
            .map_err(|_| Error::timeout("no answer within 2 s"))?
            .map_err(|s| {
                Error::new(
                    ErrorKind::from_grpc_code(s.code() as i32),
                    format!("{:?}: {}", s.code(), s.message()),
                )
            })?
            .into_inner();
        let tensors =
            |list: Vec<servegraph_engine::grpc::pb::model_metadata_response::TensorMetadata>| {
                list.into_iter()
                    .map(|t| {
                        let datatype =
                            servegraph_engine::DataType::parse(&t.datatype).ok_or_else(|| {
                                Error::internal(format!(
                                    "unknown datatype `{}` of `{}`",
                                    t.datatype, t.name
                                ))
                            })?;
                        Ok(TensorMeta::new(t.name, datatype, t.shape))
                    })
                    .collect::<Result<Vec<_>>>()
            };
        Ok((tensors(meta.inputs)?, tensors(meta.outputs)?))
    })
}

/// Runs `call` on a thread and a runtime of its own, so it works whether or not the caller
/// is inside an async runtime (steps are built from either).
fn on_own_runtime<T: Send + 'static>(
    call: impl std::future::Future<Output = Result<T>> + Send + 'static,
) -> Result<T> {
    std::thread::spawn(move || {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| Error::internal(e.to_string()))?
            .block_on(call)
    })
    .join()
    .map_err(|_| Error::internal("the metadata request panicked"))?
}

/// Reads `GET {url}` (OIP model metadata) with a short deadline, on a thread of its own so it
/// works whether or not the caller is inside an async runtime.
fn fetch(url: &str) -> Result<(Vec<TensorMeta>, Vec<TensorMeta>)> {
    let url = url.to_owned();
    on_own_runtime(async move {
        let uri = url
            .parse::<Uri>()
            .map_err(|e| Error::bad_request(e.to_string()))?;
        let client: Client<HttpConnector, Full<Bytes>> =
            Client::builder(TokioExecutor::new()).build_http();
        let resp = tokio::time::timeout(Duration::from_secs(2), client.get(uri))
            .await
            .map_err(|_| Error::timeout("no answer within 2 s"))?
            .map_err(|e| Error::unavailable(e.to_string()))?;
        let status = resp.status();
        let body = resp
            .into_body()
            .collect()
            .await
            .map_err(|e| Error::unavailable(e.to_string()))?
            .to_bytes();
        if !status.is_success() {
            return Err(Error::new(
                ErrorKind::from_status(status.as_u16()),
                format!("{status}: {}", String::from_utf8_lossy(&body)),
            ));
        }
        #[derive(serde::Deserialize)]
        struct Meta {
            inputs: Vec<TensorMeta>,
            outputs: Vec<TensorMeta>,
        }
        let m: Meta = serde_json::from_slice(&body)
            .map_err(|e| Error::internal(format!("unexpected metadata: {e}")))?;
        Ok((m.inputs, m.outputs))
    })
}
