//! One Python worker: a child process, the OS thread that supervises it, and the tokio task
//! that serves it. The thread starts the process and has it load the model (blocking, as a
//! build does), then hands its pipes to a task on the server's runtime: the task takes jobs
//! from the model's queue, writes a frame and awaits the answer on non-blocking pipes, so a
//! call costs the worker's own wake-up and the reactor's, and no hand-off between threads. A
//! watchdog thread kills the process when a call (or the load) overruns. When the process
//! exits, the thread fails the calls in flight at once with 503 and starts a new one, with
//! exponential backoff, while the other workers go on serving.
//!
//! One file per job: this one the worker's handle (`Worker`: starting it, what readiness asks
//! of it, letting it go) and what its parts share; `process` a process (spawning it, its
//! log, the LOAD handshake, reaping it); `supervisor` its thread (serving each process,
//! starting it again with backoff, replacing it); `serve` the serving task (the writer and
//! reader halves, the calls in flight, recycling); `pipe` the non-blocking pipes (reading an
//! answer, polling first); `watchdog` the watchdog thread.

mod pipe;
mod process;
mod serve;
mod supervisor;
mod watchdog;

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use tokio::runtime::Handle;

use self::process::Process;
use self::supervisor::Supervisor;
use self::watchdog::Watchdog;
use super::error::WorkerError;
use crate::model::batch::{Batching, Job};

