//! The live model repository (Triton's model repository extension): models loaded into a
//! running server become routes of the graph's top-level router, and are saved beside the
//! graph file so a restart serves them again.
//!
//! Beside `g.yaml`: `g.repository.json` (the overlay: each loaded model's name, version and
//! step, each model's default version; written atomically) and `g.repository/` (the models'
//! files, one folder per version and load). A graph is always built from its file plus the
//! overlay ([`State::apply`]); a load or unload builds the next graph with the next overlay
//! and swaps it in only when it builds (a bad model is refused with the same diagnostics a
//! graph file's step gets, and the server keeps serving the old graph).
//!
//! A load is Triton's `POST /v2/repository/models/{m}/load` body: `parameters.config` (the
//! model configuration JSON) and `parameters."file:<version>/<name>"` (base64 files), as
//! `tritonclient`'s `load_model(name, config=..., files=...)` sends them ([`plan_load`]).

use std::collections::BTreeMap;
use std::path::{Component, Path, PathBuf};

use base64::Engine;
use marked_yaml::Node;
use marked_yaml::types::{MarkedMappingNode, MarkedScalarNode, MarkedSequenceNode};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::diag::Diagnostic;
use crate::error::{Error, ErrorKind};
use crate::step::Platform;

/// The overlay: what the repository added to the graph file.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct State {
    /// Loaded (and unloaded, kept for a later load) model versions, in load order.
    #[serde(default)]
    pub models: Vec<Entry>,
    /// The version a request naming no version gets, per model.
    #[serde(default)]
    pub defaults: BTreeMap<String, String>,
    /// Clipper's application settings, per model (its app is named like it): what a load's
    /// configuration `parameters` said (`input_type`, `default_output`, `slo_micros`, as
    /// Clipper's `register_application` takes them). They outlive unloads and later loads
    /// that say nothing of them.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub apps: BTreeMap<String, App>,
}

/// A Clipper application's settings (`POST /{app}/predict`, `crate::http`'s Clipper routes).
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct App {
    /// Clipper's input type: `integers`, `floats`, `doubles`, `bytes` (queries send base64)
    /// or `strings`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub input_type: Option<String>,
    /// Answered, with `"default": true`, when the model fails or passes the SLO; as Clipper
    /// does, text that parses as JSON is answered as that JSON.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default_output: Option<String>,
    /// The query's deadline, in microseconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub slo_micros: Option<u64>,
}

/// Clipper's input types.
pub const INPUT_TYPES: [&str; 5] = ["integers", "floats", "doubles", "bytes", "strings"];

impl App {
    /// The settings a load's configuration `parameters` give (`None` when they give none),
    /// checked.
    fn from_params(params: Option<&Value>) -> Result<Option<App>, Error> {
        let input_type = param(params, "input_type");
        if let Some(t) = input_type
            && !INPUT_TYPES.contains(&t)
        {
            return Err(bad(format!(
                "`parameters.input_type` `{t}` is not one of Clipper's input types: {}",
                INPUT_TYPES.join(", ")
            )));
        }
        let slo_micros = match params.and_then(|p| p.get("slo_micros")) {
            None | Some(Value::Null) => None,
            Some(v) => {
                let v = v.get("string_value").unwrap_or(v);
                let n = v
                    .as_u64()
                    .or_else(|| v.as_str().and_then(|s| s.trim().parse().ok()))
                    .filter(|n| *n > 0);
                Some(n.ok_or_else(|| {
                    bad(format!(
                        "`parameters.slo_micros` is the query deadline in microseconds (a \
                         positive integer), not {v}"
                    ))
                })?)
            }
        };
        let app = App {
            input_type: input_type.map(str::to_owned),
            default_output: param(params, "default_output").map(str::to_owned),
            slo_micros,
        };
        Ok((app != App::default()).then_some(app))
    }

    /// These settings over `older`: what these leave unsaid stays.
    fn over(self, older: Option<&App>) -> App {
        let older = older.cloned().unwrap_or_default();
        App {
            input_type: self.input_type.or(older.input_type),
            default_output: self.default_output.or(older.default_output),
            slo_micros: self.slo_micros.or(older.slo_micros),
        }
    }
}

/// One model version the repository holds.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Entry {
    pub name: String,
    pub version: String,
    /// The step, as a graph file would declare it (paths relative to the graph's folder).
    pub step: Value,
    /// Its files' folder, relative to the graph's folder.
    pub folder: String,
    /// Served now (an unloaded version keeps its files and can be loaded again).
    pub loaded: bool,
}

/// Why the overlay beside a graph could not be read or saved.
#[derive(Debug, thiserror::Error)]
pub enum OverlayError {
    #[error("reading the model repository {}: {source}", path.display())]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(
        "the model repository {} is not valid: {source} (it is written by the server; move it \
         away to start without the models loaded into it)",
        path.display()
    )]
    Invalid {
        path: PathBuf,
        source: serde_json::Error,
    },
    #[error(transparent)]
    Save(Box<crate::storage::StoreError>),
}

/// `g.repository.json` beside `g.yaml`.
pub fn overlay_path(graph: &Path) -> PathBuf {
    graph.with_extension("repository.json")
}

/// `g.repository/` beside `g.yaml`: the loaded models' files.
pub fn files_dir(graph: &Path) -> PathBuf {
    graph.with_extension("repository")
}

