//! `ModelInfer`, the hot RPC, served by hand rather than through tonic's generic codec, for
//! the sake of large tensors: the request is read into one buffer of its exact size (tonic's
//! decoder grows a buffer frame by frame) and decoded without copying the raw contents
//! (prost reads `bytes` fields as slices of it); the answer's raw contents are not copied
//! into an encoding buffer at all: the small protobuf part is encoded, and each output's
//! bytes follow as a frame of their own (protobuf fields may come in any order). The wire
//! format is gRPC's (5-byte length prefix, `grpc-status` trailers), as the tonic service
//! that serves every other RPC speaks it.

use std::convert::Infallible;
use std::sync::Arc;

use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, Response, StatusCode, header};
use bytes::Bytes;
use http_body_util::BodyExt;
use prost::Message;
use tonic::Status;

use super::{GrpcState, infer, pb, status};
use crate::error::{Error, ErrorKind};

/// `POST /inference.GRPCInferenceService/ModelInfer`.
pub(super) async fn model_infer(
    State(state): State<Arc<GrpcState>>,
    headers: HeaderMap,
    body: Body,
) -> Response<Body> {
    match serve(&state, &headers, body).await {
        Ok(frames) => answer(frames),
        Err(status) => status.into_http(),
    }
}

async fn serve(state: &GrpcState, headers: &HeaderMap, body: Body) -> Result<Vec<Bytes>, Status> {
    let is_grpc = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/grpc"));
    if !is_grpc {
        return Err(Status::invalid_argument(
            "content-type must be application/grpc",
        ));
    }
    let served = state.current()?;
    let limit = state.max_message_bytes;
    let too_large = || {
        status(Error::new(
            ErrorKind::PayloadTooLarge,
            format!(
                "the message is larger than the limit of {limit} bytes (--grpc-max-message-bytes)"
            ),
        ))
    };
    let bytes = http_body_util::Limited::new(body, limit.saturating_add(5))
        .collect()
        .await
        .map_err(|e| {
            if e.is::<http_body_util::LengthLimitError>() {
                too_large()
            } else {
                Status::unavailable(format!("reading the request: {e}"))
            }
        })?
        .to_bytes();
    let message = unframe(bytes, limit)?;
    let request = pb::ModelInferRequest::decode(message)
        .map_err(|e| Status::invalid_argument(format!("malformed ModelInferRequest: {e}")))?;
    let response = infer(&served, headers, request).await.map_err(status)?;
    frames(response, limit)
}

/// The one message of a unary call's body (a flag byte, a 4-byte big-endian length, the
/// message); compressed messages are refused (none is announced in `grpc-accept-encoding`).
fn unframe(mut bytes: Bytes, limit: usize) -> Result<Bytes, Status> {
    if bytes.len() < 5 {
        return Err(Status::invalid_argument(
            "the request body is not a gRPC message (shorter than its 5-byte prefix)",
        ));
    }
    let prefix = bytes.split_to(5);
    if prefix[0] != 0 {
        return Err(Status::unimplemented(
            "compressed messages are not served; send them uncompressed (identity)",
        ));
    }
    let len = u32::from_be_bytes([prefix[1], prefix[2], prefix[3], prefix[4]]) as usize;
    if len > limit {
        return Err(status(Error::new(
            ErrorKind::PayloadTooLarge,
            format!(
                "the message is larger than the limit of {limit} bytes (--grpc-max-message-bytes)"
            ),
        )));
    }
    if len != bytes.len() {
        return Err(Status::invalid_argument(format!(
            "a unary call carries one message: the prefix says {len} bytes, the body has {}",
            bytes.len()
        )));
    }
    Ok(bytes)
}

