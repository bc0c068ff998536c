//! A graph file compiled into a runnable plan.
//!
//! Loading runs in phases and collects every problem before giving up: YAML syntax, the
//! top-level fields, each step (kind, fields, args, model files), the edges (dangling
//! `after`, cycles, the responder), and, when models are loaded, the tensors along every edge.

use std::collections::HashMap;
use std::future::Future;
use std::path::Path;
use std::pin::Pin;
use std::time::Duration;

use futures_util::StreamExt;
use futures_util::stream::FuturesUnordered;
use marked_yaml::types::MarkedScalarNode;
use marked_yaml::{LoaderOptions, Node, Span};
use petgraph::algo::tarjan_scc;
use petgraph::graph::DiGraph;
use schemars::JsonSchema;
use serde::Deserialize;

use crate::diag::{Diagnostic, GraphErrors, Location, all_of, one_of};
use crate::error::{Error, Result};
use crate::event::Event;
use crate::step::{BuildContext, BuildMode, ModelInfo, Registry, Step, StepNode, from_yaml};
use crate::tensor::{Signature, TensorMeta};

/// The top level of a graph file.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct GraphFileSpec {
    /// The graph's name: the model name clients address (`/v2/models/{name}/infer`).
    pub name: String,
    /// Free text for people reading the file.
    #[serde(default)]
    pub description: Option<String>,
    /// The graph: `kind: flow` (steps joined by `after`) or `kind: router` (one router).
    #[schemars(with = "serde_json::Value")]
    pub graph: serde::de::IgnoredAny,
    /// Deadline for one request through the whole graph, in milliseconds (HTTP 504 past it).
    #[serde(default = "default_timeout_ms")]
    pub timeout_ms: u64,
    /// Requests the graph serves at once; more are refused with HTTP 429.
    #[serde(default = "default_max_in_flight")]
    pub max_in_flight: usize,
    /// The most elements one request tensor may have (HTTP 422 past it).
    #[serde(default = "default_max_tensor_elements")]
    pub max_tensor_elements: usize,
    /// The error handler for every flow step that names none (a step of the flow).
    #[serde(default)]
    pub on_error: Option<String>,
    /// Monitoring events, one per (sampled) request, to a tracking stream.
    #[serde(default)]
    pub tracking: Option<crate::tracking::TrackingSpec>,
    /// Sources besides HTTP (Kafka).
    #[serde(default)]
    pub sources: Option<crate::sources::SourcesSpec>,
    /// OpenTelemetry tracing: spans per request and per step, exported over OTLP/HTTP.
    #[serde(default)]
    pub telemetry: Option<crate::telemetry::TelemetrySpec>,
}

fn default_timeout_ms() -> u64 {
    30_000
}

fn default_max_in_flight() -> usize {
    1024
}

fn default_max_tensor_elements() -> usize {
    16 * 1024 * 1024
}

/// The step fields the engine reads on a flow's steps (besides `after`).
#[derive(Debug, Default, Deserialize, JsonSchema)]
struct FlowFields {
    #[serde(default)]
    responder: bool,
    #[serde(default)]
    #[schemars(range(min = 1))]
    timeout_ms: Option<u64>,
    #[serde(default)]
    #[schemars(with = "Option<String>")]
    on_error: Option<marked_yaml::Spanned<String>>,
}

/// One node of the compiled plan.
struct GraphNode {
    name: String,
    step: Box<dyn Step>,
    preds: Vec<usize>,
    succs: Vec<usize>,
    timeout: Option<Duration>,
    /// The error handler (an index into `Graph::handlers`) that answers when this step fails.
    on_error: Option<usize>,
    /// `servegraph_step_duration_seconds` for this step.
    seconds: crate::metrics::Timer,
}

impl GraphNode {
    fn new(graph: &str, name: String, step: Box<dyn Step>, timeout: Option<Duration>) -> Self {
        GraphNode {
            seconds: crate::metrics::step_histogram(graph, &name),
            name,
            step,
            preds: Vec::new(),
            succs: Vec::new(),
            timeout,
            on_error: None,
        }
    }

    /// Runs the step, recording its time (and, for tracked requests, in the event).
    async fn run(&self, event: Event) -> Result<Event> {
        if event.trace.is_some() {
            return Box::pin(self.run_traced(event)).await;
        }
        self.run_measured(event).await
    }

    /// [`GraphNode::run`] inside a span of its own (traced requests only).
    async fn run_traced(&self, mut event: Event) -> Result<Event> {
        let request = event.trace.take().expect("traced");
        let span = crate::telemetry::StepSpan::start(&request, &self.name);
        let result = self.run_measured(event).await;
        match result {
            Ok(mut event) => {
                event.trace = Some(request);
                Ok(event)
            }
            Err(e) => {
                if let Some(s) = &span {
                    s.fail(&e.to_string());
                }
                Err(e)
            }
        }
    }

    async fn run_measured(&self, event: Event) -> Result<Event> {
        // Reads the TSC where that is reliable: cheaper than the system clock (see
        // docs/benchmarks.md, engine overhead with metrics).
        let start = quanta::Instant::now();
        let result = match self.timeout {
            None => self.step.process(event).await,
            // Boxed: a timer is large, and most steps have none; the common path's future
            // stays small (futures are moved, and per-step cost is mostly those moves).
            Some(limit) => Box::pin(self.run_with_timeout(limit, event)).await,
        };
        let took = start.elapsed();
        self.seconds.observe(took);
        let mut event = result.map_err(|e| e.in_step(&self.name))?;
        if let Some(times) = &mut event.step_microsec {
            times.push((self.name.clone(), took.as_micros() as u64));
        }
        Ok(event)
    }

