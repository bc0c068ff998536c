//! Drift and performance monitoring of the tracking stream (`servegraph monitor`, or a
//! background task of `serve`): never on the request path, it reads the events the tracking
//! stream already writes.
//!
//! `spec.rs` the YAML; `line.rs` one event, read borrowed; `profile.rs` reference profiles;
//! `stats.rs` the statistics; `window.rs` a window's columns, statuses and thresholds;
//! `perf.rs` realised and estimated performance; here the [`Monitor`] that ties them, its
//! state as `GET /v2/monitor` serves it, and the readers (a JSONL file, followed or not).

pub mod experiments;
pub mod line;
pub mod perf;
pub mod profile;
pub mod spec;
pub mod stats;
pub mod window;

use std::collections::VecDeque;
use std::io::{BufRead, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock, Weak};
use std::time::{Duration, SystemTime};

use serde_json::{Value, json};

use crate::diag::Diagnostic;
pub use line::Line;
pub use profile::Profile;
use spec::ColumnSpec;
pub use spec::MonitorSpec;
use window::{Column, Thresholds};

/// Closed windows kept per column for `GET /v2/monitor`.
pub const HISTORY: usize = 100;

/// A monitor: the spec, the reference, the open window and what the closed ones said.
pub struct Monitor {
    graph: String,
    spec: MonitorSpec,
    base: PathBuf,
    /// `None` while the reference is being frozen from the stream.
    reference: Option<Profile>,
    freezing: Option<profile::Builder>,
    columns: Vec<Column>,
    perf: Option<perf::Performance>,
    /// Needs each line as a JSON value too (columns read by `field`).
    by_field: bool,
    index: u64,
    rows: usize,
    started: Option<SystemTime>,
    /// The window's `max_age`, read once.
    max_age: std::time::Duration,
    last_dataset: Option<(f64, bool)>,
    /// Each router's decisions and rewards, for its experiment readout.
    experiments: experiments::Experiments,
}

impl Monitor {
    /// A monitor of `graph`'s stream; `profile` is the reference when the spec names a file
    /// (relative paths resolve under `base`).
    pub fn new(graph: &str, spec: MonitorSpec, base: &Path) -> Result<Monitor, String> {
        let problems = spec.check();
        if let Some((path, msg)) = problems.first() {
            return Err(format!("monitor.{path}: {msg}"));
        }
        let by_field = spec
            .features
            .iter()
            .chain(&spec.outputs)
            .any(|c| c.field.is_some());
        let mut m = Monitor {
            graph: graph.to_owned(),
            base: base.to_owned(),
            reference: None,
            freezing: None,
            columns: Vec::new(),
            perf: spec.performance.clone().map(perf::Performance::new),
            by_field,
            index: 0,
            rows: 0,
            started: None,
            max_age: spec.window.max_age(),
            last_dataset: None,
            experiments: experiments::Experiments::new(
                spec.experiments.clone(),
                spec.performance.as_ref().map_or(10_000, |p| p.max_pending),
            ),
            spec,
        };
        match (&m.spec.reference.profile, m.spec.reference.events) {
            (Some(file), _) => {
                let p = Profile::read(&base.join(file))?;
                m.start(p)?;
            }
            _ => m.freezing = Some(profile::Builder::new(&m.spec.features, &m.spec.outputs)),
        }
        Ok(m)
    }

    /// The reference is known: the columns and their thresholds.
    fn start(&mut self, p: Profile) -> Result<(), String> {
        let mut columns = Vec::new();
        for (i, (spec, kind)) in self.specs().enumerate() {
            let reference = p.column(&spec.name).cloned().ok_or_else(|| {
                format!(
                    "the reference profile `{}` has no column `{}` (it has {})",
                    p.id,
                    spec.name,
                    crate::diag::all_of(&p.columns.iter().map(|c| &c.name).collect::<Vec<_>>())
                )
            })?;
            if reference.column_type != spec.kind {
                return Err(format!(
                    "column `{}` is {} in the reference profile, {} in the monitor",
                    spec.name,
                    reference.column_type.as_str(),
                    spec.kind.as_str()
                ));
            }
            let thresholds = Thresholds::new(
                &self.spec.thresholds,
                &reference,
                self.spec.window.events,
                p.events,
                i as u64,
            );
            columns.push(Column::new(spec.clone(), kind, reference, thresholds));
        }
        self.columns = columns;
        self.reference = Some(p);
        Ok(())
    }

