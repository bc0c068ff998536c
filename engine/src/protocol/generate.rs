//! The generate extension (Triton's, KServe's and MLServer's `/generate` and
//! `/generate_stream`): a flat JSON request whose top-level fields are the model's inputs by
//! name (`text_input`), besides `id` and `parameters`, and a flat JSON answer of the outputs
//! by name (`text_output`), with `model_name` and `model_version`. Its [`Generate`] codec
//! carries the sink of a streamed answer's pieces into the event.

use serde_json::{Map, Value, json};

use super::codec::{Answering, Codec, Decoding};
use super::request::{InferRequest, decode_request};
use super::response::Encoded;
use crate::error::{Error, Result};
use crate::event::{Chunks, Event};
use crate::step::ModelInfo;
use crate::tensor::{DataType, Tensor};

/// The generate extension's bodies; `chunks`: where a streamed answer's pieces go
/// (`/generate_stream`).
#[derive(Default)]
pub struct Generate {
    pub chunks: Option<Chunks>,
}

impl Codec for Generate {
    fn name(&self) -> &'static str {
        "generate"
    }

    fn decode(&self, body: &[u8], at: &Decoding<'_>) -> Result<InferRequest> {
        let value: Value = serde_json::from_slice(body)
            .map_err(|e| Error::bad_request(format!("malformed generate request: {e}")))?;
        let Value::Object(fields) = value else {
            return Err(Error::bad_request(
                "a generate request is a JSON object: {\"text_input\": \"...\", \"parameters\": {...}}",
            ));
        };
        let info = (at.find)(at.model.unwrap_or(at.graph), at.version)?;
        let oip = to_oip(fields, info)?;
        let mut request = decode_request(&serde_json::to_vec(&oip).expect("JSON"), None)?;
        request.event.chunks = self.chunks.clone();
        Ok(request)
    }

    fn encode(&self, done: &Event, answer: &Answering<'_>) -> Result<Encoded> {
        let body = answer_of(&done.id, answer.model, answer.version, &done.tensors)?;
        Ok(Encoded {
            body: serde_json::to_vec(&body).expect("JSON"),
            json_len: None,
        })
    }
}

/// Whether a body posted to `/generate` or `/generate_stream` is an OIP request rather than
/// the generate extension's flat fields: MLServer's clients post their `InferenceRequest`s
/// there (`inputs`, a list of tensors with a `name` and a `datatype`), and are answered in
/// the OIP's shape.
pub fn is_oip(body: &[u8]) -> bool {
    #[derive(serde::Deserialize)]
    struct Tensor {
        #[allow(dead_code)]
        name: String,
        #[allow(dead_code)]
        datatype: String,
    }
    #[derive(serde::Deserialize)]
    struct Request {
        inputs: Vec<Tensor>,
    }
    serde_json::from_slice::<Request>(body).is_ok_and(|r| !r.inputs.is_empty())
}

/// The flat request as an OIP request: each field that names one of the model's inputs (any
/// field, for a model that declares none) is that input, the rest are parameters, as Triton
/// passes them.
fn to_oip(fields: Map<String, Value>, info: &ModelInfo) -> Result<Value> {
    let mut parameters = Map::new();
    let mut inputs = Vec::new();
    let mut id = None;
    for (name, value) in fields {
        match name.as_str() {
            "id" => match value {
                Value::String(s) => id = Some(s),
                other => {
                    return Err(Error::bad_request(format!(
                        "a generate request's `id` is a string, not {other}"
                    )));
                }
            },
            "parameters" => match value {
                Value::Object(p) => parameters.extend(p),
                Value::Null => {}
                other => {
                    return Err(Error::bad_request(format!(
                        "a generate request's `parameters` is an object, not {other}"
                    )));
                }
            },
            _ => {
                let declared = info.inputs.iter().find(|i| i.name == name);
                if declared.is_none() && !info.inputs.is_empty() {
                    parameters.insert(name, value);
                    continue;
                }
                inputs.push(input(
                    &name,
                    value,
                    declared.map(|d| (d.datatype, &d.shape[..])),
                )?);
            }
        }
    }
    if inputs.is_empty() {
        let takes: Vec<String> = info
            .inputs
            .iter()
            .map(|i| format!("`{}` {}", i.name, i.datatype))
            .collect();
        return Err(Error::bad_request(format!(
            "a generate request for `{}` names none of its inputs{}: send them as fields \
             (`{{\"text_input\": \"...\"}}`)",
            info.name,
            if takes.is_empty() {
                String::new()
            } else {
                format!(" ({})", takes.join(", "))
            }
        )));
    }
    let mut oip = json!({ "inputs": inputs });
    if let Some(id) = id {
        oip["id"] = id.into();
    }
    if !parameters.is_empty() {
        oip["parameters"] = parameters.into();
    }
    Ok(oip)
}

