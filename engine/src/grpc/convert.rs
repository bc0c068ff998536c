//! Tensors and parameters between the protobuf messages and the engine's types, for the
//! server (requests in, answers out) and for remote steps (requests out, answers in).

use bytes::Bytes;
use serde_json::{Map, Value};

use super::pb;
use super::pb::infer_parameter::ParameterChoice;
use crate::error::{Error, Result};
use crate::event::{Event, EventData};
use crate::protocol::{
    InferRequest, RequestedOutput, classification, decode_binary, encode_binary, tensor_header,
};
use crate::request::Tensors;
use crate::tensor::{DataType, Tensor, TensorData};

/// A parameter as the JSON value the engine keeps (`event.parameters`).
pub fn param_to_json(p: &pb::InferParameter) -> Value {
    match &p.parameter_choice {
        None => Value::Null,
        Some(ParameterChoice::BoolParam(b)) => Value::Bool(*b),
        Some(ParameterChoice::Int64Param(n)) => Value::from(*n),
        Some(ParameterChoice::Uint64Param(n)) => Value::from(*n),
        Some(ParameterChoice::DoubleParam(x)) => {
            serde_json::Number::from_f64(*x).map_or(Value::Null, Value::Number)
        }
        Some(ParameterChoice::StringParam(s)) => Value::String(s.clone()),
    }
}

/// A JSON value as a parameter: numbers keep their kind (int64, uint64 past int64's range,
/// double), and arrays and objects travel as their JSON text.
pub fn json_to_param(v: &Value) -> pb::InferParameter {
    let choice = match v {
        Value::Null => None,
        Value::Bool(b) => Some(ParameterChoice::BoolParam(*b)),
        Value::Number(n) => Some(match (n.as_i64(), n.as_u64()) {
            (Some(i), _) => ParameterChoice::Int64Param(i),
            (None, Some(u)) => ParameterChoice::Uint64Param(u),
            _ => ParameterChoice::DoubleParam(n.as_f64().unwrap_or(f64::NAN)),
        }),
        Value::String(s) => Some(ParameterChoice::StringParam(s.clone())),
        other => Some(ParameterChoice::StringParam(other.to_string())),
    };
    pb::InferParameter {
        parameter_choice: choice,
    }
}

fn params_to_json(
    params: &std::collections::HashMap<String, pb::InferParameter>,
) -> Map<String, Value> {
    params
        .iter()
        .map(|(k, v)| (k.clone(), param_to_json(v)))
        .collect()
}

fn json_to_params(
    map: &Map<String, Value>,
) -> std::collections::HashMap<String, pb::InferParameter> {
    map.iter()
        .filter(|(_, v)| !v.is_null())
        .map(|(k, v)| (k.clone(), json_to_param(v)))
        .collect()
}

/// A gRPC inference request as the engine's: inputs from `raw_input_contents` (one per input,
/// in order) or from each input's typed `contents`, the outputs asked for (with Triton's
/// `classification`), the parameters.
pub fn decode_request(mut req: pb::ModelInferRequest) -> Result<InferRequest> {
    if req.inputs.is_empty() {
        return Err(Error::bad_request("the request has no `inputs`"));
    }
    let raw = std::mem::take(&mut req.raw_input_contents);
    if !raw.is_empty() && raw.len() != req.inputs.len() {
        return Err(Error::bad_request(format!(
            "the request has {} inputs but {} raw_input_contents; send one per input, in order",
            req.inputs.len(),
            raw.len()
        )));
    }
    let mut tensors: Vec<Tensor> = Vec::with_capacity(req.inputs.len());
    let mut raw = raw.into_iter();
    let mut input_parameters = Map::new();
    for (index, input) in req.inputs.into_iter().enumerate() {
        let name = input.name.clone();
        if !input.parameters.is_empty() {
            input_parameters.insert(
                name.clone(),
                Value::Object(params_to_json(&input.parameters)),
            );
        }
        let tensor = decode_input(input, raw.next(), index)
            .map_err(|e| Error::bad_request(format!("input `{name}`: {}", e.message)))?;
        if tensors.iter().any(|t| t.name == tensor.name) {
            return Err(Error::bad_request(format!("input `{name}` is given twice")));
        }
        tensors.push(tensor);
    }
    let mut outputs: Vec<RequestedOutput> = Vec::with_capacity(req.outputs.len());
    let requested_outputs = (!req.outputs.is_empty()).then(|| {
        req.outputs
            .iter()
            .map(|o| {
                let mut out = Map::new();
                out.insert("name".into(), Value::String(o.name.clone()));
                if !o.parameters.is_empty() {
                    out.insert(
                        "parameters".into(),
                        Value::Object(params_to_json(&o.parameters)),
                    );
                }
                Value::Object(out)
            })
            .collect()
    });
    for o in req.outputs {
        if outputs.iter().any(|p| p.name == o.name) {
            return Err(Error::bad_request(format!(
                "output `{}` is requested twice in `outputs`",
                o.name
            )));
        }
        let classification = classification(
            &o.name,
            o.parameters
                .get("classification")
                .map(param_to_json)
                .as_ref(),
        )?;
        outputs.push(RequestedOutput {
            name: o.name,
            binary: None,
            classification,
        });
    }
    Ok(InferRequest {
        event: Event::from(EventData {
            id: req.id,
            tensors,
            parameters: params_to_json(&req.parameters),
            input_parameters,
            requested_outputs,
            grpc: true,
            ..Default::default()
        }),
        outputs,
        binary_output: false,
    })
}

