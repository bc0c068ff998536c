//! The public [`Step`] trait every step implements, and how steps are built from YAML: each
//! step kind is a [`StepKind`] in a [`Registry`] (name → factory), and a factory turns a YAML
//! node into a runtime step through a [`BuildContext`] that collects every diagnostic.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use async_trait::async_trait;
use marked_yaml::types::{MarkedMappingNode, MarkedScalarNode};
use marked_yaml::{Node, Span};
use serde::de::DeserializeOwned;

use crate::diag::{Diagnostic, one_of};
use crate::error::Result;
use crate::event::Event;
use crate::learning::Learner;
use crate::tensor::{Signature, TensorMeta};

/// A unit of work in a graph. Implement it for a custom step and register a [`StepKind`] that
/// builds it. What only some steps have is behind an optional interface: a model's
/// ([`Step::model`]: readiness, loading, operations, batching) and a learner's
/// ([`Step::learner`]), so a step that wraps another forwards one method, not each of them.
#[async_trait]
pub trait Step: Send + Sync + 'static {
    /// Processes one event. CPU-heavy work (model inference) must not run on the async
    /// workers: hand it to a dedicated thread and await the answer.
    async fn process(&self, event: Event) -> Result<Event>;

    /// What this step gives, given what it is fed; an error names what does not fit (the
    /// message is the diagnostic `validate` prints). Used by validation and for metadata.
    /// The default knows nothing about the output.
    fn infer(&self, input: &Signature) -> Result<Signature, String> {
        let _ = input;
        Ok(Signature::open())
    }

    /// The tensors this step needs, when it knows (models do).
    fn inputs(&self) -> Option<Vec<TensorMeta>> {
        None
    }

    /// What a client must send this step so that it, and the steps after it, get what they
    /// need: `after` is what those steps take (`None`: unknown). A model takes its own inputs;
    /// a step that makes tensors from others (an image decoder, a rename) maps `after` back to
    /// what it reads. The default: its own inputs when it knows them, else `after` unchanged.
    /// A flow's metadata (`GET /v2/models/{flow}`) is this, folded from the responder back to
    /// the entry step.
    fn takes(&self, after: Option<Vec<TensorMeta>>) -> Option<Vec<TensorMeta>> {
        self.inputs().or(after)
    }

    /// What kind of step this is, for metadata when it is addressed as a model and for
    /// pictures. The default: its model's platform when it is a model, else
    /// [`Platform::Custom`].
    fn platform(&self) -> Platform {
        self.model().map_or(Platform::Custom, Model::platform)
    }

    /// Class names by index of output tensor `output`, when the step knows them (a
    /// `label_map` or `top_k` with labels, whatever the tensor; an ONNX model's output with a
    /// `label_filename`): the classification extension labels that output's classes with them.
    fn labels(&self, output: &str) -> Option<Vec<String>> {
        let _ = output;
        None
    }

    /// The step's settings in a few words, for pictures (`servegraph plot`): a transform's
    /// op, a router's policy, weights and sticky key. The default: nothing beyond its kind.
    fn summary(&self) -> Option<String> {
        None
    }

    /// The step as a model (readiness, loading, custom operations, batching), when it serves
    /// one.
    fn model(&self) -> Option<&dyn Model> {
        None
    }

    /// The step's learning (feedback, stats, checkpoint, sharing), when it learns (routers).
    fn learner(&self) -> Option<&dyn Learner> {
        None
    }

    /// The models this step makes addressable by name (a router's routes, recursively).
    fn models(&self) -> Vec<ModelInfo> {
        Vec::new()
    }

    /// Request headers this step reads (a sticky router's key), so sources copy them into
    /// the event; nested steps' are collected by the graph.
    fn headers(&self) -> Vec<String> {
        Vec::new()
    }

    /// Nested steps (a router's routes, an ensemble's members), by name, for pictures.
    fn children(&self) -> Vec<(&str, &dyn Step)> {
        Vec::new()
    }
}

/// What a step that serves a model answers besides [`Step::process`]: found through
/// [`Step::model`].
#[async_trait]
pub trait Model: Send + Sync {
    /// The model's platform, as metadata names it.
    fn platform(&self) -> Platform;

    /// Dynamic batching, when the model batches: the most requests run together and how
    /// long the first waits for others (the model configuration extension reads it).
    fn batching(&self) -> Option<(usize, std::time::Duration)> {
        None
    }

    /// Triton's `max_batch_size`: when more than 0, the first dimension of the model's
    /// inputs and outputs is a batch dimension of at most that many rows (the model
    /// configuration leaves it out of `dims`, and a raw binary request is one row). The
    /// default: the batcher's `max_size` when the model batches, else 0.
    fn max_batch_size(&self) -> usize {
        self.batching().map_or(0, |(n, _)| n)
    }

