//! A router's YAML: `RouterSpec`, one spec per `policy.type`, `shadow`, and their schemas.

use indexmap::IndexMap;
use schemars::JsonSchema;
use serde::Deserialize;
use servegraph_engine::diag::Diagnostic;
use servegraph_engine::{BuildContext, StepNode};

pub use super::features::FeatureSpec;

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
    /// MLRun's router class (a serving function's `spec.graph`): `mlrun.serving.ModelRouter`
    /// (MLRun's default: by the model the URL or body names) is `policy: {type: path}`; any
    /// other is refused, naming servegraph's equivalent.
    #[serde(default)]
    pub class_name: Option<String>,
    /// MLRun's router class arguments: only empty ones are taken (ModelRouter has none that
    /// change routing).
    #[serde(default)]
    pub class_args: Option<serde_json::Map<String, serde_json::Value>>,
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
            /// The routes the bandit chooses among, its arms (at least one). Default: every
            /// route the graph file declares. A route the model repository added (a deployed
            /// model) takes part only when listed here; otherwise it gets only the requests
            /// that name it.
            #[serde(default)]
            pub arms: Option<Vec<String>>,
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
            /// How `GET /v2/models/{router}/experiment` reads the experiment out (see
            /// [`ExperimentSpec`]).
            #[serde(default)]
            pub experiment: Option<ExperimentSpec>,
            /// The request's features (see [`FeatureSpec`]): a contextual policy's input;
            /// any policy logs them with its decisions (`context`) for offline evaluation.
            #[serde(default)]
            pub features: Option<Vec<FeatureSpec>>,
        }

        impl From<$name> for PolicySpec {
            #[allow(unused_mut)]
            fn from(p: $name) -> PolicySpec {
                let mut spec = PolicySpec {
                    arms: p.arms,
                    discount: p.discount,
                    seed: p.seed,
                    state_file: p.state_file,
                    state_every_ms: p.state_every_ms,
                    share: p.share,
                    remember: p.remember,
                    experiment: p.experiment,
                    features: p.features,
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
    /// Route → relative weight (≥ 0). Routes not listed get 0; none listed: equal shares of
    /// the routes the graph file declares (a route the model repository added, a deployed
    /// model, gets a share only when listed here).
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
    /// How `GET /v2/models/{router}/experiment` reads the experiment out (see
    /// [`ExperimentSpec`]).
    #[serde(default)]
    pub experiment: Option<ExperimentSpec>,
    /// The request's features (see [`FeatureSpec`]), logged with each decision (`context`)
    /// so that other policies can be evaluated offline on this router's logs.
    #[serde(default)]
    pub features: Option<Vec<FeatureSpec>>,
}

/// `experiment:` under a `weighted` or bandit policy: the tuning of its readout.
#[derive(Clone, Debug, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ExperimentSpec {
    /// The route the others are compared with. Default: the first route the policy chooses
    /// among (the first with a weight, the first arm).
    #[serde(default)]
    pub control: Option<String>,
    /// The planned sample (rewarded decisions of a route and the control together) at which
    /// the always-valid confidence sequence is tightest (default 5000).
    #[serde(default)]
    #[schemars(range(min = 1))]
    pub planned_n: Option<u64>,
    /// The false-positive rate of the always-valid test, and 1 − the sequence's coverage
    /// (default 0.05).
    #[serde(default)]
    #[schemars(extend("exclusiveMinimum" = 0, "maximum" = 0.5))]
    pub alpha: Option<f64>,
    /// Rewarded decisions every route needs before any verdict (default 100).
    #[serde(default)]
    #[schemars(range(min = 1))]
    pub min_sample: Option<u64>,
}

/// A number ≥ 0 (for the schema).
#[derive(JsonSchema)]
#[allow(dead_code)]
pub(super) struct NonNegative(#[schemars(range(min = 0))] f64);

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

bandit_policy! {
    /// `policy: {type: squarecb}`: a contextual policy; each route's reward is predicted from
    /// the request's `features` (online ridge regression), and routes are sampled with
    /// p(a) = 1 / (K + γ_t (ŷ_best − ŷ_a)), the best taking the rest (exact propensities).
    SquareCbPolicy {
        /// γ₀ in γ_t = γ₀ √t, t the rewards learnt + 1 (default 10): larger exploits sooner.
        #[schemars(range(min = 0))]
        gamma: Option<f64>,
        /// The smallest probability of any route (default 0, at most 1/K): every route stays
        /// evaluable offline, at some reward (≈ 0.5 point at 5 %/K in the research simulation).
        #[schemars(range(min = 0, max = 1))]
        min_prob: Option<f64>,
        /// λ of each route's ridge regression, A = λI + Σ x xᵀ (default 1).
        #[schemars(extend("exclusiveMinimum" = 0))]
        ridge: Option<f64>,
    }
}

bandit_policy! {
    /// `policy: {type: linucb}`: a contextual policy; the route of the largest
    /// θ·x + α √(xᵀA⁻¹x). It never randomises (its logs are not evaluable offline) unless
    /// `epsilon` > 0.
    LinUcbPolicy {
        /// The width of the confidence bonus (default 0.5).
        #[schemars(range(min = 0))]
        alpha: Option<f64>,
        /// The share of decisions spread uniformly over the routes (default 0).
        #[schemars(range(min = 0, max = 1))]
        epsilon: Option<f64>,
        /// λ of each route's ridge regression (default 1).
        #[schemars(extend("exclusiveMinimum" = 0))]
        ridge: Option<f64>,
    }
}

bandit_policy! {
    /// `policy: {type: lin_thompson}`: a contextual policy; linear Thompson sampling, its
    /// pmf (the chance each route is best) estimated from 32 posterior draws and sampled.
    LinThompsonPolicy {
        /// The posterior's scale: θ̃ ~ N(θ, v² A⁻¹) (default 0.25).
        #[schemars(range(min = 0))]
        v: Option<f64>,
        /// The smallest probability of any route (default 0, at most 1/K).
        #[schemars(range(min = 0, max = 1))]
        min_prob: Option<f64>,
        /// λ of each route's ridge regression (default 1).
        #[schemars(extend("exclusiveMinimum" = 0))]
        ridge: Option<f64>,
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
            experiment: p.experiment,
            features: p.features,
            ..PolicySpec::default()
        }
    }
}

/// The policy types, as `type:` names them.
pub const POLICY_TYPES: [&str; 9] = [
    "path",
    "weighted",
    "epsilon_greedy",
    "ucb1",
    "thompson",
    "squarecb",
    "linucb",
    "lin_thompson",
    "seldon",
];

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
                ("squarecb", schemars::schema_for!(SquareCbPolicy).to_value()),
                ("linucb", schemars::schema_for!(LinUcbPolicy).to_value()),
                (
                    "lin_thompson",
                    schemars::schema_for!(LinThompsonPolicy).to_value(),
                ),
                (
                    "seldon",
                    schemars::schema_for!(crate::model::python::PythonSpec).to_value(),
                ),
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
        if kind == "seldon" {
            // A Seldon ROUTER class: its fields are a `class: python` model's, read when the
            // router builds it.
            return Some(PolicySpec {
                kind: PolicyKind::Seldon,
                component: body.as_mapping().cloned(),
                ..PolicySpec::default()
            });
        }
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
            "squarecb" => read::<SquareCbPolicy>(&body, &what),
            "linucb" => read::<LinUcbPolicy>(&body, &what),
            "lin_thompson" => read::<LinThompsonPolicy>(&body, &what),
            _ => read::<ThompsonPolicy>(&body, &what),
        };
        match parsed {
            Ok(mut spec) => {
                spec.kind = match kind {
                    "path" => PolicyKind::Path,
                    "weighted" => PolicyKind::Weighted,
                    "epsilon_greedy" => PolicyKind::EpsilonGreedy,
                    "ucb1" => PolicyKind::Ucb1,
                    "squarecb" => PolicyKind::SquareCb,
                    "linucb" => PolicyKind::LinUcb,
                    "lin_thompson" => PolicyKind::LinThompson,
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

impl PolicySpec {
    /// A contextual policy's parameters: the fields given, else `kind`'s defaults.
    pub fn contextual_params(
        &self,
        kind: crate::contextual::ContextualKind,
        seed: u64,
    ) -> crate::contextual::ContextualParams {
        let defaults = crate::contextual::ContextualParams::new(kind, seed);
        crate::contextual::ContextualParams {
            gamma: self.gamma.unwrap_or(defaults.gamma),
            min_prob: self.min_prob.unwrap_or(defaults.min_prob),
            alpha: self.alpha.unwrap_or(defaults.alpha),
            epsilon: self.epsilon.unwrap_or(defaults.epsilon),
            v: self.v.unwrap_or(defaults.v),
            ridge: self.ridge.unwrap_or(defaults.ridge),
            ..defaults
        }
    }
}

/// `policy`, as the router uses it: every type's fields in one place (those that do not apply
/// to the type are `None`; the type's own spec refused them).
#[derive(Debug, Default)]
pub struct PolicySpec {
    pub kind: PolicyKind,
    /// `weighted`: route → relative weight (≥ 0). Routes not listed get 0; none listed: equal
    /// shares of the graph file's routes.
    pub weights: Option<IndexMap<String, f64>>,
    /// Bandits: the routes chosen among (default: the graph file's routes).
    pub arms: Option<Vec<String>>,
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
    /// `seldon`: the Seldon ROUTER class (`route()`, `send_feedback()`), as a `class: python`
    /// model's fields.
    pub component: Option<marked_yaml::types::MarkedMappingNode>,
    /// `weighted` and bandits: the tuning of the experiment's readout.
    pub experiment: Option<ExperimentSpec>,
    /// `weighted`, bandits and contextual policies: the request's features.
    pub features: Option<Vec<FeatureSpec>>,
    /// `squarecb`: γ₀ (default 10).
    pub gamma: Option<f64>,
    /// `squarecb`, `lin_thompson`: the smallest probability of any route (default 0).
    pub min_prob: Option<f64>,
    /// `linucb`: the confidence bonus's width (default 0.5).
    pub alpha: Option<f64>,
    /// `lin_thompson`: the posterior's scale (default 0.25).
    pub v: Option<f64>,
    /// Contextual policies: λ of the ridge regressions (default 1).
    pub ridge: Option<f64>,
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
    /// SquareCB over the request's features (contextual).
    #[serde(rename = "squarecb")]
    SquareCb,
    /// LinUCB over the request's features (contextual).
    #[serde(rename = "linucb")]
    LinUcb,
    /// Linear Thompson sampling over the request's features (contextual).
    #[serde(rename = "lin_thompson")]
    LinThompson,
    /// A Seldon ROUTER class: its `route()` says the route (`-1`: all, `-2`: none), and it
    /// learns through its `send_feedback()`.
    Seldon,
}

impl PolicyKind {
    /// The contextual algorithm of a contextual policy.
    pub fn contextual(self) -> Option<crate::contextual::ContextualKind> {
        use crate::contextual::ContextualKind;
        match self {
            PolicyKind::SquareCb => Some(ContextualKind::SquareCb),
            PolicyKind::LinUcb => Some(ContextualKind::LinUcb),
            PolicyKind::LinThompson => Some(ContextualKind::LinThompson),
            _ => None,
        }
    }

    /// The spelling of `policy.type`.
    pub fn as_str(self) -> &'static str {
        match self {
            PolicyKind::Path => "path",
            PolicyKind::Weighted => "weighted",
            PolicyKind::EpsilonGreedy => "epsilon_greedy",
            PolicyKind::Ucb1 => "ucb1",
            PolicyKind::Thompson => "thompson",
            PolicyKind::SquareCb => "squarecb",
            PolicyKind::LinUcb => "linucb",
            PolicyKind::LinThompson => "lin_thompson",
            PolicyKind::Seldon => "seldon",
        }
    }
}

/// Where a policy's `experiment` is written (else where its `policy` is).
pub(super) fn experiment_span(node: &StepNode) -> marked_yaml::Span {
    node.body
        .get_node("policy")
        .and_then(|p| p.as_mapping())
        .and_then(|p| p.get_node("experiment"))
        .map(|e| *e.span())
        .unwrap_or_else(|| policy_span(node))
}

/// Where a step's `policy` is written (the step itself when it has none).
pub(super) fn policy_span(node: &StepNode) -> marked_yaml::Span {
    node.body
        .get_node("policy")
        .map(|p| *p.span())
        .unwrap_or(node.span)
}
