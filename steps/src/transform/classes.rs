//! Ops that turn scores into answers: `argmax`, `label_map`, `top_k`, `threshold`, `one_hot`.

use schemars::JsonSchema;
use serde::Deserialize;
use servegraph_engine::tensor::ToF64;
use servegraph_engine::{
    DataType, Error, Event, Result, Signature, Tensor, TensorData, TensorMeta, with_numeric_data,
};

use super::Op;
use super::helpers::{last_dim, numbers, sig_numeric};
use super::tensors::cast_values;

/// `argmax` along the last axis: the index of the largest value, as INT64.
#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Argmax {
    /// The tensor to read (default `probabilities`).
    #[serde(default)]
    pub tensor: Option<String>,
    /// The INT64 tensor to write (default `label`).
    #[serde(default)]
    pub output: Option<String>,
}

impl Argmax {
    pub(super) fn input(&self) -> &str {
        self.tensor.as_deref().unwrap_or("probabilities")
    }
    pub(super) fn output(&self) -> &str {
        self.output.as_deref().unwrap_or("label")
    }
}

impl Op for Argmax {
    fn apply(&self, event: &mut Event) -> Result<()> {
        let t = event.require(self.input())?;
        let width = last_dim(&t.shape).max(1);
        let Some(values) = t.data.to_f64_vec() else {
            return Err(Error::unprocessable(format!(
                "argmax needs numbers but `{}` is {}",
                t.name,
                t.datatype()
            )));
        };
        let idx: Vec<i64> = values.chunks(width).map(argmax).map(|i| i as i64).collect();
        let mut shape = t.shape.clone();
        shape.pop();
        if shape.is_empty() {
            shape.push(1);
        }
        event.put(Tensor::new(self.output(), shape, TensorData::Int64(idx))?);
        Ok(())
    }

    fn infer(&self, sig: &mut Signature) -> Result<(), String> {
        let shape = match sig.get(self.input()) {
            Some(t) if !(t.datatype.is_float() || t.datatype.is_integer()) => {
                return Err(format!(
                    "argmax needs numbers but `{}` is {}",
                    t.name, t.datatype
                ));
            }
            Some(t) => {
                let mut s = t.shape.clone();
                s.pop();
                if s.is_empty() {
                    s.push(1);
                }
                s
            }
            None if sig.open => vec![-1],
            None => {
                return Err(format!(
                    "no tensor `{}` reaches this step; it gets: {}",
                    self.input(),
                    sig.describe()
                ));
            }
        };
        sig.put(TensorMeta::new(self.output(), DataType::Int64, shape));
        Ok(())
    }
}

/// Index of the largest value; the first one on ties.
pub fn argmax(row: &[f64]) -> usize {
    let mut best = 0;
    for (i, v) in row.iter().enumerate() {
        if *v > row[best] {
            best = i;
        }
    }
    best
}

/// `label_map`: class indices to names, INT → BYTES.
#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct LabelMap {
    /// Names by class index.
    pub labels: Vec<String>,
    /// The integer tensor to read (default `label`).
    #[serde(default)]
    pub tensor: Option<String>,
    /// The BYTES tensor to write (default: replace the input).
    #[serde(default)]
    pub output: Option<String>,
}

impl LabelMap {
    pub(super) fn input(&self) -> &str {
        self.tensor.as_deref().unwrap_or("label")
    }
    pub(super) fn output(&self) -> &str {
        self.output.as_deref().unwrap_or(self.input())
    }
}

impl Op for LabelMap {
    fn labels(&self) -> Option<Vec<String>> {
        Some(self.labels.clone())
    }

    fn check(&self) -> Result<(), String> {
        if self.labels.is_empty() {
            return Err("`labels` must list at least one name".into());
        }
        Ok(())
    }

    fn apply(&self, event: &mut Event) -> Result<()> {
        let t = event.require(self.input())?;
        let names = with_numeric_data!(&t.data,
            v => v.iter().map(|x| {
                let f = x.to_f64();
                let i = f as usize;
                if f < 0.0 || f.fract() != 0.0 || i >= self.labels.len() {
                    Err(Error::unprocessable(format!(
                        "class {f} in `{}` has no name; `labels` has {} entries",
                        t.name, self.labels.len()
                    )))
                } else {
                    Ok(self.labels[i].as_bytes().to_vec())
                }
            }).collect::<Result<Vec<_>>>()?,
            _ => return Err(Error::unprocessable(format!(
                "label_map needs class indices but `{}` is {}", t.name, t.datatype()))));
        let shape = t.shape.clone();
        event.put(Tensor::new(self.output(), shape, TensorData::Bytes(names))?);
        Ok(())
    }

