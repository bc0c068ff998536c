//! The one request path every source calls: HTTP, Kafka, `servegraph invoke` (and any later
//! source). Each source turns its transport's request into a [`Request`] and hands it, with
//! the body, to [`Pipeline::handle`] (or [`Pipeline::observe`] + [`Pipeline::serve`] when it
//! retries), which
//!
//! 1. **prepares**: checks the addressed model, takes an admission permit (429 past the
//!    graph's `max_in_flight`), reads the body, decodes it (JSON or the binary extension),
//!    applies the limits, resolves the target (URL, else the body's `model`, else the
//!    `x-model-name` header, else the graph's own policy), copies the headers steps read and
//!    the trace context into the event;
//! 2. **runs** the graph, tracked (a monitoring event) or not;
//! 3. **encodes** the answer (binary where asked and the transport allows it).
//!
//! Metrics (requests by code, latency, engine overhead, in flight) and the request's span are
//! recorded here too, under the source's name.

use std::borrow::Cow;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use crate::error::{Error, ErrorKind, Result};
use crate::event::{ATTRIBUTIONS, Target};
use crate::graph::{Graph, Live};
use crate::metrics::RequestMetrics;
use crate::protocol;
use crate::tracking::Tracker;

/// The binary tensor extension's header: the JSON part's length.
pub const HEADER_CONTENT_LENGTH: &str = "inference-header-content-length";
/// Headers that name the model and version when neither the URL nor the body does.
pub const MODEL_HEADER: &str = "x-model-name";
pub const VERSION_HEADER: &str = "x-model-version";

/// In [`Graph::headers`], `body:FIELD` names a top-level field of the request body that a
/// step reads (a sticky router's key): the request path copies it into the event's
/// `parameters` unless `parameters` has one of that name already.
pub const BODY_FIELD: &str = "body:";

/// In [`Graph::headers`], every header of the request: a step that reads them all (a KServe
/// class, which KServe hands the request's headers). The request path copies at most
/// [`ALL_HEADERS_MAX`] of them, [`ALL_HEADERS_BYTES`] of names and values in all.
pub const ALL_HEADERS: &str = "*";
pub const ALL_HEADERS_MAX: usize = 100;
pub const ALL_HEADERS_BYTES: usize = 64 * 1024;

/// A request's headers (HTTP headers, Kafka message headers), looked up by lower-case name.
pub trait Headers: Sync {
    fn header(&self, name: &str) -> Option<Cow<'_, str>>;
    /// Hands `each` every header in turn (lower-case name, value), until it answers false;
    /// a value that is not text is left out.
    fn for_each(&self, each: &mut dyn FnMut(&str, &str) -> bool);
}

/// No headers (`servegraph invoke`).
pub struct NoHeaders;

impl Headers for NoHeaders {
    fn header(&self, _: &str) -> Option<Cow<'_, str>> {
        None
    }

    fn for_each(&self, _: &mut dyn FnMut(&str, &str) -> bool) {}
}

/// Kafka-style headers: names matched case-insensitively, values as (lossy) UTF-8.
impl Headers for Vec<(String, Vec<u8>)> {
    fn header(&self, name: &str) -> Option<Cow<'_, str>> {
        self.iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| String::from_utf8_lossy(v))
    }

    fn for_each(&self, each: &mut dyn FnMut(&str, &str) -> bool) {
        for (k, v) in self {
            if !each(&k.to_ascii_lowercase(), &String::from_utf8_lossy(v)) {
                return;
            }
        }
    }
}

/// Every header of `headers` into `out`, within [`ALL_HEADERS_MAX`] and
/// [`ALL_HEADERS_BYTES`] (the rest are left out).
fn copy_all(headers: &dyn Headers, out: &mut Vec<(String, String)>) {
    let (mut count, mut bytes) = (0, 0);
    headers.for_each(&mut |name, value| {
        count += 1;
        bytes += name.len() + value.len();
        if count > ALL_HEADERS_MAX || bytes > ALL_HEADERS_BYTES {
            return false;
        }
        out.push((name.to_owned(), value.to_owned()));
        true
    });
}

/// How the answer is encoded.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Encoding {
    /// As the request asked: binary outputs where it said so (HTTP).
    AsRequested,
    /// Every output as JSON data, whatever the request asked (Kafka, the CLI).
    Json,
    /// Not encoded: the outputs are handed back as tensors ([`Response::tensors`]) for a
    /// transport with its own encoding (gRPC's protobuf).
    Tensors,
}

