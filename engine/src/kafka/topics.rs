//! The Kafka topics a graph uses ([`Graph::kafka_topics`]: its Kafka source's, its tracking
//! stream's, its queue steps', its routers' shared learning), checked on their brokers:
//! `validate` reports every topic that does not exist and every broker it cannot reach;
//! `serve` creates the missing ones when the graph asks for it (`create_topics`), refuses to
//! start when one is missing, and when brokers cannot be reached starts anyway, not ready,
//! and checks again until they answer.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::error::RDKafkaErrorCode;
use rdkafka::metadata::Metadata;

use super::client::{self, Connection, Context};
use crate::graph::Graph;
use crate::graph::sources::CreateTopicsSpec;
use crate::sources::Health;
use crate::step::KafkaTopic;

/// How long brokers have to answer a check.
pub const TIMEOUT: Duration = Duration::from_secs(10);

/// How often `serve` checks again the topics of brokers it could not reach.
const RECHECK: Duration = Duration::from_secs(5);

/// One topic on one set of brokers, and every use of it.
#[derive(Clone, Debug)]
pub struct Topic {
    pub brokers: String,
    pub topic: String,
    pub used_by: Vec<String>,
    /// Where the first use is written.
    pub span: Option<marked_yaml::Span>,
}

/// What a check found wrong.
#[derive(Clone, Debug, thiserror::Error)]
pub enum Problem {
    #[error("cannot reach the Kafka brokers {brokers} (used by {}): {error}", .used_by.join(", "))]
    Unreachable {
        brokers: String,
        used_by: Vec<String>,
        error: String,
        span: Option<marked_yaml::Span>,
    },
    #[error(
        "Kafka topic `{}` ({}) does not exist on {}: create it, or set `create_topics: \
         {{partitions: N, replication: N}}` to have servegraph create it",
        .0.topic, .0.used_by.join(", "), .0.brokers
    )]
    Missing(Topic),
    #[error("cannot create Kafka topic `{}` ({}) on {}: {error}", .topic.topic, .topic.used_by.join(", "), .topic.brokers)]
    NotCreated { topic: Topic, error: String },
}

impl Problem {
    /// Where the graph file says what the problem is about.
    pub fn span(&self) -> Option<&marked_yaml::Span> {
        match self {
            Problem::Unreachable { span, .. } => span.as_ref(),
            Problem::Missing(t) | Problem::NotCreated { topic: t, .. } => t.span.as_ref(),
        }
    }

    fn unreachable(&self) -> bool {
        matches!(self, Problem::Unreachable { .. })
    }
}

/// What checking found.
#[derive(Debug, Default)]
pub struct Checked {
    pub problems: Vec<Problem>,
    /// Topics created (or, when checking without creating, that would be).
    pub created: Vec<Topic>,
}

/// Whether a check may create what `create_topics` asks for (`serve`), or only says what
/// it would create (`validate`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Create {
    Yes,
    DryRun,
}

/// One set of brokers, the settings to reach them with, and the topics used there.
struct Brokers {
    brokers: String,
    options: Vec<(String, String)>,
    topics: Vec<Topic>,
}

/// The brokers of `uses` and, for each, its topics with their uses, in the graph's order.
fn by_brokers(uses: &[KafkaTopic]) -> Vec<Brokers> {
    let mut groups: Vec<Brokers> = Vec::new();
    for u in uses {
        let i = match groups.iter().position(|g| g.brokers == u.brokers) {
            Some(i) => i,
            None => {
                groups.push(Brokers {
                    brokers: u.brokers.clone(),
                    options: Vec::new(),
                    topics: Vec::new(),
                });
                groups.len() - 1
            }
        };
        let group = &mut groups[i];
        // The source's settings (security, ...) reach its brokers: the check uses them.
        for o in &u.options {
            if !group.options.contains(o) {
                group.options.push(o.clone());
            }
        }
        match group.topics.iter_mut().find(|t| t.topic == u.topic) {
            Some(t) if !t.used_by.contains(&u.used_by) => t.used_by.push(u.used_by.clone()),
            Some(_) => {}
            None => group.topics.push(Topic {
                brokers: u.brokers.clone(),
                topic: u.topic.clone(),
                used_by: vec![u.used_by.clone()],
                span: u.span,
            }),
        }
    }
    groups
}

/// Checks that each topic of `uses` exists on its brokers; creates the missing ones with
/// `create`'s settings when `mode` is [`Create::Yes`].
pub async fn check(
    uses: &[KafkaTopic],
    create: Option<CreateTopicsSpec>,
    mode: Create,
    timeout: Duration,
) -> Checked {
    let mut checked = Checked::default();
    for b in by_brokers(uses) {
        let one = check_brokers(&b.brokers, &b.options, b.topics, create, mode, timeout).await;
        checked.problems.extend(one.problems);
        checked.created.extend(one.created);
    }
    checked
}

