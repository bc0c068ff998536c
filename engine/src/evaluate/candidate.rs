//! Candidate policies `servegraph evaluate` scores on logged decisions: each gives its pmf
//! over the decision's routes (in the logged order), and may learn from each decision's
//! reward after it was scored (offline replay: a learning candidate is scored on every
//! decision before it learns from it, i.e. progressive validation).
//!
//! The policy types the engine does not know (the contextual routers of the steps crate) come
//! from a function registered with [`register_policy_candidates`], which [`from_policy`] asks
//! first: the `servegraph` binary registers the steps crate's.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::OnceLock;

use super::LoggedDecision;

/// A policy scored on logged decisions.
pub trait Candidate {
    /// Its name in reports (what `--candidate` said).
    fn name(&self) -> String;
    /// Its probability of each of `d.routes`.
    fn pmf(&mut self, d: &LoggedDecision) -> Vec<f64>;
    /// The decision's reward, once `d` has been scored.
    fn learn(&mut self, _d: &LoggedDecision, _reward: f64) {}
    /// Whether it can act on these routes, given the length of the decisions' logged
    /// `context` (`None` without one); an error naming what is wrong otherwise.
    fn check(&self, _routes: &[String], _context: Option<usize>) -> Result<(), String> {
        Ok(())
    }
}

/// Always the same route.
pub struct Always(pub String);

impl Candidate for Always {
    fn name(&self) -> String {
        format!("always:{}", self.0)
    }
    fn pmf(&mut self, d: &LoggedDecision) -> Vec<f64> {
        d.routes
            .iter()
            .map(|r| if *r == self.0 { 1.0 } else { 0.0 })
            .collect()
    }
    fn check(&self, routes: &[String], _: Option<usize>) -> Result<(), String> {
        known(&self.name(), routes, [&self.0])
    }
}

fn known<'a>(
    name: &str,
    routes: &[String],
    named: impl IntoIterator<Item = &'a String>,
) -> Result<(), String> {
    for r in named {
        if !routes.contains(r) {
            return Err(format!(
                "candidate `{name}`: unknown route `{r}`; the router's routes are {}",
                routes
                    .iter()
                    .map(|r| format!("`{r}`"))
                    .collect::<Vec<_>>()
                    .join(", ")
            ));
        }
    }
    Ok(())
}

/// Every route alike.
pub struct Uniform;

impl Candidate for Uniform {
    fn name(&self) -> String {
        "uniform".into()
    }
    fn pmf(&mut self, d: &LoggedDecision) -> Vec<f64> {
        vec![1.0 / d.routes.len() as f64; d.routes.len()]
    }
}

/// A weighted split (routes not named get 0).
pub struct Weights {
    pub label: String,
    pub weights: BTreeMap<String, f64>,
}

impl Candidate for Weights {
    fn name(&self) -> String {
        self.label.clone()
    }
    fn pmf(&mut self, d: &LoggedDecision) -> Vec<f64> {
        let w: Vec<f64> = d
            .routes
            .iter()
            .map(|r| self.weights.get(r).copied().unwrap_or(0.0))
            .collect();
        let total: f64 = w.iter().sum();
        w.iter().map(|x| x / total).collect()
    }
    fn check(&self, routes: &[String], _: Option<usize>) -> Result<(), String> {
        known(&self.label, routes, self.weights.keys())
    }
}

/// The logging policy itself (its logged pmf): the on-policy check.
pub struct Logging;

impl Candidate for Logging {
    fn name(&self) -> String {
        "logging".into()
    }
    fn pmf(&mut self, d: &LoggedDecision) -> Vec<f64> {
        d.pmf.clone()
    }
}

/// Per-route online ridge regression (A = I + Σ x·xᵀ, b = Σ r·x; A⁻¹ by Sherman–Morrison),
/// greedy on θ·x with ε spread evenly (ε = 0: pure greedy), learning each decision's reward
/// after scoring it. Also what the research notes call the "learned greedy" target.
pub struct GreedyRidge {
    pub epsilon: f64,
    state: Option<RidgeState>,
}