/// A request's body as its source has it.
pub enum Body {
    /// OIP JSON (or JSON then binary data, or MLRun's rows): HTTP, Kafka, the CLI.
    Bytes(bytes::Bytes),
    /// Decoded by the transport already (gRPC's protobuf).
    Decoded(protocol::InferRequest),
}

impl From<bytes::Bytes> for Body {
    fn from(b: bytes::Bytes) -> Body {
        Body::Bytes(b)
    }
}

impl From<protocol::InferRequest> for Body {
    fn from(r: protocol::InferRequest) -> Body {
        Body::Decoded(r)
    }
}

/// The answer as tensors ([`Encoding::Tensors`]).
#[derive(Debug)]
pub struct Tensors {
    /// The model as its metadata names it.
    pub model: String,
    pub version: Option<String>,
    /// The outputs asked for, in order (all of them when none were named).
    pub outputs: Vec<crate::tensor::Tensor>,
    /// The event's notes and the route taken, as JSON responses carry them in `parameters`.
    pub parameters: serde_json::Map<String, serde_json::Value>,
    /// Parameters of single outputs, by output name (the event's `output_parameters`).
    pub output_parameters: serde_json::Map<String, serde_json::Value>,
}

/// One request as a source hands it over.
pub struct Request<'a> {
    /// The model the transport addressed (the URL's); `None` for the graph's own policy,
    /// unless the body's `model` or the `x-model-name` header names one.
    pub model: Option<&'a str>,
    pub version: Option<&'a str>,
    /// `/explain` rather than `/infer`.
    pub explain: bool,
    pub headers: &'a dyn Headers,
    /// Run only the steps after this one (a message a queue step published).
    pub resume_after: Option<String>,
    pub encoding: Encoding,
    /// The caller's own deadline (gRPC's `grpc-timeout`), within the graph's.
    pub deadline: Option<Duration>,
    /// The wire protocol's body codec; `None`: the OIP's, or MLRun's rows when the body is
    /// rows ([`protocol::sniff`]).
    pub codec: Option<&'a dyn protocol::Codec>,
}

/// A served request's answer.
#[derive(Debug)]
pub struct Response {
    /// The request's id (given, or made up).
    pub id: String,
    /// The encoded answer (empty with [`Encoding::Tensors`]).
    pub body: Vec<u8>,
    /// Set when binary data follows the JSON (send as `Inference-Header-Content-Length`).
    pub json_len: Option<usize>,
    /// The answer as tensors, with [`Encoding::Tensors`].
    pub tensors: Option<Tensors>,
    /// The event was handed on (a queue step): accepted, the result goes elsewhere (202).
    pub accepted: bool,
    /// Time the models took.
    pub model_time: Duration,
    /// The request's rows (its first input's first dimension), for the statistics.
    pub rows: u64,
}

impl Response {
    /// The status code the answer has.
    pub fn code(&self) -> u16 {
        if self.accepted { 202 } else { 200 }
    }
}

/// The graph being served, as one source serves it: its tracking stream and the source's
/// request metrics. Built when a graph starts serving on a source (and again on a reload).
pub struct Pipeline {
    pub graph: Arc<Graph>,
    tracker: Option<Tracker>,
    metrics: RequestMetrics,
    /// The graph's successes and failures (the statistics extension).
    outcomes: Arc<crate::stats::Outcomes>,
    source: &'static str,
}

impl Pipeline {
    /// The graph's tracking stream, when it has one.
    pub fn tracker(&self) -> Option<&Tracker> {
        self.tracker.as_ref()
    }
}

/// A request being observed: its start, its in-flight count, its span.
pub struct Observation<'p> {
    pipeline: &'p Pipeline,
    start: std::time::Instant,
    _in_flight: crate::metrics::InFlight,
    span: Option<crate::telemetry::RequestSpan>,
    finished: bool,
}

