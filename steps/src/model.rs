//! `kind: model`: a model, by `class`. `onnx` runs an ONNX file with ONNX Runtime.
//!
//! ```yaml
//! iris-lr: {kind: model, class: onnx, model_path: ../models/iris_lr.onnx}
//! ```

use marked_yaml::Spanned;
use schemars::JsonSchema;
use serde::Deserialize;
use servegraph_engine::{
    BuildContext, BuildMode, Error, Event, Result, Signature, Step, StepNode, async_trait,
};

/// A model step's fields.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ModelSpec {
    /// The model runtime.
    pub class: ModelClass,
    /// The model file, relative to the graph file's folder.
    #[schemars(with = "String")]
    pub model_path: Spanned<String>,
    /// Threads ONNX Runtime may use inside one inference (default 1: small models gain
    /// nothing from more, and each session would otherwise spin a core-sized pool).
    #[serde(default = "one")]
    pub intra_op_threads: usize,
    /// Sessions in this model's pool, each on its own thread (default 1). Requests queue for
    /// the next free session.
    #[serde(default = "one")]
    pub sessions: usize,
    /// Requests that may wait for a session; past it requests get HTTP 503 at once (default 256).
    #[serde(default = "default_queue")]
    pub queue_size: usize,
    /// Adaptive batching: requests waiting for this model are merged along the first axis
    /// into one run and split back. Only for models whose rows are independent.
    #[serde(default)]
    pub batch: Option<BatchSpec>,
}

/// `batch: {max_size, max_wait_us}`.
#[derive(Clone, Copy, Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct BatchSpec {
    /// Most rows in one run. A request with more rows runs alone.
    pub max_size: usize,
    /// How long the first request of a batch may wait for others, in microseconds. 0 (the
    /// default): take whatever is already queued, never wait.
    #[serde(default)]
    pub max_wait_us: u64,
}

fn one() -> usize {
    1
}

fn default_queue() -> usize {
    256
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum ModelClass {
    /// An ONNX model run by ONNX Runtime.
    Onnx,
}

/// Builds a `model` step.
pub fn build(node: &StepNode, ctx: &mut BuildContext) -> Option<Box<dyn Step>> {
    let spec: ModelSpec = ctx.parse(node)?;
    let path = ctx.resolve(spec.model_path.as_str());
    let mut ok = true;
    for (field, value) in [
        ("intra_op_threads", spec.intra_op_threads),
        ("sessions", spec.sessions),
        ("queue_size", spec.queue_size),
        ("batch.max_size", spec.batch.map_or(1, |b| b.max_size)),
    ] {
        if value == 0 {
            let span = node
                .body
                .get_node(field)
                .map(|n| *n.span())
                .unwrap_or(node.span);
            ctx.error(&node.name, &span, format!("`{field}` must be at least 1"));
            ok = false;
        }
    }
    if !path.is_file() {
        ctx.report(
            servegraph_engine::Diagnostic::new(format!(
                "model file `{}` does not exist (looked at {})",
                spec.model_path.as_str(),
                path.display()
            ))
            .step(&node.name)
            .at(spec.model_path.span())
            .help("`model_path` is relative to the graph file's folder"),
        );
        ok = false;
    }
    if !ok {
        return None;
    }
    if ctx.mode == BuildMode::Structural {
        return Some(Box::new(Unloaded));
    }
    match spec.class {
        ModelClass::Onnx => match crate::onnx::OnnxModel::load(&node.name, &path, &spec) {
            Ok(model) => Some(Box::new(model)),
            Err(message) => {
                ctx.error(&node.name, spec.model_path.span(), message);
                None
            }
        },
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
}
