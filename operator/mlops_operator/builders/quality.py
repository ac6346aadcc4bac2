"""The Job that joins a ModelDeployment's ground-truth labels to its captured predictions (`mlops quality`).

It runs the runtime image with the namespace's storage credentials (spec.storage: the Secret as its
environment, or the ServiceAccount), reads the capture destination (and spec.groundTruth.uri), and answers in
its termination message (api/quality.py's QualityReport): the operator never touches the storage.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ..api import labels as L
from ..api.modeldeployment import ModelDeploymentSpec
from .common import call_job, resources, scheduling, without_spread
from .modeldeployment import CAPTURE_DIR, CAPTURE_VOLUME, claim_uri, server_image

CONTAINER = "quality"
LABELS_DIR, LABELS_VOLUME = "/mnt/labels", "labels"
DEADLINE_SECONDS = 600


def quality_job(md: Mapping[str, Any], spec: ModelDeploymentSpec, name: str, since: float, until: float, *,
                runtime_image: str, copy_labels: tuple[str, ...] = (),
                defaults: Mapping[str, Mapping[str, Any]] | None = None) -> dict[str, Any]:
    """`mlops quality` over the predictions made in [since, until) (epoch seconds)."""
    assert spec.capture is not None
    captured, volumes = claim_uri(spec.capture.destination, CAPTURE_DIR, CAPTURE_VOLUME)
    args = ["quality", "--captured", captured, "--since", f"{since:.3f}", "--until", f"{until:.3f}"]
    truth = spec.ground_truth
    if truth is not None and truth.uri is not None:
        uri, more = claim_uri(truth.uri, LABELS_DIR, LABELS_VOLUME)  # the same claim may be mounted twice
        args += ["--labels", uri]
        volumes += more
    container: dict[str, Any] = {
        "name": CONTAINER, "image": server_image(spec, runtime_image), "command": ["mlops"], "args": args,
        "volumeMounts": [{**m, "readOnly": True} for m, _ in volumes],
        "resources": resources("quality", None, defaults),
    }
    storage = spec.storage
    if storage is not None and storage.secret_ref is not None:
        container["envFrom"] = [{"secretRef": {"name": storage.secret_ref.name}}]
    placement = without_spread(spec.runtime.scheduling if spec.runtime else None)
    return call_job(md, name, {L.QUALITY: md["metadata"]["name"]}, container, placement=scheduling(placement),
                    copy_labels=copy_labels, volumes=[v for _, v in volumes],
                    service_account=storage.service_account_name if storage else None,
                    deadline_seconds=DEADLINE_SECONDS)
