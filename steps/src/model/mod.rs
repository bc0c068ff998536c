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
pub mod python;

use marked_yaml::Spanned;
use schemars::JsonSchema;
use serde::Deserialize;
use servegraph_engine::{
    BuildContext, BuildMode, Error, Event, Model, Platform, Result, Signature, Step, StepNode,
    TensorMeta, async_trait,
};

use crate::transform::{Op, build_op};

/// A model step's fields: one spec per `class` (a field of another class is an error that
/// names the class and what it accepts).
#[derive(Debug)]
pub enum ModelSpec {
    /// An ONNX model run by ONNX Runtime.
    Onnx(OnnxSpec),
    /// A model on another Open Inference Protocol (V2) server, over HTTP.
    Remote(RemoteSpec),
    /// A model written in Python, run by worker processes.
    Python(Box<python::PythonSpec>),
}

/// The model classes, as `class:` names them.
pub const CLASSES: [&str; 3] = ["onnx", "remote", "python"];

impl ModelSpec {
    /// Reads the step's `class` and that class's spec, reporting every problem.
    pub fn parse(node: &StepNode, ctx: &mut BuildContext) -> Option<ModelSpec> {
        use servegraph_engine::fields::field_names;
        let onnx = field_names(&schemars::schema_for!(OnnxSpec).to_value());
        let remote = field_names(&schemars::schema_for!(RemoteSpec).to_value());
        let python = field_names(&schemars::schema_for!(python::PythonSpec).to_value());
        match ctx.variant(node, "class", &CLASSES)? {
            "onnx" => ctx
                .parse_variant_among(
                    node,
                    "class",
                    "onnx",
                    &[("remote", remote), ("python", python)],
                )
                .map(ModelSpec::Onnx),
            "remote" => ctx
                .parse_variant_among(
                    node,
                    "class",
                    "remote",
                    &[("onnx", onnx), ("python", python)],
                )
                .map(ModelSpec::Remote),
            _ => ctx
                .parse_variant_among(
                    node,
                    "class",
                    "python",
                    &[("onnx", onnx), ("remote", remote)],
                )
                .map(|spec| ModelSpec::Python(Box::new(spec))),
        }
    }

    /// The JSON Schema of a model step's fields: one branch per class.
    pub fn schema() -> serde_json::Value {
        servegraph_engine::fields::tagged_schema(
            "class",
            vec![
                ("onnx", schemars::schema_for!(OnnxSpec).to_value()),
                ("remote", schemars::schema_for!(RemoteSpec).to_value()),
                (
                    "python",
                    schemars::schema_for!(python::PythonSpec).to_value(),
                ),
            ],
        )
    }
}

/// `class: onnx`.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct OnnxSpec {
    /// The model file on disk. A relative path is resolved against the graph file's folder,
    /// wherever servegraph is started from. Give this or `model_uri`.
    #[serde(default)]
    #[schemars(with = "Option<String>")]
    pub model_path: Option<Spanned<String>>,
    /// The model file as a URI: a path, `file:///abs`, `s3://bucket/key`, `gs://…`, `az://…`
    /// or `http(s)://…`; a store's file is downloaded into the model cache (`--model-cache`)
    /// and checked against the store on every load. Give this or `model_path`.
    #[serde(default)]
    #[schemars(with = "Option<String>")]
    pub model_uri: Option<Spanned<String>>,
    /// `sha256:<64 hex digits>`: the file's SHA-256, checked on every load (a mismatch
    /// refuses to load it).
    #[serde(default)]
    #[schemars(with = "Option<String>")]
    pub sha256: Option<Spanned<String>>,
    /// Threads ONNX Runtime may use inside one inference (default 1: small models gain
    /// nothing from more, and each session would otherwise spin a core-sized pool).
    #[serde(default = "one")]
    #[schemars(range(min = 1))]
    pub intra_op_threads: usize,
    /// Sessions in this model's pool, each on its own thread (default 1). Requests queue for
    /// the next free session.
    #[serde(default = "one")]
    #[schemars(range(min = 1))]
    pub sessions: usize,
    /// Requests that may wait for a session; past it requests get HTTP 503 at once (default
    /// 1024, the graph's default `max_in_flight`: with both defaults admission refuses
    /// overload with 429 before this queue can overflow).
    #[serde(default = "default_queue")]
    #[schemars(range(min = 1))]
    pub queue_size: usize,
    /// Adaptive batching: requests waiting for this model are merged along the first axis
    /// into one run and split back. Only for models whose rows are independent.
    #[serde(default)]
    pub batch: Option<BatchSpec>,
    /// Run tiny models on the calling thread (default `true`): a model whose runs took under
    /// 50 µs of CPU time over its first 200 runs (and whose later runs stay under 200 µs) runs
    /// inline on the request's own worker thread with a session of that thread's, skipping
    /// the hand-off to the session pool; `false` always uses the pool.
    #[serde(default = "yes")]
    pub inline: bool,
    /// How `/explain` attributes a prediction to the features (occlusion against a baseline;
    /// default: a baseline of zeros).
    #[serde(default)]
    pub explain: Option<ExplainSpec>,
    /// Transform ops run on the request before the model, in order (MLRun's preprocess):
    /// `[{op: standardize, args: {...}}, ...]`.
    #[serde(default)]
    #[schemars(with = "Option<Vec<serde_json::Value>>")]
    pub preprocess: Option<serde::de::IgnoredAny>,
    /// Transform ops run on the model's outputs, in order (MLRun's postprocess).
    #[serde(default)]
    #[schemars(with = "Option<Vec<serde_json::Value>>")]
    pub postprocess: Option<serde::de::IgnoredAny>,
}

