//! The Kafka source: consume OIP V2 requests from topics, run the graph, produce each result
//! to the output topic (same key, the input's headers, `correlation-id` = request id), and
//! send what cannot be served to the dead-letter topic with the error in headers.
//!
//! Delivery is at-least-once. Auto-commit is off; an offset is committed only after the
//! broker acknowledged its result (or dead-letter record), and only as part of a contiguous
//! finished prefix of its partition (see [`progress`]). Messages are processed concurrently
//! (`max_in_flight`, across partitions) but produced in offset order per partition. On a
//! rebalance, finished work of the revoked partitions is committed synchronously before they
//! go; unfinished work is not committed, so the new owner redoes it. On shutdown the source
//! stops consuming, finishes what is in flight, and commits.

pub mod client;
pub mod learning;
pub mod lines;
pub mod monitor;
pub mod progress;
pub mod queue;
pub mod topics;
pub mod tracking;

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::StreamExt;
use futures_util::stream::FuturesUnordered;
use rdkafka::config::{ClientConfig, RDKafkaLogLevel};
use rdkafka::consumer::{
    BaseConsumer, CommitMode, Consumer, ConsumerContext, Rebalance, StreamConsumer,
};
use rdkafka::error::KafkaError;
use rdkafka::message::{Header, Headers, Message, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord, Producer};
use rdkafka::{ClientContext, Offset, TopicPartitionList};
use tokio::sync::watch;

use crate::error::Error;
use crate::request::{Encoding, Headers as _, Pipeline, Request, SpanInfo, is_transient};
use crate::sources::{KafkaSourceSpec, Phase, Source, SourceContext};

/// Headers that address a model and operation, as on HTTP.
pub use crate::request::{MODEL_HEADER, VERSION_HEADER};
pub use tracking::tracking_sink;
/// `infer` (default) or `explain`.
pub const OPERATION_HEADER: &str = "x-operation";
/// On results: the request's id.
pub const CORRELATION_HEADER: &str = "correlation-id";

type Tp = (String, i32);

/// Why a Kafka client could not be made or set up: the source (or the sharing of learning)
/// does not start.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// `what` names the client: `the Kafka producer`, `a Kafka consumer for `topic``.
    #[error("cannot create {what}: {source}")]
    Create { what: String, source: KafkaError },
    #[error("cannot subscribe to {topics:?}: {source}")]
    Subscribe {
        topics: Vec<String>,
        source: KafkaError,
    },
    #[error("cannot reach the brokers {brokers}: {source}")]
    Unreachable { brokers: String, source: KafkaError },
    #[error("Kafka topic `{topic}` does not exist on {brokers}: create it first")]
    NoTopic { topic: String, brokers: String },
    /// Positioning a reader on a topic's partitions failed; `doing` says at what
    /// (`read the end of `topic` [0]`).
    #[error("cannot {doing}: {source}")]
    Position { doing: String, source: KafkaError },
    #[error("positioning the reader of `{topic}` panicked: {source}")]
    Panicked {
        topic: String,
        source: tokio::task::JoinError,
    },
    #[error(transparent)]
    Kafka(#[from] KafkaError),
}

impl ClientError {
    /// Creating the client `what` failed.
    fn create(what: impl Into<String>) -> impl FnOnce(KafkaError) -> ClientError {
        let what = what.into();
        move |source| ClientError::Create { what, source }
    }
}

/// What the rebalance callbacks share with the processing loop.
#[derive(Default)]
struct Shared {
    /// Each owned partition's finished prefix (the position to commit), updated by the loop
    /// as results are acknowledged: what a revocation commits before the partition goes.
    positions: HashMap<Tp, i64>,
    /// Partitions taken away: the loop stops committing them and drops their unfinished work
    /// (the new owner does it again from the committed position).
    revoked: HashSet<Tp>,
    /// How many times each partition was assigned: work consumed under an earlier
    /// assignment is not mixed with the current one's.
    epochs: HashMap<Tp, u64>,
}

impl Shared {
    /// Partitions are taken away: the finished prefix of each (to commit before they go).
    fn revoke(&mut self, partitions: &[Tp]) -> Vec<(Tp, i64)> {
        let mut commit = Vec::new();
        for tp in partitions {
            if let Some(pos) = self.positions.remove(tp) {
                commit.push((tp.clone(), pos));
            }
            self.revoked.insert(tp.clone());
        }
        commit
    }

