//! The contextual routers' policies as `servegraph evaluate` candidates: a graph file's
//! `squarecb`, `linucb` or `lin_thompson` router, replayed over the logged decisions
//! (progressive validation: each decision is scored with the model learnt from the decisions
//! before it, then the model learns from the logged route and reward, as the serving router
//! learns from feedback).
//!
//! The candidate reads each decision's logged `context`, so its `features` must be the logging
//! router's: the widths must add up to the logged context's length (the intercept included),
//! else it is refused. Registered with the engine by [`register`].

use servegraph_engine::evaluate::{Candidate, LoggedDecision, register_policy_candidates};
use servegraph_engine::step::{BuildContext, BuildMode, Registry, StepNode};

use crate::contextual::Contextual;
use crate::router::PolicySpec;

/// Lets `servegraph evaluate` build candidates from contextual routers' graph files.
pub fn register() {
    register_policy_candidates(build);
}

/// The candidate of a graph file's router `policy`, when its type is contextual.
fn build(
    label: &str,
    kind: &str,
    policy: &marked_yaml::Node,
) -> Option<Result<Box<dyn Candidate>, String>> {
    if !matches!(kind, "squarecb" | "linucb" | "lin_thompson") {
        return None;
    }
    Some(candidate(label, policy))
}

fn candidate(label: &str, policy: &marked_yaml::Node) -> Result<Box<dyn Candidate>, String> {
    // The router's own reading of `policy`: the same fields, defaults and checks as serving.
    let mut body = marked_yaml::types::MarkedMappingNode::new_empty(policy.span().to_owned());
    body.insert(
        marked_yaml::types::MarkedScalarNode::new(marked_yaml::Span::new_blank(), "policy"),
        policy.clone(),
    );
    let node = StepNode {
        name: "candidate".into(),
        kind: "router".into(),
        span: policy.span().to_owned(),
        body,
    };
    let registry = Registry::new();
    let mut ctx = BuildContext::new(&registry, std::path::Path::new("."), BuildMode::Structural);
    let spec = PolicySpec::parse(&node, &mut ctx);
    let problems = ctx.into_diagnostics();
    let Some(spec) = spec.filter(|_| problems.is_empty()) else {
        let why: Vec<String> = problems.iter().map(|d| d.message.clone()).collect();
        return Err(format!("`policy`: {}", why.join("; ")));
    };
    let kind = spec.kind.contextual().expect("a contextual type");
    let features = spec
        .features
        .as_deref()
        .ok_or("`policy.features` is needed: the candidate reads the logged context")?;
    let mut dim = 1;
    for (i, f) in features.iter().enumerate() {
        dim += f
            .width()
            .map_err(|why| format!("`policy.features[{i}]`: {why}"))?;
    }
    let params = spec.contextual_params(kind, spec.seed.unwrap_or(0));
    Ok(Box::new(Replayed {
        label: label.to_owned(),
        params,
        dim,
        policy: None,
    }))
}

/// A contextual policy replayed over the logs; built at the first decision (its routes).
struct Replayed {
    label: String,
    params: crate::contextual::ContextualParams,
    dim: usize,
    policy: Option<Contextual>,
}

impl Replayed {
    fn policy(&mut self, routes: usize) -> &mut Contextual {
        let (params, dim) = (&self.params, self.dim);
        self.policy
            .get_or_insert_with(|| Contextual::new(params.clone(), routes, dim))
    }
}

impl Candidate for Replayed {
    fn name(&self) -> String {
        self.label.clone()
    }

    fn pmf(&mut self, d: &LoggedDecision) -> Vec<f64> {
        let x = d
            .context
            .as_deref()
            .expect("checked: the decisions carry a context");
        self.policy(d.routes.len()).pmf(x)
    }

    fn learn(&mut self, d: &LoggedDecision, reward: f64) {
        if let Some(x) = d.context.as_deref() {
            let routes = d.routes.len();
            // A reward out of the policy's range is the logging router's to refuse; the
            // replay skips it as serving would.
            let _ = self.policy(routes).learn(d.chosen, x, reward);
        }
    }

    fn check(&self, routes: &[String], context: Option<usize>) -> Result<(), String> {
        let Some(logged) = context else {
            return Err(format!(
                "{}: a contextual policy needs each decision's `context`, which the logging router writes when it declares `policy.features`",
                self.label
            ));
        };
        if logged != self.dim {
            return Err(format!(
                "{}: its `features` make {} numbers with the intercept, the logged context has {logged}: a candidate must read the logging router's features",
                self.label, self.dim
            ));
        }
        self.params.check(routes.len())
    }
}