struct RidgeState {
    d: usize,
    a_inv: Vec<Vec<f64>>,
    b: Vec<Vec<f64>>,
}

impl GreedyRidge {
    pub fn new(epsilon: f64) -> GreedyRidge {
        GreedyRidge {
            epsilon,
            state: None,
        }
    }

    fn state(&mut self, k: usize, d: usize) -> &mut RidgeState {
        self.state.get_or_insert_with(|| {
            let mut eye = vec![0.0; d * d];
            for i in 0..d {
                eye[i * d + i] = 1.0;
            }
            RidgeState {
                d,
                a_inv: vec![eye; k],
                b: vec![vec![0.0; d]; k],
            }
        })
    }
}

impl RidgeState {
    fn predict(&self, route: usize, x: &[f64]) -> f64 {
        let d = self.d;
        let a = &self.a_inv[route];
        let b = &self.b[route];
        // θ = A⁻¹ b; θ·x = bᵀ A⁻¹ x (A⁻¹ symmetric).
        (0..d)
            .map(|i| x[i] * (0..d).map(|j| a[i * d + j] * b[j]).sum::<f64>())
            .sum()
    }
}

impl Candidate for GreedyRidge {
    fn name(&self) -> String {
        if self.epsilon > 0.0 {
            format!("greedy-ridge:{}", self.epsilon)
        } else {
            "greedy-ridge".into()
        }
    }
    fn pmf(&mut self, d: &LoggedDecision) -> Vec<f64> {
        let k = d.routes.len();
        let Some(x) = d.context.as_deref() else {
            return vec![1.0 / k as f64; k];
        };
        let eps = self.epsilon;
        let s = self.state(k, x.len());
        let best = (0..k)
            .map(|a| s.predict(a, x))
            .enumerate()
            .fold((0, f64::NEG_INFINITY), |(bi, bv), (i, v)| {
                if v > bv { (i, v) } else { (bi, bv) }
            })
            .0;
        let mut pmf = vec![eps / k as f64; k];
        pmf[best] += 1.0 - eps;
        pmf
    }
    fn learn(&mut self, d: &LoggedDecision, reward: f64) {
        let Some(x) = d.context.as_deref() else {
            return;
        };
        let s = self.state(d.routes.len(), x.len());
        let dd = s.d;
        let a = &mut s.a_inv[d.chosen];
        let ax: Vec<f64> = (0..dd)
            .map(|i| (0..dd).map(|j| a[i * dd + j] * x[j]).sum())
            .collect();
        let denom = 1.0 + x.iter().zip(&ax).map(|(p, q)| p * q).sum::<f64>();
        for i in 0..dd {
            for j in 0..dd {
                a[i * dd + j] -= ax[i] * ax[j] / denom;
            }
        }
        for (b, xi) in s.b[d.chosen].iter_mut().zip(x) {
            *b += reward * xi;
        }
    }
    fn check(&self, _: &[String], context: Option<usize>) -> Result<(), String> {
        if context.is_some() {
            Ok(())
        } else {
            Err(format!(
                "candidate `{}` needs the decisions' `context` (a router with `features:`), and they have none",
                self.name()
            ))
        }
    }
}