async fn check_brokers(
    brokers: &str,
    options: &[(String, String)],
    topics: Vec<Topic>,
    create: Option<CreateTopicsSpec>,
    mode: Create,
    timeout: Duration,
) -> Checked {
    let unreachable = |error: String, topics: &[Topic]| Problem::Unreachable {
        brokers: brokers.to_owned(),
        used_by: topics
            .iter()
            .flat_map(|t| t.used_by.clone())
            .fold(Vec::new(), |mut all, u| {
                if !all.contains(&u) {
                    all.push(u);
                }
                all
            }),
        error,
        span: topics.first().and_then(|t| t.span),
    };
    let context = Context {
        connection: Connection::unmetered("admin", brokers),
    };
    let admin: AdminClient<Context> =
        match client::config(brokers, options).create_with_context(context) {
            Ok(a) => a,
            Err(e) => {
                return Checked {
                    problems: vec![unreachable(format!("cannot create a client: {e}"), &topics)],
                    created: Vec::new(),
                };
            }
        };
    let admin = Arc::new(admin);
    let metadata: Result<Metadata, String> = {
        let admin = Arc::clone(&admin);
        tokio::task::spawn_blocking(move || {
            admin
                .inner()
                .fetch_metadata(None, timeout)
                .map_err(|e| e.to_string())
        })
        .await
        .unwrap_or_else(|e| Err(format!("the check panicked: {e}")))
    };
    let metadata = match metadata {
        Ok(m) => m,
        Err(e) => {
            return Checked {
                problems: vec![unreachable(e, &topics)],
                created: Vec::new(),
            };
        }
    };
    client::mark_reached(brokers);
    let exists: std::collections::HashSet<&str> = metadata
        .topics()
        .iter()
        .filter(|t| t.error().is_none())
        .map(|t| t.name())
        .collect();
    let missing: Vec<Topic> = topics
        .into_iter()
        .filter(|t| !exists.contains(t.topic.as_str()))
        .collect();
    let mut checked = Checked::default();
    let Some(create) = create else {
        checked.problems = missing.into_iter().map(Problem::Missing).collect();
        return checked;
    };
    if missing.is_empty() || mode == Create::DryRun {
        checked.created = missing;
        return checked;
    }
    let new: Vec<NewTopic> = missing
        .iter()
        .map(|t| {
            NewTopic::new(
                &t.topic,
                create.partitions,
                TopicReplication::Fixed(create.replication),
            )
        })
        .collect();
    let options = AdminOptions::new().operation_timeout(Some(timeout));
    let results = match admin.create_topics(&new, &options).await {
        Ok(r) => r,
        Err(e) => {
            checked.problems = missing
                .into_iter()
                .map(|topic| Problem::NotCreated {
                    topic,
                    error: e.to_string(),
                })
                .collect();
            return checked;
        }
    };
    let outcome: BTreeMap<String, Option<RDKafkaErrorCode>> = results
        .into_iter()
        .map(|r| match r {
            Ok(name) => (name, None),
            Err((name, code)) => (name, Some(code)),
        })
        .collect();
    for topic in missing {
        match outcome.get(&topic.topic) {
            // Another replica created it first: it exists, as asked.
            Some(None) | Some(Some(RDKafkaErrorCode::TopicAlreadyExists)) => {
                checked.created.push(topic)
            }
            Some(Some(code)) => checked.problems.push(Problem::NotCreated {
                topic,
                error: code.to_string(),
            }),
            None => checked.problems.push(Problem::NotCreated {
                topic,
                error: "the broker did not say".into(),
            }),
        }
    }
    checked
}

