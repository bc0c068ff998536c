//! One Python worker: a child process, the OS thread that supervises it, and the tokio task
//! that serves it. The thread starts the process and has it load the model (blocking, as a
//! build does), then hands its pipes to a task on the server's runtime: the task takes jobs
//! from the model's queue, writes a frame and awaits the answer on non-blocking pipes, so a
//! call costs the worker's own wake-up and the reactor's, and no hand-off between threads. A
//! watchdog thread kills the process when a call (or the load) overruns. When the process
//! exits, the thread fails the calls in flight at once with 503 and starts a new one, with
//! exponential backoff, while the other workers go on serving.

use std::os::fd::OwnedFd;
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::sync::atomic::{AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use servegraph_engine::{Error, ErrorKind, Result, Tensor};
use tokio::io::AsyncWriteExt;
use tokio::net::unix::pipe;
use tokio::runtime::Handle;

use super::frame::{self, Frame};
use super::runtime;
use super::shm::Arena;
use crate::model::batch::{
    Batching, Job, Notes, answer_all, answer_all_noted, first_job, gather_async, join, split,
};

/// How the workers of one model are started.
pub struct WorkerConfig {
    pub(super) model: String,
    pub(super) python: String,
    pub(super) env: Vec<(String, String)>,
    /// The LOAD frame's metadata: what to import and construct.
    pub(super) load: serde_json::Value,
    pub(super) load_timeout: Duration,
    pub(super) hang_kill: Duration,
    /// Replace a worker after this many calls (0: never).
    pub(super) max_requests: u64,
    /// Replace a worker whose resident memory passed this many MiB (0: never); read from
    /// `/proc/PID/statm` every [`RSS_EVERY`] calls.
    pub(super) max_rss_mb: u64,
    /// Shared memory per worker process for large tensors, in bytes (0: none).
    pub(super) shm_bytes: usize,
    /// How long an answer (engine side) or the next call (worker side) is polled for before
    /// sleeping until it comes.
    pub(super) spin: Duration,
    /// What the class says of its health, when it reports it.
    pub(super) health: Arc<Health>,
    /// `servegraph_model_*` of this model: calls (the Python round trip), queue waits, batch
    /// sizes.
    pub(super) metrics: servegraph_engine::metrics::ModelMetrics,
}

/// A model's health as its class reports it (Seldon's `health_status()`, `is_ready()`),
/// probed every `health_interval_ms` once a worker has said it reports one.
#[derive(Default)]
pub struct Health {
    pub(super) reports: std::sync::atomic::AtomicBool,
    /// Why the last probe said it is not ready (`None`: ready, or not probed yet).
    unhealthy: std::sync::Mutex<Option<String>>,
    /// Whether `unhealthy` holds a reason: every call reads it, the lock only when set.
    sick: std::sync::atomic::AtomicBool,
}

impl Health {
    /// Why the class says it is not ready, if it does.
    pub(super) fn unhealthy(&self) -> Option<String> {
        if !self.sick.load(Ordering::Relaxed) {
            return None;
        }
        self.unhealthy.lock().expect("not poisoned").clone()
    }

    pub(super) fn set(&self, verdict: Option<String>) {
        let mut reason = self.unhealthy.lock().expect("not poisoned");
        self.sick.store(verdict.is_some(), Ordering::Relaxed);
        *reason = verdict;
    }
}

/// A model's queue, which its workers' tasks take jobs from in turn.
pub(super) type Queue = Arc<tokio::sync::Mutex<tokio::sync::mpsc::Receiver<Job>>>;

/// First and longest wait before starting a worker again after it exited.
const BACKOFF: (Duration, Duration) = (Duration::from_millis(500), Duration::from_secs(30));
/// How often (in calls) a worker's memory is read for `recycle.max_rss_mb`.
const RSS_EVERY: u64 = 16;
/// Lines of a worker's output kept to explain a failed start.
const LAST_LINES: usize = 20;
/// How long a worker told to stop may take before it is killed.
const STOP_GRACE: Duration = Duration::from_secs(2);

/// What the threads and the task share.
struct Shared {
    /// The running process's id (0: none).
    pid: AtomicU32,
    /// When the current call (or load) must be over, in ms since `epoch` (0: no call).
    deadline_ms: AtomicU64,
    /// Set by the watchdog when it killed the process, so the failure says why.
    killed: std::sync::atomic::AtomicBool,
    epoch: Instant,
    /// Set when the model is let go: the watchdog ends.
    stopping: std::sync::atomic::AtomicBool,
    /// Why the last start failed, while the worker has none running (`load_mode: async`
    /// readiness says it).
    last_error: std::sync::Mutex<Option<String>>,
    /// Set once a process of this worker has loaded.
    loaded_once: std::sync::atomic::AtomicBool,
}

impl Shared {
    fn arm(&self, within: Duration) {
        let at = self.epoch.elapsed() + within;
        self.deadline_ms
            .store(at.as_millis().max(1) as u64, Ordering::Relaxed);
    }

    fn disarm(&self) {
        self.deadline_ms.store(0, Ordering::Relaxed);
    }
}

/// A worker: what its threads and task share (they all end on their own).
pub(super) struct Worker {
    shared: Arc<Shared>,
}

/// The runtime the workers' tasks run on: the caller's (the server's), or, for a graph built
/// outside one (`servegraph validate`), a small one of their own.
pub(super) fn io_runtime() -> Handle {
    Handle::try_current().unwrap_or_else(|_| own_runtime())
}

/// A one-thread runtime for the workers' pipes, apart from the server's: a batching model's
/// worker is served there, so that its answers are read the moment they arrive (the
/// server's threads, busy with requests, poll for I/O only now and then) and the next batch
/// is gathered and written at once.
fn own_runtime() -> Handle {
    static OWN: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    OWN.get_or_init(|| {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("py-io")
            .enable_all()
            .build()
            .expect("a runtime for the Python workers' pipes")
    })
    .handle()
    .clone()
}

impl Worker {
    /// Starts the process, loads the model in it, and starts the thread that supervises it
    /// and the task that serves it; a failed start or load is an error carrying the Python
    /// traceback.
    pub(super) fn start(
        index: usize,
        config: Arc<WorkerConfig>,
        queue: Queue,
        batching: Option<Batching>,
        loaded: Arc<AtomicUsize>,
        wait: bool,
    ) -> std::result::Result<Worker, String> {
        let shared = Arc::new(Shared {
            pid: AtomicU32::new(0),
            deadline_ms: AtomicU64::new(0),
            killed: Default::default(),
            epoch: Instant::now(),
            stopping: Default::default(),
            last_error: Default::default(),
            loaded_once: Default::default(),
        });
        {
            let shared = Arc::clone(&shared);
            std::thread::Builder::new()
                .name(format!("py-watch-{index}"))
                .spawn(move || watch(&shared))
                .map_err(|e| format!("cannot start a thread: {e}"))?;
        }
        let handle = if batching.is_some() {
            own_runtime()
        } else {
            io_runtime()
        };
        // The process is started by the thread that then supervises it: Linux sends a child
        // its parent-death signal when the *thread* that forked it ends, and the thread that
        // builds a graph (a blocking-pool thread) ends long before the model does.
        let (started_tx, started) = std::sync::mpsc::channel();
        {
            let shared = Arc::clone(&shared);
            std::thread::Builder::new()
                .name(format!("py-{}-{index}", config.model))
                .spawn(move || {
                    let first = match Process::start(index, &config, &shared, &handle) {
                        Ok(p) => {
                            loaded.fetch_add(1, Ordering::Relaxed);
                            let _ = started_tx.send(Ok(()));
                            Some(p)
                        }
                        // Loading in the background, a failed load is tried again and
                        // readiness says why meanwhile.
                        Err(e) if !wait => {
                            tracing::warn!(model = %config.model, worker = index, error = %e, "Python worker did not start");
                            *shared.last_error.lock().expect("not poisoned") = Some(e);
                            None
                        }
                        Err(e) => {
                            shared.stopping.store(true, Ordering::Relaxed);
                            let _ = started_tx.send(Err(e));
                            return;
                        }
                    };
                    let worker = Supervisor {
                        index,
                        config,
                        queue,
                        batching,
                        loaded,
                        shared,
                        handle,
                    };
                    worker.supervise(first)
                })
                .map_err(|e| format!("cannot start a thread: {e}"))?;
        }
        if wait {
            started
                .recv()
                .map_err(|_| "the Python worker's thread ended while starting it".to_owned())??;
        }
        Ok(Worker { shared })
    }
}

impl Worker {
    /// Why its last start failed, while it has no process loaded.
    pub(super) fn last_error(&self) -> Option<String> {
        self.shared.last_error.lock().expect("not poisoned").clone()
    }

    /// Whether a process of it has loaded the model yet.
    pub(super) fn loaded_once(&self) -> bool {
        self.shared.loaded_once.load(Ordering::Relaxed)
    }
}

impl Drop for Worker {
    /// Never blocks (the last graph holding the model may be let go on an async worker): the
    /// queue is closed by then (the model's sender dropped first), so the task ends, the
    /// thread stops its process (its pipes closed, then a kill after a grace period) and ends
    /// on its own, and a thread waiting to start one again sees `stopping`. Should the server
    /// exit first, the workers see their stdin close (and, on Linux, their parent-death
    /// signal) and exit too.
    fn drop(&mut self) {
        self.shared.stopping.store(true, Ordering::Relaxed);
    }
}

/// Kills the process when a call overruns its deadline.
fn watch(shared: &Shared) {
    while !shared.stopping.load(Ordering::Relaxed) {
        std::thread::sleep(Duration::from_millis(20));
        let deadline = shared.deadline_ms.load(Ordering::Relaxed);
        if deadline != 0 && shared.epoch.elapsed().as_millis() as u64 > deadline {
            let pid = shared.pid.load(Ordering::Relaxed);
            if let Some(pid) = rustix::process::Pid::from_raw(pid as i32) {
                shared.killed.store(true, Ordering::Relaxed);
                shared.disarm();
                let _ = rustix::process::kill_process(pid, rustix::process::Signal::KILL);
            }
        }
    }
}

/// A running worker process (its pipes are its [`Io`]).
struct Process {
    child: Child,
}

impl Process {
    /// Starts a worker and has it load the model (blocking I/O on its pipes, under the load
    /// timeout), then hands the pipes to the runtime.
    fn start(
        index: usize,
        config: &WorkerConfig,
        shared: &Shared,
        handle: &Handle,
    ) -> std::result::Result<(Process, Io), String> {
        let runtime = runtime::dir()?;
        let mut python_path = runtime.display().to_string();
        if let Some((_, p)) = config.env.iter().find(|(k, _)| k == "PYTHONPATH") {
            python_path = format!("{python_path}:{p}");
        }
        let arena = match config.shm_bytes {
            0 => None,
            n => match Arena::new(n, DEPTH) {
                Ok(a) => Some(Arc::new(a)),
                Err(e) => {
                    tracing::warn!(model = %config.model, worker = index, error = %e, "no shared memory for the Python worker: large tensors go through its pipe");
                    None
                }
            },
        };
        let mut command = Command::new(&config.python);
        command
            .args(["-X", "faulthandler", "-u", "-m", "servegraph._worker"])
            .env_clear()
            .envs(config.env.iter().map(|(k, v)| (k.as_str(), v.as_str())));
        if let Some(arena) = &arena {
            arena.share_with(&mut command);
        }
        let mut child = command
            .env("PYTHONPATH", python_path)
            .env("PYTHONUNBUFFERED", "1")
            .env("SERVEGRAPH_PARENT_PID", std::process::id().to_string())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| format!("cannot start Python worker `{}`: {e}", config.python))?;
        shared.pid.store(child.id(), Ordering::Relaxed);
        let stderr = child.stderr.take().expect("piped");
        let (model, pid) = (config.model.clone(), child.id());
        let last = Arc::new(std::sync::Mutex::new(std::collections::VecDeque::new()));
        let log = std::thread::Builder::new()
            .name(format!("py-log-{index}"))
            .spawn({
                let last = Arc::clone(&last);
                move || {
                    use std::io::BufRead;
                    for line in std::io::BufReader::new(stderr).lines() {
                        let Ok(line) = line else { break };
                        tracing::info!(target: "python", model = %model, worker = index, pid, "{line}");
                        let mut last = last.lock().expect("not poisoned");
                        if last.len() == LAST_LINES {
                            last.pop_front();
                        }
                        last.push_back(line);
                    }
                }
            })
            .ok();
        let mut input = child.stdin.take().expect("piped");
        let mut output = child.stdout.take().expect("piped");
        let mut p = Process { child };
        shared.arm(config.load_timeout);
        let loaded = load(&mut input, &mut output, config);
        shared.disarm();
        let failure = match loaded {
            Ok(()) => match Io::new(input, output, arena, handle) {
                Ok(io) => {
                    shared.loaded_once.store(true, Ordering::Relaxed);
                    return Ok((p, io));
                }
                Err(e) => e,
            },
            Err(e) => {
                drop((input, output));
                e
            }
        };
        let status = p.reap();
        let killed = shared.killed.swap(false, Ordering::Relaxed);
        shared.pid.store(0, Ordering::Relaxed);
        Err(if killed {
            format!(
                "Python model `{}` did not load within {} ms (load_timeout_ms)",
                config.model,
                config.load_timeout.as_millis()
            )
        } else if failure.is_empty() {
            // What it printed says why (an import error before the runtime ran).
            if let Some(log) = log {
                let _ = log.join();
            }
            let last = last.lock().expect("not poisoned");
            let mut message = format!(
                "the Python worker (`{}`) exited while starting ({status})",
                config.python
            );
            if !last.is_empty() {
                message.push_str(", after printing:\n");
                message.push_str(&last.iter().cloned().collect::<Vec<_>>().join("\n"));
            }
            if last.iter().any(|l| l.contains("No module named 'numpy'")) {
                message.push_str("\n(the interpreter needs NumPy; set `python:` or SERVEGRAPH_PYTHON to one that has it)");
            }
            message
        } else {
            failure
        })
    }

    /// The exit status of a process that is gone or told to go (its pipes closed), killing
    /// it after [`STOP_GRACE`].
    fn reap(&mut self) -> String {
        let until = Instant::now() + STOP_GRACE;
        loop {
            match self.child.try_wait() {
                Ok(Some(status)) => return describe(status),
                Ok(None) if Instant::now() < until => std::thread::sleep(Duration::from_millis(5)),
                _ => {
                    let _ = self.child.kill();
                    return self
                        .child
                        .wait()
                        .map(describe)
                        .unwrap_or_else(|e| e.to_string());
                }
            }
        }
    }
}

