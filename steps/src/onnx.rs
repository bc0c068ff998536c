//! ONNX models through ONNX Runtime (`ort`, loaded at run time from a shared library).
//!
//! Each model owns a pool of sessions, one per worker thread, fed by one bounded queue: an
//! inference never runs on the async workers, `Session::run`'s `&mut self` needs no lock, and
//! a full queue answers 503 at once instead of growing memory. Each job carries a `oneshot`
//! for its answer and the caller's tracing span; a job whose caller has gone is skipped.
//!
//! **Tiny models run inline** ([`Inline`]): handing a 3 µs run to another thread costs more
//! than the run (a wake-up, a context switch on a one-core pod, the answer's wake-up back).
//! So a model whose first [`WARMUP`] pool runs took under [`INLINE_MAX`] (90% of them: wall
//! time includes preemption, which on a busy one-core pod can hit any run) gets one session
//! per async worker thread, and a request then runs on its own thread with
//! a free one of those (a `try_lock`; busy ones fall back to the pool). With `batch`, inline
//! runs batch too: the first request waits one scheduler turn, requests ready on the same
//! thread meanwhile join it, and they share one run (cheaper per request than a run each). A
//! run is then at most ~50 µs of a worker's time, as tokio allows between awaits; if inline
//! runs later slow down (more than 10% over [`INLINE_LIMIT`] in a window), inline stops and
//! the pool takes every request again.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU8, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::thread;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, RecvTimeoutError, Sender, TryRecvError, TrySendError};
use ort::session::Session;
use ort::session::builder::GraphOptimizationLevel;
use ort::value::{DynValue, Tensor as OrtTensor, TensorElementType, ValueType};
use servegraph_engine::{
    DataType, Error, Event, ModelInfo, Result, Signature, Step, Tensor, TensorData, TensorMeta,
    async_trait,
};
use tokio::sync::oneshot;

use crate::model::OnnxSpec;

/// The ONNX Runtime version whose shared library servegraph loads.
pub const ORT_VERSION: &str = "1.31.1";

/// Where the library is: `ORT_DYLIB_PATH`, else where `scripts/setup.sh` puts it.
pub fn dylib_path() -> PathBuf {
    if let Some(p) = std::env::var_os("ORT_DYLIB_PATH") {
        return PathBuf::from(p);
    }
    let cache = std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))
        .unwrap_or_else(|| PathBuf::from(".cache"));
    cache
        .join("servegraph")
        .join(format!("onnxruntime-{ORT_VERSION}"))
        .join(format!("libonnxruntime.so.{ORT_VERSION}"))
}

/// The process's ONNX Runtime environment, loaded on first use.
fn environment() -> std::result::Result<&'static ort::environment::Environment, String> {
    static ENV: OnceLock<std::result::Result<ort::environment::Environment, String>> =
        OnceLock::new();
    ENV.get_or_init(|| {
        let path = dylib_path();
        if !path.is_file() {
            return Err(format!(
                "the ONNX Runtime library is not at {}: run scripts/setup.sh, or set \
                 ORT_DYLIB_PATH to libonnxruntime.so (version {ORT_VERSION})",
                path.display()
            ));
        }
        ort::init_from(&path)
            .map_err(|e| format!("cannot load ONNX Runtime from {}: {e}", path.display()))?
            .with_name("servegraph")
            .build()
            .map_err(|e| format!("cannot start ONNX Runtime: {e}"))
    })
    .as_ref()
    .map_err(Clone::clone)
}

struct Job {
    inputs: Vec<Tensor>,
    span: tracing::Span,
    /// When it was queued: its answer carries the time since (queue wait + run).
    queued: Instant,
    reply: oneshot::Sender<(Result<Vec<Tensor>>, Duration)>,
}

impl Job {
    fn answer(self, result: Result<Vec<Tensor>>) {
        let _ = self.reply.send((result, self.queued.elapsed()));
    }

    /// Rows along the batch axis (the first input's first dimension).
    fn rows(&self) -> usize {
        self.inputs[0].shape.first().copied().unwrap_or(1)
    }

    /// Whether two jobs can share a run: same inputs but for the batch dimension.
    fn fits_with(&self, other: &Job) -> bool {
        self.inputs.iter().zip(&other.inputs).all(|(a, b)| {
            a.datatype() == b.datatype() && !a.shape.is_empty() && a.shape[1..] == b.shape[1..]
        }) && other
            .inputs
            .iter()
            .all(|t| t.shape.first() == Some(&other.rows()))
    }
}

/// Adaptive batching settings, as the worker uses them.
#[derive(Clone, Copy)]
struct Batching {
    max_size: usize,
    max_wait: Duration,
}

/// Opens one ONNX Runtime session of a model file.
pub fn open_session(path: &Path, intra_op_threads: usize) -> std::result::Result<Session, String> {
    let env = environment()?;
    let fail =
        |e: &dyn std::fmt::Display| format!("ONNX Runtime cannot load {}: {e}", path.display());
    Session::builder(env)
        .map_err(|e| fail(&e))?
        .with_optimization_level(GraphOptimizationLevel::Level3)
        .map_err(|e| fail(&e))?
        .with_intra_threads(intra_op_threads)
        .map_err(|e| fail(&e))?
        .with_inter_threads(1)
        .map_err(|e| fail(&e))?
        .commit_from_file(path)
        .map_err(|e| fail(&e))
}

/// Counters the workers keep: ONNX Runtime runs and the requests they served.
pub struct RunStats {
    pub runs: AtomicU64,
    pub requests: AtomicU64,
    metrics: servegraph_engine::metrics::ModelMetrics,
}

impl RunStats {
    fn new(model: &str) -> RunStats {
        RunStats {
            runs: AtomicU64::new(0),
            requests: AtomicU64::new(0),
            metrics: servegraph_engine::metrics::ModelMetrics::new(model),
        }
    }

    /// An inline run starts: one request, no queue.
    fn inline_run(&self) {
        self.runs.fetch_add(1, Ordering::Relaxed);
        self.requests.fetch_add(1, Ordering::Relaxed);
        self.metrics.batch_size.observe(1.0);
        self.metrics.queue_wait_seconds.observe(Duration::ZERO);
    }

