//! A request's work as the pool and inline runs take it ([`Job`]), the batching settings, and
//! the counters both keep ([`RunStats`]).

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use servegraph_engine::{Result, Tensor};
use tokio::sync::oneshot;

/// One request's inputs, waiting for a run, and where its answer goes.
pub(super) struct Job {
    pub(super) inputs: Vec<Tensor>,
    pub(super) span: tracing::Span,
    /// When it was queued: its answer carries the time since (queue wait + run).
    pub(super) queued: Instant,
    pub(super) reply: oneshot::Sender<(Result<Vec<Tensor>>, Duration)>,
}

impl Job {
    pub(super) fn answer(self, result: Result<Vec<Tensor>>) {
        let _ = self.reply.send((result, self.queued.elapsed()));
    }

    /// Rows along the batch axis (the first input's first dimension).
    pub(super) fn rows(&self) -> usize {
        self.inputs[0].shape.first().copied().unwrap_or(1)
    }

    /// Whether two jobs can share a run: same inputs but for the batch dimension.
    pub(super) fn fits_with(&self, other: &Job) -> bool {
        self.inputs.iter().zip(&other.inputs).all(|(a, b)| {
            a.datatype() == b.datatype() && !a.shape.is_empty() && a.shape[1..] == b.shape[1..]
        }) && other
            .inputs
            .iter()
            .all(|t| t.shape.first() == Some(&other.rows()))
    }
}

/// Adaptive batching settings, as the worker uses them.
#[derive(Clone, Copy)]
pub(super) struct Batching {
    pub(super) max_size: usize,
    pub(super) max_wait: Duration,
}

/// Counters the workers keep: ONNX Runtime runs and the requests they served.
pub struct RunStats {
    pub runs: AtomicU64,
    pub requests: AtomicU64,
    pub(super) metrics: servegraph_engine::metrics::ModelMetrics,
}

impl RunStats {
    pub(super) fn new(model: &str) -> RunStats {
        RunStats {
            runs: AtomicU64::new(0),
            requests: AtomicU64::new(0),
            metrics: servegraph_engine::metrics::ModelMetrics::new(model),
        }
    }

    /// An inline run starts: one request, no queue.
    pub(super) fn inline_run(&self) {
        self.runs.fetch_add(1, Ordering::Relaxed);
        self.requests.fetch_add(1, Ordering::Relaxed);
        self.metrics.batch_size.observe(1.0);
        self.metrics.queue_wait_seconds.observe(Duration::ZERO);
    }

    /// A run of `jobs` starts: their queue waits and the batch size.
    pub(super) fn starting(&self, jobs: &[Job]) -> Instant {
        let now = Instant::now();
        self.runs.fetch_add(1, Ordering::Relaxed);
        self.requests
            .fetch_add(jobs.len() as u64, Ordering::Relaxed);
        self.metrics.batch_size.observe(jobs.len() as f64);
        for j in jobs {
            self.metrics
                .queue_wait_seconds
                .observe(now.saturating_duration_since(j.queued));
        }
        now
    }
}