/// `class: remote`.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RemoteSpec {
    /// The server's base URL (`http://host:port`; for gRPC the server's gRPC port, Triton's
    /// 8001).
    #[schemars(with = "String")]
    pub url: Spanned<String>,
    /// `http` (the default: OIP over HTTP/1.1, JSON or the binary extension) or `grpc` (the
    /// OIP over gRPC, Triton's `GRPCInferenceService`: tensors always raw).
    #[serde(default)]
    pub protocol: Option<RemoteProtocol>,
    /// The model's name on that server (default: this step's name).
    #[serde(default)]
    pub model: Option<String>,
    /// The model version to call (default: the server's choice).
    #[serde(default)]
    pub version: Option<String>,
    /// Deadline for one attempt, in milliseconds (default 5000).
    #[serde(default)]
    #[schemars(range(min = 1))]
    pub attempt_timeout_ms: Option<u64>,
    /// Attempts after the first when the server answers 5xx/429 or cannot be reached
    /// (default 2), with exponential backoff from `backoff_ms` (default 50).
    #[serde(default)]
    pub retries: Option<u32>,
    #[serde(default)]
    pub backoff_ms: Option<u64>,
    /// Requests to the server at once; past it requests get 503 at once (default 64).
    #[serde(default)]
    #[schemars(range(min = 1))]
    pub max_in_flight: Option<usize>,
    /// Tensors as JSON (`false`) or the binary extension (`true`, the default).
    #[serde(default)]
    pub binary: Option<bool>,
    /// Transform ops run on the request before the model, in order (MLRun's preprocess).
    #[serde(default)]
    #[schemars(with = "Option<Vec<serde_json::Value>>")]
    pub preprocess: Option<serde::de::IgnoredAny>,
    /// Transform ops run on the model's outputs, in order (MLRun's postprocess).
    #[serde(default)]
    #[schemars(with = "Option<Vec<serde_json::Value>>")]
    pub postprocess: Option<serde::de::IgnoredAny>,
}

/// How a remote model is called.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum RemoteProtocol {
    #[default]
    Http,
    Grpc,
}

/// `batch: {max_size, max_wait_us}`.
#[derive(Clone, Copy, Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct BatchSpec {
    /// Most rows in one run. A request with more rows runs alone.
    #[schemars(range(min = 1))]
    pub max_size: usize,
    /// How long the first request of a batch may wait for others, in microseconds. 0 (the
    /// default): take whatever is already queued, never wait.
    #[serde(default)]
    pub max_wait_us: u64,
}

fn one() -> usize {
    1
}

fn yes() -> bool {
    true
}

fn default_queue() -> usize {
    1024
}

/// `explain: {baseline: [...]}`.
#[derive(Clone, Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ExplainSpec {
    /// The value each feature is replaced with to measure its effect (one per feature, or one
    /// for all), e.g. the training data's mean.
    pub baseline: Vec<f64>,
}

