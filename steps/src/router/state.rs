//! What a router learns ([`Learning`]): its bandit, the decisions awaiting feedback, its
//! counts. It outlives the router: a later build of the graph in the same serving process (a
//! reload, a change of the model repository) whose router has the same name, policy and arms
//! takes the same object again, as it is. Saved to `state_file` as an atomic snapshot,
//! restored when a router starts afresh, owned by the newest one.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

use indexmap::IndexMap;
use servegraph_engine::{Error, Result};

use super::PolicyKind;
use super::learning::SharedReward;
use crate::bandit::{Arm, Bandit};
use crate::contextual::{Contextual, RouteModel};

/// A decision kept for feedback, as [`Decisions::claim`] hands it out.
pub(super) struct Remembered {
    pub(super) route: Arc<str>,
    /// The probability the policy chose the route with.
    pub(super) propensity: f64,
    /// The request's features, when the router declares some (a contextual policy learns
    /// the reward with them).
    pub(super) context: Option<Box<[f64]>>,
}

/// What feedback for an id finds.
pub(super) enum Claim {
    /// Not remembered (never decided here, or pushed out by newer decisions).
    Unknown,
    /// Its reward was counted already.
    Rewarded,
    /// Its decision, now marked rewarded ([`Decisions::unclaim`] undoes that when the
    /// reward could not be learnt).
    Fresh(Remembered),
}

/// Response ids and the decision each took, kept for feedback: the `capacity` most recent.
///
/// On the request path of every deciding router, so built to cost little and never to make
/// requests wait on each other: the ids are spread by hash over independent shards (one
/// below [`Decisions::SHARDED_FROM`], so a small `remember` is exact), each a ring of slots
/// that is filled once and then overwritten oldest first, with an index from the id's hash
/// to its slot. Once the ring is full a decision allocates and frees nothing: the slot's id
/// and context buffers are reused. Each shard forgets its own oldest first, so with shards
/// the ids remembered are the most recent `capacity` give or take the hash's spread.
///
/// Bytes per decision: the slot (88) and its id (its length), the index (≈ 5 with its
/// spare room) and, with features, 8 per context number: with a 36-character id about
/// 130 + 8·d bytes (≈ 390 at d = 32; 100,000 remembered ≈ 39 MB).
pub(super) struct Decisions {
    shards: Box<[Mutex<Shard>]>,
    hasher: hashbrown::DefaultHashBuilder,
    pub(super) capacity: usize,
}

struct Shard {
    /// Slot by the id's hash (exact: a match compares the slot's id).
    index: hashbrown::HashTable<u32>,
    slots: Vec<Slot>,
    /// The slot the next decision overwrites once `slots` is full.
    next: usize,
    capacity: usize,
}

struct Slot {
    hash: u64,
    id: String,
    route: Arc<str>,
    rewarded: bool,
    propensity: f64,
    /// Empty without features (a context has at least its intercept).
    context: Vec<f64>,
}

impl Decisions {
    /// From this many remembered decisions on, they are kept in shards.
    const SHARDED_FROM: usize = 4096;
    const SHARDS: usize = 16;

    pub(super) fn new(capacity: usize) -> Decisions {
        let capacity = capacity.max(1);
        let n = if capacity >= Self::SHARDED_FROM {
            Self::SHARDS
        } else {
            1
        };
        let each = capacity.div_ceil(n);
        Decisions {
            shards: (0..n)
                .map(|_| {
                    Mutex::new(Shard {
                        index: hashbrown::HashTable::with_capacity(each),
                        slots: Vec::new(),
                        next: 0,
                        capacity: each,
                    })
                })
                .collect(),
            hasher: Default::default(),
            capacity,
        }
    }

    fn shard(&self, id: &str) -> (u64, std::sync::MutexGuard<'_, Shard>) {
        use std::hash::BuildHasher;
        let hash = self.hasher.hash_one(id);
        // Bits the shard's own table uses least (its bucket index takes the low bits, its
        // tags the top seven).
        let shard = (hash >> 32) as usize % self.shards.len();
        (hash, self.shards[shard].lock().expect("not poisoned"))
    }

