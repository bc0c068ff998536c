//! `kind: router`: sends each event to one of its routes.
//!
//! A request that names a route (in the URL, the body's `model`/`version`, or the
//! `x-model-name`/`x-model-version` headers) goes to that route. Otherwise the policy decides:
//! `path` refuses (a route must be named), `weighted` picks at random by weight, a bandit
//! picks among its arms. A route the model repository added gets only the traffic that names
//! it, unless the policy names it (its `weights`, its `arms`).
//!
//! ```yaml
//! graph:
//!   kind: router
//!   policy: {type: weighted, weights: {iris-lr: 50, iris-rf: 50}}
//!   routes:
//!     iris-lr: {kind: model, class: onnx, model_path: ../models/iris_lr.onnx}
//!     iris-rf: {kind: model, class: onnx, model_path: ../models/iris_rf.onnx}
//! ```
//!
//! One file per job: `spec` (the YAML), `build`, `policy`, `shadow`, `learning` (feedback,
//! stats, sharing) and `state` (what it learns, kept across builds and saved).

mod build;
mod features;
mod learning;
mod policy;
mod shadow;
mod spec;
mod state;

use std::fmt::Write as _;
use std::sync::Arc;

use rand::Rng;
use servegraph_engine::diag::{all_of, one_of};
use servegraph_engine::{
    Error, Event, ModelInfo, Result, Signature, Step, Target, TensorMeta, async_trait,
};

use crate::routes::{Route, common_inputs, infer_each, intersect};

use self::policy::{Policy, Sticky, unit_hash};
use self::shadow::Shadow;
use self::state::Learning;
pub use build::build;
pub use features::FeatureSpec;
pub use spec::{POLICY_TYPES, PolicyKind, PolicySpec, RewardKind, RouterSpec, ShadowSpec, schema};

/// The runtime router.
pub struct Router {
    name: String,
    routes: Vec<Route>,
    /// Each route's key, shared with the decisions that name it.
    keys: Vec<Arc<str>>,
    /// For each route, every model name it makes addressable (itself and nested routes).
    reachable: Vec<Vec<String>>,
    policy: Policy,
    kind: PolicyKind,
    /// The request's features (`policy.features`): a contextual policy's input, logged with
    /// every decision of the policy.
    features: Option<features::Features>,
    /// The routes the policy chooses among (indices into `routes`; a bandit's arms, a Seldon
    /// class's route indices, in order): the graph file's routes, and a route the model
    /// repository added only when the policy names it.
    chosen: Vec<usize>,
    /// What it learnt: decisions awaiting feedback, counts, the bandit. Taken again by the
    /// router of a later build with the same name, policy and arms.
    learning: Arc<Learning>,
    shadow: Option<Shadow>,
    /// `servegraph_route_duration_seconds`, per route.
    route_seconds: Vec<servegraph_engine::metrics::Timer>,
    /// Each route's successes and failures (the statistics extension).
    route_outcomes: Vec<std::sync::Arc<servegraph_engine::stats::Outcomes>>,
    /// How the experiment is read out (weighted and bandit policies).
    experiment: Option<servegraph_engine::experiment::Settings>,
}

/// A decision of the policy: the probability it chose the route with, and (bandits) the
/// probability of each of its arms.
struct Choice {
    propensity: f64,
    pmf: Option<Vec<f64>>,
    /// The request's features, when the router declares some.
    context: Option<Vec<f64>>,
    /// A contextual policy's predicted rewards, per arm.
    scores: Option<Vec<f64>>,
}

/// A Seldon ROUTER's choice.
enum SeldonRoute {
    One(usize),
    All,
    None,
}

