//! One Python worker: a child process and the OS thread that owns it. The thread starts the
//! process and has it load the model, then takes jobs from the model's queue, one call at a
//! time; a watchdog thread kills the process when a call (or the load) overruns. When the
//! process exits, the calls in flight fail at once with 503 and the thread starts a new one,
//! with exponential backoff, while the other workers go on serving.

use std::io::{BufRead, BufReader, BufWriter};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use crossbeam_channel::Receiver;
use servegraph_engine::{Error, ErrorKind, Result, Tensor};

use super::frame::{self, Frame};
use super::runtime;
use crate::model::batch::{
    Batching, Job, Notes, answer_all, answer_all_noted, join, next_batch, split,
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
    /// `servegraph_model_*` of this model: calls (the Python round trip), queue waits, batch
    /// sizes.
    pub(super) metrics: servegraph_engine::metrics::ModelMetrics,
}

/// First and longest wait before starting a worker again after it exited.
const BACKOFF: (Duration, Duration) = (Duration::from_millis(500), Duration::from_secs(30));
/// How often (in calls) a worker's memory is read for `recycle.max_rss_mb`.
const RSS_EVERY: u64 = 16;
/// Lines of a worker's output kept to explain a failed start.
const LAST_LINES: usize = 20;
/// How long a worker told to stop may take before it is killed.
const STOP_GRACE: Duration = Duration::from_secs(2);

/// What the thread and the watchdog share.
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

/// A worker: what its thread and watchdog share (both threads end on their own).
pub(super) struct Worker {
    shared: Arc<Shared>,
}

impl Worker {
    /// Starts the process, loads the model in it, and starts the thread that serves it; a
    /// failed start or load is an error carrying the Python traceback.
    pub(super) fn start(
        index: usize,
        config: Arc<WorkerConfig>,
        jobs: Receiver<Job>,
        batching: Option<Batching>,
        loaded: Arc<AtomicUsize>,
    ) -> std::result::Result<Worker, String> {
        let shared = Arc::new(Shared {
            pid: AtomicU32::new(0),
            deadline_ms: AtomicU64::new(0),
            killed: Default::default(),
            epoch: Instant::now(),
            stopping: Default::default(),
        });
        {
            let shared = Arc::clone(&shared);
            std::thread::Builder::new()
                .name(format!("py-watch-{index}"))
                .spawn(move || watch(&shared))
                .map_err(|e| format!("cannot start a thread: {e}"))?;
        }
        // The process is started by the thread that then owns it: Linux sends a child its
        // parent-death signal when the *thread* that forked it ends, and the thread that
        // builds a graph (a blocking-pool thread) ends long before the model does.
        let (started_tx, started) = std::sync::mpsc::channel();
        {
            let shared = Arc::clone(&shared);
            std::thread::Builder::new()
                .name(format!("py-{}-{index}", config.model))
                .spawn(move || {
                    let process = match Process::start(index, &config, &shared) {
                        Ok(p) => {
                            loaded.fetch_add(1, Ordering::Relaxed);
                            let _ = started_tx.send(Ok(()));
                            p
                        }
                        Err(e) => {
                            shared.stopping.store(true, Ordering::Relaxed);
                            let _ = started_tx.send(Err(e));
                            return;
                        }
                    };
                    serve(index, &config, process, &jobs, batching, &loaded, &shared)
                })
                .map_err(|e| format!("cannot start a thread: {e}"))?;
        }
        started
            .recv()
            .map_err(|_| "the Python worker's thread ended while starting it".to_owned())??;
        Ok(Worker { shared })
    }
}