    /// Partitions are given (again): a new assignment of each, nothing finished yet.
    fn assign(&mut self, partitions: &[Tp]) {
        for tp in partitions {
            self.revoked.remove(tp);
            self.positions.remove(tp);
            *self.epochs.entry(tp.clone()).or_default() += 1;
        }
    }

    /// The current assignment of `tp`, if it is owned.
    fn epoch(&self, tp: &Tp) -> Option<u64> {
        if self.revoked.contains(tp) {
            return None;
        }
        Some(self.epochs.get(tp).copied().unwrap_or(0))
    }

    /// The loop's acknowledged prefix of `tp` under assignment `epoch` moved to `pos`.
    fn advanced(&mut self, tp: &Tp, epoch: u64, pos: i64) {
        if self.epoch(tp) == Some(epoch) {
            self.positions.insert(tp.clone(), pos);
        }
    }
}

/// The partitions of a rebalance's list.
fn partitions_of(list: &TopicPartitionList) -> Vec<Tp> {
    list.elements()
        .iter()
        .map(|e| (e.topic().to_owned(), e.partition()))
        .collect()
}

struct ConsumerState {
    shared: Arc<Mutex<Shared>>,
    client: client::Context,
}

impl ClientContext for ConsumerState {
    fn log(&self, level: RDKafkaLogLevel, fac: &str, log_message: &str) {
        self.client.log(level, fac, log_message);
    }

    fn error(&self, error: KafkaError, reason: &str) {
        self.client.error(error, reason);
    }

    /// librdkafka's statistics (every `statistics.interval.ms`): whether a broker is up, and
    /// each consumed partition's lag and committed offset, as metrics.
    fn stats(&self, statistics: rdkafka::Statistics) {
        self.client.connection.observe(&statistics);
        for (name, topic) in &statistics.topics {
            for (&p, part) in &topic.partitions {
                if p >= 0 && part.fetch_state != "none" {
                    crate::metrics::kafka_partition(
                        name,
                        p,
                        part.consumer_lag.max(0),
                        part.committed_offset,
                    );
                }
            }
        }
    }
}

impl ConsumerContext for ConsumerState {
    fn pre_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        if let Rebalance::Revoke(list) = rebalance {
            let revoked = partitions_of(list);
            let finished = self.shared.lock().expect("not poisoned").revoke(&revoked);
            let mut commit = TopicPartitionList::new();
            for ((topic, partition), pos) in finished {
                let _ = commit.add_partition_offset(&topic, partition, Offset::Offset(pos));
            }
            crate::metrics::kafka_rebalance(&revoked, false);
            // With cooperative rebalancing only these partitions stop; the others go on.
            if commit.count() > 0
                && let Err(e) = consumer.commit(&commit, CommitMode::Sync)
            {
                self.client.connection.failed(
                    "committing revoked partitions' finished work",
                    &e,
                    "",
                );
            }
            tracing::info!(partitions = ?revoked, "partitions revoked");
        }
    }

    fn post_rebalance(&self, _consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        if let Rebalance::Assign(list) = rebalance {
            let assigned = partitions_of(list);
            self.shared.lock().expect("not poisoned").assign(&assigned);
            crate::metrics::kafka_rebalance(&assigned, true);
            tracing::info!(partitions = ?assigned, "partitions assigned");
        }
    }
}

/// A message to produce: a result or a dead-letter record.
#[derive(Clone)]
struct Outgoing {
    topic: String,
    key: Option<Vec<u8>>,
    payload: Vec<u8>,
    headers: Vec<(String, Vec<u8>)>,
}

struct Incoming {
    tp: Tp,
    offset: i64,
    key: Option<Vec<u8>>,
    payload: Option<bytes::Bytes>,
    headers: Vec<(String, Vec<u8>)>,
}

/// `defaults`, then the graph's `options` (which may override them).
fn client_config(spec: &KafkaSourceSpec, defaults: &[(&str, &str)]) -> ClientConfig {
    let mut c = client::config(&spec.brokers, &[]);
    for (k, v) in defaults {
        c.set(*k, *v);
    }
    for (k, v) in &spec.options {
        c.set(k, v);
    }
    c
}

/// A producer for results and dead letters: idempotent, so retries keep each partition's order.
fn producer(spec: &KafkaSourceSpec) -> Result<FutureProducer<client::Context>, ClientError> {
    let defaults = [
        ("enable.idempotence", "true"),
        ("acks", "all"),
        ("linger.ms", "1"),
        ("message.timeout.ms", "30000"),
    ];
    client_config(spec, &defaults)
        .create_with_context(client::Context::new("source producer", &spec.brokers))
        .map_err(ClientError::create("the Kafka producer"))
}

