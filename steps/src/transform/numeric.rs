//! Ops that rescale numbers: `standardize`, `min_max`, `clip`, `softmax`, `sigmoid`.

use schemars::JsonSchema;
use serde::Deserialize;
use servegraph_engine::{Error, Event, Result, Signature};

use super::helpers::{infer_float_map, last_dim, map_float, per_feature};
use super::{Op, targets};

/// `standardize`: `(x - mean) / std` per feature along the last axis.
#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Standardize {
    /// Per-feature means (one per element of the last axis), or a single value for all.
    pub mean: Vec<f64>,
    /// Per-feature standard deviations, same length as `mean`; all > 0.
    pub std: Vec<f64>,
    /// Tensors to scale; default: every floating-point tensor.
    #[serde(default)]
    pub tensors: Option<Vec<String>>,
}

impl Op for Standardize {
    fn check(&self) -> Result<(), String> {
        if self.mean.is_empty() || self.mean.len() != self.std.len() {
            return Err(format!(
                "`mean` and `std` must have the same, non-zero length (got {} and {})",
                self.mean.len(),
                self.std.len()
            ));
        }
        if self.std.iter().any(|s| *s <= 0.0 || !s.is_finite()) {
            return Err("every `std` must be a positive number".into());
        }
        Ok(())
    }

    fn apply(&self, event: &mut Event) -> Result<()> {
        let n = self.mean.len();
        for i in targets(&self.tensors, event)? {
            let t = &mut event.tensors[i];
            if n > 1 && last_dim(&t.shape) != n {
                return Err(Error::unprocessable(format!(
                    "tensor `{}` has shape {:?}; standardize has {n} means, so its last dimension must be {n}",
                    t.name, t.shape
                )));
            }
            map_float(t, |i, x| (x - self.mean[i % n]) / self.std[i % n])?;
        }
        Ok(())
    }

    fn infer(&self, sig: &mut Signature) -> Result<(), String> {
        infer_float_map(&self.tensors, sig, "standardize", Some(self.mean.len()))
    }
}

/// `softmax` along the last axis.
#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Softmax {
    /// Tensors to normalise; default: every floating-point tensor.
    #[serde(default)]
    pub tensors: Option<Vec<String>>,
}

impl Op for Softmax {
    fn apply(&self, event: &mut Event) -> Result<()> {
        for i in targets(&self.tensors, event)? {
            let t = &mut event.tensors[i];
            let width = last_dim(&t.shape).max(1);
            let Some(values) = t.data.to_f64_vec() else {
                return Err(Error::unprocessable(format!(
                    "softmax needs numbers but `{}` is {}",
                    t.name,
                    t.datatype()
                )));
            };
            let mut out = Vec::with_capacity(values.len());
            for row in values.chunks(width) {
                let max = row.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
                let exps: Vec<f64> = row.iter().map(|x| (x - max).exp()).collect();
                let sum: f64 = exps.iter().sum();
                out.extend(exps.into_iter().map(|e| e / sum));
            }
            map_float(t, |i, _| out[i])?;
        }
        Ok(())
    }

    fn infer(&self, sig: &mut Signature) -> Result<(), String> {
        infer_float_map(&self.tensors, sig, "softmax", None)
    }
}

/// `min_max`: `(x - min) / (max - min)` per feature along the last axis.
#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct MinMax {
    /// Per-feature minimums (or one for all).
    pub min: Vec<f64>,
    /// Per-feature maximums, same length; each > its minimum.
    pub max: Vec<f64>,
    /// Tensors to scale; default: every floating-point tensor.
    #[serde(default)]
    pub tensors: Option<Vec<String>>,
}

impl Op for MinMax {
    fn check(&self) -> Result<(), String> {
        if self.min.is_empty() || self.min.len() != self.max.len() {
            return Err(format!(
                "`min` and `max` must have the same, non-zero length (got {} and {})",
                self.min.len(),
                self.max.len()
            ));
        }
        if self
            .min
            .iter()
            .zip(&self.max)
            .any(|(lo, hi)| hi.partial_cmp(lo) != Some(std::cmp::Ordering::Greater))
        {
            return Err("every `max` must be greater than its `min`".into());
        }
        Ok(())
    }

    fn apply(&self, event: &mut Event) -> Result<()> {
        let n = self.min.len();
        for i in targets(&self.tensors, event)? {
            let t = &mut event.tensors[i];
            per_feature(&self.min, t, "min_max")?;
            map_float(t, |i, x| {
                (x - self.min[i % n]) / (self.max[i % n] - self.min[i % n])
            })?;
        }
        Ok(())
    }

    fn infer(&self, sig: &mut Signature) -> Result<(), String> {
        infer_float_map(&self.tensors, sig, "min_max", Some(self.min.len()))
    }
}

/// `clip`: bounds every element to `[min, max]` (either may be left out).
#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Clip {
    #[serde(default)]
    pub min: Option<f64>,
    #[serde(default)]
    pub max: Option<f64>,
    /// Tensors to clip; default: every floating-point tensor.
    #[serde(default)]
    pub tensors: Option<Vec<String>>,
}

impl Op for Clip {
    fn check(&self) -> Result<(), String> {
        match (self.min, self.max) {
            (None, None) => Err("give `min`, `max` or both".into()),
            (Some(lo), Some(hi)) if lo > hi => {
                Err(format!("`min` ({lo}) is greater than `max` ({hi})"))
            }
            _ => Ok(()),
        }
    }

    fn apply(&self, event: &mut Event) -> Result<()> {
        let (lo, hi) = (
            self.min.unwrap_or(f64::NEG_INFINITY),
            self.max.unwrap_or(f64::INFINITY),
        );
        for i in targets(&self.tensors, event)? {
            map_float(&mut event.tensors[i], |_, x| x.clamp(lo, hi))?;
        }
        Ok(())
    }

    fn infer(&self, sig: &mut Signature) -> Result<(), String> {
        infer_float_map(&self.tensors, sig, "clip", None)
    }
}

/// `sigmoid`: `1 / (1 + e^-x)` element-wise (multi-label scores).
#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Sigmoid {
    /// Tensors to transform; default: every floating-point tensor.
    #[serde(default)]
    pub tensors: Option<Vec<String>>,
}

impl Op for Sigmoid {
    fn apply(&self, event: &mut Event) -> Result<()> {
        for i in targets(&self.tensors, event)? {
            map_float(&mut event.tensors[i], |_, x| 1.0 / (1.0 + (-x).exp()))?;
        }
        Ok(())
    }

    fn infer(&self, sig: &mut Signature) -> Result<(), String> {
        infer_float_map(&self.tensors, sig, "sigmoid", None)
    }
}