    fn specs(&self) -> impl Iterator<Item = (&ColumnSpec, &'static str)> {
        self.spec
            .features
            .iter()
            .map(|c| (c, "feature"))
            .chain(self.spec.outputs.iter().map(|c| (c, "output")))
    }

    pub fn graph(&self) -> &str {
        &self.graph
    }

    /// Takes one line of the stream; returns the report of a window it closed, if any.
    /// Lines that are not JSON are skipped (and counted by the caller).
    pub fn line(&mut self, text: &[u8]) -> Result<Option<Value>, serde_json::Error> {
        // UTF-8 checked once for the line, not once per string in it.
        let text = std::str::from_utf8(text).map_err(serde::de::Error::custom)?;
        let line: Line = serde_json::from_str(text)?;
        let feedback = line.is_feedback();
        let value = if self.by_field || feedback {
            Some(serde_json::from_str::<Value>(text)?)
        } else {
            None
        };
        Ok(self.event(&line, value.as_ref()))
    }

    /// Takes one parsed event.
    pub fn event(&mut self, line: &Line, value: Option<&Value>) -> Option<Value> {
        if line.is_feedback() {
            if let (Some(id), Some(router), Some(reward)) =
                (line.id.as_deref(), line.model.as_deref(), line.reward)
            {
                self.experiments.feedback(id, router, reward);
            }
            if let (Some(p), Some(v)) = (&mut self.perf, value) {
                p.feedback_value(v);
            }
            return None;
        }
        if let Some(d) = &line.decisions {
            self.experiments.decisions(line.id.as_deref(), d);
        }
        if line.shadow || (line.request.is_none() && line.inputs.is_none()) {
            return None;
        }
        let when = line
            .when
            .as_deref()
            .and_then(|w| humantime::parse_rfc3339_weak(w).ok())
            .unwrap_or_else(SystemTime::now);
        let rows = self.rows_of(line);
        if let Some(b) = &mut self.freezing {
            for r in 0..rows {
                b.add_row();
                for (i, (spec, kind)) in self
                    .spec
                    .features
                    .iter()
                    .map(|c| (c, false))
                    .chain(self.spec.outputs.iter().map(|c| (c, true)))
                    .enumerate()
                {
                    match column_value(spec, kind, line, value, r) {
                        Some(e) if spec.kind == spec::ColumnType::Categorical => {
                            b.add_text(i, e.category().as_deref())
                        }
                        Some(e) => b.add_number(i, Some(e.number().unwrap_or(f64::NAN))),
                        None => b.add_number(i, None),
                    }
                }
            }
            if b.rows() as usize >= self.spec.reference.events.unwrap_or(0) {
                let b = self.freezing.take().expect("freezing");
                let id = format!("{}-stream", self.graph);
                match b.build(id, "the stream's first events".into()) {
                    Ok(mut p) => {
                        if let Some(save) = &self.spec.reference.save
                            && let Err(e) = p.write(&self.base.join(save))
                        {
                            tracing::warn!(error = %e, "could not save the frozen reference");
                        }
                        if let Err(e) = self.start(p) {
                            tracing::warn!(error = %e, "the frozen reference is unusable");
                        }
                    }
                    Err(e) => tracing::warn!(error = %e, "could not freeze the reference"),
                }
            }
            return None;
        }
        // A window open past `max_age` closes before this event.
        let mut report = None;
        if let Some(started) = self.started
            && when.duration_since(started).unwrap_or_default() >= self.max_age
        {
            report = self.close(when);
        }
        if self.started.is_none() {
            self.started = Some(when);
        }
        for c in &mut self.columns {
            c.take(line, value, rows);
        }
        if let Some(p) = &mut self.perf {
            p.event(line);
        }
        self.rows += rows;
        if self.rows >= self.spec.window.events {
            report = self.close(when).or(report);
        }
        report
    }

