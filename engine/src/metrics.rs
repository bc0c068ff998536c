//! Prometheus metrics (OpenMetrics text on `GET /metrics`), with `prometheus-client`.
//!
//! One process-wide registry holds the request, step, route, model, tracking and Kafka
//! metrics; hot paths hold pre-resolved handles (a step's histogram is looked up once, when the
//! graph is built), so recording costs an atomic or a short uncontended lock, never a label
//! lookup. What routers learn is read from them at scrape time. Labels are names from the
//! graph file, status codes, sources, topics and partitions: never anything from a request.
//!
//! | metric | type | labels |
//! |---|---|---|
//! | `servegraph_requests_total` | counter | graph, source (`http`, `kafka`), code |
//! | `servegraph_request_duration_seconds` | histogram | graph, source |
//! | `servegraph_requests_in_flight` | gauge | graph, source |
//! | `servegraph_engine_overhead_seconds` | histogram | graph, source |
//! | `servegraph_step_duration_seconds` | histogram | graph, step |
//! | `servegraph_route_duration_seconds` | histogram | router, route |
//! | `servegraph_model_run_seconds` | histogram | model |
//! | `servegraph_model_queue_wait_seconds` | histogram | model |
//! | `servegraph_model_batch_size` | histogram | model |
//! | `servegraph_model_load_seconds` | gauge | model |
//! | `servegraph_model_restarts_total` | counter | model |
//! | `servegraph_tracking_events_dropped_total` | counter | graph |
//! | `servegraph_kafka_consumer_lag` | gauge | topic, partition |
//! | `servegraph_kafka_committed_offset` | gauge | topic, partition |
//! | `servegraph_kafka_partition_assigned` | gauge (1 or 0) | topic, partition |
//! | `servegraph_kafka_rebalances_total` | counter | kind |
//! | `servegraph_kafka_connected` | gauge (1 or 0) | client, brokers |
//! | `servegraph_router_requests_total` | counter | graph, router, policy, route |
//! | `servegraph_router_rewards_total` | counter | graph, router, policy, route |
//! | `servegraph_router_reward_sum` | gauge | graph, router, policy, route |
//! | `servegraph_router_estimate` | gauge (bandits) | graph, router, policy, route |
//! | `servegraph_router_shadow_copies_total` | counter | graph, router, route, result |

use std::collections::BTreeMap;
use std::fmt;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use dashmap::DashMap;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::encoding::{MetricEncoder, NoLabelSet};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::TypedMetric;
use prometheus_client::metrics::counter::{ConstCounter, Counter};
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::{ConstGauge, Gauge};
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;
use std::sync::atomic::Ordering::Relaxed;

use crate::learning::LearnerStats;

/// The content type of [`render`]'s output.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