/// One field as an OIP input: its shape from its nesting (a scalar is `[1]`), with a leading 1
/// when the model's input has one more dimension (its batch); its datatype the declared one,
/// else the JSON's (text BYTES, whole numbers INT64, others FP64, booleans BOOL).
fn input(name: &str, value: Value, declared: Option<(DataType, &[i64])>) -> Result<Value> {
    let mut shape = Vec::new();
    let mut leaf = &value;
    while let Value::Array(items) = leaf {
        shape.push(items.len());
        match items.first() {
            Some(first) => leaf = first,
            None => break,
        }
    }
    if shape.is_empty() {
        shape.push(1);
    }
    let datatype = match declared {
        Some((d, _)) => d,
        None => match leaf {
            Value::String(_) => DataType::Bytes,
            Value::Bool(_) => DataType::Bool,
            Value::Number(n) if n.is_i64() || n.is_u64() => DataType::Int64,
            Value::Number(_) => DataType::Fp64,
            _ => {
                return Err(Error::bad_request(format!(
                    "generate field `{name}` is {value}, which is no tensor: send text, numbers, booleans or lists of them"
                )));
            }
        },
    };
    if let Some((_, dims)) = declared
        && dims.len() == shape.len() + 1
    {
        shape.insert(0, 1);
    }
    Ok(json!({ "name": name, "datatype": datatype.as_str(), "shape": shape, "data": value }))
}

/// The flat answer: `id` (none when empty), `model_name`, `model_version`, and each output
/// by name: one element as itself (BYTES as text), more as a flat list.
pub fn answer_of(
    id: &str,
    model: &str,
    version: Option<&str>,
    outputs: &[Tensor],
) -> Result<Value> {
    let mut body = Map::new();
    if !id.is_empty() {
        body.insert("id".into(), id.into());
    }
    body.insert("model_name".into(), model.into());
    body.insert("model_version".into(), version.unwrap_or("1").into());
    for t in outputs {
        let mut items = super::mlrun::json_elements(
            t,
            "the generate extension's JSON",
            "call /infer, whose binary extension carries any bytes",
        )?;
        let value = if items.len() == 1 {
            items.pop().expect("one")
        } else {
            Value::Array(items)
        };
        body.insert(t.name.clone(), value);
    }
    Ok(Value::Object(body))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tensor::TensorMeta;

    fn decode(body: &str, inputs: Vec<TensorMeta>) -> Result<InferRequest> {
        let info = super::super::test_model(inputs, crate::step::Platform::Python);
        let find = |_: &str, _: Option<&str>| Ok(&info);
        let at = Decoding {
            json_len: None,
            model: Some("m"),
            version: None,
            graph: "g",
            find: &find,
        };
        Generate::default().decode(body.as_bytes(), &at)
    }

    #[test]
    fn fields_are_inputs_by_name_and_the_rest_parameters() {
        let text = TensorMeta::new("text_input", DataType::Bytes, vec![-1, 1]);
        let r = decode(
            r#"{"id": "42", "text_input": "hi", "max_tokens": 3, "parameters": {"temperature": 0}}"#,
            vec![text],
        )
        .unwrap();
        let t = &r.event.tensors[0];
        assert_eq!((t.name.as_str(), &t.shape[..]), ("text_input", &[1, 1][..]));
        assert_eq!(r.event.id, "42");
        assert_eq!(r.event.parameters["max_tokens"], 3);
        assert_eq!(r.event.parameters["temperature"], 0);
        // A model that declares no inputs takes every field, typed by its JSON.
        let r = decode(r#"{"text_input": "hi", "n": [1, 2]}"#, Vec::new()).unwrap();
        let n = r.event.tensors.iter().find(|t| t.name == "n").unwrap();
        assert_eq!((n.datatype(), &n.shape[..]), (DataType::Int64, &[2][..]));
        for (body, says) in [
            ("[1]", "is a JSON object"),
            (r#"{"parameters": {}}"#, "names none of its inputs"),
            (r#"{"text_input": {"a": 1}}"#, "which is no tensor"),
            (r#"{"text_input": "a", "id": 3}"#, "`id` is a string"),
        ] {
            let e = decode(body, Vec::new()).expect_err(body);
            assert!(e.message.contains(says), "{body}: {}", e.message);
        }
    }

    #[test]
    fn the_answer_is_flat() {
        let out = Tensor::new(
            "text_output",
            vec![1],
            crate::tensor::TensorData::Bytes(vec![b"hello".to_vec()]),
        )
        .unwrap();
        let v = answer_of("7", "m", None, &[out]).unwrap();
        assert_eq!(
            v,
            json!({"id": "7", "model_name": "m", "model_version": "1", "text_output": "hello"})
        );
    }
}
