//! Contextual bandits for routers: each route keeps an online ridge regression of its reward
//! on the request's features x (`dim` numbers, the intercept included), and a policy turns the
//! K predictions into the probabilities it samples a route from. Free of I/O, driven by the
//! router (and usable offline, by `servegraph evaluate`).
//!
//! Every route keeps A = λI + Σ x xᵀ as its inverse A⁻¹ (updated by Sherman–Morrison, O(d²)
//! per reward), b = Σ r x and θ = A⁻¹ b (refreshed with the reward, O(d²)).
//!
//! - [`ContextualKind::SquareCb`] (VW's `--squarecb`): ŷ_a = θ_a·x; every route but the best
//!   gets p(a) = 1 / (K + γ_t (ŷ_best − ŷ_a)), the best gets the rest; γ_t = γ₀ √t with t the
//!   rewards learnt + 1. Its probabilities are exact and cost O(Kd) per decision.
//! - [`ContextualKind::LinUcb`]: the route of the largest θ_a·x + α √(xᵀA_a⁻¹x) (O(Kd²)); it
//!   never randomises, so its pmf is one-hot and its logs cannot evaluate another policy
//!   offline, unless `epsilon` > 0 mixes in ε/K of every route.
//! - [`ContextualKind::LinThompson`]: θ̃_a ~ N(θ_a, v² A_a⁻¹), the route of the largest θ̃_a·x.
//!   θ̃_a·x is exactly N(θ_a·x, v² xᵀA_a⁻¹x) and the routes' posteriors are independent, so
//!   "pmf first": [`THOMPSON_DRAWS`] draws of those K scalar normals estimate P(a is best);
//!   the route is sampled from that pmf, which is logged, so the propensity is exact (as the
//!   non-contextual Thompson router does). O(Kd²) per decision, no factorisation to cache.
//!
//! `min_prob` (every kind) mixes the pmf with the uniform one so that every route has at least
//! that probability: p ← min_prob + (1 − K·min_prob) p.

use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use rand_distr::{Distribution, StandardNormal};

use crate::bandit::argmax;

/// Posterior draws per decision of linear Thompson sampling, for its pmf.
pub const THOMPSON_DRAWS: usize = 32;

/// Which contextual policy.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ContextualKind {
    SquareCb,
    LinUcb,
    LinThompson,
}

impl ContextualKind {
    /// The spelling of `policy.type`.
    pub fn as_str(self) -> &'static str {
        match self {
            ContextualKind::SquareCb => "squarecb",
            ContextualKind::LinUcb => "linucb",
            ContextualKind::LinThompson => "lin_thompson",
        }
    }
}

/// A contextual policy's parameters; [`ContextualParams::new`] gives the defaults.
#[derive(Clone, Debug)]
pub struct ContextualParams {
    pub kind: ContextualKind,
    /// SquareCB: γ₀ in γ_t = γ₀ √t (default 10; larger exploits sooner).
    pub gamma: f64,
    /// Every kind: the smallest probability of any route (default 0; at most 1/K).
    pub min_prob: f64,
    /// LinUCB: the width of the confidence bonus (default 0.5).
    pub alpha: f64,
    /// LinUCB: the share of decisions spread uniformly over the routes (default 0).
    pub epsilon: f64,
    /// Linear Thompson: the posterior's scale (default 0.25).
    pub v: f64,
    /// λ of every route's ridge regression, A = λI + Σ x xᵀ (default 1).
    pub ridge: f64,
    /// Seeds the random choices.
    pub seed: u64,
}

impl ContextualParams {
    /// The defaults of `kind`, seeded with `seed`.
    pub fn new(kind: ContextualKind, seed: u64) -> ContextualParams {
        ContextualParams {
            kind,
            gamma: 10.0,
            min_prob: 0.0,
            alpha: 0.5,
            epsilon: 0.0,
            v: 0.25,
            ridge: 1.0,
            seed,
        }
    }

