//! A worker's supervising thread: it serves each process on the runtime until the serving
//! task ends, then fails the calls a dead process had and starts it again (with backoff), or
//! replaces a process to recycle (the new one loaded before the old one stops), until the
//! model is let go.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use servegraph_engine::Error;
use tokio::runtime::Handle;

use super::pipe::Io;
use super::process::Process;
use super::serve::{Ended, serve};
use super::{Queue, Shared, WorkerConfig};
use crate::model::batch::{Batching, answer_all};

/// First and longest wait before starting a worker again after it exited.
const BACKOFF: (Duration, Duration) = (Duration::from_millis(500), Duration::from_secs(30));

/// What a worker's supervising thread needs.
pub(super) struct Supervisor {
    pub(super) index: usize,
    pub(super) config: Arc<WorkerConfig>,
    pub(super) queue: Queue,
    pub(super) batching: Option<Batching>,
    /// The model's count of workers loaded.
    pub(super) loaded: Arc<AtomicUsize>,
    pub(super) shared: Arc<Shared>,
    /// The runtime its serving tasks run on.
    pub(super) handle: Handle,
}

impl Supervisor {
    /// Serves the process on the runtime until it ends, then starts it again (with backoff)
    /// or replaces it; returns when the queue closes or the model is let go.
    pub(super) fn supervise(&self, started: Option<(Process, Io)>) {
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
                        shared.watchdog.set_pid(0);
                        self.loaded.fetch_sub(1, Ordering::Relaxed);
                        return;
                    }
                    Ended::Recycle(old, why) => {
                        serving = Some(self.replace(process, old, &why));
                        continue;
                    }
                    Ended::Failed(lost, why) => {
                        let killed = shared.watchdog.killed();
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
                        servegraph_engine::metrics::model_restarted(&config.model);
                        // Not counted as loaded before its callers hear why (readiness is
                        // honest).
                        shared.watchdog.set_pid(0);
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
                    *shared.last_error.lock().expect("not poisoned") = Some(e.to_string());
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
        let old_pid = process.pid();
        match Process::start(index, config, shared, &self.handle) {
            Ok(new) => {
                drop(old);
                process.reap();
                tracing::info!(model = %config.model, worker = index, old_pid, "Python worker replaced: {why}");
                new
            }
            Err(e) => {
                shared.watchdog.set_pid(old_pid);
                tracing::warn!(model = %config.model, worker = index, error = %e, "could not replace the Python worker ({why})");
                (process, old)
            }
        }
    }
}
