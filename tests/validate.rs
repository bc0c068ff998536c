//! `servegraph validate` on every example graph (valid) and on every file in
//! `tests/graphs/invalid/` (each with the exact errors, positions and hints it must print, in
//! the `.expected` file beside it).

mod common;

use common::*;

/// Offline: the Kafka examples name a broker on 127.0.0.1:9092, which these tests do not
/// start (tests/kafka.rs and tests/golden.rs check those graphs with their brokers).
#[rstest::rstest]
fn example_graph_is_valid(#[files("graphs/*.yaml")] path: std::path::PathBuf) {
    let out = bin()
        .args(["validate", "--offline"])
        .arg(&path)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}: {}",
        path.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains(": ok — serves "));
}

#[rstest::rstest]
fn invalid_graph_reports_every_error_with_its_position(
    #[files("tests/graphs/invalid/*.yaml")] path: std::path::PathBuf,
) {
    {
        let rel = path.strip_prefix(root()).unwrap();
        let out = bin()
            .args(["validate", "--short"])
            .arg(rel)
            .output()
            .unwrap();
        assert_eq!(
            out.status.code(),
            Some(1),
            "{} must fail validation",
            rel.display()
        );
        let expected = std::fs::read_to_string(path.with_extension("expected"))
            .unwrap_or_else(|_| panic!("{} has no .expected file", rel.display()));
        assert_eq!(
            String::from_utf8_lossy(&out.stderr),
            expected,
            "{}: errors differ from the .expected file",
            rel.display()
        );
    }
}

