//! The session pool: one worker thread per session, fed by one bounded queue, batching requests
//! of the same row shape adaptively.

use crossbeam_channel::Receiver;
use ort::session::Session;
use servegraph_engine::TensorMeta;

use super::Inline;
use super::convert::run;
use super::inline::thread_cpu;
use super::job::RunStats;
use crate::model::batch::{Batching, Job, answer_all, join, next_batch, split, started};

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
    let mut carried = None;
    while let Some(batch) = next_batch(&jobs, &mut carried, batching) {
        run_batch(&mut session, batch, &pool);
    }
}

/// Runs several jobs as one: inputs joined along the first axis, outputs split back by rows.
pub(super) fn run_batch(session: &mut Session, mut batch: Vec<Job>, pool: &Pool<'_>) {
    started(&mut batch);
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
    let result = (|| {
        let (inputs, counts) = join(&mut batch)?;
        let merged = run(session, inputs, outputs);
        ran();
        split(merged?, &counts)
    })();
    answer_all(batch, result);
}
