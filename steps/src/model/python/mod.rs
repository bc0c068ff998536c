//! `class: python`: a model (or a step) written in Python, run by worker processes.
//!
//! ```yaml
//! iris-py:
//!   kind: model
//!   class: python
//!   path: ../models/iris_model.py   # or `module: pkg.mod` with `python_path: [dirs]`
//!   class_name: IrisModel           # or `function: predict`
//!   workers: 2
//! ```
//!
//! Each worker is a fresh process (`python -m servegraph._worker`, spawned, never forked) with
//! its own interpreter and GIL, so workers run in parallel and a crash takes down only its
//! own calls. The engine talks to it over the child's stdin/stdout in binary frames
//! (`frame`): tensors travel as raw bytes and arrive in Python as read-only NumPy arrays.
//! One OS thread per worker starts and supervises the process; once it has loaded, a tokio
//! task serves it on non-blocking pipes: it takes jobs from the model's bounded queue
//! (batching them with the shared batcher when `batch` is set), writes a frame, and awaits
//! the answer, so a call wakes nothing but the worker and the reactor. A watchdog kills a
//! worker stuck on one call past `hang_kill_ms`; a worker that exits fails its calls at once
//! with 503 and is started again with backoff.
//!
//! One file per job: `spec` (the YAML), `frame` (the wire format), `runtime` (the Python
//! package the workers import), `shm` (shared memory), `worker/` (a worker: its process,
//! thread, serving task and watchdog), `error` (what goes wrong starting or reading a worker).

mod error;
mod frame;
mod runtime;
mod settings;
mod shm;
mod spec;
mod worker;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use servegraph_engine::{
    BodyProtocol, BuildContext, BuildMode, Error, Event, JsonBody, Model, Platform, Result,
    Signature, Step, StepNode, TensorMeta, async_trait,
};
use tokio::sync::mpsc::{Sender, error::TrySendError};

pub use spec::{Api, LoadMode, PythonSpec, PythonStepSpec, SeldonRole, TaskSpec};

use self::error::WorkerError;
use self::worker::{Worker, WorkerConfig};
use crate::model::batch::{Batching, Call, Job, Waiting};

/// A Python model: its queue and its workers.
pub struct PythonModel {
    name: String,
    queue: Sender<Job>,
    /// The tensors the graph declares, if it does.
    inputs: Option<Vec<TensorMeta>>,
    outputs: Option<Vec<TensorMeta>>,
    /// What the class says of its tensors (`init_metadata()`, `metadata()`), once loaded: the
    /// tensors the graph does not declare.
    said: Arc<std::sync::OnceLock<Said>>,
    /// When its workers were started (readiness says how long they have been loading).
    started: std::time::Instant,
    /// Workers loaded and serving now.
    loaded: Arc<AtomicUsize>,
    /// What the class says of its health, when it reports it.
    health: Arc<worker::Health>,
    /// A `kind: python` step: the function's tensors are put into the event and the others
    /// pass on (a model's outputs replace its inputs instead).
    pass_through: bool,
    /// A `kind: task` step (MLRun's): it works on the event's body, made from the tensors
    /// (MLRun's rows) when the request came without one.
    body_step: bool,
    /// `api: kserve`: its class is KServe's before it has loaded (the request path copies
    /// every header for it: [`Step::headers`]).
    kserve: bool,
    /// `api: mlserver` (or `model_settings:`): its class is MLServer's before it has loaded.
    mlserver: bool,
    workers: Vec<Worker>,
    batching: Option<Batching>,
    /// `max_batch_size`: the first dimension is a batch of at most this many rows.
    max_batch_size: Option<usize>,
    /// Requests queued or gathered for a batch (not yet written to a worker), within
    /// `queue_size`.
    waiting: Waiting,
    /// The ids of the requests it served lately, when its class takes Seldon's feedback:
    /// feedback for one of them reaches `send_feedback` (as Seldon's executor sends it to
    /// the components a request went through).
    served: std::sync::Mutex<std::collections::VecDeque<String>>,
}

/// How many request ids a class that takes feedback remembers.
const SERVED_IDS: usize = 10_000;

/// The input and output tensors a class says it has.
type Said = (Option<Vec<TensorMeta>>, Option<Vec<TensorMeta>>);