impl Router {
    /// Which route an event goes to, and the policy's decision when the policy chose it
    /// (rather than the request).
    fn select(&self, event: &Event) -> Result<(usize, Option<Choice>)> {
        if let Some(target) = &event.target
            && target.model != self.name
        {
            return self.find(target).map(|i| (i, None));
        }
        let context = match &self.features {
            Some(f) if !matches!(self.policy, Policy::Path) => Some(f.encode(&self.name, event)?),
            _ => None,
        };
        let chosen = match &self.policy {
            Policy::Path => Err(Error::bad_request(format!(
                "router `{}` routes by name: name one of its routes {} in the URL \
                 (/v2/models/<route>/infer), the body's `model` field or the `x-model-name` header",
                self.name,
                one_of(&self.route_keys())
            ))),
            Policy::Weighted {
                cumulative,
                total,
                sticky,
            } => {
                let point = match sticky.as_ref().and_then(|s| s.key(event)) {
                    Some(key) => unit_hash(&key),
                    None => rand::rng().random::<f64>(),
                };
                // Below the total, so a route with weight is always found.
                let x = (point * total).min(total * (1.0 - f64::EPSILON));
                let i = cumulative
                    .iter()
                    .position(|&c| x < c)
                    .unwrap_or(cumulative.len() - 1);
                let before = if i == 0 { 0.0 } else { cumulative[i - 1] };
                Ok((
                    i,
                    Choice {
                        propensity: (cumulative[i] - before) / total,
                        pmf: None,
                        context,
                        scores: None,
                    },
                ))
            }
            Policy::Bandit => {
                let bandit = self
                    .learning
                    .bandit
                    .as_ref()
                    .expect("a bandit policy has one");
                let (arm, pmf) = bandit.lock().expect("not poisoned").decide();
                Ok((
                    self.chosen[arm],
                    Choice {
                        propensity: pmf[arm],
                        pmf: Some(pmf),
                        context,
                        scores: None,
                    },
                ))
            }
            Policy::Contextual { .. } => {
                let policy = self
                    .learning
                    .contextual
                    .as_ref()
                    .expect("a contextual policy has one");
                let x = context.expect("a contextual policy has features");
                let (arm, pmf, scores) = policy.lock().expect("not poisoned").decide_scored(&x);
                Ok((
                    self.chosen[arm],
                    Choice {
                        propensity: pmf[arm],
                        pmf: Some(pmf),
                        context: Some(x),
                        scores: Some(scores),
                    },
                ))
            }
            Policy::Seldon(_) => unreachable!("a Seldon router chooses in `process`"),
        };
        chosen.map(|(i, c)| (i, Some(c)))
    }

    /// Records the policy's decision with the request's tracking event (when it is tracked):
    /// the routes it chose among, their probabilities, the chosen index, the policy and the
    /// generation of its learning.
    fn track_decision(&self, index: usize, mut choice: Choice) {
        servegraph_engine::tracking::decided(|| {
            let keys = |among: &[usize]| -> Vec<String> {
                among.iter().map(|&i| self.routes[i].key.clone()).collect()
            };
            let (routes, pmf, chosen, unit) = match &self.policy {
                Policy::Weighted { sticky, .. } => (
                    keys(&(0..self.routes.len()).collect::<Vec<_>>()),
                    self.shares(),
                    index,
                    sticky.as_ref().map(ToString::to_string),
                ),
                _ => (
                    keys(&self.chosen),
                    choice.pmf.take(),
                    self.chosen.iter().position(|&i| i == index).unwrap_or(0),
                    None,
                ),
            };
            servegraph_engine::tracking::Decision {
                router: self.name.clone(),
                policy: self.kind.as_str().to_owned(),
                generation: self.learning.generation(),
                routes,
                pmf,
                chosen,
                unit,
                context: choice.context,
                scores: choice.scores,
            }
        });
    }

    /// The probabilities a weighted policy chooses each route with, in route order.
    fn shares(&self) -> Option<Vec<f64>> {
        let Policy::Weighted {
            cumulative, total, ..
        } = &self.policy
        else {
            return None;
        };
        let mut before = 0.0;
        Some(
            cumulative
                .iter()
                .map(|&c| {
                    let share = (c - before) / total;
                    before = c;
                    share
                })
                .collect(),
        )
    }