/// One input tensor, from its raw bytes when the request sent raw contents.
fn decode_input(
    input: pb::model_infer_request::InferInputTensor,
    raw: Option<Bytes>,
    index: usize,
) -> Result<Tensor> {
    let (datatype, shape, count) = tensor_header(&input.datatype, &input.shape)?;
    let data = match (raw, input.contents) {
        (Some(_), Some(c)) if !contents_empty(&c) => {
            return Err(Error::bad_request(
                "has typed `contents` while the request sends raw_input_contents; send one",
            ));
        }
        (Some(bytes), _) => {
            if let Some(size) = datatype.element_size()
                && count.checked_mul(size) != Some(bytes.len())
            {
                return Err(Error::bad_request(format!(
                    "raw_input_contents[{index}] is {} bytes but shape {:?} of {datatype} takes {}",
                    bytes.len(),
                    shape,
                    count.saturating_mul(size)
                )));
            }
            decode_binary(datatype, &bytes, count).map_err(|e| {
                Error::bad_request(format!("raw_input_contents[{index}]: {}", e.message))
            })?
        }
        (None, Some(contents)) => from_contents(datatype, contents, count)?,
        (None, None) => from_contents(datatype, pb::InferTensorContents::default(), count)?,
    };
    Tensor::new(input.name, shape, data).map_err(|e| Error::bad_request(e.message))
}

fn contents_empty(c: &pb::InferTensorContents) -> bool {
    c.bool_contents.is_empty()
        && c.int_contents.is_empty()
        && c.int64_contents.is_empty()
        && c.uint_contents.is_empty()
        && c.uint64_contents.is_empty()
        && c.fp32_contents.is_empty()
        && c.fp64_contents.is_empty()
        && c.bytes_contents.is_empty()
}