    /// A run of `jobs` starts: their queue waits and the batch size.
    fn starting(&self, jobs: &[Job]) -> Instant {
        let now = Instant::now();
        self.runs.fetch_add(1, Ordering::Relaxed);
        self.requests
            .fetch_add(jobs.len() as u64, Ordering::Relaxed);
        self.metrics.batch_size.observe(jobs.len() as f64);
        for j in jobs {
            self.metrics
                .queue_wait_seconds
                .observe(now.saturating_duration_since(j.queued));
        }
        now
    }
}

/// Pool runs a model is watched for before it may run inline.
pub const WARMUP: u32 = 200;
/// Runs that take longer than this keep a model on the pool.
pub const INLINE_MAX: Duration = Duration::from_micros(50);
/// Inline runs slower than this, more than 10% of a window of [`WARMUP`] × 5, stop inline runs.
pub const INLINE_LIMIT: Duration = Duration::from_micros(200);

const WARMING: u8 = 0;
const INLINE: u8 = 1;
const POOL: u8 = 2;

/// Whether a model runs inline, and the sessions it runs inline with.
pub struct Inline {
    /// [`INLINE_MAX`] and [`INLINE_LIMIT`], in nanoseconds (tests loosen them).
    max_ns: AtomicU64,
    limit_ns: AtomicU64,
    state: AtomicU8,
    runs: AtomicU32,
    slow: AtomicU32,
    sessions: OnceLock<Vec<Mutex<Session>>>,
    path: PathBuf,
}

thread_local! {
    /// The inline session this thread tries first (threads spread over the sessions).
    static SLOT: std::cell::Cell<Option<usize>> = const { std::cell::Cell::new(None) };
}

impl Inline {
    fn new(enabled: bool, path: &Path) -> Inline {
        Inline {
            max_ns: AtomicU64::new(INLINE_MAX.as_nanos() as u64),
            limit_ns: AtomicU64::new(INLINE_LIMIT.as_nanos() as u64),
            state: AtomicU8::new(if enabled { WARMING } else { POOL }),
            runs: AtomicU32::new(0),
            slow: AtomicU32::new(0),
            sessions: OnceLock::new(),
            path: path.to_owned(),
        }
    }

    /// Whether requests run inline now.
    pub fn active(&self) -> bool {
        self.state.load(Ordering::Relaxed) == INLINE
    }

    /// A pool run (of one job or a batch: a single one costs no more) took `took`. Called on
    /// a pool thread, which may open the inline sessions: a few milliseconds, once.
    fn pool_ran(&self, model: &str, took: Duration) {
        if self.state.load(Ordering::Relaxed) != WARMING {
            return;
        }
        let max = Duration::from_nanos(self.max_ns.load(Ordering::Relaxed));
        if took > max && self.slow.fetch_add(1, Ordering::Relaxed) + 1 > WARMUP / 10 {
            self.state.store(POOL, Ordering::Relaxed);
            tracing::debug!(
                model,
                "runs take over {INLINE_MAX:?}: the model stays on its pool"
            );
            return;
        }
        if self.runs.fetch_add(1, Ordering::Relaxed) + 1 < WARMUP {
            return;
        }
        let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
        let opened: std::result::Result<Vec<_>, String> = (0..threads)
            .map(|_| open_session(&self.path, 1).map(Mutex::new))
            .collect();
        match opened {
            Ok(sessions) => {
                let _ = self.sessions.set(sessions);
                self.runs.store(0, Ordering::Relaxed);
                self.slow.store(0, Ordering::Relaxed);
                self.state.store(INLINE, Ordering::Relaxed);
                tracing::info!(
                    model,
                    sessions = threads,
                    "tiny model: running inline on the request threads"
                );
            }
            Err(e) => {
                self.state.store(POOL, Ordering::Relaxed);
                tracing::warn!(model, error = %e, "cannot open inline sessions; the model stays on its pool");
            }
        }
    }

    /// Runs `f` on a free inline session of this thread's (or another free one); `None`
    /// when every one is busy or none is open.
    fn with_session<R>(&self, f: impl FnOnce(&mut Session) -> R) -> Option<R> {
        let sessions = self.sessions.get()?;
        let first = SLOT.with(|slot| {
            slot.get().unwrap_or_else(|| {
                static NEXT: AtomicU64 = AtomicU64::new(0);
                let mine = NEXT.fetch_add(1, Ordering::Relaxed) as usize;
                slot.set(Some(mine));
                mine
            })
        });
        for i in 0..sessions.len() {
            if let Ok(mut session) = sessions[(first + i) % sessions.len()].try_lock() {
                return Some(f(&mut session));
            }
        }
        None
    }

    /// Runs `inputs` on a free inline session, or gives them back when every one is busy.
    fn try_run(
        &self,
        model: &str,
        inputs: Vec<Tensor>,
        outputs: &[TensorMeta],
        stats: &RunStats,
    ) -> std::result::Result<(Result<Vec<Tensor>>, Duration), Vec<Tensor>> {
        let mut inputs = Some(inputs);
        let ran = self.with_session(|session| {
            let start = Instant::now();
            stats.inline_run();
            let result = run(session, inputs.take().expect("once"), outputs);
            (result, start.elapsed())
        });
        match ran {
            Some((result, took)) => {
                stats.metrics.run_seconds.observe(took);
                self.inline_ran(model, took);
                Ok((result, took))
            }
            None => Err(inputs.take().expect("not run")),
        }
    }

    fn inline_ran(&self, model: &str, took: Duration) {
        let limit = Duration::from_nanos(self.limit_ns.load(Ordering::Relaxed));
        let slow = if took > limit {
            self.slow.fetch_add(1, Ordering::Relaxed) + 1
        } else {
            self.slow.load(Ordering::Relaxed)
        };
        let window = WARMUP * 5;
        if slow > window / 10 {
            self.state.store(POOL, Ordering::Relaxed);
            tracing::warn!(
                model,
                "inline runs slowed past {INLINE_LIMIT:?}: back to the session pool"
            );
        } else if self.runs.fetch_add(1, Ordering::Relaxed) + 1 >= window {
            self.runs.store(0, Ordering::Relaxed);
            self.slow.store(0, Ordering::Relaxed);
        }
    }
}

