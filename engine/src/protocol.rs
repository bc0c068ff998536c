//! The Open Inference Protocol (V2) wire format: inference requests and responses in JSON,
//! with `data` flat or nested, and the binary tensor extension (a JSON header of
//! `Inference-Header-Content-Length` bytes followed by raw tensor bytes).
//!
//! Transport-independent: the HTTP source uses it, and so will the Kafka source.

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};

use half::f16;
use serde::de::{self, DeserializeSeed, Deserializer, SeqAccess, Visitor};
use serde::ser::SerializeSeq;
use serde::{Deserialize, Serialize, Serializer};
use serde_json::value::RawValue;
use serde_json::{Map, Value};

use crate::error::{Error, Result};
use crate::event::{Event, Target};
use crate::tensor::{DataType, Tensor, TensorData, checked_element_count};

/// An output the client asked for, and whether it wants it as raw bytes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RequestedOutput {
    pub name: String,
    /// `parameters.binary_data` on the output; `None` when not given.
    pub binary: Option<bool>,
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
struct RequestJson<'a> {
    #[serde(default)]
    id: Option<String>,
    #[serde(default)]
    parameters: Option<Map<String, Value>>,
    #[serde(borrow)]
    inputs: Vec<InputJson<'a>>,
    #[serde(default)]
    outputs: Option<Vec<OutputJson>>,
    /// MLRun-style body routing: the model (route) to run, when the URL does not name it.
    #[serde(default)]
    model: Option<String>,
    #[serde(default)]
    version: Option<String>,
}

#[derive(Deserialize)]
struct InputJson<'a> {
    name: String,
    shape: Vec<i64>,
    datatype: String,
    #[serde(default)]
    parameters: Option<Map<String, Value>>,
    #[serde(borrow, default)]
    data: Option<&'a RawValue>,
}

#[derive(Deserialize)]
struct OutputJson {
    name: String,
    #[serde(default)]
    parameters: Option<Map<String, Value>>,
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
    let req: RequestJson<'_> = serde_json::from_slice(json)
        .map_err(|e| Error::bad_request(format!("malformed inference request: {e}")))?;
    if req.inputs.is_empty() {
        return Err(Error::bad_request("the request has no `inputs`"));
    }
    let mut tensors = Vec::with_capacity(req.inputs.len());
    for input in &req.inputs {
        let tensor = decode_input(input, &mut binary)
            .map_err(|e| Error::bad_request(format!("input `{}`: {}", input.name, e.message)))?;
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
    let outputs = req
        .outputs
        .unwrap_or_default()
        .into_iter()
        .map(|o| {
            let binary = match &o.parameters {
                Some(p) => flag(p, "binary_data")?,
                None => None,
            };
            Ok(RequestedOutput {
                name: o.name,
                binary,
            })
        })
        .collect::<Result<Vec<_>>>()?;
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
            ..Default::default()
        }),
        outputs,
        binary_output,
    })
}

fn flag(params: &Map<String, Value>, key: &str) -> Result<Option<bool>> {
    match params.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Bool(b)) => Ok(Some(*b)),
        Some(other) => Err(Error::bad_request(format!(
            "parameter `{key}` must be true or false, not {other}"
        ))),
    }
}

fn decode_input(input: &InputJson<'_>, binary: &mut &[u8]) -> Result<Tensor> {
    let datatype = DataType::parse(&input.datatype).ok_or_else(|| {
        let all: Vec<&str> = DataType::ALL.iter().map(|d| d.as_str()).collect();
        Error::bad_request(format!(
            "unknown datatype `{}`, expected one of {}",
            input.datatype,
            all.join(", ")
        ))
    })?;
    let mut shape = Vec::with_capacity(input.shape.len());
    for &d in &input.shape {
        if d < 0 {
            return Err(Error::bad_request(format!(
                "shape {:?} has a negative dimension",
                input.shape
            )));
        }
        shape.push(d as usize);
    }
    let count = checked_element_count(&shape)
        .ok_or_else(|| Error::bad_request(format!("shape {:?} is too large", input.shape)))?;
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
            let data = decode_json_data(datatype, raw, count)?;
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
    Tensor::new(input.name.clone(), shape, data).map_err(|e| Error::bad_request(e.message))
}

