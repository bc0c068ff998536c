//! `kind: model`: a model, by `class`. `onnx` runs an ONNX file with ONNX Runtime; `remote`
//! calls a model on any other Open Inference Protocol (V2) server.
//!
//! ```yaml
//! iris-lr: {kind: model, class: onnx, model_path: ../models/iris_lr.onnx}
//! far-lr: {kind: model, class: remote, url: "http://10.0.0.7:8080", model: iris-lr}
//! ```
//!
//! A model may carry its own pre- and post-processing (`preprocess`, `postprocess`: lists of
//! transform ops), run in MLRun's order: preprocess → validate (the model's checks of input
//! names, dtypes and shapes) → predict → postprocess.

pub(crate) mod batch;
#[cfg(feature = "onnx")]
pub mod onnx;
mod onnx_class;
pub mod python;
mod remote_class;

use schemars::JsonSchema;
use serde::de::DeserializeOwned;
use servegraph_engine::{
    BuildContext, Error, Event, Model, Platform, Result, Signature, Step, StepNode, TensorMeta,
    async_trait,
};

pub use onnx_class::{BatchSpec, ExplainSpec, OnnxSpec};
pub use remote_class::{RemoteProtocol, RemoteSpec};

use crate::transform::{Op, build_op};

/// What a `class:` reads (its spec, one struct, `deny_unknown_fields`) and how it builds the
/// model.
pub trait ClassSpec: Send {
    fn build(&self, node: &StepNode, ctx: &mut BuildContext) -> Option<Box<dyn Step>>;
}

/// Reads a step's spec as `class: {name}`, reporting every problem; `siblings` are the other
/// classes and their fields (so a field of another class says which).
type ParseSpec =
    fn(&StepNode, &mut BuildContext, &str, &[(&str, Vec<String>)]) -> Option<Box<dyn ClassSpec>>;

/// One model class: its `class:` name, how its spec is read, and the spec's schema.
pub struct ModelClass {
    pub name: &'static str,
    parse: ParseSpec,
    schema: fn() -> serde_json::Value,
}

const fn class<S: ClassSpec + DeserializeOwned + JsonSchema + 'static>(
    name: &'static str,
) -> ModelClass {
    ModelClass {
        name,
        parse: |node, ctx, name, siblings| {
            let spec: S = ctx.parse_variant_among(node, "class", name, siblings)?;
            Some(Box::new(spec))
        },
        schema: || schemars::schema_for!(S).to_value(),
    }
}

/// Every model class, once: building, the `expected one of` lists, the "applies to `class:
/// x`" hints and the JSON Schema all read this list. A new class is a module with a
/// [`ClassSpec`] and one line here.
pub const MODEL_CLASSES: [ModelClass; 3] = [
    class::<OnnxSpec>("onnx"),
    class::<RemoteSpec>("remote"),
    class::<python::PythonSpec>("python"),
];

/// The JSON Schema of a model step's fields: one branch per class.
pub fn schema() -> serde_json::Value {
    servegraph_engine::fields::tagged_schema(
        "class",
        MODEL_CLASSES
            .iter()
            .map(|c| (c.name, (c.schema)()))
            .collect(),
    )
}

/// Builds a `model` step: its class's spec (field errors, and fields of another class, are
/// reported by the parse), its pre- and postprocessing, then the model.
pub fn build(node: &StepNode, ctx: &mut BuildContext) -> Option<Box<dyn Step>> {
    let names: Vec<&str> = MODEL_CLASSES.iter().map(|c| c.name).collect();
    let name = ctx.variant(node, "class", &names)?;
    let class = MODEL_CLASSES.iter().find(|c| c.name == name)?;
    let siblings: Vec<(&str, Vec<String>)> = MODEL_CLASSES
        .iter()
        .filter(|c| c.name != name)
        .map(|c| {
            (
                c.name,
                servegraph_engine::fields::field_names(&(c.schema)()),
            )
        })
        .collect();
    let spec = (class.parse)(node, ctx, name, &siblings)?;
    let pre = hooks(node, ctx, "preprocess");
    let post = hooks(node, ctx, "postprocess");
    let model = spec.build(node, ctx);
    let (Some(pre), Some(post), Some(model)) = (pre, post, model) else {
        return None;
    };
    if pre.is_empty() && post.is_empty() {
        return Some(model);
    }
    Some(Box::new(Hooked {
        pre,
        model,
        post,
        labels: Vec::new(),
    }))
}