/// A loaded ONNX model and its session pool.
pub struct OnnxModel {
    name: String,
    /// Per-feature values `/explain` replaces features with (empty: zeros).
    baseline: Vec<f64>,
    inputs: Vec<TensorMeta>,
    outputs: Vec<TensorMeta>,
    queue: Sender<Job>,
    queue_size: usize,
    stats: Arc<RunStats>,
    inline: Arc<Inline>,
    /// `batch`: requests that arrive together share one run.
    batching: Option<Batching>,
    /// Requests gathering for the next inline run (with `batch`): the first one waits one
    /// scheduler turn for others that are ready on the same thread, then runs them all.
    gathering: Mutex<Vec<Job>>,
}

impl OnnxModel {
    /// Opens `sessions` sessions of the model and starts a worker thread for each.
    pub fn load(
        name: &str,
        path: &Path,
        spec: &OnnxSpec,
    ) -> std::result::Result<OnnxModel, String> {
        let started = Instant::now();
        let open = || open_session(path, spec.intra_op_threads);
        let first = open()?;
        let inputs = metas(
            first.inputs().iter().map(|o| (o.name(), o.dtype())),
            "input",
        )?;
        let outputs = metas(
            first.outputs().iter().map(|o| (o.name(), o.dtype())),
            "output",
        )?;
        let batching = match spec.batch {
            None => None,
            Some(b) => {
                // Merging along the first axis needs it dynamic everywhere.
                for (what, metas) in [("input", &inputs), ("output", &outputs)] {
                    if let Some(m) = metas.iter().find(|m| m.shape.first() != Some(&-1)) {
                        return Err(format!(
                            "`batch` needs a dynamic first dimension, but {what} `{}` has shape {:?}",
                            m.name, m.shape
                        ));
                    }
                }
                Some(Batching {
                    max_size: b.max_size,
                    max_wait: Duration::from_micros(b.max_wait_us),
                })
            }
        };
        let (tx, rx) = crossbeam_channel::bounded(spec.queue_size);
        let stats = Arc::new(RunStats::new(name));
        let inline = Arc::new(Inline::new(spec.inline, path));
        let mut sessions = vec![first];
        for _ in 1..spec.sessions {
            sessions.push(open()?);
        }
        for (i, session) in sessions.into_iter().enumerate() {
            let rx: Receiver<Job> = rx.clone();
            let outputs = outputs.clone();
            let stats = Arc::clone(&stats);
            let inline = Arc::clone(&inline);
            let model = name.to_owned();
            thread::Builder::new()
                .name(format!("onnx-{name}-{i}"))
                .spawn(move || {
                    let pool = Pool {
                        outputs: &outputs,
                        stats: &stats,
                        inline: &inline,
                        model: &model,
                    };
                    worker(session, rx, batching, pool)
                })
                .map_err(|e| format!("cannot start a worker thread: {e}"))?;
        }
        servegraph_engine::metrics::model_loaded(name, started.elapsed());
        tracing::info!(model = name, path = %path.display(), sessions = spec.sessions, "loaded ONNX model");
        Ok(OnnxModel {
            baseline: spec
                .explain
                .as_ref()
                .map(|e| e.baseline.clone())
                .unwrap_or_default(),
            name: name.to_owned(),
            inputs,
            outputs,
            queue: tx,
            queue_size: spec.queue_size,
            stats,
            inline,
            batching,
            gathering: Mutex::new(Vec::new()),
        })
    }

    /// Whether requests run inline now (see [`Inline`]).
    pub fn runs_inline(&self) -> bool {
        self.inline.active()
    }

    /// Looser inline thresholds, so tests do not depend on the machine's speed.
    #[cfg(test)]
    fn inline_thresholds(&self, max: Duration, limit: Duration) {
        self.inline
            .max_ns
            .store(max.as_nanos() as u64, Ordering::Relaxed);
        self.inline
            .limit_ns
            .store(limit.as_nanos() as u64, Ordering::Relaxed);
    }

    /// Runs the inputs inline if the model is tiny and an inline session is free; else hands
    /// them to the session pool and waits. The outputs, and the time they waited for and ran
    /// on a session.
    async fn run_job(&self, inputs: Vec<Tensor>) -> Result<(Vec<Tensor>, Duration)> {
        if !self.inline.active() {
            return self.pool_job(inputs).await;
        }
        if let Some(b) = self.batching {
            return self.gathered(inputs, b).await;
        }
        match self
            .inline
            .try_run(&self.name, inputs, &self.outputs, &self.stats)
        {
            Ok((result, took)) => result.map(|t| (t, took)),
            Err(inputs) => self.pool_job(inputs).await,
        }
    }

