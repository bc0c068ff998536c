//! `kind: transform`: built-in pre- and post-processing ops, chosen by `op` with their `args`.
//!
//! ```yaml
//! scale: {kind: transform, op: standardize, args: {mean: [5.8, 3.0, 3.7, 1.2], std: [0.8, 0.4, 1.8, 0.8]}}
//! ```
//!
//! The op list is written once, in `OP_KINDS`; each op lives with its kind: `numeric`
//! (rescaling), `classes` (scores to answers), `tensors` (select, rename, cast, reshape), and
//! `helpers` what they share.

mod classes;
mod helpers;
mod numeric;
mod tensors;

pub use classes::{Argmax, LabelMap, OneHot, Threshold, TopK, TopKOutputs, argmax};
pub(crate) use helpers::targets;
pub use numeric::{Clip, MinMax, Sigmoid, Softmax, Standardize};
pub use tensors::{Cast, Noop, Rename, Reshape, Select};

use marked_yaml::Node;
use marked_yaml::types::MarkedMappingNode;
use schemars::JsonSchema;
use serde::de::DeserializeOwned;
use servegraph_engine::diag::{Diagnostic, one_of};
use servegraph_engine::step::from_yaml;
use servegraph_engine::{
    BuildContext, Event, Result, Signature, Step, StepNode, TensorMeta, async_trait,
};

/// One transform op: applied in place to an event, and inferred on a signature. `check` and
/// `infer` answer with a diagnostic, the message the graph's step is reported with.
pub(crate) trait Op: Send + Sync + 'static {
    /// Checks the args once, at build time.
    fn check(&self) -> Result<(), String> {
        Ok(())
    }
    fn apply(&self, event: &mut Event) -> Result<()>;
    fn infer(&self, sig: &mut Signature) -> Result<(), String>;
    /// What must come in for `after` (what is needed once the op has run) to come out: see
    /// [`Step::takes`]. Ops that change tensors in place need what they give.
    fn takes(&self, after: Option<Vec<TensorMeta>>) -> Option<Vec<TensorMeta>> {
        after
    }
    /// Class names by index, when the op has them.
    fn labels(&self) -> Option<Vec<String>> {
        None
    }
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
    /// The op's name, for pictures.
    name: String,
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

    fn takes(&self, after: Option<Vec<TensorMeta>>) -> Option<Vec<TensorMeta>> {
        self.op.takes(after)
    }

    fn labels(&self, _output: &str) -> Option<Vec<String>> {
        self.op.labels()
    }

    fn platform(&self) -> servegraph_engine::Platform {
        servegraph_engine::Platform::Transform
    }

    fn summary(&self) -> Option<String> {
        Some(self.name.clone())
    }
}

/// Builds a `transform` step: `op` names the op, `args` holds its arguments.
pub fn build(node: &StepNode, ctx: &mut BuildContext) -> Option<Box<dyn Step>> {
    let help = "expected one of `op`, `args`, `after`, `responder`, `timeout_ms` or `on_error`";
    let op = build_op(ctx, &node.name, &node.body, "a `transform` step", help)?;
    let name = node.body.get_scalar("op")?.as_str().to_owned();
    Some(Box::new(Transform { op, name }))
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

#[cfg(test)]
mod tests {
    use std::path::Path;

    use servegraph_engine::{BuildMode, Graph, Registry, Tensor, TensorData};

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