/// HELLO, then LOAD → LOADED; an error says what Python said (type, message, traceback), and
/// is empty when the worker went away (what it printed says why).
fn load(
    input: &mut ChildStdin,
    output: &mut ChildStdout,
    config: &WorkerConfig,
) -> std::result::Result<(), String> {
    let mut buf = Vec::new();
    let hello = frame::read(output, &mut buf)?.ok_or_else(String::new)?;
    if hello.kind != frame::HELLO {
        return Err(format!("the worker greeted with frame kind {}", hello.kind));
    }
    frame::write(
        input,
        &mut buf,
        frame::LOAD,
        0,
        Some(&config.load),
        &[],
        &[],
    )
    .map_err(|_| String::new())?;
    let reply = frame::read(output, &mut buf)?.ok_or_else(String::new)?;
    match reply.kind {
        frame::LOADED => {
            // The class reports its health (`health_status()`, `is_ready()`): the model probes it.
            if reply.meta.as_ref().is_some_and(|m| m["health"] == true) {
                config.health.reports.store(true, Ordering::Relaxed);
            }
            Ok(())
        }
        frame::LOAD_ERROR => Err(python_error("could not load", reply.meta.as_ref(), true)),
        k => Err(format!("the worker answered LOAD with frame kind {k}")),
    }
}