    /// Inline with `batch`: the request joins the gathering run if it fits, or starts one,
    /// waits one scheduler turn (requests ready on this thread join meanwhile), then runs
    /// them all in one ONNX Runtime run on an inline session (the pool's, when all are busy).
    async fn gathered(&self, inputs: Vec<Tensor>, b: Batching) -> Result<(Vec<Tensor>, Duration)> {
        let (reply, answer) = oneshot::channel();
        let job = Job {
            inputs,
            span: tracing::Span::current(),
            queued: Instant::now(),
            reply,
        };
        // `Ok(leader?)` when it joined or started the run; `Err(job)` when it does not fit.
        let joined = {
            let mut g = self.gathering.lock().expect("not poisoned");
            let rows: usize = g.iter().map(Job::rows).sum();
            match g.first() {
                None => {
                    g.push(job);
                    Ok(true)
                }
                Some(first) if first.fits_with(&job) && rows + job.rows() <= b.max_size => {
                    g.push(job);
                    Ok(false)
                }
                Some(_) => Err(job),
            }
        };
        let leader = match joined {
            Ok(leader) => leader,
            // Does not fit this run: alone, as without batching.
            Err(job) => {
                return match self
                    .inline
                    .try_run(&self.name, job.inputs, &self.outputs, &self.stats)
                {
                    Ok((result, took)) => result.map(|t| (t, took)),
                    Err(inputs) => self.pool_job(inputs).await,
                };
            }
        };
        if leader {
            /// If the leader is dropped while gathering (its caller went away), the others
            /// still run: on the pool.
            struct Leader<'a>(Option<&'a OnnxModel>);
            impl Drop for Leader<'_> {
                fn drop(&mut self) {
                    if let Some(model) = self.0 {
                        let jobs =
                            std::mem::take(&mut *model.gathering.lock().expect("not poisoned"));
                        model.to_pool(jobs);
                    }
                }
            }
            let mut guard = Leader(Some(self));
            tokio::task::yield_now().await;
            guard.0 = None;
            let jobs = std::mem::take(&mut *self.gathering.lock().expect("not poisoned"));
            self.run_gathered(jobs);
        }
        let (result, took) = answer
            .await
            .map_err(|_| Error::internal(format!("model `{}` dropped the request", self.name)))?;
        result.map(|t| (t, took))
    }

    /// Runs gathered jobs as one batch on an inline session, answering each; on the pool when
    /// every inline session is busy.
    fn run_gathered(&self, jobs: Vec<Job>) {
        let pool = Pool {
            outputs: &self.outputs,
            stats: &self.stats,
            inline: &self.inline,
            model: &self.name,
        };
        let mut jobs = Some(jobs);
        let took = self.inline.with_session(|session| {
            let start = Instant::now();
            run_batch(session, jobs.take().expect("once"), &pool);
            start.elapsed()
        });
        match took {
            Some(took) => self.inline.inline_ran(&self.name, took),
            None => self.to_pool(jobs.take().expect("not run")),
        }
    }

    /// Queues jobs on the session pool; those that do not fit are answered 503.
    fn to_pool(&self, jobs: Vec<Job>) {
        for job in jobs {
            if let Err(e) = self.queue.try_send(job) {
                let job = e.into_inner();
                let busy = Error::unavailable(format!(
                    "model `{}` is busy: {} requests are already waiting",
                    self.name, self.queue_size
                ));
                job.answer(Err(busy));
            }
        }
    }

    /// Hands the inputs to the session pool and waits for the outputs, and the time they
    /// waited for and ran on a session.
    async fn pool_job(&self, inputs: Vec<Tensor>) -> Result<(Vec<Tensor>, Duration)> {
        let (reply, answer) = oneshot::channel();
        let job = Job {
            inputs,
            span: tracing::Span::current(),
            queued: Instant::now(),
            reply,
        };
        self.queue.try_send(job).map_err(|e| match e {
            TrySendError::Full(_) => Error::unavailable(format!(
                "model `{}` is busy: {} requests are already waiting",
                self.name, self.queue_size
            )),
            TrySendError::Disconnected(_) => {
                Error::internal(format!("model `{}` has stopped", self.name))
            }
        })?;
        let (result, took) = answer
            .await
            .map_err(|_| Error::internal(format!("model `{}` dropped the request", self.name)))?;
        result.map(|t| (t, took))
    }

    /// Occlusion: for each row and feature, how much the predicted class's score drops when
    /// that feature takes its baseline value. All N×(F+1) variants go through one run. Adds
    /// `attributions` FP32 [N, F] to the outputs of the original rows.
    async fn explain(&self, inputs: Vec<Tensor>) -> Result<(Vec<Tensor>, Duration)> {
        let cannot = |why: String| {
            Error::bad_request(format!("model `{}` cannot explain: {why}", self.name))
        };
        let [x] = <[Tensor; 1]>::try_from(inputs).map_err(|_| {
            cannot("explain needs a model with one tabular input [rows, features]".into())
        })?;
        if x.shape.len() != 2 || !x.datatype().is_float() {
            return Err(cannot(format!(
                "input `{}` is {} {:?}; explain needs a float [rows, features] input",
                x.name,
                x.datatype(),
                x.shape
            )));
        }
        let (rows, features) = (x.shape[0], x.shape[1]);
        let baseline: Vec<f64> = match self.baseline.len() {
            0 => vec![0.0; features],
            1 => vec![self.baseline[0]; features],
            n if n == features => self.baseline.clone(),
            n => {
                return Err(cannot(format!(
                    "`explain.baseline` has {n} values but the input has {features} features"
                )));
            }
        };
        let values = x.data.to_f64_vec().expect("float");
        let variants = features + 1;
        let mut stacked = Vec::with_capacity(rows * variants * features);
        for row in values.chunks(features) {
            stacked.extend_from_slice(row);
            for (j, b) in baseline.iter().enumerate() {
                stacked.extend(
                    row.iter()
                        .enumerate()
                        .map(|(k, v)| if k == j { *b } else { *v }),
                );
            }
        }
        let data = match x.datatype() {
            DataType::Fp64 => TensorData::Fp64(stacked),
            DataType::Fp16 => {
                TensorData::Fp16(stacked.into_iter().map(half::f16::from_f64).collect())
            }
            _ => TensorData::Fp32(stacked.into_iter().map(|v| v as f32).collect()),
        };
        let (outputs, took) = self
            .pool_job(vec![Tensor::new(
                x.name.clone(),
                vec![rows * variants, features],
                data,
            )?])
            .await?;
        // The score: a float [rows, classes] output (`probabilities` if there is one).
        let score = outputs
            .iter()
            .filter(|t| {
                t.datatype().is_float() && t.shape.len() == 2 && t.shape[0] == rows * variants
            })
            .max_by_key(|t| t.name == "probabilities")
            .ok_or_else(|| cannot("it has no float [rows, classes] output to attribute".into()))?;
        let classes = score.shape[1];
        let s = score.data.to_f64_vec().expect("float");
        let label = outputs.iter().find(|t| {
            t.datatype().is_integer()
                && t.shape.first() == Some(&(rows * variants))
                && t.data.len() == rows * variants
        });
        let mut attributions = Vec::with_capacity(rows * features);
        for r in 0..rows {
            let orig = r * variants;
            let class = match label.and_then(|l| l.data.to_f64_vec()) {
                Some(l) => (l[orig] as usize).min(classes - 1),
                None => crate::transform::argmax(&s[orig * classes..(orig + 1) * classes]),
            };
            let base = s[orig * classes + class];
            for j in 0..features {
                attributions.push((base - s[(orig + 1 + j) * classes + class]) as f32);
            }
        }
        // Every output, for the original rows only.
        let mut out = Vec::with_capacity(outputs.len() + 1);
        for t in outputs {
            let row: usize = t.shape[1..].iter().product();
            let pieces = t.data.split(&vec![row; rows * variants]);
            let kept: Vec<TensorData> = pieces.into_iter().step_by(variants).collect();
            let mut shape = t.shape.clone();
            shape[0] = rows;
            out.push(Tensor::new(t.name, shape, TensorData::concat(kept)?)?);
        }
        out.push(Tensor::new(
            servegraph_engine::event::ATTRIBUTIONS,
            vec![rows, features],
            TensorData::Fp32(attributions),
        )?);
        Ok((out, took))
    }

    /// Runs and requests served so far.
    pub fn stats(&self) -> &RunStats {
        &self.stats
    }

    /// Takes the model's inputs from the event, checking names, datatypes and shapes.
    fn take_inputs(&self, event: &mut Event) -> Result<Vec<Tensor>> {
        let mut out = Vec::with_capacity(self.inputs.len());
        for meta in &self.inputs {
            let Some(pos) = event.tensors.iter().position(|t| t.name == meta.name) else {
                return Err(Error::unprocessable(format!(
                    "model `{}` needs input `{meta}`; the request has: {}",
                    self.name,
                    event.describe_tensors()
                )));
            };
            let t = event.tensors.swap_remove(pos);
            if t.datatype() != meta.datatype {
                return Err(Error::unprocessable(format!(
                    "input `{}` must be {} but is {}",
                    meta.name,
                    meta.datatype,
                    t.datatype()
                )));
            }
            if !meta.shape_accepts(&t.shape) {
                return Err(Error::unprocessable(format!(
                    "input `{}` must have shape {:?} but has shape {:?}",
                    meta.name, meta.shape, t.shape
                )));
            }
            out.push(t);
        }
        Ok(out)
    }
}

