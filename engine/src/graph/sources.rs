//! The `sources:` section of a graph file: the settings of the sources besides HTTP and gRPC
//! (their runtimes are in `crate::kafka`, behind feature `kafka`; the settings are read and
//! checked in every build).

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::Deserialize;

/// `sources:` in a graph file.
#[derive(Clone, Debug, Default, Deserialize, JsonSchema, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct SourcesSpec {
    /// Consume requests from Kafka topics and produce the results to a topic.
    #[serde(default)]
    pub kafka: Option<KafkaSourceSpec>,
}

impl SourcesSpec {
    /// The sources whose settings differ from `old`'s (a reload does not restart them).
    pub fn changed(&self, old: &SourcesSpec) -> Vec<&'static str> {
        let mut changed = Vec::new();
        if self.kafka != old.kafka {
            changed.push("kafka");
        }
        changed
    }

    /// Each declared source's own checks: which one (its key), and what is wrong.
    pub fn check(&self) -> Vec<(&'static str, String)> {
        let mut problems = Vec::new();
        if let Some(Err(e)) = self.kafka.as_ref().map(KafkaSourceSpec::check) {
            problems.push(("kafka", e));
        }
        problems
    }
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
    /// Readiness follows the brokers: the server reports not ready while the source cannot
    /// reach them (at once when it never could, else after `broker_grace_ms`). Set it to
    /// `false` for a graph that also serves HTTP clients and should stay ready without Kafka.
    #[serde(default = "default_true")]
    pub ready_needs_broker: bool,
    /// How long the source may lose its brokers before the server reports not ready, in
    /// milliseconds (default 30000): a broker restarting does not turn a replica away.
    #[serde(default = "default_broker_grace_ms")]
    pub broker_grace_ms: u64,
}

/// `create_topics:` in a graph file: the Kafka topics the graph uses that do not exist are
/// created at start-up, with these settings (topics that exist are left as they are).
#[derive(Clone, Copy, Debug, Deserialize, JsonSchema, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct CreateTopicsSpec {
    /// Partitions of each topic created.
    #[schemars(range(min = 1))]
    pub partitions: i32,
    /// Replicas of each partition (at most the number of brokers).
    #[schemars(range(min = 1))]
    pub replication: i32,
}

/// The Kafka topics a graph file uses, and whether it asks for the missing ones to be created.
#[derive(Clone, Debug, Default)]
pub struct KafkaUses {
    pub topics: Vec<crate::step::KafkaTopic>,
    pub create_topics: Option<CreateTopicsSpec>,
}

impl CreateTopicsSpec {
    pub fn check(&self) -> Result<(), String> {
        if self.partitions < 1 || self.replication < 1 {
            return Err("`partitions` and `replication` must be at least 1".into());
        }
        Ok(())
    }
}

fn default_true() -> bool {
    true
}

fn default_broker_grace_ms() -> u64 {
    30_000
}

fn default_max_in_flight() -> usize {
    256
}

fn default_commit_ms() -> u64 {
    500
}

impl KafkaSourceSpec {
    /// Every topic the source uses, with the field that names it.
    pub fn topics(&self) -> Vec<(&'static str, &str)> {
        let mut topics: Vec<(&'static str, &str)> =
            self.topics.iter().map(|t| ("topics", t.as_str())).collect();
        topics.push(("output_topic", &self.output_topic));
        topics.extend(self.dlq_topic.as_deref().map(|t| ("dlq_topic", t)));
        topics.extend(
            self.feedback_topic
                .as_deref()
                .map(|t| ("feedback_topic", t)),
        );
        topics
    }

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