/// The Kafka source of a graph that declares one (`sources.kafka`).
pub struct KafkaSource(KafkaSourceSpec);

impl KafkaSource {
    pub fn from_graph(graph: &crate::graph::Graph) -> Option<Box<dyn Source>> {
        graph
            .sources
            .kafka
            .clone()
            .map(|spec| Box::new(KafkaSource(spec)) as Box<dyn Source>)
    }
}

/// A graph's Kafka sources (`crate::server::SOURCE_KINDS`): the requests' consumer, and
/// the feedback reader when it names a feedback topic.
pub fn sources(graph: &crate::graph::Graph) -> Vec<Box<dyn Source>> {
    [
        KafkaSource::from_graph(graph),
        learning::FeedbackSource::from_graph(graph),
    ]
    .into_iter()
    .flatten()
    .collect()
}

#[async_trait::async_trait]
impl Source for KafkaSource {
    fn name(&self) -> &'static str {
        "kafka"
    }

    async fn start(
        &mut self,
        ctx: SourceContext,
    ) -> Result<tokio::task::JoinHandle<()>, crate::sources::StartError> {
        let spec = self.0.clone();
        let (task, connection) = start(spec.clone(), ctx.live, ctx.phase, ctx.drain)?;
        // Readiness follows the consumer's brokers (after a grace when it loses them).
        if spec.ready_needs_broker {
            let grace = Duration::from_millis(spec.broker_grace_ms);
            ctx.health.add(move || connection.unready(grace));
        }
        Ok(task)
    }
}