    fn infer(&self, sig: &mut Signature) -> Result<(), String> {
        let shape = match sig.get(self.input()) {
            Some(t) if !t.datatype.is_integer() => {
                return Err(format!(
                    "label_map needs an integer tensor but `{}` is {}",
                    t.name, t.datatype
                ));
            }
            Some(t) => t.shape.clone(),
            None if sig.open => vec![-1],
            None => {
                return Err(format!(
                    "no tensor `{}` reaches this step; it gets: {}",
                    self.input(),
                    sig.describe()
                ));
            }
        };
        sig.put(TensorMeta::new(self.output(), DataType::Bytes, shape));
        Ok(())
    }
}

/// `top_k`: the `k` largest values along the last axis, their indices, and their labels.
#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct TopK {
    /// How many.
    pub k: usize,
    /// The tensor to read (default `probabilities`).
    #[serde(default)]
    pub tensor: Option<String>,
    /// Names by index: when given, a BYTES `labels` output is added.
    #[serde(default)]
    pub labels: Option<Vec<String>>,
    /// Output names: `{values, indices, labels}` (defaults `top_values`, `top_indices`,
    /// `top_labels`).
    #[serde(default)]
    pub outputs: Option<TopKOutputs>,
}

#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct TopKOutputs {
    #[serde(default)]
    pub values: Option<String>,
    #[serde(default)]
    pub indices: Option<String>,
    #[serde(default)]
    pub labels: Option<String>,
}

impl TopK {
    pub(super) fn input(&self) -> &str {
        self.tensor.as_deref().unwrap_or("probabilities")
    }
    pub(super) fn names(&self) -> (&str, &str, &str) {
        let o = self.outputs.as_ref();
        (
            o.and_then(|o| o.values.as_deref()).unwrap_or("top_values"),
            o.and_then(|o| o.indices.as_deref())
                .unwrap_or("top_indices"),
            o.and_then(|o| o.labels.as_deref()).unwrap_or("top_labels"),
        )
    }
}

impl Op for TopK {
    fn labels(&self) -> Option<Vec<String>> {
        self.labels.clone()
    }

    fn check(&self) -> Result<(), String> {
        if self.k == 0 {
            return Err("`k` must be at least 1".into());
        }
        if self.labels.as_ref().is_some_and(|l| l.len() < self.k) {
            return Err("`labels` must name at least `k` classes".into());
        }
        Ok(())
    }

    fn apply(&self, event: &mut Event) -> Result<()> {
        let t = event.require(self.input())?;
        let width = last_dim(&t.shape).max(1);
        if width < self.k {
            return Err(Error::unprocessable(format!(
                "top_k: `{}` has {width} values per row, fewer than k = {}",
                t.name, self.k
            )));
        }
        let values = numbers(t, "top_k")?;
        let mut shape = t.shape.clone();
        if shape.is_empty() {
            shape.push(1);
        }
        *shape.last_mut().expect("rank ≥ 1") = self.k;
        let (mut top_v, mut top_i) = (Vec::new(), Vec::new());
        for row in values.chunks(width) {
            let mut order: Vec<usize> = (0..row.len()).collect();
            // Largest first; equal values keep index order.
            order.sort_by(|&a, &b| row[b].total_cmp(&row[a]).then(a.cmp(&b)));
            for &i in &order[..self.k] {
                top_v.push(row[i]);
                top_i.push(i as i64);
            }
        }
        let dtype = t.datatype();
        let (vn, inn, ln) = self.names();
        let mut out = vec![
            Tensor::new(
                vn,
                shape.clone(),
                crate::ensemble::float_like(
                    if dtype.is_float() {
                        dtype
                    } else {
                        DataType::Fp32
                    },
                    top_v,
                ),
            )?,
            Tensor::new(inn, shape.clone(), TensorData::Int64(top_i.clone()))?,
        ];
        if let Some(labels) = &self.labels {
            let names = top_i
                .iter()
                .map(|&i| {
                    labels
                        .get(i as usize)
                        .map(|l| l.as_bytes().to_vec())
                        .ok_or_else(|| {
                            Error::unprocessable(format!(
                                "class {i} has no name; `labels` has {} entries",
                                labels.len()
                            ))
                        })
                })
                .collect::<Result<Vec<_>>>()?;
            out.push(Tensor::new(ln, shape, TensorData::Bytes(names))?);
        }
        for t in out {
            event.put(t);
        }
        Ok(())
    }

