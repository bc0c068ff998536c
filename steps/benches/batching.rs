//! Adaptive batching on a small CNN (models/cnn.onnx, input FP32 [N, 3, 64, 64]), in-process:
//! 64 tasks each send one image at a time to the model step, without batching and with
//! `batch: {max_size, max_wait_us}`; plus the model's own run time at batch 1, 8, 16 and 64,
//! which bounds what batching can add to latency (p99 ≤ max_wait + one batch's run).
//!
//!     SECS=5 cargo bench -p servegraph-steps --bench batching
//!
//! Needs the ONNX Runtime library (scripts/setup.sh).

mod common;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{Infer, benching, load};
use servegraph_engine::{BuildMode, Event, Graph, Tensor, TensorData};

const TASKS: usize = 64;

fn cnn() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../models/cnn.onnx")
}

fn image(n: usize) -> Vec<Tensor> {
    let data: Vec<f32> = (0..n * 3 * 64 * 64)
        .map(|i| ((i % 97) as f32 / 97.0) - 0.5)
        .collect();
    vec![Tensor::new("input", vec![n, 3, 64, 64], TensorData::Fp32(data)).unwrap()]
}

fn graph(batch: &str) -> Arc<Graph> {
    let yaml = format!(
        "name: b\ngraph: {{kind: flow, steps: {{cnn: {{kind: model, class: onnx, model_path: {}, queue_size: 1024{batch}}}}}}}\n",
        cnn().display()
    );
    let g = Graph::from_yaml(
        &yaml,
        Path::new("."),
        &servegraph_steps::registry(),
        BuildMode::Load,
    )
    .unwrap_or_else(|d| panic!("{d:?}"));
    Arc::new(g)
}

fn infer(g: Arc<Graph>) -> Infer {
    Arc::new(move || {
        let g = Arc::clone(&g);
        Box::pin(async move {
            g.run(Event::new("b", image(1))).await.expect("inference");
        })
    })
}

fn main() {
    if !benching() {
        return;
    }
    let rt = tokio::runtime::Runtime::new().unwrap();
    let secs: u64 = std::env::var("SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(5);

    // One run of the model alone, by batch size (median of 200).
    let single = graph("");
    for n in [1usize, 8, 16, 64] {
        let mut times: Vec<u128> = (0..200)
            .map(|_| {
                let t0 = Instant::now();
                rt.block_on(single.run(Event::new("r", image(n)))).unwrap();
                t0.elapsed().as_micros()
            })
            .collect();
        times.sort_unstable();
        println!(
            "run at batch {n:>2}: {:>6} µs ({:.1} µs per image)",
            times[100],
            times[100] as f64 / n as f64
        );
    }

    let configs = [
        ("no batching", ""),
        (
            "batch 16, wait 0",
            ", batch: {max_size: 16, max_wait_us: 0}",
        ),
        (
            "batch 64, wait 0",
            ", batch: {max_size: 64, max_wait_us: 0}",
        ),
        (
            "batch 16, wait 500µs",
            ", batch: {max_size: 16, max_wait_us: 500}",
        ),
        ("2 sessions, no batching", ", sessions: 2"),
        (
            "batch 16, 2 threads",
            ", batch: {max_size: 16, max_wait_us: 0}, intra_op_threads: 2",
        ),
    ];
    println!("{TASKS} concurrent callers, one image each, {secs}s per round");
    for round in 1..=2 {
        for (name, batch) in &configs {
            let f = infer(graph(batch));
            rt.block_on(load(Arc::clone(&f), TASKS, Duration::from_secs(1)));
            let (rps, p50, p99) = rt.block_on(load(f, TASKS, Duration::from_secs(secs)));
            println!(
                "round {round} {name:>22}: {rps:>8.0} images/s, p50 {p50:>6} µs, p99 {p99:>6} µs"
            );
        }
    }
}
