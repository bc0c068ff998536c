//! Running tiny models inline on the calling async worker: the warm-up that decides it, the
//! sessions per worker, and the watch that sends a model back to the pool when it slows down.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU8, AtomicU32, AtomicU64, Ordering};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use ort::session::Session;
use servegraph_engine::{Result, Tensor, TensorMeta};

use super::convert::run;
use super::job::RunStats;
use super::open_session;

/// Pool runs a model is watched for before it may run inline.
pub const WARMUP: u32 = 200;
/// Runs that take longer than this keep a model on the pool.
pub const INLINE_MAX: Duration = Duration::from_micros(50);
/// Inline runs slower than this, more than 10% of a window of [`WARMUP`] × 5, stop inline runs.
pub const INLINE_LIMIT: Duration = Duration::from_micros(200);

/// Scales [`INLINE_MAX`] and [`INLINE_LIMIT`] (an integer, default 1): for running under an
/// instrumenting profiler (`valgrind --tool=callgrind` runs code ~50× slower, so no model
/// would ever pass the warm-up and the profile would show the pool's path, not the one
/// served). `scripts/bench-instructions.sh` sets it; nothing else should.
pub const TIME_SCALE_ENV: &str = "SERVEGRAPH_INLINE_TIME_SCALE";

/// The scale from [`TIME_SCALE_ENV`], read once (1 when unset or not a positive integer).
fn time_scale() -> u64 {
    static SCALE: OnceLock<u64> = OnceLock::new();
    *SCALE.get_or_init(|| {
        std::env::var(TIME_SCALE_ENV)
            .ok()
            .and_then(|v| v.parse::<u64>().ok())
            .filter(|&n| n > 0)
            .unwrap_or(1)
    })
}

/// One inline run in this many has its CPU time taken (a system call each end) for the watch.
const SAMPLE: u32 = 8;

pub(super) const WARMING: u8 = 0;
pub(super) const INLINE: u8 = 1;
pub(super) const POOL: u8 = 2;

/// Whether a model runs inline, and the sessions it runs inline with.
pub struct Inline {
    /// [`INLINE_MAX`] and [`INLINE_LIMIT`], in nanoseconds (tests loosen them).
    pub(super) max_ns: AtomicU64,
    pub(super) limit_ns: AtomicU64,
    pub(super) state: AtomicU8,
    pub(super) runs: AtomicU32,
    pub(super) slow: AtomicU32,
    pub(super) sessions: OnceLock<Vec<Mutex<Session>>>,
    pub(super) path: PathBuf,
}

thread_local! {
    /// The inline session this thread tries first (threads spread over the sessions).
    static SLOT: std::cell::Cell<Option<usize>> = const { std::cell::Cell::new(None) };
    /// Inline runs on this thread, for sampling their CPU time.
    static RUNS: std::cell::Cell<u32> = const { std::cell::Cell::new(0) };
}

/// The calling thread's CPU time so far. Runs are judged by it, not by wall time: on a busy
/// pod (one core, or cores shared with the load) wall time counts every other thread's turn
/// that preempted the run, and would keep a 3 µs model off the inline path for good.
pub(super) fn thread_cpu() -> Duration {
    let t = rustix::time::clock_gettime(rustix::time::ClockId::ThreadCPUTime);
    Duration::new(t.tv_sec as u64, t.tv_nsec as u32)
}

/// Runs `f`, with its CPU time on one call in [`SAMPLE`] (`None` on the others).
pub(super) fn sampled<R>(f: impl FnOnce() -> R) -> (R, Option<Duration>) {
    let n = RUNS.with(|r| {
        let n = r.get().wrapping_add(1);
        r.set(n);
        n
    });
    if !n.is_multiple_of(SAMPLE) {
        return (f(), None);
    }
    let start = thread_cpu();
    let out = f();
    (out, Some(thread_cpu().saturating_sub(start)))
}

impl Inline {
    pub(super) fn new(enabled: bool, path: &Path) -> Inline {
        Inline {
            max_ns: AtomicU64::new(INLINE_MAX.as_nanos() as u64 * time_scale()),
            limit_ns: AtomicU64::new(INLINE_LIMIT.as_nanos() as u64 * time_scale()),
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

    /// Whether pool runs are still watched (their CPU time decides).
    pub(super) fn warming(&self) -> bool {
        self.state.load(Ordering::Relaxed) == WARMING
    }

    /// A pool run (of one job or a batch: a single one costs no more) took `took` of the pool
    /// thread's CPU time. Called on a pool thread, which may open the inline sessions: a few
    /// milliseconds, once.
    pub(super) fn pool_ran(&self, model: &str, took: Duration) {
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
        let opened: Result<Vec<_>> = (0..threads)
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
    pub(super) fn with_session<R>(&self, f: impl FnOnce(&mut Session) -> R) -> Option<R> {
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
    pub(super) fn try_run(
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
            let (result, cpu) = sampled(|| run(session, inputs.take().expect("once"), outputs));
            (result, start.elapsed(), cpu)
        });
        match ran {
            Some((result, took, cpu)) => {
                stats.metrics.run_seconds.observe(took);
                if let Some(cpu) = cpu {
                    self.inline_ran(model, cpu);
                }
                Ok((result, took))
            }
            None => Err(inputs.take().expect("not run")),
        }
    }

    /// A sampled inline run took `took` of CPU time: the watch over a window of
    /// [`WARMUP`] × 5 samples.
    pub(super) fn inline_ran(&self, model: &str, took: Duration) {
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
