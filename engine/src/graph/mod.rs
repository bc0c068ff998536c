//! A graph file compiled into a runnable plan.
//!
//! Loading runs in phases and collects every problem before giving up: YAML syntax, the
//! top-level fields, each step (kind, fields, args, model files), the edges (dangling
//! `after`, cycles, the responder), and, when models are loaded, the tensors along every edge.
//!
//! What is where: `spec` (the file's top level), `load` (parsing and declaring steps),
//! `compile` (the DAG and its checks), `infer` (tensors along the edges), `exec` (running it).

mod compile;
mod exec;
mod infer;
mod load;
pub mod sources;
mod spec;
#[cfg(test)]
mod tests;

pub use spec::GraphFileSpec;

use std::time::Duration;

use crate::error::{Error, Result};
use crate::event::Event;
use crate::learning::Learner;
use crate::step::{ModelInfo, Step};

use self::{compile::*, exec::*, infer::*, load::*, spec::*};

/// A graph's shape: its steps in topological order, its error handlers, and which step
/// responds.
pub struct Layout<'a> {
    pub steps: Vec<LaidStep<'a>>,
    pub handlers: Vec<(&'a str, &'a dyn Step)>,
    /// Index into `steps`.
    pub responder: usize,
}

/// One step of a [`Layout`].
pub struct LaidStep<'a> {
    pub name: &'a str,
    pub step: &'a dyn Step,
    /// Indices into `Layout::steps` of the steps it comes after.
    pub preds: Vec<usize>,
    /// The error handler's name, if it has one.
    pub on_error: Option<&'a str>,
}

/// A validated, compiled graph, ready to run requests.
pub struct Graph {
    pub name: String,
    nodes: Vec<GraphNode>,
    /// Steps that run only when a step naming them in `on_error` fails.
    handlers: Vec<GraphNode>,
    entries: Vec<usize>,
    responder: usize,
    /// Every node has one predecessor and one successor: run as a plain loop.
    chain: bool,
    deadline: Duration,
    pub max_in_flight: usize,
    /// Admission: one permit per request in flight, whichever source it came from.
    admission: tokio::sync::Semaphore,
    max_tensor_elements: usize,
    models: Vec<ModelInfo>,
    /// The tracking stream's settings and sink, when the graph has one.
    pub tracking: Option<(crate::tracking::TrackingSpec, crate::tracking::Sink)>,
    /// The monitor of its tracking stream (`monitor:`), with the graph file's folder.
    pub monitor: Option<(crate::monitor::MonitorSpec, std::path::PathBuf)>,
    /// The sources the graph file declares (`sources:`), besides HTTP and gRPC.
    pub sources: sources::SourcesSpec,
    /// Where spans go, when the graph is traced.
    pub telemetry: Option<crate::telemetry::TelemetrySpec>,
    /// Every Kafka topic the graph uses (its Kafka source's, its tracking stream's, its steps'),
    /// each with what uses it.
    pub kafka_topics: Vec<crate::step::KafkaTopic>,
    /// Create those of them that do not exist, at start-up (`create_topics`).
    pub create_topics: Option<sources::CreateTopicsSpec>,
    /// Request headers some step reads: sources copy these into events.
    pub headers: Vec<String>,
    /// The steps that learn from feedback (routers), by name.
    learners: Vec<String>,
    /// What the model repository added (its overlay): default versions, unloaded models.
    repository: crate::repository::State,
}

/// The graph a process serves now, with its tracking stream: replaced whole by a reload.
/// Sources read it per request, so a request runs start to end on the graph it started on.
#[derive(Clone)]
pub struct Live {
    pub graph: std::sync::Arc<Graph>,
    pub tracker: Option<crate::tracking::Tracker>,
}

impl Graph {
    /// What the model repository added to the graph file: its loaded and unloaded models and
    /// their default versions.
    pub fn repository(&self) -> &crate::repository::State {
        &self.repository
    }

    /// Addressable models: the graph itself first, then every route by name.
    pub fn models(&self) -> &[ModelInfo] {
        &self.models
    }

    /// Finds a model by name and optional version, as the HTTP paths address them. An
    /// unversioned model answers as version `1` (what its metadata lists).
    pub fn model(&self, name: &str, version: Option<&str>) -> Option<&ModelInfo> {
        let mut named = self.models.iter().filter(|m| m.name == name);
        match version {
            Some(v) => named
                .clone()
                .find(|m| m.version.as_deref() == Some(v))
                .or_else(|| {
                    (v == "1")
                        .then(|| named.find(|m| m.version.is_none()))
                        .flatten()
                }),
            // The repository's default version, else the unversioned one, else the last
            // declared version.
            None => match self.repository.defaults.get(name) {
                Some(v) => self.model(name, Some(v)),
                None => named
                    .clone()
                    .find(|m| m.version.is_none())
                    .or_else(|| named.next_back()),
            },
        }
    }

