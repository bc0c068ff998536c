//! The tracking stream: one monitoring event per (sampled) request, written off the hot path.
//!
//! A request hands its event to [`Tracker::emit`], which never blocks: the event goes into a
//! bounded queue, or, when the queue is full (the sink is slow or down), it is dropped,
//! counted, and a warning is logged (at most every 10 s). A background task takes events from
//! the queue, groups up to `batch` of them (or whatever arrived within `flush_ms`) and writes
//! them to the sink as JSON lines. Field names follow MLRun's model-monitoring events.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime};

use async_trait::async_trait;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use tokio::sync::mpsc;

/// `tracking:` in a graph file.
#[derive(Clone, Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct TrackingSpec {
    /// Where events go: `file://PATH.jsonl` (relative to the graph file's folder), `stdout`,
    /// or `kafka://HOST:PORT/TOPIC`.
    pub sink: String,
    /// Keep one request in `sample` (1: every request).
    #[serde(default = "one")]
    pub sample: u64,
    /// Events written at a time.
    #[serde(default = "default_batch")]
    pub batch: usize,
    /// Longest an event waits for its batch to fill, in milliseconds.
    #[serde(default = "default_flush_ms")]
    pub flush_ms: u64,
    /// Events that may wait for the sink; past it events are dropped and counted.
    #[serde(default = "default_queue")]
    pub queue: usize,
    /// Tensors with more elements than this are recorded without their data.
    #[serde(default = "default_max_elements")]
    pub max_tensor_elements: usize,
    /// Constant labels added to every event (e.g. `{env: prod}`).
    #[serde(default)]
    pub labels: std::collections::BTreeMap<String, String>,
}

fn one() -> u64 {
    1
}
fn default_batch() -> usize {
    100
}
fn default_flush_ms() -> u64 {
    1000
}
fn default_queue() -> usize {
    10_000
}
fn default_max_elements() -> usize {
    1024
}

impl TrackingSpec {
    /// Checks the settings; the message names the field.
    pub fn check(&self) -> Result<(), String> {
        if self.sample == 0 || self.batch == 0 || self.queue == 0 || self.flush_ms == 0 {
            return Err("`sample`, `batch`, `queue` and `flush_ms` must be at least 1".into());
        }
        Sink::parse(&self.sink, Path::new(".")).map(|_| ())
    }
}

/// Where events are written.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Sink {
    File(PathBuf),
    Stdout,
    /// Brokers and topic.
    Kafka {
        brokers: String,
        topic: String,
    },
}

impl Sink {
    /// Parses a sink URL; relative file paths resolve under `base`.
    pub fn parse(url: &str, base: &Path) -> Result<Sink, String> {
        if url == "stdout" {
            return Ok(Sink::Stdout);
        }
        if let Some(path) = url.strip_prefix("file://") {
            if path.is_empty() {
                return Err("`file://` needs a path".into());
            }
            return Ok(Sink::File(base.join(path)));
        }
        if let Some(rest) = url.strip_prefix("kafka://") {
            let (brokers, topic) = rest
                .split_once('/')
                .filter(|(b, t)| !b.is_empty() && !t.is_empty())
                .ok_or_else(|| format!("`{url}`: a Kafka sink is kafka://HOST:PORT/TOPIC"))?;
            return Ok(Sink::Kafka {
                brokers: brokers.to_owned(),
                topic: topic.to_owned(),
            });
        }
        Err(format!(
            "unknown tracking sink `{url}`: expected file://PATH.jsonl, stdout or kafka://HOST:PORT/TOPIC"
        ))
    }
}

/// One monitoring event, as a request leaves it: owned data, cheap to make; the writer task
/// turns it into JSON (MLRun's field names where they exist; see docs/tracking.md).
#[derive(Clone, Debug)]
pub struct TrackingEvent {
    pub id: String,
    /// When the request arrived.
    pub when: SystemTime,
    pub graph: String,
    /// The model (graph or route) the request addressed.
    pub model: String,
    pub version: Option<String>,
    /// The route a router took, if any.
    pub route: Option<String>,
    /// `/explain` rather than `/infer`.
    pub explain: bool,
    /// The request's tensors.
    pub request: Vec<crate::Tensor>,
    /// The response's tensors; `None` when the request failed.
    pub resp: Option<Vec<crate::Tensor>>,
    /// The error, if the request failed.
    pub error: Option<String>,
    /// Time through the graph, in microseconds.
    pub microsec: u64,
    /// Time in each step, in microseconds.
    pub step_microsec: Vec<(String, u64)>,
    /// A shadow copy's answer (discarded from the caller's response), not the request's own.
    pub shadow: bool,
    /// The decisions the routers' policies made for the request, outermost first.
    pub decisions: Vec<Decision>,
    /// Feedback for the request `id` (`op: feedback`: the event says only this, the router
    /// in `model`), not a request.
    pub reward: Option<f64>,
    /// With `reward`: the true label or value the feedback gave, if any.
    pub label: Option<Value>,
}

