//! `kind: queue` (MLRun's `>>`): a Kafka topic boundary inside a flow. The process that
//! received a request runs the steps up to the queue, which publishes the event to `topic`;
//! the flow stops there and the caller gets an acknowledgement (HTTP 202 with the request id
//! and `parameters.queued`). Whichever `servegraph` process of the consumer group owns the
//! message's partition resumes the flow after the queue step and produces the result to its
//! output topic. This is how one graph spreads over machines.
//!
//! ```yaml
//! graph:
//!   kind: flow
//!   steps:
//!     scale: {kind: transform, op: standardize, args: {...}}
//!     handoff: {kind: queue, after: scale, topic: iris-stage2, brokers: "127.0.0.1:9092"}
//!     vote: {kind: ensemble, after: handoff, ...}
//! sources:
//!   kafka: {brokers: "127.0.0.1:9092", group: iris, topics: [iris-stage2], output_topic: iris-results}
//! ```

use std::time::Duration;

use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord};
use schemars::JsonSchema;
use serde::Deserialize;

use super::client::{self, Context};
use super::{CORRELATION_HEADER, MODEL_HEADER, VERSION_HEADER};
use crate::error::{Error, Result};
use crate::event::Event;
use crate::protocol::encode_request;
use crate::step::{BuildContext, Registry, Step, StepNode};
use crate::tensor::Signature;

/// On a queued message: the queue step to resume after.
pub const RESUME_HEADER: &str = "x-servegraph-resume";

/// A queue step's fields.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct QueueSpec {
    /// The topic the flow continues from (list it in `sources.kafka.topics` of the processes
    /// that should run the rest).
    pub topic: String,
    /// The brokers, `host:port[,host:port]`.
    pub brokers: String,
}

pub struct QueueStep {
    name: String,
    topic: String,
    brokers: String,
    /// Made on first use: validating or drawing a graph must not connect anywhere.
    producer: std::sync::OnceLock<Result<FutureProducer<Context>>>,
}

/// Registers `kind: queue`.
pub fn register(registry: &mut Registry) {
    registry
        .register("queue", build)
        .set_schema("queue", schemars::schema_for!(QueueSpec).to_value());
}

fn build(node: &StepNode, ctx: &mut BuildContext) -> Option<Box<dyn Step>> {
    let spec: QueueSpec = ctx.parse(node)?;
    if spec.topic.trim().is_empty() || spec.brokers.trim().is_empty() {
        ctx.error(
            &node.name,
            &node.span,
            "`topic` and `brokers` must not be empty",
        );
        return None;
    }
    ctx.uses_kafka_topic(
        &node.name,
        "queue step",
        &spec.brokers,
        &spec.topic,
        &node.span,
    );
    Some(Box::new(QueueStep {
        name: node.name.clone(),
        topic: spec.topic,
        brokers: spec.brokers,
        producer: std::sync::OnceLock::new(),
    }))
}

impl QueueStep {
    fn producer(&self) -> Result<&FutureProducer<Context>> {
        self.producer
            .get_or_init(|| {
                client::config(&self.brokers, &[])
                    .set("enable.idempotence", "true")
                    .set("linger.ms", "1")
                    .set("message.timeout.ms", "10000")
                    .create_with_context(Context::new(
                        &format!("queue:{}", self.name),
                        &self.brokers,
                    ))
                    .map_err(|e| {
                        Error::internal(format!("cannot create the queue's producer: {e}"))
                    })
            })
            .as_ref()
            .map_err(Error::clone)
    }
}

#[async_trait::async_trait]
impl Step for QueueStep {
    async fn process(&self, mut event: Event) -> Result<Event> {
        let encoded = encode_request(&event.id, &event.tensors, false)?;
        let mut headers = OwnedHeaders::new()
            .insert(Header {
                key: RESUME_HEADER,
                value: Some(self.name.as_bytes()),
            })
            .insert(Header {
                key: CORRELATION_HEADER,
                value: Some(event.id.as_bytes()),
            });
        if let Some(t) = &event.target {
            headers = headers.insert(Header {
                key: MODEL_HEADER,
                value: Some(t.model.as_bytes()),
            });
            if let Some(v) = &t.version {
                headers = headers.insert(Header {
                    key: VERSION_HEADER,
                    value: Some(v.as_bytes()),
                });
            }
        }
        let record = FutureRecord::to(&self.topic)
            .key(event.id.as_bytes())
            .payload(&encoded.body)
            .headers(headers);
        self.producer()?
            .send(record, Duration::from_secs(5))
            .await
            .map_err(|(e, _)| {
                Error::unavailable(format!("queue topic `{}` is unavailable: {e}", self.topic))
            })?;
        event.tensors.clear();
        event.stopped = true;
        event
            .notes
            .insert("queued".into(), self.topic.clone().into());
        Ok(event)
    }

    /// The steps after the queue get what came in.
    fn infer(&self, input: &Signature) -> std::result::Result<Signature, String> {
        Ok(input.clone())
    }

    /// A queue hands the event on and stops the flow.
    fn platform(&self) -> crate::step::Platform {
        crate::step::Platform::Queue
    }
}
