//! A real Kafka-protocol broker for the tests (Tansu, installed by `scripts/setup.sh --test`),
//! and helpers to create topics, produce requests and read results.
#![allow(dead_code)]

use std::collections::HashMap;
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use rdkafka::ClientConfig;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{Header, Headers, Message, OwnedHeaders};
use rdkafka::producer::{BaseRecord, DefaultProducerContext, Producer, ThreadedProducer};

use super::{block_on, root};

/// The broker's address: `SERVEGRAPH_KAFKA`, or one started for this test binary on a free
/// port, stopped by a watchdog when the test process exits.
pub fn broker() -> &'static str {
    static BROKER: OnceLock<String> = OnceLock::new();
    BROKER.get_or_init(|| {
        if let Ok(addr) = std::env::var("SERVEGRAPH_KAFKA") {
            return addr;
        }
        let port = free_port();
        let me = std::process::id();
        let script = format!(
            "{} & b=$!; while kill -0 {me} 2>/dev/null; do sleep 0.5; done; kill $b",
            broker_command(port)
        );
        // Kept for the life of the test process; the shell stops the broker when it ends.
        static WATCHDOG: OnceLock<std::sync::Mutex<std::process::Child>> = OnceLock::new();
        let child = Command::new("sh")
            .args(["-c", &script])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start the broker");
        let _ = WATCHDOG.set(std::sync::Mutex::new(child));
        let addr = format!("127.0.0.1:{port}");
        let deadline = Instant::now() + Duration::from_secs(20);
        while std::net::TcpStream::connect(&addr).is_err() {
            assert!(Instant::now() < deadline, "the broker did not start");
            std::thread::sleep(Duration::from_millis(50));
        }
        addr
    })
}

/// The command line of a broker on `port` (memory storage).
fn broker_command(port: u16) -> String {
    let bin = String::from_utf8(
        Command::new(root().join("scripts/kafka.sh"))
            .arg("path")
            .output()
            .expect("scripts/kafka.sh")
            .stdout,
    )
    .unwrap();
    let bin = bin.trim();
    assert!(
        std::path::Path::new(bin).exists(),
        "the Kafka broker is not installed: run `scripts/setup.sh --test`"
    );
    format!(
        "{bin} broker --listener-url tcp://127.0.0.1:{port} --advertised-listener-url tcp://127.0.0.1:{port} \
         --storage-engine memory://tansu/ --silent"
    )
}

/// A loopback port nothing listens on (now).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A broker of a test's own, on `port`: stopped when dropped, or when the test process ends.
pub struct OwnBroker(std::process::Child);

impl OwnBroker {
    /// Starts a broker on `port` and waits until it accepts connections.
    pub fn start(port: u16) -> OwnBroker {
        let me = std::process::id();
        // The shell stops the broker when told to (TERM) or when the test process is gone.
        let script = format!(
            "{} & b=$!; trap 'kill $b; exit 0' TERM; \
             while kill -0 {me} 2>/dev/null; do sleep 0.5 & wait $!; done; kill $b",
            broker_command(port)
        );
        let child = Command::new("sh")
            .args(["-c", &script])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start the broker");
        let broker = OwnBroker(child);
        let deadline = Instant::now() + Duration::from_secs(20);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "the broker did not start");
            std::thread::sleep(Duration::from_millis(50));
        }
        broker
    }
}

impl Drop for OwnBroker {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.0.id().to_string()])
            .status();
        let _ = self.0.wait();
    }
}

/// The partitions of `topic` on the test broker (0 when it does not exist).
pub fn partitions(topic: &str) -> usize {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", broker())
        .create()
        .unwrap();
    let metadata = consumer
        .fetch_metadata(None, Duration::from_secs(10))
        .unwrap();
    metadata
        .topics()
        .iter()
        .find(|t| t.name() == topic && t.error().is_none())
        .map_or(0, |t| t.partitions().len())
}

/// A name no other test uses.
pub fn unique(prefix: &str) -> String {
    static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    format!("{prefix}-{}-{n}", std::process::id())
}