    async fn run_with_timeout(&self, limit: Duration, event: Event) -> Result<Event> {
        match tokio::time::timeout(limit, self.step.process(event)).await {
            Ok(result) => result,
            Err(_) => Err(Error::timeout(format!(
                "took longer than its timeout_ms of {}",
                limit.as_millis()
            ))),
        }
    }
}

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
    /// The Kafka source's settings, when the graph has one.
    pub kafka: Option<crate::sources::KafkaSourceSpec>,
    /// Where spans go, when the graph is traced.
    pub telemetry: Option<crate::telemetry::TelemetrySpec>,
    /// Request headers some step reads: sources copy these into events.
    pub headers: Vec<String>,
    /// The steps that learn from feedback (routers), by name.
    learners: Vec<String>,
}

/// The graph a process serves now, with its tracking stream: replaced whole by a reload.
/// Sources read it per request, so a request runs start to end on the graph it started on.
#[derive(Clone)]
pub struct Live {
    pub graph: std::sync::Arc<Graph>,
    pub tracker: Option<crate::tracking::Tracker>,
}

/// A step as declared in a flow, before compiling.
struct Declared {
    name: String,
    span: Span,
    after: Vec<(String, Span)>,
    responder: bool,
    timeout: Option<Duration>,
    on_error: Option<(String, Span)>,
    step: Option<Box<dyn Step>>,
}

impl Graph {
    /// Reads, validates and builds a graph file. With [`BuildMode::Load`] models are opened
    /// and tensors are checked along every edge. Every problem is reported, not just the first.
    pub fn load(path: &Path, registry: &Registry, mode: BuildMode) -> Result<Graph, GraphErrors> {
        let source = std::fs::read_to_string(path).map_err(|e| {
            GraphErrors::new(
                path,
                "",
                vec![Diagnostic::new(format!("cannot read the graph file: {e}"))],
            )
        })?;
        let base = path.parent().unwrap_or(Path::new("."));
        Graph::from_yaml(&source, base, registry, mode)
            .map_err(|d| GraphErrors::new(path, &source, d))
    }

    /// Like [`Graph::load`], from YAML text; relative model paths resolve under `base_dir`.
    pub fn from_yaml(
        source: &str,
        base_dir: &Path,
        registry: &Registry,
        mode: BuildMode,
    ) -> Result<Graph, Vec<Diagnostic>> {
        // Phase 1: YAML syntax.
        let options = LoaderOptions::default().error_on_duplicate_keys(true);
        let root = marked_yaml::parse_yaml_with_options(0, source, options)
            .map_err(|e| vec![load_error(e)])?;
        let mut ctx = BuildContext::new(registry, base_dir, mode);

        // Phase 2: the top-level fields.
        let top_span = *root.span();
        let spec = match from_yaml::<GraphFileSpec>(&root, &top_span, "a graph file", &[]) {
            Ok(spec) => Some(spec),
            Err(problems) => {
                for d in problems {
                    ctx.report(d);
                }
                None
            }
        };
        let Some(root) = root.as_mapping() else {
            return Err(ctx.into_diagnostics());
        };
        let Some(graph) = root.get_node("graph") else {
            return Err(ctx.into_diagnostics());
        };
        let name = root
            .get_scalar("name")
            .map(|n| (n.as_str().to_owned(), *n.span()));
        if let Some((name, span)) = &name {
            check_name(&mut ctx, name, span);
        }
        let graph_name = name.as_ref().map(|(n, _)| n.clone()).unwrap_or_default();

        // Phase 3: the steps, each built by its kind's factory.
        let declared = declare_steps(&mut ctx, &graph_name, graph);
        let Some(spec) = spec else {
            return Err(ctx.into_diagnostics());
        };
        // Where a top-level field is (for its errors).
        let field_span = |name: &str| root.get_node(name).map(|n| *n.span()).unwrap_or(top_span);
        if spec.max_in_flight == 0 {
            let span = field_span("max_in_flight");
            ctx.report(Diagnostic::new("`max_in_flight` must be at least 1").at(&span));
        }

        let tracking = match &spec.tracking {
            None => None,
            Some(t) => {
                let span = field_span("tracking");
                let contained = |sink: crate::tracking::Sink| match &sink {
                    // A file is written where the graph says: under the same roots as models.
                    crate::tracking::Sink::File(path) => {
                        let folder = match path.parent() {
                            Some(p) if !p.as_os_str().is_empty() => p,
                            _ => Path::new("."),
                        };
                        ctx.check_model_path(folder)
                            .map(|_| sink.clone())
                            .map_err(|why| {
                                format!("the file {} is not allowed: {why}", path.display())
                            })
                    }
                    _ => Ok(sink),
                };
                match t
                    .check()
                    .and_then(|_| crate::tracking::Sink::parse(&t.sink, base_dir))
                    .and_then(contained)
                {
                    Ok(sink) => Some((t.clone(), sink)),
                    Err(e) => {
                        ctx.report(Diagnostic::new(format!("tracking: {e}")).at(&span));
                        None
                    }
                }
            }
        };

        if let Some(k) = spec.sources.as_ref().and_then(|s| s.kafka.as_ref())
            && let Err(e) = k.check()
        {
            let span = field_span("sources");
            ctx.report(Diagnostic::new(format!("sources.kafka: {e}")).at(&span));
        }
        if let Some(t) = &spec.telemetry
            && let Err(e) = t.check()
        {
            let span = field_span("telemetry");
            ctx.report(Diagnostic::new(format!("telemetry: {e}")).at(&span));
        }

        // Phase 4: edges, cycles and the responder; then tensors along the edges.
        let default_on_error = spec.on_error.clone().map(|h| {
            let span = root
                .get_node("on_error")
                .map(|n| *n.span())
                .unwrap_or(top_span);
            (h, span)
        });
        if let Some((_, span)) = &default_on_error
            && graph
                .as_mapping()
                .and_then(|g| g.get_scalar("kind"))
                .map(|k| k.as_str())
                != Some("flow")
        {
            ctx.report(
                Diagnostic::new("`on_error` names a step of a flow; this graph is not a flow")
                    .at(span),
            );
        }
        let graph = compile(&mut ctx, spec, declared, default_on_error).map(|mut g| {
            g.tracking = tracking;
            g.learners = g.find_learners();
            g
        });
        if ctx.has_errors() {
            return Err(ctx.into_diagnostics());
        }
        graph.ok_or_else(|| ctx.into_diagnostics())
    }

