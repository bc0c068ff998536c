//! Shadow traffic: a bounded, timed-out copy of a share of requests to one route, its answer
//! recorded in tracking and never returned.

use std::sync::Arc;

use rand::Rng;
use servegraph_engine::Event;

use super::Router;

/// A shadow route at run time.
pub(super) struct Shadow {
    pub(super) index: usize,
    pub(super) share: f64,
    pub(super) timeout: std::time::Duration,
    pub(super) slots: Arc<tokio::sync::Semaphore>,
    /// Copies sent, skipped (too many in flight), failed or timed out.
    pub(super) counts: Arc<[std::sync::atomic::AtomicU64; 3]>,
}

impl Router {
    /// Sends a copy of the request to the shadow route on its own task: bounded, timed out,
    /// its answer (or error) recorded in tracking when the request is tracked, never returned.
    pub(super) fn mirror(&self, shadow: &Shadow, event: &Event) {
        use std::sync::atomic::Ordering::Relaxed;
        if shadow.share < 1.0 && rand::rng().random::<f64>() >= shadow.share {
            return;
        }
        let Ok(slot) = Arc::clone(&shadow.slots).try_acquire_owned() else {
            shadow.counts[1].fetch_add(1, Relaxed);
            return;
        };
        shadow.counts[0].fetch_add(1, Relaxed);
        let route = &self.routes[shadow.index];
        let step = Arc::clone(&route.step);
        let (key, name, version) = (route.key.clone(), route.name.clone(), route.version.clone());
        let router = self.name.clone();
        let mut copy = event.clone();
        copy.routes.push((router, key.clone()));
        copy.step_microsec = None;
        let tracker = servegraph_engine::tracking::current();
        // The request's tensors again only when the copy's answer is tracked.
        let tracked = tracker.map(|t| (t, event.id.clone(), event.tensors.clone()));
        let (timeout, counts) = (shadow.timeout, Arc::clone(&shadow.counts));
        tokio::spawn(async move {
            let _slot = slot;
            let when = std::time::SystemTime::now();
            let start = std::time::Instant::now();
            let (resp, error) = match tokio::time::timeout(timeout, step.process(copy)).await {
                Ok(Ok(done)) => (Some(done.into_data().tensors), None),
                Ok(Err(e)) => (None, Some(e.in_step(&key).to_string())),
                Err(_) => (
                    None,
                    Some(format!("shadow route `{key}` timed out after {timeout:?}")),
                ),
            };
            if error.is_some() {
                counts[2].fetch_add(1, Relaxed);
                tracing::debug!(route = %key, error = ?error, "shadow copy failed");
            }
            if let Some((tracker, id, request)) = tracked {
                tracker.emit(servegraph_engine::tracking::TrackingEvent {
                    id,
                    when,
                    graph: tracker.graph().to_owned(),
                    model: name,
                    version,
                    route: Some(key),
                    explain: false,
                    request,
                    resp,
                    error,
                    microsec: start.elapsed().as_micros() as u64,
                    step_microsec: Vec::new(),
                    shadow: true,
                    decisions: Vec::new(),
                    reward: None,
                    label: None,
                });
            }
        });
    }
}
