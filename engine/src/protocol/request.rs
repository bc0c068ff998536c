//! Decoding an inference request: the JSON header, its inputs (JSON `data` or binary extension
//! bytes) and the outputs it asks for.

use std::borrow::Cow;

use serde::Deserialize;
use serde_json::value::RawValue;
use serde_json::{Map, Value};

use super::binary::{decode_binary, from_base64};
use super::json::decode_json_data;
use crate::error::{Error, Result};
use crate::event::{Event, Target};
use crate::tensor::{DataType, Tensor, TensorData, checked_element_count};

/// An output the client asked for, and whether it wants it as raw bytes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RequestedOutput {
    pub name: String,
    /// `parameters.binary_data` on the output; `None` when not given.
    pub binary: Option<bool>,
    /// `parameters.classification`: answer the top N classes instead of the scores.
    pub classification: Option<usize>,
}

/// A decoded inference request.
#[derive(Debug)]
pub struct InferRequest {
    pub event: Event,
    /// Outputs asked for; empty means all.
    pub outputs: Vec<RequestedOutput>,
    /// `parameters.binary_data_output`: every output as raw bytes unless it says otherwise.
    pub binary_output: bool,
}

#[derive(Deserialize)]
pub(super) struct RequestJson<'a> {
    #[serde(default)]
    pub(super) id: Option<String>,
    #[serde(default)]
    pub(super) parameters: Option<Map<String, Value>>,
    #[serde(borrow)]
    pub(super) inputs: Vec<InputJson<'a>>,
    #[serde(default)]
    pub(super) outputs: Option<Vec<OutputJson>>,
    /// MLRun-style body routing: the model (route) to run, when the URL does not name it.
    #[serde(default)]
    pub(super) model: Option<String>,
    #[serde(default)]
    pub(super) version: Option<String>,
}

/// `name` and `datatype` are borrowed from the body when they have no escapes: two
/// allocations fewer per input (issue 27).
#[derive(Deserialize)]
pub(super) struct InputJson<'a> {
    #[serde(borrow)]
    pub(super) name: Cow<'a, str>,
    pub(super) shape: Vec<i64>,
    #[serde(borrow)]
    pub(super) datatype: Cow<'a, str>,
    #[serde(default)]
    pub(super) parameters: Option<Map<String, Value>>,
    #[serde(borrow, default)]
    pub(super) data: Option<&'a RawValue>,
}

#[derive(Deserialize)]
pub(super) struct OutputJson {
    pub(super) name: String,
    #[serde(default)]
    pub(super) parameters: Option<Map<String, Value>>,
}

/// Decodes a request body. `json_len` is the `Inference-Header-Content-Length` header: the
/// JSON is that many bytes and raw tensor data follows, in input order, for inputs whose
/// `parameters.binary_data_size` says so.
pub fn decode_request(body: &[u8], json_len: Option<usize>) -> Result<InferRequest> {
    let (json, mut binary) = match json_len {
        Some(n) if n > body.len() => {
            return Err(Error::bad_request(format!(
                "Inference-Header-Content-Length is {n} but the body has only {} bytes",
                body.len()
            )));
        }
        Some(n) => body.split_at(n),
        None => (body, &[][..]),
    };
    let req: RequestJson<'_> = serde_json::from_slice(json).map_err(|e| malformed(json, &e))?;
    if req.inputs.is_empty() {
        return Err(Error::bad_request("the request has no `inputs`"));
    }
    let mut tensors = Vec::with_capacity(req.inputs.len());
    let mut input_parameters = Map::new();
    for input in &req.inputs {
        let tensor = decode_input(input, &mut binary, false)
            .map_err(|e| Error::bad_request(format!("input `{}`: {}", input.name, e.message)))?;
        if let Some(own) = input_parameters_of(input.parameters.as_ref()) {
            input_parameters.insert(input.name.clone().into_owned(), own);
        }
        if tensors.iter().any(|t: &Tensor| t.name == tensor.name) {
            return Err(Error::bad_request(format!(
                "input `{}` is given twice",
                tensor.name
            )));
        }
        tensors.push(tensor);
    }
    if !binary.is_empty() {
        return Err(Error::bad_request(format!(
            "{} bytes of binary data follow the JSON but no input claims them",
            binary.len()
        )));
    }
    let parameters = req.parameters.unwrap_or_default();
    let binary_output = flag(&parameters, "binary_data_output")?.unwrap_or(false);
    let requested_outputs = req.outputs.as_ref().map(|outputs| {
        outputs
            .iter()
            .map(|o| {
                let mut out = Map::new();
                out.insert("name".into(), Value::String(o.name.clone()));
                if let Some(p) = &o.parameters {
                    out.insert("parameters".into(), Value::Object(p.clone()));
                }
                Value::Object(out)
            })
            .collect()
    });
    let outputs = req
        .outputs
        .unwrap_or_default()
        .into_iter()
        .map(|o| {
            let binary = match &o.parameters {
                Some(p) => flag(p, "binary_data")?,
                None => None,
            };
            let classification = classification(
                &o.name,
                o.parameters.as_ref().and_then(|p| p.get("classification")),
            )?;
            Ok(RequestedOutput {
                name: o.name,
                binary,
                classification,
            })
        })
        .collect::<Result<Vec<_>>>()?;
    for (i, o) in outputs.iter().enumerate() {
        if outputs[..i].iter().any(|p| p.name == o.name) {
            return Err(Error::bad_request(format!(
                "output `{}` is requested twice in `outputs`",
                o.name
            )));
        }
    }
    let target = req.model.map(|model| Target {
        model,
        version: req.version,
    });
    Ok(InferRequest {
        event: Event::from(crate::event::EventData {
            id: req.id.unwrap_or_default(),
            tensors,
            parameters,
            target,
            input_parameters,
            requested_outputs,
            ..Default::default()
        }),
        outputs,
        binary_output,
    })
}