impl State {
    /// The overlay saved beside `graph`, or an empty one when there is none.
    pub fn read(graph: &Path) -> Result<State, OverlayError> {
        let path = overlay_path(graph);
        match std::fs::read(&path) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(State::default()),
            Err(source) => Err(OverlayError::Read { path, source }),
            Ok(bytes) => serde_json::from_slice(&bytes)
                .map_err(|source| OverlayError::Invalid { path, source }),
        }
    }

    /// Saves the overlay beside `graph`, atomically (a temporary file, synced, renamed).
    pub fn save(&self, graph: &Path) -> Result<(), OverlayError> {
        let bytes = serde_json::to_vec_pretty(self).expect("JSON");
        crate::storage::write_atomic(&overlay_path(graph), &bytes)
            .map_err(|e| OverlayError::Save(Box::new(e)))
    }

    pub fn is_empty(&self) -> bool {
        self.models.is_empty()
    }

    /// The versions served now.
    pub fn loaded(&self) -> impl Iterator<Item = &Entry> {
        self.models.iter().filter(|e| e.loaded)
    }

    /// Adds the loaded versions to the graph's router as routes (`name:version`): the routes
    /// it added, and its problems. A graph whose top level is not a router cannot take them:
    /// that is reported.
    pub(crate) fn apply(&self, root: &mut Node) -> (Vec<String>, Vec<Diagnostic>) {
        if self.loaded().next().is_none() {
            return Default::default();
        }
        let graph = root
            .as_mapping_mut()
            .and_then(|r| {
                r.get_mut(&MarkedScalarNode::new(
                    marked_yaml::Span::new_blank(),
                    "graph",
                ))
            })
            .and_then(Node::as_mapping_mut);
        let Some(graph) = graph else {
            return Default::default();
        };
        let is_router = graph
            .get(&key("kind"))
            .and_then(Node::as_scalar)
            .is_some_and(|k| k.as_str() == "router");
        if !is_router {
            return (
                Vec::new(),
                vec![
                Diagnostic::new(
                    "the model repository adds models as routes of the graph's router, and this \
                 graph's top level is not `kind: router`; the models it holds cannot be served",
                )
                .help("give the graph a router at the top (`graph: {kind: router, routes: …}`)"),
            ],
            );
        }
        let Some(routes) = graph.get_mut(&key("routes")).and_then(Node::as_mapping_mut) else {
            return Default::default();
        };
        let mut problems = Vec::new();
        let mut added = Vec::new();
        for entry in self.loaded() {
            let k = format!("{}:{}", entry.name, entry.version);
            if routes.get(&key(&k)).is_some() {
                problems.push(Diagnostic::new(format!(
                    "the model repository's `{k}` is also a route of the graph file; the file's \
                     stays (unload the repository's)"
                )));
                continue;
            }
            routes.insert(key(&k), node_of(&entry.step));
            added.push(k);
        }
        (added, problems)
    }
}

fn key(s: &str) -> MarkedScalarNode {
    MarkedScalarNode::new(marked_yaml::Span::new_blank(), s)
}

/// A JSON value as a YAML node (positions blank: diagnostics name the step, not a line).
fn node_of(v: &Value) -> Node {
    let span = marked_yaml::Span::new_blank();
    match v {
        Value::Object(map) => {
            let mut m = MarkedMappingNode::new_empty(span);
            for (k, v) in map {
                m.insert(key(k), node_of(v));
            }
            Node::Mapping(m)
        }
        Value::Array(items) => Node::Sequence(MarkedSequenceNode::new(
            span,
            items.iter().map(node_of).collect(),
        )),
        Value::String(s) => {
            let mut s = MarkedScalarNode::new(span, s.as_str());
            s.set_coerce(false);
            Node::Scalar(s)
        }
        Value::Null => Node::Scalar(MarkedScalarNode::new(span, "~")),
        other => Node::Scalar(MarkedScalarNode::new(span, other.to_string())),
    }
}

/// What the server tells a load about itself.
pub struct Host<'a> {
    /// The graph file (the overlay and files go beside it).
    pub graph: &'a Path,
    /// `major.minor` of the Python that runs models, when one was found.
    pub python_version: Option<String>,
    /// The interpreter that runs deployed Python models.
    pub python: String,
    /// `--allow-pip`: a model may ask for packages.
    pub allow_pip: bool,
}

/// A load, planned: the overlay it leads to, the folders it wrote (removed if it fails),
/// and requests to run on the new graph before it serves (`example`s).
pub struct Plan {
    pub state: State,
    pub written: Vec<PathBuf>,
    pub smoke: Vec<(String, String, Vec<u8>)>,
    /// The model configuration's declared tensors, checked against the model once built.
    pub declared: Vec<(String, String, Declared)>,
}

/// Tensors a Triton configuration declares.
#[derive(Debug, Default, Clone)]
pub struct Declared {
    pub inputs: Vec<(String, String)>,
    pub outputs: Vec<(String, String)>,
}

fn bad(message: impl Into<String>) -> Error {
    Error::new(ErrorKind::BadRequest, message)
}

/// Names and versions: what a graph's names accept.
fn check_part(what: &str, s: &str) -> Result<(), Error> {
    let ok = !s.is_empty()
        && s.len() <= 128
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        && s != "."
        && s != "..";
    if ok {
        Ok(())
    } else {
        Err(bad(format!(
            "invalid {what} `{s}`: use letters, digits, `-`, `_` and `.`"
        )))
    }
}

/// The string value of a Triton `parameters` entry (`{"string_value": …}`) or a plain value.
fn param<'a>(params: Option<&'a Value>, name: &str) -> Option<&'a str> {
    let v = params?.get(name)?;
    v.get("string_value").and_then(Value::as_str).or(v.as_str())
}

