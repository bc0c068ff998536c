//! Tensors along the edges: what each step is fed and gives, checked where it is known.

use marked_yaml::Span;

use crate::diag::{Diagnostic, one_of};
use crate::step::BuildContext;
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
        let input = if node.preds.is_empty() {
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
        };
        // With an error handler, what follows gets either answer: what both certainly give.
        let fallback = node.on_error.map(|h| {
            handlers[h].step.infer(&input).map_err(|e| {
                format!(
                    "its error handler `{}` cannot take what it is fed: {e}",
                    handlers[h].name
                )
            })
        });
        let own = match fallback {
            Some(Err(e)) => Err(e),
            Some(Ok(alt)) => node.step.infer(&input).map(|sig| sig.intersect(alt)),
            None => node.step.infer(&input),
        };
        let sig = match own {
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

/// The inputs a client should send: what the steps along the first path from the entry take,
/// folded back from its end ([`Step::takes`]): an image decoder before a CNN makes the flow
/// take the encoded images, not the CNN's tensor.
pub(super) fn entry_inputs(nodes: &[GraphNode]) -> Vec<TensorMeta> {
    let mut path = vec![0];
    while let Some(&s) = nodes[*path.last().expect("not empty")].succs.first() {
        path.push(s);
    }
    path.iter()
        .rev()
        .fold(None, |after, &i| nodes[i].step.takes(after))
        .unwrap_or_default()
}