    /// Why the model cannot serve now (a Python model with no worker loaded), or `None` when
    /// it can. Readiness (`/v2/health/ready`, `/v2/models/{m}/ready`) reads it.
    fn unready(&self) -> Option<String> {
        None
    }

    /// Whether the model is still loading in the background (a Python model with
    /// `load_mode: async`): `servegraph validate` waits for it, then reports
    /// [`Model::unready`].
    fn loading(&self) -> bool {
        false
    }

    /// A custom operation the model serves at `POST /v2/models/{step}/{name}` (an MLRun
    /// model's `op_<name>(event)`): the request's JSON body in, a JSON answer out. `None`
    /// when it has no operation of that name.
    async fn operation(
        &self,
        name: &str,
        body: serde_json::Value,
    ) -> Option<Result<serde_json::Value>> {
        let _ = (name, body);
        None
    }
}

/// The operation a model is asked to take Seldon's feedback with (`Model::operation`), its
/// body Seldon's `{"request", "response", "reward", "truth"}`: a model whose class takes
/// feedback and served the request the response's `meta.puid` names answers `true`. Not an
/// identifier, so no client's custom operation can name it.
pub const SELDON_FEEDBACK: &str = "$seldon_feedback";

/// The operation a model is asked its Seldon health with (`Model::operation`, no body): a
/// Python class's `health_status()` as Seldon's wrapper answers it (a SeldonMessage), or
/// `null` when its class is not a Seldon component.
pub const SELDON_HEALTH: &str = "$seldon_health";

/// The operation a model is asked its Seldon metadata with (`Model::operation`, no body): its
/// class's `init_metadata()` as Seldon validates it (`name`, `versions`, `platform`,
/// `inputs`, `outputs`, `custom`), or `null` when its class has none.
pub const SELDON_METADATA: &str = "$seldon_metadata";

/// What a step is, as metadata (`platform`) and pictures name it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Platform {
    /// An ONNX model run by ONNX Runtime (`onnxruntime_onnx`, Triton's name).
    Onnx,
    /// A Python model run by worker processes (`python`).
    Python,
    /// A model on another OIP server (`remote`).
    Remote,
    /// A flow of steps: a graph addressed as a whole (`servegraph_flow`).
    Flow,
    Router,
    Ensemble,
    Transform,
    ErrorHandler,
    /// A Kafka topic boundary: the event is handed on and the flow stops here.
    Queue,
    /// A custom step (`servegraph`).
    Custom,
}

impl Platform {
    /// The platform string metadata and Triton's model configuration carry.
    pub fn as_str(self) -> &'static str {
        match self {
            Platform::Onnx => "onnxruntime_onnx",
            Platform::Python => "python",
            Platform::Remote => "remote",
            Platform::Flow => "servegraph_flow",
            Platform::Router => "servegraph_router",
            Platform::Ensemble => "servegraph_ensemble",
            Platform::Transform => "servegraph_transform",
            Platform::ErrorHandler => "servegraph_error_handler",
            Platform::Queue => "servegraph_queue",
            Platform::Custom => "servegraph",
        }
    }

    /// Triton's `backend` for this platform in a model configuration (`""`: none).
    pub fn backend(self) -> &'static str {
        match self {
            Platform::Onnx => "onnxruntime",
            Platform::Python => "python",
            _ => "",
        }
    }

    /// The model class a Triton model configuration names with its `backend` (`onnxruntime`,
    /// `python`) or, for ONNX, its `platform` (`onnxruntime_onnx`: Triton has no `platform`
    /// for Python models); `None` for one servegraph does not serve.
    pub fn from_triton(backend: &str, platform: &str) -> Option<Platform> {
        [Platform::Onnx, Platform::Python].into_iter().find(|p| {
            (!backend.is_empty() && p.backend() == backend)
                || (*p == Platform::Onnx && p.as_str() == platform)
        })
    }

    /// A short label for pictures: `onnx model`, `router`, ...
    pub fn label(self) -> &'static str {
        match self {
            Platform::Onnx => "onnx model",
            Platform::Python => "python",
            Platform::Remote => "remote model",
            Platform::Flow => "flow",
            Platform::Router => "router",
            Platform::Ensemble => "ensemble",
            Platform::Transform => "transform",
            Platform::ErrorHandler => "error_handler",
            Platform::Queue => "queue",
            Platform::Custom => "servegraph",
        }
    }
}