type L1 = [(&'static str, String); 1];
type L2 = [(&'static str, String); 2];
type L3 = [(&'static str, String); 3];
type Histograms<L> = Family<L, Histogram, fn() -> Histogram>;

/// Finite latency buckets of a [`Timer`]: 2^14 ns (16.4 µs) doubling to 2^34 ns (17.2 s).
const TIMER_FINITE: usize = 21;

/// A latency histogram recorded with two relaxed atomic adds: no lock, no bucket search (the
/// bucket is the duration's power of two). `prometheus-client`'s own histogram takes a lock
/// per observation, which doubled the engine's per-step cost.
#[derive(Clone, Debug, Default)]
pub struct Timer(Arc<TimerCounts>);

#[derive(Debug, Default)]
struct TimerCounts {
    /// Per bucket, not cumulative; the last one is +Inf.
    buckets: [AtomicU64; TIMER_FINITE + 1],
    sum_nanos: AtomicU64,
}

impl Timer {
    /// How many durations it observed.
    pub fn count(&self) -> u64 {
        self.0.buckets.iter().map(|b| b.load(Relaxed)).sum()
    }

    /// Their sum, in nanoseconds.
    pub fn sum_ns(&self) -> u64 {
        self.0.sum_nanos.load(Relaxed)
    }

    pub fn observe(&self, took: Duration) {
        let ns = u64::try_from(took.as_nanos()).unwrap_or(u64::MAX);
        let i = (64 - (ns.saturating_sub(1) >> 14).leading_zeros()) as usize;
        self.0.buckets[i.min(TIMER_FINITE)].fetch_add(1, Relaxed);
        self.0.sum_nanos.fetch_add(ns, Relaxed);
    }
}

/// A [`Timer`]'s counts at one moment (what the dashboard's page turns into rates and
/// quantiles over time): per bucket, not cumulative (the bounds are [`timer_bounds`], the last
/// bucket is +Inf), and the sum of the durations.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct TimerSnapshot {
    pub count: u64,
    pub sum_s: f64,
    pub buckets: Vec<u64>,
}

impl Timer {
    /// Its counts now.
    pub fn snapshot(&self) -> TimerSnapshot {
        let buckets: Vec<u64> = self.0.buckets.iter().map(|b| b.load(Relaxed)).collect();
        TimerSnapshot {
            count: buckets.iter().sum(),
            sum_s: self.sum_ns() as f64 / 1e9,
            buckets,
        }
    }
}

/// The upper bounds, in seconds, of a [`Timer`]'s finite buckets (2^14 ns doubling to 2^34
/// ns); one bucket more, the last, holds everything longer.
pub fn timer_bounds() -> Vec<f64> {
    (0..TIMER_FINITE)
        .map(|i| (1u64 << (14 + i)) as f64 / 1e9)
        .collect()
}

impl TypedMetric for Timer {
    const TYPE: MetricType = MetricType::Histogram;
}

impl EncodeMetric for Timer {
    fn encode(&self, mut encoder: MetricEncoder) -> Result<(), fmt::Error> {
        let buckets: Vec<(f64, u64)> = self
            .0
            .buckets
            .iter()
            .enumerate()
            .map(|(i, b)| {
                let le = if i == TIMER_FINITE {
                    f64::INFINITY
                } else {
                    (1u64 << (14 + i)) as f64 / 1e9
                };
                (le, b.load(Relaxed))
            })
            .collect();
        let count = buckets.iter().map(|b| b.1).sum();
        let sum = self.0.sum_nanos.load(Relaxed) as f64 / 1e9;
        encoder.encode_histogram::<NoLabelSet>(sum, count, &buckets, None)
    }

    fn metric_type(&self) -> MetricType {
        Self::TYPE
    }
}

/// Requests per model run: 1 to 1024, doubling.
fn sizes() -> Histogram {
    Histogram::new(exponential_buckets(1.0, 2.0, 11))
}

struct Metrics {
    registry: Registry,
    requests: Family<L3, Counter>,
    request_seconds: Family<L2, Timer>,
    in_flight: Family<L2, Gauge>,
    overhead_seconds: Family<L2, Timer>,
    step_seconds: Family<L2, Timer>,
    route_seconds: Family<L2, Timer>,
    model_seconds: Family<L1, Timer>,
    queue_wait_seconds: Family<L1, Timer>,
    batch_size: Histograms<L1>,
    model_load_seconds: Family<L1, Gauge<f64, AtomicU64>>,
    model_restarts: Family<L1, Counter>,
    tracking_dropped: Family<L1, Counter>,
    kafka_lag: Family<L2, Gauge>,
    kafka_committed: Family<L2, Gauge>,
    kafka_connected: Family<L2, Gauge>,
    kafka_assigned: Family<L2, Gauge>,
    kafka_rebalances: Family<L1, Counter>,
    user_counters: Family<L2, Counter<f64, AtomicU64>>,
    user_gauges: Family<L2, Gauge<f64, AtomicU64>>,
    user_timers: Family<L2, Timer>,
    drift_score: Family<L3, Gauge<f64, AtomicU64>>,
    drift_status: Family<L2, Gauge>,
    drift_share: Family<L1, Gauge<f64, AtomicU64>>,
    drift_window_events: Family<L1, Gauge>,
    drift_window_end: Family<L1, Gauge<f64, AtomicU64>>,
    monitor_performance: Family<L2, Gauge<f64, AtomicU64>>,
    /// The user metric keys seen per model (bounded: [`USER_KEYS`]).
    user_keys:
        std::sync::Mutex<std::collections::HashMap<String, std::collections::HashSet<String>>>,
}

/// The metrics every graph shares, registered once. HELP texts are written without their
/// full stop: prometheus-client's registry adds it.
fn global() -> &'static Metrics {
    static METRICS: OnceLock<Metrics> = OnceLock::new();
    METRICS.get_or_init(|| {
        let mut m = Metrics {
            registry: Registry::default(),
            requests: Family::default(),
            request_seconds: Family::default(),
            in_flight: Family::default(),
            overhead_seconds: Family::default(),
            step_seconds: Family::default(),
            route_seconds: Family::default(),
            model_seconds: Family::default(),
            queue_wait_seconds: Family::default(),
            batch_size: Family::new_with_constructor(sizes),
            model_load_seconds: Family::default(),
            model_restarts: Family::default(),
            tracking_dropped: Family::default(),
            kafka_lag: Family::default(),
            kafka_committed: Family::default(),
            kafka_connected: Family::default(),
            kafka_assigned: Family::default(),
            kafka_rebalances: Family::default(),
            user_counters: Family::default(),
            user_gauges: Family::default(),
            user_timers: Family::default(),
            drift_score: Family::default(),
            drift_status: Family::default(),
            drift_share: Family::default(),
            drift_window_events: Family::default(),
            drift_window_end: Family::default(),
            monitor_performance: Family::default(),
            user_keys: Default::default(),
        };
        let r = &mut m.registry;
        r.register(
            "servegraph_requests",
            "Requests answered, by status code (Kafka: 200 served, else the error's code)",
            m.requests.clone(),
        );
        r.register(
            "servegraph_request_duration_seconds",
            "Time from a request's arrival to its answer",
            m.request_seconds.clone(),
        );
        r.register(
            "servegraph_requests_in_flight",
            "Requests being served now",
            m.in_flight.clone(),
        );
        r.register(
            "servegraph_engine_overhead_seconds",
            "A request's time minus the time its model steps waited for and ran on their models: what the engine itself adds",
            m.overhead_seconds.clone(),
        );
        r.register(
            "servegraph_step_duration_seconds",
            "Time in each top-level step of the graph",
            m.step_seconds.clone(),
        );
        r.register(
            "servegraph_route_duration_seconds",
            "Time in each route of a router",
            m.route_seconds.clone(),
        );
        r.register(
            "servegraph_model_run_seconds",
            "Time inside each model run (ONNX Runtime, or the remote call)",
            m.model_seconds.clone(),
        );
        r.register(
            "servegraph_model_queue_wait_seconds",
            "Time a request waited for a model session",
            m.queue_wait_seconds.clone(),
        );
        r.register(
            "servegraph_model_batch_size",
            "Requests per model run (adaptive batching)",
            m.batch_size.clone(),
        );
        r.register(
            "servegraph_model_load_seconds",
            "How long loading each model took (a Python model: its last worker's load)",
            m.model_load_seconds.clone(),
        );
        r.register(
            "servegraph_model_restarts",
            "Model worker processes started again after they exited or were killed (Python models)",
            m.model_restarts.clone(),
        );
        r.register(
            "servegraph_tracking_events_dropped",
            "Tracking events dropped because the tracking queue was full",
            m.tracking_dropped.clone(),
        );
        r.register(
            "servegraph_kafka_consumer_lag",
            "Messages in a partition not yet consumed (librdkafka statistics)",
            m.kafka_lag.clone(),
        );
        r.register(
            "servegraph_kafka_committed_offset",
            "The last committed offset of a partition",
            m.kafka_committed.clone(),
        );
        r.register(
            "servegraph_kafka_connected",
            "Whether a Kafka client of the graph reaches one of its brokers (1) or none (0)",
            m.kafka_connected.clone(),
        );
        r.register(
            "servegraph_kafka_partition_assigned",
            "Whether the Kafka source owns a partition of its group now (1) or gave it up (0)",
            m.kafka_assigned.clone(),
        );
        r.register(
            "servegraph_kafka_rebalances",
            "Rebalances of the Kafka source's group: partitions assigned to it, or revoked",
            m.kafka_rebalances.clone(),
        );
        r.register(
            "servegraph_model_user_counter",
            "Counters a Python model keeps (Seldon's COUNTER metrics), by key",
            m.user_counters.clone(),
        );
        r.register(
            "servegraph_model_user_gauge",
            "Gauges a Python model sets (Seldon's GAUGE metrics, MLRun's set_metric), by key",
            m.user_gauges.clone(),
        );
        r.register(
            "servegraph_model_user_timer_seconds",
            "Timings a Python model reports (Seldon's TIMER metrics), by key",
            m.user_timers.clone(),
        );
        r.register(
            "servegraph_drift_score",
            "A drift statistic of a monitored column in the last window, by stat",
            m.drift_score.clone(),
        );
        r.register(
            "servegraph_drift_status",
            "A monitored column's drift status in the last window (0 none, 1 potential, 2 detected, -1 not computed)",
            m.drift_status.clone(),
        );
        r.register(
            "servegraph_drift_dataset_share",
            "The share of monitored columns detected as drifted in the last window",
            m.drift_share.clone(),
        );
        r.register(
            "servegraph_drift_window_events",
            "Rows in the monitor's last window",
            m.drift_window_events.clone(),
        );
        r.register(
            "servegraph_drift_window_end_timestamp_seconds",
            "When the monitor's last window ended (Unix seconds)",
            m.drift_window_end.clone(),
        );
        r.register(
            "servegraph_estimated_performance",
            "Performance in the monitor's last window: CBPE's estimate (estimated_*) or realised from feedback (realised_*)",
            m.monitor_performance.clone(),
        );
        m
    })
}

/// Distinct user metric keys kept per model; more are dropped (a key per request would grow
/// `/metrics` without bound).
pub const USER_KEYS: usize = 64;

/// How a model's own metric is recorded.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum UserMetric {
    /// Adds the value.
    Counter,
    /// Sets the value.
    Gauge,
    /// Observes the value, in milliseconds (Seldon's TIMER).
    TimerMs,
}

/// Records a metric a model reported; `false` when its key was dropped (past [`USER_KEYS`]
/// keys for the model, or a value that is negative for a counter or not finite).
pub fn user_metric(model: &str, key: &str, kind: UserMetric, value: f64) -> bool {
    if !value.is_finite() || (kind != UserMetric::Gauge && value < 0.0) {
        return false;
    }
    let m = global();
    {
        let mut keys = m.user_keys.lock().expect("not poisoned");
        let seen = keys.entry(model.to_owned()).or_default();
        if !seen.contains(key) {
            if seen.len() >= USER_KEYS {
                return false;
            }
            seen.insert(key.to_owned());
        }
    }
    let labels = [("model", model.to_owned()), ("key", key.to_owned())];
    match kind {
        UserMetric::Counter => {
            m.user_counters.get_or_create(&labels).inc_by(value);
        }
        UserMetric::Gauge => {
            m.user_gauges.get_or_create(&labels).set(value);
        }
        UserMetric::TimerMs => m
            .user_timers
            .get_or_create(&labels)
            .observe(Duration::from_secs_f64(value / 1000.0)),
    }
    true
}

/// A source's request metrics for one graph: resolved once, recorded per request.
#[derive(Clone)]
pub struct RequestMetrics {
    graph: String,
    source: &'static str,
    seconds: Timer,
    overhead: Timer,
    in_flight: Gauge,
    /// Counters of the codes servegraph answers with, each resolved on first use (no lock
    /// per request after that).
    codes: Arc<[(u16, OnceLock<Counter>)]>,
}

/// Every status code a source answers with (other codes are counted too, looked up each time).
const CODES: [u16; 10] = [200, 202, 400, 404, 413, 422, 429, 500, 503, 504];

/// Counts a request in flight until dropped.
pub struct InFlight(Gauge);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.dec();
    }
}

impl RequestMetrics {
    pub fn new(graph: &str, source: &'static str) -> RequestMetrics {
        let m = global();
        let labels = [("graph", graph.to_owned()), ("source", source.to_owned())];
        RequestMetrics {
            graph: graph.to_owned(),
            source,
            seconds: m.request_seconds.get_or_create(&labels).clone(),
            overhead: m.overhead_seconds.get_or_create(&labels).clone(),
            in_flight: m.in_flight.get_or_create(&labels).clone(),
            codes: CODES.iter().map(|&c| (c, OnceLock::new())).collect(),
        }
    }

    fn counter(&self, code: u16) -> Counter {
        global()
            .requests
            .get_or_create(&[
                ("graph", self.graph.clone()),
                ("source", self.source.to_owned()),
                ("code", code.to_string()),
            ])
            .clone()
    }

    /// A request starts; it is in flight until the guard drops.
    pub fn start(&self) -> InFlight {
        self.in_flight.inc();
        InFlight(self.in_flight.clone())
    }

    /// A request ended with `code` after `elapsed`; `model_time` of it was spent waiting for
    /// and running models (`None` when it did not run: rejected, malformed).
    pub fn finish(&self, code: u16, elapsed: Duration, model_time: Option<Duration>) {
        self.seconds.observe(elapsed);
        if let Some(model) = model_time {
            self.overhead.observe(elapsed.saturating_sub(model));
        }
        match self.codes.iter().find(|(c, _)| *c == code) {
            Some((_, counter)) => counter.get_or_init(|| self.counter(code)).inc(),
            None => self.counter(code).inc(),
        };
    }
}

/// The histogram of a graph step's time.
pub fn step_histogram(graph: &str, step: &str) -> Timer {
    global()
        .step_seconds
        .get_or_create(&[("graph", graph.to_owned()), ("step", step.to_owned())])
        .clone()
}

/// The time of graph `graph`'s top-level step `step`, when one was recorded or made (never
/// creates one).
pub fn step_timer(graph: &str, step: &str) -> Option<Timer> {
    let labels = [("graph", graph.to_owned()), ("step", step.to_owned())];
    global().step_seconds.get(&labels).map(|t| t.clone())
}

/// The time of router `router`'s route `route`, when one was made (never creates one).
pub fn route_timer(router: &str, route: &str) -> Option<Timer> {
    let labels = [("router", router.to_owned()), ("route", route.to_owned())];
    global().route_seconds.get(&labels).map(|t| t.clone())
}

/// What graph `graph`'s requests from `source` took, and how many were answered with each
/// status code servegraph answers with ([`CODES`]; others are left out); `None` when that
/// source does not serve the graph.
pub fn request_totals(graph: &str, source: &str) -> Option<(Timer, Vec<(u16, u64)>)> {
    let m = global();
    let labels = [("graph", graph.to_owned()), ("source", source.to_owned())];
    let timer = m.request_seconds.get(&labels).map(|t| t.clone())?;
    let codes = CODES
        .iter()
        .filter_map(|&code| {
            let labels = [
                ("graph", graph.to_owned()),
                ("source", source.to_owned()),
                ("code", code.to_string()),
            ];
            let n = m.requests.get(&labels).map(|c| c.get())?;
            Some((code, n))
        })
        .collect();
    Some((timer, codes))
}

/// The histogram of a router's route's time.
pub fn route_histogram(router: &str, route: &str) -> Timer {
    global()
        .route_seconds
        .get_or_create(&[("router", router.to_owned()), ("route", route.to_owned())])
        .clone()
}

/// A model's run-time, queue-wait and batch-size histograms.
#[derive(Clone)]
pub struct ModelMetrics {
    pub run_seconds: Timer,
    pub queue_wait_seconds: Timer,
    pub batch_size: BatchSizes,
}

impl ModelMetrics {
    pub fn new(model: &str) -> ModelMetrics {
        let m = global();
        let labels = [("model", model.to_owned())];
        let metrics = ModelMetrics {
            run_seconds: m.model_seconds.get_or_create(&labels).clone(),
            queue_wait_seconds: m.queue_wait_seconds.get_or_create(&labels).clone(),
            batch_size: batch_sizes(model, || m.batch_size.get_or_create(&labels).clone()),
        };
        register_model(model, &metrics);
        metrics
    }
}

/// Every model runner's metrics, by model key.
fn model_map() -> &'static DashMap<String, ModelMetrics> {
    static MAP: OnceLock<DashMap<String, ModelMetrics>> = OnceLock::new();
    MAP.get_or_init(DashMap::new)
}

