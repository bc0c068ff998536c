//! The monitor's reader of a tracking topic: its own consumer group, on a thread of its own
//! (never on the request path). Offsets are committed for what the monitor has taken.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use rdkafka::consumer::{CommitMode, Consumer};
use rdkafka::message::Message;

use super::client;
use crate::monitor::{Monitor, Read, ReportSink};

/// Reads `topic` from `brokers` as consumer group `group` into `monitor` until `stop`, or
/// until no message came for `idle` (when given) once it has its partitions. Each closed window's report goes to
/// `report`.
pub fn read_topic(
    monitor: &Arc<Mutex<Monitor>>,
    brokers: &str,
    topic: &str,
    group: &str,
    report: &mut ReportSink,
    stop: &AtomicBool,
    idle: Option<Duration>,
) -> Result<Read, String> {
    let consumer = client::group_reader("monitor", brokers, topic, group)?;
    tracing::info!(%brokers, %topic, %group, "monitor reading the tracking topic");
    let mut read = Read::default();
    // The idle clock starts once the group has given this consumer its partitions.
    let mut last_message: Option<Instant> = None;
    let mut last_commit = Instant::now();
    let mut uncommitted = false;
    while !stop.load(Ordering::Relaxed) {
        match consumer.poll(Duration::from_millis(200)) {
            Some(Ok(m)) => {
                last_message = Some(Instant::now());
                if let Some(payload) = m.payload() {
                    for line in payload.split(|b| *b == b'\n') {
                        crate::monitor::take_line(monitor, line, report, &mut read);
                    }
                }
                uncommitted = true;
            }
            Some(Err(e)) => tracing::debug!(error = %e, "the monitor's Kafka consumer"),
            None => {
                let closed = monitor
                    .lock()
                    .expect("not poisoned")
                    .tick(SystemTime::now());
                if let Some(r) = closed {
                    read.windows += 1;
                    report.write(&r);
                }
                if last_message.is_none() && consumer.assignment().is_ok_and(|a| a.count() > 0) {
                    last_message = Some(Instant::now());
                }
                if let (Some(i), Some(last)) = (idle, last_message)
                    && last.elapsed() >= i
                {
                    break;
                }
            }
        }
        if uncommitted && last_commit.elapsed() >= Duration::from_secs(1) {
            let _ = consumer.commit_consumer_state(CommitMode::Async);
            last_commit = Instant::now();
            uncommitted = false;
        }
    }
    if uncommitted {
        let _ = consumer.commit_consumer_state(CommitMode::Sync);
    }
    if let Some(r) = monitor.lock().expect("not poisoned").finish() {
        read.windows += 1;
        report.write(&r);
    }
    Ok(read)
}

/// Runs `monitor` on a thread of its own reading `topic` as group `servegraph-monitor-GRAPH`
/// until the process exits; listed by `GET /v2/monitor`.
pub fn spawn_reading(monitor: Monitor, brokers: String, topic: String, report: ReportSink) {
    let group = format!("servegraph-monitor-{}", monitor.graph());
    let shared = Arc::new(Mutex::new(monitor));
    crate::monitor::publish(&shared);
    std::thread::Builder::new()
        .name("servegraph-monitor".into())
        .spawn(move || {
            let mut report = report;
            let stop = AtomicBool::new(false);
            if let Err(e) = read_topic(&shared, &brokers, &topic, &group, &mut report, &stop, None)
            {
                tracing::warn!(error = %e, "the monitor stopped");
            }
        })
        .expect("spawning the monitor's thread");
}

/// Where `report: kafka://HOST:PORT/TOPIC` sends each window's report: one message per
/// report, written when the report is flushed; what librdkafka still holds is flushed (for
/// up to 10 s) when the monitor stops. A report librdkafka refuses is logged.
struct KafkaReports {
    producer: rdkafka::producer::ThreadedProducer<rdkafka::producer::DefaultProducerContext>,
    topic: String,
    line: Vec<u8>,
}

impl std::io::Write for KafkaReports {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.line.extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        let line = std::mem::take(&mut self.line);
        let payload = line.strip_suffix(b"\n").unwrap_or(&line);
        if payload.is_empty() {
            return Ok(());
        }
        let record: rdkafka::producer::BaseRecord<'_, (), [u8]> =
            rdkafka::producer::BaseRecord::to(&self.topic).payload(payload);
        self.producer
            .send(record)
            .map_err(|(e, _)| std::io::Error::other(format!("report to `{}`: {e}", self.topic)))
    }
}

impl Drop for KafkaReports {
    fn drop(&mut self) {
        use rdkafka::producer::Producer;
        if let Err(e) = self.producer.flush(Duration::from_secs(10)) {
            tracing::warn!(topic = %self.topic, error = %e, "the monitor's last reports may not have reached Kafka");
        }
    }
}

/// The report sink of `url`: a Kafka topic for `kafka://HOST:PORT/TOPIC`, else what
/// [`ReportSink::open`] makes of it.
pub fn open_report(url: Option<&str>, base: &std::path::Path) -> Result<ReportSink, String> {
    let Some(u) = url.filter(|u| u.starts_with("kafka://")) else {
        return ReportSink::open(url, base);
    };
    let crate::tracking::Sink::Kafka { brokers, topic } = crate::tracking::Sink::parse(u, base)?
    else {
        unreachable!("a kafka:// URL parses as a Kafka sink or not at all")
    };
    let producer = client::config(&brokers, &[])
        .set("linger.ms", "20")
        .set("message.timeout.ms", "10000")
        .create()
        .map_err(|e| format!("the monitor's report producer: {e}"))?;
    Ok(ReportSink::Writer(Box::new(KafkaReports {
        producer,
        topic,
        line: Vec::new(),
    })))
}
