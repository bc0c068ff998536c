//! `model_uri` (issue 13): models fetched from a real S3-protocol server (moto's) and a real
//! HTTP file server (`tests/python/stores.py`, both on loopback and ephemeral ports) into the
//! model cache, served beside a model on disk; the cache's behaviour (reuse, a changed ETag,
//! a wrong pin, the store down) and `validate`'s existence check.

mod common;

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};

use common::*;

/// The stores, run by `stores.py`; it exits when its stdin closes (dropped with the test).
struct Stores {
    child: Child,
    stdin: ChildStdin,
    stdout: BufReader<ChildStdout>,
    s3: String,
    http: String,
    /// What the HTTP server serves.
    files: tempfile::TempDir,
}

impl Stores {
    fn start() -> Stores {
        let files = tempfile::tempdir().unwrap();
        let mut child = Command::new(test_python())
            .arg(root().join("tests/python/stores.py"))
            .arg(files.path())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("start tests/python/stores.py");
        let stdin = child.stdin.take().unwrap();
        let mut stdout = BufReader::new(child.stdout.take().unwrap());
        let mut line = String::new();
        stdout.read_line(&mut line).unwrap();
        let ports: serde_json::Value =
            serde_json::from_str(&line).unwrap_or_else(|e| panic!("stores.py said {line:?}: {e}"));
        Stores {
            s3: ports["s3"].as_str().unwrap().to_owned(),
            http: ports["http"].as_str().unwrap().to_owned(),
            child,
            stdin,
            stdout,
            files,
        }
    }

    fn command(&mut self, line: &str) {
        writeln!(self.stdin, "{line}").unwrap();
        let mut answer = String::new();
        self.stdout.read_line(&mut answer).unwrap();
        assert_eq!(answer.trim(), "ok", "{line}");
    }

    fn put(&mut self, key: &str, file: &Path) {
        self.command(&format!("put models {key} {}", file.display()));
    }

    /// The store's environment for servegraph: moto's endpoint, dummy keys.
    fn env(&self, cache: &Path) -> Vec<(&'static str, String)> {
        vec![
            ("AWS_ENDPOINT_URL", self.s3.clone()),
            ("AWS_ACCESS_KEY_ID", "test".into()),
            ("AWS_SECRET_ACCESS_KEY", "test".into()),
            ("AWS_REGION", "us-east-1".into()),
            ("SERVEGRAPH_MODEL_CACHE", cache.display().to_string()),
        ]
    }
}

impl Drop for Stores {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn model(name: &str) -> PathBuf {
    root().join("models").join(name)
}

/// Writes `yaml` as `g.yaml` in a new folder.
fn graph(yaml: &str) -> (tempfile::TempDir, String) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("g.yaml");
    std::fs::write(&path, yaml).unwrap();
    (dir, path.display().to_string())
}

fn labels(addr: &str, model: &str) -> serde_json::Value {
    let r = post(
        addr,
        &format!("/v2/models/{model}/infer"),
        &iris_request("t"),
    );
    assert_eq!(
        r.status,
        200,
        "{model}: {}",
        String::from_utf8_lossy(&r.body)
    );
    let body = r.json();
    let out = body["outputs"]
        .as_array()
        .unwrap()
        .iter()
        .find(|o| o["name"] == "label")
        .cloned()
        .unwrap_or_else(|| panic!("{model}: no label in {body}"));
    out["data"].clone()
}

/// `servegraph validate` on graph `g` with the stores' environment.
fn validate(g: &str, env: &[(&str, String)]) -> std::process::Output {
    bin()
        .args(["validate", g])
        .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
        .output()
        .unwrap()
}

fn one_model(uri: &str, extra: &str) -> String {
    format!(
        "name: g\ngraph:\n  kind: router\n  routes:\n    m: {{kind: model, class: onnx, model_uri: \"{uri}\"{extra}}}\n"
    )
}