/// Builds a `model` step.
pub fn build(node: &StepNode, ctx: &mut BuildContext) -> Option<Box<dyn Step>> {
    // Field errors (types, ranges, fields of another class) are reported by `parse`.
    let spec = ModelSpec::parse(node, ctx)?;
    let pre = hooks(node, ctx, "preprocess");
    let post = hooks(node, ctx, "postprocess");
    let model = match &spec {
        ModelSpec::Onnx(onnx) => onnx_model(node, ctx, onnx),
        ModelSpec::Remote(remote) => remote_model(node, ctx, remote),
        ModelSpec::Python(py) => python::build(node, ctx, py),
    };
    let (Some(pre), Some(post), Some(model)) = (pre, post, model) else {
        return None;
    };
    if pre.is_empty() && post.is_empty() {
        return Some(model);
    }
    Some(Box::new(Hooked { pre, model, post }))
}

fn onnx_model(node: &StepNode, ctx: &mut BuildContext, spec: &OnnxSpec) -> Option<Box<dyn Step>> {
    let (field, uri) = match (&spec.model_path, &spec.model_uri) {
        (Some(p), None) => ("model_path", p),
        (None, Some(u)) => ("model_uri", u),
        (Some(_), Some(u)) => {
            ctx.error(
                &node.name,
                u.span(),
                "give `model_path` or `model_uri`, not both",
            );
            return None;
        }
        (None, None) => {
            ctx.error(
                &node.name,
                &node.span,
                "`class: onnx` needs `model_path` (a file) or `model_uri` (a file or a store's object)",
            );
            return None;
        }
    };
    let file = ctx.model_file(
        &node.name,
        servegraph_engine::step::ModelFileRequest {
            field,
            uri: uri.as_str(),
            span: uri.span(),
            sha256: spec.sha256.as_ref().map(|p| (p.as_str(), p.span())),
            folder_ok: false,
        },
    )?;
    let model_path = uri;
    let Some(path) = file.path else {
        return Some(Box::new(Unloaded));
    };
    if ctx.mode == BuildMode::Structural {
        return Some(Box::new(Unloaded));
    }
    #[cfg(feature = "onnx")]
    match onnx::OnnxModel::shared(&node.name, &path, spec) {
        Ok(model) => Some(Box::new(model)),
        Err(message) => {
            ctx.error(&node.name, model_path.span(), message);
            None
        }
    }
    #[cfg(not(feature = "onnx"))]
    {
        ctx.error(
            &node.name,
            model_path.span(),
            "this build of servegraph has no ONNX Runtime (feature `onnx`)",
        );
        None
    }
}

fn remote_model(
    node: &StepNode,
    ctx: &mut BuildContext,
    spec: &RemoteSpec,
) -> Option<Box<dyn Step>> {
    let url = &spec.url;
    let settings = crate::remote::RemoteSettings {
        model: spec.model.clone().unwrap_or_else(|| node.name.clone()),
        version: spec.version.clone(),
        attempt_timeout: std::time::Duration::from_millis(spec.attempt_timeout_ms.unwrap_or(5000)),
        retries: spec.retries.unwrap_or(2),
        backoff: std::time::Duration::from_millis(spec.backoff_ms.unwrap_or(50)),
        max_in_flight: spec.max_in_flight.unwrap_or(64),
        binary: spec.binary.unwrap_or(true),
        protocol: spec.protocol.unwrap_or_default(),
    };
    if settings.protocol == RemoteProtocol::Grpc && spec.binary == Some(false) {
        ctx.error(
            &node.name,
            url.span(),
            "`binary: false` is for `protocol: http`; gRPC always sends tensors raw",
        );
        return None;
    }
    match crate::remote::RemoteModel::new(
        &node.name,
        url.as_str(),
        settings,
        ctx.mode == BuildMode::Load,
    ) {
        Ok(model) => Some(Box::new(model)),
        Err(message) => {
            ctx.error(&node.name, url.span(), message);
            None
        }
    }
}

/// Takes a model's declared inputs from the event, by name: a 422 names a missing tensor (and
/// what the request has), or one of another datatype or shape.
pub(crate) fn take_inputs(
    model: &str,
    declared: &[TensorMeta],
    event: &mut Event,
) -> Result<Vec<servegraph_engine::Tensor>> {
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
/// (the model's input checks) → predict → postprocess.
struct Hooked {
    pre: Vec<Box<dyn Op>>,
    model: Box<dyn Step>,
    post: Vec<Box<dyn Op>>,
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

    fn labels(&self) -> Option<Vec<String>> {
        self.post
            .iter()
            .find_map(|op| op.labels())
            .or_else(|| self.model.labels())
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

    use servegraph_engine::{Graph, Tensor, TensorData};

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
