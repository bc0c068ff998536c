//! The protocol service: what every transport answers, apart from any wire format.
//!
//! [`Service`] holds the graph a source serves (`None` while models load) and answers the
//! Open Inference Protocol's questions, and servegraph's own: readiness, metadata, model
//! configuration, statistics, the repository index, feedback and experiments, custom
//! operations, metrics, and the admin actions. The HTTP transport (`crate::http`) and the
//! gRPC transport (`crate::grpc`) each hold one and only map their wire to it and back;
//! inference goes through the one request path ([`crate::request::Pipeline`]) that
//! [`Service::current`] gives. The serving process that owns services, sources and the
//! graph is `crate::server`.
//!
//! | file | what |
//! |---|---|
//! | `mod.rs` | [`Service`] |
//! | `admin.rs` | the admin actions, the token, how a refusal is said |
//! | `dashboard.rs` | the dashboard's data: the graph's shape and its steps' timers |
//! | `config.rs` | Triton's model configuration |
//! | `statistics.rs` | Triton's statistics |
//! | `trace.rs` | Triton's trace extension: the trace settings over the OpenTelemetry spans |
//! | `listen.rs` | serving an axum app on a listener (plain, TLS, gRPC-tuned) and following the process's phases: what both transports share |

pub mod admin;
mod config;
pub mod dashboard;
#[cfg(feature = "http")]
pub mod listen;

mod statistics;
pub mod trace;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use arc_swap::ArcSwapOption;
use serde_json::{Value, json};

pub use admin::{Admin, AdminAction, AdminRequest, Refusal, ReloadResult};
pub use config::model_config;
pub use statistics::statistics;

use crate::error::{Error, ErrorKind, Result};
use crate::graph::Live;
use crate::request::{Headers, Pipeline};

/// The protocol extensions the server metadata lists (HTTP and gRPC alike).
pub const EXTENSIONS: [&str; 6] = [
    "binary_tensor_data",
    "classification",
    "model_configuration",
    "model_repository",
    "statistics",
    "parameters",
];

/// The extensions only HTTP serves (Triton's trace settings), listed after [`EXTENSIONS`]
/// in HTTP's server metadata.
pub const HTTP_EXTENSIONS: [&str; 1] = ["trace"];

/// What a source's transport serves: the graph (through its request path), the admin
/// settings, and whether the process is draining.
pub struct Service {
    served: ArcSwapOption<Pipeline>,
    source: &'static str,
    admin: Option<Admin>,
    /// Shutting down: not ready, still serving (the grace period).
    draining: AtomicBool,
    /// What the sources say about readiness (a Kafka source's brokers), once started.
    health: std::sync::OnceLock<crate::sources::Health>,
}

impl Service {
    /// A service for `source` (`http`, `grpc`: the request metrics' label) with nothing loaded
    /// yet: model questions answer 503 until [`Service::serve`].
    pub fn new(source: &'static str, admin: Option<Admin>) -> Arc<Service> {
        Arc::new(Service {
            served: ArcSwapOption::empty(),
            source,
            admin,
            draining: AtomicBool::new(false),
            health: std::sync::OnceLock::new(),
        })
    }

    /// Starts serving `live`'s graph (with its tracking stream); requests already running
    /// finish on the graph they started on.
    pub fn serve(&self, live: &Live) {
        self.served
            .store(Some(Arc::new(Pipeline::new(live, self.source))));
    }

    /// Stops serving: drops the graph (and so its tracker, letting the tracking writer drain).
    pub fn unload(&self) {
        self.served.store(None);
    }

    /// Readiness also asks `health` from now on (what the process's sources say).
    pub fn follow(&self, health: &crate::sources::Health) {
        let _ = self.health.set(health.clone());
    }

    /// The grace period began: not ready any more, still serving.
    pub fn drain(&self) {
        self.draining.store(true, Ordering::Relaxed);
    }

    /// The request path of the graph being served, or a 503 while models load.
    pub fn current(&self) -> Result<Arc<Pipeline>> {
        self.loaded().ok_or_else(not_loaded)
    }

