//! The binary tensor extension: raw little-endian elements, BYTES as 4-byte length prefixes.

use half::f16;

use crate::error::{Error, Result};
use crate::tensor::{DataType, TensorData};

/// Tensor data from raw little-endian bytes (the binary extension's layout; BYTES as 4-byte
/// lengths and the bytes): `count` elements of `datatype`, or a 400 saying what does not fit.
pub fn decode_binary(datatype: DataType, bytes: &[u8], count: usize) -> Result<TensorData> {
    let Some(size) = datatype.element_size() else {
        return decode_binary_bytes(bytes, count).map(TensorData::Bytes);
    };
    if count.checked_mul(size) != Some(bytes.len()) {
        return Err(Error::bad_request(format!(
            "`binary_data_size` is {} bytes but {count} {datatype} elements take {}",
            bytes.len(),
            count.saturating_mul(size)
        )));
    }
    // Little-endian machines copy the bytes as they are (a memcpy); others swap each one.
    #[cfg(target_endian = "little")]
    macro_rules! le {
        ($t:ty, $n:literal) => {
            bytemuck::pod_collect_to_vec::<u8, $t>(bytes)
        };
    }
    #[cfg(not(target_endian = "little"))]
    macro_rules! le {
        ($t:ty, $n:literal) => {
            bytes
                .chunks_exact($n)
                .map(|c| <$t>::from_le_bytes(c.try_into().expect("chunk size")))
                .collect()
        };
    }
    Ok(match datatype {
        DataType::Bool => TensorData::Bool(bytes.iter().map(|&b| b != 0).collect()),
        DataType::Uint8 => TensorData::Uint8(bytes.to_vec()),
        DataType::Int8 => TensorData::Int8(bytes.iter().map(|&b| b as i8).collect()),
        DataType::Uint16 => TensorData::Uint16(le!(u16, 2)),
        DataType::Int16 => TensorData::Int16(le!(i16, 2)),
        DataType::Fp16 => TensorData::Fp16(le!(f16, 2)),
        DataType::Uint32 => TensorData::Uint32(le!(u32, 4)),
        DataType::Int32 => TensorData::Int32(le!(i32, 4)),
        DataType::Fp32 => TensorData::Fp32(le!(f32, 4)),
        DataType::Uint64 => TensorData::Uint64(le!(u64, 8)),
        DataType::Int64 => TensorData::Int64(le!(i64, 8)),
        DataType::Fp64 => TensorData::Fp64(le!(f64, 8)),
        DataType::Bytes => unreachable!("BYTES has no element size"),
    })
}

/// BYTES elements sent as base64 strings (`"parameters": {"content_type": "base64"}`, as
/// MLServer's codec does), for binary data such as images in JSON.
pub(super) fn from_base64(data: TensorData) -> Result<TensorData> {
    use base64::Engine;
    let TensorData::Bytes(items) = data else {
        return Err(Error::bad_request(
            "`content_type: base64` applies to BYTES inputs only",
        ));
    };
    let engine = base64::engine::general_purpose::STANDARD;
    items
        .into_iter()
        .enumerate()
        .map(|(i, s)| {
            engine
                .decode(&s)
                .map_err(|e| Error::bad_request(format!("element {i} is not valid base64: {e}")))
        })
        .collect::<Result<Vec<_>>>()
        .map(TensorData::Bytes)
}

/// BYTES in the binary extension: each element is a 4-byte little-endian length and the bytes.
pub(super) fn decode_binary_bytes(mut bytes: &[u8], count: usize) -> Result<Vec<Vec<u8>>> {
    let mut out = Vec::with_capacity(count.min(bytes.len() / 4));
    while !bytes.is_empty() {
        if bytes.len() < 4 {
            return Err(Error::bad_request(
                "BYTES binary data ends inside a length prefix",
            ));
        }
        let (len, rest) = bytes.split_at(4);
        let len = u32::from_le_bytes(len.try_into().expect("4 bytes")) as usize;
        if len > rest.len() {
            return Err(Error::bad_request(format!(
                "BYTES element {} claims {len} bytes but {} remain",
                out.len(),
                rest.len()
            )));
        }
        let (item, rest) = rest.split_at(len);
        out.push(item.to_vec());
        bytes = rest;
    }
    Ok(out)
}

/// Appends tensor data to `out` as raw little-endian bytes (BYTES as 4-byte lengths and the
/// bytes), the layout [`decode_binary`] reads.
pub fn encode_binary(data: &TensorData, out: &mut Vec<u8>) {
    #[cfg(target_endian = "little")]
    macro_rules! le {
        ($v:expr) => {
            out.extend_from_slice(bytemuck::cast_slice($v.as_slice()))
        };
    }
    #[cfg(not(target_endian = "little"))]
    macro_rules! le {
        ($v:expr) => {
            for x in $v {
                out.extend_from_slice(&x.to_le_bytes());
            }
        };
    }
    match data {
        TensorData::Bool(v) => out.extend(v.iter().map(|&b| b as u8)),
        TensorData::Uint8(v) => out.extend_from_slice(v),
        TensorData::Int8(v) => le!(v),
        TensorData::Uint16(v) => le!(v),
        TensorData::Int16(v) => le!(v),
        TensorData::Fp16(v) => le!(v),
        TensorData::Uint32(v) => le!(v),
        TensorData::Int32(v) => le!(v),
        TensorData::Fp32(v) => le!(v),
        TensorData::Uint64(v) => le!(v),
        TensorData::Int64(v) => le!(v),
        TensorData::Fp64(v) => le!(v),
        TensorData::Bytes(v) => {
            for item in v {
                out.extend_from_slice(&(item.len() as u32).to_le_bytes());
                out.extend_from_slice(item);
            }
        }
    }
}
