//! `class: python`'s fields, and what the workers are started with.

use std::path::PathBuf;
use std::time::Duration;

use marked_yaml::Spanned;
use schemars::JsonSchema;
use serde::Deserialize;
use servegraph_engine::{BuildContext, Diagnostic, StepNode, TensorMeta};

use super::worker::WorkerConfig;
use crate::model::BatchSpec;

/// `class: python`.
#[derive(Clone, Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct PythonSpec {
    /// The `.py` file that defines the model, relative to the graph file's folder.
    #[serde(default)]
    #[schemars(with = "Option<String>")]
    pub path: Option<Spanned<String>>,
    /// Or an importable module name (found on `python_path` or in the interpreter's
    /// environment).
    #[serde(default)]
    pub module: Option<String>,
    /// Folders put first on the workers' `sys.path`, relative to the graph file's folder.
    #[serde(default)]
    pub python_path: Vec<String>,
    /// The model's class: constructed once per worker with `class_args`, then `load()`.
    #[serde(default)]
    pub class_name: Option<String>,
    /// Or a plain function `f(inputs, parameters)`.
    #[serde(default)]
    pub function: Option<String>,
    /// Keyword arguments for the class's constructor.
    #[serde(default)]
    pub class_args: serde_json::Map<String, serde_json::Value>,
    /// A file or folder handed to the class as `model_uri=` (Seldon/PrimeHub's convention)
    /// or `model_path=` (MLRun's): a path relative to the graph file's folder (under the same
    /// rule as ONNX files), or a store's URI (`s3://`, `gs://`, `az://`, `http(s)://`), whose
    /// file or folder is downloaded into the model cache and handed over as a local path.
    #[serde(default)]
    #[schemars(with = "Option<String>")]
    pub model_uri: Option<Spanned<String>>,
    /// The same as `model_uri`, MLRun's spelling (give one of the two).
    #[serde(default)]
    #[schemars(with = "Option<String>")]
    pub model_path: Option<Spanned<String>>,
    /// `sha256:<64 hex digits>`: the SHA-256 of the `model_uri` file, checked on every load.
    #[serde(default)]
    #[schemars(with = "Option<String>")]
    pub sha256: Option<Spanned<String>>,
    /// A model folder as MLServer lays it out, in place of `path`/`module`, `class_name`,
    /// `model_uri` and `class_args`: its `model-settings.json` (or the `.json` file named)
    /// gives the class (`implementation`, `module.Class`, imported with the folder first on
    /// `sys.path`), its file (`parameters.uri`, relative to the folder; the folder itself
    /// without one) and the rest of its `ModelSettings` (`parameters.extra`,
    /// `parameters.version`, `inputs`/`outputs` metadata); `max_batch_size` and
    /// `max_batch_time` (seconds) are `batch:` when the step has none. Relative to the graph
    /// file's folder.
    #[serde(default)]
    #[schemars(with = "Option<String>")]
    pub model_settings: Option<Spanned<String>>,
    /// The `model_settings` file as read (its JSON, with `_source` its path), for the worker.
    #[serde(skip)]
    #[schemars(skip)]
    pub settings: Option<serde_json::Value>,
    /// A `kind: task` step's call (MLRun's flow steps); none for `class: python`.
    #[serde(skip)]
    #[schemars(skip)]
    pub task: Option<TaskCall>,
    /// The calling convention: `servegraph` (`predict(inputs, parameters)`), `mlrun`
    /// (`V2ModelServer`: `predict(body)`), `kserve` (`kserve.Model`: `predict(payload,
    /// headers)`), `mlserver` (`MLModel`: `predict(InferenceRequest)`), `seldon`
    /// (`predict(X, feature_names, meta)`), or `auto` (the default: `mlrun` for a
    /// `V2ModelServer` subclass, `kserve` for a `kserve.Model` subclass, `mlserver` for an
    /// `MLModel` subclass, `seldon` when `predict` takes `X` or `feature_names`, else
    /// `servegraph`).
    #[serde(default)]
    pub api: Api,
    /// The Seldon component type the class plays (Seldon's API): `model` (the default:
    /// `predict`), `transformer` (`transform_input`: the body the next step gets) or
    /// `output_transformer` (`transform_output`: on what the step before answered). A Seldon
    /// ROUTER is a router's `policy: {type: seldon, ...}`, a COMBINER an ensemble's
    /// `combine: seldon` with its class in `seldon: {...}`.
    #[serde(default)]
    pub role: SeldonRole,
    /// The interpreter, hence the environment, of this model's workers (default: the
    /// `SERVEGRAPH_PYTHON` environment variable, else `python3`). It needs NumPy.
    #[serde(default)]
    pub python: Option<String>,
    /// How often, in milliseconds, a class that reports its health (Seldon's
    /// `health_status()`, servegraph's `is_ready()`) is asked (default 5000); while it says
    /// no, or raises, the model is not ready.
    #[serde(default = "default_health")]
    #[schemars(range(min = 10))]
    pub health_interval_ms: u64,
    /// `sync` (the default): the graph starts serving once every worker has loaded, and a
    /// failing load is a graph error. `async`: the server starts at once and the workers load
    /// in the background; the model is not ready (readiness false, calls answered 503) until
    /// one has, a failing load is retried with backoff and readiness says why, and
    /// `servegraph validate` still waits for the load and reports its error.
    #[serde(default)]
    pub load_mode: LoadMode,
    /// Worker processes (default 1), each with its own copy of the model.
    #[serde(default = "one")]
    #[schemars(range(min = 1, max = 64))]
    pub workers: usize,
    /// Join concurrent requests into one call, along the first axis (only for models whose
    /// rows are independent).
    #[serde(default)]
    pub batch: Option<BatchSpec>,
    /// Triton's `max_batch_size`: the first dimension of the declared inputs and outputs is
    /// a batch dimension of at most this many rows, without the batcher (the model
    /// configuration leaves it out of `dims`, a raw binary request is one row, a request
    /// with more rows is a 400). Default: `batch.max_size` with `batch`, else none.
    #[serde(default)]
    #[schemars(range(min = 1))]
    pub max_batch_size: Option<usize>,
    /// Requests waiting for a worker; one more is answered 503 at once (default 1024).
    #[serde(default = "default_queue")]
    #[schemars(range(min = 1))]
    pub queue_size: usize,
    /// How long a worker may take to start and load, in milliseconds (default 120000).
    #[serde(default = "default_load_timeout")]
    #[schemars(range(min = 1))]
    pub load_timeout_ms: u64,
    /// A worker busy on one call for longer than this is killed and started again, its
    /// callers answered 503 (milliseconds, default 30000).
    #[serde(default = "default_hang")]
    #[schemars(range(min = 1))]
    pub hang_kill_ms: u64,
    /// Shared memory per worker process for large tensors, in MiB (default 64; 0: none):
    /// inputs and outputs of 64 KiB or more cross through it when they fit (a quarter of it
    /// per tensor set), the rest through the worker's pipe. Pages are used only when touched.
    #[serde(default = "default_shm")]
    #[schemars(range(max = 4096))]
    pub shm_mb: u64,
    /// How long, in µs, the engine polls for a worker's answer and the worker for its next
    /// call before sleeping until it comes (default 200; 0: never poll). Waking a sleeping
    /// process on another CPU costs tens of µs on a VM; polling trades that CPU time for
    /// latency at low load, and is skipped when requests are queued or after a call that took
    /// over a quarter of it.
    #[serde(default = "default_spin")]
    #[schemars(range(max = 10000))]
    pub spin_us: u64,
    /// Replace workers after some calls or past some memory (a leaking model): the new worker
    /// is loaded before the old one stops.
    #[serde(default)]
    pub recycle: RecycleSpec,
    /// Extra environment variables for the workers (they get a scrubbed environment).
    #[serde(default)]
    pub env: std::collections::BTreeMap<String, String>,
    /// The tensors the model takes (checked before the call, and used to check the graph).
    #[serde(default)]
    pub inputs: Option<Vec<TensorMeta>>,
    /// The tensors it gives; with one, a `predict` that returns an array names it so
    /// (default `output`).
    #[serde(default)]
    pub outputs: Option<Vec<TensorMeta>>,
    /// Transform ops run on the request before the model, in order (MLRun's preprocess).
    #[serde(default)]
    #[schemars(with = "Option<Vec<serde_json::Value>>")]
    pub preprocess: Option<serde::de::IgnoredAny>,
    /// Transform ops run on the model's outputs, in order (MLRun's postprocess).
    #[serde(default)]
    #[schemars(with = "Option<Vec<serde_json::Value>>")]
    pub postprocess: Option<serde::de::IgnoredAny>,
}

