//! The graph file loader: any text must give a graph or diagnostics, never a panic or a hang.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    servegraph_steps::fuzz::graph_yaml(data);
});