/// Starts the source: consumes until the process is stopping, then finishes what is in flight
/// (for at most `drain`), commits, and returns. Also returns the consumer's connection.
fn start(
    spec: KafkaSourceSpec,
    mut live: watch::Receiver<crate::graph::Live>,
    mut phase: watch::Receiver<Phase>,
    drain: Duration,
) -> Result<(tokio::task::JoinHandle<()>, Arc<client::Connection>), ClientError> {
    let shared = Arc::new(Mutex::new(Shared::default()));
    let defaults = [
        ("auto.offset.reset", "earliest"),
        ("partition.assignment.strategy", "cooperative-sticky"),
        // A dead process's partitions move after 10 s (librdkafka's 45 s default also makes
        // some brokers hold every group join for half of it).
        ("session.timeout.ms", "10000"),
        ("heartbeat.interval.ms", "3000"),
    ];
    let client = client::Context::new("source", &spec.brokers);
    let connection = Arc::clone(&client.connection);
    let consumer: StreamConsumer<ConsumerState> = client_config(&spec, &defaults)
        .set("group.id", &spec.group)
        // At-least-once rests on these: not overridable.
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false")
        .create_with_context(ConsumerState {
            shared: Arc::clone(&shared),
            client,
        })
        .map_err(ClientError::create("the Kafka consumer"))?;
    let topics: Vec<&str> = spec.topics.iter().map(String::as_str).collect();
    consumer
        .subscribe(&topics)
        .map_err(|source| ClientError::Subscribe {
            topics: spec.topics.clone(),
            source,
        })?;
    let producer = producer(&spec)?;
    tracing::info!(brokers = %spec.brokers, group = %spec.group, topics = ?spec.topics, "consuming from Kafka");
    let spec = Arc::new(spec);
    // The graph being served now, as this source serves it (a reload swaps it for new messages).
    let mut pipeline = Arc::new(Pipeline::new(&live.borrow_and_update(), "kafka"));
    let consuming = Arc::clone(&connection);
    let task = tokio::spawn(async move {
        let connection = consuming;
        // Each partition's bookkeeping, under the assignment (epoch) it was consumed in.
        let mut partitions: HashMap<Tp, (u64, progress::Partition<Option<Outgoing>>)> =
            HashMap::new();
        let mut processing = FuturesUnordered::new();
        let mut deliveries = FuturesUnordered::new();
        let mut in_flight = 0usize;
        let mut commit_tick = tokio::time::interval(Duration::from_millis(spec.commit_interval_ms));
        let mut stopping = false;
        let stop_deadline = tokio::time::sleep(Duration::MAX);
        tokio::pin!(stop_deadline);
        loop {
            if stopping && in_flight == 0 {
                break;
            }
            tokio::select! {
                biased;
                _ = SourceContext::reached(&mut phase, Phase::Stopping), if !stopping => {
                    stopping = true;
                    stop_deadline.as_mut().reset(tokio::time::Instant::now() + drain);
                    tracing::info!(in_flight, "stopping the Kafka source: finishing in-flight messages");
                }
                _ = &mut stop_deadline, if stopping => {
                    tracing::warn!(in_flight, "Kafka messages still in flight after the drain deadline; they will be redelivered");
                    break;
                }
                Some((tp, epoch, offset, out)) = processing.next(), if !processing.is_empty() => {
                    let tp: Tp = tp;
                    // Work of a partition given up since (or assigned anew): the owner does it
                    // again from the committed position, so its result is not produced.
                    let current = shared.lock().expect("not poisoned").epoch(&tp) == Some(epoch);
                    let Some((_, p)) = partitions.get_mut(&tp).filter(|(e, _)| current && *e == epoch) else {
                        in_flight -= 1;
                        continue;
                    };
                    for (o, record) in p.finished(offset, out) {
                        match record {
                            Some(r) => deliveries.push(produce(producer.clone(), (tp.clone(), epoch), o, r, Duration::ZERO)),
                            None => {
                                p.delivered(o);
                                in_flight -= 1;
                            }
                        }
                    }
                    let pos = p.position();
                    shared.lock().expect("not poisoned").advanced(&tp, epoch, pos);
                }
                Some(((tp, epoch), offset, record, result)) = deliveries.next(), if !deliveries.is_empty() => {
                    let result: Result<(), KafkaError> = result;
                    match result {
                        Ok(()) => {
                            if let Some((_, p)) = partitions.get_mut(&tp).filter(|(e, _)| *e == epoch) {
                                p.delivered(offset);
                                let pos = p.position();
                                shared.lock().expect("not poisoned").advanced(&tp, epoch, pos);
                            }
                            in_flight -= 1;
                        }
                        Err(_) if shared.lock().expect("not poisoned").epoch(&tp) != Some(epoch) => {
                            // Its partition was given up since: the new owner does it again.
                            in_flight -= 1;
                        }
                        Err(e) => {
                            // The broker would not take it: try again (bounded by max_in_flight,
                            // which stops consumption meanwhile); never commit past it.
                            connection.failed(&format!("producing a result to `{}`", record.topic), &e, "retrying");
                            deliveries.push(produce(producer.clone(), (tp, epoch), offset, record, Duration::from_millis(500)));
                        }
                    }
                }
                message = consumer.recv(), if !stopping && in_flight < spec.max_in_flight => {
                    match message {
                        Ok(m) => {
                            connection.mark_up();
                            let tp: Tp = (m.topic().to_owned(), m.partition());
                            let offset = m.offset();
                            let epoch = shared.lock().expect("not poisoned").epoch(&tp).unwrap_or(0);
                            let entry = partitions
                                .entry(tp.clone())
                                .or_insert_with(|| (epoch, progress::Partition::new(offset)));
                            if entry.0 != epoch {
                                // Assigned anew: what is left of the earlier assignment is
                                // dropped (its results parked here with it).
                                in_flight -= entry.1.parked();
                                *entry = (epoch, progress::Partition::new(offset));
                            }
                            entry.1.consumed(offset);
                            in_flight += 1;
                            let headers = m
                                .headers()
                                .map(|h| {
                                    h.iter()
                                        .map(|h| (h.key.to_owned(), h.value.unwrap_or_default().to_vec()))
                                        .collect()
                                })
                                .unwrap_or_default();
                            let incoming = Incoming {
                                tp,
                                offset,
                                key: m.key().map(<[u8]>::to_vec),
                                payload: m.payload().map(bytes::Bytes::copy_from_slice),
                                headers,
                            };
                            if live.has_changed().unwrap_or(false) {
                                pipeline = Arc::new(Pipeline::new(&live.borrow_and_update(), "kafka"));
                            }
                            let (spec, pipeline) = (Arc::clone(&spec), Arc::clone(&pipeline));
                            processing.push(async move {
                                let (tp, offset) = (incoming.tp.clone(), incoming.offset);
                                (tp, epoch, offset, process(&pipeline, &spec, incoming).await)
                            });
                        }
                        Err(e) => {
                            connection.failed("consuming requests", &e, "");
                            tokio::time::sleep(Duration::from_millis(100)).await;
                        }
                    }
                }
                _ = commit_tick.tick() => in_flight -= commit(&consumer, &shared, &mut partitions, CommitMode::Async),
            }
        }
        let _ = commit(&consumer, &shared, &mut partitions, CommitMode::Sync);
        let _ = producer.flush(Duration::from_secs(5));
        tracing::info!("Kafka source stopped");
    });
    Ok((task, connection))
}