/// A model's first loads, begun by [`PythonModel::start`]: waited for with the other models'.
pub struct Loading {
    name: String,
    workers: Vec<worker::Started>,
    health: Arc<worker::Health>,
    said: Arc<std::sync::OnceLock<Said>>,
    /// The load, as readiness and the log name it, until it is done.
    load: servegraph_engine::loading::Load,
}

impl Loading {
    /// Waits until every worker has loaded the model (or one failed: the error is the first
    /// one's, with the Python traceback; the model, let go, stops the others).
    pub fn wait(self) -> std::result::Result<(), WorkerError> {
        let began = std::time::Instant::now();
        for started in &self.workers {
            started.recv().map_err(|_| WorkerError::ThreadEnded)??;
        }
        // What the graph does not declare, the class may say, once loaded.
        let said = self.health.metadata.lock().expect("not poisoned").clone();
        let said = |field: &str| -> Option<Vec<TensorMeta>> {
            serde_json::from_value(said.as_ref()?.get(field)?.clone()).ok()
        };
        let _ = self.said.set((said("inputs"), said("outputs")));
        tracing::info!(
            model = %self.name,
            workers = self.workers.len(),
            ms = began.elapsed().as_millis() as u64,
            "loaded Python model"
        );
        drop(self.load);
        Ok(())
    }
}

impl PythonModel {
    /// Starts the workers without waiting for them: the model, and (`load_mode: sync`) its
    /// first loads to wait for ([`Loading::wait`]); with `load_mode: async` they load in the
    /// background and readiness says so meanwhile.
    pub fn start(
        name: &str,
        config: WorkerConfig,
        spec: &PythonSpec,
    ) -> std::result::Result<(PythonModel, Option<Loading>), WorkerError> {
        // Room for `queue_size` requests (`waiting` counts them) and the health probe's.
        let (tx, rx) = tokio::sync::mpsc::channel(spec.queue_size.max(1) + 1);
        let queue = Arc::new(tokio::sync::Mutex::new(rx));
        let loaded = Arc::new(AtomicUsize::new(0));
        let batching = spec.batch.map(|b| Batching {
            max_size: b.max_size,
            max_wait: Duration::from_micros(b.max_wait_us),
        });
        let health = Arc::clone(&config.health);
        let config = Arc::new(config);
        let sync = spec.load_mode == LoadMode::Sync;
        let load = servegraph_engine::loading::begin(name);
        let mut workers = Vec::with_capacity(spec.workers);
        let mut started = Vec::with_capacity(spec.workers);
        for index in 0..spec.workers {
            let (worker, first) = Worker::start(
                index,
                Arc::clone(&config),
                Arc::clone(&queue),
                batching,
                Arc::clone(&loaded),
                sync,
            )?;
            workers.push(worker);
            started.push(first);
        }
        spawn_health_probe(
            name,
            tx.downgrade(),
            Arc::clone(&health),
            Duration::from_millis(spec.health_interval_ms),
        );
        let said = Arc::new(std::sync::OnceLock::new());
        let loading = if sync {
            tracing::info!(model = name, workers = spec.workers, "loading Python model");
            Some(Loading {
                name: name.to_owned(),
                workers: started,
                health: Arc::clone(&health),
                said: Arc::clone(&said),
                load,
            })
        } else {
            tracing::info!(
                model = name,
                workers = spec.workers,
                "loading Python model in the background"
            );
            None
        };
        Ok((
            PythonModel {
                name: name.to_owned(),
                queue: tx,
                inputs: spec.inputs.clone(),
                outputs: spec.outputs.clone(),
                said,
                started: std::time::Instant::now(),
                loaded,
                health,
                pass_through: false,
                body_step: false,
                kserve: spec.api == Api::Kserve,
                mlserver: spec.api == Api::Mlserver,
                workers,
                batching,
                max_batch_size: spec.max_batch_size,
                waiting: Waiting::new(spec.queue_size),
                served: Default::default(),
            },
            loading,
        ))
    }

    /// The input tensors: the graph's, else what the class said.
    fn input_meta(&self) -> Option<&Vec<TensorMeta>> {
        self.inputs
            .as_ref()
            .or_else(|| self.said.get().and_then(|s| s.0.as_ref()))
    }

    /// The output tensors: the graph's, else what the class said.
    fn output_meta(&self) -> Option<&Vec<TensorMeta>> {
        self.outputs
            .as_ref()
            .or_else(|| self.said.get().and_then(|s| s.1.as_ref()))
    }

