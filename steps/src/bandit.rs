//! Multi-armed bandits for routers: each route is an arm; each request is a pull; feedback is a
//! reward. Free of I/O, driven by the router.
//!
//! - `epsilon_greedy`: the best mean so far, except a random arm with probability ε
//!   (`ε / (1 + decay · pulls)` with `decay`).
//! - `ucb1`: every arm once, then the highest `mean + sqrt(2 ln N / n)` (optimism under
//!   uncertainty; no parameter).
//! - `thompson`: sample each arm's posterior and take the best sample. `bernoulli` rewards
//!   (in [0, 1]) use Beta(1 + successes, 1 + failures); `gaussian` rewards use a normal
//!   posterior around the mean, narrowing as `1/sqrt(n)`.
//!
//! `discount` γ in (0, 1] multiplies every arm's counts and sums by γ at each reward, so old
//! rewards fade (an effective memory of about 1/(1-γ) rewards) and the policy follows arms
//! whose reward drifts.

use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use rand_distr::{Beta, Distribution, Normal};
use serde::Serialize;

/// How many posterior draws Thompson sampling makes per choice, for its probabilities.
pub const THOMPSON_DRAWS: usize = 32;

/// Which algorithm, with its parameters.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Algorithm {
    EpsilonGreedy { epsilon: f64, decay: f64 },
    Ucb1,
    Thompson { gaussian: bool },
}

/// One arm's learnt numbers, as snapshots store them.
#[derive(Clone, Debug, Default, Serialize, serde::Deserialize, PartialEq)]
pub struct Arm {
    /// Choices of this arm.
    pub pulls: u64,
    /// Rewards received, and their (undiscounted) sum.
    pub rewards: u64,
    pub reward_sum: f64,
    /// Discounted count and sums the algorithm uses.
    pub n: f64,
    pub sum: f64,
    pub sum_sq: f64,
}

impl Arm {
    fn mean(&self) -> f64 {
        if self.n > 0.0 { self.sum / self.n } else { 0.0 }
    }
}

pub struct Bandit {
    algorithm: Algorithm,
    discount: f64,
    arms: Vec<Arm>,
    pulls: u64,
    rng: SmallRng,
    /// Thompson's current draws (see [`Bandit::decide`]).
    draws: Option<Draws>,
}

/// A set of [`THOMPSON_DRAWS`] posterior draws: the arm each draw's samples put first, each
/// arm's share of them, and how many decisions have used them.
struct Draws {
    winners: [usize; THOMPSON_DRAWS],
    pmf: Vec<f64>,
    used: usize,
}

/// One arm's numbers, for `GET .../stats`.
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct ArmStats {
    pub pulls: u64,
    pub rewards: u64,
    pub reward_sum: f64,
    /// Mean reward received (undiscounted).
    pub mean: f64,
    /// What the policy currently believes the arm is worth (discounted mean; for UCB1 the
    /// upper bound it ranks arms by; for Thompson the posterior mean).
    pub estimate: f64,
}

impl Bandit {
    /// `seed` makes the choices reproducible.
    pub fn new(
        arms: usize,
        algorithm: Algorithm,
        discount: Option<f64>,
        seed: Option<u64>,
    ) -> Bandit {
        Bandit {
            algorithm,
            discount: discount.unwrap_or(1.0),
            arms: vec![Arm::default(); arms],
            pulls: 0,
            draws: None,
            rng: match seed {
                Some(s) => SmallRng::seed_from_u64(s),
                None => SmallRng::from_os_rng(),
            },
        }
    }

    /// Picks an arm for the next request.
    pub fn choose(&mut self) -> usize {
        self.decide().0
    }