    /// What the Seldon ROUTER class says of the request: `route()`'s index (`-1` all routes,
    /// `-2` none: the request is the answer, as in Seldon's executor).
    async fn seldon_route(
        &self,
        component: &Option<std::sync::Arc<crate::model::python::PythonModel>>,
        event: &Event,
    ) -> Result<SeldonRoute> {
        let Some(component) = component else {
            return Err(Error::unavailable(format!(
                "router `{}` is not loaded",
                self.name
            )));
        };
        let message = servegraph_engine::protocol::seldon::request_message(event)?;
        let answer = component.call_body(message).await?;
        let route = servegraph_engine::protocol::seldon::route_of(&answer).ok_or_else(|| {
            Error::internal(format!(
                "router `{}`: its class's route() answered {answer}, not a route index",
                self.name
            ))
        })?;
        match route {
            -1 => Ok(SeldonRoute::All),
            -2 => Ok(SeldonRoute::None),
            i if i >= 0 && (i as usize) < self.chosen.len() => {
                Ok(SeldonRoute::One(self.chosen[i as usize]))
            }
            i => Err(Error::internal(format!(
                "router `{}`: its class's route() chose {i}, but it has {} routes (0 to {}; -1 all, -2 none)",
                self.name,
                self.chosen.len(),
                self.chosen.len() - 1
            ))),
        }
    }

    /// Every route it chooses among on the request, at once; the first route's answer is the
    /// router's (Seldon's executor without a combiner), and any route's failure fails it.
    async fn all_routes(&self, mut event: Event) -> Result<Event> {
        event.routing.push((self.name.clone(), -1));
        let runs = self.chosen.iter().map(|&i| &self.routes[i]).map(|route| {
            let event = event.clone();
            async move {
                route
                    .step
                    .process(event)
                    .await
                    .map_err(|e| e.in_step(&route.key).on_route(&route.key))
            }
        });
        let mut answers = futures_util::future::try_join_all(runs).await?;
        Ok(answers.swap_remove(0))
    }

    /// The route a request names: by name and version, or the route that contains it.
    fn find(&self, target: &Target) -> Result<usize> {
        let named: Vec<usize> = (0..self.routes.len())
            .filter(|&i| self.routes[i].name == target.model)
            .collect();
        if !named.is_empty() {
            return match &target.version {
                Some(v) => named
                    .iter()
                    .copied()
                    .find(|&i| self.routes[i].version.as_deref() == Some(v.as_str()))
                    .ok_or_else(|| {
                        let versions: Vec<&str> = named
                            .iter()
                            .filter_map(|&i| self.routes[i].version.as_deref())
                            .collect();
                        Error::not_found(format!(
                            "model `{}` has no version `{v}`; versions: {}",
                            target.model,
                            if versions.is_empty() {
                                "none".to_owned()
                            } else {
                                one_of(&versions)
                            }
                        ))
                    }),
                None => Ok(named
                    .iter()
                    .copied()
                    .find(|&i| self.routes[i].version.is_none())
                    .unwrap_or(*named.last().expect("not empty"))),
            };
        }
        self.reachable
            .iter()
            .position(|names| names.contains(&target.model))
            .ok_or_else(|| {
                Error::not_found(format!(
                    "router `{}` has no route `{}`; routes: {}",
                    self.name,
                    target.model,
                    all_of(&self.route_keys())
                ))
            })
    }

    fn route_keys(&self) -> Vec<&str> {
        self.routes.iter().map(|r| r.key.as_str()).collect()
    }
}

