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
    /// JSON `null`: NaN for floats (JSON has no NaN or infinity: responses write non-finite
    /// floats as `null`, so requests and responses read it back).
    fn from_null() -> Option<Self> {
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
            fn from_null() -> Option<Self> { Some($nan) }
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

/// Deserializes a scalar or an arbitrarily nested array of scalars into a flat `Vec<T>`.
pub(super) struct Flatten<'a, T>(&'a mut Vec<T>);

impl<'de, T: Element> DeserializeSeed<'de> for Flatten<'_, T> {
    type Value = ();
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de, T: Element> Visitor<'de> for Flatten<'_, T> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        write!(f, "{} (flat or nested arrays)", T::WHAT)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        while seq.next_element_seed(Flatten(&mut *self.0))?.is_some() {}
        Ok(())
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<(), E> {
        self.push(T::from_i64(v), &v)
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<(), E> {
        self.push(T::from_u64(v), &v)
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> Result<(), E> {
        self.push(T::from_f64(v), &v)
    }

    fn visit_bool<E: de::Error>(self, v: bool) -> Result<(), E> {
        self.push(T::from_bool(v), &v)
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<(), E> {
        self.push(T::from_str(v), &format!("{v:?}"))
    }

    fn visit_unit<E: de::Error>(self) -> Result<(), E> {
        self.push(T::from_null(), &"null")
    }
}

impl<T: Element> Flatten<'_, T> {
    fn push<E: de::Error>(self, v: Option<T>, shown: &dyn fmt::Display) -> Result<(), E> {
        match v {
            Some(v) => {
                self.0.push(v);
                Ok(())
            }
            None => Err(E::custom(format_args!("{shown} is not one of {}", T::WHAT))),
        }
    }
}

pub(super) fn flatten<T: Element>(raw: &RawValue, count: usize) -> Result<Vec<T>> {
    // The shape comes from the request: reserve no more than the JSON could hold.
    let mut out = Vec::with_capacity(count.min(raw.get().len() / 2 + 1));
    let mut de = serde_json::Deserializer::from_str(raw.get());
    Flatten(&mut out)
        .deserialize(&mut de)
        .map_err(|e| Error::bad_request(format!("`data`: {e}")))?;
    Ok(out)
}

pub(super) fn decode_json_data(
    datatype: DataType,
    raw: &RawValue,
    count: usize,
) -> Result<TensorData> {
    Ok(match datatype {
        DataType::Bool => TensorData::Bool(flatten(raw, count)?),
        DataType::Uint8 => TensorData::Uint8(flatten(raw, count)?),
        DataType::Uint16 => TensorData::Uint16(flatten(raw, count)?),
        DataType::Uint32 => TensorData::Uint32(flatten(raw, count)?),
        DataType::Uint64 => TensorData::Uint64(flatten(raw, count)?),
        DataType::Int8 => TensorData::Int8(flatten(raw, count)?),
        DataType::Int16 => TensorData::Int16(flatten(raw, count)?),
        DataType::Int32 => TensorData::Int32(flatten(raw, count)?),
        DataType::Int64 => TensorData::Int64(flatten(raw, count)?),
        DataType::Fp16 => TensorData::Fp16(flatten(raw, count)?),
        DataType::Fp32 => TensorData::Fp32(flatten(raw, count)?),
        DataType::Fp64 => TensorData::Fp64(flatten(raw, count)?),
        DataType::Bytes => TensorData::Bytes(flatten(raw, count)?),
    })
}

/// Serializes tensor data as a flat JSON array (FP16 as numbers, BYTES as strings).
pub(super) struct JsonData<'a>(pub(super) &'a TensorData);

impl Serialize for JsonData<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self.0 {
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
