"""Checks of a DriftPolicy spec that a structural schema cannot express."""

from __future__ import annotations

from collections.abc import Mapping
from decimal import Decimal
from typing import Any

from ..api.driftpolicy import DriftPolicySpec
from ..training.spec import check as check_training
from .tests import TESTS


def _threshold(test: str | None, threshold: str | None, path: str) -> list[str]:
    if threshold is None:
        return []
    value = Decimal(threshold)
    kind = TESTS[test].kind if test else None
    if kind == "p-value" and not Decimal(0) < value < Decimal(1):
        return [f"{path}.threshold: a p-value threshold for {test} must be between 0 and 1 "
                f"(exclusive), not {threshold}"]
    if kind == "score" and value <= 0:
        return [f"{path}.threshold: a {test} threshold must be above 0, not {threshold}"]
    return []


def check(spec: DriftPolicySpec) -> list[str]:
    errors: list[str] = []
    seen: set[str] = set()
    for i, feature in enumerate(spec.features or ()):
        if feature.name in seen:
            errors.append(f"spec.features[{i}].name: {feature.name} is listed twice")
        seen.add(feature.name)
        errors += _threshold(feature.test, feature.threshold, f"spec.features[{i}]")
    if spec.prediction is not None:
        errors += _threshold(spec.prediction.test, spec.prediction.threshold, "spec.prediction")
    window = spec.window
    if window is not None and window.max_samples is not None and window.max_samples < window.min_samples:
        errors.append(f"spec.window.maxSamples: {window.max_samples} is below minSamples ({window.min_samples})")
    action = spec.action
    if action is not None:
        if action.type == "Retrain" and action.retrain is None:
            errors.append("spec.action.retrain: required when spec.action.type is Retrain")
        if action.type == "Alert" and action.retrain is not None:
            errors.append("spec.action.retrain: only applies when spec.action.type is Retrain")
        if action.retrain is not None:
            errors += check_training(action.retrain.template, "spec.action.retrain.template")
    return errors


def check_target(spec: DriftPolicySpec, target: Mapping[str, Any]) -> list[str]:
    """Checks against the target ModelDeployment's spec (as stored, camelCase)."""
    action = spec.action
    if action is None or action.retrain is None:
        return []
    stream = ((target.get("spec") or {}).get("model") or {}).get("fromTrainingRuns", {}).get("model")
    name = target["metadata"]["name"]
    if stream is None:
        return [f"spec.action.retrain: the target ModelDeployment {name} serves a pinned storageUri, "
                "so a retrained version would never reach it; follow a TrainingRun stream "
                "(spec.model.fromTrainingRuns) or use the Alert action"]
    if action.retrain.template.model != stream:
        return [f"spec.action.retrain.template.model: {action.retrain.template.model} is not the model "
                f"stream {stream} that the target ModelDeployment {name} follows"]
    return []