impl std::fmt::Display for Platform {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl serde::Serialize for Platform {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

/// An addressable model: what `GET /v2/models/{name}[/versions/{v}]` describes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ModelInfo {
    pub name: String,
    pub version: Option<String>,
    pub platform: Platform,
    pub inputs: Vec<TensorMeta>,
    pub outputs: Vec<TensorMeta>,
    /// Triton's `max_batch_size`: more than 0 when the first dimension of the model's inputs
    /// and outputs is a batch dimension of at most that many rows ([`Model::max_batch_size`]);
    /// 0 when shapes are whole (a raw binary request is then shaped by the inputs alone).
    pub max_batch_size: usize,
}

/// A step's YAML, handed to its kind's factory: the name, and its fields minus the ones the
/// engine owns (`kind`, `after`, `responder`, `timeout_ms`).
pub struct StepNode {
    pub name: String,
    pub kind: String,
    /// Where the step is defined (its name's position).
    pub span: Span,
    pub body: MarkedMappingNode,
}

/// A shared step is a step: graphs built side by side (a reload) can hold the same one.
#[async_trait]
impl<S: Step> Step for Arc<S> {
    async fn process(&self, event: Event) -> Result<Event> {
        S::process(self, event).await
    }
    fn infer(&self, input: &Signature) -> Result<Signature, String> {
        S::infer(self, input)
    }
    fn inputs(&self) -> Option<Vec<TensorMeta>> {
        S::inputs(self)
    }
    fn takes(&self, after: Option<Vec<TensorMeta>>) -> Option<Vec<TensorMeta>> {
        S::takes(self, after)
    }
    fn platform(&self) -> Platform {
        S::platform(self)
    }
    fn labels(&self, output: &str) -> Option<Vec<String>> {
        S::labels(self, output)
    }
    fn summary(&self) -> Option<String> {
        S::summary(self)
    }
    fn model(&self) -> Option<&dyn Model> {
        S::model(self)
    }
    fn learner(&self) -> Option<&dyn Learner> {
        S::learner(self)
    }
    fn models(&self) -> Vec<ModelInfo> {
        S::models(self)
    }
    fn headers(&self) -> Vec<String> {
        S::headers(self)
    }
    fn children(&self) -> Vec<(&str, &dyn Step)> {
        S::children(self)
    }
}

/// Builds one kind of step from YAML.
pub trait StepKind: Send + Sync {
    /// Builds the step, or reports every problem through `ctx` and returns `None`.
    fn build(&self, node: &StepNode, ctx: &mut BuildContext) -> Option<Box<dyn Step>>;
}

impl<F> StepKind for F
where
    F: Fn(&StepNode, &mut BuildContext) -> Option<Box<dyn Step>> + Send + Sync,
{
    fn build(&self, node: &StepNode, ctx: &mut BuildContext) -> Option<Box<dyn Step>> {
        self(node, ctx)
    }
}

/// The step kinds a graph may use, by name, with the JSON Schema of each kind's own fields.
#[derive(Clone, Default)]
pub struct Registry {
    kinds: BTreeMap<String, Arc<dyn StepKind>>,
    schemas: BTreeMap<String, serde_json::Value>,
}

impl Registry {
    pub fn new() -> Registry {
        Registry::default()
    }

    /// Registers (or replaces) a step kind.
    pub fn register(&mut self, kind: &str, factory: impl StepKind + 'static) -> &mut Registry {
        self.kinds.insert(kind.to_owned(), Arc::new(factory));
        self
    }

    /// Sets the JSON Schema of a kind's own fields (an object schema, or a `oneOf` of them),
    /// for `servegraph schema`; a kind without one accepts any fields there.
    pub fn set_schema(&mut self, kind: &str, schema: serde_json::Value) -> &mut Registry {
        self.schemas.insert(kind.to_owned(), schema);
        self
    }

    pub fn schema(&self, kind: &str) -> Option<&serde_json::Value> {
        self.schemas.get(kind)
    }

    pub fn kinds(&self) -> Vec<&str> {
        self.kinds.keys().map(String::as_str).collect()
    }

    pub fn get(&self, kind: &str) -> Option<&Arc<dyn StepKind>> {
        self.kinds.get(kind)
    }
}

/// Fields every step may have; the engine reads them, the step kinds never see them.
pub const COMMON_FIELDS: [&str; 5] = ["kind", "after", "responder", "timeout_ms", "on_error"];

static MODEL_ROOTS: std::sync::OnceLock<Vec<PathBuf>> = std::sync::OnceLock::new();

/// The folders (besides each graph's own) model files may come from; set once, at start.
/// Unset (or empty), the folder above each graph's.
pub fn set_model_roots(roots: Vec<PathBuf>) {
    let _ = MODEL_ROOTS.set(roots);
}

fn roots_configured() -> bool {
    MODEL_ROOTS.get().is_some_and(|r| !r.is_empty())
}

fn model_roots() -> Vec<PathBuf> {
    MODEL_ROOTS.get().cloned().unwrap_or_default()
}

/// Whether the build opens models (contextual validation) or only checks structure.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BuildMode {
    /// Parse and check everything that needs no I/O beyond file existence.
    Structural,
    /// Also load models and check tensor names and dtypes along every edge.
    Load,
}

