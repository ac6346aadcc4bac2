"""Checks of a ModelDeployment spec that a structural schema cannot express, and the model stream."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from ..api.artifacts import UNSAFE_FORMATS
from ..api.modeldeployment import BlueGreen, ModelDeploymentSpec, ModelSource, Strategy
from ..api.registry import is_registry_uri
from ..api.reports import MAX_WINDOWS, METRICS
from ..api.scheduling import check as check_scheduling
from ..conditions import is_true
from ..controller.endpoints import Endpoints
from ..training.spec import check_env


def _verification(model: ModelSource, allow_unsafe: bool) -> list[str]:
    """A pinned model is verified against its digest unless the spec says `verify: false` in so many
    words, and never unverified where a swapped file would do the most harm."""
    if model.verify:
        if model.storage_uri and not model.digest and not is_registry_uri(model.storage_uri):
            return ["spec.model.digest: required for a pinned storageUri (the model is checked against it "
                    "before it is served); set spec.model.verify: false to serve it unverified"]
        return []
    if model.from_training_runs is not None:
        return ["spec.model.verify: only applies to a pinned storageUri (a TrainingRun stream is always "
                "verified against the digest it recorded)"]
    if model.digest:
        return ["spec.model.verify: false contradicts spec.model.digest (drop one of them)"]
    if (model.storage_uri or "").startswith("http://"):
        return ["spec.model.verify: false is refused for a plain http:// storageUri (anyone on the path could "
                "swap the model); give spec.model.digest or use https://"]
    if allow_unsafe:
        return ["spec.model.verify: false is refused with spec.runtime.allowUnsafeFormats (an unverified "
                "pickle file runs whatever code it holds); give spec.model.digest"]
    return []


def check_endpoints(spec: ModelDeploymentSpec, endpoints: Endpoints) -> list[str]:
    """The analysis endpoints the spec names that this operator will not read (MLOPS_ANALYSIS_ENDPOINTS)."""
    prometheus = spec.analysis.prometheus if spec.analysis is not None else None
    why = endpoints.refusal(prometheus.address) if prometheus is not None else None
    return [f"spec.analysis.prometheus.address: {why}"] if why else []


def check(spec: ModelDeploymentSpec) -> list[str]:
    errors: list[str] = []
    model = spec.model
    if model.digest and not model.storage_uri:
        errors.append("spec.model.digest: only applies to a pinned storageUri (a TrainingRun stream "
                      "brings its own digest)")
    if model.format and model.from_training_runs:
        errors.append("spec.model.format: only applies to a pinned storageUri (a TrainingRun stream "
                      "brings its own format)")
    if is_registry_uri(model.storage_uri) and model.mlflow is None:
        errors.append("spec.model.mlflow: required for a models:/ storageUri (the tracking server it is "
                      "resolved in)")
    if model.mlflow is not None and model.storage_uri is not None and not is_registry_uri(model.storage_uri):
        errors.append("spec.model.mlflow: only applies to a models:/ storageUri or a TrainingRun stream "
                      "(whose registered versions spec.model.mlflow.promoteAlias follows)")
    allow_unsafe = spec.runtime is not None and spec.runtime.allow_unsafe_formats
    errors += _verification(model, allow_unsafe)
    if model.format in UNSAFE_FORMATS and not allow_unsafe:
        errors.append(f"spec.model.format: {model.format} files are loaded with pickle, which runs code "
                      "from the file; set spec.runtime.allowUnsafeFormats: true to accept that")
    if spec.runtime is not None:
        errors += check_env(spec.runtime.env, "spec.runtime.env")
        errors += check_scheduling(spec.runtime.scheduling, "spec.runtime.scheduling")
    if spec.analysis is not None:
        errors += check_scheduling(spec.analysis.scheduling, "spec.analysis.scheduling")
    if spec.analysis is not None and spec.analysis.live_quality is not None and spec.ground_truth is None:
        errors.append("spec.analysis.liveQuality: needs spec.groundTruth (and spec.capture): the labels it judges")
    if spec.ground_truth is not None and spec.capture is None:
        errors.append("spec.groundTruth: needs spec.capture (the predictions the labels are joined to)")

    strategy = spec.strategy or Strategy()
    if strategy.type == "Canary" and strategy.canary is None:
        errors.append("spec.strategy.canary: required when spec.strategy.type is Canary")
    if strategy.type == "Canary" and strategy.blue_green is not None:
        errors.append("spec.strategy.blueGreen: only applies when spec.strategy.type is BlueGreen")
    if strategy.type != "Canary" and strategy.canary is not None:
        errors.append("spec.strategy.canary: only applies when spec.strategy.type is Canary")
    if strategy.type == "Shadow" and strategy.blue_green is not None:
        errors.append("spec.strategy.blueGreen: only applies when spec.strategy.type is BlueGreen")
    if strategy.type != "Shadow" and strategy.shadow is not None:
        errors.append("spec.strategy.shadow: only applies when spec.strategy.type is Shadow")
    if strategy.type == "Shadow" and spec.analysis is not None and spec.analysis.live_quality is not None:
        errors.append("spec.analysis.liveQuality: judges answers users saw, and a shadow candidate answers none "
                      "(it is judged on agreement with the stable revision: spec.strategy.shadow.agreement)")
    if strategy.canary is not None:
        steps = strategy.canary.steps
        for i in range(1, len(steps)):
            if steps[i].weight <= steps[i - 1].weight:
                errors.append(f"spec.strategy.canary.steps[{i}].weight: weights must ascend "
                              f"({steps[i - 1].weight} then {steps[i].weight})")

    analysis = spec.analysis
    compare = analysis.compare_to_stable if analysis is not None else None
    known = sorted({m for ms in METRICS.values() for m in ms})
    if compare is not None and compare.metric not in known:
        errors.append(f"spec.analysis.compareToStable.metric: {compare.metric!r} is not measured by the "
                      f"analysis; one of {', '.join(known)}")
    if analysis is not None:
        blue_green = strategy.blue_green or BlueGreen()
        if strategy.type == "BlueGreen" and analysis.duration_seconds >= blue_green.scale_down_delay_seconds \
                and blue_green.scale_down_delay_seconds > 0:
            errors.append(f"spec.analysis.durationSeconds: {analysis.duration_seconds}s must end before "
                          f"spec.strategy.blueGreen.scaleDownDelaySeconds ({blue_green.scale_down_delay_seconds}s), "
                          "or the old revision is gone before a failed analysis can return to it")
        if analysis.min_requests > 0 and analysis.duration_seconds == 0:
            errors.append(f"spec.analysis.minRequests: {analysis.min_requests} requests cannot be collected "
                          "in a durationSeconds of 0")
        if analysis.duration_seconds > 0 and analysis.interval_seconds > analysis.duration_seconds:
            errors.append(f"spec.analysis.intervalSeconds: {analysis.interval_seconds}s is longer than "
                          f"durationSeconds ({analysis.duration_seconds}s): no measurement would be taken")
        measurements = min(MAX_WINDOWS, max(1, analysis.duration_seconds // analysis.interval_seconds))
        if analysis.failure_limit >= measurements:
            errors.append(f"spec.analysis.failureLimit: {analysis.failure_limit} failures tolerated out of "
                          f"{measurements} measurements: the analysis could never fail")
    return errors


def newest_passing_run(runs: Iterable[Mapping[str, Any]]) -> Mapping[str, Any] | None:
    """The newest TrainingRun that passed its gates and recorded a model (None if there is none)."""
    passing = [
        r for r in runs
        if is_true((r.get("status") or {}).get("conditions"), "GatesPassed")
        and (r.get("status") or {}).get("model", {}).get("digest")
        and not r["metadata"].get("deletionTimestamp")
    ]
    if not passing:
        return None
    return max(passing, key=lambda r: (r["metadata"].get("creationTimestamp", ""), r["metadata"]["name"]))