/// A JSON scalar convertible to a tensor element; `None` when it does not fit.
trait Element: Sized {
    const WHAT: &'static str;
    fn from_i64(_: i64) -> Option<Self> {
        None
    }
    fn from_u64(_: u64) -> Option<Self> {
        None
    }
    fn from_f64(_: f64) -> Option<Self> {
        None
    }
    fn from_bool(_: bool) -> Option<Self> {
        None
    }
    fn from_str(_: &str) -> Option<Self> {
        None
    }
    /// JSON `null`: NaN for floats (JSON has no NaN or infinity: responses write non-finite
    /// floats as `null`, so requests and responses read it back).
    fn from_null() -> Option<Self> {
        None
    }
}

macro_rules! int_element {
    ($($t:ty => $what:literal),*) => {$(
        impl Element for $t {
            const WHAT: &'static str = $what;
            fn from_i64(v: i64) -> Option<Self> { <$t>::try_from(v).ok() }
            fn from_u64(v: u64) -> Option<Self> { <$t>::try_from(v).ok() }
        }
    )*};
}
int_element!(u8 => "UINT8 integers", u16 => "UINT16 integers", u32 => "UINT32 integers",
    u64 => "UINT64 integers", i8 => "INT8 integers", i16 => "INT16 integers",
    i32 => "INT32 integers", i64 => "INT64 integers");

macro_rules! float_element {
    ($($t:ty => $what:literal, $conv:expr, $nan:expr),*) => {$(
        impl Element for $t {
            const WHAT: &'static str = $what;
            fn from_i64(v: i64) -> Option<Self> { <Self as Element>::from_f64(v as f64) }
            fn from_u64(v: u64) -> Option<Self> { <Self as Element>::from_f64(v as f64) }
            /// A number the type cannot hold (it would become infinite) does not fit.
            fn from_f64(v: f64) -> Option<Self> {
                let x: $t = $conv(v);
                x.is_finite().then_some(x)
            }
            fn from_null() -> Option<Self> { Some($nan) }
        }
    )*};
}
float_element!(f32 => "FP32 numbers", |v: f64| v as f32, f32::NAN,
    f64 => "FP64 numbers", |v: f64| v, f64::NAN,
    f16 => "FP16 numbers", f16::from_f64, f16::NAN);

impl Element for bool {
    const WHAT: &'static str = "BOOL values (true/false)";
    fn from_bool(v: bool) -> Option<Self> {
        Some(v)
    }
}

impl Element for Vec<u8> {
    const WHAT: &'static str = "BYTES strings";
    fn from_str(v: &str) -> Option<Self> {
        Some(v.as_bytes().to_vec())
    }
}

/// Deserializes a scalar or an arbitrarily nested array of scalars into a flat `Vec<T>`.
struct Flatten<'a, T>(&'a mut Vec<T>);

