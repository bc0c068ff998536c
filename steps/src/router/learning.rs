//! The router as a learner: feedback by id or route, its stats, and learning shared across
//! replicas through Kafka.

use servegraph_engine::{Error, Result};

use super::Router;
use super::policy::Policy;

/// A reward one replica took, as the others apply it.
#[derive(serde::Serialize, serde::Deserialize)]
pub(super) struct SharedReward {
    pub(super) router: String,
    pub(super) route: String,
    pub(super) reward: f64,
}

impl servegraph_engine::Replicated for Router {
    fn connect(&self, outbox: tokio::sync::mpsc::Sender<Vec<u8>>) {
        let _ = self.outbox.set(outbox);
    }

    fn learn(&self, message: &[u8]) -> Result<()> {
        let update: SharedReward = serde_json::from_slice(message)
            .map_err(|e| Error::bad_request(format!("malformed update: {e}")))?;
        if update.router != self.name {
            return Err(Error::bad_request(format!(
                "an update for router `{}` reached router `{}`",
                update.router, self.name
            )));
        }
        let index = self
            .routes
            .iter()
            .position(|r| r.key == update.route)
            .ok_or_else(|| {
                Error::not_found(format!(
                    "router `{}` has no route `{}`",
                    self.name, update.route
                ))
            })?;
        self.reward(index, update.reward)?;
        self.record(index, update.reward);
        Ok(())
    }
}

impl servegraph_engine::Learner for Router {
    fn feedback(&self, id: &str, reward: f64) -> Result<bool> {
        let Some(decisions) = &self.decisions else {
            return Err(Error::not_found(format!(
                "router `{}` routes by name: its policy takes no feedback",
                self.name
            )));
        };
        let mut d = decisions.lock().expect("not poisoned");
        let Some(entry) = d.routes.get_mut(id) else {
            let named = self.named.as_ref().and_then(|n| {
                let route = *n
                    .lock()
                    .expect("not poisoned")
                    .routes
                    .get(id)
                    .map(|(r, _)| r)?;
                Some(&self.routes[route].key)
            });
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
                self.name, d.capacity
            )));
        };
        if entry.1 {
            return Ok(false);
        }
        let route = entry.0;
        drop(d);
        self.reward(route, reward)?;
        self.record(route, reward);
        self.publish(route, reward);
        if let Some(e) = decisions.lock().expect("not poisoned").routes.get_mut(id) {
            e.1 = true;
        }
        Ok(true)
    }

    fn feedback_route(&self, route: &str, reward: f64) -> Result<()> {
        let index = self
            .routes
            .iter()
            .position(|r| r.key == route)
            .ok_or_else(|| {
                Error::not_found(format!("router `{}` has no route `{route}`", self.name))
            })?;
        self.reward(index, reward)?;
        self.record(index, reward);
        self.publish(index, reward);
        Ok(())
    }

    fn stats(&self) -> servegraph_engine::LearnerStats {
        use servegraph_engine::learning::{RouteStats, ShadowStats};
        let stats = self.stats.lock().expect("not poisoned").clone();
        let estimates = match &self.policy {
            Policy::Bandit(b) => Some(b.lock().expect("not poisoned").stats()),
            _ => None,
        };
        let routes = self
            .routes
            .iter()
            .enumerate()
            .map(|(i, r)| {
                let (pulls, rewards, reward_sum) = stats[i];
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
                    estimate: estimates.as_ref().map(|e| e[i].estimate),
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
        }
    }

    fn checkpoint(&self) {
        if let Err(e) = self.save() {
            tracing::warn!(router = %self.name, error = %e, "could not save the bandit state");
        }
    }

    fn share(&self) -> Option<servegraph_engine::ShareLink> {
        let (brokers, topic) = self.share.clone()?;
        let me = self.me.get()?.upgrade()?;
        Some(servegraph_engine::ShareLink {
            brokers,
            topic,
            since: *self.restored_at.lock().expect("not poisoned"),
            learner: me,
        })
    }
}
