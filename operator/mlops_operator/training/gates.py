"""Quality gates: a run's metrics against `spec.gates` (thresholds are decimal strings)."""

from __future__ import annotations

import operator as op
from collections.abc import Callable, Mapping, Sequence
from decimal import Decimal

from ..api.trainingrun import Gate

OPERATORS: dict[str, Callable[[Decimal, Decimal], bool]] = {
    ">": op.gt, ">=": op.ge, "<": op.lt, "<=": op.le, "==": op.eq, "!=": op.ne,
}


def evaluate(gates: Sequence[Gate], metrics: Mapping[str, float]) -> list[str]:
    """The failed gates, one message each (empty: every gate passed)."""
    failed = []
    for g in gates:
        if g.metric not in metrics:
            reported = ", ".join(sorted(metrics)) or "nothing"
            failed.append(f"{g.metric} {g.operator} {g.threshold}: the trainer did not report {g.metric} "
                          f"(it reported {reported})")
            continue
        value = Decimal(repr(float(metrics[g.metric])))
        if not OPERATORS[g.operator](value, Decimal(g.threshold)):
            failed.append(f"{g.metric} {g.operator} {g.threshold}: got {float(value):.6g}")
    return failed