    /// Addressable models: the graph itself first, then every route by name.
    pub fn models(&self) -> &[ModelInfo] {
        &self.models
    }

    /// Finds a model by name and optional version, as the HTTP paths address them.
    pub fn model(&self, name: &str, version: Option<&str>) -> Option<&ModelInfo> {
        let mut named = self.models.iter().filter(|m| m.name == name);
        match version {
            Some(v) => named.find(|m| m.version.as_deref() == Some(v)),
            // The unversioned one, else the last declared version.
            None => named
                .clone()
                .find(|m| m.version.is_none())
                .or_else(|| named.next_back()),
        }
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
                "model `{name}` has no version `{v}`"
            )));
        }
        let mut names: Vec<&str> = self.models.iter().map(|m| m.name.as_str()).collect();
        names.dedup();
        Err(Error::not_found(format!(
            "unknown model `{name}`; this server's models are: {}",
            names.join(", ")
        )))
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

    /// Runs one event through the graph within the graph's deadline.
    pub async fn run(&self, event: Event) -> Result<Event> {
        match tokio::time::timeout(self.deadline, self.run_steps(event)).await {
            Ok(result) => result,
            Err(_) => Err(Error::timeout(format!(
                "the request took longer than the graph's timeout_ms of {}",
                self.deadline.as_millis()
            ))),
        }
    }

    async fn run_steps(&self, event: Event) -> Result<Event> {
        if self.chain {
            // A flow resumed from a queue starts after the queue step.
            let first = match &event.resume_after {
                None => 0,
                Some(step) => {
                    1 + self
                        .nodes
                        .iter()
                        .position(|n| &n.name == step)
                        .ok_or_else(|| {
                            Error::bad_request(format!(
                                "cannot resume after `{step}`: the graph has no such step"
                            ))
                        })?
                }
            };
            let mut event = event;
            event.resume_after = None;
            for node in &self.nodes[first..] {
                event = self.run_node(node, event).await?;
                if event.stopped {
                    break;
                }
            }
            return Ok(event);
        }
        if let Some(step) = &event.resume_after {
            return Err(Error::bad_request(format!(
                "cannot resume after `{step}`: only flows that are a straight chain can be resumed"
            )));
        }
        self.run_dag(event).await
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

    /// Every step that learns from feedback (routers), nested ones included, by name.
    pub fn learners(&self) -> Vec<(&str, &dyn Step)> {
        self.learners
            .iter()
            .filter_map(|n| Some((n.as_str(), self.find_step(n)?)))
            .collect()
    }

    /// The step named `name`, if it learns from feedback (a router).
    pub fn learner(&self, name: &str) -> Option<&dyn Step> {
        self.learners
            .iter()
            .any(|n| n == name)
            .then(|| self.find_step(name))
            .flatten()
    }

    /// The names of the steps that keep stats (routers), found once when the graph is built:
    /// asking a step for its stats builds them.
    fn find_learners(&self) -> Vec<String> {
        fn walk(found: &mut Vec<String>, steps: Vec<(&str, &dyn Step)>) {
            for (n, s) in steps {
                if s.stats().is_some() {
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

    /// Runs one step; if it fails and has an error handler, the handler gets the step's input
    /// with the error in `notes.error`, and its answer stands in for the step's.
    async fn run_node(&self, node: &GraphNode, event: Event) -> Result<Event> {
        match node.on_error {
            None => node.run(event).await,
            // Boxed: the common path's future stays as small as before handlers existed.
            Some(h) => Box::pin(self.run_guarded(node, h, event)).await,
        }
    }

    /// [`Graph::run_node`] for a step with an error handler: kept apart so that steps without
    /// one do not carry the bigger future (a clone of the input and the handler's run).
    async fn run_guarded(&self, node: &GraphNode, h: usize, event: Event) -> Result<Event> {
        let input = event.clone();
        match node.run(event).await {
            Ok(out) => Ok(out),
            Err(err) => {
                let handler = &self.handlers[h];
                tracing::debug!(step = %node.name, handler = %handler.name, error = %err, "step failed; running its error handler");
                let mut event = input;
                event.notes.insert(
                    "error".into(),
                    serde_json::json!({"step": node.name, "message": err.message}),
                );
                handler.run(event).await
            }
        }
    }

    /// Runs a DAG: each step starts when all its inputs are done; independent branches run
    /// concurrently; the first failure fails the request and cancels what is still running.
    async fn run_dag(&self, event: Event) -> Result<Event> {
        type Running<'a> = Pin<Box<dyn Future<Output = (usize, Result<Event>)> + Send + 'a>>;
        let n = self.nodes.len();
        let mut waiting: Vec<usize> = self.nodes.iter().map(|n| n.preds.len()).collect();
        let mut uses: Vec<usize> = self.nodes.iter().map(|n| n.succs.len()).collect();
        uses[self.responder] += 1;
        let mut outputs: Vec<Option<Event>> = (0..n).map(|_| None).collect();
        let mut running: FuturesUnordered<Running<'_>> = FuturesUnordered::new();
        let start = |i: usize, ev: Event| -> Running<'_> {
            let node = &self.nodes[i];
            Box::pin(async move { (i, self.run_node(node, ev).await) })
        };
        let (last, rest) = self.entries.split_last().expect("a graph has an entry");
        for &i in rest {
            running.push(start(i, event.clone()));
        }
        running.push(start(*last, event));

        while let Some((i, result)) = running.next().await {
            outputs[i] = Some(result?);
            for &s in &self.nodes[i].succs {
                waiting[s] -= 1;
                if waiting[s] == 0 {
                    let input = self.join_inputs(s, &mut outputs, &mut uses);
                    running.push(start(s, input));
                }
            }
        }
        outputs[self.responder]
            .take()
            .ok_or_else(|| Error::internal("the responder step did not run"))
    }

    /// The event a step with several inputs receives: the first input's event, with the
    /// tensors of the others added in `after` order (a later one replaces a same-named one).
    fn join_inputs(&self, s: usize, outputs: &mut [Option<Event>], uses: &mut [usize]) -> Event {
        let mut take = |p: usize| -> Event {
            uses[p] -= 1;
            if uses[p] == 0 {
                outputs[p].take().expect("a finished step has an output")
            } else {
                outputs[p].clone().expect("a finished step has an output")
            }
        };
        let preds = &self.nodes[s].preds;
        let mut event = take(preds[0]);
        for &p in &preds[1..] {
            let other = take(p).into_data();
            for t in other.tensors {
                event.put(t);
            }
            for r in other.routes {
                if !event.routes.contains(&r) {
                    event.routes.push(r);
                }
            }
            event.parameters.extend(other.parameters);
            event.notes.extend(other.notes);
            event.model_time = event.model_time.max(other.model_time);
            if let (Some(mine), Some(theirs)) = (&mut event.step_microsec, other.step_microsec) {
                for t in theirs {
                    if !mine.contains(&t) {
                        mine.push(t);
                    }
                }
            }
        }
        event
    }
}

fn load_error(e: marked_yaml::LoadError) -> Diagnostic {
    use marked_yaml::LoadError as L;
    let at = |m: &marked_yaml::Marker| Location {
        line: m.line(),
        column: m.column(),
    };
    let (message, location) = match &e {
        L::TopLevelMustBeMapping(m) => ("the graph file must be a YAML mapping".to_owned(), at(m)),
        L::TopLevelMustBeSequence(m) => ("unexpected top-level sequence".to_owned(), at(m)),
        L::UnexpectedAnchor(m) => ("YAML anchors are not supported here".to_owned(), at(m)),
        L::MappingKeyMustBeScalar(m) => ("mapping keys must be plain names".to_owned(), at(m)),
        L::UnexpectedTag(m) => ("YAML tags are not supported here".to_owned(), at(m)),
        L::ScanError(m, err) => (format!("invalid YAML: {}", err.info()), at(m)),
        L::DuplicateKey(inner) => {
            let first = inner.prev_key.span().start().map(at);
            let here = inner
                .key
                .span()
                .start()
                .map(at)
                .unwrap_or(Location { line: 0, column: 0 });
            let mut d = Diagnostic::new(format!("duplicate key `{}`", inner.key.as_str()));
            d.location = Some(here);
            if let Some(f) = first {
                d.help = Some(format!(
                    "first defined at line {}, column {}",
                    f.line, f.column
                ));
            }
            return d;
        }
    };
    let mut d = Diagnostic::new(message);
    d.location = Some(location);
    d
}

/// Names address models in URLs: letters, digits, `-`, `_`, `.`; a route may add `:version`.
fn check_name(ctx: &mut BuildContext, name: &str, span: &Span) {
    let (base, version) = match name.split_once(':') {
        Some((b, v)) => (b, Some(v)),
        None => (name, None),
    };
    let ok = |s: &str| {
        !s.is_empty()
            && s.chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
    };
    if !ok(base) || version.is_some_and(|v| !ok(v)) {
        ctx.report(
            Diagnostic::new(format!("invalid name `{name}`"))
                .at(span)
                .help("use letters, digits, `-`, `_` and `.`, optionally `name:version`"),
        );
    }
}

/// Reads the `graph:` node into declared steps, building each one.
fn declare_steps(ctx: &mut BuildContext, graph_name: &str, graph: &Node) -> Vec<Declared> {
    let Some(map) = graph.as_mapping() else {
        ctx.report(Diagnostic::new("`graph` must be a mapping with a `kind`").at(graph.span()));
        return Vec::new();
    };
    const KINDS: [&str; 2] = ["flow", "router"];
    match map.get_scalar("kind").map(|k| k.as_str()) {
        Some("flow") => {
            for key in map.keys() {
                if !matches!(key.as_str(), "kind" | "steps") {
                    ctx.report(
                        Diagnostic::new(format!(
                            "unknown field `{}` for a flow graph",
                            key.as_str()
                        ))
                        .at(key.span())
                        .help("expected `kind` or `steps`"),
                    );
                }
            }
            let Some(steps) = map.get_node("steps") else {
                ctx.report(Diagnostic::new("a flow graph needs `steps`").at(map.span()));
                return Vec::new();
            };
            let Some(steps) = steps.as_mapping() else {
                ctx.report(
                    Diagnostic::new("`steps` must be a mapping of step name to step")
                        .at(steps.span()),
                );
                return Vec::new();
            };
            if steps.is_empty() {
                ctx.report(
                    Diagnostic::new("a flow graph needs at least one step").at(steps.span()),
                );
            }
            steps
                .iter()
                .map(|(key, value)| declare_flow_step(ctx, key, value))
                .collect()
        }
        Some("router") => {
            // The short form: the graph is one router step named after the graph.
            ctx.claim_name(graph_name, map.span());
            let mut body = map.clone();
            body.remove(&MarkedScalarNode::new(Span::new_blank(), "kind"));
            let node = StepNode {
                name: graph_name.to_owned(),
                kind: "router".to_owned(),
                span: *map.span(),
                body,
            };
            let step = ctx.build_node(&node);
            vec![Declared {
                name: graph_name.to_owned(),
                span: *map.span(),
                after: Vec::new(),
                responder: true,
                timeout: None,
                on_error: None,
                step,
            }]
        }
        other => {
            let span = map
                .get_node("kind")
                .map(|k| *k.span())
                .unwrap_or(*map.span());
            let (message, help) = match other {
                Some(k) => (
                    format!("unknown graph kind `{k}`"),
                    crate::fields::suggest(k, &KINDS),
                ),
                None => (
                    "missing field `kind` in `graph`".to_owned(),
                    format!("expected one of {}", one_of(&KINDS)),
                ),
            };
            ctx.report(Diagnostic::new(message).at(&span).help(help));
            Vec::new()
        }
    }
}

fn declare_flow_step(ctx: &mut BuildContext, key: &MarkedScalarNode, value: &Node) -> Declared {
    let name = key.as_str().to_owned();
    check_name(ctx, &name, key.span());
    let mut fields = FlowFields::default();
    let mut after = Vec::new();
    if let Some(map) = value.as_mapping() {
        // Only the engine's fields; the kind's factory checks the rest.
        let mut own = marked_yaml::types::MarkedMappingNode::new_empty(*map.span());
        for (k, v) in map.iter() {
            if matches!(k.as_str(), "responder" | "timeout_ms" | "on_error") {
                own.insert(k.clone(), v.clone());
            }
        }
        match from_yaml::<FlowFields>(&Node::Mapping(own), key.span(), "a step", &[]) {
            Ok(f) => fields = f,
            Err(problems) => {
                for d in problems {
                    ctx.report(d.step(&name));
                }
            }
        }
        // `after: a` or `after: [a, b]`.
        match map.get_node("after") {
            None => {}
            Some(Node::Scalar(a)) => after.push((a.as_str().to_owned(), *a.span())),
            Some(Node::Sequence(list)) if list.iter().all(|a| a.as_scalar().is_some()) => {
                after.extend(
                    list.iter()
                        .filter_map(Node::as_scalar)
                        .map(|a| (a.as_str().to_owned(), *a.span())),
                );
            }
            Some(other) => ctx.error(
                &name,
                other.span(),
                "`after` must be a step name or a list of step names",
            ),
        }
    }
    if fields.timeout_ms == Some(0) {
        ctx.error(&name, key.span(), "`timeout_ms` must be at least 1");
    }
    let step = ctx
        .step_node(key, value, true)
        .and_then(|node| ctx.build_node(&node));
    Declared {
        name,
        span: *key.span(),
        after,
        responder: fields.responder,
        timeout: fields
            .timeout_ms
            .filter(|&t| t > 0)
            .map(Duration::from_millis),
        on_error: fields.on_error.map(|h| (String::clone(&h), *h.span())),
        step,
    }
}

/// Separates the error handlers (the steps some `on_error`, a step's or the graph's, names)
/// from the flow, checking that every `on_error` names a step and that handlers stand apart:
/// no `after`, no `responder`, no `on_error` of their own, and no step comes after one. Each
/// flow step's `on_error` is resolved, the graph's default filling in.
fn split_handlers(
    ctx: &mut BuildContext,
    default: Option<(String, Span)>,
    declared: Vec<Declared>,
) -> (Vec<Declared>, Vec<Declared>) {
    let names: Vec<String> = declared.iter().map(|d| d.name.clone()).collect();
    let mut wanted: Vec<&str> = declared
        .iter()
        .filter_map(|d| d.on_error.as_ref().map(|(h, _)| h.as_str()))
        .collect();
    if let Some((h, _)) = &default {
        wanted.push(h);
    }
    let is_handler: Vec<bool> = names.iter().map(|n| wanted.contains(&n.as_str())).collect();
    let check = |ctx: &mut BuildContext, step: Option<&str>, (h, span): &(String, Span)| {
        if !names.contains(h) {
            let known: Vec<&str> = names.iter().map(String::as_str).collect();
            let mut d = Diagnostic::new(format!("`on_error: {h}` names no step of this flow"))
                .at(span)
                .help(crate::fields::with_guess(
                    h,
                    &known,
                    format!("steps are {}", all_of(&names)),
                ));
            if let Some(s) = step {
                d = d.step(s);
            }
            ctx.report(d);
        } else if step == Some(h.as_str()) {
            ctx.error(h, span, "a step cannot be its own error handler");
        }
    };
    if let Some(d) = &default {
        check(ctx, None, d);
    }
    for (i, d) in declared.iter().enumerate() {
        if let Some(h) = &d.on_error {
            check(ctx, Some(&d.name), h);
        }
        if is_handler[i] {
            let why = "error handlers run only when a step fails";
            if let Some((_, span)) = d.after.first() {
                ctx.error(
                    &d.name,
                    span,
                    format!("an error handler cannot have `after`: {why}"),
                );
            }
            if d.responder {
                ctx.error(
                    &d.name,
                    &d.span,
                    format!("an error handler cannot be the responder: {why}"),
                );
            }
            if let Some((_, span)) = &d.on_error {
                ctx.error(
                    &d.name,
                    span,
                    "an error handler cannot have an `on_error` of its own",
                );
            }
        }
        for (pred, span) in &d.after {
            if let Some(p) = names.iter().position(|n| n == pred)
                && is_handler[p]
            {
                ctx.error(
                    &d.name,
                    span,
                    format!("`after: {pred}` names an error handler; error handlers run only when a step fails"),
                );
            }
        }
    }
    let mut flow = Vec::new();
    let mut handlers = Vec::new();
    for (mut d, handler) in declared.into_iter().zip(is_handler) {
        if handler {
            handlers.push(d);
        } else {
            if d.on_error.is_none() {
                d.on_error = default.clone();
            }
            flow.push(d);
        }
    }
    if flow.is_empty() {
        ctx.report(Diagnostic::new(
            "every step of this flow is an error handler: nothing would run",
        ));
    }
    (flow, handlers)
}

/// Joins declared steps into a DAG, checks it, and (when models are loaded) checks the tensors
/// along every edge.
fn compile(
    ctx: &mut BuildContext,
    spec: GraphFileSpec,
    declared: Vec<Declared>,
    default_on_error: Option<(String, Span)>,
) -> Option<Graph> {
    if declared.is_empty() {
        return None;
    }
    let (declared, handlers) = split_handlers(ctx, default_on_error, declared);
    if declared.is_empty() {
        return None;
    }
    let handler_index: HashMap<String, usize> = handlers
        .iter()
        .enumerate()
        .map(|(i, d)| (d.name.clone(), i))
        .collect();
    let index: HashMap<String, usize> = declared
        .iter()
        .enumerate()
        .map(|(i, d)| (d.name.clone(), i))
        .collect();
    let errors_before_edges = ctx.error_count();
    let mut dag: DiGraph<usize, ()> = DiGraph::new();
    let ids: Vec<_> = (0..declared.len()).map(|i| dag.add_node(i)).collect();
    for (i, d) in declared.iter().enumerate() {
        for (pred, span) in &d.after {
            match index.get(pred.as_str()) {
                Some(&p) if p == i => ctx.error(&d.name, span, "a step cannot come after itself"),
                Some(&p) => {
                    dag.add_edge(ids[p], ids[i], ());
                }
                None => {
                    let names: Vec<&str> = declared.iter().map(|d| d.name.as_str()).collect();
                    ctx.report(
                        Diagnostic::new(format!("`after: {pred}` names no step of this flow"))
                            .step(&d.name)
                            .at(span)
                            .help(crate::fields::with_guess(
                                pred,
                                &names,
                                format!("steps are {}", all_of(&names)),
                            )),
                    );
                }
            }
        }
    }
    for scc in tarjan_scc(&dag) {
        if scc.len() > 1 {
            let mut members: Vec<usize> = scc.iter().map(|&n| dag[n]).collect();
            members.sort();
            let names: Vec<&str> = members.iter().map(|&i| declared[i].name.as_str()).collect();
            let first = &declared[members[0]];
            ctx.report(
                Diagnostic::new(format!("cycle between steps {}", all_of(&names)))
                    .step(&first.name)
                    .at(&first.span)
                    .help("`after` must form a DAG: remove one of these edges"),
            );
        }
    }
    // The responder: the one marked, or the only step nothing comes after. Which steps are
    // last depends on the edges, so "no responder" waits for edges without errors.
    let edges_ok = ctx.error_count() == errors_before_edges;
    let marked: Vec<usize> = (0..declared.len())
        .filter(|&i| declared[i].responder)
        .collect();
    let leaves: Vec<usize> = (0..declared.len())
        .filter(|&i| dag.neighbors(ids[i]).next().is_none())
        .collect();
    let responder = match (marked.as_slice(), leaves.as_slice()) {
        ([one], _) => Some(*one),
        ([], [one]) => Some(*one),
        // No leaf (every step is on a cycle) or broken edges: already reported.
        ([], _) if !edges_ok => None,
        ([], []) => None,
        ([], many) => {
            let names: Vec<&str> = many.iter().map(|&i| declared[i].name.as_str()).collect();
            ctx.report(
                Diagnostic::new("no responder: the flow has several last steps and none is marked")
                    .at(&declared[many[0]].span)
                    .help(format!(
                        "mark one of {} with `responder: true`",
                        one_of(&names)
                    )),
            );
            None
        }
        (several, _) => {
            let names: Vec<&str> = several.iter().map(|&i| declared[i].name.as_str()).collect();
            ctx.report(
                Diagnostic::new(format!("more than one responder: {}", all_of(&names)))
                    .at(&declared[several[1]].span)
                    .help("exactly one step answers the request"),
            );
            None
        }
    };

    if ctx.has_errors() {
        return None;
    }
    let order = petgraph::algo::toposort(&dag, None).ok()?;
    let position: HashMap<usize, usize> = order
        .iter()
        .enumerate()
        .map(|(pos, &n)| (dag[n], pos))
        .collect();

    let responder = responder?;

    // Tensors along every edge, in topological order.
    let spans: Vec<Span> = order.iter().map(|&n| declared[dag[n]].span).collect();
    let mut nodes: Vec<GraphNode> = Vec::with_capacity(order.len());
    let mut slots: Vec<Option<Declared>> = declared.into_iter().map(Some).collect();
    for &n in &order {
        let i = dag[n];
        let d = slots[i].take().expect("each step once");
        let preds: Vec<usize> = d
            .after
            .iter()
            .filter_map(|(p, _)| index.get(p.as_str()).map(|&p| position[&p]))
            .collect();
        let mut succs: Vec<usize> = dag.neighbors(ids[i]).map(|s| position[&dag[s]]).collect();
        succs.sort();
        nodes.push(GraphNode {
            on_error: d
                .on_error
                .as_ref()
                .and_then(|(h, _)| handler_index.get(h).copied()),
            preds,
            succs,
            ..GraphNode::new(&spec.name, d.name, d.step?, d.timeout)
        });
    }
    let handlers: Vec<GraphNode> = handlers
        .into_iter()
        .map(|h| Some(GraphNode::new(&spec.name, h.name, h.step?, h.timeout)))
        .collect::<Option<_>>()?;
    let responder = position[&responder];
    let signatures = infer_signatures(ctx, &nodes, &handlers, &spans);

    let entries: Vec<usize> = (0..nodes.len())
        .filter(|&i| nodes[i].preds.is_empty())
        .collect();
    let chain = entries == [0]
        && responder == nodes.len() - 1
        && nodes
            .iter()
            .enumerate()
            .all(|(i, n)| n.succs.len() <= 1 && (i == 0 || n.preds == [i - 1]));

    // A queue step splits the flow: the part after it is resumed by position, so the flow
    // must be a straight chain.
    if !chain && let Some((i, n)) = nodes.iter().enumerate().find(|(_, n)| n.step.hands_off()) {
        ctx.report(
            Diagnostic::new("a queue step must be in a flow that is a straight chain of steps")
                .step(&n.name)
                .at(&spans[i])
                .help("join branches before the queue, or after it in another graph"),
        );
    }
    fn collect_headers(step: &dyn Step, out: &mut Vec<String>) {
        for h in step.headers() {
            let h = h.to_ascii_lowercase();
            if !out.contains(&h) {
                out.push(h);
            }
        }
        for (_, child) in step.children() {
            collect_headers(child, out);
        }
    }
    let mut headers = Vec::new();
    for n in &nodes {
        collect_headers(n.step.as_ref(), &mut headers);
    }
    let mut models = vec![ModelInfo {
        name: spec.name.clone(),
        version: None,
        platform: if nodes.len() == 1 {
            nodes[0].step.platform().to_owned()
        } else {
            "servegraph_flow".to_owned()
        },
        inputs: entry_inputs(&nodes),
        outputs: signatures[responder].tensors.clone(),
    }];
    for node in &nodes {
        models.extend(node.step.models());
    }
    Some(Graph {
        name: spec.name,
        nodes,
        handlers,
        entries,
        responder,
        chain,
        deadline: Duration::from_millis(spec.timeout_ms.max(1)),
        max_in_flight: spec.max_in_flight.max(1),
        admission: tokio::sync::Semaphore::new(spec.max_in_flight.max(1)),
        max_tensor_elements: spec.max_tensor_elements,
        models,
        tracking: None,
        kafka: spec.sources.and_then(|s| s.kafka),
        telemetry: spec.telemetry,
        headers,
        learners: Vec::new(),
    })
}

/// Propagates what is known about tensors from the entry steps to the responder, reporting
/// every step that would be fed tensors it cannot take.
fn infer_signatures(
    ctx: &mut BuildContext,
    nodes: &[GraphNode],
    handlers: &[GraphNode],
    spans: &[Span],
) -> Vec<Signature> {
    let mut out: Vec<Signature> = Vec::with_capacity(nodes.len());
    for (i, node) in nodes.iter().enumerate() {
        let input = if node.preds.is_empty() {
            Signature::open()
        } else if let [p] = node.preds[..] {
            out[p].clone()
        } else {
            let mut sig = Signature::exact(Vec::new());
            for &p in &node.preds {
                let s: &Signature = &out[p];
                sig.open |= s.open;
                for t in &s.tensors {
                    sig.put(t.clone());
                }
            }
            sig
        };
        // With an error handler, what follows gets either answer: what both certainly give.
        let fallback = node.on_error.map(|h| {
            handlers[h].step.infer(&input).map_err(|e| {
                format!(
                    "its error handler `{}` cannot take what it is fed: {e}",
                    handlers[h].name
                )
            })
        });
        let own = match fallback {
            Some(Err(e)) => Err(e),
            Some(Ok(alt)) => node.step.infer(&input).map(|sig| sig.intersect(alt)),
            None => node.step.infer(&input),
        };
        let sig = match own {
            Ok(sig) => sig,
            Err(message) => {
                let from: Vec<&str> = node.preds.iter().map(|&p| nodes[p].name.as_str()).collect();
                let mut d = Diagnostic::new(message).step(&node.name).at(&spans[i]);
                if !from.is_empty() {
                    d = d.help(format!("{} feeds it: {}", one_of(&from), input.describe()));
                }
                ctx.report(d);
                Signature::open()
            }
        };
        out.push(sig);
    }
    out
}

/// The inputs a client should send: those of the first step, along the first path, that
/// declares them (normally the first model).
fn entry_inputs(nodes: &[GraphNode]) -> Vec<TensorMeta> {
    let mut i = 0;
    loop {
        if let Some(inputs) = nodes[i].step.inputs() {
            return inputs;
        }
        match nodes[i].succs.first() {
            Some(&s) => i = s,
            None => return Vec::new(),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use async_trait::async_trait;
    use tokio::sync::Barrier;

    use super::*;
    use crate::error::ErrorKind;
    use crate::step::StepNode;
    use crate::tensor::{Tensor, TensorData};

    /// Test steps: `tag` adds a tensor named after the step; `sleep` sleeps for `ms`;
    /// `meet` waits until two `meet` steps are running at once; `fail` fails.
    struct Tag(String);
    struct Sleep(u64);
    struct Meet(Arc<Barrier>);
    struct Fail;

    #[async_trait]
    impl Step for Tag {
        async fn process(&self, mut e: Event) -> Result<Event> {
            let n = e.tensors.len() as i64;
            e.put(Tensor::new(&self.0, vec![1], TensorData::Int64(vec![n]))?);
            Ok(e)
        }
    }
    #[async_trait]
    impl Step for Sleep {
        async fn process(&self, e: Event) -> Result<Event> {
            tokio::time::sleep(Duration::from_millis(self.0)).await;
            Ok(e)
        }
    }
    #[async_trait]
    impl Step for Meet {
        async fn process(&self, e: Event) -> Result<Event> {
            self.0.wait().await;
            Ok(e)
        }
    }
    #[async_trait]
    impl Step for Fail {
        async fn process(&self, _e: Event) -> Result<Event> {
            Err(Error::unprocessable("no"))
        }
    }

    fn registry() -> Registry {
        let barrier = Arc::new(Barrier::new(2));
        let mut r = Registry::new();
        r.register("tag", |n: &StepNode, _: &mut BuildContext| {
            Some(Box::new(Tag(n.name.clone())) as Box<dyn Step>)
        });
        r.register("sleep", |n: &StepNode, _: &mut BuildContext| {
            let ms = n
                .body
                .get_scalar("ms")
                .and_then(|s| s.as_str().parse().ok())
                .unwrap_or(0);
            Some(Box::new(Sleep(ms)) as Box<dyn Step>)
        });
        r.register("meet", move |_: &StepNode, _: &mut BuildContext| {
            Some(Box::new(Meet(Arc::clone(&barrier))) as Box<dyn Step>)
        });
        r.register("fail", |_: &StepNode, _: &mut BuildContext| {
            Some(Box::new(Fail) as Box<dyn Step>)
        });
        r
    }

    fn graph(steps: &str) -> Graph {
        let yaml = format!("name: g\ntimeout_ms: 2000\ngraph:\n  kind: flow\n  steps:\n{steps}");
        Graph::from_yaml(&yaml, Path::new("."), &registry(), BuildMode::Load)
            .unwrap_or_else(|d| panic!("{d:#?}"))
    }

    #[tokio::test]
    async fn chain_runs_in_order() {
        let g = graph(
            "    a: {kind: tag}\n    b: {kind: tag, after: a}\n    c: {kind: tag, after: b}\n",
        );
        assert!(g.chain);
        let out = g.run(Event::new("x", vec![])).await.unwrap();
        let names: Vec<&str> = out.tensors.iter().map(|t| t.name.as_str()).collect();
        assert_eq!(names, ["a", "b", "c"]);
        assert_eq!(out.get("c").unwrap().data, TensorData::Int64(vec![2]));
    }

    #[tokio::test]
    async fn branches_run_concurrently_and_join() {
        // `left` and `right` only finish if both run at the same time.
        let g = graph(
            "    start: {kind: tag}\n    left: {kind: meet, after: start}\n    right: {kind: meet, after: start}\n    l: {kind: tag, after: left}\n    r: {kind: tag, after: right}\n    join: {kind: tag, after: [l, r]}\n",
        );
        assert!(!g.chain);
        let out = g.run(Event::new("x", vec![])).await.unwrap();
        let names: Vec<&str> = out.tensors.iter().map(|t| t.name.as_str()).collect();
        assert_eq!(names, ["start", "l", "r", "join"]);
    }

    #[tokio::test]
    async fn step_timeout_names_the_step() {
        let g = graph(
            "    a: {kind: tag}\n    slow: {kind: sleep, ms: 5000, after: a, timeout_ms: 20}\n",
        );
        let err = g.run(Event::new("x", vec![])).await.unwrap_err();
        assert_eq!(err.kind, ErrorKind::Timeout);
        assert_eq!(
            err.to_string(),
            "step `slow`: took longer than its timeout_ms of 20"
        );
    }

    #[tokio::test]
    async fn graph_deadline_applies_to_the_whole_request() {
        let yaml =
            "name: g\ntimeout_ms: 30\ngraph: {kind: flow, steps: {s: {kind: sleep, ms: 5000}}}\n";
        let g = Graph::from_yaml(yaml, Path::new("."), &registry(), BuildMode::Load).unwrap();
        let err = g.run(Event::new("x", vec![])).await.unwrap_err();
        assert_eq!(err.kind, ErrorKind::Timeout);
        assert!(err.message.contains("graph's timeout_ms of 30"), "{err}");
    }

    #[tokio::test]
    async fn first_failure_fails_the_request_and_cancels_the_rest() {
        let g = graph(
            "    a: {kind: tag}\n    bad: {kind: fail, after: a}\n    slow: {kind: sleep, ms: 5000, after: a}\n    j: {kind: tag, after: [bad, slow]}\n",
        );
        let t0 = std::time::Instant::now();
        let err = g.run(Event::new("x", vec![])).await.unwrap_err();
        assert_eq!(err.to_string(), "step `bad`: no");
        assert!(
            t0.elapsed() < Duration::from_secs(4),
            "the slow branch was awaited"
        );
    }

    #[tokio::test]
    async fn explicit_responder_answers() {
        let g = graph("    a: {kind: tag, responder: true}\n    side: {kind: tag, after: a}\n");
        let out = g.run(Event::new("x", vec![])).await.unwrap();
        assert!(out.get("side").is_none());
        assert!(out.get("a").is_some());
    }

    #[test]
    fn every_problem_is_reported_at_once() {
        let yaml = "name: bad name\nmax_in_flight: 0\ngraph:\n  kind: flow\n  steps:\n    a: {kind: nope}\n    b: {kind: tag, after: zz, timeout_ms: 0}\n    c: {kind: tag, responder: true}\n    d: {kind: tag, responder: true}\n";
        let d = Graph::from_yaml(yaml, Path::new("."), &registry(), BuildMode::Load)
            .err()
            .unwrap();
        let text: Vec<String> = d.iter().map(|d| d.one_line("g")).collect();
        let want = [
            "g:1:7: invalid name `bad name`",
            "g:2:16: `max_in_flight` must be at least 1",
            "g:6:15: step `a`: unknown kind `nope` (expected one of `fail`, `meet`, `sleep` or `tag`)",
            "g:7:43: step `b`: `timeout_ms` must be an integer ≥ 1, found the number 0",
            "g:7:27: step `b`: `after: zz` names no step of this flow (steps are `a`, `b`, `c` and `d`)",
            "g:9:5: more than one responder: `c` and `d`",
        ];
        for w in want {
            assert!(
                text.iter().any(|t| t.starts_with(w)),
                "missing {w:?} in {text:#?}"
            );
        }
    }
}
