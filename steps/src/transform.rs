//! `kind: transform`: built-in pre- and post-processing ops, chosen by `op` with their `args`.
//!
//! ```yaml
//! scale: {kind: transform, op: standardize, args: {mean: [5.8, 3.0, 3.7, 1.2], std: [0.8, 0.4, 1.8, 0.8]}}
//! ```

use half::f16;
use indexmap::IndexMap;
use marked_yaml::Node;
use schemars::JsonSchema;
use serde::Deserialize;
use serde::de::DeserializeOwned;
use servegraph_engine::diag::{Diagnostic, one_of};
use servegraph_engine::step::from_yaml;
use servegraph_engine::tensor::ToF64;
use servegraph_engine::{
    BuildContext, DataType, Error, Event, Result, Signature, Step, StepNode, Tensor, TensorData,
    TensorMeta, async_trait, with_numeric_data,
};

/// One transform op: applied in place to an event, and inferred on a signature.
trait Op: Send + Sync + 'static {
    /// Checks the args once, at build time.
    fn check(&self) -> Result<(), String> {
        Ok(())
    }
    fn apply(&self, event: &mut Event) -> Result<()>;
    fn infer(&self, sig: &mut Signature) -> Result<(), String>;
}

/// The ops, by name, with how each parses its `args`.
const OPS: [&str; 7] = [
    "standardize",
    "softmax",
    "argmax",
    "label_map",
    "select",
    "rename",
    "noop",
];

/// The step: one op.
pub struct Transform {
    op: Box<dyn Op>,
}

#[async_trait]
impl Step for Transform {
    async fn process(&self, mut event: Event) -> Result<Event> {
        self.op.apply(&mut event)?;
        Ok(event)
    }

    fn infer(&self, input: &Signature) -> Result<Signature, String> {
        let mut sig = input.clone();
        self.op.infer(&mut sig)?;
        Ok(sig)
    }

    fn platform(&self) -> &str {
        "servegraph_transform"
    }
}

/// Builds a `transform` step: `op` names the op, `args` holds its arguments.
pub fn build(node: &StepNode, ctx: &mut BuildContext) -> Option<Box<dyn Step>> {
    let mut ok = true;
    for key in node.body.keys() {
        if !matches!(key.as_str(), "op" | "args") {
            ctx.report(
                Diagnostic::new(format!(
                    "unknown field `{}` for a `transform` step",
                    key.as_str()
                ))
                .step(&node.name)
                .at(key.span())
                .help("expected one of `op`, `args`, `after`, `responder` or `timeout_ms`"),
            );
            ok = false;
        }
    }
    let op = match node.body.get_scalar("op") {
        Some(op) if OPS.contains(&op.as_str()) => op.as_str(),
        Some(op) => {
            ctx.report(
                Diagnostic::new(format!("unknown op `{}`", op.as_str()))
                    .step(&node.name)
                    .at(op.span())
                    .help(format!("expected one of {}", one_of(&OPS))),
            );
            return None;
        }
        None => {
            ctx.report(
                Diagnostic::new("missing field `op`")
                    .step(&node.name)
                    .at(&node.span)
                    .help(format!("expected one of {}", one_of(&OPS))),
            );
            return None;
        }
    };
    let args = node.body.get_node("args");
    let what = format!("the `{op}` op's args");
    let parsed = match op {
        "standardize" => args_of::<Standardize>(args, node, &what).map(boxed),
        "softmax" => args_of::<Softmax>(args, node, &what).map(boxed),
        "argmax" => args_of::<Argmax>(args, node, &what).map(boxed),
        "label_map" => args_of::<LabelMap>(args, node, &what).map(boxed),
        "select" => args_of::<Select>(args, node, &what).map(boxed),
        "rename" => args_of::<Rename>(args, node, &what).map(boxed),
        "noop" => args_of::<Noop>(args, node, &what).map(boxed),
        _ => unreachable!("checked against OPS"),
    };
    let op = match parsed {
        Ok(op) => op,
        Err(d) => {
            ctx.report(d.step(&node.name));
            return None;
        }
    };
    if let Err(message) = op.check() {
        let span = args.map(|a| *a.span()).unwrap_or(node.span);
        ctx.error(&node.name, &span, message);
        return None;
    }
    ok.then(|| Box::new(Transform { op }) as Box<dyn Step>)
}

fn boxed<T: Op>(op: T) -> Box<dyn Op> {
    Box::new(op)
}

fn args_of<T: DeserializeOwned + Default>(
    args: Option<&Node>,
    node: &StepNode,
    what: &str,
) -> Result<T, Diagnostic> {
    match args {
        None => from_yaml::<T>(
            &Node::Mapping(marked_yaml::types::MarkedMappingNode::new_empty(node.span)),
            &node.span,
            what,
            &[],
        ),
        Some(a) => from_yaml::<T>(a, &node.span, what, &[]),
    }
}

/// The tensors an op applies to: those named, or every floating-point tensor.
fn targets<'a>(named: &'a Option<Vec<String>>, event: &'a Event) -> Result<Vec<usize>> {
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