/// `kind: python`: a Python function as a step of a flow (MLRun's `handler:` steps), for pre-
/// and post-processing next to models and transforms. It gets the event's tensors (or the
/// declared `inputs`) and the request's parameters; what it returns is put into the event,
/// and the other tensors pass on.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct PythonStepSpec {
    /// The `.py` file, relative to the graph file's folder.
    #[serde(default)]
    #[schemars(with = "Option<String>")]
    pub path: Option<Spanned<String>>,
    /// Or an importable module.
    #[serde(default)]
    pub module: Option<String>,
    /// Folders put first on the workers' `sys.path`.
    #[serde(default)]
    pub python_path: Vec<String>,
    /// The function: `f(inputs, parameters)` returning an array or a dict of arrays.
    pub handler: String,
    /// The interpreter (default: `SERVEGRAPH_PYTHON`, else `python3`).
    #[serde(default)]
    pub python: Option<String>,
    /// Worker processes (default 1).
    #[serde(default = "one")]
    #[schemars(range(min = 1, max = 64))]
    pub workers: usize,
    /// Requests waiting for a worker; one more is answered 503 at once (default 1024).
    #[serde(default = "default_queue")]
    #[schemars(range(min = 1))]
    pub queue_size: usize,
    /// How long a worker may take to start (milliseconds, default 120000).
    #[serde(default = "default_load_timeout")]
    #[schemars(range(min = 1))]
    pub load_timeout_ms: u64,
    /// A worker busy on one call for longer is killed and started again (default 30000).
    #[serde(default = "default_hang")]
    #[schemars(range(min = 1))]
    pub hang_kill_ms: u64,
    /// Shared memory per worker process for large tensors, in MiB (default 64; 0: none):
    /// inputs and outputs of 64 KiB or more cross through it when they fit (a quarter of it
    /// per tensor set), the rest through the worker's pipe. Pages are used only when touched.
    #[serde(default = "default_shm")]
    #[schemars(range(max = 4096))]
    pub shm_mb: u64,
    /// How long, in µs, the engine polls for a worker's answer and the worker for its next
    /// call before sleeping until it comes (default 200; 0: never poll). Waking a sleeping
    /// process on another CPU costs tens of µs on a VM; polling trades that CPU time for
    /// latency at low load, and is skipped when requests are queued or after a call that took
    /// over a quarter of it.
    #[serde(default = "default_spin")]
    #[schemars(range(max = 10000))]
    pub spin_us: u64,
    /// Extra environment variables for the workers.
    #[serde(default)]
    pub env: std::collections::BTreeMap<String, String>,
    /// The tensors the function takes (default: all of the event's).
    #[serde(default)]
    pub inputs: Option<Vec<TensorMeta>>,
    /// The tensors it gives (put into the event; the others pass on).
    #[serde(default)]
    pub outputs: Option<Vec<TensorMeta>>,
}