/// The one file the cache holds for a URI (the cache has one folder per URI).
fn cached_file(cache: &Path, name: &str) -> PathBuf {
    let mut found = Vec::new();
    for dir in std::fs::read_dir(cache).unwrap() {
        let p = dir.unwrap().path().join("files").join(name);
        if p.exists() {
            found.push(p);
        }
    }
    assert_eq!(found.len(), 1, "{found:?}");
    found.pop().unwrap()
}

#[test]
fn s3_http_and_disk_models_serve_side_by_side() {
    let mut stores = Stores::start();
    stores.put("iris/iris_lr.onnx", &model("iris_lr.onnx"));
    std::fs::copy(
        model("iris_rf.onnx"),
        stores.files.path().join("iris_rf.onnx"),
    )
    .unwrap();
    // A Python class's folder (Seldon's mounted-folder convention), from the bucket.
    for f in std::fs::read_dir(model("iris_seldon")).unwrap() {
        let f = f.unwrap().path();
        let name = f.file_name().unwrap().to_string_lossy().into_owned();
        stores.put(&format!("seldon/{name}"), &f);
    }
    let cache = tempfile::tempdir().unwrap();
    let (_dir, g) = graph(&format!(
        "name: g\ngraph:\n  kind: router\n  routes:\n\
         \x20   from-s3: {{kind: model, class: onnx, model_uri: \"s3://models/iris/iris_lr.onnx\"}}\n\
         \x20   from-http: {{kind: model, class: onnx, model_uri: \"{}/iris_rf.onnx\"}}\n\
         \x20   from-disk: {{kind: model, class: onnx, model_path: \"{}\"}}\n\
         \x20   seldon:\n      kind: model\n      class: python\n      path: \"{}\"\n      class_name: Model\n\
         \x20     model_uri: \"s3://models/seldon/\"\n      inputs: [{{name: input, datatype: FP32, shape: [-1, 4]}}]\n",
        stores.http,
        model("iris_lr.onnx").display(),
        model("iris_seldon.py").display(),
    ));
    let s = Server::start_env(&g, &[], &stores.env(cache.path()));
    let want = expected();
    assert_eq!(labels(&s.addr, "from-s3"), want["iris-lr"]["label"]);
    assert_eq!(labels(&s.addr, "from-http"), want["iris-rf"]["label"]);
    assert_eq!(labels(&s.addr, "from-disk"), want["iris-lr"]["label"]);
    // The Seldon class got the folder: its probabilities pick iris-lr's labels.
    let r = post(&s.addr, "/v2/models/seldon/infer", &iris_request("s"));
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    let probs = r.json()["outputs"][0]["data"].clone();
    let rows = probs.as_array().unwrap().chunks(3).map(|p| {
        let p: Vec<f64> = p.iter().map(|v| v.as_f64().unwrap()).collect();
        (0..3).max_by(|&a, &b| p[a].total_cmp(&p[b])).unwrap() as i64
    });
    let want_lr: Vec<i64> = want["iris-lr"]["label"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_i64().unwrap())
        .collect();
    assert_eq!(rows.collect::<Vec<_>>(), want_lr);
}

