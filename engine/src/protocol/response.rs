//! Encoding an inference response, in JSON or with binary outputs.

use serde::Serialize;
use serde_json::{Map, Value};

use super::RequestedOutput;
use super::binary::encode_binary;
use super::json::JsonData;
use crate::error::{Error, Result};
use crate::event::Event;
use crate::tensor::{Tensor, TensorData};

#[derive(Serialize)]
pub(super) struct ResponseJson<'a> {
    pub(super) model_name: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) model_version: Option<&'a str>,
    pub(super) id: &'a str,
    #[serde(skip_serializing_if = "Map::is_empty")]
    pub(super) parameters: Map<String, Value>,
    pub(super) outputs: Vec<OutputOut<'a>>,
}

#[derive(Serialize)]
pub(super) struct OutputOut<'a> {
    pub(super) name: &'a str,
    pub(super) datatype: &'static str,
    pub(super) shape: &'a [usize],
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) parameters: Option<OutputParameters<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) data: Option<JsonData<'a>>,
}

/// An output's `parameters`: what its encoding needs said (`binary_data_size`, `content_type:
/// base64`), after what the step said of it (the event's `output_parameters`; the encoding's
/// own keys win).
pub(super) struct OutputParameters<'a> {
    pub(super) binary_data_size: Option<usize>,
    pub(super) content_type: Option<&'static str>,
    pub(super) own: Option<&'a Map<String, Value>>,
}

impl Serialize for OutputParameters<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let mut map = s.serialize_map(None)?;
        for (k, v) in self.own.into_iter().flatten() {
            let encoding_says =
                k == "binary_data_size" || (k == "content_type" && self.content_type.is_some());
            if !encoding_says {
                map.serialize_entry(k, v)?;
            }
        }
        if let Some(size) = self.binary_data_size {
            map.serialize_entry("binary_data_size", &size)?;
        }
        if let Some(ct) = self.content_type {
            map.serialize_entry("content_type", ct)?;
        }
        map.end()
    }
}

/// An encoded body; `json_len` is set when binary data follows the JSON (send it as
/// `Inference-Header-Content-Length`).
#[derive(Debug)]
pub struct Encoded {
    pub body: Vec<u8>,
    pub json_len: Option<usize>,
}

/// Encodes a finished event as an inference response, honouring the requested outputs (their
/// order, and which are binary).
pub fn encode_response(
    event: &Event,
    model: &str,
    version: Option<&str>,
    requested: &[RequestedOutput],
    binary_output: bool,
) -> Result<Encoded> {
    // As Triton's server does: a listed output is binary only when its own `binary_data`
    // says so; `binary_data_output` is for the unlisted (all of them).
    let picked = pick(event, requested, |r| {
        r.map_or(binary_output, |r| r.binary.unwrap_or(false))
    })?;
    encode(event, model, version, picked, Fallback::Binary)
}

/// [`encode_response`] with every output as JSON data, whatever the request asked (for
/// transports without the binary extension: Kafka, the CLI). BYTES that are not UTF-8 go as
/// base64 with `"parameters": {"content_type": "base64"}` (what requests may send too).
pub fn encode_json_response(
    event: &Event,
    model: &str,
    version: Option<&str>,
    requested: Vec<RequestedOutput>,
) -> Result<Vec<u8>> {
    let picked = pick(event, &requested, |_| false)?;
    encode(event, model, version, picked, Fallback::Base64).map(|e| e.body)
}

/// The outputs to send as tensors (the requested ones in order, else all), taken out of the
/// event, with the response's `parameters` (for transports with their own encoding: gRPC;
/// each output's own are left in the event's `output_parameters`).
pub fn take_outputs(
    event: &mut Event,
    requested: &[RequestedOutput],
) -> Result<(Vec<Tensor>, Map<String, Value>)> {
    let parameters = parameters(event);
    if requested.is_empty() {
        return Ok((std::mem::take(&mut event.tensors), parameters));
    }
    if let Some(r) = requested.iter().find(|r| event.get(&r.name).is_none()) {
        return Err(unknown_output(event, &r.name));
    }
    // Names are unique (the decoder refuses a name asked for twice).
    let outputs = requested
        .iter()
        .map(|r| event.take(&r.name))
        .collect::<Result<Vec<_>>>()?;
    Ok((outputs, parameters))
}

/// A response's `parameters`: the event's notes and the route it took.
fn parameters(event: &Event) -> Map<String, Value> {
    let mut parameters = event.notes.clone();
    if let Some(route) = event.route() {
        parameters.insert("route".into(), Value::String(route.to_owned()));
    }
    parameters
}