impl PythonStepSpec {
    /// The same worker settings as a `class: python` model calling `handler`.
    pub(super) fn into_model(self) -> PythonSpec {
        PythonSpec {
            path: self.path,
            module: self.module,
            python_path: self.python_path,
            class_name: None,
            function: Some(self.handler),
            class_args: Default::default(),
            model_uri: None,
            model_path: None,
            sha256: None,
            model_settings: None,
            settings: None,
            api: Api::Servegraph,
            role: SeldonRole::Model,
            task: None,
            python: self.python,
            load_mode: LoadMode::Sync,
            health_interval_ms: default_health(),
            workers: self.workers,
            batch: None,
            max_batch_size: None,
            queue_size: self.queue_size,
            load_timeout_ms: self.load_timeout_ms,
            hang_kill_ms: self.hang_kill_ms,
            shm_mb: self.shm_mb,
            spin_us: self.spin_us,
            recycle: RecycleSpec::default(),
            env: self.env,
            inputs: self.inputs,
            outputs: self.outputs,
            preprocess: None,
            postprocess: None,
        }
    }
}

/// `kind: task`: a step of an MLRun flow, as MLRun's graphs write it: a `handler` function of
/// the event's body (returning the next body), or a `class_name` class (constructed with
/// `class_args`, and MLRun's `name`/`context` when it takes them) whose `handler` method, else
/// `do_event(event)`, else `do(body)`, is called; a `V2ModelServer` class is a model (MLRun's
/// `do_event`). `input_path` / `result_path` pick the part of the body the step reads and where
/// its result goes; `full_event` hands the whole event. The event's body is what an MLRun
/// request sent (an OIP request's tensors as MLRun's rows, `{"inputs": ...}`).
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct TaskSpec {
    /// The `.py` file with the handler or class, relative to the graph file's folder (MLRun
    /// takes it from the serving function's source: servegraph from here).
    #[serde(default)]
    #[schemars(with = "Option<String>")]
    pub path: Option<Spanned<String>>,
    /// Or an importable module.
    #[serde(default)]
    pub module: Option<String>,
    /// Folders put first on the workers' `sys.path`.
    #[serde(default)]
    pub python_path: Vec<String>,
    /// The step's class (MLRun's `class_name`).
    #[serde(default)]
    pub class_name: Option<String>,
    /// Keyword arguments of the class (MLRun's `class_args`; `model_path` among them for a
    /// `V2ModelServer`).
    #[serde(default)]
    pub class_args: serde_json::Map<String, serde_json::Value>,
    /// The function (without `class_name`), or the class's method to call.
    #[serde(default)]
    pub handler: Option<String>,
    /// Hand the handler MLRun's event (`body`, `id`, `path`, `headers`) instead of its body.
    #[serde(default)]
    pub full_event: bool,
    /// A dotted path into the body: the part the handler reads (`data.b`).
    #[serde(default)]
    pub input_path: Option<String>,
    /// A dotted path into the body where the handler's result is put (default: it replaces
    /// the body).
    #[serde(default)]
    pub result_path: Option<String>,
    /// MLRun's child function: a step run by another serving function. Not served: refused.
    #[serde(default)]
    #[schemars(with = "Option<String>")]
    pub function: Option<Spanned<String>>,
    /// MLRun's: accepted, no effect here.
    #[serde(default)]
    pub comment: Option<String>,
    /// MLRun's drawing hint: accepted, no effect here.
    #[serde(default)]
    pub shape: Option<String>,
    /// MLRun's: the class is not handed a `context` when true.
    #[serde(default)]
    pub skip_context: bool,
    /// The interpreter (default: `SERVEGRAPH_PYTHON`, else `python3`).
    #[serde(default)]
    pub python: Option<String>,
    /// Worker processes (default 1).
    #[serde(default = "one")]
    #[schemars(range(min = 1, max = 64))]
    pub workers: usize,
    /// Requests waiting for a worker; one more is answered 503 at once (default 1024).
    #[serde(default = "default_queue")]
    #[schemars(range(min = 1))]
    pub queue_size: usize,
    /// How long a worker may take to start (milliseconds, default 120000).
    #[serde(default = "default_load_timeout")]
    #[schemars(range(min = 1))]
    pub load_timeout_ms: u64,
    /// A worker busy on one call for longer is killed and started again (default 30000).
    #[serde(default = "default_hang")]
    #[schemars(range(min = 1))]
    pub hang_kill_ms: u64,
    /// Extra environment variables for the workers (MLRun's secrets by name, for
    /// `context.get_secret`).
    #[serde(default)]
    pub env: std::collections::BTreeMap<String, String>,
}