    pub(super) fn remember(
        &self,
        id: &str,
        route: &Arc<str>,
        propensity: f64,
        context: Option<&[f64]>,
    ) {
        let (hash, mut guard) = self.shard(id);
        let Shard {
            index,
            slots,
            next,
            capacity,
        } = &mut *guard;
        let fill = |slot: &mut Slot| {
            if !Arc::ptr_eq(&slot.route, route) {
                slot.route = Arc::clone(route);
            }
            slot.rewarded = false;
            slot.propensity = propensity;
            slot.context.clear();
            if let Some(x) = context {
                slot.context.extend_from_slice(x);
            }
        };
        // The same id again (a client that reuses ids): its newest decision counts.
        if let Some(&i) = index.find(hash, |&i| slots[i as usize].id == id) {
            fill(&mut slots[i as usize]);
            return;
        }
        let i = if slots.len() < *capacity {
            slots.push(Slot {
                hash,
                id: id.to_owned(),
                route: Arc::clone(route),
                rewarded: false,
                propensity,
                context: context.map(<[f64]>::to_vec).unwrap_or_default(),
            });
            slots.len() - 1
        } else {
            let i = *next;
            *next = (i + 1) % *capacity;
            let old = &mut slots[i];
            if let Ok(entry) = index.find_entry(old.hash, |&j| j as usize == i) {
                entry.remove();
            }
            old.hash = hash;
            old.id.clear();
            old.id.push_str(id);
            fill(old);
            i
        };
        index.insert_unique(hash, i as u32, |&j| slots[j as usize].hash);
    }

    /// Feedback for `id`: its decision, marked rewarded so a second feedback for it is not
    /// counted twice (even one that arrives while the first is being learnt).
    pub(super) fn claim(&self, id: &str) -> Claim {
        let (hash, mut guard) = self.shard(id);
        let Shard { index, slots, .. } = &mut *guard;
        let Some(&i) = index.find(hash, |&i| slots[i as usize].id == id) else {
            return Claim::Unknown;
        };
        let slot = &mut slots[i as usize];
        if slot.rewarded {
            return Claim::Rewarded;
        }
        slot.rewarded = true;
        Claim::Fresh(Remembered {
            route: Arc::clone(&slot.route),
            propensity: slot.propensity,
            context: (!slot.context.is_empty()).then(|| slot.context.as_slice().into()),
        })
    }

    /// Undoes [`claim`](Self::claim): the reward was not learnt, so a retry may count.
    pub(super) fn unclaim(&self, id: &str) {
        let (hash, mut guard) = self.shard(id);
        let Shard { index, slots, .. } = &mut *guard;
        if let Some(&i) = index.find(hash, |&i| slots[i as usize].id == id) {
            slots[i as usize].rewarded = false;
        }
    }

    /// The route `id` went to, when it is remembered.
    pub(super) fn route_of(&self, id: &str) -> Option<Arc<str>> {
        let (hash, guard) = self.shard(id);
        guard
            .index
            .find(hash, |&i| guard.slots[i as usize].id == id)
            .map(|&i| Arc::clone(&guard.slots[i as usize].route))
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
    pub(super) decisions: Option<Decisions>,
    /// Requests that named their route instead (kept apart, so they never push the policy's
    /// decisions out): their feedback is answered with what happened.
    pub(super) named: Option<Decisions>,
    /// Per route: requests routed, rewards received, their sum.
    stats: Mutex<hashbrown::HashMap<String, (u64, u64, f64)>>,
    /// Per route: the policy's decisions and the feedback they took by id (what the
    /// experiment's readout reads).
    trials: Mutex<hashbrown::HashMap<String, Trial>>,
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
            decisions: s.remember.map(Decisions::new),
            named: s.remember.map(Decisions::new),
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
        let t = trials.entry_ref(route).or_default();
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
        let t = trials.entry_ref(route).or_default();
        t.min_p = Some(t.min_p.map_or(p, |m| m.min(p)));
    }

