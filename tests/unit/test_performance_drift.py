"""Concept drift's judgement (DriftPolicy spec.performance) from a ModelDeployment's status.liveQuality as the
operator writes it: floors and drops from training, for a classifier and a regressor, and too few labels."""

from __future__ import annotations

from typing import Any

from mlops_operator.api.driftpolicy import PerformanceCheck
from mlops_operator.drift.performance import condition, judge, training_metric


def live(labelled: int, **metrics: float) -> dict[str, Any]:
    return {"time": "2026-12-05T12:00:00Z", "revisions": [
        {"revision": "other", "labelled": 999, "metrics": {"accuracy": 0.1}},
        {"revision": "r1", "labelled": labelled, "predictions": labelled + 5, "metrics": metrics}]}


def check(**spec: Any) -> PerformanceCheck:
    return PerformanceCheck.model_validate(spec)


def test_accuracy_below_the_floor_is_degraded_and_says_the_numbers() -> None:
    result = judge(check(metric="accuracy", threshold="0.9", minLabels=50), live(120, accuracy=0.62), "r1", None)
    assert (result.verdict, result.value, result.limit, result.labelled) == ("Degraded", 0.62, 0.9, 120)
    cond = condition(result, "cooldown after p-1")
    assert (cond.type, cond.status, cond.reason) == ("PerformanceDrifted", "True", "Degraded")
    assert "0.62" in cond.message and "120 labelled" in cond.message and "retrain blocked: cooldown" in cond.message
    fine = judge(check(metric="accuracy", threshold="0.6"), live(120, accuracy=0.62), "r1", None)
    assert fine.verdict == "WithinLimits" and condition(fine, None).status == "False"


def test_too_few_labels_or_the_wrong_metric_is_no_verdict() -> None:
    few = judge(check(metric="accuracy", threshold="0.9", minLabels=200), live(120, accuracy=0.1), "r1", None)
    assert few.verdict == "InsufficientLabels" and condition(few, None).status == "Unknown"
    assert "120 labelled rows" in few.message and "200" in few.message
    none = judge(check(metric="accuracy", threshold="0.9"), None, "r1", None)
    assert none.verdict == "InsufficientLabels" and none.labelled == 0
    wrong = judge(check(metric="accuracy", threshold="0.9", minLabels=1), live(10, rmse=0.3), "r1", None)
    assert wrong.verdict == "InsufficientLabels" and "has no accuracy (rmse)" in wrong.message


def test_a_drop_from_training_for_a_classifier_and_a_rise_for_a_regressor() -> None:
    run = {"status": {"metrics": {"accuracy": 0.95, "rmse": 1.0}}}
    acc = check(metric="accuracy", maxDropFromTraining="0.1", minLabels=10)
    assert judge(acc, live(50, accuracy=0.84), "r1", training_metric(run, "accuracy")).verdict == "Degraded"
    assert judge(acc, live(50, accuracy=0.86), "r1", training_metric(run, "accuracy")).verdict == "WithinLimits"
    rmse = check(metric="rmse", maxDropFromTraining="0.5", minLabels=10)
    assert judge(rmse, live(50, rmse=1.6), "r1", training_metric(run, "rmse")).verdict == "Degraded"
    assert judge(rmse, live(50, rmse=1.4), "r1", training_metric(run, "rmse")).verdict == "WithinLimits"
    lost = judge(acc, live(50, accuracy=0.5), "r1", training_metric(None, "accuracy"))
    assert lost.verdict == "InsufficientLabels" and "has no accuracy metric" in lost.message