impl OnnxModel {
    /// A loaded model, shared: a graph built while another still runs (a reload) reuses the
    /// models the two have in common (same step name, file and settings, and the file
    /// unchanged) instead of loading them again. A model is let go with the last graph that
    /// uses it.
    pub fn shared(
        name: &str,
        path: &Path,
        spec: &OnnxSpec,
    ) -> std::result::Result<Arc<OnnxModel>, String> {
        type Cache =
            std::sync::Mutex<std::collections::HashMap<String, std::sync::Weak<OnnxModel>>>;
        static LOADED: std::sync::OnceLock<Cache> = std::sync::OnceLock::new();
        let file = std::fs::metadata(path)
            .map(|m| (m.len(), m.modified().ok()))
            .map_err(|e| format!("{}: {e}", path.display()))?;
        let key = format!(
            "{name}|{}|{file:?}|{}|{}|{}|{:?}|{:?}|{}",
            path.display(),
            spec.intra_op_threads,
            spec.sessions,
            spec.queue_size,
            spec.batch,
            spec.explain.as_ref().map(|e| &e.baseline),
            spec.inline,
        );
        let cache = LOADED.get_or_init(Default::default);
        if let Some(model) = cache
            .lock()
            .expect("not poisoned")
            .get(&key)
            .and_then(|w| w.upgrade())
        {
            tracing::info!(model = name, "reusing the loaded model");
            return Ok(model);
        }
        let model = Arc::new(OnnxModel::load(name, path, spec)?);
        let mut cache = cache.lock().expect("not poisoned");
        cache.retain(|_, w| w.strong_count() > 0);
        cache.insert(key, Arc::downgrade(&model));
        Ok(model)
    }
}

#[async_trait]
impl Step for OnnxModel {
    async fn process(&self, mut event: Event) -> Result<Event> {
        let inputs = self.take_inputs(&mut event)?;
        let (tensors, took) = if event.explain {
            self.explain(inputs).await?
        } else {
            self.run_job(inputs).await?
        };
        event.tensors = tensors;
        event.model_time += took;
        Ok(event)
    }

    fn infer(&self, input: &Signature) -> std::result::Result<Signature, String> {
        input.check_provides(&self.inputs)?;
        Ok(Signature::exact(self.outputs.clone()))
    }

    fn inputs(&self) -> Option<Vec<TensorMeta>> {
        Some(self.inputs.clone())
    }

    fn models(&self) -> Vec<ModelInfo> {
        Vec::new()
    }

    fn platform(&self) -> &str {
        "onnxruntime_onnx"
    }
}

/// What a pool thread shares with its model.
struct Pool<'a> {
    outputs: &'a [TensorMeta],
    stats: &'a RunStats,
    inline: &'a Inline,
    model: &'a str,
}

fn worker(mut session: Session, jobs: Receiver<Job>, batching: Option<Batching>, pool: Pool<'_>) {
    // A job that did not fit the last batch starts the next one.
    let mut carried: Option<Job> = None;
    loop {
        let first = match carried.take() {
            Some(job) => job,
            None => match jobs.recv() {
                Ok(job) => job,
                Err(_) => return,
            },
        };
        if first.reply.is_closed() {
            continue;
        }
        let Some(b) = batching else {
            run_batch(&mut session, vec![first], &pool);
            continue;
        };
        let mut batch = vec![first];
        let mut rows = batch[0].rows();
        let deadline = Instant::now() + b.max_wait;
        while rows < b.max_size {
            let next = match jobs.try_recv() {
                Ok(job) => job,
                Err(TryRecvError::Empty) if b.max_wait.is_zero() => break,
                Err(TryRecvError::Empty) => match jobs.recv_deadline(deadline) {
                    Ok(job) => job,
                    Err(RecvTimeoutError::Timeout | RecvTimeoutError::Disconnected) => break,
                },
                Err(TryRecvError::Disconnected) => break,
            };
            if next.reply.is_closed() {
                continue;
            }
            if batch[0].fits_with(&next) && rows + next.rows() <= b.max_size {
                rows += next.rows();
                batch.push(next);
            } else {
                carried = Some(next);
                break;
            }
        }
        run_batch(&mut session, batch, &pool);
    }
}

