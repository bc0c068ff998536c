//! The counters the pool and inline runs keep ([`RunStats`]).

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use crate::model::batch::Job;

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
