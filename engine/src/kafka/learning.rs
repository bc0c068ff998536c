//! Learning that crosses processes, over Kafka topics every replica reads in full:
//!
//! - **Shared learning** (`policy.share: kafka://HOST:PORT/TOPIC` on a bandit router): each
//!   replica publishes every reward its router takes and applies the rewards the others
//!   publish, so replicas behind one load balancer learn together.
//! - **Feedback from Kafka** (`sources.kafka.feedback_topic`): rewards as messages, in the
//!   feedback API's shapes. Each is credited by the replica that routed the response: the one
//!   that remembers its id.
//!
//! Both read every partition without a consumer group and without committing: feedback from
//! its end at start (the ids a process can credit are its own), shared learning from when the
//! router's restored state was saved (what it missed while down), else from its end.

use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use futures_util::stream::FuturesUnordered;
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::message::{Header, Headers, Message, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::{Offset, TopicPartitionList};
use tokio::sync::{mpsc, watch};

use super::ClientError;
use super::client::{self, Context};
use crate::error::{Error, ErrorKind};
use crate::graph::Graph;
use crate::learning::{Replicated, ShareLink};
use crate::sources::{KafkaSourceSpec, Phase, Source, SourceContext};

/// On shared updates: the process that published it (it skips its own).
pub const REPLICA_HEADER: &str = "x-servegraph-replica";

/// Updates a router may have waiting for the broker; past it they are dropped and logged.
const OUTBOX: usize = 10_000;

/// This process, among the replicas.
fn replica() -> &'static str {
    static ID: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    ID.get_or_init(crate::protocol::new_id)
}

/// How long a reader waits before trying again to position itself on its topic.
const RETRY: Duration = Duration::from_secs(5);

type Reader = Arc<StreamConsumer<Context>>;

/// A consumer for `topic` (not yet positioned: [`position`]); `client` names it in logs and
/// metrics.
fn reader(
    brokers: &str,
    options: &[(String, String)],
    topic: &str,
    client: &str,
) -> Result<Reader, ClientError> {
    let mut config = client::config(brokers, &[]);
    config
        // Partitions are assigned, never subscribed: the group only names the client.
        .set("group.id", format!("servegraph-{}", replica()))
        .set("enable.auto.commit", "false")
        .set("fetch.wait.max.ms", "50");
    for (k, v) in options {
        config.set(k, v);
    }
    let consumer: StreamConsumer<Context> = config
        .create_with_context(Context::new(client, brokers))
        .map_err(ClientError::create(format!(
            "a Kafka consumer for `{topic}`"
        )))?;
    Ok(Arc::new(consumer))
}

/// Positions `consumer` on every partition of `topic`, at the first message published at or
/// after `since`, or else at their current ends: it sees every message published from then
/// on. The topic must exist.
async fn position(
    consumer: &Reader,
    brokers: &str,
    topic: &str,
    since: Option<std::time::SystemTime>,
) -> Result<(), ClientError> {
    let consumer = Arc::clone(consumer);
    let topic_owned = topic.to_owned();
    let brokers_owned = brokers.to_owned();
    tokio::task::spawn_blocking(move || {
        let timeout = Duration::from_secs(10);
        let metadata = consumer
            .fetch_metadata(Some(&topic_owned), timeout)
            .map_err(|source| ClientError::Unreachable {
                brokers: brokers_owned.clone(),
                source,
            })?;
        consumer.context().connection.mark_up();
        let partitions: Vec<i32> = metadata
            .topics()
            .iter()
            .filter(|t| t.name() == topic_owned && t.error().is_none())
            .flat_map(|t| t.partitions().iter().map(|p| p.id()))
            .collect();
        if partitions.is_empty() {
            return Err(ClientError::NoTopic {
                topic: topic_owned,
                brokers: brokers_owned,
            });
        }
        let mut list = TopicPartitionList::new();
        for &p in &partitions {
            let (_, high) = consumer
                .fetch_watermarks(&topic_owned, p, timeout)
                .map_err(|source| ClientError::Position {
                    doing: format!("read the end of `{topic_owned}` [{p}]"),
                    source,
                })?;
            list.add_partition_offset(&topic_owned, p, Offset::Offset(high))?;
        }
        if let Some(ms) = since
            .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
            .map(|d| d.as_millis() as i64)
        {
            let mut times = TopicPartitionList::new();
            for &p in &partitions {
                times.add_partition_offset(&topic_owned, p, Offset::Offset(ms))?;
            }
            let found = consumer
                .offsets_for_times(times, timeout)
                .map_err(|source| ClientError::Position {
                    doing: format!("find where `{topic_owned}` was at the saved state's time"),
                    source,
                })?;
            // Partitions with nothing since then stay at their ends.
            for e in found.elements() {
                if let Offset::Offset(o) = e.offset()
                    && o >= 0
                {
                    list.set_partition_offset(&topic_owned, e.partition(), Offset::Offset(o))?;
                }
            }
        }
        consumer
            .assign(&list)
            .map_err(|source| ClientError::Position {
                doing: format!("read `{topic_owned}`"),
                source,
            })?;
        Ok(())
    })
    .await
    .map_err(|source| ClientError::Panicked {
        topic: topic.to_owned(),
        source,
    })?
}

