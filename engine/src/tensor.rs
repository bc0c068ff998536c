//! Tensors as they flow between steps: the Open Inference Protocol's datatypes, a typed flat
//! buffer and a row-major shape.

use std::fmt;

use half::f16;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::error::Error;

/// An Open Inference Protocol (V2) tensor datatype.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
pub enum DataType {
    #[serde(rename = "BOOL")]
    Bool,
    #[serde(rename = "UINT8")]
    Uint8,
    #[serde(rename = "UINT16")]
    Uint16,
    #[serde(rename = "UINT32")]
    Uint32,
    #[serde(rename = "UINT64")]
    Uint64,
    #[serde(rename = "INT8")]
    Int8,
    #[serde(rename = "INT16")]
    Int16,
    #[serde(rename = "INT32")]
    Int32,
    #[serde(rename = "INT64")]
    Int64,
    #[serde(rename = "FP16")]
    Fp16,
    #[serde(rename = "FP32")]
    Fp32,
    #[serde(rename = "FP64")]
    Fp64,
    #[serde(rename = "BYTES")]
    Bytes,
}

impl DataType {
    pub const ALL: [DataType; 13] = [
        DataType::Bool,
        DataType::Uint8,
        DataType::Uint16,
        DataType::Uint32,
        DataType::Uint64,
        DataType::Int8,
        DataType::Int16,
        DataType::Int32,
        DataType::Int64,
        DataType::Fp16,
        DataType::Fp32,
        DataType::Fp64,
        DataType::Bytes,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            DataType::Bool => "BOOL",
            DataType::Uint8 => "UINT8",
            DataType::Uint16 => "UINT16",
            DataType::Uint32 => "UINT32",
            DataType::Uint64 => "UINT64",
            DataType::Int8 => "INT8",
            DataType::Int16 => "INT16",
            DataType::Int32 => "INT32",
            DataType::Int64 => "INT64",
            DataType::Fp16 => "FP16",
            DataType::Fp32 => "FP32",
            DataType::Fp64 => "FP64",
            DataType::Bytes => "BYTES",
        }
    }

    pub fn parse(s: &str) -> Option<DataType> {
        DataType::ALL.into_iter().find(|d| d.as_str() == s)
    }

    /// Bytes per element in the binary tensor extension; `None` for BYTES (length-prefixed).
    pub fn element_size(self) -> Option<usize> {
        Some(match self {
            DataType::Bool | DataType::Uint8 | DataType::Int8 => 1,
            DataType::Uint16 | DataType::Int16 | DataType::Fp16 => 2,
            DataType::Uint32 | DataType::Int32 | DataType::Fp32 => 4,
            DataType::Uint64 | DataType::Int64 | DataType::Fp64 => 8,
            DataType::Bytes => return None,
        })
    }

    pub fn is_float(self) -> bool {
        matches!(self, DataType::Fp16 | DataType::Fp32 | DataType::Fp64)
    }

    pub fn is_integer(self) -> bool {
        matches!(
            self,
            DataType::Uint8
                | DataType::Uint16
                | DataType::Uint32
                | DataType::Uint64
                | DataType::Int8
                | DataType::Int16
                | DataType::Int32
                | DataType::Int64
        )
    }
}

impl fmt::Display for DataType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A tensor's elements, flat in row-major order.
#[derive(Clone, Debug, PartialEq)]
pub enum TensorData {
    Bool(Vec<bool>),
    Uint8(Vec<u8>),
    Uint16(Vec<u16>),
    Uint32(Vec<u32>),
    Uint64(Vec<u64>),
    Int8(Vec<i8>),
    Int16(Vec<i16>),
    Int32(Vec<i32>),
    Int64(Vec<i64>),
    Fp16(Vec<f16>),
    Fp32(Vec<f32>),
    Fp64(Vec<f64>),
    Bytes(Vec<Vec<u8>>),
}

/// Runs `$body` with `$v` bound to the inner `Vec` of any [`TensorData`] variant.
#[macro_export]
macro_rules! with_tensor_data {
    ($data:expr, $v:ident => $body:expr) => {
        match $data {
            $crate::tensor::TensorData::Bool($v) => $body,
            $crate::tensor::TensorData::Uint8($v) => $body,
            $crate::tensor::TensorData::Uint16($v) => $body,
            $crate::tensor::TensorData::Uint32($v) => $body,
            $crate::tensor::TensorData::Uint64($v) => $body,
            $crate::tensor::TensorData::Int8($v) => $body,
            $crate::tensor::TensorData::Int16($v) => $body,
            $crate::tensor::TensorData::Int32($v) => $body,
            $crate::tensor::TensorData::Int64($v) => $body,
            $crate::tensor::TensorData::Fp16($v) => $body,
            $crate::tensor::TensorData::Fp32($v) => $body,
            $crate::tensor::TensorData::Fp64($v) => $body,
            $crate::tensor::TensorData::Bytes($v) => $body,
        }
    };
}