impl Observation<'_> {
    /// The request span's context, for the event (`None` unless spans are exported).
    pub fn trace(&self) -> Option<opentelemetry::Context> {
        self.span.as_ref().map(|s| s.context())
    }

    /// Records the outcome: the metrics by code, and the span's end.
    pub fn finish(mut self, result: &Result<Response>) {
        self.finished = true;
        let (code, model_time, error) = match result {
            Ok(r) => (r.code(), Some(r.model_time), None),
            Err(e) => (e.kind.status(), None, Some(e.to_string())),
        };
        let elapsed = self.start.elapsed();
        self.pipeline.metrics.finish(code, elapsed, model_time);
        // Requests for a model the graph does not serve, or too large to read, never met it.
        match result {
            Ok(r) => self.pipeline.outcomes.record(true, elapsed, r.rows),
            Err(e) if !matches!(e.kind, ErrorKind::NotFound | ErrorKind::PayloadTooLarge) => {
                self.pipeline.outcomes.record(false, elapsed, 0)
            }
            Err(_) => {}
        }
        if let Some(span) = self.span.take() {
            span.end(code, error.as_deref());
        }
    }
}

/// The status recorded for a request its caller gave up on (the connection closed, or a
/// gRPC call was cancelled or passed its deadline on the caller's side) before it was
/// answered: nginx's "client closed request".
pub const CANCELLED: u16 = 499;

impl Drop for Observation<'_> {
    /// A request dropped before it finished (its caller went away) is still counted.
    fn drop(&mut self) {
        if self.finished {
            return;
        }
        self.pipeline
            .metrics
            .finish(CANCELLED, self.start.elapsed(), None);
        if let Some(span) = self.span.take() {
            span.end(CANCELLED, Some("the caller went away before the answer"));
        }
    }
}

/// What a request's span is called and says (built only when spans are exported).
pub struct SpanInfo {
    pub name: String,
    pub kind: opentelemetry::trace::SpanKind,
    pub attributes: Vec<opentelemetry::KeyValue>,
}

impl Pipeline {
    /// The request path for `live`'s graph on `source` (`http`, `kafka`, `invoke`, ...).
    pub fn new(live: &Live, source: &'static str) -> Pipeline {
        Pipeline {
            metrics: RequestMetrics::new(&live.graph.name, source),
            outcomes: crate::stats::outcomes(&live.graph.name),
            graph: Arc::clone(&live.graph),
            tracker: live.tracker.clone(),
            source,
        }
    }