/// The metrics of model runner `key` (`name` or `name:version`), when one was made.
pub fn model_metrics(key: &str) -> Option<ModelMetrics> {
    model_map().get(key).map(|m| m.clone())
}

/// Registers a model runner's metrics (called by [`ModelMetrics::new`]).
pub(crate) fn register_model(key: &str, metrics: &ModelMetrics) {
    model_map().insert(key.to_owned(), metrics.clone());
}

/// The batch sizes of model `key`: the ones already kept, so every runner of a model (and
/// the same model in a reloaded graph) counts on the same.
pub(crate) fn batch_sizes(key: &str, histogram: impl FnOnce() -> Histogram) -> BatchSizes {
    match model_map().get(key) {
        Some(m) => m.batch_size.clone(),
        None => BatchSizes::new(histogram()),
    }
}

/// How many executions ran at each batch size (the number of requests run together), exactly:
/// sizes up to 64 on atomics, larger ones under a lock. Also feeds the Prometheus histogram.
#[derive(Clone, Debug)]
pub struct BatchSizes(Arc<BatchCounts>);

#[derive(Debug)]
struct BatchCounts {
    small: [AtomicU64; 65],
    large: Mutex<BTreeMap<usize, u64>>,
    histogram: Histogram,
}

impl BatchSizes {
    pub(crate) fn new(histogram: Histogram) -> BatchSizes {
        BatchSizes(Arc::new(BatchCounts {
            small: std::array::from_fn(|_| AtomicU64::new(0)),
            large: Mutex::new(BTreeMap::new()),
            histogram,
        }))
    }