/// What a `kind: task` step calls (handed to the worker).
#[derive(Debug, Clone, serde::Serialize)]
pub struct TaskCall {
    pub handler: Option<String>,
    pub full_event: bool,
    pub input_path: Option<String>,
    pub result_path: Option<String>,
    pub skip_context: bool,
}

impl TaskSpec {
    /// The worker settings of the step, as a `class: python` model's.
    pub(super) fn into_model(self) -> PythonSpec {
        let function = match self.class_name {
            Some(_) => None,
            None => self.handler.clone(),
        };
        PythonSpec {
            path: self.path,
            module: self.module,
            python_path: self.python_path,
            class_name: self.class_name,
            function,
            class_args: self.class_args,
            model_uri: None,
            model_path: None,
            sha256: None,
            model_settings: None,
            settings: None,
            task: Some(TaskCall {
                handler: self.handler,
                full_event: self.full_event,
                input_path: self.input_path,
                result_path: self.result_path,
                skip_context: self.skip_context,
            }),
            api: Api::Auto,
            role: SeldonRole::Model,
            python: self.python,
            load_mode: LoadMode::Sync,
            health_interval_ms: default_health(),
            workers: self.workers,
            batch: None,
            max_batch_size: None,
            queue_size: self.queue_size,
            load_timeout_ms: self.load_timeout_ms,
            hang_kill_ms: self.hang_kill_ms,
            shm_mb: default_shm(),
            spin_us: default_spin(),
            recycle: RecycleSpec::default(),
            env: self.env,
            inputs: None,
            outputs: None,
            preprocess: None,
            postprocess: None,
        }
    }
}

