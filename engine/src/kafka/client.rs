//! What every Kafka client servegraph makes shares: its connection to the brokers (the
//! `servegraph_kafka_connected` gauge, and what readiness asks), and librdkafka's errors and
//! logs, each kind logged at warn once a minute ([`crate::logs`]) and at debug the rest of
//! the time, so brokers that are down do not flood the log.
//!
//! A client is up when librdkafka's statistics (every [`STATS_INTERVAL_MS`]) show one of its
//! brokers up, or when it receives a message; down when they show none. (librdkafka's
//! all-brokers-down events are not used: a consumer hands them over late, after it has
//! reconnected, and some say `0/1 brokers are down`.)

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use prometheus_client::metrics::gauge::Gauge;
use rdkafka::ClientContext;
use rdkafka::config::{ClientConfig, RDKafkaLogLevel};
use rdkafka::consumer::ConsumerContext;
use rdkafka::error::KafkaError;

/// How often librdkafka reports its statistics: which brokers are up, each partition's lag.
pub const STATS_INTERVAL_MS: &str = "5000";

/// A client's settings: its brokers, statistics on, then `options` (which may override them).
pub fn config(brokers: &str, options: &[(String, String)]) -> ClientConfig {
    let mut c = ClientConfig::new();
    c.set("bootstrap.servers", brokers)
        .set("statistics.interval.ms", STATS_INTERVAL_MS);
    for (k, v) in options {
        c.set(k, v);
    }
    c
}

/// The brokers the start-up check reached: clients made for them start as up.
fn reached() -> &'static Mutex<Vec<String>> {
    static REACHED: OnceLock<Mutex<Vec<String>>> = OnceLock::new();
    REACHED.get_or_init(Default::default)
}

/// `brokers` answered (the start-up check reached them).
pub fn mark_reached(brokers: &str) {
    let mut r = reached().lock().expect("not poisoned");
    if !r.iter().any(|b| b == brokers) {
        r.push(brokers.to_owned());
    }
}

/// Whether the start-up check reached `brokers`.
pub fn was_reached(brokers: &str) -> bool {
    reached()
        .lock()
        .expect("not poisoned")
        .iter()
        .any(|b| b == brokers)
}

/// One client's connection to its brokers.
pub struct Connection {
    /// The client, as the gauge's `client` label and messages name it (`source`, `feedback`,
    /// `tracking`, `queue:handoff`, `share:ab`).
    client: String,
    brokers: String,
    up: AtomicBool,
    /// Whether it was ever up, and since when it is in its current state.
    since: Mutex<(bool, Instant)>,
    gauge: Option<Gauge>,
}

impl Connection {
    /// A client's connection, with its gauge; up when the start-up check reached `brokers`.
    pub fn new(client: &str, brokers: &str) -> Arc<Connection> {
        Connection::with_gauge(client, brokers, true)
    }

    /// A short-lived client's (the start-up check's own): no gauge.
    pub fn unmetered(client: &str, brokers: &str) -> Arc<Connection> {
        Connection::with_gauge(client, brokers, false)
    }

    fn with_gauge(client: &str, brokers: &str, metered: bool) -> Arc<Connection> {
        let up = was_reached(brokers);
        let gauge = metered.then(|| crate::metrics::kafka_connected(client, brokers));
        if let Some(g) = &gauge {
            g.set(up as i64);
        }
        Arc::new(Connection {
            client: client.to_owned(),
            brokers: brokers.to_owned(),
            up: AtomicBool::new(up),
            since: Mutex::new((up, Instant::now())),
            gauge,
        })
    }

    pub fn is_up(&self) -> bool {
        self.up.load(Ordering::Relaxed)
    }

    /// The client reached a broker (cheap when it already had: one atomic load).
    pub fn mark_up(&self) {
        if !self.is_up() {
            self.set(true);
        }
    }