/// Plans Triton's load of `name` from its request `body`: writes the files into new version
/// folders and returns the overlay that serves them. Without files it loads again the
/// versions the repository holds (an unloaded model comes back).
pub fn plan_load(host: &Host<'_>, state: &State, name: &str, body: &Value) -> Result<Plan, Error> {
    check_part("model name", name)?;
    let empty = serde_json::Map::new();
    let params = match body.get("parameters") {
        None | Some(Value::Null) => &empty,
        Some(Value::Object(p)) => p,
        Some(_) => return Err(bad("`parameters` must be an object")),
    };
    let config: Option<Value> = match params.get("config") {
        None => None,
        Some(Value::String(text)) => Some(
            serde_json::from_str(text)
                .map_err(|e| bad(format!("`parameters.config` is not JSON: {e}")))?,
        ),
        Some(Value::Object(_)) => params.get("config").cloned(),
        Some(_) => {
            return Err(bad(
                "`parameters.config` must be the model configuration as JSON text",
            ));
        }
    };
    if let Some(given) = config
        .as_ref()
        .and_then(|c| c.get("name"))
        .and_then(Value::as_str)
        && !given.is_empty()
        && given != name
    {
        return Err(bad(format!(
            "the configuration names model `{given}`, the URL `{name}`"
        )));
    }
    // `file:<version>/<path>` → bytes, grouped by version.
    let mut files: BTreeMap<String, Vec<(String, Vec<u8>)>> = BTreeMap::new();
    for (k, v) in params {
        let Some(path) = k.strip_prefix("file:") else {
            continue;
        };
        let (version, rel) = path.split_once('/').ok_or_else(|| {
            bad(format!(
                "`{k}`: a file goes in a version's folder, `file:<version>/<name>` (e.g. `file:1/model.onnx`)"
            ))
        })?;
        check_part("version", version)?;
        if rel.is_empty()
            || !Path::new(rel)
                .components()
                .all(|c| matches!(c, Component::Normal(_)))
        {
            return Err(bad(format!("`{k}`: `{rel}` is not a plain relative path")));
        }
        let text = v
            .as_str()
            .ok_or_else(|| bad(format!("`{k}` must be the file's content, base64")))?;
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(text)
            .map_err(|e| bad(format!("`{k}` is not base64: {e}")))?;
        files
            .entry(version.to_owned())
            .or_default()
            .push((rel.to_owned(), bytes));
    }
    let mut next = state.clone();
    if files.is_empty() {
        if config.is_some() {
            return Err(bad(
                "a configuration without files: send the model's files too (`file:<version>/<name>`)",
            ));
        }
        let mut any = false;
        for e in next.models.iter_mut().filter(|e| e.name == name) {
            e.loaded = true;
            any = true;
        }
        if !any {
            return Err(Error::not_found(format!(
                "the model repository holds no model `{name}`; send its files to load it \
                 (`file:<version>/<name>` parameters)"
            )));
        }
        ensure_default(&mut next, name);
        return Ok(Plan {
            state: next,
            written: Vec::new(),
            smoke: Vec::new(),
            declared: Vec::new(),
        });
    }
    let config = config.unwrap_or_else(|| json!({}));
    let kind = backend(&config, &files)?;
    let app = App::from_params(config.get("parameters"))?;
    let root = files_dir(host.graph);
    let graph_dir = host.graph.parent().unwrap_or(Path::new("."));
    let stamp = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis())
        .unwrap_or_default();
    if let Some(app) = app {
        let app = app.over(next.apps.get(name));
        next.apps.insert(name.to_owned(), app);
    }
    let mut plan = Plan {
        state: next,
        written: Vec::new(),
        smoke: Vec::new(),
        declared: Vec::new(),
    };
    let result = (|| {
        for (version, list) in &files {
            let folder = root.join(name).join(format!("{version}-{stamp}"));
            std::fs::create_dir_all(&folder)
                .map_err(|e| Error::internal(format!("creating {}: {e}", folder.display())))?;
            plan.written.push(folder.clone());
            for (rel, bytes) in list {
                let path = folder.join(rel);
                if let Some(p) = path.parent() {
                    std::fs::create_dir_all(p)
                        .map_err(|e| Error::internal(format!("creating {}: {e}", p.display())))?;
                }
                std::fs::write(&path, bytes)
                    .map_err(|e| Error::internal(format!("writing {}: {e}", path.display())))?;
            }
            let relative = folder
                .strip_prefix(graph_dir)
                .unwrap_or(&folder)
                .to_string_lossy()
                .into_owned();
            let (step, smoke) = step_for(host, &config, kind, &relative, &folder, list)?;
            if let Some(example) = smoke {
                plan.smoke.push((name.to_owned(), version.clone(), example));
            }
            plan.declared
                .push((name.to_owned(), version.clone(), declared_of(&config)));
            // A version loaded again replaces the one held.
            plan.state
                .models
                .retain(|e| !(e.name == name && e.version == *version));
            plan.state.models.push(Entry {
                name: name.to_owned(),
                version: version.clone(),
                step,
                folder: relative,
                loaded: true,
            });
            plan.state.defaults.insert(name.to_owned(), version.clone());
        }
        Ok(())
    })();
    if let Err(e) = result {
        discard(&plan.written);
        return Err(e);
    }
    Ok(plan)
}

/// Removes folders a failed load wrote.
pub fn discard(written: &[PathBuf]) {
    for folder in written {
        let _ = std::fs::remove_dir_all(folder);
        // The model's folder too, when this load was its first (`remove_dir` keeps a
        // folder that still holds other versions).
        if let Some(parent) = folder.parent() {
            let _ = std::fs::remove_dir(parent);
        }
    }
}

/// The model class a Triton configuration loads.
#[derive(Clone, Copy, PartialEq)]
enum Backend {
    Onnx,
    Python,
}