/// MLServer's examples send a text as the one element of a BYTES input whose 1-D shape is
/// not 1 (its length: `"shape": [len(text)], "data": [text]`, or any: `"shape": [11], "data":
/// "hello world 😁"`), which MLServer takes as it is: such an input is that one element, of
/// shape `[1]`. `None` for anything else.
fn one_text(datatype: DataType, raw: &RawValue, shape: &[usize]) -> Option<TensorData> {
    let [n] = shape else { return None };
    if datatype != DataType::Bytes || *n == 1 {
        return None;
    }
    let text = serde_json::from_str::<[String; 1]>(raw.get())
        .map(|[text]| text)
        .or_else(|_| serde_json::from_str::<String>(raw.get()))
        .ok()?;
    Some(TensorData::Bytes(vec![text.into_bytes()]))
}

/// An input's parameters as a class reads them: but `binary_data_size` (the size of the
/// data the decoder took); `None` when that leaves none.
fn input_parameters_of(parameters: Option<&Map<String, Value>>) -> Option<Value> {
    let own: Map<String, Value> = parameters?
        .iter()
        .filter(|(k, _)| *k != "binary_data_size")
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    (!own.is_empty()).then_some(Value::Object(own))
}

/// Triton's raw binary request (`Inference-Header-Content-Length: 0`): no JSON, the whole
/// body is the raw data of the model's one input. Its shape is the input's, its variable
/// dimension (one at most) deduced from the byte count; for a model with a batch dimension
/// (`max_batch_size` > 0) it is one row: 1, then the rest of the input's shape, as Triton
/// shapes it from the model's configured `dims`. BYTES is one element, the whole body. As
/// Triton does, every output is answered as binary data.
pub fn decode_raw(body: &[u8], model: &crate::step::ModelInfo) -> Result<InferRequest> {
    let inputs = &model.inputs;
    let [input] = &inputs[..] else {
        let names: Vec<&str> = inputs.iter().map(|i| i.name.as_str()).collect();
        return Err(Error::bad_request(format!(
            "a raw binary request (Inference-Header-Content-Length: 0) needs a model with one \
             input; `{}` takes {}: {}; send a JSON header",
            model.name,
            inputs.len(),
            names.join(", ")
        )));
    };
    // One row of a batching model: the batch dimension is 1, the rest as configured.
    let batch = model.max_batch_size > 0 && !input.shape.is_empty();
    let dims = if batch {
        &input.shape[1..]
    } else {
        &input.shape[..]
    };
    let fixed: usize = dims
        .iter()
        .filter(|&&d| d >= 0)
        .map(|&d| d as usize)
        .product();
    let variable = dims.iter().filter(|&&d| d < 0).count();
    let count = match input.datatype.element_size() {
        None => 1,
        Some(size) if body.len().is_multiple_of(size) => body.len() / size,
        Some(size) => {
            return Err(Error::bad_request(format!(
                "the raw body of {} bytes is not a whole number of {} elements ({size} bytes each) \
                 for input `{}`",
                body.len(),
                input.datatype,
                input.name
            )));
        }
    };
    let unfit = || {
        let why = if variable <= 1 {
            ""
        } else if !batch && input.shape.first().is_some_and(|&d| d < 0) {
            " (more than one variable dimension: send a JSON header with the shape, or, when \
             the first dimension is the batch, declare the model's `max_batch_size` and a raw \
             request is one row)"
        } else {
            " (more than one variable dimension: send a JSON header with the shape)"
        };
        Error::bad_request(format!(
            "a raw body of {count} {} elements does not fit input `{}` of shape {:?}{}{why}",
            input.datatype,
            input.name,
            input.shape,
            if batch { " as one row" } else { "" },
        ))
    };
    if variable > 1
        || fixed == 0
        || !count.is_multiple_of(fixed)
        || (variable == 0 && count != fixed)
    {
        return Err(unfit());
    }
    let shape: Vec<usize> = batch
        .then_some(1)
        .into_iter()
        .chain(
            dims.iter()
                .map(|&d| if d < 0 { count / fixed } else { d as usize }),
        )
        .collect();
    let data = match input.datatype.element_size() {
        None => TensorData::Bytes(vec![body.to_vec()]),
        Some(_) => decode_binary(input.datatype, body, count)?,
    };
    let tensor =
        Tensor::new(input.name.clone(), shape, data).map_err(|e| Error::bad_request(e.message))?;
    Ok(InferRequest {
        event: Event::from(crate::event::EventData {
            tensors: vec![tensor],
            ..Default::default()
        }),
        outputs: Vec::new(),
        binary_output: true,
    })
}

