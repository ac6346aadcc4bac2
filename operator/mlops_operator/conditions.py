"""Pure helpers for Kubernetes API convention conditions.

A condition is a plain dict as it sits in `status.conditions`: type, status, reason, message
(left out when empty), lastTransitionTime, observedGeneration. `lastTransitionTime` changes only when `status` changes;
a new reason or message on the same status keeps the old time.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from .api import times

TRUE, FALSE, UNKNOWN = "True", "False", "Unknown"
Conditions = list[dict[str, Any]]


@dataclass(frozen=True)
class Cond:
    """A condition as a domain function decides it (no time, no generation yet)."""

    type: str
    status: str
    reason: str
    message: str = ""

    def __post_init__(self) -> None:
        if self.status not in (TRUE, FALSE, UNKNOWN):
            raise ValueError(f"condition status must be True, False or Unknown, not {self.status!r}")
        if not self.reason or not self.reason[0].isupper() or not self.reason.isalnum():
            raise ValueError(f"condition reason must be CamelCase, not {self.reason!r}")


# a False condition with one of these reasons is what the user asked for (replicas 0, suspend) or the
# ordinary way to a first version (nothing trained or promoted yet): its Event is Normal, not a Warning
EXPECTED_REASONS = frozenset({"NoStableVersion", "NoModelVersion", "ScaledToZero", "Suspended"})
_BAD_WHEN_FALSE = ("Ready", "Available", "Succeeded", "GatesPassed", "ServiceHealthy", "Verified")
_BAD_WHEN_TRUE = ("Degraded", "Drifted")


def is_warning(c: Cond) -> bool:
    """Whether a condition, as it newly is, deserves a Warning Event (something is wrong)."""
    if c.type in _BAD_WHEN_TRUE:
        return c.status == TRUE
    return c.type in _BAD_WHEN_FALSE and c.status == FALSE and c.reason not in EXPECTED_REASONS


def find(conditions: Sequence[Mapping[str, Any]] | None, type_: str) -> Mapping[str, Any] | None:
    for c in conditions or ():
        if c.get("type") == type_:
            return c
    return None


def is_true(conditions: Sequence[Mapping[str, Any]] | None, type_: str) -> bool:
    c = find(conditions, type_)
    return c is not None and c.get("status") == TRUE


def merge(
    current: Sequence[Mapping[str, Any]] | None,
    decided: Iterable[Cond],
    generation: int | None,
    at: str | None = None,
) -> Conditions:
    """The conditions list after applying `decided` to `current`.

    Conditions not mentioned in `decided` are kept as they are. Order: existing ones first in
    their order, new ones appended, so a re-run produces an identical list (no spurious patch).
    """
    at = at or times.now()
    result: Conditions = [dict(c) for c in current or ()]
    index = {c.get("type"): i for i, c in enumerate(result)}
    for d in decided:
        new: dict[str, Any] = {
            "type": d.type,
            "status": d.status,
            "reason": d.reason,
            "message": d.message,
            "lastTransitionTime": at,
            "observedGeneration": generation,
        }
        if generation is None:
            del new["observedGeneration"]
        if not d.message:
            # the 1.20 apiserver turns "" in a merge patch into null, which the schema rejects
            del new["message"]
        if d.type in index:
            old = result[index[d.type]]
            if old.get("status") == d.status and old.get("lastTransitionTime"):
                new["lastTransitionTime"] = old["lastTransitionTime"]
            result[index[d.type]] = new
        else:
            index[d.type] = len(result)
            result.append(new)
    return result