    /// What is wrong with the parameters for `routes` routes, if anything.
    pub fn check(&self, routes: usize) -> Result<(), String> {
        let positive = |v: f64| v.is_finite() && v > 0.0;
        if routes == 0 {
            return Err("a contextual policy needs at least one route".into());
        }
        if !positive(self.ridge) {
            return Err(format!("`ridge` must be > 0 (got {})", self.ridge));
        }
        if !(self.gamma.is_finite() && self.gamma >= 0.0) {
            return Err(format!("`gamma` must be ≥ 0 (got {})", self.gamma));
        }
        if !(self.alpha.is_finite() && self.alpha >= 0.0) {
            return Err(format!("`alpha` must be ≥ 0 (got {})", self.alpha));
        }
        if !(self.v.is_finite() && self.v >= 0.0) {
            return Err(format!("`v` must be ≥ 0 (got {})", self.v));
        }
        if !(0.0..=1.0).contains(&self.epsilon) {
            return Err(format!(
                "`epsilon` must be in [0, 1] (got {})",
                self.epsilon
            ));
        }
        if !(self.min_prob >= 0.0 && self.min_prob * routes as f64 <= 1.0 + 1e-12) {
            return Err(format!(
                "`min_prob` must be in [0, 1/{routes}] with {routes} routes (got {})",
                self.min_prob
            ));
        }
        Ok(())
    }
}

/// One route's ridge regression.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct RouteModel {
    /// A⁻¹, row-major, d × d.
    pub ainv: Vec<f64>,
    /// Σ r x.
    pub b: Vec<f64>,
    /// Rewards learnt.
    pub n: u64,
}

/// A contextual policy's learnt state (what `state_file` saves).
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct ContextualState {
    pub dim: usize,
    pub routes: Vec<RouteModel>,
}

/// A contextual policy over `routes` routes and `dim` features (see the module's docs).
pub struct Contextual {
    params: ContextualParams,
    dim: usize,
    models: Vec<RouteModel>,
    /// θ = A⁻¹ b per route, kept current.
    theta: Vec<Vec<f64>>,
    /// Rewards learnt by every route.
    learnt: u64,
    rng: SmallRng,
    /// Scratch for A⁻¹x.
    scratch: Vec<f64>,
}

impl Contextual {
    /// `dim` includes the intercept. The parameters are taken as given: check them first with
    /// [`ContextualParams::check`] (out-of-range ones are clamped, never panic).
    pub fn new(params: ContextualParams, routes: usize, dim: usize) -> Contextual {
        let routes = routes.max(1);
        let ridge = if params.ridge > 0.0 {
            params.ridge
        } else {
            1.0
        };
        let mut ainv = vec![0.0; dim * dim];
        for i in 0..dim {
            ainv[i * dim + i] = 1.0 / ridge;
        }
        let model = RouteModel {
            ainv,
            b: vec![0.0; dim],
            n: 0,
        };
        Contextual {
            rng: SmallRng::seed_from_u64(params.seed),
            params,
            dim,
            models: vec![model; routes],
            theta: vec![vec![0.0; dim]; routes],
            learnt: 0,
            scratch: vec![0.0; dim],
        }
    }

    pub fn params(&self) -> &ContextualParams {
        &self.params
    }

    pub fn dim(&self) -> usize {
        self.dim
    }

    pub fn routes(&self) -> usize {
        self.models.len()
    }

    /// Rewards learnt, every route together.
    pub fn learnt(&self) -> u64 {
        self.learnt
    }

    /// Predicted reward per route (θ·x).
    pub fn scores(&self, x: &[f64]) -> Vec<f64> {
        self.theta.iter().map(|t| dot(t, x)).collect()
    }

    /// The probabilities [`Contextual::decide`] would sample from now (for linear Thompson, a
    /// fresh Monte-Carlo estimate: it draws from the random generator).
    pub fn pmf(&mut self, x: &[f64]) -> Vec<f64> {
        let scores = self.scores(x);
        self.pmf_of(x, &scores)
    }