impl<'de, T: Element> DeserializeSeed<'de> for Flatten<'_, T> {
    type Value = ();
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de, T: Element> Visitor<'de> for Flatten<'_, T> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        write!(f, "{} (flat or nested arrays)", T::WHAT)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        while seq.next_element_seed(Flatten(&mut *self.0))?.is_some() {}
        Ok(())
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<(), E> {
        self.push(T::from_i64(v), &v)
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<(), E> {
        self.push(T::from_u64(v), &v)
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> Result<(), E> {
        self.push(T::from_f64(v), &v)
    }

    fn visit_bool<E: de::Error>(self, v: bool) -> Result<(), E> {
        self.push(T::from_bool(v), &v)
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<(), E> {
        self.push(T::from_str(v), &format!("{v:?}"))
    }

    fn visit_unit<E: de::Error>(self) -> Result<(), E> {
        self.push(T::from_null(), &"null")
    }
}

impl<T: Element> Flatten<'_, T> {
    fn push<E: de::Error>(self, v: Option<T>, shown: &dyn fmt::Display) -> Result<(), E> {
        match v {
            Some(v) => {
                self.0.push(v);
                Ok(())
            }
            None => Err(E::custom(format_args!("{shown} is not one of {}", T::WHAT))),
        }
    }
}

fn flatten<T: Element>(raw: &RawValue, count: usize) -> Result<Vec<T>> {
    // The shape comes from the request: reserve no more than the JSON could hold.
    let mut out = Vec::with_capacity(count.min(raw.get().len() / 2 + 1));
    let mut de = serde_json::Deserializer::from_str(raw.get());
    Flatten(&mut out)
        .deserialize(&mut de)
        .map_err(|e| Error::bad_request(format!("`data`: {e}")))?;
    Ok(out)
}

fn decode_json_data(datatype: DataType, raw: &RawValue, count: usize) -> Result<TensorData> {
    Ok(match datatype {
        DataType::Bool => TensorData::Bool(flatten(raw, count)?),
        DataType::Uint8 => TensorData::Uint8(flatten(raw, count)?),
        DataType::Uint16 => TensorData::Uint16(flatten(raw, count)?),
        DataType::Uint32 => TensorData::Uint32(flatten(raw, count)?),
        DataType::Uint64 => TensorData::Uint64(flatten(raw, count)?),
        DataType::Int8 => TensorData::Int8(flatten(raw, count)?),
        DataType::Int16 => TensorData::Int16(flatten(raw, count)?),
        DataType::Int32 => TensorData::Int32(flatten(raw, count)?),
        DataType::Int64 => TensorData::Int64(flatten(raw, count)?),
        DataType::Fp16 => TensorData::Fp16(flatten(raw, count)?),
        DataType::Fp32 => TensorData::Fp32(flatten(raw, count)?),
        DataType::Fp64 => TensorData::Fp64(flatten(raw, count)?),
        DataType::Bytes => TensorData::Bytes(flatten(raw, count)?),
    })
}

fn decode_binary(datatype: DataType, bytes: &[u8], count: usize) -> Result<TensorData> {
    let Some(size) = datatype.element_size() else {
        return decode_binary_bytes(bytes, count).map(TensorData::Bytes);
    };
    if count.checked_mul(size) != Some(bytes.len()) {
        return Err(Error::bad_request(format!(
            "`binary_data_size` is {} bytes but {count} {datatype} elements take {}",
            bytes.len(),
            count.saturating_mul(size)
        )));
    }
    macro_rules! le {
        ($t:ty, $n:literal) => {
            bytes
                .chunks_exact($n)
                .map(|c| <$t>::from_le_bytes(c.try_into().expect("chunk size")))
                .collect()
        };
    }
    Ok(match datatype {
        DataType::Bool => TensorData::Bool(bytes.iter().map(|&b| b != 0).collect()),
        DataType::Uint8 => TensorData::Uint8(bytes.to_vec()),
        DataType::Int8 => TensorData::Int8(bytes.iter().map(|&b| b as i8).collect()),
        DataType::Uint16 => TensorData::Uint16(le!(u16, 2)),
        DataType::Int16 => TensorData::Int16(le!(i16, 2)),
        DataType::Fp16 => TensorData::Fp16(le!(f16, 2)),
        DataType::Uint32 => TensorData::Uint32(le!(u32, 4)),
        DataType::Int32 => TensorData::Int32(le!(i32, 4)),
        DataType::Fp32 => TensorData::Fp32(le!(f32, 4)),
        DataType::Uint64 => TensorData::Uint64(le!(u64, 8)),
        DataType::Int64 => TensorData::Int64(le!(i64, 8)),
        DataType::Fp64 => TensorData::Fp64(le!(f64, 8)),
        DataType::Bytes => unreachable!("BYTES has no element size"),
    })
}

/// BYTES elements sent as base64 strings (`"parameters": {"content_type": "base64"}`, as
/// MLServer's codec does), for binary data such as images in JSON.
fn from_base64(data: TensorData) -> Result<TensorData> {
    use base64::Engine;
    let TensorData::Bytes(items) = data else {
        return Err(Error::bad_request(
            "`content_type: base64` applies to BYTES inputs only",
        ));
    };
    let engine = base64::engine::general_purpose::STANDARD;
    items
        .into_iter()
        .enumerate()
        .map(|(i, s)| {
            engine
                .decode(&s)
                .map_err(|e| Error::bad_request(format!("element {i} is not valid base64: {e}")))
        })
        .collect::<Result<Vec<_>>>()
        .map(TensorData::Bytes)
}

/// BYTES in the binary extension: each element is a 4-byte little-endian length and the bytes.
fn decode_binary_bytes(mut bytes: &[u8], count: usize) -> Result<Vec<Vec<u8>>> {
    let mut out = Vec::with_capacity(count.min(bytes.len() / 4));
    while !bytes.is_empty() {
        if bytes.len() < 4 {
            return Err(Error::bad_request(
                "BYTES binary data ends inside a length prefix",
            ));
        }
        let (len, rest) = bytes.split_at(4);
        let len = u32::from_le_bytes(len.try_into().expect("4 bytes")) as usize;
        if len > rest.len() {
            return Err(Error::bad_request(format!(
                "BYTES element {} claims {len} bytes but {} remain",
                out.len(),
                rest.len()
            )));
        }
        let (item, rest) = rest.split_at(len);
        out.push(item.to_vec());
        bytes = rest;
    }
    Ok(out)
}

fn encode_binary(data: &TensorData, out: &mut Vec<u8>) {
    macro_rules! le {
        ($v:expr) => {
            for x in $v {
                out.extend_from_slice(&x.to_le_bytes());
            }
        };
    }
    match data {
        TensorData::Bool(v) => out.extend(v.iter().map(|&b| b as u8)),
        TensorData::Uint8(v) => out.extend_from_slice(v),
        TensorData::Int8(v) => le!(v),
        TensorData::Uint16(v) => le!(v),
        TensorData::Int16(v) => le!(v),
        TensorData::Fp16(v) => le!(v),
        TensorData::Uint32(v) => le!(v),
        TensorData::Int32(v) => le!(v),
        TensorData::Fp32(v) => le!(v),
        TensorData::Uint64(v) => le!(v),
        TensorData::Int64(v) => le!(v),
        TensorData::Fp64(v) => le!(v),
        TensorData::Bytes(v) => {
            for item in v {
                out.extend_from_slice(&(item.len() as u32).to_le_bytes());
                out.extend_from_slice(item);
            }
        }
    }
}

/// Serializes tensor data as a flat JSON array (FP16 as numbers, BYTES as strings).
struct JsonData<'a>(&'a TensorData);