/// A loaded worker's pipes, non-blocking on the runtime, and its shared memory.
struct Io {
    input: pipe::Sender,
    output: Output,
    arena: Option<Arc<Arena>>,
}

impl Io {
    fn new(
        input: ChildStdin,
        output: ChildStdout,
        arena: Option<Arc<Arena>>,
        handle: &Handle,
    ) -> std::result::Result<Io, String> {
        let _runtime = handle.enter();
        let failed = |e: std::io::Error| format!("cannot watch the worker's pipes: {e}");
        Ok(Io {
            input: pipe::Sender::from_owned_fd(OwnedFd::from(input)).map_err(failed)?,
            output: Output {
                rx: pipe::Receiver::from_owned_fd(OwnedFd::from(output)).map_err(failed)?,
                buf: vec![0; 1 << 16],
                start: 0,
                end: 0,
            },
            arena,
        })
    }
}

/// A worker's stdout, read with a buffer of our own so that an answer can also be waited for
/// by polling the pipe for a few µs (`spin_us`) before sleeping until the reactor sees it: on
/// a VM, waking a thread on another CPU costs tens of µs.
struct Output {
    rx: pipe::Receiver,
    buf: Vec<u8>,
    start: usize,
    end: usize,
}

impl Output {
    /// Fills `out`; `false` at end of stream. Until `spin`, the pipe is polled.
    async fn read_exact(&mut self, out: &mut [u8], spin: Option<Instant>) -> std::io::Result<bool> {
        let mut got = (self.end - self.start).min(out.len());
        out[..got].copy_from_slice(&self.buf[self.start..self.start + got]);
        self.start += got;
        while got < out.len() {
            if out.len() - got >= self.buf.len() {
                match read_some(&self.rx, &mut out[got..], spin).await? {
                    0 => return Ok(false),
                    n => got += n,
                }
            } else {
                let n = read_some(&self.rx, &mut self.buf, spin).await?;
                if n == 0 {
                    return Ok(false);
                }
                let take = n.min(out.len() - got);
                out[got..got + take].copy_from_slice(&self.buf[..take]);
                (self.start, self.end) = (take, n);
                got += take;
            }
        }
        Ok(true)
    }
}