/// The answer's body: the prefix and the protobuf without its raw contents, then each raw
/// output as its own frame, preceded by its field key and length (field 6,
/// `raw_output_contents`).
fn frames(mut response: pb::ModelInferResponse, limit: usize) -> Result<Vec<Bytes>, Status> {
    use prost::encoding::{WireType, encode_key, encode_varint, encoded_len_varint, key_len};
    let raw = std::mem::take(&mut response.raw_output_contents);
    let head_len = response.encoded_len();
    let total = head_len
        + raw
            .iter()
            .map(|r| key_len(6) + encoded_len_varint(r.len() as u64) + r.len())
            .sum::<usize>();
    if total > limit {
        return Err(status(Error::new(
            ErrorKind::PayloadTooLarge,
            format!(
                "the answer ({total} bytes) is larger than the limit of {limit} bytes (--grpc-max-message-bytes)"
            ),
        )));
    }
    // Encoded into one `Vec` (whose one-byte writes prost's varints inline to a store;
    // `BytesMut`'s go through a `memcpy` call for each byte of each varint, ~40 instructions
    // each, ~30 per answer): the prefix, the protobuf, and each raw output's key and length;
    // then cut into frames between the raw outputs (slices of one buffer, no copy).
    let mut buf = Vec::with_capacity(5 + head_len + 11 * raw.len());
    buf.push(0);
    buf.extend_from_slice(&(total as u32).to_be_bytes());
    response
        .encode(&mut buf)
        .map_err(|e| Status::internal(format!("encoding the answer: {e}")))?;
    let mut cuts = Vec::with_capacity(raw.len());
    for r in &raw {
        encode_key(6, WireType::LengthDelimited, &mut buf);
        encode_varint(r.len() as u64, &mut buf);
        cuts.push(buf.len());
    }
    let buf = Bytes::from(buf);
    let mut out = Vec::with_capacity(2 * raw.len() + 1);
    let mut start = 0;
    for (r, cut) in raw.into_iter().zip(cuts) {
        out.push(buf.slice(start..cut));
        out.push(r);
        start = cut;
    }
    if start < buf.len() {
        out.push(buf.slice(start..));
    }
    Ok(out)
}

/// A successful call: the frames, then `grpc-status: 0` in the trailers.
fn answer(frames: Vec<Bytes>) -> Response<Body> {
    let mut trailers = HeaderMap::new();
    trailers.insert("grpc-status", HeaderValue::from_static("0"));
    let body = frames
        .into_iter()
        .map(|b| Ok::<_, Infallible>(http_body::Frame::data(b)))
        .chain(std::iter::once(Ok(http_body::Frame::trailers(trailers))));
    let body = http_body_util::StreamBody::new(futures_util::stream::iter(body));
    let mut response = Response::new(Body::new(body));
    *response.status_mut() = StatusCode::OK;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/grpc"),
    );
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_split_answer_decodes_as_the_whole_message() {
        let response = pb::ModelInferResponse {
            model_name: "m".into(),
            id: "r".into(),
            outputs: vec![Default::default(), Default::default()],
            raw_output_contents: vec![Bytes::from(vec![1u8; 300]), Bytes::from_static(b"xy")],
            ..Default::default()
        };
        let parts = frames(response.clone(), 1 << 20).unwrap();
        let whole: Vec<u8> = parts.iter().flat_map(|b| b.iter().copied()).collect();
        let message = unframe(Bytes::from(whole), 1 << 20).unwrap();
        assert_eq!(pb::ModelInferResponse::decode(message).unwrap(), response);
        assert_eq!(
            frames(response, 100).unwrap_err().code(),
            tonic::Code::ResourceExhausted
        );
    }

    #[test]
    fn framing_is_checked() {
        assert!(unframe(Bytes::from_static(b"\0\0"), 10).is_err());
        let compressed = unframe(Bytes::from_static(b"\x01\0\0\0\0"), 10).unwrap_err();
        assert_eq!(compressed.code(), tonic::Code::Unimplemented);
        let short = unframe(Bytes::from_static(b"\0\0\0\0\x09abc"), 10).unwrap_err();
        assert!(
            short.message().contains("says 9 bytes, the body has 3"),
            "{}",
            short.message()
        );
        let large = unframe(Bytes::from_static(b"\0\0\0\x01\0"), 10).unwrap_err();
        assert_eq!(large.code(), tonic::Code::ResourceExhausted);
    }
}