    /// Picks an arm for the next request, with the probabilities it picked with (one per
    /// arm, summing to 1): what makes its logs usable for off-policy estimates. ε-greedy's
    /// are exact (ε/k each, 1 − ε more for the greedy arm); UCB1's put 1 on its choice (it
    /// never randomises); Thompson's are exact too: it draws [`THOMPSON_DRAWS`] posterior
    /// samples per arm, the share of draws each arm wins is its probability, and the choice
    /// is the winner of one draw taken at random, so an arm is chosen with exactly the
    /// probability logged (and, over the draws, as often as plain Thompson sampling picks it).
    /// One set of draws serves up to [`THOMPSON_DRAWS`] decisions and is drawn afresh at the
    /// next reward or restore (the posterior changed) or after them: 32 posterior samples per
    /// arm every 32 decisions cost what plain Thompson sampling's one per decision does
    /// (drawing them at every decision cost ~6.5 µs with two routes). Decisions between two
    /// reward arrivals pick independently among the same draws.
    pub fn decide(&mut self) -> (usize, Vec<f64>) {
        self.pulls += 1;
        let k = self.arms.len();
        let mut pmf = vec![0.0; k];
        let arm = match self.algorithm {
            Algorithm::EpsilonGreedy { epsilon, decay } => {
                let eps = epsilon / (1.0 + decay * self.pulls as f64);
                let greedy = self.best_by(|a| a.mean());
                pmf.iter_mut().for_each(|p| *p = eps / k as f64);
                pmf[greedy] += 1.0 - eps;
                if self.rng.random::<f64>() < eps {
                    self.rng.random_range(0..k)
                } else {
                    greedy
                }
            }
            Algorithm::Ucb1 => {
                let arm = match self.arms.iter().position(|a| a.n < 1e-9) {
                    Some(untried) => untried,
                    None => {
                        let total: f64 = self.arms.iter().map(|a| a.n).sum();
                        self.best_by(|a| a.mean() + (2.0 * total.ln() / a.n).sqrt())
                    }
                };
                pmf[arm] = 1.0;
                arm
            }
            Algorithm::Thompson { gaussian } => {
                if self.draws.as_ref().is_none_or(|d| d.used >= THOMPSON_DRAWS) {
                    self.draws = Some(self.draw(gaussian));
                }
                let draws = self.draws.as_mut().expect("drawn above");
                draws.used += 1;
                pmf.copy_from_slice(&draws.pmf);
                draws.winners[self.rng.random_range(0..THOMPSON_DRAWS)]
            }
        };
        self.arms[arm].pulls += 1;
        (arm, pmf)
    }

    /// [`THOMPSON_DRAWS`] draws from every arm's posterior.
    fn draw(&mut self, gaussian: bool) -> Draws {
        let k = self.arms.len();
        let mut winners = [0usize; THOMPSON_DRAWS];
        let mut pmf = vec![0.0; k];
        let mut samples = vec![0.0; k];
        for winner in &mut winners {
            for (i, s) in samples.iter_mut().enumerate() {
                *s = self.sample(i, gaussian);
            }
            *winner = argmax(&samples);
            pmf[*winner] += 1.0 / THOMPSON_DRAWS as f64;
        }
        Draws {
            winners,
            pmf,
            used: 0,
        }
    }

    fn sample(&mut self, i: usize, gaussian: bool) -> f64 {
        let a = &self.arms[i];
        if gaussian {
            let var = if a.n >= 2.0 {
                (a.sum_sq / a.n - a.mean().powi(2)).max(1e-6)
            } else {
                1.0
            };
            let sd = (var / (a.n + 1.0)).sqrt();
            Normal::new(a.mean(), sd)
                .map(|d| d.sample(&mut self.rng))
                .unwrap_or(a.mean())
        } else {
            let alpha = 1.0 + a.sum.max(0.0);
            let beta = 1.0 + (a.n - a.sum).max(0.0);
            Beta::new(alpha, beta)
                .map(|d| d.sample(&mut self.rng))
                .unwrap_or(0.5)
        }
    }

    fn best_by(&mut self, score: impl Fn(&Arm) -> f64) -> usize {
        let scores: Vec<f64> = self.arms.iter().map(score).collect();
        argmax(&scores)
    }

