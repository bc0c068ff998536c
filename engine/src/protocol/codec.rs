//! How a wire protocol's inference bodies meet the one request path: a [`Codec`] decodes a
//! body into the request the graph runs and encodes the answer back. The request path
//! ([`crate::request::Pipeline`]) uses the codec its source names ([`crate::request::Request`]'s
//! `codec`), or, for the OIP's routes, Kafka and the CLI, the one the body's shape says
//! ([`sniff`]: the OIP's JSON and binary bodies, or MLRun's rows, which MLRun's clients send
//! to the OIP's `/infer`). A REST protocol with bodies of its own (Seldon's `data.ndarray`,
//! KServe v1's `instances`) is one more codec.

use super::request::{InferRequest, RequestedOutput, decode_raw, decode_request};
use super::response::{Encoded, encode_response};
use crate::error::Result;
use crate::event::{BodyProtocol, Event, JsonBody};
use crate::step::ModelInfo;

/// Finds a model by name and version as the graph serves it, or a 404 that says what there is.
pub type FindModel<'a> = &'a dyn Fn(&str, Option<&str>) -> Result<&'a ModelInfo>;

/// What a codec decodes a body with.
pub struct Decoding<'a> {
    /// Where the JSON ends and binary data begins, when the transport says
    /// (`Inference-Header-Content-Length`).
    pub json_len: Option<usize>,
    /// The model the transport addressed (the URL's), else `None`; a URL naming the graph
    /// (`graph`) names no model.
    pub model: Option<&'a str>,
    pub version: Option<&'a str>,
    pub graph: &'a str,
    pub find: FindModel<'a>,
}

/// What the answer is encoded for.
pub struct Answering<'a> {
    /// The model as its metadata names it.
    pub model: &'a str,
    pub version: Option<&'a str>,
    /// The outputs the request asked for (all when empty), and which as binary data.
    pub outputs: &'a [RequestedOutput],
    /// `binary_data_output`: unlisted outputs as binary data.
    pub binary: bool,
}

/// A wire protocol's inference bodies.
pub trait Codec: Send + Sync {
    /// Its name, for messages.
    fn name(&self) -> &'static str;
    /// Decodes a request body.
    fn decode(&self, body: &[u8], at: &Decoding<'_>) -> Result<InferRequest>;
    /// Encodes a finished request's answer.
    fn encode(&self, done: &Event, answer: &Answering<'_>) -> Result<Encoded>;
}

/// The Open Inference Protocol's bodies: JSON, JSON then binary data (the binary tensor
/// extension), or Triton's raw binary request (`Inference-Header-Content-Length: 0`: the
/// addressed model's one input, raw).
pub struct Oip;

impl Codec for Oip {
    fn name(&self) -> &'static str {
        "oip"
    }

    fn decode(&self, body: &[u8], at: &Decoding<'_>) -> Result<InferRequest> {
        if at.json_len == Some(0) {
            let name = at.model.unwrap_or(at.graph);
            let info = (at.find)(name, at.version)?;
            return decode_raw(body, info);
        }
        decode_request(body, at.json_len)
    }

    /// A body a step answered with (an MLRun flow's last step's) is the answer as it is, as
    /// MLRun answers; else the outputs as OIP tensors.
    fn encode(&self, done: &Event, answer: &Answering<'_>) -> Result<Encoded> {
        if let Some(body) = done.answered_body().filter(|_| done.tensors.is_empty()) {
            return Ok(Encoded {
                body: serde_json::to_vec(body).expect("JSON"),
                json_len: None,
            });
        }
        encode_response(
            done,
            answer.model,
            answer.version,
            answer.outputs,
            answer.binary,
        )
    }
}

/// The OIP's bodies for an answer that may come in pieces (`/infer_stream`, and MLServer's
/// clients' `InferenceRequest`s posted to `/generate` and `/generate_stream`): decoded as
/// [`Oip`] decodes JSON, the event handed `chunks`, where a streamed answer's pieces go;
/// answered as JSON (the pieces and the answer go as server-sent events).
#[derive(Default)]
pub struct OipStream {
    pub chunks: Option<crate::event::Chunks>,
}

impl Codec for OipStream {
    fn name(&self) -> &'static str {
        "oip"
    }

    fn decode(&self, body: &[u8], _at: &Decoding<'_>) -> Result<InferRequest> {
        let mut request = decode_request(body, None)?;
        request.event.chunks = self.chunks.clone();
        Ok(request)
    }

    fn encode(&self, done: &Event, answer: &Answering<'_>) -> Result<Encoded> {
        Ok(Encoded {
            body: super::response::encode_json_response(
                done,
                answer.model,
                answer.version,
                answer.outputs.to_vec(),
            )?,
            json_len: None,
        })
    }
}

/// MLRun's rows (`{"inputs": [[...], ...]}`), answered in MLRun's shape
/// ([`super::mlrun`]).
pub struct MlrunRows;