    /// Workers loaded and serving now.
    pub fn loaded_workers(&self) -> usize {
        self.loaded.load(Ordering::Relaxed)
    }

    /// Queues a job and awaits its answer (503 at once when the queue is full or closed).
    async fn submit(
        &self,
        job: (
            Job,
            tokio::sync::oneshot::Receiver<crate::model::batch::Answer>,
        ),
    ) -> Result<crate::model::batch::Answer> {
        let (mut job, answer) = job;
        job.place = Some(self.waiting.enter(&self.name)?);
        match self.queue.try_send(job) {
            Ok(()) => {}
            // Never while places are counted.
            Err(TrySendError::Full(_)) => {
                return Err(Error::unavailable(format!(
                    "model `{}` is busy: its queue is full",
                    self.name
                )));
            }
            Err(TrySendError::Closed(_)) => {
                return Err(Error::unavailable(format!(
                    "model `{}` is stopping",
                    self.name
                )));
            }
        }
        answer
            .await
            .map_err(|_| Error::unavailable(format!("model `{}`: its worker went away", self.name)))
    }

    /// `POST /v2/models/{model}/{name}`: the class's `op_<name>`.
    async fn call_operation(
        &self,
        name: &str,
        body: serde_json::Value,
    ) -> Result<serde_json::Value> {
        // An operation is an `op_<name>` method: anything else (the probe's own `$health`
        // included) is not one.
        let identifier = name
            .chars()
            .next()
            .is_some_and(|c| c.is_alphabetic() || c == '_')
            && name.chars().all(|c| c.is_alphanumeric() || c == '_');
        if !identifier {
            return Err(Error::not_found(format!(
                "model `{}` has no operation `{name}`",
                self.name
            )));
        }
        if let Some(why) = self.unready() {
            return Err(Error::unavailable(format!("model `{}`: {why}", self.name)));
        }
        self.call(name, body).await
    }

    /// Calls the worker's operation `name` (a class's `op_<name>`, or one of the runtime's
    /// own) with `body`, and answers its reply.
    async fn call(&self, name: &str, body: serde_json::Value) -> Result<serde_json::Value> {
        let mut answer = self.submit(Job::operation(name, body)).await?;
        answer.result?;
        Ok(answer
            .notes
            .as_mut()
            .and_then(|n| n.remove("operation"))
            .unwrap_or_default())
    }

    /// Seldon's feedback (`{"request", "response", "reward", "truth"}`) for a request this
    /// model served (the response's `meta.puid`; any, without one): its class's
    /// `send_feedback`, answered `true`; `false` when it did not serve it or takes none.
    async fn seldon_feedback(&self, body: serde_json::Value) -> Result<serde_json::Value> {
        // Without a response naming the request (Seldon's microservice tests send none), the
        // feedback is every class's that takes it.
        let id = body.pointer("/response/meta/puid").and_then(|v| v.as_str());
        let served = match id {
            None => self.health.takes_feedback.load(Ordering::Relaxed),
            Some(id) => self
                .served
                .lock()
                .expect("not poisoned")
                .iter()
                .any(|s| s == id),
        };
        if !served {
            return Ok(false.into());
        }
        let (job, answer) = Job::operation(FEEDBACK, body);
        self.submit((job, answer)).await?.result?;
        Ok(true.into())
    }

    /// The protocol whose bodies the class takes (`None`: it takes tensors).
    fn body_protocol(&self) -> Option<BodyProtocol> {
        match self.health.bodies.load(Ordering::Relaxed) {
            worker::BODIES_MLRUN => Some(BodyProtocol::Mlrun),
            worker::BODIES_SELDON => Some(BodyProtocol::Seldon),
            worker::BODIES_KSERVE => Some(BodyProtocol::Kserve),
            _ => None,
        }
    }

    /// Whether its class is KServe's (`api: kserve`, or found so when it loaded): it is handed
    /// the request's headers.
    fn is_kserve(&self) -> bool {
        self.kserve || self.body_protocol() == Some(BodyProtocol::Kserve)
    }

    fn ever_loaded(&self) -> bool {
        self.workers.iter().any(Worker::loaded_once)
    }

    /// Whether its class reads the whole request as MLServer's does (`api: mlserver`, or
    /// found so when it loaded): its headers, inputs' parameters and the outputs named, and
    /// its calls still join batches.
    fn takes_request(&self) -> bool {
        self.mlserver || self.health.takes_request.load(Ordering::Relaxed)
    }

