//! What model runtimes share (ONNX sessions, Python workers): a request's work waiting for
//! a run ([`Job`]), adaptive batching (gathering jobs with the same row shape, up to a size
//! and a wait), and joining their inputs along the first axis and splitting the outputs back.

use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, RecvTimeoutError, TryRecvError};
use servegraph_engine::{Error, Result, Tensor, TensorData};
use tokio::sync::oneshot;

/// One request's inputs, waiting for a run, and where its answer goes.
pub(crate) struct Job {
    pub(crate) inputs: Vec<Tensor>,
    pub(crate) span: tracing::Span,
    /// When it was queued: its answer carries the time since (queue wait + run).
    pub(crate) queued: Instant,
    pub(crate) reply: oneshot::Sender<Answer>,
    /// The request's parameters, for runtimes that hand them to the model (Python); jobs
    /// join a batch only when theirs are equal.
    pub(crate) parameters: Option<Notes>,
    /// A custom operation (its name and JSON body) instead of an inference (Python models'
    /// `op_<name>`); it never joins a batch, and its answer's notes carry the reply.
    pub(crate) operation: Option<(String, serde_json::Value)>,
    /// What a Python model is handed besides tensors: the request's body (for classes
    /// written against bodies: MLRun's, Seldon's) and whether it is an `/explain`. A job
    /// with either never joins a batch.
    pub(crate) call: Call,
    /// Its place among the model's waiting requests ([`Waiting`]), given back when its run
    /// starts (or when it is dropped).
    pub(crate) place: Option<Place>,
}

/// The requests waiting for one model's runs: queued, or gathered into a batch that has not
/// started (Triton's `max_queue_size` counts them alike). At most `queue_size` wait; one more
/// is refused with 503 at once.
#[derive(Clone)]
pub(crate) struct Waiting {
    count: std::sync::Arc<std::sync::atomic::AtomicUsize>,
    limit: usize,
}

/// One request's place among a model's waiting requests ([`Waiting::enter`]): freed when
/// dropped.
pub(crate) struct Place(std::sync::Arc<std::sync::atomic::AtomicUsize>);

impl Drop for Place {
    fn drop(&mut self) {
        self.0.fetch_sub(1, std::sync::atomic::Ordering::AcqRel);
    }
}

impl Waiting {
    /// Room for `limit` waiting requests.
    pub(crate) fn new(limit: usize) -> Waiting {
        Waiting {
            count: Default::default(),
            limit: limit.max(1),
        }
    }

    /// A place for one more waiting request, or the 503 that says the model's queue is full.
    pub(crate) fn enter(&self, model: &str) -> Result<Place> {
        use std::sync::atomic::Ordering;
        self.count
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < self.limit).then_some(n + 1)
            })
            .map(|_| Place(std::sync::Arc::clone(&self.count)))
            .map_err(|_| {
                Error::unavailable(format!(
                    "model `{model}` is busy: {} requests are already waiting for it (its queue_size)",
                    self.limit
                ))
            })
    }

    /// Requests waiting now.
    #[cfg(test)]
    pub(crate) fn now(&self) -> usize {
        self.count.load(std::sync::atomic::Ordering::Acquire)
    }
}

/// The jobs of a run that starts now leave the waiting requests.
pub(crate) fn started(batch: &mut [Job]) {
    for job in batch {
        job.place = None;
    }
}