impl Codec for MlrunRows {
    fn name(&self) -> &'static str {
        "mlrun"
    }

    /// The rows become the addressed model's one input tensor when they can (ONNX models
    /// need it), and the body is kept as it came: Python classes written for MLRun get it as
    /// MLRun hands it (`inputs` the JSON's list, dicts of features as they are). A model that
    /// cannot take rows as a tensor (no declared inputs, several, or rows that are not a
    /// tensor) gets the body alone when it is a Python model, else a 400 saying why.
    fn decode(&self, body: &[u8], at: &Decoding<'_>) -> Result<InferRequest> {
        use super::mlrun;
        let rows = mlrun::parse(body)?;
        let info = match (at.model, mlrun::named_model(&rows)) {
            (Some(m), _) if m != at.graph => (at.find)(m, at.version)?,
            (_, (Some(m), version)) => (at.find)(m, version)?,
            (m, (None, _)) => (at.find)(m.unwrap_or(at.graph), at.version)?,
        };
        let decoded = mlrun::to_oip(&rows, info).and_then(|oip| decode_request(&oip, None));
        let value = serde_json::Value::Object(rows);
        match decoded {
            Ok(mut request) => {
                request.event.body = Some(JsonBody::request(value, BodyProtocol::Mlrun));
                Ok(request)
            }
            Err(_) if takes_bodies(info) => mlrun::body_request(value),
            Err(e) => Err(e),
        }
    }

    /// As MLRun's router answers with the body of the model it routed to: `model_name` (and
    /// `model_version`) are the route's when a router took one. A body a step answered with
    /// (an MLRun class's response) is sent as it is.
    fn encode(&self, done: &Event, answer: &Answering<'_>) -> Result<Encoded> {
        if let Some(body) = done.answered_body().filter(|_| done.tensors.is_empty()) {
            return Ok(Encoded {
                body: serde_json::to_vec(body).expect("JSON"),
                json_len: None,
            });
        }
        let (model, version) = match done.route() {
            Some(route) => match route.split_once(':') {
                Some((name, version)) => (name, Some(version)),
                None => (route, None),
            },
            None => (answer.model, answer.version),
        };
        Ok(Encoded {
            body: super::mlrun::encode(done, model, version)?,
            json_len: None,
        })
    }
}

/// What a request's content type says of its body, as MLRun's server reads bodies.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Content {
    /// `application/json` (or `json`): JSON, or the request is refused.
    Json,
    /// `text/*`, `application/text`: the text itself.
    Text,
    /// None or another: JSON when it parses, else the text.
    Other,
}

impl Content {
    /// From a `Content-Type` header's value.
    pub fn of(content_type: Option<&str>) -> Content {
        let t = content_type.unwrap_or_default().trim().to_ascii_lowercase();
        let t = t.split(';').next().unwrap_or_default().trim();
        match t {
            "application/json" | "json" => Content::Json,
            t if t.starts_with("text/") || t == "application/text" => Content::Text,
            _ => Content::Other,
        }
    }
}

/// A body for what the request addresses, when that takes bodies as they come (a flow of
/// MLRun's steps, a Python class): the request is the body alone, read as MLRun's server
/// reads bodies ([`Content`]). `None` when the model takes tensors only, or the body is not
/// the JSON its content type says (the caller's error stands), or not UTF-8 text.
pub fn any_body(body: &[u8], content: Content, at: &Decoding<'_>) -> Option<Result<InferRequest>> {
    let info = (at.find)(at.model.unwrap_or(at.graph), at.version).ok()?;
    if !takes_bodies(info) {
        return None;
    }
    let text = || {
        Some(serde_json::Value::String(
            std::str::from_utf8(body).ok()?.to_owned(),
        ))
    };
    let value = match (content, serde_json::from_slice(body)) {
        (Content::Text, _) => text()?,
        (_, Ok(value)) => value,
        (Content::Json, Err(_)) => return None,
        (Content::Other, Err(_)) => text()?,
    };
    // A SeldonMessage is Seldon's (its components take it), whatever the route.
    let seldon = ["data", "strData", "jsonData", "binData"]
        .iter()
        .any(|k| value.get(*k).is_some())
        && value.get("inputs").is_none();
    let mut request = super::mlrun::body_request(value);
    if seldon
        && let Ok(r) = &mut request
        && let Some(body) = r.event.body.as_mut()
    {
        body.protocol = BodyProtocol::Seldon;
    }
    Some(request)
}

/// Whether what `info` names may be handed a request's body without tensors: a Python model,
/// or a step or flow that does not say what it takes (its steps say, when they run).
pub(super) fn takes_bodies(info: &ModelInfo) -> bool {
    info.platform == crate::step::Platform::Python || info.inputs.is_empty()
}

/// The codec a body's shape calls for, where the protocol is the OIP's: MLRun's rows when
/// it is rows (and not binary), else the OIP's.
pub fn sniff(body: &[u8], json_len: Option<usize>) -> &'static dyn Codec {
    if json_len.is_none() && super::mlrun::is_rows(body) {
        &MlrunRows
    } else {
        &Oip
    }
}