    /// The request path of the graph being served, if one is.
    pub fn loaded(&self) -> Option<Arc<Pipeline>> {
        self.served.load_full()
    }

    /// The admin settings when `headers` carry the admin token; else why not.
    pub fn authorize(&self, headers: &dyn Headers) -> std::result::Result<&Admin, Refusal> {
        admin::authorize(self.admin.as_ref(), headers)
    }

    /// The server's readiness: not while loading or shutting down, nor while a source says
    /// it cannot serve (a Kafka source without its brokers), nor while a step is not ready.
    pub fn ready(&self) -> Result<()> {
        let served = self.current()?;
        if self.draining.load(Ordering::Relaxed) {
            return Err(Error::unavailable("not ready: shutting down"));
        }
        if let Some(why) = self.health.get().and_then(crate::sources::Health::unready) {
            return Err(Error::unavailable(format!("not ready: {why}")));
        }
        if let Some(why) = served.graph.unready() {
            return Err(Error::unavailable(format!("not ready: {why}")));
        }
        Ok(())
    }

    /// A model's readiness: the step that serves it says whether it can.
    pub fn model_ready(&self, model: &str, version: Option<&str>) -> Result<()> {
        model_is_ready(&*self.current()?, model, version)
    }

    /// The server's metadata (`GET /v2`, HTTP's: its extensions with [`HTTP_EXTENSIONS`]).
    pub fn server_metadata() -> Value {
        let extensions: Vec<&str> = EXTENSIONS.iter().chain(&HTTP_EXTENSIONS).copied().collect();
        json!({
            "name": "servegraph",
            "version": env!("CARGO_PKG_VERSION"),
            "extensions": extensions,
        })
    }

    /// Triton's trace settings of `model` (`None`: the global ones), a 404 for a model the
    /// graph does not serve.
    pub fn trace_setting(&self, model: Option<&str>) -> Result<Value> {
        if let Some(m) = model {
            self.current()?.graph.find_model(m, None)?;
        }
        Ok(trace::get(model))
    }

    /// Updates Triton's trace settings of `model` (`None`: the global ones) with Triton's
    /// request body, answering the settings now.
    pub fn update_trace_setting(&self, model: Option<&str>, body: &Value) -> Result<Value> {
        if let Some(m) = model {
            self.current()?.graph.find_model(m, None)?;
        }
        trace::post(model, body)
    }

    /// The models served, as MLRun lists them: a version as `name:version`, in the graph's
    /// order; the graph itself only when it serves no other model (a router's routes are its
    /// models).
    pub fn model_names(&self) -> Result<Vec<String>> {
        let served = self.current()?;
        let graph = &served.graph;
        let models = graph.models();
        let routes: Vec<_> = models.iter().filter(|m| m.name != graph.name).collect();
        let listed = if routes.is_empty() {
            models.iter().collect()
        } else {
            routes
        };
        Ok(listed
            .into_iter()
            .map(|m| match &m.version {
                Some(v) => format!("{}:{v}", m.name),
                None => m.name.clone(),
            })
            .collect())
    }

    /// A model's metadata (`GET /v2/models/{m}[/versions/{v}]`).
    pub fn metadata(&self, model: &str, version: Option<&str>) -> Result<Value> {
        self.current()?.graph.metadata(model, version)
    }

    /// Triton's model configuration (`GET /v2/models/{m}/config`).
    pub fn config(&self, model: &str, version: Option<&str>) -> Result<Value> {
        model_config(&self.current()?.graph, model, version)
    }

    /// Triton's statistics of one model (and version), or of every model.
    pub fn statistics(&self, model: Option<&str>, version: Option<&str>) -> Result<Value> {
        statistics(&self.current()?.graph, model, version)
    }