/// Some bytes from the pipe (0 at end of stream): polled until `spin`, then awaited.
async fn read_some(
    rx: &pipe::Receiver,
    into: &mut [u8],
    spin: Option<Instant>,
) -> std::io::Result<usize> {
    use rustix::io::Errno;
    if let Some(until) = spin {
        loop {
            match rustix::io::read(rx, &mut *into) {
                Ok(n) => return Ok(n),
                Err(Errno::AGAIN) if Instant::now() < until => std::hint::spin_loop(),
                Err(Errno::AGAIN) => break,
                Err(Errno::INTR) => {}
                Err(e) => return Err(e.into()),
            }
        }
    }
    loop {
        match rx.try_read(into) {
            Ok(n) => return Ok(n),
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => rx.readable().await?,
            Err(e) => return Err(e),
        }
    }
}

/// The next frame from a worker; `Ok(None)` when it is gone.
async fn read_frame(
    output: &mut Output,
    buf: &mut Vec<u8>,
    arena: Option<&Arena>,
    spin: Option<Instant>,
) -> std::result::Result<Option<Frame>, String> {
    let failed = |e: std::io::Error| format!("reading from the worker: {e}");
    let mut head = [0u8; frame::HEADER];
    if !output.read_exact(&mut head, spin).await.map_err(failed)? {
        return Ok(None);
    }
    buf.clear();
    buf.resize(frame::body_len(&head)?, 0);
    if !output.read_exact(buf, spin).await.map_err(failed)? {
        return Ok(None);
    }
    frame::parse(&head, buf, arena).map(Some)
}

