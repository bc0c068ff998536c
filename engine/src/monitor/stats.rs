//! The drift statistics, each a small pure function written as its anchor defines it
//! (docs/monitoring.md cites each formula and default).

/// What an empty bin counts as in PSI (Evidently's `np.place(p, p == 0, 0.0001)`).
pub const EMPTY_BIN: f64 = 1e-4;

/// Counts as fractions of their sum (all zeros when the sum is zero).
pub fn fractions(counts: &[u64]) -> Vec<f64> {
    let total: u64 = counts.iter().sum();
    counts
        .iter()
        .map(|&c| {
            if total == 0 {
                0.0
            } else {
                c as f64 / total as f64
            }
        })
        .collect()
}

/// Population Stability Index, Evidently's `psi`: Σ (r − c)·ln(r / c) over the bins, with
/// empty bins (either side) taken as 1e-4.
pub fn psi(reference: &[f64], current: &[f64]) -> f64 {
    reference
        .iter()
        .zip(current)
        .map(|(&r, &c)| {
            let r = if r == 0.0 { EMPTY_BIN } else { r };
            let c = if c == 0.0 { EMPTY_BIN } else { c };
            (r - c) * (r / c).ln()
        })
        .sum()
}

/// Total variation distance, MLRun's `TotalVarianceDistance`: ½ Σ |p − q|.
pub fn tvd(p: &[f64], q: &[f64]) -> f64 {
    0.5 * p.iter().zip(q).map(|(a, b)| (a - b).abs()).sum::<f64>()
}

/// Hellinger distance, MLRun's `HellingerDistance`: sqrt(max(1 − Σ sqrt(p·q), 0)).
pub fn hellinger(p: &[f64], q: &[f64]) -> f64 {
    let bc: f64 = p.iter().zip(q).map(|(a, b)| (a * b).sqrt()).sum();
    (1.0 - bc).max(0.0).sqrt()
}

/// MLRun's general drift: the mean of Hellinger and TVD.
pub fn general_drift(p: &[f64], q: &[f64]) -> f64 {
    (hellinger(p, q) + tvd(p, q)) / 2.0
}

/// Jensen–Shannon distance in base 2 (scipy's `jensenshannon(p, q, base=2)`, NannyML's):
/// sqrt of ½ KL(p‖m) + ½ KL(q‖m), m = (p + q)/2, p and q normalised to sum 1.
pub fn jensen_shannon(p: &[f64], q: &[f64]) -> f64 {
    let (sp, sq): (f64, f64) = (p.iter().sum(), q.iter().sum());
    if sp <= 0.0 || sq <= 0.0 {
        return f64::NAN;
    }
    let mut d = 0.0;
    for (&a, &b) in p.iter().zip(q) {
        let (a, b) = (a / sp, b / sq);
        let m = (a + b) / 2.0;
        if a > 0.0 {
            d += 0.5 * a * (a / m).log2();
        }
        if b > 0.0 {
            d += 0.5 * b * (b / m).log2();
        }
    }
    d.max(0.0).sqrt()
}

/// The two-sample Kolmogorov–Smirnov statistic D = sup |F_a − F_b| of two sorted samples
/// (scipy's `ks_2samp(...).statistic`).
pub fn ks(a: &[f64], b: &[f64]) -> f64 {
    ks_wasserstein(a, b).0
}

/// The asymptotic p-value of a two-sample K-S statistic: Kolmogorov's limiting distribution
/// at sqrt(n·m/(n+m))·D (scipy's `kstwobign.sf`).
pub fn ks_p(d: f64, n: usize, m: usize) -> f64 {
    if n == 0 || m == 0 || d.is_nan() {
        return f64::NAN;
    }
    let en = (n as f64 * m as f64) / (n + m) as f64;
    kolmogorov_sf(en.sqrt() * d)
}

/// P(K > x) for Kolmogorov's distribution.
pub fn kolmogorov_sf(x: f64) -> f64 {
    if x <= 0.0 {
        return 1.0;
    }
    if x < 1.0 {
        // P(K ≤ x) = sqrt(2π)/x Σ_k exp(−(2k−1)²π²/(8x²)), fast for small x.
        let c = -std::f64::consts::PI.powi(2) / (8.0 * x * x);
        let cdf: f64 = (1..=20)
            .map(|k| (c * ((2 * k - 1) as f64).powi(2)).exp())
            .sum::<f64>()
            * (2.0 * std::f64::consts::PI).sqrt()
            / x;
        return (1.0 - cdf).clamp(0.0, 1.0);
    }
    // P(K > x) = 2 Σ_k (−1)^(k−1) exp(−2k²x²).
    let s: f64 = (1..=100)
        .map(|k| {
            let sign = if k % 2 == 1 { 1.0 } else { -1.0 };
            sign * (-2.0 * (k * k) as f64 * x * x).exp()
        })
        .sum();
    (2.0 * s).clamp(0.0, 1.0)
}