/// How the workers of one model are started.
pub struct WorkerConfig {
    pub(super) model: String,
    pub(super) python: String,
    pub(super) env: Vec<(String, String)>,
    /// The workers' working directory: the class file's folder (else the model file's), as
    /// under Seldon's s2i images, where classes open their files by relative paths.
    pub(super) workdir: Option<std::path::PathBuf>,
    /// The LOAD frame's metadata: what to import and construct.
    pub(super) load: serde_json::Value,
    pub(super) load_timeout: Duration,
    pub(super) hang_kill: Duration,
    /// Replace a worker after this many calls (0: never).
    pub(super) max_requests: u64,
    /// Replace a worker whose resident memory passed this many MiB (0: never); read from
    /// `/proc/PID/statm` every `RSS_EVERY` calls (`serve.rs`).
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
    pub(super) reports: AtomicBool,
    /// The protocol whose bodies the class takes as they came (its API is MLRun's, Seldon's
    /// or KServe's), as its workers said when they loaded: `BODIES_NONE`, `BODIES_MLRUN`,
    /// `BODIES_SELDON` or `BODIES_KSERVE`.
    pub(crate) bodies: std::sync::atomic::AtomicU8,
    /// The class takes Seldon's feedback (`send_feedback`).
    pub(crate) takes_feedback: AtomicBool,
    /// The class reads the request beyond its tensors (MLServer's `InferenceRequest`: the
    /// request's id, its inputs' `parameters`, the outputs it names): each call carries them.
    pub(crate) takes_request: AtomicBool,
    /// What the class says of itself (`init_metadata()`, `metadata()`), as the first worker
    /// to load said it.
    pub(crate) metadata: Mutex<Option<serde_json::Value>>,
    /// Why the last probe said it is not ready (`None`: ready, or not probed yet).
    unhealthy: Mutex<Option<String>>,
    /// Whether `unhealthy` holds a reason: every call reads it, the lock only when set.
    sick: AtomicBool,
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

/// [`Health::bodies`]: the class takes no bodies, MLRun's, Seldon's, or KServe's.
pub(crate) const BODIES_NONE: u8 = 0;
pub(crate) const BODIES_MLRUN: u8 = 1;
pub(crate) const BODIES_SELDON: u8 = 2;
pub(crate) const BODIES_KSERVE: u8 = 3;

/// A model's queue, which its workers' tasks take jobs from in turn.
pub(super) type Queue = Arc<tokio::sync::Mutex<tokio::sync::mpsc::Receiver<Job>>>;

/// Calls written to a worker ahead of their answers: the next one waits in the pipe while
/// Python runs the current one, so the worker never idles between calls waiting for the
/// engine to be scheduled. Also the number of request (and response) slots in its shared
/// memory.
const DEPTH: usize = 2;

/// What the threads and the task share.
struct Shared {
    /// The running process and the deadline of its call (or load).
    watchdog: Watchdog,
    /// Set when the model is let go: the watchdog ends.
    stopping: AtomicBool,
    /// Why the last start failed, while the worker has none running (`load_mode: async`
    /// readiness says it).
    last_error: Mutex<Option<String>>,
    /// Set once a process of this worker has loaded.
    loaded_once: AtomicBool,
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
    /// Starts the thread that starts the process, has it load the model, supervises it and
    /// starts the task that serves it; without waiting: the receiver says when the first
    /// load is done, or why it failed (the Python traceback). With `fail_first`, a failed
    /// first load ends the worker (a `load_mode: sync` model fails to build); without, it is
    /// tried again in the background and readiness says why meanwhile.
    pub(super) fn start(
        index: usize,
        config: Arc<WorkerConfig>,
        queue: Queue,
        batching: Option<Batching>,
        loaded: Arc<AtomicUsize>,
        fail_first: bool,
    ) -> Result<(Worker, Started), WorkerError> {
        let shared = Arc::new(Shared {
            watchdog: Watchdog::new(),
            stopping: Default::default(),
            last_error: Default::default(),
            loaded_once: Default::default(),
        });
        {
            let shared = Arc::clone(&shared);
            std::thread::Builder::new()
                .name(format!("py-watch-{index}"))
                .spawn(move || shared.watchdog.run(&shared.stopping))
                .map_err(WorkerError::Thread)?;
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
                        Err(e) if !fail_first => {
                            tracing::warn!(model = %config.model, worker = index, error = %e, "Python worker did not start");
                            *shared.last_error.lock().expect("not poisoned") = Some(e.to_string());
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
                .map_err(WorkerError::Thread)?;
        }
        Ok((Worker { shared }, started))
    }
}

/// Says once whether a worker's first load succeeded ([`Worker::start`]).
pub(super) type Started = std::sync::mpsc::Receiver<Result<(), WorkerError>>;

/// How many Python processes load at once, in the whole server (`SERVEGRAPH_PYTHON_LOADS`,
/// default the number of CPUs, at least 2): models load in parallel, within that bound.
pub(super) fn load_slots() -> usize {
    static SLOTS: OnceLock<usize> = OnceLock::new();
    *SLOTS.get_or_init(|| {
        std::env::var("SERVEGRAPH_PYTHON_LOADS")
            .ok()
            .and_then(|v| v.trim().parse::<usize>().ok())
            .filter(|n| *n > 0)
            .unwrap_or_else(|| {
                std::thread::available_parallelism()
                    .map(|n| n.get())
                    .unwrap_or(2)
                    .max(2)
            })
    })
}

/// Loads running now, under [`load_slots`].
static LOADS: (Mutex<usize>, std::sync::Condvar) = (Mutex::new(0), std::sync::Condvar::new());

/// A place among the loads that may run at once, held while a process starts and loads.
pub(super) struct LoadSlot;

impl LoadSlot {
    /// Waits for a place (blocking: called on a worker's own thread).
    pub(super) fn take() -> LoadSlot {
        let (count, freed) = &LOADS;
        let mut running = count.lock().expect("not poisoned");
        while *running >= load_slots() {
            running = freed.wait(running).expect("not poisoned");
        }
        *running += 1;
        LoadSlot
    }
}

impl Drop for LoadSlot {
    fn drop(&mut self) {
        let (count, freed) = &LOADS;
        *count.lock().expect("not poisoned") -= 1;
        freed.notify_one();
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn health_says_why_only_while_sick() {
        let health = Health::default();
        assert_eq!(health.unhealthy(), None);
        health.set(Some("is_ready() returned False".into()));
        assert_eq!(
            health.unhealthy().as_deref(),
            Some("is_ready() returned False")
        );
        health.set(None);
        assert_eq!(health.unhealthy(), None);
    }
}