/// The topics and their brokers, `` `a` on HOST:PORT, `b` on HOST:PORT ``.
pub fn names(topics: &[Topic]) -> String {
    topics
        .iter()
        .map(|t| format!("`{}` on {}", t.topic, t.brokers))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Why `serve` refuses to start: topics that do not exist (or could not be created) on
/// brokers that answered.
#[derive(Debug, thiserror::Error)]
#[error("{}", .0.iter().map(|p| p.to_string()).collect::<Vec<_>>().join("\n"))]
pub struct TopicsError(pub Vec<Problem>);

/// `serve`'s start-up check of `graph`'s topics (creating them when it asks for it): a
/// topic missing on brokers that answered is an error. Brokers that do not answer are
/// logged; a task checks their topics again every few seconds until they answer, and
/// `health` says why the process is not ready meanwhile (and, should a topic be missing
/// then, which one).
pub async fn at_start(graph: &Graph, health: &Health) -> Result<(), TopicsError> {
    if graph.kafka_topics.is_empty() {
        return Ok(());
    }
    let (unreachable, fatal) = check_serving(graph).await;
    if !fatal.is_empty() {
        return Err(TopicsError(fatal));
    }
    if unreachable.is_empty() {
        return Ok(());
    }
    for p in &unreachable {
        tracing::warn!(
            "{p}; starting without them (not ready), checking again every {} s",
            RECHECK.as_secs()
        );
    }
    let later: Vec<KafkaTopic> = graph
        .kafka_topics
        .iter()
        .filter(|t| {
            unreachable
                .iter()
                .any(|p| matches!(p, Problem::Unreachable { brokers, .. } if *brokers == t.brokers))
        })
        .cloned()
        .collect();
    let pending = Arc::new(Mutex::new(Some(unreachable[0].to_string())));
    let probe = Arc::clone(&pending);
    health.add(move || probe.lock().expect("not poisoned").clone());
    let create = graph.create_topics;
    tokio::spawn(async move {
        loop {
            tokio::time::sleep(RECHECK).await;
            let checked = check(&later, create, Create::Yes, TIMEOUT).await;
            if !checked.created.is_empty() {
                tracing::info!(topics = %names(&checked.created), "created Kafka topics");
            }
            let why = checked.problems.first().map(Problem::to_string);
            for p in checked.problems.iter().filter(|p| !p.unreachable()) {
                if crate::logs::first_in_a_while(&("kafka topic", p.to_string())) {
                    tracing::error!("{p}");
                }
            }
            let done = why.is_none();
            *pending.lock().expect("not poisoned") = why;
            if done {
                tracing::info!("the Kafka topics the graph uses are all there");
                break;
            }
        }
    });
    Ok(())
}

/// A serving process's check of `graph`'s topics, creating those it asks for (and saying
/// so): the problems of brokers that did not answer, and the others.
async fn check_serving(graph: &Graph) -> (Vec<Problem>, Vec<Problem>) {
    let checked = check(
        &graph.kafka_topics,
        graph.create_topics,
        Create::Yes,
        TIMEOUT,
    )
    .await;
    if !checked.created.is_empty() {
        tracing::info!(topics = %names(&checked.created), "created Kafka topics");
    }
    checked.problems.into_iter().partition(Problem::unreachable)
}

/// A reloaded graph's check: its topics must exist (or be created) where its brokers answer.
pub async fn for_reload(graph: &Graph) -> Result<(), String> {
    if graph.kafka_topics.is_empty() {
        return Ok(());
    }
    let (unreachable, fatal) = check_serving(graph).await;
    for p in unreachable {
        tracing::warn!("{p}");
    }
    if fatal.is_empty() {
        Ok(())
    } else {
        Err(TopicsError(fatal).to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn used(brokers: &str, topic: &str, by: &str) -> KafkaTopic {
        KafkaTopic {
            brokers: brokers.into(),
            topic: topic.into(),
            used_by: by.into(),
            options: Vec::new(),
            span: None,
        }
    }

    #[test]
    fn topics_are_checked_once_per_brokers_with_every_use() {
        let groups = by_brokers(&[
            used("a:1", "stage2", "queue step `handoff`"),
            used("b:1", "events", "the tracking sink"),
            used("a:1", "stage2", "`sources.kafka.topics`"),
            used("a:1", "results", "`sources.kafka.output_topic`"),
        ]);
        let seen: Vec<String> = groups
            .iter()
            .map(|g| {
                let topics: Vec<String> = g
                    .topics
                    .iter()
                    .map(|t| format!("{} ({})", t.topic, t.used_by.join(", ")))
                    .collect();
                format!("{}: {}", g.brokers, topics.join("; "))
            })
            .collect();
        assert_eq!(
            seen,
            [
                "a:1: stage2 (queue step `handoff`, `sources.kafka.topics`); results \
                 (`sources.kafka.output_topic`)",
                "b:1: events (the tracking sink)",
            ]
        );
    }

    #[test]
    fn problems_name_the_topic_its_uses_and_the_brokers() {
        let topic = Topic {
            brokers: "h:9092".into(),
            topic: "fb".into(),
            used_by: vec!["`sources.kafka.feedback_topic`".into()],
            span: None,
        };
        assert_eq!(
            Problem::Missing(topic.clone()).to_string(),
            "Kafka topic `fb` (`sources.kafka.feedback_topic`) does not exist on h:9092: create \
             it, or set `create_topics: {partitions: N, replication: N}` to have servegraph \
             create it"
        );
        let p = Problem::Unreachable {
            brokers: "h:9092".into(),
            used_by: vec!["`sources.kafka.topics`".into(), "the tracking sink".into()],
            error: "timed out".into(),
            span: None,
        };
        assert_eq!(
            p.to_string(),
            "cannot reach the Kafka brokers h:9092 (used by `sources.kafka.topics`, the \
             tracking sink): timed out"
        );
    }
}
