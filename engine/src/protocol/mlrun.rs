//! MLRun's body shape, for every model: `{"inputs": [[...row...], ...]}` (rows, not OIP
//! tensor objects), optionally with `id`, as MLRun's serving graphs and its mock server
//! (`server.test("/v2/models/m/infer", {"inputs": x})`) send it; answered in MLRun's shape
//! `{"id", "model_name", "outputs"}`.
//!
//! The rows become the addressed model's one input tensor (its name and datatype; the shape
//! from the rows' nesting), then go through the OIP decoder like any request. A model with
//! several inputs cannot take rows: that is a 400 saying what it takes.

use serde_json::{Map, Value};

use crate::error::{Error, Result};
use crate::event::Event;
use crate::step::ModelInfo;
use crate::tensor::{Tensor, TensorData};

/// Whether a body is MLRun-shaped: a JSON object whose `inputs` is a list of rows (lists or
/// scalars) rather than OIP tensor objects. Cheap: only the start of `inputs` is looked at
/// when the body is OIP.
pub fn is_rows(body: &[u8]) -> bool {
    let Some(at) = find_inputs(body) else {
        return false;
    };
    let rest = body[at..].iter().skip_while(|b| b.is_ascii_whitespace());
    let mut rest = rest.copied();
    if rest.next() != Some(b'[') {
        return false;
    }
    // The first element: `{` is OIP; anything else (a row, a number) is MLRun's.
    matches!(rest.find(|b| !b.is_ascii_whitespace()), Some(b) if b != b'{' && b != b']')
}

/// Where the value of the top-level `"inputs":` starts, when the body has one near its start.
fn find_inputs(body: &[u8]) -> Option<usize> {
    let key = b"\"inputs\"";
    let pos = body.windows(key.len()).position(|w| w == key)?;
    let after = pos + key.len();
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
/// datatype).
pub fn to_oip(mut value: Map<String, Value>, model: &ModelInfo) -> Result<Vec<u8>> {
    let [input] = model.inputs.as_slice() else {
        let names: Vec<String> = model
            .inputs
            .iter()
            .map(|i| format!("`{}`", i.name))
            .collect();
        return Err(Error::bad_request(format!(
            "MLRun-style `inputs` (rows) need a model with one input; `{}` takes {}{}: send OIP tensors (`{{\"name\", \"shape\", \"datatype\", \"data\"}}`)",
            model.name,
            model.inputs.len(),
            if names.is_empty() {
                String::new()
            } else {
                format!(" ({})", names.join(", "))
            }
        )));
    };
    let rows = value.remove("inputs").unwrap_or(Value::Null);
    let mut shape = Vec::new();
    let mut level = &rows;
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
    let mut oip = Map::new();
    if let Some(id) = value.remove("id") {
        oip.insert("id".into(), id);
    }
    oip.insert(
        "inputs".into(),
        serde_json::json!([{
            "name": input.name,
            "datatype": input.datatype,
            "shape": shape,
            "data": rows,
        }]),
    );
    for key in ["parameters", "model", "version"] {
        if let Some(v) = value.remove(key) {
            oip.insert(key.into(), v);
        }
    }
    Ok(serde_json::to_vec(&oip).expect("JSON"))
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

/// A tensor's data as nested JSON lists, by its shape.
fn nested(t: &Tensor) -> Result<Value> {
    let flat: Vec<Value> = match &t.data {
        TensorData::Bytes(items) => items
            .iter()
            .map(|b| match std::str::from_utf8(b) {
                Ok(s) => Ok(Value::String(s.to_owned())),
                Err(_) => Err(Error::internal(format!(
                    "output `{}` holds bytes that are not UTF-8, which MLRun's JSON cannot carry: ask for OIP",
                    t.name
                ))),
            })
            .collect::<Result<_>>()?,
        data => match serde_json::to_value(super::json::JsonData::Plain(data)).expect("JSON") {
            Value::Array(items) => items,
            other => vec![other],
        },
    };
    fn build(flat: &mut std::vec::IntoIter<Value>, shape: &[usize]) -> Value {
        match shape.split_first() {
            None => flat.next().unwrap_or(Value::Null),
            Some((&n, rest)) => Value::Array((0..n).map(|_| build(flat, rest)).collect()),
        }
    }
    Ok(build(&mut flat.into_iter(), &t.shape))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tensor::{DataType, TensorMeta};

    fn model(inputs: Vec<TensorMeta>) -> ModelInfo {
        ModelInfo {
            name: "m".into(),
            version: None,
            platform: crate::step::Platform::Custom,
            inputs,
            outputs: Vec::new(),
        }
    }

    #[test]
    fn rows_are_told_from_oip() {
        assert!(is_rows(br#"{"inputs": [[1, 2], [3, 4]]}"#));
        assert!(is_rows(br#"{"id": "a", "inputs":[ 1.5 ]}"#));
        assert!(!is_rows(br#"{"inputs": [{"name": "x"}]}"#));
        assert!(!is_rows(br#"{"inputs": []}"#));
        assert!(!is_rows(br#"{"outputs": [[1]]}"#));
    }

    #[test]
    fn rows_become_the_models_one_input() {
        let m = model(vec![TensorMeta::new("input", DataType::Fp32, vec![-1, 2])]);
        let body = parse(br#"{"id": "r1", "inputs": [[1, 2], [3, 4], [5, 6]]}"#).unwrap();
        let oip = to_oip(body, &m).unwrap();
        let v: Value = serde_json::from_slice(&oip).unwrap();
        assert_eq!(v["id"], "r1");
        assert_eq!(v["inputs"][0]["name"], "input");
        assert_eq!(v["inputs"][0]["datatype"], "FP32");
        assert_eq!(v["inputs"][0]["shape"], serde_json::json!([3, 2]));
        let two = model(vec![
            TensorMeta::new("a", DataType::Fp32, vec![-1]),
            TensorMeta::new("b", DataType::Fp32, vec![-1]),
        ]);
        let e = to_oip(parse(br#"{"inputs": [[1]]}"#).unwrap(), &two).unwrap_err();
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
