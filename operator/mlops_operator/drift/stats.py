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
from bisect import bisect_left
from collections.abc import Sequence
from itertools import accumulate

EPSILON = 1e-4
PSI_GROUPS = 10


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


def coarsen(reference: Sequence[float], live: Sequence[float], groups: int = PSI_GROUPS
            ) -> tuple[list[float], list[float]]:
    """Ordered bins merged, neighbours together, into at most `groups` groups of about equal reference mass
    (a group closes once the reference's cumulative share reaches its next 1/groups step)."""
    if len(reference) != len(live):
        raise ValueError("coarsen: the two distributions must have the same bins")
    total = float(sum(reference))
    if len(reference) <= groups or total <= 0:
        return list(reference), list(live)
    cum_ref, cum_live = list(accumulate(reference)), list(accumulate(live))
    # group k closes at the first bin where the reference's cumulative share reaches k/groups
    ends = sorted({min(bisect_left(cum_ref, total * k / groups - 1e-9 * total), len(reference) - 1)
                   for k in range(1, groups + 1)} | {len(reference) - 1})
    ref_out, live_out, before = [], [], 0
    for end in ends:
        ref_out.append(cum_ref[end] - (cum_ref[before - 1] if before else 0))
        live_out.append(cum_live[end] - (cum_live[before - 1] if before else 0))
        before = end + 1
    return ref_out, live_out


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
