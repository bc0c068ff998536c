//! Experiment readouts from the tracking stream: each router's decisions (the request
//! events' `decisions`: routes, probabilities, chosen index, policy) joined by request `id`
//! with the stream's feedback events (`op: feedback`, the router in `model`, its `reward`),
//! summed per route and read out by [`crate::experiment::readout`], the same function the
//! live `GET /v2/models/{router}/experiment` uses. The stream holds every replica's
//! decisions and feedback, so this readout is the whole experiment's.

use std::collections::{BTreeMap, HashMap, VecDeque};

use serde::Deserialize;
use serde_json::{Value, json};

use crate::experiment::{self, Aggregate, Design, Settings, Weighted};

/// Routers one monitor follows, and routes per router: past these, decisions are not
/// counted (and counted as such), so memory is bounded whatever the stream holds.
pub const MAX_ROUTERS: usize = 64;
pub const MAX_ROUTES: usize = 64;

/// `monitor.experiments.ROUTER`: how a router's readout is tuned (as a router's
/// `policy.experiment`); without it, the control is the first of the router's routes.
#[derive(Clone, Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ExperimentSpec {
    /// The route the others are compared with.
    #[serde(default)]
    pub control: Option<String>,
    /// The planned sample N the confidence sequence is tuned for.
    #[serde(default = "planned_n")]
    pub planned_n: u64,
    /// The false-positive rate.
    #[serde(default = "alpha")]
    pub alpha: f64,
    /// Rewarded decisions every compared route needs before a verdict.
    #[serde(default = "min_sample")]
    pub min_sample: u64,
}

fn planned_n() -> u64 {
    experiment::DEFAULT_PLANNED_N
}
fn alpha() -> f64 {
    experiment::DEFAULT_ALPHA
}
fn min_sample() -> u64 {
    experiment::DEFAULT_MIN_SAMPLE
}

impl ExperimentSpec {
    /// Problems, as (field, message).
    pub fn check(&self) -> Vec<(String, String)> {
        let mut out = Vec::new();
        if !(self.alpha > 0.0 && self.alpha < 1.0) {
            out.push(("alpha".into(), format!("{} is not in (0, 1)", self.alpha)));
        }
        if self.planned_n == 0 {
            out.push(("planned_n".into(), "must be at least 1".into()));
        }
        out
    }
}

/// One decision as the stream records it.
#[derive(Debug, Deserialize)]
pub struct DecisionLine {
    pub router: String,
    #[serde(default)]
    pub policy: String,
    pub routes: Vec<String>,
    #[serde(default)]
    pub pmf: Option<Vec<f64>>,
    pub chosen: usize,
    #[serde(default)]
    pub unit: Option<String>,
    /// The generation of the router's learning (`servegraph evaluate` warns of mixed ones).
    #[serde(default)]
    pub generation: Option<u64>,
    /// The probability the tracking stream kept the request (1 / `sample`).
    #[serde(default)]
    pub sampled: Option<f64>,
    /// The featurised vector the policy saw (intercept last), when the router declares
    /// `features`.
    #[serde(default)]
    pub context: Option<Vec<f64>>,
}

/// A decision waiting for its reward.
struct Pending {
    router: String,
    route: usize,
    propensity: Option<f64>,
}

/// One router's sums.
struct RouterSums {
    policy: String,
    unit: Option<String>,
    routes: Vec<String>,
    aggregates: Vec<Aggregate>,
}

/// The experiments seen in a stream.
pub struct Experiments {
    specs: BTreeMap<String, ExperimentSpec>,
    routers: BTreeMap<String, RouterSums>,
    /// Decisions waiting for their reward, by request id, oldest first past `max_pending`.
    pending: HashMap<String, Vec<Pending>>,
    order: VecDeque<String>,
    max_pending: usize,
    /// Decisions not counted (past [`MAX_ROUTERS`] / [`MAX_ROUTES`], or malformed).
    dropped: u64,
    /// Rewards whose decision was not (or no longer) waiting.
    unmatched: u64,
    /// The smallest always-valid p-value shown so far per (router, route): what is shown is
    /// the running minimum, which keeps it valid however often it is looked at.
    min_p: std::sync::Mutex<HashMap<(String, String), f64>>,
}

