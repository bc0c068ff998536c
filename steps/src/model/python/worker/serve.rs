//! The task serving a loaded worker: a writer half takes jobs from the model's queue
//! (through the shared batcher) and writes calls up to [`DEPTH`] ahead, a reader half reads
//! the answers in order and answers the jobs; the watchdog is armed while calls are in flight,
//! and the task ends when the queue closes, the process goes away, or it should be recycled.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use servegraph_engine::{Error, ErrorKind, Result, Tensor};
use tokio::io::AsyncWriteExt;
use tokio::net::unix::pipe;

use super::pipe::{Io, Output, read_frame};
use super::{DEPTH, Queue, Shared, WorkerConfig};
use crate::model::batch::{
    Batching, Call, Job, Notes, answer_all, answer_all_noted, first_job, gather_async, join, split,
    started,
};
use crate::model::python::error::WorkerError;
use crate::model::python::frame::{self, Frame};
use crate::model::python::shm::Arena;
use crate::model::python::{BODY_NOTE, EXPLAINED_NOTE, OUTPUT_PARAMETERS_NOTE, PARAMETERS_NOTE};

/// How often (in calls) a worker's memory is read for `recycle.max_rss_mb`.
const RSS_EVERY: u64 = 16;

/// How a worker's serving task ended.
pub(super) enum Ended {
    /// The queue closed: the model was let go.
    Closed,
    /// The process went away during a call (or was killed by the watchdog): the jobs of the
    /// calls it had, to be failed once the process is reaped, and what reading it said.
    Failed(Vec<Job>, Option<WorkerError>),
    /// The process should be replaced (`recycle`): its pipes, kept open until the new one
    /// has loaded, and why.
    Recycle(Io, String),
}

