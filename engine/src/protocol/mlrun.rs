//! MLRun's body shape, for every model: `{"inputs": [[...row...], ...]}` (rows, not OIP
//! tensor objects), optionally with `id`, as MLRun's serving graphs and its mock server
//! (`server.test("/v2/models/m/infer", {"inputs": x})`) send it; answered in MLRun's shape
//! `{"id", "model_name", "outputs"}`.
//!
//! The rows become the addressed model's one input tensor (its name and datatype; the shape
//! from the rows' nesting), then go through the OIP decoder like any request. A model with
//! several inputs cannot take rows: that is a 400 saying what it takes.

use serde_json::{Map, Value};

use super::request::InferRequest;
use crate::error::{Error, Result};
use crate::event::{BodyProtocol, Event, EventData, JsonBody, Target};
use crate::step::ModelInfo;
use crate::tensor::{Tensor, TensorData, TensorMeta};

/// Whether a body is MLRun-shaped: a JSON object whose `inputs` is a list of rows (lists or
/// scalars) or of feature dicts, or one dict of features, rather than OIP tensor objects.
/// Cheap: only the start of `inputs` is looked at, and for a list of objects whether the body
/// names a `"datatype"` (every OIP tensor has one).
pub fn is_rows(body: &[u8]) -> bool {
    let Some(at) = find_inputs(body) else {
        return false;
    };
    let mut rest = body[at..]
        .iter()
        .copied()
        .filter(|b| !b.is_ascii_whitespace());
    match rest.next() {
        // `{"inputs": {"feature": ...}}`: MLRun's dict of features.
        Some(b'{') => true,
        // The first element: a row or a number is MLRun's; an object is OIP's tensor, or
        // MLRun's dict of features when it has no `datatype`.
        Some(b'[') => match rest.next() {
            Some(b'{') => DATATYPE.find(&body[at..]).is_none(),
            Some(b']') | None => false,
            Some(_) => true,
        },
        _ => false,
    }
}

/// Every OIP body is asked: the searches are memchr's (SIMD) with their needles prepared
/// once, not a comparison at every byte (issue 27).
static INPUTS: std::sync::LazyLock<memchr::memmem::Finder<'static>> =
    std::sync::LazyLock::new(|| memchr::memmem::Finder::new(b"\"inputs\""));
static DATATYPE: std::sync::LazyLock<memchr::memmem::Finder<'static>> =
    std::sync::LazyLock::new(|| memchr::memmem::Finder::new(b"\"datatype\""));

/// Where the value of the top-level `"inputs":` starts, when the body has one near its start.
fn find_inputs(body: &[u8]) -> Option<usize> {
    let pos = INPUTS.find(body)?;
    let after = pos + INPUTS.needle().len();
    let colon = body[after..]
        .iter()
        .position(|b| !b.is_ascii_whitespace())?;
    (body[after + colon] == b':').then_some(after + colon + 1)
}

/// An MLRun body, parsed once: what [`named_model`] and [`to_oip`] read.
pub fn parse(body: &[u8]) -> Result<Map<String, Value>> {
    serde_json::from_slice(body)
        .map_err(|e| Error::bad_request(format!("malformed JSON body: {e}")))
}

/// The model and version an MLRun body names in its own `model`/`version` fields (MLRun's
/// router reads them), if any.
pub fn named_model(body: &Map<String, Value>) -> (Option<&str>, Option<&str>) {
    let text = |k: &str| body.get(k).and_then(Value::as_str);
    (text("model"), text("version"))
}

/// The OIP request an MLRun body stands for, for `model` (its one input's name and
/// datatype). The body is read, not copied: it is kept as the request's body too.
pub fn to_oip(value: &Map<String, Value>, model: &ModelInfo) -> Result<Vec<u8>> {
    let rows = value.get("inputs").unwrap_or(&Value::Null);
    oip_of_rows(rows, Some(value), &model.name, &model.inputs)
}

/// The tensors a body stands for, for a model taking `inputs`: how a model that takes
/// tensors reads a body a step before it answered with (an MLRun flow step's `inputs` rows,
/// a Seldon transformer's `data`), or a KServe v1 request's `instances`.
pub fn body_tensors(body: &Value, model: &str, inputs: &[TensorMeta]) -> Result<Vec<Tensor>> {
    let request = match body {
        // KServe's v1 instances (a KServe body no class took).
        Value::Object(map) if map.get("instances").is_some_and(Value::is_array) => {
            let oip = oip_of_rows(&map["instances"], None, model, inputs)?;
            super::request::decode_request(&oip, None)?
        }
        Value::Object(map) if map.contains_key("inputs") => {
            let oip = oip_of_rows(&map["inputs"], Some(map), model, inputs)?;
            super::request::decode_request(&oip, None)?
        }
        Value::Object(map) if map.contains_key("data") => {
            super::seldon::tensors(body, model, inputs)?
        }
        _ => {
            return Err(Error::unprocessable(format!(
                "model `{model}` takes tensors, and the body it was handed has neither `inputs` rows (MLRun's) nor `data` (Seldon's)"
            )));
        }
    };
    Ok(request.event.into_data().tensors)
}