impl Experiments {
    pub fn new(specs: BTreeMap<String, ExperimentSpec>, max_pending: usize) -> Experiments {
        Experiments {
            specs,
            routers: BTreeMap::new(),
            pending: HashMap::new(),
            order: VecDeque::new(),
            max_pending: max_pending.max(1),
            dropped: 0,
            unmatched: 0,
            min_p: Default::default(),
        }
    }

    /// A request event's decisions (`id` the request's).
    pub fn decisions(&mut self, id: Option<&str>, decisions: &[DecisionLine]) {
        let mut waiting = Vec::new();
        for d in decisions {
            let Some(route) = d.routes.get(d.chosen) else {
                self.dropped += 1;
                continue;
            };
            if d.routes.len() > MAX_ROUTES
                || (!self.routers.contains_key(&d.router) && self.routers.len() >= MAX_ROUTERS)
            {
                self.dropped += 1;
                continue;
            }
            let sums = self
                .routers
                .entry(d.router.clone())
                .or_insert_with(|| RouterSums {
                    policy: d.policy.clone(),
                    unit: d.unit.clone(),
                    routes: Vec::new(),
                    aggregates: Vec::new(),
                });
            // The routes as they come (a router's route set may grow with a deploy).
            let index = match sums.routes.iter().position(|r| r == route) {
                Some(i) => i,
                None if sums.routes.len() < MAX_ROUTES => {
                    sums.routes.push(route.clone());
                    sums.aggregates.push(Aggregate {
                        route: route.clone(),
                        ..Aggregate::default()
                    });
                    sums.routes.len() - 1
                }
                None => {
                    self.dropped += 1;
                    continue;
                }
            };
            // A weighted router's probabilities are its configured shares.
            if d.policy == "weighted" {
                for (r, p) in d.routes.iter().zip(d.pmf.iter().flatten()) {
                    if let Some(a) = sums.aggregates.iter_mut().find(|a| &a.route == r) {
                        a.weight = Some(*p);
                    }
                }
            }
            sums.policy.clone_from(&d.policy);
            sums.aggregates[index].n += 1;
            let propensity = d.pmf.as_ref().and_then(|p| p.get(d.chosen)).copied();
            waiting.push(Pending {
                router: d.router.clone(),
                route: index,
                propensity,
            });
        }
        if let (Some(id), false) = (id, waiting.is_empty()) {
            if self.pending.insert(id.to_owned(), waiting).is_none() {
                self.order.push_back(id.to_owned());
            }
            while self.order.len() > self.max_pending {
                if let Some(old) = self.order.pop_front() {
                    self.pending.remove(&old);
                }
            }
        }
    }

    /// A feedback event: `reward` for the decision router `router` made for request `id`.
    pub fn feedback(&mut self, id: &str, router: &str, reward: f64) {
        let Some(waiting) = self.pending.get_mut(id) else {
            self.unmatched += 1;
            return;
        };
        let Some(at) = waiting.iter().position(|p| p.router == router) else {
            self.unmatched += 1;
            return;
        };
        let p = waiting.swap_remove(at);
        if waiting.is_empty() {
            self.pending.remove(id);
        }
        let Some(sums) = self.routers.get_mut(router) else {
            return;
        };
        let a = &mut sums.aggregates[p.route];
        a.rewarded += 1;
        a.sum += reward;
        a.sum_sq += reward * reward;
        if let Some(prop) = p.propensity.filter(|&q| q > 0.0) {
            a.weighted
                .get_or_insert_with(Weighted::default)
                .add(prop, reward);
        }
    }

