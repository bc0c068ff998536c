//! The peers' import lines, unchanged, in `class: python` models (issue 23): inside a
//! worker whose interpreter has no `mlrun` or `seldon_core` (the test venv has neither),
//! `from mlrun.serving import V2ModelServer`, `import mlrun`, `from seldon_core.user_model
//! import ...` and `seldon_core.Storage` resolve to servegraph's stand-ins; an import
//! servegraph does not provide fails the load naming it; an installed package is never
//! shadowed. The stand-ins' details are unit-checked by `tests/python/imports_check.py`.

mod common;

use std::path::Path;

use common::{Server, bin, post, python_case, root, test_python};
use serde_json::{Value, json};

/// Writes `source` as `model.py` in `dir` and a graph serving its class `class` as the model
/// `m` (with `fields`, YAML flow-mapping entries, e.g. `class_args: {...}`), and returns the
/// graph's path.
fn graph(dir: &Path, source: &str, class: &str, fields: &str) -> String {
    let model = dir.join("model.py");
    std::fs::write(&model, source).unwrap();
    let yaml = format!(
        "name: compat\ngraph:\n  kind: router\n  routes:\n    m: {{kind: model, class: python, path: {}, python: {}, class_name: {class}{}}}\n",
        model.display(),
        test_python().display(),
        if fields.is_empty() {
            String::new()
        } else {
            format!(", {fields}")
        }
    );
    let path = dir.join("compat.yaml");
    std::fs::write(&path, yaml).unwrap();
    path.display().to_string()
}

/// An OIP request of `rows` (FP32, one row per inner slice).
fn rows(rows: &[&[f32]]) -> String {
    let data: Vec<f32> = rows.iter().flat_map(|r| r.iter().copied()).collect();
    json!({"inputs": [{"name": "input", "shape": [rows.len(), rows[0].len()], "datatype": "FP32", "data": data}]})
        .to_string()
}

/// The data of the output `output` of model `m`'s answer to `body` (which must be 200),
/// and the answer.
fn infer(addr: &str, body: &str) -> (Value, Value) {
    let r = post(addr, "/v2/models/m/infer", body);
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    let reply = r.json();
    let out = reply["outputs"]
        .as_array()
        .and_then(|o| o.iter().find(|o| o["name"] == "output"))
        .unwrap_or_else(|| panic!("no output `output` in {reply}"))["data"]
        .clone();
    (out, reply)
}

/// `servegraph validate GRAPH`'s stderr; it must fail.
fn validate_fails(graph: &str) -> String {
    let out = bin().args(["validate", graph]).output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(!out.status.success(), "validate passed: {stderr}");
    stderr
}

/// MLRun's model server as its docs write it, with MLRun's own import line: the context's
/// logger takes keyword fields, `get_param` reads `class_args`, `get_secret` the step's `env:`.
#[test]
fn mlrun_serving_import_unchanged() {
    let dir = tempfile::tempdir().unwrap();
    let source = r#"
from mlrun.serving import V2ModelServer


class ClassifierModel(V2ModelServer):
    def load(self):
        self.scale = self.get_param("scale", 1)
        assert self.context.get_secret("MODEL_TOKEN") == "s3cret", "the secret"
        assert self.context.verbose is False
        self.context.logger.info("model loaded", scale=self.scale, name=self.name)
        self.model = True

    def predict(self, body):
        return [sum(r) * self.scale for r in body["inputs"]]
"#;
    let g = graph(
        dir.path(),
        source,
        "ClassifierModel",
        "class_args: {scale: 2}, env: {MODEL_TOKEN: s3cret}",
    );
    let server = Server::start(&g, &[]);
    let (out, reply) = infer(&server.addr, &rows(&[&[1.0, 2.0], &[3.0, 4.5]]));
    assert_eq!(out, json!([6.0, 15.0]), "{reply}");
}

/// `import mlrun` and the attribute path to the base class, also through
/// `mlrun.serving.v2_serving` where MLRun defines it.
#[test]
fn import_mlrun_then_attribute_path() {
    let dir = tempfile::tempdir().unwrap();
    let source = r#"
import mlrun

assert mlrun.serving.v2_serving.V2ModelServer is mlrun.serving.V2ModelServer


class Doubler(mlrun.serving.V2ModelServer):
    def load(self):
        pass

    def predict(self, body):
        return [[2 * v for v in r] for r in body["inputs"]]
"#;
    let g = graph(dir.path(), source, "Doubler", "");
    let server = Server::start(&g, &[]);
    let (out, reply) = infer(&server.addr, &rows(&[&[1.0, 2.5]]));
    assert_eq!(out, json!([2.0, 5.0]), "{reply}");
}