/// What [`BuildContext::model_file`] resolves.
pub struct ModelFileRequest<'a> {
    /// The field's name, for messages (`model_uri`, `model_path`).
    pub field: &'a str,
    pub uri: &'a str,
    pub span: &'a Span,
    /// The `sha256:` pin and its position.
    pub sha256: Option<(&'a str, &'a Span)>,
    /// A folder is acceptable (Python models get their folder).
    pub folder_ok: bool,
}

/// A resolved model file or folder.
pub struct ModelFile {
    /// The local path; `None` when it was not fetched (structure only, or `validate` with a
    /// store's object not yet in the cache).
    pub path: Option<PathBuf>,
}

/// A Kafka topic a graph uses, and what uses it: `validate` and `serve` check that each
/// exists on its brokers (or create it: `create_topics`).
#[derive(Clone, Debug, PartialEq)]
pub struct KafkaTopic {
    /// The bootstrap brokers, `host:port[,host:port]`.
    pub brokers: String,
    pub topic: String,
    /// What uses it, as messages name it: `` `sources.kafka.feedback_topic` ``, `` queue step `handoff` ``.
    pub used_by: String,
    /// librdkafka settings its client reaches the brokers with (`sources.kafka.options`).
    pub options: Vec<(String, String)>,
    /// Where the graph file says so.
    pub span: Option<Span>,
}

/// What a factory builds with: the registry (for child steps), where relative paths resolve,
/// and the diagnostics collected so far.
pub struct BuildContext<'r> {
    registry: &'r Registry,
    base_dir: PathBuf,
    pub mode: BuildMode,
    diagnostics: Vec<Diagnostic>,
    /// The Kafka topics steps said they use (queue steps, learning shared through a topic).
    kafka_topics: Vec<KafkaTopic>,
    names: HashMap<String, Option<crate::diag::Location>>,
    /// A router graph's name: its router is the step of that name.
    router_graph: Option<String>,
    /// What the serving process keeps between builds (none outside a server).
    shelf: Option<crate::loading::Shelf>,
    /// The routes the model repository added to the router graph's router (not the file's).
    repository_routes: Vec<String>,
    /// Loads begun by steps and not waited for yet (see [`BuildContext::defer_load`]).
    pending: Vec<PendingLoad>,
}

/// A load a step began, waited for with the others (see [`BuildContext::defer_load`]).
struct PendingLoad {
    step: String,
    span: Span,
    wait: Box<dyn FnOnce() -> std::result::Result<(), String> + Send>,
}

/// How often the build says which models it still waits for.
const LOAD_PROGRESS_EVERY: std::time::Duration = std::time::Duration::from_secs(3);