/// A RESULT's tensors (and what it adds to the response's `parameters`: Seldon tags), an
/// operation's REPLY (its JSON in the notes' `operation`), or an ERROR as the error Python
/// chose; `None` for any other frame. The metrics a RESULT reports are recorded for `model`.
fn answer_of(model: &str, reply: Frame) -> Option<(Result<Vec<Tensor>>, Option<Notes>)> {
    match reply.kind {
        frame::RESULT => {
            let mut meta = reply.meta.unwrap_or_default();
            if let Some(metrics) = meta.get("metrics").and_then(|m| m.as_array()) {
                record_metrics(model, metrics);
            }
            let notes = meta
                .get_mut("tags")
                .map(std::mem::take)
                .map(|tags| serde_json::Map::from_iter([("tags".to_owned(), tags)]));
            Some((Ok(reply.tensors), notes))
        }
        frame::REPLY => {
            let mut meta = reply.meta.unwrap_or_default();
            let result = meta
                .get_mut("result")
                .map(std::mem::take)
                .unwrap_or_default();
            let notes = serde_json::Map::from_iter([("operation".to_owned(), result)]);
            Some((Ok(Vec::new()), Some(notes)))
        }
        frame::ERROR => {
            let meta = reply.meta.as_ref();
            let status = meta
                .and_then(|m| m["status"].as_u64())
                .filter(|s| (400..600).contains(s))
                .unwrap_or(500) as u16;
            let tb = meta
                .and_then(|m| m["traceback"].as_str())
                .unwrap_or_default();
            tracing::debug!(traceback = %tb, "a Python call failed");
            let mut error = Error::new(
                ErrorKind::from_status(status),
                python_error("predict failed", meta, false),
            );
            error.traceback = (!tb.is_empty()).then(|| tb.to_owned());
            Some((Err(error), None))
        }
        _ => None,
    }
}

/// A model's own metrics (Seldon's `metrics()`, MLRun's `set_metric`): `{"key", "type":
/// COUNTER | GAUGE | TIMER, "value"}` each, into `/metrics`.
fn record_metrics(model: &str, metrics: &[serde_json::Value]) {
    use servegraph_engine::metrics::{UserMetric, user_metric};
    for m in metrics {
        let (Some(key), Some(value)) = (m["key"].as_str(), m["value"].as_f64()) else {
            tracing::warn!(model, metric = %m, "a model metric needs a string `key` and a number `value`");
            continue;
        };
        let kind = match m["type"].as_str().unwrap_or("GAUGE") {
            "COUNTER" => UserMetric::Counter,
            "GAUGE" => UserMetric::Gauge,
            "TIMER" => UserMetric::TimerMs,
            other => {
                tracing::warn!(
                    model,
                    key,
                    kind = other,
                    "a model metric's type is COUNTER, GAUGE or TIMER"
                );
                continue;
            }
        };
        if !user_metric(model, key, kind, value) {
            tracing::debug!(
                model,
                key,
                value,
                "a model metric was dropped (too many keys, or a bad value)"
            );
        }
    }
}

/// Why a worker should be replaced now (`recycle`), if it should.
fn recycle_reason(config: &WorkerConfig, calls: u64, pid: u32) -> Option<String> {
    if config.max_requests > 0 && calls >= config.max_requests {
        return Some(format!("it answered {calls} calls (recycle.max_requests)"));
    }
    if config.max_rss_mb > 0 && calls.is_multiple_of(RSS_EVERY) {
        let pages: u64 = std::fs::read_to_string(format!("/proc/{pid}/statm"))
            .ok()?
            .split_whitespace()
            .nth(1)?
            .parse()
            .ok()?;
        let mb = pages * rustix::param::page_size() as u64 / (1 << 20);
        if mb >= config.max_rss_mb {
            return Some(format!("it holds {mb} MiB (recycle.max_rss_mb)"));
        }
    }
    None
}

/// How a worker's serving task ended.
enum Ended {
    /// The queue closed: the model was let go.
    Closed,
    /// The process went away during a call (or was killed by the watchdog): the jobs of the
    /// calls it had, to be failed once the process is reaped, and what reading it said.
    Failed(Vec<Job>, Option<String>),
    /// The process should be replaced (`recycle`): its pipes, kept open until the new one
    /// has loaded, and why.
    Recycle(Io, String),
}

/// What a serving task hands back: how it ended, and the jobs it took from the queue but
/// did not write (the next process takes them first).
struct Served {
    ended: Ended,
    carried: Option<Job>,
    unsent: Vec<Job>,
}

/// What a worker's supervising thread needs.
struct Supervisor {
    index: usize,
    config: Arc<WorkerConfig>,
    queue: Queue,
    batching: Option<Batching>,
    loaded: Arc<AtomicUsize>,
    shared: Arc<Shared>,
    handle: Handle,
}

