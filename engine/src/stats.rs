//! Triton's statistics extension (`GET /v2/models[/{m}[/versions/{v}]]/stats`): per model,
//! how many requests succeeded and failed and how long they took, how long they queued, how
//! long the model ran, how many times (executions) and at which batch sizes.
//!
//! Outcomes are recorded where a request meets a model: the request path for the graph, the
//! executor for each step of a flow, a router for each route. Queue, compute and batch
//! figures come from the model runners' [`ModelMetrics`] (the same counts the Prometheus
//! histograms export), registered here by name when they are made.

use std::collections::BTreeMap;
use std::sync::atomic::AtomicU64;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use dashmap::DashMap;
use prometheus_client::metrics::histogram::Histogram;
use serde_json::{Value, json};

use crate::error::Result;
use crate::graph::Graph;
use crate::metrics::ModelMetrics;
use crate::step::ModelInfo;

/// Successes and failures of one model, with their total durations.
#[derive(Debug, Default)]
pub struct Outcomes {
    ok: AtomicU64,
    ok_ns: AtomicU64,
    fail: AtomicU64,
    fail_ns: AtomicU64,
    /// Rows (the first dimension of the first input) of the successful requests.
    rows: AtomicU64,
    /// When the last request ended: nanoseconds after [`anchor`] (0: never).
    last_ns: AtomicU64,
}

/// The wall clock and the cheap clock read together once, so a request's end is kept as a
/// TSC reading (no system call per step) and told as wall time when asked.
fn anchor() -> &'static (std::time::SystemTime, quanta::Instant) {
    static ANCHOR: OnceLock<(std::time::SystemTime, quanta::Instant)> = OnceLock::new();
    ANCHOR.get_or_init(|| (std::time::SystemTime::now(), quanta::Instant::now()))
}

impl Outcomes {
    /// Milliseconds since the epoch of the last request (0: none yet).
    fn last_ms(&self) -> u64 {
        match self.last_ns.load(Relaxed) {
            0 => 0,
            ns => (anchor().0 + Duration::from_nanos(ns))
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_millis() as u64)
                .unwrap_or(0),
        }
    }
}

impl Outcomes {
    /// One request that took `took`: succeeded with `rows` rows, or failed.
    pub fn record(&self, ok: bool, took: Duration, rows: u64) {
        let ns = u64::try_from(took.as_nanos()).unwrap_or(u64::MAX);
        if ok {
            self.ok.fetch_add(1, Relaxed);
            self.ok_ns.fetch_add(ns, Relaxed);
            self.rows.fetch_add(rows, Relaxed);
        } else {
            self.fail.fetch_add(1, Relaxed);
            self.fail_ns.fetch_add(ns, Relaxed);
        }
        let (_, start) = anchor();
        let now = quanta::Instant::now().duration_since(*start).as_nanos() as u64;
        self.last_ns.fetch_max(now.max(1), Relaxed);
    }
}

/// The rows of a request: its first input's first dimension (1 for a scalar or a vector).
pub fn rows(event: &crate::event::Event) -> u64 {
    match event.tensors.first().map(|t| t.shape.as_slice()) {
        Some([n, _, ..]) => *n as u64,
        _ => 1,
    }
}

fn outcome_map() -> &'static DashMap<String, Arc<Outcomes>> {
    static MAP: OnceLock<DashMap<String, Arc<Outcomes>>> = OnceLock::new();
    MAP.get_or_init(DashMap::new)
}

fn model_map() -> &'static DashMap<String, ModelMetrics> {
    static MAP: OnceLock<DashMap<String, ModelMetrics>> = OnceLock::new();
    MAP.get_or_init(DashMap::new)
}

/// The outcomes of the model (step, route or graph) `key` names: `name`, or `name:version`.
/// Resolve once and keep it; a reloaded graph keeps counting on the same.
pub fn outcomes(key: &str) -> Arc<Outcomes> {
    if let Some(o) = outcome_map().get(key) {
        return Arc::clone(&o);
    }
    Arc::clone(&outcome_map().entry(key.to_owned()).or_default())
}

/// Registers a model runner's metrics (called by [`ModelMetrics::new`]).
pub(crate) fn register_model(key: &str, metrics: &ModelMetrics) {
    model_map().insert(key.to_owned(), metrics.clone());
}

/// The batch sizes of model `key`: the ones already kept, so every runner of a model (and
/// the same model in a reloaded graph) counts on the same.
pub(crate) fn batch_sizes(key: &str, histogram: impl FnOnce() -> Histogram) -> BatchSizes {
    match model_map().get(key) {
        Some(m) => m.batch_size.clone(),
        None => BatchSizes::new(histogram()),
    }
}