impl<'r> BuildContext<'r> {
    pub fn new(registry: &'r Registry, base_dir: &Path, mode: BuildMode) -> BuildContext<'r> {
        BuildContext {
            registry,
            base_dir: base_dir.to_owned(),
            mode,
            diagnostics: Vec::new(),
            kafka_topics: Vec::new(),
            names: HashMap::new(),
            router_graph: None,
            shelf: None,
            repository_routes: Vec::new(),
            pending: Vec::new(),
        }
    }

    /// Builds that keep what they can from the builds before them (a serving process's).
    pub(crate) fn keep_on(&mut self, shelf: &crate::loading::Shelf) {
        self.shelf = Some(shelf.clone());
    }

    /// What the serving process keeps between builds of its graph: a step whose settings did
    /// not change takes again what it built before. `None` outside a server (or in tests).
    pub fn shelf(&self) -> Option<&crate::loading::Shelf> {
        self.shelf.as_ref()
    }

    /// Says which routes of the router graph's router the model repository added.
    pub(crate) fn set_repository_routes(&mut self, routes: Vec<String>) {
        self.repository_routes = routes;
    }

    /// Whether route `route` of router `router` is one the model repository added (rather
    /// than one the graph file declares): it gets only the traffic that names it.
    pub fn from_repository(&self, router: &str, route: &str) -> bool {
        self.router_graph.as_deref() == Some(router)
            && self.repository_routes.iter().any(|r| r == route)
    }

    /// A load `step` began and did not wait for: the build waits for every such load at once
    /// (so models load in parallel) once every step is declared, and reports a failed one
    /// (its error) at the step.
    pub fn defer_load(
        &mut self,
        step: &str,
        span: &Span,
        wait: impl FnOnce() -> std::result::Result<(), String> + Send + 'static,
    ) {
        self.pending.push(PendingLoad {
            step: step.to_owned(),
            span: *span,
            wait: Box::new(wait),
        });
    }

    /// Waits for the loads steps began ([`BuildContext::defer_load`]), all at once, saying
    /// every few seconds which models are still loading; reports each failure at its step.
    pub(crate) fn finish_loads(&mut self) {
        let pending = std::mem::take(&mut self.pending);
        if pending.is_empty() {
            return;
        }
        let started = std::time::Instant::now();
        let failures: Vec<(String, Span, String)> = std::thread::scope(|scope| {
            let waits: Vec<_> = pending
                .into_iter()
                .map(|p| {
                    let PendingLoad { step, span, wait } = p;
                    (step, span, scope.spawn(wait))
                })
                .collect();
            let mut said = std::time::Instant::now();
            while !waits.iter().all(|(_, _, w)| w.is_finished()) {
                std::thread::sleep(std::time::Duration::from_millis(50));
                if said.elapsed() >= LOAD_PROGRESS_EVERY {
                    said = std::time::Instant::now();
                    if let Some(loading) = crate::loading::describe() {
                        tracing::info!(
                            waited_s = started.elapsed().as_secs(),
                            "still loading: {loading}"
                        );
                    }
                }
            }
            waits
                .into_iter()
                .filter_map(|(step, span, w)| match w.join() {
                    Ok(Ok(())) => None,
                    Ok(Err(e)) => Some((step, span, e)),
                    Err(_) => Some((step, span, "loading the model panicked".to_owned())),
                })
                .collect()
        });
        for (step, span, error) in failures {
            self.report(Diagnostic::new(error).step(&step).at(&span));
        }
    }

    /// Resolves a path from the graph file relative to the graph file's folder.
    pub fn resolve(&self, path: &str) -> PathBuf {
        self.base_dir.join(path)
    }

    /// Checks that an existing file the graph names (a model, a tracking file's folder) lies
    /// under an allowed root once `..` and symlinks are followed: the graph file's folder,
    /// and the roots given to [`set_model_roots`], or when none were, the folder above the
    /// graph's (so `graphs/g.yaml` may use `../models/`). Where servegraph is started from
    /// never matters. An error says where the path leads.
    pub fn check_model_path(&self, path: &Path) -> std::result::Result<(), String> {
        let real = path
            .canonicalize()
            .map_err(|e| format!("{}: {e}", path.display()))?;
        let base = if self.base_dir.as_os_str().is_empty() {
            Path::new(".")
        } else {
            self.base_dir.as_path()
        };
        let base = base
            .canonicalize()
            .map_err(|e| format!("{}: {e}", base.display()))?;
        let roots: Vec<PathBuf> = if roots_configured() {
            model_roots()
                .iter()
                .filter_map(|r| r.canonicalize().ok())
                .collect()
        } else {
            vec![base.parent().unwrap_or(&base).to_owned()]
        };
        if std::iter::once(&base)
            .chain(roots.iter())
            .any(|root| real.starts_with(root))
        {
            return Ok(());
        }
        Err(format!(
            "it resolves to {}, outside the folders files may come from: the graph's folder and {}",
            real.display(),
            if roots_configured() {
                "the --model-root folders".to_owned()
            } else {
                format!(
                    "the folder above it, {} (add others with --model-root)",
                    roots[0].display()
                )
            }
        ))
    }

    /// Resolves a model file or folder the graph names (`model_uri`, or `model_path`): a
    /// local path must exist and pass [`BuildContext::check_model_path`]; a store's object is
    /// fetched into the model cache when models load ([`BuildMode::Load`]), and only read as
    /// a URI otherwise. A `sha256:` pin is checked against the file on every load. Problems
    /// are reported against `step` at the field's position; `None` then.
    pub fn model_file(&mut self, step: &str, want: ModelFileRequest<'_>) -> Option<ModelFile> {
        use crate::storage::{self, Location};
        let ModelFileRequest {
            field,
            uri,
            span,
            sha256,
            folder_ok,
        } = want;
        let fail = |ctx: &mut Self, message: String| {
            ctx.report(Diagnostic::new(message).step(step).at(span));
            None
        };
        let pin = match sha256 {
            None => None,
            Some((pin, pin_span)) => match storage::parse_sha256(pin) {
                Ok(p) => Some(p),
                Err(e) => {
                    self.report(
                        Diagnostic::new(format!("`sha256`: {e}"))
                            .step(step)
                            .at(pin_span),
                    );
                    return None;
                }
            },
        };
        let what = if folder_ok {
            "model file or folder"
        } else {
            "model file"
        };
        match storage::parse(uri, &self.base_dir) {
            Err(e) => fail(self, format!("`{field}`: {e}")),
            Ok(Location::Local(path)) => {
                let exists = if folder_ok {
                    path.exists()
                } else {
                    path.is_file()
                };
                if !exists {
                    let mut d = Diagnostic::new(format!(
                        "{what} `{uri}` does not exist (looked at {})",
                        path.display()
                    ))
                    .step(step)
                    .at(span)
                    .help(format!("`{field}` is relative to the graph file's folder"));
                    if !folder_ok && path.is_dir() {
                        d = d.help(format!("`{uri}` is a folder; name the model file in it"));
                    }
                    self.report(d);
                    return None;
                }
                if let Err(why) = self.check_model_path(&path) {
                    return fail(self, format!("{what} `{uri}` is not allowed: {why}"));
                }
                let path = path.canonicalize().unwrap_or(path);
                if let Some(pin) = pin {
                    if path.is_dir() {
                        return fail(self, "`sha256` pins a single file; this is a folder".into());
                    }
                    if self.mode == BuildMode::Load
                        && let Err(e) = check_pin(&path, pin)
                    {
                        return fail(self, format!("{what} `{uri}`: {e}"));
                    }
                }
                Some(ModelFile { path: Some(path) })
            }
            Ok(Location::Remote(url)) => {
                if self.mode == BuildMode::Structural {
                    return Some(ModelFile { path: None });
                }
                if !storage::settings().download {
                    // `validate`: the object must exist; its tensors (and its pin) are checked
                    // only when the cache already holds it, as serving would load it.
                    return match storage::find(&url) {
                        Ok(_) => {
                            let path = storage::cached(&url);
                            if let (Some(pin), Some(file)) = (pin, &path)
                                && file.is_file()
                                && let Err(e) = check_pin(file, pin)
                            {
                                return fail(
                                    self,
                                    format!("{what} `{}`: {e}", storage::redact(&url)),
                                );
                            }
                            Some(ModelFile { path })
                        }
                        Err(e) => fail(self, format!("`{field}`: {e}")),
                    };
                }
                match storage::fetch(&url, &storage::Fetch { sha256: pin }) {
                    Ok(fetched) => {
                        if !folder_ok && fetched.path.is_dir() {
                            return fail(
                                self,
                                format!(
                                    "`{field}` `{}` is a folder; name the model file in it",
                                    storage::redact(&url)
                                ),
                            );
                        }
                        Some(ModelFile {
                            path: Some(fetched.path),
                        })
                    }
                    Err(e) => fail(self, format!("`{field}`: {e}")),
                }
            }
        }
    }

    pub fn report(&mut self, diagnostic: Diagnostic) {
        self.diagnostics.push(diagnostic);
    }

    /// Reports every one of `problems` as concerning `step`.
    pub fn report_in(&mut self, step: &str, problems: Vec<Diagnostic>) {
        self.diagnostics
            .extend(problems.into_iter().map(|d| d.step(step)));
    }

    /// Reports an error about `step` at `span`.
    pub fn error(&mut self, step: &str, span: &Span, message: impl Into<String>) {
        self.report(Diagnostic::new(message).step(step).at(span));
    }

    /// Step `step` uses the Kafka topic `topic` on `brokers` (written at `span`): the graph
    /// lists it among its topics, which `validate` and `serve` check.
    pub fn uses_kafka_topic(
        &mut self,
        step: &str,
        what: &str,
        brokers: &str,
        topic: &str,
        span: &Span,
    ) {
        self.kafka_topics.push(KafkaTopic {
            brokers: brokers.to_owned(),
            topic: topic.to_owned(),
            used_by: format!("{what} `{step}`"),
            options: Vec::new(),
            span: Some(*span),
        });
    }

    /// The Kafka topics steps said they use, in the order they said so.
    pub(crate) fn take_kafka_topics(&mut self) -> Vec<KafkaTopic> {
        std::mem::take(&mut self.kafka_topics)
    }

    pub fn has_errors(&self) -> bool {
        !self.diagnostics.is_empty()
    }

    pub fn error_count(&self) -> usize {
        self.diagnostics.len()
    }

    pub fn into_diagnostics(self) -> Vec<Diagnostic> {
        self.diagnostics
    }

    /// Deserializes a step's own fields into its spec type, reporting any error with its
    /// position and, for an unknown field, every field the step accepts.
    pub fn parse<T: DeserializeOwned + schemars::JsonSchema>(
        &mut self,
        node: &StepNode,
    ) -> Option<T> {
        let body = Node::Mapping(node.body.clone());
        let extra: Vec<&str> = COMMON_FIELDS
            .iter()
            .copied()
            .filter(|f| *f != "kind")
            .collect();
        let what = format!("a `{}` step", node.kind);
        match from_yaml::<T>(&body, &node.span, &what, &extra) {
            Ok(spec) => Some(spec),
            Err(problems) => {
                self.report_in(&node.name, problems);
                None
            }
        }
    }

    /// Reads a step's `tag` field (`class`, `type`): which of `variants` its spec is. An
    /// unknown or missing one is reported (with "did you mean") and gives `None`.
    pub fn variant<'v>(
        &mut self,
        node: &StepNode,
        tag: &str,
        variants: &[&'v str],
    ) -> Option<&'v str> {
        match node.body.get_node(tag) {
            None => {
                self.report(
                    Diagnostic::new(format!("missing field `{tag}` for a `{}` step", node.kind))
                        .step(&node.name)
                        .at(&node.span)
                        .help(format!("expected one of {}", one_of(variants))),
                );
                None
            }
            Some(value) => {
                let given = value
                    .as_scalar()
                    .map(|s| s.as_str())
                    .unwrap_or("<not a name>");
                if let Some(v) = variants.iter().find(|v| **v == given) {
                    return Some(v);
                }
                self.report(
                    Diagnostic::new(format!("unknown {tag} `{given}`"))
                        .step(&node.name)
                        .at(value.span())
                        .help(crate::fields::suggest(given, variants)),
                );
                None
            }
        }
    }