#[async_trait]
impl Step for Router {
    async fn process(&self, mut event: Event) -> Result<Event> {
        let named = event.target.as_ref().is_some_and(|t| t.model != self.name);
        let (index, choice) = match &self.policy {
            Policy::Seldon(component) if !named => {
                match self.seldon_route(component, &event).await? {
                    // A Seldon class's probabilities are its own: not known here.
                    SeldonRoute::One(index) => (
                        index,
                        Some(Choice {
                            propensity: f64::NAN,
                            pmf: None,
                            context: None,
                            scores: None,
                        }),
                    ),
                    SeldonRoute::All => return self.all_routes(event).await,
                    SeldonRoute::None => {
                        // The request is the answer (its tensors, or the message it came as).
                        event.routing.push((self.name.clone(), -2));
                        if let Some(body) = event.body.as_mut() {
                            body.answered = true;
                        }
                        return Ok(event);
                    }
                }
            }
            _ => self.select(&event)?,
        };
        if let Some(shadow) = &self.shadow
            && index != shadow.index
        {
            self.mirror(shadow, &event);
        }
        let remembered = if choice.is_some() {
            &self.learning.decisions
        } else {
            &self.learning.named
        };
        let propensity = choice.as_ref().map_or(1.0, |c| c.propensity);
        if let Some(d) = remembered {
            let context = choice.as_ref().and_then(|c| c.context.as_deref());
            d.remember(&event.id, &self.keys[index], propensity, context);
        }
        self.learning.pulled(&self.keys[index]);
        if let Some(choice) = choice {
            self.learning.decided(&self.keys[index]);
            self.track_decision(index, choice);
        }
        let route = &self.routes[index];
        event.routes.push((self.name.clone(), route.key.clone()));
        event.routing.push((self.name.clone(), index as i64));
        // The same cheap clock as the engine's step timing.
        let start = quanta::Instant::now();
        let rows = servegraph_engine::stats::rows(&event);
        let result = route.step.process(event).await;
        let took = start.elapsed();
        self.route_seconds[index].observe(took);
        self.route_outcomes[index].record(result.is_ok(), took, rows);
        result.map_err(|e| e.in_step(&route.key).on_route(&route.key))
    }

    fn infer(&self, input: &Signature) -> Result<Signature, String> {
        Ok(intersect(infer_each(&self.routes, input)?))
    }

    fn inputs(&self) -> Option<Vec<TensorMeta>> {
        common_inputs(&self.routes)
    }

    fn models(&self) -> Vec<ModelInfo> {
        self.routes.iter().flat_map(Route::models).collect()
    }

    fn platform(&self) -> servegraph_engine::Platform {
        servegraph_engine::Platform::Router
    }

    fn headers(&self) -> Vec<String> {
        let mut reads = self
            .features
            .as_ref()
            .map(|f| f.reads())
            .unwrap_or_default();
        reads.extend(match &self.policy {
            Policy::Weighted {
                sticky: Some(Sticky::Header(name)),
                ..
            } => vec![name.clone()],
            // A top-level body field: the request path copies it into `parameters`.
            Policy::Weighted {
                sticky: Some(Sticky::Body(field)),
                ..
            } => vec![format!("{}{field}", servegraph_engine::request::BODY_FIELD)],
            _ => Vec::new(),
        });
        reads
    }

    fn learner(&self) -> Option<&dyn servegraph_engine::Learner> {
        Some(self)
    }

    fn children(&self) -> Vec<(&str, &dyn Step)> {
        self.routes
            .iter()
            .map(|r| (r.key.as_str(), r.step.as_ref()))
            .collect()
    }