/// Where servegraph is started from never changes what a graph may load: relative model
/// paths resolve against the graph's folder, and the default root is the folder above it.
#[test]
fn model_paths_do_not_depend_on_the_working_directory() {
    for (cwd, graph) in [
        (root(), "graphs/iris.yaml"),
        (root().join("graphs"), "iris.yaml"),
        (root().join("models"), "../graphs/iris.yaml"),
    ] {
        let out = bin()
            .env_remove("SERVEGRAPH_MODEL_ROOTS")
            .current_dir(&cwd)
            .args(["validate", graph])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "from {}: {}",
            cwd.display(),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

#[test]
fn rich_errors_show_the_source_line_and_a_caret() {
    let out = bin()
        .args(["validate", "tests/graphs/invalid/dangling-after.yaml"])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stderr);
    let want = "error: step `b`: `after: scale` names no step of this flow
  --> tests/graphs/invalid/dangling-after.yaml:6:33
  |
6 |     b: {kind: transform, after: scale, op: noop}
  |                                 ^
  = help: steps are `a` and `b`
1 error in tests/graphs/invalid/dangling-after.yaml
";
    assert_eq!(text, want);
}

#[test]
fn serve_refuses_an_invalid_graph() {
    let out = bin()
        .args([
            "serve",
            "tests/graphs/invalid/cycle.yaml",
            "--listen",
            "127.0.0.1:0",
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("cycle between steps `a`, `b` and `c`"));
}

#[test]
fn invoke_runs_one_request_in_process() {
    let out = bin()
        .args(["invoke", "graphs/iris.yaml", "--model", "iris-rf", "--data"])
        .arg(iris_request("inv"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["model_name"], "iris-rf");
    let label = v["outputs"]
        .as_array()
        .unwrap()
        .iter()
        .find(|o| o["name"] == "label")
        .unwrap();
    assert_eq!(label["data"], expected()["iris-rf"]["label"]);

    let out = bin()
        .args([
            "invoke",
            "graphs/iris.yaml",
            "--model",
            "iris-lr",
            "--data",
            "{\"inputs\": 3}",
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("malformed inference request"));
}

/// `serve` and `invoke` report a graph's errors once, not as `error: error:`.
#[test]
fn graph_errors_are_prefixed_once() {
    for cmd in [
        &["serve", "/nonexistent/graph.yaml"][..],
        &["invoke", "/nonexistent/graph.yaml", "--data", "{}"],
    ] {
        let out = bin().args(cmd).output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{stderr}");
        assert!(
            stderr.starts_with("error: cannot read the graph file"),
            "{stderr}"
        );
        assert!(!stderr.contains("error: error:"), "{stderr}");
    }
}

/// Logs written to a pipe or a file carry no ANSI colour codes.
#[test]
fn logs_off_a_terminal_have_no_colours() {
    use std::io::{BufRead, BufReader};
    let mut child = bin()
        .args(["serve", "graphs/iris.yaml", "--listen", "127.0.0.1:0"])
        .env("RUST_LOG", "info")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    let mut seen = Vec::new();
    for line in lines.by_ref().take(2000) {
        let line = line.unwrap();
        let ready = line.contains("ready");
        seen.push(line);
        if ready {
            break;
        }
    }
    let _ = child.kill();
    let _ = child.wait();
    assert!(seen.iter().any(|l| l.contains("listening")), "{seen:?}");
    assert!(!seen.iter().any(|l| l.contains('\u{1b}')), "{seen:?}");
}

/// What a model further down takes is what clients send: a step before it that cannot take
/// that (a `standardize` with 3 means before a model of 4 features) fails `validate`, as the
/// first request would.
#[test]
fn a_step_that_cannot_take_what_the_model_needs_fails_validation() {
    let dir = tempfile::tempdir().unwrap();
    let graph = dir.path().join("g.yaml");
    std::fs::write(
        &graph,
        format!(
            "name: g\ngraph:\n  kind: flow\n  steps:\n    s: {{kind: transform, op: standardize, args: {{mean: [1, 2, 3], std: [1, 1, 1]}}}}\n    m: {{kind: model, class: onnx, model_path: {}, after: s}}\n",
            root().join("models/iris_lr.onnx").display()
        ),
    )
    .unwrap();
    let out = bin()
        .args(["validate", "--short", "--model-root"])
        .arg(root())
        .arg(&graph)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(
        stderr.contains(
            "step `s`: standardize has 3 values per feature but `input` has shape [-1, 4]"
        ) && stderr.contains("clients send what the steps after it take: input FP32 [-1, 4]"),
        "{stderr}"
    );
}

/// Issue 24 (5): `validate` checks the Kafka topics a graph uses on their brokers: brokers it
/// cannot reach are an error naming them and what uses them (with every other error);
/// `--offline` checks the rest without them.
#[test]
fn unreachable_kafka_brokers_fail_validation_unless_offline() {
    let dir = tempfile::tempdir().unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let g = dir.path().join("k.yaml");
    std::fs::write(
        &g,
        format!(
            "name: k
graph:
  kind: flow
  steps:
    a: {{kind: transform, op: noop, timeout_ms: 0}}
sources:
  kafka: {{brokers: \"127.0.0.1:{port}\", group: g, topics: [requests], output_topic: results}}
tracking: {{sink: \"kafka://127.0.0.1:{port}/events\"}}
"
        ),
    )
    .unwrap();
    let out = bin()
        .args(["validate", "--short"])
        .arg(&g)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let text = String::from_utf8_lossy(&out.stderr);
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 2, "{text}");
    assert!(
        lines
            .iter()
            .any(|l| l.contains("step `a`: `timeout_ms` must be an integer ≥ 1")),
        "{text}"
    );
    assert!(
        lines.iter().any(|l| l.contains(&format!(
            "k.yaml:7:8: cannot reach the Kafka brokers 127.0.0.1:{port} (used by \
             `sources.kafka.topics`, `sources.kafka.output_topic`, the tracking sink): "
        ))),
        "{text}"
    );

    // Offline: the same file without its step error is valid, and says what it skipped.
    std::fs::write(
        &g,
        std::fs::read_to_string(&g)
            .unwrap()
            .replace(", timeout_ms: 0", ""),
    )
    .unwrap();
    let out = bin()
        .args(["validate", "--offline"])
        .arg(&g)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(text.contains(": ok — serves k"), "{text}");
    assert!(
        text.contains("Kafka topics not checked (--offline)"),
        "{text}"
    );
}