    /// Like [`BuildContext::parse`], for the spec of one variant (`class: onnx`): the `tag`
    /// field is the caller's; a field of another variant is reported as unknown for this one.
    pub fn parse_variant<T: DeserializeOwned + schemars::JsonSchema>(
        &mut self,
        node: &StepNode,
        tag: &str,
        variant: &str,
    ) -> Option<T> {
        self.parse_variant_among::<T>(node, tag, variant, &[])
    }

    /// [`BuildContext::parse_variant`], where `siblings` are the other variants and their
    /// fields: a field of one of them is reported as such (`` `url` applies to `class:
    /// remote`, not `class: onnx` ``).
    pub fn parse_variant_among<T: DeserializeOwned + schemars::JsonSchema>(
        &mut self,
        node: &StepNode,
        tag: &str,
        variant: &str,
        siblings: &[(&str, Vec<String>)],
    ) -> Option<T> {
        let mut body = node.body.clone();
        body.remove(&MarkedScalarNode::new(Span::new_blank(), tag));
        let own = crate::fields::field_names(&schemars::schema_for!(T).to_value());
        let mut foreign = false;
        for (key, _) in node.body.iter() {
            let k = key.as_str();
            if own.iter().any(|f| f == k) || k == tag {
                continue;
            }
            if let Some((other, _)) = siblings.iter().find(|(_, f)| f.iter().any(|f| f == k)) {
                self.report(
                    Diagnostic::new(format!(
                        "`{k}` applies to `{tag}: {other}`, not `{tag}: {variant}`"
                    ))
                    .step(&node.name)
                    .at(key.span())
                    .help(format!(
                        "`{tag}: {variant}` takes {}",
                        crate::diag::all_of(&own)
                    )),
                );
                body.remove(key);
                foreign = true;
            }
        }
        let mut extra: Vec<&str> = vec![tag];
        extra.extend(COMMON_FIELDS.iter().copied().filter(|f| *f != "kind"));
        let what = format!("`{tag}: {variant}`");
        match from_yaml::<T>(&Node::Mapping(body), &node.span, &what, &extra) {
            Ok(_) if foreign => None,
            Ok(spec) => Some(spec),
            Err(problems) => {
                self.report_in(&node.name, problems);
                None
            }
        }
    }

