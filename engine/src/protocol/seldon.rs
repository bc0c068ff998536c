//! Seldon Core's v1 protocol bodies (the `SeldonMessage` in JSON): `data` with `ndarray` or
//! `tensor` (`{shape, values}`) and `names`, or `strData`, `jsonData`, `binData` (base64), with
//! `meta` (`puid`, `tags`, `routing`, `requestPath`, `metrics`).
//!
//! The message is kept as the request's body for classes written for Seldon (they get it as
//! Seldon's wrapper hands it: `predict_raw(msg)`, or `predict(X, names, meta)`), and, when it
//! is numbers for a model with one input, also decoded into that input (ONNX models need it).
//! The answer is the class's message as it returned it, or the model's outputs as Seldon's
//! wrapper shapes a prediction: `data.tensor` when the request sent a tensor, else
//! `data.ndarray`, with `names` `t:0`, `t:1`, ... for a 2-D output; `meta.puid` the request's
//! id (what feedback names).

use serde_json::{Map, Value, json};

use super::codec::{Answering, Codec, Decoding};
use super::request::{InferRequest, decode_request};
use super::response::Encoded;
use crate::error::{Error, ErrorKind, Result};
use crate::event::{BodyProtocol, Event, EventData, JsonBody};
use crate::step::{ModelInfo, Platform};
use crate::tensor::TensorMeta;

/// Seldon's `SeldonMessage` bodies.
pub struct SeldonMessage;

impl Codec for SeldonMessage {
    fn name(&self) -> &'static str {
        "seldon"
    }

    fn decode(&self, body: &[u8], at: &Decoding<'_>) -> Result<InferRequest> {
        let message: Map<String, Value> = match serde_json::from_slice(body) {
            Ok(Value::Object(m)) => m,
            Ok(_) => return Err(Error::bad_request("a SeldonMessage is a JSON object")),
            Err(e) => return Err(Error::bad_request(format!("malformed JSON body: {e}"))),
        };
        if !["data", "jsonData", "strData", "binData"]
            .iter()
            .any(|k| message.contains_key(*k))
        {
            return Err(Error::bad_request(
                "a SeldonMessage needs one of `data` (`ndarray` or `tensor`), `jsonData`, `strData` or `binData`",
            ));
        }
        if let Some(kind) = ["tftensor"]
            .iter()
            .find(|k| message.get("data").and_then(|d| d.get(**k)).is_some())
        {
            return Err(Error::new(
                ErrorKind::NotImplemented,
                format!(
                    "`data.{kind}` (TensorFlow's TensorProto) is not served; send `data.ndarray` or `data.tensor`"
                ),
            ));
        }
        let info = (at.find)(at.model.unwrap_or(at.graph), at.version)?;
        let id = message
            .get("meta")
            .and_then(|m| m.get("puid"))
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned();
        let value = Value::Object(message);
        let mut request = match tensors(&value, &info.name, &info.inputs) {
            Ok(request) => request,
            Err(_) if takes_bodies(info) => InferRequest {
                event: Event::from(EventData::default()),
                outputs: Vec::new(),
                binary_output: false,
            },
            Err(e) => return Err(e),
        };
        request.event.id = id;
        request.event.body = Some(JsonBody::request(value, BodyProtocol::Seldon));
        Ok(request)
    }

    fn encode(&self, done: &Event, _answer: &Answering<'_>) -> Result<Encoded> {
        let mut message = match done.answered_body().filter(|_| done.tensors.is_empty()) {
            Some(body) => body.clone(),
            None => from_tensors(done)?,
        };
        if let Value::Object(m) = &mut message {
            let meta = m.entry("meta").or_insert_with(|| json!({}));
            if let Value::Object(meta) = meta {
                meta.entry("puid").or_insert_with(|| done.id.clone().into());
                // Seldon's `routing`: each router's index of its routes (an int32 in its proto).
                if !done.routing.is_empty() {
                    let routing: Map<String, Value> = done
                        .routing
                        .iter()
                        .map(|(router, index)| (router.clone(), (*index).into()))
                        .collect();
                    meta.entry("routing").or_insert(Value::Object(routing));
                }
                if let Some(tags) = done.notes.get("tags") {
                    meta.entry("tags").or_insert_with(|| tags.clone());
                }
            }
        }
        Ok(Encoded {
            body: serde_json::to_vec(&message).expect("JSON"),
            json_len: None,
        })
    }
}