    /// The repository index: every served model with its version and state (`READY`, or
    /// `UNAVAILABLE` with the reason), and the unloaded ones.
    pub fn repository_index(&self) -> Result<Vec<Value>> {
        let served = self.current()?;
        let graph = &served.graph;
        Ok(graph
            .models()
            .iter()
            .map(|m| {
                let version = m.version.as_deref().unwrap_or("1");
                match model_is_ready(&served, &m.name, m.version.as_deref()) {
                    Ok(()) => json!({ "name": m.name, "version": version, "state": "READY" }),
                    Err(e) => json!({
                        "name": m.name, "version": version, "state": "UNAVAILABLE",
                        "reason": e.message,
                    }),
                }
            })
            .chain(
                graph
                    .repository()
                    .models
                    .iter()
                    .filter(|e| !e.loaded)
                    .map(|e| {
                        json!({
                            "name": e.name, "version": e.version, "state": "UNAVAILABLE",
                            "reason": "unloaded",
                        })
                    }),
            )
            .collect())
    }

    /// A custom operation of the model `model` (an MLRun model's `op_<name>(event)`): JSON in,
    /// JSON out; a 404 for a model without it.
    pub async fn operation(&self, model: &str, name: &str, body: Value) -> Result<Value> {
        let served = self.current()?;
        let step = served
            .graph
            .find_step(model)
            .ok_or_else(|| Error::not_found(format!("no model `{model}`")))?;
        let answer = match step.model() {
            Some(m) => m.operation(name, body).await,
            None => None,
        };
        answer.unwrap_or_else(|| {
            Err(Error::not_found(format!(
                "model `{model}` has no operation `{name}` (it serves infer, predict and explain)"
            )))
        })
    }

    /// Seldon's feedback for every model that served the request (its class takes feedback:
    /// Seldon's `send_feedback`), as Seldon's executor sends it along a request's path.
    /// Answers how many took it.
    pub async fn seldon_feedback(&self, body: &Value) -> Result<usize> {
        let served = self.current()?;
        let mut took = 0;
        for (_, step) in served.graph.every_step() {
            let Some(model) = step.model() else {
                continue;
            };
            let answer = model
                .operation(crate::step::SELDON_FEEDBACK, body.clone())
                .await;
            if let Some(answer) = answer
                && answer? == Value::Bool(true)
            {
                took += 1;
            }
        }
        Ok(took)
    }

    /// The first Seldon component's health in the graph (its class's `health_status()`
    /// message), `None` when the graph has none.
    pub async fn first_seldon_health(&self) -> Result<Option<Value>> {
        let served = self.current()?;
        for (_, step) in served.graph.every_step() {
            let Some(m) = step.model() else { continue };
            if let Some(answer) = m.operation(crate::step::SELDON_HEALTH, Value::Null).await {
                let answer = answer?;
                if !answer.is_null() {
                    return Ok(Some(answer));
                }
            }
        }
        Ok(None)
    }

    /// A model's Seldon health (its class's `health_status()` message), `None` when it is not
    /// a Seldon component (a 404 for no such model).
    pub async fn seldon_health(&self, model: &str) -> Result<Option<Value>> {
        let served = self.current()?;
        let step = served
            .graph
            .find_step(model)
            .ok_or_else(|| Error::not_found(format!("no model `{model}`")))?;
        let Some(m) = step.model() else {
            return Ok(None);
        };
        match m.operation(crate::step::SELDON_HEALTH, Value::Null).await {
            Some(answer) => Ok(Some(answer?).filter(|v| !v.is_null())),
            None => Ok(None),
        }
    }

    /// Every step whose class says its Seldon metadata (`init_metadata()`), by name.
    pub async fn seldon_components(&self) -> Result<serde_json::Map<String, Value>> {
        let served = self.current()?;
        let mut out = serde_json::Map::new();
        for (name, step) in served.graph.every_step() {
            let Some(m) = step.model() else { continue };
            if let Some(answer) = m.operation(crate::step::SELDON_METADATA, Value::Null).await {
                let said = answer?;
                if !said.is_null() {
                    out.insert(name.to_owned(), said);
                }
            }
        }
        Ok(out)
    }

    /// A model's metadata as Seldon's executor gives it: its class's `init_metadata()`
    /// completed as Seldon does, else the OIP metadata.
    pub async fn seldon_metadata(&self, model: &str) -> Result<Value> {
        let served = self.current()?;
        if let Some(m) = served.graph.find_step(model).and_then(|s| s.model())
            && let Some(answer) = m.operation(crate::step::SELDON_METADATA, Value::Null).await
        {
            let said = answer?;
            if !said.is_null() {
                return Ok(said);
            }
        }
        self.metadata(model, None)
    }

