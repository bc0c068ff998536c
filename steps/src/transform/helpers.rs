//! What the ops share: which tensors an op applies to, element-wise float maps, numeric checks.

use half::f16;
use servegraph_engine::{
    DataType, Error, Event, Result, Signature, Tensor, TensorData, TensorMeta,
};

/// The tensors an op applies to: those named, or every floating-point tensor.
pub(crate) fn targets<'a>(named: &'a Option<Vec<String>>, event: &'a Event) -> Result<Vec<usize>> {
    match named {
        Some(names) => names
            .iter()
            .map(|n| {
                event
                    .tensors
                    .iter()
                    .position(|t| &t.name == n)
                    .ok_or_else(|| event.require(n).unwrap_err())
            })
            .collect(),
        None => Ok((0..event.tensors.len())
            .filter(|&i| event.tensors[i].datatype().is_float())
            .collect()),
    }
}

pub(super) fn sig_targets(
    named: &Option<Vec<String>>,
    sig: &Signature,
) -> Result<Vec<usize>, String> {
    match named {
        Some(names) => {
            let mut out = Vec::new();
            for n in names {
                match sig.tensors.iter().position(|t| &t.name == n) {
                    Some(i) => out.push(i),
                    None if sig.open => {}
                    None => {
                        return Err(format!(
                            "no tensor `{n}` reaches this step; it gets: {}",
                            sig.describe()
                        ));
                    }
                }
            }
            Ok(out)
        }
        None => Ok((0..sig.tensors.len())
            .filter(|&i| sig.tensors[i].datatype.is_float())
            .collect()),
    }
}

/// Signature of an element-wise float op on `tensors` (default: every float tensor): each must
/// be numeric (integers become FP32; ops for which integers make no sense, such as softmax,
/// refuse them) and, with `features`, have that many values on its last axis.
pub(super) fn infer_float_map(
    tensors: &Option<Vec<String>>,
    sig: &mut Signature,
    op: &str,
    features: Option<usize>,
) -> Result<(), String> {
    let floats_only = matches!(op, "softmax" | "sigmoid" | "standardize");
    let refuse = |name: &str, datatype: DataType| {
        format!(
            "{op} needs floating-point data but `{name}` is {datatype} \
             (add `{{op: cast, args: {{to: FP32, tensors: [{name}]}}}}` before it if that is meant)"
        )
    };
    if floats_only && let Some(names) = tensors {
        for n in names {
            if sig.get(n).is_none()
                && let Some(d) = sig.implied_datatype(n)
                && !d.is_float()
            {
                return Err(refuse(n, d));
            }
        }
    }
    for i in sig_targets(tensors, sig)? {
        let t = &mut sig.tensors[i];
        if !(t.datatype.is_float() || t.datatype.is_integer()) {
            return Err(format!(
                "{op} needs numbers but `{}` is {}",
                t.name, t.datatype
            ));
        }
        if floats_only && !t.datatype.is_float() {
            return Err(refuse(&t.name, t.datatype));
        }
        if let (Some(n), Some(&d)) = (features, t.shape.last())
            && n > 1
            && d >= 0
            && d as usize != n
        {
            return Err(format!(
                "{op} has {n} values per feature but `{}` has shape {:?}",
                t.name, t.shape
            ));
        }
        if !t.datatype.is_float() {
            t.datatype = DataType::Fp32;
        }
    }
    Ok(())
}

/// Applies `f` to every element as f64, keeping float tensors' type and turning integer
/// tensors into FP32.
pub(super) fn map_float(t: &mut Tensor, f: impl Fn(usize, f64) -> f64) -> Result<()> {
    let data = std::mem::replace(&mut t.data, TensorData::Bool(Vec::new()));
    t.data = match data {
        TensorData::Fp32(mut v) => {
            v.iter_mut()
                .enumerate()
                .for_each(|(i, x)| *x = f(i, *x as f64) as f32);
            TensorData::Fp32(v)
        }
        TensorData::Fp64(mut v) => {
            v.iter_mut().enumerate().for_each(|(i, x)| *x = f(i, *x));
            TensorData::Fp64(v)
        }
        TensorData::Fp16(mut v) => {
            v.iter_mut()
                .enumerate()
                .for_each(|(i, x)| *x = f16::from_f64(f(i, x.to_f64())));
            TensorData::Fp16(v)
        }
        other => match other.to_f64_vec() {
            Some(v) => TensorData::Fp32(
                v.into_iter()
                    .enumerate()
                    .map(|(i, x)| f(i, x) as f32)
                    .collect(),
            ),
            None => {
                let dt = other.datatype();
                t.data = other;
                return Err(Error::unprocessable(format!(
                    "tensor `{}` is {dt}; this op needs numbers",
                    t.name
                )));
            }
        },
    };
    Ok(())
}

pub(super) fn last_dim(shape: &[usize]) -> usize {
    shape.last().copied().unwrap_or(1)
}

// ---------------------------------------------------------------------------------------------

/// Checks a named tensor's presence and numeric type in a signature; `Ok(None)` when unknown.
pub(super) fn sig_numeric<'a>(
    sig: &'a Signature,
    name: &str,
    op: &str,
) -> Result<Option<&'a TensorMeta>, String> {
    match sig.get(name) {
        Some(t) if !(t.datatype.is_float() || t.datatype.is_integer()) => Err(format!(
            "{op} needs numbers but `{}` is {}",
            t.name, t.datatype
        )),
        Some(t) => Ok(Some(t)),
        None if sig.open => Ok(None),
        None => Err(format!(
            "no tensor `{name}` reaches this step; it gets: {}",
            sig.describe()
        )),
    }
}

/// The numbers of a tensor, or a 422 naming it.
pub(super) fn numbers(t: &Tensor, op: &str) -> Result<Vec<f64>> {
    t.data.to_f64_vec().ok_or_else(|| {
        Error::unprocessable(format!(
            "{op} needs numbers but `{}` is {}",
            t.name,
            t.datatype()
        ))
    })
}

/// Per-feature values along the last axis: one value for all, or one per feature.
pub(super) fn per_feature(values: &[f64], t: &Tensor, op: &str) -> Result<()> {
    let n = values.len();
    if n > 1 && last_dim(&t.shape) != n {
        return Err(Error::unprocessable(format!(
            "tensor `{}` has shape {:?}; {op} has {n} values, so its last dimension must be {n}",
            t.name, t.shape
        )));
    }
    Ok(())
}