    /// Rows of an event: the first dimension of the tensors its columns read (1 without).
    fn rows_of(&self, line: &Line) -> usize {
        self.specs()
            .filter_map(|(c, kind)| {
                let t = c.tensor.as_deref()?;
                let tensors = if kind == "output" {
                    line.response_tensors()
                } else {
                    line.request_tensors()
                };
                tensors.iter().find(|x| x.name == t).map(|x| x.rows().0)
            })
            .max()
            .unwrap_or(1)
            .max(1)
    }

    /// Closes a window open for `max_age` of wall-clock time (a followed stream gone quiet).
    pub fn tick(&mut self, now: SystemTime) -> Option<Value> {
        let started = self.started?;
        (now.duration_since(started).unwrap_or_default() >= self.max_age)
            .then(|| self.close(now))
            .flatten()
    }

    /// Closes the open window at the end of the input (skipped below `min_events`).
    pub fn finish(&mut self) -> Option<Value> {
        self.started?;
        self.close(SystemTime::now())
    }

    /// Closes the open window: statistics, statuses, gauges; the window's report.
    fn close(&mut self, end: SystemTime) -> Option<Value> {
        let started = self.started.take()?;
        let rows = std::mem::take(&mut self.rows);
        let index = self.index;
        self.index += 1;
        let computed = rows >= self.spec.window.min_events;
        let end_s = timestamp(end);
        let mut features = Vec::new();
        let mut detected = 0;
        for c in &mut self.columns {
            let entry = c.close(index, &end_s, rows, computed, self.spec.window.events);
            if entry.status >= 2 {
                detected += 1;
            }
            features.push(c.report(&entry));
        }
        let share = if self.columns.is_empty() {
            0.0
        } else {
            detected as f64 / self.columns.len() as f64
        };
        let drifted = computed && share >= self.spec.thresholds.drift_share;
        let performance = self
            .perf
            .as_mut()
            .map(|p| p.close(self.reference.as_ref().and_then(|r| r.calibration.as_ref())));
        if computed {
            self.last_dataset = Some((share, drifted));
            let end_secs = end
                .duration_since(SystemTime::UNIX_EPOCH)
                .unwrap_or_default()
                .as_secs_f64();
            crate::metrics::drift_window(&self.graph, share, rows as i64, end_secs);
            for c in &self.columns {
                if let Some(last) = &c.last {
                    crate::metrics::drift_column(
                        &self.graph,
                        &c.spec.name,
                        last.status,
                        &last.stats.named(),
                    );
                }
            }
            if let Some(p) = &self.perf {
                for (metric, v) in p.gauges() {
                    crate::metrics::drift_performance(&self.graph, metric, v);
                }
            }
        }
        Some(json!({
            "graph": self.graph,
            "reference": self.reference_json(),
            "window": index,
            "start": timestamp(started),
            "end": end_s,
            "events": rows,
            "computed": computed,
            "dataset": {"share": share, "drift_share": self.spec.thresholds.drift_share, "drifted": drifted},
            "features": features,
            "performance": performance,
            "thresholds": {"mode": self.spec.thresholds.mode_str(), "sigma": self.spec.thresholds.sigma},
            "experiments": self.experiments_json(),
        }))
    }

    fn reference_json(&self) -> Value {
        match &self.reference {
            Some(p) => json!({"id": p.id, "version": p.version, "events": p.events}),
            None => Value::Null,
        }
    }

