//! `kind: transform`: built-in pre- and post-processing ops, chosen by `op` with their `args`.
//!
//! ```yaml
//! scale: {kind: transform, op: standardize, args: {mean: [5.8, 3.0, 3.7, 1.2], std: [0.8, 0.4, 1.8, 0.8]}}
//! ```

use half::f16;
use indexmap::IndexMap;
use marked_yaml::Node;
use marked_yaml::types::MarkedMappingNode;
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
pub(crate) trait Op: Send + Sync + 'static {
    /// Checks the args once, at build time.
    fn check(&self) -> Result<(), String> {
        Ok(())
    }
    fn apply(&self, event: &mut Event) -> Result<()>;
    fn infer(&self, sig: &mut Signature) -> Result<(), String>;
}

/// Reads an op's `args` (absent: its defaults), `what` naming them in messages.
type ParseArgs =
    fn(Option<&Node>, &marked_yaml::Span, &str) -> Result<Box<dyn Op>, Vec<Diagnostic>>;

/// One op kind: its name, how its args are read, and their schema.
struct OpKind {
    name: &'static str,
    parse: ParseArgs,
    schema: fn() -> serde_json::Value,
}

const fn op<T: Op + DeserializeOwned + Default + JsonSchema>(name: &'static str) -> OpKind {
    OpKind {
        name,
        parse: |args, span, what| args_of::<T>(args, span, what).map(boxed),
        schema: || schemars::schema_for!(T).to_value(),
    }
}

/// Every op, once: building, the names in messages and the JSON Schema all read this list.
const OP_KINDS: [OpKind; 16] = [
    op::<Standardize>("standardize"),
    op::<MinMax>("min_max"),
    op::<Clip>("clip"),
    op::<Softmax>("softmax"),
    op::<Sigmoid>("sigmoid"),
    op::<Argmax>("argmax"),
    op::<TopK>("top_k"),
    op::<Threshold>("threshold"),
    op::<LabelMap>("label_map"),
    op::<OneHot>("one_hot"),
    op::<Cast>("cast"),
    op::<Reshape>("reshape"),
    op::<Select>("select"),
    op::<Rename>("rename"),
    op::<crate::image::ImageArgs>("image"),
    op::<Noop>("noop"),
];

/// The ops' names, in [`OP_KINDS`] order.
fn op_names() -> Vec<&'static str> {
    OP_KINDS.iter().map(|k| k.name).collect()
}

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
    let help = "expected one of `op`, `args`, `after`, `responder`, `timeout_ms` or `on_error`";
    let op = build_op(ctx, &node.name, &node.body, "a `transform` step", help)?;
    Some(Box::new(Transform { op }))
}

/// Builds one op from a mapping with `op` and `args` (a transform step's fields, or one item
/// of a model's `preprocess`/`postprocess`), reporting problems against `step`.
pub(crate) fn build_op(
    ctx: &mut BuildContext,
    step: &str,
    map: &MarkedMappingNode,
    what: &str,
    help: &str,
) -> Option<Box<dyn Op>> {
    let mut ok = true;
    for key in map.keys() {
        if !matches!(key.as_str(), "op" | "args") {
            ctx.report(
                Diagnostic::new(format!("unknown field `{}` for {what}", key.as_str()))
                    .step(step)
                    .at(key.span())
                    .help(help),
            );
            ok = false;
        }
    }
    let names = op_names();
    let kind = match map.get_scalar("op") {
        Some(op) => match OP_KINDS.iter().find(|k| k.name == op.as_str()) {
            Some(kind) => kind,
            None => {
                ctx.report(
                    Diagnostic::new(format!("unknown op `{}`", op.as_str()))
                        .step(step)
                        .at(op.span())
                        .help(servegraph_engine::fields::suggest(op.as_str(), &names)),
                );
                return None;
            }
        },
        None => {
            ctx.report(
                Diagnostic::new("missing field `op`")
                    .step(step)
                    .at(map.span())
                    .help(format!("expected one of {}", one_of(&names))),
            );
            return None;
        }
    };
    let args = map.get_node("args");
    let span = *map.span();
    let what = format!("the `{}` op's args", kind.name);
    let parsed = (kind.parse)(args, &span, &what);
    let op = match parsed {
        Ok(op) => op,
        Err(problems) => {
            ctx.report_in(step, problems);
            return None;
        }
    };
    if let Err(message) = op.check() {
        let span = args.map(|a| *a.span()).unwrap_or(span);
        ctx.error(step, &span, message);
        return None;
    }
    ok.then_some(op)
}

