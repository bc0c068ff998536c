//! The event: what flows between steps.

use serde_json::{Map, Value};

use crate::error::{Error, Result};
use crate::tensor::Tensor;

/// The tensor models add on `/explain`: per-feature attributions, FP32 `[rows, features]`.
pub const ATTRIBUTIONS: &str = "attributions";

/// The model (and version) a request addresses, when it names one other than the graph.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct Target {
    pub model: String,
    pub version: Option<String>,
}

/// One request's data on its way through a graph: a box around [`EventData`] (its fields
/// read through `Deref`), so that passing it from step to step moves a pointer, not the
/// whole struct. Moving events is most of the engine's own cost per step.
#[derive(Clone, Debug, Default)]
pub struct Event(Box<EventData>);

impl std::ops::Deref for Event {
    type Target = EventData;
    fn deref(&self) -> &EventData {
        &self.0
    }
}

impl std::ops::DerefMut for Event {
    fn deref_mut(&mut self) -> &mut EventData {
        &mut self.0
    }
}

impl Event {
    /// The data, out of its box.
    pub fn into_data(self) -> EventData {
        *self.0
    }
}

impl From<EventData> for Event {
    fn from(data: EventData) -> Event {
        Event(Box::new(data))
    }
}

/// What an [`Event`] carries.
#[derive(Clone, Debug, Default)]
pub struct EventData {
    /// The request id, echoed in the response.
    pub id: String,
    pub tensors: Vec<Tensor>,
    /// The request's parameters, for steps to read.
    pub parameters: Map<String, Value>,
    /// Parameters steps add to the response (an ensemble's `left_out`, ...).
    pub notes: Map<String, Value>,
    /// The request came over gRPC (a KServe class is handed it as KServe's gRPC server hands
    /// it: `from_grpc`, BYTES as bytes).
    pub grpc: bool,
    /// Parameters of single inputs, by input name, as the request gave them (but
    /// `binary_data_size`, spent decoding them), for a class that reads them (a KServe
    /// class's `InferInput.parameters`, an MLServer class's `RequestInput.parameters`). Never
    /// sent back.
    pub input_parameters: Map<String, Value>,
    /// Parameters of single outputs, by output name (a KServe class's `InferOutput`s', an
    /// MLServer class's `ResponseOutput`s'), which the response gives those outputs.
    pub output_parameters: Map<String, Value>,
    /// The route the request asked for (URL, body `model`/`version`, or headers).
    pub target: Option<Target>,
    /// Routing decisions taken so far, `(router, route)`, outermost first.
    pub routes: Vec<(String, String)>,
    /// The same decisions as each router's index of its routes (`-1` every route, `-2` none:
    /// a Seldon ROUTER's), as Seldon's `meta.routing` says them.
    pub routing: Vec<(String, i64)>,
    /// The operation: `false` predict (`/infer`), `true` explain (`/explain`): models that can
    /// add per-feature `attributions` to their outputs.
    pub explain: bool,
    /// Time in each step, in microseconds; recorded only when `Some` (tracked requests).
    pub step_microsec: Option<Vec<(String, u64)>>,
    /// The request headers some step reads (HTTP or Kafka), lower-case names.
    pub headers: Vec<(String, String)>,
    /// Set by a step that hands the event on elsewhere (a queue step): the flow stops here
    /// and the event, as it is, is the answer.
    pub stopped: bool,
    /// Run only the steps after this one (a flow resumed from a queue step's topic).
    pub resume_after: Option<String>,
    /// Time model steps spent waiting for and running on their models (ONNX Runtime, or a
    /// remote server), along the slowest branch: what the engine-overhead metric subtracts.
    pub model_time: std::time::Duration,
    /// The request's trace context, when the request is traced (see `telemetry`).
    pub trace: Option<opentelemetry::Context>,
    /// The body as the client's protocol sent it, for steps written against bodies rather
    /// than tensors (MLRun's model servers, Seldon's components): set by the codecs of
    /// protocols whose bodies are not tensors, beside the tensors they decode when they can.
    pub body: Option<JsonBody>,
    /// A step answered the `/explain` itself (a Python class's `explain()`), rather than
    /// adding `attributions`.
    pub explained: bool,
    /// Where a model that streams its answer (a Python `predict` that yields) sends each
    /// piece as it comes, when the caller takes a stream (`/generate_stream`): bounded, so a
    /// slow reader slows the model down.
    pub chunks: Option<Chunks>,
    /// The outputs an OIP request named, as it sent them (`{"name", "parameters"}`), for a
    /// class that reads them (MLServer's `payload.outputs`); `None` when it named none.
    pub requested_outputs: Option<Vec<Value>>,
}