/// Runs `$body` with `$v` bound to the inner `Vec` of a numeric variant (everything but BOOL
/// and BYTES); evaluates `$other` for those two.
#[macro_export]
macro_rules! with_numeric_data {
    ($data:expr, $v:ident => $body:expr, _ => $other:expr) => {
        match $data {
            $crate::tensor::TensorData::Uint8($v) => $body,
            $crate::tensor::TensorData::Uint16($v) => $body,
            $crate::tensor::TensorData::Uint32($v) => $body,
            $crate::tensor::TensorData::Uint64($v) => $body,
            $crate::tensor::TensorData::Int8($v) => $body,
            $crate::tensor::TensorData::Int16($v) => $body,
            $crate::tensor::TensorData::Int32($v) => $body,
            $crate::tensor::TensorData::Int64($v) => $body,
            $crate::tensor::TensorData::Fp16($v) => $body,
            $crate::tensor::TensorData::Fp32($v) => $body,
            $crate::tensor::TensorData::Fp64($v) => $body,
            $crate::tensor::TensorData::Bool(_) | $crate::tensor::TensorData::Bytes(_) => $other,
        }
    };
}

/// Lossless-enough conversion of numeric elements to `f64` for arithmetic transforms.
pub trait ToF64: Copy {
    fn to_f64(self) -> f64;
}
macro_rules! impl_to_f64 {
    ($($t:ty),*) => { $(impl ToF64 for $t { fn to_f64(self) -> f64 { self as f64 } })* };
}
impl_to_f64!(u8, u16, u32, u64, i8, i16, i32, i64, f32, f64);
impl ToF64 for f16 {
    fn to_f64(self) -> f64 {
        self.to_f64()
    }
}

impl TensorData {
    pub fn datatype(&self) -> DataType {
        match self {
            TensorData::Bool(_) => DataType::Bool,
            TensorData::Uint8(_) => DataType::Uint8,
            TensorData::Uint16(_) => DataType::Uint16,
            TensorData::Uint32(_) => DataType::Uint32,
            TensorData::Uint64(_) => DataType::Uint64,
            TensorData::Int8(_) => DataType::Int8,
            TensorData::Int16(_) => DataType::Int16,
            TensorData::Int32(_) => DataType::Int32,
            TensorData::Int64(_) => DataType::Int64,
            TensorData::Fp16(_) => DataType::Fp16,
            TensorData::Fp32(_) => DataType::Fp32,
            TensorData::Fp64(_) => DataType::Fp64,
            TensorData::Bytes(_) => DataType::Bytes,
        }
    }

    pub fn len(&self) -> usize {
        with_tensor_data!(self, v => v.len())
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Joins same-typed data end to end (for a batch along the first axis).
    pub fn concat(parts: Vec<TensorData>) -> Result<TensorData, Error> {
        let mut iter = parts.into_iter();
        let Some(mut out) = iter.next() else {
            return Err(Error::internal("nothing to concatenate"));
        };
        for part in iter {
            macro_rules! extend {
                ($($v:ident),*) => {
                    match (&mut out, part) {
                        $((TensorData::$v(a), TensorData::$v(b)) => a.extend(b),)*
                        (a, b) => {
                            return Err(Error::internal(format!(
                                "cannot concatenate {} and {}",
                                a.datatype(),
                                b.datatype()
                            )))
                        }
                    }
                };
            }
            extend!(
                Bool, Uint8, Uint16, Uint32, Uint64, Int8, Int16, Int32, Int64, Fp16, Fp32, Fp64,
                Bytes
            );
        }
        Ok(out)
    }

    /// Splits into consecutive pieces of `counts` elements (which must add up to the length).
    pub fn split(self, counts: &[usize]) -> Vec<TensorData> {
        debug_assert_eq!(counts.iter().sum::<usize>(), self.len());
        macro_rules! split {
            ($($v:ident),*) => {
                match self {
                    $(TensorData::$v(mut all) => {
                        let mut out = Vec::with_capacity(counts.len());
                        for &n in counts.iter().rev() {
                            let tail = all.split_off(all.len() - n);
                            out.push(TensorData::$v(tail));
                        }
                        out.reverse();
                        out
                    })*
                }
            };
        }
        split!(
            Bool, Uint8, Uint16, Uint32, Uint64, Int8, Int16, Int32, Int64, Fp16, Fp32, Fp64, Bytes
        )
    }

    /// The elements as `f64`, for numeric tensors.
    pub fn to_f64_vec(&self) -> Option<Vec<f64>> {
        with_numeric_data!(self, v => Some(v.iter().map(|x| x.to_f64()).collect()), _ => None)
    }
}

/// A named tensor: datatype, shape and data.
#[derive(Clone, Debug, PartialEq)]
pub struct Tensor {
    pub name: String,
    pub shape: Vec<usize>,
    pub data: TensorData,
}

impl Tensor {
    /// A tensor whose element count matches its shape.
    pub fn new(
        name: impl Into<String>,
        shape: Vec<usize>,
        data: TensorData,
    ) -> Result<Tensor, Error> {
        let name = name.into();
        let want = checked_element_count(&shape).ok_or_else(|| {
            Error::bad_request(format!("tensor `{name}`: shape {shape:?} is too large"))
        })?;
        if want != data.len() {
            return Err(Error::bad_request(format!(
                "tensor `{name}`: shape {shape:?} needs {want} elements, data has {}",
                data.len()
            )));
        }
        Ok(Tensor { name, shape, data })
    }