#[test]
fn the_cache_is_reused_refetched_on_a_new_etag_and_serves_when_the_store_is_down() {
    let mut stores = Stores::start();
    stores.put("m.onnx", &model("iris_lr.onnx"));
    let cache = tempfile::tempdir().unwrap();
    let (_dir, g) = graph(&one_model("s3://models/m.onnx", ""));
    let env = stores.env(cache.path());
    let inode = |p: &Path| {
        use std::os::unix::fs::MetadataExt;
        std::fs::metadata(p).unwrap().ino()
    };
    {
        let s = Server::start_env(&g, &[], &env);
        assert_eq!(labels(&s.addr, "m"), expected()["iris-lr"]["label"]);
    }
    let file = cached_file(cache.path(), "m.onnx");
    let first = inode(&file);
    // Second start: the store's ETag is unchanged, nothing is downloaded (the same file).
    {
        let s = Server::start_env(&g, &[], &env);
        assert_eq!(labels(&s.addr, "m"), expected()["iris-lr"]["label"]);
    }
    assert_eq!(inode(&file), first, "the second start downloaded again");
    // A new object under the key: a new ETag, downloaded, and the new model serves.
    stores.put("m.onnx", &model("iris_rf.onnx"));
    {
        let s = Server::start_env(&g, &[], &env);
        assert_eq!(labels(&s.addr, "m"), expected()["iris-rf"]["label"]);
    }
    assert_ne!(inode(&file), first);
    assert_eq!(
        std::fs::read(&file).unwrap(),
        std::fs::read(model("iris_rf.onnx")).unwrap()
    );
    // The store down at start: the cached copy serves, with a warning.
    stores.command("stop-s3");
    let s = Server::start_env(&g, &[], &env);
    assert_eq!(labels(&s.addr, "m"), expected()["iris-rf"]["label"]);
}

#[test]
fn a_wrong_sha256_refuses_to_load_and_the_right_one_loads() {
    let mut stores = Stores::start();
    stores.put("m.onnx", &model("iris_lr.onnx"));
    let cache = tempfile::tempdir().unwrap();
    let env = stores.env(cache.path());
    let wrong = format!(", sha256: \"sha256:{}\"", "0".repeat(64));
    let (_dir, g) = graph(&one_model("s3://models/m.onnx", &wrong));
    let out = bin()
        .args(["serve", &g, "--listen", "127.0.0.1:0"])
        .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "served a model whose pin is wrong");
    assert!(
        stderr.contains("the graph pins 0000") && stderr.contains("refusing to load it"),
        "{stderr}"
    );
    let digest = Command::new("sha256sum")
        .arg(model("iris_lr.onnx"))
        .output()
        .unwrap();
    let hex = String::from_utf8_lossy(&digest.stdout)
        .split_whitespace()
        .next()
        .unwrap()
        .to_owned();
    let (_dir2, g) = graph(&one_model(
        "s3://models/m.onnx",
        &format!(", sha256: \"sha256:{hex}\""),
    ));
    let s = Server::start_env(&g, &[], &env);
    assert_eq!(labels(&s.addr, "m"), expected()["iris-lr"]["label"]);
}

#[test]
fn validate_checks_the_object_exists_without_downloading_it() {
    let mut stores = Stores::start();
    stores.put("m.onnx", &model("iris_lr.onnx"));
    let cache = tempfile::tempdir().unwrap();
    let env = stores.env(cache.path());
    let (_dir, g) = graph(&one_model("s3://models/m.onnx", ""));
    let out = validate(&g, &env);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let downloaded = std::fs::read_dir(cache.path())
        .map(|d| d.count())
        .unwrap_or(0);
    assert_eq!(downloaded, 0, "validate downloaded the model");
    let (_dir2, g) = graph(&one_model("s3://models/missing.onnx", ""));
    let out = validate(&g, &env);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        stderr.contains("step `m`")
            && stderr.contains("s3://models/missing.onnx")
            && stderr.contains("no such object"),
        "{stderr}"
    );
}

#[test]
fn bad_uris_are_refused_with_their_field_and_position() {
    let (_dir, g) = graph(&one_model("ftp://host/m.onnx", ""));
    let out = bin().args(["validate", "--short", &g]).output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        stderr.contains("g.yaml:5:") && stderr.contains("`model_uri`: unsupported scheme `ftp://`"),
        "{stderr}"
    );
    // A local path under model_uri keeps the containment rule of model_path.
    let (_dir, g) = graph(&one_model("file:///etc/hostname", ""));
    let out = bin()
        .args(["validate", "--short", &g])
        .env_remove("SERVEGRAPH_MODEL_ROOTS")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(stderr.contains("is not allowed"), "{stderr}");
}