    /// Builds a nested step (a route of a router, a member of an ensemble) from its YAML.
    pub fn build_child(&mut self, key: &MarkedScalarNode, value: &Node) -> Option<Box<dyn Step>> {
        let node = self.step_node(key, value, false)?;
        self.build_node(&node)
    }

    /// Builds a step from its prepared node, dispatching on its kind.
    pub fn build_node(&mut self, node: &StepNode) -> Option<Box<dyn Step>> {
        let registry = self.registry;
        let factory = registry.get(&node.kind)?;
        factory.build(node, self)
    }

    /// Checks a step's name and kind and strips the engine's fields. `top_level` steps may have
    /// `after`/`responder`/`timeout_ms` (the caller reads them); nested ones may not.
    pub(crate) fn step_node(
        &mut self,
        key: &MarkedScalarNode,
        value: &Node,
        top_level: bool,
    ) -> Option<StepNode> {
        let name = key.as_str().to_owned();
        let span = *key.span();
        self.claim_name(&name, &span);
        let Some(map) = value.as_mapping() else {
            self.error(
                &name,
                value.span(),
                "a step must be a mapping with at least `kind`",
            );
            return None;
        };
        let kinds = self.registry.kinds();
        let kind = match map.get_node("kind") {
            None => {
                self.report(
                    Diagnostic::new("missing field `kind`")
                        .step(&name)
                        .at(&span)
                        .help(format!("expected one of {}", one_of(&kinds))),
                );
                return None;
            }
            Some(Node::Scalar(k)) if self.registry.get(k.as_str()).is_some() => {
                k.as_str().to_owned()
            }
            Some(other) => {
                let shown = other
                    .as_scalar()
                    .map(|s| s.as_str())
                    .unwrap_or("<not a name>");
                self.report(
                    Diagnostic::new(format!("unknown kind `{shown}`"))
                        .step(&name)
                        .at(other.span())
                        .help(crate::fields::suggest(shown, &kinds)),
                );
                return None;
            }
        };
        let mut body = map.clone();
        for field in COMMON_FIELDS {
            let k = MarkedScalarNode::new(Span::new_blank(), field);
            if let Some(v) = body.remove(&k)
                && !top_level
                && field != "kind"
            {
                self.error(
                    &name,
                    v.span(),
                    format!("`{field}` is only allowed on steps of a flow, not inside routes"),
                );
            }
        }
        Some(StepNode {
            name,
            kind,
            span,
            body,
        })
    }