    /// The source this path serves.
    pub fn source(&self) -> &'static str {
        self.source
    }

    /// Starts observing a request for `model`: latency, in flight, and (when spans are
    /// exported and the trace settings sample it) its span, a child of the caller's
    /// `traceparent`.
    pub fn observe(
        &self,
        headers: &dyn Headers,
        model: &str,
        span: impl FnOnce() -> SpanInfo,
    ) -> Observation<'_> {
        // Traced as the trace settings of the addressed model say (Triton's trace extension).
        let span = crate::telemetry::settings::sample(model)
            .then(|| {
                let SpanInfo {
                    name,
                    kind,
                    attributes,
                } = span();
                crate::telemetry::request_span(
                    name,
                    kind,
                    |h| headers.header(h).map(Cow::into_owned),
                    attributes,
                )
            })
            .flatten();
        Observation {
            pipeline: self,
            start: std::time::Instant::now(),
            _in_flight: self.metrics.start(),
            span,
            finished: false,
        }
    }

    /// Serves one request, observed: [`Pipeline::observe`], [`Pipeline::serve`], finish.
    pub async fn handle<B: Into<Body>>(
        &self,
        request: Request<'_>,
        span: impl FnOnce() -> SpanInfo,
        body: impl Future<Output = Result<B>>,
    ) -> Result<Response> {
        let model = request.model.unwrap_or(&self.graph.name);
        let observation = self.observe(request.headers, model, span);
        let result = self.serve(request, observation.trace(), body).await;
        observation.finish(&result);
        result
    }

    /// Serves one request (not observed: see [`Pipeline::handle`]). The body is read only
    /// once the request is admitted.
    pub async fn serve<B: Into<Body>>(
        &self,
        request: Request<'_>,
        trace: Option<opentelemetry::Context>,
        body: impl Future<Output = Result<B>>,
    ) -> Result<Response> {
        let graph = &*self.graph;
        if let Some(model) = request.model {
            graph.find_model(model, request.version)?;
        }
        let _permit = graph.admit()?;
        let headers = request.headers;
        let (body, json_len, codec, decoded) = match body.await?.into() {
            Body::Decoded(decoded) => (bytes::Bytes::new(), None, None, decoded),
            Body::Bytes(body) => {
                let (json_len, codec, decoded) = self.decode(&request, &body)?;
                (body, json_len, Some(codec), decoded)
            }
        };
        graph.check_request(&decoded.event)?;
        let mut event = decoded.event;
        let mut top_level: Option<serde_json::Map<String, serde_json::Value>> = None;
        // A step reads every header: those it names are among them.
        let all = graph.headers.iter().any(|h| h == ALL_HEADERS);
        if all {
            copy_all(headers, &mut event.headers);
        }
        for name in &graph.headers {
            if let Some(field) = name.strip_prefix(BODY_FIELD) {
                if event.parameters.contains_key(field) {
                    continue;
                }
                let top = top_level.get_or_insert_with(|| {
                    let json = &body[..json_len.unwrap_or(body.len()).min(body.len())];
                    serde_json::from_slice(json).unwrap_or_default()
                });
                if let Some(v) = top.remove(field) {
                    event.parameters.insert(field.to_owned(), v);
                }
            } else if all {
                continue;
            } else if let Some(v) = headers.header(name) {
                event.headers.push((name.clone(), v.into_owned()));
            }
        }
        if event.id.is_empty() {
            event.id = protocol::new_id();
        }
        // The route: a route the transport addressed; else (it addressed the graph, or
        // nothing) the body's `model`, else the `x-model-name` header; else the graph's own
        // policy decides.
        let target = match request.model {
            Some(m) if m != graph.name => Some(Target {
                model: m.to_owned(),
                version: request.version.map(str::to_owned),
            }),
            _ => {
                let named = event.target.take().or_else(|| {
                    headers.header(MODEL_HEADER).map(|model| Target {
                        model: model.into_owned(),
                        version: headers.header(VERSION_HEADER).map(Cow::into_owned),
                    })
                });
                named.map(|t| split_version(graph, t)).transpose()?
            }
        };
        // The addressed model as its metadata names it (an unversioned model addressed as
        // version `1` is the unversioned one).
        let info = match &target {
            Some(t) => graph.model(&t.model, t.version.as_deref()),
            None => graph.model(&graph.name, None),
        };
        // (Only what differs is copied: the addressed name is most often the metadata's.)
        let target = target.map(|mut t| {
            if let Some(info) = info {
                if t.model != info.name {
                    t.model.clone_from(&info.name);
                }
                if t.version != info.version {
                    t.version.clone_from(&info.version);
                }
            }
            t
        });
        let (model, version) = match info {
            Some(info) => (info.name.as_str(), info.version.as_deref()),
            None => (graph.name.as_str(), None),
        };
        // An input the addressed model does not take would be ignored: refused instead
        // (a queue step's message carries the flow's own tensors, so not when resuming).
        if let Some(info) = info
            && request.resume_after.is_none()
        {
            check_inputs(info, &event)?;
        }
        let explain = request.explain;
        let rows = crate::stats::rows(&event);
        event.target = target.filter(|t| t.model != graph.name);
        event.explain = explain;
        event.trace = trace;
        event.resume_after = request.resume_after;
        let id = event.id.clone();

        let deadline = match triton_timeout(&event)? {
            Some(t) => Some(request.deadline.map_or(t, |d| d.min(t))),
            None => request.deadline,
        };
        let run = async {
            match self.tracker.as_ref().filter(|t| t.sampled()) {
                None => graph.run(event).await,
                Some(tracker) => {
                    let ctx = TrackContext {
                        graph,
                        model,
                        version,
                        explain,
                    };
                    run_tracked(tracker, ctx, event).await
                }
            }
        };
        let mut done = match deadline {
            None => run.await?,
            Some(limit) => tokio::time::timeout(limit, run).await.map_err(|_| {
                Error::timeout(format!(
                    "the caller's deadline of {} ms passed (grpc-timeout, or the `timeout` parameter)",
                    limit.as_millis()
                ))
            })??,
        };
        if explain && !done.explained && done.get(ATTRIBUTIONS).is_none() {
            return Err(Error::bad_request(format!(
                "`{model}` cannot explain: no model on the route it took gives `{ATTRIBUTIONS}` \
                 (explain works on tabular ONNX models and on Python classes with `explain()`)"
            )));
        }
        let binary_output = match request.encoding {
            Encoding::AsRequested => decoded.binary_output,
            Encoding::Json | Encoding::Tensors => false,
        };
        let mut outputs = decoded.outputs;
        if outputs.iter().any(|o| o.classification.is_some()) {
            for o in outputs.iter_mut() {
                let (Some(n), Some(t)) = (
                    o.classification.take(),
                    done.tensors.iter_mut().find(|t| t.name == o.name),
                ) else {
                    continue; // not classified, or unknown: the encoder says so
                };
                let labels = graph.labels(model, version, &o.name);
                *t = protocol::classify(t, n, labels.as_deref())?;
            }
        }
        if request.encoding == Encoding::Json {
            for o in &mut outputs {
                o.binary = Some(false);
            }
        }
        if request.encoding == Encoding::Tensors {
            if done.tensors.is_empty() && done.answered_body().is_some() {
                return Err(Error::bad_request(format!(
                    "`{model}` answered with a body (its last step works on bodies, as MLRun's flow steps and Seldon's components do), which this protocol cannot carry: it answers tensors; call it over HTTP"
                )));
            }
            let (outputs, parameters) = protocol::take_outputs(&mut done, &outputs)?;
            return Ok(Response {
                id,
                body: Vec::new(),
                json_len: None,
                tensors: Some(Tensors {
                    model: model.to_owned(),
                    version: version.map(str::to_owned),
                    outputs,
                    parameters,
                    output_parameters: std::mem::take(&mut done.output_parameters),
                }),
                accepted: done.stopped,
                model_time: done.model_time,
                rows,
            });
        }
        let codec = codec.unwrap_or(&protocol::codec::Oip);
        let encoded = codec.encode(
            &done,
            &protocol::codec::Answering {
                model,
                version,
                outputs: &outputs,
                binary: binary_output,
            },
        )?;
        Ok(Response {
            id,
            body: encoded.body,
            json_len: encoded.json_len,
            tensors: None,
            accepted: done.stopped,
            model_time: done.model_time,
            rows,
        })
    }

    /// Decodes a body with the request's codec (or the one its shape calls for); also says
    /// where the JSON ends, and the codec the answer is encoded with.
    fn decode<'c>(
        &self,
        request: &Request<'c>,
        body: &[u8],
    ) -> Result<(
        Option<usize>,
        &'c dyn protocol::Codec,
        protocol::InferRequest,
    )> {
        let graph = &*self.graph;
        let json_len = match request.headers.header(HEADER_CONTENT_LENGTH) {
            None => None,
            Some(v) => Some(v.trim().parse::<usize>().map_err(|_| {
                Error::bad_request("Inference-Header-Content-Length must be a byte count")
            })?),
        };
        let codec = request
            .codec
            .unwrap_or_else(|| protocol::sniff(body, json_len));
        let find = |name: &str, version: Option<&str>| graph.find_model(name, version);
        let at = protocol::codec::Decoding {
            json_len,
            model: request.model,
            version: request.version,
            graph: &graph.name,
            find: &find,
        };
        match codec.decode(body, &at) {
            Ok(decoded) => Ok((json_len, codec, decoded)),
            // Not a body of the protocol the URL speaks, but JSON for a graph or model that
            // takes bodies as they come (MLRun's flow steps and model servers).
            Err(e) if request.codec.is_none() && json_len.is_none() => {
                let content =
                    protocol::codec::Content::of(request.headers.header("content-type").as_deref());
                match protocol::codec::any_body(body, content, &at) {
                    Some(decoded) => Ok((json_len, &protocol::codec::MlrunRows, decoded?)),
                    None => Err(e),
                }
            }
            Err(e) => Err(e),
        }
    }
}