    /// Whether its class is handed the request's headers (KServe's, MLServer's).
    fn takes_headers(&self) -> bool {
        self.is_kserve() || self.takes_request()
    }
}

#[async_trait]
impl Step for PythonModel {
    async fn process(&self, mut event: Event) -> Result<Event> {
        // A class written for MLRun or Seldon takes the event's body (the request's, or the
        // one a step before answered with, as in MLRun's flows) instead of tensors.
        let protocol = self.body_protocol();
        let body = match &event.body {
            // A flow step takes whatever body there is (a KServe request's instances as MLRun's
            // rows, when it has them).
            Some(b) if self.body_step => Some(match b.protocol {
                BodyProtocol::Kserve => servegraph_engine::protocol::kserve::mlrun_body(&b.value)
                    .unwrap_or_else(|_| b.value.clone()),
                _ => b.value.clone(),
            }),
            Some(b) if Some(b.protocol) == protocol => Some(b.value.clone()),
            // An MLRun class reads a KServe request's instances as its rows.
            Some(b)
                if b.protocol == BodyProtocol::Kserve && protocol == Some(BodyProtocol::Mlrun) =>
            {
                Some(servegraph_engine::protocol::kserve::mlrun_body(&b.value)?)
            }
            None if self.body_step => Some(servegraph_engine::protocol::mlrun::body_of(&event)?),
            _ => None,
        };
        let inputs = match (self.input_meta(), self.pass_through, &body) {
            (_, _, Some(_)) => Vec::new(),
            (Some(declared), false, None) => {
                crate::model::take_inputs(&self.name, declared, &mut event)?
            }
            (None, false, None) => {
                if event.tensors.is_empty() && event.body.is_some() && !self.body_step {
                    let takes = match self.body_protocol() {
                        Some(p) => format!("tensors or {} bodies", p.as_str()),
                        None => "tensors (its class is not written for MLRun's, Seldon's or KServe's bodies)"
                            .to_owned(),
                    };
                    return Err(Error::bad_request(format!(
                        "model `{}` takes {takes} and this body has no tensors for it: declare the model's `inputs:` so that the body's rows become its input tensor, or send OIP tensors",
                        self.name
                    )));
                }
                std::mem::take(&mut event.tensors)
            }
            // A step keeps the event's tensors: it is sent copies.
            (Some(declared), true, None) => {
                let mut copy = Event::new("", event.tensors.clone());
                crate::model::take_inputs(&self.name, declared, &mut copy)?
            }
            (None, true, None) => event.tensors.clone(),
        };
        crate::model::check_rows(&self.name, self.max_batch_size, &inputs)?;
        if let Some(why) = self.unready() {
            return Err(Error::unavailable(format!("model `{}`: {why}", self.name)));
        }
        let parameters = (!event.parameters.is_empty()).then(|| event.parameters.clone());
        let (mut job, answer) = Job::new(inputs, parameters);
        // A KServe class gets the request's headers (and its id), as KServe hands them; an
        // MLServer class too, with the outputs the request names.
        let headers = self.takes_headers().then(|| event.headers.clone());
        let input_parameters = (headers.is_some() && !event.input_parameters.is_empty())
            .then(|| event.input_parameters.clone());
        let whole = self.takes_request();
        job.call = Call {
            id: (body.is_some() || headers.is_some()).then(|| event.id.clone()),
            error: body
                .as_ref()
                .and_then(|_| event.notes.get("error").cloned()),
            body,
            explain: event.explain,
            chunks: event.chunks.clone(),
            grpc: headers.is_some() && event.grpc,
            headers,
            input_parameters,
            requested_outputs: event
                .requested_outputs
                .clone()
                .filter(|_| whole)
                .map(serde_json::Value::from),
            joins: whole,
        };
        let answer = self.submit((job, answer)).await?;
        let result = answer.result?;
        if self.health.takes_feedback.load(Ordering::Relaxed) {
            let mut served = self.served.lock().expect("not poisoned");
            if served.len() == SERVED_IDS {
                served.pop_front();
            }
            served.push_back(event.id.clone());
        }
        let mut notes = answer.notes.unwrap_or_default();
        if notes.remove(EXPLAINED_NOTE) == Some(serde_json::Value::Bool(true)) {
            event.explained = true;
        }
        // The response's parameters the class answered with (a KServe InferResponse's), and
        // its outputs' own.
        if let Some(serde_json::Value::Object(parameters)) = notes.remove(PARAMETERS_NOTE) {
            event.notes.extend(parameters);
        }
        if let Some(serde_json::Value::Object(parameters)) = notes.remove(OUTPUT_PARAMETERS_NOTE) {
            event.output_parameters.extend(parameters);
        }
        if let Some(value) = notes.remove(BODY_NOTE) {
            // The class answered with a body: the next step's, or the answer (for a model,
            // it also stands for the tensors its outputs would have replaced).
            if !self.pass_through {
                event.tensors.clear();
            }
            event.body = Some(JsonBody {
                value,
                answered: true,
                protocol: protocol.unwrap_or(BodyProtocol::Mlrun),
            });
        }
        if self.pass_through {
            for t in result {
                event.put(t);
            }
        } else {
            event.tensors.extend(result);
        }
        event.notes.extend(notes);
        Ok(event)
    }

