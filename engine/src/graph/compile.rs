//! Joining declared steps into the DAG: error handlers, edges, cycles, the responder, the
//! headers steps read, the addressable models.

use std::collections::HashMap;
use std::time::Duration;

use marked_yaml::Span;
use petgraph::algo::tarjan_scc;
use petgraph::graph::DiGraph;

use crate::diag::{Diagnostic, all_of, one_of};
use crate::step::{BuildContext, ModelInfo, Platform, Step};

use super::*;

/// Separates the error handlers (the steps some `on_error`, a step's or the graph's, names)
/// from the flow, checking that every `on_error` names a step and that handlers stand apart:
/// no `after`, no `responder`, no `on_error` of their own, and no step comes after one. Each
/// flow step's `on_error` is resolved, the graph's default filling in.
pub(super) fn split_handlers(
    ctx: &mut BuildContext,
    default: Option<(String, Span)>,
    declared: Vec<Declared>,
) -> (Vec<Declared>, Vec<Declared>) {
    let names: Vec<String> = declared.iter().map(|d| d.name.clone()).collect();
    let mut wanted: Vec<&str> = declared
        .iter()
        .filter_map(|d| d.on_error.as_ref().map(|(h, _)| h.as_str()))
        .collect();
    if let Some((h, _)) = &default {
        wanted.push(h);
    }
    let is_handler: Vec<bool> = names.iter().map(|n| wanted.contains(&n.as_str())).collect();
    let check = |ctx: &mut BuildContext, step: Option<&str>, (h, span): &(String, Span)| {
        if !names.contains(h) {
            let known: Vec<&str> = names.iter().map(String::as_str).collect();
            let mut d = Diagnostic::new(format!("`on_error: {h}` names no step of this flow"))
                .at(span)
                .help(crate::fields::with_guess(
                    h,
                    &known,
                    format!("steps are {}", all_of(&names)),
                ));
            if let Some(s) = step {
                d = d.step(s);
            }
            ctx.report(d);
        } else if step == Some(h.as_str()) {
            ctx.error(h, span, "a step cannot be its own error handler");
        }
    };
    if let Some(d) = &default {
        check(ctx, None, d);
    }
    for (i, d) in declared.iter().enumerate() {
        if let Some(h) = &d.on_error {
            check(ctx, Some(&d.name), h);
        }
        if is_handler[i] {
            let why = "error handlers run only when a step fails";
            if let Some((_, span)) = d.after.first() {
                ctx.error(
                    &d.name,
                    span,
                    format!("an error handler cannot have `after`: {why}"),
                );
            }
            if d.responder {
                ctx.error(
                    &d.name,
                    &d.span,
                    format!("an error handler cannot be the responder: {why}"),
                );
            }
            if let Some((_, span)) = &d.on_error {
                ctx.error(
                    &d.name,
                    span,
                    "an error handler cannot have an `on_error` of its own",
                );
            }
        }
        for (pred, span) in &d.after {
            if let Some(p) = names.iter().position(|n| n == pred)
                && is_handler[p]
            {
                ctx.error(
                    &d.name,
                    span,
                    format!("`after: {pred}` names an error handler; error handlers run only when a step fails"),
                );
            }
        }
    }
    let mut flow = Vec::new();
    let mut handlers = Vec::new();
    for (mut d, handler) in declared.into_iter().zip(is_handler) {
        if handler {
            handlers.push(d);
        } else {
            if d.on_error.is_none() {
                d.on_error = default.clone();
            }
            flow.push(d);
        }
    }
    if flow.is_empty() {
        ctx.report(Diagnostic::new(
            "every step of this flow is an error handler: nothing would run",
        ));
    }
    (flow, handlers)
}