    /// Chooses a route for `x`: its index and the probabilities it was sampled from.
    pub fn decide(&mut self, x: &[f64]) -> (usize, Vec<f64>) {
        let (chosen, pmf, _) = self.decide_scored(x);
        (chosen, pmf)
    }

    /// [`Contextual::decide`], with the scores (θ·x) it used.
    pub fn decide_scored(&mut self, x: &[f64]) -> (usize, Vec<f64>, Vec<f64>) {
        let scores = self.scores(x);
        let pmf = self.pmf_of(x, &scores);
        let u: f64 = self.rng.random();
        (sample(&pmf, u), pmf, scores)
    }

    fn pmf_of(&mut self, x: &[f64], scores: &[f64]) -> Vec<f64> {
        let k = scores.len();
        let mut pmf = vec![0.0; k];
        match self.params.kind {
            ContextualKind::SquareCb => {
                let gamma = self.params.gamma * ((self.learnt + 1) as f64).sqrt();
                let best = argmax(scores);
                let mut rest = 0.0;
                for (a, p) in pmf.iter_mut().enumerate() {
                    if a != best {
                        *p = 1.0 / (k as f64 + gamma * (scores[best] - scores[a]));
                        rest += *p;
                    }
                }
                pmf[best] = (1.0 - rest).max(0.0);
            }
            ContextualKind::LinUcb => {
                let alpha = self.params.alpha;
                let mut ucb = vec![0.0; k];
                for (a, u) in ucb.iter_mut().enumerate() {
                    *u = scores[a] + alpha * self.width(a, x).sqrt();
                }
                let eps = self.params.epsilon;
                pmf.iter_mut().for_each(|p| *p = eps / k as f64);
                pmf[argmax(&ucb)] += 1.0 - eps;
            }
            ContextualKind::LinThompson => {
                let v = self.params.v;
                let sd: Vec<f64> = (0..k).map(|a| v * self.width(a, x).sqrt()).collect();
                let mut draw = vec![0.0; k];
                for _ in 0..THOMPSON_DRAWS {
                    for a in 0..k {
                        let z: f64 = StandardNormal.sample(&mut self.rng);
                        draw[a] = scores[a] + sd[a] * z;
                    }
                    pmf[argmax(&draw)] += 1.0 / THOMPSON_DRAWS as f64;
                }
            }
        }
        let floor = self.params.min_prob;
        if floor > 0.0 {
            let keep = (1.0 - k as f64 * floor).max(0.0);
            pmf.iter_mut().for_each(|p| *p = floor + keep * *p);
        }
        pmf
    }

    /// xᵀ A_a⁻¹ x (≥ 0).
    fn width(&mut self, a: usize, x: &[f64]) -> f64 {
        let d = self.dim;
        let ainv = &self.models[a].ainv;
        let mut s = 0.0;
        for i in 0..d {
            s += x[i] * dot(&ainv[i * d..(i + 1) * d], x);
        }
        s.max(0.0)
    }

    /// Learns `reward` for `route` chosen on `x`: a rank-one update of that route's model.
    pub fn learn(&mut self, route: usize, x: &[f64], reward: f64) -> Result<(), String> {
        let d = self.dim;
        if route >= self.models.len() {
            return Err(format!(
                "route index {route} is out of range ({} routes)",
                self.models.len()
            ));
        }
        if x.len() != d {
            return Err(format!(
                "the context has {} numbers, the policy takes {d}",
                x.len()
            ));
        }
        if !reward.is_finite() {
            return Err(format!("reward {reward} is not a number"));
        }
        if let Some(i) = x.iter().position(|v| !v.is_finite()) {
            return Err(format!("the context's number {i} is {}", x[i]));
        }
        let m = &mut self.models[route];
        // Sherman–Morrison: (A + x xᵀ)⁻¹ = A⁻¹ − (A⁻¹x)(A⁻¹x)ᵀ / (1 + xᵀA⁻¹x); A⁻¹ symmetric.
        let ax = &mut self.scratch;
        for (i, axi) in ax.iter_mut().enumerate() {
            *axi = dot(&m.ainv[i * d..(i + 1) * d], x);
        }
        let denom = 1.0 + dot(x, ax);
        for i in 0..d {
            let f = ax[i] / denom;
            let row = &mut m.ainv[i * d..(i + 1) * d];
            for (r, axj) in row.iter_mut().zip(ax.iter()) {
                *r -= f * axj;
            }
        }
        for (bi, xi) in m.b.iter_mut().zip(x) {
            *bi += reward * xi;
        }
        m.n += 1;
        self.learnt += 1;
        let theta = &mut self.theta[route];
        for (i, t) in theta.iter_mut().enumerate() {
            *t = dot(&m.ainv[i * d..(i + 1) * d], &m.b);
        }
        Ok(())
    }

