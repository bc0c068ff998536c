//! KServe's v1 REST bodies, for every model: `{"instances": [...]}` (or `{"inputs": [...]}`,
//! which KServe's v1 servers read alike) in, `{"predictions": [...]}` out, as KServe's
//! `kserve.Model` and its framework servers (sklearn, xgboost, lightgbm) read and answer them.
//!
//! The instances are rows of the addressed model's one input, as MLRun's rows are
//! ([`super::mlrun::oip_of_rows`]): the model's input name and datatype, the shape from the
//! rows' nesting. A model with one output answers its rows as `predictions`; several outputs
//! answer one object per instance, `{output: row, ...}` (TensorFlow Serving's row format,
//! which KServe's v1 protocol comes from), or, when the outputs do not have as many rows,
//! one object of the outputs by name. `:explain` answers the same with the attributions
//! (the `attributions` output) as `explanations`, one row per instance.

use serde_json::{Map, Value};

use super::codec::{Answering, Codec, Decoding, takes_bodies};
use super::request::{InferRequest, decode_request};
use super::response::Encoded;
use crate::error::{Error, Result};
use crate::event::{BodyProtocol, Event, EventData, JsonBody};
use crate::step::Platform;
use crate::tensor::Tensor;

/// The output an explanation adds to a model's outputs ([`crate::step`]'s explain).
const ATTRIBUTIONS: &str = "attributions";

/// KServe's v1 bodies; `explain` for `:explain` (the answer carries `explanations`).
pub struct KserveV1 {
    pub explain: bool,
}

/// Where a KServe v1 body's instances are: its `instances`, else its `inputs`; a 400 in
/// KServe's words for a body that is not a JSON object with either as a list.
pub fn instances_key(value: &Value) -> Result<&'static str> {
    let Value::Object(map) = value else {
        return Err(Error::bad_request(
            "Unrecognized request format: the body must be a JSON object with \"instances\" (or \"inputs\")",
        ));
    };
    let key = match (map.get("instances"), map.get("inputs")) {
        (Some(_), _) => "instances",
        (None, Some(_)) => "inputs",
        (None, None) => {
            return Err(Error::bad_request(
                "Expected \"instances\" or \"inputs\" in the request body",
            ));
        }
    };
    if !map[key].is_array() {
        return Err(Error::bad_request(format!(
            "Expected \"{key}\" to be a list"
        )));
    }
    Ok(key)
}

/// A KServe v1 body's JSON; a 400 in KServe's words for one that is not JSON.
fn parse(body: &[u8]) -> Result<Value> {
    serde_json::from_slice(body)
        .map_err(|e| Error::bad_request(format!("Unrecognized request format: {e}")))
}

/// MLRun's body for a KServe v1 body, as an MLRun class (or flow step) reads it:
/// `{"inputs": instances}`; a 400 in KServe's words for a body without instances.
pub fn mlrun_body(value: &Value) -> Result<Value> {
    let key = instances_key(value)?;
    let mut body = Map::new();
    body.insert("inputs".into(), value[key].clone());
    Ok(Value::Object(body))
}

/// A request that is its KServe body alone, for a class that reads it as it is.
fn body_only(value: Value) -> InferRequest {
    InferRequest {
        event: Event::from(EventData {
            body: Some(JsonBody::request(value, BodyProtocol::Kserve)),
            ..EventData::default()
        }),
        outputs: Vec::new(),
        binary_output: false,
    }
}

impl Codec for KserveV1 {
    fn name(&self) -> &'static str {
        "kserve-v1"
    }

    /// The instances become the model's one input tensor, and the body is kept as it came
    /// (a KServe class gets it as it is; an MLRun class reads its instances as MLRun's rows).
    /// A Python model that cannot take them as a tensor gets the body alone; a Python model
    /// addressed by name, a body without instances too (a KServe class reads any JSON); any
    /// other model a 400 saying why.
    fn decode(&self, body: &[u8], at: &Decoding<'_>) -> Result<InferRequest> {
        let value = parse(body)?;
        let info = (at.find)(at.model.unwrap_or(at.graph), at.version)?;
        let key = match instances_key(&value) {
            Ok(key) => key,
            Err(_) if info.platform == Platform::Python => return Ok(body_only(value)),
            Err(e) => return Err(e),
        };
        let decoded = super::mlrun::oip_of_rows(&value[key], None, &info.name, &info.inputs)
            .and_then(|oip| decode_request(&oip, None));
        match decoded {
            Ok(mut request) => {
                request.event.body = Some(JsonBody::request(value, BodyProtocol::Kserve));
                Ok(request)
            }
            Err(_) if takes_bodies(info) => Ok(body_only(value)),
            Err(mut e) => {
                e.message = format!("\"{key}\": {}", e.message);
                Err(e)
            }
        }
    }

    /// `{"predictions": ...}` (with `explanations` for `:explain`). A body a KServe class
    /// answered with is the answer as it is; another Python class's is its `predictions`
    /// when it has them, an MLRun answer's `outputs`, else the body itself.
    fn encode(&self, done: &Event, _answer: &Answering<'_>) -> Result<Encoded> {
        let mut out = Map::new();
        if let Some(body) = done.answered_body().filter(|_| done.tensors.is_empty()) {
            let kserve = done
                .body
                .as_ref()
                .is_some_and(|b| b.protocol == BodyProtocol::Kserve);
            match body {
                // A KServe class's answer, as KServe's server sends it.
                any if kserve => {
                    return Ok(Encoded {
                        body: serde_json::to_vec(any).expect("JSON"),
                        json_len: None,
                    });
                }
                Value::Object(m) if m.contains_key("predictions") => {
                    out = m.clone();
                }
                Value::Object(m) if m.contains_key("outputs") => {
                    out.insert("predictions".into(), m["outputs"].clone());
                }
                other => {
                    out.insert("predictions".into(), other.clone());
                }
            }
        } else {
            let (explained, outputs): (Vec<&Tensor>, Vec<&Tensor>) = done
                .tensors
                .iter()
                .partition(|t| self.explain && t.name == ATTRIBUTIONS);
            out.insert("predictions".into(), predictions(&outputs)?);
            if let [attributions] = explained.as_slice() {
                out.insert("explanations".into(), rows(attributions)?);
            }
        }
        Ok(Encoded {
            body: serde_json::to_vec(&Value::Object(out)).expect("JSON"),
            json_len: None,
        })
    }
}

