//! `servegraph plot`: DOT and Mermaid drawn from the compiled graph, SVG through Graphviz's
//! `dot` when it is installed and a clear message when it is not.

mod common;

use common::*;

fn plot(graph: &str, format: &str) -> std::process::Output {
    bin()
        .args(["plot", graph, "--format", format])
        .output()
        .unwrap()
}

#[test]
fn dot_and_mermaid_show_steps_routes_and_handlers() {
    let out = plot("graphs/iris-ensemble.yaml", "dot");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let dot = String::from_utf8(out.stdout).unwrap();
    for want in [
        "digraph \"iris-ensemble\" {",
        "\"request\" -> \"scale\";",
        "\"scale\" -> \"vote\";",
        "subgraph \"cluster_vote\" {",
        "\"vote/iris-lr\" [label=\"iris-lr\\nonnx model\"];",
        "\"vote\" -> \"vote/iris-rf\";",
        "\"names\" -> \"response\";",
    ] {
        assert!(dot.contains(want), "{want:?} not in\n{dot}");
    }

    let dir = tempfile::tempdir().unwrap();
    let g = dir.path().join("h.yaml");
    std::fs::write(
        &g,
        "name: h\ngraph: {kind: flow, steps: {a: {kind: transform, op: noop, on_error: fb}, fb: {kind: error_handler}}}\n",
    )
    .unwrap();
    let out = plot(g.to_str().unwrap(), "mermaid");
    let mermaid = String::from_utf8(out.stdout).unwrap();
    assert!(mermaid.starts_with("flowchart LR\n"), "{mermaid}");
    assert!(mermaid.contains("request --> n0"), "{mermaid}");
    assert!(mermaid.contains("n0 -. on_error .-> n1"), "{mermaid}");
    assert!(mermaid.contains("n0 --> response"), "{mermaid}");
}

#[test]
fn svg_through_graphviz_or_a_clear_message() {
    let out = plot("graphs/iris.yaml", "svg");
    let has_dot = std::process::Command::new("dot").arg("-V").output().is_ok();
    if has_dot {
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(String::from_utf8_lossy(&out.stdout).contains("<svg"));
    } else {
        assert_eq!(out.status.code(), Some(1));
        assert!(String::from_utf8_lossy(&out.stderr).contains("SVG needs Graphviz's `dot`"));
    }
}

/// Nodes say a transform's op and a router's policy, weights, sticky key and shadow, in a few
/// words, in DOT and in Mermaid.
#[test]
fn nodes_show_transform_ops_and_router_policies() {
    let out = plot("graphs/iris-ensemble.yaml", "dot");
    let dot = String::from_utf8(out.stdout).unwrap();
    assert!(
        dot.contains("\"scale\" [label=\"scale\\ntransform: standardize\"];"),
        "{dot}"
    );
    let out = plot("graphs/iris.yaml", "dot");
    let dot = String::from_utf8(out.stdout).unwrap();
    assert!(
        dot.contains("label=\"iris (router: weighted iris-lr 50% iris-rf 50%)\";"),
        "{dot}"
    );

    let dir = tempfile::tempdir().unwrap();
    let g = dir.path().join("r.yaml");
    std::fs::write(
        &g,
        "name: r\ngraph:\n  kind: flow\n  steps:\n    pick:\n      kind: router\n      policy: {type: weighted, weights: {a: 3, b: 1}, sticky: \"header:X-User\", shadow: {route: c, percent: 25}}\n      routes:\n        a: {kind: transform, op: noop}\n        b: {kind: transform, op: softmax}\n        c: {kind: transform, op: noop}\n    bandit:\n      kind: router\n      after: pick\n      policy: {type: thompson}\n      routes:\n        x: {kind: transform, op: noop}\n        y: {kind: transform, op: noop}\n",
    )
    .unwrap();
    let out = plot(g.to_str().unwrap(), "mermaid");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mermaid = String::from_utf8(out.stdout).unwrap();
    for want in [
        "[\"pick (router: weighted a 75% b 25%, sticky header:x-user, shadow c 25%)\"]",
        "[\"bandit (router: thompson)\"]",
        "[\"b<br/><i>transform: softmax</i>\"]",
    ] {
        assert!(mermaid.contains(want), "{want:?} not in\n{mermaid}");
    }
    let out = plot(g.to_str().unwrap(), "dot");
    let dot = String::from_utf8(out.stdout).unwrap();
    assert!(
        dot.contains(
            "label=\"pick (router: weighted a 75% b 25%, sticky header:x-user, shadow c 25%)\";"
        ),
        "{dot}"
    );
}
