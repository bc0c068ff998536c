//! Tensors to and from ONNX Runtime values, and the model's declared inputs and outputs.

use ort::session::Session;
use ort::value::{DynValue, Tensor as OrtTensor, TensorElementType, ValueType};
use servegraph_engine::{DataType, Error, Result, Tensor, TensorData, TensorMeta};

pub(super) fn ort_err(e: ort::Error) -> Error {
    Error::internal(format!("ONNX Runtime: {e}"))
}

pub(super) fn to_ort(t: Tensor) -> Result<DynValue> {
    let shape = t.shape;
    macro_rules! owned {
        ($v:expr) => {
            OrtTensor::from_array((shape, $v))
                .map(|x| x.into_dyn())
                .map_err(ort_err)
        };
    }
    match t.data {
        TensorData::Bool(v) => owned!(v),
        TensorData::Uint8(v) => owned!(v),
        TensorData::Uint16(v) => owned!(v),
        TensorData::Uint32(v) => owned!(v),
        TensorData::Uint64(v) => owned!(v),
        TensorData::Int8(v) => owned!(v),
        TensorData::Int16(v) => owned!(v),
        TensorData::Int32(v) => owned!(v),
        TensorData::Int64(v) => owned!(v),
        TensorData::Fp16(v) => owned!(v),
        TensorData::Fp32(v) => owned!(v),
        TensorData::Fp64(v) => owned!(v),
        TensorData::Bytes(v) => {
            let strings = onnx_strings(&t.name, v)?;
            OrtTensor::from_string_array((shape, strings.as_slice()))
                .map(|x| x.into_dyn())
                .map_err(ort_err)
        }
    }
}

/// BYTES elements as the strings an ONNX string tensor holds: valid UTF-8 without NUL (ONNX
/// Runtime keeps C strings). Anything else is the caller's 400, naming the element, never
/// ONNX Runtime's 500.
fn onnx_strings(name: &str, items: Vec<Vec<u8>>) -> Result<Vec<String>> {
    items
        .into_iter()
        .enumerate()
        .map(|(i, b)| {
            if b.contains(&0) {
                return Err(Error::bad_request(format!(
                    "input `{name}`: element {i} holds a NUL byte, which an ONNX string tensor cannot"
                )));
            }
            String::from_utf8(b).map_err(|_| {
                Error::bad_request(format!(
                    "input `{name}`: element {i} is not UTF-8, which an ONNX string tensor needs"
                ))
            })
        })
        .collect()
}

pub(super) fn from_ort(name: &str, value: &DynValue) -> Result<Tensor> {
    macro_rules! copy {
        ($t:ty, $variant:ident) => {{
            let (shape, data) = value.try_extract_tensor::<$t>().map_err(ort_err)?;
            (
                shape.iter().map(|&d| d as usize).collect::<Vec<usize>>(),
                TensorData::$variant(data.to_vec()),
            )
        }};
    }
    let ty = value
        .dtype()
        .tensor_type()
        .ok_or_else(|| Error::internal(format!("output `{name}` is not a tensor")))?;
    let (shape, data) = match ty {
        TensorElementType::Bool => copy!(bool, Bool),
        TensorElementType::Uint8 => copy!(u8, Uint8),
        TensorElementType::Uint16 => copy!(u16, Uint16),
        TensorElementType::Uint32 => copy!(u32, Uint32),
        TensorElementType::Uint64 => copy!(u64, Uint64),
        TensorElementType::Int8 => copy!(i8, Int8),
        TensorElementType::Int16 => copy!(i16, Int16),
        TensorElementType::Int32 => copy!(i32, Int32),
        TensorElementType::Int64 => copy!(i64, Int64),
        TensorElementType::Float16 => copy!(half::f16, Fp16),
        TensorElementType::Float32 => copy!(f32, Fp32),
        TensorElementType::Float64 => copy!(f64, Fp64),
        TensorElementType::String => {
            let (shape, strings) = value.try_extract_strings().map_err(ort_err)?;
            (
                shape.iter().map(|&d| d as usize).collect(),
                TensorData::Bytes(strings.into_iter().map(String::into_bytes).collect()),
            )
        }
        other => {
            return Err(Error::internal(format!(
                "output `{name}` has element type {other:?}, which OIP cannot carry"
            )));
        }
    };
    Tensor::new(name, shape, data)
}

/// Model inputs/outputs as OIP metadata; a non-tensor one (a sequence or map, as scikit-learn
/// models with ZipMap have) is a load error that says how to export the model instead.
pub(super) fn metas<'a>(
    outlets: impl Iterator<Item = (&'a str, &'a ValueType)>,
    what: &str,
) -> std::result::Result<Vec<TensorMeta>, String> {
    outlets
        .map(|(name, ty)| {
            let ValueType::Tensor { ty, shape, .. } = ty else {
                return Err(format!(
                    "{what} `{name}` is a {ty:?}, not a tensor; export scikit-learn models with \
                     zipmap disabled"
                ));
            };
            let datatype = datatype(*ty).ok_or_else(|| {
                format!("{what} `{name}` has element type {ty:?}, which OIP cannot carry")
            })?;
            Ok(TensorMeta::new(
                name,
                datatype,
                shape.iter().copied().collect(),
            ))
        })
        .collect()
}

pub(super) fn datatype(ty: TensorElementType) -> Option<DataType> {
    Some(match ty {
        TensorElementType::Bool => DataType::Bool,
        TensorElementType::Uint8 => DataType::Uint8,
        TensorElementType::Uint16 => DataType::Uint16,
        TensorElementType::Uint32 => DataType::Uint32,
        TensorElementType::Uint64 => DataType::Uint64,
        TensorElementType::Int8 => DataType::Int8,
        TensorElementType::Int16 => DataType::Int16,
        TensorElementType::Int32 => DataType::Int32,
        TensorElementType::Int64 => DataType::Int64,
        TensorElementType::Float16 => DataType::Fp16,
        TensorElementType::Float32 => DataType::Fp32,
        TensorElementType::Float64 => DataType::Fp64,
        TensorElementType::String => DataType::Bytes,
        _ => return None,
    })
}

pub(super) fn run(
    session: &mut Session,
    inputs: Vec<Tensor>,
    outputs: &[TensorMeta],
) -> Result<Vec<Tensor>> {
    let values = inputs
        .into_iter()
        .map(|t| Ok((t.name.clone(), to_ort(t)?)))
        .collect::<Result<Vec<(String, DynValue)>>>()?;
    let results = session
        .run(values)
        .map_err(|e| Error::internal(format!("ONNX Runtime failed: {e}")))?;
    outputs
        .iter()
        .map(|meta| {
            let value = results.get(&meta.name).ok_or_else(|| {
                Error::internal(format!("the model gave no output `{}`", meta.name))
            })?;
            from_ort(&meta.name, value)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn onnx_strings_refuse_nul_and_non_utf8_naming_the_element() {
        assert_eq!(
            onnx_strings("s", vec![b"a".to_vec(), vec![]]).unwrap(),
            ["a", ""]
        );
        let e = onnx_strings("s", vec![b"ok".to_vec(), b"a\0b".to_vec()]).unwrap_err();
        assert_eq!(e.kind, servegraph_engine::ErrorKind::BadRequest);
        assert!(
            e.message.contains("element 1 holds a NUL byte"),
            "{}",
            e.message
        );
        let e = onnx_strings("s", vec![vec![0xff]]).unwrap_err();
        assert!(
            e.message.contains("element 0 is not UTF-8"),
            "{}",
            e.message
        );
    }
}
