//! What Triton's statistics extension reports (`crate::serve` answers it): per model, how
//! many requests succeeded and failed, how long they took, how many rows they had, and when
//! the last one was answered. Outcomes are recorded where a request meets a model: the request
//! path for the graph, the executor for each step of a flow, a router for each route. The
//! model runners' queue, compute and batch figures are their metrics
//! ([`crate::metrics::ModelMetrics`]).

use std::sync::atomic::AtomicU64;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use dashmap::DashMap;

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
    /// When the last request was answered, in milliseconds since the epoch (0: never).
    pub fn last_ms(&self) -> u64 {
        match self.last_ns.load(Relaxed) {
            0 => 0,
            ns => (anchor().0 + Duration::from_nanos(ns))
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_millis() as u64)
                .unwrap_or(0),
        }
    }
}

/// What [`Outcomes`] counted so far.
#[derive(Clone, Copy, Debug, Default)]
pub struct Counts {
    pub ok: u64,
    pub ok_ns: u64,
    pub fail: u64,
    pub fail_ns: u64,
    pub rows: u64,
}

impl Outcomes {
    /// The counts so far.
    pub fn counts(&self) -> Counts {
        Counts {
            ok: self.ok.load(Relaxed),
            ok_ns: self.ok_ns.load(Relaxed),
            fail: self.fail.load(Relaxed),
            fail_ns: self.fail_ns.load(Relaxed),
            rows: self.rows.load(Relaxed),
        }
    }

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

/// The outcomes of the model (step, route or graph) `key` names: `name`, or `name:version`.
/// Resolve once and keep it; a reloaded graph keeps counting on the same.
pub fn outcomes(key: &str) -> Arc<Outcomes> {
    if let Some(o) = outcome_map().get(key) {
        return Arc::clone(&o);
    }
    Arc::clone(&outcome_map().entry(key.to_owned()).or_default())
}

/// The key a model's figures are kept under.
pub fn key(name: &str, version: Option<&str>) -> String {
    match version {
        Some(v) => format!("{name}:{v}"),
        None => name.to_owned(),
    }
}

/// The outcomes recorded for model `key`, when any were.
pub fn find_outcomes(key: &str) -> Option<Arc<Outcomes>> {
    outcome_map().get(key).map(|o| Arc::clone(&o))
}