/// `recycle: {max_requests, max_rss_mb}`.
#[derive(Clone, Debug, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RecycleSpec {
    /// Replace a worker after this many calls (0, the default: never).
    #[serde(default)]
    pub max_requests: u64,
    /// Replace a worker whose resident memory reaches this many MiB (0, the default: never).
    #[serde(default)]
    pub max_rss_mb: u64,
}

/// `load_mode:`, whether the graph waits for the workers to load.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum LoadMode {
    #[default]
    Sync,
    Async,
}

/// `role:`, the Seldon component type a class plays.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum SeldonRole {
    #[default]
    Model,
    Transformer,
    OutputTransformer,
    Router,
    Combiner,
}

/// `api:`, the calling convention.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Api {
    #[default]
    Auto,
    Servegraph,
    Mlrun,
    Seldon,
    Kserve,
    Mlserver,
}

fn one() -> usize {
    1
}

fn default_health() -> u64 {
    5000
}

fn default_spin() -> u64 {
    200
}

fn default_shm() -> u64 {
    64
}

fn default_queue() -> usize {
    1024
}

fn default_load_timeout() -> u64 {
    120_000
}

fn default_hang() -> u64 {
    30_000
}

/// Environment variables a worker keeps from the server's (everything else, the admin token
/// first of all, stays behind).
const KEPT_ENV: [&str; 8] = [
    "PATH",
    "HOME",
    "USER",
    "LANG",
    "LC_ALL",
    "TZ",
    "TMPDIR",
    "VIRTUAL_ENV",
];

