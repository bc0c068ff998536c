//! Clipper's query bodies (its query frontend's `POST /{app}/predict`): `{"input": x}` (one
//! query) or `{"input_batch": [x1, x2, ...]}` (several), optionally with `version`; answered
//! `{"query_id": N, "output": ..., "default": false}` per query, several as
//! `{"batch_predictions": [...]}`.
//!
//! The queries become the addressed model's one input tensor, one row each (its name and
//! datatype, as MLRun's rows do: [`super::mlrun::to_oip`]), then go through the OIP decoder
//! like any request. Each query's `output` is its row of the model's output: a number, a
//! string, or a list; a string that is JSON is answered as that JSON, as Clipper's frontend
//! parses its models' string outputs. Errors are `{"error": NAME, "cause": ...}`, Clipper's
//! two names being [`JSON_ERROR`] (the body) and [`QUERY_ERROR`] (the rest).

use std::sync::atomic::{AtomicU64, Ordering};

use serde::Serialize;
use serde_json::Value;

use super::codec::{Answering, Codec, Decoding};
use super::request::{InferRequest, decode_request};
use super::response::Encoded;
use crate::error::{Error, Result};
use crate::event::Event;
use crate::step::ModelInfo;
use crate::tensor::{DataType, Tensor, TensorMeta};

/// Clipper's error name for a body it cannot read.
pub const JSON_ERROR: &str = "Json error";
/// Clipper's error name for every other failure.
pub const QUERY_ERROR: &str = "Query processing error";
/// What a query body may be, in the notation of Clipper's error messages.
pub const SCHEMA: &str = r#"{"input" := [double] | [int] | [string] | [byte] | [float] | string} or {"input_batch" := [[double] | [int] | [byte] | [float] | string]}"#;
/// Clipper's `default_explanation` when the SLO passed before the model answered.
pub const SLO_EXPLANATION: &str =
    "Failed to retrieve a prediction response within the specified latency SLO";

/// A query body, read.
#[derive(Debug)]
pub struct Queries {
    /// One input per query: a list (a row), a string, or a number.
    pub inputs: Vec<Value>,
    /// The model version the body asks for (Clipper's `version`).
    pub version: Option<String>,
}

/// Reads a query body. `input` wins over `input_batch`, as in Clipper; the error names the
/// field that is wrong.
pub fn parse(body: &[u8]) -> Result<Queries> {
    let value: Value = serde_json::from_slice(body)
        .map_err(|e| Error::bad_request(format!("JSON parse error: {e}")))?;
    let Value::Object(mut body) = value else {
        return Err(Error::bad_request(format!(
            "the body is {}, not a JSON object",
            what(&value)
        )));
    };
    let version = match body.remove("version") {
        None | Some(Value::Null) => None,
        Some(Value::String(v)) => Some(v),
        Some(other) => {
            return Err(Error::bad_request(format!(
                "`version` must be a string, not {}",
                what(&other)
            )));
        }
    };
    let inputs = if let Some(x) = body.remove("input") {
        check_input("input", &x)?;
        vec![x]
    } else if let Some(batch) = body.remove("input_batch") {
        let Value::Array(items) = batch else {
            return Err(Error::bad_request(format!(
                "`input_batch` must be a list of inputs, not {}",
                what(&batch)
            )));
        };
        for (i, x) in items.iter().enumerate() {
            check_input(&format!("input_batch[{i}]"), x)?;
        }
        items
    } else {
        return Err(Error::bad_request(
            "JSON object does not have required keys input or input_batch",
        ));
    };
    Ok(Queries { inputs, version })
}

fn check_input(field: &str, x: &Value) -> Result<()> {
    match x {
        Value::Array(_) | Value::String(_) | Value::Number(_) => Ok(()),
        other => Err(Error::bad_request(format!(
            "`{field}` must be a list of numbers, a string or a number, not {}",
            what(other)
        ))),
    }
}

fn what(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "an object",
    }
}

/// A [`JSON_ERROR`]'s cause, as Clipper words it: the problem and the schema.
pub fn json_cause(problem: &str) -> String {
    format!("Error parsing JSON: {problem}. Expected JSON schema: {SCHEMA}")
}

/// The first of `n` fresh query ids: per process, increasing from 0, one per query.
pub fn query_ids(n: usize) -> u64 {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    NEXT.fetch_add(n as u64, Ordering::Relaxed)
}

/// One query's answer, its fields in Clipper's order.
#[derive(Serialize)]
struct Answer<'a> {
    query_id: u64,
    output: Value,
    default: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    default_explanation: Option<&'a str>,
}

