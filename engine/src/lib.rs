//! servegraph's engine: the graph spec and its validation, the compiled graph and its
//! executor, the public [`Step`] trait, the one request path, the wire protocols' codecs, the
//! protocol service (feature `serve`), the transports and sources: HTTP (feature `http`), gRPC
//! (`grpc`), Kafka (`kafka`), and the serving process (`server`, with `http`).
//!
//! The modules build on each other in one direction, lowest first: tensors, errors, events
//! and diagnostics; `experiment`, `learning`, `storage`; `step`; `metrics`, `stats`, `telemetry`;
//! `protocol`; `tracking`; `monitor` (drift monitoring of the tracking stream); `repository`; `graph`; `request` (the request path); `sources`; `serve` (the
//! protocol service); the transports (`http`, `grpc`, `kafka`); `server` (the serving
//! process). No module imports one above it (`cargo test` checks: `no_import_loops`).
//!
//! Step kinds live in `servegraph-steps`; this crate holds no model runtime.

pub mod diag;
pub mod error;
pub mod evaluate;
pub mod event;
pub mod experiment;
pub mod feedback;
pub mod fields;
pub mod graph;
#[cfg(feature = "grpc")]
pub mod grpc;
#[cfg(feature = "http")]
pub mod http;
#[cfg(feature = "kafka")]
pub mod kafka;
pub mod learning;
pub mod loading;
pub mod logs;
pub mod metrics;
pub mod monitor;
pub mod plot;
pub mod protocol;
pub mod repository;
pub mod request;
pub mod schema;
#[cfg(feature = "serve")]
pub mod serve;
#[cfg(feature = "http")]
pub mod server;
pub mod sources;
pub mod stats;
pub mod step;
pub mod storage;
pub mod telemetry;
pub mod tensor;
pub mod tracking;

pub use async_trait::async_trait;
pub use diag::{Diagnostic, GraphErrors};
pub use error::{Error, ErrorKind, Result};
pub use event::{BodyProtocol, Event, EventData, JsonBody, Target};
pub use graph::{Graph, Live};
pub use learning::{Learner, LearnerStats, Replicated, ShareLink};
pub use step::{
    BuildContext, BuildMode, Model, ModelInfo, Platform, Registry, Step, StepKind, StepNode,
};
pub use tensor::{DataType, Signature, Tensor, TensorData, TensorMeta};

/// The engine's modules import each other in one direction only: a module the graph uses
/// must not itself use the graph (a loop makes every change touch both).
#[cfg(test)]
mod layering {
    use std::collections::{BTreeMap, BTreeSet};
    use std::path::Path;

    /// Each top-level module's file or folder, and the top-level modules its code (not its
    /// comments, not its tests) names as `crate::x`.
    fn imports() -> BTreeMap<String, BTreeSet<String>> {
        fn visit(path: &Path, top: &str, out: &mut BTreeMap<String, BTreeSet<String>>) {
            if path.is_dir() {
                for entry in std::fs::read_dir(path).unwrap() {
                    visit(&entry.unwrap().path(), top, out);
                }
                return;
            }
            if path.extension().is_none_or(|e| e != "rs") {
                return;
            }
            let text = std::fs::read_to_string(path).unwrap();
            let code = text.split("#[cfg(test)]\nmod tests {").next().unwrap();
            let deps = out.entry(top.to_owned()).or_default();
            for line in code.lines().filter(|l| !l.trim_start().starts_with("//")) {
                let mut rest = line;
                while let Some(at) = rest.find("crate::") {
                    rest = &rest[at + "crate::".len()..];
                    let names: Vec<&str> = match rest.strip_prefix('{') {
                        // `crate::{a, b::c}` on one line.
                        Some(group) => group
                            .split('}')
                            .next()
                            .unwrap()
                            .split(',')
                            .map(|n| n.trim().split("::").next().unwrap())
                            .collect(),
                        None => vec![
                            rest.split(|c: char| !c.is_alphanumeric() && c != '_')
                                .next()
                                .unwrap(),
                        ],
                    };
                    for n in names.into_iter().filter(|n| !n.is_empty() && *n != top) {
                        deps.insert(n.to_owned());
                    }
                }
            }
        }
        let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
        let mut out = BTreeMap::new();
        for entry in std::fs::read_dir(&src).unwrap() {
            let path = entry.unwrap().path();
            let name = path.file_stem().unwrap().to_string_lossy().into_owned();
            if name != "lib" {
                visit(&path, &name, &mut out);
            }
        }
        out
    }

    /// A loop of imports, if there is one: depth-first, keeping the path.
    fn find_loop(graph: &BTreeMap<String, BTreeSet<String>>) -> Option<Vec<String>> {
        fn walk(
            at: &str,
            graph: &BTreeMap<String, BTreeSet<String>>,
            path: &mut Vec<String>,
            done: &mut BTreeSet<String>,
        ) -> Option<Vec<String>> {
            if let Some(i) = path.iter().position(|p| p == at) {
                let mut found = path[i..].to_vec();
                found.push(at.to_owned());
                return Some(found);
            }
            if !done.insert(at.to_owned()) {
                return None;
            }
            path.push(at.to_owned());
            for next in graph.get(at).into_iter().flatten() {
                if graph.contains_key(next)
                    && let Some(found) = walk(next, graph, path, done)
                {
                    return Some(found);
                }
            }
            path.pop();
            None
        }
        let mut done = BTreeSet::new();
        graph
            .keys()
            .find_map(|m| walk(m, graph, &mut Vec::new(), &mut done))
    }

    #[test]
    fn no_import_loops() {
        let graph = imports();
        assert!(graph.contains_key("graph") && graph["request"].contains("graph"));
        if let Some(found) = find_loop(&graph) {
            panic!(
                "the engine's modules import each other in a loop: {}",
                found.join(" → ")
            );
        }
    }

    #[test]
    fn a_loop_is_found() {
        let mut g: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
        for (a, b) in [("a", "b"), ("b", "c"), ("c", "a"), ("c", "d")] {
            g.entry(a.into()).or_default().insert(b.into());
            g.entry(b.into()).or_default();
        }
        assert_eq!(find_loop(&g).unwrap(), ["a", "b", "c", "a"]);
        g.get_mut("c").unwrap().remove("a");
        assert_eq!(find_loop(&g), None);
    }
}