    /// One execution of `size` requests.
    pub fn observe(&self, size: f64) {
        self.0.histogram.observe(size);
        let n = size as usize;
        match self.0.small.get(n) {
            Some(c) => {
                c.fetch_add(1, Relaxed);
            }
            None => {
                *self
                    .0
                    .large
                    .lock()
                    .expect("not poisoned")
                    .entry(n)
                    .or_default() += 1
            }
        }
    }

    /// Executions by batch size, smallest first.
    pub fn counts(&self) -> Vec<(usize, u64)> {
        let mut out: Vec<(usize, u64)> = self
            .0
            .small
            .iter()
            .enumerate()
            .map(|(n, c)| (n, c.load(Relaxed)))
            .filter(|(_, c)| *c > 0)
            .collect();
        out.extend(
            self.0
                .large
                .lock()
                .expect("not poisoned")
                .iter()
                .map(|(n, c)| (*n, *c)),
        );
        out
    }
}

/// Records how long loading `model` took.
pub fn model_loaded(model: &str, took: Duration) {
    global()
        .model_load_seconds
        .get_or_create(&[("model", model.to_owned())])
        .set(took.as_secs_f64());
}

/// Counts a model's worker process started again after it exited or was killed.
pub fn model_restarted(model: &str) {
    global()
        .model_restarts
        .get_or_create(&[("model", model.to_owned())])
        .inc();
}