/// `validate` agrees with serving: a cached file that does not match the graph's pin is
/// refused (serving refuses it), and a Python class whose file is not in the cache yet is not
/// loaded with `model_uri=None` (a failure serving never has).
#[test]
fn validate_checks_a_cached_file_against_its_pin_and_leaves_uncached_python_files_alone() {
    let mut stores = Stores::start();
    stores.put("m.onnx", &model("iris_lr.onnx"));
    let cache = tempfile::tempdir().unwrap();
    let env = stores.env(cache.path());
    // Serving fetches the file into the cache.
    let (_dir, g) = graph(&one_model("s3://models/m.onnx", ""));
    drop(Server::start_env(&g, &[], &env));
    let wrong = format!(", sha256: \"sha256:{}\"", "0".repeat(64));
    let (_dir2, g) = graph(&one_model("s3://models/m.onnx", &wrong));
    let out = validate(&g, &env);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success(),
        "validate passed a file serving refuses"
    );
    assert!(
        stderr.contains("the graph pins 0000") && stderr.contains("refusing to load it"),
        "{stderr}"
    );

    // A Python class reading its `model_uri` in `load()`, the file not in the cache yet.
    stores.put(
        "weights/weight.txt",
        &root().join("tests/python/models/weights/weight.txt"),
    );
    let fresh = tempfile::tempdir().unwrap();
    let env = stores.env(fresh.path());
    let (_dir3, g) = graph(&format!(
        "name: g\ngraph:\n  kind: router\n  routes:\n    m: {{kind: model, class: python, path: {}, python: {}, class_name: LinearServer, model_path: \"s3://models/weights/\", class_args: {{factor: 2}}}}\n",
        root().join("tests/python/models/models.py").display(),
        test_python().display()
    ));
    let out = validate(&g, &env);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A missing file on a plain web server (404) is "not found" with its URL, at once: not "the
/// store cannot be reached", not an HTML page, not after retries.
#[test]
fn a_missing_http_file_is_not_found_at_once() {
    let stores = Stores::start();
    let cache = tempfile::tempdir().unwrap();
    let env = stores.env(cache.path());
    let uri = format!("{}/missing.onnx", stores.http);
    for command in ["validate", "serve"] {
        let (_dir, g) = graph(&one_model(&uri, ""));
        let started = std::time::Instant::now();
        let mut args = vec![command, g.as_str()];
        if command == "serve" {
            args.extend(["--listen", "127.0.0.1:0"]);
        }
        let out = bin()
            .args(&args)
            .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{command}: {stderr}");
        assert!(
            stderr.contains("missing.onnx") && stderr.contains("not found"),
            "{command}: {stderr}"
        );
        assert!(
            !stderr.contains("<html")
                && !stderr.contains("<!DOCTYPE")
                && !stderr.contains("cannot be reached"),
            "{command}: {stderr}"
        );
        assert!(
            started.elapsed() < std::time::Duration::from_secs(5),
            "{command} retried a 404: {:?}",
            started.elapsed()
        );
    }
}

