//! The load loop the step benchmarks share: N tasks call an async function back to back for a
//! fixed time; throughput and latency percentiles.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

pub type Infer = Arc<dyn Fn() -> Pin<Box<dyn Future<Output = ()> + Send>> + Send + Sync>;

/// `(calls per second, p50 µs, p99 µs)`.
pub async fn load(infer: Infer, tasks: usize, duration: Duration) -> (f64, u64, u64) {
    let stop = Instant::now() + duration;
    let mut handles = Vec::new();
    for _ in 0..tasks {
        let infer = Arc::clone(&infer);
        handles.push(tokio::spawn(async move {
            let mut lat = Vec::new();
            while Instant::now() < stop {
                let t0 = Instant::now();
                infer().await;
                lat.push(t0.elapsed().as_micros() as u64);
            }
            lat
        }));
    }
    let mut all = Vec::new();
    for h in handles {
        all.extend(h.await.unwrap());
    }
    all.sort_unstable();
    let p = |q: f64| all[((all.len() as f64 * q) as usize).min(all.len() - 1)];
    (all.len() as f64 / duration.as_secs_f64(), p(0.5), p(0.99))
}

/// Whether `cargo bench` (not `cargo test`, which only builds benches) is running us.
pub fn benching() -> bool {
    std::env::args().any(|a| a == "--bench")
}