/// What a tracking event says about where a request went.
struct TrackContext<'a> {
    graph: &'a crate::graph::Graph,
    model: &'a str,
    version: Option<&'a str>,
    explain: bool,
}

/// Runs a sampled request, recording step times, and emits its tracking event (failures
/// too). What it adds to the request's path is copying the request's and the response's
/// tensors; the writer task makes the JSON.
async fn run_tracked(
    tracker: &Tracker,
    ctx: TrackContext<'_>,
    mut event: crate::Event,
) -> crate::Result<crate::Event> {
    let when = std::time::SystemTime::now();
    let start = std::time::Instant::now();
    let id = event.id.clone();
    let request = event.tensors.clone();
    event.step_microsec = Some(Vec::new());
    let (result, decisions) =
        crate::tracking::scope_deciding(tracker.clone(), ctx.graph.run(event)).await;
    let microsec = start.elapsed().as_micros() as u64;
    let (route, resp, error, steps) = match &result {
        Ok(done) => (
            done.route().map(str::to_owned),
            Some(done.tensors.clone()),
            None,
            done.step_microsec.clone().unwrap_or_default(),
        ),
        Err(e) => (e.route.clone(), None, Some(e.to_string()), Vec::new()),
    };
    tracker.emit(crate::tracking::TrackingEvent {
        id,
        when,
        graph: ctx.graph.name.clone(),
        model: ctx.model.to_owned(),
        version: ctx.version.map(str::to_owned),
        route,
        explain: ctx.explain,
        request,
        resp,
        error,
        microsec,
        step_microsec: steps,
        shadow: false,
        decisions,
        reward: None,
        label: None,
    });
    result
}

