"""The Jobs that call a model registry for the operator (`mlops mlflow resolve | register | set-alias`).

They run the runtime image with the namespace's MLflow credentials (spec's `mlflow.secretRef`, as the
environment), so the operator never reads them; the answer is the Pod's termination message
(api/registry.py's RegistryResult). No API token is mounted: the Job reads nothing from the cluster.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ..api import labels as L
from ..api.registry import MlflowAccess
from ..api.scheduling import Scheduling
from .common import call_job, resources, scheduling

CONTAINER = "mlflow"
DEADLINE_SECONDS = 300


def registry_job(parent: Mapping[str, Any], name: str, purpose: str, args: list[str], access: MlflowAccess, *,
                 runtime_image: str, placement: Scheduling | None = None, copy_labels: tuple[str, ...] = (),
                 defaults: Mapping[str, Mapping[str, Any]] | None = None) -> dict[str, Any]:
    """One registry call (`mlops mlflow <purpose> <args>`), labelled with its purpose and its owner."""
    container: dict[str, Any] = {
        "name": CONTAINER, "image": runtime_image, "command": ["mlops"], "args": ["mlflow", purpose, *args],
        "env": [{"name": "MLFLOW_TRACKING_URI", "value": access.tracking_uri}],
        "resources": resources("registry", None, defaults),
    }
    if access.secret_ref is not None:
        container["envFrom"] = [{"secretRef": {"name": access.secret_ref.name}}]
    return call_job(parent, name, {L.REGISTRY: purpose, L.REGISTRY_OF: parent["metadata"]["name"]}, container,
                    placement=scheduling(placement), copy_labels=copy_labels, deadline_seconds=DEADLINE_SECONDS)