    /// A router graph's router: named after the graph, so no route may take that name.
    pub(crate) fn claim_router_graph(&mut self, name: &str, span: &Span) {
        self.claim_name(name, span);
        self.router_graph = Some(name.to_owned());
    }

    /// Every step name in a graph must be unique: names address models and steps.
    pub(crate) fn claim_name(&mut self, name: &str, span: &Span) {
        let here = crate::diag::Location::of(span);
        if self.router_graph.as_deref() == Some(name) {
            self.report(
                Diagnostic::new(format!("route `{name}` has the graph's name"))
                    .at(span)
                    .help(format!(
                        "`/v2/models/{name}` is the graph itself (its router); give the route \
                         another name, or the graph another `name`"
                    )),
            );
            return;
        }
        if let Some(first) = self.names.get(name) {
            let help = match first {
                Some(l) => format!("first defined at line {}, column {}", l.line, l.column),
                None => "names must be unique across the whole graph".to_owned(),
            };
            let d = Diagnostic::new(format!("duplicate step name `{name}`"))
                .at(span)
                .help(help);
            self.report(d);
        } else {
            self.names.insert(name.to_owned(), here);
        }
    }
}

/// Checks a file against its `sha256:` pin.
fn check_pin(path: &Path, pin: [u8; 32]) -> Result<(), crate::storage::StoreError> {
    let got = crate::storage::cache_sha256(path)?;
    (got == pin)
        .then_some(())
        .ok_or(crate::storage::StoreError::Checksum { got, pinned: pin })
}

/// Deserializes a YAML node into `T`. First every field is checked against `T`'s JSON Schema
/// (see [`crate::fields`]): each problem is one diagnostic, in words, at the bad value. Only
/// a node that passes is deserialized; a failure then is one diagnostic with the position of
/// the offending node (or `fallback`). `extra_fields` are fields the caller takes besides
/// `T`'s own (accepted, and listed in hints).
pub fn from_yaml<T: DeserializeOwned + schemars::JsonSchema>(
    node: &Node,
    fallback: &Span,
    what: &str,
    extra_fields: &[&str],
) -> Result<T, Vec<Diagnostic>> {
    from_yaml_at(node, fallback, what, extra_fields, "")
}

/// [`from_yaml`] for a node at `path` in its step (`policy`): messages name fields from there
/// (`policy.epsilon`).
pub fn from_yaml_at<T: DeserializeOwned + schemars::JsonSchema>(
    node: &Node,
    fallback: &Span,
    what: &str,
    extra_fields: &[&str],
    path: &str,
) -> Result<T, Vec<Diagnostic>> {
    let schema = schemars::schema_for!(T).to_value();
    let defs = schema
        .get("$defs")
        .and_then(serde_json::Value::as_object)
        .cloned()
        .unwrap_or_default();
    let problems = crate::fields::check_at(node, &schema, &defs, what, extra_fields, path);
    if !problems.is_empty() {
        return Err(problems);
    }
    marked_yaml::from_node::<T>(node).map_err(|err| {
        let location = err
            .start_mark()
            .map(|m| crate::diag::Location {
                line: m.line(),
                column: m.column(),
            })
            .or_else(|| crate::diag::Location::of(fallback));
        let mut d = match &*err {
            marked_yaml::Error::UnknownFieldError(field, expected, _) => {
                let mut fields: Vec<&str> = expected.to_vec();
                fields.extend(extra_fields);
                Diagnostic::new(format!("unknown field `{field}` for {what}"))
                    .help(crate::fields::suggest(field, &fields))
            }
            _ => Diagnostic::new(err.to_string()),
        };
        d.location = location;
        vec![d]
    })
}
