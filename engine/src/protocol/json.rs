//! Tensor data in JSON: `data` flat or nested, read straight into typed vectors without a
//! `serde_json::Value` in between, and written back as a flat array.

use std::fmt;

use half::f16;
use serde::de::{self, DeserializeSeed, Deserializer, SeqAccess, Visitor};
use serde::ser::SerializeSeq;
use serde::{Serialize, Serializer};
use serde_json::value::RawValue;

use crate::error::{Error, Result};
use crate::tensor::{DataType, TensorData};

/// A JSON scalar convertible to a tensor element; `None` when it does not fit.
pub(super) trait Element: Sized {
    const WHAT: &'static str;
    fn from_i64(_: i64) -> Option<Self> {
        None
    }
    fn from_u64(_: u64) -> Option<Self> {
        None
    }
    fn from_f64(_: f64) -> Option<Self> {
        None
    }
    fn from_bool(_: bool) -> Option<Self> {
        None
    }
    fn from_str(_: &str) -> Option<Self> {
        None
    }
    /// NaN, for floats: what a *response*'s `null` stands for (responses write non-finite
    /// floats as `null`); a request's `null` is refused.
    fn nan() -> Option<Self> {
        None
    }
}

macro_rules! int_element {
    ($($t:ty => $what:literal),*) => {$(
        impl Element for $t {
            const WHAT: &'static str = $what;
            fn from_i64(v: i64) -> Option<Self> { <$t>::try_from(v).ok() }
            fn from_u64(v: u64) -> Option<Self> { <$t>::try_from(v).ok() }
        }
    )*};
}
int_element!(u8 => "UINT8 integers", u16 => "UINT16 integers", u32 => "UINT32 integers",
    u64 => "UINT64 integers", i8 => "INT8 integers", i16 => "INT16 integers",
    i32 => "INT32 integers", i64 => "INT64 integers");

macro_rules! float_element {
    ($($t:ty => $what:literal, $conv:expr, $nan:expr),*) => {$(
        impl Element for $t {
            const WHAT: &'static str = $what;
            fn from_i64(v: i64) -> Option<Self> { <Self as Element>::from_f64(v as f64) }
            fn from_u64(v: u64) -> Option<Self> { <Self as Element>::from_f64(v as f64) }
            /// A number the type cannot hold (it would become infinite) does not fit.
            fn from_f64(v: f64) -> Option<Self> {
                let x: $t = $conv(v);
                x.is_finite().then_some(x)
            }
            fn nan() -> Option<Self> { Some($nan) }
        }
    )*};
}
float_element!(f32 => "FP32 numbers", |v: f64| v as f32, f32::NAN,
    f64 => "FP64 numbers", |v: f64| v, f64::NAN,
    f16 => "FP16 numbers", f16::from_f64, f16::NAN);

impl Element for bool {
    const WHAT: &'static str = "BOOL values (true/false)";
    fn from_bool(v: bool) -> Option<Self> {
        Some(v)
    }
}

impl Element for Vec<u8> {
    const WHAT: &'static str = "BYTES strings";
    fn from_str(v: &str) -> Option<Self> {
        Some(v.as_bytes().to_vec())
    }
}

/// Deeper `data` is refused (serde_json's own limit, 128, refuses deeper still while the
/// request is read).
pub(super) const MAX_DEPTH: usize = 100;

/// What a JSON value of `data` was: a scalar, or an array.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(super) enum Kind {
    Scalar,
    Array,
}

/// Deserializes a scalar, a flat array, or arrays nested exactly as `shape`, into a flat
/// `Vec<T>`; anything else (nesting that does not follow the shape, mixed scalars and arrays,
/// more than [`MAX_DEPTH`] levels, an element that is not a `T`: `null` is not a number, JSON
/// has no NaN) is an error naming what was expected and the element's flat index.
pub(super) struct Flatten<'a, T> {
    out: &'a mut Vec<T>,
    shape: &'a [usize],
    depth: usize,
    /// Read `null` as NaN (a response's data), rather than refuse it (a request's).
    null_is_nan: bool,
}