    /// The learnt state (for a snapshot).
    pub fn state(&self) -> ContextualState {
        ContextualState {
            dim: self.dim,
            routes: self.models.clone(),
        }
    }

    /// Restores route `route`'s model from a snapshot of the same dimension.
    pub fn restore(&mut self, route: usize, model: RouteModel) -> Result<(), String> {
        let d = self.dim;
        if route >= self.models.len() {
            return Err(format!("route index {route} is out of range"));
        }
        if model.ainv.len() != d * d || model.b.len() != d {
            return Err(format!(
                "the saved model has {} features, the policy takes {d}",
                model.b.len()
            ));
        }
        if model.ainv.iter().chain(&model.b).any(|v| !v.is_finite()) {
            return Err("the saved model holds a number that is not finite".into());
        }
        self.learnt = self.learnt - self.models[route].n + model.n;
        for (i, t) in self.theta[route].iter_mut().enumerate() {
            *t = dot(&model.ainv[i * d..(i + 1) * d], &model.b);
        }
        self.models[route] = model;
        Ok(())
    }
}

fn dot(a: &[f64], b: &[f64]) -> f64 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

/// The index `u` ∈ [0, 1) falls in along the pmf's cumulative sums; never one of probability 0.
fn sample(pmf: &[f64], u: f64) -> usize {
    let mut acc = 0.0;
    let mut last = 0;
    for (i, p) in pmf.iter().enumerate() {
        if *p > 0.0 {
            acc += p;
            last = i;
            if u < acc {
                return i;
            }
        }
    }
    last
}

#[cfg(test)]
mod tests {
    use super::*;

    fn world_x(rng: &mut SmallRng, d: usize) -> Vec<f64> {
        let mut x: Vec<f64> = (0..d - 1).map(|_| rng.random_range(-1.0..1.0)).collect();
        x.push(1.0);
        x
    }

    /// Solves A θ = b directly (Gaussian elimination with partial pivoting).
    fn solve(mut a: Vec<Vec<f64>>, mut b: Vec<f64>) -> Vec<f64> {
        let n = b.len();
        for c in 0..n {
            let p = (c..n)
                .max_by(|&i, &j| a[i][c].abs().total_cmp(&a[j][c].abs()))
                .unwrap();
            a.swap(c, p);
            b.swap(c, p);
            let pivot = a[c].clone();
            for r in c + 1..n {
                let f = a[r][c] / pivot[c];
                for (ark, ack) in a[r][c..].iter_mut().zip(&pivot[c..]) {
                    *ark -= f * ack;
                }
                b[r] -= f * b[c];
            }
        }
        let mut x = vec![0.0; n];
        for r in (0..n).rev() {
            let s: f64 = (r + 1..n).map(|k| a[r][k] * x[k]).sum();
            x[r] = (b[r] - s) / a[r][r];
        }
        x
    }