impl Serialize for JsonData<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self.0 {
            TensorData::Fp16(v) => {
                let mut seq = s.serialize_seq(Some(v.len()))?;
                for x in v {
                    seq.serialize_element(&x.to_f32())?;
                }
                seq.end()
            }
            TensorData::Bytes(v) => {
                let mut seq = s.serialize_seq(Some(v.len()))?;
                for x in v {
                    seq.serialize_element(&String::from_utf8_lossy(x))?;
                }
                seq.end()
            }
            other => crate::with_numeric_data!(other, v => v.serialize(s),
            _ => match other {
                TensorData::Bool(v) => v.serialize(s),
                _ => unreachable!("FP16 and BYTES are handled above"),
            }),
        }
    }
}

#[derive(Serialize)]
struct ResponseJson<'a> {
    model_name: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    model_version: Option<&'a str>,
    id: &'a str,
    #[serde(skip_serializing_if = "Map::is_empty")]
    parameters: Map<String, Value>,
    outputs: Vec<OutputOut<'a>>,
}

#[derive(Serialize)]
struct OutputOut<'a> {
    name: &'a str,
    datatype: &'static str,
    shape: &'a [usize],
    #[serde(skip_serializing_if = "Option::is_none")]
    parameters: Option<BinarySize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    data: Option<JsonData<'a>>,
}