/// The first Wasserstein distance between two sorted samples' empirical distributions
/// (scipy's `wasserstein_distance`): ∫ |F_a − F_b| dx.
pub fn wasserstein(a: &[f64], b: &[f64]) -> f64 {
    ks_wasserstein(a, b).1
}

/// The two-sample K-S statistic and the first Wasserstein distance of two sorted samples, in
/// one merge of the two: both read the two empirical CDFs at every value of either sample.
/// (Once one sample is used up, |F_a − F_b| only falls, so K-S's maximum is the same as over
/// the values both still have.)
pub fn ks_wasserstein(a: &[f64], b: &[f64]) -> (f64, f64) {
    if a.is_empty() || b.is_empty() {
        return (f64::NAN, f64::NAN);
    }
    let (inv_n, inv_m) = (1.0 / a.len() as f64, 1.0 / b.len() as f64);
    let (mut i, mut j) = (0, 0);
    let mut x = a[0].min(b[0]);
    let (mut d, mut w) = (0.0f64, 0.0);
    loop {
        // Step past every value equal to x, then integrate to the next value.
        while i < a.len() && a[i] <= x {
            i += 1;
        }
        while j < b.len() && b[j] <= x {
            j += 1;
        }
        let gap = (i as f64 * inv_n - j as f64 * inv_m).abs();
        d = d.max(gap);
        let next = match (a.get(i), b.get(j)) {
            (Some(&p), Some(&q)) => p.min(q),
            (Some(&p), None) => p,
            (None, Some(&q)) => q,
            (None, None) => break,
        };
        w += gap * (next - x);
        x = next;
    }
    (d, w)
}

/// Evidently's normed Wasserstein distance: W1 / max(std_ref, 0.001) (population std).
pub fn normed_wasserstein(w1: f64, reference_std: f64) -> f64 {
    w1 / reference_std.max(0.001)
}

/// Mean and population standard deviation.
pub fn mean_std(values: &[f64]) -> (f64, f64) {
    if values.is_empty() {
        return (f64::NAN, f64::NAN);
    }
    let n = values.len() as f64;
    let mean = values.iter().sum::<f64>() / n;
    let var = values.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / n;
    (mean, var.sqrt())
}

/// Pearson's χ² test of homogeneity on a 2×k table of counts (scipy's
/// `chi2_contingency(..., correction=False)`): categories empty on both sides are left out.
/// Returns (statistic, degrees of freedom, p-value); NaN when fewer than two categories or
/// an empty side remain.
pub fn chi2_homogeneity(reference: &[u64], current: &[u64]) -> (f64, usize, f64) {
    let cols: Vec<(f64, f64)> = reference
        .iter()
        .zip(current)
        .filter(|(r, c)| **r + **c > 0)
        .map(|(&r, &c)| (r as f64, c as f64))
        .collect();
    let (rn, cn): (f64, f64) = (
        cols.iter().map(|c| c.0).sum(),
        cols.iter().map(|c| c.1).sum(),
    );
    if cols.len() < 2 || rn == 0.0 || cn == 0.0 {
        return (f64::NAN, 0, f64::NAN);
    }
    let total = rn + cn;
    let stat: f64 = cols
        .iter()
        .map(|&(r, c)| {
            let col = r + c;
            let (er, ec) = (rn * col / total, cn * col / total);
            (r - er).powi(2) / er + (c - ec).powi(2) / ec
        })
        .sum();
    let dof = cols.len() - 1;
    (stat, dof, chi2_sf(stat, dof as f64))
}

/// P(X > x) for χ² with `k` degrees of freedom: Q(k/2, x/2).
pub fn chi2_sf(x: f64, k: f64) -> f64 {
    if x <= 0.0 {
        return 1.0;
    }
    gamma_q(k / 2.0, x / 2.0)
}