    /// The monitor's state, as `GET /v2/monitor` lists it.
    pub fn state(&self) -> Value {
        let w = &self.spec.window;
        let (share, drifted) = self.last_dataset.unwrap_or((0.0, false));
        json!({
            "graph": self.graph,
            "reference": self.reference_json(),
            "freezing": self.freezing.as_ref().map(|b| json!({"events": b.rows(), "of": self.spec.reference.events})),
            "window": {"events": w.events, "max_age_s": w.max_age().as_secs_f64(), "min_events": w.min_events},
            "current": {"index": self.index, "events": self.rows, "started": self.started.map(timestamp)},
            "dataset": {"share": share, "drift_share": self.spec.thresholds.drift_share, "drifted": drifted},
            "features": self.columns.iter().map(Column::state).collect::<Vec<_>>(),
            "performance": self.perf.as_ref().map(perf::Performance::state),
            "experiments": self.experiments_json(),
        })
    }

    /// The experiments' readouts from the stream (null before any router decided).
    fn experiments_json(&self) -> Value {
        if self.experiments.is_empty() {
            Value::Null
        } else {
            self.experiments.readouts()
        }
    }
}

/// Column `spec`'s value in row `row` of an event (`None`: missing).
pub fn column_value<'l>(
    spec: &ColumnSpec,
    output: bool,
    line: &'l Line,
    value: Option<&'l Value>,
    row: usize,
) -> Option<line::Elem<'l>> {
    if let Some(pointer) = &spec.field {
        return match value?.pointer(pointer)? {
            Value::Number(n) => n.as_f64().map(line::Elem::Num),
            Value::String(s) => Some(line::Elem::Str(std::borrow::Cow::Borrowed(s))),
            Value::Bool(b) => Some(line::Elem::Bool(*b)),
            _ => None,
        };
    }
    let name = spec.tensor.as_deref()?;
    let tensors = if output {
        line.response_tensors()
    } else {
        line.request_tensors()
    };
    let t = tensors.iter().find(|t| t.name == name)?;
    match t.at(row, spec.index)? {
        line::Elem::Null => None,
        e => Some(e.clone()),
    }
}

/// RFC 3339 UTC with microseconds.
fn timestamp(t: SystemTime) -> String {
    crate::tracking::timestamp(t)
}

impl spec::ThresholdSpec {
    fn mode_str(&self) -> &'static str {
        match self.mode {
            spec::ThresholdMode::ReferenceChunks => "reference_chunks",
            spec::ThresholdMode::Mlrun => "mlrun",
            spec::ThresholdMode::Evidently => "evidently",
        }
    }
}

/// The monitors running in this process, for `GET /v2/monitor`.
fn running() -> &'static Mutex<Vec<Weak<Mutex<Monitor>>>> {
    static RUNNING: OnceLock<Mutex<Vec<Weak<Mutex<Monitor>>>>> = OnceLock::new();
    RUNNING.get_or_init(Default::default)
}

/// Lists `monitor` in `GET /v2/monitor` while it lives.
pub fn publish(monitor: &Arc<Mutex<Monitor>>) {
    let mut all = running().lock().expect("not poisoned");
    all.retain(|m| m.strong_count() > 0);
    all.push(Arc::downgrade(monitor));
}

/// `GET /v2/monitor`: `{"monitors": [...]}`.
pub fn snapshot() -> Value {
    let all = running().lock().expect("not poisoned");
    let monitors: Vec<Value> = all
        .iter()
        .filter_map(Weak::upgrade)
        .map(|m| m.lock().expect("not poisoned").state())
        .collect();
    json!({ "monitors": monitors })
}

/// Where window reports go.
pub enum ReportSink {
    None,
    Writer(Box<dyn Write + Send>),
}

