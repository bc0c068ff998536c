//! What a router learns ([`Learning`]): its bandit, the decisions awaiting feedback, its
//! counts. It outlives the router: a later build of the graph in the same serving process (a
//! reload, a change of the model repository) whose router has the same name, policy and arms
//! takes the same object again, as it is. Saved to `state_file` as an atomic snapshot,
//! restored when a router starts afresh, owned by the newest one.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

use indexmap::IndexMap;
use servegraph_engine::{Error, Result};

use super::PolicyKind;
use super::learning::SharedReward;
use crate::bandit::{Arm, Bandit};
use crate::contextual::{Contextual, RouteModel};

/// A decision kept for feedback.
pub(super) struct Remembered {
    pub(super) route: Arc<str>,
    /// Its reward was counted.
    pub(super) rewarded: bool,
    /// The probability the policy chose the route with.
    pub(super) propensity: f64,
    /// The request's features, when the router declares some (a contextual policy learns
    /// the reward with them).
    pub(super) context: Option<Box<[f64]>>,
}

/// Response ids and the decision each took, kept for feedback (the `capacity` most recent).
/// Bytes per decision: the id twice (map key and queue, 2 × (24 + id length)), the entry (56
/// with the map's own overhead ≈ 100 in all) and, with features, 8 per context number: with
/// a 36-character id about 220 + 8·d bytes (≈ 480 at d = 32; 100,000 remembered ≈ 48 MB).
pub(super) struct Decisions {
    pub(super) routes: HashMap<String, Remembered>,
    order: VecDeque<String>,
    pub(super) capacity: usize,
}

impl Decisions {
    pub(super) fn new(capacity: usize) -> Decisions {
        Decisions {
            routes: HashMap::new(),
            order: VecDeque::new(),
            capacity,
        }
    }

    pub(super) fn remember(
        &mut self,
        id: &str,
        route: &Arc<str>,
        propensity: f64,
        context: Option<Box<[f64]>>,
    ) {
        let entry = Remembered {
            route: Arc::clone(route),
            rewarded: false,
            propensity,
            context,
        };
        if self.routes.insert(id.to_owned(), entry).is_none() {
            self.order.push_back(id.to_owned());
            while self.order.len() > self.capacity {
                if let Some(old) = self.order.pop_front() {
                    self.routes.remove(&old);
                }
            }
        }
    }
}

/// A router's learning (see the module's documentation).
pub(super) struct Learning {
    pub(super) router: String,
    pub(super) kind: PolicyKind,
    /// The routes the policy chooses among, by key: the bandit's arms, in order.
    pub(super) arms: Vec<String>,
    pub(super) bandit: Option<Mutex<Bandit>>,
    /// A contextual policy's models (its arms, in order).
    pub(super) contextual: Option<Mutex<Contextual>>,
    /// Decisions the policy made, for feedback (not with `path`).
    pub(super) decisions: Option<Mutex<Decisions>>,
    /// Requests that named their route instead (kept apart, so they never push the policy's
    /// decisions out): their feedback is answered with what happened.
    pub(super) named: Option<Mutex<Decisions>>,
    /// Per route: requests routed, rewards received, their sum.
    stats: Mutex<HashMap<String, (u64, u64, f64)>>,
    /// Per route: the policy's decisions and the feedback they took by id (what the
    /// experiment's readout reads).
    trials: Mutex<HashMap<String, Trial>>,
    /// The routes of the newest router that uses it (what shared updates may name).
    pub(super) routes: Mutex<Vec<String>>,
    /// Where the bandit's learning is saved.
    pub(super) state_file: Option<std::path::PathBuf>,
    /// The arms as last saved or restored.
    saved: Mutex<Vec<Arm>>,
    /// A contextual policy's rewards learnt as of the last save or restore.
    saved_learnt: Mutex<Option<u64>>,
    /// When the restored snapshot was saved: sharing replays what was published since.
    pub(super) restored_at: Mutex<Option<std::time::SystemTime>>,
    /// One more than the restored snapshot's: learning restored by a later build (or a
    /// restart) owns the file from then on, and the one it replaced no longer writes it.
    generation: AtomicU64,
    /// Brokers and topic the learning is shared through.
    pub(super) share: Option<(String, String)>,
    /// Where rewards taken here go, for the other replicas (once sharing started).
    pub(super) outbox: OnceLock<tokio::sync::mpsc::Sender<Vec<u8>>>,
}

