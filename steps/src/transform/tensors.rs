//! Ops that reshape what travels: `select`, `rename`, `cast`, `reshape`, `noop`.

use half::f16;
use indexmap::IndexMap;
use schemars::JsonSchema;
use serde::Deserialize;
use servegraph_engine::{DataType, Error, Event, Result, Signature, TensorData, TensorMeta};

use super::{Op, targets};

/// `select`: keep only the named tensors, in that order.
#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Select {
    /// The tensors to keep.
    pub tensors: Vec<String>,
}

impl Op for Select {
    fn check(&self) -> Result<(), String> {
        if self.tensors.is_empty() {
            return Err("`tensors` must name at least one tensor".into());
        }
        Ok(())
    }

    fn apply(&self, event: &mut Event) -> Result<()> {
        let mut kept = Vec::with_capacity(self.tensors.len());
        for name in &self.tensors {
            kept.push(event.take(name)?);
        }
        event.tensors = kept;
        Ok(())
    }

    fn infer(&self, sig: &mut Signature) -> Result<(), String> {
        let mut kept = Vec::new();
        let mut unknown = false;
        for name in &self.tensors {
            match sig.get(name) {
                Some(t) => kept.push(t.clone()),
                None if sig.open => unknown = true,
                None => {
                    return Err(format!(
                        "no tensor `{name}` reaches this step; it gets: {}",
                        sig.describe()
                    ));
                }
            }
        }
        *sig = Signature {
            tensors: kept,
            open: unknown,
            implied: std::mem::take(&mut sig.implied),
        };
        Ok(())
    }
}

/// `rename`: `{old: new}` pairs.
#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(transparent)]
pub struct Rename {
    /// Old name → new name.
    pub names: IndexMap<String, String>,
}

impl Op for Rename {
    fn check(&self) -> Result<(), String> {
        if self.names.is_empty() {
            return Err("`args` must map at least one old name to a new one".into());
        }
        Ok(())
    }

    fn apply(&self, event: &mut Event) -> Result<()> {
        for (from, to) in &self.names {
            event.require_mut(from)?.name = to.clone();
        }
        Ok(())
    }

    fn infer(&self, sig: &mut Signature) -> Result<(), String> {
        for (from, to) in &self.names {
            match sig.tensors.iter_mut().find(|t| &t.name == from) {
                Some(t) => t.name = to.clone(),
                None if sig.open => {}
                None => {
                    return Err(format!(
                        "no tensor `{from}` reaches this step; it gets: {}",
                        sig.describe()
                    ));
                }
            }
        }
        Ok(())
    }

    fn takes(&self, after: Option<Vec<TensorMeta>>) -> Option<Vec<TensorMeta>> {
        let mut need = after?;
        for (from, to) in self.names.iter().rev() {
            if let Some(t) = need.iter_mut().find(|t| &t.name == to) {
                t.name = from.clone();
            }
        }
        Some(need)
    }
}

/// Numbers as a tensor of `datatype` (floats truncate toward zero for integer types; a value
/// out of the type's range is an error).
pub(super) fn cast_values(values: Vec<f64>, datatype: DataType) -> Result<TensorData> {
    macro_rules! ints {
        ($t:ty, $v:ident) => {
            TensorData::$v(
                values
                    .iter()
                    .map(|&x| {
                        let y = x.trunc();
                        if y.is_finite() && y >= <$t>::MIN as f64 && y <= <$t>::MAX as f64 {
                            Ok(y as $t)
                        } else {
                            Err(Error::unprocessable(format!("{x} does not fit {datatype}")))
                        }
                    })
                    .collect::<Result<_>>()?,
            )
        };
    }
    Ok(match datatype {
        DataType::Bool => TensorData::Bool(values.iter().map(|&x| x != 0.0).collect()),
        DataType::Uint8 => ints!(u8, Uint8),
        DataType::Uint16 => ints!(u16, Uint16),
        DataType::Uint32 => ints!(u32, Uint32),
        DataType::Uint64 => ints!(u64, Uint64),
        DataType::Int8 => ints!(i8, Int8),
        DataType::Int16 => ints!(i16, Int16),
        DataType::Int32 => ints!(i32, Int32),
        DataType::Int64 => ints!(i64, Int64),
        DataType::Fp16 => TensorData::Fp16(values.into_iter().map(f16::from_f64).collect()),
        DataType::Fp32 => TensorData::Fp32(values.into_iter().map(|x| x as f32).collect()),
        DataType::Fp64 => TensorData::Fp64(values),
        DataType::Bytes => return Err(Error::unprocessable("cannot cast numbers to BYTES")),
    })
}

/// `cast`: converts tensors to another numeric or BOOL datatype.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Cast {
    /// The datatype to convert to (`FP32`, `INT64`, `BOOL`, ...; not BYTES).
    #[schemars(schema_with = "cast_targets")]
    pub to: DataType,
    /// Tensors to convert; default: every numeric or BOOL tensor.
    #[serde(default)]
    pub tensors: Option<Vec<String>>,
}

/// The datatypes `cast` converts to: every one but BYTES (so the schema and the op agree).
pub(super) fn cast_targets(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
    let names: Vec<&str> = DataType::ALL
        .iter()
        .filter(|d| **d != DataType::Bytes)
        .map(|d| d.as_str())
        .collect();
    schemars::json_schema!({"type": "string", "enum": names})
}