/// A request that is not JSON, saying so; `NaN` and `Infinity` (which Python's `json` writes)
/// get a word on why and what to send instead.
fn malformed(json: &[u8], e: &serde_json::Error) -> Error {
    let mut message = format!("malformed inference request: {e}");
    if e.classify() == serde_json::error::Category::Syntax && e.line() > 0 {
        let line_start: usize = json
            .split(|&b| b == b'\n')
            .take(e.line() - 1)
            .map(|l| l.len() + 1)
            .sum();
        let at = (line_start + e.column().saturating_sub(1)).min(json.len());
        let near = &json[at.saturating_sub(1)..(at + 9).min(json.len())];
        let has = |w: &[u8]| near.windows(w.len()).any(|x| x == w);
        if has(b"NaN") || has(b"Infinity") {
            message.push_str(
                ": JSON has no NaN or Infinity numbers; send non-finite values with the binary \
                 extension (`binary_data_size`), or leave them out",
            );
        }
    }
    Error::bad_request(message)
}

pub(super) fn flag(params: &Map<String, Value>, key: &str) -> Result<Option<bool>> {
    match params.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Bool(b)) => Ok(Some(*b)),
        Some(other) => Err(Error::bad_request(format!(
            "parameter `{key}` must be true or false, not {other}"
        ))),
    }
}

/// An output's `classification` parameter (Triton's classification extension): the count
/// of top classes to answer, or none.
pub fn classification(output: &str, value: Option<&Value>) -> Result<Option<usize>> {
    match value {
        None | Some(Value::Null) => Ok(None),
        Some(v) => match v.as_u64() {
            Some(n) if n > 0 => Ok(Some(n as usize)),
            _ => Err(Error::bad_request(format!(
                "output `{output}`: `classification` must be a count of classes (1 or more), not {v}"
            ))),
        },
    }
}

/// A tensor's datatype and shape as a request gives them, checked: a known datatype, no
/// negative dimension, an element count that fits; with that count. (JSON and gRPC alike.)
pub fn tensor_header(datatype: &str, shape: &[i64]) -> Result<(DataType, Vec<usize>, usize)> {
    let parsed = DataType::parse(datatype).ok_or_else(|| {
        let all: Vec<&str> = DataType::ALL.iter().map(|d| d.as_str()).collect();
        Error::bad_request(format!(
            "unknown datatype `{datatype}`, expected one of {}",
            all.join(", ")
        ))
    })?;
    let mut dims = Vec::with_capacity(shape.len());
    for &d in shape {
        if d < 0 {
            return Err(Error::bad_request(format!(
                "shape {shape:?} has a negative dimension"
            )));
        }
        dims.push(d as usize);
    }
    let count = checked_element_count(&dims)
        .ok_or_else(|| Error::bad_request(format!("shape {shape:?} is too large")))?;
    Ok((parsed, dims, count))
}

/// One tensor of a request (or, `response`, of a response: its `null`s are NaN).
pub(super) fn decode_input(
    input: &InputJson<'_>,
    binary: &mut &[u8],
    response: bool,
) -> Result<Tensor> {
    let (datatype, mut shape, count) = tensor_header(&input.datatype, &input.shape)?;
    let binary_size = match input
        .parameters
        .as_ref()
        .and_then(|p| p.get("binary_data_size"))
    {
        None | Some(Value::Null) => None,
        Some(v) => Some(v.as_u64().ok_or_else(|| {
            Error::bad_request(format!("`binary_data_size` must be a byte count, not {v}"))
        })? as usize),
    };
    let data = match (binary_size, input.data) {
        (Some(_), Some(_)) => {
            return Err(Error::bad_request(
                "has both `data` and `binary_data_size`; send one",
            ));
        }
        (Some(size), None) => {
            if size > binary.len() {
                return Err(Error::bad_request(format!(
                    "`binary_data_size` is {size} but only {} bytes of binary data remain",
                    binary.len()
                )));
            }
            let (bytes, rest) = binary.split_at(size);
            *binary = rest;
            decode_binary(datatype, bytes, count)?
        }
        (None, Some(raw)) => {
            let data = match decode_json_data(datatype, raw, &shape, count, response) {
                Ok(data) if data.len() == count => data,
                other => match one_text(datatype, raw, &shape) {
                    Some(text) => {
                        shape = vec![1];
                        text
                    }
                    None => other?,
                },
            };
            match input
                .parameters
                .as_ref()
                .and_then(|p| p.get("content_type"))
            {
                Some(Value::String(ct)) if ct == "base64" => from_base64(data)?,
                _ => data,
            }
        }
        (None, None) => {
            return Err(Error::bad_request("has no `data` (nor `binary_data_size`)"));
        }
    };
    Tensor::new(&*input.name, shape, data).map_err(|e| Error::bad_request(e.message))
}
