"""The window of live counts a DriftPolicy judges, and what it keeps between evaluations. Pure.

State (kept in an owned ConfigMap, written only when it changes, so an operator restarted between
two evaluations neither loses nor double-counts samples): the stable revision the window belongs
to, when it began, every pod's last cumulative snapshot, and the window's counts so far. Each
scrape diffs every pod against its last snapshot (a restarted pod counts from zero) and adds the
difference to the window. A new stable revision (a new reference profile) starts a new window;
`maxSamples` and `maxAgeSeconds` make it tumble after an evaluation.
"""

from __future__ import annotations

import datetime
from collections.abc import Mapping
from typing import Any

from pydantic import BaseModel, Field

from ..api import times
from ..api.driftpolicy import Window
from . import sketch


class WindowState(BaseModel):
    revision: str
    started: str
    pods: dict[str, dict[str, Any]] = Field(default_factory=dict)
    counts: dict[str, Any] | None = None
    evaluated_rows: int = 0
    """Rows of the window when it was last evaluated (a window with no new rows is not judged again)."""


def _slim(snapshot: Mapping[str, Any]) -> dict[str, Any]:
    """What is kept of a pod's snapshot: the counts, the start time, the profile's digest."""
    return {k: snapshot[k] for k in ("startTime", "profileDigest", *sketch.TOTALS, "latency", "features",
                                     "prediction") if k in snapshot}


def advance(state: WindowState | None, revision: str, snapshots: Mapping[str, Mapping[str, Any]],
            now: datetime.datetime) -> WindowState:
    """The state after one scrape of the stable revision's pods."""
    stamp = times.stamp(now)
    if state is None or state.revision != revision:
        state = WindowState(revision=revision, started=stamp)
    deltas = [sketch.diff(s, state.pods.get(pod)) for pod, s in snapshots.items()]
    counts = sketch.merge([*([state.counts] if state.counts else []), *deltas])
    return state.model_copy(update={"pods": {pod: _slim(s) for pod, s in snapshots.items()},
                                    "counts": counts if counts is not None else state.counts})


def after_evaluation(state: WindowState, window: Window | None, now: datetime.datetime) -> WindowState:
    """Tumble the window when it is full or old; otherwise remember how far it was judged."""
    rows = int((state.counts or {}).get("rows") or 0)
    started = times.parse(state.started)
    full = window is not None and window.max_samples is not None and rows >= window.max_samples
    old = window is not None and window.max_age_seconds is not None and \
        (now - started).total_seconds() >= window.max_age_seconds
    if full or old:
        return state.model_copy(update={"counts": None, "started": times.stamp(now),
                                        "evaluated_rows": 0})
    return state.model_copy(update={"evaluated_rows": rows})
