//! A bandit's learning on disk (`state_file`): an atomic snapshot, restored on start, owned by
//! the newest router.

use indexmap::IndexMap;
use servegraph_engine::{Error, Result};

use super::policy::Policy;
use super::{PolicyKind, Router};

/// A router's saved learning: each route's bandit numbers, by route name.
#[derive(serde::Serialize, serde::Deserialize)]
pub(super) struct Snapshot {
    pub(super) router: String,
    pub(super) policy: PolicyKind,
    /// When it was written (ms since the Unix epoch): a router that shares its learning
    /// replays the other replicas' rewards from then on.
    #[serde(default)]
    pub(super) saved_at_ms: Option<u64>,
    /// Which router wrote it: the newest owns the file.
    #[serde(default)]
    pub(super) generation: u64,
    pub(super) routes: IndexMap<String, crate::bandit::Arm>,
}

/// Just the owner of a snapshot file.
#[derive(serde::Deserialize)]
pub(super) struct Owner {
    #[serde(default)]
    pub(super) generation: u64,
}

impl Router {
    /// Writes the snapshot atomically (a temp file renamed over the old one).
    pub(super) fn save(&self) -> Result<()> {
        let (Some(path), Policy::Bandit(b)) = (&self.state_file, &self.policy) else {
            return Ok(());
        };
        let arms = b.lock().expect("not poisoned").arms().to_vec();
        let mut saved = self.saved.lock().expect("not poisoned");
        if *saved == arms {
            // Nothing learnt since the last snapshot (or the restore): nothing to write.
            return Ok(());
        }
        let generation = self.generation.load(std::sync::atomic::Ordering::Relaxed);
        let owner = std::fs::read(path)
            .ok()
            .and_then(|t| serde_json::from_slice::<Owner>(&t).ok())
            .map_or(0, |o| o.generation);
        if owner > generation {
            // A newer router (built by a reload) restored this state and owns the file now.
            tracing::debug!(router = %self.name, "the state file belongs to a newer router");
            return Ok(());
        }
        let snapshot = Snapshot {
            generation,
            router: self.name.clone(),
            policy: self.kind,
            saved_at_ms: std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .ok()
                .map(|d| d.as_millis() as u64),
            routes: self
                .routes
                .iter()
                .map(|r| r.key.clone())
                .zip(arms.iter().cloned())
                .collect(),
        };
        let tmp = path.with_extension("tmp");
        let text =
            serde_json::to_vec_pretty(&snapshot).map_err(|e| Error::internal(e.to_string()))?;
        std::fs::write(&tmp, text)
            .and_then(|_| std::fs::rename(&tmp, path))
            .map_err(|e| file_error(path, e))?;
        *saved = arms;
        Ok(())
    }

    /// Restores a snapshot, if there is one; routes it does not know start afresh.
    pub(super) fn load(&self) -> Result<()> {
        let (Some(path), Policy::Bandit(b)) = (&self.state_file, &self.policy) else {
            return Ok(());
        };
        *self.saved.lock().expect("not poisoned") = b.lock().expect("not poisoned").arms().to_vec();
        let text = match std::fs::read(path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(file_error(path, e)),
        };
        let snapshot: Snapshot = serde_json::from_slice(&text).map_err(|e| file_error(path, e))?;
        if snapshot.policy != self.kind {
            tracing::warn!(router = %self.name, file = %path.display(), "the saved state is of another policy; starting afresh");
            return Ok(());
        }
        let mut bandit = b.lock().expect("not poisoned");
        let mut stats = self.stats.lock().expect("not poisoned");
        for (i, r) in self.routes.iter().enumerate() {
            if let Some(arm) = snapshot.routes.get(&r.key) {
                stats[i] = (arm.pulls, arm.rewards, arm.reward_sum);
                bandit.restore(i, arm.clone());
            }
        }
        *self.saved.lock().expect("not poisoned") = bandit.arms().to_vec();
        self.generation.store(
            snapshot.generation + 1,
            std::sync::atomic::Ordering::Relaxed,
        );
        *self.restored_at.lock().expect("not poisoned") = snapshot
            .saved_at_ms
            .map(|ms| std::time::UNIX_EPOCH + std::time::Duration::from_millis(ms));
        tracing::info!(router = %self.name, file = %path.display(), "bandit state restored");
        Ok(())
    }
}

/// Reading, parsing or writing the state file at `path` failed.
fn file_error(path: &std::path::Path, e: impl std::fmt::Display) -> Error {
    Error::internal(format!("{}: {e}", path.display()))
}

impl Drop for Router {
    /// The last snapshot, when the graph is let go (at shutdown or reload).
    fn drop(&mut self) {
        if let Err(e) = self.save() {
            tracing::warn!(router = %self.name, error = %e, "could not save the bandit state");
        }
    }
}
