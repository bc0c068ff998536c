//! The router as a learner: feedback by id or route, its stats, and learning shared across
//! replicas through Kafka (its [`Learning`](super::state::Learning) is the replicated part).

use servegraph_engine::{Error, Result};

use super::Router;
use super::policy::Policy;
use super::state::{Claim, Remembered};

/// A reward one replica took, as the others apply it.
#[derive(serde::Serialize, serde::Deserialize)]
pub(super) struct SharedReward {
    pub(super) router: String,
    pub(super) route: String,
    pub(super) reward: f64,
    /// The features of the request rewarded (contextual policies learn with them; absent
    /// for the other policies, as before).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(super) context: Option<Vec<f64>>,
}

impl servegraph_engine::Learner for Router {
    fn feedback(&self, id: &str, reward: f64) -> Result<bool> {
        let Some(decisions) = &self.learning.decisions else {
            return Err(Error::not_found(format!(
                "router `{}` routes by name: its policy takes no feedback",
                self.name
            )));
        };
        let remembered = match decisions.claim(id) {
            Claim::Fresh(r) => r,
            Claim::Rewarded => return Ok(false),
            Claim::Unknown => {
                let named = self.learning.named.as_ref().and_then(|n| n.route_of(id));
                if let Some(route) = named {
                    return Err(Error::unprocessable(format!(
                        "response `{id}` was for a request that named route `{route}` (`/v2/models/{route}/infer`, \
                         or `model` in its body) instead of going through router `{}`'s policy: it has no \
                         decision to reward; credit the route itself with \
                         {{\"response\": {{\"parameters\": {{\"route\": \"{route}\"}}}}, \"reward\": …}}",
                        self.name
                    )));
                }
                return Err(Error::not_found(format!(
                    "router `{}` has no response `{id}` to credit (unknown, or older than the {} it remembers)",
                    self.name, decisions.capacity
                )));
            }
        };
        let Remembered {
            route,
            propensity,
            context,
        } = remembered;
        if let Err(e) = self.reward(&route, reward, context.as_deref()) {
            decisions.unclaim(id);
            return Err(e);
        }
        self.learning.trial_rewarded(&route, propensity, reward);
        Ok(true)
    }

    fn feedback_route(&self, route: &str, reward: f64) -> Result<()> {
        if !self.routes.iter().any(|r| r.key == route) {
            return Err(Error::not_found(format!(
                "router `{}` has no route `{route}`",
                self.name
            )));
        }
        self.reward(route, reward, None)
    }

    fn stats(&self) -> servegraph_engine::LearnerStats {
        use servegraph_engine::learning::{RouteStats, ShadowStats};
        let estimates = self
            .learning
            .bandit
            .as_ref()
            .map(|b| b.lock().expect("not poisoned").stats());
        let routes = self
            .routes
            .iter()
            .map(|r| {
                let (pulls, rewards, reward_sum) = self.learning.counts(&r.key);
                let arm = self.learning.arms.iter().position(|a| *a == r.key);
                RouteStats {
                    route: r.key.clone(),
                    pulls,
                    rewards,
                    reward_sum,
                    reward_mean: if rewards > 0 {
                        reward_sum / rewards as f64
                    } else {
                        0.0
                    },
                    estimate: estimates.as_ref().and_then(|e| Some(e[arm?].estimate)),
                }
            })
            .collect();
        let shadow = self.shadow.as_ref().map(|sh| {
            let n = |i: usize| sh.counts[i].load(std::sync::atomic::Ordering::Relaxed);
            ShadowStats {
                route: self.routes[sh.index].key.clone(),
                sent: n(0),
                skipped: n(1),
                failed: n(2),
            }
        });
        servegraph_engine::LearnerStats {
            router: self.name.clone(),
            policy: self.kind.as_str().to_owned(),
            routes,
            shadow,
            readout: self.readout(),
        }
    }

    fn checkpoint(&self) {
        if let Err(e) = self.learning.save() {
            tracing::warn!(router = %self.name, error = %e, "could not save the bandit state");
        }
    }

    fn share(&self) -> Option<servegraph_engine::ShareLink> {
        let (brokers, topic) = self.learning.share.clone()?;
        // Learning kept from an earlier build is shared already (its task goes on).
        if self.learning.outbox.get().is_some() {
            return None;
        }
        Some(servegraph_engine::ShareLink {
            brokers,
            topic,
            since: *self.learning.restored_at.lock().expect("not poisoned"),
            learner: std::sync::Arc::clone(&self.learning) as _,
        })
    }
}

impl Router {
    /// The experiment's readout (weighted and bandit policies): each route the policy
    /// chooses among (a weighted one's routes with a weight), from the decisions the policy
    /// made and the feedback they took by id. Keeps each route's smallest always-valid
    /// p-value, so the next readout's is never larger.
    pub(super) fn readout(&self) -> Option<servegraph_engine::experiment::Readout> {
        use servegraph_engine::experiment::{Aggregate, Design};
        let settings = self.experiment.as_ref()?;
        let shares = self.shares();
        let (design, among): (Design, Vec<usize>) = match &self.policy {
            Policy::Weighted { sticky, .. } => (
                Design::Fixed {
                    sticky: sticky.as_ref().map(ToString::to_string),
                },
                shares
                    .as_ref()?
                    .iter()
                    .enumerate()
                    .filter(|(_, s)| **s > 0.0)
                    .map(|(i, _)| i)
                    .collect(),
            ),
            Policy::Bandit => (
                Design::Adaptive {
                    policy: self.kind.as_str().to_owned(),
                    randomised: self.kind != super::PolicyKind::Ucb1,
                },
                self.chosen.clone(),
            ),
            Policy::Contextual { randomised } => (
                Design::Adaptive {
                    policy: self.kind.as_str().to_owned(),
                    randomised: *randomised,
                },
                self.chosen.clone(),
            ),
            _ => return None,
        };
        let bandit = matches!(self.policy, Policy::Bandit | Policy::Contextual { .. });
        let routes: Vec<Aggregate> = among
            .iter()
            .map(|&i| {
                let key = &self.routes[i].key;
                let t = self.learning.trial(key);
                Aggregate {
                    route: key.clone(),
                    n: t.decided,
                    rewarded: t.rewarded,
                    sum: t.sum,
                    sum_sq: t.sum_sq,
                    weight: shares.as_ref().map(|s| s[i]),
                    weighted: bandit.then_some(t.weighted),
                    min_p: t.min_p,
                }
            })
            .collect();
        let readout = servegraph_engine::experiment::readout(settings, &design, &routes).ok()?;
        for r in &readout.routes {
            if let Some(p) = r.p_always_valid {
                self.learning.reported_p(&r.route, p);
            }
        }
        Some(readout)
    }

    /// A reward for `route` (by key): the policy learns it (a bandit, when the route is one
    /// of its arms; a Seldon ROUTER class, in its `send_feedback`), it is counted, and it is
    /// shared with the other replicas.
    pub(super) fn reward(&self, route: &str, reward: f64, context: Option<&[f64]>) -> Result<()> {
        match &self.policy {
            // A Seldon ROUTER learns in its class's send_feedback, told the route's index
            // among those it chooses from.
            Policy::Seldon(Some(component)) => {
                let routing = self
                    .chosen
                    .iter()
                    .position(|&i| self.routes[i].key == route)
                    .map_or(-1, |i| i as i64);
                component.send_feedback(serde_json::json!({"reward": reward, "routing": routing}));
                self.learning.record(route, reward);
            }
            _ => self.learning.credit(route, reward, context)?,
        }
        self.learning.publish(route, reward, context);
        Ok(())
    }
}
