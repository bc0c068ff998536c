"""The monitor's statistics against scipy and numpy (tests/monitor.rs).

`stats DIR`: DIR holds r.txt, c.txt (numbers), rc.txt, cc.txt (categories) and the Rust
values in num.json and cat.json (`servegraph monitor stats`)."""

import json
import sys
from pathlib import Path

import numpy as np
from scipy import stats
from scipy.spatial.distance import jensenshannon


def close(name, got, want, tol):
    assert abs(got - want) <= tol, f"{name}: servegraph {got} vs oracle {want}"


def main():
    case, d = sys.argv[1], Path(sys.argv[2])
    ref = np.loadtxt(d / "r.txt")
    cur = np.loadtxt(d / "c.txt")
    got = json.loads((d / "num.json").read_text())
    # K-S: the statistic exactly, the p-value as Kolmogorov's limit (scipy's kstwobign), and
    # near scipy's own asymptotic method.
    ks = stats.ks_2samp(ref, cur)
    close("ks", got["ks"], ks.statistic, 1e-12)
    en = len(ref) * len(cur) / (len(ref) + len(cur))
    close("ks_p", got["ks_p"], stats.kstwobign.sf(np.sqrt(en) * ks.statistic), 1e-9)
    close("ks_p~asymp", got["ks_p"], stats.ks_2samp(ref, cur, method="asymp").pvalue, 0.02)
    # Wasserstein, and Evidently's norming by max(std, 0.001) (population std).
    w = stats.wasserstein_distance(ref, cur)
    close("wasserstein_raw", got["wasserstein_raw"], w, 1e-9)
    close("wasserstein", got["wasserstein"], w / max(np.std(ref), 0.001), 1e-9)
    # The bins: 20 reference quantiles (numpy's linear), MLRun's two padding bins.
    edges = np.unique(np.quantile(ref, np.linspace(0, 1, 21)))
    assert np.allclose(got["edges"], edges, atol=1e-12)
    def binned(x):
        inner, _ = np.histogram(x, bins=edges)
        counts = np.concatenate([[np.sum(x < edges[0])], inner, [np.sum(x > edges[-1])]])
        return counts / counts.sum()
    p, q = binned(ref), binned(cur)
    assert np.allclose(got["reference_fractions"], p, atol=1e-12)
    assert np.allclose(got["current_fractions"], q, atol=1e-12)
    # Evidently's PSI (empty bins as 1e-4), MLRun's TVD and Hellinger and general drift.
    pe, qe = np.where(p == 0, 1e-4, p), np.where(q == 0, 1e-4, q)
    close("psi", got["psi"], np.sum((pe - qe) * np.log(pe / qe)), 1e-9)
    tvd = 0.5 * np.sum(np.abs(p - q))
    hel = np.sqrt(max(1 - np.sum(np.sqrt(p * q)), 0))
    close("tvd", got["tvd"], tvd, 1e-12)
    close("hellinger", got["hellinger"], hel, 1e-12)
    close("general_drift", got["general_drift"], (tvd + hel) / 2, 1e-12)

    rc = (d / "rc.txt").read_text().split()
    cc = (d / "cc.txt").read_text().split()
    got = json.loads((d / "cat.json").read_text())
    cats = got_cats = sorted(set(rc), key=lambda c: (-rc.count(c), c))
    table = np.array([[rc.count(c) for c in cats], [cc.count(c) for c in cats]])
    chi2 = stats.chi2_contingency(table, correction=False)
    close("chi2_p", got["chi2_p"], chi2.pvalue, 1e-9)
    p = table[0] / table[0].sum()
    q = table[1] / table[1].sum()
    # The "other" bucket is empty on both sides here.
    close("js", got["js"], jensenshannon(p, q, base=2), 1e-12)
    close("tvd_cat", got["tvd"], 0.5 * np.sum(np.abs(p - q)), 1e-12)
    assert got_cats
    print(f"ok {case}")


main()