    fn infer(&self, input: &Signature) -> std::result::Result<Signature, String> {
        if let Some(inputs) = self.input_meta() {
            input.check_provides(inputs)?;
        }
        Ok(match (self.output_meta(), self.pass_through) {
            (Some(outputs), pass_through) => {
                let mut sig = input.clone();
                // A model takes its declared inputs out of the event; its outputs replace them.
                if let (Some(inputs), false) = (self.input_meta(), pass_through) {
                    sig.tensors
                        .retain(|t| !inputs.iter().any(|i| i.name == t.name));
                }
                for o in outputs {
                    sig.put(o.clone());
                }
                sig
            }
            // A step's undeclared outputs may replace any tensor: what passes on is unknown,
            // though still what it was where the function does not touch it.
            (None, true) => {
                let mut sig = input.clone();
                sig.open = true;
                sig.tensors.clear();
                sig.implied.clear();
                sig
            }
            (None, false) => Signature::open(),
        })
    }

    fn inputs(&self) -> Option<Vec<TensorMeta>> {
        self.input_meta().cloned()
    }

    /// A KServe class reads every request header (KServe hands `headers` to its hooks), as
    /// does an MLServer class (`payload.parameters.headers`).
    fn headers(&self) -> Vec<String> {
        if self.takes_headers() {
            vec![servegraph_engine::request::ALL_HEADERS.to_owned()]
        } else {
            Vec::new()
        }
    }

    fn model(&self) -> Option<&dyn Model> {
        Some(self)
    }
}

#[async_trait]
impl Model for PythonModel {
    fn platform(&self) -> Platform {
        Platform::Python
    }

    fn batching(&self) -> Option<(usize, std::time::Duration)> {
        self.batching.map(|b| (b.max_size, b.max_wait))
    }

    fn max_batch_size(&self) -> usize {
        self.max_batch_size
            .or(self.batching.map(|b| b.max_size))
            .unwrap_or(0)
    }

    async fn operation(
        &self,
        name: &str,
        body: serde_json::Value,
    ) -> Option<Result<serde_json::Value>> {
        match name {
            servegraph_engine::step::SELDON_FEEDBACK => {
                return Some(self.seldon_feedback(body).await);
            }
            servegraph_engine::step::SELDON_METADATA => {
                let said = self.health.metadata.lock().expect("not poisoned").clone();
                return Some(Ok(said.map_or(serde_json::Value::Null, seldon_metadata)));
            }
            servegraph_engine::step::SELDON_HEALTH => {
                if self.body_protocol() != Some(BodyProtocol::Seldon) {
                    return Some(Ok(serde_json::Value::Null));
                }
                return Some(self.call(SELDON_HEALTH, body).await);
            }
            _ => {}
        }
        Some(self.call_operation(name, body).await)
    }

    fn unready(&self) -> Option<String> {
        if self.loaded_workers() > 0 {
            return self.health.unhealthy();
        }
        let n = self.workers.len();
        Some(match self.workers.iter().find_map(Worker::last_error) {
            Some(e) => format!("none of its {n} Python workers is loaded (trying again): {e}"),
            None if !self.ever_loaded() => format!(
                "its {n} Python workers are loading ({:.1} s)",
                self.started.elapsed().as_secs_f64()
            ),
            None => format!("none of its {n} Python workers is loaded (starting again)"),
        })
    }

