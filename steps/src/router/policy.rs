//! The policy at run time: by name, weighted (sticky or not), or a bandit; built from its spec.

use indexmap::IndexMap;
use servegraph_engine::diag::{Diagnostic, all_of};
use servegraph_engine::{BuildContext, Event, StepNode};

use super::spec::policy_span;
use crate::routes::Route;

pub(super) enum Policy {
    Path,
    /// Cumulative weights, one per route, and their total.
    Weighted {
        cumulative: Vec<f64>,
        total: f64,
        sticky: Option<Sticky>,
    },
    /// A bandit (its numbers are the router's learning): chooses among the router's arms.
    Bandit,
    /// A contextual policy (its models are the router's learning): chooses among the arms
    /// from the request's features. `randomised`: its pmf is not one-hot (LinUCB without
    /// `epsilon` or `min_prob` is not).
    Contextual {
        randomised: bool,
    },
    /// A Seldon ROUTER class (`None` while the graph is only checked).
    Seldon(Option<std::sync::Arc<crate::model::python::PythonModel>>),
}

/// Where a sticky router finds a request's key.
#[derive(Clone, Debug, PartialEq)]
pub(super) enum Sticky {
    Header(String),
    Body(String),
}

/// As `sticky:` spells it: `header:<name>` or `body:<field>`.
impl std::fmt::Display for Sticky {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Sticky::Header(name) => write!(f, "header:{name}"),
            Sticky::Body(field) => write!(f, "body:{field}"),
        }
    }
}

impl Sticky {
    pub(super) fn parse(s: &str) -> Option<Sticky> {
        match s.split_once(':') {
            Some(("header", name)) if !name.is_empty() => {
                Some(Sticky::Header(name.to_ascii_lowercase()))
            }
            Some(("body", field)) if !field.is_empty() => Some(Sticky::Body(field.to_owned())),
            _ => None,
        }
    }

    pub(super) fn key(&self, event: &Event) -> Option<String> {
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
pub(super) fn unit_hash(key: &str) -> f64 {
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

/// A weighted policy: the weights given (routes not listed get none), or equal shares of the
/// routes in `eligible` (the graph file's, but a shadow route).
pub(super) fn weighted(
    node: &StepNode,
    ctx: &mut BuildContext,
    routes: &[Route],
    weights: Option<&IndexMap<String, f64>>,
    sticky: Option<Sticky>,
    eligible: &[usize],
    shadow: Option<usize>,
) -> Option<Policy> {
    let span = policy_span(node);
    let keys: Vec<&str> = routes.iter().map(|r| r.key.as_str()).collect();
    let mut w = vec![0.0; routes.len()];
    match weights {
        // Equal shares of the graph file's routes; a shadow route gets none of its own, nor
        // does a route the model repository added.
        None => eligible
            .iter()
            .filter(|&&i| Some(i) != shadow)
            .for_each(|&i| w[i] = 1.0),
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