/// Commits every partition whose finished prefix moved, unless it was revoked. Returns how
/// many results of partitions given up were dropped with their bookkeeping (no longer in
/// flight).
fn commit(
    consumer: &StreamConsumer<ConsumerState>,
    shared: &Mutex<Shared>,
    partitions: &mut HashMap<Tp, (u64, progress::Partition<Option<Outgoing>>)>,
    mode: CommitMode,
) -> usize {
    let shared = shared.lock().expect("not poisoned");
    // Forget partitions given up (or assigned anew since): their unfinished work is dropped
    // as it finishes, their results parked here now, and the owner commits them.
    let mut dropped = 0;
    partitions.retain(|tp, (epoch, p)| {
        let kept = shared.epoch(tp) == Some(*epoch);
        if !kept {
            dropped += p.parked();
        }
        kept
    });
    let mut list = TopicPartitionList::new();
    for (tp, (_, p)) in partitions.iter_mut() {
        if let Some(pos) = p.to_commit() {
            let _ = list.add_partition_offset(&tp.0, tp.1, Offset::Offset(pos));
        }
    }
    drop(shared);
    if list.count() > 0
        && let Err(e) = consumer.commit(&list, mode)
    {
        consumer.context().client.connection.failed(
            "committing offsets",
            &e,
            "they will be committed later",
        );
    }
    dropped
}

/// Produces one record (after `delay`) and waits for the broker's acknowledgement.
async fn produce(
    producer: FutureProducer<client::Context>,
    tp: (Tp, u64),
    offset: i64,
    record: Outgoing,
    delay: Duration,
) -> ((Tp, u64), i64, Outgoing, Result<(), KafkaError>) {
    if !delay.is_zero() {
        tokio::time::sleep(delay).await;
    }
    let mut headers = OwnedHeaders::new_with_capacity(record.headers.len());
    for (k, v) in &record.headers {
        headers = headers.insert(Header {
            key: k,
            value: Some(v.as_slice()),
        });
    }
    let mut fr = FutureRecord::to(&record.topic)
        .payload(&record.payload)
        .headers(headers);
    if let Some(k) = &record.key {
        fr = fr.key(k);
    }
    let result = match producer.send(fr, Duration::from_secs(5)).await {
        Ok(_) => Ok(()),
        Err((e, _)) => Err(e),
    };
    (tp, offset, record, result)
}

/// Runs one message through the graph; the record to produce (result or dead letter), or
/// `None` when it fails and there is no dead-letter topic.
async fn process(pipeline: &Pipeline, spec: &KafkaSourceSpec, msg: Incoming) -> Option<Outgoing> {
    let headers = &msg.headers;
    let observation = pipeline.observe(headers, &pipeline.graph.name, || SpanInfo {
        name: format!("process {}", msg.tp.0),
        kind: opentelemetry::trace::SpanKind::Consumer,
        attributes: vec![
            opentelemetry::KeyValue::new("messaging.destination.name", msg.tp.0.clone()),
            opentelemetry::KeyValue::new("messaging.kafka.offset", msg.offset),
        ],
    });
    let outcome = match operation(headers) {
        Err(e) => Err(e),
        Ok(explain) => {
            let mut attempt = 0;
            loop {
                let request = Request {
                    model: None,
                    version: None,
                    explain,
                    headers,
                    // A message a queue step published: the flow goes on after that step.
                    resume_after: headers.header(queue::RESUME_HEADER).map(|v| v.into_owned()),
                    encoding: Encoding::Json,
                    deadline: None,
                    codec: None,
                };
                let payload = msg
                    .payload
                    .clone()
                    .ok_or_else(|| Error::bad_request("the message has no payload"));
                match pipeline
                    .serve(request, observation.trace(), async { payload })
                    .await
                {
                    // Overload is not the message's fault: wait and try again, a few times.
                    Err(e) if is_transient(&e) && attempt < 3 => {
                        attempt += 1;
                        tokio::time::sleep(Duration::from_millis(100 << attempt)).await;
                    }
                    other => break other,
                }
            }
        }
    };
    observation.finish(&outcome);
    match outcome {
        Ok(answer) => {
            let mut headers = msg.headers.clone();
            headers.retain(|(k, _)| !k.eq_ignore_ascii_case(CORRELATION_HEADER));
            headers.push((CORRELATION_HEADER.to_owned(), answer.id.into_bytes()));
            Some(Outgoing {
                topic: spec.output_topic.clone(),
                key: msg.key,
                payload: answer.body,
                headers,
            })
        }
        Err(e) => {
            tracing::debug!(topic = %msg.tp.0, partition = msg.tp.1, offset = msg.offset, error = %e, "message failed");
            let dlq = spec.dlq_topic.as_ref()?;
            let mut headers = msg.headers.clone();
            headers.push(("error".into(), e.to_string().into_bytes()));
            headers.push((
                "error-status".into(),
                e.kind.status().to_string().into_bytes(),
            ));
            headers.push(("source-topic".into(), msg.tp.0.clone().into_bytes()));
            headers.push(("source-partition".into(), msg.tp.1.to_string().into_bytes()));
            headers.push(("source-offset".into(), msg.offset.to_string().into_bytes()));
            Some(Outgoing {
                topic: dlq.clone(),
                key: msg.key,
                payload: msg.payload.map(|p| p.to_vec()).unwrap_or_default(),
                headers,
            })
        }
    }
}