    /// Records a reward for `arm`. Bernoulli Thompson takes rewards in [0, 1] only.
    pub fn reward(&mut self, arm: usize, reward: f64) -> Result<(), String> {
        if !reward.is_finite() {
            return Err(format!("reward {reward} is not a number"));
        }
        if self.algorithm == (Algorithm::Thompson { gaussian: false })
            && !(0.0..=1.0).contains(&reward)
        {
            return Err(format!(
                "reward {reward} is outside [0, 1]: Bernoulli Thompson sampling takes rewards in [0, 1] (set `reward: gaussian` for real-valued rewards)"
            ));
        }
        if self.discount < 1.0 {
            for a in &mut self.arms {
                a.n *= self.discount;
                a.sum *= self.discount;
                a.sum_sq *= self.discount;
            }
        }
        self.draws = None;
        let a = &mut self.arms[arm];
        a.n += 1.0;
        a.sum += reward;
        a.sum_sq += reward * reward;
        a.rewards += 1;
        a.reward_sum += reward;
        Ok(())
    }

    /// The learnt numbers of each arm (for a snapshot).
    pub fn arms(&self) -> &[Arm] {
        &self.arms
    }

    /// Restores an arm's numbers from a snapshot.
    pub fn restore(&mut self, arm: usize, state: Arm) {
        self.pulls += state.pulls;
        self.arms[arm] = state;
        self.draws = None;
    }

    pub fn stats(&self) -> Vec<ArmStats> {
        let total: f64 = self.arms.iter().map(|a| a.n).sum();
        self.arms
            .iter()
            .map(|a| ArmStats {
                pulls: a.pulls,
                rewards: a.rewards,
                reward_sum: a.reward_sum,
                mean: if a.rewards > 0 {
                    a.reward_sum / a.rewards as f64
                } else {
                    0.0
                },
                estimate: match self.algorithm {
                    Algorithm::Ucb1 if a.n > 0.0 && total > 1.0 => {
                        a.mean() + (2.0 * total.ln() / a.n).sqrt()
                    }
                    Algorithm::Thompson { gaussian: false } => (1.0 + a.sum) / (2.0 + a.n),
                    _ => a.mean(),
                },
            })
            .collect()
    }
}

