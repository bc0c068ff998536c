//! ONNX models through ONNX Runtime (`ort`, loaded at run time from a shared library).
//!
//! Each model owns a pool of sessions, one per worker thread, fed by one bounded queue: an
//! inference never runs on the async workers, `Session::run`'s `&mut self` needs no lock, and
//! a full queue answers 503 at once instead of growing memory. Each job carries a `oneshot`
//! for its answer and the caller's tracing span; a job whose caller has gone is skipped.
//!
//! **Tiny models run inline** ([`Inline`]): handing a 3 µs run to another thread costs more
//! than the run (a wake-up, a context switch on a one-core pod, the answer's wake-up back).
//! So a model whose first [`WARMUP`] pool runs took under [`INLINE_MAX`] of the thread's CPU
//! time (90% of them; CPU time, not wall time, which counts every other thread's turn that
//! preempted the run on a busy pod) gets one session
//! per async worker thread, and a request then runs on its own thread with
//! a free one of those (a `try_lock`; busy ones fall back to the pool). With `batch`, inline
//! runs batch too: the first request waits one scheduler turn, requests ready on the same
//! thread meanwhile join it, and they share one run (cheaper per request than a run each). A
//! run is then at most ~50 µs of a worker's time, as tokio allows between awaits; if inline
//! runs later cost more (more than 10% of sampled runs over [`INLINE_LIMIT`] in a window),
//! inline stops and
//! the pool takes every request again.
//!
//! One file per job: `runtime` (the library and sessions), `job`, `pool`, `inline`, `convert`
//! (tensors to and from ONNX Runtime), `explain` and `cache` (models shared across reloads).

mod cache;
mod convert;
mod explain;
mod inline;
mod job;
mod pool;
mod runtime;

pub use inline::{INLINE_LIMIT, INLINE_MAX, Inline, WARMUP};
pub use job::RunStats;
pub use runtime::{ORT_VERSION, dylib_path, open_session};

use std::path::Path;
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender, TrySendError};
use servegraph_engine::{
    Error, Event, Model, Platform, Result, Signature, Step, Tensor, TensorMeta, async_trait,
};

use self::convert::metas;
use self::pool::{Pool, run_batch, worker};
use crate::model::OnnxSpec;
use crate::model::batch::{Batching, Job, Waiting};

/// A loaded ONNX model and its session pool.
pub struct OnnxModel {
    name: String,
    /// Per-feature values `/explain` replaces features with (empty: zeros).
    baseline: Vec<f64>,
    inputs: Vec<TensorMeta>,
    outputs: Vec<TensorMeta>,
    queue: Sender<Job>,
    /// Requests queued or gathered for a batch, within `queue_size`.
    waiting: Waiting,
    stats: Arc<RunStats>,
    inline: Arc<Inline>,
    /// `batch`: requests that arrive together share one run.
    batching: Option<Batching>,
    /// `max_batch_size`: the first dimension is a batch of at most this many rows.
    max_batch_size: Option<usize>,
    /// Requests gathering for the next inline run (with `batch`): the first one waits one
    /// scheduler turn for others that are ready on the same thread, then runs them all.
    gathering: Mutex<Vec<Job>>,
}