/// The regularised upper incomplete gamma function Q(a, x) (series below a + 1, Lentz's
/// continued fraction above).
fn gamma_q(a: f64, x: f64) -> f64 {
    let ln_front = a * x.ln() - x - ln_gamma(a);
    if x < a + 1.0 {
        let (mut sum, mut term, mut ap) = (1.0 / a, 1.0 / a, a);
        for _ in 0..1000 {
            ap += 1.0;
            term *= x / ap;
            sum += term;
            if term.abs() < sum.abs() * 1e-15 {
                break;
            }
        }
        (1.0 - sum * ln_front.exp()).clamp(0.0, 1.0)
    } else {
        let tiny = 1e-300;
        let mut b = x + 1.0 - a;
        let mut c = 1.0 / tiny;
        let mut d = 1.0 / b;
        let mut h = d;
        for i in 1..1000 {
            let an = -(i as f64) * (i as f64 - a);
            b += 2.0;
            d = an * d + b;
            if d.abs() < tiny {
                d = tiny;
            }
            c = b + an / c;
            if c.abs() < tiny {
                c = tiny;
            }
            d = 1.0 / d;
            let delta = d * c;
            h *= delta;
            if (delta - 1.0).abs() < 1e-15 {
                break;
            }
        }
        (ln_front.exp() * h).clamp(0.0, 1.0)
    }
}

/// ln Γ(x), Lanczos (g = 7, 9 terms).
fn ln_gamma(x: f64) -> f64 {
    const G: [f64; 9] = [
        0.999_999_999_999_809_9,
        676.520_368_121_885_1,
        -1_259.139_216_722_402_8,
        771.323_428_777_653_1,
        -176.615_029_162_140_6,
        12.507_343_278_686_905,
        -0.138_571_095_265_720_12,
        9.984_369_578_019_572e-6,
        1.505_632_735_149_311_6e-7,
    ];
    if x < 0.5 {
        let pi = std::f64::consts::PI;
        return (pi / (pi * x).sin()).ln() - ln_gamma(1.0 - x);
    }
    let x = x - 1.0;
    let t = x + 7.5;
    let s = G[0] + (1..9).map(|i| G[i] / (x + i as f64)).sum::<f64>();
    0.5 * (2.0 * std::f64::consts::PI).ln() + (x + 0.5) * t.ln() - t + s.ln()
}

/// The `q`-quantile of sorted values (linear interpolation, numpy's default).
pub fn quantile(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let at = q * (sorted.len() - 1) as f64;
    let (lo, hi) = (at.floor() as usize, at.ceil() as usize);
    sorted[lo] + (sorted[hi] - sorted[lo]) * (at - lo as f64)
}

/// The bin of `x` on inner edges e₀ < … < eₙ with MLRun's two padding bins: 0 for x < e₀,
/// i for e_{i−1} ≤ x < e_i, n for the last inner bin (which holds eₙ), n + 1 for x > eₙ.
pub fn bin_of(edges: &[f64], x: f64) -> usize {
    let n = edges.len();
    if n == 0 {
        return 0;
    }
    if x < edges[0] {
        return 0;
    }
    if x > edges[n - 1] {
        return n;
    }
    if n == 1 {
        return 1;
    }
    // Number of edges ≤ x, capped so that eₙ falls in the last inner bin.
    edges.partition_point(|&e| e <= x).min(n - 1)
}

/// Isotonic regression (pool-adjacent-violators) of `y` on sorted `x`: the calibration map
/// NannyML's CBPE fits on the reference, as (x knots, fitted y).
pub fn isotonic(points: &mut [(f64, f64)]) -> (Vec<f64>, Vec<f64>) {
    points.sort_by(|a, b| a.0.total_cmp(&b.0));
    // Blocks of (sum y, weight, last x).
    let mut blocks: Vec<(f64, f64, f64, f64)> = Vec::new(); // (sum, weight, first x, last x)
    for &(x, y) in points.iter() {
        blocks.push((y, 1.0, x, x));
        while blocks.len() > 1 {
            let l = blocks.len();
            let (a, b) = (blocks[l - 2], blocks[l - 1]);
            if a.0 / a.1 > b.0 / b.1 {
                blocks[l - 2] = (a.0 + b.0, a.1 + b.1, a.2, b.3);
                blocks.pop();
            } else {
                break;
            }
        }
    }
    let mut xs = Vec::new();
    let mut ys = Vec::new();
    for (sum, w, first, last) in blocks {
        xs.push(first);
        ys.push(sum / w);
        if last > first {
            xs.push(last);
            ys.push(sum / w);
        }
    }
    (xs, ys)
}

