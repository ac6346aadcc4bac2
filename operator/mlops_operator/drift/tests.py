"""The drift tests a DriftPolicy can name, in one registry: `{test: DriftTest}`.

A new test is one function of two binned count vectors (reference, live) returning a score or a
p-value (in stats.py), plus one entry here and its name in `api.driftpolicy.DriftTestName` (the CRD's
enum); evaluate.py and the spec checks read everything else from the entry.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import Literal, get_args

from ..api.driftpolicy import DriftTestName
from . import stats


@dataclass(frozen=True)
class DriftTest:
    value: Callable[[Sequence[float], Sequence[float]], float]
    """The score or p-value of live counts against reference counts (same bins)."""
    kind: Literal["score", "p-value"]
    """A score drifts above its threshold; a p-value below it (and is Bonferroni-corrected)."""
    default_threshold: Decimal
    ordered: bool = False
    """The test needs ordered values: numeric features only."""
    coarse: bool = False
    """A numeric feature's bins are merged into stats.PSI_GROUPS equal-mass groups first (the test's
    thresholds assume about ten bins)."""

    def drifted(self, value: float, threshold: float) -> bool:
        return value > threshold if self.kind == "score" else value < threshold


TESTS: dict[str, DriftTest] = {
    "psi": DriftTest(stats.psi, "score", Decimal("0.2"), coarse=True),
    "chi2": DriftTest(lambda ref, live: stats.chi2(ref, live)[1], "p-value", Decimal("0.05")),
    "ks": DriftTest(lambda ref, live: stats.ks(ref, live)[1], "p-value", Decimal("0.05"), ordered=True),
}
if set(TESTS) != set(get_args(DriftTestName)):  # the registry and the CRD's enum name the same tests
    raise ImportError(f"drift tests {sorted(TESTS)} differ from api.driftpolicy.DriftTestName "
                      f"{sorted(get_args(DriftTestName))}")


def default_test(kind: str) -> str:
    """The test a feature gets when the spec names none: psi for numeric, chi2 for categorical."""
    return "psi" if kind == "numeric" else "chi2"