/// Runs several jobs as one: inputs joined along the first axis, outputs split back by rows.
fn run_batch(session: &mut Session, mut batch: Vec<Job>, pool: &Pool<'_>) {
    let (outputs, stats) = (pool.outputs, pool.stats);
    let start = stats.starting(&batch);
    let ran = || stats.metrics.run_seconds.observe(start.elapsed());
    if batch.len() == 1 {
        let mut job = batch.pop().expect("one job");
        let inputs = std::mem::take(&mut job.inputs);
        let result = {
            let _entered = job.span.enter();
            run(session, inputs, outputs)
        };
        ran();
        pool.inline.pool_ran(pool.model, start.elapsed());
        job.answer(result);
        return;
    }
    let ran = || {
        ran();
        pool.inline.pool_ran(pool.model, start.elapsed());
    };
    let counts: Vec<usize> = batch.iter().map(Job::rows).collect();
    let total: usize = counts.iter().sum();
    let mut replies = Vec::with_capacity(batch.len());
    let mut columns: Vec<Vec<Tensor>> = Vec::new();
    for mut job in batch {
        for (i, t) in std::mem::take(&mut job.inputs).into_iter().enumerate() {
            if columns.len() <= i {
                columns.push(Vec::new());
            }
            columns[i].push(t);
        }
        replies.push(job);
    }
    let result = (|| {
        let inputs = columns
            .into_iter()
            .map(|parts| {
                let name = parts[0].name.clone();
                let mut shape = parts[0].shape.clone();
                shape[0] = total;
                let data = TensorData::concat(parts.into_iter().map(|t| t.data).collect())?;
                Tensor::new(name, shape, data)
            })
            .collect::<Result<Vec<_>>>()?;
        let merged = run(session, inputs, outputs);
        ran();
        let merged = merged?;
        // Each output back into one piece per job, by rows.
        let mut per_job: Vec<Vec<Tensor>> = counts.iter().map(|_| Vec::new()).collect();
        for t in merged {
            if t.shape.first() != Some(&total) {
                return Err(Error::internal(format!(
                    "output `{}` has shape {:?}, not {total} rows: this model cannot be batched",
                    t.name, t.shape
                )));
            }
            let row: usize = t.shape[1..].iter().product();
            let pieces = t
                .data
                .split(&counts.iter().map(|c| c * row).collect::<Vec<_>>());
            for ((piece, &n), out) in pieces.into_iter().zip(&counts).zip(per_job.iter_mut()) {
                let mut shape = t.shape.clone();
                shape[0] = n;
                out.push(Tensor::new(t.name.clone(), shape, piece)?);
            }
        }
        Ok(per_job)
    })();
    match result {
        Ok(per_job) => {
            for (job, tensors) in replies.into_iter().zip(per_job) {
                job.answer(Ok(tensors));
            }
        }
        Err(e) => {
            for job in replies {
                job.answer(Err(e.clone()));
            }
        }
    }
}

fn run(session: &mut Session, inputs: Vec<Tensor>, outputs: &[TensorMeta]) -> Result<Vec<Tensor>> {
    let values = inputs
        .into_iter()
        .map(|t| Ok((t.name.clone(), to_ort(t)?)))
        .collect::<Result<Vec<(String, DynValue)>>>()?;
    let results = session
        .run(values)
        .map_err(|e| Error::internal(format!("ONNX Runtime failed: {e}")))?;
    outputs
        .iter()
        .map(|meta| {
            let value = results.get(&meta.name).ok_or_else(|| {
                Error::internal(format!("the model gave no output `{}`", meta.name))
            })?;
            from_ort(&meta.name, value)
        })
        .collect()
}

fn ort_err(e: ort::Error) -> Error {
    Error::internal(format!("ONNX Runtime: {e}"))
}

fn to_ort(t: Tensor) -> Result<DynValue> {
    let shape = t.shape;
    macro_rules! owned {
        ($v:expr) => {
            OrtTensor::from_array((shape, $v))
                .map(|x| x.into_dyn())
                .map_err(ort_err)
        };
    }
    match t.data {
        TensorData::Bool(v) => owned!(v),
        TensorData::Uint8(v) => owned!(v),
        TensorData::Uint16(v) => owned!(v),
        TensorData::Uint32(v) => owned!(v),
        TensorData::Uint64(v) => owned!(v),
        TensorData::Int8(v) => owned!(v),
        TensorData::Int16(v) => owned!(v),
        TensorData::Int32(v) => owned!(v),
        TensorData::Int64(v) => owned!(v),
        TensorData::Fp16(v) => owned!(v),
        TensorData::Fp32(v) => owned!(v),
        TensorData::Fp64(v) => owned!(v),
        TensorData::Bytes(v) => {
            let strings = v
                .into_iter()
                .map(String::from_utf8)
                .collect::<std::result::Result<Vec<String>, _>>()
                .map_err(|_| {
                    Error::unprocessable(format!("input `{}`: ONNX strings must be UTF-8", t.name))
                })?;
            OrtTensor::from_string_array((shape, strings.as_slice()))
                .map(|x| x.into_dyn())
                .map_err(ort_err)
        }
    }
}