    /// Every router's readout (an `error` instead where the tuning names an unknown
    /// control); the running minimum p-values are kept.
    pub fn readouts(&self) -> Value {
        let mut out = serde_json::Map::new();
        let mut min_p = self.min_p.lock().unwrap_or_else(|e| e.into_inner());
        for (router, sums) in &self.routers {
            let spec = self.specs.get(router);
            let control = spec
                .and_then(|s| s.control.clone())
                .or_else(|| sums.routes.first().cloned())
                .unwrap_or_default();
            let settings = Settings {
                control,
                planned_n: spec.map_or_else(planned_n, |s| s.planned_n),
                alpha: spec.map_or_else(alpha, |s| s.alpha),
                min_sample: spec.map_or_else(min_sample, |s| s.min_sample),
            };
            let design = match sums.policy.as_str() {
                "weighted" => Design::Fixed {
                    sticky: sums.unit.clone(),
                },
                policy => Design::Adaptive {
                    policy: policy.to_owned(),
                    randomised: policy != "ucb1",
                },
            };
            let mut aggregates = sums.aggregates.clone();
            for a in &mut aggregates {
                a.min_p = min_p.get(&(router.clone(), a.route.clone())).copied();
            }
            let value = match experiment::readout(&settings, &design, &aggregates) {
                Ok(r) => {
                    for route in &r.routes {
                        if let Some(p) = route.p_always_valid {
                            let m = min_p
                                .entry((router.clone(), route.route.clone()))
                                .or_insert(p);
                            *m = m.min(p);
                        }
                    }
                    json!({"routes": sums.aggregates.iter().map(|a| json!({"route": a.route, "pulls": a.n, "rewards": a.rewarded, "reward_sum": a.sum})).collect::<Vec<_>>(),
                           "policy": sums.policy, "readout": r})
                }
                Err(e) => json!({"policy": sums.policy, "error": e}),
            };
            out.insert(router.clone(), value);
        }
        json!({"routers": out, "pending": self.pending.len(), "unmatched_feedback": self.unmatched, "dropped_decisions": self.dropped})
    }

    /// Whether any decision was seen.
    pub fn is_empty(&self) -> bool {
        self.routers.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decision(router: &str, policy: &str, chosen: usize, pmf: &[f64]) -> DecisionLine {
        DecisionLine {
            router: router.into(),
            policy: policy.into(),
            routes: vec!["a".into(), "b".into()],
            pmf: Some(pmf.to_vec()),
            chosen,
            unit: None,
            generation: None,
            sampled: None,
            context: None,
        }
    }

    #[test]
    fn decisions_join_their_feedback_by_id_and_router() {
        let mut e = Experiments::new(BTreeMap::new(), 100);
        for i in 0..400 {
            let chosen = i % 2;
            e.decisions(
                Some(&format!("r{i}")),
                &[decision("ab", "weighted", chosen, &[0.5, 0.5])],
            );
            // b earns 1 in 2, a 1 in 4; a reward for another router's id is unmatched.
            let reward = if chosen == 1 {
                (i % 4 == 1) as u8
            } else {
                (i % 8 == 0) as u8
            };
            e.feedback(&format!("r{i}"), "ab", f64::from(reward));
        }
        e.feedback("r1", "ab", 1.0);
        e.feedback("nobody", "ab", 1.0);
        let v = e.readouts();
        assert_eq!(v["unmatched_feedback"], 2, "{v}");
        assert_eq!(
            e.readouts()["routers"]["ab"]["readout"],
            v["routers"]["ab"]["readout"]
        );
        let r = &v["routers"]["ab"];
        assert_eq!(r["routes"][0]["pulls"], 200);
        assert_eq!(r["routes"][1]["rewards"], 200);
        let ro = &r["readout"];
        assert_eq!(ro["control"], "a");
        assert!(
            (ro["routes"][1]["mean"].as_f64().unwrap() - 0.5).abs() < 1e-9,
            "{ro}"
        );
        assert!(
            (ro["routes"][0]["mean"].as_f64().unwrap() - 0.25).abs() < 1e-9,
            "{ro}"
        );
    }

    #[test]
    fn bounded_by_routers_routes_and_pending() {
        let mut e = Experiments::new(BTreeMap::new(), 10);
        for i in 0..MAX_ROUTERS + 5 {
            e.decisions(
                Some(&format!("r{i}")),
                &[decision(&format!("router{i}"), "thompson", 0, &[1.0, 0.0])],
            );
        }
        assert_eq!(e.routers.len(), MAX_ROUTERS);
        assert_eq!(e.dropped, 5);
        assert_eq!(e.pending.len(), 10, "the oldest let go");
        e.feedback("r0", "router0", 1.0);
        assert_eq!(e.unmatched, 1, "r0 was let go");
    }
}