/// Joins declared steps into a DAG, checks it, and (when models are loaded) checks the tensors
/// along every edge.
pub(super) fn compile(
    ctx: &mut BuildContext,
    spec: GraphFileSpec,
    declared: Vec<Declared>,
    default_on_error: Option<(String, Span)>,
) -> Option<Graph> {
    if declared.is_empty() {
        return None;
    }
    let (declared, handlers) = split_handlers(ctx, default_on_error, declared);
    if declared.is_empty() {
        return None;
    }
    let handler_index: HashMap<String, usize> = handlers
        .iter()
        .enumerate()
        .map(|(i, d)| (d.name.clone(), i))
        .collect();
    let index: HashMap<String, usize> = declared
        .iter()
        .enumerate()
        .map(|(i, d)| (d.name.clone(), i))
        .collect();
    let errors_before_edges = ctx.error_count();
    let mut dag: DiGraph<usize, ()> = DiGraph::new();
    let ids: Vec<_> = (0..declared.len()).map(|i| dag.add_node(i)).collect();
    for (i, d) in declared.iter().enumerate() {
        for (pred, span) in &d.after {
            match index.get(pred.as_str()) {
                Some(&p) if p == i => ctx.error(&d.name, span, "a step cannot come after itself"),
                Some(&p) => {
                    dag.add_edge(ids[p], ids[i], ());
                }
                None => {
                    let names: Vec<&str> = declared.iter().map(|d| d.name.as_str()).collect();
                    ctx.report(
                        Diagnostic::new(format!("`after: {pred}` names no step of this flow"))
                            .step(&d.name)
                            .at(span)
                            .help(crate::fields::with_guess(
                                pred,
                                &names,
                                format!("steps are {}", all_of(&names)),
                            )),
                    );
                }
            }
        }
    }
    for scc in tarjan_scc(&dag) {
        if scc.len() > 1 {
            let mut members: Vec<usize> = scc.iter().map(|&n| dag[n]).collect();
            members.sort();
            let names: Vec<&str> = members.iter().map(|&i| declared[i].name.as_str()).collect();
            let first = &declared[members[0]];
            ctx.report(
                Diagnostic::new(format!("cycle between steps {}", all_of(&names)))
                    .step(&first.name)
                    .at(&first.span)
                    .help("`after` must form a DAG: remove one of these edges"),
            );
        }
    }
    // The responder: the one marked, or the only step nothing comes after. Which steps are
    // last depends on the edges, so "no responder" waits for edges without errors.
    let edges_ok = ctx.error_count() == errors_before_edges;
    let marked: Vec<usize> = (0..declared.len())
        .filter(|&i| declared[i].responder)
        .collect();
    let leaves: Vec<usize> = (0..declared.len())
        .filter(|&i| dag.neighbors(ids[i]).next().is_none())
        .collect();
    let responder = match (marked.as_slice(), leaves.as_slice()) {
        ([one], _) => Some(*one),
        ([], [one]) => Some(*one),
        // No leaf (every step is on a cycle) or broken edges: already reported.
        ([], _) if !edges_ok => None,
        ([], []) => None,
        ([], many) => {
            let names: Vec<&str> = many.iter().map(|&i| declared[i].name.as_str()).collect();
            ctx.report(
                Diagnostic::new("no responder: the flow has several last steps and none is marked")
                    .at(&declared[many[0]].span)
                    .help(format!(
                        "mark one of {} with `responder: true`",
                        one_of(&names)
                    )),
            );
            None
        }
        (several, _) => {
            let names: Vec<&str> = several.iter().map(|&i| declared[i].name.as_str()).collect();
            ctx.report(
                Diagnostic::new(format!("more than one responder: {}", all_of(&names)))
                    .at(&declared[several[1]].span)
                    .help("exactly one step answers the request"),
            );
            None
        }
    };

    if ctx.has_errors() {
        return None;
    }
    let order = petgraph::algo::toposort(&dag, None).ok()?;
    let position: HashMap<usize, usize> = order
        .iter()
        .enumerate()
        .map(|(pos, &n)| (dag[n], pos))
        .collect();

    let responder = responder?;

    // Tensors along every edge, in topological order.
    let spans: Vec<Span> = order.iter().map(|&n| declared[dag[n]].span).collect();
    let mut nodes: Vec<GraphNode> = Vec::with_capacity(order.len());
    let mut slots: Vec<Option<Declared>> = declared.into_iter().map(Some).collect();
    for &n in &order {
        let i = dag[n];
        let d = slots[i].take().expect("each step once");
        let preds: Vec<usize> = d
            .after
            .iter()
            .filter_map(|(p, _)| index.get(p.as_str()).map(|&p| position[&p]))
            .collect();
        let mut succs: Vec<usize> = dag.neighbors(ids[i]).map(|s| position[&dag[s]]).collect();
        succs.sort();
        nodes.push(GraphNode {
            on_error: d
                .on_error
                .as_ref()
                .and_then(|(h, _)| handler_index.get(h).copied()),
            preds,
            succs,
            ..GraphNode::new(&spec.name, d.name, d.step?, d.timeout)
        });
    }
    let handlers: Vec<GraphNode> = handlers
        .into_iter()
        .map(|h| Some(GraphNode::new(&spec.name, h.name, h.step?, h.timeout)))
        .collect::<Option<_>>()?;
    let responder = position[&responder];
    let signatures = infer_signatures(ctx, &nodes, &handlers, &spans);

    let entries: Vec<usize> = (0..nodes.len())
        .filter(|&i| nodes[i].preds.is_empty())
        .collect();
    let chain = entries == [0]
        && responder == nodes.len() - 1
        && nodes
            .iter()
            .enumerate()
            .all(|(i, n)| n.succs.len() <= 1 && (i == 0 || n.preds == [i - 1]));

    // A queue step splits the flow: the part after it is resumed by position, so the flow
    // must be a straight chain.
    if !chain
        && let Some((i, n)) = nodes
            .iter()
            .enumerate()
            .find(|(_, n)| n.step.platform() == Platform::Queue)
    {
        ctx.report(
            Diagnostic::new("a queue step must be in a flow that is a straight chain of steps")
                .step(&n.name)
                .at(&spans[i])
                .help("join branches before the queue, or after it in another graph"),
        );
    }
    fn collect_headers(step: &dyn Step, out: &mut Vec<String>) {
        for h in step.headers() {
            let h = h.to_ascii_lowercase();
            if !out.contains(&h) {
                out.push(h);
            }
        }
        for (_, child) in step.children() {
            collect_headers(child, out);
        }
    }
    let mut headers = Vec::new();
    for n in &nodes {
        collect_headers(n.step.as_ref(), &mut headers);
    }
    // A flow that hands its events on (a queue step) answers 202 with no outputs: its
    // results go to the output topic.
    let queued = nodes.iter().any(|n| n.step.platform() == Platform::Queue);
    let mut models = vec![ModelInfo {
        name: spec.name.clone(),
        version: None,
        platform: if nodes.len() == 1 {
            nodes[0].step.platform()
        } else {
            crate::step::Platform::Flow
        },
        inputs: entry_inputs(&nodes),
        outputs: if queued {
            Vec::new()
        } else {
            signatures[responder].tensors.clone()
        },
        // A graph of one model is that model.
        max_batch_size: match &nodes[..] {
            [one] => one.step.model().map_or(0, |m| m.max_batch_size()),
            _ => 0,
        },
    }];
    for (k, node) in nodes.iter().enumerate() {
        for route in node.step.models() {
            // A request to a route of a step in a flow runs the whole flow with that route
            // taken: its metadata says what that run takes and answers.
            models.push(if nodes.len() == 1 {
                route
            } else {
                let mut info = through_flow(&nodes, &handlers, &signatures, responder, k, &route);
                if queued {
                    info.outputs.clear();
                }
                info
            });
        }
    }
    Some(Graph {
        name: spec.name,
        nodes,
        handlers,
        entries,
        responder,
        chain,
        deadline: Duration::from_millis(spec.timeout_ms.max(1)),
        max_in_flight: spec.max_in_flight.max(1),
        admission: tokio::sync::Semaphore::new(spec.max_in_flight.max(1)),
        max_tensor_elements: spec.max_tensor_elements,
        models,
        tracking: None,
        monitor: None,
        sources: spec.sources.unwrap_or_default(),
        telemetry: spec.telemetry,
        kafka_topics: Vec::new(),
        create_topics: spec.create_topics,
        headers,
        learners: Vec::new(),
        repository: Default::default(),
    })
}