fn from_ort(name: &str, value: &DynValue) -> Result<Tensor> {
    macro_rules! copy {
        ($t:ty, $variant:ident) => {{
            let (shape, data) = value.try_extract_tensor::<$t>().map_err(ort_err)?;
            (
                shape.iter().map(|&d| d as usize).collect::<Vec<usize>>(),
                TensorData::$variant(data.to_vec()),
            )
        }};
    }
    let ty = value
        .dtype()
        .tensor_type()
        .ok_or_else(|| Error::internal(format!("output `{name}` is not a tensor")))?;
    let (shape, data) = match ty {
        TensorElementType::Bool => copy!(bool, Bool),
        TensorElementType::Uint8 => copy!(u8, Uint8),
        TensorElementType::Uint16 => copy!(u16, Uint16),
        TensorElementType::Uint32 => copy!(u32, Uint32),
        TensorElementType::Uint64 => copy!(u64, Uint64),
        TensorElementType::Int8 => copy!(i8, Int8),
        TensorElementType::Int16 => copy!(i16, Int16),
        TensorElementType::Int32 => copy!(i32, Int32),
        TensorElementType::Int64 => copy!(i64, Int64),
        TensorElementType::Float16 => copy!(half::f16, Fp16),
        TensorElementType::Float32 => copy!(f32, Fp32),
        TensorElementType::Float64 => copy!(f64, Fp64),
        TensorElementType::String => {
            let (shape, strings) = value.try_extract_strings().map_err(ort_err)?;
            (
                shape.iter().map(|&d| d as usize).collect(),
                TensorData::Bytes(strings.into_iter().map(String::into_bytes).collect()),
            )
        }
        other => {
            return Err(Error::internal(format!(
                "output `{name}` has element type {other:?}, which OIP cannot carry"
            )));
        }
    };
    Tensor::new(name, shape, data)
}

/// Model inputs/outputs as OIP metadata; a non-tensor one (a sequence or map, as scikit-learn
/// models with ZipMap have) is a load error that says how to export the model instead.
fn metas<'a>(
    outlets: impl Iterator<Item = (&'a str, &'a ValueType)>,
    what: &str,
) -> std::result::Result<Vec<TensorMeta>, String> {
    outlets
        .map(|(name, ty)| {
            let ValueType::Tensor { ty, shape, .. } = ty else {
                return Err(format!(
                    "{what} `{name}` is a {ty:?}, not a tensor; export scikit-learn models with \
                     zipmap disabled"
                ));
            };
            let datatype = datatype(*ty).ok_or_else(|| {
                format!("{what} `{name}` has element type {ty:?}, which OIP cannot carry")
            })?;
            Ok(TensorMeta::new(
                name,
                datatype,
                shape.iter().copied().collect(),
            ))
        })
        .collect()
}

