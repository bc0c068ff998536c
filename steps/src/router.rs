//! `kind: router`: sends each event to one of its routes.
//!
//! A request that names a route (in the URL, the body's `model`/`version`, or the
//! `x-model-name`/`x-model-version` headers) goes to that route. Otherwise the policy decides:
//! `path` refuses (a route must be named), `weighted` picks at random by weight.
//!
//! ```yaml
//! graph:
//!   kind: router
//!   policy: {type: weighted, weights: {iris-lr: 50, iris-rf: 50}}
//!   routes:
//!     iris-lr: {kind: model, class: onnx, model_path: ../models/iris_lr.onnx}
//!     iris-rf: {kind: model, class: onnx, model_path: ../models/iris_rf.onnx}
//! ```

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};

use indexmap::IndexMap;
use rand::Rng;
use schemars::JsonSchema;
use serde::Deserialize;
use servegraph_engine::diag::{Diagnostic, all_of, one_of};
use servegraph_engine::{
    BuildContext, Error, Event, ModelInfo, Result, Signature, Step, StepNode, Target, TensorMeta,
    async_trait,
};

use crate::bandit::{Algorithm, Bandit};
use crate::routes::{Route, build_routes, common_inputs, infer_each, intersect};

/// A router's fields.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RouterSpec {
    /// How to choose a route when the request names none. Default: `{type: path}`. One spec
    /// per `type` (see [`PolicySpec::schema`]).
    #[serde(default)]
    #[schemars(with = "Option<serde_json::Value>")]
    pub policy: Option<serde::de::IgnoredAny>,
    /// The routes: name (or `name:version`) → step.
    #[schemars(with = "IndexMap<String, serde_json::Value>")]
    pub routes: serde::de::IgnoredAny,
}

/// The JSON Schema of a router step's fields, `policy` with one branch per type (checked by
/// [`PolicySpec::parse`], so the router's own check takes it as any value).
pub fn schema() -> serde_json::Value {
    let mut schema = schemars::schema_for!(RouterSpec).to_value();
    let mut defs = serde_json::Map::new();
    let policy = servegraph_engine::fields::embed(PolicySpec::schema(), &mut defs);
    if let Some(all) = schema.as_object_mut() {
        match all.get_mut("$defs") {
            Some(serde_json::Value::Object(d)) => d.extend(defs),
            _ => {
                all.insert("$defs".into(), serde_json::Value::Object(defs));
            }
        }
    }
    schema["properties"]["policy"] = policy;
    schema
}