/// Typed contents as tensor data: the field the datatype uses, with `count` elements, each in
/// the datatype's range.
fn from_contents(
    datatype: DataType,
    c: pb::InferTensorContents,
    count: usize,
) -> Result<TensorData> {
    fn exact<T>(field: &str, v: Vec<T>, count: usize) -> Result<Vec<T>> {
        if v.len() == count {
            Ok(v)
        } else {
            Err(Error::bad_request(format!(
                "`contents.{field}` has {} elements but the shape takes {count}",
                v.len()
            )))
        }
    }
    fn narrow<S: Copy + std::fmt::Display, T: TryFrom<S>>(
        field: &str,
        datatype: DataType,
        v: Vec<S>,
        count: usize,
    ) -> Result<Vec<T>> {
        exact(field, v, count)?
            .into_iter()
            .enumerate()
            .map(|(i, x)| {
                T::try_from(x).map_err(|_| {
                    Error::bad_request(format!(
                        "`contents.{field}[{i}]` is {x}, which is not a {datatype}"
                    ))
                })
            })
            .collect()
    }
    Ok(match datatype {
        DataType::Bool => TensorData::Bool(exact("bool_contents", c.bool_contents, count)?),
        DataType::Uint8 => {
            TensorData::Uint8(narrow("uint_contents", datatype, c.uint_contents, count)?)
        }
        DataType::Uint16 => {
            TensorData::Uint16(narrow("uint_contents", datatype, c.uint_contents, count)?)
        }
        DataType::Uint32 => TensorData::Uint32(exact("uint_contents", c.uint_contents, count)?),
        DataType::Uint64 => TensorData::Uint64(exact("uint64_contents", c.uint64_contents, count)?),
        DataType::Int8 => {
            TensorData::Int8(narrow("int_contents", datatype, c.int_contents, count)?)
        }
        DataType::Int16 => {
            TensorData::Int16(narrow("int_contents", datatype, c.int_contents, count)?)
        }
        DataType::Int32 => TensorData::Int32(exact("int_contents", c.int_contents, count)?),
        DataType::Int64 => TensorData::Int64(exact("int64_contents", c.int64_contents, count)?),
        DataType::Fp16 => {
            return Err(Error::bad_request(
                "FP16 has no typed contents field; send it in raw_input_contents",
            ));
        }
        DataType::Fp32 => TensorData::Fp32(exact("fp32_contents", c.fp32_contents, count)?),
        DataType::Fp64 => TensorData::Fp64(exact("fp64_contents", c.fp64_contents, count)?),
        DataType::Bytes => TensorData::Bytes(exact("bytes_contents", c.bytes_contents, count)?),
    })
}

/// Numeric tensor data seen as its little-endian bytes, so a `Bytes` can own it without a copy.
#[cfg(target_endian = "little")]
struct LeBytes(TensorData);

#[cfg(target_endian = "little")]
impl AsRef<[u8]> for LeBytes {
    fn as_ref(&self) -> &[u8] {
        crate::with_numeric_data!(&self.0, v => bytemuck::cast_slice(v.as_slice()), _ => &[])
    }
}

/// Tensor data as raw contents, taking it: numbers without a copy (on little-endian
/// machines), BOOL and BYTES encoded.
fn raw_owned(data: TensorData) -> Bytes {
    #[cfg(target_endian = "little")]
    if !matches!(data, TensorData::Bool(_) | TensorData::Bytes(_)) {
        return Bytes::from_owner(LeBytes(data));
    }
    raw(&data)
}

/// Tensor data as raw contents (what `as_numpy()` reads).
fn raw(data: &TensorData) -> Bytes {
    let size = match data {
        TensorData::Bytes(v) => v.iter().map(|b| b.len() + 4).sum(),
        other => other.len() * other.datatype().element_size().unwrap_or(1),
    };
    let mut out = Vec::with_capacity(size);
    encode_binary(data, &mut out);
    Bytes::from(out)
}

fn shape_of(t: &Tensor) -> Vec<i64> {
    t.shape.iter().map(|&d| d as i64).collect()
}

/// An answer as a gRPC inference response: every output in `raw_output_contents`, in order.
pub fn encode_response(id: String, answer: Tensors) -> pb::ModelInferResponse {
    let mut outputs = Vec::with_capacity(answer.outputs.len());
    let mut raw_contents = Vec::with_capacity(answer.outputs.len());
    for t in answer.outputs {
        let parameters = answer
            .output_parameters
            .get(&t.name)
            .and_then(Value::as_object)
            .map(json_to_params)
            .unwrap_or_default();
        outputs.push(pb::model_infer_response::InferOutputTensor {
            datatype: t.datatype().as_str().to_owned(),
            shape: shape_of(&t),
            name: t.name,
            parameters,
            contents: None,
        });
        raw_contents.push(raw_owned(t.data));
    }
    pb::ModelInferResponse {
        model_name: answer.model,
        model_version: answer.version.unwrap_or_default(),
        id,
        parameters: json_to_params(&answer.parameters),
        outputs,
        raw_output_contents: raw_contents,
    }
}

/// A remote step's request: every tensor in raw contents.
pub fn encode_request(
    model: &str,
    version: Option<&str>,
    id: &str,
    tensors: &[Tensor],
) -> pb::ModelInferRequest {
    pb::ModelInferRequest {
        model_name: model.to_owned(),
        model_version: version.unwrap_or_default().to_owned(),
        id: id.to_owned(),
        parameters: Default::default(),
        inputs: tensors
            .iter()
            .map(|t| pb::model_infer_request::InferInputTensor {
                name: t.name.clone(),
                datatype: t.datatype().as_str().to_owned(),
                shape: shape_of(t),
                parameters: Default::default(),
                contents: None,
            })
            .collect(),
        outputs: Vec::new(),
        raw_input_contents: tensors.iter().map(|t| raw(&t.data)).collect(),
    }
}

