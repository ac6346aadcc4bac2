"""Monitoring snapshots of the model server (`/v2/models/NAME/monitoring`): cumulative counts per
Pod since the Pod's process started. Pure.

The counts of several Pods add up (`merge`); two snapshots of one Pod diff into a window
(`diff`); a Pod whose start time changed was restarted, so its counts start again from zero and
the whole new snapshot is the window's. Nothing is ever negative.
"""

from __future__ import annotations

import operator
from collections.abc import Iterable, Mapping
from typing import Any

Snapshot = Mapping[str, Any]
TOTALS = ("requests", "errors", "rows")


def _dist(d: Mapping[str, Any] | None) -> dict[str, Any] | None:
    if d is None:
        return None
    return {"counts": list(d.get("counts") or []), "missing": int(d.get("missing") or 0),
            "other": int(d.get("other") or 0)}


def _counts(x: list[int], y: list[int], sign: int) -> list[int]:
    if sign > 0:
        return list(map(operator.add, x, y))
    return [v if v > 0 else 0 for v in map(operator.sub, x, y)]


def _combine(a: Snapshot, b: Snapshot, sign: int) -> dict[str, Any]:
    """a + b, or a - b clamped at zero (sign -1). Hot: a drift evaluation combines every pod's
    snapshot, so the per-bin work is done with map() over plain lists."""
    def add_dist(x: Mapping[str, Any] | None, y: Mapping[str, Any] | None) -> dict[str, Any] | None:
        if x is None or y is None:
            return _dist(x or y) if sign > 0 else _dist(x)
        if len(x["counts"]) != len(y["counts"]):
            raise ValueError("snapshots of different reference profiles cannot be combined")
        return {"counts": _counts(x["counts"], y["counts"], sign),
                "missing": max(0, x["missing"] + sign * y["missing"]),
                "other": max(0, x["other"] + sign * y["other"])}

    fa = {f["name"]: f for f in a.get("features") or []}
    fb = {f["name"]: f for f in b.get("features") or []}
    la, lb = a.get("latency") or {}, b.get("latency") or {}
    counts_a, counts_b = la.get("counts") or [], lb.get("counts") or []
    if counts_a and counts_b and len(counts_a) != len(counts_b):
        raise ValueError("snapshots with different latency buckets cannot be combined")
    latency = {"buckets": list(la.get("buckets") or lb.get("buckets") or []),
               "counts": _counts(counts_a or [0] * len(counts_b), counts_b or [0] * len(counts_a), sign),
               "sum": max(0.0, float(la.get("sum") or 0) + sign * float(lb.get("sum") or 0))}
    return {
        **{k: max(0, int(a.get(k) or 0) + sign * int(b.get(k) or 0)) for k in TOTALS},
        "latency": latency,
        "features": [{"name": name, **(add_dist(fa.get(name), fb.get(name)) or {})}
                     for name in [*fa, *(n for n in fb if n not in fa)]],
        "prediction": add_dist(a.get("prediction"), b.get("prediction")),
    }


def _copy(s: Snapshot) -> dict[str, Any]:
    """A snapshot's counts as a new window (what a combine with an empty window gives, without the work)."""
    latency = s.get("latency") or {}
    return {
        **{k: max(0, int(s.get(k) or 0)) for k in TOTALS},
        "latency": {"buckets": list(latency.get("buckets") or []), "counts": list(latency.get("counts") or []),
                    "sum": max(0.0, float(latency.get("sum") or 0))},
        "features": [{"name": f["name"], **(_dist(f) or {})} for f in s.get("features") or []],
        "prediction": _dist(s.get("prediction")),
    }


def merge(snapshots: Iterable[Snapshot]) -> dict[str, Any] | None:
    """The sum of several Pods' snapshots (or windows), None for none."""
    total: dict[str, Any] | None = None
    for s in snapshots:
        total = _combine(total, s, 1) if total is not None else _copy(s)
    return total


def diff(current: Snapshot, previous: Snapshot | None) -> dict[str, Any]:
    """What one Pod counted since `previous` (the whole of `current` after a restart)."""
    if previous is None or previous.get("startTime") != current.get("startTime") or \
            previous.get("profileDigest") != current.get("profileDigest"):
        return _copy(current)
    return _combine(current, previous, -1)