/// What [`Learning::new`] is made from.
pub(super) struct Settings {
    pub(super) router: String,
    pub(super) kind: PolicyKind,
    pub(super) arms: Vec<String>,
    pub(super) bandit: Option<Bandit>,
    pub(super) contextual: Option<Contextual>,
    /// Remember decisions for feedback, this many.
    pub(super) remember: Option<usize>,
    pub(super) state_file: Option<std::path::PathBuf>,
    pub(super) share: Option<(String, String)>,
}

impl Learning {
    pub(super) fn new(s: Settings) -> Learning {
        Learning {
            router: s.router,
            kind: s.kind,
            arms: s.arms,
            bandit: s.bandit.map(Mutex::new),
            contextual: s.contextual.map(Mutex::new),
            decisions: s.remember.map(|n| Mutex::new(Decisions::new(n))),
            named: s.remember.map(|n| Mutex::new(Decisions::new(n))),
            stats: Default::default(),
            trials: Default::default(),
            routes: Default::default(),
            state_file: s.state_file,
            saved: Mutex::new(Vec::new()),
            saved_learnt: Mutex::new(None),
            restored_at: Mutex::new(None),
            generation: AtomicU64::new(1),
            share: s.share,
            outbox: OnceLock::new(),
        }
    }

    /// A request went to `route`.
    pub(super) fn pulled(&self, route: &str) {
        let mut stats = self.stats.lock().expect("not poisoned");
        match stats.get_mut(route) {
            Some(s) => s.0 += 1,
            None => {
                stats.insert(route.to_owned(), (1, 0, 0.0));
            }
        }
    }

    /// The generation of this learning (one more than the snapshot it restored).
    pub(super) fn generation(&self) -> u64 {
        self.generation.load(Ordering::Relaxed)
    }

    /// The policy chose `route`.
    pub(super) fn decided(&self, route: &str) {
        let mut trials = self.trials.lock().expect("not poisoned");
        match trials.get_mut(route) {
            Some(t) => t.decided += 1,
            None => {
                trials.insert(
                    route.to_owned(),
                    Trial {
                        decided: 1,
                        ..Trial::default()
                    },
                );
            }
        }
    }

    /// A reward for a decision of the policy that chose `route` with `propensity`.
    pub(super) fn trial_rewarded(&self, route: &str, propensity: f64, reward: f64) {
        let mut trials = self.trials.lock().expect("not poisoned");
        let t = trials.entry(route.to_owned()).or_default();
        t.rewarded += 1;
        t.sum += reward;
        t.sum_sq += reward * reward;
        if propensity > 0.0 {
            t.weighted.add(propensity, reward);
        }
    }

    /// Every route's trial, as of now.
    pub(super) fn trial(&self, route: &str) -> Trial {
        self.trials
            .lock()
            .expect("not poisoned")
            .get(route)
            .cloned()
            .unwrap_or_default()
    }

    /// Keeps the running minimum of `route`'s always-valid p-value.
    pub(super) fn reported_p(&self, route: &str, p: f64) {
        let mut trials = self.trials.lock().expect("not poisoned");
        let t = trials.entry(route.to_owned()).or_default();
        t.min_p = Some(t.min_p.map_or(p, |m| m.min(p)));
    }

    /// A reward for `route`, counted.
    pub(super) fn record(&self, route: &str, reward: f64) {
        let mut stats = self.stats.lock().expect("not poisoned");
        let s = stats.entry(route.to_owned()).or_default();
        s.1 += 1;
        s.2 += reward;
    }