/// A Python model's call beyond its tensors ([`Job::call`]).
#[derive(Default)]
pub(crate) struct Call {
    pub(crate) body: Option<serde_json::Value>,
    pub(crate) explain: bool,
    /// The request's id, with a body (MLRun's answers echo it) or with `headers`.
    pub(crate) id: Option<String>,
    /// The failure an error handler runs for (`{"step", "message"}`), with a body: MLRun's
    /// `event.error` and `event.origin_state`.
    pub(crate) error: Option<serde_json::Value>,
    /// Where the pieces of a streamed answer go, when the caller takes a stream.
    pub(crate) chunks: Option<servegraph_engine::event::Chunks>,
    /// The request's headers, for a class that takes them (KServe's), with the request's id
    /// and its inputs' own parameters (by input name).
    pub(crate) headers: Option<Vec<(String, String)>>,
    pub(crate) input_parameters: Option<Notes>,
    /// With `headers`: the outputs the request names, as it sent them, for a class that reads
    /// them (MLServer's `payload.outputs`).
    pub(crate) requested_outputs: Option<serde_json::Value>,
    /// With `headers`: the request came over gRPC.
    pub(crate) grpc: bool,
    /// With `headers`: the call may still join a batch (MLServer's adaptive batching joins
    /// requests; KServe's classes take one at a time), with calls whose inputs' parameters
    /// and named outputs are its own; the batch's call has the first one's headers and no id.
    pub(crate) joins: bool,
}

impl Call {
    fn is_plain(&self) -> bool {
        self.body.is_none()
            && !self.explain
            && self.error.is_none()
            && self.chunks.is_none()
            && (self.headers.is_none() || self.joins)
    }
}

/// JSON fields by name: a request's parameters, or what an answer adds to the response's.
pub(crate) type Notes = serde_json::Map<String, serde_json::Value>;

/// A job's answer: its outputs (or the run's error), the time since it was queued, and what
/// the runtime adds to the response's `parameters` (a Python model's tags).
pub(crate) struct Answer {
    pub(crate) result: Result<Vec<Tensor>>,
    pub(crate) took: Duration,
    pub(crate) notes: Option<Notes>,
}

impl Job {
    /// A job for `inputs`, queued now under the caller's span, and where its answer arrives.
    pub(crate) fn new(
        inputs: Vec<Tensor>,
        parameters: Option<Notes>,
    ) -> (Job, oneshot::Receiver<Answer>) {
        let (reply, answer) = oneshot::channel();
        let job = Job {
            inputs,
            span: tracing::Span::current(),
            queued: Instant::now(),
            reply,
            parameters,
            operation: None,
            call: Call::default(),
            place: None,
        };
        (job, answer)
    }

    /// A job calling the custom operation `name` with `body`.
    pub(crate) fn operation(
        name: &str,
        body: serde_json::Value,
    ) -> (Job, oneshot::Receiver<Answer>) {
        let (mut job, answer) = Job::new(Vec::new(), None);
        job.operation = Some((name.to_owned(), body));
        (job, answer)
    }

    pub(crate) fn answer(self, result: Result<Vec<Tensor>>) {
        self.answer_noted(result, None);
    }

    /// Answers with what the runtime adds to the response's `parameters`.
    pub(crate) fn answer_noted(self, result: Result<Vec<Tensor>>, notes: Option<Notes>) {
        let took = self.queued.elapsed();
        let _ = self.reply.send(Answer {
            result,
            took,
            notes,
        });
    }

    /// Rows along the batch axis (the first input's first dimension).
    pub(crate) fn rows(&self) -> usize {
        self.inputs
            .first()
            .and_then(|t| t.shape.first())
            .copied()
            .unwrap_or(1)
    }

    /// Whether two jobs can share a run: same inputs but for the batch dimension.
    pub(crate) fn fits_with(&self, other: &Job) -> bool {
        self.operation.is_none()
            && other.operation.is_none()
            && self.call.is_plain()
            && other.call.is_plain()
            && !self.inputs.is_empty()
            && self.inputs.len() == other.inputs.len()
            && self.inputs.iter().zip(&other.inputs).all(|(a, b)| {
                a.datatype() == b.datatype() && !a.shape.is_empty() && a.shape[1..] == b.shape[1..]
            })
            && other
                .inputs
                .iter()
                .all(|t| t.shape.first() == Some(&other.rows()))
            && self.parameters == other.parameters
            && self.call.joins == other.call.joins
            && self.call.input_parameters == other.call.input_parameters
            && self.call.requested_outputs == other.call.requested_outputs
    }
}

/// Adaptive batching settings, as the worker uses them.
#[derive(Clone, Copy)]
pub(crate) struct Batching {
    pub(crate) max_size: usize,
    pub(crate) max_wait: Duration,
}