    #[test]
    fn sherman_morrison_equals_a_direct_solve() {
        let d = 6;
        let mut c = Contextual::new(
            ContextualParams {
                ridge: 0.5,
                ..ContextualParams::new(ContextualKind::SquareCb, 1)
            },
            2,
            d,
        );
        let mut rng = SmallRng::seed_from_u64(3);
        let mut a = vec![vec![0.0; d]; d];
        (0..d).for_each(|i| a[i][i] = 0.5);
        let mut b = vec![0.0; d];
        for _ in 0..500 {
            let x = world_x(&mut rng, d);
            let r: f64 = rng.random();
            c.learn(1, &x, r).unwrap();
            for i in 0..d {
                b[i] += r * x[i];
                for j in 0..d {
                    a[i][j] += x[i] * x[j];
                }
            }
        }
        let theta = solve(a, b);
        for (t, want) in c.theta[1].iter().zip(&theta) {
            assert!((t - want).abs() < 1e-9, "{:?} {theta:?}", c.theta[1]);
        }
        assert!(
            c.theta[0].iter().all(|t| *t == 0.0),
            "route 0 learnt nothing"
        );
        let x = world_x(&mut rng, d);
        let s = c.scores(&x);
        assert!((s[1] - dot(&theta, &x)).abs() < 1e-9);
    }

    #[test]
    fn pmfs_sum_to_one_and_respect_the_floor() {
        for kind in [
            ContextualKind::SquareCb,
            ContextualKind::LinUcb,
            ContextualKind::LinThompson,
        ] {
            let params = ContextualParams {
                min_prob: 0.05,
                ..ContextualParams::new(kind, 9)
            };
            params.check(3).unwrap();
            let mut c = Contextual::new(params, 3, 4);
            let mut rng = SmallRng::seed_from_u64(4);
            for t in 0..2000 {
                let x = world_x(&mut rng, 4);
                let (a, pmf) = c.decide(&x);
                assert!(
                    (pmf.iter().sum::<f64>() - 1.0).abs() < 1e-9,
                    "{kind:?} {pmf:?}"
                );
                assert!(pmf.iter().all(|p| *p >= 0.05 - 1e-12), "{kind:?} {pmf:?}");
                assert!(pmf[a] > 0.0);
                let r = if x[0] > 0.0 && a == 0 {
                    1.0
                } else {
                    (t % 2) as f64 * 0.3
                };
                c.learn(a, &x, r).unwrap();
            }
        }
        assert!(
            ContextualParams {
                min_prob: 0.4,
                ..ContextualParams::new(ContextualKind::SquareCb, 1)
            }
            .check(3)
            .is_err()
        );
    }

    #[test]
    fn same_seed_same_choices() {
        for kind in [ContextualKind::SquareCb, ContextualKind::LinThompson] {
            let run = || {
                let mut c = Contextual::new(ContextualParams::new(kind, 42), 3, 3);
                let mut rng = SmallRng::seed_from_u64(1);
                (0..300)
                    .map(|_| {
                        let x = world_x(&mut rng, 3);
                        let (a, pmf) = c.decide(&x);
                        c.learn(a, &x, x[0].max(0.0)).unwrap();
                        (a, pmf)
                    })
                    .collect::<Vec<_>>()
            };
            assert_eq!(run(), run(), "{kind:?}");
        }
    }

    #[test]
    fn linucb_is_deterministic_and_one_hot() {
        let run = |seed| {
            let mut c = Contextual::new(ContextualParams::new(ContextualKind::LinUcb, seed), 3, 3);
            let mut rng = SmallRng::seed_from_u64(1);
            (0..300)
                .map(|_| {
                    let x = world_x(&mut rng, 3);
                    let (a, pmf) = c.decide(&x);
                    assert_eq!(pmf[a], 1.0);
                    assert_eq!(pmf.iter().filter(|p| **p == 0.0).count(), 2);
                    c.learn(a, &x, x[1].max(0.0)).unwrap();
                    a
                })
                .collect::<Vec<_>>()
        };
        assert_eq!(run(1), run(2), "the seed plays no part");
    }