/// A remote server's answer as tensors: raw contents when it sent them (one per output), else
/// each output's typed contents.
pub fn decode_response(resp: pb::ModelInferResponse) -> Result<Vec<Tensor>> {
    let raw = resp.raw_output_contents;
    if !raw.is_empty() && raw.len() != resp.outputs.len() {
        return Err(Error::bad_request(format!(
            "the answer has {} outputs but {} raw_output_contents",
            resp.outputs.len(),
            raw.len()
        )));
    }
    let mut raw = raw.into_iter();
    resp.outputs
        .into_iter()
        .enumerate()
        .map(|(index, o)| {
            let name = o.name.clone();
            let input = pb::model_infer_request::InferInputTensor {
                name: o.name,
                datatype: o.datatype,
                shape: o.shape,
                parameters: o.parameters,
                contents: o.contents,
            };
            decode_input(input, raw.next(), index)
                .map_err(|e| Error::bad_request(format!("output `{name}`: {}", e.message)))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn input(
        name: &str,
        datatype: &str,
        shape: Vec<i64>,
    ) -> pb::model_infer_request::InferInputTensor {
        pb::model_infer_request::InferInputTensor {
            name: name.into(),
            datatype: datatype.into(),
            shape,
            parameters: Default::default(),
            contents: None,
        }
    }

    #[test]
    fn every_datatype_round_trips_through_raw_contents() {
        let tensors = vec![
            Tensor::new("b", vec![2], TensorData::Bool(vec![true, false])).unwrap(),
            Tensor::new("u8", vec![2], TensorData::Uint8(vec![0, 255])).unwrap(),
            Tensor::new("u16", vec![1], TensorData::Uint16(vec![65535])).unwrap(),
            Tensor::new("u32", vec![1], TensorData::Uint32(vec![7])).unwrap(),
            Tensor::new("u64", vec![1], TensorData::Uint64(vec![u64::MAX])).unwrap(),
            Tensor::new("i8", vec![1], TensorData::Int8(vec![-128])).unwrap(),
            Tensor::new("i16", vec![1], TensorData::Int16(vec![-2])).unwrap(),
            Tensor::new("i32", vec![1], TensorData::Int32(vec![-3])).unwrap(),
            Tensor::new("i64", vec![1], TensorData::Int64(vec![i64::MIN])).unwrap(),
            Tensor::new(
                "f16",
                vec![1],
                TensorData::Fp16(vec![half::f16::from_f32(1.5)]),
            )
            .unwrap(),
            Tensor::new("f32", vec![2, 1], TensorData::Fp32(vec![1.0, f32::NAN])).unwrap(),
            Tensor::new("f64", vec![1], TensorData::Fp64(vec![1e300])).unwrap(),
            Tensor::new(
                "s",
                vec![2],
                TensorData::Bytes(vec![b"ab".to_vec(), vec![0xff]]),
            )
            .unwrap(),
        ];
        let req = encode_request("m", Some("2"), "r1", &tensors);
        assert_eq!(req.raw_input_contents.len(), tensors.len());
        let back = decode_request(req).unwrap();
        assert_eq!(back.event.id, "r1");
        for (a, b) in tensors.iter().zip(&back.event.tensors) {
            assert_eq!((&a.name, &a.shape), (&b.name, &b.shape));
            assert_eq!(format!("{:?}", a.data), format!("{:?}", b.data)); // NaN != NaN
        }
    }

    #[test]
    fn typed_contents_are_read_and_checked() {
        let mut x = input("x", "INT8", vec![2]);
        x.contents = Some(pb::InferTensorContents {
            int_contents: vec![1, -2],
            ..Default::default()
        });
        let req = pb::ModelInferRequest {
            inputs: vec![x.clone()],
            ..Default::default()
        };
        let got = decode_request(req).unwrap();
        assert_eq!(got.event.tensors[0].data, TensorData::Int8(vec![1, -2]));

        x.contents.as_mut().unwrap().int_contents = vec![1, 300];
        let e = decode_request(pb::ModelInferRequest {
            inputs: vec![x.clone()],
            ..Default::default()
        })
        .unwrap_err();
        assert!(
            e.message
                .contains("`contents.int_contents[1]` is 300, which is not a INT8"),
            "{}",
            e.message
        );

        x.contents.as_mut().unwrap().int_contents = vec![1];
        let e = decode_request(pb::ModelInferRequest {
            inputs: vec![x],
            ..Default::default()
        })
        .unwrap_err();
        assert!(
            e.message.contains("has 1 elements but the shape takes 2"),
            "{}",
            e.message
        );
    }

    #[test]
    fn raw_contents_must_fit_the_shape_and_match_the_inputs() {
        let req = pb::ModelInferRequest {
            inputs: vec![input("x", "FP32", vec![1, 4])],
            raw_input_contents: vec![Bytes::from(vec![0u8; 12])],
            ..Default::default()
        };
        let e = decode_request(req).unwrap_err();
        assert!(
            e.message.contains(
                "input `x`: raw_input_contents[0] is 12 bytes but shape [1, 4] of FP32 takes 16"
            ),
            "{}",
            e.message
        );
        let req = pb::ModelInferRequest {
            inputs: vec![input("x", "FP32", vec![1]), input("y", "FP32", vec![1])],
            raw_input_contents: vec![Bytes::from(vec![0u8; 4])],
            ..Default::default()
        };
        let e = decode_request(req).unwrap_err();
        assert!(
            e.message.contains("2 inputs but 1 raw_input_contents"),
            "{}",
            e.message
        );
        let req = pb::ModelInferRequest {
            inputs: vec![input("x", "BF16", vec![1])],
            raw_input_contents: vec![Bytes::from(vec![0u8; 2])],
            ..Default::default()
        };
        let e = decode_request(req).unwrap_err();
        assert!(
            e.message.contains("unknown datatype `BF16`"),
            "{}",
            e.message
        );
    }

    #[test]
    fn parameters_keep_their_kinds() {
        for v in [
            serde_json::json!(true),
            serde_json::json!(-3),
            serde_json::json!(u64::MAX),
            serde_json::json!(0.25),
            serde_json::json!("s"),
        ] {
            assert_eq!(param_to_json(&json_to_param(&v)), v);
        }
        assert_eq!(
            param_to_json(&json_to_param(&serde_json::json!({"a": [1]}))),
            serde_json::json!("{\"a\":[1]}")
        );
    }
    /// MLServer's classes read each input's `parameters` and the outputs asked for; their
    /// outputs' parameters go back with the outputs.
    #[test]
    fn tensor_parameters_travel_both_ways() {
        let mut x = input("x", "FP32", vec![1]);
        x.parameters.insert(
            "content_type".into(),
            json_to_param(&serde_json::json!("np")),
        );
        let mut wanted = pb::model_infer_request::InferRequestedOutputTensor {
            name: "y".into(),
            ..Default::default()
        };
        wanted.parameters.insert(
            "content_type".into(),
            json_to_param(&serde_json::json!("str")),
        );
        let req = pb::ModelInferRequest {
            inputs: vec![x],
            outputs: vec![wanted],
            raw_input_contents: vec![Bytes::from(1f32.to_le_bytes().to_vec())],
            ..Default::default()
        };
        let decoded = decode_request(req).unwrap();
        assert_eq!(
            Value::Object(decoded.event.input_parameters.clone()),
            serde_json::json!({"x": {"content_type": "np"}})
        );
        assert_eq!(
            decoded.event.requested_outputs,
            Some(vec![
                serde_json::json!({"name": "y", "parameters": {"content_type": "str"}})
            ])
        );
        let mut output_parameters = Map::new();
        output_parameters.insert("y".into(), serde_json::json!({"content_type": "str"}));
        let answer = Tensors {
            model: "m".into(),
            version: None,
            outputs: vec![Tensor::new("y", vec![1], TensorData::Fp32(vec![2.0])).unwrap()],
            parameters: Map::new(),
            output_parameters,
        };
        let resp = encode_response("r".into(), answer);
        assert_eq!(
            param_to_json(&resp.outputs[0].parameters["content_type"]),
            serde_json::json!("str")
        );
    }
}