    pub fn datatype(&self) -> DataType {
        self.data.datatype()
    }

    pub fn meta(&self) -> TensorMeta {
        TensorMeta {
            name: self.name.clone(),
            datatype: self.datatype(),
            shape: self.shape.iter().map(|&d| d as i64).collect(),
        }
    }
}

/// Number of elements a shape holds (1 for a scalar).
pub fn element_count(shape: &[usize]) -> usize {
    shape.iter().product()
}

/// Like [`element_count`], `None` when the product overflows (a shape from a request).
pub fn checked_element_count(shape: &[usize]) -> Option<usize> {
    shape.iter().try_fold(1usize, |n, &d| n.checked_mul(d))
}

/// What a step needs or gives: a tensor's name, datatype and shape (`-1` = any size).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct TensorMeta {
    pub name: String,
    pub datatype: DataType,
    pub shape: Vec<i64>,
}

impl TensorMeta {
    pub fn new(name: impl Into<String>, datatype: DataType, shape: Vec<i64>) -> TensorMeta {
        TensorMeta {
            name: name.into(),
            datatype,
            shape,
        }
    }

    /// Whether a concrete shape fits this declared one (same rank, fixed dims equal).
    pub fn shape_accepts(&self, shape: &[usize]) -> bool {
        self.shape.len() == shape.len()
            && self
                .shape
                .iter()
                .zip(shape)
                .all(|(&want, &got)| want < 0 || want as usize == got)
    }

    /// Whether two declared shapes can describe the same tensor.
    pub fn shape_compatible(&self, other: &[i64]) -> bool {
        self.shape.len() == other.len()
            && self
                .shape
                .iter()
                .zip(other)
                .all(|(&a, &b)| a < 0 || b < 0 || a == b)
    }
}

impl fmt::Display for TensorMeta {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {} {:?}", self.name, self.datatype, self.shape)
    }
}

/// What is known, at validation time, about the tensors an event carries at some point in a
/// graph. `open` means "possibly other tensors too": nothing is known about names not listed.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct Signature {
    pub tensors: Vec<TensorMeta>,
    pub open: bool,
    /// In an open signature, what is known of tensors not listed: their datatype, by name
    /// (`Some`) or for every one of them (`None`), as a `cast` leaves them. A step that needs
    /// such a tensor with another datatype is an error.
    pub implied: Vec<(Option<String>, DataType)>,
}

impl Signature {
    /// Nothing known: the start of a graph, or after a custom step.
    pub fn open() -> Signature {
        Signature {
            tensors: Vec::new(),
            open: true,
            implied: Vec::new(),
        }
    }

    /// Exactly these tensors.
    pub fn exact(tensors: Vec<TensorMeta>) -> Signature {
        Signature {
            tensors,
            open: false,
            implied: Vec::new(),
        }
    }

    pub fn get(&self, name: &str) -> Option<&TensorMeta> {
        self.tensors.iter().find(|t| t.name == name)
    }

    /// The datatype an unlisted tensor `name` is known to have (see [`Signature::implied`]).
    pub fn implied_datatype(&self, name: &str) -> Option<DataType> {
        self.implied
            .iter()
            .rev()
            .find(|(n, _)| n.as_deref().is_none_or(|n| n == name))
            .map(|(_, d)| *d)
    }

    /// Adds or replaces a tensor by name.
    pub fn put(&mut self, meta: TensorMeta) {
        match self.tensors.iter_mut().find(|t| t.name == meta.name) {
            Some(t) => *t = meta,
            None => self.tensors.push(meta),
        }
    }

