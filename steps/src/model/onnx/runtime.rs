//! ONNX Runtime itself: where its shared library is, the process-wide environment, and opening
//! a session of a model file.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use ort::session::Session;
use ort::session::builder::GraphOptimizationLevel;
use servegraph_engine::{Error, Result};

/// The ONNX Runtime version whose shared library servegraph loads.
pub const ORT_VERSION: &str = "1.31.1";

/// Where the library is: `ORT_DYLIB_PATH`, else where `scripts/setup.sh` puts it.
pub fn dylib_path() -> PathBuf {
    if let Some(p) = std::env::var_os("ORT_DYLIB_PATH") {
        return PathBuf::from(p);
    }
    let cache = std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))
        .unwrap_or_else(|| PathBuf::from(".cache"));
    cache
        .join("servegraph")
        .join(format!("onnxruntime-{ORT_VERSION}"))
        .join(format!("libonnxruntime.so.{ORT_VERSION}"))
}

/// The process's ONNX Runtime environment, loaded on first use.
pub(super) fn environment() -> Result<&'static ort::environment::Environment> {
    static ENV: OnceLock<Result<ort::environment::Environment>> = OnceLock::new();
    ENV.get_or_init(|| {
        let path = dylib_path();
        if !path.is_file() {
            return Err(Error::internal(format!(
                "the ONNX Runtime library is not at {}: run scripts/setup.sh, or set \
                 ORT_DYLIB_PATH to libonnxruntime.so (version {ORT_VERSION})",
                path.display()
            )));
        }
        ort::init_from(&path)
            .map_err(|e| {
                Error::internal(format!(
                    "cannot load ONNX Runtime from {}: {e}",
                    path.display()
                ))
            })?
            .with_name("servegraph")
            .build()
            .map_err(|e| Error::internal(format!("cannot start ONNX Runtime: {e}")))
    })
    .as_ref()
    .map_err(Error::clone)
}

/// Opens one ONNX Runtime session of a model file.
pub fn open_session(path: &Path, intra_op_threads: usize) -> Result<Session> {
    let env = environment()?;
    let fail = |e: &dyn std::fmt::Display| {
        Error::internal(format!("ONNX Runtime cannot load {}: {e}", path.display()))
    };
    Session::builder(env)
        .map_err(|e| fail(&e))?
        .with_optimization_level(GraphOptimizationLevel::Level3)
        .map_err(|e| fail(&e))?
        .with_intra_threads(intra_op_threads)
        .map_err(|e| fail(&e))?
        .with_inter_threads(1)
        .map_err(|e| fail(&e))?
        .commit_from_file(path)
        .map_err(|e| fail(&e))
}