    /// The policy; a weighted one's shares (in percent) and sticky key; the shadow route and
    /// the share of requests it copies: `weighted a 80% b 20%, sticky header:x-user`.
    fn summary(&self) -> Option<String> {
        let mut out = self.kind.as_str().to_owned();
        if let Policy::Weighted {
            cumulative,
            total,
            sticky,
        } = &self.policy
        {
            let mut before = 0.0;
            for (key, &upto) in self.keys.iter().zip(cumulative) {
                let share = (upto - before) / total * 100.0;
                before = upto;
                if share > 0.0 {
                    let _ = write!(out, " {key} {}%", (share * 10.0).round() / 10.0);
                }
            }
            if let Some(sticky) = sticky {
                let _ = write!(out, ", sticky {sticky}");
            }
        }
        if let Some(shadow) = &self.shadow {
            let _ = write!(
                out,
                ", shadow {} {}%",
                self.keys[shadow.index],
                (shadow.share * 1000.0).round() / 10.0
            );
        }
        Some(out)
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use servegraph_engine::{BuildMode, ErrorKind, Graph, Tensor, TensorData};

    use super::*;

    fn registry() -> servegraph_engine::Registry {
        let mut r = servegraph_engine::Registry::new();
        r.register("router", build);
        r.register("transform", crate::transform::build);
        r
    }

    const YAML: &str = r#"
name: r
graph:
  kind: router
  policy: {type: weighted, weights: {a: 1, "b:2": 3}}
  routes:
    a: {kind: transform, op: rename, args: {x: from_a}}
    "b:2": {kind: transform, op: rename, args: {x: from_b}}
"#;

    /// A reload builds a second router on the same state file: from then on the new one owns
    /// the file, and the old one (still finishing requests) no longer overwrites it.
    #[tokio::test]
    async fn the_newest_router_owns_the_state_file() {
        let dir = tempfile::tempdir().unwrap();
        let yaml = "name: r\ngraph:\n  kind: router\n  policy: {type: ucb1, state_file: s.json}\n  routes: {a: {kind: transform, op: noop}, b: {kind: transform, op: noop}}\n";
        let build = || Graph::from_yaml(yaml, dir.path(), &registry(), BuildMode::Load).unwrap();
        let rewards = |g: &Graph| -> u64 {
            let stats = g.learner("r").unwrap().stats();
            stats.routes.iter().map(|r| r.rewards).sum()
        };
        let learn = |g: &Graph, n: usize| {
            let r = g.learner("r").unwrap();
            for _ in 0..n {
                r.feedback_route("a", 1.0).unwrap();
            }
        };
        let old = build();
        learn(&old, 3);
        old.checkpoint();
        let new = build();
        assert_eq!(rewards(&new), 3, "restored");
        learn(&new, 2);
        new.checkpoint();
        learn(&old, 10);
        drop(old);
        let saved: serde_json::Value =
            serde_json::from_slice(&std::fs::read(dir.path().join("s.json")).unwrap()).unwrap();
        assert_eq!(saved["routes"]["a"]["rewards"], 5, "{saved}");
        assert_eq!(saved["generation"], 2);
    }

    /// A build of the same graph in the same serving process (its shelf) takes the router's
    /// learning again as it is: an id routed by the old graph is credited on the new one;
    /// a changed policy learns afresh.
    #[tokio::test]
    async fn a_rebuild_keeps_the_learning_of_an_unchanged_router() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("g.yaml");
        let write = |policy: &str| {
            std::fs::write(
                &file,
                format!("name: r\ngraph:\n  kind: router\n  policy: {policy}\n  routes: {{a: {{kind: transform, op: noop}}, b: {{kind: transform, op: noop}}}}\n"),
            )
            .unwrap()
        };
        let shelf = servegraph_engine::loading::Shelf::default();
        let build = || {
            Graph::load_kept(
                &file,
                &registry(),
                BuildMode::Load,
                &Default::default(),
                &shelf,
            )
            .unwrap()
        };
        write("{type: thompson, seed: 1}");
        let old = build();
        let routed = old.run(event(None)).await.unwrap();
        let new = build();
        assert!(new.learner("r").unwrap().feedback(&routed.id, 1.0).unwrap());
        assert!(!old.learner("r").unwrap().feedback(&routed.id, 1.0).unwrap());
        let pulls = |g: &Graph| -> u64 {
            g.learner("r")
                .unwrap()
                .stats()
                .routes
                .iter()
                .map(|r| r.pulls)
                .sum()
        };
        assert_eq!(pulls(&new), 1);
        drop(old);
        write("{type: thompson, seed: 2}");
        let changed = build();
        assert_eq!(pulls(&changed), 0, "a changed policy learns afresh");
        assert!(
            changed
                .learner("r")
                .unwrap()
                .feedback(&routed.id, 1.0)
                .is_err()
        );
    }