/// The operation a message asks for (`x-operation`): `infer` (default) or `explain`.
fn operation(headers: &Vec<(String, Vec<u8>)>) -> crate::Result<bool> {
    match headers.header(OPERATION_HEADER).as_deref() {
        None | Some("infer") => Ok(false),
        Some("explain") => Ok(true),
        Some(other) => Err(Error::bad_request(format!(
            "unknown operation `{other}`: expected `infer` or `explain`"
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tp(p: i32) -> Tp {
        ("in".to_owned(), p)
    }

    #[test]
    fn a_revocation_commits_the_finished_prefix_of_those_partitions_only() {
        let mut s = Shared::default();
        s.assign(&[tp(0), tp(1), tp(2)]);
        let e = s.epoch(&tp(0)).unwrap();
        s.advanced(&tp(0), e, 10);
        s.advanced(&tp(1), e, 20);
        s.advanced(&tp(0), e, 12);
        // Cooperative: only partition 0 goes; 1 and 2 stay owned, with their positions.
        assert_eq!(s.revoke(&[tp(0), tp(2)]), vec![(tp(0), 12)]);
        assert_eq!(s.epoch(&tp(0)), None);
        assert_eq!(s.epoch(&tp(2)), None);
        assert_eq!(s.epoch(&tp(1)), Some(e));
        assert_eq!(s.positions.get(&tp(1)), Some(&20));
        // Work of the revoked partition that finishes late moves nothing.
        s.advanced(&tp(0), e, 15);
        assert_eq!(s.revoke(&[tp(0)]), vec![]);
    }

    #[test]
    fn a_partition_assigned_again_starts_a_new_epoch_and_forgets_the_old_positions() {
        let mut s = Shared::default();
        s.assign(&[tp(3)]);
        let first = s.epoch(&tp(3)).unwrap();
        s.advanced(&tp(3), first, 7);
        s.revoke(&[tp(3)]);
        s.assign(&[tp(3)]);
        let second = s.epoch(&tp(3)).unwrap();
        assert_ne!(first, second);
        // The first assignment's late work is not the second's: its position is not kept.
        s.advanced(&tp(3), first, 9);
        assert_eq!(s.revoke(&[tp(3)]), vec![], "nothing finished in the second");
        s.assign(&[tp(3)]);
        let third = s.epoch(&tp(3)).unwrap();
        s.advanced(&tp(3), third, 11);
        assert_eq!(s.revoke(&[tp(3)]), vec![(tp(3), 11)]);
    }

    #[test]
    fn client_errors_read_as_the_messages_they_replaced() {
        let why = KafkaError::ClientCreation("no brokers".into());
        let e = ClientError::create("the Kafka producer")(why.clone());
        assert_eq!(
            e.to_string(),
            format!("cannot create the Kafka producer: {why}")
        );
        let e = ClientError::Subscribe {
            topics: vec!["a".into(), "b".into()],
            source: KafkaError::Subscription("x".into()),
        };
        assert!(
            e.to_string()
                .starts_with(r#"cannot subscribe to ["a", "b"]: "#),
            "{e}"
        );
        let e = ClientError::NoTopic {
            topic: "t".into(),
            brokers: "h:9092".into(),
        };
        assert_eq!(
            e.to_string(),
            "Kafka topic `t` does not exist on h:9092: create it first"
        );
    }
}
