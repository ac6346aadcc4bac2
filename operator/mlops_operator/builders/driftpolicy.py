"""A DriftPolicy's children: the ConfigMap that keeps its window, and the TrainingRuns it retrains with."""

from __future__ import annotations

import base64
import gzip
import json
from collections.abc import Mapping
from typing import Any

from ..api import API_VERSION, TRAINING_RUN
from ..api import labels as L
from ..api.driftpolicy import DriftPolicySpec, Evaluation
from .common import owner_reference

STATE_KEY = "window.json.gz"
"""binaryData key: the window state, gzipped (every Pod's last snapshot, 101 counters a feature: uncompressed, a
few hundred features over twenty Pods would pass a ConfigMap's 1 MiB)."""
OLD_STATE_KEY = "window.json"  # data key of the plain JSON written before, still read


def state_name(policy: Mapping[str, Any]) -> str:
    return f"{policy['metadata']['name']}-window"


def _meta(policy: Mapping[str, Any], name: str) -> dict[str, Any]:
    meta = policy["metadata"]
    return {"name": name, "namespace": meta["namespace"], "labels": {**L.MANAGED_BY, L.DRIFT_POLICY: meta["name"]},
            "ownerReferences": [owner_reference(policy)]}


def window_configmap(policy: Mapping[str, Any], state_json: str) -> dict[str, Any]:
    packed = base64.b64encode(gzip.compress(state_json.encode(), compresslevel=6, mtime=0)).decode()
    return {"apiVersion": "v1", "kind": "ConfigMap", "metadata": _meta(policy, state_name(policy)),
            "binaryData": {STATE_KEY: packed}}


def window_state(cm: Mapping[str, Any] | None) -> str | None:
    """The window state's JSON kept in the ConfigMap (None: none kept)."""
    packed = ((cm or {}).get("binaryData") or {}).get(STATE_KEY)
    if packed:
        return gzip.decompress(base64.b64decode(packed)).decode()
    return ((cm or {}).get("data") or {}).get(OLD_STATE_KEY) or None


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