/// The answer to queries numbered from `first_id`, one output each: the one query's object,
/// or (any other count) `{"batch_predictions": [...]}`, as Clipper's frontend answers.
/// `default`: the outputs are the app's default output, for this reason.
pub fn answer(first_id: u64, outputs: Vec<Value>, default: Option<&str>) -> Vec<u8> {
    #[derive(Serialize)]
    struct Batch<'a> {
        batch_predictions: Vec<Answer<'a>>,
    }
    let mut answers: Vec<Answer<'_>> = outputs
        .into_iter()
        .zip(first_id..)
        .map(|(output, query_id)| Answer {
            query_id,
            output,
            default: default.is_some(),
            default_explanation: default,
        })
        .collect();
    if answers.len() == 1 {
        serde_json::to_vec(&answers.remove(0))
    } else {
        serde_json::to_vec(&Batch {
            batch_predictions: answers,
        })
    }
    .expect("JSON")
}

/// An output given as text (a model's string, an app's default output), as Clipper answers
/// it: as the JSON it is, when it is JSON (`"1.5"` is the number 1.5), else as the string.
pub fn output_of_text(text: &str) -> Value {
    serde_json::from_str(text).unwrap_or_else(|_| Value::String(text.to_owned()))
}

/// Clipper's error body, `{"error": name, "cause": ...}` in that order.
pub fn error_body(name: &str, cause: &str) -> Vec<u8> {
    #[derive(Serialize)]
    struct Failure<'a> {
        error: &'a str,
        cause: &'a str,
    }
    serde_json::to_vec(&Failure { error: name, cause }).expect("JSON")
}

/// The codec of one Clipper request: how many queries it holds and the id of the first (the
/// transport reads the body first, to number its queries even when the model fails).
pub struct Clipper {
    pub queries: usize,
    pub first_id: u64,
    /// The app's input type is `bytes`: each query is base64 (Clipper's clients encode bytes
    /// so).
    pub base64: bool,
}

impl Codec for Clipper {
    fn name(&self) -> &'static str {
        "clipper"
    }

    fn decode(&self, body: &[u8], at: &Decoding<'_>) -> Result<InferRequest> {
        let queries = parse(body)?;
        let name = at.model.unwrap_or(at.graph);
        let info = (at.find)(name, at.version)?;
        let inferred;
        let info = match info.inputs.len() {
            1 => info,
            0 => {
                // A model that declares no inputs gets `input`, typed by the queries.
                let strings = queries.inputs.iter().any(Value::is_string);
                let (datatype, shape) = if strings {
                    (DataType::Bytes, vec![-1])
                } else {
                    (DataType::Fp64, vec![-1, -1])
                };
                inferred = ModelInfo {
                    inputs: vec![TensorMeta::new("input", datatype, shape)],
                    ..info.clone()
                };
                &inferred
            }
            n => {
                let names: Vec<String> = info
                    .inputs
                    .iter()
                    .map(|i| format!("`{}`", i.name))
                    .collect();
                return Err(Error::bad_request(format!(
                    "a Clipper query is one input, and `{}` takes {n} ({}): send it OIP tensors at /v2/models/{}/infer",
                    info.name,
                    names.join(", "),
                    info.name
                )));
            }
        };
        let rows = Value::Array(queries.inputs);
        let mut oip = super::mlrun::oip_of_rows(&rows, None, &info.name, &info.inputs)?;
        if self.base64 {
            let mut json: Value = serde_json::from_slice(&oip).expect("JSON we wrote");
            json["inputs"][0]["parameters"] = serde_json::json!({ "content_type": "base64" });
            oip = serde_json::to_vec(&json).expect("JSON");
        }
        decode_request(&oip, None).map_err(|e| {
            let input = &info.inputs[0];
            Error {
                message: format!(
                    "the queries do not fit `{}`'s input `{}` ({} {:?}): {}",
                    info.name,
                    input.name,
                    input.datatype,
                    input.shape,
                    in_queries(&e.message)
                ),
                ..e
            }
        })
    }

    fn encode(&self, done: &Event, _: &Answering<'_>) -> Result<Encoded> {
        Ok(Encoded {
            body: answer(self.first_id, outputs(done, self.queries)?, None),
            json_len: None,
        })
    }
}