    fn loading(&self) -> bool {
        self.loaded_workers() == 0
            && !self.ever_loaded()
            && self.workers.iter().all(|w| w.last_error().is_none())
    }
}

/// Asks the class for its health every `every` (once a worker said it reports one), as an
/// operation through the model's queue, until the model is let go (the queue is held weakly).
fn spawn_health_probe(
    model: &str,
    queue: tokio::sync::mpsc::WeakSender<Job>,
    health: Arc<worker::Health>,
    every: Duration,
) {
    let model = model.to_owned();
    // How long a probe may take before the model counts as not ready.
    let patience = every.max(Duration::from_secs(1));
    worker::io_runtime().spawn(async move {
        loop {
            tokio::time::sleep(every).await;
            let Some(queue) = queue.upgrade() else { return };
            if !health.reports.load(Ordering::Relaxed) {
                continue;
            }
            let (job, answer) = Job::operation(HEALTH, serde_json::Value::Null);
            // A full queue is a busy model, not a sick one: asked again next time.
            if queue.try_send(job).is_err() {
                continue;
            }
            drop(queue);
            let verdict = match tokio::time::timeout(patience, answer).await {
                Ok(Ok(mut a)) => match a.result {
                    Ok(_) => {
                        let reply = a.notes.as_mut().and_then(|n| n.remove("operation"));
                        match reply {
                            Some(r) if r["ready"] == true => None,
                            Some(r) => Some(format!(
                                "its class says it is not ready: {}",
                                r["message"].as_str().unwrap_or("no reason given")
                            )),
                            None => None,
                        }
                    }
                    Err(e) => Some(format!("its health check failed: {}", e.message)),
                },
                // The worker went away (readiness says so by itself) or took too long.
                Ok(Err(_)) => None,
                Err(_) => Some(format!("its health check took over {} ms", patience.as_millis())),
            };
            if let Some(reason) = &verdict
                && servegraph_engine::logs::first_in_a_while(&("unhealthy", &model, reason))
            {
                tracing::warn!(model = %model, reason = %reason, "Python model not ready (said again after a minute at the earliest)");
            }
            health.set(verdict);
        }
    });
}

/// The note a RESULT's body arrives in (the wire's `body`): the class answered with a body.
pub(crate) const BODY_NOTE: &str = "$body";
/// The note saying the class answered an `/explain` itself (the wire's `explained`).
pub(crate) const EXPLAINED_NOTE: &str = "$explained";
/// The note holding what the class adds to the response's `parameters` (the wire's
/// `parameters`).
pub(crate) const PARAMETERS_NOTE: &str = "$parameters";
/// The note holding the parameters of single outputs, by output name (the wire's
/// `output_parameters`).
pub(crate) const OUTPUT_PARAMETERS_NOTE: &str = "$output_parameters";

/// The operation name the health probe calls (not an identifier: no `op_` can take it).
const HEALTH: &str = "$health";

/// Builds a `kind: python` step (a `handler` function whose tensors are put into the event).
pub fn build_step(node: &StepNode, ctx: &mut BuildContext) -> Option<Box<dyn Step>> {
    let spec: PythonStepSpec = ctx.parse(node)?;
    start(node, ctx, &spec.into_model(), true)
}

/// Builds a `kind: task` step (MLRun's flow steps: a handler of the event's body, or a
/// class's `do`/`do_event`).
pub fn build_task(node: &StepNode, ctx: &mut BuildContext) -> Option<Box<dyn Step>> {
    let spec: spec::TaskSpec = ctx.parse(node)?;
    if let Some(function) = &spec.function {
        ctx.report(
            servegraph_engine::Diagnostic::new(format!(
                "`function: {}` runs the step in another MLRun serving function, which is not served: put the step's code in this graph (`path:`), or split the graph with a `queue` step",
                function.as_str()
            ))
            .step(&node.name)
            .at(function.span()),
        );
        return None;
    }
    let mut model = spec.into_model();
    // A model server's `model_path` among its `class_args` (MLRun's `add_model`) is the
    // model's file, resolved and fetched as a `model_path` is.
    // (An empty one stays among the class's arguments, as MLRun hands it.)
    let given = match model.class_args.get("model_path") {
        Some(p) if p.as_str() != Some("") => model.class_args.remove("model_path"),
        _ => None,
    };
    if let Some(path) = given {
        let Some(text) = path.as_str() else {
            ctx.error(
                &node.name,
                &node.span,
                "`class_args.model_path` must be a path or a store's URI",
            );
            return None;
        };
        let span = node
            .body
            .get_node("class_args")
            .and_then(|args| args.as_mapping())
            .and_then(|args| args.get_node("model_path"))
            .map_or(node.span, |n| *n.span());
        model.model_path = Some(marked_yaml::Spanned::new(span, text.to_owned()));
    }
    start(node, ctx, &model, false)
}