/// An OIP request (JSON) of one tensor, `rows` nested by its shape, for a model taking
/// `inputs` (which must be one), with the `id`, `parameters`, `model` and `version` of
/// `rest` (an MLRun body) when given. Written from borrowed parts: nothing is copied.
pub(crate) fn oip_of_rows(
    rows: &Value,
    rest: Option<&Map<String, Value>>,
    model: &str,
    inputs: &[TensorMeta],
) -> Result<Vec<u8>> {
    let [input] = inputs else {
        let names: Vec<String> = inputs.iter().map(|i| format!("`{}`", i.name)).collect();
        return Err(Error::bad_request(format!(
            "MLRun-style `inputs` (rows) need a model with one input; `{}` takes {}{}: send OIP tensors (`{{\"name\", \"shape\", \"datatype\", \"data\"}}`)",
            model,
            inputs.len(),
            if names.is_empty() {
                String::new()
            } else {
                format!(" ({})", names.join(", "))
            }
        )));
    };
    let mut shape = Vec::new();
    let mut level = rows;
    while let Value::Array(items) = level {
        shape.push(items.len());
        match items.first() {
            Some(first) => level = first,
            None => break,
        }
    }
    if shape.is_empty() {
        return Err(Error::bad_request("`inputs` must be a list of rows"));
    }
    #[derive(serde::Serialize)]
    struct Oip<'a> {
        #[serde(skip_serializing_if = "Option::is_none")]
        id: Option<&'a Value>,
        inputs: [OipInput<'a>; 1],
        #[serde(skip_serializing_if = "Option::is_none")]
        parameters: Option<&'a Value>,
        #[serde(skip_serializing_if = "Option::is_none")]
        model: Option<&'a Value>,
        #[serde(skip_serializing_if = "Option::is_none")]
        version: Option<&'a Value>,
    }
    #[derive(serde::Serialize)]
    struct OipInput<'a> {
        name: &'a str,
        datatype: crate::tensor::DataType,
        shape: Vec<usize>,
        data: &'a Value,
    }
    let field = |k: &str| rest.and_then(|r| r.get(k));
    let oip = Oip {
        id: field("id"),
        inputs: [OipInput {
            name: &input.name,
            datatype: input.datatype,
            shape,
            data: rows,
        }],
        parameters: field("parameters"),
        model: field("model"),
        version: field("version"),
    };
    Ok(serde_json::to_vec(&oip).expect("JSON"))
}

/// MLRun's body for an event that came with tensors only (an OIP request reaching a step
/// written against bodies): `{"id", "inputs": rows}` for one tensor, `inputs` an object of
/// them by name for several.
pub fn body_of(event: &Event) -> Result<Value> {
    let inputs = match event.tensors.as_slice() {
        [one] => nested(one)?,
        many => Value::Object(
            many.iter()
                .map(|t| Ok((t.name.clone(), nested(t)?)))
                .collect::<Result<Map<String, Value>>>()?,
        ),
    };
    Ok(serde_json::json!({"id": event.id, "inputs": inputs}))
}

/// A request that is its body alone (no tensors): for Python classes that take MLRun's body
/// as it is. Its `id`, `parameters` and named `model`/`version` are read as for rows.
pub fn body_request(value: Value) -> Result<InferRequest> {
    let text = |k: &str| value.get(k).and_then(Value::as_str).map(str::to_owned);
    let id = match value.get("id") {
        None | Some(Value::Null) => String::new(),
        Some(Value::String(s)) => s.clone(),
        Some(other) => other.to_string(),
    };
    let parameters = match value.get("parameters") {
        None | Some(Value::Null) => Map::new(),
        Some(Value::Object(p)) => p.clone(),
        Some(_) => return Err(Error::bad_request("`parameters` must be an object")),
    };
    let target = text("model").map(|model| Target {
        model,
        version: text("version"),
    });
    let event = Event::from(EventData {
        id,
        parameters,
        target,
        body: Some(JsonBody::request(value, BodyProtocol::Mlrun)),
        ..EventData::default()
    });
    Ok(InferRequest {
        event,
        outputs: Vec::new(),
        binary_output: false,
    })
}