/// Takes a model's declared inputs from the event, by name: a 422 names a missing tensor (and
/// what the request has), or one of another datatype or shape.
/// A 400 for a request with more rows (an input's first dimension) than the model's
/// `max_batch_size`, as Triton refuses it.
pub(crate) fn check_rows(
    model: &str,
    max_batch_size: Option<usize>,
    inputs: &[servegraph_engine::Tensor],
) -> Result<()> {
    let Some(limit) = max_batch_size else {
        return Ok(());
    };
    match inputs
        .iter()
        .find(|t| t.shape.first().is_some_and(|&rows| rows > limit))
    {
        None => Ok(()),
        Some(t) => Err(Error::bad_request(format!(
            "input `{}` has {} rows (shape {:?}), more than model `{model}`'s max_batch_size of {limit}",
            t.name, t.shape[0], t.shape
        ))),
    }
}

pub(crate) fn take_inputs(
    model: &str,
    declared: &[TensorMeta],
    event: &mut Event,
) -> Result<Vec<servegraph_engine::Tensor>> {
    // A body a step before answered with (an MLRun flow step's rows) is what the model reads
    // when no tensors came with it.
    if event.tensors.is_empty()
        && let Some(body) = &event.body
    {
        event.tensors =
            servegraph_engine::protocol::mlrun::body_tensors(&body.value, model, declared)?;
    }
    let mut out = Vec::with_capacity(declared.len());
    for meta in declared {
        let Some(pos) = event.tensors.iter().position(|t| t.name == meta.name) else {
            return Err(Error::unprocessable(format!(
                "model `{}` needs input `{meta}`; the request has: {}",
                model,
                event.describe_tensors()
            )));
        };
        let t = event.tensors.swap_remove(pos);
        if t.datatype() != meta.datatype {
            return Err(Error::unprocessable(format!(
                "input `{}` must be {} but is {}",
                meta.name,
                meta.datatype,
                t.datatype()
            )));
        }
        if !meta.shape_accepts(&t.shape) {
            return Err(Error::unprocessable(format!(
                "input `{}` must have shape {:?} but has shape {:?}",
                meta.name, meta.shape, t.shape
            )));
        }
        out.push(t);
    }
    Ok(out)
}

/// Reads `preprocess` or `postprocess`: a list of `{op, args}`.
fn hooks(node: &StepNode, ctx: &mut BuildContext, field: &str) -> Option<Vec<Box<dyn Op>>> {
    let Some(list) = node.body.get_node(field) else {
        return Some(Vec::new());
    };
    let Some(items) = list.as_sequence() else {
        ctx.error(
            &node.name,
            list.span(),
            format!("`{field}` must be a list of `{{op, args}}`"),
        );
        return None;
    };
    let what = format!("a `{field}` op");
    let mut ops = Vec::with_capacity(items.len());
    let mut ok = true;
    for item in items.iter() {
        let Some(map) = item.as_mapping() else {
            ctx.error(
                &node.name,
                item.span(),
                format!("each `{field}` item must be `{{op, args}}`"),
            );
            ok = false;
            continue;
        };
        match build_op(ctx, &node.name, map, &what, "expected `op` and `args`") {
            Some(op) => ops.push(op),
            None => ok = false,
        }
    }
    ok.then_some(ops)
}