/// `class: python`: builds the model from its spec.
impl super::ClassSpec for PythonSpec {
    fn build(&self, node: &StepNode, ctx: &mut BuildContext) -> Option<Box<dyn Step>> {
        // A batch dimension is the first of every declared tensor, and dynamic.
        if self.max_batch_size.is_some() {
            let declared = [("input", &self.inputs), ("output", &self.outputs)];
            for (what, metas) in declared {
                if let Some(m) = metas
                    .iter()
                    .flatten()
                    .find(|m| m.shape.first() != Some(&-1))
                {
                    ctx.error(
                        &node.name,
                        &node.span,
                        format!(
                            "`max_batch_size` needs a dynamic first dimension, but {what} `{}` has shape {:?}",
                            m.name, m.shape
                        ),
                    );
                    return None;
                }
            }
        }
        if let Some((role, instead)) = match self.role {
            spec::SeldonRole::Router => Some((
                "router",
                "a `kind: router` step with `policy: {type: seldon, path: ..., class_name: ...}` and its routes",
            )),
            spec::SeldonRole::Combiner => Some((
                "combiner",
                "a `kind: ensemble` step with `combine: seldon`, `seldon: {path: ..., class_name: ...}` and its members",
            )),
            _ => None,
        } {
            ctx.report(
                servegraph_engine::Diagnostic::new(format!(
                    "a Seldon `{role}` has children: write it as {instead}"
                ))
                .step(&node.name)
                .at(&node.span),
            );
            return None;
        }
        // An MLServer model folder: its `model-settings.json` says the rest.
        if self.model_settings.is_some() {
            let spec = settings::apply(node, ctx, self)?;
            return start(node, ctx, &spec, false);
        }
        start(node, ctx, self, false)
    }
}

/// A Seldon component a router or an ensemble runs (its ROUTER or COMBINER class), from the
/// `class: python` fields in `fields`: named `{owner}.{role}`, its workers started as a
/// model's. `Ok(None)` when the graph is only checked (no workers start).
pub(crate) fn start_component(
    owner: &StepNode,
    fields: &marked_yaml::types::MarkedMappingNode,
    ctx: &mut BuildContext,
    role: spec::SeldonRole,
) -> std::result::Result<Option<Arc<PythonModel>>, ()> {
    let node = StepNode {
        name: format!(
            "{}.{}",
            owner.name,
            if role == spec::SeldonRole::Router {
                "router"
            } else {
                "combiner"
            }
        ),
        kind: "model".into(),
        span: owner.span,
        body: fields.clone(),
    };
    let mut spec: PythonSpec = ctx.parse(&node).ok_or(())?;
    spec.role = role;
    spec.api = Api::Seldon;
    let config = spec::config(&node, ctx, &spec).ok_or(())?;
    if ctx.mode == BuildMode::Structural {
        return Ok(None);
    }
    launch(
        &node,
        ctx,
        config,
        &spec,
        |_| {},
        (&owner.name, &owner.span),
    )
    .map(Some)
    .ok_or(())
}

/// Starts a model's workers, or takes again the model a build before this one started with
/// the same step, settings and files (the serving process's shelf: its workers keep running,
/// the same processes). A new model's first loads are waited for with every other model's,
/// at once; a failure is reported at `at` (a step's name and place). `tune` sets what the
/// caller decides of the model before it is shared.
fn launch(
    node: &StepNode,
    ctx: &mut BuildContext,
    config: WorkerConfig,
    spec: &PythonSpec,
    tune: impl FnOnce(&mut PythonModel),
    at: (&str, &marked_yaml::Span),
) -> Option<Arc<PythonModel>> {
    let key = spec::kept_as(node, &config, spec);
    let shelf = ctx.shelf().cloned();
    if let (Some(shelf), Some(key)) = (&shelf, &key)
        && let Some(kept) = shelf.get::<PythonModel>(key)
    {
        tracing::info!(model = %node.name, "its spec and files did not change: its workers keep running");
        return Some(kept);
    }
    match PythonModel::start(&node.name, config, spec) {
        Ok((mut model, loading)) => {
            tune(&mut model);
            let model = Arc::new(model);
            if let (Some(shelf), Some(key)) = (&shelf, &key) {
                shelf.put(key, &model);
            }
            if let Some(loading) = loading {
                ctx.defer_load(at.0, at.1, move || {
                    loading.wait().map_err(|e| e.to_string())
                });
            }
            Some(model)
        }
        Err(error) => {
            ctx.report(
                servegraph_engine::Diagnostic::new(error.to_string())
                    .step(at.0)
                    .at(at.1),
            );
            None
        }
    }
}