/// What a serving task hands back: how it ended, and the jobs it took from the queue but
/// did not write (the next process takes them first).
pub(super) struct Served {
    pub(super) ended: Ended,
    pub(super) carried: Option<Job>,
    pub(super) unsent: Vec<Job>,
}

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
            self.shared.watchdog.arm(self.config.hang_kill);
        }
        *n += 1;
    }

    fn answered(&self) {
        let mut n = self.in_flight.lock().expect("not poisoned");
        *n -= 1;
        if *n == 0 {
            self.shared.watchdog.disarm();
        } else {
            self.shared.watchdog.arm(self.config.hang_kill);
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
pub(super) async fn serve(
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
        // Written to the worker, they wait no more (the worker runs them in order).
        started(&mut batch);
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
            None => {
                let batched = batch.len() > 1;
                (
                    frame::INFER,
                    infer_meta(parameters, &mut batch[0].call, batched),
                )
            }
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
) -> std::result::Result<(Output, Option<String>), (Vec<Job>, Option<WorkerError>)> {
    let config = &line.config;
    let (mut buf, mut calls, mut recycle) = (Vec::new(), 0, None);
    // When the worker finished its last call: a call written before that waited in the pipe.
    let mut free_since = Instant::now();
    let mut polling = Polling::default();
    while let Some(call) = pending.recv().await {
        // Alone in the pipeline, the answer is polled for a while (`spin_us`) first; with
        // another call behind it the worker is busy and the wait is not spent spinning...
        let alone = *line.in_flight.lock().expect("not poisoned") == 1;
        // ...and nothing waits in the queue (its lock held means the writer waits for a job).
        let idle = line.queue.try_lock().map_or(true, |jobs| jobs.is_empty());
        // ...and the model is quick and the CPUs are free (`Polling`).
        let spin = (alone && idle && !config.spin.is_zero() && polling.poll())
            .then(|| Instant::now() + config.spin);
        let read = read_streamed(line, &mut output, &mut buf, arena, spin, &call).await;
        let answer = match read {
            Ok(Some(reply)) if reply.call_id == call.id => {
                let kind = reply.kind;
                let quick = reply.flags & frame::QUICK != 0;
                let took = call.written.max(free_since).elapsed();
                polling.answered(spin.is_some(), quick, took, config.spin);
                answer_of(&config.model, reply).ok_or(Some(WorkerError::Answer {
                    call: "INFER",
                    kind,
                }))
            }
            Ok(Some(reply)) => Err(Some(WorkerError::OtherCall {
                answered: reply.call_id,
                waiting: call.id,
            })),
            Ok(None) => Err(None),
            Err(e) => Err(Some(e)),
        };
        let (result, notes) = match answer {
            Ok(answer) => answer,
            Err(why) => {
                line.stop();
                // A worker that answered nonsense may still be running, and not reading what
                // the writer is writing: it goes, so the writer's pipe breaks.
                line.shared.watchdog.kill();
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
        config
            .metrics
            .run_seconds
            .observe(free_since.saturating_duration_since(started));
        let result = match &call.counts {
            None => result.map(|t| vec![t]),
            Some(counts) => result.and_then(|t| split(t, counts)),
        };
        answer_all_noted(call.batch, result, notes);
        calls += 1;
        if recycle.is_none() {
            let pid = line.shared.watchdog.pid();
            recycle = recycle_reason(config, calls, pid);
            if recycle.is_some() {
                line.stop();
            }
        }
    }
    Ok((output, recycle))
}

/// When to poll for a lone call's answer rather than sleep until it comes. Polling pays for a
/// quick model, whose round trip is mostly wake-ups, and would only take a slow one's CPU: the
/// worker says whether its own run of a call was quick (`frame::QUICK`), which the round trip
/// seen here cannot tell (an answer not polled for carries the engine's own wake-up, tens of µs
/// on a VM, and judging by it kept polling off for good after one slow call). A quick model's
/// answer that still came after the whole polling window means the CPUs are taken (the
/// worker waited for one while this thread spun): polling then pauses for 1, 2, 4, ... 64
/// calls, and resumes at once when a polled answer comes in time again.
#[derive(Debug, Default)]
struct Polling {
    /// The worker's last call was not quick.
    slow_model: bool,
    /// Calls to leave unpolled, and how many the last pause was.
    skip: u32,
    pause: u32,
}

impl Polling {
    /// Whether to poll for the next answer.
    fn poll(&mut self) -> bool {
        if self.slow_model {
            return false;
        }
        if self.skip > 0 {
            self.skip -= 1;
            return false;
        }
        true
    }

    /// An answer came: whether it was polled for, whether the worker says its run was quick,
    /// and how long the round trip took against the polling window.
    fn answered(&mut self, polled: bool, quick: bool, took: Duration, window: Duration) {
        self.slow_model = !quick;
        if polled && quick {
            if took >= window {
                self.pause = (self.pause * 2).clamp(1, 64);
                self.skip = self.pause;
            } else {
                self.pause = 0;
            }
        }
    }
}

/// The call's answer frame, after the pieces of a streamed answer (CHUNK frames), each handed
/// to the job's sink as it comes. A sink that takes no piece within half of `hang_kill_ms`
/// (its reader stalled) or whose reader has gone gets no more: the pieces are still read, so
/// the worker is never left blocked on its pipe. Each piece is progress: the watchdog is armed
/// again.
async fn read_streamed(
    line: &Line,
    output: &mut Output,
    buf: &mut Vec<u8>,
    arena: Option<&Arena>,
    spin: Option<Instant>,
    call: &Pending,
) -> Result<Option<Frame>, WorkerError> {
    let mut sink = call.batch.first().and_then(|j| j.call.chunks.clone());
    loop {
        let read = read_frame(output, buf, arena, spin).await?;
        match read {
            Some(reply) if reply.kind == frame::CHUNK && reply.call_id == call.id => {
                line.shared.watchdog.arm(line.config.hang_kill);
                if let Some(s) = &sink {
                    let patience = line.config.hang_kill / 2;
                    let sent = tokio::time::timeout(patience, s.send(reply.tensors)).await;
                    if !matches!(sent, Ok(Ok(()))) {
                        sink = None;
                    }
                }
            }
            other => return Ok(other),
        }
    }
}

/// An INFER frame's JSON: the parameters, and a body, `/explain` or the request's headers
/// (and what goes with them) when the call has them. A `batched` call's request has no id: it
/// is several, as MLServer's adaptive batching joins them.
fn infer_meta(
    parameters: Option<Notes>,
    call: &mut Call,
    batched: bool,
) -> Option<serde_json::Value> {
    if parameters.is_none()
        && call.body.is_none()
        && !call.explain
        && call.chunks.is_none()
        && call.headers.is_none()
    {
        return None;
    }
    let mut meta = serde_json::Map::new();
    if let Some(p) = parameters {
        meta.insert("parameters".into(), p.into());
    }
    if let Some(headers) = call.headers.take() {
        // By name, the last of a repeated header winning (as a KServe class's dict has it).
        let headers: serde_json::Map<String, serde_json::Value> = headers
            .into_iter()
            .map(|(k, v)| (k, serde_json::Value::String(v)))
            .collect();
        meta.insert("headers".into(), headers.into());
        let id = if batched { None } else { call.id.clone() };
        meta.insert("id".into(), id.into());
        if let Some(own) = call.input_parameters.take() {
            meta.insert("input_parameters".into(), own.into());
        }
        if let Some(outputs) = call.requested_outputs.take() {
            meta.insert("requested_outputs".into(), outputs);
        }
        if call.grpc {
            meta.insert("grpc".into(), true.into());
        }
    }
    if let Some(body) = call.body.take() {
        meta.insert("body".into(), body);
        meta.insert("id".into(), call.id.take().into());
        if let Some(error) = call.error.take() {
            meta.insert("error".into(), error);
        }
    }
    if call.explain {
        meta.insert("explain".into(), true.into());
    }
    if call.chunks.is_some() {
        // A `predict` that yields sends each piece as a CHUNK, then its whole answer.
        meta.insert("stream".into(), true.into());
    }
    Some(meta.into())
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
            // Tags, the response's parameters a class added, and the body it answered with
            // (and whether it explained), as notes.
            let notes: Notes = [
                "tags",
                PARAMETERS_NOTE,
                OUTPUT_PARAMETERS_NOTE,
                BODY_NOTE,
                EXPLAINED_NOTE,
            ]
            .into_iter()
            .filter_map(|key| {
                let wire = key.trim_start_matches('$');
                Some((key.to_owned(), meta.get_mut(wire).map(std::mem::take)?))
            })
            .collect();
            Some((Ok(reply.tensors), (!notes.is_empty()).then_some(notes)))
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
            if !tb.is_empty() && servegraph_engine::logs::first_in_a_while(&(model, tb)) {
                tracing::warn!(model = %model, "a Python call failed (the same failure is logged again after a minute at the earliest):\n{}", tb.trim_end());
            } else {
                tracing::debug!(model = %model, traceback = %tb, "a Python call failed");
            }
            // An API's own error (MLServer's `MLServerError`) is answered with its message alone,
            // as that server answers it.
            let bare = meta.is_some_and(|m| m["bare"] == true);
            let message = match meta.and_then(|m| m["message"].as_str()) {
                Some(m) if bare => m.to_owned(),
                _ => frame::python_error("predict failed", meta, false),
            };
            let mut error = Error::new(ErrorKind::from_status(status), message);
            error.bare = bare;
            error.traceback = (!tb.is_empty()).then(|| tb.to_owned());
            error.step_failed = meta.and_then(|m| m["failed"].as_bool()).unwrap_or(false);
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

#[cfg(test)]
mod tests {
    use super::*;
    use servegraph_engine::TensorData;

    fn reply(kind: u8, meta: serde_json::Value) -> Frame {
        Frame {
            kind,
            flags: 0,
            call_id: 1,
            meta: Some(meta),
            tensors: Vec::new(),
        }
    }

    #[test]
    fn polling_follows_the_workers_word_and_pauses_while_the_cpus_are_taken() {
        let (window, fast, late) = (
            Duration::from_micros(200),
            Duration::from_micros(20),
            Duration::from_micros(250),
        );
        let mut p = Polling::default();
        assert!(p.poll(), "a new worker is polled for");
        // A slow model: not polled for, whatever the round trip; quick again: polled at once,
        // even though the unpolled answer's round trip (with the wake-up) was long.
        p.answered(true, false, late, window);
        assert!(!p.poll());
        p.answered(false, true, late, window);
        assert!(p.poll(), "an unpolled round trip does not keep polling off");
        // A quick model's polled answer after the whole window: pauses of 1, 2, 4 ... calls.
        for pause in [1, 2, 4, 8] {
            p.answered(true, true, late, window);
            for _ in 0..pause {
                assert!(!p.poll());
                p.answered(false, true, late, window);
            }
            assert!(p.poll(), "polling resumes after {pause} calls");
        }
        // The pause is bounded, and one polled answer in time ends the backing off.
        for _ in 0..10 {
            p.answered(true, true, late, window);
            while !p.poll() {}
        }
        assert_eq!(p.pause, 64);
        p.answered(true, true, fast, window);
        assert!(p.poll());
        p.answered(true, true, late, window);
        assert_eq!(
            p.skip, 1,
            "after an answer in time the pauses start again from one"
        );
    }

    #[test]
    fn an_error_frame_is_the_error_python_chose_without_its_traceback() {
        let meta = serde_json::json!({
            "type": "ModelError", "message": "empty image", "status": 400,
            "traceback": "Traceback ...\nModelError: empty image\n",
        });
        let (result, notes) = answer_of("m", reply(frame::ERROR, meta)).unwrap();
        let error = result.unwrap_err();
        assert_eq!(error.kind, ErrorKind::BadRequest);
        assert_eq!(error.message, "predict failed: ModelError: empty image");
        assert!(error.traceback.unwrap().starts_with("Traceback"));
        assert!(notes.is_none());
        // A status that is not an error's is 500.
        let meta = serde_json::json!({"type": "E", "message": "m", "status": 200});
        let (result, _) = answer_of("m", reply(frame::ERROR, meta)).unwrap();
        assert_eq!(result.unwrap_err().kind, ErrorKind::from_status(500));
    }

    #[test]
    fn results_and_replies_carry_their_notes_and_other_frames_are_nonsense() {
        let mut result = reply(frame::RESULT, serde_json::json!({"tags": {"a": 1}}));
        result.tensors = vec![Tensor::new("o", vec![1], TensorData::Fp32(vec![1.0])).unwrap()];
        let (tensors, notes) = answer_of("m", result).unwrap();
        assert_eq!(tensors.unwrap().len(), 1);
        assert_eq!(notes.unwrap()["tags"], serde_json::json!({"a": 1}));
        let (tensors, notes) = answer_of(
            "m",
            reply(frame::REPLY, serde_json::json!({"result": [1, 2]})),
        )
        .unwrap();
        assert!(tensors.unwrap().is_empty());
        assert_eq!(notes.unwrap()["operation"], serde_json::json!([1, 2]));
        assert!(answer_of("m", reply(frame::LOADED, serde_json::json!({}))).is_none());
    }
}