/// A model with its own pre- and post-processing, in MLRun's order: preprocess → validate
/// (the model's input checks) → predict → postprocess; and its outputs' class names (an ONNX
/// model's `outputs: [{name, label_filename}]`).
struct Hooked {
    pre: Vec<Box<dyn Op>>,
    model: Box<dyn Step>,
    post: Vec<Box<dyn Op>>,
    /// Class names by output tensor.
    labels: Vec<(String, Vec<String>)>,
}

impl Hooked {
    /// `model` with class names for some of its outputs.
    fn labeled(model: Box<dyn Step>, labels: Vec<(String, Vec<String>)>) -> Hooked {
        Hooked {
            pre: Vec::new(),
            model,
            post: Vec::new(),
            labels,
        }
    }
}

#[async_trait]
impl Step for Hooked {
    async fn process(&self, mut event: Event) -> Result<Event> {
        for op in &self.pre {
            op.apply(&mut event)?;
        }
        let mut event = self.model.process(event).await?;
        for op in &self.post {
            op.apply(&mut event)?;
        }
        Ok(event)
    }

    fn infer(&self, input: &Signature) -> std::result::Result<Signature, String> {
        let mut sig = input.clone();
        for op in &self.pre {
            op.infer(&mut sig).map_err(|e| format!("preprocess: {e}"))?;
        }
        let mut sig = self.model.infer(&sig)?;
        for op in &self.post {
            op.infer(&mut sig)
                .map_err(|e| format!("postprocess: {e}"))?;
        }
        Ok(sig)
    }

    /// With preprocessing, what the client sends is not what the model takes: unknown
    /// ([`Step::takes`] maps it back through the ops).
    fn inputs(&self) -> Option<Vec<TensorMeta>> {
        if self.pre.is_empty() {
            self.model.inputs()
        } else {
            None
        }
    }

    fn takes(&self, after: Option<Vec<TensorMeta>>) -> Option<Vec<TensorMeta>> {
        let own = self.model.takes(after);
        self.pre.iter().rev().fold(own, |need, op| op.takes(need))
    }

    /// The output's own class names (`label_filename`) first, then a postprocess op's.
    fn labels(&self, output: &str) -> Option<Vec<String>> {
        self.labels
            .iter()
            .find(|(name, _)| name == output)
            .map(|(_, l)| l.clone())
            .or_else(|| self.model.labels(output))
            .or_else(|| self.post.iter().find_map(|op| op.labels()))
    }

    /// The headers the wrapped model reads.
    fn headers(&self) -> Vec<String> {
        self.model.headers()
    }

    /// The model itself: its readiness, loading, operations and batching are the wrapped
    /// model's.
    fn model(&self) -> Option<&dyn Model> {
        self.model.model()
    }

    fn children(&self) -> Vec<(&str, &dyn Step)> {
        self.model.children()
    }
}

/// A model in a graph checked for structure only (`BuildMode::Structural`): never served.
struct Unloaded;

#[async_trait]
impl Step for Unloaded {
    async fn process(&self, _event: Event) -> Result<Event> {
        Err(Error::unavailable("the model is not loaded"))
    }

    fn infer(&self, _input: &Signature) -> Result<Signature, String> {
        Ok(Signature::open())
    }

    fn model(&self) -> Option<&dyn Model> {
        Some(self)
    }
}

impl Model for Unloaded {
    fn platform(&self) -> Platform {
        Platform::Onnx
    }
}

#[cfg(all(test, feature = "onnx"))]
mod tests {
    use std::path::Path;

    use servegraph_engine::{BuildMode, Graph, Tensor, TensorData};

    use super::*;

    fn expected() -> serde_json::Value {
        let p = Path::new(env!("CARGO_MANIFEST_DIR")).join("../models/iris_expected.json");
        serde_json::from_str(&std::fs::read_to_string(p).unwrap()).unwrap()
    }

