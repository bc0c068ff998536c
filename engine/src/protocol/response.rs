//! Encoding an inference response, in JSON or with binary outputs.

use serde::Serialize;
use serde_json::{Map, Value};

use super::RequestedOutput;
use super::binary::encode_binary;
use super::json::JsonData;
use crate::error::{Error, Result};
use crate::event::Event;
use crate::tensor::Tensor;

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
    pub(super) parameters: Option<BinarySize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) data: Option<JsonData<'a>>,
}

#[derive(Serialize)]
pub(super) struct BinarySize {
    pub(super) binary_data_size: usize,
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
    let picked: Vec<(&Tensor, bool)> = if requested.is_empty() {
        event.tensors.iter().map(|t| (t, binary_output)).collect()
    } else {
        requested
            .iter()
            .map(|r| {
                let t = event.get(&r.name).ok_or_else(|| {
                    let names: Vec<&str> = event.tensors.iter().map(|t| t.name.as_str()).collect();
                    Error::bad_request(format!(
                        "unknown output `{}`; the outputs are: {}",
                        r.name,
                        names.join(", ")
                    ))
                })?;
                Ok((t, r.binary.unwrap_or(binary_output)))
            })
            .collect::<Result<_>>()?
    };
    let (outputs, binary) = tensors_out(picked);
    let mut parameters = event.notes.clone();
    if let Some(route) = event.route() {
        parameters.insert("route".into(), Value::String(route.to_owned()));
    }
    let response = ResponseJson {
        model_name: model,
        model_version: version,
        id: &event.id,
        parameters,
        outputs,
    };
    finish(&response, binary)
}

/// [`encode_response`] with every output as JSON data, whatever the request asked (for
/// transports without the binary extension: Kafka, the CLI).
pub fn encode_json_response(
    event: &Event,
    model: &str,
    version: Option<&str>,
    requested: Vec<RequestedOutput>,
) -> Result<Vec<u8>> {
    let requested: Vec<RequestedOutput> = requested
        .into_iter()
        .map(|o| RequestedOutput {
            binary: Some(false),
            ..o
        })
        .collect();
    encode_response(event, model, version, &requested, false).map(|e| e.body)
}

/// Tensors as OIP JSON entries (inputs and outputs share the shape), with the bytes of those
/// sent as binary, in order.
pub(super) fn tensors_out<'a>(tensors: Vec<(&'a Tensor, bool)>) -> (Vec<OutputOut<'a>>, Vec<u8>) {
    let mut binary = Vec::new();
    let mut out = Vec::with_capacity(tensors.len());
    for (t, as_binary) in tensors {
        let (parameters, data) = if as_binary {
            let before = binary.len();
            encode_binary(&t.data, &mut binary);
            let size = binary.len() - before;
            (
                Some(BinarySize {
                    binary_data_size: size,
                }),
                None,
            )
        } else {
            (None, Some(JsonData(&t.data)))
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

/// The JSON, then the binary part if any.
pub(super) fn finish<T: Serialize>(json: &T, binary: Vec<u8>) -> Result<Encoded> {
    let mut body =
        serde_json::to_vec(json).map_err(|e| Error::internal(format!("encoding JSON: {e}")))?;
    if binary.is_empty() {
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