    /// `route`'s counts: requests routed, rewards received, their sum.
    pub(super) fn counts(&self, route: &str) -> (u64, u64, f64) {
        self.stats
            .lock()
            .expect("not poisoned")
            .get(route)
            .copied()
            .unwrap_or_default()
    }

    /// A reward for `route` (chosen on `context`, when known): the policy learns it when the
    /// route is one of its arms (a route outside the experiment is only counted). A
    /// contextual policy needs the context: a reward without one is refused, never learnt
    /// as if from another request.
    pub(super) fn credit(&self, route: &str, reward: f64, context: Option<&[f64]>) -> Result<()> {
        if let Some(c) = &self.contextual
            && let Some(arm) = self.arms.iter().position(|a| a == route)
        {
            let Some(x) = context else {
                return Err(Error::unprocessable(format!(
                    "router `{}` is contextual ({}): it learns from feedback on its own decisions,                      by response id, with the features of the request; a reward for route `{route}`                      alone cannot teach it",
                    self.router,
                    self.kind.as_str()
                )));
            };
            c.lock()
                .expect("not poisoned")
                .learn(arm, x, reward)
                .map_err(|e| Error::unprocessable(format!("router `{}`: {e}", self.router)))?;
        }
        if let Some(bandit) = &self.bandit
            && let Some(arm) = self.arms.iter().position(|a| a == route)
        {
            bandit
                .lock()
                .expect("not poisoned")
                .reward(arm, reward)
                .map_err(Error::unprocessable)?;
        }
        self.record(route, reward);
        Ok(())
    }

    /// Hands a reward taken here to the other replicas, when sharing; never waits.
    pub(super) fn publish(&self, route: &str, reward: f64, context: Option<&[f64]>) {
        let Some(outbox) = self.outbox.get() else {
            return;
        };
        let update = SharedReward {
            router: self.router.clone(),
            route: route.to_owned(),
            reward,
            context: context.map(<[f64]>::to_vec),
        };
        let bytes = serde_json::to_vec(&update).expect("plain data serializes");
        if outbox.try_send(bytes).is_err() {
            tracing::warn!(router = %self.router, "the learning outbox is full: an update was not shared");
        }
    }

    /// Writes the snapshot atomically (a temp file renamed over the old one).
    pub(super) fn save(&self) -> Result<()> {
        let Some(path) = &self.state_file else {
            return Ok(());
        };
        if let Some(c) = &self.contextual {
            let state = c.lock().expect("not poisoned").state();
            let learnt: u64 = state.routes.iter().map(|m| m.n).sum();
            let mut saved = self.saved_learnt.lock().expect("not poisoned");
            if *saved == Some(learnt) {
                return Ok(());
            }
            let arms = self
                .arms
                .iter()
                .map(|key| {
                    let (pulls, rewards, reward_sum) = self.counts(key);
                    Arm {
                        pulls,
                        rewards,
                        reward_sum,
                        ..Arm::default()
                    }
                })
                .collect::<Vec<_>>();
            let models = self.arms.iter().cloned().zip(state.routes).collect();
            self.write(path, &arms, Some(models))?;
            *saved = Some(learnt);
            return Ok(());
        }
        let Some(b) = &self.bandit else {
            return Ok(());
        };
        let arms = b.lock().expect("not poisoned").arms().to_vec();
        let mut saved = self.saved.lock().expect("not poisoned");
        if *saved == arms {
            // Nothing learnt since the last snapshot (or the restore): nothing to write.
            return Ok(());
        }
        self.write(path, &arms, None)?;
        *saved = arms;
        Ok(())
    }