    /// What is certain when either `self` or `other` may be the case: the tensors both have
    /// alike; open if anything differs.
    pub fn intersect(self, other: Signature) -> Signature {
        let differ = self.tensors.len() != other.tensors.len();
        let tensors: Vec<TensorMeta> = self
            .tensors
            .into_iter()
            .filter(|t| other.get(&t.name) == Some(t))
            .collect();
        let open = self.open || other.open || differ || tensors.len() != other.tensors.len();
        let implied = self
            .implied
            .into_iter()
            .filter(|i| other.implied.contains(i))
            .collect();
        Signature {
            tensors,
            open,
            implied,
        }
    }

    /// Checks that the tensors `needs` lists can be present with the right datatype and rank;
    /// names what is wrong otherwise.
    pub fn check_provides(&self, needs: &[TensorMeta]) -> Result<(), String> {
        let mut problems = Vec::new();
        for need in needs {
            match self.get(&need.name) {
                Some(got) if got.datatype != need.datatype => problems.push(format!(
                    "input `{}` must be {} but is fed {}",
                    need.name, need.datatype, got.datatype
                )),
                Some(got) if !need.shape_compatible(&got.shape) => problems.push(format!(
                    "input `{}` must have shape {:?} but is fed shape {:?}",
                    need.name, need.shape, got.shape
                )),
                Some(_) => {}
                None if self.open => {
                    if let Some(d) = self.implied_datatype(&need.name)
                        && d != need.datatype
                    {
                        problems.push(format!(
                            "input `{}` must be {} but is fed {d} (a `cast` before it makes it {d})",
                            need.name, need.datatype
                        ));
                    }
                }
                None => problems.push(format!(
                    "input `{}` ({} {:?}) is not fed",
                    need.name, need.datatype, need.shape
                )),
            }
        }
        if problems.is_empty() {
            Ok(())
        } else {
            Err(problems.join("; "))
        }
    }

    pub fn describe(&self) -> String {
        if self.tensors.is_empty() {
            return if self.open {
                "unknown".into()
            } else {
                "none".into()
            };
        }
        let list: Vec<String> = self.tensors.iter().map(|t| t.to_string()).collect();
        list.join(", ")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn datatype_names_round_trip() {
        for dt in DataType::ALL {
            assert_eq!(DataType::parse(dt.as_str()), Some(dt));
        }
        assert_eq!(DataType::parse("FP33"), None);
    }

    #[test]
    fn tensor_checks_element_count() {
        let err = Tensor::new("x", vec![2, 2], TensorData::Fp32(vec![1.0; 3])).unwrap_err();
        assert!(
            err.to_string().contains("needs 4 elements, data has 3"),
            "{err}"
        );
        assert!(Tensor::new("x", vec![2, 2], TensorData::Fp32(vec![1.0; 4])).is_ok());
    }

    #[test]
    fn signature_names_missing_and_mistyped_inputs() {
        let sig = Signature::exact(vec![TensorMeta::new("x", DataType::Fp64, vec![-1, 4])]);
        let needs = [
            TensorMeta::new("x", DataType::Fp32, vec![-1, 4]),
            TensorMeta::new("y", DataType::Fp32, vec![-1]),
        ];
        let err = sig.check_provides(&needs).unwrap_err();
        assert!(
            err.contains("input `x` must be FP32 but is fed FP64"),
            "{err}"
        );
        assert!(err.contains("input `y` (FP32 [-1]) is not fed"), "{err}");
        assert!(Signature::open().check_provides(&needs[1..]).is_ok());
    }

    #[test]
    fn concat_and_split_round_trip() {
        let joined = TensorData::concat(vec![
            TensorData::Int64(vec![1, 2]),
            TensorData::Int64(vec![3]),
            TensorData::Int64(vec![4, 5, 6]),
        ])
        .unwrap();
        assert_eq!(joined, TensorData::Int64(vec![1, 2, 3, 4, 5, 6]));
        assert_eq!(
            joined.split(&[2, 1, 3]),
            vec![
                TensorData::Int64(vec![1, 2]),
                TensorData::Int64(vec![3]),
                TensorData::Int64(vec![4, 5, 6])
            ]
        );
        assert!(
            TensorData::concat(vec![
                TensorData::Fp32(vec![1.0]),
                TensorData::Int64(vec![1])
            ])
            .is_err()
        );
    }

    #[test]
    fn shapes_accept_dynamic_dims() {
        let m = TensorMeta::new("x", DataType::Fp32, vec![-1, 4]);
        assert!(m.shape_accepts(&[7, 4]));
        assert!(!m.shape_accepts(&[7, 3]));
        assert!(!m.shape_accepts(&[4]));
    }
}