impl TrackingEvent {
    /// The event of a reward (and the true label, when given) taken for the response `id` of
    /// router `router` of `graph`.
    pub fn feedback(
        graph: &str,
        router: &str,
        id: &str,
        reward: f64,
        label: Option<&Value>,
    ) -> TrackingEvent {
        TrackingEvent {
            id: id.to_owned(),
            when: SystemTime::now(),
            graph: graph.to_owned(),
            model: router.to_owned(),
            version: None,
            route: None,
            explain: false,
            request: Vec::new(),
            resp: None,
            error: None,
            microsec: 0,
            step_microsec: Vec::new(),
            shadow: false,
            decisions: Vec::new(),
            reward: Some(reward),
            label: label.cloned(),
        }
    }
}

/// A router's decision, as the tracking stream records it (the fields of Vowpal Wabbit's
/// DSJSON: the action set, its probabilities, the chosen index, the policy and its state).
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Decision {
    pub router: String,
    /// The policy type (`weighted`, `thompson`, …).
    pub policy: String,
    /// The generation of the router's learning (one more than the state it restored).
    pub generation: u64,
    /// The routes the policy chose among, in order.
    pub routes: Vec<String>,
    /// The probability of each of `routes` as the policy chose (before the choice); absent
    /// when the policy does not know them (a Seldon ROUTER class).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pmf: Option<Vec<f64>>,
    /// The chosen route's index in `routes` (0-based).
    pub chosen: usize,
    /// A sticky router's key (`header:x-user`): the unit of randomisation is that key, not
    /// the request.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub unit: Option<String>,
    /// The request's features as the policy saw them (the router's `policy.features`
    /// encoded, the intercept 1 last); absent when the router declares no features.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub context: Option<Vec<f64>>,
    /// A contextual policy's predicted reward of each of `routes` (θ·context).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub scores: Option<Vec<f64>>,
}

/// A decision with the stream's sampling rate.
#[derive(Serialize)]
struct DecisionJson<'a> {
    #[serde(flatten)]
    decision: &'a Decision,
    /// The probability the request was kept by the stream's sampling (1 / `sample`).
    sampled: f64,
}

tokio::task_local! {
    /// The tracker of the tracked request this task runs, for steps that answer off the
    /// request's path (shadow routes).
    static CURRENT: Tracker;
    /// The decisions the routers of the tracked request this task runs made.
    static DECISIONS: std::cell::RefCell<Vec<Decision>>;
}

/// Records a router's decision with the tracked request this task runs (`make` runs only
/// for a tracked request).
pub fn decided(make: impl FnOnce() -> Decision) {
    let _ = DECISIONS.try_with(|d| d.borrow_mut().push(make()));
}

/// The tracker of the tracked request being run on this task, if any.
pub fn current() -> Option<Tracker> {
    CURRENT.try_with(Clone::clone).ok()
}

/// An event's JSON line, written by the writer task.
struct EventJson<'a> {
    event: &'a TrackingEvent,
    labels: &'a Map<String, Value>,
    max_elements: usize,
    /// 1 / `sample`.
    sampled: f64,
}

impl Serialize for EventJson<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let e = self.event;
        let tensors = |t| crate::protocol::TensorsJson {
            tensors: t,
            max_elements: self.max_elements,
        };
        let mut m = s.serialize_map(None)?;
        m.serialize_entry("id", &e.id)?;
        m.serialize_entry("when", &timestamp(e.when))?;
        m.serialize_entry("graph", &e.graph)?;
        m.serialize_entry("model", &e.model)?;
        if let Some(v) = &e.version {
            m.serialize_entry("version", v)?;
        }
        if let Some(r) = &e.route {
            m.serialize_entry("route", r)?;
        }
        if let Some(reward) = e.reward {
            m.serialize_entry("op", "feedback")?;
            m.serialize_entry("reward", &reward)?;
            if let Some(label) = &e.label {
                m.serialize_entry("label", label)?;
            }
            m.serialize_entry("labels", self.labels)?;
            return m.end();
        }
        m.serialize_entry("op", if e.explain { "explain" } else { "infer" })?;
        m.serialize_entry("request", &tensors(&e.request))?;
        match &e.resp {
            Some(r) => m.serialize_entry("resp", &tensors(r))?,
            None => m.serialize_entry("resp", &Value::Null)?,
        }
        if let Some(err) = &e.error {
            m.serialize_entry("error", err)?;
        }
        if e.shadow {
            m.serialize_entry("shadow", &true)?;
        }
        if !e.decisions.is_empty() {
            let decisions: Vec<DecisionJson> = e
                .decisions
                .iter()
                .map(|decision| DecisionJson {
                    decision,
                    sampled: self.sampled,
                })
                .collect();
            m.serialize_entry("decisions", &decisions)?;
        }
        m.serialize_entry("microsec", &e.microsec)?;
        let steps: Map<String, Value> = e
            .step_microsec
            .iter()
            .map(|(k, v)| (k.clone(), (*v).into()))
            .collect();
        m.serialize_entry("step_microsec", &steps)?;
        m.serialize_entry("labels", self.labels)?;
        m.end()
    }
}