/// The next jobs to run together, from `jobs` (and a job `carried` over from the last
/// gathering, which did not fit it): one job without batching, else as many as are queued
/// (or arrive within `max_wait`) that fit with the first, up to `max_size` rows. `None` when
/// the queue is closed. Jobs whose caller has gone are skipped.
pub(crate) fn next_batch(
    jobs: &Receiver<Job>,
    carried: &mut Option<Job>,
    batching: Option<Batching>,
) -> Option<Vec<Job>> {
    let first = loop {
        let job = match carried.take() {
            Some(job) => job,
            None => jobs.recv().ok()?,
        };
        if !job.reply.is_closed() {
            break job;
        }
    };
    let mut gathering = Gathering::new(first, batching);
    let deadline = Instant::now() + gathering.max_wait;
    while gathering.wants_more() {
        let next = match jobs.try_recv() {
            Ok(job) => job,
            Err(TryRecvError::Empty) if gathering.max_wait.is_zero() => break,
            Err(TryRecvError::Empty) => match jobs.recv_deadline(deadline) {
                Ok(job) => job,
                Err(RecvTimeoutError::Timeout | RecvTimeoutError::Disconnected) => break,
            },
            Err(TryRecvError::Disconnected) => break,
        };
        if !gathering.offer(next, carried) {
            break;
        }
    }
    Some(gathering.batch)
}

/// The first job of the next batch for a runtime served by a tokio task (Python workers):
/// the one `carried` over, else the next from the queue whose caller is still waiting;
/// `None` when the queue is closed. Cancel-safe: a job is only taken when it is returned.
pub(crate) async fn first_job(
    jobs: &mut tokio::sync::mpsc::Receiver<Job>,
    carried: &mut Option<Job>,
) -> Option<Job> {
    loop {
        let job = match carried.take() {
            Some(job) => job,
            None => jobs.recv().await?,
        };
        if !job.reply.is_closed() {
            return Some(job);
        }
    }
}

/// [`next_batch`]'s gathering after the `first` job, over a tokio queue. tokio's timers tick
/// in milliseconds, so a `max_wait` under 1 ms waits up to 1 ms when nothing else is queued.
pub(crate) async fn gather_async(
    jobs: &mut tokio::sync::mpsc::Receiver<Job>,
    first: Job,
    carried: &mut Option<Job>,
    batching: Option<Batching>,
) -> Vec<Job> {
    use tokio::sync::mpsc::error::TryRecvError;
    let mut gathering = Gathering::new(first, batching);
    let deadline = tokio::time::Instant::now() + gathering.max_wait;
    while gathering.wants_more() {
        let next = match jobs.try_recv() {
            Ok(job) => job,
            Err(TryRecvError::Empty) if gathering.max_wait.is_zero() => break,
            Err(TryRecvError::Empty) => {
                match tokio::time::timeout_at(deadline, jobs.recv()).await {
                    Ok(Some(job)) => job,
                    Ok(None) | Err(_) => break,
                }
            }
            Err(TryRecvError::Disconnected) => break,
        };
        if !gathering.offer(next, carried) {
            break;
        }
    }
    gathering.batch
}

/// A batch being gathered: which jobs join it, whatever queue they come from.
struct Gathering {
    batch: Vec<Job>,
    rows: usize,
    max_size: usize,
    max_wait: Duration,
}

impl Gathering {
    fn new(first: Job, batching: Option<Batching>) -> Gathering {
        let rows = first.rows();
        let (max_size, max_wait) = match batching {
            Some(b) => (b.max_size, b.max_wait),
            // Without batching the first job is the batch.
            None => (0, Duration::ZERO),
        };
        Gathering {
            batch: vec![first],
            rows,
            max_size,
            max_wait,
        }
    }

    fn wants_more(&self) -> bool {
        self.rows < self.max_size
    }

