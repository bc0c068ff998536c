//! Steps that learn from feedback (routers whose policy is a bandit, and every router for
//! its counts): the one optional interface a [`Step`](crate::Step) offers through
//! [`Step::learner`](crate::Step::learner), the typed stats that `/stats` and `/metrics`
//! read, and how a learner shares its learning with the other replicas of its graph.

use std::sync::Arc;

use serde::Serialize;

use crate::error::Result;

/// What a step that learns offers: rewards in, state saved, learning shared, stats out.
pub trait Learner: Send + Sync {
    /// A reward for the response `id` this step routed: `Ok(true)` when counted, `Ok(false)`
    /// when that id's reward was already counted; a not-found error when the id is unknown
    /// (or the policy takes no feedback).
    fn feedback(&self, id: &str, reward: f64) -> Result<bool>;

    /// A reward for a route by name (feedback that names the route, not a remembered id).
    fn feedback_route(&self, route: &str, reward: f64) -> Result<()>;

    /// Saves what the step learnt, where it keeps it (a router's `state_file`): called before
    /// a reload builds the graph again, so the new step restores the latest state.
    fn checkpoint(&self) {}

    /// Where and how the graph's replicas share this step's learning (`policy.share`).
    fn share(&self) -> Option<ShareLink> {
        None
    }

    /// What the step has learnt, for `GET /v2/models/{name}/stats` and `/metrics`.
    fn stats(&self) -> LearnerStats;
}

/// A router's counts: what `GET /v2/models/{router}/stats` answers.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct LearnerStats {
    pub router: String,
    /// The policy type (`weighted`, `epsilon_greedy`, …).
    pub policy: String,
    pub routes: Vec<RouteStats>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub shadow: Option<ShadowStats>,
    /// The experiment's readout (weighted and bandit routers; see `experiment`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub readout: Option<crate::experiment::Readout>,
}

/// One route's counts.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct RouteStats {
    pub route: String,
    /// Requests routed to it.
    pub pulls: u64,
    /// Rewards taken for it.
    pub rewards: u64,
    pub reward_sum: f64,
    pub reward_mean: f64,
    /// What a bandit policy currently believes the route is worth.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub estimate: Option<f64>,
}

/// The copies a shadow route was sent, skipped (too many in flight) and failed.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct ShadowStats {
    pub route: String,
    pub sent: u64,
    pub skipped: u64,
    pub failed: u64,
}

/// Where a step shares its learning with the other replicas of its graph (a Kafka topic),
/// and the step itself as a [`Replicated`] learner.
#[derive(Clone)]
pub struct ShareLink {
    pub brokers: String,
    pub topic: String,
    /// Replay what was published since then (the time of the state the step restored);
    /// `None`: only what is published from now on.
    pub since: Option<std::time::SystemTime>,
    pub learner: Arc<dyn Replicated>,
}

/// A learner whose learning crosses processes: it sends each update it makes to an outbox,
/// and applies the updates other replicas sent.
pub trait Replicated: Send + Sync {
    /// Where this replica's updates go from now on, one message each (the step never waits:
    /// a full outbox drops the update and counts it).
    fn connect(&self, outbox: tokio::sync::mpsc::Sender<Vec<u8>>);
    /// Applies an update another replica's outbox sent; an error says why it does not fit.
    fn learn(&self, message: &[u8]) -> Result<()>;
}