/// An OIP decoding message about the request this codec wrote, as a message about the
/// queries: without the tensor's `data` field and the position in JSON the client never saw.
fn in_queries(message: &str) -> &str {
    let message = match message.find("`data`: ") {
        Some(at) => &message[at + "`data`: ".len()..],
        None => message,
    };
    match message.rfind(" at line ") {
        Some(at) if message[at..].contains(" column ") => &message[..at],
        _ => message,
    }
}

/// Each query's output: its row of the one output, or, when the model gives several, an
/// object of their rows by name.
pub fn outputs(done: &Event, queries: usize) -> Result<Vec<Value>> {
    let per_output = done
        .tensors
        .iter()
        .map(|t| rows(t, queries))
        .collect::<Result<Vec<_>>>()?;
    Ok((0..queries)
        .map(|i| match per_output.as_slice() {
            [] => Value::Null,
            [one] => one[i].clone(),
            _ => Value::Object(
                done.tensors
                    .iter()
                    .zip(&per_output)
                    .map(|(t, rows)| (t.name.clone(), rows[i].clone()))
                    .collect(),
            ),
        })
        .collect())
}

/// A tensor's rows, one per query: a row of one element is that element (a string as
/// [`output_of_text`] reads it), any other row a list nested by the rest of the shape. A
/// tensor whose first dimension is not the number of queries is the one query's whole
/// answer (with one query), else an error.
fn rows(t: &Tensor, queries: usize) -> Result<Vec<Value>> {
    let flat = super::mlrun::json_elements(t, "a Clipper answer", "ask /v2/models/{m}/infer")?;
    let row_shape: &[usize] = match t.shape.split_first() {
        Some((&n, rest)) if n == queries => rest,
        _ if queries == 1 => &t.shape,
        _ => {
            return Err(Error::internal(format!(
                "output `{}` has shape {:?}, which does not give one answer for each of the {queries} queries",
                t.name, t.shape
            )));
        }
    };
    let size: usize = row_shape.iter().product();
    let mut flat = flat.into_iter();
    Ok((0..queries)
        .map(|_| {
            if size == 1 {
                match flat.next().unwrap_or(Value::Null) {
                    Value::String(s) => output_of_text(&s),
                    v => v,
                }
            } else {
                super::mlrun::nest(&mut flat, row_shape)
            }
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tensor::TensorData;

    fn model(inputs: Vec<TensorMeta>) -> ModelInfo {
        super::super::test_model(inputs, crate::step::Platform::Custom)
    }

    fn decode(codec: &Clipper, info: &ModelInfo, body: &str) -> Result<InferRequest> {
        let find = |_: &str, _: Option<&str>| Ok(info);
        let at = Decoding {
            json_len: None,
            model: Some("m"),
            version: None,
            graph: "g",
            find: &find,
        };
        codec.decode(body.as_bytes(), &at)
    }

    const ONE: Clipper = Clipper {
        queries: 1,
        first_id: 7,
        base64: false,
    };

    #[test]
    fn queries_are_read_and_bad_bodies_name_the_field() {
        let q = parse(br#"{"input": [1.0, 2.0]}"#).unwrap();
        assert_eq!(q.inputs, vec![serde_json::json!([1.0, 2.0])]);
        let q = parse(br#"{"input_batch": [[1], [2], [3]], "version": "2"}"#).unwrap();
        assert_eq!((q.inputs.len(), q.version.as_deref()), (3, Some("2")));
        // `input` wins, as in Clipper.
        assert_eq!(
            parse(br#"{"input": "a", "input_batch": ["b", "c"]}"#)
                .unwrap()
                .inputs
                .len(),
            1
        );
        for (body, want) in [
            ("{", "JSON parse error"),
            ("[1]", "the body is a list, not a JSON object"),
            (r#"{"inputs": [1]}"#, "required keys input or input_batch"),
            (
                r#"{"input": null}"#,
                "`input` must be a list of numbers, a string or a number, not null",
            ),
            (r#"{"input_batch": [1, {}]}"#, "`input_batch[1]` must be"),
            (
                r#"{"input_batch": "x"}"#,
                "`input_batch` must be a list of inputs, not a string",
            ),
            (
                r#"{"input": [1], "version": 2}"#,
                "`version` must be a string",
            ),
        ] {
            let e = parse(body.as_bytes()).unwrap_err();
            assert!(e.message.contains(want), "{body}: {}", e.message);
        }
    }

    #[test]
    fn queries_become_rows_of_the_models_one_input() {
        let m = model(vec![TensorMeta::new("x", DataType::Fp32, vec![-1, 2])]);
        let codec = Clipper { queries: 3, ..ONE };
        let r = decode(&codec, &m, r#"{"input_batch": [[1, 2], [3, 4], [5, 6]]}"#).unwrap();
        let t = &r.event.tensors[0];
        assert_eq!((t.name.as_str(), t.shape.as_slice()), ("x", &[3, 2][..]));
        assert_eq!(t.data, TensorData::Fp32(vec![1.0, 2.0, 3.0, 4.0, 5.0, 6.0]));
        let s = model(vec![TensorMeta::new("text", DataType::Bytes, vec![-1])]);
        let r = decode(&ONE, &s, r#"{"input": "hi"}"#).unwrap();
        assert_eq!(
            r.event.tensors[0].data,
            TensorData::Bytes(vec![b"hi".to_vec()])
        );
        // `bytes` apps' queries are base64.
        let b64 = Clipper {
            base64: true,
            ..ONE
        };
        let r = decode(&b64, &s, r#"{"input": "AAH/"}"#).unwrap();
        assert_eq!(
            r.event.tensors[0].data,
            TensorData::Bytes(vec![vec![0, 1, 255]])
        );
        // A model declaring no input gets `input`.
        let r = decode(&ONE, &model(vec![]), r#"{"input": [1, 2]}"#).unwrap();
        assert_eq!(r.event.tensors[0].name, "input");
        let two = model(vec![
            TensorMeta::new("a", DataType::Fp32, vec![-1]),
            TensorMeta::new("b", DataType::Fp32, vec![-1]),
        ]);
        let e = decode(&ONE, &two, r#"{"input": [1]}"#).unwrap_err();
        assert!(e.message.contains("takes 2 (`a`, `b`)"), "{}", e.message);
        // Data that does not fit is said of the queries, not of the OIP request they became.
        let e = decode(&ONE, &m, r#"{"input": [1, "x"]}"#).unwrap_err();
        assert_eq!(
            e.message,
            "the queries do not fit `m`'s input `x` (FP32 [-1, 2]): element 1 is \"x\", which is not one of FP32 numbers"
        );
    }

    #[test]
    fn answers_have_clippers_shape() {
        let label = Tensor::new("label", vec![2], TensorData::Int64(vec![0, 2])).unwrap();
        let probs =
            Tensor::new("p", vec![2, 2], TensorData::Fp32(vec![0.5, 0.5, 1.0, 0.0])).unwrap();
        let done = Event::new("r", vec![label.clone()]);
        let body = Clipper { queries: 2, ..ONE }.encode(
            &done,
            &Answering {
                model: "m",
                version: None,
                outputs: &[],
                binary: false,
            },
        );
        assert_eq!(
            String::from_utf8(body.unwrap().body).unwrap(),
            r#"{"batch_predictions":[{"query_id":7,"output":0,"default":false},{"query_id":8,"output":2,"default":false}]}"#
        );
        let both = Event::new("r", vec![label, probs]);
        assert_eq!(
            outputs(&both, 2).unwrap()[1],
            serde_json::json!({"label": 2, "p": [1.0, 0.0]})
        );
        // Strings that are JSON are that JSON; others stay strings. One query: its object.
        let text = Tensor::new("o", vec![1], TensorData::Bytes(vec![b"6.5".to_vec()])).unwrap();
        assert_eq!(
            outputs(&Event::new("r", vec![text]), 1).unwrap(),
            [serde_json::json!(6.5)]
        );
        let text = Tensor::new("o", vec![1], TensorData::Bytes(vec![b"HI!".to_vec()])).unwrap();
        assert_eq!(
            outputs(&Event::new("r", vec![text]), 1).unwrap(),
            [serde_json::json!("HI!")]
        );
        assert_eq!(
            String::from_utf8(answer(3, vec![output_of_text("None")], Some("why"))).unwrap(),
            r#"{"query_id":3,"output":"None","default":true,"default_explanation":"why"}"#
        );
        assert_eq!(answer(0, vec![], None), br#"{"batch_predictions":[]}"#);
        assert_eq!(error_body("E", "why"), br#"{"error":"E","cause":"why"}"#);
        // A first dimension that is not the queries' count: the one query's whole answer.
        let v = Tensor::new("v", vec![3], TensorData::Fp64(vec![1.0, 2.0, 3.0])).unwrap();
        assert_eq!(
            outputs(&Event::new("r", vec![v.clone()]), 1).unwrap(),
            [serde_json::json!([1.0, 2.0, 3.0])]
        );
        let e = outputs(&Event::new("r", vec![v]), 2).unwrap_err();
        assert!(e.message.contains("each of the 2 queries"), "{}", e.message);
    }
}