impl Supervisor {
    /// Serves the process on the runtime until it ends, then starts it again (with backoff)
    /// or replaces it; returns when the queue closes or the model is let go.
    fn supervise(&self, started: Option<(Process, Io)>) {
        let (index, config, shared) = (self.index, &self.config, &self.shared);
        let mut serving = started;
        let (mut carried, mut unsent) = (None, Vec::new());
        // A first start that failed (`load_mode: async`) is tried again at once.
        let mut backoff = if serving.is_some() {
            BACKOFF.0
        } else {
            Duration::ZERO
        };
        loop {
            if let Some((mut process, current)) = serving.take() {
                let (tx, ended) = std::sync::mpsc::sync_channel(1);
                let task = serve(
                    Arc::clone(config),
                    current,
                    Arc::clone(&self.queue),
                    self.batching,
                    Arc::clone(shared),
                    carried.take(),
                    std::mem::take(&mut unsent),
                );
                self.handle.spawn(async move {
                    let _ = tx.send(task.await);
                });
                let Ok(served) = ended.recv() else {
                    // The runtime went away with the task.
                    process.reap();
                    return;
                };
                (carried, unsent) = (served.carried, served.unsent);
                match served.ended {
                    Ended::Closed => {
                        process.reap();
                        shared.pid.store(0, Ordering::Relaxed);
                        self.loaded.fetch_sub(1, Ordering::Relaxed);
                        return;
                    }
                    Ended::Recycle(old, why) => {
                        serving = Some(self.replace(process, old, &why));
                        continue;
                    }
                    Ended::Failed(lost, why) => {
                        let killed = shared.killed.swap(false, Ordering::Relaxed);
                        let status = process.reap();
                        let message = if killed {
                            format!(
                                "model `{}`: its Python worker was stuck on a call for over {} ms (hang_kill_ms) and was killed",
                                config.model,
                                config.hang_kill.as_millis()
                            )
                        } else {
                            format!(
                                "model `{}`: its Python worker exited ({status}){}",
                                config.model,
                                why.map(|w| format!(": {w}")).unwrap_or_default()
                            )
                        };
                        tracing::warn!(model = %config.model, worker = index, "{message}");
                        // Not counted as loaded before its callers hear why (readiness is
                        // honest).
                        shared.pid.store(0, Ordering::Relaxed);
                        self.loaded.fetch_sub(1, Ordering::Relaxed);
                        // Jobs taken but not written would wait out the backoff: they fail
                        // with the calls'.
                        let failed = lost
                            .into_iter()
                            .chain(carried.take())
                            .chain(std::mem::take(&mut unsent))
                            .collect();
                        answer_all(failed, Err(Error::unavailable(message)));
                    }
                }
            }
            // Wait, then start again; the other workers serve meanwhile. The model being let
            // go ends the wait.
            let until = Instant::now() + backoff;
            while Instant::now() < until {
                if shared.stopping.load(Ordering::Relaxed) {
                    return;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            match Process::start(index, config, shared, &self.handle) {
                Ok(started) => {
                    tracing::info!(model = %config.model, worker = index, "Python worker started");
                    *shared.last_error.lock().expect("not poisoned") = None;
                    self.loaded.fetch_add(1, Ordering::Relaxed);
                    serving = Some(started);
                    backoff = BACKOFF.0;
                }
                Err(e) => {
                    tracing::warn!(model = %config.model, worker = index, error = %e, "Python worker did not start");
                    *shared.last_error.lock().expect("not poisoned") = Some(e);
                    backoff = (backoff * 2).clamp(BACKOFF.0, BACKOFF.1);
                }
            }
        }
    }

    /// Replaces the worker: a new process is started and loaded first, then the old one is
    /// stopped, so the model never has fewer workers loaded. If the new one does not start,
    /// the old one goes on serving (and is tried again at its next call).
    fn replace(&self, mut process: Process, old: Io, why: &str) -> (Process, Io) {
        let (index, config, shared) = (self.index, &self.config, &self.shared);
        let old_pid = process.child.id();
        match Process::start(index, config, shared, &self.handle) {
            Ok(new) => {
                drop(old);
                process.reap();
                tracing::info!(model = %config.model, worker = index, old_pid, "Python worker replaced: {why}");
                new
            }
            Err(e) => {
                shared.pid.store(old_pid, Ordering::Relaxed);
                tracing::warn!(model = %config.model, worker = index, error = %e, "could not replace the Python worker ({why})");
                (process, old)
            }
        }
    }
}

/// Calls written to a worker ahead of their answers: the next one waits in the pipe while
/// Python runs the current one, so the worker never idles between calls waiting for the
/// engine to be scheduled.
const DEPTH: usize = 2;

/// A call written to the worker, waiting for its answer.
struct Pending {
    id: u64,
    batch: Vec<Job>,
    /// Each job's rows when several were joined (`None`: one job).
    counts: Option<Vec<usize>>,
    written: Instant,
    /// A place in the pipeline ([`DEPTH`]), given back with the answer.
    _place: tokio::sync::OwnedSemaphorePermit,
}

/// What the two halves of a serving worker share.
struct Line {
    config: Arc<WorkerConfig>,
    shared: Arc<Shared>,
    queue: Queue,
    batching: Option<Batching>,
    /// Calls written and not answered: the watchdog is armed while there are any, for the
    /// one Python runs now.
    in_flight: std::sync::Mutex<usize>,
    stop: std::sync::atomic::AtomicBool,
    stopped: tokio::sync::Notify,
}

impl Line {
    fn written(&self) {
        let mut n = self.in_flight.lock().expect("not poisoned");
        if *n == 0 {
            self.shared.arm(self.config.hang_kill);
        }
        *n += 1;
    }

    fn answered(&self) {
        let mut n = self.in_flight.lock().expect("not poisoned");
        *n -= 1;
        if *n == 0 {
            self.shared.disarm();
        } else {
            self.shared.arm(self.config.hang_kill);
        }
    }

    /// Tells the writer to take no more jobs.
    fn stop(&self) {
        self.stop.store(true, Ordering::Relaxed);
        self.stopped.notify_one();
    }

    async fn stopped(&self) {
        while !self.stop.load(Ordering::Relaxed) {
            self.stopped.notified().await;
        }
    }
}

/// Serves one process, writing calls and reading answers concurrently, until the queue
/// closes, the process goes away or it should be replaced.
async fn serve(
    config: Arc<WorkerConfig>,
    io: Io,
    queue: Queue,
    batching: Option<Batching>,
    shared: Arc<Shared>,
    carried: Option<Job>,
    unsent: Vec<Job>,
) -> Served {
    let line = Line {
        config,
        shared,
        queue,
        batching,
        in_flight: Default::default(),
        stop: Default::default(),
        stopped: Default::default(),
    };
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    let ((input, carried, unsent), read) = tokio::join!(
        write_calls(&line, io.input, io.arena.as_deref(), carried, unsent, tx),
        read_answers(&line, io.output, io.arena.as_deref(), rx),
    );
    let ended = match read {
        Ok((output, None)) => {
            drop((input, output));
            Ended::Closed
        }
        Ok((output, Some(why))) => Ended::Recycle(
            Io {
                input,
                output,
                arena: io.arena,
            },
            why,
        ),
        Err((lost, why)) => Ended::Failed(lost, why),
    };
    Served {
        ended,
        carried,
        unsent,
    }
}

/// Writes calls: takes jobs from the queue (in turn with the model's other workers), at most
/// [`DEPTH`] calls ahead of the answers. Ends when the queue closes, the line is stopped or
/// the pipe breaks (the reader then sees the worker gone); hands back its pipe and the jobs
/// it took but did not write.
async fn write_calls(
    line: &Line,
    mut input: pipe::Sender,
    arena: Option<&Arena>,
    mut carried: Option<Job>,
    mut unsent: Vec<Job>,
    pending: tokio::sync::mpsc::UnboundedSender<Pending>,
) -> (pipe::Sender, Option<Job>, Vec<Job>) {
    let metrics = &line.config.metrics;
    // With batching, a call is gathered only once the worker is free: written ahead, it would
    // take the few jobs queued at that moment instead of a full batch.
    let depth = if line.batching.is_some() { 1 } else { DEPTH };
    let places = Arc::new(tokio::sync::Semaphore::new(depth));
    let (mut buf, mut next_id) = (Vec::new(), 1);
    loop {
        let place = tokio::select! {
            biased;
            () = line.stopped() => break,
            p = Arc::clone(&places).acquire_owned() => p.expect("never closed"),
        };
        let mut batch = if unsent.is_empty() {
            let mut jobs = tokio::select! {
                biased;
                () = line.stopped() => break,
                jobs = line.queue.lock() => jobs,
            };
            let first = tokio::select! {
                biased;
                () = line.stopped() => break,
                first = first_job(&mut jobs, &mut carried) => first,
            };
            let Some(first) = first else { break };
            gather_async(&mut jobs, first, &mut carried, line.batching).await
        } else {
            std::mem::take(&mut unsent)
        };
        if line.stop.load(Ordering::Relaxed) {
            unsent = batch;
            break;
        }
        // Jobs join a batch only with equal parameters: the first one's are everyone's.
        let parameters = batch[0].parameters.take();
        let now = Instant::now();
        metrics.batch_size.observe(batch.len() as f64);
        for job in &batch {
            metrics
                .queue_wait_seconds
                .observe(now.saturating_duration_since(job.queued));
        }
        let (inputs, counts) = if batch.len() == 1 {
            (std::mem::take(&mut batch[0].inputs), None)
        } else {
            match join(&mut batch) {
                Ok((inputs, counts)) => (inputs, Some(counts)),
                Err(e) => {
                    answer_all(batch, Err(e));
                    continue;
                }
            }
        };
        let id = next_id;
        next_id += 1;
        let (kind, meta) = match batch[0].operation.take() {
            Some((op, body)) => (
                frame::CALL,
                Some(serde_json::json!({"op": op, "body": body})),
            ),
            None => (
                frame::INFER,
                parameters.map(|p| serde_json::json!({ "parameters": p })),
            ),
        };
        let shm = arena.map(|a| (a, a.request_slot(id)));
        if let Err(e) = frame::encode(&mut buf, kind, id, meta.as_ref(), &inputs, &[], shm) {
            answer_all(
                batch,
                Err(Error::internal(format!("encoding the call: {e}"))),
            );
            continue;
        }
        drop(inputs);
        line.written();
        let call = Pending {
            id,
            batch,
            counts,
            written: Instant::now(),
            _place: place,
        };
        if pending.send(call).is_err() || input.write_all(&buf).await.is_err() {
            break;
        }
    }
    (input, carried, unsent)
}

/// Reads the answers, in the order the calls were written, and answers their jobs. Ends when
/// the writer has ended and every call is answered (handing back the pipe, and why the
/// worker should be replaced if it should), or when the worker goes away (handing back the
/// jobs of the calls it had, and what reading said).
async fn read_answers(
    line: &Line,
    mut output: Output,
    arena: Option<&Arena>,
    mut pending: tokio::sync::mpsc::UnboundedReceiver<Pending>,
) -> std::result::Result<(Output, Option<String>), (Vec<Job>, Option<String>)> {
    let config = &line.config;
    let (mut buf, mut calls, mut recycle) = (Vec::new(), 0, None);
    // When the worker finished its last call: a call written before that waited in the pipe.
    let mut free_since = Instant::now();
    let mut last_run = Duration::ZERO;
    while let Some(call) = pending.recv().await {
        // Alone in the pipeline, the answer is polled for a while (`spin_us`) first; with
        // another call behind it the worker is busy and the wait is not spent spinning...
        let alone = *line.in_flight.lock().expect("not poisoned") == 1;
        // ...and nothing waits in the queue (its lock held means the writer waits for a job).
        let idle = line.queue.try_lock().map_or(true, |jobs| jobs.is_empty());
        // ...and the last call was quick: polling pays for a fast model (its round trip is
        // mostly wake-ups) and would only take a slow one's CPU.
        let quick = last_run * 4 <= config.spin;
        let spin = (alone && idle && quick && !config.spin.is_zero())
            .then(|| Instant::now() + config.spin);
        let read = read_frame(&mut output, &mut buf, arena, spin).await;
        let answer = match read {
            Ok(Some(reply)) if reply.call_id == call.id => {
                let kind = reply.kind;
                answer_of(&config.model, reply).ok_or_else(|| {
                    Some(format!("the worker answered INFER with frame kind {kind}"))
                })
            }
            Ok(Some(reply)) => Err(Some(format!(
                "the worker answered call {} for call {}",
                reply.call_id, call.id
            ))),
            Ok(None) => Err(None),
            Err(e) => Err(Some(e)),
        };
        let (result, notes) = match answer {
            Ok(answer) => answer,
            Err(why) => {
                line.stop();
                // A worker that answered nonsense may still be running, and not reading what
                // the writer is writing: it goes, so the writer's pipe breaks.
                if let Some(pid) =
                    rustix::process::Pid::from_raw(line.shared.pid.load(Ordering::Relaxed) as i32)
                {
                    let _ = rustix::process::kill_process(pid, rustix::process::Signal::KILL);
                }
                let mut lost = call.batch;
                while let Some(call) = pending.recv().await {
                    lost.extend(call.batch);
                }
                return Err((lost, why));
            }
        };
        line.answered();
        let started = call.written.max(free_since);
        free_since = Instant::now();
        last_run = free_since.saturating_duration_since(started);
        config.metrics.run_seconds.observe(last_run);
        let result = match &call.counts {
            None => result.map(|t| vec![t]),
            Some(counts) => result.and_then(|t| split(t, counts)),
        };
        answer_all_noted(call.batch, result, notes);
        calls += 1;
        if recycle.is_none() {
            let pid = line.shared.pid.load(Ordering::Relaxed);
            recycle = recycle_reason(config, calls, pid);
            if recycle.is_some() {
                line.stop();
            }
        }
    }
    Ok((output, recycle))
}

fn describe(status: std::process::ExitStatus) -> String {
    use std::os::unix::process::ExitStatusExt;
    match (status.code(), status.signal()) {
        (Some(code), _) => format!("exit status {code}"),
        (None, Some(9)) => "killed by signal 9, possibly out of memory".into(),
        (None, Some(sig)) => format!("killed by signal {sig}"),
        _ => status.to_string(),
    }
}

/// Python's error in words: `what: Type: message`, then (`traceback`) its last frames.
fn python_error(what: &str, meta: Option<&serde_json::Value>, traceback: bool) -> String {
    let Some(m) = meta else {
        return format!("{what} (the worker gave no reason)");
    };
    let text = |k: &str| m[k].as_str().unwrap_or_default().to_owned();
    let mut out = format!("{what}: {}: {}", text("type"), text("message"));
    let tb = text("traceback");
    if traceback && !tb.is_empty() {
        out.push('\n');
        out.push_str(tb.trim_end());
    }
    out
}