/// Positions `consumer` (see [`position`]), trying again every few seconds while the brokers
/// cannot be reached (or the topic is missing); `false` when `give_up` said so first.
async fn position_patiently(
    consumer: &Reader,
    brokers: &str,
    topic: &str,
    since: Option<std::time::SystemTime>,
    mut give_up: impl FnMut() -> bool,
) -> bool {
    loop {
        match position(consumer, brokers, topic, since).await {
            Ok(()) => return true,
            Err(e) => {
                if crate::logs::first_in_a_while(&("kafka position", topic, e.to_string())) {
                    tracing::warn!(%topic, error = %e, "cannot read the topic yet; trying again every {} s", RETRY.as_secs());
                }
            }
        }
        let deadline = tokio::time::Instant::now() + RETRY;
        while tokio::time::Instant::now() < deadline {
            if give_up() {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
}

/// Starts sharing the learning of every step of `graph` that asks for it. Each task ends
/// when its step is let go (at shutdown, once the last request is answered), after
/// publishing what the step learnt last.
pub async fn share(graph: &Graph) -> Result<Vec<tokio::task::JoinHandle<()>>, ClientError> {
    let mut tasks = Vec::new();
    for (name, step) in graph.learners() {
        if let Some(link) = step.share() {
            tasks.push(share_one(name, link).await?);
        }
    }
    Ok(tasks)
}

async fn share_one(
    name: &str,
    link: ShareLink,
) -> Result<tokio::task::JoinHandle<()>, ClientError> {
    let client = format!("share:{name}");
    let consumer = reader(&link.brokers, &[], &link.topic, &client)?;
    // The topic is read from where the saved state left it once the brokers answer (they
    // were checked at start-up; a reader that cannot reach them tries again in its task).
    let positioned = client::was_reached(&link.brokers)
        && tokio::time::timeout(
            Duration::from_secs(15),
            position(&consumer, &link.brokers, &link.topic, link.since),
        )
        .await
        .is_ok_and(|r| r.is_ok());
    let producer: FutureProducer<Context> = client::config(&link.brokers, &[])
        .set("linger.ms", "5")
        .set("message.timeout.ms", "10000")
        .create_with_context(Context::new(&format!("{client} producer"), &link.brokers))
        .map_err(ClientError::create(format!(
            "the Kafka producer for `{}`",
            link.topic
        )))?;
    let (tx, mut outbox) = mpsc::channel::<Vec<u8>>(OUTBOX);
    link.learner.connect(tx);
    // The task must not keep the step alive: a step let go (at shutdown) saves its state.
    let learner: std::sync::Weak<dyn Replicated> = Arc::downgrade(&link.learner);
    drop(link.learner);
    let (name, topic, brokers, since) = (name.to_owned(), link.topic, link.brokers, link.since);
    tracing::info!(router = %name, %topic, replica = replica(), "sharing learning through Kafka");
    Ok(tokio::spawn(async move {
        let gone = || learner.strong_count() == 0;
        if !positioned && !position_patiently(&consumer, &brokers, &topic, since, gone).await {
            return;
        }
        let mut deliveries = FuturesUnordered::new();
        let (mut sent, mut applied, mut failed) = (0u64, 0u64, 0u64);
        loop {
            tokio::select! {
                update = outbox.recv() => {
                    let Some(update) = update else { break };
                    let headers = OwnedHeaders::new().insert(Header {
                        key: REPLICA_HEADER,
                        value: Some(replica()),
                    });
                    let record = FutureRecord::to(&topic).key(&name).payload(&update).headers(headers);
                    match producer.send_result(record) {
                        Ok(d) => {
                            sent += 1;
                            deliveries.push(d);
                        }
                        Err((e, _)) => {
                            failed += 1;
                            if crate::logs::first_in_a_while(&("kafka publish", &topic, e.to_string())) {
                                tracing::warn!(router = %name, %topic, error = %e, "could not publish a learning update (logged once a minute)");
                            }
                        }
                    }
                }
                Some(d) = deliveries.next(), if !deliveries.is_empty() => {
                    if !matches!(d, Ok(Ok(_))) {
                        failed += 1;
                        if crate::logs::first_in_a_while(&("kafka undelivered", &topic)) {
                            tracing::warn!(router = %name, %topic, "a learning update was not delivered (logged once a minute)");
                        }
                    }
                }
                m = consumer.recv() => match m {
                    Ok(m) => {
                        let own = m.headers().is_some_and(|h| {
                            h.iter().any(|h| h.key == REPLICA_HEADER && h.value == Some(replica().as_bytes()))
                        });
                        if own || m.key() != Some(name.as_bytes()) {
                            continue;
                        }
                        let Some(learner) = learner.upgrade() else { break };
                        match learner.learn(m.payload().unwrap_or_default()) {
                            Ok(()) => applied += 1,
                            Err(e) => tracing::warn!(router = %name, %topic, offset = m.offset(), error = %e, "ignored a learning update"),
                        }
                    }
                    Err(e) => {
                        consumer.context().connection.failed(&format!("reading shared learning from `{topic}`"), &e, "");
                        tokio::time::sleep(Duration::from_millis(200)).await;
                    }
                },
            }
        }
        while let Some(d) = deliveries.next().await {
            if !matches!(d, Ok(Ok(_))) {
                failed += 1;
            }
        }
        tracing::info!(router = %name, %topic, sent, applied, failed, "stopped sharing learning");
    }))
}

/// Starts crediting the rewards on `spec.feedback_topic` (if set) to the graph's routers.
/// A message is `{"id", "reward"}`, a batch of those, or Seldon's shape; the `x-model-name`
/// header or a `model` field names the router (default: every router that remembers the id).
/// The Kafka feedback reader of a graph whose Kafka source names a `feedback_topic`.
pub struct FeedbackSource {
    spec: KafkaSourceSpec,
    topic: String,
}

impl FeedbackSource {
    pub fn from_graph(graph: &Graph) -> Option<Box<dyn Source>> {
        let spec = graph.sources.kafka.clone()?;
        let topic = spec.feedback_topic.clone()?;
        Some(Box::new(FeedbackSource { spec, topic }))
    }
}

#[async_trait::async_trait]
impl Source for FeedbackSource {
    fn name(&self) -> &'static str {
        "kafka feedback"
    }

    async fn start(
        &mut self,
        ctx: SourceContext,
    ) -> Result<tokio::task::JoinHandle<()>, crate::sources::StartError> {
        feedback(&self.spec, self.topic.clone(), ctx.live, ctx.phase)
            .await
            .map_err(Into::into)
    }
}

/// Reads `topic` until the process is stopping, crediting the feedback it carries.
async fn feedback(
    spec: &KafkaSourceSpec,
    topic: String,
    live: watch::Receiver<crate::graph::Live>,
    mut phase: watch::Receiver<Phase>,
) -> Result<tokio::task::JoinHandle<()>, ClientError> {
    let options: Vec<(String, String)> = spec
        .options
        .iter()
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    let consumer = reader(&spec.brokers, &options, &topic, "feedback")?;
    // From the topic's end now, while the brokers answer; later, in the task, if they do not.
    let positioned = client::was_reached(&spec.brokers)
        && tokio::time::timeout(
            Duration::from_secs(15),
            position(&consumer, &spec.brokers, &topic, None),
        )
        .await
        .is_ok_and(|r| r.is_ok());
    tracing::info!(%topic, "taking feedback from Kafka");
    let brokers = spec.brokers.clone();
    Ok(tokio::spawn(async move {
        if !positioned {
            let stopping = phase.clone();
            let gone = move || *stopping.borrow() == Phase::Stopping;
            if !position_patiently(&consumer, &brokers, &topic, None, gone).await {
                return;
            }
        }
        let mut counts = Counts::default();
        loop {
            tokio::select! {
                m = consumer.recv() => match m {
                    Ok(m) => {
                        // The graph being served now (a reload swaps it).
                        let (graph, tracker) = {
                            let live = live.borrow();
                            (Arc::clone(&live.graph), live.tracker.clone())
                        };
                        let model = m.headers().and_then(|h| {
                            h.iter()
                                .find(|h| h.key.eq_ignore_ascii_case(super::MODEL_HEADER))
                                .and_then(|h| h.value)
                                .map(|v| String::from_utf8_lossy(v).into_owned())
                        });
                        if let Err(e) = credit(&graph, tracker.as_ref(), model.as_deref(), m.payload().unwrap_or_default(), &mut counts) {
                            counts.invalid += 1;
                            tracing::warn!(%topic, partition = m.partition(), offset = m.offset(), error = %e, "ignored a feedback message");
                        }
                    }
                    Err(e) => {
                        consumer.context().connection.failed(&format!("reading feedback from `{topic}`"), &e, "");
                        tokio::time::sleep(Duration::from_millis(200)).await;
                    }
                },
                _ = SourceContext::reached(&mut phase, Phase::Stopping) => break,
            }
        }
        tracing::info!(%topic, accepted = counts.accepted, duplicates = counts.duplicates, others = counts.others, invalid = counts.invalid, "stopped taking feedback");
    }))
}

/// What became of the feedback read from Kafka.
#[derive(Debug, Default, PartialEq)]
struct Counts {
    accepted: u64,
    duplicates: u64,
    /// Ids this process does not remember: another replica's (or expired).
    others: u64,
    invalid: u64,
}

/// Credits one feedback message to the router(s) that remember its ids; each reward taken
/// is a tracking event, when the graph is tracked.
fn credit(
    graph: &Graph,
    tracker: Option<&crate::tracking::Tracker>,
    model: Option<&str>,
    payload: &[u8],
    counts: &mut Counts,
) -> crate::Result<()> {
    let value: serde_json::Value = serde_json::from_slice(payload)
        .map_err(|e| Error::bad_request(format!("malformed feedback: {e}")))?;
    let (items, _) = crate::feedback::parse(&value)?;
    let field = value.get("model").and_then(serde_json::Value::as_str);
    let model = model.or(field);
    let routers: Vec<(&str, &dyn crate::Learner)> = match model {
        Some(m) => vec![(
            m,
            graph
                .learner(m)
                .ok_or_else(|| Error::not_found(format!("no router `{m}` that takes feedback")))?,
        )],
        None => graph.learners(),
    };
    for item in items {
        let Some(id) = item.id else {
            // Only an id says which replica routed it; a bare route would count once per replica.
            return Err(Error::bad_request(
                "feedback from Kafka needs the response's id",
            ));
        };
        let mut credited = false;
        for (name, router) in &routers {
            match router.feedback(id, item.reward) {
                Ok(true) => {
                    counts.accepted += 1;
                    credited = true;
                    if let Some(t) = tracker {
                        t.emit(crate::tracking::TrackingEvent::feedback(
                            &graph.name,
                            name,
                            id,
                            item.reward,
                            item.label,
                        ));
                    }
                }
                Ok(false) => {
                    counts.duplicates += 1;
                    credited = true;
                }
                Err(e) if e.kind == ErrorKind::NotFound => {}
                Err(e) => return Err(e),
            }
        }
        if !credited {
            counts.others += 1;
        }
    }
    Ok(())
}
