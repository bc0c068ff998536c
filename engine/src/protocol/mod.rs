//! The Open Inference Protocol (V2) wire format: inference requests and responses in JSON,
//! with `data` flat or nested, and the binary tensor extension (a JSON header of
//! `Inference-Header-Content-Length` bytes followed by raw tensor bytes).
//!
//! Transport-independent: the HTTP source uses it, and so will the Kafka source.
//!
//! One file per job: `request` decoding, `json` and `binary` tensor data, `response`
//! encoding, and the `client` side that remote steps use; `codec` the protocols' bodies
//! (with `mlrun`'s rows, `clipper`'s queries and `generate`'s flat fields).

mod binary;
mod classify;
mod client;
pub mod clipper;
pub mod codec;
pub mod generate;
mod json;
pub mod kserve;
pub mod mlrun;
mod request;
mod response;
pub mod seldon;

use std::sync::atomic::{AtomicU64, Ordering};

pub use binary::{decode_binary, encode_binary};
pub use classify::classify;
pub use client::{TensorsJson, decode_response, encode_request};
pub use codec::{Codec, OipStream, sniff};
pub use request::{
    InferRequest, RequestedOutput, classification, decode_raw, decode_request, tensor_header,
};
pub use response::{Encoded, encode_json_response, encode_response, take_outputs};

/// A model named `m` taking `inputs`, for the codecs' tests.
#[cfg(test)]
pub(crate) fn test_model(
    inputs: Vec<crate::tensor::TensorMeta>,
    platform: crate::step::Platform,
) -> crate::step::ModelInfo {
    crate::step::ModelInfo {
        name: "m".into(),
        version: None,
        platform,
        inputs,
        outputs: Vec::new(),
        max_batch_size: 0,
    }
}

use crate::event::Event;
use crate::tensor::Tensor;

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
    // `format!("{seed:016x}-{n:08x}")`, without the formatting machinery (~400 instructions
    // of a request that names no id; issue 27).
    let mut id = String::with_capacity(25);
    push_hex(&mut id, seed, 16);
    id.push('-');
    push_hex(&mut id, n, 8);
    id
}