/// A model folder served as a `.tar.gz` by a plain web server (which cannot list a folder) is
/// downloaded into the cache, unpacked there once, and the model gets the folder; a second
/// start finds it unpacked. An archive with an entry `../evil` is refused, naming the
/// archive and the entry, and writes nothing outside its folder.
#[test]
fn a_folder_as_an_archive_over_plain_http_serves_and_an_escaping_one_is_refused() {
    let stores = Stores::start();
    let status = Command::new("tar")
        .arg("czf")
        .arg(stores.files.path().join("seldon.tar.gz"))
        .arg("-C")
        .arg(model("iris_seldon"))
        .arg(".")
        .status()
        .unwrap();
    assert!(status.success());
    let cache = tempfile::tempdir().unwrap();
    let seldon = |uri: &str| {
        graph(&format!(
            "name: g\ngraph:\n  kind: router\n  routes:\n    seldon:\n      kind: model\n      class: python\n      path: \"{}\"\n      class_name: Model\n      model_uri: \"{uri}\"\n      inputs: [{{name: input, datatype: FP32, shape: [-1, 4]}}]\n",
            model("iris_seldon.py").display(),
        ))
    };
    let (_dir, g) = seldon(&format!("{}/seldon.tar.gz", stores.http));
    let want: Vec<i64> = expected()["iris-lr"]["label"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_i64().unwrap())
        .collect();
    let unpacked = |cache: &Path| -> Vec<PathBuf> {
        let mut found = Vec::new();
        for dir in std::fs::read_dir(cache).unwrap() {
            if let Ok(d) = std::fs::read_dir(dir.unwrap().path().join("unpacked")) {
                found.extend(d.map(|e| e.unwrap().path()));
            }
        }
        found
    };
    let mut inodes = Vec::new();
    for _ in 0..2 {
        let s = Server::start_env(&g, &[], &stores.env(cache.path()));
        let r = post(&s.addr, "/v2/models/seldon/infer", &iris_request("s"));
        assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
        let probs = r.json()["outputs"][0]["data"].clone();
        let rows: Vec<i64> = probs
            .as_array()
            .unwrap()
            .chunks(3)
            .map(|p| {
                let p: Vec<f64> = p.iter().map(|v| v.as_f64().unwrap()).collect();
                (0..3).max_by(|&a, &b| p[a].total_cmp(&p[b])).unwrap() as i64
            })
            .collect();
        assert_eq!(rows, want);
        let folders = unpacked(cache.path());
        assert_eq!(folders.len(), 1, "{folders:?}");
        assert!(folders[0].join("model.pkl").is_file(), "{folders:?}");
        use std::os::unix::fs::MetadataExt;
        inodes.push(std::fs::metadata(&folders[0]).unwrap().ino());
    }
    assert_eq!(inodes[0], inodes[1], "unpacked again on the second start");

    // `../evil`, made by Python's tarfile (which writes any name).
    let evil = stores.files.path().join("evil.tar.gz");
    let status = Command::new(test_python())
        .arg("-c")
        .arg(
            "import io, sys, tarfile\n\
             with tarfile.open(sys.argv[1], 'w:gz') as t:\n\
             \x20   for name in ['ok.txt', '../evil']:\n\
             \x20       i = tarfile.TarInfo(name); i.size = 2\n\
             \x20       t.addfile(i, io.BytesIO(b'hi'))\n",
        )
        .arg(&evil)
        .status()
        .unwrap();
    assert!(status.success());
    let cache = tempfile::tempdir().unwrap();
    let inside = cache.path().join("inside");
    std::fs::create_dir(&inside).unwrap();
    let (_dir, g) = seldon(&format!("{}/evil.tar.gz", stores.http));
    let out = bin()
        .args(["serve", &g, "--listen", "127.0.0.1:0"])
        .envs(stores.env(&inside).iter().map(|(k, v)| (*k, v.as_str())))
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    for part in [
        "evil.tar.gz",
        "cannot unpack the archive",
        "`../evil`",
        "refused",
    ] {
        assert!(stderr.contains(part), "{part} not in {stderr}");
    }
    // Nothing landed outside the archive's folder, nor stayed half unpacked.
    let mut stack = vec![cache.path().to_owned()];
    while let Some(dir) = stack.pop() {
        for e in std::fs::read_dir(&dir).unwrap() {
            let p = e.unwrap().path();
            assert_ne!(p.file_name().unwrap(), "evil", "{}", p.display());
            assert_ne!(p.file_name().unwrap(), "ok.txt", "{}", p.display());
            if p.is_dir() {
                stack.push(p);
            }
        }
    }
}