    /// Takes `next` into the batch if it fits (skipping a job whose caller has gone); one
    /// that does not fit is `carried` to the next gathering and ends this one (`false`).
    fn offer(&mut self, next: Job, carried: &mut Option<Job>) -> bool {
        if next.reply.is_closed() {
            return true;
        }
        if self.batch[0].fits_with(&next) && self.rows + next.rows() <= self.max_size {
            self.rows += next.rows();
            self.batch.push(next);
            true
        } else {
            *carried = Some(next);
            false
        }
    }
}

/// The inputs of several jobs joined along the first axis, and each job's rows.
pub(crate) fn join(batch: &mut [Job]) -> Result<(Vec<Tensor>, Vec<usize>)> {
    let counts: Vec<usize> = batch.iter().map(Job::rows).collect();
    let total: usize = counts.iter().sum();
    let mut columns: Vec<Vec<Tensor>> = Vec::new();
    for job in batch.iter_mut() {
        for (i, t) in std::mem::take(&mut job.inputs).into_iter().enumerate() {
            if columns.len() <= i {
                columns.push(Vec::new());
            }
            columns[i].push(t);
        }
    }
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
    Ok((inputs, counts))
}

/// A joined run's outputs, back into one piece per job by rows; an error when an output does
/// not have one row per input row (the model cannot be batched).
pub(crate) fn split(outputs: Vec<Tensor>, counts: &[usize]) -> Result<Vec<Vec<Tensor>>> {
    let total: usize = counts.iter().sum();
    let mut per_job: Vec<Vec<Tensor>> = counts.iter().map(|_| Vec::new()).collect();
    for t in outputs {
        if t.shape.first() != Some(&total) {
            return Err(Error::internal(format!(
                "output `{}` has shape {:?}, not {total} rows: this model cannot be batched",
                t.name, t.shape
            )));
        }
        // One job (no batch formed): the run's outputs are its own, as they are.
        if let [out] = &mut per_job[..] {
            out.push(t);
            continue;
        }
        let row: usize = t.shape[1..].iter().product();
        let pieces = t
            .data
            .split(&counts.iter().map(|c| c * row).collect::<Vec<_>>());
        for ((piece, &n), out) in pieces.into_iter().zip(counts).zip(per_job.iter_mut()) {
            let mut shape = t.shape.clone();
            shape[0] = n;
            out.push(Tensor::new(t.name.clone(), shape, piece)?);
        }
    }
    Ok(per_job)
}

/// Answers every job of a batch: its own outputs, or the batch's error.
pub(crate) fn answer_all(batch: Vec<Job>, result: Result<Vec<Vec<Tensor>>>) {
    answer_all_noted(batch, result, None);
}

/// [`answer_all`], each answer with the run's notes.
pub(crate) fn answer_all_noted(
    batch: Vec<Job>,
    result: Result<Vec<Vec<Tensor>>>,
    notes: Option<Notes>,
) {
    match result {
        Ok(per_job) => {
            for (job, tensors) in batch.into_iter().zip(per_job) {
                job.answer_noted(Ok(tensors), notes.clone());
            }
        }
        Err(e) => {
            for job in batch {
                job.answer_noted(Err(e.clone()), notes.clone());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn places_are_given_back_when_a_run_starts_or_a_job_goes() {
        let waiting = Waiting::new(2);
        let job = |place| {
            let (mut job, answer) = Job::new(Vec::new(), None);
            job.place = Some(place);
            (job, answer)
        };
        let (a, _ra) = job(waiting.enter("m").unwrap());
        let (b, _rb) = job(waiting.enter("m").unwrap());
        let full = waiting.enter("m").err().expect("a third waits for none");
        assert_eq!(full.kind, servegraph_engine::ErrorKind::Unavailable);
        assert_eq!(
            full.message,
            "model `m` is busy: 2 requests are already waiting for it (its queue_size)"
        );
        let mut batch = vec![a];
        started(&mut batch);
        assert_eq!(waiting.now(), 1);
        drop(b);
        assert_eq!(waiting.now(), 0);
        assert!(waiting.enter("m").is_ok());
    }
}
