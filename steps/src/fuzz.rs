//! Entry points of the fuzz targets in `fuzz/`, here so the regression tests below run the
//! same code on every input the fuzzers kept (`fuzz/regressions/<target>/`).

use std::path::Path;
use std::sync::OnceLock;

use servegraph_engine::{BuildMode, Graph, GraphErrors, Registry};

/// The `graph_yaml` target: any text gives a graph or diagnostics (which must render), never a
/// panic. Structural mode: nothing is opened beyond checking that files exist.
pub fn graph_yaml(data: &[u8]) {
    static REGISTRY: OnceLock<Registry> = OnceLock::new();
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let registry = REGISTRY.get_or_init(crate::registry);
    let base = Path::new("/nonexistent/servegraph-fuzz");
    if let Err(diagnostics) = Graph::from_yaml(text, base, registry, BuildMode::Structural) {
        assert!(!diagnostics.is_empty(), "a rejected graph says why");
        let errors = GraphErrors::new(&base.join("g.yaml"), text, diagnostics);
        let _ = errors.to_string();
        let _ = errors.short();
    }
}

#[cfg(test)]
mod tests {
    /// Every input kept under `fuzz/regressions/<target>/` (crashes found and fixed, and seeds).
    fn inputs(target: &str) -> Vec<(std::path::PathBuf, Vec<u8>)> {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../fuzz/regressions")
            .join(target);
        let mut found: Vec<_> = std::fs::read_dir(&dir)
            .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
            .map(|e| e.unwrap().path())
            .filter(|p| p.is_file())
            .map(|p| {
                let data = std::fs::read(&p).unwrap();
                (p, data)
            })
            .collect();
        found.sort();
        found
    }

    #[test]
    fn graph_yaml_regressions() {
        for (path, data) in inputs("graph_yaml") {
            eprintln!("{}", path.display());
            super::graph_yaml(&data);
        }
    }

    #[test]
    fn oip_decode_regressions() {
        for (path, data) in inputs("oip_decode") {
            eprintln!("{}", path.display());
            servegraph_engine::protocol::fuzz_decode(&data);
        }
    }
}