/// The JSON Schema of a transform step's fields: one variant per op, with its args.
pub fn schema() -> serde_json::Value {
    use serde_json::{Map, Value, json};
    let ops: Vec<(&str, Value)> = OP_KINDS.iter().map(|k| (k.name, (k.schema)())).collect();
    let mut defs = Map::new();
    let variants: Vec<Value> = ops
        .into_iter()
        .map(|(op, args)| {
            let args = servegraph_engine::fields::embed(args, &mut defs);
            let needs_args = args
                .get("required")
                .and_then(Value::as_array)
                .is_some_and(|r| !r.is_empty())
                || op == "rename";
            let required = if needs_args {
                json!(["op", "args"])
            } else {
                json!(["op"])
            };
            json!({
                "type": "object",
                "properties": {"op": {"const": op}, "args": args},
                "required": required,
                "additionalProperties": false
            })
        })
        .collect();
    json!({"oneOf": variants, "$defs": defs})
}

fn boxed<T: Op>(op: T) -> Box<dyn Op> {
    Box::new(op)
}

fn args_of<T: DeserializeOwned + Default + JsonSchema>(
    args: Option<&Node>,
    span: &marked_yaml::Span,
    what: &str,
) -> Result<T, Vec<Diagnostic>> {
    match args {
        None => from_yaml::<T>(
            &Node::Mapping(MarkedMappingNode::new_empty(*span)),
            span,
            what,
            &[],
        ),
        Some(a) => from_yaml::<T>(a, span, what, &[]),
    }
}

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

/// Signature of an element-wise float op on `tensors` (default: every float tensor): each must
/// be numeric (integers become FP32; ops for which integers make no sense, such as softmax,
/// refuse them) and, with `features`, have that many values on its last axis.
fn infer_float_map(
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
}

/// Checks a named tensor's presence and numeric type in a signature; `Ok(None)` when unknown.
fn sig_numeric<'a>(
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
fn numbers(t: &Tensor, op: &str) -> Result<Vec<f64>> {
    t.data.to_f64_vec().ok_or_else(|| {
        Error::unprocessable(format!(
            "{op} needs numbers but `{}` is {}",
            t.name,
            t.datatype()
        ))
    })
}