    fn hooked_yaml(post: &str) -> String {
        let e = expected();
        format!(
            "name: m
graph:
  kind: flow
  steps:
    lr:
      kind: model
      class: onnx
      model_path: {}
      preprocess: [{{op: standardize, args: {{mean: {}, std: {}}}}}]
      postprocess: [{post}]
",
            Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("../models/iris_lr_core.onnx")
                .display(),
            e["mean"],
            e["std"]
        )
    }

    /// The test graphs' folder: where their model files are (models may only come from a
    /// graph's folder or the model roots).
    fn models_dir() -> std::path::PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../models")
    }

    #[tokio::test]
    async fn preprocess_predict_postprocess() {
        let yaml = hooked_yaml("{op: label_map, args: {labels: [setosa, versicolor, virginica]}}");
        let g =
            Graph::from_yaml(&yaml, &models_dir(), &crate::registry(), BuildMode::Load).unwrap();
        let e = expected();
        let rows: Vec<f32> = e["rows"]
            .as_array()
            .unwrap()
            .iter()
            .flat_map(|r| {
                r.as_array()
                    .unwrap()
                    .iter()
                    .map(|x| x.as_f64().unwrap() as f32)
            })
            .collect();
        let n = rows.len() / 4;
        let out = g
            .run(Event::new(
                "h",
                vec![Tensor::new("input", vec![n, 4], TensorData::Fp32(rows)).unwrap()],
            ))
            .await
            .unwrap();
        let classes = e["classes"].as_array().unwrap();
        let want: Vec<Vec<u8>> = e["iris-lr"]["label"]
            .as_array()
            .unwrap()
            .iter()
            .map(|i| {
                classes[i.as_u64().unwrap() as usize]
                    .as_str()
                    .unwrap()
                    .as_bytes()
                    .to_vec()
            })
            .collect();
        assert_eq!(out.get("label").unwrap().data, TensorData::Bytes(want));
        // Metadata: what clients send is what the preprocessing takes (standardize works in
        // place, so the model's own input).
        assert_eq!(g.models()[0].inputs[0].name, "input");
        assert_eq!(g.models()[0].inputs[0].shape, vec![-1, 4]);
    }

    /// An output's label file names that output's classes, before a postprocess `label_map`
    /// (which names the others').
    #[test]
    fn an_outputs_label_file_comes_before_a_postprocess_label_map() {
        let yaml = hooked_yaml("{op: label_map, args: {labels: [a, b, c]}}").replace(
            "      preprocess:",
            "      outputs: [{name: probabilities, label_filename: iris_labels.txt}]\n      preprocess:",
        );
        let g =
            Graph::from_yaml(&yaml, &models_dir(), &crate::registry(), BuildMode::Load).unwrap();
        assert_eq!(
            g.labels("lr", None, "probabilities").unwrap(),
            ["setosa", "versicolor", "virginica"]
        );
        assert_eq!(g.labels("lr", None, "label").unwrap(), ["a", "b", "c"]);
    }

    #[test]
    fn hooks_are_validated_along_the_model() {
        // label_map on the FP32 probabilities, after the model: caught at validation.
        let yaml = hooked_yaml("{op: label_map, args: {labels: [a], tensor: probabilities}}");
        let d = Graph::from_yaml(&yaml, &models_dir(), &crate::registry(), BuildMode::Load)
            .err()
            .unwrap();
        assert!(
            d[0].message.contains(
                "postprocess: label_map needs an integer tensor but `probabilities` is FP32"
            ),
            "{d:?}"
        );
        let yaml = hooked_yaml("{op: label_map}").replace("op: standardize", "op: standardise");
        let d = Graph::from_yaml(&yaml, &models_dir(), &crate::registry(), BuildMode::Load)
            .err()
            .unwrap();
        let text: Vec<String> = d.iter().map(|d| d.one_line("g")).collect();
        assert!(
            text.iter()
                .any(|t| t.contains("step `lr`: unknown op `standardise`")),
            "{text:?}"
        );
        assert!(
            text.iter()
                .any(|t| t.contains("step `lr`: missing field `labels`")),
            "{text:?}"
        );
    }
}