/// The calibration map at `x`: linear between knots, flat beyond them.
pub fn interpolate(xs: &[f64], ys: &[f64], x: f64) -> f64 {
    if xs.is_empty() {
        return x;
    }
    let i = xs.partition_point(|&k| k <= x);
    if i == 0 {
        return ys[0];
    }
    if i == xs.len() {
        return ys[xs.len() - 1];
    }
    let (x0, x1, y0, y1) = (xs[i - 1], xs[i], ys[i - 1], ys[i]);
    if x1 == x0 {
        y1
    } else {
        y0 + (y1 - y0) * (x - x0) / (x1 - x0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(a: f64, b: f64, tol: f64) {
        assert!((a - b).abs() <= tol, "{a} vs {b}");
    }

    #[test]
    fn distances_on_known_histograms() {
        let p = [0.5, 0.5, 0.0];
        let q = [0.25, 0.25, 0.5];
        close(tvd(&p, &q), 0.5, 1e-12);
        // 1 − (sqrt(.125)·2) = 0.29289..., sqrt → 0.5412
        close(
            hellinger(&p, &q),
            (1.0 - 2.0 * 0.125f64.sqrt()).sqrt(),
            1e-12,
        );
        close(
            general_drift(&p, &q),
            (tvd(&p, &q) + hellinger(&p, &q)) / 2.0,
            1e-12,
        );
        assert_eq!(tvd(&p, &p), 0.0);
        assert_eq!(hellinger(&p, &p), 0.0);
        // PSI with the empty bin as 1e-4.
        let expected = 2.0 * (0.25 * 2f64.ln()) + (1e-4 - 0.5) * (1e-4f64 / 0.5).ln();
        close(psi(&p, &q), expected, 1e-12);
        // JS of disjoint distributions is 1 in base 2.
        close(jensen_shannon(&[1.0, 0.0], &[0.0, 1.0]), 1.0, 1e-12);
        assert_eq!(jensen_shannon(&p, &p), 0.0);
    }

    #[test]
    fn ks_and_wasserstein_on_small_samples() {
        let a = [1.0, 2.0, 3.0];
        let b = [2.0, 3.0, 4.0, 5.0];
        // F_a(1)=1/3 vs 0; at 2: 2/3 vs 1/4; at 3: 1 vs 1/2.
        close(ks(&a, &b), 0.5, 1e-12);
        // scipy.stats.wasserstein_distance([1,2,3],[2,3,4,5]) = 1.5
        close(wasserstein(&a, &b), 1.5, 1e-12);
        close(wasserstein(&a, &a), 0.0, 1e-12);
        // kstwobign.sf(1.0) = 0.26999967
        close(kolmogorov_sf(1.0), 0.269_999_67, 1e-7);
        close(kolmogorov_sf(0.5), 0.963_945_2, 1e-6);
    }

    #[test]
    fn chi2_against_known_values() {
        // scipy: chi2.sf(3.84145882, 1) = 0.05; chi2.sf(10, 4) = 0.04042768; chi2.sf(50, 3).
        close(chi2_sf(3.841_458_820_694_124, 1.0), 0.05, 1e-9);
        close(chi2_sf(10.0, 4.0), 0.040_427_681_994_512_8, 1e-9);
        close(chi2_sf(50.0, 3.0), 7.989_179_244_951_495e-11, 1e-20);
        let (stat, dof, _) = chi2_homogeneity(&[10, 20, 30], &[10, 20, 30]);
        assert_eq!((stat, dof), (0.0, 2));
    }

    #[test]
    fn bins_with_padding() {
        let edges = [0.0, 1.0, 2.0];
        assert_eq!(bin_of(&edges, -0.5), 0);
        assert_eq!(bin_of(&edges, 0.0), 1);
        assert_eq!(bin_of(&edges, 0.5), 1);
        assert_eq!(bin_of(&edges, 1.0), 2);
        assert_eq!(bin_of(&edges, 2.0), 2);
        assert_eq!(bin_of(&edges, 2.5), 3);
    }

    #[test]
    fn isotonic_pools_violators() {
        let mut pts = vec![(0.1, 0.0), (0.2, 1.0), (0.3, 0.0), (0.4, 1.0)];
        let (xs, ys) = isotonic(&mut pts);
        assert_eq!(xs, [0.1, 0.2, 0.3, 0.4]);
        assert_eq!(ys, [0.0, 0.5, 0.5, 1.0]);
        close(interpolate(&xs, &ys, 0.35), 0.75, 1e-12);
        assert_eq!(interpolate(&xs, &ys, 0.9), 1.0);
    }
}
