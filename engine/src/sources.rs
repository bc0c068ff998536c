//! Sources besides HTTP, as graph files declare them (`sources:`). The Kafka source's
//! runtime is in `kafka` (feature `kafka`); its settings are here so every build validates
//! them alike.

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::Deserialize;

/// `sources:` in a graph file.
#[derive(Clone, Debug, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SourcesSpec {
    /// Consume requests from Kafka topics and produce the results to a topic.
    #[serde(default)]
    pub kafka: Option<KafkaSourceSpec>,
}

/// `sources: {kafka: {...}}`.
#[derive(Clone, Debug, Deserialize, JsonSchema, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct KafkaSourceSpec {
    /// Bootstrap brokers, `host:port[,host:port...]`.
    pub brokers: String,
    /// The consumer group: processes sharing it split the topics' partitions.
    pub group: String,
    /// Topics of OIP V2 JSON requests.
    pub topics: Vec<String>,
    /// Where results go (same key as the request, `correlation-id` header = request id).
    pub output_topic: String,
    /// Where requests that cannot be served go (undecodable, unknown model, wrong tensors),
    /// with the error in headers. Without one they are logged, counted and skipped.
    #[serde(default)]
    pub dlq_topic: Option<String>,
    /// Rewards for routers that learn, in the feedback API's shapes (`{"id", "reward"}`, a
    /// batch, or Seldon's); every process reads all of it and credits the ids it routed.
    #[serde(default)]
    pub feedback_topic: Option<String>,
    /// Messages processed at once, across partitions (default 256); consumption pauses past it.
    #[serde(default = "default_max_in_flight")]
    pub max_in_flight: usize,
    /// How often finished offsets are committed, in milliseconds (default 500).
    #[serde(default = "default_commit_ms")]
    pub commit_interval_ms: u64,
    /// Extra librdkafka settings for the consumer and producer (`security.protocol`, ...).
    #[serde(default)]
    pub options: BTreeMap<String, String>,
}

fn default_max_in_flight() -> usize {
    256
}

fn default_commit_ms() -> u64 {
    500
}

impl KafkaSourceSpec {
    pub fn check(&self) -> Result<(), String> {
        if self.brokers.trim().is_empty() || self.group.trim().is_empty() {
            return Err("`brokers` and `group` must not be empty".into());
        }
        if self.topics.is_empty() {
            return Err("`topics` must name at least one topic".into());
        }
        if self.topics.contains(&self.output_topic)
            || self
                .dlq_topic
                .as_ref()
                .is_some_and(|d| self.topics.contains(d))
        {
            return Err(
                "`output_topic` and `dlq_topic` must not be input topics (that would loop)".into(),
            );
        }
        if let Some(f) = &self.feedback_topic
            && (self.topics.contains(f)
                || *f == self.output_topic
                || self.dlq_topic.as_ref() == Some(f))
        {
            return Err(
                "`feedback_topic` must not be an input, output or dead-letter topic".into(),
            );
        }
        if self.max_in_flight == 0 || self.commit_interval_ms == 0 {
            return Err("`max_in_flight` and `commit_interval_ms` must be at least 1".into());
        }
        Ok(())
    }
}

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
    pub live: tokio::sync::watch::Receiver<crate::graph::Live>,
    pub phase: tokio::sync::watch::Receiver<Phase>,
    /// How long in-flight work may take to finish once stopping.
    pub drain: std::time::Duration,
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
    async fn start(&mut self, ctx: SourceContext) -> Result<tokio::task::JoinHandle<()>, String>;
    /// A reload replaced the graph with `live`'s, which is also sent on
    /// [`SourceContext::live`]: sources that read that per request need do nothing; a source
    /// that keeps its own handle swaps it here, before the reload is answered.
    fn reload(&self, _live: &crate::graph::Live) {}
}
