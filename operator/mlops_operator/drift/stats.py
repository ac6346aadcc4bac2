"""Drift statistics from binned counts. Pure, and light: no scipy (two p-value functions are not
worth tens of megabytes of operator memory), validated against scipy in the tests.

* PSI: sum over bins of (q - p) * ln(q / p), p the reference share, q the live share; an empty
  bin's share is taken as EPSILON (1e-4) so the logarithm stays finite (the usual convention). Its
  usual thresholds (0.1, 0.2) assume about ten bins: a numeric feature's fine bins are first merged
  into PSI_GROUPS groups of about equal reference mass (`coarsen`), so a finer profile does not raise
  PSI's noise floor (at 100 bins and 500 rows a side it would be about 0.2 with nothing changed).
* chi²: the test of homogeneity of the 2 x k table (reference counts, live counts); bins empty
  on both sides are left out; the p-value is the chi² distribution's survival function with
  k - 1 degrees of freedom.
* KS: the largest distance between the two binned CDFs (evaluated at the bin edges); the p-value
  is the asymptotic Kolmogorov distribution with the effective sample size n·m/(n+m). Binning
  can only hide differences inside a bin, so the statistic is at most the raw-sample one.
"""

from __future__ import annotations

import math
import operator
from collections.abc import Sequence
from itertools import accumulate

from ..api.binned import EPSILON, PSI_GROUPS, coarsen, psi

__all__ = ["EPSILON", "PSI_GROUPS", "bonferroni", "chi2", "chi2_sf", "coarsen", "kolmogorov_sf", "ks", "psi"]



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
    """(statistic, p-value) of the test that both counts come from one distribution. For two rows the
    statistic is N·M·Σ (r/N - v/M)² / (r + v) over the bins not empty on both sides: one pass, one division
    a bin (a profile has about a hundred bins a feature, a policy a hundred features)."""
    if len(reference) != len(live):
        raise ValueError("chi2: the two distributions must have the same bins")
    n_ref, n_live = float(sum(reference)), float(sum(live))
    if n_ref == 0 or n_live == 0:
        return 0.0, 1.0
    statistic = 0.0
    used = 0
    for r, v in zip(reference, live, strict=True):
        column = r + v
        if column > 0:
            gap = r / n_ref - v / n_live
            statistic += gap * gap / column
            used += 1
    if used < 2:
        return 0.0, 1.0
    statistic *= n_ref * n_live
    return statistic, chi2_sf(statistic, used - 1)


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
    # the CDFs' largest gap, |R_i/n - L_i/m| = |R_i·m - L_i·n| / (n·m), over cumulative counts (C-speed loops)
    d = max(map(abs, map(operator.sub, map(m.__mul__, accumulate(reference)),
                         map(n.__mul__, accumulate(live))))) / (n * m)
    effective = n * m / (n + m)
    root = math.sqrt(effective)
    return d, kolmogorov_sf((root + 0.12 + 0.11 / root) * d)


def bonferroni(alpha: float, tests: int) -> float:
    return alpha / max(1, tests)