/// The outputs to send (the requested ones in order, else all), each with whether it goes
/// binary (`binary` is given the request's entry for it, `None` when none were listed).
fn pick<'a>(
    event: &'a Event,
    requested: &[RequestedOutput],
    binary: impl Fn(Option<&RequestedOutput>) -> bool,
) -> Result<Vec<(&'a Tensor, bool)>> {
    if requested.is_empty() {
        return Ok(event.tensors.iter().map(|t| (t, binary(None))).collect());
    }
    requested
        .iter()
        .map(|r| {
            let t = event
                .get(&r.name)
                .ok_or_else(|| unknown_output(event, &r.name))?;
            Ok((t, binary(Some(r))))
        })
        .collect()
}

/// The response of `picked` outputs, with the event's notes and route as `parameters`.
fn encode(
    event: &Event,
    model: &str,
    version: Option<&str>,
    picked: Vec<(&Tensor, bool)>,
    fallback: Fallback,
) -> Result<Encoded> {
    let (outputs, binary) = tensors_out(picked, fallback, &event.output_parameters);
    let parameters = parameters(event);
    let response = ResponseJson {
        model_name: model,
        model_version: version,
        id: &event.id,
        parameters,
        outputs,
    };
    let has_binary = binary.is_some();
    finish(&response, binary.unwrap_or_default(), has_binary)
}

fn unknown_output(event: &Event, name: &str) -> Error {
    let names: Vec<&str> = event.tensors.iter().map(|t| t.name.as_str()).collect();
    Error::bad_request(format!(
        "unknown output `{name}`; the outputs are: {}",
        names.join(", ")
    ))
}

/// What a BYTES output asked for as JSON becomes when an element is not UTF-8 (JSON strings
/// are Unicode; replacing the bytes with U+FFFD would be a silent wrong answer).
#[derive(Clone, Copy, PartialEq, Eq)]
pub(super) enum Fallback {
    /// Sent with the binary extension instead (HTTP: clients read either).
    Binary,
    /// Sent as base64 strings, marked `content_type: base64` (transports without binary).
    Base64,
}

/// Whether BYTES data can travel as JSON strings unchanged.
pub(super) fn is_utf8(data: &TensorData) -> bool {
    match data {
        TensorData::Bytes(v) => v.iter().all(|b| std::str::from_utf8(b).is_ok()),
        _ => true,
    }
}

/// Tensors as OIP JSON entries (inputs and outputs share the shape), with the bytes of those
/// sent as binary, in order; each with its own parameters from `own` (by name: an event's
/// `output_parameters`), if any.
pub(super) fn tensors_out<'a>(
    tensors: Vec<(&'a Tensor, bool)>,
    fallback: Fallback,
    own: &'a Map<String, Value>,
) -> (Vec<OutputOut<'a>>, Option<Vec<u8>>) {
    let mut binary: Option<Vec<u8>> = None;
    let mut out = Vec::with_capacity(tensors.len());
    for (t, as_binary) in tensors {
        let own = (!own.is_empty())
            .then(|| own.get(&t.name).and_then(Value::as_object))
            .flatten();
        let utf8 = as_binary || is_utf8(&t.data);
        let (parameters, data) = if as_binary || (!utf8 && fallback == Fallback::Binary) {
            let binary = binary.get_or_insert_with(Vec::new);
            let before = binary.len();
            encode_binary(&t.data, binary);
            let size = binary.len() - before;
            (
                Some(OutputParameters {
                    binary_data_size: Some(size),
                    content_type: None,
                    own,
                }),
                None,
            )
        } else if !utf8 {
            (
                Some(OutputParameters {
                    binary_data_size: None,
                    content_type: Some("base64"),
                    own,
                }),
                Some(JsonData::Base64(&t.data)),
            )
        } else {
            let parameters = own.map(|own| OutputParameters {
                binary_data_size: None,
                content_type: None,
                own: Some(own),
            });
            (parameters, Some(JsonData::Plain(&t.data)))
        };
        out.push(OutputOut {
            name: &t.name,
            datatype: t.datatype().as_str(),
            shape: &t.shape,
            parameters,
            data,
        });
    }
    (out, binary)
}

/// The JSON, then the binary part if any (even an empty one: an output of no elements sent
/// binary still needs `Inference-Header-Content-Length`).
pub(super) fn finish<T: Serialize>(json: &T, binary: Vec<u8>, has_binary: bool) -> Result<Encoded> {
    let mut body =
        serde_json::to_vec(json).map_err(|e| Error::internal(format!("encoding JSON: {e}")))?;
    if !has_binary {
        return Ok(Encoded {
            body,
            json_len: None,
        });
    }
    let json_len = body.len();
    body.extend_from_slice(&binary);
    Ok(Encoded {
        body,
        json_len: Some(json_len),
    })
}