/// Triton's `timeout` request parameter: the request's own deadline, in microseconds
/// (`tritonclient`'s `infer(..., timeout=)`); 0 is none.
fn triton_timeout(event: &crate::event::Event) -> Result<Option<Duration>> {
    match event.parameters.get("timeout") {
        None | Some(serde_json::Value::Null) => Ok(None),
        Some(v) => match v.as_u64() {
            Some(0) => Ok(None),
            Some(us) => Ok(Some(Duration::from_micros(us))),
            None => Err(Error::bad_request(format!(
                "parameter `timeout` is the request's deadline in microseconds, not {v}"
            ))),
        },
    }
}

/// The model a body's `model` (or the `x-model-name` header) names, checked: `name:version`
/// (Triton's and MLRun's spelling) selects a version as `/versions/{v}` does, unless a model
/// has that whole name.
fn split_version(graph: &Graph, t: Target) -> Result<Target> {
    if graph.model(&t.model, t.version.as_deref()).is_some() {
        return Ok(t);
    }
    if t.version.is_none()
        && let Some((name, version)) = t.model.rsplit_once(':')
        && graph.model(name, None).is_some()
    {
        graph.find_model(name, Some(version))?;
        return Ok(Target {
            model: name.to_owned(),
            version: Some(version.to_owned()),
        });
    }
    graph.find_model(&t.model, t.version.as_deref())?;
    Ok(t)
}

/// A 400 for a request input the model does not take, when its metadata lists its inputs.
fn check_inputs(info: &crate::step::ModelInfo, event: &crate::event::Event) -> Result<()> {
    let model = &info.name;
    if info.inputs.is_empty() {
        return Ok(());
    }
    match event
        .tensors
        .iter()
        .find(|t| !info.inputs.iter().any(|i| i.name == t.name))
    {
        None => Ok(()),
        Some(extra) => {
            let takes: Vec<String> = info
                .inputs
                .iter()
                .map(|i| format!("`{}` {} {:?}", i.name, i.datatype, i.shape))
                .collect();
            Err(Error::bad_request(format!(
                "input `{}` is not one `{model}` takes; it takes: {}",
                extra.name,
                takes.join(", ")
            )))
        }
    }
}

/// Whether an error is the server's momentary state rather than the request's fault (a
/// source that can wait, such as Kafka, tries again).
pub fn is_transient(e: &Error) -> bool {
    matches!(e.kind, ErrorKind::Overloaded | ErrorKind::Unavailable)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_header_is_copied_within_the_bounds() {
        let kafka: Vec<(String, Vec<u8>)> = (0..150)
            .map(|i| (format!("X-H{i}"), i.to_string().into_bytes()))
            .collect();
        let mut out = Vec::new();
        copy_all(&kafka, &mut out);
        assert_eq!(out.len(), ALL_HEADERS_MAX);
        assert_eq!(out[0], ("x-h0".to_owned(), "0".to_owned()));
        let big = vec![b'v'; 20 * 1024];
        let kafka: Vec<(String, Vec<u8>)> =
            (0..5).map(|i| (format!("b{i}"), big.clone())).collect();
        let mut out = Vec::new();
        copy_all(&kafka, &mut out);
        assert_eq!(out.len(), 3, "64 KiB in all");
        copy_all(&NoHeaders, &mut out);
        assert_eq!(out.len(), 3);
    }
}