    fn set(&self, up: bool) {
        let mut since = self.since.lock().expect("not poisoned");
        if self.up.swap(up, Ordering::Relaxed) == up {
            return;
        }
        let was_up_before = since.0;
        *since = (since.0 || up, Instant::now());
        drop(since);
        if let Some(g) = &self.gauge {
            g.set(up as i64);
        }
        let (client, brokers) = (&self.client, &self.brokers);
        if up && was_up_before {
            tracing::info!(client, brokers, "Kafka brokers reachable again");
        } else if up {
            tracing::info!(client, brokers, "Kafka brokers reached");
        } else if crate::logs::first_in_a_while(&("kafka down", client, brokers)) {
            tracing::warn!(client, brokers, "cannot reach the Kafka brokers");
        }
    }

    /// Why this client keeps the server from being ready: it never reached its brokers, or
    /// lost them `grace` ago or more.
    pub fn unready(&self, grace: Duration) -> Option<String> {
        if self.is_up() {
            return None;
        }
        let (ever, since) = *self.since.lock().expect("not poisoned");
        let what = format!(
            "the Kafka {} cannot reach the brokers {}",
            self.client, self.brokers
        );
        if !ever {
            return Some(what);
        }
        let down = since.elapsed();
        (down >= grace).then(|| format!("{what} (for {} s)", down.as_secs()))
    }

    /// librdkafka's statistics: up when one of the brokers it knows (not its internal ones)
    /// is.
    pub fn observe(&self, statistics: &rdkafka::Statistics) {
        self.set(any_up(
            statistics
                .brokers
                .values()
                .map(|b| (b.source.as_str(), b.state.as_str())),
        ));
    }

    /// An error the client reported (or a consumer returned) while `doing` something:
    /// logged at warn once a minute per kind of error, at debug in between.
    pub fn failed(&self, doing: &str, error: &KafkaError, reason: &str) {
        let (client, brokers) = (&self.client, &self.brokers);
        let kind = error.rdkafka_error_code().map(|c| c as i32);
        if crate::logs::first_in_a_while(&("kafka error", client, brokers, doing, kind)) {
            tracing::warn!(client, brokers, %error, reason, "Kafka error {doing} (this one is logged once a minute)");
        } else {
            tracing::debug!(client, brokers, %error, reason, "Kafka error {doing}");
        }
    }

    /// A line of librdkafka's own log: warnings and worse at warn, notices at info, each
    /// kind (facility) once a minute; the rest at debug.
    pub fn log(&self, level: RDKafkaLogLevel, facility: &str, message: &str) {
        use RDKafkaLogLevel as L;
        let (client, brokers) = (&self.client, &self.brokers);
        let rank = match level {
            L::Emerg | L::Alert | L::Critical | L::Error | L::Warning => 1,
            L::Notice => 2,
            L::Info | L::Debug => 3,
        };
        if rank < 3 && crate::logs::first_in_a_while(&("librdkafka", client, brokers, facility)) {
            if rank == 1 {
                tracing::warn!(target: "librdkafka", client, brokers, "{facility} {message} (logged once a minute)");
            } else {
                tracing::info!(target: "librdkafka", client, brokers, "{facility} {message}");
            }
        } else {
            tracing::debug!(target: "librdkafka", client, brokers, "{facility} {message}");
        }
    }
}

/// Whether one of the brokers librdkafka lists (`(source, state)`) is up: one it was given or
/// learned, not one of its internal ones.
fn any_up<'a>(mut brokers: impl Iterator<Item = (&'a str, &'a str)>) -> bool {
    brokers.any(|(source, state)| state == "UP" && matches!(source, "configured" | "learned"))
}

/// The context of a Kafka client: its connection, fed by librdkafka's callbacks.
#[derive(Clone)]
pub struct Context {
    pub connection: Arc<Connection>,
}

impl Context {
    pub fn new(client: &str, brokers: &str) -> Context {
        Context {
            connection: Connection::new(client, brokers),
        }
    }
}