/// Why a sink could not write (or close): its own error, an I/O or a broker's.
pub type SinkError = Box<dyn std::error::Error + Send + Sync>;

/// A file sink that could not be opened.
#[derive(Debug, thiserror::Error)]
#[error("{}: {source}", path.display())]
pub struct OpenError {
    pub path: PathBuf,
    pub source: std::io::Error,
}

/// Where the background task writes batches of JSON lines.
#[async_trait]
pub trait EventSink: Send + 'static {
    /// Takes a batch. May return before it is durable (a Kafka sink hands it to the
    /// producer); returns how many *earlier* events turned out not to be delivered.
    async fn write(&mut self, lines: &[u8], events: usize) -> Result<usize, SinkError>;

    /// Waits until everything taken is written (at shutdown); returns how many were not.
    async fn close(&mut self) -> Result<usize, SinkError> {
        Ok(0)
    }
}

struct FileSink {
    file: std::fs::File,
}

#[async_trait]
impl EventSink for FileSink {
    async fn write(&mut self, lines: &[u8], _events: usize) -> Result<usize, SinkError> {
        // Small appends to a local file: a blocking write is cheaper than a thread hop, and
        // this task is off every request's path.
        self.file
            .write_all(lines)
            .and_then(|_| self.file.flush())
            .map(|_| 0)
            .map_err(SinkError::from)
    }
}

struct StdoutSink;

#[async_trait]
impl EventSink for StdoutSink {
    async fn write(&mut self, lines: &[u8], _events: usize) -> Result<usize, SinkError> {
        let mut out = std::io::stdout().lock();
        out.write_all(lines)
            .and_then(|_| out.flush())
            .map(|_| 0)
            .map_err(SinkError::from)
    }
}

/// Opens a file or stdout sink (Kafka sinks are opened by the Kafka module).
pub fn open_sink(sink: &Sink) -> Result<Box<dyn EventSink>, SinkError> {
    match sink {
        Sink::Stdout => Ok(Box::new(StdoutSink)),
        Sink::File(path) => {
            if let Some(dir) = path.parent() {
                std::fs::create_dir_all(dir).map_err(|source| OpenError {
                    path: dir.to_owned(),
                    source,
                })?;
            }
            let file = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(path)
                .map_err(|source| OpenError {
                    path: path.to_owned(),
                    source,
                })?;
            Ok(Box::new(FileSink { file }))
        }
        Sink::Kafka { .. } => Err("a Kafka sink needs servegraph built with Kafka".into()),
    }
}

/// Counters the tracker keeps.
#[derive(Default, Debug)]
pub struct TrackingStats {
    pub emitted: AtomicU64,
    pub written: AtomicU64,
    pub dropped: AtomicU64,
    pub failed_writes: AtomicU64,
    /// `servegraph_tracking_events_dropped_total` of the graph.
    dropped_metric: prometheus_client::metrics::counter::Counter,
}

impl TrackingStats {
    fn drop_events(&self, n: u64) -> u64 {
        self.dropped_metric.inc_by(n);
        self.dropped.fetch_add(n, Ordering::Relaxed) + n
    }
}

/// The sending side: cheap to clone, never blocks.
#[derive(Clone)]
pub struct Tracker {
    tx: mpsc::Sender<TrackingEvent>,
    sample: u64,
    counter: Arc<AtomicU64>,
    pub stats: Arc<TrackingStats>,
    last_warning: Arc<std::sync::Mutex<Option<Instant>>>,
    /// The graph whose requests it tracks.
    graph: Arc<str>,
}

/// The writing side: a task to spawn, finishing once every sender is gone and the queue is
/// flushed.
pub struct TrackingWriter {
    rx: mpsc::Receiver<TrackingEvent>,
    sink: Box<dyn EventSink>,
    batch: usize,
    flush: Duration,
    stats: Arc<TrackingStats>,
    labels: Map<String, Value>,
    max_elements: usize,
    sample: u64,
}