impl Drop for Worker {
    /// Never blocks (the last graph holding the model may be let go on an async worker): the
    /// queue is closed by then (the model's sender dropped first), so the thread stops its
    /// process (SHUTDOWN, then a kill after a grace period) and ends on its own, and a thread
    /// waiting to start one again sees `stopping`. Should the server exit first, the workers
    /// see their stdin close (and, on Linux, their parent-death signal) and exit too.
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

/// A running worker process and its pipes.
struct Process {
    child: Child,
    input: BufWriter<ChildStdin>,
    output: BufReader<ChildStdout>,
    buf: Vec<u8>,
    next_call: u64,
    /// Calls answered.
    calls: u64,
    /// What the last RESULT adds to the response's `parameters` (Seldon tags).
    notes: Option<Notes>,
}

impl Process {
    fn start(
        index: usize,
        config: &WorkerConfig,
        shared: &Shared,
    ) -> std::result::Result<Process, String> {
        let runtime = runtime::dir()?;
        let mut python_path = runtime.display().to_string();
        if let Some((_, p)) = config.env.iter().find(|(k, _)| k == "PYTHONPATH") {
            python_path = format!("{python_path}:{p}");
        }
        let mut child = Command::new(&config.python)
            .args(["-X", "faulthandler", "-u", "-m", "servegraph._worker"])
            .env_clear()
            .envs(config.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
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
                    for line in BufReader::new(stderr).lines() {
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
        let mut p = Process {
            input: BufWriter::new(child.stdin.take().expect("piped")),
            output: BufReader::with_capacity(1 << 16, child.stdout.take().expect("piped")),
            child,
            buf: Vec::new(),
            next_call: 1,
            calls: 0,
            notes: None,
        };
        shared.arm(config.load_timeout);
        let loaded = p.load(config);
        shared.disarm();
        match loaded {
            Ok(()) => Ok(p),
            Err(e) => {
                let status = p.stop();
                let killed = shared.killed.swap(false, Ordering::Relaxed);
                shared.pid.store(0, Ordering::Relaxed);
                Err(if killed {
                    format!(
                        "Python model `{}` did not load within {} ms (load_timeout_ms)",
                        config.model,
                        config.load_timeout.as_millis()
                    )
                } else if e.is_empty() {
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
                    e
                })
            }
        }
    }

    /// HELLO, then LOAD → LOADED; an error says what Python said (type, message, traceback).
    fn load(&mut self, config: &WorkerConfig) -> std::result::Result<(), String> {
        let hello = self.read()?.ok_or_else(String::new)?;
        if hello.kind != frame::HELLO {
            return Err(format!("the worker greeted with frame kind {}", hello.kind));
        }
        let mut buf = std::mem::take(&mut self.buf);
        let sent = frame::write(
            &mut self.input,
            &mut buf,
            frame::LOAD,
            0,
            Some(&config.load),
            &[],
            &[],
        );
        self.buf = buf;
        sent.map_err(|_| String::new())?;
        let reply = self.read()?.ok_or_else(String::new)?;
        match reply.kind {
            frame::LOADED => Ok(()),
            frame::LOAD_ERROR => Err(python_error("could not load", reply.meta.as_ref(), true)),
            k => Err(format!("the worker answered LOAD with frame kind {k}")),
        }
    }

    fn read(&mut self) -> std::result::Result<Option<Frame>, String> {
        let mut buf = std::mem::take(&mut self.buf);
        let r = frame::read(&mut self.output, &mut buf);
        self.buf = buf;
        r
    }

    /// One call: INFER with the inputs, the RESULT's tensors or the ERROR as an error;
    /// `Err(None)` when the process is gone.
    fn call(
        &mut self,
        inputs: &[Tensor],
        parameters: Option<&Notes>,
    ) -> std::result::Result<Result<Vec<Tensor>>, Option<String>> {
        let id = self.next_call;
        self.next_call += 1;
        let meta = parameters.map(|p| serde_json::json!({ "parameters": p }));
        let mut buf = std::mem::take(&mut self.buf);
        let sent = frame::write(
            &mut self.input,
            &mut buf,
            frame::INFER,
            id,
            meta.as_ref(),
            inputs,
            &[],
        );
        self.buf = buf;
        if sent.is_err() {
            return Err(None);
        }
        let reply = match self.read() {
            Ok(Some(f)) => f,
            Ok(None) => return Err(None),
            Err(e) => return Err(Some(e)),
        };
        if reply.call_id != id {
            return Err(Some(format!(
                "the worker answered call {} for call {id}",
                reply.call_id
            )));
        }
        Ok(match reply.kind {
            frame::RESULT => {
                self.notes = reply
                    .meta
                    .and_then(|m| m.get("tags").cloned())
                    .map(|tags| serde_json::Map::from_iter([("tags".to_owned(), tags)]));
                Ok(reply.tensors)
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
                Err(Error::new(
                    ErrorKind::from_status(status),
                    python_error("predict failed", meta, false),
                ))
            }
            k => {
                return Err(Some(format!(
                    "the worker answered INFER with frame kind {k}"
                )));
            }
        })
    }

    /// SHUTDOWN, then waits (killing after a grace period); the exit status in words.
    fn stop(&mut self) -> String {
        let mut buf = Vec::new();
        let _ = frame::write(
            &mut self.input,
            &mut buf,
            frame::SHUTDOWN,
            0,
            None,
            &[],
            &[],
        );
        self.reap()
    }

    /// The exit status of a process that is gone or told to go, killing it after
    /// [`STOP_GRACE`].
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

/// Why a worker should be replaced now (`recycle`), if it should.
fn recycle_reason(config: &WorkerConfig, p: &Process) -> Option<String> {
    if config.max_requests > 0 && p.calls >= config.max_requests {
        return Some(format!(
            "it answered {} calls (recycle.max_requests)",
            p.calls
        ));
    }
    if config.max_rss_mb > 0 && p.calls.is_multiple_of(RSS_EVERY) {
        let pages: u64 = std::fs::read_to_string(format!("/proc/{}/statm", p.child.id()))
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

/// Replaces the worker: a new process is started and loaded first, then the old one is
/// stopped, so the model never has fewer workers loaded. If the new one does not start, the
/// old one goes on serving (and is tried again at its next call).
fn recycle(
    index: usize,
    config: &WorkerConfig,
    process: &mut Option<Process>,
    shared: &Shared,
    why: &str,
) {
    let old_pid = process.as_ref().map(|p| p.child.id());
    match Process::start(index, config, shared) {
        Ok(new) => {
            if let Some(mut old) = process.replace(new) {
                old.stop();
            }
            tracing::info!(model = %config.model, worker = index, old_pid, "Python worker replaced: {why}");
        }
        Err(e) => {
            if let Some(pid) = old_pid {
                shared.pid.store(pid, Ordering::Relaxed);
            }
            tracing::warn!(model = %config.model, worker = index, error = %e, "could not replace the Python worker ({why})");
        }
    }
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

/// The worker thread: serves jobs until the queue closes, starting the process again when it
/// exits.
fn serve(
    index: usize,
    config: &WorkerConfig,
    process: Process,
    jobs: &Receiver<Job>,
    batching: Option<Batching>,
    loaded: &AtomicUsize,
    shared: &Shared,
) {
    let mut process = Some(process);
    let mut backoff = BACKOFF.0;
    let mut carried = None;
    loop {
        let Some(p) = process.as_mut() else {
            // Wait, then start again; the other workers serve meanwhile. The model being let
            // go ends the wait.
            let until = Instant::now() + backoff;
            while Instant::now() < until {
                if shared.stopping.load(Ordering::Relaxed) {
                    return;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            match Process::start(index, config, shared) {
                Ok(p) => {
                    tracing::info!(model = %config.model, worker = index, "Python worker started again");
                    loaded.fetch_add(1, Ordering::Relaxed);
                    process = Some(p);
                    backoff = BACKOFF.0;
                }
                Err(e) => {
                    tracing::warn!(model = %config.model, worker = index, error = %e, "Python worker did not start");
                    backoff = (backoff * 2).min(BACKOFF.1);
                }
            }
            continue;
        };
        let Some(mut batch) = next_batch(jobs, &mut carried, batching) else {
            p.stop();
            shared.pid.store(0, Ordering::Relaxed);
            loaded.fetch_sub(1, Ordering::Relaxed);
            return;
        };
        shared.arm(config.hang_kill);
        // Jobs join a batch only with equal parameters: the first one's are everyone's.
        let parameters = batch[0].parameters.take();
        let started = Instant::now();
        config.metrics.batch_size.observe(batch.len() as f64);
        for job in &batch {
            config
                .metrics
                .queue_wait_seconds
                .observe(started.saturating_duration_since(job.queued));
        }
        let outcome = if batch.len() == 1 {
            let inputs = std::mem::take(&mut batch[0].inputs);
            p.call(&inputs, parameters.as_ref())
                .map(|r| r.map(|t| vec![t]))
        } else {
            match join(&mut batch) {
                Ok((inputs, counts)) => p
                    .call(&inputs, parameters.as_ref())
                    .map(|r| r.and_then(|t| split(t, &counts))),
                Err(e) => Ok(Err(e)),
            }
        };
        shared.disarm();
        config.metrics.run_seconds.observe(started.elapsed());
        match outcome {
            Ok(result) => {
                answer_all_noted(batch, result, p.notes.take());
                p.calls += 1;
                if let Some(why) = recycle_reason(config, p) {
                    recycle(index, config, &mut process, shared, &why);
                }
            }
            Err(why) => {
                let killed = shared.killed.swap(false, Ordering::Relaxed);
                let status = p.reap();
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
                // Not counted as loaded before its callers hear why (readiness is honest).
                shared.pid.store(0, Ordering::Relaxed);
                loaded.fetch_sub(1, Ordering::Relaxed);
                process = None;
                answer_all(batch, Err(Error::unavailable(message)));
            }
        }
    }
}