    /// Whether `model` is a router that takes feedback (a 404 if not).
    pub fn takes_feedback(&self, model: &str) -> Result<()> {
        learner(&*self.current()?, model).map(|_| ())
    }

    /// Feedback for the router `model`, a JSON body: `{"id", "reward"}`, a batch `[...]` of
    /// those, or Seldon's `{"request", "response", "reward", "truth"}` (the route from the
    /// response's `parameters.route` when its id is not remembered). Answers what was taken.
    pub fn feedback(&self, model: &str, body: &[u8]) -> Result<Value> {
        let served = self.current()?;
        let router = learner(&served, model)?;
        let value: Value = serde_json::from_slice(body)
            .map_err(|e| Error::bad_request(format!("malformed feedback: {e}")))?;
        let (items, single) = crate::feedback::parse(&value)?;
        let (mut accepted, mut duplicates, mut unknown) = (0, 0, Vec::new());
        for item in items {
            match (item.id, item.route) {
                (Some(id), route) => match router.feedback(id, item.reward) {
                    Ok(true) => {
                        accepted += 1;
                        if let Some(t) = served.tracker() {
                            t.emit(crate::tracking::TrackingEvent::feedback(
                                &served.graph.name,
                                model,
                                id,
                                item.reward,
                                item.label,
                            ));
                        }
                    }
                    Ok(false) => duplicates += 1,
                    Err(e) if e.kind == ErrorKind::NotFound => match route {
                        Some(route) => {
                            router.feedback_route(route, item.reward)?;
                            accepted += 1;
                        }
                        None if single => return Err(e),
                        None => unknown.push(id.to_owned()),
                    },
                    Err(e) => return Err(e),
                },
                (None, Some(route)) => {
                    router.feedback_route(route, item.reward)?;
                    accepted += 1;
                }
                (None, None) => unreachable!("parse requires an id or a route"),
            }
        }
        Ok(json!({ "accepted": accepted, "duplicates": duplicates, "unknown": unknown }))
    }

    /// What the router `model` has learnt: per route, requests, rewards and its estimate.
    pub fn experiment(&self, model: &str) -> Result<crate::LearnerStats> {
        let served = self.current()?;
        Ok(learner(&served, model)?.stats())
    }

    /// What the dashboard's page polls: the graph's shape and its steps' timers now.
    pub fn dashboard(&self) -> Result<dashboard::Data> {
        Ok(dashboard::data(&self.current()?.graph))
    }

    /// Every metric (Prometheus text), with what the graph's routers have learnt.
    pub fn metrics(&self) -> Result<String> {
        let graph = self.loaded().map(|s| {
            let g = &s.graph;
            let stats = g.learners().into_iter().map(|(_, l)| l.stats()).collect();
            (g.name.clone(), stats)
        });
        crate::metrics::render(graph)
            .map_err(|_| Error::internal("the metrics could not be encoded"))
    }
}

/// A model's readiness on `served`'s graph.
fn model_is_ready(served: &Pipeline, model: &str, version: Option<&str>) -> Result<()> {
    served.graph.find_model(model, version)?;
    match served
        .graph
        .model_step(model, version)
        .and_then(|s| s.model())
        .and_then(|m| m.unready())
    {
        Some(why) => Err(Error::unavailable(format!(
            "model `{model}` is not ready: {why}"
        ))),
        None => Ok(()),
    }
}

/// The step named `name` that learns from feedback (a router), or a 404.
fn learner<'a>(served: &'a Pipeline, name: &str) -> Result<&'a dyn crate::Learner> {
    served
        .graph
        .learner(name)
        .ok_or_else(|| Error::not_found(format!("no router `{name}` that takes feedback")))
}

/// The 503 before the first graph serves: which models are still loading, and for how long.
pub fn not_loaded() -> Error {
    match crate::loading::describe() {
        Some(loading) => Error::unavailable(format!("not ready: models are loading: {loading}")),
        None => Error::unavailable("not ready: models are loading"),
    }
}