impl OnnxModel {
    /// Opens `sessions` sessions of the model and starts a worker thread for each. The error
    /// is the diagnostic the graph's `model_path` is reported with.
    pub fn load(
        name: &str,
        path: &Path,
        spec: &OnnxSpec,
    ) -> std::result::Result<OnnxModel, String> {
        let started = Instant::now();
        let open = || open_session(path, spec.intra_op_threads).map_err(|e| e.to_string());
        let first = open()?;
        let inputs = metas(
            first.inputs().iter().map(|o| (o.name(), o.dtype())),
            "input",
        )?;
        let outputs = metas(
            first.outputs().iter().map(|o| (o.name(), o.dtype())),
            "output",
        )?;
        // Merging along the first axis, or calling it a batch, needs it dynamic everywhere.
        let field = match (spec.batch, spec.max_batch_size) {
            (_, Some(_)) => Some("max_batch_size"),
            (Some(_), None) => Some("batch"),
            (None, None) => None,
        };
        if let Some(field) = field {
            for (what, metas) in [("input", &inputs), ("output", &outputs)] {
                if let Some(m) = metas.iter().find(|m| m.shape.first() != Some(&-1)) {
                    return Err(format!(
                        "`{field}` needs a dynamic first dimension, but {what} `{}` has shape {:?}",
                        m.name, m.shape
                    ));
                }
            }
        }
        let batching = spec.batch.map(|b| Batching {
            max_size: b.max_size,
            max_wait: Duration::from_micros(b.max_wait_us),
        });
        let (tx, rx) = crossbeam_channel::bounded(spec.queue_size);
        let stats = Arc::new(RunStats::new(name));
        // Runs are judged by the pool thread's CPU time, which misses ONNX Runtime's own threads:
        // a model given more than one is not a tiny one.
        let inline = Arc::new(Inline::new(spec.inline && spec.intra_op_threads == 1, path));
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
            waiting: Waiting::new(spec.queue_size),
            stats,
            inline,
            batching,
            max_batch_size: spec.max_batch_size,
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
            .store(max.as_nanos() as u64, std::sync::atomic::Ordering::Relaxed);
        self.inline.limit_ns.store(
            limit.as_nanos() as u64,
            std::sync::atomic::Ordering::Relaxed,
        );
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
        let (mut job, answer) = Job::new(inputs, None);
        // Waiting for the run, it counts against `queue_size` as a queued request does.
        job.place = Some(self.waiting.enter(&self.name)?);
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
        let answer = answer
            .await
            .map_err(|_| Error::internal(format!("model `{}` dropped the request", self.name)))?;
        answer.result.map(|t| (t, answer.took))
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
            inline::sampled(|| run_batch(session, jobs.take().expect("once"), &pool)).1
        });
        match took {
            Some(Some(cpu)) => self.inline.inline_ran(&self.name, cpu),
            Some(None) => {}
            None => self.to_pool(jobs.take().expect("not run")),
        }
    }

    /// Queues gathered jobs on the session pool (they keep their places among the waiting
    /// requests, so the queue has room for them); one the pool has stopped for is answered so.
    fn to_pool(&self, jobs: Vec<Job>) {
        for job in jobs {
            if let Err(e) = self.queue.try_send(job) {
                let job = e.into_inner();
                let stopped = Error::unavailable(format!("model `{}` has stopped", self.name));
                job.answer(Err(stopped));
            }
        }
    }

    /// Hands the inputs to the session pool and waits for the outputs, and the time they
    /// waited for and ran on a session.
    async fn pool_job(&self, inputs: Vec<Tensor>) -> Result<(Vec<Tensor>, Duration)> {
        let (mut job, answer) = Job::new(inputs, None);
        job.place = Some(self.waiting.enter(&self.name)?);
        self.queue.try_send(job).map_err(|e| match e {
            // Never while places are counted; said as the count says it.
            TrySendError::Full(_) => {
                Error::unavailable(format!("model `{}` is busy: its queue is full", self.name))
            }
            TrySendError::Disconnected(_) => {
                Error::internal(format!("model `{}` has stopped", self.name))
            }
        })?;
        let answer = answer
            .await
            .map_err(|_| Error::internal(format!("model `{}` dropped the request", self.name)))?;
        answer.result.map(|t| (t, answer.took))
    }

    /// The model's outputs, as the file declares them.
    pub fn outputs(&self) -> &[TensorMeta] {
        &self.outputs
    }

    /// Runs and requests served so far.
    pub fn stats(&self) -> &RunStats {
        &self.stats
    }
}

#[async_trait]
impl Step for OnnxModel {
    async fn process(&self, mut event: Event) -> Result<Event> {
        let inputs = crate::model::take_inputs(&self.name, &self.inputs, &mut event)?;
        crate::model::check_rows(&self.name, self.max_batch_size, &inputs)?;
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

    fn model(&self) -> Option<&dyn Model> {
        Some(self)
    }
}

impl Model for OnnxModel {
    fn platform(&self) -> Platform {
        Platform::Onnx
    }

    fn batching(&self) -> Option<(usize, std::time::Duration)> {
        self.batching.map(|b| (b.max_size, b.max_wait))
    }

    fn max_batch_size(&self) -> usize {
        self.max_batch_size
            .or(self.batching.map(|b| b.max_size))
            .unwrap_or(0)
    }
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use futures_util::future::join_all;

    use super::*;
    use crate::model::BatchSpec;
    use std::sync::atomic::Ordering;

    use servegraph_engine::TensorData;

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
            let x = Tensor::new("x", shape, TensorData::Fp32(vec![0.0; n])).unwrap();
            Job::new(vec![x], None).0
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