impl Default for Cast {
    fn default() -> Self {
        Cast {
            to: DataType::Fp32,
            tensors: None,
        }
    }
}

impl Op for Cast {
    fn check(&self) -> Result<(), String> {
        if self.to == DataType::Bytes {
            return Err("`to` cannot be BYTES".into());
        }
        Ok(())
    }

    fn apply(&self, event: &mut Event) -> Result<()> {
        let picked: Vec<usize> = match &self.tensors {
            Some(_) => targets(&self.tensors, event)?,
            None => (0..event.tensors.len())
                .filter(|&i| event.tensors[i].datatype() != DataType::Bytes)
                .collect(),
        };
        for i in picked {
            let t = &mut event.tensors[i];
            if t.datatype() == self.to {
                continue;
            }
            let values = match &t.data {
                TensorData::Bool(v) => v.iter().map(|&b| b as u8 as f64).collect(),
                TensorData::Bytes(_) => {
                    return Err(Error::unprocessable(format!(
                        "cannot cast BYTES tensor `{}`",
                        t.name
                    )));
                }
                other => other.to_f64_vec().expect("numeric"),
            };
            t.data = cast_values(values, self.to)
                .map_err(|e| Error::unprocessable(format!("tensor `{}`: {}", t.name, e.message)))?;
        }
        Ok(())
    }

    fn infer(&self, sig: &mut Signature) -> Result<(), String> {
        let names: Vec<String> = match &self.tensors {
            Some(n) => n.clone(),
            None => sig
                .tensors
                .iter()
                .filter(|t| t.datatype != DataType::Bytes)
                .map(|t| t.name.clone())
                .collect(),
        };
        if self.tensors.is_none() && sig.open {
            // Every tensor not known here, whatever arrives, leaves as `to`.
            sig.implied.retain(|(n, _)| n.is_some());
            sig.implied.push((None, self.to));
        }
        for n in names {
            match sig.tensors.iter_mut().find(|t| t.name == n) {
                Some(t) if t.datatype == DataType::Bytes => {
                    return Err(format!("cannot cast BYTES tensor `{n}`"));
                }
                Some(t) => t.datatype = self.to,
                None if sig.open => sig.implied.push((Some(n.clone()), self.to)),
                None => {
                    return Err(format!(
                        "no tensor `{n}` reaches this step; it gets: {}",
                        sig.describe()
                    ));
                }
            }
        }
        Ok(())
    }
}

/// `reshape`: gives a tensor a new shape with the same number of elements; one dimension may
/// be -1 (inferred).
#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Reshape {
    /// The tensor to reshape.
    pub tensor: String,
    /// The new shape; at most one -1.
    pub shape: Vec<i64>,
}

impl Op for Reshape {
    fn check(&self) -> Result<(), String> {
        if self.shape.iter().filter(|&&d| d == -1).count() > 1 {
            return Err("`shape` may have at most one -1".into());
        }
        if self.shape.iter().any(|&d| d < -1) {
            return Err("`shape` dimensions must be ≥ 0, or -1 once".into());
        }
        Ok(())
    }

    fn apply(&self, event: &mut Event) -> Result<()> {
        let t = event.require_mut(&self.tensor)?;
        let total = t.data.len();
        let known: usize = self
            .shape
            .iter()
            .filter(|&&d| d >= 0)
            .map(|&d| d as usize)
            .product();
        let shape: Option<Vec<usize>> = if self.shape.contains(&-1) {
            (known > 0 && total % known == 0).then(|| {
                self.shape
                    .iter()
                    .map(|&d| if d == -1 { total / known } else { d as usize })
                    .collect()
            })
        } else {
            (known == total).then(|| self.shape.iter().map(|&d| d as usize).collect())
        };
        match shape {
            Some(shape) => {
                t.shape = shape;
                Ok(())
            }
            None => Err(Error::unprocessable(format!(
                "cannot reshape `{}` of shape {:?} ({total} elements) to {:?}",
                t.name, t.shape, self.shape
            ))),
        }
    }

    fn infer(&self, sig: &mut Signature) -> Result<(), String> {
        match sig.tensors.iter_mut().find(|t| t.name == self.tensor) {
            Some(t) => {
                if t.shape.iter().all(|&d| d >= 0) && !self.shape.contains(&-1) {
                    let have: i64 = t.shape.iter().product();
                    let want: i64 = self.shape.iter().product();
                    if have != want {
                        return Err(format!(
                            "cannot reshape `{}` of shape {:?} to {:?}",
                            t.name, t.shape, self.shape
                        ));
                    }
                }
                t.shape = self.shape.clone();
                Ok(())
            }
            None if sig.open => Ok(()),
            None => Err(format!(
                "no tensor `{}` reaches this step; it gets: {}",
                self.tensor,
                sig.describe()
            )),
        }
    }
}

/// `noop`: passes the event through unchanged (a join point, and the engine-overhead benchmark).
#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Noop {}

impl Op for Noop {
    fn apply(&self, _event: &mut Event) -> Result<()> {
        Ok(())
    }
    fn infer(&self, _sig: &mut Signature) -> Result<(), String> {
        Ok(())
    }
}