/// Per-feature values along the last axis: one value for all, or one per feature.
fn per_feature(values: &[f64], t: &Tensor, op: &str) -> Result<()> {
    let n = values.len();
    if n > 1 && last_dim(&t.shape) != n {
        return Err(Error::unprocessable(format!(
            "tensor `{}` has shape {:?}; {op} has {n} values, so its last dimension must be {n}",
            t.name, t.shape
        )));
    }
    Ok(())
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
    fn input(&self) -> &str {
        self.tensor.as_deref().unwrap_or("probabilities")
    }
    fn names(&self) -> (&str, &str, &str) {
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
    fn input(&self) -> &str {
        self.tensor.as_deref().unwrap_or("probabilities")
    }
    fn output(&self) -> &str {
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
    fn input(&self) -> &str {
        self.tensor.as_deref().unwrap_or("label")
    }
    fn output(&self) -> &str {
        self.output.as_deref().unwrap_or(self.input())
    }
    fn dtype(&self) -> DataType {
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

/// Numbers as a tensor of `datatype` (floats truncate toward zero for integer types; a value
/// out of the type's range is an error).
fn cast_values(values: Vec<f64>, datatype: DataType) -> Result<TensorData> {
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
fn cast_targets(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
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
            msgs[2].contains("`labels`, `output` or `tensor`"),
            "{msgs:?}"
        );
    }

    fn one(op: &str, args: &str, tensors: Vec<Tensor>) -> Result<Event> {
        let yaml = format!(
            "name: t\ngraph: {{kind: flow, steps: {{s: {{kind: transform, op: {op}, args: {args}}}}}}}\n"
        );
        run(&yaml, tensors)
    }

    fn f32s(e: &Event, name: &str) -> Vec<f32> {
        match &e.get(name).unwrap_or_else(|| panic!("no {name}")).data {
            TensorData::Fp32(v) => v.clone(),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn min_max_clip_sigmoid() {
        let x = || vec![fp32("x", vec![1, 2], vec![5.0, -10.0])];
        let out = one("min_max", "{min: [0, -20], max: [10, 0]}", x()).unwrap();
        assert_eq!(f32s(&out, "x"), vec![0.5, 0.5]);
        let out = one("clip", "{min: -1, max: 1}", x()).unwrap();
        assert_eq!(f32s(&out, "x"), vec![1.0, -1.0]);
        let out = one("sigmoid", "{}", vec![fp32("x", vec![1], vec![0.0])]).unwrap();
        assert_eq!(f32s(&out, "x"), vec![0.5]);
    }

    #[test]
    fn top_k_with_labels() {
        let p = vec![fp32(
            "probabilities",
            vec![2, 3],
            vec![0.1, 0.7, 0.2, 0.5, 0.2, 0.3],
        )];
        let out = one("top_k", "{k: 2, labels: [a, b, c]}", p).unwrap();
        assert_eq!(
            out.get("top_indices").unwrap().data,
            TensorData::Int64(vec![1, 2, 0, 2])
        );
        assert_eq!(out.get("top_indices").unwrap().shape, vec![2, 2]);
        assert_eq!(f32s(&out, "top_values"), vec![0.7, 0.2, 0.5, 0.3]);
        assert_eq!(
            out.get("top_labels").unwrap().data,
            TensorData::Bytes(vec![
                b"b".to_vec(),
                b"c".to_vec(),
                b"a".to_vec(),
                b"c".to_vec()
            ])
        );
        let err = one(
            "top_k",
            "{k: 4}",
            vec![fp32("probabilities", vec![1, 3], vec![0.0; 3])],
        )
        .unwrap_err();
        assert!(err.message.contains("fewer than k = 4"), "{err}");
    }

    #[test]
    fn threshold_one_hot_cast_reshape() {
        let out = one(
            "threshold",
            "{threshold: 0.6}",
            vec![fp32("probabilities", vec![3], vec![0.2, 0.6, 0.9])],
        )
        .unwrap();
        assert_eq!(
            out.get("label").unwrap().data,
            TensorData::Int64(vec![0, 1, 1])
        );

        let label = || vec![Tensor::new("label", vec![2], TensorData::Int64(vec![2, 0])).unwrap()];
        let out = one("one_hot", "{depth: 3}", label()).unwrap();
        assert_eq!(out.get("label").unwrap().shape, vec![2, 3]);
        assert_eq!(f32s(&out, "label"), vec![0.0, 0.0, 1.0, 1.0, 0.0, 0.0]);
        let err = one("one_hot", "{depth: 2}", label()).unwrap_err();
        assert!(
            err.message.contains("outside one_hot's depth of 2"),
            "{err}"
        );

        let out = one(
            "cast",
            "{to: INT32}",
            vec![fp32("x", vec![2], vec![1.9, -2.5])],
        )
        .unwrap();
        assert_eq!(out.get("x").unwrap().data, TensorData::Int32(vec![1, -2]));
        let err = one("cast", "{to: UINT8}", vec![fp32("x", vec![1], vec![300.0])]).unwrap_err();
        assert!(err.message.contains("300 does not fit UINT8"), "{err}");

        let out = one(
            "reshape",
            "{tensor: x, shape: [-1, 2]}",
            vec![fp32("x", vec![4], vec![0.0; 4])],
        )
        .unwrap();
        assert_eq!(out.get("x").unwrap().shape, vec![2, 2]);
        let err = one(
            "reshape",
            "{tensor: x, shape: [3, -1]}",
            vec![fp32("x", vec![4], vec![0.0; 4])],
        )
        .unwrap_err();
        assert!(
            err.message
                .contains("cannot reshape `x` of shape [4] (4 elements) to [3, -1]"),
            "{err}"
        );
    }

    #[test]
    fn new_ops_check_their_args() {
        for (op, args, want) in [
            (
                "min_max",
                "{min: [1], max: [1]}",
                "every `max` must be greater than its `min`",
            ),
            ("clip", "{}", "give `min`, `max` or both"),
            ("top_k", "{k: 0}", "`k` must be at least 1"),
            ("one_hot", "{depth: 0}", "`depth` must be at least 1"),
            (
                "cast",
                "{to: BYTES}",
                "`to` must be one of `BOOL`, `UINT8`, `UINT16`, `UINT32`, `UINT64`, `INT8`, `INT16`, `INT32`, `INT64`, `FP16`, `FP32` or `FP64`, found `BYTES`",
            ),
            ("cast", "{to: FP99}", "`to` must be one of `BOOL`, "),
            ("reshape", "{tensor: x, shape: [-1, -1]}", "at most one -1"),
        ] {
            let yaml = format!(
                "name: t\ngraph: {{kind: flow, steps: {{s: {{kind: transform, op: {op}, args: {args}}}}}}}\n"
            );
            let d = Graph::from_yaml(&yaml, Path::new("."), &registry(), BuildMode::Load)
                .err()
                .expect("invalid");
            assert!(
                d[0].message.contains(want),
                "{op} {args}: {:?}",
                d[0].message
            );
        }
    }
}