/// A `--candidate` argument: `always:ROUTE`, `uniform`, `weights:ROUTE=W,...`, `logging`,
/// `greedy-ridge[:EPSILON]`, or a graph file `PATH.yaml[#ROUTER]` (its router's `policy:`).
pub fn parse_candidate(spec: &str) -> Result<Box<dyn Candidate>, String> {
    let spec = spec.trim();
    if let Some(route) = spec.strip_prefix("always:") {
        if route.is_empty() {
            return Err("`always:` needs a route: `always:ROUTE`".into());
        }
        return Ok(Box::new(Always(route.to_owned())));
    }
    if spec == "uniform" {
        return Ok(Box::new(Uniform));
    }
    if spec == "logging" {
        return Ok(Box::new(Logging));
    }
    if spec == "greedy-ridge" {
        return Ok(Box::new(GreedyRidge::new(0.0)));
    }
    if let Some(eps) = spec.strip_prefix("greedy-ridge:") {
        let e: f64 = eps
            .parse()
            .ok()
            .filter(|e| (0.0..=1.0).contains(e))
            .ok_or_else(|| format!("`{spec}`: ε `{eps}` is not a number in [0, 1]"))?;
        return Ok(Box::new(GreedyRidge::new(e)));
    }
    if let Some(list) = spec.strip_prefix("weights:") {
        let mut weights = BTreeMap::new();
        for part in list.split(',').filter(|p| !p.trim().is_empty()) {
            let (route, w) = part
                .split_once('=')
                .ok_or_else(|| format!("`{spec}`: `{part}` is not ROUTE=WEIGHT"))?;
            let w: f64 = w
                .trim()
                .parse()
                .ok()
                .filter(|w: &f64| w.is_finite() && *w >= 0.0)
                .ok_or_else(|| {
                    format!("`{spec}`: weight `{w}` of `{route}` is not a number ≥ 0")
                })?;
            weights.insert(route.trim().to_owned(), w);
        }
        if weights.values().sum::<f64>() <= 0.0 {
            return Err(format!("`{spec}`: the weights sum to 0"));
        }
        return Ok(Box::new(Weights {
            label: spec.to_owned(),
            weights,
        }));
    }
    let (path, router) = match spec.split_once('#') {
        Some((p, r)) => (p, Some(r)),
        None => (spec, None),
    };
    if path.ends_with(".yaml") || path.ends_with(".yml") {
        return from_graph_file(spec, Path::new(path), router);
    }
    Err(format!(
        "unknown candidate `{spec}`: one of `always:ROUTE`, `uniform`, `weights:ROUTE=W,...`, `logging`, `greedy-ridge[:EPSILON]`, or a graph file `PATH.yaml[#ROUTER]`"
    ))
}

/// The router steps of a graph file: (name, policy node).
fn routers(
    node: &marked_yaml::Node,
    name: Option<&str>,
    out: &mut Vec<(String, marked_yaml::Node)>,
) {
    match node {
        marked_yaml::Node::Mapping(m) => {
            if m.get_scalar("kind").map(|k| k.as_str()) == Some("router") {
                let step = m
                    .get_scalar("name")
                    .map(|n| n.as_str().to_owned())
                    .or_else(|| name.map(str::to_owned))
                    .unwrap_or_default();
                if let Some(p) = m.get_node("policy") {
                    out.push((step, p.clone()));
                } else {
                    out.push((step, marked_yaml::Node::from("path")));
                }
            }
            for (k, v) in m.iter() {
                routers(v, Some(k.as_str()), out);
            }
        }
        marked_yaml::Node::Sequence(s) => {
            for v in s.iter() {
                routers(v, name, out);
            }
        }
        marked_yaml::Node::Scalar(_) => {}
    }
}

fn from_graph_file(
    spec: &str,
    path: &Path,
    router: Option<&str>,
) -> Result<Box<dyn Candidate>, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let root = marked_yaml::parse_yaml(0, &text)
        .map_err(|e| format!("{}: not YAML: {e}", path.display()))?;
    let graph_name = root
        .as_mapping()
        .and_then(|m| m.get_scalar("name"))
        .map(|n| n.as_str().to_owned());
    let mut found = Vec::new();
    if let Some(m) = root.as_mapping() {
        // `graph: {kind: router}` is named after the graph.
        if let Some(g) = m.get_node("graph") {
            routers(g, graph_name.as_deref(), &mut found);
        }
        for (k, v) in m.iter() {
            if k.as_str() != "graph" {
                routers(v, None, &mut found);
            }
        }
    }
    let names = || {
        found
            .iter()
            .map(|(n, _)| format!("`{n}`"))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let (name, policy) = match router {
        Some(r) => found.iter().find(|(n, _)| n == r).cloned().ok_or_else(|| {
            format!(
                "{}: no router step `{r}`; its routers: {}",
                path.display(),
                names()
            )
        })?,
        None if found.len() == 1 => found[0].clone(),
        None if found.is_empty() => {
            return Err(format!("{}: no router step", path.display()));
        }
        None => {
            return Err(format!(
                "{}: several routers ({}): name one, `{}#ROUTER`",
                path.display(),
                names(),
                path.display()
            ));
        }
    };
    from_policy(spec, &name, &policy)
        .map_err(|e| format!("{}: router `{name}`: {e}", path.display()))
}

