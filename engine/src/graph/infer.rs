//! Tensors along the edges: what each step is fed and gives, checked where it is known.

use marked_yaml::Span;

use crate::diag::{Diagnostic, one_of};
use crate::step::{BuildContext, ModelInfo};
use crate::tensor::{Signature, TensorMeta};

use super::*;

/// Propagates what is known about tensors from the entry steps to the responder, reporting
/// every step that would be fed tensors it cannot take. Then, when the steps say what a
/// client must send ([`entry_inputs`]: a model further down takes `input` FP32 `[-1, 4]`),
/// once more from that: a step before the model that cannot take it (a `standardize` with 3
/// means for 4 features) is caught here, not by the first request.
pub(super) fn infer_signatures(
    ctx: &mut BuildContext,
    nodes: &[GraphNode],
    handlers: &[GraphNode],
    spans: &[Span],
) -> Vec<Signature> {
    let errors = ctx.error_count();
    let open = infer_from(ctx, nodes, handlers, spans, &Signature::open(), None);
    let sent = entry_inputs(nodes);
    if ctx.error_count() > errors
        || sent.is_empty()
        || nodes.iter().skip(1).any(|n| n.preds.is_empty())
    {
        return open;
    }
    let mut client = Signature::exact(sent);
    // Tensors besides those may come too: only what is known is checked.
    client.open = true;
    let described = client.describe();
    infer_from(ctx, nodes, handlers, spans, &client, Some(&described));
    open
}

/// [`infer_signatures`] from what the entry steps are fed (`entry`; `sent`: what a client
/// sends, said in the help of an entry step's error).
fn infer_from(
    ctx: &mut BuildContext,
    nodes: &[GraphNode],
    handlers: &[GraphNode],
    spans: &[Span],
    entry: &Signature,
    sent: Option<&str>,
) -> Vec<Signature> {
    let mut out: Vec<Signature> = Vec::with_capacity(nodes.len());
    for (i, node) in nodes.iter().enumerate() {
        let input = fed(node, entry, &out);
        let sig = match gives(node, handlers, &input) {
            Ok(sig) => sig,
            Err(message) => {
                let from: Vec<&str> = node.preds.iter().map(|&p| nodes[p].name.as_str()).collect();
                let mut d = Diagnostic::new(message).step(&node.name).at(&spans[i]);
                if !from.is_empty() {
                    d = d.help(format!("{} feeds it: {}", one_of(&from), input.describe()));
                } else if let Some(sent) = sent {
                    d = d.help(format!("clients send what the steps after it take: {sent}"));
                }
                ctx.report(d);
                Signature::open()
            }
        };
        out.push(sig);
    }
    out
}

/// What `node` is fed: the entry's tensors for an entry step, else what its predecessors
/// (`out`, by index) give, together.
fn fed(node: &GraphNode, entry: &Signature, out: &[Signature]) -> Signature {
    if node.preds.is_empty() {
        entry.clone()
    } else if let [p] = node.preds[..] {
        out[p].clone()
    } else {
        let mut sig = Signature::exact(Vec::new());
        for &p in &node.preds {
            let s: &Signature = &out[p];
            sig.open |= s.open;
            for t in &s.tensors {
                sig.put(t.clone());
            }
        }
        sig
    }
}

/// What `node` gives when fed `input`; with an error handler, what follows gets either
/// answer: what both certainly give.
fn gives(node: &GraphNode, handlers: &[GraphNode], input: &Signature) -> Result<Signature, String> {
    let fallback = node.on_error.map(|h| {
        handlers[h].step.infer(input).map_err(|e| {
            format!(
                "its error handler `{}` cannot take what it is fed: {e}",
                handlers[h].name
            )
        })
    });
    match fallback {
        Some(Err(e)) => Err(e),
        Some(Ok(alt)) => node.step.infer(input).map(|sig| sig.intersect(alt)),
        None => node.step.infer(input),
    }
}

/// The inputs a client should send: what the steps along the first path from the entry take,
/// folded back from its end ([`Step::takes`]): an image decoder before a CNN makes the flow
/// take the encoded images, not the CNN's tensor.
pub(super) fn entry_inputs(nodes: &[GraphNode]) -> Vec<TensorMeta> {
    entry_inputs_with(nodes, None)
}

/// [`entry_inputs`], with the step at `pinned.0` taking `pinned.1` (a route of it that a
/// request addresses) when it is on that path.
fn entry_inputs_with(
    nodes: &[GraphNode],
    pinned: Option<(usize, &[TensorMeta])>,
) -> Vec<TensorMeta> {
    let mut path = vec![0];
    while let Some(&s) = nodes[*path.last().expect("not empty")].succs.first() {
        path.push(s);
    }
    path.iter()
        .rev()
        .fold(None, |after, &i| match pinned {
            Some((k, takes)) if k == i && !takes.is_empty() => Some(takes.to_vec()),
            _ => nodes[i].step.takes(after),
        })
        .unwrap_or_default()
}

/// A route of step `k` (a router's) as a request addressed to it sees the flow: the request
/// runs the whole flow with that route taken, so it sends what the flow takes with that route
/// (`route.inputs` in place of step `k`'s) and gets what the responder gives when step `k`
/// gives the route's outputs. `signatures` are the flow's as validation inferred them; a step
/// after `k` that cannot say what it gives leaves its outputs unknown (none listed).
pub(super) fn through_flow(
    nodes: &[GraphNode],
    handlers: &[GraphNode],
    signatures: &[Signature],
    responder: usize,
    k: usize,
    route: &ModelInfo,
) -> ModelInfo {
    let inputs = entry_inputs_with(nodes, Some((k, &route.inputs)));
    let mut out = signatures.to_vec();
    // Unknown outputs of the route: what every route of the step gives holds for it too.
    if !route.outputs.is_empty() {
        out[k] = Signature::exact(route.outputs.clone());
        // Nodes are in topological order: only the steps downstream of `k` see it.
        let mut downstream = vec![false; nodes.len()];
        downstream[k] = true;
        let entry = Signature::open();
        for i in k + 1..nodes.len() {
            if nodes[i].preds.iter().any(|&p| downstream[p]) {
                downstream[i] = true;
                let input = fed(&nodes[i], &entry, &out);
                out[i] = gives(&nodes[i], handlers, &input).unwrap_or_else(|_| Signature::open());
            }
        }
    }
    ModelInfo {
        inputs,
        outputs: out[responder].tensors.clone(),
        ..route.clone()
    }
}