fn backend(
    config: &Value,
    files: &BTreeMap<String, Vec<(String, Vec<u8>)>>,
) -> Result<Backend, Error> {
    let platform = config.get("platform").and_then(Value::as_str).unwrap_or("");
    let backend = config.get("backend").and_then(Value::as_str).unwrap_or("");
    match Platform::from_triton(backend, platform) {
        Some(Platform::Onnx) => return Ok(Backend::Onnx),
        Some(Platform::Python) => return Ok(Backend::Python),
        _ => {}
    }
    match (backend, platform) {
        ("", "") => {
            let onnx = files
                .values()
                .all(|list| list.iter().any(|(rel, _)| rel.ends_with(".onnx")));
            if onnx {
                Ok(Backend::Onnx)
            } else {
                Err(bad(
                    "the configuration names no `backend` and the files hold no `.onnx` model: \
                     give `backend: onnxruntime` or `backend: python`",
                ))
            }
        }
        (b, p) => Err(bad(format!(
            "backend `{}` is not served here; servegraph serves `onnxruntime` (ONNX models) and \
             `python` (servegraph's Python runtime)",
            if b.is_empty() { p } else { b }
        ))),
    }
}

/// Triton's datatype spelling (`TYPE_FP32`) as OIP's (`FP32`).
fn oip_type(t: &str) -> String {
    match t.strip_prefix("TYPE_").unwrap_or(t) {
        "STRING" => "BYTES".to_owned(),
        other => other.to_owned(),
    }
}

fn declared_of(config: &Value) -> Declared {
    let list = |field: &str| {
        config
            .get(field)
            .and_then(Value::as_array)
            .map(|items| {
                items
                    .iter()
                    .filter_map(|t| {
                        Some((
                            t.get("name")?.as_str()?.to_owned(),
                            oip_type(t.get("data_type")?.as_str()?),
                        ))
                    })
                    .collect()
            })
            .unwrap_or_default()
    };
    Declared {
        inputs: list("input"),
        outputs: list("output"),
    }
}

/// Checks a configuration's declared tensors against what the built model takes and gives;
/// the error is the message a refused load answers with (a diagnostic, not a failure to pass on).
pub fn check_declared(declared: &Declared, info: &crate::step::ModelInfo) -> Result<(), String> {
    let check = |what: &str, want: &[(String, String)], have: &[crate::tensor::TensorMeta]| {
        for (name, datatype) in want {
            match have.iter().find(|t| t.name == *name) {
                None => {
                    return Err(format!(
                        "the configuration declares {what} `{name}`, which the model does not have (it has: {})",
                        have.iter()
                            .map(|t| t.name.as_str())
                            .collect::<Vec<_>>()
                            .join(", ")
                    ));
                }
                Some(t) if t.datatype.as_str() != datatype => {
                    return Err(format!(
                        "the configuration declares {what} `{name}` as {datatype}; the model's is {}",
                        t.datatype.as_str()
                    ));
                }
                Some(_) => {}
            }
        }
        Ok(())
    };
    check("input", &declared.inputs, &info.inputs)?;
    // A model whose outputs are not known (a Python model that declares none) is not checked.
    if !info.outputs.is_empty() {
        check("output", &declared.outputs, &info.outputs)?;
    }
    Ok(())
}

