//! How to serve concurrent requests on one ONNX model, measured in-process (no HTTP):
//!
//! - `pool=N`: servegraph's design, N sessions each on its own thread behind one bounded queue
//!   (`OnnxModel`, the `sessions` field);
//! - `lock`: one session behind a mutex, each request on tokio's blocking pool
//!   (`spawn_blocking`), the usual alternative.
//!
//! 64 concurrent tasks send single-row iris requests for a fixed time; throughput and latency
//! percentiles per strategy, alternating, in one run:
//!
//!     cargo bench -p servegraph-steps --bench sessions
//!
//! Needs the ONNX Runtime library (scripts/setup.sh).

mod common;

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::{Infer, benching, load};

use ort::session::Session;
use servegraph_engine::{Event, Tensor, TensorData};
use servegraph_steps::model::onnx::open_session;

const TASKS: usize = 64;

fn model_path() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../models/iris_lr.onnx")
}

fn request() -> Vec<Tensor> {
    vec![
        Tensor::new(
            "input",
            vec![1, 4],
            TensorData::Fp32(vec![5.1, 3.5, 1.4, 0.2]),
        )
        .unwrap(),
    ]
}

fn pool(sessions: usize) -> Infer {
    let spec_yaml = format!(
        "name: m\ngraph: {{kind: flow, steps: {{m: {{kind: model, class: onnx, model_path: {}, sessions: {sessions}, queue_size: 1024}}}}}}\n",
        model_path().display()
    );
    let graph = servegraph_engine::Graph::from_yaml(
        &spec_yaml,
        std::path::Path::new("."),
        &servegraph_steps::registry(),
        servegraph_engine::BuildMode::Load,
    )
    .unwrap_or_else(|d| panic!("{d:?}"));
    let graph = Arc::new(graph);
    Arc::new(move || {
        let g = Arc::clone(&graph);
        Box::pin(async move {
            g.run(Event::new("b", request())).await.expect("inference");
        })
    })
}

fn lock() -> Infer {
    let session = Arc::new(Mutex::new(open_session(&model_path(), 1).expect("session")));
    Arc::new(move || {
        let s = Arc::clone(&session);
        Box::pin(async move {
            tokio::task::spawn_blocking(move || {
                let mut session: std::sync::MutexGuard<'_, Session> = s.lock().unwrap();
                let t = request().remove(0);
                let TensorData::Fp32(data) = t.data else {
                    unreachable!()
                };
                let input = ort::value::Tensor::from_array((t.shape, data)).unwrap();
                let out = session.run(ort::inputs!["input" => input]).unwrap();
                let (_, labels) = out["label"].try_extract_tensor::<i64>().unwrap();
                std::hint::black_box(labels.to_vec());
            })
            .await
            .unwrap();
        })
    })
}

fn main() {
    // `cargo bench` passes `--bench`; a `cargo test` run of benches only checks they build.
    if !benching() {
        return;
    }
    let rt = tokio::runtime::Runtime::new().unwrap();
    let secs: u64 = std::env::var("SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(5);
    let strategies: Vec<(&str, Infer)> =
        vec![("pool=1", pool(1)), ("pool=2", pool(2)), ("lock", lock())];
    println!("{TASKS} concurrent tasks, {secs}s per round, iris LR batch 1");
    for round in 1..=2 {
        for (name, infer) in &strategies {
            rt.block_on(load(Arc::clone(infer), TASKS, Duration::from_secs(1)));
            let (rps, p50, p99) =
                rt.block_on(load(Arc::clone(infer), TASKS, Duration::from_secs(secs)));
            println!(
                "round {round} {name:>7}: {rps:>9.0} inferences/s, p50 {p50:>5} µs, p99 {p99:>6} µs"
            );
        }
    }
}