/// The answer in MLRun's shape: `outputs` is the one output's data, nested by its shape (or,
/// with several outputs, an object of them by name); `model_version` when there is one.
pub fn encode(event: &Event, model: &str, version: Option<&str>) -> Result<Vec<u8>> {
    let outputs = match event.tensors.as_slice() {
        [one] => nested(one)?,
        many => Value::Object(
            many.iter()
                .map(|t| Ok((t.name.clone(), nested(t)?)))
                .collect::<Result<Map<String, Value>>>()?,
        ),
    };
    let mut out = Map::new();
    out.insert("id".into(), Value::String(event.id.clone()));
    out.insert("model_name".into(), Value::String(model.to_owned()));
    if let Some(v) = version {
        out.insert("model_version".into(), Value::String(v.to_owned()));
    }
    out.insert("outputs".into(), outputs);
    Ok(serde_json::to_vec(&out).expect("JSON"))
}

/// A tensor's elements as JSON values, in order: BYTES as UTF-8 text (else an error saying
/// that `protocol`'s JSON cannot carry them, and what to ask for instead).
pub(crate) fn json_elements(t: &Tensor, protocol: &str, instead: &str) -> Result<Vec<Value>> {
    Ok(match &t.data {
        TensorData::Bytes(items) => items
            .iter()
            .map(|b| match std::str::from_utf8(b) {
                Ok(s) => Ok(Value::String(s.to_owned())),
                Err(_) => Err(Error::internal(format!(
                    "output `{}` holds bytes that are not UTF-8, which {protocol} cannot carry: {instead}",
                    t.name
                ))),
            })
            .collect::<Result<_>>()?,
        data => match serde_json::to_value(super::json::JsonData::Plain(data)).expect("JSON") {
            Value::Array(items) => items,
            other => vec![other],
        },
    })
}

/// A tensor's data as nested JSON lists, by its shape (an MLRun answer's `outputs`).
pub fn nested(t: &Tensor) -> Result<Value> {
    let flat = json_elements(t, "MLRun's JSON", "ask for OIP")?;
    Ok(nest(&mut flat.into_iter(), &t.shape))
}

/// The next elements of `flat`, nested as lists by `shape`.
pub(crate) fn nest(flat: &mut std::vec::IntoIter<Value>, shape: &[usize]) -> Value {
    match shape.split_first() {
        None => flat.next().unwrap_or(Value::Null),
        Some((&n, rest)) => Value::Array((0..n).map(|_| nest(flat, rest)).collect()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tensor::DataType;

    fn model(inputs: Vec<TensorMeta>) -> ModelInfo {
        super::super::test_model(inputs, crate::step::Platform::Custom)
    }

    #[test]
    fn rows_are_told_from_oip() {
        assert!(is_rows(br#"{"inputs": [[1, 2], [3, 4]]}"#));
        assert!(is_rows(br#"{"id": "a", "inputs":[ 1.5 ]}"#));
        assert!(!is_rows(
            br#"{"inputs": [{"name": "x", "shape": [1], "datatype": "FP32", "data": [1]}]}"#
        ));
        // MLRun's dicts of features.
        assert!(is_rows(br#"{"inputs": [{"x": [1, 2], "y": [3, 5.5]}]}"#));
        assert!(is_rows(br#"{"inputs": {"x": 1, "y": 2}}"#));
        assert!(!is_rows(br#"{"inputs": []}"#));
        assert!(!is_rows(br#"{"outputs": [[1]]}"#));
    }

    #[test]
    fn rows_become_the_models_one_input() {
        let m = model(vec![TensorMeta::new("input", DataType::Fp32, vec![-1, 2])]);
        let body = parse(br#"{"id": "r1", "inputs": [[1, 2], [3, 4], [5, 6]]}"#).unwrap();
        let oip = to_oip(&body, &m).unwrap();
        let v: Value = serde_json::from_slice(&oip).unwrap();
        assert_eq!(v["id"], "r1");
        assert_eq!(v["inputs"][0]["name"], "input");
        assert_eq!(v["inputs"][0]["datatype"], "FP32");
        assert_eq!(v["inputs"][0]["shape"], serde_json::json!([3, 2]));
        let two = model(vec![
            TensorMeta::new("a", DataType::Fp32, vec![-1]),
            TensorMeta::new("b", DataType::Fp32, vec![-1]),
        ]);
        let e = to_oip(&parse(br#"{"inputs": [[1]]}"#).unwrap(), &two).unwrap_err();
        assert!(e.message.contains("takes 2 (`a`, `b`)"), "{}", e.message);
    }

    #[test]
    fn outputs_are_nested_by_shape() {
        let t = Tensor::new("p", vec![2, 2], TensorData::Fp32(vec![1.0, 2.0, 3.0, 4.0])).unwrap();
        let event = Event::new("r1", vec![t]);
        let v: Value = serde_json::from_slice(&encode(&event, "m", None).unwrap()).unwrap();
        assert_eq!(v["outputs"], serde_json::json!([[1.0, 2.0], [3.0, 4.0]]));
        assert_eq!(v["model_name"], "m");
        assert_eq!(v["id"], "r1");
    }
}