impl<'de, T: Element> DeserializeSeed<'de> for Flatten<'_, T> {
    type Value = Kind;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Kind, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de, T: Element> Visitor<'de> for Flatten<'_, T> {
    type Value = Kind;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        write!(f, "{} (flat, or nested as the shape)", T::WHAT)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Kind, A::Error> {
        if self.depth >= MAX_DEPTH {
            return Err(de::Error::custom(format_args!(
                "nested deeper than {MAX_DEPTH} levels (the shape {:?} has {})",
                self.shape,
                self.shape.len()
            )));
        }
        let (mut len, mut scalars, mut arrays) = (0usize, 0usize, 0usize);
        while let Some(kind) = seq.next_element_seed(Flatten {
            out: &mut *self.out,
            shape: self.shape,
            depth: self.depth + 1,
            null_is_nan: self.null_is_nan,
        })? {
            len += 1;
            match kind {
                Kind::Scalar => scalars += 1,
                Kind::Array => arrays += 1,
            }
        }
        let ndim = self.shape.len();
        // Flat: one array of scalars (its length is checked against the shape's count).
        if self.depth == 0 && arrays == 0 {
            return Ok(Kind::Array);
        }
        let expected = (self.depth < ndim).then(|| self.shape[self.depth]);
        let leaf = self.depth + 1 == ndim;
        let fits = expected == Some(len) && if leaf { arrays == 0 } else { scalars == 0 };
        if !fits {
            let got = match (scalars, arrays) {
                (_, 0) => format!("{len} numbers"),
                (0, _) => format!("{len} arrays"),
                _ => format!("{len} elements mixing arrays and scalars"),
            };
            let wanted = match expected {
                None => "no array at all".to_owned(),
                Some(n) if leaf => format!("{n} scalars"),
                Some(n) => format!("{n} arrays"),
            };
            return Err(de::Error::custom(format_args!(
                "an array at depth {} holds {got} where the shape {:?} wants {wanted} (give `data` flat, or nested exactly as the shape)",
                self.depth + 1,
                self.shape
            )));
        }
        Ok(Kind::Array)
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Kind, E> {
        self.push(T::from_i64(v), &v)
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Kind, E> {
        self.push(T::from_u64(v), &v)
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Kind, E> {
        self.push(T::from_f64(v), &v)
    }

    fn visit_bool<E: de::Error>(self, v: bool) -> Result<Kind, E> {
        self.push(T::from_bool(v), &v)
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<Kind, E> {
        self.push(T::from_str(v), &format!("{v:?}"))
    }

    fn visit_unit<E: de::Error>(self) -> Result<Kind, E> {
        let v = if self.null_is_nan { T::nan() } else { None };
        self.push(v, &"null")
    }
}

impl<T: Element> Flatten<'_, T> {
    fn push<E: de::Error>(self, v: Option<T>, shown: &dyn fmt::Display) -> Result<Kind, E> {
        match v {
            Some(v) => {
                self.out.push(v);
                Ok(Kind::Scalar)
            }
            None => Err(E::custom(format_args!(
                "element {} is {shown}, which is not one of {}{}",
                self.out.len(),
                T::WHAT,
                if shown.to_string() == "null" && T::WHAT.starts_with("FP") {
                    " (JSON has no NaN or infinity: send non-finite values with the binary extension)"
                } else {
                    ""
                }
            ))),
        }
    }
}

pub(super) fn flatten<T: Element>(
    raw: &RawValue,
    shape: &[usize],
    count: usize,
    null_is_nan: bool,
) -> Result<Vec<T>> {
    // The shape comes from the request: reserve no more than the JSON could hold.
    let mut out = Vec::with_capacity(count.min(raw.get().len() / 2 + 1));
    let mut de = serde_json::Deserializer::from_str(raw.get());
    let kind = Flatten {
        out: &mut out,
        shape,
        depth: 0,
        null_is_nan,
    }
    .deserialize(&mut de)
    .map_err(|e| Error::bad_request(format!("`data`: {e}")))?;
    if kind == Kind::Scalar && count != 1 {
        return Err(Error::bad_request(format!(
            "`data` is one scalar but the shape {shape:?} holds {count} elements"
        )));
    }
    Ok(out)
}

pub(super) fn decode_json_data(
    datatype: DataType,
    raw: &RawValue,
    shape: &[usize],
    count: usize,
    null_is_nan: bool,
) -> Result<TensorData> {
    Ok(match datatype {
        DataType::Bool => TensorData::Bool(flatten(raw, shape, count, null_is_nan)?),
        DataType::Uint8 => TensorData::Uint8(flatten(raw, shape, count, null_is_nan)?),
        DataType::Uint16 => TensorData::Uint16(flatten(raw, shape, count, null_is_nan)?),
        DataType::Uint32 => TensorData::Uint32(flatten(raw, shape, count, null_is_nan)?),
        DataType::Uint64 => TensorData::Uint64(flatten(raw, shape, count, null_is_nan)?),
        DataType::Int8 => TensorData::Int8(flatten(raw, shape, count, null_is_nan)?),
        DataType::Int16 => TensorData::Int16(flatten(raw, shape, count, null_is_nan)?),
        DataType::Int32 => TensorData::Int32(flatten(raw, shape, count, null_is_nan)?),
        DataType::Int64 => TensorData::Int64(flatten(raw, shape, count, null_is_nan)?),
        DataType::Fp16 => TensorData::Fp16(flatten(raw, shape, count, null_is_nan)?),
        DataType::Fp32 => TensorData::Fp32(flatten(raw, shape, count, null_is_nan)?),
        DataType::Fp64 => TensorData::Fp64(flatten(raw, shape, count, null_is_nan)?),
        DataType::Bytes => TensorData::Bytes(flatten(raw, shape, count, null_is_nan)?),
    })
}

/// Serializes tensor data as a flat JSON array (FP16 as numbers, BYTES as strings: UTF-8
/// ones as they are, or every element as base64).
pub(super) enum JsonData<'a> {
    Plain(&'a TensorData),
    Base64(&'a TensorData),
}

impl Serialize for JsonData<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let data = match self {
            JsonData::Base64(TensorData::Bytes(v)) => {
                use base64::Engine;
                let engine = base64::engine::general_purpose::STANDARD;
                let mut seq = s.serialize_seq(Some(v.len()))?;
                for x in v {
                    seq.serialize_element(&engine.encode(x))?;
                }
                return seq.end();
            }
            JsonData::Plain(d) | JsonData::Base64(d) => *d,
        };
        match data {
            TensorData::Fp16(v) => {
                let mut seq = s.serialize_seq(Some(v.len()))?;
                for x in v {
                    seq.serialize_element(&x.to_f32())?;
                }
                seq.end()
            }
            TensorData::Bytes(v) => {
                let mut seq = s.serialize_seq(Some(v.len()))?;
                for x in v {
                    seq.serialize_element(&String::from_utf8_lossy(x))?;
                }
                seq.end()
            }
            other => crate::with_numeric_data!(other, v => v.serialize(s),
            _ => match other {
                TensorData::Bool(v) => v.serialize(s),
                _ => unreachable!("FP16 and BYTES are handled above"),
            }),
        }
    }
}
