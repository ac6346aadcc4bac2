"""Drift statistics from binned counts. Pure, and light: no scipy (two p-value functions are not
worth tens of megabytes of operator memory), validated against scipy in the tests.

* PSI: sum over bins of (q - p) * ln(q / p), p the reference share, q the live share; an empty
  bin's share is taken as EPSILON (1e-4) so the logarithm stays finite (the usual convention).
* chi²: the test of homogeneity of the 2 x k table (reference counts, live counts); bins empty
  on both sides are left out; the p-value is the chi² distribution's survival function with
  k - 1 degrees of freedom.
* KS: the largest distance between the two binned CDFs (evaluated at the bin edges); the p-value
  is the asymptotic Kolmogorov distribution with the effective sample size n·m/(n+m). Binning
  can only hide differences inside a bin, so the statistic is at most the raw-sample one.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

EPSILON = 1e-4


def _shares(counts: Sequence[float]) -> list[float]:
    total = float(sum(counts))
    if total <= 0:
        return [0.0] * len(counts)
    return [c / total for c in counts]


def psi(reference: Sequence[float], live: Sequence[float], epsilon: float = EPSILON) -> float:
    if len(reference) != len(live):
        raise ValueError("psi: the two distributions must have the same bins")
    total = 0.0
    for p, q in zip(_shares(reference), _shares(live), strict=True):
        p, q = max(p, epsilon), max(q, epsilon)
        total += (q - p) * math.log(q / p)
    return total


def _gammaincc(a: float, x: float) -> float:
    """The regularized upper incomplete gamma function Q(a, x)."""
    if x <= 0:
        return 1.0
    if x < a + 1:  # series for P(a, x), then Q = 1 - P
        term = total = 1.0 / a
        n = a
        for _ in range(10_000):
            n += 1
            term *= x / n
            total += term
            if abs(term) < abs(total) * 1e-15:
                break
        return max(0.0, 1.0 - total * math.exp(-x + a * math.log(x) - math.lgamma(a)))
    # continued fraction for Q(a, x) (modified Lentz)
    tiny = 1e-300
    b = x + 1 - a
    c = 1 / tiny
    d = 1 / b
    h = d
    for i in range(1, 10_000):
        an = -i * (i - a)
        b += 2
        d = an * d + b
        d = tiny if abs(d) < tiny else d
        c = b + an / c
        c = tiny if abs(c) < tiny else c
        d = 1 / d
        delta = d * c
        h *= delta
        if abs(delta - 1) < 1e-15:
            break
    return min(1.0, math.exp(-x + a * math.log(x) - math.lgamma(a)) * h)


def chi2_sf(statistic: float, dof: int) -> float:
    if dof <= 0:
        return 1.0
    return _gammaincc(dof / 2.0, statistic / 2.0)


def chi2(reference: Sequence[float], live: Sequence[float]) -> tuple[float, float]:
    """(statistic, p-value) of the test that both counts come from one distribution."""
    if len(reference) != len(live):
        raise ValueError("chi2: the two distributions must have the same bins")
    pairs = [(r, v) for r, v in zip(reference, live, strict=True) if r + v > 0]
    n_ref, n_live = sum(r for r, _ in pairs), sum(v for _, v in pairs)
    total = n_ref + n_live
    if n_ref == 0 or n_live == 0 or len(pairs) < 2:
        return 0.0, 1.0
    statistic = 0.0
    for r, v in pairs:
        column = r + v
        for observed, row in ((r, n_ref), (v, n_live)):
            expected = row * column / total
            statistic += (observed - expected) ** 2 / expected
    return statistic, chi2_sf(statistic, len(pairs) - 1)


def kolmogorov_sf(x: float) -> float:
    """P(K > x) for the Kolmogorov distribution."""
    if x <= 0:
        return 1.0
    if x < 0.2:
        return 1.0
    total = 0.0
    for j in range(1, 101):
        term = 2 * (-1) ** (j - 1) * math.exp(-2 * j * j * x * x)
        total += term
        if abs(term) < 1e-16:
            break
    return min(1.0, max(0.0, total))


def ks(reference: Sequence[float], live: Sequence[float]) -> tuple[float, float]:
    """(D, p-value) from the two binned CDFs."""
    if len(reference) != len(live):
        raise ValueError("ks: the two distributions must have the same bins")
    n, m = float(sum(reference)), float(sum(live))
    if n == 0 or m == 0:
        return 0.0, 1.0
    d = cum_r = cum_l = 0.0
    for r, v in zip(reference, live, strict=True):
        cum_r += r / n
        cum_l += v / m
        d = max(d, abs(cum_r - cum_l))
    effective = n * m / (n + m)
    root = math.sqrt(effective)
    return d, kolmogorov_sf((root + 0.12 + 0.11 / root) * d)


def bonferroni(alpha: float, tests: int) -> float:
    return alpha / max(1, tests)