/// The step a version's files are served by, and its smoke-test request when one was sent.
fn step_for(
    host: &Host<'_>,
    config: &Value,
    kind: Backend,
    relative: &str,
    folder: &Path,
    files: &[(String, Vec<u8>)],
) -> Result<(Value, Option<Vec<u8>>), Error> {
    let params = config.get("parameters");
    let max_batch = config
        .get("max_batch_size")
        .and_then(Value::as_u64)
        .unwrap_or(0);
    let instances: u64 = config
        .get("instance_group")
        .and_then(Value::as_array)
        .map(|groups| {
            groups
                .iter()
                .map(|g| g.get("count").and_then(Value::as_u64).unwrap_or(1))
                .sum()
        })
        .unwrap_or(0);
    let batch = config.get("dynamic_batching").filter(|_| max_batch > 1).map(|d| {
        json!({
            "max_size": max_batch,
            "max_wait_us": d.get("max_queue_delay_microseconds").and_then(Value::as_u64).unwrap_or(0),
        })
    });
    match kind {
        Backend::Onnx => {
            let file = config
                .get("default_model_filename")
                .and_then(Value::as_str)
                .filter(|f| !f.is_empty())
                .map(str::to_owned)
                .or_else(|| {
                    files
                        .iter()
                        .any(|(r, _)| r == "model.onnx")
                        .then(|| "model.onnx".to_owned())
                })
                .or_else(|| {
                    let onnx: Vec<&String> =
                        files.iter().map(|(r, _)| r).filter(|r| r.ends_with(".onnx")).collect();
                    (onnx.len() == 1).then(|| onnx[0].clone())
                })
                .ok_or_else(|| {
                    bad("no `model.onnx` among the files (or name it with `default_model_filename`)")
                })?;
            if !files.iter().any(|(r, _)| *r == file) {
                return Err(bad(format!(
                    "the model file `{file}` is not among the files sent"
                )));
            }
            let mut step = json!({
                "kind": "model",
                "class": "onnx",
                "model_path": format!("{relative}/{file}"),
            });
            if instances > 0 {
                step["sessions"] = json!(instances);
            }
            if let Some(b) = batch {
                step["batch"] = b;
            }
            Ok((step, None))
        }
        Backend::Python => {
            let class_name = param(params, "class_name");
            let function = param(params, "function");
            if class_name.is_none() && function.is_none() {
                return Err(bad(
                    "a `python` model needs `parameters.class_name` or `parameters.function` \
                     (servegraph's Python runtime; Triton's `TritonPythonModel` is not served)",
                ));
            }
            // `parameters.python`: the interpreter (a virtualenv's, with the model's framework)
            // this model runs in, instead of the server's own.
            let (python, server_version) = match param(params, "python") {
                Some(p) => {
                    if !Path::new(p).is_absolute() {
                        return Err(bad(format!(
                            "`parameters.python` `{p}` must be an interpreter's absolute path"
                        )));
                    }
                    let version = python_version(p).ok_or_else(|| {
                        bad(format!(
                            "`parameters.python` `{p}` does not run as a Python interpreter on \
                             the server"
                        ))
                    })?;
                    (p.to_owned(), Some(version))
                }
                None => (host.python.clone(), host.python_version.clone()),
            };
            if let (Some(client), Some(server)) =
                (param(params, "python_version"), server_version.as_deref())
                && client != server
            {
                return Err(bad(format!(
                    "the model was pickled by Python {client}, and this server's Python models run \
                     on Python {server} ({python}): cloudpickle needs the same version on both sides"
                )));
            }
            let mut step = json!({
                "kind": "model",
                "class": "python",
                "model_uri": relative,
                "python": python,
            });
            match (param(params, "module"), param(params, "path")) {
                (Some(m), _) => step["module"] = json!(m),
                (None, Some(p)) => {
                    if !files.iter().any(|(r, _)| r == p) {
                        return Err(bad(format!(
                            "`parameters.path` `{p}` is not among the files sent"
                        )));
                    }
                    step["path"] = json!(format!("{relative}/{p}"));
                }
                (None, None) => {
                    return Err(bad(
                        "a `python` model needs `parameters.module` or `parameters.path`",
                    ));
                }
            }
            if let Some(c) = class_name {
                step["class_name"] = json!(c);
            }
            if let Some(f) = function {
                step["function"] = json!(f);
            }
            if let Some(api) = param(params, "api") {
                step["api"] = json!(api);
            }
            // `parameters.load_mode`: `async` serves the rest while the model loads (a Spark
            // session's start-up), readiness naming it until it has.
            if let Some(mode) = param(params, "load_mode") {
                if mode != "sync" && mode != "async" {
                    return Err(bad(format!(
                        "`parameters.load_mode` is `sync` or `async`, not `{mode}`"
                    )));
                }
                step["load_mode"] = json!(mode);
            }
            if let Some(args) = param(params, "class_args") {
                step["class_args"] = serde_json::from_str(args)
                    .map_err(|e| bad(format!("`parameters.class_args` is not JSON: {e}")))?;
            }
            if instances > 0 {
                step["workers"] = json!(instances);
            }
            if let Some(b) = batch {
                step["batch"] = b;
            }
            let tensors = |field: &str| -> Option<Value> {
                let items = config.get(field)?.as_array()?;
                let list: Vec<Value> = items
                    .iter()
                    .filter_map(|t| {
                        let mut dims: Vec<i64> = t
                            .get("dims")?
                            .as_array()?
                            .iter()
                            .filter_map(Value::as_i64)
                            .collect();
                        if max_batch > 0 {
                            dims.insert(0, -1);
                        }
                        Some(json!({
                            "name": t.get("name")?.as_str()?,
                            "datatype": oip_type(t.get("data_type")?.as_str()?),
                            "shape": dims,
                        }))
                    })
                    .collect();
                (!list.is_empty()).then_some(Value::Array(list))
            };
            if let Some(i) = tensors("input") {
                step["inputs"] = i;
            }
            if let Some(o) = tensors("output") {
                step["outputs"] = o;
            }
            if let Some(pkgs) = param(params, "pkgs_to_install") {
                let pkgs: Vec<String> = serde_json::from_str(pkgs).map_err(|e| {
                    bad(format!(
                        "`parameters.pkgs_to_install` must be a JSON list of requirements: {e}"
                    ))
                })?;
                if !pkgs.is_empty() {
                    if !host.allow_pip {
                        return Err(Error::new(
                            ErrorKind::Forbidden,
                            format!(
                                "the model asks for packages ({}), and this server installs none: \
                                 start it with `--allow-pip` to let models install packages",
                                pkgs.join(", ")
                            ),
                        ));
                    }
                    let python = make_venv(&python, folder, &pkgs)?;
                    step["python"] = json!(python);
                }
            }
            let example = param(params, "example").map(|e| e.as_bytes().to_vec());
            Ok((step, example))
        }
    }
}

/// `major.minor` of an interpreter, or `None` when it does not run.
pub fn python_version(python: &str) -> Option<String> {
    // Bounded: an interpreter that hangs is killed after 30 s, and only the first 64 bytes
    // it prints are read (a path that names some other program cannot flood the server).
    let mut cmd = std::process::Command::new(python);
    cmd.args(["-c", "import sys; print('%d.%d' % sys.version_info[:2])"]);
    let (status, text) = run_bounded(
        cmd,
        std::time::Duration::from_secs(30),
        Captured::Stdout { first: 64 },
    )
    .ok()??;
    status
        .success()
        .then(|| String::from_utf8_lossy(&text).trim().to_owned())
        .filter(|v| !v.is_empty() && v.len() <= 8)
}

/// Which of a command's outputs [`run_bounded`] keeps (the other goes nowhere).
enum Captured {
    /// The first bytes of its standard output; the pipe is closed after them.
    Stdout { first: u64 },
    /// The last bytes of its standard error, read to the end.
    Stderr { last: usize },
}