    /// Writes a snapshot of these arms (and a contextual policy's models) to `path`, unless a
    /// newer learning owns the file.
    fn write(
        &self,
        path: &std::path::Path,
        arms: &[Arm],
        models: Option<IndexMap<String, RouteModel>>,
    ) -> Result<()> {
        let generation = self.generation.load(Ordering::Relaxed);
        let owner = std::fs::read(path)
            .ok()
            .and_then(|t| serde_json::from_slice::<Owner>(&t).ok())
            .map_or(0, |o| o.generation);
        if owner > generation {
            // Newer learning (restored by a later build) owns this file now.
            tracing::debug!(router = %self.router, "the state file belongs to a newer router");
            return Ok(());
        }
        let snapshot = Snapshot {
            generation,
            router: self.router.clone(),
            policy: self.kind,
            saved_at_ms: std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .ok()
                .map(|d| d.as_millis() as u64),
            routes: self
                .arms
                .iter()
                .cloned()
                .zip(arms.iter().cloned())
                .collect(),
            models,
        };
        let tmp = path.with_extension("tmp");
        let text =
            serde_json::to_vec_pretty(&snapshot).map_err(|e| Error::internal(e.to_string()))?;
        std::fs::write(&tmp, text)
            .and_then(|_| std::fs::rename(&tmp, path))
            .map_err(|e| file_error(path, e))?;
        Ok(())
    }

    /// Restores a snapshot, if there is one; arms it does not know start afresh.
    pub(super) fn load(&self) -> Result<()> {
        let Some(path) = &self.state_file else {
            return Ok(());
        };
        if self.contextual.is_some() {
            return self.load_contextual(path);
        }
        let Some(b) = &self.bandit else {
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
            tracing::warn!(router = %self.router, file = %path.display(), "the saved state is of another policy; starting afresh");
            return Ok(());
        }
        let mut bandit = b.lock().expect("not poisoned");
        let mut stats = self.stats.lock().expect("not poisoned");
        for (i, key) in self.arms.iter().enumerate() {
            if let Some(arm) = snapshot.routes.get(key) {
                stats.insert(key.clone(), (arm.pulls, arm.rewards, arm.reward_sum));
                bandit.restore(i, arm.clone());
            }
        }
        *self.saved.lock().expect("not poisoned") = bandit.arms().to_vec();
        self.generation
            .store(snapshot.generation + 1, Ordering::Relaxed);
        *self.restored_at.lock().expect("not poisoned") = snapshot
            .saved_at_ms
            .map(|ms| std::time::UNIX_EPOCH + std::time::Duration::from_millis(ms));
        tracing::info!(router = %self.router, file = %path.display(), "bandit state restored");
        Ok(())
    }

    /// Restores a contextual policy's snapshot, if there is one of the same policy and
    /// features (the same number of them); routes it does not know start afresh.
    fn load_contextual(&self, path: &std::path::Path) -> Result<()> {
        let c = self.contextual.as_ref().expect("contextual");
        let text = match std::fs::read(path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(file_error(path, e)),
        };
        let snapshot: Snapshot = serde_json::from_slice(&text).map_err(|e| file_error(path, e))?;
        let Some(models) = snapshot.models.filter(|_| snapshot.policy == self.kind) else {
            tracing::warn!(router = %self.router, file = %path.display(), "the saved state is of another policy; starting afresh");
            return Ok(());
        };
        let mut policy = c.lock().expect("not poisoned");
        let dim = policy.dim();
        if models.values().any(|m| m.b.len() != dim) {
            tracing::warn!(router = %self.router, file = %path.display(), dim, "the saved state has another number of features; starting afresh");
            return Ok(());
        }
        let mut stats = self.stats.lock().expect("not poisoned");
        for (i, key) in self.arms.iter().enumerate() {
            if let Some(model) = models.get(key) {
                policy
                    .restore(i, model.clone())
                    .map_err(|e| file_error(path, e))?;
            }
            if let Some(arm) = snapshot.routes.get(key) {
                stats.insert(key.clone(), (arm.pulls, arm.rewards, arm.reward_sum));
            }
        }
        *self.saved_learnt.lock().expect("not poisoned") = Some(policy.learnt());
        self.generation
            .store(snapshot.generation + 1, Ordering::Relaxed);
        *self.restored_at.lock().expect("not poisoned") = snapshot
            .saved_at_ms
            .map(|ms| std::time::UNIX_EPOCH + std::time::Duration::from_millis(ms));
        tracing::info!(router = %self.router, file = %path.display(), "contextual state restored");
        Ok(())
    }

