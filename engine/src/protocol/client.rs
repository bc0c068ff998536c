//! The client side (remote steps): encoding a request to another V2 server and decoding its
//! response.

use serde::ser::SerializeSeq;
use serde::{Deserialize, Serialize, Serializer};

use super::Encoded;
use super::json::JsonData;
use super::request::{InputJson, decode_input};
use super::response::{
    Fallback, OutputOut, OutputParameters, finish, is_utf8 as utf8, tensors_out,
};
use crate::error::{Error, Result};
use crate::tensor::Tensor;

#[derive(Serialize)]
pub(super) struct RequestOut<'a> {
    pub(super) id: &'a str,
    pub(super) inputs: Vec<OutputOut<'a>>,
    pub(super) parameters: RequestParams,
}

#[derive(Serialize)]
pub(super) struct RequestParams {
    pub(super) binary_data_output: bool,
}

/// The client side, for calling another OIP server: `tensors` as an inference request, their
/// data as JSON or (with `binary`) in the binary extension, asking for binary outputs too.
pub fn encode_request(id: &str, tensors: &[Tensor], binary: bool) -> Result<Encoded> {
    // BYTES that are not UTF-8 go binary even in a JSON request: JSON strings cannot carry
    // them unchanged.
    let none = serde_json::Map::new();
    let (inputs, bytes) = tensors_out(
        tensors.iter().map(|t| (t, binary)).collect(),
        Fallback::Binary,
        &none,
    );
    let has_binary = bytes.is_some();
    finish(
        &RequestOut {
            id,
            inputs,
            parameters: RequestParams {
                binary_data_output: binary,
            },
        },
        bytes.unwrap_or_default(),
        has_binary,
    )
}

#[derive(Deserialize)]
pub(super) struct ResponseIn<'a> {
    #[serde(borrow, default)]
    pub(super) outputs: Vec<InputJson<'a>>,
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
            decode_input(o, &mut binary, true).map_err(|e| {
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
                parameters: (!utf8(&t.data)).then_some(OutputParameters {
                    binary_data_size: None,
                    content_type: Some("base64"),
                    own: None,
                }),
                data: (t.data.len() <= self.max_elements).then(|| {
                    if utf8(&t.data) {
                        JsonData::Plain(&t.data)
                    } else {
                        JsonData::Base64(&t.data)
                    }
                }),
            })?;
        }
        seq.end()
    }
}
