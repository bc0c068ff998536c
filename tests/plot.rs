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
