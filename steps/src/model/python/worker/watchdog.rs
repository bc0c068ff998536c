//! The watchdog: a thread per worker that kills its process when a call (or the load)
//! overruns its deadline (`hang_kill_ms`, `load_timeout_ms`).

use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// The process a worker runs now and the deadline of what it is doing.
pub(super) struct Watchdog {
    /// The running process's id (0: none).
    pid: AtomicU32,
    /// When the current call (or load) must be over, in ms since `epoch` (0: no call).
    deadline_ms: AtomicU64,
    /// Set when the watchdog killed the process, so the failure says why.
    killed: AtomicBool,
    epoch: Instant,
}

impl Watchdog {
    pub(super) fn new() -> Watchdog {
        Watchdog {
            pid: AtomicU32::new(0),
            deadline_ms: AtomicU64::new(0),
            killed: AtomicBool::new(false),
            epoch: Instant::now(),
        }
    }

    /// The running process's id (0: none).
    pub(super) fn pid(&self) -> u32 {
        self.pid.load(Ordering::Relaxed)
    }

    /// Watches process `pid` from now on (0: none).
    pub(super) fn set_pid(&self, pid: u32) {
        self.pid.store(pid, Ordering::Relaxed);
    }

    /// What the process does now must be over `within`.
    pub(super) fn arm(&self, within: Duration) {
        let at = self.epoch.elapsed() + within;
        self.deadline_ms
            .store(at.as_millis().max(1) as u64, Ordering::Relaxed);
    }

    /// The process does nothing that must be over by a time.
    pub(super) fn disarm(&self) {
        self.deadline_ms.store(0, Ordering::Relaxed);
    }

    /// Whether the watchdog killed the process since this was last asked.
    pub(super) fn killed(&self) -> bool {
        self.killed.swap(false, Ordering::Relaxed)
    }

    /// Kills the process now (a worker answering nonsense), not as an overrun.
    pub(super) fn kill(&self) {
        if let Some(pid) = rustix::process::Pid::from_raw(self.pid() as i32) {
            let _ = rustix::process::kill_process(pid, rustix::process::Signal::KILL);
        }
    }

    /// Kills the process when a call overruns its deadline, until `stopping`.
    pub(super) fn run(&self, stopping: &AtomicBool) {
        while !stopping.load(Ordering::Relaxed) {
            std::thread::sleep(Duration::from_millis(20));
            let deadline = self.deadline_ms.load(Ordering::Relaxed);
            if deadline != 0 && self.epoch.elapsed().as_millis() as u64 > deadline {
                let pid = self.pid();
                if let Some(pid) = rustix::process::Pid::from_raw(pid as i32) {
                    self.killed.store(true, Ordering::Relaxed);
                    self.disarm();
                    let _ = rustix::process::kill_process(pid, rustix::process::Signal::KILL);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::process::ExitStatusExt;
    use std::sync::Arc;

    #[test]
    fn a_process_past_its_deadline_is_killed_and_one_within_it_is_not() {
        let (watchdog, stopping) = (Arc::new(Watchdog::new()), Arc::new(AtomicBool::new(false)));
        let thread = std::thread::spawn({
            let (watchdog, stopping) = (Arc::clone(&watchdog), Arc::clone(&stopping));
            move || watchdog.run(&stopping)
        });
        let mut child = std::process::Command::new("sleep")
            .arg("30")
            .spawn()
            .unwrap();
        watchdog.set_pid(child.id());
        // Within its deadline, then disarmed: it lives.
        watchdog.arm(Duration::from_secs(30));
        std::thread::sleep(Duration::from_millis(60));
        watchdog.disarm();
        std::thread::sleep(Duration::from_millis(60));
        assert!(child.try_wait().unwrap().is_none());
        assert!(!watchdog.killed());
        // Past it: killed, and the watchdog says so once.
        watchdog.arm(Duration::from_millis(10));
        let status = child.wait().unwrap();
        assert_eq!(status.signal(), Some(9));
        assert!(watchdog.killed());
        assert!(!watchdog.killed(), "said once");
        stopping.store(true, Ordering::Relaxed);
        thread.join().unwrap();
    }
}