fn datatype(ty: TensorElementType) -> Option<DataType> {
    Some(match ty {
        TensorElementType::Bool => DataType::Bool,
        TensorElementType::Uint8 => DataType::Uint8,
        TensorElementType::Uint16 => DataType::Uint16,
        TensorElementType::Uint32 => DataType::Uint32,
        TensorElementType::Uint64 => DataType::Uint64,
        TensorElementType::Int8 => DataType::Int8,
        TensorElementType::Int16 => DataType::Int16,
        TensorElementType::Int32 => DataType::Int32,
        TensorElementType::Int64 => DataType::Int64,
        TensorElementType::Float16 => DataType::Fp16,
        TensorElementType::Float32 => DataType::Fp32,
        TensorElementType::Float64 => DataType::Fp64,
        TensorElementType::String => DataType::Bytes,
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use futures_util::future::join_all;

    use super::*;
    use crate::model::BatchSpec;

    fn spec(batch: Option<BatchSpec>) -> OnnxSpec {
        let yaml = "model_path: x\n";
        let node = marked_yaml::parse_yaml(0, yaml).unwrap();
        let mut spec: OnnxSpec = marked_yaml::from_node(&node).unwrap();
        spec.batch = batch;
        spec
    }

    fn iris() -> PathBuf {
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../models/iris_lr.onnx")
    }

    fn expected() -> (Vec<Vec<f32>>, Vec<i64>) {
        let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../models/iris_expected.json");
        let v: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
        let rows = v["rows"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| {
                r.as_array()
                    .unwrap()
                    .iter()
                    .map(|x| x.as_f64().unwrap() as f32)
                    .collect()
            })
            .collect();
        let labels = v["iris-lr"]["label"]
            .as_array()
            .unwrap()
            .iter()
            .map(|x| x.as_i64().unwrap())
            .collect();
        (rows, labels)
    }

    fn request(rows: &[Vec<f32>]) -> Event {
        let data: Vec<f32> = rows.iter().flatten().copied().collect();
        Event::new(
            "t",
            vec![Tensor::new("input", vec![rows.len(), 4], TensorData::Fp32(data)).unwrap()],
        )
    }

    #[tokio::test]
    async fn batched_requests_get_their_own_rows_back() {
        let batch = BatchSpec {
            max_size: 8,
            max_wait_us: 200_000,
        };
        let model = OnnxModel::load("lr", &iris(), &spec(Some(batch))).unwrap();
        let (rows, labels) = expected();
        // Requests of 1, 2 and 3 rows, sent at once: they share runs and each gets its rows.
        let slices = [(0, 1), (1, 3), (3, 6), (6, 7), (7, 10)];
        let answers = join_all(
            slices
                .iter()
                .map(|&(a, b)| model.process(request(&rows[a..b]))),
        )
        .await;
        for (&(a, b), answer) in slices.iter().zip(answers) {
            let out = answer.unwrap();
            assert_eq!(
                out.get("label").unwrap().data,
                TensorData::Int64(labels[a..b].to_vec())
            );
            assert_eq!(out.get("probabilities").unwrap().shape, vec![b - a, 3]);
        }
        let runs = model.stats().runs.load(Ordering::Relaxed);
        assert_eq!(model.stats().requests.load(Ordering::Relaxed), 5);
        // 10 rows, at most 8 per run: two runs when all five arrive within the wait.
        assert!(runs <= 3, "{runs} runs for 5 requests");
    }

    /// iris-lr with generous inline thresholds: a debug build on a busy test machine is
    /// slow, not the model.
    fn loose(batch: Option<BatchSpec>) -> OnnxModel {
        let model = OnnxModel::load("lr", &iris(), &spec(batch)).unwrap();
        model.inline_thresholds(Duration::from_secs(1), Duration::from_secs(1));
        model
    }

    #[tokio::test]
    async fn a_tiny_model_moves_inline_after_its_warm_up_and_answers_alike() {
        let model = loose(None);
        let (rows, labels) = expected();
        let check = |out: Event| {
            assert_eq!(
                out.get("label").unwrap().data,
                TensorData::Int64(labels[..2].to_vec())
            );
        };
        for _ in 0..WARMUP {
            assert!(!model.runs_inline());
            check(model.process(request(&rows[..2])).await.unwrap());
        }
        // After the warm-up it runs on the caller's thread.
        assert!(model.runs_inline(), "iris-lr did not move inline");
        let before = model.stats().runs.load(Ordering::Relaxed);
        for _ in 0..10 {
            check(model.process(request(&rows[..2])).await.unwrap());
        }
        assert_eq!(model.stats().runs.load(Ordering::Relaxed), before + 10);

        let mut pooled = spec(None);
        pooled.inline = false;
        let model = OnnxModel::load("lr", &iris(), &pooled).unwrap();
        for _ in 0..WARMUP + 10 {
            check(model.process(request(&rows[..2])).await.unwrap());
        }
        assert!(!model.runs_inline(), "`inline: false` ran inline");
    }

    #[tokio::test]
    async fn inline_requests_ready_together_share_one_run_and_get_their_own_rows() {
        let batch = BatchSpec {
            max_size: 64,
            max_wait_us: 0,
        };
        let model = loose(Some(batch));
        let (rows, labels) = expected();
        for _ in 0..WARMUP {
            model.process(request(&rows[..1])).await.unwrap();
        }
        assert!(model.runs_inline());
        let before = model.stats().runs.load(Ordering::Relaxed);
        // Ten requests ready at once on this thread: they gather into one inline run.
        let slices: Vec<(usize, usize)> = (0..10).map(|i| (i, i + 1)).collect();
        let answers = join_all(
            slices
                .iter()
                .map(|&(a, b)| model.process(request(&rows[a..b]))),
        )
        .await;
        for (&(a, b), answer) in slices.iter().zip(answers) {
            assert_eq!(
                answer.unwrap().get("label").unwrap().data,
                TensorData::Int64(labels[a..b].to_vec())
            );
        }
        let runs = model.stats().runs.load(Ordering::Relaxed) - before;
        assert_eq!(runs, 1, "{runs} runs for 10 requests ready together");
    }

    #[tokio::test]
    async fn a_request_larger_than_max_size_runs_alone() {
        let batch = BatchSpec {
            max_size: 2,
            max_wait_us: 0,
        };
        let model = OnnxModel::load("lr", &iris(), &spec(Some(batch))).unwrap();
        let (rows, labels) = expected();
        let out = model.process(request(&rows)).await.unwrap();
        assert_eq!(out.get("label").unwrap().data, TensorData::Int64(labels));
    }

    #[tokio::test]
    async fn explain_matches_occlusion_by_hand() {
        let mut s = spec(None);
        s.explain = Some(crate::model::ExplainSpec {
            baseline: vec![5.8, 3.0, 3.7, 1.2],
        });
        let model = OnnxModel::load("lr", &iris(), &s).unwrap();
        let (rows, labels) = expected();
        let mut ev = request(&rows[..3]);
        ev.explain = true;
        let out = model.process(ev).await.unwrap();
        assert_eq!(
            out.get("label").unwrap().data,
            TensorData::Int64(labels[..3].to_vec())
        );
        let a = out.get("attributions").unwrap();
        assert_eq!(a.shape, vec![3, 4]);
        let TensorData::Fp32(a) = &a.data else {
            panic!()
        };
        // Row 1, feature 2 by hand: the predicted class's probability, then with feature 2 at
        // its baseline.
        let proba = |row: Vec<f32>| {
            let m = &model;
            async move {
                let out = m.process(request(&[row])).await.unwrap();
                let TensorData::Fp32(p) = out.get("probabilities").unwrap().data.clone() else {
                    panic!()
                };
                p
            }
        };
        let class = labels[1] as usize;
        let before = proba(rows[1].clone()).await[class];
        let mut occluded = rows[1].clone();
        occluded[2] = 3.7;
        let after = proba(occluded).await[class];
        assert!(
            (a[4 + 2] - (before - after)).abs() < 1e-6,
            "{} vs {}",
            a[6],
            before - after
        );
    }

    #[test]
    fn a_model_loaded_twice_is_shared_while_in_use() {
        let a = OnnxModel::shared("shared-lr", &iris(), &spec(None)).unwrap();
        let b = OnnxModel::shared("shared-lr", &iris(), &spec(None)).unwrap();
        assert!(Arc::ptr_eq(&a, &b), "the second load reuses the first");
        let batched = spec(Some(BatchSpec {
            max_size: 8,
            max_wait_us: 0,
        }));
        let c = OnnxModel::shared("shared-lr", &iris(), &batched).unwrap();
        assert!(!Arc::ptr_eq(&a, &c), "other settings: another model");
        let weak = Arc::downgrade(&a);
        drop((a, b));
        assert!(weak.upgrade().is_none(), "let go with its last user");
        let d = OnnxModel::shared("shared-lr", &iris(), &spec(None)).unwrap();
        assert!(!Arc::ptr_eq(&d, &c));
    }

    #[test]
    fn jobs_fit_only_with_equal_row_shapes() {
        let job = |shape: Vec<usize>| {
            let n = shape.iter().product();
            Job {
                inputs: vec![Tensor::new("x", shape, TensorData::Fp32(vec![0.0; n])).unwrap()],
                span: tracing::Span::none(),
                queued: Instant::now(),
                reply: oneshot::channel().0,
            }
        };
        assert!(job(vec![1, 4]).fits_with(&job(vec![3, 4])));
        assert!(!job(vec![1, 4]).fits_with(&job(vec![1, 5])));
        assert!(!job(vec![4]).fits_with(&job(vec![2, 2])));
    }

    #[test]
    fn batching_needs_a_dynamic_first_dimension() {
        let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../models");
        let batch = BatchSpec {
            max_size: 4,
            max_wait_us: 0,
        };
        let err = OnnxModel::load("f", &dir.join("fixed_batch.onnx"), &spec(Some(batch)))
            .err()
            .expect("a fixed batch dimension cannot be batched");
        assert_eq!(
            err,
            "`batch` needs a dynamic first dimension, but input `x` has shape [1, 4]"
        );
        // Without `batch` it serves.
        assert!(OnnxModel::load("f", &dir.join("fixed_batch.onnx"), &spec(None)).is_ok());
    }
}
