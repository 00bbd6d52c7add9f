"""Statistics for the ablation report: intervals over seeds, two-arm tests, Holm correction.

Everything takes plain sequences of per-seed values; non-finite values are dropped first.
Each function returns NaN where its inputs are too few to say anything.
"""
import math

import numpy as np
from scipy import stats as sps

# Below this many seeds in either arm the t-test's normal approximation is not trusted and the
# exact permutation test decides (which, with so few seeds, cannot reach very small p-values).
MIN_SEEDS_FOR_WELCH = 5


def finite(values):
    a = np.asarray([v for v in values if v is not None], dtype=np.float64)
    return a[np.isfinite(a)]


def mean_interval(values, confidence=0.95):
    """(mean, low, high): the t-interval of the mean; low/high are NaN with fewer than 2 values."""
    a = finite(values)
    if len(a) == 0:
        return math.nan, math.nan, math.nan
    m = float(a.mean())
    if len(a) < 2:
        return m, math.nan, math.nan
    half = sps.t.ppf(0.5 + confidence / 2, len(a) - 1) * a.std(ddof=1) / math.sqrt(len(a))
    return m, float(m - half), float(m + half)


def welch(reference, alternative, confidence=0.95):
    """Difference of means (alternative - reference), its Welch 95% interval and p-value."""
    x, y = finite(reference), finite(alternative)
    if len(x) < 2 or len(y) < 2:
        return dict(effect=_mean_diff(x, y), low=math.nan, high=math.nan, p=math.nan)
    vx, vy = x.var(ddof=1) / len(x), y.var(ddof=1) / len(y)
    diff = float(y.mean() - x.mean())
    se = math.sqrt(vx + vy)
    if se == 0:  # identical constants: no spread to test against
        return dict(effect=diff, low=diff, high=diff, p=1.0 if diff == 0 else 0.0)
    df = (vx + vy) ** 2 / (vx ** 2 / (len(x) - 1) + vy ** 2 / (len(y) - 1))
    half = sps.t.ppf(0.5 + confidence / 2, df) * se
    p = 2 * sps.t.sf(abs(diff) / se, df)
    return dict(effect=diff, low=float(diff - half), high=float(diff + half), p=float(p))


def _mean_diff(x, y):
    return float(y.mean() - x.mean()) if len(x) and len(y) else math.nan


def permutation_p(reference, alternative, max_exact=20000, seed=0):
    """Two-sided p of the difference of means under relabelling (exact when affordable)."""
    x, y = finite(reference), finite(alternative)
    if len(x) < 1 or len(y) < 1 or len(x) + len(y) < 3:
        return math.nan
    exact = math.comb(len(x) + len(y), len(x)) <= max_exact
    result = sps.permutation_test(
        (x, y), lambda a, b, axis: np.mean(b, axis=axis) - np.mean(a, axis=axis),
        permutation_type="independent", alternative="two-sided", vectorized=True,
        n_resamples=math.inf if exact else 9999, rng=np.random.default_rng(seed))
    return float(result.pvalue)


def compare_means(reference, alternative):
    """Welch effect and interval; the p-value from Welch, or the permutation test for few seeds."""
    result = welch(reference, alternative)
    n = min(len(finite(reference)), len(finite(alternative)))
    if n >= MIN_SEEDS_FOR_WELCH:
        result["test"] = "Welch t"
    else:
        result["test"] = "permutation"
        result["p"] = permutation_p(reference, alternative)
    return result


def compare_spread(reference, alternative, confidence=0.95):
    """Ratio of standard deviations (alternative / reference), its F-based interval, and the
    Brown-Forsythe test (Levene's test about the median) of equal spread."""
    x, y = finite(reference), finite(alternative)
    nan = dict(effect=math.nan, low=math.nan, high=math.nan, p=math.nan, test="Brown-Forsythe")
    if len(x) < 2 or len(y) < 2:
        return nan
    sx, sy = x.std(ddof=1), y.std(ddof=1)
    if sx == 0 or sy == 0:
        return dict(nan, effect=math.inf if sx == 0 < sy else (0.0 if sy == 0 < sx else math.nan))
    f = (sy / sx) ** 2
    alpha = 1 - confidence
    low = f / sps.f.ppf(1 - alpha / 2, len(y) - 1, len(x) - 1)
    high = f / sps.f.ppf(alpha / 2, len(y) - 1, len(x) - 1)
    p = sps.levene(x, y, center="median").pvalue
    return dict(effect=float(sy / sx), low=math.sqrt(low), high=math.sqrt(high), p=float(p),
                test="Brown-Forsythe")


def _wilson(k, n, z):
    if n == 0:
        return math.nan, math.nan
    p = k / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return centre - half, centre + half


def compare_rates(ref_events, ref_n, alt_events, alt_n, confidence=0.95):
    """Difference of proportions (alternative - reference) with Newcombe's hybrid score
    interval, and Fisher's exact test."""
    if ref_n == 0 or alt_n == 0:
        return dict(effect=math.nan, low=math.nan, high=math.nan, p=math.nan, test="Fisher exact")
    z = sps.norm.ppf(0.5 + confidence / 2)
    p1, p2 = alt_events / alt_n, ref_events / ref_n
    l1, u1 = _wilson(alt_events, alt_n, z)
    l2, u2 = _wilson(ref_events, ref_n, z)
    d = p1 - p2
    low = d - math.sqrt((p1 - l1) ** 2 + (u2 - p2) ** 2)
    high = d + math.sqrt((u1 - p1) ** 2 + (p2 - l2) ** 2)
    p = sps.fisher_exact([[alt_events, alt_n - alt_events], [ref_events, ref_n - ref_events]]).pvalue
    return dict(effect=d, low=low, high=high, p=float(p), test="Fisher exact")


def holm(pvalues):
    """Holm-Bonferroni adjusted p-values, in the input order; NaN entries stay NaN and do not
    count as comparisons."""
    p = np.asarray(pvalues, dtype=np.float64)
    adjusted = np.full(p.shape, math.nan)
    valid = np.flatnonzero(np.isfinite(p))
    m = len(valid)
    running = 0.0
    for rank, i in enumerate(valid[np.argsort(p[valid], kind="stable")]):
        running = max(running, min(1.0, (m - rank) * p[i]))
        adjusted[i] = running
    return adjusted