    /// A reward for `route`, counted.
    pub(super) fn record(&self, route: &str, reward: f64) {
        let mut stats = self.stats.lock().expect("not poisoned");
        let s = stats.entry_ref(route).or_default();
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

#[cfg(test)]
mod tests {
    use super::*;

    fn route(name: &str) -> Arc<str> {
        Arc::from(name)
    }

    fn fresh(d: &Decisions, id: &str) -> Option<(String, f64, Option<Vec<f64>>)> {
        match d.claim(id) {
            Claim::Fresh(r) => Some((
                r.route.to_string(),
                r.propensity,
                r.context.map(|c| c.to_vec()),
            )),
            _ => None,
        }
    }

    #[test]
    fn a_small_memory_forgets_exactly_the_oldest() {
        let d = Decisions::new(3);
        let a = route("a");
        for i in 0..5 {
            d.remember(&format!("id-{i}"), &a, 0.5, None);
        }
        // 0 and 1 were pushed out by 3 and 4, in order.
        assert!(matches!(d.claim("id-0"), Claim::Unknown));
        assert!(matches!(d.claim("id-1"), Claim::Unknown));
        for i in 2..5 {
            assert_eq!(fresh(&d, &format!("id-{i}")).unwrap().0, "a");
        }
    }

    #[test]
    fn a_claim_counts_once_and_an_unclaim_lets_a_retry_count() {
        let d = Decisions::new(10);
        d.remember("x", &route("b"), 0.25, Some(&[1.0, 2.0, 1.0]));
        assert_eq!(
            fresh(&d, "x"),
            Some(("b".into(), 0.25, Some(vec![1.0, 2.0, 1.0])))
        );
        assert!(matches!(d.claim("x"), Claim::Rewarded));
        d.unclaim("x");
        assert!(fresh(&d, "x").is_some());
        assert_eq!(d.route_of("x").as_deref(), Some("b"));
        assert_eq!(d.route_of("y"), None);
    }

    #[test]
    fn an_id_decided_again_takes_its_newest_decision() {
        let d = Decisions::new(2);
        d.remember("x", &route("a"), 0.5, Some(&[1.0, 1.0]));
        assert!(fresh(&d, "x").is_some());
        d.remember("x", &route("b"), 0.75, None);
        assert_eq!(fresh(&d, "x"), Some(("b".into(), 0.75, None)));
        // Still one slot: a second id fits beside it.
        d.remember("y", &route("a"), 0.5, None);
        assert_eq!(d.route_of("x").as_deref(), Some("b"));
        assert_eq!(d.route_of("y").as_deref(), Some("a"));
    }

    #[test]
    fn a_reused_slot_takes_the_new_decision_whole() {
        let d = Decisions::new(1);
        d.remember("long-id-with-context", &route("a"), 0.1, Some(&[3.0; 8]));
        d.remember("s", &route("b"), 0.9, Some(&[2.0]));
        assert!(matches!(d.claim("long-id-with-context"), Claim::Unknown));
        assert_eq!(fresh(&d, "s"), Some(("b".into(), 0.9, Some(vec![2.0]))));
        d.remember("t", &route("b"), 0.9, None);
        assert_eq!(fresh(&d, "t"), Some(("b".into(), 0.9, None)));
    }

    #[test]
    fn a_large_memory_keeps_about_its_capacity_across_its_shards() {
        let n = 10_000;
        let d = Decisions::new(n);
        assert_eq!(d.shards.len(), Decisions::SHARDS);
        let a = route("a");
        for i in 0..3 * n {
            d.remember(&format!("req-{i}"), &a, 1.0, None);
        }
        let kept = (0..3 * n)
            .filter(|i| d.route_of(&format!("req-{i}")).is_some())
            .count();
        // Each shard holds ⌈n/16⌉: the total is n rounded up to the shards.
        assert_eq!(kept, n.div_ceil(Decisions::SHARDS) * Decisions::SHARDS);
        // The most recent are kept: nothing older than 2n survives, nothing of the newest
        // n/2 is forgotten (the hash spreads ids evenly).
        assert!((0..n).all(|i| d.route_of(&format!("req-{i}")).is_none()));
        assert!((5 * n / 2..3 * n).all(|i| d.route_of(&format!("req-{i}")).is_some()));
    }
}