    /// A contextual router saves its models to `state_file` and a new build restores them;
    /// with `share`, each reward goes out with its context and a replica's message without
    /// one is refused, never learnt as if from another request.
    #[tokio::test]
    async fn a_contextual_router_saves_restores_and_shares_its_models() {
        let dir = tempfile::tempdir().unwrap();
        let yaml = "name: r\ngraph:\n  kind: router\n  policy: {type: squarecb, seed: 1, state_file: s.json, share: \"kafka://127.0.0.1:9/cb\", features: [{tensor: x, size: 1}]}\n  routes: {a: {kind: transform, op: noop}, b: {kind: transform, op: noop}}\n";
        let build = || Graph::from_yaml(yaml, dir.path(), &registry(), BuildMode::Load).unwrap();
        let g = build();
        let link = g.learner("r").unwrap().share().expect("shared");
        let (tx, mut rx) = tokio::sync::mpsc::channel::<Vec<u8>>(100);
        link.learner.connect(tx);
        for _ in 0..20 {
            let out = g.run(event(None)).await.unwrap();
            assert!(g.learner("r").unwrap().feedback(&out.id, 1.0).unwrap());
        }
        let sent: serde_json::Value = serde_json::from_slice(&rx.try_recv().unwrap()).unwrap();
        assert_eq!(sent["context"], serde_json::json!([1.0, 1.0]), "{sent}");
        // Another replica's reward, with its context, is learnt; one without is refused.
        let theirs =
            serde_json::json!({"router": "r", "route": "a", "reward": 0.0, "context": [1.0, 1.0]});
        link.learner.learn(theirs.to_string().as_bytes()).unwrap();
        let bare = serde_json::json!({"router": "r", "route": "a", "reward": 0.0});
        let err = link.learner.learn(bare.to_string().as_bytes()).unwrap_err();
        assert!(err.message.contains("is contextual"), "{err}");
        let short =
            serde_json::json!({"router": "r", "route": "a", "reward": 0.0, "context": [1.0]});
        let err = link
            .learner
            .learn(short.to_string().as_bytes())
            .unwrap_err();
        assert!(
            err.message
                .contains("the context has 1 numbers, the policy takes 2"),
            "{err}"
        );
        g.checkpoint();
        let saved: serde_json::Value =
            serde_json::from_slice(&std::fs::read(dir.path().join("s.json")).unwrap()).unwrap();
        assert_eq!(saved["policy"], "squarecb");
        let learnt: u64 = ["a", "b"]
            .iter()
            .map(|r| saved["models"][r]["n"].as_u64().unwrap())
            .sum();
        assert_eq!(learnt, 21, "{saved}");
        assert_eq!(saved["models"]["a"]["ainv"].as_array().unwrap().len(), 4);
        let scores = |g: &Graph| {
            let r = g.learner("r").unwrap();
            r.stats().routes.iter().map(|s| s.rewards).sum::<u64>()
        };
        drop(g);
        let again = build();
        assert_eq!(scores(&again), 21, "counts restored");
        let out = again.run(event(None)).await.unwrap();
        assert!(again.learner("r").unwrap().feedback(&out.id, 1.0).unwrap());
    }

    fn event(target: Option<(&str, Option<&str>)>) -> Event {
        let mut ev = Event::new(
            "e",
            vec![Tensor::new("x", vec![1], TensorData::Fp32(vec![1.0])).unwrap()],
        );
        ev.target = target.map(|(m, v)| Target {
            model: m.into(),
            version: v.map(Into::into),
        });
        ev
    }