    /// The logged pmf is what the choice follows: from a fixed state and context, each route's
    /// share of choices matches its mean logged probability.
    #[test]
    fn choices_follow_the_pmf_logged() {
        for kind in [ContextualKind::SquareCb, ContextualKind::LinThompson] {
            let mut c = Contextual::new(ContextualParams::new(kind, 5), 3, 2);
            for (a, r) in [(0, 0.3), (1, 0.5), (2, 0.45), (0, 0.35), (1, 0.4)] {
                c.learn(a, &[0.5, 1.0], r).unwrap();
            }
            let n = 20_000;
            let (mut chosen, mut logged) = ([0.0; 3], [0.0; 3]);
            for _ in 0..n {
                let (a, pmf) = c.decide(&[0.5, 1.0]);
                chosen[a] += 1.0 / n as f64;
                for (l, p) in logged.iter_mut().zip(&pmf) {
                    *l += p / n as f64;
                }
            }
            for i in 0..3 {
                assert!(
                    (chosen[i] - logged[i]).abs() < 0.015,
                    "{kind:?} {chosen:?} {logged:?}"
                );
            }
        }
    }

    /// On the research note's linear world, SquareCB ends within a point of the ideal policy.
    #[test]
    fn squarecb_learns_a_linear_world() {
        const W: [[f64; 5]; 3] = [
            [0.20, 0.10, 0.00, -0.05, 0.05],
            [-0.15, 0.15, 0.05, 0.00, -0.05],
            [0.00, -0.20, 0.10, 0.10, 0.00],
        ];
        const B: [f64; 3] = [0.50, 0.50, 0.45];
        let p = |x: &[f64], a: usize| B[a] + (0..5).map(|j| W[a][j] * x[j]).sum::<f64>();
        let mut c = Contextual::new(ContextualParams::new(ContextualKind::SquareCb, 7), 3, 6);
        let mut rng = SmallRng::seed_from_u64(8);
        let (mut gap, mut n) = (0.0, 0);
        for t in 0..20_000 {
            let x = world_x(&mut rng, 6);
            let (a, _) = c.decide(&x);
            let r = if rng.random::<f64>() < p(&x, a) {
                1.0
            } else {
                0.0
            };
            c.learn(a, &x, r).unwrap();
            if t >= 15_000 {
                let best = (0..3).map(|b| p(&x, b)).fold(f64::MIN, f64::max);
                gap += best - p(&x, a);
                n += 1;
            }
        }
        let gap = 100.0 * gap / n as f64;
        assert!(gap < 1.0, "{gap}");
    }

    #[test]
    fn bad_input_is_refused() {
        let mut c = Contextual::new(ContextualParams::new(ContextualKind::SquareCb, 1), 2, 3);
        assert!(
            c.learn(2, &[0.0, 0.0, 1.0], 1.0)
                .unwrap_err()
                .contains("out of range")
        );
        assert!(
            c.learn(0, &[0.0, 1.0], 1.0)
                .unwrap_err()
                .contains("has 2 numbers")
        );
        assert!(c.learn(0, &[0.0, 0.0, 1.0], f64::NAN).is_err());
        assert!(c.learn(0, &[f64::INFINITY, 0.0, 1.0], 1.0).is_err());
        let s = c.state();
        let mut other = Contextual::new(ContextualParams::new(ContextualKind::SquareCb, 1), 2, 4);
        assert!(other.restore(0, s.routes[0].clone()).is_err());
    }

    #[test]
    fn a_restored_state_predicts_the_same() {
        let mut c = Contextual::new(ContextualParams::new(ContextualKind::LinUcb, 1), 2, 3);
        for i in 0..50 {
            let x = [i as f64 / 50.0, 1.0 - i as f64 / 50.0, 1.0];
            c.learn(i % 2, &x, x[0]).unwrap();
        }
        let mut d = Contextual::new(ContextualParams::new(ContextualKind::LinUcb, 1), 2, 3);
        for (i, m) in c.state().routes.into_iter().enumerate() {
            d.restore(i, m).unwrap();
        }
        assert_eq!(d.learnt(), 50);
        let x = [0.3, 0.2, 1.0];
        assert_eq!(c.scores(&x), d.scores(&x));
        assert_eq!(c.decide(&x), d.decide(&x));
    }
}