/// Checks the spec's files and choices and makes the workers' configuration.
pub(super) fn config(
    node: &StepNode,
    ctx: &mut BuildContext,
    spec: &PythonSpec,
) -> Option<WorkerConfig> {
    let mut ok = true;
    let mut fail = |ctx: &mut BuildContext, d: Diagnostic| {
        ctx.report(d.step(&node.name));
        ok = false;
    };
    let path = match (&spec.path, &spec.module) {
        (Some(p), None) => {
            let file = ctx.resolve(p.as_str());
            let file = std::fs::canonicalize(&file).unwrap_or(file);
            if !file.is_file() {
                fail(
                    ctx,
                    Diagnostic::new(format!(
                        "Python file `{}` does not exist (looked at {})",
                        p.as_str(),
                        file.display()
                    ))
                    .at(p.span())
                    .help("`path` is relative to the graph file's folder"),
                );
            } else if let Err(why) = ctx.check_model_path(&file) {
                fail(
                    ctx,
                    Diagnostic::new(format!(
                        "Python file `{}` is not allowed: {why}",
                        p.as_str()
                    ))
                    .at(p.span()),
                );
            }
            Some(file)
        }
        (None, Some(_)) => None,
        (Some(p), Some(_)) => {
            fail(
                ctx,
                Diagnostic::new("give `path` or `module`, not both").at(p.span()),
            );
            None
        }
        // An MLRun flow step's handler may stand alone: `module.function` or `(expression)`.
        (None, None)
            if spec.task.is_some()
                && spec.class_name.is_none()
                && spec
                    .function
                    .as_deref()
                    .is_some_and(|f| f.trim_start().starts_with('(') || f.contains('.')) =>
        {
            None
        }
        (None, None) => {
            fail(
                ctx,
                Diagnostic::new("a `class: python` model needs `path` (a .py file) or `module`")
                    .at(&node.span),
            );
            None
        }
    };
    match (&spec.class_name, &spec.function) {
        (Some(_), None) | (None, Some(_)) => {}
        (Some(_), Some(_)) => fail(
            ctx,
            Diagnostic::new("give `class_name` or `function`, not both").at(&node.span),
        ),
        (None, None) if spec.task.is_some() => fail(
            ctx,
            Diagnostic::new("a `kind: task` step needs `handler` (a function) or `class_name`")
                .at(&node.span),
        ),
        (None, None) => fail(
            ctx,
            Diagnostic::new("a `class: python` model needs `class_name` or `function`")
                .at(&node.span),
        ),
    }
    if spec.function.is_some() && !spec.class_args.is_empty() && spec.task.is_none() {
        fail(
            ctx,
            Diagnostic::new("`class_args` are for `class_name`; a `function` takes none")
                .at(&node.span),
        );
    }
    if let (Some(_), Some(p)) = (&spec.model_uri, &spec.model_path) {
        fail(
            ctx,
            Diagnostic::new("give `model_uri` or `model_path`, not both").at(p.span()),
        );
    }
    let field = if spec.settings.is_some() {
        "model_settings"
    } else if spec.model_uri.is_some() {
        "model_uri"
    } else {
        "model_path"
    };
    let model_uri = match spec.model_uri.as_ref().or(spec.model_path.as_ref()) {
        None => {
            if let Some(pin) = &spec.sha256 {
                fail(
                    ctx,
                    Diagnostic::new("`sha256` pins the `model_uri` file; this model has none")
                        .at(pin.span()),
                );
            }
            None
        }
        Some(u) => match ctx.model_file(
            &node.name,
            servegraph_engine::step::ModelFileRequest {
                field,
                uri: u.as_str(),
                span: u.span(),
                sha256: spec.sha256.as_ref().map(|p| (p.as_str(), p.span())),
                folder_ok: true,
            },
        ) {
            None => {
                ok = false;
                None
            }
            // Not fetched (structure only): the workers are not started then either.
            Some(file) => file.path,
        },
    };
    let python_path: Vec<PathBuf> = spec.python_path.iter().map(|p| ctx.resolve(p)).collect();
    if !ok {
        return None;
    }
    let python = spec
        .python
        .as_ref()
        .map(|p| {
            // A path with a slash is relative to the graph file; a bare name is looked up on PATH.
            if p.contains('/') {
                ctx.resolve(p).display().to_string()
            } else {
                p.clone()
            }
        })
        .or_else(|| std::env::var("SERVEGRAPH_PYTHON").ok())
        .unwrap_or_else(|| "python3".into());
    let mut env: Vec<(String, String)> = KEPT_ENV
        .iter()
        .filter_map(|k| std::env::var(k).ok().map(|v| (k.to_string(), v)))
        .collect();
    env.extend(spec.env.iter().map(|(k, v)| (k.clone(), v.clone())));
    let load = serde_json::json!({
        "path": path.as_ref().map(|p| p.display().to_string()),
        "module": spec.module,
        "python_path": python_path.iter().map(|p| p.display().to_string()).collect::<Vec<_>>(),
        "class_name": spec.class_name,
        "function": spec.function,
        "class_args": node.body.get_node("class_args").map(servegraph_engine::fields::to_json),
        "model_uri": model_uri.as_ref().map(|p| p.display().to_string()),
        "api": match spec.api {
            Api::Auto => "auto",
            Api::Servegraph => "servegraph",
            Api::Mlrun => "mlrun",
            Api::Seldon => "seldon",
            Api::Kserve => "kserve",
            Api::Mlserver => "mlserver",
        },
        "role": match spec.role {
            SeldonRole::Model => None,
            SeldonRole::Transformer => Some("transformer"),
            SeldonRole::OutputTransformer => Some("output_transformer"),
            SeldonRole::Router => Some("router"),
            SeldonRole::Combiner => Some("combiner"),
        },
        "task": spec.task,
        "model_settings": spec.settings,
        "outputs": spec.outputs,
        "step": node.name,
        "spin_us": spec.spin_us,
    });
    let workdir = match (&path, &model_uri) {
        (Some(file), _) => file.parent().map(PathBuf::from),
        (None, Some(uri)) if uri.is_dir() => Some(uri.clone()),
        (None, Some(uri)) => uri.parent().map(PathBuf::from),
        (None, None) => None,
    };
    Some(WorkerConfig {
        model: node.name.clone(),
        python,
        env,
        workdir,
        load,
        load_timeout: Duration::from_millis(spec.load_timeout_ms),
        hang_kill: Duration::from_millis(spec.hang_kill_ms),
        max_requests: spec.recycle.max_requests,
        max_rss_mb: spec.recycle.max_rss_mb,
        shm_bytes: (spec.shm_mb as usize) << 20,
        spin: Duration::from_micros(spec.spin_us),
        health: Default::default(),
        metrics: servegraph_engine::metrics::ModelMetrics::new(&node.name),
    })
}