    #[tokio::test]
    async fn weighted_split_follows_weights() {
        let g = Graph::from_yaml(YAML, Path::new("."), &registry(), BuildMode::Load).unwrap();
        let mut b = 0;
        for _ in 0..4000 {
            let out = g.run(event(None)).await.unwrap();
            if out.route() == Some("b:2") {
                b += 1;
                assert!(out.get("from_b").is_some());
            }
        }
        // Expect 3000 of 4000; five standard deviations is ±137.
        assert!((2863..=3137).contains(&b), "{b}");
    }

    #[tokio::test]
    async fn named_routes_and_versions() {
        let g = Graph::from_yaml(YAML, Path::new("."), &registry(), BuildMode::Load).unwrap();
        let out = g.run(event(Some(("a", None)))).await.unwrap();
        assert_eq!(out.route(), Some("a"));
        let out = g.run(event(Some(("b", Some("2"))))).await.unwrap();
        assert_eq!(out.route(), Some("b:2"));
        let out = g.run(event(Some(("b", None)))).await.unwrap();
        assert_eq!(out.route(), Some("b:2"));
        let err = g.run(event(Some(("b", Some("9"))))).await.unwrap_err();
        assert_eq!(err.kind, ErrorKind::NotFound);
        assert!(
            err.message.contains("has no version `9`; versions: `2`"),
            "{err}"
        );
        let err = g.run(event(Some(("zz", None)))).await.unwrap_err();
        assert_eq!(err.kind, ErrorKind::NotFound);
        let models: Vec<(String, Option<String>)> = g
            .models()
            .iter()
            .map(|m| (m.name.clone(), m.version.clone()))
            .collect();
        assert_eq!(
            models,
            [
                ("r".into(), None),
                ("a".into(), None),
                ("b".into(), Some("2".into()))
            ]
        );
    }

    #[tokio::test]
    async fn path_policy_needs_a_name() {
        let yaml = "name: r\ngraph: {kind: router, routes: {a: {kind: transform, op: noop}}}\n";
        let g = Graph::from_yaml(yaml, Path::new("."), &registry(), BuildMode::Load).unwrap();
        let err = g.run(event(None)).await.unwrap_err();
        assert_eq!(err.kind, ErrorKind::BadRequest);
        assert!(err.message.contains("routes by name"), "{err}");
    }

    #[test]
    fn bad_policies_are_reported() {
        let yaml = r#"name: r
graph:
  kind: router
  policy: {type: random}
  routes: {a: {kind: transform, op: noop}}
"#;
        let d = Graph::from_yaml(yaml, Path::new("."), &registry(), BuildMode::Load)
            .err()
            .unwrap();
        let m = d[0].one_line("g");
        assert!(
            m.contains("unknown `policy.type` `random` (expected one of `path`, `weighted`, `epsilon_greedy`, `ucb1`, `thompson`, `squarecb`, `linucb`, `lin_thompson` or `seldon`)"),
            "{m}"
        );
        assert!(m.starts_with("g:4:"), "{m}");

        let yaml = "name: r\ngraph:\n  kind: router\n  policy: {type: weighted, weights: {c: 1}}\n  routes: {a: {kind: transform, op: noop}}\n";
        let d = Graph::from_yaml(yaml, Path::new("."), &registry(), BuildMode::Load)
            .err()
            .unwrap();
        assert!(
            d[0].message
                .contains("`weights` names `c`, which is not a route"),
            "{d:?}"
        );
        assert_eq!(d[0].help.as_deref(), Some("routes are `a`"));
        let yaml = "name: r\ngraph:\n  kind: router\n  policy: {type: weighted, shadow: {route: a, percent: 10}}\n  routes: {a: {kind: transform, op: noop}}\n";
        let d = Graph::from_yaml(yaml, Path::new("."), &registry(), BuildMode::Load)
            .err()
            .unwrap();
        assert!(
            d[0].message
                .contains("a shadow route needs another route to shadow"),
            "{d:?}"
        );
    }
}