/// How many executions ran at each batch size (the number of requests run together), exactly:
/// sizes up to 64 on atomics, larger ones under a lock. Also feeds the Prometheus histogram.
#[derive(Clone, Debug)]
pub struct BatchSizes(Arc<BatchCounts>);

#[derive(Debug)]
struct BatchCounts {
    small: [AtomicU64; 65],
    large: Mutex<BTreeMap<usize, u64>>,
    histogram: Histogram,
}

impl BatchSizes {
    pub(crate) fn new(histogram: Histogram) -> BatchSizes {
        BatchSizes(Arc::new(BatchCounts {
            small: std::array::from_fn(|_| AtomicU64::new(0)),
            large: Mutex::new(BTreeMap::new()),
            histogram,
        }))
    }

    /// One execution of `size` requests.
    pub fn observe(&self, size: f64) {
        self.0.histogram.observe(size);
        let n = size as usize;
        match self.0.small.get(n) {
            Some(c) => {
                c.fetch_add(1, Relaxed);
            }
            None => {
                *self
                    .0
                    .large
                    .lock()
                    .expect("not poisoned")
                    .entry(n)
                    .or_default() += 1
            }
        }
    }

    fn counts(&self) -> Vec<(usize, u64)> {
        let mut out: Vec<(usize, u64)> = self
            .0
            .small
            .iter()
            .enumerate()
            .map(|(n, c)| (n, c.load(Relaxed)))
            .filter(|(_, c)| *c > 0)
            .collect();
        out.extend(
            self.0
                .large
                .lock()
                .expect("not poisoned")
                .iter()
                .map(|(n, c)| (*n, *c)),
        );
        out
    }
}

fn duration(count: u64, ns: u64) -> Value {
    json!({ "count": count, "ns": ns })
}

/// The key a model's figures are kept under.
pub fn key(name: &str, version: Option<&str>) -> String {
    match version {
        Some(v) => format!("{name}:{v}"),
        None => name.to_owned(),
    }
}

/// One model's statistics in Triton's shape.
fn model_stats(info: &ModelInfo) -> Value {
    let key = key(&info.name, info.version.as_deref());
    let o = outcome_map().get(&key).map(|o| Arc::clone(&o));
    let o = o.as_deref();
    let get = |f: fn(&Outcomes) -> &AtomicU64| o.map_or(0, |o| f(o).load(Relaxed));
    let (ok, ok_ns, fail, fail_ns) = (
        get(|o| &o.ok),
        get(|o| &o.ok_ns),
        get(|o| &o.fail),
        get(|o| &o.fail_ns),
    );
    let model = model_map().get(&key).map(|m| m.clone());
    // A model runner counts its executions; any other step runs once per request.
    let (queue, compute, executions, batches) = match &model {
        Some(m) => (
            duration(m.queue_wait_seconds.count(), m.queue_wait_seconds.sum_ns()),
            duration(m.run_seconds.count(), m.run_seconds.sum_ns()),
            m.run_seconds.count(),
            m.batch_size.counts(),
        ),
        None => (duration(0, 0), duration(ok, ok_ns), ok, Vec::new()),
    };
    let batch_stats: Vec<Value> = batches
        .into_iter()
        .map(|(size, count)| {
            json!({
                "batch_size": size,
                "compute_input": duration(0, 0),
                "compute_infer": duration(count, 0),
                "compute_output": duration(0, 0),
            })
        })
        .collect();
    json!({
        "name": info.name,
        "version": info.version.as_deref().unwrap_or("1"),
        "last_inference": o.map_or(0, Outcomes::last_ms),
        "inference_count": get(|o| &o.rows),
        "execution_count": executions,
        "inference_stats": {
            "success": duration(ok, ok_ns),
            "fail": duration(fail, fail_ns),
            "queue": queue,
            "compute_input": duration(0, 0),
            "compute_infer": compute,
            "compute_output": duration(0, 0),
            "cache_hit": duration(0, 0),
            "cache_miss": duration(0, 0),
        },
        "response_stats": {},
        "batch_stats": batch_stats,
        "memory_usage": [],
    })
}

/// `{"model_stats": [...]}` for one model (and version), or every model when `name` is
/// `None`; a 404 for a model the graph does not serve.
pub fn statistics(graph: &Graph, name: Option<&str>, version: Option<&str>) -> Result<Value> {
    let models: Vec<&ModelInfo> = match name {
        None => graph.models().iter().collect(),
        Some(n) => match version {
            Some(_) => vec![graph.find_model(n, version)?],
            None => {
                graph.find_model(n, None)?;
                graph.models().iter().filter(|m| m.name == n).collect()
            }
        },
    };
    Ok(json!({ "model_stats": models.into_iter().map(model_stats).collect::<Vec<_>>() }))
}