impl PythonModel {
    /// A Seldon component's answer to its own call (`route()`, `aggregate()`), the message as
    /// a body in, its answer out.
    pub(crate) async fn call_body(&self, body: serde_json::Value) -> Result<serde_json::Value> {
        if let Some(why) = self.unready() {
            return Err(Error::unavailable(format!("`{}`: {why}", self.name)));
        }
        let (mut job, answer) = Job::new(Vec::new(), None);
        job.call = Call {
            body: Some(body),
            explain: false,
            id: None,
            error: None,
            chunks: None,
            headers: None,
            input_parameters: None,
            requested_outputs: None,
            grpc: false,
            joins: false,
        };
        let answer = self.submit((job, answer)).await?;
        answer.result?;
        answer
            .notes
            .and_then(|mut n| n.remove(BODY_NOTE))
            .ok_or_else(|| Error::internal(format!("`{}` answered no body", self.name)))
    }

    /// Hands the class Seldon's feedback (`send_feedback(features, names, reward, truth,
    /// routing)`), in the background: feedback is answered without waiting for it.
    pub(crate) fn send_feedback(self: &Arc<Self>, body: serde_json::Value) {
        let model = Arc::clone(self);
        worker::io_runtime().spawn(async move {
            let (job, answer) = Job::operation(FEEDBACK, body);
            if let Err(e) = async { model.submit((job, answer)).await?.result }.await
                && servegraph_engine::logs::first_in_a_while(&("seldon feedback", &model.name))
            {
                tracing::warn!(model = %model.name, error = %e, "send_feedback failed");
            }
        });
    }
}

/// The operation the worker answers with the class's `send_feedback` (not an identifier: no
/// client's `op_` can name it).
const FEEDBACK: &str = "$feedback";

/// The operation the worker answers with a Seldon class's `health_status()` message.
const SELDON_HEALTH: &str = "$seldon_health";

/// What a class said of itself (`init_metadata()`), as Seldon's `validate_model_metadata`
/// completes it: `name`, `versions`, `platform`, `inputs`, `outputs`, `custom`.
fn seldon_metadata(said: serde_json::Value) -> serde_json::Value {
    let mut meta = serde_json::json!({
        "name": "", "versions": [""], "platform": "", "inputs": [], "outputs": [], "custom": {},
    });
    if let (Some(meta), serde_json::Value::Object(said)) = (meta.as_object_mut(), said) {
        meta.extend(said);
    }
    meta
}

/// Starts the workers of a model (or, `pass_through`, a step: it keeps the event's tensors
/// and adds its own), reporting a failure at the step.
fn start(
    node: &StepNode,
    ctx: &mut BuildContext,
    spec: &PythonSpec,
    pass_through: bool,
) -> Option<Box<dyn Step>> {
    let config = spec::config(node, ctx, spec)?;
    if ctx.mode == BuildMode::Structural {
        return Some(Box::new(super::Unloaded));
    }
    // `validate` checks that a store's object exists without downloading it: a class whose
    // file is not in the cache yet is not loaded (it would get `model_uri=None`, and fail in
    // a way serving never does).
    let wants_file = spec.model_uri.is_some() || spec.model_path.is_some();
    if wants_file && config.load["model_uri"].is_null() {
        tracing::warn!(
            step = %node.name,
            "not loaded: its model file is not in the model cache yet (it exists in the store; serving fetches it)"
        );
        return Some(Box::new(super::Unloaded));
    }
    let body_step = spec.task.is_some();
    let tune = |model: &mut PythonModel| {
        model.pass_through = pass_through;
        model.body_step = body_step;
    };
    let model = launch(node, ctx, config, spec, tune, (&node.name, &node.span))?;
    Some(Box::new(model))
}
