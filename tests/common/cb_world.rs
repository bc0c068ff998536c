//! The simulated contextual world of `../shared/research/learning-routers.md` §1.7, seeded, for
//! the contextual routers' tests and `servegraph evaluate`'s: contexts x ~ U[−1, 1]⁵, three
//! routes, P(r = 1 | x, a) = B[a] + W[a]·x exactly linear, Bernoulli rewards drawn from a
//! noise shared by every policy run on the same seed (common random numbers).
//!
//! The ideal policy is worth 0.626 on average; the best single route 0.500; each route is best
//! in a large region (36 %, 35 % and 28 % of contexts).

use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};

/// Features per context (the intercept is the policy's own).
pub const FEATURES: usize = 5;
/// Routes.
pub const ROUTES: usize = 3;
pub const W: [[f64; FEATURES]; ROUTES] = [
    [0.20, 0.10, 0.00, -0.05, 0.05],
    [-0.15, 0.15, 0.05, 0.00, -0.05],
    [0.00, -0.20, 0.10, 0.10, 0.00],
];
pub const B: [f64; ROUTES] = [0.50, 0.50, 0.45];

/// One seed's world: `t` contexts, each route's true reward probability, and the uniform noise
/// that turns a probability into a reward (`noise[i] < p`).
pub struct World {
    pub contexts: Vec<[f64; FEATURES]>,
    pub noise: Vec<f64>,
}

impl World {
    pub fn new(seed: u64, t: usize) -> World {
        let mut rng = SmallRng::seed_from_u64(seed);
        let mut contexts = Vec::with_capacity(t);
        let mut noise = Vec::with_capacity(t);
        for _ in 0..t {
            let mut x = [0.0; FEATURES];
            for v in &mut x {
                *v = rng.random_range(-1.0..1.0);
            }
            contexts.push(x);
            noise.push(rng.random::<f64>());
        }
        World { contexts, noise }
    }

    /// P(r = 1) of `route` on request `i`.
    pub fn p(&self, i: usize, route: usize) -> f64 {
        let x = &self.contexts[i];
        B[route] + (0..FEATURES).map(|j| W[route][j] * x[j]).sum::<f64>()
    }

    /// The reward `route` earns on request `i` (the same for every policy on this seed).
    pub fn reward(&self, i: usize, route: usize) -> f64 {
        if self.noise[i] < self.p(i, route) {
            1.0
        } else {
            0.0
        }
    }

    /// The ideal route for request `i`.
    pub fn best(&self, i: usize) -> usize {
        (0..ROUTES)
            .max_by(|&a, &b| self.p(i, a).total_cmp(&self.p(i, b)))
            .unwrap()
    }

    /// The gap, in points of reward, between the ideal policy and `chosen` (route per request)
    /// on requests `lo..hi`, from the true probabilities (not the noisy rewards).
    pub fn gap(&self, chosen: &[usize], lo: usize, hi: usize) -> f64 {
        let n = (hi - lo) as f64;
        let ideal: f64 = (lo..hi).map(|i| self.p(i, self.best(i))).sum();
        let got: f64 = (lo..hi).map(|i| self.p(i, chosen[i])).sum();
        100.0 * (ideal - got) / n
    }

    /// The true value (mean expected reward) of a policy given as its pmf per request.
    pub fn value(&self, pmf: impl Fn(usize) -> [f64; ROUTES]) -> f64 {
        let t = self.contexts.len();
        (0..t)
            .map(|i| {
                let p = pmf(i);
                (0..ROUTES).map(|a| p[a] * self.p(i, a)).sum::<f64>()
            })
            .sum::<f64>()
            / t as f64
    }
}