    /// The versions a model answers at `/versions/{v}` (an unversioned one as `1`), in
    /// declaration order.
    pub fn versions(&self, name: &str) -> Vec<&str> {
        let mut out: Vec<&str> = Vec::new();
        for m in self.models.iter().filter(|m| m.name == name) {
            let v = m.version.as_deref().unwrap_or("1");
            if !out.contains(&v) {
                out.push(v);
            }
        }
        out
    }

    /// Every model once, with its versions when it has more than one: for error messages.
    fn model_list(&self) -> String {
        let mut names: Vec<&str> = Vec::new();
        for m in &self.models {
            if !names.contains(&m.name.as_str()) {
                names.push(&m.name);
            }
        }
        names
            .iter()
            .map(|n| match self.versions(n)[..] {
                [_] => n.to_string(),
                ref vs => format!("{n} (versions {})", vs.join(", ")),
            })
            .collect::<Vec<_>>()
            .join(", ")
    }

    /// [`Graph::model`], or a 404 that says what is there: the versions of a known model, or
    /// the server's models.
    pub fn find_model(&self, name: &str, version: Option<&str>) -> Result<&ModelInfo> {
        if let Some(m) = self.model(name, version) {
            return Ok(m);
        }
        if let Some(v) = version
            && self.model(name, None).is_some()
        {
            return Err(Error::not_found(format!(
                "model `{name}` has no version `{v}`; its versions are: {}",
                self.versions(name).join(", ")
            )));
        }
        let near = crate::fields::did_you_mean(name, self.models.iter().map(|m| m.name.as_str()))
            .map(|near| format!(" (did you mean `{near}`?)"))
            .unwrap_or_default();
        Err(Error::not_found(format!(
            "unknown model `{name}`{near}; this server's models are: {}",
            self.model_list()
        )))
    }

    /// The class names of output `output` of model `name` (the graph, or a route or step; a
    /// version is its route `name:v`), for the classification extension: the first a step on
    /// it knows for that output ([`Step::labels`]).
    pub fn labels(&self, name: &str, version: Option<&str>, output: &str) -> Option<Vec<String>> {
        fn first(steps: Vec<(&str, &dyn Step)>, output: &str) -> Option<Vec<String>> {
            steps
                .into_iter()
                .find_map(|(_, s)| s.labels(output).or_else(|| first(s.children(), output)))
        }
        if name == self.name {
            return first(
                self.nodes
                    .iter()
                    .map(|n| (n.name.as_str(), n.step.as_ref()))
                    .collect(),
                output,
            );
        }
        // A version is its route's (`name:v`), as requests reach it.
        let step = self.model_step(name, version)?;
        step.labels(output)
            .or_else(|| first(step.children(), output))
    }

    /// A model's metadata as `GET /v2/models/{name}[/versions/{v}]` answers it: the versions
    /// that answer, the platform, and the tensors a request sends and gets.
    pub fn metadata(&self, name: &str, version: Option<&str>) -> Result<serde_json::Value> {
        let info = self.find_model(name, version)?;
        Ok(serde_json::json!({
            "name": info.name,
            "versions": self.versions(name),
            "platform": info.platform,
            "inputs": info.inputs,
            "outputs": info.outputs,
        }))
    }