impl ReportSink {
    /// `file://PATH` (under `base`) or `stdout`; `kafka://HOST:PORT/TOPIC` is opened by
    /// `kafka::monitor::open_report` (the transports sit above this module).
    pub fn open(url: Option<&str>, base: &Path) -> Result<ReportSink, String> {
        match url {
            None => Ok(ReportSink::None),
            Some("stdout") => Ok(ReportSink::Writer(Box::new(std::io::stdout()))),
            Some(u) if u.starts_with("kafka://") => Err(format!(
                "`{u}`: reports to Kafka need servegraph built with Kafka (feature `kafka`)"
            )),
            Some(u) => {
                let path = base.join(u.strip_prefix("file://").unwrap_or(u));
                if let Some(dir) = path.parent() {
                    std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
                }
                let f = std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(&path)
                    .map_err(|e| format!("{}: {e}", path.display()))?;
                Ok(ReportSink::Writer(Box::new(f)))
            }
        }
    }

    pub fn write(&mut self, report: &Value) {
        if let ReportSink::Writer(w) = self
            && let Err(e) = serde_json::to_writer(&mut *w, report)
                .map_err(std::io::Error::from)
                .and_then(|_| w.write_all(b"\n"))
                .and_then(|_| w.flush())
        {
            tracing::warn!(error = %e, "could not write the monitor's report");
        }
    }
}

/// How a JSONL stream is read.
#[derive(Clone, Copy, Debug)]
pub struct Follow {
    /// Keep reading as the file grows.
    pub follow: bool,
    /// Start at the file's end (a serving process's own events).
    pub from_end: bool,
}

/// What reading a stream did.
#[derive(Debug, Default, Clone, Copy)]
pub struct Read {
    pub lines: u64,
    pub skipped: u64,
    pub windows: u64,
}

/// Reads a JSONL stream into `monitor` until its end (or, following, until `stop`),
/// writing each closed window's report.
pub fn read_file(
    monitor: &Arc<Mutex<Monitor>>,
    path: &Path,
    how: Follow,
    report: &mut ReportSink,
    stop: &AtomicBool,
) -> Result<Read, String> {
    let open = || std::fs::File::open(path).map_err(|e| format!("{}: {e}", path.display()));
    // Following a file that is not written yet: wait for it.
    let file = loop {
        match open() {
            Ok(f) => break f,
            Err(_) if how.follow && !stop.load(Ordering::Relaxed) => {
                std::thread::sleep(Duration::from_millis(200))
            }
            Err(e) => return Err(e),
        }
    };
    let mut reader = std::io::BufReader::with_capacity(1 << 16, file);
    if how.from_end {
        use std::io::Seek;
        reader
            .seek(std::io::SeekFrom::End(0))
            .map_err(|e| e.to_string())?;
    }
    let mut read = Read::default();
    let mut buf = Vec::with_capacity(4096);
    loop {
        let n = reader
            .read_until(b'\n', &mut buf)
            .map_err(|e| format!("{}: {e}", path.display()))?;
        if n == 0 || !buf.ends_with(b"\n") && how.follow {
            // The end for now: a partial line waits for its rest.
            if !how.follow || stop.load(Ordering::Relaxed) {
                if !buf.is_empty() {
                    take_line(monitor, &buf, report, &mut read);
                }
                break;
            }
            let closed = monitor
                .lock()
                .expect("not poisoned")
                .tick(SystemTime::now());
            if let Some(r) = closed {
                read.windows += 1;
                report.write(&r);
            }
            std::thread::sleep(Duration::from_millis(100));
            continue;
        }
        take_line(monitor, &buf, report, &mut read);
        buf.clear();
    }
    if let Some(r) = monitor.lock().expect("not poisoned").finish() {
        read.windows += 1;
        report.write(&r);
    }
    Ok(read)
}

/// Takes one line of a stream, counting it in `read` and writing a closed window's report.
pub fn take_line(
    monitor: &Arc<Mutex<Monitor>>,
    buf: &[u8],
    report: &mut ReportSink,
    read: &mut Read,
) {
    let text = buf.trim_ascii();
    if text.is_empty() {
        return;
    }
    read.lines += 1;
    match monitor.lock().expect("not poisoned").line(text) {
        Ok(Some(r)) => {
            read.windows += 1;
            report.write(&r);
        }
        Ok(None) => {}
        Err(_) => read.skipped += 1,
    }
}

