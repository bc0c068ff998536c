//! The Kafka tracking sink: each monitoring event one Kafka message, handed to librdkafka
//! without waiting. Delivery reports are counted on the producer's own polling thread (an
//! atomic add each), not awaited as futures: a future per message (a oneshot channel, a
//! waker, a task wake-up on the runtime the requests share) cost more than producing it.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use rdkafka::ClientContext;
use rdkafka::config::RDKafkaLogLevel;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::producer::{BaseRecord, DeliveryResult, Producer, ProducerContext, ThreadedProducer};

use super::ClientError;
use super::client::{self, Context};
use crate::tracking::EventSink;

/// How long `close` waits for the last deliveries.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(10);

/// Counts the messages librdkafka reports it could not deliver; follows the connection.
struct Deliveries {
    failed: AtomicU64,
    client: Context,
}

impl ClientContext for Deliveries {
    fn log(&self, level: RDKafkaLogLevel, fac: &str, log_message: &str) {
        self.client.log(level, fac, log_message);
    }

    fn error(&self, error: KafkaError, reason: &str) {
        self.client.error(error, reason);
    }

    fn stats(&self, statistics: rdkafka::Statistics) {
        self.client.stats(statistics);
    }
}

impl ProducerContext for Deliveries {
    type DeliveryOpaque = ();

    fn delivery(&self, result: &DeliveryResult<'_>, _: ()) {
        if result.is_err() {
            self.failed.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// A `kafka://HOST:PORT/TOPIC` tracking sink.
pub struct KafkaTrackingSink {
    producer: Arc<ThreadedProducer<Deliveries>>,
    topic: String,
    /// Delivery failures already reported to the writer.
    reported: u64,
}

/// Opens a `kafka://HOST:PORT/TOPIC` tracking sink.
pub fn tracking_sink(brokers: &str, topic: &str) -> Result<Box<dyn EventSink>, ClientError> {
    let producer: ThreadedProducer<Deliveries> = client::config(brokers, &[])
        // Larger batches: fewer produce requests for the broker and fewer wake-ups here.
        .set("linger.ms", "20")
        .set("message.timeout.ms", "10000")
        .set("queue.buffering.max.messages", "200000")
        .create_with_context(Deliveries {
            failed: AtomicU64::new(0),
            client: Context::new("tracking", brokers),
        })
        .map_err(ClientError::create("the tracking producer"))?;
    Ok(Box::new(KafkaTrackingSink {
        producer: Arc::new(producer),
        topic: topic.to_owned(),
        reported: 0,
    }))
}

impl KafkaTrackingSink {
    /// Delivery failures reported since the last call.
    fn newly_failed(&mut self) -> usize {
        let failed = self.producer.context().failed.load(Ordering::Relaxed);
        let new = failed - self.reported;
        self.reported = failed;
        new as usize
    }
}

#[async_trait::async_trait]
impl EventSink for KafkaTrackingSink {
    async fn write(
        &mut self,
        lines: &[u8],
        _events: usize,
    ) -> Result<usize, crate::tracking::SinkError> {
        let mut refused = 0;
        for line in lines.split(|b| *b == b'\n').filter(|l| !l.is_empty()) {
            let mut record: BaseRecord<'_, (), [u8]> = BaseRecord::to(&self.topic).payload(line);
            loop {
                match self.producer.send(record) {
                    Ok(()) => break,
                    // librdkafka's queue is full (the broker is slow or down): let it drain.
                    // The tracking queue in front of this task drops events meanwhile, never
                    // the requests.
                    Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), r)) => {
                        record = r;
                        tokio::time::sleep(Duration::from_millis(5)).await;
                    }
                    Err(_) => {
                        refused += 1;
                        break;
                    }
                }
            }
        }
        Ok(refused + self.newly_failed())
    }

    async fn close(&mut self) -> Result<usize, crate::tracking::SinkError> {
        let producer = Arc::clone(&self.producer);
        let undelivered = tokio::task::spawn_blocking(move || {
            let _ = producer.flush(CLOSE_TIMEOUT);
            producer.in_flight_count().max(0) as usize
        })
        .await
        .map_err(|e| format!("flushing the tracking producer panicked: {e}"))?;
        Ok(undelivered + self.newly_failed())
    }
}