#[derive(Serialize)]
struct BinarySize {
    binary_data_size: usize,
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
fn tensors_out<'a>(tensors: Vec<(&'a Tensor, bool)>) -> (Vec<OutputOut<'a>>, Vec<u8>) {
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
fn finish<T: Serialize>(json: &T, binary: Vec<u8>) -> Result<Encoded> {
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

#[derive(Serialize)]
struct RequestOut<'a> {
    id: &'a str,
    inputs: Vec<OutputOut<'a>>,
    parameters: RequestParams,
}

#[derive(Serialize)]
struct RequestParams {
    binary_data_output: bool,
}

/// The client side, for calling another OIP server: `tensors` as an inference request, their
/// data as JSON or (with `binary`) in the binary extension, asking for binary outputs too.
pub fn encode_request(id: &str, tensors: &[Tensor], binary: bool) -> Result<Encoded> {
    let (inputs, bytes) = tensors_out(tensors.iter().map(|t| (t, binary)).collect());
    finish(
        &RequestOut {
            id,
            inputs,
            parameters: RequestParams {
                binary_data_output: binary,
            },
        },
        bytes,
    )
}

#[derive(Deserialize)]
struct ResponseIn<'a> {
    #[serde(borrow, default)]
    outputs: Vec<InputJson<'a>>,
}

/// The client side: the tensors of an inference response (JSON, or JSON and binary data when
/// `json_len` is the `Inference-Header-Content-Length`).
pub fn decode_response(body: &[u8], json_len: Option<usize>) -> Result<Vec<Tensor>> {
    let (json, mut binary) = match json_len {
        Some(n) if n <= body.len() => body.split_at(n),
        Some(n) => {
            return Err(Error::internal(format!(
                "response header length {n} exceeds its {} bytes",
                body.len()
            )));
        }
        None => (body, &[][..]),
    };
    let resp: ResponseIn<'_> = serde_json::from_slice(json)
        .map_err(|e| Error::internal(format!("malformed inference response: {e}")))?;
    resp.outputs
        .iter()
        .map(|o| {
            decode_input(o, &mut binary).map_err(|e| {
                Error::internal(format!("response output `{}`: {}", o.name, e.message))
            })
        })
        .collect()
}

/// Serializes tensors as OIP JSON (`[{name, datatype, shape, data}]`) for records such as
/// tracking events; tensors with more than `max_elements` elements are listed without `data`.
pub struct TensorsJson<'a> {
    pub tensors: &'a [Tensor],
    pub max_elements: usize,
}

impl Serialize for TensorsJson<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut seq = s.serialize_seq(Some(self.tensors.len()))?;
        for t in self.tensors {
            seq.serialize_element(&OutputOut {
                name: &t.name,
                datatype: t.datatype().as_str(),
                shape: &t.shape,
                parameters: None,
                data: (t.data.len() <= self.max_elements).then_some(JsonData(&t.data)),
            })?;
        }
        seq.end()
    }
}

/// A fresh request id for requests that come without one: unique within the process, and
/// unlikely to repeat across processes (seeded from the clock and the process id).
pub fn new_id() -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    static SEED: std::sync::OnceLock<u64> = std::sync::OnceLock::new();
    let seed = *SEED.get_or_init(|| {
        let t = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(0);
        t ^ ((std::process::id() as u64) << 32)
    });
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    format!("{:016x}-{n:08x}", seed)
}