/// The counter of a graph's dropped tracking events.
pub fn tracking_dropped(graph: &str) -> Counter {
    global()
        .tracking_dropped
        .get_or_create(&[("graph", graph.to_owned())])
        .clone()
}

/// A consumed partition's lag and committed offset, as the Kafka client last reported them.
/// What the client does not know yet (librdkafka says -1 for an unknown lag and -1001 for
/// no commit yet) is left out, not exported as a number.
pub fn kafka_partition(topic: &str, partition: i32, lag: i64, committed: i64) {
    let labels = [
        ("topic", topic.to_owned()),
        ("partition", partition.to_string()),
    ];
    let m = global();
    if lag >= 0 {
        m.kafka_lag.get_or_create(&labels).set(lag);
    }
    if committed >= 0 {
        m.kafka_committed.get_or_create(&labels).set(committed);
    }
}

/// A rebalance gave the Kafka source partitions (`assigned`) or took them away: each
/// partition's `servegraph_kafka_partition_assigned`, and one count of the rebalance's kind.
pub fn kafka_rebalance(partitions: &[(String, i32)], assigned: bool) {
    let m = global();
    for (topic, partition) in partitions {
        m.kafka_assigned
            .get_or_create(&[
                ("topic", topic.clone()),
                ("partition", partition.to_string()),
            ])
            .set(assigned as i64);
    }
    let kind = if assigned { "assign" } else { "revoke" };
    m.kafka_rebalances
        .get_or_create(&[("kind", kind.into())])
        .inc();
}

/// The gauge that says whether the Kafka client `client` reaches one of `brokers`.
pub fn kafka_connected(client: &str, brokers: &str) -> Gauge {
    global()
        .kafka_connected
        .get_or_create(&[
            ("client", client.to_owned()),
            ("brokers", brokers.to_owned()),
        ])
        .clone()
}

/// A monitor's closed window: the dataset's drifted share, its rows and its end.
pub fn drift_window(graph: &str, share: f64, events: i64, end_seconds: f64) {
    let m = global();
    let g = [("graph", graph.to_owned())];
    m.drift_share.get_or_create(&g).set(share);
    m.drift_window_events.get_or_create(&g).set(events);
    m.drift_window_end.get_or_create(&g).set(end_seconds);
}