/// A Seldon component with Seldon's import lines: `SeldonComponent`, `SeldonResponse` (its
/// tags reach the answer), `seldon_core.Storage.download(model_uri)` in `load` (the local
/// path servegraph hands the class) and a metric from `seldon_core.metrics`.
#[test]
fn seldon_core_user_model_and_storage() {
    let dir = tempfile::tempdir().unwrap();
    let source = r#"
import os

import seldon_core
from seldon_core.metrics import create_counter
from seldon_core.user_model import SeldonComponent, SeldonResponse


class Weighted(SeldonComponent):
    def __init__(self, model_uri=None):
        super().__init__()
        self.model_uri = model_uri

    def load(self):
        folder = seldon_core.Storage.download(self.model_uri)
        with open(os.path.join(folder, "weight.txt")) as f:
            self.weight = float(f.read())

    def predict(self, X, features_names=None, meta=None):
        return SeldonResponse(
            X * self.weight,
            tags={"weight": self.weight},
            metrics=[create_counter("weighted_calls", 1)],
        )
"#;
    let weights = root().join("tests/python/models/weights");
    let g = graph(
        dir.path(),
        source,
        "Weighted",
        &format!("model_uri: {}", weights.display()),
    );
    let server = Server::start(&g, &[]);
    let (out, reply) = infer(&server.addr, &rows(&[&[2.0]]));
    assert_eq!(out, json!([6.0]), "{reply}");
    assert_eq!(
        reply["parameters"]["tags"],
        json!({"weight": 3.0}),
        "{reply}"
    );
}

/// A module servegraph does not provide fails the load, and `validate` says which one, what
/// servegraph provides and that the real package is needed.
#[test]
fn an_unsupported_import_fails_the_load_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    let source = r#"
import mlrun.frameworks.sklearn
from mlrun.serving import V2ModelServer


class Model(V2ModelServer):
    def predict(self, body):
        return body["inputs"]
"#;
    let stderr = validate_fails(&graph(dir.path(), source, "Model", ""));
    assert!(
        stderr.contains("step `m`: could not load: ModuleNotFoundError: `mlrun.frameworks` is not part of servegraph's stand-in for mlrun"),
        "{stderr}"
    );
    assert!(
        stderr.contains("servegraph provides `mlrun.serving` (V2ModelServer, GraphContext)")
            && stderr.contains("Install mlrun in the model's interpreter"),
        "{stderr}"
    );
    assert!(
        stderr.contains("model.py\", line 2"),
        "the user's line: {stderr}"
    );
    assert!(
        !stderr.contains("_imports.py"),
        "not the runtime's frames: {stderr}"
    );
    // A name servegraph does not provide, from a module it does.
    let source = "from seldon_core.seldon_client import SeldonClient\n\nclass Model:\n    def predict(self, X, names):\n        return X\n";
    let stderr = validate_fails(&graph(dir.path(), source, "Model", ""));
    assert!(
        stderr.contains(
            "`seldon_core.seldon_client` is not part of servegraph's stand-in for seldon_core"
        ) && stderr.contains("Install seldon-core"),
        "{stderr}"
    );
}

/// A `seldon_core` on the step's `python_path:` (a fake one with a marker) is the one the
/// worker imports; `mlrun`, missing, is still servegraph's in the same worker.
#[test]
fn an_installed_package_is_not_shadowed() {
    let dir = tempfile::tempdir().unwrap();
    let site = dir.path().join("site");
    std::fs::create_dir_all(site.join("seldon_core")).unwrap();
    std::fs::write(site.join("seldon_core/__init__.py"), "MARKER = 42.0\n").unwrap();
    let source = r#"
import seldon_core
from mlrun.serving import V2ModelServer

assert not hasattr(seldon_core, "Storage"), "servegraph's Storage in the installed package"


class Marked(V2ModelServer):
    def load(self):
        pass

    def predict(self, body):
        return [[v * seldon_core.MARKER for v in r] for r in body["inputs"]]
"#;
    let g = graph(
        dir.path(),
        source,
        "Marked",
        &format!("python_path: [{}]", site.display()),
    );
    let server = Server::start(&g, &[]);
    let (out, reply) = infer(&server.addr, &rows(&[&[1.0, 0.5]]));
    assert_eq!(out, json!([42.0, 21.0]), "{reply}");
}

fn imports_check(case: &str) {
    python_case(
        "imports_check.py",
        case,
        &[root().join("python").as_os_str()],
    );
}

#[test]
fn installing_the_hook_imports_nothing() {
    imports_check("cheap");
}

#[test]
fn mlrun_names_are_servegraphs_classes() {
    imports_check("mlrun_names");
}

#[test]
fn mlrun_refusals_name_what_is_provided() {
    imports_check("mlrun_refusals");
}

#[test]
fn seldon_names_are_servegraphs_classes() {
    imports_check("seldon_names");
}

#[test]
fn seldon_refusals_name_what_is_provided() {
    imports_check("seldon_refusals");
}

#[test]
fn seldon_storage_download_takes_local_paths_only() {
    imports_check("storage");
}

#[test]
fn mlrun_context_logger_params_and_secrets() {
    imports_check("mlrun_context");
}

#[test]
fn an_installed_package_on_sys_path_wins() {
    imports_check("not_shadowed");
}

#[test]
fn another_finder_that_finds_the_package_wins() {
    imports_check("other_finder");
}

#[test]
fn a_bare_folder_of_that_name_is_not_the_package() {
    imports_check("namespace_folder");
}