/// Whether what `info` names may be handed the message without tensors.
fn takes_bodies(info: &ModelInfo) -> bool {
    info.platform == Platform::Python || info.inputs.is_empty()
}

/// The model's one input from `data.ndarray` or `data.tensor`.
pub(crate) fn tensors(message: &Value, model: &str, inputs: &[TensorMeta]) -> Result<InferRequest> {
    let data = message.get("data").ok_or_else(|| {
        Error::bad_request("no `data` (`ndarray` or `tensor`) for the model's input tensor")
    })?;
    if let Some(ndarray) = data.get("ndarray") {
        let oip = super::mlrun::oip_of_rows(ndarray, None, model, inputs)?;
        return decode_request(&oip, None);
    }
    if let Some(tensor) = data.get("tensor") {
        let [input] = inputs else {
            return Err(Error::bad_request(format!(
                "`data.tensor` needs a model with one input; `{model}` takes {}",
                inputs.len()
            )));
        };
        let oip = json!({"inputs": [{
            "name": input.name,
            "datatype": input.datatype,
            "shape": tensor.get("shape").cloned().unwrap_or(Value::Null),
            "data": tensor.get("values").cloned().unwrap_or(Value::Null),
        }]});
        return decode_request(&serde_json::to_vec(&oip).expect("JSON"), None);
    }
    Err(Error::bad_request("`data` needs `ndarray` or `tensor`"))
}

/// The SeldonMessage a Seldon ROUTER is handed for a request: its body, or its tensors as one
/// (an OIP request).
pub fn request_message(event: &Event) -> Result<Value> {
    match &event.body {
        Some(body) => Ok(body.value.clone()),
        None => from_tensors(event),
    }
}

/// A member's answer as the SeldonMessage a Seldon COMBINER is handed: the body it answered
/// with (a Seldon class's), else its output tensors as Seldon's wrapper would answer them.
pub fn answer_message(event: &Event) -> Result<Value> {
    match event.answered_body() {
        Some(body) => Ok(body.clone()),
        None => from_tensors(event),
    }
}

/// The route index a Seldon ROUTER answered: `data.ndarray[0][0]` (or the first value of
/// `data.tensor`), an integer.
pub fn route_of(answer: &Value) -> Option<i64> {
    let data = answer.get("data")?;
    let first = match (data.get("ndarray"), data.get("tensor")) {
        (Some(nd), _) => {
            let mut v = nd;
            while let Value::Array(items) = v {
                v = items.first()?;
            }
            v.clone()
        }
        (None, Some(t)) => t.get("values")?.get(0)?.clone(),
        _ => return None,
    };
    first.as_i64().or_else(|| {
        first
            .as_f64()
            .filter(|f| f.fract() == 0.0)
            .map(|f| f as i64)
    })
}

/// A model's outputs as Seldon's wrapper answers a prediction: the one output as
/// `data.ndarray` (`data.tensor` when the request sent one), several as `jsonData` by name.
fn from_tensors(done: &Event) -> Result<Value> {
    let as_tensor = done
        .body
        .as_ref()
        .and_then(|b| b.value.get("data"))
        .is_some_and(|d| d.get("tensor").is_some());
    match done.tensors.as_slice() {
        [one] => {
            let names: Vec<String> = match one.shape.as_slice() {
                [_, n, ..] => (0..*n).map(|i| format!("t:{i}")).collect(),
                _ => Vec::new(),
            };
            let nested = super::mlrun::nested(one)?;
            let data = if as_tensor && one.datatype() != crate::tensor::DataType::Bytes {
                let values = super::mlrun::nested(&flat(one))?;
                json!({"names": names, "tensor": {"shape": one.shape, "values": values}})
            } else {
                json!({"names": names, "ndarray": nested})
            };
            Ok(json!({ "data": data }))
        }
        many => {
            let outputs = many
                .iter()
                .map(|t| Ok((t.name.clone(), super::mlrun::nested(t)?)))
                .collect::<Result<Map<String, Value>>>()?;
            Ok(json!({ "jsonData": outputs }))
        }
    }
}

/// A tensor's data along one axis (what `tensor.values` holds).
fn flat(t: &crate::tensor::Tensor) -> crate::tensor::Tensor {
    let mut t = t.clone();
    t.shape = vec![t.shape.iter().product()];
    t
}