    /// Takes an admission permit for one request, or refuses it (429) when `max_in_flight`
    /// requests are running.
    pub fn admit(&self) -> Result<tokio::sync::SemaphorePermit<'_>> {
        self.admission.try_acquire().map_err(|_| {
            Error::new(
                crate::error::ErrorKind::Overloaded,
                format!(
                    "too many requests in flight (max_in_flight is {})",
                    self.max_in_flight
                ),
            )
        })
    }

    /// Requests that could be admitted now.
    pub fn admission_available(&self) -> usize {
        self.admission.available_permits()
    }

    /// The graph's shape, for pictures.
    pub fn layout(&self) -> Layout<'_> {
        let steps = self
            .nodes
            .iter()
            .map(|n| LaidStep {
                name: &n.name,
                step: n.step.as_ref(),
                preds: n.preds.clone(),
                on_error: n.on_error.map(|h| self.handlers[h].name.as_str()),
            })
            .collect();
        let handlers = self
            .handlers
            .iter()
            .map(|h| (h.name.as_str(), h.step.as_ref()))
            .collect();
        Layout {
            steps,
            handlers,
            responder: self.responder,
        }
    }

    pub fn deadline(&self) -> Duration {
        self.deadline
    }

    /// A step by name, nested ones (routes, members) included.
    pub fn find_step(&self, name: &str) -> Option<&dyn Step> {
        fn search<'a>(
            name: &str,
            candidates: Vec<(&'a str, &'a dyn Step)>,
        ) -> Option<&'a dyn Step> {
            for (n, s) in candidates {
                if n == name {
                    return Some(s);
                }
                if let Some(found) = search(name, s.children()) {
                    return Some(found);
                }
            }
            None
        }
        let top = self
            .nodes
            .iter()
            .map(|n| (n.name.as_str(), n.step.as_ref()))
            .collect();
        search(name, top)
    }

    /// The step that serves model `name` (a version's route key `name:v` first), when a step
    /// does (the graph itself is none).
    pub fn model_step(&self, name: &str, version: Option<&str>) -> Option<&dyn Step> {
        version
            .and_then(|v| self.find_step(&format!("{name}:{v}")))
            .or_else(|| self.find_step(name))
    }

    /// Whether a step, nested ones included, is still loading in the background.
    pub fn loading(&self) -> bool {
        fn walk(steps: Vec<(&str, &dyn Step)>) -> bool {
            steps
                .into_iter()
                .any(|(_, s)| s.model().is_some_and(|m| m.loading()) || walk(s.children()))
        }
        walk(
            self.nodes
                .iter()
                .map(|n| (n.name.as_str(), n.step.as_ref()))
                .collect(),
        )
    }

    /// Why the graph cannot serve now: the first step, nested ones included, that says it is
    /// not ready (and why); `None` when every step is.
    pub fn unready(&self) -> Option<String> {
        fn walk(steps: Vec<(&str, &dyn Step)>) -> Option<String> {
            steps.into_iter().find_map(|(name, s)| {
                s.model()
                    .and_then(|m| m.unready())
                    .map(|why| format!("step `{name}`: {why}"))
                    .or_else(|| walk(s.children()))
            })
        }
        walk(
            self.nodes
                .iter()
                .map(|n| (n.name.as_str(), n.step.as_ref()))
                .collect(),
        )
    }

    /// Every step that learns from feedback (routers), nested ones included, by name.
    pub fn learners(&self) -> Vec<(&str, &dyn Learner)> {
        self.learners
            .iter()
            .filter_map(|n| Some((n.as_str(), self.find_step(n)?.learner()?)))
            .collect()
    }

    /// The step named `name`, if it learns from feedback (a router).
    pub fn learner(&self, name: &str) -> Option<&dyn Learner> {
        self.learners
            .iter()
            .any(|n| n == name)
            .then(|| self.find_step(name)?.learner())
            .flatten()
    }

    /// The names of the steps that learn (routers), found once when the graph is built.
    fn find_learners(&self) -> Vec<String> {
        fn walk(found: &mut Vec<String>, steps: Vec<(&str, &dyn Step)>) {
            for (n, s) in steps {
                if s.learner().is_some() {
                    found.push(n.to_owned());
                }
                walk(found, s.children());
            }
        }
        let mut found = Vec::new();
        walk(
            &mut found,
            self.nodes
                .iter()
                .map(|n| (n.name.as_str(), n.step.as_ref()))
                .collect(),
        );
        found
    }

    /// Checks a request's tensors against the graph's `max_tensor_elements` (422 past it).
    pub fn check_request(&self, event: &Event) -> Result<()> {
        match event
            .tensors
            .iter()
            .find(|t| t.data.len() > self.max_tensor_elements)
        {
            None => Ok(()),
            Some(t) => Err(Error::unprocessable(format!(
                "input `{}` has {} elements (shape {:?}), over the graph's max_tensor_elements of {}",
                t.name,
                t.data.len(),
                t.shape,
                self.max_tensor_elements
            ))),
        }
    }

    /// Lets every step that learns save its state (before a reload builds the graph again).
    pub fn checkpoint(&self) {
        for (_, step) in self.learners() {
            step.checkpoint();
        }
    }

    /// Whether the graph is a straight chain of steps (what queue steps need).
    pub fn is_chain(&self) -> bool {
        self.chain
    }

    /// The names of the graph's steps, in order.
    pub fn step_names(&self) -> Vec<&str> {
        self.nodes.iter().map(|n| n.name.as_str()).collect()
    }

    /// Every step, nested ones (routes, members) after their parent, in order.
    pub fn every_step(&self) -> Vec<(&str, &dyn Step)> {
        fn walk<'a>(out: &mut Vec<(&'a str, &'a dyn Step)>, steps: Vec<(&'a str, &'a dyn Step)>) {
            for (name, step) in steps {
                out.push((name, step));
                walk(out, step.children());
            }
        }
        let mut out = Vec::new();
        walk(
            &mut out,
            self.nodes
                .iter()
                .map(|n| (n.name.as_str(), n.step.as_ref()))
                .collect(),
        );
        out
    }
}
