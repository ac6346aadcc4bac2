"""Concept drift: a DriftPolicy's judgement of its target's live quality (spec.performance). Pure.

The numbers come from the ModelDeployment's status.liveQuality (the join of ground-truth labels to captured
predictions, rollout/quality.py) for the stable revision, and for `maxDropFromTraining` from the metric its
TrainingRun measured on held-out data. Degraded drives the same Retrain action as data drift.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ..api.driftpolicy import PerformanceCheck, PerformanceResult
from ..api.quality import HIGHER_IS_BETTER
from ..conditions import FALSE, TRUE, UNKNOWN, Cond


def judge(check: PerformanceCheck, live: Mapping[str, Any] | None, revision: str,
          training: float | None) -> PerformanceResult:
    metric = check.metric
    result = PerformanceResult(time=(live or {}).get("time"), revision=revision, metric=metric,
                               verdict="InsufficientLabels", training=training)
    mine = next((r for r in (live or {}).get("revisions") or () if r.get("revision") == revision), None)
    result.labelled = int((mine or {}).get("labelled") or 0)
    value = ((mine or {}).get("metrics") or {}).get(metric)
    if result.labelled < check.min_labels or value is None:
        why = f"{result.labelled} labelled rows of revision {revision} so far; a verdict needs {check.min_labels}"
        if mine is not None and value is None and result.labelled:
            why = f"revision {revision}'s live quality has no {metric} ({', '.join(mine.get('metrics') or {})})"
        result.message = why
        return result
    higher = HIGHER_IS_BETTER[metric]
    if check.threshold is not None:
        result.limit = float(check.threshold)
        against = f"the threshold {result.limit:g}"
    elif training is None:
        result.message = f"maxDropFromTraining: the TrainingRun of revision {revision} has no {metric} metric"
        return result
    else:
        drop = float(check.max_drop_from_training or 0)
        result.limit = training - drop if higher else training + drop
        against = f"training's {training:g} {'-' if higher else '+'} {drop:g}"
    result.value = float(value)
    worse = value < result.limit if higher else value > result.limit
    result.verdict = "Degraded" if worse else "WithinLimits"
    result.message = (f"live {metric} {value:g} over {result.labelled} labelled rows is "
                      f"{'past' if worse else 'within'} {against} (revision {revision})")
    return result


def condition(result: PerformanceResult, blocked: str | None) -> Cond:
    if result.verdict == "InsufficientLabels":
        return Cond("PerformanceDrifted", UNKNOWN, "InsufficientLabels", result.message)
    if result.verdict == "Degraded":
        return Cond("PerformanceDrifted", TRUE, "Degraded",
                    result.message + (f"; retrain blocked: {blocked}" if blocked else ""))
    return Cond("PerformanceDrifted", FALSE, "WithinLimits", result.message)


def training_metric(run: Mapping[str, Any] | None, metric: str) -> float | None:
    """The metric the stable revision's TrainingRun measured on held-out data (None: no run, or no such metric)."""
    value = (((run or {}).get("status") or {}).get("metrics") or {}).get(metric)
    return float(value) if isinstance(value, int | float) else None