impl Tracker {
    pub fn new(
        spec: &TrackingSpec,
        graph: &str,
        sink: Box<dyn EventSink>,
    ) -> (Tracker, TrackingWriter) {
        let (tx, rx) = mpsc::channel(spec.queue);
        let stats = Arc::new(TrackingStats {
            dropped_metric: crate::metrics::tracking_dropped(graph),
            ..TrackingStats::default()
        });

        (
            Tracker {
                tx,
                sample: spec.sample,
                counter: Arc::new(AtomicU64::new(0)),
                stats: Arc::clone(&stats),
                last_warning: Arc::new(std::sync::Mutex::new(None)),
                graph: graph.into(),
            },
            TrackingWriter {
                rx,
                sink,
                batch: spec.batch,
                flush: Duration::from_millis(spec.flush_ms),
                stats,
                labels: spec
                    .labels
                    .iter()
                    .map(|(k, v)| (k.clone(), Value::String(v.clone())))
                    .collect(),
                max_elements: spec.max_tensor_elements,
                sample: spec.sample,
            },
        )
    }

    /// The graph whose requests it tracks.
    pub fn graph(&self) -> &str {
        &self.graph
    }

    /// Whether this request is one of the sampled ones (1 in `sample`, evenly).
    pub fn sampled(&self) -> bool {
        self.sample == 1
            || self
                .counter
                .fetch_add(1, Ordering::Relaxed)
                .is_multiple_of(self.sample)
    }

    /// Queues an event; never waits. A full queue drops it, counts it, and warns (at most
    /// every 10 s).
    pub fn emit(&self, event: TrackingEvent) {
        self.stats.emitted.fetch_add(1, Ordering::Relaxed);
        if self.tx.try_send(event).is_err() {
            let dropped = self.stats.drop_events(1);
            let mut last = self.last_warning.lock().expect("not poisoned");
            if last.is_none_or(|t| t.elapsed() > Duration::from_secs(10)) {
                *last = Some(Instant::now());
                tracing::warn!(
                    dropped,
                    "tracking sink is slow or down: dropping monitoring events"
                );
            }
        }
    }
}

impl TrackingWriter {
    /// Counts events the sink reported lost after taking them.
    fn lost(&self, n: usize) {
        if n > 0 {
            self.stats.written.fetch_sub(n as u64, Ordering::Relaxed);
            self.stats.drop_events(n as u64);
            tracing::warn!(events = n, "monitoring events were not delivered");
        }
    }

    /// Runs until every [`Tracker`] is dropped, then writes what is left.
    pub async fn run(mut self) {
        let mut buf = Vec::with_capacity(self.batch * 512);
        let mut count = 0;
        loop {
            let deadline = tokio::time::sleep(self.flush);
            tokio::pin!(deadline);
            // Fill a batch, or stop at the flush deadline.
            let closed = loop {
                tokio::select! {
                    next = self.rx.recv() => match next {
                        Some(event) => {
                            let line = EventJson { event: &event, labels: &self.labels, max_elements: self.max_elements, sampled: 1.0 / self.sample as f64 };
                            if serde_json::to_writer(&mut buf, &line).is_ok() {
                                buf.push(b'\n');
                                count += 1;
                            }
                            if count >= self.batch {
                                break false;
                            }
                        }
                        None => break true,
                    },
                    _ = &mut deadline => break false,
                }
            };
            if count > 0 {
                match self.sink.write(&buf, count).await {
                    Ok(lost) => {
                        self.stats
                            .written
                            .fetch_add(count as u64, Ordering::Relaxed);
                        self.lost(lost);
                    }
                    Err(e) => {
                        self.stats.failed_writes.fetch_add(1, Ordering::Relaxed);
                        self.stats.drop_events(count as u64);
                        tracing::warn!(events = count, error = %e, "could not write monitoring events");
                    }
                }
                buf.clear();
                count = 0;
            }
            if closed {
                match self.sink.close().await {
                    Ok(lost) => self.lost(lost),
                    Err(e) => tracing::warn!(error = %e, "closing the tracking sink failed"),
                }
                return;
            }
        }
    }
}

/// Runs `work` with `tracker` as the task's [`current`] tracker (what shadow routes and
/// step timings report to).
pub async fn scope<F: std::future::Future>(tracker: Tracker, work: F) -> F::Output {
    CURRENT.scope(tracker, work).await
}