/// A monitored column's status and statistics in the last window (labels from the monitor's
/// declared columns and the fixed statistic names: bounded).
pub fn drift_column(graph: &str, column: &str, status: i8, stats: &[(&'static str, f64)]) {
    let m = global();
    m.drift_status
        .get_or_create(&[("graph", graph.to_owned()), ("feature", column.to_owned())])
        .set(i64::from(status));
    for (stat, v) in stats {
        m.drift_score
            .get_or_create(&[
                ("graph", graph.to_owned()),
                ("feature", column.to_owned()),
                ("stat", (*stat).to_owned()),
            ])
            .set(*v);
    }
}

/// A performance metric of the monitor's last window.
pub fn drift_performance(graph: &str, metric: &'static str, value: f64) {
    global()
        .monitor_performance
        .get_or_create(&[("graph", graph.to_owned()), ("metric", metric.to_owned())])
        .set(value);
}

/// Every metric, with what the routers of the graph being served (`graph`, its name and each
/// router's [`LearnerStats`], read at scrape time) have learnt.
pub fn render(graph: Option<(String, Vec<LearnerStats>)>) -> Result<String, fmt::Error> {
    let mut routers = Registry::default();
    if let Some((graph, stats)) = graph {
        routers.register_collector(Box::new(Routers { graph, stats }));
    }
    let mut out = String::new();
    prometheus_client::encoding::text::encode_registry(&mut out, &global().registry)?;
    prometheus_client::encoding::text::encode_registry(&mut out, &routers)?;
    prometheus_client::encoding::text::encode_eof(&mut out)?;
    Ok(out)
}

/// What a graph's routers learnt, as of the scrape.
#[derive(Debug)]
struct Routers {
    graph: String,
    stats: Vec<LearnerStats>,
}

type Labels = Vec<(&'static str, String)>;

/// One sample of a family: its labels and value.
enum Sample {
    Counter(Labels, u64),
    Gauge(Labels, f64),
}

impl Collector for Routers {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), fmt::Error> {
        let mut families: [(&str, &str, MetricType, Vec<Sample>); 9] = [
            (
                "servegraph_router_requests",
                "Requests a router sent to each route.",
                MetricType::Counter,
                Vec::new(),
            ),
            (
                "servegraph_router_rewards",
                "Rewards (feedback) a router took for each route, its replicas' included when shared.",
                MetricType::Counter,
                Vec::new(),
            ),
            (
                "servegraph_router_reward_sum",
                "The sum of the rewards taken for each route.",
                MetricType::Gauge,
                Vec::new(),
            ),
            (
                "servegraph_router_estimate",
                "What a bandit policy currently believes each route is worth.",
                MetricType::Gauge,
                Vec::new(),
            ),
            (
                "servegraph_router_shadow_copies",
                "Copies of requests for a shadow route: sent, skipped (too many in flight), failed.",
                MetricType::Counter,
                Vec::new(),
            ),
            (
                "servegraph_router_experiment_lift",
                "The absolute lift of each route's mean reward over the experiment's control.",
                MetricType::Gauge,
                Vec::new(),
            ),
            (
                "servegraph_router_experiment_p_value",
                "The always-valid p-value of each route's lift over the control, Holm-adjusted across the routes compared (the readout's p_adjusted).",
                MetricType::Gauge,
                Vec::new(),
            ),
            (
                "servegraph_router_experiment_chance_to_beat_control",
                "The posterior chance that each route's mean reward beats the control's.",
                MetricType::Gauge,
                Vec::new(),
            ),
            (
                "servegraph_router_experiment_srm_p_value",
                "The sample-ratio-mismatch check's p-value (a fixed split's assignments against its weights).",
                MetricType::Gauge,
                Vec::new(),
            ),
        ];
        for stats in &self.stats {
            for r in &stats.routes {
                let labels: Labels = vec![
                    ("graph", self.graph.clone()),
                    ("router", stats.router.clone()),
                    ("policy", stats.policy.clone()),
                    ("route", r.route.clone()),
                ];
                families[0].3.push(Sample::Counter(labels.clone(), r.pulls));
                families[1]
                    .3
                    .push(Sample::Counter(labels.clone(), r.rewards));
                families[2]
                    .3
                    .push(Sample::Gauge(labels.clone(), r.reward_sum));
                if let Some(e) = r.estimate {
                    families[3].3.push(Sample::Gauge(labels, e));
                }
            }
            if let Some(readout) = &stats.readout {
                for r in &readout.routes {
                    let labels: Labels = vec![
                        ("graph", self.graph.clone()),
                        ("router", stats.router.clone()),
                        ("policy", stats.policy.clone()),
                        ("route", r.route.clone()),
                    ];
                    for (family, value) in [
                        (5, r.lift_abs),
                        (6, r.p_adjusted),
                        (7, r.chance_to_beat_control),
                    ] {
                        if let Some(v) = value {
                            families[family].3.push(Sample::Gauge(labels.clone(), v));
                        }
                    }
                }
                if let Some(srm) = &readout.srm {
                    let labels: Labels = vec![
                        ("graph", self.graph.clone()),
                        ("router", stats.router.clone()),
                        ("policy", stats.policy.clone()),
                    ];
                    families[8].3.push(Sample::Gauge(labels, srm.p));
                }
            }
            if let Some(sh) = &stats.shadow {
                for (result, n) in [
                    ("sent", sh.sent),
                    ("skipped", sh.skipped),
                    ("failed", sh.failed),
                ] {
                    let labels: Labels = vec![
                        ("graph", self.graph.clone()),
                        ("router", stats.router.clone()),
                        ("route", sh.route.clone()),
                        ("result", result.to_owned()),
                    ];
                    families[4].3.push(Sample::Counter(labels, n));
                }
            }
        }
        for (name, help, kind, samples) in &families {
            if samples.is_empty() {
                continue;
            }
            let mut metric = encoder.encode_descriptor(name, help, None, *kind)?;
            for sample in samples {
                match sample {
                    Sample::Counter(labels, v) => {
                        ConstCounter::new(*v).encode(metric.encode_family(labels)?)?
                    }
                    Sample::Gauge(labels, v) => {
                        ConstGauge::new(*v).encode(metric.encode_family(labels)?)?
                    }
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::learning::{LearnerStats, RouteStats, ShadowStats};

    /// A router's stats.
    fn learnt() -> LearnerStats {
        {
            let route = |route: &str, pulls, rewards, reward_sum, estimate| RouteStats {
                route: route.into(),
                pulls,
                rewards,
                reward_sum,
                reward_mean: 0.0,
                estimate: Some(estimate),
            };
            LearnerStats {
                router: "ab".into(),
                policy: "thompson".into(),
                routes: vec![route("a", 7, 3, 1.5, 0.25), route("b", 2, 0, 0.0, 0.5)],
                shadow: Some(ShadowStats {
                    route: "c".into(),
                    sent: 4,
                    skipped: 1,
                    failed: 0,
                }),
                readout: None,
            }
        }
    }

    #[test]
    fn rebalances_set_the_partitions_and_count() {
        let parts = vec![
            ("rebalance-test".to_owned(), 4),
            ("rebalance-test".to_owned(), 5),
        ];
        let value = |p: i32| {
            render(None)
                .unwrap()
                .lines()
                .find(|l| {
                    l.starts_with("servegraph_kafka_partition_assigned{")
                        && l.contains("topic=\"rebalance-test\"")
                        && l.contains(&format!("partition=\"{p}\""))
                })
                .map(|l| l.rsplit(' ').next().unwrap().to_owned())
        };
        kafka_rebalance(&parts, true);
        assert_eq!(
            (value(4).as_deref(), value(5).as_deref()),
            (Some("1"), Some("1"))
        );
        kafka_rebalance(&parts[..1], false);
        assert_eq!(
            (value(4).as_deref(), value(5).as_deref()),
            (Some("0"), Some("1"))
        );
        let text = render(None).unwrap();
        assert!(
            text.contains("servegraph_kafka_rebalances_total{kind=\"revoke\"}"),
            "{text}"
        );
        assert!(
            text.contains("servegraph_kafka_rebalances_total{kind=\"assign\"}"),
            "{text}"
        );
    }

    #[test]
    fn timers_bucket_by_power_of_two() {
        let t = step_histogram("timer-test", "s");
        for us in [10, 16, 17, 40, 2_000_000] {
            t.observe(std::time::Duration::from_micros(us));
        }
        t.observe(std::time::Duration::from_secs(100));
        let text = render(None).unwrap();
        let of = |suffix: &str| -> Vec<String> {
            text.lines()
                .filter(|l| {
                    l.starts_with(&format!("servegraph_step_duration_seconds_{suffix}"))
                        && l.contains("graph=\"timer-test\"")
                })
                .map(|l| l.rsplit(' ').next().unwrap().to_owned())
                .collect()
        };
        assert_eq!(of("count"), ["6"]);
        let buckets = of("bucket");
        assert_eq!(buckets.len(), TIMER_FINITE + 1);
        // ≤16.4 µs: 10, 16; ≤32.8 µs: +17; ≤65.5 µs: +40; ≤2.15 s: +2 s; +Inf: +100 s.
        assert_eq!(&buckets[..3], ["2", "3", "4"]);
        assert_eq!(buckets[16], "4", "≤1.07 s");
        assert_eq!(buckets[17], "5", "≤2.15 s");
        assert_eq!(buckets[TIMER_FINITE - 1], "5");
        assert_eq!(buckets[TIMER_FINITE], "6");
        let sum: f64 = of("sum")[0].parse().unwrap();
        assert!((sum - 102.000083).abs() < 1e-6, "{sum}");
    }

    #[test]
    fn timers_read_back_as_snapshots() {
        let graph = "snapshot-test";
        assert!(step_timer(graph, "s").is_none(), "reading never creates");
        let t = step_histogram(graph, "s");
        for us in [10, 40, 2_000_000] {
            t.observe(std::time::Duration::from_micros(us));
        }
        let snap = step_timer(graph, "s").unwrap().snapshot();
        assert_eq!(snap.count, 3);
        assert!((snap.sum_s - 2.00005).abs() < 1e-9, "{}", snap.sum_s);
        let bounds = timer_bounds();
        assert_eq!(snap.buckets.len(), bounds.len() + 1);
        // Per bucket, not cumulative: ≤16.4 µs, ≤65.5 µs, ≤2.15 s.
        let at = |s: f64| bounds.iter().position(|b| *b >= s).unwrap();
        assert_eq!(snap.buckets[at(10e-6)], 1);
        assert_eq!(snap.buckets[at(40e-6)], 1);
        assert_eq!(snap.buckets[at(2.0)], 1);
        assert_eq!(bounds[0], 16_384e-9);
        assert!(route_timer("snapshot-test-router", "r").is_none());
        assert!(request_totals(graph, "http").is_none());
        let requests = RequestMetrics::new(graph, "http");
        requests.finish(200, std::time::Duration::from_millis(1), None);
        requests.finish(200, std::time::Duration::from_millis(1), None);
        requests.finish(429, std::time::Duration::from_millis(1), None);
        let (timer, codes) = request_totals(graph, "http").unwrap();
        assert_eq!(timer.count(), 3);
        assert_eq!(codes, [(200, 2), (429, 1)]);
    }

    #[test]
    fn router_stats_are_exported() {
        let text = render(Some(("g".to_owned(), vec![learnt()]))).unwrap();
        for line in [
            "# TYPE servegraph_router_requests counter",
            r#"servegraph_router_requests_total{graph="g",router="ab",policy="thompson",route="a"} 7"#,
            r#"servegraph_router_rewards_total{graph="g",router="ab",policy="thompson",route="b"} 0"#,
            r#"servegraph_router_reward_sum{graph="g",router="ab",policy="thompson",route="a"} 1.5"#,
            r#"servegraph_router_estimate{graph="g",router="ab",policy="thompson",route="b"} 0.5"#,
            r#"servegraph_router_shadow_copies_total{graph="g",router="ab",route="c",result="skipped"} 1"#,
            "# EOF",
        ] {
            assert!(text.lines().any(|l| l == line), "{line}\n{text}");
        }
        let empty = render(None).unwrap();
        assert!(empty.ends_with("# EOF\n"), "{empty}");
        assert!(!empty.contains("servegraph_router_"), "{empty}");
    }

    /// The readout's lift, p-value, chance to beat the control (not for the control itself)
    /// and the ratio check, labelled by the graph file's names only.
    #[test]
    fn experiment_readouts_are_gauges() {
        use crate::experiment::{Aggregate, Design, Settings, readout};
        let arm = |route: &str, n: u64, s: f64| Aggregate {
            route: route.into(),
            n,
            rewarded: n,
            sum: s,
            sum_sq: s,
            weight: Some(1.0),
            ..Aggregate::default()
        };
        let mut stats = learnt();
        stats.policy = "weighted".into();
        stats.readout = Some(
            readout(
                &Settings::new("a"),
                &Design::Fixed { sticky: None },
                &[arm("a", 1000, 100.0), arm("b", 1000, 150.0)],
            )
            .unwrap(),
        );
        let r = &stats.readout.as_ref().unwrap().routes[1];
        let text = render(Some(("g".to_owned(), vec![stats.clone()]))).unwrap();
        let labels = r#"{graph="g",router="ab",policy="weighted",route="b"}"#;
        let value = |name: &str, labels: &str| -> f64 {
            let prefix = format!("{name}{labels} ");
            let line = text.lines().find(|l| l.starts_with(&prefix));
            line.unwrap_or_else(|| panic!("{prefix}\n{text}"))[prefix.len()..]
                .parse()
                .unwrap()
        };
        assert!(text.contains("# TYPE servegraph_router_experiment_lift gauge"));
        for (name, want) in [
            ("servegraph_router_experiment_lift", r.lift_abs),
            ("servegraph_router_experiment_p_value", r.p_adjusted),
            (
                "servegraph_router_experiment_chance_to_beat_control",
                r.chance_to_beat_control,
            ),
        ] {
            assert!(
                (value(name, labels) - want.unwrap()).abs() < 1e-12,
                "{name}"
            );
        }
        let router = r#"{graph="g",router="ab",policy="weighted"}"#;
        assert_eq!(
            value("servegraph_router_experiment_srm_p_value", router),
            1.0
        );
        assert!(
            !text.contains(r#"experiment_lift{graph="g",router="ab",policy="weighted",route="a"}"#)
        );
    }

    #[test]
    fn what_kafka_does_not_know_yet_is_not_exported() {
        // librdkafka: lag -1 (unknown), committed -1001 (nothing committed yet).
        kafka_partition("metrics-test-topic", 0, -1, -1001);
        kafka_partition("metrics-test-topic", 1, 5, 42);
        let text = render(None).unwrap();
        let of = |p: u8| -> Vec<&str> {
            text.lines()
                .filter(|l| {
                    l.contains("topic=\"metrics-test-topic\"")
                        && l.contains(&format!("partition=\"{p}\""))
                })
                .collect()
        };
        assert!(of(0).is_empty(), "{:?}", of(0));
        assert_eq!(
            of(1),
            [
                r#"servegraph_kafka_consumer_lag{topic="metrics-test-topic",partition="1"} 5"#,
                r#"servegraph_kafka_committed_offset{topic="metrics-test-topic",partition="1"} 42"#,
            ]
        );
        // Once known, a value replaces nothing it should not: a commit later is exported.
        kafka_partition("metrics-test-topic", 0, 3, 0);
        let text = render(None).unwrap();
        assert!(text.contains(
            r#"servegraph_kafka_committed_offset{topic="metrics-test-topic",partition="0"} 0"#
        ));
    }
}