/// The `oip_decode` fuzz target (and its regression tests): decodes any body as a request
/// and, when it decodes, checks that the response encoding of its tensors decodes back to the
/// same tensors. The first byte chooses: bit 0, the next two bytes are a binary header length
/// (little-endian); bit 1, binary outputs.
#[doc(hidden)]
pub fn fuzz_decode(data: &[u8]) {
    let Some((&flags, rest)) = data.split_first() else {
        return;
    };
    let (json_len, body) = if flags & 1 == 1 && rest.len() >= 2 {
        (
            Some(u16::from_le_bytes([rest[0], rest[1]]) as usize),
            &rest[2..],
        )
    } else {
        (None, rest)
    };
    let Ok(request) = decode_request(body, json_len) else {
        return;
    };
    let binary = flags & 2 == 2;
    let encode = |tensors: Vec<Tensor>| {
        let event = Event::new("fuzz", tensors);
        encode_response(&event, "m", None, &[], binary).expect("decoded tensors encode")
    };
    let first = encode(request.event.tensors.clone());
    let back = decode_response(&first.body, first.json_len).expect("an encoded response decodes");
    let again = encode(back);
    assert_eq!(
        first.body, again.body,
        "the response round trip changed the tensors"
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Found by the `oip_decode` fuzzer: serde_json's default float parsing can be one ULP off,
    /// so an FP64 value changed on its way through (`float_roundtrip` parses exactly).
    #[test]
    fn fp64_values_are_parsed_exactly() {
        let body = br#"{"inputs":[{"name":"x","shape":[1],"datatype":"FP64","data":[1.111111111111111e33]}]}"#;
        let req = decode_request(body, None).unwrap();
        let exact: f64 = "1.111111111111111e33".parse().unwrap();
        assert_eq!(req.event.tensors[0].data, TensorData::Fp64(vec![exact]));
    }

    /// Found by the `oip_decode` fuzzer: a number beyond FP16's range became infinity, which
    /// the JSON response wrote as `null`, which no decoder read back.
    #[test]
    fn out_of_range_floats_are_refused_and_nan_travels_as_null() {
        let body = br#"{"inputs":[{"name":"x","shape":[2],"datatype":"FP16","data":[0,1e9]}]}"#;
        let e = decode_request(body, None).unwrap_err();
        assert!(
            e.message.contains("1000000000 is not one of FP16 numbers"),
            "{}",
            e.message
        );
        let body = br#"{"inputs":[{"name":"x","shape":[1],"datatype":"FP32","data":[1e39]}]}"#;
        assert!(decode_request(body, None).is_err());

        let nan = Event::new(
            "n",
            vec![Tensor::new("y", vec![2], TensorData::Fp32(vec![f32::NAN, 1.0])).unwrap()],
        );
        let encoded = encode_response(&nan, "m", None, &[], false).unwrap();
        let text = String::from_utf8(encoded.body.clone()).unwrap();
        assert!(text.contains("[null,1.0]"), "{text}");
        let back = decode_response(&encoded.body, None).unwrap();
        match &back[0].data {
            TensorData::Fp32(v) => assert!(v[0].is_nan() && v[1] == 1.0),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn decodes_flat_and_nested_data() {
        let body = br#"{"id":"r1","inputs":[
            {"name":"a","shape":[2,2],"datatype":"FP32","data":[[1,2],[3,4.5]]},
            {"name":"b","shape":[3],"datatype":"INT64","data":[1,-2,3]},
            {"name":"c","shape":[2],"datatype":"BYTES","data":["x","yz"]},
            {"name":"d","shape":[2],"datatype":"BOOL","data":[true,false]},
            {"name":"e","shape":[1],"datatype":"FP16","data":[0.5]}]}"#;
        let req = decode_request(body, None).unwrap();
        assert_eq!(req.event.id, "r1");
        let t = &req.event.tensors;
        assert_eq!(t[0].data, TensorData::Fp32(vec![1.0, 2.0, 3.0, 4.5]));
        assert_eq!(t[0].shape, vec![2, 2]);
        assert_eq!(t[1].data, TensorData::Int64(vec![1, -2, 3]));
        assert_eq!(
            t[2].data,
            TensorData::Bytes(vec![b"x".to_vec(), b"yz".to_vec()])
        );
        assert_eq!(t[3].data, TensorData::Bool(vec![true, false]));
        assert_eq!(t[4].data, TensorData::Fp16(vec![f16::from_f32(0.5)]));
    }

    #[test]
    fn rejects_malformed_requests_with_clear_messages() {
        let cases: [(&[u8], &str); 9] = [
            (b"{not json", "malformed inference request"),
            (br#"{"inputs":[]}"#, "no `inputs`"),
            (
                br#"{"inputs":[{"name":"a","shape":[2],"datatype":"FP33","data":[1,2]}]}"#,
                "unknown datatype `FP33`",
            ),
            (
                br#"{"inputs":[{"name":"a","shape":[3],"datatype":"FP32","data":[1,2]}]}"#,
                "shape [3] needs 3 elements, data has 2",
            ),
            (
                br#"{"inputs":[{"name":"a","shape":[1],"datatype":"INT32","data":[1.5]}]}"#,
                "1.5 is not one of INT32 integers",
            ),
            (
                br#"{"inputs":[{"name":"a","shape":[1],"datatype":"UINT8","data":[300]}]}"#,
                "300 is not one of UINT8 integers",
            ),
            (
                br#"{"inputs":[{"name":"a","shape":[-1],"datatype":"FP32","data":[1]}]}"#,
                "negative dimension",
            ),
            (
                br#"{"inputs":[{"name":"a","shape":[4294967296,4294967296,16],"datatype":"FP32","data":[1]}]}"#,
                "is too large",
            ),
            (
                br#"{"inputs":[{"name":"a","shape":[100000000000],"datatype":"FP32","data":[1]}]}"#,
                "shape [100000000000] needs 100000000000 elements, data has 1",
            ),
        ];
        for (body, want) in cases {
            let err = decode_request(body, None).unwrap_err();
            assert_eq!(err.kind, crate::error::ErrorKind::BadRequest);
            assert!(
                err.message.contains(want),
                "{want:?} not in {:?}",
                err.message
            );
        }
    }

    #[test]
    fn binary_extension_round_trips() {
        let json = br#"{"inputs":[{"name":"a","shape":[2],"datatype":"FP32","parameters":{"binary_data_size":8}},{"name":"s","shape":[2],"datatype":"BYTES","parameters":{"binary_data_size":11}}],"outputs":[{"name":"a","parameters":{"binary_data":true}},{"name":"s"}]}"#;
        let mut body = json.to_vec();
        body.extend_from_slice(&1.5f32.to_le_bytes());
        body.extend_from_slice(&(-2f32).to_le_bytes());
        body.extend_from_slice(&2u32.to_le_bytes());
        body.extend_from_slice(b"hi");
        body.extend_from_slice(&1u32.to_le_bytes());
        body.extend_from_slice(b"x");
        let req = decode_request(&body, Some(json.len())).unwrap();
        assert_eq!(req.event.tensors[0].data, TensorData::Fp32(vec![1.5, -2.0]));
        assert_eq!(
            req.event.tensors[1].data,
            TensorData::Bytes(vec![b"hi".to_vec(), b"x".to_vec()])
        );

        let resp = encode_response(&req.event, "m", None, &req.outputs, false).unwrap();
        let n = resp.json_len.expect("binary output");
        let header: Value = serde_json::from_slice(&resp.body[..n]).unwrap();
        assert_eq!(header["outputs"][0]["parameters"]["binary_data_size"], 8);
        assert!(header["outputs"][0].get("data").is_none());
        assert_eq!(header["outputs"][1]["data"], serde_json::json!(["hi", "x"]));
        assert_eq!(&resp.body[n..n + 4], &1.5f32.to_le_bytes());
    }

    #[test]
    fn base64_bytes_in_json() {
        let body = br#"{"inputs":[{"name":"img","shape":[2],"datatype":"BYTES","parameters":{"content_type":"base64"},"data":["AAH/","aGk="]}]}"#;
        let req = decode_request(body, None).unwrap();
        assert_eq!(
            req.event.tensors[0].data,
            TensorData::Bytes(vec![vec![0, 1, 255], b"hi".to_vec()])
        );
        let bad = br#"{"inputs":[{"name":"img","shape":[1],"datatype":"BYTES","parameters":{"content_type":"base64"},"data":["%%%"]}]}"#;
        let err = decode_request(bad, None).unwrap_err();
        assert!(
            err.message.contains("element 0 is not valid base64"),
            "{}",
            err.message
        );
    }

    #[test]
    fn client_request_and_response_round_trip() {
        let tensors = vec![
            Tensor::new("a", vec![2], TensorData::Fp32(vec![1.5, 2.5])).unwrap(),
            Tensor::new("s", vec![1], TensorData::Bytes(vec![b"x".to_vec()])).unwrap(),
        ];
        for binary in [false, true] {
            let enc = encode_request("r9", &tensors, binary).unwrap();
            assert_eq!(enc.json_len.is_some(), binary);
            // A server decodes what the client sent...
            let req = decode_request(&enc.body, enc.json_len).unwrap();
            assert_eq!(req.event.id, "r9");
            assert_eq!(req.event.tensors, tensors);
            assert_eq!(req.binary_output, binary);
            // ...answers, and the client decodes the answer.
            let resp = encode_response(&req.event, "m", None, &[], req.binary_output).unwrap();
            assert_eq!(decode_response(&resp.body, resp.json_len).unwrap(), tensors);
        }
    }

    #[test]
    fn binary_size_mismatch_is_an_error() {
        let json = br#"{"inputs":[{"name":"a","shape":[2],"datatype":"FP32","parameters":{"binary_data_size":4}}]}"#;
        let mut body = json.to_vec();
        body.extend_from_slice(&[0; 4]);
        let err = decode_request(&body, Some(json.len())).unwrap_err();
        assert!(
            err.message.contains("2 FP32 elements take 8"),
            "{}",
            err.message
        );
    }

    #[test]
    fn json_response_lists_requested_outputs_in_order() {
        let mut ev = Event::new(
            "id1",
            vec![
                Tensor::new("a", vec![1], TensorData::Int64(vec![2])).unwrap(),
                Tensor::new("b", vec![1], TensorData::Fp32(vec![0.5])).unwrap(),
            ],
        );
        ev.routes.push(("r".into(), "left".into()));
        let want = [RequestedOutput {
            name: "b".into(),
            binary: None,
        }];
        let resp = encode_response(&ev, "m", Some("2"), &want, false).unwrap();
        assert!(resp.json_len.is_none());
        let v: Value = serde_json::from_slice(&resp.body).unwrap();
        assert_eq!(
            v,
            serde_json::json!({"model_name":"m","model_version":"2","id":"id1",
                "parameters":{"route":"left"},
                "outputs":[{"name":"b","datatype":"FP32","shape":[1],"data":[0.5]}]})
        );
        let missing = [RequestedOutput {
            name: "zz".into(),
            binary: None,
        }];
        let err = encode_response(&ev, "m", None, &missing, false).unwrap_err();
        assert!(
            err.message
                .contains("unknown output `zz`; the outputs are: a, b")
        );
    }
}
