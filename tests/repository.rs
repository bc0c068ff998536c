//! The live model repository (issue 13): Triton's load/unload with the unchanged
//! `tritonclient.http`, servegraph's Python deployers from a real Python session
//! (`tests/python/repository_check.py`), persistence across a restart, and the admin token.

mod common;

use common::*;

const TOKEN: &str = "repo-token";

/// A router graph in a new folder (the repository's files and overlay go beside it).
fn graph() -> (tempfile::TempDir, String) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("served.yaml");
    std::fs::write(
        &path,
        format!(
            "name: served\ngraph:\n  kind: router\n  routes:\n    iris-lr: {{kind: model, class: onnx, model_path: \"{}\"}}\n",
            root().join("models/iris_lr.onnx").display()
        ),
    )
    .unwrap();
    (dir, path.display().to_string())
}

fn check(case: &str, s: &Server) {
    let root = root();
    python_case(
        "repository_check.py",
        case,
        &[s.addr.as_ref(), TOKEN.as_ref(), root.as_ref()],
    );
}

fn serve(g: &str, extra: &[&str]) -> Server {
    let mut args = vec!["--admin-token", TOKEN];
    args.extend_from_slice(extra);
    Server::start(g, &args)
}

#[test]
fn tritonclient_load_model_deploys_onnx_with_versions_and_rollback() {
    let (_dir, g) = graph();
    check("triton_load", &serve(&g, &[]));
}

#[test]
fn a_bad_model_is_a_400_and_the_server_keeps_serving() {
    let (dir, g) = graph();
    check("bad_models", &serve(&g, &[]));
    // Refused loads leave no files behind.
    let files = dir.path().join("served.repository");
    let left: Vec<_> = std::fs::read_dir(&files)
        .map(|d| d.map(|e| e.unwrap().path()).collect())
        .unwrap_or_default();
    assert!(left.is_empty(), "{left:?}");
}

#[test]
fn without_an_admin_token_the_actions_are_off() {
    let (_dir, g) = graph();
    check("no_token", &Server::start(&g, &[]));
}

#[test]
fn a_wrong_token_is_401() {
    let (_dir, g) = graph();
    check("wrong_token", &serve(&g, &[]));
}

#[test]
fn deployed_models_survive_a_restart() {
    let (dir, g) = graph();
    {
        let s = serve(&g, &[]);
        check("triton_load", &s);
        check("deployers", &s);
    }
    // The overlay beside the graph says what the repository holds.
    let overlay: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.path().join("served.repository.json")).unwrap())
            .unwrap();
    assert_eq!(overlay["defaults"]["flower"], "1", "{overlay}");
    let s = serve(&g, &[]);
    check("after_restart", &s);
}

#[test]
fn pkgs_to_install_get_a_virtualenv_with_allow_pip() {
    let (_dir, g) = graph();
    check("pip", &serve(&g, &["--allow-pip"]));
}

#[test]
fn a_flow_graph_refuses_repository_models_with_the_reason() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("flow.yaml");
    std::fs::write(
        &path,
        format!(
            "name: flow\ngraph:\n  kind: flow\n  steps:\n    m: {{kind: model, class: onnx, model_path: \"{}\"}}\n",
            root().join("models/iris_lr.onnx").display()
        ),
    )
    .unwrap();
    let s = serve(&path.display().to_string(), &[]);
    let body = serde_json::json!({"parameters": {"file:1/model.onnx":
        base64_of(&std::fs::read(root().join("models/iris_lr.onnx")).unwrap())}});
    let r = block_on(request(
        &s.addr,
        "POST",
        "/v2/repository/models/extra/load",
        &[("authorization", format!("Bearer {TOKEN}"))],
        body.to_string().into_bytes(),
    ))
    .unwrap();
    assert_eq!(r.status, 400);
    assert!(r.error().contains("not `kind: router`"), "{}", r.error());
    assert_eq!(
        post(&s.addr, "/v2/models/flow/infer", &iris_request("f")).status,
        200
    );
}