/// A tensor's rows (its data nested by its shape; a scalar as itself).
fn rows(t: &Tensor) -> Result<Value> {
    let flat = super::mlrun::json_elements(t, "KServe's v1 JSON", "ask for OIP (/v2)")?;
    Ok(super::mlrun::nest(&mut flat.into_iter(), &t.shape))
}

/// The outputs as `predictions`: one output's rows; several, an object per row when they
/// all have as many rows, else one object of them by name.
fn predictions(outputs: &[&Tensor]) -> Result<Value> {
    if let [one] = outputs {
        return rows(one);
    }
    let nested: Vec<(&str, Value)> = outputs
        .iter()
        .map(|t| Ok((t.name.as_str(), rows(t)?)))
        .collect::<Result<_>>()?;
    let count = |v: &Value| v.as_array().map(Vec::len);
    let n = nested.first().and_then(|(_, v)| count(v));
    if n.is_none() || nested.iter().any(|(_, v)| count(v) != n) {
        return Ok(Value::Object(
            nested.into_iter().map(|(k, v)| (k.to_owned(), v)).collect(),
        ));
    }
    let mut per_row: Vec<Map<String, Value>> = vec![Map::new(); n.unwrap_or(0)];
    for (name, value) in nested {
        let Value::Array(items) = value else {
            unreachable!("counted as a list")
        };
        for (row, item) in per_row.iter_mut().zip(items) {
            row.insert(name.to_owned(), item);
        }
    }
    Ok(Value::Array(
        per_row.into_iter().map(Value::Object).collect(),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tensor::TensorData;

    #[test]
    fn bodies_without_instances_are_refused_in_kserves_words() {
        let instances = |b: &[u8]| parse(b).and_then(|v| instances_key(&v).map(|k| (v, k)));
        let e = instances(b"{not json").unwrap_err();
        assert!(
            e.message.starts_with("Unrecognized request format:"),
            "{}",
            e.message
        );
        let e = instances(br#"{"data": [1]}"#).unwrap_err();
        assert_eq!(
            e.message,
            "Expected \"instances\" or \"inputs\" in the request body"
        );
        let e = instances(br#"{"instances": 3}"#).unwrap_err();
        assert_eq!(e.message, "Expected \"instances\" to be a list");
        let e = instances(b"[1, 2]").unwrap_err();
        assert!(e.message.contains("JSON object"), "{}", e.message);
        assert_eq!(instances(br#"{"inputs": [[1]]}"#).unwrap().1, "inputs");
        assert_eq!(
            instances(br#"{"instances": [], "inputs": [[1]]}"#)
                .unwrap()
                .1,
            "instances"
        );
    }

    #[test]
    fn an_mlrun_class_reads_a_kserve_bodys_instances_as_its_rows() {
        let body = serde_json::json!({"instances": [[1, 2]], "inputs": [[3]], "extra": 1});
        assert_eq!(
            mlrun_body(&body).unwrap(),
            serde_json::json!({"inputs": [[1, 2]]})
        );
        let e = mlrun_body(&serde_json::json!({"text": "hi"})).unwrap_err();
        assert_eq!(
            e.message,
            "Expected \"instances\" or \"inputs\" in the request body"
        );
    }

    #[test]
    fn several_outputs_answer_an_object_per_instance() {
        let label = Tensor::new("label", vec![2], TensorData::Int64(vec![0, 2])).unwrap();
        let p = Tensor::new("p", vec![2, 2], TensorData::Fp32(vec![1.0, 0.0, 0.5, 0.5])).unwrap();
        let v = predictions(&[&label, &p]).unwrap();
        assert_eq!(
            v,
            serde_json::json!([{"label": 0, "p": [1.0, 0.0]}, {"label": 2, "p": [0.5, 0.5]}])
        );
        assert_eq!(
            predictions(&[&p]).unwrap(),
            serde_json::json!([[1.0, 0.0], [0.5, 0.5]])
        );
        // Not as many rows: the outputs by name.
        let one = Tensor::new("n", vec![1], TensorData::Int64(vec![7])).unwrap();
        let v = predictions(&[&label, &one]).unwrap();
        assert_eq!(v, serde_json::json!({"label": [0, 2], "n": [7]}));
    }
}