/// The candidate of a router's `policy:` node.
/// Builds a candidate from a graph file's router `policy` of a type the engine does not know:
/// (the candidate's label, the policy's `type`, the `policy` node); `None` when the type is
/// not one it builds.
pub type PolicyCandidates =
    fn(&str, &str, &marked_yaml::Node) -> Option<Result<Box<dyn Candidate>, String>>;

static POLICY_CANDIDATES: OnceLock<PolicyCandidates> = OnceLock::new();

/// Registers the builder of candidates for policy types defined outside the engine (once per
/// process; a second registration is ignored).
pub fn register_policy_candidates(f: PolicyCandidates) {
    let _ = POLICY_CANDIDATES.set(f);
}

fn from_policy(
    spec: &str,
    _router: &str,
    policy: &marked_yaml::Node,
) -> Result<Box<dyn Candidate>, String> {
    let map = policy.as_mapping();
    let kind = match (policy.as_scalar(), map) {
        (Some(s), _) => s.as_str().to_owned(),
        (None, Some(m)) => m
            .get_scalar("type")
            .map(|t| t.as_str().to_owned())
            .unwrap_or_else(|| "path".into()),
        _ => return Err("`policy` is neither a type nor a mapping".into()),
    };
    if let Some(build) = POLICY_CANDIDATES.get()
        && let Some(candidate) = build(spec, &kind, policy)
    {
        return candidate;
    }
    match kind.as_str() {
        "weighted" | "weights" => {
            if map.and_then(|m| m.get_node("sticky")).is_some() {
                return Err("`policy.sticky`: a sticky split assigns per key, not per request; evaluate its weights with `--candidate weights:...` and cluster by the key".into());
            }
            let Some(w) = map.and_then(|m| m.get_mapping("weights")) else {
                return Ok(Box::new(Named(spec.to_owned(), Box::new(Uniform))));
            };
            let mut weights = BTreeMap::new();
            for (route, v) in w.iter() {
                let x: f64 = v
                    .as_scalar()
                    .and_then(|s| s.as_str().parse().ok())
                    .filter(|x: &f64| x.is_finite() && *x >= 0.0)
                    .ok_or_else(|| {
                        format!("`policy.weights.{}` is not a number ≥ 0", route.as_str())
                    })?;
                weights.insert(route.as_str().to_owned(), x);
            }
            if weights.values().sum::<f64>() <= 0.0 {
                return Err("`policy.weights` sum to 0".into());
            }
            Ok(Box::new(Weights {
                label: spec.to_owned(),
                weights,
            }))
        }
        // Built by the steps crate's registered builder (`servegraph` registers it).
        "squarecb" | "linucb" | "lin_thompson" => Err(format!(
            "policy type `{kind}` (contextual) is built by the steps crate, which this program did not register (servegraph_steps::evaluate)"
        )),
        other => Err(format!(
            "policy type `{other}` cannot be evaluated as a candidate: `weighted` can (or the built-in candidates: always:, uniform, weights:, logging, greedy-ridge)"
        )),
    }
}

/// A candidate under another name (a graph file's).
struct Named(String, Box<dyn Candidate>);

impl Candidate for Named {
    fn name(&self) -> String {
        self.0.clone()
    }
    fn pmf(&mut self, d: &LoggedDecision) -> Vec<f64> {
        self.1.pmf(d)
    }
    fn learn(&mut self, d: &LoggedDecision, reward: f64) {
        self.1.learn(d, reward)
    }
    fn check(&self, routes: &[String], context: Option<usize>) -> Result<(), String> {
        self.1.check(routes, context)
    }
}
