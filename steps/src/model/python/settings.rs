//! MLServer's `model-settings.json` as a `class: python` step's `model_settings:`: read and
//! checked when the graph is built (`validate` too), each error naming the file and the
//! field, and turned into the step's own fields: the module and class of its
//! `implementation` (the folder first on `sys.path`, as MLServer imports it), its file
//! (`parameters.uri`, relative to the folder; the folder without one, as MLServer defaults
//! it), its adaptive batching, and the whole file for the worker's `ModelSettings`.

use std::path::{Component, Path, PathBuf};

use marked_yaml::Spanned;
use serde_json::{Map, Value};
use servegraph_engine::{BuildContext, DataType, Diagnostic, StepNode};

use super::spec::{Api, PythonSpec};
use crate::model::BatchSpec;

/// The file MLServer reads in a model's folder.
pub(super) const FILE: &str = "model-settings.json";

/// `spec` with its `model_settings` file read into it, or `None` after reporting what is
/// wrong (every problem found, each naming the file and the field).
pub(super) fn apply(
    node: &StepNode,
    ctx: &mut BuildContext,
    spec: &PythonSpec,
) -> Option<PythonSpec> {
    let given = spec.model_settings.as_ref()?;
    let span = *given.span();
    let ok = std::cell::Cell::new(true);
    let fail_at =
        |ctx: &mut BuildContext, at: marked_yaml::Span, message: String, help: Option<&str>| {
            let mut d = Diagnostic::new(message).step(&node.name).at(&at);
            if let Some(help) = help {
                d = d.help(help);
            }
            ctx.report(d);
            ok.set(false);
        };
    let fail = |ctx: &mut BuildContext, message: String, help: Option<&str>| {
        fail_at(ctx, span, message, help)
    };
    const CLASS: &str = "the class is the file's `implementation`";
    const URI: &str = "the model's file is the file's `parameters.uri`";
    let replaced = [
        ("path", spec.path.is_some(), CLASS),
        ("module", spec.module.is_some(), CLASS),
        ("class_name", spec.class_name.is_some(), CLASS),
        ("function", spec.function.is_some(), CLASS),
        ("model_uri", spec.model_uri.is_some(), URI),
        ("model_path", spec.model_path.is_some(), URI),
        (
            "sha256",
            spec.sha256.is_some(),
            "`sha256` pins a `model_uri`, which this step has not",
        ),
        (
            "class_args",
            !spec.class_args.is_empty(),
            "the class's arguments are the file's `parameters.extra`",
        ),
    ];
    for (field, set, why) in replaced {
        if set {
            let at = node.body.get_node(field).map_or(span, |n| *n.span());
            fail_at(
                ctx,
                at,
                format!("`{field}` does not go with `model_settings`: {why}"),
                None,
            );
        }
    }
    if !matches!(spec.api, Api::Auto | Api::Mlserver) {
        fail(
            ctx,
            "`model_settings` names an MLServer model: its `api` is `mlserver` (or `auto`)".into(),
            None,
        );
    }
    let at = PathBuf::from(normal(&ctx.resolve(given.as_str())));
    let file = if at.is_dir() { at.join(FILE) } else { at };
    if !file.is_file() {
        fail(
            ctx,
            format!("`model_settings`: {} does not exist", file.display()),
            Some(
                "`model_settings` is a model folder holding `model-settings.json` (or that file), relative to the graph file's folder",
            ),
        );
        return None;
    }
    if let Err(why) = ctx.check_model_path(&file) {
        fail(ctx, format!("`model_settings` is not allowed: {why}"), None);
        return None;
    }
    let read = std::fs::read_to_string(&file)
        .map_err(|e| e.to_string())
        .and_then(|text| {
            serde_json::from_str::<Value>(&text).map_err(|e| format!("not JSON: {e}"))
        });
    let mut json = match read {
        Ok(Value::Object(map)) => map,
        Ok(other) => {
            fail(
                ctx,
                format!(
                    "{}: an object of settings is expected, not {other}",
                    file.display()
                ),
                None,
            );
            return None;
        }
        Err(why) => {
            fail(ctx, format!("{}: {why}", file.display()), None);
            return None;
        }
    };
    let problems = check(&json);
    for problem in &problems {
        fail(ctx, format!("{}: {problem}", file.display()), None);
    }
    if !ok.get() {
        return None;
    }
    // Absolute: `parameters.uri` is relative to it, not to the graph file's folder.
    let folder = file.parent().map(Path::to_path_buf).unwrap_or_default();
    let folder = std::fs::canonicalize(&folder).unwrap_or(folder);
    let implementation = json["implementation"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    let (module, class) = implementation.rsplit_once('.').unwrap_or_default();
    if let Some(name) = json.get("name").and_then(Value::as_str)
        && !name.is_empty()
        && name != node.name
    {
        tracing::warn!(
            step = %node.name,
            settings = %file.display(),
            name,
            "the model is served under its step's name, not its settings' `name`"
        );
    }
    let uri = json
        .get("parameters")
        .and_then(|p| p.get("uri"))
        .and_then(Value::as_str)
        .map(|uri| model_uri(&folder, uri))
        .unwrap_or_else(|| folder.display().to_string());
    let mut out = spec.clone();
    out.module = Some(module.to_owned());
    out.class_name = Some(class.to_owned());
    out.python_path.insert(0, folder.display().to_string());
    out.model_uri = Some(Spanned::new(span, uri));
    out.api = Api::Mlserver;
    if out.batch.is_none() {
        let size = json
            .get("max_batch_size")
            .and_then(Value::as_u64)
            .unwrap_or(0);
        let time = json
            .get("max_batch_time")
            .and_then(Value::as_f64)
            .unwrap_or(0.0);
        // MLServer batches only with both set (a zero time: no batching).
        if size > 1 && time > 0.0 {
            out.batch = Some(BatchSpec {
                max_size: size as usize,
                max_wait_us: (time * 1e6).round() as u64,
            });
        }
    }
    json.insert("_source".into(), Value::String(file.display().to_string()));
    out.settings = Some(Value::Object(json));
    Some(out)
}

/// `parameters.uri` as servegraph fetches it: a store's URI as it is, a path (or `file://`)
/// relative to the settings' folder.
fn model_uri(folder: &Path, uri: &str) -> String {
    let scheme = uri.split_once("://").map(|(s, _)| s);
    match scheme {
        Some("file") => normal(&folder.join(&uri["file://".len()..])),
        Some(_) => uri.to_owned(),
        None => normal(&folder.join(uri)),
    }
}

/// A path without its `.` parts, and its `..` taken back where they can be (MLServer's
/// `os.path.normpath`).
fn normal(path: &Path) -> String {
    let mut out = PathBuf::new();
    for part in path.components() {
        match part {
            Component::CurDir => {}
            Component::ParentDir
                if matches!(out.components().next_back(), Some(Component::Normal(_))) =>
            {
                out.pop();
            }
            other => out.push(other),
        }
    }
    out.display().to_string()
}

/// What is wrong with the settings' fields servegraph reads (MLServer ignores the others),
/// each as `field: why`.
fn check(json: &Map<String, Value>) -> Vec<String> {
    let mut problems = Vec::new();
    match json.get("implementation") {
        None => problems.push(
            "`implementation` is missing: name the model's class as `module.Class` (MLServer's `implementation`)".into(),
        ),
        Some(Value::String(s))
            if s.rsplit_once('.').is_some_and(|(m, c)| {
                !m.is_empty() && is_identifier(c) && m.split('.').all(is_identifier)
            }) => {}
        Some(other) => problems.push(format!(
            "`implementation` must be the class as `module.Class` (`models.MyModel`), not {other}"
        )),
    }
    for field in ["name", "platform"] {
        if let Some(v) = json.get(field)
            && !v.is_string()
        {
            problems.push(format!("`{field}` must be a string, not {v}"));
        }
    }
    if let Some(v) = json.get("versions")
        && !v.as_array().is_some_and(|a| a.iter().all(Value::is_string))
    {
        problems.push(format!("`versions` must be a list of strings, not {v}"));
    }
    match json.get("parameters") {
        None | Some(Value::Null) => {}
        Some(Value::Object(p)) => {
            for field in ["uri", "version", "content_type", "format"] {
                if let Some(v) = p.get(field)
                    && !(v.is_string() || v.is_null())
                {
                    problems.push(format!("`parameters.{field}` must be a string, not {v}"));
                }
            }
            if let Some(v) = p.get("extra")
                && !(v.is_object() || v.is_null())
            {
                problems.push(format!("`parameters.extra` must be an object, not {v}"));
            }
        }
        Some(other) => problems.push(format!("`parameters` must be an object, not {other}")),
    }
    for field in ["inputs", "outputs"] {
        match json.get(field) {
            None => {}
            Some(Value::Array(tensors)) => {
                for (i, t) in tensors.iter().enumerate() {
                    if let Some(why) = tensor_problem(t) {
                        problems.push(format!("`{field}[{i}]`{why}"));
                    }
                }
            }
            Some(other) => {
                problems.push(format!("`{field}` must be a list of tensors, not {other}"))
            }
        }
    }
    if let Some(v) = json.get("max_batch_size")
        && v.as_u64().is_none()
    {
        problems.push(format!(
            "`max_batch_size` must be a count (0 or more), not {v}"
        ));
    }
    if let Some(v) = json.get("max_batch_time")
        && !v.as_f64().is_some_and(|t| t >= 0.0)
    {
        problems.push(format!(
            "`max_batch_time` must be seconds (0 or more), not {v}"
        ));
    }
    problems
}

/// What is wrong with a tensor's metadata (MLServer's `MetadataTensor`), as `.field: why`.
fn tensor_problem(t: &Value) -> Option<String> {
    let Value::Object(t) = t else {
        return Some(format!(
            " must be an object (`name`, `datatype`, `shape`), not {t}"
        ));
    };
    if !t.get("name").is_some_and(Value::is_string) {
        return Some(".name: a tensor needs a `name` (a string)".into());
    }
    match t.get("datatype").and_then(Value::as_str) {
        Some(d) if DataType::parse(d).is_some() => {}
        other => {
            let all: Vec<&str> = DataType::ALL.iter().map(|d| d.as_str()).collect();
            return Some(format!(
                ".datatype: {} is not one of {}",
                other.map_or("a missing datatype".to_owned(), |d| format!("`{d}`")),
                all.join(", ")
            ));
        }
    }
    if !t
        .get("shape")
        .and_then(Value::as_array)
        .is_some_and(|s| s.iter().all(|d| d.as_i64().is_some()))
    {
        return Some(".shape: a list of integers (-1 for any size) is expected".into());
    }
    if let Some(p) = t.get("parameters")
        && !(p.is_object() || p.is_null())
    {
        return Some(format!(".parameters must be an object, not {p}"));
    }
    None
}

fn is_identifier(s: &str) -> bool {
    let mut chars = s.chars();
    chars.next().is_some_and(|c| c.is_alphabetic() || c == '_')
        && chars.all(|c| c.is_alphanumeric() || c == '_')
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn problems(v: Value) -> Vec<String> {
        check(v.as_object().unwrap())
    }

    #[test]
    fn the_docs_settings_pass() {
        let v = json!({"name": "numpyro-divorce", "implementation": "models.NumpyroModel",
                       "parameters": {"uri": "./numpyro-divorce.json", "version": "v0.1.0", "extra": {"a": 1}},
                       "inputs": [{"name": "metadata-np", "datatype": "INT32", "shape": [2, 2],
                                   "parameters": {"content_type": "np"}}],
                       "max_batch_size": 10, "max_batch_time": 0.5});
        assert!(problems(v).is_empty());
    }

    #[test]
    fn each_bad_field_is_named() {
        let v = json!({"implementation": "NoModule", "name": 3,
                       "parameters": {"uri": 5, "extra": []},
                       "inputs": [{"name": "x", "datatype": "FLOAT", "shape": [1]}, {"datatype": "FP32"}],
                       "max_batch_size": -1, "max_batch_time": "soon"});
        let p = problems(v);
        let text = p.join("\n");
        for want in [
            "`implementation` must be the class as `module.Class`",
            "`name` must be a string",
            "`parameters.uri` must be a string",
            "`parameters.extra` must be an object",
            "`inputs[0]`.datatype: `FLOAT` is not one of",
            "`inputs[1]`.name",
            "`max_batch_size` must be a count",
            "`max_batch_time` must be seconds",
        ] {
            assert!(text.contains(want), "{want} in:\n{text}");
        }
        assert_eq!(p.len(), 8, "{text}");
        assert!(problems(json!({}))[0].contains("`implementation` is missing"));
    }

    #[test]
    fn uris_are_relative_to_the_folder() {
        let folder = Path::new("/m/iris");
        assert_eq!(model_uri(folder, "./model.joblib"), "/m/iris/model.joblib");
        assert_eq!(
            model_uri(folder, "../shared/model.joblib"),
            "/m/shared/model.joblib"
        );
        assert_eq!(
            model_uri(folder, "file:///abs/model.joblib"),
            "/abs/model.joblib"
        );
        assert_eq!(model_uri(folder, "/abs/model.joblib"), "/abs/model.joblib");
        assert_eq!(
            model_uri(folder, "s3://bucket/model.joblib"),
            "s3://bucket/model.joblib"
        );
    }
}