/// `v` in lowercase hex, zero-padded to `width` digits, as `{v:0width$x}` writes it.
fn push_hex(out: &mut String, v: u64, width: usize) {
    let digits = ((64 - v.leading_zeros() as usize).div_ceil(4)).max(width);
    for i in (0..digits).rev() {
        let nibble = if i < 16 { (v >> (4 * i)) & 0xf } else { 0 };
        out.push(char::from(b"0123456789abcdef"[nibble as usize]));
    }
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
    use half::f16;
    use serde_json::Value;

    use super::*;
    use crate::tensor::TensorData;

    #[test]
    fn ids_are_formatted_as_format_would() {
        for v in [
            0,
            1,
            0xf,
            0x10,
            0xdead_beef,
            0xffff_ffff,
            1 << 32,
            u64::MAX >> 4,
            u64::MAX,
        ] {
            for width in [8, 16] {
                let mut hex = String::new();
                push_hex(&mut hex, v, width);
                assert_eq!(hex, format!("{v:0width$x}"));
            }
        }
        let (a, b) = (new_id(), new_id());
        assert_eq!((a.len(), &a[..17]), (25, &b[..17]));
        assert_ne!(a, b);
    }

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
            e.message
                .contains("is 1000000000, which is not one of FP16 numbers"),
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

    /// Issue 12: never a silent wrong answer. `null` in float data is refused with the
    /// tensor and the index; nesting must be flat or exactly the shape's, and no deeper than
    /// 100 levels; `NaN`/`Infinity` literals get a word on why.
    #[test]
    fn nulls_bad_nesting_and_non_json_numbers_are_refused() {
        let cases: Vec<(String, &str)> = vec![
            (
                r#"{"inputs":[{"name":"x","shape":[1,3],"datatype":"FP32","data":[1,null,3]}]}"#.into(),
                "input `x`: `data`: element 1 is null, which is not one of FP32 numbers (JSON has no NaN",
            ),
            (
                r#"{"inputs":[{"name":"x","shape":[1,16],"datatype":"FP32","data":[[1,2,3,4,5,6,7,8],[1,2,3,4,5,6,7,8]]}]}"#.into(),
                "an array at depth 2 holds 8 numbers where the shape [1, 16] wants 16 scalars",
            ),
            (
                r#"{"inputs":[{"name":"x","shape":[2,2],"datatype":"INT64","data":[[1,2],3,4]}]}"#.into(),
                "mixing arrays and scalars",
            ),
            (
                format!(
                    r#"{{"inputs":[{{"name":"x","shape":[1,1],"datatype":"FP32","data":{}1{}}}]}}"#,
                    "[".repeat(120),
                    "]".repeat(120)
                ),
                "nested deeper than 100 levels",
            ),
            (
                r#"{"inputs":[{"name":"x","shape":[2],"datatype":"FP32","data":[1, NaN]}]}"#.into(),
                "JSON has no NaN or Infinity numbers",
            ),
            (
                r#"{"inputs":[{"name":"x","shape":[2],"datatype":"FP32","data":[Infinity, 1]}]}"#.into(),
                "JSON has no NaN or Infinity numbers",
            ),
            (
                r#"{"inputs":[{"name":"x","shape":[2],"datatype":"FP32","data":5}]}"#.into(),
                "`data` is one scalar but the shape [2] holds 2 elements",
            ),
        ];
        for (body, want) in cases {
            let err = decode_request(body.as_bytes(), None).unwrap_err();
            assert_eq!(err.kind, crate::error::ErrorKind::BadRequest, "{body}");
            assert!(
                err.message.contains(want),
                "{want:?} not in {:?}",
                err.message
            );
        }
        let twice = br#"{"inputs":[{"name":"x","shape":[1],"datatype":"FP32","data":[1]}],"outputs":[{"name":"y"},{"name":"y"}]}"#;
        let err = decode_request(twice, None).unwrap_err();
        assert!(
            err.message.contains("output `y` is requested twice"),
            "{}",
            err.message
        );
        // Flat, exactly nested, and a lone scalar for one element all still work.
        for data in ["[1,2,3,4]", "[[1,2],[3,4]]"] {
            let body = format!(
                r#"{{"inputs":[{{"name":"x","shape":[2,2],"datatype":"FP32","data":{data}}}]}}"#
            );
            decode_request(body.as_bytes(), None).unwrap();
        }
        let body = br#"{"inputs":[{"name":"x","shape":[],"datatype":"FP32","data":7}]}"#;
        decode_request(body, None).unwrap();
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
                "is 1.5, which is not one of INT32 integers",
            ),
            (
                br#"{"inputs":[{"name":"a","shape":[1],"datatype":"UINT8","data":[300]}]}"#,
                "is 300, which is not one of UINT8 integers",
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

    /// Issue 12: every datatype travels binary (BOOL, BYTES with NUL, empty and non-UTF-8
    /// elements); BYTES that are not UTF-8 asked for as JSON go binary over HTTP and as
    /// base64 on JSON-only transports, never as U+FFFD; an empty binary output still has
    /// its header length.
    #[test]
    fn bool_and_arbitrary_bytes_round_trip() {
        let bytes = vec![
            b"a\0b".to_vec(),
            Vec::new(),
            vec![0xff, 0xfe],
            "é".as_bytes().to_vec(),
        ];
        let tensors = vec![
            Tensor::new("b", vec![3], TensorData::Bool(vec![true, false, true])).unwrap(),
            Tensor::new("s", vec![4], TensorData::Bytes(bytes.clone())).unwrap(),
            Tensor::new("e", vec![0], TensorData::Fp32(Vec::new())).unwrap(),
        ];
        let event = Event::new("r", tensors.clone());
        let all_binary = encode_response(&event, "m", None, &[], true).unwrap();
        assert!(all_binary.json_len.is_some());
        assert_eq!(
            decode_response(&all_binary.body, all_binary.json_len).unwrap(),
            tensors
        );
        // As JSON: the non-UTF-8 BYTES output alone goes binary.
        let json = encode_response(&event, "m", None, &[], false).unwrap();
        let n = json.json_len.expect("the BYTES output goes binary");
        let head: Value = serde_json::from_slice(&json.body[..n]).unwrap();
        assert_eq!(
            head["outputs"][0]["data"],
            serde_json::json!([true, false, true])
        );
        assert!(head["outputs"][1]["parameters"]["binary_data_size"].is_u64());
        assert_eq!(decode_response(&json.body, json.json_len).unwrap(), tensors);
        // Only an empty output, sent binary: still the binary layout.
        let empty = Event::new("r", vec![tensors[2].clone()]);
        let e = encode_response(&empty, "m", None, &[], true).unwrap();
        assert_eq!(e.json_len, Some(e.body.len()));
        // JSON-only transports: base64, marked, read back exactly.
        let body = encode_json_response(&event, "m", None, Vec::new()).unwrap();
        let v: Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(v["outputs"][1]["parameters"]["content_type"], "base64");
        assert_eq!(decode_response(&body, None).unwrap(), tensors);
    }

    #[test]
    fn inputs_keep_their_own_parameters_but_the_binary_size() {
        let mut body = br#"{"inputs":[{"name":"a","shape":[1],"datatype":"INT32","data":[1],"parameters":{"unit":"cm"}},{"name":"b","shape":[1],"datatype":"INT32","parameters":{"binary_data_size":4}}]}"#.to_vec();
        let json_len = body.len();
        body.extend_from_slice(&2i32.to_le_bytes());
        let req = decode_request(&body, Some(json_len)).unwrap();
        assert_eq!(
            Value::Object(req.event.input_parameters.clone()),
            serde_json::json!({"a": {"unit": "cm"}})
        );
    }

    #[test]
    fn outputs_carry_their_own_parameters() {
        let t = |name: &str| Tensor::new(name, vec![1], TensorData::Int32(vec![7])).unwrap();
        let mut event = Event::new("r", vec![t("a"), t("b")]);
        event
            .output_parameters
            .insert("a".into(), serde_json::json!({"unit": "cm", "n": 1}));
        let json = encode_response(&event, "m", None, &[], false).unwrap();
        let v: Value = serde_json::from_slice(&json.body).unwrap();
        assert_eq!(
            v["outputs"][0]["parameters"],
            serde_json::json!({"unit": "cm", "n": 1})
        );
        assert!(v["outputs"][1].get("parameters").is_none(), "{v}");
        // Sent binary, with the size beside its own.
        let binary = encode_response(&event, "m", None, &[], true).unwrap();
        let n = binary.json_len.unwrap();
        let head: Value = serde_json::from_slice(&binary.body[..n]).unwrap();
        assert_eq!(
            head["outputs"][0]["parameters"],
            serde_json::json!({"binary_data_size": 4, "unit": "cm", "n": 1})
        );
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

    /// What a class written against the whole request reads (MLServer's `InferenceRequest`):
    /// each input's own `parameters` (not `binary_data_size`) and the outputs asked for, as
    /// sent; none for inputs without any.
    #[test]
    fn inputs_parameters_and_requested_outputs_are_kept() {
        let json = br#"{"inputs":[{"name":"a","shape":[1],"datatype":"FP32","parameters":{"content_type":"np","binary_data_size":4}},{"name":"b","shape":[1],"datatype":"FP32","parameters":{"binary_data_size":4}},{"name":"c","shape":[1],"datatype":"FP32","data":[1]}],"outputs":[{"name":"y","parameters":{"content_type":"str"}},{"name":"z"}]}"#;
        let mut body = json.to_vec();
        body.extend_from_slice(&1f32.to_le_bytes());
        body.extend_from_slice(&2f32.to_le_bytes());
        let req = decode_request(&body, Some(json.len())).unwrap();
        assert_eq!(
            Value::Object(req.event.input_parameters.clone()),
            serde_json::json!({"a": {"content_type": "np"}})
        );
        assert_eq!(
            req.event.requested_outputs,
            Some(vec![
                serde_json::json!({"name": "y", "parameters": {"content_type": "str"}}),
                serde_json::json!({"name": "z"}),
            ])
        );
        let plain = decode_request(
            br#"{"inputs":[{"name":"a","shape":[1],"datatype":"FP32","data":[1]}]}"#,
            None,
        )
        .unwrap();
        assert!(plain.event.input_parameters.is_empty());
        assert_eq!(plain.event.requested_outputs, None);
    }

    /// MLServer's examples send a text with its length (or any count) as the shape: that one
    /// element.
    #[test]
    fn one_text_shaped_otherwise_is_one_element() {
        for body in [
            r#"{"inputs":[{"name":"t","shape":[5],"datatype":"BYTES","data":["héllo"]}]}"#,
            r#"{"inputs":[{"name":"t","shape":[11],"datatype":"BYTES","data":"héllo"}]}"#,
        ] {
            let req = decode_request(body.as_bytes(), None).unwrap();
            assert_eq!(req.event.tensors[0].shape, vec![1]);
            assert_eq!(
                req.event.tensors[0].data,
                TensorData::Bytes(vec!["héllo".as_bytes().to_vec()])
            );
        }
        // Any other mismatch is still refused.
        for bad in [
            br#"{"inputs":[{"name":"t","shape":[5],"datatype":"BYTES","data":["hello","x"]}]}"#
                .as_slice(),
            br#"{"inputs":[{"name":"t","shape":[2,2],"datatype":"BYTES","data":["hello"]}]}"#,
            br#"{"inputs":[{"name":"t","shape":[5],"datatype":"FP32","data":[1]}]}"#,
        ] {
            assert!(decode_request(bad, None).is_err());
        }
    }

    /// A step's parameters for its outputs (an MLServer class's `ResponseOutput.parameters`)
    /// go with them; the encoding's own keys win (`binary_data_size`, base64's
    /// `content_type`); the request's inputs' never come back.
    #[test]
    fn the_encodings_own_parameters_win() {
        let mut event = Event::new(
            "r",
            vec![
                Tensor::new("a", vec![1], TensorData::Fp32(vec![1.0])).unwrap(),
                Tensor::new("s", vec![1], TensorData::Bytes(vec![vec![0xff]])).unwrap(),
                Tensor::new("t", vec![1], TensorData::Fp32(vec![2.0])).unwrap(),
            ],
        );
        event.output_parameters.insert(
            "a".into(),
            serde_json::json!({"content_type": "np", "k": 1}),
        );
        event
            .output_parameters
            .insert("s".into(), serde_json::json!({"content_type": "str"}));
        event
            .input_parameters
            .insert("t".into(), serde_json::json!({"content_type": "np"}));
        let body = encode_json_response(&event, "m", None, Vec::new()).unwrap();
        let v: Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(
            v["outputs"][0]["parameters"],
            serde_json::json!({"content_type": "np", "k": 1})
        );
        assert_eq!(
            v["outputs"][1]["parameters"],
            serde_json::json!({"content_type": "base64"})
        );
        assert!(v["outputs"][2].get("parameters").is_none(), "{v}");
        let binary = encode_response(&event, "m", None, &[], true).unwrap();
        let n = binary.json_len.unwrap();
        let head: Value = serde_json::from_slice(&binary.body[..n]).unwrap();
        assert_eq!(
            head["outputs"][0]["parameters"],
            serde_json::json!({"content_type": "np", "k": 1, "binary_data_size": 4})
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
            classification: None,
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
            classification: None,
        }];
        let err = encode_response(&ev, "m", None, &missing, false).unwrap_err();
        assert!(
            err.message
                .contains("unknown output `zz`; the outputs are: a, b")
        );
    }
}
