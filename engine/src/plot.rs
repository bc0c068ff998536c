//! Pictures of a graph: Graphviz DOT and Mermaid flowcharts, drawn from the compiled graph
//! (so what is drawn is what runs): the request, the steps in order with their kinds and
//! settings in a few words (a transform's op, a router's policy, weights and sticky key), routes
//! and ensemble members nested in clusters, error handlers on dashed edges, the response.

use std::fmt::Write;

use crate::graph::Graph;
use crate::step::Step;

/// A short kind label from a step's platform.
fn kind(step: &dyn Step) -> &'static str {
    step.platform().label()
}

/// The most characters of a step's settings a picture shows.
const SUMMARY_CHARS: usize = 60;

/// What a node says under its name: its kind, and its settings in a few words
/// ([`Step::summary`]: a transform's op, a router's policy), cut to [`SUMMARY_CHARS`].
fn caption(step: &dyn Step) -> String {
    let Some(summary) = step.summary() else {
        return kind(step).to_owned();
    };
    let summary = if summary.chars().count() > SUMMARY_CHARS {
        let cut: String = summary.chars().take(SUMMARY_CHARS - 1).collect();
        format!("{cut}…")
    } else {
        summary
    };
    format!("{}: {summary}", kind(step))
}

/// Text inside a DOT string.
fn dot_text(s: &str) -> String {
    s.replace('\\', "\\\\").replace('"', "\\\"")
}

/// Text inside a Mermaid label.
fn mermaid_text(s: &str) -> String {
    s.replace('"', "#quot;")
        .replace('<', "#lt;")
        .replace('>', "#gt;")
}

fn dot_id(path: &str) -> String {
    format!("\"{}\"", path.replace('"', "\\\""))
}

/// Graphviz DOT.
pub fn dot(graph: &Graph) -> String {
    let layout = graph.layout();
    let (nodes, handlers, responder) = (&layout.steps, &layout.handlers, layout.responder);
    let mut out = String::new();
    let _ = writeln!(out, "digraph {} {{", dot_id(&graph.name));
    out.push_str(
        "  rankdir=LR;\n  graph [fontname=\"Helvetica\"];\n  edge [fontname=\"Helvetica\"];\n",
    );
    out.push_str("  node [shape=box, style=rounded, fontname=\"Helvetica\"];\n");
    out.push_str("  \"request\" [shape=oval];\n  \"response\" [shape=oval];\n");
    fn node(out: &mut String, path: &str, name: &str, step: &dyn Step, depth: usize) {
        let pad = "  ".repeat(depth);
        let children = step.children();
        if children.is_empty() {
            let _ = writeln!(
                out,
                "{pad}{} [label=\"{name}\\n{}\"];",
                dot_id(path),
                dot_text(&caption(step))
            );
            return;
        }
        let _ = writeln!(
            out,
            "{pad}subgraph {} {{",
            dot_id(&format!("cluster_{path}"))
        );
        let _ = writeln!(
            out,
            "{pad}  label=\"{name} ({})\"; style=rounded;",
            dot_text(&caption(step))
        );
        let _ = writeln!(
            out,
            "{pad}  {} [label=\"{name}\", shape=diamond];",
            dot_id(path)
        );
        for (child, s) in &children {
            let child_path = format!("{path}/{child}");
            node(out, &child_path, child, *s, depth + 1);
            let _ = writeln!(out, "{pad}  {} -> {};", dot_id(path), dot_id(&child_path));
        }
        let _ = writeln!(out, "{pad}}}");
    }
    for n in nodes {
        node(&mut out, n.name, n.name, n.step, 1);
    }
    for (name, step) in handlers {
        node(&mut out, name, name, *step, 1);
    }
    for n in nodes {
        if n.preds.is_empty() {
            let _ = writeln!(out, "  \"request\" -> {};", dot_id(n.name));
        }
        for &p in &n.preds {
            let _ = writeln!(out, "  {} -> {};", dot_id(nodes[p].name), dot_id(n.name));
        }
        if let Some(h) = n.on_error {
            let _ = writeln!(
                out,
                "  {} -> {} [style=dashed, label=\"on_error\"];",
                dot_id(n.name),
                dot_id(h)
            );
        }
    }
    let _ = writeln!(out, "  {} -> \"response\";", dot_id(nodes[responder].name));
    out.push_str("}\n");
    out
}

/// A Mermaid flowchart (renders in GitHub and most Markdown viewers).
pub fn mermaid(graph: &Graph) -> String {
    let layout = graph.layout();
    let (nodes, handlers, responder) = (&layout.steps, &layout.handlers, layout.responder);
    let mut ids: Vec<String> = Vec::new();
    let mut id = |path: &str| -> String {
        match ids.iter().position(|p| p == path) {
            Some(i) => format!("n{i}"),
            None => {
                ids.push(path.to_owned());
                format!("n{}", ids.len() - 1)
            }
        }
    };
    let mut out = String::from("flowchart LR\n  request([request])\n  response([response])\n");
    fn node(
        out: &mut String,
        id: &mut dyn FnMut(&str) -> String,
        path: &str,
        name: &str,
        step: &dyn Step,
    ) {
        let me = id(path);
        let children = step.children();
        if children.is_empty() {
            let _ = writeln!(
                out,
                "  {me}[\"{name}<br/><i>{}</i>\"]",
                mermaid_text(&caption(step))
            );
            return;
        }
        let _ = writeln!(
            out,
            "  subgraph {me}_box[\"{name} ({})\"]",
            mermaid_text(&caption(step))
        );
        let _ = writeln!(out, "  {me}{{\"{name}\"}}");
        for (child, s) in &children {
            let child_path = format!("{path}/{child}");
            node(out, id, &child_path, child, *s);
            let c = id(&child_path);
            let _ = writeln!(out, "  {me} --> {c}");
        }
        out.push_str("  end\n");
    }
    for n in nodes {
        node(&mut out, &mut id, n.name, n.name, n.step);
    }
    for (name, step) in handlers {
        node(&mut out, &mut id, name, name, *step);
    }
    for n in nodes {
        let me = id(n.name);
        if n.preds.is_empty() {
            let _ = writeln!(out, "  request --> {me}");
        }
        for &p in &n.preds {
            let from = id(nodes[p].name);
            let _ = writeln!(out, "  {from} --> {me}");
        }
        if let Some(h) = n.on_error {
            let to = id(h);
            let _ = writeln!(out, "  {me} -. on_error .-> {to}");
        }
    }
    let last = id(nodes[responder].name);
    let _ = writeln!(out, "  {last} --> response");
    out
}
