//! Building a router from its YAML: the spec, the policy, the routes, and the checks between
//! them.

use std::sync::Arc;

use servegraph_engine::diag::{Diagnostic, all_of};
use servegraph_engine::{BuildContext, Step, StepNode};

use super::features::Features;
use super::policy::{Policy, Sticky, weighted};
use super::shadow::Shadow;
use super::spec::{experiment_span, policy_span};
use super::state::{Learning, Settings};
use super::{PolicyKind, PolicySpec, RewardKind, Router, RouterSpec};
use crate::bandit::{Algorithm, Bandit};
use crate::contextual::Contextual;
use crate::routes::build_routes;

pub fn build(node: &StepNode, ctx: &mut BuildContext) -> Option<Box<dyn Step>> {
    let spec: Option<RouterSpec> = ctx.parse(node);
    let policy = PolicySpec::parse(node, ctx);
    let routes = build_routes(node, ctx, &[])?;
    let spec = spec?;
    let p = &policy?;
    if let Some(class) = &spec.class_name {
        let short = class.rsplit('.').next().unwrap_or(class);
        let refusal = match short {
            "ModelRouter" if node.body.get_node("policy").is_none() => None,
            "ModelRouter" => Some(
                "MLRun's `ModelRouter` routes by the model the request names: it is `policy: {type: path}`; give `class_name` or `policy`, not both".to_owned(),
            ),
            "VotingEnsemble" | "ParallelRun" | "EnrichmentVotingEnsemble" => Some(format!(
                "MLRun's `{short}` is not served as a router class: write it as a `kind: ensemble` step with `combine: vote` (classification) or `combine: mean` (regression) and the same routes"
            )),
            _ => Some(format!(
                "MLRun router class `{class}` is not served: servegraph routers choose by `policy` (path, weighted, bandits, or a Seldon ROUTER class)"
            )),
        };
        if let Some(message) = refusal {
            let span = node
                .body
                .get_node("class_name")
                .map_or(node.span, |n| *n.span());
            ctx.error(&node.name, &span, message);
            return None;
        }
    }
    if spec.class_args.as_ref().is_some_and(|a| !a.is_empty()) {
        let span = node
            .body
            .get_node("class_args")
            .map_or(node.span, |n| *n.span());
        ctx.error(
            &node.name,
            &span,
            "MLRun's router `class_args` are not served (servegraph's router takes its settings in `policy`)",
        );
        return None;
    }
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
    // The routes the policy chooses among: the graph file's, and those the model repository
    // added only when the policy names them (a bandit's `arms`, a weighted router's `weights`).
    let keys: Vec<&str> = routes.iter().map(|r| r.key.as_str()).collect();
    let chosen: Vec<usize> = match &p.arms {
        Some(arms) => {
            let mut chosen = Vec::with_capacity(arms.len());
            for arm in arms {
                match keys.iter().position(|k| k == arm) {
                    Some(i) if chosen.contains(&i) => {
                        ctx.error(&node.name, &span, format!("`arms` names `{arm}` twice"));
                        return None;
                    }
                    Some(i) => chosen.push(i),
                    None => {
                        ctx.report(
                            Diagnostic::new(format!("`arms` names `{arm}`, which is not a route"))
                                .step(&node.name)
                                .at(&span)
                                .help(format!("routes are {}", all_of(&keys))),
                        );
                        return None;
                    }
                }
            }
            if chosen.is_empty() {
                ctx.error(&node.name, &span, "`arms` must name at least one route");
                return None;
            }
            chosen
        }
        None => (0..routes.len())
            .filter(|&i| !ctx.from_repository(&node.name, &routes[i].key))
            .collect(),
    };
    let share = match p.share.as_deref().map(parse_share) {
        None => None,
        Some(Ok((brokers, topic))) => {
            ctx.uses_kafka_topic(
                &node.name,
                "the shared learning of router",
                &brokers,
                &topic,
                &span,
            );
            Some((brokers, topic))
        }
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
                &chosen,
                shadow.as_ref().map(|s| s.index),
            )?
        }
        PolicyKind::Seldon => {
            let fields = p.component.as_ref()?;
            let component = crate::model::python::start_component(
                node,
                fields,
                ctx,
                crate::model::python::SeldonRole::Router,
            )
            .ok()?;
            Policy::Seldon(component)
        }
        PolicyKind::EpsilonGreedy | PolicyKind::Ucb1 | PolicyKind::Thompson => Policy::Bandit,
        PolicyKind::SquareCb | PolicyKind::LinUcb | PolicyKind::LinThompson => Policy::Contextual {
            randomised: p.kind != PolicyKind::LinUcb
                || p.epsilon.unwrap_or(0.0) > 0.0
                || p.min_prob.unwrap_or(0.0) > 0.0,
        },
    };
    let features = match &p.features {
        Some(specs) => Some(Features::build(specs, node, ctx)?),
        None => None,
    };
    let contextual = match p.kind.contextual() {
        None => None,
        Some(kind) => {
            let Some(features) = &features else {
                ctx.error(
                    &node.name,
                    &span,
                    format!(
                        "`policy.type: {}` chooses from the request's features: declare them in `policy.features`",
                        p.kind.as_str()
                    ),
                );
                return None;
            };
            if p.discount.is_some() {
                ctx.error(
                    &node.name,
                    &span,
                    format!(
                        "`policy.discount` is not offered by `policy.type: {}` (its ridge regressions do not forget)",
                        p.kind.as_str()
                    ),
                );
                return None;
            }
            let params = p.contextual_params(kind, p.seed.unwrap_or_else(rand::random));
            if let Err(why) = params.check(chosen.len()) {
                ctx.error(&node.name, &span, format!("`policy`: {why}"));
                return None;
            }
            Some(Contextual::new(params, chosen.len(), features.dim()))
        }
    };
    let bandit = matches!(policy, Policy::Bandit).then(|| {
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
        Bandit::new(chosen.len(), algorithm, p.discount, p.seed)
    });
    let experiment = experiment_settings(node, ctx, p, &policy, &routes, &chosen)?;
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
    let reachable = routes
        .iter()
        .map(|r| r.models().into_iter().map(|m| m.name).collect())
        .collect();
    // Only a loaded graph reads and writes the state (validating one must not overwrite it).
    let loading = ctx.mode == servegraph_engine::BuildMode::Load;
    let arms: Vec<String> = chosen.iter().map(|&i| routes[i].key.clone()).collect();
    // The learning of the router a build before this one made with the same name, policy and
    // arms, as it is (its pending decisions, counts and bandit); else learning afresh,
    // restored from the state file.
    let kept_as = format!(
        "router|{}|{}|{arms:?}|{state_file:?}",
        node.name,
        node.body
            .get_node("policy")
            .map(servegraph_engine::fields::to_json)
            .unwrap_or_default(),
    );
    let kept = ctx
        .shelf()
        .filter(|_| loading)
        .and_then(|shelf| shelf.get::<Learning>(&kept_as));
    let learning = match kept {
        Some(kept) => {
            tracing::info!(router = %node.name, "its policy did not change: it keeps what it learnt");
            kept
        }
        None => {
            let mut learning = Learning::new(Settings {
                router: node.name.clone(),
                kind: p.kind,
                arms,
                bandit,
                contextual,
                remember: (p.kind != PolicyKind::Path).then_some(p.remember.unwrap_or(100_000)),
                state_file: state_file.filter(|_| loading),
                share,
            });
            if let Err(e) = learning.load() {
                ctx.error(
                    &node.name,
                    &span,
                    format!("cannot restore the bandit state: {e}"),
                );
                // Keep the unreadable file as it is: no snapshot may replace it.
                learning.state_file = None;
                return None;
            }
            let learning = Arc::new(learning);
            learning.save_every(state_every);
            if let Some(shelf) = ctx.shelf().filter(|_| loading) {
                shelf.put(&kept_as, &learning);
            }
            learning
        }
    };
    *learning.routes.lock().expect("not poisoned") = routes.iter().map(|r| r.key.clone()).collect();
    let route_seconds = routes
        .iter()
        .map(|r| servegraph_engine::metrics::route_histogram(&node.name, &r.key))
        .collect();
    let route_outcomes = routes
        .iter()
        .map(|r| servegraph_engine::stats::outcomes(&r.key))
        .collect();
    let router = Router {
        route_seconds,
        route_outcomes,
        name: node.name.clone(),
        keys: routes.iter().map(|r| Arc::from(r.key.as_str())).collect(),
        routes,
        reachable,
        policy,
        kind: p.kind,
        features,
        chosen,
        learning,
        shadow,
        experiment,
    };
    Some(Box::new(router))
}