/// Runs `cmd` (no input) for at most `limit`: its status and what it kept of its output, or
/// `None` when it was killed at the limit.
fn run_bounded(
    mut cmd: std::process::Command,
    limit: std::time::Duration,
    captured: Captured,
) -> std::io::Result<Option<(std::process::ExitStatus, Vec<u8>)>> {
    use std::process::Stdio;
    let (out, err) = match captured {
        Captured::Stdout { .. } => (Stdio::piped(), Stdio::null()),
        Captured::Stderr { .. } => (Stdio::null(), Stdio::piped()),
    };
    let mut child = cmd.stdin(Stdio::null()).stdout(out).stderr(err).spawn()?;
    let reader: std::thread::JoinHandle<Vec<u8>> = match captured {
        Captured::Stdout { first } => {
            let stdout = child.stdout.take().expect("piped");
            std::thread::spawn(move || {
                let mut text = Vec::new();
                let _ =
                    std::io::Read::read_to_end(&mut std::io::Read::take(stdout, first), &mut text);
                text
            })
        }
        Captured::Stderr { last } => {
            let mut stderr = child.stderr.take().expect("piped");
            std::thread::spawn(move || {
                let (mut text, mut buf) = (Vec::new(), [0u8; 8192]);
                while let Ok(n @ 1..) = std::io::Read::read(&mut stderr, &mut buf) {
                    text.extend_from_slice(&buf[..n]);
                    if text.len() > 2 * last {
                        text.drain(..text.len() - last);
                    }
                }
                text
            })
        }
    };
    let deadline = std::time::Instant::now() + limit;
    let status = loop {
        match child.try_wait()? {
            Some(status) => break status,
            None if std::time::Instant::now() < deadline => {
                std::thread::sleep(std::time::Duration::from_millis(5))
            }
            None => {
                let _ = child.kill();
                let _ = child.wait();
                return Ok(None);
            }
        }
    };
    Ok(Some((status, reader.join().unwrap_or_default())))
}

/// A virtualenv for one model version, seeing the server's Python packages, with `pkgs`
/// installed by pip; its interpreter.
fn make_venv(python: &str, folder: &Path, pkgs: &[String]) -> Result<String, Error> {
    let venv = folder.join(".venv");
    // Each command is bounded: a pip that hangs (an unreachable index) is killed.
    const LIMIT: std::time::Duration = std::time::Duration::from_secs(600);
    let run = |cmd: std::process::Command, what: &str| -> Result<(), Error> {
        let Some((status, stderr)) = run_bounded(cmd, LIMIT, Captured::Stderr { last: 64 << 10 })
            .map_err(|e| Error::internal(format!("{what}: {e}")))?
        else {
            return Err(bad(format!("{what} took longer than {}s", LIMIT.as_secs())));
        };
        if !status.success() {
            let err = String::from_utf8_lossy(&stderr);
            let tail: Vec<&str> = err.lines().rev().take(15).collect();
            return Err(bad(format!(
                "{what} failed ({status}):\n{}",
                tail.into_iter().rev().collect::<Vec<_>>().join("\n")
            )));
        }
        Ok(())
    };
    let mut cmd = std::process::Command::new(python);
    cmd.args(["-m", "venv", "--system-site-packages"])
        .arg(&venv);
    run(cmd, "creating the model's virtualenv")?;
    let bin = venv.join("bin").join("python");
    // `--system-site-packages` sees the base interpreter's packages; when the server's Python
    // is itself a virtualenv, its packages (NumPy, cloudpickle, the model's libraries) are
    // added with a `.pth` file.
    let paths = |python: &Path, code: &str| -> Result<String, Error> {
        let out = std::process::Command::new(python)
            .args(["-c", code])
            .stdin(std::process::Stdio::null())
            .output()
            .map_err(|e| Error::internal(format!("{}: {e}", python.display())))?;
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned())
    };
    let parent = paths(
        Path::new(python),
        "import sysconfig; p = sysconfig.get_paths(); print(p['purelib']); print(p['platlib'])",
    )?;
    let own = paths(
        &bin,
        "import sysconfig; print(sysconfig.get_paths()['purelib'])",
    )?;
    if !own.is_empty() {
        std::fs::write(
            Path::new(&own).join("_servegraph_parent.pth"),
            format!("{parent}\n"),
        )
        .map_err(|e| Error::internal(format!("writing the virtualenv's .pth: {e}")))?;
    }
    let mut cmd = std::process::Command::new(&bin);
    cmd.args([
        "-m",
        "pip",
        "install",
        "--quiet",
        "--disable-pip-version-check",
        "--no-input",
    ])
    .args(pkgs);
    run(cmd, &format!("pip install {}", pkgs.join(" ")))?;
    Ok(bin.to_string_lossy().into_owned())
}

/// The default version after a change: kept when still loaded, else the last loaded.
fn ensure_default(state: &mut State, name: &str) {
    let loaded: Vec<&str> = state
        .loaded()
        .filter(|e| e.name == name)
        .map(|e| e.version.as_str())
        .collect();
    let kept = state
        .defaults
        .get(name)
        .is_some_and(|v| loaded.contains(&v.as_str()));
    // Every version unloaded: the default is remembered for a load that brings them back.
    if !kept && let Some(v) = loaded.last() {
        let v = (*v).to_owned();
        state.defaults.insert(name.to_owned(), v);
    }
}

