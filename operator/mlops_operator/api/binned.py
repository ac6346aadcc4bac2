"""PSI of binned counts: one place for the arithmetic both planes need (the DriftPolicy's evaluation of live
windows, drift/stats.py; the trainer's data check of a new training set against the previous version's profile,
runtime/datachecks.py). Pure, no numpy."""

from __future__ import annotations

import math
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
