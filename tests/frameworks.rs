//! Clipper's framework deployers (issue 29): PyTorch and TensorFlow/Keras models trained in a
//! real Python session with the framework installed (a virtualenv per framework, made by
//! `scripts/setup.sh --test`), deployed live through the HTTP API with the model running in
//! that framework's interpreter on the server (`parameters.python`), answers compared with
//! `func(model, inputs)` in-process (`tests/python/frameworks_check.py`).

mod common;

use std::path::PathBuf;

use common::*;

const TOKEN: &str = "frameworks-token";

/// The interpreter of a framework's virtualenv: `SERVEGRAPH_<FRAMEWORK>_PYTHON`, else the one
/// `scripts/setup.sh --test` makes (`venv-<framework>`). Missing is a failure, not a skip.
fn framework_python(framework: &str) -> PathBuf {
    let var = format!("SERVEGRAPH_{}_PYTHON", framework.to_uppercase());
    installed(Some(&var), &format!("venv-{framework}/bin/python"))
}

/// An empty router graph in a new folder (deployed models' files go beside it), served with
/// an admin token.
fn server() -> (tempfile::TempDir, Server) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("frameworks.yaml");
    std::fs::write(
        &path,
        format!(
            "name: frameworks\ngraph:\n  kind: router\n  routes:\n    iris-lr: {{kind: model, class: onnx, model_path: \"{}\"}}\n",
            root().join("models/iris_lr.onnx").display()
        ),
    )
    .unwrap();
    let s = Server::start(&path.display().to_string(), &["--admin-token", TOKEN]);
    (dir, s)
}

/// Runs `case` of frameworks_check.py in `framework`'s interpreter against `s`.
fn check(framework: &str, case: &str, s: &Server) {
    let root = root();
    python_case_in(
        &framework_python(framework),
        "frameworks_check.py",
        case,
        &[s.addr.as_ref(), TOKEN.as_ref(), root.as_os_str()],
        &[("TF_CPP_MIN_LOG_LEVEL", "2")],
    );
}

#[test]
fn pytorch_models_answer_as_their_function_does_in_process() {
    let (_dir, s) = server();
    check("torch", "torch_live", &s);
}

#[test]
fn a_failing_pytorch_function_or_an_unsaveable_module_is_a_clear_error() {
    let (_dir, s) = server();
    check("torch", "torch_errors", &s);
}

#[test]
fn keras_and_savedmodel_models_answer_as_their_function_does_in_process() {
    let (_dir, s) = server();
    check("tf", "tf_live", &s);
}

#[test]
fn a_failing_tensorflow_function_or_a_tf1_session_is_a_clear_error() {
    let (_dir, s) = server();
    check("tf", "tf_errors", &s);
}

#[test]
fn torch_and_keras_models_are_served_side_by_side_each_in_its_interpreter() {
    let (_dir, s) = server();
    check("torch", "torch_side", &s);
    check("tf", "tf_side", &s);
    check("torch", "torch_side_again", &s);
    // Each model's workers run their own framework's interpreter.
    let interpreters = children_commands(s.pid());
    for framework in ["torch", "tf"] {
        let py = framework_python(framework).display().to_string();
        assert!(
            interpreters.iter().any(|c| c.starts_with(&py)),
            "no worker runs {py}: {interpreters:?}"
        );
    }
}

/// The command lines of `pid`'s child processes (from /proc).
fn children_commands(pid: u32) -> Vec<String> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else {
            continue;
        };
        // `pid (comm) state ppid ...`: comm may hold spaces, so read after the last ')'.
        let Some(rest) = stat.rsplit_once(')').map(|(_, r)| r) else {
            continue;
        };
        if rest.split_whitespace().nth(1) == Some(&pid.to_string()) {
            let cmd = std::fs::read(entry.path().join("cmdline")).unwrap_or_default();
            out.push(String::from_utf8_lossy(&cmd).replace('\0', " "));
        }
    }
    out
}

/// Runs `case` of frameworks_check.py in `framework`'s interpreter on `folder`.
fn files(framework: &str, case: &str, folder: &std::path::Path) {
    let out = std::process::Command::new(framework_python(framework))
        .arg(root().join("tests/python/frameworks_check.py"))
        .arg(case)
        .arg(folder)
        .arg("-")
        .arg(root())
        .env("TF_CPP_MIN_LOG_LEVEL", "2")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{case}:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn a_graph_yaml_serves_saved_torchscript_and_keras_models_with_the_framework_loaders() {
    let dir = tempfile::tempdir().unwrap();
    let (torch_dir, keras_dir) = (dir.path().join("torch"), dir.path().join("keras"));
    std::fs::create_dir_all(&torch_dir).unwrap();
    std::fs::create_dir_all(&keras_dir).unwrap();
    files("torch", "torch_yaml_files", &torch_dir);
    files("tf", "keras_yaml_files", &keras_dir);
    let yaml = format!(
        "name: frameworks-yaml
graph:
  kind: router
  routes:
    torch-yaml:
      kind: model
      class: python
      module: servegraph.frameworks
      class_name: TorchModel
      model_uri: torch
      python: {torch}
      class_args: {{input_type: floats, func: \"funcs:predict\", threads: 1}}
    keras-yaml:
      kind: model
      class: python
      module: servegraph.frameworks
      class_name: TensorFlowModel
      model_uri: keras
      python: {tf}
      class_args: {{input_type: floats, threads: 1}}
",
        torch = framework_python("torch").display(),
        tf = framework_python("tf").display(),
    );
    let path = dir.path().join("frameworks.yaml");
    std::fs::write(&path, yaml).unwrap();
    let s = Server::start(&path.display().to_string(), &[]);
    for (model, folder) in [("torch-yaml", &torch_dir), ("keras-yaml", &keras_dir)] {
        let want: serde_json::Value =
            serde_json::from_slice(&std::fs::read(folder.join("expected.json")).unwrap()).unwrap();
        let rows = want["input"].as_array().unwrap();
        let data: Vec<f64> = rows
            .iter()
            .flat_map(|r| r.as_array().unwrap().iter().map(|v| v.as_f64().unwrap()))
            .collect();
        let body = serde_json::json!({"inputs": [{"name": "input", "datatype": "FP32",
            "shape": [rows.len(), 4], "data": data}]});
        let r = post(
            &s.addr,
            &format!("/v2/models/{model}/infer"),
            &body.to_string(),
        );
        assert_eq!(
            r.status,
            200,
            "{model}: {}",
            String::from_utf8_lossy(&r.body)
        );
        let got: Vec<f64> = r.json()["outputs"][0]["data"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_f64().unwrap())
            .collect();
        let want: Vec<f64> = want["output"]
            .as_array()
            .unwrap()
            .iter()
            .flat_map(|v| match v.as_array() {
                Some(row) => row.iter().map(|x| x.as_f64().unwrap()).collect(),
                None => vec![v.as_f64().unwrap()],
            })
            .collect();
        assert_eq!(got.len(), want.len(), "{model}");
        for (g, w) in got.iter().zip(&want) {
            assert!((g - w).abs() < 1e-5, "{model}: {got:?} != {want:?}");
        }
    }
}

#[test]
fn a_pyspark_model_loads_asynchronously_in_a_local_spark_session_and_answers_as_in_process() {
    let (_dir, s) = server();
    check("pyspark", "spark_live", &s);
}

#[test]
fn an_mxnet_gluon_model_exported_and_reloaded_answers_as_in_process() {
    let (_dir, s) = server();
    check("mxnet", "mxnet_live", &s);
}
