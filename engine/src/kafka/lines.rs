//! Reading a topic's lines once, to its end, as a consumer group of its own (what
//! `servegraph evaluate --kafka` reads): the end is each assigned partition's high watermark
//! when the partition was assigned, so messages produced while reading are left for the
//! next run. Offsets are committed at the end.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use rdkafka::consumer::{CommitMode, Consumer};
use rdkafka::message::Message;

use super::client;

/// Calls `line` with each line of each message of `topic` (in each partition's order) until
/// every partition is read to its end; gives up with an error when no partition was
/// assigned within `timeout`.
pub fn read_to_end(
    brokers: &str,
    topic: &str,
    group: &str,
    timeout: Duration,
    mut line: impl FnMut(&[u8]) -> Result<(), String>,
) -> Result<u64, String> {
    let consumer = client::group_reader("evaluate", brokers, topic, group)?;
    let started = Instant::now();
    // Per partition: the high watermark to read up to, and the next offset to read.
    let mut ends: HashMap<i32, i64> = HashMap::new();
    let mut next: HashMap<i32, i64> = HashMap::new();
    let mut messages = 0u64;
    loop {
        let mut quiet = false;
        match consumer.poll(Duration::from_millis(200)) {
            Some(Ok(m)) => {
                messages += 1;
                next.insert(m.partition(), m.offset() + 1);
                if let Some(payload) = m.payload() {
                    for l in payload.split(|b| *b == b'\n') {
                        line(l)?;
                    }
                }
            }
            Some(Err(e)) => tracing::debug!(error = %e, "the evaluation's Kafka consumer"),
            None => quiet = true,
        }
        let assignment = consumer
            .assignment()
            .map_err(|e| format!("the Kafka consumer's assignment: {e}"))?;
        if assignment.count() == 0 {
            if started.elapsed() >= timeout {
                return Err(format!(
                    "no partition of `{topic}` was assigned within {timeout:?} (is `{brokers}` reachable, does the topic exist?)"
                ));
            }
            continue;
        }
        for el in assignment.elements() {
            let p = el.partition();
            if let std::collections::hash_map::Entry::Vacant(v) = ends.entry(p) {
                let (low, high) = consumer
                    .fetch_watermarks(topic, p, Duration::from_secs(10))
                    .map_err(|e| format!("`{topic}` partition {p}'s watermarks: {e}"))?;
                v.insert(high);
                // A partition whose committed offset is past some messages starts there; one
                // with no messages is at its end already.
                if high <= low {
                    next.insert(p, high);
                }
                // The group's committed offset (an earlier run's end) starts it.
                if let Ok(committed) = consumer.committed(Duration::from_secs(10))
                    && let Some(at) = committed
                        .elements_for_topic(topic)
                        .iter()
                        .find(|e| e.partition() == p)
                        .and_then(|e| e.offset().to_raw())
                    && at >= 0
                {
                    next.entry(p).or_insert(at);
                }
            }
        }
        // At the watermarks, and a poll found nothing more (a broker may report a batch's
        // watermark before all of its records: what the consumer still has is read first).
        let done = quiet
            && assignment.elements().iter().all(|el| {
                let p = el.partition();
                ends.get(&p)
                    .is_some_and(|&end| next.get(&p).is_some_and(|&n| n >= end))
            });
        if done {
            break;
        }
    }
    let _ = consumer.commit_consumer_state(CommitMode::Sync);
    Ok(messages)
}