    /// Saves a snapshot every `every` while the learning lives (the task holds it weakly).
    pub(super) fn save_every(self: &Arc<Self>, every: std::time::Duration) {
        if self.state_file.is_none() {
            return;
        }
        let Ok(rt) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let weak = Arc::downgrade(self);
        rt.spawn(async move {
            let mut tick = tokio::time::interval(every);
            tick.tick().await;
            loop {
                tick.tick().await;
                let Some(l) = weak.upgrade() else { return };
                if let Err(e) = l.save() {
                    tracing::warn!(router = %l.router, error = %e, "could not save the bandit state");
                }
            }
        });
    }
}

impl servegraph_engine::Replicated for Learning {
    fn connect(&self, outbox: tokio::sync::mpsc::Sender<Vec<u8>>) {
        let _ = self.outbox.set(outbox);
    }

    fn learn(&self, message: &[u8]) -> Result<()> {
        let update: SharedReward = serde_json::from_slice(message)
            .map_err(|e| Error::bad_request(format!("malformed update: {e}")))?;
        if update.router != self.router {
            return Err(Error::bad_request(format!(
                "an update for router `{}` reached router `{}`",
                update.router, self.router
            )));
        }
        if !self
            .routes
            .lock()
            .expect("not poisoned")
            .contains(&update.route)
        {
            return Err(Error::not_found(format!(
                "router `{}` has no route `{}`",
                self.router, update.route
            )));
        }
        self.credit(&update.route, update.reward, update.context.as_deref())
    }
}

/// A route's part in the experiment: the policy's decisions that chose it, the rewards they
/// took by id (count, sum, sum of squares, and weighted by the inverse of the probability of
/// each choice), and the smallest always-valid p-value reported so far.
#[derive(Clone, Debug, Default)]
pub(super) struct Trial {
    pub(super) decided: u64,
    pub(super) rewarded: u64,
    pub(super) sum: f64,
    pub(super) sum_sq: f64,
    pub(super) weighted: servegraph_engine::experiment::Weighted,
    pub(super) min_p: Option<f64>,
}

/// A router's saved learning: each arm's bandit numbers, by route name.
#[derive(serde::Serialize, serde::Deserialize)]
struct Snapshot {
    router: String,
    policy: PolicyKind,
    /// When it was written (ms since the Unix epoch): a router that shares its learning
    /// replays the other replicas' rewards from then on.
    #[serde(default)]
    saved_at_ms: Option<u64>,
    /// Which learning wrote it: the newest owns the file.
    #[serde(default)]
    generation: u64,
    routes: IndexMap<String, Arm>,
    /// A contextual policy's ridge regressions, by route (A⁻¹, b, rewards learnt).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    models: Option<IndexMap<String, RouteModel>>,
}

/// Just the owner of a snapshot file.
#[derive(serde::Deserialize)]
struct Owner {
    #[serde(default)]
    generation: u64,
}

/// Reading, parsing or writing the state file at `path` failed.
fn file_error(path: &std::path::Path, e: impl std::fmt::Display) -> Error {
    Error::internal(format!("{}: {e}", path.display()))
}

impl Drop for Learning {
    /// The last snapshot, when no graph uses it any more (at shutdown, or after a build
    /// whose router learns afresh).
    fn drop(&mut self) {
        if let Err(e) = self.save() {
            tracing::warn!(router = %self.router, error = %e, "could not save the bandit state");
        }
    }
}
