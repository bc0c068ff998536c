//! `class: onnx`: an ONNX file run by ONNX Runtime (the runtime is `onnx/`, behind feature
//! `onnx`; the spec is read and checked in every build).

use marked_yaml::Spanned;
use schemars::JsonSchema;
use serde::Deserialize;
use servegraph_engine::{BuildContext, BuildMode, Step, StepNode};

use super::{ClassSpec, Unloaded};

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
    /// Triton's `max_batch_size`: the first dimension of the model's inputs and outputs is a
    /// batch dimension of at most this many rows, without the batcher. The model
    /// configuration then leaves it out of `dims`, a raw binary request is one row (Triton's
    /// shape), and a request with more rows is a 400. Default: `batch.max_size` with
    /// `batch`, else none (whole shapes).
    #[serde(default)]
    #[schemars(range(min = 1))]
    pub max_batch_size: Option<usize>,
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
    /// Settings of the model's outputs, by name: `[{name: probabilities, label_filename:
    /// labels.txt}]`. Outputs not listed keep their defaults.
    #[serde(default)]
    pub outputs: Vec<OutputSpec>,
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

/// One of `outputs:`: `{name, label_filename}`.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct OutputSpec {
    /// The model's output tensor.
    #[schemars(with = "String")]
    pub name: Spanned<String>,
    /// A text file of class names, one per line (line i names class i), as Triton's
    /// `label_filename`: the classification extension (`"parameters": {"classification": N}`
    /// on this output) answers `value:index:label`. Relative to the graph file's folder; at
    /// most 4 MiB.
    #[serde(default)]
    #[schemars(with = "Option<String>")]
    pub label_filename: Option<Spanned<String>>,
}

/// The largest label file read.
const MAX_LABEL_FILE: u64 = 4 << 20;

/// Reads `outputs:`'s label files: class names by output, or `None` after reporting each
/// problem (a duplicate output, a missing, unreadable, empty or oversized file) at the step.
fn output_labels(
    spec: &OnnxSpec,
    node: &StepNode,
    ctx: &mut BuildContext,
) -> Option<Vec<(String, Vec<String>)>> {
    let mut labels = Vec::new();
    let mut ok = true;
    for (i, out) in spec.outputs.iter().enumerate() {
        let name = out.name.as_str();
        if spec.outputs[..i].iter().any(|o| o.name.as_str() == name) {
            ctx.error(
                &node.name,
                out.name.span(),
                format!("`outputs`: output `{name}` is listed twice"),
            );
            ok = false;
            continue;
        }
        let Some(file) = &out.label_filename else {
            continue;
        };
        match read_labels(ctx, file.as_str()) {
            Ok(names) => labels.push((name.to_owned(), names)),
            Err(why) => {
                ctx.error(
                    &node.name,
                    file.span(),
                    format!(
                        "`outputs`: output `{name}`'s `label_filename` `{}`: {why}",
                        file.as_str()
                    ),
                );
                ok = false;
            }
        }
    }
    ok.then_some(labels)
}

/// One class name per line of the file `path` names (relative to the graph file's folder;
/// `\r\n` line ends too; a last empty line is no class).
fn read_labels(ctx: &BuildContext, path: &str) -> Result<Vec<String>, String> {
    use std::io::Read;
    let full = ctx.resolve(path);
    if !full.is_file() {
        return Err(format!(
            "no such file (looked at {}; it is relative to the graph file's folder)",
            full.display()
        ));
    }
    ctx.check_model_path(&full)?;
    let file = std::fs::File::open(&full).map_err(|e| format!("{}: {e}", full.display()))?;
    let mut bytes = Vec::new();
    file.take(MAX_LABEL_FILE + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| format!("{}: {e}", full.display()))?;
    if bytes.len() as u64 > MAX_LABEL_FILE {
        return Err(format!(
            "larger than {} MiB, the most a label file may be",
            MAX_LABEL_FILE >> 20
        ));
    }
    let text = String::from_utf8(bytes).map_err(|e| format!("not UTF-8 text ({e})"))?;
    let names: Vec<String> = text
        .lines()
        .map(|l| l.strip_suffix('\r').unwrap_or(l).to_owned())
        .collect();
    if names.is_empty() {
        return Err("it is empty: give one class name per line".into());
    }
    Ok(names)
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

impl ClassSpec for OnnxSpec {
    fn build(&self, node: &StepNode, ctx: &mut BuildContext) -> Option<Box<dyn Step>> {
        let spec = self;
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
        let labels = output_labels(spec, node, ctx)?;
        let Some(path) = file.path else {
            return Some(Box::new(Unloaded));
        };
        if ctx.mode == BuildMode::Structural {
            return Some(Box::new(Unloaded));
        }
        #[cfg(feature = "onnx")]
        match super::onnx::OnnxModel::shared(&node.name, &path, spec) {
            Ok(model) => {
                let mut ok = true;
                for out in &spec.outputs {
                    if !model.outputs().iter().any(|o| o.name == *out.name.as_str()) {
                        let known: Vec<String> = model
                            .outputs()
                            .iter()
                            .map(|o| format!("`{}`", o.name))
                            .collect();
                        ctx.error(
                            &node.name,
                            out.name.span(),
                            format!(
                                "`outputs`: the model has no output `{}`; its outputs are {}",
                                out.name.as_str(),
                                known.join(", ")
                            ),
                        );
                        ok = false;
                    }
                }
                if !ok {
                    return None;
                }
                if labels.is_empty() {
                    Some(Box::new(model))
                } else {
                    Some(Box::new(super::Hooked::labeled(Box::new(model), labels)))
                }
            }
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
}