/// `monitor:` of a graph file (or a monitor file: `name` and `monitor`), checked: the
/// graph's name and the spec, or every problem with its line and column.
pub fn load_spec(source: &str) -> Result<(String, MonitorSpec), Vec<Diagnostic>> {
    let root = marked_yaml::parse_yaml(0, source)
        .map_err(|e| vec![Diagnostic::new(format!("not YAML: {e}"))])?;
    let map = root.as_mapping().ok_or_else(|| {
        vec![Diagnostic::new(
            "expected a mapping with `name` and `monitor`",
        )]
    })?;
    let name = map
        .get_scalar("name")
        .map(|n| n.as_str().to_owned())
        .ok_or_else(|| vec![Diagnostic::new("`name` (the graph's) is missing").at(root.span())])?;
    let node = map
        .get_node("monitor")
        .ok_or_else(|| vec![Diagnostic::new("there is no `monitor:` section").at(root.span())])?;
    let spec = parse_spec(node)?;
    Ok((name, spec))
}

/// `monitor:`'s node, deserialized and checked, each problem at its field.
pub fn parse_spec(node: &marked_yaml::Node) -> Result<MonitorSpec, Vec<Diagnostic>> {
    let spec: MonitorSpec = crate::step::from_yaml(node, node.span(), "`monitor`", &[])?;
    let problems: Vec<Diagnostic> = spec
        .check()
        .into_iter()
        .map(|(path, msg)| {
            Diagnostic::new(format!("monitor.{path}: {msg}")).at(&span_at(node, &path))
        })
        .collect();
    if problems.is_empty() {
        Ok(spec)
    } else {
        Err(problems)
    }
}

/// The span of `path` (`a.0.b`) under `node`, or the nearest node above it that exists.
pub fn span_at(node: &marked_yaml::Node, path: &str) -> marked_yaml::Span {
    let mut at = node;
    for part in path.split('.') {
        let next = match (at.as_mapping(), at.as_sequence(), part.parse::<usize>()) {
            (Some(m), _, _) => m.get_node(part),
            (_, Some(s), Ok(i)) => s.get(i),
            _ => None,
        };
        match next {
            Some(n) => at = n,
            None => break,
        }
    }
    *at.span()
}

/// Runs `monitor` on a background thread following `path` (from its end) until the process
/// exits; its state is listed by `GET /v2/monitor`.
pub fn spawn_following(monitor: Monitor, path: PathBuf, report: ReportSink) -> Arc<Mutex<Monitor>> {
    let shared = Arc::new(Mutex::new(monitor));
    publish(&shared);
    let task = Arc::clone(&shared);
    let stop = Arc::new(AtomicBool::new(false));
    std::thread::Builder::new()
        .name("servegraph-monitor".into())
        .spawn(move || {
            let mut report = report;
            let how = Follow {
                follow: true,
                from_end: true,
            };
            if let Err(e) = read_file(&task, &path, how, &mut report, &stop) {
                tracing::warn!(error = %e, "the monitor stopped");
            }
        })
        .expect("spawning the monitor's thread");
    shared
}

/// A bounded FIFO of (id, value) for joins.
pub(crate) struct Pending<T> {
    map: std::collections::HashMap<String, T>,
    order: VecDeque<String>,
    cap: usize,
}

impl<T> Pending<T> {
    pub(crate) fn new(cap: usize) -> Self {
        Pending {
            map: Default::default(),
            order: VecDeque::new(),
            cap,
        }
    }

    pub(crate) fn insert(&mut self, id: String, v: T) {
        if self.map.insert(id.clone(), v).is_none() {
            self.order.push_back(id);
            while self.order.len() > self.cap {
                if let Some(old) = self.order.pop_front() {
                    self.map.remove(&old);
                }
            }
        }
    }

    pub(crate) fn take(&mut self, id: &str) -> Option<T> {
        // The id stays in `order` until it ages out: removing it there is O(n).
        self.map.remove(id)
    }

    pub(crate) fn len(&self) -> usize {
        self.map.len()
    }
}