/// What makes a started model the same one again in a later build of the graph (a reload, a
/// change of the model repository): the step (name, kind, fields), what its workers are
/// started with, and its files as they are on disk (each one's size and time): the class
/// file, the Python files in its folder and below, the model's file or folder, and the
/// `python_path` folders' Python files. `None` when those are too many to look at (over
/// [`FILES_LOOKED_AT`]): such a model starts again with every build.
pub(super) fn kept_as(node: &StepNode, config: &WorkerConfig, spec: &PythonSpec) -> Option<String> {
    let mut files = Vec::new();
    let mut budget = FILES_LOOKED_AT;
    let text = |v: &serde_json::Value| v.as_str().map(PathBuf::from);
    if let Some(path) = text(&config.load["path"]) {
        stamp(&path, false, &mut files, &mut budget)?;
    }
    if let Some(uri) = text(&config.load["model_uri"]) {
        stamp(&uri, false, &mut files, &mut budget)?;
    }
    if let Some(dir) = &config.workdir {
        stamp(dir, true, &mut files, &mut budget)?;
    }
    for dir in config.load["python_path"].as_array().into_iter().flatten() {
        if let Some(dir) = text(dir) {
            stamp(&dir, true, &mut files, &mut budget)?;
        }
    }
    files.sort();
    files.dedup();
    Some(format!(
        "python|{}|{}|{}|{}|{}|{:?}|{:?}|{:?}|{:?}|{:?}",
        node.name,
        node.kind,
        servegraph_engine::fields::to_json(&marked_yaml::Node::Mapping(node.body.clone())),
        config.load,
        config.python,
        config.env,
        config.workdir,
        spec.role,
        spec.api,
        files,
    ))
}

/// At most this many files are looked at to tell whether a model's files changed.
const FILES_LOOKED_AT: usize = 10_000;

/// Each file at `path` (a file, or a folder walked down; only Python files with
/// `python_only`) with its size and modification time; `None` past the budget. Folders the
/// runtime writes or that hold environments (`__pycache__`, `.venv`, `.git`) are skipped.
fn stamp(
    path: &std::path::Path,
    python_only: bool,
    out: &mut Vec<(PathBuf, u64, Option<std::time::SystemTime>)>,
    budget: &mut usize,
) -> Option<()> {
    let Ok(meta) = std::fs::metadata(path) else {
        out.push((path.to_owned(), u64::MAX, None));
        return Some(());
    };
    if meta.is_dir() {
        let skipped = path
            .file_name()
            .is_some_and(|n| n == "__pycache__" || n == ".venv" || n == ".git");
        if skipped {
            return Some(());
        }
        let Ok(entries) = std::fs::read_dir(path) else {
            return Some(());
        };
        for entry in entries.flatten() {
            *budget = budget.checked_sub(1)?;
            stamp(&entry.path(), python_only, out, budget)?;
        }
    } else if !python_only || path.extension().is_some_and(|e| e == "py") {
        out.push((path.to_owned(), meta.len(), meta.modified().ok()));
    }
    Some(())
}