/// A consumer of `topic` as a group of its own (`group`), from the earliest offset, committing
/// only when told: how the monitor and `evaluate` read a tracking topic. `client` names it in
/// logs and errors.
pub fn group_reader(
    client: &str,
    brokers: &str,
    topic: &str,
    group: &str,
) -> Result<rdkafka::consumer::BaseConsumer<Context>, String> {
    use rdkafka::consumer::Consumer;
    let consumer: rdkafka::consumer::BaseConsumer<Context> = config(brokers, &[])
        .set("group.id", group)
        .set("auto.offset.reset", "earliest")
        .set("enable.auto.commit", "false")
        .set("session.timeout.ms", "10000")
        .create_with_context(Context::new(client, brokers))
        .map_err(|e| format!("the {client} Kafka consumer: {e}"))?;
    consumer
        .subscribe(&[topic])
        .map_err(|e| format!("cannot subscribe to `{topic}`: {e}"))?;
    Ok(consumer)
}

impl ClientContext for Context {
    fn log(&self, level: RDKafkaLogLevel, fac: &str, log_message: &str) {
        self.connection.log(level, fac, log_message);
    }

    fn error(&self, error: KafkaError, reason: &str) {
        self.connection.failed("from the client", &error, reason);
    }

    fn stats(&self, statistics: rdkafka::Statistics) {
        self.connection.observe(&statistics);
    }
}

impl ConsumerContext for Context {}

#[cfg(test)]
mod tests {
    use super::*;
    use rdkafka::error::RDKafkaErrorCode;

    #[test]
    fn a_client_is_unready_at_once_if_it_never_connected_else_after_the_grace() {
        let c = Connection::new("test-never", "192.0.2.1:1");
        assert_eq!(
            c.unready(Duration::from_secs(60)).as_deref(),
            Some("the Kafka test-never cannot reach the brokers 192.0.2.1:1")
        );
        c.mark_up();
        assert_eq!(c.unready(Duration::ZERO), None);
        c.set(false);
        assert_eq!(c.unready(Duration::from_secs(60)), None, "within the grace");
        let why = c.unready(Duration::ZERO).unwrap();
        assert!(
            why.starts_with("the Kafka test-never cannot reach the brokers 192.0.2.1:1 (for "),
            "{why}"
        );
    }

    #[test]
    fn the_gauge_follows_the_connection() {
        let c = Connection::new("test-gauge", "192.0.2.2:1");
        let value = || {
            crate::metrics::render(None)
                .unwrap()
                .lines()
                .find(|l| l.starts_with("servegraph_kafka_connected{client=\"test-gauge\""))
                .map(|l| l.rsplit(' ').next().unwrap().to_owned())
        };
        assert_eq!(value().as_deref(), Some("0"));
        c.mark_up();
        assert_eq!(value().as_deref(), Some("1"));
        c.set(false);
        assert_eq!(value().as_deref(), Some("0"));
        assert!(!c.is_up());
        // An error is logged, and says nothing of the connection.
        c.failed(
            "polling",
            &KafkaError::Global(RDKafkaErrorCode::AllBrokersDown),
            "0/1 brokers are down",
        );
        assert_eq!(value().as_deref(), Some("0"));
    }

    #[test]
    fn up_is_a_broker_it_was_given_or_learned_that_is_up() {
        assert!(any_up([("configured", "UP")].into_iter()));
        assert!(any_up([("logical", "UP"), ("learned", "UP")].into_iter()));
        assert!(!any_up(
            [("logical", "UP"), ("learned", "TRY_CONNECT")].into_iter()
        ));
        assert!(!any_up(
            [("configured", "DOWN"), ("internal", "UP")].into_iter()
        ));
        assert!(!any_up(std::iter::empty()));
    }

    #[test]
    fn brokers_the_start_up_check_reached_start_up() {
        mark_reached("192.0.2.3:1");
        assert!(Connection::new("test-reached", "192.0.2.3:1").is_up());
        assert!(!Connection::new("test-reached", "192.0.2.4:1").is_up());
    }
}
