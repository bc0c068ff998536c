//! A worker process: spawning it (with the engine's runtime first on `PYTHONPATH`, its own
//! shared memory, a scrubbed environment), logging what it prints, the HELLO and LOAD
//! handshake under the load timeout, and reaping it.

use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use tokio::runtime::Handle;

use super::pipe::Io;
use super::{DEPTH, Shared, WorkerConfig};
use crate::model::python::error::WorkerError;
use crate::model::python::shm::Arena;
use crate::model::python::{frame, runtime};

/// Lines of a worker's output kept to explain a failed start.
const LAST_LINES: usize = 20;
/// How long a worker told to stop may take before it is killed.
const STOP_GRACE: Duration = Duration::from_secs(2);

/// A running worker process (its pipes are its [`Io`]).
pub(super) struct Process {
    child: Child,
}

impl Process {
    pub(super) fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Starts a worker and has it load the model (blocking I/O on its pipes, under the load
    /// timeout), then hands the pipes to the runtime.
    pub(super) fn start(
        index: usize,
        config: &WorkerConfig,
        shared: &Shared,
        handle: &Handle,
    ) -> Result<(Process, Io), WorkerError> {
        // Models load in parallel, a bounded number of processes at a time.
        let _slot = super::LoadSlot::take();
        if shared.stopping.load(Ordering::Relaxed) {
            return Err(WorkerError::Gone);
        }
        let runtime = runtime::dir()?;
        let mut python_path = runtime.display().to_string();
        if let Some((_, p)) = config.env.iter().find(|(k, _)| k == "PYTHONPATH") {
            python_path = format!("{python_path}:{p}");
        }
        let arena = match config.shm_bytes {
            0 => None,
            n => match Arena::new(n, DEPTH) {
                Ok(a) => Some(Arc::new(a)),
                Err(e) => {
                    tracing::warn!(model = %config.model, worker = index, error = %e, "no shared memory for the Python worker: large tensors go through its pipe");
                    None
                }
            },
        };
        let mut command = Command::new(&config.python);
        command
            .args(["-X", "faulthandler", "-u", "-m", "servegraph._worker"])
            .env_clear()
            .envs(config.env.iter().map(|(k, v)| (k.as_str(), v.as_str())));
        if let Some(arena) = &arena {
            arena.share_with(&mut command);
        }
        if let Some(dir) = &config.workdir {
            command.current_dir(dir);
        }
        let mut child = command
            .env("PYTHONPATH", python_path)
            .env("PYTHONUNBUFFERED", "1")
            .env("SERVEGRAPH_PARENT_PID", std::process::id().to_string())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|source| WorkerError::Spawn {
                python: config.python.clone(),
                source,
            })?;
        shared.watchdog.set_pid(child.id());
        let stderr = child.stderr.take().expect("piped");
        let (model, pid) = (config.model.clone(), child.id());
        let last = Arc::new(std::sync::Mutex::new(std::collections::VecDeque::new()));
        let log = std::thread::Builder::new()
            .name(format!("py-log-{index}"))
            .spawn({
                let last = Arc::clone(&last);
                move || {
                    use std::io::BufRead;
                    for line in std::io::BufReader::new(stderr).lines() {
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
        let mut input = child.stdin.take().expect("piped");
        let mut output = child.stdout.take().expect("piped");
        let mut p = Process { child };
        shared.watchdog.arm(config.load_timeout);
        let loading = std::time::Instant::now();
        let loaded = load(&mut input, &mut output, config);
        shared.watchdog.disarm();
        let failure = match loaded {
            Ok(()) => match Io::new(input, output, arena, handle) {
                Ok(io) => {
                    shared.loaded_once.store(true, Ordering::Relaxed);
                    servegraph_engine::metrics::model_loaded(&config.model, loading.elapsed());
                    return Ok((p, io));
                }
                Err(e) => e,
            },
            Err(e) => {
                drop((input, output));
                e
            }
        };
        let status = p.reap();
        let killed = shared.watchdog.killed();
        shared.watchdog.set_pid(0);
        Err(match failure {
            _ if killed => WorkerError::LoadTimeout {
                model: config.model.clone(),
                timeout_ms: config.load_timeout.as_millis(),
            },
            WorkerError::Gone => {
                // What it printed says why (an import error before the runtime ran).
                if let Some(log) = log {
                    let _ = log.join();
                }
                let printed = last.lock().expect("not poisoned").iter().cloned().collect();
                WorkerError::Exited {
                    python: config.python.clone(),
                    status,
                    printed,
                }
            }
            failure => failure,
        })
    }

    /// The exit status of a process that is gone or told to go (its pipes closed), killing
    /// it after [`STOP_GRACE`].
    pub(super) fn reap(&mut self) -> String {
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

/// HELLO, then LOAD → LOADED; an error says what Python said (type, message, traceback), and
/// is [`WorkerError::Gone`] when the worker went away (what it printed says why).
fn load(
    input: &mut ChildStdin,
    output: &mut ChildStdout,
    config: &WorkerConfig,
) -> Result<(), WorkerError> {
    let mut buf = Vec::new();
    let hello = frame::read(output, &mut buf)?.ok_or(WorkerError::Gone)?;
    if hello.kind != frame::HELLO {
        return Err(WorkerError::Greeting(hello.kind));
    }
    frame::write(
        input,
        &mut buf,
        frame::LOAD,
        0,
        Some(&config.load),
        &[],
        &[],
    )
    .map_err(|_| WorkerError::Gone)?;
    let reply = frame::read(output, &mut buf)?.ok_or(WorkerError::Gone)?;
    match reply.kind {
        frame::LOADED => {
            // The class reports its health (`health_status()`, `is_ready()`): the model probes it.
            if reply.meta.as_ref().is_some_and(|m| m["health"] == true) {
                config.health.reports.store(true, Ordering::Relaxed);
            }
            let bodies = match reply.meta.as_ref().map(|m| &m["bodies"]) {
                Some(p) if p == "mlrun" => super::BODIES_MLRUN,
                Some(p) if p == "seldon" => super::BODIES_SELDON,
                Some(p) if p == "kserve" => super::BODIES_KSERVE,
                _ => super::BODIES_NONE,
            };
            config.health.bodies.store(bodies, Ordering::Relaxed);
            // Loaded, though its class says it is not ready (a KServe model whose `ready` is
            // still False): not ready until the health probe hears otherwise.
            if let Some(why) = reply.meta.as_ref().and_then(|m| m["unready"].as_str()) {
                config
                    .health
                    .set(Some(format!("its class says it is not ready: {why}")));
            }
            if reply.meta.as_ref().is_some_and(|m| m["feedback"] == true) {
                config.health.takes_feedback.store(true, Ordering::Relaxed);
            }
            if reply.meta.as_ref().is_some_and(|m| m["request"] == true) {
                config.health.takes_request.store(true, Ordering::Relaxed);
            }
            // Not ready from the start (its class's own health check said so at load).
            if let Some(why) = reply.meta.as_ref().and_then(|m| m["unready"].as_str()) {
                config
                    .health
                    .set(Some(format!("its class says it is not ready: {why}")));
            }
            if let Some(m) = reply.meta.as_ref().and_then(|m| m.get("metadata")) {
                let mut metadata = config.health.metadata.lock().expect("not poisoned");
                metadata.get_or_insert_with(|| m.clone());
            }
            Ok(())
        }
        frame::LOAD_ERROR => Err(WorkerError::Load(frame::python_error(
            "could not load",
            reply.meta.as_ref(),
            true,
        ))),
        kind => Err(WorkerError::Answer { call: "LOAD", kind }),
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::process::ExitStatusExt;
    use std::process::ExitStatus;

    #[test]
    fn exit_statuses_in_words() {
        assert_eq!(describe(ExitStatus::from_raw(3 << 8)), "exit status 3");
        assert_eq!(
            describe(ExitStatus::from_raw(9)),
            "killed by signal 9, possibly out of memory"
        );
        assert_eq!(describe(ExitStatus::from_raw(11)), "killed by signal 11");
    }

    #[test]
    fn a_worker_that_exits_before_greeting_is_a_start_error_naming_the_interpreter() {
        let config = WorkerConfig {
            model: "gone".into(),
            workdir: None,
            python: "true".into(),
            env: Vec::new(),
            load: serde_json::Value::Null,
            load_timeout: Duration::from_secs(10),
            hang_kill: Duration::from_secs(10),
            max_requests: 0,
            max_rss_mb: 0,
            shm_bytes: 0,
            spin: Duration::ZERO,
            health: Default::default(),
            metrics: servegraph_engine::metrics::ModelMetrics::new("gone"),
        };
        let shared = Shared {
            watchdog: super::super::watchdog::Watchdog::new(),
            stopping: Default::default(),
            last_error: Default::default(),
            loaded_once: Default::default(),
        };
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let Err(error) = Process::start(0, &config, &shared, runtime.handle()) else {
            panic!("`true` is no Python worker");
        };
        assert_eq!(
            error.to_string(),
            "the Python worker (`true`) exited while starting (exit status 0)"
        );
        assert_eq!(shared.watchdog.pid(), 0, "forgotten");
        assert!(!shared.loaded_once.load(Ordering::Relaxed));
    }
}