/// Triton's unload: every version of `name`, or one (`parameters.version`, servegraph's);
/// the files stay so a load without files brings it back.
pub fn plan_unload(state: &State, name: &str, body: &Value) -> Result<State, Error> {
    let version = body
        .get("parameters")
        .and_then(|p| param(Some(p), "version"))
        .map(str::to_owned);
    let mut next = state.clone();
    let mut hit = false;
    for e in next
        .models
        .iter_mut()
        .filter(|e| e.name == name && e.loaded && version.as_ref().is_none_or(|v| *v == e.version))
    {
        e.loaded = false;
        hit = true;
    }
    if !hit {
        let held: Vec<String> = state
            .loaded()
            .filter(|e| e.name == name)
            .map(|e| e.version.clone())
            .collect();
        return Err(Error::not_found(match (&version, held.is_empty()) {
            (_, true) => format!(
                "the model repository serves no model `{name}` (models declared in the graph file \
                 are changed in the file, then `POST /admin/reload`)"
            ),
            (Some(v), false) => format!(
                "model `{name}` has no loaded version `{v}`; loaded: {}",
                held.join(", ")
            ),
            (None, false) => unreachable!("hit when held"),
        }));
    }
    ensure_default(&mut next, name);
    Ok(next)
}

/// Sets the version a request naming none gets (servegraph's; Clipper's `set_model_version`):
/// a loaded version of the repository, or `1` for a model of the graph file.
pub fn plan_default(
    state: &State,
    graph: &crate::Graph,
    name: &str,
    version: &str,
) -> Result<State, Error> {
    let known = state
        .loaded()
        .any(|e| e.name == name && e.version == version)
        || graph.model(name, Some(version)).is_some_and(|m| {
            // A version the file declares (not one the repository defaulted to).
            !state
                .loaded()
                .any(|e| e.name == name && Some(&e.version) == m.version.as_ref())
        });
    if !known {
        return Err(Error::not_found(format!(
            "model `{name}` has no version `{version}` to serve by default; its versions: {}",
            graph.versions(name).join(", ")
        )));
    }
    let mut next = state.clone();
    next.defaults.insert(name.to_owned(), version.to_owned());
    Ok(next)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn host(dir: &Path) -> Host<'_> {
        Host {
            graph: dir,
            python_version: Some("3.11".into()),
            python: "python3".into(),
            allow_pip: false,
        }
    }

    fn b64(bytes: &[u8]) -> String {
        base64::engine::general_purpose::STANDARD.encode(bytes)
    }

    #[test]
    fn tritons_load_body_becomes_an_onnx_route_with_its_settings() {
        let dir = tempfile::tempdir().unwrap();
        let graph = dir.path().join("g.yaml");
        let config = json!({"name": "m", "backend": "onnxruntime", "max_batch_size": 8,
            "dynamic_batching": {"max_queue_delay_microseconds": 100},
            "instance_group": [{"count": 2, "kind": "KIND_CPU"}]});
        let body = json!({"parameters": {"config": config.to_string(), "file:3/model.onnx": b64(b"onnx")}});
        let plan = plan_load(&host(&graph), &State::default(), "m", &body).unwrap();
        let entry = &plan.state.models[0];
        assert_eq!((entry.name.as_str(), entry.version.as_str()), ("m", "3"));
        assert_eq!(entry.step["class"], "onnx");
        assert_eq!(entry.step["sessions"], 2);
        assert_eq!(
            entry.step["batch"],
            json!({"max_size": 8, "max_wait_us": 100})
        );
        let file = dir.path().join(entry.step["model_path"].as_str().unwrap());
        assert_eq!(std::fs::read(file).unwrap(), b"onnx");
        assert_eq!(plan.state.defaults["m"], "3");
    }

    #[test]
    fn bad_load_bodies_name_what_is_wrong() {
        let dir = tempfile::tempdir().unwrap();
        let graph = dir.path().join("g.yaml");
        let h = host(&graph);
        let s = State::default();
        let cases = [
            (
                json!({"parameters": {"file:model.onnx": b64(b"x")}}),
                "version's folder",
            ),
            (
                json!({"parameters": {"file:1/../x.onnx": b64(b"x")}}),
                "not a plain relative path",
            ),
            (
                json!({"parameters": {"file:1/model.onnx": "!!"}}),
                "not base64",
            ),
            (
                json!({"parameters": {"config": "{", "file:1/model.onnx": b64(b"x")}}),
                "not JSON",
            ),
            (
                json!({"parameters": {"config": "{\"backend\": \"tensorrt\"}", "file:1/m.plan": b64(b"x")}}),
                "`tensorrt` is not served",
            ),
            (
                json!({"parameters": {"config": "{\"name\": \"other\"}", "file:1/model.onnx": b64(b"x")}}),
                "names model `other`",
            ),
            (json!({}), "holds no model `m`"),
        ];
        for (body, want) in cases {
            let e = plan_load(&h, &s, "m", &body).err().expect("refused");
            assert!(e.message.contains(want), "{want}: {}", e.message);
        }
        // Nothing written by refused loads.
        assert!(
            !files_dir(&graph).join("m").exists()
                || std::fs::read_dir(files_dir(&graph).join("m"))
                    .unwrap()
                    .next()
                    .is_none()
        );
    }

    #[test]
    fn clipper_app_settings_come_from_the_configuration_and_outlive_later_loads() {
        let dir = tempfile::tempdir().unwrap();
        let graph = dir.path().join("g.yaml");
        let h = host(&graph);
        let load = |params: Value, version: &str| {
            let config = json!({"backend": "onnxruntime", "parameters": params});
            json!({"parameters": {"config": config.to_string(),
                format!("file:{version}/model.onnx"): b64(b"a")}})
        };
        let first = load(
            json!({"input_type": {"string_value": "doubles"},
                "default_output": {"string_value": "-1.0"},
                "slo_micros": {"string_value": "100000"}}),
            "1",
        );
        let s = plan_load(&h, &State::default(), "m", &first).unwrap().state;
        let want = App {
            input_type: Some("doubles".into()),
            default_output: Some("-1.0".into()),
            slo_micros: Some(100_000),
        };
        assert_eq!(s.apps["m"], want);
        // A later version that says nothing of the app keeps it; one that says part of it
        // changes that part.
        let s = plan_load(&h, &s, "m", &load(json!({}), "2")).unwrap().state;
        assert_eq!(s.apps["m"], want);
        let s = plan_load(&h, &s, "m", &load(json!({"slo_micros": 5}), "3"))
            .unwrap()
            .state;
        assert_eq!(s.apps["m"].slo_micros, Some(5));
        assert_eq!(s.apps["m"].default_output.as_deref(), Some("-1.0"));
        // Saved with the overlay; an overlay without apps reads as before.
        s.save(&graph).unwrap();
        assert_eq!(State::read(&graph).unwrap(), s);
        for (params, want) in [
            (
                json!({"input_type": "ints"}),
                "not one of Clipper's input types",
            ),
            (json!({"slo_micros": "soon"}), "in microseconds"),
            (json!({"slo_micros": 0}), "in microseconds"),
        ] {
            let e = plan_load(&h, &s, "m", &load(params, "4"))
                .err()
                .expect("refused");
            assert!(e.message.contains(want), "{want}: {}", e.message);
        }
    }

    #[test]
    fn an_interpreter_check_is_bounded() {
        // A program that prints forever is not read past 64 bytes and is not a version.
        let t = std::time::Instant::now();
        assert_eq!(python_version("/usr/bin/yes"), None);
        assert!(t.elapsed() < std::time::Duration::from_secs(10));
        assert_eq!(python_version("/nonexistent/python"), None);
        assert_eq!(python_version("/bin/false"), None);
    }

    #[test]
    fn a_python_model_may_name_its_interpreter_and_is_checked_against_it() {
        let dir = tempfile::tempdir().unwrap();
        let graph = dir.path().join("g.yaml");
        let h = host(&graph);
        let out = std::process::Command::new("python3")
            .args([
                "-c",
                "import sys; print(sys.executable); print('%d.%d' % sys.version_info[:2])",
            ])
            .output()
            .unwrap();
        let text = String::from_utf8(out.stdout).unwrap();
        let mut lines = text.lines();
        let (exe, version) = (lines.next().unwrap(), lines.next().unwrap());
        let load = |python: &str, pickled: &str| {
            let config = json!({"backend": "python", "parameters": {
                "module": {"string_value": "servegraph.frameworks"},
                "class_name": {"string_value": "TorchModel"},
                "python": {"string_value": python},
                "python_version": {"string_value": pickled}}});
            json!({"parameters": {"config": config.to_string(),
                "file:1/model.pt": b64(b"torchscript")}})
        };
        let plan = plan_load(&h, &State::default(), "m", &load(exe, version)).unwrap();
        let entry = plan.state.models.iter().find(|e| e.name == "m").unwrap();
        assert_eq!(entry.step["python"], exe);
        assert_eq!(entry.step["class_name"], "TorchModel");
        assert!(entry.step.get("load_mode").is_none());
        for (python, pickled, want) in [
            (
                "bin/python",
                version,
                "must be an interpreter's absolute path",
            ),
            (
                "/nonexistent/bin/python",
                version,
                "does not run as a Python interpreter",
            ),
            (exe, "2.7", "pickled by Python 2.7"),
        ] {
            let e = plan_load(&h, &State::default(), "m", &load(python, pickled))
                .err()
                .expect("refused");
            assert!(e.message.contains(want), "{want}: {}", e.message);
        }
    }

    #[test]
    fn unload_keeps_files_and_moves_the_default_back() {
        let dir = tempfile::tempdir().unwrap();
        let graph = dir.path().join("g.yaml");
        let h = host(&graph);
        let one = json!({"parameters": {"file:1/model.onnx": b64(b"a")}});
        let two = json!({"parameters": {"file:2/model.onnx": b64(b"b")}});
        let s = plan_load(&h, &State::default(), "m", &one).unwrap().state;
        let s = plan_load(&h, &s, "m", &two).unwrap().state;
        assert_eq!(s.defaults["m"], "2");
        let s = plan_unload(&s, "m", &json!({"parameters": {"version": "2"}})).unwrap();
        assert_eq!(s.defaults["m"], "1");
        let s = plan_unload(&s, "m", &json!({})).unwrap();
        assert_eq!(s.loaded().count(), 0);
        assert!(plan_unload(&s, "m", &json!({})).is_err());
        // A load without files brings the held versions back, with the default they had.
        let s = plan_load(&h, &s, "m", &json!({})).unwrap().state;
        assert_eq!(s.loaded().count(), 2);
        assert_eq!(s.defaults["m"], "1");
    }

    #[test]
    fn the_overlay_is_read_saved_and_refused_when_broken() {
        let dir = tempfile::tempdir().unwrap();
        let graph = dir.path().join("g.yaml");
        assert_eq!(State::read(&graph).unwrap(), State::default());
        let mut state = State::default();
        state.defaults.insert("m".into(), "1".into());
        state.save(&graph).unwrap();
        assert_eq!(State::read(&graph).unwrap(), state);
        std::fs::write(overlay_path(&graph), b"{").unwrap();
        let e = State::read(&graph).unwrap_err();
        assert!(matches!(e, OverlayError::Invalid { .. }), "{e:?}");
        let text = e.to_string();
        assert!(
            text.starts_with(&format!(
                "the model repository {} is not valid: ",
                overlay_path(&graph).display()
            )) && text.ends_with(
                "(it is written by the server; move it away to start without the models loaded into it)"
            ),
            "{text}"
        );
    }
}
