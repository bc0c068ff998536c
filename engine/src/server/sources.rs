//! The sources graph files declare (`sources:`), in one table.

use crate::graph::Graph;
use crate::sources::Source;

/// One kind of source a graph file declares under `sources:` (its settings are a field of
/// [`SourcesSpec`], read and checked in every build): how its sources are made for a graph
/// that declares it (none when it does not).
pub struct SourceKind {
    /// Its key under `sources:`.
    pub name: &'static str,
    pub build: fn(&Graph) -> Vec<Box<dyn Source>>,
}

/// Every kind of source this build serves from graph files, once: a new one is its module
/// (settings and runtime), its field in [`SourcesSpec`] and one line here. (HTTP and gRPC
/// come from the command line: [`super::ServerConfig`].)
pub const SOURCE_KINDS: &[SourceKind] = &[
    #[cfg(feature = "kafka")]
    SourceKind {
        name: "kafka",
        build: crate::kafka::sources,
    },
];

/// The sources `graph` declares, built.
pub fn from_graph(graph: &Graph) -> Vec<Box<dyn Source>> {
    SOURCE_KINDS.iter().flat_map(|k| (k.build)(graph)).collect()
}