/// An event's body ([`EventData::body`]): the request's, until a step that works on bodies
/// answers with its own.
#[derive(Clone, Debug, PartialEq)]
pub struct JsonBody {
    pub value: Value,
    /// A step answered it: the codec sends it as it is, instead of encoding tensors.
    pub answered: bool,
    /// Whose body it is: a class takes a body of its own API's protocol (an MLRun class
    /// MLRun's, a Seldon component Seldon's messages, a KServe class KServe's v1 bodies), and
    /// the event's tensors otherwise (an MLRun class also takes a KServe body's instances as
    /// MLRun's rows: [`crate::protocol::kserve::mlrun_body`]).
    pub protocol: BodyProtocol,
}

/// The protocol a [`JsonBody`] is written in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BodyProtocol {
    /// MLRun's bodies (`{"inputs": ...}`, or any JSON or text an MLRun flow takes).
    Mlrun,
    /// Seldon's `SeldonMessage`.
    Seldon,
    /// KServe's v1 bodies (`{"instances": ...}`, or any JSON a KServe class reads), as the
    /// client sent them.
    Kserve,
}

impl BodyProtocol {
    /// As a Python worker names it.
    pub fn as_str(self) -> &'static str {
        match self {
            BodyProtocol::Mlrun => "mlrun",
            BodyProtocol::Seldon => "seldon",
            BodyProtocol::Kserve => "kserve",
        }
    }
}

impl JsonBody {
    /// A request's body.
    pub fn request(value: Value, protocol: BodyProtocol) -> JsonBody {
        JsonBody {
            value,
            answered: false,
            protocol,
        }
    }
}

impl Event {
    pub fn new(id: impl Into<String>, tensors: Vec<Tensor>) -> Event {
        Event::from(EventData {
            id: id.into(),
            tensors,
            ..EventData::default()
        })
    }
}

impl EventData {
    pub fn get(&self, name: &str) -> Option<&Tensor> {
        self.tensors.iter().find(|t| t.name == name)
    }

    /// The tensor, or a 422 naming what the event does have.
    pub fn require(&self, name: &str) -> Result<&Tensor> {
        self.get(name).ok_or_else(|| self.missing(name))
    }

    pub fn require_mut(&mut self, name: &str) -> Result<&mut Tensor> {
        let missing = self.missing(name);
        self.tensors
            .iter_mut()
            .find(|t| t.name == name)
            .ok_or(missing)
    }

    /// Removes and returns the tensor, or a 422 naming what the event does have.
    pub fn take(&mut self, name: &str) -> Result<Tensor> {
        match self.tensors.iter().position(|t| t.name == name) {
            Some(i) => Ok(self.tensors.remove(i)),
            None => Err(self.missing(name)),
        }
    }

    /// Adds a tensor, replacing one with the same name.
    pub fn put(&mut self, tensor: Tensor) {
        match self.tensors.iter_mut().find(|t| t.name == tensor.name) {
            Some(t) => *t = tensor,
            None => self.tensors.push(tensor),
        }
    }

    /// A request header's value (names compare case-insensitively).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// The body a step answered with, if one did.
    pub fn answered_body(&self) -> Option<&Value> {
        self.body.as_ref().filter(|b| b.answered).map(|b| &b.value)
    }

    /// The last routing decision, if any router ran.
    pub fn route(&self) -> Option<&str> {
        self.routes.last().map(|(_, route)| route.as_str())
    }

    /// The tensors, as `name DTYPE [shape]`, for error messages ("none" when empty).
    pub fn describe_tensors(&self) -> String {
        if self.tensors.is_empty() {
            return "none".to_owned();
        }
        let have: Vec<String> = self.tensors.iter().map(|t| t.meta().to_string()).collect();
        have.join(", ")
    }

    fn missing(&self, name: &str) -> Error {
        Error::unprocessable(format!(
            "no tensor `{name}`; the request has: {}",
            self.describe_tensors()
        ))
    }
}

/// The sink a streamed answer's pieces go to ([`EventData::chunks`]): each piece is the
/// model's outputs as it yielded them.
pub type Chunks = tokio::sync::mpsc::Sender<Vec<crate::tensor::Tensor>>;