/// The index of the largest value; the first one on ties.
pub(crate) fn argmax(v: &[f64]) -> usize {
    let mut best = 0;
    for (i, x) in v.iter().enumerate() {
        if *x > v[best] {
            best = i;
        }
    }
    best
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Pulls `n` times with Bernoulli rewards of probability `p[arm]`; the share of the last
    /// `tail` pulls that went to the best arm (1).
    fn simulate(b: &mut Bandit, p: &[f64], n: usize, tail: usize, rng: &mut SmallRng) -> f64 {
        let mut best = 0;
        for i in 0..n {
            let arm = b.choose();
            if i >= n - tail && arm == 1 {
                best += 1;
            }
            let r = if rng.random::<f64>() < p[arm] {
                1.0
            } else {
                0.0
            };
            b.reward(arm, r).unwrap();
        }
        best as f64 / tail as f64
    }

    #[test]
    fn each_policy_finds_the_better_arm() {
        for (algo, want) in [
            (Algorithm::Thompson { gaussian: false }, 0.9),
            (Algorithm::Thompson { gaussian: true }, 0.9),
            (Algorithm::Ucb1, 0.9),
            (
                Algorithm::EpsilonGreedy {
                    epsilon: 0.1,
                    decay: 0.0,
                },
                0.85,
            ),
        ] {
            let mut b = Bandit::new(2, algo, None, Some(7));
            let mut rng = SmallRng::seed_from_u64(11);
            let share = simulate(&mut b, &[0.3, 0.7], 2000, 1000, &mut rng);
            assert!(share >= want, "{algo:?}: {share}");
        }
    }

    #[test]
    fn discounting_follows_a_swap() {
        let mut b = Bandit::new(
            2,
            Algorithm::Thompson { gaussian: false },
            Some(0.98),
            Some(3),
        );
        let mut rng = SmallRng::seed_from_u64(5);
        simulate(&mut b, &[0.3, 0.7], 2000, 1000, &mut rng);
        // The arms swap: arm 0 is now the better one.
        let mut zero = 0;
        for i in 0..1000 {
            let arm = b.choose();
            if i >= 500 && arm == 0 {
                zero += 1;
            }
            let r = if rng.random::<f64>() < [0.7, 0.3][arm] {
                1.0
            } else {
                0.0
            };
            b.reward(arm, r).unwrap();
        }
        assert!(zero as f64 / 500.0 >= 0.8, "{zero} of 500");
    }

    #[test]
    fn same_seed_same_choices_and_stats() {
        let run = || {
            let mut b = Bandit::new(
                3,
                Algorithm::EpsilonGreedy {
                    epsilon: 0.3,
                    decay: 0.01,
                },
                None,
                Some(42),
            );
            let picks: Vec<usize> = (0..50)
                .map(|i| {
                    let a = b.choose();
                    b.reward(a, (i % 3) as f64 / 2.0).unwrap();
                    a
                })
                .collect();
            (picks, b.stats())
        };
        assert_eq!(run(), run());
    }

    /// The logged probabilities are those the choices follow: over many choices from a fixed
    /// state, each arm's share matches the mean probability logged for it.
    #[test]
    fn choices_follow_the_probabilities_logged() {
        for algo in [
            Algorithm::Thompson { gaussian: false },
            Algorithm::EpsilonGreedy {
                epsilon: 0.3,
                decay: 0.0,
            },
            Algorithm::Ucb1,
        ] {
            let mut b = Bandit::new(3, algo, None, Some(9));
            for (arm, rewards) in [
                (0, [1.0, 0.0, 0.0]),
                (1, [1.0, 1.0, 0.0]),
                (2, [0.0, 1.0, 1.0]),
            ] {
                for r in rewards {
                    b.reward(arm, r).unwrap();
                }
            }
            let n = 20_000;
            let (mut chosen, mut logged) = ([0.0; 3], [0.0; 3]);
            for _ in 0..n {
                let (arm, pmf) = b.decide();
                assert!((pmf.iter().sum::<f64>() - 1.0).abs() < 1e-9, "{pmf:?}");
                assert!(pmf[arm] > 0.0, "{algo:?}: chose an arm of probability 0");
                chosen[arm] += 1.0 / n as f64;
                for (l, p) in logged.iter_mut().zip(&pmf) {
                    *l += p / n as f64;
                }
            }
            for i in 0..3 {
                assert!(
                    (chosen[i] - logged[i]).abs() < 0.015,
                    "{algo:?}: {chosen:?} {logged:?}"
                );
            }
        }
    }

    #[test]
    fn thompson_draws_serve_thirty_two_decisions_or_until_a_reward() {
        let mut b = Bandit::new(2, Algorithm::Thompson { gaussian: false }, None, Some(3));
        let (_, first) = b.decide();
        for used in 2..=THOMPSON_DRAWS {
            let (_, pmf) = b.decide();
            assert_eq!(pmf, first, "the same draws until they are used up");
            assert_eq!(b.draws.as_ref().unwrap().used, used);
        }
        b.decide();
        assert_eq!(b.draws.as_ref().unwrap().used, 1, "drawn afresh after 32");
        b.reward(0, 1.0).unwrap();
        assert!(b.draws.is_none(), "a reward changes the posterior");
        b.decide();
        assert_eq!(b.draws.as_ref().unwrap().used, 1);
        b.restore(1, Arm::default());
        assert!(b.draws.is_none(), "so does a restore");
    }

    #[test]
    fn bernoulli_rewards_must_be_in_range() {
        let mut b = Bandit::new(2, Algorithm::Thompson { gaussian: false }, None, Some(1));
        assert!(b.reward(0, 1.5).unwrap_err().contains("outside [0, 1]"));
        assert!(b.reward(0, f64::NAN).is_err());
        assert!(b.reward(0, 1.0).is_ok());
    }
}