/// Runs `work` as [`scope`] does, and collects the decisions its routers make ([`decided`]).
pub async fn scope_deciding<F: std::future::Future>(
    tracker: Tracker,
    work: F,
) -> (F::Output, Vec<Decision>) {
    DECISIONS
        .scope(std::cell::RefCell::new(Vec::new()), async move {
            let out = CURRENT.scope(tracker, work).await;
            (out, DECISIONS.with(|d| d.take()))
        })
        .await
}

/// RFC 3339 UTC with microseconds.
pub fn timestamp(t: SystemTime) -> String {
    humantime::format_rfc3339_micros(t).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(extra: &str) -> TrackingSpec {
        let yaml = format!("sink: stdout\n{extra}");
        marked_yaml::from_node(&marked_yaml::parse_yaml(0, &yaml).unwrap()).unwrap()
    }

    fn event(i: usize) -> TrackingEvent {
        TrackingEvent {
            id: i.to_string(),
            when: SystemTime::UNIX_EPOCH,
            graph: "g".into(),
            model: "m".into(),
            version: None,
            route: None,
            explain: false,
            request: Vec::new(),
            resp: None,
            error: None,
            microsec: 1,
            step_microsec: Vec::new(),
            shadow: false,
            decisions: Vec::new(),
            reward: None,
            label: None,
        }
    }

    /// Collects what is written, batch by batch.
    struct Memory(
        Arc<std::sync::Mutex<Vec<usize>>>,
        Arc<std::sync::Mutex<Vec<u8>>>,
    );

    #[async_trait]
    impl EventSink for Memory {
        async fn write(&mut self, lines: &[u8], events: usize) -> Result<usize, SinkError> {
            self.0.lock().unwrap().push(events);
            self.1.lock().unwrap().extend_from_slice(lines);
            Ok(0)
        }
    }

    #[test]
    fn sinks_parse() {
        let base = Path::new("/g");
        assert_eq!(Sink::parse("stdout", base), Ok(Sink::Stdout));
        assert_eq!(
            Sink::parse("file://t/e.jsonl", base),
            Ok(Sink::File("/g/t/e.jsonl".into()))
        );
        assert_eq!(
            Sink::parse("kafka://127.0.0.1:9092/events", base),
            Ok(Sink::Kafka {
                brokers: "127.0.0.1:9092".into(),
                topic: "events".into()
            })
        );
        assert!(
            Sink::parse("kafka://host", base)
                .unwrap_err()
                .contains("kafka://HOST:PORT/TOPIC")
        );
        assert!(
            Sink::parse("s3://x", base)
                .unwrap_err()
                .contains("unknown tracking sink")
        );
    }

    #[test]
    fn sampling_keeps_one_in_n() {
        let (t, _w) = Tracker::new(&spec("sample: 4"), "g", Box::new(StdoutSink));
        let kept = (0..100).filter(|_| t.sampled()).count();
        assert_eq!(kept, 25);
    }

    #[tokio::test(start_paused = true)]
    async fn batches_and_flushes_then_drains_on_close() {
        let sizes = Arc::new(std::sync::Mutex::new(Vec::new()));
        let bytes = Arc::new(std::sync::Mutex::new(Vec::new()));
        let sink = Memory(Arc::clone(&sizes), Arc::clone(&bytes));
        let (t, w) = Tracker::new(&spec("batch: 3\nflush_ms: 50"), "g", Box::new(sink));
        let task = tokio::spawn(w.run());
        for i in 0..7 {
            t.emit(event(i));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        // Two full batches, then the last event by the flush deadline.
        assert_eq!(*sizes.lock().unwrap(), vec![3, 3, 1]);
        t.emit(event(7));
        drop(t);
        task.await.unwrap();
        assert_eq!(*sizes.lock().unwrap(), vec![3, 3, 1, 1]);
        let text = String::from_utf8(bytes.lock().unwrap().clone()).unwrap();
        let ids: Vec<String> = text
            .lines()
            .map(|l| {
                serde_json::from_str::<Value>(l).unwrap()["id"]
                    .as_str()
                    .unwrap()
                    .to_owned()
            })
            .collect();
        assert_eq!(ids, ["0", "1", "2", "3", "4", "5", "6", "7"]);
    }

    #[tokio::test]
    async fn a_full_queue_drops_and_counts_without_blocking() {
        let (t, w) = Tracker::new(&spec("queue: 2"), "g", Box::new(StdoutSink));
        // The writer is not running: the queue fills.
        for i in 0..5 {
            t.emit(event(i));
        }
        assert_eq!(t.stats.emitted.load(Ordering::Relaxed), 5);
        assert_eq!(t.stats.dropped.load(Ordering::Relaxed), 3);
        drop(w);
    }
}