/// An error in the shape Seldon's gateway answers them: `{"status": {"code", "info",
/// "reason", "status": "FAILURE"}}`, `code` the HTTP status.
pub fn error_body(status: u16, kind: ErrorKind, info: &str) -> Value {
    let reason = match kind {
        ErrorKind::BadRequest | ErrorKind::Unprocessable => "MICROSERVICE_BAD_DATA",
        ErrorKind::NotFound => "NOT_FOUND",
        ErrorKind::Overloaded | ErrorKind::Unavailable => "UNAVAILABLE",
        ErrorKind::Timeout => "TIMEOUT",
        ErrorKind::NotImplemented => "NOT_IMPLEMENTED",
        _ => "MICROSERVICE_INTERNAL_ERROR",
    };
    json!({"status": {"code": status, "info": info, "reason": reason, "status": "FAILURE"}})
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tensor::{DataType, Tensor, TensorData};

    use super::super::test_model as model;

    fn decode(body: &str, info: &ModelInfo) -> Result<InferRequest> {
        let find = |_: &str, _: Option<&str>| Ok(info);
        SeldonMessage.decode(
            body.as_bytes(),
            &Decoding {
                json_len: None,
                model: None,
                version: None,
                graph: "m",
                find: &find,
            },
        )
    }

    #[test]
    fn ndarray_and_tensor_become_the_models_input_and_the_message_is_kept() {
        let onnx = model(
            vec![TensorMeta::new("input", DataType::Fp32, vec![-1, 2])],
            Platform::Onnx,
        );
        let r = decode(r#"{"data": {"names": ["a", "b"], "ndarray": [[1, 2], [3, 4]]}, "meta": {"puid": "p1"}}"#, &onnx).unwrap();
        assert_eq!(r.event.id, "p1");
        assert_eq!(r.event.tensors[0].shape, vec![2, 2]);
        assert!(r.event.body.is_some());
        let r = decode(
            r#"{"data": {"tensor": {"shape": [1, 2], "values": [1, 2]}}}"#,
            &onnx,
        )
        .unwrap();
        assert_eq!(r.event.tensors[0].shape, vec![1, 2]);
        // Text is no tensor for an ONNX model; a Python class gets the message alone.
        assert!(decode(r#"{"strData": "hello"}"#, &onnx).is_err());
        let py = model(Vec::new(), Platform::Python);
        let r = decode(r#"{"strData": "hello"}"#, &py).unwrap();
        assert!(r.event.tensors.is_empty());
        assert_eq!(r.event.body.as_ref().unwrap().value["strData"], "hello");
        assert!(decode(r#"{"nothing": 1}"#, &py).is_err());
        let e = decode(r#"{"data": {"tftensor": {}}}"#, &py).unwrap_err();
        assert_eq!(e.kind, ErrorKind::NotImplemented);
    }

    #[test]
    fn outputs_are_answered_as_seldons_wrapper_does() {
        let t = Tensor::new("p", vec![2, 2], TensorData::Fp32(vec![1.0, 2.0, 3.0, 4.0])).unwrap();
        let mut event = Event::new("r1", vec![t]);
        let answer = Answering {
            model: "m",
            version: None,
            outputs: &[],
            binary: false,
        };
        let v: Value =
            serde_json::from_slice(&SeldonMessage.encode(&event, &answer).unwrap().body).unwrap();
        assert_eq!(v["data"]["ndarray"], json!([[1.0, 2.0], [3.0, 4.0]]));
        assert_eq!(v["data"]["names"], json!(["t:0", "t:1"]));
        assert_eq!(v["meta"]["puid"], "r1");
        event.body = Some(JsonBody::request(
            json!({"data": {"tensor": {"shape": [2, 2], "values": [0, 0, 0, 0]}}}),
            BodyProtocol::Seldon,
        ));
        let v: Value =
            serde_json::from_slice(&SeldonMessage.encode(&event, &answer).unwrap().body).unwrap();
        assert_eq!(
            v["data"]["tensor"],
            json!({"shape": [2, 2], "values": [1.0, 2.0, 3.0, 4.0]})
        );
        // A class's answered message is the answer (it stands for the tensors).
        event.tensors.clear();
        event.body = Some(JsonBody {
            value: json!({"strData": "hi", "meta": {"puid": "mine"}}),
            answered: true,
            protocol: BodyProtocol::Seldon,
        });
        let v: Value =
            serde_json::from_slice(&SeldonMessage.encode(&event, &answer).unwrap().body).unwrap();
        assert_eq!(v, json!({"strData": "hi", "meta": {"puid": "mine"}}));
    }
}
