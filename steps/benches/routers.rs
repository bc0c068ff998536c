//! What a routing policy costs per request, in-process (no HTTP): a router over two no-op
//! routes, run through the engine, with `path` (the request names its route) as the baseline.
//! Bandits also take one feedback call per request, as an experiment does; the figure is the
//! decision plus the feedback.
//!
//! Each policy runs `ROUNDS` times, alternating, on one task (the per-request cost) and then
//! with one task per core (the cost under contention: a bandit's counts are behind one lock).
//! Medians of the rounds, in one run:
//!
//!     cargo bench -p servegraph-steps --bench routers
//!
//! Every request also carries a 31-number tensor `c`: the contextual policies' features (and a
//! weighted router's, which only logs them); the other policies ignore it.

use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use servegraph_engine::{BuildMode, Event, Graph, Target, Tensor, TensorData};

const ROUNDS: usize = 7;
const REQUESTS: usize = 100_000;

const POLICIES: [&str; 11] = [
    "{type: path}",
    "{type: weighted, weights: {a: 1, b: 3}}",
    "{type: epsilon_greedy, epsilon: 0.1, seed: 1}",
    "{type: ucb1, seed: 1}",
    "{type: thompson, seed: 1}",
    // Shared: every reward also goes to the outbox the Kafka task drains.
    "{type: thompson, seed: 1, share: \"kafka://127.0.0.1:9/ab\"}",
    // Contexts (issue 28): every request carries a 31-number tensor `c` (the others ignore
    // it); d counts the intercept.
    "{type: weighted, weights: {a: 1, b: 3}, features: [{tensor: c, size: 31}]}",
    "{type: squarecb, seed: 1, features: [{tensor: c, indices: [0, 1, 2, 3, 4]}]}",
    "{type: squarecb, seed: 1, features: [{tensor: c, size: 31}]}",
    "{type: linucb, seed: 1, features: [{tensor: c, size: 31}]}",
    "{type: lin_thompson, seed: 1, features: [{tensor: c, size: 31}]}",
];

/// Connects a sharing router's outbox to a task that drains it, as the Kafka publisher does.
fn drain_shared(rt: &tokio::runtime::Runtime, g: &Graph) {
    if let Some(link) = g.learner("ab").and_then(|r| r.share()) {
        let (tx, mut rx) = tokio::sync::mpsc::channel::<Vec<u8>>(10_000);
        link.learner.connect(tx);
        rt.spawn(async move { while rx.recv().await.is_some() {} });
    }
}

fn graph(policy: &str) -> Arc<Graph> {
    let yaml = format!(
        "name: ab\ngraph:\n  kind: router\n  policy: {policy}\n  routes:\n    a: {{kind: transform, op: noop}}\n    b: {{kind: transform, op: noop}}\n"
    );
    Arc::new(
        Graph::from_yaml(
            &yaml,
            Path::new("."),
            &servegraph_steps::registry(),
            BuildMode::Load,
        )
        .unwrap_or_else(|d| panic!("{d:?}")),
    )
}

/// `n` requests (ids `task-i`), each followed by feedback when the policy learns; ns each.
async fn drive(g: Arc<Graph>, path: bool, task: usize, n: usize) -> f64 {
    let router = g.learner("ab").expect("the router");
    let t0 = Instant::now();
    for i in 0..n {
        let mut ev = Event::new(
            format!("{task}-{i}"),
            vec![
                Tensor::new("x", vec![1], TensorData::Fp32(vec![1.0])).unwrap(),
                Tensor::new("c", vec![1, 31], TensorData::Fp32(context(i))).unwrap(),
            ],
        );
        if path {
            ev.target = Some(Target {
                model: if i % 4 == 0 { "a" } else { "b" }.into(),
                version: None,
            });
        }
        let out = g.run(ev).await.expect("routed");
        if !path {
            // Route b is the better one, deterministically.
            let reward = if out.routes.last().is_some_and(|r| r.1 == "b") {
                (i % 10 < 7) as u8 as f64
            } else {
                (i % 10 < 3) as u8 as f64
            };
            // Weighted routers take no feedback (an error), which costs about the same lookup.
            let _ = router.feedback(&out.id, reward);
        }
    }
    t0.elapsed().as_nanos() as f64 / n as f64
}

/// The `i`th request's 31 context numbers, in [−1, 1].
fn context(i: usize) -> Vec<f32> {
    (0..31)
        .map(|j| (((i * 31 + j) * 2_654_435_761) % 2001) as f32 / 1000.0 - 1.0)
        .collect()
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn main() {
    if !std::env::args().any(|a| a == "--bench") {
        return; // `cargo test` only builds benches
    }
    let cores = std::thread::available_parallelism().map_or(4, |n| n.get());
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let mut single = vec![Vec::new(); POLICIES.len()];
    let mut many = vec![Vec::new(); POLICIES.len()];
    for _ in 0..ROUNDS {
        for (p, policy) in POLICIES.iter().enumerate() {
            let path = p == 0;
            let g = graph(policy);
            drain_shared(&rt, &g);
            single[p].push(
                rt.block_on(rt.spawn(drive(Arc::clone(&g), path, 0, REQUESTS)))
                    .unwrap(),
            );
            let g = graph(policy);
            drain_shared(&rt, &g);
            let per_task = REQUESTS / cores;
            let t0 = Instant::now();
            rt.block_on(async {
                let tasks: Vec<_> = (0..cores)
                    .map(|t| tokio::spawn(drive(Arc::clone(&g), path, t, per_task)))
                    .collect();
                for t in tasks {
                    t.await.unwrap();
                }
            });
            // Wall time per request across all tasks (throughput's inverse).
            many[p].push(t0.elapsed().as_nanos() as f64 / (per_task * cores) as f64);
        }
    }
    let base = (median(single[0].clone()), median(many[0].clone()));
    println!(
        "{REQUESTS} requests per round, {ROUNDS} rounds, medians; {cores} tasks in the concurrent column"
    );
    println!(
        "{:<64} {:>12} {:>14} {:>16} {:>18}",
        "policy", "ns/request", "over path", "ns/req (conc.)", "over path (conc.)"
    );
    for (p, policy) in POLICIES.iter().enumerate() {
        let (s, m) = (median(single[p].clone()), median(many[p].clone()));
        println!(
            "{policy:<64} {s:>12.0} {:>14.0} {m:>16.0} {:>18.0}",
            s - base.0,
            m - base.1
        );
    }
}
