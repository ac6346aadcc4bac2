"""A DriftPolicy's children: the ConfigMap that keeps its window, and the TrainingRuns it retrains with."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from ..api import API_VERSION, TRAINING_RUN
from ..api import labels as L
from ..api.driftpolicy import DriftPolicySpec, Evaluation
from .common import owner_reference

STATE_KEY = "window.json"


def state_name(policy: Mapping[str, Any]) -> str:
    return f"{policy['metadata']['name']}-window"


def _meta(policy: Mapping[str, Any], name: str) -> dict[str, Any]:
    meta = policy["metadata"]
    return {"name": name, "namespace": meta["namespace"], "labels": {**L.MANAGED_BY, L.DRIFT_POLICY: meta["name"]},
            "ownerReferences": [owner_reference(policy)]}


def window_configmap(policy: Mapping[str, Any], state_json: str) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "ConfigMap", "metadata": _meta(policy, state_name(policy)),
            "data": {STATE_KEY: state_json}}


def retrain_run(policy: Mapping[str, Any], spec: DriftPolicySpec, name: str, evaluation: Evaluation) -> dict[str, Any]:
    """The TrainingRun a drift verdict starts: the policy's template, the evaluation behind it annotated."""
    if spec.action is None or spec.action.retrain is None:
        raise ValueError("spec.action.retrain is required to retrain")
    cause = {"time": evaluation.time, "samples": evaluation.samples,
             "drifted": [f.name for f in evaluation.features or () if f.drifted]}
    meta = _meta(policy, name)
    meta["annotations"] = {L.DRIFT_EVALUATION: json.dumps(cause)}
    return {"apiVersion": API_VERSION, "kind": TRAINING_RUN.kind, "metadata": meta,
            "spec": spec.action.retrain.template.wire()}