fn sig_targets(named: &Option<Vec<String>>, sig: &Signature) -> Result<Vec<usize>, String> {
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

/// Applies `f` to every element as f64, keeping float tensors' type and turning integer
/// tensors into FP32.
fn map_float(t: &mut Tensor, f: impl Fn(usize, f64) -> f64) -> Result<()> {
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

fn last_dim(shape: &[usize]) -> usize {
    shape.last().copied().unwrap_or(1)
}

// ---------------------------------------------------------------------------------------------

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
        let n = self.mean.len();
        for i in sig_targets(&self.tensors, sig)? {
            let t = &mut sig.tensors[i];
            if t.datatype == DataType::Bool || t.datatype == DataType::Bytes {
                return Err(format!(
                    "standardize needs numbers but `{}` is {}",
                    t.name, t.datatype
                ));
            }
            if let Some(&d) = t.shape.last()
                && n > 1
                && d >= 0
                && d as usize != n
            {
                return Err(format!(
                    "standardize has {n} means but `{}` has shape {:?}",
                    t.name, t.shape
                ));
            }
            if !t.datatype.is_float() {
                t.datatype = DataType::Fp32;
            }
        }
        Ok(())
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
        for i in sig_targets(&self.tensors, sig)? {
            let t = &mut sig.tensors[i];
            if !(t.datatype.is_float() || t.datatype.is_integer()) {
                return Err(format!(
                    "softmax needs numbers but `{}` is {}",
                    t.name, t.datatype
                ));
            }
            if !t.datatype.is_float() {
                t.datatype = DataType::Fp32;
            }
        }
        Ok(())
    }
}

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
    fn input(&self) -> &str {
        self.tensor.as_deref().unwrap_or("probabilities")
    }
    fn output(&self) -> &str {
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
    fn input(&self) -> &str {
        self.tensor.as_deref().unwrap_or("label")
    }
    fn output(&self) -> &str {
        self.output.as_deref().unwrap_or(self.input())
    }
}

impl Op for LabelMap {
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

#[cfg(test)]
mod tests {
    use std::path::Path;

    use servegraph_engine::{BuildMode, Graph, Registry};

    use super::*;

    fn registry() -> Registry {
        let mut r = Registry::new();
        r.register("transform", build);
        r
    }

    fn run(yaml: &str, tensors: Vec<Tensor>) -> Result<Event> {
        let graph = Graph::from_yaml(yaml, Path::new("."), &registry(), BuildMode::Load)
            .unwrap_or_else(|d| panic!("{d:?}"));
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(graph.run(Event::new("t", tensors)))
    }

    fn fp32(name: &str, shape: Vec<usize>, v: Vec<f32>) -> Tensor {
        Tensor::new(name, shape, TensorData::Fp32(v)).unwrap()
    }

    #[test]
    fn standardize_softmax_argmax_label_map_chain() {
        let yaml = r#"
name: t
graph:
  kind: flow
  steps:
    scale: {kind: transform, op: standardize, args: {mean: [1, 2], std: [2, 4]}}
    soft: {kind: transform, op: softmax, after: scale}
    top: {kind: transform, op: argmax, after: soft, args: {tensor: x}}
    names: {kind: transform, op: label_map, after: top, args: {labels: [a, b]}}
"#;
        let out = run(yaml, vec![fp32("x", vec![2, 2], vec![3.0, 2.0, 1.0, 10.0])]).unwrap();
        let x = out.get("x").unwrap();
        let TensorData::Fp32(v) = &x.data else {
            panic!()
        };
        // Row 1: standardized [1, 0] → softmax favours index 0; row 2: [0, 2] → index 1.
        assert!(v[0] > v[1] && v[3] > v[2]);
        assert!((v[0] + v[1] - 1.0).abs() < 1e-6);
        assert_eq!(
            out.get("label").unwrap().data,
            TensorData::Bytes(vec![b"a".to_vec(), b"b".to_vec()])
        );
    }

    #[test]
    fn select_and_rename() {
        let yaml = r#"
name: t
graph:
  kind: flow
  steps:
    keep: {kind: transform, op: select, args: {tensors: [b]}}
    ren: {kind: transform, op: rename, after: keep, args: {b: c}}
"#;
        let out = run(
            yaml,
            vec![fp32("a", vec![1], vec![1.0]), fp32("b", vec![1], vec![2.0])],
        )
        .unwrap();
        assert_eq!(out.tensors.len(), 1);
        assert_eq!(out.tensors[0].name, "c");
        let err = run(yaml, vec![fp32("a", vec![1], vec![1.0])]).unwrap_err();
        assert_eq!(
            err.to_string(),
            "step `keep`: no tensor `b`; the request has: a FP32 [1]"
        );
    }

    #[test]
    fn wrong_feature_count_is_unprocessable() {
        let yaml = "name: t\ngraph: {kind: flow, steps: {s: {kind: transform, op: standardize, args: {mean: [0, 0], std: [1, 1]}}}}\n";
        let err = run(yaml, vec![fp32("x", vec![1, 3], vec![1.0; 3])]).unwrap_err();
        assert_eq!(err.kind, servegraph_engine::ErrorKind::Unprocessable);
        assert!(err.message.contains("last dimension must be 2"), "{err}");
    }

    #[test]
    fn bad_args_are_reported_with_location() {
        let yaml = r#"name: t
graph:
  kind: flow
  steps:
    a: {kind: transform, op: standardise}
    b: {kind: transform, op: standardize, args: {mean: [1], std: [0]}}
    c: {kind: transform, op: label_map, args: {labels: [x], colour: red}}
"#;
        let diags = Graph::from_yaml(yaml, Path::new("."), &registry(), BuildMode::Load)
            .err()
            .expect("invalid");
        let msgs: Vec<String> = diags.iter().map(|d| d.one_line("g.yaml")).collect();
        assert!(
            msgs[0].starts_with("g.yaml:5:30: step `a`: unknown op `standardise`"),
            "{msgs:?}"
        );
        assert!(
            msgs[1].contains("step `b`: every `std` must be a positive number"),
            "{msgs:?}"
        );
        assert!(
            msgs[2].contains("step `c`: unknown field `colour`"),
            "{msgs:?}"
        );
        assert!(
            msgs[2].contains("`labels`, `tensor` or `output`"),
            "{msgs:?}"
        );
    }
}
