//! The session pool: one worker thread per session, fed by one bounded queue, batching requests
//! of the same row shape adaptively.

use std::time::Instant;

use crossbeam_channel::{Receiver, RecvTimeoutError, TryRecvError};
use ort::session::Session;
use servegraph_engine::{Error, Result, Tensor, TensorData, TensorMeta};

use super::Inline;
use super::convert::run;
use super::inline::thread_cpu;
use super::job::{Batching, Job, RunStats};

/// What a pool thread shares with its model.
pub(super) struct Pool<'a> {
    pub(super) outputs: &'a [TensorMeta],
    pub(super) stats: &'a RunStats,
    pub(super) inline: &'a Inline,
    pub(super) model: &'a str,
}

pub(super) fn worker(
    mut session: Session,
    jobs: Receiver<Job>,
    batching: Option<Batching>,
    pool: Pool<'_>,
) {
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
pub(super) fn run_batch(session: &mut Session, mut batch: Vec<Job>, pool: &Pool<'_>) {
    let (outputs, stats) = (pool.outputs, pool.stats);
    let start = stats.starting(&batch);
    let cpu = pool.inline.warming().then(thread_cpu);
    let ran = || stats.metrics.run_seconds.observe(start.elapsed());
    let watched = || {
        if let Some(cpu) = cpu {
            pool.inline
                .pool_ran(pool.model, thread_cpu().saturating_sub(cpu));
        }
    };
    if batch.len() == 1 {
        let mut job = batch.pop().expect("one job");
        let inputs = std::mem::take(&mut job.inputs);
        let result = {
            let _entered = job.span.enter();
            run(session, inputs, outputs)
        };
        ran();
        watched();
        job.answer(result);
        return;
    }
    let ran = || {
        ran();
        watched();
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
