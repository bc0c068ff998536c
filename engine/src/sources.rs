//! The `Source` trait every source of requests implements (HTTP, gRPC, Kafka, the Kafka
//! feedback reader), what a source is started with, and the process's phases. The settings
//! sources take from the graph file (`sources:`) are the graph's ([`crate::graph::sources`]),
//! so every build validates them alike.

pub use crate::graph::sources::{KafkaSourceSpec, SourcesSpec};

use std::sync::{Arc, Mutex};

use crate::graph::Live;

/// Why a source could not start: its own error (a broker client's, a listener's).
pub type StartError = Box<dyn std::error::Error + Send + Sync>;

/// Where a serving process is in its life. Sources watch it through [`SourceContext::phase`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Phase {
    /// Serving (ready once the graph is loaded).
    Serving,
    /// Shutting down, in the grace period: readiness is false so load balancers stop sending,
    /// but listeners keep accepting and every request is still served.
    Draining,
    /// Take no new work; finish what is in flight (within [`SourceContext::drain`]), then end.
    Stopping,
}

/// What a source is started with.
pub struct SourceContext {
    /// The graph being served now; a reload sends the graph that replaces it (requests that
    /// started on the old one finish there).
    pub live: tokio::sync::watch::Receiver<Live>,
    pub phase: tokio::sync::watch::Receiver<Phase>,
    /// How long in-flight work may take to finish once stopping.
    pub drain: std::time::Duration,
    /// The process's readiness beyond its graph's steps: a source adds what it needs (a
    /// Kafka source its brokers); the transports' readiness asks it.
    pub health: Health,
}

/// Why a process that loaded its graph is still not ready: probes the sources add (a Kafka
/// source whose brokers cannot be reached, a topic found missing), asked at each readiness
/// question. Clones share the probes.
#[derive(Clone, Default)]
pub struct Health(Arc<Mutex<Vec<Probe>>>);

/// Why not ready, or `None` when ready; asked often: cheap, and never blocking.
pub type Probe = Arc<dyn Fn() -> Option<String> + Send + Sync>;

impl Health {
    /// Adds a probe, asked from now on.
    pub fn add(&self, probe: impl Fn() -> Option<String> + Send + Sync + 'static) {
        self.0.lock().expect("not poisoned").push(Arc::new(probe));
    }

    /// The first probe's reason not to be ready, if any says one.
    pub fn unready(&self) -> Option<String> {
        let probes = self.0.lock().expect("not poisoned").clone();
        probes.iter().find_map(|p| p())
    }
}

impl SourceContext {
    /// Waits until the process reaches `phase` (or a later one).
    pub async fn reached(phase: &mut tokio::sync::watch::Receiver<Phase>, at: Phase) {
        let rank = |p: Phase| p as u8;
        let _ = phase.wait_for(|p| rank(*p) >= rank(at)).await;
    }
}

/// A source of requests (HTTP, Kafka, the Kafka feedback reader, ...): built from its spec,
/// then started on the live graph. It follows reloads through [`SourceContext::live`] and the
/// process's life through [`SourceContext::phase`]; the task it returns ends once it has
/// stopped and drained. Every source serves requests through [`crate::request::Pipeline`].
#[async_trait::async_trait]
pub trait Source: Send + Sync {
    /// A short name for logs: `http`, `kafka`, `kafka feedback`.
    fn name(&self) -> &'static str;
    /// Starts serving; the task ends when the source has stopped.
    async fn start(
        &mut self,
        ctx: SourceContext,
    ) -> Result<tokio::task::JoinHandle<()>, StartError>;
    /// A reload replaced the graph with `live`'s, which is also sent on
    /// [`SourceContext::live`]: sources that read that per request need do nothing; a source
    /// that keeps its own handle swaps it here, before the reload is answered.
    fn reload(&self, _live: &Live) {}
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn health_says_the_first_reason_not_to_be_ready() {
        let health = Health::default();
        assert_eq!(health.unready(), None);
        let down = Arc::new(Mutex::new(Some("broker down".to_owned())));
        let probe = Arc::clone(&down);
        health.clone().add(|| None);
        health.add(move || probe.lock().unwrap().clone());
        assert_eq!(health.unready().as_deref(), Some("broker down"));
        *down.lock().unwrap() = None;
        assert_eq!(health.unready(), None);
    }
}