    fn infer(&self, sig: &mut Signature) -> Result<(), String> {
        let (dtype, mut shape) = match sig_numeric(sig, self.input(), "top_k")? {
            Some(t) => (
                if t.datatype.is_float() {
                    t.datatype
                } else {
                    DataType::Fp32
                },
                t.shape.clone(),
            ),
            None => (DataType::Fp32, vec![-1, -1]),
        };
        if let Some(&last) = shape.last()
            && last >= 0
            && (last as usize) < self.k
        {
            return Err(format!(
                "top_k: `{}` has {last} values per row, fewer than k = {}",
                self.input(),
                self.k
            ));
        }
        if shape.is_empty() {
            shape.push(1);
        }
        *shape.last_mut().expect("rank ≥ 1") = self.k as i64;
        let (vn, inn, ln) = self.names();
        sig.put(TensorMeta::new(vn, dtype, shape.clone()));
        sig.put(TensorMeta::new(inn, DataType::Int64, shape.clone()));
        if self.labels.is_some() {
            sig.put(TensorMeta::new(ln, DataType::Bytes, shape));
        }
        Ok(())
    }
}

/// `threshold`: 1 where the value is ≥ `threshold`, else 0, as INT64 (binary decisions).
#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Threshold {
    /// The cut-off (default 0.5).
    #[serde(default)]
    pub threshold: Option<f64>,
    /// The tensor to read (default `probabilities`).
    #[serde(default)]
    pub tensor: Option<String>,
    /// The INT64 tensor to write (default `label`).
    #[serde(default)]
    pub output: Option<String>,
}

impl Threshold {
    pub(super) fn input(&self) -> &str {
        self.tensor.as_deref().unwrap_or("probabilities")
    }
    pub(super) fn output(&self) -> &str {
        self.output.as_deref().unwrap_or("label")
    }
}

impl Op for Threshold {
    fn apply(&self, event: &mut Event) -> Result<()> {
        let cut = self.threshold.unwrap_or(0.5);
        let t = event.require(self.input())?;
        let flags = numbers(t, "threshold")?
            .into_iter()
            .map(|v| (v >= cut) as i64)
            .collect();
        let shape = t.shape.clone();
        event.put(Tensor::new(self.output(), shape, TensorData::Int64(flags))?);
        Ok(())
    }

    fn infer(&self, sig: &mut Signature) -> Result<(), String> {
        let shape =
            sig_numeric(sig, self.input(), "threshold")?.map_or(vec![-1], |t| t.shape.clone());
        sig.put(TensorMeta::new(self.output(), DataType::Int64, shape));
        Ok(())
    }
}

/// `one_hot`: integer classes to one-hot vectors along a new last axis.
#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct OneHot {
    /// How many classes.
    pub depth: usize,
    /// The integer tensor to read (default `label`).
    #[serde(default)]
    pub tensor: Option<String>,
    /// The tensor to write (default: replace the input).
    #[serde(default)]
    pub output: Option<String>,
    /// The output's datatype (default FP32).
    #[serde(default)]
    pub datatype: Option<DataType>,
}

impl OneHot {
    pub(super) fn input(&self) -> &str {
        self.tensor.as_deref().unwrap_or("label")
    }
    pub(super) fn output(&self) -> &str {
        self.output.as_deref().unwrap_or(self.input())
    }
    pub(super) fn dtype(&self) -> DataType {
        self.datatype.unwrap_or(DataType::Fp32)
    }
}

impl Op for OneHot {
    fn check(&self) -> Result<(), String> {
        if self.depth == 0 {
            return Err("`depth` must be at least 1".into());
        }
        if matches!(self.dtype(), DataType::Bytes) {
            return Err("`datatype` must be numeric or BOOL".into());
        }
        Ok(())
    }

    fn apply(&self, event: &mut Event) -> Result<()> {
        let t = event.require(self.input())?;
        if !t.datatype().is_integer() {
            return Err(Error::unprocessable(format!(
                "one_hot needs integer classes but `{}` is {}",
                t.name,
                t.datatype()
            )));
        }
        let mut hot = vec![0.0; t.data.len() * self.depth];
        for (row, v) in numbers(t, "one_hot")?.into_iter().enumerate() {
            if v < 0.0 || v as usize >= self.depth {
                return Err(Error::unprocessable(format!(
                    "class {v} in `{}` is outside one_hot's depth of {}",
                    t.name, self.depth
                )));
            }
            hot[row * self.depth + v as usize] = 1.0;
        }
        let mut shape = t.shape.clone();
        shape.push(self.depth);
        let data = cast_values(hot, self.dtype())?;
        event.put(Tensor::new(self.output(), shape, data)?);
        Ok(())
    }

    fn infer(&self, sig: &mut Signature) -> Result<(), String> {
        let mut shape = match sig.get(self.input()) {
            Some(t) if !t.datatype.is_integer() => {
                return Err(format!(
                    "one_hot needs integer classes but `{}` is {}",
                    t.name, t.datatype
                ));
            }
            Some(t) => t.shape.clone(),
            None if sig.open => vec![-1],
            None => {
                return Err(format!(
                    "no tensor `{}` reaches this step; it gets: {}",
                    self.input(),
                    sig.describe()
                ));
            }
        };
        shape.push(self.depth as i64);
        sig.put(TensorMeta::new(self.output(), self.dtype(), shape));
        Ok(())
    }
}
