//! What a contextual policy costs per decision and per reward, in-process: `decide` (the pmf
//! and the sampled route) and `learn` (a Sherman–Morrison update) of each kind, with 3 routes
//! and d = 6 and d = 32 features (the intercept included), on a model that has already learnt
//! 2,000 rewards. Medians of 7 rounds of 100,000 calls:
//!
//!     cargo bench -p servegraph-steps --bench contextual

use std::time::Instant;

use servegraph_steps::contextual::{Contextual, ContextualKind, ContextualParams};

const ROUNDS: usize = 7;
const CALLS: usize = 100_000;
const ROUTES: usize = 3;

/// Deterministic contexts in [−1, 1), the intercept last.
fn contexts(d: usize, n: usize) -> Vec<Vec<f64>> {
    let mut s: u64 = 0x9e3779b97f4a7c15;
    (0..n)
        .map(|_| {
            let mut x: Vec<f64> = (0..d - 1)
                .map(|_| {
                    s ^= s << 13;
                    s ^= s >> 7;
                    s ^= s << 17;
                    (s >> 11) as f64 / (1u64 << 53) as f64 * 2.0 - 1.0
                })
                .collect();
            x.push(1.0);
            x
        })
        .collect()
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn main() {
    println!("| kind | d | decide ns | learn ns |");
    println!("|---|---:|---:|---:|");
    for kind in [
        ContextualKind::SquareCb,
        ContextualKind::LinUcb,
        ContextualKind::LinThompson,
    ] {
        for d in [6, 32] {
            let xs = contexts(d, 1024);
            let mut c = Contextual::new(ContextualParams::new(kind, 1), ROUTES, d);
            for (i, x) in xs.iter().cycle().take(2000).enumerate() {
                c.learn(i % ROUTES, x, (x[0] > 0.0) as u8 as f64).unwrap();
            }
            let (mut decide, mut learn) = (Vec::new(), Vec::new());
            let mut sink = 0usize;
            for _ in 0..ROUNDS {
                let t = Instant::now();
                for i in 0..CALLS {
                    sink += c.decide(&xs[i % xs.len()]).0;
                }
                decide.push(t.elapsed().as_nanos() as f64 / CALLS as f64);
                // Learning changes the model, so each round learns on a fresh copy's worth
                // of rewards; the cost does not depend on what was learnt.
                let t = Instant::now();
                for i in 0..CALLS {
                    let x = &xs[i % xs.len()];
                    c.learn(i % ROUTES, x, (x[1] > 0.0) as u8 as f64).unwrap();
                }
                learn.push(t.elapsed().as_nanos() as f64 / CALLS as f64);
            }
            std::hint::black_box(sink);
            println!(
                "| {} | {d} | {:.0} | {:.0} |",
                kind.as_str(),
                median(decide),
                median(learn)
            );
        }
    }
}