/// Declares a bandit policy's spec: its own fields, then those every bandit takes.
macro_rules! bandit_policy {
    ($(#[$doc:meta])* $name:ident { $($(#[$fdoc:meta])* $field:ident : $ty:ty,)* }) => {
        $(#[$doc])*
        #[derive(Debug, Default, Deserialize, JsonSchema)]
        #[serde(deny_unknown_fields)]
        pub struct $name {
            $($(#[$fdoc])* #[serde(default)] pub $field: $ty,)*
            /// Each reward multiplies past counts by this (0 < discount ≤ 1), to follow rewards
            /// that drift (memory ≈ 1 / (1 - discount) rewards). Default: 1, no forgetting.
            #[serde(default)]
            #[schemars(extend("exclusiveMinimum" = 0, "maximum" = 1))]
            pub discount: Option<f64>,
            /// Seed the random choices (reproducible experiments and tests).
            #[serde(default)]
            pub seed: Option<u64>,
            /// A file (relative to the graph file) the router's learning is saved to every
            /// `state_every_ms` and when it stops, and restored from when it starts. Its
            /// folder must exist and be writable.
            #[serde(default)]
            pub state_file: Option<String>,
            /// How often the state is saved, in milliseconds (default 10000; needs `state_file`).
            #[serde(default)]
            #[schemars(range(min = 100))]
            pub state_every_ms: Option<u64>,
            /// Share what the router learns with the other processes serving this graph,
            /// through a Kafka topic, `kafka://HOST:PORT/TOPIC` (which must exist).
            #[serde(default)]
            pub share: Option<String>,
            /// How many recent response ids are remembered for feedback (default 100000);
            /// older ids get 404 on feedback.
            #[serde(default)]
            #[schemars(range(min = 1))]
            pub remember: Option<usize>,
        }

        impl From<$name> for PolicySpec {
            #[allow(unused_mut)]
            fn from(p: $name) -> PolicySpec {
                let mut spec = PolicySpec {
                    discount: p.discount,
                    seed: p.seed,
                    state_file: p.state_file,
                    state_every_ms: p.state_every_ms,
                    share: p.share,
                    remember: p.remember,
                    ..PolicySpec::default()
                };
                $(spec.$field = p.$field;)*
                spec
            }
        }
    };
}

/// `policy: {type: path}`: the request names the route (URL, body `model` or header).
#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct PathPolicy {
    /// Copy a share of requests to a shadow route (see [`ShadowSpec`]).
    #[serde(default)]
    pub shadow: Option<ShadowSpec>,
}

/// `policy: {type: weighted}`: a random route by weight (A/B tests, canaries).
#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct WeightedPolicy {
    /// Route → relative weight (≥ 0). Routes not listed get 0; none listed: equal.
    #[serde(default)]
    #[schemars(with = "Option<IndexMap<String, NonNegative>>")]
    pub weights: Option<IndexMap<String, f64>>,
    /// `header:NAME` or `body:FIELD` (a top-level field of the request body, or one of its
    /// `parameters`): the same key always reaches the same route while the weights are
    /// unchanged; requests without the key are split at random.
    #[serde(default)]
    #[schemars(regex(pattern = r"^(header|body):.+$"))]
    pub sticky: Option<String>,
    /// Copy a share of requests to a shadow route (see [`ShadowSpec`]).
    #[serde(default)]
    pub shadow: Option<ShadowSpec>,
    /// How many recent response ids are remembered for feedback (default 100000).
    #[serde(default)]
    #[schemars(range(min = 1))]
    pub remember: Option<usize>,
}

/// A number ≥ 0 (for the schema).
#[derive(JsonSchema)]
#[allow(dead_code)]
struct NonNegative(#[schemars(range(min = 0))] f64);

bandit_policy! {
    /// `policy: {type: epsilon_greedy}`: the best route so far, exploring a random one a
    /// share ε of the time.
    EpsilonGreedyPolicy {
        /// The share of requests that explore a random route (default 0.1).
        #[schemars(range(min = 0, max = 1))]
        epsilon: Option<f64>,
        /// ε falls as ε / (1 + decay · requests) (default 0: constant).
        #[schemars(range(min = 0))]
        decay: Option<f64>,
    }
}

bandit_policy! {
    /// `policy: {type: ucb1}`: the route whose reward could plausibly be highest.
    Ucb1Policy {}
}

bandit_policy! {
    /// `policy: {type: thompson}`: routes chosen in proportion to the chance each is best.
    ThompsonPolicy {
        /// `bernoulli` (rewards in [0, 1], the default) or `gaussian` (any number).
        reward: Option<RewardKind>,
    }
}

impl From<PathPolicy> for PolicySpec {
    fn from(p: PathPolicy) -> PolicySpec {
        PolicySpec {
            shadow: p.shadow,
            ..PolicySpec::default()
        }
    }
}

impl From<WeightedPolicy> for PolicySpec {
    fn from(p: WeightedPolicy) -> PolicySpec {
        PolicySpec {
            kind: PolicyKind::Weighted,
            weights: p.weights,
            sticky: p.sticky,
            shadow: p.shadow,
            remember: p.remember,
            ..PolicySpec::default()
        }
    }
}

/// The policy types, as `type:` names them.
pub const POLICY_TYPES: [&str; 5] = ["path", "weighted", "epsilon_greedy", "ucb1", "thompson"];

impl PolicySpec {
    /// The JSON Schema of `policy`: one branch per type.
    pub fn schema() -> serde_json::Value {
        servegraph_engine::fields::tagged_schema(
            "type",
            vec![
                ("path", schemars::schema_for!(PathPolicy).to_value()),
                ("weighted", schemars::schema_for!(WeightedPolicy).to_value()),
                (
                    "epsilon_greedy",
                    schemars::schema_for!(EpsilonGreedyPolicy).to_value(),
                ),
                ("ucb1", schemars::schema_for!(Ucb1Policy).to_value()),
                ("thompson", schemars::schema_for!(ThompsonPolicy).to_value()),
            ],
        )
    }

    /// Reads a router's `policy` (default `{type: path}`): its `type`, then that type's
    /// fields, reporting every problem.
    pub fn parse(node: &StepNode, ctx: &mut BuildContext) -> Option<PolicySpec> {
        let Some(policy) = node.body.get_node("policy") else {
            return Some(PolicySpec::default());
        };
        let Some(map) = policy.as_mapping() else {
            ctx.error(
                &node.name,
                policy.span(),
                "`policy` must be a mapping with `type`",
            );
            return None;
        };
        let kind = match map.get_scalar("type") {
            None => "path",
            Some(t) => match POLICY_TYPES.iter().find(|k| **k == t.as_str()) {
                Some(k) => k,
                None => {
                    ctx.report(
                        Diagnostic::new(format!("unknown `policy.type` `{}`", t.as_str()))
                            .step(&node.name)
                            .at(t.span())
                            .help(servegraph_engine::fields::suggest(
                                t.as_str(),
                                &POLICY_TYPES,
                            )),
                    );
                    return None;
                }
            },
        };
        let mut body = map.clone();
        body.remove(&marked_yaml::types::MarkedScalarNode::new(
            marked_yaml::Span::new_blank(),
            "type",
        ));
        let body = marked_yaml::Node::Mapping(body);
        let what = format!("`policy.type: {kind}`");
        fn read<T: serde::de::DeserializeOwned + JsonSchema + Into<PolicySpec>>(
            body: &marked_yaml::Node,
            what: &str,
        ) -> std::result::Result<PolicySpec, Vec<Diagnostic>> {
            servegraph_engine::step::from_yaml_at::<T>(body, body.span(), what, &["type"], "policy")
                .map(Into::into)
        }
        let parsed = match kind {
            "path" => read::<PathPolicy>(&body, &what),
            "weighted" => read::<WeightedPolicy>(&body, &what),
            "epsilon_greedy" => read::<EpsilonGreedyPolicy>(&body, &what),
            "ucb1" => read::<Ucb1Policy>(&body, &what),
            _ => read::<ThompsonPolicy>(&body, &what),
        };
        match parsed {
            Ok(mut spec) => {
                spec.kind = match kind {
                    "path" => PolicyKind::Path,
                    "weighted" => PolicyKind::Weighted,
                    "epsilon_greedy" => PolicyKind::EpsilonGreedy,
                    "ucb1" => PolicyKind::Ucb1,
                    _ => PolicyKind::Thompson,
                };
                Some(spec)
            }
            Err(problems) => {
                ctx.report_in(&node.name, problems);
                None
            }
        }
    }
}

/// `policy`, as the router uses it: every type's fields in one place (those that do not apply
/// to the type are `None`; the type's own spec refused them).
#[derive(Debug, Default)]
pub struct PolicySpec {
    pub kind: PolicyKind,
    /// `weighted`: route → relative weight (≥ 0). Routes not listed get 0; none listed: equal.
    pub weights: Option<IndexMap<String, f64>>,
    /// `epsilon_greedy`: the share of requests that explore a random route (default 0.1).
    pub epsilon: Option<f64>,
    /// `epsilon_greedy`: ε falls as ε / (1 + decay · requests) (default 0: constant).
    pub decay: Option<f64>,
    /// Bandits: each reward multiplies past counts by this (0 < discount ≤ 1), to follow
    /// rewards that drift (memory ≈ 1 / (1 - discount) rewards). Default: 1, no forgetting.
    pub discount: Option<f64>,
    /// `thompson`: `bernoulli` (rewards in [0, 1], the default) or `gaussian` (any number).
    pub reward: Option<RewardKind>,
    /// Bandits: seed the random choices (reproducible experiments and tests).
    pub seed: Option<u64>,
    /// `weighted`: `header:NAME` or `body:FIELD` (a field of the request's `parameters`): the
    /// same key always reaches the same route while the weights are unchanged; requests
    /// without the key are split at random.
    pub sticky: Option<String>,
    /// `weighted` and `path`: copy a share of requests to a shadow route (see [`ShadowSpec`]).
    pub shadow: Option<ShadowSpec>,
    /// Bandits: a file (relative to the graph file) the router's learning is saved to every
    /// `state_every_ms` and when it stops, and restored from when it starts.
    pub state_file: Option<String>,
    /// How often the state is saved, in milliseconds (default 10000).
    pub state_every_ms: Option<u64>,
    /// Bandits: share what the router learns with the other processes serving this graph,
    /// through a Kafka topic, `kafka://HOST:PORT/TOPIC` (which must exist). Each process
    /// publishes the rewards it takes and applies the others'.
    pub share: Option<String>,
    /// Policies that take feedback: how many recent response ids are remembered for it
    /// (default 100000); older ids get 404 on feedback.
    pub remember: Option<usize>,
}

/// `shadow: {route: NAME, percent: P}`: mirror a share of requests to a route whose answer is
/// recorded in tracking and never returned.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ShadowSpec {
    /// The route (one of `routes`) that receives the copies; it gets no traffic of its own.
    pub route: String,
    /// The share of requests copied, in percent (default 100).
    #[serde(default)]
    #[schemars(extend("exclusiveMinimum" = 0, "maximum" = 100))]
    pub percent: Option<f64>,
    /// A copy still running after this many milliseconds is abandoned (default 10000).
    #[serde(default)]
    #[schemars(range(min = 1))]
    pub timeout_ms: Option<u64>,
    /// At most this many copies in flight; beyond it copies are skipped and counted
    /// (default 64).
    #[serde(default)]
    #[schemars(range(min = 1))]
    pub max_in_flight: Option<usize>,
}

/// A shadow route at run time.
struct Shadow {
    index: usize,
    share: f64,
    timeout: std::time::Duration,
    slots: Arc<tokio::sync::Semaphore>,
    /// Copies sent, skipped (too many in flight), failed or timed out.
    counts: Arc<[std::sync::atomic::AtomicU64; 3]>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum RewardKind {
    Bernoulli,
    Gaussian,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize, serde::Serialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum PolicyKind {
    /// The request must name a route (URL, body or header).
    #[default]
    Path,
    /// A random route, by weight (A/B tests, canaries).
    Weighted,
    /// The best route so far, exploring a random one a share ε of the time.
    EpsilonGreedy,
    /// Upper confidence bound: the route whose reward could plausibly be highest.
    Ucb1,
    /// Thompson sampling: routes chosen in proportion to the chance each is the best.
    Thompson,
}

impl PolicyKind {
    /// The spelling of `policy.type`.
    pub fn as_str(self) -> &'static str {
        match self {
            PolicyKind::Path => "path",
            PolicyKind::Weighted => "weighted",
            PolicyKind::EpsilonGreedy => "epsilon_greedy",
            PolicyKind::Ucb1 => "ucb1",
            PolicyKind::Thompson => "thompson",
        }
    }
}

enum Policy {
    Path,
    /// Cumulative weights, one per route, and their total.
    Weighted {
        cumulative: Vec<f64>,
        total: f64,
        sticky: Option<Sticky>,
    },
    Bandit(Mutex<Bandit>),
}

/// Where a sticky router finds a request's key.
#[derive(Clone, Debug, PartialEq)]
enum Sticky {
    Header(String),
    Body(String),
}

impl Sticky {
    fn parse(s: &str) -> Option<Sticky> {
        match s.split_once(':') {
            Some(("header", name)) if !name.is_empty() => {
                Some(Sticky::Header(name.to_ascii_lowercase()))
            }
            Some(("body", field)) if !field.is_empty() => Some(Sticky::Body(field.to_owned())),
            _ => None,
        }
    }

    fn key(&self, event: &Event) -> Option<String> {
        match self {
            Sticky::Header(name) => event.header(name).map(str::to_owned),
            Sticky::Body(field) => event.parameters.get(field).map(|v| match v {
                serde_json::Value::String(s) => s.clone(),
                other => other.to_string(),
            }),
        }
    }
}

/// A stable hash (the same in every process and release) as a point in [0, 1): FNV-1a, then
/// MurmurHash3's 64-bit finalizer, without which FNV's high bits cluster for short similar
/// keys (`user-1`, `user-2`, ...) and the split would not follow the weights.
fn unit_hash(key: &str) -> f64 {
    let mut h: u64 = 0xcbf29ce484222325;
    for b in key.bytes() {
        h ^= b as u64;
        h = h.wrapping_mul(0x100000001b3);
    }
    h ^= h >> 33;
    h = h.wrapping_mul(0xff51afd7ed558ccd);
    h ^= h >> 33;
    h = h.wrapping_mul(0xc4ceb9fe1a85ec53);
    h ^= h >> 33;
    (h >> 11) as f64 / (1u64 << 53) as f64
}

/// Response ids the policy routed, kept for feedback: id → (route, reward counted).
struct Decisions {
    routes: HashMap<String, (usize, bool)>,
    order: VecDeque<String>,
    capacity: usize,
}

impl Decisions {
    fn remember(&mut self, id: &str, route: usize) {
        if self.routes.insert(id.to_owned(), (route, false)).is_none() {
            self.order.push_back(id.to_owned());
            while self.order.len() > self.capacity {
                if let Some(old) = self.order.pop_front() {
                    self.routes.remove(&old);
                }
            }
        }
    }
}

/// The runtime router.
pub struct Router {
    name: String,
    routes: Vec<Route>,
    /// For each route, every model name it makes addressable (itself and nested routes).
    reachable: Vec<Vec<String>>,
    policy: Policy,
    kind: PolicyKind,
    /// Decisions the policy made, for feedback (not with `path`).
    decisions: Option<Mutex<Decisions>>,
    /// Per route: requests routed, rewards received, their sum.
    stats: Mutex<Vec<(u64, u64, f64)>>,
    /// Where the bandit's learning is saved.
    state_file: Option<std::path::PathBuf>,
    /// The arms as last saved or restored.
    saved: Mutex<Vec<crate::bandit::Arm>>,
    shadow: Option<Shadow>,
    /// `servegraph_route_duration_seconds`, per route.
    route_seconds: Vec<servegraph_engine::metrics::Timer>,
    /// Brokers and topic the learning is shared through.
    share: Option<(String, String)>,
    /// When the restored snapshot was saved: sharing replays what was published since.
    restored_at: Mutex<Option<std::time::SystemTime>>,
    /// One more than the restored snapshot's: a router built by a reload (or a restart) owns
    /// the file from then on, and the router it replaced no longer writes it.
    generation: std::sync::atomic::AtomicU64,
    /// Where rewards taken here go, for the other replicas (once sharing started).
    outbox: std::sync::OnceLock<tokio::sync::mpsc::Sender<Vec<u8>>>,
    /// The router itself, shared (to hand to the Kafka task that shares its learning).
    me: std::sync::OnceLock<std::sync::Weak<Router>>,
}

/// A reward one replica took, as the others apply it.
#[derive(serde::Serialize, serde::Deserialize)]
struct SharedReward {
    router: String,
    route: String,
    reward: f64,
}

/// A router's saved learning: each route's bandit numbers, by route name.
#[derive(serde::Serialize, serde::Deserialize)]
struct Snapshot {
    router: String,
    policy: PolicyKind,
    /// When it was written (ms since the Unix epoch): a router that shares its learning
    /// replays the other replicas' rewards from then on.
    #[serde(default)]
    saved_at_ms: Option<u64>,
    /// Which router wrote it: the newest owns the file.
    #[serde(default)]
    generation: u64,
    routes: IndexMap<String, crate::bandit::Arm>,
}

/// Just the owner of a snapshot file.
#[derive(serde::Deserialize)]
struct Owner {
    #[serde(default)]
    generation: u64,
}

impl Router {
    /// Writes the snapshot atomically (a temp file renamed over the old one).
    fn save(&self) -> std::result::Result<(), String> {
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
        let text = serde_json::to_vec_pretty(&snapshot).map_err(|e| e.to_string())?;
        std::fs::write(&tmp, text)
            .and_then(|_| std::fs::rename(&tmp, path))
            .map_err(|e| format!("{}: {e}", path.display()))?;
        *saved = arms;
        Ok(())
    }

    /// Restores a snapshot, if there is one; routes it does not know start afresh.
    fn load(&self) -> std::result::Result<(), String> {
        let (Some(path), Policy::Bandit(b)) = (&self.state_file, &self.policy) else {
            return Ok(());
        };
        *self.saved.lock().expect("not poisoned") = b.lock().expect("not poisoned").arms().to_vec();
        let text = match std::fs::read(path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(format!("{}: {e}", path.display())),
        };
        let snapshot: Snapshot =
            serde_json::from_slice(&text).map_err(|e| format!("{}: {e}", path.display()))?;
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

impl Drop for Router {
    /// The last snapshot, when the graph is let go (at shutdown or reload).
    fn drop(&mut self) {
        if let Err(e) = self.save() {
            tracing::warn!(router = %self.name, error = %e, "could not save the bandit state");
        }
    }
}

/// Builds a `router` step.
pub fn build(node: &StepNode, ctx: &mut BuildContext) -> Option<Box<dyn Step>> {
    let spec: Option<RouterSpec> = ctx.parse(node);
    let policy = PolicySpec::parse(node, ctx);
    let routes = build_routes(node, ctx, &[])?;
    spec?;
    let p = &policy?;
    let span = policy_span(node);
    // Fields that do not apply to the policy's type were refused by its spec; what is left is
    // one field that needs another.
    if p.state_every_ms.is_some() && p.state_file.is_none() {
        ctx.error(
            &node.name,
            &span,
            "`policy.state_every_ms` needs `policy.state_file`",
        );
        return None;
    }
    let shadow = match &p.shadow {
        None => None,
        Some(sh) => {
            let keys: Vec<&str> = routes.iter().map(|r| r.key.as_str()).collect();
            let Some(index) = keys.iter().position(|k| *k == sh.route) else {
                ctx.report(
                    Diagnostic::new(format!(
                        "`shadow.route` names `{}`, which is not a route",
                        sh.route
                    ))
                    .step(&node.name)
                    .at(&span)
                    .help(format!("routes are {}", all_of(&keys))),
                );
                return None;
            };
            let percent = sh.percent.unwrap_or(100.0);
            if !(percent > 0.0 && percent <= 100.0)
                || sh.max_in_flight == Some(0)
                || sh.timeout_ms == Some(0)
            {
                ctx.error(
                    &node.name,
                    &span,
                    "`shadow.percent` must be in (0, 100], `max_in_flight` and `timeout_ms` at least 1",
                );
                return None;
            }
            if routes.len() < 2 {
                ctx.error(
                    &node.name,
                    &span,
                    "a shadow route needs another route to shadow",
                );
                return None;
            }
            Some(Shadow {
                index,
                share: percent / 100.0,
                timeout: std::time::Duration::from_millis(sh.timeout_ms.unwrap_or(10_000)),
                slots: Arc::new(tokio::sync::Semaphore::new(sh.max_in_flight.unwrap_or(64))),
                counts: Arc::new(Default::default()),
            })
        }
    };
    let share = match p.share.as_deref().map(parse_share) {
        None => None,
        Some(Ok(link)) => Some(link),
        Some(Err(e)) => {
            ctx.error(&node.name, &span, e);
            return None;
        }
    };
    let policy = match p.kind {
        PolicyKind::Path => Policy::Path,
        PolicyKind::Weighted => {
            let sticky = match &p.sticky {
                None => None,
                Some(s) => match Sticky::parse(s) {
                    Some(s) => Some(s),
                    None => {
                        ctx.error(
                            &node.name,
                            &span,
                            format!("`sticky: {s}`: expected `header:NAME` or `body:FIELD`"),
                        );
                        return None;
                    }
                },
            };
            weighted(
                node,
                ctx,
                &routes,
                p.weights.as_ref(),
                sticky,
                shadow.as_ref().map(|s| s.index),
            )?
        }
        PolicyKind::EpsilonGreedy | PolicyKind::Ucb1 | PolicyKind::Thompson => {
            let algorithm = match p.kind {
                PolicyKind::EpsilonGreedy => Algorithm::EpsilonGreedy {
                    epsilon: p.epsilon.unwrap_or(0.1),
                    decay: p.decay.unwrap_or(0.0),
                },
                PolicyKind::Ucb1 => Algorithm::Ucb1,
                _ => Algorithm::Thompson {
                    gaussian: p.reward == Some(RewardKind::Gaussian),
                },
            };
            Policy::Bandit(Mutex::new(Bandit::new(
                routes.len(),
                algorithm,
                p.discount,
                p.seed,
            )))
        }
    };
    let decisions = (p.kind != PolicyKind::Path).then(|| {
        Mutex::new(Decisions {
            routes: HashMap::new(),
            order: VecDeque::new(),
            capacity: p.remember.unwrap_or(100_000),
        })
    });
    let kind = p.kind;
    let state_file = p.state_file.as_ref().map(|f| ctx.resolve(f));
    if let Some(file) = &state_file
        && let Err(why) = writable_folder(file)
    {
        ctx.error(
            &node.name,
            &span,
            format!(
                "`policy.state_file` ({}) cannot be written: {why}",
                file.display()
            ),
        );
        return None;
    }
    let state_every = std::time::Duration::from_millis(p.state_every_ms.unwrap_or(10_000).max(100));
    let n_routes = routes.len();
    let reachable = routes
        .iter()
        .map(|r| r.models().into_iter().map(|m| m.name).collect())
        .collect();
    // Only a loaded graph reads and writes the state (validating one must not overwrite it).
    let loading = ctx.mode == servegraph_engine::BuildMode::Load;
    let route_seconds = routes
        .iter()
        .map(|r| servegraph_engine::metrics::route_histogram(&node.name, &r.key))
        .collect();
    let mut router = Router {
        route_seconds,
        name: node.name.clone(),
        routes,
        reachable,
        policy,
        kind,
        decisions,
        stats: Mutex::new(vec![(0, 0, 0.0); n_routes]),
        state_file: state_file.filter(|_| loading),
        saved: Mutex::new(Vec::new()),
        shadow,
        share,
        restored_at: Mutex::new(None),
        me: std::sync::OnceLock::new(),
        generation: std::sync::atomic::AtomicU64::new(1),
        outbox: std::sync::OnceLock::new(),
    };
    if let Err(e) = router.load() {
        // Keep the unreadable file as it is: no snapshot may replace it.
        router.state_file = None;
        ctx.error(
            &node.name,
            &span,
            format!("cannot restore the bandit state: {e}"),
        );
        return None;
    }
    let router = std::sync::Arc::new(router);
    let _ = router.me.set(std::sync::Arc::downgrade(&router));
    if router.state_file.is_some() {
        // Periodic snapshots while the router lives (it holds no strong reference to itself).
        if let Ok(rt) = tokio::runtime::Handle::try_current() {
            let weak = std::sync::Arc::downgrade(&router);
            rt.spawn(async move {
                let mut tick = tokio::time::interval(state_every);
                tick.tick().await;
                loop {
                    tick.tick().await;
                    let Some(r) = weak.upgrade() else { return };
                    if let Err(e) = r.save() {
                        tracing::warn!(router = %r.name, error = %e, "could not save the bandit state");
                    }
                }
            });
        }
    }
    Some(Box::new(router))
}

/// `kafka://HOST:PORT/TOPIC` → brokers and topic.
fn parse_share(url: &str) -> std::result::Result<(String, String), String> {
    url.strip_prefix("kafka://")
        .and_then(|rest| rest.split_once('/'))
        .filter(|(b, t)| !b.is_empty() && !t.is_empty() && !t.contains('/'))
        .map(|(b, t)| (b.to_owned(), t.to_owned()))
        .ok_or_else(|| format!("`share: {url}`: expected kafka://HOST:PORT/TOPIC"))
}

/// Whether a file can be written where `file` is: its folder exists and takes a new file
/// (tried with a probe file, removed at once).
fn writable_folder(file: &std::path::Path) -> std::result::Result<(), String> {
    let folder = match file.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => std::path::Path::new("."),
    };
    if !folder.is_dir() {
        return Err(format!("its folder {} does not exist", folder.display()));
    }
    let probe = folder.join(format!(".servegraph-probe-{}", std::process::id()));
    match std::fs::File::create(&probe) {
        Ok(_) => {
            let _ = std::fs::remove_file(&probe);
            Ok(())
        }
        Err(e) => Err(format!(
            "its folder {} cannot be written ({e})",
            folder.display()
        )),
    }
}

fn policy_span(node: &StepNode) -> marked_yaml::Span {
    node.body
        .get_node("policy")
        .map(|p| *p.span())
        .unwrap_or(node.span)
}

fn weighted(
    node: &StepNode,
    ctx: &mut BuildContext,
    routes: &[Route],
    weights: Option<&IndexMap<String, f64>>,
    sticky: Option<Sticky>,
    shadow: Option<usize>,
) -> Option<Policy> {
    let span = policy_span(node);
    let keys: Vec<&str> = routes.iter().map(|r| r.key.as_str()).collect();
    let mut w = vec![0.0; routes.len()];
    match weights {
        // Equal shares; a shadow route gets none of its own.
        None => w
            .iter_mut()
            .enumerate()
            .for_each(|(i, x)| *x = if Some(i) == shadow { 0.0 } else { 1.0 }),
        Some(map) => {
            for (route, weight) in map {
                let Some(i) = keys.iter().position(|k| k == route) else {
                    ctx.report(
                        Diagnostic::new(format!("`weights` names `{route}`, which is not a route"))
                            .step(&node.name)
                            .at(&span)
                            .help(format!("routes are {}", all_of(&keys))),
                    );
                    return None;
                };
                if !weight.is_finite() || *weight < 0.0 {
                    ctx.error(
                        &node.name,
                        &span,
                        format!("weight of `{route}` must be ≥ 0"),
                    );
                    return None;
                }
                if Some(i) == shadow && *weight > 0.0 {
                    ctx.error(
                        &node.name,
                        &span,
                        format!("`{route}` is the shadow route: it gets copies only, so no weight"),
                    );
                    return None;
                }
                w[i] = *weight;
            }
        }
    }
    let total: f64 = w.iter().sum();
    if total <= 0.0 {
        ctx.error(
            &node.name,
            &span,
            "the weights add up to 0: no route could be chosen",
        );
        return None;
    }
    let cumulative = w
        .iter()
        .scan(0.0, |acc, x| {
            *acc += x;
            Some(*acc)
        })
        .collect();
    Some(Policy::Weighted {
        cumulative,
        total,
        sticky,
    })
}

impl Router {
    /// Which route an event goes to, and whether the policy chose it (rather than the request).
    fn select(&self, event: &Event) -> Result<(usize, bool)> {
        if let Some(target) = &event.target
            && target.model != self.name
        {
            return self.find(target).map(|i| (i, false));
        }
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
                let x = point * total;
                Ok(cumulative
                    .iter()
                    .position(|&c| x < c)
                    .unwrap_or(cumulative.len() - 1))
            }
            Policy::Bandit(b) => Ok(b.lock().expect("not poisoned").choose()),
        };
        chosen.map(|i| (i, true))
    }

    fn record(&self, route: usize, reward: f64) {
        let mut s = self.stats.lock().expect("not poisoned");
        s[route].1 += 1;
        s[route].2 += reward;
    }

    fn reward(&self, route: usize, reward: f64) -> Result<()> {
        match &self.policy {
            Policy::Bandit(b) => b
                .lock()
                .expect("not poisoned")
                .reward(route, reward)
                .map_err(Error::unprocessable),
            // A/B splits keep no model of the rewards; the stats do.
            _ => Ok(()),
        }
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

    /// Hands a reward taken here to the other replicas, when sharing; never waits.
    fn publish(&self, route: usize, reward: f64) {
        let Some(outbox) = self.outbox.get() else {
            return;
        };
        let update = SharedReward {
            router: self.name.clone(),
            route: self.routes[route].key.clone(),
            reward,
        };
        let bytes = serde_json::to_vec(&update).expect("plain data serializes");
        if outbox.try_send(bytes).is_err() {
            tracing::warn!(router = %self.name, "the learning outbox is full: an update was not shared");
        }
    }

    fn route_keys(&self) -> Vec<&str> {
        self.routes.iter().map(|r| r.key.as_str()).collect()
    }
}

impl Router {
    /// Sends a copy of the request to the shadow route on its own task: bounded, timed out,
    /// its answer (or error) recorded in tracking when the request is tracked, never returned.
    fn mirror(&self, shadow: &Shadow, event: &Event) {
        use std::sync::atomic::Ordering::Relaxed;
        if shadow.share < 1.0 && rand::rng().random::<f64>() >= shadow.share {
            return;
        }
        let Ok(slot) = Arc::clone(&shadow.slots).try_acquire_owned() else {
            shadow.counts[1].fetch_add(1, Relaxed);
            return;
        };
        shadow.counts[0].fetch_add(1, Relaxed);
        let route = &self.routes[shadow.index];
        let step = Arc::clone(&route.step);
        let (key, name, version) = (route.key.clone(), route.name.clone(), route.version.clone());
        let router = self.name.clone();
        let mut copy = event.clone();
        copy.routes.push((router, key.clone()));
        copy.step_microsec = None;
        let tracker = servegraph_engine::tracking::current();
        // The request's tensors again only when the copy's answer is tracked.
        let tracked = tracker.map(|t| (t, event.id.clone(), event.tensors.clone()));
        let (timeout, counts) = (shadow.timeout, Arc::clone(&shadow.counts));
        tokio::spawn(async move {
            let _slot = slot;
            let when = std::time::SystemTime::now();
            let start = std::time::Instant::now();
            let (resp, error) = match tokio::time::timeout(timeout, step.process(copy)).await {
                Ok(Ok(done)) => (Some(done.into_data().tensors), None),
                Ok(Err(e)) => (None, Some(e.in_step(&key).to_string())),
                Err(_) => (
                    None,
                    Some(format!("shadow route `{key}` timed out after {timeout:?}")),
                ),
            };
            if error.is_some() {
                counts[2].fetch_add(1, Relaxed);
                tracing::debug!(route = %key, error = ?error, "shadow copy failed");
            }
            if let Some((tracker, id, request)) = tracked {
                tracker.emit(servegraph_engine::tracking::TrackingEvent {
                    id,
                    when,
                    graph: tracker.graph().to_owned(),
                    model: name,
                    version,
                    route: Some(key),
                    explain: false,
                    request,
                    resp,
                    error,
                    microsec: start.elapsed().as_micros() as u64,
                    step_microsec: Vec::new(),
                    shadow: true,
                });
            }
        });
    }
}

impl servegraph_engine::Replicated for Router {
    fn connect(&self, outbox: tokio::sync::mpsc::Sender<Vec<u8>>) {
        let _ = self.outbox.set(outbox);
    }

    fn learn(&self, message: &[u8]) -> std::result::Result<(), String> {
        let update: SharedReward =
            serde_json::from_slice(message).map_err(|e| format!("malformed update: {e}"))?;
        if update.router != self.name {
            return Err(format!(
                "an update for router `{}` reached router `{}`",
                update.router, self.name
            ));
        }
        let index = self
            .routes
            .iter()
            .position(|r| r.key == update.route)
            .ok_or_else(|| format!("router `{}` has no route `{}`", self.name, update.route))?;
        self.reward(index, update.reward)
            .map_err(|e| e.to_string())?;
        self.record(index, update.reward);
        Ok(())
    }
}

#[async_trait]
impl Step for Router {
    async fn process(&self, mut event: Event) -> Result<Event> {
        let (index, by_policy) = self.select(&event)?;
        if let Some(shadow) = &self.shadow
            && index != shadow.index
        {
            self.mirror(shadow, &event);
        }
        if by_policy && let Some(d) = &self.decisions {
            d.lock().expect("not poisoned").remember(&event.id, index);
        }
        self.stats.lock().expect("not poisoned")[index].0 += 1;
        let route = &self.routes[index];
        event.routes.push((self.name.clone(), route.key.clone()));
        // The same cheap clock as the engine's step timing.
        let start = quanta::Instant::now();
        let result = route.step.process(event).await;
        self.route_seconds[index].observe(start.elapsed());
        result.map_err(|e| e.in_step(&route.key))
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

    fn platform(&self) -> &str {
        "servegraph_router"
    }

    fn headers(&self) -> Vec<String> {
        match &self.policy {
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
        }
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
            m.contains("unknown `policy.type` `random` (expected one of `path`, `weighted`, `epsilon_greedy`, `ucb1` or `thompson`)"),
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
