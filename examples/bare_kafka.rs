//! The Kafka benchmark's baseline: a bare rdkafka consume → produce loop, copying each
//! message's key and payload to the output topic; up to 256 deliveries in flight; offsets
//! stored after delivery and auto-committed. No decoding, no graph.
//!
//!     cargo run --release --example bare_kafka -- BROKERS GROUP INPUT OUTPUT
//!
//! `scripts/bench-kafka.sh` runs it next to a servegraph passthrough graph.

use std::time::Duration;

use futures_util::StreamExt;
use futures_util::stream::FuturesUnordered;
use rdkafka::ClientConfig;
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::message::Message;
use rdkafka::producer::{FutureProducer, FutureRecord};

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    let [_, brokers, group, input, output] = args.as_slice() else {
        eprintln!("usage: bare_kafka BROKERS GROUP INPUT OUTPUT");
        std::process::exit(2);
    };
    let consumer: StreamConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("group.id", group)
        .set("auto.offset.reset", "earliest")
        .set("enable.auto.offset.store", "false")
        .set("session.timeout.ms", "10000")
        .create()
        .expect("consumer");
    consumer.subscribe(&[input]).expect("subscribe");
    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("linger.ms", "1")
        .create()
        .expect("producer");
    println!("bare_kafka consuming {input}");
    let mut deliveries = FuturesUnordered::new();
    loop {
        tokio::select! {
            Some(done) = deliveries.next(), if !deliveries.is_empty() => {
                let (topic, partition, offset, result): (String, i32, i64, _) = done;
                if result {
                    let _ = consumer.store_offset(&topic, partition, offset);
                }
            }
            m = consumer.recv(), if deliveries.len() < 256 => {
                let Ok(m) = m else { continue };
                let (topic, partition, offset) = (m.topic().to_owned(), m.partition(), m.offset());
                let (key, payload) = (m.key().map(<[u8]>::to_vec), m.payload().unwrap_or_default().to_vec());
                let producer = producer.clone();
                let output = output.clone();
                deliveries.push(async move {
                    let mut r = FutureRecord::to(&output).payload(&payload);
                    if let Some(k) = &key {
                        r = r.key(k);
                    }
                    let ok = producer.send(r, Duration::from_secs(5)).await.is_ok();
                    (topic, partition, offset, ok)
                });
            }
        }
    }
}