pub fn create_topics(topics: &[(&str, i32)]) {
    let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", broker())
        .create()
        .unwrap();
    let new: Vec<NewTopic> = topics
        .iter()
        .map(|(t, p)| NewTopic::new(t, *p, TopicReplication::Fixed(1)))
        .collect();
    let results = block_on(admin.create_topics(&new, &AdminOptions::new())).unwrap();
    for r in results {
        r.unwrap_or_else(|(t, e)| panic!("creating {t}: {e}"));
    }
}

/// A record to produce: key, payload, headers.
pub type Outgoing<'a> = (String, String, Vec<(&'a str, &'a str)>);

/// Produces records to `topic` and waits until all are acknowledged.
pub fn produce(topic: &str, records: &[Outgoing<'_>]) {
    let producer: ThreadedProducer<DefaultProducerContext> = ClientConfig::new()
        .set("bootstrap.servers", broker())
        .set("enable.idempotence", "true")
        .create()
        .unwrap();
    for (key, payload, headers) in records {
        let mut h = OwnedHeaders::new();
        for (k, v) in headers {
            h = h.insert(Header {
                key: k,
                value: Some(v.as_bytes()),
            });
        }
        let record = BaseRecord::to(topic)
            .key(key.as_str())
            .payload(payload.as_str())
            .headers(h);
        send_queued(&producer, record);
    }
    producer.flush(Duration::from_secs(30)).unwrap();
}

/// Sends `record`, waiting while the producer's queue is full.
pub fn send_queued<K, P>(
    producer: &ThreadedProducer<DefaultProducerContext>,
    mut record: BaseRecord<'_, K, P>,
) where
    K: rdkafka::message::ToBytes + ?Sized,
    P: rdkafka::message::ToBytes + ?Sized,
{
    loop {
        match producer.send(record) {
            Ok(()) => return,
            Err((_, r)) => {
                record = r;
                std::thread::sleep(Duration::from_millis(5));
            }
        }
    }
}

/// A record read back: key, payload and headers.
#[derive(Clone, Debug)]
pub struct Record {
    pub key: Option<String>,
    pub payload: String,
    pub headers: HashMap<String, String>,
}

/// A consumer of every partition of `topic`, from the start. Partitions are assigned, not
/// subscribed: no consumer group to join (joins are slow).
pub fn reader(topic: &str) -> BaseConsumer {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", broker())
        .set("group.id", unique("reader"))
        .set("enable.auto.commit", "false")
        .create()
        .unwrap();
    let metadata = consumer
        .fetch_metadata(Some(topic), Duration::from_secs(10))
        .unwrap();
    let partitions = metadata.topics()[0].partitions().len() as i32;
    let mut list = rdkafka::TopicPartitionList::new();
    for p in 0..partitions {
        list.add_partition_offset(topic, p, rdkafka::Offset::Beginning)
            .unwrap();
    }
    consumer.assign(&list).unwrap();
    consumer
}

/// Reads every partition of `topic` from the start until `done` says so or `timeout` passes.
pub fn consume_until(
    topic: &str,
    timeout: Duration,
    done: impl Fn(&[Record]) -> bool,
) -> Vec<Record> {
    let consumer = reader(topic);
    let deadline = Instant::now() + timeout;
    let mut out = Vec::new();
    while Instant::now() < deadline && !done(&out) {
        if let Some(Ok(m)) = consumer.poll(Duration::from_millis(200)) {
            let headers = m
                .headers()
                .map(|h| {
                    h.iter()
                        .map(|h| {
                            (
                                h.key.to_owned(),
                                String::from_utf8_lossy(h.value.unwrap_or_default()).into_owned(),
                            )
                        })
                        .collect()
                })
                .unwrap_or_default();
            out.push(Record {
                key: m.key().map(|k| String::from_utf8_lossy(k).into_owned()),
                payload: String::from_utf8_lossy(m.payload().unwrap_or_default()).into_owned(),
                headers,
            });
        }
    }
    out
}