/// The tuning of the readout of a weighted or bandit router (`policy.experiment`, defaults
/// filled in); `None` for other policies. The control must be a route the policy chooses:
/// one with a weight, or an arm.
fn experiment_settings(
    node: &StepNode,
    ctx: &mut BuildContext,
    p: &PolicySpec,
    policy: &Policy,
    routes: &[crate::routes::Route],
    chosen: &[usize],
) -> Option<Option<servegraph_engine::experiment::Settings>> {
    let among: Vec<&str> = match policy {
        Policy::Weighted { cumulative, .. } => {
            let mut before = 0.0;
            cumulative
                .iter()
                .enumerate()
                .filter_map(|(i, &c)| {
                    let share = c - before;
                    before = c;
                    (share > 0.0).then_some(routes[i].key.as_str())
                })
                .collect()
        }
        Policy::Bandit | Policy::Contextual { .. } => {
            chosen.iter().map(|&i| routes[i].key.as_str()).collect()
        }
        _ => return Some(None),
    };
    let spec = p.experiment.clone().unwrap_or_default();
    let control = match spec.control {
        Some(c) if among.contains(&c.as_str()) => c,
        Some(c) => {
            let what = if matches!(policy, Policy::Bandit | Policy::Contextual { .. }) {
                "an arm"
            } else {
                "a route with a weight"
            };
            ctx.report(
                Diagnostic::new(format!(
                    "`experiment.control` names `{c}`, which is not {what} of the policy"
                ))
                .step(&node.name)
                .at(&experiment_span(node))
                .help(format!("the policy chooses among {}", all_of(&among))),
            );
            return None;
        }
        None => among.first()?.to_string(),
    };
    let defaults = servegraph_engine::experiment::Settings::new(control);
    Some(Some(servegraph_engine::experiment::Settings {
        planned_n: spec.planned_n.unwrap_or(defaults.planned_n),
        alpha: spec.alpha.unwrap_or(defaults.alpha),
        min_sample: spec.min_sample.unwrap_or(defaults.min_sample),
        ..defaults
    }))
}

/// `kafka://HOST:PORT/TOPIC` → brokers and topic.
pub(super) fn parse_share(url: &str) -> std::result::Result<(String, String), String> {
    url.strip_prefix("kafka://")
        .and_then(|rest| rest.split_once('/'))
        .filter(|(b, t)| !b.is_empty() && !t.is_empty() && !t.contains('/'))
        .map(|(b, t)| (b.to_owned(), t.to_owned()))
        .ok_or_else(|| format!("`share: {url}`: expected kafka://HOST:PORT/TOPIC"))
}

/// Whether a file can be written where `file` is: its folder exists and takes a new file
/// (tried with a probe file, removed at once).
pub(super) fn writable_folder(file: &std::path::Path) -> std::result::Result<(), String> {
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
