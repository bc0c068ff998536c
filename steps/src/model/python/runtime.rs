//! The engine's own Python runtime (`python/servegraph/`), compiled into the binary and written
//! once per process to a private folder that goes first on every worker's `PYTHONPATH`: a
//! model's environment needs NumPy and its own libraries, nothing of servegraph's.

use std::path::PathBuf;
use std::sync::{Arc, OnceLock};

use super::error::WorkerError;

const FILES: [(&str, &str); 22] = [
    (
        "servegraph/__init__.py",
        include_str!("../../../../python/servegraph/__init__.py"),
    ),
    (
        "servegraph/_worker.py",
        include_str!("../../../../python/servegraph/_worker.py"),
    ),
    (
        "servegraph/_frames.py",
        include_str!("../../../../python/servegraph/_frames.py"),
    ),
    (
        "servegraph/_shm.py",
        include_str!("../../../../python/servegraph/_shm.py"),
    ),
    (
        "servegraph/_apis.py",
        include_str!("../../../../python/servegraph/_apis.py"),
    ),
    (
        "servegraph/_imports.py",
        include_str!("../../../../python/servegraph/_imports.py"),
    ),
    (
        "servegraph/_adapter.py",
        include_str!("../../../../python/servegraph/_adapter.py"),
    ),
    (
        "servegraph/_api_servegraph.py",
        include_str!("../../../../python/servegraph/_api_servegraph.py"),
    ),
    (
        "servegraph/_api_seldon.py",
        include_str!("../../../../python/servegraph/_api_seldon.py"),
    ),
    (
        "servegraph/_api_mlrun.py",
        include_str!("../../../../python/servegraph/_api_mlrun.py"),
    ),
    (
        "servegraph/_api_kserve.py",
        include_str!("../../../../python/servegraph/_api_kserve.py"),
    ),
    (
        "servegraph/_api_task.py",
        include_str!("../../../../python/servegraph/_api_task.py"),
    ),
    (
        "servegraph/_api_mlserver.py",
        include_str!("../../../../python/servegraph/_api_mlserver.py"),
    ),
    (
        "servegraph/deployed.py",
        include_str!("../../../../python/servegraph/deployed.py"),
    ),
    (
        "servegraph/frameworks.py",
        include_str!("../../../../python/servegraph/frameworks.py"),
    ),
    (
        "servegraph/compat/mlserver.py",
        include_str!("../../../../python/servegraph/compat/mlserver.py"),
    ),
    (
        "servegraph/compat/__init__.py",
        include_str!("../../../../python/servegraph/compat/__init__.py"),
    ),
    (
        "servegraph/compat/mlrun.py",
        include_str!("../../../../python/servegraph/compat/mlrun.py"),
    ),
    (
        "servegraph/compat/seldon.py",
        include_str!("../../../../python/servegraph/compat/seldon.py"),
    ),
    (
        "servegraph/compat/kserve.py",
        include_str!("../../../../python/servegraph/compat/kserve.py"),
    ),
    (
        "servegraph/compat/kserve_errors.py",
        include_str!("../../../../python/servegraph/compat/kserve_errors.py"),
    ),
    (
        "servegraph/compat/kserve_infer.py",
        include_str!("../../../../python/servegraph/compat/kserve_infer.py"),
    ),
];

/// The folder holding the runtime: one per version of its files (named by their hash, under
/// the temp folder and the user's id), written once and shared by every servegraph process of
/// that version, so runs leave nothing new behind.
pub(super) fn dir() -> Result<&'static PathBuf, WorkerError> {
    static DIR: OnceLock<Result<PathBuf, (PathBuf, Arc<std::io::Error>)>> = OnceLock::new();
    DIR.get_or_init(|| {
        let mut h: u64 = 0xcbf29ce484222325;
        for (name, text) in FILES {
            for b in name.bytes().chain(text.bytes()) {
                h = (h ^ b as u64).wrapping_mul(0x100000001b3);
            }
        }
        let uid = rustix::process::getuid().as_raw();
        let dir = std::env::temp_dir().join(format!("servegraph-python-{uid}-{h:016x}"));
        for (name, text) in FILES {
            let path = dir.join(name);
            if std::fs::read_to_string(&path).is_ok_and(|t| t == text) {
                continue;
            }
            let folder = path.parent().expect("a parent");
            let tmp = folder.join(format!(
                ".{}.{}",
                std::process::id(),
                name.replace('/', "_")
            ));
            std::fs::create_dir_all(folder)
                .and_then(|_| std::fs::write(&tmp, text))
                .and_then(|_| std::fs::rename(&tmp, &path))
                .map_err(|e| (path, Arc::new(e)))?;
        }
        Ok(dir)
    })
    .as_ref()
    .map_err(|(path, source)| WorkerError::Runtime {
        path: path.clone(),
        source: Arc::clone(source),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_module_of_the_worker_is_embedded() {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../python");
        let embedded: Vec<&str> = FILES.iter().map(|(name, _)| *name).collect();
        for folder in ["servegraph", "servegraph/compat"] {
            for entry in std::fs::read_dir(root.join(folder)).unwrap() {
                let name = entry.unwrap().file_name().into_string().unwrap();
                // `deploy.py` runs in the client's session, never in a worker.
                if name.ends_with(".py") && name != "deploy.py" {
                    let path = format!("{folder}/{name}");
                    assert!(embedded.contains(&path.as_str()), "{path} is not in FILES");
                }
            }
        }
    }
}
