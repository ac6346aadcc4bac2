"""What a DriftPolicy's reconcile decides from what it observed. Pure: no API, no clock of its own.

`due` says whether the next scrape is due (scheduled in memory: a restarted operator evaluates at
once; the window itself is stored); `judge` folds a scrape into the window and evaluates it when there
is something new to judge; `conditions` composes Ready, Drifted and ServiceHealthy.
"""

from __future__ import annotations

import datetime
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from ..api import times
from ..api.artifacts import Profile
from ..api.driftpolicy import DriftPolicySpec, Evaluation
from ..conditions import FALSE, TRUE, UNKNOWN, Cond
from . import evaluate
from .window import WindowState, advance, after_evaluation


@dataclass
class Memory:
    """What one operator process keeps between reconciles: reference profiles by digest, window
    states and when each policy last scraped (monotonic seconds)."""

    profiles: dict[str, Profile] = field(default_factory=dict)
    states: dict[Any, WindowState] = field(default_factory=dict)
    scraped: dict[Any, float] = field(default_factory=dict)

    def forget(self, key: Any) -> None:
        self.states.pop(key, None)
        self.scraped.pop(key, None)


def due(last_scraped: float | None, interval_seconds: float, monotonic_now: float) -> float:
    """Seconds until the next scrape is due (0 or less: now)."""
    if last_scraped is None:
        return 0.0
    return interval_seconds - (monotonic_now - last_scraped)


@dataclass(frozen=True)
class Judged:
    state: WindowState
    evaluation: Evaluation
    state_changed: bool


def judge(spec: DriftPolicySpec, profile: Profile, before: WindowState | None, revision: str,
          snapshots: Mapping[str, Mapping[str, Any]], last: Mapping[str, Any] | None,
          now: datetime.datetime) -> Judged:
    """The window after this scrape, and its verdict: evaluated again only when the window has new rows
    (or is new); otherwise the last evaluation stands."""
    state = advance(before, revision, snapshots, now)
    rows = int((state.counts or {}).get("rows") or 0)
    if last is None or rows != state.evaluated_rows or before is None or before.revision != state.revision:
        evaluation = evaluate.evaluate(spec, profile, state.counts, times.stamp(now))
        state = after_evaluation(state, spec.window, now)
    else:
        evaluation = Evaluation.model_validate(last)
    return Judged(state, evaluation, before is None or state != before)


def drifted_features(evaluation: Evaluation) -> list[str]:
    return [f.name for f in evaluation.features or () if f.drifted]


def drifted_condition(evaluation: Evaluation, blocked: str | None) -> Cond:
    if evaluation.verdict == "InsufficientData":
        return Cond("Drifted", UNKNOWN, "InsufficientData",
                    f"{evaluation.samples} samples in the window so far; a verdict needs more")
    names = drifted_features(evaluation)
    if evaluation.prediction is not None and evaluation.prediction.drifted:
        names.append("predictions")
    if evaluation.verdict == "Drifted":
        return Cond("Drifted", TRUE, "Drifted", f"drifted: {', '.join(names)} ({evaluation.samples} samples)"
                    + (f"; retrain blocked: {blocked}" if blocked else ""))
    return Cond("Drifted", FALSE, "NotDrifted", f"{evaluation.samples} samples" +
                (f"; drifted below driftShare: {', '.join(names)}" if names else ""))


def conditions(spec: DriftPolicySpec, revision: str, pods_scraped: int, evaluation: Evaluation,
               blocked: str | None) -> list[Cond]:
    out = [Cond("Ready", TRUE, "Monitoring", f"revision {revision}: {pods_scraped} pod(s) scraped"),
           drifted_condition(evaluation, blocked)]
    if spec.health is not None and evaluation.verdict != "InsufficientData":
        out.append(Cond("ServiceHealthy", FALSE, "MonitorFailed", evaluation.unhealthy)
                   if evaluation.unhealthy else Cond("ServiceHealthy", TRUE, "WithinLimits", ""))
    return out
