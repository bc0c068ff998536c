//! Tensors along the edges: what each step is fed and gives, checked where it is known.

use marked_yaml::Span;

use crate::diag::{Diagnostic, one_of};
use crate::step::BuildContext;
use crate::tensor::{Signature, TensorMeta};

use super::*;

/// Propagates what is known about tensors from the entry steps to the responder, reporting
/// every step that would be fed tensors it cannot take.
pub(super) fn infer_signatures(
    ctx: &mut BuildContext,
    nodes: &[GraphNode],
    handlers: &[GraphNode],
    spans: &[Span],
) -> Vec<Signature> {
    let mut out: Vec<Signature> = Vec::with_capacity(nodes.len());
    for (i, node) in nodes.iter().enumerate() {
        let input = if node.preds.is_empty() {
            Signature::open()
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
                }
                ctx.report(d);
                Signature::open()
            }
        };
        out.push(sig);
    }
    out
}

/// The inputs a client should send: those of the first step, along the first path, that
/// declares them (normally the first model).
pub(super) fn entry_inputs(nodes: &[GraphNode]) -> Vec<TensorMeta> {
    let mut i = 0;
    loop {
        if let Some(inputs) = nodes[i].step.inputs() {
            return inputs;
        }
        match nodes[i].succs.first() {
            Some(&s) => i = s,
            None => return Vec::new(),
        }
    }
}
